/* norm.cuh — RMS normalisation and its two backward ops.
 * defines: ftk_norm_team, ftk_norm_warps, ftk_team_sum, ftk::rmsnorm, ftk::rmsnorm_bwd_x (with
 *          or without an addend),
 *          ftk::rmsnorm_bwd_w_part / rmsnorm_bwd_w_fin
 * launch:  rmsnorm, rmsnorm_bwd_x: 256 threads (CG_NORM_THREADS); a team of W warps per row,
 *          W = ftk_norm_warps(D, NV) (1, 2, 4 or 8), 8 / W teams a block, grid
 *          ceil(rows / (8 / W)). rmsnorm_bwd_w: two kernels, (C row chunks, column groups)
 *          blocks of 32..1024 threads, then one thread per column (256 a block).
 * scratch: rmsnorm_bwd_w: header int 0 = C; data: C x D floats (the chunks' column sums).
 * Row statistics in float; eps = fp[0]. */

/* FTK_RBW_COLS (rmsnorm_bwd_w_part: output columns per thread and pass) and
 * FTK_NORM_LANE_BYTES (rmsnorm, rmsnorm_bwd_x: register bytes a lane gives to its row's
 * values) come from the generated source's preamble (codegen/emit.c), which sizes the
 * launches with them.
 *
 * rmsnorm and rmsnorm_bwd_x read their row once: a team of W warps loads the row (x, and dy
 * for the backward) with 16-byte loads into registers, in storage form, NV vectors of 8
 * elements a lane (NV = FTK_NORM_LANE_BYTES / (8 x the bytes of one element of the arrays
 * held: x; x and dy)); lane t of the team takes vectors t, t + 32 W, ... The statistics
 * are summed in fp32 by each lane in vector order, then by butterflies in each warp, then
 * over the team's warps in warp order (ftk_team_sum): deterministic. The output is written
 * from the registers; w is read with 16-byte loads (the same D elements for every row:
 * from cache). That path needs D % 8 == 0, x, w, out (and dy) 16-byte aligned and a row
 * that fits in 8 warps' registers (D <= 2048 NV); otherwise the fallback walks the row one
 * element at a time, reading x (and dy) twice, with the same team geometry. */

/* Warps per row: the fewest (a power of two) whose lanes hold ceil(d / 8) vectors at nv a
 * lane; 16 when even 8 warps cannot (the fallback then). codegen/emit.c's norm_warps is the
 * same function. */
__device__ __forceinline__ int ftk_norm_warps(long long d, int nv)
{
    long long nvec = (d + 7) / 8;
    int w = 1;
    while (w < 16 && (long long)32 * w * nv < nvec)
        w *= 2;
    return w;
}

/* A block's threads as teams of w warps (a power of two, at most the block's warps): team
 * `team` of `nteam`, this thread t of nt = 32 w in it, its warp `wt` in the team. Warps
 * past the last whole team (blocks of other sizes) get team = nteam and do no rows. */
struct ftk_norm_team {
    int w, t, nt, team, nteam, wt;
};

__device__ __forceinline__ ftk_norm_team ftk_norm_team_of(int w)
{
    ftk_norm_team m;
    int warp = threadIdx.x >> 5;
    m.w = w;
    m.nt = 32 * w;
    m.nteam = (int)(blockDim.x >> 5) / w;
    m.team = warp / w;
    m.wt = warp - m.team * w;
    m.t = m.wt * 32 + (threadIdx.x & 31);
    return m;
}

/* v[k] summed over the team, the same bits in every lane of it: butterflies in each warp,
 * then (w > 1) the team's warp partials in warp order. Every thread of the block calls it
 * the same number of times (w > 1 synchronises the block). */
