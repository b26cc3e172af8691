/* ops_tensor.c — descriptors of the ops that are not layer-specific: leaves and fills, the
 * embedding gather, matmul, elementwise arithmetic and casts, data movement (reshape,
 * permute, slice, concat), SiLU/SwiGLU, reductions, dropout, and the optimizer step
 * (accumulate, global norm, AdamW). Each op has a shape rule, a VJP built from ordinary
 * ops, a cost and a float64 CPU reference; ops.c collects the descriptors into ir_ops[].
 *
 * Conventions kept by every VJP here: the gradient of an input has that input's shape and
 * dtype (autodiff sums adjoints with ir_add, which wants equal dtypes), integer inputs never
 * get one, and the node record is copied before building, because a builder call may move
 * g->t. IR_OPF_ELEMENTWISE is set only where every input has the node's shape and nothing
 * is updated in place, so a fusion pass may index every input by the output index. */
#include <math.h>
#include <string.h>

#include "ir.h"
#include "ops_util.h"

/* ---- helpers ---- */

static const char *opname(const ir_tensor_t *n) { return ir_ops[n->op]->name; }
static bool is_float(ir_dtype_t dt) { return dt != IR_I32; }

static void scalar_shape(ir_tensor_t *node)
{
    node->ndim = 0;
    memset(node->shape, 0, sizeof node->shape);
}

static int want_float(const ir_tensor_t *node, const ir_tensor_t *x, const char *what, ft_err_t *e)
{
    if (is_float(x->dtype))
        return 0;
    return ft_fail(e, "%s: %s must be a float tensor, got %s", opname(node), what, ir_dtype_name(x->dtype));
}

static int want_same_shape(const ir_tensor_t *node, const ir_tensor_t *a, const ir_tensor_t *b,
                           const char *an, const char *bn, ft_err_t *e)
{
    if (ir_same_shape(a, b))
        return 0;
    char sa[96], sb[96];
    ir_shape_str(a, sa, sizeof sa);
    ir_shape_str(b, sb, sizeof sb);
    return ft_fail(e, "%s: %s %s and %s %s differ in shape", opname(node), an, sa, bn, sb);
}

static int want_same_dtype(const ir_tensor_t *node, const ir_tensor_t *a, const ir_tensor_t *b,
                           const char *an, const char *bn, ft_err_t *e)
{
    if (a->dtype == b->dtype)
        return 0;
    return ft_fail(e, "%s: %s is %s but %s is %s", opname(node), an, ir_dtype_name(a->dtype), bn,
                   ir_dtype_name(b->dtype));
}

static int want_scalar(const ir_tensor_t *node, const ir_tensor_t *x, const char *what, ft_err_t *e)
{
    if (ir_numel(x) == 1)
        return 0;
    char s[96];
    ir_shape_str(x, s, sizeof s);
    return ft_fail(e, "%s: %s must be a scalar, got %s", opname(node), what, s);
}

/* The optimizer's hyper-parameter vector: f32 [IR_HYPER_COUNT] (any float dtype passes). */
static int want_hyper(const ir_tensor_t *node, const ir_tensor_t *h, ft_err_t *e)
{
    if (h->ndim != 1 || h->shape[0] != IR_HYPER_COUNT) {
        char s[96];
        ir_shape_str(h, s, sizeof s);
        return ft_fail(e, "%s: hyper must be [%d], got %s", opname(node), IR_HYPER_COUNT, s);
    }
    return want_float(node, h, "hyper", e);
}

/* A dimension list from ip[0] = ndim, ip[1..ndim] = extents (fill, reshape). */
static int shape_from_params(ir_tensor_t *node, ft_err_t *e)
{
    int64_t nd = node->ip[0];
    if (nd < 0 || nd > IR_MAX_DIMS)
        return ft_fail(e, "%s: %lld dimensions (at most %d)", opname(node), (long long)nd, IR_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        if (node->ip[1 + i] <= 0)
            return ft_fail(e, "%s: dimension %d is %lld", opname(node), i, (long long)node->ip[1 + i]);
        /* 2^56 elements is far past any device; the bound keeps size arithmetic defined */
        if (node->ip[1 + i] > (INT64_C(1) << 56) / numel)
            return ft_fail(e, "%s: shape has more than 2^56 elements", opname(node));
        numel *= node->ip[1 + i];
    }
    scalar_shape(node);
    node->ndim = (int)nd;
    for (int i = 0; i < nd; i++)
        node->shape[i] = node->ip[1 + i];
    return 0;
}

/* Views t as [outer, t->shape[axis], inner]. */
static void split_axis(const ir_tensor_t *t, int axis, int64_t *outer, int64_t *inner)
{
    *outer = *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= t->shape[i];
    for (int i = axis + 1; i < t->ndim; i++)
        *inner *= t->shape[i];
}

/* Elementwise costs: `per` flops an element, every input read once, the output written. */
static void cost_ew(const ir_graph_t *g, const ir_tensor_t *n, double per, double *flops, double *bytes)
{
    *flops = per * (double)ir_numel(n);
    *bytes = op_io_bytes(g, n);
}

static void cost_none(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    *flops = *bytes = 0;
}

static void cost_move(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_ew(g, n, 0, flops, bytes);
}

static void cost_1(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_ew(g, n, 1, flops, bytes);
}

/* A reduction to a scalar: `per` flops per input element. */
static void cost_reduce(const ir_graph_t *g, const ir_tensor_t *n, double per, double *flops, double *bytes)
{
    *flops = per * (double)ir_numel(op_src(g, n, 0));
    *bytes = op_io_bytes(g, n);
}

static int64_t cpu_numel(const ir_cpu_args_t *a) { return ir_numel(a->node); }

/* Overflow-safe logistic function: exp only ever sees a non-positive argument. */
static double sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double z = exp(x);
    return z / (1.0 + z);
}

/* ---- leaf ---- */

static int leaf_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e) { return 0; }
static void leaf_cpu(const ir_cpu_args_t *a) {}

