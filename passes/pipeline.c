/* pipeline.c — the ordered list of passes, run with the verifier between each and an
 * optional dump of the graph after any of them (`ftc compile --dump-after=NAME`). */
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

int pass_run_all(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e)
{
    if (ctx->dump_after && strcmp(ctx->dump_after, "all") != 0 && strcmp(ctx->dump_after, "build") != 0) {
        bool known = false;
        for (const pass_t *p = pass_pipeline; p->name; p++)
            known |= strcmp(p->name, ctx->dump_after) == 0;
        if (!known)
            return ft_fail(e, "--dump-after: no pass named '%s' (passes: build, autodiff, optimizer, dce, "
                              "recompute, schedule, memplan, all)", ctx->dump_after);
    }
    if (ir_verify(g, e) != 0)
        return -1;
    if (wants_dump(ctx, "build")) {
        fprintf(ctx->dump, "# after build\n");
        ir_print(g, ctx->dump);
    }
    for (const pass_t *p = pass_pipeline; p->name; p++) {
        ft_err_t pe;
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
