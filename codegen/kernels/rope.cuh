/* rope.cuh — rotary position embedding.
 * defines: ftk_rope_freq, ftk_rope_cs, ftk::rope
 * launch:  256 threads, a grid over the B*S*Dh/16 (token, group of 8 pairs) items (Dh/2 a
 *          multiple of 8), else the B*S*Dh/2 (token, pair) items, with a grid-stride loop;
 *          dynamic shared memory Dh/2 doubles (the inverse frequencies).
 * ip[0] inverse (rotate the other way: the backward), ip[1] scaling (0 none, 1 llama3 with
 * fp[1] factor, fp[2] low, fp[3] high, ip[2] original context; 2 linear with fp[1]),
 * fp[0] theta.
 *
 * A thread takes a token and 8 consecutive pairs j (Dh/2 % 8 == 0, x and out 16-byte
 * aligned: 16-byte loads of x[j..j+8) and x[j+Dh/2..]), computes the 8 angles' sine and
 * cosine once, and rotates those pairs in every head of the token, 4 heads' loads in
 * flight at a time. Otherwise a thread takes one (token, pair) and its elements one at a
 * time. Both compute a pair's (cos, sin) by ftk_rope_cs, so forward and inverse (the same
 * values, sine negated) are exact transposes whichever path runs. */

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

/* cos and sign * sin of the angle p * f: the angle in double (as the reference), reduced to
 * [-pi, pi] in double (2 pi in two parts: the remainder is exact to ~1e-16 for any angle a
 * position reaches), then sine and cosine of that float in float (sincosf: within 2 ulp):
 * |error| < 3e-7, against 6e-8 for double sincos rounded to float, at a tenth of the cost. */
__device__ __forceinline__ void ftk_rope_cs(double p, double f, float sign, float *c, float *s)
{
    const double two_pi_hi = 6.283185307179586232, two_pi_lo = 2.4492935982947064e-16;
    double ang = p * f;
    double n = rint(ang * 0.15915494309189533577);
    double red = fma(-n, two_pi_lo, fma(-n, two_pi_hi, ang));
    float sn, cs;
    sincosf((float)red, &sn, &cs);
    *c = cs;
    *s = sign * sn;
}

/* (x[B,S,H,Dh], pos[B,S] i32) -> pairs (j, j + Dh/2) rotated by pos * inv_freq[j]; the
 * rotation in float. */
template <class TX, class TP, class TO> __device__ __forceinline__ void rope(const ftk_args_t &a)
{
    long long ntok = a.shape[0][0] * a.shape[0][1], nh = a.shape[0][2], dh = a.shape[0][3], half = dh / 2;
    double *inv = (double *)ftk_smem;
    for (long long j = threadIdx.x; j < half; j += blockDim.x)
        inv[j] = ftk_rope_freq(a, j, dh);
    __syncthreads();
    const int *pos = (const int *)a.in[1];
    float sign = a.ip[0] ? -1.0f : 1.0f;
    if constexpr (ftk_v8_ok<TX>::value && ftk_v8_ok<TO>::value) {
        if (half % 8 == 0 && ftk_al16(a.in[0]) && ftk_al16(a.out)) {
            constexpr int U = 4; /* heads in flight */
            typedef ftk_v8<TX> VX;
            long long ng = half / 8;
            FTK_FOR(i, ntok * ng)
            {
                long long t = i / ng, j0 = (i - t * ng) * 8;
                double p = (double)pos[t];
                float c[8], s[8];
#pragma unroll
                for (int k = 0; k < 8; k++)
                    ftk_rope_cs(p, inv[j0 + k], sign, &c[k], &s[k]);
                long long base = t * nh * dh + j0;
                for (long long h0 = 0; h0 < nh; h0 += U) {
                    typename VX::raw lo[U], hi[U];
#pragma unroll
                    for (int u = 0; u < U; u++)
                        if (h0 + u < nh) {
                            lo[u] = VX::ldr(a.in[0], base + (h0 + u) * dh);
                            hi[u] = VX::ldr(a.in[0], base + (h0 + u) * dh + half);
                        }
#pragma unroll
                    for (int u = 0; u < U; u++)
                        if (h0 + u < nh) {
                            float x1[8], x2[8], o1[8], o2[8];
                            VX::cvt(lo[u], x1);
                            VX::cvt(hi[u], x2);
#pragma unroll
                            for (int k = 0; k < 8; k++) {
                                o1[k] = x1[k] * c[k] - x2[k] * s[k];
                                o2[k] = x2[k] * c[k] + x1[k] * s[k];
                            }
                            ftk_v8<TO>::st(a.out, base + (h0 + u) * dh, o1);
                            ftk_v8<TO>::st(a.out, base + (h0 + u) * dh + half, o2);
                        }
                }
            }
            return;
        }
    }
    FTK_FOR(i, ntok * half)
    {
        long long t = i / half, j = i - t * half;
        float c, s;
        ftk_rope_cs((double)pos[t], inv[j], sign, &c, &s);
        for (long long h = 0; h < nh; h++) {
            long long base = (t * nh + h) * dh;
            float x1 = ftk_ld<TX>(a.in[0], base + j), x2 = ftk_ld<TX>(a.in[0], base + j + half);
            ftk_st<TO>(a.out, base + j, x1 * c - x2 * s);
            ftk_st<TO>(a.out, base + j + half, x2 * c + x1 * s);
        }
    }
}

} /* namespace ftk */
