/* ops_nn.c — the neural-network ops: RMS normalisation, rotary position embedding (with the
 * linear and Llama 3 frequency scalings), causal document-masked attention with grouped
 * key/value heads (with the row statistics its backward reads: attn_lse and rowsum), and the
 * token cross-entropy loss, each with its backward ops. Every op is one descriptor: shape
 * rule, VJP, cost and a float64 CPU reference. The references are the oracle that the GPU
 * kernels and the finite-difference tests are held to, so they favour plainness and
 * double-precision statistics over speed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"
#include "ops_util.h"

/* ------------------------------------------------------------------ shared helpers */

static int want_float(const char *op, const char *what, const ir_tensor_t *t, ft_err_t *e)
{
    if (t->dtype != IR_I32)
        return 0;
    return ft_fail(e, "%s: %s must be floating point, got %s", op, what, ir_dtype_name(t->dtype));
}

static int want_i32(const char *op, const char *what, const ir_tensor_t *t, ft_err_t *e)
{
    if (t->dtype == IR_I32)
        return 0;
    return ft_fail(e, "%s: %s must be i32, got %s", op, what, ir_dtype_name(t->dtype));
}

static int want_ndim(const char *op, const char *what, const ir_tensor_t *t, int ndim, ft_err_t *e)
{
    if (t->ndim == ndim)
        return 0;
    char s[96];
    ir_shape_str(t, s, sizeof s);
    return ft_fail(e, "%s: %s must have %d dimensions, got %s", op, what, ndim, s);
}

static int want_same_shape(const char *op, const char *wa, const ir_tensor_t *a, const char *wb,
                           const ir_tensor_t *b, ft_err_t *e)
{
    if (ir_same_shape(a, b))
        return 0;
    char sa[96], sb[96];
    ir_shape_str(a, sa, sizeof sa);
    ir_shape_str(b, sb, sizeof sb);
    return ft_fail(e, "%s: %s %s and %s %s differ in shape", op, wa, sa, wb, sb);
}

/* The shape [d0, d1] of a per-token tensor (positions, document ids) must match x's first
 * two dimensions. */
static int want_tokens(const char *op, const char *what, const ir_tensor_t *t, const ir_tensor_t *x, ft_err_t *e)
{
    if (want_i32(op, what, t, e) || want_ndim(op, what, t, 2, e))
        return -1;
    if (t->shape[0] == x->shape[0] && t->shape[1] == x->shape[1])
        return 0;
    return ft_fail(e, "%s: %s is [%lld,%lld], expected [%lld,%lld] (batch, sequence)", op, what,
                   (long long)t->shape[0], (long long)t->shape[1], (long long)x->shape[0], (long long)x->shape[1]);
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* ------------------------------------------------------------------ rmsnorm */

/* x[..., D] and w[D], both floating point. */
static int rms_check(const char *op, const ir_tensor_t *x, const ir_tensor_t *w, ft_err_t *e)
{
    if (want_float(op, "x", x, e) || want_float(op, "w", w, e))
        return -1;
    if (x->ndim < 1)
        return ft_fail(e, "%s: x is a scalar; it needs a feature dimension", op);
    if (want_ndim(op, "w", w, 1, e))
        return -1;
    if (w->shape[0] != x->shape[x->ndim - 1])
        return ft_fail(e, "%s: w has %lld features, x has %lld", op, (long long)w->shape[0],
                       (long long)x->shape[x->ndim - 1]);
    return 0;
}

static int rms_eps_check(const char *op, const ir_tensor_t *node, ft_err_t *e)
{
    if (node->fp[0] >= 0 && isfinite(node->fp[0]))
        return 0;
    return ft_fail(e, "%s: eps %g must be finite and non-negative", op, node->fp[0]);
}

static int rmsnorm_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0);
    if (rms_check("rmsnorm", x, op_src(g, node, 1), e) || rms_eps_check("rmsnorm", node, e))
        return -1;
    op_copy_shape(node, x);
    return 0;
}

static int rmsnorm_bwd_x_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const char *op = "rmsnorm_bwd_x";
    const ir_tensor_t *x = op_src(g, node, 0), *dy = op_src(g, node, 2);
    if (rms_check(op, x, op_src(g, node, 1), e) || rms_eps_check(op, node, e))
        return -1;
    if (want_float(op, "dy", dy, e) || want_same_shape(op, "x", x, "dy", dy, e))
        return -1;
    if (node->nsrc == 4) { /* the addend: the output's shape and dtype */
        const ir_tensor_t *c = op_src(g, node, 3);
        if (want_same_shape(op, "x", x, "the addend", c, e))
            return -1;
        if (c->dtype != node->dtype)
            return ft_fail(e, "%s: the addend is %s but the output %s", op, ir_dtype_name(c->dtype),
                           ir_dtype_name(node->dtype));
    }
    op_copy_shape(node, x);
    return 0;
}

static int rmsnorm_bwd_w_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const char *op = "rmsnorm_bwd_w";
    const ir_tensor_t *x = op_src(g, node, 0), *dy = op_src(g, node, 1);
    if (want_float(op, "x", x, e) || want_float(op, "dy", dy, e) || rms_eps_check(op, node, e))
        return -1;
    if (x->ndim < 1)
        return ft_fail(e, "%s: x is a scalar; it needs a feature dimension", op);
    if (want_same_shape(op, "x", x, "dy", dy, e))
        return -1;
    node->ndim = 1;
    memset(node->shape, 0, sizeof node->shape);
    node->shape[0] = x->shape[x->ndim - 1];
    return 0;
}

