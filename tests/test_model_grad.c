/* test_model_grad.c — the whole Llama graph, differentiated by the autodiff pass, against
 * central finite differences in float64: LoRA (with dropout) and full fine-tuning, GQA,
 * packed documents and ignored targets, with and without per-layer recompute. The
 * graph the model builder makes is widened to float64 so the check is exact to 1e-6. */
#include "check.h"
#include "fdcheck.h"
#include "frontend/frontend.h"
#include "models/models.h"

static void build_config(ft_config_t *c, const char *tuner, const char *recompute)
{
    fe_config_defaults(c);
    const char *kv[] = {
        "model.vocab=32", "model.hidden=16", "model.layers=2", "model.heads=4", "model.kv_heads=2", "model.ffn=24",
        "model.max_seq=64", "model.init=random", "train.seq_len=8", "train.micro_batch=2", "train.dtype=f32",
        "data.train=unused.tok", "tuner.rank=2", "tuner.alpha=6", "tuner.targets=all", "tuner.dropout=0.25",
    };
    ft_err_t e;
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++)
        if (fe_override(c, kv[i], &e) != 0)
            fprintf(stderr, "override %s: %s\n", kv[i], e.msg);
    /* "lora0": LoRA without dropout, where targets sharing an input share one A product */
    char k[64];
    snprintf(k, sizeof k, "tuner.kind=%s", strcmp(tuner, "lora0") == 0 ? "lora" : tuner);
    CHECK(fe_override(c, k, &e) == 0);
    if (strcmp(tuner, "lora0") == 0)
        CHECK(fe_override(c, "tuner.dropout=0", &e) == 0);
    snprintf(k, sizeof k, "train.recompute=%s", recompute);
    CHECK(fe_override(c, k, &e) == 0);
}

/* packed rows: three documents in row 0, two in row 1; some targets ignored */
static void fill_inputs(const ir_graph_t *g, double **vals)
{
    static const int doc[16] = {0, 0, 0, 1, 1, 2, 2, 2, 5, 5, 5, 5, 6, 6, 6, 6};
    int pos = 0;
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->op != OP_LEAF)
            continue;
        int64_t n = ir_numel(t);
        vals[i] = fd_random_values(n, 0.5);
        for (int64_t j = 0; j < n; j++) {
            if (strcmp(t->name, MODEL_IN_TOKENS) == 0)
                vals[i][j] = (double)((j * 7 + 3) % 32);
            else if (strcmp(t->name, MODEL_IN_TARGETS) == 0)
                vals[i][j] = j % 5 == 4 ? MODEL_IGNORE_INDEX : (double)((j * 11 + 1) % 32);
            else if (strcmp(t->name, MODEL_IN_DOC) == 0)
                vals[i][j] = doc[j];
            else if (strcmp(t->name, MODEL_IN_POS) == 0) {
                pos = (j % 8 == 0 || doc[j] != doc[j - 1]) ? 0 : pos + 1;
                vals[i][j] = pos;
            } else if (strcmp(t->name, MODEL_IN_RNG) == 0)
                vals[i][j] = (double)(j + 7);
            else if (t->role == IR_GRAD || t->role == IR_OPTSTATE)
                vals[i][j] = 0;
            else if (strstr(t->name, "layernorm") || strstr(t->name, "norm.weight"))
                vals[i][j] = 1.0 + 0.3 * fd_rand();
        }
    }
}

static void widen_to_f64(ir_graph_t *g)
{
    for (int i = 0; i < g->n; i++)
        if (g->t[i].dtype == IR_F32)
            g->t[i].dtype = IR_F64;
}

