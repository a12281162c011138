"""Flash and SRAM bytes of an integer graph, per layer, from the same numbers deploy and search use.

Flash per layer = weights as stored (BRL ``nbytes`` when ``sparse_block > 0``, else dense int8)
+ bias (int32) + requantisation params (int32 multiplier + int32 shift per channel, or 8 bytes per
tensor) + tables (LUT 256 B, softmax exp table 1 KiB, layer-norm params 12 B/channel)
+ an estimate of the layer's code. SRAM = memory-plan arena (scratch included) + a stack allowance.

The code sizes are estimates (``CODE_BYTES_*``, taken from the function sizes of a linked build); the
C backend's linker map gives the exact figure.
"""

from __future__ import annotations

import attrs
import numpy as np

from tuskml.backends.sparse_engine.ir import Graph, Node
from tuskml.backends.sparse_engine.memory_plan import MemoryPlan
from tuskml.backends.sparse_engine.sparse_format import BlockRunLengthMatrix

#: Estimated bytes of the generated per-layer function (argument setup + call); measured ~55 B on
#: average (64 layer functions, 3506 B) in a linked stm32f746 build of a search-space model.
CODE_BYTES_PER_LAYER = 64
#: Bytes of the kernel code each op pulls in (compiled once, unused kernels dropped by the linker's
#: --gc-sections). Ops that share a kernel name the same group, so it is counted once. Sizes are the
#: function sizes in a linked stm32f746 build (zig cc -O2, DSP path) of a SparseNAS search-space model:
#: the BRL kernel (one-row and channel-major walks, the hand-scheduled B=16 block) alone is ~14 KB.
KERNEL_GROUP = {"conv2d": "matrix_dsp", "fully_connected": "matrix_dsp", "conv2d_sparse": "brl",
                "fully_connected_sparse": "brl", "depthwise_conv2d": "depthwise"}
CODE_BYTES_PER_KERNEL = {
    "matrix_dsp": 2348 + 482 + 110,  # tk_fc_s8_dsp, conv_by_patches (k x k convs), tk_dot_widened_s8
    "brl": 13940,  # tk_fc_s8_brl
    "depthwise": 1072 + 664 + 590 + 214,  # dw_channel, dw_group4, in-place and plain entry points
    "add": 820, "mul": 820, "requantize": 300, "lut": 178, "avg_pool2d": 400, "max_pool2d": 300,
    "mean": 1156, "layer_norm": 988, "softmax": 866, "batch_matmul": 956, "concat": 388,
    "transpose": 272, "reshape": 0,
}
#: Runtime outside the layers: startup, tk_invoke, self test, memcpy/memset, the shared requant and
#: widening helpers (measured ~2.2 KB in the same build, rounded up).
CODE_BYTES_RUNTIME = 2600
#: SRAM for the call stack of invoke + kernels (no recursion, small frames).
STACK_BYTES = 2048


@attrs.frozen(kw_only=True)
class LayerFootprint:
    """Bytes one node puts in flash, and the bytes of its output activation in SRAM."""

    node: str
    op: str
    module_path: str
    sparse: bool
    block: int
    weight_bytes: int  # as stored (encoded if sparse)
    dense_weight_bytes: int  # as if stored dense int8
    bias_bytes: int
    param_bytes: int  # multipliers, shifts, tables
    code_bytes: int
    output_bytes: int

    @property
    def flash_bytes(self) -> int:
        return self.weight_bytes + self.bias_bytes + self.param_bytes + self.code_bytes