template <int K> __device__ __forceinline__ void ftk_team_sum(const ftk_norm_team &m, float (&v)[K])
{
#pragma unroll
    for (int k = 0; k < K; k++)
        v[k] = ftk_warp_sum(v[k]);
    if (m.w == 1)
        return;
    __shared__ float part[K][32];
    int warp = threadIdx.x >> 5;
    __syncthreads(); /* an earlier call's readers are done */
    if ((threadIdx.x & 31) == 0)
#pragma unroll
        for (int k = 0; k < K; k++)
            part[k][warp] = v[k];
    __syncthreads();
    int first = warp - m.wt;
#pragma unroll
    for (int k = 0; k < K; k++) {
        float s = 0.0f;
        for (int i = 0; i < m.w; i++)
            s += part[k][first + i];
        v[k] = s;
    }
}

/* The team geometry of a row kernel holding nv vectors a lane: *fast when the register
 * path applies (ok: the caller's alignment and width conditions). The fallback takes the
 * same team size, capped at the block's warps. */
__device__ __forceinline__ ftk_norm_team ftk_norm_setup(long long d, int nv, bool ok, bool *fast)
{
    int nw = (int)(blockDim.x >> 5), w = ftk_norm_warps(d, nv);
    *fast = ok && d % 8 == 0 && w <= nw && w <= 8;
    while (w > nw || w > 8)
        w >>= 1;
    return ftk_norm_team_of(w);
}

namespace ftk {

/* (x[..., D], w[D]) -> x * rsqrt(mean(x^2) + eps) * w */
template <class TX, class TW, class TO> __device__ __forceinline__ void rmsnorm(const ftk_args_t &a)
{
    constexpr int NV = FTK_NORM_LANE_BYTES / (8 * (int)sizeof(TX));
    typedef ftk_v8<TX> VX;
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d, nvec = d / 8;
    float eps = (float)a.fp[0];
    bool fast;
    ftk_norm_team m = ftk_norm_setup(d, NV, ftk_al16(a.in[0]) && ftk_al16(a.in[1]) && ftk_al16(a.out), &fast);
    for (long long r0 = (long long)blockIdx.x * m.nteam; r0 < rows; r0 += (long long)gridDim.x * m.nteam) {
        long long r = r0 + m.team;
        bool mine = m.team < m.nteam && r < rows;
        const TX *x = (const TX *)a.in[0] + r * d;
        float s[1] = {0.0f};
        if (fast) {
            typename VX::raw xv[NV];
            int nmine = mine ? (int)nvec : 0; /* fast: nvec <= 2048 NV */
            TO *o = (TO *)a.out + r * d;
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int v = m.t + k * m.nt;
                if (v < nmine)
                    xv[k] = VX::ldr(x, v * 8);
            }
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int v = m.t + k * m.nt;
                if (v < nmine) {
                    float f[8];
                    VX::cvt(xv[k], f);
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        s[0] += f[e] * f[e];
                }
            }
            ftk_team_sum(m, s);
            float inv = 1.0f / sqrtf(s[0] / (float)d + eps);
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int v = m.t + k * m.nt;
                if (v < nmine) {
                    float f[8], g[8];
                    VX::cvt(xv[k], f);
                    ftk_v8<TW>::ld(a.in[1], v * 8, g);
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        f[e] = f[e] * inv * g[e];
                    ftk_v8<TO>::st(o, v * 8, f);
                }
            }
        } else {
            if (mine)
                for (long long j = m.t; j < d; j += m.nt) {
                    float v = ftk_f(x[j]);
                    s[0] += v * v;
                }
            ftk_team_sum(m, s);
            float inv = 1.0f / sqrtf(s[0] / (float)d + eps);
            if (mine)
                for (long long j = m.t; j < d; j += m.nt)
                    ftk_st<TO>(a.out, r * d + j, ftk_f(x[j]) * inv * ftk_ld<TW>(a.in[1], j));
        }
    }
}

/* (x, w, dy[, c]) -> dx = r (dy w - x r^2 sum(dy w x) / D) (+ c), r = rsqrt(mean(x^2) +
 * eps); the addend c (a residual stream's gradient, passes/fuse.c) is read as the row is
 * written, not held. */
