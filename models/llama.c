/* llama.c — the Llama family (Llama 2, 3, 3.1, 3.2, Mistral without sliding window, Yi):
 * token embedding, pre-norm decoder layers of grouped-query attention with rotary
 * embeddings and a SwiGLU MLP, a final RMSNorm and the LM head, then the summed
 * cross-entropy over target tokens. Weight names are HF's, so safetensors load by name. */
#include <math.h>
#include <string.h>

#include "models.h"

typedef struct {
    const ft_config_t *cfg;
    ir_graph_t *g;
    model_manifest_t *m;
    ir_dtype_t dt;  /* compute dtype */
    bool train_all; /* full fine-tuning */
    int64_t B, S, N, D, Dh;
    int pos, doc;
} llama_t;

int64_t model_head_dim(const ft_config_t *cfg)
{
    return cfg->head_dim > 0 ? cfg->head_dim : cfg->hidden / (cfg->heads > 0 ? cfg->heads : 1);
}

/* A weight leaf with its manifest entry; returns the tensor the forward pass reads (a
 * cast of the f32 master copy where trainable weights are kept in f32). */
static int weight(llama_t *L, const char *name, int ndim, const int64_t *shape, bool is_norm)
{
    const ft_config_t *cfg = L->cfg;
    ir_role_t role = L->train_all ? IR_TRAINABLE : IR_FROZEN;
    ir_dtype_t store = role == IR_TRAINABLE ? IR_F32 : L->dt;
    int id = ir_leaf(L->g, name, role, store, ndim, shape);
    bool from_file = cfg->from[0] && cfg->init != FT_INIT_RANDOM;
    if (from_file)
        model_manifest_add(L->m, name, PLAN_INIT_FILE, 0);
    else if (is_norm)
        model_manifest_add(L->m, name, PLAN_INIT_ONES, 0);
    else
        model_manifest_add(L->m, name, PLAN_INIT_NORMAL, cfg->init_std);
    return store == L->dt ? id : ir_cast(L->g, id, L->dt);
}

static int linear(llama_t *L, int x, const char *module, int64_t out, int64_t in)
{
    char name[IR_NAME_MAX];
    snprintf(name, sizeof name, "%s.weight", module);
    int w = weight(L, name, 2, (int64_t[]){out, in}, false);
    int y = ir_matmul(L->g, x, w, false, true);
    ir_set_name(L->g, y, "%s", module);
    return y;
}

static int norm(llama_t *L, int x, const char *wname)
{
    int w = weight(L, wname, 1, (int64_t[]){L->D}, true);
    int y = ir_rmsnorm(L->g, x, w, L->cfg->norm_eps);
    /* "model.norm.weight" -> "model.norm": the value is named after its module */
    ir_set_name(L->g, y, "%.*s", (int)(strlen(wname) - 7), wname);
    return y;
}

static int rope(llama_t *L, int x)
{
    const ft_config_t *c = L->cfg;
    int64_t ip[3] = {0, (int64_t)c->rope_scaling, c->rope_original_max_pos};
    double fp[4] = {c->rope_theta, c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor};
    return ir_rope(L->g, x, L->pos, ip, fp);
}

static int attention(llama_t *L, int x, int layer)
{
    const ft_config_t *c = L->cfg;
    ir_graph_t *g = L->g;
    char mod[IR_NAME_MAX];
    int64_t hq = c->heads, hkv = c->kv_heads;
    int proj[3];
    const char *names[3] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; i++) {
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.%s", layer, names[i]);
        int64_t heads = i == 0 ? hq : hkv;
        int y = linear(L, x, mod, heads * L->Dh, L->D);
        proj[i] = ir_reshape(g, y, 4, (int64_t[]){L->B, L->S, heads, L->Dh});
        ir_set_name(g, proj[i], "%s.heads", mod);
    }
    int q = rope(L, proj[0]);
    int k = rope(L, proj[1]);
    ir_set_name(g, q, "model.layers.%d.self_attn.q_rope", layer);
    ir_set_name(g, k, "model.layers.%d.self_attn.k_rope", layer);
    int a = ir_attn(g, q, k, proj[2], L->doc, 1.0 / sqrt((double)L->Dh));
    ir_set_name(g, a, "model.layers.%d.self_attn.attn", layer);
    a = ir_reshape(g, a, 2, (int64_t[]){L->N, hq * L->Dh});
    snprintf(mod, sizeof mod, "model.layers.%d.self_attn.o_proj", layer);
    return linear(L, a, mod, L->D, hq * L->Dh);
}

