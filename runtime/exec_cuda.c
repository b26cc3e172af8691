/* exec_cuda.c — the CUDA executor. Everything a step needs is prepared once, when it opens:
 * one arena allocation laid out by the memory planner (plus the cuBLASLt workspace and the
 * kernels' scratch buffer, sized by the largest launch record's need), the plan's cubin
 * loaded with cudaLibraryLoadData and every kernel resolved by name, one ftk_args_t per
 * scheduled node (arena pointers, shapes, op parameters, the scratch pointer), and for
 * every matmul a cuBLASLt descriptor, its layouts and an algorithm chosen once for a fixed
 * workspace. Running a phase is then a walk over prepared records: cuLaunchKernel (twice
 * for a two-stage node) or cublasLtMatmul on one stream, then one synchronisation. From
 * the second run of a phase on, the walk is captured once into a CUDA graph and replayed
 * (FTC_NO_CUDA_GRAPH=1 turns that off).
 *
 * Nothing links libcuda: cuLaunchKernel and the few other driver calls are reached through
 * cudaGetDriverEntryPointByVersion, so ftrun still starts where no driver exists. Every
 * CUDA, driver and cuBLASLt return code is checked and a failure names the call, the node
 * and, for a launch, the kernel. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "exec_cuda.h"
#include "weights.h"

int rt_exec_open_cuda(rt_exec_t *x, const plan_t *p, ft_err_t *e)
{
    memset(x, 0, sizeof *x);
    const cg_module_t *m = rt_plan_cuda_module(p);
    if (!m)
        return ft_fail(e, "the plan has no CUDA kernels (it was compiled for target '%s'); compile it with --target "
                          "sm_XX for the GPU's architecture",
                       p->target);
    return rt_exec_open_cuda_module(x, &p->g, m, e);
}

#ifndef FTC_HAVE_CUDA

int rt_exec_open_cuda_module(rt_exec_t *x, const ir_graph_t *g, const cg_module_t *m, ft_err_t *e)
{
    (void)g;
    (void)m;
    memset(x, 0, sizeof *x);
    return ft_fail(e, "the CUDA executor is not in this build (it was built without the CUDA toolkit)");
}

int rt_exec_cuda_fill(rt_exec_t *x, int byte, ft_err_t *e)
{
    (void)x;
    (void)byte;
    return ft_fail(e, "the CUDA executor is not in this build (it was built without the CUDA toolkit)");
}

#else

#include <cublasLt.h>
#include <cuda.h>
#include <cuda_runtime.h>

_Static_assert(FTK_MAX_IN == IR_MAX_SRC, "ftk_args_t must hold every input of a node");
_Static_assert(FTK_MAX_DIMS == IR_MAX_DIMS, "ftk_args_t must hold every dimension of a tensor");
_Static_assert(FTK_MAX_PARAMS == IR_MAX_PARAMS, "ftk_args_t must hold every parameter of a node");
_Static_assert(IR_PHASE_COUNT == 2, "phase_names[] lists every phase");

#define SMEM_DEFAULT_MAX (48u * 1024u) /* dynamic shared memory a kernel gets without opting in */
#define DRIVER_API_VERSION 12000       /* the driver ABI version of the entry points used */

static const char *const phase_names[IR_PHASE_COUNT] = {"micro-batch", "optimizer"};

typedef CUresult (*drv_launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                 CUstream, void **, void **);
typedef CUresult (*drv_kernel_function_t)(CUfunction *, CUkernel);
typedef CUresult (*drv_set_attribute_t)(CUfunction, CUfunction_attribute, int);
typedef CUresult (*drv_error_text_t)(CUresult, const char **);

/* A matmul as cuBLASLt sees it (column-major): the IR's row-major out[M,N] = op(a)·op(b) is
 * column-major outᵀ[N,M] = op(b)ᵀ·op(a)ᵀ, so cuBLASLt's A is the IR's b and its B the IR's a. */
typedef struct {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    const void *a, *b; /* cuBLASLt's operands: the IR's b and a */
    void *c;           /* D, the output */
    const void *cin;   /* C: the addend, or D itself (beta 0) */
    bool f64;          /* alpha/beta are double (64F compute), else float */
    float alpha32, beta32;
    double alpha64, beta64;
} cu_mm_t;

/* One scheduled node, ready to run. The struct never moves once built: params points into it. */
typedef struct {
    int node;
    cg_kind_t kind;
    int kernel; /* CG_KERNEL */
    CUfunction fn;
    unsigned grid[3], block[3], smem;
    int kernel2; /* a second kernel run right after the first on the same args, or -1 */
    CUfunction fn2;
    unsigned grid2[3], block2[3], smem2;
    ftk_args_t args;
    void *params[1]; /* {&args}: every generated kernel takes the one struct by value */
    bool has_mm;
    cu_mm_t mm; /* CG_MATMUL */
} cu_step_t;

typedef struct {
    const ir_graph_t *g;
    const cg_module_t *m;
    rt_gpu_info_t gpu;
    unsigned char *arena;
    size_t arena_alloc;
    void *ws;
    size_t ws_bytes;
    void *scratch; /* the kernels' scratch buffer (kernel_abi.h): the largest record's bytes */
    size_t scratch_bytes;
    cudaStream_t stream;
    bool has_stream;
    cudaLibrary_t lib;
    bool has_lib;
    CUfunction *fns; /* per kernel name of the module */
    CUfunction init_fn; /* ftk_init_random, which every module carries; NULL in one without kernels */
    struct {
        drv_launch_t launch;
        drv_kernel_function_t kernel_function;
        drv_set_attribute_t set_attribute;
        drv_error_text_t error_name, error_string;
    } drv;
    cublasLtHandle_t lt;
    bool has_lt;
    cu_step_t *steps; /* one per scheduled node, in schedule order */
    int nsteps;
    int nphase[IR_PHASE_COUNT];
    bool graphs; /* capture each phase into a CUDA graph after its first run */
    int runs[IR_PHASE_COUNT];
    cudaGraphExec_t gexec[IR_PHASE_COUNT];
    size_t free_at_open; /* device memory free before anything was allocated */
    int64_t peak;
    unsigned char *host; /* staging for find_nonfinite */
    size_t host_cap;
} cu_t;

/* ---- errors ---- */

