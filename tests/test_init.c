/* test_init.c — the seeded weight initialiser (runtime/weights.c rt_init_value): moments of
 * the normal and uniform kinds, exact bounds, seeds and names giving different streams, and
 * value i not depending on how many values were drawn before (the GPU kernel relies on it).
 * tests/gpu/test_kernels.c checks the GPU kernel against the same function bit for bit. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "runtime/weights.h"

#define N 1000000

static void moments(plan_init_t kind, double param, uint64_t seed, double *mean, double *sd, double *lo, double *hi)
{
    double s = 0, s2 = 0;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t i = 0; i < N; i++) {
        double v = rt_init_value(kind, param, seed, i);
        s += v;
        s2 += v * v;
        *lo = fmin(*lo, v);
        *hi = fmax(*hi, v);
    }
    *mean = s / N;
    *sd = sqrt(s2 / N - *mean * *mean);
}

int main(void)
{
    uint64_t seed = rt_init_seed(1, "model.layers.0.self_attn.q_proj.weight");
    double mean, sd, lo, hi;

    moments(PLAN_INIT_NORMAL, 0.02, seed, &mean, &sd, &lo, &hi);
    /* standard error of the mean is 0.02 / 1000; of the sd about 0.02 / 1414 */
    CHECK_MSG(fabs(mean) < 5 * 0.02 / 1000, "normal mean %g", mean);
    CHECK_MSG(fabs(sd - 0.02) < 5 * 0.02 / 1414, "normal sd %g", sd);
    CHECK_MSG(lo >= -6 * 0.02 && hi <= 6 * 0.02, "normal range [%g, %g] beyond 6 sigma", lo, hi);
    CHECK_MSG(lo < -4 * 0.02 && hi > 4 * 0.02, "normal range [%g, %g]: no tail at all", lo, hi);

    moments(PLAN_INIT_UNIFORM, 0.5, seed, &mean, &sd, &lo, &hi);
    CHECK_MSG(fabs(mean) < 5 * 0.5 / sqrt(3) / 1000, "uniform mean %g", mean);
    CHECK_MSG(fabs(sd - 0.5 / sqrt(3)) < 1e-3, "uniform sd %g", sd);
    CHECK(lo > -0.5 && hi < 0.5 && lo < -0.499 && hi > 0.499);

    CHECK(rt_init_value(PLAN_INIT_ONES, 0, seed, 17) == 1);
    CHECK(rt_init_value(PLAN_INIT_ZEROS, 0, seed, 17) == 0);

    /* random access: value 12345 is the same whatever was asked before; streams differ by
     * seed and by tensor name; neighbours are not equal */
    double a = rt_init_value(PLAN_INIT_NORMAL, 1, seed, 12345);
    for (int64_t i = 0; i < 100; i++)
        (void)rt_init_value(PLAN_INIT_NORMAL, 1, seed, i);
    CHECK(rt_init_value(PLAN_INIT_NORMAL, 1, seed, 12345) == a);
    CHECK(rt_init_value(PLAN_INIT_NORMAL, 1, seed, 12346) != a);
    CHECK(rt_init_seed(1, "a") != rt_init_seed(2, "a"));
    CHECK(rt_init_seed(1, "a") != rt_init_seed(1, "b"));
    int same = 0;
    uint64_t other = rt_init_seed(1, "model.layers.0.self_attn.k_proj.weight");
    for (int64_t i = 0; i < 1000; i++)
        same += rt_init_value(PLAN_INIT_NORMAL, 1, seed, i) == rt_init_value(PLAN_INIT_NORMAL, 1, other, i);
    CHECK_MSG(same < 20, "%d of 1000 values equal across two tensors' streams", same);
    return CHECK_DONE();
}
