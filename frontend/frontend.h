/* frontend.h — turning a spec file, -s overrides and an HF config.json into an ft_config_t.
 * Every error names file:line:column (or the key, for overrides) and what was expected. */
#ifndef FTC_FRONTEND_H
#define FTC_FRONTEND_H

#include "config.h"

/* Defaults for every field (a valid config apart from the model's sizes). */
void fe_config_defaults(ft_config_t *cfg);

/* Parses a spec file. Relative paths inside it (model.from, tuner.init, data.train) are
 * joined to the spec's own folder. If model.from is set, its config.json is read too
 * (values written explicitly in the spec win over config.json). Validates at the end. */
int fe_parse_file(const char *path, ft_config_t *cfg, ft_err_t *e);

/* Parses spec text; `name` is used in messages and `dir` to resolve relative paths.
 * Does not validate or read config.json (fe_parse_file does both). */
int fe_parse_string(const char *text, const char *name, const char *dir, ft_config_t *cfg, ft_err_t *e);

/* Applies one `block.key=value` override (e.g. "train.lr=1e-4"). Values use the spec's own
 * syntax ("train.betas=0.9 0.95", "tuner.targets=q_proj v_proj"). */
int fe_override(ft_config_t *cfg, const char *kv, ft_err_t *e);

/* Reads <dir>/config.json (HF LlamaForCausalLM style) into the model fields: all of them or,
 * on any error, none. fe_parse_file then puts back what the spec set explicitly, so the
 * spec wins over config.json. */
int fe_read_hf_config(const char *dir, ft_config_t *cfg, ft_err_t *e);

/* Checks ranges and consistency (heads divide hidden, kv_heads divide heads, ...). */
int fe_validate(const ft_config_t *cfg, ft_err_t *e);

/* Canonical text of every setting, one `block.key=value` line each, in a fixed order; fed
 * back through fe_override line by line it reproduces the same config. Returns a malloc'd
 * string. */
char *fe_config_to_text(const ft_config_t *cfg);
int fe_config_from_text(const char *text, ft_config_t *cfg, ft_err_t *e);

#endif
