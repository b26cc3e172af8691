/* test_train.c — training runs end to end through the built programs: the README demo
 * learns and is bit-reproducible, resume is exact, gradient accumulation equals a larger
 * micro-batch, the LoRA adapter has PEFT's layout and reproduces the trained model once
 * merged, the planned peak is the executor's arena, and the reported gradient norm is
 * the one before clipping. Also what the metrics carry (MFU only where the device's peak
 * is known: never on the CPU), the GPU peak table, model FLOPs without recompute clones,
 * --no-save, and the threaded seeded initialiser giving the same values as one thread. */
#include <jansson.h>
#include <math.h>

#include "check.h"
#include "runtime/device.h"
#include "runtime/safetensors.h"
#include "runtime/weights.h"
#include "runutil.h"

#define LORA_SPEC "models/tiny-llama-lora.fbs"
#define FULL_SPEC "models/tiny-llama-full.fbs"

static char W[512];

static int compile(const char *spec, const char *plan, const char *overrides)
{
    return sh("%s/ftc compile %s -o %s/%s %s > %s/compile.log 2>&1", bin_dir(), spec, W, plan, overrides, W);
}

static int train(const char *plan, const char *args)
{
    return sh("%s/ftrun %s/%s --device cpu --quiet %s > %s/run.log 2>&1", bin_dir(), W, plan, args, W);
}

static void metrics_path(char *p, size_t cap, const char *out) { snprintf(p, cap, "%s/%s/metrics.jsonl", W, out); }

/* Compiles spec into <name>.bin and trains it into the folder <name>; 0 when both worked. */
static int compile_and_train(const char *spec, const char *name, const char *overrides)
{
    char plan[256], args[1024];
    snprintf(plan, sizeof plan, "%s.bin", name);
    snprintf(args, sizeof args, "--out %s/%s", W, name);
    if (compile(spec, plan, overrides) != 0)
        return -1;
    return train(plan, args);
}

static void test_demo_learns_and_repeats(void)
{
    CHECK(compile(LORA_SPEC, "demo.bin", "") == 0);
    char m1[4096], m2[4096];
    char args[4096];
    /* the README's command */
    snprintf(args, sizeof args, "--steps 40 --out %s/demo1", W);
    CHECK(train("demo.bin", args) == 0);
    snprintf(args, sizeof args, "--steps 40 --out %s/demo2", W);
    CHECK(train("demo.bin", args) == 0);
    metrics_path(m1, sizeof m1, "demo1");
    metrics_path(m2, sizeof m2, "demo2");
    double l1[200], l2[200];
    char t1[200][40], t2[200][40];
    int n1 = read_metric(m1, "loss", l1, t1, 200), n2 = read_metric(m2, "loss", l2, t2, 200);
    CHECK_MSG(n1 == 40 && n2 == 40, "steps logged: %d and %d", n1, n2);
    double lnv = log(258.0);
    CHECK_MSG(fabs(l1[0] - lnv) < 0.6, "first loss %.4f is not about ln(vocab) = %.4f", l1[0], lnv);
    CHECK_MSG(n1 > 0 && l1[n1 - 1] < lnv - 1.2, "last loss %.4f is not well under ln(vocab)", n1 > 0 ? l1[n1 - 1] : 0);
    int same = n1 == n2;
    for (int i = 0; same && i < n1; i++)
        same = strcmp(t1[i], t2[i]) == 0;
    CHECK_MSG(same, "two runs with the same seed gave different loss curves");
    char a1[4096], a2[4096];
    snprintf(a1, sizeof a1, "%s/demo1/adapter_model.safetensors", W);
    snprintf(a2, sizeof a2, "%s/demo2/adapter_model.safetensors", W);
    CHECK_MSG(files_equal(a1, a2), "two runs wrote different adapters");
}

