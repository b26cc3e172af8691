/* models.c — the model registry (family → builder, tuner → rewrite) and the weight
 * manifest helpers. */
#include <stdlib.h>
#include <string.h>

#include "models.h"


void model_manifest_add(model_manifest_t *m, const char *key, plan_init_t init, double param)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->w = ft_xrealloc(m->w, (size_t)m->cap * sizeof *m->w);
    }
    plan_weight_t *w = &m->w[m->n++];
    memset(w, 0, sizeof *w);
    w->tensor = -1;
    w->init = init;
    w->param = param;
    snprintf(w->key, sizeof w->key, "%s", key);
}

void model_manifest_free(model_manifest_t *m)
{
    free(m->w);
    memset(m, 0, sizeof *m);
}

int model_module_of(const char *weight_name)
{
    if (strncmp(weight_name, "model.layers.", 13) != 0)
        return -1;
    const char *dot = strrchr(weight_name, '.');
    if (!dot || strcmp(dot, ".weight") != 0)
        return -1;
    const char *start = dot;
    while (start > weight_name && start[-1] != '.')
        start--;
    size_t len = (size_t)(dot - start);
    for (int i = 0; i < FT_MOD_COUNT; i++)
        if (strlen(ft_module_names[i]) == len && strncmp(start, ft_module_names[i], len) == 0)
            return i;
    return -1;
}

int model_build(const ft_config_t *cfg, ir_graph_t *g, model_manifest_t *m, ft_err_t *e)
{
    static const char *const llama_like[] = {"llama", "mistral", "yi"};
    bool known = false;
    for (size_t i = 0; i < sizeof llama_like / sizeof *llama_like; i++)
        known |= strcmp(cfg->family, llama_like[i]) == 0;
    if (!known)
        return ft_fail(e, "model family '%s' is not supported (supported: llama, mistral, yi)", cfg->family);
    if (model_llama_build(cfg, g, m, e) != 0)
        return -1;
    if (cfg->tuner == FT_TUNER_LORA)
        return model_lora_apply(cfg, g, m, e);
    return 0;
}
