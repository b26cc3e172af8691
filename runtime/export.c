/* export.c — the trained result in the formats the ecosystem loads: a PEFT LoRA adapter
 * (adapter_model.safetensors with base_model.model.<module>.lora_A/B.weight keys and
 * adapter_config.json) or, for full fine-tuning, HF safetensors with HF names and a
 * config.json. Files are written atomically. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../models/models.h"
#include "safetensors.h"
#include "weights.h"

/* float32 copies of the chosen weights, named as in the graph */
static int write_weights(const char *path, rt_exec_t *x, const plan_t *p, bool trainable_only, ft_err_t *e)
{
    const ir_graph_t *g = &p->g;
    st_wtensor_t *w = ft_xcalloc((size_t)p->nw + 1, sizeof *w);
    float **bufs = ft_xcalloc((size_t)p->nw + 1, sizeof *bufs);
    int n = 0, rc = 0;
    for (int i = 0; i < p->nw; i++) {
        const ir_tensor_t *t = &g->t[p->w[i].tensor];
        if (trainable_only && t->role != IR_TRAINABLE)
            continue;
        int64_t ne = ir_numel(t);
        double *d = ft_xmalloc((size_t)ne * sizeof *d);
        if (rt_exec_read_f64(x, p->w[i].tensor, d, e) != 0) {
            free(d);
            rc = -1;
            break;
        }
        bufs[n] = ft_xmalloc((size_t)ne * sizeof(float));
        for (int64_t k = 0; k < ne; k++)
            bufs[n][k] = (float)d[k];
        free(d);
        w[n].name = t->name;
        w[n].dtype = ST_F32;
        w[n].ndim = t->ndim;
        for (int k = 0; k < t->ndim; k++)
            w[n].shape[k] = t->shape[k];
        w[n].data = bufs[n];
        n++;
    }
    const char *meta[] = {"format", "pt", NULL};
    if (rc == 0)
        rc = st_write(path, w, n, meta, e);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(w);
    return rc;
}

static int write_json(const char *dir, const char *file, json_t *j, ft_err_t *e)
{
    char path[FT_PATH_MAX + 64];
    ft_path_join(path, sizeof path, dir, file);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(j);
    if (!text)
        return ft_fail(e, "%s: cannot format JSON", path);
    size_t len = strlen(text);
    text = ft_xrealloc(text, len + 2);
    text[len] = '\n';
    int rc = ft_write_file_atomic(path, text, len + 1, e);
    free(text);
    return rc;
}

static json_t *adapter_config(const ft_config_t *c)
{
    json_t *targets = json_array();
    for (int i = 0; i < FT_MOD_COUNT; i++)
        if (c->lora_targets & (1u << i))
            json_array_append_new(targets, json_string(ft_module_names[i]));
    return json_pack("{s:s, s:s, s:I, s:f, s:f, s:o, s:s, s:s, s:b, s:b, s:b, s:b, s:b, s:n}",
                     "peft_type", "LORA", "task_type", "CAUSAL_LM", "r", (json_int_t)c->lora_rank, "lora_alpha",
                     c->lora_alpha, "lora_dropout", c->lora_dropout, "target_modules", targets, "bias", "none",
                     "base_model_name_or_path", c->from, "fan_in_fan_out", 0, "inference_mode", 1,
                     "init_lora_weights", 1, "use_rslora", 0, "use_dora", 0, "modules_to_save");
}

static json_t *hf_config(const ft_config_t *c)
{
    json_t *j = json_pack("{s:[s], s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:b, s:s, s:s, s:b, s:f}",
                          "architectures", "LlamaForCausalLM", "model_type", "llama", "vocab_size", (json_int_t)c->vocab,
                          "hidden_size", (json_int_t)c->hidden, "num_hidden_layers", (json_int_t)c->layers,
                          "num_attention_heads", (json_int_t)c->heads, "num_key_value_heads", (json_int_t)c->kv_heads,
                          "intermediate_size", (json_int_t)c->ffn, "max_position_embeddings", (json_int_t)c->max_seq,
                          "rope_theta", c->rope_theta, "rms_norm_eps", c->norm_eps, "tie_word_embeddings",
                          c->tie_embeddings, "torch_dtype", "float32", "hidden_act", "silu", "attention_bias", 0,
                          "attention_dropout", 0.0);
    if (c->head_dim > 0)
        json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    if (c->rope_scaling != FT_ROPE_SCALING_NONE) {
        json_t *rs = json_pack("{s:s, s:f}", "rope_type", c->rope_scaling == FT_ROPE_SCALING_LLAMA3 ? "llama3" : "linear",
                               "factor", c->rope_factor);
        if (c->rope_scaling == FT_ROPE_SCALING_LLAMA3) {
            json_object_set_new(rs, "low_freq_factor", json_real(c->rope_low_freq_factor));
            json_object_set_new(rs, "high_freq_factor", json_real(c->rope_high_freq_factor));
            json_object_set_new(rs, "original_max_position_embeddings", json_integer(c->rope_original_max_pos));
        }
        json_object_set_new(j, "rope_scaling", rs);
    }
    return j;
}

int rt_export(const char *dir, rt_exec_t *x, const plan_t *p, ft_err_t *e)
{
    if (ft_mkdir_p(dir, e) != 0)
        return -1;
    char path[FT_PATH_MAX + 64];
    bool lora = p->cfg.tuner == FT_TUNER_LORA;
    ft_path_join(path, sizeof path, dir, lora ? "adapter_model.safetensors" : "model.safetensors");
    if (write_weights(path, x, p, lora, e) != 0)
        return -1;
    json_t *j = lora ? adapter_config(&p->cfg) : hf_config(&p->cfg);
    if (!j)
        return ft_fail(e, "cannot build %s", lora ? "adapter_config.json" : "config.json");
    return write_json(dir, lora ? "adapter_config.json" : "config.json", j, e);
}
