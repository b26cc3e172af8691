/* models.h — model families as graph builders and tuners as graph rewrites. A builder
 * emits the forward graph of one micro-batch ending in the loss, with HF tensor names on
 * every weight, and a manifest saying where each weight's first value comes from. */
#ifndef FTC_MODELS_H
#define FTC_MODELS_H

#include "../frontend/config.h"
#include "../ir/ir.h"
#include "../runtime/plan.h"

typedef struct {
    plan_weight_t *w;
    int n, cap;
} model_manifest_t;

void model_manifest_add(model_manifest_t *m, const char *key, plan_init_t init, double param);
void model_manifest_free(model_manifest_t *m);

/* Names of the host inputs every model reads (shape [micro_batch, seq_len], i32) and the
 * random-number input (i32 [2]: seed, step counter) used by dropout. */
#define MODEL_IN_TOKENS "tokens"
#define MODEL_IN_TARGETS "targets"
#define MODEL_IN_POS "positions"
#define MODEL_IN_DOC "documents"
#define MODEL_IN_RNG "rng"
#define MODEL_IGNORE_INDEX (-100)

int64_t model_head_dim(const ft_config_t *cfg);

/* The whole front half of `ftc compile`: family builder, then the tuner's rewrite. */
int model_build(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, ft_err_t *e);

int model_llama_build(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, ft_err_t *e);
int model_lora_apply(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, ft_err_t *e);

/* "model.layers.3.self_attn.q_proj.weight" -> module index (ft_module_t), -1 if not a
 * linear projection of a decoder layer. */
int model_module_of(const char *weight_name);

#endif
