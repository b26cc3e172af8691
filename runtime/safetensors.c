/* safetensors.c — the safetensors reader (mmap + strict header validation, single file,
 * folder or sharded index) and the deterministic writer. Every error names the file and,
 * where there is one, the tensor. Hosts are assumed little-endian, as the format is. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* ---- dtypes ---- */

static const char *const dtype_names[] = {
    "F64", "F32", "F16", "BF16",
    "I64", "I32", "I16", "I8",
    "U64", "U32", "U16", "U8",
    "BOOL", "F8_E4M3", "F8_E5M2",
};
static const unsigned char dtype_sizes[] = {
    8, 4, 2, 2,
    8, 4, 2, 1,
    8, 4, 2, 1,
    1, 1, 1,
};
_Static_assert(sizeof dtype_names / sizeof dtype_names[0] == ST_DTYPE_COUNT, "dtype_names");
_Static_assert(sizeof dtype_sizes / sizeof dtype_sizes[0] == ST_DTYPE_COUNT, "dtype_sizes");

size_t st_dtype_size(st_dtype_t dt)
{
    if ((unsigned)dt >= ST_DTYPE_COUNT)
        return 0;
    return dtype_sizes[dt];
}

const char *st_dtype_name(st_dtype_t dt)
{
    if ((unsigned)dt >= ST_DTYPE_COUNT)
        return "?";
    return dtype_names[dt];
}

int st_dtype_parse(const char *name, st_dtype_t *dt)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_names[i]) == 0) {
            *dt = (st_dtype_t)i;
            return 0;
        }
    }
    return -1;
}

int64_t st_numel(const st_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* numel * elem of a shape, or -1 on overflow. */
static int64_t shape_bytes(const int64_t *shape, int ndim, size_t elem)
{
    int64_t n = (int64_t)elem;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i])
            return -1;
        n *= shape[i];
    }
    return n;
}

/* ---- model bookkeeping ---- */

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor_t *)a)->name, ((const st_tensor_t *)b)->name);
}

static int add_file(st_model_t *m, const char *path)
{
    m->files = ft_xrealloc(m->files, (size_t)(m->nfiles + 1) * sizeof *m->files);
    st_file_t *f = &m->files[m->nfiles];
    memset(f, 0, sizeof *f);
    f->path = ft_xstrdup(path);
    return m->nfiles++;
}

/* Makes room for `more` tensors, so that add_tensor need not grow the array each time. */
static void reserve_tensors(st_model_t *m, size_t more)
{
    m->tensors = ft_xrealloc(m->tensors, ((size_t)m->ntensors + more) * sizeof *m->tensors);
}

/* The next tensor slot; reserve_tensors must have made room for it. */
static st_tensor_t *add_tensor(st_model_t *m)
{
    st_tensor_t *t = &m->tensors[m->ntensors++];
    memset(t, 0, sizeof *t);
    return t;
}

static void add_meta(st_model_t *m, const char *key, const char *value)
{
    for (int i = 0; i < m->nmeta; i++)
        if (strcmp(m->meta[2 * i], key) == 0)
            return; /* first file wins */
    m->meta = ft_xrealloc(m->meta, (size_t)(m->nmeta + 1) * 2 * sizeof *m->meta);
    m->meta[2 * m->nmeta] = ft_xstrdup(key);
    m->meta[2 * m->nmeta + 1] = ft_xstrdup(value);
    m->nmeta++;
}

