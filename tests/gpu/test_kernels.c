/* test_kernels.c — every GPU kernel against the CPU reference executor. For each op that
 * runs on the GPU (matmul in all four transpose cases and batched through cuBLASLt, every
 * other op through its generated kernel), a one-op graph with random inputs of realistic
 * small shapes is scheduled, memory-planned and compiled for the GPU's architecture, then
 * run by both executors; the outputs (and the inputs an op updates in place) are compared
 * by normwise relative error: ||gpu - cpu|| / ||cpu|| under 1e-5 for f32 (cuBLASLt runs
 * f32 in full fp32, no TF32) and 1e-2 for bf16. The GPU arena (and the kernel scratch) is
 * filled with 0xff bytes (NaN in every float type) before the inputs are written, so an
 * output element a kernel forgets, or a partial it reads before writing, shows up. Ops that are pure functions of their inputs are run a second time,
 * which replays a CUDA graph, and must give the same bits (kernels are deterministic).
 * Dropout must draw exactly the CPU's mask. The two-stage ops (sum, mean, sumsq, xent,
 * rmsnorm_bwd_w, embed_bwd: a first kernel over many blocks, partials in the executor's
 * scratch, a second kernel that combines them) also run at sizes that give hundreds of
 * blocks and take every path of their kernels.
 *
 * Not a ctest test (CPU CI has no GPU): tests/gpu/run.sh runs it on a GPU machine. Without
 * a GPU it still builds and compiles every case and runs the CPU side, then says so.
 *
 * After the checks, the attention kernels are timed at S 1024, S 4096 and the Llama-3-8B and
 * Llama-3.2-1B training shapes (bench_attention), then the memory-bound kernels (rmsnorm,
 * rmsnorm_bwd_x, rope, xent_bwd, cast) at the same training shapes (bench_memory): "time"
 * lines; FILTER "time" runs only those, FILTER "memory" only bench_memory.
 *
 * usage: test_kernels [--arch sm_XY] [--cache DIR] [--old-attn FILE] [FILTER]   (FILTER: substring of labels) */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cg_internal.h"
#include "codegen/codegen.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "runtime/device.h"
#include "runtime/exec.h"
#include "runtime/exec_cuda.h"
#include "runtime/weights.h"

#include <cuda.h>
#include <cuda_runtime.h>

#define MAXLEAF 8
#define TOL_F32 1e-5
#define TOL_BF16 1e-2

typedef struct {
    const char *arch, *cache, *filter;
    const char *old_attn; /* --old-attn FILE: the previous attention.cuh, timed beside the new kernels */
    bool gpu;
    int pass, fail, skipped, compiled;
} env_t;

typedef struct {
    char label[96];
    ir_graph_t g;
    char leaf_name[MAXLEAF][16];
    double *leaf_val[MAXLEAF];
    int nleaf;
    int out;               /* the node under test (id before the passes) */
    const char *also[2];   /* inputs the op updates in place, compared too */
    double tol;
    bool mask;             /* dropout: the zero pattern must match exactly */
} tcase_t;

/* ------------------------------------------------------------------ values */

static uint64_t rng_s = 0x243f6a8885a308d3ULL;

static double urand(void) /* [0, 1) */
{
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

/* ------------------------------------------------------------------ building a case */

static void begin(tcase_t *c, double tol, const char *fmt, ...) FT_PRINTF(3, 4);
static void begin(tcase_t *c, double tol, const char *fmt, ...)
{
    memset(c, 0, sizeof *c);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->label, sizeof c->label, fmt, ap);
    va_end(ap);
    ir_graph_init(&c->g);
    c->tol = tol;
    c->out = -1;
}

static double tol_of(ir_dtype_t dt) { return dt == IR_F32 ? TOL_F32 : TOL_BF16; }

/* A leaf with values uniform in [lo, hi) (whole numbers when dt is i32). */
static int leaf(tcase_t *c, const char *name, ir_dtype_t dt, int ndim, const int64_t *shape, double lo, double hi)
{
    int id = ir_leaf(&c->g, name, IR_INPUT, dt, ndim, shape);
    if (id < 0 || c->nleaf == MAXLEAF)
        return -1;
    int64_t n = numel_of(ndim, shape);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = dt == IR_I32 ? floor(lo + urand() * (hi - lo)) : lo + urand() * (hi - lo);
    snprintf(c->leaf_name[c->nleaf], sizeof c->leaf_name[0], "%s", name);
    c->leaf_val[c->nleaf++] = v;
    return id;
}

/* A leaf holding a copy of v. */
static int leaf_from(tcase_t *c, const char *name, ir_dtype_t dt, int ndim, const int64_t *shape, const double *v)
{
    int id = leaf(c, name, dt, ndim, shape, 0, 0);
    if (id >= 0)
        memcpy(c->leaf_val[c->nleaf - 1], v, (size_t)numel_of(ndim, shape) * sizeof *v);
    return id;
}

static double *vals(tcase_t *c, const char *name)
{
    for (int i = 0; i < c->nleaf; i++)
        if (strcmp(c->leaf_name[i], name) == 0)
            return c->leaf_val[i];
    return NULL;
}

static void end_case(tcase_t *c)
{
    for (int i = 0; i < c->nleaf; i++)
        free(c->leaf_val[i]);
    ir_graph_free(&c->g);
}

/* ------------------------------------------------------------------ running a case */

typedef struct {
    double rel, maxabs;
    int64_t nonfinite; /* elements finite on the CPU but not on the GPU, or the reverse */
    int64_t mask_diff; /* elements zero on one side only */
} cmp_t;

static void compare(const double *gpu, const double *cpu, int64_t n, cmp_t *r)
{
    double num = 0, den = 0;
    memset(r, 0, sizeof *r);
    for (int64_t i = 0; i < n; i++) {
        double a = gpu[i], b = cpu[i];
        if ((a == 0) != (b == 0))
            r->mask_diff++;
        if (!isfinite(a) || !isfinite(b)) {
            if (!(isnan(a) && isnan(b)) && a != b)
                r->nonfinite++;
            continue;
        }
        double d = fabs(a - b);
        if (d > r->maxabs)
            r->maxabs = d;
        num += d * d;
        den += b * b;
    }
    r->rel = den > 0 ? sqrt(num / den) : sqrt(num);
}

static int write_inputs(rt_exec_t *x, tcase_t *c, ft_err_t *e)
{
    for (int i = 0; i < c->nleaf; i++) {
        int id = ir_find(x->g, c->leaf_name[i]);
        if (id < 0)
            return ft_fail(e, "leaf '%s' vanished", c->leaf_name[i]);
        if (rt_exec_write_f64(x, id, c->leaf_val[i], e) != 0)
            return -1;
    }
    return 0;
}

static int read_all(rt_exec_t *x, int id, double **out, ft_err_t *e)
{
    *out = malloc((size_t)ir_numel(&x->g->t[id]) * sizeof **out);
    return rt_exec_read_f64(x, id, *out, e);
}

static const char *kind_name(cg_kind_t k)
{
    return k == CG_NOP ? "nop" : k == CG_KERNEL ? "kernel" : k == CG_MATMUL ? "cublasLt" : "?";
}

static void row(const tcase_t *c, const char *dt, const char *shape, const char *how, const cmp_t *r, const char *st,
                const char *why)
{
    if (r)
        printf("%-46s %-9s %-18s %-8s %10.3g %10.3g %8.0e  %s%s%s\n", c->label, dt, shape, how, r->maxabs, r->rel,
               c->tol, st, why[0] ? "  " : "", why);
    else
        printf("%-46s %-9s %-18s %-8s %10s %10s %8.0e  %s%s%s\n", c->label, dt, shape, how, "-", "-", c->tol, st,
               why[0] ? "  " : "", why);
}

/* Runs the case on the CPU and (with a GPU) the CUDA executor and compares. */
static void run_case(env_t *env, tcase_t *c, int out)
{
    if (env->filter && !strstr(c->label, env->filter)) {
        end_case(c);
        return;
    }
    char why[1400] = "", shape[64] = "?", outname[IR_NAME_MAX], dtbuf[24];
    const char *dt = "?";
    ft_err_t e;
    cg_module_t m;
    memset(&m, 0, sizeof m);
    rt_exec_t cpu, gpu;
    memset(&cpu, 0, sizeof cpu);
    memset(&gpu, 0, sizeof gpu);
    double *want = NULL, *got = NULL, *got2 = NULL, *keep[3] = {NULL, NULL, NULL};
    cmp_t r = {0}, worst = {0};
    bool ok = false, ran = false;
    const char *how = "?";
    if (out < 0 || c->g.err[0]) {
        snprintf(why, sizeof why, "building the graph: %s", c->g.err);
        goto done;
    }
    snprintf(outname, sizeof outname, "%s", "under_test");
    ir_set_name(&c->g, out, "%s", outname);
    c->g.t[out].flags |= IR_FLAG_OUTPUT;
    {
        ir_dtype_t di = c->g.t[out].nsrc ? c->g.t[c->g.t[out].src[0]].dtype : c->g.t[out].dtype;
        ir_dtype_t dout = c->g.t[out].dtype;
        snprintf(dtbuf, sizeof dtbuf, di == dout ? "%s" : "%s>%s", ir_dtype_name(di), ir_dtype_name(dout));
        dt = dtbuf;
    }
    ir_shape_str(&c->g.t[out], shape, sizeof shape);
    pass_ctx_t ctx = {0};
    if (ir_verify(&c->g, &e) != 0 || pass_schedule(&c->g, &ctx, &e) != 0 || pass_memplan(&c->g, &ctx, &e) != 0) {
        snprintf(why, sizeof why, "passes: %s", e.msg);
        goto done;
    }
    int id = ir_find(&c->g, outname);
    if (cg_build(&c->g, env->arch, env->cache, &m, &e) != 0) {
        snprintf(why, sizeof why, "codegen: %s", e.msg);
        goto done;
    }
    env->compiled++;
    for (int k = 0; k < m.nlaunch; k++)
        if (m.launch[k].node == id)
            how = kind_name(m.launch[k].kind);
    if (rt_exec_open_cpu(&cpu, &c->g, &e) != 0 || write_inputs(&cpu, c, &e) != 0 ||
        cpu.ops->run(&cpu, c->g.t[id].phase, &e) != 0) {
        snprintf(why, sizeof why, "cpu: %s", e.msg);
        goto done;
    }
    if (!env->gpu) {
        ok = true;
        goto done;
    }
    if (rt_exec_open_cuda_module(&gpu, &c->g, &m, &e) != 0 || rt_exec_cuda_fill(&gpu, 0xff, &e) != 0 ||
        write_inputs(&gpu, c, &e) != 0 || gpu.ops->run(&gpu, c->g.t[id].phase, &e) != 0) {
        snprintf(why, sizeof why, "gpu: %s", e.msg);
        goto done;
    }
    ran = true;
    /* the output, then the inputs the op updates in place */
    ok = true;
    for (int k = 0; k < 3; k++) {
        int t = k == 0 ? id : c->also[k - 1] ? ir_find(&c->g, c->also[k - 1]) : -1;
        if (k > 0 && t < 0)
            continue;
        free(want);
        free(got);
        want = got = NULL;
        if (read_all(&cpu, t, &want, &e) != 0 || read_all(&gpu, t, &got, &e) != 0) {
            snprintf(why, sizeof why, "reading '%s': %s", c->g.t[t].name, e.msg);
            ok = false;
            break;
        }
        compare(got, want, ir_numel(&c->g.t[t]), &r);
        keep[k] = malloc((size_t)ir_numel(&c->g.t[t]) * sizeof *got);
        memcpy(keep[k], got, (size_t)ir_numel(&c->g.t[t]) * sizeof *got);
        if (r.rel > worst.rel || isnan(r.rel))
            worst.rel = r.rel;
        if (r.maxabs > worst.maxabs)
            worst.maxabs = r.maxabs;
        size_t wl = strlen(why);
        if (r.nonfinite)
            snprintf(why + wl, sizeof why - wl, "%s%lld non-finite mismatches in '%s' (an unwritten output?)",
                     wl ? "; " : "", (long long)r.nonfinite, c->g.t[t].name), ok = false;
        else if (!(r.rel <= c->tol))
            snprintf(why + wl, sizeof why - wl, "%s'%s' differs", wl ? "; " : "", c->g.t[t].name), ok = false;
        wl = strlen(why);
        if (c->mask && r.mask_diff)
            snprintf(why + wl, sizeof why - wl, "%s%lld elements dropped on one side only", wl ? "; " : "",
                     (long long)r.mask_diff), ok = false;
    }
    /* again (an op that updates its inputs in place, from its inputs written afresh): the
     * second run replays a CUDA graph and must give the same bits, in place too */
    if (ok) {
        const ir_tensor_t *t = &c->g.t[id];
        bool inplace = (ir_ops[t->op]->writes & ((1u << t->nsrc) - 1u)) != 0 || (t->flags & IR_FLAG_INPLACE);
        if ((inplace && write_inputs(&gpu, c, &e) != 0) || gpu.ops->run(&gpu, t->phase, &e) != 0) {
            snprintf(why, sizeof why, "second gpu run: %s", e.msg);
            ok = false;
        }
        for (int k = 0; k < 3 && ok; k++) {
            int x = k == 0 ? id : c->also[k - 1] ? ir_find(&c->g, c->also[k - 1]) : -1;
            if (x < 0)
                continue;
            free(got2);
            got2 = NULL;
            if (read_all(&gpu, x, &got2, &e) != 0) {
                snprintf(why, sizeof why, "second gpu run: reading '%s': %s", c->g.t[x].name, e.msg);
                ok = false;
            } else if (!keep[k] || memcmp(keep[k], got2, (size_t)ir_numel(&c->g.t[x]) * sizeof *got2) != 0) {
                snprintf(why, sizeof why, "a second run gave other bits in '%s' (not deterministic)", c->g.t[x].name);
                ok = false;
            }
        }
    }
done:
    if (!env->gpu && ok) {
        row(c, dt, shape, how, NULL, "compiled", "");
    } else {
        row(c, dt, shape, how, ran ? &worst : NULL, ok ? "ok" : "FAIL", why);
        if (ok)
            env->pass++;
        else
            env->fail++;
    }
    fflush(stdout);
    free(want);
    free(got);
    free(got2);
    for (int k = 0; k < 3; k++)
        free(keep[k]);
    if (gpu.ops)
        rt_exec_close(&gpu);
    if (cpu.ops)
        rt_exec_close(&cpu);
    cg_module_free(&m);
    end_case(c);
}