static void check_resume(const char *spec, const char *overrides, const char *result_file)
{
    CHECK(compile(spec, "resume.bin", overrides) == 0);
    char args[4096];
    snprintf(args, sizeof args, "--out %s/straight", W);
    CHECK(train("resume.bin", args) == 0);
    snprintf(args, sizeof args, "--out %s/split --stop-after 10", W);
    CHECK(train("resume.bin", args) == 0);
    char f[4096];
    snprintf(f, sizeof f, "%s/split/%s", W, result_file);
    CHECK_MSG(fopen(f, "rb") == NULL, "a stopped run exported its result before the end");
    snprintf(args, sizeof args, "--out %s/split --resume %s/split", W, W);
    CHECK(train("resume.bin", args) == 0);
    char ma[4096], mb[4096];
    metrics_path(ma, sizeof ma, "straight");
    metrics_path(mb, sizeof mb, "split");
    double la[40], lb[40];
    char ta[40][40], tb[40][40];
    int na = read_metric(ma, "loss", la, ta, 40), nb = read_metric(mb, "loss", lb, tb, 40);
    CHECK_MSG(na == 20 && nb == 20, "%s: %d and %d steps logged", spec, na, nb);
    int same = na == nb;
    for (int i = 0; same && i < na; i++)
        same = strcmp(ta[i], tb[i]) == 0;
    CHECK_MSG(same, "%s: resumed losses differ from the uninterrupted run", spec);
    char fa[4096], fb[4096];
    snprintf(fa, sizeof fa, "%s/straight/%s", W, result_file);
    snprintf(fb, sizeof fb, "%s/split/%s", W, result_file);
    CHECK_MSG(files_equal(fa, fb), "%s: resumed weights differ", spec);
    snprintf(fa, sizeof fa, "%s/straight/checkpoint.safetensors", W);
    snprintf(fb, sizeof fb, "%s/split/checkpoint.safetensors", W);
    CHECK_MSG(files_equal(fa, fb), "%s: resumed optimizer state differs", spec);
}

/* normwise relative difference of two float tensors of the same name in two files */
static double max_tensor_diff(const char *pa, const char *pb, int *count)
{
    st_model_t a, b;
    ft_err_t e;
    *count = 0;
    if (st_open(&a, pa, &e) != 0)
        return INFINITY;
    if (st_open(&b, pb, &e) != 0) {
        st_close(&a);
        return INFINITY;
    }
    double worst = 0;
    for (int i = 0; i < a.ntensors; i++) {
        const st_tensor_t *x = &a.tensors[i], *y = st_find(&b, x->name);
        if (!y || st_numel(x) != st_numel(y)) {
            worst = INFINITY;
            continue;
        }
        int64_t n = st_numel(x);
        double *u = malloc((size_t)n * sizeof *u), *v = malloc((size_t)n * sizeof *v);
        st_read_f64(x, u, &e);
        st_read_f64(y, v, &e);
        double num = 0, den = 0;
        for (int64_t k = 0; k < n; k++) {
            num += (u[k] - v[k]) * (u[k] - v[k]);
            den += u[k] * u[k];
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(rel <= worst))
            worst = rel;
        free(u);
        free(v);
        (*count)++;
    }
    st_close(&a);
    st_close(&b);
    return worst;
}

static void test_grad_accumulation(void)
{
    CHECK(compile_and_train(FULL_SPEC, "acc1", "-s train.micro_batch=4 -s train.grad_accum=1 -s train.steps=4") == 0);
    CHECK(compile_and_train(FULL_SPEC, "acc4", "-s train.micro_batch=1 -s train.grad_accum=4 -s train.steps=4") == 0);
    char ma[4096], mb[4096];
    metrics_path(ma, sizeof ma, "acc1");
    metrics_path(mb, sizeof mb, "acc4");
    double la[8], lb[8], ga[8], gb[8];
    CHECK(read_metric(ma, "loss", la, NULL, 8) == 4 && read_metric(mb, "loss", lb, NULL, 8) == 4);
    CHECK(read_metric(ma, "grad_norm", ga, NULL, 8) == 4 && read_metric(mb, "grad_norm", gb, NULL, 8) == 4);
    for (int i = 0; i < 4; i++) {
        CHECK_NEAR(la[i], lb[i], 1e-6);
        CHECK_NEAR(ga[i], gb[i], 1e-5);
    }
    snprintf(ma, sizeof ma, "%s/acc1/model.safetensors", W);
    snprintf(mb, sizeof mb, "%s/acc4/model.safetensors", W);
    int n = 0;
    double d = max_tensor_diff(ma, mb, &n);
    CHECK_MSG(n > 10 && d < 1e-5, "weights after 4 steps differ by %.3g (normwise) over %d tensors", d, n);
}

/* The adapter's keys, dtypes and shapes, one line each as `ftc inspect` prints them,
 * equal the hand-written fixture. */
