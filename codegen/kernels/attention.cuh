/* attention.cuh — causal, document-masked attention with grouped key/value heads: the
 * forward, the softmax row statistics (attn_lse), the row sum that gives the backward its
 * delta (rowsum), and the backward from those statistics. Tiled, O(S^2 Dh) work, no S x S
 * buffer. Two paths: fp32 CUDA-core arithmetic for every storage type and Dh <= 256, and,
 * where q, k, v (and dy) are bf16 and Dh is 64 or 128, the tensor cores (mma.sync bf16 ->
 * fp32; the section "the tensor-core path" below has its own launch and shared lines).
 * defines: ftk_attn_geo, ftk::attn, ftk::attn_lse, ftk::attn_bwd (ftk::attn_bwd_q,
 *          ftk::attn_bwd_kv; ftk::attn_mma_fwd, ftk::attn_mma_bwd_q, ftk::attn_mma_bwd_kv),
 *          ftk::rowsum
 * launch:  (CUDA cores) attn, attn_lse and attn_bwd with ip[0] = 0 (dq): grid (ceil(S / T),
 *          Hq, B), one block of FTK_ATT_THREADS (128) threads per tile of T = FTK_ATT_TILE
 *          (32) query rows of one head; attn_bwd with ip[0] = 1 (dk) or 2 (dv): grid
 *          (ceil(S / T), Hkv, B), one block per tile of T keys of one kv head. rowsum: 256
 *          threads, a warp per row, grid ceil(rows / 8).
 * shared:  (CUDA cores) with pitch P = round_up(Dh, 4) + 4 floats per tile row: attn 3 T P
 *          floats + 2 T ints; attn_lse 2 T P floats + 2 T ints; attn_bwd 4 T P + 2 T floats +
 *          2 T ints. codegen/emit.c computes the same sizes (attn_smem, attn_mma_smem).
 *
 * q [B,S,Hq,Dh], k and v [B,S,Hkv,Dh], doc [B,S] i32; query i sees key j when j <= i and
 * doc[j] == doc[i]; query head h reads kv head h / (Hq / Hkv) (HF repeat_kv); fp[0] is the
 * softmax scale. attn_bwd's stats [B,S,Hq,2] hold (lse_i, delta_i) per query row, so every
 * kernel streams each tile pair once: no statistics are recomputed.
 *
 * The scheme of every kernel: a block holds one tile of "own" rows (query rows, or keys for
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

/* ---- the tensor-core path: bf16 q, k, v (and dy), head dim 64 or 128 ----
 *
 * launch:  attn, attn_lse, dq: grid (ceil(S / 64), Hq, B), 128 threads; dk, dv: grid
 *          (ceil(S / 32), Hkv, B), 64 threads.
 * shared:  bf16 tiles at a pitch of Dh + 8: attn 3 x 64 rows (q, k, v), attn_lse 2 x 64, dq
 *          4 x 64 (q, dy, k, v), dk/dv 2 x 32 (k, v) + 2 x 64 (q, dy); then f32 lse and delta
 *          [64] (attn_bwd) and the document ids of both tiles (64 + 64, dk/dv 64 + 32).
 *
 * mma.sync.aligned.m16n8k16 (bf16 operands, fp32 accumulators; sm_80 and newer), fp32
 * softmax statistics, no S x S buffer. A warp owns 16 rows; tiles live in shared memory as
 * bf16 at a pitch of Dh + 8 elements (16 bytes of padding: the 32-bit fragment loads of 8
 * rows and the 8-row ldmatrix phases land on distinct banks). Fragment layouts (PTX ISA,
 * m16n8k16, g = lane / 4, t = lane % 4): A a0 (row g, cols 2t, 2t+1), a1 (row g+8), a2 (row
 * g, cols 8+2t..), a3 (row g+8, cols 8+2t..); B b0 (rows 2t, 2t+1, col g), b1 (rows 8+2t..);
 * C c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8). A product's C fragments of two adjacent
 * 8-column tiles are the A fragment of the next product over those 16 columns, so
 * probabilities never leave registers. B operands whose k runs along the rows of a
 * row-major tile (values, keys or queries as the right factor) come from ldmatrix.trans.
 *   forward, attn_lse, dq: 4 warps, a block per 64 query rows, key tiles of 64;
 *   dk, dv: 2 warps, a block per 32 keys, query tiles of 64.
 * Masks, document skips and the order of every sum are fixed: deterministic. */

