/* test_ops_nn.c — the neural-network ops of ir/ops_nn.c (rmsnorm, rope, attn with attn_lse
 * and rowsum, xent and their backward ops): every VJP against central finite differences in
 * float64 (attn's through the row statistics its backward reads), forward values against
 * computations written independently here, the properties attention promises (documents
 * are isolated, grouped heads equal repeated heads), the structure of attn's backward, the
 * loss's ignore/invalid-target rules, and the shape rules' refusals. */
#include <string.h>

#include "check.h"
#include "fdcheck.h"
#include "ir/ir.h"
#include "passes/passes.h"


/* ------------------------------------------------------------------ fixture */

#define MAXT 256

/* A graph and the values of its leaves, indexed by tensor id (what fd_check takes). */
typedef struct {
    ir_graph_t g;
    double *v[MAXT];
} fx_t;

static void fx_init(fx_t *f)
{
    ir_graph_init(&f->g);
    memset(f->v, 0, sizeof f->v);
}

static void fx_free(fx_t *f)
{
    for (int i = 0; i < MAXT; i++)
        free(f->v[i]);
    ir_graph_free(&f->g);
}

/* A leaf holding a copy of vals, or random values in [-scale, scale) when vals is NULL. */
static int fx_leaf(fx_t *f, const char *name, ir_dtype_t dt, int ndim, const int64_t *shape, const double *vals,
                   double scale)
{
    int id = ir_leaf(&f->g, name, IR_INPUT, dt, ndim, shape);
    if (id < 0 || id >= MAXT)
        return -1;
    int64_t n = ir_numel(&f->g.t[id]);
    if (vals) {
        f->v[id] = malloc((size_t)n * sizeof(double));
        memcpy(f->v[id], vals, (size_t)n * sizeof(double));
    } else {
        f->v[id] = fd_random_values(n, scale);
    }
    return id;
}

/* Evaluates the whole graph; free with fx_done. */
static double **fx_eval(fx_t *f)
{
    double **vals = calloc((size_t)f->g.n, sizeof *vals);
    for (int i = 0; i < f->g.n; i++)
        if (f->g.t[i].op == OP_LEAF)
            vals[i] = f->v[i];
    ft_err_t e;
    int rc = ir_eval_f64(&f->g, vals, &e);
    CHECK_MSG(rc == 0, "eval: %s", e.msg);
    return vals;
}

static void fx_done(fx_t *f, double **vals)
{
    ir_eval_free(&f->g, vals);
    free(vals);
}

static void fx_verify(fx_t *f, const char *label)
{
    ft_err_t e;
    int rc = ir_verify(&f->g, &e);
    CHECK_MSG(rc == 0, "%s: verify: %s", label, rc ? e.msg : "");
}

/* n integers drawn uniformly from [lo, hi), as doubles. */
static double *rand_ints(int64_t n, int64_t lo, int64_t hi)
{
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = (double)(lo + (int64_t)((fd_rand() + 1) / 2 * (double)(hi - lo)));
    return v;
}

static double max_abs_diff(const double *a, const double *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= m))
            m = d;
    }
    return m;
}

/* The builder refused: id -1 and an error message naming both a and b. */
static void expect_error(ir_graph_t *g, int id, const char *a, const char *b, const char *label)
{
    CHECK_MSG(id < 0 && strstr(g->err, a) && strstr(g->err, b), "%s: expected an error naming '%s' and '%s', got id %d, '%s'",
              label, a, b, id, g->err);
}

/* ------------------------------------------------------------------ rmsnorm */

static void test_rmsnorm_fd(int ndim, const int64_t *shape, double eps)
{
    fx_t f;
    fx_init(&f);
    int x = fx_leaf(&f, "x", IR_F64, ndim, shape, NULL, 1.0);
    int w = fx_leaf(&f, "w", IR_F64, 1, &shape[ndim - 1], NULL, 1.5);
    int y = ir_rmsnorm(&f.g, x, w, eps);
    CHECK_MSG(y >= 0, "rmsnorm: %s", f.g.err);
    char label[64];
    snprintf(label, sizeof label, "rmsnorm D=%lld", (long long)shape[ndim - 1]);
    fd_check(&f.g, y, (const int[]){x, w}, 2, f.v, label);
    fx_verify(&f, label);
    fx_free(&f);
}

static void test_rmsnorm_values(void)
{
    const double xs[6] = {1, 2, 3, 0.5, -1, 0}, ws[3] = {1, 0.5, -2}, eps = 1e-6;
    fx_t f;
    fx_init(&f);
    int x = fx_leaf(&f, "x", IR_F64, 2, (const int64_t[]){2, 3}, xs, 0);
    int w = fx_leaf(&f, "w", IR_F64, 1, (const int64_t[]){3}, ws, 0);
    int y = ir_rmsnorm(&f.g, x, w, eps);
    CHECK(y >= 0 && f.g.t[y].ndim == 2 && f.g.t[y].shape[1] == 3 && f.g.t[y].dtype == IR_F64);
    double **v = fx_eval(&f);
    double r0 = 1 / sqrt((1.0 + 4.0 + 9.0) / 3 + eps), r1 = 1 / sqrt((0.25 + 1.0) / 3 + eps);
    const double want[6] = {1 * r0 * 1, 2 * r0 * 0.5, 3 * r0 * -2, 0.5 * r1 * 1, -1 * r1 * 0.5, 0};
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(v[y][i], want[i], 1e-14);
    fx_done(&f, v);
    fx_free(&f);
}

/* The backward nodes carry the forward's eps, each input's dtype, and dw has shape [D]. */
static void test_rmsnorm_vjp_nodes(void)
{
    fx_t f;
    fx_init(&f);
    int x = fx_leaf(&f, "x", IR_F32, 3, (const int64_t[]){2, 3, 4}, NULL, 1);
    int w = fx_leaf(&f, "w", IR_BF16, 1, (const int64_t[]){4}, NULL, 1);
    int y = ir_rmsnorm(&f.g, x, w, 1e-5);
    int dy = fx_leaf(&f, "dy", IR_F32, 3, (const int64_t[]){2, 3, 4}, NULL, 1);
    int grads[2];
    ft_err_t e;
    CHECK(pass_grad(&f.g, y, dy, (const int[]){x, w}, 2, grads, &e) == 0);
    const ir_tensor_t *dx = &f.g.t[grads[0]], *dw = &f.g.t[grads[1]];
    CHECK(dx->op == OP_RMSNORM_BWD_X && dx->dtype == IR_F32 && dx->fp[0] == 1e-5);
    CHECK(dw->op == OP_RMSNORM_BWD_W && dw->dtype == IR_BF16 && dw->fp[0] == 1e-5);
    CHECK(dw->ndim == 1 && dw->shape[0] == 4);
    CHECK((dx->flags & IR_FLAG_BWD) && (dw->flags & IR_FLAG_BWD));
    fx_free(&f);
}

/* rmsnorm_bwd_x with an addend (what pass_fuse makes of add(c, rmsnorm_bwd_x(...))) is the
 * three-input node's values plus c; an addend of another shape or dtype is refused. */
