/* test_hf_oracle.c — our Llama against HF transformers, in float32, with no Python: the
 * fixtures in tests/fixtures/hf-oracle/ (written by tests/oracle/make_hf_fixture.py) hold two
 * tiny LlamaForCausalLM models (GQA, untied head; llama3 RoPE scaling, tied embeddings), a
 * PEFT LoRA adapter for each, one batch, and transformers' summed loss and gradients. Each
 * config is compiled in-process the way `ftc compile` does it (config, model_build,
 * pass_run_all, manifest), its weights loaded through the manifest, and one micro-batch run
 * on the CPU executor; the loss must agree to 1e-5 relative and every gradient to 1e-4
 * normwise. The same runs with train.recompute=full must give bit-identical results. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "frontend/frontend.h"
#include "models/models.h"
#include "passes/passes.h"
#include "runtime/exec.h"
#include "runtime/plan.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"

#define LOSS_RTOL 1e-5
#define GRAD_RTOL 1e-4

enum { B = 2, S = 16 };

/* The results of one run: the loss and every trainable weight's gradient, by name. */
typedef struct {
    double loss;
    int nrecompute; /* tensors the recompute pass cloned */
    int n;
    char (*name)[IR_NAME_MAX];
    double **grad;
    int64_t *numel;
} run_result_t;

static void result_free(run_result_t *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->grad[i]);
    free(r->grad);
    free(r->name);
    free(r->numel);
    memset(r, 0, sizeof *r);
}

static void fixture_dir(char *out, size_t cap, const char *config)
{
    const char *root = getenv("FTC_ROOT");
    char cwd[512];
    if (!root)
        root = getcwd(cwd, sizeof cwd) ? cwd : ".";
    snprintf(out, cap, "%s/tests/fixtures/hf-oracle/%s", root, config);
}

static int set(ft_config_t *c, ft_err_t *e, const char *fmt, ...) FT_PRINTF(3, 4);
static int set(ft_config_t *c, ft_err_t *e, const char *fmt, ...)
{
    char kv[FT_PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv, sizeof kv, fmt, ap);
    va_end(ap);
    return fe_override(c, kv, e);
}

/* The settings of one case: the model folder's config.json, then the training shape. */
static int make_config(ft_config_t *c, const char *dir, bool lora, bool recompute, ft_err_t *e)
{
    fe_config_defaults(c);
    if (set(c, e, "model.from=\"%s\"", dir) != 0 || fe_read_hf_config(dir, c, e) != 0)
        return -1;
    if (set(c, e, "tuner.kind=%s", lora ? "lora" : "full") != 0 || set(c, e, "train.seq_len=%d", S) != 0 ||
        set(c, e, "train.micro_batch=%d", B) != 0 || set(c, e, "train.grad_accum=1") != 0 ||
        set(c, e, "train.dtype=f32") != 0 || set(c, e, "data.train=\"unused.tok\"") != 0 ||
        set(c, e, "train.recompute=%s", recompute ? "full" : "none") != 0)
        return -1;
    if (lora && (set(c, e, "tuner.rank=4") != 0 || set(c, e, "tuner.alpha=8") != 0 ||
                 set(c, e, "tuner.targets=all") != 0 || set(c, e, "tuner.dropout=0") != 0 ||
                 set(c, e, "tuner.init=\"%s/adapter\"", dir) != 0))
        return -1;
    return fe_validate(c, e);
}

/* What `ftc compile` does after the config (tools/ftc.c: compile, resolve_manifest). */
static int compile_plan(plan_t *p, ft_err_t *e)
{
    snprintf(p->target, sizeof p->target, "cpu");
    ir_graph_init(&p->g);
    model_manifest_t m = {0};
    pass_ctx_t ctx = {.cfg = &p->cfg};
    int rc = model_build(&p->cfg, &p->g, &m, e);
    if (rc == 0)
        rc = pass_run_all(&p->g, &ctx, e);
    if (rc == 0) {
        p->w = m.w;
        p->nw = m.n;
        m.w = NULL;
        m.n = m.cap = 0;
        for (int i = 0; i < p->nw && rc == 0; i++) {
            p->w[i].tensor = ir_find(&p->g, p->w[i].key);
            if (p->w[i].tensor < 0)
                rc = ft_fail(e, "weight '%s' vanished from the graph", p->w[i].key);
        }
    }
    model_manifest_free(&m);
    return rc;
}

static int read_i32(const st_model_t *o, const char *name, int32_t *out, ft_err_t *e)
{
    const st_tensor_t *t = st_find(o, name);
    if (!t || t->dtype != ST_I32 || st_numel(t) != B * S)
        return ft_fail(e, "oracle: no I32 [%d,%d] tensor '%s'", B, S, name);
    memcpy(out, t->data, sizeof(int32_t) * B * S);
    return 0;
}

static int write_input(rt_exec_t *x, const char *name, const int32_t *v, ft_err_t *e)
{
    int id = ir_find(x->g, name);
    if (id < 0)
        return ft_fail(e, "the graph has no input '%s'", name);
    return x->ops->write(x, id, v, e);
}

