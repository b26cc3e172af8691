/* lora.c — the LoRA tuner as a graph rewrite: every projection y = x·Wᵀ whose module is a
 * target becomes y = x·Wᵀ + (alpha/r) · dropout(x)·Aᵀ·Bᵀ, with A [r, in] and B [out, r]
 * trainable and W frozen. The new weights are named with their PEFT keys
 * (base_model.model.<module>.lora_A.weight), so the adapter is written out as they are. */
#include <math.h>
#include <string.h>

#include "models.h"

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

static int rewrite_one(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, int mm)
{
    int x = g->t[mm].src[0];
    int wsrc = g->t[mm].src[1];
    char module[IR_NAME_MAX];
    snprintf(module, sizeof module, "%s", g->t[mm].name);
    int64_t out = g->t[mm].shape[1];
    int64_t in = g->t[x].shape[1];
    int64_t r = cfg->lora_rank;
    ir_dtype_t dt = g->t[wsrc].dtype;
    int n_before = g->n;
    int saved_block = g->cur_block;
    g->cur_block = g->t[mm].block;
    /* PEFT's default: A kaiming-uniform with a = sqrt(5), i.e. bound 1/sqrt(in); B zero */
    int a = adapter_weight(g, m, cfg, module, "lora_A", r, in, PLAN_INIT_UNIFORM, 1.0 / sqrt((double)in));
    int b = adapter_weight(g, m, cfg, module, "lora_B", out, r, PLAN_INIT_ZEROS, 0);
    if (dt != IR_F32) {
        a = ir_cast(g, a, dt);
        b = ir_cast(g, b, dt);
    }
    int xin = x;
    if (cfg->lora_dropout > 0)
        xin = ir_dropout(g, x, ir_find(g, MODEL_IN_RNG), cfg->lora_dropout, name_salt(module));
    /* the scale goes on the rank-r side: r columns to scale instead of `out`, forward and back */
    int t = ir_matmul(g, xin, a, false, true);
    int s = ir_scale(g, t, cfg->lora_alpha / (double)r);
    int u = ir_matmul(g, s, b, false, true);
    int y = ir_add(g, mm, u);
    g->cur_block = saved_block;
    if (y < 0)
        return -1;
    ir_set_name(g, y, "%s.lora_out", module);
    redirect(g, mm, y, n_before);
    return 0;
}

int model_lora_apply(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, ft_err_t *e)
{
    int n0 = g->n;
    int done = 0;
    for (int i = 0; i < n0; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->op != OP_MATMUL)
            continue;
        /* the weight may be read through a cast: find the leaf */
        int w = t->src[1];
        if (g->t[w].op == OP_CAST)
            w = g->t[w].src[0];
        int mod = g->t[w].op == OP_LEAF ? model_module_of(g->t[w].name) : -1;
        if (mod < 0 || !(cfg->lora_targets & (1u << mod)))
            continue;
        if (rewrite_one(cfg, g, m, i) != 0)
            return ft_fail(e, "lora: %s", g->err);
        done++;
    }
    if (done == 0)
        return ft_fail(e, "lora: no projection matches the targets");
    return ir_toposort(g, e);
}