#define FTK_MMA_Q 64  /* query rows per tile (forward, dq: the block's own; dk/dv: streamed) */
#define FTK_MMA_K 64  /* keys per streamed tile (forward, dq) */
#define FTK_MMA_KV 32 /* keys per block (dk, dv) */

template <class A, class B> struct ftk_same {
    static const bool v = false;
};
template <class A> struct ftk_same<A, A> {
    static const bool v = true;
};

__device__ __forceinline__ unsigned ftk_lds32(const __nv_bfloat16 *p) { return *(const unsigned *)p; }

__device__ __forceinline__ unsigned ftk_pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x, the lower half, is the lower index */
    return *(unsigned *)&v;
}

/* c += A B for one m16n8k16 tile. */
__device__ __forceinline__ void ftk_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* A fragment of rows base[0..15] (row-major, pitch p), columns k0 .. k0 + 15. */
__device__ __forceinline__ void ftk_frag_a(unsigned a[4], const __nv_bfloat16 *base, int p, int k0)
{
    int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    a[0] = ftk_lds32(base + g * p + k0 + 2 * t);
    a[1] = ftk_lds32(base + (g + 8) * p + k0 + 2 * t);
    a[2] = ftk_lds32(base + g * p + k0 + 8 + 2 * t);
    a[3] = ftk_lds32(base + (g + 8) * p + k0 + 8 + 2 * t);
}

/* B fragment with B[k][n] = M[n][k] for rows base[0..7] of a row-major M (n along rows),
 * k = k0 .. k0 + 15: the right factor of a product with Mᵀ. */
__device__ __forceinline__ void ftk_frag_bt(unsigned b[2], const __nv_bfloat16 *base, int p, int k0)
{
    int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    b[0] = ftk_lds32(base + g * p + k0 + 2 * t);
    b[1] = ftk_lds32(base + g * p + k0 + 8 + 2 * t);
}

/* B fragments with B[k][n] = M[k][n] (k along the rows of a row-major M): rows k0 .. k0 + 15,
 * columns n0 .. n0 + 15, by one ldmatrix.x4.trans: b[0], b[1] for columns n0 .. n0 + 7,
 * b[2], b[3] for n0 + 8 .. n0 + 15. Lanes 8q .. 8q + 7 address the rows of matrix q. */
__device__ __forceinline__ void ftk_frag_b2(unsigned b[4], const __nv_bfloat16 *m, int p, int k0, int n0)
{
    int lane = threadIdx.x & 31, q = lane >> 3, r = lane & 7;
    const __nv_bfloat16 *row = m + (k0 + r + (q & 1) * 8) * p + n0 + (q >> 1) * 8;
    unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(addr));
}

/* acc[dt] += F X over 16 columns of F per step: F is the 16 x 64 product held in f[8][4]
 * (C fragments, 8 tiles of 8 columns), X [64][D] a row-major bf16 tile. */
template <int D>
__device__ __forceinline__ void ftk_mma_fx(float acc[D / 8][4], const float f[8][4], const __nv_bfloat16 *x, int p)
{
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        unsigned a[4] = {ftk_pack_bf16(f[2 * kk][0], f[2 * kk][1]), ftk_pack_bf16(f[2 * kk][2], f[2 * kk][3]),
                         ftk_pack_bf16(f[2 * kk + 1][0], f[2 * kk + 1][1]),
                         ftk_pack_bf16(f[2 * kk + 1][2], f[2 * kk + 1][3])};
#pragma unroll
        for (int dt = 0; dt < D / 8; dt += 2) {
            unsigned b[4];
            ftk_frag_b2(b, x, p, kk * 16, dt * 8);
            ftk_mma(acc[dt], a, b[0], b[1]);
            ftk_mma(acc[dt + 1], a, b[2], b[3]);
        }
    }
}

/* s[nt] += A Bᵀ for the warp's 16 rows of a (pitch p) against the 64 rows of b: 8 tiles of
 * 8 columns, over D. */
