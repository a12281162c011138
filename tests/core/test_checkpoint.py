from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import tuskml
from tests.core.toy_plugin import ToyDecoderConfig, ToyPlugin


@pytest.fixture
def toy(fresh_plugins):
    fresh_plugins.register_plugin(ToyPlugin(), "toy")
    return fresh_plugins


def test_save_load_rebuilds_without_being_told(toy, tmp_path):
    dec = tuskml.create("decoders", "toy-dit", width=5, depth=3, scale=2.0)
    path = tuskml.save(dec, tmp_path / "dec.safetensors", metadata={"run": "abc"})
    meta = tuskml.read_metadata(path)
    assert meta["tuskml.kind"] == "decoders" and meta["tuskml.name"] == "toy-dit"
    assert meta["tuskml.version"] == tuskml.__version__ and meta["tuskml.source"] == "toy"
    assert json.loads(meta["tuskml.config"])["width"] == 5 and meta["run"] == "abc"
    back = tuskml.load(path)
    assert back.tuskml_config == ToyDecoderConfig(width=5, depth=3, scale=2.0)
    x = torch.randn(3, 5)
    assert torch.equal(dec(x), back(x))


def test_conformance_helper_on_toy(toy, tmp_path):
    from tuskml.testing import check_component

    check_component("decoders", "toy-dit", tmp_path)
    check_component("hardware_targets", "toy-board")


def test_module_of_unknown_identity(tmp_path):
    with pytest.raises(tuskml.CheckpointError, match="pass config="):
        tuskml.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_truncated_file(toy, tmp_path):
    path = tuskml.save(tuskml.create("decoders", "toy-dit"), tmp_path / "dec.safetensors")
    data = path.read_bytes()
    for cut in (len(data) - 7, 40, 3):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(tuskml.CheckpointError, match=f"cut{cut}.safetensors .* truncated or corrupt"):
            tuskml.load(bad)


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(tuskml.CheckpointError, match="foreign.safetensors is a safetensors file but not a tuskml checkpoint"):
        tuskml.load(path)


def test_not_safetensors_at_all(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("hello, I am text")
    with pytest.raises(tuskml.CheckpointError, match="notes.safetensors"):
        tuskml.load(path)
    with pytest.raises(tuskml.CheckpointError, match="does not exist"):
        tuskml.load(tmp_path / "nope.safetensors")


def test_component_no_plugin_provides(toy, tmp_path):
    path = tuskml.save(tuskml.create("decoders", "toy-dit"), tmp_path / "dec.safetensors")
    toy.unregister_plugin("toy")
    with pytest.raises(tuskml.CheckpointError) as err:
        tuskml.load(path)
    msg = str(err.value)
    assert "dec.safetensors holds decoder 'toy-dit'" in msg and "written by plugin 'toy'" in msg
    assert "no installed plugin provides" in msg


def test_weights_that_do_not_match_the_config(toy, tmp_path):
    path = tuskml.save(tuskml.create("decoders", "toy-dit", depth=2), tmp_path / "dec.safetensors")
    meta = tuskml.read_metadata(path)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    tensors.pop("layers.1.bias")
    forged = dict(meta)
    save_file(tensors, str(tmp_path / "forged.safetensors"), metadata=forged)
    with pytest.raises(tuskml.CheckpointError, match="missing tensors \\['layers.1.bias'\\]"):
        tuskml.load(tmp_path / "forged.safetensors")


def test_save_is_atomic(toy, tmp_path, monkeypatch):
    path = tuskml.save(tuskml.create("decoders", "toy-dit"), tmp_path / "dec.safetensors")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        tuskml.save(tuskml.create("decoders", "toy-dit", scale=3.0), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dec.safetensors"]


def test_reserved_metadata(toy, tmp_path):
    with pytest.raises(tuskml.CheckpointError, match="reserved"):
        tuskml.save(tuskml.create("decoders", "toy-dit"), tmp_path / "d.safetensors", metadata={"tuskml.kind": "x"})
