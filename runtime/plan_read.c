/* plan_read.c — the plan.bin reader: checks and decodes the layout described in plan.h into
 * a plan_t. A plan file is input like any other: it may be truncated, corrupt, from another
 * version or hand-made, so every read goes through a bounds-checked cursor, every count and
 * enum is range-checked before it is used, and the decoded graph must pass ir_verify and the
 * arena check before anyone runs it. Each rejection is one line naming the file and the
 * problem. The writer is codegen/plan_write.c. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../frontend/frontend.h"
#include "../passes/passes.h"
#include "plan.h"

#define TABLE_ENTRY_BYTES 24u
#define NKINDS 7 /* kinds are 1..6; slot 0 unused */

/* Smallest encoded records, used to bound counts before allocating for them. */
#define TENSOR_MIN_BYTES 240u
#define WEIGHT_MIN_BYTES 20u
#define SCHED_ENTRY_BYTES 4u
#define KNAME_MIN_BYTES 5u   /* u32 length + at least one character */
#define LAUNCH_BYTES 80u

/* What a launch record may ask of the device: CUDA's limits on block and grid extents, and
 * the largest opt-in shared memory of any supported architecture (227 KB, sm_90). */
#define MAX_BLOCK_THREADS 1024u
#define MAX_SMEM (227u * 1024u)
#define MAX_SCRATCH (UINT64_C(1) << 40) /* kernel scratch bytes: far past any real need */

/* Largest byte size a tensor may claim: keeps ir_numel/ir_nbytes and offset + size sums far
 * from int64 overflow. */
#define MAX_TENSOR_BYTES (INT64_C(1) << 56)

static const char *const section_names[NKINDS] = {
    [PLAN_SEC_META] = "meta",
    [PLAN_SEC_SETTINGS] = "settings",
    [PLAN_SEC_GRAPH] = "graph",
    [PLAN_SEC_SCHEDULE] = "schedule",
    [PLAN_SEC_MANIFEST] = "manifest",
    [PLAN_SEC_KERNELS] = "kernels",
};

typedef struct {
    uint64_t off, size;
    bool present;
} sec_t;

typedef struct {
    const unsigned char *data;
    size_t len;
    const char *name; /* file name for messages */
    ft_err_t *e;
    sec_t sec[NKINDS];
    int64_t ntensors, nsched; /* as META declares them */
} rd_t;

/* A read position inside one section. Reads past the end return zero and set `overrun`;
 * callers check it once per record, so no read ever leaves the section. */
typedef struct {
    const unsigned char *p;
    uint64_t size, pos;
    bool overrun;
} cur_t;

static int fail(const rd_t *r, const char *fmt, ...) FT_PRINTF(2, 3);
static int fail(const rd_t *r, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ft_fail(r->e, "%s: %s", r->name, msg);
}

static uint64_t le_load(const unsigned char *s, int nbytes)
{
    uint64_t v = 0;
    for (int i = 0; i < nbytes; i++)
        v |= (uint64_t)s[i] << (8 * i);
    return v;
}

static cur_t section_cursor(const rd_t *r, plan_section_t kind)
{
    cur_t c = {r->data + r->sec[kind].off, r->sec[kind].size, 0, false};
    return c;
}

static uint64_t cur_left(const cur_t *c) { return c->size - c->pos; }

static const unsigned char *take(cur_t *c, uint64_t n)
{
    if (c->overrun || cur_left(c) < n) {
        c->overrun = true;
        return NULL;
    }
    const unsigned char *s = c->p + c->pos;
    c->pos += n;
    return s;
}

static uint32_t rd_u32(cur_t *c)
{
    const unsigned char *s = take(c, 4);
    return s ? (uint32_t)le_load(s, 4) : 0;
}

static uint64_t rd_u64(cur_t *c)
{
    const unsigned char *s = take(c, 8);
    return s ? le_load(s, 8) : 0;
}

/* Two's-complement bit patterns back to signed values, without implementation-defined
 * conversions of out-of-range unsigned values. */
