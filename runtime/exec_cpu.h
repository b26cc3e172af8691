/* exec_cpu.h — the CPU reference executor: runs a plan's schedule over one host arena laid
 * out exactly as the memory planner said, with each op's float64 reference. */
#ifndef FTC_EXEC_CPU_H
#define FTC_EXEC_CPU_H

#include "exec.h"

typedef struct {
    const ir_graph_t *g;
    unsigned char *arena;    /* g->arena_bytes, 256-byte aligned */
    int64_t arena_bytes;
    double *scratch;         /* float64 views of one node's inputs and output */
    int64_t scratch_len;
    int guard;               /* check every output for NaN/Inf (slow; used to locate one) */
    int bad_node;            /* first node that produced a non-finite value, -1 if none */
} rt_cpu_t;

int rt_cpu_init(rt_cpu_t *x, const ir_graph_t *g, ft_err_t *e);
void rt_cpu_free(rt_cpu_t *x);

/* Runs every scheduled node of `phase`, in order. With guard on, stops at the first node
 * whose output holds a NaN or Inf and returns -1 (bad_node names it). */
int rt_cpu_run(rt_cpu_t *x, ir_phase_t phase);
void *rt_cpu_ptr(const rt_cpu_t *x, int id);

#endif
