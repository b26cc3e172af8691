/* graph.c — the graph container, tensor helpers, the generic node constructor and the
 * sticky builder error. Op-specific knowledge lives in the op table (ops.c), not here. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

static const size_t dtype_size[IR_DTYPE_COUNT] = {4, 2, 2, 4, 8};
static const char *const dtype_name[IR_DTYPE_COUNT] = {"f32", "bf16", "f16", "i32", "f64"};
static const char *const role_name[IR_ROLE_COUNT] = {"input", "frozen", "trainable", "act", "grad", "optstate"};
_Static_assert(IR_DTYPE_COUNT == 5, "dtype tables");
_Static_assert(IR_ROLE_COUNT == 6, "role table");

size_t ir_dtype_size(ir_dtype_t dt) { return dt < IR_DTYPE_COUNT ? dtype_size[dt] : 0; }
const char *ir_dtype_name(ir_dtype_t dt) { return dt < IR_DTYPE_COUNT ? dtype_name[dt] : "?"; }
const char *ir_role_name(ir_role_t r) { return r < IR_ROLE_COUNT ? role_name[r] : "?"; }

int64_t ir_numel(const ir_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int64_t ir_nbytes(const ir_tensor_t *t) { return ir_numel(t) * (int64_t)ir_dtype_size(t->dtype); }

bool ir_same_shape(const ir_tensor_t *a, const ir_tensor_t *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

void ir_shape_str(const ir_tensor_t *t, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

void ir_graph_init(ir_graph_t *g)
{
    memset(g, 0, sizeof *g);
    g->cur_block = -1;
}

void ir_graph_free(ir_graph_t *g)
{
    free(g->t);
    free(g->sched);
    memset(g, 0, sizeof *g);
}

int ir_graph_copy(ir_graph_t *dst, const ir_graph_t *src)
{
    *dst = *src;
    dst->cap = src->n > 0 ? src->n : 1;
    dst->t = ft_xmalloc((size_t)dst->cap * sizeof *dst->t);
    memcpy(dst->t, src->t, (size_t)src->n * sizeof *src->t);
    dst->sched = NULL;
    if (src->sched) {
        dst->sched = ft_xmalloc((size_t)(src->nsched ? src->nsched : 1) * sizeof *dst->sched);
        memcpy(dst->sched, src->sched, (size_t)src->nsched * sizeof *src->sched);
    }
    return 0;
}

int ir_find(const ir_graph_t *g, const char *name)
{
    for (int i = 0; i < g->n; i++)
        if (!(g->t[i].flags & IR_FLAG_DEAD) && strcmp(g->t[i].name, name) == 0)
            return i;
    return -1;
}

int ir_error(ir_graph_t *g, const char *fmt, ...)
{
    if (g->err[0])
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return -1;
}

void ir_set_name(ir_graph_t *g, int id, const char *fmt, ...)
{
    if (id < 0 || id >= g->n)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->t[id].name, IR_NAME_MAX, fmt, ap);
    va_end(ap);
}

static int new_tensor(ir_graph_t *g)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 256;
        g->t = ft_xrealloc(g->t, (size_t)g->cap * sizeof *g->t);
    }
    ir_tensor_t *t = &g->t[g->n];
    memset(t, 0, sizeof *t);
    t->block = g->cur_block;
    t->phase = g->cur_phase;
    t->grad = -1;
    t->state[0] = t->state[1] = -1;
    t->offset = -1;
    return g->n++;
}

int ir_leaf(ir_graph_t *g, const char *name, ir_role_t role, ir_dtype_t dt, int ndim, const int64_t *shape)
{
    if (g->err[0])
        return -1;
    if (ndim < 0 || ndim > IR_MAX_DIMS)
        return ir_error(g, "leaf '%s': %d dimensions (at most %d)", name, ndim, IR_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return ir_error(g, "leaf '%s': dimension %d is %lld", name, i, (long long)shape[i]);
    /* name and shape may point into the tensor array, which moves when it grows */
    char namec[IR_NAME_MAX];
    int64_t shapec[IR_MAX_DIMS] = {0};
    snprintf(namec, sizeof namec, "%s", name);
    for (int i = 0; i < ndim; i++)
        shapec[i] = shape[i];
    int id = new_tensor(g);
    ir_tensor_t *t = &g->t[id];
    t->op = OP_LEAF;
    t->role = role;
    t->dtype = dt;
    t->ndim = ndim;
    memcpy(t->shape, shapec, sizeof t->shape);
    t->block = -1;
    memcpy(t->name, namec, sizeof t->name);
    return id;
}

