/* hfconfig.c — reads a Hugging Face config.json (LlamaForCausalLM / MistralForCausalLM)
 * into the model fields of ft_config_t. It writes every model field the file gives and
 * nothing else; keeping the spec's own values is fe_parse_file's job (it reads into a copy
 * and puts back what the spec set). Anything the llama graph cannot express — sliding
 * window attention, biases, another activation, an unknown RoPE scaling — is refused here,
 * by name, rather than trained wrongly later. */
#include "frontend.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char path[FT_PATH_MAX + 16]; /* <dir>/config.json, for messages */
    ft_err_t *e;
} hf_doc;

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

static int wrong_type(hf_doc *d, const char *key, const char *want, const json_t *v)
{
    return ft_fail(d->e, "%s: '%s' must be %s, found %s", d->path, key, want, json_kind(v));
}

/* Absent or null: *dst unchanged, *found 0. */
static int opt_int(hf_doc *d, json_t *obj, const char *key, int64_t *dst, int *found)
{
    json_t *v = json_object_get(obj, key);
    if (found)
        *found = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return wrong_type(d, key, "an integer", v);
    *dst = (int64_t)json_integer_value(v);
    if (found)
        *found = 1;
    return 0;
}

static int opt_float(hf_doc *d, json_t *obj, const char *key, double *dst, int *found)
{
    json_t *v = json_object_get(obj, key);
    if (found)
        *found = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return wrong_type(d, key, "a number", v);
    *dst = json_number_value(v);
    if (found)
        *found = 1;
    return 0;
}

static int opt_bool(hf_doc *d, json_t *obj, const char *key, int *dst)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return wrong_type(d, key, "true or false", v);
    *dst = json_is_true(v) ? 1 : 0;
    return 0;
}

/* NULL when absent or null. */
static int opt_string(hf_doc *d, json_t *obj, const char *key, const char **dst)
{
    json_t *v = json_object_get(obj, key);
    *dst = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return wrong_type(d, key, "a string", v);
    *dst = json_string_value(v);
    return 0;
}

static int need_float(hf_doc *d, json_t *obj, const char *key, double *dst)
{
    int found;
    if (opt_float(d, obj, key, dst, &found) != 0)
        return -1;
    if (!found)
        return ft_fail(d->e, "%s: rope_scaling needs '%s'", d->path, key);
    return 0;
}

static int check_model_type(hf_doc *d, json_t *root)
{
    const char *type;
    if (opt_string(d, root, "model_type", &type) != 0)
        return -1;
    if (!type)
        return ft_fail(d->e, "%s: no 'model_type' (expected llama or mistral)", d->path);
    if (strcmp(type, "llama") != 0 && strcmp(type, "mistral") != 0)
        return ft_fail(d->e, "%s: model_type '%s' is not supported (supported: llama, mistral)", d->path, type);
    return 0;
}

/* Parts of a config the llama graph does not have. */
static int check_unsupported(hf_doc *d, json_t *root, const ft_config_t *cfg)
{
    int64_t window = 0;
    int has_window, bias = 0;
    const char *act;
    if (opt_int(d, root, "sliding_window", &window, &has_window) != 0)
        return -1;
    if (has_window && window < cfg->max_seq)
        return ft_fail(d->e, "%s: sliding window attention is not supported (sliding_window %lld is below "
                             "max_position_embeddings %lld)",
                       d->path, (long long)window, (long long)cfg->max_seq);
    if (opt_bool(d, root, "attention_bias", &bias) != 0 || opt_bool(d, root, "mlp_bias", &bias) != 0)
        return -1;
    if (bias)
        return ft_fail(d->e, "%s: attention_bias / mlp_bias is not supported", d->path);
    if (opt_string(d, root, "hidden_act", &act) != 0)
        return -1;
    if (act && strcmp(act, "silu") != 0)
        return ft_fail(d->e, "%s: hidden_act '%s' is not supported (only silu)", d->path, act);
    return 0;
}

/* transformers 5 writes the rotary settings as "rope_parameters": {rope_theta, rope_type,
 * factor, ...}; earlier versions (and most hub checkpoints) use top-level "rope_theta" and
 * "rope_scaling". Both are read; rope_scaling wins where both are present. */
static json_t *rope_parameters(json_t *root)
{
    json_t *rp = json_object_get(root, "rope_parameters");
    return json_is_object(rp) ? rp : NULL;
}