const ir_op_desc_t ir_op_leaf = {
    .name = "leaf", .min_src = 0, .max_src = 0, .flags = IR_OPF_NONDIFF_OK,
    .shape = leaf_shape, .vjp = NULL, .cost = cost_none, .cpu = leaf_cpu,
};

/* ---- fill ---- */

static int fill_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    if (node->nsrc == 1) {
        const ir_tensor_t *x = op_src(g, node, 0);
        if (want_float(node, x, "x", e) || want_scalar(node, x, "x", e))
            return -1;
    }
    return shape_from_params(node, e);
}

/* d/dx of fp0 * x broadcast: fp0 * sum(dy), brought back to x's shape and dtype. */
static void fill_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t n = g->t[node];
    if (n.nsrc < 1 || !need[0] || !is_float(n.dtype) || !is_float(g->t[n.src[0]].dtype))
        return;
    ir_tensor_t x = g->t[n.src[0]];
    int d = ir_scale(g, ir_sum(g, dy), n.fp[0]);
    if (d >= 0 && g->t[d].dtype != x.dtype)
        d = ir_cast(g, d, x.dtype);
    if (d >= 0 && x.ndim != 0)
        d = ir_reshape(g, d, x.ndim, x.shape);
    dsrc[0] = d;
}

static void fill_cpu(const ir_cpu_args_t *a)
{
    double v = a->node->fp[0] * (a->node->nsrc ? a->in[0][0] : 1.0);
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = v;
}

const ir_op_desc_t ir_op_fill = {
    .name = "fill", .min_src = 0, .max_src = 1,
    .shape = fill_shape, .vjp = fill_vjp, .cost = cost_move, .cpu = fill_cpu,
};

/* ---- embed, embed_bwd ---- */

static int embed_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *tab = op_src(g, node, 0), *ids = op_src(g, node, 1);
    if (tab->ndim != 2)
        return ft_fail(e, "embed: table must be 2-D [V,D], has %d dimensions", tab->ndim);
    if (want_float(node, tab, "table", e) || want_float(node, node, "the output", e))
        return -1;
    if (ids->dtype != IR_I32)
        return ft_fail(e, "embed: ids must be i32, got %s", ir_dtype_name(ids->dtype));
    if (ids->ndim + 1 > IR_MAX_DIMS)
        return ft_fail(e, "embed: ids have %d dimensions (at most %d)", ids->ndim, IR_MAX_DIMS - 1);
    op_copy_shape(node, ids);
    node->shape[node->ndim++] = tab->shape[1];
    return 0;
}

static void embed_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    if (!need[0])
        return;
    ir_tensor_t n = g->t[node];
    ir_tensor_t tab = g->t[n.src[0]];
    int64_t ip[IR_MAX_PARAMS] = {tab.shape[0]};
    dsrc[0] = ir_node_dt(g, OP_EMBED_BWD, tab.dtype, 2, (const int[]){n.src[1], dy}, ip, NULL);
}

/* Only the gathered rows of the table are read, not the whole table. */
static void embed_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    *flops = 0;
    *bytes = (double)ir_nbytes(op_src(g, n, 1)) + 2.0 * (double)ir_nbytes(n);
}

/* An id outside [0, V) gives a NaN row rather than a clamped one: the run's NaN guard then
 * reports the bad data instead of training on the wrong token. */
static void embed_cpu(const ir_cpu_args_t *a)
{
    int64_t V = a->srct[0]->shape[0], D = a->srct[0]->shape[1];
    int64_t rows = ir_numel(a->srct[1]);
    for (int64_t r = 0; r < rows; r++) {
        double id = a->in[1][r];
        double *o = a->out + r * D;
        if (!(id >= 0 && id < (double)V)) {
            for (int64_t d = 0; d < D; d++)
                o[d] = NAN;
            continue;
        }
        memcpy(o, a->in[0] + (int64_t)id * D, (size_t)D * sizeof *o);
    }
}

const ir_op_desc_t ir_op_embed = {
    .name = "embed", .min_src = 2, .max_src = 2,
    .shape = embed_shape, .vjp = embed_vjp, .cost = embed_cost, .cpu = embed_cpu,
};

static int embed_bwd_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *ids = op_src(g, node, 0), *dy = op_src(g, node, 1);
    if (ids->dtype != IR_I32)
        return ft_fail(e, "embed_bwd: ids must be i32, got %s", ir_dtype_name(ids->dtype));
    if (want_float(node, dy, "dy", e) || want_float(node, node, "the output", e))
        return -1;
    if (node->ip[0] <= 0)
        return ft_fail(e, "embed_bwd: vocabulary size ip[0] is %lld", (long long)node->ip[0]);
    bool ok = dy->ndim == ids->ndim + 1;
    for (int i = 0; ok && i < ids->ndim; i++)
        ok = dy->shape[i] == ids->shape[i];
    if (!ok) {
        char si[96], sd[96];
        ir_shape_str(ids, si, sizeof si);
        ir_shape_str(dy, sd, sizeof sd);
        return ft_fail(e, "embed_bwd: dy %s is not ids %s plus one dimension", sd, si);
    }
    scalar_shape(node);
    node->ndim = 2;
    node->shape[0] = node->ip[0];
    node->shape[1] = dy->shape[dy->ndim - 1];
    return 0;
}

static void embed_bwd_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    *flops = (double)ir_numel(op_src(g, n, 1));
    *bytes = op_io_bytes(g, n);
}

/* Out-of-range ids have nowhere to go; the forward pass already poisoned their rows. */
static void embed_bwd_cpu(const ir_cpu_args_t *a)
{
    int64_t V = a->node->shape[0], D = a->node->shape[1];
    int64_t rows = ir_numel(a->srct[0]);
    memset(a->out, 0, (size_t)(V * D) * sizeof *a->out);
    for (int64_t r = 0; r < rows; r++) {
        double id = a->in[0][r];
        if (!(id >= 0 && id < (double)V))
            continue;
        double *o = a->out + (int64_t)id * D;
        const double *d = a->in[1] + r * D;
        for (int64_t k = 0; k < D; k++)
            o[k] += d[k];
    }
}

