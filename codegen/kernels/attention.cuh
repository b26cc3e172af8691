/* attention.cuh — causal, document-masked attention with grouped key/value heads: the
 * forward, the softmax row statistics (attn_lse), the row sum that gives the backward its
 * delta (rowsum, of one tensor or of a product of two), and the backward from those statistics. Tiled, O(S^2 Dh) work, no S x S
 * buffer. Two paths: fp32 CUDA-core arithmetic for every storage type and Dh <= 256, and,
 * where q, k, v (and dy) are bf16 and Dh is 64 or 128, the tensor cores (mma.sync bf16 ->
 * fp32, FlashAttention-2's scheme; the section "the tensor-core path" below describes its
 * kernels, shared memory, and what bounds each of them). Each path has its own entry points
 * (codegen/emit.c picks one per node), so neither takes the other's registers. On sm_90
 * targets attn, dq, dk and dv run attention_wg.cuh's Hopper kernels instead of the
 * tensor-core ones here (which sm_80..89 run).
 * defines: ftk_attn_geo, ftk::attn, ftk::attn_lse, ftk::attn_bwd (ftk::attn_bwd_q,
 *          ftk::attn_bwd_kv), ftk::rowsum; ftk::attn_tc_fwd, ftk::attn_tc_lse,
 *          ftk::attn_tc_dq, ftk::attn_tc_dk, ftk::attn_tc_dv (tensor cores)
 * launch:  (CUDA cores) attn, attn_lse and attn_bwd with ip[0] = 0 (dq): grid (ceil(S / T),
 *          Hq, B), one block of FTK_ATT_THREADS (128) threads per tile of T = FTK_ATT_TILE
 *          (32) query rows of one head; attn_bwd with ip[0] = 1 (dk) or 2 (dv): grid
 *          (ceil(S / T), Hkv, B), one block per tile of T keys of one kv head. rowsum: 256
 *          threads, a warp per row, grid ceil(rows / 8).
 *          (tensor cores) blocks of 256 / MI threads, each for two own tiles of
 *          FTK_ATT_TC_OWN (128) query rows or keys: grid (ceil(ceil(S / 128) / 2), Hq, B), for
 *          dk and dv (ceil(ceil(S / 128) / 2), Hkv, B).
 * shared:  (CUDA cores) with pitch P = round_up(Dh, 4) + 4 floats per tile row: attn 3 T P
 *          floats + 2 T ints; attn_lse 2 T P floats + 2 T ints; attn_bwd 4 T P + 2 T floats +
 *          2 T ints. (tensor cores) ftk_tc_lay. codegen/emit.c computes the same sizes
 *          (attn_smem, attn_tc_smem).
 *
 * q [B,S,Hq,Dh], k and v [B,S,Hkv,Dh], doc [B,S] i32; query i sees key j when j <= i and
 * doc[j] == doc[i]; query head h reads kv head h / (Hq / Hkv) (HF repeat_kv); fp[0] is the
 * softmax scale. attn_bwd's stats [B,S,Hq,2] hold (lse_i, delta_i) per query row, so every
 * kernel streams each tile pair once: no statistics are recomputed.
 *
 * The scheme of every CUDA-core kernel: a block holds one tile of "own" rows (query rows, or keys for
 * dk/dv) and streams tiles of "other" rows through shared memory (converted to float, rows
 * padded to the pitch P, which keeps 16-byte loads of different rows on different banks).
 * Warp w owns rows 8w..8w+7 of its tile. For scores, lane l takes other-row l: it computes
 * the dot products of that row with the warp's 8 own rows (own rows broadcast from shared
 * memory, 4 floats at a time). For accumulation, lanes split the head dimension (dims
 * l + 32c, c < NC) and walk the 32 other rows in order, the per-row factors broadcast by
 * shuffles. Every output element is summed by one lane in a fixed order: deterministic.
 * Tile pairs that the mask empties are skipped: by causality (whole tiles), and where the
 * two tiles' document-id ranges [min, max] do not meet (exact for any ids; it skips the
 * cross-document tiles of packed sequences, whose ids increase). */

/* FTK_ATT_TILE (rows per tile) and FTK_ATT_THREADS (threads per block) come from the
 * generated source's preamble (codegen/emit.c), which sizes the launches with them. */
#define FTK_ATT_RPW 8 /* own rows per warp: FTK_ATT_TILE / (FTK_ATT_THREADS / 32) */

struct ftk_attn_geo {
    long long nb, s, hq, hkv, dh, group;
    int dp, pitch; /* dh rounded up to 4; the shared-memory row pitch */
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
    g.dp = (int)((g.dh + 3) / 4 * 4);
    g.pitch = g.dp + 4;
    g.scale = (float)a.fp[0];
    return g;
}

/* Element offset of row (b, i) at head h of a [B,S,H,Dh] tensor. */
__device__ __forceinline__ long long ftk_att_row(const ftk_attn_geo &g, long long nh, long long b, long long i, long long h)
{
    return ((b * g.s + i) * nh + h) * g.dh;
}

/* Rows r0 .. r0 + T - 1 (at head h of a tensor with nh heads) into dst[T][pitch] as float,
 * columns dh .. dp - 1 and rows past the sequence zero. Whole block; no barrier. */
template <class T>
__device__ __forceinline__ void ftk_att_tile_load(float *dst, const void *src, const ftk_attn_geo &g, long long nh,
                                                  long long b, long long r0, long long h)
{
    const T *base = (const T *)src;
    int n = FTK_ATT_TILE * g.dp;
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        int r = e / g.dp, d = e - r * g.dp;
        float v = 0.0f;
        if (r0 + r < g.s && d < g.dh)
            v = ftk_f(base[ftk_att_row(g, nh, b, r0 + r, h) + d]);
        dst[r * g.pitch + d] = v;
    }
}

/* Document ids of rows r0 .. r0 + T - 1 into ids[T] (rows past the sequence get -1; they
 * are masked by position anyway). Whole block; no barrier. */
__device__ __forceinline__ void ftk_att_doc_load(int *ids, const int *doc, long long s, long long r0)
{
    for (int t = threadIdx.x; t < FTK_ATT_TILE; t += blockDim.x)
        ids[t] = r0 + t < s ? doc[r0 + t] : -1;
}

/* The smallest and largest document id of rows r0 .. r0 + 31 (those inside the sequence),
 * read straight from global memory by every warp: every thread gets the same answer, so a
 * skip decided on it keeps the block's barriers uniform. */
__device__ __forceinline__ void ftk_att_doc_range(const int *doc, long long s, long long r0, int *mn, int *mx)
{
    int lane = threadIdx.x & 31;
    bool in = r0 + lane < s;
    int v = in ? doc[r0 + lane] : 0;
    int lo = in ? v : 0x7fffffff, hi = in ? v : (int)0x80000000;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
        hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
    }
    *mn = lo;
    *mx = hi;
}

/* s[r] += own[r] . other for the warp's FTK_ATT_RPW own rows (own: the first of them, rows
 * `pitch` apart, read as broadcasts) against this lane's other row, over dp dims. */
__device__ __forceinline__ void ftk_att_dots(const float *own, const float *other, int dp, int pitch,
                                             float s[FTK_ATT_RPW])
{
    for (int d = 0; d < dp; d += 4) {
        float4 o = *(const float4 *)(other + d);
#pragma unroll
        for (int r = 0; r < FTK_ATT_RPW; r++) {
            float4 w = *(const float4 *)(own + r * pitch + d);
            s[r] = fmaf(w.x, o.x, s[r]);
            s[r] = fmaf(w.y, o.y, s[r]);
            s[r] = fmaf(w.z, o.z, s[r]);
            s[r] = fmaf(w.w, o.w, s[r]);
        }
    }
}

/* acc[r][c] += sum over the 32 other rows t of f[r] (of lane t) * rows[t][lane + 32c]:
 * the accumulation step, other rows in order. */
template <int NC>
__device__ __forceinline__ void ftk_att_accum(float acc[FTK_ATT_RPW][NC], const float f[FTK_ATT_RPW],
                                              const float *rows, int pitch, long long dh)
{
    int lane = threadIdx.x & 31;
    for (int t = 0; t < 32; t++) {
        float x[NC];
#pragma unroll
        for (int c = 0; c < NC; c++)
            x[c] = lane + 32 * c < dh ? rows[t * pitch + lane + 32 * c] : 0.0f;
#pragma unroll
        for (int r = 0; r < FTK_ATT_RPW; r++) {
            float ft = __shfl_sync(0xffffffffu, f[r], t);
#pragma unroll
            for (int c = 0; c < NC; c++)
                acc[r][c] = fmaf(ft, x[c], acc[r][c]);
        }
    }
}

__device__ __forceinline__ float ftk_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Calls F::template run<NC> with the smallest of 2, 4, 8 chunks per lane that covers Dh. */
#define FTK_ATT_DISPATCH(dh, call)                                                                                    \
    do {                                                                                                              \
        if ((dh) <= 64)                                                                                               \
            call(2);                                                                                                  \
        else if ((dh) <= 128)                                                                                         \
            call(4);                                                                                                  \
        else                                                                                                          \
            call(8);                                                                                                  \
    } while (0)


