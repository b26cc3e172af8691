/* fuse.c — fusions made once the backward pass and recomputation are in place:
 *  - an addition into the matmul that feeds it: add(x, a·b) becomes one matmul node a·b + x,
 *    which cuBLASLt runs as D = A·B + C (beta 1) instead of writing the product and reading
 *    it back. Where LoRA's low-rank path meets the base projection, and where the backward
 *    pass sums a tensor's gradient from several matmuls, this saves one full pass over the
 *    activation per add. The product must feed nothing else (its value is no longer
 *    stored), be no output, and share the add's dtype and phase; the add keeps its name,
 *    flags and place, so recompute clones and the backward pass fuse alike. Where both
 *    operands are products, the longer contraction takes the shorter one as its addend.
 *  - a scale of a matmul's product into the matmul (cuBLASLt's alpha), and a weight
 *    gradient's accumulation (acc of the product, widened to f32) into the matmul that makes
 *    it, written in place into the f32 gradient buffer (beta 1).
 *  - an addition onto an RMSNorm input gradient into that kernel (the residual stream's
 *    gradient, summed over the blocks' norms).
 *  - attention's row statistics from the forward kernel: attn_lse(q, k, doc) beside an
 *    attn(q, k, v, doc) of the same inputs redoes half of that node's work; instead the attn
 *    node writes the log-sum-exp into a buffer (its fifth input, written in place) and the
 *    attn_lse node becomes after(buffer, attn), which reads those bytes once attn has run.
 *  - the logits' gradient in the logits' storage: xent_bwd(L, targets, dy) reads each logit
 *    before it writes that element's gradient, and where L feeds only it and the xent of the
 *    same targets, it reads after(L, xent) instead and writes in place (IR_FLAG_INPLACE):
 *    the LM head's [tokens, vocab] output and its gradient are never both held (4 GiB at
 *    16k tokens and a 128k vocabulary in bf16, at the backward's start, the usual peak).
 *  - attention's dk and dv in one node, for targets whose kernels do that (ft_target_hopper):
 *    the dk and dv nodes of one attention (same six inputs) each recompute the probabilities;
 *    the dk node computes both instead (ip[0] = 3), writing dv into a buffer (its seventh
 *    input), and the dv node becomes after(buffer, dk). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

static bool single_product(const ir_graph_t *g, const int *uses, const ir_tensor_t *add, int mm)
{
    const ir_tensor_t *m = &g->t[mm];
    return m->op == OP_MATMUL && uses[mm] == 1 && !(m->flags & (IR_FLAG_OUTPUT | IR_FLAG_LOSS | IR_FLAG_DEAD)) &&
           m->dtype == add->dtype && m->phase == add->phase;
}

/* A node rewritten into another op starts from no parameters. */
static void clear_params(ir_tensor_t *t)
{
    memset(t->ip, 0, sizeof t->ip);
    memset(t->fp, 0, sizeof t->fp);
}

/* t becomes m's product (with m's transposes and scale), plus addend where >= 0. */
static void become_matmul(ir_tensor_t *t, const ir_tensor_t *m, int addend)
{
    ir_tensor_t p = *m;
    t->op = OP_MATMUL;
    t->nsrc = addend >= 0 ? 3 : 2;
    t->src[0] = p.src[0];
    t->src[1] = p.src[1];
    t->src[2] = addend;
    clear_params(t);
    for (int i = 0; i < 3; i++)
        t->ip[i] = p.ip[i];
    t->fp[0] = p.fp[0];
}

/* scale(a·b) becomes one matmul scaled by cuBLASLt's alpha (LoRA's alpha/r on the rank-r
 * side, forward and back): the scale node takes the product's place and the product dies.
 * Returns how many it folded. */
static int fold_scales(ir_graph_t *g, int *uses)
{
    int n = 0;
    for (int i = 0; i < g->n; i++) {
        ir_tensor_t *t = &g->t[i];
        if (t->op != OP_SCALE || (t->flags & IR_FLAG_DEAD) || !single_product(g, uses, t, t->src[0]))
            continue;
        int mm = t->src[0];
        ir_tensor_t *m = &g->t[mm];
        if (m->nsrc != 2)
            continue; /* alpha·(a·b + c) would scale the addend too */
        double alpha = ir_matmul_alpha(m) * t->fp[0];
        become_matmul(t, m, -1);
        t->ip[2] = 1;
        t->fp[0] = alpha;
        m->flags |= IR_FLAG_DEAD;
        uses[mm] = 0;
        n++;
    }
    return n;
}

