/* ops_util.h — small helpers the op implementations share (private to ir/ops_*.c):
 * an input's record, copying a shape, and the bytes an op moves if it reads each input
 * once and writes its output once. */
#ifndef FTC_OPS_UTIL_H
#define FTC_OPS_UTIL_H

#include <string.h>

#include "ir.h"

static inline const ir_tensor_t *op_src(const ir_graph_t *g, const ir_tensor_t *n, int i) { return &g->t[n->src[i]]; }

static inline void op_copy_shape(ir_tensor_t *node, const ir_tensor_t *like)
{
    node->ndim = like->ndim;
    memcpy(node->shape, like->shape, sizeof node->shape);
}

static inline double op_io_bytes(const ir_graph_t *g, const ir_tensor_t *n)
{
    double b = (double)ir_nbytes(n);
    for (int i = 0; i < n->nsrc; i++)
        b += (double)ir_nbytes(op_src(g, n, i));
    return b;
}

#endif
