/* reduce.cuh — reductions to a scalar and the token cross-entropy.
 * defines: ftk::sum_part / sum_fin, ftk::mean_part / mean_fin, ftk::sumsq_part / sumsq_fin,
 *          ftk::xent_rows / xent_fin, ftk::xent_bwd
 * launch:  sum, mean, sumsq: two kernels. The first over a fixed grid of G blocks of 256
 *          threads (G from the element count, at most 1024): block b reduces the b-th
 *          contiguous slice into a double partial in scratch; the second, one block of 256,
 *          adds the G partials in index order. xent: the first kernel one block per row
 *          (32..1024 threads) writes the row's loss (double) to scratch, the second, one
 *          block of 1024, adds the rows in index order. xent_bwd: one block per row of
 *          logits (grid = N, 32..1024 threads).
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

/* (logits, targets, dy scalar) -> dy (softmax(row) - onehot(target)); 0 on ignored rows,
 * NaN on rows with an out-of-range target. */
template <class TL, class TT, class TY, class TO> __device__ __forceinline__ void xent_bwd(const ftk_args_t &a)
{
    long long nr = a.shape[0][0], nv = a.shape[0][1], ignore = a.ip[0];
    const TL *lg = (const TL *)a.in[0];
    const int *tg = (const int *)a.in[1];
    float dy = ftk_ld<TY>(a.in[2], 0);
    for (long long r = blockIdx.x; r < nr; r += gridDim.x) {
        long long t = tg[r];
        const TL *row = lg + r * nv;
        if (t == ignore || t < 0 || t >= nv) {
            float v = t == ignore ? 0.0f : FTK_NAN;
            for (long long j = threadIdx.x; j < nv; j += blockDim.x)
                ftk_st<TO>(a.out, r * nv + j, v);
            continue;
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
