/* optimizer.c — inserts the optimizer step as graph nodes of the step phase: the global
 * gradient norm (before clipping), then one AdamW update per trainable weight. The
 * hyper-parameters are an input tensor the host fills each step (learning-rate schedule,
 * bias corrections, 1/target tokens), so the graph is the same every step. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static int add_state(ir_graph_t *g, int w, const char *what)
{
    char name[IR_NAME_MAX];
    snprintf(name, sizeof name, "%s:%.100s", what, g->t[w].name);
    return ir_leaf(g, name, IR_OPTSTATE, IR_F32, g->t[w].ndim, g->t[w].shape);
}

/* sum over all gradients of sum(g^2), as a chain of scalar adds */
static int total_sumsq(ir_graph_t *g, const int *ws, int nw)
{
    int total = -1;
    for (int k = 0; k < nw; k++) {
        int s = ir_node(g, OP_SUMSQ, 1, (int[]){g->t[ws[k]].grad}, NULL, NULL);
        total = total < 0 ? s : ir_add(g, total, s);
    }
    return total;
}

int pass_optimizer(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    const ft_config_t *cfg = ctx->cfg;
    int n0 = g->n;
    int *ws = ft_xmalloc((size_t)(n0 ? n0 : 1) * sizeof *ws);
    int nw = 0;
    for (int i = 0; i < n0; i++)
        if (g->t[i].role == IR_TRAINABLE && g->t[i].grad >= 0 && !(g->t[i].flags & IR_FLAG_DEAD))
            ws[nw++] = i;
    if (nw == 0) {
        free(ws);
        return ft_fail(e, "optimizer: no trainable weight has a gradient");
    }
    g->cur_phase = IR_PH_OPT;
    g->cur_block = -1;
    int hyper = ir_leaf(g, "hyper", IR_INPUT, IR_F32, 1, (int64_t[]){IR_HYPER_COUNT});
    g->t[hyper].phase = IR_PH_OPT;
    int total = total_sumsq(g, ws, nw);
    int gnorm = ir_node(g, OP_GNORM, 2, (int[]){total, hyper}, NULL, NULL);
    ir_set_name(g, gnorm, "grad_norm");
    if (gnorm >= 0)
        g->t[gnorm].flags |= IR_FLAG_OUTPUT;
    for (int k = 0; k < nw && !g->err[0]; k++) {
        int w = ws[k];
        int m = add_state(g, w, "adam_m");
        int v = add_state(g, w, "adam_v");
        /* decay matrices only, as is usual: norms and biases are left alone */
        int64_t decay = cfg->weight_decay > 0 && g->t[w].ndim >= 2;
        int step = ir_node(g, OP_ADAMW, 6, (int[]){w, g->t[w].grad, m, v, hyper, gnorm},
                           (int64_t[IR_MAX_PARAMS]){decay}, NULL);
        ir_set_name(g, step, "adamw:%.100s", g->t[w].name);
        if (m >= 0) {
            g->t[w].state[0] = m;
            g->t[w].state[1] = v;
        }
    }
    g->cur_phase = IR_PH_MICRO;
    free(ws);
    if (g->err[0])
        return ft_fail(e, "optimizer: %s", g->err);
    return 0;
}