/* dx = rmsnorm_bwd_x(x, w, dy), dw = rmsnorm_bwd_w(x, dy); each in its input's dtype. */
static void rmsnorm_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    const ir_tensor_t n = g->t[node]; /* a copy: building nodes may move g->t */
    int x = n.src[0], w = n.src[1];
    if (need[0])
        dsrc[0] = ir_node_dt(g, OP_RMSNORM_BWD_X, g->t[x].dtype, 3, (const int[]){x, w, dy}, n.ip, n.fp);
    if (need[1])
        dsrc[1] = ir_node_dt(g, OP_RMSNORM_BWD_W, g->t[w].dtype, 2, (const int[]){x, dy}, n.ip, n.fp);
}

/* 1 / sqrt(mean(x^2) + eps) of one row, accumulated in double whatever the storage. */
static double rms_inv(const double *x, int64_t d, double eps) { return 1.0 / sqrt(dot(x, x, d) / (double)d + eps); }

static int64_t last_dim(const ir_tensor_t *t) { return t->shape[t->ndim - 1]; }

static void rmsnorm_cpu(const ir_cpu_args_t *a)
{
    int64_t d = last_dim(a->srct[0]), rows = ir_numel(a->srct[0]) / d;
    const double *w = a->in[1];
    for (int64_t r = 0; r < rows; r++) {
        const double *x = a->in[0] + r * d;
        double *y = a->out + r * d;
        double inv = rms_inv(x, d, a->node->fp[0]);
        for (int64_t j = 0; j < d; j++)
            y[j] = x[j] * inv * w[j];
    }
}

/* With r = rms_inv(x): dx_k = r * (dy_k w_k - x_k r^2 (sum_j dy_j w_j x_j) / D), since
 * dr/dx_k = -r^3 x_k / D; plus the addend where there is one. */
static void rmsnorm_bwd_x_cpu(const ir_cpu_args_t *a)
{
    int64_t d = last_dim(a->srct[0]), rows = ir_numel(a->srct[0]) / d;
    const double *w = a->in[1];
    for (int64_t r = 0; r < rows; r++) {
        const double *x = a->in[0] + r * d, *dy = a->in[2] + r * d;
        const double *add = a->node->nsrc == 4 ? a->in[3] + r * d : NULL;
        double *dx = a->out + r * d;
        double inv = rms_inv(x, d, a->node->fp[0]);
        double s = 0;
        for (int64_t j = 0; j < d; j++)
            s += dy[j] * w[j] * x[j];
        double c = inv * inv * s / (double)d;
        for (int64_t j = 0; j < d; j++)
            dx[j] = inv * (dy[j] * w[j] - x[j] * c) + (add ? add[j] : 0.0);
    }
}

/* dw_j = sum over rows of dy_j x_j r. */
static void rmsnorm_bwd_w_cpu(const ir_cpu_args_t *a)
{
    int64_t d = last_dim(a->srct[0]), rows = ir_numel(a->srct[0]) / d;
    memset(a->out, 0, (size_t)d * sizeof *a->out);
    for (int64_t r = 0; r < rows; r++) {
        const double *x = a->in[0] + r * d, *dy = a->in[1] + r * d;
        double inv = rms_inv(x, d, a->node->fp[0]);
        for (int64_t j = 0; j < d; j++)
            a->out[j] += dy[j] * x[j] * inv;
    }
}

static void rmsnorm_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = 4.0 * (double)ir_numel(node); /* square-add, scale, weight */
    *bytes = op_io_bytes(g, node);
}

static void rmsnorm_bwd_x_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = 8.0 * (double)ir_numel(node);
    *bytes = op_io_bytes(g, node);
}

static void rmsnorm_bwd_w_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = 5.0 * (double)ir_numel(op_src(g, node, 0));
    *bytes = op_io_bytes(g, node);
}

const ir_op_desc_t ir_op_rmsnorm = {
    .name = "rmsnorm", .min_src = 2, .max_src = 2,
    .shape = rmsnorm_shape, .vjp = rmsnorm_vjp, .cost = rmsnorm_cost, .cpu = rmsnorm_cpu,
};

/* Backward ops are not differentiated again (no second-order training), hence NONDIFF_OK. */
const ir_op_desc_t ir_op_rmsnorm_bwd_x = {
    .name = "rmsnorm_bwd_x", .min_src = 3, .max_src = 4, .flags = IR_OPF_NONDIFF_OK,
    .shape = rmsnorm_bwd_x_shape, .cost = rmsnorm_bwd_x_cost, .cpu = rmsnorm_bwd_x_cpu,
};

const ir_op_desc_t ir_op_rmsnorm_bwd_w = {
    .name = "rmsnorm_bwd_w", .min_src = 2, .max_src = 2, .flags = IR_OPF_NONDIFF_OK,
    .shape = rmsnorm_bwd_w_shape, .cost = rmsnorm_bwd_w_cost, .cpu = rmsnorm_bwd_w_cpu,
};

/* ------------------------------------------------------------------ rope */