template <int D>
__device__ __forceinline__ void ftk_mma_abt(float s[8][4], const __nv_bfloat16 *a, const __nv_bfloat16 *b, int p)
{
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        unsigned fa[4];
        ftk_frag_a(fa, a, p, kk * 16);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            unsigned fb[2];
            ftk_frag_bt(fb, b + nt * 8 * p, p, kk * 16);
            ftk_mma(s[nt], fa, fb[0], fb[1]);
        }
    }
}

/* Rows r0 .. r0 + n - 1 (head h of a [B,S,nh,D] bf16 tensor) into dst[n][D + 8], 16 bytes
 * a load; rows past the sequence zero. Whole block; no barrier. */
template <int D>
__device__ __forceinline__ void ftk_mma_tile_load(__nv_bfloat16 *dst, const void *src, const ftk_attn_geo &g,
                                                  long long nh, long long b, long long r0, long long h, int n)
{
    const __nv_bfloat16 *base = (const __nv_bfloat16 *)src;
    const int chunks = D / 8, p = D + 8;
    for (int e = threadIdx.x; e < n * chunks; e += blockDim.x) {
        int r = e / chunks, c = e - r * chunks;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r0 + r < g.s)
            v = *(const uint4 *)(base + ftk_att_row(g, nh, b, r0 + r, h) + c * 8);
        *(uint4 *)(dst + r * p + c * 8) = v;
    }
}

/* Document ids of rows r0 .. r0 + n - 1 (n <= 64; -1 past the sequence). No barrier. */
__device__ __forceinline__ void ftk_mma_doc_load(int *ids, const int *doc, long long s, long long r0, int n)
{
    for (int t = threadIdx.x; t < n; t += blockDim.x)
        ids[t] = r0 + t < s ? doc[r0 + t] : -1;
}

/* The smallest and largest document id of rows r0 .. r0 + n - 1 inside the sequence
 * (n <= 64), the same in every thread (see ftk_att_doc_range). */
__device__ __forceinline__ void ftk_mma_doc_range(const int *doc, long long s, long long r0, int n, int *mn, int *mx)
{
    int lane = threadIdx.x & 31, lo = 0x7fffffff, hi = (int)0x80000000;
    for (int k = lane; k < n; k += 32)
        if (r0 + k < s) {
            int v = doc[r0 + k];
            lo = min(lo, v);
            hi = max(hi, v);
        }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
        hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
    }
    *mn = lo;
    *mx = hi;
}

