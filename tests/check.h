/* check.h — the assertion macros every C test program uses. A failed CHECK prints the
 * file, line and expression and counts a failure; CHECK_DONE() prints the totals in the
 * "N passed, N failed" form and returns non-zero if anything failed. */
#ifndef FTC_TEST_CHECK_H
#define FTC_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_pass_, check_fail_;

#define CHECK(cond) do { \
        if (cond) check_pass_++; \
        else { check_fail_++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
    } while (0)

#define CHECK_MSG(cond, ...) do { \
        if (cond) check_pass_++; \
        else { check_fail_++; fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
               fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
    } while (0)

#define CHECK_NEAR(a, b, rel) do { \
        double ca_ = (double)(a), cb_ = (double)(b); \
        double d_ = fabs(ca_ - cb_), s_ = fmax(fabs(ca_), fabs(cb_)); \
        CHECK_MSG(d_ <= (rel) * s_ || d_ == 0, "%s=%.17g %s=%.17g rel=%.3g", #a, ca_, #b, cb_, s_ > 0 ? d_ / s_ : d_); \
    } while (0)

#define CHECK_DONE() ( \
        printf("%d passed, %d failed\n", check_pass_, check_fail_), \
        check_fail_ ? 1 : 0)

#endif
