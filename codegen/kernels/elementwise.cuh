/* elementwise.cuh — ops whose output element i depends on input elements i (plus scalars),
 * and the optimizer step.
 * defines: ftk::fill, ftk::fill_const, ftk::add, ftk::mul, ftk::scale, ftk::cast,
 *          ftk::silu, ftk::silu_bwd, ftk::swiglu, ftk::swiglu_bwd_g, ftk::swiglu_bwd_u,
 *          ftk::acc, ftk::dropout, ftk::gnorm, ftk::adamw
 * launch:  256 threads, a grid of ceil(a.n / 2048) blocks (8 elements per thread) with grid-stride loops (gnorm: 1 block).
 * Template parameters are the storage types of the inputs in order, then of the output.
 * acc and adamw work in place: the output is input 0's storage (adamw also writes inputs 2
 * and 3); every element is read before it is written, by the same thread.
 * add, mul, silu, swiglu and their backward, acc and the casts between float types go
 * through ftk_map1/2/3 (below): 8 elements per thread and step with 16-byte accesses where
 * alignment allows. */

/* FAST: __expf and __fdividef (a few ulp, against the 2^-9 of a bf16 or f16 store), used where
 * the result is stored in 16 bits: the accurate expf and IEEE division made swiglu and its
 * backward instruction-bound at 2.4-3.1 TB/s. */
template <bool FAST = false> __device__ __forceinline__ float ftk_sigmoid(float x)
{
    if constexpr (FAST)
        return __fdividef(1.0f, 1.0f + __expf(-x)); /* x -> -inf: 1 / inf = 0 */
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float z = expf(x); /* exp only sees a non-positive argument: no overflow */
    return z / (1.0f + z);
}

template <bool FAST = false> __device__ __forceinline__ float ftk_silu(float x) { return x * ftk_sigmoid<FAST>(x); }

/* d silu(x)/dx = s (1 + x (1 - s)) */
template <bool FAST = false> __device__ __forceinline__ float ftk_dsilu(float x)
{
    float s = ftk_sigmoid<FAST>(x);
    return s * (1.0f + x * (1.0f - s));
}

/* Whether an op storing into TO may take the FAST sigmoid. */
template <class TO> struct ftk_fast_ok {
    static constexpr bool value = sizeof(TO) == 2;
};

/* ---- vectorised maps ----
 * The memory-bound elementwise kernels move 8 elements per thread and step with 16-byte
 * loads and stores (two for f32) where every operand is 16-byte aligned and n is a multiple
 * of 8 (arena offsets are 256-byte aligned, so that is the common case); otherwise one
 * element at a time. Each element's arithmetic is the scalar path's, so both give the same
 * bits.
 *
 * ftk_v8<T> moves 8 elements of T at element index i (16-byte aligned): ld converts them to
 * float, st rounds 8 floats to T (round to nearest even, as ftk_dt). The row kernels
 * (norm.cuh, rope.cuh, reduce.cuh) keep rows in registers in storage form: ldr loads the
 * raw 16 (f32: 32) bytes, cvt converts them, str stores them unchanged; ldr_cs / st_cs are
 * the same accesses with the evict-first (streaming) cache hint, for data read or written a
 * last time. ftk_v8_ok<T> says whether T has them (the float types; i32 does not). */

template <class T> struct ftk_v8;
template <class T> struct ftk_v8_ok {
    static constexpr bool value = false;
};
template <> struct ftk_v8_ok<float> {
    static constexpr bool value = true;
};
template <> struct ftk_v8_ok<__nv_bfloat16> {
    static constexpr bool value = true;
};
template <> struct ftk_v8_ok<__half> {
    static constexpr bool value = true;
};

template <class A, class B> struct ftk_eqtype {
    static constexpr bool value = false;
};
template <class A> struct ftk_eqtype<A, A> {
    static constexpr bool value = true;
};

/* bf16 and f16: one uint4 of 4 packed pairs. */
template <class T, class T2> struct ftk_v8_16 {
    typedef uint4 raw;
    static __device__ __forceinline__ raw ldr(const void *p, long long i) { return *(const uint4 *)((const T *)p + i); }
    static __device__ __forceinline__ raw ldr_cs(const void *p, long long i) { return __ldcs((const uint4 *)((const T *)p + i)); }
    static __device__ __forceinline__ void str(void *p, long long i, const raw &r) { *(uint4 *)((T *)p + i) = r; }
    static __device__ __forceinline__ void pack(raw &r, const float v[8]);
    static __device__ __forceinline__ void cvt(const raw &r, float v[8]);
    static __device__ __forceinline__ void ld(const void *p, long long i, float v[8]) { cvt(ldr(p, i), v); }
    static __device__ __forceinline__ void st(void *p, long long i, const float v[8])
    {
        raw r;
        pack(r, v);
        str(p, i, r);
    }
    static __device__ __forceinline__ void st_cs(void *p, long long i, const float v[8])
    {
        raw r;
        pack(r, v);
        __stcs((uint4 *)((T *)p + i), r);
    }
};