namespace ftk {

/* The forward and the row statistics: per query tile, stream the key tiles with an online
 * softmax per row (running max m and sum l, warp-uniform). WITH_V: the output rows o_i =
 * sum_j p_ij v_j (0 for a row that sees no key); otherwise lse_i = m + log l (-inf for such
 * a row; never under the causal mask). NaN scores reach l, so NaN inputs give NaN outputs. */
template <int NC, bool WITH_V, class TQ, class TK, class TV, class TO>
__device__ __forceinline__ void attn_fwd_tiles(const ftk_args_t &a, int doc_src)
{
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (blockDim.x != FTK_ATT_THREADS)
        __trap(); /* the row split assumes it; the launch record gives exactly this */
    float *qs = (float *)ftk_smem;                /* [T][P] own query rows */
    float *ks = qs + FTK_ATT_TILE * g.pitch;      /* [T][P] */
    float *vs = ks + FTK_ATT_TILE * g.pitch;      /* [T][P], WITH_V only */
    int *qdoc = (int *)(ks + (WITH_V ? 2 : 1) * FTK_ATT_TILE * g.pitch);
    int *kdoc = qdoc + FTK_ATT_TILE;
    long long ntiles = (g.s + FTK_ATT_TILE - 1) / FTK_ATT_TILE;
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {
                long long qt = ntiles - 1 - t; /* the longest rows first */
                long long i0 = qt * FTK_ATT_TILE, hk = h / g.group;
                const int *doc = (const int *)a.in[doc_src] + b * g.s;
                __syncthreads(); /* the previous tile's readers are done */
                ftk_att_tile_load<TQ>(qs, a.in[0], g, g.hq, b, i0, h);
                ftk_att_doc_load(qdoc, doc, g.s, i0);
                int qlo, qhi;
                ftk_att_doc_range(doc, g.s, i0, &qlo, &qhi);
                float m[FTK_ATT_RPW], l[FTK_ATT_RPW], acc[FTK_ATT_RPW][NC];
#pragma unroll
                for (int r = 0; r < FTK_ATT_RPW; r++) {
                    m[r] = -FTK_INF;
                    l[r] = 0.0f;
#pragma unroll
                    for (int c = 0; c < NC; c++)
                        acc[r][c] = 0.0f;
                }
                for (long long kt = 0; kt <= qt; kt++) {
                    long long j0 = kt * FTK_ATT_TILE;
                    int klo, khi;
                    ftk_att_doc_range(doc, g.s, j0, &klo, &khi);
                    if (khi < qlo || klo > qhi)
                        continue; /* no document in common: the same answer in every thread */
                    __syncthreads(); /* the previous key tile's readers are done */
                    ftk_att_tile_load<TK>(ks, a.in[1], g, g.hkv, b, j0, hk);
                    if (WITH_V)
                        ftk_att_tile_load<TV>(vs, a.in[2], g, g.hkv, b, j0, hk);
                    ftk_att_doc_load(kdoc, doc, g.s, j0);
                    __syncthreads();
                    float s[FTK_ATT_RPW];
#pragma unroll
                    for (int r = 0; r < FTK_ATT_RPW; r++)
                        s[r] = 0.0f;
                    ftk_att_dots(qs + (w * FTK_ATT_RPW) * g.pitch, ks + lane * g.pitch, g.dp, g.pitch, s);
                    long long j = j0 + lane;
                    float p[FTK_ATT_RPW];
#pragma unroll
                    for (int r = 0; r < FTK_ATT_RPW; r++) {
                        int ri = w * FTK_ATT_RPW + r;
                        long long i = i0 + ri;
                        bool ok = i < g.s && j <= i && kdoc[lane] == qdoc[ri];
                        float x = ok ? g.scale * s[r] : -FTK_INF;
                        float mn = fmaxf(m[r], ftk_warp_max(x));
                        float corr = mn == -FTK_INF ? 1.0f : expf(m[r] - mn);
                        p[r] = ok ? expf(x - mn) : 0.0f;
                        l[r] = l[r] * corr + ftk_warp_sum(p[r]);
                        m[r] = mn;
                        if (WITH_V) {
#pragma unroll
                            for (int c = 0; c < NC; c++)
                                acc[r][c] *= corr;
                        }
                    }
                    if (WITH_V)
                        ftk_att_accum<NC>(acc, p, vs, g.pitch, g.dh);
                }
#pragma unroll
                for (int r = 0; r < FTK_ATT_RPW; r++) {
                    long long i = i0 + w * FTK_ATT_RPW + r;
                    if (i >= g.s)
                        continue;
                    if (WITH_V) {
                        long long orow = ftk_att_row(g, g.hq, b, i, h);
                        if (a.in[4] && lane == 0) /* attn's optional lse output (passes/fuse.c) */
                            ((float *)a.in[4])[(b * g.s + i) * g.hq + h] = m[r] + logf(l[r]);
#pragma unroll
                        for (int c = 0; c < NC; c++) {
                            int d = lane + 32 * c;
                            if (d < g.dh)
                                ftk_st<TO>(a.out, orow + d, l[r] > 0.0f ? acc[r][c] / l[r] : 0.0f);
                        }
                    } else if (lane == 0) {
                        ftk_st<TO>(a.out, (b * g.s + i) * g.hq + h, m[r] + logf(l[r]));
                    }
                }
            }
}

#define FTK_ATT_FWD_CALL(nc) attn_fwd_tiles<nc, true, TQ, TK, TV, TO>(a, 3)
template <class TQ, class TK, class TV, class TD, class TO> __device__ __forceinline__ void attn(const ftk_args_t &a)
{
    FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_FWD_CALL);
}
#undef FTK_ATT_FWD_CALL

/* (q, k, v, doc, lse) -> o, and lse [B,S,Hq,1] f32 written in place: the same kernels, which
 * store each row's log-sum-exp where a.in[4] is set (the four-input form leaves it null). */
template <class TQ, class TK, class TV, class TD, class TL, class TO>
__device__ __forceinline__ void attn(const ftk_args_t &a)
{
    static_assert(sizeof(TL) == 4, "attn's lse output is f32");
    attn<TQ, TK, TV, TD, TO>(a);
}

/* (q, k, doc) -> lse [B,S,Hq,1] */
#define FTK_ATT_LSE_CALL(nc) attn_fwd_tiles<nc, false, TQ, TK, TK, TO>(a, 2)
template <class TQ, class TK, class TD, class TO> __device__ __forceinline__ void attn_lse(const ftk_args_t &a)
{
    FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_LSE_CALL);
}
#undef FTK_ATT_LSE_CALL

/* lse_i and delta_i of rows r0 .. r0 + T - 1 at head h into lse[T], delta[T] (0 past the
 * sequence). Whole block; no barrier. */
template <class TS>
__device__ __forceinline__ void attn_stats_load(float *lse, float *delta, const void *stats, const ftk_attn_geo &g,
                                                long long b, long long r0, long long h)
{
    for (int t = threadIdx.x; t < FTK_ATT_TILE; t += blockDim.x) {
        long long i = r0 + t, at = ((b * g.s + i) * g.hq + h) * 2;
        lse[t] = i < g.s ? ftk_ld<TS>(stats, at) : 0.0f;
        delta[t] = i < g.s ? ftk_ld<TS>(stats, at + 1) : 0.0f;
    }
}

/* dq_i = scale sum_j p_ij (dP_ij - delta_i) k_j with p_ij = exp(scale q_i.k_j - lse_i) and
 * dP_ij = dy_i . v_j. A block owns a tile of query rows of one head and streams the key
 * tiles up to the diagonal. */
template <int NC, class TQ, class TK, class TV, class TY, class TS, class TO>
__device__ __forceinline__ void attn_bwd_q(const ftk_args_t &a)
{
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (blockDim.x != FTK_ATT_THREADS)
        __trap();
    float *qs = (float *)ftk_smem;            /* [T][P] own query rows */
    float *dys = qs + FTK_ATT_TILE * g.pitch; /* [T][P] their dy */
    float *ks = dys + FTK_ATT_TILE * g.pitch; /* [T][P] */
    float *vs = ks + FTK_ATT_TILE * g.pitch;  /* [T][P] */
    float *lse = vs + FTK_ATT_TILE * g.pitch; /* [T] */
    float *delta = lse + FTK_ATT_TILE;        /* [T] */
    int *qdoc = (int *)(delta + FTK_ATT_TILE);
    int *kdoc = qdoc + FTK_ATT_TILE;
    long long ntiles = (g.s + FTK_ATT_TILE - 1) / FTK_ATT_TILE;
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {
                long long qt = ntiles - 1 - t; /* the longest rows first */
                long long i0 = qt * FTK_ATT_TILE, hk = h / g.group;
                const int *doc = (const int *)a.in[3] + b * g.s;
                __syncthreads();
                ftk_att_tile_load<TQ>(qs, a.in[0], g, g.hq, b, i0, h);
                ftk_att_tile_load<TY>(dys, a.in[4], g, g.hq, b, i0, h);
                attn_stats_load<TS>(lse, delta, a.in[5], g, b, i0, h);
                ftk_att_doc_load(qdoc, doc, g.s, i0);
                int qlo, qhi;
                ftk_att_doc_range(doc, g.s, i0, &qlo, &qhi);
                float acc[FTK_ATT_RPW][NC];
#pragma unroll
                for (int r = 0; r < FTK_ATT_RPW; r++)
#pragma unroll
                    for (int c = 0; c < NC; c++)
                        acc[r][c] = 0.0f;
                for (long long kt = 0; kt <= qt; kt++) {
                    long long j0 = kt * FTK_ATT_TILE;
                    int klo, khi;
                    ftk_att_doc_range(doc, g.s, j0, &klo, &khi);
                    if (khi < qlo || klo > qhi)
                        continue;
                    __syncthreads();
                    ftk_att_tile_load<TK>(ks, a.in[1], g, g.hkv, b, j0, hk);
                    ftk_att_tile_load<TV>(vs, a.in[2], g, g.hkv, b, j0, hk);
                    ftk_att_doc_load(kdoc, doc, g.s, j0);
                    __syncthreads();
                    float s[FTK_ATT_RPW], dp[FTK_ATT_RPW];
#pragma unroll
                    for (int r = 0; r < FTK_ATT_RPW; r++)
                        s[r] = dp[r] = 0.0f;
                    ftk_att_dots(qs + (w * FTK_ATT_RPW) * g.pitch, ks + lane * g.pitch, g.dp, g.pitch, s);
                    ftk_att_dots(dys + (w * FTK_ATT_RPW) * g.pitch, vs + lane * g.pitch, g.dp, g.pitch, dp);
                    long long j = j0 + lane;
                    float ds[FTK_ATT_RPW];
#pragma unroll
                    for (int r = 0; r < FTK_ATT_RPW; r++) {
                        int ri = w * FTK_ATT_RPW + r;
                        long long i = i0 + ri;
                        bool ok = i < g.s && j <= i && kdoc[lane] == qdoc[ri];
                        float p = ok ? expf(g.scale * s[r] - lse[ri]) : 0.0f;
                        ds[r] = ok ? g.scale * p * (dp[r] - delta[ri]) : 0.0f;
                    }
                    ftk_att_accum<NC>(acc, ds, ks, g.pitch, g.dh);
                }
#pragma unroll
                for (int r = 0; r < FTK_ATT_RPW; r++) {
                    long long i = i0 + w * FTK_ATT_RPW + r;
                    if (i >= g.s)
                        continue;
                    long long orow = ftk_att_row(g, g.hq, b, i, h);
#pragma unroll
                    for (int c = 0; c < NC; c++) {
                        int d = lane + 32 * c;
                        if (d < g.dh)
                            ftk_st<TO>(a.out, orow + d, acc[r][c]);
                    }
                }
            }
}

/* dv_j = sum p_ij dy_i and dk_j = scale sum p_ij (dP_ij - delta_i) q_i over the queries
 * i >= j and the query heads of kv head hk's group. A block owns a tile of keys and streams
 * the query tiles from the diagonal on, head by head of the group. */
