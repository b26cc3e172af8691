/* codegen.h — GPU code generation: the CUDA C source for a scheduled graph (one kernel
 * entry point per distinct op and dtype combination it uses, specialised from the
 * templates in codegen/kernels/), compiled ahead of time by NVRTC into one cubin per
 * target, plus one launch record per scheduled node. Matmuls are not kernels: the runtime
 * runs them through cuBLASLt from the node's shapes. */
#ifndef FTC_CODEGEN_H
#define FTC_CODEGEN_H

#include <stddef.h>
#include <stdint.h>

#include "../ir/ir.h"
#include "kernel_abi.h"

typedef enum {
    CG_NOP,    /* nothing to run: aliasing ops (reshape) share their input's bytes */
    CG_KERNEL, /* a generated kernel, launched with an ftk_args_t */
    CG_MATMUL, /* cuBLASLt */
    CG_KIND_COUNT
} cg_kind_t;

/* A node's launches: one kernel, or two run back to back on the same argument block (the
 * two-stage ops: a first kernel that spreads the work over the GPU and leaves partial
 * results in the executor's scratch buffer, then a second that combines them in a fixed
 * order; or, for embed_bwd, an index of the ids, then the sums). */
typedef struct {
    int node;                  /* graph id of the scheduled node */
    cg_kind_t kind;
    int kernel;                /* CG_KERNEL: index into cg_module_t.names */
    unsigned grid[3], block[3];
    unsigned smem;             /* dynamic shared memory bytes */
    int kernel2;               /* the second kernel, run right after the first; -1: none */
    unsigned grid2[3], block2[3];
    unsigned smem2;
    uint64_t scratch;          /* bytes of the executor's scratch buffer the kernels use (kernel_abi.h) */
} cg_launch_t;

typedef struct {
    char target[16];           /* "sm_90", "sm_80" */
    unsigned char *image;      /* cubin */
    size_t image_len;
    char **names;              /* kernel entry points in the image */
    int nnames;
    cg_launch_t *launch;       /* one per scheduled node, in schedule order */
    int nlaunch;
} cg_module_t;

#define CG_NAME_MAX 128 /* longest kernel entry point name, NUL included */

/* The launch kind of every node of op `op`: CG_NOP for leaves and reshapes, CG_MATMUL for
 * matmuls, CG_KERNEL for the rest (CG_KIND_COUNT for an op out of range). */
cg_kind_t cg_op_kind(ir_op_t op);

/* The CUDA source for g and target (sm_90 targets get the Hopper attention kernels);
 * deterministic: the same graph gives the same bytes. malloc'd. */
char *cg_emit_source(const ir_graph_t *g, const char *target, ft_err_t *e);

/* Emits, compiles (NVRTC, or the cache in cache_dir keyed by a hash of source, options
 * and NVRTC version; cache_dir NULL = no cache) and records the launches. */
int cg_build(const ir_graph_t *g, const char *target, const char *cache_dir, cg_module_t *m, ft_err_t *e);
void cg_module_free(cg_module_t *m);

#endif
