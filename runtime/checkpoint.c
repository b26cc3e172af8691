/* checkpoint.c — what a run needs to continue exactly where it stopped: the trainable
 * weights and their AdamW moments (bit for bit, as float32), the number of steps done and
 * the plan's fingerprint. Frozen weights are not stored: they are rebuilt from the same
 * source. The data position and dropout streams follow from the step count and the seed.
 * One safetensors file, written atomically, so an interrupted save leaves the last good
 * checkpoint in place. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "weights.h"

#define CKPT_FILE "checkpoint.safetensors"

/* Identifies the trainable set: names, shapes and the settings that shape the data. The
 * tensors' hashes are summed, so their order in the graph does not count (LoRA without
 * dropout shares one A product per input, which orders the adapters differently than with
 * dropout; a checkpoint of either still resumes the other). FP_VERSION marks this rule; a
 * fingerprint without it came from an ftc that hashed the tensors in graph order. */
#define FP_VERSION "2-"
static uint64_t fingerprint(const plan_t *p)
{
    uint64_t sum = 0;
    for (int i = 0; i < p->g.n; i++) {
        const ir_tensor_t *t = &p->g.t[i];
        if (t->role != IR_TRAINABLE)
            continue;
        uint64_t h = ft_fnv1a(FT_FNV_INIT, t->name, strlen(t->name));
        sum += ft_fnv1a(h, t->shape, sizeof t->shape[0] * (size_t)t->ndim);
    }
    int64_t k[4] = {p->cfg.seq_len, p->cfg.micro_batch, p->cfg.grad_accum, (int64_t)p->cfg.seed};
    return ft_fnv1a(ft_fnv1a(FT_FNV_INIT, &sum, sizeof sum), k, sizeof k);
}

/* Adds tensor `id`'s bytes (copied off the device) under the name prefix + t's name. */
static int add_tensor(rt_exec_t *x, st_wtensor_t *w, int *n, char **names, void **bufs, const ir_tensor_t *t, int id,
                      const char *prefix, ft_err_t *e)
{
    bufs[*n] = ft_xmalloc((size_t)ir_nbytes(&x->g->t[id]));
    if (x->ops->read(x, id, bufs[*n], e) != 0) {
        free(bufs[*n]);
        return -1;
    }
    const void *data = bufs[*n];
    size_t len = strlen(prefix) + strlen(t->name) + 1;
    names[*n] = ft_xmalloc(len);
    snprintf(names[*n], len, "%s%s", prefix, t->name);
    st_wtensor_t *o = &w[*n];
    memset(o, 0, sizeof *o);
    o->name = names[*n];
    o->dtype = ST_F32;
    o->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++)
        o->shape[d] = t->shape[d];
    o->data = data;
    (*n)++;
    return 0;
}

int rt_ckpt_save(const char *dir, rt_exec_t *x, const plan_t *p, int64_t step, ft_err_t *e)
{
    const ir_graph_t *g = &p->g;
    st_wtensor_t *w = ft_xcalloc((size_t)g->n * 3 + 1, sizeof *w);
    char **names = ft_xcalloc((size_t)g->n * 3 + 1, sizeof *names);
    void **bufs = ft_xcalloc((size_t)g->n * 3 + 1, sizeof *bufs);
    int n = 0, rc = 0;
    for (int i = 0; i < g->n && rc == 0; i++) {
        const ir_tensor_t *t = &g->t[i];
        if (t->role != IR_TRAINABLE || t->dtype != IR_F32 || t->state[0] < 0)
            continue;
        if (add_tensor(x, w, &n, names, bufs, t, i, "", e) != 0 ||
            add_tensor(x, w, &n, names, bufs, t, t->state[0], "adam_m:", e) != 0 ||
            add_tensor(x, w, &n, names, bufs, t, t->state[1], "adam_v:", e) != 0)
            rc = -1;
    }
    char steps[32], fp[32];
    snprintf(steps, sizeof steps, "%" PRId64, step);
    snprintf(fp, sizeof fp, FP_VERSION "%016" PRIx64, fingerprint(p));
    const char *meta[] = {"format", "ftc-checkpoint", "step", steps, "fingerprint", fp, NULL};
    char path[FT_PATH_MAX + 64];
    ft_path_join(path, sizeof path, dir, CKPT_FILE);
    if (rc == 0)
        rc = st_write(path, w, n, meta, e);
    for (int i = 0; i < n; i++) {
        free(names[i]);
        free(bufs[i]);
    }
    free(names);
    free(bufs);
    free(w);
    return rc;
}

static int restore(rt_exec_t *x, const st_model_t *m, const char *path, int id, ft_err_t *e)
{
    const ir_tensor_t *t = &x->g->t[id];
    const char *key = t->name;
    const st_tensor_t *st = st_find(m, key);
    if (!st)
        return ft_fail(e, "%s: no tensor '%s'", path, key);
    if (st->dtype != ST_F32 || (int64_t)st->nbytes != ir_nbytes(t))
        return ft_fail(e, "%s: tensor '%s' has the wrong dtype or size", path, key);
    /* the mapping may be unaligned for the device copy: go through an aligned buffer */
    void *buf = ft_xmalloc(st->nbytes);
    memcpy(buf, st->data, st->nbytes);
    int rc = x->ops->write(x, id, buf, e);
    free(buf);
    return rc;
}

int rt_ckpt_load(const char *dir, rt_exec_t *x, const plan_t *p, int64_t *step, ft_err_t *e)
{
    char path[FT_PATH_MAX + 64];
    ft_path_join(path, sizeof path, dir, CKPT_FILE);
    st_model_t m;
    if (st_open(&m, path, e) != 0)
        return -1;
    const char *fmt = st_meta(&m, "format"), *s = st_meta(&m, "step"), *fp = st_meta(&m, "fingerprint");
    char want[32];
    snprintf(want, sizeof want, FP_VERSION "%016" PRIx64, fingerprint(p));
    int rc = 0;
    char *end = NULL;
    if (!fmt || strcmp(fmt, "ftc-checkpoint") != 0 || !s || !fp)
        rc = ft_fail(e, "%s: not an ftc checkpoint (metadata missing)", path);
    else if (strncmp(fp, FP_VERSION, strlen(FP_VERSION)) != 0)
        rc = ft_fail(e, "%s: written by an earlier ftc, whose checkpoints this one does not resume (it identified the "
                     "model differently); resume it with that version or start over", path);
    else if (strcmp(fp, want) != 0)
        rc = ft_fail(e, "%s: written for a different model, tuner or batch shape than this plan", path);
    else if ((*step = strtoll(s, &end, 10)) < 0 || !end || *end)
        rc = ft_fail(e, "%s: bad step '%s'", path, s);
    for (int i = 0; i < p->g.n && rc == 0; i++) {
        const ir_tensor_t *t = &p->g.t[i];
        if (t->role != IR_TRAINABLE || t->dtype != IR_F32 || t->state[0] < 0)
            continue;
        /* the moments are named "adam_m:<weight>" in the graph already */
        rc = restore(x, &m, path, i, e);
        if (rc == 0)
            rc = restore(x, &m, path, t->state[0], e);
        if (rc == 0)
            rc = restore(x, &m, path, t->state[1], e);
    }
    st_close(&m);
    return rc;
}
