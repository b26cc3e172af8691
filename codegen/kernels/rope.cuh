/* rope.cuh — rotary position embedding.
 * defines: ftk_rope_freq, ftk::rope
 * launch:  256 threads, a grid over B*S*Dh/2 (token, pair) items with a grid-stride loop;
 *          dynamic shared memory Dh/2 doubles (the inverse frequencies).
 * ip[0] inverse (rotate the other way: the backward), ip[1] scaling (0 none, 1 llama3 with
 * fp[1] factor, fp[2] low, fp[3] high, ip[2] original context; 2 linear with fp[1]),
 * fp[0] theta. */

namespace ftk {

/* inv_freq[j] of ir_rope_inv_freq (ir/ops_nn.c), the same formula in double. */
__device__ __forceinline__ double ftk_rope_freq(const ftk_args_t &a, long long j, long long dh)
{
    double f = 1.0 / pow(a.fp[0], (double)(2 * j) / (double)dh);
    if (a.ip[1] == 2) {
        f /= a.fp[1];
    } else if (a.ip[1] == 1) {
        double factor = a.fp[1], low = a.fp[2], high = a.fp[3], old = (double)a.ip[2];
        double wavelen = 6.283185307179586476925286766559 / f;
        if (wavelen < old / high) {
            /* high frequency: kept */
        } else if (wavelen > old / low) {
            f = f / factor;
        } else {
            double smooth = (old / wavelen - low) / (high - low);
            f = (1 - smooth) * f / factor + smooth * f;
        }
    }
    return f;
}

/* (x[B,S,H,Dh], pos[B,S] i32) -> pairs (j, j + Dh/2) rotated by pos * inv_freq[j]; the
 * angle and its sine and cosine in double, the rotation in float. */
template <class TX, class TP, class TO> __device__ __forceinline__ void rope(const ftk_args_t &a)
{
    long long ntok = a.shape[0][0] * a.shape[0][1], nh = a.shape[0][2], dh = a.shape[0][3], half = dh / 2;
    double *inv = (double *)ftk_smem;
    for (long long j = threadIdx.x; j < half; j += blockDim.x)
        inv[j] = ftk_rope_freq(a, j, dh);
    __syncthreads();
    const int *pos = (const int *)a.in[1];
    double sign = a.ip[0] ? -1.0 : 1.0;
    FTK_FOR(i, ntok * half)
    {
        long long t = i / half, j = i - t * half;
        double sn, cs;
        sincos((double)pos[t] * inv[j], &sn, &cs);
        float c = (float)cs, s = (float)(sign * sn);
        for (long long h = 0; h < nh; h++) {
            long long base = (t * nh + h) * dh;
            float x1 = ftk_ld<TX>(a.in[0], base + j), x2 = ftk_ld<TX>(a.in[0], base + j + half);
            ftk_st<TO>(a.out, base + j, x1 * c - x2 * s);
            ftk_st<TO>(a.out, base + j + half, x2 * c + x1 * s);
        }
    }
}

} /* namespace ftk */
