"""ctypes mirrors of the kernel library's parameter structs, and numpy-friendly wrappers.

The kernel library (tuskml/backends/c/kernels) is compiled once per session into a shared object
(cached by content hash); each wrapper fills a struct, calls the C kernel, and returns int8 numpy.
"""

from __future__ import annotations

import ctypes as C

import numpy as np

I32, U16, I8, U32 = C.c_int32, C.c_uint16, C.c_int8, C.c_uint32
P_I32, P_U16, P_I8, P_U32 = C.POINTER(I32), C.POINTER(U16), C.POINTER(I8), C.POINTER(U32)
MAX_DIMS = 6


class FcParams(C.Structure):
    _fields_ = [(n, I32) for n in ("rows", "in_features", "out_features", "in_zp", "out_zp", "act_min", "act_max")] + [
        ("bias", P_I32), ("multiplier", P_I32), ("shift", P_I32), ("weights", P_I8),
        ("block", I32), ("row_nnzb", P_U16), ("runs", P_U16), ("values", P_I8),
    ]


class ConvParams(C.Structure):
    _fields_ = [(n, I32) for n in (
        "batch", "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w", "stride_h", "stride_w",
        "pad_top", "pad_left", "dil_h", "dil_w", "in_zp", "out_zp", "act_min", "act_max")] + [
        ("weights", P_I8), ("bias", P_I32), ("multiplier", P_I32), ("shift", P_I32)]


class PoolParams(C.Structure):
    _fields_ = [(n, I32) for n in (
        "batch", "in_h", "in_w", "channels", "out_h", "out_w", "k_h", "k_w", "stride_h", "stride_w",
        "pad_top", "pad_left", "dil_h", "dil_w", "in_zp", "out_zp", "multiplier", "shift")]


class MeanParams(C.Structure):
    _fields_ = [("out_dims", I32 * MAX_DIMS), ("reduce_dims", I32 * MAX_DIMS), ("in_strides", I32 * MAX_DIMS)] + [
        (n, I32) for n in ("in_zp", "out_zp", "multiplier", "shift")]


class BinaryParams(C.Structure):
    _fields_ = [("dims", I32 * MAX_DIMS), ("a_strides", I32 * MAX_DIMS), ("b_strides", I32 * MAX_DIMS)] + [
        (n, I32) for n in ("a_zp", "b_zp", "out_zp", "left_shift", "a_multiplier", "a_shift", "b_multiplier",
                           "b_shift", "out_multiplier", "out_shift", "act_min", "act_max")]


class LayerNormParams(C.Structure):
    _fields_ = [(n, I32) for n in ("rows", "channels", "in_zp", "out_zp", "eps_q")] + [
        ("multiplier", P_I32), ("shift", P_I32), ("beta_q", P_I32)]


class BatchMatmulParams(C.Structure):
    _fields_ = [(n, I32) for n in ("batch", "m", "k", "n", "a_zp", "b_zp", "out_zp", "multiplier", "shift")]


class ConcatParams(C.Structure):
    _fields_ = [("outer", I32), ("n_inputs", I32), ("inner", P_I32), ("zero_points", P_I32),
                ("multipliers", P_I32), ("shifts", P_I32), ("out_zp", I32)]


class TransposeParams(C.Structure):
    _fields_ = [("out_dims", I32 * MAX_DIMS), ("in_strides", I32 * MAX_DIMS)]


def ptr(array: np.ndarray | None, ctype):
    if array is None:
        return C.cast(None, C.POINTER(ctype))
    assert array.flags.c_contiguous
    return array.ctypes.data_as(C.POINTER(ctype))


def i8(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int8)


def i32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int32)


def dims6(values) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    return (1,) * (MAX_DIMS - len(values)) + values


