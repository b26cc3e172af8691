/* ir.h — the intermediate representation: tensors, the graph, the builder API and the one
 * table of op descriptors. A graph is an array of fixed-size tensor records; a tensor is
 * either a leaf (input, weight, optimizer state, gradient buffer) or the result of one op
 * applied to earlier tensors. Tensors are named by index, so records can move freely. */
#ifndef FTC_IR_H
#define FTC_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/common.h"

typedef enum { IR_F32, IR_BF16, IR_F16, IR_I32, IR_F64, IR_DTYPE_COUNT } ir_dtype_t;

typedef enum {
    IR_INPUT,     /* written by the host before each micro-batch or step (tokens, hyper) */
    IR_FROZEN,    /* weight that is not trained */
    IR_TRAINABLE, /* weight that is trained: has a gradient buffer and optimizer state */
    IR_ACT,       /* computed value: activations, backward values, temporaries */
    IR_GRAD,      /* persistent gradient accumulator of a trainable weight */
    IR_OPTSTATE,  /* optimizer moments */
    IR_ROLE_COUNT
} ir_role_t;

/* When a node runs: once per micro-batch (forward + backward + accumulate), or once per
 * optimizer step after the last micro-batch. */
typedef enum { IR_PH_MICRO, IR_PH_OPT, IR_PHASE_COUNT } ir_phase_t;

#define IR_MAX_DIMS 4
#define IR_MAX_SRC 7
#define IR_MAX_PARAMS 8
#define IR_NAME_MAX 112

/* The op list. Every per-op table carries a static_assert on OP_COUNT. */
typedef enum {
    OP_LEAF,          /* no computation: input, weight, state */
    OP_FILL,          /* (x?) -> shape: x (scalar) * fp[0] broadcast, or fp[0] if no src */
    OP_EMBED,         /* (table[V,D], ids[...]) -> [..., D] */
    OP_EMBED_BWD,     /* (ids, dy[..., D]) -> [V, D], V = ip[0]; rows scatter-added */
    OP_MATMUL,        /* (a, b[, c]) -> alpha·a·b (+ c); ip[0] = transpose a, ip[1] = transpose b;
                         ip[2] = 1: alpha = fp[0] (else 1); 2-D or 3-D batched; a and b share a
                         dtype, the output (and c) may be wider (bf16 products into f32 sums);
                         made in place (IR_FLAG_INPLACE) it writes into c's storage */
    OP_ADD,           /* (a, b) same shape */
    OP_MUL,           /* (a, b) same shape */
    OP_SCALE,         /* (a) * fp[0] */
    OP_CAST,          /* (a) -> dtype of the node (values rounded to it) */
    OP_RESHAPE,       /* (a) -> node shape, same element count; aliases a */
    OP_PERMUTE,       /* (a) -> axes permuted: out axis i = in axis ip[i] */
    OP_SLICE,         /* (a) -> a[..., ip[1] : ip[1]+ip[2], ...] along axis ip[0] */
    OP_SLICE_BWD,     /* (dy) -> zeros of full extent ip[3] along axis ip[0], dy placed at ip[1] */
    OP_CONCAT,        /* (a, b) along axis ip[0] */
    OP_RMSNORM,       /* (x[..., D], w[D]) -> x * rsqrt(mean(x^2) + fp[0]) * w */
    OP_RMSNORM_BWD_X, /* (x, w, dy[, c]) -> dx (+ c) */
    OP_RMSNORM_BWD_W, /* (x, dy) -> dw[D]; fp[0] = eps */
    OP_ROPE,          /* (x[B,S,H,Dh], pos[B,S] i32) -> rotated; fp[0] theta, ip[0] inverse,
                         ip[1] scaling kind, fp[1] factor, fp[2] low, fp[3] high, ip[2] orig max pos */
    OP_SILU,          /* (x) */
    OP_SILU_BWD,      /* (x, dy) */
    OP_SWIGLU,        /* (g, u) -> silu(g) * u */
    OP_SWIGLU_BWD_G,  /* (g, u, dy) -> dg */
    OP_SWIGLU_BWD_U,  /* (g, dy) -> du */
    OP_ATTN,          /* (q[B,S,Hq,Dh], k[B,S,Hkv,Dh], v[B,S,Hkv,Dh], doc[B,S] i32) -> [B,S,Hq,Dh];
                         causal, attends only where doc ids are equal; fp[0] = softmax scale */
    OP_ATTN_BWD,      /* (q, k, v, doc, dy, stats[B,S,Hq,2]) -> dq (ip[0]=0), dk (1) or dv (2);
                         fp[0] = scale; stats[..., 0] = attn_lse, stats[..., 1] = delta =
                         rowsum(dy * o) with o the attn output (see attn's VJP) */
    OP_XENT,          /* (logits[N,V], targets[N] i32) -> scalar sum of -log p over targets != ip[0] */
    OP_XENT_BWD,      /* (logits, targets, dy scalar) -> dlogits */
    OP_SUM,           /* (a) -> scalar */
    OP_MEAN,          /* (a) -> scalar */
    OP_DROPOUT,       /* (x, rng[2] i32) -> x * mask / (1-p); fp[0] = p, ip[0] = salt */
    OP_SUMSQ,         /* (a) -> scalar sum of squares */
    OP_ACC,           /* (buf, x) -> buf += x in place; the node aliases buf */
    OP_GNORM,         /* (sumsq scalar, hyper) -> global gradient norm, sqrt(sumsq) * hyper[INV_NTOK] */
    OP_ADAMW,         /* (w, g, m, v, hyper, gnorm) -> updates w, m, v in place; ip[0] = decay on */
    /* Appended, not inserted: plans store op numbers, so the ones above keep theirs. */
    OP_ATTN_LSE,      /* (q, k, doc) -> [B,S,Hq,1]: log-sum-exp over the keys query i sees (attn's
                         mask) of fp[0]·q_i·k_j; built by attn's VJP in f32 (f64 for f64 q) */
    OP_ROWSUM,        /* (a[..., D]) -> [..., 1]: sum over the last axis */
    OP_AFTER,         /* (x, dep) -> x's bytes, read only once dep has run: an in-place write's result */
    OP_COUNT
} ir_op_t;

