/* config.h — the training job's settings: what a spec file (plus -s overrides, plus an HF
 * config.json) says. One struct, filled by the frontend, read by every later stage and
 * stored in plan.bin as canonical `block.key=value` text. */
#ifndef FTC_CONFIG_H
#define FTC_CONFIG_H

#include <stdint.h>

#include "../common/common.h"

#define FT_PATH_MAX 1024

typedef enum { FT_TUNER_FULL, FT_TUNER_LORA } ft_tuner_t;
typedef enum { FT_QUANT_NONE, FT_QUANT_NF4, FT_QUANT_INT8 } ft_quant_t;
typedef enum { FT_SCHED_CONSTANT, FT_SCHED_LINEAR, FT_SCHED_COSINE } ft_sched_t;
typedef enum { FT_RECOMPUTE_NONE, FT_RECOMPUTE_FULL, FT_RECOMPUTE_SELECTIVE, FT_RECOMPUTE_AUTO } ft_recompute_t;
typedef enum { FT_ROPE_SCALING_NONE, FT_ROPE_SCALING_LLAMA3, FT_ROPE_SCALING_LINEAR } ft_rope_scaling_t;
typedef enum { FT_INIT_AUTO, FT_INIT_FILE, FT_INIT_RANDOM } ft_init_t; /* auto: file when `from` is set */
typedef enum { FT_DTYPE_F32, FT_DTYPE_BF16 } ft_dtype_t;

/* LoRA target modules, HF names; bit i of lora_targets is module i. */
typedef enum {
    FT_MOD_Q, FT_MOD_K, FT_MOD_V, FT_MOD_O, FT_MOD_GATE, FT_MOD_UP, FT_MOD_DOWN, FT_MOD_COUNT
} ft_module_t;
extern const char *const ft_module_names[FT_MOD_COUNT]; /* "q_proj", ... "down_proj" */

typedef struct {
    /* model */
    char family[32];          /* "llama" (also mistral, yi: same graph) */
    char from[FT_PATH_MAX];   /* HF model folder, resolved against the spec's folder; "" = none */
    int64_t vocab, hidden, layers, heads, kv_heads, ffn, head_dim, max_seq;
    double rope_theta, norm_eps;
    int tie_embeddings;
    ft_rope_scaling_t rope_scaling;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_pos;
    ft_init_t init;
    uint64_t init_seed;
    double init_std;

    /* tuner */
    ft_tuner_t tuner;
    int64_t lora_rank;
    double lora_alpha, lora_dropout;
    unsigned lora_targets;             /* bitmask over ft_module_t */
    char lora_init[FT_PATH_MAX];       /* PEFT adapter folder to start from; "" = default init */

    /* quantize */
    ft_quant_t quant;

    /* train */
    int64_t seq_len, micro_batch, grad_accum, steps;
    double lr, beta1, beta2, adam_eps, weight_decay, grad_clip, min_lr_ratio;
    ft_sched_t schedule;
    int64_t warmup;
    ft_recompute_t recompute;
    int64_t memory_budget;             /* bytes, 0 = unlimited */
    ft_dtype_t dtype;                  /* compute dtype of activations and frozen weights */
    uint64_t seed;                     /* data order, dropout and LoRA init */
    int64_t save_every, log_every;

    /* data */
    char data_train[FT_PATH_MAX];      /* resolved against the spec's folder */
    int packing;

    /* parallel */
    int64_t dp, zero, tp;

    /* where it came from */
    char spec_path[FT_PATH_MAX];
} ft_config_t;

#endif
