/* test_codegen.c — the GPU code generator, without a GPU: the bundled tiny Llama specs (LoRA
 * and full fine-tuning, f32 and bf16) compiled in-process for sm_90 and sm_80 give a cubin
 * whose entry points are exactly the module's names and one launch record per scheduled
 * node of the right kind and geometry; a hand-built graph with every op that has a kernel
 * (f32 and bf16, i32 where the op allows, a few in f16) compiles too, so a template error
 * cannot hide behind the ops the models happen to use; the source is byte-identical across
 * emits; the compile cache answers the second build with the same cubin in well under
 * half a second and heals a damaged entry; NVRTC failures carry the compile log and point
 * into the template file; shapes and dtypes the kernels cannot take are refused clearly;
 * and a compiled module survives the plan file. Kernel numerics are checked on a GPU by
 * tests/gpu/test_kernels.c. Without the CUDA toolkit only the NVRTC-free checks run. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "codegen/cg_internal.h"
#include "common/common.h"
#include "frontend/frontend.h"
#include "models/models.h"
#include "passes/passes.h"
#include "runtime/plan.h"
#include "tests/check.h"
#include "tests/runutil.h"

static char cache[64];

/* ---- graphs ---- */

static int compile_spec(const char *spec, const char *dtype, ft_config_t *c, ir_graph_t *g)
{
    ft_err_t e;
    char ov[64];
    snprintf(ov, sizeof ov, "train.dtype=%s", dtype);
    if (fe_parse_file(spec, c, &e) != 0 || fe_override(c, ov, &e) != 0 || fe_validate(c, &e) != 0) {
        fprintf(stderr, "%s: %s\n", spec, e.msg);
        return -1;
    }
    ir_graph_init(g);
    model_manifest_t m = {0};
    pass_ctx_t ctx = {.cfg = c};
    int rc = model_build(c, g, &m, &e) == 0 && pass_run_all(g, &ctx, &e) == 0 ? 0 : -1;
    if (rc)
        fprintf(stderr, "%s: %s\n", spec, e.msg);
    model_manifest_free(&m);
    return rc;
}

/* Schedules every non-leaf node in id order (what the pass pipeline would, minus the rest). */
static void schedule_all(ir_graph_t *g)
{
    free(g->sched);
    g->sched = ft_xmalloc((size_t)(g->n ? g->n : 1) * sizeof *g->sched);
    g->nsched = 0;
    for (int i = 0; i < g->n; i++)
        if (g->t[i].op != OP_LEAF)
            g->sched[g->nsched++] = i;
}

static int in(ir_graph_t *g, ir_dtype_t dt, int ndim, const int64_t *shape)
{
    char name[32];
    snprintf(name, sizeof name, "in%d", g->n);
    return ir_leaf(g, name, IR_INPUT, dt, ndim, shape);
}

static int node(ir_graph_t *g, ir_op_t op, ir_dtype_t dt, int nsrc, const int *src, const int64_t *ip3,
                const double *fp2)
{
    int64_t ip[IR_MAX_PARAMS] = {0};
    double fp[IR_MAX_PARAMS] = {0};
    if (ip3)
        memcpy(ip, ip3, 4 * sizeof *ip);
    if (fp2)
        memcpy(fp, fp2, 2 * sizeof *fp);
    return ir_node_dt(g, op, dt, nsrc, src, ip, fp);
}

/* Every op with a kernel, with tensors of dtype dt (float), plus the i32 and mixed-dtype
 * forms the models use (casts, f32 accumulators and optimizer state). */
static void add_all_ops(ir_graph_t *g, ir_dtype_t dt)
{
    const int64_t s2[2] = {8, 64}, d1[1] = {64}, q4[4] = {2, 16, 4, 32}, kv4[4] = {2, 16, 2, 32}, tok[2] = {2, 16};
    const int64_t tab2[2] = {50, 64}, lg2[2] = {32, 50}, n1[1] = {32}, hy1[1] = {IR_HYPER_COUNT}, two[1] = {2};
    const int64_t st4[4] = {2, 16, 4, 2};
    int x = in(g, dt, 2, s2), y = in(g, dt, 2, s2), w = in(g, dt, 1, d1);
    int q = in(g, dt, 4, q4), k = in(g, dt, 4, kv4), v = in(g, dt, 4, kv4), stats = in(g, IR_F32, 4, st4);
    int pos = in(g, IR_I32, 2, tok), doc = in(g, IR_I32, 2, tok), ids = in(g, IR_I32, 2, tok);
    int tab = in(g, dt, 2, tab2), logits = in(g, dt, 2, lg2), targets = in(g, IR_I32, 1, n1);
    int hyper = in(g, IR_F32, 1, hy1), rng = in(g, IR_I32, 1, two);
    int wf = in(g, IR_F32, 2, s2), gf = in(g, IR_F32, 2, s2), mf = in(g, IR_F32, 2, s2), vf = in(g, IR_F32, 2, s2);

    ir_add(g, x, y);
    ir_mul(g, x, y);
    ir_scale(g, x, 0.5);
    ir_cast(g, x, IR_F32);
    ir_cast(g, ir_cast(g, x, IR_I32), dt);
    ir_silu(g, x);
    node(g, OP_SILU_BWD, dt, 2, (int[]){x, y}, NULL, NULL);
    ir_swiglu(g, x, y);
    node(g, OP_SWIGLU_BWD_G, dt, 3, (int[]){x, y, y}, NULL, NULL);
    node(g, OP_SWIGLU_BWD_U, dt, 2, (int[]){x, y}, NULL, NULL);
    int total = ir_sum(g, x);
    ir_fill(g, -1, 1.5, 2, s2, dt);
    ir_fill(g, total, 2.0, 2, s2, dt);
    ir_fill(g, -1, 3.0, 2, s2, IR_I32);
    int emb = ir_embed(g, tab, ids);
    node(g, OP_EMBED_BWD, dt, 2, (int[]){ids, emb}, (int64_t[]){50, 0, 0, 0}, NULL);
    ir_permute(g, q, (int64_t[IR_MAX_PARAMS]){0, 2, 1, 3});
    ir_permute(g, ids, (int64_t[IR_MAX_PARAMS]){1, 0});
    int sl = ir_slice(g, x, 1, 8, 16);
    node(g, OP_SLICE_BWD, dt, 1, &sl, (int64_t[]){1, 8, 16, 64}, NULL);
    ir_slice(g, ids, 1, 2, 5);
    ir_concat(g, x, y, 0);
    ir_concat(g, ids, ids, 1);
    ir_rmsnorm(g, x, w, 1e-5);
    node(g, OP_RMSNORM_BWD_X, dt, 3, (int[]){x, w, y}, NULL, (double[]){1e-5, 0});
    node(g, OP_RMSNORM_BWD_W, dt, 2, (int[]){x, y}, NULL, (double[]){1e-5, 0});
    ir_rope(g, q, pos, (int64_t[3]){0, 1, 64}, (double[4]){5e5, 8, 1, 4});
    ir_attn(g, q, k, v, doc, 0.17);
    node(g, OP_ATTN_LSE, IR_F32, 3, (int[]){q, k, doc}, NULL, (double[]){0.17, 0});
    node(g, OP_ROWSUM, IR_F32, 1, &q, NULL, NULL);
    for (int64_t which = 0; which < 3; which++)
        node(g, OP_ATTN_BWD, dt, 6, (int[]){q, k, v, doc, q, stats}, (int64_t[]){which, 0, 0, 0}, (double[]){0.17, 0});
    int loss = ir_xent(g, logits, targets, -100);
    node(g, OP_XENT_BWD, dt, 3, (int[]){logits, targets, loss}, (int64_t[]){-100, 0, 0, 0}, NULL);
    ir_mean(g, x);
    ir_dropout(g, x, rng, 0.1, 7);
    node(g, OP_ACC, IR_F32, 2, (int[]){gf, x}, NULL, NULL);
    int ss = node(g, OP_SUMSQ, IR_F32, 1, &gf, NULL, NULL);
    int gn = node(g, OP_GNORM, IR_F32, 2, (int[]){ss, hyper}, NULL, NULL);
    node(g, OP_ADAMW, IR_F32, 6, (int[]){wf, gf, mf, vf, hyper, gn}, (int64_t[]){1, 0, 0, 0}, NULL);
}