static void test_rmsnorm_bwd_addend(void)
{
    fx_t f;
    fx_init(&f);
    const int64_t sh[2] = {5, 12};
    int x = fx_leaf(&f, "x", IR_F64, 2, sh, NULL, 1), w = fx_leaf(&f, "w", IR_F64, 1, &sh[1], NULL, 1.5);
    int dy = fx_leaf(&f, "dy", IR_F64, 2, sh, NULL, 1), c = fx_leaf(&f, "c", IR_F64, 2, sh, NULL, 1);
    int plain = ir_node(&f.g, OP_RMSNORM_BWD_X, 3, (const int[]){x, w, dy}, NULL, (const double[IR_MAX_PARAMS]){1e-5});
    int fused = ir_node(&f.g, OP_RMSNORM_BWD_X, 4, (const int[]){x, w, dy, c}, NULL, (const double[IR_MAX_PARAMS]){1e-5});
    CHECK_MSG(plain >= 0 && fused >= 0, "%s", f.g.err);
    double **v = fx_eval(&f);
    for (int i = 0; i < 60; i++)
        CHECK_NEAR(v[fused][i], v[plain][i] + v[c][i], 1e-14);
    fx_done(&f, v);
    int c2 = fx_leaf(&f, "c2", IR_F64, 2, (const int64_t[]){12, 5}, NULL, 1);
    expect_error(&f.g, ir_node(&f.g, OP_RMSNORM_BWD_X, 4, (const int[]){x, w, dy, c2}, NULL, NULL), "rmsnorm_bwd_x",
                 "addend", "rmsnorm_bwd_x addend shape");
    fx_free(&f);
    fx_init(&f);
    x = fx_leaf(&f, "x", IR_F32, 2, sh, NULL, 1), w = fx_leaf(&f, "w", IR_F32, 1, &sh[1], NULL, 1.5);
    dy = fx_leaf(&f, "dy", IR_F32, 2, sh, NULL, 1), c = fx_leaf(&f, "c", IR_BF16, 2, sh, NULL, 1);
    expect_error(&f.g, ir_node(&f.g, OP_RMSNORM_BWD_X, 4, (const int[]){x, w, dy, c}, NULL, NULL), "addend is bf16",
                 "output f32", "rmsnorm_bwd_x addend dtype");
    fx_free(&f);
}

/* ------------------------------------------------------------------ rope */

typedef struct {
    int64_t kind, old;
    double theta, factor, low, high;
} rope_cfg_t;

static const rope_cfg_t rope_none = {0, 0, 10000, 0, 0, 0};
static const rope_cfg_t rope_linear = {2, 0, 10000, 4, 0, 0};
/* Dh 16: wavelengths 6.3 (kept), 32 (blended) and >= 167 (divided) around 64/4 and 64/1 */
static const rope_cfg_t rope_llama3 = {1, 64, 500000, 8, 1, 4};

static int build_rope(fx_t *f, int x, int pos, const rope_cfg_t *c, int inverse)
{
    return ir_rope(&f->g, x, pos, (const int64_t[3]){inverse, c->kind, c->old},
                   (const double[4]){c->theta, c->factor, c->low, c->high});
}

static void test_rope_fd(const char *label, const rope_cfg_t *c, int64_t dh, int inverse)
{
    fx_t f;
    fx_init(&f);
    const int64_t shape[4] = {2, 5, 3, dh};
    int x = fx_leaf(&f, "x", IR_F64, 4, shape, NULL, 1.0);
    int pos = ir_leaf(&f.g, "pos", IR_INPUT, IR_I32, 2, shape);
    f.v[pos] = rand_ints(10, 0, 300);
    int y = build_rope(&f, x, pos, c, inverse);
    CHECK_MSG(y >= 0, "%s: %s", label, f.g.err);
    fd_check(&f.g, y, (const int[]){x}, 1, f.v, label);
    fx_verify(&f, label);
    fx_free(&f);
}

/* Position 0 rotates by nothing; rope then inverse rope gives x back. */
static void test_rope_identities(const rope_cfg_t *c, const char *label)
{
    fx_t f;
    fx_init(&f);
    const int64_t shape[4] = {2, 6, 2, 16};
    int x = fx_leaf(&f, "x", IR_F64, 4, shape, NULL, 1.0);
    int p0 = fx_leaf(&f, "p0", IR_I32, 2, shape, (const double[12]){0}, 0);
    int pos = ir_leaf(&f.g, "pos", IR_INPUT, IR_I32, 2, shape);
    f.v[pos] = rand_ints(12, 0, 8192);
    int y0 = build_rope(&f, x, p0, c, 0);
    int y = build_rope(&f, x, pos, c, 0);
    int back = build_rope(&f, y, pos, c, 1);
    CHECK_MSG(back >= 0, "%s: %s", label, f.g.err);
    double **v = fx_eval(&f);
    int64_t n = ir_numel(&f.g.t[x]);
    CHECK_MSG(max_abs_diff(v[y0], v[x], n) == 0, "%s: rope at position 0 is not the identity", label);
    CHECK_MSG(max_abs_diff(v[back], v[x], n) < 1e-12, "%s: inverse rope does not undo rope", label);
    CHECK_MSG(max_abs_diff(v[y], v[x], n) > 1e-3, "%s: rope at random positions did nothing", label);
    fx_done(&f, v);
    fx_free(&f);
}

/* One rotation written out: Dh 4, theta 1e4, so the frequencies are 1 and 1/100. Linear
 * scaling by 2 at position 2 must equal no scaling at position 1. */
static void test_rope_values(void)
{
    fx_t f;
    fx_init(&f);
    const int64_t shape[4] = {1, 1, 1, 4};
    int x = fx_leaf(&f, "x", IR_F64, 4, shape, (const double[]){1, 2, 3, 4}, 0);
    int p1 = fx_leaf(&f, "p1", IR_I32, 2, shape, (const double[]){1}, 0);
    int p2 = fx_leaf(&f, "p2", IR_I32, 2, shape, (const double[]){2}, 0);
    int y = build_rope(&f, x, p1, &rope_none, 0);
    rope_cfg_t lin2 = rope_linear;
    lin2.factor = 2;
    int ylin = build_rope(&f, x, p2, &lin2, 0);
    CHECK(ylin >= 0);
    double **v = fx_eval(&f);
    const double a = 1, b = 0.01;
    const double want[4] = {1 * cos(a) - 3 * sin(a), 2 * cos(b) - 4 * sin(b), 3 * cos(a) + 1 * sin(a),
                            4 * cos(b) + 2 * sin(b)};
    for (int i = 0; i < 4; i++) {
        CHECK_NEAR(v[y][i], want[i], 1e-14);
        CHECK_NEAR(v[ylin][i], want[i], 1e-14);
    }
    fx_done(&f, v);
    fx_free(&f);
}

static ir_tensor_t rope_node(const rope_cfg_t *c)
{
    ir_tensor_t t;
    memset(&t, 0, sizeof t);
    t.op = OP_ROPE;
    t.ip[1] = c->kind;
    t.ip[2] = c->old;
    t.fp[0] = c->theta;
    t.fp[1] = c->factor;
    t.fp[2] = c->low;
    t.fp[3] = c->high;
    return t;
}

/* The frequencies recomputed here from HF's _compute_llama3_parameters, region by region;
 * all three regions must occur with these settings. */
