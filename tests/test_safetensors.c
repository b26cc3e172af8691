/* test_safetensors.c — the safetensors reader and writer: round trips through every float
 * dtype, the exact bytes of a small written file, folders and sharded indexes, and a long
 * list of malformed files, each of which must fail with a message naming the problem. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "runtime/safetensors.h"
#include "tests/check.h"

static char tmpdir[64];

static void tpath(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (n)
        fwrite(p, 1, n, f);
    fclose(f);
}

/* A safetensors file from a header string (unpadded is fine) and raw data bytes. */
static void write_st(const char *path, const char *header, const void *data, size_t ndata)
{
    size_t hl = strlen(header);
    unsigned char *buf = ft_xmalloc(8 + hl + ndata);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (ndata)
        memcpy(buf + 8 + hl, data, ndata);
    write_bytes(path, buf, 8 + hl + ndata);
    free(buf);
}

/* st_open(path) must fail, leave the model empty, and say `phrase` (and `also` if given). */
static void expect_fail(const char *path, const char *phrase, const char *also)
{
    st_model_t m;
    ft_err_t e = {{0}};
    int rc = st_open(&m, path, &e);
    CHECK_MSG(rc == -1, "%s: st_open succeeded, expected failure with '%s'", path, phrase);
    CHECK_MSG(strstr(e.msg, phrase) != NULL, "message '%s' lacks '%s'", e.msg, phrase);
    if (also)
        CHECK_MSG(strstr(e.msg, also) != NULL, "message '%s' lacks '%s'", e.msg, also);
    CHECK(m.ntensors == 0 && m.nfiles == 0 && m.tensors == NULL);
    st_close(&m);
}

/* Writes `header` + data into a fresh file named `name` and expects failure with phrase. */
static void expect_bad_header(const char *name, const char *header, size_t ndata, const char *phrase)
{
    char p[256];
    tpath(p, sizeof p, name);
    unsigned char data[64] = {0};
    write_st(p, header, data, ndata);
    expect_fail(p, phrase, p);
}

