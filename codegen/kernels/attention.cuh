/* attention.cuh — causal, document-masked attention with grouped key/value heads: the
 * forward, the softmax row statistics (attn_lse), the row sum that gives the backward its
 * delta (rowsum), and the backward from those statistics. Tiled, O(S^2 Dh) work, no S x S
 * buffer. Two paths: fp32 CUDA-core arithmetic for every storage type and Dh <= 256, and,
 * where q, k, v (and dy) are bf16 and Dh is 64 or 128, the tensor cores (mma.sync bf16 ->
 * fp32, FlashAttention-2's scheme; the section "the tensor-core path" below describes its
 * kernels, launch and shared memory).
 * defines: ftk_attn_geo, ftk::attn, ftk::attn_lse, ftk::attn_bwd (ftk::attn_bwd_q,
 *          ftk::attn_bwd_kv; ftk::attn_mma_fwd, ftk::attn_mma_bwd_q, ftk::attn_mma_bwd_kv),
 *          ftk::rowsum
 * launch:  (tensor cores) every kernel: FTK_ATT_MMA_THREADS (256) threads per block of
 *          FTK_ATT_MMA_OWN (128) own rows; grid (ceil(S / 128), Hq, B), for dk and dv
 *          (ceil(S / 128), Hkv, B). The entry points' launch bounds cover both paths.
 *          (CUDA cores) attn, attn_lse and attn_bwd with ip[0] = 0 (dq): grid (ceil(S / T),
 *          Hq, B), one block of FTK_ATT_THREADS (128) threads per tile of T = FTK_ATT_TILE
 *          (32) query rows of one head; attn_bwd with ip[0] = 1 (dk) or 2 (dv): grid
 *          (ceil(S / T), Hkv, B), one block per tile of T keys of one kv head. rowsum: 256
 *          threads, a warp per row, grid ceil(rows / 8).
 * shared:  (CUDA cores) with pitch P = round_up(Dh, 4) + 4 floats per tile row: attn 3 T P
 *          floats + 2 T ints; attn_lse 2 T P floats + 2 T ints; attn_bwd 4 T P + 2 T floats +
 *          2 T ints. (tensor cores) see that section. codegen/emit.c computes the same
 *          sizes (attn_smem, attn_mma_smem).
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

/* ---- the tensor-core path: bf16 q, k, v (and dy), head dim 64 or 128 ----
 *
 * FlashAttention-2's scheme on mma.sync.aligned.m16n8k16 (bf16 operands, fp32 accumulators;
 * sm_80 and newer). A block of FTK_ATT_MMA_THREADS (256: 8 warps) owns BM = FTK_ATT_MMA_OWN
 * (128) rows, 16 per warp: query rows (attn, attn_lse, dq) or keys (dk, dv). It streams the
 * other side in tiles of BN = FTK_ATT_MMA_TILE (64) rows through shared memory: key tiles
 * (with their values) for the query-major kernels, query tiles (with dy and the row
 * statistics) for dk and dv, head after head of the kv head's query group. 128 own rows
 * halve the L2 traffic per flop against 64; 16 rows per warp keep every warp's own
 * fragments, accumulators and one score tile in registers (ptxas gives the attn and attn_bwd
 * entry points up to 255 registers, so one block of 8 warps per SM; attn_lse's fit 128, two
 * blocks). The price of 16 rows: each B fragment read from shared memory feeds one mma, so
 * shared-memory bandwidth, not the tensor cores, bounds every kernel at about half of
 * mma.sync's peak; 32 rows per warp would lift that but not fit the registers.
 *
 *   attn, attn_lse  grid (ceil(S / 128), Hq, B). Q fragments in registers; per key tile S = Q Kᵀ,
 *                   online softmax in base 2 (scores times scale·log2 e, exp2), P converted
 *                   from the accumulators straight into bf16 A fragments, O += P V.
 *                   attn_lse: the same without V and O.
 *   dq              grid (ceil(S / 128), Hq, B). Q and dY fragments in registers; per key tile,
 *                   in chunks of 32 keys: S = Q Kᵀ, dP = dY Vᵀ, dS = P (dP - delta) with
 *                   P = exp2(S scale log2 e - lse log2 e); dq += dS K; dq scaled at the end.
 *   dk, dv          grid (ceil(S / 128), Hkv, B), key tiles in order (the longest work first).
 *                   K (and for dk V) fragments in registers; per query tile, in chunks of 32
 *                   queries: Sᵀ = K Qᵀ, Pᵀ; dv += Pᵀ dY; or dPᵀ = V dYᵀ, dSᵀ = Pᵀ (dPᵀ - delta),
 *                   dk += dSᵀ Q (dk scaled at the end). Everything stays in registers: the
 *                   key-major products need no transposes, only ldmatrix's .trans for B.
 *
 * Query-major grids run the query tiles in reverse (the longest rows first within a head).
 * Each output element is summed by one lane, in one fixed order of tiles and of mma k-steps:
 * deterministic, no atomics.
 *
 * Shared memory: bf16 tiles at a pitch of Dh + 8 elements (16 bytes of padding, so the 8 rows
 * of an ldmatrix phase or of a 128-byte cp.async phase fall on distinct banks). Two stages of
 * the streamed tile (K[, V]; or Q, dY and (lse, delta) float pairs), filled by cp.async (16
 * bytes a thread; rows past S zero-filled) one tile ahead of the compute: double buffering,
 * one barrier per tile. The own tile is read into registers once; where it fits in stage 1's
 * space (attn, attn_lse, dv) it is loaded beside the first streamed tile and lives there, else
 * (dq: Q and dY, dk: K and V) it is loaded first at offset 0 and the stages follow. Last, an
 * int2 per streamed tile of the sequence: the smallest and largest document id of its rows,
 * computed once per block. emit.c's attn_mma_smem follows the same rules.
 *
 * Masks: a tile pair is skipped where the two document-id ranges do not meet (exact for any
 * ids; packed sequences skip their cross-document tiles), runs mask-free where every key
 * precedes every query and both tiles hold one and the same document, and else applies the
 * element mask (j <= i, i < S, same document); rows past S never reach an output.
 *
 * Fragment layouts (PTX ISA, m16n8k16, g = lane / 4, t = lane % 4): A a0 (row g, cols 2t,
 * 2t+1), a1 (row g+8), a2 (row g, cols 8+2t..), a3 (row g+8, cols 8+2t..); B b0 (rows 2t,
 * 2t+1, col g), b1 (rows 8+2t..); C c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8). The C
 * fragments of two adjacent 8-column tiles are the A fragment of the next product over those
 * 16 columns, so probabilities never leave registers. */