enum { ROPE_NONE = 0, ROPE_LLAMA3 = 1, ROPE_LINEAR = 2 }; /* ip[1]; matches ft_rope_scaling_t */

static const double two_pi = 6.283185307179586476925286766559;

/* HF transformers' _compute_llama3_parameters for one frequency: high frequencies (short
 * wavelengths) are kept, low ones divided by the factor, and the band between is blended. */
static double llama3_freq(const ir_tensor_t *node, double f)
{
    double factor = node->fp[1], low = node->fp[2], high = node->fp[3], old = (double)node->ip[2];
    double wavelen = two_pi / f;
    if (wavelen < old / high)
        return f;
    if (wavelen > old / low)
        return f / factor;
    double smooth = (old / wavelen - low) / (high - low);
    return (1 - smooth) * f / factor + smooth * f;
}

/* The rotary frequencies of a rope node, inv_freq[j] for j < dh/2: theta^(-2j/dh) (HF's
 * 1 / theta^(arange(0, dh, 2) / dh)), then the node's scaling (ip[1]: none, llama3 with
 * fp[1..3] and ip[2], linear with fp[1]). Shared with the GPU code generator and the tests so
 * that every backend rotates by the same angles. */
void ir_rope_inv_freq(const ir_tensor_t *node, int64_t dh, double *inv_freq)
{
    for (int64_t j = 0; j < dh / 2; j++) {
        double f = 1.0 / pow(node->fp[0], (double)(2 * j) / (double)dh);
        if (node->ip[1] == ROPE_LINEAR)
            f /= node->fp[1];
        else if (node->ip[1] == ROPE_LLAMA3)
            f = llama3_freq(node, f);
        inv_freq[j] = f;
    }
}

static int rope_params_check(const ir_tensor_t *node, ft_err_t *e)
{
    if (node->ip[0] != 0 && node->ip[0] != 1)
        return ft_fail(e, "rope: inverse flag ip[0] is %lld (0 or 1)", (long long)node->ip[0]);
    if (!(node->fp[0] > 0) || !isfinite(node->fp[0]))
        return ft_fail(e, "rope: theta %g must be positive", node->fp[0]);
    int64_t kind = node->ip[1];
    if (kind != ROPE_NONE && kind != ROPE_LLAMA3 && kind != ROPE_LINEAR)
        return ft_fail(e, "rope: unknown scaling kind %lld (0 none, 1 llama3, 2 linear)", (long long)kind);
    if (kind != ROPE_NONE && !(node->fp[1] > 0))
        return ft_fail(e, "rope: scaling factor %g must be positive", node->fp[1]);
    if (kind != ROPE_LLAMA3)
        return 0;
    if (!(node->fp[2] > 0) || !(node->fp[3] > 0) || node->fp[2] == node->fp[3])
        return ft_fail(e, "rope: llama3 low/high frequency factors %g, %g must be positive and differ",
                       node->fp[2], node->fp[3]);
    if (node->ip[2] <= 0)
        return ft_fail(e, "rope: llama3 original context length %lld must be positive", (long long)node->ip[2]);
    return 0;
}

static int rope_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0), *pos = op_src(g, node, 1);
    if (want_float("rope", "x", x, e) || want_ndim("rope", "x [B,S,H,Dh]", x, 4, e))
        return -1;
    if (x->shape[3] % 2 != 0)
        return ft_fail(e, "rope: head dim %lld is odd (rotation pairs need it even)", (long long)x->shape[3]);
    if (want_tokens("rope", "pos", pos, x, e) || rope_params_check(node, e))
        return -1;
    op_copy_shape(node, x);
    return 0;
}

/* A rotation's transpose is its inverse: dx = rope(dy, pos) rotated the other way. */
static void rope_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    if (!need[0])
        return;
    ir_tensor_t n = g->t[node];
    n.ip[0] = !n.ip[0];
    dsrc[0] = ir_node_dt(g, OP_ROPE, g->t[n.src[0]].dtype, 2, (const int[]){dy, n.src[1]}, n.ip, n.fp);
}

static void rope_cpu(const ir_cpu_args_t *a)
{
    const ir_tensor_t *x = a->srct[0];
    int64_t ntok = x->shape[0] * x->shape[1], nh = x->shape[2], dh = x->shape[3], half = dh / 2;
    double *inv_freq = ft_xmalloc((size_t)(half > 0 ? half : 1) * sizeof *inv_freq);
    ir_rope_inv_freq(a->node, dh, inv_freq);
    double sign = a->node->ip[0] ? -1.0 : 1.0;
    for (int64_t t = 0; t < ntok; t++) {
        double p = a->in[1][t];
        for (int64_t j = 0; j < half; j++) {
            double c = cos(p * inv_freq[j]), s = sign * sin(p * inv_freq[j]);
            for (int64_t h = 0; h < nh; h++) {
                const double *xv = a->in[0] + (t * nh + h) * dh;
                double *o = a->out + (t * nh + h) * dh;
                double x1 = xv[j], x2 = xv[j + half];
                o[j] = x1 * c - x2 * s;
                o[j + half] = x2 * c + x1 * s;
            }
        }
    }
    free(inv_freq);
}

static void rope_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = 3.0 * (double)ir_numel(node); /* two multiplies and an add per element */
    *bytes = op_io_bytes(g, node);
}

