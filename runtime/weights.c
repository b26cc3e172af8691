/* weights.c — first values of the weights, per the plan's manifest: by HF name from the
 * model's safetensors, by PEFT key from an adapter folder, or from a seeded initialiser
 * whose stream depends only on the seed and the tensor's name (so a run is reproducible
 * and resume can rebuild frozen weights instead of storing them). */
#include <math.h>
#include <pthread.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "../common/common.h"
#include "safetensors.h"
#include "tokdata.h"
#include "weights.h"

static uint64_t name_seed(uint64_t seed, const char *name)
{
    return ft_fnv1a(FT_FNV_INIT ^ (seed * 0x9e3779b97f4a7c15ULL), name, strlen(name));
}

/* Output k of a splitmix64 stream that starts at `seed`: random access, so value i of a
 * tensor does not depend on the values before it (codegen/kernels/init.cuh computes the
 * same bits on the GPU; tests/gpu/test_kernels.c checks that). */
static uint64_t stream_at(uint64_t seed, uint64_t k)
{
    uint64_t z = seed + (k + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Normal values are the sum of twelve 16-bit uniforms (Irwin-Hall: mean 0, variance 1, no
 * value beyond 6 sigma): integer arithmetic and one rounding, so the GPU matches exactly. */
double rt_init_value(plan_init_t kind, double param, uint64_t seed, int64_t i)
{
    uint64_t k = (uint64_t)i;
    switch (kind) {
    case PLAN_INIT_NORMAL: {
        int64_t s = 0;
        for (uint64_t w = 0; w < 3; w++) {
            uint64_t h = stream_at(seed, 3 * k + w);
            for (int q = 0; q < 4; q++)
                s += (int64_t)((h >> (16 * q)) & 0xffff);
        }
        return (double)(s + 6 - 6 * 65536) / 65536.0 * param;
    }
    case PLAN_INIT_ONES: return 1;
    case PLAN_INIT_ZEROS: return 0;
    case PLAN_INIT_UNIFORM: {
        double u = ((double)(stream_at(seed, k) >> 11) + 0.5) / 9007199254740992.0;
        return (2 * u - 1) * param;
    }
    default: return 0;
    }
}

uint64_t rt_init_seed(uint64_t seed, const char *name) { return name_seed(seed, name); }

typedef struct {
    plan_init_t kind;
    double param;
    uint64_t seed;
    ir_dtype_t dtype;
    unsigned char *dst;
    int64_t begin, end;
} init_job_t;

/* One thread's share: values [begin, end) through a small float64 block into dtype storage. */
static void *init_range(void *arg)
{
    const init_job_t *j = arg;
    enum { BLOCK = 4096 };
    double v[BLOCK];
    size_t es = ir_dtype_size(j->dtype);
    for (int64_t i = j->begin; i < j->end; i += BLOCK) {
        int64_t n = j->end - i < BLOCK ? j->end - i : BLOCK;
        for (int64_t k = 0; k < n; k++)
            v[k] = rt_init_value(j->kind, j->param, j->seed, i + k);
        rt_store_f64(j->dtype, v, n, j->dst + (size_t)i * es);
    }
    return NULL;
}

/* Below this many values a tensor is filled by the calling thread alone. */
#define INIT_SPLIT_MIN (1 << 20)

int rt_init_fill(plan_init_t kind, double param, uint64_t seed, ir_dtype_t dt, void *dst, int64_t n, int nthreads)
{
    init_job_t base = {kind, param, seed, dt, dst, 0, n};
    if (nthreads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cpus > 0 ? (int)(cpus < 32 ? cpus : 32) : 1;
    }
    int64_t most = n / INIT_SPLIT_MIN + 1;
    if (nthreads > most)
        nthreads = (int)most;
    if (nthreads <= 1) {
        init_range(&base);
        return 1;
    }
    init_job_t *jobs = ft_xcalloc((size_t)nthreads, sizeof *jobs);
    pthread_t *tid = ft_xcalloc((size_t)nthreads, sizeof *tid);
    bool *started = ft_xcalloc((size_t)nthreads, sizeof *started);
    int64_t per = (n + nthreads - 1) / nthreads;
    for (int k = 0; k < nthreads; k++) {
        jobs[k] = base;
        jobs[k].begin = (int64_t)k * per < n ? (int64_t)k * per : n;
        jobs[k].end = jobs[k].begin + per < n ? jobs[k].begin + per : n;
        /* a thread that cannot be started leaves its share to this one */
        started[k] = k > 0 && pthread_create(&tid[k], NULL, init_range, &jobs[k]) == 0;
    }
    init_range(&jobs[0]);
    for (int k = 1; k < nthreads; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            init_range(&jobs[k]);
    }
    free(started);
    free(tid);
    free(jobs);
    return nthreads;
}

int rt_init_host(rt_exec_t *x, int id, plan_init_t kind, double param, uint64_t seed, ft_err_t *e)
{
    const ir_tensor_t *t = &x->g->t[id];
    void *buf = ft_xmalloc((size_t)ir_nbytes(t));
    rt_init_fill(kind, param, seed, t->dtype, buf, ir_numel(t), 0);
    int rc = x->ops->write(x, id, buf, e);
    free(buf);
    return rc;
}

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

static bool same_storage(st_dtype_t st, ir_dtype_t ir)
{
    return (st == ST_F32 && ir == IR_F32) || (st == ST_BF16 && ir == IR_BF16) || (st == ST_F16 && ir == IR_F16);
}

/* Copies a stored tensor into the arena after checking it is the one the config needs:
 * straight from the file's mapping where the dtypes agree (a bf16 checkpoint into a bf16
 * arena), else converted through float64 on the host. */
static int load_tensor(rt_exec_t *x, int id, const st_model_t *m, const char *src, const char *key, ft_err_t *e)
{
    const ir_tensor_t *t = &x->g->t[id];
    const st_tensor_t *st = st_find(m, key);
    if (!st)
        return ft_fail(e, "%s: no tensor '%s' (the config needs it)", src, key);
    bool same = st->ndim == t->ndim;
    for (int i = 0; same && i < t->ndim; i++)
        same = st->shape[i] == t->shape[i];
    if (!same) {
        char have[96], want[96];
        shape_text(st->ndim, st->shape, have, sizeof have);
        shape_text(t->ndim, t->shape, want, sizeof want);
        return ft_fail(e, "%s: tensor '%s' has shape %s but the config needs %s", src, key, have, want);
    }
    if (st->dtype != ST_F32 && st->dtype != ST_BF16 && st->dtype != ST_F16 && st->dtype != ST_F64)
        return ft_fail(e, "%s: tensor '%s' has dtype %s; weights must be F32, BF16, F16 or F64", src, key,
                       st_dtype_name(st->dtype));
    if (same_storage(st->dtype, t->dtype) && st->nbytes == (size_t)ir_nbytes(t))
        return x->ops->write(x, id, st->data, e);
    double *buf = ft_xmalloc((size_t)ir_numel(t) * sizeof *buf);
    int rc = st_read_f64(st, buf, e);
    if (rc == 0)
        rc = rt_exec_write_f64(x, id, buf, e);
    free(buf);
    return rc;
}

/* A seeded initialiser: on the device where the executor can (the values are the host's
 * bit for bit, and an 8B-parameter model takes a second there instead of minutes here). */
static int init_random(rt_exec_t *x, const plan_weight_t *w, uint64_t seed, ft_err_t *e)
{
    if (x->ops->init_random)
        return x->ops->init_random(x, w->tensor, w->init, w->param, seed, e);
    return rt_init_host(x, w->tensor, w->init, w->param, seed, e);
}

static int open_sources(const plan_t *p, st_model_t *base, st_model_t *adapter, bool *has_base, bool *has_adapter,
                        ft_err_t *e)
{
    bool need_base = false, need_adapter = false;
    for (int i = 0; i < p->nw; i++) {
        need_base |= p->w[i].init == PLAN_INIT_FILE;
        need_adapter |= p->w[i].init == PLAN_INIT_ADAPTER;
    }
    if (need_base && st_open(base, p->cfg.from, e) != 0)
        return -1;
    *has_base = need_base;
    if (need_adapter) {
        char path[FT_PATH_MAX + 64];
        ft_path_join(path, sizeof path, p->cfg.lora_init, "adapter_model.safetensors");
        if (st_open(adapter, path, e) != 0) {
            if (need_base)
                st_close(base);
            return -1;
        }
    }
    *has_adapter = need_adapter;
    return 0;
}

int rt_weights_init(rt_exec_t *x, const plan_t *p, ft_err_t *e)
{
    st_model_t base = {0}, adapter = {0};
    bool has_base = false, has_adapter = false;
    if (open_sources(p, &base, &adapter, &has_base, &has_adapter, e) != 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < p->nw && rc == 0; i++) {
        const plan_weight_t *w = &p->w[i];
        const ir_tensor_t *t = &p->g.t[w->tensor];
        if (w->init == PLAN_INIT_FILE) {
            rc = load_tensor(x, w->tensor, &base, p->cfg.from, w->key, e);
        } else if (w->init == PLAN_INIT_ADAPTER) {
            rc = load_tensor(x, w->tensor, &adapter, p->cfg.lora_init, w->key, e);
        } else {
            uint64_t seed = t->role == IR_TRAINABLE && p->cfg.tuner == FT_TUNER_LORA ? p->cfg.seed : p->cfg.init_seed;
            rc = init_random(x, w, name_seed(seed, t->name), e);
        }
    }
    for (int i = 0; i < p->g.n && rc == 0; i++)
        if (p->g.t[i].role == IR_GRAD || p->g.t[i].role == IR_OPTSTATE)
            rc = x->ops->zero(x, i, e);
    if (has_base)
        st_close(&base);
    if (has_adapter)
        st_close(&adapter);
    return rc;
}
