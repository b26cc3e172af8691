/* plan_common.c — what both ends of plan.bin share: releasing a plan and naming the ways
 * a weight gets its first value. The writer (codegen/plan_write.c) and the reader
 * (runtime/plan_read.c) own the byte layout; this file owns no format knowledge. */
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static const char *const init_names[PLAN_INIT_COUNT] = {
    [PLAN_INIT_FILE] = "file",
    [PLAN_INIT_NORMAL] = "normal",
    [PLAN_INIT_ONES] = "ones",
    [PLAN_INIT_ZEROS] = "zeros",
    [PLAN_INIT_UNIFORM] = "uniform",
    [PLAN_INIT_ADAPTER] = "adapter",
};
_Static_assert(PLAN_INIT_COUNT == 6, "a new init kind needs its name in init_names[]");

const char *plan_init_name(plan_init_t k)
{
    /* Cast first: an out-of-range value from a bad caller must not index past the table. */
    if ((unsigned)k >= PLAN_INIT_COUNT)
        return "?";
    return init_names[k];
}

void plan_free(plan_t *p)
{
    if (!p)
        return;
    ir_graph_free(&p->g);
    free(p->w);
    cg_module_free(&p->cuda);
    memset(p, 0, sizeof *p);
}