/* f16 storage through the templates, without repeating every op (compile time). */
static void add_f16_ops(ir_graph_t *g)
{
    const int64_t s2[2] = {8, 64}, d1[1] = {64}, q4[4] = {2, 16, 4, 32}, tok[2] = {2, 16};
    const int64_t st4[4] = {2, 16, 4, 2};
    int x = in(g, IR_F16, 2, s2), w = in(g, IR_F16, 1, d1), q = in(g, IR_F16, 4, q4), doc = in(g, IR_I32, 2, tok);
    int stats = in(g, IR_F32, 4, st4);
    ir_cast(g, ir_cast(g, x, IR_I32), IR_F16);
    ir_fill(g, ir_sum(g, x), 2.0, 2, s2, IR_F16);
    ir_rmsnorm(g, ir_add(g, x, x), w, 1e-5);
    node(g, OP_ATTN_BWD, IR_F16, 6, (int[]){q, q, q, doc, q, stats}, NULL, (double[]){0.17, 0});
}

/* ---- checks on a module ---- */

static bool image_has(const cg_module_t *m, const char *name)
{
    size_t n = strlen(name) + 1; /* with its NUL: a whole symbol, not a prefix */
    for (size_t i = 0; i + n <= m->image_len; i++)
        if (memcmp(m->image + i, name, n) == 0)
            return true;
    return false;
}

static int64_t last_dim(const ir_tensor_t *t) { return t->shape[t->ndim - 1]; }

/* The geometry the templates' `launch:` lines promise, for a few shapes worth pinning. */
static void check_geometry(const ir_graph_t *g, const cg_launch_t *l, const char *what)
{
    const ir_tensor_t *t = &g->t[l->node], *x = &g->t[t->src[0]];
    unsigned threads = l->block[0] * l->block[1] * l->block[2];
    switch (t->op) {
    case OP_RMSNORM:
    case OP_RMSNORM_BWD_X: { /* 256 threads, a team of W warps per row: the fewest (a power of two, <= 8)
                              * whose lanes hold the row at 256 bytes of x (and dy) a lane */
        int64_t d = last_dim(x), bytes = (int64_t)ir_dtype_size(x->dtype), w = 1;
        if (t->op == OP_RMSNORM_BWD_X)
            bytes += (int64_t)ir_dtype_size(g->t[t->src[2]].dtype);
        while (w < 8 && 32 * w * (256 / (8 * bytes)) < (d + 7) / 8)
            w *= 2;
        int64_t teams = 8 / w, rows = ir_numel(x) / d;
        CHECK_MSG(threads == 256 && l->grid[0] == (unsigned)((rows + teams - 1) / teams) && l->grid[1] == 1,
                  "%s: %s grid %u block %u is not %lld rows a block", what, t->name, l->grid[0], threads,
                  (long long)teams);
        break;
    }
    case OP_XENT_BWD:
        CHECK_MSG(l->grid[0] == (unsigned)(ir_numel(x) / last_dim(x)) && l->grid[1] == 1,
                  "%s: %s grid %u is not one block per row", what, t->name, l->grid[0]);
        break;
    case OP_XENT: /* a block per row, then one block of 1024 over the rows' doubles */
        CHECK_MSG(l->grid[0] == (unsigned)x->shape[0] && l->kernel2 >= 0 && l->grid2[0] == 1 && l->block2[0] == 1024 &&
                      l->scratch == (uint64_t)(FTK_SCRATCH_HEAD + 8 * x->shape[0]),
                  "%s: %s grid %u, second grid %u block %u, scratch %llu", what, t->name, l->grid[0], l->grid2[0],
                  l->block2[0], (unsigned long long)l->scratch);
        break;
    case OP_SUMSQ:
    case OP_SUM:
    case OP_MEAN: { /* slices of at least 32 elements a thread, at most 1024 of them; one block adds them */
        int64_t parts = (ir_numel(x) + 256 * 32 - 1) / (256 * 32);
        parts = parts < 1 ? 1 : parts > 1024 ? 1024 : parts;
        CHECK_MSG(threads == 256 && l->grid[0] == (unsigned)parts && l->kernel2 >= 0 && l->grid2[0] == 1 &&
                      l->block2[0] == 256 && l->scratch == (uint64_t)(FTK_SCRATCH_HEAD + 8 * parts),
                  "%s: %s grid %u, second grid %u, scratch %llu", what, t->name, l->grid[0], l->grid2[0],
                  (unsigned long long)l->scratch);
        break;
    }
    case OP_RMSNORM_BWD_W: { /* chunks of at least 32 rows (at most 512), then a thread per column */
        int64_t d = last_dim(x), rows = ir_numel(x) / d, chunks = (rows + 31) / 32;
        chunks = chunks > 512 ? 512 : chunks;
        CHECK_MSG(l->grid[0] == (unsigned)chunks && threads >= 32 && l->kernel2 >= 0 &&
                      l->grid2[0] == (unsigned)((d + 255) / 256) && l->block2[0] == 256 &&
                      l->scratch == (uint64_t)(FTK_SCRATCH_HEAD + 4 * chunks * d),
                  "%s: %s grid %u, second grid %u, scratch %llu", what, t->name, l->grid[0], l->grid2[0],
                  (unsigned long long)l->scratch);
        break;
    }
    case OP_EMBED_BWD: /* one block indexes the ids, then a block per vocabulary row */
        CHECK_MSG(l->grid[0] == 1 && threads == 1024 && l->kernel2 >= 0 && l->grid2[0] == (unsigned)t->shape[0] &&
                      l->block2[0] == 256 &&
                      l->scratch == (uint64_t)(FTK_SCRATCH_HEAD + 4 * (t->shape[0] + ir_numel(x))),
                  "%s: %s grid %u, second grid %u, scratch %llu", what, t->name, l->grid[0], l->grid2[0],
                  (unsigned long long)l->scratch);
        break;
    case OP_ATTN:
    case OP_ATTN_LSE:
    case OP_ATTN_BWD: {
        /* tiles of 32 rows (query rows; keys for dk and dv), 4 warps, shared tiles of pitch
         * round_up(Dh, 4) + 4 floats: attn 3 of them, attn_lse 2, attn_bwd 4 plus lse and delta
         * (the tensor-core path, bf16 at Dh 64 and 128, is checked by test_attn_launch) */
        const ir_tensor_t *k = &g->t[t->src[1]];
        int64_t dh = x->shape[3], pitch = (dh + 3) / 4 * 4 + 4;
        int64_t ntile = t->op == OP_ATTN ? 3 : t->op == OP_ATTN_LSE ? 2 : 4;
        int64_t words = ntile * 32 * pitch + 64 + (t->op == OP_ATTN_BWD ? 64 : 0);
        bool per_kv = t->op == OP_ATTN_BWD && t->ip[0] != 0;
        CHECK_MSG(l->grid[0] == (unsigned)((x->shape[1] + 31) / 32) &&
                      l->grid[1] == (unsigned)(per_kv ? k->shape[2] : x->shape[2]) &&
                      l->grid[2] == (unsigned)x->shape[0] && threads == 128 && l->smem == (unsigned)(words * 4),
                  "%s: %s grid %u,%u,%u smem %u", what, t->name, l->grid[0], l->grid[1], l->grid[2], l->smem);
        break;
    }
    case OP_ROWSUM:
        CHECK_MSG(threads == 256 && (int64_t)l->grid[0] == (ir_numel(x) / last_dim(x) + 255) / 256,
                  "%s: %s is not 32 rows a warp (grid %u)", what, t->name, l->grid[0]);
        break;
    case OP_ROPE: { /* an item per (token, 8 pairs) where Dh/2 % 8 == 0, else per (token, pair) */
        int64_t half = x->shape[3] / 2, items = x->shape[0] * x->shape[1] * (half % 8 == 0 ? half / 8 : half);
        CHECK_MSG(threads == 256 && l->smem == (unsigned)(half * 8) && l->grid[0] == (unsigned)((items + 255) / 256),
                  "%s: %s grid %u smem %u", what, t->name, l->grid[0], l->smem);
        break;
    }
    case OP_ADD:
    case OP_ADAMW:
    case OP_CAST:
        CHECK_MSG(threads == 256 && (int64_t)l->grid[0] == (ir_numel(t) + 2047) / 2048, "%s: %s grid %u", what, t->name,
                  l->grid[0]);
        break;
    default:
        break;
    }
}

