/* attention_wg.cuh — attention on Hopper's warpgroup matrix instructions (wgmma.mma_async,
 * sm_90a): the forward (with the row statistics the backward reads), dq, dk and dv, for bf16
 * q, k, v (and dy) and head dims 64 and 128. codegen/emit.c picks these for sm_90 targets and
 * attention.cuh's mma.sync kernels for the others; masks, document ranges, grids, the order of
 * the streamed tiles and the per-lane elementwise work are that path's (its helpers are used
 * here), so the two paths differ only in how the matrix products are issued.
 * defines: ftk_wg<N> (the wgmma wrappers), ftk::attn_wg_fwd, ftk::attn_wg_dq, ftk::attn_wg_dk,
 *          ftk::attn_wg_dv, ftk::attn_wg_dkv (dk, and dv into input 6: passes/fuse.c)
 * launch:  256 threads (two warpgroups), grids as attention.cuh's tensor-core kernels;
 *          shared memory ftk_wg_lay (emit.c's attn_wg_smem computes the same).
 *
 * Why: mma.sync issues one 16x8x16 product per warp instruction and needs every B fragment
 * moved through registers by ldmatrix; a warpgroup's wgmma m64nNk16 reads both operands (or
 * B only, A from registers) straight from shared memory, runs asynchronously beside the
 * warp's other instructions, and is the only way to Hopper's full tensor rate.
 *
 * A block owns FTK_TC_BM (128) rows, queries (forward, dq) or keys (dk, dv); warpgroup wg of
 * its two owns rows 64 wg .. 64 wg + 63, warp w of the block rows 16 w .. 16 w + 15: every
 * accumulator of an m64nNk16 product is, per warp, the C fragments of N / 8 m16n8 tiles, and
 * the A operand from registers is the m16n8k16 A fragment: attention.cuh's lane layout with
 * MI 1, so its elementwise code carries over unchanged (P and dS become A fragments by
 * ftk_c2a, never leaving registers).
 *
 * Shared memory holds every tile in wgmma's 128-byte swizzled layout: a tile of R rows and D
 * columns is D / 64 blocks of R rows x 128 bytes, 1024-byte aligned, and the 16-byte chunk c
 * of row r sits at chunk position c ^ (r & 7) of its row (ftk_wg_cp_rows). A product reads a
 * tile K-major (its rows are the product's M or N, its columns the reduction: Q, dY, K, V as
 * left factors; Kᵀ, Vᵀ, Qᵀ, dYᵀ as right ones) or MN-major (its rows are the reduction: V in
 * P V, K in dS K, Q in dSᵀ Q, dY in Pᵀ dY), both from the same bytes, so no tile is stored
 * twice or transposed.
 *
 * Per streamed tile (or chunk of CK rows) a warpgroup issues the score products (and dY Vᵀ or
 * V dYᵀ) as one commit group, waits, does attention.cuh's elementwise step on the
 * accumulators, then issues the accumulation product from registers and waits before the
 * next tile touches its registers. Two stages of streamed tiles, filled by cp.async one tile
 * ahead; a thread's cp.async writes are made visible to the async proxy that wgmma reads
 * through (fence.proxy.async) before the block's barrier. Deterministic: each output element
 * is accumulated by one thread, in one order of tiles, chunks and k-steps. */

#define FTK_WG_THREADS 256

/* The 64-bit shared-memory matrix descriptor of wgmma: start address, leading and stride byte
 * offsets (all >> 4), 128-byte swizzle (mode 1 in bits 62..63). */
__device__ __forceinline__ unsigned long long ftk_wg_desc(unsigned addr, unsigned lbo, unsigned sbo)
{
    return (unsigned long long)((addr & 0x3ffffu) >> 4) | (unsigned long long)(lbo >> 4) << 16 |
           (unsigned long long)(sbo >> 4) << 32 | 1ull << 62;
}

/* Rows r0 .. (8-row groups 1024 bytes apart) and columns k0 .. k0 + 15 of a swizzled tile of R
 * rows at shared address t, K-major: within a 64-column block a k-step is a 32-byte move of the
 * start address (the swizzle is applied to the address bits, so it follows). */
template <int R> __device__ __forceinline__ unsigned long long ftk_wg_kmaj(unsigned t, int r0, int k0)
{
    return ftk_wg_desc(t + (unsigned)((k0 >> 6) * R * 128 + r0 * 128 + (k0 & 63) * 2), 16, 1024);
}

