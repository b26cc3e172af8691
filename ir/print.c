/* print.c — the text form of a graph, as `ftc compile --dump-after` and `ftc inspect
 * --graph` show it: one line per tensor with id, name, op, inputs, shape, dtype and role. */
#include "ir.h"

void ir_print_node(const ir_graph_t *g, int id, FILE *f)
{
    const ir_tensor_t *t = &g->t[id];
    char shp[96];
    ir_shape_str(t, shp, sizeof shp);
    fprintf(f, "%%%-5d %-10s %-14s", id, ir_role_name(t->role), ir_ops[t->op]->name);
    fprintf(f, " (");
    for (int i = 0; i < t->nsrc; i++)
        fprintf(f, "%s%%%d", i ? ", " : "", t->src[i]);
    fprintf(f, ") %s %s", shp, ir_dtype_name(t->dtype));
    if (t->block >= 0)
        fprintf(f, " blk=%d", t->block);
    if (t->phase == IR_PH_OPT)
        fprintf(f, " opt");
    if (t->flags & IR_FLAG_LOSS)
        fprintf(f, " loss");
    if (t->flags & IR_FLAG_OUTPUT)
        fprintf(f, " out");
    if (t->flags & IR_FLAG_RECOMPUTE)
        fprintf(f, " recompute");
    if (t->offset >= 0)
        fprintf(f, " @%lld", (long long)t->offset);
    fprintf(f, "  %s\n", t->name);
}

void ir_print(const ir_graph_t *g, FILE *f)
{
    int live = 0;
    for (int i = 0; i < g->n; i++)
        live += !(g->t[i].flags & IR_FLAG_DEAD);
    fprintf(f, "graph: %d tensors\n", live);
    if (g->nsched > 0) {
        for (int i = 0; i < g->n; i++)
            if (g->t[i].op == OP_LEAF && !(g->t[i].flags & IR_FLAG_DEAD))
                ir_print_node(g, i, f);
        for (int k = 0; k < g->nsched; k++)
            ir_print_node(g, g->sched[k], f);
        return;
    }
    for (int i = 0; i < g->n; i++)
        if (!(g->t[i].flags & IR_FLAG_DEAD))
            ir_print_node(g, i, f);
}