template <int NC, class TQ, class TK, class TV, class TY, class TS, class TO>
__device__ __forceinline__ void attn_bwd_kv(const ftk_args_t &a)
{
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (blockDim.x != FTK_ATT_THREADS)
        __trap();
    bool want_dk = a.ip[0] == 1;
    float *ks = (float *)ftk_smem;            /* [T][P] own keys */
    float *vs = ks + FTK_ATT_TILE * g.pitch;  /* [T][P] their values (dk) */
    float *qs = vs + FTK_ATT_TILE * g.pitch;  /* [T][P] */
    float *dys = qs + FTK_ATT_TILE * g.pitch; /* [T][P] */
    float *lse = dys + FTK_ATT_TILE * g.pitch;
    float *delta = lse + FTK_ATT_TILE;
    int *qdoc = (int *)(delta + FTK_ATT_TILE);
    int *kdoc = qdoc + FTK_ATT_TILE;
    long long ntiles = (g.s + FTK_ATT_TILE - 1) / FTK_ATT_TILE;
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long hk = blockIdx.y; hk < g.hkv; hk += gridDim.y)
            for (long long kt = blockIdx.x; kt < ntiles; kt += gridDim.x) {
                long long j0 = kt * FTK_ATT_TILE;
                const int *doc = (const int *)a.in[3] + b * g.s;
                __syncthreads();
                ftk_att_tile_load<TK>(ks, a.in[1], g, g.hkv, b, j0, hk);
                if (want_dk)
                    ftk_att_tile_load<TV>(vs, a.in[2], g, g.hkv, b, j0, hk);
                ftk_att_doc_load(kdoc, doc, g.s, j0);
                int klo, khi;
                ftk_att_doc_range(doc, g.s, j0, &klo, &khi);
                float acc[FTK_ATT_RPW][NC];
#pragma unroll
                for (int r = 0; r < FTK_ATT_RPW; r++)
#pragma unroll
                    for (int c = 0; c < NC; c++)
                        acc[r][c] = 0.0f;
                for (long long hh = 0; hh < g.group; hh++) {
                    long long h = hk * g.group + hh;
                    for (long long qt = kt; qt < ntiles; qt++) {
                        long long i0 = qt * FTK_ATT_TILE;
                        int qlo, qhi;
                        ftk_att_doc_range(doc, g.s, i0, &qlo, &qhi);
                        if (qhi < klo || qlo > khi)
                            continue;
                        __syncthreads();
                        ftk_att_tile_load<TQ>(qs, a.in[0], g, g.hq, b, i0, h);
                        ftk_att_tile_load<TY>(dys, a.in[4], g, g.hq, b, i0, h);
                        attn_stats_load<TS>(lse, delta, a.in[5], g, b, i0, h);
                        ftk_att_doc_load(qdoc, doc, g.s, i0);
                        __syncthreads();
                        float s[FTK_ATT_RPW], dp[FTK_ATT_RPW];
#pragma unroll
                        for (int r = 0; r < FTK_ATT_RPW; r++)
                            s[r] = dp[r] = 0.0f;
                        ftk_att_dots(ks + (w * FTK_ATT_RPW) * g.pitch, qs + lane * g.pitch, g.dp, g.pitch, s);
                        if (want_dk)
                            ftk_att_dots(vs + (w * FTK_ATT_RPW) * g.pitch, dys + lane * g.pitch, g.dp, g.pitch, dp);
                        long long i = i0 + lane;
                        float f[FTK_ATT_RPW];
#pragma unroll
                        for (int r = 0; r < FTK_ATT_RPW; r++) {
                            int rj = w * FTK_ATT_RPW + r;
                            long long j = j0 + rj;
                            bool ok = i < g.s && j <= i && kdoc[rj] == qdoc[lane];
                            float p = ok ? expf(g.scale * s[r] - lse[lane]) : 0.0f;
                            f[r] = !ok ? 0.0f : want_dk ? g.scale * p * (dp[r] - delta[lane]) : p;
                        }
                        ftk_att_accum<NC>(acc, f, want_dk ? qs : dys, g.pitch, g.dh);
                    }
                }
#pragma unroll
                for (int r = 0; r < FTK_ATT_RPW; r++) {
                    long long j = j0 + w * FTK_ATT_RPW + r;
                    if (j >= g.s)
                        continue;
                    long long orow = ftk_att_row(g, g.hkv, b, j, hk);
#pragma unroll
                    for (int c = 0; c < NC; c++) {
                        int d = lane + 32 * c;
                        if (d < g.dh)
                            ftk_st<TO>(a.out, orow + d, acc[r][c]);
                    }
                }
            }
}

/* (q, k, v, doc, dy, stats) -> dq (ip[0] = 0), dk (1) or dv (2), each in its input's shape. */
#define FTK_ATT_BQ_CALL(nc) attn_bwd_q<nc, TQ, TK, TV, TY, TS, TO>(a)
#define FTK_ATT_BKV_CALL(nc) attn_bwd_kv<nc, TQ, TK, TV, TY, TS, TO>(a)
template <class TQ, class TK, class TV, class TD, class TY, class TS, class TO>
__device__ __forceinline__ void attn_bwd(const ftk_args_t &a)
{
    if (a.ip[0] == 0)
        FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_BQ_CALL);
    else
        FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_BKV_CALL);
}
#undef FTK_ATT_BQ_CALL
#undef FTK_ATT_BKV_CALL

/* Rows of D = 8·L elements, L a power of two up to 32, 16-byte aligned: L lanes per row,
 * 8 elements per lane and 16-byte load, 32 / L rows per warp at once and U such groups per
 * step, all loads issued before any sum (a lane per element moved 2 bytes a load, one row
 * at a time: 1.8 TB/s for attention's delta); each lane's double sum, then a butterfly
 * over the row's lanes. */
template <class TA, class TB, bool TWO, class TO>
__device__ __forceinline__ bool rowsum_vec(const ftk_args_t &a, long long d, long long rows)
{
    constexpr int U = 4;
    int lpr = (int)(d / 8);
    if (d % 8 || d > 256 || (lpr & (lpr - 1)) || !ftk_al16(a.in[0]) || (TWO && !ftk_al16(a.in[1])))
        return false;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5, rpw = 32 / lpr;
    long long step = (long long)gridDim.x * nw * rpw * U, col = (lane % lpr) * 8;
    /* every lane runs the same trip count so the shuffles see the whole warp */
    for (long long r0 = ((long long)blockIdx.x * nw + w) * rpw * U + lane / lpr; r0 - lane / lpr < rows; r0 += step) {
        float x[U][8], y[U][8];
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long r = r0 + u * rpw;
            if (r < rows) {
                ftk_v8<TA>::ld(a.in[0], r * d + col, x[u]);
                if (TWO)
                    ftk_v8<TB>::ld(a.in[1], r * d + col, y[u]);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long r = r0 + u * rpw;
            double s = 0.0;
            if (r < rows)
#pragma unroll
                for (int k = 0; k < 8; k++)
                    s += TWO ? (double)x[u][k] * (double)y[u][k] : (double)x[u][k];
            for (int o = lpr / 2; o > 0; o >>= 1)
                s += __shfl_xor_sync(0xffffffffu, s, o);
            if (r < rows && lane % lpr == 0)
                ftk_std<TO>(a.out, r, s);
        }
    }
    return true;
}

/* (a[..., D]) -> [..., 1]: a warp per row, lanes over the row in double, a butterfly across
 * the warp (fixed order: deterministic); rowsum_vec where the rows allow. */
template <class TA, class TB, bool TWO, class TO> __device__ __forceinline__ void rowsum_run(const ftk_args_t &a)
{
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d;
    if constexpr (ftk_v8_ok<TA>::value && ftk_v8_ok<TB>::value)
        if (rowsum_vec<TA, TB, TWO, TO>(a, d, rows))
            return;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (long long r = (long long)blockIdx.x * nw + w; r < rows; r += (long long)gridDim.x * nw) {
        const TA *x = (const TA *)a.in[0] + r * d;
        const TB *y = TWO ? (const TB *)a.in[1] + r * d : nullptr;
        double s = 0.0;
        for (long long j = lane; j < d; j += 32)
            s += TWO ? ftk_d(x[j]) * ftk_d(y[j]) : ftk_d(x[j]);
        s = ftk_warp_sum(s);
        if (lane == 0)
            ftk_std<TO>(a.out, r, s);
    }
}
template <class TA, class TO> __device__ __forceinline__ void rowsum(const ftk_args_t &a)
{
    rowsum_run<TA, TA, false, TO>(a);
}
/* (a, b) -> the rows of a * b, the product in double (exact for 16-bit inputs) */
template <class TA, class TB, class TO> __device__ __forceinline__ void rowsum(const ftk_args_t &a)
{
    rowsum_run<TA, TB, true, TO>(a);
}

} /* namespace ftk */

