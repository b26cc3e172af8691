/* device.h — finding out whether a CUDA GPU is usable, without linking the driver, and
 * choosing the executor that runs a plan: the CUDA one where a GPU is present and the plan
 * carries kernels for its architecture, the CPU reference executor otherwise. */
#ifndef FTC_DEVICE_H
#define FTC_DEVICE_H

#include <stdbool.h>

#include "../codegen/codegen.h"
#include "plan.h"

/* Number of CUDA devices usable now (0 where there is no driver or no GPU); `why` gets a
 * short reason when it is 0. */
int rt_gpu_count(char *why, int cap);

typedef struct {
    int index;          /* CUDA device ordinal */
    char name[256];     /* "NVIDIA H100 80GB HBM3" */
    char arch[16];      /* "sm_90" */
    int major, minor;   /* compute capability */
    int sms;
    int64_t mem_bytes;  /* total device memory */
    int64_t smem_optin; /* most dynamic shared memory a block may opt in to */
} rt_gpu_info_t;

/* The GPU this process uses: LOCAL_RANK (as torchrun, srun and mpirun wrappers set it), or
 * 0. Fails when it names no present device. */
int rt_gpu_pick(int *dev, ft_err_t *e);
int rt_gpu_info(int dev, rt_gpu_info_t *info, ft_err_t *e);

/* Dense (not 2:4 sparse) bf16 tensor-core peak of the GPU in FLOP/s, from NVIDIA's data
 * sheets by name and compute capability: the denominator of MFU. 0 for a GPU the table does
 * not know, so that MFU is left out rather than guessed. The table (device.c) must agree with
 * bench/common.py's. */
double rt_gpu_peak_flops(const rt_gpu_info_t *gi);

/* Compute capability of an "sm_XY" / "sm_XYa" target as 10*X+Y; -1 if it is not one. */
int rt_arch_number(const char *target);

/* The plan's CUDA module, or NULL when it was compiled for the CPU only. */
const cg_module_t *rt_plan_cuda_module(const plan_t *p);

/* Resolves `want` ("auto", "cpu" or "cuda"; NULL = "auto") for this plan on this machine.
 * *cuda says which executor to open. "cuda" fails, naming "--device cuda" and the reason,
 * where there is no usable GPU or the plan has no kernels for it; "auto" then falls back
 * to the CPU and `notice` (may be NULL) says why. */
int rt_device_choose(const plan_t *p, const char *want, bool *cuda, char *notice, int cap, ft_err_t *e);

#endif