static int read_rope_scaling(hf_doc *d, json_t *root, ft_config_t *cfg)
{
    json_t *rs = json_object_get(root, "rope_scaling");
    if (!rs || json_is_null(rs))
        rs = rope_parameters(root);
    if (!rs || json_is_null(rs)) {
        cfg->rope_scaling = FT_ROPE_SCALING_NONE;
        return 0;
    }
    if (!json_is_object(rs))
        return wrong_type(d, "rope_scaling", "an object or null", rs);
    const char *type;
    if (opt_string(d, rs, "rope_type", &type) != 0)
        return -1;
    if (!type && opt_string(d, rs, "type", &type) != 0)
        return -1;
    if (!type || strcmp(type, "default") == 0) {
        cfg->rope_scaling = FT_ROPE_SCALING_NONE;
        return 0;
    }
    if (strcmp(type, "linear") == 0) {
        cfg->rope_scaling = FT_ROPE_SCALING_LINEAR;
        return need_float(d, rs, "factor", &cfg->rope_factor);
    }
    if (strcmp(type, "llama3") != 0)
        return ft_fail(d->e, "%s: rope_scaling type '%s' is not supported (supported: llama3, linear)", d->path,
                       type);
    cfg->rope_scaling = FT_ROPE_SCALING_LLAMA3;
    int found;
    if (need_float(d, rs, "factor", &cfg->rope_factor) != 0 ||
        need_float(d, rs, "low_freq_factor", &cfg->rope_low_freq_factor) != 0 ||
        need_float(d, rs, "high_freq_factor", &cfg->rope_high_freq_factor) != 0 ||
        opt_int(d, rs, "original_max_position_embeddings", &cfg->rope_original_max_pos, &found) != 0)
        return -1;
    if (!found)
        return ft_fail(d->e, "%s: rope_scaling needs 'original_max_position_embeddings'", d->path);
    return 0;
}

static int read_sizes(hf_doc *d, json_t *root, ft_config_t *cfg)
{
    int has_kv;
    if (opt_int(d, root, "vocab_size", &cfg->vocab, NULL) != 0 ||
        opt_int(d, root, "hidden_size", &cfg->hidden, NULL) != 0 ||
        opt_int(d, root, "num_hidden_layers", &cfg->layers, NULL) != 0 ||
        opt_int(d, root, "num_attention_heads", &cfg->heads, NULL) != 0 ||
        opt_int(d, root, "intermediate_size", &cfg->ffn, NULL) != 0 ||
        opt_int(d, root, "head_dim", &cfg->head_dim, NULL) != 0 ||
        opt_int(d, root, "max_position_embeddings", &cfg->max_seq, NULL) != 0 ||
        opt_int(d, root, "num_key_value_heads", &cfg->kv_heads, &has_kv) != 0)
        return -1;
    if (!has_kv) /* HF: no num_key_value_heads means plain multi-head attention */
        cfg->kv_heads = cfg->heads;
    int has_eps;
    if (opt_float(d, root, "rms_norm_eps", &cfg->norm_eps, &has_eps) != 0)
        return -1;
    if (!has_eps) /* transformers' LlamaConfig / MistralConfig default, not ours */
        cfg->norm_eps = 1e-6;
    if (opt_float(d, root, "rope_theta", &cfg->rope_theta, NULL) != 0 ||
        opt_bool(d, root, "tie_word_embeddings", &cfg->tie_embeddings) != 0)
        return -1;
    json_t *rp = rope_parameters(root);
    if (rp && !json_object_get(root, "rope_theta") && opt_float(d, rp, "rope_theta", &cfg->rope_theta, NULL) != 0)
        return -1;
    return 0;
}

static int read_root(hf_doc *d, json_t *root, ft_config_t *cfg)
{
    if (!json_is_object(root))
        return ft_fail(d->e, "%s: expected a JSON object at the top", d->path);
    if (check_model_type(d, root) != 0 || read_sizes(d, root, cfg) != 0 || read_rope_scaling(d, root, cfg) != 0)
        return -1;
    return check_unsupported(d, root, cfg);
}

int fe_read_hf_config(const char *dir, ft_config_t *cfg, ft_err_t *e)
{
    hf_doc d = {.e = e};
    char *text = NULL;
    size_t len = 0;
    ft_path_join(d.path, sizeof d.path, dir, "config.json");
    if (ft_read_file(d.path, &text, &len, e) != 0)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return ft_fail(e, "%s:%d:%d: malformed JSON: %s", d.path, jerr.line, jerr.column, jerr.text);
    ft_config_t tmp = *cfg; /* all or nothing: a failure leaves cfg as it was */
    int rc = read_root(&d, root, &tmp);
    json_decref(root);
    if (rc == 0)
        *cfg = tmp;
    return rc;
}
