/* ftc.c — the compiler driver: `ftc compile` (spec → plan.bin) and `ftc inspect`. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codegen/codegen.h"
#include "frontend/frontend.h"
#include "models/models.h"
#include "passes/passes.h"
#include "runtime/plan.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"

static void usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  ftc compile SPEC.fbs -o PLAN.bin [--target cpu|sm_80|sm_90|sm_90a] [--emit-cuda FILE.cu]\n"
               "              [-s block.key=value]... [--dump-after PASS|all]\n"
               "  ftc inspect PLAN.bin [--graph] [--memory] [--kernels]\n"
               "  ftc inspect FILE.safetensors|MODEL_DIR     (lists the tensors)\n"
               "  ftc merge BASE_DIR ADAPTER_DIR -o OUT_DIR  (folds a PEFT LoRA adapter into the base)\n"
               "passes: build, autodiff, optimizer, dce, recompute, schedule, memplan\n"
               "GPU targets compile their kernels with NVRTC; compiled kernels are cached in $FTC_CACHE_DIR\n"
               "(default ~/.cache/ftc; FTC_CACHE_DIR= with no value turns the cache off).\n");
}

static int die(const char *what, const ft_err_t *e)
{
    fprintf(stderr, "ftc: %s%s%s\n", what, what[0] ? ": " : "", e->msg);
    return 1;
}

typedef struct {
    const char *spec, *out, *target, *dump_after, *emit_cuda;
    const char *overrides[128];
    int noverrides;
} compile_args_t;

static int parse_compile_args(int argc, char **argv, compile_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->target = "cpu";
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        bool has_next = i + 1 < argc;
        if (strcmp(s, "-o") == 0 && has_next)
            a->out = argv[++i];
        else if (strcmp(s, "--target") == 0 && has_next)
            a->target = argv[++i];
        else if (strcmp(s, "--emit-cuda") == 0 && has_next)
            a->emit_cuda = argv[++i];
        else if (strcmp(s, "-s") == 0 && has_next && a->noverrides < 128)
            a->overrides[a->noverrides++] = argv[++i];
        else if (strncmp(s, "--dump-after=", 13) == 0)
            a->dump_after = s + 13;
        else if (strcmp(s, "--dump-after") == 0 && has_next)
            a->dump_after = argv[++i];
        else if (s[0] != '-' && !a->spec)
            a->spec = s;
        else {
            fprintf(stderr, "ftc compile: unexpected argument '%s'\n", s);
            return -1;
        }
    }
    if (!a->spec || !a->out) {
        fprintf(stderr, "ftc compile: need a spec file and -o PLAN.bin\n");
        return -1;
    }
    return 0;
}

static int load_config(const compile_args_t *a, ft_config_t *cfg, ft_err_t *e)
{
    if (fe_parse_file(a->spec, cfg, e) != 0)
        return -1;
    char from[FT_PATH_MAX];
    snprintf(from, sizeof from, "%s", cfg->from);
    for (int i = 0; i < a->noverrides; i++)
        if (fe_override(cfg, a->overrides[i], e) != 0)
            return -1;
    /* a new model folder brings its own config.json */
    if (strcmp(from, cfg->from) != 0 && cfg->from[0] && fe_read_hf_config(cfg->from, cfg, e) != 0)
        return -1;
    return fe_validate(cfg, e);
}

/* Manifest entries name their tensors; passes renumbered them, so look them up now. */
static int resolve_manifest(plan_t *p, model_manifest_t *m, ft_err_t *e)
{
    p->w = m->w;
    p->nw = m->n;
    m->w = NULL;
    m->n = m->cap = 0;
    for (int i = 0; i < p->nw; i++) {
        p->w[i].tensor = ir_find(&p->g, p->w[i].key);
        if (p->w[i].tensor < 0)
            return ft_fail(e, "weight '%s' vanished from the graph", p->w[i].key);
    }
    return 0;
}

/* The compile cache folder: $FTC_CACHE_DIR (empty: no cache), else ~/.cache/ftc. */
static const char *cache_dir(char *buf, size_t cap)
{
    const char *d = getenv("FTC_CACHE_DIR");
    if (d)
        return d[0] ? d : NULL;
    const char *home = getenv("HOME");
    if (!home || !home[0])
        return NULL;
    snprintf(buf, cap, "%s/.cache/ftc", home);
    return buf;
}

