/* lora.c — the LoRA tuner as a graph rewrite: every projection y = x·Wᵀ whose module is a
 * target becomes y = x·Wᵀ + (alpha/r) · dropout(x)·Aᵀ·Bᵀ, with A [r, in] and B [out, r]
 * trainable and W frozen (targets sharing x without dropout share one A product). The new
 * weights are named with their PEFT keys (base_model.model.<module>.lora_A.weight), so the
 * adapter is written out as they are. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models.h"

/* the most projections one input feeds (q, k, v; gate, up) */
#define LORA_GROUP_MAX 4

/* salt for a module's dropout mask: a hash of its name, so masks differ per module */
static int64_t name_salt(const char *s)
{
    return (int64_t)(ft_fnv1a(FT_FNV_INIT, s, strlen(s)) & 0x7fffffff);
}

/* Replaces every use of `old` by `new` in nodes other than `except`. */
static void redirect(ir_graph_t *g, int old, int new_id, int except_from)
{
    for (int i = 0; i < except_from; i++)
        for (int s = 0; s < g->t[i].nsrc; s++)
            if (g->t[i].src[s] == old)
                g->t[i].src[s] = new_id;
}

static int adapter_weight(ir_graph_t *g, model_manifest_t *m, const ft_config_t *cfg, const char *module,
                          const char *which, int64_t rows, int64_t cols, plan_init_t init, double param)
{
    char key[IR_NAME_MAX];
    /* names longer than a tensor name holds are cut; HF module names are far shorter */
    snprintf(key, sizeof key, "base_model.model.%.60s.%.8s.weight", module, which);
    int id = ir_leaf(g, key, IR_TRAINABLE, IR_F32, 2, (int64_t[]){rows, cols});
    model_manifest_add(m, key, cfg->lora_init[0] ? PLAN_INIT_ADAPTER : init, param);
    return id;
}

/* Rewrites the projections mms[0..n) (targets reading the same input x, n >= 1; n > 1 only
 * without dropout, whose masks differ per module). Their A products are one matmul,
 * x·[A_1; ...; A_n]ᵀ, then sliced per module: x (16k × 4096 at 8B) is read once for q, k and
 * v instead of three times, forward and back, where it dominates these rank-r products; the
 * backward's A gradients and x's share from the adapters are one matmul each likewise. */
static int rewrite_group(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, const int *mms, int n)
{
    int x = g->t[mms[0]].src[0];
    int64_t in = g->t[x].shape[1], r = cfg->lora_rank;
    ir_dtype_t dt = g->t[g->t[mms[0]].src[1]].dtype;
    int n_before = g->n;
    int saved_block = g->cur_block;
    g->cur_block = g->t[mms[0]].block;
    char module[LORA_GROUP_MAX][IR_NAME_MAX];
    int a_cat = -1, b[LORA_GROUP_MAX];
    for (int k = 0; k < n; k++) {
        snprintf(module[k], IR_NAME_MAX, "%s", g->t[mms[k]].name);
        int64_t out = g->t[mms[k]].shape[1];
        /* PEFT's default: A kaiming-uniform with a = sqrt(5), i.e. bound 1/sqrt(in); B zero */
        int a = adapter_weight(g, m, cfg, module[k], "lora_A", r, in, PLAN_INIT_UNIFORM, 1.0 / sqrt((double)in));
        b[k] = adapter_weight(g, m, cfg, module[k], "lora_B", out, r, PLAN_INIT_ZEROS, 0);
        if (dt != IR_F32) {
            a = ir_cast(g, a, dt);
            b[k] = ir_cast(g, b[k], dt);
        }
        a_cat = k == 0 ? a : ir_concat(g, a_cat, a, 0);
    }
    int xin = x;
    if (cfg->lora_dropout > 0)
        xin = ir_dropout(g, x, ir_find(g, MODEL_IN_RNG), cfg->lora_dropout, name_salt(module[0]));
    /* the scale goes on the rank-r side: r columns to scale instead of `out`, forward and back */
    int t = ir_matmul(g, xin, a_cat, false, true);
    int s = ir_scale(g, t, cfg->lora_alpha / (double)r);
    int rc = 0;
    for (int k = 0; k < n && rc == 0; k++) {
        int sk = n > 1 ? ir_slice(g, s, 1, k * r, r) : s;
        int y = ir_add(g, mms[k], ir_matmul(g, sk, b[k], false, true));
        if (y < 0) {
            rc = -1;
            break;
        }
        ir_set_name(g, y, "%s.lora_out", module[k]);
        redirect(g, mms[k], y, n_before);
    }
    g->cur_block = saved_block;
    return rc;
}

/* The projection whose weight (read through a cast or not) is a LoRA target, or -1. */
static bool is_target(const ft_config_t *cfg, const ir_graph_t *g, int i)
{
    const ir_tensor_t *t = &g->t[i];
    if (t->op != OP_MATMUL)
        return false;
    int w = t->src[1];
    if (g->t[w].op == OP_CAST)
        w = g->t[w].src[0];
    int mod = g->t[w].op == OP_LEAF ? model_module_of(g->t[w].name) : -1;
    return mod >= 0 && (cfg->lora_targets & (1u << mod));
}

int model_lora_apply(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, ft_err_t *e)
{
    int n0 = g->n;
    bool *done = ft_xcalloc((size_t)(n0 ? n0 : 1), sizeof *done);
    int found = 0, rc = 0;
    for (int i = 0; i < n0 && rc == 0; i++) {
        if (done[i] || !is_target(cfg, g, i))
            continue;
        int group[LORA_GROUP_MAX] = {i}, n = 1;
        for (int j = i + 1; j < n0 && n < LORA_GROUP_MAX && cfg->lora_dropout == 0; j++)
            if (!done[j] && g->t[j].src[0] == g->t[i].src[0] && is_target(cfg, g, j))
                group[n++] = j;
        for (int k = 0; k < n; k++)
            done[group[k]] = true;
        found += n;
        if (rewrite_group(cfg, g, m, group, n) != 0)
            rc = ft_fail(e, "lora: %s", g->err);
    }
    free(done);
    if (rc != 0)
        return rc;
    if (found == 0)
        return ft_fail(e, "lora: no projection matches the targets");
    return ir_toposort(g, e);
}