const ir_op_desc_t ir_op_rope = {
    .name = "rope", .min_src = 2, .max_src = 2,
    .shape = rope_shape, .vjp = rope_vjp, .cost = rope_cost, .cpu = rope_cpu,
};

/* ------------------------------------------------------------------ attention */

/* q[B,S,Hq,Dh] and k[B,S,Hkv,Dh] of one float dtype with Hq a multiple of Hkv, doc[B,S] i32
 * (input doc_src), and a finite scale: what attn, attn_bwd and attn_lse share. */
static int attn_qk_check(const char *op, const ir_graph_t *g, const ir_tensor_t *node, int doc_src, ft_err_t *e)
{
    const ir_tensor_t *q = op_src(g, node, 0), *k = op_src(g, node, 1);
    if (want_float(op, "q", q, e) || want_float(op, "k", k, e))
        return -1;
    if (want_ndim(op, "q [B,S,Hq,Dh]", q, 4, e) || want_ndim(op, "k [B,S,Hkv,Dh]", k, 4, e))
        return -1;
    if (k->shape[0] != q->shape[0] || k->shape[1] != q->shape[1] || k->shape[3] != q->shape[3]) {
        char sq[96], sk[96];
        ir_shape_str(q, sq, sizeof sq);
        ir_shape_str(k, sk, sizeof sk);
        return ft_fail(e, "%s: q %s and k %s disagree in batch, sequence or head dim", op, sq, sk);
    }
    if (q->shape[2] % k->shape[2] != 0)
        return ft_fail(e, "%s: query heads (%lld) are not a multiple of key/value heads (%lld)", op,
                       (long long)q->shape[2], (long long)k->shape[2]);
    if (!isfinite(node->fp[0]))
        return ft_fail(e, "%s: softmax scale %g is not finite", op, node->fp[0]);
    return want_tokens(op, "doc", op_src(g, node, doc_src), q, e);
}

/* attn_qk_check plus v [B,S,Hkv,Dh] in q's dtype, with doc as input 3. */
static int attn_check(const char *op, const ir_graph_t *g, const ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *q = op_src(g, node, 0), *k = op_src(g, node, 1), *v = op_src(g, node, 2);
    if (want_float(op, "q", q, e) || want_float(op, "k", k, e) || want_float(op, "v", v, e))
        return -1;
    if (k->dtype != q->dtype || v->dtype != q->dtype)
        return ft_fail(e, "%s: q, k and v must share a dtype (%s, %s, %s)", op, ir_dtype_name(q->dtype),
                       ir_dtype_name(k->dtype), ir_dtype_name(v->dtype));
    if (attn_qk_check(op, g, node, 3, e))
        return -1;
    return want_same_shape(op, "k", k, "v", v, e);
}

/* A per-query-row tensor [B,S,Hq,n] of attention's backward (the statistics). */
static int want_rows(const char *op, const char *what, const ir_tensor_t *t, const ir_tensor_t *q, int64_t n,
                     ft_err_t *e)
{
    if (want_float(op, what, t, e))
        return -1;
    if (t->ndim == 4 && t->shape[0] == q->shape[0] && t->shape[1] == q->shape[1] && t->shape[2] == q->shape[2] &&
        t->shape[3] == n)
        return 0;
    char s[96];
    ir_shape_str(t, s, sizeof s);
    return ft_fail(e, "%s: %s is %s, expected [%lld,%lld,%lld,%lld]", op, what, s, (long long)q->shape[0],
                   (long long)q->shape[1], (long long)q->shape[2], (long long)n);
}

static ir_dtype_t stats_dtype(ir_dtype_t q);

/* The optional fifth input receives the rows' log-sum-exp (what attn_lse computes), written
 * in place: passes/fuse.c gives it where attn_lse would redo the same work. */
static int attn_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    if (attn_check("attn", g, node, e))
        return -1;
    const ir_tensor_t *q = op_src(g, node, 0);
    if (node->nsrc == 5) {
        const ir_tensor_t *l = op_src(g, node, 4);
        if (want_rows("attn", "lse", l, q, 1, e))
            return -1;
        if (l->dtype != stats_dtype(q->dtype))
            return ft_fail(e, "attn: lse must be %s, not %s", ir_dtype_name(stats_dtype(q->dtype)),
                           ir_dtype_name(l->dtype));
    }
    op_copy_shape(node, q);
    return 0;
}

static int attn_bwd_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const char *op = "attn_bwd";
    if (attn_check(op, g, node, e))
        return -1;
    const ir_tensor_t *q = op_src(g, node, 0), *dy = op_src(g, node, 4);
    if (want_float(op, "dy", dy, e) || want_same_shape(op, "q", q, "dy", dy, e))
        return -1;
    if (want_rows(op, "stats (lse, delta)", op_src(g, node, 5), q, 2, e))
        return -1;
    if (node->ip[0] < 0 || node->ip[0] > 3)
        return ft_fail(e, "%s: ip[0] = %lld selects no input (0 dq, 1 dk, 2 dv, 3 dk and dv)", op,
                       (long long)node->ip[0]);
    if ((node->ip[0] == 3) != (node->nsrc == 7))
        return ft_fail(e, "%s: %d inputs with ip[0] = %lld (dq, dk or dv alone take 6; dk and dv 7)", op, node->nsrc,
                       (long long)node->ip[0]);
    if (node->ip[0] == 3) { /* dv written in place into input 6 (passes/fuse.c) */
        const ir_tensor_t *v = op_src(g, node, 2), *dv = op_src(g, node, 6);
        if (want_same_shape(op, "v", v, "dv", dv, e))
            return -1;
        if (dv->dtype != node->dtype)
            return ft_fail(e, "%s: dv (%s) must have the node's dtype (%s)", op, ir_dtype_name(dv->dtype),
                           ir_dtype_name(node->dtype));
    }
    op_copy_shape(node, op_src(g, node, node->ip[0] == 3 ? 1 : (int)node->ip[0]));
    return 0;
}