/* The GPU half of compile: the generated source where asked, and for a GPU target the
 * kernel module (NVRTC, through the cache). */
static int codegen(const compile_args_t *a, plan_t *p, bool gpu, ft_err_t *e)
{
    if (a->emit_cuda) {
        char *src = cg_emit_source(&p->g, a->target, e);
        if (!src)
            return -1;
        int rc = ft_write_file_atomic(a->emit_cuda, src, strlen(src), e);
        free(src);
        if (rc != 0)
            return -1;
    }
    if (!gpu)
        return 0;
    char buf[FT_PATH_MAX];
    double t0 = ft_now();
    if (cg_build(&p->g, a->target, cache_dir(buf, sizeof buf), &p->cuda, e) != 0)
        return -1;
    p->has_cuda = true;
    fprintf(stderr, "ftc: %d kernels for %s, cubin %.1f KiB (%.2f s)\n", p->cuda.nnames, p->cuda.target,
            (double)p->cuda.image_len / 1024.0, ft_now() - t0);
    return 0;
}

static int compile(int argc, char **argv)
{
    compile_args_t a;
    if (parse_compile_args(argc, argv, &a) != 0) {
        usage(stderr);
        return 2;
    }
    bool gpu = strcmp(a.target, "cpu") != 0;
    if (gpu && strncmp(a.target, "sm_", 3) != 0) {
        fprintf(stderr, "ftc: target '%s' is not one ftc compiles for (cpu, or a GPU architecture such as sm_80, "
                        "sm_90, sm_90a)\n", a.target);
        return 1;
    }
    plan_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.target, sizeof p.target, "%s", a.target);
    ft_err_t e;
    if (load_config(&a, &p.cfg, &e) != 0)
        return die("", &e);
    ir_graph_init(&p.g);
    model_manifest_t m = {0};
    int rc = model_build(&p.cfg, &p.g, &m, &e);
    char note[256] = "";
    pass_ctx_t ctx = {.cfg = &p.cfg, .target = a.target, .dump_after = a.dump_after, .dump = stdout, .note = note, .note_cap = sizeof note};
    if (rc == 0)
        rc = pass_run_all(&p.g, &ctx, &e);
    if (rc == 0 && note[0])
        fprintf(stderr, "ftc: %s\n", note);
    if (rc == 0)
        rc = resolve_manifest(&p, &m, &e);
    if (rc == 0)
        rc = codegen(&a, &p, gpu, &e);
    if (rc == 0)
        rc = plan_write(&p, a.out, &e);
    model_manifest_free(&m);
    if (rc != 0) {
        plan_free(&p);
        return die("compile", &e);
    }
    fprintf(stderr, "ftc: wrote %s: %d tensors, %d scheduled nodes, arena %.2f MiB, %.3g FLOP per step (%.3g "
                    "without recompute)\n",
            a.out, p.g.n, p.g.nsched, (double)p.g.arena_bytes / 1048576.0,
            ir_step_flops(&p.g, p.cfg.grad_accum, true), ir_step_flops(&p.g, p.cfg.grad_accum, false));
    plan_free(&p);
    return 0;
}

/* ---- inspect ---- */

static void print_size(FILE *f, const char *what, int64_t bytes, int64_t total)
{
    fprintf(f, "  %-13s %12lld bytes  %9.3f MiB  %5.1f%%\n", what, (long long)bytes, (double)bytes / 1048576.0,
            total > 0 ? 100.0 * (double)bytes / (double)total : 0.0);
}

