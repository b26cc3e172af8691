/* train.h — the training loop of ftrun. */
#ifndef FTC_TRAIN_H
#define FTC_TRAIN_H

#include "plan.h"

typedef struct {
    const char *out_dir;     /* metrics.jsonl, checkpoint, adapter or model; NULL = "run" */
    const char *resume_dir;  /* continue from <dir>/checkpoint.safetensors */
    const char *data_path;   /* overrides data.train */
    int64_t steps;           /* overrides train.steps when > 0 */
    int64_t stop_after;      /* stop (with a checkpoint) once this many steps are done; 0 = run to the end */
    bool eval_only;          /* report the loss on the first batch and exit */
    bool quiet;              /* no progress line (the JSON lines are still written) */
    bool no_save;            /* write no checkpoint and no trained weights, only metrics.jsonl
                                (benchmarks: a full fine-tune's checkpoint is many GiB) */
    const char *device;      /* "auto" (NULL), "cpu" or "cuda": see rt_device_choose in device.h */
    const char *dump_grads;  /* after the first step's micro-batches, before its optimizer phase: write
                                every gradient buffer (grad:<weight>, F32 sums over the step's target
                                tokens), loss_sum (F64 [1]) and target_tokens (I64 [1]) to this
                                safetensors file; NULL = no dump */
    const char *profile;     /* CUDA: time every node of the third step, launch by launch, and append
                                a line per node and a per-op summary to this file; NULL = off */
} rt_train_opts_t;

/* 0: done (or stopped as --stop-after asked); 1: interrupted by a signal, with a
 * checkpoint saved; -1: error. */
int rt_train(plan_t *p, const rt_train_opts_t *o, ft_err_t *e);

/* Learning rate at step s (0-based) for the configured schedule and warmup, as
 * transformers' get_{constant,linear,cosine}_schedule_with_warmup compute it. */
double rt_lr_at(const ft_config_t *c, int64_t step);

#endif