static int attn_lse_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const char *op = "attn_lse";
    const ir_tensor_t *q = op_src(g, node, 0), *k = op_src(g, node, 1);
    if (attn_qk_check(op, g, node, 2, e))
        return -1;
    if (k->dtype != q->dtype)
        return ft_fail(e, "%s: q and k must share a dtype (%s, %s)", op, ir_dtype_name(q->dtype), ir_dtype_name(k->dtype));
    if (node->dtype == IR_I32)
        return ft_fail(e, "%s: the result must be floating point", op);
    op_copy_shape(node, q);
    node->shape[3] = 1;
    return 0;
}

/* The dtype of attention's row statistics: f32 (softmax statistics stay in f32 whatever the
 * storage), f64 in float64 graphs so that the finite-difference checks keep their precision. */
static ir_dtype_t stats_dtype(ir_dtype_t q) { return q == IR_F64 ? IR_F64 : IR_F32; }

/* The backward reads the softmax row statistics instead of recomputing them: lse_i =
 * attn_lse(q, k, doc) and delta_i = rowsum(dy_i * o_i) (= sum_j p_ij dy_i·v_j, with o the
 * node's own output), concatenated into stats [B,S,Hq,2]; then one attn_bwd node per needed
 * input (ip[0] = which). The product is formed in the statistics' dtype, so bf16 operands
 * lose nothing before the sum. */
static void attn_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    const ir_tensor_t n = g->t[node]; /* a copy: building nodes may move g->t */
    if (!need[0] && !need[1] && !need[2])
        return;
    ir_dtype_t sd = stats_dtype(n.dtype);
    int lse = ir_node_dt(g, OP_ATTN_LSE, sd, 3, (const int[]){n.src[0], n.src[1], n.src[3]}, n.ip, n.fp);
    int dyo = g->t[dy].dtype != n.dtype ? ir_cast(g, dy, n.dtype) : dy;
    int delta = ir_node_dt(g, OP_ROWSUM, sd, 2, (const int[]){node, dyo}, NULL, NULL); /* rowsum(o * dy) */
    int stats = ir_concat(g, lse, delta, 3);
    if (stats < 0)
        return; /* g->err says why */
    const int src[6] = {n.src[0], n.src[1], n.src[2], n.src[3], dy, stats};
    for (int i = 0; i < 3; i++) {
        if (!need[i])
            continue;
        int64_t ip[IR_MAX_PARAMS];
        memcpy(ip, n.ip, sizeof ip);
        ip[0] = i;
        dsrc[i] = ir_node_dt(g, OP_ATTN_BWD, g->t[n.src[i]].dtype, 6, src, ip, n.fp);
    }
}

/* The extents and data of one attention evaluation. */
typedef struct {
    int64_t ns, hq, hkv, dh, group;
    double scale;
    const double *q, *k, *v, *doc;
} attn_t;

/* q, k and doc are inputs 0, 1 and doc_src; v is input 2 where the op has it. */
static attn_t attn_of(const ir_cpu_args_t *a, int doc_src)
{
    const ir_tensor_t *q = a->srct[0], *k = a->srct[1];
    attn_t t = {
        .ns = q->shape[1], .hq = q->shape[2], .hkv = k->shape[2], .dh = q->shape[3],
        .scale = a->node->fp[0], .q = a->in[0], .k = a->in[1], .v = doc_src == 3 ? a->in[2] : NULL,
        .doc = a->in[doc_src],
    };
    t.group = t.hq / t.hkv;
    return t;
}

/* Row offsets of token (b, i) at query head h, and at key/value head hk. */
static int64_t q_row(const attn_t *t, int64_t b, int64_t i, int64_t h) { return ((b * t->ns + i) * t->hq + h) * t->dh; }
static int64_t kv_row(const attn_t *t, int64_t b, int64_t j, int64_t hk) { return ((b * t->ns + j) * t->hkv + hk) * t->dh; }
/* Index of row (b, i, h) in a per-row tensor [B,S,Hq,...]. */
static int64_t row_idx(const attn_t *t, int64_t b, int64_t i, int64_t h) { return (b * t->ns + i) * t->hq + h; }

/* Query i may see key j: causal, and within the same packed document. */
static bool attn_allowed(const attn_t *t, int64_t b, int64_t i, int64_t j)
{
    return j <= i && t->doc[b * t->ns + j] == t->doc[b * t->ns + i];
}

/* Scores scale·q_i·k_j of query (b, i, head h) over keys 0..i into s (masked keys are
 * skipped; HF repeat_kv: consecutive query heads share a kv head). Returns the maximum, or
 * -inf when no key is allowed; a NaN first score stays the maximum, so NaN inputs give NaN
 * outputs for the runtime's guard to see. */
