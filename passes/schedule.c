/* schedule.c — the execution order: phase by phase, nodes in topological id order, except
 * that recompute clones wait until their first user (the topological reorder placed them
 * there) and gradient accumulations run as soon as their gradient exists, so a weight's
 * gradient value dies right after it is made instead of at the end of the backward pass. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef struct {
    const ir_graph_t *g;
    int *acc_of;   /* gradient value id -> the ACC node consuming it, or -1 */
    bool *done;
    int *sched;
    int n;
} sched_state_t;

static bool ready(const sched_state_t *st, int id)
{
    const ir_tensor_t *t = &st->g->t[id];
    for (int s = 0; s < t->nsrc; s++)
        if (st->g->t[t->src[s]].op != OP_LEAF && !st->done[t->src[s]])
            return false;
    return true;
}

static void place(sched_state_t *st, int id)
{
    st->sched[st->n++] = id;
    st->done[id] = true;
    int acc = st->acc_of[id];
    if (acc >= 0 && !st->done[acc] && ready(st, acc))
        place(st, acc);
}

int pass_schedule(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    /* topological ids first, so "in id order" is a valid order within a phase */
    if (ir_toposort(g, e) != 0)
        return -1;
    sched_state_t st = {g, ft_xmalloc((size_t)g->n * sizeof(int)), ft_xcalloc((size_t)g->n, sizeof(bool)),
                        ft_xmalloc((size_t)g->n * sizeof(int)), 0};
    for (int i = 0; i < g->n; i++)
        st.acc_of[i] = -1;
    for (int i = 0; i < g->n; i++)
        if (g->t[i].op == OP_ACC)
            st.acc_of[g->t[i].src[1]] = i;
    for (int ph = 0; ph < IR_PHASE_COUNT; ph++)
        for (int i = 0; i < g->n; i++) {
            const ir_tensor_t *t = &g->t[i];
            if (t->op == OP_LEAF || (int)t->phase != ph || st.done[i])
                continue;
            place(&st, i);
        }
    free(g->sched);
    g->sched = st.sched;
    g->nsched = st.n;
    free(st.acc_of);
    free(st.done);
    return 0;
}