static void test_round_trip(void)
{
    float a[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
    uint16_t b[4], h[3];
    float bsrc[4] = {1.0f, -0.5f, 3.0f, 1024.0f}, hsrc[3] = {0.5f, -2.0f, 1.0f / 1024.0f};
    for (int i = 0; i < 4; i++)
        b[i] = ft_f32_to_bf16(bsrc[i]);
    for (int i = 0; i < 3; i++)
        h[i] = ft_f32_to_f16(hsrc[i]);
    double d[2] = {3.141592653589793, -1e-300};
    int32_t ints[2] = {7, -9};
    uint8_t scalar = 42;
    st_wtensor_t w[] = {
        {"model.layers.0.w", ST_F32, 2, {2, 3}, a},
        {"bf", ST_BF16, 1, {4}, b},
        {"half", ST_F16, 1, {3}, h},
        {"dbl", ST_F64, 1, {2}, d},
        {"ints", ST_I32, 1, {2}, ints},
        {"scalar", ST_U8, 0, {0}, &scalar},
        {"empty", ST_F32, 2, {0, 5}, NULL},
    };
    const char *meta[] = {"format", "pt", "note", "quote \" and \\ and \n", NULL};
    char p[256];
    tpath(p, sizeof p, "rt.safetensors");
    ft_err_t e = {{0}};
    CHECK_MSG(st_write(p, w, 7, meta, &e) == 0, "%s", e.msg);

    st_model_t m;
    CHECK_MSG(st_open(&m, p, &e) == 0, "%s", e.msg);
    CHECK(m.ntensors == 7 && m.nfiles == 1);
    for (int i = 1; i < m.ntensors; i++)
        CHECK(strcmp(m.tensors[i - 1].name, m.tensors[i].name) < 0);
    CHECK(st_meta(&m, "format") && strcmp(st_meta(&m, "format"), "pt") == 0);
    CHECK(st_meta(&m, "note") && strcmp(st_meta(&m, "note"), "quote \" and \\ and \n") == 0);
    CHECK(st_meta(&m, "nope") == NULL);
    CHECK(st_find(&m, "nope") == NULL);

    const st_tensor_t *t = st_find(&m, "model.layers.0.w");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nbytes == 24);
    float f[6];
    CHECK(t && st_read_f32(t, f, &e) == 0 && memcmp(f, a, sizeof a) == 0);

    t = st_find(&m, "bf");
    CHECK(t && t->dtype == ST_BF16 && st_numel(t) == 4);
    CHECK(t && st_read_f32(t, f, &e) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(f[i] == bsrc[i]);

    t = st_find(&m, "half");
    double dd[3];
    CHECK(t && st_read_f64(t, dd, &e) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(dd[i] == (double)hsrc[i]);

    t = st_find(&m, "dbl");
    CHECK(t && st_read_f64(t, dd, &e) == 0 && dd[0] == d[0] && dd[1] == d[1]);
    CHECK(t && st_read_f32(t, f, &e) == 0 && f[0] == (float)d[0]);

    t = st_find(&m, "ints");
    CHECK(t && t->dtype == ST_I32 && memcmp(t->data, ints, 8) == 0);
    CHECK(t && st_read_f32(t, f, &e) == -1 && strstr(e.msg, "'ints' has dtype I32") != NULL);

    t = st_find(&m, "scalar");
    CHECK(t && t->ndim == 0 && st_numel(t) == 1 && t->nbytes == 1 && *(const uint8_t *)t->data == 42);

    t = st_find(&m, "empty");
    CHECK(t && t->nbytes == 0 && st_numel(t) == 0);
    st_close(&m);
    CHECK(m.ntensors == 0 && m.tensors == NULL);
    st_close(&m); /* twice is harmless */
}

/* The exact bytes of a small file, derived by hand from the format:
 *   tensors sorted by name ("a" before "b"), "__metadata__" first, keys inside an entry
 *   sorted (data_offsets, dtype, shape), compact JSON. "a" is U8[3] -> bytes [0,3);
 *   "b" is F32[2] -> bytes [3,11). The JSON text below is 138 bytes; padded with 6 spaces
 *   to 144 = 0x90, a multiple of 8. The file is 8 + 144 + 11 = 163 bytes. */
static void test_exact_bytes(void)
{
    static const char json[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"data_offsets\":[0,3],\"dtype\":\"U8\",\"shape\":[3]},"
        "\"b\":{\"data_offsets\":[3,11],\"dtype\":\"F32\",\"shape\":[2]}}";
    CHECK(strlen(json) == 138);
    unsigned char want[163];
    const unsigned char len8[8] = {0x90, 0, 0, 0, 0, 0, 0, 0};
    memcpy(want, len8, 8);
    memcpy(want + 8, json, 138);
    memcpy(want + 146, "      ", 6);
    const unsigned char data[11] = {1, 2, 3, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40};
    memcpy(want + 152, data, 11);

    float bv[2] = {1.0f, 2.0f};
    uint8_t av[3] = {1, 2, 3};
    st_wtensor_t w[2] = {{"b", ST_F32, 1, {2}, bv}, {"a", ST_U8, 1, {3}, av}};
    st_wtensor_t w_rev[2] = {w[1], w[0]};
    const char *meta[] = {"format", "pt", NULL};
    char p[256];
    ft_err_t e = {{0}};
    for (int round = 0; round < 2; round++) { /* input order must not matter */
        tpath(p, sizeof p, "exact.safetensors");
        CHECK_MSG(st_write(p, round ? w_rev : w, 2, meta, &e) == 0, "%s", e.msg);
        char *got = NULL;
        size_t n = 0;
        CHECK(ft_read_file(p, &got, &n, &e) == 0);
        CHECK_MSG(n == sizeof want, "file is %zu bytes, want %zu", n, sizeof want);
        CHECK(got && n == sizeof want && memcmp(got, want, n) == 0);
        free(got);
    }
    /* without metadata: no "__metadata__" key at all */
    tpath(p, sizeof p, "exact2.safetensors");
    CHECK(st_write(p, w, 2, NULL, &e) == 0);
    char *got = NULL;
    size_t n = 0;
    CHECK(ft_read_file(p, &got, &n, &e) == 0);
    static const char json2[] =
        "{\"a\":{\"data_offsets\":[0,3],\"dtype\":\"U8\",\"shape\":[3]},"
        "\"b\":{\"data_offsets\":[3,11],\"dtype\":\"F32\",\"shape\":[2]}}";
    CHECK(strlen(json2) == 107); /* 138 less the 31 of "__metadata__":{"format":"pt"}, -> 112 */
    CHECK(got && n == 8 + 112 + 11 && (unsigned char)got[0] == 112 && memcmp(got + 8, json2, 107) == 0 &&
          memcmp(got + 8 + 107, "     ", 5) == 0 && memcmp(got + 120, data, 11) == 0);
    free(got);
}

static void test_folder_and_shards(void)
{
    char dir[256], p[320];
    ft_err_t e = {{0}};
    float x[2] = {1, 2}, y[3] = {3, 4, 5}, z[1] = {6};

    /* a folder holding model.safetensors */
    tpath(dir, sizeof dir, "single");
    CHECK(ft_mkdir_p(dir, &e) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    st_wtensor_t w1[] = {{"x", ST_F32, 1, {2}, x}};
    CHECK(st_write(p, w1, 1, NULL, &e) == 0);
    st_model_t m;
    CHECK_MSG(st_open(&m, dir, &e) == 0, "%s", e.msg);
    CHECK(m.ntensors == 1 && st_find(&m, "x") != NULL);
    st_close(&m);

    /* a sharded checkpoint */
    tpath(dir, sizeof dir, "sharded");
    CHECK(ft_mkdir_p(dir, &e) == 0);
    st_wtensor_t s1[] = {{"x", ST_F32, 1, {2}, x}, {"z", ST_F32, 1, {1}, z}};
    st_wtensor_t s2[] = {{"y", ST_F32, 1, {3}, y}};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    CHECK(st_write(p, s1, 2, NULL, &e) == 0);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(st_write(p, s2, 1, NULL, &e) == 0);
    static const char index[] =
        "{\"metadata\": {\"total_size\": 24}, \"weight_map\": {"
        "\"y\": \"model-00002-of-00002.safetensors\", \"x\": \"model-00001-of-00002.safetensors\","
        " \"z\": \"model-00001-of-00002.safetensors\"}}";
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, index, strlen(index));
    for (int round = 0; round < 2; round++) {
        CHECK_MSG(st_open(&m, round ? p : dir, &e) == 0, "%s", e.msg);
        CHECK(m.ntensors == 3 && m.nfiles == 2);
        const st_tensor_t *t = st_find(&m, "y");
        float f[3];
        CHECK(t && strstr(m.files[t->file].path, "model-00002-of-00002") && st_read_f32(t, f, &e) == 0 &&
              f[2] == 5);
        t = st_find(&m, "z");
        CHECK(t && strstr(m.files[t->file].path, "model-00001-of-00002") && st_read_f32(t, f, &e) == 0 &&
              f[0] == 6);
        st_close(&m);
    }

    /* index naming a shard that is missing */
    static const char idx_missing[] = "{\"weight_map\": {\"x\": \"model-00001-of-00002.safetensors\","
                                      " \"q\": \"model-00009-of-00009.safetensors\"}}";
    write_bytes(p, idx_missing, strlen(idx_missing));
    expect_fail(dir, "names shard file model-00009-of-00009.safetensors, which is missing", NULL);

    /* index naming a tensor that its shard lacks */
    static const char idx_lacks[] = "{\"weight_map\": {\"x\": \"model-00001-of-00002.safetensors\","
                                    " \"y\": \"model-00001-of-00002.safetensors\","
                                    " \"z\": \"model-00002-of-00002.safetensors\"}}";
    write_bytes(p, idx_lacks, strlen(idx_lacks));
    expect_fail(dir, "index puts tensor 'y' in shard model-00001-of-00002.safetensors, but that shard lacks it",
                NULL);

    /* a shard tensor that the index does not list */
    static const char idx_short[] = "{\"weight_map\": {\"x\": \"model-00001-of-00002.safetensors\","
                                    " \"y\": \"model-00002-of-00002.safetensors\"}}";
    write_bytes(p, idx_short, strlen(idx_short));
    expect_fail(dir, "holds tensor 'z', which the index does not list", NULL);

    /* index without weight_map, and not JSON */
    write_bytes(p, "{\"metadata\": {}}", 16);
    expect_fail(dir, "\"weight_map\"", NULL);
    write_bytes(p, "{weight", 7);
    expect_fail(dir, "not a valid index", NULL);

    /* the same tensor name in two shards */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    st_wtensor_t s2dup[] = {{"y", ST_F32, 1, {3}, y}, {"x", ST_F32, 1, {2}, x}};
    CHECK(st_write(p, s2dup, 2, NULL, &e) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, index, strlen(index));
    expect_fail(dir, "tensor 'x' appears in both", "duplicate name across shards");

    /* a folder with neither file */
    tpath(dir, sizeof dir, "emptydir");
    CHECK(ft_mkdir_p(dir, &e) == 0);
    expect_fail(dir, "holds neither model.safetensors.index.json nor model.safetensors", NULL);
}

static void test_malformed(void)
{
    char p[256];

    tpath(p, sizeof p, "does-not-exist.safetensors");
    expect_fail(p, "cannot open", p);

    tpath(p, sizeof p, "empty.safetensors");
    write_bytes(p, "", 0);
    expect_fail(p, "file is 0 bytes, too short for a safetensors header", p);

    tpath(p, sizeof p, "short.safetensors");
    write_bytes(p, "\x10\0\0\0\0", 5);
    expect_fail(p, "file is 5 bytes, too short", p);

    /* header length beyond the file */
    tpath(p, sizeof p, "hlen.safetensors");
    unsigned char raw[18] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(p, raw, 10);
    expect_fail(p, "header length 1000 exceeds the file size 10", p);

    /* absurd header length */
    tpath(p, sizeof p, "absurd.safetensors");
    unsigned char big[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    write_bytes(p, big, 16);
    expect_fail(p, "is absurd", p);

    expect_bad_header("badjson.safetensors", "{\"x\": {\"dtype\": ", 0, "header is not valid JSON");
    expect_bad_header("array.safetensors", "[1, 2, 3]", 0, "header is not a JSON object");
    expect_bad_header("notobj.safetensors", "{\"x\": 5}", 0, "tensor 'x': entry is not an object");
    expect_bad_header("nooff.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8,
                      "tensor 'x': missing or ill-typed \"data_offsets\"");
    expect_bad_header("offstr.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, \"8\"]}}",
                      8, "\"data_offsets\" are not integers");
    expect_bad_header("nodtype.safetensors", "{\"x\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8,
                      "tensor 'x': missing or ill-typed \"dtype\"");
    expect_bad_header("dtype.safetensors", "{\"x\": {\"dtype\": \"F33\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                      8, "tensor 'x': unknown dtype \"F33\"");
    expect_bad_header("noshape.safetensors", "{\"x\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8,
                      "tensor 'x': missing or ill-typed \"shape\"");
    expect_bad_header("negdim.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}",
                      8, "tensor 'x': shape[0] is negative");
    expect_bad_header("realdim.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [2.0], \"data_offsets\": [0, 8]}}",
                      8, "shape[0] is not an integer");
    expect_bad_header("hugedim.safetensors",
                      "{\"x\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4], \"data_offsets\": [0, 8]}}",
                      8, "element count overflows");
    expect_bad_header("ninedim.safetensors",
                      "{\"x\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 8,
                      "9 dimensions");
    expect_bad_header("endlt.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}",
                      8, "data_offsets end 0 < begin 8");
    expect_bad_header("size.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
                      12, "tensor 'x': data_offsets span 8 bytes but F32 shape needs 12 (size mismatch)");
    expect_bad_header("overlap.safetensors",
                      "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                      " \"y\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                      12, "tensors 'x' and 'y' overlap");
    expect_bad_header("dupkey.safetensors",
                      "{\"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
                      " \"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
                      2, "duplicate");
    expect_bad_header("meta.safetensors", "{\"__metadata__\": {\"format\": 3}}", 0,
                      "\"__metadata__\" value of 'format' is not a string");

    /* truncated data: the exact message. Header is 64 bytes, so data ends at 8+64+16 = 88. */
    tpath(p, sizeof p, "model.safetensors");
    const char *h = "{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}";
    char hdr[65];
    snprintf(hdr, sizeof hdr, "%-64s", h);
    CHECK(strlen(hdr) == 64);
    unsigned char data[16] = {0};
    write_st(p, hdr, data, 10);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor 'x' data ends at byte 88 but the file has only 82 bytes (truncated?)", p);
    expect_fail(p, want, NULL);

    /* zero-length tensors may share an offset with others without overlapping */
    tpath(p, sizeof p, "zero.safetensors");
    write_st(p, "{\"x\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]},"
                " \"y\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}}", data, 2);
    st_model_t m;
    ft_err_t e = {{0}};
    CHECK_MSG(st_open(&m, p, &e) == 0, "%s", e.msg);
    st_close(&m);
}

static void test_writer_errors(void)
{
    char p[256];
    tpath(p, sizeof p, "werr.safetensors");
    float x[2] = {0};
    ft_err_t e = {{0}};
    st_wtensor_t dup[] = {{"x", ST_F32, 1, {2}, x}, {"x", ST_F32, 1, {2}, x}};
    CHECK(st_write(p, dup, 2, NULL, &e) == -1 && strstr(e.msg, "duplicate tensor name 'x'"));
    st_wtensor_t neg[] = {{"x", ST_F32, 1, {-2}, x}};
    CHECK(st_write(p, neg, 1, NULL, &e) == -1 && strstr(e.msg, "negative or overflowing shape"));
    st_wtensor_t nodata[] = {{"x", ST_F32, 1, {2}, NULL}};
    CHECK(st_write(p, nodata, 1, NULL, &e) == -1 && strstr(e.msg, "no data"));
    st_wtensor_t badname[] = {{"\xff\xfe", ST_F32, 1, {2}, x}};
    CHECK(st_write(p, badname, 1, NULL, &e) == -1 && strstr(e.msg, "invalid tensor name"));
    st_wtensor_t ok[] = {{"x", ST_F32, 1, {2}, x}};
    const char *meta_odd[] = {"k", NULL};
    CHECK(st_write(p, ok, 1, meta_odd, &e) == -1 && strstr(e.msg, "has no value"));
    const char *meta_dup[] = {"k", "1", "k", "2", NULL};
    CHECK(st_write(p, ok, 1, meta_dup, &e) == -1 && strstr(e.msg, "repeated"));
    CHECK(access(p, F_OK) != 0); /* nothing written on failure */
    CHECK(st_dtype_size(ST_BF16) == 2 && st_dtype_size(ST_F64) == 8 && st_dtype_size(ST_DTYPE_COUNT) == 0);
    CHECK(strcmp(st_dtype_name(ST_F8_E4M3), "F8_E4M3") == 0 && strcmp(st_dtype_name(ST_DTYPE_COUNT), "?") == 0);
    st_dtype_t dt;
    CHECK(st_dtype_parse("BF16", &dt) == 0 && dt == ST_BF16 && st_dtype_parse("bf16", &dt) == -1);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftc_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_round_trip();
    test_exact_bytes();
    test_folder_and_shards();
    test_malformed();
    test_writer_errors();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return CHECK_DONE();
}