static int cmp_meta_pair(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void st_close(st_model_t *m)
{
    for (int i = 0; i < m->ntensors; i++)
        free(m->tensors[i].name);
    for (int i = 0; i < m->nfiles; i++) {
        if (m->files[i].map)
            munmap(m->files[i].map, m->files[i].size);
        free(m->files[i].path);
    }
    for (int i = 0; i < 2 * m->nmeta; i++)
        free(m->meta[i]);
    free(m->tensors);
    free(m->files);
    free(m->meta);
    memset(m, 0, sizeof *m);
}

const st_tensor_t *st_find(const st_model_t *m, const char *name)
{
    st_tensor_t key;
    key.name = (char *)name;
    if (m->ntensors == 0)
        return NULL;
    return bsearch(&key, m->tensors, (size_t)m->ntensors, sizeof key, cmp_tensor_name);
}

const char *st_meta(const st_model_t *m, const char *key)
{
    for (int i = 0; i < m->nmeta; i++)
        if (strcmp(m->meta[2 * i], key) == 0)
            return m->meta[2 * i + 1];
    return NULL;
}

/* ---- one file ---- */

static int map_file(st_file_t *f, ft_err_t *e)
{
    if (ft_map_file(f->path, &f->map, &f->size, e) != 0)
        return -1;
    if (f->size >= 8)
        return 0;
    ft_unmap_file(f->map, f->size);
    f->map = NULL;
    return ft_fail(e, "%s: file is %zu bytes, too short for a safetensors header (needs at least 8)", f->path,
                   f->size);
}

static int parse_metadata(st_model_t *m, const char *path, json_t *obj, ft_err_t *e)
{
    if (!json_is_object(obj))
        return ft_fail(e, "%s: \"__metadata__\" is not an object", path);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!json_is_string(v))
            return ft_fail(e, "%s: \"__metadata__\" value of '%s' is not a string", path, key);
        add_meta(m, key, json_string_value(v));
    }
    return 0;
}

static int parse_shape(st_tensor_t *t, const char *path, json_t *shape, ft_err_t *e)
{
    if (!json_is_array(shape))
        return ft_fail(e, "%s: tensor '%s': missing or ill-typed \"shape\" (expected an array)", path, t->name);
    size_t nd = json_array_size(shape);
    if (nd > ST_MAX_DIMS)
        return ft_fail(e, "%s: tensor '%s': %zu dimensions, at most %d supported", path, t->name, nd,
                       ST_MAX_DIMS);
    t->ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d))
            return ft_fail(e, "%s: tensor '%s': shape[%zu] is not an integer", path, t->name, i);
        json_int_t v = json_integer_value(d);
        if (v < 0)
            return ft_fail(e, "%s: tensor '%s': shape[%zu] is negative (%" JSON_INTEGER_FORMAT ")", path,
                           t->name, i, v);
        t->shape[i] = (int64_t)v;
    }
    return 0;
}

static int parse_offsets(const char *path, const char *name, json_t *off, int64_t *begin, int64_t *end,
                         ft_err_t *e)
{
    if (!json_is_array(off) || json_array_size(off) != 2)
        return ft_fail(e, "%s: tensor '%s': missing or ill-typed \"data_offsets\" (expected [begin, end])",
                       path, name);
    json_t *b = json_array_get(off, 0), *en = json_array_get(off, 1);
    if (!json_is_integer(b) || !json_is_integer(en))
        return ft_fail(e, "%s: tensor '%s': \"data_offsets\" are not integers", path, name);
    *begin = (int64_t)json_integer_value(b);
    *end = (int64_t)json_integer_value(en);
    if (*begin < 0 || *end < 0)
        return ft_fail(e, "%s: tensor '%s': negative data offset", path, name);
    if (*end < *begin)
        return ft_fail(e, "%s: tensor '%s': data_offsets end %" PRId64 " < begin %" PRId64, path, name, *end,
                       *begin);
    return 0;
}

/* Parses one header entry into a new tensor of file `fi`; data = base of the data section. */
static int parse_entry(st_model_t *m, int fi, const char *name, json_t *v, const unsigned char *data,
                       size_t data_len, ft_err_t *e)
{
    const st_file_t *f = &m->files[fi];
    st_tensor_t *t = add_tensor(m);
    t->name = ft_xstrdup(name);
    t->file = fi;
    if (!json_is_object(v))
        return ft_fail(e, "%s: tensor '%s': entry is not an object", f->path, name);
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return ft_fail(e, "%s: tensor '%s': missing or ill-typed \"dtype\" (expected a string)", f->path, name);
    if (st_dtype_parse(json_string_value(dt), &t->dtype) != 0)
        return ft_fail(e, "%s: tensor '%s': unknown dtype \"%s\"", f->path, name, json_string_value(dt));
    if (parse_shape(t, f->path, json_object_get(v, "shape"), e) != 0)
        return -1;
    int64_t begin = 0, end = 0;
    if (parse_offsets(f->path, name, json_object_get(v, "data_offsets"), &begin, &end, e) != 0)
        return -1;
    int64_t want = shape_bytes(t->shape, t->ndim, st_dtype_size(t->dtype));
    if (want < 0)
        return ft_fail(e, "%s: tensor '%s': shape is too large (element count overflows)", f->path, name);
    if (end - begin != want)
        return ft_fail(e, "%s: tensor '%s': data_offsets span %" PRId64 " bytes but %s shape needs %" PRId64
                       " (size mismatch)", f->path, name, end - begin, st_dtype_name(t->dtype), want);
    size_t header_end = f->size - data_len;
    if ((uint64_t)end > data_len)
        return ft_fail(e, "%s: tensor '%s' data ends at byte %" PRIu64 " but the file has only %zu bytes (truncated?)",
                       f->path, name, (uint64_t)header_end + (uint64_t)end, f->size);
    t->data = data + begin;
    t->nbytes = (size_t)want;
    return 0;
}