/* ------------------------------------------------------------------ the cases */

#define SH(...) (const int64_t[]){__VA_ARGS__}
#define NARGS(...) (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define DIMS(...) NARGS(__VA_ARGS__), SH(__VA_ARGS__)
/* ir_node reads all IR_MAX_PARAMS parameters: full-size arrays, zero-filled */
#define IP(...) (const int64_t[IR_MAX_PARAMS]){__VA_ARGS__}
#define FP(...) (const double[IR_MAX_PARAMS]){__VA_ARGS__}

static const ir_dtype_t float_types[2] = {IR_F32, IR_BF16};

static void cases_matmul(env_t *env)
{
    tcase_t c;
    for (int d = 0; d < 2; d++) {
        ir_dtype_t dt = float_types[d];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int64_t M = 96, K = 64, N = 172;
                begin(&c, tol_of(dt), "matmul %c%c M%lld K%lld N%lld", ta ? 't' : 'n', tb ? 't' : 'n', (long long)M,
                      (long long)K, (long long)N);
                int a = ta ? leaf(&c, "a", dt, DIMS(K, M), -1, 1) : leaf(&c, "a", dt, DIMS(M, K), -1, 1);
                int b = tb ? leaf(&c, "b", dt, DIMS(N, K), -1, 1) : leaf(&c, "b", dt, DIMS(K, N), -1, 1);
                run_case(env, &c, ir_matmul(&c.g, a, b, ta, tb));
            }
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int64_t B = 8, M = 64, K = 32, N = 64;
                begin(&c, tol_of(dt), "matmul batched %c%c B%lld M%lld K%lld N%lld", ta ? 't' : 'n', tb ? 't' : 'n',
                      (long long)B, (long long)M, (long long)K, (long long)N);
                int a = ta ? leaf(&c, "a", dt, DIMS(B, K, M), -1, 1) : leaf(&c, "a", dt, DIMS(B, M, K), -1, 1);
                int b = tb ? leaf(&c, "b", dt, DIMS(B, N, K), -1, 1) : leaf(&c, "b", dt, DIMS(B, K, N), -1, 1);
                run_case(env, &c, ir_matmul(&c.g, a, b, ta, tb));
            }
        /* the LM head's shape: [tokens, hidden] x [vocab, hidden]^T, and a LoRA rank-8 pair */
        begin(&c, tol_of(dt), "matmul lm-head nt 512x64 . 258x64^T");
        int a = leaf(&c, "a", dt, DIMS(512, 64), -1, 1), b = leaf(&c, "b", dt, DIMS(258, 64), -1, 1);
        run_case(env, &c, ir_matmul(&c.g, a, b, false, true));
        /* with an addend (pass_fuse): cuBLASLt's beta = 1 into a separate output */
        for (int ta = 0; ta < 2; ta++) {
            begin(&c, tol_of(dt), "matmul+addend %cn M96 K64 N172", ta ? 't' : 'n');
            int a2 = ta ? leaf(&c, "a", dt, DIMS(64, 96), -1, 1) : leaf(&c, "a", dt, DIMS(96, 64), -1, 1);
            int b2 = leaf(&c, "b", dt, DIMS(64, 172), -1, 1), c2 = leaf(&c, "c", dt, DIMS(96, 172), -4, 4);
            run_case(env, &c, ir_matmul_add(&c.g, a2, b2, ta, false, c2));
        }
        begin(&c, tol_of(dt), "matmul+addend batched nt B4 M64 K32 N48");
        {
            int a2 = leaf(&c, "a", dt, DIMS(4, 64, 32), -1, 1), b2 = leaf(&c, "b", dt, DIMS(4, 48, 32), -1, 1);
            int c2 = leaf(&c, "c", dt, DIMS(4, 64, 48), -4, 4);
            run_case(env, &c, ir_matmul_add(&c.g, a2, b2, false, true, c2));
        }
        begin(&c, tol_of(dt), "matmul lora-grad tn 512x8^T . 512x64");
        a = leaf(&c, "a", dt, DIMS(512, 8), -1, 1);
        b = leaf(&c, "b", dt, DIMS(512, 64), -1, 1);
        run_case(env, &c, ir_matmul(&c.g, a, b, true, false));
    }
    /* bf16 operands into an f32 output */
    begin(&c, TOL_F32, "matmul bf16 -> f32 nn");
    int a = leaf(&c, "a", IR_BF16, DIMS(64, 96), -1, 1), b = leaf(&c, "b", IR_BF16, DIMS(96, 80), -1, 1);
    run_case(env, &c, ir_node_dt(&c.g, OP_MATMUL, IR_F32, 2, (const int[]){a, b}, IP(0, 0), NULL));
    /* what pass_fuse makes of LoRA's scale and of a weight gradient's accumulation: alpha on
     * the product; bf16 operands summed in place onto an f32 buffer (the output is the
     * buffer's storage, checked as the output) */
    begin(&c, TOL_BF16, "matmul alpha 2 nt M512 K64 N8");
    a = leaf(&c, "a", IR_BF16, DIMS(512, 64), -1, 1), b = leaf(&c, "b", IR_BF16, DIMS(8, 64), -1, 1);
    run_case(env, &c, ir_node(&c.g, OP_MATMUL, 2, (const int[]){a, b}, IP(0, 1, 1), (const double[IR_MAX_PARAMS]){2.0}));
    for (int ta = 0; ta < 2; ta++) {
        begin(&c, TOL_F32, "matmul in place += %cn M96 K512 N80 x0.5", ta ? 't' : 'n');
        a = ta ? leaf(&c, "a", IR_BF16, DIMS(512, 96), -1, 1) : leaf(&c, "a", IR_BF16, DIMS(96, 512), -1, 1);
        b = leaf(&c, "b", IR_BF16, DIMS(512, 80), -1, 1);
        int buf = leaf(&c, "buf", IR_F32, DIMS(96, 80), -4, 4);
        int y = ir_node_dt(&c.g, OP_MATMUL, IR_F32, 3, (const int[]){a, b, buf}, IP(ta, 0, 1),
                           (const double[IR_MAX_PARAMS]){0.5});
        if (y >= 0)
            c.g.t[y].flags |= IR_FLAG_INPLACE;
        run_case(env, &c, y);
    }
}

static void cases_elementwise(env_t *env)
{
    tcase_t c;
    const int64_t shapes[2][3] = {{64, 384, 0}, {3, 7, 33}};
    for (int d = 0; d < 2; d++) {
        ir_dtype_t dt = float_types[d];
        for (int s = 0; s < 2; s++) {
            int nd = shapes[s][2] ? 3 : 2;
            const int64_t *sh = shapes[s];
            char sl[32];
            snprintf(sl, sizeof sl, nd == 3 ? "%lldx%lldx%lld" : "%lldx%lld", (long long)sh[0], (long long)sh[1],
                     (long long)sh[2]);
            int x, y;
            begin(&c, tol_of(dt), "add %s", sl);
            x = leaf(&c, "x", dt, nd, sh, -2, 2), y = leaf(&c, "y", dt, nd, sh, -2, 2);
            run_case(env, &c, ir_add(&c.g, x, y));
            begin(&c, tol_of(dt), "mul %s", sl);
            x = leaf(&c, "x", dt, nd, sh, -2, 2), y = leaf(&c, "y", dt, nd, sh, -2, 2);
            run_case(env, &c, ir_mul(&c.g, x, y));
            begin(&c, tol_of(dt), "scale 0.37 %s", sl);
            x = leaf(&c, "x", dt, nd, sh, -2, 2);
            run_case(env, &c, ir_scale(&c.g, x, 0.37));
            begin(&c, tol_of(dt), "silu %s", sl);
            x = leaf(&c, "x", dt, nd, sh, -6, 6);
            run_case(env, &c, ir_silu(&c.g, x));
            begin(&c, tol_of(dt), "silu_bwd %s", sl);
            x = leaf(&c, "x", dt, nd, sh, -6, 6), y = leaf(&c, "dy", dt, nd, sh, -1, 1);
            run_case(env, &c, ir_node(&c.g, OP_SILU_BWD, 2, (const int[]){x, y}, NULL, NULL));
            begin(&c, tol_of(dt), "swiglu %s", sl);
            x = leaf(&c, "g", dt, nd, sh, -6, 6), y = leaf(&c, "u", dt, nd, sh, -2, 2);
            run_case(env, &c, ir_swiglu(&c.g, x, y));
            begin(&c, tol_of(dt), "swiglu_bwd_g %s", sl);
            x = leaf(&c, "g", dt, nd, sh, -6, 6), y = leaf(&c, "u", dt, nd, sh, -2, 2);
            int dy = leaf(&c, "dy", dt, nd, sh, -1, 1);
            run_case(env, &c, ir_node(&c.g, OP_SWIGLU_BWD_G, 3, (const int[]){x, y, dy}, NULL, NULL));
            begin(&c, tol_of(dt), "swiglu_bwd_u %s", sl);
            x = leaf(&c, "g", dt, nd, sh, -6, 6), dy = leaf(&c, "dy", dt, nd, sh, -1, 1);
            run_case(env, &c, ir_node(&c.g, OP_SWIGLU_BWD_U, 2, (const int[]){x, dy}, NULL, NULL));
        }
    }
    /* casts: exact, or one rounding that both sides do the same way */
    const ir_dtype_t from[5] = {IR_F32, IR_BF16, IR_F32, IR_F32, IR_I32};
    const ir_dtype_t to[5] = {IR_BF16, IR_F32, IR_F16, IR_I32, IR_F32};
    for (int k = 0; k < 5; k++)
        for (int odd = 0; odd < 2; odd++) { /* 16-byte vectors; 3x7x33 one element at a time */
            begin(&c, 0, "cast %s -> %s %s", ir_dtype_name(from[k]), ir_dtype_name(to[k]), odd ? "3x7x33" : "64x384");
            int x = odd ? leaf(&c, "x", from[k], DIMS(3, 7, 33), -300, 300)
                        : leaf(&c, "x", from[k], DIMS(64, 384), -300, 300);
            if (to[k] == IR_I32) { /* halves too: ties round to even on both sides */
                double *v = vals(&c, "x");
                for (int i = 0; i < (odd ? 3 * 7 * 33 : 64 * 384); i += 3)
                    v[i] = floor(v[i]) + 0.5;
            }
            run_case(env, &c, ir_cast(&c.g, x, to[k]));
        }
    /* between the 2-byte types and from f16 (through float: one rounding) */
    const ir_dtype_t from2[3] = {IR_BF16, IR_F16, IR_F16}, to2[3] = {IR_F16, IR_BF16, IR_F32};
    for (int k = 0; k < 3; k++) {
        begin(&c, 0, "cast %s -> %s 64x384", ir_dtype_name(from2[k]), ir_dtype_name(to2[k]));
        int x = leaf(&c, "x", from2[k], DIMS(64, 384), -300, 300);
        run_case(env, &c, ir_cast(&c.g, x, to2[k]));
    }
    /* fill: a constant, and a scalar broadcast times fp[0] */
    for (int d = 0; d < 2; d++) {
        begin(&c, 0, "fill constant");
        run_case(env, &c, ir_fill(&c.g, -1, 0.25, DIMS(128, 96), float_types[d]));
        begin(&c, tol_of(float_types[d]), "fill from a scalar");
        int s = leaf(&c, "s", float_types[d], 0, NULL, 1, 3);
        run_case(env, &c, ir_fill(&c.g, s, -0.5, DIMS(4, 64, 96), float_types[d]));
    }
}

/* embed_bwd's two kernels (the index of the ids, then a block per vocabulary row) at sizes
 * that exercise every path: buckets of up to a block's worth of rows (sorted by rank) and
 * larger ones (a hot id every `hot` rows: the bitmap walk), more rows than one bitmap
 * window (32768), two column groups (D > 2048), and ids outside [0, V), which are dropped. */
static void cases_embed_bwd(env_t *env, ir_dtype_t dt)
{
    const struct {
        int64_t v, rows, d;
        int hot;
    } cfg[3] = {{5000, 4096, 64, 7}, {300, 40000, 8, 3}, {40, 600, 2100, 2}};
    for (int k = 0; k < 3; k++) {
        tcase_t c;
        begin(&c, tol_of(dt), "embed_bwd V%lld T%lld D%lld, id 3 every %d", (long long)cfg[k].v,
              (long long)cfg[k].rows, (long long)cfg[k].d, cfg[k].hot);
        int x = leaf(&c, "ids", IR_I32, DIMS(cfg[k].rows), 0, (double)cfg[k].v);
        int y = leaf(&c, "dy", dt, DIMS(cfg[k].rows, cfg[k].d), -1, 1);
        double *id = vals(&c, "ids");
        for (int64_t r = 0; r < cfg[k].rows; r++) {
            if (r % cfg[k].hot == 0)
                id[r] = 3;
            if (r % 97 == 5)
                id[r] = -1;
            if (r % 89 == 6)
                id[r] = (double)cfg[k].v;
        }
        run_case(env, &c, ir_node_dt(&c.g, OP_EMBED_BWD, dt, 2, (const int[]){x, y}, IP(cfg[k].v), NULL));
    }
}

