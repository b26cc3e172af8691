/* passes.h — the optimisation pipeline. Each pass is one file with one entry point that
 * takes a graph and leaves the transformed graph in its place; the pipeline runs the
 * verifier between passes and can dump the graph after any of them. */
#ifndef FTC_PASSES_H
#define FTC_PASSES_H

#include <stdio.h>

#include "../frontend/config.h"
#include "../ir/ir.h"

typedef struct {
    const ft_config_t *cfg;
    const char *dump_after;  /* pass name, "all", or NULL */
    FILE *dump;              /* where dumps go */
    bool verbose;
    const char *target;      /* "cpu", "sm_90", ...: fuse makes the fusions its kernels implement */
    /* recompute's choice where it is not the config's: `recompute auto` makes it (pipeline.c) */
    bool recompute_set;
    ft_recompute_t recompute; /* none, full or selective */
    int recompute_keep;       /* the last this many transformer blocks are not recomputed at all */
    char *note;               /* optional: what the pipeline chose, for the user */
    size_t note_cap;
} pass_ctx_t;

typedef int (*pass_fn_t)(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e);

typedef struct {
    const char *name;
    pass_fn_t run;
    const char *what;
} pass_t;

/* The standard pipeline, in order, NULL-name terminated. */
extern const pass_t pass_pipeline[];
/* Runs the pipeline on g (verifying after each pass, dumping where asked). */
int pass_run_all(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e);

/* Appends to g the nodes that compute d(sum(y * dy))/d(x) for each x in wrt; grads[i] is
 * the id of that gradient, or -1 where x does not influence y. New nodes are flagged
 * IR_FLAG_BWD and carry the block of the forward node they differentiate. */
int pass_grad(ir_graph_t *g, int y, int dy, const int *wrt, int nwrt, int *grads, ft_err_t *e);

int pass_autodiff(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e);  /* loss → grads of trainables */
int pass_optimizer(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e); /* clip + AdamW, opt phase */
int pass_dce(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e);       /* drop what nothing needs; compact */
int pass_recompute(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e); /* activation checkpointing */
int pass_fuse(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e);      /* add(x, a·b) -> matmul a·b + x */
int pass_schedule(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e);  /* execution order */
int pass_memplan(ir_graph_t *g, const pass_ctx_t *ctx, ft_err_t *e);   /* arena offsets */

/* The arena's layout, as planned: bytes per category and the total. */
typedef struct {
    int64_t weights, grads, optstate, inputs, activations, workspace, total;
} pass_mem_summary_t;
void pass_mem_summary(const ir_graph_t *g, pass_mem_summary_t *s);

/* Live range of every tensor over the schedule: first and last schedule position that
 * needs its storage (persistent tensors span everything). Arrays of g->n entries. */
void pass_lifetimes(const ir_graph_t *g, int *first, int *last);
/* Checks that no two tensors live at the same time share arena bytes. */
int pass_memplan_check(const ir_graph_t *g, ft_err_t *e);

#endif