namespace ftk {

/* Forward (WITH_V) or attn_lse on the tensor cores: a block per 64 query rows of one head,
 * key tiles of 64 up to the diagonal; per row an online softmax (m, and the lane's share of
 * l: the four lanes of a row hold 16 of the 64 columns each, summed at the end). */
template <int D, bool WITH_V, class TO> __device__ __forceinline__ void attn_mma_fwd(const ftk_args_t &a, int doc_src)
{
    const int P = D + 8;
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    if (blockDim.x != 128)
        __trap();
    __nv_bfloat16 *qs = (__nv_bfloat16 *)ftk_smem; /* [64][P] */
    __nv_bfloat16 *ks = qs + FTK_MMA_Q * P;         /* [64][P] */
    __nv_bfloat16 *vs = ks + FTK_MMA_K * P;         /* [64][P], WITH_V only */
    int *qdoc = (int *)(ks + (WITH_V ? 2 : 1) * FTK_MMA_K * P);
    int *kdoc = qdoc + FTK_MMA_Q;
    long long ntiles = (g.s + FTK_MMA_Q - 1) / FTK_MMA_Q;
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (long long tt = blockIdx.x; tt < ntiles; tt += gridDim.x) {
                long long qt = ntiles - 1 - tt, i0 = qt * FTK_MMA_Q, hk = h / g.group;
                const int *doc = (const int *)a.in[doc_src] + b * g.s;
                __syncthreads();
                ftk_mma_tile_load<D>(qs, a.in[0], g, g.hq, b, i0, h, FTK_MMA_Q);
                ftk_mma_doc_load(qdoc, doc, g.s, i0, FTK_MMA_Q);
                int qlo, qhi;
                ftk_mma_doc_range(doc, g.s, i0, FTK_MMA_Q, &qlo, &qhi);
                float o[D / 8][4], m[2] = {-FTK_INF, -FTK_INF}, l[2] = {0.0f, 0.0f};
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
                    o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
                for (long long kt = 0; kt <= qt; kt++) { /* equal tile sizes: key tile kt <= qt reaches the diagonal */
                    long long j0 = kt * FTK_MMA_K;
                    int klo, khi;
                    ftk_mma_doc_range(doc, g.s, j0, FTK_MMA_K, &klo, &khi);
                    if (khi < qlo || klo > qhi)
                        continue;
                    __syncthreads();
                    ftk_mma_tile_load<D>(ks, a.in[1], g, g.hkv, b, j0, hk, FTK_MMA_K);
                    if (WITH_V)
                        ftk_mma_tile_load<D>(vs, a.in[2], g, g.hkv, b, j0, hk, FTK_MMA_K);
                    ftk_mma_doc_load(kdoc, doc, g.s, j0, FTK_MMA_K);
                    __syncthreads();
                    float s[8][4];
#pragma unroll
                    for (int nt = 0; nt < 8; nt++)
                        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
                    ftk_mma_abt<D>(s, qs + w * 16 * P, ks, P);
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        int ri = w * 16 + gr + 8 * r;
                        long long i = i0 + ri;
                        float mx = -FTK_INF;
#pragma unroll
                        for (int nt = 0; nt < 8; nt++)
#pragma unroll
                            for (int e = 0; e < 2; e++) {
                                int jl = nt * 8 + 2 * t4 + e;
                                bool ok = i < g.s && j0 + jl <= i && kdoc[jl] == qdoc[ri];
                                float x = ok ? g.scale * s[nt][2 * r + e] : -FTK_INF;
                                s[nt][2 * r + e] = x;
                                mx = fmaxf(mx, x);
                            }
                        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                        float mn = fmaxf(m[r], mx);
                        float corr = mn == -FTK_INF ? 1.0f : expf(m[r] - mn), sum = 0.0f;
#pragma unroll
                        for (int nt = 0; nt < 8; nt++)
#pragma unroll
                            for (int e = 0; e < 2; e++) {
                                float x = s[nt][2 * r + e];
                                float pv = x == -FTK_INF ? 0.0f : expf(x - mn);
                                s[nt][2 * r + e] = pv;
                                sum += pv;
                            }
                        l[r] = l[r] * corr + sum;
                        m[r] = mn;
                        if (WITH_V) {
#pragma unroll
                            for (int dt = 0; dt < D / 8; dt++) {
                                o[dt][2 * r] *= corr;
                                o[dt][2 * r + 1] *= corr;
                            }
                        }
                    }
                    if (WITH_V)
                        ftk_mma_fx<D>(o, s, vs, P);
                }
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
                    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
                    long long i = i0 + w * 16 + gr + 8 * r;
                    if (i >= g.s)
                        continue;
                    if (WITH_V) {
                        long long orow = ftk_att_row(g, g.hq, b, i, h);
                        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
                            for (int e = 0; e < 2; e++)
                                ftk_st<TO>(a.out, orow + dt * 8 + 2 * t4 + e, l[r] > 0.0f ? o[dt][2 * r + e] * inv : 0.0f);
                    } else if (t4 == 0) {
                        ftk_st<TO>(a.out, (b * g.s + i) * g.hq + h, m[r] + logf(l[r]));
                    }
                }
            }
}

/* dq on the tensor cores: a block per 64 query rows of one head; per key tile S = Q Kᵀ and
 * dP = dY Vᵀ, then dS = scale p (dP - delta) with p = exp(scale S - lse), and dq += dS K. */