static void check_module(const ir_graph_t *g, const cg_module_t *m, const char *target, const char *what)
{
    CHECK_MSG(strcmp(m->target, target) == 0, "%s: module target %s", what, m->target);
    CHECK_MSG(m->image && m->image_len > 64 && memcmp(m->image, "\x7f" "ELF", 4) == 0, "%s: no cubin", what);
    CHECK_MSG(m->nlaunch == g->nsched, "%s: %d launch records for %d scheduled nodes", what, m->nlaunch, g->nsched);
    for (int i = 0; i < m->nnames; i++) {
        CHECK_MSG(i == 0 || strcmp(m->names[i - 1], m->names[i]) < 0, "%s: names unsorted at %d", what, i);
        CHECK_MSG(image_has(m, m->names[i]), "%s: %s is not in the cubin", what, m->names[i]);
    }
    int *uses = ft_xcalloc((size_t)(m->nnames ? m->nnames : 1), sizeof *uses);
    unsigned limit = cg_smem_limit(target);
    for (int k = 0; k < m->nlaunch && k < g->nsched; k++) {
        const cg_launch_t *l = &m->launch[k];
        CHECK_MSG(l->node == g->sched[k], "%s: launch %d is for node %d, schedule says %d", what, k, l->node,
                  g->sched[k]);
        const ir_tensor_t *t = &g->t[l->node];
        cg_kind_t want = t->op == OP_MATMUL ? CG_MATMUL : t->op == OP_RESHAPE || t->op == OP_LEAF || t->op == OP_AFTER ? CG_NOP : CG_KERNEL;
        CHECK_MSG(l->kind == want && cg_op_kind(t->op) == want, "%s: %s (%s) has kind %d", what, t->name,
                  ir_ops[t->op]->name, (int)l->kind);
        if (l->kind != CG_KERNEL) {
            CHECK(l->kernel == -1 && l->kernel2 == -1 && l->scratch == 0);
            continue;
        }
        CHECK_MSG(l->kernel >= 0 && l->kernel < m->nnames, "%s: %s kernel index %d", what, t->name, l->kernel);
        if (l->kernel < 0 || l->kernel >= m->nnames)
            continue;
        uses[l->kernel]++;
        char name[CG_NAME_MAX];
        ft_err_t e;
        CHECK(cg_kernel_name(g, l->node, name, &e) == 0 && strcmp(name, m->names[l->kernel]) == 0);
        unsigned threads = l->block[0] * l->block[1] * l->block[2];
        CHECK_MSG(threads >= 32 && threads <= 1024 && threads % 32 == 0, "%s: %s block of %u", what, t->name, threads);
        CHECK_MSG(l->grid[0] >= 1 && l->grid[1] >= 1 && l->grid[2] >= 1 && l->grid[1] <= 65535 && l->grid[2] <= 65535,
                  "%s: %s grid %u,%u,%u", what, t->name, l->grid[0], l->grid[1], l->grid[2]);
        CHECK_MSG(l->smem <= limit, "%s: %s smem %u", what, t->name, l->smem);
        /* a second kernel: the op's "_s2" entry point, within the same limits */
        bool two = cg_kernel_name2(g, l->node, name, &e) == 0;
        CHECK_MSG(two == (l->kernel2 >= 0), "%s: %s second kernel %d", what, t->name, l->kernel2);
        if (two && l->kernel2 >= 0 && l->kernel2 < m->nnames) {
            uses[l->kernel2]++;
            CHECK(strcmp(name, m->names[l->kernel2]) == 0);
            threads = l->block2[0] * l->block2[1] * l->block2[2];
            CHECK_MSG(threads >= 32 && threads <= 1024 && threads % 32 == 0 && l->grid2[0] >= 1 && l->grid2[1] >= 1 &&
                          l->grid2[2] >= 1 && l->grid2[1] <= 65535 && l->smem2 <= limit && l->scratch > 0,
                      "%s: %s second launch %u,%u,%u x %u", what, t->name, l->grid2[0], l->grid2[1], l->grid2[2],
                      threads);
        } else {
            CHECK_MSG(l->grid2[0] == 0 && l->block2[0] == 0 && l->smem2 == 0, "%s: %s second geometry", what,
                      t->name);
        }
        check_geometry(g, l, what);
    }
    for (int i = 0; i < m->nnames; i++)
        CHECK_MSG(uses[i] > 0, "%s: kernel %s is never launched", what, m->names[i]);
    free(uses);
}

/* The source: the same bytes twice, every template file placed, one entry per name. */
static void check_source(const ir_graph_t *g, const cg_module_t *m, const char *what)
{
    ft_err_t e;
    const char *tg = m ? m->target : "sm_90";
    char *a = cg_emit_source(g, tg, &e), *b = cg_emit_source(g, tg, &e);
    CHECK_MSG(a && b && strcmp(a, b) == 0, "%s: two emits differ", what);
    if (a) {
        for (int i = 0; i < cg_nembedded; i++) {
            char mark[96];
            snprintf(mark, sizeof mark, "#line 1 \"%s\"\n", cg_embedded[i].name);
            CHECK_MSG(strstr(a, mark) != NULL, "%s: template %s missing from the source", what, cg_embedded[i].name);
        }
        for (int i = 0; m && i < m->nnames; i++) {
            char decl[CG_NAME_MAX + 32];
            snprintf(decl, sizeof decl, ") %s(const __grid_constant__ ftk_args_t a)", m->names[i]);
            CHECK_MSG(strstr(a, decl) != NULL, "%s: no entry point %s in the source", what, m->names[i]);
        }
    }
    free(a);
    free(b);
    char **names;
    int n;
    CHECK(cg_kernel_names(g, &names, &n, &e) == 0);
    CHECK(!m || n == m->nnames);
    for (int i = 0; m && i < n && i < m->nnames; i++)
        CHECK(strcmp(names[i], m->names[i]) == 0);
    cg_names_free(names, n);
}

/* ---- tests ---- */