#define FTK_MMA_WARPS (FTK_ATT_MMA_THREADS / 32)
#define FTK_MMA_BM FTK_ATT_MMA_OWN  /* own rows per block, 16 per warp */
#define FTK_MMA_BN FTK_ATT_MMA_TILE /* rows per streamed tile */
#define FTK_LOG2E 1.4426950408889634f
#define FTK_LN2 0.6931471805599453f
static_assert(FTK_MMA_BM == 16 * FTK_MMA_WARPS, "a warp owns 16 rows");
static_assert(FTK_MMA_BM == 2 * FTK_MMA_BN, "an own tile is two streamed tiles (document ranges, the diagonal)");
static_assert(FTK_MMA_BN % 32 == 0, "the backward works in chunks of 32 streamed rows");

template <class A, class B> struct ftk_same {
    static const bool v = false;
};
template <class A> struct ftk_same<A, A> {
    static const bool v = true;
};

/* Byte sizes of the bf16 tiles at head dim D (see the shared-memory paragraph above). */
template <int D> struct ftk_mma_sz {
    static constexpr int P = D + 8;                 /* row pitch in elements */
    static constexpr int TILE = FTK_MMA_BN * P * 2; /* one streamed tile */
    static constexpr int OWN = FTK_MMA_BM * P * 2;  /* one own tile */
    static constexpr int STATS = FTK_MMA_BN * 8;    /* (lse, delta) pairs of a streamed tile */
};

__device__ __host__ constexpr int ftk_cmax(int x, int y) { return x > y ? x : y; }
/* Offset of the own tiles, and of the document ranges, for stages of `stage` bytes and own
 * tiles of `own` bytes, loaded beside stage 0 (`beside`) or before the stages. */
__device__ __host__ constexpr int ftk_mma_own_at(int stage, bool beside) { return beside ? stage : 0; }
__device__ __host__ constexpr int ftk_mma_rng_at(int stage, int own, bool beside)
{
    return ((beside ? stage + ftk_cmax(stage, own) : ftk_cmax(2 * stage, own)) + 15) / 16 * 16;
}

/* The extents the tensor-core kernels use, as int (S, heads and batch fit; element offsets
 * are formed in 64 bits by ftk_mma_row). */
struct ftk_mma_geo {
    int nb, s, hq, hkv, group;
    float scale;
};

__device__ __forceinline__ ftk_mma_geo ftk_mma_geo_of(const ftk_args_t &a)
{
    ftk_mma_geo g;
    g.nb = (int)a.shape[0][0];
    g.s = (int)a.shape[0][1];
    g.hq = (int)a.shape[0][2];
    g.hkv = (int)a.shape[1][2];
    g.group = g.hq / g.hkv;
    g.scale = (float)a.fp[0];
    return g;
}

/* Element offset of row (b, i) at head h of a [B,S,nh,D] tensor. */
template <int D> __device__ __forceinline__ long long ftk_mma_row(const ftk_mma_geo &g, int nh, int b, int i, int h)
{
    return ((long long)(b * g.s + i) * nh + h) * D;
}

__device__ __forceinline__ unsigned ftk_sa(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }

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

/* c += A B for one m16n8k16 tile. */
__device__ __forceinline__ void ftk_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
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

/* The A fragment of the product over 16 columns 16kk .. 16kk + 15 of a score tile held as C
 * fragments f[nt][4] (8 columns each), rounded to bf16. */