template <int D, class TS, class TO> __device__ __forceinline__ void attn_mma_bwd_q(const ftk_args_t &a)
{
    const int P = D + 8;
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    if (blockDim.x != 128)
        __trap();
    __nv_bfloat16 *qs = (__nv_bfloat16 *)ftk_smem; /* [64][P] */
    __nv_bfloat16 *dys = qs + FTK_MMA_Q * P;        /* [64][P] */
    __nv_bfloat16 *ks = dys + FTK_MMA_Q * P;        /* [64][P] */
    __nv_bfloat16 *vs = ks + FTK_MMA_K * P;         /* [64][P] */
    float *lse = (float *)(vs + FTK_MMA_K * P);     /* [64] */
    float *delta = lse + FTK_MMA_Q;                 /* [64] */
    int *qdoc = (int *)(delta + FTK_MMA_Q);
    int *kdoc = qdoc + FTK_MMA_Q;
    long long ntiles = (g.s + FTK_MMA_Q - 1) / FTK_MMA_Q;
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (long long tt = blockIdx.x; tt < ntiles; tt += gridDim.x) {
                long long qt = ntiles - 1 - tt, i0 = qt * FTK_MMA_Q, hk = h / g.group;
                const int *doc = (const int *)a.in[3] + b * g.s;
                __syncthreads();
                ftk_mma_tile_load<D>(qs, a.in[0], g, g.hq, b, i0, h, FTK_MMA_Q);
                ftk_mma_tile_load<D>(dys, a.in[4], g, g.hq, b, i0, h, FTK_MMA_Q);
                for (int r = threadIdx.x; r < FTK_MMA_Q; r += blockDim.x) {
                    long long i = i0 + r, at = ((b * g.s + i) * g.hq + h) * 2;
                    lse[r] = i < g.s ? ftk_ld<TS>(a.in[5], at) : 0.0f;
                    delta[r] = i < g.s ? ftk_ld<TS>(a.in[5], at + 1) : 0.0f;
                }
                ftk_mma_doc_load(qdoc, doc, g.s, i0, FTK_MMA_Q);
                int qlo, qhi;
                ftk_mma_doc_range(doc, g.s, i0, FTK_MMA_Q, &qlo, &qhi);
                float dq[D / 8][4];
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
                    dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.0f;
                for (long long kt = 0; kt <= qt; kt++) {
                    long long j0 = kt * FTK_MMA_K;
                    int klo, khi;
                    ftk_mma_doc_range(doc, g.s, j0, FTK_MMA_K, &klo, &khi);
                    if (khi < qlo || klo > qhi)
                        continue;
                    __syncthreads();
                    ftk_mma_tile_load<D>(ks, a.in[1], g, g.hkv, b, j0, hk, FTK_MMA_K);
                    ftk_mma_tile_load<D>(vs, a.in[2], g, g.hkv, b, j0, hk, FTK_MMA_K);
                    ftk_mma_doc_load(kdoc, doc, g.s, j0, FTK_MMA_K);
                    __syncthreads();
                    float s[8][4], dp[8][4];
#pragma unroll
                    for (int nt = 0; nt < 8; nt++)
#pragma unroll
                        for (int c = 0; c < 4; c++)
                            s[nt][c] = dp[nt][c] = 0.0f;
                    ftk_mma_abt<D>(s, qs + w * 16 * P, ks, P);
                    ftk_mma_abt<D>(dp, dys + w * 16 * P, vs, P);
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        int ri = w * 16 + gr + 8 * r;
                        long long i = i0 + ri;
                        float lr = lse[ri], dr = delta[ri];
#pragma unroll
                        for (int nt = 0; nt < 8; nt++)
#pragma unroll
                            for (int e = 0; e < 2; e++) {
                                int jl = nt * 8 + 2 * t4 + e;
                                bool ok = i < g.s && j0 + jl <= i && kdoc[jl] == qdoc[ri];
                                float pv = ok ? expf(g.scale * s[nt][2 * r + e] - lr) : 0.0f;
                                s[nt][2 * r + e] = ok ? g.scale * pv * (dp[nt][2 * r + e] - dr) : 0.0f;
                            }
                    }
                    ftk_mma_fx<D>(dq, s, ks, P);
                }
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    long long i = i0 + w * 16 + gr + 8 * r;
                    if (i >= g.s)
                        continue;
                    long long orow = ftk_att_row(g, g.hq, b, i, h);
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            ftk_st<TO>(a.out, orow + dt * 8 + 2 * t4 + e, dq[dt][2 * r + e]);
                }
            }
}