static void cases_movement(env_t *env)
{
    tcase_t c;
    for (int d = 0; d < 2; d++) {
        ir_dtype_t dt = float_types[d];
        int x, y;
        begin(&c, 0, "reshape 64x384 -> 192x128");
        x = leaf(&c, "x", dt, DIMS(64, 384), -1, 1);
        run_case(env, &c, ir_reshape(&c.g, x, DIMS(192, 128)));
        begin(&c, 0, "permute 0213 2x64x4x32");
        x = leaf(&c, "x", dt, DIMS(2, 64, 4, 32), -1, 1);
        run_case(env, &c, ir_permute(&c.g, x, SH(0, 2, 1, 3)));
        begin(&c, 0, "permute 201 64x96x5");
        x = leaf(&c, "x", dt, DIMS(64, 96, 5), -1, 1);
        run_case(env, &c, ir_permute(&c.g, x, SH(2, 0, 1)));
        begin(&c, 0, "permute 10 172x64");
        x = leaf(&c, "x", dt, DIMS(172, 64), -1, 1);
        run_case(env, &c, ir_permute(&c.g, x, SH(1, 0)));
        begin(&c, 0, "slice axis 2 [128,+128) of 4x64x384");
        x = leaf(&c, "x", dt, DIMS(4, 64, 384), -1, 1);
        run_case(env, &c, ir_slice(&c.g, x, 2, 128, 128));
        begin(&c, 0, "slice axis 0 [1,+2) of 4x64x96");
        x = leaf(&c, "x", dt, DIMS(4, 64, 96), -1, 1);
        run_case(env, &c, ir_slice(&c.g, x, 0, 1, 2));
        begin(&c, 0, "slice_bwd axis 2 at 128 of 384");
        x = leaf(&c, "dy", dt, DIMS(4, 64, 128), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_SLICE_BWD, 1, &x, IP(2, 128, 128, 384), NULL));
        begin(&c, 0, "slice_bwd axis 1 at 3 of 70");
        x = leaf(&c, "dy", dt, DIMS(4, 64, 33), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_SLICE_BWD, 1, &x, IP(1, 3, 64, 70), NULL));
        begin(&c, 0, "concat axis 2 4x64x128 + 4x64x64");
        x = leaf(&c, "a", dt, DIMS(4, 64, 128), -1, 1), y = leaf(&c, "b", dt, DIMS(4, 64, 64), -1, 1);
        run_case(env, &c, ir_concat(&c.g, x, y, 2));
        begin(&c, 0, "concat axis 0 3x96 + 5x96");
        x = leaf(&c, "a", dt, DIMS(3, 96), -1, 1), y = leaf(&c, "b", dt, DIMS(5, 96), -1, 1);
        run_case(env, &c, ir_concat(&c.g, x, y, 0));
        begin(&c, 0, "embed 258x64 [4,64]");
        x = leaf(&c, "table", dt, DIMS(258, 64), -1, 1), y = leaf(&c, "ids", IR_I32, DIMS(4, 64), 0, 258);
        run_case(env, &c, ir_embed(&c.g, x, y));
        begin(&c, tol_of(dt), "embed_bwd V50 ids [4,64] (repeats)");
        x = leaf(&c, "ids", IR_I32, DIMS(4, 64), 0, 50), y = leaf(&c, "dy", dt, DIMS(4, 64, 64), -1, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_EMBED_BWD, dt, 2, (const int[]){x, y}, IP(50), NULL));
        cases_embed_bwd(env, dt);
    }
}

/* rmsnorm and rmsnorm_bwd_x through each path of norm.cuh: rows in registers with a team
 * of 1 warp (D 384, 2048), 2 (f32 D 4096, backward bf16 D 4096), 8 (D 16424), row counts
 * that leave a block's last teams idle (77, 4099 rows), and the one-element fallback (D 33
 * and 4100, not multiples of 8; D 40000, wider than 8 warps hold). rope through the vector
 * path (Dh 128 and 64 with Llama-3's theta and scaling, positions up to 8191, heads not a
 * multiple of the 4 in flight) and the one-pair fallback (Dh 20: Dh/2 not a multiple of
 * 8), forward and inverse. */
static void cases_norm_rope_paths(env_t *env, ir_dtype_t dt)
{
    tcase_t c;
    const int64_t nd[8][2] = {{77, 384}, {4099, 2048}, {64, 4096}, {33, 16424},
                              {77, 33},  {40, 4100},   {9, 40000}, {300, 64}};
    for (int k = 0; k < 8; k++) {
        int64_t rows = nd[k][0], d = nd[k][1];
        begin(&c, tol_of(dt), "rmsnorm %lldx%lld", (long long)rows, (long long)d);
        int x = leaf(&c, "x", dt, DIMS(rows, d), -2, 2), w = leaf(&c, "w", dt, DIMS(d), 0.5, 1.5);
        run_case(env, &c, ir_rmsnorm(&c.g, x, w, 1e-5));
        begin(&c, tol_of(dt), "rmsnorm_bwd_x %lldx%lld", (long long)rows, (long long)d);
        x = leaf(&c, "x", dt, DIMS(rows, d), -2, 2), w = leaf(&c, "w", dt, DIMS(d), 0.5, 1.5);
        int dy = leaf(&c, "dy", dt, DIMS(rows, d), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_RMSNORM_BWD_X, 3, (const int[]){x, w, dy}, NULL, FP(1e-5)));
        /* with an addend (the residual stream's gradient, passes/fuse.c), both paths */
        if (k % 4 != 1)
            continue;
        begin(&c, tol_of(dt), "rmsnorm_bwd_x + addend %lldx%lld", (long long)rows, (long long)d);
        x = leaf(&c, "x", dt, DIMS(rows, d), -2, 2), w = leaf(&c, "w", dt, DIMS(d), 0.5, 1.5);
        dy = leaf(&c, "dy", dt, DIMS(rows, d), -1, 1);
        int add = leaf(&c, "add", dt, DIMS(rows, d), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_RMSNORM_BWD_X, 4, (const int[]){x, w, dy, add}, NULL, FP(1e-5)));
    }
    const int64_t rs[4][4] = {{2, 40, 32, 128}, {1, 96, 6, 64}, {2, 33, 3, 20}, {1, 50, 8, 128}};
    for (int k = 0; k < 4; k++)
        for (int inv = 0; inv < 2; inv++) {
            const int64_t *r = rs[k];
            begin(&c, tol_of(dt), "rope llama3%s %lldx%lldx%lldx%lld pos<8192", inv ? " inverse" : "", (long long)r[0],
                  (long long)r[1], (long long)r[2], (long long)r[3]);
            int x = leaf(&c, "x", dt, DIMS(r[0], r[1], r[2], r[3]), -1, 1);
            int pos = leaf(&c, "pos", IR_I32, DIMS(r[0], r[1]), 0, 8192);
            vals(&c, "pos")[0] = 8191;
            int64_t ip[3] = {inv, 1, 8192};
            double fp[4] = {500000.0, 8.0, 1.0, 4.0};
            run_case(env, &c, ir_rope(&c.g, x, pos, ip, fp));
        }
    /* the backward undoes the forward: rope then its inverse gives x back (both executors) */
    begin(&c, tol_of(dt), "rope inverse(rope(x)) 2x64x8x128 llama3");
    {
        int x = leaf(&c, "x", dt, DIMS(2, 64, 8, 128), -1, 1);
        int pos = leaf(&c, "pos", IR_I32, DIMS(2, 64), 0, 8192);
        int64_t ip[3] = {0, 1, 8192};
        double fp[4] = {500000.0, 8.0, 1.0, 4.0};
        int y = ir_rope(&c.g, x, pos, ip, fp);
        ip[0] = 1;
        run_case(env, &c, ir_rope(&c.g, y, pos, ip, fp));
    }
}

/* Storage types mixed: bf16 x with f32 w (and f32 dy: 5 vectors of each a lane). */
static void cases_norm_mixed(env_t *env)
{
    tcase_t c;
    for (int k = 0; k < 2; k++) {
        int64_t d = k ? 4096 : 384;
        begin(&c, TOL_BF16, "rmsnorm bf16 x, f32 w 77x%lld", (long long)d);
        int x = leaf(&c, "x", IR_BF16, DIMS(77, d), -2, 2), w = leaf(&c, "w", IR_F32, DIMS(d), 0.5, 1.5);
        run_case(env, &c, ir_rmsnorm(&c.g, x, w, 1e-5));
        begin(&c, TOL_BF16, "rmsnorm_bwd_x bf16 x, f32 w, f32 dy 77x%lld", (long long)d);
        x = leaf(&c, "x", IR_BF16, DIMS(77, d), -2, 2), w = leaf(&c, "w", IR_F32, DIMS(d), 0.5, 1.5);
        int dy = leaf(&c, "dy", IR_F32, DIMS(77, d), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_RMSNORM_BWD_X, 3, (const int[]){x, w, dy}, NULL, FP(1e-5)));
    }
}

static void cases_norm_rope(env_t *env)
{
    tcase_t c;
    for (int d = 0; d < 2; d++) {
        ir_dtype_t dt = float_types[d];
        const int64_t D[2] = {384, 64};
        for (int k = 0; k < 2; k++) {
            int x, w, dy;
            begin(&c, tol_of(dt), "rmsnorm 4x64x%lld", (long long)D[k]);
            x = leaf(&c, "x", dt, DIMS(4, 64, D[k]), -2, 2), w = leaf(&c, "w", dt, DIMS(D[k]), 0.5, 1.5);
            run_case(env, &c, ir_rmsnorm(&c.g, x, w, 1e-5));
            begin(&c, tol_of(dt), "rmsnorm_bwd_x 4x64x%lld", (long long)D[k]);
            x = leaf(&c, "x", dt, DIMS(4, 64, D[k]), -2, 2), w = leaf(&c, "w", dt, DIMS(D[k]), 0.5, 1.5);
            dy = leaf(&c, "dy", dt, DIMS(4, 64, D[k]), -1, 1);
            run_case(env, &c, ir_node(&c.g, OP_RMSNORM_BWD_X, 3, (const int[]){x, w, dy}, NULL, FP(1e-5)));
            begin(&c, tol_of(dt), "rmsnorm_bwd_w 4x64x%lld", (long long)D[k]);
            x = leaf(&c, "x", dt, DIMS(4, 64, D[k]), -2, 2), dy = leaf(&c, "dy", dt, DIMS(4, 64, D[k]), -1, 1);
            run_case(env, &c, ir_node(&c.g, OP_RMSNORM_BWD_W, 2, (const int[]){x, dy}, NULL, FP(1e-5)));
        }
        /* rmsnorm_bwd_w over many row chunks (3000 rows: 94 chunks), and wider than one
         * block's columns (D 16424: three column groups of 8192) */
        const int64_t rbw[2][2] = {{3000, 384}, {70, 16424}};
        for (int k = 0; k < 2; k++) {
            begin(&c, tol_of(dt), "rmsnorm_bwd_w %lldx%lld", (long long)rbw[k][0], (long long)rbw[k][1]);
            int x = leaf(&c, "x", dt, DIMS(rbw[k][0], rbw[k][1]), -2, 2);
            int dy = leaf(&c, "dy", dt, DIMS(rbw[k][0], rbw[k][1]), -1, 1);
            run_case(env, &c, ir_node(&c.g, OP_RMSNORM_BWD_W, 2, (const int[]){x, dy}, NULL, FP(1e-5)));
        }
        /* none / llama3 / linear scaling, forward and inverse; positions up to 8k */
        for (int kind = 0; kind < 3; kind++)
            for (int inv = 0; inv < 2; inv++) {
                static const char *const kn[3] = {"none", "llama3", "linear"};
                begin(&c, tol_of(dt), "rope %s%s 2x64x4x32", kn[kind], inv ? " inverse" : "");
                int x = leaf(&c, "x", dt, DIMS(2, 64, 4, 32), -1, 1);
                int pos = leaf(&c, "pos", IR_I32, DIMS(2, 64), 0, kind ? 8192 : 64);
                int64_t ip[3] = {inv, kind, 8192};
                double fp[4] = {kind == 1 ? 500000.0 : 10000.0, kind == 1 ? 8.0 : 4.0, 1.0, 4.0};
                run_case(env, &c, ir_rope(&c.g, x, pos, ip, fp));
            }
        cases_norm_rope_paths(env, dt);
    }
    cases_norm_mixed(env);
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    int64_t b, s, hq, hkv, dh;
    int docs; /* DOCS_* */
} attn_cfg_t;

enum {
    DOCS_SMALL,    /* row 0: documents of 50, 30 and the rest; row 1: one document */
    DOCS_STRIPED,  /* ids (s / 10) % 3: one id in several separate runs (not increasing) */
    DOCS_PACKED,   /* documents of 300, 200, 400 and the rest (per 1024 tokens), ids increasing */
    DOCS_ONE,      /* one document per row (unpacked training sequences) */
};

static void fill_docs(double *doc, const attn_cfg_t *c)
{
    for (int64_t b = 0; b < c->b; b++)
        for (int64_t s = 0; s < c->s; s++) {
            double d = 0;
            if (c->docs == DOCS_SMALL)
                d = b == 1 ? 0 : s < 50 ? 0 : s < 80 ? 1 : 2;
            else if (c->docs == DOCS_STRIPED)
                d = (double)((s / 10) % 3);
            else if (c->docs == DOCS_ONE)
                d = 0;
            else {
                int64_t at = s * 1024 / c->s; /* the S 1024 layout, stretched to S */
                d = at < 300 ? 0 : at < 500 ? 1 : at < 900 ? 2 : 3;
            }
            doc[b * c->s + s] = d;
        }
}

static const char *const docs_name[4] = {"docs", "striped docs", "packed docs", "one doc"};

