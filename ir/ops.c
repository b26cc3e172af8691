/* ops.c — the op table: one descriptor per op, indexed by ir_op_t. Descriptors are defined
 * beside their implementations (ops_tensor.c: data movement, elementwise, reductions and the
 * optimizer; ops_nn.c: normalisation, rotary embedding, attention (with its row statistics
 * and the row sum its backward needs) and the loss). */
#include "ir.h"

extern const ir_op_desc_t ir_op_leaf, ir_op_fill, ir_op_embed, ir_op_embed_bwd, ir_op_matmul,
    ir_op_add, ir_op_mul, ir_op_scale, ir_op_cast, ir_op_reshape, ir_op_after, ir_op_permute, ir_op_slice,
    ir_op_slice_bwd, ir_op_concat, ir_op_rmsnorm, ir_op_rmsnorm_bwd_x, ir_op_rmsnorm_bwd_w,
    ir_op_rope, ir_op_silu, ir_op_silu_bwd, ir_op_swiglu, ir_op_swiglu_bwd_g, ir_op_swiglu_bwd_u,
    ir_op_attn, ir_op_attn_bwd, ir_op_xent, ir_op_xent_bwd, ir_op_sum, ir_op_mean, ir_op_dropout,
    ir_op_sumsq, ir_op_acc, ir_op_gnorm, ir_op_adamw, ir_op_attn_lse, ir_op_rowsum;

_Static_assert(OP_COUNT == 37, "a new op needs its descriptor in ir_ops[]");

const ir_op_desc_t *const ir_ops[OP_COUNT] = {
    [OP_LEAF] = &ir_op_leaf,
    [OP_FILL] = &ir_op_fill,
    [OP_EMBED] = &ir_op_embed,
    [OP_EMBED_BWD] = &ir_op_embed_bwd,
    [OP_MATMUL] = &ir_op_matmul,
    [OP_ADD] = &ir_op_add,
    [OP_MUL] = &ir_op_mul,
    [OP_SCALE] = &ir_op_scale,
    [OP_CAST] = &ir_op_cast,
    [OP_RESHAPE] = &ir_op_reshape,
    [OP_PERMUTE] = &ir_op_permute,
    [OP_SLICE] = &ir_op_slice,
    [OP_SLICE_BWD] = &ir_op_slice_bwd,
    [OP_CONCAT] = &ir_op_concat,
    [OP_RMSNORM] = &ir_op_rmsnorm,
    [OP_RMSNORM_BWD_X] = &ir_op_rmsnorm_bwd_x,
    [OP_RMSNORM_BWD_W] = &ir_op_rmsnorm_bwd_w,
    [OP_ROPE] = &ir_op_rope,
    [OP_SILU] = &ir_op_silu,
    [OP_SILU_BWD] = &ir_op_silu_bwd,
    [OP_SWIGLU] = &ir_op_swiglu,
    [OP_SWIGLU_BWD_G] = &ir_op_swiglu_bwd_g,
    [OP_SWIGLU_BWD_U] = &ir_op_swiglu_bwd_u,
    [OP_ATTN] = &ir_op_attn,
    [OP_ATTN_BWD] = &ir_op_attn_bwd,
    [OP_XENT] = &ir_op_xent,
    [OP_XENT_BWD] = &ir_op_xent_bwd,
    [OP_SUM] = &ir_op_sum,
    [OP_MEAN] = &ir_op_mean,
    [OP_DROPOUT] = &ir_op_dropout,
    [OP_SUMSQ] = &ir_op_sumsq,
    [OP_ACC] = &ir_op_acc,
    [OP_GNORM] = &ir_op_gnorm,
    [OP_ADAMW] = &ir_op_adamw,
    [OP_ATTN_LSE] = &ir_op_attn_lse,
    [OP_ROWSUM] = &ir_op_rowsum,
    [OP_AFTER] = &ir_op_after,
};
