/* test_frontend.c — the spec language, -s overrides, the canonical text round trip, HF
 * config.json reading and validation, with malformed input as a category of its own: every
 * bad input must fail with file:line:col and a message that says what was wrong. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frontend/frontend.h"
#include "tests/check.h"

static char tmpdir[256];

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (!f)
        return;
    fwrite(text, 1, len, f);
    fclose(f);
}

static void put_text(const char *path, const char *text) { write_text(path, text, strlen(text)); }

static void tmp_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

/* The fixture's path, from the repo root (ctest's working folder) or FTC_ROOT. */
static void fixture_dir(char *out, size_t cap)
{
    const char *root = getenv("FTC_ROOT");
    char cwd[512];
    if (!root)
        root = getcwd(cwd, sizeof cwd) ? cwd : ".";
    snprintf(out, cap, "%s/tests/fixtures/hf-llama-tiny", root);
}

static const char *good_spec =
    "# a spec that sets every key\n"
    "model llama {\n"
    "  vocab 258 hidden 64 layers 2 heads 4 kv_heads 2 ffn 172 max_seq 256\n"
    "  head_dim 16\n"
    "  rope_theta 5e5 norm_eps 1e-6 tie_embeddings true\n"
    "  rope_scaling llama3 rope_factor 8 rope_low_freq_factor 1 rope_high_freq_factor 4\n"
    "  rope_original_max_pos 8192\n"
    "  init random init_seed 7 init_std 0.01   # trailing comment\n"
    "  from \"weights/tiny\"\n"
    "}\n"
    "tuner lora { rank 16 alpha 32 targets q k_proj v o gate up down dropout 0.05 init \"/abs/adapter\" }\n"
    "quantize base none\n"
    "train {\n"
    "  seq_len 128 micro_batch 2 grad_accum 4 steps 50\n"
    "  optimizer adamw lr 1e-4 betas 0.9 0.95 eps 1e-6 weight_decay 0.01 grad_clip 0.5\n"
    "  min_lr_ratio 0.1 schedule linear warmup 5\n"
    "  recompute auto memory_budget 40GiB dtype f32 seed 42 save_every 10 log_every 2\n"
    "}\n"
    "data { train \"data/tr\\\"ain.tok\" packing off }\n"
    "parallel { dp 1 zero 0 tp 1 }\n";

static int parse_ok(const char *text, const char *dir, ft_config_t *cfg)
{
    ft_err_t e = {{0}};
    int rc = fe_parse_string(text, "t.fbs", dir, cfg, &e);
    CHECK_MSG(rc == 0, "parse failed: %s", e.msg);
    return rc;
}

static void test_defaults(void)
{
    ft_config_t c;
    fe_config_defaults(&c);
    CHECK(strcmp(c.family, "llama") == 0);
    CHECK(c.vocab == 0 && c.hidden == 0 && c.layers == 0 && c.heads == 0 && c.kv_heads == 0 && c.ffn == 0);
    CHECK(c.head_dim == 0 && c.max_seq == 2048);
    CHECK(c.rope_theta == 10000.0 && c.norm_eps == 1e-5 && c.tie_embeddings == 0);
    CHECK(c.rope_scaling == FT_ROPE_SCALING_NONE && c.init == FT_INIT_AUTO && c.init_seed == 0);
    CHECK(c.init_std == 0.02);
    CHECK(c.tuner == FT_TUNER_FULL && c.lora_rank == 8 && c.lora_alpha == 16.0 && c.lora_dropout == 0.0);
    CHECK(c.lora_targets == (1u << FT_MOD_Q | 1u << FT_MOD_K | 1u << FT_MOD_V | 1u << FT_MOD_O));
    CHECK(c.quant == FT_QUANT_NONE);
    CHECK(c.seq_len == 512 && c.micro_batch == 1 && c.grad_accum == 1 && c.steps == 100);
    CHECK(c.lr == 2e-4 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.adam_eps == 1e-8);
    CHECK(c.weight_decay == 0 && c.grad_clip == 1.0 && c.min_lr_ratio == 0);
    CHECK(c.schedule == FT_SCHED_COSINE && c.warmup == 0 && c.recompute == FT_RECOMPUTE_NONE);
    CHECK(c.memory_budget == 0 && c.dtype == FT_DTYPE_BF16 && c.seed == 0);
    CHECK(c.save_every == 0 && c.log_every == 1);
    CHECK(c.packing == 1 && c.data_train[0] == 0 && c.from[0] == 0 && c.lora_init[0] == 0);
    CHECK(c.dp == 1 && c.zero == 0 && c.tp == 1);
    CHECK(strcmp(ft_module_names[FT_MOD_Q], "q_proj") == 0 && strcmp(ft_module_names[FT_MOD_DOWN], "down_proj") == 0);

    /* a spec with nothing but the required blocks keeps every default */
    ft_config_t p, d;
    fe_config_defaults(&d);
    if (parse_ok("model llama {}\ntrain {}\ndata { train \"x\" }\n", "", &p) == 0) {
        snprintf(d.data_train, sizeof d.data_train, "x");
        snprintf(d.spec_path, sizeof d.spec_path, "t.fbs");
        CHECK(memcmp(&p, &d, sizeof p) == 0);
    }
}