/* acc(buf, cast(a·b)) with a 16-bit product and an f32 buffer (a weight's gradient,
 * accumulated over micro-batches) becomes a·b + buf written in place into buf: cuBLASLt
 * keeps the f32 sums of the 16-bit inputs and adds them onto buf in its epilogue, where the
 * product was rounded to 16 bits, read back, widened and added by two more kernels.
 * (acc(buf, a·b) with an f32 product likewise.) The product's node becomes the in-place
 * matmul and keeps its place, where its inputs are fresh (the acc nodes come last in id
 * order); it takes the acc's name. Returns how many it folded. */
static int fold_grad_acc(ir_graph_t *g, int *uses)
{
    int n = 0;
    for (int i = 0; i < g->n; i++) {
        ir_tensor_t *t = &g->t[i];
        if (t->op != OP_ACC || (t->flags & IR_FLAG_DEAD) || uses[i] != 0)
            continue;
        int x = t->src[1], cast = -1;
        const ir_tensor_t *xt = &g->t[x];
        if (xt->op == OP_CAST && uses[x] == 1 && xt->dtype == t->dtype && xt->phase == t->phase &&
            !(xt->flags & (IR_FLAG_OUTPUT | IR_FLAG_DEAD)) &&
            ir_dtype_size(g->t[xt->src[0]].dtype) < ir_dtype_size(xt->dtype)) {
            cast = x;
            x = xt->src[0];
            xt = &g->t[x];
        }
        if (xt->op != OP_MATMUL || xt->nsrc != 2 || uses[x] != 1 || xt->phase != t->phase ||
            (xt->flags & (IR_FLAG_OUTPUT | IR_FLAG_LOSS | IR_FLAG_DEAD)) ||
            (cast < 0 && xt->dtype != t->dtype))
            continue;
        ir_tensor_t *m = &g->t[x];
        m->src[2] = t->src[0];
        m->nsrc = 3;
        m->dtype = t->dtype;
        m->flags |= IR_FLAG_INPLACE;
        memcpy(m->name, t->name, IR_NAME_MAX);
        t->flags |= IR_FLAG_DEAD; /* its read of buf passes to the matmul */
        uses[x] = 0;
        if (cast >= 0) {
            g->t[cast].flags |= IR_FLAG_DEAD;
            uses[cast] = 0;
        }
        n++;
    }
    return n;
}

/* The contraction length of matmul node m. */
static int64_t inner_extent(const ir_graph_t *g, const ir_tensor_t *m)
{
    const ir_tensor_t *a = &g->t[m->src[0]];
    return m->ip[0] ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
}

/* Which operand of add t becomes the product that takes the other as its addend, or -1.
 * Where both are products, the one with the longer contraction: the short one (LoRA's
 * rank-r product onto its projection) is then written first and read in the long one's
 * epilogue, under its arithmetic, instead of being read and written once more by a
 * memory-bound call. Else the later operand, so the earlier value is the addend. */
static int product_side(const ir_graph_t *g, const int *uses, const ir_tensor_t *t)
{
    bool p0 = single_product(g, uses, t, t->src[0]), p1 = single_product(g, uses, t, t->src[1]);
    if (p0 && p1)
        return inner_extent(g, &g->t[t->src[0]]) > inner_extent(g, &g->t[t->src[1]]) ? 0 : 1;
    return p1 ? 1 : p0 ? 0 : -1;
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
        int k = product_side(g, uses, t);
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
            clear_params(m);
            become_matmul(t, &prod, mm);
        }
        n++;
    }
    return n;
}

static bool single_norm_grad(const ir_graph_t *g, const int *uses, const ir_tensor_t *add, int n)
{
    const ir_tensor_t *t = &g->t[n];
    return t->op == OP_RMSNORM_BWD_X && t->nsrc == 3 && uses[n] == 1 &&
           !(t->flags & (IR_FLAG_OUTPUT | IR_FLAG_LOSS | IR_FLAG_DEAD)) && t->dtype == add->dtype &&
           t->phase == add->phase;
}

/* add(c, rmsnorm_bwd_x(x, w, dy)) becomes rmsnorm_bwd_x(x, w, dy, c), which adds c as it
 * writes: the residual stream's gradient gathers every norm's input gradient, one more full
 * pass over the activation per add otherwise (after the matmul sweeps, which take the adds
 * they can first). Returns how many it folded. */