const ir_op_desc_t ir_op_embed_bwd = {
    .name = "embed_bwd", .min_src = 2, .max_src = 2, .flags = IR_OPF_NONDIFF_OK,
    .shape = embed_bwd_shape, .vjp = NULL, .cost = embed_bwd_cost, .cpu = embed_bwd_cpu,
};

/* ---- matmul ---- */

typedef struct {
    int64_t batch, m, n, k;
} mm_dims_t;

/* Reads the problem size off a (maybe transposed) and b (maybe transposed); kb is b's
 * contraction extent, which the shape rule compares with a's. */
static void mm_dims(const ir_tensor_t *a, const ir_tensor_t *b, bool ta, bool tb, mm_dims_t *d, int64_t *kb)
{
    int r = a->ndim - 2;
    d->batch = a->ndim == 3 ? a->shape[0] : 1;
    d->m = ta ? a->shape[r + 1] : a->shape[r];
    d->k = ta ? a->shape[r] : a->shape[r + 1];
    *kb = tb ? b->shape[r + 1] : b->shape[r];
    d->n = tb ? b->shape[r] : b->shape[r + 1];
}

static int matmul_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *a = op_src(g, node, 0), *b = op_src(g, node, 1);
    if ((node->ip[0] != 0 && node->ip[0] != 1) || (node->ip[1] != 0 && node->ip[1] != 1))
        return ft_fail(e, "matmul: transpose flags must be 0 or 1, got %lld, %lld", (long long)node->ip[0],
                       (long long)node->ip[1]);
    if ((node->ip[2] != 0 && node->ip[2] != 1) || !isfinite(ir_matmul_alpha(node)))
        return ft_fail(e, "matmul: the scale flag must be 0 or 1 and the scale finite, got %lld, %g",
                       (long long)node->ip[2], node->fp[0]);
    if (node->dtype != a->dtype && ir_dtype_size(node->dtype) < ir_dtype_size(a->dtype))
        return ft_fail(e, "matmul: a %s product cannot be stored narrower, as %s", ir_dtype_name(a->dtype),
                       ir_dtype_name(node->dtype));
    if ((node->flags & IR_FLAG_INPLACE) && node->nsrc != 3)
        return ft_fail(e, "matmul: made in place without an addend to write into");
    if (want_float(node, a, "a", e) || want_same_dtype(node, a, b, "a", "b", e) ||
        want_float(node, node, "the output", e))
        return -1;
    if ((a->ndim != 2 && a->ndim != 3) || a->ndim != b->ndim)
        return ft_fail(e, "matmul: a and b must both be 2-D or both 3-D, got %d-D and %d-D", a->ndim, b->ndim);
    if (a->ndim == 3 && a->shape[0] != b->shape[0])
        return ft_fail(e, "matmul: batch extents differ: a %lld, b %lld", (long long)a->shape[0],
                       (long long)b->shape[0]);
    mm_dims_t d;
    int64_t kb;
    mm_dims(a, b, node->ip[0], node->ip[1], &d, &kb);
    if (d.k != kb) {
        char sa[96], sb[96];
        ir_shape_str(a, sa, sizeof sa);
        ir_shape_str(b, sb, sizeof sb);
        return ft_fail(e, "matmul: contraction extents differ: a %s%s has %lld, b %s%s has %lld", sa,
                       node->ip[0] ? "^T" : "", (long long)d.k, sb, node->ip[1] ? "^T" : "", (long long)kb);
    }
    scalar_shape(node);
    node->ndim = a->ndim;
    int r = a->ndim - 2;
    if (r)
        node->shape[0] = d.batch;
    node->shape[r] = d.m;
    node->shape[r + 1] = d.n;
    if (node->nsrc == 3) { /* the addend: the output's shape and dtype */
        const ir_tensor_t *c = op_src(g, node, 2);
        if (c->dtype != node->dtype)
            return ft_fail(e, "matmul: the addend is %s but the output %s", ir_dtype_name(c->dtype),
                           ir_dtype_name(node->dtype));
        if (want_same_shape(node, node, c, "the product", "the addend", e))
            return -1;
    }
    return 0;
}

/* The matmul node mm (or -1) scaled by alpha. */
static int with_alpha(ir_graph_t *g, int mm, double alpha)
{
    if (mm >= 0 && alpha != 1.0) {
        g->t[mm].ip[2] = 1;
        g->t[mm].fp[0] = alpha;
    }
    return mm;
}

/* With C = alpha·op(A)·op(B) (+ the addend): d op(A) = alpha·dC·op(B)ᵀ and d op(B) =
 * alpha·op(A)ᵀ·dC; a transposed input takes the transpose of that, which swaps the operands
 * instead of adding a permute; the addend's gradient is dC. */
static void matmul_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t n = g->t[node];
    int a = n.src[0], b = n.src[1];
    bool ta = n.ip[0], tb = n.ip[1];
    double alpha = ir_matmul_alpha(&n);
    if (need[0])
        dsrc[0] = with_alpha(g, ta ? ir_matmul(g, b, dy, tb, true) : ir_matmul(g, dy, b, false, !tb), alpha);
    if (need[1])
        dsrc[1] = with_alpha(g, tb ? ir_matmul(g, dy, a, true, ta) : ir_matmul(g, a, dy, !ta, false), alpha);
    if (n.nsrc == 3 && need[2])
        dsrc[2] = dy;
}

static void matmul_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    mm_dims_t d;
    int64_t kb;
    mm_dims(op_src(g, n, 0), op_src(g, n, 1), n->ip[0], n->ip[1], &d, &kb);
    *flops = 2.0 * (double)d.batch * (double)d.m * (double)d.n * (double)d.k;
    if (n->nsrc == 3)
        *flops += (double)d.batch * (double)d.m * (double)d.n;
    *bytes = op_io_bytes(g, n);
}

