/* movement.cuh — ops that move elements without arithmetic: the embedding gather and its
 * scatter-add backward, permute, slice, slice_bwd, concat.
 * defines: ftk::embed, ftk::embed_bwd, ftk::permute, ftk::slice, ftk::slice_bwd, ftk::concat
 * launch:  256 threads, a grid over a.n output elements with a grid-stride loop; embed_bwd
 *          a grid (V, ceil(D / (256 * FTK_EBW_COLS))) of 256 threads.
 * Elements are copied with ftk_cvt, exact for equal storage types (i32 included). */

/* FTK_EBW_COLS (embed_bwd: output columns per thread and pass) comes from the generated
 * source's preamble (codegen/emit.c). */

namespace ftk {

/* Views tensor k as [outer, shape[axis], inner]. */
__device__ __forceinline__ void ftk_split_axis(const ftk_args_t &a, int k, int axis, long long *outer, long long *inner)
{
    long long o = 1, in = 1;
    for (int d = 0; d < axis; d++)
        o *= a.shape[k][d];
    for (int d = axis + 1; d < a.ndim[k]; d++)
        in *= a.shape[k][d];
    *outer = o;
    *inner = in;
}

/* (table[V,D], ids[...] i32) -> [..., D]; an id outside [0, V) gives a NaN row, as the
 * reference (the run's NaN guard then names the bad data). */
template <class TT, class TI, class TO> __device__ __forceinline__ void embed(const ftk_args_t &a)
{
    long long nv = a.shape[0][0], d = a.shape[0][1];
    const TT *tab = (const TT *)a.in[0];
    const int *ids = (const int *)a.in[1];
    TO *o = (TO *)a.out;
    FTK_FOR(i, a.n)
    {
        long long r = i / d, c = i - r * d;
        long long id = ids[r];
        o[i] = id >= 0 && id < nv ? ftk_cvt<TO, TT>::go(tab[id * d + c]) : ftk_dt<TO>::from(FTK_NAN);
    }
}

/* (ids[...] i32, dy[..., D]) -> [V, D], rows of dy summed into the rows their ids name;
 * out-of-range ids are dropped. Deterministic and without atomics: block (v, column group)
 * scans every id, finds the rows equal to v in ascending order with warp ballots, and adds
 * those rows of dy into registers (the reference's order); each output element is written
 * once, so nothing needs zeroing first. Costs rows x V id comparisons (read from L2). */
template <class TI, class TD, class TO> __device__ __forceinline__ void embed_bwd(const ftk_args_t &a)
{
    __shared__ unsigned int hits[32];
    long long nv = a.shape[FTK_OUT][0], d = a.shape[FTK_OUT][1];
    long long rows = ftk_numel(a, 0);
    const int *ids = (const int *)a.in[0];
    const TD *dy = (const TD *)a.in[1];
    int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    long long span = (long long)blockDim.x * FTK_EBW_COLS;
    for (long long v = blockIdx.x; v < nv; v += gridDim.x)
        for (long long c0 = (long long)blockIdx.y * span; c0 < d; c0 += (long long)gridDim.y * span) {
            float acc[FTK_EBW_COLS];
#pragma unroll
            for (int k = 0; k < FTK_EBW_COLS; k++)
                acc[k] = 0.0f;
            for (long long r0 = 0; r0 < rows; r0 += blockDim.x) {
                long long r = r0 + threadIdx.x;
                unsigned int b = __ballot_sync(0xffffffffu, r < rows && (long long)ids[r] == v);
                if (lane == 0)
                    hits[threadIdx.x >> 5] = b;
                __syncthreads();
                for (int w = 0; w < nw; w++)
                    for (unsigned int m = hits[w]; m; m &= m - 1) {
                        const TD *row = dy + (r0 + w * 32 + (__ffs(m) - 1)) * d;
#pragma unroll
                        for (int k = 0; k < FTK_EBW_COLS; k++) {
                            long long c = c0 + threadIdx.x + (long long)k * blockDim.x;
                            if (c < d)
                                acc[k] += ftk_f(row[c]);
                        }
                    }
                __syncthreads();
            }
#pragma unroll
            for (int k = 0; k < FTK_EBW_COLS; k++) {
                long long c = c0 + threadIdx.x + (long long)k * blockDim.x;
                if (c < d)
                    ftk_st<TO>(a.out, v * d + c, acc[k]);
            }
        }
}

/* Output axis i is input axis ip[i]: walk the output in order, address the input through
 * each output axis's input stride (axes padded to four in front with extent 1). */
template <class TI, class TO> __device__ __forceinline__ void permute(const ftk_args_t &a)
{
    int nd = a.ndim[0], pad = 4 - nd;
    long long ext[4], st[4];
#pragma unroll
    for (int q = 0; q < 4; q++) { /* unrolled: the arrays stay in registers */
        int i = q - pad;
        ext[q] = 1;
        st[q] = 0;
        if (i >= 0) {
            long long s = 1;
            for (int d = (int)a.ip[i] + 1; d < nd; d++)
                s *= a.shape[0][d];
            ext[q] = a.shape[FTK_OUT][i];
            st[q] = s;
        }
    }
    const TI *x = (const TI *)a.in[0];
    TO *o = (TO *)a.out;
    FTK_FOR(i, a.n)
    {
        long long r = i;
        long long i3 = r % ext[3];
        r /= ext[3];
        long long i2 = r % ext[2];
        r /= ext[2];
        long long i1 = r % ext[1];
        long long i0 = r / ext[1];
        o[i] = ftk_cvt<TO, TI>::go(x[i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3]]);
    }
}