static int fail_rt(ft_err_t *e, cudaError_t rc, const char *fmt, ...) FT_PRINTF(3, 4);
static int fail_rt(ft_err_t *e, cudaError_t rc, const char *fmt, ...)
{
    char what[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ft_fail(e, "cuda: %s: %s (%s)", what, cudaGetErrorString(rc), cudaGetErrorName(rc));
}

static int fail_lt(ft_err_t *e, cublasStatus_t st, const char *fmt, ...) FT_PRINTF(3, 4);
static int fail_lt(ft_err_t *e, cublasStatus_t st, const char *fmt, ...)
{
    char what[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ft_fail(e, "cuBLASLt: %s: %s (%s)", what, cublasLtGetStatusString(st), cublasLtGetStatusName(st));
}

static int fail_drv(const cu_t *c, ft_err_t *e, CUresult r, const char *fmt, ...) FT_PRINTF(4, 5);
static int fail_drv(const cu_t *c, ft_err_t *e, CUresult r, const char *fmt, ...)
{
    char what[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *name = NULL, *text = NULL;
    if (!c->drv.error_name || c->drv.error_name(r, &name) != CUDA_SUCCESS || !name)
        name = "?";
    if (!c->drv.error_string || c->drv.error_string(r, &text) != CUDA_SUCCESS || !text)
        text = "unknown driver error";
    return ft_fail(e, "cuda driver: %s: %s (%s, %d)", what, text, name, (int)r);
}

/* "node 12 'model.layers.0.self_attn.q_proj' (matmul)" */
static const char *node_label(const cu_t *c, int id, char *buf, size_t cap)
{
    const ir_tensor_t *t = &c->g->t[id];
    snprintf(buf, cap, "node %d '%s' (%s)", id, t->name, ir_ops[t->op]->name);
    return buf;
}

static const char *kernel_name(const cu_t *c, const cu_step_t *s)
{
    return s->kind == CG_KERNEL ? c->m->names[s->kernel] : "cuBLASLt matmul";
}

/* ---- the module against the graph (host only) ---- */

static int check_module(const ir_graph_t *g, const cg_module_t *m, ft_err_t *e)
{
    if (m->nlaunch != g->nsched)
        return ft_fail(e, "cuda: the kernel module has %d launch records for %d scheduled nodes (module and graph "
                          "disagree)",
                       m->nlaunch, g->nsched);
    bool kernels = false;
    for (int k = 0; k < m->nlaunch; k++) {
        const cg_launch_t *l = &m->launch[k];
        if (l->node != g->sched[k] || l->node < 0 || l->node >= g->n)
            return ft_fail(e, "cuda: launch record %d is for node %d but the schedule runs node %d there", k, l->node,
                           g->sched[k]);
        const ir_tensor_t *t = &g->t[l->node];
        if ((unsigned)t->phase >= IR_PHASE_COUNT)
            return ft_fail(e, "cuda: scheduled node %d '%s' has no valid phase (%d)", l->node, t->name, (int)t->phase);
        switch (l->kind) {
        case CG_NOP: break;
        case CG_KERNEL:
            if (l->kernel < 0 || l->kernel >= m->nnames)
                return ft_fail(e, "cuda: launch record %d ('%s') names kernel %d of %d", k, t->name, l->kernel,
                               m->nnames);
            for (int d = 0; d < 3; d++)
                if (l->grid[d] == 0 || l->block[d] == 0)
                    return ft_fail(e, "cuda: launch record %d ('%s', kernel '%s') has an empty grid or block", k,
                                   t->name, m->names[l->kernel]);
            if (l->kernel2 < -1 || l->kernel2 >= m->nnames)
                return ft_fail(e, "cuda: launch record %d ('%s') names second kernel %d of %d", k, t->name,
                               l->kernel2, m->nnames);
            for (int d = 0; d < 3 && l->kernel2 >= 0; d++)
                if (l->grid2[d] == 0 || l->block2[d] == 0)
                    return ft_fail(e, "cuda: launch record %d ('%s', kernel '%s') has an empty grid or block", k,
                                   t->name, m->names[l->kernel2]);
            kernels = true;
            break;
        case CG_MATMUL:
            if (t->op != OP_MATMUL)
                return ft_fail(e, "cuda: launch record %d asks cuBLASLt to run '%s', a %s", k, t->name,
                               ir_ops[t->op]->name);
            break;
        default: return ft_fail(e, "cuda: launch record %d ('%s') has unknown kind %d", k, t->name, (int)l->kind);
        }
    }
    if (kernels && (!m->image || m->image_len == 0))
        return ft_fail(e, "cuda: the kernel module has launches but no cubin");
    return 0;
}

/* ---- opening ---- */

static int driver_entry(const char *sym, void **fn, ft_err_t *e)
{
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    *fn = NULL;
    cudaError_t rc = cudaGetDriverEntryPointByVersion(sym, fn, DRIVER_API_VERSION, cudaEnableDefault, &q);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "cudaGetDriverEntryPointByVersion(%s)", sym);
    if (q != cudaDriverEntryPointSuccess || !*fn)
        return ft_fail(e, "cuda: the driver does not provide %s for API version %d (query result %d)", sym,
                       DRIVER_API_VERSION, (int)q);
    return 0;
}

static int open_device(cu_t *c, ft_err_t *e)
{
    int dev = 0;
    if (rt_gpu_pick(&dev, e) != 0 || rt_gpu_info(dev, &c->gpu, e) != 0)
        return -1;
    int want = rt_arch_number(c->m->target);
    if (want != c->gpu.major * 10 + c->gpu.minor)
        return ft_fail(e, "cuda: the plan's kernels are compiled for '%s' but GPU %d (%s) is %s: compile the plan "
                          "with --target %s",
                       c->m->target, dev, c->gpu.name, c->gpu.arch, c->gpu.arch);
    cudaError_t rc = cudaSetDevice(dev);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "cudaSetDevice(%d)", dev);
    rc = cudaFree(NULL); /* creates the context now, so that it is not counted as ours below */
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "creating the CUDA context on GPU %d", dev);
    size_t total = 0;
    rc = cudaMemGetInfo(&c->free_at_open, &total);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "cudaMemGetInfo");
    rc = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "cudaStreamCreateWithFlags");
    c->has_stream = true;
    const char *ng = getenv("FTC_NO_CUDA_GRAPH");
    c->graphs = !(ng && *ng && strcmp(ng, "0") != 0);
    return 0;
}

