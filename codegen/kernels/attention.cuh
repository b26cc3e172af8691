/* attention.cuh — causal, document-masked attention with grouped key/value heads, and its
 * backward. Correctness first: plain fp32 FMA, no tensor cores, no S x S buffer.
 * defines: ftk_attn_geo, ftk::attn, ftk::attn_bwd (ftk::attn_bwd_q, ftk::attn_bwd_kv)
 * launch:  attn and attn_bwd with ip[0] = 0 (dq): grid (S, Hq, B), one block of 128
 *          threads per (query row, head, batch); attn_bwd with ip[0] = 1 (dk) or
 *          2 (dv): grid (ceil(S / FTK_ATT_TILE), Hkv, B), one block per tile of keys.
 * shared:  attn nw (Dh + 2) floats; dq nw Dh + 3 nw floats; dk/dv FTK_ATT_TILE Dh floats +
 *          FTK_ATT_TILE ints + 3 nw floats (nw = warps per block); codegen/emit.c computes the
 *          same sizes.
 * q [B,S,Hq,Dh], k and v [B,S,Hkv,Dh], doc [B,S] i32; query i sees key j when j <= i and
 * doc[j] == doc[i]; query head h reads kv head h / (Hq / Hkv) (HF repeat_kv); fp[0] is the
 * softmax scale. Warps split the keys of a row, each with a running (max, sum, weighted
 * sum) in registers, lanes split the head dimension (FTK_ATT_DPL per lane, so Dh <= 256);
 * the warps' states merge through shared memory in warp order, so results are
 * deterministic. */

/* FTK_ATT_DPL (head dims per lane) and FTK_ATT_TILE (keys per dk/dv block) come from the
 * generated source's preamble (codegen/emit.c), which sizes the launches with them. */

struct ftk_attn_geo {
    long long nb, s, hq, hkv, dh, group;
    float scale;
};

__device__ __forceinline__ ftk_attn_geo ftk_attn_geo_of(const ftk_args_t &a)
{
    ftk_attn_geo g;
    g.nb = a.shape[0][0];
    g.s = a.shape[0][1];
    g.hq = a.shape[0][2];
    g.dh = a.shape[0][3];
    g.hkv = a.shape[1][2];
    g.group = g.hq / g.hkv;
    g.scale = (float)a.fp[0];
    return g;
}

__device__ __forceinline__ long long ftk_q_row(const ftk_attn_geo &g, long long b, long long i, long long h)
{
    return ((b * g.s + i) * g.hq + h) * g.dh;
}

__device__ __forceinline__ long long ftk_kv_row(const ftk_attn_geo &g, long long b, long long j, long long hk)
{
    return ((b * g.s + j) * g.hkv + hk) * g.dh;
}

/* A row of Dh values spread over the warp: lane l holds dims l, l + 32, ... */
template <class T> __device__ __forceinline__ void ftk_att_load(const void *base, long long off, long long dh, float r[FTK_ATT_DPL])
{
    const T *row = (const T *)base + off;
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int c = 0; c < FTK_ATT_DPL; c++) {
        long long d = lane + 32 * c;
        r[c] = d < dh ? ftk_f(row[d]) : 0.0f;
    }
}

/* r . row, returned to every lane of the warp. */
template <class T> __device__ __forceinline__ float ftk_att_dot(const float r[FTK_ATT_DPL], const void *base, long long off, long long dh)
{
    const T *row = (const T *)base + off;
    int lane = threadIdx.x & 31;
    float p = 0.0f;
#pragma unroll
    for (int c = 0; c < FTK_ATT_DPL; c++) {
        long long d = lane + 32 * c;
        if (d < dh)
            p += r[c] * ftk_f(row[d]);
    }
    return ftk_warp_sum(p);
}

/* exp(m - mx) for a warp's maximum m against the block's mx; 0 for a warp that saw no key. */
__device__ __forceinline__ float ftk_att_weight(float m, float mx) { return m == -FTK_INF ? 0.0f : expf(m - mx); }