/* a[..., ip[1] : ip[1] + ip[2], ...] along axis ip[0]. */
template <class TI, class TO> __device__ __forceinline__ void slice(const ftk_args_t &a)
{
    int axis = (int)a.ip[0];
    long long start = a.ip[1], len = a.ip[2], ext = a.shape[0][axis], outer, inner;
    ftk_split_axis(a, 0, axis, &outer, &inner);
    const TI *x = (const TI *)a.in[0];
    TO *o = (TO *)a.out;
    long long blk = len * inner;
    FTK_FOR(i, a.n)
    {
        long long ob = i / blk, rem = i - ob * blk;
        o[i] = ftk_cvt<TO, TI>::go(x[(ob * ext + start) * inner + rem]);
    }
}

/* dy placed at ip[1] of a zero tensor of extent ip[3] along axis ip[0]. */
template <class TI, class TO> __device__ __forceinline__ void slice_bwd(const ftk_args_t &a)
{
    int axis = (int)a.ip[0];
    long long start = a.ip[1], len = a.ip[2], full = a.ip[3], outer, inner;
    ftk_split_axis(a, FTK_OUT, axis, &outer, &inner);
    const TI *x = (const TI *)a.in[0];
    TO *o = (TO *)a.out;
    FTK_FOR(i, a.n)
    {
        long long r = i % inner, k = (i / inner) % full, ob = i / (inner * full);
        if (k >= start && k < start + len)
            o[i] = ftk_cvt<TO, TI>::go(x[(ob * len + (k - start)) * inner + r]);
        else
            o[i] = ftk_dt<TO>::from(0.0f);
    }
}

/* (a, b) joined along axis ip[0]. */
template <class TA, class TB, class TO> __device__ __forceinline__ void concat(const ftk_args_t &a)
{
    int axis = (int)a.ip[0];
    long long ea = a.shape[0][axis], eb = a.shape[1][axis], full = ea + eb, outer, inner;
    ftk_split_axis(a, FTK_OUT, axis, &outer, &inner);
    const TA *x = (const TA *)a.in[0];
    const TB *y = (const TB *)a.in[1];
    TO *o = (TO *)a.out;
    FTK_FOR(i, a.n)
    {
        long long r = i % inner, k = (i / inner) % full, ob = i / (inner * full);
        o[i] = k < ea ? ftk_cvt<TO, TA>::go(x[(ob * ea + k) * inner + r])
                      : ftk_cvt<TO, TB>::go(y[(ob * eb + (k - ea)) * inner + r]);
    }
}

} /* namespace ftk */