static int alloc_memory(cu_t *c, ft_err_t *e)
{
    int64_t bytes = c->g->arena_bytes;
    c->arena_alloc = (size_t)((bytes > 0 ? bytes : 1) + 255) / 256 * 256;
    cudaError_t rc = cudaMalloc((void **)&c->arena, c->arena_alloc);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "allocating the %zu-byte arena (%.2f GiB) on GPU %d (%s, %.1f GiB)", c->arena_alloc,
                       (double)c->arena_alloc / 1073741824.0, c->gpu.index, c->gpu.name,
                       (double)c->gpu.mem_bytes / 1073741824.0);
    rc = cudaMemset(c->arena, 0, c->arena_alloc);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "clearing the arena");
    c->ws_bytes = RT_CUDA_WORKSPACE_BYTES;
    rc = cudaMalloc(&c->ws, c->ws_bytes);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "allocating the %zu-byte cuBLASLt workspace", c->ws_bytes);
    uint64_t scratch = 0;
    for (int k = 0; k < c->m->nlaunch; k++)
        if (c->m->launch[k].kind == CG_KERNEL && c->m->launch[k].scratch > scratch)
            scratch = c->m->launch[k].scratch;
    if (scratch == 0)
        return 0;
    c->scratch_bytes = (size_t)(scratch + 255) / 256 * 256;
    rc = cudaMalloc(&c->scratch, c->scratch_bytes);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "allocating the %zu-byte kernel scratch buffer", c->scratch_bytes);
    return 0;
}

static int load_module(cu_t *c, ft_err_t *e)
{
    if (driver_entry("cuGetErrorName", (void **)&c->drv.error_name, e) != 0 ||
        driver_entry("cuGetErrorString", (void **)&c->drv.error_string, e) != 0 ||
        driver_entry("cuLaunchKernel", (void **)&c->drv.launch, e) != 0 ||
        driver_entry("cuKernelGetFunction", (void **)&c->drv.kernel_function, e) != 0 ||
        driver_entry("cuFuncSetAttribute", (void **)&c->drv.set_attribute, e) != 0)
        return -1;
    const cg_module_t *m = c->m;
    if (m->nnames == 0)
        return 0;
    if (!m->image || m->image_len == 0)
        return ft_fail(e, "cuda: the kernel module names %d kernels but has no cubin", m->nnames);
    cudaError_t rc = cudaLibraryLoadData(&c->lib, m->image, NULL, NULL, 0, NULL, NULL, 0);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "loading the %zu-byte %s cubin on GPU %d (%s)", m->image_len, m->target, c->gpu.index,
                       c->gpu.arch);
    c->has_lib = true;
    c->fns = ft_xcalloc((size_t)m->nnames, sizeof *c->fns);
    for (int i = 0; i < m->nnames; i++) {
        cudaKernel_t k;
        rc = cudaLibraryGetKernel(&k, c->lib, m->names[i]);
        if (rc != cudaSuccess)
            return fail_rt(e, rc, "kernel '%s' is not in the cubin", m->names[i]);
        CUresult r = c->drv.kernel_function(&c->fns[i], (CUkernel)k);
        if (r != CUDA_SUCCESS)
            return fail_drv(c, e, r, "cuKernelGetFunction('%s')", m->names[i]);
    }
    cudaKernel_t ik;
    if (cudaLibraryGetKernel(&ik, c->lib, "ftk_init_random") == cudaSuccess) {
        CUresult r = c->drv.kernel_function(&c->init_fn, (CUkernel)ik);
        if (r != CUDA_SUCCESS)
            return fail_drv(c, e, r, "cuKernelGetFunction('ftk_init_random')");
    } else {
        (void)cudaGetLastError(); /* a plan from before the kernel existed: the host initialises */
    }
    /* kernels asking for more than the default dynamic shared memory opt in, once each, to
     * the most any of their launches asks for */
    unsigned *need = ft_xcalloc((size_t)m->nnames, sizeof *need);
    int rc2 = 0;
    for (int k = 0; k < m->nlaunch * 2 && rc2 == 0; k++) {
        const cg_launch_t *l = &m->launch[k / 2];
        int kern = k % 2 ? l->kernel2 : l->kernel;
        unsigned smem = k % 2 ? l->smem2 : l->smem;
        if (l->kind != CG_KERNEL || kern < 0)
            continue;
        if ((int64_t)smem > c->gpu.smem_optin) {
            char lb[256];
            rc2 = ft_fail(e, "cuda: %s asks kernel '%s' for %u bytes of shared memory; %s allows %lld per block",
                          node_label(c, l->node, lb, sizeof lb), m->names[kern], smem, c->gpu.name,
                          (long long)c->gpu.smem_optin);
            break;
        }
        if (smem > need[kern])
            need[kern] = smem;
    }
    for (int i = 0; i < m->nnames && rc2 == 0; i++) {
        if (need[i] <= SMEM_DEFAULT_MAX)
            continue;
        CUresult r = c->drv.set_attribute(c->fns[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)need[i]);
        if (r != CUDA_SUCCESS)
            rc2 = fail_drv(c, e, r, "raising kernel '%s' to %u bytes of dynamic shared memory", m->names[i], need[i]);
    }
    free(need);
    return rc2;
}

/* Shape of tensor t in slot i of the argument block: its extents, then 1s. */
static void put_shape(ftk_args_t *a, int i, const ir_tensor_t *t)
{
    a->ndim[i] = t->ndim;
    a->dtype[i] = (int)t->dtype;
    for (int d = 0; d < FTK_MAX_DIMS; d++)
        a->shape[i][d] = d < t->ndim ? (long long)t->shape[d] : 1;
}

static int tensor_ptr(const cu_t *c, int id, unsigned char **p, ft_err_t *e)
{
    const ir_tensor_t *t = &c->g->t[id];
    if (t->offset < 0 || t->offset + ir_nbytes(t) > c->g->arena_bytes)
        return ft_fail(e, "cuda: tensor %d '%s' has no place in the arena (offset %lld, %lld bytes, arena %lld)", id,
                       t->name, (long long)t->offset, (long long)ir_nbytes(t), (long long)c->g->arena_bytes);
    *p = c->arena + t->offset;
    return 0;
}