/* Rows k0 .. k0 + 15 (the product's reduction) and every column (its N: 64 per block, blocks
 * R x 128 bytes apart) of a swizzled tile of R rows at t, MN-major. */
template <int R> __device__ __forceinline__ unsigned long long ftk_wg_mnmaj(unsigned t, int k0)
{
    return ftk_wg_desc(t + (unsigned)(k0 * 128), R * 128, 1024);
}

__device__ __forceinline__ void ftk_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void ftk_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void ftk_wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

/* Orders the accumulators' reads and writes after the wait (the compiler sees the wgmma asm as
 * writing them when it is issued). */
template <int N8> __device__ __forceinline__ void ftk_wg_keep(float (&d)[N8][4])
{
#pragma unroll
    for (int i = 0; i < N8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            asm volatile("" : "+f"(d[i][e])::"memory");
}

/* The cp.async writes of this thread done and visible to wgmma; the caller's barrier follows. */
__device__ __forceinline__ void ftk_wg_landed()
{
    ftk_cp_wait_all();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* d (+)= A B over one k-step of 16 for the warpgroup's 64 rows and N columns; d is the warp's
 * N / 8 C fragments. ss: A and B from descriptors, both K-major. rs: A the warp's m16n8k16 A
 * fragment, B from a descriptor, MN-major. acc 0 overwrites d. */
template <int N> struct ftk_wg;
template <> struct ftk_wg<32> {
    static __device__ __forceinline__ void ss(float (&d)[4][4], unsigned long long a, unsigned long long b,
                                              int acc)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
                     "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                       "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
                     : "l"(a), "l"(b), "r"(acc));
    }
    static __device__ __forceinline__ void rs(float (&d)[4][4], const unsigned (&a)[4], unsigned long long b,
                                              int acc)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
                     "}, {%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                       "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc));
    }
};
template <> struct ftk_wg<64> {
    static __device__ __forceinline__ void ss(float (&d)[8][4], unsigned long long a, unsigned long long b,
                                              int acc)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                     "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                       "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
                       "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
                       "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
                       "+f"(d[7][2]), "+f"(d[7][3])
                     : "l"(a), "l"(b), "r"(acc));
    }
    static __device__ __forceinline__ void rs(float (&d)[8][4], const unsigned (&a)[4], unsigned long long b,
                                              int acc)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                     "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                       "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
                       "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
                       "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
                       "+f"(d[7][2]), "+f"(d[7][3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc));
    }
};
template <> struct ftk_wg<128> {
    static __device__ __forceinline__ void ss(float (&d)[16][4], unsigned long long a, unsigned long long b,
                                              int acc)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                     "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                       "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
                       "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
                       "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
                       "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
                       "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
                       "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
                       "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]),
                       "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
                       "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
                     : "l"(a), "l"(b), "r"(acc));
    }
    static __device__ __forceinline__ void rs(float (&d)[16][4], const unsigned (&a)[4], unsigned long long b,
                                              int acc)
    {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
                     "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                     "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                       "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
                       "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
                       "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
                       "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
                       "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
                       "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
                       "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
                       "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]),
                       "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
                       "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(acc));
    }
};

/* N rows r0 .. r0 + N - 1 (head h of a [B,S,nh,D] bf16 tensor) into the swizzled tile at
 * shared address dst by cp.async from the block; rows past the sequence zero. Not committed. */