template <> __device__ __forceinline__ void ftk_v8_16<__nv_bfloat16, __nv_bfloat162>::cvt(const uint4 &r, float v[8])
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&r;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h[k]);
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
    }
}
template <> __device__ __forceinline__ void ftk_v8_16<__nv_bfloat16, __nv_bfloat162>::pack(uint4 &r, const float v[8])
{
    __nv_bfloat162 *h = (__nv_bfloat162 *)&r;
#pragma unroll
    for (int k = 0; k < 4; k++)
        h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
}
template <> __device__ __forceinline__ void ftk_v8_16<__half, __half2>::cvt(const uint4 &r, float v[8])
{
    const __half2 *h = (const __half2 *)&r;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __half22float2(h[k]);
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
    }
}
template <> __device__ __forceinline__ void ftk_v8_16<__half, __half2>::pack(uint4 &r, const float v[8])
{
    __half2 *h = (__half2 *)&r;
#pragma unroll
    for (int k = 0; k < 4; k++)
        h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
}

template <> struct ftk_v8<__nv_bfloat16> : ftk_v8_16<__nv_bfloat16, __nv_bfloat162> {};
template <> struct ftk_v8<__half> : ftk_v8_16<__half, __half2> {};

/* f32: two float4. */
struct ftk_f8 {
    float4 a, b;
};
template <> struct ftk_v8<float> {
    typedef ftk_f8 raw;
    static __device__ __forceinline__ raw ldr(const void *p, long long i)
    {
        raw r;
        r.a = *(const float4 *)((const float *)p + i);
        r.b = *(const float4 *)((const float *)p + i + 4);
        return r;
    }
    static __device__ __forceinline__ raw ldr_cs(const void *p, long long i)
    {
        raw r;
        r.a = __ldcs((const float4 *)((const float *)p + i));
        r.b = __ldcs((const float4 *)((const float *)p + i + 4));
        return r;
    }
    static __device__ __forceinline__ void str(void *p, long long i, const raw &r)
    {
        *(float4 *)((float *)p + i) = r.a;
        *(float4 *)((float *)p + i + 4) = r.b;
    }
    static __device__ __forceinline__ void cvt(const raw &r, float v[8])
    {
        v[0] = r.a.x, v[1] = r.a.y, v[2] = r.a.z, v[3] = r.a.w, v[4] = r.b.x, v[5] = r.b.y, v[6] = r.b.z, v[7] = r.b.w;
    }
    static __device__ __forceinline__ void ld(const void *p, long long i, float v[8]) { cvt(ldr(p, i), v); }
    static __device__ __forceinline__ void st(void *p, long long i, const float v[8])
    {
        *(float4 *)((float *)p + i) = make_float4(v[0], v[1], v[2], v[3]);
        *(float4 *)((float *)p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
    }
    static __device__ __forceinline__ void st_cs(void *p, long long i, const float v[8])
    {
        __stcs((float4 *)((float *)p + i), make_float4(v[0], v[1], v[2], v[3]));
        __stcs((float4 *)((float *)p + i + 4), make_float4(v[4], v[5], v[6], v[7]));
    }
};

__device__ __forceinline__ bool ftk_al16(const void *p) { return ((unsigned long long)p & 15ull) == 0; }

/* out[i] = f(in0[i], ..., in{N-1}[i]) in float, N = 1..3 inputs of types T0.. */
template <class TO, class T0, class F> __device__ __forceinline__ void ftk_map1(const ftk_args_t &a, F f)
{
    if (a.n % 8 == 0 && ftk_al16(a.out) && ftk_al16(a.in[0])) {
        FTK_FOR(j, a.n / 8)
        {
            float x[8], r[8];
            ftk_v8<T0>::ld(a.in[0], j * 8, x);
#pragma unroll
            for (int k = 0; k < 8; k++)
                r[k] = f(x[k]);
            ftk_v8<TO>::st(a.out, j * 8, r);
        }
        return;
    }
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, f(ftk_ld<T0>(a.in[0], i)));
}

