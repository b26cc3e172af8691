/* test_ops_tensor.c — the ops of ir/ops_tensor.c: every VJP against finite differences
 * (through the real autodiff engine), forward values against hand-computed results, the
 * shape rules' refusals, costs, and the descriptors' table entries. */
#include <string.h>

#include "fdcheck.h"


#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define MAXT 256

/* A graph under test and the values of its leaves (index = tensor id). */
typedef struct {
    ir_graph_t g;
    double *v[MAXT];
} fx_t;

static void fx_init(fx_t *f)
{
    memset(f, 0, sizeof *f);
    ir_graph_init(&f->g);
}

static void fx_free(fx_t *f)
{
    for (int i = 0; i < MAXT; i++)
        free(f->v[i]);
    ir_graph_free(&f->g);
}

/* A leaf of random values in [-1, 1). */
static int fx_leaf(fx_t *f, ir_dtype_t dt, int ndim, const int64_t *shape)
{
    char name[32];
    snprintf(name, sizeof name, "x%d", f->g.n);
    int id = ir_leaf(&f->g, name, IR_INPUT, dt, ndim, shape);
    CHECK_MSG(id >= 0 && id < MAXT, "leaf: %s", f->g.err);
    if (id < 0 || id >= MAXT)
        exit(1);
    f->v[id] = fd_random_values(ir_numel(&f->g.t[id]), 1.0);
    return id;
}

/* A leaf with the given values. */
static int fx_const(fx_t *f, ir_dtype_t dt, int ndim, const int64_t *shape, const double *vals)
{
    int id = fx_leaf(f, dt, ndim, shape);
    if (id >= 0)
        memcpy(f->v[id], vals, (size_t)ir_numel(&f->g.t[id]) * sizeof *vals);
    return id;
}