template <int D, int N>
__device__ __forceinline__ void ftk_wg_cp_rows(unsigned dst, const void *src, const ftk_tc_geo &g, int nh, int b,
                                               int r0, int h)
{
    constexpr int CH = D / 8, RS = FTK_WG_THREADS / CH; /* 16-byte chunks per row; rows per pass */
    static_assert(N % RS == 0 && RS % 8 == 0, "whole passes; a thread's rows keep one swizzle phase");
    const int c = threadIdx.x % CH, r = threadIdx.x / CH;
    const __nv_bfloat16 *p = (const __nv_bfloat16 *)src + ftk_tc_row<D>(g, nh, b, r0 + r, h) + c * 8;
    const long long step = (long long)RS * nh * D;
    unsigned d = dst + (unsigned)((c >> 3) * N * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
#pragma unroll 1
    for (int k = 0; k < N / RS; k++, p += step, d += RS * 128) {
        bool ok = r0 + r + k * RS < g.s;
        ftk_cp16(d, ok ? p : src, ok);
    }
}

/* The shared-memory layout of a Hopper kernel, from a 1024-byte aligned base: OWN bytes of own
 * tiles, two stages of STAGE bytes of streamed tiles, two of XTRA bytes of per-row statistics,
 * then the document ranges. Dynamic shared memory is only 16-byte aligned, so emit.c asks for
 * 1024 bytes more and ftk_wg_base aligns the base inside them. */
template <int OWN, int STAGE, int XTRA> struct ftk_wg_lay {
    static constexpr int ST0 = OWN, ST1 = OWN + STAGE, X0 = OWN + 2 * STAGE, X1 = X0 + XTRA;
    static constexpr int RNG_AT = (X1 + XTRA + 15) / 16 * 16;
    static_assert(OWN % 1024 == 0 && STAGE % 1024 == 0 && XTRA % 16 == 0, "1024-byte aligned tiles");
};

/* The block's aligned base (shared address and generic pointer); traps unless the launch gave
 * the layout's bytes past it. */
__device__ __forceinline__ unsigned char *ftk_wg_base(unsigned &sa, long long need)
{
    unsigned raw = ftk_sa(ftk_smem);
    sa = (raw + 1023u) & ~1023u;
    ftk_tc_check(FTK_WG_THREADS, need + (sa - raw));
    return ftk_smem + (sa - raw);
}

namespace ftk {

/* One key tile of the forward for the warp's 16 query rows: S = Q Kᵀ (the warpgroup's rows
 * wr of the own tile at qa), attention.cuh's softmax step (ftk_tc_softmax, MI 1), O += P V.
 * ir: the lane's first row; j0: the tile's first key. */
template <int D, int BN, bool MASK>
__device__ __forceinline__ void attn_wg_fwd_tile(unsigned qa, int wr, unsigned ks, unsigned vs,
                                                 float (&o)[1][D / 8][4], float (&m)[1][2], float (&l)[1][2], float sl,
                                                 int ir, int j0, int s, const int *doc, const int (&qd)[1][2])
{
    constexpr int NT8 = BN / 8;
    float sc[1][NT8][4];
    ftk_wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ftk_wg<BN>::ss(sc[0], ftk_wg_kmaj<FTK_TC_BM>(qa, wr, kk * 16), ftk_wg_kmaj<BN>(ks, 0, kk * 16), kk > 0);
    ftk_wg_commit();
    ftk_wg_wait0();
    ftk_wg_keep(sc[0]);
    ftk_tc_softmax<D, 1, NT8, true, MASK>(sc, o, m, l, sl, ir, j0, s, doc, qd);
    unsigned pa[BN / 16][4];
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++)
        ftk_c2a(pa[kk], sc[0][2 * kk], sc[0][2 * kk + 1]);
    ftk_wg_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++)
        ftk_wg<D>::rs(o[0], pa[kk], ftk_wg_mnmaj<BN>(vs, kk * 16), 1);
    ftk_wg_commit();
    ftk_wg_wait0();
    ftk_wg_keep(o[0]);
}

/* (q, k, v, doc) -> o, and m + log l into a.in[4] where set, on Hopper: a block per two tiles of
 * 128 query rows of one head (the longest and the shortest left), Q resident, the key tiles
 * with their values from 0 to the diagonal in stages of BN. */
