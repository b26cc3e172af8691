/* lexer.h — the spec language's lexer, private to frontend/: the token type, the tokenizer
 * with its line:column tracking, the reading of a number token as an integer, float or size,
 * and the messages that point at a place in the source. spec.c (the block parser and the -s
 * override reader) is its only user. */
#ifndef FTC_FRONTEND_LEXER_H
#define FTC_FRONTEND_LEXER_H

#include "config.h"

typedef enum { TK_EOF, TK_NL, TK_IDENT, TK_NUMBER, TK_STRING, TK_LBRACE, TK_RBRACE } lex_kind_t;

typedef struct {
    lex_kind_t kind;
    const char *start; /* raw text in the source */
    size_t len;
    int line, col;
    char str[FT_PATH_MAX]; /* TK_STRING: the value with escapes decoded */
} lex_token_t;

typedef struct {
    int line, col; /* line 0: not set */
} lex_pos_t;

typedef struct {
    const char *name; /* file name, or "-s key=value", for messages */
    int positions;    /* messages carry :line:col (not for one-line overrides) */
    const char *p;
    int line, col;
    lex_token_t tok; /* the current token */
    ft_err_t *e;
} lexer_t;

/* Starts at line 1, column 1 of text; no token is read until lex_next. */
void lex_init(lexer_t *lx, const char *text, const char *name, int positions, ft_err_t *e);

/* Reads the next token into lx->tok. */
int lex_next(lexer_t *lx);

int lex_is(const lexer_t *lx, lex_kind_t k);
lex_pos_t lex_pos(const lexer_t *lx); /* where the current token starts */

/* "name:line:col: message" (or "name: message" without positions) into lx->e; returns -1. */
int lex_fail_at(const lexer_t *lx, int line, int col, const char *fmt, ...) FT_PRINTF(4, 5);

/* How the current token reads in "found ..." messages. */
const char *lex_describe(const lexer_t *lx, char *buf, size_t cap);

/* A TK_NUMBER token's value: 0, or -1 when the whole token is not one. lex_int also takes
 * 5e5 and 1e3 when they are exact integers; lex_u64 takes digits only; lex_size takes a
 * binary unit (123, 1.5GiB, 512MiB) and gives the byte count rounded to a whole number. */
int lex_int(const lex_token_t *t, int64_t *v);
int lex_u64(const lex_token_t *t, uint64_t *v);
int lex_float(const lex_token_t *t, double *v);
int lex_size(const lex_token_t *t, double *bytes);

#endif
