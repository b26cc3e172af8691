/* train.c — the training loop: per step, zero the gradient buffers, run the micro-batch
 * program once per micro-batch with that batch's tokens, fill the hyper-parameters (the
 * learning-rate schedule, bias corrections, 1/target tokens so that accumulation is
 * normalised by the step's token count), run the optimizer program, then report. Writes
 * the progress line, metrics.jsonl, checkpoints and the exported weights. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../models/models.h"
#include "device.h"
#include "exec.h"
#include "safetensors.h"
#include "tokdata.h"
#include "train.h"
#include "weights.h"

typedef struct {
    plan_t *p;
    const ft_config_t *c;
    const rt_train_opts_t *o;
    rt_exec_t x;
    td_file_t data;
    td_order_t order;
    int64_t nrows, steps;
    double model_flops; /* per optimizer step, recompute clones left out: MFU's numerator */
    int in_tokens, in_targets, in_pos, in_doc, in_rng, in_hyper, loss, gnorm;
    int32_t *tokens, *targets, *pos, *doc; /* one micro-batch */
    FILE *metrics;
    bool dumped; /* --dump-grads written (once, at the run's first step) */
    char out[FT_PATH_MAX];
} trainer_t;

double rt_lr_at(const ft_config_t *c, int64_t step)
{
    if (c->warmup > 0 && step < c->warmup)
        return c->lr * (double)step / (double)c->warmup;
    if (c->schedule == FT_SCHED_CONSTANT)
        return c->lr;
    int64_t span = c->steps - c->warmup;
    double progress = span > 0 ? (double)(step - c->warmup) / (double)span : 1.0;
    if (progress > 1)
        progress = 1;
    double f = c->schedule == FT_SCHED_LINEAR ? 1.0 - progress : 0.5 * (1.0 + cos(M_PI * progress));
    return c->lr * (c->min_lr_ratio + (1.0 - c->min_lr_ratio) * f);
}

static int find_input(const plan_t *p, const char *name, bool required, ft_err_t *e)
{
    int id = ir_find(&p->g, name);
    if (id < 0 && required)
        ft_fail(e, "plan has no tensor '%s'", name);
    return id;
}

static int bind_tensors(trainer_t *T, ft_err_t *e)
{
    const plan_t *p = T->p;
    T->in_tokens = find_input(p, MODEL_IN_TOKENS, true, e);
    T->in_targets = find_input(p, MODEL_IN_TARGETS, true, e);
    T->in_pos = find_input(p, MODEL_IN_POS, false, e);
    T->in_doc = find_input(p, MODEL_IN_DOC, false, e);
    T->in_rng = find_input(p, MODEL_IN_RNG, false, e);
    T->in_hyper = find_input(p, "hyper", true, e);
    T->loss = find_input(p, "loss", true, e);
    T->gnorm = find_input(p, "grad_norm", true, e);
    if (T->in_tokens < 0 || T->in_targets < 0 || T->in_hyper < 0 || T->loss < 0 || T->gnorm < 0)
        return -1;
    return 0;
}

static int open_data(trainer_t *T, ft_err_t *e)
{
    const char *path = T->o->data_path ? T->o->data_path : T->c->data_train;
    if (!path[0])
        return ft_fail(e, "no training data: set data.train in the spec or pass --data");
    if (td_open(&T->data, path, e) != 0)
        return -1;
    if ((int64_t)T->data.vocab_needed > T->c->vocab)
        return ft_fail(e, "%s: token ids go up to %u but the model's vocabulary has %lld entries", path,
                       T->data.vocab_needed - 1, (long long)T->c->vocab);
    T->nrows = td_nrows(&T->data, T->c->seq_len, T->c->packing, e);
    if (T->nrows <= 0)
        return -1;
    td_order_init(&T->order);
    return 0;
}

/* Fills the inputs of micro-batch number k (counted over the whole run); returns the
 * number of target tokens in it, or -1. */
