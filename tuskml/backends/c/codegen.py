"""Integer graph + memory plan -> a self-contained C99 project (the ``c`` engine backend's generator).

:func:`generate_c_project` writes into ``out_dir``:

* the kernel library (``tk_*.c/.h`` copied from ``kernels/``);
* ``tk_model.h`` / ``tk_model.c``: every constant as a ``static const`` array (flash), one static arena
  (``tk_arena``, SRAM) laid out by the memory plan, one shared scratch buffer (``tk_scratch``),
  one ``noinline`` function per graph node named ``tk_layer_<index>`` (so an emulator can count
  instructions per layer) and ``int tk_invoke(const int8_t* in, int8_t* out)``;
* ``tk_test_data.c``: compiled-in test inputs, expected outputs and the ``tk_test_outputs`` buffer,
  plus ``tk_self_test()``; ``tk_test_main.c`` (firmware main: returns 0 when every output matches)
  and ``tk_host_main.c`` (host main: file in -> file out, or the self test without arguments);
* ``project.json``: the manifest (layers, kernels, byte counts, sources).

Each layer calls one kernel whose integer semantics are those of ``sparse_engine/ir.py``; nothing in
the generated code depends on floating point.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from tuskml.backends.c.host import KERNEL_DIR
from tuskml.core.errors import TuskmlError

MAX_DIMS = 6
ARENA_ALIGN = 16
#: Ops that may write their output over their input (same arena offset) and stay exact.
IN_PLACE_SAFE = frozenset({"add", "mul", "requantize", "lut", "layer_norm", "softmax", "reshape", "depthwise_conv2d"})


class CodegenError(TuskmlError):
    """The graph (or plan) cannot be turned into C: names the node, tensor or attribute at fault."""


@attrs.frozen(kw_only=True)
class CLayer:
    """One generated layer function."""

    index: int
    function: str  # tk_layer_<index>
    node: str
    op: str
    module_path: str
    kernel: str  # the C kernel it calls
    sparse: bool
    weight_bytes: int  # flash bytes of this layer's constants (weights as encoded, bias, requant, tables)
    output_bytes: int


@attrs.frozen(kw_only=True)
class CProject:
    """What :func:`generate_c_project` wrote, and the numbers a deploy report needs."""

    directory: pathlib.Path
    sources: tuple[pathlib.Path, ...]  # model + kernels (no main)
    test_main: pathlib.Path  # firmware main (tk_test_main.c)
    host_main: pathlib.Path  # host main (tk_host_main.c)
    include_dirs: tuple[pathlib.Path, ...]
    layers: tuple[CLayer, ...]
    arena_bytes: int
    scratch_bytes: int
    input_bytes: int
    output_bytes: int
    test_samples: int
    use_dsp: bool
    constant_bytes: int

    @property
    def firmware_sources(self) -> tuple[pathlib.Path, ...]:
        """Sources of a firmware image that runs the compiled-in test (for mcu_targets.build)."""
        return (*self.sources, self.test_main)

    @property
    def host_sources(self) -> tuple[pathlib.Path, ...]:
        return (*self.sources, self.host_main)


# --- helpers ----------------------------------------------------------------------------------------


def _c_ident(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in text)
    return out if out and not out[0].isdigit() else "_" + out


def _comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")


def _fmt_values(values: np.ndarray, per_line: int = 24) -> str:
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1).tolist()]
    if not flat:
        return "0"
    lines = [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    return "\n    " + ",\n    ".join(lines) + "\n"


def _dims6(shape: Sequence[int], what: str) -> list[int]:
    if len(shape) > MAX_DIMS:
        raise CodegenError(f"{what}: rank {len(shape)} > {MAX_DIMS} is not supported by the C kernels")
    return [1] * (MAX_DIMS - len(shape)) + [int(s) for s in shape]


def _row_major_strides(shape: Sequence[int]) -> list[int]:
    strides = [0] * len(shape)
    s = 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = s
        s *= int(shape[d])
    return strides


def _align(n: int, a: int = ARENA_ALIGN) -> int:
    return (n + a - 1) // a * a


def _ints(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iub":
        raise CodegenError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def naive_offsets(graph: Any) -> tuple[dict[str, int], int]:
    """Every activation at its own aligned offset (no reuse): the plan used when none is given."""
    offsets: dict[str, int] = {}
    total = 0
    for t in graph.activations():
        offsets[t.name] = total
        total = _align(total + t.size)
    return offsets, max(total, ARENA_ALIGN)


class _Emitter:
    """Accumulates the constant arrays and layer functions of tk_model.c."""

    def __init__(self, graph: Any, offsets: dict[str, int], use_dsp: bool,
                 node_scratch: dict[str, tuple[int, int]] | None = None):
        self.graph = graph
        self.node_scratch = dict(node_scratch or {})
        self.offsets = offsets
        self.use_dsp = use_dsp
        self.const_lines: list[str] = []
        self.layer_lines: list[str] = []
        self.scratch_bytes = 0
        self.constant_bytes = 0
        self._layer_const_bytes = 0
        self._names: set[str] = set()

    # -- constants ----------------------------------------------------------------------------
    def const_array(self, base: str, ctype: str, values: Any) -> str:
        arr = np.asarray(values).reshape(-1)
        name = _c_ident(base)
        i = 1
        while name in self._names:
            name = f"{_c_ident(base)}_{i}"
            i += 1
        self._names.add(name)
        itemsize = {"int8_t": 1, "uint16_t": 2, "int32_t": 4}[ctype]
        lo, hi = {"int8_t": (-128, 127), "uint16_t": (0, 65535), "int32_t": (-(2**31), 2**31 - 1)}[ctype]
        if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
            raise CodegenError(f"constant {base!r} has values outside {ctype} ([{arr.min()}, {arr.max()}])")
        self.const_lines.append(
            f"static const {ctype} {name}[{max(arr.size, 1)}] __attribute__((aligned(4))) = {{{_fmt_values(arr)}}};")
        nbytes = arr.size * itemsize
        self.constant_bytes += nbytes
        self._layer_const_bytes += nbytes
        return name

    def const_struct(self, ctype: str, name: str, fields: dict[str, Any]) -> str:
        body = []
        for key, value in fields.items():
            if isinstance(value, (list, tuple)):
                value = "{" + ", ".join(str(int(v)) for v in value) + "}"
            body.append(f"    .{key} = {value},")
        self.const_lines.append(f"static const {ctype} {name} = {{\n" + "\n".join(body) + "\n};")
        return name

    def need_scratch(self, nbytes: int) -> None:
        self.scratch_bytes = max(self.scratch_bytes, int(nbytes))

    # -- tensors ------------------------------------------------------------------------------
    def tensor(self, name: str):
        return self.graph.tensors[name]

    def ptr(self, name: str) -> str:
        if name not in self.offsets:
            raise CodegenError(f"tensor {name!r} has no arena offset in the memory plan")
        return f"(tk_arena + {self.offsets[name]})"


def _check_aliasing(graph: Any, node: Any, offsets: dict[str, int]) -> bool:
    """True if the node's output shares its first input's offset (in place); errors on partial overlap."""
    out = graph.tensors[node.outputs[0]]
    o_lo, o_hi = offsets[out.name], offsets[out.name] + out.size
    in_place = False
    for name in node.inputs:
        t = graph.tensors[name]
        if t.is_constant:
            continue
        i_lo, i_hi = offsets[name], offsets[name] + t.size
        if i_hi <= o_lo or o_hi <= i_lo:
            continue
        if node.op in IN_PLACE_SAFE and i_lo == o_lo and t.size >= out.size and not (
                node.op in ("add", "mul") and tuple(t.shape) != tuple(out.shape)):
            in_place = True
            continue
        raise CodegenError(
            f"memory plan puts output {out.name!r} of node {node.name!r} ({node.op}) over its input {name!r} "
            f"([{o_lo}, {o_hi}) vs [{i_lo}, {i_hi})); the C kernel for {node.op} cannot run in place")
    return in_place


# --- per-op lowering ---------------------------------------------------------------------------------


def _requant_arrays(em: _Emitter, node: Any, prefix: str, channels: int) -> tuple[str, str]:
    mult = _ints(node.attrs["requant_multiplier"], f"node {node.name!r} requant_multiplier").reshape(-1)
    shift = _ints(node.attrs["requant_shift"], f"node {node.name!r} requant_shift").reshape(-1)
    if mult.size == 1 and channels > 1:
        mult, shift = np.repeat(mult, channels), np.repeat(shift, channels)
    if mult.size != channels or shift.size != channels:
        raise CodegenError(f"node {node.name!r}: requant arrays have {mult.size}/{shift.size} entries, "
                           f"expected {channels} (one per output channel)")
    return em.const_array(f"{prefix}_mult", "int32_t", mult), em.const_array(f"{prefix}_shift", "int32_t", shift)


def _brl_arrays(em: _Emitter, prefix: str, matrix: np.ndarray, block: int) -> tuple[dict[str, Any], Any]:
    from tuskml.backends.sparse_engine.sparse_format import BlockRunLengthMatrix

    brl = BlockRunLengthMatrix.encode(np.ascontiguousarray(matrix, dtype=np.int8), int(block))
    fields = {
        "block": int(block),
        "row_nnzb": em.const_array(f"{prefix}_row_nnzb", "uint16_t", brl.row_nnzb),
        "runs": em.const_array(f"{prefix}_runs", "uint16_t", brl.runs) if brl.nnzb else "0",
        "values": em.const_array(f"{prefix}_values", "int8_t", brl.values) if brl.nnzb else "0",
    }
    return fields, brl


def _fc_scratch_bytes(k: int, out_c: int, rows: int) -> int:
    """Mirror of tk_fc_scratch_bytes: widened input rows (two when rows come in pairs) + int32 accs."""
    copies = 2 if rows >= 2 else 1
    return copies * ((k + 3) // 4 * 8 + 4 * out_c)


def _lower_conv_like(em: _Emitter, node: Any, idx: int, in_place: bool) -> tuple[list[str], str, bool]:
    g = em.graph
    x, w, b = (g.tensors[n] for n in node.inputs[:3])
    y = g.tensors[node.outputs[0]]
    a = node.attrs
    prefix = f"l{idx}"
    wdata = np.asarray(w.data)
    bias = em.const_array(f"{prefix}_bias", "int32_t", _ints(b.data, f"bias of {node.name!r}"))
    act = (int(a.get("act_min", -128)), int(a.get("act_max", 127)))
    block = int(a.get("sparse_block", 0) or 0)
    out_c = int(y.shape[-1])
    mult, shift = _requant_arrays(em, node, prefix, out_c)
    common = {"in_zp": int(x.zero_point), "out_zp": int(y.zero_point), "act_min": act[0], "act_max": act[1],
              "bias": bias, "multiplier": mult, "shift": shift}
    xp, yp = em.ptr(x.name), em.ptr(y.name)
    dsp = int(em.use_dsp)

    is_fc = node.op == "fully_connected"
    if node.op == "conv2d":
        kh, kw = int(wdata.shape[1]), int(wdata.shape[2])
        pad = tuple(int(v) for v in a.get("padding", (0, 0, 0, 0)))
        stride = tuple(int(v) for v in a.get("stride", (1, 1)))
        is_fc = kh == 1 and kw == 1 and stride == (1, 1) and pad == (0, 0, 0, 0)
    if is_fc:
        k = int(x.shape[-1])
        rows = x.size // k
        matrix = wdata.reshape(out_c, -1)
        if matrix.shape[1] != k:
            raise CodegenError(f"node {node.name!r}: weight has {matrix.shape[1]} inputs per row, input has {k}")
        fields = {"rows": rows, "in_features": k, "out_features": out_c, **common, "weights": "0"}
        if block > 0:
            brl_fields, brl = _brl_arrays(em, prefix, matrix, block)
            fields.update(brl_fields)
            em.need_scratch(_fc_scratch_bytes(brl.padded_cols, out_c, rows) if (em.use_dsp and block % 4 == 0) else 0)
            em.const_struct("tk_fc_params", f"{prefix}_params", fields)
            return [f"tk_fc_s8_brl(&{prefix}_params, {xp}, {yp}, tk_scratch, {dsp});"], "tk_fc_s8_brl", True
        fields["weights"] = em.const_array(f"{prefix}_weights", "int8_t", matrix)
        fields.update({"block": 0, "row_nnzb": "0", "runs": "0", "values": "0"})
        em.const_struct("tk_fc_params", f"{prefix}_params", fields)
        if em.use_dsp:
            em.need_scratch(_fc_scratch_bytes(k, out_c, rows))
            return [f"tk_fc_s8_dsp(&{prefix}_params, {xp}, {yp}, tk_scratch);"], "tk_fc_s8_dsp", False
        return [f"tk_fc_s8_portable(&{prefix}_params, {xp}, {yp});"], "tk_fc_s8_portable", False

    # general / depthwise convolution, NHWC
    n, h, wd, c = (int(v) for v in x.shape)
    _, oh, ow, _ = (int(v) for v in y.shape)
    if node.op == "conv2d":
        kh, kw = int(wdata.shape[1]), int(wdata.shape[2])
    else:
        kh, kw = int(wdata.shape[0]), int(wdata.shape[1])
    top, left, bottom, right = (int(v) for v in a.get("padding", (0, 0, 0, 0)))
    sh, sw = (int(v) for v in a.get("stride", (1, 1)))
    dh, dw = (int(v) for v in a.get("dilation", (1, 1)))
    want_oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    want_ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    if (want_oh, want_ow) != (oh, ow):
        raise CodegenError(f"node {node.name!r}: output is {oh}x{ow} but the attributes give {want_oh}x{want_ow}")
    conv_fields = {"batch": n, "in_h": h, "in_w": wd, "in_c": c, "out_h": oh, "out_w": ow, "out_c": out_c,
                   "k_h": kh, "k_w": kw, "stride_h": sh, "stride_w": sw, "pad_top": top, "pad_left": left,
                   "dil_h": dh, "dil_w": dw, **common}
    if node.op == "depthwise_conv2d":
        conv_fields["weights"] = em.const_array(f"{prefix}_weights", "int8_t", wdata)
        em.const_struct("tk_conv_params", f"{prefix}_params", conv_fields)
        if in_place:
            if oh * ow > h * wd:
                raise CodegenError(f"node {node.name!r}: in-place depthwise needs an output no larger than its input")
            planned = em.node_scratch.get(node.name)
            needed = (4 if c >= 4 else 1) * h * wd  # tk_depthwise_inplace_scratch_bytes
            if planned is not None and int(planned[1]) >= needed:
                scratch = f"(tk_arena + {int(planned[0])})"  # the planner's scratch for this node
            else:
                em.need_scratch(needed)
                scratch = "(int8_t*)tk_scratch"
            return [f"tk_depthwise_conv2d_s8_inplace(&{prefix}_params, {yp}, {scratch});"], \
                "tk_depthwise_conv2d_s8_inplace", False
        return [f"tk_depthwise_conv2d_s8(&{prefix}_params, {xp}, {yp});"], "tk_depthwise_conv2d_s8", False
    kc = kh * kw * c
    if block > 0:
        conv_fields["weights"] = "0"
        brl_fields, brl = _brl_arrays(em, prefix, wdata.reshape(out_c, -1), block)
        em.const_struct("tk_conv_params", f"{prefix}_params", conv_fields)
        em.const_struct("tk_fc_params", f"{prefix}_brl", {"rows": 1, "in_features": kc, "out_features": out_c,
                                                         **common, "weights": "0", **brl_fields})
        em.need_scratch((kc + 3) // 4 * 4 + (brl.padded_cols + 3) // 4 * 8 + 4 * out_c)
        return [f"tk_conv2d_s8_brl(&{prefix}_params, &{prefix}_brl, {xp}, {yp}, tk_scratch, {dsp});"], \
            "tk_conv2d_s8_brl", True
    conv_fields["weights"] = em.const_array(f"{prefix}_weights", "int8_t", wdata)
    em.const_struct("tk_conv_params", f"{prefix}_params", conv_fields)
    if em.use_dsp:
        em.need_scratch((kc + 3) // 4 * 4 + (kc + 3) // 4 * 8 + 4 * out_c)
        return [f"tk_conv2d_s8_dsp(&{prefix}_params, {xp}, {yp}, tk_scratch);"], "tk_conv2d_s8_dsp", False
    return [f"tk_conv2d_s8_portable(&{prefix}_params, {xp}, {yp});"], "tk_conv2d_s8_portable", False


def _broadcast_strides(shape: Sequence[int], out_shape: Sequence[int], what: str) -> list[int]:
    if len(shape) != len(out_shape):
        raise CodegenError(f"{what}: rank {len(shape)} differs from the output rank {len(out_shape)}")
    strides = _row_major_strides(shape)
    for d, (s, o) in enumerate(zip(shape, out_shape)):
        if s == 1 and o != 1:
            strides[d] = 0
        elif s != o:
            raise CodegenError(f"{what}: dim {d} of size {s} cannot broadcast to {o}")
    return [0] * (MAX_DIMS - len(shape)) + strides


def _lower_other(em: _Emitter, node: Any, idx: int) -> tuple[list[str], str]:
    g = em.graph
    a = node.attrs
    op = node.op
    prefix = f"l{idx}"
    acts = [g.tensors[n] for n in node.inputs if not g.tensors[n].is_constant]
    y = g.tensors[node.outputs[0]]
    yp = em.ptr(y.name)
    if op in ("add", "mul"):
        ta, tb = acts
        out_shape = [int(s) for s in y.shape]
        fields = {
            "dims": _dims6(out_shape, f"node {node.name!r}"),
            "a_strides": _broadcast_strides([int(s) for s in ta.shape], out_shape, f"node {node.name!r} input a"),
            "b_strides": _broadcast_strides([int(s) for s in tb.shape], out_shape, f"node {node.name!r} input b"),
            "a_zp": int(ta.zero_point), "b_zp": int(tb.zero_point), "out_zp": int(y.zero_point),
            "act_min": int(a.get("act_min", -128)), "act_max": int(a.get("act_max", 127)),
        }
        if op == "add":
            fields.update({"left_shift": int(a["left_shift"]), "a_multiplier": int(a["input1_multiplier"]),
                           "a_shift": int(a["input1_shift"]), "b_multiplier": int(a["input2_multiplier"]),
                           "b_shift": int(a["input2_shift"]), "out_multiplier": int(a["output_multiplier"]),
                           "out_shift": int(a["output_shift"])})
        else:
            fields.update({"left_shift": 0, "a_multiplier": 0, "a_shift": 0, "b_multiplier": 0, "b_shift": 0,
                           "out_multiplier": int(a["multiplier"]), "out_shift": int(a["shift"])})
        em.const_struct("tk_binary_params", f"{prefix}_params", fields)
        fn = f"tk_{op}_s8"
        return [f"{fn}(&{prefix}_params, {em.ptr(ta.name)}, {em.ptr(tb.name)}, {yp});"], fn
    (x,) = acts[:1] if acts else (None,)
    if x is None:
        raise CodegenError(f"node {node.name!r} ({op}) has no activation input")
    xp = em.ptr(x.name)
    if op == "requantize":
        return [f"tk_requantize_s8({xp}, {yp}, {x.size}, {int(x.zero_point)}, {int(y.zero_point)}, "
                f"{int(a['multiplier'])}, {int(a['shift'])});"], "tk_requantize_s8"
    if op == "lut":
        table = _ints(a["table"], f"node {node.name!r} table").reshape(-1)
        if table.size != 256:
            raise CodegenError(f"node {node.name!r}: lut table has {table.size} entries, expected 256")
        name = em.const_array(f"{prefix}_table", "int8_t", table)
        return [f"tk_lut_s8({xp}, {yp}, {x.size}, {name});"], "tk_lut_s8"
    if op in ("avg_pool2d", "max_pool2d"):
        n, h, w, c = (int(v) for v in x.shape)
        _, oh, ow, _ = (int(v) for v in y.shape)
        kh, kw = (int(v) for v in a["kernel"])
        sh, sw = (int(v) for v in a["stride"])
        top, left = (int(v) for v in a.get("padding", (0, 0, 0, 0))[:2])
        dh, dw = (int(v) for v in a.get("dilation", (1, 1)))
        fields = {"batch": n, "in_h": h, "in_w": w, "channels": c, "out_h": oh, "out_w": ow, "k_h": kh, "k_w": kw,
                  "stride_h": sh, "stride_w": sw, "pad_top": top, "pad_left": left, "dil_h": dh, "dil_w": dw,
                  "in_zp": int(x.zero_point), "out_zp": int(y.zero_point),
                  "multiplier": int(a.get("multiplier", 0)), "shift": int(a.get("shift", 0))}
        em.const_struct("tk_pool_params", f"{prefix}_params", fields)
        fn = "tk_avg_pool2d_s8" if op == "avg_pool2d" else "tk_max_pool2d_s8"
        return [f"{fn}(&{prefix}_params, {xp}, {yp});"], fn
    if op == "mean":
        shape = [int(s) for s in x.shape]
        axes = {int(ax) % len(shape) for ax in a["axes"]}
        off = MAX_DIMS - len(shape)
        full = _dims6(shape, f"node {node.name!r}")
        strides = [0] * off + _row_major_strides(shape)
        reduced = {ax + off for ax in axes}
        fields = {"out_dims": [1 if d in reduced else full[d] for d in range(MAX_DIMS)],
                  "reduce_dims": [full[d] if d in reduced else 1 for d in range(MAX_DIMS)],
                  "in_strides": strides, "in_zp": int(x.zero_point), "out_zp": int(y.zero_point),
                  "multiplier": int(a["multiplier"]), "shift": int(a["shift"])}
        em.const_struct("tk_mean_params", f"{prefix}_params", fields)
        return [f"tk_mean_s8(&{prefix}_params, {xp}, {yp});"], "tk_mean_s8"
    if op == "layer_norm":
        c = int(x.shape[-1])
        mult, shift = _requant_arrays(em, node, prefix, c)
        beta = em.const_array(f"{prefix}_beta", "int32_t", _ints(a["beta_q"], f"node {node.name!r} beta_q"))
        fields = {"rows": x.size // c, "channels": c, "in_zp": int(x.zero_point), "out_zp": int(y.zero_point),
                  "eps_q": int(a["eps_q"]), "multiplier": mult, "shift": shift, "beta_q": beta}
        em.const_struct("tk_layer_norm_params", f"{prefix}_params", fields)
        return [f"tk_layer_norm_s8(&{prefix}_params, {xp}, {yp});"], "tk_layer_norm_s8"
    if op == "softmax":
        length = int(x.shape[-1])
        table = em.const_array(f"{prefix}_exp", "int32_t", _ints(a["exp_table"], f"node {node.name!r} exp_table"))
        return [f"tk_softmax_s8({xp}, {yp}, {x.size // length}, {length}, {table});"], "tk_softmax_s8"
    if op == "batch_matmul":
        ta, tb = acts
        m, k = (int(v) for v in ta.shape[-2:])
        kb, n = (int(v) for v in tb.shape[-2:])
        batch = int(math.prod(ta.shape[:-2]))
        if kb != k or int(math.prod(tb.shape[:-2])) != batch:
            raise CodegenError(f"node {node.name!r}: batch_matmul shapes {list(ta.shape)} @ {list(tb.shape)} do not fit")
        fields = {"batch": batch, "m": m, "k": k, "n": n, "a_zp": int(ta.zero_point), "b_zp": int(tb.zero_point),
                  "out_zp": int(y.zero_point), "multiplier": int(a["multiplier"]), "shift": int(a["shift"])}
        em.const_struct("tk_batch_matmul_params", f"{prefix}_params", fields)
        pa, pb = em.ptr(ta.name), em.ptr(tb.name)
        if em.use_dsp:
            em.need_scratch((k + 3) // 4 * 8)
            return [f"tk_batch_matmul_s8_dsp(&{prefix}_params, {pa}, {pb}, {yp}, tk_scratch);"], "tk_batch_matmul_s8_dsp"
        return [f"tk_batch_matmul_s8_portable(&{prefix}_params, {pa}, {pb}, {yp});"], "tk_batch_matmul_s8_portable"
    if op == "concat":
        axis = int(a["axis"]) % len(y.shape)
        outer = int(math.prod(y.shape[:axis]))
        inner = [int(math.prod(t.shape[axis:])) for t in acts]
        mults = [int(v) for v in a["multipliers"]]
        shifts = [int(v) for v in a["shifts"]]
        if len(mults) != len(acts) or len(shifts) != len(acts):
            raise CodegenError(f"node {node.name!r}: concat needs one multiplier/shift per input ({len(acts)})")
        fields = {"outer": outer, "n_inputs": len(acts),
                  "inner": em.const_array(f"{prefix}_inner", "int32_t", inner),
                  "zero_points": em.const_array(f"{prefix}_zps", "int32_t", [int(t.zero_point) for t in acts]),
                  "multipliers": em.const_array(f"{prefix}_mults", "int32_t", mults),
                  "shifts": em.const_array(f"{prefix}_shifts", "int32_t", shifts), "out_zp": int(y.zero_point)}
        em.const_struct("tk_concat_params", f"{prefix}_params", fields)
        ptrs = ", ".join(em.ptr(t.name) for t in acts)
        return [f"const int8_t* const inputs[{len(acts)}] = {{{ptrs}}};",
                f"tk_concat_s8(&{prefix}_params, inputs, {yp});"], "tk_concat_s8"
    if op == "transpose":
        perm = [int(p) for p in a["perm"]]
        in_strides = _row_major_strides([int(s) for s in x.shape])
        out_shape = [int(x.shape[p]) for p in perm]
        fields = {"out_dims": _dims6(out_shape, f"node {node.name!r}"),
                  "in_strides": [0] * (MAX_DIMS - len(perm)) + [in_strides[p] for p in perm]}
        em.const_struct("tk_transpose_params", f"{prefix}_params", fields)
        return [f"tk_transpose_s8(&{prefix}_params, {xp}, {yp});"], "tk_transpose_s8"
    if op == "reshape":
        if x.size != y.size:
            raise CodegenError(f"node {node.name!r}: reshape from {x.size} to {y.size} elements")
        return [f"tk_copy_s8({xp}, {yp}, {x.size});"], "tk_copy_s8"
    raise CodegenError(f"node {node.name!r} (module {node.module_path!r}): op {op!r} has no C kernel")


# --- project writer ------------------------------------------------------------------------------------


_LAYER_ATTR = """#if defined(__clang__)
#define TK_LAYER __attribute__((noinline))
#elif defined(__GNUC__)
#define TK_LAYER __attribute__((noinline, noipa))
#else
#define TK_LAYER
#endif"""