/* ---- the tensor-core path: bf16 q, k, v (and dy), head dim 64 or 128 ----
 *
 * FlashAttention-2's scheme on mma.sync.aligned.m16n8k16 (bf16 operands, fp32 accumulators;
 * sm_80 and newer). Every kernel has its own entry point (codegen/emit.c's attn_tc_cfgs), so
 * each gets the registers it needs and nothing else's; the entry point fixes the
 * configuration as template arguments: D (64, 128), BN (rows per streamed tile), MI (16-row
 * subtiles per warp: 2, with 4 warps, or 1, with 8), OREG (the own rows' A fragments held in
 * registers, or resident in shared memory and read by ldmatrix at each use), and for the
 * backward CK, the streamed rows one score step covers; its __launch_bounds__ say how many
 * blocks share an SM.
 *
 * A block owns BM = FTK_ATT_TC_OWN (128) rows: query rows (attn, attn_lse, dq) or keys (dk,
 * dv), 16 MI per warp, and streams the other side in tiles of BN rows through shared
 * memory: key tiles (with their values) for the query-major kernels, query tiles (with dy
 * and the row statistics) for dk and dv, head after head of the kv head's query group.
 * A warp of 32 rows (MI 2) feeds every B fragment it reads to four mmas instead of two, so it
 * reads fewer shared-memory bytes per flop and keeps twice the independent accumulators in
 * flight; two or three blocks of four such warps share an SM, so one block's softmax and
 * barriers overlap another's matrix products.
 *
 *   attn, attn_lse  Per key tile S = Q Kᵀ; the running row max m
 *                   (scaled, base 2) moves only when a row's tile max passes it by more than
 *                   FTK_TC_THR (so p <= 2^8; the rescale of O and l, which the whole warp
 *                   skips when no row moved, is rare after the first tiles); p = exp2(s scale
 *                   log2 e - m) by one FFMA and ex2; P from the accumulators straight into
 *                   bf16 A fragments; O += P V. attn_lse: the same without V and O.
 *   dq              Per key tile, in chunks of CK keys: S = Q Kᵀ,
 *                   dP = dY Vᵀ, dS = P (dP - delta) with P = exp2(S scale log2 e - lse log2 e);
 *                   dq += dS K; dq scaled at the end.
 *   dk, dv          Per query tile, in chunks of CK queries: Sᵀ = K Qᵀ, Pᵀ; dv += Pᵀ dY; or
 *                   dPᵀ = V dYᵀ, dSᵀ = Pᵀ (dPᵀ - delta), dk += dSᵀ Q (dk scaled at the end).
 *                   The key-major products need no transposes, only ldmatrix's .trans for B.
 *
 * Grids: (ceil(n / 2), Hq, B), for dk and dv (ceil(n / 2), Hkv, B), with n = ceil(S / 128)
 * own tiles. A block takes own tiles p and n - 1 - p, one after the other: under the causal
 * mask one has the most work and the other the least, so every block has about the same and
 * no long block is left for the last wave. The forward kernels take the row max of the raw scores and scale it afterwards,
 * which needs scale > 0: emit.c sends other scales to the CUDA-core path. Each output element
 * is summed by one lane, in one fixed order of tiles, chunks and mma k-steps: deterministic,
 * no atomics.
 *
 * What bounds each kernel, in TFLOP/s of the causal count (an H100/H200 SM: 4 schedulers,
 * shared memory 128 B/clk, ex2 16/clk, dense bf16 peak one m16n8k16 (4096 flops) per clock,
 * ~950 TFLOP/s over 132 SMs at 1.75 GHz, of which mma.sync reaches roughly two thirds):
 *   attn Dh 128     MI 2, Q resident, 32-key tiles, 2 blocks (255 registers: O 128, S 32).
 *                   Per tile a warp issues 128 mmas, 48 ldmatrix.x4 (0.375 per mma; 16-row
 *                   warps read 0.5) and 32 ex2. Shared memory (~225 B per mma with the
 *                   cp.async writes) bounds near 550, ex2 near 1900: the mma.sync pipe and the
 *                   latency two warps per scheduler leave uncovered bound it.
 *   attn_lse Dh 128 MI 2, Q resident, 64-key tiles, 3 blocks (~166 registers). 16 ex2 per mma:
 *                   ex2 bounds at the tensor peak (~950), so ex2 and mma.sync both run near
 *                   their limits; three warps per scheduler overlap them.
 *   dq, dk Dh 128   MI 1 (8 warps of 16 rows), Q and dY (K and V) in registers, loaded under
 *                   the stages, 64-row tiles in 32-row chunks, 1 block (255 registers; 32-row
 *                   warps need 105 KB of resident own tiles, more than sm_86/89/120 give a
 *                   block). 0.5 ldmatrix per mma, ex2 bound ~2850: the mma pipe, and the
 *                   latency of one block's eight warps moving tile by tile in step.
 *   dv Dh 128       MI 2, K resident, 32-query tiles, 2 blocks: 0.375 ldmatrix per mma, ex2
 *                   bound ~1900; as attn.
 *   Dh 64 (all)     MI 2, own fragments in registers, 64-row tiles, 2 blocks (attn_lse 3).
 *                   Half the mma work per score of Dh 128, so the per-score work (ex2, FFMA,
 *                   max, sum, mask) weighs twice: ex2 bounds attn near 950 and attn_lse near
 *                   475, and the issue slots of that work take a larger share; the backward
 *                   kernels are bound as at Dh 128.
 *
 * Shared memory: bf16 tiles at a pitch of D + 8 elements (16 bytes of padding, so the 8 rows
 * of an ldmatrix phase or of a 128-byte cp.async phase fall on distinct banks). Two stages of
 * the streamed tiles (K[, V]; or Q, dY and (lse, delta) float pairs), filled by cp.async (16
 * bytes a thread; rows past S zero-filled) one tile ahead of the compute: double buffering,
 * one barrier per tile. The own tiles (Q; dq: Q and dY; dk: K and V; dv: K) either stay
 * resident before the stages (OREG false) or are read into registers once (OREG true) from
 * stage 1's space, loaded beside the first streamed tile, where they fit, else from under
 * both stages, loaded before it. Last, an int2 per 128 rows of the sequence (an own tile's):
 * the smallest and largest document id of those rows, computed once per block (ftk_tc_lay;
 * emit.c's attn_tc_smem follows the same rule, and every kernel traps when its launch gave
 * it less). Every configuration fits 99 KiB at S 8192 (sm_86/89/120 blocks).
 *
 * Masks: a tile pair is skipped where the document-id ranges of the own tile and of the
 * streamed tile's 128 rows do not meet (exact for any ids; packed sequences skip their
 * cross-document tiles), runs mask-free where every key precedes every query and both hold
 * one and the same document, and else applies the element mask (j <= i, i < S, same
 * document), skipping the chunks of a warp that the causal mask empties; rows past S never
 * reach an output.
 *
 * Fragment layouts (PTX ISA, m16n8k16, g = lane / 4, t = lane % 4): A a0 (row g, cols 2t,
 * 2t+1), a1 (row g+8), a2 (row g, cols 8+2t..), a3 (row g+8, cols 8+2t..); B b0 (rows 2t,
 * 2t+1, col g), b1 (rows 8+2t..); C c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8). The C
 * fragments of two adjacent 8-column tiles are the A fragment of the next product over those
 * 16 columns, so probabilities never leave registers. A lane's rows are g + 8 r + 16 mi of
 * its warp's 16 MI. */

#define FTK_TC_BM FTK_ATT_TC_OWN /* own rows per block */
#define FTK_LOG2E 1.4426950408889634f
#define FTK_LN2 0.6931471805599453f
#define FTK_TC_THR 8.0f /* base-2 headroom of the forward's lazy running max */

template <class A, class B> struct ftk_same {
    static const bool v = false;
};
template <class A> struct ftk_same<A, A> {
    static const bool v = true;
};

__device__ __host__ constexpr int ftk_cmax(int x, int y) { return x > y ? x : y; }

/* The shared-memory layout of a tensor-core kernel with stages of STAGE bytes and own tiles
 * of OWNB bytes. Resident own tiles (!OREG) come first and stay. Own tiles read into
 * registers (OREG) lie in stage 1's space where they fit (BESIDE: loaded together with the
 * first streamed tile), else under both stages (UNDER: loaded, read into registers and given
 * back before the first streamed tile loads). Then the document ranges, 16-byte aligned. */
template <int STAGE, int OWNB, bool OREG> struct ftk_tc_lay {
    static constexpr bool BESIDE = OREG && OWNB <= STAGE, UNDER = OREG && OWNB > STAGE;
    static constexpr int OWN_AT = BESIDE ? STAGE : 0;
    static constexpr int ST0 = OREG ? 0 : OWNB;
    static constexpr int ST1 = ST0 + STAGE;
    static constexpr int END = OREG ? ftk_cmax(2 * STAGE, OWNB) : OWNB + 2 * STAGE;
    static constexpr int RNG_AT = (END + 15) / 16 * 16;
    static_assert(STAGE % 16 == 0 && OWNB % 16 == 0, "16-byte cp.async and ldmatrix rows");
};

/* The extents the tensor-core kernels use, as int (S, heads and batch fit; element offsets
 * are formed in 64 bits by ftk_tc_row). */
struct ftk_tc_geo {
    int nb, s, hq, hkv, group;
    float scale;
};

__device__ __forceinline__ ftk_tc_geo ftk_tc_geo_of(const ftk_args_t &a)
{
    ftk_tc_geo g;
    g.nb = (int)a.shape[0][0];
    g.s = (int)a.shape[0][1];
    g.hq = (int)a.shape[0][2];
    g.hkv = (int)a.shape[1][2];
    g.group = g.hq / g.hkv;
    g.scale = (float)a.fp[0];
    return g;
}

/* Element offset of row (b, i) at head h of a [B,S,nh,D] tensor. */
template <int D> __device__ __forceinline__ long long ftk_tc_row(const ftk_tc_geo &g, int nh, int b, int i, int h)
{
    return ((long long)(b * g.s + i) * nh + h) * D;
}

__device__ __forceinline__ unsigned ftk_sa(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ unsigned ftk_dyn_smem()
{
    unsigned r;
    asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(r));
    return r;
}

/* The block shape and dynamic shared memory a kernel was written for, else a trap (emit.c
 * gives exactly these). */
__device__ __forceinline__ void ftk_tc_check(int threads, long long smem)
{
    if ((int)blockDim.x != threads || (long long)ftk_dyn_smem() < smem)
        __trap();
}

__device__ __forceinline__ unsigned ftk_pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x, the lower half, is the lower index */
    return *(unsigned *)&v;
}

__device__ __forceinline__ float ftk_ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* 16 bytes global -> shared without a register round trip; zeros where !ok (src unread). */
__device__ __forceinline__ void ftk_cp16(unsigned dst, const void *src, bool ok)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0) : "memory");
}
__device__ __forceinline__ void ftk_cp8(unsigned dst, const void *src, bool ok)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 8 : 0) : "memory");
}
__device__ __forceinline__ void ftk_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void ftk_cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/* c += A B for one m16n8k16 tile (a pure function of its registers). */
__device__ __forceinline__ void ftk_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* A fragment of rows 0..15, columns k0 .. k0 + 15 of a row-major tile m (pitch p elements),
 * one ldmatrix.x4: lanes 8q .. 8q + 7 address the rows of matrix q = (rows +8 if q odd,
 * columns +8 if q >= 2), which lands matrices 0..3 in a0..a3. */
__device__ __forceinline__ void ftk_ldsm_a(unsigned a[4], const __nv_bfloat16 *m, int p, int k0)
{
    int lane = threadIdx.x & 31, q = lane >> 3;
    const __nv_bfloat16 *row = m + ((lane & 7) + (q & 1) * 8) * p + k0 + (q >> 1) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(ftk_sa(row)));
}

/* B fragments with B[k][n] = M[n][k] (n along the rows of a row-major M: keys or queries as
 * the right factor of a product with Mᵀ), k = k0 .. k0 + 15: b[0], b[1] for n = n0 .. n0 + 7,
 * b[2], b[3] for n0 + 8 .. n0 + 15. Matrix q covers rows n0 + 8 (q >> 1), columns k0 + 8 (q & 1). */
__device__ __forceinline__ void ftk_ldsm_bt(unsigned b[4], const __nv_bfloat16 *m, int p, int n0, int k0)
{
    int lane = threadIdx.x & 31, q = lane >> 3;
    const __nv_bfloat16 *row = m + (n0 + (lane & 7) + (q >> 1) * 8) * p + k0 + (q & 1) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(ftk_sa(row)));
}

/* B fragments with B[k][n] = M[k][n] (k along the rows of a row-major M: values, keys,
 * queries or dy as the right factor), rows k0 .. k0 + 15, by ldmatrix.x4.trans: b[0], b[1]
 * for columns n0 .. n0 + 7, b[2], b[3] for n0 + 8 .. n0 + 15. Matrix q covers rows
 * k0 + 8 (q & 1), columns n0 + 8 (q >> 1). */
