/* memplan.c — the memory planner: one arena for the whole step. Persistent tensors
 * (weights, gradient buffers, optimizer state, host inputs and outputs) are laid out first,
 * grouped by kind; every other tensor gets an offset in the region after them, chosen from
 * its live range over the schedule so that no two tensors alive at the same time overlap
 * (largest first, lowest fitting offset). Ops that alias their first input (reshape,
 * in-place updates) share that input's bytes and extend its live range. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define ARENA_ALIGN 256

static int64_t align_up(int64_t x) { return (x + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN; }

static bool aliases(const ir_tensor_t *t) { return ir_in_place(t); }

/* the tensor whose bytes t uses */
static int storage_root(const ir_graph_t *g, int id)
{
    while (aliases(&g->t[id]))
        id = g->t[id].src[ir_alias_src(&g->t[id])];
    return id;
}

static bool persistent(const ir_tensor_t *t)
{
    return t->op == OP_LEAF || (t->flags & (IR_FLAG_OUTPUT | IR_FLAG_LOSS));
}

void pass_lifetimes(const ir_graph_t *g, int *first, int *last)
{
    int end = g->nsched > 0 ? g->nsched - 1 : 0;
    for (int i = 0; i < g->n; i++) {
        first[i] = INT32_MAX;
        last[i] = -1;
    }
    for (int k = 0; k < g->nsched; k++) {
        int id = g->sched[k];
        int root = storage_root(g, id);
        if (k < first[root])
            first[root] = k;
        if (k > last[root])
            last[root] = k;
        const ir_tensor_t *t = &g->t[id];
        for (int s = 0; s < t->nsrc; s++) {
            int r = storage_root(g, t->src[s]);
            if (k > last[r])
                last[r] = k;
        }
    }
    for (int i = 0; i < g->n; i++) {
        int root = storage_root(g, i);
        if (persistent(&g->t[root])) {
            first[i] = 0;
            last[i] = end;
        } else {
            first[i] = first[root];
            last[i] = last[root];
        }
        if (last[i] < first[i]) { /* never scheduled: no live range */
            first[i] = 0;
            last[i] = -1;
        }
    }
}

/* kind order of the persistent region; returns -1 for tensors planned by live range */
static int persistent_group(const ir_tensor_t *t)
{
    if (!persistent(t))
        return -1;
    if (t->op != OP_LEAF)
        return 5; /* host-visible outputs */
    switch (t->role) {
    case IR_FROZEN: return 0;
    case IR_TRAINABLE: return 1;
    case IR_GRAD: return 2;
    case IR_OPTSTATE: return 3;
    default: return 4; /* inputs */
    }
}

typedef struct {
    int id;
    int64_t size;
    int first, last;
} mp_item_t;

static int by_size_desc(const void *a, const void *b)
{
    const mp_item_t *x = a, *y = b;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return x->first - y->first;
}