template <int D, int BN, class TO> __device__ __forceinline__ void attn_wg_fwd(const ftk_args_t &a)
{
    constexpr int BM = FTK_TC_BM, TILE = BN * D * 2;
    typedef ftk_wg_lay<BM * D * 2, 2 * TILE, 0> L;
    static_assert(BM % BN == 0 && BN % 16 == 0 && BN <= 128, "the tiles' shapes");
    ftk_tc_geo g = ftk_tc_geo_of(a);
    const int ntq = (g.s + BM - 1) / BM, ntk = (g.s + BN - 1) / BN;
    unsigned sa;
    unsigned char *sm = ftk_wg_base(sa, L::RNG_AT + 8LL * ntq);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3, wg = w >> 2;
    int2 *rng = (int2 *)(sm + L::RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (int pp = blockIdx.x; pp < (ntq + 1) / 2; pp += gridDim.x)
                for (int half = 0; half < 2 && (half == 0 || ntq - 1 - pp != pp); half++) {
                    int qt = half ? pp : ntq - 1 - pp;
                    int i0 = qt * BM, hk = h / g.group, gr0 = i0 + 64 * wg, ir = i0 + 16 * w + gr;
                    int tlast = min(ntk - 1, (i0 + BM - 1) / BN);
                    const int *doc = (const int *)a.in[3] + (long long)b * g.s;
                    __syncthreads(); /* the previous work's readers are done */
                    ftk_wg_cp_rows<D, BM>(sa, a.in[0], g, g.hq, b, i0, h);
                    ftk_tc_ranges<8>(rng, doc, g.s, 0, qt);
                    int qd[1][2];
#pragma unroll
                    for (int r = 0; r < 2; r++)
                        qd[0][r] = ir + 8 * r < g.s ? doc[ir + 8 * r] : 0;
                    __syncthreads(); /* the ranges */
                    int2 own = rng[qt];
                    int t = ftk_tc_next<BN>(rng, own, 0, tlast);
                    if (t <= tlast) {
                        ftk_wg_cp_rows<D, BN>(sa + L::ST0, a.in[1], g, g.hkv, b, t * BN, hk);
                        ftk_wg_cp_rows<D, BN>(sa + L::ST0 + TILE, a.in[2], g, g.hkv, b, t * BN, hk);
                    }
                    ftk_cp_commit();
                    ftk_wg_landed();
                    __syncthreads();
                    float o[1][D / 8][4], m[1][2], l[1][2];
                    m[0][0] = m[0][1] = -FTK_INF;
                    l[0][0] = l[0][1] = 0.0f;
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++)
                        o[0][dt][0] = o[0][dt][1] = o[0][dt][2] = o[0][dt][3] = 0.0f;
                    int stage = 0;
                    while (t <= tlast) {
                        int tn = ftk_tc_next<BN>(rng, own, t + 1, tlast);
                        unsigned cur = sa + (stage ? L::ST1 : L::ST0), nx = sa + (stage ? L::ST0 : L::ST1);
                        if (tn <= tlast) {
                            ftk_wg_cp_rows<D, BN>(nx, a.in[1], g, g.hkv, b, tn * BN, hk);
                            ftk_wg_cp_rows<D, BN>(nx + TILE, a.in[2], g, g.hkv, b, tn * BN, hk);
                        }
                        ftk_cp_commit();
                        int j0 = t * BN;
                        if (j0 + BN - 1 <= i0 && i0 + BM <= g.s && ftk_tc_one_doc<BN>(rng, own, t))
                            attn_wg_fwd_tile<D, BN, false>(sa, 64 * wg, cur, cur + TILE, o, m, l, sl, ir, j0, g.s, doc,
                                                           qd);
                        else if (j0 <= gr0 + 63 && gr0 < g.s) /* warpgroup-uniform: wgmma is collective */
                            attn_wg_fwd_tile<D, BN, true>(sa, 64 * wg, cur, cur + TILE, o, m, l, sl, ir, j0, g.s, doc,
                                                          qd);
                        ftk_wg_landed();
                        __syncthreads();
                        t = tn;
                        stage ^= 1;
                    }
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        float lr = l[0][r];
                        lr += __shfl_xor_sync(0xffffffffu, lr, 1);
                        lr += __shfl_xor_sync(0xffffffffu, lr, 2);
                        int i = ir + 8 * r;
                        if (i >= g.s)
                            continue;
                        long long orow = ftk_tc_row<D>(g, g.hq, b, i, h);
                        float inv = lr > 0.0f ? 1.0f / lr : 0.0f;
                        if (a.in[4] && t4 == 0)
                            ((float *)a.in[4])[(long long)(b * g.s + i) * g.hq + h] = m[0][r] * FTK_LN2 + logf(lr);
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
                            ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, o[0][dt][2 * r] * inv,
                                        o[0][dt][2 * r + 1] * inv);
                    }
                }
}

/* One key tile of dq for the warp's 16 query rows, in chunks of CK keys: S = Q Kᵀ, dP = dY Vᵀ,
 * dS = P (dP - delta) (attention.cuh's ftk_tc_dq_ds, MI 1), dq += dS K. qa, ya: the own Q and dY
 * tiles; wr: the warpgroup's first row in them; glast: its last query row. */
