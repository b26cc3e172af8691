/* validate.c — range and consistency checks over a finished ft_config_t, and the refusal of
 * settings this build does not implement yet. Every message starts with the dotted key it
 * is about (fe_parse_file relies on that to point at the spec line that set it). Checks are
 * written as !(x > 0) and the like so that NaN fails them too. */
#include "frontend.h"

#include <math.h>
#include <string.h>

static int size_set(const char *key, int64_t v, ft_err_t *e)
{
    if (v > 0)
        return 0;
    if (v == 0)
        return ft_fail(e, "%s is not set (give it in the spec, or read it from config.json with model.from)", key);
    return ft_fail(e, "%s must be positive, got %lld", key, (long long)v);
}

static int model_sizes(const ft_config_t *c, ft_err_t *e)
{
    if (size_set("model.vocab", c->vocab, e) || size_set("model.hidden", c->hidden, e) ||
        size_set("model.layers", c->layers, e) || size_set("model.heads", c->heads, e) ||
        size_set("model.kv_heads", c->kv_heads, e) || size_set("model.ffn", c->ffn, e) ||
        size_set("model.max_seq", c->max_seq, e))
        return -1;
    if (c->head_dim < 0)
        return ft_fail(e, "model.head_dim must be 0 (hidden / heads) or positive, got %lld", (long long)c->head_dim);
    if (c->head_dim == 0 && c->hidden % c->heads != 0)
        return ft_fail(e, "model.heads (%lld) does not divide model.hidden (%lld); give model.head_dim",
                       (long long)c->heads, (long long)c->hidden);
    if (c->heads % c->kv_heads != 0)
        return ft_fail(e, "model.kv_heads (%lld) must divide model.heads (%lld)", (long long)c->kv_heads,
                       (long long)c->heads);
    return 0;
}

static int rope(const ft_config_t *c, ft_err_t *e)
{
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return ft_fail(e, "model.rope_theta must be positive, got %g", c->rope_theta);
    if (c->rope_scaling == FT_ROPE_SCALING_NONE)
        return 0;
    if (!(c->rope_factor > 0) || !isfinite(c->rope_factor))
        return ft_fail(e, "model.rope_factor must be positive with rope_scaling, got %g", c->rope_factor);
    if (c->rope_scaling != FT_ROPE_SCALING_LLAMA3)
        return 0;
    if (!(c->rope_low_freq_factor > 0))
        return ft_fail(e, "model.rope_low_freq_factor must be positive, got %g", c->rope_low_freq_factor);
    if (!(c->rope_high_freq_factor > c->rope_low_freq_factor) || !isfinite(c->rope_high_freq_factor))
        return ft_fail(e, "model.rope_high_freq_factor (%g) must exceed model.rope_low_freq_factor (%g)",
                       c->rope_high_freq_factor, c->rope_low_freq_factor);
    if (c->rope_original_max_pos <= 0)
        return ft_fail(e, "model.rope_original_max_pos must be positive with rope_scaling llama3, got %lld",
                       (long long)c->rope_original_max_pos);
    return 0;
}

static int model(const ft_config_t *c, ft_err_t *e)
{
    if (strcmp(c->family, "llama") != 0 && strcmp(c->family, "mistral") != 0 && strcmp(c->family, "yi") != 0)
        return ft_fail(e, "model.family '%s' is not supported (supported: llama, mistral, yi)", c->family);
    if (model_sizes(c, e) != 0 || rope(c, e) != 0)
        return -1;
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return ft_fail(e, "model.norm_eps must be positive, got %g", c->norm_eps);
    if (c->init == FT_INIT_FILE && !c->from[0])
        return ft_fail(e, "model.init file needs model.from (the folder with the weights)");
    if (!(c->init_std >= 0) || !isfinite(c->init_std))
        return ft_fail(e, "model.init_std must be non-negative, got %g", c->init_std);
    return 0;
}

static int tuner(const ft_config_t *c, ft_err_t *e)
{
    if (c->tuner != FT_TUNER_FULL && c->tuner != FT_TUNER_LORA)
        return ft_fail(e, "tuner.kind has an unknown value %d", (int)c->tuner);
    if (!(c->lora_dropout >= 0 && c->lora_dropout < 1))
        return ft_fail(e, "tuner.dropout must be in [0, 1), got %g", c->lora_dropout);
    if (c->tuner == FT_TUNER_FULL) {
        if (c->lora_init[0])
            return ft_fail(e, "tuner.init (a PEFT adapter) needs tuner lora");
        return 0;
    }
    if (c->lora_rank < 1)
        return ft_fail(e, "tuner.rank must be at least 1 for lora, got %lld", (long long)c->lora_rank);
    if (!(c->lora_alpha > 0) || !isfinite(c->lora_alpha))
        return ft_fail(e, "tuner.alpha must be positive, got %g", c->lora_alpha);
    if (c->lora_targets == 0 || c->lora_targets >> FT_MOD_COUNT)
        return ft_fail(e, "tuner.targets must name at least one of q k v o gate up down");
    return 0;
}