static int build_args(cu_t *c, int id, ftk_args_t *a, ft_err_t *e)
{
    const ir_tensor_t *t = &c->g->t[id];
    memset(a, 0, sizeof *a);
    for (int i = 0; i <= FTK_MAX_IN; i++)
        for (int d = 0; d < FTK_MAX_DIMS; d++)
            a->shape[i][d] = 1;
    for (int s = 0; s < t->nsrc; s++) {
        unsigned char *p = NULL;
        if (tensor_ptr(c, t->src[s], &p, e) != 0)
            return -1;
        a->in[s] = p;
        put_shape(a, s, &c->g->t[t->src[s]]);
    }
    if (ir_in_place(t)) {
        a->out = a->in[ir_alias_src(t)]; /* in place: the output is that input's storage */
    } else {
        unsigned char *p = NULL;
        if (tensor_ptr(c, id, &p, e) != 0)
            return -1;
        a->out = p;
    }
    put_shape(a, FTK_OUT, t);
    a->scratch = c->scratch;
    a->n = (long long)ir_numel(t);
    for (int i = 0; i < FTK_MAX_PARAMS; i++) {
        a->ip[i] = (long long)t->ip[i];
        a->fp[i] = t->fp[i];
    }
    return 0;
}

static int lt_type(ir_dtype_t dt, cudaDataType_t *ty)
{
    switch (dt) {
    case IR_F32: *ty = CUDA_R_32F; return 0;
    case IR_BF16: *ty = CUDA_R_16BF; return 0;
    case IR_F16: *ty = CUDA_R_16F; return 0;
    case IR_F64: *ty = CUDA_R_64F; return 0;
    default: return -1;
    }
}

static int layout(cublasLtMatrixLayout_t *l, cudaDataType_t ty, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                  const char *what, const char *label, ft_err_t *e)
{
    cublasStatus_t st = cublasLtMatrixLayoutCreate(l, ty, (uint64_t)rows, (uint64_t)cols, ld);
    if (st != CUBLAS_STATUS_SUCCESS)
        return fail_lt(e, st, "%s: layout of %s (%lld x %lld)", label, what, (long long)rows, (long long)cols);
    if (batch <= 1)
        return 0;
    int32_t count = (int32_t)batch;
    int64_t stride = rows * cols;
    st = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
    if (st != CUBLAS_STATUS_SUCCESS)
        return fail_lt(e, st, "%s: batch of %lld for %s", label, (long long)batch, what);
    return 0;
}

/* Float32 inputs use CUBLAS_COMPUTE_32F: full fp32 products and sums, never TF32 (that
 * would need CUBLAS_COMPUTE_32F_FAST_TF32), so results stay close to the CPU reference.
 * 16-bit inputs multiply in fp32 too; the output takes the node's dtype. */
static int setup_matmul(cu_t *c, cu_step_t *s, ft_err_t *e)
{
    const ir_tensor_t *t = &c->g->t[s->node];
    const ir_tensor_t *A = &c->g->t[t->src[0]], *B = &c->g->t[t->src[1]];
    char label[256];
    node_label(c, s->node, label, sizeof label);
    if ((A->ndim != 2 && A->ndim != 3) || B->ndim != A->ndim || t->ndim != A->ndim)
        return ft_fail(e, "cuda: %s: cuBLASLt runs 2-D or 3-D matmuls, got %d-D x %d-D", label, A->ndim, B->ndim);
    bool ta = t->ip[0] != 0, tb = t->ip[1] != 0;
    int r = A->ndim - 2;
    int64_t batch = r ? A->shape[0] : 1;
    int64_t M = ta ? A->shape[r + 1] : A->shape[r], K = ta ? A->shape[r] : A->shape[r + 1];
    int64_t N = tb ? B->shape[r] : B->shape[r + 1];
    if (t->shape[r] != M || t->shape[r + 1] != N || (r && (B->shape[0] != batch || t->shape[0] != batch)))
        return ft_fail(e, "cuda: %s: output shape does not match its operands", label);
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || batch > INT32_MAX)
        return ft_fail(e, "cuda: %s: %lld x %lld x %lld (batch %lld) is too large for one cuBLASLt call", label,
                       (long long)M, (long long)N, (long long)K, (long long)batch);
    cudaDataType_t tin, tout;
    if (A->dtype != B->dtype || lt_type(A->dtype, &tin) != 0 || lt_type(t->dtype, &tout) != 0)
        return ft_fail(e, "cuda: %s: no cuBLASLt matmul for %s x %s -> %s", label, ir_dtype_name(A->dtype),
                       ir_dtype_name(B->dtype), ir_dtype_name(t->dtype));
    cu_mm_t *mm = &s->mm;
    mm->f64 = A->dtype == IR_F64;
    if (mm->f64 != (t->dtype == IR_F64))
        return ft_fail(e, "cuda: %s: cuBLASLt multiplies f64 only into f64", label);
    /* with an addend (third input) the product lands on it: D = A·B + C, C ≠ D in general */
    bool add = t->nsrc == 3;
    if (add && c->g->t[t->src[2]].dtype != t->dtype)
        return ft_fail(e, "cuda: %s: the addend's dtype differs from the output's", label);
    mm->alpha32 = (float)ir_matmul_alpha(t);
    mm->beta32 = add ? 1.0f : 0.0f;
    mm->alpha64 = ir_matmul_alpha(t);
    mm->beta64 = add ? 1.0 : 0.0;
    cublasStatus_t st = cublasLtMatmulDescCreate(&mm->desc, mm->f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F,
                                                 mm->f64 ? CUDA_R_64F : CUDA_R_32F);
    if (st != CUBLAS_STATUS_SUCCESS)
        return fail_lt(e, st, "%s: cublasLtMatmulDescCreate", label);
    s->has_mm = true;
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    st = cublasLtMatmulDescSetAttribute(mm->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(mm->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
    if (st != CUBLAS_STATUS_SUCCESS)
        return fail_lt(e, st, "%s: setting the transposes", label);
    /* column-major views of the row-major storage: b [K,N] is (N x K, ld N), b [N,K] is
     * (K x N, ld K); a [M,K] is (K x M, ld K), a [K,M] is (M x K, ld M); out is (N x M, ld N) */
    if (layout(&mm->la, tin, tb ? K : N, tb ? N : K, tb ? K : N, batch, "b", label, e) != 0 ||
        layout(&mm->lb, tin, ta ? M : K, ta ? K : M, ta ? M : K, batch, "a", label, e) != 0 ||
        layout(&mm->lc, tout, N, M, N, batch, "the output", label, e) != 0)
        return -1;
    cublasLtMatmulPreference_t pref;
    st = cublasLtMatmulPreferenceCreate(&pref);
    if (st != CUBLAS_STATUS_SUCCESS)
        return fail_lt(e, st, "%s: cublasLtMatmulPreferenceCreate", label);
    size_t ws = c->ws_bytes;
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t hr;
    memset(&hr, 0, sizeof hr);
    int got = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->lt, mm->desc, mm->la, mm->lb, mm->lc, mm->lc, pref, 1, &hr, &got);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || got < 1)
        return fail_lt(e, st != CUBLAS_STATUS_SUCCESS ? st : CUBLAS_STATUS_NOT_SUPPORTED,
                       "%s: no algorithm for %s%s x %s%s -> %s, M=%lld N=%lld K=%lld batch %lld within a %zu-byte "
                       "workspace",
                       label, ir_dtype_name(A->dtype), ta ? "^T" : "", ir_dtype_name(B->dtype), tb ? "^T" : "",
                       ir_dtype_name(t->dtype), (long long)M, (long long)N, (long long)K, (long long)batch, ws);
    mm->algo = hr.algo;
    mm->a = s->args.in[1];
    mm->b = s->args.in[0];
    mm->c = s->args.out;
    mm->cin = add ? s->args.in[2] : s->args.out;
    return 0;
}