__device__ __forceinline__ void ftk_c2a(unsigned a[4], const float f0[4], const float f1[4])
{
    a[0] = ftk_pack_bf16(f0[0], f0[1]);
    a[1] = ftk_pack_bf16(f0[2], f0[3]);
    a[2] = ftk_pack_bf16(f1[0], f1[1]);
    a[3] = ftk_pack_bf16(f1[2], f1[3]);
}

/* N rows r0 .. r0 + N - 1 (head h of a [B,S,nh,D] bf16 tensor) into shared memory at dst
 * (pitch D + 8) by cp.async; rows past the sequence zero. Whole block; not committed. */
template <int D, int N>
__device__ __forceinline__ void ftk_mma_cp_rows(unsigned char *dst, const void *src, const ftk_mma_geo &g,
                                                int nh, int b, int r0, int h)
{
    constexpr int CH = D / 8; /* 16-byte chunks per row */
    static_assert(N * CH % FTK_ATT_MMA_THREADS == 0, "whole passes of the block");
    const __nv_bfloat16 *base = (const __nv_bfloat16 *)src;
    unsigned d0 = ftk_sa(dst);
#pragma unroll
    for (int k = 0; k < N * CH / FTK_ATT_MMA_THREADS; k++) {
        int e = threadIdx.x + k * FTK_ATT_MMA_THREADS, r = e / CH, c = e % CH;
        bool ok = r0 + r < g.s;
        const __nv_bfloat16 *p = base + (ok ? ftk_mma_row<D>(g, nh, b, r0 + r, h) : 0) + c * 8;
        ftk_cp16(d0 + (unsigned)((r * (D + 8) + c * 8) * 2), p, ok);
    }
}

/* The (lse, delta) pairs of query rows i0 .. i0 + BN - 1 at head h into dst[BN] (zeros past
 * the sequence): cp.async for f32 statistics, plain loads otherwise. Not committed. */
template <class TS>
__device__ __forceinline__ void ftk_mma_cp_stats(float2 *dst, const void *stats, const ftk_mma_geo &g, int b,
                                                 int i0, int h)
{
    for (int r = threadIdx.x; r < FTK_MMA_BN; r += FTK_ATT_MMA_THREADS) {
        int i = i0 + r;
        long long at = i < g.s ? ((long long)(b * g.s + i) * g.hq + h) * 2 : 0;
        if constexpr (ftk_same<TS, float>::v)
            ftk_cp8(ftk_sa(dst + r), (const float *)stats + at, i < g.s);
        else
            dst[r] = i < g.s ? make_float2(ftk_ld<TS>(stats, at), ftk_ld<TS>(stats, at + 1)) : make_float2(0.0f, 0.0f);
    }
}

/* rng[t] = (smallest, largest) document id of the rows of streamed tile t inside the
 * sequence, for t = t0 .. t1; a warp per tile, four tiles' loads in flight. No barrier. */