__device__ __forceinline__ void ftk_ldsm_b(unsigned b[4], const __nv_bfloat16 *m, int p, int k0, int n0)
{
    int lane = threadIdx.x & 31, q = lane >> 3;
    const __nv_bfloat16 *row = m + (k0 + (lane & 7) + (q & 1) * 8) * p + n0 + (q >> 1) * 8;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(ftk_sa(row)));
}

/* The A fragment of the product over 16 columns of a score tile held as two C fragments
 * (8 columns each), rounded to bf16. */
__device__ __forceinline__ void ftk_c2a(unsigned a[4], const float f0[4], const float f1[4])
{
    a[0] = ftk_pack_bf16(f0[0], f0[1]);
    a[1] = ftk_pack_bf16(f0[2], f0[3]);
    a[2] = ftk_pack_bf16(f1[0], f1[1]);
    a[3] = ftk_pack_bf16(f1[2], f1[3]);
}

/* The own rows' A fragments (16 MI rows of the warp, D columns): held in registers (REG,
 * after load()), or read from the resident shared-memory tile at each use. p: the warp's
 * first own row in shared memory (pitch D + 8). */
template <int D, int MI, bool REG> struct ftk_tc_own {
    unsigned f[REG ? MI : 1][REG ? D / 16 : 1][4];
    const __nv_bfloat16 *p;
    __device__ __forceinline__ void load()
    {
        if constexpr (REG) {
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++)
                    ftk_ldsm_a(f[mi][kk], p + mi * 16 * (D + 8), D + 8, kk * 16);
        }
    }
    __device__ __forceinline__ void get(unsigned a[4], int mi, int kk) const
    {
        if constexpr (REG) {
            a[0] = f[mi][kk][0];
            a[1] = f[mi][kk][1];
            a[2] = f[mi][kk][2];
            a[3] = f[mi][kk][3];
        } else {
            ftk_ldsm_a(a, p + mi * 16 * (D + 8), D + 8, kk * 16);
        }
    }
};

/* N rows r0 .. r0 + N - 1 (head h of a [B,S,nh,D] bf16 tensor) into shared memory at dst
 * (pitch D + 8) by cp.async from a block of NT threads; rows past the sequence zero. Not
 * committed; no barrier. */
template <int D, int N, int NT>
__device__ __forceinline__ void ftk_tc_cp_rows(unsigned char *dst, const void *src, const ftk_tc_geo &g, int nh, int b,
                                               int r0, int h)
{
    constexpr int CH = D / 8; /* 16-byte chunks per row */
    static_assert(N * CH % NT == 0, "whole passes of the block");
    constexpr int RS = NT / CH; /* rows a pass of the block covers */
    static_assert(NT % CH == 0, "whole rows per pass");
    const int c = threadIdx.x % CH, r = threadIdx.x / CH;
    const __nv_bfloat16 *p = (const __nv_bfloat16 *)src + ftk_tc_row<D>(g, nh, b, r0 + r, h) + c * 8;
    const long long step = (long long)RS * nh * D;
    unsigned d = ftk_sa(dst) + (unsigned)((r * (D + 8) + c * 8) * 2);
#pragma unroll 1
    for (int k = 0; k < N / RS; k++, p += step, d += RS * (D + 8) * 2) {
        bool ok = r0 + r + k * RS < g.s;
        ftk_cp16(d, ok ? p : src, ok);
    }
}

/* The (lse, delta) pairs of query rows i0 .. i0 + N - 1 at head h into dst[N] (zeros past
 * the sequence): cp.async for f32 statistics, plain loads otherwise. Not committed. */
template <class TS, int N, int NT>
__device__ __forceinline__ void ftk_tc_cp_stats(float2 *dst, const void *stats, const ftk_tc_geo &g, int b, int i0,
                                                int h)
{
    static_assert(N <= NT, "one pass");
    int r = threadIdx.x, i = i0 + r;
    if (r < N) {
        long long at = i < g.s ? ((long long)(b * g.s + i) * g.hq + h) * 2 : 0;
        if constexpr (ftk_same<TS, float>::v)
            ftk_cp8(ftk_sa(dst + r), (const float *)stats + at, i < g.s);
        else
            dst[r] = i < g.s ? make_float2(ftk_ld<TS>(stats, at), ftk_ld<TS>(stats, at + 1)) : make_float2(0.0f, 0.0f);
    }
}

/* rng[t] = (smallest, largest) document id of the rows of granule t (rows 128 t ..
 * 128 t + 127, an own tile's) inside the sequence, for t = t0 .. t1; a warp per granule, four
 * granules' loads in flight. No barrier. */
template <int NW> __device__ __forceinline__ void ftk_tc_ranges(int2 *rng, const int *doc, int s, int t0, int t1)
{
    constexpr int G = FTK_TC_BM, L = G / 32;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int t = t0 + w; t <= t1; t += 4 * NW) {
        int v[4][L];
#pragma unroll
        for (int u = 0; u < 4; u++)
#pragma unroll
            for (int hf = 0; hf < L; hf++) {
                int r = (t + u * NW) * G + hf * 32 + lane;
                v[u][hf] = t + u * NW <= t1 && r < s ? doc[r] : 0;
            }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int tu = t + u * NW, lo = 0x7fffffff, hi = (int)0x80000000;
#pragma unroll
            for (int hf = 0; hf < L; hf++)
                if (tu * G + hf * 32 + lane < s) {
                    lo = min(lo, v[u][hf]);
                    hi = max(hi, v[u][hf]);
                }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
                hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
            }
            if (lane == 0 && tu <= t1)
                rng[tu] = make_int2(lo, hi);
        }
    }
}

/* The first streamed tile t >= from (up to t1; BN rows each, inside granule t BN / 128) whose
 * granule's document range meets own's; t1 + 1 if none. Reads shared memory only: the same
 * answer in every thread. */
template <int BN> __device__ __forceinline__ int ftk_tc_next(const int2 *rng, int2 own, int from, int t1)
{
    int t = from;
    while (t <= t1 && (rng[t * BN / FTK_TC_BM].y < own.x || rng[t * BN / FTK_TC_BM].x > own.y))
        t++;
    return t;
}

/* Whether streamed tile t (BN rows) and the own tile hold one and the same document. */
template <int BN> __device__ __forceinline__ bool ftk_tc_one_doc(const int2 *rng, int2 own, int t)
{
    int2 r = rng[t * BN / FTK_TC_BM];
    return own.x == own.y && r.x == own.x && r.y == own.x;
}

/* Stores a lane's two adjacent output values (column pair, even offset). */
template <class TO> __device__ __forceinline__ void ftk_st2(void *out, long long at, float v0, float v1)
{
    if constexpr (ftk_same<TO, __nv_bfloat16>::v) {
        *(__nv_bfloat162 *)((__nv_bfloat16 *)out + at) = __floats2bfloat162_rn(v0, v1);
    } else {
        ftk_st<TO>(out, at, v0);
        ftk_st<TO>(out, at + 1, v1);
    }
}

/* The forward's step on a score tile held as C fragments of the warp's 16 MI rows (both
 * attention paths): the element mask where MASK, the lazy online-softmax update of m (scaled,
 * base 2) and l (and WITH_V O's rescale), and the scores replaced by p = exp2(s sl - m). ir:
 * the lane's first row; j0: the tile's first key. */
template <int D, int MI, int NT8, bool WITH_V, bool MASK>
__device__ __forceinline__ void ftk_tc_softmax(float (&sc)[MI][NT8][4], float (&o)[MI][D / 8][4], float (&m)[MI][2],
                                               float (&l)[MI][2], float sl, int ir, int j0, int s, const int *doc,
                                               const int (&qd)[MI][2])
{
    const int t4 = threadIdx.x & 3;
    if (MASK) {
#pragma unroll
        for (int nt = 0; nt < NT8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int j = j0 + nt * 8 + 2 * t4 + e, kd = j < s ? doc[j] : 0;
#pragma unroll
                for (int mi = 0; mi < MI; mi++)
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        int i = ir + 16 * mi + 8 * r;
                        if (!(j <= i && i < s && kd == qd[mi][r]))
                            sc[mi][nt][2 * r + e] = -FTK_INF;
                    }
            }
    }
    float mx[MI][2];
    bool up = false;
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float x = -FTK_INF;
#pragma unroll
            for (int nt = 0; nt < NT8; nt++)
                x = fmaxf(x, fmaxf(sc[mi][nt][2 * r], sc[mi][nt][2 * r + 1]));
            x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
            x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
            mx[mi][r] = x * sl; /* sl > 0: the max of the scaled scores */
            up |= mx[mi][r] > m[mi][r] + FTK_TC_THR;
        }
    if (__any_sync(0xffffffffu, up)) { /* warp-uniform; exact: unchanged rows multiply by 1 */
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                bool u = mx[mi][r] > m[mi][r] + FTK_TC_THR;
                float corr = u ? ftk_ex2(m[mi][r] - mx[mi][r]) : 1.0f; /* m = -inf: 0 */
                m[mi][r] = u ? mx[mi][r] : m[mi][r];
                l[mi][r] *= corr;
                if (WITH_V) {
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++) {
                        o[mi][dt][2 * r] *= corr;
                        o[mi][dt][2 * r + 1] *= corr;
                    }
                }
            }
    }
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float nb = m[mi][r] == -FTK_INF ? 0.0f : -m[mi][r]; /* nothing visible yet: p = 0, not NaN */
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NT8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = ftk_ex2(fmaf(sc[mi][nt][2 * r + e], sl, nb));
                    sc[mi][nt][2 * r + e] = p;
                    sum += p;
                }
            l[mi][r] += sum;
        }
}

/* dq's step on a chunk of NT8 x 8 keys held as C fragments of the warp's 16 MI rows (both
 * attention paths): P = exp2(s sl - lse log2 e), dS = P (dP - delta), masked where MASK,
 * into sc. jc: the chunk's first key. */
template <int MI, int NT8, bool MASK>
__device__ __forceinline__ void ftk_tc_dq_ds(float (&sc)[MI][NT8][4], const float (&dp)[MI][NT8][4], float sl,
                                             const float (&lse2)[MI][2], const float (&dl)[MI][2], int ir, int jc,
                                             int s, const int *doc, const int (&qd)[MI][2])
{
    const int t4 = threadIdx.x & 3;
#pragma unroll
    for (int nt = 0; nt < NT8; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int j = jc + nt * 8 + 2 * t4 + e, kd = 0;
            if (MASK)
                kd = j < s ? doc[j] : 0;
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float p = ftk_ex2(fmaf(sc[mi][nt][2 * r + e], sl, -lse2[mi][r]));
                    float f = p * (dp[mi][nt][2 * r + e] - dl[mi][r]);
                    if (MASK) {
                        int i = ir + 16 * mi + 8 * r;
                        f = j <= i && i < s && kd == qd[mi][r] ? f : 0.0f;
                    }
                    sc[mi][nt][2 * r + e] = f;
                }
        }
}