int ir_node_dt(ir_graph_t *g, ir_op_t op, ir_dtype_t dt, int nsrc, const int *src, const int64_t *ip, const double *fp)
{
    if (g->err[0])
        return -1;
    const ir_op_desc_t *d = ir_ops[op];
    if (nsrc < d->min_src || nsrc > d->max_src)
        return ir_error(g, "%s: takes %d to %d inputs, got %d", d->name, d->min_src, d->max_src, nsrc);
    for (int i = 0; i < nsrc; i++)
        if (src[i] < 0 || src[i] >= g->n)
            return ir_error(g, "%s: input %d is not a tensor (%d)", d->name, i, src[i]);
    /* callers may pass another node's parameters, which move when the array grows */
    int64_t ipc[IR_MAX_PARAMS] = {0};
    double fpc[IR_MAX_PARAMS] = {0};
    int srcc[IR_MAX_SRC];
    if (ip)
        memcpy(ipc, ip, sizeof ipc);
    if (fp)
        memcpy(fpc, fp, sizeof fpc);
    if (nsrc > 0)
        memcpy(srcc, src, (size_t)nsrc * sizeof *src);
    int id = new_tensor(g);
    ir_tensor_t *t = &g->t[id];
    t->op = op;
    t->role = IR_ACT;
    t->dtype = dt;
    t->nsrc = nsrc;
    if (nsrc > 0)
        memcpy(t->src, srcc, (size_t)nsrc * sizeof *srcc);
    memcpy(t->ip, ipc, sizeof t->ip);
    memcpy(t->fp, fpc, sizeof t->fp);
    snprintf(t->name, IR_NAME_MAX, "%s.%d", d->name, id);
    ft_err_t e;
    if (d->shape(g, t, &e) != 0) {
        g->n--; /* drop the half-built node */
        return ir_error(g, "%s", e.msg);
    }
    return id;
}

int ir_node(ir_graph_t *g, ir_op_t op, int nsrc, const int *src, const int64_t *ip, const double *fp)
{
    ir_dtype_t dt = IR_F32;
    if (nsrc > 0 && src[0] >= 0 && src[0] < g->n)
        dt = g->t[src[0]].dtype;
    return ir_node_dt(g, op, dt, nsrc, src, ip, fp);
}

/* ---- thin builders: they only pack parameters ---- */

#define IP(...) ((const int64_t[IR_MAX_PARAMS]){__VA_ARGS__})
#define FP(...) ((const double[IR_MAX_PARAMS]){__VA_ARGS__})
#define SRC(...) ((const int[]){__VA_ARGS__})

int ir_fill(ir_graph_t *g, int x, double value, int ndim, const int64_t *shape, ir_dtype_t dt)
{
    int64_t ip[IR_MAX_PARAMS] = {ndim};
    for (int i = 0; i < ndim && i < IR_MAX_DIMS; i++)
        ip[1 + i] = shape[i];
    return ir_node_dt(g, OP_FILL, dt, x >= 0 ? 1 : 0, SRC(x), ip, FP(value));
}