static void test_rope_inv_freq(void)
{
    enum { DH = 16 };
    double got[DH / 2];
    const double pi = 3.14159265358979323846;
    ir_tensor_t n = rope_node(&rope_llama3);
    ir_rope_inv_freq(&n, DH, got);
    int high = 0, mid = 0, low = 0;
    for (int j = 0; j < DH / 2; j++) {
        double base = pow(500000.0, -2.0 * j / DH), wavelen = 2 * pi / base, want;
        if (wavelen < 64.0 / 4) {
            want = base;
            high++;
        } else if (wavelen > 64.0 / 1) {
            want = base / 8;
            low++;
        } else {
            double smooth = (64.0 / wavelen - 1) / (4 - 1);
            want = (1 - smooth) * base / 8 + smooth * base;
            mid++;
        }
        CHECK_NEAR(got[j], want, 1e-14);
    }
    CHECK_MSG(high == 1 && mid == 1 && low == 6, "regions high %d mid %d low %d", high, mid, low);
    /* smoothing is continuous in the middle band: 2nd frequency sits strictly between */
    double base1 = pow(500000.0, -2.0 / DH);
    CHECK(got[1] < base1 && got[1] > base1 / 8);

    n = rope_node(&rope_none);
    ir_rope_inv_freq(&n, 8, got);
    for (int j = 0; j < 4; j++)
        CHECK_NEAR(got[j], 1 / pow(10000.0, j / 4.0), 1e-15);
    n = rope_node(&rope_linear);
    ir_rope_inv_freq(&n, 8, got);
    for (int j = 0; j < 4; j++)
        CHECK_NEAR(got[j], 1 / pow(10000.0, j / 4.0) / 4, 1e-15);
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    int64_t b, s, hq, hkv, dh;
} attn_cfg_t;

static int attn_leaves(fx_t *f, const attn_cfg_t *c, const double *doc, int *q, int *k, int *v)
{
    *q = fx_leaf(f, "q", IR_F64, 4, (const int64_t[]){c->b, c->s, c->hq, c->dh}, NULL, 1.0);
    *k = fx_leaf(f, "k", IR_F64, 4, (const int64_t[]){c->b, c->s, c->hkv, c->dh}, NULL, 1.0);
    *v = fx_leaf(f, "v", IR_F64, 4, (const int64_t[]){c->b, c->s, c->hkv, c->dh}, NULL, 1.0);
    int d = fx_leaf(f, "doc", IR_I32, 2, (const int64_t[]){c->b, c->s}, doc, 0);
    if (!doc)
        memset(f->v[d], 0, (size_t)(c->b * c->s) * sizeof(double));
    return d;
}

static void test_attn_fd(const char *label, attn_cfg_t c, const double *doc)
{
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, doc, &q, &k, &v);
    int y = ir_attn(&f.g, q, k, v, d, 1 / sqrt((double)c.dh));
    CHECK_MSG(y >= 0, "%s: %s", label, f.g.err);
    fd_check(&f.g, y, (const int[]){q, k, v}, 3, f.v, label);
    fx_verify(&f, label);
    fx_free(&f);
}

/* Packed documents: each document's outputs equal attention run on that document alone. */
static void test_attn_doc_isolation(void)
{
    const attn_cfg_t c = {2, 8, 4, 2, 4};
    const double doc[16] = {0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4, 4, 9};
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, doc, &q, &k, &v);
    int y = ir_attn(&f.g, q, k, v, d, 0.5);
    double **full = fx_eval(&f);
    int nseg = 0;
    for (int64_t b = 0; b < c.b; b++) {
        for (int64_t s0 = 0; s0 < c.s;) {
            int64_t s1 = s0;
            while (s1 < c.s && doc[b * c.s + s1] == doc[b * c.s + s0])
                s1++;
            int64_t len = s1 - s0, qrow = c.hq * c.dh, kvrow = c.hkv * c.dh;
            fx_t one;
            fx_init(&one);
            const attn_cfg_t c1 = {1, len, c.hq, c.hkv, c.dh};
            int q1, k1, v1;
            int d1 = attn_leaves(&one, &c1, NULL, &q1, &k1, &v1);
            memcpy(one.v[q1], f.v[q] + (b * c.s + s0) * qrow, (size_t)(len * qrow) * sizeof(double));
            memcpy(one.v[k1], f.v[k] + (b * c.s + s0) * kvrow, (size_t)(len * kvrow) * sizeof(double));
            memcpy(one.v[v1], f.v[v] + (b * c.s + s0) * kvrow, (size_t)(len * kvrow) * sizeof(double));
            int y1 = ir_attn(&one.g, q1, k1, v1, d1, 0.5);
            double **alone = fx_eval(&one);
            double err = max_abs_diff(alone[y1], full[y] + (b * c.s + s0) * qrow, len * qrow);
            CHECK_MSG(err < 1e-14, "batch %lld doc at %lld: differs by %g", (long long)b, (long long)s0, err);
            fx_done(&one, alone);
            fx_free(&one);
            nseg++;
            s0 = s1;
        }
    }
    CHECK(nseg == 6);
    fx_done(&f, full);
    fx_free(&f);
}

/* GQA equals MHA with each kv head repeated for its group (HF repeat_kv); the grouped dk and
 * dv are the sums of the repeated heads' gradients. */
static void test_attn_gqa_equals_mha(void)
{
    const attn_cfg_t c = {2, 7, 6, 2, 4};
    const int64_t group = c.hq / c.hkv, ntok = c.b * c.s;
    const double doc[14] = {0, 0, 0, 0, 1, 1, 1, 4, 4, 5, 5, 5, 5, 5};
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, doc, &q, &k, &v);
    const int64_t rep_shape[4] = {c.b, c.s, c.hq, c.dh};
    int kr = fx_leaf(&f, "krep", IR_F64, 4, rep_shape, NULL, 0);
    int vr = fx_leaf(&f, "vrep", IR_F64, 4, rep_shape, NULL, 0);
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t h = 0; h < c.hq; h++)
            for (int64_t e = 0; e < c.dh; e++) {
                f.v[kr][(t * c.hq + h) * c.dh + e] = f.v[k][(t * c.hkv + h / group) * c.dh + e];
                f.v[vr][(t * c.hq + h) * c.dh + e] = f.v[v][(t * c.hkv + h / group) * c.dh + e];
            }
    int yg = ir_attn(&f.g, q, k, v, d, 0.4);
    int ym = ir_attn(&f.g, q, kr, vr, d, 0.4);
    int dy = fx_leaf(&f, "dy", IR_F64, 4, rep_shape, NULL, 1.0);
    int gg[3], gm[3];
    ft_err_t e;
    CHECK(pass_grad(&f.g, yg, dy, (const int[]){q, k, v}, 3, gg, &e) == 0);
    CHECK(pass_grad(&f.g, ym, dy, (const int[]){q, kr, vr}, 3, gm, &e) == 0);
    double **val = fx_eval(&f);
    int64_t nq = ir_numel(&f.g.t[q]), nkv = ir_numel(&f.g.t[k]);
    CHECK(max_abs_diff(val[yg], val[ym], nq) < 1e-14);
    CHECK(max_abs_diff(val[gg[0]], val[gm[0]], nq) < 1e-14);
    double *sum = calloc((size_t)nkv, sizeof *sum);
    for (int w = 1; w <= 2; w++) {
        memset(sum, 0, (size_t)nkv * sizeof *sum);
        for (int64_t t = 0; t < ntok; t++)
            for (int64_t h = 0; h < c.hq; h++)
                for (int64_t x = 0; x < c.dh; x++)
                    sum[(t * c.hkv + h / group) * c.dh + x] += val[gm[w]][(t * c.hq + h) * c.dh + x];
        CHECK_MSG(max_abs_diff(val[gg[w]], sum, nkv) < 1e-13, "grouped d%s is not the group sum", w == 1 ? "k" : "v");
    }
    free(sum);
    fx_done(&f, val);
    fx_free(&f);
}