template <int D, int BN, int CK, bool MASK>
__device__ __forceinline__ void attn_wg_dq_tile(unsigned qa, unsigned ya, int wr, unsigned ks, unsigned vs,
                                                float (&dq)[D / 8][4], float sl, const float (&lse2)[1][2],
                                                const float (&dl)[1][2], int ir, int glast, int j0, int s,
                                                const int *doc, const int (&qd)[1][2])
{
    constexpr int NT8 = CK / 8;
#pragma unroll
    for (int c = 0; c < BN / CK; c++) {
        if (MASK && j0 + c * CK > glast)
            continue; /* every key of the chunk follows the warpgroup's rows */
        float sc[1][NT8][4], dp[1][NT8][4];
        ftk_wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ftk_wg<CK>::ss(sc[0], ftk_wg_kmaj<FTK_TC_BM>(qa, wr, kk * 16), ftk_wg_kmaj<BN>(ks, c * CK, kk * 16),
                           kk > 0);
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ftk_wg<CK>::ss(dp[0], ftk_wg_kmaj<FTK_TC_BM>(ya, wr, kk * 16), ftk_wg_kmaj<BN>(vs, c * CK, kk * 16),
                           kk > 0);
        ftk_wg_commit();
        ftk_wg_wait0();
        ftk_wg_keep(sc[0]);
        ftk_wg_keep(dp[0]);
        ftk_tc_dq_ds<1, NT8, MASK>(sc, dp, sl, lse2, dl, ir, j0 + c * CK, s, doc, qd);
        unsigned fa[CK / 16][4];
#pragma unroll
        for (int kk = 0; kk < CK / 16; kk++)
            ftk_c2a(fa[kk], sc[0][2 * kk], sc[0][2 * kk + 1]);
        ftk_wg_fence();
#pragma unroll
        for (int kk = 0; kk < CK / 16; kk++)
            ftk_wg<D>::rs(dq, fa[kk], ftk_wg_mnmaj<BN>(ks, c * CK + kk * 16), 1);
        ftk_wg_commit();
        ftk_wg_wait0();
        ftk_wg_keep(dq);
    }
}

/* dq on Hopper: a block per two tiles of 128 query rows of one head (the longest and the
 * shortest left), Q and dY resident; the key tiles with their values up to the diagonal. */
