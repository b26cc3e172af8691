/* pipeline.c — the ordered list of passes, run with the verifier between each and an
 * optional dump of the graph after any of them (`ftc compile --dump-after=NAME`). */
#include <stdio.h>
#include <string.h>

#include "passes.h"

const pass_t pass_pipeline[] = {
    {"autodiff", pass_autodiff, "reverse-mode gradients of the loss for every trainable weight"},
    {"optimizer", pass_optimizer, "global-norm clipping and AdamW, in the step phase"},
    {"dce", pass_dce, "drop what no output needs"},
    {"recompute", pass_recompute, "activation checkpointing per transformer block"},
    {"fuse", pass_fuse, "an add folded into the matmul that feeds it (cuBLASLt beta = 1)"},
    {"schedule", pass_schedule, "execution order"},
    {"memplan", pass_memplan, "arena offsets from live ranges"},
    {NULL, NULL, NULL},
};

static bool wants_dump(const pass_ctx_t *ctx, const char *name)
{
    if (!ctx->dump_after || !ctx->dump)
        return false;
    return strcmp(ctx->dump_after, "all") == 0 || strcmp(ctx->dump_after, name) == 0;
}

static const pass_t *find_pass(const char *name)
{
    for (const pass_t *p = pass_pipeline; p->name; p++)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

/* Arena bytes of g planned from the recompute pass on, under ctx's recompute choice; -1 if
 * a pass fails. g is left as it was. */
static int64_t trial_arena(const ir_graph_t *g, const pass_ctx_t *ctx)
{
    ir_graph_t t;
    if (ir_graph_copy(&t, g) != 0)
        return -1;
    int64_t bytes = -1;
    ft_err_t e;
    const pass_t *p = find_pass("recompute");
    for (; p && p->name; p++)
        if (p->run(&t, ctx, &e) != 0)
            break;
    if (p && !p->name)
        bytes = t.arena_bytes;
    ir_graph_free(&t);
    return bytes;
}

/* Room left for what the arena does not hold: cuBLASLt's workspace, the kernels' scratch,
 * CUDA graphs (measured: tens of MiB on an H200). */
#define AUTO_RESERVE ((int64_t)512 << 20)

/* `recompute auto`: the least recomputation whose arena fits train.memory_budget (less the
 * reserve): none; else selective with as many of the last blocks kept whole as fit (the
 * memory grows with that count, so a bisection finds it); else full. */
static int choose_recompute(const ir_graph_t *g, pass_ctx_t *c, ft_err_t *e)
{
    int64_t budget = c->cfg->memory_budget;
    if (budget <= 0)
        return ft_fail(e, "recompute auto needs train.memory_budget (the device memory the plan may use)");
    int64_t room = budget - AUTO_RESERVE;
    int nblocks = 0;
    for (int i = 0; i < g->n; i++)
        if (g->t[i].block + 1 > nblocks)
            nblocks = g->t[i].block + 1;
    c->recompute_set = true;
    c->recompute = FT_RECOMPUTE_NONE;
    c->recompute_keep = 0;
    int64_t a = trial_arena(g, c);
    if (a >= 0 && a <= room) {
        snprintf(c->note, c->note_cap, "recompute auto: none (arena %.2f GiB, budget %.2f GiB)", a / 1073741824.0,
                 budget / 1073741824.0);
        return 0;
    }
    c->recompute = FT_RECOMPUTE_SELECTIVE;
    int lo = -1, hi = nblocks; /* lo: most kept blocks known to fit (-1: not even 0); hi: known not to */
    int64_t best = -1;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        c->recompute_keep = mid;
        a = trial_arena(g, c);
        if (a >= 0 && a <= room) {
            lo = mid;
            best = a;
        } else {
            hi = mid;
        }
    }
    if (lo >= 0) {
        c->recompute_keep = lo;
        snprintf(c->note, c->note_cap,
                 "recompute auto: selective, the last %d of %d blocks kept whole (arena %.2f GiB, budget %.2f GiB)", lo,
                 nblocks, best / 1073741824.0, budget / 1073741824.0);
        return 0;
    }
    c->recompute = FT_RECOMPUTE_FULL;
    c->recompute_keep = 0;
    a = trial_arena(g, c);
    if (a >= 0 && a <= room) {
        snprintf(c->note, c->note_cap, "recompute auto: full (arena %.2f GiB, budget %.2f GiB)", a / 1073741824.0,
                 budget / 1073741824.0);
        return 0;
    }
    return ft_fail(e, "recompute auto: even full recomputation needs a %.2f GiB arena; train.memory_budget is %.2f GiB "
                      "(%.2f GiB kept in reserve): raise it, or lower micro_batch or seq_len",
                   a / 1073741824.0, budget / 1073741824.0, AUTO_RESERVE / 1073741824.0);
}

int pass_run_all(ir_graph_t *g, const pass_ctx_t *ctx0, ft_err_t *e)
{
    pass_ctx_t cx = *ctx0, *ctx = &cx;
    char scratch[8];
    if (!cx.note) {
        cx.note = scratch;
        cx.note_cap = sizeof scratch;
    }
    cx.note[0] = 0;
    if (ctx->dump_after && strcmp(ctx->dump_after, "all") != 0 && strcmp(ctx->dump_after, "build") != 0) {
        bool known = false;
        for (const pass_t *p = pass_pipeline; p->name; p++)
            known |= strcmp(p->name, ctx->dump_after) == 0;
        if (!known)
            return ft_fail(e, "--dump-after: no pass named '%s' (passes: build, autodiff, optimizer, dce, "
                              "recompute, fuse, schedule, memplan, all)", ctx->dump_after);
    }
    if (ir_verify(g, e) != 0)
        return -1;
    if (wants_dump(ctx, "build")) {
        fprintf(ctx->dump, "# after build\n");
        ir_print(g, ctx->dump);
    }
    for (const pass_t *p = pass_pipeline; p->name; p++) {
        ft_err_t pe;
        if (strcmp(p->name, "recompute") == 0 && ctx->cfg && ctx->cfg->recompute == FT_RECOMPUTE_AUTO &&
            !ctx->recompute_set && choose_recompute(g, ctx, e) != 0)
            return -1;
        if (p->run(g, ctx, &pe) != 0)
            return ft_fail(e, "pass %s: %s", p->name, pe.msg);
        if (ir_verify(g, &pe) != 0)
            return ft_fail(e, "after pass %s: %s", p->name, pe.msg);
        if (wants_dump(ctx, p->name)) {
            fprintf(ctx->dump, "# after %s\n", p->name);
            ir_print(g, ctx->dump);
        }
    }
    return 0;
}