namespace ftk {

template <class TQ, class TK, class TV, class TD, class TO> __device__ __forceinline__ void attn(const ftk_args_t &a)
{
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    long long stride = g.dh + 2;
    float *part = (float *)ftk_smem; /* [nw][Dh + 2]: acc, then m and l */
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (long long i = blockIdx.x; i < g.s; i += gridDim.x) {
                long long hk = h / g.group;
                const int *doc = (const int *)a.in[3] + b * g.s;
                int di = doc[i];
                float qr[FTK_ATT_DPL], acc[FTK_ATT_DPL];
                ftk_att_load<TQ>(a.in[0], ftk_q_row(g, b, i, h), g.dh, qr);
#pragma unroll
                for (int c = 0; c < FTK_ATT_DPL; c++)
                    acc[c] = 0.0f;
                float m = -FTK_INF, l = 0.0f;
                for (long long j = w; j <= i; j += nw) {
                    if (doc[j] != di)
                        continue;
                    float s = g.scale * ftk_att_dot<TK>(qr, a.in[1], ftk_kv_row(g, b, j, hk), g.dh);
                    float mn = fmaxf(m, s);
                    float corr = expf(m - mn), p = expf(s - mn);
                    l = l * corr + p;
                    const TV *v = (const TV *)a.in[2] + ftk_kv_row(g, b, j, hk);
#pragma unroll
                    for (int c = 0; c < FTK_ATT_DPL; c++) {
                        long long d = lane + 32 * c;
                        if (d < g.dh)
                            acc[c] = acc[c] * corr + p * ftk_f(v[d]);
                    }
                    m = mn;
                }
                __syncthreads(); /* the previous row's readers are done with part */
#pragma unroll
                for (int c = 0; c < FTK_ATT_DPL; c++) {
                    long long d = lane + 32 * c;
                    if (d < g.dh)
                        part[w * stride + d] = acc[c];
                }
                if (lane == 0) {
                    part[w * stride + g.dh] = m;
                    part[w * stride + g.dh + 1] = l;
                }
                __syncthreads();
                float mx = -FTK_INF, sum = 0.0f;
                for (int u = 0; u < nw; u++)
                    mx = fmaxf(mx, part[u * stride + g.dh]);
                for (int u = 0; u < nw; u++)
                    sum += part[u * stride + g.dh + 1] * ftk_att_weight(part[u * stride + g.dh], mx);
                long long orow = ftk_q_row(g, b, i, h);
                for (long long d = threadIdx.x; d < g.dh; d += blockDim.x) {
                    float o = 0.0f;
                    for (int u = 0; u < nw; u++)
                        o += part[u * stride + d] * ftk_att_weight(part[u * stride + g.dh], mx);
                    ftk_st<TO>(a.out, orow + d, sum > 0.0f ? o / sum : 0.0f); /* no visible key: 0 */
                }
            }
}

/* Softmax statistics of query row (b, i, head with kv head hk): mx (maximum score), sum
 * (of exp(score - mx)) and, with want_delta, delta = sum_j p_j (dy_i . v_j). Called by the
 * whole block together; every thread gets the same values. red: 3 nw floats. */
template <class TK, class TV>
__device__ __forceinline__ void attn_stats(const ftk_args_t &a, const ftk_attn_geo &g, long long b, long long i,
                                           long long hk, const float qr[FTK_ATT_DPL], const float dyr[FTK_ATT_DPL],
                                           bool want_delta, float *red, float *mx, float *sum, float *delta)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int *doc = (const int *)a.in[3] + b * g.s;
    int di = doc[i];
    float m = -FTK_INF, l = 0.0f, t = 0.0f;
    for (long long j = w; j <= i; j += nw) {
        if (doc[j] != di)
            continue;
        long long kv = ftk_kv_row(g, b, j, hk);
        float s = g.scale * ftk_att_dot<TK>(qr, a.in[1], kv, g.dh);
        float dp = want_delta ? ftk_att_dot<TV>(dyr, a.in[2], kv, g.dh) : 0.0f;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn), p = expf(s - mn);
        l = l * corr + p;
        t = t * corr + p * dp;
        m = mn;
    }
    __syncthreads(); /* earlier readers of red are done */
    if (lane == 0) {
        red[3 * w] = m;
        red[3 * w + 1] = l;
        red[3 * w + 2] = t;
    }
    __syncthreads();
    float M = -FTK_INF, L = 0.0f, T = 0.0f;
    for (int u = 0; u < nw; u++)
        M = fmaxf(M, red[3 * u]);
    for (int u = 0; u < nw; u++) {
        float f = ftk_att_weight(red[3 * u], M);
        L += red[3 * u + 1] * f;
        T += red[3 * u + 2] * f;
    }
    *mx = M;
    *sum = L;
    *delta = L > 0.0f ? T / L : 0.0f;
}