static int build_steps(cu_t *c, ft_err_t *e)
{
    const cg_module_t *m = c->m;
    c->nsteps = m->nlaunch;
    c->steps = ft_xcalloc((size_t)(c->nsteps ? c->nsteps : 1), sizeof *c->steps);
    for (int k = 0; k < c->nsteps; k++) {
        const cg_launch_t *l = &m->launch[k];
        cu_step_t *s = &c->steps[k];
        s->node = l->node;
        s->kind = l->kind;
        s->kernel = l->kernel;
        memcpy(s->grid, l->grid, sizeof s->grid);
        memcpy(s->block, l->block, sizeof s->block);
        s->smem = l->smem;
        s->kernel2 = l->kernel2;
        memcpy(s->grid2, l->grid2, sizeof s->grid2);
        memcpy(s->block2, l->block2, sizeof s->block2);
        s->smem2 = l->smem2;
        s->params[0] = &s->args;
        c->nphase[c->g->t[l->node].phase]++;
        if (l->kind == CG_NOP)
            continue;
        if (build_args(c, l->node, &s->args, e) != 0)
            return -1;
        if (l->kind == CG_KERNEL) {
            s->fn = c->fns[l->kernel];
            s->fn2 = l->kernel2 >= 0 ? c->fns[l->kernel2] : NULL;
            continue;
        }
        if (!c->has_lt) {
            cublasStatus_t st = cublasLtCreate(&c->lt);
            if (st != CUBLAS_STATUS_SUCCESS)
                return fail_lt(e, st, "cublasLtCreate");
            c->has_lt = true;
        }
        if (setup_matmul(c, s, e) != 0)
            return -1;
    }
    return 0;
}

static void sample_memory(cu_t *c)
{
    size_t fr = 0, total = 0;
    if (cudaMemGetInfo(&fr, &total) != cudaSuccess)
        return;
    int64_t used = c->free_at_open > fr ? (int64_t)(c->free_at_open - fr) : 0;
    if (used > c->peak)
        c->peak = used;
}

static void cu_free(cu_t *c)
{
    for (int ph = 0; ph < IR_PHASE_COUNT; ph++)
        if (c->gexec[ph])
            cudaGraphExecDestroy(c->gexec[ph]);
    for (int k = 0; c->steps && k < c->nsteps; k++) {
        cu_mm_t *mm = &c->steps[k].mm;
        if (!c->steps[k].has_mm)
            continue;
        if (mm->la)
            cublasLtMatrixLayoutDestroy(mm->la);
        if (mm->lb)
            cublasLtMatrixLayoutDestroy(mm->lb);
        if (mm->lc)
            cublasLtMatrixLayoutDestroy(mm->lc);
        cublasLtMatmulDescDestroy(mm->desc);
    }
    if (c->has_lt)
        cublasLtDestroy(c->lt);
    if (c->has_lib)
        cudaLibraryUnload(c->lib);
    if (c->ws)
        cudaFree(c->ws);
    if (c->scratch)
        cudaFree(c->scratch);
    if (c->arena)
        cudaFree(c->arena);
    if (c->has_stream)
        cudaStreamDestroy(c->stream);
    free(c->steps);
    free(c->fns);
    free(c->host);
    free(c);
}

/* ---- running ---- */

static int enqueue_step(cu_t *c, cu_step_t *s, ft_err_t *e)
{
    char lb[256];
    if (s->kind == CG_KERNEL) {
        CUresult r = c->drv.launch(s->fn, s->grid[0], s->grid[1], s->grid[2], s->block[0], s->block[1], s->block[2],
                                   s->smem, (CUstream)c->stream, s->params, NULL);
        if (r != CUDA_SUCCESS)
            return fail_drv(c, e, r, "%s: launching kernel '%s' (grid %u,%u,%u block %u,%u,%u, %u bytes shared)",
                            node_label(c, s->node, lb, sizeof lb), kernel_name(c, s), s->grid[0], s->grid[1],
                            s->grid[2], s->block[0], s->block[1], s->block[2], s->smem);
        if (s->kernel2 >= 0) { /* the second kernel of a two-stage node: same stream, same args */
            r = c->drv.launch(s->fn2, s->grid2[0], s->grid2[1], s->grid2[2], s->block2[0], s->block2[1], s->block2[2],
                              s->smem2, (CUstream)c->stream, s->params, NULL);
            if (r != CUDA_SUCCESS)
                return fail_drv(c, e, r, "%s: launching kernel '%s' (grid %u,%u,%u block %u,%u,%u, %u bytes shared)",
                                node_label(c, s->node, lb, sizeof lb), c->m->names[s->kernel2], s->grid2[0],
                                s->grid2[1], s->grid2[2], s->block2[0], s->block2[1], s->block2[2], s->smem2);
        }
    } else if (s->kind == CG_MATMUL) {
        cu_mm_t *mm = &s->mm;
        const void *alpha = mm->f64 ? (const void *)&mm->alpha64 : (const void *)&mm->alpha32;
        const void *beta = mm->f64 ? (const void *)&mm->beta64 : (const void *)&mm->beta32;
        cublasStatus_t st = cublasLtMatmul(c->lt, mm->desc, alpha, mm->a, mm->la, mm->b, mm->lb, beta, mm->cin, mm->lc,
                                           mm->c, mm->lc, &mm->algo, c->ws, c->ws_bytes, c->stream);
        if (st != CUBLAS_STATUS_SUCCESS)
            return fail_lt(e, st, "%s: cublasLtMatmul", node_label(c, s->node, lb, sizeof lb));
    }
    return 0;
}

