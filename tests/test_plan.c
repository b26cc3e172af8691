/* test_plan.c — plan.bin: a small scheduled, memory-planned plan survives serialise → parse
 * → serialise byte for byte with every field intact, the file is written atomically, and
 * malformed files are rejected with the expected message and without a crash: every
 * truncation, every single-byte flip, and one forged (re-checksummed) file per check the
 * reader makes. A GPU plan (the same plan with a kernel module) gets the same treatment, and
 * every check on its launch records and kernel names. Run under ASan/UBSan too: every
 * parse reads from an exact-size copy. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "runtime/plan.h"
#include "tests/check.h"

static char tmpdir[64];

/* ---- the plan under test ---- */

enum { T_X, T_W, T_WGRAD, T_WM, T_WV, T_B, T_H, T_A, T_LOSS, T_COUNT };

static int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

static void build_graph(ir_graph_t *g)
{
    ir_graph_init(g);
    const int64_t xs[2] = {4, 8}, ws[2] = {8, 8};
    ir_leaf(g, "x", IR_INPUT, IR_F32, 2, xs);
    int w = ir_leaf(g, "model.w", IR_TRAINABLE, IR_F32, 2, ws);
    ir_leaf(g, "model.w.grad", IR_GRAD, IR_F32, 2, ws);
    ir_leaf(g, "model.w.m", IR_OPTSTATE, IR_F32, 2, ws);
    ir_leaf(g, "model.w.v", IR_OPTSTATE, IR_F32, 2, ws);
    int b = ir_leaf(g, "model.b", IR_FROZEN, IR_F32, 2, xs);
    g->cur_block = 0;
    int h = ir_matmul(g, T_X, w, false, false);
    int a = ir_add(g, h, b);
    g->cur_block = -1;
    int loss = ir_sum(g, a);
    g->t[loss].flags |= IR_FLAG_LOSS | IR_FLAG_OUTPUT;
    g->t[w].grad = T_WGRAD;
    g->t[w].state[0] = T_WM;
    g->t[w].state[1] = T_WV;
    /* Awkward values in fields nothing interprets for a leaf: they must survive exactly. */
    g->t[w].ip[7] = INT64_MIN;
    g->t[w].fp[1] = NAN;
    g->t[w].fp[2] = -0.0;
    g->t[w].fp[3] = 1e-300;
    g->t[b].block = 3;

    g->nsched = 0;
    g->sched = ft_xmalloc((size_t)g->n * sizeof *g->sched);
    for (int i = 0; i < g->n; i++)
        if (g->t[i].op != OP_LEAF)
            g->sched[g->nsched++] = i;
    /* A bump allocator: valid, if wasteful, since no two tensors share bytes. */
    int64_t at = 0;
    for (int i = 0; i < g->n; i++) {
        g->t[i].offset = at;
        at = align256(at + ir_nbytes(&g->t[i]));
    }
    g->arena_bytes = at;
}

static void build_plan(plan_t *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->target, sizeof p->target, "cpu");
    fe_config_defaults(&p->cfg);
    p->cfg.vocab = 32;
    p->cfg.hidden = 8;
    p->cfg.layers = 1;
    p->cfg.heads = 2;
    p->cfg.kv_heads = 2;
    p->cfg.ffn = 16;
    p->cfg.seq_len = 4;
    p->cfg.lr = 1e-4;
    build_graph(&p->g);
    p->nw = 2;
    p->w = ft_xcalloc(2, sizeof *p->w);
    p->w[0] = (plan_weight_t){.tensor = T_W, .init = PLAN_INIT_FILE, .param = 0};
    snprintf(p->w[0].key, sizeof p->w[0].key, "model.layers.0.mlp.weight");
    p->w[1] = (plan_weight_t){.tensor = T_B, .init = PLAN_INIT_NORMAL, .param = 0.02};
    snprintf(p->w[1].key, sizeof p->w[1].key, "model.b");
}

/* The same plan for a GPU: a (fake) cubin whose length is not a multiple of 8, three kernels
 * and one launch record per scheduled node (matmul, add, and sum with a second kernel and
 * scratch). */
static const char *const gpu_names[3] = {"ftk_add_f32_f32_f32", "ftk_sum_f32_f32", "ftk_sum_f32_f32_s2"};