static int fold_norm_adds(ir_graph_t *g, int *uses)
{
    int n = 0;
    for (int i = 0; i < g->n; i++) {
        ir_tensor_t *t = &g->t[i];
        if (t->op != OP_ADD || (t->flags & IR_FLAG_DEAD) || t->src[0] == t->src[1])
            continue;
        int k = single_norm_grad(g, uses, t, t->src[1]) ? 1 : single_norm_grad(g, uses, t, t->src[0]) ? 0 : -1;
        if (k < 0)
            continue;
        int nb = t->src[k], c = t->src[1 - k];
        ir_tensor_t p = g->t[nb];
        t->op = OP_RMSNORM_BWD_X;
        t->nsrc = 4;
        memcpy(t->src, p.src, 3 * sizeof *t->src);
        t->src[3] = c;
        memcpy(t->ip, p.ip, sizeof t->ip);
        memcpy(t->fp, p.fp, sizeof t->fp);
        g->t[nb].flags |= IR_FLAG_DEAD;
        uses[nb] = 0;
        n++;
    }
    return n;
}

/* A buffer beside node a that a writes in place: named after what it stands for. */
static int side_buffer(ir_graph_t *g, int a, const char *what, const ir_tensor_t *like)
{
    int buf = ir_fill(g, -1, 0.0, like->ndim, like->shape, like->dtype);
    if (buf < 0)
        return -1;
    ir_tensor_t *b = &g->t[buf];
    b->block = g->t[a].block;
    b->phase = g->t[a].phase;
    b->flags |= g->t[a].flags & (IR_FLAG_BWD | IR_FLAG_RECOMPUTE);
    snprintf(b->name, IR_NAME_MAX, "%s:%.100s", what, like->name);
    return buf;
}

/* Node `node` becomes after(buf, writer): it reads the bytes writer left in buf. */
static void become_after(ir_graph_t *g, int node, int buf, int writer)
{
    ir_tensor_t *t = &g->t[node];
    t->op = OP_AFTER;
    t->nsrc = 2;
    t->src[0] = buf;
    t->src[1] = writer;
    clear_params(t);
}

static bool same_attn_inputs(const ir_tensor_t *attn, const ir_tensor_t *lse)
{
    return attn->op == OP_ATTN && attn->nsrc == 4 && !(attn->flags & IR_FLAG_DEAD) && attn->src[0] == lse->src[0] &&
           attn->src[1] == lse->src[1] && attn->src[3] == lse->src[2] && attn->fp[0] == lse->fp[0] &&
           attn->phase == lse->phase;
}

/* Returns how many attn_lse nodes it folded, or -1 (g->err says why). */
static int fuse_attn_stats(ir_graph_t *g)
{
    int n = 0, n0 = g->n;
    for (int s = 0; s < n0; s++) {
        if (g->t[s].op != OP_ATTN_LSE || (g->t[s].flags & IR_FLAG_DEAD))
            continue;
        int a = -1;
        for (int i = 0; i < n0 && a < 0; i++)
            if (same_attn_inputs(&g->t[i], &g->t[s]))
                a = i;
        if (a < 0)
            continue;
        ir_tensor_t lse = g->t[s];
        int buf = side_buffer(g, a, "lse_buf", &lse);
        if (buf < 0)
            return -1;
        g->t[a].src[4] = buf;
        g->t[a].nsrc = 5;
        become_after(g, s, buf, a);
        n++;
    }
    return n;
}

/* The live six-input attn_bwd node with ip[0] = which and t's inputs and scale, or -1. */
static int attn_bwd_twin(const ir_graph_t *g, const ir_tensor_t *t, int which)
{
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *o = &g->t[i];
        if (o->op == OP_ATTN_BWD && !(o->flags & IR_FLAG_DEAD) && o->nsrc == 6 && o->ip[0] == which &&
            o->phase == t->phase && o->fp[0] == t->fp[0] && o->dtype == t->dtype &&
            memcmp(o->src, t->src, 6 * sizeof *o->src) == 0)
            return i;
    }
    return -1;
}

/* What the Hopper kernels take (codegen/emit.c's tensor-core rule): bf16 q, k, v, dy and
 * output, head dim 64 or 128. */