/* Slots of the optimizer's hyper-parameter input tensor (f32 [IR_HYPER_COUNT]): the host
 * fills it before each step so that the graph is the same every step. */
enum {
    IR_HYPER_LR, IR_HYPER_BETA1, IR_HYPER_BETA2, IR_HYPER_EPS, IR_HYPER_WD,
    IR_HYPER_BC1,      /* 1 - beta1^t */
    IR_HYPER_BC2,      /* 1 - beta2^t */
    IR_HYPER_INV_NTOK, /* 1 / target tokens in this step: grads are sums over tokens */
    IR_HYPER_CLIP,     /* max global norm; 0 = no clipping */
    IR_HYPER_COUNT
};

/* Tensor flags. */
enum {
    IR_FLAG_LOSS = 1u << 0,      /* the scalar the backward pass starts from */
    IR_FLAG_OUTPUT = 1u << 1,    /* read by the host after its phase: kept live to the end */
    IR_FLAG_RECOMPUTE = 1u << 2, /* a clone made by the recompute pass */
    IR_FLAG_DEAD = 1u << 3,      /* removed; dropped by the next compaction */
    IR_FLAG_BWD = 1u << 4,       /* built by the backward pass */
    IR_FLAG_INPLACE = 1u << 5,   /* output in an input's storage (the op's inplace_src), which nothing
                                    else reads after (passes/fuse.c) */
};

typedef struct {
    ir_op_t op;
    ir_dtype_t dtype;
    ir_role_t role;
    ir_phase_t phase;
    int ndim;
    int64_t shape[IR_MAX_DIMS];
    int nsrc;
    int src[IR_MAX_SRC];
    int64_t ip[IR_MAX_PARAMS];
    double fp[IR_MAX_PARAMS];
    int block;        /* transformer block (the recompute unit), -1 outside any */
    unsigned flags;
    int grad;         /* trainable: its IR_GRAD buffer; -1 otherwise */
    int state[2];     /* trainable: its first and second moments; -1 otherwise */
    int64_t offset;   /* byte offset in the arena, set by the memory planner; -1 before */
    char name[IR_NAME_MAX];
} ir_tensor_t;

typedef struct {
    ir_tensor_t *t;
    int n, cap;
    int *sched;          /* node ids in execution order, phase-major; set by the scheduler */
    int nsched;
    int64_t arena_bytes; /* set by the memory planner */
    int cur_block;       /* builder state stamped on new tensors */
    ir_phase_t cur_phase;
    char err[512];       /* sticky: the first builder error; later builder calls return -1 */
} ir_graph_t;