static int64_t load_batch(trainer_t *T, int64_t k, bool in_file_order, ft_err_t *e)
{
    const ft_config_t *c = T->c;
    int64_t S = c->seq_len, B = c->micro_batch;
    for (int64_t b = 0; b < B; b++) {
        int64_t row_k = k * B + b;
        int64_t row = in_file_order ? row_k % T->nrows : td_row_for(&T->order, T->nrows, c->seed, row_k);
        if (td_batch(&T->data, S, c->packing, row, T->tokens + b * S, T->targets + b * S, T->pos + b * S,
                     T->doc + b * S, e) != 0)
            return -1;
    }
    rt_exec_t *x = &T->x;
    int32_t rng[2] = {(int32_t)(c->seed & 0x7fffffff), (int32_t)(k & 0x7fffffff)};
    if (x->ops->write(x, T->in_tokens, T->tokens, e) != 0 || x->ops->write(x, T->in_targets, T->targets, e) != 0 ||
        (T->in_pos >= 0 && x->ops->write(x, T->in_pos, T->pos, e) != 0) ||
        (T->in_doc >= 0 && x->ops->write(x, T->in_doc, T->doc, e) != 0) ||
        (T->in_rng >= 0 && x->ops->write(x, T->in_rng, rng, e) != 0))
        return -1;
    return td_count_targets(T->targets, B * S);
}

static int read_scalar(trainer_t *T, int id, double *v, ft_err_t *e) { return rt_exec_read_f64(&T->x, id, v, e); }

/* The first trainable weight holding a NaN or Inf, or -1. */
static int diverged_weight(trainer_t *T)
{
    const ir_graph_t *g = &T->p->g;
    for (int i = 0; i < g->n; i++) {
        if (g->t[i].role != IR_TRAINABLE)
            continue;
        int64_t n = ir_numel(&g->t[i]);
        double *v = ft_xmalloc((size_t)n * sizeof *v);
        ft_err_t ignored;
        bool bad = rt_exec_read_f64(&T->x, i, v, &ignored) != 0;
        for (int64_t k = 0; k < n && !bad; k++)
            bad = !isfinite(v[k]);
        free(v);
        if (bad)
            return i;
    }
    return -1;
}

/* Names what went bad: a weight the last update broke, or else the first op whose output
 * is not finite when the micro-batch is run again with every output checked. */
static int explain_nonfinite(trainer_t *T, int64_t step, const char *what, ft_err_t *e)
{
    int w = diverged_weight(T);
    if (w >= 0)
        return ft_fail(e, "step %lld: %s is not finite: weight '%s' holds NaN/Inf after the previous update "
                          "(training diverged: lower train.lr or set train.grad_clip)",
                       (long long)step + 1, what, T->p->g.t[w].name);
    int bad = -1;
    if (T->x.ops->find_nonfinite(&T->x, IR_PH_MICRO, &bad, e) != 0)
        return -1;
    if (bad < 0 && T->x.ops->find_nonfinite(&T->x, IR_PH_OPT, &bad, e) != 0)
        return -1;
    if (bad >= 0) {
        const ir_tensor_t *t = &T->p->g.t[bad];
        return ft_fail(e, "step %lld: %s is not finite; the first NaN/Inf comes from '%s' (%s)", (long long)step + 1,
                       what, t->name, ir_ops[t->op]->name);
    }
    return ft_fail(e, "step %lld: %s is not finite", (long long)step + 1, what);
}

static int set_hyper(trainer_t *T, int64_t step, int64_t ntok, ft_err_t *e)
{
    const ft_config_t *c = T->c;
    double h[IR_HYPER_COUNT] = {0};
    h[IR_HYPER_LR] = rt_lr_at(c, step);
    h[IR_HYPER_BETA1] = c->beta1;
    h[IR_HYPER_BETA2] = c->beta2;
    h[IR_HYPER_EPS] = c->adam_eps;
    h[IR_HYPER_WD] = c->weight_decay;
    h[IR_HYPER_BC1] = 1.0 - pow(c->beta1, (double)(step + 1));
    h[IR_HYPER_BC2] = 1.0 - pow(c->beta2, (double)(step + 1));
    h[IR_HYPER_INV_NTOK] = ntok > 0 ? 1.0 / (double)ntok : 0.0;
    h[IR_HYPER_CLIP] = c->grad_clip;
    return rt_exec_write_f64(&T->x, T->in_hyper, h, e);
}

static int zero_grads(trainer_t *T, ft_err_t *e)
{
    for (int i = 0; i < T->p->g.n; i++)
        if (T->p->g.t[i].role == IR_GRAD && T->x.ops->zero(&T->x, i, e) != 0)
            return -1;
    return 0;
}