static void matmul_cpu(const ir_cpu_args_t *a)
{
    bool ta = a->node->ip[0], tb = a->node->ip[1];
    mm_dims_t d;
    int64_t kb;
    mm_dims(a->srct[0], a->srct[1], ta, tb, &d, &kb);
    /* element strides of A along m and k, of B along k and n */
    int64_t am = ta ? 1 : d.k, ak = ta ? d.m : 1;
    int64_t bk = tb ? 1 : d.n, bn = tb ? d.k : 1;
    const double *addend = a->node->nsrc == 3 ? a->in[2] : NULL;
    double alpha = ir_matmul_alpha(a->node);
    for (int64_t p = 0; p < d.batch; p++) {
        const double *A = a->in[0] + p * d.m * d.k, *B = a->in[1] + p * d.k * d.n;
        double *C = a->out + p * d.m * d.n;
        for (int64_t i = 0; i < d.m; i++)
            for (int64_t j = 0; j < d.n; j++) {
                double s = 0;
                for (int64_t k = 0; k < d.k; k++)
                    s += A[i * am + k * ak] * B[k * bk + j * bn];
                C[i * d.n + j] = alpha * s + (addend ? addend[p * d.m * d.n + i * d.n + j] : 0);
            }
    }
}

const ir_op_desc_t ir_op_matmul = {
    .name = "matmul", .min_src = 2, .max_src = 3, .inplace_src = 2,
    .shape = matmul_shape, .vjp = matmul_vjp, .cost = matmul_cost, .cpu = matmul_cpu,
};

/* ---- add, mul, scale ---- */

static int binary_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *a = op_src(g, node, 0), *b = op_src(g, node, 1);
    if (want_float(node, a, "a", e) || want_same_dtype(node, a, b, "a", "b", e) ||
        want_same_shape(node, a, b, "a", "b", e) || want_float(node, node, "the output", e))
        return -1;
    op_copy_shape(node, a);
    return 0;
}

static void add_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    for (int i = 0; i < 2; i++)
        if (need[i])
            dsrc[i] = dy;
}

static void add_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = a->in[0][i] + a->in[1][i];
}

const ir_op_desc_t ir_op_add = {
    .name = "add", .min_src = 2, .max_src = 2, .flags = IR_OPF_ELEMENTWISE,
    .shape = binary_shape, .vjp = add_vjp, .cost = cost_1, .cpu = add_cpu,
};

static void mul_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    int a = g->t[node].src[0], b = g->t[node].src[1];
    if (need[0])
        dsrc[0] = ir_mul(g, dy, b);
    if (need[1])
        dsrc[1] = ir_mul(g, dy, a);
}

static void mul_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = a->in[0][i] * a->in[1][i];
}

const ir_op_desc_t ir_op_mul = {
    .name = "mul", .min_src = 2, .max_src = 2, .flags = IR_OPF_ELEMENTWISE,
    .shape = binary_shape, .vjp = mul_vjp, .cost = cost_1, .cpu = mul_cpu,
};

/* Shape of a float op with one input whose output is that input's shape. */
static int unary_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0);
    if (want_float(node, x, "the input", e) || want_float(node, node, "the output", e))
        return -1;
    op_copy_shape(node, x);
    return 0;
}

static void scale_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    if (need[0])
        dsrc[0] = ir_scale(g, dy, g->t[node].fp[0]);
}

static void scale_cpu(const ir_cpu_args_t *a)
{
    double s = a->node->fp[0];
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = a->in[0][i] * s;
}

const ir_op_desc_t ir_op_scale = {
    .name = "scale", .min_src = 1, .max_src = 1, .flags = IR_OPF_ELEMENTWISE,
    .shape = unary_shape, .vjp = scale_vjp, .cost = cost_1, .cpu = scale_cpu,
};

/* ---- cast ---- */

static int cast_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    if ((unsigned)node->dtype >= IR_DTYPE_COUNT)
        return ft_fail(e, "cast: bad target dtype %d", (int)node->dtype);
    op_copy_shape(node, op_src(g, node, 0));
    return 0;
}

/* Rounding is not differentiable, but its derivative is 1 almost everywhere (the
 * straight-through convention every mixed-precision trainer uses); integers get nothing. */
static void cast_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_dtype_t to = g->t[node].dtype, from = g->t[g->t[node].src[0]].dtype;
    if (!need[0] || !is_float(to) || !is_float(from))
        return;
    dsrc[0] = from == to ? dy : ir_cast(g, dy, from);
}

/* Round to nearest even, saturating as the GPU's cvt.rni.s32 does; NaN becomes 0. */
static double round_i32(double x)
{
    if (isnan(x))
        return 0;
    if (x >= 2147483647.0)
        return 2147483647.0;
    if (x <= -2147483648.0)
        return -2147483648.0;
    return nearbyint(x);
}

/* x rounded to the precision of dt. Narrow floats go through f32 first, as the executor's
 * stores do. */
static double round_to(ir_dtype_t dt, double x)
{
    switch (dt) {
    case IR_F32: return (double)(float)x;
    case IR_BF16: return (double)ft_bf16_to_f32(ft_f32_to_bf16((float)x));
    case IR_F16: return (double)ft_f16_to_f32(ft_f32_to_f16((float)x));
    case IR_I32: return round_i32(x);
    default: return x;
    }
}

static void cast_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = round_to(a->node->dtype, a->in[0][i]);
}

const ir_op_desc_t ir_op_cast = {
    .name = "cast", .min_src = 1, .max_src = 1, .flags = IR_OPF_ELEMENTWISE,
    .shape = cast_shape, .vjp = cast_vjp, .cost = cost_move, .cpu = cast_cpu,
};

/* ---- reshape ---- */

static int reshape_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0);
    /* the output is the input's storage, so it must be read with the same element type */
    if (want_same_dtype(node, node, x, "the output", "the input", e) || shape_from_params(node, e))
        return -1;
    if (ir_numel(node) != ir_numel(x)) {
        char sx[96], sn[96];
        ir_shape_str(x, sx, sizeof sx);
        ir_shape_str(node, sn, sizeof sn);
        return ft_fail(e, "reshape: %s and %s differ in element count", sx, sn);
    }
    return 0;
}

static void reshape_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t x = g->t[g->t[node].src[0]];
    if (need[0] && is_float(x.dtype))
        dsrc[0] = ir_reshape(g, dy, x.ndim, x.shape);
}

static void reshape_cpu(const ir_cpu_args_t *a)
{
    if (a->out != a->in[0])
        memcpy(a->out, a->in[0], (size_t)cpu_numel(a) * sizeof *a->out);
}

