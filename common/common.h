/* common.h — small helpers every stage shares: error buffers, hashing, whole-file I/O,
 * atomic file writes and checked allocation. Nothing here holds global state. */
#ifndef FTC_COMMON_H
#define FTC_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* An error message buffer threaded through every fallible call: functions return 0 on
 * success and -1 on failure, having written one line (no trailing newline) into it. */
typedef struct {
    char msg[1024];
} ft_err_t;

#if defined(__GNUC__)
#define FT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FT_PRINTF(a, b)
#endif

int ft_fail(ft_err_t *e, const char *fmt, ...) FT_PRINTF(2, 3); /* sets msg, returns -1 */

/* Allocation that never returns NULL: out of host memory is fatal with a message. */
void *ft_xmalloc(size_t n);
void *ft_xcalloc(size_t n, size_t size);
void *ft_xrealloc(void *p, size_t n);
char *ft_xstrdup(const char *s);

/* 64-bit FNV-1a; `h` is the running state, start with FT_FNV_INIT. */
#define FT_FNV_INIT 0xcbf29ce484222325ULL
uint64_t ft_fnv1a(uint64_t h, const void *data, size_t n);

/* Reads a whole file into a NUL-terminated buffer. */
int ft_read_file(const char *path, char **data, size_t *len, ft_err_t *e);

/* Maps a regular file read-only; an empty file maps to (NULL, 0). Callers check the size
 * they need themselves, so that each format can say what it expected. */
int ft_map_file(const char *path, void **map, size_t *size, ft_err_t *e);
void ft_unmap_file(void *map, size_t size);

/* Atomic write: data goes to "<path>.tmp.<pid>", is fsynced, then renamed over path, and the
 * directory is fsynced; on any failure the temporary file is removed and path is untouched. */
typedef struct {
    FILE *f;
    char path[4096];
    char tmp[4200];
    int failed;
} ft_atomic_t;
int ft_atomic_open(ft_atomic_t *a, const char *path, ft_err_t *e);
int ft_atomic_write(ft_atomic_t *a, const void *data, size_t n, ft_err_t *e);
int ft_atomic_commit(ft_atomic_t *a, ft_err_t *e);
void ft_atomic_abort(ft_atomic_t *a);
int ft_write_file_atomic(const char *path, const void *data, size_t n, ft_err_t *e);

/* Joins dir and rel unless rel is absolute; dir "" means the current directory. */
void ft_path_join(char *out, size_t cap, const char *dir, const char *rel);
/* The folder part of a path ("" when there is none). */
void ft_path_dir(char *out, size_t cap, const char *path);
int ft_mkdir_p(const char *path, ft_err_t *e);

/* bf16/f16 conversions, round-to-nearest-even. */
uint16_t ft_f32_to_bf16(float f);
float ft_bf16_to_f32(uint16_t h);
uint16_t ft_f32_to_f16(float f);
float ft_f16_to_f32(uint16_t h);

/* Whether a GPU target gets the Hopper attention kernels (codegen/kernels/attention_wg.cuh)
 * and the fusions only they implement: sm_90 or sm_90a, unless FTC_ATTN_MMA_SYNC is set to
 * other than "0" (a testing switch: a Hopper GPU then runs the kernels other GPUs run). */
bool ft_target_hopper(const char *target);

/* Monotonic wall clock in seconds. */
double ft_now(void);

#endif
