/* merge.c — `ftc merge`: a base model plus a PEFT LoRA adapter becomes one HF model, as
 * PEFT's merge_and_unload does. Used to check that an adapter we wrote reproduces the
 * trained model, and by users who want plain weights for inference. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "weights.h"

typedef struct {
    double scale; /* lora_alpha / r */
    st_model_t base, adapter;
    st_wtensor_t *out;
    float **bufs;
    int n;
} merge_t;

static int read_scale(const char *adapter_dir, double *scale, ft_err_t *e)
{
    char path[FT_PATH_MAX + 64];
    ft_path_join(path, sizeof path, adapter_dir, "adapter_config.json");
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        return ft_fail(e, "%s:%d: %s", path, je.line, je.text);
    json_t *r = json_object_get(j, "r"), *alpha = json_object_get(j, "lora_alpha");
    int rc = 0;
    if (!json_is_integer(r) || json_integer_value(r) <= 0 || !json_is_number(alpha))
        rc = ft_fail(e, "%s: needs a positive integer 'r' and a number 'lora_alpha'", path);
    else if (json_object_get(j, "use_rslora") == json_true() || json_object_get(j, "use_dora") == json_true())
        rc = ft_fail(e, "%s: rsLoRA and DoRA adapters are not supported by merge", path);
    else
        *scale = json_number_value(alpha) / (double)json_integer_value(r);
    json_decref(j);
    return rc;
}

/* W [out,in] += scale * B [out,r] · A [r,in], in float64 */
static int fold(merge_t *m, const st_tensor_t *w, double *v, ft_err_t *e)
{
    char key[512];
    size_t len = strlen(w->name);
    if (len < 8 || len > 400)
        return 0;
    snprintf(key, sizeof key, "base_model.model.%.*s.lora_A.weight", (int)(len - 7), w->name);
    const st_tensor_t *a = st_find(&m->adapter, key);
    snprintf(key, sizeof key, "base_model.model.%.*s.lora_B.weight", (int)(len - 7), w->name);
    const st_tensor_t *b = st_find(&m->adapter, key);
    if (!a && !b)
        return 0;
    if (!a || !b || a->ndim != 2 || b->ndim != 2 || w->ndim != 2 || a->shape[0] != b->shape[1] ||
        b->shape[0] != w->shape[0] || a->shape[1] != w->shape[1])
        return ft_fail(e, "adapter for '%s': lora_A/lora_B missing or of shapes that do not fit the weight", w->name);
    int64_t out = w->shape[0], in = w->shape[1], r = a->shape[0];
    double *av = ft_xmalloc((size_t)(r * in) * sizeof *av), *bv = ft_xmalloc((size_t)(out * r) * sizeof *bv);
    int rc = st_read_f64(a, av, e) || st_read_f64(b, bv, e) ? -1 : 0;
    for (int64_t i = 0; i < out && rc == 0; i++)
        for (int64_t j = 0; j < in; j++) {
            double s = 0;
            for (int64_t k = 0; k < r; k++)
                s += bv[i * r + k] * av[k * in + j];
            v[i * in + j] += m->scale * s;
        }
    free(av);
    free(bv);
    return rc;
}

static int merge_all(merge_t *m, ft_err_t *e)
{
    m->out = ft_xcalloc((size_t)m->base.ntensors + 1, sizeof *m->out);
    m->bufs = ft_xcalloc((size_t)m->base.ntensors + 1, sizeof *m->bufs);
    for (int i = 0; i < m->base.ntensors; i++) {
        const st_tensor_t *w = &m->base.tensors[i];
        int64_t n = st_numel(w);
        double *v = ft_xmalloc((size_t)n * sizeof *v);
        if (st_read_f64(w, v, e) != 0 || fold(m, w, v, e) != 0) {
            free(v);
            return -1;
        }
        m->bufs[m->n] = ft_xmalloc((size_t)n * sizeof(float));
        for (int64_t k = 0; k < n; k++)
            m->bufs[m->n][k] = (float)v[k];
        free(v);
        st_wtensor_t *o = &m->out[m->n];
        o->name = w->name;
        o->dtype = ST_F32;
        o->ndim = w->ndim;
        memcpy(o->shape, w->shape, sizeof o->shape);
        o->data = m->bufs[m->n];
        m->n++;
    }
    return 0;
}

static int copy_config(const char *base_dir, const char *out_dir, ft_err_t *e)
{
    char src[FT_PATH_MAX + 64], dst[FT_PATH_MAX + 64];
    ft_path_join(src, sizeof src, base_dir, "config.json");
    ft_path_join(dst, sizeof dst, out_dir, "config.json");
    char *text;
    size_t len;
    if (ft_read_file(src, &text, &len, e) != 0)
        return -1;
    int rc = ft_write_file_atomic(dst, text, len, e);
    free(text);
    return rc;
}

int rt_merge_lora(const char *base_dir, const char *adapter_dir, const char *out_dir, ft_err_t *e)
{
    merge_t m = {0};
    char apath[FT_PATH_MAX + 64], opath[FT_PATH_MAX + 64];
    ft_path_join(apath, sizeof apath, adapter_dir, "adapter_model.safetensors");
    ft_path_join(opath, sizeof opath, out_dir, "model.safetensors");
    if (read_scale(adapter_dir, &m.scale, e) != 0 || st_open(&m.base, base_dir, e) != 0)
        return -1;
    if (st_open(&m.adapter, apath, e) != 0) {
        st_close(&m.base);
        return -1;
    }
    int rc = merge_all(&m, e);
    if (rc == 0)
        rc = ft_mkdir_p(out_dir, e);
    if (rc == 0)
        rc = st_write(opath, m.out, m.n, (const char *const[]){"format", "pt", NULL}, e);
    if (rc == 0)
        rc = copy_config(base_dir, out_dir, e);
    for (int i = 0; i < m.n; i++)
        free(m.bufs[i]);
    free(m.bufs);
    free(m.out);
    st_close(&m.adapter);
    st_close(&m.base);
    return rc;
}