static int enqueue_phase(cu_t *c, ir_phase_t ph, ft_err_t *e)
{
    for (int k = 0; k < c->nsteps; k++)
        if (c->g->t[c->steps[k].node].phase == ph && enqueue_step(c, &c->steps[k], e) != 0)
            return -1;
    return 0;
}

/* Waits for the stream; an error here comes from some earlier launch, which the sticky
 * error no longer names. */
static int finish(cu_t *c, const char *what, ft_err_t *e)
{
    cudaError_t rc = cudaStreamSynchronize(c->stream);
    if (rc != cudaSuccess)
        return fail_rt(e, rc,
                       "%s (a kernel failed; run once under compute-sanitizer, or with FTC_NO_CUDA_GRAPH=1 "
                       "CUDA_LAUNCH_BLOCKING=1, to name it)",
                       what);
    rc = cudaGetLastError();
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "%s", what);
    return 0;
}

static int capture_phase(cu_t *c, ir_phase_t ph, ft_err_t *e)
{
    cudaError_t rc = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "starting the capture of the %s phase", phase_names[ph]);
    int erc = enqueue_phase(c, ph, e);
    cudaGraph_t graph = NULL;
    rc = cudaStreamEndCapture(c->stream, &graph);
    if (erc != 0) {
        if (graph)
            cudaGraphDestroy(graph);
        return -1;
    }
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "capturing the %s phase into a CUDA graph", phase_names[ph]);
    rc = cudaGraphInstantiate(&c->gexec[ph], graph, 0);
    cudaGraphDestroy(graph);
    if (rc != cudaSuccess) {
        c->gexec[ph] = NULL;
        return fail_rt(e, rc, "instantiating the CUDA graph of the %s phase", phase_names[ph]);
    }
    sample_memory(c);
    return 0;
}

static cu_t *impl(rt_exec_t *x) { return x->impl; }

/* ---- the profile (ftrun --profile) ---- */

typedef struct {
    const char *what; /* op name, or "matmul" */
    double ms, flops, bytes;
    int count;
} prof_row_t;

