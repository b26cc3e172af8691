/* nvrtc.c — the generated CUDA source compiled ahead of time to a cubin by NVRTC, and the
 * compile cache. NVRTC needs no GPU and no driver, so plans for any target are built on any
 * machine with the toolkit; the runtime only loads the cubin. A compile takes seconds, so
 * finished cubins are kept in a cache folder under a key of everything that determines
 * them: the source, the options (target and include folder) and NVRTC's version.
 *
 * Without the toolkit at build time (no FTC_HAVE_CUDA) every compile fails with a message
 * saying so; the rest of the code generator still works. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg_internal.h"

#ifdef FTC_HAVE_CUDA
#include <nvrtc.h>
#endif

/* The toolkit's include folder, baked in at configure time (CMakeLists.txt). */
#ifndef FTC_CUDA_INCLUDE
#define FTC_CUDA_INCLUDE "/usr/local/cuda/include"
#endif

/* Compute capability of a checked target ("sm_90a" -> 90). */
static int target_cc(const char *target) { return atoi(target + 3); }

int cg_check_target(const char *target, ft_err_t *e)
{
    bool ok = target && strncmp(target, "sm_", 3) == 0;
    if (ok) {
        const char *p = target + 3;
        size_t digits = 0;
        while (p[digits] >= '0' && p[digits] <= '9')
            digits++;
        const char *rest = p + digits;
        ok = digits >= 2 && digits <= 3 && p[0] != '0' && (rest[0] == 0 || (rest[0] == 'a' && rest[1] == 0)) &&
             target_cc(target) >= 80;
    }
    if (!ok)
        return ft_fail(e, "target '%s' is not a GPU architecture the code generator supports (sm_80 or newer, "
                          "e.g. sm_80, sm_86, sm_89, sm_90, sm_90a; or cpu)", target ? target : "");
    return 0;
}

/* The opt-in shared memory per block of each architecture (CUDA programming guide, table of
 * compute capabilities); unknown ones get the smallest of the family. */
unsigned cg_smem_limit(const char *target)
{
    int cc = target_cc(target);
    if (cc == 80 || cc == 87)
        return 163u * 1024u;
    if (cc == 90 || cc == 100 || cc == 103 || cc == 110)
        return 227u * 1024u;
    return 99u * 1024u;
}

static const char *cuda_include(void)
{
    static const char *const candidates[] = {FTC_CUDA_INCLUDE, "/usr/local/cuda/include"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/cuda_bf16.h", candidates[i]);
        if (access(probe, R_OK) == 0)
            return candidates[i];
    }
    return FTC_CUDA_INCLUDE;
}

/* The NVRTC options: the architecture, the toolkit headers (cuda_bf16.h, cuda_fp16.h),
 * C++17, and device code by default. */
typedef struct {
    char arch[64];
    char inc[4200];
    const char *v[4];
    int n;
} opts_t;

static void make_opts(const char *target, opts_t *o)
{
    /* sm_90 code is compiled as sm_90a: the Hopper attention kernels use wgmma, which only the
     * arch-specific target has (a cubin for either runs on compute capability 9.0 alone) */
    bool hopper = strcmp(target, "sm_90") == 0;
    snprintf(o->arch, sizeof o->arch, "--gpu-architecture=%s%s", target, hopper ? "a" : "");
    snprintf(o->inc, sizeof o->inc, "-I%s", cuda_include());
    o->v[0] = o->arch;
    o->v[1] = o->inc;
    o->v[2] = "--std=c++17";
    o->v[3] = "-default-device";
    o->n = 4;
}

#ifdef FTC_HAVE_CUDA

static int nvrtc_fail(ft_err_t *e, const char *what, nvrtcResult r)
{
    return ft_fail(e, "NVRTC: %s failed: %s", what, nvrtcGetErrorString(r));
}

/* The program's compile log (malloc'd, possibly empty), or NULL if NVRTC cannot give it. */
static char *program_log(nvrtcProgram prog)
{
    size_t n = 0;
    if (nvrtcGetProgramLogSize(prog, &n) != NVRTC_SUCCESS)
        return NULL;
    char *log = ft_xmalloc(n + 1);
    if (nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) {
        free(log);
        return NULL;
    }
    log[n] = 0;
    while (n > 0 && (log[n - 1] == '\n' || log[n - 1] == ' ' || log[n - 1] == 0))
        log[--n] = 0;
    return log;
}