/* A module survives plan.bin byte for byte. */
static void check_plan_roundtrip(const ft_config_t *c, const ir_graph_t *g, const cg_module_t *m, const char *target)
{
    plan_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.target, sizeof p.target, "%s", target);
    p.cfg = *c;
    ft_err_t e;
    CHECK(ir_graph_copy(&p.g, g) == 0);
    p.cuda = *m; /* borrowed: given back before plan_free */
    p.has_cuda = true;
    unsigned char *buf;
    size_t len;
    int rc = plan_serialize(&p, &buf, &len, &e);
    memset(&p.cuda, 0, sizeof p.cuda);
    plan_free(&p);
    CHECK_MSG(rc == 0, "serialize: %s", e.msg);
    if (rc != 0)
        return;
    plan_t q;
    rc = plan_parse(buf, len, "codegen.plan", &q, &e);
    CHECK_MSG(rc == 0, "parse: %s", e.msg);
    if (rc == 0) {
        CHECK(q.has_cuda && strcmp(q.cuda.target, target) == 0);
        CHECK(q.cuda.image_len == m->image_len && memcmp(q.cuda.image, m->image, m->image_len) == 0);
        CHECK(q.cuda.nnames == m->nnames && q.cuda.nlaunch == m->nlaunch);
        for (int i = 0; i < m->nnames && i < q.cuda.nnames; i++)
            CHECK(strcmp(q.cuda.names[i], m->names[i]) == 0);
        CHECK(q.cuda.nlaunch == m->nlaunch && memcmp(q.cuda.launch, m->launch, (size_t)m->nlaunch * sizeof *m->launch) == 0);
        plan_free(&q);
    }
    free(buf);
}

/* The cache: a second build is a hit with the same cubin, fast; a damaged entry is rebuilt. */
static void check_cache(const ir_graph_t *g, const cg_module_t *m, const char *target)
{
    ft_err_t e;
    cg_module_t again;
    double t0 = ft_now();
    int rc = cg_build(g, target, cache, &again, &e);
    double dt = ft_now() - t0;
    CHECK_MSG(rc == 0, "cached build: %s", e.msg);
    if (rc != 0)
        return;
    CHECK_MSG(dt < 0.5, "a cache hit took %.3f s", dt);
    CHECK(again.image_len == m->image_len && memcmp(again.image, m->image, m->image_len) == 0);
    cg_module_free(&again);

    char *src = cg_emit_source(g, target, &e), path[4200];
    CHECK(src && cg_cache_path(src, target, cache, path, sizeof path, &e) == 0);
    CHECK_MSG(access(path, R_OK) == 0, "no cache entry at %s", path);
    CHECK(ft_write_file_atomic(path, "not a cubin", 11, &e) == 0);
    rc = cg_build(g, target, cache, &again, &e);
    CHECK_MSG(rc == 0, "rebuild over a damaged entry: %s", e.msg);
    if (rc == 0) {
        CHECK(again.image_len == m->image_len && memcmp(again.image, m->image, m->image_len) == 0);
        cg_module_free(&again);
    }
    char *data;
    size_t n;
    CHECK(ft_read_file(path, &data, &n, &e) == 0 && n == m->image_len && memcmp(data, m->image, n) == 0);
    free(data);
    /* other options, other key */
    char other[4200];
    CHECK(cg_cache_path(src, strcmp(target, "sm_80") ? "sm_80" : "sm_90", cache, other, sizeof other, &e) == 0);
    CHECK(strcmp(other, path) != 0);
    free(src);
}

static void test_specs(void)
{
    static const struct {
        const char *spec, *dtype, *target;
        bool cache_checks;
    } cases[] = {
        {"models/tiny-llama-lora.fbs", "f32", "sm_90", true},
        {"models/tiny-llama-full.fbs", "f32", "sm_90", false},
        {"models/tiny-llama-lora.fbs", "bf16", "sm_90", false},
        {"models/tiny-llama-full.fbs", "bf16", "sm_90", false},
        {"models/tiny-llama-lora.fbs", "bf16", "sm_80", true},
        {"models/tiny-llama-full.fbs", "f32", "sm_80", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[160];
        snprintf(what, sizeof what, "%s %s %s", cases[i].spec, cases[i].dtype, cases[i].target);
        ft_config_t c;
        ir_graph_t g;
        if (compile_spec(cases[i].spec, cases[i].dtype, &c, &g) != 0) {
            CHECK_MSG(0, "%s: does not compile", what);
            continue;
        }
        cg_module_t m;
        ft_err_t e;
        double t0 = ft_now();
        int rc = cg_build(&g, cases[i].target, cache, &m, &e);
        CHECK_MSG(rc == 0, "%s: %s", what, e.msg);
        if (rc == 0) {
            printf("%s: %d kernels, %zu-byte cubin, %d launches (%.2f s)\n", what, m.nnames, m.image_len, m.nlaunch,
                   ft_now() - t0);
            check_module(&g, &m, cases[i].target, what);
            check_source(&g, &m, what);
            if (cases[i].cache_checks) {
                check_cache(&g, &m, cases[i].target);
                check_plan_roundtrip(&c, &g, &m, cases[i].target);
            }
            bool bf16 = strcmp(cases[i].dtype, "bf16") == 0, has_bf16 = false;
            for (int k = 0; k < m.nnames; k++)
                has_bf16 = has_bf16 || strstr(m.names[k], "bf16") != NULL;
            CHECK_MSG(has_bf16 == bf16, "%s: bf16 kernels %s", what, has_bf16 ? "present" : "absent");
            cg_module_free(&m);
        }
        ir_graph_free(&g);
    }
}

static void test_all_ops(void)
{
    ir_graph_t g;
    ir_graph_init(&g);
    add_all_ops(&g, IR_F32);
    add_all_ops(&g, IR_BF16);
    add_f16_ops(&g);
    CHECK_MSG(!g.err[0], "builder: %s", g.err);
    schedule_all(&g);
    ft_err_t e;
    CHECK_MSG(ir_verify(&g, &e) == 0, "verify: %s", e.msg);
    cg_module_t m;
    double t0 = ft_now();
    int rc = cg_build(&g, "sm_90", cache, &m, &e);
    CHECK_MSG(rc == 0, "every op: %s", e.msg);
    if (rc == 0) {
        printf("every op: %d kernels, %zu-byte cubin (%.2f s)\n", m.nnames, m.image_len, ft_now() - t0);
        check_module(&g, &m, "sm_90", "every op");
        check_source(&g, &m, "every op");
        bool seen[OP_COUNT] = {0};
        for (int k = 0; k < m.nlaunch; k++)
            seen[g.t[m.launch[k].node].op] = true;
        for (int op = 0; op < OP_COUNT; op++)
            if (cg_op_kind((ir_op_t)op) == CG_KERNEL)
                CHECK_MSG(seen[op], "op %s has a kernel but the test graph never runs it", ir_ops[op]->name);
        /* i32 data movement and f16 stores got kernels of their own */
        const char *want[] = {"ftk_permute_i32_i32", "ftk_concat_i32_i32_i32", "ftk_slice_i32_i32",
                              "ftk_cast_f32_i32",    "ftk_cast_i32_f16",       "ftk_fill_i32",
                              "ftk_fill_f16_f16",    "ftk_attn_bwd_f16_f16_f16_i32_f16_f32_f16"};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            bool found = false;
            for (int k = 0; k < m.nnames; k++)
                found = found || strcmp(m.names[k], want[i]) == 0;
            CHECK_MSG(found, "no kernel %s", want[i]);
        }
        cg_module_free(&m);
    }
    CHECK(cg_op_kind(OP_LEAF) == CG_NOP && cg_op_kind(OP_RESHAPE) == CG_NOP && cg_op_kind(OP_MATMUL) == CG_MATMUL);
    CHECK(cg_op_kind(OP_COUNT) == CG_KIND_COUNT);
    ir_graph_free(&g);
}