static int cmp_tensor_ptr_data(const void *a, const void *b)
{
    const st_tensor_t *x = *(st_tensor_t *const *)a, *y = *(st_tensor_t *const *)b;
    const char *px = x->data, *py = y->data;
    if (px != py)
        return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Tensors [first, m->ntensors) belong to one file; no two non-empty ones may share bytes. */
static int check_overlap(const st_model_t *m, int first, ft_err_t *e)
{
    int n = m->ntensors - first;
    if (n < 2)
        return 0;
    const st_tensor_t **v = ft_xmalloc((size_t)n * sizeof *v);
    for (int i = 0; i < n; i++)
        v[i] = &m->tensors[first + i];
    qsort(v, (size_t)n, sizeof *v, cmp_tensor_ptr_data);
    const st_tensor_t *prev = NULL;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (v[i]->nbytes == 0)
            continue;
        if (prev && (const char *)v[i]->data < (const char *)prev->data + prev->nbytes)
            rc = ft_fail(e, "%s: tensors '%s' and '%s' overlap in the data section",
                         m->files[v[i]->file].path, prev->name, v[i]->name);
        prev = v[i];
    }
    free(v);
    return rc;
}

static uint64_t read_u64le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Maps and parses one file, appending its tensors. */
static int load_file(st_model_t *m, const char *path, ft_err_t *e)
{
    int fi = add_file(m, path);
    st_file_t *f = &m->files[fi];
    if (map_file(f, e) != 0)
        return -1;
    const unsigned char *base = f->map;
    uint64_t hlen = read_u64le(base);
    if (hlen > ST_MAX_HEADER)
        return ft_fail(e, "%s: header length %" PRIu64 " is absurd (limit %u bytes); not a safetensors file?",
                       f->path, hlen, ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return ft_fail(e, "%s: header length %" PRIu64 " exceeds the file size %zu (truncated?)", f->path,
                       hlen, f->size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ft_fail(e, "%s: header is not valid JSON: %s (at byte %d of the header)", f->path, jerr.text,
                       jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return ft_fail(e, "%s: header is not a JSON object", f->path);
    }
    reserve_tensors(m, json_object_size(root));
    int rc = 0;
    int first = m->ntensors;
    const char *key;
    json_t *v;
    const unsigned char *data = base + 8 + hlen;
    size_t data_len = f->size - 8 - (size_t)hlen;
    json_object_foreach(root, key, v) {
        if (rc != 0)
            break;
        if (strcmp(key, "__metadata__") == 0)
            rc = parse_metadata(m, f->path, v, e);
        else
            rc = parse_entry(m, fi, key, v, data, data_len, e);
    }
    json_decref(root);
    if (rc != 0)
        return -1;
    return check_overlap(m, first, e);
}

/* Sorts by name and rejects a name held by two files. */
static int finish(st_model_t *m, ft_err_t *e)
{
    if (m->ntensors > 1)
        qsort(m->tensors, (size_t)m->ntensors, sizeof *m->tensors, cmp_tensor_name);
    for (int i = 1; i < m->ntensors; i++) {
        const st_tensor_t *a = &m->tensors[i - 1], *b = &m->tensors[i];
        if (strcmp(a->name, b->name) == 0)
            return ft_fail(e, "tensor '%s' appears in both %s and %s (duplicate name across shards)", a->name,
                           m->files[a->file].path, m->files[b->file].path);
    }
    if (m->nmeta > 1)
        qsort(m->meta, (size_t)m->nmeta, 2 * sizeof *m->meta, cmp_meta_pair);
    return 0;
}

/* ---- sharded index ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks every index entry against the loaded shards, and every shard tensor against the
 * index. `shards` holds the sorted distinct shard names; file i of m is shard i. */
static int check_index(const st_model_t *m, const char *ipath, json_t *wm, const char **shards, ft_err_t *e)
{
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        const char *want = json_string_value(v);
        const st_tensor_t *t = st_find(m, name);
        if (!t)
            return ft_fail(e, "%s: index puts tensor '%s' in shard %s, but that shard lacks it", ipath, name, want);
        const char *have = shards[t->file];
        if (strcmp(have, want) != 0)
            return ft_fail(e, "%s: index puts tensor '%s' in shard %s, but that shard lacks it (it is in %s)",
                           ipath, name, want, have);
    }
    for (int i = 0; i < m->ntensors; i++) {
        if (!json_object_get(wm, m->tensors[i].name))
            return ft_fail(e, "%s: shard %s holds tensor '%s', which the index does not list", ipath,
                           shards[m->tensors[i].file], m->tensors[i].name);
    }
    return 0;
}

/* Distinct shard names of a weight map, sorted; validates the map's shape. */
static int shard_names(const char *ipath, json_t *wm, const char ***out, int *n, ft_err_t *e)
{
    const char **names = ft_xmalloc((json_object_size(wm) + 1) * sizeof *names);
    int count = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            free(names);
            return ft_fail(e, "%s: weight_map entry '%s' is not a file name", ipath, key);
        }
        names[count++] = json_string_value(v);
    }
    if (count > 1)
        qsort(names, (size_t)count, sizeof *names, cmp_str);
    int k = 0;
    for (int i = 0; i < count; i++)
        if (k == 0 || strcmp(names[k - 1], names[i]) != 0)
            names[k++] = names[i];
    *out = names;
    *n = k;
    return 0;
}

