/* cg_internal.h — what the parts of the GPU code generator share with each other and with
 * their tests, and nothing else should use: the embedded kernel templates, the kernel entry
 * points a graph needs, launch geometry, and the NVRTC compiler with its cache. The public
 * interface is codegen.h. */
#ifndef FTC_CG_INTERNAL_H
#define FTC_CG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "codegen.h"

/* The template files, embedded at build time by cmake/embed.cmake (kernel_abi.h and
 * the .cuh files of codegen/kernels/, sorted by name) into the generated gen/kernels_embed.c. */
typedef struct {
    const char *name; /* file name, e.g. "attention.cuh" */
    const char *text; /* NUL-terminated contents */
    size_t len;
} cg_embedded_t;

extern const cg_embedded_t cg_embedded[];
extern const int cg_nembedded;

/* Launch geometry the templates are written for; emit.c hands the kernel-side ones to the
 * source as #defines, so the two cannot drift apart. */
#define CG_EW_THREADS 256        /* elementwise, movement, rope, embed_bwd */
#define CG_EW_MAX_BLOCKS (1u << 20)
#define CG_RED_THREADS 256       /* sum, mean, sumsq: both kernels' blocks */
#define CG_RED_MAX_BLOCKS 1024   /* sum, mean, sumsq: most partials */
#define CG_RED_PER_THREAD 32     /* sum, mean, sumsq: fewest elements per thread of the first kernel */
#define CG_FIN_THREADS 1024      /* xent's second kernel, embed_bwd's first: one block */
#define CG_RBW_ROWS 32           /* rmsnorm_bwd_w: fewest rows per chunk */
#define CG_RBW_MAX_CHUNKS 512    /* rmsnorm_bwd_w: most row chunks (partial rows in scratch) */
#define CG_RBW_FIN_THREADS 256   /* rmsnorm_bwd_w's second kernel: a thread per column */
#define CG_ATT_THREADS 128       /* attention: 4 warps, 8 rows of a tile each */
#define CG_ATT_TILE 32           /* attention: query rows or keys per tile */
#define CG_ATT_MAX_DH 256        /* attention: head dims, at most 8 per lane */
#define CG_ATT_WG_THREADS 256    /* attention on Hopper (attention_wg.cuh): two warpgroups a block */
#define CG_ATT_TC_OWN 128        /* attention on tensor cores: own rows per block (queries; dk/dv keys) */
#define CG_EBW_COLS 8            /* embed_bwd: columns per thread and pass */
#define CG_RBW_COLS 8            /* rmsnorm_bwd_w: columns per thread and pass */
#define CG_NORM_THREADS 256      /* rmsnorm, rmsnorm_bwd_x: threads per block (teams of 1..8 warps) */
#define CG_NORM_LANE_BYTES 256   /* rmsnorm, rmsnorm_bwd_x: register bytes of row values a lane holds */
#define CG_NORM_MIN_BLOCKS 2     /* rmsnorm, rmsnorm_bwd_x: blocks per SM the registers must allow (<= 128 a thread) */
#define CG_SMEM_DEFAULT (48u * 1024u)

/* A target the generator accepts: "sm_" + 2 or 3 digits (80 or newer) + optional "a". */
int cg_check_target(const char *target, ft_err_t *e);
/* Largest dynamic shared memory a block of target may opt in to. */
unsigned cg_smem_limit(const char *target);

/* The entry point name of scheduled node `id` ("ftk_<op>_<input dtypes>_<output dtype>"),
 * or -1 with a message when the node cannot run on the GPU (f64 tensors). */
int cg_kernel_name(const ir_graph_t *g, int id, char name[CG_NAME_MAX], ft_err_t *e);

/* The distinct entry points the scheduled nodes of g use, sorted (strcmp); malloc'd. */
int cg_kernel_names(const ir_graph_t *g, char ***names, int *n, ft_err_t *e);
void cg_names_free(char **names, int n);

/* The entry point of the second kernel of a two-stage node (the first's name + "_s2"), or
 * -1 with a message when the node's op runs one kernel. */
int cg_kernel_name2(const ir_graph_t *g, int id, char name[CG_NAME_MAX], ft_err_t *e);

/* Kind, grid, block, dynamic shared memory and scratch of scheduled node `id` on target;
 * a second kernel, where the op has one, is marked by a non-zero grid2 (both kernel
 * indices are left -1); -1 with a message when the shapes exceed what the kernels support. */
int cg_launch_of(const ir_graph_t *g, int id, const char *target, cg_launch_t *l, ft_err_t *e);

/* NVRTC: the source compiled for target into a cubin (malloc'd); on failure the message
 * holds NVRTC's error and compile log. */
int cg_nvrtc_compile(const char *src, const char *target, unsigned char **image, size_t *len, ft_err_t *e);
/* The same through the cache in cache_dir (NULL or "": none): <cache_dir>/<key>.cubin with
 * key = FNV-1a 64 of the source, the options and the NVRTC version, written atomically.
 * *hit tells whether the cache answered. */
int cg_compile_cached(const char *src, const char *target, const char *cache_dir, unsigned char **image, size_t *len,
                      bool *hit, ft_err_t *e);
/* The cache file cg_compile_cached uses for (src, target) in cache_dir. */
int cg_cache_path(const char *src, const char *target, const char *cache_dir, char *path, size_t cap, ft_err_t *e);

#endif