template <int D, int BN, int CK, class TS, class TO> __device__ __forceinline__ void attn_wg_dq(const ftk_args_t &a)
{
    constexpr int BM = FTK_TC_BM, TILE = BN * D * 2, OWN1 = BM * D * 2;
    typedef ftk_wg_lay<2 * OWN1, 2 * TILE, 0> L;
    static_assert(BM % BN == 0 && BN % CK == 0 && CK % 16 == 0 && BN <= 128, "the tiles' shapes");
    ftk_tc_geo g = ftk_tc_geo_of(a);
    const int ntq = (g.s + BM - 1) / BM, ntk = (g.s + BN - 1) / BN;
    unsigned sa;
    unsigned char *sm = ftk_wg_base(sa, L::RNG_AT + 8LL * ntq);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3, wg = w >> 2;
    int2 *rng = (int2 *)(sm + L::RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int h = blockIdx.y; h < g.hq; h += gridDim.y)
            for (int pp = blockIdx.x; pp < (ntq + 1) / 2; pp += gridDim.x)
                for (int half = 0; half < 2 && (half == 0 || ntq - 1 - pp != pp); half++) {
                    int qt = half ? pp : ntq - 1 - pp;
                    int i0 = qt * BM, hk = h / g.group, gr0 = i0 + 64 * wg, ir = i0 + 16 * w + gr;
                    int tlast = min(ntk - 1, (i0 + BM - 1) / BN);
                    const int *doc = (const int *)a.in[3] + (long long)b * g.s;
                    __syncthreads();
                    ftk_wg_cp_rows<D, BM>(sa, a.in[0], g, g.hq, b, i0, h);
                    ftk_wg_cp_rows<D, BM>(sa + OWN1, a.in[4], g, g.hq, b, i0, h);
                    ftk_tc_ranges<8>(rng, doc, g.s, 0, qt);
                    int qd[1][2];
                    float lse2[1][2], dl[1][2];
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        int i = ir + 8 * r;
                        long long at = ((long long)(b * g.s + i) * g.hq + h) * 2;
                        qd[0][r] = i < g.s ? doc[i] : 0;
                        lse2[0][r] = i < g.s ? ftk_ld<TS>(a.in[5], at) * FTK_LOG2E : 0.0f;
                        dl[0][r] = i < g.s ? ftk_ld<TS>(a.in[5], at + 1) : 0.0f;
                    }
                    __syncthreads(); /* the ranges */
                    int2 own = rng[qt];
                    int t = ftk_tc_next<BN>(rng, own, 0, tlast);
                    if (t <= tlast) {
                        ftk_wg_cp_rows<D, BN>(sa + L::ST0, a.in[1], g, g.hkv, b, t * BN, hk);
                        ftk_wg_cp_rows<D, BN>(sa + L::ST0 + TILE, a.in[2], g, g.hkv, b, t * BN, hk);
                    }
                    ftk_cp_commit();
                    ftk_wg_landed();
                    __syncthreads();
                    float dq[D / 8][4];
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++)
                        dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.0f;
                    int stage = 0;
                    while (t <= tlast) {
                        int tn = ftk_tc_next<BN>(rng, own, t + 1, tlast);
                        unsigned cur = sa + (stage ? L::ST1 : L::ST0), nx = sa + (stage ? L::ST0 : L::ST1);
                        if (tn <= tlast) {
                            ftk_wg_cp_rows<D, BN>(nx, a.in[1], g, g.hkv, b, tn * BN, hk);
                            ftk_wg_cp_rows<D, BN>(nx + TILE, a.in[2], g, g.hkv, b, tn * BN, hk);
                        }
                        ftk_cp_commit();
                        int j0 = t * BN;
                        if (j0 + BN - 1 <= i0 && i0 + BM <= g.s && ftk_tc_one_doc<BN>(rng, own, t))
                            attn_wg_dq_tile<D, BN, CK, false>(sa, sa + OWN1, 64 * wg, cur, cur + TILE, dq, sl, lse2, dl,
                                                              ir, gr0 + 63, j0, g.s, doc, qd);
                        else if (gr0 < g.s)
                            attn_wg_dq_tile<D, BN, CK, true>(sa, sa + OWN1, 64 * wg, cur, cur + TILE, dq, sl, lse2, dl,
                                                             ir, gr0 + 63, j0, g.s, doc, qd);
                        ftk_wg_landed();
                        __syncthreads();
                        t = tn;
                        stage ^= 1;
                    }
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        int i = ir + 8 * r;
                        if (i >= g.s)
                            continue;
                        long long orow = ftk_tc_row<D>(g, g.hq, b, i, h);
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
                            ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, g.scale * dq[dt][2 * r],
                                        g.scale * dq[dt][2 * r + 1]);
                    }
                }
}

/* One query tile of dk or dv (MODE ATT_WG_DK, ATT_WG_DV) or both (ATT_WG_DKV) for the warp's 16
 * keys, in chunks of CK queries: Sᵀ = K Qᵀ, Pᵀ; dv += Pᵀ dY; dPᵀ = V dYᵀ, dk += Pᵀ (dPᵀ - delta)
 * Q (attention.cuh's ftk_tc_kv_ds, MI 1). acc: dk, or dv alone; accv: dv beside dk. ka, va: the
 * own K and V tiles; wr: the warpgroup's first row in them; gj0: its first key; st: the tile's
 * (lse, delta) pairs. */