__device__ __forceinline__ void ftk_mma_ranges(int2 *rng, const int *doc, int s, int t0, int t1)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int t = t0 + w; t <= t1; t += 4 * FTK_MMA_WARPS) {
        int v[4][2];
#pragma unroll
        for (int u = 0; u < 4; u++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                int r = (t + u * FTK_MMA_WARPS) * FTK_MMA_BN + hf * 32 + lane;
                v[u][hf] = t + u * FTK_MMA_WARPS <= t1 && r < s ? doc[r] : 0;
            }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int tu = t + u * FTK_MMA_WARPS, r = tu * FTK_MMA_BN + lane;
            int lo = 0x7fffffff, hi = (int)0x80000000;
            if (r < s)
                lo = hi = v[u][0];
            if (r + 32 < s) {
                lo = min(lo, v[u][1]);
                hi = max(hi, v[u][1]);
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

/* The document range of the own tile: streamed tiles t and t + 1 (where it exists). */
__device__ __forceinline__ int2 ftk_mma_own_range(const int2 *rng, int t, int ntiles)
{
    int2 r = rng[t];
    if (t + 1 < ntiles)
        r = make_int2(min(r.x, rng[t + 1].x), max(r.y, rng[t + 1].y));
    return r;
}

/* The first streamed tile t >= from (up to t1) whose document range meets own's; t1 + 1 if
 * none. Reads shared memory only: the same answer in every thread. */
__device__ __forceinline__ int ftk_mma_next(const int2 *rng, int2 own, int from, int t1)
{
    int t = from;
    while (t <= t1 && (rng[t].y < own.x || rng[t].x > own.y))
        t++;
    return t;
}

/* Whether streamed tile t and the own tile hold one and the same document. */
__device__ __forceinline__ bool ftk_mma_one_doc(const int2 *rng, int2 own, int t)
{
    return own.x == own.y && rng[t].x == own.x && rng[t].y == own.x;
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

namespace ftk {

/* One key tile of the forward for the warp's 16 query rows: S = Q Kᵀ (8 column tiles), the
 * online-softmax update of m, l (base 2) and, WITH_V, O += P V. ir: the lane's first query row
 * (the second is ir + 8); j0: the tile's first key; MASK: apply the element mask. */
template <int D, bool WITH_V, bool MASK>
__device__ __forceinline__ void attn_mma_fwd_tile(const unsigned qf[D / 16][4], float o[D / 8][4], float m[2],
                                                  float l[2], const __nv_bfloat16 *ks, const __nv_bfloat16 *vs,
                                                  float sl, int ir, int j0, int s, const int *doc,
                                                  const int qd[2])
{
    constexpr int P = D + 8, NT = FTK_MMA_BN / 8;
    const int t4 = threadIdx.x & 3;
    float sc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            unsigned b[4];
            ftk_ldsm_bt(b, ks, P, np * 16, kk * 16);
            ftk_mma(sc[2 * np], qf[kk], b[0], b[1]);
            ftk_mma(sc[2 * np + 1], qf[kk], b[2], b[3]);
        }
    int kd[NT][2];
    if (MASK) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int j = j0 + nt * 8 + 2 * t4 + e;
                kd[nt][e] = j < s ? doc[j] : 0;
            }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int i = ir + 8 * r;
        float mx = -FTK_INF;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float x = sc[nt][2 * r + e] * sl;
                if (MASK) {
                    int j = j0 + nt * 8 + 2 * t4 + e;
                    bool ok = j <= i && i < s && kd[nt][e] == qd[r];
                    x = ok ? x : -FTK_INF;
                }
                sc[nt][2 * r + e] = x;
                mx = fmaxf(mx, x);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float mn = fmaxf(m[r], mx);
        float base = mn == -FTK_INF ? 0.0f : mn; /* a row with nothing visible yet: p = 0, not NaN */
        float corr = ftk_ex2(m[r] - base), sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float p = ftk_ex2(sc[nt][2 * r + e] - base);
                sc[nt][2 * r + e] = p;
                sum += p;
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
    if (WITH_V) {
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            unsigned pa[4];
            ftk_c2a(pa, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 16; dn++) {
                unsigned b[4];
                ftk_ldsm_b(b, vs, P, kk * 16, dn * 16);
                ftk_mma(o[2 * dn], pa, b[0], b[1]);
                ftk_mma(o[2 * dn + 1], pa, b[2], b[3]);
            }
        }
    }
}

/* The forward (WITH_V: o) or attn_lse on the tensor cores: a block per 128 query rows of one
 * head, the key tiles from 0 to the diagonal. The four lanes of a row each hold a quarter of
 * its columns: m is shared (quad max), l summed over the quad at the end, fixed order. */
template <int D, bool WITH_V, class TO> __device__ __forceinline__ void attn_mma_fwd(const ftk_args_t &a, int doc_src)
{
    typedef ftk_mma_sz<D> Z;
    constexpr int P = Z::P, BM = FTK_MMA_BM, BN = FTK_MMA_BN;
    constexpr int STAGE = (WITH_V ? 2 : 1) * Z::TILE, OWN_AT = ftk_mma_own_at(STAGE, true);
    constexpr int RNG_AT = ftk_mma_rng_at(STAGE, Z::OWN, true);
    ftk_mma_geo g = ftk_mma_geo_of(a);
    if (blockDim.x != FTK_ATT_MMA_THREADS)
        __trap(); /* the row split assumes it; the launch record gives exactly this */
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    unsigned char *sm = ftk_smem;
    int2 *rng = (int2 *)(sm + RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    const int ntq = (g.s + BM - 1) / BM, ntk = (g.s + BN - 1) / BN;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (int tt = blockIdx.x; tt < ntq; tt += gridDim.x) {
                int qt = ntq - 1 - tt, i0 = qt * BM, hk = h / g.group;
                int tlast = min(ntk - 1, (i0 + BM - 1) / BN), ir = i0 + w * 16 + gr;
                const int *doc = (const int *)a.in[doc_src] + (long long)b * g.s;
                __syncthreads(); /* the previous work's readers are done */
                ftk_mma_cp_rows<D, BM>(sm + OWN_AT, a.in[0], g, g.hq, b, i0, h);
                ftk_mma_ranges(rng, doc, g.s, 0, tlast);
                int qd[2] = {ir < g.s ? doc[ir] : 0, ir + 8 < g.s ? doc[ir + 8] : 0};
                __syncthreads();
                int2 own = ftk_mma_own_range(rng, i0 / BN, ntk);
                int t = ftk_mma_next(rng, own, 0, tlast);
                if (t <= tlast) {
                    ftk_mma_cp_rows<D, BN>(sm, a.in[1], g, g.hkv, b, t * BN, hk);
                    if (WITH_V)
                        ftk_mma_cp_rows<D, BN>(sm + Z::TILE, a.in[2], g, g.hkv, b, t * BN, hk);
                }
                ftk_cp_commit();
                ftk_cp_wait_all();
                __syncthreads();
                unsigned qf[D / 16][4];
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++)
                    ftk_ldsm_a(qf[kk], (const __nv_bfloat16 *)(sm + OWN_AT) + w * 16 * P, P, kk * 16);
                __syncthreads(); /* Q's space is stage 1's */
                float o[D / 8][4], m[2] = {-FTK_INF, -FTK_INF}, l[2] = {0.0f, 0.0f};
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
                    o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
                int stage = 0;
                while (t <= tlast) {
                    int tn = ftk_mma_next(rng, own, t + 1, tlast);
                    unsigned char *nx = sm + (stage ^ 1) * STAGE;
                    if (tn <= tlast) { /* the next tile loads while this one computes */
                        ftk_mma_cp_rows<D, BN>(nx, a.in[1], g, g.hkv, b, tn * BN, hk);
                        if (WITH_V)
                            ftk_mma_cp_rows<D, BN>(nx + Z::TILE, a.in[2], g, g.hkv, b, tn * BN, hk);
                    }
                    ftk_cp_commit();
                    const __nv_bfloat16 *ks = (const __nv_bfloat16 *)(sm + stage * STAGE), *vs = ks + BN * P;
                    if (t * BN + BN - 1 <= i0 && i0 + BM <= g.s && ftk_mma_one_doc(rng, own, t))
                        attn_mma_fwd_tile<D, WITH_V, false>(qf, o, m, l, ks, vs, sl, ir, t * BN, g.s, doc, qd);
                    else
                        attn_mma_fwd_tile<D, WITH_V, true>(qf, o, m, l, ks, vs, sl, ir, t * BN, g.s, doc, qd);
                    ftk_cp_wait_all();
                    __syncthreads();
                    t = tn;
                    stage ^= 1;
                }
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
                    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
                    int i = ir + 8 * r;
                    if (i >= g.s)
                        continue;
                    if (WITH_V) {
                        long long orow = ftk_mma_row<D>(g, g.hq, b, i, h);
                        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
                        if (a.in[4] && t4 == 0) /* attn's optional lse output (passes/fuse.c) */
                            ((float *)a.in[4])[(long long)(b * g.s + i) * g.hq + h] = m[r] * FTK_LN2 + logf(l[r]);
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
                            ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
                    } else if (t4 == 0) {
                        ftk_st<TO>(a.out, (long long)(b * g.s + i) * g.hq + h, m[r] * FTK_LN2 + logf(l[r]));
                    }
                }
            }
}