static int quantize(const ft_config_t *c, ft_err_t *e)
{
    if (c->quant == FT_QUANT_NONE)
        return 0;
    if (c->quant == FT_QUANT_NF4)
        return ft_fail(e, "quantize.base: quantize base nf4 is not supported by this build yet (use none)");
    if (c->quant == FT_QUANT_INT8)
        return ft_fail(e, "quantize.base: quantize base int8 is not supported by this build yet (use none)");
    return ft_fail(e, "quantize.base has an unknown value %d", (int)c->quant);
}

static int at_least(const char *key, int64_t v, int64_t min, ft_err_t *e)
{
    if (v >= min)
        return 0;
    return ft_fail(e, "%s must be at least %lld, got %lld", key, (long long)min, (long long)v);
}

static int train_counts(const ft_config_t *c, ft_err_t *e)
{
    if (at_least("train.seq_len", c->seq_len, 1, e) || at_least("train.micro_batch", c->micro_batch, 1, e) ||
        at_least("train.grad_accum", c->grad_accum, 1, e) || at_least("train.steps", c->steps, 1, e) ||
        at_least("train.warmup", c->warmup, 0, e) || at_least("train.memory_budget", c->memory_budget, 0, e) ||
        at_least("train.save_every", c->save_every, 0, e) || at_least("train.log_every", c->log_every, 1, e))
        return -1;
    if (c->seq_len > c->max_seq)
        return ft_fail(e, "train.seq_len (%lld) exceeds model.max_seq (%lld)", (long long)c->seq_len,
                       (long long)c->max_seq);
    /* warmup longer than the run is allowed, as in transformers: a short smoke run of a
     * long recipe should not need its warmup edited too */
    return 0;
}

static int train_optimizer(const ft_config_t *c, ft_err_t *e)
{
    if (!(c->lr > 0) || !isfinite(c->lr))
        return ft_fail(e, "train.lr must be positive, got %g", c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return ft_fail(e, "train.betas must both be in [0, 1), got %g %g", c->beta1, c->beta2);
    if (!(c->adam_eps > 0) || !isfinite(c->adam_eps))
        return ft_fail(e, "train.eps must be positive, got %g", c->adam_eps);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        return ft_fail(e, "train.weight_decay must be non-negative, got %g", c->weight_decay);
    if (!(c->grad_clip >= 0) || !isfinite(c->grad_clip))
        return ft_fail(e, "train.grad_clip must be non-negative (0 = off), got %g", c->grad_clip);
    if (!(c->min_lr_ratio >= 0 && c->min_lr_ratio <= 1))
        return ft_fail(e, "train.min_lr_ratio must be in [0, 1], got %g", c->min_lr_ratio);
    if ((unsigned)c->schedule > FT_SCHED_COSINE)
        return ft_fail(e, "train.schedule has an unknown value %d", (int)c->schedule);
    if ((unsigned)c->recompute > FT_RECOMPUTE_AUTO)
        return ft_fail(e, "train.recompute has an unknown value %d", (int)c->recompute);
    if (c->dtype != FT_DTYPE_F32 && c->dtype != FT_DTYPE_BF16)
        return ft_fail(e, "train.dtype has an unknown value %d", (int)c->dtype);
    return 0;
}

static int data(const ft_config_t *c, ft_err_t *e)
{
    if (!c->data_train[0])
        return ft_fail(e, "data.train is not set (the token file to train on)");
    return 0;
}

static int parallel(const ft_config_t *c, ft_err_t *e)
{
    if (at_least("parallel.dp", c->dp, 1, e) || at_least("parallel.tp", c->tp, 1, e))
        return -1;
    if (c->zero < 0 || c->zero > 3)
        return ft_fail(e, "parallel.zero must be 0, 1, 2 or 3, got %lld", (long long)c->zero);
    if (c->dp > 1)
        return ft_fail(e, "parallel.dp %lld: data parallelism is not supported by this build yet (use 1)",
                       (long long)c->dp);
    if (c->tp > 1)
        return ft_fail(e, "parallel.tp %lld: tensor parallelism is not supported by this build yet (use 1)",
                       (long long)c->tp);
    if (c->zero > 0)
        return ft_fail(e, "parallel.zero %lld: ZeRO sharding is not supported by this build yet (use 0)",
                       (long long)c->zero);
    return 0;
}

int fe_validate(const ft_config_t *c, ft_err_t *e)
{
    if (model(c, e) || tuner(c, e) || quantize(c, e) || train_counts(c, e) || train_optimizer(c, e) ||
        data(c, e) || parallel(c, e))
        return -1;
    return 0;
}