/* Compiles and runs one micro-batch of the oracle's batch; collects loss and gradients. */
static int run_case(const char *dir, bool lora, bool recompute, const st_model_t *o, run_result_t *r, ft_err_t *e)
{
    memset(r, 0, sizeof *r);
    plan_t p;
    memset(&p, 0, sizeof p);
    if (make_config(&p.cfg, dir, lora, recompute, e) != 0 || compile_plan(&p, e) != 0) {
        plan_free(&p);
        return -1;
    }
    rt_exec_t x;
    memset(&x, 0, sizeof x);
    int32_t tokens[B * S], targets[B * S], pos[B * S], doc[B * S];
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++) {
            pos[b * S + s] = s; /* no packing: one document per row */
            doc[b * S + s] = b;
        }
    int rc = rt_exec_open_cpu(&x, &p.g, e);
    if (rc == 0)
        rc = rt_weights_init(&x, &p, e);
    if (rc == 0)
        rc = read_i32(o, "tokens", tokens, e) || read_i32(o, "targets", targets, e) ? -1 : 0;
    if (rc == 0)
        rc = write_input(&x, MODEL_IN_TOKENS, tokens, e) || write_input(&x, MODEL_IN_TARGETS, targets, e) ||
                     write_input(&x, MODEL_IN_POS, pos, e) || write_input(&x, MODEL_IN_DOC, doc, e)
                 ? -1
                 : 0;
    int rng = ir_find(&p.g, MODEL_IN_RNG);
    if (rc == 0 && rng >= 0)
        rc = x.ops->write(&x, rng, (const int32_t[]){0, 0}, e);
    int loss = ir_find(&p.g, "loss");
    if (rc == 0 && loss < 0)
        rc = ft_fail(e, "the graph has no 'loss'");
    if (rc == 0)
        rc = x.ops->run(&x, IR_PH_MICRO, e);
    if (rc == 0)
        rc = rt_exec_read_f64(&x, loss, &r->loss, e);
    if (rc == 0) {
        for (int i = 0; i < p.g.n; i++)
            r->nrecompute += (p.g.t[i].flags & IR_FLAG_RECOMPUTE) != 0;
        for (int i = 0; i < p.g.n; i++)
            r->n += p.g.t[i].role == IR_TRAINABLE;
        r->name = ft_xcalloc((size_t)r->n, sizeof *r->name);
        r->grad = ft_xcalloc((size_t)r->n, sizeof *r->grad);
        r->numel = ft_xcalloc((size_t)r->n, sizeof *r->numel);
        int k = 0;
        for (int i = 0; i < p.g.n; i++) {
            const ir_tensor_t *t = &p.g.t[i];
            if (t->role != IR_TRAINABLE)
                continue;
            if (t->grad < 0) {
                rc = ft_fail(e, "trainable '%s' has no gradient buffer", t->name);
                break;
            }
            const ir_tensor_t *gt = &p.g.t[t->grad];
            char want[IR_NAME_MAX + 8];
            snprintf(want, sizeof want, "grad:%s", t->name);
            if (strcmp(gt->name, want) != 0) {
                rc = ft_fail(e, "gradient buffer of '%s' is named '%s'", t->name, gt->name);
                break;
            }
            snprintf(r->name[k], sizeof r->name[k], "%s", t->name);
            r->numel[k] = ir_numel(gt);
            r->grad[k] = ft_xmalloc((size_t)r->numel[k] * sizeof(double));
            if (rt_exec_read_f64(&x, t->grad, r->grad[k], e) != 0) {
                rc = -1;
                break;
            }
            k++;
        }
    }
    rt_exec_close(&x);
    plan_free(&p);
    if (rc != 0)
        result_free(r);
    return rc;
}

static double oracle_scalar(const st_model_t *o, const char *name)
{
    const st_tensor_t *t = st_find(o, name);
    double v = NAN;
    ft_err_t e;
    if (!t || st_numel(t) != 1 || st_read_f64(t, &v, &e) != 0)
        fprintf(stderr, "oracle: no scalar '%s'\n", name);
    return v;
}

/* Ours against transformers: loss to LOSS_RTOL, every gradient normwise to GRAD_RTOL, and
 * the same set of gradients on both sides. */