/* NVRTC's log comes back in the error, and an error in a template names the file. */
static void test_compile_errors(void)
{
    ft_err_t e;
    unsigned char *img;
    size_t n;
    const char *bad = "extern \"C\" __global__ void k(int *p) { p[0] = undefined_thing_xyz; }\n";
    CHECK(cg_nvrtc_compile(bad, "sm_90", &img, &n, &e) == -1 && img == NULL && n == 0);
    CHECK_MSG(strstr(e.msg, "NVRTC could not compile") && strstr(e.msg, "undefined_thing_xyz") &&
                  strstr(e.msg, "error"),
              "bad source: '%s'", e.msg);

    /* a broken template: the real source with one helper misspelt */
    ir_graph_t g;
    ir_graph_init(&g);
    const int64_t s2[2] = {4, 8};
    int a = in(&g, IR_F32, 2, s2);
    ir_silu(&g, ir_add(&g, a, a));
    schedule_all(&g);
    char *src = cg_emit_source(&g, "sm_90", &e);
    CHECK(src != NULL);
    char *at = src ? strstr(src, "float z = expf(x);") : NULL;
    CHECK(at != NULL);
    if (at) {
        memcpy(at, "float z = expq(x);", 18);
        bool hit;
        CHECK(cg_compile_cached(src, "sm_90", cache, &img, &n, &hit, &e) == -1);
        CHECK_MSG(strstr(e.msg, "elementwise.cuh(") && strstr(e.msg, "expq"), "broken template: '%s'", e.msg);
    }
    free(src);
    ir_graph_free(&g);
}

static void test_refusals(void)
{
    ft_err_t e;
    cg_module_t m;
    ir_graph_t g;
    ir_graph_init(&g);
    const int64_t s2[2] = {4, 8};
    int a = in(&g, IR_F32, 2, s2);
    ir_add(&g, a, a);
    schedule_all(&g);
    const char *bad_targets[] = {"sm_75", "sm_9", "sm_90x", "compute_90", "gfx90a", "", "sm_0900", "sm_090"};
    for (size_t i = 0; i < sizeof bad_targets / sizeof bad_targets[0]; i++) {
        CHECK(cg_build(&g, bad_targets[i], cache, &m, &e) == -1);
        char want[64];
        snprintf(want, sizeof want, "target '%s'", bad_targets[i]);
        CHECK_MSG(strstr(e.msg, want), "'%s' for %s", e.msg, bad_targets[i]);
        CHECK(m.image == NULL && m.names == NULL && m.launch == NULL);
    }
    CHECK(cg_check_target("sm_90a", &e) == 0 && cg_check_target("sm_80", &e) == 0 && cg_check_target("sm_120", &e) == 0);
    ir_graph_free(&g);

    /* f64 tensors have no kernels */
    ir_graph_init(&g);
    int d = in(&g, IR_F64, 2, s2);
    ir_silu(&g, d);
    schedule_all(&g);
    CHECK(cg_build(&g, "sm_90", cache, &m, &e) == -1);
    CHECK_MSG(strstr(e.msg, "f64") && strstr(e.msg, "silu"), "f64: '%s'", e.msg);
    CHECK(cg_emit_source(&g, "sm_90", &e) == NULL && strstr(e.msg, "f64"));
    ir_graph_free(&g);

    /* a head dimension past the attention kernels' registers */
    ir_graph_init(&g);
    const int64_t q4[4] = {1, 8, 2, 512}, tok[2] = {1, 8};
    int q = in(&g, IR_F32, 4, q4), doc = in(&g, IR_I32, 2, tok);
    ir_attn(&g, q, q, q, doc, 0.1);
    schedule_all(&g);
    CHECK(cg_build(&g, "sm_90", cache, &m, &e) == -1);
    CHECK_MSG(strstr(e.msg, "head dim 512 exceeds"), "head dim: '%s'", e.msg);
    ir_graph_free(&g);
}

/* attn, attn_lse and attn_bwd dq, dk, dv (ids in that order) on bf16 q [1 or 2, s, 8, dh] and
 * k [.., 2, dh], scheduled; g is initialised here. */
static void attn_five(ir_graph_t *g, int64_t s, int64_t dh, int ids[5])
{
    ir_graph_init(g);
    const int64_t nb = s > 1024 ? 1 : 2, q4[4] = {nb, s, 8, dh}, kv4[4] = {nb, s, 2, dh}, st4[4] = {nb, s, 8, 2};
    int q = in(g, IR_BF16, 4, q4), k = in(g, IR_BF16, 4, kv4), doc = in(g, IR_I32, 2, q4);
    int st = in(g, IR_F32, 4, st4);
    ids[0] = ir_attn(g, q, k, k, doc, 0.1);
    ids[1] = node(g, OP_ATTN_LSE, IR_F32, 3, (int[]){q, k, doc}, NULL, (double[]){0.1, 0});
    for (int64_t w = 0; w < 3; w++)
        ids[2 + w] = node(g, OP_ATTN_BWD, IR_BF16, 6, (int[]){q, k, k, doc, q, st}, (int64_t[]){w, 0, 0, 0},
                          (double[]){0.1, 0});
    schedule_all(g);
}

/* Which attention nodes take the tensor-core path (every matrix operand bf16, Dh 64 or 128,
 * and for attn and attn_lse a positive scale) and the launch shapes of both paths. The
 * tensor-core kernels have one entry point each (name suffix _tc<Dh>[_dq|_dk|_dv]) and a block
 * per two tiles of 128 own rows (query rows; keys for dk/dv); their shared memory, worked out by
 * hand from attention.cuh's layout (bf16 rows of Dh + 8 elements: 144 bytes at Dh 64, 272 at
 * Dh 128; two stages of the streamed tiles; the own tiles resident before them or, read into
 * registers, over them; 16 bytes of document ranges for S 200), is pinned below. The
 * CUDA-core path as check_geometry. */