static void check_model(const char *tuner, const char *recompute)
{
    ft_config_t c;
    build_config(&c, tuner, recompute);
    ir_graph_t g;
    ir_graph_init(&g);
    model_manifest_t m = {0};
    ft_err_t e;
    CHECK_MSG(model_build(&c, &g, &m, &e) == 0, "%s", e.msg);
    widen_to_f64(&g);
    int loss = ir_find(&g, "loss");
    CHECK(loss >= 0);
    double **vals = calloc((size_t)g.n, sizeof *vals);
    fill_inputs(&g, vals);
    int nchecked = 0;
    for (int i = 0; i < g.n; i++) {
        if (g.t[i].role != IR_TRAINABLE)
            continue;
        /* each check appends a backward graph: start from a fresh copy every time */
        ir_graph_t work;
        ir_graph_copy(&work, &g);
        char label[160];
        snprintf(label, sizeof label, "%s/%s: %s", tuner, recompute, g.t[i].name);
        double err = fd_check(&work, loss, &i, 1, vals, label);
        CHECK_MSG(err < 1e-6, "%s: %.3g", label, err);
        ir_graph_free(&work);
        nchecked++;
    }
    CHECK(nchecked > 0);
    for (int i = 0; i < g.n; i++)
        if (g.t[i].op == OP_LEAF)
            free(vals[i]);
    free(vals);
    model_manifest_free(&m);
    ir_graph_free(&g);
}

/* The full pass pipeline on the same graphs: the autodiff pass, recompute, DCE and the
 * scheduler must leave the loss's gradient unchanged. */
static void check_pipeline_grads_match(void)
{
    static const char *const modes[3] = {"none", "full", "selective"};
    double first[3] = {0, 0, 0};
    int clones[3] = {0, 0, 0}, attn_clones[3] = {0, 0, 0};
    for (int r = 0; r < 3; r++) {
        ft_config_t c;
        build_config(&c, "full", modes[r]);
        ir_graph_t g;
        ir_graph_init(&g);
        model_manifest_t m = {0};
        ft_err_t e;
        pass_ctx_t ctx = {.cfg = &c};
        CHECK(model_build(&c, &g, &m, &e) == 0);
        CHECK_MSG(pass_run_all(&g, &ctx, &e) == 0, "%s", e.msg);
        for (int i = 0; i < g.n; i++)
            if (g.t[i].flags & IR_FLAG_RECOMPUTE) {
                clones[r]++;
                attn_clones[r] += g.t[i].op == OP_ATTN || g.t[i].op == OP_ATTN_LSE;
            }
        widen_to_f64(&g);
        double **vals = calloc((size_t)g.n, sizeof *vals);
        fd_rng_ = 12345;
        fill_inputs(&g, vals);
        CHECK(ir_eval_f64(&g, vals, &e) == 0);
        int gb = ir_find(&g, "grad:model.layers.0.self_attn.q_proj.weight");
        CHECK(gb >= 0);
        double s = 0;
        for (int64_t j = 0; gb >= 0 && j < ir_numel(&g.t[gb]); j++)
            s += vals[gb][j] * (double)(j % 7 - 3);
        first[r] = s;
        ir_eval_free(&g, vals);
        for (int i = 0; i < g.n; i++)
            if (g.t[i].op == OP_LEAF)
                free(vals[i]);
        free(vals);
        model_manifest_free(&m);
        ir_graph_free(&g);
    }
    CHECK_MSG(first[0] == first[1] && first[0] == first[2] && first[0] != 0,
              "recompute changed a gradient: none %.17g, full %.17g, selective %.17g", first[0], first[1], first[2]);
    /* selective recomputes less than full, and never attention */
    CHECK_MSG(clones[0] == 0 && clones[2] > 0 && clones[2] < clones[1] && attn_clones[1] > 0 && attn_clones[2] == 0,
              "clones: none %d, full %d (%d attention), selective %d (%d attention)", clones[0], clones[1],
              attn_clones[1], clones[2], attn_clones[2]);
}

