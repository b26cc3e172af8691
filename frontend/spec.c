/* spec.c — the spec language (.fbs): the key table, the block parser, the -s overrides and
 * the canonical `block.key=value` text. Every key's block, name, type, field and help live
 * in one table, keys[] below; the parser, the overrides, the text writer and reader and the
 * config.json merge all walk it, so a new setting is one line of that table (plus a row in
 * docs/spec.md). Tokens, positions and number reading come from the lexer (lexer.h). */
#include "frontend.h"
#include "lexer.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================== blocks and keys */

typedef enum { B_MODEL, B_TUNER, B_QUANTIZE, B_TRAIN, B_DATA, B_PARALLEL, B_SPEC, B_COUNT } block_id;

typedef enum {
    BODY_BRACES,    /* model llama { ... } */
    BODY_OPTIONAL,  /* tuner full   or   tuner lora { ... } */
    BODY_INLINE,    /* quantize base nf4   or   quantize { base nf4 } */
    BODY_TEXT_ONLY, /* not a spec block: only in overrides and the canonical text */
} body_kind;

typedef struct {
    const char *name;
    body_kind body;
} block_def;

static const block_def blocks[B_COUNT] = {
    [B_MODEL] = {"model", BODY_BRACES},       [B_TUNER] = {"tuner", BODY_OPTIONAL},
    [B_QUANTIZE] = {"quantize", BODY_INLINE}, [B_TRAIN] = {"train", BODY_BRACES},
    [B_DATA] = {"data", BODY_BRACES},         [B_PARALLEL] = {"parallel", BODY_BRACES},
    [B_SPEC] = {"spec", BODY_TEXT_ONLY},
};

typedef enum {
    KT_INT,     /* int64_t, >= min */
    KT_U64,     /* uint64_t (seeds) */
    KT_FLOAT,   /* double */
    KT_FLOAT2,  /* two doubles (betas) */
    KT_BOOL,    /* int 0/1: true false on off 1 0 */
    KT_ENUM,    /* int-sized enum: one word of names[], stored as its index */
    KT_WORD,    /* one word of names[], stored as the string (family) */
    KT_STRING,  /* quoted string */
    KT_PATH,    /* quoted string, joined to the spec's folder when relative */
    KT_SIZE,    /* int64_t bytes: 123, 512MiB, 40GiB */
    KT_TARGETS, /* unsigned bitmask over ft_module_t: module names to the end of the line */
} key_type;

enum { K_HEAD = 1 }; /* the word right after the block name (model llama, tuner lora) */

#define NO_FIELD ((size_t)-1)

typedef struct {
    block_id block;
    const char *name;
    key_type type;
    size_t off, off2, size;    /* field(s) in ft_config_t; NO_FIELD: accepted, not stored */
    const char *const *names;  /* KT_ENUM, KT_WORD: the accepted words, NULL-terminated */
    int64_t min;               /* KT_INT, KT_SIZE: smallest accepted value */
    unsigned flags;
    const char *help;
} key_def;

static const char *const family_names[] = {"llama", "mistral", "yi", NULL};
static const char *const tuner_names[] = {"full", "lora", NULL};
static const char *const quant_names[] = {"none", "nf4", "int8", NULL};
static const char *const sched_names[] = {"constant", "linear", "cosine", NULL};
static const char *const recompute_names[] = {"none", "full", "selective", "auto", NULL};
static const char *const rope_scaling_names[] = {"none", "llama3", "linear", NULL};
static const char *const init_names[] = {"auto", "file", "random", NULL};
static const char *const dtype_names[] = {"f32", "bf16", NULL};
static const char *const optimizer_names[] = {"adamw", NULL};

/* KT_ENUM stores the word's index into an int-sized enum field: the name lists above must
 * follow the enums in config.h. */
_Static_assert(FT_TUNER_LORA == 1, "tuner_names");
_Static_assert(FT_QUANT_INT8 == 2, "quant_names");
_Static_assert(FT_SCHED_COSINE == 2, "sched_names");
_Static_assert(FT_RECOMPUTE_AUTO == 3, "recompute_names");
_Static_assert(FT_ROPE_SCALING_LINEAR == 2, "rope_scaling_names");
_Static_assert(FT_INIT_RANDOM == 2, "init_names");
_Static_assert(FT_DTYPE_BF16 == 1, "dtype_names");
_Static_assert(sizeof(ft_tuner_t) == sizeof(int) && sizeof(ft_quant_t) == sizeof(int) &&
                   sizeof(ft_sched_t) == sizeof(int) && sizeof(ft_recompute_t) == sizeof(int) &&
                   sizeof(ft_rope_scaling_t) == sizeof(int) && sizeof(ft_init_t) == sizeof(int) &&
                   sizeof(ft_dtype_t) == sizeof(int),
               "KT_ENUM fields are stored as int");

#define FIELD(f) offsetof(ft_config_t, f), 0, sizeof(((ft_config_t *)0)->f)