/* One key tile of dq for the warp's 16 query rows, in chunks of 32 keys: S = Q Kᵀ, dP = dY Vᵀ,
 * dS = P (dP - delta), dq += dS K (unscaled). lse2: lse times log2 e of the lane's rows. */
template <int D, bool MASK>
__device__ __forceinline__ void attn_mma_dq_tile(const unsigned qf[D / 16][4], const unsigned yf[D / 16][4],
                                                 float dq[D / 8][4], const __nv_bfloat16 *ks,
                                                 const __nv_bfloat16 *vs, float sl, const float lse2[2],
                                                 const float dl[2], int ir, int j0, int s,
                                                 const int *doc, const int qd[2])
{
    constexpr int P = D + 8;
    const int t4 = threadIdx.x & 3;
#pragma unroll
    for (int c = 0; c < FTK_MMA_BN / 32; c++) {
        float sc[4][4], dp[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                sc[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int np = 0; np < 2; np++) {
                unsigned b[4];
                ftk_ldsm_bt(b, ks, P, c * 32 + np * 16, kk * 16);
                ftk_mma(sc[2 * np], qf[kk], b[0], b[1]);
                ftk_mma(sc[2 * np + 1], qf[kk], b[2], b[3]);
                ftk_ldsm_bt(b, vs, P, c * 32 + np * 16, kk * 16);
                ftk_mma(dp[2 * np], yf[kk], b[0], b[1]);
                ftk_mma(dp[2 * np + 1], yf[kk], b[2], b[3]);
            }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int j = j0 + c * 32 + nt * 8 + 2 * t4 + e;
                int kd = 0;
                if (MASK)
                    kd = j < s ? doc[j] : 0;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float p = ftk_ex2(fmaf(sc[nt][2 * r + e], sl, -lse2[r]));
                    float f = p * (dp[nt][2 * r + e] - dl[r]);
                    if (MASK) {
                        int i = ir + 8 * r;
                        f = j <= i && i < s && kd == qd[r] ? f : 0.0f;
                    }
                    sc[nt][2 * r + e] = f;
                }
            }
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            unsigned fa[4];
            ftk_c2a(fa, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 16; dn++) {
                unsigned b[4];
                ftk_ldsm_b(b, ks, P, c * 32 + kk * 16, dn * 16);
                ftk_mma(dq[2 * dn], fa, b[0], b[1]);
                ftk_mma(dq[2 * dn + 1], fa, b[2], b[3]);
            }
        }
    }
}

/* dq on the tensor cores: a block per 128 query rows of one head; Q and dY (loaded first, at
 * offset 0) into registers, then the key tiles with their values up to the diagonal. */
