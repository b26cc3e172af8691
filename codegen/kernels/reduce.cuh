/* reduce.cuh — reductions to a scalar and the token cross-entropy.
 * defines: ftk::sum_part / sum_fin, ftk::mean_part / mean_fin, ftk::sumsq_part / sumsq_fin,
 *          ftk::xent_rows / xent_fin, ftk::xent_bwd
 * launch:  sum, mean, sumsq: two kernels. The first over a fixed grid of G blocks of 256
 *          threads (G from the element count, at most 1024): block b reduces the b-th
 *          contiguous slice into a double partial in scratch; the second, one block of 256,
 *          adds the G partials in index order. xent: the first kernel one block per row
 *          (32..1024 threads) writes the row's loss (double) to scratch, the second, one
 *          block of 1024, adds the rows in index order. xent_bwd: one block per row of
 *          logits (grid = N, 32..1024 threads); a row that fits no 16-byte vectors (V % 8,
 *          alignment) goes one element at a time.
 * scratch: header int 0 = G (sum, mean, sumsq); data: G doubles, or N doubles (xent).
 * Every sum has a fixed shape for a given launch record (slices, per-thread order, tree),
 * so the result has the same bits every run; the slicing depends only on the grid. */

namespace ftk {

/* Elements per block slice of n elements over nb blocks: a multiple of 16, so that every
 * slice of a 16-byte aligned array starts 16-byte aligned for 2- and 4-byte types. */
__device__ __forceinline__ long long ftk_slice_len(long long n, long long nb)
{
    long long per = (n + nb - 1) / nb;
    return (per + 15) / 16 * 16;
}

/* mode 0 sum, 1 mean, 2 sum of squares. Block b reduces elements [b per, (b + 1) per). */
template <class TX, class TO, int MODE> __device__ __forceinline__ void reduce_part(const ftk_args_t &a)
{
    long long n = ftk_numel(a, 0), per = ftk_slice_len(n, gridDim.x);
    long long lo = (long long)blockIdx.x * per, hi = lo + per;
    lo = lo < n ? lo : n;
    hi = hi < n ? hi : n;
    double s = 0.0;
    ftk_each((const TX *)a.in[0], lo, hi, threadIdx.x, blockDim.x, [&](TX x) {
        double v = ftk_d(x);
        s += MODE == 2 ? v * v : v;
    });
    s = ftk_block_sum(s);
    if (threadIdx.x == 0) {
        ((double *)ftk_scratch_data(a))[blockIdx.x] = s;
        if (blockIdx.x == 0)
            *(int *)a.scratch = (int)gridDim.x;
    }
}

template <class TX, class TO, int MODE> __device__ __forceinline__ void reduce_fin(const ftk_args_t &a)
{
    if (blockIdx.x != 0)
        return;
    int np = *(const int *)a.scratch;
    const double *part = (const double *)ftk_scratch_data(a);
    double s = 0.0;
    for (int i = threadIdx.x; i < np; i += blockDim.x)
        s += part[i];
    s = ftk_block_sum(s);
    if (threadIdx.x == 0)
        ftk_std<TO>(a.out, 0, MODE == 1 ? s / (double)ftk_numel(a, 0) : s);
}

template <class TX, class TO> __device__ __forceinline__ void sum_part(const ftk_args_t &a) { reduce_part<TX, TO, 0>(a); }
template <class TX, class TO> __device__ __forceinline__ void sum_fin(const ftk_args_t &a) { reduce_fin<TX, TO, 0>(a); }
template <class TX, class TO> __device__ __forceinline__ void mean_part(const ftk_args_t &a) { reduce_part<TX, TO, 1>(a); }
template <class TX, class TO> __device__ __forceinline__ void mean_fin(const ftk_args_t &a) { reduce_fin<TX, TO, 1>(a); }
template <class TX, class TO> __device__ __forceinline__ void sumsq_part(const ftk_args_t &a) { reduce_part<TX, TO, 2>(a); }
template <class TX, class TO> __device__ __forceinline__ void sumsq_fin(const ftk_args_t &a) { reduce_fin<TX, TO, 2>(a); }

/* (logits[N,V], targets[N] i32) -> sum over rows whose target is not ip[0] of
 * lse(row) - row[target]; NaN when a kept target lies outside [0, V) (the reference's
 * poison). First kernel: block r writes row r's term to scratch (0 for an ignored row,
 * NaN for a bad target), so the NaN survives the sum. */
template <class TL, class TT, class TO> __device__ __forceinline__ void xent_rows(const ftk_args_t &a)
{
    long long nr = a.shape[0][0], nv = a.shape[0][1], ignore = a.ip[0];
    const TL *lg = (const TL *)a.in[0];
    const int *tg = (const int *)a.in[1];
    double *loss = (double *)ftk_scratch_data(a);
    for (long long r = blockIdx.x; r < nr; r += gridDim.x) {
        long long t = tg[r];
        double v;
        if (t == ignore) {
            v = 0.0;
        } else if (t < 0 || t >= nv) {
            v = (double)FTK_NAN;
        } else { /* t is the same for the whole block: every thread reaches the block reduction */
            const TL *row = lg + r * nv;
            ftk_ms st;
            st.m = -FTK_INF;
            st.s = 0.0f;
            ftk_each(row, 0, nv, threadIdx.x, blockDim.x, [&](TL x) { st = ftk_ms_add(st, ftk_f(x)); });
            st = ftk_block_ms(st);
            v = (double)(st.m + logf(st.s)) - (double)ftk_f(row[t]);
        }
        if (threadIdx.x == 0)
            loss[r] = v;
    }
}

/* Second kernel: the rows' terms added in row order (per-thread strides, then the tree). */
template <class TL, class TT, class TO> __device__ __forceinline__ void xent_fin(const ftk_args_t &a)
{
    if (blockIdx.x != 0)
        return;
    long long nr = a.shape[0][0];
    const double *loss = (const double *)ftk_scratch_data(a);
    double s = 0.0;
    for (long long r = threadIdx.x; r < nr; r += blockDim.x)
        s += loss[r];
    s = ftk_block_sum(s);
    if (threadIdx.x == 0)
        ftk_std<TO>(a.out, 0, s);
}

/* One row of xent_bwd by 16-byte accesses (the row 16-byte aligned, V % 8 == 0): thread t
 * of nt takes vectors t + q nt, q = 0, 1, ... (a warp reads 512 contiguous bytes), 64 bytes
 * in flight. Pass 1 keeps a running (max m, sum of exp(x - m)) per thread, rescaled once per
 * vector that raises the max, with exp(y) as exp2(y log2 e); the block merges them
 * (ftk_block_ms). Pass 2 reads the row again, in reverse (q descending), with the
 * evict-first hint: the last vectors pass 1 read are re-read first, while the row is still
 * in L2, so the row comes from DRAM once; the output goes out with the evict-first hint
 * too, so it does not push the rows in flight out of L2. */
template <class TL, class TO>
__device__ __forceinline__ void ftk_xent_bwd_row(const TL *row, TO *out, long long nv, long long tgt, float dy)
{
    typedef ftk_v8<TL> VL;
    constexpr int U = sizeof(TL) == 4 ? 2 : 4; /* 64 bytes in flight a thread, in 64 registers (1024 threads) */
    const float L2E = 1.4426950408889634f;
    long long nvec = nv / 8, nt = blockDim.x, nq = (nvec + nt - 1) / nt;
    ftk_ms st;
    st.m = -FTK_INF;
    st.s = 0.0f;
    for (long long q0 = 0; q0 < nq; q0 += U) {
        typename VL::raw u[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            long long v = threadIdx.x + (q0 + k) * nt;
            if (v < nvec)
                u[k] = VL::ldr(row, v * 8);
        }
#pragma unroll
        for (int k = 0; k < U; k++) {
            long long v = threadIdx.x + (q0 + k) * nt;
            if (v < nvec) {
                float f[8];
                VL::cvt(u[k], f);
                float vm = f[0];
#pragma unroll
                for (int e = 1; e < 8; e++)
                    vm = fmaxf(vm, f[e]);
                if (vm > st.m) { /* from -inf: exp2(-inf) = 0 clears the empty sum */
                    st.s *= exp2f((st.m - vm) * L2E);
                    st.m = vm;
                }
                /* st.m == -inf: the vector holds only -inf (adding 0 each) or NaN (poison) */
                float ml = st.m == -FTK_INF ? 0.0f : st.m * L2E;
#pragma unroll
                for (int e = 0; e < 8; e++)
                    st.s += exp2f(fmaf(f[e], L2E, -ml));
            }
        }
    }
    st = ftk_block_ms(st);
    float ll = (st.m + logf(st.s)) * L2E; /* lse in log2 units */
    long long tv = tgt / 8;
    int te = (int)(tgt - tv * 8);
    for (long long q0 = nq - 1; q0 >= 0; q0 -= U) {
        typename VL::raw u[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            long long v = threadIdx.x + (q0 - k) * nt;
            if (q0 - k >= 0 && v < nvec)
                u[k] = VL::ldr_cs(row, v * 8);
        }
#pragma unroll
        for (int k = 0; k < U; k++) {
            long long v = threadIdx.x + (q0 - k) * nt;
            if (q0 - k >= 0 && v < nvec) {
                float f[8];
                VL::cvt(u[k], f);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    f[e] = exp2f(fmaf(f[e], L2E, -ll));
                if (v == tv)
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        if (e == te)
                            f[e] -= 1.0f;
#pragma unroll
                for (int e = 0; e < 8; e++)
                    f[e] *= dy;
                ftk_v8<TO>::st_cs(out, v * 8, f);
            }
        }
    }
}

/* (logits, targets, dy scalar) -> dy (softmax(row) - onehot(target)); 0 on ignored rows,
 * NaN on rows with an out-of-range target. By 16-byte accesses (ftk_xent_bwd_row) where
 * the rows are 16-byte aligned, else one element at a time (the row read twice). */
template <class TL, class TT, class TY, class TO> __device__ __forceinline__ void xent_bwd(const ftk_args_t &a)
{
    long long nr = a.shape[0][0], nv = a.shape[0][1], ignore = a.ip[0];
    const TL *lg = (const TL *)a.in[0];
    const int *tg = (const int *)a.in[1];
    float dy = ftk_ld<TY>(a.in[2], 0);
    bool vec = false;
    if constexpr (ftk_v8_ok<TL>::value && ftk_v8_ok<TO>::value)
        vec = nv % 8 == 0 && ftk_al16(a.in[0]) && ftk_al16(a.out);
    for (long long r = blockIdx.x; r < nr; r += gridDim.x) {
        long long t = tg[r];
        const TL *row = lg + r * nv;
        if (t == ignore || t < 0 || t >= nv) {
            float v = t == ignore ? 0.0f : FTK_NAN;
            if constexpr (ftk_v8_ok<TO>::value) {
                if (vec) {
                    float f[8] = {v, v, v, v, v, v, v, v};
                    for (long long j = threadIdx.x; j < nv / 8; j += blockDim.x)
                        ftk_v8<TO>::st_cs(a.out, r * nv + j * 8, f);
                    continue;
                }
            }
            for (long long j = threadIdx.x; j < nv; j += blockDim.x)
                ftk_st<TO>(a.out, r * nv + j, v);
            continue;
        }
        if constexpr (ftk_v8_ok<TL>::value && ftk_v8_ok<TO>::value) {
            if (vec) { /* t is the same for the whole block: every thread reaches the block reduction */
                ftk_xent_bwd_row(row, (TO *)a.out + r * nv, nv, t, dy);
                continue;
            }
        }
        ftk_ms st;
        st.m = -FTK_INF;
        st.s = 0.0f;
        for (long long j = threadIdx.x; j < nv; j += blockDim.x)
            st = ftk_ms_add(st, ftk_f(row[j]));
        st = ftk_block_ms(st);
        float lse = st.m + logf(st.s);
        for (long long j = threadIdx.x; j < nv; j += blockDim.x)
            ftk_st<TO>(a.out, r * nv + j, dy * (expf(ftk_f(row[j]) - lse) - (j == t ? 1.0f : 0.0f)));
    }
}

} /* namespace ftk */