/* n values uniform in [lo, hi), rounded to dt as both executors store them. */
static double *rand_vals(ir_dtype_t dt, int64_t n, double lo, double hi)
{
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = lo + urand() * (hi - lo);
    void *tmp = malloc((size_t)n * ir_dtype_size(dt));
    rt_store_f64(dt, v, n, tmp);
    rt_load_f64(dt, tmp, n, v);
    free(tmp);
    return v;
}

/* One attention problem's values: inputs, the output gradient, and the row statistics
 * (lse, rowsum(dy * o)) [B,S,Hq,2] that attn_bwd reads, computed here by the float64 CPU
 * references from the rounded inputs. */
typedef struct {
    attn_cfg_t c;
    double scale;
    double *q, *k, *v, *doc, *dy, *stats;
} attn_vals_t;

static int attn_vals(attn_vals_t *a, const attn_cfg_t *c, ir_dtype_t dt, bool with_stats)
{
    memset(a, 0, sizeof *a);
    a->c = *c;
    a->scale = 1.0 / sqrt((double)c->dh);
    int64_t nq = c->b * c->s * c->hq * c->dh, nkv = c->b * c->s * c->hkv * c->dh;
    a->q = rand_vals(dt, nq, -1.5, 1.5);
    a->k = rand_vals(dt, nkv, -1.5, 1.5);
    a->v = rand_vals(dt, nkv, -1, 1);
    a->dy = rand_vals(dt, nq, -1, 1);
    a->doc = malloc((size_t)(c->b * c->s) * sizeof *a->doc);
    fill_docs(a->doc, c);
    if (!with_stats)
        return 0;
    ir_graph_t g;
    ir_graph_init(&g);
    int q = ir_leaf(&g, "q", IR_INPUT, IR_F64, 4, SH(c->b, c->s, c->hq, c->dh));
    int k = ir_leaf(&g, "k", IR_INPUT, IR_F64, 4, SH(c->b, c->s, c->hkv, c->dh));
    int v = ir_leaf(&g, "v", IR_INPUT, IR_F64, 4, SH(c->b, c->s, c->hkv, c->dh));
    int doc = ir_leaf(&g, "doc", IR_INPUT, IR_I32, 2, SH(c->b, c->s));
    int dy = ir_leaf(&g, "dy", IR_INPUT, IR_F64, 4, SH(c->b, c->s, c->hq, c->dh));
    int o = ir_attn(&g, q, k, v, doc, a->scale);
    int lse = ir_node_dt(&g, OP_ATTN_LSE, IR_F64, 3, (const int[]){q, k, doc}, NULL, FP(a->scale));
    int delta = ir_node(&g, OP_ROWSUM, 1, (const int[]){ir_mul(&g, o, dy)}, NULL, NULL);
    int st = ir_concat(&g, lse, delta, 3);
    int rc = -1;
    double **val = calloc((size_t)(g.n > 0 ? g.n : 1), sizeof *val);
    ft_err_t e;
    if (st >= 0) {
        val[q] = a->q, val[k] = a->k, val[v] = a->v, val[doc] = a->doc, val[dy] = a->dy;
        if (ir_eval_f64(&g, val, &e) == 0) {
            int64_t n = ir_numel(&g.t[st]);
            a->stats = malloc((size_t)n * sizeof *a->stats);
            memcpy(a->stats, val[st], (size_t)n * sizeof *a->stats);
            rc = 0;
        }
        ir_eval_free(&g, val);
    }
    free(val);
    ir_graph_free(&g);
    return rc;
}

static void attn_vals_free(attn_vals_t *a)
{
    free(a->q);
    free(a->k);
    free(a->v);
    free(a->doc);
    free(a->dy);
    free(a->stats);
}

/* The five attention kernels on one problem: attn, attn_lse (into f32), and attn_bwd for dq,
 * dk and dv from the statistics. */
static void attention_config(env_t *env, const attn_cfg_t *c, ir_dtype_t dt)
{
    static const char *const wn[7] = {"attn",        "attn_lse", "attn_bwd dq",    "attn_bwd dk",
                                      "attn_bwd dv", "attn+lse", "attn_bwd dk+dv"};
    /* dk and dv in one node (passes/fuse.c) only where the Hopper kernels run */
    int nw = ft_target_hopper(env->arch) && dt == IR_BF16 && (c->dh == 64 || c->dh == 128) ? 7 : 6;
    char probe[160];
    bool any = false;
    for (int w = 0; w < nw && !any; w++) {
        snprintf(probe, sizeof probe, "%s S%lld Hq%lld Hkv%lld Dh%lld %s", wn[w], (long long)c->s, (long long)c->hq,
                 (long long)c->hkv, (long long)c->dh, docs_name[c->docs]);
        any = !env->filter || strstr(probe, env->filter);
    }
    if (!any)
        return; /* the CPU statistics of a large case take a while: skip them when filtered out */
    attn_vals_t av;
    if (attn_vals(&av, c, dt, true) != 0) {
        printf("%-40s FAIL  could not compute the row statistics\n", "attention statistics");
        env->fail++;
        return;
    }
    tcase_t cs;
    for (int w = 0; w < nw; w++) {
        begin(&cs, tol_of(dt), "%s S%lld Hq%lld Hkv%lld Dh%lld %s", wn[w], (long long)c->s, (long long)c->hq,
              (long long)c->hkv, (long long)c->dh, docs_name[c->docs]);
        int q = leaf_from(&cs, "q", dt, DIMS(c->b, c->s, c->hq, c->dh), av.q);
        int k = leaf_from(&cs, "k", dt, DIMS(c->b, c->s, c->hkv, c->dh), av.k);
        int v = leaf_from(&cs, "v", dt, DIMS(c->b, c->s, c->hkv, c->dh), av.v);
        int doc = leaf_from(&cs, "doc", IR_I32, DIMS(c->b, c->s), av.doc);
        if (w == 0) {
            run_case(env, &cs, ir_attn(&cs.g, q, k, v, doc, av.scale));
            continue;
        }
        if (w == 1) {
            run_case(env, &cs, ir_node_dt(&cs.g, OP_ATTN_LSE, IR_F32, 3, (const int[]){q, k, doc}, NULL, FP(av.scale)));
            continue;
        }
        if (w == 5) { /* the forward writing the row statistics too (passes/fuse.c) */
            int lse = leaf(&cs, "lse", IR_F32, DIMS(c->b, c->s, c->hq, 1), -1, 1);
            cs.also[0] = "lse";
            run_case(env, &cs, ir_node(&cs.g, OP_ATTN, 5, (const int[]){q, k, v, doc, lse}, NULL, FP(av.scale)));
            continue;
        }
        int dy = leaf_from(&cs, "dy", dt, DIMS(c->b, c->s, c->hq, c->dh), av.dy);
        int st = leaf_from(&cs, "stats", IR_F32, DIMS(c->b, c->s, c->hq, 2), av.stats);
        if (w == 6) { /* dk out, dv written into the seventh input */
            int dvb = leaf(&cs, "dv", dt, DIMS(c->b, c->s, c->hkv, c->dh), -1, 1);
            cs.also[0] = "dv";
            run_case(env, &cs,
                     ir_node_dt(&cs.g, OP_ATTN_BWD, dt, 7, (const int[]){q, k, v, doc, dy, st, dvb}, IP(3),
                                FP(av.scale)));
            continue;
        }
        run_case(env, &cs,
                 ir_node_dt(&cs.g, OP_ATTN_BWD, dt, 6, (const int[]){q, k, v, doc, dy, st}, IP(w - 2), FP(av.scale)));
    }
    attn_vals_free(&av);
}

/* Small shapes (tile edges: S not a multiple of 32 or 64, Dh under 32 and not a multiple of 8,
 * Dh 128; MHA and GQA; three document layouts) in f32 and bf16, one document over several
 * tensor-core blocks in bf16, then the size the statistics rewrite is for (S 1024, packed
 * documents) in bf16 and, at Dh 128, f32. */
static void cases_attention(env_t *env)
{
    const attn_cfg_t small[6] = {
        {2, 128, 4, 2, 32, DOCS_SMALL},
        {2, 256, 8, 2, 64, DOCS_SMALL},
        {2, 64, 4, 4, 128, DOCS_SMALL},
        {2, 77, 6, 2, 20, DOCS_STRIPED},
        /* the tensor-core tiles' edges: S past a multiple of 64 with mask-free tiles (row 1
         * is one document), groups of 4; ids that repeat in separate runs */
        {2, 333, 4, 1, 64, DOCS_SMALL},
        {2, 200, 8, 2, 128, DOCS_STRIPED},
    };
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < 6; k++)
            attention_config(env, &small[k], float_types[d]);
    /* bf16 only (the tensor cores): one document, so most tile pairs run mask-free, over
     * several query blocks and a partial last one (S not a multiple of 128), groups of 4 and 2 */
    const attn_cfg_t one[2] = {{1, 600, 8, 2, 128, DOCS_ONE}, {2, 520, 4, 2, 64, DOCS_ONE}};
    attention_config(env, &one[0], IR_BF16);
    attention_config(env, &one[1], IR_BF16);
    const attn_cfg_t large[2] = {{1, 1024, 8, 2, 64, DOCS_PACKED}, {1, 1024, 8, 2, 128, DOCS_PACKED}};
    attention_config(env, &large[0], IR_BF16);
    attention_config(env, &large[1], IR_BF16);
    attention_config(env, &large[1], IR_F32);
    /* rowsum: delta's reduction, bf16 products into f32 sums too */
    tcase_t c;
    for (int d = 0; d < 2; d++) {
        ir_dtype_t dt = float_types[d];
        begin(&c, tol_of(dt), "rowsum 2x128x4x64 -> f32");
        int x = leaf(&c, "x", dt, DIMS(2, 128, 4, 64), -1, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_ROWSUM, IR_F32, 1, &x, NULL, NULL));
        begin(&c, tol_of(dt), "rowsum 5x7x33");
        x = leaf(&c, "x", dt, DIMS(5, 7, 33), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_ROWSUM, 1, &x, NULL, NULL));
        /* the two-input form (attention's delta: the rows of o * dy, no product in memory) */
        begin(&c, tol_of(dt), "rowsum(a, b) 2x128x4x128 -> f32");
        x = leaf(&c, "x", dt, DIMS(2, 128, 4, 128), -1, 1);
        int y = leaf(&c, "y", dt, DIMS(2, 128, 4, 128), -1, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_ROWSUM, IR_F32, 2, (const int[]){x, y}, NULL, NULL));
        begin(&c, tol_of(dt), "rowsum(a, b) 5x7x33");
        x = leaf(&c, "x", dt, DIMS(5, 7, 33), -1, 1);
        y = leaf(&c, "y", dt, DIMS(5, 7, 33), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_ROWSUM, 2, (const int[]){x, y}, NULL, NULL));
    }
}

/* ------------------------------------------------------------------ attention timings */

/* The attention backward at the large sizes, kernel by kernel: the whole chain (attn, the
 * statistics, the three gradients) compiled as one graph, launched here on a stream of our
 * own with the executor's argument blocks (the gradients read the statistics the GPU just
 * computed), each kernel timed by CUDA events around single launches (median of 10 after a
 * warm-up). With --old-attn FILE, the previous
 * attention.cuh's attn and attn_bwd (which recompute the statistics) are timed on the same
 * buffers. Inputs are random, never zeros. */

#define BENCH_REPS 10

typedef CUresult (*bench_launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                   CUstream, void **, void **);
typedef CUresult (*bench_kfn_t)(CUfunction *, CUkernel);
typedef CUresult (*bench_attr_t)(CUfunction, CUfunction_attribute, int);
typedef CUresult (*bench_getattr_t)(int *, CUfunction_attribute, CUfunction);

typedef struct {
    bench_launch_t launch;
    bench_kfn_t kernel_function;
    bench_attr_t set_attribute;
    bench_getattr_t get_attribute;
    cudaStream_t stream;
    cudaEvent_t ev[2 * BENCH_REPS];
    bool has_stream;
    int nev;
} bench_t;

static int cuda_ok(cudaError_t rc, const char *what)
{
    if (rc == cudaSuccess)
        return 0;
    printf("bench: %s: %s (%s)\n", what, cudaGetErrorName(rc), cudaGetErrorString(rc));
    return -1;
}

static int drv_ok(CUresult r, const char *what)
{
    if (r == CUDA_SUCCESS)
        return 0;
    printf("bench: %s: driver error %d\n", what, (int)r);
    return -1;
}

static int bench_entry(const char *sym, void **fn)
{
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cuda_ok(cudaGetDriverEntryPointByVersion(sym, fn, 12000, cudaEnableDefault, &q), sym) != 0)
        return -1;
    if (q != cudaDriverEntryPointSuccess || !*fn) {
        printf("bench: the driver has no %s\n", sym);
        return -1;
    }
    return 0;
}

