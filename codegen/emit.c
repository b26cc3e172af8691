/* emit.c — the GPU code generator's front half: which kernel every scheduled node runs, the
 * CUDA C++ source that defines those kernels, and the launch record of every node; then
 * cg_build, which hands the source to NVRTC (nvrtc.c) and assembles the cg_module_t.
 *
 * The kernels are C++ function templates in codegen/kernels/ (the .cuh files), embedded into the
 * library at build time (cmake/embed.cmake). A graph's source is a preamble of constants,
 * the templates, and one `extern "C"` entry point per distinct (op, input dtypes, output
 * dtype) the schedule uses, named ftk_<op>_<dtypes> and instantiating ftk::<template> with
 * those storage types (two for the two-stage ops, the second named ftk_<op>_<dtypes>_s2;
 * attention on the tensor cores has one per kernel and head dim, ftk_<op>_<dtypes>_tc<Dh>...).
 * Entry points are sorted by name and nothing else of the graph enters the text, so the
 * same kernel set always gives the same bytes and graphs that use the same kernels share
 * one compile-cache entry. Matmuls are not kernels (the runtime runs them through
 * cuBLASLt); reshapes and leaves run nothing.
 *
 * The two-stage ops (sum, mean, sumsq, xent, rmsnorm_bwd_w, embed_bwd) spread their work
 * over the GPU without float atomics: the first kernel writes partial results to the
 * executor's scratch buffer (kernel_abi.h) in a layout fixed by its grid, the second
 * combines them in a fixed order, so every run gives the same bits. The record says how
 * many scratch bytes the pair needs. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_internal.h"

/* How an op's launch is shaped (see the `launch:` line of each template file). */
typedef enum {
    SH_NONE,      /* not a kernel */
    SH_EW,        /* CG_EW_THREADS threads, a grid over the output's elements */
    SH_ROWS,      /* one block per row of input 0's last extent */
    SH_REDUCE,    /* sum, mean, sumsq: G blocks of slices, then one block adds the G partials */
    SH_XENT,      /* a block per row of logits, then one block adds the rows */
    SH_RBW,       /* rmsnorm_bwd_w: (row chunks, column groups), then a thread per column */
    SH_TINY,      /* one warp: a scalar computed by one thread */
    SH_ROPE,      /* a grid over (token, rotation pair), inverse frequencies in shared memory */
    SH_EMBED_BWD, /* one block indexes the ids, then grid (V, column groups) */
    SH_ATTN,      /* attn, attn_lse: grid (query tiles, Hq, B) */
    SH_ATTN_BWD,  /* dq as attn; dk and dv grid (key tiles, Hkv, B) */
    SH_WARP_ROWS, /* CG_EW_THREADS threads, ~32 rows of input 0's last extent a warp */
    SH_NORM,      /* rmsnorm, rmsnorm_bwd_x: CG_NORM_THREADS threads, a team of warps per row */
} shape_t;

typedef struct {
    const char *tmpl;  /* function template in namespace ftk; NULL: no kernel */
    shape_t shape;
    unsigned bounds;   /* __launch_bounds__ of the entry point: the largest block it is given */
    const char *tmpl2; /* two-stage ops: the second kernel's template (entry point name + "_s2") */
    unsigned bounds2;
    unsigned minblocks; /* the first kernel's __launch_bounds__ minimum blocks per SM (0: none) */
} cg_op_t;

_Static_assert(OP_COUNT == 37, "a new op needs its kernel (or NULL) in codegen/emit.c's ops[]");

static const cg_op_t ops[OP_COUNT] = {
    [OP_LEAF] = {NULL, SH_NONE, 0},
    [OP_FILL] = {"fill", SH_EW, CG_EW_THREADS},
    [OP_EMBED] = {"embed", SH_EW, CG_EW_THREADS},
    [OP_EMBED_BWD] = {"embed_bwd_index", SH_EMBED_BWD, CG_FIN_THREADS, "embed_bwd", CG_EW_THREADS},
    [OP_MATMUL] = {NULL, SH_NONE, 0},
    [OP_ADD] = {"add", SH_EW, CG_EW_THREADS},
    [OP_MUL] = {"mul", SH_EW, CG_EW_THREADS},
    [OP_SCALE] = {"scale", SH_EW, CG_EW_THREADS},
    [OP_CAST] = {"cast", SH_EW, CG_EW_THREADS},
    [OP_RESHAPE] = {NULL, SH_NONE, 0},
    [OP_PERMUTE] = {"permute", SH_EW, CG_EW_THREADS},
    [OP_SLICE] = {"slice", SH_EW, CG_EW_THREADS},
    [OP_SLICE_BWD] = {"slice_bwd", SH_EW, CG_EW_THREADS},
    [OP_CONCAT] = {"concat", SH_EW, CG_EW_THREADS},
    [OP_RMSNORM] = {"rmsnorm", SH_NORM, CG_NORM_THREADS, NULL, 0, CG_NORM_MIN_BLOCKS},
    [OP_RMSNORM_BWD_X] = {"rmsnorm_bwd_x", SH_NORM, CG_NORM_THREADS, NULL, 0, CG_NORM_MIN_BLOCKS},
    [OP_RMSNORM_BWD_W] = {"rmsnorm_bwd_w_part", SH_RBW, 1024, "rmsnorm_bwd_w_fin", CG_RBW_FIN_THREADS},
    [OP_ROPE] = {"rope", SH_ROPE, CG_EW_THREADS},
    [OP_SILU] = {"silu", SH_EW, CG_EW_THREADS},
    [OP_SILU_BWD] = {"silu_bwd", SH_EW, CG_EW_THREADS},
    [OP_SWIGLU] = {"swiglu", SH_EW, CG_EW_THREADS},
    [OP_SWIGLU_BWD_G] = {"swiglu_bwd_g", SH_EW, CG_EW_THREADS},
    [OP_SWIGLU_BWD_U] = {"swiglu_bwd_u", SH_EW, CG_EW_THREADS},
    [OP_ATTN] = {"attn", SH_ATTN, CG_ATT_THREADS},
    [OP_ATTN_BWD] = {"attn_bwd", SH_ATTN_BWD, CG_ATT_THREADS},
    [OP_XENT] = {"xent_rows", SH_XENT, 1024, "xent_fin", CG_FIN_THREADS},
    [OP_XENT_BWD] = {"xent_bwd", SH_ROWS, 1024},
    [OP_SUM] = {"sum_part", SH_REDUCE, CG_RED_THREADS, "sum_fin", CG_RED_THREADS},
    [OP_MEAN] = {"mean_part", SH_REDUCE, CG_RED_THREADS, "mean_fin", CG_RED_THREADS},
    [OP_DROPOUT] = {"dropout", SH_EW, CG_EW_THREADS},
    [OP_SUMSQ] = {"sumsq_part", SH_REDUCE, CG_RED_THREADS, "sumsq_fin", CG_RED_THREADS},
    [OP_ACC] = {"acc", SH_EW, CG_EW_THREADS},
    [OP_GNORM] = {"gnorm", SH_TINY, 32},
    [OP_ADAMW] = {"adamw", SH_EW, CG_EW_THREADS},
    [OP_ATTN_LSE] = {"attn_lse", SH_ATTN, CG_ATT_THREADS},
    [OP_ROWSUM] = {"rowsum", SH_WARP_ROWS, CG_EW_THREADS},
    [OP_AFTER] = {NULL, SH_NONE, 0},
};

