"""Whole small models (CNN, MobileViT-like hybrid) through prepare(): accuracy close to float,
sparse layers chosen after pruning, registered backends agree."""

import numpy as np
import pytest
import torch

import tuskml
from tuskml.backends.sparse_engine.backend_api import BackendRun, EngineBackend
from tuskml.backends.sparse_engine.example_models import tiny_cnn, tiny_mobilevit
from tuskml.backends.sparse_engine.pipeline import PrepareError, prepare
from tuskml.backends.sparse_engine.reference import ExecutionError, quantize_input, run
from tuskml.testing import check_component


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 3, 32, 32, generator=g), torch.randn(16, 3, 32, 32, generator=g)


@pytest.mark.parametrize("factory", [tiny_cnn, tiny_mobilevit])
@pytest.mark.parametrize("sparsity", [None, 0.7])
def test_prepare_whole_model_accuracy(factory, sparsity, data):
    calib, test = data
    model = factory()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = prepare(model, calib, sparsity=sparsity, block=4, test_inputs=test)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), "prepare must not modify the caller's model"
    acc = d.accuracy
    assert acc.relative_error < 0.02, acc
    assert acc.max_abs_error < 0.05 * acc.output_range + 1e-3, acc
    assert acc.top1_agreement >= 0.9, acc
    formats = [r["format"] for r in d.layer_table() if r["op"] in ("conv2d", "fully_connected")]
    if sparsity:
        assert d.pruning and "sparse" in formats
        sparse_rows = [r for r in d.layer_table() if r["format"] == "sparse"]
        assert all(r["weight_bytes"] < r["dense_weight_bytes"] for r in sparse_rows)
    else:
        assert set(formats) == {"dense"}
    assert d.plan.overlapping_live_pairs() == []
    assert d.footprint.sram_bytes > d.plan.arena_bytes >= d.plan.peak_live_bytes
    assert d.graph.quantized and len(d.layer_table()) == len(d.graph.nodes)


def test_sparse_and_dense_formats_give_identical_integers(data):
    """sparse_block changes how weights are stored, never the integer result."""
    calib, test = data
    sparse = prepare(tiny_mobilevit(), calib, sparsity=0.6, force_format="sparse")
    dense = prepare(tiny_mobilevit(), calib, sparsity=0.6, force_format="dense")
    x = quantize_input(sparse.graph, test[:4])
    assert any(n.attrs.get("sparse_block") for n in sparse.graph.nodes)
    assert np.array_equal(run(sparse.graph, x).output, run(dense.graph, x).output)
    # weights shrink; the whole image need not (the block-sparse kernel's own code is ~14 KB)
    def stored(d):
        return sum(layer.weight_bytes for layer in d.footprint.layers)

    assert stored(sparse) < stored(dense)


def test_prepare_errors(data):
    calib, _ = data
    with pytest.raises(PrepareError, match="non-empty"):
        prepare(tiny_cnn(), torch.zeros(0, 3, 32, 32))
    with pytest.raises(PrepareError, match="force_format"):
        prepare(tiny_cnn(), calib, force_format="both")
    with pytest.raises(PrepareError, match="nn.Module"):
        prepare("tiny_cnn", calib)


@pytest.mark.parametrize("name", ["reference", "tinygrad"])
def test_backends_are_registered_and_conform(name, tmp_path):
    check_component("engine_backends", name, tmp_path)
    backend = tuskml.create("engine_backend", name)
    assert isinstance(backend, EngineBackend) and backend.name == name


def test_reference_backend_run(data):
    calib, test = data
    d = prepare(tiny_cnn(), calib)
    backend = tuskml.create("engine_backend", "reference")
    x = quantize_input(d.graph, test[:3])
    result = backend.run(d.graph, x)
    assert isinstance(result, BackendRun) and result.instructions is None
    assert result.outputs.dtype == np.int8 and result.outputs.shape == (3, 10)
    assert np.array_equal(result.outputs, run(d.graph, x).output)
    with pytest.raises(ExecutionError, match="unknown keyword"):
        backend.run(d.graph, x, use_dsp=True)
    with pytest.raises(ExecutionError, match="int8"):
        backend.run(d.graph, x.astype(np.int16))
    with pytest.raises(ExecutionError, match="NHWC"):
        backend.run(d.graph, x.transpose(0, 3, 1, 2).copy())
    everything = run(d.graph, x, keep_intermediates=True).tensors
    assert set(everything) >= {t.name for t in d.graph.activations()}