/* The order of this table is the order of the canonical text. */
static const key_def keys[] = {
    {B_MODEL, "family", KT_WORD, FIELD(family), family_names, .flags = K_HEAD,
     .help = "model family, the word after 'model'"},
    {B_MODEL, "from", KT_PATH, FIELD(from), .help = "HF model folder (config.json, *.safetensors)"},
    {B_MODEL, "vocab", KT_INT, FIELD(vocab), .help = "vocabulary size"},
    {B_MODEL, "hidden", KT_INT, FIELD(hidden), .help = "hidden size"},
    {B_MODEL, "layers", KT_INT, FIELD(layers), .help = "number of decoder layers"},
    {B_MODEL, "heads", KT_INT, FIELD(heads), .help = "attention heads"},
    {B_MODEL, "kv_heads", KT_INT, FIELD(kv_heads), .help = "key/value heads (GQA)"},
    {B_MODEL, "ffn", KT_INT, FIELD(ffn), .help = "MLP intermediate size"},
    {B_MODEL, "head_dim", KT_INT, FIELD(head_dim), .help = "per-head size; 0 = hidden / heads"},
    {B_MODEL, "max_seq", KT_INT, FIELD(max_seq), .help = "maximum positions"},
    {B_MODEL, "rope_theta", KT_FLOAT, FIELD(rope_theta), .help = "RoPE base"},
    {B_MODEL, "norm_eps", KT_FLOAT, FIELD(norm_eps), .help = "RMSNorm epsilon"},
    {B_MODEL, "tie_embeddings", KT_BOOL, FIELD(tie_embeddings), .help = "LM head shares the embedding"},
    {B_MODEL, "rope_scaling", KT_ENUM, FIELD(rope_scaling), rope_scaling_names, .help = "RoPE scaling"},
    {B_MODEL, "rope_factor", KT_FLOAT, FIELD(rope_factor), .help = "RoPE scaling factor"},
    {B_MODEL, "rope_low_freq_factor", KT_FLOAT, FIELD(rope_low_freq_factor), .help = "llama3 scaling"},
    {B_MODEL, "rope_high_freq_factor", KT_FLOAT, FIELD(rope_high_freq_factor), .help = "llama3 scaling"},
    {B_MODEL, "rope_original_max_pos", KT_INT, FIELD(rope_original_max_pos), .help = "llama3 scaling"},
    {B_MODEL, "init", KT_ENUM, FIELD(init), init_names, .help = "weights: auto = file when 'from' is set"},
    {B_MODEL, "init_seed", KT_U64, FIELD(init_seed), .help = "seed of random init"},
    {B_MODEL, "init_std", KT_FLOAT, FIELD(init_std), .help = "std of random init"},

    {B_TUNER, "kind", KT_ENUM, FIELD(tuner), tuner_names, .flags = K_HEAD,
     .help = "full or lora, the word after 'tuner'"},
    {B_TUNER, "rank", KT_INT, FIELD(lora_rank), .min = 1, .help = "LoRA rank"},
    {B_TUNER, "alpha", KT_FLOAT, FIELD(lora_alpha), .help = "LoRA alpha (scale = alpha / rank)"},
    {B_TUNER, "dropout", KT_FLOAT, FIELD(lora_dropout), .help = "LoRA input dropout"},
    {B_TUNER, "targets", KT_TARGETS, FIELD(lora_targets), .help = "modules that get adapters"},
    {B_TUNER, "init", KT_PATH, FIELD(lora_init), .help = "PEFT adapter folder to start from"},

    {B_QUANTIZE, "base", KT_ENUM, FIELD(quant), quant_names, .help = "frozen base weights' format"},

    {B_TRAIN, "seq_len", KT_INT, FIELD(seq_len), .min = 1, .help = "tokens per sequence"},
    {B_TRAIN, "micro_batch", KT_INT, FIELD(micro_batch), .min = 1, .help = "sequences per micro-batch"},
    {B_TRAIN, "grad_accum", KT_INT, FIELD(grad_accum), .min = 1, .help = "micro-batches per step"},
    {B_TRAIN, "steps", KT_INT, FIELD(steps), .min = 1, .help = "optimizer steps"},
    {B_TRAIN, "optimizer", KT_ENUM, NO_FIELD, 0, 0, optimizer_names, .help = "only adamw for now"},
    {B_TRAIN, "lr", KT_FLOAT, FIELD(lr), .help = "peak learning rate"},
    {B_TRAIN, "betas", KT_FLOAT2, offsetof(ft_config_t, beta1), offsetof(ft_config_t, beta2),
     sizeof(double), .help = "AdamW beta1 beta2"},
    {B_TRAIN, "eps", KT_FLOAT, FIELD(adam_eps), .help = "AdamW epsilon"},
    {B_TRAIN, "weight_decay", KT_FLOAT, FIELD(weight_decay), .help = "decoupled weight decay"},
    {B_TRAIN, "grad_clip", KT_FLOAT, FIELD(grad_clip), .help = "global norm clip; 0 = off"},
    {B_TRAIN, "min_lr_ratio", KT_FLOAT, FIELD(min_lr_ratio), .help = "final lr / peak lr"},
    {B_TRAIN, "schedule", KT_ENUM, FIELD(schedule), sched_names, .help = "lr decay after warmup"},
    {B_TRAIN, "warmup", KT_INT, FIELD(warmup), .help = "linear warmup steps"},
    {B_TRAIN, "recompute", KT_ENUM, FIELD(recompute), recompute_names, .help = "activation recompute"},
    {B_TRAIN, "memory_budget", KT_SIZE, FIELD(memory_budget), .help = "device bytes; 0 = unlimited"},
    {B_TRAIN, "dtype", KT_ENUM, FIELD(dtype), dtype_names, .help = "compute dtype"},
    {B_TRAIN, "seed", KT_U64, FIELD(seed), .help = "data order, dropout, LoRA init"},
    {B_TRAIN, "save_every", KT_INT, FIELD(save_every), .help = "checkpoint every N steps; 0 = at end"},
    {B_TRAIN, "log_every", KT_INT, FIELD(log_every), .min = 1, .help = "progress line every N steps"},

    {B_DATA, "train", KT_PATH, FIELD(data_train), .help = "pre-tokenized training file"},
    {B_DATA, "packing", KT_BOOL, FIELD(packing), .help = "pack documents into sequences"},

    {B_PARALLEL, "dp", KT_INT, FIELD(dp), .min = 1, .help = "data-parallel ranks"},
    {B_PARALLEL, "zero", KT_INT, FIELD(zero), .help = "ZeRO stage 0..3"},
    {B_PARALLEL, "tp", KT_INT, FIELD(tp), .min = 1, .help = "tensor-parallel ranks"},

    {B_SPEC, "path", KT_STRING, FIELD(spec_path), .help = "the spec file this came from"},
};