static void test_attn_launch(void)
{
    const struct {
        ir_dtype_t dt, dydt;
        int64_t dh;
        double scale;
    } cases[] = {
        {IR_BF16, IR_BF16, 64, 0.1}, {IR_BF16, IR_BF16, 128, 0.1}, {IR_BF16, IR_BF16, 96, 0.1},
        {IR_F32, IR_F32, 128, 0.1},  {IR_F16, IR_F16, 64, 0.1},    {IR_BF16, IR_F32, 64, 0.1}, /* f32 dy: bwd on CUDA cores */
        {IR_BF16, IR_BF16, 128, -0.1}, /* a negative scale: attn and attn_lse on CUDA cores */
    };
    /* [Dh 64, Dh 128][attn, attn_lse, dq, dk, dv]: threads, shared bytes */
    const unsigned tc_threads[2][5] = {{128, 128, 128, 128, 128}, {128, 128, 256, 256, 128}};
    const unsigned tc_smem[2][5] = {
        /* Dh 64: attn: 64-row K, V stages (2 x 18432 B), Q (18432) read into registers over them;
         * attn_lse: 64-row K stages (2 x 9216), Q over them; dq: K, V stages (2 x 18432), Q and
         * dY (36864) over them; dk: Q, dY and stats stages (2 x 18944), K and V (36864) over
         * them; dv: the same stages, K (18432) over them */
        {36864 + 16, 18432 + 16, 36864 + 16, 37888 + 16, 37888 + 16},
        /* Dh 128: attn: Q resident (34816), 32-row K, V stages (2 x 17408); attn_lse: Q resident,
         * 64-row K stages (2 x 17408); dq: 8 warps, 64-row K, V stages (2 x 34816), Q and dY
         * (69632) over them; dk: Q, dY, stats stages (2 x 35328), K and V over them; dv: K
         * resident (34816), 32-row Q, dY, stats stages (2 x 17664) */
        {69632 + 16, 69632 + 16, 69632 + 16, 70656 + 16, 70144 + 16},
    };
    static const char *const sfx[5] = {"_tc%lld", "_tc%lld", "_tc%lld_dq", "_tc%lld_dk", "_tc%lld_dv"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ir_graph_t g;
        ir_graph_init(&g);
        int64_t dh = cases[c].dh;
        const int64_t q4[4] = {2, 200, 8, dh}, kv4[4] = {2, 200, 2, dh}, st4[4] = {2, 200, 8, 2};
        int q = in(&g, cases[c].dt, 4, q4), k = in(&g, cases[c].dt, 4, kv4), v = in(&g, cases[c].dt, 4, kv4);
        int doc = in(&g, IR_I32, 2, q4), dy = in(&g, cases[c].dydt, 4, q4), st = in(&g, IR_F32, 4, st4);
        int ids[5];
        ids[0] = ir_attn(&g, q, k, v, doc, cases[c].scale);
        ids[1] = node(&g, OP_ATTN_LSE, IR_F32, 3, (int[]){q, k, doc}, NULL, (double[]){cases[c].scale, 0});
        for (int64_t w = 0; w < 3; w++)
            ids[2 + w] = node(&g, OP_ATTN_BWD, cases[c].dt, 6, (int[]){q, k, v, doc, dy, st}, (int64_t[]){w, 0, 0, 0},
                              (double[]){cases[c].scale, 0});
        CHECK_MSG(!g.err[0], "%s", g.err);
        schedule_all(&g);
        for (int i = 0; i < 5 && !g.err[0]; i++) {
            cg_launch_t l;
            ft_err_t e;
            CHECK(cg_launch_of(&g, ids[i], "sm_86", &l, &e) == 0);
            const ir_tensor_t *t = &g.t[ids[i]];
            bool kv = i >= 3;
            int64_t rows = 0, bytes = 0;
            unsigned threads = 128;
            bool tc = cases[c].dt == IR_BF16 && (dh == 64 || dh == 128) && (i < 2 || cases[c].dydt == IR_BF16) &&
                      (i >= 2 || cases[c].scale > 0);
            if (tc) {
                rows = 256; /* a block per two own tiles of 128 rows */
                threads = tc_threads[dh == 128][i];
                bytes = tc_smem[dh == 128][i];
            } else {
                int64_t fp = (dh + 3) / 4 * 4 + 4;
                rows = 32;
                bytes = 4 * ((i == 0 ? 3 : i == 1 ? 2 : 4) * 32 * fp + 64 + (i >= 2 ? 64 : 0));
            }
            CHECK_MSG(l.kind == CG_KERNEL && l.block[0] == threads && l.grid[0] == (unsigned)((200 + rows - 1) / rows) &&
                          l.grid[1] == (unsigned)(kv ? 2 : 8) && l.grid[2] == 2 && l.smem == (unsigned)bytes,
                      "case %zu %s %d: block %u grid %u,%u,%u smem %u", c, ir_ops[t->op]->name, i, l.block[0],
                      l.grid[0], l.grid[1], l.grid[2], l.smem);
            /* the entry point: its own name on the tensor cores, the op's plain one otherwise */
            char name[CG_NAME_MAX], want[32] = "";
            if (tc)
                snprintf(want, sizeof want, sfx[i], (long long)dh);
            CHECK(cg_kernel_name(&g, ids[i], name, &e) == 0);
            size_t n = strlen(name), w = strlen(want);
            CHECK_MSG(n > w && strcmp(name + n - w, want) == 0 && (tc || !strstr(name, "_tc")), "case %zu %d: %s", c,
                      i, name);
        }
        ir_graph_free(&g);
    }
    /* every tensor-core block fits the 99 KiB of sm_86/sm_89/sm_120 at S 8192, every Hopper one
     * sm_90's 227 KiB */
    for (int64_t dh = 64; dh <= 128; dh += 64) {
        ir_graph_t g;
        int ids[5];
        attn_five(&g, 8192, dh, ids);
        for (int i = 0; i < 5; i++) {
            cg_launch_t l, h;
            ft_err_t e;
            CHECK_MSG(cg_launch_of(&g, ids[i], "sm_86", &l, &e) == 0 && l.smem <= 99u * 1024u, "Dh %lld %d: %s",
                      (long long)dh, i, e.msg);
            CHECK_MSG(cg_launch_of(&g, ids[i], "sm_90", &h, &e) == 0 && h.smem <= 227u * 1024u, "sm_90 Dh %lld %d: %s",
                      (long long)dh, i, e.msg);
        }
        ir_graph_free(&g);
    }
    /* sm_90 (attention_wg.cuh): 256 threads; shared memory by hand from ftk_wg_lay at S 200 —
     * own tiles of 128 rows (Dh 64: 16384 bytes, Dh 128: 32768; dq and dk two, attn and dv
     * one), four streamed tiles (Dh 64: attn 128 rows, the backward 64; Dh 128: attn and dv
     * 64, dq and dk 128), dk and dv's two statistics stages (8 bytes a row), 16 bytes of
     * document ranges, 1024 of alignment; attn_lse keeps the mma.sync kernel */
    const unsigned wg_smem[2][5] = {
        {16384 + 65536 + 1040, 18432 + 16, 32768 + 32768 + 1040, 32768 + 32768 + 1024 + 1040,
         16384 + 32768 + 1024 + 1040},
        {32768 + 65536 + 1040, 69632 + 16, 65536 + 131072 + 1040, 65536 + 131072 + 2048 + 1040,
         32768 + 65536 + 1024 + 1040},
    };
    for (int64_t dh = 64; dh <= 128; dh += 64) {
        ir_graph_t g;
        int ids[5];
        attn_five(&g, 200, dh, ids);
        for (int i = 0; i < 5; i++) {
            cg_launch_t l;
            ft_err_t e;
            unsigned threads = i == 1 ? tc_threads[dh == 128][1] : 256;
            CHECK_MSG(cg_launch_of(&g, ids[i], "sm_90", &l, &e) == 0 && l.block[0] == threads &&
                          l.smem == wg_smem[dh == 128][i] && l.grid[0] == 1 && l.grid[1] == (i >= 3 ? 2u : 8u),
                      "sm_90 Dh %lld %d: block %u smem %u grid %u,%u", (long long)dh, i, l.block[0], l.smem, l.grid[0],
                      l.grid[1]);
        }
        /* dk and dv in one node (passes/fuse.c): sm_90's kernel (K and V resident, Q and dY
         * stages of 64 rows at Dh 64, 128 at Dh 128, two statistics stages), refused elsewhere,
         * and by name in the source */
        const int64_t kv4[4] = {2, 200, 2, dh};
        int dvb = in(&g, IR_BF16, 4, kv4);
        const ir_tensor_t *d3 = &g.t[ids[3]];
        int src[7] = {d3->src[0], d3->src[1], d3->src[2], d3->src[3], d3->src[4], d3->src[5], dvb};
        int dkv = node(&g, OP_ATTN_BWD, IR_BF16, 7, src, (int64_t[]){3, 0, 0, 0}, (double[]){0.1, 0});
        schedule_all(&g);
        cg_launch_t l;
        ft_err_t e;
        unsigned own = (unsigned)(128 * dh * 2), bn = dh == 128 ? 128 : 64, tile = (unsigned)(bn * dh * 2);
        CHECK_MSG(dkv >= 0 && cg_launch_of(&g, dkv, "sm_90", &l, &e) == 0 && l.block[0] == 256 &&
                      l.smem == 2 * own + 4 * tile + 2 * bn * 8 + 1040 && l.grid[1] == 2,
                  "dk+dv Dh %lld: smem %u: %s", (long long)dh, l.smem, e.msg);
        CHECK_MSG(cg_launch_of(&g, dkv, "sm_86", &l, &e) == -1 && strstr(e.msg, "only the sm_90 kernels"),
                  "dk+dv on sm_86: %s", e.msg);
        char *src90 = cg_emit_source(&g, "sm_90", &e);
        CHECK(src90 && strstr(src90, "_tc") && strstr(src90, "_dkv(") && strstr(src90, "ftk::attn_wg_dkv<"));
        free(src90);
        ir_graph_free(&g);
    }
    /* the entry points carry their configuration: template arguments and launch bounds */
    ir_graph_t g;
    ir_graph_init(&g);
    const int64_t q4[4] = {1, 64, 4, 128}, kv4[4] = {1, 64, 2, 128}, st4[4] = {1, 64, 4, 2};
    int q = in(&g, IR_BF16, 4, q4), k = in(&g, IR_BF16, 4, kv4), doc = in(&g, IR_I32, 2, q4);
    int st = in(&g, IR_F32, 4, st4);
    ir_attn(&g, q, k, k, doc, 0.1);
    node(&g, OP_ATTN_BWD, IR_BF16, 6, (int[]){q, k, k, doc, q, st}, (int64_t[]){0, 0, 0, 0}, (double[]){0.1, 0});
    schedule_all(&g);
    ft_err_t e;
    char *src = cg_emit_source(&g, "sm_86", &e);
    CHECK(src && strstr(src, "__launch_bounds__(128, 2) ftk_attn_bf16_bf16_bf16_i32_bf16_tc128(") &&
          strstr(src, "ftk::attn_tc_fwd<128, 32, 2, false, __nv_bfloat16>(a);") &&
          strstr(src, "__launch_bounds__(256, 1) ftk_attn_bwd_bf16_bf16_bf16_i32_bf16_f32_bf16_tc128_dq(") &&
          strstr(src, "ftk::attn_tc_dq<128, 64, 1, true, 32, float, __nv_bfloat16>(a);"));
    free(src);
    /* sm_90: the same entry points run attention_wg.cuh's kernels */
    src = cg_emit_source(&g, "sm_90", &e);
    CHECK(src && strstr(src, "__launch_bounds__(256, 2) ftk_attn_bf16_bf16_bf16_i32_bf16_tc128(") &&
          strstr(src, "ftk::attn_wg_fwd<128, 64, __nv_bfloat16>(a);") &&
          strstr(src, "__launch_bounds__(256, 1) ftk_attn_bwd_bf16_bf16_bf16_i32_bf16_f32_bf16_tc128_dq(") &&
          strstr(src, "ftk::attn_wg_dq<128, 128, 64, float, __nv_bfloat16>(a);") && !strstr(src, "    ftk::attn_tc_fwd"));
    free(src);
    ir_graph_free(&g);
}