/* A plain causal check by hand: one head, Dh 1, three tokens in one document. */
static void test_attn_values(void)
{
    const attn_cfg_t c = {1, 3, 1, 1, 1};
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, NULL, &q, &k, &v);
    memcpy(f.v[q], (const double[]){1, 2, -1}, 3 * sizeof(double));
    memcpy(f.v[k], (const double[]){0.5, -1, 2}, 3 * sizeof(double));
    memcpy(f.v[v], (const double[]){3, 5, 7}, 3 * sizeof(double));
    int y = ir_attn(&f.g, q, k, v, d, 1.0);
    double **val = fx_eval(&f);
    double e10 = exp(2 * 0.5), e11 = exp(2 * -1.0);
    double e20 = exp(-0.5), e21 = exp(1.0), e22 = exp(-2.0);
    CHECK_NEAR(val[y][0], 3, 1e-15);
    CHECK_NEAR(val[y][1], (3 * e10 + 5 * e11) / (e10 + e11), 1e-14);
    CHECK_NEAR(val[y][2], (3 * e20 + 5 * e21 + 7 * e22) / (e20 + e21 + e22), 1e-14);
    fx_done(&f, val);
    fx_free(&f);
}

static void test_attn_cost(void)
{
    const attn_cfg_t c = {2, 8, 4, 2, 8};
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, NULL, &q, &k, &v);
    int y = ir_attn(&f.g, q, k, v, d, 1.0);
    double flops, bytes;
    ir_ops[OP_ATTN]->cost(&f.g, &f.g.t[y], &flops, &bytes);
    CHECK(flops == 2.0 * 2 * 4 * 8 * 8 * 8);
    CHECK(bytes == 8.0 * (2 * 8 * 4 * 8) * 2 + 8.0 * (2 * 8 * 2 * 8) * 2 + 4.0 * 2 * 8);
    fx_free(&f);
}

/* attn_lse against the log of the softmax denominator written out here, on packed documents
 * with grouped heads: lse_i = log sum over j <= i in i's document of exp(scale q_i.k_j). */
static void test_attn_lse_values(void)
{
    const attn_cfg_t c = {2, 7, 4, 2, 3};
    const double doc[14] = {0, 0, 1, 1, 1, 2, 2, 5, 5, 5, 5, 6, 5, 5}, scale = 0.7;
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, doc, &q, &k, &v);
    int lse = ir_node_dt(&f.g, OP_ATTN_LSE, IR_F64, 3, (const int[]){q, k, d}, NULL,
                         (const double[IR_MAX_PARAMS]){scale});
    CHECK_MSG(lse >= 0, "attn_lse: %s", f.g.err);
    const ir_tensor_t *t = &f.g.t[lse];
    CHECK(t->ndim == 4 && t->shape[0] == 2 && t->shape[1] == 7 && t->shape[2] == 4 && t->shape[3] == 1);
    double **val = fx_eval(&f);
    double worst = 0;
    for (int64_t b = 0; b < c.b; b++)
        for (int64_t i = 0; i < c.s; i++)
            for (int64_t h = 0; h < c.hq; h++) {
                double sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    if (doc[b * c.s + j] != doc[b * c.s + i])
                        continue;
                    double dotp = 0;
                    for (int64_t x = 0; x < c.dh; x++)
                        dotp += f.v[q][((b * c.s + i) * c.hq + h) * c.dh + x] *
                                f.v[k][((b * c.s + j) * c.hkv + h / 2) * c.dh + x];
                    sum += exp(scale * dotp);
                }
                double err = fabs(val[lse][(b * c.s + i) * c.hq + h] - log(sum));
                if (!(err <= worst))
                    worst = err;
            }
    CHECK_MSG(worst < 1e-13, "attn_lse differs from log sum exp by %g", worst);
    fx_done(&f, val);
    fx_free(&f);
}

/* Large scores must not overflow: lse = max + log(sum exp(s - max)). One key: lse = its score. */
static void test_attn_lse_large(void)
{
    const attn_cfg_t c = {1, 2, 1, 1, 1};
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, NULL, &q, &k, &v);
    memcpy(f.v[q], (const double[]){30, 30}, 2 * sizeof(double));
    memcpy(f.v[k], (const double[]){40, 39}, 2 * sizeof(double));
    int lse = ir_node_dt(&f.g, OP_ATTN_LSE, IR_F64, 3, (const int[]){q, k, d}, NULL, (const double[IR_MAX_PARAMS]){1});
    double **val = fx_eval(&f);
    CHECK_NEAR(val[lse][0], 1200, 1e-12);
    CHECK_NEAR(val[lse][1], 1200 + log(1 + exp(-30.0)), 1e-12);
    fx_done(&f, val);
    fx_free(&f);
}

/* rowsum: values by hand, the shape rule, and its VJP (the broadcast back) by finite
 * differences, through a product so that dy reaches it with varied values. */