static void check_peft_layout(const char *adapter_dir)
{
    char cmd_out[4096];
    snprintf(cmd_out, sizeof cmd_out, "%s/keys.txt", W);
    CHECK(sh("%s/ftc inspect %s/adapter_model.safetensors > %s", bin_dir(), adapter_dir, cmd_out) == 0);
    CHECK_MSG(sh("grep -v '^#' tests/fixtures/peft-tiny-lora-keys.txt | diff - %s > /dev/null", cmd_out) == 0,
              "adapter keys differ from tests/fixtures/peft-tiny-lora-keys.txt");
    char cfgp[4200];
    snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", adapter_dir);
    json_error_t je;
    json_t *j = json_load_file(cfgp, 0, &je);
    CHECK_MSG(j != NULL, "%s: %s", cfgp, je.text);
    if (!j)
        return;
    CHECK(strcmp(json_string_value(json_object_get(j, "peft_type")), "LORA") == 0);
    CHECK(json_integer_value(json_object_get(j, "r")) == 8);
    CHECK(json_number_value(json_object_get(j, "lora_alpha")) == 16.0);
    CHECK(json_array_size(json_object_get(j, "target_modules")) == 7);
    CHECK(strcmp(json_string_value(json_object_get(j, "task_type")), "CAUSAL_LM") == 0);
    json_decref(j);
}

static double eval_loss(const char *plan, const char *extra)
{
    char log[4096];
    snprintf(log, sizeof log, "%s/eval.log", W);
    if (sh("%s/ftrun %s/%s --device cpu --eval %s > %s 2>&1", bin_dir(), W, plan, extra, log) != 0)
        return NAN;
    FILE *f = fopen(log, "r");
    char line[512];
    double v = NAN;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "eval loss ", 10) == 0)
            v = strtod(line + 10, NULL);
    if (f)
        fclose(f);
    return v;
}

static void test_lora_reapply(void)
{
    char o[4096];
    /* a base that is not random noise: a few steps of full fine-tuning, exported as HF */
    CHECK(compile(FULL_SPEC, "base.bin", "-s train.steps=5") == 0);
    snprintf(o, sizeof o, "--out %s/base", W);
    CHECK(train("base.bin", o) == 0);
    snprintf(o, sizeof o, "-s model.from=%s/base -s model.init=file -s train.steps=12 -s tuner.dropout=0.1", W);
    CHECK(compile(LORA_SPEC, "lora.bin", o) == 0);
    snprintf(o, sizeof o, "--out %s/lora", W);
    CHECK(train("lora.bin", o) == 0);
    char adapter[4096];
    snprintf(adapter, sizeof adapter, "%s/lora", W);
    check_peft_layout(adapter);
    /* evaluation without dropout: the trained state from the checkpoint ... */
    snprintf(o, sizeof o, "-s model.from=%s/base -s model.init=file -s train.steps=12 -s tuner.dropout=0", W);
    CHECK(compile(LORA_SPEC, "lora_eval.bin", o) == 0);
    snprintf(o, sizeof o, "--resume %s/lora", W);
    double l0 = eval_loss("lora_eval.bin", o);
    /* ... the adapter loaded back as a PEFT folder ... */
    snprintf(o, sizeof o, "-s model.from=%s/base -s model.init=file -s tuner.init=%s/lora -s tuner.dropout=0", W, W);
    CHECK(compile(LORA_SPEC, "lora_init.bin", o) == 0);
    double l1 = eval_loss("lora_init.bin", "");
    /* ... and the adapter folded into the base weights */
    CHECK(sh("%s/ftc merge %s/base %s/lora -o %s/merged > %s/merge.log 2>&1", bin_dir(), W, W, W, W) == 0);
    snprintf(o, sizeof o, "-s model.from=%s/merged -s model.init=file", W);
    CHECK(compile(FULL_SPEC, "merged.bin", o) == 0);
    double l2 = eval_loss("merged.bin", "");
    snprintf(o, sizeof o, "-s model.from=%s/base -s model.init=file", W);
    CHECK(compile(FULL_SPEC, "base_eval.bin", o) == 0);
    double lb = eval_loss("base_eval.bin", "");
    CHECK_MSG(isfinite(l0) && l0 == l1, "adapter reloaded: %.9g vs trained %.9g", l1, l0);
    CHECK_MSG(fabs(l2 - l1) <= 1e-5 * l1, "merged model loss %.9g vs LoRA model %.9g", l2, l1);
    CHECK_MSG(fabs(lb - l1) > 1e-3, "the adapter changed nothing (base %.9g, adapted %.9g)", lb, l1);
}

static long long grep_number(const char *file, const char *prefix)
{
    FILE *f = fopen(file, "r");
    char line[1024];
    long long v = -1;
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, prefix);
        if (p)
            v = strtoll(p + strlen(prefix), NULL, 10);
    }
    if (f)
        fclose(f);
    return v;
}