#define N_KEYS (sizeof keys / sizeof keys[0])

/* Short forms of the LoRA targets, index = ft_module_t (the long forms are ft_module_names). */
static const char *const module_short[FT_MOD_COUNT] = {"q", "k", "v", "o", "gate", "up", "down"};
#define ALL_MODULES ((1u << FT_MOD_COUNT) - 1u)

static int word_eq(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

static block_id find_block(const char *s, size_t n)
{
    for (int b = 0; b < B_COUNT; b++)
        if (word_eq(s, n, blocks[b].name))
            return (block_id)b;
    return B_COUNT;
}

/* in_block: the key as written inside a block, where the head key is not allowed. */
static const key_def *find_key(block_id b, const char *s, size_t n, int in_block)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].block != b || !word_eq(s, n, keys[i].name))
            continue;
        if (in_block && (keys[i].flags & K_HEAD))
            return NULL;
        return &keys[i];
    }
    return NULL;
}

static const key_def *head_key(block_id b)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].block == b && (keys[i].flags & K_HEAD))
            return &keys[i];
    return NULL;
}

/* Appends ", word" (or "word" first) to a list for messages; stops quietly when full. */
static void join_word(char *out, size_t cap, const char *word)
{
    size_t n = strlen(out);
    if (n < cap)
        snprintf(out + n, cap - n, "%s%s", n ? ", " : "", word);
}

/* "seq_len, micro_batch, ..." for unknown-key messages. */
static void list_keys(char *out, size_t cap, block_id b, int in_block)
{
    out[0] = 0;
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].block == b && !(in_block && (keys[i].flags & K_HEAD)))
            join_word(out, cap, keys[i].name);
}

static void list_blocks(char *out, size_t cap)
{
    out[0] = 0;
    for (int b = 0; b < B_COUNT; b++)
        if (blocks[b].body != BODY_TEXT_ONLY)
            join_word(out, cap, blocks[b].name);
}

static void list_words(char *out, size_t cap, const char *const *names)
{
    out[0] = 0;
    for (int i = 0; names[i]; i++)
        join_word(out, cap, names[i]);
}

/* ================================================================== parser state */

typedef struct {
    ft_config_t *cfg;
    lexer_t lx;
    const char *dir;             /* relative paths are joined to it; NULL: kept as given */
    lex_pos_t key_at[N_KEYS];    /* where the spec set each key */
    lex_pos_t block_at[B_COUNT]; /* where each block starts */
    int statements;
    lex_pos_t end;               /* end of file, for "missing block" */
} parser;

/* "expected <what> after '<after>', found <token>" at the current token. */
static int expected(parser *ps, const char *what, const char *after)
{
    char found[96];
    lexer_t *lx = &ps->lx;
    return lex_fail_at(lx, lx->tok.line, lx->tok.col, "expected %s after '%s', found %s", what, after,
                       lex_describe(lx, found, sizeof found));
}

static void *field(ft_config_t *cfg, size_t off) { return (char *)cfg + off; }

static void store(ft_config_t *cfg, const key_def *k, size_t off, const void *v, size_t n)
{
    if (off == NO_FIELD)
        return;
    assert(k->size == n);
    memcpy(field(cfg, off), v, n);
}

/* Strings are stored zero-padded to the field's end so equal configs are equal bytes. */
static int store_string(parser *ps, const key_def *k, const char *s, int line, int col)
{
    char out[FT_PATH_MAX];
    size_t n = strlen(s);
    if (k->type == KT_PATH && ps->dir && ps->dir[0] && s[0] && s[0] != '/') {
        if (strlen(ps->dir) + 1 + n >= sizeof out)
            return lex_fail_at(&ps->lx, line, col, "path of '%s' is too long once joined to '%s'",
                               k->name, ps->dir);
        ft_path_join(out, sizeof out, ps->dir, s);
        s = out;
        n = strlen(s);
    }
    if (n >= k->size)
        return lex_fail_at(&ps->lx, line, col, "value of '%s' is longer than %zu bytes", k->name,
                           k->size - 1);
    char *dst = field(ps->cfg, k->off);
    memset(dst, 0, k->size);
    memcpy(dst, s, n);
    return 0;
}