/* The two-stage ops at the real workload's sizes (Llama 3 8B: 16384 tokens, vocabulary
 * 128256, hidden 4096) and at the small sizes test_kernels uses: the whole GPU takes the
 * first kernel, the partials fit the scratch the record asks for. */
static void test_reduce_launch(void)
{
    const struct {
        int64_t tokens, vocab, hidden;
        /* expected: sumsq blocks; xent threads; rmsnorm_bwd_w chunks, threads, column groups;
         * embed_bwd column groups */
        unsigned ss_grid, xent_threads, rbw_chunks, rbw_threads, rbw_groups, ebw_groups;
    } cases[] = {
        {16384, 128256, 4096, 1024, 1024, 512, 512, 1, 2},
        {300, 5000, 384, 235, 1024, 10, 64, 1, 1},
        {3000, 258, 16384, 516, 96, 94, 1024, 2, 8},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ir_graph_t g;
        ir_graph_init(&g);
        int64_t nt = cases[c].tokens, nv = cases[c].vocab, d = cases[c].hidden;
        const int64_t lg2[2] = {nt, nv}, n1[1] = {nt}, xd[2] = {nt, d}, emb[2] = {nv, d};
        int logits = in(&g, IR_BF16, 2, lg2), tg = in(&g, IR_I32, 1, n1), x = in(&g, IR_BF16, 2, xd);
        int ids[4];
        ids[0] = node(&g, OP_SUMSQ, IR_F32, 1, (int[]){in(&g, IR_BF16, 2, emb)}, NULL, NULL);
        ids[1] = ir_xent(&g, logits, tg, -100);
        ids[2] = node(&g, OP_RMSNORM_BWD_W, IR_BF16, 2, (int[]){x, x}, NULL, (double[]){1e-5, 0});
        ids[3] = node(&g, OP_EMBED_BWD, IR_BF16, 2, (int[]){tg, x}, (int64_t[]){nv, 0, 0, 0}, NULL);
        CHECK_MSG(!g.err[0], "%s", g.err);
        schedule_all(&g);
        cg_launch_t l[4];
        ft_err_t e;
        for (int i = 0; i < 4 && !g.err[0]; i++)
            CHECK_MSG(cg_launch_of(&g, ids[i], "sm_90", &l[i], &e) == 0 && l[i].kind == CG_KERNEL &&
                          l[i].kernel == -1 && l[i].kernel2 == -1,
                      "case %zu op %d", c, i);
        if (g.err[0])
            continue;
        CHECK_MSG(l[0].grid[0] == cases[c].ss_grid && l[0].block[0] == 256 && l[0].grid2[0] == 1 &&
                      l[0].scratch == FTK_SCRATCH_HEAD + 8u * cases[c].ss_grid,
                  "case %zu sumsq: grid %u scratch %llu", c, l[0].grid[0], (unsigned long long)l[0].scratch);
        CHECK_MSG(l[1].grid[0] == (unsigned)nt && l[1].block[0] == cases[c].xent_threads && l[1].grid2[0] == 1 &&
                      l[1].block2[0] == 1024 && l[1].scratch == (uint64_t)(FTK_SCRATCH_HEAD + 8 * nt),
                  "case %zu xent: grid %u block %u scratch %llu", c, l[1].grid[0], l[1].block[0],
                  (unsigned long long)l[1].scratch);
        CHECK_MSG(l[2].grid[0] == cases[c].rbw_chunks && l[2].block[0] == cases[c].rbw_threads &&
                      l[2].grid[1] == cases[c].rbw_groups && l[2].grid2[0] == (unsigned)((d + 255) / 256) &&
                      l[2].scratch == (uint64_t)(FTK_SCRATCH_HEAD + 4 * (int64_t)cases[c].rbw_chunks * d),
                  "case %zu rmsnorm_bwd_w: grid %u,%u block %u scratch %llu", c, l[2].grid[0], l[2].grid[1],
                  l[2].block[0], (unsigned long long)l[2].scratch);
        CHECK_MSG(l[3].grid[0] == 1 && l[3].block[0] == 1024 && l[3].grid2[0] == (unsigned)nv &&
                      l[3].grid2[1] == cases[c].ebw_groups && l[3].block2[0] == 256 &&
                      l[3].scratch == (uint64_t)(FTK_SCRATCH_HEAD + 4 * (nv + nt)),
                  "case %zu embed_bwd: second grid %u,%u scratch %llu", c, l[3].grid2[0], l[3].grid2[1],
                  (unsigned long long)l[3].scratch);
        ir_graph_free(&g);
    }
}