static int compile(nvrtcProgram prog, const char *target, unsigned char **image, size_t *len, ft_err_t *e)
{
    opts_t o;
    make_opts(target, &o);
    nvrtcResult r = nvrtcCompileProgram(prog, o.n, o.v);
    if (r != NVRTC_SUCCESS) {
        char *log = program_log(prog);
        ft_fail(e, "NVRTC could not compile the kernels for %s (%s):\n%s", target, nvrtcGetErrorString(r),
                log && log[0] ? log : "(no compile log)");
        free(log);
        return -1;
    }
    size_t n = 0;
    if ((r = nvrtcGetCUBINSize(prog, &n)) != NVRTC_SUCCESS)
        return nvrtc_fail(e, "nvrtcGetCUBINSize", r);
    if (n == 0)
        return ft_fail(e, "NVRTC produced an empty cubin for %s", target);
    unsigned char *buf = ft_xmalloc(n);
    if ((r = nvrtcGetCUBIN(prog, (char *)buf)) != NVRTC_SUCCESS) {
        free(buf);
        return nvrtc_fail(e, "nvrtcGetCUBIN", r);
    }
    *image = buf;
    *len = n;
    return 0;
}

int cg_nvrtc_compile(const char *src, const char *target, unsigned char **image, size_t *len, ft_err_t *e)
{
    *image = NULL;
    *len = 0;
    if (cg_check_target(target, e) != 0)
        return -1;
    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, src, "ftc_kernels.cu", 0, NULL, NULL);
    if (r != NVRTC_SUCCESS)
        return nvrtc_fail(e, "nvrtcCreateProgram", r);
    int rc = compile(prog, target, image, len, e);
    r = nvrtcDestroyProgram(&prog);
    if (rc == 0 && r != NVRTC_SUCCESS) {
        free(*image);
        *image = NULL;
        *len = 0;
        return nvrtc_fail(e, "nvrtcDestroyProgram", r);
    }
    return rc;
}

static int nvrtc_version(int *major, int *minor, ft_err_t *e)
{
    nvrtcResult r = nvrtcVersion(major, minor);
    return r == NVRTC_SUCCESS ? 0 : nvrtc_fail(e, "nvrtcVersion", r);
}

#else /* no toolkit */

static int no_toolkit(const char *target, ft_err_t *e)
{
    return ft_fail(e, "this ftc was built without the CUDA toolkit (NVRTC), so it cannot compile kernels for %s; "
                      "install the toolkit and rebuild, or use --target cpu", target);
}

int cg_nvrtc_compile(const char *src, const char *target, unsigned char **image, size_t *len, ft_err_t *e)
{
    (void)src;
    *image = NULL;
    *len = 0;
    return no_toolkit(target, e);
}

static int nvrtc_version(int *major, int *minor, ft_err_t *e)
{
    *major = *minor = 0;
    return no_toolkit("any GPU target", e);
}

#endif

/* ---- the cache ---- */

static uint64_t fnv_str(uint64_t h, const char *s) { return ft_fnv1a(h, s, strlen(s) + 1); /* NUL separates */ }

int cg_cache_path(const char *src, const char *target, const char *cache_dir, char *path, size_t cap, ft_err_t *e)
{
    int major, minor;
    if (cg_check_target(target, e) != 0 || nvrtc_version(&major, &minor, e) != 0)
        return -1;
    opts_t o;
    make_opts(target, &o);
    char ver[64];
    snprintf(ver, sizeof ver, "nvrtc %d.%d", major, minor);
    uint64_t h = fnv_str(FT_FNV_INIT, "ftc cubin cache 1");
    h = fnv_str(h, src);
    for (int i = 0; i < o.n; i++)
        h = fnv_str(h, o.v[i]);
    h = fnv_str(h, ver);
    int n = snprintf(path, cap, "%s/%016llx.cubin", cache_dir, (unsigned long long)h);
    if (n < 0 || (size_t)n >= cap)
        return ft_fail(e, "compile cache folder name is too long: %s", cache_dir);
    return 0;
}

static bool is_cubin(const unsigned char *b, size_t n) { return n >= 4 && memcmp(b, "\x7f" "ELF", 4) == 0; }

int cg_compile_cached(const char *src, const char *target, const char *cache_dir, unsigned char **image, size_t *len,
                      bool *hit, ft_err_t *e)
{
    *image = NULL;
    *len = 0;
    *hit = false;
    if (!cache_dir || !cache_dir[0])
        return cg_nvrtc_compile(src, target, image, len, e);
    char path[4200];
    if (cg_cache_path(src, target, cache_dir, path, sizeof path, e) != 0)
        return -1;
    char *data;
    size_t n;
    ft_err_t re;
    if (access(path, R_OK) == 0 && ft_read_file(path, &data, &n, &re) == 0) {
        if (is_cubin((const unsigned char *)data, n)) {
            *image = (unsigned char *)data;
            *len = n;
            *hit = true;
            return 0;
        }
        free(data); /* not a cubin (a damaged entry): compile and replace it */
    }
    if (cg_nvrtc_compile(src, target, image, len, e) != 0)
        return -1;
    /* A cache that cannot be written only costs the next compile its time. */
    ft_err_t we;
    if (ft_mkdir_p(cache_dir, &we) == 0)
        ft_write_file_atomic(path, *image, *len, &we);
    return 0;
}