static void build_gpu_plan(plan_t *p)
{
    build_plan(p);
    snprintf(p->target, sizeof p->target, "sm_90");
    cg_module_t *m = &p->cuda;
    snprintf(m->target, sizeof m->target, "sm_90");
    static const unsigned char image[13] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0x33, 7, 0, 0, 0, 0xAB};
    m->image_len = sizeof image;
    m->image = ft_xmalloc(sizeof image);
    memcpy(m->image, image, sizeof image);
    m->nnames = 3;
    m->names = ft_xmalloc(3 * sizeof *m->names);
    for (int i = 0; i < 3; i++)
        m->names[i] = ft_xstrdup(gpu_names[i]);
    m->nlaunch = 3;
    m->launch = ft_xcalloc(3, sizeof *m->launch);
    m->launch[0] = (cg_launch_t){.node = T_H, .kind = CG_MATMUL, .kernel = -1, .kernel2 = -1};
    m->launch[1] = (cg_launch_t){
        .node = T_A, .kind = CG_KERNEL, .kernel = 0, .grid = {1, 1, 1}, .block = {256, 1, 1}, .kernel2 = -1};
    m->launch[2] = (cg_launch_t){.node = T_LOSS,
                                 .kind = CG_KERNEL,
                                 .kernel = 1,
                                 .grid = {1, 1, 1},
                                 .block = {1024, 1, 1},
                                 .smem = 64,
                                 .kernel2 = 2,
                                 .grid2 = {1, 1, 1},
                                 .block2 = {256, 1, 1},
                                 .scratch = 288};
    p->has_cuda = true;
}

/* ---- field-by-field comparison ---- */

static bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static bool tensors_equal(const ir_tensor_t *a, const ir_tensor_t *b)
{
    if (a->op != b->op || a->dtype != b->dtype || a->role != b->role || a->phase != b->phase)
        return false;
    if (a->ndim != b->ndim || a->nsrc != b->nsrc || a->block != b->block || a->flags != b->flags)
        return false;
    if (a->grad != b->grad || a->state[0] != b->state[0] || a->state[1] != b->state[1] || a->offset != b->offset)
        return false;
    for (int i = 0; i < IR_MAX_DIMS; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    for (int i = 0; i < IR_MAX_SRC; i++)
        if (a->src[i] != b->src[i])
            return false;
    for (int i = 0; i < IR_MAX_PARAMS; i++)
        if (a->ip[i] != b->ip[i] || !same_bits(a->fp[i], b->fp[i]))
            return false;
    return strcmp(a->name, b->name) == 0;
}

static void check_modules_equal(const cg_module_t *a, const cg_module_t *b)
{
    CHECK(strcmp(a->target, b->target) == 0);
    CHECK(a->image_len == b->image_len && memcmp(a->image, b->image, a->image_len) == 0);
    CHECK(a->nnames == b->nnames);
    for (int i = 0; i < a->nnames && i < b->nnames; i++)
        CHECK(strcmp(a->names[i], b->names[i]) == 0);
    CHECK(a->nlaunch == b->nlaunch);
    for (int i = 0; i < a->nlaunch && i < b->nlaunch; i++) {
        const cg_launch_t *x = &a->launch[i], *y = &b->launch[i];
        CHECK_MSG(x->node == y->node && x->kind == y->kind && x->kernel == y->kernel && x->smem == y->smem &&
                      memcmp(x->grid, y->grid, sizeof x->grid) == 0 && memcmp(x->block, y->block, sizeof x->block) == 0,
                  "launch %d differs", i);
        CHECK_MSG(x->kernel2 == y->kernel2 && x->smem2 == y->smem2 && x->scratch == y->scratch &&
                      memcmp(x->grid2, y->grid2, sizeof x->grid2) == 0 &&
                      memcmp(x->block2, y->block2, sizeof x->block2) == 0,
                  "launch %d's second kernel or scratch differs", i);
    }
}

static void check_plans_equal(const plan_t *a, const plan_t *b)
{
    CHECK(strcmp(a->target, b->target) == 0);
    char *ta = fe_config_to_text(&a->cfg), *tb = fe_config_to_text(&b->cfg);
    CHECK_MSG(strcmp(ta, tb) == 0, "settings differ:\n%s---\n%s", ta, tb);
    free(ta);
    free(tb);
    CHECK(b->cfg.hidden == 8 && b->cfg.lr == 1e-4);
    CHECK(a->g.n == b->g.n);
    CHECK(a->g.arena_bytes == b->g.arena_bytes);
    for (int i = 0; i < a->g.n && i < b->g.n; i++)
        CHECK_MSG(tensors_equal(&a->g.t[i], &b->g.t[i]), "tensor %d '%s' differs", i, a->g.t[i].name);
    CHECK(a->g.nsched == b->g.nsched);
    for (int i = 0; i < a->g.nsched && i < b->g.nsched; i++)
        CHECK(a->g.sched[i] == b->g.sched[i]);
    CHECK(a->nw == b->nw);
    for (int i = 0; i < a->nw && i < b->nw; i++) {
        CHECK(a->w[i].tensor == b->w[i].tensor);
        CHECK(a->w[i].init == b->w[i].init);
        CHECK(same_bits(a->w[i].param, b->w[i].param));
        CHECK(strcmp(a->w[i].key, b->w[i].key) == 0);
    }
    CHECK(a->has_cuda == b->has_cuda);
    if (a->has_cuda && b->has_cuda)
        check_modules_equal(&a->cuda, &b->cuda);
}

/* ---- forging files: patch bytes, then make the checksum right again ---- */

static uint64_t get_le(const unsigned char *s, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)s[i] << (8 * i);
    return v;
}