int ir_embed(ir_graph_t *g, int table, int ids) { return ir_node(g, OP_EMBED, 2, SRC(table, ids), NULL, NULL); }
int ir_matmul(ir_graph_t *g, int a, int b, bool ta, bool tb) { return ir_node(g, OP_MATMUL, 2, SRC(a, b), IP(ta, tb), NULL); }
int ir_matmul_add(ir_graph_t *g, int a, int b, bool ta, bool tb, int c)
{
    return ir_node(g, OP_MATMUL, 3, SRC(a, b, c), IP(ta, tb), NULL);
}
int ir_add(ir_graph_t *g, int a, int b) { return ir_node(g, OP_ADD, 2, SRC(a, b), NULL, NULL); }
int ir_mul(ir_graph_t *g, int a, int b) { return ir_node(g, OP_MUL, 2, SRC(a, b), NULL, NULL); }
int ir_scale(ir_graph_t *g, int a, double s) { return ir_node(g, OP_SCALE, 1, SRC(a), NULL, FP(s)); }
int ir_cast(ir_graph_t *g, int a, ir_dtype_t dt) { return ir_node_dt(g, OP_CAST, dt, 1, SRC(a), NULL, NULL); }
int ir_silu(ir_graph_t *g, int x) { return ir_node(g, OP_SILU, 1, SRC(x), NULL, NULL); }
int ir_swiglu(ir_graph_t *g, int gate, int up) { return ir_node(g, OP_SWIGLU, 2, SRC(gate, up), NULL, NULL); }
int ir_sum(ir_graph_t *g, int a) { return ir_node(g, OP_SUM, 1, SRC(a), NULL, NULL); }
int ir_mean(ir_graph_t *g, int a) { return ir_node(g, OP_MEAN, 1, SRC(a), NULL, NULL); }
int ir_rmsnorm(ir_graph_t *g, int x, int w, double eps) { return ir_node(g, OP_RMSNORM, 2, SRC(x, w), NULL, FP(eps)); }
int ir_attn(ir_graph_t *g, int q, int k, int v, int doc, double scale)
{
    return ir_node(g, OP_ATTN, 4, SRC(q, k, v, doc), NULL, FP(scale));
}
int ir_dropout(ir_graph_t *g, int x, int rng, double p, int64_t salt)
{
    return ir_node(g, OP_DROPOUT, 2, SRC(x, rng), IP(salt), FP(p));
}
int ir_concat(ir_graph_t *g, int a, int b, int axis) { return ir_node(g, OP_CONCAT, 2, SRC(a, b), IP(axis), NULL); }
int ir_slice(ir_graph_t *g, int a, int axis, int64_t start, int64_t len)
{
    return ir_node(g, OP_SLICE, 1, SRC(a), IP(axis, start, len), NULL);
}

int ir_xent(ir_graph_t *g, int logits, int targets, int64_t ignore_index)
{
    return ir_node_dt(g, OP_XENT, IR_F32, 2, SRC(logits, targets), IP(ignore_index), NULL);
}

int ir_rope(ir_graph_t *g, int x, int pos, const int64_t ip3[3], const double fp4[4])
{
    int64_t ip[IR_MAX_PARAMS] = {0};
    double fp[IR_MAX_PARAMS] = {0};
    memcpy(ip, ip3, 3 * sizeof *ip);
    memcpy(fp, fp4, 4 * sizeof *fp);
    return ir_node(g, OP_ROPE, 2, SRC(x, pos), ip, fp);
}

int ir_reshape(ir_graph_t *g, int a, int ndim, const int64_t *shape)
{
    int64_t ip[IR_MAX_PARAMS] = {ndim};
    for (int i = 0; i < ndim && i < IR_MAX_DIMS; i++)
        ip[1 + i] = shape[i];
    return ir_node(g, OP_RESHAPE, 1, SRC(a), ip, NULL);
}

int ir_permute(ir_graph_t *g, int a, const int64_t *perm)
{
    int64_t ip[IR_MAX_PARAMS] = {0};
    int nd = (a >= 0 && a < g->n) ? g->t[a].ndim : 0;
    for (int i = 0; i < nd; i++)
        ip[i] = perm[i];
    return ir_node(g, OP_PERMUTE, 1, SRC(a), ip, NULL);
}

bool ir_in_place(const ir_tensor_t *t)
{
    return t->op != OP_LEAF && (unsigned)t->op < OP_COUNT && t->nsrc > 0 &&
           ((ir_ops[t->op]->flags & IR_OPF_ALIAS) || (t->flags & IR_FLAG_INPLACE));
}

int ir_alias_src(const ir_tensor_t *t)
{
    if ((unsigned)t->op >= OP_COUNT || (ir_ops[t->op]->flags & IR_OPF_ALIAS) || !(t->flags & IR_FLAG_INPLACE))
        return 0;
    return ir_ops[t->op]->inplace_src;
}

double ir_matmul_alpha(const ir_tensor_t *t) { return t->op == OP_MATMUL && t->ip[2] ? t->fp[0] : 1.0; }