/* The template files in the order the source needs them: the argument block, the shared
 * helpers, then the op families. Every embedded file must appear here (emit checks). */
static const char *const file_order[] = {
    "kernel_abi.h", "common.cuh", "elementwise.cuh", "movement.cuh",
    "norm.cuh", "rope.cuh", "attention.cuh", "attention_wg.cuh", "reduce.cuh", "init.cuh",
};
#define NFILES (sizeof file_order / sizeof file_order[0])

/* Storage type of each dtype in the templates; f64 has none. */
static const char *const cxx_type[IR_DTYPE_COUNT] = {
    [IR_F32] = "float", [IR_BF16] = "__nv_bfloat16", [IR_F16] = "__half", [IR_I32] = "int", [IR_F64] = NULL,
};
_Static_assert(IR_DTYPE_COUNT == 5, "a new dtype needs its storage type in codegen/emit.c's cxx_type[]");

cg_kind_t cg_op_kind(ir_op_t op)
{
    if ((unsigned)op >= OP_COUNT)
        return CG_KIND_COUNT;
    if (op == OP_MATMUL)
        return CG_MATMUL;
    return ops[op].tmpl ? CG_KERNEL : CG_NOP;
}

static const char *template_of(const ir_tensor_t *t, int stage)
{
    if (t->op == OP_FILL && t->nsrc == 0)
        return "fill_const";
    return stage == 1 ? ops[t->op].tmpl2 : ops[t->op].tmpl;
}

/* ---- attention on the tensor cores ---- */

/* attention.cuh's tensor-core kernels: which attention node runs one, and how it is shaped.
 * Each (kernel, Dh) has its own entry point, ftk_<op>_<dtypes>_tc<Dh>[_dq|_dk|_dv], whose
 * template arguments carry the configuration below and whose __launch_bounds__(threads,
 * minb) give it the registers it needs and nothing else's (the CUDA-core path keeps the
 * plain ftk_<op>_<dtypes> entry point). */
enum { ATC_FWD, ATC_LSE, ATC_DQ, ATC_DK, ATC_DV, ATC_DKV, ATC_COUNT };

typedef struct {
    int bn;   /* rows per streamed tile */
    int mi;   /* 16-row subtiles per warp: 2 (4 warps, 128 threads) or 1 (8 warps, 256 threads) */
    int oreg; /* own rows' A fragments in registers, else resident in shared memory */
    int ck;   /* dq, dk, dv: streamed rows per score step */
    int minb; /* blocks per SM the registers are budgeted for */
} attn_tc_cfg_t;

/* Chosen with ptxas (no spills in the tile loops at these register budgets) and to fit every
 * block in the 99 KiB of sm_86/89/120 at S 8192; attention.cuh's tensor-core section says what
 * bounds each. test_kernels times other configurations beside these on a GPU. */
static const attn_tc_cfg_t attn_tc_cfgs[ATC_COUNT][2] = {
    /*            Dh 64               Dh 128 */
    [ATC_FWD] = {{64, 2, 1, 0, 2}, {32, 2, 0, 0, 2}},
    [ATC_LSE] = {{64, 2, 1, 0, 3}, {64, 2, 0, 0, 3}},
    [ATC_DQ] = {{64, 2, 1, 32, 2}, {64, 1, 1, 32, 1}},
    [ATC_DK] = {{64, 2, 1, 16, 2}, {64, 1, 1, 32, 1}},
    [ATC_DV] = {{64, 2, 1, 64, 2}, {32, 2, 0, 32, 2}},
    [ATC_DKV] = {{0}, {0}}, /* dk and dv in one node (passes/fuse.c): Hopper kernels only */
};
/* The Hopper kernels (attention_wg.cuh, sm_90 targets): two warpgroups of 128 threads, own
 * tiles resident in shared memory, products by wgmma. attn_lse keeps the mma.sync kernel (a
 * training step folds it into attn). */