static int load_index(st_model_t *m, const char *ipath, ft_err_t *e)
{
    json_error_t jerr;
    json_t *root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ft_fail(e, "%s: not a valid index: %s (line %d)", ipath, jerr.text, jerr.line);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(root);
        return ft_fail(e, "%s: missing or ill-typed \"weight_map\" (expected an object)", ipath);
    }
    const char **shards = NULL;
    int nshards = 0;
    int rc = shard_names(ipath, wm, &shards, &nshards, e);
    char dir[4096], spath[4096 + 256];
    ft_path_dir(dir, sizeof dir, ipath);
    for (int i = 0; rc == 0 && i < nshards; i++) {
        ft_path_join(spath, sizeof spath, dir, shards[i]);
        if (access(spath, F_OK) != 0) {
            rc = ft_fail(e, "%s: names shard file %s, which is missing (%s)", ipath, shards[i], strerror(errno));
            break;
        }
        rc = load_file(m, spath, e);
    }
    if (rc == 0)
        rc = finish(m, e);
    if (rc == 0)
        rc = check_index(m, ipath, wm, shards, e);
    free(shards);
    json_decref(root);
    return rc;
}

/* ---- entry point ---- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int open_dir(st_model_t *m, const char *dir, ft_err_t *e)
{
    char p[4096 + 64];
    ft_path_join(p, sizeof p, dir, "model.safetensors.index.json");
    if (access(p, F_OK) == 0)
        return load_index(m, p, e);
    ft_path_join(p, sizeof p, dir, "model.safetensors");
    if (access(p, F_OK) == 0) {
        if (load_file(m, p, e) != 0)
            return -1;
        return finish(m, e);
    }
    return ft_fail(e, "%s: folder holds neither model.safetensors.index.json nor model.safetensors", dir);
}

int st_open(st_model_t *m, const char *path, ft_err_t *e)
{
    memset(m, 0, sizeof *m);
    struct stat st;
    int rc;
    if (stat(path, &st) != 0)
        rc = ft_fail(e, "%s: cannot open: %s", path, strerror(errno));
    else if (S_ISDIR(st.st_mode))
        rc = open_dir(m, path, e);
    else if (ends_with(path, ".json"))
        rc = load_index(m, path, e);
    else
        rc = load_file(m, path, e) == 0 ? finish(m, e) : -1;
    if (rc != 0)
        st_close(m);
    return rc;
}

/* ---- conversion ---- */