static void put_le(unsigned char *d, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        d[i] = (unsigned char)(v >> (8 * i));
}

static void rechecksum(unsigned char *buf, size_t len)
{
    put_le(buf + 24, ft_fnv1a(FT_FNV_INIT, buf + PLAN_HEADER_BYTES, len - PLAN_HEADER_BYTES), 8);
}

static size_t table_entry(int i) { return PLAN_HEADER_BYTES + 24u * (size_t)i; }

static size_t section_at(const unsigned char *buf, plan_section_t kind)
{
    uint32_t count = (uint32_t)get_le(buf + 12, 4);
    for (uint32_t i = 0; i < count; i++)
        if (get_le(buf + table_entry((int)i), 4) == (uint64_t)kind)
            return (size_t)get_le(buf + table_entry((int)i) + 8, 8);
    fprintf(stderr, "test: section %d not found\n", (int)kind);
    exit(2);
}

/* Byte offsets inside one encoded tensor record (see plan_write.c's write_tensor). */
enum {
    R_OP = 0, R_DTYPE = 4, R_ROLE = 8, R_PHASE = 12, R_NDIM = 16, R_SHAPE = 20, R_NSRC = 52, R_SRC = 56,
    R_IP = R_SRC + 4 * IR_MAX_SRC, R_FP = R_IP + 64, R_BLOCK = R_FP + 64, R_FLAGS = R_BLOCK + 4, R_GRAD = R_FLAGS + 4,
    R_STATE = R_GRAD + 4, R_OFFSET = R_STATE + 8, R_NAMELEN = R_OFFSET + 8, R_NAME = R_NAMELEN + 4
};
_Static_assert(R_NAME == 244, "a tensor record of plan format 4 (IR_MAX_SRC 7)");

static size_t tensor_at(const unsigned char *buf, int id)
{
    size_t at = section_at(buf, PLAN_SEC_GRAPH) + 8;
    for (int i = 0; i < id; i++)
        at += R_NAME + (size_t)get_le(buf + at + R_NAMELEN, 4);
    return at;
}

/* Parses an exact-size copy (so ASan sees any over-read) and expects a rejection naming the
 * file and containing `phrase`. */
static void expect_reject(const unsigned char *buf, size_t len, const char *phrase, const char *why)
{
    unsigned char *copy = ft_xmalloc(len);
    if (len)
        memcpy(copy, buf, len);
    plan_t p;
    ft_err_t e = {{0}};
    int rc = plan_parse(copy, len, "forged.plan", &p, &e);
    free(copy);
    CHECK_MSG(rc == -1, "%s: accepted, expected '%s'", why, phrase);
    if (rc == 0) {
        plan_free(&p);
        return;
    }
    CHECK_MSG(strstr(e.msg, phrase) != NULL, "%s: message '%s' lacks '%s'", why, e.msg, phrase);
    CHECK_MSG(strncmp(e.msg, "forged.plan: ", 13) == 0, "%s: message '%s' does not name the file", why, e.msg);
    CHECK(p.g.t == NULL && p.w == NULL && p.g.sched == NULL);
}

typedef struct {
    unsigned char *b;
    size_t n;
} image_t;

static image_t clone(const unsigned char *buf, size_t len)
{
    image_t im = {ft_xmalloc(len), len};
    memcpy(im.b, buf, len);
    return im;
}

/* Patches `nbytes` at `at` to v, re-checksums and expects the rejection. */
static void forge(const unsigned char *buf, size_t len, size_t at, uint64_t v, int nbytes, const char *phrase,
                  const char *why)
{
    image_t im = clone(buf, len);
    put_le(im.b + at, v, nbytes);
    rechecksum(im.b, im.n);
    expect_reject(im.b, im.n, phrase, why);
    free(im.b);
}

/* ---- tests ---- */

static void test_roundtrip(const plan_t *p, const unsigned char *buf, size_t len)
{
    unsigned char *again;
    size_t alen;
    ft_err_t e = {{0}};
    CHECK(plan_serialize(p, &again, &alen, &e) == 0);
    CHECK_MSG(alen == len && memcmp(again, buf, len) == 0, "serialising the same plan twice differs");
    free(again);

    plan_t q;
    int rc = plan_parse(buf, len, "mem.plan", &q, &e);
    CHECK_MSG(rc == 0, "parse: %s", e.msg);
    if (rc != 0)
        return;
    check_plans_equal(p, &q);
    unsigned char *re;
    size_t relen;
    CHECK(plan_serialize(&q, &re, &relen, &e) == 0);
    CHECK_MSG(relen == len && memcmp(re, buf, len) == 0, "serialise(parse(bytes)) differs from bytes");
    free(re);
    plan_free(&q);
    CHECK(q.g.t == NULL && q.w == NULL);
}