/* dk (ip[0] = 1) or dv (2) on the tensor cores: a block of 2 warps per 32 keys of one kv
 * head; per query tile of 64 (from the one holding the block's first key on, for every
 * query head of the group) Sᵀ = K Qᵀ, pᵀ = exp(scale Sᵀ - lse); dv += pᵀ dY, or with
 * dPᵀ = V dYᵀ, dk += scale pᵀ (dPᵀ - delta) Q. */
template <int D, class TS, class TO> __device__ __forceinline__ void attn_mma_bwd_kv(const ftk_args_t &a)
{
    const int P = D + 8;
    ftk_attn_geo g = ftk_attn_geo_of(a);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    if (blockDim.x != 64)
        __trap();
    bool want_dk = a.ip[0] == 1;
    __nv_bfloat16 *ks = (__nv_bfloat16 *)ftk_smem; /* [32][P] own keys */
    __nv_bfloat16 *vs = ks + FTK_MMA_KV * P;        /* [32][P] their values (dk) */
    __nv_bfloat16 *qs = vs + FTK_MMA_KV * P;        /* [64][P] */
    __nv_bfloat16 *dys = qs + FTK_MMA_Q * P;        /* [64][P] */
    float *lse = (float *)(dys + FTK_MMA_Q * P);    /* [64] */
    float *delta = lse + FTK_MMA_Q;                 /* [64] */
    int *qdoc = (int *)(delta + FTK_MMA_Q);         /* [64] */
    int *kdoc = qdoc + FTK_MMA_Q;                   /* [32] */
    long long nkt = (g.s + FTK_MMA_KV - 1) / FTK_MMA_KV, nqt = (g.s + FTK_MMA_Q - 1) / FTK_MMA_Q;
    for (long long b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (long long hk = blockIdx.y; hk < g.hkv; hk += gridDim.y)
            for (long long kt = blockIdx.x; kt < nkt; kt += gridDim.x) {
                long long j0 = kt * FTK_MMA_KV;
                const int *doc = (const int *)a.in[3] + b * g.s;
                __syncthreads();
                ftk_mma_tile_load<D>(ks, a.in[1], g, g.hkv, b, j0, hk, FTK_MMA_KV);
                if (want_dk)
                    ftk_mma_tile_load<D>(vs, a.in[2], g, g.hkv, b, j0, hk, FTK_MMA_KV);
                ftk_mma_doc_load(kdoc, doc, g.s, j0, FTK_MMA_KV);
                int klo, khi;
                ftk_mma_doc_range(doc, g.s, j0, FTK_MMA_KV, &klo, &khi);
                float acc[D / 8][4];
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
                    acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;
                for (long long hh = 0; hh < g.group; hh++) {
                    long long h = hk * g.group + hh;
                    for (long long qt = j0 / FTK_MMA_Q; qt < nqt; qt++) {
                        long long i0 = qt * FTK_MMA_Q;
                        int qlo, qhi;
                        ftk_mma_doc_range(doc, g.s, i0, FTK_MMA_Q, &qlo, &qhi);
                        if (qhi < klo || qlo > khi)
                            continue;
                        __syncthreads();
                        ftk_mma_tile_load<D>(qs, a.in[0], g, g.hq, b, i0, h, FTK_MMA_Q);
                        ftk_mma_tile_load<D>(dys, a.in[4], g, g.hq, b, i0, h, FTK_MMA_Q);
                        for (int r = threadIdx.x; r < FTK_MMA_Q; r += blockDim.x) {
                            long long i = i0 + r, at = ((b * g.s + i) * g.hq + h) * 2;
                            lse[r] = i < g.s ? ftk_ld<TS>(a.in[5], at) : 0.0f;
                            delta[r] = i < g.s ? ftk_ld<TS>(a.in[5], at + 1) : 0.0f;
                        }
                        ftk_mma_doc_load(qdoc, doc, g.s, i0, FTK_MMA_Q);
                        __syncthreads();
                        float s[8][4], dp[8][4];
#pragma unroll
                        for (int nt = 0; nt < 8; nt++)
#pragma unroll
                            for (int c = 0; c < 4; c++)
                                s[nt][c] = dp[nt][c] = 0.0f;
                        ftk_mma_abt<D>(s, ks + w * 16 * P, qs, P);
                        if (want_dk)
                            ftk_mma_abt<D>(dp, vs + w * 16 * P, dys, P);
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            int rj = w * 16 + gr + 8 * r;
                            long long j = j0 + rj;
#pragma unroll
                            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                                for (int e = 0; e < 2; e++) {
                                    int il = nt * 8 + 2 * t4 + e;
                                    long long i = i0 + il;
                                    bool ok = i < g.s && j <= i && kdoc[rj] == qdoc[il];
                                    float pv = ok ? expf(g.scale * s[nt][2 * r + e] - lse[il]) : 0.0f;
                                    s[nt][2 * r + e] =
                                        !ok ? 0.0f : want_dk ? g.scale * pv * (dp[nt][2 * r + e] - delta[il]) : pv;
                                }
                        }
                        ftk_mma_fx<D>(acc, s, want_dk ? qs : dys, P);
                    }
                }
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    long long j = j0 + w * 16 + gr + 8 * r;
                    if (j >= g.s)
                        continue;
                    long long orow = ftk_att_row(g, g.hkv, b, j, hk);
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            ftk_st<TO>(a.out, orow + dt * 8 + 2 * t4 + e, acc[dt][2 * r + e]);
                }
            }
}

} /* namespace ftk */

