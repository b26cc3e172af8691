/* fuse.c — folds an addition into the matmul that feeds it: add(x, a·b) becomes one
 * matmul node a·b + x, which cuBLASLt runs as D = A·B + C (beta 1) instead of writing the
 * product and reading it back. Where LoRA's low-rank path meets the base projection, and
 * where the backward pass sums a tensor's gradient from several matmuls, this saves one
 * full pass over the activation per add. The product must feed nothing else (its value is
 * no longer stored), be no output, and share the add's dtype and phase; the add keeps its
 * name, flags and place, so recompute clones and the backward pass fuse alike. */
#include <stdlib.h>

#include "passes.h"

static bool single_product(const ir_graph_t *g, const int *uses, const ir_tensor_t *add, int mm)
{
    const ir_tensor_t *m = &g->t[mm];
    return m->op == OP_MATMUL && uses[mm] == 1 && !(m->flags & (IR_FLAG_OUTPUT | IR_FLAG_LOSS | IR_FLAG_DEAD)) &&
           m->dtype == add->dtype && m->phase == add->phase;
}

static void become_matmul(ir_tensor_t *t, const ir_tensor_t *m, int addend)
{
    int a = m->src[0], b = m->src[1];
    int64_t ta = m->ip[0], tb = m->ip[1];
    t->op = OP_MATMUL;
    t->nsrc = 3;
    t->src[0] = a;
    t->src[1] = b;
    t->src[2] = addend;
    for (int p = 0; p < IR_MAX_PARAMS; p++) {
        t->ip[p] = 0;
        t->fp[p] = 0;
    }
    t->ip[0] = ta;
    t->ip[1] = tb;
}

/* One sweep; returns how many adds it rewrote. add(x, a·b) becomes a·b + x and the product
 * dies; add(x, a·b + c) becomes a·b + (x + c), the inner add taking the product's node, so
 * that a later sweep can fold it into c's matmul (a residual add into the projection, a
 * gradient sum into the matmul that made one of its terms). */
static int sweep(ir_graph_t *g, int *uses)
{
    int n = 0;
    for (int i = 0; i < g->n; i++) {
        ir_tensor_t *t = &g->t[i];
        if (t->op != OP_ADD || (t->flags & IR_FLAG_DEAD) || t->src[0] == t->src[1])
            continue;
        /* prefer the later operand as the product: the earlier value is then the addend */
        int k = single_product(g, uses, t, t->src[1]) ? 1 : single_product(g, uses, t, t->src[0]) ? 0 : -1;
        if (k < 0)
            continue;
        int mm = t->src[k], x = t->src[1 - k];
        ir_tensor_t *m = &g->t[mm];
        if (m->nsrc == 2) {
            become_matmul(t, m, x);
            m->flags |= IR_FLAG_DEAD;
            uses[mm] = 0;
        } else {
            int c = m->src[2];
            ir_tensor_t prod = *m;
            m->op = OP_ADD;
            m->nsrc = 2;
            m->src[0] = x;
            m->src[1] = c;
            for (int p = 0; p < IR_MAX_PARAMS; p++) {
                m->ip[p] = 0;
                m->fp[p] = 0;
            }
            become_matmul(t, &prod, mm);
        }
        n++;
    }
    return n;
}

int pass_fuse(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    (void)ctx;
    int *uses = ft_xcalloc((size_t)(g->n ? g->n : 1), sizeof *uses);
    for (int i = 0; i < g->n; i++)
        if (!(g->t[i].flags & IR_FLAG_DEAD))
            for (int s = 0; s < g->t[i].nsrc; s++)
                uses[g->t[i].src[s]]++;
    int total = 0, n;
    while ((n = sweep(g, uses)) > 0)
        total += n;
    free(uses);
    if (total == 0)
        return 0;
    int *order = ft_xmalloc((size_t)g->n * sizeof *order);
    int live = 0;
    for (int i = 0; i < g->n; i++)
        if (!(g->t[i].flags & IR_FLAG_DEAD))
            order[live++] = i;
    int rc = ir_reorder(g, order, live, e);
    free(order);
    return rc == 0 ? ir_toposort(g, e) : rc;
}
