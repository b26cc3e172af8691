/* elementwise.cuh — ops whose output element i depends on input elements i (plus scalars),
 * and the optimizer step.
 * defines: ftk::fill, ftk::fill_const, ftk::add, ftk::mul, ftk::scale, ftk::cast,
 *          ftk::silu, ftk::silu_bwd, ftk::swiglu, ftk::swiglu_bwd_g, ftk::swiglu_bwd_u,
 *          ftk::acc, ftk::dropout, ftk::gnorm, ftk::adamw
 * launch:  256 threads, a grid over a.n elements with a grid-stride loop (gnorm: 1 block).
 * Template parameters are the storage types of the inputs in order, then of the output.
 * acc and adamw work in place: the output is input 0's storage (adamw also writes inputs 2
 * and 3); every element is read before it is written, by the same thread. */

__device__ __forceinline__ float ftk_sigmoid(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float z = expf(x); /* exp only sees a non-positive argument: no overflow */
    return z / (1.0f + z);
}

__device__ __forceinline__ float ftk_silu(float x) { return x * ftk_sigmoid(x); }

/* d silu(x)/dx = s (1 + x (1 - s)) */
__device__ __forceinline__ float ftk_dsilu(float x)
{
    float s = ftk_sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}

namespace ftk {

/* (x scalar) -> x * fp[0] everywhere; in double, as the reference. */
template <class TX, class TO> __device__ __forceinline__ void fill(const ftk_args_t &a)
{
    double v = a.fp[0] * ftk_ldd<TX>(a.in[0], 0);
    FTK_FOR(i, a.n) ftk_std<TO>(a.out, i, v);
}

/* () -> fp[0] everywhere. */
template <class TO> __device__ __forceinline__ void fill_const(const ftk_args_t &a)
{
    double v = a.fp[0];
    FTK_FOR(i, a.n) ftk_std<TO>(a.out, i, v);
}

/* A float sum or product of two values of at most 24 bits is the correctly rounded one, so
 * these match the float64 reference bit for bit after the store. */
template <class TA, class TB, class TO> __device__ __forceinline__ void add(const ftk_args_t &a)
{
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, ftk_ld<TA>(a.in[0], i) + ftk_ld<TB>(a.in[1], i));
}

template <class TA, class TB, class TO> __device__ __forceinline__ void mul(const ftk_args_t &a)
{
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, ftk_ld<TA>(a.in[0], i) * ftk_ld<TB>(a.in[1], i));
}

/* The factor is a double: multiplied in double, then rounded once more on the store. */
template <class TA, class TO> __device__ __forceinline__ void scale(const ftk_args_t &a)
{
    double s = a.fp[0];
    FTK_FOR(i, a.n) ftk_std<TO>(a.out, i, ftk_ldd<TA>(a.in[0], i) * s);
}

template <class TA, class TO> __device__ __forceinline__ void cast(const ftk_args_t &a)
{
    const TA *x = (const TA *)a.in[0];
    TO *o = (TO *)a.out;
    FTK_FOR(i, a.n) o[i] = ftk_cvt<TO, TA>::go(x[i]);
}

template <class TX, class TO> __device__ __forceinline__ void silu(const ftk_args_t &a)
{
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, ftk_silu(ftk_ld<TX>(a.in[0], i)));
}

/* (x, dy) -> dy * silu'(x) */
template <class TX, class TY, class TO> __device__ __forceinline__ void silu_bwd(const ftk_args_t &a)
{
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, ftk_ld<TY>(a.in[1], i) * ftk_dsilu(ftk_ld<TX>(a.in[0], i)));
}

/* (g, u) -> silu(g) * u */
template <class TG, class TU, class TO> __device__ __forceinline__ void swiglu(const ftk_args_t &a)
{
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, ftk_silu(ftk_ld<TG>(a.in[0], i)) * ftk_ld<TU>(a.in[1], i));
}

/* (g, u, dy) -> dy * u * silu'(g) */
template <class TG, class TU, class TY, class TO> __device__ __forceinline__ void swiglu_bwd_g(const ftk_args_t &a)
{
    FTK_FOR(i, a.n)
    {
        float v = ftk_ld<TY>(a.in[2], i) * ftk_ld<TU>(a.in[1], i) * ftk_dsilu(ftk_ld<TG>(a.in[0], i));
        ftk_st<TO>(a.out, i, v);
    }
}

/* (g, dy) -> dy * silu(g) */
template <class TG, class TY, class TO> __device__ __forceinline__ void swiglu_bwd_u(const ftk_args_t &a)
{
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, ftk_ld<TY>(a.in[1], i) * ftk_silu(ftk_ld<TG>(a.in[0], i)));
}