class Kernels:
    """Typed wrappers around the compiled kernel library."""

    def __init__(self, lib_path: str):
        self.lib = C.CDLL(lib_path)
        self._keep: list = []

    # -- fully connected ---------------------------------------------------------------------
    def fc(self, x, w, bias, mult, shift, in_zp, out_zp, act_min=-128, act_max=127, *, variant="portable",
           brl=None, use_dsp=True):
        x = i8(x)
        rows, k = x.shape
        o = int(mult.shape[0])
        keep = [i32(bias) if bias is not None else None, i32(mult), i32(shift)]
        p = FcParams(rows=rows, in_features=k, out_features=o, in_zp=in_zp, out_zp=out_zp, act_min=act_min,
                     act_max=act_max, bias=ptr(keep[0], I32), multiplier=ptr(keep[1], I32), shift=ptr(keep[2], I32))
        if brl is not None:
            arrays = [np.ascontiguousarray(brl.row_nnzb, np.uint16), np.ascontiguousarray(brl.runs, np.uint16),
                      i8(brl.values)]
            keep += arrays
            p.weights = ptr(None, I8)
            p.block, p.row_nnzb, p.runs, p.values = brl.block, ptr(arrays[0], U16), ptr(arrays[1], U16), ptr(arrays[2], I8)
        else:
            wa = i8(w)
            keep.append(wa)
            p.weights = ptr(wa, I8)
        out = np.zeros((rows, o), dtype=np.int8)
        scratch = np.zeros(self.lib.tk_fc_scratch_bytes(C.byref(p)) // 4 + 4, dtype=np.uint32)
        if brl is not None:
            self.lib.tk_fc_s8_brl(C.byref(p), ptr(x, I8), ptr(out, I8), ptr(scratch, U32), I32(int(use_dsp)))
        elif variant == "portable":
            self.lib.tk_fc_s8_portable(C.byref(p), ptr(x, I8), ptr(out, I8))
        else:
            self.lib.tk_fc_s8_dsp(C.byref(p), ptr(x, I8), ptr(out, I8), ptr(scratch, U32))
        return out

    # -- convolutions ----------------------------------------------------------------------------
    def conv(self, x, w, bias, mult, shift, *, stride, padding, dilation, in_zp, out_zp, act_min=-128,
             act_max=127, variant="portable", depthwise=False, brl=None, use_dsp=True, in_place=False):
        x = i8(x)
        n, h, wd, c = x.shape
        if depthwise:
            kh, kw, _ = w.shape
            oc = c
        else:
            oc, kh, kw, _ = w.shape
        top, left, bottom, right = padding
        oh = (h + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (wd + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        keep = [i8(w), i32(bias) if bias is not None else None, i32(mult), i32(shift)]
        p = ConvParams(batch=n, in_h=h, in_w=wd, in_c=c, out_h=oh, out_w=ow, out_c=oc, k_h=kh, k_w=kw,
                       stride_h=stride[0], stride_w=stride[1], pad_top=top, pad_left=left, dil_h=dilation[0],
                       dil_w=dilation[1], in_zp=in_zp, out_zp=out_zp, act_min=act_min, act_max=act_max,
                       weights=ptr(keep[0], I8), bias=ptr(keep[1], I32), multiplier=ptr(keep[2], I32),
                       shift=ptr(keep[3], I32))
        out = np.zeros((n, oh, ow, oc), dtype=np.int8)
        if depthwise and in_place:
            buf = np.zeros(max(x.size, out.size), np.int8)
            buf[:x.size] = x.reshape(-1)
            scratch = np.zeros(self.lib.tk_depthwise_inplace_scratch_bytes(C.byref(p)), np.int8)
            self.lib.tk_depthwise_conv2d_s8_inplace(C.byref(p), ptr(buf, I8), ptr(scratch, I8))
            out = buf[:out.size].reshape(out.shape).copy()
        elif depthwise:
            self.lib.tk_depthwise_conv2d_s8(C.byref(p), ptr(x, I8), ptr(out, I8))
        elif brl is not None:
            arrays = [np.ascontiguousarray(brl.row_nnzb, np.uint16), np.ascontiguousarray(brl.runs, np.uint16),
                      i8(brl.values)]
            fc = FcParams(block=brl.block, row_nnzb=ptr(arrays[0], U16), runs=ptr(arrays[1], U16),
                          values=ptr(arrays[2], I8))
            scratch = np.zeros(self.lib.tk_conv2d_dsp_scratch_bytes(C.byref(p), I32(brl.block)) // 4 + 4, np.uint32)
            self.lib.tk_conv2d_s8_brl(C.byref(p), C.byref(fc), ptr(x, I8), ptr(out, I8), ptr(scratch, U32),
                                      I32(int(use_dsp)))
        elif variant == "portable":
            self.lib.tk_conv2d_s8_portable(C.byref(p), ptr(x, I8), ptr(out, I8))
        else:
            scratch = np.zeros(self.lib.tk_conv2d_dsp_scratch_bytes(C.byref(p), I32(0)) // 4 + 4, dtype=np.uint32)
            self.lib.tk_conv2d_s8_dsp(C.byref(p), ptr(x, I8), ptr(out, I8), ptr(scratch, U32))
        return out

    # -- pools ---------------------------------------------------------------------------------
    def pool(self, x, *, kind, kernel, stride, padding=(0, 0, 0, 0), dilation=(1, 1), in_zp=0, out_zp=0,
             mult=0, shift=0):
        x = i8(x)
        n, h, w, c = x.shape
        top, left, bottom, right = padding
        oh = (h + top + bottom - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        ow = (w + left + right - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        p = PoolParams(batch=n, in_h=h, in_w=w, channels=c, out_h=oh, out_w=ow, k_h=kernel[0], k_w=kernel[1],
                       stride_h=stride[0], stride_w=stride[1], pad_top=top, pad_left=left, dil_h=dilation[0],
                       dil_w=dilation[1], in_zp=in_zp, out_zp=out_zp, multiplier=mult, shift=shift)
        out = np.zeros((n, oh, ow, c), np.int8)
        fn = self.lib.tk_avg_pool2d_s8 if kind == "avg" else self.lib.tk_max_pool2d_s8
        fn(C.byref(p), ptr(x, I8), ptr(out, I8))
        return out

    def mean(self, x, axes, *, in_zp, out_zp, mult, shift):
        x = i8(x)
        shape = dims6(x.shape)
        off = MAX_DIMS - x.ndim
        red = {a + off for a in axes}
        strides = [0] * MAX_DIMS
        s = 1
        for d in range(MAX_DIMS - 1, -1, -1):
            strides[d] = s
            s *= shape[d]
        out_dims = [1 if d in red else shape[d] for d in range(MAX_DIMS)]
        red_dims = [shape[d] if d in red else 1 for d in range(MAX_DIMS)]
        p = MeanParams((I32 * 6)(*out_dims), (I32 * 6)(*red_dims), (I32 * 6)(*strides), in_zp, out_zp, mult, shift)
        out = np.zeros(int(np.prod(out_dims)), np.int8)
        self.lib.tk_mean_s8(C.byref(p), ptr(x, I8), ptr(out, I8))
        return out

    # -- element-wise ----------------------------------------------------------------------------
    def binary(self, kind, a, b, **q):
        a, b = i8(a), i8(b)
        out_shape = np.broadcast_shapes(a.shape, b.shape)

        def strides_of(t):
            shape = dims6(t.shape)
            st_ = [0] * MAX_DIMS
            s = 1
            for d in range(MAX_DIMS - 1, -1, -1):
                st_[d] = 0 if shape[d] == 1 else s
                s *= shape[d]
            return st_

        p = BinaryParams((I32 * 6)(*dims6(out_shape)), (I32 * 6)(*strides_of(a)), (I32 * 6)(*strides_of(b)), **q)
        out = np.zeros(out_shape, np.int8)
        fn = self.lib.tk_add_s8 if kind == "add" else self.lib.tk_mul_s8
        fn(C.byref(p), ptr(a, I8), ptr(b, I8), ptr(out, I8))
        return out

    def requantize(self, x, in_zp, out_zp, mult, shift):
        x = i8(x)
        out = np.zeros_like(x)
        self.lib.tk_requantize_s8(ptr(x, I8), ptr(out, I8), I32(x.size), I32(in_zp), I32(out_zp), I32(mult), I32(shift))
        return out

    def lut(self, x, table):
        x, table = i8(x), i8(table)
        out = np.zeros_like(x)
        self.lib.tk_lut_s8(ptr(x, I8), ptr(out, I8), I32(x.size), ptr(table, I8))
        return out

    # -- normalisation / attention ---------------------------------------------------------------
    def layer_norm(self, x, *, in_zp, out_zp, eps_q, mult, shift, beta_q, in_place=False):
        x = i8(x)
        c = x.shape[-1]
        arrays = [i32(mult), i32(shift), i32(beta_q)]
        p = LayerNormParams(x.size // c, c, in_zp, out_zp, eps_q, ptr(arrays[0], I32), ptr(arrays[1], I32),
                            ptr(arrays[2], I32))
        out = x.copy() if in_place else np.zeros_like(x)
        src = out if in_place else x
        self.lib.tk_layer_norm_s8(C.byref(p), ptr(src, I8), ptr(out, I8))
        return out

    def softmax(self, x, exp_table):
        x, table = i8(x), i32(exp_table)
        out = np.zeros_like(x)
        self.lib.tk_softmax_s8(ptr(x, I8), ptr(out, I8), I32(x.size // x.shape[-1]), I32(x.shape[-1]), ptr(table, I32))
        return out

    def isqrt(self, n: int) -> int:
        self.lib.tk_isqrt.restype = U32
        return int(self.lib.tk_isqrt(U32(n)))

    def batch_matmul(self, a, b, *, a_zp, b_zp, out_zp, mult, shift, variant="portable"):
        a, b = i8(a), i8(b)
        batch = int(np.prod(a.shape[:-2]))
        m, k = a.shape[-2:]
        n = b.shape[-1]
        p = BatchMatmulParams(batch, m, k, n, a_zp, b_zp, out_zp, mult, shift)
        out = np.zeros((*a.shape[:-2], m, n), np.int8)
        if variant == "portable":
            self.lib.tk_batch_matmul_s8_portable(C.byref(p), ptr(a, I8), ptr(b, I8), ptr(out, I8))
        else:
            scratch = np.zeros((k + 3) // 4 * 2 + 2, np.uint32)
            self.lib.tk_batch_matmul_s8_dsp(C.byref(p), ptr(a, I8), ptr(b, I8), ptr(out, I8), ptr(scratch, U32))
        return out

    # -- data movement -----------------------------------------------------------------------------
    def concat(self, xs, axis, zps, mults, shifts, out_zp):
        xs = [i8(x) for x in xs]
        outer = int(np.prod(xs[0].shape[:axis]))
        inner = i32([int(np.prod(x.shape[axis:])) for x in xs])
        arrays = [inner, i32(zps), i32(mults), i32(shifts)]
        p = ConcatParams(outer, len(xs), *(ptr(a, I32) for a in arrays[:4]), out_zp)
        in_ptrs = (P_I8 * len(xs))(*(ptr(x, I8) for x in xs))
        shape = list(xs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        out = np.zeros(shape, np.int8)
        self.lib.tk_concat_s8(C.byref(p), in_ptrs, ptr(out, I8))
        return out

    def transpose(self, x, perm):
        x = i8(x)
        in_strides = [s // 1 for s in x.strides]
        out_shape = [x.shape[p] for p in perm]
        strides = [in_strides[p] for p in perm]
        pad = MAX_DIMS - x.ndim
        p = TransposeParams((I32 * 6)(*dims6(out_shape)), (I32 * 6)(*([0] * pad + strides)))
        out = np.zeros(out_shape, np.int8)
        self.lib.tk_transpose_s8(C.byref(p), ptr(x, I8), ptr(out, I8))
        return out