static void test_rowsum(void)
{
    fx_t f;
    fx_init(&f);
    int x = fx_leaf(&f, "x", IR_F64, 2, (const int64_t[]){2, 3}, (const double[]){1, 2, 3.5, -1, 0.25, 4}, 0);
    int r = ir_node(&f.g, OP_ROWSUM, 1, &x, NULL, NULL);
    CHECK(r >= 0 && f.g.t[r].ndim == 2 && f.g.t[r].shape[0] == 2 && f.g.t[r].shape[1] == 1);
    int w = fx_leaf(&f, "w", IR_F64, 2, (const int64_t[]){2, 3}, (const double[]){2, 0.5, -1, 3, 4, 0.5}, 0);
    int r2 = ir_node(&f.g, OP_ROWSUM, 2, (const int[]){x, w}, NULL, NULL); /* the rows of x * w */
    CHECK(r2 >= 0 && f.g.t[r2].shape[0] == 2 && f.g.t[r2].shape[1] == 1);
    double **val = fx_eval(&f);
    CHECK(val[r][0] == 6.5 && val[r][1] == 3.25);
    CHECK(val[r2][0] == 2 + 1 - 3.5 && val[r2][1] == -3 + 1 + 2);
    fx_done(&f, val);
    fx_free(&f);

    const int64_t shapes[3][4] = {{2, 3, 4, 5}, {7, 0, 0, 0}, {3, 1, 0, 0}};
    const int nd[3] = {4, 1, 2};
    for (int k = 0; k < 3; k++) {
        fx_init(&f);
        int a = fx_leaf(&f, "a", IR_F64, nd[k], shapes[k], NULL, 1.0);
        int b = fx_leaf(&f, "b", IR_F64, nd[k], shapes[k], NULL, 1.0);
        int y = ir_node(&f.g, OP_ROWSUM, 1, (const int[]){ir_mul(&f.g, a, b)}, NULL, NULL);
        CHECK_MSG(y >= 0, "rowsum: %s", f.g.err);
        char label[48];
        snprintf(label, sizeof label, "rowsum %d-D", nd[k]);
        fd_check(&f.g, y, (const int[]){a, b}, 2, f.v, label);
        fx_verify(&f, label);
        fx_free(&f);
        /* the two-input form: d a = dy b, d b = dy a */
        fx_init(&f);
        a = fx_leaf(&f, "a", IR_F64, nd[k], shapes[k], NULL, 1.0);
        b = fx_leaf(&f, "b", IR_F64, nd[k], shapes[k], NULL, 1.0);
        y = ir_node(&f.g, OP_ROWSUM, 2, (const int[]){a, b}, NULL, NULL);
        CHECK_MSG(y >= 0, "rowsum(a, b): %s", f.g.err);
        snprintf(label, sizeof label, "rowsum(a, b) %d-D", nd[k]);
        fd_check(&f.g, y, (const int[]){a, b}, 2, f.v, label);
        fx_verify(&f, label);
        fx_free(&f);
    }

    ir_graph_t g;
    ir_graph_init(&g);
    int s = ir_leaf(&g, "s", IR_INPUT, IR_F32, 0, NULL);
    expect_error(&g, ir_node(&g, OP_ROWSUM, 1, &s, NULL, NULL), "rowsum", "scalar", "rowsum of a scalar");
    ir_graph_free(&g);
    ir_graph_init(&g);
    int ids = ir_leaf(&g, "ids", IR_INPUT, IR_I32, 1, (const int64_t[]){4});
    expect_error(&g, ir_node(&g, OP_ROWSUM, 1, &ids, NULL, NULL), "rowsum", "floating point", "rowsum of i32");
    ir_graph_free(&g);
    ir_graph_init(&g);
    int m = ir_leaf(&g, "m", IR_INPUT, IR_F32, 2, (const int64_t[]){4, 3});
    int m2 = ir_leaf(&g, "m2", IR_INPUT, IR_F32, 2, (const int64_t[]){4, 2});
    int mb = ir_leaf(&g, "mb", IR_INPUT, IR_BF16, 2, (const int64_t[]){4, 3});
    ir_graph_t g2;
    ir_graph_copy(&g2, &g);
    expect_error(&g, ir_node(&g, OP_ROWSUM, 2, (const int[]){m, m2}, NULL, NULL), "rowsum", "shape",
                 "rowsum(a, b) of two shapes");
    ir_graph_free(&g);
    expect_error(&g2, ir_node(&g2, OP_ROWSUM, 2, (const int[]){m, mb}, NULL, NULL), "rowsum", "share a dtype",
                 "rowsum(a, b) of two dtypes");
    ir_graph_free(&g2);
}

/* The backward of attn reads the row statistics: each gradient is an attn_bwd node whose
 * sixth input concatenates attn_lse(q, k, doc) and rowsum(o, dy) (the rows of o * dy) along
 * axis 3, all in f32 for bf16 attention, all marked as backward nodes. */
static void test_attn_vjp_nodes(void)
{
    fx_t f;
    fx_init(&f);
    const int64_t qs[4] = {2, 5, 4, 8}, kvs[4] = {2, 5, 2, 8};
    int q = fx_leaf(&f, "q", IR_BF16, 4, qs, NULL, 1), k = fx_leaf(&f, "k", IR_BF16, 4, kvs, NULL, 1);
    int v = fx_leaf(&f, "v", IR_BF16, 4, kvs, NULL, 1);
    int d = fx_leaf(&f, "doc", IR_I32, 2, qs, (const double[10]){0}, 0);
    int y = ir_attn(&f.g, q, k, v, d, 0.25);
    int dy = fx_leaf(&f, "dy", IR_BF16, 4, qs, NULL, 1);
    int grads[3];
    ft_err_t e;
    CHECK(pass_grad(&f.g, y, dy, (const int[]){q, k, v}, 3, grads, &e) == 0);
    int stats = -1;
    for (int w = 0; w < 3; w++) {
        const ir_tensor_t *t = &f.g.t[grads[w]];
        CHECK(t->op == OP_ATTN_BWD && t->nsrc == 6 && t->ip[0] == w && t->fp[0] == 0.25 && t->dtype == IR_BF16);
        CHECK(t->src[0] == q && t->src[1] == k && t->src[2] == v && t->src[3] == d && t->src[4] == dy);
        CHECK((t->flags & IR_FLAG_BWD) != 0);
        CHECK(w == 0 || t->src[5] == stats); /* one statistics tensor for all three */
        stats = t->src[5];
    }
    const ir_tensor_t *st = &f.g.t[stats];
    CHECK(st->op == OP_CONCAT && st->ip[0] == 3 && st->dtype == IR_F32 && st->shape[3] == 2 && st->shape[2] == 4);
    const ir_tensor_t *lse = &f.g.t[st->src[0]], *delta = &f.g.t[st->src[1]];
    CHECK(lse->op == OP_ATTN_LSE && lse->dtype == IR_F32 && lse->fp[0] == 0.25 && lse->src[0] == q &&
          lse->src[1] == k && lse->src[2] == d && (lse->flags & IR_FLAG_BWD));
    /* delta = rowsum(o * dy) in one node: the product never stored */
    CHECK(delta->op == OP_ROWSUM && delta->dtype == IR_F32 && (delta->flags & IR_FLAG_BWD) && delta->nsrc == 2 &&
          delta->src[0] == y && delta->src[1] == dy);
    fx_verify(&f, "attn vjp nodes");
    fx_free(&f);
}

/* The reference backward with given statistics: dq, dk, dv from attn_bwd equal the
 * gradients written out from the probabilities (recomputed here from scratch), and the
 * statistics are used as given: shifting lse by c scales every p, so dv by exp(-c). */