static int cmp_prof(const void *a, const void *b)
{
    double x = ((const prof_row_t *)a)->ms, y = ((const prof_row_t *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Per-op totals, largest first, with achieved rates: what limits the phase. */
static void prof_summary(cu_t *c, ir_phase_t ph, const float *ms, FILE *f)
{
    prof_row_t rows[OP_COUNT];
    memset(rows, 0, sizeof rows);
    double total = 0;
    for (int k = 0, j = 0; k < c->nsteps; k++) {
        const ir_tensor_t *t = &c->g->t[c->steps[k].node];
        if (t->phase != ph)
            continue;
        double fl = 0, by = 0;
        ir_ops[t->op]->cost(c->g, t, &fl, &by);
        prof_row_t *r = &rows[t->op];
        r->what = ir_ops[t->op]->name;
        r->ms += ms[j];
        r->flops += fl;
        r->bytes += by;
        r->count++;
        total += ms[j++];
    }
    qsort(rows, OP_COUNT, sizeof rows[0], cmp_prof);
    fprintf(f, "# %s phase: %.3f ms in all, by op (launch by launch, CUDA events; no graph)\n", phase_names[ph], total);
    fprintf(f, "# %-14s %6s %10s %6s %10s %10s\n", "op", "nodes", "ms", "%", "TFLOP/s", "GB/s");
    for (int i = 0; i < OP_COUNT && rows[i].count; i++)
        fprintf(f, "# %-14s %6d %10.3f %6.2f %10.1f %10.1f\n", rows[i].what, rows[i].count, rows[i].ms,
                total > 0 ? 100 * rows[i].ms / total : 0, rows[i].ms > 0 ? rows[i].flops / rows[i].ms * 1e-9 : 0,
                rows[i].ms > 0 ? rows[i].bytes / rows[i].ms * 1e-6 : 0);
}

/* Runs phase ph once launch by launch with an event between nodes and writes one line per
 * node (phase, node, op, kernel, shape, ms, FLOP, bytes) and the per-op summary to f. The
 * run does the phase's work, so it stands in for a normal run. */
static int profile_phase(cu_t *c, ir_phase_t ph, FILE *f, ft_err_t *e)
{
    int n = c->nphase[ph];
    cudaEvent_t *ev = ft_xcalloc((size_t)n + 1, sizeof *ev);
    float *ms = ft_xcalloc((size_t)n + 1, sizeof *ms);
    int rc = 0, made = 0;
    for (; made <= n && rc == 0; made++) {
        cudaError_t r = cudaEventCreate(&ev[made]);
        if (r != cudaSuccess)
            rc = fail_rt(e, r, "creating profiling event %d", made);
    }
    cudaError_t r = rc ? cudaSuccess : cudaEventRecord(ev[0], c->stream);
    if (r != cudaSuccess)
        rc = fail_rt(e, r, "recording a profiling event");
    for (int k = 0, j = 0; k < c->nsteps && rc == 0; k++) {
        if (c->g->t[c->steps[k].node].phase != ph)
            continue;
        rc = enqueue_step(c, &c->steps[k], e);
        if (rc == 0 && (r = cudaEventRecord(ev[++j], c->stream)) != cudaSuccess)
            rc = fail_rt(e, r, "recording a profiling event");
    }
    if (rc == 0)
        rc = finish(c, "profiling a phase", e);
    for (int j = 0; j < n && rc == 0; j++)
        if ((r = cudaEventElapsedTime(&ms[j], ev[j], ev[j + 1])) != cudaSuccess)
            rc = fail_rt(e, r, "reading profiling event %d", j);
    for (int k = 0, j = 0; k < c->nsteps && rc == 0; k++) {
        const cu_step_t *st = &c->steps[k];
        const ir_tensor_t *t = &c->g->t[st->node];
        if (t->phase != ph)
            continue;
        char shape[96];
        double fl = 0, by = 0;
        ir_shape_str(t, shape, sizeof shape);
        ir_ops[t->op]->cost(c->g, t, &fl, &by);
        fprintf(f, "%s\t%d\t%s\t%s\t%s\t%.4f\t%.4g\t%.4g\t%s\n", phase_names[ph], st->node, ir_ops[t->op]->name,
                st->kind == CG_KERNEL ? kernel_name(c, st) : st->kind == CG_MATMUL ? "cublasLt" : "-", shape,
                (double)ms[j++], fl, by, t->name);
    }
    if (rc == 0)
        prof_summary(c, ph, ms, f);
    for (int j = 0; j < made; j++)
        cudaEventDestroy(ev[j]);
    free(ev);
    free(ms);
    return rc;
}

static int cuda_run(rt_exec_t *x, ir_phase_t ph, ft_err_t *e)
{
    cu_t *c = impl(x);
    if ((unsigned)ph >= IR_PHASE_COUNT)
        return ft_fail(e, "cuda: no phase %d", (int)ph);
    char what[64];
    snprintf(what, sizeof what, "running the %s phase", phase_names[ph]);
    /* the first run goes launch by launch, so that a bad launch is named; later runs
     * replay one graph */
    if (c->graphs && !c->gexec[ph] && c->runs[ph] > 0 && c->nphase[ph] > 0) {
        ft_err_t ce;
        if (capture_phase(c, ph, &ce) != 0) {
            fprintf(stderr, "ftrun: notice: %s; running without CUDA graphs\n", ce.msg);
            (void)cudaGetLastError();
            c->graphs = false;
        }
    }
    if (x->profile && c->runs[ph] == 2) { /* steady state: after the plain run and the capture */
        FILE *f = fopen(x->profile, "a");
        if (!f)
            return ft_fail(e, "--profile: cannot open %s: %s", x->profile, strerror(errno));
        int rc = profile_phase(c, ph, f, e);
        if (fclose(f) != 0 && rc == 0)
            rc = ft_fail(e, "--profile: writing %s: %s", x->profile, strerror(errno));
        if (rc != 0)
            return -1;
        c->runs[ph]++;
        return 0;
    }
    if (c->gexec[ph]) {
        cudaError_t rc = cudaGraphLaunch(c->gexec[ph], c->stream);
        if (rc != cudaSuccess)
            return fail_rt(e, rc, "launching the CUDA graph of the %s phase", phase_names[ph]);
    } else if (enqueue_phase(c, ph, e) != 0) {
        return -1;
    }
    c->runs[ph]++;
    return finish(c, what, e);
}

static int span(rt_exec_t *x, int id, unsigned char **p, size_t *n, ft_err_t *e)
{
    cu_t *c = impl(x);
    if (id < 0 || id >= c->g->n)
        return ft_fail(e, "cuda: no tensor %d", id);
    *n = (size_t)ir_nbytes(&c->g->t[id]);
    return tensor_ptr(c, id, p, e);
}

static int cuda_read(rt_exec_t *x, int id, void *dst, ft_err_t *e)
{
    cu_t *c = impl(x);
    unsigned char *p = NULL;
    size_t n = 0;
    if (span(x, id, &p, &n, e) != 0)
        return -1;
    cudaError_t rc = cudaMemcpyAsync(dst, p, n, cudaMemcpyDeviceToHost, c->stream);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "copying tensor '%s' (%zu bytes) to the host", c->g->t[id].name, n);
    return finish(c, "reading a tensor", e);
}

static int cuda_write(rt_exec_t *x, int id, const void *src, ft_err_t *e)
{
    cu_t *c = impl(x);
    unsigned char *p = NULL;
    size_t n = 0;
    if (span(x, id, &p, &n, e) != 0)
        return -1;
    cudaError_t rc = cudaMemcpyAsync(p, src, n, cudaMemcpyHostToDevice, c->stream);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "copying tensor '%s' (%zu bytes) to the GPU", c->g->t[id].name, n);
    return finish(c, "writing a tensor", e); /* src may be freed as soon as we return */
}

/* Stream-ordered and not waited for: the next phase runs after it on the same stream. */
static int cuda_zero(rt_exec_t *x, int id, ft_err_t *e)
{
    cu_t *c = impl(x);
    unsigned char *p = NULL;
    size_t n = 0;
    if (span(x, id, &p, &n, e) != 0)
        return -1;
    cudaError_t rc = cudaMemsetAsync(p, 0, n, c->stream);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "clearing tensor '%s' (%zu bytes)", c->g->t[id].name, n);
    return 0;
}

static bool all_finite(ir_dtype_t dt, const unsigned char *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case IR_F32: {
            float v;
            memcpy(&v, p + 4 * i, 4);
            if (!isfinite(v))
                return false;
            break;
        }
        case IR_F64: {
            double v;
            memcpy(&v, p + 8 * i, 8);
            if (!isfinite(v))
                return false;
            break;
        }
        case IR_BF16:
        case IR_F16: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint16_t exp = dt == IR_BF16 ? 0x7f80 : 0x7c00;
            if ((h & exp) == exp)
                return false;
            break;
        }
        default: return true; /* integers are always finite */
        }
    }
    return true;
}

/* The slow path after a failure: the phase again, one node at a time, each output copied
 * back and checked. */