static void test_good_spec(void)
{
    ft_config_t c;
    if (parse_ok(good_spec, "specs/dir", &c) != 0)
        return;
    CHECK(strcmp(c.family, "llama") == 0);
    CHECK(strcmp(c.from, "specs/dir/weights/tiny") == 0);
    CHECK(c.vocab == 258 && c.hidden == 64 && c.layers == 2 && c.heads == 4 && c.kv_heads == 2);
    CHECK(c.ffn == 172 && c.max_seq == 256 && c.head_dim == 16);
    CHECK(c.rope_theta == 5e5 && c.norm_eps == 1e-6 && c.tie_embeddings == 1);
    CHECK(c.rope_scaling == FT_ROPE_SCALING_LLAMA3 && c.rope_factor == 8 && c.rope_low_freq_factor == 1);
    CHECK(c.rope_high_freq_factor == 4 && c.rope_original_max_pos == 8192);
    CHECK(c.init == FT_INIT_RANDOM && c.init_seed == 7 && c.init_std == 0.01);
    CHECK(c.tuner == FT_TUNER_LORA && c.lora_rank == 16 && c.lora_alpha == 32 && c.lora_dropout == 0.05);
    CHECK(c.lora_targets == (1u << FT_MOD_COUNT) - 1);
    CHECK(strcmp(c.lora_init, "/abs/adapter") == 0); /* absolute: not joined */
    CHECK(c.quant == FT_QUANT_NONE);
    CHECK(c.seq_len == 128 && c.micro_batch == 2 && c.grad_accum == 4 && c.steps == 50);
    CHECK(c.lr == 1e-4 && c.beta1 == 0.9 && c.beta2 == 0.95 && c.adam_eps == 1e-6);
    CHECK(c.weight_decay == 0.01 && c.grad_clip == 0.5 && c.min_lr_ratio == 0.1);
    CHECK(c.schedule == FT_SCHED_LINEAR && c.warmup == 5 && c.recompute == FT_RECOMPUTE_AUTO);
    CHECK(c.memory_budget == 40LL * 1024 * 1024 * 1024 && c.dtype == FT_DTYPE_F32 && c.seed == 42);
    CHECK(c.save_every == 10 && c.log_every == 2);
    CHECK(strcmp(c.data_train, "specs/dir/data/tr\"ain.tok") == 0 && c.packing == 0);
    CHECK(c.dp == 1 && c.zero == 0 && c.tp == 1);
    CHECK(strcmp(c.spec_path, "t.fbs") == 0);
    ft_err_t e;
    CHECK_MSG(fe_validate(&c, &e) == 0, "%s", e.msg);

}