static void test_empty_plan(void)
{
    plan_t p;
    memset(&p, 0, sizeof p);
    fe_config_defaults(&p.cfg);
    ir_graph_init(&p.g);
    unsigned char *buf;
    size_t len;
    ft_err_t e = {{0}};
    CHECK(plan_serialize(&p, &buf, &len, &e) == 0);
    plan_t q;
    int rc = plan_parse(buf, len, "empty.plan", &q, &e);
    CHECK_MSG(rc == 0, "empty plan: %s", e.msg);
    if (rc == 0) {
        CHECK(q.g.n == 0 && q.g.nsched == 0 && q.nw == 0 && q.target[0] == 0);
        plan_free(&q);
    }
    free(buf);
}

static bool dir_has_tmp_files(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp."))
            found = true;
    closedir(d);
    return found;
}

static void test_file_io(const plan_t *p, const unsigned char *buf, size_t len)
{
    char path[128], missing[128], nodir[128];
    snprintf(path, sizeof path, "%s/plan.bin", tmpdir);
    snprintf(missing, sizeof missing, "%s/absent.bin", tmpdir);
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/plan.bin", tmpdir);
    ft_err_t e = {{0}};
    CHECK_MSG(plan_write(p, path, &e) == 0, "write: %s", e.msg);
    char *data;
    size_t n;
    CHECK(ft_read_file(path, &data, &n, &e) == 0);
    CHECK(n == len && memcmp(data, buf, len) == 0);
    free(data);
    CHECK(!dir_has_tmp_files());

    plan_t q;
    int rc = plan_read(path, &q, &e);
    CHECK_MSG(rc == 0, "read: %s", e.msg);
    if (rc == 0) {
        check_plans_equal(p, &q);
        plan_free(&q);
    }

    CHECK(plan_read(missing, &q, &e) == -1);
    CHECK_MSG(strstr(e.msg, missing) != NULL, "'%s' does not name %s", e.msg, missing);
    CHECK(plan_write(p, nodir, &e) == -1);
    CHECK(access(nodir, F_OK) != 0);

    /* A file rejected by plan_read is named by its path. */
    FILE *f = fopen(path, "wb");
    fwrite("FTCPLAN", 1, 8, f);
    fclose(f);
    CHECK(plan_read(path, &q, &e) == -1);
    CHECK_MSG(strstr(e.msg, path) && strstr(e.msg, "too short for the header"), "short file: '%s'", e.msg);
    unlink(path);
}

static void test_writer_rejects(plan_t *p)
{
    unsigned char *buf;
    size_t len;
    ft_err_t e = {{0}};
    char saved[IR_NAME_MAX];
    memcpy(saved, p->g.t[0].name, IR_NAME_MAX);
    memset(p->g.t[0].name, 'a', IR_NAME_MAX);
    CHECK(plan_serialize(p, &buf, &len, &e) == -1);
    CHECK_MSG(strstr(e.msg, "not terminated") != NULL, "'%s'", e.msg);
    CHECK(buf == NULL && len == 0);
    memcpy(p->g.t[0].name, saved, IR_NAME_MAX);
}

static void test_truncations(const unsigned char *buf, size_t len)
{
    char phrase[96];
    for (size_t l = 0; l < len; l++) {
        if (l < PLAN_HEADER_BYTES)
            snprintf(phrase, sizeof phrase, "too short for the header");
        else
            snprintf(phrase, sizeof phrase, "truncated: header says %zu bytes, file has %zu", len, l);
        expect_reject(buf, l, phrase, "truncation");
    }
}

static void test_byte_flips(const unsigned char *buf, size_t len)
{
    image_t im = clone(buf, len);
    for (size_t i = 0; i < len; i++) {
        im.b[i] ^= 0xFF;
        /* After the header the checksum catches every flip; in the header each field has a
         * check of its own (magic, version, section count, size, checksum). */
        expect_reject(im.b, len, i >= PLAN_HEADER_BYTES ? "checksum mismatch: the file is corrupt" : "", "byte flip");
        im.b[i] ^= 0xFF;
    }
    free(im.b);
}

static void test_header_forgeries(const unsigned char *buf, size_t len)
{
    char phrase[96];
    forge(buf, len, 0, 'X', 1, "not a plan file (bad magic)", "magic");
    forge(buf, len, 8, 99, 4, "plan format version 99, this ftrun reads version 4: recompile the plan", "version");
    snprintf(phrase, sizeof phrase, "truncated: header says %zu bytes, file has %zu", len + 8, len);
    forge(buf, len, 16, len + 8, 8, phrase, "size too big");
    snprintf(phrase, sizeof phrase, "trailing bytes: header says %zu bytes, file has %zu", len - 8, len);
    forge(buf, len, 16, len - 8, 8, phrase, "size too small");
    forge(buf, len, 12, 4, 4, "missing required manifest section", "section count");
    forge(buf, len, 12, 1000000, 4, "section table (1000000 entries) runs past the end", "huge section count");
    forge(buf, len, 12, 6, 4, "overlaps the section table", "extra section entry");

    image_t im = clone(buf, len);
    im.b[len - 1] ^= 1; /* no re-checksum */
    expect_reject(im.b, len, "checksum mismatch: the file is corrupt", "checksum");
    free(im.b);
}