@attrs.frozen(kw_only=True)
class Footprint:
    """Whole-model flash and SRAM, with the per-layer breakdown."""

    flash_bytes: int
    sram_bytes: int
    arena_bytes: int
    stack_bytes: int
    code_bytes: int
    layers: list[LayerFootprint]

    def largest_flash_layers(self, n: int = 3) -> list[LayerFootprint]:
        return sorted(self.layers, key=lambda layer: -layer.flash_bytes)[:n]

    def check(self, *, flash_limit: int, sram_limit: int, plan: MemoryPlan | None = None) -> str | None:
        """None if it fits; else a message naming the largest layers/tensors and the bytes over."""
        problems = []
        if self.flash_bytes > flash_limit:
            top = ", ".join(f"{lay.module_path or lay.node} ({lay.op}, {lay.flash_bytes} B)" for lay in self.largest_flash_layers())
            problems.append(f"flash {self.flash_bytes} B exceeds {flash_limit} B by {self.flash_bytes - flash_limit} B; "
                            f"largest layers: {top}")
        if self.sram_bytes > sram_limit:
            detail = ""
            if plan is not None:
                live = sorted(plan.peak_live, key=lambda t: -plan.sizes.get(t, 0))[:4]
                detail = f"; live at the peak ({plan.peak_step}): " + ", ".join(f"{t} ({plan.sizes.get(t, 0)} B)" for t in live)
            problems.append(f"SRAM {self.sram_bytes} B (arena {self.arena_bytes} B + stack {self.stack_bytes} B) exceeds "
                            f"{sram_limit} B by {self.sram_bytes - sram_limit} B{detail}")
        return "; ".join(problems) or None


def _param_bytes(graph: Graph, node: Node) -> int:
    a = node.attrs
    total = 0
    if "requant_multiplier" in a:
        total += 8 * int(np.size(a["requant_multiplier"]))
    for key in ("multiplier", "output_multiplier", "input1_multiplier", "input2_multiplier"):
        if key in a:
            total += 8
    if "multipliers" in a:
        total += 8 * len(a["multipliers"])
    if "table" in a:
        total += 256
    if "exp_table" in a:
        total += 4 * 256
    if "beta_q" in a:
        total += 4 * int(np.size(a["beta_q"]))
    return total


def layer_footprint(graph: Graph, node: Node) -> LayerFootprint:
    w = graph.weight_of(node)
    block = int(node.attrs.get("sparse_block", 0) or 0)
    weight_bytes = dense_bytes = bias_bytes = 0
    if w is not None:
        dense_bytes = w.size
        weight_bytes = dense_bytes
        if block and w.data is not None:
            weight_bytes = BlockRunLengthMatrix.encode(
                np.asarray(w.data).reshape(w.shape[0], -1).astype(np.int8), block).nbytes
        bias_bytes = 4 * graph.tensors[node.inputs[2]].size
    return LayerFootprint(node=node.name, op=node.op, module_path=node.module_path, sparse=bool(block), block=block,
                          weight_bytes=weight_bytes, dense_weight_bytes=dense_bytes, bias_bytes=bias_bytes,
                          param_bytes=_param_bytes(graph, node),
                          code_bytes=CODE_BYTES_PER_LAYER if node.op != "reshape" else 0,
                          output_bytes=graph.tensors[node.outputs[0]].size)


def compute_footprint(graph: Graph, plan: MemoryPlan, *, stack_bytes: int = STACK_BYTES) -> Footprint:
    """Flash/SRAM of the integer ``graph`` laid out by ``plan``."""
    layers = [layer_footprint(graph, node) for node in graph.nodes]
    kernels = {KERNEL_GROUP.get(key, key) for key in (lay.op + ("_sparse" if lay.sparse else "") for lay in layers)}
    code = CODE_BYTES_RUNTIME + sum(CODE_BYTES_PER_KERNEL.get(k, 400) for k in kernels)
    flash = code + sum(lay.flash_bytes for lay in layers)
    return Footprint(flash_bytes=int(flash), sram_bytes=int(plan.arena_bytes + stack_bytes), arena_bytes=plan.arena_bytes,
                     stack_bytes=stack_bytes, code_bytes=int(code + sum(lay.code_bytes for lay in layers)), layers=layers)