def _check_graph(graph: Any) -> None:
    if not getattr(graph, "quantized", False):
        raise CodegenError(f"graph {graph.name!r} is a float graph; quantize it before generating C")
    for name in [*graph.inputs, *graph.outputs]:
        t = graph.tensors[name]
        if t.dtype != "int8":
            raise CodegenError(f"graph input/output {name!r} is {t.dtype}; the C API moves int8 tensors")
    for node in graph.nodes:
        if len(node.outputs) != 1:
            raise CodegenError(f"node {node.name!r} ({node.op}) has {len(node.outputs)} outputs; C layers write one")


def _plan_offsets(graph: Any, plan: Any) -> tuple[dict[str, int], int]:
    if plan is None:
        return naive_offsets(graph)
    offsets = {k: int(v) for k, v in dict(plan.offsets).items()}
    arena = int(plan.arena_bytes)
    for t in graph.activations():
        if t.name not in offsets:
            raise CodegenError(f"memory plan has no offset for activation {t.name!r}")
        if offsets[t.name] < 0 or offsets[t.name] + t.size > arena:
            raise CodegenError(f"memory plan places {t.name!r} ({t.size} B at {offsets[t.name]}) outside the "
                               f"{arena}-byte arena")
    return offsets, max(_align(arena), ARENA_ALIGN)