enum { ATT_WG_DV, ATT_WG_DK, ATT_WG_DKV };
template <int D, int BN, int CK, int MODE, bool MASK>
__device__ __forceinline__ void attn_wg_kv_tile(unsigned ka, unsigned va, int wr, unsigned qs, unsigned ys,
                                                float (&acc)[D / 8][4], float (&accv)[MODE == ATT_WG_DKV ? D / 8 : 1][4],
                                                const float2 *st, float sl, int jr, int gj0, int i0, int s,
                                                const int *doc, const int (&kd)[1][2])
{
    constexpr int NT8 = CK / 8;
    constexpr bool DK = MODE != ATT_WG_DV, BOTH = MODE == ATT_WG_DKV;
#pragma unroll
    for (int c = 0; c < BN / CK; c++) {
        if (MASK && i0 + c * CK + CK - 1 < gj0)
            continue; /* every query of the chunk precedes the warpgroup's keys */
        float sc[1][NT8][4], dp[1][DK ? NT8 : 1][4];
        ftk_wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ftk_wg<CK>::ss(sc[0], ftk_wg_kmaj<FTK_TC_BM>(ka, wr, kk * 16), ftk_wg_kmaj<BN>(qs, c * CK, kk * 16),
                           kk > 0);
        if constexpr (DK) {
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                ftk_wg<CK>::ss(dp[0], ftk_wg_kmaj<FTK_TC_BM>(va, wr, kk * 16), ftk_wg_kmaj<BN>(ys, c * CK, kk * 16),
                               kk > 0);
        }
        ftk_wg_commit();
        ftk_wg_wait0();
        ftk_wg_keep(sc[0]);
        if constexpr (DK)
            ftk_wg_keep(dp[0]);
        unsigned pa[1][BOTH ? CK / 16 : 1][4]; /* Pᵀ for dv beside dk */
        ftk_tc_kv_ds<1, NT8, DK, MASK, BOTH>(sc, dp, pa, st, sl, jr, i0, c * CK, s, doc, kd);
        unsigned fa[CK / 16][4];
#pragma unroll
        for (int kk = 0; kk < CK / 16; kk++)
            ftk_c2a(fa[kk], sc[0][2 * kk], sc[0][2 * kk + 1]);
        ftk_wg_fence();
#pragma unroll
        for (int kk = 0; kk < CK / 16; kk++)
            ftk_wg<D>::rs(acc, fa[kk], ftk_wg_mnmaj<BN>(DK ? qs : ys, c * CK + kk * 16), 1);
        if constexpr (BOTH) {
#pragma unroll
            for (int kk = 0; kk < CK / 16; kk++)
                ftk_wg<D>::rs(accv, pa[0][kk], ftk_wg_mnmaj<BN>(ys, c * CK + kk * 16), 1);
        }
        ftk_wg_commit();
        ftk_wg_wait0();
        ftk_wg_keep(acc);
        if constexpr (BOTH)
            ftk_wg_keep(accv);
    }
}

/* dk or dv (or both: dk out, dv into a.in[6]) on Hopper: a block per two tiles of 128 keys of
 * one kv head (p and the p-th from the end), K (and V) resident; for every query head of the
 * group in turn, the query tiles from the one holding the tile's first key to the end, with
 * their dY rows and statistics. */