static int check_float(const st_tensor_t *t, ft_err_t *e)
{
    switch (t->dtype) {
    case ST_F32: case ST_BF16: case ST_F16: case ST_F64:
        return 0;
    default:
        return ft_fail(e, "tensor '%s' has dtype %s; only F32, BF16, F16 and F64 convert to floating point",
                       t->name, st_dtype_name(t->dtype));
    }
}

/* Element i of a floating tensor as double (check_float has passed). */
static double elem_f64(const st_tensor_t *t, size_t i)
{
    const unsigned char *p = (const unsigned char *)t->data + i * dtype_sizes[t->dtype];
    uint16_t h;
    float f;
    double d;
    switch (t->dtype) {
    case ST_F32:
        memcpy(&f, p, 4);
        return f;
    case ST_BF16:
        memcpy(&h, p, 2);
        return ft_bf16_to_f32(h);
    case ST_F16:
        memcpy(&h, p, 2);
        return ft_f16_to_f32(h);
    default:
        memcpy(&d, p, 8);
        return d;
    }
}

int st_read_f32(const st_tensor_t *t, float *out, ft_err_t *e)
{
    if (check_float(t, e) != 0)
        return -1;
    size_t n = (size_t)st_numel(t);
    if (t->dtype == ST_F32) {
        if (n)
            memcpy(out, t->data, n * 4);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (float)elem_f64(t, i);
    return 0;
}

int st_read_f64(const st_tensor_t *t, double *out, ft_err_t *e)
{
    if (check_float(t, e) != 0)
        return -1;
    size_t n = (size_t)st_numel(t);
    for (size_t i = 0; i < n; i++)
        out[i] = elem_f64(t, i);
    return 0;
}

/* ---- writer ---- */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = ft_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_printf(sbuf_t *b, const char *fmt, ...) FT_PRINTF(2, 3);
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Strict UTF-8 (no overlongs, no surrogates), as jansson requires on reading. */
static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (k < 0)
            return 0;
        uint32_t cp = k == 0 ? c : c & (0x3fu >> k);
        for (int i = 1; i <= k; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3fu);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += k + 1;
    }
    return 1;
}