template <int D, class TS, class TO> __device__ __forceinline__ void attn_mma_bwd_q(const ftk_args_t &a)
{
    typedef ftk_mma_sz<D> Z;
    constexpr int P = Z::P, BM = FTK_MMA_BM, BN = FTK_MMA_BN;
    constexpr int STAGE = 2 * Z::TILE, OWN_AT = ftk_mma_own_at(STAGE, false);
    constexpr int RNG_AT = ftk_mma_rng_at(STAGE, 2 * Z::OWN, false);
    ftk_mma_geo g = ftk_mma_geo_of(a);
    if (blockDim.x != FTK_ATT_MMA_THREADS)
        __trap();
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    unsigned char *sm = ftk_smem;
    int2 *rng = (int2 *)(sm + RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    const int ntq = (g.s + BM - 1) / BM, ntk = (g.s + BN - 1) / BN;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (int tt = blockIdx.x; tt < ntq; tt += gridDim.x) {
                int qt = ntq - 1 - tt, i0 = qt * BM, hk = h / g.group;
                int tlast = min(ntk - 1, (i0 + BM - 1) / BN), ir = i0 + w * 16 + gr;
                const int *doc = (const int *)a.in[3] + (long long)b * g.s;
                __syncthreads();
                ftk_mma_cp_rows<D, BM>(sm + OWN_AT, a.in[0], g, g.hq, b, i0, h);
                ftk_mma_cp_rows<D, BM>(sm + OWN_AT + Z::OWN, a.in[4], g, g.hq, b, i0, h);
                ftk_cp_commit();
                ftk_mma_ranges(rng, doc, g.s, 0, tlast);
                int qd[2];
                float lse2[2], dl[2];
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int i = ir + 8 * r;
                    long long at = ((long long)(b * g.s + i) * g.hq + h) * 2;
                    qd[r] = i < g.s ? doc[i] : 0;
                    lse2[r] = i < g.s ? ftk_ld<TS>(a.in[5], at) * FTK_LOG2E : 0.0f;
                    dl[r] = i < g.s ? ftk_ld<TS>(a.in[5], at + 1) : 0.0f;
                }
                ftk_cp_wait_all();
                __syncthreads();
                unsigned qf[D / 16][4], yf[D / 16][4];
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++) {
                    ftk_ldsm_a(qf[kk], (const __nv_bfloat16 *)(sm + OWN_AT) + w * 16 * P, P, kk * 16);
                    ftk_ldsm_a(yf[kk], (const __nv_bfloat16 *)(sm + OWN_AT + Z::OWN) + w * 16 * P, P, kk * 16);
                }
                __syncthreads(); /* the own tiles' space is the stages' */
                int2 own = ftk_mma_own_range(rng, i0 / BN, ntk);
                int t = ftk_mma_next(rng, own, 0, tlast);
                if (t <= tlast) {
                    ftk_mma_cp_rows<D, BN>(sm, a.in[1], g, g.hkv, b, t * BN, hk);
                    ftk_mma_cp_rows<D, BN>(sm + Z::TILE, a.in[2], g, g.hkv, b, t * BN, hk);
                }
                ftk_cp_commit();
                ftk_cp_wait_all();
                __syncthreads();
                float dq[D / 8][4];
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
                    dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.0f;
                int stage = 0;
                while (t <= tlast) {
                    int tn = ftk_mma_next(rng, own, t + 1, tlast);
                    unsigned char *nx = sm + (stage ^ 1) * STAGE;
                    if (tn <= tlast) {
                        ftk_mma_cp_rows<D, BN>(nx, a.in[1], g, g.hkv, b, tn * BN, hk);
                        ftk_mma_cp_rows<D, BN>(nx + Z::TILE, a.in[2], g, g.hkv, b, tn * BN, hk);
                    }
                    ftk_cp_commit();
                    const __nv_bfloat16 *ks = (const __nv_bfloat16 *)(sm + stage * STAGE), *vs = ks + BN * P;
                    if (t * BN + BN - 1 <= i0 && i0 + BM <= g.s && ftk_mma_one_doc(rng, own, t))
                        attn_mma_dq_tile<D, false>(qf, yf, dq, ks, vs, sl, lse2, dl, ir, t * BN, g.s, doc, qd);
                    else
                        attn_mma_dq_tile<D, true>(qf, yf, dq, ks, vs, sl, lse2, dl, ir, t * BN, g.s, doc, qd);
                    ftk_cp_wait_all();
                    __syncthreads();
                    t = tn;
                    stage ^= 1;
                }
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int i = ir + 8 * r;
                    if (i >= g.s)
                        continue;
                    long long orow = ftk_mma_row<D>(g, g.hq, b, i, h);
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++)
                        ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, g.scale * dq[dt][2 * r], g.scale * dq[dt][2 * r + 1]);
                }
            }
}

/* One query tile of dk (DK) or dv for the warp's 16 keys, in chunks of 32 queries: Sᵀ = K Qᵀ,
 * Pᵀ = exp2(Sᵀ scale log2 e - lse log2 e); dv += Pᵀ dY, or dPᵀ = V dYᵀ, dk += Pᵀ (dPᵀ - delta) Q
 * (unscaled). st: the tile's (lse, delta) pairs; jr: the lane's first key; i0: the tile's
 * first query row. */