/* Evaluates the whole graph; the caller reads vals[id] and passes vals to fx_done. */
static double **fx_eval(fx_t *f)
{
    double **vals = calloc((size_t)f->g.n, sizeof *vals);
    for (int i = 0; i < f->g.n; i++)
        if (f->g.t[i].op == OP_LEAF && i < MAXT)
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

/* FD-checks y against every float leaf, then verifies the graph grown by the backward
 * pass (the verifier re-runs every shape rule on the new nodes). */
static void fx_fd(fx_t *f, int y, const char *label)
{
    CHECK_MSG(y >= 0 && !f->g.err[0], "%s: build failed: %s", label, f->g.err);
    if (y < 0)
        return;
    int wrt[16], n = 0;
    for (int i = 0; i < f->g.n && n < 16; i++)
        if (f->g.t[i].op == OP_LEAF && f->g.t[i].dtype != IR_I32)
            wrt[n++] = i;
    double worst = fd_check(&f->g, y, wrt, n, f->v, label);
    CHECK_MSG(worst < 1e-6, "%s: worst %.3g", label, worst);
    ft_err_t e;
    int rc = ir_verify(&f->g, &e);
    CHECK_MSG(rc == 0, "%s: verify after backward: %s", label, e.msg);
}

static int64_t rdim(int lo, int hi) { return lo + (int64_t)((fd_rand() + 1) * 0.5 * (hi - lo + 1)) % (hi - lo + 1); }

/* ---- the table ---- */

static const struct {
    ir_op_t op;
    const char *name;
    bool diff;
} mine[] = {
    {OP_LEAF, "leaf", false}, {OP_FILL, "fill", true}, {OP_EMBED, "embed", true},
    {OP_EMBED_BWD, "embed_bwd", false}, {OP_MATMUL, "matmul", true}, {OP_ADD, "add", true},
    {OP_MUL, "mul", true}, {OP_SCALE, "scale", true}, {OP_CAST, "cast", true},
    {OP_RESHAPE, "reshape", true}, {OP_PERMUTE, "permute", true}, {OP_SLICE, "slice", true},
    {OP_SLICE_BWD, "slice_bwd", true}, {OP_CONCAT, "concat", true}, {OP_SILU, "silu", true},
    {OP_SILU_BWD, "silu_bwd", false}, {OP_SWIGLU, "swiglu", true}, {OP_SWIGLU_BWD_G, "swiglu_bwd_g", false},
    {OP_SWIGLU_BWD_U, "swiglu_bwd_u", false}, {OP_SUM, "sum", true}, {OP_MEAN, "mean", true},
    {OP_DROPOUT, "dropout", true}, {OP_SUMSQ, "sumsq", false}, {OP_ACC, "acc", false},
    {OP_GNORM, "gnorm", false}, {OP_ADAMW, "adamw", false},
};

static void test_table(void)
{
    for (size_t k = 0; k < sizeof mine / sizeof mine[0]; k++) {
        const ir_op_desc_t *d = ir_ops[mine[k].op];
        CHECK_MSG(d && d->name && strcmp(d->name, mine[k].name) == 0, "op %s", mine[k].name);
        if (!d)
            continue;
        CHECK_MSG(d->shape && d->cost && d->cpu, "%s: shape/cost/cpu", mine[k].name);
        CHECK_MSG(d->min_src >= 0 && d->min_src <= d->max_src && d->max_src <= IR_MAX_SRC, "%s: arity", mine[k].name);
        CHECK_MSG(mine[k].diff == (d->vjp != NULL), "%s: vjp", mine[k].name);
        CHECK_MSG(mine[k].diff == !(d->flags & IR_OPF_NONDIFF_OK), "%s: NONDIFF_OK", mine[k].name);
        CHECK_MSG(d->writes == 0 || (d->flags & IR_OPF_ALIAS), "%s: writes without alias", mine[k].name);
    }
    CHECK(ir_ops[OP_ACC]->writes == 1u);
    CHECK(ir_ops[OP_ADAMW]->writes == 0xdu);
    CHECK(ir_ops[OP_RESHAPE]->flags & IR_OPF_ALIAS);
    CHECK(ir_ops[OP_ADAMW]->min_src == 6 && ir_ops[OP_FILL]->min_src == 0 && ir_ops[OP_FILL]->max_src == 1);
}

/* ---- finite differences ---- */

static void fd_matmul(void)
{
    for (int batched = 0; batched < 2; batched++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                fx_t f;
                fx_init(&f);
                int64_t B = rdim(1, 3), M = rdim(1, 5), N = rdim(1, 5), K = rdim(1, 5);
                int nd = batched ? 3 : 2, r = nd - 2;
                int64_t sa[3] = {B}, sb[3] = {B};
                sa[r] = ta ? K : M, sa[r + 1] = ta ? M : K;
                sb[r] = tb ? N : K, sb[r + 1] = tb ? K : N;
                int a = fx_leaf(&f, IR_F64, nd, sa), b = fx_leaf(&f, IR_F64, nd, sb);
                int y = ir_matmul(&f.g, a, b, ta, tb);
                char label[64];
                snprintf(label, sizeof label, "matmul%s ta=%d tb=%d", batched ? " batched" : "", ta, tb);
                fx_fd(&f, y, label);
                fx_free(&f);
                /* with an addend (what pass_fuse makes of add(x, a·b)) */
                fx_init(&f);
                int64_t sc[3] = {B};
                sc[r] = M, sc[r + 1] = N;
                a = fx_leaf(&f, IR_F64, nd, sa), b = fx_leaf(&f, IR_F64, nd, sb);
                int c = fx_leaf(&f, IR_F64, nd, sc);
                y = ir_matmul_add(&f.g, a, b, ta, tb, c);
                snprintf(label, sizeof label, "matmul+c%s ta=%d tb=%d", batched ? " batched" : "", ta, tb);
                fx_fd(&f, y, label);
                fx_free(&f);
                /* scaled (what pass_fuse makes of scale(a·b)), with and without the addend */
                for (int add = 0; add < 2; add++) {
                    fx_init(&f);
                    a = fx_leaf(&f, IR_F64, nd, sa), b = fx_leaf(&f, IR_F64, nd, sb);
                    c = add ? fx_leaf(&f, IR_F64, nd, sc) : -1;
                    y = add ? ir_matmul_add(&f.g, a, b, ta, tb, c) : ir_matmul(&f.g, a, b, ta, tb);
                    f.g.t[y].ip[2] = 1;
                    f.g.t[y].fp[0] = -0.75;
                    snprintf(label, sizeof label, "-0.75 matmul%s%s ta=%d tb=%d", add ? "+c" : "",
                             batched ? " batched" : "", ta, tb);
                    fx_fd(&f, y, label);
                    fx_free(&f);
                }
            }
}

static void fd_elementwise(void)
{
    for (int k = 0; k < 7; k++) {
        fx_t f;
        fx_init(&f);
        int64_t s[3] = {rdim(1, 4), rdim(1, 4), rdim(1, 3)};
        int a = fx_leaf(&f, IR_F64, 3, s), b = fx_leaf(&f, IR_F64, 3, s);
        static const char *const labels[] = {"add", "mul", "mul(a,a)", "scale", "silu", "swiglu", "cast f64"};
        int y = -1;
        switch (k) {
        case 0: y = ir_add(&f.g, a, b); break;
        case 1: y = ir_mul(&f.g, a, b); break;
        case 2: y = ir_add(&f.g, ir_mul(&f.g, a, a), b); break; /* a's adjoints are summed */
        case 3: y = ir_add(&f.g, ir_scale(&f.g, a, -2.5), b); break;
        case 4: y = ir_add(&f.g, ir_silu(&f.g, ir_scale(&f.g, a, 4.0)), b); break;
        case 5: y = ir_swiglu(&f.g, ir_scale(&f.g, a, 4.0), b); break;
        case 6: y = ir_add(&f.g, ir_cast(&f.g, a, IR_F64), b); break;
        }
        fx_fd(&f, y, labels[k]);
        fx_free(&f);
    }
}

static void fd_reshape_permute(void)
{
    {
        fx_t f;
        fx_init(&f);
        int a = fx_leaf(&f, IR_F64, 3, SH(2, 3, 4));
        int y = ir_mul(&f.g, ir_reshape(&f.g, a, 2, SH(6, 4)), fx_leaf(&f, IR_F64, 2, SH(6, 4)));
        fx_fd(&f, y, "reshape");
        fx_free(&f);
    }
    static const int64_t p3[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int k = 0; k < 6; k++) {
        fx_t f;
        fx_init(&f);
        int a = fx_leaf(&f, IR_F64, 3, SH(2, 3, 4));
        int y = ir_permute(&f.g, a, p3[k]);
        char label[64];
        snprintf(label, sizeof label, "permute3 %lld%lld%lld", (long long)p3[k][0], (long long)p3[k][1],
                 (long long)p3[k][2]);
        fx_fd(&f, y, label);
        fx_free(&f);
    }
    static const int64_t p4[4][4] = {{0, 2, 1, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {2, 0, 3, 1}};
    for (int k = 0; k < 4; k++) {
        fx_t f;
        fx_init(&f);
        int a = fx_leaf(&f, IR_F64, 4, SH(2, 3, 2, 3));
        int y = ir_permute(&f.g, a, p4[k]);
        fx_fd(&f, y, "permute4");
        fx_free(&f);
    }
}

static void fd_slice_concat(void)
{
    int64_t s[3] = {3, 4, 5};
    for (int axis = 0; axis < 3; axis++) {
        int64_t len = rdim(1, (int)s[axis] - 1), start = rdim(0, (int)(s[axis] - len));
        fx_t f;
        fx_init(&f);
        int a = fx_leaf(&f, IR_F64, 3, s);
        fx_fd(&f, ir_slice(&f.g, a, axis, start, len), "slice");
        fx_free(&f);

        fx_init(&f);
        int64_t ds[3] = {s[0], s[1], s[2]};
        ds[axis] = len;
        int d = fx_leaf(&f, IR_F64, 3, ds);
        int64_t ip[IR_MAX_PARAMS] = {axis, start, len, s[axis]};
        fx_fd(&f, ir_node(&f.g, OP_SLICE_BWD, 1, &d, ip, NULL), "slice_bwd");
        fx_free(&f);

        fx_init(&f);
        int64_t sb[3] = {s[0], s[1], s[2]};
        sb[axis] = 2;
        int x = fx_leaf(&f, IR_F64, 3, s), y = fx_leaf(&f, IR_F64, 3, sb);
        fx_fd(&f, ir_concat(&f.g, x, y, axis), "concat");
        fx_free(&f);
    }
}

static void fd_reductions_fill(void)
{
    for (int k = 0; k < 2; k++) {
        fx_t f;
        fx_init(&f);
        int a = fx_leaf(&f, IR_F64, 2, SH(3, 5));
        fx_fd(&f, k ? ir_mean(&f.g, a) : ir_sum(&f.g, a), k ? "mean" : "sum");
        fx_free(&f);
    }
    for (int k = 0; k < 2; k++) {
        fx_t f;
        fx_init(&f);
        /* a [] scalar and a [1,1] one: the gradient must come back in the input's shape */
        int x = k ? fx_leaf(&f, IR_F64, 2, SH(1, 1)) : fx_leaf(&f, IR_F64, 0, NULL);
        int y = ir_fill(&f.g, x, 1.7, 2, SH(2, 3), IR_F64);
        fx_fd(&f, ir_mul(&f.g, y, fx_leaf(&f, IR_F64, 2, SH(2, 3))), k ? "fill from [1,1]" : "fill from scalar");
        fx_free(&f);
    }
}

static void fd_dropout(void)
{
    for (int k = 0; k < 2; k++) {
        fx_t f;
        fx_init(&f);
        int x = fx_leaf(&f, IR_F64, 2, SH(6, 7));
        int rng = fx_const(&f, IR_I32, 1, SH(2), (const double[]){1234, -7});
        int y = ir_dropout(&f.g, x, rng, k ? 0.3 : 0.0, 11);
        fx_fd(&f, y, k ? "dropout p=0.3" : "dropout p=0");
        fx_free(&f);
    }
}

static void fd_embed(void)
{
    fx_t f;
    fx_init(&f);
    int tab = fx_leaf(&f, IR_F64, 2, SH(5, 3));
    int ids = fx_const(&f, IR_I32, 2, SH(2, 3), (const double[]){1, 4, 1, 0, 1, 4});
    fx_fd(&f, ir_embed(&f.g, tab, ids), "embed");
    fx_free(&f);
}

/* A small MLP: inputs used twice, adjoints summed through several ops. */
static void fd_chain(void)
{
    fx_t f;
    fx_init(&f);
    int x = fx_leaf(&f, IR_F64, 2, SH(4, 3)), wg = fx_leaf(&f, IR_F64, 2, SH(5, 3));
    int wu = fx_leaf(&f, IR_F64, 2, SH(5, 3)), wd = fx_leaf(&f, IR_F64, 2, SH(3, 5));
    int h = ir_swiglu(&f.g, ir_matmul(&f.g, x, wg, false, true), ir_matmul(&f.g, x, wu, false, true));
    int o = ir_add(&f.g, x, ir_matmul(&f.g, h, wd, false, true));
    int y = ir_mean(&f.g, ir_mul(&f.g, o, o));
    fx_fd(&f, y, "mlp chain");
    fx_free(&f);
}

/* ---- forward values ---- */

static void check_vals(const double *got, const double *want, int64_t n, const char *label)
{
    for (int64_t i = 0; i < n; i++)
        CHECK_MSG(got[i] == want[i], "%s[%lld]: %.17g, want %.17g", label, (long long)i, got[i], want[i]);
}

static void val_matmul(void)
{
    static const double A[6] = {1, 2, 3, 4, 5, 6};        /* [2,3] */
    static const double At[6] = {1, 4, 2, 5, 3, 6};       /* [3,2] */
    static const double Bm[6] = {7, 8, 9, 10, 11, 12};    /* [3,2] */
    static const double Bt[6] = {7, 9, 11, 8, 10, 12};    /* [2,3] */
    static const double C[4] = {58, 64, 139, 154};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            fx_t f;
            fx_init(&f);
            int a = fx_const(&f, IR_F32, 2, ta ? SH(3, 2) : SH(2, 3), ta ? At : A);
            int b = fx_const(&f, IR_F32, 2, tb ? SH(2, 3) : SH(3, 2), tb ? Bt : Bm);
            int y = ir_matmul(&f.g, a, b, ta, tb);
            CHECK(y >= 0 && f.g.t[y].ndim == 2 && f.g.t[y].shape[0] == 2 && f.g.t[y].shape[1] == 2);
            double **v = fx_eval(&f);
            check_vals(v[y], C, 4, "matmul");
            double fl, by;
            ir_ops[OP_MATMUL]->cost(&f.g, &f.g.t[y], &fl, &by);
            CHECK(fl == 2 * 2 * 2 * 3 && by == (6 + 6 + 4) * 4);
            fx_done(&f, v);
            fx_free(&f);
        }
    {
        /* a weight gradient's accumulation as pass_fuse makes it: bf16 inputs, 0.5 a·b added
         * in place onto an f32 buffer, which then holds the sum */
        static const double G[4] = {1, -2, 0.25, 8}, W[4] = {30, 30, 69.75, 85};
        fx_t f;
        fx_init(&f);
        int a = fx_const(&f, IR_BF16, 2, SH(2, 3), A), b = fx_const(&f, IR_BF16, 2, SH(3, 2), Bm);
        int buf = fx_const(&f, IR_F32, 2, SH(2, 2), G);
        int y = ir_node_dt(&f.g, OP_MATMUL, IR_F32, 3, (const int[]){a, b, buf}, (const int64_t[IR_MAX_PARAMS]){0, 0, 1},
                           (const double[IR_MAX_PARAMS]){0.5});
        CHECK(y >= 0);
        f.g.t[y].flags |= IR_FLAG_INPLACE;
        CHECK(ir_in_place(&f.g.t[y]) && ir_alias_src(&f.g.t[y]) == 2);
        double **v = fx_eval(&f);
        check_vals(v[y], W, 4, "in-place scaled matmul");
        CHECK(v[y] == v[buf]);
        fx_done(&f, v);
        fx_free(&f);
    }
    /* batched: batch 1 is batch 0 times 2 on a */
    fx_t f;
    fx_init(&f);
    double A2[12], B2[12];
    for (int i = 0; i < 6; i++) {
        A2[i] = A[i], A2[6 + i] = 2 * A[i];
        B2[i] = Bm[i], B2[6 + i] = Bm[i];
    }
    int a = fx_const(&f, IR_F64, 3, SH(2, 2, 3), A2), b = fx_const(&f, IR_F64, 3, SH(2, 3, 2), B2);
    int y = ir_matmul(&f.g, a, b, false, false);
    double **v = fx_eval(&f);
    static const double C2[8] = {58, 64, 139, 154, 116, 128, 278, 308};
    check_vals(v[y], C2, 8, "batched matmul");
    double fl, by;
    ir_ops[OP_MATMUL]->cost(&f.g, &f.g.t[y], &fl, &by);
    CHECK(fl == 2.0 * 2 * 2 * 2 * 3);
    fx_done(&f, v);
    fx_free(&f);
}

static void val_permute_slice_concat(void)
{
    fx_t f;
    fx_init(&f);
    double x[24];
    for (int i = 0; i < 24; i++)
        x[i] = i;
    int a = fx_const(&f, IR_F64, 3, SH(2, 3, 4), x);
    int p = ir_permute(&f.g, a, SH(2, 0, 1)); /* [4,2,3]: p[i][j][k] = a[j][k][i] */
    int s0 = ir_slice(&f.g, a, 1, 0, 1), s1 = ir_slice(&f.g, a, 1, 1, 2);
    int cc = ir_concat(&f.g, s0, s1, 1);
    int sb = ir_node(&f.g, OP_SLICE_BWD, 1, &s1, (const int64_t[IR_MAX_PARAMS]){1, 1, 2, 3}, NULL);
    int r = ir_reshape(&f.g, a, 2, SH(4, 6));
    CHECK(p >= 0 && f.g.t[p].shape[0] == 4 && f.g.t[p].shape[1] == 2 && f.g.t[p].shape[2] == 3);
    CHECK(s1 >= 0 && f.g.t[s1].shape[1] == 2 && cc >= 0 && ir_same_shape(&f.g.t[cc], &f.g.t[a]));
    double **v = fx_eval(&f);
    int bad = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++)
                bad += v[p][(i * 2 + j) * 3 + k] != x[(j * 3 + k) * 4 + i];
    CHECK_MSG(bad == 0, "permute: %d wrong", bad);
    check_vals(v[s1], (const double[]){4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23}, 16, "slice");
    check_vals(v[cc], x, 24, "slice/concat round trip");
    double want[24];
    for (int i = 0; i < 24; i++)
        want[i] = (i % 12) < 4 ? 0 : x[i];
    check_vals(v[sb], want, 24, "slice_bwd");
    CHECK(v[r] == v[a]); /* reshape aliases its input */
    fx_done(&f, v);
    fx_free(&f);
}