static void test_attn_bwd_uses_stats(void)
{
    const attn_cfg_t c = {1, 4, 2, 1, 2};
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, (const double[4]){3, 3, 3, 3}, &q, &k, &v);
    const int64_t qs[4] = {1, 4, 2, 2};
    int dy = fx_leaf(&f, "dy", IR_F64, 4, qs, NULL, 1);
    int st = fx_leaf(&f, "stats", IR_F64, 4, (const int64_t[]){1, 4, 2, 2}, NULL, 0.5);
    int y = ir_attn(&f.g, q, k, v, d, 0.6);
    int lse = ir_node_dt(&f.g, OP_ATTN_LSE, IR_F64, 3, (const int[]){q, k, d}, NULL, (const double[IR_MAX_PARAMS]){0.6});
    int bw[3];
    for (int w = 0; w < 3; w++)
        bw[w] = ir_node(&f.g, OP_ATTN_BWD, 6, (const int[]){q, k, v, d, dy, st}, (const int64_t[IR_MAX_PARAMS]){w},
                        (const double[IR_MAX_PARAMS]){0.6});
    /* dk and dv in one node (ip[0] = 3, passes/fuse.c): dk out, dv into its seventh input */
    int dvb = fx_leaf(&f, "dv_buf", IR_F64, 4, (const int64_t[]){1, 4, 1, 2}, NULL, 7);
    int dkv = ir_node(&f.g, OP_ATTN_BWD, 7, (const int[]){q, k, v, d, dy, st, dvb}, (const int64_t[IR_MAX_PARAMS]){3},
                      (const double[IR_MAX_PARAMS]){0.6});
    CHECK_MSG(dkv >= 0 && bw[2] >= 0 && y >= 0 && lse >= 0, "%s", f.g.err);
    /* first pass: the true statistics into the stats leaf */
    double **val = fx_eval(&f);
    for (int64_t r = 0; r < 8; r++) {
        double delta = 0;
        for (int64_t x = 0; x < 2; x++)
            delta += val[y][r * 2 + x] * f.v[dy][r * 2 + x];
        f.v[st][2 * r] = val[lse][r];
        f.v[st][2 * r + 1] = delta;
    }
    fx_done(&f, val);
    val = fx_eval(&f);
    /* the gradients written out: p_ij, dP_ij = dy_i.v_j, dS = p (dP - sum_l p_il dP_il) */
    double want[3][16] = {{0}};
    for (int64_t i = 0; i < 4; i++)
        for (int64_t h = 0; h < 2; h++) {
            const double *qi = f.v[q] + (i * 2 + h) * 2, *dyi = f.v[dy] + (i * 2 + h) * 2;
            double s[4], p[4], dpv[4], z = 0, dsum = 0;
            for (int64_t j = 0; j <= i; j++) {
                s[j] = 0.6 * (qi[0] * f.v[k][j * 2] + qi[1] * f.v[k][j * 2 + 1]);
                z += exp(s[j]);
            }
            for (int64_t j = 0; j <= i; j++) {
                p[j] = exp(s[j]) / z;
                dpv[j] = dyi[0] * f.v[v][j * 2] + dyi[1] * f.v[v][j * 2 + 1];
                dsum += p[j] * dpv[j];
            }
            for (int64_t j = 0; j <= i; j++)
                for (int64_t x = 0; x < 2; x++) {
                    double ds = 0.6 * p[j] * (dpv[j] - dsum);
                    want[0][(i * 2 + h) * 2 + x] += ds * f.v[k][j * 2 + x];
                    want[1][j * 2 + x] += ds * qi[x];
                    want[2][j * 2 + x] += p[j] * dyi[x];
                }
        }
    for (int w = 0; w < 3; w++)
        CHECK_MSG(max_abs_diff(val[bw[w]], want[w], w == 0 ? 16 : 8) < 1e-13, "attn_bwd %d differs from the written-out "
                  "gradient", w);
    CHECK_MSG(max_abs_diff(val[dkv], want[1], 8) < 1e-13 && max_abs_diff(val[dvb], want[2], 8) < 1e-13,
              "attn_bwd dk and dv in one node differ from the written-out gradients");
    fx_done(&f, val);
    for (int64_t r = 0; r < 8; r++)
        f.v[st][2 * r] += 0.5;
    val = fx_eval(&f);
    for (int64_t x = 0; x < 8; x++)
        CHECK_NEAR(val[bw[2]][x], want[2][x] * exp(-0.5), 1e-13);
    fx_done(&f, val);
    fx_free(&f);
}

static void test_attn_bwd_cost(void)
{
    const attn_cfg_t c = {2, 8, 4, 2, 8};
    fx_t f;
    fx_init(&f);
    int q, k, v;
    int d = attn_leaves(&f, &c, NULL, &q, &k, &v);
    int dy = fx_leaf(&f, "dy", IR_F64, 4, (const int64_t[]){2, 8, 4, 8}, NULL, 1);
    int st = fx_leaf(&f, "stats", IR_F32, 4, (const int64_t[]){2, 8, 4, 2}, NULL, 1);
    int lse = ir_node_dt(&f.g, OP_ATTN_LSE, IR_F32, 3, (const int[]){q, k, d}, NULL, (const double[IR_MAX_PARAMS]){1});
    int dq = ir_node(&f.g, OP_ATTN_BWD, 6, (const int[]){q, k, v, d, dy, st}, (const int64_t[IR_MAX_PARAMS]){0},
                     (const double[IR_MAX_PARAMS]){1});
    int dv = ir_node(&f.g, OP_ATTN_BWD, 6, (const int[]){q, k, v, d, dy, st}, (const int64_t[IR_MAX_PARAMS]){2},
                     (const double[IR_MAX_PARAMS]){1});
    CHECK_MSG(dv >= 0, "%s", f.g.err);
    double flops, bytes, mm = 2.0 * 2 * 4 * 8 * 8 * 8 / 2; /* one causal score-sized product */
    ir_ops[OP_ATTN_LSE]->cost(&f.g, &f.g.t[lse], &flops, &bytes);
    CHECK(flops == mm && bytes == 8.0 * (2 * 8 * 4 * 8) + 8.0 * (2 * 8 * 2 * 8) + 4.0 * 2 * 8 + 4.0 * 2 * 8 * 4);
    ir_ops[OP_ATTN_BWD]->cost(&f.g, &f.g.t[dq], &flops, &bytes);
    CHECK(flops == 3 * mm);
    CHECK(bytes == 8.0 * (2 * 8 * 4 * 8) * 3 + 8.0 * (2 * 8 * 2 * 8) * 2 + 4.0 * 2 * 8 + 4.0 * 2 * 8 * 4 * 2);
    ir_ops[OP_ATTN_BWD]->cost(&f.g, &f.g.t[dv], &flops, &bytes);
    CHECK(flops == 2 * mm);
    fx_free(&f);
}

/* ------------------------------------------------------------------ cross-entropy */

static void test_xent_fd(const char *label, int64_t ignore, const double *targets, double scale)
{
    fx_t f;
    fx_init(&f);
    int lg = fx_leaf(&f, "logits", IR_F64, 2, (const int64_t[]){6, 7}, NULL, scale);
    int tg = fx_leaf(&f, "targets", IR_I32, 1, (const int64_t[]){6}, targets, 0);
    int y = ir_xent(&f.g, lg, tg, ignore);
    CHECK_MSG(y >= 0, "%s: %s", label, f.g.err);
    CHECK(f.g.t[y].ndim == 0 && f.g.t[y].dtype == IR_F32);
    fd_check(&f.g, y, (const int[]){lg}, 1, f.v, label);
    fx_verify(&f, label);
    fx_free(&f);
}

/* Loss and gradient of a 3x3 case by hand, with dy = 2. */
static void test_xent_values(void)
{
    const double logits[9] = {1, 2, 3, 0, 0, 0, 5, 1, -1};
    fx_t f;
    fx_init(&f);
    int lg = fx_leaf(&f, "logits", IR_F64, 2, (const int64_t[]){3, 3}, logits, 0);
    int tg = fx_leaf(&f, "targets", IR_I32, 1, (const int64_t[]){3}, (const double[]){2, -100, 0}, 0);
    int none = fx_leaf(&f, "none", IR_I32, 1, (const int64_t[]){3}, (const double[]){-100, -100, -100}, 0);
    int y = ir_xent(&f.g, lg, tg, -100);
    int y0 = ir_xent(&f.g, lg, none, -100);
    int dy = fx_leaf(&f, "dy", IR_F64, 0, NULL, (const double[]){2}, 0);
    int grad;
    ft_err_t e;
    CHECK(pass_grad(&f.g, y, dy, (const int[]){lg}, 1, &grad, &e) == 0);
    CHECK(f.g.t[grad].op == OP_XENT_BWD && f.g.t[grad].dtype == IR_F64 && f.g.t[grad].ip[0] == -100);
    double **v = fx_eval(&f);
    double z0 = exp(1) + exp(2) + exp(3), z2 = exp(5) + exp(1) + exp(-1);
    CHECK_NEAR(v[y][0], (log(z0) - 3) + (log(z2) - 5), 1e-14);
    CHECK(v[y0][0] == 0);
    const double want[9] = {
        2 * exp(1) / z0, 2 * exp(2) / z0, 2 * (exp(3) / z0 - 1),
        0, 0, 0,
        2 * (exp(5) / z2 - 1), 2 * exp(1) / z2, 2 * exp(-1) / z2,
    };
    for (int i = 0; i < 9; i++)
        CHECK_NEAR(v[grad][i], want[i], 1e-12);
    CHECK(v[grad][3] == 0 && v[grad][4] == 0 && v[grad][5] == 0);
    fx_done(&f, v);
    fx_free(&f);
}