/* An alias moves no data. */
const ir_op_desc_t ir_op_reshape = {
    .name = "reshape", .min_src = 1, .max_src = 1, .flags = IR_OPF_ALIAS,
    .shape = reshape_shape, .vjp = reshape_vjp, .cost = cost_none, .cpu = reshape_cpu,
};

/* ---- after ---- */

/* x's storage, ordered after dep: how a value written in place by another node (attn's row
 * statistics, see passes/fuse.c) is read. */
static int after_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0);
    if (node->dtype != x->dtype)
        return ft_fail(e, "after: the result must keep x's dtype %s, not %s", ir_dtype_name(x->dtype),
                       ir_dtype_name(node->dtype));
    op_copy_shape(node, x);
    return 0;
}

const ir_op_desc_t ir_op_after = {
    .name = "after", .min_src = 2, .max_src = 2, .flags = IR_OPF_ALIAS | IR_OPF_NONDIFF_OK,
    .shape = after_shape, .cost = cost_none, .cpu = reshape_cpu,
};

/* ---- permute ---- */

static int permute_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0);
    bool seen[IR_MAX_DIMS] = {0};
    for (int i = 0; i < x->ndim; i++) {
        int64_t p = node->ip[i];
        if (p < 0 || p >= x->ndim || seen[p])
            return ft_fail(e, "permute: ip[0..%d] is not a permutation of the input's %d axes (ip[%d] = %lld)",
                           x->ndim - 1, x->ndim, i, (long long)p);
        seen[p] = true;
    }
    node->ndim = x->ndim;
    for (int i = 0; i < x->ndim; i++)
        node->shape[i] = x->shape[node->ip[i]];
    return 0;
}

static void permute_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t n = g->t[node];
    if (!need[0] || !is_float(g->t[n.src[0]].dtype))
        return;
    int64_t inv[IR_MAX_PARAMS] = {0};
    for (int i = 0; i < n.ndim; i++)
        inv[n.ip[i]] = i;
    dsrc[0] = ir_permute(g, dy, inv);
}

/* Walks the output in order; the input is addressed through each output axis's stride in
 * the input. Axes are padded to four in front with extent 1. */
static void permute_cpu(const ir_cpu_args_t *a)
{
    const ir_tensor_t *x = a->srct[0];
    int nd = x->ndim, pad = IR_MAX_DIMS - nd;
    int64_t xs[IR_MAX_DIMS], ext[IR_MAX_DIMS] = {1, 1, 1, 1}, st[IR_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        xs[i] = s;
        s *= x->shape[i];
    }
    for (int i = 0; i < nd; i++) {
        ext[pad + i] = a->node->shape[i];
        st[pad + i] = xs[a->node->ip[i]];
    }
    double *o = a->out;
    for (int64_t i0 = 0; i0 < ext[0]; i0++)
        for (int64_t i1 = 0; i1 < ext[1]; i1++)
            for (int64_t i2 = 0; i2 < ext[2]; i2++)
                for (int64_t i3 = 0; i3 < ext[3]; i3++)
                    *o++ = a->in[0][i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3]];
}

const ir_op_desc_t ir_op_permute = {
    .name = "permute", .min_src = 1, .max_src = 1,
    .shape = permute_shape, .vjp = permute_vjp, .cost = cost_move, .cpu = permute_cpu,
};

/* ---- slice, slice_bwd ---- */

static int slice_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0);
    int64_t axis = node->ip[0], start = node->ip[1], len = node->ip[2];
    if (axis < 0 || axis >= x->ndim)
        return ft_fail(e, "slice: axis %lld out of range for %d dimensions", (long long)axis, x->ndim);
    if (start < 0 || len <= 0 || start > x->shape[axis] - len)
        return ft_fail(e, "slice: start %lld length %lld is not inside axis %lld of extent %lld", (long long)start,
                       (long long)len, (long long)axis, (long long)x->shape[axis]);
    op_copy_shape(node, x);
    node->shape[axis] = len;
    return 0;
}

static void slice_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t n = g->t[node];
    ir_tensor_t x = g->t[n.src[0]];
    if (!need[0] || !is_float(x.dtype))
        return;
    int64_t ip[IR_MAX_PARAMS] = {n.ip[0], n.ip[1], n.ip[2], x.shape[n.ip[0]]};
    dsrc[0] = ir_node(g, OP_SLICE_BWD, 1, &dy, ip, NULL);
}

/* Only the window is read. */
static void slice_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    *flops = 0;
    *bytes = 2.0 * (double)ir_nbytes(n);
}

static void slice_cpu(const ir_cpu_args_t *a)
{
    int axis = (int)a->node->ip[0];
    int64_t start = a->node->ip[1], len = a->node->ip[2], ext = a->srct[0]->shape[axis];
    int64_t outer, inner;
    split_axis(a->srct[0], axis, &outer, &inner);
    for (int64_t o = 0; o < outer; o++)
        memcpy(a->out + o * len * inner, a->in[0] + (o * ext + start) * inner, (size_t)(len * inner) * sizeof *a->out);
}

const ir_op_desc_t ir_op_slice = {
    .name = "slice", .min_src = 1, .max_src = 1,
    .shape = slice_shape, .vjp = slice_vjp, .cost = slice_cost, .cpu = slice_cpu,
};

static int slice_bwd_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *dy = op_src(g, node, 0);
    int64_t axis = node->ip[0], start = node->ip[1], len = node->ip[2], full = node->ip[3];
    if (want_float(node, dy, "dy", e))
        return -1;
    if (axis < 0 || axis >= dy->ndim)
        return ft_fail(e, "slice_bwd: axis %lld out of range for %d dimensions", (long long)axis, dy->ndim);
    if (len != dy->shape[axis])
        return ft_fail(e, "slice_bwd: window length %lld but dy has extent %lld on axis %lld", (long long)len,
                       (long long)dy->shape[axis], (long long)axis);
    if (start < 0 || len > full || start > full - len)
        return ft_fail(e, "slice_bwd: start %lld length %lld is not inside the full extent %lld", (long long)start,
                       (long long)len, (long long)full);
    op_copy_shape(node, dy);
    node->shape[axis] = full;
    return 0;
}