static void val_cast(void)
{
    static const double in[] = {0.1, 1.00390625, 1.01171875, 1 + 0x1p-11, 65519, 65520, 2.5, 3.5, -1.5, 1e10, -1e10};
    enum { N = sizeof in / sizeof in[0] };
    const ir_dtype_t dts[] = {IR_F32, IR_BF16, IR_F16, IR_I32, IR_F64};
    double want[5][N];
    for (int i = 0; i < N; i++) {
        want[0][i] = (double)(float)in[i];
        want[4][i] = in[i];
    }
    /* bf16: ulp 2^-7 at 1; ties to even */
    double bf[N] = {0.10009765625, 1.0, 1.015625, 1.0, 65536, 65536, 2.5, 3.5, -1.5, 9999220736.0, -9999220736.0};
    /* f16: ulp 2^-10 at 1; 65520 and above overflow */
    double hf[N] = {0.0999755859375, 1.00390625, 1.01171875, 1.0, 65504, INFINITY, 2.5, 3.5, -1.5, INFINITY, -INFINITY};
    double it[N] = {0, 1, 1, 1, 65519, 65520, 2, 4, -2, 2147483647.0, -2147483648.0};
    memcpy(want[1], bf, sizeof bf);
    memcpy(want[2], hf, sizeof hf);
    memcpy(want[3], it, sizeof it);
    for (int k = 0; k < 5; k++) {
        fx_t f;
        fx_init(&f);
        int a = fx_const(&f, IR_F64, 1, SH(N), in);
        int y = ir_cast(&f.g, a, dts[k]);
        CHECK(y >= 0 && f.g.t[y].dtype == dts[k]);
        double **v = fx_eval(&f);
        check_vals(v[y], want[k], N, ir_dtype_name(dts[k]));
        fx_done(&f, v);
        fx_free(&f);
    }
    /* the gradient of a cast comes back in the source's dtype */
    fx_t f;
    fx_init(&f);
    int a = fx_leaf(&f, IR_F32, 1, SH(4));
    int y = ir_sum(&f.g, ir_cast(&f.g, a, IR_BF16));
    int seed = ir_fill(&f.g, -1, 1.0, 0, NULL, IR_BF16), grad = -1;
    ft_err_t e;
    CHECK(pass_grad(&f.g, y, seed, &a, 1, &grad, &e) == 0);
    CHECK(grad >= 0 && f.g.t[grad].dtype == IR_F32 && ir_same_shape(&f.g.t[grad], &f.g.t[a]));
    fx_free(&f);
}