static int bench_open(bench_t *bx)
{
    memset(bx, 0, sizeof *bx);
    if (bench_entry("cuLaunchKernel", (void **)&bx->launch) != 0 ||
        bench_entry("cuKernelGetFunction", (void **)&bx->kernel_function) != 0 ||
        bench_entry("cuFuncSetAttribute", (void **)&bx->set_attribute) != 0 ||
        bench_entry("cuFuncGetAttribute", (void **)&bx->get_attribute) != 0)
        return -1;
    if (cuda_ok(cudaStreamCreateWithFlags(&bx->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags") != 0)
        return -1;
    bx->has_stream = true;
    for (; bx->nev < 2 * BENCH_REPS; bx->nev++)
        if (cuda_ok(cudaEventCreate(&bx->ev[bx->nev]), "cudaEventCreate") != 0)
            return -1;
    return 0;
}

static void bench_close(bench_t *bx)
{
    for (int i = 0; i < bx->nev; i++)
        cuda_ok(cudaEventDestroy(bx->ev[i]), "cudaEventDestroy");
    if (bx->has_stream)
        cuda_ok(cudaStreamDestroy(bx->stream), "cudaStreamDestroy");
}

/* A cubin's kernels by name, with the dynamic shared memory each needs opted in to. */
typedef struct {
    cudaLibrary_t lib;
    bool loaded;
    CUfunction *fn;
    int n;
} bench_mod_t;

static int bench_load(bench_t *bx, bench_mod_t *bm, const unsigned char *image, char **names, int n,
                      const unsigned *smem)
{
    memset(bm, 0, sizeof *bm);
    if (cuda_ok(cudaLibraryLoadData(&bm->lib, image, NULL, NULL, 0, NULL, NULL, 0), "cudaLibraryLoadData") != 0)
        return -1;
    bm->loaded = true;
    bm->fn = calloc((size_t)(n > 0 ? n : 1), sizeof *bm->fn);
    bm->n = n;
    for (int i = 0; i < n; i++) {
        cudaKernel_t k;
        if (cuda_ok(cudaLibraryGetKernel(&k, bm->lib, names[i]), names[i]) != 0 ||
            drv_ok(bx->kernel_function(&bm->fn[i], (CUkernel)k), "cuKernelGetFunction") != 0)
            return -1;
        if (smem[i] > 48u * 1024u &&
            drv_ok(bx->set_attribute(bm->fn[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem[i]),
                   "cuFuncSetAttribute") != 0)
            return -1;
    }
    return 0;
}

static void bench_unload(bench_mod_t *bm)
{
    if (bm->loaded)
        cuda_ok(cudaLibraryUnload(bm->lib), "cudaLibraryUnload");
    free(bm->fn);
    memset(bm, 0, sizeof *bm);
}

/* The argument block of node id, as the executor builds it. */
static void bench_args(const ir_graph_t *g, unsigned char *arena, int id, ftk_args_t *a)
{
    const ir_tensor_t *t = &g->t[id];
    memset(a, 0, sizeof *a);
    for (int i = 0; i <= FTK_MAX_IN; i++)
        for (int d = 0; d < FTK_MAX_DIMS; d++)
            a->shape[i][d] = 1;
    for (int s = 0; s <= t->nsrc; s++) {
        const ir_tensor_t *x = s < t->nsrc ? &g->t[t->src[s]] : t;
        int slot = s < t->nsrc ? s : FTK_OUT;
        void *p = arena + x->offset;
        if (s < t->nsrc)
            a->in[s] = p;
        else
            a->out = p;
        a->ndim[slot] = x->ndim;
        a->dtype[slot] = (int)x->dtype;
        for (int d = 0; d < x->ndim; d++)
            a->shape[slot][d] = (long long)x->shape[d];
    }
    a->n = (long long)ir_numel(t);
    for (int i = 0; i < FTK_MAX_PARAMS; i++) {
        a->ip[i] = (long long)t->ip[i];
        a->fp[i] = t->fp[i];
    }
}

static int bench_launch(bench_t *bx, CUfunction fn, const unsigned grid[3], unsigned threads, unsigned smem,
                        ftk_args_t *a)
{
    void *params[1] = {a};
    return drv_ok(bx->launch(fn, grid[0], grid[1], grid[2], threads, 1, 1, smem, (CUstream)bx->stream, params, NULL),
                  "cuLaunchKernel");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median milliseconds of BENCH_REPS single launches after one warm-up. */
static int bench_time(bench_t *bx, CUfunction fn, const unsigned grid[3], unsigned threads, unsigned smem,
                      ftk_args_t *a, double *ms)
{
    if (bench_launch(bx, fn, grid, threads, smem, a) != 0)
        return -1;
    for (int r = 0; r < BENCH_REPS; r++)
        if (cuda_ok(cudaEventRecord(bx->ev[2 * r], bx->stream), "cudaEventRecord") != 0 ||
            bench_launch(bx, fn, grid, threads, smem, a) != 0 ||
            cuda_ok(cudaEventRecord(bx->ev[2 * r + 1], bx->stream), "cudaEventRecord") != 0)
            return -1;
    if (cuda_ok(cudaStreamSynchronize(bx->stream), "a timed kernel") != 0 || cuda_ok(cudaGetLastError(), "launch") != 0)
        return -1;
    double t[BENCH_REPS];
    for (int r = 0; r < BENCH_REPS; r++) {
        float f = 0;
        if (cuda_ok(cudaEventElapsedTime(&f, bx->ev[2 * r], bx->ev[2 * r + 1]), "cudaEventElapsedTime") != 0)
            return -1;
        t[r] = f;
    }
    qsort(t, BENCH_REPS, sizeof t[0], cmp_double);
    *ms = (t[BENCH_REPS / 2 - 1] + t[BENCH_REPS / 2]) / 2;
    return 0;
}

/* The previous attention.cuh's attn and attn_bwd for storage type ty, compiled from `path`
 * with the preamble it expects. */
static int old_module(const char *path, const char *arch, const char *ty, unsigned char **image, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("bench: cannot open %s\n", path);
        return -1;
    }
    char *old = malloc(1 << 20);
    size_t n = fread(old, 1, (1 << 20) - 1, f);
    fclose(f);
    old[n] = 0;
    size_t cap = n + (1 << 20);
    char *src = malloc(cap);
    size_t at = (size_t)snprintf(src, cap, "#define FTK_ATT_DPL 8\n#define FTK_ATT_TILE 32\n");
    for (int i = 0; i < cg_nembedded; i++)
        if (strcmp(cg_embedded[i].name, "kernel_abi.h") == 0 || strcmp(cg_embedded[i].name, "common.cuh") == 0)
            at += (size_t)snprintf(src + at, cap - at, "%s\n", cg_embedded[i].text);
    at += (size_t)snprintf(src + at, cap - at,
                           "%s\nextern \"C\" __global__ void __launch_bounds__(128) old_attn(const __grid_constant__ "
                           "ftk_args_t a) { ftk::attn<%s, %s, %s, int, %s>(a); }\n"
                           "extern \"C\" __global__ void __launch_bounds__(128) old_attn_bwd(const __grid_constant__ "
                           "ftk_args_t a) { ftk::attn_bwd<%s, %s, %s, int, %s, %s>(a); }\n",
                           old, ty, ty, ty, ty, ty, ty, ty, ty, ty);
    free(old);
    ft_err_t e;
    int rc = cg_nvrtc_compile(src, arch, image, len, &e);
    if (rc != 0)
        printf("bench: compiling %s: %.300s\n", path, e.msg);
    free(src);
    return rc;
}

/* The FLOPs a TFLOP/s figure counts: the causal half of each S x S x Dh product per query
 * head, mm = 2 B Hq S S Dh / 2, times the products the kernel performs: attn 2 (Q Kᵀ, P V),
 * attn_lse 1 (Q Kᵀ), dq 3 (Q Kᵀ, dY Vᵀ, dS K), dk 3 (Q Kᵀ, dY Vᵀ, dSᵀ Q), dv 2 (Q Kᵀ, Pᵀ dY).
 * Masked-out work (the diagonal tiles' upper halves, other documents) is not counted, so
 * packed documents show lower figures for the same speed. */
static double attn_bench_flops(const attn_cfg_t *c, const ir_tensor_t *t)
{
    double mm = 2.0 * (double)c->b * (double)c->hq * (double)c->s * (double)c->s * (double)c->dh / 2.0;
    if (t->op == OP_ATTN)
        return 2 * mm;
    if (t->op == OP_ATTN_LSE)
        return mm;
    return t->ip[0] == 2 ? 2 * mm : t->ip[0] == 3 ? 4 * mm : 3 * mm;
}

/* A kernel's registers per thread and local memory (spills) per thread, for the time lines. */
static void bench_regs(bench_t *bx, CUfunction fn, char *buf, size_t cap)
{
    int regs = -1, local = -1;
    bx->get_attribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn);
    bx->get_attribute(&local, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn);
    snprintf(buf, cap, "%3d regs %3d B local", regs, local);
}

/* Attention configurations other than emit.c's, timed beside them on the same buffers, so one
 * GPU run says whether a row of its tables should change: mma.sync ones (attn_tc_cfgs:
 * attention.cuh's template arguments; on sm_90 these are emit.c's choices for other GPUs, timed
 * for comparison) and, on sm_90, Hopper ones (attn_wg_cfgs, attention_wg.cuh; mi 0). kind:
 * 0 attn, 1 attn_lse, 2 dq, 3 dk, 4 dv, 5 dk and dv in one node (Hopper only); bn, mi, oreg, ck
 * as attn_tc_cfg_t; minb the blocks
 * per SM of __launch_bounds__. The results are not checked here: a configuration moved into
 * emit.c is checked by the cases. */
typedef struct {
    int kind, dh, bn, mi, oreg, ck, minb;
} alt_cfg_t;

static const alt_cfg_t alt_cfgs[] = {
    /* mma.sync: emit.c's attn_tc_cfgs for attn, dq, dk, dv, then others */
    {0, 128, 32, 2, 0, 0, 2}, {2, 128, 64, 1, 1, 32, 1}, {3, 128, 64, 1, 1, 32, 1}, {4, 128, 32, 2, 0, 32, 2},
    {0, 64, 64, 2, 1, 0, 2}, {2, 64, 64, 2, 1, 32, 2}, {3, 64, 64, 2, 1, 16, 2}, {4, 64, 64, 2, 1, 64, 2},
    {1, 128, 64, 2, 1, 0, 2}, {1, 64, 128, 2, 1, 0, 2},
    /* wgmma */
    {0, 128, 128, 0, 0, 0, 1}, {0, 128, 32, 0, 0, 0, 2}, {2, 128, 64, 0, 0, 64, 1}, {2, 128, 32, 0, 0, 32, 2},
    {3, 128, 64, 0, 0, 64, 1}, {3, 128, 32, 0, 0, 32, 2}, {4, 128, 32, 0, 0, 32, 2}, {4, 128, 128, 0, 0, 128, 1},
    {0, 64, 64, 0, 0, 0, 2}, {0, 64, 128, 0, 0, 0, 1}, {2, 64, 32, 0, 0, 32, 2}, {2, 64, 64, 0, 0, 32, 2},
    {3, 64, 32, 0, 0, 32, 2}, {3, 64, 64, 0, 0, 32, 2}, {4, 64, 32, 0, 0, 32, 2}, {4, 64, 64, 0, 0, 32, 2},
    /* dk and dv in one node (kind 5) */
    {5, 128, 128, 0, 0, 32, 1}, {5, 128, 64, 0, 0, 64, 1}, {5, 128, 64, 0, 0, 32, 1}, {5, 64, 64, 0, 0, 32, 1},
    {5, 64, 128, 0, 0, 64, 1}, {5, 64, 64, 0, 0, 64, 1},
};
#define NALT (sizeof alt_cfgs / sizeof alt_cfgs[0])

/* Whether configuration a runs on arch and is of head dim dh. */
static bool alt_for(const alt_cfg_t *a, const char *arch, int64_t dh)
{
    return a->dh == dh && (a->mi > 0 || ft_target_hopper(arch));
}

static unsigned alt_threads(const alt_cfg_t *a) { return a->mi ? 256u / (unsigned)a->mi : 256u; }

/* attention.cuh's ftk_tc_lay or attention_wg.cuh's ftk_wg_lay for one configuration (emit.c's
 * attn_tc_smem and attn_wg_smem, written again). */
static unsigned alt_smem(const alt_cfg_t *a, int64_t ns)
{
    if (a->mi == 0) {
        int64_t own = 128 * a->dh * 2, tile = a->bn * a->dh * 2;
        int64_t owns = a->kind == 0 || a->kind == 4 ? own : 2 * own, xtra = a->kind >= 3 ? a->bn * 8 : 0;
        return (unsigned)((owns + 4 * tile + 2 * xtra + 15) / 16 * 16 + (ns + 127) / 128 * 8 + 1024);
    }
    int64_t row = (a->dh + 8) * 2, tile = a->bn * row, own = 128 * row, stage, owns;
    if (a->kind == 0)
        stage = 2 * tile, owns = own;
    else if (a->kind == 1)
        stage = tile, owns = own;
    else if (a->kind == 2)
        stage = 2 * tile, owns = 2 * own;
    else
        stage = 2 * tile + a->bn * 8, owns = (a->kind == 3 ? 2 : 1) * own;
    int64_t end = a->oreg ? (owns > 2 * stage ? owns : 2 * stage) : owns + 2 * stage;
    return (unsigned)((end + 15) / 16 * 16 + (ns + 127) / 128 * 8);
}

/* The alternative configurations' entry points alt_<i> (for head dim dh), compiled from the
 * embedded templates with the preamble they need. */
static int alt_module(const char *arch, int64_t dh, unsigned char **image, size_t *len)
{
    static const char *const tmpl[5] = {"attn_tc_fwd", "attn_tc_lse", "attn_tc_dq", "attn_tc_dk", "attn_tc_dv"};
    static const char *const wtmpl[6] = {"attn_wg_fwd", NULL, "attn_wg_dq", "attn_wg_dk", "attn_wg_dv", "attn_wg_dkv"};
    size_t cap = 1 << 21, at = 0;
    char *src = malloc(cap);
    at += (size_t)snprintf(src + at, cap - at, "#define FTK_ATT_THREADS %d\n#define FTK_ATT_TILE %d\n#define FTK_ATT_TC_OWN %d\n",
                           CG_ATT_THREADS, CG_ATT_TILE, CG_ATT_TC_OWN);
    const char *files[4] = {"kernel_abi.h", "common.cuh", "attention.cuh", "attention_wg.cuh"};
    for (int f = 0; f < 4; f++)
        for (int i = 0; i < cg_nembedded; i++)
            if (strcmp(cg_embedded[i].name, files[f]) == 0)
                at += (size_t)snprintf(src + at, cap - at, "%s\n", cg_embedded[i].text);
    for (size_t i = 0; i < NALT; i++) {
        const alt_cfg_t *a = &alt_cfgs[i];
        if (!alt_for(a, arch, dh))
            continue;
        if (a->mi == 0) {
            at += (size_t)snprintf(src + at, cap - at,
                                   "extern \"C\" __global__ void __launch_bounds__(256, %d) alt_%zu(const "
                                   "__grid_constant__ ftk_args_t a) { ftk::%s<%d, %d, ",
                                   a->minb, i, wtmpl[a->kind], a->dh, a->bn);
            if (a->kind >= 2)
                at += (size_t)snprintf(src + at, cap - at, "%d, float, ", a->ck);
            at += (size_t)snprintf(src + at, cap - at, "__nv_bfloat16>(a); }\n");
            continue;
        }
        at += (size_t)snprintf(src + at, cap - at,
                               "extern \"C\" __global__ void __launch_bounds__(%d, %d) alt_%zu(const __grid_constant__ "
                               "ftk_args_t a) { ftk::%s<%d, %d, %d, %s, ",
                               256 / a->mi, a->minb, i, tmpl[a->kind], a->dh, a->bn, a->mi, a->oreg ? "true" : "false");
        if (a->kind >= 2)
            at += (size_t)snprintf(src + at, cap - at, "%d, float, ", a->ck);
        at += (size_t)snprintf(src + at, cap - at, "%s>(a); }\n", a->kind == 1 ? "float" : "__nv_bfloat16");
    }
    ft_err_t e;
    int rc = at + 1 >= cap ? -1 : cg_nvrtc_compile(src, arch, image, len, &e);
    if (rc != 0)
        printf("bench: compiling the alternative configurations: %.300s\n", at + 1 >= cap ? "source too long" : e.msg);
    free(src);
    return rc;
}

static void bench_config(env_t *env, bench_t *bx, const attn_cfg_t *c, ir_dtype_t dt)
{
    static const char *const cxx[IR_DTYPE_COUNT] = {[IR_F32] = "float", [IR_BF16] = "__nv_bfloat16"};
    attn_vals_t av;
    if (attn_vals(&av, c, dt, false) != 0)
        return;
    ir_graph_t g;
    ir_graph_init(&g);
    const int64_t *qs = SH(c->b, c->s, c->hq, c->dh), *kvs = SH(c->b, c->s, c->hkv, c->dh);
    int q = ir_leaf(&g, "q", IR_INPUT, dt, 4, qs), k = ir_leaf(&g, "k", IR_INPUT, dt, 4, kvs);
    int v = ir_leaf(&g, "v", IR_INPUT, dt, 4, kvs), doc = ir_leaf(&g, "doc", IR_INPUT, IR_I32, 2, qs);
    int dy = ir_leaf(&g, "dy", IR_INPUT, dt, 4, qs);
    int o = ir_attn(&g, q, k, v, doc, av.scale);
    int lse = ir_node_dt(&g, OP_ATTN_LSE, IR_F32, 3, (const int[]){q, k, doc}, NULL, FP(av.scale));
    int delta = ir_node_dt(&g, OP_ROWSUM, IR_F32, 2, (const int[]){o, dy}, NULL, NULL);
    int st = ir_concat(&g, lse, delta, 3);
    int grads[4] = {-1, -1, -1, -1};
    for (int w = 0; w < 3; w++) {
        grads[w] = ir_node_dt(&g, OP_ATTN_BWD, dt, 6, (const int[]){q, k, v, doc, dy, st}, IP(w), FP(av.scale));
        if (grads[w] >= 0)
            g.t[grads[w]].flags |= IR_FLAG_OUTPUT;
    }
    if (ft_target_hopper(env->arch) && dt == IR_BF16 && (c->dh == 64 || c->dh == 128)) { /* dk and dv in one node */
        int dvb = ir_leaf(&g, "dv_buf", IR_INPUT, dt, 4, kvs);
        grads[3] = ir_node_dt(&g, OP_ATTN_BWD, dt, 7, (const int[]){q, k, v, doc, dy, st, dvb}, IP(3), FP(av.scale));
        if (grads[3] >= 0)
            g.t[grads[3]].flags |= IR_FLAG_OUTPUT;
    }
    if (o >= 0)
        g.t[o].flags |= IR_FLAG_OUTPUT;
    pass_ctx_t ctx = {0};
    ft_err_t e;
    cg_module_t m;
    memset(&m, 0, sizeof m);
    bench_mod_t bm = {0}, bo = {0};
    unsigned char *arena = NULL, *oldimg = NULL;
    size_t oldlen = 0;
    unsigned *smem = NULL;
    if (g.err[0] || pass_schedule(&g, &ctx, &e) != 0 || pass_memplan(&g, &ctx, &e) != 0 ||
        cg_build(&g, env->arch, env->cache, &m, &e) != 0) {
        printf("bench: building: %s%s\n", g.err, e.msg);
        goto done;
    }
    smem = calloc((size_t)(m.nnames > 0 ? m.nnames : 1), sizeof *smem);
    for (int i = 0; i < m.nlaunch; i++)
        if (m.launch[i].kind == CG_KERNEL && m.launch[i].smem > smem[m.launch[i].kernel])
            smem[m.launch[i].kernel] = m.launch[i].smem;
    if (bench_load(bx, &bm, m.image, m.names, m.nnames, smem) != 0 ||
        cuda_ok(cudaMalloc((void **)&arena, (size_t)g.arena_bytes), "cudaMalloc") != 0)
        goto done;
    {
        const struct {
            const char *name;
            const double *v;
        } in[5] = {{"q", av.q}, {"k", av.k}, {"v", av.v}, {"doc", av.doc}, {"dy", av.dy}};
        for (int i = 0; i < 5; i++) {
            const ir_tensor_t *t = &g.t[ir_find(&g, in[i].name)];
            void *host = malloc((size_t)ir_nbytes(t));
            rt_store_f64(t->dtype, in[i].v, ir_numel(t), host);
            int rc = cuda_ok(cudaMemcpy(arena + t->offset, host, (size_t)ir_nbytes(t), cudaMemcpyHostToDevice),
                             "cudaMemcpy");
            free(host);
            if (rc != 0)
                goto done;
        }
    }
    /* every kernel once, in schedule order (the statistics the gradients read), then each timed */
    printf("time  %s B%lld S%lld Hq%lld Hkv%lld Dh%lld %s, %s\n", ir_dtype_name(dt), (long long)c->b,
           (long long)c->s, (long long)c->hq, (long long)c->hkv, (long long)c->dh, docs_name[c->docs], env->arch);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && cuda_ok(cudaStreamSynchronize(bx->stream), "the first run") != 0)
            goto done;
        for (int i = 0; i < m.nlaunch; i++) {
            const cg_launch_t *l = &m.launch[i];
            if (l->kind != CG_KERNEL)
                continue;
            ftk_args_t a;
            bench_args(&g, arena, l->node, &a);
            if (pass == 0) {
                if (bench_launch(bx, bm.fn[l->kernel], l->grid, l->block[0], l->smem, &a) != 0)
                    goto done;
                continue;
            }
            double ms, flops, bytes;
            if (bench_time(bx, bm.fn[l->kernel], l->grid, l->block[0], l->smem, &a, &ms) != 0)
                goto done;
            const ir_tensor_t *t = &g.t[l->node];
            ir_ops[t->op]->cost(&g, t, &flops, &bytes);
            if (t->op == OP_ATTN || t->op == OP_ATTN_LSE || t->op == OP_ATTN_BWD)
                flops = attn_bench_flops(c, t);
            static const char *const bwd_what[4] = {"attn_bwd dq", "attn_bwd dk", "attn_bwd dv", "attn_bwd dk+dv"};
            const char *what = t->op == OP_ATTN_BWD ? bwd_what[t->ip[0] & 3] : ir_ops[t->op]->name;
            char regs[64];
            bench_regs(bx, bm.fn[l->kernel], regs, sizeof regs);
            printf("time    %-12s new %9.4f ms  %7.2f TFLOP/s  %7.1f GB/s  %s  %s\n", what, ms, flops / ms * 1e-9,
                   bytes / ms * 1e-6, regs, m.names[l->kernel]);
        }
    }
    if (dt == IR_BF16 && (c->dh == 64 || c->dh == 128)) { /* the other tensor-core configurations */
        unsigned char *aimg = NULL;
        size_t alen = 0;
        if (alt_module(env->arch, c->dh, &aimg, &alen) != 0)
            goto done;
        char *anames[NALT];
        unsigned asmem[NALT];
        size_t aidx[NALT], na = 0;
        for (size_t i = 0; i < NALT; i++)
            if (alt_for(&alt_cfgs[i], env->arch, c->dh)) {
                anames[na] = malloc(32);
                snprintf(anames[na], 32, "alt_%zu", i);
                asmem[na] = alt_smem(&alt_cfgs[i], c->s);
                aidx[na++] = i;
            }
        bench_mod_t ba = {0};
        int rc = bench_load(bx, &ba, aimg, anames, (int)na, asmem);
        static const char *const kn[6] = {"attn",        "attn_lse",      "attn_bwd dq",
                                          "attn_bwd dk", "attn_bwd dv",   "attn_bwd dk+dv"};
        const int nodes[6] = {o, lse, grads[0], grads[1], grads[2], grads[3]};
        for (size_t j = 0; j < na && rc == 0; j++) {
            const alt_cfg_t *a = &alt_cfgs[aidx[j]];
            ftk_args_t args;
            bench_args(&g, arena, nodes[a->kind], &args);
            /* a block per two own tiles of 128 rows (emit.c's attn_launch) */
            unsigned grid[3] = {(unsigned)(((c->s + 127) / 128 + 1) / 2), (unsigned)(a->kind >= 3 ? c->hkv : c->hq),
                                (unsigned)c->b};
            double ms;
            rc = bench_time(bx, ba.fn[j], grid, alt_threads(a), asmem[j], &args, &ms);
            if (rc != 0)
                break;
            char regs[64];
            bench_regs(bx, ba.fn[j], regs, sizeof regs);
            printf("time    %-12s alt %9.4f ms  %7.2f TFLOP/s  %s {bn %d, mi %d, oreg %d, ck %d, minb %d} %u B  %s\n",
                   kn[a->kind], ms, attn_bench_flops(c, &g.t[nodes[a->kind]]) / ms * 1e-9, a->mi ? "mma.sync" : "wgmma",
                   a->bn, a->mi, a->oreg,
                   a->ck, a->minb, asmem[j], regs);
        }
        bench_unload(&ba);
        for (size_t j = 0; j < na; j++)
            free(anames[j]);
        free(aimg);
        if (rc != 0)
            goto done;
    }
    if (!env->old_attn || !cxx[dt])
        goto done;
    if (old_module(env->old_attn, env->arch, cxx[dt], &oldimg, &oldlen) != 0)
        goto done;
    {
        char *onames[2] = {"old_attn", "old_attn_bwd"};
        int64_t ns = c->s, dh = c->dh;
        unsigned osmem[2] = {(unsigned)(4 * (dh + 2) * 4), (unsigned)((32 * dh + 32 + 12) * 4)};
        if (bench_load(bx, &bo, oldimg, onames, 2, osmem) != 0)
            goto done;
        const int nodes[4] = {o, grads[0], grads[1], grads[2]};
        static const char *const wn[4] = {"attn", "attn_bwd dq", "attn_bwd dk", "attn_bwd dv"};
        for (int w = 0; w < 4; w++) {
            ftk_args_t a;
            bench_args(&g, arena, nodes[w], &a);
            bool kv = w >= 2;
            unsigned grid[3] = {(unsigned)(kv ? (ns + 31) / 32 : ns), (unsigned)(kv ? c->hkv : c->hq), (unsigned)c->b};
            unsigned sm = w == 0 ? osmem[0] : kv ? osmem[1] : (unsigned)((4 * dh + 12) * 4);
            double ms;
            if (bench_time(bx, bo.fn[w == 0 ? 0 : 1], grid, 128, sm, &a, &ms) != 0)
                goto done;
            printf("time    %-12s old %9.4f ms\n", wn[w], ms);
        }
    }
done:
    if (arena)
        cuda_ok(cudaFree(arena), "cudaFree");
    bench_unload(&bm);
    bench_unload(&bo);
    free(oldimg);
    free(smem);
    cg_module_free(&m);
    ir_graph_free(&g);
    attn_vals_free(&av);
}

static void bench_attention(env_t *env)
{
    if (!env->gpu || (env->filter && !strstr("time", env->filter)))
        return;
    bench_t bx;
    if (bench_open(&bx) == 0) {
        /* the S 1024 sizes of the checks; S 4096 packed; then the training shapes of
         * Llama-3-8B (micro-batch 2 of 8192 tokens, 32 query heads on 8 kv heads, Dh 128,
         * unpacked) and Llama-3.2-1B (the same at Dh 64) */
        const attn_cfg_t large[5] = {
            {1, 1024, 8, 2, 64, DOCS_PACKED}, {1, 1024, 8, 2, 128, DOCS_PACKED}, {1, 4096, 32, 8, 128, DOCS_PACKED},
            {2, 8192, 32, 8, 128, DOCS_ONE},  {2, 8192, 32, 8, 64, DOCS_ONE},
        };
        bench_config(env, &bx, &large[0], IR_BF16);
        bench_config(env, &bx, &large[1], IR_BF16);
        bench_config(env, &bx, &large[1], IR_F32);
        bench_config(env, &bx, &large[2], IR_BF16);
        bench_config(env, &bx, &large[2], IR_F32);
        bench_config(env, &bx, &large[3], IR_BF16);
        bench_config(env, &bx, &large[4], IR_BF16);
    }
    bench_close(&bx);
}

/* ------------------------------------------------------------------ memory-bound timings */

/* How bench_memory fills an input leaf: uniform in [lo, hi) (whole numbers for i32), or
 * (seq > 0) the position in a sequence of seq tokens. */
typedef struct {
    const char *name;
    double lo, hi;
    int64_t seq;
} mem_fill_t;

/* Writes leaf t of g into the arena: all of it from the host where it is small, else a
 * block of 2^20 random values repeated (the timings do not depend on the values). */
static int mem_fill(const ir_graph_t *g, const ir_tensor_t *t, unsigned char *arena, const mem_fill_t *f)
{
    int64_t n = ir_numel(t), chunk = n < (1 << 22) ? n : (1 << 20);
    size_t es = ir_dtype_size(t->dtype);
    double *v = malloc((size_t)chunk * sizeof *v);
    void *host = malloc((size_t)chunk * es);
    for (int64_t i = 0; i < chunk; i++) {
        double u = f->lo + urand() * (f->hi - f->lo);
        v[i] = f->seq > 0 ? (double)(i % f->seq) : t->dtype == IR_I32 ? floor(u) : u;
    }
    rt_store_f64(t->dtype, v, chunk, host);
    int rc = 0;
    for (int64_t at = 0; at < n && rc == 0; at += chunk) {
        int64_t m = n - at < chunk ? n - at : chunk;
        rc = cuda_ok(cudaMemcpy(arena + t->offset + at * (int64_t)es, host, (size_t)m * es, cudaMemcpyHostToDevice),
                     "cudaMemcpy");
    }
    free(v);
    free(host);
    (void)g;
    return rc;
}

/* Times every kernel of the one-op graph g (its inputs filled as `fills` says) and prints a
 * "time" line per kernel: the median of single launches, and GB/s over the op's bytes (each
 * input read once, the output written once: ir_ops' cost). */
static void bench_mem_graph(env_t *env, bench_t *bx, ir_graph_t *g, const char *label, const mem_fill_t *fills,
                            int nfill)
{
    pass_ctx_t ctx = {0};
    ft_err_t e;
    cg_module_t m;
    memset(&m, 0, sizeof m);
    bench_mod_t bm = {0};
    unsigned char *arena = NULL;
    unsigned *smem = NULL;
    if (g->err[0] || pass_schedule(g, &ctx, &e) != 0 || pass_memplan(g, &ctx, &e) != 0 ||
        cg_build(g, env->arch, env->cache, &m, &e) != 0) {
        printf("bench: %s: building: %s%s\n", label, g->err, g->err[0] ? "" : e.msg);
        goto done;
    }
    smem = calloc((size_t)(m.nnames > 0 ? m.nnames : 1), sizeof *smem);
    for (int i = 0; i < m.nlaunch; i++)
        if (m.launch[i].kind == CG_KERNEL && m.launch[i].smem > smem[m.launch[i].kernel])
            smem[m.launch[i].kernel] = m.launch[i].smem;
    if (bench_load(bx, &bm, m.image, m.names, m.nnames, smem) != 0 ||
        cuda_ok(cudaMalloc((void **)&arena, (size_t)g->arena_bytes), "cudaMalloc") != 0)
        goto done;
    for (int i = 0; i < nfill; i++) {
        int id = ir_find(g, fills[i].name);
        if (id < 0 || mem_fill(g, &g->t[id], arena, &fills[i]) != 0) {
            printf("bench: %s: input '%s'\n", label, fills[i].name);
            goto done;
        }
    }
    for (int i = 0; i < m.nlaunch; i++) {
        const cg_launch_t *l = &m.launch[i];
        if (l->kind != CG_KERNEL)
            continue;
        ftk_args_t a;
        bench_args(g, arena, l->node, &a);
        double ms, flops, bytes;
        if (bench_time(bx, bm.fn[l->kernel], l->grid, l->block[0], l->smem, &a, &ms) != 0)
            goto done;
        const ir_tensor_t *t = &g->t[l->node];
        ir_ops[t->op]->cost(g, t, &flops, &bytes);
        printf("time    %-44s %9.4f ms  %7.1f GB/s  (grid %u x %u)\n", label, ms, bytes / ms * 1e-6, l->grid[0],
               l->block[0]);
    }
done:
    if (arena)
        cuda_ok(cudaFree(arena), "cudaFree");
    bench_unload(&bm);
    free(smem);
    cg_module_free(&m);
    ir_graph_free(g);
}

/* The memory-bound kernels at the training shapes, bf16: rmsnorm and rmsnorm_bwd_x over
 * 16384 tokens of hidden 4096 (Llama-3-8B) and 2048 (Llama-3.2-1B), rope on q [2,8192,32,128],
 * k [2,8192,8,128] and q at Dh 64 (llama3 scaling, theta 5e5, positions 0..8191, forward
 * and inverse), xent_bwd over [16384, 128256] logits, and the f32 <-> bf16 weight casts of
 * a Llama-3-8B MLP matrix, a 1B one and a norm weight. */
static void bench_memory(env_t *env)
{
    if (!env->gpu || (env->filter && !strstr("time memory", env->filter)))
        return;
    bench_t bx;
    if (bench_open(&bx) != 0) {
        bench_close(&bx);
        return;
    }
    printf("time  memory-bound kernels, bf16, %s\n", env->arch);
    char label[96];
    const int64_t hidden[2] = {4096, 2048};
    for (int k = 0; k < 2; k++) {
        int64_t d = hidden[k];
        for (int bwd = 0; bwd < 2; bwd++) {
            ir_graph_t g;
            ir_graph_init(&g);
            int x = ir_leaf(&g, "x", IR_INPUT, IR_BF16, 2, SH(16384, d));
            int w = ir_leaf(&g, "w", IR_INPUT, IR_BF16, 1, SH(d));
            int y;
            if (bwd) {
                int dy = ir_leaf(&g, "dy", IR_INPUT, IR_BF16, 2, SH(16384, d));
                y = ir_node(&g, OP_RMSNORM_BWD_X, 3, (const int[]){x, w, dy}, NULL, FP(1e-5));
            } else {
                y = ir_rmsnorm(&g, x, w, 1e-5);
            }
            if (y >= 0)
                g.t[y].flags |= IR_FLAG_OUTPUT;
            snprintf(label, sizeof label, "%s [16384,%lld]", bwd ? "rmsnorm_bwd_x" : "rmsnorm", (long long)d);
            const mem_fill_t f[3] = {{"x", -2, 2, 0}, {"w", 0.5, 1.5, 0}, {"dy", -1, 1, 0}};
            bench_mem_graph(env, &bx, &g, label, f, bwd ? 3 : 2);
        }
    }
    const int64_t rs[3][2] = {{32, 128}, {8, 128}, {32, 64}};
    for (int k = 0; k < 3; k++)
        for (int inv = 0; inv < 2; inv++) {
            ir_graph_t g;
            ir_graph_init(&g);
            int x = ir_leaf(&g, "x", IR_INPUT, IR_BF16, 4, SH(2, 8192, rs[k][0], rs[k][1]));
            int pos = ir_leaf(&g, "pos", IR_INPUT, IR_I32, 2, SH(2, 8192));
            int64_t ip[3] = {inv, 1, 8192};
            double fp[4] = {500000.0, 8.0, 1.0, 4.0};
            int y = ir_rope(&g, x, pos, ip, fp);
            if (y >= 0)
                g.t[y].flags |= IR_FLAG_OUTPUT;
            snprintf(label, sizeof label, "rope%s [2,8192,%lld,%lld]", inv ? " inverse" : "", (long long)rs[k][0],
                     (long long)rs[k][1]);
            const mem_fill_t f[2] = {{"x", -1, 1, 0}, {"pos", 0, 0, 8192}};
            bench_mem_graph(env, &bx, &g, label, f, 2);
        }
    {
        ir_graph_t g;
        ir_graph_init(&g);
        int lg = ir_leaf(&g, "logits", IR_INPUT, IR_BF16, 2, SH(16384, 128256));
        int tg = ir_leaf(&g, "targets", IR_INPUT, IR_I32, 1, SH(16384));
        int dy = ir_leaf(&g, "dy", IR_INPUT, IR_F32, 0, NULL);
        int y = ir_node(&g, OP_XENT_BWD, 3, (const int[]){lg, tg, dy}, IP(-100), NULL);
        if (y >= 0)
            g.t[y].flags |= IR_FLAG_OUTPUT;
        const mem_fill_t f[3] = {{"logits", -8, 8, 0}, {"targets", 0, 128256, 0}, {"dy", 1e-5, 2e-5, 0}};
        bench_mem_graph(env, &bx, &g, "xent_bwd [16384,128256]", f, 3);
    }
    const int64_t cs[3][2] = {{14336, 4096}, {8192, 2048}, {1, 2048}};
    for (int k = 0; k < 3; k++)
        for (int dir = 0; dir < 2; dir++) {
            ir_dtype_t from = dir ? IR_BF16 : IR_F32, to = dir ? IR_F32 : IR_BF16;
            ir_graph_t g;
            ir_graph_init(&g);
            int x = ir_leaf(&g, "x", IR_INPUT, from, 2, SH(cs[k][0], cs[k][1]));
            int y = ir_cast(&g, x, to);
            if (y >= 0)
                g.t[y].flags |= IR_FLAG_OUTPUT;
            snprintf(label, sizeof label, "cast %s -> %s [%lld,%lld]", ir_dtype_name(from), ir_dtype_name(to),
                     (long long)cs[k][0], (long long)cs[k][1]);
            const mem_fill_t f[1] = {{"x", -1, 1, 0}};
            bench_mem_graph(env, &bx, &g, label, f, 1);
        }
    bench_close(&bx);
}

static void cases_loss(env_t *env)
{
    tcase_t c;
    const int64_t V[3] = {258, 1000, 5000};
    for (int d = 0; d < 2; d++) {
        ir_dtype_t dt = float_types[d];
        for (int k = 0; k < 3; k++) {
            int64_t N = k == 2 ? 300 : 256;
            for (int bwd = 0; bwd < 2; bwd++) {
                begin(&c, tol_of(dt), "%s N%lld V%lld, 1/5 rows ignored", bwd ? "xent_bwd" : "xent", (long long)N,
                      (long long)V[k]);
                int lg = leaf(&c, "logits", dt, DIMS(N, V[k]), -4, 4);
                int tg = leaf(&c, "targets", IR_I32, DIMS(N), 0, (double)V[k]);
                double *t = vals(&c, "targets");
                for (int64_t i = 0; i < N; i += 5)
                    t[i] = -100;
                if (!bwd) {
                    run_case(env, &c, ir_node_dt(&c.g, OP_XENT, IR_F32, 2, (const int[]){lg, tg}, IP(-100), NULL));
                    continue;
                }
                int dy = leaf(&c, "dy", IR_F32, 0, NULL, 0.001, 0.01);
                run_case(env, &c, ir_node(&c.g, OP_XENT_BWD, 3, (const int[]){lg, tg, dy}, IP(-100), NULL));
            }
        }
        /* Llama-3's vocabulary: 16 vectors a thread in batches, target in the last vector
         * and the first; an ignored row and a bad target (NaN row) in the vector path */
        begin(&c, tol_of(dt), "xent_bwd N24 V128256, ignored, bad target");
        {
            int lg2 = leaf(&c, "logits", dt, DIMS(24, 128256), -8, 8);
            int tg2 = leaf(&c, "targets", IR_I32, DIMS(24), 0, 128256);
            double *t = vals(&c, "targets");
            t[0] = 128255, t[1] = 0, t[2] = -100, t[3] = 128256, t[4] = 7;
            int dy = leaf(&c, "dy", IR_F32, 0, NULL, 0.001, 0.01);
            run_case(env, &c, ir_node(&c.g, OP_XENT_BWD, 3, (const int[]){lg2, tg2, dy}, IP(-100), NULL));
        }
        /* rows of V % 8 != 0 but V > 8 (the fallback), one row far below the others */
        begin(&c, tol_of(dt), "xent_bwd N40 V1003");
        {
            int lg2 = leaf(&c, "logits", dt, DIMS(40, 1003), -4, 4);
            int tg2 = leaf(&c, "targets", IR_I32, DIMS(40), 0, 1003);
            double *v = vals(&c, "logits");
            for (int j = 0; j < 1003; j++)
                v[5 * 1003 + j] -= 60;
            int dy = leaf(&c, "dy", IR_F32, 0, NULL, 0.5, 1);
            run_case(env, &c, ir_node(&c.g, OP_XENT_BWD, 3, (const int[]){lg2, tg2, dy}, IP(-100), NULL));
        }
        /* a kept target outside [0, V) poisons the loss: NaN on both sides */
        begin(&c, tol_of(dt), "xent N64 V258, a target of 258 (NaN)");
        int lg = leaf(&c, "logits", dt, DIMS(64, 258), -4, 4);
        int tg = leaf(&c, "targets", IR_I32, DIMS(64), 0, 258);
        vals(&c, "targets")[17] = 258;
        run_case(env, &c, ir_node_dt(&c.g, OP_XENT, IR_F32, 2, (const int[]){lg, tg}, IP(-100), NULL));
    }
}

static void cases_reduce_opt(env_t *env)
{
    tcase_t c;
    for (int d = 0; d < 2; d++) {
        ir_dtype_t dt = float_types[d];
        int x;
        begin(&c, tol_of(dt), "sum 64x384 (positive)");
        x = leaf(&c, "x", dt, DIMS(64, 384), 0, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_SUM, IR_F32, 1, &x, NULL, NULL));
        begin(&c, tol_of(dt), "mean 3x7x33 (positive)");
        x = leaf(&c, "x", dt, DIMS(3, 7, 33), 0, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_MEAN, IR_F32, 1, &x, NULL, NULL));
        begin(&c, tol_of(dt), "sumsq 1024x1024");
        x = leaf(&c, "x", dt, DIMS(1024, 1024), -1, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_SUMSQ, IR_F32, 1, &x, NULL, NULL));
        begin(&c, tol_of(dt), "sumsq 3x7x33");
        x = leaf(&c, "x", dt, DIMS(3, 7, 33), -1, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_SUMSQ, IR_F32, 1, &x, NULL, NULL));
        /* millions of elements: hundreds of slices, then the combine (an odd count: a tail) */
        begin(&c, tol_of(dt), "sumsq 3x1000x1001 (367 slices)");
        x = leaf(&c, "x", dt, DIMS(3, 1000, 1001), -1, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_SUMSQ, IR_F32, 1, &x, NULL, NULL));
        begin(&c, tol_of(dt), "sum 2000x1500 (positive, 367 slices)");
        x = leaf(&c, "x", dt, DIMS(2000, 1500), 0, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_SUM, IR_F32, 1, &x, NULL, NULL));
        begin(&c, tol_of(dt), "mean 9000x1000 (positive, 1024 slices)");
        x = leaf(&c, "x", dt, DIMS(9000, 1000), 0, 1);
        run_case(env, &c, ir_node_dt(&c.g, OP_MEAN, IR_F32, 1, &x, NULL, NULL));
        /* dropout: the mask must be the CPU's, element for element */
        const int32_t rngs[2][2] = {{12345, 7}, {0x7fffffff, -5}};
        for (int k = 0; k < 2; k++) {
            begin(&c, tol_of(dt), "dropout p0.1 8x64x64 rng %d,%d", rngs[k][0], rngs[k][1]);
            c.mask = true;
            x = leaf(&c, "x", dt, DIMS(8, 64, 64), 0.5, 1.5);
            int rng = leaf(&c, "rng", IR_I32, DIMS(2), 0, 1);
            vals(&c, "rng")[0] = rngs[k][0];
            vals(&c, "rng")[1] = rngs[k][1];
            run_case(env, &c, ir_dropout(&c.g, x, rng, 0.1, 3));
        }
        begin(&c, tol_of(dt), "acc f32 += %s 64x384", ir_dtype_name(dt));
        int buf = leaf(&c, "buf", IR_F32, DIMS(64, 384), -1, 1);
        x = leaf(&c, "x", dt, DIMS(64, 384), -1, 1);
        run_case(env, &c, ir_node(&c.g, OP_ACC, 2, (const int[]){buf, x}, NULL, NULL));
    }
    begin(&c, TOL_F32, "gnorm");
    int ss = leaf(&c, "sumsq", IR_F32, 0, NULL, 100, 1000);
    int hy = leaf(&c, "hyper", IR_F32, DIMS(IR_HYPER_COUNT), 0, 1);
    run_case(env, &c, ir_node(&c.g, OP_GNORM, 2, (const int[]){ss, hy}, NULL, NULL));
    /* AdamW with decay and an active clip, on f32 weights and on bf16 weights */
    for (int d = 0; d < 2; d++) {
        for (int clip = 0; clip < 2; clip++) {
            ir_dtype_t dt = float_types[d];
            begin(&c, tol_of(dt), "adamw %s w, decay, clip %s", ir_dtype_name(dt), clip ? "on" : "off");
            int w = leaf(&c, "w", dt, DIMS(64, 384), -1, 1);
            int g = leaf(&c, "g", IR_F32, DIMS(64, 384), -20, 20);
            int m = leaf(&c, "m", IR_F32, DIMS(64, 384), -0.01, 0.01);
            int v = leaf(&c, "v", IR_F32, DIMS(64, 384), 0, 1e-4);
            int h = leaf(&c, "hyper", IR_F32, DIMS(IR_HYPER_COUNT), 0, 1);
            int gn = leaf(&c, "gnorm", IR_F32, 0, NULL, 2.5, 2.5);
            double *hv = vals(&c, "hyper");
            hv[IR_HYPER_LR] = 1e-3;
            hv[IR_HYPER_BETA1] = 0.9;
            hv[IR_HYPER_BETA2] = 0.999;
            hv[IR_HYPER_EPS] = 1e-8;
            hv[IR_HYPER_WD] = 0.01;
            hv[IR_HYPER_BC1] = 1 - pow(0.9, 3);
            hv[IR_HYPER_BC2] = 1 - pow(0.999, 3);
            hv[IR_HYPER_INV_NTOK] = 1.0 / 512;
            hv[IR_HYPER_CLIP] = clip ? 1.0 : 0.0;
            c.also[0] = "m";
            c.also[1] = "v";
            run_case(env, &c, ir_node(&c.g, OP_ADAMW, 6, (const int[]){w, g, m, v, h, gn}, IP(1), NULL));
        }
    }
}