/* --dump-grads: every gradient buffer as it stands after the step's micro-batches (sums over
 * the step's target tokens, before the optimizer scales or clips them), with the summed loss
 * and the target-token count, as one safetensors file written atomically. */
static int dump_grads(trainer_t *T, int64_t step, double loss_sum, int64_t ntok, ft_err_t *e)
{
    const ir_graph_t *g = &T->p->g;
    st_wtensor_t *w = ft_xcalloc((size_t)g->n + 2, sizeof *w);
    void **bufs = ft_xcalloc((size_t)g->n + 2, sizeof *bufs);
    int n = 0, rc = 0;
    for (int i = 0; i < g->n && rc == 0; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->role != IR_GRAD)
            continue;
        if (t->dtype != IR_F32) {
            rc = ft_fail(e, "--dump-grads: gradient buffer '%s' is not f32", t->name);
            break;
        }
        st_wtensor_t *o = &w[n];
        o->name = t->name;
        o->dtype = ST_F32;
        o->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            o->shape[d] = t->shape[d];
        o->data = bufs[n] = ft_xmalloc((size_t)ir_nbytes(t));
        rc = T->x.ops->read(&T->x, i, bufs[n++], e);
    }
    int64_t ntok64 = ntok;
    w[n++] = (st_wtensor_t){.name = "loss_sum", .dtype = ST_F64, .ndim = 1, .shape = {1}, .data = &loss_sum};
    w[n++] = (st_wtensor_t){.name = "target_tokens", .dtype = ST_I64, .ndim = 1, .shape = {1}, .data = &ntok64};
    char steps[32];
    snprintf(steps, sizeof steps, "%lld", (long long)step + 1);
    const char *meta[] = {"format", "ftc-grads", "step", steps, "device", T->x.ops->name, NULL};
    if (rc == 0)
        rc = st_write(T->o->dump_grads, w, n, meta, e);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(w);
    if (rc == 0)
        fprintf(stderr, "ftrun: gradients of step %lld written to %s\n", (long long)step + 1, T->o->dump_grads);
    return rc;
}

typedef struct {
    double loss, gnorm, lr;
    int64_t ntok, tokens;
} step_stats_t;

static int train_step(trainer_t *T, int64_t step, step_stats_t *st, ft_err_t *e)
{
    const ft_config_t *c = T->c;
    if (zero_grads(T, e) != 0)
        return -1;
    double loss_sum = 0;
    int64_t ntok = 0;
    for (int64_t micro = 0; micro < c->grad_accum; micro++) {
        int64_t n = load_batch(T, step * c->grad_accum + micro, false, e);
        double l = 0;
        if (n < 0 || T->x.ops->run(&T->x, IR_PH_MICRO, e) != 0 || read_scalar(T, T->loss, &l, e) != 0)
            return -1;
        if (!isfinite(l))
            return explain_nonfinite(T, step, "the loss", e);
        loss_sum += l;
        ntok += n;
    }
    if (T->o->dump_grads && !T->dumped) {
        if (dump_grads(T, step, loss_sum, ntok, e) != 0)
            return -1;
        T->dumped = true;
    }
    if (set_hyper(T, step, ntok, e) != 0 || T->x.ops->run(&T->x, IR_PH_OPT, e) != 0 ||
        read_scalar(T, T->gnorm, &st->gnorm, e) != 0)
        return -1;
    if (!isfinite(st->gnorm))
        return explain_nonfinite(T, step, "the gradient norm", e);
    st->loss = ntok > 0 ? loss_sum / (double)ntok : 0.0;
    st->lr = rt_lr_at(c, step);
    st->ntok = ntok;
    st->tokens = c->grad_accum * c->micro_batch * c->seq_len;
    return 0;
}

static void fmt_eta(double s, char *buf, size_t cap)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