static void val_reductions_fill_silu(void)
{
    fx_t f;
    fx_init(&f);
    int a = fx_const(&f, IR_F64, 2, SH(2, 2), (const double[]){1, -2, 3, 6});
    int s = ir_sum(&f.g, a), m = ir_mean(&f.g, a), q = ir_node(&f.g, OP_SUMSQ, 1, &a, NULL, NULL);
    int f0 = ir_fill(&f.g, -1, 2.5, 1, SH(3), IR_F64), f1 = ir_fill(&f.g, s, 0.5, 2, SH(1, 2), IR_F64);
    int x = fx_const(&f, IR_F64, 1, SH(5), (const double[]){0, 800, -800, 1, -1});
    int si = ir_silu(&f.g, x);
    int hyper = fx_leaf(&f, IR_F32, 1, SH(IR_HYPER_COUNT));
    f.v[hyper][IR_HYPER_INV_NTOK] = 0.5;
    int gn = ir_node(&f.g, OP_GNORM, 2, (const int[]){q, hyper}, NULL, NULL);
    CHECK(s >= 0 && f.g.t[s].ndim == 0 && f.g.t[m].ndim == 0 && f.g.t[q].ndim == 0 && gn >= 0);
    double **v = fx_eval(&f);
    CHECK(v[s][0] == 8 && v[m][0] == 2 && v[q][0] == 50);
    check_vals(v[f0], (const double[]){2.5, 2.5, 2.5}, 3, "fill");
    check_vals(v[f1], (const double[]){4, 4}, 2, "fill from x");
    double s1 = 1 / (1 + exp(-1.0));
    check_vals(v[si], (const double[]){0, 800, -0.0, s1}, 4, "silu");
    CHECK_NEAR(v[si][4], -(1 - s1), 1e-15);
    CHECK_NEAR(v[gn][0], sqrt(50) * 0.5, 1e-15);
    fx_done(&f, v);
    fx_free(&f);
}

