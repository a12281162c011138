"""Every IR op through the whole C path (codegen lowering + kernels + host build) vs reference.py.

Each hypothesis example builds ONE integer graph holding an independent single-op subgraph per op
(random shapes, zero points, multipliers, sparse blocks), so one compile checks every op."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuskml.backends.c.codegen import generate_c_project
from tuskml.backends.c.host import build_project, run_project
from tuskml.backends.sparse_engine import fixedpoint as fp
from tuskml.backends.sparse_engine.ir import Graph, Node, Tensor
from tuskml.backends.sparse_engine.memory_plan import plan_memory
from tuskml.backends.sparse_engine.reference import run_integer


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.g = Graph(quantized=True, name="ops")
        self.feeds: dict[str, np.ndarray] = {}

    def act(self, name, shape, *, is_input=False, zp=None):
        zp = int(self.rng.integers(-128, 128)) if zp is None else zp
        self.g.add_tensor(Tensor(name=name, shape=tuple(shape), dtype="int8", scale=0.05, zero_point=zp))
        if is_input:
            self.g.inputs.append(name)
            self.feeds[name] = self.rng.integers(-128, 128, size=shape, dtype=np.int8)
        return name

    def const(self, name, data, dtype):
        self.g.add_tensor(Tensor(name=name, shape=tuple(data.shape), dtype=dtype, scale=1.0, zero_point=0, data=data))
        return name

    def node(self, op, inputs, out, **attrs):
        self.g.add_node(Node(name=f"{out}_node", op=op, inputs=inputs, outputs=[out], attrs=attrs,
                             module_path=f"test.{op}"))
        self.g.outputs.append(out)

    def mults(self, n, lo, hi):
        return fp.quantize_multipliers(self.rng.uniform(lo, hi, size=n))

    def mult(self, lo, hi):
        return fp.quantize_multiplier(float(self.rng.uniform(lo, hi)))


def _conv(b: _Builder, tag: str, kind: str):
    r = b.rng
    h, w, c = (int(v) for v in r.integers(1, 7, size=3))
    oc = int(r.integers(1, 9))
    if kind == "pointwise":
        kh = kw = 1
        stride, pad, dil = (1, 1), (0, 0, 0, 0), (1, 1)
    else:
        kh, kw = (int(v) for v in r.integers(1, 4, size=2))
        stride = (int(r.integers(1, 3)), int(r.integers(1, 3)))
        pad = tuple(int(v) for v in r.integers(0, 2, size=4))
        dil = (int(r.integers(1, 3)), 1)
    h = max(h, dil[0] * (kh - 1) + 1)
    w = max(w, kw)
    oh = (h + pad[0] + pad[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pad[1] + pad[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    x = b.act(f"{tag}_x", (1, h, w, c), is_input=True)
    if kind == "depthwise":
        oc = c
        wt = r.integers(-127, 128, size=(kh, kw, c), dtype=np.int8)
    else:
        wt = r.integers(-127, 128, size=(oc, kh, kw, c), dtype=np.int8)
    block = 0
    if kind != "depthwise" and r.random() < 0.6:
        block = int(r.choice([1, 2, 3, 4, 8]))
        flat = wt.reshape(oc, -1)
        kp = -(-flat.shape[1] // block) * block
        keep = np.repeat(r.random((oc, kp // block)) < 0.4, block, axis=1)[:, :flat.shape[1]]
        wt = np.where(keep, flat, 0).astype(np.int8).reshape(wt.shape)
    wn = b.const(f"{tag}_w", wt, "int8")
    bn = b.const(f"{tag}_b", r.integers(-2000, 2000, size=oc).astype(np.int32), "int32")
    y = b.act(f"{tag}_y", (1, oh, ow, oc))
    m, s = b.mults(oc, 1e-4, 2e-2)
    lo = int(r.integers(-128, 0))
    b.node("depthwise_conv2d" if kind == "depthwise" else "conv2d", [x, wn, bn], y, stride=stride, padding=pad,
           dilation=dil, requant_multiplier=m, requant_shift=s, act_min=lo, act_max=127, sparse_block=block)


def _fc(b: _Builder):
    r = b.rng
    t, k, o = int(r.integers(1, 5)), int(r.integers(1, 40)), int(r.integers(1, 12))
    x = b.act("fc_x", (1, t, k), is_input=True)
    wt = r.integers(-127, 128, size=(o, k), dtype=np.int8)
    block = int(r.choice([0, 4, 8, 16, 5]))
    if block:
        kp = -(-k // block) * block
        keep = np.repeat(r.random((o, kp // block)) < 0.3, block, axis=1)[:, :k]
        wt = np.where(keep, wt, 0).astype(np.int8)
    wn, bn = b.const("fc_w", wt, "int8"), b.const("fc_b", r.integers(-999, 999, size=o).astype(np.int32), "int32")
    y = b.act("fc_y", (1, t, o))
    m, s = b.mults(o, 1e-4, 2e-2)
    b.node("fully_connected", [x, wn, bn], y, requant_multiplier=m, requant_shift=s, act_min=-128, act_max=100,
           sparse_block=block)


def _elementwise(b: _Builder):
    r = b.rng
    shape = [1, *(int(v) for v in r.integers(1, 5, size=int(r.integers(1, 4))))]
    for op in ("add", "mul"):
        sa = [d if r.random() < 0.7 else 1 for d in shape]
        sb = [d if r.random() < 0.7 else 1 for d in shape]
        sa[0] = sb[0] = 1
        xa, xb = b.act(f"{op}_a", tuple(sa), is_input=True), b.act(f"{op}_b", tuple(sb), is_input=True)
        y = b.act(f"{op}_y", tuple(np.broadcast_shapes(tuple(sa), tuple(sb))))
        if op == "add":
            m1, s1 = b.mult(0.1, 0.5)
            m2, s2 = b.mult(0.1, 0.5)
            mo, so = b.mult(0.5 / 2**20, 2.0 / 2**20)
            b.node("add", [xa, xb], y, left_shift=20, input1_multiplier=m1, input1_shift=s1, input2_multiplier=m2,
                   input2_shift=s2, output_multiplier=mo, output_shift=so, act_min=-128, act_max=127)
        else:
            m, s = b.mult(1e-4, 1e-2)
            b.node("mul", [xa, xb], y, multiplier=m, shift=s, act_min=-50, act_max=127)
    x = b.act("rq_x", tuple(shape), is_input=True)
    m, s = b.mult(0.01, 20.0)
    b.node("requantize", [x], b.act("rq_y", tuple(shape)), multiplier=m, shift=s)
    x = b.act("lut_x", tuple(shape), is_input=True)
    b.node("lut", [x], b.act("lut_y", tuple(shape)), table=r.integers(-128, 128, size=256).astype(np.int8),
           function="random")


def _pools(b: _Builder):
    r = b.rng
    h, w, c = int(r.integers(2, 7)), int(r.integers(2, 7)), int(r.integers(1, 5))
    k, s = int(r.integers(1, 3)), int(r.integers(1, 3))
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    x = b.act("avg_x", (1, h, w, c), is_input=True)
    m, sh = b.mult(0.5 / (k * k), 1.5 / (k * k))
    b.node("avg_pool2d", [x], b.act("avg_y", (1, oh, ow, c)), kernel=(k, k), stride=(s, s), multiplier=m, shift=sh)
    x = b.act("max_x", (1, h, w, c), is_input=True)
    pad = (1, 1, 1, 1) if k >= 2 else (0, 0, 0, 0)
    oh, ow = (h + 2 * pad[0] - k) // s + 1, (w + 2 * pad[1] - k) // s + 1
    b.node("max_pool2d", [x], b.act("max_y", (1, oh, ow, c)), kernel=(k, k), stride=(s, s), padding=pad,
           dilation=(1, 1))
    x = b.act("mean_x", (1, h, w, c), is_input=True)
    axes = (1, 2) if r.random() < 0.6 else (2,)
    keep = bool(r.random() < 0.5)
    count = int(np.prod([(1, h, w, c)[a] for a in axes]))
    out_shape = tuple(1 if (a in axes) else d for a, d in enumerate((1, h, w, c))) if keep else \
        tuple(d for a, d in enumerate((1, h, w, c)) if a not in axes)
    m, sh = b.mult(0.5 / count, 2.0 / count)
    b.node("mean", [x], b.act("mean_y", out_shape), axes=axes, keepdims=keep, multiplier=m, shift=sh)


def _transformer_ops(b: _Builder):
    r = b.rng
    t, c = int(r.integers(1, 6)), int(r.integers(1, 40))
    x = b.act("ln_x", (1, t, c), is_input=True)
    m, s = b.mults(c, -1.0 / 2**11 * 20, 1.0 / 2**11 * 20)
    b.node("layer_norm", [x], b.act("ln_y", (1, t, c)), eps_q=int(r.integers(0, 4)), requant_multiplier=m,
           requant_shift=s, beta_q=r.integers(-40, 40, size=c).astype(np.int32))
    x = b.act("sm_x", (1, t, c), is_input=True)
    b.node("softmax", [x], b.act("sm_y", (1, t, c), zp=-128), exp_table=fp.build_exp_table(float(r.uniform(0.01, 0.3))))
    heads, mm, k, n = int(r.integers(1, 3)), int(r.integers(1, 6)), int(r.integers(1, 20)), int(r.integers(1, 6))
    xa, xb = b.act("bmm_a", (1, heads, mm, k), is_input=True), b.act("bmm_b", (1, heads, k, n), is_input=True)
    m1, s1 = b.mult(1e-4, 1e-2)
    b.node("batch_matmul", [xa, xb], b.act("bmm_y", (1, heads, mm, n)), multiplier=m1, shift=s1)


def _data_ops(b: _Builder):
    r = b.rng
    rank = int(r.integers(2, 5))
    shape = (1, *(int(v) for v in r.integers(1, 4, size=rank - 1)))
    axis = int(r.integers(1, rank))
    parts, ms, ss = [], [], []
    for i in range(int(r.integers(1, 4))):
        s = list(shape)
        s[axis] = int(r.integers(1, 4))
        parts.append(b.act(f"cat_x{i}", tuple(s), is_input=True, zp=3 if i == 0 else None))
        m, sh = ((1 << 30), 1) if i == 0 else b.mult(0.3, 3.0)
        ms.append(m)
        ss.append(sh)
    out = list(shape)
    out[axis] = sum(b.g.tensors[p].shape[axis] for p in parts)
    b.node("concat", parts, b.act("cat_y", tuple(out), zp=3), axis=axis, multipliers=tuple(ms), shifts=tuple(ss))
    x = b.act("tr_x", shape, is_input=True)
    perm = (0, *[int(v) + 1 for v in r.permutation(rank - 1)])
    b.node("transpose", [x], b.act("tr_y", tuple(shape[p] for p in perm), zp=b.g.tensors[x].zero_point), perm=perm)
    x = b.act("rs_x", shape, is_input=True)
    flat = (1, int(np.prod(shape)))
    b.node("reshape", [x], b.act("rs_y", flat, zp=b.g.tensors[x].zero_point), shape=flat)


def build_all_ops_graph(seed: int) -> tuple[Graph, dict[str, np.ndarray]]:
    b = _Builder(np.random.default_rng(seed))
    for kind in ("general", "pointwise", "depthwise"):
        _conv(b, f"conv_{kind}", kind)
    _fc(b)
    _elementwise(b)
    _pools(b)
    _transformer_ops(b)
    _data_ops(b)
    b.g.validate()
    return b.g, b.feeds


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), use_dsp=st.booleans())
def test_every_op_bit_exact_vs_reference(tmp_path_factory, seed, use_dsp):
    graph, feeds = build_all_ops_graph(seed)
    assert {n.op for n in graph.nodes} == {
        "conv2d", "depthwise_conv2d", "fully_connected", "add", "mul", "requantize", "lut", "avg_pool2d",
        "max_pool2d", "mean", "layer_norm", "softmax", "batch_matmul", "concat", "transpose", "reshape"}
    expected = run_integer(graph, feeds)
    project = generate_c_project(graph, plan_memory(graph), tmp_path_factory.mktemp("ops"), use_dsp=use_dsp)
    data = np.concatenate([feeds[n].reshape(-1) for n in graph.inputs])[None, :]
    got = run_project(build_project(project.directory), data, input_bytes=project.input_bytes,
                      output_bytes=project.output_bytes)[0]
    pos = 0
    for name in graph.outputs:
        size = graph.tensors[name].size
        np.testing.assert_array_equal(got[pos:pos + size], expected[name].reshape(-1), err_msg=f"output {name}")
        pos += size
