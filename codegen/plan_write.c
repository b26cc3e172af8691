/* plan_write.c — the plan.bin writer: turns a scheduled, memory-planned plan_t into the
 * byte layout described in runtime/plan.h. Every field is written explicitly, little-endian,
 * never by copying a struct, so the file does not depend on the compiler's padding or on the
 * host's byte order, and the same plan always gives the same bytes (the compile cache and
 * reproducible builds rely on that). The reader is runtime/plan_read.c. */
#include <stdlib.h>
#include <string.h>

#include "../frontend/frontend.h"
#include "../runtime/plan.h"

_Static_assert(sizeof(PLAN_MAGIC) == 8, "the magic is 8 bytes including its NUL");

#define TABLE_ENTRY_BYTES 24u
#define NSECTIONS 6u /* the last, KERNELS, only when the plan has a GPU module */

/* A growable byte buffer. Out of memory is fatal (ft_xrealloc), so appends cannot fail. */
typedef struct {
    unsigned char *b;
    size_t n, cap;
} wbuf_t;

static void put_bytes(wbuf_t *w, const void *data, size_t n)
{
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->n + n)
            cap *= 2;
        w->b = ft_xrealloc(w->b, cap);
        w->cap = cap;
    }
    if (n)
        memcpy(w->b + w->n, data, n);
    w->n += n;
}

/* Little-endian by construction (shifts), whatever the host is. */
static void le_store(unsigned char *dst, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        dst[i] = (unsigned char)(v >> (8 * i));
}

static void put_u32(wbuf_t *w, uint32_t v)
{
    unsigned char b[4];
    le_store(b, v, 4);
    put_bytes(w, b, 4);
}

static void put_u64(wbuf_t *w, uint64_t v)
{
    unsigned char b[8];
    le_store(b, v, 8);
    put_bytes(w, b, 8);
}

/* Signed values travel as their two's-complement bit pattern. */
static void put_i32(wbuf_t *w, int32_t v) { put_u32(w, (uint32_t)v); }
static void put_i64(wbuf_t *w, int64_t v) { put_u64(w, (uint64_t)v); }

/* Doubles as IEEE-754 bit patterns: exact, NaN payloads included. */
static void put_f64(wbuf_t *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u64(w, bits);
}

static void put_str(wbuf_t *w, const char *s, size_t len)
{
    put_u32(w, (uint32_t)len);
    put_bytes(w, s, len);
}

static void pad8(wbuf_t *w)
{
    static const unsigned char zeros[8] = {0};
    put_bytes(w, zeros, (8 - w->n % 8) % 8);
}

/* ---- sections ---- */

static int write_meta(wbuf_t *w, const plan_t *p, ft_err_t *e)
{
    size_t tlen = strnlen(p->target, sizeof p->target);
    if (tlen == sizeof p->target)
        return ft_fail(e, "plan: target name is not terminated");
    put_str(w, p->target, tlen);
    put_i64(w, p->g.arena_bytes);
    put_i64(w, p->g.n);
    put_i64(w, p->g.nsched);
    return 0;
}

static int write_settings(wbuf_t *w, const plan_t *p, ft_err_t *e)
{
    char *text = fe_config_to_text(&p->cfg);
    if (!text)
        return ft_fail(e, "plan: the settings could not be turned into text");
    put_bytes(w, text, strlen(text));
    free(text);
    return 0;
}

static int write_tensor(wbuf_t *w, const ir_tensor_t *t, int id, ft_err_t *e)
{
    size_t nlen = strnlen(t->name, IR_NAME_MAX);
    if (nlen == IR_NAME_MAX)
        return ft_fail(e, "plan: tensor %d: name is not terminated", id);
    put_u32(w, (uint32_t)t->op);
    put_u32(w, (uint32_t)t->dtype);
    put_u32(w, (uint32_t)t->role);
    put_u32(w, (uint32_t)t->phase);
    put_i32(w, t->ndim);
    for (int i = 0; i < IR_MAX_DIMS; i++)
        put_i64(w, t->shape[i]);
    put_i32(w, t->nsrc);
    for (int i = 0; i < IR_MAX_SRC; i++)
        put_i32(w, t->src[i]);
    for (int i = 0; i < IR_MAX_PARAMS; i++)
        put_i64(w, t->ip[i]);
    for (int i = 0; i < IR_MAX_PARAMS; i++)
        put_f64(w, t->fp[i]);
    put_i32(w, t->block);
    put_u32(w, t->flags);
    put_i32(w, t->grad);
    put_i32(w, t->state[0]);
    put_i32(w, t->state[1]);
    put_i64(w, t->offset);
    put_str(w, t->name, nlen);
    return 0;
}

static int write_graph(wbuf_t *w, const plan_t *p, ft_err_t *e)
{
    put_i64(w, p->g.n);
    for (int i = 0; i < p->g.n; i++)
        if (write_tensor(w, &p->g.t[i], i, e) != 0)
            return -1;
    return 0;
}

static int write_schedule(wbuf_t *w, const plan_t *p, ft_err_t *e)
{
    put_i64(w, p->g.nsched);
    for (int i = 0; i < p->g.nsched; i++)
        put_i32(w, p->g.sched[i]);
    return 0;
}

static int write_manifest(wbuf_t *w, const plan_t *p, ft_err_t *e)
{
    put_i64(w, p->nw);
    for (int i = 0; i < p->nw; i++) {
        const plan_weight_t *r = &p->w[i];
        size_t klen = strnlen(r->key, sizeof r->key);
        if (klen == sizeof r->key)
            return ft_fail(e, "plan: manifest entry %d: key is not terminated", i);
        put_i32(w, r->tensor);
        put_u32(w, (uint32_t)r->init);
        put_f64(w, r->param);
        put_str(w, r->key, klen);
    }
    return 0;
}