/* The NaN guard's slow path: both executors name the same first node that overflows. */
static void case_nonfinite(env_t *env)
{
    const char *label = "find_nonfinite names the overflowing op";
    if (env->filter && !strstr(label, env->filter))
        return;
    tcase_t c;
    begin(&c, 0, "%s", label);
    int a = leaf(&c, "a", IR_F32, DIMS(64, 64), -1, 1), b = leaf(&c, "b", IR_F32, DIMS(64, 64), -1, 1);
    int s1 = ir_scale(&c.g, a, 2.0);
    ir_set_name(&c.g, s1, "small");
    int mm = ir_matmul(&c.g, s1, b, false, false);
    ir_set_name(&c.g, mm, "product");
    int big = ir_scale(&c.g, mm, 1e38);
    ir_set_name(&c.g, big, "overflow");
    int out = ir_silu(&c.g, big);
    ir_set_name(&c.g, out, "after");
    c.g.t[out].flags |= IR_FLAG_OUTPUT;
    ft_err_t e;
    cg_module_t m;
    memset(&m, 0, sizeof m);
    rt_exec_t x[2];
    memset(x, 0, sizeof x);
    int named[2] = {-1, -1};
    char why[2400] = "";
    pass_ctx_t ctx = {0};
    if (c.g.err[0] || pass_schedule(&c.g, &ctx, &e) != 0 || pass_memplan(&c.g, &ctx, &e) != 0 ||
        cg_build(&c.g, env->arch, env->cache, &m, &e) != 0)
        snprintf(why, sizeof why, "building: %s%s", c.g.err, e.msg);
    else
        env->compiled++;
    for (int k = 0; k < (env->gpu ? 2 : 1) && !why[0]; k++) {
        int rc = k == 0 ? rt_exec_open_cpu(&x[k], &c.g, &e) : rt_exec_open_cuda_module(&x[k], &c.g, &m, &e);
        if (rc == 0)
            rc = write_inputs(&x[k], &c, &e);
        if (rc == 0)
            rc = x[k].ops->run(&x[k], IR_PH_MICRO, &e);
        if (rc == 0)
            rc = x[k].ops->find_nonfinite(&x[k], IR_PH_MICRO, &named[k], &e);
        if (rc != 0)
            snprintf(why, sizeof why, "%s: %s", k ? "gpu" : "cpu", e.msg);
    }
    int want = ir_find(&c.g, "overflow");
    bool ok = !why[0] && named[0] == want && (!env->gpu || named[1] == want);
    if (!why[0] && !ok)
        snprintf(why, sizeof why, "cpu named '%s', gpu '%s'", named[0] >= 0 ? c.g.t[named[0]].name : "-",
                 named[1] >= 0 ? c.g.t[named[1]].name : "-");
    printf("%-46s %-9s %-18s %-8s %10s %10s %8s  %s%s%s\n", label, "f32", "[64,64]", "kernel", "-", "-", "-",
           !env->gpu && ok ? "compiled" : ok ? "ok" : "FAIL", why[0] ? "  " : "", why);
    if (env->gpu || !ok)
        ok ? env->pass++ : env->fail++;
    for (int k = 0; k < 2; k++)
        if (x[k].ops)
            rt_exec_close(&x[k]);
    cg_module_free(&m);
    end_case(&c);
}

