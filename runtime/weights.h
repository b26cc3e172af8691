/* weights.h — giving every weight its first value (from safetensors, a PEFT adapter or a
 * seeded initialiser), checkpoints, and the trained result written in HF/PEFT formats. */
#ifndef FTC_WEIGHTS_H
#define FTC_WEIGHTS_H

#include "exec.h"
#include "plan.h"

/* Value i of a seeded initialiser (normal std `param`, uniform bound `param`, ones, zeros)
 * from a tensor's seed (rt_init_seed: the run's seed mixed with the tensor's name). The GPU
 * executor's init kernel computes the same bits. */
double rt_init_value(plan_init_t kind, double param, uint64_t seed, int64_t i);
uint64_t rt_init_seed(uint64_t seed, const char *name);
/* The n values of that initialiser stored in dtype dt at dst; nthreads (0 = one per CPU, at
 * most 32; a tensor under 2^20 values uses one) changes nothing but the time. Returns the
 * number of threads used. */
int rt_init_fill(plan_init_t kind, double param, uint64_t seed, ir_dtype_t dt, void *dst, int64_t n, int nthreads);
/* rt_init_fill into a host buffer, then into tensor id through the executor. */
int rt_init_host(rt_exec_t *x, int id, plan_init_t kind, double param, uint64_t seed, ft_err_t *e);

/* Fills every manifest weight; gradient buffers and optimizer state start at zero. */
int rt_weights_init(rt_exec_t *x, const plan_t *p, ft_err_t *e);

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
