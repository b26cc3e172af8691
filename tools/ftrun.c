/* ftrun.c — runs a compiled plan: trains, evaluates or resumes. */
#include <stdlib.h>
#include <string.h>

#include "runtime/plan.h"
#include "runtime/train.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: ftrun PLAN.bin [--device auto|cpu|cuda] [--steps N] [--data FILE.tok] [--out DIR]\n"
               "             [--resume DIR] [--stop-after N] [--eval] [--quiet] [--no-save] [--dump-grads FILE.safetensors]\n"
               "             [--profile FILE]\n"
               "  --no-save          write no checkpoint and no trained weights, only metrics.jsonl (benchmarks)\n"
               "  --dump-grads FILE  after the first step's micro-batches, write every gradient (grad:<weight>, F32\n"
               "                     sums over the step's target tokens), loss_sum and target_tokens to FILE\n"
               "  --profile FILE     (GPU) time every node of the third step launch by launch; append one line per\n"
               "                     node and a per-op summary (ms, share, TFLOP/s, GB/s) to FILE\n");
}

static int parse_i64(const char *s, int64_t *v)
{
    char *end = NULL;
    long long x = strtoll(s, &end, 10);
    if (!end || *end || x <= 0)
        return -1;
    *v = x;
    return 0;
}

typedef struct {
    const char *plan, *device;
    rt_train_opts_t o;
} run_args_t;

static int parse_args(int argc, char **argv, run_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->device = "auto";
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (strcmp(s, "--device") == 0 && v)
            a->device = v;
        else if (strcmp(s, "--steps") == 0 && v) {
            if (parse_i64(v, &a->o.steps) != 0)
                return fprintf(stderr, "ftrun: --steps needs a positive whole number, got '%s'\n", v), -1;
        } else if (strcmp(s, "--stop-after") == 0 && v) {
            if (parse_i64(v, &a->o.stop_after) != 0)
                return fprintf(stderr, "ftrun: --stop-after needs a positive whole number, got '%s'\n", v), -1;
        } else if (strcmp(s, "--data") == 0 && v)
            a->o.data_path = v;
        else if (strcmp(s, "--out") == 0 && v)
            a->o.out_dir = v;
        else if (strcmp(s, "--resume") == 0 && v)
            a->o.resume_dir = v;
        else if (strcmp(s, "--dump-grads") == 0 && v)
            a->o.dump_grads = v;
        else if (strcmp(s, "--profile") == 0 && v)
            a->o.profile = v;
        else {
            used = 0;
            if (strcmp(s, "--eval") == 0)
                a->o.eval_only = true;
            else if (strcmp(s, "--quiet") == 0)
                a->o.quiet = true;
            else if (strcmp(s, "--no-save") == 0)
                a->o.no_save = true;
            else if (s[0] != '-' && !a->plan)
                a->plan = s;
            else
                return fprintf(stderr, "ftrun: unexpected argument '%s'\n", s), -1;
        }
        i += used;
    }
    if (!a->plan)
        return fprintf(stderr, "ftrun: no plan file given\n"), -1;
    if (strcmp(a->device, "auto") && strcmp(a->device, "cpu") && strcmp(a->device, "cuda"))
        return fprintf(stderr, "ftrun: --device must be auto, cpu or cuda, got '%s'\n", a->device), -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    run_args_t a;
    if (parse_args(argc, argv, &a) != 0) {
        usage(stderr);
        return 2;
    }
    plan_t p;
    ft_err_t e;
    if (plan_read(a.plan, &p, &e) != 0) {
        fprintf(stderr, "ftrun: %s\n", e.msg);
        return 1;
    }
    a.o.device = a.device; /* resolved against the plan and the machine by rt_train */
    int rc = rt_train(&p, &a.o, &e);
    if (rc < 0)
        fprintf(stderr, "ftrun: %s\n", e.msg);
    plan_free(&p);
    return rc < 0 ? 1 : rc == 1 ? 130 : 0;
}
