/* dce.c — dead-code elimination: keeps what the loss, the host-visible outputs and the
 * in-place updates (gradient accumulation, optimizer steps) need, plus every weight and
 * state buffer; drops the rest and compacts the graph. */
#include <stdlib.h>

#include "passes.h"

static bool is_root(const ir_tensor_t *t)
{
    if (t->flags & (IR_FLAG_LOSS | IR_FLAG_OUTPUT))
        return true;
    if (ir_ops[t->op]->writes)
        return true;
    return t->op == OP_LEAF && t->role != IR_INPUT;
}

int pass_dce(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    bool *live = ft_xcalloc((size_t)(g->n ? g->n : 1), sizeof *live);
    for (int i = g->n - 1; i >= 0; i--) {
        const ir_tensor_t *t = &g->t[i];
        if (t->flags & IR_FLAG_DEAD)
            continue;
        if (is_root(t))
            live[i] = true;
        if (!live[i])
            continue;
        for (int s = 0; s < t->nsrc; s++)
            live[t->src[s]] = true;
    }
    /* links from weights to their gradient and state buffers keep those alive too */
    for (int i = 0; i < g->n; i++)
        if (live[i] && g->t[i].grad >= 0)
            live[g->t[i].grad] = true;
    int *order = ft_xmalloc((size_t)(g->n ? g->n : 1) * sizeof *order);
    int n = 0;
    for (int i = 0; i < g->n; i++)
        if (live[i])
            order[n++] = i;
    int rc = ir_reorder(g, order, n, e);
    free(order);
    free(live);
    return rc;
}