static void test_table_forgeries(const unsigned char *buf, size_t len)
{
    forge(buf, len, table_entry(0), 9, 4, "section 0: unknown section kind 9", "unknown kind");
    forge(buf, len, table_entry(0), 0, 4, "unknown section kind 0", "kind zero");
    forge(buf, len, table_entry(1), PLAN_SEC_META, 4, "duplicate meta section", "duplicate");
    forge(buf, len, table_entry(1) + 4, 7, 4, "reserved field is 7", "reserved");
    forge(buf, len, table_entry(4) + 16, len, 8, "lie outside the", "size past the end");
    forge(buf, len, table_entry(4) + 8, UINT64_MAX - 7, 8, "lie outside the", "offset past the end");
    uint64_t off1 = get_le(buf + table_entry(1) + 8, 8);
    forge(buf, len, table_entry(2) + 8, off1, 8, "overlaps the section before it", "overlap");
    forge(buf, len, table_entry(2) + 8, off1 + 4, 8, "not 8-byte aligned", "misaligned");
    forge(buf, len, table_entry(0) + 8, 32, 8, "overlaps the section table", "over the table");
}

static void test_meta_forgeries(const unsigned char *buf, size_t len)
{
    size_t meta = section_at(buf, PLAN_SEC_META);
    size_t tlen = (size_t)get_le(buf + meta, 4);
    forge(buf, len, meta, 40, 4, "target: string of 40 bytes is too long", "target length");
    forge(buf, len, meta + 4 + tlen, (uint64_t)-5, 8, "arena size -5 is negative", "arena");
    forge(buf, len, meta + 12 + tlen, T_COUNT + 1, 8, "meta section says 10", "tensor count");
    forge(buf, len, meta + 20 + tlen, 0, 8, "schedule section holds 3 entries, meta section says 0", "sched count");
    forge(buf, len, section_at(buf, PLAN_SEC_GRAPH), (uint64_t)1 << 40, 8, "does not fit", "huge graph count");
    forge(buf, len, section_at(buf, PLAN_SEC_GRAPH), (uint64_t)-1, 8, "does not fit", "negative graph count");
    forge(buf, len, section_at(buf, PLAN_SEC_SETTINGS), 'Z', 1, "settings rejected", "settings");
    forge(buf, len, section_at(buf, PLAN_SEC_SETTINGS), 0, 1, "settings section contains a NUL byte", "NUL");
}

static void test_tensor_forgeries(const unsigned char *buf, size_t len)
{
    size_t h = tensor_at(buf, T_H), x = tensor_at(buf, T_X), w = tensor_at(buf, T_W);
    forge(buf, len, h + R_OP, OP_COUNT, 4, "op 37 out of range", "op");
    forge(buf, len, h + R_DTYPE, 99, 4, "dtype 99 out of range", "dtype");
    forge(buf, len, h + R_ROLE, IR_ROLE_COUNT, 4, "role 6 out of range", "role");
    forge(buf, len, h + R_PHASE, 2, 4, "phase 2 out of range", "phase");
    forge(buf, len, h + R_NDIM, 5, 4, "5 dimensions (at most 4)", "ndim");
    forge(buf, len, h + R_NDIM, (uint32_t)-1, 4, "-1 dimensions", "negative ndim");
    forge(buf, len, h + R_SHAPE, (uint64_t)-3, 8, "dimension 0 is negative (-3)", "negative dim");
    forge(buf, len, h + R_SHAPE + 24, (uint64_t)-3, 8, "dimension 3 is negative", "negative unused dim");
    forge(buf, len, h + R_SHAPE, (uint64_t)1 << 60, 8, "size overflows", "huge dim");
    forge(buf, len, h + R_NSRC, 8, 4, "8 inputs (at most 7)", "nsrc");
    forge(buf, len, h + R_SRC, T_H + 1, 4, "input 0 is tensor 7, which is out of range or does not precede it", "fwd");
    forge(buf, len, h + R_SRC + 4, T_H, 4, "does not precede it", "self input");
    forge(buf, len, h + R_SRC, (uint32_t)-2, 4, "out of range or does not precede it", "negative src");
    forge(buf, len, w + R_GRAD, 999, 4, "gradient link 999 is out of range", "grad link");
    forge(buf, len, w + R_STATE + 4, (uint32_t)-7, 4, "state link -7 is out of range", "state link");
    forge(buf, len, w + R_BLOCK, (uint32_t)-2, 4, "block -2 is out of range", "block");
    forge(buf, len, x + R_OFFSET, (uint64_t)-9, 8, "arena offset -9 is negative", "negative offset");
    forge(buf, len, x + R_NAMELEN, 1000, 4, "name: string of 1000 bytes is too long", "name length");
    forge(buf, len, tensor_at(buf, T_LOSS) + R_NAMELEN, 100, 4, "runs past the end of its section", "name past end");
    forge(buf, len, x + R_NAME, 0, 1, "string contains a NUL byte", "NUL in name");
    /* Decodes fine but disagrees with the op's shape rule: ir_verify's job. */
    forge(buf, len, h + R_SHAPE + 8, 9, 8, "plan graph invalid: ", "shape rule");
    forge(buf, len, w + R_NSRC, 1, 4, "plan graph invalid: ", "leaf with an input");
}

