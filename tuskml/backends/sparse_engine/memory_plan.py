"""Static SRAM plan: tensor lifetimes over the node order, then first-fit placement in one arena.

Every activation tensor (graph inputs and outputs included) gets a byte offset in a single arena.
Two tensors may overlap in memory only if their lifetimes do not overlap, where a lifetime is the
inclusive interval of node indices ``[producer, last consumer]`` (graph inputs start at 0, graph
outputs live to ``len(nodes)``, i.e. past the last node, so ``invoke`` can copy them out).

Buffers shared on purpose (``MemoryPlan.inplace[out] == in``), all written element by element so
that reading and writing the same address is safe:

* ``reshape``: the output is the input's bytes reinterpreted (always aliased; a backend skips the
  copy when the offsets are equal);
* element-wise ops (``add``, ``mul``, ``requantize``, ``lut``): the output takes the buffer of an
  input with the same shape whose value is not used by any later node;
* ``depthwise_conv2d`` (if ``inplace_depthwise``): same condition. The kernel must then work channel
  by channel group: copy input channels ``c..c+3`` (``4*H*W`` bytes) into the node's scratch buffer
  (``MemoryPlan.scratch[node.name] = (offset, nbytes)``), then write those output channels. Output
  position ``(oh, ow, c)`` only overwrites input positions of channel ``c``, which are in scratch.

Placement is "first fit, decreasing size": buffers sorted by size (largest first), each put at the
lowest aligned offset that does not collide with an already placed buffer whose lifetime overlaps.
"""

from __future__ import annotations

import attrs

from tuskml.backends.sparse_engine.ir import Graph
from tuskml.core.errors import TuskmlError


class MemoryPlanError(TuskmlError):
    """The graph cannot be planned (e.g. an unknown tensor)."""


ELEMENTWISE_INPLACE_OPS = frozenset({"add", "mul", "requantize", "lut"})


@attrs.frozen(kw_only=True)
class MemoryPlan:
    """Where every activation lives in the arena, and why the arena is as big as it is.

    ``offsets``: tensor name -> byte offset. ``arena_bytes``: arena size (including scratch).
    ``naive_bytes``: sum of all activation sizes (what a no-reuse allocator needs).
    ``peak_live``: tensors live at the step with the most live bytes (``peak_step`` is that node's
    name, ``peak_live_bytes`` their total). ``lifetimes``: tensor -> (first, last) node index.
    ``inplace``: output tensor -> input tensor whose buffer it reuses. ``scratch``: node name ->
    (offset, nbytes) of a temporary buffer the node's kernel may use while it runs.
    """

    offsets: dict[str, int]
    sizes: dict[str, int]
    arena_bytes: int
    naive_bytes: int
    peak_live: list[str]
    peak_live_bytes: int
    peak_step: str
    lifetimes: dict[str, tuple[int, int]]
    inplace: dict[str, str]
    scratch: dict[str, tuple[int, int]]
    alignment: int

    def overlapping_live_pairs(self) -> list[tuple[str, str]]:
        """Pairs of tensors that are live at the same time AND overlap in memory without being an
        intended in-place pair. Always empty for a correct plan (tests check it)."""
        names = list(self.offsets)
        groups = _alias_groups(names, self.inplace)
        bad = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if groups[a] == groups[b]:
                    continue
                la, lb = self.lifetimes[a], self.lifetimes[b]
                if la[1] < lb[0] or lb[1] < la[0]:
                    continue
                oa, ob = self.offsets[a], self.offsets[b]
                if oa < ob + self.sizes[b] and ob < oa + self.sizes[a] and self.sizes[a] and self.sizes[b]:
                    bad.append((a, b))
        return bad

    def summary(self) -> str:
        return (f"arena {self.arena_bytes} B (naive sum {self.naive_bytes} B), peak {self.peak_live_bytes} B at "
                f"{self.peak_step}: {', '.join(self.peak_live)}")


def _alias_groups(names: list[str], inplace: dict[str, str]) -> dict[str, str]:
    root: dict[str, str] = {n: n for n in names}

    def find(n: str) -> str:
        while root[n] != n:
            root[n] = root[root[n]]
            n = root[n]
        return n

    for out, inp in inplace.items():
        root[find(out)] = find(inp)
    return {n: find(n) for n in names}


