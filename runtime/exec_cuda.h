/* exec_cuda.h — the CUDA executor's entry points beyond exec.h: opening it on a graph and a
 * kernel module directly (the GPU tests build one-op graphs that are not plans), and
 * filling the whole arena (and the kernel scratch) with one byte (the tests poison it so
 * that an output a kernel forgets to write shows up as NaN). */
#ifndef FTC_EXEC_CUDA_H
#define FTC_EXEC_CUDA_H

#include "../codegen/codegen.h"
#include "exec.h"

/* g must be scheduled and memory-planned, and m built from it (one launch record per
 * scheduled node, in schedule order). Both must outlive the executor. */
int rt_exec_open_cuda_module(rt_exec_t *x, const ir_graph_t *g, const cg_module_t *m, ft_err_t *e);

/* Sets every byte of the arena and of the kernel scratch to `byte`; x must be a CUDA
 * executor. */
int rt_exec_cuda_fill(rt_exec_t *x, int byte, ft_err_t *e);

/* The cuBLASLt workspace: one fixed size, so the algorithm chosen at start-up stays valid.
 * A separate allocation for now; DESIGN.md wants it inside the arena. */
#define RT_CUDA_WORKSPACE_BYTES ((size_t)32 << 20)

#endif
