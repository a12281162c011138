"""torch -> float :class:`~tuskml.backends.sparse_engine.ir.Graph`, via ``torch.fx`` symbolic tracing.

The importer walks the traced fx graph once. Shapes come from running the example input through
``ShapeProp``. Layout: torch image tensors are NCHW, the IR keeps them NHWC (what MCU kernels want).
Each traced value is tracked as ``(ir tensor, perm)`` with ``ir_tensor == torch_value.permute(perm)``;
an op that needs a particular layout gets an explicit ``transpose`` node only when the layouts
differ (a transpose that only moves size-1 dims becomes a free ``reshape``). ``permute``/``transpose``
in the model itself are recorded lazily the same way, so they cost nothing until a consumer needs
the data in that order.

Folded on the way: BatchNorm into the preceding conv; ReLU/ReLU6 into the preceding conv, linear or
add (``activation`` attribute); a constant scale after ``matmul`` into the matmul's ``alpha``.
``nn.MultiheadAttention`` (batch_first, self-attention) and ``F.scaled_dot_product_attention`` are
decomposed into fully_connected / reshape / transpose / batch_matmul / softmax nodes; ``nn.Unfold`` /
``nn.Fold`` with non-overlapping patches into reshape + transpose.

Anything else raises :class:`UnsupportedOpError` naming the op and its module path.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import attrs
import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from tuskml.backends.sparse_engine.ir import Graph, Node, Tensor
from tuskml.core.errors import TuskmlError


class FrontendError(TuskmlError):
    """The model cannot be imported (tracing failed, bad example input ...)."""


class UnsupportedOpError(FrontendError):
    """An op or a use of an op that the engine does not support; the message names op and module."""


@attrs.define
class _Value:
    name: str  # IR tensor name
    perm: tuple[int, ...]  # ir = torch.permute(perm)


NHWC = (0, 2, 3, 1)
_ACTIVATION_MODULES = {
    nn.SiLU: "silu", nn.GELU: "gelu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
    nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
}
_ACTIVATION_FUNCTIONS = {
    F.silu: "silu", F.gelu: "gelu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    torch.tanh: "tanh", F.tanh: "tanh", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid",
}
_PASSTHROUGH_MODULES = (nn.Identity, nn.Dropout)


def _identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _shape_of(fx_node: torch.fx.Node) -> tuple[int, ...]:
    meta = fx_node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise FrontendError(f"no tensor shape recorded for fx node {fx_node.name!r}")
    return tuple(int(s) for s in meta.shape)


def _module_path(fx_node: torch.fx.Node) -> str:
    if fx_node.op == "call_module":
        return str(fx_node.target)
    stack = fx_node.meta.get("nn_module_stack")
    if stack:
        return f"{list(stack.keys())[-1]}.{fx_node.name}"
    return fx_node.name


def _op_name(fx_node: torch.fx.Node, module: nn.Module | None = None) -> str:
    if module is not None:
        return type(module).__name__
    target = fx_node.target
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


class _Importer:
    def __init__(self, gm: torch.fx.GraphModule, name: str):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.graph = Graph(name=name)
        self.env: dict[torch.fx.Node, Any] = {}
        self.fx_node: torch.fx.Node | None = None
        self.path_suffix = ""  # e.g. ".in_proj" while decomposing nn.MultiheadAttention

    # --- helpers ----------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return (_module_path(self.fx_node) + self.path_suffix) if self.fx_node is not None else ""

    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"unsupported op {what} at module {self.path!r}: the SparseEngine frontend "
                                  f"supports conv2d/linear/batchnorm/relu/relu6/silu/gelu/add/mul/pooling/"
                                  f"layernorm/softmax/matmul/attention/reshape/transpose/unfold/fold/concat")

    def const(self, base: str, data: np.ndarray) -> str:
        name = self.graph.unique_name(base)
        self.graph.add_tensor(Tensor(name=name, shape=tuple(data.shape), dtype="float32",
                                     data=np.ascontiguousarray(data, dtype=np.float32)))
        return name

    def emit(self, op: str, inputs: list[str], shape: tuple[int, ...], attrs: dict | None = None,
             base: str | None = None) -> str:
        base = base or (self.fx_node.name if self.fx_node is not None else op)
        out = self.graph.unique_name(base)
        self.graph.add_tensor(Tensor(name=out, shape=tuple(int(s) for s in shape)))
        node_name = self.graph.unique_name(f"{out}__{op}")
        self.graph.add_node(Node(name=node_name, op=op, inputs=inputs, outputs=[out], attrs=dict(attrs or {}),
                                 module_path=self.path))
        return out

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.tensors[name].shape

    def value(self, arg: Any) -> _Value:
        v = self.env.get(arg) if isinstance(arg, torch.fx.Node) else None
        if not isinstance(v, _Value):
            raise self.unsupported(f"{_op_name(self.fx_node)} with a non-tensor or constant-tensor argument {arg!r}")
        return v

    def layout(self, v: _Value, wanted: tuple[int, ...]) -> str:
        """IR tensor holding ``v`` in layout ``wanted`` (inserting a transpose if needed)."""
        if v.perm == wanted:
            return v.name
        tperm = tuple(v.perm.index(w) for w in wanted)
        src_shape = self.shape(v.name)
        out_shape = tuple(src_shape[p] for p in tperm)
        moved = [p for p in tperm if src_shape[p] != 1]
        if moved == sorted(moved):  # only size-1 dims move: no data movement
            return self.emit("reshape", [v.name], out_shape, {"shape": out_shape}, base=f"{v.name}_r")
        return self.emit("transpose", [v.name], out_shape, {"perm": tperm}, base=f"{v.name}_t")

    def torch_layout(self, v: _Value) -> str:
        return self.layout(v, _identity(len(v.perm)))

    def single_user(self, fx_arg: torch.fx.Node) -> bool:
        return len(fx_arg.users) == 1

    def fusable_producer(self, fx_arg: Any, ops: tuple[str, ...]) -> Node | None:
        """The IR node producing ``fx_arg`` if it is one of ``ops``, unfused and used only here."""
        if not isinstance(fx_arg, torch.fx.Node) or not self.single_user(fx_arg):
            return None
        v = self.env.get(fx_arg)
        if not isinstance(v, _Value):
            return None
        node = self.graph.producer(v.name)
        if node is None or node.op not in ops or node.attrs.get("activation", "none") != "none":
            return None
        return node

    # --- driver -----------------------------------------------------------------------------

    def run(self) -> Graph:
        for fx_node in self.gm.graph.nodes:
            self.fx_node = fx_node
            if fx_node.op == "placeholder":
                shape = _shape_of(fx_node)
                perm = NHWC if len(shape) == 4 else _identity(len(shape))
                ir_shape = tuple(shape[p] for p in perm)
                name = self.graph.unique_name(fx_node.name)
                self.graph.add_tensor(Tensor(name=name, shape=ir_shape))
                self.graph.inputs.append(name)
                self.graph.input_permutations[name] = perm
                self.env[fx_node] = _Value(name, perm)
            elif fx_node.op == "output":
                results = fx_node.args[0]
                results = results if isinstance(results, (tuple, list)) else (results,)
                for r in results:
                    name = self.torch_layout(self.value(r))
                    if name in self.graph.inputs or name in self.graph.outputs:
                        name = self.emit("reshape", [name], self.shape(name), {"shape": self.shape(name)}, base="output")
                    self.graph.outputs.append(name)
            elif fx_node.op == "get_attr":
                self.env[fx_node] = ("param", fx_node.target)
            elif fx_node.op == "call_module":
                self.env[fx_node] = self.call_module(fx_node, self.modules[fx_node.target])
            elif fx_node.op == "call_function":
                self.env[fx_node] = self.call_function(fx_node)
            elif fx_node.op == "call_method":
                self.env[fx_node] = self.call_method(fx_node)
            else:  # pragma: no cover - fx has no other node kinds
                raise self.unsupported(fx_node.op)
        self.fx_node = None
        self.graph.validate()
        return self.graph

    def arg(self, fx_node: torch.fx.Node, index: int, key: str, default: Any = None) -> Any:
        if len(fx_node.args) > index:
            a = fx_node.args[index]
        else:
            a = fx_node.kwargs.get(key, default)
        if isinstance(a, torch.fx.Node):
            v = self.env.get(a)
            return v if not isinstance(v, tuple) or v[:1] != ("param",) else v
        return a

    def concrete(self, x: Any) -> Any:
        """Python value of an argument (ints from ``x.shape`` etc.)."""
        if isinstance(x, torch.fx.Node):
            v = self.env.get(x)
            if isinstance(v, _Value):
                raise self.unsupported(f"{_op_name(self.fx_node)} with a tensor where a constant is needed")
            return v
        if isinstance(x, (list, tuple)):
            return type(x)(self.concrete(e) for e in x)
        return x

    # --- modules ----------------------------------------------------------------------------

    def call_module(self, fx_node: torch.fx.Node, m: nn.Module) -> Any:
        x_arg = fx_node.args[0] if fx_node.args else None
        if isinstance(m, _PASSTHROUGH_MODULES):
            return self.env[x_arg]
        if isinstance(m, nn.Conv2d):
            return self.conv(m, x_arg)
        if isinstance(m, nn.Linear):
            return self.linear(self.value(x_arg), m.weight.detach().numpy(),
                               None if m.bias is None else m.bias.detach().numpy(), x_arg)
        if isinstance(m, nn.BatchNorm2d):
            return self.batchnorm(m, x_arg)
        if isinstance(m, (nn.ReLU, nn.ReLU6)) or (isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0)):
            return self.relu(x_arg, "relu6" if isinstance(m, (nn.ReLU6, nn.Hardtanh)) else "relu")
        for cls, fn in _ACTIVATION_MODULES.items():
            if isinstance(m, cls):
                return self.activation(x_arg, fn, m)
        if isinstance(m, nn.MaxPool2d):
            return self.pool("max_pool2d", x_arg, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if isinstance(m, nn.AvgPool2d):
            if _pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override:
                raise self.unsupported("AvgPool2d with padding/ceil_mode/divisor_override")
            return self.pool("avg_pool2d", x_arg, m.kernel_size, m.stride, 0, 1, False)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.adaptive_avg_pool(x_arg, m.output_size)
        if isinstance(m, nn.Flatten):
            return self.flatten_value(self.value(x_arg), m.start_dim, m.end_dim)
        if isinstance(m, nn.LayerNorm):
            return self.layer_norm(x_arg, m.normalized_shape, m.weight, m.bias, m.eps)
        if isinstance(m, nn.Softmax):
            return self.softmax(x_arg, m.dim)
        if isinstance(m, nn.MultiheadAttention):
            return self.multihead_attention(fx_node, m)
        if isinstance(m, nn.Unfold):
            return self.unfold(x_arg, m.kernel_size, m.dilation, m.padding, m.stride)
        if isinstance(m, nn.Fold):
            return self.fold(x_arg, m.output_size, m.kernel_size, m.dilation, m.padding, m.stride)
        raise self.unsupported(type(m).__name__)

    def conv(self, m: nn.Conv2d, x_arg: Any) -> _Value:
        if m.padding_mode != "zeros":
            raise self.unsupported(f"Conv2d with padding_mode={m.padding_mode!r}")
        v = self.value(x_arg)
        x = self.layout(v, NHWC)
        n, h, w, c = self.shape(x)
        kh, kw = m.kernel_size
        dh, dw = m.dilation
        if isinstance(m.padding, str):
            if m.padding == "valid":
                pad = (0, 0, 0, 0)
            else:  # "same" (stride 1): torch puts the extra pixel at the end
                th, tw = dh * (kh - 1), dw * (kw - 1)
                pad = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        else:
            ph, pw = m.padding
            pad = (ph, pw, ph, pw)
        weight = m.weight.detach().numpy()
        bias = np.zeros(m.out_channels, np.float32) if m.bias is None else m.bias.detach().numpy()
        out_shape_t = _shape_of(self.fx_node)
        out_shape = (out_shape_t[0], out_shape_t[2], out_shape_t[3], out_shape_t[1])
        attrs_ = {"stride": tuple(m.stride), "padding": pad, "dilation": (dh, dw), "activation": "none",
                  "sparse_block": 0}
        base = self.fx_node.name
        if m.groups == 1:
            w_name = self.const(f"{base}_weight", weight.transpose(0, 2, 3, 1))  # OIHW -> OHWI
            op = "conv2d"
        elif m.groups == c and m.out_channels == c:
            w_name = self.const(f"{base}_weight", weight[:, 0].transpose(1, 2, 0))  # C1HW -> HWC
            op = "depthwise_conv2d"
        else:
            raise self.unsupported(f"Conv2d with groups={m.groups} (only 1 or depthwise with multiplier 1)")
        b_name = self.const(f"{base}_bias", bias)
        return _Value(self.emit(op, [x, w_name, b_name], out_shape, attrs_), NHWC)

    def linear(self, v: _Value, weight: np.ndarray, bias: np.ndarray | None, x_arg: Any = None) -> _Value:
        x = self.torch_layout(v)
        out_shape = (*self.shape(x)[:-1], weight.shape[0])
        base = self.fx_node.name
        w_name = self.const(f"{base}_weight", weight)
        b_name = self.const(f"{base}_bias", np.zeros(weight.shape[0], np.float32) if bias is None else bias)
        return _Value(self.emit("fully_connected", [x, w_name, b_name], out_shape,
                                {"activation": "none", "sparse_block": 0}), _identity(len(out_shape)))

    def batchnorm(self, m: nn.BatchNorm2d, x_arg: Any) -> _Value:
        node = self.fusable_producer(x_arg, ("conv2d", "depthwise_conv2d"))
        if node is None:
            raise self.unsupported("BatchNorm2d that does not directly follow a Conv2d (only folded batch norm is supported)")
        mean = m.running_mean.detach().numpy().astype(np.float64)
        var = m.running_var.detach().numpy().astype(np.float64)
        gamma = m.weight.detach().numpy() if m.affine else np.ones_like(mean)
        beta = m.bias.detach().numpy() if m.affine else np.zeros_like(mean)
        factor = gamma / np.sqrt(var + m.eps)
        w = self.graph.tensors[node.inputs[1]]
        b = self.graph.tensors[node.inputs[2]]
        if node.op == "conv2d":
            w.data = (w.data * factor[:, None, None, None]).astype(np.float32)
        else:
            w.data = (w.data * factor[None, None, :]).astype(np.float32)
        b.data = ((b.data - mean) * factor + beta).astype(np.float32)
        node.module_path = f"{node.module_path}+{self.path}"
        return self.env[x_arg]

    def relu(self, x_arg: Any, kind: str) -> _Value:
        node = self.fusable_producer(x_arg, ("conv2d", "depthwise_conv2d", "fully_connected", "add"))
        if node is not None:
            node.attrs["activation"] = kind
            node.module_path = f"{node.module_path}+{self.path}"
            return self.env[x_arg]
        return self.activation(x_arg, kind)

    def activation(self, x_arg: Any, function: str, module: nn.Module | None = None) -> _Value:
        if function == "gelu":
            approximate = getattr(module, "approximate", None) if module is not None else self.fx_node.kwargs.get("approximate", "none")
            if approximate == "tanh":
                function = "gelu_tanh"
        v = self.value(x_arg)
        return _Value(self.emit("activation", [v.name], self.shape(v.name), {"function": function}), v.perm)

    def pool(self, op: str, x_arg: Any, kernel, stride, padding, dilation, ceil_mode) -> _Value:
        if ceil_mode:
            raise self.unsupported(f"{op} with ceil_mode=True")
        x = self.layout(self.value(x_arg), NHWC)
        kernel = _pair(kernel)
        stride = _pair(stride if stride not in (None, ()) else kernel)
        ph, pw = _pair(padding)
        t = _shape_of(self.fx_node)
        attrs_ = {"kernel": kernel, "stride": stride}
        if op == "max_pool2d":
            attrs_.update(padding=(ph, pw, ph, pw), dilation=_pair(dilation))
        elif _pair(dilation) != (1, 1):
            raise self.unsupported("avg_pool2d with dilation")
        return _Value(self.emit(op, [x], (t[0], t[2], t[3], t[1]), attrs_), NHWC)

    def adaptive_avg_pool(self, x_arg: Any, output_size) -> _Value:
        if _pair(output_size) != (1, 1):
            raise self.unsupported(f"AdaptiveAvgPool2d with output size {output_size} (only 1 = global pooling)")
        x = self.layout(self.value(x_arg), NHWC)
        n, h, w, c = self.shape(x)
        return _Value(self.emit("mean", [x], (n, 1, 1, c), {"axes": (1, 2), "keepdims": True}), NHWC)

    def last_axis_layout(self, v: _Value, dim: int, what: str) -> tuple[str, tuple[int, ...]]:
        rank = len(v.perm)
        dim = dim % rank
        if v.perm[-1] == dim:
            return v.name, v.perm
        if dim == rank - 1:
            return self.torch_layout(v), _identity(rank)
        raise self.unsupported(f"{what} over dim {dim} that is not the last dim")

    def layer_norm(self, x_arg: Any, normalized_shape, weight, bias, eps) -> _Value:
        if len(tuple(normalized_shape)) != 1:
            raise self.unsupported(f"LayerNorm over {tuple(normalized_shape)} (only the last dim)")
        v = self.value(x_arg)
        x, perm = self.last_axis_layout(v, -1, "LayerNorm")
        c = self.shape(x)[-1]
        gamma = np.ones(c, np.float32) if weight is None else weight.detach().numpy()
        beta = np.zeros(c, np.float32) if bias is None else bias.detach().numpy()
        base = self.fx_node.name
        return _Value(self.emit("layer_norm", [x], self.shape(x), {
            "eps": float(eps), "gamma": np.asarray(gamma, np.float32).copy(), "beta": np.asarray(beta, np.float32).copy(),
        }, base=base), perm)

    def softmax(self, x_arg: Any, dim) -> _Value:
        if dim is None:
            raise self.unsupported("Softmax without dim")
        v = self.value(x_arg)
        x, perm = self.last_axis_layout(v, int(dim), "softmax")
        return _Value(self.emit("softmax", [x], self.shape(x)), perm)

    def matmul(self, a: _Value, b: _Value, alpha: float = 1.0) -> _Value:
        a_name, b_name = self.torch_layout(a), self.torch_layout(b)
        sa, sb = self.shape(a_name), self.shape(b_name)
        if len(sa) < 3 or len(sa) != len(sb) or sa[:-2] != sb[:-2] or sa[-1] != sb[-2]:
            raise self.unsupported(f"matmul of shapes {list(sa)} and {list(sb)} (needs equal batch dims, rank >= 3)")
        out_shape = (*sa[:-1], sb[-1])
        return _Value(self.emit("batch_matmul", [a_name, b_name], out_shape, {"alpha": float(alpha)}),
                      _identity(len(out_shape)))

    def transpose_value(self, v: _Value, p: tuple[int, ...]) -> _Value:
        """Lazy ``torch.permute(p)``: no node, only the layout bookkeeping changes."""
        return _Value(v.name, tuple(p.index(q) for q in v.perm))

    def flatten_value(self, v: _Value, start: int, end: int) -> _Value:
        """``torch.flatten(start, end)``; done in the current layout when those dims are adjacent and
        in order there (e.g. ``flatten(2)`` of an NHWC image needs no transpose)."""
        rank = len(v.perm)
        start, end = start % rank, end % rank
        pos = [v.perm.index(d) for d in range(start, end + 1)]
        if pos != list(range(pos[0], pos[0] + len(pos))):
            t_shape = list(self.shape(self.torch_layout(v)))
            return self.reshape_value(v, (*t_shape[:start], math.prod(t_shape[start:end + 1]), *t_shape[end + 1:]))
        shape = list(self.shape(v.name))
        ir_shape = (*shape[:pos[0]], math.prod(shape[pos[0]:pos[-1] + 1]), *shape[pos[-1] + 1:])
        renumber = lambda d: d if d < start else (start if d <= end else d - (end - start))
        perm = tuple(renumber(d) for i, d in enumerate(v.perm) if i not in pos[1:])
        if tuple(ir_shape) == tuple(shape):
            return _Value(v.name, perm)
        return _Value(self.emit("reshape", [v.name], ir_shape, {"shape": ir_shape}), perm)

    def reshape_value(self, v: _Value, shape: tuple[int, ...]) -> _Value:
        x = self.torch_layout(v)
        if tuple(shape) == self.shape(x):
            return _Value(x, _identity(len(shape)))
        return _Value(self.emit("reshape", [x], shape, {"shape": tuple(shape)}), _identity(len(shape)))

    def attention_core(self, q: _Value, k: _Value, v: _Value, scale: float) -> _Value:
        rank = len(k.perm)
        kt = self.transpose_value(k, (*range(rank - 2), rank - 1, rank - 2))
        scores = self.matmul(q, kt, alpha=scale)
        probs = _Value(self.emit("softmax", [scores.name], self.shape(scores.name), base=f"{self.fx_node.name}_attn"),
                       scores.perm)
        return self.matmul(probs, v)

    def multihead_attention(self, fx_node: torch.fx.Node, m: nn.MultiheadAttention) -> Any:
        args = list(fx_node.args) + [None] * 3
        q_arg, k_arg, v_arg = (args[0] if args[0] is not None else fx_node.kwargs.get("query"),
                               args[1] if args[1] is not None else fx_node.kwargs.get("key"),
                               args[2] if args[2] is not None else fx_node.kwargs.get("value"))
        if not m.batch_first:
            raise self.unsupported("MultiheadAttention with batch_first=False")
        if not (q_arg is k_arg is v_arg):
            raise self.unsupported("MultiheadAttention other than self-attention (query is key is value)")
        for key in ("key_padding_mask", "attn_mask"):
            if fx_node.kwargs.get(key) is not None:
                raise self.unsupported(f"MultiheadAttention with {key}")
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            raise self.unsupported("MultiheadAttention with kdim/vdim, bias_k or add_zero_attn")
        x = self.value(q_arg)
        n, t, e = _shape_of(q_arg)
        heads, d = m.num_heads, m.head_dim
        w = m.in_proj_weight.detach().numpy()
        b = m.in_proj_bias.detach().numpy() if m.in_proj_bias is not None else np.zeros(3 * e, np.float32)
        parts = []
        self.path_suffix = ".in_proj"  # the pruning utilities name the packed q/k/v matrix so
        for i in range(3):  # q, k, v
            proj = self.linear(x, w[i * e:(i + 1) * e], b[i * e:(i + 1) * e])
            split = self.reshape_value(proj, (n, t, heads, d))
            parts.append(self.transpose_value(split, (0, 2, 1, 3)))  # [N, heads, T, d]
        self.path_suffix = ""
        out = self.attention_core(parts[0], parts[1], parts[2], 1.0 / math.sqrt(d))
        merged = self.reshape_value(self.transpose_value(out, (0, 2, 1, 3)), (n, t, e))
        self.path_suffix = ".out_proj"
        result = self.linear(merged, m.out_proj.weight.detach().numpy(),
                             None if m.out_proj.bias is None else m.out_proj.bias.detach().numpy())
        self.path_suffix = ""
        return ("mha", result)

    def patches_check(self, kernel, dilation, padding, stride, what: str) -> tuple[int, int]:
        k = _pair(kernel)
        if _pair(dilation) != (1, 1) or _pair(padding) != (0, 0) or _pair(stride) != k:
            raise self.unsupported(f"{what} other than non-overlapping patches (stride == kernel, no padding/dilation)")
        return k

    def unfold(self, x_arg: Any, kernel, dilation, padding, stride) -> _Value:
        ph, pw = self.patches_check(kernel, dilation, padding, stride, "unfold")
        x = self.torch_layout(self.value(x_arg))
        n, c, h, w = self.shape(x)
        six = self.emit("reshape", [x], (n, c, h // ph, ph, w // pw, pw), {"shape": (n, c, h // ph, ph, w // pw, pw)})
        perm = (0, 1, 3, 5, 2, 4)
        t_shape = (n, c, ph, pw, h // ph, w // pw)
        tr = self.emit("transpose", [six], t_shape, {"perm": perm})
        out = (n, c * ph * pw, (h // ph) * (w // pw))
        return _Value(self.emit("reshape", [tr], out, {"shape": out}), (0, 1, 2))

    def fold(self, x_arg: Any, output_size, kernel, dilation, padding, stride) -> _Value:
        ph, pw = self.patches_check(kernel, dilation, padding, stride, "fold")
        x = self.torch_layout(self.value(x_arg))
        n, cpp, _ = self.shape(x)
        h, w = _pair(output_size)
        c = cpp // (ph * pw)
        six_shape = (n, c, ph, pw, h // ph, w // pw)
        six = self.emit("reshape", [x], six_shape, {"shape": six_shape})
        t_shape = (n, c, h // ph, ph, w // pw, pw)
        tr = self.emit("transpose", [six], t_shape, {"perm": (0, 1, 4, 2, 5, 3)})
        return _Value(self.emit("reshape", [tr], (n, c, h, w), {"shape": (n, c, h, w)}), (0, 1, 2, 3))

    # --- functions and methods -----------------------------------------------------------------

    def binary(self, kind: str, a_arg: Any, b_arg: Any) -> Any:
        a = self.env.get(a_arg) if isinstance(a_arg, torch.fx.Node) else a_arg
        b = self.env.get(b_arg) if isinstance(b_arg, torch.fx.Node) else b_arg
        if isinstance(a, _Value) and isinstance(b, _Value):
            if len(a.perm) != len(b.perm):
                raise self.unsupported(f"{kind} of tensors with different ranks {len(a.perm)} and {len(b.perm)}")
            b_name = self.layout(b, a.perm)
            sa, sb = self.shape(a.name), self.shape(b_name)
            out = tuple(max(p, q) for p, q in zip(sa, sb))
            for p, q in zip(sa, sb):
                if p != q and 1 not in (p, q):
                    raise self.unsupported(f"{kind} of shapes {list(sa)} and {list(sb)}")
            return _Value(self.emit(kind, [a.name, b_name], out, {"activation": "none"} if kind == "add" else {}), a.perm)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a + b if kind == "add" else a * b
        tensor, scalar = (a, b) if isinstance(a, _Value) else (b, a)
        if kind == "mul" and isinstance(scalar, (int, float)) and isinstance(tensor, _Value):
            return self.scale(tensor, float(scalar), a_arg if isinstance(a, _Value) else b_arg)
        raise self.unsupported(f"{kind} with a constant tensor or parameter operand")

    def scale(self, v: _Value, factor: float, fx_arg: Any) -> _Value:
        node = self.fusable_producer(fx_arg, ("batch_matmul",))
        if node is not None:
            node.attrs["alpha"] *= factor
            return v
        return _Value(self.emit("mul", [v.name], self.shape(v.name), {"scalar": factor}), v.perm)

    def has_tensor(self, x: Any) -> bool:
        if isinstance(x, torch.fx.Node):
            return isinstance(self.env.get(x), _Value) or (isinstance(self.env.get(x), tuple) and self.env[x][:1] in (("param",), ("mha",)))
        if isinstance(x, (list, tuple)):
            return any(self.has_tensor(e) for e in x)
        if isinstance(x, dict):
            return any(self.has_tensor(e) for e in x.values())
        return False

    def call_function(self, fx_node: torch.fx.Node) -> Any:
        f = fx_node.target
        args = fx_node.args
        if getattr(f, "__module__", None) in ("_operator", "operator") and not self.has_tensor(args) \
                and not self.has_tensor(fx_node.kwargs) and f is not operator.getitem:
            return f(*self.concrete(tuple(args)), **{k: self.concrete(v) for k, v in fx_node.kwargs.items()})
        if f in (operator.add, operator.iadd, torch.add):
            if fx_node.kwargs.get("alpha", 1) != 1:
                raise self.unsupported("add with alpha")
            return self.binary("add", args[0], args[1] if len(args) > 1 else fx_node.kwargs["other"])
        if f in (operator.mul, operator.imul, torch.mul):
            return self.binary("mul", args[0], args[1] if len(args) > 1 else fx_node.kwargs["other"])
        if f in (operator.truediv, torch.div) and not isinstance(args[1], torch.fx.Node) and not fx_node.kwargs.get("rounding_mode"):
            return self.binary("mul", args[0], 1.0 / float(args[1]))
        if f in (operator.matmul, torch.matmul, torch.bmm):
            return self.matmul(self.value(args[0]), self.value(args[1]))
        if f is operator.getitem:
            container = self.env.get(args[0])
            if isinstance(container, tuple) and container[:1] == ("mha",):
                if args[1] != 0:
                    raise self.unsupported("use of MultiheadAttention attention weights (output [1])")
                return container[1]
            if isinstance(container, (tuple, list, torch.Size)):
                return container[args[1]]
            raise self.unsupported("tensor indexing/slicing")
        if f is F.linear:
            weight = self.param(args[1] if len(args) > 1 else fx_node.kwargs["weight"])
            bias_arg = args[2] if len(args) > 2 else fx_node.kwargs.get("bias")
            return self.linear(self.value(args[0]), weight, None if bias_arg is None else self.param(bias_arg))
        if f in (torch.relu, F.relu):
            return self.relu(args[0], "relu")
        if f is F.relu6 or (f is F.hardtanh and tuple(args[1:3]) == (0.0, 6.0)):
            return self.relu(args[0], "relu6")
        if f in _ACTIVATION_FUNCTIONS:
            return self.activation(args[0], _ACTIVATION_FUNCTIONS[f])
        if f in (torch.flatten,):
            a = list(args) + [None, None]
            return self.flatten_value(self.value(args[0]), a[1] if a[1] is not None else fx_node.kwargs.get("start_dim", 0),
                                      a[2] if a[2] is not None else fx_node.kwargs.get("end_dim", -1))
        if f in (torch.reshape,):
            return self.reshape_value(self.value(args[0]), _shape_of(fx_node))
        if f in (torch.cat, torch.concat):
            return self.concat([self.value(a) for a in args[0]], args[1] if len(args) > 1 else fx_node.kwargs.get("dim", 0))
        if f in (F.softmax, torch.softmax):
            return self.softmax(args[0], args[1] if len(args) > 1 else fx_node.kwargs.get("dim"))
        if f in (torch.transpose,):
            return self.method_transpose(self.value(args[0]), args[1], args[2])
        if f in (torch.permute,):
            return self.transpose_value(self.value(args[0]), tuple(d % len(_shape_of(fx_node)) for d in args[1]))
        if f is F.scaled_dot_product_attention:
            for key in ("attn_mask", "is_causal", "dropout_p"):
                if fx_node.kwargs.get(key):
                    raise self.unsupported(f"scaled_dot_product_attention with {key}")
            q, k, v = (self.value(a) for a in args[:3])
            d = _shape_of(args[0])[-1]
            scale = fx_node.kwargs.get("scale") or 1.0 / math.sqrt(d)
            return self.attention_core(q, k, v, scale)
        if f is F.adaptive_avg_pool2d:
            return self.adaptive_avg_pool(args[0], args[1])
        if f is F.max_pool2d:
            a = list(args) + [None] * 6
            return self.pool("max_pool2d", args[0], a[1], a[2] or fx_node.kwargs.get("stride"),
                             a[3] or fx_node.kwargs.get("padding", 0), a[4] or 1, False)
        if f is F.avg_pool2d:
            a = list(args) + [None] * 6
            if (a[3] or fx_node.kwargs.get("padding", 0)) not in (0, (0, 0)):
                raise self.unsupported("avg_pool2d with padding")
            return self.pool("avg_pool2d", args[0], a[1], a[2] or fx_node.kwargs.get("stride"), 0, 1, False)
        if f is F.unfold:
            kw = fx_node.kwargs
            return self.unfold(args[0], args[1] if len(args) > 1 else kw["kernel_size"], kw.get("dilation", 1),
                               kw.get("padding", 0), kw.get("stride", 1))
        if f is F.fold:
            kw = fx_node.kwargs
            return self.fold(args[0], args[1] if len(args) > 1 else kw["output_size"],
                             args[2] if len(args) > 2 else kw["kernel_size"], kw.get("dilation", 1),
                             kw.get("padding", 0), kw.get("stride", 1))
        if f is torch.mean:
            return self.mean(self.value(args[0]), args[1] if len(args) > 1 else fx_node.kwargs.get("dim"),
                             fx_node.kwargs.get("keepdim", False))
        if f is getattr:
            return self.concrete_getattr(args[0], args[1])
        raise self.unsupported(_op_name(fx_node))

    def param(self, arg: Any) -> np.ndarray:
        """The value of a ``get_attr`` node (a parameter used by a functional call)."""
        v = self.env.get(arg) if isinstance(arg, torch.fx.Node) else None
        if not (isinstance(v, tuple) and v[:1] == ("param",)):
            raise self.unsupported(f"{_op_name(self.fx_node)} whose weight is not a module parameter")
        obj: Any = self.gm
        for part in str(v[1]).split("."):
            obj = getattr(obj, part)
        return obj.detach().numpy()

    def concrete_getattr(self, obj_arg: Any, attr: str) -> Any:
        if attr == "shape" and isinstance(obj_arg, torch.fx.Node):
            return torch.Size(_shape_of(obj_arg))
        raise self.unsupported(f"getattr {attr!r}")

    def method_transpose(self, v: _Value, d0: int, d1: int) -> _Value:
        rank = len(v.perm)
        p = list(range(rank))
        p[d0 % rank], p[d1 % rank] = p[d1 % rank], p[d0 % rank]
        return self.transpose_value(v, tuple(p))

    def concat(self, values: list[_Value], dim: int) -> _Value:
        perm = values[0].perm
        names = [self.layout(v, perm) for v in values]
        axis = perm.index(dim % len(perm))
        shape = list(self.shape(names[0]))
        shape[axis] = sum(self.shape(n)[axis] for n in names)
        return _Value(self.emit("concat", names, tuple(shape), {"axis": axis}), perm)

    def mean(self, v: _Value, dims, keepdim: bool) -> _Value:
        rank = len(v.perm)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        dims = tuple(sorted(d % rank for d in dims))
        axes = tuple(sorted(v.perm.index(d) for d in dims))
        shape = self.shape(v.name)
        if keepdim:
            out_shape = tuple(1 if i in axes else s for i, s in enumerate(shape))
            out_perm = v.perm
        else:
            out_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
            remaining = [p for p in v.perm if p not in dims]
            order = sorted(remaining)
            out_perm = tuple(order.index(p) for p in remaining)
        return _Value(self.emit("mean", [v.name], out_shape, {"axes": axes, "keepdims": bool(keepdim)}), out_perm)

    def call_method(self, fx_node: torch.fx.Node) -> Any:
        method = fx_node.target
        args = fx_node.args
        if method in ("contiguous", "clone"):
            return self.env[args[0]]
        if method == "size":
            shape = torch.Size(_shape_of(args[0]))
            return shape if len(args) < 2 else shape[args[1]]
        if method == "flatten":
            a = list(args) + [None, None]
            return self.flatten_value(self.value(args[0]), a[1] if a[1] is not None else fx_node.kwargs.get("start_dim", 0),
                                      a[2] if a[2] is not None else fx_node.kwargs.get("end_dim", -1))
        if method in ("view", "reshape"):
            return self.reshape_value(self.value(args[0]), _shape_of(fx_node))
        if method == "permute":
            dims = args[1:] if not isinstance(args[1], (tuple, list)) else args[1]
            rank = len(_shape_of(fx_node))
            return self.transpose_value(self.value(args[0]), tuple(int(d) % rank for d in dims))
        if method == "transpose":
            return self.method_transpose(self.value(args[0]), args[1], args[2])
        if method == "mean":
            return self.mean(self.value(args[0]), args[1] if len(args) > 1 else fx_node.kwargs.get("dim"),
                             fx_node.kwargs.get("keepdim", False) if len(args) < 3 else args[2])
        if method == "softmax":
            return self.softmax(args[0], args[1] if len(args) > 1 else fx_node.kwargs.get("dim"))
        if method in ("relu",):
            return self.relu(args[0], "relu")
        if method in ("sigmoid", "tanh"):
            return self.activation(args[0], method)
        if method in ("add", "mul"):
            return self.binary(method, args[0], args[1])
        if method == "div" and not isinstance(args[1], torch.fx.Node):
            return self.binary("mul", args[0], 1.0 / float(args[1]))
        raise self.unsupported(f"Tensor.{method}")


def import_torch(model: nn.Module, example_input: torch.Tensor, *, name: str | None = None) -> Graph:
    """Trace ``model`` (eval mode) with ``torch.fx`` and return the float IR graph.

    ``example_input`` fixes every shape (its batch size is the graph's batch size; use batch 1 for
    deployment). Raises :class:`UnsupportedOpError` for an op the engine cannot run.
    """
    if not isinstance(model, nn.Module):
        raise FrontendError(f"import_torch needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise FrontendError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    model = model.eval()
    if type(model).__module__.startswith("torch.nn.") and not list(model.children()):
        model = nn.Sequential(model)  # fx would trace a bare nn.Linear into F.linear on raw parameters
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds of errors for untraceable Python
        raise FrontendError(f"torch.fx could not trace {type(model).__name__}: {exc}") from exc
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(example_input.float())
        except Exception as exc:
            raise FrontendError(f"running {type(model).__name__} on the example input of shape "
                                f"{list(example_input.shape)} failed: {exc}") from exc
    return _Importer(gm, name or type(model).__name__).run()