static void test_arena_forgeries(const unsigned char *buf, size_t len, const plan_t *p)
{
    /* Two weights, both live for the whole step, made to share bytes. */
    forge(buf, len, tensor_at(buf, T_B) + R_OFFSET, (uint64_t)p->g.t[T_W].offset, 8, "arena layout invalid: ",
          "live overlap");
    forge(buf, len, tensor_at(buf, T_LOSS) + R_OFFSET, (uint64_t)p->g.arena_bytes, 8, "outside the", "past arena");
    forge(buf, len, tensor_at(buf, T_LOSS) + R_OFFSET, INT64_MAX, 8, "outside the", "offset near overflow");
    forge(buf, len, tensor_at(buf, T_A) + R_OFFSET, (uint64_t)p->g.t[T_A].offset + 4, 8, "arena layout invalid: ",
          "misaligned offset");
}

static void test_schedule_manifest_forgeries(const unsigned char *buf, size_t len)
{
    size_t s = section_at(buf, PLAN_SEC_SCHEDULE) + 8;
    forge(buf, len, s, 999, 4, "schedule entry 0: tensor 999 is out of range", "sched id");
    forge(buf, len, s + 4, (uint32_t)-1, 4, "schedule entry 1: tensor -1 is out of range", "negative sched id");
    size_t m = section_at(buf, PLAN_SEC_MANIFEST);
    forge(buf, len, m, 4, 8, "record count 4 does not fit", "manifest count");
    forge(buf, len, m + 8, 999, 4, "manifest entry 0 'model.layers.0.mlp.weight': tensor 999 is out of range",
          "manifest tensor");
    forge(buf, len, m + 8, T_H, 4, "is not a leaf", "manifest non-leaf");
    forge(buf, len, m + 12, PLAN_INIT_COUNT, 4, "init kind 6 out of range", "init kind");
    forge(buf, len, m + 24, 300, 4, "key: string of 300 bytes is too long", "key length");
    /* One entry fewer than the records present: the second is left over. */
    forge(buf, len, m, 1, 8, "unexpected trailing bytes", "trailing record");
}

/* Byte offsets in the kernels section of the GPU plan (see plan_write.c's write_kernels). */
enum {
    K_TARGET = 4,                  /* "sm_90" after its u32 length */
    K_IMAGE_LEN = 9, K_IMAGE = 17, /* 13 bytes of image, then 2 of padding */
    K_PAD = 30, K_NNAMES = 32, K_NAME0 = 44, K_NAME1 = 67, K_NAME2 = 86, K_NLAUNCH = 104, K_LAUNCH = 112,
    K_LAUNCH_BYTES = 80,
    L_NODE = 0, L_KIND = 4, L_KERNEL = 8, L_GRID = 12, L_BLOCK = 24, L_SMEM = 36,
    L_KERNEL2 = 40, L_GRID2 = 44, L_BLOCK2 = 56, L_SMEM2 = 68, L_SCRATCH = 72
};

