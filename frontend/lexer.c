/* lexer.c — the spec language's lexer: splits spec text (or one -s value) into words,
 * numbers, quoted strings, braces and line ends, tracking the line and column of each,
 * skipping blanks and '#' comments; reads number tokens as integers, floats and sizes; and
 * formats the messages that point at a place in the source. Apart from spec.c so that the
 * parser there reads as the grammar and the key table alone. */
#include "lexer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void lex_init(lexer_t *lx, const char *text, const char *name, int positions, ft_err_t *e)
{
    memset(lx, 0, sizeof *lx);
    lx->name = name;
    lx->positions = positions;
    lx->p = text;
    lx->line = 1;
    lx->col = 1;
    lx->e = e;
}

int lex_fail_at(const lexer_t *lx, int line, int col, const char *fmt, ...)
{
    char what[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (lx->positions)
        return ft_fail(lx->e, "%s:%d:%d: %s", lx->name, line, col, what);
    return ft_fail(lx->e, "%s: %s", lx->name, what);
}

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alnum(int c) { return is_alpha(c) || is_digit(c); }

static void bump(lexer_t *lx)
{
    lx->p++;
    lx->col++;
}

static void skip_blanks(lexer_t *lx)
{
    for (;;) {
        char c = *lx->p;
        if (c == ' ' || c == '\t' || c == '\r') {
            bump(lx);
        } else if (c == '#') {
            while (*lx->p && *lx->p != '\n')
                bump(lx);
        } else {
            return;
        }
    }
}

/* A number starts with a digit, or a sign or '.' followed by one. */
static int starts_number(const char *p)
{
    if (is_digit(p[0]))
        return 1;
    if (p[0] == '.')
        return is_digit(p[1]);
    if (p[0] == '-' || p[0] == '+')
        return is_digit(p[1]) || (p[1] == '.' && is_digit(p[2]));
    return 0;
}

/* Digits, dots and an exponent, then any letters as a unit suffix (40GiB); whether the
 * whole is a valid int, float or size is decided by the key that reads it. */
static void scan_number(lexer_t *lx)
{
    if (*lx->p == '-' || *lx->p == '+')
        bump(lx);
    while (is_digit(*lx->p) || *lx->p == '.')
        bump(lx);
    const char *p = lx->p;
    if ((p[0] == 'e' || p[0] == 'E') &&
        (is_digit(p[1]) || ((p[1] == '-' || p[1] == '+') && is_digit(p[2])))) {
        bump(lx);
        if (*lx->p == '-' || *lx->p == '+')
            bump(lx);
        while (is_digit(*lx->p))
            bump(lx);
    }
    while (is_alnum(*lx->p) || *lx->p == '.')
        bump(lx);
}

static int scan_string(lexer_t *lx, lex_token_t *t)
{
    size_t n = 0;
    bump(lx); /* the opening quote */
    for (;;) {
        unsigned char c = (unsigned char)*lx->p;
        if (c == 0 || c == '\n')
            return lex_fail_at(lx, t->line, t->col, "unterminated string (no closing '\"' on this line)");
        if (c == '"')
            break;
        if (c == '\\') {
            char x = lx->p[1];
            if (x != '"' && x != '\\')
                return lex_fail_at(lx, lx->line, lx->col,
                                   "unknown escape in string (only \\\" and \\\\ are allowed)");
            bump(lx);
            c = (unsigned char)x;
        } else if (c < 0x20 || c == 0x7f) {
            return lex_fail_at(lx, lx->line, lx->col, "control byte 0x%02x in string", c);
        }
        if (n + 1 >= sizeof t->str)
            return lex_fail_at(lx, t->line, t->col, "string longer than %d bytes", FT_PATH_MAX - 1);
        t->str[n++] = (char)c;
        bump(lx);
    }
    bump(lx); /* the closing quote */
    t->str[n] = 0;
    return 0;
}

int lex_next(lexer_t *lx)
{
    skip_blanks(lx);
    lex_token_t *t = &lx->tok;
    t->start = lx->p;
    t->line = lx->line;
    t->col = lx->col;
    t->str[0] = 0;
    unsigned char c = (unsigned char)*lx->p;
    if (c == 0) {
        t->kind = TK_EOF;
    } else if (c == '\n') {
        t->kind = TK_NL;
        lx->p++;
        lx->line++;
        lx->col = 1;
    } else if (c == '{' || c == '}') {
        t->kind = c == '{' ? TK_LBRACE : TK_RBRACE;
        bump(lx);
    } else if (c == '"') {
        t->kind = TK_STRING;
        if (scan_string(lx, t) != 0)
            return -1;
    } else if (starts_number(lx->p)) {
        t->kind = TK_NUMBER;
        scan_number(lx);
    } else if (is_alpha(c)) {
        t->kind = TK_IDENT;
        while (is_alnum(*lx->p))
            bump(lx);
    } else if (c >= 0x21 && c < 0x7f) {
        return lex_fail_at(lx, t->line, t->col, "unexpected character '%c'", c);
    } else {
        return lex_fail_at(lx, t->line, t->col, "unexpected byte 0x%02x (is this a text file?)", c);
    }
    t->len = (size_t)(lx->p - t->start);
    return 0;
}

const char *lex_describe(const lexer_t *lx, char *buf, size_t cap)
{
    const lex_token_t *t = &lx->tok;
    int n = t->len > 40 ? 40 : (int)t->len;
    switch (t->kind) {
    case TK_EOF:
        snprintf(buf, cap, "%s", lx->positions ? "end of file" : "nothing");
        break;
    case TK_NL:
        snprintf(buf, cap, "end of line");
        break;
    case TK_STRING:
        snprintf(buf, cap, "string %.*s%s", n, t->start, (size_t)n < t->len ? "...\"" : "");
        break;
    default:
        snprintf(buf, cap, "'%.*s%s'", n, t->start, (size_t)n < t->len ? "..." : "");
        break;
    }
    return buf;
}

int lex_is(const lexer_t *lx, lex_kind_t k) { return lx->tok.kind == k; }

lex_pos_t lex_pos(const lexer_t *lx) { return (lex_pos_t){lx->tok.line, lx->tok.col}; }

/* ================================================================== number tokens */

/* Copies a number token into buf as a C string; 0 when it is not one or does not fit. */
static int number_text(const lex_token_t *t, char *buf, size_t cap)
{
    if (t->kind != TK_NUMBER || t->len >= cap)
        return 0;
    memcpy(buf, t->start, t->len);
    buf[t->len] = 0;
    return 1;
}

int lex_int(const lex_token_t *t, int64_t *v)
{
    char buf[64], *end;
    if (!number_text(t, buf, sizeof buf))
        return -1;
    errno = 0;
    long long ll = strtoll(buf, &end, 10);
    if (*end == 0 && errno == 0) {
        *v = ll;
        return 0;
    }
    double d; /* 5e5: a float that is an exact integer */
    if (lex_float(t, &d) != 0 || d != floor(d) || fabs(d) > 9007199254740992.0)
        return -1;
    *v = (int64_t)d;
    return 0;
}

int lex_u64(const lex_token_t *t, uint64_t *v)
{
    char buf[64], *end;
    if (!number_text(t, buf, sizeof buf) || !is_digit(buf[0]))
        return -1;
    errno = 0;
    unsigned long long u = strtoull(buf, &end, 10);
    if (*end || errno)
        return -1;
    *v = u;
    return 0;
}

int lex_float(const lex_token_t *t, double *v)
{
    char buf[64];
    if (!number_text(t, buf, sizeof buf))
        return -1;
    char *end;
    errno = 0;
    *v = strtod(buf, &end);
    return *end == 0 && errno == 0 && isfinite(*v) ? 0 : -1;
}

/* Binary units only, so 40GiB means what it says. */
int lex_size(const lex_token_t *t, double *bytes)
{
    static const struct { const char *unit; double mult; } units[] = {
        {"", 1.0}, {"B", 1.0}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
        {"TiB", 1099511627776.0},
    };
    char buf[64], *end;
    if (!number_text(t, buf, sizeof buf))
        return -1;
    errno = 0;
    double m = strtod(buf, &end);
    double mult = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].unit) == 0)
            mult = units[i].mult;
    if (errno || mult == 0 || !isfinite(m))
        return -1;
    *bytes = floor(m * mult + 0.5);
    return 0;
}
