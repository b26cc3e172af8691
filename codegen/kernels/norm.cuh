/* norm.cuh — RMS normalisation and its two backward ops.
 * defines: ftk::rmsnorm, ftk::rmsnorm_bwd_x, ftk::rmsnorm_bwd_w
 * launch:  rmsnorm, rmsnorm_bwd_x: one block per row of D = last extent (grid = rows,
 *          32..1024 threads); rmsnorm_bwd_w: one block of 1024 threads.
 * Row statistics in float; eps = fp[0]. */

/* FTK_RBW_COLS (rmsnorm_bwd_w: output columns per thread and pass) comes from the
 * generated source's preamble (codegen/emit.c). */

namespace ftk {

/* (x[..., D], w[D]) -> x * rsqrt(mean(x^2) + eps) * w */
template <class TX, class TW, class TO> __device__ __forceinline__ void rmsnorm(const ftk_args_t &a)
{
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d;
    float eps = (float)a.fp[0];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const TX *x = (const TX *)a.in[0] + r * d;
        float s = 0.0f;
        for (long long j = threadIdx.x; j < d; j += blockDim.x) {
            float v = ftk_f(x[j]);
            s += v * v;
        }
        s = ftk_block_sum(s);
        float inv = 1.0f / sqrtf(s / (float)d + eps);
        for (long long j = threadIdx.x; j < d; j += blockDim.x)
            ftk_st<TO>(a.out, r * d + j, ftk_f(x[j]) * inv * ftk_ld<TW>(a.in[1], j));
    }
}

/* (x, w, dy) -> dx = r (dy w - x r^2 sum(dy w x) / D), r = rsqrt(mean(x^2) + eps) */
template <class TX, class TW, class TY, class TO> __device__ __forceinline__ void rmsnorm_bwd_x(const ftk_args_t &a)
{
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d;
    float eps = (float)a.fp[0];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const TX *x = (const TX *)a.in[0] + r * d;
        const TY *dy = (const TY *)a.in[2] + r * d;
        float ss = 0.0f, sd = 0.0f;
        for (long long j = threadIdx.x; j < d; j += blockDim.x) {
            float v = ftk_f(x[j]);
            ss += v * v;
            sd += ftk_f(dy[j]) * ftk_ld<TW>(a.in[1], j) * v;
        }
        ss = ftk_block_sum(ss);
        sd = ftk_block_sum(sd);
        float inv = 1.0f / sqrtf(ss / (float)d + eps);
        float c = inv * inv * sd / (float)d;
        for (long long j = threadIdx.x; j < d; j += blockDim.x)
            ftk_st<TO>(a.out, r * d + j, inv * (ftk_f(dy[j]) * ftk_ld<TW>(a.in[1], j) - ftk_f(x[j]) * c));
    }
}

/* (x, dy) -> dw[D], dw_j = sum over rows of dy_j x_j r. One block, so the sum over rows
 * is deterministic without a second kernel: per batch of rows, warp w computes row w's
 * r with shuffles, then every thread adds the batch into the columns it owns, in row
 * order. Reads x twice (the second time mostly from cache); one SM does all the work. */
template <class TX, class TY, class TO> __device__ __forceinline__ void rmsnorm_bwd_w(const ftk_args_t &a)
{
    __shared__ float inv[32];
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d;
    float eps = (float)a.fp[0];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    long long span = (long long)blockDim.x * FTK_RBW_COLS;
    const TX *x = (const TX *)a.in[0];
    const TY *dy = (const TY *)a.in[1];
    if (blockIdx.x != 0)
        return;
    for (long long c0 = 0; c0 < d; c0 += span) {
        float acc[FTK_RBW_COLS];
#pragma unroll
        for (int k = 0; k < FTK_RBW_COLS; k++)
            acc[k] = 0.0f;
        for (long long r0 = 0; r0 < rows; r0 += nw) {
            long long r = r0 + w;
            if (r < rows) {
                float s = 0.0f;
                for (long long j = lane; j < d; j += 32) {
                    float v = ftk_f(x[r * d + j]);
                    s += v * v;
                }
                s = ftk_warp_sum(s);
                if (lane == 0)
                    inv[w] = 1.0f / sqrtf(s / (float)d + eps);
            }
            __syncthreads();
            long long nr = rows - r0 < nw ? rows - r0 : nw;
            for (long long q = 0; q < nr; q++) {
                float iv = inv[q];
                long long rr = r0 + q;
#pragma unroll
                for (int k = 0; k < FTK_RBW_COLS; k++) {
                    long long c = c0 + threadIdx.x + (long long)k * blockDim.x;
                    if (c < d)
                        acc[k] += ftk_f(dy[rr * d + c]) * ftk_f(x[rr * d + c]) * iv;
                }
            }
            __syncthreads();
        }
#pragma unroll
        for (int k = 0; k < FTK_RBW_COLS; k++) {
            long long c = c0 + threadIdx.x + (long long)k * blockDim.x;
            if (c < d)
                ftk_st<TO>(a.out, c, acc[k]);
        }
    }
}

} /* namespace ftk */