static bool attn_dkv_kernel(const ir_graph_t *g, const ir_tensor_t *t)
{
    static const int operands[4] = {0, 1, 2, 4};
    for (int i = 0; i < 4; i++)
        if (g->t[t->src[operands[i]]].dtype != IR_BF16)
            return false;
    int64_t dh = g->t[t->src[0]].shape[3];
    return t->dtype == IR_BF16 && (dh == 64 || dh == 128);
}

/* Returns how many (dk, dv) pairs it made one node, or -1 (g->err says why). */
static int fuse_attn_dkv(ir_graph_t *g, const char *target)
{
    if (!ft_target_hopper(target))
        return 0;
    int n = 0, n0 = g->n;
    for (int k = 0; k < n0; k++) {
        const ir_tensor_t *t = &g->t[k];
        if (t->op != OP_ATTN_BWD || (t->flags & IR_FLAG_DEAD) || t->ip[0] != 1 || t->nsrc != 6 ||
            !attn_dkv_kernel(g, t))
            continue;
        int dv = attn_bwd_twin(g, t, 2);
        if (dv < 0)
            continue;
        ir_tensor_t tv = g->t[dv];
        int buf = side_buffer(g, k, "dv_buf", &tv);
        if (buf < 0)
            return -1;
        g->t[k].src[6] = buf;
        g->t[k].nsrc = 7;
        g->t[k].ip[0] = 3;
        become_after(g, dv, buf, k);
        n++;
    }
    return n;
}

/* Returns how many xent_bwd nodes it made in place, or -1 (g->err says why). uses: how many
 * live nodes read each tensor. */
static int fuse_xent_in_place(ir_graph_t *g, const int *uses)
{
    int n = 0, n0 = g->n;
    for (int x = 0; x < n0; x++) {
        const ir_tensor_t *b = &g->t[x];
        if (b->op != OP_XENT_BWD || (b->flags & (IR_FLAG_DEAD | IR_FLAG_INPLACE)))
            continue;
        int l = b->src[0];
        const ir_tensor_t *lt = &g->t[l];
        if (lt->op == OP_LEAF || ir_in_place(lt) || uses[l] != 2 || lt->dtype != b->dtype ||
            (lt->flags & (IR_FLAG_OUTPUT | IR_FLAG_LOSS)))
            continue;
        int f = -1; /* the forward: the other reader of L */
        for (int i = 0; i < n0 && f < 0; i++)
            if (g->t[i].op == OP_XENT && !(g->t[i].flags & IR_FLAG_DEAD) && g->t[i].src[0] == l &&
                g->t[i].src[1] == b->src[1] && g->t[i].ip[0] == b->ip[0])
                f = i;
        if (f < 0)
            continue;
        int a = ir_node(g, OP_AFTER, 2, (const int[]){l, f}, NULL, NULL);
        if (a < 0)
            return -1;
        ir_tensor_t *at = &g->t[a], *bt = &g->t[x];
        at->block = bt->block;
        at->phase = bt->phase;
        at->flags |= bt->flags & (IR_FLAG_BWD | IR_FLAG_RECOMPUTE);
        char fname[IR_NAME_MAX];
        memcpy(fname, g->t[f].name, IR_NAME_MAX);
        snprintf(at->name, IR_NAME_MAX, "after:%.100s", fname);
        bt->src[0] = a;
        bt->flags |= IR_FLAG_INPLACE;
        n++;
    }
    return n;
}

int pass_fuse(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    int nattn = fuse_attn_stats(g), ndkv = nattn < 0 ? -1 : fuse_attn_dkv(g, ctx->target);
    if (ndkv < 0)
        return ft_fail(e, "fuse: %s", g->err);
    nattn += ndkv;
    int *uses = ft_xcalloc((size_t)(g->n ? g->n : 1), sizeof *uses);
    for (int i = 0; i < g->n; i++)
        if (!(g->t[i].flags & IR_FLAG_DEAD))
            for (int s = 0; s < g->t[i].nsrc; s++)
                uses[g->t[i].src[s]]++;
    int total = fold_scales(g, uses), n;
    while ((n = sweep(g, uses)) > 0)
        total += n;
    total += fold_grad_acc(g, uses) + fold_norm_adds(g, uses);
    n = fuse_xent_in_place(g, uses);
    free(uses);
    if (n < 0)
        return ft_fail(e, "fuse: %s", g->err);
    total += n;
    if (total == 0 && nattn == 0)
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