/* dq_i = scale sum_j p_j (dP_j - delta) k_j, dP_j = dy_i . v_j: statistics first, then a
 * second pass over the keys. */
template <class TQ, class TK, class TV, class TD, class TY, class TO>
__device__ __forceinline__ void attn_bwd_q(const ftk_args_t &a)
{
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float *part = (float *)ftk_smem; /* [nw][Dh] */
    float *red = part + nw * g.dh;   /* [3 nw] */
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (long long i = blockIdx.x; i < g.s; i += gridDim.x) {
                long long hk = h / g.group, qrow = ftk_q_row(g, b, i, h);
                const int *doc = (const int *)a.in[3] + b * g.s;
                int di = doc[i];
                float qr[FTK_ATT_DPL], dyr[FTK_ATT_DPL], acc[FTK_ATT_DPL];
                ftk_att_load<TQ>(a.in[0], qrow, g.dh, qr);
                ftk_att_load<TY>(a.in[4], qrow, g.dh, dyr);
                float mx, sum, delta;
                attn_stats<TK, TV>(a, g, b, i, hk, qr, dyr, true, red, &mx, &sum, &delta);
#pragma unroll
                for (int c = 0; c < FTK_ATT_DPL; c++)
                    acc[c] = 0.0f;
                for (long long j = w; j <= i; j += nw) {
                    if (doc[j] != di)
                        continue;
                    long long kv = ftk_kv_row(g, b, j, hk);
                    float s = g.scale * ftk_att_dot<TK>(qr, a.in[1], kv, g.dh);
                    float p = expf(s - mx) / sum;
                    float dp = ftk_att_dot<TV>(dyr, a.in[2], kv, g.dh);
                    float ds = g.scale * p * (dp - delta);
                    const TK *k = (const TK *)a.in[1] + kv;
#pragma unroll
                    for (int c = 0; c < FTK_ATT_DPL; c++) {
                        long long d = lane + 32 * c;
                        if (d < g.dh)
                            acc[c] += ds * ftk_f(k[d]);
                    }
                }
                __syncthreads(); /* the previous row's readers are done with part */
#pragma unroll
                for (int c = 0; c < FTK_ATT_DPL; c++) {
                    long long d = lane + 32 * c;
                    if (d < g.dh)
                        part[w * g.dh + d] = acc[c];
                }
                __syncthreads();
                for (long long d = threadIdx.x; d < g.dh; d += blockDim.x) {
                    float o = 0.0f;
                    for (int u = 0; u < nw; u++)
                        o += part[u * g.dh + d];
                    ftk_st<TO>(a.out, qrow + d, o);
                }
            }
}

/* dv_j = sum over queries i >= j (and their group's heads) of p_ij dy_i; dk_j = scale sum
 * p_ij (dP_ij - delta_i) q_i. A block owns a tile of keys of one kv head and accumulates
 * them in shared memory (warp t % nw owns key t: no atomics, deterministic, the reference's
 * order). Each query row's statistics are recomputed from scratch by every tile that needs
 * them: O(S^2 Dh / FTK_ATT_TILE) per tile, O(S^3) in all — the known limit of this
 * correctness-first kernel; rows whose document no key of the tile shares are skipped. */