/* What the fuse pass made, counted over the live nodes. */
typedef struct {
    int mm_add;     /* matmuls with an addend, out of place */
    int mm_scaled;  /* matmuls with alpha != 1 */
    int mm_inplace; /* matmuls accumulating into their addend's storage (weight gradients) */
    int lse, dkv;   /* attn writing its statistics; attn_bwd computing dk and dv */
    int acc, scale; /* what stays unfused of those */
    int slice;      /* LoRA without dropout: the shared A product's share per module */
    int norm_add;   /* rmsnorm_bwd_x adding the residual stream's gradient */
} fused_t;

/* Runs the pipeline with or without the fuse pass and returns the graph's float64 values.
 * hopper: bf16 at head dim 64 for target sm_90, where attention's dk and dv fuse too. */
static double **pipeline_values(ir_graph_t *g, const char *tuner, bool hopper, bool fuse, fused_t *nf)
{
    ft_config_t c;
    build_config(&c, tuner, "full");
    ft_err_t oe;
    if (hopper)
        CHECK(fe_override(&c, "model.hidden=256", &oe) == 0 && fe_override(&c, "train.dtype=bf16", &oe) == 0);
    ir_graph_init(g);
    model_manifest_t m = {0};
    ft_err_t e;
    pass_ctx_t ctx = {.cfg = &c, .target = hopper ? "sm_90" : "cpu"};
    CHECK(model_build(&c, g, &m, &e) == 0);
    for (const pass_t *p = pass_pipeline; p->name; p++)
        if (fuse || strcmp(p->name, "fuse") != 0)
            CHECK_MSG(p->run(g, &ctx, &e) == 0, "%s: %s", p->name, e.msg);
    memset(nf, 0, sizeof *nf);
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        bool inplace = t->op == OP_MATMUL && (t->flags & IR_FLAG_INPLACE);
        nf->mm_inplace += inplace;
        nf->mm_add += t->op == OP_MATMUL && t->nsrc == 3 && !inplace;
        nf->mm_scaled += t->op == OP_MATMUL && ir_matmul_alpha(t) != 1.0;
        /* attention statistics: every attn_lse folded into its attn, which writes them */
        nf->lse += t->op == OP_ATTN && t->nsrc == 5;
        nf->dkv += t->op == OP_ATTN_BWD && t->ip[0] == 3;
        nf->acc += t->op == OP_ACC;
        nf->scale += t->op == OP_SCALE;
        nf->slice += t->op == OP_SLICE;
        nf->norm_add += t->op == OP_RMSNORM_BWD_X && t->nsrc == 4;
        /* recompute full: weights' small derived values (adapter casts) are kept, not redone */
        CHECK_MSG(!(t->flags & IR_FLAG_RECOMPUTE) || t->op != OP_CAST || g->t[t->src[0]].op != OP_LEAF,
                  "%s: '%s' recomputes a cast of a weight", tuner, t->name);
        CHECK_MSG(!inplace || (t->nsrc == 3 && g->t[t->src[2]].role == IR_GRAD && t->dtype == IR_F32),
                  "%s: in-place matmul '%s' does not accumulate into an f32 gradient", tuner, t->name);
        CHECK_MSG(!fuse || !hopper || g->t[i].op != OP_ATTN_BWD || g->t[i].ip[0] == 3 || g->t[i].ip[0] == 0,
                  "%s: attn_bwd '%s' (ip %lld) left beside the fused one", tuner, g->t[i].name,
                  (long long)g->t[i].ip[0]);
        CHECK_MSG(!fuse || g->t[i].op != OP_ATTN_LSE, "%s: attn_lse '%s' left after fusion", tuner, g->t[i].name);
    }
    widen_to_f64(g);
    double **vals = calloc((size_t)g->n, sizeof *vals);
    fd_rng_ = 777;
    fill_inputs(g, vals);
    CHECK(ir_eval_f64(g, vals, &e) == 0);
    model_manifest_free(&m);
    return vals;
}

static void free_values(ir_graph_t *g, double **vals)
{
    ir_eval_free(g, vals);
    for (int i = 0; i < g->n; i++)
        if (g->t[i].op == OP_LEAF)
            free(vals[i]);
    free(vals);
    ir_graph_free(g);
}

