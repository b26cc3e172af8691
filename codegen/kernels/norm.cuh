/* norm.cuh — RMS normalisation and its two backward ops.
 * defines: ftk::rmsnorm, ftk::rmsnorm_bwd_x, ftk::rmsnorm_bwd_w_part / rmsnorm_bwd_w_fin
 * launch:  rmsnorm, rmsnorm_bwd_x: one block per row of D = last extent (grid = rows,
 *          32..1024 threads); rmsnorm_bwd_w: two kernels, (C row chunks, column groups)
 *          blocks of 32..1024 threads, then one thread per column (256 a block).
 * scratch: rmsnorm_bwd_w: header int 0 = C; data: C x D floats (the chunks' column sums).
 * Row statistics in float; eps = fp[0]. */

/* FTK_RBW_COLS (rmsnorm_bwd_w_part: output columns per thread and pass) comes from the
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

/* (x, dy) -> dw[D], dw_j = sum over rows of dy_j x_j r, in two kernels.
 *
 * rmsnorm_bwd_w_part, grid (C, column groups): block (c, g) takes the c-th contiguous chunk
 * of ceil(rows / C) rows and the columns g span, g span + gridDim.y span, ... (span =
 * blockDim.x FTK_RBW_COLS; a thread owns FTK_RBW_COLS columns, blockDim.x apart). Per batch
 * of one row per warp, warp w computes its row's r with shuffles, then every thread adds
 * the batch into its columns in row order (fp32); the chunk's column sums go to scratch
 * row c. x is read twice, the second time mostly from cache.
 *
 * rmsnorm_bwd_w_fin, one thread per column: adds the C chunk sums of its column in chunk
 * order, in double. Both orders are fixed by the grid: the result is deterministic. */
template <class TX, class TY, class TO> __device__ __forceinline__ void rmsnorm_bwd_w_part(const ftk_args_t &a)
{
    __shared__ float inv[32];
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d;
    float eps = (float)a.fp[0];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    long long span = (long long)blockDim.x * FTK_RBW_COLS;
    long long per = (rows + gridDim.x - 1) / gridDim.x;
    long long r_lo = (long long)blockIdx.x * per, r_hi = r_lo + per;
    r_lo = r_lo < rows ? r_lo : rows;
    r_hi = r_hi < rows ? r_hi : rows;
    const TX *x = (const TX *)a.in[0];
    const TY *dy = (const TY *)a.in[1];
    float *part = (float *)ftk_scratch_data(a) + (long long)blockIdx.x * d;
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0)
        *(int *)a.scratch = (int)gridDim.x;
    for (long long c0 = (long long)blockIdx.y * span; c0 < d; c0 += (long long)gridDim.y * span) {
        float acc[FTK_RBW_COLS];
#pragma unroll
        for (int k = 0; k < FTK_RBW_COLS; k++)
            acc[k] = 0.0f;
        for (long long r0 = r_lo; r0 < r_hi; r0 += nw) {
            long long r = r0 + w;
            if (r < r_hi) {
                float s = 0.0f;
                ftk_each(x + r * d, 0, d, lane, 32, [&](TX v) {
                    float f = ftk_f(v);
                    s += f * f;
                });
                s = ftk_warp_sum(s);
                if (lane == 0)
                    inv[w] = 1.0f / sqrtf(s / (float)d + eps);
            }
            __syncthreads();
            int nr = r_hi - r0 < nw ? (int)(r_hi - r0) : nw, left = (int)(d - c0) - (int)threadIdx.x;
            for (int q = 0; q < nr; q++) {
                float iv = inv[q];
                const TX *xr = x + (r0 + q) * d + c0 + threadIdx.x;
                const TY *dr = dy + (r0 + q) * d + c0 + threadIdx.x;
#pragma unroll
                for (int k = 0; k < FTK_RBW_COLS; k++)
                    if (k * (int)blockDim.x < left)
                        acc[k] += ftk_f(dr[k * blockDim.x]) * ftk_f(xr[k * blockDim.x]) * iv;
            }
            __syncthreads();
        }
#pragma unroll
        for (int k = 0; k < FTK_RBW_COLS; k++) {
            long long c = c0 + threadIdx.x + (long long)k * blockDim.x;
            if (c < d)
                part[c] = acc[k];
        }
    }
}

template <class TX, class TY, class TO> __device__ __forceinline__ void rmsnorm_bwd_w_fin(const ftk_args_t &a)
{
    long long d = ftk_last(a, 0);
    int nc = *(const int *)a.scratch;
    const float *part = (const float *)ftk_scratch_data(a);
    FTK_FOR(c, d)
    {
        double s = 0.0;
        for (int k = 0; k < nc; k++)
            s += (double)part[(long long)k * d + c];
        ftk_std<TO>(a.out, c, s);
    }
}

} /* namespace ftk */