static void slice_bwd_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t n = g->t[node];
    if (need[0])
        dsrc[0] = ir_slice(g, dy, (int)n.ip[0], n.ip[1], n.ip[2]);
}

static void slice_bwd_cpu(const ir_cpu_args_t *a)
{
    int axis = (int)a->node->ip[0];
    int64_t start = a->node->ip[1], len = a->node->ip[2], full = a->node->ip[3];
    int64_t outer, inner;
    split_axis(a->node, axis, &outer, &inner);
    memset(a->out, 0, (size_t)cpu_numel(a) * sizeof *a->out);
    for (int64_t o = 0; o < outer; o++)
        memcpy(a->out + (o * full + start) * inner, a->in[0] + o * len * inner, (size_t)(len * inner) * sizeof *a->out);
}

const ir_op_desc_t ir_op_slice_bwd = {
    .name = "slice_bwd", .min_src = 1, .max_src = 1,
    .shape = slice_bwd_shape, .vjp = slice_bwd_vjp, .cost = cost_move, .cpu = slice_bwd_cpu,
};

/* ---- concat ---- */

static int concat_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *a = op_src(g, node, 0), *b = op_src(g, node, 1);
    int64_t axis = node->ip[0];
    if (want_same_dtype(node, a, b, "a", "b", e))
        return -1;
    if (axis < 0 || axis >= a->ndim)
        return ft_fail(e, "concat: axis %lld out of range for %d dimensions", (long long)axis, a->ndim);
    bool ok = a->ndim == b->ndim;
    for (int i = 0; ok && i < a->ndim; i++)
        ok = i == axis || a->shape[i] == b->shape[i];
    if (!ok) {
        char sa[96], sb[96];
        ir_shape_str(a, sa, sizeof sa);
        ir_shape_str(b, sb, sizeof sb);
        return ft_fail(e, "concat: a %s and b %s differ off axis %lld", sa, sb, (long long)axis);
    }
    op_copy_shape(node, a);
    node->shape[axis] += b->shape[axis];
    return 0;
}

static void concat_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t n = g->t[node];
    int axis = (int)n.ip[0];
    int64_t ea = g->t[n.src[0]].shape[axis], eb = g->t[n.src[1]].shape[axis];
    if (!is_float(n.dtype))
        return;
    if (need[0])
        dsrc[0] = ir_slice(g, dy, axis, 0, ea);
    if (need[1])
        dsrc[1] = ir_slice(g, dy, axis, ea, eb);
}

static void concat_cpu(const ir_cpu_args_t *a)
{
    int axis = (int)a->node->ip[0];
    int64_t outer, inner;
    split_axis(a->node, axis, &outer, &inner);
    int64_t na = a->srct[0]->shape[axis] * inner, nb = a->srct[1]->shape[axis] * inner;
    double *o = a->out;
    for (int64_t i = 0; i < outer; i++) {
        memcpy(o, a->in[0] + i * na, (size_t)na * sizeof *o);
        o += na;
        memcpy(o, a->in[1] + i * nb, (size_t)nb * sizeof *o);
        o += nb;
    }
}

const ir_op_desc_t ir_op_concat = {
    .name = "concat", .min_src = 2, .max_src = 2,
    .shape = concat_shape, .vjp = concat_vjp, .cost = cost_move, .cpu = concat_cpu,
};

/* ---- silu, swiglu and their backward ops ---- */

/* Every input float and of the first input's shape; the output takes that shape. */
static int same_shapes_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    static const char *const names[IR_MAX_SRC] = {"input 0", "input 1", "input 2", "input 3",
                                                  "input 4", "input 5", "input 6"};
    const ir_tensor_t *x = op_src(g, node, 0);
    if (want_float(node, node, "the output", e))
        return -1;
    for (int i = 0; i < node->nsrc; i++) {
        const ir_tensor_t *s = op_src(g, node, i);
        if (want_float(node, s, names[i], e) || want_same_shape(node, x, s, names[0], names[i], e))
            return -1;
    }
    op_copy_shape(node, x);
    return 0;
}

/* The forward SwiGLU also wants its two halves in one dtype. */
static int swiglu_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    if (want_same_dtype(node, op_src(g, node, 0), op_src(g, node, 1), "gate", "up", e))
        return -1;
    return same_shapes_shape(g, node, e);
}

static double silu(double x) { return x * sigmoid(x); }

/* d silu(x)/dx = s + x s (1 - s) = s (1 + x (1 - s)). */
static double dsilu(double x)
{
    double s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
}

static void silu_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    if (need[0])
        dsrc[0] = ir_node(g, OP_SILU_BWD, 2, (const int[]){g->t[node].src[0], dy}, NULL, NULL);
}

static void silu_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_ew(g, n, 4, flops, bytes);
}

static void silu_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = silu(a->in[0][i]);
}

const ir_op_desc_t ir_op_silu = {
    .name = "silu", .min_src = 1, .max_src = 1, .flags = IR_OPF_ELEMENTWISE,
    .shape = unary_shape, .vjp = silu_vjp, .cost = silu_cost, .cpu = silu_cpu,
};

static void silu_bwd_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_ew(g, n, 8, flops, bytes);
}

static void silu_bwd_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = a->in[1][i] * dsilu(a->in[0][i]);
}

const ir_op_desc_t ir_op_silu_bwd = {
    .name = "silu_bwd", .min_src = 2, .max_src = 2, .flags = IR_OPF_ELEMENTWISE | IR_OPF_NONDIFF_OK,
    .shape = same_shapes_shape, .vjp = NULL, .cost = silu_bwd_cost, .cpu = silu_bwd_cpu,
};

static void swiglu_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    int gate = g->t[node].src[0], up = g->t[node].src[1];
    if (need[0])
        dsrc[0] = ir_node(g, OP_SWIGLU_BWD_G, 3, (const int[]){gate, up, dy}, NULL, NULL);
    if (need[1])
        dsrc[1] = ir_node(g, OP_SWIGLU_BWD_U, 2, (const int[]){gate, dy}, NULL, NULL);
}

