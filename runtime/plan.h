/* plan.h — plan.bin, the compiled training job: settings, the optimized and scheduled
 * graph with its arena layout, and the weight manifest. The writer lives in codegen/
 * (plan_write.c), the reader in runtime/ (plan_read.c); this header is the format.
 *
 * File layout (all integers little-endian):
 *   header   magic "FTCPLAN\0" (8) | u32 version | u32 section count | u64 file size |
 *            u64 checksum (FNV-1a 64 of every byte after the header)
 *   table    per section: u32 kind | u32 reserved (0) | u64 offset | u64 size
 *   sections in table order, each starting at an 8-byte aligned offset
 */
#ifndef FTC_PLAN_H
#define FTC_PLAN_H

#include "../codegen/codegen.h"
#include "../frontend/config.h"
#include "../ir/ir.h"

#define PLAN_MAGIC "FTCPLAN"
#define PLAN_VERSION 4u /* 2: attn_bwd reads the row statistics (6 inputs); 3: launch records
                          * carry a second kernel and scratch bytes (80 bytes); 4: up to 7
                          * inputs a node (attention's dk and dv in one node) */
#define PLAN_HEADER_BYTES 32u

typedef enum {
    PLAN_SEC_META = 1,     /* u32 len + target string, i64 arena bytes, i64 ntensors, i64 nsched */
    PLAN_SEC_SETTINGS = 2, /* canonical `block.key=value` text (fe_config_to_text) */
    PLAN_SEC_GRAPH = 3,    /* i64 count + tensor records, field by field */
    PLAN_SEC_SCHEDULE = 4, /* i64 count + i32 node ids in execution order */
    PLAN_SEC_MANIFEST = 5, /* i64 count + weight records (i32 tensor, u32 init, f64 param,
                              u32 len + key); docs/formats.md has every record's bytes */
    PLAN_SEC_KERNELS = 6,  /* optional, present exactly when the target is a GPU: the
                              cg_module_t. u32 len + target, u64 image bytes + cubin + zero
                              padding to an 8-byte boundary, i64 count + names (u32 len + name, sorted,
                              unique), i64 count (= schedule length) + launch records (i32
                              node, u32 kind, i32 kernel or -1, u32 grid[3], u32 block[3],
                              u32 smem, i32 kernel2 or -1, u32 grid2[3], u32 block2[3],
                              u32 smem2, u64 scratch bytes) */
} plan_section_t;

/* How a weight gets its first value. */
typedef enum {
    PLAN_INIT_FILE,     /* from the model's safetensors, by `key` (its HF name) */
    PLAN_INIT_NORMAL,   /* normal(0, param) from the run's seed and the tensor's name */
    PLAN_INIT_ONES,
    PLAN_INIT_ZEROS,
    PLAN_INIT_UNIFORM,  /* uniform(-param, param), LoRA A's kaiming-uniform default */
    PLAN_INIT_ADAPTER,  /* from a PEFT adapter folder (tuner.init), by `key` */
    PLAN_INIT_COUNT
} plan_init_t;

typedef struct {
    int tensor;               /* graph id of the leaf */
    plan_init_t init;
    double param;             /* std or bound */
    char key[IR_NAME_MAX + 32]; /* name in the source file (HF or PEFT key) */
} plan_weight_t;

typedef struct {
    char target[32];          /* "cpu", or a GPU architecture ("sm_90") */
    ft_config_t cfg;
    ir_graph_t g;             /* scheduled and memory-planned */
    plan_weight_t *w;
    int nw;
    cg_module_t cuda;         /* GPU targets: kernels and one launch record per scheduled node */
    bool has_cuda;            /* cuda is filled (the KERNELS section) */
} plan_t;

void plan_free(plan_t *p);
const char *plan_init_name(plan_init_t k);

/* Serialises p to bytes in memory (malloc'd) / to `path` atomically. */
int plan_serialize(const plan_t *p, unsigned char **out, size_t *len, ft_err_t *e);
int plan_write(const plan_t *p, const char *path, ft_err_t *e);

/* Parses and validates: magic, version, size, checksum, section bounds, every record's
 * fields (the kernel module's too: names, and every launch record against its scheduled
 * node), then ir_verify and the arena check. Never crashes on any input. */
int plan_parse(const unsigned char *data, size_t len, const char *name, plan_t *p, ft_err_t *e);
int plan_read(const char *path, plan_t *p, ft_err_t *e);

#endif