static int32_t rd_i32(cur_t *c)
{
    uint32_t u = rd_u32(c);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static int64_t rd_i64(cur_t *c)
{
    uint64_t u = rd_u64(c);
    int64_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static double rd_f64(cur_t *c)
{
    uint64_t u = rd_u64(c);
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* u32 length + bytes into dst[cap], NUL-terminated; `what` names the string in messages. */
static int rd_str(const rd_t *r, cur_t *c, char *dst, size_t cap, const char *what)
{
    uint32_t n = rd_u32(c);
    if (c->overrun)
        return fail(r, "%s: record runs past the end of its section", what);
    if (n >= cap)
        return fail(r, "%s: string of %u bytes is too long (at most %zu)", what, n, cap - 1);
    const unsigned char *s = take(c, n);
    if (!s)
        return fail(r, "%s: string of %u bytes runs past the end of its section", what, n);
    if (memchr(s, 0, n))
        return fail(r, "%s: string contains a NUL byte", what);
    memcpy(dst, s, n);
    dst[n] = 0;
    return 0;
}

/* An i64 record count that must fit in what is left of the section. */
static int rd_count(const rd_t *r, cur_t *c, unsigned min_record, const char *what, int64_t *out)
{
    int64_t n = rd_i64(c);
    if (c->overrun)
        return fail(r, "%s section is too short for its record count", what);
    if (n < 0 || n > INT32_MAX || (uint64_t)n > cur_left(c) / min_record)
        return fail(r, "%s section: record count %lld does not fit in its %llu bytes", what, (long long)n,
                    (unsigned long long)c->size);
    *out = n;
    return 0;
}

static int expect_end(const rd_t *r, const cur_t *c, plan_section_t kind)
{
    if (c->pos != c->size)
        return fail(r, "%s section has %llu unexpected trailing bytes", section_names[kind],
                    (unsigned long long)(c->size - c->pos));
    return 0;
}

/* ---- header and section table ---- */

static int check_header(const rd_t *r)
{
    if (r->len < PLAN_HEADER_BYTES)
        return fail(r, "too short for the header (%zu bytes, need %u)", r->len, PLAN_HEADER_BYTES);
    if (memcmp(r->data, PLAN_MAGIC, sizeof(PLAN_MAGIC)) != 0)
        return fail(r, "not a plan file (bad magic)");
    uint32_t version = (uint32_t)le_load(r->data + 8, 4);
    if (version != PLAN_VERSION)
        return fail(r, "plan format version %u, this ftrun reads version %u: recompile the plan", version,
                    PLAN_VERSION);
    uint64_t size = le_load(r->data + 16, 8);
    if (size > r->len)
        return fail(r, "truncated: header says %llu bytes, file has %zu", (unsigned long long)size, r->len);
    if (size < r->len)
        return fail(r, "trailing bytes: header says %llu bytes, file has %zu", (unsigned long long)size, r->len);
    uint64_t want = le_load(r->data + 24, 8);
    uint64_t got = ft_fnv1a(FT_FNV_INIT, r->data + PLAN_HEADER_BYTES, r->len - PLAN_HEADER_BYTES);
    if (want != got)
        return fail(r, "checksum mismatch: the file is corrupt");
    return 0;
}

static int read_table_entry(rd_t *r, unsigned i, uint64_t table_end, uint64_t *prev_end)
{
    const unsigned char *ent = r->data + PLAN_HEADER_BYTES + (size_t)i * TABLE_ENTRY_BYTES;
    uint32_t kind = (uint32_t)le_load(ent, 4);
    uint32_t reserved = (uint32_t)le_load(ent + 4, 4);
    uint64_t off = le_load(ent + 8, 8), size = le_load(ent + 16, 8);
    if (kind == 0 || kind >= NKINDS)
        return fail(r, "section %u: unknown section kind %u", i, kind);
    if (reserved != 0)
        return fail(r, "section %u (%s): reserved field is %u, expected 0", i, section_names[kind], reserved);
    if (r->sec[kind].present)
        return fail(r, "section %u: duplicate %s section", i, section_names[kind]);
    if (off % 8 != 0)
        return fail(r, "section %u (%s): offset %llu is not 8-byte aligned", i, section_names[kind],
                    (unsigned long long)off);
    if (off > r->len || size > r->len - off)
        return fail(r, "section %u (%s): bytes [%llu, +%llu) lie outside the %zu-byte file", i, section_names[kind],
                    (unsigned long long)off, (unsigned long long)size, r->len);
    if (off < table_end)
        return fail(r, "section %u (%s): overlaps the section table", i, section_names[kind]);
    if (off < *prev_end)
        return fail(r, "section %u (%s): overlaps the section before it", i, section_names[kind]);
    r->sec[kind] = (sec_t){off, size, true};
    *prev_end = off + size;
    return 0;
}

static int read_table(rd_t *r)
{
    uint32_t count = (uint32_t)le_load(r->data + 12, 4);
    uint64_t table_end = PLAN_HEADER_BYTES + (uint64_t)count * TABLE_ENTRY_BYTES;
    if (table_end > r->len)
        return fail(r, "section table (%u entries) runs past the end of the file", count);
    uint64_t prev_end = table_end;
    for (uint32_t i = 0; i < count; i++)
        if (read_table_entry(r, i, table_end, &prev_end) != 0)
            return -1;
    for (int k = 1; k < NKINDS; k++)
        if (!r->sec[k].present && k != PLAN_SEC_KERNELS)
            return fail(r, "missing required %s section", section_names[k]);
    return 0;
}

/* ---- sections ---- */

static int read_meta(rd_t *r, plan_t *p)
{
    cur_t c = section_cursor(r, PLAN_SEC_META);
    if (rd_str(r, &c, p->target, sizeof p->target, "meta section: target") != 0)
        return -1;
    p->g.arena_bytes = rd_i64(&c);
    r->ntensors = rd_i64(&c);
    r->nsched = rd_i64(&c);
    if (c.overrun)
        return fail(r, "meta section is too short");
    if (p->g.arena_bytes < 0)
        return fail(r, "meta section: arena size %lld is negative", (long long)p->g.arena_bytes);
    if (r->ntensors < 0 || r->ntensors > INT32_MAX || r->nsched < 0 || r->nsched > INT32_MAX)
        return fail(r, "meta section: bad counts (%lld tensors, %lld scheduled)", (long long)r->ntensors,
                    (long long)r->nsched);
    return expect_end(r, &c, PLAN_SEC_META);
}

static int read_settings(rd_t *r, plan_t *p)
{
    const sec_t *s = &r->sec[PLAN_SEC_SETTINGS];
    const unsigned char *bytes = r->data + s->off;
    if (memchr(bytes, 0, s->size))
        return fail(r, "settings section contains a NUL byte");
    char *text = ft_xmalloc(s->size + 1);
    memcpy(text, bytes, s->size);
    text[s->size] = 0;
    ft_err_t fe;
    fe_config_defaults(&p->cfg);
    int rc = fe_config_from_text(text, &p->cfg, &fe);
    free(text);
    if (rc != 0)
        return fail(r, "settings rejected: %s", fe.msg);
    return 0;
}

/* Checks the fields of tensor `id` that must hold before the graph can even be walked:
 * enums, dimensions, sizes and every index into the tensor array. The rest of the graph's
 * meaning is ir_verify's job. */
static int check_tensor(const rd_t *r, const ir_tensor_t *t, int id)
{
    if (t->ndim < 0 || t->ndim > IR_MAX_DIMS)
        return fail(r, "tensor %d '%s': %d dimensions (at most %d)", id, t->name, t->ndim, IR_MAX_DIMS);
    int64_t bytes = (int64_t)ir_dtype_size(t->dtype);
    for (int i = 0; i < IR_MAX_DIMS; i++) {
        if (t->shape[i] < 0)
            return fail(r, "tensor %d '%s': dimension %d is negative (%lld)", id, t->name, i, (long long)t->shape[i]);
        if (i >= t->ndim || t->shape[i] == 0)
            continue;
        if (t->shape[i] > MAX_TENSOR_BYTES / bytes)
            return fail(r, "tensor %d '%s': size overflows (more than 2^56 bytes)", id, t->name);
        bytes *= t->shape[i];
    }
    if (t->nsrc < 0 || t->nsrc > IR_MAX_SRC)
        return fail(r, "tensor %d '%s': %d inputs (at most %d)", id, t->name, t->nsrc, IR_MAX_SRC);
    for (int i = 0; i < t->nsrc; i++)
        if (t->src[i] < 0 || t->src[i] >= id)
            return fail(r, "tensor %d '%s': input %d is tensor %d, which is out of range or does not precede it", id,
                        t->name, i, t->src[i]);
    int links[3] = {t->grad, t->state[0], t->state[1]};
    for (int i = 0; i < 3; i++)
        if (links[i] < -1 || links[i] >= r->ntensors)
            return fail(r, "tensor %d '%s': %s link %d is out of range", id, t->name, i ? "state" : "gradient",
                        links[i]);
    if (t->block < -1)
        return fail(r, "tensor %d '%s': block %d is out of range", id, t->name, t->block);
    if (t->offset < -1)
        return fail(r, "tensor %d '%s': arena offset %lld is negative", id, t->name, (long long)t->offset);
    return 0;
}

/* Enums arrive as u32 and are range-checked before they become enum values. */
static int check_enums(const rd_t *r, const ir_tensor_t *t, int id, const uint32_t en[4])
{
    if (en[0] >= OP_COUNT)
        return fail(r, "tensor %d '%s': op %u out of range (%d ops)", id, t->name, en[0], OP_COUNT);
    if (en[1] >= IR_DTYPE_COUNT)
        return fail(r, "tensor %d '%s': dtype %u out of range", id, t->name, en[1]);
    if (en[2] >= IR_ROLE_COUNT)
        return fail(r, "tensor %d '%s': role %u out of range", id, t->name, en[2]);
    if (en[3] >= IR_PHASE_COUNT)
        return fail(r, "tensor %d '%s': phase %u out of range", id, t->name, en[3]);
    return 0;
}

static int read_tensor(const rd_t *r, cur_t *c, ir_tensor_t *t, int id)
{
    uint32_t en[4];
    for (int i = 0; i < 4; i++)
        en[i] = rd_u32(c);
    t->ndim = rd_i32(c);
    for (int i = 0; i < IR_MAX_DIMS; i++)
        t->shape[i] = rd_i64(c);
    t->nsrc = rd_i32(c);
    for (int i = 0; i < IR_MAX_SRC; i++)
        t->src[i] = rd_i32(c);
    for (int i = 0; i < IR_MAX_PARAMS; i++)
        t->ip[i] = rd_i64(c);
    for (int i = 0; i < IR_MAX_PARAMS; i++)
        t->fp[i] = rd_f64(c);
    t->block = rd_i32(c);
    t->flags = rd_u32(c);
    t->grad = rd_i32(c);
    t->state[0] = rd_i32(c);
    t->state[1] = rd_i32(c);
    t->offset = rd_i64(c);
    char what[64];
    snprintf(what, sizeof what, "graph section: tensor %d: name", id);
    if (rd_str(r, c, t->name, IR_NAME_MAX, what) != 0)
        return -1;
    if (check_enums(r, t, id, en) != 0)
        return -1;
    t->op = (ir_op_t)en[0];
    t->dtype = (ir_dtype_t)en[1];
    t->role = (ir_role_t)en[2];
    t->phase = (ir_phase_t)en[3];
    return check_tensor(r, t, id);
}

static int read_graph(rd_t *r, plan_t *p)
{
    cur_t c = section_cursor(r, PLAN_SEC_GRAPH);
    int64_t n;
    if (rd_count(r, &c, TENSOR_MIN_BYTES, "graph", &n) != 0)
        return -1;
    if (n != r->ntensors)
        return fail(r, "graph section holds %lld tensors, meta section says %lld", (long long)n,
                    (long long)r->ntensors);
    p->g.cap = n > 0 ? (int)n : 1;
    p->g.t = ft_xcalloc((size_t)p->g.cap, sizeof *p->g.t);
    p->g.n = (int)n;
    for (int i = 0; i < p->g.n; i++)
        if (read_tensor(r, &c, &p->g.t[i], i) != 0)
            return -1;
    return expect_end(r, &c, PLAN_SEC_GRAPH);
}

static int read_schedule(rd_t *r, plan_t *p)
{
    cur_t c = section_cursor(r, PLAN_SEC_SCHEDULE);
    int64_t n;
    if (rd_count(r, &c, SCHED_ENTRY_BYTES, "schedule", &n) != 0)
        return -1;
    if (n != r->nsched)
        return fail(r, "schedule section holds %lld entries, meta section says %lld", (long long)n,
                    (long long)r->nsched);
    p->g.sched = ft_xcalloc(n > 0 ? (size_t)n : 1, sizeof *p->g.sched);
    p->g.nsched = (int)n;
    for (int i = 0; i < p->g.nsched; i++) {
        int id = rd_i32(&c);
        if (id < 0 || id >= p->g.n)
            return fail(r, "schedule entry %d: tensor %d is out of range (%d tensors)", i, id, p->g.n);
        p->g.sched[i] = id;
    }
    return expect_end(r, &c, PLAN_SEC_SCHEDULE);
}

static int read_weight(const rd_t *r, cur_t *c, const ir_graph_t *g, plan_weight_t *w, int i)
{
    w->tensor = rd_i32(c);
    uint32_t init = rd_u32(c);
    w->param = rd_f64(c);
    char what[64];
    snprintf(what, sizeof what, "manifest entry %d: key", i);
    if (rd_str(r, c, w->key, sizeof w->key, what) != 0)
        return -1;
    if (w->tensor < 0 || w->tensor >= g->n)
        return fail(r, "manifest entry %d '%s': tensor %d is out of range (%d tensors)", i, w->key, w->tensor, g->n);
    if (g->t[w->tensor].op != OP_LEAF)
        return fail(r, "manifest entry %d '%s': tensor %d '%s' is not a leaf", i, w->key, w->tensor,
                    g->t[w->tensor].name);
    if (init >= PLAN_INIT_COUNT)
        return fail(r, "manifest entry %d '%s': init kind %u out of range", i, w->key, init);
    w->init = (plan_init_t)init;
    return 0;
}

static int read_manifest(rd_t *r, plan_t *p)
{
    cur_t c = section_cursor(r, PLAN_SEC_MANIFEST);
    int64_t n;
    if (rd_count(r, &c, WEIGHT_MIN_BYTES, "manifest", &n) != 0)
        return -1;
    p->w = ft_xcalloc(n > 0 ? (size_t)n : 1, sizeof *p->w);
    p->nw = (int)n;
    for (int i = 0; i < p->nw; i++)
        if (read_weight(r, &c, &p->g, &p->w[i], i) != 0)
            return -1;
    return expect_end(r, &c, PLAN_SEC_MANIFEST);
}

/* ---- the GPU kernel module ---- */

/* A kernel entry point name: a C identifier. */
static bool good_kernel_name(const char *s)
{
    if (!s[0] || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static int read_kernel_names(const rd_t *r, cur_t *c, cg_module_t *m)
{
    int64_t n;
    if (rd_count(r, c, KNAME_MIN_BYTES, "kernels: names", &n) != 0)
        return -1;
    m->names = ft_xcalloc(n > 0 ? (size_t)n : 1, sizeof *m->names);
    for (int i = 0; i < (int)n; i++) {
        char name[CG_NAME_MAX], what[64];
        snprintf(what, sizeof what, "kernels section: name %d", i);
        if (rd_str(r, c, name, sizeof name, what) != 0)
            return -1;
        if (!good_kernel_name(name))
            return fail(r, "kernels section: name %d '%s' is not an identifier", i, name);
        if (i > 0 && strcmp(m->names[i - 1], name) >= 0)
            return fail(r, "kernels section: names are not sorted and unique at %d ('%s' after '%s')", i, name,
                        m->names[i - 1]);
        m->names[m->nnames++] = ft_xstrdup(name);
    }
    return 0;
}

/* The geometry of one kernel launch of record k: a kernel of the module, within CUDA's
 * limits (whole warps: the kernels use warp shuffles). */
static int check_kernel_launch(const rd_t *r, const cg_module_t *m, const ir_tensor_t *t, int k, const char *which,
                               int kernel, const unsigned grid[3], const unsigned block[3], unsigned smem)
{
    if (kernel < 0 || kernel >= m->nnames)
        return fail(r, "kernels section: launch %d ('%s'): %skernel %d out of range (%d kernels)", k, t->name, which,
                    kernel, m->nnames);
    uint64_t threads = (uint64_t)block[0] * block[1] * block[2];
    if (block[0] == 0 || block[1] == 0 || block[2] == 0 || block[2] > 64 || threads > MAX_BLOCK_THREADS ||
        threads % 32 != 0)
        return fail(r, "kernels section: launch %d ('%s'): %sblock %ux%ux%u is not 1..1024 threads in whole warps", k,
                    t->name, which, block[0], block[1], block[2]);
    if (grid[0] == 0 || grid[0] > INT32_MAX || grid[1] == 0 || grid[1] > 65535 || grid[2] == 0 || grid[2] > 65535)
        return fail(r, "kernels section: launch %d ('%s'): %sgrid %ux%ux%u is outside CUDA's limits", k, t->name, which,
                    grid[0], grid[1], grid[2]);
    if (smem > MAX_SMEM)
        return fail(r, "kernels section: launch %d ('%s'): %s%u bytes of shared memory (at most %u)", k, t->name, which,
                    smem, MAX_SMEM);
    return 0;
}

static bool no_geometry(const unsigned grid[3], const unsigned block[3], unsigned smem)
{
    bool zero = smem == 0;
    for (int d = 0; d < 3; d++)
        zero = zero && grid[d] == 0 && block[d] == 0;
    return zero;
}

/* Launch record k must be for the k-th scheduled node, of the kind its op runs as; a kernel
 * launch names a kernel of the module and fits CUDA's limits, and so does its second kernel
 * where it has one (none: kernel2 -1 and no second geometry); the scratch bytes are
 * plausible; the other kinds carry no geometry and no scratch. */
static int check_launch(const rd_t *r, const plan_t *p, const cg_launch_t *l, int k, uint32_t kind)
{
    const ir_graph_t *g = &p->g;
    const cg_module_t *m = &p->cuda;
    if (l->node != g->sched[k])
        return fail(r, "kernels section: launch %d is for tensor %d but the schedule runs tensor %d there", k, l->node,
                    g->sched[k]);
    const ir_tensor_t *t = &g->t[l->node];
    if (kind >= CG_KIND_COUNT)
        return fail(r, "kernels section: launch %d ('%s'): kind %u out of range", k, t->name, kind);
    if (kind != (uint32_t)cg_op_kind(t->op))
        return fail(r, "kernels section: launch %d ('%s'): kind %u does not fit op %s", k, t->name, kind,
                    ir_ops[t->op]->name);
    bool none2 = l->kernel2 == -1 && no_geometry(l->grid2, l->block2, l->smem2);
    if (kind != CG_KERNEL) {
        if (l->kernel != -1 || !no_geometry(l->grid, l->block, l->smem) || !none2 || l->scratch != 0)
            return fail(r, "kernels section: launch %d ('%s') runs no kernel but has kernel or geometry fields set", k,
                        t->name);
        return 0;
    }
    if (check_kernel_launch(r, m, t, k, "", l->kernel, l->grid, l->block, l->smem) != 0)
        return -1;
    if (l->kernel2 == -1 && !none2)
        return fail(r, "kernels section: launch %d ('%s') has no second kernel but second geometry set", k, t->name);
    if (l->kernel2 != -1 && check_kernel_launch(r, m, t, k, "second ", l->kernel2, l->grid2, l->block2, l->smem2) != 0)
        return -1;
    if (l->scratch > MAX_SCRATCH)
        return fail(r, "kernels section: launch %d ('%s'): %llu bytes of scratch (at most %llu)", k, t->name,
                    (unsigned long long)l->scratch, (unsigned long long)MAX_SCRATCH);
    return 0;
}

static int read_launches(const rd_t *r, cur_t *c, plan_t *p)
{
    cg_module_t *m = &p->cuda;
    int64_t n = 0;
    if (rd_count(r, c, LAUNCH_BYTES, "kernels: launches", &n) != 0)
        return -1;
    if (n != p->g.nsched)
        return fail(r, "kernels section holds %lld launch records for %d scheduled nodes", (long long)n, p->g.nsched);
    m->launch = ft_xcalloc(n > 0 ? (size_t)n : 1, sizeof *m->launch);
    m->nlaunch = (int)n;
    for (int k = 0; k < m->nlaunch; k++) {
        cg_launch_t *l = &m->launch[k];
        l->node = rd_i32(c);
        uint32_t kind = rd_u32(c);
        l->kernel = rd_i32(c);
        for (int d = 0; d < 3; d++)
            l->grid[d] = rd_u32(c);
        for (int d = 0; d < 3; d++)
            l->block[d] = rd_u32(c);
        l->smem = rd_u32(c);
        l->kernel2 = rd_i32(c);
        for (int d = 0; d < 3; d++)
            l->grid2[d] = rd_u32(c);
        for (int d = 0; d < 3; d++)
            l->block2[d] = rd_u32(c);
        l->smem2 = rd_u32(c);
        l->scratch = rd_u64(c);
        if (c->overrun)
            return fail(r, "kernels section: launch %d runs past the end of its section", k);
        if (check_launch(r, p, l, k, kind) != 0)
            return -1;
        l->kind = (cg_kind_t)kind;
    }
    return 0;
}

/* Present exactly for GPU targets, and for the plan's own target. */
static int read_kernels(rd_t *r, plan_t *p)
{
    bool gpu = strncmp(p->target, "sm_", 3) == 0;
    if (!r->sec[PLAN_SEC_KERNELS].present) {
        if (gpu)
            return fail(r, "target %s needs a kernels section, and the plan has none", p->target);
        return 0;
    }
    p->has_cuda = true;
    cg_module_t *m = &p->cuda;
    cur_t c = section_cursor(r, PLAN_SEC_KERNELS);
    if (rd_str(r, &c, m->target, sizeof m->target, "kernels section: target") != 0)
        return -1;
    if (strcmp(m->target, p->target) != 0)
        return fail(r, "kernels section is for '%s' but the plan's target is '%s'", m->target, p->target);
    uint64_t len = rd_u64(&c);
    if (c.overrun)
        return fail(r, "kernels section is too short");
    if (len < 4 || len > cur_left(&c))
        return fail(r, "kernels section: image of %llu bytes does not fit in its %llu-byte section",
                    (unsigned long long)len, (unsigned long long)c.size);
    const unsigned char *img = take(&c, len);
    if (memcmp(img, "\x7f" "ELF", 4) != 0)
        return fail(r, "kernels section: the image is not a cubin (no ELF header)");
    m->image = ft_xmalloc((size_t)len);
    memcpy(m->image, img, (size_t)len);
    m->image_len = (size_t)len;
    uint64_t npad = (8 - c.pos % 8) % 8; /* to an 8-byte boundary (sections start on one) */
    const unsigned char *pad = take(&c, npad);
    for (uint64_t i = 0; pad && i < npad; i++)
        if (pad[i] != 0)
            return fail(r, "kernels section: padding after the image is not zero");
    if (!pad)
        return fail(r, "kernels section: padding after the image runs past the end of its section");
    if (read_kernel_names(r, &c, m) != 0 || read_launches(r, &c, p) != 0)
        return -1;
    return expect_end(r, &c, PLAN_SEC_KERNELS);
}

/* ---- whole-graph checks ---- */

/* Every placed tensor that owns storage must lie inside the arena, whatever the planner's
 * conventions for unplaced or aliasing tensors: the executor indexes the arena with it. */
static int check_arena_bounds(const rd_t *r, const ir_graph_t *g)
{
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->offset < 0 || (t->flags & IR_FLAG_DEAD) || ir_in_place(t))
            continue;
        int64_t nb = ir_nbytes(t);
        if (t->offset > g->arena_bytes || nb > g->arena_bytes - t->offset)
            return fail(r, "tensor %d '%s': %lld bytes at offset %lld lie outside the %lld-byte arena", i, t->name,
                        (long long)nb, (long long)t->offset, (long long)g->arena_bytes);
    }
    return 0;
}

static int check_graph(const rd_t *r, const plan_t *p)
{
    ft_err_t ge;
    if (ir_verify(&p->g, &ge) != 0)
        return fail(r, "plan graph invalid: %s", ge.msg);
    if (check_arena_bounds(r, &p->g) != 0)
        return -1;
    if (pass_memplan_check(&p->g, &ge) != 0)
        return fail(r, "arena layout invalid: %s", ge.msg);
    return 0;
}

static int parse(rd_t *r, plan_t *p)
{
    if (check_header(r) != 0 || read_table(r) != 0)
        return -1;
    if (read_meta(r, p) != 0 || read_settings(r, p) != 0)
        return -1;
    if (read_graph(r, p) != 0 || read_schedule(r, p) != 0 || read_manifest(r, p) != 0 || read_kernels(r, p) != 0)
        return -1;
    return check_graph(r, p);
}

int plan_parse(const unsigned char *data, size_t len, const char *name, plan_t *p, ft_err_t *e)
{
    memset(p, 0, sizeof *p);
    ir_graph_init(&p->g);
    static const unsigned char empty[1];
    rd_t r = {.data = data ? data : empty, .len = data ? len : 0, .name = name ? name : "plan", .e = e};
    if (parse(&r, p) != 0) {
        plan_free(p); /* the caller gets nothing half-decoded */
        return -1;
    }
    return 0;
}

int plan_read(const char *path, plan_t *p, ft_err_t *e)
{
    memset(p, 0, sizeof *p);
    ir_graph_init(&p->g);
    char *data;
    size_t len;
    if (ft_read_file(path, &data, &len, e) != 0)
        return -1;
    int rc = plan_parse((const unsigned char *)data, len, path, p, e);
    free(data);
    return rc;
}