static void test_forms(void)
{
    ft_config_t c;
    if (parse_ok("model mistral {\n}\ntuner full\nquantize { base int8 }\ntrain { memory_budget 512MiB }\n", "", &c) == 0) {
        CHECK(strcmp(c.family, "mistral") == 0 && c.tuner == FT_TUNER_FULL && c.quant == FT_QUANT_INT8);
        CHECK(c.memory_budget == 512LL << 20);
    }
    if (parse_ok("tuner lora {\n  targets all\n}\ntrain { memory_budget 1.5KiB steps 1e3 }", "", &c) == 0) {
        CHECK(c.lora_targets == (1u << FT_MOD_COUNT) - 1);
        CHECK(c.memory_budget == 1536 && c.steps == 1000);
    }
    if (parse_ok("tuner lora { targets gate_proj down\n rank 4 }\ndata { packing 1 }", "", &c) == 0) {
        CHECK(c.lora_targets == (1u << FT_MOD_GATE | 1u << FT_MOD_DOWN) && c.lora_rank == 4 && c.packing == 1);
    }
    if (parse_ok("model yi { tie_embeddings on } tuner full {} quantize base nf4", "", &c) == 0) {
        CHECK(strcmp(c.family, "yi") == 0 && c.tie_embeddings == 1 && c.quant == FT_QUANT_NF4);
    }
    if (parse_ok("data { train \"rel.tok\" }", "", &c) == 0) /* no folder: kept as given */
        CHECK(strcmp(c.data_train, "rel.tok") == 0);
    if (parse_ok("data { train \"rel.tok\" }\r\n", NULL, &c) == 0)
        CHECK(strcmp(c.data_train, "rel.tok") == 0);
    if (parse_ok("", "", &c) == 0) /* fe_parse_string does not require blocks */
        CHECK(c.steps == 100);
}

static void override_ok(ft_config_t *c, const char *kv)
{
    ft_err_t e = {{0}};
    CHECK_MSG(fe_override(c, kv, &e) == 0, "%s: %s", kv, e.msg);
}

static void override_fails(const char *kv, const char *phrase)
{
    ft_config_t c;
    ft_err_t e = {{0}};
    fe_config_defaults(&c);
    int rc = fe_override(&c, kv, &e);
    CHECK_MSG(rc != 0 && strstr(e.msg, phrase), "override '%s' rc=%d msg='%s' (want '%s')", kv, rc, e.msg, phrase);
}

static void test_overrides(void)
{
    ft_config_t c;
    fe_config_defaults(&c);
    override_ok(&c, "train.steps=7");
    override_ok(&c, "train.seed=18446744073709551615");
    override_ok(&c, "train.lr=1e-4");
    override_ok(&c, "train.betas=0.8 0.95");
    override_ok(&c, "data.packing=off");
    override_ok(&c, "train.schedule=linear");
    override_ok(&c, "model.family=mistral");
    override_ok(&c, "data.train=run/x y.tok");
    override_ok(&c, "model.from=\"quoted \\\"dir\\\"\"");
    override_ok(&c, "train.memory_budget=512MiB");
    override_ok(&c, "tuner.targets=q_proj v_proj");
    override_ok(&c, "quantize.base=int8");
    override_ok(&c, " tuner.kind = lora ");
    override_ok(&c, "train.optimizer=adamw");
    CHECK(c.steps == 7 && c.seed == UINT64_MAX && c.lr == 1e-4);
    CHECK(c.beta1 == 0.8 && c.beta2 == 0.95 && c.packing == 0 && c.schedule == FT_SCHED_LINEAR);
    CHECK(strcmp(c.family, "mistral") == 0);
    CHECK(strcmp(c.data_train, "run/x y.tok") == 0); /* as given, not joined */
    CHECK(strcmp(c.from, "quoted \"dir\"") == 0);
    CHECK(c.memory_budget == 512LL << 20);
    CHECK(c.lora_targets == (1u << FT_MOD_Q | 1u << FT_MOD_V));
    CHECK(c.quant == FT_QUANT_INT8 && c.tuner == FT_TUNER_LORA);
    override_ok(&c, "data.train=");
    CHECK(c.data_train[0] == 0);

    override_fails("train.lr", "expected block.key=value");
    override_fails("train.lr=fast", "-s train.lr=fast: expected a number after 'lr', found 'fast'");
    override_fails("train.lr=", "expected a number after 'lr', found nothing");
    override_fails("train.foo=1", "unknown key 'foo' in block 'train' (known: seq_len, micro_batch");
    override_fails("trian.lr=1", "unknown block 'trian'");
    override_fails("lr=1", "expected block.key=value");
    override_fails("train.steps=3 4", "unexpected '4' after the value of 'steps'");
    override_fails("train.betas=0.9", "expected a second number after 'betas'");
    override_fails("tuner.targets=q x", "unknown module 'x'");
    override_fails("train.steps=-2", "'steps' must be at least 1");
    override_fails("model.family=gpt2", "unknown model family 'gpt2' (supported: llama, mistral, yi)");
    override_fails("train.seed=-1", "expected a non-negative integer");
}