/* dk's or dv's step on a chunk of NT8 x 8 queries held as C fragments of the warp's 16 MI
 * keys (both attention paths): Pᵀ = exp2(sᵀ sl - lse log2 e), and DK dSᵀ = Pᵀ (dPᵀ - delta),
 * masked where MASK, into sc; KEEP_P also packs the masked Pᵀ as A fragments (dv beside dk).
 * st: the tile's (lse, delta) pairs; i0: the tile's first query; c0: the chunk's first column. */
template <int MI, int NT8, bool DK, bool MASK, bool KEEP_P>
__device__ __forceinline__ void ftk_tc_kv_ds(float (&sc)[MI][NT8][4], const float (&dp)[MI][DK ? NT8 : 1][4],
                                             unsigned (&pa)[MI][KEEP_P ? NT8 / 2 : 1][4], const float2 *st, float sl,
                                             int jr, int i0, int c0, int s, const int *doc, const int (&kd)[MI][2])
{
    const int t4 = threadIdx.x & 3;
#pragma unroll
    for (int nt = 0; nt < NT8; nt++) {
        int cl = c0 + nt * 8 + 2 * t4;          /* the lane's first query column of this tile */
        float4 sd = *(const float4 *)(st + cl); /* (lse, delta) of columns cl and cl + 1 */
        float pv[MI][4];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int i = i0 + cl + e, qd = 0;
            if (MASK)
                qd = i < s ? doc[i] : 0;
            float l2 = (e ? sd.z : sd.x) * FTK_LOG2E, dl = e ? sd.w : sd.y;
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float p = ftk_ex2(fmaf(sc[mi][nt][2 * r + e], sl, -l2));
                    float f = p;
                    if constexpr (DK)
                        f = p * (dp[mi][nt][2 * r + e] - dl);
                    if (MASK) {
                        int j = jr + 16 * mi + 8 * r;
                        bool vis = j <= i && i < s && qd == kd[mi][r];
                        f = vis ? f : 0.0f;
                        p = vis ? p : 0.0f;
                    }
                    pv[mi][2 * r + e] = p;
                    sc[mi][nt][2 * r + e] = f;
                }
        }
        if constexpr (KEEP_P) { /* the C fragment pair (nt even, odd) is Pᵀ's A fragment */
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                pa[mi][nt >> 1][(nt & 1) * 2] = ftk_pack_bf16(pv[mi][0], pv[mi][1]);
                pa[mi][nt >> 1][(nt & 1) * 2 + 1] = ftk_pack_bf16(pv[mi][2], pv[mi][3]);
            }
        }
    }
}

namespace ftk {

/* One key tile of the forward for the warp's 16 MI query rows: S = Q Kᵀ, the lazy online
 * softmax update of m (scaled, base 2) and l, and WITH_V O += P V. ir: the lane's first query
 * row; j0: the tile's first key; MASK: apply the element mask. */
template <int D, int BN, int MI, bool WITH_V, bool QREG, bool MASK>
__device__ __forceinline__ void attn_tc_fwd_tile(const ftk_tc_own<D, MI, QREG> &q, float (&o)[MI][D / 8][4],
                                                 float (&m)[MI][2], float (&l)[MI][2], const __nv_bfloat16 *ks,
                                                 const __nv_bfloat16 *vs, float sl, int ir, int j0, int s,
                                                 const int *doc, const int (&qd)[MI][2])
{
    constexpr int P = D + 8, NT8 = BN / 8;
    float sc[MI][NT8][4];
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int nt = 0; nt < NT8; nt++)
            sc[mi][nt][0] = sc[mi][nt][1] = sc[mi][nt][2] = sc[mi][nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        unsigned qa[MI][4];
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
            q.get(qa[mi], mi, kk);
#pragma unroll
        for (int np = 0; np < BN / 16; np++) {
            unsigned b[4];
            ftk_ldsm_bt(b, ks, P, np * 16, kk * 16);
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                ftk_mma(sc[mi][2 * np], qa[mi], b[0], b[1]);
                ftk_mma(sc[mi][2 * np + 1], qa[mi], b[2], b[3]);
            }
        }
    }
    ftk_tc_softmax<D, MI, NT8, WITH_V, MASK>(sc, o, m, l, sl, ir, j0, s, doc, qd);
    if (WITH_V) {
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            unsigned pa[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
                ftk_c2a(pa[mi], sc[mi][2 * kk], sc[mi][2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 16; dn++) {
                unsigned b[4];
                ftk_ldsm_b(b, vs, P, kk * 16, dn * 16);
#pragma unroll
                for (int mi = 0; mi < MI; mi++) {
                    ftk_mma(o[mi][2 * dn], pa[mi], b[0], b[1]);
                    ftk_mma(o[mi][2 * dn + 1], pa[mi], b[2], b[3]);
                }
            }
        }
    }
}

/* The forward (WITH_V: o) or attn_lse on the tensor cores: a block per two tiles of 128 query
 * rows of one head (the longest and the shortest left), each with the key tiles from 0 to the
 * diagonal. The four lanes of a row each hold a quarter of
 * its columns: m is shared (quad max), l summed over the quad at the end, fixed order. */
template <int D, int BN, int MI, bool WITH_V, bool QREG, class TO>
__device__ __forceinline__ void attn_tc_fwd_run(const ftk_args_t &a, int doc_src)
{
    constexpr int NW = 8 / MI, NT = 32 * NW, BM = FTK_TC_BM, P = D + 8;
    constexpr int TILE = BN * P * 2, STAGE = (WITH_V ? 2 : 1) * TILE;
    typedef ftk_tc_lay<STAGE, BM * P * 2, QREG> L;
    static_assert(BM == 16 * MI * NW && BM % BN == 0 && BN % 16 == 0, "the tiles' shapes");
    ftk_tc_geo g = ftk_tc_geo_of(a);
    const int ntq = (g.s + BM - 1) / BM, ntk = (g.s + BN - 1) / BN;
    ftk_tc_check(NT, L::RNG_AT + 8LL * ntq);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    unsigned char *sm = ftk_smem;
    int2 *rng = (int2 *)(sm + L::RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (int pp = blockIdx.x; pp < (ntq + 1) / 2; pp += gridDim.x)
                for (int half = 0; half < 2 && (half == 0 || ntq - 1 - pp != pp); half++) {
                    int qt = half ? pp : ntq - 1 - pp; /* a long and a short query tile: even work */
                    int i0 = qt * BM, hk = h / g.group;
                    int tlast = min(ntk - 1, (i0 + BM - 1) / BN), wr0 = i0 + w * 16 * MI, ir = wr0 + gr;
                    const int *doc = (const int *)a.in[doc_src] + (long long)b * g.s;
                    __syncthreads(); /* the previous work's readers are done */
                    ftk_tc_cp_rows<D, BM, NT>(sm + L::OWN_AT, a.in[0], g, g.hq, b, i0, h);
                    ftk_cp_commit();
                    ftk_tc_ranges<NW>(rng, doc, g.s, 0, qt);
                    int qd[MI][2];
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            int i = ir + 16 * mi + 8 * r;
                            qd[mi][r] = i < g.s ? doc[i] : 0;
                        }
                    if (L::UNDER)
                        ftk_cp_wait_all();
                    __syncthreads();
                    ftk_tc_own<D, MI, QREG> q;
                    q.p = (const __nv_bfloat16 *)(sm + L::OWN_AT) + w * 16 * MI * P;
                    if (L::UNDER) {
                        q.load();
                        __syncthreads(); /* Q's space is the stages' */
                    }
                    int2 own = rng[qt];
                    int t = ftk_tc_next<BN>(rng, own, 0, tlast);
                    if (t <= tlast) {
                        ftk_tc_cp_rows<D, BN, NT>(sm + L::ST0, a.in[1], g, g.hkv, b, t * BN, hk);
                        if (WITH_V)
                            ftk_tc_cp_rows<D, BN, NT>(sm + L::ST0 + TILE, a.in[2], g, g.hkv, b, t * BN, hk);
                    }
                    ftk_cp_commit();
                    ftk_cp_wait_all();
                    __syncthreads();
                    if (L::BESIDE) {
                        q.load();
                        __syncthreads(); /* Q's space is stage 1's */
                    }
                    float o[MI][D / 8][4], m[MI][2], l[MI][2];
#pragma unroll
                    for (int mi = 0; mi < MI; mi++) {
                        m[mi][0] = m[mi][1] = -FTK_INF;
                        l[mi][0] = l[mi][1] = 0.0f;
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
                            o[mi][dt][0] = o[mi][dt][1] = o[mi][dt][2] = o[mi][dt][3] = 0.0f;
                    }
                    int stage = 0;
                    while (t <= tlast) {
                        int tn = ftk_tc_next<BN>(rng, own, t + 1, tlast);
                        const unsigned char *cur = sm + (stage ? L::ST1 : L::ST0);
                        unsigned char *nx = sm + (stage ? L::ST0 : L::ST1);
                        if (tn <= tlast) { /* the next tile loads while this one computes */
                            ftk_tc_cp_rows<D, BN, NT>(nx, a.in[1], g, g.hkv, b, tn * BN, hk);
                            if (WITH_V)
                                ftk_tc_cp_rows<D, BN, NT>(nx + TILE, a.in[2], g, g.hkv, b, tn * BN, hk);
                        }
                        ftk_cp_commit();
                        const __nv_bfloat16 *ks = (const __nv_bfloat16 *)cur, *vs = ks + BN * P;
                        int j0 = t * BN;
                        if (j0 + BN - 1 <= i0 && i0 + BM <= g.s && ftk_tc_one_doc<BN>(rng, own, t))
                            attn_tc_fwd_tile<D, BN, MI, WITH_V, QREG, false>(q, o, m, l, ks, vs, sl, ir, j0, g.s, doc,
                                                                           qd);
                        else if (j0 <= wr0 + 16 * MI - 1 && wr0 < g.s) /* else every key follows the warp's rows */
                            attn_tc_fwd_tile<D, BN, MI, WITH_V, QREG, true>(q, o, m, l, ks, vs, sl, ir, j0, g.s, doc,
                                                                           qd);
                        ftk_cp_wait_all();
                        __syncthreads();
                        t = tn;
                        stage ^= 1;
                    }
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            float lr = l[mi][r];
                            lr += __shfl_xor_sync(0xffffffffu, lr, 1);
                            lr += __shfl_xor_sync(0xffffffffu, lr, 2);
                            int i = ir + 16 * mi + 8 * r;
                            if (i >= g.s)
                                continue;
                            if (WITH_V) {
                                long long orow = ftk_tc_row<D>(g, g.hq, b, i, h);
                                float inv = lr > 0.0f ? 1.0f / lr : 0.0f;
                                if (a.in[4] && t4 == 0) /* attn's optional lse output (passes/fuse.c) */
                                    ((float *)a.in[4])[(long long)(b * g.s + i) * g.hq + h] =
                                        m[mi][r] * FTK_LN2 + logf(lr);
#pragma unroll
                                for (int dt = 0; dt < D / 8; dt++)
                                    ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, o[mi][dt][2 * r] * inv,
                                                o[mi][dt][2 * r + 1] * inv);
                            } else if (t4 == 0) {
                                ftk_st<TO>(a.out, (long long)(b * g.s + i) * g.hq + h, m[mi][r] * FTK_LN2 + logf(lr));
                            }
                        }
                }
}