template <class TO, class T0, class T1, class F> __device__ __forceinline__ void ftk_map2(const ftk_args_t &a, F f)
{
    if (a.n % 8 == 0 && ftk_al16(a.out) && ftk_al16(a.in[0]) && ftk_al16(a.in[1])) {
        FTK_FOR(j, a.n / 8)
        {
            float x[8], y[8], r[8];
            ftk_v8<T0>::ld(a.in[0], j * 8, x);
            ftk_v8<T1>::ld(a.in[1], j * 8, y);
#pragma unroll
            for (int k = 0; k < 8; k++)
                r[k] = f(x[k], y[k]);
            ftk_v8<TO>::st(a.out, j * 8, r);
        }
        return;
    }
    FTK_FOR(i, a.n) ftk_st<TO>(a.out, i, f(ftk_ld<T0>(a.in[0], i), ftk_ld<T1>(a.in[1], i)));
}

template <class TO, class T0, class T1, class T2, class F>
__device__ __forceinline__ void ftk_map3(const ftk_args_t &a, F f)
{
    if (a.n % 8 == 0 && ftk_al16(a.out) && ftk_al16(a.in[0]) && ftk_al16(a.in[1]) && ftk_al16(a.in[2])) {
        FTK_FOR(j, a.n / 8)
        {
            float x[8], y[8], z[8], r[8];
            ftk_v8<T0>::ld(a.in[0], j * 8, x);
            ftk_v8<T1>::ld(a.in[1], j * 8, y);
            ftk_v8<T2>::ld(a.in[2], j * 8, z);
#pragma unroll
            for (int k = 0; k < 8; k++)
                r[k] = f(x[k], y[k], z[k]);
            ftk_v8<TO>::st(a.out, j * 8, r);
        }
        return;
    }
    FTK_FOR(i, a.n)
    ftk_st<TO>(a.out, i, f(ftk_ld<T0>(a.in[0], i), ftk_ld<T1>(a.in[1], i), ftk_ld<T2>(a.in[2], i)));
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
    ftk_map2<TO, TA, TB>(a, [](float x, float y) { return x + y; });
}

template <class TA, class TB, class TO> __device__ __forceinline__ void mul(const ftk_args_t &a)
{
    ftk_map2<TO, TA, TB>(a, [](float x, float y) { return x * y; });
}

/* The factor is a double: multiplied in double, then rounded once more on the store. */
template <class TA, class TO> __device__ __forceinline__ void scale(const ftk_args_t &a)
{
    double s = a.fp[0];
    FTK_FOR(i, a.n) ftk_std<TO>(a.out, i, ftk_ldd<TA>(a.in[0], i) * s);
}

/* Between float types by 16-byte accesses where aligned (ftk_map1: through float, one
 * rounding, the value ftk_cvt gives; equal types copy the raw bytes); i32 on either side
 * one element at a time (through double: exact). */
template <class TA, class TO> __device__ __forceinline__ void cast(const ftk_args_t &a)
{
    const TA *x = (const TA *)a.in[0];
    TO *o = (TO *)a.out;
    if constexpr (ftk_v8_ok<TA>::value && ftk_v8_ok<TO>::value) {
        if (a.n % 8 == 0 && ftk_al16(a.out) && ftk_al16(a.in[0])) {
            if constexpr (ftk_eqtype<TA, TO>::value) {
                FTK_FOR(j, a.n / 8) ftk_v8<TO>::str(a.out, j * 8, ftk_v8<TA>::ldr(a.in[0], j * 8));
            } else {
                ftk_map1<TO, TA>(a, [](float v) { return v; });
            }
            return;
        }
    }
    FTK_FOR(i, a.n) o[i] = ftk_cvt<TO, TA>::go(x[i]);
}

template <class TX, class TO> __device__ __forceinline__ void silu(const ftk_args_t &a)
{
    ftk_map1<TO, TX>(a, [](float x) { return ftk_silu<ftk_fast_ok<TO>::value>(x); });
}

/* (x, dy) -> dy * silu'(x) */
template <class TX, class TY, class TO> __device__ __forceinline__ void silu_bwd(const ftk_args_t &a)
{
    ftk_map2<TO, TX, TY>(a, [](float x, float dy) { return dy * ftk_dsilu<ftk_fast_ok<TO>::value>(x); });
}

/* (g, u) -> silu(g) * u */
template <class TG, class TU, class TO> __device__ __forceinline__ void swiglu(const ftk_args_t &a)
{
    ftk_map2<TO, TG, TU>(a, [](float g, float u) { return ftk_silu<ftk_fast_ok<TO>::value>(g) * u; });
}

/* (g, u, dy) -> dy * u * silu'(g) */
template <class TG, class TU, class TY, class TO> __device__ __forceinline__ void swiglu_bwd_g(const ftk_args_t &a)
{
    ftk_map3<TO, TG, TU, TY>(a,
                             [](float g, float u, float dy) { return dy * u * ftk_dsilu<ftk_fast_ok<TO>::value>(g); });
}

