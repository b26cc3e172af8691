/* weights.c — first values of the weights, per the plan's manifest: by HF name from the
 * model's safetensors, by PEFT key from an adapter folder, or from a seeded initialiser
 * whose stream depends only on the seed and the tensor's name (so a run is reproducible
 * and resume can rebuild frozen weights instead of storing them). */
#include <math.h>
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

static double uniform01(uint64_t *s) { return ((double)(td_splitmix64(s) >> 11) + 0.5) / 9007199254740992.0; }

static void init_values(const plan_weight_t *w, const char *name, uint64_t seed, double *v, int64_t n)
{
    uint64_t s = name_seed(seed, name);
    for (int64_t i = 0; i < n; i++) {
        switch (w->init) {
        case PLAN_INIT_ONES: v[i] = 1; break;
        case PLAN_INIT_ZEROS: v[i] = 0; break;
        case PLAN_INIT_UNIFORM: v[i] = (2 * uniform01(&s) - 1) * w->param; break;
        case PLAN_INIT_NORMAL: { /* Box-Muller */
            double u1 = uniform01(&s), u2 = uniform01(&s);
            v[i] = w->param * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
            break;
        }
        default: v[i] = 0; break;
        }
    }
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
        double *buf = ft_xmalloc((size_t)n * sizeof *buf);
        if (w->init == PLAN_INIT_FILE) {
            rc = load_tensor(x, w->tensor, &base, p->cfg.from, w->key, buf, e);
        } else if (w->init == PLAN_INIT_ADAPTER) {
            rc = load_tensor(x, w->tensor, &adapter, p->cfg.lora_init, w->key, buf, e);
        } else {
            uint64_t seed = t->role == IR_TRAINABLE && p->cfg.tuner == FT_TUNER_LORA ? p->cfg.seed : p->cfg.init_seed;
            init_values(w, t->name, seed, buf, n);
            rc = rt_exec_write_f64(x, w->tensor, buf, e);
        }
        free(buf);
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
