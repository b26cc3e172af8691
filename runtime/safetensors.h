/* safetensors.h — reading and writing Hugging Face safetensors files. The reader maps one
 * file, a folder holding model.safetensors, or a sharded checkpoint described by
 * model.safetensors.index.json, validates every header strictly and gives tensors by name;
 * the writer produces a deterministic file (sorted keys, sorted data) atomically.
 * The layout is described in docs/formats.md, section "safetensors". */
#ifndef FTC_SAFETENSORS_H
#define FTC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/common.h"

/* Element types, named as in the header's "dtype" field. */
typedef enum {
    ST_F64, ST_F32, ST_F16, ST_BF16,
    ST_I64, ST_I32, ST_I16, ST_I8,
    ST_U64, ST_U32, ST_U16, ST_U8,
    ST_BOOL, ST_F8_E4M3, ST_F8_E5M2,
    ST_DTYPE_COUNT
} st_dtype_t;

#define ST_MAX_DIMS 8
/* A header longer than this is rejected as absurd rather than parsed. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct {
    char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;   /* points into the read-only mapping; may be unaligned */
    size_t nbytes;
    int file;           /* index into st_model_t.files */
} st_tensor_t;

typedef struct {
    char *path;         /* as opened, for messages */
    void *map;          /* read-only mapping of the whole file */
    size_t size;
} st_file_t;

typedef struct {
    st_tensor_t *tensors; /* sorted by name (strcmp) */
    int ntensors;
    st_file_t *files;
    int nfiles;
    char **meta;        /* key, value, key, value, ...: the "__metadata__" of every file
                           (first file wins on a repeated key), sorted by key */
    int nmeta;
} st_model_t;

/* Opens `path`: a .safetensors file, a model.safetensors.index.json, or a folder holding
 * model.safetensors.index.json (preferred) or model.safetensors. On failure the model is
 * left empty (st_close is still safe) and e names the file and tensor at fault. */
int st_open(st_model_t *m, const char *path, ft_err_t *e);
void st_close(st_model_t *m);

/* The tensor of that name, or NULL (binary search). */
const st_tensor_t *st_find(const st_model_t *m, const char *name);
/* A "__metadata__" value, or NULL. */
const char *st_meta(const st_model_t *m, const char *key);

size_t st_dtype_size(st_dtype_t dt);      /* bytes per element; 0 for an invalid value */
const char *st_dtype_name(st_dtype_t dt); /* "F32", ...; "?" for an invalid value */
int st_dtype_parse(const char *name, st_dtype_t *dt); /* 0, or -1 if unknown */
int64_t st_numel(const st_tensor_t *t);

/* Converts a floating tensor (F32, BF16, F16, F64) to float or double; `out` holds
 * st_numel(t) elements. Any other dtype is an error naming the tensor. */
int st_read_f32(const st_tensor_t *t, float *out, ft_err_t *e);
int st_read_f64(const st_tensor_t *t, double *out, ft_err_t *e);

/* One tensor to write; data holds numel * st_dtype_size(dtype) bytes in little-endian
 * row-major order (may be NULL when that is 0). */
typedef struct {
    const char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} st_wtensor_t;

/* Writes n tensors to path atomically. The header is compact JSON: "__metadata__" first
 * (when meta_kv, a NULL-terminated key, value, ... list, is given; keys sorted), then the
 * tensors sorted by name, each {"data_offsets":[b,e],"dtype":"..","shape":[..]}, padded
 * with spaces to a multiple of 8 bytes; the data follows in the same order, contiguous.
 * The output depends only on the arguments, byte for byte. */
int st_write(const char *path, const st_wtensor_t *t, int n, const char *const *meta_kv, ft_err_t *e);

#endif
