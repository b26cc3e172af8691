/* exec_cpu.c — the CPU reference executor. Each node's inputs are widened to float64 in a
 * scratch buffer sized once at start-up, the op's reference runs, and the result is
 * rounded back to the output's dtype in the arena. Slow, simple and exact: it is the
 * oracle the GPU executor is checked against. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec_cpu.h"

void *rt_cpu_ptr(const rt_cpu_t *x, int id) { return x->arena + x->g->t[id].offset; }

static void load(const ir_tensor_t *t, const void *p, double *out) { rt_load_f64(t->dtype, p, ir_numel(t), out); }
static void store(const ir_tensor_t *t, void *p, const double *in) { rt_store_f64(t->dtype, in, ir_numel(t), p); }

static int64_t node_scratch(const ir_graph_t *g, const ir_tensor_t *t)
{
    int64_t n = ir_numel(t);
    for (int s = 0; s < t->nsrc; s++)
        n += ir_numel(&g->t[t->src[s]]);
    return n;
}

int rt_cpu_init(rt_cpu_t *x, const ir_graph_t *g, ft_err_t *e)
{
    memset(x, 0, sizeof *x);
    x->g = g;
    x->bad_node = -1;
    x->arena_bytes = g->arena_bytes;
    size_t bytes = (size_t)(g->arena_bytes + 255) / 256 * 256;
    x->arena = aligned_alloc(256, bytes ? bytes : 256);
    if (!x->arena)
        return ft_fail(e, "cannot allocate the %lld-byte arena on the host", (long long)g->arena_bytes);
    memset(x->arena, 0, bytes);
    for (int k = 0; k < g->nsched; k++) {
        int64_t n = node_scratch(g, &g->t[g->sched[k]]);
        if (n > x->scratch_len)
            x->scratch_len = n;
    }
    x->scratch = malloc((size_t)(x->scratch_len ? x->scratch_len : 1) * sizeof *x->scratch);
    if (!x->scratch) {
        free(x->arena);
        return ft_fail(e, "cannot allocate %lld float64 values of scratch", (long long)x->scratch_len);
    }
    return 0;
}

void rt_cpu_free(rt_cpu_t *x)
{
    free(x->arena);
    free(x->scratch);
    memset(x, 0, sizeof *x);
}

static bool all_finite(const double *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

static int run_node(rt_cpu_t *x, int id)
{
    const ir_graph_t *g = x->g;
    const ir_tensor_t *t = &g->t[id];
    const ir_op_desc_t *d = ir_ops[t->op];
    ir_cpu_args_t a = {.node = t};
    double *p = x->scratch;
    for (int s = 0; s < t->nsrc; s++) {
        const ir_tensor_t *st = &g->t[t->src[s]];
        a.srct[s] = st;
        a.in[s] = p;
        load(st, x->arena + st->offset, p);
        p += ir_numel(st);
    }
    a.out = ir_in_place(t) ? a.in[ir_alias_src(t)] : p;
    d->cpu(&a);
    store(t, x->arena + t->offset, a.out);
    for (int s = 1; s < t->nsrc; s++)
        if (d->writes & (1u << s))
            store(a.srct[s], x->arena + a.srct[s]->offset, a.in[s]);
    if (!x->guard)
        return 0;
    /* check what was stored: a value finite in float64 may overflow its dtype */
    load(t, x->arena + t->offset, a.out);
    if (!all_finite(a.out, ir_numel(t))) {
        x->bad_node = id;
        return -1;
    }
    return 0;
}

int rt_cpu_run(rt_cpu_t *x, ir_phase_t phase)
{
    for (int k = 0; k < x->g->nsched; k++) {
        int id = x->g->sched[k];
        if (x->g->t[id].phase != phase)
            continue;
        if (run_node(x, id) != 0)
            return -1;
    }
    return 0;
}

/* ---- the executor interface ---- */

static rt_cpu_t *impl(rt_exec_t *x) { return x->impl; }

static int cpu_run(rt_exec_t *x, ir_phase_t phase, ft_err_t *e)
{
    (void)e;
    return rt_cpu_run(impl(x), phase);
}

static int cpu_read(rt_exec_t *x, int id, void *dst, ft_err_t *e)
{
    memcpy(dst, rt_cpu_ptr(impl(x), id), (size_t)ir_nbytes(&x->g->t[id]));
    return 0;
}

static int cpu_write(rt_exec_t *x, int id, const void *src, ft_err_t *e)
{
    memcpy(rt_cpu_ptr(impl(x), id), src, (size_t)ir_nbytes(&x->g->t[id]));
    return 0;
}

static int cpu_zero(rt_exec_t *x, int id, ft_err_t *e)
{
    memset(rt_cpu_ptr(impl(x), id), 0, (size_t)ir_nbytes(&x->g->t[id]));
    return 0;
}

static int cpu_find_nonfinite(rt_exec_t *x, ir_phase_t phase, int *node, ft_err_t *e)
{
    rt_cpu_t *c = impl(x);
    c->guard = 1;
    c->bad_node = -1;
    rt_cpu_run(c, phase);
    c->guard = 0;
    *node = c->bad_node;
    return 0;
}

static void cpu_destroy(rt_exec_t *x)
{
    rt_cpu_free(impl(x));
    free(x->impl);
}

static const rt_exec_ops_t cpu_ops = {
    .name = "cpu", .run = cpu_run, .read = cpu_read, .write = cpu_write, .zero = cpu_zero,
    .find_nonfinite = cpu_find_nonfinite, .destroy = cpu_destroy,
};

int rt_exec_open_cpu(rt_exec_t *x, const ir_graph_t *g, ft_err_t *e)
{
    memset(x, 0, sizeof *x);
    rt_cpu_t *c = ft_xcalloc(1, sizeof *c);
    if (rt_cpu_init(c, g, e) != 0) {
        free(c);
        return -1;
    }
    *x = (rt_exec_t){.ops = &cpu_ops, .g = g, .arena_bytes = c->arena_bytes, .impl = c};
    return 0;
}