template <class TQ, class TK, class TV, class TD, class TY, class TO>
__device__ __forceinline__ void attn_bwd_kv(const ftk_args_t &a)
{
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    bool want_dk = a.ip[0] == 1;
    float *acc = (float *)ftk_smem;                    /* [TILE][Dh] */
    int *tdoc = (int *)(acc + FTK_ATT_TILE * g.dh);    /* [TILE] */
    float *red = (float *)(tdoc + FTK_ATT_TILE);       /* [3 nw] */
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long hk = blockIdx.y; hk < g.hkv; hk += gridDim.y)
            for (long long j0 = (long long)blockIdx.x * FTK_ATT_TILE; j0 < g.s; j0 += (long long)gridDim.x * FTK_ATT_TILE) {
                const int *doc = (const int *)a.in[3] + b * g.s;
                long long nt = g.s - j0 < FTK_ATT_TILE ? g.s - j0 : FTK_ATT_TILE;
                __syncthreads(); /* the previous tile's writers are done with acc */
                for (long long e = threadIdx.x; e < FTK_ATT_TILE * g.dh; e += blockDim.x)
                    acc[e] = 0.0f;
                for (long long t = threadIdx.x; t < FTK_ATT_TILE; t += blockDim.x)
                    tdoc[t] = t < nt ? doc[j0 + t] : 0;
                __syncthreads();
                for (long long i = j0; i < g.s; i++) {
                    int di = doc[i];
                    bool any = false;
                    for (long long t = 0; t < nt && j0 + t <= i; t++)
                        any = any || tdoc[t] == di;
                    if (!any)
                        continue; /* the same answer in every thread: no divergence at barriers */
                    for (long long hh = 0; hh < g.group; hh++) {
                        long long h = hk * g.group + hh, qrow = ftk_q_row(g, b, i, h);
                        float qr[FTK_ATT_DPL], dyr[FTK_ATT_DPL];
                        ftk_att_load<TQ>(a.in[0], qrow, g.dh, qr);
                        ftk_att_load<TY>(a.in[4], qrow, g.dh, dyr);
                        float mx, sum, delta;
                        attn_stats<TK, TV>(a, g, b, i, hk, qr, dyr, want_dk, red, &mx, &sum, &delta);
                        for (long long t = w; t < nt; t += nw) {
                            long long j = j0 + t;
                            if (j > i || tdoc[t] != di)
                                continue;
                            long long kv = ftk_kv_row(g, b, j, hk);
                            float s = g.scale * ftk_att_dot<TK>(qr, a.in[1], kv, g.dh);
                            float p = expf(s - mx) / sum;
                            float coef = p; /* dv: p dy_i; dk: scale p (dP - delta) q_i */
                            if (want_dk)
                                coef = g.scale * p * (ftk_att_dot<TV>(dyr, a.in[2], kv, g.dh) - delta);
#pragma unroll
                            for (int c = 0; c < FTK_ATT_DPL; c++) {
                                long long d = lane + 32 * c;
                                if (d < g.dh)
                                    acc[t * g.dh + d] += coef * (want_dk ? qr[c] : dyr[c]);
                            }
                        }
                    }
                }
                __syncthreads();
                for (long long e = threadIdx.x; e < nt * g.dh; e += blockDim.x) {
                    long long t = e / g.dh, d = e - t * g.dh;
                    ftk_st<TO>(a.out, ftk_kv_row(g, b, j0 + t, hk) + d, acc[e]);
                }
            }
}

/* (q, k, v, doc, dy) -> dq (ip[0] = 0), dk (1) or dv (2), each in its input's shape. */
template <class TQ, class TK, class TV, class TD, class TY, class TO>
__device__ __forceinline__ void attn_bwd(const ftk_args_t &a)
{
    if (a.ip[0] == 0)
        attn_bwd_q<TQ, TK, TV, TD, TY, TO>(a);
    else
        attn_bwd_kv<TQ, TK, TV, TD, TY, TO>(a);
}

} /* namespace ftk */
