/* movement.cuh — ops that move elements without arithmetic: the embedding gather and its
 * scatter-add backward, permute, slice, slice_bwd, concat.
 * defines: ftk::embed, ftk::embed_bwd_index / embed_bwd, ftk::permute, ftk::slice,
 *          ftk::slice_bwd, ftk::concat
 * launch:  256 threads, a grid over a.n output elements with a grid-stride loop; embed_bwd
 *          two kernels: embed_bwd_index one block of 1024, then embed_bwd a grid
 *          (V, ceil(D / (256 * FTK_EBW_COLS))) of 256 threads.
 * scratch: embed_bwd: data V ints (bucket ends) then T ints (rows by id).
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
 * out-of-range ids are dropped. Two kernels, deterministic without float atomics.
 *
 * embed_bwd_index, one block: a counting sort of the ids into scratch. pos[v] (V ints)
 * gets the histogram (integer atomics), then its exclusive prefix sum, then every row r
 * with a valid id v is placed at order[pos[v]++] (T ints, T = number of ids). Afterwards
 * pos[v] is the end of v's bucket and pos[v - 1] (0 for v = 0) its start. The counts are
 * exact whatever the order of the atomics; the order of rows inside a bucket is not, so
 * the second kernel sorts each bucket before summing.
 *
 * embed_bwd, grid (V, column groups): block v takes its bucket, puts its rows in ascending
 * order (up to blockDim.x of them by rank counting in shared memory; more through a bitmap
 * of FTK_EBW_WINDOW rows at a time, walked in order), and adds those rows of dy into
 * registers (fp32, ascending rows: the reference's order); each output element is written
 * once, zeros included. Work: O(T + V) for the index, O(T D + V D) for the sums. */
#define FTK_EBW_WINDOW 32768 /* rows per bitmap pass: 4 KiB of shared memory */

template <class TI, class TD, class TO> __device__ __forceinline__ void embed_bwd_index(const ftk_args_t &a)
{
    __shared__ int tot[32];
    if (blockIdx.x != 0)
        return;
    long long nv = a.shape[FTK_OUT][0], rows = ftk_numel(a, 0);
    const int *ids = (const int *)a.in[0];
    int *pos = (int *)ftk_scratch_data(a), *order = pos + nv;
    int t = threadIdx.x, nt = blockDim.x, lane = t & 31, w = t >> 5;
    for (long long v = t; v < nv; v += nt)
        pos[v] = 0;
    __syncthreads();
    for (long long r = t; r < rows; r += nt) {
        int id = ids[r];
        if (id >= 0 && id < nv)
            atomicAdd(&pos[id], 1);
    }
    __syncthreads();
    /* exclusive prefix sum: thread t scans a contiguous segment, the segment totals are
     * scanned across the block (warps, then the warp totals), then the segments rewritten */
    long long seg = (nv + nt - 1) / nt, lo = (long long)t * seg, hi = lo + seg;
    lo = lo < nv ? lo : nv;
    hi = hi < nv ? hi : nv;
    int mine = 0;
    for (long long v = lo; v < hi; v++)
        mine += pos[v];
    int incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o)
            incl += u;
    }
    if (lane == 31)
        tot[w] = incl;
    __syncthreads();
    int before = 0;
    for (int u = 0; u < w; u++)
        before += tot[u];
    int run = before + incl - mine;
    for (long long v = lo; v < hi; v++) {
        int c = pos[v];
        pos[v] = run;
        run += c;
    }
    __syncthreads();
    for (long long r = t; r < rows; r += nt) {
        int id = ids[r];
        if (id >= 0 && id < nv)
            order[atomicAdd(&pos[id], 1)] = (int)r;
    }
}

template <class TI, class TD, class TO> __device__ __forceinline__ void embed_bwd(const ftk_args_t &a)
{
    __shared__ int list[256], sorted[256];
    __shared__ unsigned int bits[FTK_EBW_WINDOW / 32];
    long long nv = a.shape[FTK_OUT][0], d = a.shape[FTK_OUT][1];
    long long rows = ftk_numel(a, 0);
    const int *pos = (const int *)ftk_scratch_data(a), *order = pos + nv;
    const TD *dy = (const TD *)a.in[1];
    int t = threadIdx.x, nt = blockDim.x;
    long long span = (long long)nt * FTK_EBW_COLS;
    for (long long v = blockIdx.x; v < nv; v += gridDim.x) {
        int begin = v > 0 ? pos[v - 1] : 0, n = pos[v] - begin;
        bool small = n <= nt && n <= 256;
        if (small) { /* rank of each row among the bucket's (rows are distinct) */
            __syncthreads();
            if (t < n)
                list[t] = order[begin + t];
            __syncthreads();
            if (t < n) {
                int me = list[t], rank = 0;
                for (int j = 0; j < n; j++)
                    rank += list[j] < me;
                sorted[rank] = me;
            }
            __syncthreads();
        }
        for (long long c0 = (long long)blockIdx.y * span; c0 < d; c0 += (long long)gridDim.y * span) {
            float acc[FTK_EBW_COLS];
#pragma unroll
            for (int k = 0; k < FTK_EBW_COLS; k++)
                acc[k] = 0.0f;
            auto add_row = [&](long long r) {
                const TD *row = dy + r * d;
#pragma unroll
                for (int k = 0; k < FTK_EBW_COLS; k++) {
                    long long c = c0 + t + (long long)k * nt;
                    if (c < d)
                        acc[k] += ftk_f(row[c]);
                }
            };
            if (small) {
                for (int q = 0; q < n; q++)
                    add_row(sorted[q]);
            } else {
                for (long long w0 = 0; w0 < rows; w0 += FTK_EBW_WINDOW) {
                    __syncthreads(); /* the previous window's walk is done */
                    for (int i = t; i < FTK_EBW_WINDOW / 32; i += nt)
                        bits[i] = 0u;
                    __syncthreads();
                    for (int i = t; i < n; i += nt) {
                        long long r = order[begin + i];
                        if (r >= w0 && r < w0 + FTK_EBW_WINDOW)
                            atomicOr(&bits[(r - w0) >> 5], 1u << ((r - w0) & 31));
                    }
                    __syncthreads();
                    long long left = rows - w0, words = left < FTK_EBW_WINDOW ? (left + 31) / 32 : FTK_EBW_WINDOW / 32;
                    for (long long i = 0; i < words; i++)
                        for (unsigned int m = bits[i]; m; m &= m - 1)
                            add_row(w0 + i * 32 + (__ffs(m) - 1));
                }
            }
#pragma unroll
            for (int k = 0; k < FTK_EBW_COLS; k++) {
                long long c = c0 + t + (long long)k * nt;
                if (c < d)
                    ftk_st<TO>(a.out, v * d + c, acc[k]);
            }
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