static void inspect_summary(const plan_t *p)
{
    const ft_config_t *c = &p->cfg;
    int64_t trainable = 0, frozen = 0;
    for (int i = 0; i < p->g.n; i++) {
        if (p->g.t[i].role == IR_TRAINABLE)
            trainable += ir_numel(&p->g.t[i]);
        if (p->g.t[i].role == IR_FROZEN)
            frozen += ir_numel(&p->g.t[i]);
    }
    printf("plan: target %s, model %s (%lld layers, hidden %lld, vocab %lld), tuner %s\n", p->target, c->family,
           (long long)c->layers, (long long)c->hidden, (long long)c->vocab,
           c->tuner == FT_TUNER_LORA ? "lora" : "full");
    printf("parameters: %lld trainable, %lld frozen\n", (long long)trainable, (long long)frozen);
    printf("batch: %lld x %lld tokens, %lld micro-batches per step\n", (long long)c->micro_batch,
           (long long)c->seq_len, (long long)c->grad_accum);
    double f0, b0, f1, b1;
    ir_cost(&p->g, IR_PH_MICRO, &f0, &b0);
    ir_cost(&p->g, IR_PH_OPT, &f1, &b1);
    printf("FLOPs per step: %.6g (%.6g per micro-batch, %.6g optimizer)\n", ir_step_flops(&p->g, c->grad_accum, true),
           f0, f1);
    printf("model FLOPs per step: %.6g (without the recompute pass's clones; ftrun's MFU)\n",
           ir_step_flops(&p->g, c->grad_accum, false));
    pass_mem_summary_t s;
    pass_mem_summary(&p->g, &s);
    printf("peak memory: %lld bytes (%.3f MiB), one arena\n", (long long)s.total, (double)s.total / 1048576.0);
    print_size(stdout, "weights", s.weights, s.total);
    print_size(stdout, "gradients", s.grads, s.total);
    print_size(stdout, "optimizer", s.optstate, s.total);
    print_size(stdout, "inputs", s.inputs, s.total);
    print_size(stdout, "activations", s.activations, s.total);
    print_size(stdout, "workspace", s.workspace, s.total);
}

static void inspect_memory(const plan_t *p)
{
    const ir_graph_t *g = &p->g;
    int *first = ft_xmalloc((size_t)g->n * sizeof *first);
    int *last = ft_xmalloc((size_t)g->n * sizeof *last);
    pass_lifetimes(g, first, last);
    printf("%-6s %-12s %12s %12s %6s %6s  %s\n", "id", "role", "offset", "bytes", "first", "last", "name");
    for (int i = 0; i < g->n; i++) {
        const ir_tensor_t *t = &g->t[i];
        bool alias = ir_in_place(t);
        printf("%-6d %-12s %12lld %12lld %6d %6d  %s%s\n", i, ir_role_name(t->role), (long long)t->offset,
               (long long)ir_nbytes(t), first[i], last[i], t->name, alias ? " (shares its input's bytes)" : "");
    }
    free(first);
    free(last);
}