static void val_embed(void)
{
    fx_t f;
    fx_init(&f);
    double t[6] = {1, 2, 3, 4, 5, 6};
    int tab = fx_const(&f, IR_F64, 2, SH(3, 2), t);
    int ids = fx_const(&f, IR_I32, 1, SH(5), (const double[]){2, 3, 0, -1, 2});
    int y = ir_embed(&f.g, tab, ids);
    int dy = fx_const(&f, IR_F64, 2, SH(5, 2), (const double[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
    int bw = ir_node_dt(&f.g, OP_EMBED_BWD, IR_F64, 2, (const int[]){ids, dy}, (const int64_t[IR_MAX_PARAMS]){3}, NULL);
    CHECK(y >= 0 && f.g.t[y].ndim == 2 && f.g.t[y].shape[0] == 5 && f.g.t[y].shape[1] == 2);
    CHECK(bw >= 0 && f.g.t[bw].shape[0] == 3 && f.g.t[bw].shape[1] == 2);
    double **v = fx_eval(&f);
    CHECK(v[y][0] == 5 && v[y][1] == 6 && v[y][4] == 1 && v[y][5] == 2 && v[y][8] == 5 && v[y][9] == 6);
    CHECK(isnan(v[y][2]) && isnan(v[y][3]) && isnan(v[y][6]) && isnan(v[y][7])); /* ids 3 and -1 */
    check_vals(v[bw], (const double[]){5, 6, 0, 0, 1 + 9, 2 + 10}, 6, "embed_bwd");
    fx_done(&f, v);
    fx_free(&f);
    /* the table's gradient has the table's dtype */
    fx_init(&f);
    tab = fx_leaf(&f, IR_BF16, 2, SH(4, 2));
    ids = fx_const(&f, IR_I32, 1, SH(2), (const double[]){1, 1});
    y = ir_sum(&f.g, ir_embed(&f.g, tab, ids));
    int seed = ir_fill(&f.g, -1, 1.0, 0, NULL, IR_BF16), grad = -1;
    ft_err_t e;
    CHECK(pass_grad(&f.g, y, seed, &tab, 1, &grad, &e) == 0);
    CHECK(grad >= 0 && f.g.t[grad].op == OP_EMBED_BWD && f.g.t[grad].dtype == IR_BF16);
    fx_free(&f);
}

static void val_dropout(void)
{
    enum { N = 10000 };
    const double p = 0.3;
    fx_t f;
    fx_init(&f);
    int x = fx_leaf(&f, IR_F64, 1, SH(N));
    int rng = fx_const(&f, IR_I32, 1, SH(2), (const double[]){-5, 77});
    int d1 = ir_dropout(&f.g, x, rng, p, 3), d2 = ir_dropout(&f.g, x, rng, p, 3);
    int d3 = ir_dropout(&f.g, x, rng, p, 4), d0 = ir_dropout(&f.g, x, rng, 0.0, 3);
    double **v = fx_eval(&f);
    int kept = 0, same_salt = 0, other_salt = 0, scaled = 0, hash = 0;
    for (int i = 0; i < N; i++) {
        bool k = v[d1][i] != 0;
        kept += k;
        same_salt += v[d1][i] == v[d2][i];
        other_salt += k == (v[d3][i] != 0);
        scaled += !k || v[d1][i] == f.v[x][i] / (1 - p);
        double u = ir_dropout_uniform((uint32_t)-5, 77, 3, (uint64_t)i);
        hash += u >= 0 && u < 1 && (u >= p) == k;
    }
    CHECK(same_salt == N && scaled == N && hash == N);
    double mean = N * (1 - p), sigma = sqrt(N * p * (1 - p));
    CHECK_MSG(fabs(kept - mean) < 3 * sigma, "kept %d of %d, expected %.0f +- %.0f", kept, N, mean, 3 * sigma);
    CHECK_MSG(other_salt < N - 1000, "salts 3 and 4 agree on %d of %d", other_salt, N);
    check_vals(v[d0], f.v[x], N, "dropout p=0");
    CHECK(ir_dropout_uniform(1, 2, 3, 4) == ir_dropout_uniform(1, 2, 3, 4));
    CHECK(ir_dropout_uniform(1, 2, 3, 4) != ir_dropout_uniform(2, 1, 3, 4));
    fx_done(&f, v);
    fx_free(&f);
}

/* One AdamW step against the formula written out again, with and without clipping, decay
 * and bias correction at step t. */
static void adamw_case(double gnorm, double clip, int decay, int t)
{
    enum { N = 5 };
    fx_t f;
    fx_init(&f);
    int w = fx_leaf(&f, IR_F32, 1, SH(N)), g = fx_leaf(&f, IR_F32, 1, SH(N));
    int m = fx_leaf(&f, IR_F32, 1, SH(N)), v = fx_leaf(&f, IR_F32, 1, SH(N));
    for (int i = 0; i < N; i++)
        f.v[v][i] = fabs(f.v[v][i]) * 1e-3;
    double b1 = 0.9, b2 = 0.999, lr = 1e-2, wd = 0.1, eps = 1e-8, inv = 0.25;
    double hv[IR_HYPER_COUNT] = {[IR_HYPER_LR] = lr, [IR_HYPER_BETA1] = b1, [IR_HYPER_BETA2] = b2,
                                 [IR_HYPER_EPS] = eps, [IR_HYPER_WD] = wd, [IR_HYPER_BC1] = 1 - pow(b1, t),
                                 [IR_HYPER_BC2] = 1 - pow(b2, t), [IR_HYPER_INV_NTOK] = inv, [IR_HYPER_CLIP] = clip};
    int hyper = fx_const(&f, IR_F32, 1, SH(IR_HYPER_COUNT), hv);
    int gn = fx_const(&f, IR_F32, 0, NULL, &gnorm);
    int64_t ip[IR_MAX_PARAMS] = {decay};
    int y = ir_node(&f.g, OP_ADAMW, 6, (const int[]){w, g, m, v, hyper, gn}, ip, NULL);
    CHECK(y >= 0 && ir_same_shape(&f.g.t[y], &f.g.t[w]) && f.g.t[y].dtype == IR_F32);
    double w0[N], g0[N], m0[N], v0[N];
    memcpy(w0, f.v[w], sizeof w0);
    memcpy(g0, f.v[g], sizeof g0);
    memcpy(m0, f.v[m], sizeof m0);
    memcpy(v0, f.v[v], sizeof v0);
    double **vals = fx_eval(&f);
    CHECK(vals[y] == f.v[w]); /* updated in place */
    double coef = (clip > 0 && gnorm > clip) ? clip / (gnorm + 1e-6) : 1.0;
    for (int i = 0; i < N; i++) {
        double gr = g0[i] * inv * coef;
        double mi = b1 * m0[i] + (1 - b1) * gr, vi = b2 * v0[i] + (1 - b2) * gr * gr;
        double wi = w0[i] * (decay ? 1 - lr * wd : 1.0);
        wi -= lr * (mi / (1 - pow(b1, t))) / (sqrt(vi / (1 - pow(b2, t))) + eps);
        CHECK_NEAR(f.v[m][i], mi, 1e-14);
        CHECK_NEAR(f.v[v][i], vi, 1e-14);
        CHECK_NEAR(f.v[w][i], wi, 1e-14);
    }
    fx_done(&f, vals);
    fx_free(&f);
}

static void val_adamw_acc(void)
{
    adamw_case(0.5, 0.0, 1, 1);  /* no clipping configured */
    adamw_case(0.5, 1.0, 0, 3);  /* under the limit */
    adamw_case(4.0, 1.0, 1, 7);  /* clipped */
    adamw_case(4.0, 1.0, 0, 100);
    fx_t f;
    fx_init(&f);
    int buf = fx_const(&f, IR_F32, 1, SH(3), (const double[]){1, 2, 3});
    int x = fx_const(&f, IR_BF16, 1, SH(3), (const double[]){0.5, -2, 10});
    int y = ir_node(&f.g, OP_ACC, 2, (const int[]){buf, x}, NULL, NULL);
    CHECK(y >= 0 && f.g.t[y].dtype == IR_F32);
    double **v = fx_eval(&f);
    CHECK(v[y] == f.v[buf]);
    check_vals(f.v[buf], (const double[]){1.5, 0, 13}, 3, "acc");
    fx_done(&f, v);
    fx_free(&f);
}

/* ---- shape rules ---- */

typedef struct {
    const char *label;
    ir_op_t op;
    int nsrc;
    int leaf[IR_MAX_SRC]; /* indexes into the leaf list below */
    int64_t ip[IR_MAX_PARAMS];
    double fp[IR_MAX_PARAMS];
    const char *want; /* in the message besides the op name */
} bad_case_t;

static const struct {
    ir_dtype_t dt;
    int nd;
    int64_t s[4];
} leaves[] = {
    /* 0 */ {IR_F32, 2, {2, 3}},
    /* 1 */ {IR_F32, 2, {3, 2}},
    /* 2 */ {IR_F32, 2, {2, 4}},
    /* 3 */ {IR_BF16, 2, {2, 3}},
    /* 4 */ {IR_I32, 2, {2, 3}},
    /* 5 */ {IR_F32, 3, {2, 3, 4}},
    /* 6 */ {IR_F32, 3, {3, 4, 5}},
    /* 7 */ {IR_I32, 1, {2}},
    /* 8 */ {IR_I32, 1, {3}},
    /* 9 */ {IR_F32, 1, {IR_HYPER_COUNT}},
    /* 10 */ {IR_F32, 0, {0}},
    /* 11 */ {IR_F32, 1, {4}},
};

static void test_shape_errors(void)
{
    static const bad_case_t cases[] = {
        {"add shapes", OP_ADD, 2, {0, 1}, {0}, {0}, "differ in shape"},
        {"add dtypes", OP_ADD, 2, {0, 3}, {0}, {0}, "bf16"},
        {"mul ints", OP_MUL, 2, {4, 4}, {0}, {0}, "float"},
        {"matmul inner", OP_MATMUL, 2, {0, 0}, {0}, {0}, "contraction"},
        {"matmul inner tb", OP_MATMUL, 2, {0, 1}, {0, 1}, {0}, "contraction"},
        {"matmul ndim", OP_MATMUL, 2, {0, 5}, {0}, {0}, "3-D"},
        {"matmul batch", OP_MATMUL, 2, {5, 6}, {0}, {0}, "batch"},
        {"matmul flag", OP_MATMUL, 2, {0, 1}, {2, 0}, {0}, "0 or 1"},
        {"matmul scale flag", OP_MATMUL, 2, {0, 1}, {0, 1, 2}, {0.5}, "scale flag"},
        {"matmul scale", OP_MATMUL, 2, {0, 1}, {0, 1, 1}, {INFINITY}, "scale finite"},
        {"matmul addend shape", OP_MATMUL, 3, {0, 1, 0}, {0, 0}, {0}, "differ in shape"},
        {"matmul addend dtype", OP_MATMUL, 3, {3, 3, 0}, {0, 1}, {0}, "addend"},
        {"embed ids", OP_EMBED, 2, {0, 0}, {0}, {0}, "i32"},
        {"embed table", OP_EMBED, 2, {5, 7}, {0}, {0}, "2-D"},
        {"embed_bwd", OP_EMBED_BWD, 2, {7, 5}, {10}, {0}, "plus one"},
        {"reshape", OP_RESHAPE, 1, {0}, {2, 4, 2}, {0}, "element count"},
        {"permute dup", OP_PERMUTE, 1, {5}, {0, 0, 1}, {0}, "permutation"},
        {"permute range", OP_PERMUTE, 1, {5}, {0, 1, 3}, {0}, "permutation"},
        {"slice end", OP_SLICE, 1, {0}, {1, 2, 2}, {0}, "extent 3"},
        {"slice axis", OP_SLICE, 1, {0}, {2, 0, 1}, {0}, "axis"},
        {"slice_bwd len", OP_SLICE_BWD, 1, {0}, {1, 0, 2, 5}, {0}, "window"},
        {"concat", OP_CONCAT, 2, {0, 1}, {0}, {0}, "differ off axis"},
        {"concat dtype", OP_CONCAT, 2, {0, 3}, {0}, {0}, "bf16"},
        {"fill x", OP_FILL, 1, {0}, {1, 3}, {0}, "scalar"},
        {"fill dims", OP_FILL, 0, {0}, {5}, {0}, "dimensions"},
        {"dropout rng", OP_DROPOUT, 2, {0, 8}, {0}, {0.1}, "rng"},
        {"dropout p", OP_DROPOUT, 2, {0, 7}, {0}, {1.0}, "probability"},
        {"swiglu", OP_SWIGLU, 2, {0, 2}, {0}, {0}, "differ in shape"},
        {"swiglu_bwd_g", OP_SWIGLU_BWD_G, 3, {0, 0, 2}, {0}, {0}, "differ in shape"},
        {"silu ints", OP_SILU, 1, {4}, {0}, {0}, "float"},
        {"acc", OP_ACC, 2, {0, 1}, {0}, {0}, "differ in shape"},
        {"gnorm hyper", OP_GNORM, 2, {10, 11}, {0}, {0}, "hyper"},
        {"gnorm scalar", OP_GNORM, 2, {0, 9}, {0}, {0}, "scalar"},
        {"adamw g", OP_ADAMW, 6, {0, 1, 0, 0, 9, 10}, {0}, {0}, "differ in shape"},
        {"adamw gnorm", OP_ADAMW, 6, {0, 0, 0, 0, 9, 0}, {0}, {0}, "scalar"},
        {"adamw hyper", OP_ADAMW, 6, {0, 0, 0, 0, 11, 10}, {0}, {0}, "hyper"},
        {"sum ints", OP_SUM, 1, {4}, {0}, {0}, "float"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bad_case_t *c = &cases[k];
        ir_graph_t g;
        ir_graph_init(&g);
        int n = sizeof leaves / sizeof leaves[0];
        for (int i = 0; i < n; i++)
            ir_leaf(&g, "l", IR_INPUT, leaves[i].dt, leaves[i].nd, leaves[i].s);
        int src[IR_MAX_SRC];
        for (int i = 0; i < c->nsrc; i++)
            src[i] = c->leaf[i];
        /* a float output, so that each case trips on the mismatch it is about */
        ir_dtype_t dt = c->nsrc && g.t[src[0]].dtype != IR_I32 ? g.t[src[0]].dtype : IR_F32;
        int id = ir_node_dt(&g, c->op, dt, c->nsrc, src, c->ip, c->fp);
        CHECK_MSG(id == -1, "%s: accepted", c->label);
        CHECK_MSG(g.n == n, "%s: left a node behind", c->label);
        CHECK_MSG(strstr(g.err, ir_ops[c->op]->name) == g.err, "%s: error does not name the op: %s", c->label, g.err);
        CHECK_MSG(strstr(g.err, c->want) != NULL, "%s: '%s' lacks '%s'", c->label, g.err, c->want);
        ir_graph_free(&g);
    }
}

/* Accepted shapes that the refusals above sit next to. */
static void test_shapes_ok(void)
{
    ir_graph_t g;
    ir_graph_init(&g);
    int x = ir_leaf(&g, "x", IR_INPUT, IR_F32, 2, SH(6, 4)), w = ir_leaf(&g, "w", IR_TRAINABLE, IR_F32, 2, SH(5, 4));
    int y = ir_matmul(&g, x, w, false, true);
    CHECK(y >= 0 && g.t[y].shape[0] == 6 && g.t[y].shape[1] == 5);
    int ids = ir_leaf(&g, "ids", IR_INPUT, IR_I32, 3, SH(2, 3, 4));
    int e = ir_embed(&g, w, ids);
    CHECK(e >= 0 && g.t[e].ndim == 4 && g.t[e].shape[3] == 4);
    int sc = ir_fill(&g, -1, 1.0, 0, NULL, IR_F32);
    CHECK(sc >= 0 && g.t[sc].ndim == 0 && ir_numel(&g.t[sc]) == 1);
    int r = ir_reshape(&g, sc, 2, SH(1, 1));
    CHECK(r >= 0 && g.t[r].ndim == 2);
    int c = ir_concat(&g, x, x, 0);
    CHECK(c >= 0 && g.t[c].shape[0] == 12);
    CHECK(!g.err[0]);
    double fl, by;
    ir_ops[OP_ADD]->cost(&g, &g.t[ir_add(&g, x, x)], &fl, &by);
    CHECK(fl == 24 && by == 3 * 24 * 4);
    ir_ops[OP_RESHAPE]->cost(&g, &g.t[r], &fl, &by);
    CHECK(fl == 0 && by == 0);
    ft_err_t err;
    CHECK(ir_verify(&g, &err) == 0);
    ir_graph_free(&g);
}

int main(void)
{
    test_table();
    fd_matmul();
    fd_elementwise();
    fd_reshape_permute();
    fd_slice_concat();
    fd_reductions_fill();
    fd_dropout();
    fd_embed();
    fd_chain();
    val_matmul();
    val_permute_slice_concat();
    val_cast();
    val_reductions_fill_silu();
    val_embed();
    val_dropout();
    val_adamw_acc();
    test_shape_errors();
    test_shapes_ok();
    return CHECK_DONE();
}
