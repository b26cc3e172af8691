/* common.cuh — what every kernel template shares.
 * defines: ftk_dt<T> (conversions from float/double to a storage type), ftk_f, ftk_ld, ftk_ldd,
 *          ftk_st, ftk_std, ftk_cvt<TO,TI> (element copy between storage types), FTK_FOR
 *          (grid-stride loop), ftk_numel, ftk_last, ftk_warp_sum, ftk_block_sum, ftk_ms
 *          (running max and scaled sum for log-sum-exp) with ftk_ms_add / ftk_ms_merge /
 *          ftk_warp_ms / ftk_block_ms, ftk_smem (the dynamic shared memory), ftk_each (a
 *          thread's elements of a slice, by 16-byte loads), ftk_scratch_data.
 *
 * Storage types are the ir_dtype_t ones: float (f32), __nv_bfloat16 (bf16), __half (f16) and
 * int (i32); codegen refuses f64 tensors. Every value is computed in float (double where it
 * is cheap and brings a kernel closer to the CPU reference) and rounded to nearest even on
 * the store, as the CPU executor does. Every kernel walks its work with loops that do not
 * depend on the grid size, so a launch with fewer blocks than the record says is still
 * correct, only slower. Reductions are deterministic: fixed per-thread order, butterfly
 * shuffles (every lane ends with the same bits) and a fixed order across warps. Block sizes
 * are multiples of 32. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define FTK_NAN __int_as_float(0x7fc00000)
#define FTK_INF __int_as_float(0x7f800000)

/* Rounding a float or double to each storage type. Integers round to nearest even and
 * saturate; NaN becomes 0 (cvt.rni.s32), the CPU reference's convention. */
template <class T> struct ftk_dt;
template <> struct ftk_dt<float> {
    static __device__ __forceinline__ float from(float v) { return v; }
    static __device__ __forceinline__ float fromd(double v) { return (float)v; }
};
template <> struct ftk_dt<__nv_bfloat16> {
    static __device__ __forceinline__ __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
    static __device__ __forceinline__ __nv_bfloat16 fromd(double v) { return __float2bfloat16_rn((float)v); }
};
template <> struct ftk_dt<__half> {
    static __device__ __forceinline__ __half from(float v) { return __float2half_rn(v); }
    static __device__ __forceinline__ __half fromd(double v) { return __float2half_rn((float)v); }
};
template <> struct ftk_dt<int> {
    static __device__ __forceinline__ int from(float v) { return __float2int_rn(v); }
    static __device__ __forceinline__ int fromd(double v) { return __double2int_rn(v); }
};

__device__ __forceinline__ float ftk_f(float x) { return x; }
__device__ __forceinline__ float ftk_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ftk_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float ftk_f(int x) { return (float)x; }
__device__ __forceinline__ double ftk_d(float x) { return (double)x; }
__device__ __forceinline__ double ftk_d(__nv_bfloat16 x) { return (double)__bfloat162float(x); }
__device__ __forceinline__ double ftk_d(__half x) { return (double)__half2float(x); }
__device__ __forceinline__ double ftk_d(int x) { return (double)x; }

/* Element i of an array of T, as float / double; stores round to T. */
template <class T> __device__ __forceinline__ float ftk_ld(const void *p, long long i) { return ftk_f(((const T *)p)[i]); }
template <class T> __device__ __forceinline__ double ftk_ldd(const void *p, long long i) { return ftk_d(((const T *)p)[i]); }
template <class T> __device__ __forceinline__ void ftk_st(void *p, long long i, float v) { ((T *)p)[i] = ftk_dt<T>::from(v); }
template <class T> __device__ __forceinline__ void ftk_std(void *p, long long i, double v) { ((T *)p)[i] = ftk_dt<T>::fromd(v); }

/* One element converted between storage types: a plain copy for equal types (exact for
 * i32 too), through double from i32 (exact), through float otherwise — the value the CPU
 * executor's double round trip gives. */
template <class TO, class TI> struct ftk_cvt {
    static __device__ __forceinline__ TO go(TI x) { return ftk_dt<TO>::from(ftk_f(x)); }
};
template <class T> struct ftk_cvt<T, T> {
    static __device__ __forceinline__ T go(T x) { return x; }
};
template <class TO> struct ftk_cvt<TO, int> {
    static __device__ __forceinline__ TO go(int x) { return ftk_dt<TO>::fromd((double)x); }
};
template <> struct ftk_cvt<int, int> {
    static __device__ __forceinline__ int go(int x) { return x; }
};

/* Grid-stride loop over [0, n). */
#define FTK_FOR(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)gridDim.x * blockDim.x)

/* Elements of tensor k (FTK_OUT for the output) and its last extent, from the shapes. */
__device__ __forceinline__ long long ftk_numel(const ftk_args_t &a, int k)
{
    long long n = 1;
    for (int d = 0; d < a.ndim[k]; d++)
        n *= a.shape[k][d];
    return n;
}

