/* device.c — the GPU probe. The CUDA runtime library reaches the driver at run time, so this
 * returns 0 (with the runtime's reason) on a machine with no driver instead of failing to
 * start. */
#include <stdio.h>

#include "device.h"

#ifdef FTC_HAVE_CUDA
#include <cuda_runtime.h>

int rt_gpu_count(char *why, int cap)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        snprintf(why, (size_t)cap, "%s", cudaGetErrorString(rc));
        return 0;
    }
    if (n == 0)
        snprintf(why, (size_t)cap, "no CUDA device");
    return n;
}
#else
int rt_gpu_count(char *why, int cap)
{
    snprintf(why, (size_t)cap, "built without the CUDA toolkit");
    return 0;
}
#endif
