/* exec.c — the executor-independent half of exec.h: dtype conversions on the host and the
 * float64 read/write helpers built on an executor's byte moves. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"

void rt_load_f64(ir_dtype_t dt, const void *p, int64_t n, double *out)
{
    switch (dt) {
    case IR_F32: for (int64_t i = 0; i < n; i++) out[i] = ((const float *)p)[i]; break;
    case IR_BF16: for (int64_t i = 0; i < n; i++) out[i] = ft_bf16_to_f32(((const uint16_t *)p)[i]); break;
    case IR_F16: for (int64_t i = 0; i < n; i++) out[i] = ft_f16_to_f32(((const uint16_t *)p)[i]); break;
    case IR_I32: for (int64_t i = 0; i < n; i++) out[i] = ((const int32_t *)p)[i]; break;
    case IR_F64: memcpy(out, p, (size_t)n * sizeof *out); break;
    default: break;
    }
}

void rt_store_f64(ir_dtype_t dt, const double *in, int64_t n, void *p)
{
    switch (dt) {
    case IR_F32: for (int64_t i = 0; i < n; i++) ((float *)p)[i] = (float)in[i]; break;
    case IR_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)p)[i] = ft_f32_to_bf16((float)in[i]); break;
    case IR_F16: for (int64_t i = 0; i < n; i++) ((uint16_t *)p)[i] = ft_f32_to_f16((float)in[i]); break;
    case IR_I32: for (int64_t i = 0; i < n; i++) ((int32_t *)p)[i] = (int32_t)lrint(in[i]); break;
    case IR_F64: memcpy(p, in, (size_t)n * sizeof *in); break;
    default: break;
    }
}

/* Scalars and other small tensors move through a stack buffer: the training loop reads
 * the loss every micro-batch and should not allocate for it. */
#define SMALL_BYTES 256

int rt_exec_read_f64(rt_exec_t *x, int id, double *out, ft_err_t *e)
{
    const ir_tensor_t *t = &x->g->t[id];
    int64_t nb = ir_nbytes(t);
    _Alignas(16) unsigned char small[SMALL_BYTES];
    void *buf = nb <= SMALL_BYTES ? small : ft_xmalloc((size_t)nb);
    int rc = x->ops->read(x, id, buf, e);
    if (rc == 0)
        rt_load_f64(t->dtype, buf, ir_numel(t), out);
    if (buf != small)
        free(buf);
    return rc;
}

int rt_exec_write_f64(rt_exec_t *x, int id, const double *in, ft_err_t *e)
{
    const ir_tensor_t *t = &x->g->t[id];
    int64_t nb = ir_nbytes(t);
    _Alignas(16) unsigned char small[SMALL_BYTES];
    void *buf = nb <= SMALL_BYTES ? small : ft_xmalloc((size_t)nb);
    rt_store_f64(t->dtype, in, ir_numel(t), buf);
    int rc = x->ops->write(x, id, buf, e);
    if (buf != small)
        free(buf);
    return rc;
}

void rt_exec_close(rt_exec_t *x)
{
    if (x->ops)
        x->ops->destroy(x);
    memset(x, 0, sizeof *x);
}