template <int D, bool DK, bool MASK>
__device__ __forceinline__ void attn_mma_kv_tile(const unsigned kf[D / 16][4], const unsigned vf[][4],
                                                 float acc[D / 8][4], const __nv_bfloat16 *qs,
                                                 const __nv_bfloat16 *ys, const float2 *st, float sl, int jr,
                                                 int i0, int s, const int *doc, const int kd[2])
{
    constexpr int P = D + 8;
    const int t4 = threadIdx.x & 3;
#pragma unroll
    for (int c = 0; c < FTK_MMA_BN / 32; c++) {
        float sc[4][4], dp[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                sc[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int np = 0; np < 2; np++) {
                unsigned b[4];
                ftk_ldsm_bt(b, qs, P, c * 32 + np * 16, kk * 16);
                ftk_mma(sc[2 * np], kf[kk], b[0], b[1]);
                ftk_mma(sc[2 * np + 1], kf[kk], b[2], b[3]);
                if (DK) {
                    ftk_ldsm_bt(b, ys, P, c * 32 + np * 16, kk * 16);
                    ftk_mma(dp[2 * np], vf[kk], b[0], b[1]);
                    ftk_mma(dp[2 * np + 1], vf[kk], b[2], b[3]);
                }
            }
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int cl = c * 32 + nt * 8 + 2 * t4; /* the lane's first query column of this tile */
            float4 sd = *(const float4 *)(st + cl); /* (lse, delta) of columns cl and cl + 1 */
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int i = i0 + cl + e;
                int qd = 0;
                if (MASK)
                    qd = i < s ? doc[i] : 0;
                float l2 = (e ? sd.z : sd.x) * FTK_LOG2E, dl = e ? sd.w : sd.y;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float p = ftk_ex2(fmaf(sc[nt][2 * r + e], sl, -l2));
                    float f = DK ? p * (dp[nt][2 * r + e] - dl) : p;
                    if (MASK) {
                        int j = jr + 8 * r;
                        f = j <= i && i < s && qd == kd[r] ? f : 0.0f;
                    }
                    sc[nt][2 * r + e] = f;
                }
            }
        }
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            unsigned fa[4];
            ftk_c2a(fa, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
            for (int dn = 0; dn < D / 16; dn++) {
                unsigned b[4];
                ftk_ldsm_b(b, DK ? qs : ys, P, c * 32 + kk * 16, dn * 16);
                ftk_mma(acc[2 * dn], fa, b[0], b[1]);
                ftk_mma(acc[2 * dn + 1], fa, b[2], b[3]);
            }
        }
    }
}

/* dk (DK) or dv on the tensor cores: a block per 128 keys of one kv head; the block's K (and
 * V) into registers, then for every query head of the group in turn the query tiles from the
 * one holding the block's first key to the end, each with its dY rows and statistics. */
