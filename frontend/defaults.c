/* defaults.c — the default value of every setting, and the HF names of the LoRA target
 * modules. Kept apart from the parser so the defaults read as one list; docs/spec.md
 * repeats them in its key table. */
#include "frontend.h"

#include <string.h>

const char *const ft_module_names[FT_MOD_COUNT] = {
    [FT_MOD_Q] = "q_proj",       [FT_MOD_K] = "k_proj",   [FT_MOD_V] = "v_proj",
    [FT_MOD_O] = "o_proj",       [FT_MOD_GATE] = "gate_proj", [FT_MOD_UP] = "up_proj",
    [FT_MOD_DOWN] = "down_proj",
};

void fe_config_defaults(ft_config_t *cfg)
{
    /* Zero everything first, padding and string tails included, so that two configs with
     * the same settings compare equal byte for byte (the text round trip relies on it). */
    memset(cfg, 0, sizeof *cfg);

    /* model: the sizes stay 0 until the spec or config.json gives them; head_dim 0 means
     * hidden / heads, derived by the model builder. */
    memcpy(cfg->family, "llama", sizeof "llama");
    cfg->max_seq = 2048;
    cfg->rope_theta = 10000.0;
    cfg->norm_eps = 1e-5;
    cfg->tie_embeddings = 0;
    cfg->rope_scaling = FT_ROPE_SCALING_NONE;
    cfg->init = FT_INIT_AUTO;
    cfg->init_seed = 0;
    cfg->init_std = 0.02;

    /* tuner */
    cfg->tuner = FT_TUNER_FULL;
    cfg->lora_rank = 8;
    cfg->lora_alpha = 16.0;
    cfg->lora_dropout = 0.0;
    cfg->lora_targets = 1u << FT_MOD_Q | 1u << FT_MOD_K | 1u << FT_MOD_V | 1u << FT_MOD_O;

    cfg->quant = FT_QUANT_NONE;

    /* train */
    cfg->seq_len = 512;
    cfg->micro_batch = 1;
    cfg->grad_accum = 1;
    cfg->steps = 100;
    cfg->lr = 2e-4;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->adam_eps = 1e-8;
    cfg->weight_decay = 0.0;
    cfg->grad_clip = 1.0;
    cfg->min_lr_ratio = 0.0;
    cfg->schedule = FT_SCHED_COSINE;
    cfg->warmup = 0;
    cfg->recompute = FT_RECOMPUTE_NONE;
    cfg->memory_budget = 0;
    cfg->dtype = FT_DTYPE_BF16;
    cfg->seed = 0;
    cfg->save_every = 0;
    cfg->log_every = 1;

    /* data */
    cfg->packing = 1;

    /* parallel */
    cfg->dp = 1;
    cfg->zero = 0;
    cfg->tp = 1;
}