static void test_kernel_forgeries(const unsigned char *buf, size_t len)
{
    size_t k = section_at(buf, PLAN_SEC_KERNELS);
    size_t l0 = k + K_LAUNCH, l1 = l0 + K_LAUNCH_BYTES, l2 = l1 + K_LAUNCH_BYTES;
    CHECK(get_le(buf + k, 4) == 5 && memcmp(buf + k + K_TARGET, "sm_90", 5) == 0);
    CHECK(get_le(buf + k + K_IMAGE_LEN, 8) == 13 && get_le(buf + k + K_NNAMES, 8) == 3);
    CHECK(memcmp(buf + k + K_NAME0, gpu_names[0], strlen(gpu_names[0])) == 0);
    CHECK(memcmp(buf + k + K_NAME1, gpu_names[1], strlen(gpu_names[1])) == 0);
    CHECK(memcmp(buf + k + K_NAME2, gpu_names[2], strlen(gpu_names[2])) == 0);
    CHECK(get_le(buf + k + K_NLAUNCH, 8) == 3 && get_le(buf + l1 + L_NODE, 4) == T_A);
    CHECK(get_le(buf + l1 + L_KERNEL2, 4) == 0xffffffffu && get_le(buf + l2 + L_KERNEL2, 4) == 2);
    CHECK(get_le(buf + l2 + L_BLOCK2, 4) == 256 && get_le(buf + l2 + L_SCRATCH, 8) == 288);

    forge(buf, len, k + K_TARGET + 3, '8', 1, "kernels section is for 'sm_80' but the plan's target is 'sm_90'",
          "module target");
    forge(buf, len, k, 40, 4, "kernels section: target: string of 40 bytes is too long", "module target length");
    forge(buf, len, k + K_IMAGE_LEN, 1u << 20, 8, "image of 1048576 bytes does not fit", "image length");
    forge(buf, len, k + K_IMAGE_LEN, 2, 8, "image of 2 bytes does not fit", "image too short");
    forge(buf, len, k + K_IMAGE, 'X', 1, "the image is not a cubin", "image magic");
    forge(buf, len, k + K_PAD, 1, 1, "padding after the image is not zero", "padding");
    forge(buf, len, k + K_NNAMES, (uint64_t)1 << 40, 8, "does not fit", "name count");
    forge(buf, len, k + K_NAME0 + 4, '-', 1, "name 0 'ftk_-dd_f32_f32_f32' is not an identifier", "name chars");
    forge(buf, len, k + K_NAME0, '9', 1, "is not an identifier", "name starts with a digit");
    forge(buf, len, k + K_NAME1 + 4, 'a' | ('c' << 8), 2, "names are not sorted and unique at 1", "name order");
    forge(buf, len, k + K_NAME1 - 4, 200, 4, "name 1: string of 200 bytes is too long", "name length");
    forge(buf, len, k + K_NLAUNCH, 2, 8, "holds 2 launch records for 3 scheduled nodes", "launch count");
    forge(buf, len, k + K_NLAUNCH, 1000, 8, "does not fit", "huge launch count");
    forge(buf, len, l1 + L_NODE, T_LOSS, 4, "launch 1 is for tensor 8 but the schedule runs tensor 7 there",
          "launch node");
    forge(buf, len, l1 + L_KIND, 5, 4, "launch 1 ('add.7'): kind 5 out of range", "launch kind");
    forge(buf, len, l1 + L_KIND, CG_MATMUL, 4, "kind 2 does not fit op add", "kind for op");
    forge(buf, len, l0 + L_KIND, CG_KERNEL, 4, "kind 1 does not fit op matmul", "matmul as kernel");
    forge(buf, len, l1 + L_KERNEL, 3, 4, "launch 1 ('add.7'): kernel 3 out of range (3 kernels)", "kernel index");
    forge(buf, len, l1 + L_KERNEL, (uint32_t)-1, 4, "kernel -1 out of range", "negative kernel index");
    forge(buf, len, l0 + L_KERNEL, 0, 4, "runs no kernel but has kernel or geometry fields set", "matmul kernel");
    forge(buf, len, l0 + L_GRID, 1, 4, "runs no kernel but has kernel or geometry fields set", "matmul grid");
    forge(buf, len, l1 + L_BLOCK, 0, 4, "block 0x1x1 is not 1..1024 threads in whole warps", "empty block");
    forge(buf, len, l1 + L_BLOCK, 2048, 4, "block 2048x1x1", "block too big");
    forge(buf, len, l1 + L_BLOCK, 100, 4, "block 100x1x1", "partial warp");
    forge(buf, len, l1 + L_BLOCK + 8, 65, 4, "block 256x1x65", "block z");
    forge(buf, len, l2 + L_GRID, 0, 4, "launch 2 ('sum.8'): grid 0x1x1 is outside CUDA's limits", "empty grid");
    forge(buf, len, l2 + L_GRID + 4, 65536, 4, "grid 1x65536x1 is outside", "grid y");
    forge(buf, len, l2 + L_GRID + 8, 70000, 4, "grid 1x1x70000 is outside", "grid z");
    forge(buf, len, l2 + L_GRID, 0x80000000u, 4, "is outside CUDA's limits", "grid x");
    forge(buf, len, l2 + L_SMEM, 1u << 20, 4, "1048576 bytes of shared memory", "smem");
    /* the second kernel and the scratch */
    forge(buf, len, l0 + L_KERNEL2, 0, 4, "runs no kernel but has kernel or geometry fields set", "matmul kernel2");
    forge(buf, len, l0 + L_GRID2, 1, 4, "runs no kernel but has kernel or geometry fields set", "matmul grid2");
    forge(buf, len, l0 + L_SCRATCH, 8, 8, "runs no kernel but has kernel or geometry fields set", "matmul scratch");
    forge(buf, len, l1 + L_GRID2, 1, 4, "launch 1 ('add.7') has no second kernel but second geometry set",
          "grid2 without kernel2");
    forge(buf, len, l1 + L_SMEM2, 16, 4, "has no second kernel but second geometry set", "smem2 without kernel2");
    forge(buf, len, l1 + L_KERNEL2, 0, 4, "launch 1 ('add.7'): second block 0x0x0 is not", "kernel2 without geometry");
    forge(buf, len, l2 + L_KERNEL2, 3, 4, "launch 2 ('sum.8'): second kernel 3 out of range (3 kernels)",
          "kernel2 index");
    forge(buf, len, l2 + L_KERNEL2, (uint32_t)-2, 4, "second kernel -2 out of range", "negative kernel2 index");
    forge(buf, len, l2 + L_BLOCK2, 100, 4, "second block 100x1x1", "partial warp 2");
    forge(buf, len, l2 + L_GRID2, 0, 4, "second grid 0x1x1 is outside CUDA's limits", "empty grid2");
    forge(buf, len, l2 + L_GRID2 + 4, 65536, 4, "second grid 1x65536x1", "grid2 y");
    forge(buf, len, l2 + L_SMEM2, 1u << 20, 4, "second 1048576 bytes of shared memory", "smem2");
    forge(buf, len, l2 + L_SCRATCH, (uint64_t)1 << 41, 8, "2199023255552 bytes of scratch (at most", "scratch");
    /* without the module a GPU plan cannot run: drop the last table entry */
    forge(buf, len, 12, 5, 4, "target sm_90 needs a kernels section, and the plan has none", "no module");
}