/* The row kernels' launches at the training shapes and the widths around their limits:
 * rmsnorm and rmsnorm_bwd_x get 256 threads and 8 / W rows a block (W warps a row: the
 * fewest whose lanes hold the row at 256 bytes of x, and dy, a lane; at most 8, past that
 * the kernel's fallback), and entry points bounded to 2 blocks an SM (<= 128 registers);
 * rope an item per token and 8 pairs where Dh/2 % 8 == 0, else per token and pair. */
static void test_norm_rope_launch(void)
{
    const struct {
        ir_dtype_t dt;
        int64_t rows, d;
        unsigned fwd_grid, bwd_grid; /* rows / (8 / W) */
    } nc[] = {
        {IR_BF16, 16384, 4096, 2048, 4096}, /* W 1 (16 vectors a lane); backward W 2 (8 + 8) */
        {IR_BF16, 16384, 2048, 2048, 2048}, /* W 1, 1 */
        {IR_F32, 16384, 4096, 4096, 8192},  /* W 2 (8 vectors a lane), 4 (4 + 4) */
        {IR_BF16, 3000, 16424, 3000, 3000}, /* W 8 */
        {IR_BF16, 100, 40000, 100, 100},    /* wider than 8 warps hold: the fallback, W 8 */
        {IR_BF16, 77, 33, 10, 10},          /* D % 8 != 0: the fallback, W 1 */
    };
    for (size_t c = 0; c < sizeof nc / sizeof nc[0]; c++) {
        ir_graph_t g;
        ir_graph_init(&g);
        const int64_t xs[2] = {nc[c].rows, nc[c].d}, ws[1] = {nc[c].d};
        int x = in(&g, nc[c].dt, 2, xs), w = in(&g, nc[c].dt, 1, ws);
        int ids[2] = {ir_rmsnorm(&g, x, w, 1e-5),
                      node(&g, OP_RMSNORM_BWD_X, nc[c].dt, 3, (int[]){x, w, x}, NULL, (double[]){1e-5, 0})};
        CHECK_MSG(!g.err[0], "%s", g.err);
        schedule_all(&g);
        for (int i = 0; i < 2 && !g.err[0]; i++) {
            cg_launch_t l;
            ft_err_t e;
            unsigned want = i ? nc[c].bwd_grid : nc[c].fwd_grid;
            CHECK_MSG(cg_launch_of(&g, ids[i], "sm_90", &l, &e) == 0 && l.block[0] == 256 && l.grid[0] == want &&
                          l.grid[1] == 1 && l.smem == 0,
                      "case %zu %s: grid %u (want %u) block %u", c, i ? "rmsnorm_bwd_x" : "rmsnorm", l.grid[0], want,
                      l.block[0]);
        }
        if (c == 0) {
            ft_err_t e;
            char *src = cg_emit_source(&g, "sm_90", &e);
            CHECK(src && strstr(src, "__launch_bounds__(256, 2) ftk_rmsnorm_bf16_bf16_bf16(") &&
                  strstr(src, "__launch_bounds__(256, 2) ftk_rmsnorm_bwd_x_bf16_bf16_bf16_bf16("));
            free(src);
        }
        ir_graph_free(&g);
    }
    const struct {
        int64_t b, s, h, dh;
        unsigned grid;
    } rc[] = {
        {2, 8192, 32, 128, 512}, /* 16384 tokens x 8 groups of 8 pairs / 256 */
        {2, 8192, 8, 128, 512},
        {2, 8192, 32, 64, 256},
        {2, 8192, 8, 20, 640},   /* Dh/2 = 10: a thread per (token, pair) */
    };
    for (size_t c = 0; c < sizeof rc / sizeof rc[0]; c++) {
        ir_graph_t g;
        ir_graph_init(&g);
        const int64_t xs[4] = {rc[c].b, rc[c].s, rc[c].h, rc[c].dh}, ps[2] = {rc[c].b, rc[c].s};
        int x = in(&g, IR_BF16, 4, xs), pos = in(&g, IR_I32, 2, ps);
        int id = ir_rope(&g, x, pos, (int64_t[3]){0, 1, 8192}, (double[4]){5e5, 8, 1, 4});
        CHECK_MSG(!g.err[0], "%s", g.err);
        schedule_all(&g);
        cg_launch_t l;
        ft_err_t e;
        CHECK_MSG(!g.err[0] && cg_launch_of(&g, id, "sm_90", &l, &e) == 0 && l.block[0] == 256 &&
                      l.grid[0] == rc[c].grid && l.smem == (unsigned)(rc[c].dh / 2 * 8),
                  "rope case %zu: grid %u (want %u) smem %u", c, l.grid[0], rc[c].grid, l.smem);
        ir_graph_free(&g);
    }
}

/* ftc compile --target, --emit-cuda and inspect --kernels, end to end. */
static void test_cli(void)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/codegen-cli", cache);
    const char *b = bin_dir();
    CHECK(sh("mkdir -p '%s'", dir) == 0);
    CHECK(sh("FTC_CACHE_DIR='%s' %s/ftc compile models/tiny-llama-lora.fbs -o %s/gpu.bin --target sm_90 "
             "--emit-cuda %s/k.cu 2>%s/compile.log",
             cache, b, dir, dir, dir) == 0);
    CHECK(sh("%s/ftc inspect %s/gpu.bin --kernels >%s/inspect.txt", b, dir, dir) == 0);
    CHECK(sh("grep -q 'kernels: target sm_90' %s/inspect.txt && grep -q 'ftk_attn_f32_f32_f32_i32_f32' %s/inspect.txt "
             "&& grep -q ' matmul  ' %s/inspect.txt && grep -q 'extern \"C\" __global__' %s/k.cu",
             dir, dir, dir, dir) == 0);
    /* the emitted source is what the cache was keyed with: a cpu compile emits it too */
    CHECK(sh("FTC_CACHE_DIR= %s/ftc compile models/tiny-llama-lora.fbs -o %s/cpu.bin --emit-cuda %s/k2.cu 2>/dev/null "
             "&& cmp -s %s/k.cu %s/k2.cu",
             b, dir, dir, dir, dir) == 0);
    CHECK(sh("%s/ftc inspect %s/cpu.bin --kernels | grep -q 'kernels: none'", b, dir) == 0);
}

/* Without the toolkit: everything but NVRTC works, and a build says why it cannot. */
static void test_no_toolkit(void)
{
    ir_graph_t g;
    ir_graph_init(&g);
    const int64_t s2[2] = {4, 8};
    int a = in(&g, IR_F32, 2, s2);
    ir_add(&g, a, a);
    schedule_all(&g);
    cg_module_t m;
    ft_err_t e;
    CHECK(cg_build(&g, "sm_90", cache, &m, &e) == -1 && strstr(e.msg, "without the CUDA toolkit"));
    check_source(&g, NULL, "no toolkit");
    ir_graph_free(&g);
}

#ifdef FTC_HAVE_CUDA
static const bool have_toolkit = true;
#else
static const bool have_toolkit = false;
#endif

int main(void)
{
    snprintf(cache, sizeof cache, "/tmp/ftc_test_codegen.XXXXXX");
    if (!mkdtemp(cache)) {
        perror("mkdtemp");
        return 2;
    }
    if (have_toolkit) {
        test_specs();
        test_all_ops();
        test_compile_errors();
        test_cli();
    } else {
        test_no_toolkit();
    }
    test_refusals();
    test_attn_launch();
    test_reduce_launch();
    test_norm_rope_launch();
    sh("rm -rf '%s'", cache);
    return CHECK_DONE();
}