def generate_c_project(graph: Any, plan: Any, out_dir: str | pathlib.Path, *, use_dsp: bool,
                       test_inputs: np.ndarray | None = None, expected_outputs: np.ndarray | None = None) -> CProject:
    """Write the C99 project for the integer ``graph`` laid out by ``plan`` into ``out_dir``.

    ``plan`` is a :class:`~tuskml.backends.sparse_engine.memory_plan.MemoryPlan` (``offsets`` by
    tensor name, ``arena_bytes``) or None for a no-reuse layout. ``use_dsp`` picks the SXTB16/SMLAD
    kernels (bit-exact emulated on hosts without the DSP extension). ``test_inputs`` (int8, whole
    graph batches; several graph inputs concatenated per sample in graph order) and
    ``expected_outputs`` are compiled in for the self test. Returns a :class:`CProject`.
    """
    _check_graph(graph)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    offsets, arena_bytes = _plan_offsets(graph, plan)
    em = _Emitter(graph, offsets, use_dsp, getattr(plan, "scratch", None))
    layers: list[CLayer] = []
    for idx, node in enumerate(graph.nodes):
        fn = f"tk_layer_{idx}"
        em._layer_const_bytes = 0
        in_place = _check_aliasing(graph, node, offsets)
        if node.op in ("conv2d", "depthwise_conv2d", "fully_connected"):
            body, kernel, sparse = _lower_conv_like(em, node, idx, in_place)
        elif node.op == "reshape" and in_place:
            body, kernel, sparse = ["/* reshape in place: nothing to move */"], "none", False
        else:
            body, kernel = _lower_other(em, node, idx)
            sparse = False
        y = graph.tensors[node.outputs[0]]
        layers.append(CLayer(index=idx, function=fn, node=node.name, op=node.op, module_path=node.module_path,
                             kernel=kernel, sparse=sparse, weight_bytes=em._layer_const_bytes, output_bytes=y.size))
        em.layer_lines.append(
            f"/* {_comment(node.name)}: {node.op} ({_comment(node.module_path or '-')}) -> {kernel} */\n"
            f"TK_LAYER void {fn}(void) {{\n    " + "\n    ".join(body) + "\n}\n")

    input_bytes = sum(graph.tensors[n].size for n in graph.inputs)
    output_bytes = sum(graph.tensors[n].size for n in graph.outputs)
    scratch_words = max(1, (em.scratch_bytes + 3) // 4)
    _copy_kernels(out)
    _write_model(out, graph, em, layers, offsets, arena_bytes, scratch_words, input_bytes, output_bytes, use_dsp)
    samples = _write_test_data(out, test_inputs, expected_outputs, input_bytes, output_bytes)
    _write_mains(out)
    sources = tuple(sorted(p for p in out.glob("tk_*.c") if p.name not in ("tk_test_main.c", "tk_host_main.c")))
    project = CProject(directory=out, sources=sources, test_main=out / "tk_test_main.c",
                       host_main=out / "tk_host_main.c", include_dirs=(out,), layers=tuple(layers),
                       arena_bytes=arena_bytes, scratch_bytes=scratch_words * 4, input_bytes=input_bytes,
                       output_bytes=output_bytes, test_samples=samples, use_dsp=use_dsp,
                       constant_bytes=em.constant_bytes)
    _write_manifest(out, graph, project)
    return project


def _copy_kernels(out: pathlib.Path) -> None:
    for src in sorted(KERNEL_DIR.iterdir()):
        if src.suffix in (".c", ".h"):
            shutil.copyfile(src, out / src.name)


def _write_model(out: pathlib.Path, graph: Any, em: _Emitter, layers: list[CLayer], offsets: dict[str, int],
                 arena_bytes: int, scratch_words: int, input_bytes: int, output_bytes: int, use_dsp: bool) -> None:
    header = f"""/* Generated by tuskml.backends.c.codegen for graph {_comment(graph.name)!s}. Do not edit. */
#ifndef TK_MODEL_H
#define TK_MODEL_H

#include <stdint.h>

#define TK_INPUT_BYTES {input_bytes}
#define TK_OUTPUT_BYTES {output_bytes}
#define TK_ARENA_BYTES {arena_bytes}
#define TK_SCRATCH_BYTES {scratch_words * 4}
#define TK_NUM_LAYERS {len(layers)}
#define TK_USE_DSP {int(use_dsp)}

/* Run the model on one graph batch: `in` holds the graph inputs ({', '.join(graph.inputs)}) one after
 * another, `out` receives the outputs ({', '.join(graph.outputs)}). Returns 0. */
int tk_invoke(const int8_t* in, int8_t* out);

#endif
"""
    (out / "tk_model.h").write_text(header)
    copy_in, pos = [], 0
    for name in graph.inputs:
        size = graph.tensors[name].size
        copy_in.append(f"    tk_memcpy(tk_arena + {offsets[name]}, in + {pos}, {size}u); /* {_comment(name)} */")
        pos += size
    copy_out, pos = [], 0
    for name in graph.outputs:
        size = graph.tensors[name].size
        copy_out.append(f"    tk_memcpy(out + {pos}, tk_arena + {offsets[name]}, {size}u); /* {_comment(name)} */")
        pos += size
    calls = "\n".join(f"    {layer.function}();" for layer in layers)
    source = f"""/* Generated by tuskml.backends.c.codegen for graph {_comment(graph.name)}. Do not edit.
 * Weights and parameters are const (flash); activations live in tk_arena (SRAM) at the offsets of the
 * memory plan; tk_scratch is shared by the kernels that need a widened row or patch. */
#include <stdint.h>

#include "tk_conv.h"
#include "tk_fc.h"
#include "tk_libc.h"
#include "tk_model.h"
#include "tk_ops.h"

{_LAYER_ATTR}

static int8_t tk_arena[TK_ARENA_BYTES] __attribute__((aligned({ARENA_ALIGN})));
static uint32_t tk_scratch[{scratch_words}] __attribute__((aligned(8)));

{chr(10).join(em.const_lines)}

{chr(10).join(em.layer_lines)}
int tk_invoke(const int8_t* in, int8_t* out) {{
{chr(10).join(copy_in)}
{calls}
{chr(10).join(copy_out)}
    return 0;
}}
"""
    (out / "tk_model.c").write_text(source)


def _write_test_data(out: pathlib.Path, test_inputs: np.ndarray | None, expected: np.ndarray | None,
                     input_bytes: int, output_bytes: int) -> int:
    if test_inputs is None:
        inputs = np.zeros((0,), np.int8)
    else:
        inputs = np.ascontiguousarray(test_inputs).reshape(-1)
        if inputs.dtype != np.int8:
            raise CodegenError(f"test_inputs must be int8, got {inputs.dtype}")
        if inputs.size % input_bytes:
            raise CodegenError(f"test_inputs has {inputs.size} bytes, not a multiple of the input size {input_bytes}")
    samples = inputs.size // input_bytes
    have_expected = expected is not None
    if have_expected:
        exp = np.ascontiguousarray(expected).reshape(-1)
        if exp.dtype != np.int8:
            raise CodegenError(f"expected_outputs must be int8, got {exp.dtype}")
        if exp.size != samples * output_bytes:
            raise CodegenError(f"expected_outputs has {exp.size} bytes; {samples} test samples x "
                               f"{output_bytes} output bytes = {samples * output_bytes}")
    else:
        exp = np.zeros((0,), np.int8)
    n_out = max(samples * output_bytes, 1)
    text = f"""/* Generated: compiled-in test data and the self test. */
#include <stdint.h>

#include "tk_model.h"

#define TK_TEST_SAMPLES {samples}
#define TK_HAVE_EXPECTED {int(have_expected)}

const int8_t tk_test_inputs[{max(inputs.size, 1)}] __attribute__((aligned(4))) = {{{_fmt_values(inputs)}}};
const int8_t tk_test_expected[{max(exp.size, 1)}] __attribute__((aligned(4))) = {{{_fmt_values(exp)}}};
/* Outputs of the last self test: an emulator reads them back by this symbol. */
int8_t tk_test_outputs[{n_out}] __attribute__((aligned(4), used));
volatile int32_t tk_test_mismatches __attribute__((used));

/* Run every compiled-in sample; returns the number of output bytes that differ from the expected
 * ones (0 when there are no expected outputs). */
int tk_self_test(void) {{
    int32_t mismatches = 0;
    for (int32_t s = 0; s < TK_TEST_SAMPLES; ++s) {{
        tk_invoke(tk_test_inputs + s * TK_INPUT_BYTES, tk_test_outputs + s * TK_OUTPUT_BYTES);
    }}
#if TK_HAVE_EXPECTED
    for (int32_t i = 0; i < TK_TEST_SAMPLES * TK_OUTPUT_BYTES; ++i) {{
        mismatches += tk_test_outputs[i] != tk_test_expected[i];
    }}
#endif
    tk_test_mismatches = mismatches;
    return mismatches;
}}
"""
    (out / "tk_test_data.c").write_text(text)
    return samples


def _write_mains(out: pathlib.Path) -> None:
    (out / "tk_test_main.c").write_text("""/* Firmware main: run the compiled-in test; exit code 0 when every output byte matches. */
int tk_self_test(void);

int main(void) {
    return tk_self_test() == 0 ? 0 : 1;
}
""")
    (out / "tk_host_main.c").write_text("""/* Host main (uses the C library, unlike the model itself).
 *   prog IN.bin OUT.bin  run tk_invoke on each TK_INPUT_BYTES sample of IN.bin, write the outputs;
 *   prog                 run the compiled-in self test, exit 0 on a match. */
#include <stdio.h>
#include <stdlib.h>

#include "tk_model.h"

int tk_self_test(void);

int main(int argc, char** argv) {
    if (argc == 1) {
        int bad = tk_self_test();
        printf("tk_self_test: %d mismatching bytes\\n", bad);
        return bad == 0 ? 0 : 1;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s [IN.bin OUT.bin]\\n", argv[0]);
        return 2;
    }
    FILE* fin = fopen(argv[1], "rb");
    FILE* fout = fopen(argv[2], "wb");
    if (!fin || !fout) {
        fprintf(stderr, "cannot open %s or %s\\n", argv[1], argv[2]);
        return 2;
    }
    static int8_t in[TK_INPUT_BYTES > 0 ? TK_INPUT_BYTES : 1];
    static int8_t out[TK_OUTPUT_BYTES > 0 ? TK_OUTPUT_BYTES : 1];
    for (;;) {
        size_t got = fread(in, 1, TK_INPUT_BYTES, fin);
        if (got == 0) {
            break;
        }
        if (got != TK_INPUT_BYTES) {
            fprintf(stderr, "input file ends inside a sample (%zu of %d bytes)\\n", got, TK_INPUT_BYTES);
            return 3;
        }
        tk_invoke(in, out);
        if (fwrite(out, 1, TK_OUTPUT_BYTES, fout) != TK_OUTPUT_BYTES) {
            return 4;
        }
    }
    fclose(fin);
    fclose(fout);
    return 0;
}
""")


def _write_manifest(out: pathlib.Path, graph: Any, project: CProject) -> None:
    manifest = {
        "graph": graph.name,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "input_bytes": project.input_bytes,
        "output_bytes": project.output_bytes,
        "arena_bytes": project.arena_bytes,
        "scratch_bytes": project.scratch_bytes,
        "constant_bytes": project.constant_bytes,
        "use_dsp": project.use_dsp,
        "test_samples": project.test_samples,
        "sources": [p.name for p in project.sources],
        "firmware_main": project.test_main.name,
        "host_main": project.host_main.name,
        "layers": [attrs.asdict(layer) for layer in project.layers],
    }
    (out / "project.json").write_text(json.dumps(manifest, indent=1) + "\n")