static void test_peak_matches_arena(const char *spec)
{
    CHECK(compile(spec, "peak.bin", "-s train.steps=1") == 0);
    char insp[4096], out[4096];
    snprintf(insp, sizeof insp, "%s/inspect.txt", W);
    CHECK(sh("%s/ftc inspect %s/peak.bin > %s", bin_dir(), W, insp) == 0);
    snprintf(out, sizeof out, "--out %s/peak", W);
    CHECK(train("peak.bin", out) == 0);
    char m[4096];
    metrics_path(m, sizeof m, "peak");
    long long planned = grep_number(insp, "peak memory: ");
    long long used = grep_number(m, "\"arena_bytes\": ");
    CHECK_MSG(planned > 0 && planned == used, "%s: inspect says %lld bytes, the executor allocated %lld", spec,
              planned, used);
}

static void test_grad_norm_before_clipping(void)
{
    CHECK(compile_and_train(FULL_SPEC, "clip", "-s train.steps=3 -s train.grad_clip=0.001") == 0);
    CHECK(compile_and_train(FULL_SPEC, "noclip", "-s train.steps=3 -s train.grad_clip=0") == 0);
    char ma[4096], mb[4096];
    metrics_path(ma, sizeof ma, "clip");
    metrics_path(mb, sizeof mb, "noclip");
    double ga[4], gb[4], la[4], lb[4];
    CHECK(read_metric(ma, "grad_norm", ga, NULL, 4) == 3 && read_metric(mb, "grad_norm", gb, NULL, 4) == 3);
    CHECK(read_metric(ma, "loss", la, NULL, 4) == 3 && read_metric(mb, "loss", lb, NULL, 4) == 3);
    CHECK_MSG(ga[0] == gb[0] && ga[0] > 0.001, "step 1 grad norm %.9g (clipped run) vs %.9g", ga[0], gb[0]);
    CHECK_MSG(la[0] == lb[0] && la[2] != lb[2], "clipping did not change the trajectory");
    CHECK(sh("grep -q '\"step\": 1, \"loss\": .*\"lr\": .*\"grad_norm\": .*\"tokens_per_s\": ' %s", ma) == 0);
}

static void test_dump_after(void)
{
    CHECK(sh("%s/ftc compile %s -o %s/d.bin --dump-after autodiff > %s/dump.txt 2>&1", bin_dir(), LORA_SPEC, W, W) == 0);
    CHECK(sh("grep -q '^# after autodiff' %s/dump.txt && grep -q 'acc:base_model.model' %s/dump.txt", W, W) == 0);
    CHECK(sh("%s/ftc compile %s -o %s/d.bin --dump-after nosuchpass > %s/dump.txt 2>&1", bin_dir(), LORA_SPEC, W, W) != 0);
    CHECK(sh("grep -q \"no pass named 'nosuchpass'\" %s/dump.txt", W) == 0);
}

/* CPU runs carry no MFU (no device peak) and no device memory; --no-save writes the metrics
 * and nothing else. */
static void test_cpu_metrics_and_no_save(void)
{
    CHECK(compile(LORA_SPEC, "nosave.bin", "-s train.steps=3") == 0);
    char args[4096];
    snprintf(args, sizeof args, "--out %s/nosave --no-save", W);
    CHECK(train("nosave.bin", args) == 0);
    char m[4096];
    metrics_path(m, sizeof m, "nosave");
    double v[8];
    CHECK(read_metric(m, "loss", v, NULL, 8) == 3);
    CHECK_MSG(read_metric(m, "mfu", v, NULL, 8) == 0, "a CPU run reported MFU");
    CHECK_MSG(read_metric(m, "device_mem_bytes", v, NULL, 8) == 0, "a CPU run reported device memory");
    const char *none[] = {"checkpoint.safetensors", "adapter_model.safetensors", "adapter_config.json"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        char f[4096];
        snprintf(f, sizeof f, "%s/nosave/%s", W, none[i]);
        FILE *fp = fopen(f, "rb");
        CHECK_MSG(fp == NULL, "--no-save wrote %s", none[i]);
        if (fp)
            fclose(fp);
    }
}