/* (q, k, v, doc) -> o, and (q, k, doc) -> lse, on the tensor cores (entry points: emit.c). */
template <int D, int BN, int MI, bool QREG, class TO> __device__ __forceinline__ void attn_tc_fwd(const ftk_args_t &a)
{
    attn_tc_fwd_run<D, BN, MI, true, QREG, TO>(a, 3);
}
template <int D, int BN, int MI, bool QREG, class TO> __device__ __forceinline__ void attn_tc_lse(const ftk_args_t &a)
{
    attn_tc_fwd_run<D, BN, MI, false, QREG, TO>(a, 2);
}

/* One key tile of dq for the warp's 16 MI query rows, in chunks of CK keys: S = Q Kᵀ,
 * dP = dY Vᵀ, dS = P (dP - delta), dq += dS K (unscaled). lse2: lse times log2 e of the lane's
 * rows; wlast: the warp's last row. */
template <int D, int BN, int MI, bool OREG, int CK, bool MASK>
__device__ __forceinline__ void attn_tc_dq_tile(const ftk_tc_own<D, MI, OREG> &q, const ftk_tc_own<D, MI, OREG> &y,
                                                float (&dq)[MI][D / 8][4], const __nv_bfloat16 *ks,
                                                const __nv_bfloat16 *vs, float sl, const float (&lse2)[MI][2],
                                                const float (&dl)[MI][2], int ir, int wlast, int j0, int s,
                                                const int *doc, const int (&qd)[MI][2])
{
    constexpr int P = D + 8, NT8 = CK / 8;
#pragma unroll
    for (int c = 0; c < BN / CK; c++) {
        if (MASK && j0 + c * CK > wlast)
            continue; /* every key of the chunk follows the warp's rows (warp-uniform) */
        float sc[MI][NT8][4], dp[MI][NT8][4];
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
#pragma unroll
            for (int nt = 0; nt < NT8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    sc[mi][nt][e] = dp[mi][nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            unsigned qa[MI][4], ya[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                q.get(qa[mi], mi, kk);
                y.get(ya[mi], mi, kk);
            }
#pragma unroll
            for (int np = 0; np < CK / 16; np++) {
                unsigned b[4];
                ftk_ldsm_bt(b, ks, P, c * CK + np * 16, kk * 16);
#pragma unroll
                for (int mi = 0; mi < MI; mi++) {
                    ftk_mma(sc[mi][2 * np], qa[mi], b[0], b[1]);
                    ftk_mma(sc[mi][2 * np + 1], qa[mi], b[2], b[3]);
                }
                ftk_ldsm_bt(b, vs, P, c * CK + np * 16, kk * 16);
#pragma unroll
                for (int mi = 0; mi < MI; mi++) {
                    ftk_mma(dp[mi][2 * np], ya[mi], b[0], b[1]);
                    ftk_mma(dp[mi][2 * np + 1], ya[mi], b[2], b[3]);
                }
            }
        }
        ftk_tc_dq_ds<MI, NT8, MASK>(sc, dp, sl, lse2, dl, ir, j0 + c * CK, s, doc, qd);
#pragma unroll
        for (int kk = 0; kk < CK / 16; kk++) {
            unsigned fa[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
                ftk_c2a(fa[mi], sc[mi][2 * kk], sc[mi][2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 16; dn++) {
                unsigned b[4];
                ftk_ldsm_b(b, ks, P, c * CK + kk * 16, dn * 16);
#pragma unroll
                for (int mi = 0; mi < MI; mi++) {
                    ftk_mma(dq[mi][2 * dn], fa[mi], b[0], b[1]);
                    ftk_mma(dq[mi][2 * dn + 1], fa[mi], b[2], b[3]);
                }
            }
        }
    }
}

/* dq on the tensor cores: a block per two tiles of 128 query rows of one head (the longest and
 * the shortest left), with their dY rows; the key tiles with their values up to the diagonal. */
template <int D, int BN, int MI, bool OREG, int CK, class TS, class TO>
__device__ __forceinline__ void attn_tc_dq(const ftk_args_t &a)
{
    constexpr int NW = 8 / MI, NT = 32 * NW, BM = FTK_TC_BM, P = D + 8;
    constexpr int TILE = BN * P * 2, OWN1 = BM * P * 2;
    typedef ftk_tc_lay<2 * TILE, 2 * OWN1, OREG> L;
    static_assert(BM == 16 * MI * NW && BM % BN == 0 && BN % CK == 0 && CK % 16 == 0, "the tiles' shapes");
    ftk_tc_geo g = ftk_tc_geo_of(a);
    const int ntq = (g.s + BM - 1) / BM, ntk = (g.s + BN - 1) / BN;
    ftk_tc_check(NT, L::RNG_AT + 8LL * ntq);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    unsigned char *sm = ftk_smem;
    int2 *rng = (int2 *)(sm + L::RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (int pp = blockIdx.x; pp < (ntq + 1) / 2; pp += gridDim.x)
                for (int half = 0; half < 2 && (half == 0 || ntq - 1 - pp != pp); half++) {
                    int qt = half ? pp : ntq - 1 - pp; /* a long and a short query tile: even work */
                    int i0 = qt * BM, hk = h / g.group;
                    int tlast = min(ntk - 1, (i0 + BM - 1) / BN), wr0 = i0 + w * 16 * MI, ir = wr0 + gr;
                    const int *doc = (const int *)a.in[3] + (long long)b * g.s;
                    __syncthreads();
                    ftk_tc_cp_rows<D, BM, NT>(sm + L::OWN_AT, a.in[0], g, g.hq, b, i0, h);
                    ftk_tc_cp_rows<D, BM, NT>(sm + L::OWN_AT + OWN1, a.in[4], g, g.hq, b, i0, h);
                    ftk_cp_commit();
                    ftk_tc_ranges<NW>(rng, doc, g.s, 0, qt);
                    int qd[MI][2];
                    float lse2[MI][2], dl[MI][2];
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            int i = ir + 16 * mi + 8 * r;
                            long long at = ((long long)(b * g.s + i) * g.hq + h) * 2;
                            qd[mi][r] = i < g.s ? doc[i] : 0;
                            lse2[mi][r] = i < g.s ? ftk_ld<TS>(a.in[5], at) * FTK_LOG2E : 0.0f;
                            dl[mi][r] = i < g.s ? ftk_ld<TS>(a.in[5], at + 1) : 0.0f;
                        }
                    if (L::UNDER)
                        ftk_cp_wait_all();
                    __syncthreads();
                    ftk_tc_own<D, MI, OREG> q, y;
                    q.p = (const __nv_bfloat16 *)(sm + L::OWN_AT) + w * 16 * MI * P;
                    y.p = (const __nv_bfloat16 *)(sm + L::OWN_AT + OWN1) + w * 16 * MI * P;
                    if (L::UNDER) {
                        q.load();
                        y.load();
                        __syncthreads(); /* the own tiles' space is the stages' */
                    }
                    int2 own = rng[qt];
                    int t = ftk_tc_next<BN>(rng, own, 0, tlast);
                    if (t <= tlast) {
                        ftk_tc_cp_rows<D, BN, NT>(sm + L::ST0, a.in[1], g, g.hkv, b, t * BN, hk);
                        ftk_tc_cp_rows<D, BN, NT>(sm + L::ST0 + TILE, a.in[2], g, g.hkv, b, t * BN, hk);
                    }
                    ftk_cp_commit();
                    ftk_cp_wait_all();
                    __syncthreads();
                    if (L::BESIDE) {
                        q.load();
                        y.load();
                        __syncthreads(); /* the own tiles' space is stage 1's */
                    }
                    float dq[MI][D / 8][4];
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
                            dq[mi][dt][0] = dq[mi][dt][1] = dq[mi][dt][2] = dq[mi][dt][3] = 0.0f;
                    int stage = 0;
                    while (t <= tlast) {
                        int tn = ftk_tc_next<BN>(rng, own, t + 1, tlast);
                        const unsigned char *cur = sm + (stage ? L::ST1 : L::ST0);
                        unsigned char *nx = sm + (stage ? L::ST0 : L::ST1);
                        if (tn <= tlast) {
                            ftk_tc_cp_rows<D, BN, NT>(nx, a.in[1], g, g.hkv, b, tn * BN, hk);
                            ftk_tc_cp_rows<D, BN, NT>(nx + TILE, a.in[2], g, g.hkv, b, tn * BN, hk);
                        }
                        ftk_cp_commit();
                        const __nv_bfloat16 *ks = (const __nv_bfloat16 *)cur, *vs = ks + BN * P;
                        int j0 = t * BN;
                        if (j0 + BN - 1 <= i0 && i0 + BM <= g.s && ftk_tc_one_doc<BN>(rng, own, t))
                            attn_tc_dq_tile<D, BN, MI, OREG, CK, false>(q, y, dq, ks, vs, sl, lse2, dl, ir,
                                                                       wr0 + 16 * MI - 1, j0, g.s, doc, qd);
                        else if (wr0 < g.s)
                            attn_tc_dq_tile<D, BN, MI, OREG, CK, true>(q, y, dq, ks, vs, sl, lse2, dl, ir,
                                                                      wr0 + 16 * MI - 1, j0, g.s, doc, qd);
                        ftk_cp_wait_all();
                        __syncthreads();
                        t = tn;
                        stage ^= 1;
                    }
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            int i = ir + 16 * mi + 8 * r;
                            if (i >= g.s)
                                continue;
                            long long orow = ftk_tc_row<D>(g, g.hq, b, i, h);
#pragma unroll
                            for (int dt = 0; dt < D / 8; dt++)
                                ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, g.scale * dq[mi][dt][2 * r],
                                            g.scale * dq[mi][dt][2 * r + 1]);
                        }
                }
}

/* One query tile of dk (DK) or dv for the warp's 16 MI keys, in chunks of CK queries:
 * Sᵀ = K Qᵀ, Pᵀ = exp2(Sᵀ scale log2 e - lse log2 e); dv += Pᵀ dY, or dPᵀ = V dYᵀ,
 * dk += Pᵀ (dPᵀ - delta) Q (unscaled). st: the tile's (lse, delta) pairs; jr: the lane's first
 * key; wj0: the warp's first key; i0: the tile's first query row. */
template <int D, int BN, int MI, bool OREG, int CK, bool DK, bool MASK>
__device__ __forceinline__ void attn_tc_kv_tile(const ftk_tc_own<D, MI, OREG> &k, const ftk_tc_own<D, MI, OREG> &v,
                                                float (&acc)[MI][D / 8][4], const __nv_bfloat16 *qs,
                                                const __nv_bfloat16 *ys, const float2 *st, float sl, int jr, int wj0,
                                                int i0, int s, const int *doc, const int (&kd)[MI][2])
{
    constexpr int P = D + 8, NT8 = CK / 8;
#pragma unroll
    for (int c = 0; c < BN / CK; c++) {
        if (MASK && i0 + c * CK + CK - 1 < wj0)
            continue; /* every query of the chunk precedes the warp's keys (warp-uniform) */
        float sc[MI][NT8][4], dp[MI][DK ? NT8 : 1][4];
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
#pragma unroll
            for (int nt = 0; nt < NT8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    sc[mi][nt][e] = 0.0f;
                    if (DK)
                        dp[mi][nt][e] = 0.0f;
                }
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            unsigned ka[MI][4], va[DK ? MI : 1][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                k.get(ka[mi], mi, kk);
                if (DK)
                    v.get(va[mi], mi, kk);
            }
#pragma unroll
            for (int np = 0; np < CK / 16; np++) {
                unsigned b[4];
                ftk_ldsm_bt(b, qs, P, c * CK + np * 16, kk * 16);
#pragma unroll
                for (int mi = 0; mi < MI; mi++) {
                    ftk_mma(sc[mi][2 * np], ka[mi], b[0], b[1]);
                    ftk_mma(sc[mi][2 * np + 1], ka[mi], b[2], b[3]);
                }
                if (DK) {
                    ftk_ldsm_bt(b, ys, P, c * CK + np * 16, kk * 16);
#pragma unroll
                    for (int mi = 0; mi < MI; mi++) {
                        ftk_mma(dp[mi][2 * np], va[mi], b[0], b[1]);
                        ftk_mma(dp[mi][2 * np + 1], va[mi], b[2], b[3]);
                    }
                }
            }
        }
        unsigned np[MI][1][4];
        ftk_tc_kv_ds<MI, NT8, DK, MASK, false>(sc, dp, np, st, sl, jr, i0, c * CK, s, doc, kd);
#pragma unroll
        for (int kk = 0; kk < CK / 16; kk++) {
            unsigned fa[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
                ftk_c2a(fa[mi], sc[mi][2 * kk], sc[mi][2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 16; dn++) {
                unsigned b[4];
                ftk_ldsm_b(b, DK ? qs : ys, P, c * CK + kk * 16, dn * 16);
#pragma unroll
                for (int mi = 0; mi < MI; mi++) {
                    ftk_mma(acc[mi][2 * dn], fa[mi], b[0], b[1]);
                    ftk_mma(acc[mi][2 * dn + 1], fa[mi], b[2], b[3]);
                }
            }
        }
    }
}

/* dk (DK) or dv on the tensor cores: a block per two tiles of 128 keys of one kv head (p and
 * the p-th from the end), one after the other, with their K (and V); for every query head of
 * the group in turn, the query tiles from the one holding the tile's first key to the end,
 * each with its dY rows and statistics. */
template <int D, int BN, int MI, bool OREG, int CK, bool DK, class TS, class TO>
__device__ __forceinline__ void attn_tc_kv(const ftk_args_t &a)
{
    constexpr int NW = 8 / MI, NT = 32 * NW, BM = FTK_TC_BM, P = D + 8;
    constexpr int TILE = BN * P * 2, OWN1 = BM * P * 2;
    typedef ftk_tc_lay<2 * TILE + BN * 8, (DK ? 2 : 1) * OWN1, OREG> L;
    static_assert(BM == 16 * MI * NW && BM % BN == 0 && BN % CK == 0 && CK % 16 == 0, "the tiles' shapes");
    ftk_tc_geo g = ftk_tc_geo_of(a);
    const int nkt = (g.s + BM - 1) / BM, ntq = (g.s + BN - 1) / BN;
    ftk_tc_check(NT, L::RNG_AT + 8LL * nkt);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    unsigned char *sm = ftk_smem;
    int2 *rng = (int2 *)(sm + L::RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int hk = blockIdx.y; hk < g.hkv; hk += gridDim.y)
            for (int pp = blockIdx.x; pp < (nkt + 1) / 2; pp += gridDim.x)
                for (int half = 0; half < 2 && (half == 0 || nkt - 1 - pp != pp); half++) {
                    int kt = half ? nkt - 1 - pp : pp; /* a long and a short key tile: even work per block */
                    int j0 = kt * BM, t0 = j0 / BN, tlast = ntq - 1, wj0 = j0 + w * 16 * MI, jr = wj0 + gr;
                    const int *doc = (const int *)a.in[3] + (long long)b * g.s;
                    __syncthreads();
                    ftk_tc_cp_rows<D, BM, NT>(sm + L::OWN_AT, a.in[1], g, g.hkv, b, j0, hk);
                    if (DK)
                        ftk_tc_cp_rows<D, BM, NT>(sm + L::OWN_AT + OWN1, a.in[2], g, g.hkv, b, j0, hk);
                    ftk_cp_commit();
                    ftk_tc_ranges<NW>(rng, doc, g.s, kt, nkt - 1);
                    int kd[MI][2];
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            int j = jr + 16 * mi + 8 * r;
                            kd[mi][r] = j < g.s ? doc[j] : 0;
                        }
                    if (L::UNDER)
                        ftk_cp_wait_all();
                    __syncthreads();
                    ftk_tc_own<D, MI, OREG> k, v;
                    k.p = (const __nv_bfloat16 *)(sm + L::OWN_AT) + w * 16 * MI * P;
                    v.p = (const __nv_bfloat16 *)(sm + L::OWN_AT + OWN1) + w * 16 * MI * P;
                    if (L::UNDER) {
                        k.load();
                        if (DK)
                            v.load();
                        __syncthreads(); /* the own tiles' space is the stages' */
                    }
                    int2 own = rng[kt];
                    int tfirst = ftk_tc_next<BN>(rng, own, t0, tlast), t = tfirst, hh = t <= tlast ? 0 : g.group;
                    if (hh < g.group) {
                        int h = hk * g.group;
                        ftk_tc_cp_rows<D, BN, NT>(sm + L::ST0, a.in[0], g, g.hq, b, t * BN, h);
                        ftk_tc_cp_rows<D, BN, NT>(sm + L::ST0 + TILE, a.in[4], g, g.hq, b, t * BN, h);
                        ftk_tc_cp_stats<TS, BN, NT>((float2 *)(sm + L::ST0 + 2 * TILE), a.in[5], g, b, t * BN, h);
                    }
                    ftk_cp_commit();
                    ftk_cp_wait_all();
                    __syncthreads();
                    if (L::BESIDE) {
                        k.load();
                        if (DK)
                            v.load();
                        __syncthreads(); /* the own tiles' space is stage 1's */
                    }
                    float acc[MI][D / 8][4];
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
                            acc[mi][dt][0] = acc[mi][dt][1] = acc[mi][dt][2] = acc[mi][dt][3] = 0.0f;
                    int stage = 0;
                    while (hh < g.group) {
                        int tn = ftk_tc_next<BN>(rng, own, t + 1, tlast), hn = hh;
                        if (tn > tlast) { /* the group's next head, from its first visible tile */
                            hn++;
                            tn = tfirst;
                        }
                        const unsigned char *cur = sm + (stage ? L::ST1 : L::ST0);
                        unsigned char *nx = sm + (stage ? L::ST0 : L::ST1);
                        if (hn < g.group) {
                            int h = hk * g.group + hn;
                            ftk_tc_cp_rows<D, BN, NT>(nx, a.in[0], g, g.hq, b, tn * BN, h);
                            ftk_tc_cp_rows<D, BN, NT>(nx + TILE, a.in[4], g, g.hq, b, tn * BN, h);
                            ftk_tc_cp_stats<TS, BN, NT>((float2 *)(nx + 2 * TILE), a.in[5], g, b, tn * BN, h);
                        }
                        ftk_cp_commit();
                        const __nv_bfloat16 *qs = (const __nv_bfloat16 *)cur, *ys = qs + BN * P;
                        const float2 *st = (const float2 *)(cur + 2 * TILE);
                        int i0 = t * BN;
                        if (j0 + BM - 1 <= i0 && i0 + BN <= g.s && ftk_tc_one_doc<BN>(rng, own, t))
                            attn_tc_kv_tile<D, BN, MI, OREG, CK, DK, false>(k, v, acc, qs, ys, st, sl, jr, wj0, i0, g.s,
                                                                            doc, kd);
                        else if (wj0 < g.s)
                            attn_tc_kv_tile<D, BN, MI, OREG, CK, DK, true>(k, v, acc, qs, ys, st, sl, jr, wj0, i0, g.s,
                                                                           doc, kd);
                        ftk_cp_wait_all();
                        __syncthreads();
                        t = tn;
                        hh = hn;
                        stage ^= 1;
                    }
                    float f = DK ? g.scale : 1.0f;
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            int j = jr + 16 * mi + 8 * r;
                            if (j >= g.s)
                                continue;
                            long long orow = ftk_tc_row<D>(g, g.hkv, b, j, hk);
#pragma unroll
                            for (int dt = 0; dt < D / 8; dt++)
                                ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, f * acc[mi][dt][2 * r],
                                            f * acc[mi][dt][2 * r + 1]);
                        }
                }
}

/* (q, k, v, doc, dy, stats) -> dk and dv on the tensor cores (entry points: emit.c). */
template <int D, int BN, int MI, bool OREG, int CK, class TS, class TO>
__device__ __forceinline__ void attn_tc_dk(const ftk_args_t &a)
{
    attn_tc_kv<D, BN, MI, OREG, CK, true, TS, TO>(a);
}
template <int D, int BN, int MI, bool OREG, int CK, class TS, class TO>
__device__ __forceinline__ void attn_tc_dv(const ftk_args_t &a)
{
    attn_tc_kv<D, BN, MI, OREG, CK, false, TS, TO>(a);
}

} /* namespace ftk */
