"""Whole small models (CNN, MobileViT-like hybrid), dense and block-sparse, generated as C, built with
the host cc and compared bit for bit with the reference executor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _models import quantized_models, sparse_nodes

import tuskml
from tuskml.backends.c.codegen import generate_c_project
from tuskml.backends.c.host import build_project, run_project
from tuskml.backends.sparse_engine.memory_plan import plan_memory


@pytest.fixture(scope="session")
def models():
    return quantized_models()


MODEL_NAMES = ["cnn-dense", "cnn-sparse", "mobilevit-dense", "mobilevit-sparse"]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("use_dsp", [False, True], ids=["portable", "dsp"])
def test_model_bit_exact_on_host(models, tmp_path, name, use_dsp):
    graph, xq, ref = models[name]
    plan = plan_memory(graph)
    project = generate_c_project(graph, plan, tmp_path, use_dsp=use_dsp, test_inputs=xq[:1],
                                 expected_outputs=ref[:1])
    exe = build_project(project.directory)
    got = run_project(exe, xq, input_bytes=project.input_bytes, output_bytes=project.output_bytes)
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)
    # the compiled-in self test (what the firmware main runs) agrees too
    import subprocess

    assert subprocess.run([str(exe)], capture_output=True).returncode == 0
    kernels = {layer.kernel for layer in project.layers}
    if name.endswith("sparse"):
        assert {layer.node for layer in project.layers if layer.sparse} == set(sparse_nodes(graph))
        assert "tk_fc_s8_brl" in kernels and "tk_conv2d_s8_brl" in kernels
    if use_dsp:
        assert "tk_fc_s8_dsp" in kernels or "tk_fc_s8_brl" in kernels
        assert "tk_fc_s8_portable" not in kernels
    assert project.arena_bytes >= plan.arena_bytes
    manifest = json.loads((tmp_path / "project.json").read_text())
    assert [layer["function"] for layer in manifest["layers"]] == [f"tk_layer_{i}" for i in range(len(graph.nodes))]


def test_self_test_fails_on_wrong_expected_outputs(models, tmp_path):
    """The firmware/host self test really compares: a flipped expected byte makes it exit 1."""
    import subprocess

    graph, xq, ref = models["cnn-dense"]
    wrong = ref[:1].copy()
    wrong.reshape(-1)[3] ^= 1
    project = generate_c_project(graph, plan_memory(graph), tmp_path, use_dsp=True, test_inputs=xq[:1],
                                 expected_outputs=wrong)
    proc = subprocess.run([str(build_project(project.directory))], capture_output=True, text=True)
    assert proc.returncode == 1 and "1 mismatching" in proc.stdout


def test_engine_backend_c_matches_reference(models):
    graph, xq, ref = models["mobilevit-sparse"]
    backend = tuskml.create("engine_backend", "c", use_dsp=True)
    result = backend.run(graph, xq)
    assert result.instructions is None
    np.testing.assert_array_equal(result.outputs, tuskml.create("engine_backend", "reference").run(graph, xq).outputs)


def test_naive_layout_without_plan(models, tmp_path):
    graph, xq, ref = models["cnn-dense"]
    project = generate_c_project(graph, None, tmp_path, use_dsp=False)
    assert project.arena_bytes >= sum(t.size for t in graph.activations())
    got = run_project(build_project(project.directory), xq, input_bytes=project.input_bytes,
                      output_bytes=project.output_bytes)
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)
