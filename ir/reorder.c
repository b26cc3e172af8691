/* reorder.c — renumbering a graph: dropping removed tensors and restoring topological id
 * order after a rewrite appended tensors that earlier ones now use (LoRA, recompute). */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

int ir_reorder(ir_graph_t *g, const int *order, int n, ft_err_t *e)
{
    int *map = ft_xmalloc((size_t)(g->n ? g->n : 1) * sizeof *map);
    for (int i = 0; i < g->n; i++)
        map[i] = -1;
    for (int k = 0; k < n; k++)
        map[order[k]] = k;
    ir_tensor_t *nt = ft_xmalloc((size_t)(n ? n : 1) * sizeof *nt);
    int rc = 0;
    for (int k = 0; k < n && rc == 0; k++) {
        ir_tensor_t t = g->t[order[k]];
        for (int s = 0; s < t.nsrc; s++) {
            t.src[s] = map[t.src[s]];
            if (t.src[s] < 0)
                rc = ft_fail(e, "reorder: '%s' uses a removed tensor", t.name);
        }
        t.grad = t.grad >= 0 ? map[t.grad] : -1;
        t.state[0] = t.state[0] >= 0 ? map[t.state[0]] : -1;
        t.state[1] = t.state[1] >= 0 ? map[t.state[1]] : -1;
        nt[k] = t;
    }
    int ns = 0;
    for (int k = 0; k < g->nsched && rc == 0; k++)
        if (map[g->sched[k]] >= 0)
            g->sched[ns++] = map[g->sched[k]];
    free(map);
    if (rc != 0) {
        free(nt);
        return rc;
    }
    free(g->t);
    g->t = nt;
    g->n = g->cap = n;
    if (g->cap == 0) {
        g->cap = 1;
    }
    g->nsched = ns;
    return 0;
}

/* Iterative depth-first emission: a node is emitted after all its inputs. */
static void emit(const ir_graph_t *g, int root, unsigned char *state, int *stack, int *order, int *n)
{
    int sp = 0;
    stack[sp++] = root;
    while (sp > 0) {
        int id = stack[sp - 1];
        if (state[id] == 2) {
            sp--;
            continue;
        }
        state[id] = 1;
        int pushed = 0;
        const ir_tensor_t *t = &g->t[id];
        for (int s = t->nsrc - 1; s >= 0; s--) {
            int src = t->src[s];
            if (state[src] == 0) {
                stack[sp++] = src;
                pushed = 1;
            }
        }
        if (pushed)
            continue;
        state[id] = 2;
        order[(*n)++] = id;
        sp--;
    }
}

int ir_topo_order(const ir_graph_t *g, int *order)
{
    unsigned char *state = ft_xcalloc((size_t)(g->n ? g->n : 1), 1);
    /* each node is pushed at most once per input edge */
    int *stack = ft_xmalloc((size_t)(g->n * (IR_MAX_SRC + 1) + 1) * sizeof *stack);
    int n = 0;
    for (int i = 0; i < g->n; i++)
        if (!(g->t[i].flags & IR_FLAG_DEAD) && state[i] == 0)
            emit(g, i, state, stack, order, &n);
    free(stack);
    free(state);
    return n;
}

int ir_toposort(ir_graph_t *g, ft_err_t *e)
{
    int *order = ft_xmalloc((size_t)(g->n ? g->n : 1) * sizeof *order);
    int n = ir_topo_order(g, order);
    int rc = ir_reorder(g, order, n, e);
    free(order);
    return rc;
}