/* The GPU's seeded initialiser must store the host's values bit for bit (the CPU and GPU
 * executors then start from the same weights), for each kind and float storage type. */
static void case_init(env_t *env)
{
    static const struct {
        plan_init_t kind;
        double param;
        const char *name;
    } kinds[] = {{PLAN_INIT_NORMAL, 0.02, "normal"}, {PLAN_INIT_UNIFORM, 0.125, "uniform"}, {PLAN_INIT_ONES, 0, "ones"}};
    static const ir_dtype_t dts[3] = {IR_F32, IR_BF16, IR_F16};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (int d = 0; d < 3; d++) {
            char label[96];
            snprintf(label, sizeof label, "init_random %s equals the host's", kinds[k].name);
            if (env->filter && !strstr(label, env->filter))
                continue;
            tcase_t c;
            begin(&c, 0, "%s", label);
            int w = leaf(&c, "w", dts[d], DIMS(1000, 333), 0, 0);
            c.g.t[w].flags |= IR_FLAG_OUTPUT;
            int sc = ir_scale(&c.g, w, 2.0); /* a module with kernels carries the init kernel */
            c.g.t[sc].flags |= IR_FLAG_OUTPUT;
            int64_t n = 1000 * 333;
            ft_err_t e;
            cg_module_t m;
            memset(&m, 0, sizeof m);
            rt_exec_t x;
            memset(&x, 0, sizeof x);
            char why[2400] = "";
            pass_ctx_t ctx = {0};
            size_t nb = (size_t)ir_nbytes(&c.g.t[w]);
            unsigned char *want = ft_xmalloc(nb), *got = ft_xcalloc(1, nb);
            double *v = ft_xmalloc((size_t)n * sizeof *v);
            uint64_t seed = rt_init_seed(7, "model.layers.0.mlp.up_proj.weight");
            for (int64_t i = 0; i < n; i++)
                v[i] = rt_init_value(kinds[k].kind, kinds[k].param, seed, i);
            rt_store_f64(dts[d], v, n, want);
            if (c.g.err[0] || pass_schedule(&c.g, &ctx, &e) != 0 || pass_memplan(&c.g, &ctx, &e) != 0 ||
                cg_build(&c.g, env->arch, env->cache, &m, &e) != 0)
                snprintf(why, sizeof why, "building: %s%s", c.g.err, e.msg);
            else if (!memmem(m.image, m.image_len, "ftk_init_random", 15))
                snprintf(why, sizeof why, "the cubin has no ftk_init_random (the host would initialise instead)");
            else
                env->compiled++;
            if (env->gpu && !why[0]) {
                w = ir_find(&c.g, "w");
                if (rt_exec_open_cuda_module(&x, &c.g, &m, &e) != 0 || rt_exec_cuda_fill(&x, 0xff, &e) != 0 ||
                    x.ops->init_random(&x, w, kinds[k].kind, kinds[k].param, seed, &e) != 0 ||
                    x.ops->read(&x, w, got, &e) != 0)
                    snprintf(why, sizeof why, "gpu: %s", e.msg);
                else if (memcmp(got, want, nb) != 0)
                    snprintf(why, sizeof why, "values differ from the host's");
            }
            bool ok = !why[0];
            printf("%-46s %-9s %-18s %-8s %10s %10s %8s  %s%s%s\n", label, ir_dtype_name(dts[d]), "[1000,333]",
                   "kernel", "-", "-", "exact", !env->gpu && ok ? "compiled" : ok ? "ok" : "FAIL", why[0] ? "  " : "",
                   why);
            if (env->gpu || !ok)
                ok ? env->pass++ : env->fail++;
            if (x.ops)
                rt_exec_close(&x);
            cg_module_free(&m);
            free(want);
            free(got);
            free(v);
            end_case(&c);
        }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    env_t env = {.arch = NULL, .cache = NULL, .filter = NULL};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--arch") == 0 && i + 1 < argc)
            env.arch = argv[++i];
        else if (strcmp(argv[i], "--cache") == 0 && i + 1 < argc)
            env.cache = argv[++i];
        else if (strcmp(argv[i], "--old-attn") == 0 && i + 1 < argc)
            env.old_attn = argv[++i];
        else if (argv[i][0] != '-' && !env.filter)
            env.filter = argv[i];
        else {
            fprintf(stderr, "usage: test_kernels [--arch sm_XY] [--cache DIR] [--old-attn FILE] [FILTER]\n");
            return 2;
        }
    }
    char why[256] = "";
    rt_gpu_info_t gi;
    memset(&gi, 0, sizeof gi);
    ft_err_t e;
    int dev = 0;
    env.gpu = rt_gpu_count(why, sizeof why) > 0 && rt_gpu_pick(&dev, &e) == 0 && rt_gpu_info(dev, &gi, &e) == 0;
    if (env.gpu) {
        if (env.arch && strcmp(env.arch, gi.arch) != 0) {
            fprintf(stderr, "test_kernels: --arch %s but GPU %d (%s) is %s\n", env.arch, dev, gi.name, gi.arch);
            return 2;
        }
        env.arch = gi.arch;
        printf("GPU %d: %s, %s, %d SMs\n", dev, gi.name, gi.arch, gi.sms);
    } else {
        if (!env.arch)
            env.arch = "sm_90";
        printf("no usable GPU (%s): compiling every case for %s and running the CPU side only\n", why, env.arch);
    }
    printf("%-46s %-9s %-18s %-8s %10s %10s %8s  %s\n", "case", "dtype", "out shape", "runs on", "max abs", "rel err",
           "tol", "result");
    cases_matmul(&env);
    cases_elementwise(&env);
    cases_movement(&env);
    cases_norm_rope(&env);
    cases_attention(&env);
    cases_loss(&env);
    cases_reduce_opt(&env);
    case_nonfinite(&env);
    case_init(&env);
    bench_attention(&env);
    bench_memory(&env);
    if (!env.gpu) {
        printf("no GPU: %d cases compiled, %d failed before reaching the GPU\n", env.compiled, env.fail);
        printf("%d passed, %d failed\n", 0, env.fail);
        return env.fail ? 1 : 0;
    }
    printf("%d passed, %d failed\n", env.pass, env.fail);
    return env.fail ? 1 : 0;
}