template <int D, bool DK, class TS, class TO> __device__ __forceinline__ void attn_mma_bwd_kv(const ftk_args_t &a)
{
    typedef ftk_mma_sz<D> Z;
    constexpr int P = Z::P, BM = FTK_MMA_BM, BN = FTK_MMA_BN;
    constexpr int STAGE = 2 * Z::TILE + Z::STATS, OWNB = (DK ? 2 : 1) * Z::OWN;
    constexpr bool BESIDE = !DK; /* dv's K fits in stage 1's space, dk's K and V do not */
    constexpr int OWN_AT = ftk_mma_own_at(STAGE, BESIDE), RNG_AT = ftk_mma_rng_at(STAGE, OWNB, BESIDE);
    ftk_mma_geo g = ftk_mma_geo_of(a);
    if (blockDim.x != FTK_ATT_MMA_THREADS)
        __trap();
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3;
    unsigned char *sm = ftk_smem;
    int2 *rng = (int2 *)(sm + RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    const int nkt = (g.s + BM - 1) / BM, ntq = (g.s + BN - 1) / BN;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int hk = blockIdx.y; hk < g.hkv; hk += gridDim.y)
            for (int kt = blockIdx.x; kt < nkt; kt += gridDim.x) {
                int j0 = kt * BM, t0 = j0 / BN, tlast = ntq - 1, jr = j0 + w * 16 + gr;
                const int *doc = (const int *)a.in[3] + (long long)b * g.s;
                __syncthreads();
                ftk_mma_cp_rows<D, BM>(sm + OWN_AT, a.in[1], g, g.hkv, b, j0, hk);
                if (DK)
                    ftk_mma_cp_rows<D, BM>(sm + OWN_AT + Z::OWN, a.in[2], g, g.hkv, b, j0, hk);
                ftk_mma_ranges(rng, doc, g.s, t0, tlast);
                int kd[2] = {jr < g.s ? doc[jr] : 0, jr + 8 < g.s ? doc[jr + 8] : 0};
                unsigned kf[D / 16][4], vf[DK ? D / 16 : 1][4];
                if (!BESIDE) { /* dk: K and V into registers before the stages overwrite them */
                    ftk_cp_commit();
                    ftk_cp_wait_all();
                    __syncthreads();
#pragma unroll
                    for (int kk = 0; kk < D / 16; kk++) {
                        ftk_ldsm_a(kf[kk], (const __nv_bfloat16 *)(sm + OWN_AT) + w * 16 * P, P, kk * 16);
                        if (DK)
                            ftk_ldsm_a(vf[kk], (const __nv_bfloat16 *)(sm + OWN_AT + Z::OWN) + w * 16 * P, P,
                                       kk * 16);
                    }
                }
                __syncthreads(); /* the ranges are in; dk: the own tiles are read */
                int2 own = ftk_mma_own_range(rng, t0, ntq);
                int tfirst = ftk_mma_next(rng, own, t0, tlast), t = tfirst, hh = t <= tlast ? 0 : g.group;
                if (hh < g.group) {
                    int h = hk * g.group;
                    ftk_mma_cp_rows<D, BN>(sm, a.in[0], g, g.hq, b, t * BN, h);
                    ftk_mma_cp_rows<D, BN>(sm + Z::TILE, a.in[4], g, g.hq, b, t * BN, h);
                    ftk_mma_cp_stats<TS>((float2 *)(sm + 2 * Z::TILE), a.in[5], g, b, t * BN, h);
                }
                ftk_cp_commit();
                ftk_cp_wait_all();
                __syncthreads();
                if (BESIDE) { /* dv: K was loaded beside stage 0, in stage 1's space */
#pragma unroll
                    for (int kk = 0; kk < D / 16; kk++)
                        ftk_ldsm_a(kf[kk], (const __nv_bfloat16 *)(sm + OWN_AT) + w * 16 * P, P, kk * 16);
                    __syncthreads();
                }
                float acc[D / 8][4];
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
                    acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;
                int stage = 0;
                while (hh < g.group) {
                    int tn = ftk_mma_next(rng, own, t + 1, tlast), hn = hh;
                    if (tn > tlast) { /* the group's next head, from its first visible tile */
                        hn++;
                        tn = tfirst;
                    }
                    unsigned char *nx = sm + (stage ^ 1) * STAGE;
                    if (hn < g.group) {
                        int h = hk * g.group + hn;
                        ftk_mma_cp_rows<D, BN>(nx, a.in[0], g, g.hq, b, tn * BN, h);
                        ftk_mma_cp_rows<D, BN>(nx + Z::TILE, a.in[4], g, g.hq, b, tn * BN, h);
                        ftk_mma_cp_stats<TS>((float2 *)(nx + 2 * Z::TILE), a.in[5], g, b, tn * BN, h);
                    }
                    ftk_cp_commit();
                    const unsigned char *cur = sm + stage * STAGE;
                    const __nv_bfloat16 *qs = (const __nv_bfloat16 *)cur, *ys = qs + BN * P;
                    const float2 *st = (const float2 *)(cur + 2 * Z::TILE);
                    if (j0 + BM - 1 <= t * BN && t * BN + BN <= g.s && ftk_mma_one_doc(rng, own, t))
                        attn_mma_kv_tile<D, DK, false>(kf, vf, acc, qs, ys, st, sl, jr, t * BN, g.s, doc, kd);
                    else
                        attn_mma_kv_tile<D, DK, true>(kf, vf, acc, qs, ys, st, sl, jr, t * BN, g.s, doc, kd);
                    ftk_cp_wait_all();
                    __syncthreads();
                    t = tn;
                    hh = hn;
                    stage ^= 1;
                }
                float f = DK ? g.scale : 1.0f;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int j = jr + 8 * r;
                    if (j >= g.s)
                        continue;
                    long long orow = ftk_mma_row<D>(g, g.hkv, b, j, hk);
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++)
                        ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, f * acc[dt][2 * r], f * acc[dt][2 * r + 1]);
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
    if constexpr (ftk_att_mma<TQ, TK, TV, TQ>::v) {
        if (a.shape[0][3] == 64)
            return attn_mma_fwd<64, true, TO>(a, 3);
        if (a.shape[0][3] == 128)
            return attn_mma_fwd<128, true, TO>(a, 3);
    }
    FTK_ATT_DISPATCH(a.shape[0][3], FTK_ATT_FWD_CALL);
}
#undef FTK_ATT_FWD_CALL

/* (q, k, v, doc, lse) -> o, and lse [B,S,Hq,1] f32 written in place: the same kernels, which
 * store each row's log-sum-exp where a.in[4] is set (the four-input form leaves it null). */
template <class TQ, class TK, class TV, class TD, class TL, class TO>
__device__ __forceinline__ void attn(const ftk_args_t &a)
{
    static_assert(ftk_same<TL, float>::v, "attn's lse output is f32");
    attn<TQ, TK, TV, TD, TO>(a);
}

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
            if (a.ip[0] == 1)
                return dh == 64 ? attn_mma_bwd_kv<64, true, TS, TO>(a) : attn_mma_bwd_kv<128, true, TS, TO>(a);
            return dh == 64 ? attn_mma_bwd_kv<64, false, TS, TO>(a) : attn_mma_bwd_kv<128, false, TS, TO>(a);
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