/* A target outside [0, V) that is not the ignore index poisons the loss and its gradient
 * with NaN, so the runtime's guard stops on bad data. */
static void test_xent_bad_target(double bad)
{
    fx_t f;
    fx_init(&f);
    int lg = fx_leaf(&f, "logits", IR_F64, 2, (const int64_t[]){3, 7}, NULL, 1);
    int tg = fx_leaf(&f, "targets", IR_I32, 1, (const int64_t[]){3}, (const double[]){1, bad, -100}, 0);
    int y = ir_xent(&f.g, lg, tg, -100);
    int dy = fx_leaf(&f, "dy", IR_F64, 0, NULL, (const double[]){1}, 0);
    int grad;
    ft_err_t e;
    CHECK(pass_grad(&f.g, y, dy, (const int[]){lg}, 1, &grad, &e) == 0);
    double **v = fx_eval(&f);
    CHECK_MSG(isnan(v[y][0]), "target %g: loss %g is not NaN", bad, v[y][0]);
    CHECK(isnan(v[grad][7]) && !isnan(v[grad][0]) && v[grad][14] == 0);
    fx_done(&f, v);
    fx_free(&f);
}

/* ------------------------------------------------------------------ shape errors */

static void test_attn_shape_errors(void)
{
    struct {
        int64_t hq, hkv, dhk, vs;
        ir_dtype_t doc_dt, kdt;
        const char *a, *b;
    } cases[] = {
        {3, 2, 4, 5, IR_I32, IR_F32, "attn", "not a multiple"},
        {4, 2, 4, 5, IR_F32, IR_F32, "attn: doc", "i32"},
        {4, 2, 8, 5, IR_I32, IR_F32, "attn", "head dim"},
        {4, 2, 4, 4, IR_I32, IR_F32, "attn", "differ in shape"},
        {4, 2, 4, 5, IR_I32, IR_I32, "attn: k", "floating point"},
        {4, 2, 4, 5, IR_I32, IR_BF16, "attn", "share a dtype"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ir_graph_t g;
        ir_graph_init(&g);
        int q = ir_leaf(&g, "q", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 5, cases[i].hq, 4});
        int k = ir_leaf(&g, "k", IR_INPUT, cases[i].kdt, 4, (const int64_t[]){2, 5, cases[i].hkv, cases[i].dhk});
        int v = ir_leaf(&g, "v", IR_INPUT, cases[i].kdt, 4, (const int64_t[]){2, cases[i].vs, cases[i].hkv, cases[i].dhk});
        int d = ir_leaf(&g, "doc", IR_INPUT, cases[i].doc_dt, 2, (const int64_t[]){2, 5});
        expect_error(&g, ir_attn(&g, q, k, v, d, 1.0), cases[i].a, cases[i].b, "attn");
        ir_graph_free(&g);
    }
    ir_graph_t g;
    ir_graph_init(&g);
    int q = ir_leaf(&g, "q", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 5, 4, 4});
    int d = ir_leaf(&g, "doc", IR_INPUT, IR_I32, 2, (const int64_t[]){2, 4});
    expect_error(&g, ir_attn(&g, q, q, q, d, 1.0), "attn: doc", "expected [2,5]", "attn doc shape");
    ir_graph_free(&g);
}

/* attn_bwd wants stats [B,S,Hq,2]; attn_lse wants q and k of one dtype and a float result. */
static void test_attn_stats_shape_errors(void)
{
    ir_graph_t g;
    ir_graph_init(&g);
    int q = ir_leaf(&g, "q", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 5, 4, 8});
    int k = ir_leaf(&g, "k", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 5, 2, 8});
    int kb = ir_leaf(&g, "kb", IR_INPUT, IR_BF16, 4, (const int64_t[]){2, 5, 2, 8});
    int d = ir_leaf(&g, "doc", IR_INPUT, IR_I32, 2, (const int64_t[]){2, 5});
    int st1 = ir_leaf(&g, "st1", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 5, 4, 1});
    int sti = ir_leaf(&g, "sti", IR_INPUT, IR_I32, 4, (const int64_t[]){2, 5, 4, 2});
    const int64_t ip[IR_MAX_PARAMS] = {1};
    const double fp[IR_MAX_PARAMS] = {0.5};
    ir_graph_t g2;
    ir_graph_copy(&g2, &g);
    expect_error(&g, ir_node(&g, OP_ATTN_BWD, 6, (const int[]){q, k, k, d, q, st1}, ip, fp), "attn_bwd: stats",
                 "expected [2,5,4,2]", "attn_bwd stats shape");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node(&g, OP_ATTN_BWD, 6, (const int[]){q, k, k, d, q, sti}, ip, fp), "attn_bwd: stats",
                 "floating point", "attn_bwd i32 stats");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node(&g, OP_ATTN_BWD, 5, (const int[]){q, k, k, d, q}, ip, fp), "attn_bwd", "6 to 7 inputs",
                 "attn_bwd without stats");
    ir_graph_free(&g);
    /* dk and dv in one node: ip[0] = 3 with exactly seven inputs, the seventh of v's shape and
     * the node's dtype */
    int st2 = ir_leaf(&g2, "st2", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 5, 4, 2});
    int dvq = ir_leaf(&g2, "dvq", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 5, 4, 8});
    int dvb = ir_leaf(&g2, "dvb", IR_INPUT, IR_BF16, 4, (const int64_t[]){2, 5, 2, 8});
    const int64_t ip3[IR_MAX_PARAMS] = {3};
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node(&g, OP_ATTN_BWD, 6, (const int[]){q, k, k, d, q, st2}, ip3, fp), "attn_bwd",
                 "dk and dv 7", "attn_bwd ip 3 with 6 inputs");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node(&g, OP_ATTN_BWD, 7, (const int[]){q, k, k, d, q, st2, k}, ip, fp), "attn_bwd",
                 "dk and dv 7", "attn_bwd ip 1 with 7 inputs");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node(&g, OP_ATTN_BWD, 7, (const int[]){q, k, k, d, q, st2, dvq}, ip3, fp), "attn_bwd", "dv",
                 "attn_bwd dv buffer of q's shape");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node(&g, OP_ATTN_BWD, 7, (const int[]){q, k, k, d, q, st2, dvb}, ip3, fp), "attn_bwd",
                 "the node's dtype", "attn_bwd bf16 dv buffer for an f32 node");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node_dt(&g, OP_ATTN_LSE, IR_F32, 3, (const int[]){q, kb, d}, NULL, fp), "attn_lse",
                 "share a dtype", "attn_lse dtypes");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node_dt(&g, OP_ATTN_LSE, IR_I32, 3, (const int[]){q, k, d}, NULL, fp), "attn_lse",
                 "floating point", "attn_lse i32 result");
    ir_graph_free(&g);
    ir_graph_copy(&g, &g2);
    expect_error(&g, ir_node_dt(&g, OP_ATTN_LSE, IR_F32, 3, (const int[]){q, k, st1}, NULL, fp), "attn_lse: doc",
                 "i32", "attn_lse doc");
    ir_graph_free(&g);
    ir_graph_free(&g2);
}