static int by_offset(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

/* lowest offset >= base where [off, off+size) misses every placed item live at the same time */
static int64_t lowest_fit(const mp_item_t *it, const int64_t *off, int nplaced, const mp_item_t *cur, int64_t base,
                          int64_t (*iv)[2])
{
    int m = 0;
    for (int k = 0; k < nplaced; k++) {
        if (it[k].last < cur->first || cur->last < it[k].first)
            continue;
        iv[m][0] = off[k];
        iv[m][1] = off[k] + align_up(it[k].size);
        m++;
    }
    qsort(iv, (size_t)m, sizeof iv[0], by_offset);
    int64_t at = base;
    for (int k = 0; k < m; k++) {
        if (iv[k][0] >= at + cur->size)
            break;
        if (iv[k][1] > at)
            at = iv[k][1];
    }
    return at;
}

int pass_memplan(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    if (g->nsched == 0 && g->n > 0)
        return ft_fail(e, "memplan: the graph has no schedule (run the scheduler first)");
    int *first = ft_xmalloc((size_t)g->n * sizeof *first);
    int *last = ft_xmalloc((size_t)g->n * sizeof *last);
    pass_lifetimes(g, first, last);
    int64_t at = 0;
    for (int grp = 0; grp <= 5; grp++)
        for (int i = 0; i < g->n; i++) {
            if (aliases(&g->t[i]) || persistent_group(&g->t[i]) != grp)
                continue;
            g->t[i].offset = at;
            at = align_up(at + ir_nbytes(&g->t[i]));
        }
    int64_t base = at;
    mp_item_t *it = ft_xmalloc((size_t)g->n * sizeof *it);
    int m = 0;
    for (int i = 0; i < g->n; i++) {
        if (aliases(&g->t[i]) || persistent_group(&g->t[i]) >= 0)
            continue;
        if (last[i] < first[i]) {
            g->t[i].offset = -1; /* never runs */
            continue;
        }
        it[m++] = (mp_item_t){i, ir_nbytes(&g->t[i]), first[i], last[i]};
    }
    qsort(it, (size_t)m, sizeof *it, by_size_desc);
    int64_t *off = ft_xmalloc((size_t)(m ? m : 1) * sizeof *off);
    int64_t(*iv)[2] = ft_xmalloc((size_t)(m ? m : 1) * sizeof *iv);
    int64_t top = base;
    for (int k = 0; k < m; k++) {
        off[k] = lowest_fit(it, off, k, &it[k], base, iv);
        g->t[it[k].id].offset = off[k];
        if (off[k] + align_up(it[k].size) > top)
            top = off[k] + align_up(it[k].size);
    }
    for (int i = 0; i < g->n; i++)
        if (aliases(&g->t[i]))
            g->t[i].offset = g->t[storage_root(g, i)].offset;
    g->arena_bytes = top;
    free(iv);
    free(off);
    free(it);
    free(first);
    free(last);
    return pass_memplan_check(g, e);
}

int pass_memplan_check(const ir_graph_t *g, ft_err_t *e)
{
    int *first = ft_xmalloc((size_t)(g->n ? g->n : 1) * sizeof *first);
    int *last = ft_xmalloc((size_t)(g->n ? g->n : 1) * sizeof *last);
    pass_lifetimes(g, first, last);
    int rc = 0;
    int *ids = ft_xmalloc((size_t)(g->n ? g->n : 1) * sizeof *ids);
    int n = 0;
    for (int i = 0; i < g->n && rc == 0; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (aliases(t)) {
            if (t->offset != g->t[storage_root(g, i)].offset)
                rc = ft_fail(e, "arena: '%s' does not share its input's storage", t->name);
            continue;
        }
        if (last[i] < first[i])
            continue;
        if (t->offset < 0 || t->offset % ARENA_ALIGN != 0 || t->offset + ir_nbytes(t) > g->arena_bytes)
            rc = ft_fail(e, "arena: '%s' at offset %lld (+%lld bytes) is misaligned or outside the %lld-byte arena",
                         t->name, (long long)t->offset, (long long)ir_nbytes(t), (long long)g->arena_bytes);
        ids[n++] = i;
    }
    /* pairwise over tensors whose live ranges meet; the sweep is quadratic but runs once */
    for (int a = 0; a < n && rc == 0; a++)
        for (int b = a + 1; b < n && rc == 0; b++) {
            int x = ids[a], y = ids[b];
            if (last[x] < first[y] || last[y] < first[x])
                continue;
            int64_t x0 = g->t[x].offset, x1 = x0 + ir_nbytes(&g->t[x]);
            int64_t y0 = g->t[y].offset, y1 = y0 + ir_nbytes(&g->t[y]);
            if (x0 < y1 && y0 < x1)
                rc = ft_fail(e, "arena: '%s' and '%s' are live at the same time and overlap", g->t[x].name,
                             g->t[y].name);
        }
    free(ids);
    free(first);
    free(last);
    return rc;
}

void pass_mem_summary(const ir_graph_t *g, pass_mem_summary_t *s)
{
    memset(s, 0, sizeof *s);
    int64_t pers_end = 0;
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        int grp = persistent_group(t);
        if (grp < 0 || aliases(t) || t->offset < 0)
            continue;
        int64_t b = align_up(ir_nbytes(t));
        if (grp <= 1)
            s->weights += b;
        else if (grp == 2)
            s->grads += b;
        else if (grp == 3)
            s->optstate += b;
        else
            s->inputs += b;
        if (t->offset + b > pers_end)
            pers_end = t->offset + b;
    }
    s->total = g->arena_bytes;
    s->activations = g->arena_bytes - pers_end;
    s->workspace = 0;
}
