"""Small quantised models shared by the C end-to-end tests (built once per session)."""

from __future__ import annotations

import copy

import numpy as np


def quantized_models() -> dict[str, tuple]:
    """name -> (integer graph, int8 test inputs [4, ...] in graph layout, reference outputs)."""
    import torch

    from tuskml.backends.sparse_engine import reference
    from tuskml.backends.sparse_engine.example_models import tiny_cnn, tiny_mobilevit
    from tuskml.backends.sparse_engine.pruning import block_prune
    from tuskml.backends.sparse_engine.quantize import quantize_model

    torch.manual_seed(0)
    calib = torch.randn(16, 3, 32, 32)
    test = torch.randn(4, 3, 32, 32)
    out = {}
    for name, factory in (("cnn", tiny_cnn), ("mobilevit", tiny_mobilevit)):
        model = factory().eval()
        for variant in ("dense", "sparse"):
            m = copy.deepcopy(model)
            blocks = {}
            if variant == "sparse":
                # mixed block sizes, including ones that are not a multiple of 4 (scalar BRL path)
                sizes = [4, 8, 1, 3, 16, 2]
                from tuskml.backends.sparse_engine.pruning import prunable_layers

                for i, path in enumerate(sorted(prunable_layers(m))):
                    blocks[path] = sizes[i % len(sizes)]
                block_prune(m, 0.7, blocks)
            graph = quantize_model(m, calib)
            if variant == "sparse":
                _mark_sparse(graph, blocks)
            xq = reference.quantize_input(graph, test)
            ref = reference.run(graph, xq).outputs[0]
            out[f"{name}-{variant}"] = (graph, xq, ref)
    return out


def _mark_sparse(graph, blocks: dict[str, int]) -> None:
    """Set ``sparse_block`` on the nodes whose module was pruned (plus the first 3x3 conv, to cover
    the block-sparse im2col path), as the cost model would when sparse is cheaper."""
    first_conv = True
    for node in graph.nodes:
        if node.op not in ("conv2d", "fully_connected"):
            continue
        paths = [p for p in node.module_path.split("+") if p in blocks]
        for p in paths:
            node.attrs["sparse_block"] = blocks[p]
        if paths and node.op == "fully_connected":
            continue
        w = graph.tensors[node.inputs[1]]
        if not paths and node.op == "conv2d" and first_conv and w.shape[1] > 1:
            node.attrs["sparse_block"] = 4
            first_conv = False
    assert any(n.attrs.get("sparse_block") for n in graph.nodes)


def sparse_nodes(graph) -> list[str]:
    return [n.name for n in graph.nodes if n.attrs.get("sparse_block")]


def as_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(x.shape[0], -1)