/* Arguments of a CPU reference kernel. Every tensor is presented as float64 values (token
 * ids too: they are exact), whatever its storage dtype, so one implementation serves the
 * executor and the float64 finite-difference checks. Ops with `writes` bits set may modify
 * those inputs in place; the executor stores them back. */
typedef struct {
    const ir_tensor_t *node;
    const ir_tensor_t *srct[IR_MAX_SRC];
    double *in[IR_MAX_SRC];
    double *out; /* numel(node) values; for in-place nodes it is in[ir_alias_src(node)] */
} ir_cpu_args_t;

/* One descriptor per op: the only place that knows what an op is. */
typedef struct {
    const char *name;
    int min_src, max_src;
    unsigned flags;     /* IR_OPF_* */
    unsigned writes;    /* bitmask of inputs the op updates in place */
    int inplace_src;    /* the input whose storage a node made in place (IR_FLAG_INPLACE) takes */
    /* Fills node->shape/ndim (and checks srcs' shapes and dtypes); 0 or -1 with a message. */
    int (*shape)(const ir_graph_t *g, ir_tensor_t *node, ft_err_t *e);
    /* Builds the backward nodes: for each i with need[i], dsrc[i] = id of d(loss)/d(src i)
     * given dy = d(loss)/d(node); leaves dsrc[i] = -1 otherwise. NULL: not differentiable. */
    void (*vjp)(ir_graph_t *g, int node, int dy, const bool need[IR_MAX_SRC], int dsrc[IR_MAX_SRC]);
    /* Floating-point operations and bytes moved (each input read once, output written once). */
    void (*cost)(const ir_graph_t *g, const ir_tensor_t *node, double *flops, double *bytes);
    void (*cpu)(const ir_cpu_args_t *a);
} ir_op_desc_t;

enum {
    IR_OPF_ELEMENTWISE = 1u << 0, /* output[i] depends on inputs[i] only (fusion candidate) */
    IR_OPF_ALIAS = 1u << 1,       /* output shares storage with src 0 (reshape, in-place ops) */
    IR_OPF_NONDIFF_OK = 1u << 2,  /* no vjp by design (integer or optimizer ops) */
};

extern const ir_op_desc_t *const ir_ops[OP_COUNT];

/* Whether node t's output lives in an input's storage: an aliasing op (reshape, after, the
 * in-place updates: input 0) or a node a pass made in place (IR_FLAG_INPLACE: the op's
 * inplace_src). ir_alias_src says which input; meaningful only where ir_in_place holds. */
bool ir_in_place(const ir_tensor_t *t);
int ir_alias_src(const ir_tensor_t *t);
/* A matmul's scale on the product: fp[0] where ip[2] is set, else 1 (D = alpha·A·B + C). */
double ir_matmul_alpha(const ir_tensor_t *t);

/* ---- tensors ---- */
size_t ir_dtype_size(ir_dtype_t dt);
const char *ir_dtype_name(ir_dtype_t dt);
const char *ir_role_name(ir_role_t r);
int64_t ir_numel(const ir_tensor_t *t);
int64_t ir_nbytes(const ir_tensor_t *t);
bool ir_same_shape(const ir_tensor_t *a, const ir_tensor_t *b);
/* "[2,3,4]" */
void ir_shape_str(const ir_tensor_t *t, char *buf, size_t cap);

/* ---- graph ---- */
void ir_graph_init(ir_graph_t *g);
void ir_graph_free(ir_graph_t *g);
int ir_graph_copy(ir_graph_t *dst, const ir_graph_t *src);
int ir_find(const ir_graph_t *g, const char *name); /* -1 if absent */
/* Records the first builder error; returns -1. */
int ir_error(ir_graph_t *g, const char *fmt, ...) FT_PRINTF(2, 3);

/* ---- builder: every call returns the new tensor's id, or -1 once g->err is set ---- */
int ir_leaf(ir_graph_t *g, const char *name, ir_role_t role, ir_dtype_t dt, int ndim, const int64_t *shape);
/* The generic constructor: op, srcs, params; dtype defaults to src 0's (F32 with no srcs).
 * Runs the op's shape rule. ip/fp may be NULL. */
int ir_node(ir_graph_t *g, ir_op_t op, int nsrc, const int *src, const int64_t *ip, const double *fp);
int ir_node_dt(ir_graph_t *g, ir_op_t op, ir_dtype_t dt, int nsrc, const int *src, const int64_t *ip, const double *fp);
void ir_set_name(ir_graph_t *g, int id, const char *fmt, ...) FT_PRINTF(3, 4);