/* ================================================================== values */

static int value_int(parser *ps, const key_def *k, const char *after)
{
    lexer_t *lx = &ps->lx;
    int64_t v;
    if (lex_int(&lx->tok, &v) != 0)
        return expected(ps, "an integer", after);
    if (v < k->min) {
        if (k->min == 0)
            return lex_fail_at(lx, lx->tok.line, lx->tok.col, "'%s' must not be negative, found %" PRId64,
                               k->name, v);
        return lex_fail_at(lx, lx->tok.line, lx->tok.col, "'%s' must be at least %" PRId64 ", found %" PRId64,
                           k->name, k->min, v);
    }
    store(ps->cfg, k, k->off, &v, sizeof v);
    return lex_next(lx);
}

static int value_u64(parser *ps, const key_def *k, const char *after)
{
    uint64_t u;
    if (lex_u64(&ps->lx.tok, &u) != 0)
        return expected(ps, "a non-negative integer", after);
    store(ps->cfg, k, k->off, &u, sizeof u);
    return lex_next(&ps->lx);
}

static int value_float(parser *ps, const key_def *k, size_t off, const char *after)
{
    double v;
    if (lex_float(&ps->lx.tok, &v) != 0)
        return expected(ps, "a number", after);
    store(ps->cfg, k, off, &v, sizeof v);
    return lex_next(&ps->lx);
}

static int value_float2(parser *ps, const key_def *k, const char *after)
{
    if (value_float(ps, k, k->off, after) != 0)
        return -1;
    if (lex_float(&ps->lx.tok, &(double){0}) != 0)
        return expected(ps, "a second number", after);
    return value_float(ps, k, k->off2, after);
}

static int value_bool(parser *ps, const key_def *k, const char *after)
{
    static const char *const yes[] = {"true", "on", "1"}, *const no[] = {"false", "off", "0"};
    const lex_token_t *t = &ps->lx.tok;
    int v = -1;
    for (int i = 0; i < 3 && (t->kind == TK_IDENT || t->kind == TK_NUMBER); i++) {
        if (word_eq(t->start, t->len, yes[i]))
            v = 1;
        if (word_eq(t->start, t->len, no[i]))
            v = 0;
    }
    if (v < 0)
        return expected(ps, "true/false/on/off/1/0", after);
    store(ps->cfg, k, k->off, &v, sizeof v);
    return lex_next(&ps->lx);
}

static int find_word(const lex_token_t *t, const char *const *names)
{
    for (int i = 0; t->kind == TK_IDENT && names[i]; i++)
        if (word_eq(t->start, t->len, names[i]))
            return i;
    return -1;
}

static int value_enum(parser *ps, const key_def *k, const char *after)
{
    char list[256], what[300];
    int v = find_word(&ps->lx.tok, k->names);
    if (v < 0) {
        list_words(list, sizeof list, k->names);
        snprintf(what, sizeof what, "one of %s", list);
        return expected(ps, what, after);
    }
    store(ps->cfg, k, k->off, &v, sizeof v);
    return lex_next(&ps->lx);
}

static int value_word(parser *ps, const key_def *k, const char *after)
{
    lexer_t *lx = &ps->lx;
    char list[256], what[300];
    list_words(list, sizeof list, k->names);
    int v = find_word(&lx->tok, k->names);
    if (v < 0 && lex_is(lx, TK_IDENT))
        return lex_fail_at(lx, lx->tok.line, lx->tok.col, "unknown %s '%.*s' (supported: %s)",
                           k->block == B_MODEL ? "model family" : k->name, (int)lx->tok.len, lx->tok.start,
                           list);
    if (v < 0) {
        snprintf(what, sizeof what, "one of %s", list);
        return expected(ps, what, after);
    }
    if (store_string(ps, k, k->names[v], lx->tok.line, lx->tok.col) != 0)
        return -1;
    return lex_next(lx);
}

static int value_string(parser *ps, const key_def *k, const char *after)
{
    lexer_t *lx = &ps->lx;
    if (!lex_is(lx, TK_STRING))
        return expected(ps, "a quoted string", after);
    if (store_string(ps, k, lx->tok.str, lx->tok.line, lx->tok.col) != 0)
        return -1;
    return lex_next(lx);
}

/* 123, 1.5GiB, 512MiB (lex_size reads the units). */
static int value_size(parser *ps, const key_def *k, const char *after)
{
    const lex_token_t *t = &ps->lx.tok;
    double bytes;
    if (lex_size(t, &bytes) != 0)
        return expected(ps, "a size (bytes, or a number with B, KiB, MiB, GiB or TiB)", after);
    if (bytes < (double)k->min || bytes >= 9.2e18)
        return lex_fail_at(&ps->lx, t->line, t->col, "'%s' must be between 0 and 8EiB, found %.*s", k->name,
                           (int)t->len, t->start);
    int64_t v = (int64_t)bytes;
    store(ps->cfg, k, k->off, &v, sizeof v);
    return lex_next(&ps->lx);
}