static void report(trainer_t *T, int64_t step, const step_stats_t *st, double step_s, double elapsed, double avg_s)
{
    double tps = step_s > 0 ? (double)st->tokens / step_s : 0;
    /* device memory, where the executor measures it (the CPU's lines stay as they were) */
    int64_t mem_now = 0, mem_peak = 0;
    ft_err_t ignored;
    bool mem = T->x.ops->device_mem && T->x.ops->device_mem(&T->x, &mem_now, &mem_peak, &ignored) == 0;
    char mem_json[64] = "", mem_text[48] = "";
    if (mem) {
        snprintf(mem_json, sizeof mem_json, ", \"device_mem_bytes\": %lld", (long long)mem_peak);
        snprintf(mem_text, sizeof mem_text, " | peak %.2f GiB", (double)mem_peak / 1073741824.0);
    }
    /* model FLOP utilisation, where the executor knows its device's peak (not on the CPU) */
    char mfu_json[40] = "", mfu_text[24] = "";
    if (T->x.peak_flops > 0 && step_s > 0 && T->model_flops > 0) {
        double mfu = T->model_flops / step_s / T->x.peak_flops;
        snprintf(mfu_json, sizeof mfu_json, ", \"mfu\": %.5f", mfu);
        snprintf(mfu_text, sizeof mfu_text, " | MFU %.1f%%", 100.0 * mfu);
    }
    if (T->metrics) {
        fprintf(T->metrics,
                "{\"step\": %lld, \"loss\": %.17g, \"lr\": %.17g, \"grad_norm\": %.17g, \"tokens_per_s\": %.1f, "
                "\"target_tokens\": %lld, \"step_s\": %.6f, \"elapsed_s\": %.3f, \"arena_bytes\": %lld%s%s}\n",
                (long long)step + 1, st->loss, st->lr, st->gnorm, tps, (long long)st->ntok, step_s, elapsed,
                (long long)T->x.arena_bytes, mem_json, mfu_json);
        fflush(T->metrics);
    }
    if (T->o->quiet || ((step + 1) % (T->c->log_every > 0 ? T->c->log_every : 1) != 0 && step + 1 != T->steps))
        return;
    char eta[32];
    fmt_eta(avg_s * (double)(T->steps - step - 1), eta, sizeof eta);
    printf("step %5lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s%s%s | eta %s\n", (long long)step + 1,
           (long long)T->steps, st->loss, st->lr, st->gnorm, tps, mfu_text, mem_text, eta);
    fflush(stdout);
}

static int open_metrics(trainer_t *T, bool append, ft_err_t *e)
{
    char path[FT_PATH_MAX + 32];
    ft_path_join(path, sizeof path, T->out, "metrics.jsonl");
    T->metrics = fopen(path, append ? "a" : "w");
    if (!T->metrics)
        return ft_fail(e, "%s: cannot open: %s", path, strerror(errno));
    return 0;
}

static int run_eval(trainer_t *T, ft_err_t *e)
{
    double loss_sum = 0;
    int64_t ntok = 0;
    for (int64_t micro = 0; micro < T->c->grad_accum; micro++) {
        int64_t n = load_batch(T, micro, true, e);
        double l = 0;
        if (n < 0 || T->x.ops->run(&T->x, IR_PH_MICRO, e) != 0 || read_scalar(T, T->loss, &l, e) != 0)
            return -1;
        loss_sum += l;
        ntok += n;
    }
    printf("eval loss %.9g over %lld target tokens\n", ntok > 0 ? loss_sum / (double)ntok : 0.0, (long long)ntok);
    return 0;
}

/* Set by SIGINT/SIGTERM: the loop finishes the step it is in, saves a checkpoint and
 * stops, so an interrupted run loses nothing. The one piece of process-wide state: a
 * signal handler can reach nothing else. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void catch_signals(bool on)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on ? on_signal : SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static int train_loop(trainer_t *T, int64_t start, ft_err_t *e)
{
    double t0 = ft_now();
    int64_t stop = T->o->stop_after > 0 && T->o->stop_after < T->steps ? T->o->stop_after : T->steps;
    interrupted = 0;
    for (int64_t step = start; step < stop; step++) {
        if (interrupted) {
            stop = step;
            printf("interrupted at step %lld\n", (long long)step);
            break;
        }
        double ts = ft_now();
        step_stats_t st = {0};
        if (train_step(T, step, &st, e) != 0)
            return -1;
        double now = ft_now();
        report(T, step, &st, now - ts, now - t0, (now - t0) / (double)(step - start + 1));
        int64_t every = T->o->no_save ? 0 : T->c->save_every;
        if (every > 0 && (step + 1) % every == 0 && step + 1 < stop && rt_ckpt_save(T->out, &T->x, T->p, step + 1, e) != 0)
            return -1;
    }
    if (T->o->no_save) {
        printf("done: %lld steps in %.1f s; nothing saved (--no-save)\n", (long long)(stop - start), ft_now() - t0);
        return interrupted ? 1 : 0;
    }
    if (rt_ckpt_save(T->out, &T->x, T->p, stop, e) != 0)
        return -1;
    if (stop < T->steps) {
        printf("stopped after step %lld of %lld; resume with --resume %s\n", (long long)stop, (long long)T->steps, T->out);
        return interrupted ? 1 : 0;
    }
    if (rt_export(T->out, &T->x, T->p, e) != 0)
        return -1;
    printf("done: %lld steps in %.1f s; %s written to %s\n", (long long)(stop - start), ft_now() - t0,
           T->c->tuner == FT_TUNER_LORA ? "adapter" : "model", T->out);
    return 0;
}

/* The executor `o->device` asks for: "auto" takes the GPU where the plan has kernels for it
 * and says so when it falls back to the CPU. */
