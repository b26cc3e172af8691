/* kernel_abi.h — the one argument block every generated CUDA kernel takes, by value. It is
 * read both by the host runtime (C) and by device code (CUDA C++, compiled by NVRTC), so it
 * uses only types both agree on. The runtime fills one per scheduled node at start-up from
 * the IR (arena pointers, shapes, op parameters); nothing is built per launch.
 *
 * `scratch` is the executor's scratch buffer, outside the arena: at least as many bytes as
 * the largest launch record's `scratch` field (codegen.h), 256-byte aligned, NULL when no
 * record asks for any. Every node sees the same buffer; nodes run one after another on one
 * stream, so a node owns all of it while it runs. Its contents are undefined when a node
 * starts: the nodes that use it (the two-stage reductions, codegen/emit.c) write it in
 * their first kernel and read it in their second, and leave nothing behind that the next
 * node relies on (no counters to keep at zero). Its first FTK_SCRATCH_HEAD bytes are a
 * header for small integers (a count of partials); the data starts after it. */
#ifndef FTC_KERNEL_ABI_H
#define FTC_KERNEL_ABI_H

#define FTK_MAX_IN 7
#define FTK_MAX_DIMS 4
#define FTK_MAX_PARAMS 8
#define FTK_OUT FTK_MAX_IN /* index of the output in shape[] / ndim[] / dtype[] */
#define FTK_SCRATCH_HEAD 256 /* bytes of scratch before a node's data */

typedef struct {
    void *in[FTK_MAX_IN];
    void *out;
    void *scratch;                               /* the executor's scratch buffer (see above) */
    long long n;                                 /* elements of the output */
    long long shape[FTK_MAX_IN + 1][FTK_MAX_DIMS]; /* inputs 0..5, then the output; unused dims 1 */
    int ndim[FTK_MAX_IN + 1];
    int dtype[FTK_MAX_IN + 1];                   /* ir_dtype_t values */
    long long ip[FTK_MAX_PARAMS];
    double fp[FTK_MAX_PARAMS];
} ftk_args_t;

#endif