static int mlp(llama_t *L, int x, int layer)
{
    char mod[IR_NAME_MAX];
    int64_t F = L->cfg->ffn;
    snprintf(mod, sizeof mod, "model.layers.%d.mlp.gate_proj", layer);
    int gate = linear(L, x, mod, F, L->D);
    snprintf(mod, sizeof mod, "model.layers.%d.mlp.up_proj", layer);
    int up = linear(L, x, mod, F, L->D);
    int h = ir_swiglu(L->g, gate, up);
    ir_set_name(L->g, h, "model.layers.%d.mlp.act", layer);
    snprintf(mod, sizeof mod, "model.layers.%d.mlp.down_proj", layer);
    return linear(L, h, mod, L->D, F);
}

static int decoder_layer(llama_t *L, int h, int layer)
{
    char name[IR_NAME_MAX];
    L->g->cur_block = layer;
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", layer);
    int a = attention(L, norm(L, h, name), layer);
    h = ir_add(L->g, h, a);
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", layer);
    int m = mlp(L, norm(L, h, name), layer);
    h = ir_add(L->g, h, m);
    ir_set_name(L->g, h, "model.layers.%d.out", layer);
    L->g->cur_block = -1;
    return h;
}

int model_llama_build(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, ft_err_t *e)
{
    llama_t L = {.cfg = cfg, .g = g, .m = m};
    L.dt = cfg->dtype == FT_DTYPE_BF16 ? IR_BF16 : IR_F32;
    L.train_all = cfg->tuner == FT_TUNER_FULL;
    L.B = cfg->micro_batch;
    L.S = cfg->seq_len;
    L.N = L.B * L.S;
    L.D = cfg->hidden;
    L.Dh = model_head_dim(cfg);
    if (L.B <= 0 || L.S <= 0 || L.D <= 0 || cfg->vocab <= 0 || cfg->layers <= 0 || cfg->heads <= 0 ||
        cfg->kv_heads <= 0 || cfg->ffn <= 0)
        return ft_fail(e, "llama: model sizes are missing (vocab, hidden, layers, heads, kv_heads, ffn)");
    int64_t bs[2] = {L.B, L.S};
    int tokens = ir_leaf(g, MODEL_IN_TOKENS, IR_INPUT, IR_I32, 2, bs);
    int targets = ir_leaf(g, MODEL_IN_TARGETS, IR_INPUT, IR_I32, 2, bs);
    L.pos = ir_leaf(g, MODEL_IN_POS, IR_INPUT, IR_I32, 2, bs);
    L.doc = ir_leaf(g, MODEL_IN_DOC, IR_INPUT, IR_I32, 2, bs);
    ir_leaf(g, MODEL_IN_RNG, IR_INPUT, IR_I32, 1, (int64_t[]){2});

    int emb = weight(&L, "model.embed_tokens.weight", 2, (int64_t[]){cfg->vocab, L.D}, false);
    int h = ir_embed(g, emb, ir_reshape(g, tokens, 1, (int64_t[]){L.N}));
    ir_set_name(g, h, "model.embed_tokens");
    for (int l = 0; l < cfg->layers; l++)
        h = decoder_layer(&L, h, (int)l);
    h = norm(&L, h, "model.norm.weight");
    int logits;
    if (cfg->tie_embeddings) {
        logits = ir_matmul(g, h, emb, false, true);
        ir_set_name(g, logits, "lm_head");
    } else {
        logits = linear(&L, h, "lm_head", cfg->vocab, L.D);
    }
    int loss = ir_xent(g, logits, ir_reshape(g, targets, 1, (int64_t[]){L.N}), MODEL_IGNORE_INDEX);
    if (loss < 0)
        return ft_fail(e, "llama: %s", g->err);
    ir_set_name(g, loss, "loss");
    g->t[loss].flags |= IR_FLAG_LOSS | IR_FLAG_OUTPUT;
    return 0;
}