static void test_gpu_peak_table(void)
{
    struct {
        const char *name;
        int major, minor;
        double want;
    } cases[] = {
        {"NVIDIA H100 80GB HBM3", 9, 0, 989.4e12}, {"NVIDIA H200", 9, 0, 989.4e12},
        {"NVIDIA GH200 480GB", 9, 0, 989.4e12},    {"NVIDIA H100 PCIe", 9, 0, 756.5e12},
        {"NVIDIA H100 NVL", 9, 0, 835.5e12},       {"NVIDIA A100-SXM4-80GB", 8, 0, 312e12},
        {"NVIDIA A100 80GB PCIe", 8, 0, 312e12},   {"NVIDIA GeForce RTX 4090", 8, 9, 0},
        {"NVIDIA H100 (wrong capability)", 8, 0, 0}, {"NVIDIA B200", 10, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rt_gpu_info_t gi = {.major = cases[i].major, .minor = cases[i].minor};
        snprintf(gi.name, sizeof gi.name, "%s", cases[i].name);
        CHECK_MSG(rt_gpu_peak_flops(&gi) == cases[i].want, "%s: %g", cases[i].name, rt_gpu_peak_flops(&gi));
    }
    CHECK(rt_gpu_peak_flops(NULL) == 0);
}

/* MFU's numerator leaves the recompute clones out: the same as the plan without recompute. */
static void test_model_flops_without_recompute(void)
{
    CHECK(compile(LORA_SPEC, "rc-none.bin", "-s train.recompute=none -s train.grad_accum=3") == 0);
    CHECK(compile(LORA_SPEC, "rc-full.bin", "-s train.recompute=full -s train.grad_accum=3") == 0);
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/rc-none.bin", W);
    snprintf(pb, sizeof pb, "%s/rc-full.bin", W);
    plan_t a, b;
    ft_err_t e;
    if (plan_read(pa, &a, &e) != 0 || plan_read(pb, &b, &e) != 0) {
        CHECK_MSG(0, "%s", e.msg);
        return;
    }
    double none = ir_step_flops(&a.g, 3, true), full = ir_step_flops(&b.g, 3, true);
    double model = ir_step_flops(&b.g, 3, false);
    CHECK_MSG(full > none * 1.1, "recompute adds no FLOPs: %g vs %g", full, none);
    CHECK_NEAR(model, none, 1e-12);
    CHECK_NEAR(ir_step_flops(&a.g, 3, false), none, 1e-12);
    double micro, opt, bytes;
    ir_cost(&a.g, IR_PH_MICRO, &micro, &bytes);
    ir_cost(&a.g, IR_PH_OPT, &opt, &bytes);
    CHECK_NEAR(none, 3 * micro + opt, 1e-12);
    plan_free(&a);
    plan_free(&b);
}

/* The seeded initialisers split over threads give the values of one thread, bit for bit. */
static void test_init_fill_threads(void)
{
    int64_t n = 3 * (1 << 20) + 5;
    plan_init_t kinds[] = {PLAN_INIT_NORMAL, PLAN_INIT_UNIFORM, PLAN_INIT_ONES};
    ir_dtype_t dts[] = {IR_F32, IR_BF16};
    for (size_t k = 0; k < 3; k++)
        for (size_t d = 0; d < 2; d++) {
            size_t bytes = (size_t)n * ir_dtype_size(dts[d]);
            unsigned char *one = malloc(bytes), *many = malloc(bytes);
            CHECK(rt_init_fill(kinds[k], 0.02, rt_init_seed(7, "model.layers.0.w"), dts[d], one, n, 1) == 1);
            CHECK(rt_init_fill(kinds[k], 0.02, rt_init_seed(7, "model.layers.0.w"), dts[d], many, n, 5) == 4);
            CHECK_MSG(memcmp(one, many, bytes) == 0, "init kind %d dtype %d: threads change the values", (int)kinds[k],
                      (int)dts[d]);
            free(one);
            free(many);
        }
    /* the normal stream has the asked-for spread */
    float *f = malloc((size_t)n * sizeof *f);
    rt_init_fill(PLAN_INIT_NORMAL, 0.02, rt_init_seed(1, "x"), IR_F32, f, n, 0);
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s1 += f[i];
        s2 += (double)f[i] * f[i];
    }
    double mean = s1 / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    CHECK_MSG(fabs(mean) < 1e-4 && fabs(sd - 0.02) < 2e-4, "normal init: mean %g, std %g", mean, sd);
    free(f);
}

int main(void)
{
    scratch_dir(W, sizeof W, "train");
    test_demo_learns_and_repeats();
    check_resume(FULL_SPEC, "-s train.steps=20", "model.safetensors");
    check_resume(LORA_SPEC, "-s train.steps=20 -s tuner.dropout=0.1", "adapter_model.safetensors");
    test_grad_accumulation();
    test_lora_reapply();
    test_peak_matches_arena(LORA_SPEC);
    test_peak_matches_arena(FULL_SPEC);
    test_grad_norm_before_clipping();
    test_dump_after();
    test_cpu_metrics_and_no_save();
    test_gpu_peak_table();
    test_model_flops_without_recompute();
    test_init_fill_threads();
    return CHECK_DONE();
}