def _align(x: int, alignment: int) -> int:
    return -(-x // alignment) * alignment


def tensor_lifetimes(graph: Graph) -> dict[str, tuple[int, int]]:
    """Inclusive (first, last) node index during which each activation must hold its value."""
    n = len(graph.nodes)
    life: dict[str, list[int]] = {name: [0, 0] for name in graph.inputs}
    for i, node in enumerate(graph.nodes):
        for name in node.outputs:
            life[name] = [i, i]
        for name in node.inputs:
            if graph.tensors[name].is_constant:
                continue
            if name not in life:
                raise MemoryPlanError(f"node {node.name!r} reads {name!r} before it is written")
            life[name][1] = max(life[name][1], i)
    for name in graph.outputs:
        life[name][1] = n
    return {k: (v[0], v[1]) for k, v in life.items()}


def plan_memory(graph: Graph, *, alignment: int = 8, inplace_elementwise: bool = True,
                inplace_depthwise: bool = True) -> MemoryPlan:
    """Lifetimes, in-place sharing and first-fit placement for the activations of ``graph``."""
    if alignment < 1 or alignment & (alignment - 1):
        raise MemoryPlanError(f"alignment must be a power of two, got {alignment}")
    life = tensor_lifetimes(graph)
    sizes = {name: graph.tensors[name].nbytes if graph.quantized else graph.tensors[name].size
             for name in life}  # float graphs are planned as if int8 (what they will become)

    # in-place decisions, in node order; a group's lifetime is the union of its members'
    inplace: dict[str, str] = {}
    group_of: dict[str, str] = {name: name for name in life}
    group_life: dict[str, list[int]] = {name: list(span) for name, span in life.items()}
    group_size: dict[str, int] = dict(sizes)
    scratch_need: dict[str, int] = {}

    def join(out: str, inp: str) -> None:
        g = group_of[inp]
        inplace[out] = inp
        group_of[out] = g
        group_life[g][0] = min(group_life[g][0], life[out][0])
        group_life[g][1] = max(group_life[g][1], life[out][1])
        group_size[g] = max(group_size[g], sizes[out])
        del group_life[out], group_size[out]

    for i, node in enumerate(graph.nodes):
        out = node.outputs[0]
        acts = [n for n in node.inputs if not graph.tensors[n].is_constant]
        if node.op == "reshape":
            join(out, acts[0])
            continue
        candidates: list[str] = []
        if node.op in ELEMENTWISE_INPLACE_OPS and inplace_elementwise:
            candidates = [n for n in acts if graph.tensors[n].shape == graph.tensors[out].shape]
        elif node.op == "depthwise_conv2d" and inplace_depthwise:
            x = graph.tensors[acts[0]]
            if sizes[out] <= sizes[acts[0]] and x.shape[-1] == graph.tensors[out].shape[-1]:
                candidates = [acts[0]]
        for cand in candidates:
            g = group_of[cand]
            if group_life[g][1] == i and cand not in graph.outputs and acts.count(cand) == 1:
                join(out, cand)
                if node.op == "depthwise_conv2d":
                    _, h, w, c = graph.tensors[cand].shape
                    # the C kernel works 4 channels at a time (tk_depthwise_inplace_scratch_bytes)
                    scratch_need[node.name] = (4 if c >= 4 else 1) * h * w
                break

    # scratch buffers are tiny groups alive only while their node runs
    node_index = {node.name: i for i, node in enumerate(graph.nodes)}
    for node_name, nbytes in scratch_need.items():
        key = f"{node_name}:scratch"
        group_life[key] = [node_index[node_name]] * 2
        group_size[key] = nbytes

    # first fit, decreasing size
    order = sorted(group_life, key=lambda g: (-group_size[g], group_life[g][0], g))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    group_offset: dict[str, int] = {}
    for g in order:
        first, last = group_life[g]
        size = group_size[g]
        conflicts = sorted((o, e) for o, e, f, end in placed if not (end < first or last < f))
        offset = 0
        for o, e in conflicts:
            if offset + size <= o:
                break
            offset = max(offset, _align(e, alignment))
        group_offset[g] = offset
        placed.append((offset, offset + size, first, last))
    arena = max((e for _, e, _, _ in placed), default=0)

    offsets = {name: group_offset[group_of[name]] for name in life}
    scratch = {node_name: (group_offset[f"{node_name}:scratch"], nbytes) for node_name, nbytes in scratch_need.items()}

    # peak: the step whose live groups take the most bytes
    peak_bytes, peak_step, peak_groups = -1, 0, []
    for step in range(len(graph.nodes) + 1):
        live = [g for g, (f, end) in group_life.items() if f <= step <= end]
        total = sum(group_size[g] for g in live)
        if total > peak_bytes:
            peak_bytes, peak_step, peak_groups = total, step, live
    members = [name for name in life if group_of[name] in peak_groups and life[name][0] <= peak_step <= life[name][1]]
    members += [g for g in peak_groups if g.endswith(":scratch")]
    step_name = graph.nodes[peak_step].name if peak_step < len(graph.nodes) else "<outputs>"
    return MemoryPlan(offsets=offsets, sizes=sizes, arena_bytes=int(arena), naive_bytes=int(sum(sizes.values())),
                      peak_live=members, peak_live_bytes=int(peak_bytes), peak_step=step_name, lifetimes=life,
                      inplace=inplace, scratch=scratch, alignment=alignment)
