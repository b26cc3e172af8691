/* exec.h — what the training loop needs of an executor, whichever device runs the plan:
 * run a phase of the schedule, move a tensor's bytes in and out, and find the op that
 * made a NaN. The CPU reference executor (exec_cpu.c) and the CUDA executor (exec_cuda.c)
 * implement it. */
#ifndef FTC_EXEC_H
#define FTC_EXEC_H

#include "plan.h"

typedef struct rt_exec rt_exec_t;

typedef struct {
    const char *name; /* "cpu", "cuda" */
    int (*run)(rt_exec_t *x, ir_phase_t phase, ft_err_t *e);
    /* a tensor's storage bytes (ir_nbytes of it), in its own dtype */
    int (*read)(rt_exec_t *x, int id, void *dst, ft_err_t *e);
    int (*write)(rt_exec_t *x, int id, const void *src, ft_err_t *e);
    int (*zero)(rt_exec_t *x, int id, ft_err_t *e);
    /* Runs `phase` again checking every output; *node = the first one holding a NaN or
     * Inf, or -1. */
    int (*find_nonfinite)(rt_exec_t *x, ir_phase_t phase, int *node, ft_err_t *e);
    void (*destroy)(rt_exec_t *x);
    /* Optional (NULL on the CPU): device memory this process holds now and the most it has
     * held since the executor opened, as the device accounts it (arena, workspace, library
     * and CUDA-graph memory; not the context itself). */
    int (*device_mem)(rt_exec_t *x, int64_t *now, int64_t *peak, ft_err_t *e);
    /* Optional (NULL: the host computes the values): fills tensor `id` with the seeded
     * initialiser `kind` (a plan_init_t) exactly as rt_init_value does. */
    int (*init_random)(rt_exec_t *x, int id, int kind, double param, uint64_t seed, ft_err_t *e);
} rt_exec_ops_t;

struct rt_exec {
    const rt_exec_ops_t *ops;
    const ir_graph_t *g;
    int64_t arena_bytes; /* the one allocation of the step, as planned */
    double peak_flops;   /* the device's dense bf16 peak FLOP/s for MFU; 0 = unknown (the CPU, an
                            unlisted GPU: rt_gpu_peak_flops) */
    void *impl;
    char desc[256];      /* what runs the plan, for the start-up line; "" = the CPU reference executor */
    const char *profile; /* CUDA: append a per-node timing of each phase's third run to this file */
};

int rt_exec_open_cpu(rt_exec_t *x, const ir_graph_t *g, ft_err_t *e);
/* The CUDA executor on this process's GPU (device 0, or LOCAL_RANK) with the plan's kernel
 * module; fails with a clear message where the build has no CUDA toolkit, there is no GPU,
 * the plan has no module or its module is for another architecture. */
int rt_exec_open_cuda(rt_exec_t *x, const plan_t *p, ft_err_t *e);
void rt_exec_close(rt_exec_t *x);

/* Values of a tensor as float64, converted from/to its dtype on the host. */
int rt_exec_read_f64(rt_exec_t *x, int id, double *out, ft_err_t *e);
int rt_exec_write_f64(rt_exec_t *x, int id, const double *in, ft_err_t *e);

/* Storage conversions shared by every executor's host side. */
void rt_load_f64(ir_dtype_t dt, const void *src, int64_t n, double *out);
void rt_store_f64(ir_dtype_t dt, const double *in, int64_t n, void *dst);

#endif
