/* weights.c — first values of the weights, per the plan's manifest: by HF name from the
 * model's safetensors, by PEFT key from an adapter folder, or from a seeded initialiser
 * whose stream depends only on the seed and the tensor's name (so a run is reproducible
 * and resume can rebuild frozen weights instead of storing them). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/common.h"
#include "safetensors.h"
#include "tokdata.h"
#include "weights.h"

static uint64_t name_seed(uint64_t seed, const char *name)
{
    return ft_fnv1a(FT_FNV_INIT ^ (seed * 0x9e3779b97f4a7c15ULL), name, strlen(name));
}

static double uniform01(uint64_t *s) { return ((double)(td_splitmix64(s) >> 11) + 0.5) / 9007199254740992.0; }

/* splitmix64 draws per value of each initialiser: the generator's state only adds a constant
 * per draw, so value i's draws start at state0 + draws·i·gamma whatever came before. */
#define SPLITMIX_GAMMA 0x9e3779b97f4a7c15ull

static int draws_per_value(plan_init_t k) { return k == PLAN_INIT_NORMAL ? 2 : k == PLAN_INIT_UNIFORM ? 1 : 0; }

/* Values [i0, i0+n) of the tensor's stream into v. */
static void init_values(plan_init_t kind, double param, uint64_t state0, int64_t i0, double *v, int64_t n)
{
    uint64_t s = state0 + (uint64_t)draws_per_value(kind) * (uint64_t)i0 * SPLITMIX_GAMMA;
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case PLAN_INIT_ONES: v[i] = 1; break;
        case PLAN_INIT_ZEROS: v[i] = 0; break;
        case PLAN_INIT_UNIFORM: v[i] = (2 * uniform01(&s) - 1) * param; break;
        case PLAN_INIT_NORMAL: { /* Box-Muller */
            double u1 = uniform01(&s), u2 = uniform01(&s);
            v[i] = param * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
            break;
        }
        default: v[i] = 0; break;
        }
    }
}

typedef struct {
    plan_init_t kind;
    double param;
    uint64_t state0;
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
        init_values(j->kind, j->param, j->state0, i, v, n);
        rt_store_f64(j->dtype, v, n, j->dst + (size_t)i * es);
    }
    return NULL;
}

/* Below this many values a tensor is filled by the calling thread alone. */
#define INIT_SPLIT_MIN (1 << 20)

int rt_init_fill(plan_init_t kind, double param, uint64_t seed, const char *name, ir_dtype_t dt, void *dst, int64_t n,
                 int nthreads)
{
    init_job_t base = {kind, param, name_seed(seed, name), dt, dst, 0, n};
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

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

/* Copies a stored tensor into the arena after checking it is the one the config needs. */
static int load_tensor(rt_exec_t *x, int id, const st_model_t *m, const char *src, const char *key, double *buf,
                       ft_err_t *e)
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
    if (st_read_f64(st, buf, e) != 0)
        return -1;
    return rt_exec_write_f64(x, id, buf, e);
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
        int64_t n = ir_numel(t);
        if (w->init == PLAN_INIT_FILE || w->init == PLAN_INIT_ADAPTER) {
            double *buf = ft_xmalloc((size_t)n * sizeof *buf);
            if (w->init == PLAN_INIT_FILE)
                rc = load_tensor(x, w->tensor, &base, p->cfg.from, w->key, buf, e);
            else
                rc = load_tensor(x, w->tensor, &adapter, p->cfg.lora_init, w->key, buf, e);
            free(buf);
        } else {
            /* generated straight into the tensor's dtype, by several threads for a large one */
            uint64_t seed = t->role == IR_TRAINABLE && p->cfg.tuner == FT_TUNER_LORA ? p->cfg.seed : p->cfg.init_seed;
            void *buf = ft_xmalloc((size_t)(n > 0 ? ir_nbytes(t) : 1));
            rt_init_fill(w->init, w->param, seed, t->name, t->dtype, buf, n, 0);
            rc = x->ops->write(x, w->tensor, buf, e);
            free(buf);
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
