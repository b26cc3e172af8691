/* reduce.cuh — reductions to a scalar and the token cross-entropy.
 * defines: ftk::sum, ftk::mean, ftk::sumsq, ftk::xent, ftk::xent_bwd
 * launch:  sum, mean, sumsq, xent: one block of 1024 threads (a deterministic single-block
 *          reduction in double: fixed per-thread order, fixed tree); xent_bwd: one block per
 *          row of logits (grid = N, 32..1024 threads). */

namespace ftk {

/* mode 0 sum, 1 mean, 2 sum of squares. */
template <class TX, class TO, int MODE> __device__ __forceinline__ void reduce_all(const ftk_args_t &a)
{
    if (blockIdx.x != 0)
        return;
    long long n = ftk_numel(a, 0);
    double s = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        double v = ftk_ldd<TX>(a.in[0], i);
        s += MODE == 2 ? v * v : v;
    }
    s = ftk_block_sum(s);
    if (threadIdx.x == 0)
        ftk_std<TO>(a.out, 0, MODE == 1 ? s / (double)n : s);
}

template <class TX, class TO> __device__ __forceinline__ void sum(const ftk_args_t &a) { reduce_all<TX, TO, 0>(a); }
template <class TX, class TO> __device__ __forceinline__ void mean(const ftk_args_t &a) { reduce_all<TX, TO, 1>(a); }
template <class TX, class TO> __device__ __forceinline__ void sumsq(const ftk_args_t &a) { reduce_all<TX, TO, 2>(a); }

/* log-sum-exp of a row, computed by one warp and returned to all its lanes. */
template <class TL> __device__ __forceinline__ float ftk_row_lse_warp(const TL *row, long long nv)
{
    ftk_ms st;
    st.m = -FTK_INF;
    st.s = 0.0f;
    for (long long j = threadIdx.x & 31; j < nv; j += 32)
        st = ftk_ms_add(st, ftk_f(row[j]));
    st = ftk_warp_ms(st);
    return st.m + logf(st.s);
}

/* (logits[N,V], targets[N] i32) -> sum over rows whose target is not ip[0] of
 * lse(row) - row[target]; NaN when a kept target lies outside [0, V) (the reference's
 * poison). Warp w takes rows w, w + nw, ...; the per-warp double sums are added in warp
 * order. One block: the whole loss is read by one SM (see docs/design.md). */
template <class TL, class TT, class TO> __device__ __forceinline__ void xent(const ftk_args_t &a)
{
    __shared__ double part[32];
    __shared__ int bad[32];
    if (blockIdx.x != 0)
        return;
    long long nr = a.shape[0][0], nv = a.shape[0][1], ignore = a.ip[0];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const TL *lg = (const TL *)a.in[0];
    const int *tg = (const int *)a.in[1];
    double sum = 0.0;
    int poisoned = 0;
    for (long long r = w; r < nr; r += nw) {
        long long t = tg[r];
        if (t == ignore)
            continue;
        if (t < 0 || t >= nv) {
            poisoned = 1;
            continue;
        }
        const TL *row = lg + r * nv;
        float lse = ftk_row_lse_warp(row, nv);
        sum += (double)lse - (double)ftk_f(row[t]);
    }
    if (lane == 0) {
        part[w] = sum;
        bad[w] = poisoned;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        int anybad = 0;
        for (int u = 0; u < nw; u++) {
            s += part[u];
            anybad |= bad[u];
        }
        ftk_std<TO>(a.out, 0, anybad ? (double)FTK_NAN : s);
    }
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