typedef struct {
    int bn;   /* rows per streamed tile */
    int ck;   /* dq, dk, dv: streamed rows per score step */
    int minb; /* blocks per SM the registers are budgeted for */
} attn_wg_cfg_t;

/* Measured with test_kernels' alternatives (H200, B2 S8192 Hq32 Hkv8): two blocks per SM wherever
 * the registers (128 a thread; a few bytes spill at Dh 64's attn, dq and dk and Dh 128's attn)
 * and shared memory allow, since each block's barriers and elementwise steps then overlap the
 * other's products; else 128-row stages (fewer barriers). */
static const attn_wg_cfg_t attn_wg_cfgs[ATC_COUNT][2] = {
    /*            Dh 64         Dh 128 */
    [ATC_FWD] = {{128, 0, 2}, {64, 0, 2}},
    [ATC_DQ] = {{64, 64, 2}, {128, 64, 1}},
    [ATC_DK] = {{64, 64, 2}, {128, 64, 1}},
    [ATC_DV] = {{64, 64, 2}, {64, 32, 2}},
    [ATC_DKV] = {{64, 32, 2}, {128, 64, 1}},
};
static const char *const attn_wg_tmpl[ATC_COUNT] = {"attn_wg_fwd", NULL, "attn_wg_dq", "attn_wg_dk", "attn_wg_dv",
                                                    "attn_wg_dkv"};

/* Whether node kind runs a Hopper kernel for target: every one but attn_lse where
 * ft_target_hopper (so FTC_ATTN_MMA_SYNC lets a Hopper GPU check the kernels other GPUs run:
 * tests/gpu/run.sh). */
static bool attn_wg_on(const char *target, int kind)
{
    return kind >= 0 && attn_wg_tmpl[kind] && ft_target_hopper(target);
}

static const char *const attn_tc_tmpl[ATC_COUNT] = {"attn_tc_fwd", "attn_tc_lse", "attn_tc_dq", "attn_tc_dk",
                                                    "attn_tc_dv", NULL};
static const char *const attn_tc_suffix[ATC_COUNT] = {"", "", "_dq", "_dk", "_dv", "_dkv"};

/* The tensor-core kernel (ATC_*) node t runs, or -1 for the CUDA-core path: every matrix
 * operand (q, k, and v and dy where the op has them) bf16, head dim 64 or 128, and for the
 * forward kernels, which take the row max of the raw scores, a scale in [1e-30, 1e30]. */
static int attn_tc_kind(const ir_graph_t *g, const ir_tensor_t *t)
{
    if (t->op != OP_ATTN && t->op != OP_ATTN_LSE && t->op != OP_ATTN_BWD)
        return -1;
    int64_t dh = g->t[t->src[0]].shape[3];
    if (dh != 64 && dh != 128)
        return -1;
    const int operands[4] = {0, 1, 2, 4};
    int n = t->op == OP_ATTN_LSE ? 2 : t->op == OP_ATTN ? 3 : 4;
    for (int i = 0; i < n; i++)
        if (g->t[t->src[operands[i]]].dtype != IR_BF16)
            return -1;
    if (t->op == OP_ATTN_BWD) /* ip[0]: 0 dq, 1 dk, 3 dk and dv, else dv (the CUDA-core kernels' rule) */
        return t->ip[0] == 0 ? ATC_DQ : t->ip[0] == 1 ? ATC_DK : t->ip[0] == 3 ? ATC_DKV : ATC_DV;
    if (!(t->fp[0] >= 1e-30 && t->fp[0] <= 1e30))
        return -1;
    return t->op == OP_ATTN ? ATC_FWD : ATC_LSE;
}

static const attn_tc_cfg_t *attn_tc_cfg(const ir_graph_t *g, const ir_tensor_t *t, int kind)
{
    return &attn_tc_cfgs[kind][g->t[t->src[0]].shape[3] == 128];
}

static unsigned attn_tc_threads(const attn_tc_cfg_t *c) { return (unsigned)(CG_ATT_TC_OWN / (16 * c->mi) * 32); }

/* ---- a growable string ---- */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->s = ft_xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_printf(sbuf_t *b, const char *fmt, ...) FT_PRINTF(2, 3);
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = ft_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* ---- entry points ---- */