template <class TX, class TW, class TY, class TC, bool ADD, class TO>
__device__ __forceinline__ void rmsnorm_bwd_x_run(const ftk_args_t &a)
{
    constexpr int NV = FTK_NORM_LANE_BYTES / (8 * (int)(sizeof(TX) + sizeof(TY)));
    typedef ftk_v8<TX> VX;
    typedef ftk_v8<TY> VY;
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d, nvec = d / 8;
    float eps = (float)a.fp[0];
    bool fast;
    ftk_norm_team m = ftk_norm_setup(d, NV,
                                     ftk_al16(a.in[0]) && ftk_al16(a.in[1]) && ftk_al16(a.in[2]) && ftk_al16(a.out) &&
                                         (!ADD || ftk_al16(a.in[3])),
                                     &fast);
    for (long long r0 = (long long)blockIdx.x * m.nteam; r0 < rows; r0 += (long long)gridDim.x * m.nteam) {
        long long r = r0 + m.team;
        bool mine = m.team < m.nteam && r < rows;
        const TX *x = (const TX *)a.in[0] + r * d;
        const TY *dy = (const TY *)a.in[2] + r * d;
        float s[2] = {0.0f, 0.0f}; /* sum x^2, sum dy w x */
        if (fast) {
            typename VX::raw xv[NV];
            typename VY::raw yv[NV];
            int nmine = mine ? (int)nvec : 0; /* fast: nvec <= 2048 NV */
            TO *o = (TO *)a.out + r * d;
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int v = m.t + k * m.nt;
                if (v < nmine) {
                    xv[k] = VX::ldr(x, v * 8);
                    yv[k] = VY::ldr(dy, v * 8);
                }
            }
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int v = m.t + k * m.nt;
                if (v < nmine) {
                    float f[8], g[8], h[8];
                    VX::cvt(xv[k], f);
                    VY::cvt(yv[k], h);
                    ftk_v8<TW>::ld(a.in[1], v * 8, g);
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        s[0] += f[e] * f[e];
                        s[1] += h[e] * g[e] * f[e];
                    }
                }
            }
            ftk_team_sum(m, s);
            float inv = 1.0f / sqrtf(s[0] / (float)d + eps);
            float c = inv * inv * s[1] / (float)d;
#pragma unroll
            for (int k = 0; k < NV; k++) {
                int v = m.t + k * m.nt;
                if (v < nmine) {
                    float f[8], g[8], h[8];
                    VX::cvt(xv[k], f);
                    VY::cvt(yv[k], h);
                    ftk_v8<TW>::ld(a.in[1], v * 8, g);
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        f[e] = inv * (h[e] * g[e] - f[e] * c);
                    if constexpr (ADD) {
                        ftk_v8<TC>::ld((const TC *)a.in[3] + r * d, v * 8, h);
#pragma unroll
                        for (int e = 0; e < 8; e++)
                            f[e] += h[e];
                    }
                    ftk_v8<TO>::st(o, v * 8, f);
                }
            }
        } else {
            if (mine)
                for (long long j = m.t; j < d; j += m.nt) {
                    float v = ftk_f(x[j]);
                    s[0] += v * v;
                    s[1] += ftk_f(dy[j]) * ftk_ld<TW>(a.in[1], j) * v;
                }
            ftk_team_sum(m, s);
            float inv = 1.0f / sqrtf(s[0] / (float)d + eps);
            float c = inv * inv * s[1] / (float)d;
            if (mine)
                for (long long j = m.t; j < d; j += m.nt)
                    ftk_st<TO>(a.out, r * d + j,
                               inv * (ftk_f(dy[j]) * ftk_ld<TW>(a.in[1], j) - ftk_f(x[j]) * c) +
                                   (ADD ? ftk_ld<TC>(a.in[3], r * d + j) : 0.0f));
        }
    }
}

template <class TX, class TW, class TY, class TO> __device__ __forceinline__ void rmsnorm_bwd_x(const ftk_args_t &a)
{
    rmsnorm_bwd_x_run<TX, TW, TY, TO, false, TO>(a);
}

template <class TX, class TW, class TY, class TC, class TO>
__device__ __forceinline__ void rmsnorm_bwd_x(const ftk_args_t &a)
{
    rmsnorm_bwd_x_run<TX, TW, TY, TC, true, TO>(a);
}