/* The tensor-core path runs when every matrix operand is bf16 and Dh is 64 or 128;
 * codegen/emit.c (attn_mma) decides the launch shape by the same rule. */
template <class TQ, class TK, class TV, class TY> struct ftk_att_mma {
    static const bool v = ftk_same<TQ, __nv_bfloat16>::v && ftk_same<TK, __nv_bfloat16>::v &&
                          ftk_same<TV, __nv_bfloat16>::v && ftk_same<TY, __nv_bfloat16>::v;
};

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
    if constexpr (ftk_att_mma<TQ, TK, TV, TQ>::v) {
        if (a.shape[0][3] == 64)
            return attn_mma_fwd<64, true, TO>(a, 3);
        if (a.shape[0][3] == 128)
            return attn_mma_fwd<128, true, TO>(a, 3);
    }
    FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_FWD_CALL);
}
#undef FTK_ATT_FWD_CALL

/* (q, k, doc) -> lse [B,S,Hq,1] */
#define FTK_ATT_LSE_CALL(nc) attn_fwd_tiles<nc, false, TQ, TK, TK, TO>(a, 2)
template <class TQ, class TK, class TD, class TO> __device__ __forceinline__ void attn_lse(const ftk_args_t &a)
{
    if constexpr (ftk_att_mma<TQ, TK, TQ, TQ>::v) {
        if (a.shape[0][3] == 64)
            return attn_mma_fwd<64, false, TO>(a, 2);
        if (a.shape[0][3] == 128)
            return attn_mma_fwd<128, false, TO>(a, 2);
    }
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
    if constexpr (ftk_att_mma<TQ, TK, TV, TY>::v) {
        long long dh = a.shape[0][3];
        if (dh == 64 || dh == 128) {
            if (a.ip[0] == 0)
                return dh == 64 ? attn_mma_bwd_q<64, TS, TO>(a) : attn_mma_bwd_q<128, TS, TO>(a);
            return dh == 64 ? attn_mma_bwd_kv<64, TS, TO>(a) : attn_mma_bwd_kv<128, TS, TO>(a);
        }
    }
    if (a.ip[0] == 0)
        FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_BQ_CALL);
    else
        FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_BKV_CALL);
}
#undef FTK_ATT_BQ_CALL
#undef FTK_ATT_BKV_CALL

/* (a[..., D]) -> [..., 1]: a warp per row, lanes over the row in double, a butterfly across
 * the warp (fixed order: deterministic). */
template <class TA, class TO> __device__ __forceinline__ void rowsum(const ftk_args_t &a)
{
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (long long r = (long long)blockIdx.x * nw + w; r < rows; r += (long long)gridDim.x * nw) {
        const TA *x = (const TA *)a.in[0] + r * d;
        double s = 0.0;
        for (long long j = lane; j < d; j += 32)
            s += ftk_d(x[j]);
        s = ftk_warp_sum(s);
        if (lane == 0)
            ftk_std<TO>(a.out, r, s);
    }
}

} /* namespace ftk */
