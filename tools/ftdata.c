/* ftdata.c — the `ftdata` program: turns plain text or JSONL into a token data file
 * (runtime/tokdata.h). The tokenizer is byte-level for now: a token is a byte value 0..255,
 * BOS = 256 opens each document and EOS = 257 closes it. Any error names file:line and
 * leaves the output untouched. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "runtime/tokdata.h"

enum { TOK_BOS = 256, TOK_EOS = 257 };
typedef enum { FMT_AUTO, FMT_TEXT, FMT_JSONL } fmt_t;

/* The documents built so far. */
typedef struct {
    int32_t *tok;
    uint8_t *mask;
    int64_t n, cap;
    uint64_t *docs; /* doc_start; docs[0] = 0 */
    int64_t ndocs, dcap;
} corpus_t;

static void push(corpus_t *c, int32_t tok, uint8_t mask)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 4096;
        c->tok = ft_xrealloc(c->tok, (size_t)c->cap * sizeof *c->tok);
        c->mask = ft_xrealloc(c->mask, (size_t)c->cap);
    }
    c->tok[c->n] = tok;
    c->mask[c->n] = mask;
    c->n++;
}

static void push_bytes(corpus_t *c, const char *s, size_t n, uint8_t mask)
{
    for (size_t i = 0; i < n; i++)
        push(c, (unsigned char)s[i], mask);
}

static void begin_doc(corpus_t *c)
{
    push(c, TOK_BOS, 0);
}

static void end_doc(corpus_t *c)
{
    push(c, TOK_EOS, 1);
    if (c->ndocs + 2 > c->dcap) {
        c->dcap = c->dcap ? 2 * c->dcap : 1024;
        c->docs = ft_xrealloc(c->docs, (size_t)c->dcap * sizeof *c->docs);
    }
    c->docs[0] = 0;
    c->docs[++c->ndocs] = (uint64_t)c->n;
}

static void corpus_free(corpus_t *c)
{
    free(c->tok);
    free(c->mask);
    free(c->docs);
}

/* ---- input formats ---- */

/* Length of a line without its "\n" or "\r\n"; *next gets the start of the next line. */
static size_t line_len(const char *s, const char *end, const char **next)
{
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    const char *stop = nl ? nl : end;
    *next = nl ? nl + 1 : end;
    if (stop > s && stop[-1] == '\r')
        stop--;
    return (size_t)(stop - s);
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v')
            return 0;
    return 1;
}

/* Text: documents are runs of non-blank lines; their lines are joined with "\n". */
static int read_text(corpus_t *c, const char *data, size_t len)
{
    const char *p = data, *end = data + len, *next;
    int in_doc = 0;
    while (p < end) {
        size_t n = line_len(p, end, &next);
        if (is_blank(p, n)) {
            if (in_doc)
                end_doc(c);
            in_doc = 0;
        } else {
            if (in_doc)
                push(c, '\n', 1);
            else
                begin_doc(c);
            push_bytes(c, p, n, 1);
            in_doc = 1;
        }
        p = next;
    }
    if (in_doc)
        end_doc(c);
    return 0;
}

static int string_field(json_t *obj, const char *key, const char **s, size_t *n)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return v ? -1 : 0;
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 1;
}

/* One JSONL record into the corpus. */
static int add_record(corpus_t *c, json_t *obj, const char *path, int line, ft_err_t *e)
{
    if (!json_is_object(obj))
        return ft_fail(e, "%s:%d: expected a JSON object", path, line);
    const char *text = NULL, *prompt = NULL, *completion = NULL;
    size_t tn = 0, pn = 0, cn = 0;
    int ht = string_field(obj, "text", &text, &tn);
    int hp = string_field(obj, "prompt", &prompt, &pn);
    int hc = string_field(obj, "completion", &completion, &cn);
    if (ht < 0 || hp < 0 || hc < 0)
        return ft_fail(e, "%s:%d: \"text\", \"prompt\" and \"completion\" must be strings", path, line);
    if (ht && (hp || hc))
        return ft_fail(e, "%s:%d: has both \"text\" and \"prompt\"/\"completion\"; use one form", path, line);
    if (!ht && !(hp && hc))
        return ft_fail(e, "%s:%d: needs a \"text\" field, or both \"prompt\" and \"completion\"", path, line);
    begin_doc(c);
    if (ht) {
        push_bytes(c, text, tn, 1);
    } else {
        push_bytes(c, prompt, pn, 0);
        push_bytes(c, completion, cn, 1);
    }
    end_doc(c);
    return 0;
}