template <int D, int BN, int CK, int MODE, class TS, class TO>
__device__ __forceinline__ void attn_wg_kv(const ftk_args_t &a)
{
    constexpr int BM = FTK_TC_BM, TILE = BN * D * 2, OWN1 = BM * D * 2;
    constexpr bool DK = MODE != ATT_WG_DV, BOTH = MODE == ATT_WG_DKV;
    typedef ftk_wg_lay<(DK ? 2 : 1) * OWN1, 2 * TILE, BN * 8> L;
    static_assert(BM % BN == 0 && BN % CK == 0 && CK % 16 == 0 && BN <= 128 && BN <= FTK_WG_THREADS,
                  "the tiles' shapes");
    ftk_tc_geo g = ftk_tc_geo_of(a);
    const int nkt = (g.s + BM - 1) / BM, ntq = (g.s + BN - 1) / BN;
    unsigned sa;
    unsigned char *sm = ftk_wg_base(sa, L::RNG_AT + 8LL * nkt);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gr = lane >> 2, t4 = lane & 3, wg = w >> 2;
    int2 *rng = (int2 *)(sm + L::RNG_AT);
    const float sl = g.scale * FTK_LOG2E;
    for (int b = blockIdx.z; b < g.nb; b += gridDim.z)
        for (int hk = blockIdx.y; hk < g.hkv; hk += gridDim.y)
            for (int pp = blockIdx.x; pp < (nkt + 1) / 2; pp += gridDim.x)
                for (int half = 0; half < 2 && (half == 0 || nkt - 1 - pp != pp); half++) {
                    int kt = half ? nkt - 1 - pp : pp;
                    int j0 = kt * BM, t0 = j0 / BN, tlast = ntq - 1, gj0 = j0 + 64 * wg, jr = j0 + 16 * w + gr;
                    const int *doc = (const int *)a.in[3] + (long long)b * g.s;
                    __syncthreads();
                    ftk_wg_cp_rows<D, BM>(sa, a.in[1], g, g.hkv, b, j0, hk);
                    if (DK)
                        ftk_wg_cp_rows<D, BM>(sa + OWN1, a.in[2], g, g.hkv, b, j0, hk);
                    ftk_tc_ranges<8>(rng, doc, g.s, kt, nkt - 1);
                    int kd[1][2];
#pragma unroll
                    for (int r = 0; r < 2; r++)
                        kd[0][r] = jr + 8 * r < g.s ? doc[jr + 8 * r] : 0;
                    __syncthreads(); /* the ranges */
                    int2 own = rng[kt];
                    int tfirst = ftk_tc_next<BN>(rng, own, t0, tlast), t = tfirst, hh = t <= tlast ? 0 : g.group;
                    if (hh < g.group) {
                        int h = hk * g.group;
                        ftk_wg_cp_rows<D, BN>(sa + L::ST0, a.in[0], g, g.hq, b, t * BN, h);
                        ftk_wg_cp_rows<D, BN>(sa + L::ST0 + TILE, a.in[4], g, g.hq, b, t * BN, h);
                        ftk_tc_cp_stats<TS, BN, FTK_WG_THREADS>((float2 *)(sm + L::X0), a.in[5], g, b, t * BN, h);
                    }
                    ftk_cp_commit();
                    ftk_wg_landed();
                    __syncthreads();
                    float acc[D / 8][4], accv[BOTH ? D / 8 : 1][4];
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            acc[dt][e] = 0.0f;
                            if (BOTH)
                                accv[dt][e] = 0.0f;
                        }
                    int stage = 0;
                    while (hh < g.group) {
                        int tn = ftk_tc_next<BN>(rng, own, t + 1, tlast), hn = hh;
                        if (tn > tlast) {
                            hn++;
                            tn = tfirst;
                        }
                        unsigned cur = sa + (stage ? L::ST1 : L::ST0), nx = sa + (stage ? L::ST0 : L::ST1);
                        const float2 *st = (const float2 *)(sm + (stage ? L::X1 : L::X0));
                        if (hn < g.group) {
                            int h = hk * g.group + hn;
                            ftk_wg_cp_rows<D, BN>(nx, a.in[0], g, g.hq, b, tn * BN, h);
                            ftk_wg_cp_rows<D, BN>(nx + TILE, a.in[4], g, g.hq, b, tn * BN, h);
                            ftk_tc_cp_stats<TS, BN, FTK_WG_THREADS>((float2 *)(sm + (stage ? L::X0 : L::X1)), a.in[5],
                                                                    g, b, tn * BN, h);
                        }
                        ftk_cp_commit();
                        int i0 = t * BN;
                        if (j0 + BM - 1 <= i0 && i0 + BN <= g.s && ftk_tc_one_doc<BN>(rng, own, t))
                            attn_wg_kv_tile<D, BN, CK, MODE, false>(sa, sa + OWN1, 64 * wg, cur, cur + TILE, acc, accv,
                                                                    st, sl, jr, gj0, i0, g.s, doc, kd);
                        else if (gj0 < g.s)
                            attn_wg_kv_tile<D, BN, CK, MODE, true>(sa, sa + OWN1, 64 * wg, cur, cur + TILE, acc, accv,
                                                                   st, sl, jr, gj0, i0, g.s, doc, kd);
                        ftk_wg_landed();
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
                        long long orow = ftk_tc_row<D>(g, g.hkv, b, j, hk);
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++) {
                            ftk_st2<TO>(a.out, orow + dt * 8 + 2 * t4, f * acc[dt][2 * r], f * acc[dt][2 * r + 1]);
                            if (BOTH)
                                ftk_st2<TO>(a.in[6], orow + dt * 8 + 2 * t4, accv[dt][2 * r], accv[dt][2 * r + 1]);
                        }
                    }
                }
}

/* (q, k, v, doc, dy, stats) -> dk, dv, or dk and dv (dv into input 6), on Hopper (entry
 * points: emit.c). */
template <int D, int BN, int CK, class TS, class TO> __device__ __forceinline__ void attn_wg_dk(const ftk_args_t &a)
{
    attn_wg_kv<D, BN, CK, ATT_WG_DK, TS, TO>(a);
}
template <int D, int BN, int CK, class TS, class TO> __device__ __forceinline__ void attn_wg_dv(const ftk_args_t &a)
{
    attn_wg_kv<D, BN, CK, ATT_WG_DV, TS, TO>(a);
}
template <int D, int BN, int CK, class TS, class TO> __device__ __forceinline__ void attn_wg_dkv(const ftk_args_t &a)
{
    attn_wg_kv<D, BN, CK, ATT_WG_DKV, TS, TO>(a);
}

} /* namespace ftk */