static void swiglu_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_ew(g, n, 5, flops, bytes);
}

static void swiglu_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = silu(a->in[0][i]) * a->in[1][i];
}

const ir_op_desc_t ir_op_swiglu = {
    .name = "swiglu", .min_src = 2, .max_src = 2, .flags = IR_OPF_ELEMENTWISE,
    .shape = swiglu_shape, .vjp = swiglu_vjp, .cost = swiglu_cost, .cpu = swiglu_cpu,
};

static void swiglu_bwd_g_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_ew(g, n, 9, flops, bytes);
}

static void swiglu_bwd_g_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = a->in[2][i] * a->in[1][i] * dsilu(a->in[0][i]);
}

const ir_op_desc_t ir_op_swiglu_bwd_g = {
    .name = "swiglu_bwd_g", .min_src = 3, .max_src = 3, .flags = IR_OPF_ELEMENTWISE | IR_OPF_NONDIFF_OK,
    .shape = same_shapes_shape, .vjp = NULL, .cost = swiglu_bwd_g_cost, .cpu = swiglu_bwd_g_cpu,
};

static void swiglu_bwd_u_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = a->in[1][i] * silu(a->in[0][i]);
}

const ir_op_desc_t ir_op_swiglu_bwd_u = {
    .name = "swiglu_bwd_u", .min_src = 2, .max_src = 2, .flags = IR_OPF_ELEMENTWISE | IR_OPF_NONDIFF_OK,
    .shape = same_shapes_shape, .vjp = NULL, .cost = swiglu_cost, .cpu = swiglu_bwd_u_cpu,
};

/* ---- sum, mean, sumsq ---- */

static int reduce_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    if (want_float(node, op_src(g, node, 0), "the input", e) || want_float(node, node, "the output", e))
        return -1;
    scalar_shape(node);
    return 0;
}

/* sum and mean broadcast the scalar adjoint back, times 1 or 1/n. */
static void reduce_vjp(ir_graph_t *g, int node, int dy, double k, int dsrc[IR_MAX_SRC])
{
    ir_tensor_t x = g->t[g->t[node].src[0]];
    dsrc[0] = ir_fill(g, dy, k, x.ndim, x.shape, x.dtype);
}

static void sum_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    if (need[0])
        reduce_vjp(g, node, dy, 1.0, dsrc);
}

static void mean_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    if (need[0])
        reduce_vjp(g, node, dy, 1.0 / (double)ir_numel(&g->t[g->t[node].src[0]]), dsrc);
}

static void sum_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_reduce(g, n, 1, flops, bytes);
}

static double sum_of(const ir_cpu_args_t *a)
{
    int64_t n = ir_numel(a->srct[0]);
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a->in[0][i];
    return s;
}

static void sum_cpu(const ir_cpu_args_t *a) { a->out[0] = sum_of(a); }
static void mean_cpu(const ir_cpu_args_t *a) { a->out[0] = sum_of(a) / (double)ir_numel(a->srct[0]); }

const ir_op_desc_t ir_op_sum = {
    .name = "sum", .min_src = 1, .max_src = 1,
    .shape = reduce_shape, .vjp = sum_vjp, .cost = sum_cost, .cpu = sum_cpu,
};

const ir_op_desc_t ir_op_mean = {
    .name = "mean", .min_src = 1, .max_src = 1,
    .shape = reduce_shape, .vjp = mean_vjp, .cost = sum_cost, .cpu = mean_cpu,
};

static void sumsq_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_reduce(g, n, 2, flops, bytes);
}

static void sumsq_cpu(const ir_cpu_args_t *a)
{
    int64_t n = ir_numel(a->srct[0]);
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a->in[0][i] * a->in[0][i];
    a->out[0] = s;
}

/* Gradient-norm bookkeeping of the optimizer phase: never differentiated. */
const ir_op_desc_t ir_op_sumsq = {
    .name = "sumsq", .min_src = 1, .max_src = 1, .flags = IR_OPF_NONDIFF_OK,
    .shape = reduce_shape, .vjp = NULL, .cost = sumsq_cost, .cpu = sumsq_cpu,
};

/* ---- dropout ---- */

static uint64_t splitmix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The dropout mask's random number: a uniform double in [0, 1) for element i, from the
 * rng tensor's two words (seed, counter), the node's salt and the element index. Each
 * argument is folded in by one splitmix64 finaliser round, so the first three rounds are
 * the same for every element of a launch and the GPU kernel hoists them. A GPU lowering
 * must compute exactly this formula so that CPU and GPU draw the same mask. */
double ir_dropout_uniform(uint64_t seed, uint64_t counter, uint64_t salt, uint64_t i)
{
    uint64_t h = splitmix64(seed);
    h = splitmix64(h ^ counter);
    h = splitmix64(h ^ salt);
    h = splitmix64(h ^ i);
    return (double)(h >> 11) * 0x1.0p-53; /* the top 53 bits: exact, and < 1 */
}

/* An i32 rng word as the device holds it: its 32 bits, zero-extended. */
static uint64_t rng_word(double v) { return (uint64_t)(uint32_t)(int64_t)v; }

static int dropout_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0), *rng = op_src(g, node, 1);
    double p = node->fp[0];
    if (want_float(node, x, "x", e) || want_float(node, node, "the output", e))
        return -1;
    if (rng->dtype != IR_I32 || ir_numel(rng) != 2)
        return ft_fail(e, "dropout: rng must be i32 with 2 elements, got %s with %lld", ir_dtype_name(rng->dtype),
                       (long long)ir_numel(rng));
    if (!(p >= 0 && p < 1))
        return ft_fail(e, "dropout: probability %g is not in [0, 1)", p);
    op_copy_shape(node, x);
    return 0;
}

/* The same (rng, salt) draws the same mask, so the backward pass is dropout of dy. */
static void dropout_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    ir_tensor_t n = g->t[node];
    if (need[0])
        dsrc[0] = ir_dropout(g, dy, n.src[1], n.fp[0], n.ip[0]);
}