int ir_fill(ir_graph_t *g, int x, double value, int ndim, const int64_t *shape, ir_dtype_t dt);
int ir_embed(ir_graph_t *g, int table, int ids);
int ir_matmul(ir_graph_t *g, int a, int b, bool ta, bool tb);
int ir_matmul_add(ir_graph_t *g, int a, int b, bool ta, bool tb, int c); /* a·b + c in one node */
int ir_add(ir_graph_t *g, int a, int b);
int ir_mul(ir_graph_t *g, int a, int b);
int ir_scale(ir_graph_t *g, int a, double s);
int ir_cast(ir_graph_t *g, int a, ir_dtype_t dt);
int ir_reshape(ir_graph_t *g, int a, int ndim, const int64_t *shape);
int ir_permute(ir_graph_t *g, int a, const int64_t *perm);
int ir_slice(ir_graph_t *g, int a, int axis, int64_t start, int64_t len);
int ir_concat(ir_graph_t *g, int a, int b, int axis);
int ir_rmsnorm(ir_graph_t *g, int x, int w, double eps);
int ir_rope(ir_graph_t *g, int x, int pos, const int64_t ip[3], const double fp[4]);
int ir_silu(ir_graph_t *g, int x);
int ir_swiglu(ir_graph_t *g, int gate, int up);
int ir_attn(ir_graph_t *g, int q, int k, int v, int doc, double scale);
int ir_xent(ir_graph_t *g, int logits, int targets, int64_t ignore_index);
int ir_sum(ir_graph_t *g, int a);
int ir_mean(ir_graph_t *g, int a);
int ir_dropout(ir_graph_t *g, int x, int rng, double p, int64_t salt);

/* ---- op helpers shared with the code generators ---- */
/* The rotary inverse frequencies of a ROPE node (after its scaling rule), dh/2 values. */
void ir_rope_inv_freq(const ir_tensor_t *node, int64_t dh, double *inv_freq);
/* Dropout's keep test draws this uniform value in [0, 1) per element. */
double ir_dropout_uniform(uint64_t seed, uint64_t counter, uint64_t salt, uint64_t i);

/* ---- reordering ---- */
/* Keeps the tensors listed in `order` (old ids), renumbered in that order, and rewrites
 * every reference (inputs, gradient and state links, schedule). Fails if a kept tensor
 * refers to a dropped one. */
int ir_reorder(ir_graph_t *g, const int *order, int n, ft_err_t *e);
/* A topological order of the live tensors that keeps id order wherever it can and places
 * a tensor that appears later than a user right before its first user. `order` gets at
 * most g->n ids; returns the count. */
int ir_topo_order(const ir_graph_t *g, int *order);
/* ir_topo_order followed by ir_reorder: restores "inputs precede users" after a rewrite. */
int ir_toposort(ir_graph_t *g, ft_err_t *e);

/* ---- checking, printing, evaluation ---- */
/* Structural checks: srcs precede their users, arity and shapes agree with the table,
 * roles and phases are consistent. 0 or -1 with the first problem. */
int ir_verify(const ir_graph_t *g, ft_err_t *e);
void ir_print(const ir_graph_t *g, FILE *f);
void ir_print_node(const ir_graph_t *g, int id, FILE *f);
/* Evaluates nodes [0, n) in id order in float64 with the CPU references. vals[i] must hold
 * numel(i) values for every leaf; non-leaf buffers are allocated here (aliasing ops share
 * src 0's buffer). Used by tests and by the finite-difference checks. */
int ir_eval_f64(const ir_graph_t *g, double **vals, ft_err_t *e);
void ir_eval_free(const ir_graph_t *g, double **vals);
/* Total cost of nodes in `phase` (all phases if phase < 0). */
void ir_cost(const ir_graph_t *g, int phase, double *flops, double *bytes);
/* FLOPs of one optimizer step: the micro-batch phase `grad_accum` times, then the optimizer
 * phase. with_recompute = false leaves out the clones the recompute pass made
 * (IR_FLAG_RECOMPUTE): the model FLOPs that MFU divides by the step time, so that trading
 * memory for recomputation does not raise it. One function for ftc's report and ftrun's. */
double ir_step_flops(const ir_graph_t *g, int64_t grad_accum, bool with_recompute);

#endif