__device__ __forceinline__ long long ftk_last(const ftk_args_t &a, int k)
{
    return a.ndim[k] > 0 ? a.shape[k][a.ndim[k] - 1] : 1;
}

/* The dynamic shared memory of a launch (the record's smem bytes). */
extern __shared__ __align__(16) unsigned char ftk_smem[];

/* A node's data in the executor's scratch buffer, after the header (kernel_abi.h). */
__device__ __forceinline__ void *ftk_scratch_data(const ftk_args_t &a)
{
    return (unsigned char *)a.scratch + FTK_SCRATCH_HEAD;
}

/* Calls f(x) for the elements of p[lo, hi) that thread t of nt takes: the elements before
 * the first 16-byte boundary one each (t, t + nt, ...), then whole 16-byte vectors t,
 * t + nt, ... (their elements in order), then the tail elements one each. The split and
 * the order depend only on (p, lo, hi, t, nt), so a sum built this way is deterministic.
 * p must be aligned to its element size (the arena guarantees it). */
template <class T> struct alignas(16) ftk_vec16 {
    T e[16 / sizeof(T)];
};

template <class T, class F> __device__ __forceinline__ void ftk_each(const T *p, long long lo, long long hi, int t, int nt, F f)
{
    constexpr int E = 16 / sizeof(T);
    const T *q = p + lo;
    long long n = hi - lo;
    if (n <= 0)
        return;
    long long head = (long long)(((16u - ((unsigned long long)q & 15u)) & 15u) / sizeof(T));
    head = head < n ? head : n;
    long long nvec = (n - head) / E;
    for (long long i = t; i < head; i += nt)
        f(q[i]);
    const ftk_vec16<T> *v = (const ftk_vec16<T> *)(q + head); /* T objects, read 16 bytes at a time */
    for (long long i = t; i < nvec; i += nt) {
        ftk_vec16<T> u = v[i];
#pragma unroll
        for (int k = 0; k < E; k++)
            f(u.e[k]);
    }
    for (long long i = head + nvec * E + t; i < n; i += nt)
        f(q[i]);
}

/* ---- reductions ---- */

template <class T> __device__ __forceinline__ T ftk_warp_sum(T v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The sum over the block, returned to every thread. Callable repeatedly: the first barrier
 * keeps a new call from overwriting partials an earlier call is still reading. */
template <class T> __device__ __forceinline__ T ftk_block_sum(T v)
{
    __shared__ T part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = ftk_warp_sum(v);
    __syncthreads();
    if (lane == 0)
        part[w] = v;
    __syncthreads();
    T r = lane < nw ? part[lane] : (T)0;
    return ftk_warp_sum(r);
}

/* Running log-sum-exp state: m the maximum so far, s = sum of exp(x - m). m = -inf, s = 0
 * is the empty state. A NaN input makes s NaN, as the CPU reference's sum does. */
struct ftk_ms {
    float m, s;
};

__device__ __forceinline__ ftk_ms ftk_ms_add(ftk_ms a, float x)
{
    if (x > a.m) {
        a.s = a.s * expf(a.m - x) + 1.0f;
        a.m = x;
    } else {
        a.s += expf(x - a.m);
    }
    return a;
}

/* Symmetric in its arguments (same bits either way round), so butterflies agree. */
__device__ __forceinline__ ftk_ms ftk_ms_merge(ftk_ms a, ftk_ms b)
{
    ftk_ms r;
    if (a.m != a.m || b.m != b.m) { /* a NaN maximum poisons the result */
        r.m = r.s = FTK_NAN;
        return r;
    }
    r.m = fmaxf(a.m, b.m);
    if (r.m == -FTK_INF)
        r.s = a.s + b.s; /* both empty (or NaN sums): keep the sum's NaN */
    else
        r.s = a.s * expf(a.m - r.m) + b.s * expf(b.m - r.m);
    return r;
}

__device__ __forceinline__ ftk_ms ftk_warp_ms(ftk_ms v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        ftk_ms u;
        u.m = __shfl_xor_sync(0xffffffffu, v.m, o);
        u.s = __shfl_xor_sync(0xffffffffu, v.s, o);
        v = ftk_ms_merge(v, u);
    }
    return v;
}

__device__ __forceinline__ ftk_ms ftk_block_ms(ftk_ms v)
{
    __shared__ ftk_ms part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = ftk_warp_ms(v);
    __syncthreads();
    if (lane == 0)
        part[w] = v;
    __syncthreads();
    ftk_ms r;
    r.m = -FTK_INF;
    r.s = 0.0f;
    if (lane < nw)
        r = part[lane];
    return ftk_warp_ms(r);
}