static double attn_scores(const attn_t *t, int64_t b, int64_t i, int64_t h, double *s)
{
    const double *qi = t->q + q_row(t, b, i, h);
    double m = -INFINITY;
    bool any = false;
    for (int64_t j = 0; j <= i; j++) {
        if (!attn_allowed(t, b, i, j))
            continue;
        s[j] = t->scale * dot(qi, t->k + kv_row(t, b, j, h / t->group), t->dh);
        if (!any || s[j] > m)
            m = s[j];
        any = true;
    }
    return m;
}

/* log sum_j exp(s_j) over the allowed keys of query (b, i, h), in double; -inf when none is
 * allowed (never under the causal mask: a query always sees itself). */
static double attn_row_lse(const attn_t *t, int64_t b, int64_t i, int64_t h, double *s)
{
    double m = attn_scores(t, b, i, h, s);
    if (m == -INFINITY)
        return m;
    double sum = 0;
    for (int64_t j = 0; j <= i; j++)
        if (attn_allowed(t, b, i, j))
            sum += exp(s[j] - m);
    return m + log(sum);
}

static int64_t batch_of(const ir_cpu_args_t *a) { return a->srct[0]->shape[0]; }

static void attn_cpu(const ir_cpu_args_t *a)
{
    attn_t t = attn_of(a, 3);
    int64_t nb = batch_of(a);
    double *s = ft_xmalloc((size_t)t.ns * sizeof *s);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < t.ns; i++)
            for (int64_t h = 0; h < t.hq; h++) {
                double *o = a->out + q_row(&t, b, i, h);
                memset(o, 0, (size_t)t.dh * sizeof *o);
                double lse = attn_row_lse(&t, b, i, h, s);
                if (a->node->nsrc == 5)
                    a->in[4][row_idx(&t, b, i, h)] = lse;
                if (lse == -INFINITY)
                    continue; /* no visible key: output 0 rather than NaN */
                for (int64_t j = 0; j <= i; j++) {
                    if (!attn_allowed(&t, b, i, j))
                        continue;
                    const double *vj = t.v + kv_row(&t, b, j, h / t.group);
                    double p = exp(s[j] - lse);
                    for (int64_t d = 0; d < t.dh; d++)
                        o[d] += p * vj[d];
                }
            }
    free(s);
}

static void attn_lse_cpu(const ir_cpu_args_t *a)
{
    attn_t t = attn_of(a, 2);
    int64_t nb = batch_of(a);
    double *s = ft_xmalloc((size_t)t.ns * sizeof *s);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < t.ns; i++)
            for (int64_t h = 0; h < t.hq; h++)
                a->out[row_idx(&t, b, i, h)] = attn_row_lse(&t, b, i, h, s);
    free(s);
}

/* Adds dst += s * x over n values. */
static void axpy(double *dst, double s, const double *x, int64_t n)
{
    for (int64_t d = 0; d < n; d++)
        dst[d] += s * x[d];
}

/* Gradient contributions of query row (b, i, h), from its statistics lse and delta alone
 * (no pass over the row to recompute them): p_j = exp(scale q_i·k_j - lse); dV_j += p_j dY_i;
 * dP_j = dY_i·V_j, dS_j = p_j (dP_j - delta); dQ_i += scale dS_j K_j; dK_j += scale dS_j Q_i.
 * Grouped query heads add into their shared kv head. */
static void attn_bwd_row(const attn_t *t, int which, const double *dy, const double *stats, double *out, int64_t b,
                         int64_t i, int64_t h)
{
    int64_t hk = h / t->group, r = row_idx(t, b, i, h);
    double lse = stats[2 * r], delta = stats[2 * r + 1];
    const double *qi = t->q + q_row(t, b, i, h), *dyi = dy + q_row(t, b, i, h);
    for (int64_t j = 0; j <= i; j++) {
        if (!attn_allowed(t, b, i, j))
            continue;
        const double *kj = t->k + kv_row(t, b, j, hk);
        double p = exp(t->scale * dot(qi, kj, t->dh) - lse);
        if (which == 2) {
            axpy(out + kv_row(t, b, j, hk), p, dyi, t->dh);
            continue;
        }
        double ds = t->scale * p * (dot(dyi, t->v + kv_row(t, b, j, hk), t->dh) - delta);
        if (which == 0)
            axpy(out + q_row(t, b, i, h), ds, kj, t->dh);
        else
            axpy(out + kv_row(t, b, j, hk), ds, qi, t->dh);
    }
}

static void attn_bwd_cpu(const ir_cpu_args_t *a)
{
    attn_t t = attn_of(a, 3);
    int64_t nb = batch_of(a);
    int which = (int)a->node->ip[0];
    for (int w = 0; w < 3; w++) { /* ip[0] = 3: dk out, dv into input 6 */
        if (which != w && !(which == 3 && w >= 1))
            continue;
        double *dst = which == 3 && w == 2 ? a->in[6] : a->out;
        memset(dst, 0, (size_t)ir_numel(a->srct[w]) * sizeof *dst);
        for (int64_t b = 0; b < nb; b++)
            for (int64_t i = 0; i < t.ns; i++)
                for (int64_t h = 0; h < t.hq; h++)
                    attn_bwd_row(&t, w, a->in[4], a->in[5], dst, b, i, h);
    }
}