/* stage 0: the node's (first) kernel; 1: the second kernel of a two-stage op. */
static int entry_name(const ir_graph_t *g, int id, int stage, char name[CG_NAME_MAX], ft_err_t *e)
{
    const ir_tensor_t *t = &g->t[id];
    if (!ops[t->op].tmpl)
        return ft_fail(e, "node %d '%s' (%s) runs no generated kernel", id, t->name, ir_ops[t->op]->name);
    if (stage == 1 && !ops[t->op].tmpl2)
        return ft_fail(e, "node %d '%s' (%s) runs one kernel", id, t->name, ir_ops[t->op]->name);
    size_t n = (size_t)snprintf(name, CG_NAME_MAX, "ftk_%s", ir_ops[t->op]->name);
    for (int s = 0; s <= t->nsrc; s++) {
        const ir_tensor_t *x = s < t->nsrc ? &g->t[t->src[s]] : t;
        if ((unsigned)x->dtype >= IR_DTYPE_COUNT || !cxx_type[x->dtype])
            return ft_fail(e, "node %d '%s' (%s): %s tensor '%s' has no GPU kernels (f32, bf16, f16 and i32 do)", id,
                           t->name, ir_ops[t->op]->name, ir_dtype_name(x->dtype), x->name);
        if (n >= CG_NAME_MAX)
            break;
        n += (size_t)snprintf(name + n, CG_NAME_MAX - n, "_%s", ir_dtype_name(x->dtype));
    }
    int kind = stage == 0 ? attn_tc_kind(g, t) : -1;
    if (kind >= 0 && n < CG_NAME_MAX)
        n += (size_t)snprintf(name + n, CG_NAME_MAX - n, "_tc%lld%s", (long long)g->t[t->src[0]].shape[3],
                              attn_tc_suffix[kind]);
    if (stage == 1 && n < CG_NAME_MAX)
        n += (size_t)snprintf(name + n, CG_NAME_MAX - n, "_s2");
    if (n >= CG_NAME_MAX)
        return ft_fail(e, "node %d '%s': kernel name too long", id, t->name);
    return 0;
}

int cg_kernel_name(const ir_graph_t *g, int id, char name[CG_NAME_MAX], ft_err_t *e)
{
    return entry_name(g, id, 0, name, e);
}

int cg_kernel_name2(const ir_graph_t *g, int id, char name[CG_NAME_MAX], ft_err_t *e)
{
    return entry_name(g, id, 1, name, e);
}

typedef struct {
    char name[CG_NAME_MAX];
    int node;  /* a node that uses it: its op and dtypes give the template arguments */
    int stage; /* 0: the op's kernel, 1: its second kernel */
} entry_t;

static int cmp_entry(const void *a, const void *b) { return strcmp(((const entry_t *)a)->name, ((const entry_t *)b)->name); }

/* The distinct entry points of g's schedule, sorted by name. */
static int collect(const ir_graph_t *g, entry_t **out, int *nout, ft_err_t *e)
{
    *out = NULL;
    *nout = 0;
    if (g->nsched > 0 && !g->sched)
        return ft_fail(e, "codegen: the graph has no schedule (run the pass pipeline first)");
    entry_t *en = ft_xmalloc((size_t)(g->nsched > 0 ? 2 * g->nsched : 1) * sizeof *en);
    int n = 0;
    for (int k = 0; k < g->nsched; k++) {
        int id = g->sched[k];
        if (id < 0 || id >= g->n) {
            free(en);
            return ft_fail(e, "codegen: schedule entry %d names tensor %d of %d", k, id, g->n);
        }
        if (cg_op_kind(g->t[id].op) != CG_KERNEL)
            continue;
        for (int stage = 0; stage < (ops[g->t[id].op].tmpl2 ? 2 : 1); stage++) {
            if (entry_name(g, id, stage, en[n].name, e) != 0) {
                free(en);
                return -1;
            }
            en[n].stage = stage;
            en[n++].node = id;
        }
    }
    qsort(en, (size_t)n, sizeof *en, cmp_entry);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || strcmp(en[u - 1].name, en[i].name) != 0)
            en[u++] = en[i];
    *out = en;
    *nout = u;
    return 0;
}

int cg_kernel_names(const ir_graph_t *g, char ***names, int *n, ft_err_t *e)
{
    entry_t *en;
    int ne;
    *names = NULL;
    *n = 0;
    if (collect(g, &en, &ne, e) != 0)
        return -1;
    char **v = ft_xmalloc((size_t)(ne > 0 ? ne : 1) * sizeof *v);
    for (int i = 0; i < ne; i++)
        v[i] = ft_xstrdup(en[i].name);
    free(en);
    *names = v;
    *n = ne;
    return 0;
}

void cg_names_free(char **names, int n)
{
    for (int i = 0; i < n && names; i++)
        free(names[i]);
    free(names);
}

/* ---- the source ---- */

static const cg_embedded_t *embedded(const char *name)
{
    for (int i = 0; i < cg_nembedded; i++)
        if (strcmp(cg_embedded[i].name, name) == 0)
            return &cg_embedded[i];
    return NULL;
}

static int emit_templates(sbuf_t *b, ft_err_t *e)
{
    for (int i = 0; i < cg_nembedded; i++) {
        bool placed = false;
        for (size_t k = 0; k < NFILES; k++)
            placed = placed || strcmp(file_order[k], cg_embedded[i].name) == 0;
        if (!placed)
            return ft_fail(e, "codegen: kernel template '%s' is embedded but has no place in emit.c's file_order[]",
                           cg_embedded[i].name);
    }
    for (size_t k = 0; k < NFILES; k++) {
        const cg_embedded_t *f = embedded(file_order[k]);
        if (!f)
            return ft_fail(e, "codegen: kernel template '%s' is not embedded in this build", file_order[k]);
        sb_printf(b, "#line 1 \"%s\"\n", f->name);
        sb_put(b, f->text, f->len);
        if (f->len == 0 || f->text[f->len - 1] != '\n')
            sb_put(b, "\n", 1);
    }
    return 0;
}

/* A tensor-core attention entry point: the configuration as template arguments (attention.cuh's
 * ftk::attn_tc_fwd and attn_tc_lse <D, BN, MI, QREG, TO>; attn_tc_dq, _dk, _dv <D, BN, MI,
 * OREG, CK, TS, TO>), the launch bounds from its block and the blocks per SM it budgets for. */