static void sb_json_string(sbuf_t *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (*p < 0x20)
                sb_printf(b, "\\u%04x", *p);
            else
                sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int check_wtensor(const st_wtensor_t *t, int64_t *nbytes, ft_err_t *e)
{
    if (!t->name)
        return ft_fail(e, "st_write: a tensor has no name");
    if (strcmp(t->name, "__metadata__") == 0 || !utf8_valid(t->name))
        return ft_fail(e, "st_write: invalid tensor name '%s'", t->name);
    if ((unsigned)t->dtype >= ST_DTYPE_COUNT)
        return ft_fail(e, "st_write: tensor '%s': invalid dtype %d", t->name, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
        return ft_fail(e, "st_write: tensor '%s': %d dimensions (0..%d allowed)", t->name, t->ndim, ST_MAX_DIMS);
    *nbytes = shape_bytes(t->shape, t->ndim, dtype_sizes[t->dtype]);
    if (*nbytes < 0)
        return ft_fail(e, "st_write: tensor '%s': negative or overflowing shape", t->name);
    if (*nbytes > 0 && !t->data)
        return ft_fail(e, "st_write: tensor '%s': no data", t->name);
    return 0;
}

static int cmp_wtensor_ptr(const void *a, const void *b)
{
    return strcmp((*(const st_wtensor_t *const *)a)->name, (*(const st_wtensor_t *const *)b)->name);
}

/* Sorted key/value pointer pairs of a NULL-terminated list; *n pairs. */
static int sorted_meta(const char *const *kv, const char ***out, int *n, ft_err_t *e)
{
    int count = 0;
    while (kv && kv[2 * count]) {
        if (!kv[2 * count + 1])
            return ft_fail(e, "st_write: metadata key '%s' has no value", kv[2 * count]);
        count++;
    }
    const char **v = ft_xmalloc((size_t)(2 * count + 1) * sizeof *v);
    for (int i = 0; i < 2 * count; i++)
        v[i] = kv[i];
    if (count > 1)
        qsort(v, (size_t)count, 2 * sizeof *v, cmp_str);
    for (int i = 0; i < count; i++) {
        int bad = !utf8_valid(v[2 * i]) || !utf8_valid(v[2 * i + 1]) ||
                  (i > 0 && strcmp(v[2 * i - 2], v[2 * i]) == 0);
        if (bad) {
            int rc = ft_fail(e, "st_write: metadata key '%s' is repeated or not valid UTF-8", v[2 * i]);
            free(v);
            return rc;
        }
    }
    *out = v;
    *n = count;
    return 0;
}

static void header_meta(sbuf_t *h, const char **meta, int nmeta)
{
    sb_puts(h, "\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
        if (i)
            sb_put(h, ",", 1);
        sb_json_string(h, meta[2 * i]);
        sb_put(h, ":", 1);
        sb_json_string(h, meta[2 * i + 1]);
    }
    sb_put(h, "}", 1);
}

static void header_tensor(sbuf_t *h, const st_wtensor_t *t, int64_t begin, int64_t end)
{
    sb_json_string(h, t->name);
    sb_printf(h, ":{\"data_offsets\":[%" PRId64 ",%" PRId64 "],\"dtype\":\"%s\",\"shape\":[", begin, end,
              dtype_names[t->dtype]);
    for (int d = 0; d < t->ndim; d++)
        sb_printf(h, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
    sb_puts(h, "]}");
}

/* Builds the padded header for tensors v[0..n) (sorted); sizes[i] = bytes of v[i]. */
static void build_header(sbuf_t *h, const st_wtensor_t **v, const int64_t *sizes, int n, const char **meta,
                         int nmeta, int has_meta)
{
    sb_put(h, "{", 1);
    if (has_meta)
        header_meta(h, meta, nmeta);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (i || has_meta)
            sb_put(h, ",", 1);
        header_tensor(h, v[i], off, off + sizes[i]);
        off += sizes[i];
    }
    sb_put(h, "}", 1);
    while (h->n % 8)
        sb_put(h, " ", 1);
}

static int write_all(const char *path, const sbuf_t *h, const st_wtensor_t **v, const int64_t *sizes, int n,
                     ft_err_t *e)
{
    unsigned char len8[8];
    uint64_t hl = h->n;
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(hl >> (8 * i));
    ft_atomic_t a;
    if (ft_atomic_open(&a, path, e) != 0)
        return -1;
    int rc = ft_atomic_write(&a, len8, 8, e);
    if (rc == 0)
        rc = ft_atomic_write(&a, h->p, h->n, e);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = ft_atomic_write(&a, v[i]->data, (size_t)sizes[i], e);
    if (rc != 0) {
        ft_atomic_abort(&a);
        return -1;
    }
    return ft_atomic_commit(&a, e);
}

int st_write(const char *path, const st_wtensor_t *t, int n, const char *const *meta_kv, ft_err_t *e)
{
    if (n < 0 || (n > 0 && !t))
        return ft_fail(e, "%s: st_write: bad tensor list", path);
    const char **meta = NULL;
    int nmeta = 0;
    if (sorted_meta(meta_kv, &meta, &nmeta, e) != 0)
        return -1;
    const st_wtensor_t **v = ft_xmalloc((size_t)(n + 1) * sizeof *v);
    int64_t *sizes = ft_xmalloc((size_t)(n + 1) * sizeof *sizes);
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        v[i] = &t[i];
        rc = check_wtensor(&t[i], &sizes[i], e);
    }
    if (rc == 0 && n > 1)
        qsort(v, (size_t)n, sizeof *v, cmp_wtensor_ptr);
    for (int i = 1; rc == 0 && i < n; i++)
        if (strcmp(v[i - 1]->name, v[i]->name) == 0)
            rc = ft_fail(e, "%s: st_write: duplicate tensor name '%s'", path, v[i]->name);
    for (int i = 0; rc == 0 && i < n; i++) /* sizes follow the sorted order from here on */
        sizes[i] = shape_bytes(v[i]->shape, v[i]->ndim, dtype_sizes[v[i]->dtype]);
    sbuf_t h = {0};
    if (rc == 0) {
        build_header(&h, v, sizes, n, meta, nmeta, meta_kv != NULL);
        rc = write_all(path, &h, v, sizes, n, e);
    }
    free(h.p);
    free(sizes);
    free(v);
    free(meta);
    return rc;
}
