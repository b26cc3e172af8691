/* autodiff.c — reverse-mode differentiation. pass_grad is the engine: it walks the graph
 * backwards from y, asking each op's VJP rule for its inputs' adjoints and summing the
 * adjoints of tensors used more than once. pass_autodiff applies it to the loss and every
 * trainable weight, and accumulates each weight's gradient into a persistent buffer, so
 * micro-batches add up; frozen weights get no gradient of their own. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

/* influences[i]: tensor i depends on some x in wrt. */
static bool *mark_influenced(const ir_graph_t *g, int y, const int *wrt, int nwrt)
{
    bool *inf = ft_xcalloc((size_t)g->n, sizeof *inf);
    for (int k = 0; k < nwrt; k++)
        inf[wrt[k]] = true;
    for (int i = 0; i <= y; i++)
        for (int s = 0; s < g->t[i].nsrc && !inf[i]; s++)
            inf[i] = inf[g->t[i].src[s]];
    return inf;
}

static int accumulate(ir_graph_t *g, int have, int add)
{
    if (have < 0)
        return add;
    int sum = ir_add(g, have, add);
    if (sum >= 0)
        g->t[sum].flags |= IR_FLAG_BWD;
    return sum;
}

static int backprop_node(ir_graph_t *g, int i, int *adj, const bool *inf, ft_err_t *e)
{
    const ir_op_desc_t *d = ir_ops[g->t[i].op];
    if (!d->vjp)
        return ft_fail(e, "cannot differentiate through '%s' (%s): the op has no VJP", g->t[i].name, d->name);
    bool need[IR_MAX_SRC] = {0};
    int dsrc[IR_MAX_SRC];
    for (int s = 0; s < IR_MAX_SRC; s++)
        dsrc[s] = -1;
    for (int s = 0; s < g->t[i].nsrc; s++)
        need[s] = inf[g->t[i].src[s]];
    int first_new = g->n;
    int saved_block = g->cur_block;
    ir_phase_t saved_phase = g->cur_phase;
    g->cur_block = g->t[i].block;
    g->cur_phase = g->t[i].phase;
    d->vjp(g, i, adj[i], need, dsrc);
    g->cur_block = saved_block;
    g->cur_phase = saved_phase;
    if (g->err[0])
        return ft_fail(e, "backward of '%s': %s", g->t[i].name, g->err);
    for (int n = first_new; n < g->n; n++)
        g->t[n].flags |= IR_FLAG_BWD;
    int nsrc = g->t[i].nsrc;
    for (int s = 0; s < nsrc; s++) {
        if (!need[s] || dsrc[s] < 0)
            continue;
        int src = g->t[i].src[s];
        if (!ir_same_shape(&g->t[dsrc[s]], &g->t[src]))
            return ft_fail(e, "backward of '%s': gradient of input %d has the wrong shape", g->t[i].name, s);
        adj[src] = accumulate(g, adj[src], dsrc[s]);
    }
    return 0;
}

int pass_grad(ir_graph_t *g, int y, int dy, const int *wrt, int nwrt, int *grads, ft_err_t *e)
{
    if (y < 0 || y >= g->n || dy < 0 || dy >= g->n)
        return ft_fail(e, "pass_grad: bad output or seed tensor");
    if (!ir_same_shape(&g->t[y], &g->t[dy]))
        return ft_fail(e, "pass_grad: seed shape differs from '%s'", g->t[y].name);
    bool *inf = mark_influenced(g, y, wrt, nwrt);
    /* adjoints only for tensors that exist now; new nodes never need one */
    int n0 = g->n;
    int *adj = ft_xmalloc((size_t)n0 * sizeof *adj);
    for (int i = 0; i < n0; i++)
        adj[i] = -1;
    adj[y] = dy;
    int rc = 0;
    for (int i = y; i >= 0 && rc == 0; i--) {
        if (adj[i] < 0 || g->t[i].op == OP_LEAF || !inf[i] || (g->t[i].flags & IR_FLAG_DEAD))
            continue;
        rc = backprop_node(g, i, adj, inf, e);
    }
    for (int k = 0; k < nwrt && rc == 0; k++)
        grads[k] = adj[wrt[k]];
    free(adj);
    free(inf);
    return rc;
}

static int find_loss(const ir_graph_t *g)
{
    for (int i = 0; i < g->n; i++)
        if (g->t[i].flags & IR_FLAG_LOSS)
            return i;
    return -1;
}

int pass_autodiff(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    int loss = find_loss(g);
    if (loss < 0)
        return ft_fail(e, "autodiff: the graph has no loss");
    if (ir_numel(&g->t[loss]) != 1)
        return ft_fail(e, "autodiff: the loss '%s' is not a scalar", g->t[loss].name);
    int nw = 0;
    int *wrt = ft_xmalloc((size_t)g->n * sizeof *wrt);
    for (int i = 0; i < g->n; i++)
        if (g->t[i].role == IR_TRAINABLE && !(g->t[i].flags & IR_FLAG_DEAD))
            wrt[nw++] = i;
    if (nw == 0) {
        free(wrt);
        return ft_fail(e, "autodiff: nothing is trainable (check the tuner block)");
    }
    g->cur_block = -1;
    g->cur_phase = IR_PH_MICRO;
    int seed = ir_fill(g, -1, 1.0, 0, NULL, g->t[loss].dtype);
    ir_set_name(g, seed, "d_loss");
    int *grads = ft_xmalloc((size_t)nw * sizeof *grads);
    int rc = seed < 0 ? ft_fail(e, "autodiff: %s", g->err) : pass_grad(g, loss, seed, wrt, nw, grads, e);
    for (int k = 0; k < nw && rc == 0; k++) {
        int w = wrt[k];
        if (grads[k] < 0)
            continue; /* does not influence the loss: nothing to train */
        char name[IR_NAME_MAX];
        snprintf(name, sizeof name, "grad:%.100s", g->t[w].name);
        int buf = ir_leaf(g, name, IR_GRAD, IR_F32, g->t[w].ndim, g->t[w].shape);
        int gw = grads[k];
        if (g->t[gw].dtype != IR_F32)
            gw = ir_cast(g, gw, IR_F32);
        int acc = ir_node(g, OP_ACC, 2, (int[]){buf, gw}, NULL, NULL);
        if (acc < 0) {
            rc = ft_fail(e, "autodiff: %s", g->err);
            break;
        }
        g->t[acc].flags |= IR_FLAG_BWD;
        ir_set_name(g, acc, "acc:%.100s", g->t[w].name);
        g->t[w].grad = buf;
    }
    free(grads);
    free(wrt);
    return rc;
}
