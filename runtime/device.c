/* device.c — the GPU probe and the choice of executor. The CUDA runtime library reaches the
 * driver at run time, so every probe here returns "no GPU" (with the runtime's reason) on a
 * machine with no driver instead of failing to start. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"

int rt_arch_number(const char *target)
{
    if (!target || strncmp(target, "sm_", 3) != 0)
        return -1;
    const char *s = target + 3;
    int v = 0, digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 4) {
        v = v * 10 + (*s++ - '0');
        digits++;
    }
    if (digits < 2 || (*s && strcmp(s, "a") != 0 && strcmp(s, "f") != 0))
        return -1;
    return v;
}

const cg_module_t *rt_plan_cuda_module(const plan_t *p) { return p->has_cuda ? &p->cuda : NULL; }

/* First match wins: a name part the device name must contain, the compute capability
 * (10*major+minor), and the dense bf16 peak. SXM boards carry no marker in their names
 * ("NVIDIA H100 80GB HBM3"), so the PCIe and NVL variants come first. */
static const struct {
    const char *part;
    int cc;
    double flops;
} gpu_peaks[] = {
    {"H100 PCIe", 90, 756.5e12},
    {"H100 NVL", 90, 835.5e12},
    {"H200 NVL", 90, 835.5e12},
    {"H100", 90, 989.4e12}, /* SXM5 */
    {"H200", 90, 989.4e12}, /* SXM; GH200 too */
    {"A100", 80, 312.0e12}, /* SXM4 and PCIe alike */
};

double rt_gpu_peak_flops(const rt_gpu_info_t *gi)
{
    if (!gi)
        return 0;
    for (size_t i = 0; i < sizeof gpu_peaks / sizeof gpu_peaks[0]; i++)
        if (gi->major * 10 + gi->minor == gpu_peaks[i].cc && strstr(gi->name, gpu_peaks[i].part))
            return gpu_peaks[i].flops;
    return 0;
}

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

int rt_gpu_pick(int *dev, ft_err_t *e)
{
    char why[256] = "";
    int n = rt_gpu_count(why, sizeof why);
    if (n <= 0)
        return ft_fail(e, "no usable GPU (%s)", why);
    const char *lr = getenv("LOCAL_RANK");
    int d = 0;
    if (lr && *lr) {
        char *end = NULL;
        long v = strtol(lr, &end, 10);
        if (!end || *end || v < 0 || v >= n)
            return ft_fail(e, "LOCAL_RANK is '%s' but this machine has %d GPU(s) (ordinals 0..%d)", lr, n, n - 1);
        d = (int)v;
    }
    *dev = d;
    return 0;
}

int rt_gpu_info(int dev, rt_gpu_info_t *info, ft_err_t *e)
{
    memset(info, 0, sizeof *info);
    struct cudaDeviceProp pr;
    cudaError_t rc = cudaGetDeviceProperties(&pr, dev);
    if (rc != cudaSuccess)
        return ft_fail(e, "cudaGetDeviceProperties(GPU %d): %s (%s)", dev, cudaGetErrorString(rc), cudaGetErrorName(rc));
    info->index = dev;
    snprintf(info->name, sizeof info->name, "%s", pr.name);
    snprintf(info->arch, sizeof info->arch, "sm_%d%d", pr.major, pr.minor);
    info->major = pr.major;
    info->minor = pr.minor;
    info->sms = pr.multiProcessorCount;
    info->mem_bytes = (int64_t)pr.totalGlobalMem;
    info->smem_optin = (int64_t)pr.sharedMemPerBlockOptin;
    return 0;
}
#else
int rt_gpu_count(char *why, int cap)
{
    snprintf(why, (size_t)cap, "built without the CUDA toolkit");
    return 0;
}

int rt_gpu_pick(int *dev, ft_err_t *e)
{
    *dev = -1;
    return ft_fail(e, "no usable GPU (built without the CUDA toolkit)");
}

int rt_gpu_info(int dev, rt_gpu_info_t *info, ft_err_t *e)
{
    memset(info, 0, sizeof *info);
    return ft_fail(e, "GPU %d: built without the CUDA toolkit", dev);
}
#endif

/* Why the plan cannot run on this GPU ("" when it can). */
static void module_mismatch(const plan_t *p, const rt_gpu_info_t *gi, char *why, size_t cap)
{
    const cg_module_t *m = rt_plan_cuda_module(p);
    why[0] = 0;
    if (!m)
        snprintf(why, cap, "the plan has no CUDA kernels (it was compiled for target '%s'); compile it with --target %s",
                 p->target, gi->arch);
    else if (rt_arch_number(m->target) != gi->major * 10 + gi->minor)
        snprintf(why, cap, "the plan's kernels are for %s but GPU %d (%s) is %s; compile it with --target %s",
                 m->target, gi->index, gi->name, gi->arch, gi->arch);
}

int rt_device_choose(const plan_t *p, const char *want, bool *cuda, char *notice, int cap, ft_err_t *e)
{
    *cuda = false;
    if (notice && cap > 0)
        notice[0] = 0;
    if (!want)
        want = "auto";
    if (strcmp(want, "cpu") == 0)
        return 0;
    bool must = strcmp(want, "cuda") == 0;
    if (!must && strcmp(want, "auto") != 0)
        return ft_fail(e, "--device must be auto, cpu or cuda, got '%s'", want);
    char why[512] = "";
    int n = rt_gpu_count(why, sizeof why);
    if (n <= 0) {
        if (must)
            return ft_fail(e, "--device cuda: no usable GPU (%s)", why);
        if (notice)
            snprintf(notice, (size_t)cap, "no usable GPU (%s); running the CPU reference executor", why);
        return 0;
    }
    int dev = 0;
    rt_gpu_info_t gi;
    ft_err_t ge;
    if (rt_gpu_pick(&dev, &ge) != 0 || rt_gpu_info(dev, &gi, &ge) != 0) {
        if (must)
            return ft_fail(e, "--device cuda: %s", ge.msg);
        if (notice)
            snprintf(notice, (size_t)cap, "%s; running the CPU reference executor", ge.msg);
        return 0;
    }
    module_mismatch(p, &gi, why, sizeof why);
    if (why[0]) {
        if (must)
            return ft_fail(e, "--device cuda: %s", why);
        if (notice)
            snprintf(notice, (size_t)cap, "GPU %d (%s, %s) found, but %s; running the CPU reference executor", gi.index,
                     gi.name, gi.arch, why);
        return 0;
    }
    *cuda = true;
    return 0;
}