/* Score-matrix multiplies of 2·S·S·Dh flops each per query head, halved by the causal mask. */
static double attn_matmul_flops(const ir_graph_t *g, const ir_tensor_t *node, double nmatmul)
{
    const ir_tensor_t *q = op_src(g, node, 0);
    double s = (double)q->shape[1];
    return nmatmul * 2.0 * (double)q->shape[0] * (double)q->shape[2] * s * s * (double)q->shape[3] / 2.0;
}

static void attn_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = attn_matmul_flops(g, node, 2); /* Q·Kᵀ and P·V */
    *bytes = op_io_bytes(g, node);
}

static void attn_lse_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = attn_matmul_flops(g, node, 1); /* Q·Kᵀ */
    *bytes = op_io_bytes(g, node);
}

/* The statistics come in, so each node recomputes only P = exp(Q·Kᵀ - lse): dv adds Pᵀ·dY;
 * dq and dk add dY·Vᵀ and one product with dS. */
static void attn_bwd_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    static const double nmm[4] = {3, 3, 2, 4}; /* dk and dv: Q·Kᵀ, dY·Vᵀ, Pᵀ·dY, dSᵀ·Q */
    *flops = attn_matmul_flops(g, node, nmm[node->ip[0] & 3]);
    *bytes = op_io_bytes(g, node);
}

const ir_op_desc_t ir_op_attn = {
    .name = "attn", .min_src = 4, .max_src = 5, .writes = 1u << 4,
    .shape = attn_shape, .vjp = attn_vjp, .cost = attn_cost, .cpu = attn_cpu,
};

const ir_op_desc_t ir_op_attn_bwd = {
    .name = "attn_bwd", .min_src = 6, .max_src = 7, .flags = IR_OPF_NONDIFF_OK, .writes = 1u << 6,
    .shape = attn_bwd_shape, .cost = attn_bwd_cost, .cpu = attn_bwd_cpu,
};

/* Built only by attn's VJP, inside the backward pass: never differentiated itself. */
const ir_op_desc_t ir_op_attn_lse = {
    .name = "attn_lse", .min_src = 3, .max_src = 3, .flags = IR_OPF_NONDIFF_OK,
    .shape = attn_lse_shape, .cost = attn_lse_cost, .cpu = attn_lse_cpu,
};

/* ------------------------------------------------------------------ rowsum */

/* rowsum(a) sums a's rows; rowsum(a, b) the rows of a * b (one pass, no product in memory:
 * attention's delta), with b of a's shape and dtype. */
static int rowsum_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *x = op_src(g, node, 0);
    if (want_float("rowsum", "the input", x, e) || want_float("rowsum", "the result", node, e))
        return -1;
    if (x->ndim < 1)
        return ft_fail(e, "rowsum: the input is a scalar; it needs an axis to sum over");
    if (node->nsrc == 2) {
        const ir_tensor_t *y = op_src(g, node, 1);
        if (want_same_shape("rowsum", "a", x, "b", y, e))
            return -1;
        if (y->dtype != x->dtype)
            return ft_fail(e, "rowsum: a and b must share a dtype (%s, %s)", ir_dtype_name(x->dtype),
                           ir_dtype_name(y->dtype));
    }
    op_copy_shape(node, x);
    node->shape[node->ndim - 1] = 1;
    return 0;
}

/* d a[..., d] = dy[..., 0] for every d: the broadcast along the last axis, written as the
 * product [N,1]·[1,D] with a row of ones (there is no broadcast op). */
static void rowsum_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    const ir_tensor_t n = g->t[node], x = g->t[n.src[0]];
    if (!need[0] && !(n.nsrc == 2 && need[1]))
        return;
    int64_t d = last_dim(&x), rows = ir_numel(&x) / d;
    int col = g->t[dy].dtype != x.dtype ? ir_cast(g, dy, x.dtype) : dy;
    col = ir_reshape(g, col, 2, (const int64_t[]){rows, 1});
    int ones = ir_fill(g, -1, 1.0, 2, (const int64_t[]){1, d}, x.dtype);
    int full = ir_reshape(g, ir_matmul(g, col, ones, false, false), x.ndim, x.shape);
    if (n.nsrc == 1) {
        dsrc[0] = full;
        return;
    }
    if (need[0]) /* d a = dy b, d b = dy a */
        dsrc[0] = ir_mul(g, full, n.src[1]);
    if (need[1])
        dsrc[1] = ir_mul(g, full, n.src[0]);
}

static void rowsum_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = (double)node->nsrc * (double)ir_numel(op_src(g, node, 0));
    *bytes = op_io_bytes(g, node);
}

/* In double, in index order, as the other references. */
static void rowsum_cpu(const ir_cpu_args_t *a)
{
    int64_t d = last_dim(a->srct[0]), rows = ir_numel(a->srct[0]) / d;
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t j = 0; j < d; j++)
            s += a->node->nsrc == 2 ? a->in[0][r * d + j] * a->in[1][r * d + j] : a->in[0][r * d + j];
        a->out[r] = s;
    }
}

const ir_op_desc_t ir_op_rowsum = {
    .name = "rowsum", .min_src = 1, .max_src = 2,
    .shape = rowsum_shape, .vjp = rowsum_vjp, .cost = rowsum_cost, .cpu = rowsum_cpu,
};

/* ------------------------------------------------------------------ cross-entropy */