static int module_bits(const lex_token_t *t)
{
    if (word_eq(t->start, t->len, "all"))
        return (int)ALL_MODULES;
    for (int m = 0; m < FT_MOD_COUNT; m++)
        if (word_eq(t->start, t->len, ft_module_names[m]) || word_eq(t->start, t->len, module_short[m]))
            return 1 << m;
    return 0;
}

/* Module names up to the end of the line, a '}', or the next key of the block (so that
 * `targets q v dropout 0.1` reads as two entries). */
static int value_targets(parser *ps, const key_def *k, const char *after)
{
    lexer_t *lx = &ps->lx;
    unsigned mask = 0;
    int count = 0;
    for (;; count++) {
        const lex_token_t *t = &lx->tok;
        if (t->kind == TK_NL || t->kind == TK_RBRACE || t->kind == TK_EOF)
            break;
        if (t->kind == TK_IDENT && find_key(k->block, t->start, t->len, 1))
            break;
        if (t->kind != TK_IDENT)
            return expected(ps, "a module name", after);
        int bits = module_bits(t);
        if (!bits)
            return lex_fail_at(lx, t->line, t->col,
                               "unknown module '%.*s' in '%s' (known: q_proj k_proj v_proj o_proj gate_proj "
                               "up_proj down_proj, short q k v o gate up down, or all)",
                               (int)t->len, t->start, k->name);
        mask |= (unsigned)bits;
        if (lex_next(lx) != 0)
            return -1;
    }
    if (count == 0)
        return expected(ps, "module names (q k v o gate up down, or all)", after);
    store(ps->cfg, k, k->off, &mask, sizeof mask);
    return 0;
}

/* Reads the value of k at the current token and stores it; `after` is the word before the
 * value, named in messages. On return the current token is the one after the value. */
static int parse_value(parser *ps, const key_def *k, const char *after)
{
    switch (k->type) {
    case KT_INT: return value_int(ps, k, after);
    case KT_U64: return value_u64(ps, k, after);
    case KT_FLOAT: return value_float(ps, k, k->off, after);
    case KT_FLOAT2: return value_float2(ps, k, after);
    case KT_BOOL: return value_bool(ps, k, after);
    case KT_ENUM: return value_enum(ps, k, after);
    case KT_WORD: return value_word(ps, k, after);
    case KT_STRING:
    case KT_PATH: return value_string(ps, k, after);
    case KT_SIZE: return value_size(ps, k, after);
    case KT_TARGETS: return value_targets(ps, k, after);
    }
    return -1;
}

/* ================================================================== blocks and statements */

static int skip_newlines(lexer_t *lx)
{
    while (lex_is(lx, TK_NL))
        if (lex_next(lx) != 0)
            return -1;
    return 0;
}

static int unknown_key(parser *ps, block_id b)
{
    lexer_t *lx = &ps->lx;
    const lex_token_t *t = &lx->tok;
    block_id other = find_block(t->start, t->len);
    if (other != B_COUNT && blocks[other].body != BODY_TEXT_ONLY)
        return lex_fail_at(lx, t->line, t->col, "missing '}' to close block '%s' (opened at line %d) before block '%s'",
                           blocks[b].name, ps->block_at[b].line, blocks[other].name);
    char known[600];
    list_keys(known, sizeof known, b, 1);
    return lex_fail_at(lx, t->line, t->col, "unknown key '%.*s' in block '%s' (known: %s)", (int)t->len, t->start,
                       blocks[b].name, known);
}

/* key value... */
static int parse_entry(parser *ps, block_id b)
{
    lexer_t *lx = &ps->lx;
    char found[96];
    if (!lex_is(lx, TK_IDENT))
        return lex_fail_at(lx, lx->tok.line, lx->tok.col, "expected a key or '}' in block '%s', found %s",
                           blocks[b].name, lex_describe(lx, found, sizeof found));
    const key_def *k = find_key(b, lx->tok.start, lx->tok.len, 1);
    if (!k)
        return unknown_key(ps, b);
    size_t i = (size_t)(k - keys);
    if (ps->key_at[i].line)
        return lex_fail_at(lx, lx->tok.line, lx->tok.col, "key '%s' given twice in block '%s' (first at line %d)",
                           k->name, blocks[b].name, ps->key_at[i].line);
    ps->key_at[i] = lex_pos(lx);
    if (lex_next(lx) != 0)
        return -1;
    return parse_value(ps, k, k->name);
}

/* { entry... } with the current token on the '{'. */
static int parse_braces(parser *ps, block_id b)
{
    lexer_t *lx = &ps->lx;
    if (lex_next(lx) != 0)
        return -1;
    for (;;) {
        if (skip_newlines(lx) != 0)
            return -1;
        if (lex_is(lx, TK_RBRACE))
            return lex_next(lx);
        if (lex_is(lx, TK_EOF))
            return lex_fail_at(lx, lx->tok.line, lx->tok.col,
                               "missing '}' to close block '%s' (opened at line %d), found end of file",
                               blocks[b].name, ps->block_at[b].line);
        if (parse_entry(ps, b) != 0)
            return -1;
    }
}