/* pass_fuse folds adds into matmuls (beta = 1), scales into matmuls (alpha), weight
 * gradients' accumulation into the matmuls that make them (in place), attention statistics
 * into the forward and, for sm_90, attention's dk and dv into one node: the loss and every
 * gradient must stay what the unfused graph computes, up to float64 reassociation. */
static void check_fuse_matches(const char *tuner, bool hopper)
{
    ir_graph_t g0, g1;
    fused_t f0, f1;
    double **v0 = pipeline_values(&g0, tuner, hopper, false, &f0), **v1 = pipeline_values(&g1, tuner, hopper, true, &f1);
    bool lora = strncmp(tuner, "lora", 4) == 0, shared = strcmp(tuner, "lora0") == 0;
    CHECK_MSG(f0.mm_add + f0.mm_scaled + f0.mm_inplace + f0.lse + f0.dkv + f0.norm_add == 0 && f0.acc > 0,
              "%s: fused something without the pass", tuner);
    CHECK_MSG(f1.lse > 0 && f1.mm_add > 0 && (f1.dkv > 0) == hopper && f1.mm_inplace > 0 && f1.norm_add > 0 &&
                  (f1.mm_scaled > 0) == lora,
              "%s%s: with the pass %d matmul adds, %d scaled, %d in place, %d norm adds, %d attention statistics, "
              "%d dk+dv",
              tuner, hopper ? " sm_90" : "", f1.mm_add, f1.mm_scaled, f1.mm_inplace, f1.norm_add, f1.lse, f1.dkv);
    /* LoRA with dropout: every trainable weight's gradient comes from a matmul, and every
     * scale is the adapters' alpha/r on a product; without dropout the shared A products'
     * gradients are sliced, and their backward scale applies to a sum of slices */
    CHECK_MSG(f1.acc + f1.mm_inplace == f0.acc && (!lora || shared || (f1.acc == 0 && f1.scale == 0)) &&
                  (!shared || (f1.acc > 0 && f1.scale > 0 && f1.scale < f0.scale)) && (f1.slice > 0) == shared,
              "%s: %d accumulations left of %d (%d in place), %d scales left of %d, %d slices", tuner, f1.acc,
              f0.acc, f1.mm_inplace, f1.scale, f0.scale, f1.slice);
    CHECK_MSG(g1.n < g0.n, "%s: fusing left %d nodes of %d", tuner, g1.n, g0.n);
    int compared = 0;
    for (int i = 0; i < g0.n; i++) {
        const ir_tensor_t *t = &g0.t[i];
        if (!(t->flags & IR_FLAG_LOSS) && t->role != IR_GRAD)
            continue;
        int j = ir_find(&g1, t->name);
        CHECK_MSG(j >= 0, "%s: '%s' missing after fusion", tuner, t->name);
        if (j < 0)
            continue;
        double d = 0, ref = 0;
        for (int64_t k = 0; k < ir_numel(t); k++) {
            d += (v0[i][k] - v1[j][k]) * (v0[i][k] - v1[j][k]);
            ref += v0[i][k] * v0[i][k];
        }
        CHECK_MSG(d <= 1e-24 * ref, "%s: '%s' differs after fusion: %.3g relative", tuner, t->name,
                  ref > 0 ? sqrt(d / ref) : sqrt(d));
        compared++;
    }
    CHECK(compared > 4);
    free_values(&g0, v0);
    free_values(&g1, v1);
}

int main(void)
{
    check_model("lora", "none");
    check_model("full", "none");
    check_model("lora", "full");
    check_model("lora", "selective");
    check_model("lora0", "none");
    check_pipeline_grads_match();
    check_fuse_matches("lora", false);
    check_fuse_matches("full", false);
    check_fuse_matches("lora", true);
    check_fuse_matches("lora0", false);
    check_fuse_matches("lora0", true);
    check_fuse_matches("full", true);
    return CHECK_DONE();
}