static void dropout_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    cost_ew(g, n, 1, flops, bytes);
}

static void dropout_cpu(const ir_cpu_args_t *a)
{
    double p = a->node->fp[0];
    int64_t n = cpu_numel(a);
    if (p == 0) {
        memcpy(a->out, a->in[0], (size_t)n * sizeof *a->out);
        return;
    }
    uint64_t seed = rng_word(a->in[1][0]), counter = rng_word(a->in[1][1]), salt = (uint64_t)a->node->ip[0];
    for (int64_t i = 0; i < n; i++) {
        bool keep = ir_dropout_uniform(seed, counter, salt, (uint64_t)i) >= p;
        a->out[i] = keep ? a->in[0][i] / (1.0 - p) : 0.0;
    }
}

const ir_op_desc_t ir_op_dropout = {
    .name = "dropout", .min_src = 2, .max_src = 2,
    .shape = dropout_shape, .vjp = dropout_vjp, .cost = dropout_cost, .cpu = dropout_cpu,
};

/* ---- acc ---- */

/* In place: the node is buf, so it keeps buf's dtype; x may be any float type. */
static int acc_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *buf = op_src(g, node, 0), *x = op_src(g, node, 1);
    if (want_float(node, buf, "buf", e) || want_float(node, x, "x", e) ||
        want_same_dtype(node, node, buf, "the output", "buf", e) || want_same_shape(node, buf, x, "buf", "x", e))
        return -1;
    op_copy_shape(node, buf);
    return 0;
}

static void acc_cpu(const ir_cpu_args_t *a)
{
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++)
        a->out[i] = a->in[0][i] + a->in[1][i];
}

const ir_op_desc_t ir_op_acc = {
    .name = "acc", .min_src = 2, .max_src = 2, .flags = IR_OPF_ALIAS | IR_OPF_NONDIFF_OK, .writes = 1u << 0,
    .shape = acc_shape, .vjp = NULL, .cost = cost_1, .cpu = acc_cpu,
};

/* ---- gnorm ---- */

static int gnorm_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *ss = op_src(g, node, 0);
    if (want_float(node, ss, "sumsq", e) || want_scalar(node, ss, "sumsq", e) ||
        want_hyper(node, op_src(g, node, 1), e) || want_float(node, node, "the output", e))
        return -1;
    scalar_shape(node);
    return 0;
}

static void gnorm_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    *flops = 2;
    *bytes = op_io_bytes(g, n);
}

/* The gradient buffers hold sums over tokens; the norm is of their mean. */
static void gnorm_cpu(const ir_cpu_args_t *a) { a->out[0] = sqrt(a->in[0][0]) * a->in[1][IR_HYPER_INV_NTOK]; }

const ir_op_desc_t ir_op_gnorm = {
    .name = "gnorm", .min_src = 2, .max_src = 2, .flags = IR_OPF_NONDIFF_OK,
    .shape = gnorm_shape, .vjp = NULL, .cost = gnorm_cost, .cpu = gnorm_cpu,
};

/* ---- adamw ---- */

static int adamw_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    static const char *const names[4] = {"w", "g", "m", "v"};
    const ir_tensor_t *w = op_src(g, node, 0);
    if (node->ip[0] != 0 && node->ip[0] != 1)
        return ft_fail(e, "adamw: decay flag ip[0] must be 0 or 1, got %lld", (long long)node->ip[0]);
    if (want_same_dtype(node, node, w, "the output", "w", e))
        return -1;
    for (int i = 0; i < 4; i++) {
        const ir_tensor_t *s = op_src(g, node, i);
        if (want_float(node, s, names[i], e) || want_same_shape(node, w, s, "w", names[i], e))
            return -1;
    }
    const ir_tensor_t *gn = op_src(g, node, 5);
    if (want_hyper(node, op_src(g, node, 4), e) || want_float(node, gn, "gnorm", e) ||
        want_scalar(node, gn, "gnorm", e))
        return -1;
    op_copy_shape(node, w);
    return 0;
}

/* m and v are written back as well as w. */
static void adamw_cost(const ir_graph_t *g, const ir_tensor_t *n, double *flops, double *bytes)
{
    *flops = 18.0 * (double)ir_numel(n);
    *bytes = op_io_bytes(g, n) + (double)ir_nbytes(op_src(g, n, 2)) + (double)ir_nbytes(op_src(g, n, 3));
}

/* torch.optim.AdamW with the gradient first made a per-token mean (inv_ntok) and clipped
 * by the global norm: decoupled decay multiplies w by 1 - lr*wd before the Adam step. */
static void adamw_cpu(const ir_cpu_args_t *a)
{
    const double *h = a->in[4];
    double gn = a->in[5][0], clip = h[IR_HYPER_CLIP];
    double coef = clip > 0 && gn > clip ? clip / (gn + 1e-6) : 1.0;
    double lr = h[IR_HYPER_LR], b1 = h[IR_HYPER_BETA1], b2 = h[IR_HYPER_BETA2], eps = h[IR_HYPER_EPS];
    double decay = a->node->ip[0] ? lr * h[IR_HYPER_WD] : 0.0;
    double gscale = h[IR_HYPER_INV_NTOK] * coef, bc1 = h[IR_HYPER_BC1], bc2 = h[IR_HYPER_BC2];
    const double *w = a->in[0], *g = a->in[1];
    double *m = a->in[2], *v = a->in[3];
    int64_t n = cpu_numel(a);
    for (int64_t i = 0; i < n; i++) {
        double gr = g[i] * gscale;
        m[i] = b1 * m[i] + (1 - b1) * gr;
        v[i] = b2 * v[i] + (1 - b2) * gr * gr;
        double wi = w[i] - decay * w[i];
        a->out[i] = wi - lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
    }
}

const ir_op_desc_t ir_op_adamw = {
    .name = "adamw", .min_src = 6, .max_src = 6, .flags = IR_OPF_ALIAS | IR_OPF_NONDIFF_OK,
    .writes = (1u << 0) | (1u << 2) | (1u << 3),
    .shape = adamw_shape, .vjp = NULL, .cost = adamw_cost, .cpu = adamw_cpu,
};