static int expect_line_end(parser *ps, block_id b)
{
    lexer_t *lx = &ps->lx;
    char found[96];
    if (lex_is(lx, TK_NL) || lex_is(lx, TK_EOF))
        return 0;
    return lex_fail_at(lx, lx->tok.line, lx->tok.col, "expected '{' or end of line after block '%s', found %s",
                       blocks[b].name, lex_describe(lx, found, sizeof found));
}

static int parse_body(parser *ps, block_id b)
{
    lexer_t *lx = &ps->lx;
    char found[96];
    if (lex_is(lx, TK_LBRACE))
        return parse_braces(ps, b);
    switch (blocks[b].body) {
    case BODY_OPTIONAL:
        return expect_line_end(ps, b);
    case BODY_INLINE:
        if (lex_is(lx, TK_NL) || lex_is(lx, TK_EOF))
            return lex_fail_at(lx, lx->tok.line, lx->tok.col, "expected a key or '{' after '%s', found %s",
                               blocks[b].name, lex_describe(lx, found, sizeof found));
        if (parse_entry(ps, b) != 0)
            return -1;
        return expect_line_end(ps, b);
    default:
        return lex_fail_at(lx, lx->tok.line, lx->tok.col, "expected '{' to open block '%s', found %s",
                           blocks[b].name, lex_describe(lx, found, sizeof found));
    }
}

static int parse_statement(parser *ps)
{
    lexer_t *lx = &ps->lx;
    const lex_token_t *t = &lx->tok;
    char found[96], known[200];
    list_blocks(known, sizeof known);
    if (!lex_is(lx, TK_IDENT))
        return lex_fail_at(lx, t->line, t->col, "expected a block (%s), found %s", known,
                           lex_describe(lx, found, sizeof found));
    block_id b = find_block(t->start, t->len);
    if (b == B_COUNT || blocks[b].body == BODY_TEXT_ONLY)
        return lex_fail_at(lx, t->line, t->col, "unknown block '%.*s' (known: %s)", (int)t->len, t->start, known);
    if (ps->block_at[b].line)
        return lex_fail_at(lx, t->line, t->col, "duplicate block '%s' (first at line %d)", blocks[b].name,
                           ps->block_at[b].line);
    ps->block_at[b] = lex_pos(lx);
    if (lex_next(lx) != 0)
        return -1;
    const key_def *head = head_key(b);
    if (head) {
        ps->key_at[head - keys] = lex_pos(lx);
        if (parse_value(ps, head, blocks[b].name) != 0)
            return -1;
    }
    return parse_body(ps, b);
}

static int parse_all(parser *ps)
{
    lexer_t *lx = &ps->lx;
    if (lex_next(lx) != 0)
        return -1;
    for (;;) {
        if (skip_newlines(lx) != 0)
            return -1;
        if (lex_is(lx, TK_EOF))
            break;
        if (parse_statement(ps) != 0)
            return -1;
        ps->statements++;
    }
    ps->end = lex_pos(lx);
    return 0;
}

static void set_spec_path(ft_config_t *cfg, const char *path)
{
    memset(cfg->spec_path, 0, sizeof cfg->spec_path);
    snprintf(cfg->spec_path, sizeof cfg->spec_path, "%s", path);
}

static void parser_init(parser *ps, ft_config_t *cfg, const char *text, const char *name, const char *dir,
                        ft_err_t *e)
{
    memset(ps, 0, sizeof *ps);
    ps->cfg = cfg;
    ps->dir = dir ? dir : "";
    lex_init(&ps->lx, text, name, 1, e);
}

int fe_parse_string(const char *text, const char *name, const char *dir, ft_config_t *cfg, ft_err_t *e)
{
    parser *ps = ft_xmalloc(sizeof *ps); /* holds a token with a path buffer: keep it off the stack */
    if (!name)
        name = "<spec>";
    fe_config_defaults(cfg);
    parser_init(ps, cfg, text, name, dir, e);
    int rc = parse_all(ps);
    if (rc == 0)
        set_spec_path(cfg, name);
    free(ps);
    return rc;
}

/* ================================================================== fe_parse_file */

/* Text files only: a NUL would silently end the text early. */
static int check_nul(const char *path, const char *data, size_t len, ft_err_t *e)
{
    const char *nul = memchr(data, 0, len);
    if (!nul)
        return 0;
    int line = 1, col = 1;
    for (const char *p = data; p < nul; p++, col++)
        if (*p == '\n')
            line++, col = 0;
    return ft_fail(e, "%s:%d:%d: unexpected NUL byte (is this a text file?)", path, line, col);
}

static int require_blocks(parser *ps)
{
    lexer_t *lx = &ps->lx;
    if (ps->statements == 0)
        return lex_fail_at(lx, ps->end.line, ps->end.col, "empty spec: expected blocks 'model', 'train' and 'data'");
    static const block_id needed[] = {B_MODEL, B_TRAIN, B_DATA};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
        if (!ps->block_at[needed[i]].line)
            return lex_fail_at(lx, ps->end.line, ps->end.col, "missing block '%s' (a spec needs model, train and data)",
                               blocks[needed[i]].name);
    const key_def *train = find_key(B_DATA, "train", 5, 1);
    if (!ps->key_at[train - keys].line)
        return lex_fail_at(lx, ps->block_at[B_DATA].line, ps->block_at[B_DATA].col,
                           "block 'data' needs 'train' (the token file to train on)");
    return 0;
}