/* (buf, x) -> buf += x in place (the output is buf). */
template <class TB, class TX, class TO> __device__ __forceinline__ void acc(const ftk_args_t &a)
{
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, ftk_ld<TB>(a.in[0], i) + ftk_ld<TX>(a.in[1], i));
}

__device__ __forceinline__ unsigned long long ftk_splitmix64(unsigned long long z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* (x, rng[2] i32) -> x * keep / (1 - p), p = fp[0], salt = ip[0]. The keep test is
 * ir_dropout_uniform (ir/ops_tensor.c) exactly: the rng words zero-extended from their 32
 * bits, one splitmix64 round per argument (the first three hoisted), the top 53 bits as a
 * double in [0, 1), kept when >= p; the kept value is divided in double as the reference. */
template <class TX, class TR, class TO> __device__ __forceinline__ void dropout(const ftk_args_t &a)
{
    double p = a.fp[0];
    if (p == 0.0) {
        FTK_FOR(i, a.n) ftk_std<TO>(a.out, i, ftk_ldd<TX>(a.in[0], i));
        return;
    }
    const int *rng = (const int *)a.in[1];
    unsigned long long seed = (unsigned long long)(unsigned int)rng[0];
    unsigned long long counter = (unsigned long long)(unsigned int)rng[1];
    unsigned long long salt = (unsigned long long)a.ip[0];
    unsigned long long h = ftk_splitmix64(seed);
    h = ftk_splitmix64(h ^ counter);
    h = ftk_splitmix64(h ^ salt);
    double keep_scale = 1.0 - p;
    FTK_FOR(i, a.n)
    {
        unsigned long long r = ftk_splitmix64(h ^ (unsigned long long)i);
        double u = (double)(r >> 11) * 0x1.0p-53;
        ftk_std<TO>(a.out, i, u >= p ? ftk_ldd<TX>(a.in[0], i) / keep_scale : 0.0);
    }
}

/* (sumsq scalar, hyper) -> sqrt(sumsq) * hyper[INV_NTOK]; one thread. */
template <class TS, class TH, class TO> __device__ __forceinline__ void gnorm(const ftk_args_t &a)
{
    if (blockIdx.x == 0 && threadIdx.x == 0)
        ftk_std<TO>(a.out, 0, sqrt(ftk_ldd<TS>(a.in[0], 0)) * ftk_ldd<TH>(a.in[1], FTK_HYPER_INV_NTOK));
}

/* (w, g, m, v, hyper, gnorm) -> w, m, v updated in place: torch.optim.AdamW on the
 * per-token mean gradient, clipped by the global norm (ir/ops_tensor.c adamw_cpu), in
 * double like the reference (memory-bound either way). */
template <class TW, class TG, class TM, class TV, class TH, class TN, class TO>
__device__ __forceinline__ void adamw(const ftk_args_t &a)
{
    const void *hy = a.in[4];
    double gn = ftk_ldd<TN>(a.in[5], 0), clip = ftk_ldd<TH>(hy, FTK_HYPER_CLIP);
    double coef = clip > 0 && gn > clip ? clip / (gn + 1e-6) : 1.0;
    double lr = ftk_ldd<TH>(hy, FTK_HYPER_LR), b1 = ftk_ldd<TH>(hy, FTK_HYPER_BETA1);
    double b2 = ftk_ldd<TH>(hy, FTK_HYPER_BETA2), eps = ftk_ldd<TH>(hy, FTK_HYPER_EPS);
    double decay = a.ip[0] ? lr * ftk_ldd<TH>(hy, FTK_HYPER_WD) : 0.0;
    double gscale = ftk_ldd<TH>(hy, FTK_HYPER_INV_NTOK) * coef;
    double bc1 = ftk_ldd<TH>(hy, FTK_HYPER_BC1), bc2 = ftk_ldd<TH>(hy, FTK_HYPER_BC2);
    FTK_FOR(i, a.n)
    {
        double gr = ftk_ldd<TG>(a.in[1], i) * gscale;
        double m = b1 * ftk_ldd<TM>(a.in[2], i) + (1 - b1) * gr;
        double v = b2 * ftk_ldd<TV>(a.in[3], i) + (1 - b2) * gr * gr;
        double w = ftk_ldd<TW>(a.in[0], i);
        double wi = w - decay * w;
        ftk_std<TM>(a.in[2], i, m);
        ftk_std<TV>(a.in[3], i, v);
        ftk_std<TO>(a.out, i, wi - lr * (m / bc1) / (sqrt(v / bc2) + eps));
    }
}

} /* namespace ftk */