static void round_trip(const ft_config_t *c, const char *what)
{
    char *t1 = fe_config_to_text(c);
    ft_config_t back;
    ft_err_t e = {{0}};
    int rc = fe_config_from_text(t1, &back, &e);
    CHECK_MSG(rc == 0, "%s: from_text: %s", what, e.msg);
    CHECK_MSG(rc == 0 && memcmp(c, &back, sizeof back) == 0, "%s: config differs after the round trip", what);
    char *t2 = fe_config_to_text(&back);
    CHECK_MSG(strcmp(t1, t2) == 0, "%s: text differs:\n%s\n---\n%s", what, t1, t2);
    free(t1);
    free(t2);
}

static void test_round_trip(void)
{
    ft_config_t c;
    fe_config_defaults(&c);
    round_trip(&c, "defaults");
    if (parse_ok(good_spec, "specs", &c) == 0)
        round_trip(&c, "good spec");

    /* awkward values: exact doubles, quotes and backslashes in paths, largest seed */
    fe_config_defaults(&c);
    c.lr = 0.1 + 0.2;
    c.norm_eps = 1e-300;
    c.beta2 = -0.0;
    c.seed = UINT64_MAX;
    snprintf(c.from, sizeof c.from, "a \"b\\c\" d#e");
    c.lora_targets = 1u << FT_MOD_DOWN;
    round_trip(&c, "awkward");

    char *text = fe_config_to_text(&c);
    CHECK(strstr(text, "train.lr=0.30000000000000004\n") != NULL);
    CHECK(strstr(text, "model.from=\"a \\\"b\\\\c\\\" d#e\"\n") != NULL);
    CHECK(strstr(text, "tuner.targets=down_proj\n") != NULL);
    CHECK(strncmp(text, "model.family=llama\n", 19) == 0);
    free(text);

    /* comments and blank lines in the text, and a bad line named by number */
    ft_err_t e = {{0}};
    CHECK(fe_config_from_text("# plan config\n\ntrain.steps=9\n", &c, &e) == 0 && c.steps == 9);
    CHECK(fe_config_from_text("train.steps=9\ntrain.bad=1\n", &c, &e) != 0 &&
          strstr(e.msg, "config text line 2: unknown key 'bad'"));
}

static void copy_fixture(const char *to_dir)
{
    char src[600], dst[800], *data = NULL;
    size_t len = 0;
    ft_err_t e;
    fixture_dir(src, sizeof src);
    strcat(src, "/config.json");
    CHECK_MSG(ft_read_file(src, &data, &len, &e) == 0, "%s", e.msg);
    mkdir(to_dir, 0755);
    snprintf(dst, sizeof dst, "%s/config.json", to_dir);
    if (data)
        write_text(dst, data, len);
    free(data);
}

