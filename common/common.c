/* common.c — error buffers, hashing, file I/O, atomic writes, float conversions. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ft_fail(ft_err_t *e, const char *fmt, ...)
{
    if (!e)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of host memory allocating %zu bytes\n", n);
    exit(2);
}

void *ft_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *ft_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *ft_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *ft_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = ft_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

uint64_t ft_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int ft_read_file(const char *path, char **data, size_t *len, ft_err_t *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ft_fail(e, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return ft_fail(e, "%s: cannot seek: %s", path, strerror(errno));
    }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return ft_fail(e, "%s: cannot size: %s", path, strerror(errno));
    }
    char *buf = ft_xmalloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return ft_fail(e, "%s: short read", path);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    if (len)
        *len = (size_t)n;
    return 0;
}

int ft_map_file(const char *path, void **map, size_t *size, ft_err_t *e)
{
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return ft_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return ft_fail(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ft_fail(e, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (p == MAP_FAILED)
        return ft_fail(e, "%s: cannot map: %s", path, strerror(err));
    *map = p;
    *size = (size_t)st.st_size;
    return 0;
}

void ft_unmap_file(void *map, size_t size)
{
    if (map)
        munmap(map, size);
}

int ft_atomic_open(ft_atomic_t *a, const char *path, ft_err_t *e)
{
    memset(a, 0, sizeof *a);
    snprintf(a->path, sizeof a->path, "%s", path);
    snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid());
    a->f = fopen(a->tmp, "wb");
    if (!a->f)
        return ft_fail(e, "%s: cannot create: %s", a->tmp, strerror(errno));
    return 0;
}

int ft_atomic_write(ft_atomic_t *a, const void *data, size_t n, ft_err_t *e)
{
    if (a->failed)
        return -1;
    if (n && fwrite(data, 1, n, a->f) != n) {
        a->failed = 1;
        return ft_fail(e, "%s: write failed: %s", a->tmp, strerror(errno));
    }
    return 0;
}

void ft_atomic_abort(ft_atomic_t *a)
{
    if (a->f)
        fclose(a->f);
    a->f = NULL;
    unlink(a->tmp);
}

static void fsync_dir(const char *path)
{
    char dir[4096];
    ft_path_dir(dir, sizeof dir, path);
    int fd = open(dir[0] ? dir : ".", O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int ft_atomic_commit(ft_atomic_t *a, ft_err_t *e)
{
    if (a->failed) {
        ft_atomic_abort(a);
        return -1;
    }
    if (fflush(a->f) != 0 || fsync(fileno(a->f)) != 0) {
        int err = errno;
        ft_atomic_abort(a);
        return ft_fail(e, "%s: flush failed: %s", a->tmp, strerror(err));
    }
    if (fclose(a->f) != 0) {
        a->f = NULL;
        unlink(a->tmp);
        return ft_fail(e, "%s: close failed: %s", a->tmp, strerror(errno));
    }
    a->f = NULL;
    if (rename(a->tmp, a->path) != 0) {
        int err = errno;
        unlink(a->tmp);
        return ft_fail(e, "%s: rename failed: %s", a->path, strerror(err));
    }
    fsync_dir(a->path);
    return 0;
}

int ft_write_file_atomic(const char *path, const void *data, size_t n, ft_err_t *e)
{
    ft_atomic_t a;
    if (ft_atomic_open(&a, path, e) != 0)
        return -1;
    if (ft_atomic_write(&a, data, n, e) != 0) {
        ft_atomic_abort(&a);
        return -1;
    }
    return ft_atomic_commit(&a, e);
}

void ft_path_join(char *out, size_t cap, const char *dir, const char *rel)
{
    if (rel[0] == '/' || !dir || !dir[0])
        snprintf(out, cap, "%s", rel);
    else
        snprintf(out, cap, "%s/%s", dir, rel);
}

void ft_path_dir(char *out, size_t cap, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(out, cap, "%s", "");
        return;
    }
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1; /* "/x" -> "/" */
    if (n >= cap)
        n = cap - 1;
    memcpy(out, path, n);
    out[n] = 0;
}

int ft_mkdir_p(const char *path, ft_err_t *e)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return ft_fail(e, "%s: cannot create folder: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return ft_fail(e, "%s: cannot create folder: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return ft_fail(e, "%s: exists and is not a folder", buf);
    return 0;
}

uint16_t ft_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ft_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t ft_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* subnormal or zero in f16 */
        float a;
        memcpy(&a, &ax, 4);
        /* scale into the subnormal grid and round to nearest even */
        float s = a * 16777216.0f; /* 2^24 */
        uint32_t m = (uint32_t)lrintf(s);
        return (uint16_t)(sign | m);
    }
    uint32_t exp = ((ax >> 23) - 112) << 10;
    uint32_t mant = ax & 0x7fffffu;
    uint32_t h = exp | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

float ft_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24);
        uint32_t u;
        memcpy(&u, &f, 4);
        u |= sign;
        memcpy(&f, &u, 4);
        return f;
    }
    uint32_t u;
    if (exp == 31)
        u = sign | 0x7f800000u | (mant << 13);
    else
        u = sign | ((exp + 112) << 23) | (mant << 13);
    memcpy(&f, &u, 4);
    return f;
}

double ft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool ft_target_hopper(const char *target)
{
    const char *mma = getenv("FTC_ATTN_MMA_SYNC");
    if (mma && mma[0] && strcmp(mma, "0") != 0)
        return false;
    return target && (strcmp(target, "sm_90") == 0 || strcmp(target, "sm_90a") == 0);
}
