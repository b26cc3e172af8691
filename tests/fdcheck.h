/* fdcheck.h — checks an op's VJP against central finite differences in float64. The test
 * builds a small forward graph of F64 leaves ending in y; the check draws a random seed
 * dy, builds the backward graph with the real autodiff engine (pass_grad), evaluates it with
 * the float64 reference evaluator and compares every requested gradient with
 * (f(x+h) - f(x-h)) / 2h where f = sum(y * dy). */
#ifndef FTC_TEST_FDCHECK_H
#define FTC_TEST_FDCHECK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ir/ir.h"
#include "passes/passes.h"

static uint64_t fd_rng_ = 0x9e3779b97f4a7c15ULL;
static double fd_rand(void) /* uniform in [-1, 1) */
{
    fd_rng_ ^= fd_rng_ << 13;
    fd_rng_ ^= fd_rng_ >> 7;
    fd_rng_ ^= fd_rng_ << 17;
    return (double)(fd_rng_ >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static double *fd_random_values(int64_t n, double scale)
{
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = fd_rand() * scale;
    return v;
}

/* f = sum(y * dy) evaluated from the leaves' current values. */
static double fd_objective(const ir_graph_t *g, int y, double **leafvals, const double *dy)
{
    double **vals = calloc((size_t)g->n, sizeof *vals);
    for (int i = 0; i < g->n; i++)
        if (g->t[i].op == OP_LEAF)
            vals[i] = leafvals[i];
    ft_err_t e;
    double f = NAN;
    if (ir_eval_f64(g, vals, &e) == 0) {
        f = 0;
        for (int64_t k = 0; k < ir_numel(&g->t[y]); k++)
            f += vals[y][k] * dy[k];
    }
    ir_eval_free(g, vals);
    free(vals);
    return f;
}

/* g: forward graph with leaves [0, g->n) given values in leafvals (index = tensor id);
 * y: output; wrt: leaves to differentiate. Returns the worst normwise relative error. */
static double fd_check(ir_graph_t *g, int y, const int *wrt, int nwrt, double **leafvals, const char *label)
{
    int nfwd = g->n;
    ir_graph_t fwd;
    ir_graph_copy(&fwd, g);
    int dy = ir_leaf(g, "fd.dy", IR_INPUT, IR_F64, g->t[y].ndim, g->t[y].shape);
    double *dyv = fd_random_values(ir_numel(&g->t[y]), 1.0);
    int grads[16];
    ft_err_t e;
    if (pass_grad(g, y, dy, wrt, nwrt, grads, &e) != 0) {
        fprintf(stderr, "%s: pass_grad failed: %s\n", label, e.msg);
        CHECK(0);
        free(dyv);
        ir_graph_free(&fwd);
        return INFINITY;
    }
    double **vals = calloc((size_t)g->n, sizeof *vals);
    for (int i = 0; i < nfwd; i++)
        if (g->t[i].op == OP_LEAF)
            vals[i] = leafvals[i];
    vals[dy] = dyv;
    if (ir_eval_f64(g, vals, &e) != 0) {
        fprintf(stderr, "%s: eval failed: %s\n", label, e.msg);
        CHECK(0);
    }
    double worst = 0;
    for (int k = 0; k < nwrt; k++) {
        int x = wrt[k];
        int64_t n = ir_numel(&g->t[x]);
        CHECK_MSG(grads[k] >= 0, "%s: no gradient for input %d", label, k);
        if (grads[k] < 0)
            continue;
        double num = 0, den = 0;
        /* every element for small tensors, a spread sample of 48 for large ones */
        int64_t step = n <= 96 ? 1 : n / 48;
        for (int64_t j = 0; j < n; j += step) {
            double keep = leafvals[x][j];
            double h = 1e-5 * fmax(1.0, fabs(keep));
            leafvals[x][j] = keep + h;
            double fp = fd_objective(&fwd, y, leafvals, dyv);
            leafvals[x][j] = keep - h;
            double fm = fd_objective(&fwd, y, leafvals, dyv);
            leafvals[x][j] = keep;
            double fd = (fp - fm) / (2 * h);
            double ad = vals[grads[k]][j];
            num += (fd - ad) * (fd - ad);
            den += fd * fd;
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        CHECK_MSG(rel < 1e-6 && !isnan(rel), "%s: d/d(input %d '%s') relative error %.3g", label, k, g->t[x].name, rel);
        if (!(rel <= worst))
            worst = rel;
    }
    ir_eval_free(g, vals);
    free(vals);
    free(dyv);
    ir_graph_free(&fwd);
    return worst;
}

#endif