static void test_hf_config(void)
{
    char dir[600];
    ft_config_t c;
    ft_err_t e = {{0}};
    fixture_dir(dir, sizeof dir);
    fe_config_defaults(&c);
    int rc = fe_read_hf_config(dir, &c, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(c.vocab == 258 && c.hidden == 64 && c.layers == 2 && c.heads == 4 && c.kv_heads == 2);
    CHECK(c.ffn == 172 && c.max_seq == 256 && c.head_dim == 0);
    CHECK(c.rope_theta == 10000.0 && c.norm_eps == 1e-5 && c.tie_embeddings == 0);
    CHECK(c.rope_scaling == FT_ROPE_SCALING_NONE);

    /* fe_parse_file: relative `from` joined to the spec's folder, spec values win */
    char hfdir[700], spec[700];
    tmp_path(hfdir, sizeof hfdir, "hf");
    copy_fixture(hfdir);
    tmp_path(spec, sizeof spec, "spec.fbs");
    const char *text = "model llama { from \"hf\" layers 1 max_seq 128 rope_theta 5e5 }\n"
                       "tuner lora\n"
                       "train { seq_len 64 }\n"
                       "data { train \"t.tok\" }\n";
    write_text(spec, text, strlen(text));
    rc = fe_parse_file(spec, &c, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(strcmp(c.from, hfdir) == 0);
    CHECK(c.layers == 1 && c.max_seq == 128 && c.rope_theta == 5e5); /* from the spec */
    CHECK(c.vocab == 258 && c.hidden == 64 && c.heads == 4 && c.kv_heads == 2 && c.ffn == 172);
    CHECK(c.norm_eps == 1e-5);
    CHECK(strcmp(c.spec_path, spec) == 0);
    char tok[700];
    tmp_path(tok, sizeof tok, "t.tok");
    CHECK(strcmp(c.data_train, tok) == 0);

    /* llama3 rope scaling and a missing num_key_value_heads */
    char d2[700], cj[760];
    tmp_path(d2, sizeof d2, "hf3");
    mkdir(d2, 0755);
    snprintf(cj, sizeof cj, "%s/config.json", d2);
    const char *j = "{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,"
                    "\"num_attention_heads\":2,\"intermediate_size\":16,\"max_position_embeddings\":131072,"
                    "\"rope_theta\":500000,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                    "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},"
                    "\"head_dim\":4,\"tie_word_embeddings\":true}";
    write_text(cj, j, strlen(j));
    fe_config_defaults(&c);
    rc = fe_read_hf_config(d2, &c, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(c.kv_heads == 2 && c.head_dim == 4 && c.tie_embeddings == 1 && c.rope_theta == 5e5);
    CHECK(c.norm_eps == 1e-6); /* absent: transformers' default */
    CHECK(c.rope_scaling == FT_ROPE_SCALING_LLAMA3 && c.rope_factor == 8 && c.rope_low_freq_factor == 1);
    CHECK(c.rope_high_freq_factor == 4 && c.rope_original_max_pos == 8192);

    /* refused configs, and a failure leaves the config untouched */
    struct { const char *json, *phrase; } bad[] = {
        {"{\"model_type\":\"mistral\",\"max_position_embeddings\":32768,\"sliding_window\":4096}",
         "sliding window attention is not supported"},
        {"{\"model_type\":\"llama\",\"hidden_size\":\"64\"}", "'hidden_size' must be an integer, found a string"},
        {"{\"model_type\":\"llama\",\"tie_word_embeddings\":1}", "'tie_word_embeddings' must be true or false"},
        {"{\"model_type\":\"qwen2\"}", "model_type 'qwen2' is not supported"},
        {"{\"vocab_size\":3}", "no 'model_type'"},
        {"[1,2]", "expected a JSON object"},
        {"{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":2}}",
         "rope_scaling type 'yarn' is not supported"},
        {"{\"model_type\":\"llama\",\"hidden_act\":\"gelu\"}", "hidden_act 'gelu' is not supported"},
        {"{\"model_type\":\"llama\",\"a\":1,\"a\":2}", "malformed JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(cj, bad[i].json, strlen(bad[i].json));
        ft_config_t before;
        fe_config_defaults(&c);
        before = c;
        rc = fe_read_hf_config(d2, &c, &e);
        CHECK_MSG(rc != 0 && strstr(e.msg, bad[i].phrase) && strstr(e.msg, cj), "json %zu: '%s'", i, e.msg);
        CHECK(memcmp(&before, &c, sizeof c) == 0);
    }
    const char *ok_window = "{\"model_type\":\"mistral\",\"max_position_embeddings\":32768,\"sliding_window\":null}";
    write_text(cj, ok_window, strlen(ok_window));
    CHECK_MSG(fe_read_hf_config(d2, &c, &e) == 0, "%s", e.msg);
}

/* fe_parse_string must fail with `where` (t.fbs:line:col) and `phrase` in the message. */
static void bad_string(const char *text, const char *where, const char *phrase)
{
    ft_config_t c;
    ft_err_t e = {{0}};
    int rc = fe_parse_string(text, "t.fbs", "", &c, &e);
    CHECK_MSG(rc != 0 && strncmp(e.msg, where, strlen(where)) == 0 && strstr(e.msg, phrase),
              "input '%s': rc=%d msg='%s' (want '%s' ... '%s')", text, rc, e.msg, where, phrase);
}

/* The same through a file; `where` is ":line:col:" after the file's path (or ":" alone). */
static void bad_file(const char *text, size_t len, const char *where, const char *phrase)
{
    char path[700], want[800];
    ft_config_t c;
    ft_err_t e = {{0}};
    tmp_path(path, sizeof path, "bad.fbs");
    write_text(path, text, len);
    snprintf(want, sizeof want, "%s%s", path, where);
    int rc = fe_parse_file(path, &c, &e);
    CHECK_MSG(rc != 0 && strncmp(e.msg, want, strlen(want)) == 0 && strstr(e.msg, phrase),
              "file '%s': rc=%d msg='%s' (want '%s' ... '%s')", text, rc, e.msg, want, phrase);
}

static void bad_text(const char *text, const char *where, const char *phrase)
{
    bad_file(text, strlen(text), where, phrase);
}

#define MODEL_OK "model llama { vocab 258 hidden 64 layers 2 heads 4 kv_heads 2 ffn 172 max_seq 256 }\n"
#define REST_OK "train { seq_len 64 }\ndata { train \"t.tok\" }\n"

static void test_malformed_strings(void)
{
    bad_string("train { foo 1 }", "t.fbs:1:9:", "unknown key 'foo' in block 'train' (known: seq_len, micro_batch,");
    bad_string("train {\n  lr fast\n}", "t.fbs:2:6:", "expected a number after 'lr', found 'fast'");
    bad_string("train { steps 1.5 }", "t.fbs:1:15:", "expected an integer after 'steps', found '1.5'");
    bad_string("data { train \"abc\n}", "t.fbs:1:14:", "unterminated string");
    bad_string("train { lr 1e-4\n", "t.fbs:2:1:", "missing '}' to close block 'train' (opened at line 1)");
    bad_string("train { lr 1\ndata { }", "t.fbs:2:1:", "missing '}' to close block 'train'");
    bad_string("train { lr 1 lr 2 }", "t.fbs:1:14:", "key 'lr' given twice in block 'train' (first at line 1)");
    bad_string("train { schedule sometimes }", "t.fbs:1:18:",
               "expected one of constant, linear, cosine after 'schedule', found 'sometimes'");
    bad_string("tuner lora {\n  targets q qq\n}", "t.fbs:2:13:", "unknown module 'qq' in 'targets'");
    bad_string("model llama { hidden -64 }", "t.fbs:1:22:", "'hidden' must not be negative, found -64");
    bad_string("\x01\x02garbage", "t.fbs:1:1:", "unexpected byte 0x01");
    bad_string("train { lr }", "t.fbs:1:12:", "expected a number after 'lr', found '}'");
    bad_string("train { lr\n 1 }", "t.fbs:1:11:", "expected a number after 'lr', found end of line");
    bad_string("train {}\ntrain {}", "t.fbs:2:1:", "duplicate block 'train' (first at line 1)");
    bad_string("trainer { }", "t.fbs:1:1:", "unknown block 'trainer' (known: model, tuner, quantize, train, data, parallel)");
    bad_string("spec { path \"x\" }", "t.fbs:1:1:", "unknown block 'spec'");
    bad_string("model qwen9 { }", "t.fbs:1:7:", "unknown model family 'qwen9' (supported: llama, mistral, yi)");
    bad_string("model { }", "t.fbs:1:7:", "expected one of llama, mistral, yi after 'model', found '{'");
    bad_string("tuner dora", "t.fbs:1:7:", "expected one of full, lora after 'tuner', found 'dora'");
    bad_string("tuner lora rank 8", "t.fbs:1:12:", "expected '{' or end of line after block 'tuner', found 'rank'");
    bad_string("quantize base fp4", "t.fbs:1:15:", "expected one of none, nf4, int8 after 'base'");
    bad_string("quantize\n", "t.fbs:1:9:", "expected a key or '{' after 'quantize'");
    bad_string("model llama vocab 3", "t.fbs:1:13:", "expected '{' to open block 'model', found 'vocab'");
    bad_string("data { packing maybe }", "t.fbs:1:16:", "expected true/false/on/off/1/0 after 'packing'");
    bad_string("train { memory_budget 40GB }", "t.fbs:1:23:", "expected a size (bytes, or a number with B, KiB");
    bad_string("data { train \"a\\nb\" }", "t.fbs:1:16:", "unknown escape in string");
    bad_string("data { train data/x.tok }", "t.fbs:1:14:", "expected a quoted string after 'train', found 'data'");
    bad_string("train { lr 1 } }", "t.fbs:1:16:", "expected a block");
    bad_string("train { 42 }", "t.fbs:1:9:", "expected a key or '}' in block 'train', found '42'");
    bad_string("model llama { family mistral }", "t.fbs:1:15:", "unknown key 'family' in block 'model'");
    bad_string("train { betas 0.9 }", "t.fbs:1:19:", "expected a second number after 'betas', found '}'");
    bad_string("tuner lora { targets }", "t.fbs:1:22:", "expected module names");
    bad_string("train { lr 1e999 }", "t.fbs:1:12:", "expected a number after 'lr', found '1e999'");
    bad_string("train { seed 1 } @", "t.fbs:1:18:", "unexpected character '@'");
    bad_string("parallel { dp 0 }", "t.fbs:1:15:", "'dp' must be at least 1, found 0");
}

static void test_malformed_files(void)
{
    char path[700];
    tmp_path(path, sizeof path, "nope.fbs");
    ft_config_t c;
    ft_err_t e = {{0}};
    CHECK(fe_parse_file(path, &c, &e) != 0 && strstr(e.msg, path) && strstr(e.msg, "cannot open"));

    bad_text("", ":1:1:", "empty spec");
    bad_text("# only a comment\n", ":2:1:", "empty spec");
    bad_text(MODEL_OK "train { }\n", ":3:1:", "missing block 'data'");
    bad_text(REST_OK, ":3:1:", "missing block 'model'");
    bad_text(MODEL_OK "train { }\ndata { packing on }\n", ":3:1:", "block 'data' needs 'train'");
    bad_text("model llama {\n  vocab 258 hidden 64 layers 2 heads 4 kv_heads 3 ffn 172\n}\n" REST_OK, ":2:40:",
             "model.kv_heads (3) must divide model.heads (4)");
    bad_text(MODEL_OK "quantize base nf4\n" REST_OK, ":2:10:", "quantize base nf4 is not supported by this build yet");
    bad_text(MODEL_OK "parallel { dp 2 }\n" REST_OK, ":2:12:",
             "parallel.dp 2: data parallelism is not supported by this build yet");
    bad_text(MODEL_OK "train { seq_len 4096 }\ndata { train \"t\" }\n", ":2:9:",
             "train.seq_len (4096) exceeds model.max_seq (256)");
    bad_text("model llama { vocab 1 }\n" REST_OK, ": ", "model.hidden is not set");
    bad_text("model llama { from \"missing\" }\n" REST_OK, ":1:15:", "missing/config.json: cannot open");
    bad_text("model llama { vocab 1 }\n" REST_OK "tuner lora { rank 1\n", ":5:1:", "missing '}' to close block 'tuner'");
    /* bytes that are not text; the lengths include the NULs */
    bad_file("model llama {\n vocab 1 }\n\0 train {}", 35, ":3:1:", "unexpected NUL byte");
    bad_file("\xff\xfe\x00\x01", 4, ":1:3:", "unexpected NUL byte");
    bad_file("\xff\xfegarbage", 9, ":1:1:", "unexpected byte 0xff");

    /* malformed config.json, named with its own line and column */
    char hf[700], cj[760];
    tmp_path(hf, sizeof hf, "broken");
    mkdir(hf, 0755);
    snprintf(cj, sizeof cj, "%s/config.json", hf);
    put_text(cj, "{\n  \"vocab_size\": 3,,\n}");
    const char *spec = "model llama {\n  from \"broken\"\n}\n" REST_OK;
    bad_text(spec, ":2:3:", "broken/config.json:2:");
    bad_text(spec, ":2:3:", "malformed JSON");
    /* wrong JSON type, named by key */
    put_text(cj, "{\"model_type\":\"llama\",\"num_attention_heads\":4.5}");
    bad_text(spec, ":2:3:", "'num_attention_heads' must be an integer, found a real number");
    /* spec values cannot rescue an unsupported config */
    put_text(cj, "{\"model_type\":\"mistral\",\"max_position_embeddings\":32768,\"sliding_window\":4096}");
    bad_text(spec, ":2:3:", "sliding window attention is not supported");
}

/* transformers 5 writes "rope_parameters" instead of rope_theta/rope_scaling: the same
 * model saved both ways must read the same. */
static void test_hf_config_v5(void)
{
    char dir[700], path[800];
    tmp_path(dir, sizeof dir, "v5");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text;
    size_t len;
    ft_err_t e;
    CHECK(ft_read_file("tests/fixtures/hf-oracle/llama3/config.v5-native.json", &text, &len, &e) == 0);
    CHECK(ft_write_file_atomic(path, text, len, &e) == 0);
    free(text);
    ft_config_t a, b;
    fe_config_defaults(&a);
    fe_config_defaults(&b);
    CHECK_MSG(fe_read_hf_config(dir, &a, &e) == 0, "%s", e.msg);
    CHECK_MSG(fe_read_hf_config("tests/fixtures/hf-oracle/llama3", &b, &e) == 0, "%s", e.msg);
    CHECK(a.rope_theta == 500000.0 && a.rope_scaling == FT_ROPE_SCALING_LLAMA3 && a.rope_factor == 8.0);
    CHECK(a.rope_low_freq_factor == 1.0 && a.rope_high_freq_factor == 4.0 && a.rope_original_max_pos == 32);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

static void cleanup(void)
{
    static const char *files[] = {"spec.fbs", "bad.fbs", "hf/config.json", "hf3/config.json", "broken/config.json",
                                  "v5/config.json"};
    static const char *dirs[] = {"hf", "hf3", "broken", "v5"};
    char p[700];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        tmp_path(p, sizeof p, files[i]);
        unlink(p);
    }
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        tmp_path(p, sizeof p, dirs[i]);
        rmdir(p);
    }
    rmdir(tmpdir);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ftc-test-frontend-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_defaults();
    test_good_spec();
    test_forms();
    test_overrides();
    test_round_trip();
    test_hf_config();
    test_hf_config_v5();
    test_malformed_strings();
    test_malformed_files();
    cleanup();
    return CHECK_DONE();
}