/* (x, dy) -> dw[D], dw_j = sum over rows of dy_j x_j r, in two kernels.
 *
 * rmsnorm_bwd_w_part, grid (C, column groups): block (c, g) takes the c-th contiguous chunk
 * of ceil(rows / C) rows and the columns g span, g span + gridDim.y span, ... (span =
 * blockDim.x FTK_RBW_COLS; a thread owns FTK_RBW_COLS columns, blockDim.x apart). Per batch
 * of one row per warp, warp w computes its row's r with shuffles, then every thread adds
 * the batch into its columns in row order (fp32); the chunk's column sums go to scratch
 * row c. x is read twice, the second time mostly from cache.
 *
 * rmsnorm_bwd_w_fin, one thread per column: adds the C chunk sums of its column in chunk
 * order, in double. Both orders are fixed by the grid: the result is deterministic. */
template <class TX, class TY, class TO> __device__ __forceinline__ void rmsnorm_bwd_w_part(const ftk_args_t &a)
{
    __shared__ float inv[32];
    long long d = ftk_last(a, 0), rows = ftk_numel(a, 0) / d;
    float eps = (float)a.fp[0];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    long long span = (long long)blockDim.x * FTK_RBW_COLS;
    long long per = (rows + gridDim.x - 1) / gridDim.x;
    long long r_lo = (long long)blockIdx.x * per, r_hi = r_lo + per;
    r_lo = r_lo < rows ? r_lo : rows;
    r_hi = r_hi < rows ? r_hi : rows;
    const TX *x = (const TX *)a.in[0];
    const TY *dy = (const TY *)a.in[1];
    float *part = (float *)ftk_scratch_data(a) + (long long)blockIdx.x * d;
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0)
        *(int *)a.scratch = (int)gridDim.x;
    for (long long c0 = (long long)blockIdx.y * span; c0 < d; c0 += (long long)gridDim.y * span) {
        float acc[FTK_RBW_COLS];
#pragma unroll
        for (int k = 0; k < FTK_RBW_COLS; k++)
            acc[k] = 0.0f;
        for (long long r0 = r_lo; r0 < r_hi; r0 += nw) {
            long long r = r0 + w;
            if (r < r_hi) {
                float s = 0.0f;
                ftk_each(x + r * d, 0, d, lane, 32, [&](TX v) {
                    float f = ftk_f(v);
                    s += f * f;
                });
                s = ftk_warp_sum(s);
                if (lane == 0)
                    inv[w] = 1.0f / sqrtf(s / (float)d + eps);
            }
            __syncthreads();
            int nr = r_hi - r0 < nw ? (int)(r_hi - r0) : nw, left = (int)(d - c0) - (int)threadIdx.x;
            for (int q = 0; q < nr; q++) {
                float iv = inv[q];
                const TX *xr = x + (r0 + q) * d + c0 + threadIdx.x;
                const TY *dr = dy + (r0 + q) * d + c0 + threadIdx.x;
#pragma unroll
                for (int k = 0; k < FTK_RBW_COLS; k++)
                    if (k * (int)blockDim.x < left)
                        acc[k] += ftk_f(dr[k * blockDim.x]) * ftk_f(xr[k * blockDim.x]) * iv;
            }
            __syncthreads();
        }
#pragma unroll
        for (int k = 0; k < FTK_RBW_COLS; k++) {
            long long c = c0 + threadIdx.x + (long long)k * blockDim.x;
            if (c < d)
                part[c] = acc[k];
        }
    }
}

template <class TX, class TY, class TO> __device__ __forceinline__ void rmsnorm_bwd_w_fin(const ftk_args_t &a)
{
    long long d = ftk_last(a, 0);
    int nc = *(const int *)a.scratch;
    const float *part = (const float *)ftk_scratch_data(a);
    FTK_FOR(c, d)
    {
        double s = 0.0;
        for (int k = 0; k < nc; k++)
            s += (double)part[(long long)k * d + c];
        ftk_std<TO>(a.out, c, s);
    }
}

} /* namespace ftk */