static void test_rope_shape_errors(void)
{
    struct {
        int64_t dh, pos_s, kind;
        ir_dtype_t pos_dt;
        double low;
        const char *a, *b;
    } cases[] = {
        {5, 3, 0, IR_I32, 1, "rope", "odd"},
        {4, 3, 0, IR_F32, 1, "rope: pos", "i32"},
        {4, 2, 0, IR_I32, 1, "rope: pos", "expected"},
        {4, 3, 7, IR_I32, 1, "rope", "scaling kind"},
        {4, 3, 1, IR_I32, 4, "rope", "differ"}, /* llama3 with low == high */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ir_graph_t g;
        ir_graph_init(&g);
        int x = ir_leaf(&g, "x", IR_INPUT, IR_F32, 4, (const int64_t[]){2, 3, 2, cases[i].dh});
        int p = ir_leaf(&g, "pos", IR_INPUT, cases[i].pos_dt, 2, (const int64_t[]){2, cases[i].pos_s});
        int y = ir_rope(&g, x, p, (const int64_t[3]){0, cases[i].kind, 64}, (const double[4]){1e4, 8, cases[i].low, 4});
        expect_error(&g, y, cases[i].a, cases[i].b, "rope");
        ir_graph_free(&g);
    }
    ir_graph_t g;
    ir_graph_init(&g);
    int x = ir_leaf(&g, "x", IR_INPUT, IR_F32, 3, (const int64_t[]){2, 3, 4});
    int p = ir_leaf(&g, "pos", IR_INPUT, IR_I32, 2, (const int64_t[]){2, 3});
    expect_error(&g, ir_rope(&g, x, p, (const int64_t[3]){0}, (const double[4]){1e4}), "rope", "4 dimensions", "rope 3-D");
    ir_graph_free(&g);
}

static void test_xent_rmsnorm_shape_errors(void)
{
    ir_graph_t g;
    ir_graph_init(&g);
    int lg = ir_leaf(&g, "logits", IR_INPUT, IR_F32, 2, (const int64_t[]){4, 7});
    int tf = ir_leaf(&g, "tf", IR_INPUT, IR_F32, 1, (const int64_t[]){4});
    expect_error(&g, ir_xent(&g, lg, tf, -100), "xent: targets", "i32", "xent f32 targets");
    ir_graph_free(&g);

    ir_graph_init(&g);
    lg = ir_leaf(&g, "logits", IR_INPUT, IR_F32, 2, (const int64_t[]){4, 7});
    int t5 = ir_leaf(&g, "t5", IR_INPUT, IR_I32, 1, (const int64_t[]){5});
    expect_error(&g, ir_xent(&g, lg, t5, -100), "xent", "5 targets for 4 rows", "xent length");
    ir_graph_free(&g);

    ir_graph_init(&g);
    int l3 = ir_leaf(&g, "l3", IR_INPUT, IR_F32, 3, (const int64_t[]){2, 2, 7});
    int t2 = ir_leaf(&g, "t2", IR_INPUT, IR_I32, 1, (const int64_t[]){2});
    expect_error(&g, ir_xent(&g, l3, t2, -100), "xent: logits", "2 dimensions", "xent 3-D logits");
    ir_graph_free(&g);

    ir_graph_init(&g);
    int x = ir_leaf(&g, "x", IR_INPUT, IR_F32, 2, (const int64_t[]){3, 8});
    int w = ir_leaf(&g, "w", IR_INPUT, IR_F32, 1, (const int64_t[]){7});
    expect_error(&g, ir_rmsnorm(&g, x, w, 1e-5), "rmsnorm", "w has 7 features, x has 8", "rmsnorm w");
    ir_graph_free(&g);

    ir_graph_init(&g);
    x = ir_leaf(&g, "x", IR_INPUT, IR_I32, 2, (const int64_t[]){3, 8});
    w = ir_leaf(&g, "w", IR_INPUT, IR_F32, 1, (const int64_t[]){8});
    expect_error(&g, ir_rmsnorm(&g, x, w, 1e-5), "rmsnorm: x", "floating point", "rmsnorm i32 x");
    ir_graph_free(&g);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    test_rmsnorm_values();
    test_rmsnorm_vjp_nodes();
    test_rmsnorm_bwd_addend();
    test_rmsnorm_fd(2, (const int64_t[]){3, 5}, 1e-5);
    test_rmsnorm_fd(3, (const int64_t[]){2, 3, 8}, 1e-5);
    test_rmsnorm_fd(2, (const int64_t[]){4, 2}, 1e-6);
    test_rmsnorm_fd(1, (const int64_t[]){16}, 0.1);
    test_rmsnorm_fd(4, (const int64_t[]){2, 2, 2, 3}, 1e-5);

    test_rope_values();
    test_rope_inv_freq();
    test_rope_identities(&rope_none, "rope none");
    test_rope_identities(&rope_linear, "rope linear");
    test_rope_identities(&rope_llama3, "rope llama3");
    test_rope_fd("rope none", &rope_none, 8, 0);
    test_rope_fd("rope none inverse", &rope_none, 4, 1);
    test_rope_fd("rope linear", &rope_linear, 8, 0);
    test_rope_fd("rope llama3", &rope_llama3, 16, 0);
    test_rope_fd("rope llama3 inverse", &rope_llama3, 16, 1);

    test_attn_values();
    test_attn_cost();
    test_attn_fd("attn mha", (attn_cfg_t){2, 8, 2, 2, 4}, NULL);
    test_attn_fd("attn mha docs", (attn_cfg_t){2, 8, 3, 3, 8},
                 (const double[16]){0, 0, 0, 1, 1, 2, 2, 2, 5, 5, 5, 5, 5, 5, 7, 7});
    test_attn_fd("attn gqa 4/2", (attn_cfg_t){2, 8, 4, 2, 8}, NULL);
    test_attn_fd("attn gqa 4/2 docs", (attn_cfg_t){2, 8, 4, 2, 4},
                 (const double[16]){0, 0, 0, 1, 1, 2, 2, 2, 1, 2, 2, 2, 3, 3, 3, 3});
    test_attn_fd("attn gqa 6/2 docs", (attn_cfg_t){2, 6, 6, 2, 4},
                 (const double[12]){0, 0, 1, 1, 1, 2, 4, 4, 4, 4, 8, 9});
    test_attn_fd("attn mqa 3/1", (attn_cfg_t){2, 5, 3, 1, 4}, NULL);
    test_attn_doc_isolation();
    test_attn_gqa_equals_mha();
    test_attn_lse_values();
    test_attn_lse_large();
    test_attn_vjp_nodes();
    test_attn_bwd_uses_stats();
    test_attn_bwd_cost();
    test_rowsum();

    test_xent_values();
    test_xent_bad_target(7);
    test_xent_bad_target(-1);
    test_xent_bad_target(1e12);
    test_xent_fd("xent", -100, (const double[6]){3, -100, 0, 6, -100, 2}, 2.0);
    test_xent_fd("xent ignore -1", -1, (const double[6]){-1, 1, 1, 5, 4, -1}, 4.0);

    test_attn_shape_errors();
    test_attn_stats_shape_errors();
    test_rope_shape_errors();
    test_xent_rmsnorm_shape_errors();
    return CHECK_DONE();
}