static int open_executor(trainer_t *T, ft_err_t *e)
{
    bool cuda = false;
    char notice[768] = "";
    if (rt_device_choose(T->p, T->o->device, &cuda, notice, sizeof notice, e) != 0)
        return -1;
    if (notice[0])
        fprintf(stderr, "ftrun: notice: %s\n", notice);
    if (!cuda && T->o->profile)
        return ft_fail(e, "--profile times GPU kernels; this run is on the CPU");
    int rc = cuda ? rt_exec_open_cuda(&T->x, T->p, e) : rt_exec_open_cpu(&T->x, &T->p->g, e);
    T->x.profile = T->o->profile;
    return rc;
}

static void trainer_free(trainer_t *T)
{
    if (T->metrics)
        fclose(T->metrics);
    free(T->tokens);
    free(T->targets);
    free(T->pos);
    free(T->doc);
    td_order_free(&T->order);
    if (T->data.map)
        td_close(&T->data);
    rt_exec_close(&T->x);
}

int rt_train(plan_t *p, const rt_train_opts_t *o, ft_err_t *e)
{
    trainer_t T = {.p = p, .c = &p->cfg, .o = o};
    snprintf(T.out, sizeof T.out, "%s", o->out_dir ? o->out_dir : "run");
    T.steps = o->steps > 0 ? o->steps : p->cfg.steps;
    p->cfg.steps = T.steps; /* the schedule follows the overridden length */
    T.model_flops = ir_step_flops(&p->g, p->cfg.grad_accum, false);
    int64_t n = p->cfg.micro_batch * p->cfg.seq_len;
    T.tokens = ft_xmalloc((size_t)n * sizeof(int32_t));
    T.targets = ft_xmalloc((size_t)n * sizeof(int32_t));
    T.pos = ft_xmalloc((size_t)n * sizeof(int32_t));
    T.doc = ft_xmalloc((size_t)n * sizeof(int32_t));
    int64_t start = 0;
    int rc = bind_tensors(&T, e);
    if (rc == 0)
        rc = open_data(&T, e);
    if (rc == 0)
        rc = open_executor(&T, e);
    if (rc == 0)
        rc = rt_weights_init(&T.x, p, e);
    if (rc == 0 && o->resume_dir)
        rc = rt_ckpt_load(o->resume_dir, &T.x, p, &start, e);
    if (rc == 0 && o->eval_only) {
        rc = run_eval(&T, e);
        trainer_free(&T);
        return rc;
    }
    if (rc == 0 && start >= T.steps)
        rc = ft_fail(e, "the checkpoint is at step %lld, which is not before the last step (%lld)", (long long)start,
                     (long long)T.steps);
    if (rc == 0)
        rc = ft_mkdir_p(T.out, e);
    if (rc == 0)
        rc = open_metrics(&T, o->resume_dir != NULL, e);
    if (rc == 0) {
        catch_signals(true);
        printf("training: %lld steps from step %lld, %lld tokens per step, arena %lld bytes (%s)\n",
               (long long)T.steps, (long long)start,
               (long long)(p->cfg.grad_accum * p->cfg.micro_batch * p->cfg.seq_len),
               (long long)T.x.arena_bytes, T.x.desc[0] ? T.x.desc : "CPU reference executor");
        rc = train_loop(&T, start, e);
        catch_signals(false);
    }
    trainer_free(&T);
    return rc;
}