static int cuda_find_nonfinite(rt_exec_t *x, ir_phase_t ph, int *node, ft_err_t *e)
{
    cu_t *c = impl(x);
    *node = -1;
    if ((unsigned)ph >= IR_PHASE_COUNT)
        return ft_fail(e, "cuda: no phase %d", (int)ph);
    for (int k = 0; k < c->nsteps; k++) {
        cu_step_t *s = &c->steps[k];
        const ir_tensor_t *t = &c->g->t[s->node];
        if (t->phase != ph)
            continue;
        char lb[256];
        if (enqueue_step(c, s, e) != 0 || finish(c, node_label(c, s->node, lb, sizeof lb), e) != 0)
            return -1;
        size_t n = (size_t)ir_nbytes(t);
        if (n > c->host_cap) {
            free(c->host);
            c->host = ft_xmalloc(n);
            c->host_cap = n;
        }
        if (cuda_read(x, s->node, c->host, e) != 0)
            return -1;
        if (!all_finite(t->dtype, c->host, ir_numel(t))) {
            *node = s->node;
            return 0;
        }
    }
    return 0;
}

static int cuda_device_mem(rt_exec_t *x, int64_t *now, int64_t *peak, ft_err_t *e)
{
    cu_t *c = impl(x);
    size_t fr = 0, total = 0;
    cudaError_t rc = cudaMemGetInfo(&fr, &total);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "cudaMemGetInfo");
    *now = c->free_at_open > fr ? (int64_t)(c->free_at_open - fr) : 0;
    if (*now > c->peak)
        c->peak = *now;
    *peak = c->peak;
    return 0;
}

static void cuda_destroy(rt_exec_t *x)
{
    cu_t *c = impl(x);
    if (!c)
        return;
    if (c->has_stream)
        cudaStreamSynchronize(c->stream);
    cu_free(c);
    x->impl = NULL;
}

static int cuda_init_random(rt_exec_t *x, int id, int kind, double param, uint64_t seed, ft_err_t *e);

static const rt_exec_ops_t cuda_ops = {
    .name = "cuda", .run = cuda_run, .read = cuda_read, .write = cuda_write, .zero = cuda_zero,
    .find_nonfinite = cuda_find_nonfinite, .destroy = cuda_destroy, .device_mem = cuda_device_mem,
    .init_random = cuda_init_random,
};

static int cuda_init_random(rt_exec_t *x, int id, int kind, double param, uint64_t seed, ft_err_t *e)
{
    cu_t *c = impl(x);
    const ir_tensor_t *t = &c->g->t[id];
    if (!c->init_fn || (t->dtype != IR_F32 && t->dtype != IR_BF16 && t->dtype != IR_F16))
        return rt_init_host(x, id, (plan_init_t)kind, param, seed, e); /* no init kernel, or not a float */
    unsigned char *p = NULL;
    size_t n = 0;
    if (span(x, id, &p, &n, e) != 0)
        return -1;
    ftk_args_t a;
    memset(&a, 0, sizeof a);
    a.out = p;
    a.n = (long long)ir_numel(t);
    a.dtype[FTK_OUT] = (int)t->dtype;
    a.ip[0] = kind;
    a.ip[1] = (long long)seed;
    a.fp[0] = param;
    void *params[1] = {&a};
    unsigned threads = 256, blocks = (unsigned)((a.n + threads - 1) / threads);
    if (blocks > 65536u)
        blocks = 65536u;
    if (blocks == 0)
        blocks = 1;
    CUresult r = c->drv.launch(c->init_fn, blocks, 1, 1, threads, 1, 1, 0, (CUstream)c->stream, params, NULL);
    if (r != CUDA_SUCCESS)
        return fail_drv(c, e, r, "initialising tensor '%s' on the GPU", t->name);
    return finish(c, "initialising a weight on the GPU", e);
}

int rt_exec_cuda_fill(rt_exec_t *x, int byte, ft_err_t *e)
{
    if (!x->ops || x->ops != &cuda_ops)
        return ft_fail(e, "cuda: rt_exec_cuda_fill on a %s executor", x->ops ? x->ops->name : "closed");
    cu_t *c = impl(x);
    cudaError_t rc = cudaMemsetAsync(c->arena, byte & 0xff, c->arena_alloc, c->stream);
    if (rc != cudaSuccess)
        return fail_rt(e, rc, "filling the arena with 0x%02x", byte & 0xff);
    if (c->scratch) { /* no kernel may rely on what an earlier node left there */
        rc = cudaMemsetAsync(c->scratch, byte & 0xff, c->scratch_bytes, c->stream);
        if (rc != cudaSuccess)
            return fail_rt(e, rc, "filling the kernel scratch with 0x%02x", byte & 0xff);
    }
    return finish(c, "filling the arena", e);
}

int rt_exec_open_cuda_module(rt_exec_t *x, const ir_graph_t *g, const cg_module_t *m, ft_err_t *e)
{
    memset(x, 0, sizeof *x);
    if (!m)
        return ft_fail(e, "cuda: no kernel module");
    if (check_module(g, m, e) != 0)
        return -1;
    cu_t *c = ft_xcalloc(1, sizeof *c);
    c->g = g;
    c->m = m;
    int rc = open_device(c, e);
    if (rc == 0)
        rc = alloc_memory(c, e);
    if (rc == 0)
        rc = load_module(c, e);
    if (rc == 0)
        rc = build_steps(c, e);
    if (rc == 0) {
        cudaError_t crc = cudaDeviceSynchronize();
        if (crc != cudaSuccess)
            rc = fail_rt(e, crc, "setting up GPU %d", c->gpu.index);
    }
    if (rc != 0) {
        cu_free(c);
        return -1;
    }
    sample_memory(c);
    int nmm = 0;
    for (int k = 0; k < c->nsteps; k++)
        nmm += c->steps[k].kind == CG_MATMUL;
    *x = (rt_exec_t){
        .ops = &cuda_ops, .g = g, .arena_bytes = g->arena_bytes, .peak_flops = rt_gpu_peak_flops(&c->gpu), .impl = c};
    snprintf(x->desc, sizeof x->desc,
             "CUDA executor on GPU %d, %.64s, %s, %d SMs: %d kernels, %d cuBLASLt matmuls, %zu-byte workspace, "
             "%zu-byte scratch outside the arena, CUDA graphs %s",
             c->gpu.index, c->gpu.name, c->gpu.arch, c->gpu.sms, m->nnames, nmm, c->ws_bytes, c->scratch_bytes,
             c->graphs ? "on" : "off (FTC_NO_CUDA_GRAPH)");
    return 0;
}

#endif
