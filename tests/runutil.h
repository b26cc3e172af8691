/* runutil.h — helpers for tests that drive the built ftc/ftrun programs: run a command,
 * read the losses out of metrics.jsonl, compare files. FTC_BIN names the build folder. */
#ifndef FTC_TEST_RUNUTIL_H
#define FTC_TEST_RUNUTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/common.h"

static inline const char *bin_dir(void)
{
    const char *b = getenv("FTC_BIN");
    return b ? b : "build";
}

/* Runs a shell command (printf-style); returns its exit status. Output goes to log. */
static inline int sh(const char *fmt, ...) FT_PRINTF(1, 2);
static inline int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* The values of one key ("loss", "grad_norm", ...) of every line of a metrics.jsonl, both
 * as numbers and as the exact text printed (for bit-identity checks). */
static inline int read_metric(const char *path, const char *key, double *vals, char (*text)[40], int max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[4096], pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        char *p = strstr(line, pat);
        if (!p)
            continue;
        p += strlen(pat);
        vals[n] = strtod(p, NULL);
        if (text) {
            size_t len = strcspn(p, ",}");
            snprintf(text[n], 40, "%.*s", (int)(len < 39 ? len : 39), p);
        }
        n++;
    }
    fclose(f);
    return n;
}

static inline int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb)
            same = 0;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

/* A fresh scratch folder under the build folder. */
static inline void scratch_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/scratch/%s", bin_dir(), name);
    sh("rm -rf '%s' && mkdir -p '%s'", out, out);
}

#endif