/* One line per tensor: name, dtype, shape, in name order. */
static int inspect_weights(const char *path)
{
    st_model_t m;
    ft_err_t e;
    if (st_open(&m, path, &e) != 0)
        return die("", &e);
    for (int i = 0; i < m.ntensors; i++) {
        const st_tensor_t *t = &m.tensors[i];
        printf("%s %s [", t->name, st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
        printf("]\n");
    }
    st_close(&m);
    return 0;
}

static int merge(int argc, char **argv)
{
    const char *dirs[2] = {NULL, NULL}, *out = NULL;
    int nd = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (argv[i][0] != '-' && nd < 2)
            dirs[nd++] = argv[i];
        else {
            fprintf(stderr, "ftc merge: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (nd != 2 || !out) {
        usage(stderr);
        return 2;
    }
    ft_err_t e;
    if (rt_merge_lora(dirs[0], dirs[1], out, &e) != 0)
        return die("merge", &e);
    fprintf(stderr, "ftc: merged %s into %s, written to %s\n", dirs[1], dirs[0], out);
    return 0;
}

/* The kernel module: entry points, then one launch record per scheduled node. */
static void inspect_kernels(const plan_t *p)
{
    if (!p->has_cuda) {
        printf("kernels: none (target %s runs the CPU reference executor)\n", p->target);
        return;
    }
    const cg_module_t *m = &p->cuda;
    int count[CG_KIND_COUNT] = {0};
    for (int k = 0; k < m->nlaunch; k++)
        count[m->launch[k].kind]++;
    printf("kernels: target %s, cubin %zu bytes, %d entry points\n", m->target, m->image_len, m->nnames);
    for (int i = 0; i < m->nnames; i++) {
        int uses = 0;
        for (int k = 0; k < m->nlaunch; k++)
            uses += m->launch[k].kind == CG_KERNEL && (m->launch[k].kernel == i || m->launch[k].kernel2 == i);
        printf("  %3d  %-44s %4d launch%s\n", i, m->names[i], uses, uses == 1 ? "" : "es");
    }
    printf("launches: %d (%d kernels, %d cuBLASLt matmuls, %d aliases that run nothing)\n", m->nlaunch,
           count[CG_KERNEL], count[CG_MATMUL], count[CG_NOP]);
    printf("  %5s %6s %-14s %-7s %-34s %-18s %-12s %6s  %s\n", "pos", "node", "op", "kind", "kernel, dtypes", "grid",
           "block", "smem", "name");
    static const char *const kinds[CG_KIND_COUNT] = {"nop", "kernel", "matmul"};
    for (int k = 0; k < m->nlaunch; k++) {
        const cg_launch_t *l = &m->launch[k];
        const ir_tensor_t *t = &p->g.t[l->node];
        char grid[48] = "-", block[48] = "-", smem[16] = "-";
        const char *kname = "";
        if (l->kind == CG_KERNEL) {
            snprintf(grid, sizeof grid, "%u,%u,%u", l->grid[0], l->grid[1], l->grid[2]);
            snprintf(block, sizeof block, "%u,%u,%u", l->block[0], l->block[1], l->block[2]);
            snprintf(smem, sizeof smem, "%u", l->smem);
            kname = m->names[l->kernel];
        }
        /* entry names are "ftk_<op>_<dtypes>": the op has its own column, show index and dtypes */
        char kcol[CG_NAME_MAX + 16] = "-";
        size_t oplen = strlen(ir_ops[t->op]->name);
        if (l->kind == CG_KERNEL)
            snprintf(kcol, sizeof kcol, "%3d %s", l->kernel, strlen(kname) > 5 + oplen ? kname + 5 + oplen : kname);
        printf("  %5d %6d %-14s %-7s %-34s %-18s %-12s %6s  %s\n", k, l->node, ir_ops[t->op]->name, kinds[l->kind],
               kcol, grid, block, smem, t->name);
        if (l->kind != CG_KERNEL || l->kernel2 < 0 || l->kernel2 >= m->nnames)
            continue;
        /* a two-stage node: its second kernel, and the scratch bytes the pair uses */
        const char *k2 = m->names[l->kernel2];
        snprintf(kcol, sizeof kcol, "%3d %s", l->kernel2, strlen(k2) > 5 + oplen ? k2 + 5 + oplen : k2);
        snprintf(grid, sizeof grid, "%u,%u,%u", l->grid2[0], l->grid2[1], l->grid2[2]);
        snprintf(block, sizeof block, "%u,%u,%u", l->block2[0], l->block2[1], l->block2[2]);
        snprintf(smem, sizeof smem, "%u", l->smem2);
        printf("  %5s %6s %-14s %-7s %-34s %-18s %-12s %6s  (scratch %llu bytes)\n", "", "", "", "then", kcol, grid,
               block, smem, (unsigned long long)l->scratch);
    }
}

static int inspect(int argc, char **argv)
{
    const char *path = NULL;
    bool graph = false, memory = false, kernels = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--graph") == 0)
            graph = true;
        else if (strcmp(argv[i], "--memory") == 0)
            memory = true;
        else if (strcmp(argv[i], "--kernels") == 0)
            kernels = true;
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            fprintf(stderr, "ftc inspect: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    size_t plen = strlen(path);
    struct stat sb;
    if ((plen > 12 && strcmp(path + plen - 12, ".safetensors") == 0) || (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)))
        return inspect_weights(path);
    plan_t p;
    ft_err_t e;
    if (plan_read(path, &p, &e) != 0)
        return die("", &e);
    inspect_summary(&p);
    if (graph)
        ir_print(&p.g, stdout);
    if (memory)
        inspect_memory(&p);
    if (kernels)
        inspect_kernels(&p);
    plan_free(&p);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "compile") == 0)
        return compile(argc, argv);
    if (strcmp(argv[1], "inspect") == 0)
        return inspect(argc, argv);
    if (strcmp(argv[1], "merge") == 0)
        return merge(argc, argv);
    fprintf(stderr, "ftc: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
