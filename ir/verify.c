/* verify.c — the structural checks run between passes: every source precedes its user,
 * arity and shapes agree with the op table, roles, phases and links are consistent. */
#include <string.h>

#include "ir.h"

static int check_node(const ir_graph_t *g, int id, ft_err_t *e)
{
    const ir_tensor_t *t = &g->t[id];
    if ((unsigned)t->op >= OP_COUNT)
        return ft_fail(e, "tensor %d '%s': bad op %d", id, t->name, (int)t->op);
    if ((unsigned)t->dtype >= IR_DTYPE_COUNT || (unsigned)t->role >= IR_ROLE_COUNT)
        return ft_fail(e, "tensor %d '%s': bad dtype or role", id, t->name);
    if (t->ndim < 0 || t->ndim > IR_MAX_DIMS)
        return ft_fail(e, "tensor %d '%s': %d dimensions", id, t->name, t->ndim);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] <= 0)
            return ft_fail(e, "tensor %d '%s': dimension %d is %lld", id, t->name, i, (long long)t->shape[i]);
    if (!memchr(t->name, 0, IR_NAME_MAX))
        return ft_fail(e, "tensor %d: name not terminated", id);
    const ir_op_desc_t *d = ir_ops[t->op];
    if (t->op == OP_LEAF) {
        if (t->nsrc != 0 || t->role == IR_ACT)
            return ft_fail(e, "leaf %d '%s': has inputs or is an activation", id, t->name);
    } else if (t->nsrc < d->min_src || t->nsrc > d->max_src) {
        return ft_fail(e, "node %d '%s' (%s): %d inputs", id, t->name, d->name, t->nsrc);
    }
    for (int i = 0; i < t->nsrc; i++) {
        int s = t->src[i];
        if (s < 0 || s >= id)
            return ft_fail(e, "node %d '%s': input %d (%d) does not precede it", id, t->name, i, s);
        if (g->t[s].flags & IR_FLAG_DEAD)
            return ft_fail(e, "node %d '%s': input %d '%s' was removed", id, t->name, i, g->t[s].name);
        if (g->t[s].phase > t->phase)
            return ft_fail(e, "node %d '%s': input '%s' runs in a later phase", id, t->name, g->t[s].name);
    }
    if (t->op != OP_LEAF) {
        ir_tensor_t copy = *t;
        ft_err_t se;
        if (d->shape(g, &copy, &se) != 0)
            return ft_fail(e, "node %d '%s': %s", id, t->name, se.msg);
        if (!ir_same_shape(&copy, t))
            return ft_fail(e, "node %d '%s': shape disagrees with the %s rule", id, t->name, d->name);
    }
    if (t->role == IR_TRAINABLE) {
        if (t->grad >= g->n || t->state[0] >= g->n || t->state[1] >= g->n)
            return ft_fail(e, "trainable '%s': dangling gradient or state link", t->name);
        if (t->grad >= 0 && (g->t[t->grad].role != IR_GRAD || !ir_same_shape(&g->t[t->grad], t)))
            return ft_fail(e, "trainable '%s': gradient buffer has the wrong role or shape", t->name);
    }
    return 0;
}

int ir_verify(const ir_graph_t *g, ft_err_t *e)
{
    if (g->err[0])
        return ft_fail(e, "graph has a builder error: %s", g->err);
    int nloss = 0;
    for (int i = 0; i < g->n; i++) {
        if (g->t[i].flags & IR_FLAG_DEAD)
            continue;
        if (check_node(g, i, e) != 0)
            return -1;
        if (g->t[i].flags & IR_FLAG_LOSS)
            nloss++;
    }
    if (nloss > 1)
        return ft_fail(e, "graph has %d loss tensors (at most one)", nloss);
    for (int k = 0; k < g->nsched; k++) {
        int id = g->sched[k];
        if (id < 0 || id >= g->n || (g->t[id].flags & IR_FLAG_DEAD))
            return ft_fail(e, "schedule entry %d names no live node (%d)", k, id);
    }
    return 0;
}
