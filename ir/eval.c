/* eval.c — a plain float64 evaluator of a whole graph in id order, and the graph's total
 * cost (FLOPs and bytes; per optimizer step for ftc inspect and ftrun's MFU). The evaluator is the oracle of the finite-difference checks; the runtime's CPU
 * executor runs the planned arena instead. */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

int ir_eval_f64(const ir_graph_t *g, double **vals, ft_err_t *e)
{
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->flags & IR_FLAG_DEAD)
            continue;
        if (t->op == OP_LEAF) {
            if (!vals[i])
                return ft_fail(e, "leaf '%s' has no value", t->name);
            continue;
        }
        const ir_op_desc_t *d = ir_ops[t->op];
        ir_cpu_args_t a = {.node = t};
        for (int s = 0; s < t->nsrc; s++) {
            a.srct[s] = &g->t[t->src[s]];
            a.in[s] = vals[t->src[s]];
        }
        if (ir_in_place(t)) {
            vals[i] = vals[t->src[ir_alias_src(t)]];
        } else {
            vals[i] = ft_xcalloc((size_t)ir_numel(t), sizeof(double));
        }
        a.out = vals[i];
        d->cpu(&a);
    }
    return 0;
}

void ir_eval_free(const ir_graph_t *g, double **vals)
{
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->op == OP_LEAF || (t->flags & IR_FLAG_DEAD) || ir_in_place(t))
            continue;
        free(vals[i]);
        vals[i] = NULL;
    }
}

/* Sums the cost of the live nodes in `phase` (all if < 0) that carry none of `skip`'s flags. */
static void cost_sum(const ir_graph_t *g, int phase, unsigned skip, double *flops, double *bytes)
{
    *flops = *bytes = 0;
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->op == OP_LEAF || (t->flags & (IR_FLAG_DEAD | skip)))
            continue;
        if (phase >= 0 && (int)t->phase != phase)
            continue;
        double f = 0, b = 0;
        ir_ops[t->op]->cost(g, t, &f, &b);
        *flops += f;
        *bytes += b;
    }
}

void ir_cost(const ir_graph_t *g, int phase, double *flops, double *bytes) { cost_sum(g, phase, 0, flops, bytes); }

double ir_step_flops(const ir_graph_t *g, int64_t grad_accum, bool with_recompute)
{
    unsigned skip = with_recompute ? 0 : IR_FLAG_RECOMPUTE;
    double micro, opt, b;
    cost_sum(g, IR_PH_MICRO, skip, &micro, &b);
    cost_sum(g, IR_PH_OPT, skip, &opt, &b);
    return micro * (double)(grad_accum > 0 ? grad_accum : 1) + opt;
}