static void compare_with_oracle(const char *label, const run_result_t *r, const st_model_t *o, const char *prefix)
{
    char key[IR_NAME_MAX + 32];
    snprintf(key, sizeof key, "%sloss_sum", prefix);
    double hf = oracle_scalar(o, key);
    snprintf(key, sizeof key, "%sloss_sum_f64", prefix);
    double hf64 = oracle_scalar(o, key);
    CHECK_MSG(fabs(r->loss - hf) <= LOSS_RTOL * fabs(hf), "%s: loss %.9g, transformers %.9g", label, r->loss, hf);
    CHECK_MSG(fabs(r->loss - hf64) <= LOSS_RTOL * fabs(hf64), "%s: loss %.9g, transformers (f64 sum) %.17g", label,
              r->loss, hf64);

    double worst = 0;
    const char *worst_name = "";
    int matched = 0;
    for (int i = 0; i < r->n; i++) {
        snprintf(key, sizeof key, "%sgrad:%s", prefix, r->name[i]);
        const st_tensor_t *t = st_find(o, key);
        CHECK_MSG(t != NULL, "%s: transformers has no gradient '%s'", label, key);
        if (!t)
            continue;
        CHECK_MSG(t->dtype == ST_F32 && st_numel(t) == r->numel[i], "%s: '%s' is %s of %lld values, ours %lld",
                  label, key, st_dtype_name(t->dtype), (long long)st_numel(t), (long long)r->numel[i]);
        if (st_numel(t) != r->numel[i])
            continue;
        double *hg = ft_xmalloc((size_t)r->numel[i] * sizeof *hg);
        ft_err_t e;
        if (st_read_f64(t, hg, &e) != 0) {
            CHECK_MSG(0, "%s: %s", label, e.msg);
            free(hg);
            continue;
        }
        double dd = 0, nn = 0;
        for (int64_t j = 0; j < r->numel[i]; j++) {
            double d = r->grad[i][j] - hg[j];
            dd += d * d;
            nn += hg[j] * hg[j];
        }
        free(hg);
        double rel = sqrt(dd) / sqrt(nn);
        CHECK_MSG(nn > 0, "%s: transformers' gradient '%s' is zero: the fixture tests nothing", label, key);
        CHECK_MSG(rel < GRAD_RTOL, "%s: gradient '%s' differs from transformers: |ours - hf| / |hf| = %.3g", label,
                  r->name[i], rel);
        if (rel > worst || !worst_name[0]) {
            worst = rel;
            worst_name = r->name[i];
        }
        matched++;
    }
    /* every gradient the oracle has is one of ours */
    char gp[32];
    snprintf(gp, sizeof gp, "%sgrad:", prefix);
    int in_oracle = 0;
    for (int i = 0; i < o->ntensors; i++)
        in_oracle += strncmp(o->tensors[i].name, gp, strlen(gp)) == 0;
    CHECK_MSG(matched == in_oracle, "%s: %d gradients matched, transformers has %d", label, matched, in_oracle);
    printf("%-24s loss %.9g (transformers %.9g, rel %.2g); %d gradients, worst %.2g (%s)\n", label, r->loss, hf,
           fabs(r->loss - hf) / fabs(hf), matched, worst, worst_name);
}

static bool same_bits(const double *a, const double *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* recompute=full re-runs the same ops on the same values: results equal bit for bit. */
static void compare_runs(const char *label, const run_result_t *a, const run_result_t *b)
{
    CHECK_MSG(a->nrecompute == 0 && b->nrecompute > 0, "%s: recompute none cloned %d tensors, full %d", label,
              a->nrecompute, b->nrecompute);
    CHECK_MSG(same_bits(&a->loss, &b->loss, 1), "%s: recompute full loss %.17g, none %.17g", label, b->loss, a->loss);
    CHECK_MSG(a->n == b->n, "%s: %d gradients with recompute full, %d without", label, b->n, a->n);
    int differ = 0;
    for (int i = 0; i < a->n && i < b->n; i++) {
        bool ok = strcmp(a->name[i], b->name[i]) == 0 && a->numel[i] == b->numel[i] &&
                  same_bits(a->grad[i], b->grad[i], a->numel[i]);
        CHECK_MSG(ok, "%s: gradient '%s' differs between recompute none and full", label, a->name[i]);
        differ += !ok;
    }
    printf("%-24s recompute full (%d tensors recomputed): %s\n", label, b->nrecompute,
           differ ? "DIFFERS" : "bit-identical");
}

static void check_config(const char *config)
{
    char dir[FT_PATH_MAX], path[FT_PATH_MAX + 32];
    fixture_dir(dir, sizeof dir, config);
    ft_path_join(path, sizeof path, dir, "oracle.safetensors");
    st_model_t o = {0};
    ft_err_t e;
    if (st_open(&o, path, &e) != 0) {
        CHECK_MSG(0, "%s", e.msg);
        return;
    }
    for (int lora = 0; lora <= 1; lora++) {
        char label[64];
        snprintf(label, sizeof label, "%s/%s", config, lora ? "lora" : "full");
        run_result_t plain, rec;
        if (run_case(dir, lora, false, &o, &plain, &e) != 0) {
            CHECK_MSG(0, "%s: %s", label, e.msg);
            continue;
        }
        compare_with_oracle(label, &plain, &o, lora ? "lora_" : "");
        if (run_case(dir, lora, true, &o, &rec, &e) != 0) {
            CHECK_MSG(0, "%s, recompute full: %s", label, e.msg);
        } else {
            compare_runs(label, &plain, &rec);
            result_free(&rec);
        }
        result_free(&plain);
    }
    st_close(&o);
}

int main(void)
{
    check_config("base");   /* GQA, rope_theta 1e4, untied LM head */
    check_config("llama3"); /* llama3 RoPE scaling, rope_theta 5e5, tied embeddings */
    return CHECK_DONE();
}
