/* kernel_abi.h — the one argument block every generated CUDA kernel takes, by value. It is
 * read both by the host runtime (C) and by device code (CUDA C++, compiled by NVRTC), so it
 * uses only types both agree on. The runtime fills one per scheduled node at start-up from
 * the IR (arena pointers, shapes, op parameters); nothing is built per launch. */
#ifndef FTC_KERNEL_ABI_H
#define FTC_KERNEL_ABI_H

#define FTK_MAX_IN 6
#define FTK_MAX_DIMS 4
#define FTK_MAX_PARAMS 8
#define FTK_OUT FTK_MAX_IN /* index of the output in shape[] / ndim[] / dtype[] */

typedef struct {
    void *in[FTK_MAX_IN];
    void *out;
    long long n;                                 /* elements of the output */
    long long shape[FTK_MAX_IN + 1][FTK_MAX_DIMS]; /* inputs 0..5, then the output; unused dims 1 */
    int ndim[FTK_MAX_IN + 1];
    int dtype[FTK_MAX_IN + 1];                   /* ir_dtype_t values */
    long long ip[FTK_MAX_PARAMS];
    double fp[FTK_MAX_PARAMS];
} ftk_args_t;

#endif