static void test_gpu_plan(void)
{
    plan_t p;
    build_gpu_plan(&p);
    unsigned char *buf = NULL;
    size_t len = 0;
    ft_err_t e = {{0}};
    int rc = plan_serialize(&p, &buf, &len, &e);
    CHECK_MSG(rc == 0, "serialize GPU plan: %s", e.msg);
    if (rc == 0) {
        CHECK(get_le(buf + 12, 4) == 6);
        test_roundtrip(&p, buf, len);
        test_truncations(buf, len);
        test_byte_flips(buf, len);
        test_kernel_forgeries(buf, len);
    }
    free(buf);
    /* the writer refuses a module it cannot describe, or for another target */
    snprintf(p.cuda.target, sizeof p.cuda.target, "sm_80");
    CHECK(plan_serialize(&p, &buf, &len, &e) == -1);
    CHECK_MSG(strstr(e.msg, "kernel module is for sm_80 but the plan's target is sm_90") != NULL, "'%s'", e.msg);
    memset(p.cuda.target, 'x', sizeof p.cuda.target);
    CHECK(plan_serialize(&p, &buf, &len, &e) == -1);
    CHECK_MSG(strstr(e.msg, "kernel module target is not terminated") != NULL, "'%s'", e.msg);
    plan_free(&p);
    CHECK(p.cuda.image == NULL && p.cuda.names == NULL && p.cuda.launch == NULL);
}

static void test_init_names(void)
{
    CHECK(strcmp(plan_init_name(PLAN_INIT_FILE), "file") == 0);
    CHECK(strcmp(plan_init_name(PLAN_INIT_ADAPTER), "adapter") == 0);
    CHECK(strcmp(plan_init_name(PLAN_INIT_COUNT), "?") == 0);
    CHECK(strcmp(plan_init_name((plan_init_t)-1), "?") == 0);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftc_test_plan.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    plan_t p;
    build_plan(&p);
    ft_err_t e = {{0}};
    CHECK_MSG(!p.g.err[0], "builder: %s", p.g.err);
    CHECK_MSG(p.g.n == T_COUNT && p.g.nsched == 3, "graph has %d tensors, %d scheduled", p.g.n, p.g.nsched);
    CHECK_MSG(ir_verify(&p.g, &e) == 0, "verify: %s", e.msg);
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = plan_serialize(&p, &buf, &len, &e);
    CHECK_MSG(rc == 0, "serialize: %s", e.msg);
    if (rc == 0) {
        CHECK(memcmp(buf, "FTCPLAN", 8) == 0 && get_le(buf + 8, 4) == PLAN_VERSION && get_le(buf + 16, 8) == len);
        test_roundtrip(&p, buf, len);
        test_file_io(&p, buf, len);
        test_truncations(buf, len);
        test_byte_flips(buf, len);
        test_header_forgeries(buf, len);
        test_table_forgeries(buf, len);
        test_meta_forgeries(buf, len);
        test_tensor_forgeries(buf, len);
        test_arena_forgeries(buf, len, &p);
        test_schedule_manifest_forgeries(buf, len);
    }
    test_writer_rejects(&p);
    test_gpu_plan();
    test_empty_plan();
    test_init_names();
    expect_reject(NULL, 0, "too short for the header", "NULL data");
    free(buf);
    plan_free(&p);
    rmdir(tmpdir);
    return CHECK_DONE();
}