/* (g, dy) -> dy * silu(g) */
template <class TG, class TY, class TO> __device__ __forceinline__ void swiglu_bwd_u(const ftk_args_t &a)
{
    ftk_map2<TO, TG, TY>(a, [](float g, float dy) { return dy * ftk_silu<ftk_fast_ok<TO>::value>(g); });
}

/* (buf, x) -> buf += x in place (the output is buf). */
template <class TB, class TX, class TO> __device__ __forceinline__ void acc(const ftk_args_t &a)
{
    ftk_map2<TO, TB, TX>(a, [](float b, float x) { return b + x; });
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

/* AdamW's per-step constants, from the hyper-parameter tensor and the global norm. */
struct ftk_adamw_k {
    float gscale, b1, b2, keep, step, ibc2, eps;
};

/* One element: m and v updated, the new weight returned (in float, as torch's AdamW on f32
 * state; the CPU reference's double differs by float rounding). */
__device__ __forceinline__ float ftk_adamw_el(const ftk_adamw_k &k, float w, float g, float &m, float &v)
{
    float gr = g * k.gscale;
    m = k.b1 * m + (1.0f - k.b1) * gr;
    v = k.b2 * v + (1.0f - k.b2) * gr * gr;
    return w * k.keep - k.step * m / (sqrtf(v * k.ibc2) + k.eps);
}

/* (w, g, m, v, hyper, gnorm) -> w, m, v updated in place: torch.optim.AdamW on the
 * per-token mean gradient, clipped by the global norm (ir/ops_tensor.c adamw_cpu). Memory-
 * bound: 8 elements per thread and 16-byte accesses where alignment allows (the double
 * arithmetic this kernel had ran it at 2.6 TB/s). */
template <class TW, class TG, class TM, class TV, class TH, class TN, class TO>
__device__ __forceinline__ void adamw(const ftk_args_t &a)
{
    const void *hy = a.in[4];
    double gn = ftk_ldd<TN>(a.in[5], 0), clip = ftk_ldd<TH>(hy, FTK_HYPER_CLIP);
    double coef = clip > 0 && gn > clip ? clip / (gn + 1e-6) : 1.0;
    double lr = ftk_ldd<TH>(hy, FTK_HYPER_LR);
    double decay = a.ip[0] ? lr * ftk_ldd<TH>(hy, FTK_HYPER_WD) : 0.0;
    ftk_adamw_k k;
    k.gscale = (float)(ftk_ldd<TH>(hy, FTK_HYPER_INV_NTOK) * coef);
    k.b1 = (float)ftk_ldd<TH>(hy, FTK_HYPER_BETA1);
    k.b2 = (float)ftk_ldd<TH>(hy, FTK_HYPER_BETA2);
    k.eps = (float)ftk_ldd<TH>(hy, FTK_HYPER_EPS);
    k.keep = (float)(1.0 - decay);
    k.step = (float)(lr / ftk_ldd<TH>(hy, FTK_HYPER_BC1));
    k.ibc2 = (float)(1.0 / ftk_ldd<TH>(hy, FTK_HYPER_BC2));
    if constexpr (ftk_v8_ok<TW>::value && ftk_v8_ok<TG>::value && ftk_v8_ok<TM>::value && ftk_v8_ok<TV>::value &&
                  ftk_eqtype<TW, TO>::value) {
        if (a.n % 8 == 0 && ftk_al16(a.in[0]) && ftk_al16(a.in[1]) && ftk_al16(a.in[2]) && ftk_al16(a.in[3])) {
            FTK_FOR(j, a.n / 8)
            {
                float w[8], g[8], m[8], v[8];
                ftk_v8<TW>::ld(a.in[0], j * 8, w);
                ftk_v8<TG>::ld(a.in[1], j * 8, g);
                ftk_v8<TM>::ld(a.in[2], j * 8, m);
                ftk_v8<TV>::ld(a.in[3], j * 8, v);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    w[e] = ftk_adamw_el(k, w[e], g[e], m[e], v[e]);
                ftk_v8<TM>::st(a.in[2], j * 8, m);
                ftk_v8<TV>::st(a.in[3], j * 8, v);
                ftk_v8<TO>::st(a.out, j * 8, w);
            }
            return;
        }
    }
    FTK_FOR(i, a.n)
    {
        float m = ftk_ld<TM>(a.in[2], i), v = ftk_ld<TV>(a.in[3], i);
        float w = ftk_adamw_el(k, ftk_ld<TW>(a.in[0], i), ftk_ld<TG>(a.in[1], i), m, v);
        ftk_st<TM>(a.in[2], i, m);
        ftk_st<TV>(a.in[3], i, v);
        ftk_st<TO>(a.out, i, w);
    }
}

} /* namespace ftk */