static void copy_field(ft_config_t *dst, const ft_config_t *src, const key_def *k)
{
    if (k->off == NO_FIELD)
        return;
    memcpy(field(dst, k->off), (const char *)src + k->off, k->size);
    if (k->type == KT_FLOAT2)
        memcpy(field(dst, k->off2), (const char *)src + k->off2, k->size);
}

/* Reads model.from's config.json into a copy, then puts back every key the spec wrote
 * itself: values in the spec win over config.json. */
static int merge_hf(parser *ps)
{
    ft_err_t inner;
    ft_config_t *hf = ft_xmalloc(sizeof *hf);
    *hf = *ps->cfg;
    if (fe_read_hf_config(ps->cfg->from, hf, &inner) != 0) {
        free(hf);
        const key_def *from = find_key(B_MODEL, "from", 4, 1);
        lex_pos_t at = ps->key_at[from - keys];
        return lex_fail_at(&ps->lx, at.line, at.col, "model.from: %s", inner.msg);
    }
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].block == B_MODEL && ps->key_at[i].line)
            copy_field(hf, ps->cfg, &keys[i]);
    *ps->cfg = *hf;
    free(hf);
    return 0;
}

/* fe_validate's messages start with the dotted key they are about; when the spec set that
 * key, point at where. */
static int locate_validate_error(parser *ps, const char *path, ft_err_t *e)
{
    char msg[sizeof e->msg];
    snprintf(msg, sizeof msg, "%s", e->msg);
    size_t n = strspn(msg, "abcdefghijklmnopqrstuvwxyz_0123456789.");
    const char *dot = memchr(msg, '.', n);
    block_id b = dot ? find_block(msg, (size_t)(dot - msg)) : B_COUNT;
    const key_def *k = b != B_COUNT ? find_key(b, dot + 1, n - (size_t)(dot + 1 - msg), 0) : NULL;
    if (k && ps->key_at[k - keys].line)
        return ft_fail(e, "%s:%d:%d: %s", path, ps->key_at[k - keys].line, ps->key_at[k - keys].col, msg);
    return ft_fail(e, "%s: %s", path, msg);
}

static int parse_file_text(parser *ps, const char *path, ft_err_t *e)
{
    if (parse_all(ps) != 0 || require_blocks(ps) != 0)
        return -1;
    if (ps->cfg->from[0] && merge_hf(ps) != 0)
        return -1;
    set_spec_path(ps->cfg, path);
    if (fe_validate(ps->cfg, e) != 0)
        return locate_validate_error(ps, path, e);
    return 0;
}

int fe_parse_file(const char *path, ft_config_t *cfg, ft_err_t *e)
{
    char *text = NULL, dir[FT_PATH_MAX];
    size_t len = 0;
    fe_config_defaults(cfg);
    if (ft_read_file(path, &text, &len, e) != 0)
        return -1;
    if (check_nul(path, text, len, e) != 0) {
        free(text);
        return -1;
    }
    ft_path_dir(dir, sizeof dir, path);
    parser *ps = ft_xmalloc(sizeof *ps);
    parser_init(ps, cfg, text, path, dir, e);
    int rc = parse_file_text(ps, path, e);
    free(ps);
    free(text);
    return rc;
}

/* ================================================================== overrides */

static void trim(const char **s, const char **end)
{
    while (*s < *end && (**s == ' ' || **s == '\t'))
        (*s)++;
    while (*end > *s && ((*end)[-1] == ' ' || (*end)[-1] == '\t' || (*end)[-1] == '\r'))
        (*end)--;
}

static const key_def *override_key(const char *label, const char *s, const char *end, ft_err_t *e)
{
    char known[600];
    const char *dot = memchr(s, '.', (size_t)(end - s));
    if (!dot)
        return ft_fail(e, "%s: expected block.key=value", label), NULL;
    block_id b = find_block(s, (size_t)(dot - s));
    if (b == B_COUNT) {
        list_blocks(known, sizeof known);
        return ft_fail(e, "%s: unknown block '%.*s' (known: %s)", label, (int)(dot - s), s, known), NULL;
    }
    const key_def *k = find_key(b, dot + 1, (size_t)(end - dot - 1), 0);
    if (!k) {
        list_keys(known, sizeof known, b, 0);
        return ft_fail(e, "%s: unknown key '%.*s' in block '%s' (known: %s)", label, (int)(end - dot - 1), dot + 1,
                       blocks[b].name, known), NULL;
    }
    return k;
}

