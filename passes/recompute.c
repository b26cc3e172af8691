/* recompute.c — activation checkpointing. With `recompute full`, each transformer block
 * keeps only its input: every forward value of block b that the backward pass reads is
 * recomputed from that input by a clone of the forward nodes, placed (by the topological
 * reorder and the scheduler) right before block b's backward. The originals then die as
 * soon as the forward pass is done with them. `recompute selective` keeps attention's
 * results and inputs as well (q, k, v, the output and its row statistics: about 10 GB for
 * Llama-3-8B at 2 x 8192 tokens) and recomputes the rest: attention is the costliest part
 * of a block to redo per byte it would save, the MLP the cheapest. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef struct {
    ir_graph_t *g;
    int *clone; /* forward id -> clone id, -1 if none yet */
    bool *keep; /* forward values read as they are, never recomputed */
} rc_state_t;

static bool is_attention(ir_op_t op) { return op == OP_ATTN || op == OP_ATTN_LSE; }

/* selective: attention nodes and every input of one */
static void mark_kept(const ir_graph_t *g, bool *keep)
{
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (!is_attention(t->op) || (t->flags & (IR_FLAG_BWD | IR_FLAG_RECOMPUTE | IR_FLAG_DEAD)))
            continue;
        keep[i] = true;
        for (int s = 0; s < t->nsrc; s++)
            keep[t->src[s]] = true;
    }
}

/* Values made from weights alone and small (LoRA's adapters cast to bf16, the A matrices
 * that share an input concatenated): kept, since recomputing them frees next to nothing
 * and costs a launch each (8 a block for LoRA on q, k, v, o). A full fine-tune's
 * bf16 copies of its weights are larger than this and recomputed as before. */
#define KEEP_SMALL_BYTES ((int64_t)1 << 20)

static void mark_small_weight_values(const ir_graph_t *g, bool *keep)
{
    bool *from_weights = ft_xcalloc((size_t)(g->n ? g->n : 1), sizeof *from_weights);
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->op == OP_LEAF || (t->flags & (IR_FLAG_BWD | IR_FLAG_RECOMPUTE | IR_FLAG_DEAD)) || t->nsrc == 0)
            continue;
        bool all = true;
        for (int s = 0; s < t->nsrc && all; s++) {
            const ir_tensor_t *x = &g->t[t->src[s]];
            all = (x->op == OP_LEAF && (x->role == IR_FROZEN || x->role == IR_TRAINABLE)) || from_weights[t->src[s]];
        }
        from_weights[i] = all;
        if (all && ir_nbytes(t) <= KEEP_SMALL_BYTES)
            keep[i] = true;
    }
    free(from_weights);
}

static bool is_block_forward(const ir_tensor_t *t, int block)
{
    return t->op != OP_LEAF && t->block == block && block >= 0 &&
           !(t->flags & (IR_FLAG_BWD | IR_FLAG_RECOMPUTE | IR_FLAG_DEAD));
}

static int clone_of(rc_state_t *st, int id)
{
    if (st->keep[id])
        return id;
    if (st->clone[id] >= 0)
        return st->clone[id];
    ir_graph_t *g = st->g;
    int block = g->t[id].block;
    int src[IR_MAX_SRC];
    int nsrc = g->t[id].nsrc;
    for (int s = 0; s < nsrc; s++) {
        int x = g->t[id].src[s];
        src[s] = is_block_forward(&g->t[x], block) ? clone_of(st, x) : x;
        if (src[s] < 0)
            return -1;
    }
    ir_tensor_t *o = &g->t[id];
    int c = ir_node_dt(g, o->op, o->dtype, nsrc, src, o->ip, o->fp);
    if (c < 0)
        return -1;
    /* the pointer may have moved: re-read the original */
    g->t[c].block = g->t[id].block;
    g->t[c].phase = g->t[id].phase;
    g->t[c].flags |= IR_FLAG_RECOMPUTE;
    char name[IR_NAME_MAX];
    snprintf(name, sizeof name, "%s", g->t[id].name);
    snprintf(g->t[c].name, IR_NAME_MAX, "re:%.100s", name);
    st->clone[id] = c;
    return c;
}

int pass_recompute(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    ft_recompute_t mode = ctx->recompute_set ? ctx->recompute : ctx->cfg ? ctx->cfg->recompute : FT_RECOMPUTE_NONE;
    if (mode == FT_RECOMPUTE_NONE)
        return 0;
    if (mode == FT_RECOMPUTE_AUTO)
        return ft_fail(e, "recompute: 'auto' is chosen by the pipeline (pass_run_all), not this pass alone");
    if (mode != FT_RECOMPUTE_FULL && mode != FT_RECOMPUTE_SELECTIVE)
        return ft_fail(e, "recompute: unknown mode %d", (int)mode);
    int nblocks = 0;
    for (int i = 0; i < g->n; i++)
        if (g->t[i].block + 1 > nblocks)
            nblocks = g->t[i].block + 1;
    int first_kept = nblocks - (ctx->recompute_set ? ctx->recompute_keep : 0); /* blocks from here keep everything */
    int n0 = g->n;
    rc_state_t st = {g, ft_xmalloc((size_t)(n0 ? n0 : 1) * sizeof(int)),
                     ft_xcalloc((size_t)(n0 ? n0 : 1), sizeof(bool))};
    for (int i = 0; i < n0; i++)
        st.clone[i] = -1;
    if (mode == FT_RECOMPUTE_SELECTIVE)
        mark_kept(g, st.keep);
    mark_small_weight_values(g, st.keep);
    int rc = 0;
    for (int i = 0; i < n0 && rc == 0; i++) {
        if (!(g->t[i].flags & IR_FLAG_BWD) || g->t[i].block < 0 || g->t[i].block >= first_kept)
            continue;
        for (int s = 0; s < g->t[i].nsrc; s++) {
            int x = g->t[i].src[s];
            if (!is_block_forward(&g->t[x], g->t[i].block))
                continue;
            int c = clone_of(&st, x);
            if (c == x)
                continue;
            if (c < 0) {
                rc = ft_fail(e, "recompute: %s", g->err);
                break;
            }
            g->t[i].src[s] = c;
        }
    }
    free(st.clone);
    free(st.keep);
    if (rc != 0)
        return rc;
    return ir_toposort(g, e);
}