static int read_jsonl(corpus_t *c, const char *path, const char *data, size_t len, ft_err_t *e)
{
    const char *p = data, *end = data + len, *next;
    for (int line = 1; p < end; line++, p = next) {
        size_t n = line_len(p, end, &next);
        if (is_blank(p, n))
            continue;
        json_error_t jerr;
        json_t *obj = json_loadb(p, n, 0, &jerr);
        if (!obj)
            return ft_fail(e, "%s:%d: not valid JSON: %s (column %d)", path, line, jerr.text, jerr.column);
        int rc = add_record(c, obj, path, line, e);
        json_decref(obj);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- command line ---- */

static void usage(FILE *out)
{
    fputs("Usage: ftdata INPUT -o OUT.tok [--format text|jsonl]\n"
          "\n"
          "Converts training text into an ftc token data file (byte-level tokens:\n"
          "bytes 0..255, BOS 256 opens and EOS 257 closes each document; vocab 258).\n"
          "\n"
          "  text   documents are separated by one or more blank lines; every token\n"
          "         except BOS is a training target.\n"
          "  jsonl  one JSON object per line: {\"text\": ...} is one document trained\n"
          "         on throughout; {\"prompt\": ..., \"completion\": ...} trains only on\n"
          "         the completion and EOS. Blank lines are skipped.\n"
          "\n"
          "Options:\n"
          "  -o, --output FILE   the token file to write (written atomically)\n"
          "  --format FMT        text or jsonl (default: jsonl for *.jsonl, else text)\n"
          "  -h, --help          this text\n",
          out);
}

typedef struct {
    const char *in, *out;
    fmt_t fmt;
} args_t;

static int parse_format(const char *s, fmt_t *f)
{
    if (strcmp(s, "text") == 0)
        *f = FMT_TEXT;
    else if (strcmp(s, "jsonl") == 0)
        *f = FMT_JSONL;
    else
        return -1;
    return 0;
}

/* 0 ok, 1 help shown, -1 usage error (message printed). */
static int parse_args(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if ((strcmp(s, "-o") == 0 || strcmp(s, "--output") == 0) && i + 1 < argc) {
            a->out = argv[++i];
        } else if (strcmp(s, "--format") == 0 && i + 1 < argc) {
            if (parse_format(argv[++i], &a->fmt) != 0)
                return fprintf(stderr, "ftdata: unknown format '%s' (text or jsonl)\n", argv[i]), -1;
        } else if (strncmp(s, "--format=", 9) == 0) {
            if (parse_format(s + 9, &a->fmt) != 0)
                return fprintf(stderr, "ftdata: unknown format '%s' (text or jsonl)\n", s + 9), -1;
        } else if (s[0] == '-' && s[1]) {
            return fprintf(stderr, "ftdata: unknown or incomplete option '%s'\n", s), -1;
        } else if (!a->in) {
            a->in = s;
        } else {
            return fprintf(stderr, "ftdata: more than one input ('%s' and '%s')\n", a->in, s), -1;
        }
    }
    if (!a->in || !a->out)
        return fprintf(stderr, "ftdata: needs an INPUT and -o OUT.tok (see --help)\n"), -1;
    return 0;
}

static fmt_t format_of(const args_t *a)
{
    if (a->fmt != FMT_AUTO)
        return a->fmt;
    size_t n = strlen(a->in);
    return n >= 6 && strcmp(a->in + n - 6, ".jsonl") == 0 ? FMT_JSONL : FMT_TEXT;
}

static int convert(const args_t *a, ft_err_t *e)
{
    char *data = NULL;
    size_t len = 0;
    if (ft_read_file(a->in, &data, &len, e) != 0)
        return -1;
    corpus_t c = {0};
    int rc = format_of(a) == FMT_JSONL ? read_jsonl(&c, a->in, data, len, e) : read_text(&c, data, len);
    free(data);
    if (rc == 0 && c.ndocs == 0)
        rc = ft_fail(e, "%s: no documents (the input is empty or blank)", a->in);
    if (rc == 0)
        rc = td_write(a->out, c.tok, c.mask, c.n, c.docs, c.ndocs, e);
    if (rc == 0) {
        int64_t targets = 0;
        for (int64_t i = 0; i < c.n; i++)
            targets += c.mask[i];
        printf("ftdata: wrote %s: %lld docs, %lld tokens, %lld targets (byte-level, vocab 258)\n", a->out,
               (long long)c.ndocs, (long long)c.n, (long long)targets);
    }
    corpus_free(&c);
    return rc;
}

int main(int argc, char **argv)
{
    args_t a;
    int rc = parse_args(argc, argv, &a);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    ft_err_t e = {{0}};
    if (convert(&a, &e) != 0) {
        fprintf(stderr, "ftdata: %s\n", e.msg);
        return 1;
    }
    return 0;
}
