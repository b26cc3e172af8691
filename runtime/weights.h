/* weights.h — giving every weight its first value (from safetensors, a PEFT adapter or a
 * seeded initialiser), checkpoints, and the trained result written in HF/PEFT formats. */
#ifndef FTC_WEIGHTS_H
#define FTC_WEIGHTS_H

#include "exec.h"
#include "plan.h"

/* Fills every manifest weight; gradient buffers and optimizer state start at zero. */
int rt_weights_init(rt_exec_t *x, const plan_t *p, ft_err_t *e);

/* The seeded initialisers (normal: param = std; uniform: bound; ones; zeros): the n values
 * of the tensor called `name` under `seed`, stored in dtype `dt` at dst. The stream depends
 * only on the seed, the name and the value's index, so nthreads (0 = one per CPU, at most
 * 32; a tensor under 2^20 values uses one) changes nothing but the time. Returns the number
 * of threads used. */
int rt_init_fill(plan_init_t kind, double param, uint64_t seed, const char *name, ir_dtype_t dt, void *dst, int64_t n,
                 int nthreads);

/* <dir>/checkpoint.safetensors: trainable weights, AdamW moments, step and the plan's
 * fingerprint; written atomically. */
int rt_ckpt_save(const char *dir, rt_exec_t *x, const plan_t *p, int64_t step, ft_err_t *e);
int rt_ckpt_load(const char *dir, rt_exec_t *x, const plan_t *p, int64_t *step, ft_err_t *e);

/* LoRA: <dir>/adapter_model.safetensors + adapter_config.json (PEFT). Full fine-tuning:
 * <dir>/model.safetensors + config.json (HF). Both atomic. */
int rt_export(const char *dir, rt_exec_t *x, const plan_t *p, ft_err_t *e);

/* Folds a PEFT LoRA adapter into its base model: W += (lora_alpha / r) · B·A for every
 * adapted module, written as float32 HF safetensors with the base's config.json. */
int rt_merge_lora(const char *base_dir, const char *adapter_dir, const char *out_dir, ft_err_t *e);

#endif