static void emit_attn_tc_entry(sbuf_t *b, const ir_graph_t *g, const entry_t *en, int kind)
{
    const ir_tensor_t *t = &g->t[en->node];
    const attn_tc_cfg_t *c = attn_tc_cfg(g, t, kind);
    sb_printf(b, "extern \"C\" __global__ void __launch_bounds__(%u, %d) %s(const __grid_constant__ ftk_args_t a)\n{\n",
              attn_tc_threads(c), c->minb, en->name);
    sb_printf(b, "    ftk::%s<%lld, %d, %d, %s, ", attn_tc_tmpl[kind], (long long)g->t[t->src[0]].shape[3], c->bn, c->mi,
              c->oreg ? "true" : "false");
    if (kind >= ATC_DQ)
        sb_printf(b, "%d, %s, ", c->ck, cxx_type[g->t[t->src[5]].dtype]);
    sb_printf(b, "%s>(a);\n}\n\n", cxx_type[t->dtype]);
}

/* A Hopper attention entry point (attention_wg.cuh's ftk::attn_wg_fwd <D, BN, TO>; attn_wg_dq,
 * _dk, _dv <D, BN, CK, TS, TO>), under the tensor-core path's name. */
static void emit_attn_wg_entry(sbuf_t *b, const ir_graph_t *g, const entry_t *en, int kind)
{
    const ir_tensor_t *t = &g->t[en->node];
    const attn_wg_cfg_t *c = &attn_wg_cfgs[kind][g->t[t->src[0]].shape[3] == 128];
    sb_printf(b, "extern \"C\" __global__ void __launch_bounds__(%d, %d) %s(const __grid_constant__ ftk_args_t a)\n{\n",
              CG_ATT_WG_THREADS, c->minb, en->name);
    sb_printf(b, "    ftk::%s<%lld, %d, ", attn_wg_tmpl[kind], (long long)g->t[t->src[0]].shape[3], c->bn);
    if (kind >= ATC_DQ)
        sb_printf(b, "%d, %s, ", c->ck, cxx_type[g->t[t->src[5]].dtype]);
    sb_printf(b, "%s>(a);\n}\n\n", cxx_type[t->dtype]);
}

static void emit_entry(sbuf_t *b, const ir_graph_t *g, const entry_t *en, const char *target)
{
    const ir_tensor_t *t = &g->t[en->node];
    int kind = en->stage == 0 ? attn_tc_kind(g, t) : -1;
    if (attn_wg_on(target, kind)) {
        emit_attn_wg_entry(b, g, en, kind);
        return;
    }
    if (kind == ATC_DKV) { /* cg_launch_of refuses it first where launch records are made */
        sb_printf(b, "#error \"%s: dk and dv in one node need the sm_90 kernels\"\n\n", en->name);
        return;
    }
    if (kind >= 0) {
        emit_attn_tc_entry(b, g, en, kind);
        return;
    }
    unsigned minb = en->stage == 1 ? 0 : ops[t->op].minblocks;
    char bounds[32];
    if (minb)
        snprintf(bounds, sizeof bounds, "%u, %u", ops[t->op].bounds, minb);
    else
        snprintf(bounds, sizeof bounds, "%u", en->stage == 1 ? ops[t->op].bounds2 : ops[t->op].bounds);
    sb_printf(b, "extern \"C\" __global__ void __launch_bounds__(%s) %s(const __grid_constant__ ftk_args_t a)\n{\n",
              bounds, en->name);
    sb_printf(b, "    ftk::%s<", template_of(t, en->stage));
    for (int s = 0; s < t->nsrc; s++)
        sb_printf(b, "%s, ", cxx_type[g->t[t->src[s]].dtype]);
    sb_printf(b, "%s>(a);\n}\n\n", cxx_type[t->dtype]);
}