/* The GPU module: target, cubin (padded to 8 bytes), entry point names, launch records. */
static int write_kernels(wbuf_t *w, const plan_t *p, ft_err_t *e)
{
    const cg_module_t *m = &p->cuda;
    size_t tlen = strnlen(m->target, sizeof m->target);
    if (tlen == sizeof m->target)
        return ft_fail(e, "plan: kernel module target is not terminated");
    if (m->nnames < 0 || m->nlaunch < 0 || (m->nnames && !m->names) || (m->nlaunch && !m->launch) ||
        (m->image_len && !m->image))
        return ft_fail(e, "plan: the kernel module is malformed");
    if (strcmp(m->target, p->target) != 0)
        return ft_fail(e, "plan: the kernel module is for %s but the plan's target is %s", m->target, p->target);
    put_str(w, m->target, tlen);
    put_u64(w, (uint64_t)m->image_len);
    put_bytes(w, m->image, m->image_len);
    pad8(w);
    put_i64(w, m->nnames);
    for (int i = 0; i < m->nnames; i++) {
        size_t nlen = strlen(m->names[i]);
        if (nlen > UINT32_MAX)
            return ft_fail(e, "plan: kernel name %d is too long", i);
        put_str(w, m->names[i], nlen);
    }
    put_i64(w, m->nlaunch);
    for (int i = 0; i < m->nlaunch; i++) {
        const cg_launch_t *l = &m->launch[i];
        put_i32(w, l->node);
        put_u32(w, (uint32_t)l->kind);
        put_i32(w, l->kernel);
        for (int k = 0; k < 3; k++)
            put_u32(w, l->grid[k]);
        for (int k = 0; k < 3; k++)
            put_u32(w, l->block[k]);
        put_u32(w, l->smem);
        put_i32(w, l->kernel2);
        for (int k = 0; k < 3; k++)
            put_u32(w, l->grid2[k]);
        for (int k = 0; k < 3; k++)
            put_u32(w, l->block2[k]);
        put_u32(w, l->smem2);
        put_u64(w, l->scratch);
    }
    return 0;
}

typedef struct {
    plan_section_t kind;
    int (*write)(wbuf_t *w, const plan_t *p, ft_err_t *e);
} section_writer_t;

/* Table order is file order; the reader accepts any order, but one order keeps the bytes
 * deterministic. */
static const section_writer_t sections[NSECTIONS] = {
    {PLAN_SEC_META, write_meta},
    {PLAN_SEC_SETTINGS, write_settings},
    {PLAN_SEC_GRAPH, write_graph},
    {PLAN_SEC_SCHEDULE, write_schedule},
    {PLAN_SEC_MANIFEST, write_manifest},
    {PLAN_SEC_KERNELS, write_kernels},
};

/* Sections this plan has: all but KERNELS, which only GPU plans carry. */
static unsigned nsections(const plan_t *p) { return p->has_cuda ? NSECTIONS : NSECTIONS - 1; }

static int check_counts(const plan_t *p, ft_err_t *e)
{
    if (p->g.n < 0 || p->g.nsched < 0 || p->nw < 0)
        return ft_fail(e, "plan: negative count (tensors %d, schedule %d, weights %d)", p->g.n, p->g.nsched, p->nw);
    if ((p->g.n && !p->g.t) || (p->g.nsched && !p->g.sched) || (p->nw && !p->w))
        return ft_fail(e, "plan: a non-empty array has no storage");
    return 0;
}

static void write_header(wbuf_t *w, unsigned nsec)
{
    put_bytes(w, PLAN_MAGIC, sizeof(PLAN_MAGIC));
    put_u32(w, PLAN_VERSION);
    put_u32(w, nsec);
    put_u64(w, 0); /* file size, patched at the end */
    put_u64(w, 0); /* checksum, patched at the end */
    /* The table is written as zeros and patched once each section's place is known. */
    static const unsigned char zeros[TABLE_ENTRY_BYTES] = {0};
    for (unsigned i = 0; i < nsec; i++)
        put_bytes(w, zeros, TABLE_ENTRY_BYTES);
}

int plan_serialize(const plan_t *p, unsigned char **out, size_t *len, ft_err_t *e)
{
    *out = NULL;
    *len = 0;
    if (check_counts(p, e) != 0)
        return -1;
    wbuf_t w = {0};
    unsigned nsec = nsections(p);
    write_header(&w, nsec);
    for (unsigned i = 0; i < nsec; i++) {
        pad8(&w);
        size_t start = w.n;
        if (sections[i].write(&w, p, e) != 0) {
            free(w.b);
            return -1;
        }
        unsigned char *ent = w.b + PLAN_HEADER_BYTES + i * TABLE_ENTRY_BYTES;
        le_store(ent, (uint64_t)sections[i].kind, 4);
        le_store(ent + 4, 0, 4);
        le_store(ent + 8, start, 8);
        le_store(ent + 16, w.n - start, 8);
    }
    le_store(w.b + 16, w.n, 8);
    uint64_t sum = ft_fnv1a(FT_FNV_INIT, w.b + PLAN_HEADER_BYTES, w.n - PLAN_HEADER_BYTES);
    le_store(w.b + 24, sum, 8);
    *out = w.b;
    *len = w.n;
    return 0;
}

int plan_write(const plan_t *p, const char *path, ft_err_t *e)
{
    unsigned char *data;
    size_t len;
    if (plan_serialize(p, &data, &len, e) != 0)
        return -1;
    /* Atomic: a crash or a full disk leaves the old file (or none), never half a plan. */
    int rc = ft_write_file_atomic(path, data, len, e);
    free(data);
    return rc;
}