/* A string given bare (-s data.train=run/x.tok, as a shell leaves it) is taken as it is. */
static int raw_string(parser *ps, const key_def *k, const char *v, const char *end)
{
    char buf[FT_PATH_MAX];
    size_t n = (size_t)(end - v);
    if (n >= sizeof buf)
        return lex_fail_at(&ps->lx, 0, 0, "value of '%s' is longer than %d bytes", k->name, FT_PATH_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return lex_fail_at(&ps->lx, 0, 0, "control byte 0x%02x in the value of '%s'", (unsigned char)v[i],
                               k->name);
    memcpy(buf, v, n);
    buf[n] = 0;
    return store_string(ps, k, buf, 0, 0);
}

/* One `block.key=value`; label names it in messages. Paths are kept as given. */
static int apply_kv(ft_config_t *cfg, const char *kv, const char *label, ft_err_t *e)
{
    const char *eq = strchr(kv, '=');
    if (!eq)
        return ft_fail(e, "%s: expected block.key=value", label);
    const char *ks = kv, *ke = eq;
    trim(&ks, &ke);
    const key_def *k = override_key(label, ks, ke, e);
    if (!k)
        return -1;
    const char *vs = eq + 1, *ve = eq + strlen(eq);
    trim(&vs, &ve);
    parser *ps = ft_xmalloc(sizeof *ps);
    parser_init(ps, cfg, vs, label, NULL, e);
    ps->lx.positions = 0;
    int rc;
    if ((k->type == KT_STRING || k->type == KT_PATH) && *vs != '"') {
        rc = raw_string(ps, k, vs, ve);
    } else {
        /* the value is lexed from vs to the end of kv; trailing blanks lex to nothing */
        rc = lex_next(&ps->lx) || parse_value(ps, k, k->name);
        if (rc == 0 && !lex_is(&ps->lx, TK_EOF)) {
            char found[96];
            rc = lex_fail_at(&ps->lx, 0, 0, "unexpected %s after the value of '%s'", lex_describe(&ps->lx, found, sizeof found),
                             k->name);
        }
    }
    free(ps);
    return rc ? -1 : 0;
}

int fe_override(ft_config_t *cfg, const char *kv, ft_err_t *e)
{
    char label[256];
    snprintf(label, sizeof label, "-s %.200s%s", kv, strlen(kv) > 200 ? "..." : "");
    return apply_kv(cfg, kv, label, e);
}

/* ================================================================== canonical text */

typedef struct {
    char *s;
    size_t len, cap;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) FT_PRINTF(2, 3);
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->s = ft_xrealloc(b->s, b->cap);
    }
}

static void sb_quoted(strbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++)
        sb_printf(b, *s == '"' || *s == '\\' ? "\\%c" : "%c", *s);
    sb_printf(b, "\"");
}

static void get(const ft_config_t *cfg, size_t off, void *v, size_t n) { memcpy(v, (const char *)cfg + off, n); }

static void print_targets(strbuf *b, unsigned mask)
{
    int first = 1;
    for (int m = 0; m < FT_MOD_COUNT; m++) {
        if (!(mask & 1u << m))
            continue;
        sb_printf(b, "%s%s", first ? "" : " ", ft_module_names[m]);
        first = 0;
    }
}

static void print_value(strbuf *b, const ft_config_t *cfg, const key_def *k)
{
    int64_t i;
    uint64_t u;
    double d, d2;
    int v;
    unsigned mask;
    if (k->off == NO_FIELD) { /* accepted but not stored: its only choice */
        sb_printf(b, "%s", k->names[0]);
        return;
    }
    switch (k->type) {
    case KT_INT:
    case KT_SIZE: get(cfg, k->off, &i, sizeof i); sb_printf(b, "%" PRId64, i); break;
    case KT_U64: get(cfg, k->off, &u, sizeof u); sb_printf(b, "%" PRIu64, u); break;
    case KT_FLOAT: get(cfg, k->off, &d, sizeof d); sb_printf(b, "%.17g", d); break;
    case KT_FLOAT2:
        get(cfg, k->off, &d, sizeof d);
        get(cfg, k->off2, &d2, sizeof d2);
        sb_printf(b, "%.17g %.17g", d, d2);
        break;
    case KT_BOOL: get(cfg, k->off, &v, sizeof v); sb_printf(b, "%s", v ? "true" : "false"); break;
    case KT_ENUM: {
        int count = 0;
        get(cfg, k->off, &v, sizeof v);
        while (k->names[count])
            count++;
        sb_printf(b, "%s", v >= 0 && v < count ? k->names[v] : "?");
        break;
    }
    case KT_WORD: sb_printf(b, "%s", (const char *)cfg + k->off); break;
    case KT_STRING:
    case KT_PATH: sb_quoted(b, (const char *)cfg + k->off); break;
    case KT_TARGETS: get(cfg, k->off, &mask, sizeof mask); print_targets(b, mask); break;
    }
}

char *fe_config_to_text(const ft_config_t *cfg)
{
    strbuf b = {ft_xmalloc(4096), 0, 4096};
    b.s[0] = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        sb_printf(&b, "%s.%s=", blocks[keys[i].block].name, keys[i].name);
        print_value(&b, cfg, &keys[i]);
        sb_printf(&b, "\n");
    }
    return b.s;
}

/* Starts from the defaults, so the result depends on the text alone. Blank lines and lines
 * starting with '#' are skipped. */
int fe_config_from_text(const char *text, ft_config_t *cfg, ft_err_t *e)
{
    fe_config_defaults(cfg);
    int line = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        char *one = ft_xmalloc(n + 1);
        memcpy(one, p, n);
        one[n] = 0;
        const char *s = one + strspn(one, " \t\r");
        char label[64];
        snprintf(label, sizeof label, "config text line %d", line);
        int rc = (*s == 0 || *s == '#') ? 0 : apply_kv(cfg, one, label, e);
        free(one);
        if (rc != 0)
            return -1;
        p += n + (nl ? 1 : 0);
    }
    return 0;
}