static char *emit(const ir_graph_t *g, const entry_t *en, int ne, const char *target, ft_err_t *e)
{
    sbuf_t b = {0};
    sb_printf(&b, "/* Generated by ftc's GPU code generator (codegen/emit.c) from the kernel templates of\n"
                  " * codegen/kernels/: %d entry points. Do not edit; the same kernel set gives the same bytes. */\n",
              ne);
    /* constants shared with the host side (ir.h's hyper-parameter slots, launch geometry) */
    static const struct {
        const char *name;
        int value;
    } defs[] = {
        {"FTK_HYPER_LR", IR_HYPER_LR},       {"FTK_HYPER_BETA1", IR_HYPER_BETA1},
        {"FTK_HYPER_BETA2", IR_HYPER_BETA2}, {"FTK_HYPER_EPS", IR_HYPER_EPS},
        {"FTK_HYPER_WD", IR_HYPER_WD},       {"FTK_HYPER_BC1", IR_HYPER_BC1},
        {"FTK_HYPER_BC2", IR_HYPER_BC2},     {"FTK_HYPER_INV_NTOK", IR_HYPER_INV_NTOK},
        {"FTK_HYPER_CLIP", IR_HYPER_CLIP},   {"FTK_ATT_THREADS", CG_ATT_THREADS},
        {"FTK_ATT_TILE", CG_ATT_TILE},       {"FTK_ATT_TC_OWN", CG_ATT_TC_OWN},
        {"FTK_EBW_COLS", CG_EBW_COLS},
        {"FTK_RBW_COLS", CG_RBW_COLS},
        {"FTK_NORM_LANE_BYTES", CG_NORM_LANE_BYTES},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        sb_printf(&b, "#define %s %d\n", defs[i].name, defs[i].value);
    if (emit_templates(&b, e) != 0) {
        free(b.s);
        return NULL;
    }
    sb_printf(&b, "#line 1 \"ftc_entry_points\"\n");
    for (int i = 0; i < ne; i++)
        emit_entry(&b, g, &en[i], target);
    return b.s;
}

char *cg_emit_source(const ir_graph_t *g, const char *target, ft_err_t *e)
{
    entry_t *en;
    int ne;
    if (collect(g, &en, &ne, e) != 0)
        return NULL;
    char *src = emit(g, en, ne, target, e);
    free(en);
    return src;
}

/* ---- launch records ---- */

static unsigned clamp_u(int64_t v, int64_t hi) { return (unsigned)(v < 1 ? 1 : v > hi ? hi : v); }
static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Threads for one row of d elements: about four elements per thread, whole warps, 32..1024. */
static unsigned row_threads(int64_t d) { return 32u * clamp_u(ceil_div(ceil_div(d, 4), 32), 32); }

/* rmsnorm, rmsnorm_bwd_x: warps per row, norm.cuh's ftk_norm_warps (the fewest, a power of
 * two, whose lanes hold the row's ceil(d / 8) vectors of 8 elements at nv vectors a lane,
 * nv = CG_NORM_LANE_BYTES / (8 x the bytes of an element of every array held)), at most
 * the block's warps (wider rows take the kernel's fallback with whole blocks). */
static int64_t norm_warps(int64_t d, int64_t elem_bytes)
{
    int64_t nv = CG_NORM_LANE_BYTES / (8 * elem_bytes), nvec = ceil_div(d, 8), w = 1;
    while (w < CG_NORM_THREADS / 32 && 32 * w * nv < nvec)
        w *= 2;
    return w;
}

static void set_1d(cg_launch_t *l, unsigned grid, unsigned threads)
{
    l->grid[0] = grid;
    l->block[0] = threads;
}

/* The second kernel of a two-stage node, and the scratch bytes the pair uses. */
static void set_2nd(cg_launch_t *l, unsigned gx, unsigned gy, unsigned threads, int64_t scratch_data)
{
    l->grid2[0] = gx;
    l->grid2[1] = gy;
    l->grid2[2] = 1;
    l->block2[0] = threads;
    l->block2[1] = l->block2[2] = 1;
    l->scratch = (uint64_t)(FTK_SCRATCH_HEAD + scratch_data);
}

/* Dynamic shared memory of an attention kernel (attention.cuh's `shared:` line): tiles of
 * CG_ATT_TILE rows at a pitch of round_up(Dh, 4) + 4 floats (attn: q, k, v; attn_lse: q, k;
 * attn_bwd: four tiles plus lse and delta), then two tiles' document ids. */
static int64_t attn_smem(const ir_tensor_t *t, int64_t dh)
{
    int64_t pitch = (dh + 3) / 4 * 4 + 4, ntile = t->op == OP_ATTN ? 3 : t->op == OP_ATTN_LSE ? 2 : 4;
    int64_t words = ntile * CG_ATT_TILE * pitch + 2 * CG_ATT_TILE;
    if (t->op == OP_ATTN_BWD)
        words += 2 * CG_ATT_TILE;
    return words * 4;
}

/* A tensor-core kernel's shared memory (attention.cuh's ftk_tc_lay): bf16 tiles at a pitch of
 * Dh + 8; two stages of the streamed tiles (attn: K and V tiles of bn rows; attn_lse: K; dq: K
 * and V; dk and dv: Q and dY plus a (lse, delta) float pair per row); the own tiles of
 * CG_ATT_TC_OWN rows (Q; dq: Q and dY; dk: K and V; dv: K), resident before the stages, or,
 * read into registers, over the stages' space; then, 16-byte aligned, an int2 document range
 * per CG_ATT_TC_OWN rows of the sequence. */
static int64_t attn_tc_smem(int kind, int64_t dh, const attn_tc_cfg_t *c, int64_t ns)
{
    int64_t row = (dh + 8) * 2, tile = c->bn * row, own = CG_ATT_TC_OWN * row, stage, owns;
    switch (kind) {
    case ATC_FWD:
        stage = 2 * tile, owns = own;
        break;
    case ATC_LSE:
        stage = tile, owns = own;
        break;
    case ATC_DQ:
        stage = 2 * tile, owns = 2 * own;
        break;
    default: /* dk, dv */
        stage = 2 * tile + c->bn * 8, owns = (kind == ATC_DK ? 2 : 1) * own;
        break;
    }
    int64_t end = c->oreg ? (owns > 2 * stage ? owns : 2 * stage) : owns + 2 * stage;
    return (end + 15) / 16 * 16 + ceil_div(ns, CG_ATT_TC_OWN) * 8;
}

/* A Hopper kernel's shared memory (attention_wg.cuh's ftk_wg_lay): the own tiles (Q; dq: Q and
 * dY; dk: K and V; dv: K) of CG_ATT_TC_OWN rows, two stages of streamed tiles (attn, dq: K and
 * V; dk, dv: Q and dY) of bn rows, dk and dv's two stages of (lse, delta) pairs, an int2
 * document range per CG_ATT_TC_OWN rows, and 1024 bytes to align the base. */
static int64_t attn_wg_smem(int kind, int64_t dh, const attn_wg_cfg_t *c, int64_t ns)
{
    int64_t own = CG_ATT_TC_OWN * dh * 2, tile = c->bn * dh * 2;
    int64_t owns = kind == ATC_FWD || kind == ATC_DV ? own : 2 * own;
    int64_t xtra = kind >= ATC_DK ? c->bn * 8 : 0;
    int64_t end = owns + 4 * tile + 2 * xtra;
    return (end + 15) / 16 * 16 + ceil_div(ns, CG_ATT_TC_OWN) * 8 + 1024;
}

/* Both paths' grids: (own tiles, heads, B); own tiles are of query rows, or of keys (per kv
 * head) for dk and dv. */
static int attn_launch(const ir_graph_t *g, const ir_tensor_t *t, const char *target, cg_launch_t *l, ft_err_t *e)
{
    const ir_tensor_t *q = &g->t[t->src[0]], *k = &g->t[t->src[1]];
    int64_t nb = q->shape[0], ns = q->shape[1], hq = q->shape[2], dh = q->shape[3], hkv = k->shape[2];
    if (dh > CG_ATT_MAX_DH)
        return ft_fail(e, "%s '%s': head dim %lld exceeds the GPU kernel's limit of %d", ir_ops[t->op]->name, t->name,
                       (long long)dh, CG_ATT_MAX_DH);
    bool per_kv = t->op == OP_ATTN_BWD && t->ip[0] != 0; /* dk, dv: a block per tile of keys */
    int kind = attn_tc_kind(g, t);
    if (t->op == OP_ATTN_BWD && t->ip[0] == 3 && !attn_wg_on(target, kind))
        return ft_fail(e, "attn_bwd '%s' computes dk and dv in one node, which only the sm_90 kernels do (bf16, head "
                          "dim 64 or 128); %s compiles the two apart",
                       t->name, target);
    if (kind >= 0) {
        bool wg = attn_wg_on(target, kind);
        const attn_tc_cfg_t *c = attn_tc_cfg(g, t, kind);
        l->block[0] = wg ? CG_ATT_WG_THREADS : attn_tc_threads(c);
        /* a block per two own tiles: the longest causal work and the shortest */
        l->grid[0] = clamp_u(ceil_div(ceil_div(ns, CG_ATT_TC_OWN), 2), INT32_MAX);
        int64_t smem = wg ? attn_wg_smem(kind, dh, &attn_wg_cfgs[kind][dh == 128], ns) : attn_tc_smem(kind, dh, c, ns);
        if (smem > UINT32_MAX)
            return ft_fail(e, "%s '%s': sequence length %lld is too long for the attention kernels' shared memory",
                           ir_ops[t->op]->name, t->name, (long long)ns);
        l->smem = (unsigned)smem;
    } else {
        l->block[0] = CG_ATT_THREADS;
        l->grid[0] = clamp_u(ceil_div(ns, CG_ATT_TILE), INT32_MAX);
        l->smem = (unsigned)attn_smem(t, dh);
    }
    l->grid[1] = clamp_u(per_kv ? hkv : hq, 65535);
    l->grid[2] = clamp_u(nb, 65535);
    return 0;
}

int cg_launch_of(const ir_graph_t *g, int id, const char *target, cg_launch_t *l, ft_err_t *e)
{
    const ir_tensor_t *t = &g->t[id];
    memset(l, 0, sizeof *l);
    l->node = id;
    l->kind = cg_op_kind(t->op);
    l->kernel = l->kernel2 = -1;
    if (l->kind != CG_KERNEL)
        return 0;
    const ir_tensor_t *x = t->nsrc > 0 ? &g->t[t->src[0]] : t;
    l->grid[0] = l->grid[1] = l->grid[2] = 1;
    l->block[0] = l->block[1] = l->block[2] = 1;
    switch (ops[t->op].shape) {
    case SH_EW: /* 8 elements per thread: the vector step of ftk_map*, a few grid-stride turns elsewhere */
        set_1d(l, clamp_u(ceil_div(ir_numel(t), (int64_t)CG_EW_THREADS * 8), CG_EW_MAX_BLOCKS), CG_EW_THREADS);
        break;
    case SH_ROWS: {
        int64_t d = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
        set_1d(l, clamp_u(ir_numel(x) / d, INT32_MAX), row_threads(d));
        break;
    }
    case SH_REDUCE: { /* G slices of at least CG_RED_PER_THREAD elements a thread */
        int64_t nb = ceil_div(ir_numel(x), (int64_t)CG_RED_THREADS * CG_RED_PER_THREAD);
        unsigned parts = clamp_u(nb, CG_RED_MAX_BLOCKS);
        set_1d(l, parts, CG_RED_THREADS);
        set_2nd(l, 1, 1, CG_RED_THREADS, (int64_t)parts * 8);
        break;
    }
    case SH_XENT: {
        int64_t rows = x->shape[0], nv = x->shape[1];
        set_1d(l, clamp_u(rows, INT32_MAX), row_threads(nv));
        set_2nd(l, 1, 1, CG_FIN_THREADS, rows * 8);
        break;
    }
    case SH_RBW: { /* a thread per CG_RBW_COLS columns up to 1024 threads, chunks of rows */
        int64_t d = x->ndim > 0 ? x->shape[x->ndim - 1] : 1, rows = ir_numel(x) / d;
        unsigned threads = 32u * clamp_u(ceil_div(ceil_div(d, CG_RBW_COLS), 32), 32);
        unsigned chunks = clamp_u(ceil_div(rows, CG_RBW_ROWS), CG_RBW_MAX_CHUNKS);
        set_1d(l, chunks, threads);
        l->grid[1] = clamp_u(ceil_div(d, (int64_t)threads * CG_RBW_COLS), 65535);
        set_2nd(l, clamp_u(ceil_div(d, CG_RBW_FIN_THREADS), CG_EW_MAX_BLOCKS), 1, CG_RBW_FIN_THREADS,
                (int64_t)chunks * d * 4);
        break;
    }
    case SH_TINY:
        set_1d(l, 1, 32);
        break;
    case SH_NORM: { /* teams of W warps per row, CG_NORM_THREADS / 32 / W rows a block */
        int64_t d = x->ndim > 0 ? x->shape[x->ndim - 1] : 1, rows = ir_numel(x) / d;
        int64_t bytes = ir_dtype_size(x->dtype) + (t->op == OP_RMSNORM_BWD_X ? ir_dtype_size(g->t[t->src[2]].dtype) : 0);
        int64_t teams = CG_NORM_THREADS / 32 / norm_warps(d, bytes);
        set_1d(l, clamp_u(ceil_div(rows, teams), CG_EW_MAX_BLOCKS), CG_NORM_THREADS);
        break;
    }
    case SH_ROPE: { /* an item per (token, 8 pairs) where Dh/2 % 8 == 0, else per (token, pair) */
        int64_t dh = x->shape[3], half = dh / 2, per = half % 8 == 0 ? half / 8 : half;
        set_1d(l, clamp_u(ceil_div(x->shape[0] * x->shape[1] * per, CG_EW_THREADS), CG_EW_MAX_BLOCKS), CG_EW_THREADS);
        l->smem = (unsigned)(half * 8);
        break;
    }
    case SH_EMBED_BWD: /* the index of the ids (V bucket ends, T rows), then the sums */
        set_1d(l, 1, CG_FIN_THREADS);
        set_2nd(l, clamp_u(t->shape[0], INT32_MAX),
                clamp_u(ceil_div(t->shape[1], (int64_t)CG_EW_THREADS * CG_EBW_COLS), 65535), CG_EW_THREADS,
                4 * (t->shape[0] + ir_numel(x)));
        break;
    case SH_WARP_ROWS: { /* ~32 rows a warp: rowsum's vector path takes up to 128 per step */
        int64_t d = x->ndim > 0 ? x->shape[x->ndim - 1] : 1, warps = CG_EW_THREADS / 32;
        set_1d(l, clamp_u(ceil_div(ir_numel(x) / d, warps * 32), CG_EW_MAX_BLOCKS), CG_EW_THREADS);
        break;
    }
    case SH_ATTN:
    case SH_ATTN_BWD:
        if (attn_launch(g, t, target, l, e) != 0)
            return -1;
        break;
    case SH_NONE:
        return ft_fail(e, "node %d '%s': no launch shape for op %s", id, t->name, ir_ops[t->op]->name);
    }
    unsigned limit = cg_smem_limit(target);
    if (l->smem > limit)
        return ft_fail(e, "node %d '%s' (%s) needs %u bytes of shared memory; %s allows %u", id, t->name,
                       ir_ops[t->op]->name, l->smem, target, limit);
    return 0;
}

/* ---- the module ---- */

static int find_name(char **names, int n, const char *name)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(names[mid], name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static int build(const ir_graph_t *g, const char *target, const char *cache_dir, cg_module_t *m, ft_err_t *e)
{
    if (cg_check_target(target, e) != 0)
        return -1;
    snprintf(m->target, sizeof m->target, "%s", target);
    entry_t *en;
    int ne;
    if (collect(g, &en, &ne, e) != 0)
        return -1;
    m->names = ft_xmalloc((size_t)(ne > 0 ? ne : 1) * sizeof *m->names);
    for (int i = 0; i < ne; i++)
        m->names[m->nnames++] = ft_xstrdup(en[i].name);
    /* launch records first: a shape the kernels cannot take fails before the slow compile */
    m->launch = ft_xcalloc((size_t)(g->nsched > 0 ? g->nsched : 1), sizeof *m->launch);
    m->nlaunch = g->nsched;
    for (int k = 0; k < g->nsched; k++) {
        cg_launch_t *l = &m->launch[k];
        if (cg_launch_of(g, g->sched[k], target, l, e) != 0) {
            free(en);
            return -1;
        }
        if (l->kind != CG_KERNEL)
            continue;
        char name[CG_NAME_MAX];
        if (cg_kernel_name(g, l->node, name, e) != 0) {
            free(en);
            return -1;
        }
        l->kernel = find_name(m->names, m->nnames, name);
        if (l->grid2[0] == 0)
            continue;
        if (cg_kernel_name2(g, l->node, name, e) != 0) {
            free(en);
            return -1;
        }
        l->kernel2 = find_name(m->names, m->nnames, name);
    }
    char *src = emit(g, en, ne, target, e);
    free(en);
    if (!src)
        return -1;
    bool hit;
    int rc = cg_compile_cached(src, target, cache_dir, &m->image, &m->image_len, &hit, e);
    free(src);
    return rc;
}

int cg_build(const ir_graph_t *g, const char *target, const char *cache_dir, cg_module_t *m, ft_err_t *e)
{
    memset(m, 0, sizeof *m);
    if (build(g, target, cache_dir, m, e) != 0) {
        cg_module_free(m);
        return -1;
    }
    return 0;
}

void cg_module_free(cg_module_t *m)
{
    if (!m)
        return;
    free(m->image);
    cg_names_free(m->names, m->nnames);
    free(m->launch);
    memset(m, 0, sizeof *m);
}