/* logits[N,V] floating point, targets[N] i32. */
static int xent_check(const char *op, const ir_graph_t *g, const ir_tensor_t *node, ft_err_t *e)
{
    const ir_tensor_t *lg = op_src(g, node, 0), *tg = op_src(g, node, 1);
    if (want_float(op, "logits", lg, e) || want_ndim(op, "logits [N,V]", lg, 2, e))
        return -1;
    if (want_i32(op, "targets", tg, e) || want_ndim(op, "targets [N]", tg, 1, e))
        return -1;
    if (tg->shape[0] != lg->shape[0])
        return ft_fail(e, "%s: %lld targets for %lld rows of logits", op, (long long)tg->shape[0],
                       (long long)lg->shape[0]);
    if (node->dtype == IR_I32)
        return ft_fail(e, "%s: the result must be floating point", op);
    return 0;
}

static int xent_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    if (xent_check("xent", g, node, e))
        return -1;
    node->ndim = 0;
    memset(node->shape, 0, sizeof node->shape);
    return 0;
}

static int xent_bwd_shape(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e)
{
    const char *op = "xent_bwd";
    if (xent_check(op, g, node, e))
        return -1;
    const ir_tensor_t *dy = op_src(g, node, 2);
    if (want_float(op, "dy", dy, e))
        return -1;
    if (ir_numel(dy) != 1)
        return ft_fail(e, "%s: dy must be a scalar, has %lld values", op, (long long)ir_numel(dy));
    op_copy_shape(node, op_src(g, node, 0));
    return 0;
}

static void xent_vjp(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC])
{
    if (!need[0])
        return;
    const ir_tensor_t n = g->t[node]; /* a copy: building nodes may move g->t */
    int lg = n.src[0];
    dsrc[0] = ir_node_dt(g, OP_XENT_BWD, g->t[lg].dtype, 3, (const int[]){lg, n.src[1], dy}, n.ip, n.fp);
}

enum { XENT_IGNORED = -1, XENT_INVALID = -2 };

/* The class of a target value, or XENT_IGNORED / XENT_INVALID. Checked in double before any
 * conversion so that a corrupt value can't overflow the cast. */
static int64_t xent_target(double t, int64_t ignore, int64_t nv)
{
    if (t == (double)ignore)
        return XENT_IGNORED;
    if (!(t >= 0 && t < (double)nv) || t != floor(t))
        return XENT_INVALID;
    return (int64_t)t;
}

static double row_lse(const double *x, int64_t n)
{
    double m = x[0];
    for (int64_t j = 1; j < n; j++)
        if (x[j] > m)
            m = x[j];
    double s = 0;
    for (int64_t j = 0; j < n; j++)
        s += exp(x[j] - m);
    return m + log(s);
}

/* A bad target makes the sum NaN on purpose: the runtime's NaN guard then stops the run
 * instead of training on corrupt data. */
static void xent_cpu(const ir_cpu_args_t *a)
{
    int64_t nr = a->srct[0]->shape[0], nv = a->srct[0]->shape[1];
    double sum = 0;
    for (int64_t r = 0; r < nr; r++) {
        int64_t t = xent_target(a->in[1][r], a->node->ip[0], nv);
        if (t == XENT_IGNORED)
            continue;
        if (t == XENT_INVALID) {
            sum = NAN;
            continue;
        }
        const double *x = a->in[0] + r * nv;
        sum += row_lse(x, nv) - x[t];
    }
    a->out[0] = sum;
}

/* dlogits = dy (softmax - onehot(target)) on kept rows, 0 on ignored rows, NaN on rows with
 * a bad target (as the forward). */
static void xent_bwd_cpu(const ir_cpu_args_t *a)
{
    int64_t nr = a->srct[0]->shape[0], nv = a->srct[0]->shape[1];
    double dy = a->in[2][0];
    for (int64_t r = 0; r < nr; r++) {
        const double *x = a->in[0] + r * nv;
        double *dx = a->out + r * nv;
        int64_t t = xent_target(a->in[1][r], a->node->ip[0], nv);
        double lse = t >= 0 ? row_lse(x, nv) : 0;
        for (int64_t j = 0; j < nv; j++) {
            if (t < 0)
                dx[j] = t == XENT_IGNORED ? 0 : NAN;
            else
                dx[j] = dy * (exp(x[j] - lse) - (j == t ? 1.0 : 0.0));
        }
    }
}

static void xent_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = 4.0 * (double)ir_numel(op_src(g, node, 0)); /* max, subtract, exp, add */
    *bytes = op_io_bytes(g, node);
}

static void xent_bwd_cost(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes)
{
    *flops = 7.0 * (double)ir_numel(node); /* log-sum-exp again, then exp, subtract, scale */
    *bytes = op_io_bytes(g, node);
}

const ir_op_desc_t ir_op_xent = {
    .name = "xent", .min_src = 2, .max_src = 2,
    .shape = xent_shape, .vjp = xent_vjp, .cost = xent_cost, .cpu = xent_cpu,
};

const ir_op_desc_t ir_op_xent_bwd = {
    .name = "xent_bwd", .min_src = 3, .max_src = 3, .flags = IR_OPF_NONDIFF_OK,
    .shape = xent_bwd_shape, .cost = xent_bwd_cost, .cpu = xent_bwd_cpu,
};
