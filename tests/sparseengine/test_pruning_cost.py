"""Block pruning, the dense/sparse cost model, and the footprint numbers built on them."""

import numpy as np
import pytest
import torch
from torch import nn

from tuskml.backends.sparse_engine.cost_model import choose_formats, layer_cost, matrix_cost
from tuskml.backends.sparse_engine.footprint import compute_footprint
from tuskml.backends.sparse_engine.ir import Graph, Node, Tensor
from tuskml.backends.sparse_engine.memory_plan import plan_memory
from tuskml.backends.sparse_engine.pruning import PruningError, block_prune, block_sparsity, prunable_layers
from tuskml.backends.sparse_engine.sparse_format import BlockRunLengthMatrix


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(8, 16, 1)
        self.k3 = nn.Conv2d(16, 16, 3)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc1 = nn.Linear(16, 30)
        self.fc2 = nn.Linear(30, 10)


def test_prunable_layers_and_mixed_block_sizes():
    torch.manual_seed(0)
    net = Net()
    assert set(prunable_layers(net)) == {"pw", "attn.in_proj", "attn.out_proj", "fc1", "fc2"}  # not the 3x3
    res = block_prune(net, {"fc*": 0.5, "pw": 0.75, "attn.in_proj": 0.9}, {"fc1": 4, "fc2": 3, "pw": 8, "attn.*": 2})
    assert set(res) == {"fc1", "fc2", "pw", "attn.in_proj"}
    assert res["fc2"].block == 3 and res["pw"].block == 8
    for path, r in res.items():
        weight = dict(prunable_layers(net))[path]
        assert abs(block_sparsity(weight, r.block) - r.target_sparsity) <= 1.0 / r.blocks + 1e-9
        assert r.block_sparsity == pytest.approx(block_sparsity(weight, r.block))
    assert block_sparsity(net.attn.out_proj.weight, 2) == 0.0  # untouched
    # the blocks that survive are the largest-norm ones
    w = net.fc1.weight.detach().reshape(30, 4, 4).norm(dim=2)
    assert w[w > 0].min() >= 0  # non-trivial check below
    kept, dropped = w[w > 0], w[w == 0]
    assert kept.numel() == 60 and dropped.numel() == 60


def test_pruning_keeps_largest_blocks():
    lin = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0, 5.0, 5.0, 0.1, 0.1, 3.0, -3.0]]))
    block_prune(nn.Sequential(lin), 0.5, 2)
    assert lin.weight.tolist() == [[0.0, 0.0, 5.0, 5.0, 0.0, 0.0, 3.0, -3.0]]


def test_pruning_errors():
    net = Net()
    with pytest.raises(PruningError, match="matches no prunable layer"):
        block_prune(net, {"k3": 0.5})
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        block_prune(net, 1.5)
    with pytest.raises(PruningError, match="block size"):
        block_prune(net, 0.5, {"fc1": 0})
    with pytest.raises(PruningError, match="not prunable"):
        block_prune(net, 0.5, layers=["k3"])


def fc_graph(o: int, k: int, density: float, rows: int = 1) -> Graph:
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (o, k)).astype(np.int8)
    w = (w * np.repeat(rng.random((o, k // 4)) < density, 4, axis=1)).astype(np.int8)
    g = Graph(quantized=True)
    g.add_tensor(Tensor(name="x", shape=(rows, k), dtype="int8", scale=0.1))
    g.add_tensor(Tensor(name="w", shape=(o, k), dtype="int8", scale=np.ones(o), data=w))
    g.add_tensor(Tensor(name="b", shape=(o,), dtype="int32", data=np.zeros(o, np.int32)))
    g.add_tensor(Tensor(name="y", shape=(rows, o), dtype="int8", scale=0.1))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node(Node(name="fc", op="fully_connected", inputs=["x", "w", "b"], outputs=["y"], attrs={
        "requant_multiplier": np.full(o, 2**30, np.int32), "requant_shift": np.zeros(o, np.int32),
        "act_min": -128, "act_max": 127, "sparse_block": 0}))
    return g


def test_cost_model_picks_sparse_only_when_cheaper():
    dense_g, sparse_g = fc_graph(64, 256, 1.0), fc_graph(64, 256, 0.1)
    c_dense = layer_cost(dense_g, dense_g.nodes[0], block=4)
    c_sparse = layer_cost(sparse_g, sparse_g.nodes[0], block=4)
    assert c_dense.best == "dense" and c_sparse.best == "sparse"
    assert c_sparse.sparse < 0.3 * c_sparse.dense
    choose_formats(dense_g)
    choose_formats(sparse_g)
    assert dense_g.nodes[0].attrs["sparse_block"] == 0 and sparse_g.nodes[0].attrs["sparse_block"] == 4
    # non-multiple-of-4 blocks cannot use the SMLAD loop: more expensive per stored MAC
    assert matrix_cost(1, 64, 256, nnzb=100, block=3) / 300 > matrix_cost(1, 64, 256, nnzb=75, block=4) / 300


def test_footprint_counts_encoded_weights_and_explains_overflow():
    g = fc_graph(64, 256, 0.25, rows=4)
    choose_formats(g)
    plan = plan_memory(g)
    fp_ = compute_footprint(g, plan)
    layer = fp_.layers[0]
    assert layer.sparse and layer.weight_bytes == BlockRunLengthMatrix.encode(g.tensors["w"].data, 4).nbytes
    assert layer.dense_weight_bytes == 64 * 256 and layer.bias_bytes == 256
    assert fp_.flash_bytes > layer.weight_bytes and fp_.sram_bytes == plan.arena_bytes + fp_.stack_bytes
    assert fp_.check(flash_limit=10**6, sram_limit=10**6) is None
    msg = fp_.check(flash_limit=1000, sram_limit=100, plan=plan)
    assert f"by {fp_.flash_bytes - 1000} B" in msg and "fc" in msg
    assert f"by {fp_.sram_bytes - 100} B" in msg and "x (1024 B)" in msg
