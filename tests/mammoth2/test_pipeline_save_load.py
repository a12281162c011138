"""save_pretrained / from_pretrained give identical outputs, also with swapped parts."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.model import Mammoth2Model
from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline, load_preset


def _outputs(pipe: Mammoth2Pipeline) -> tuple:
    gen = pipe.generate(["a red circle", "two squares"], steps=1, seed=11, return_result=True)
    src = torch.linspace(-1, 1, 3 * 32 * 32).reshape(3, 32, 32)
    edited = pipe.edit(src, "make it blue", steps=1, seed=11)
    answer = pipe.ask(src, "how many circles?", max_new_tokens=5) if pipe.model.vision_encoder is not None else ""
    return gen.pixels, gen.visual_codes, torch.from_numpy(__import__("numpy").asarray(edited).copy()), answer


@pytest.mark.parametrize("overrides", [{}, {"decoder": {"type": "lumina2"}, "aligner": {"type": "last-layer"},
                                           "backbone": {"experts": {"type": "ffn-attention", "start_layer": 1}}},
                                       {"visual_tokenizer": {"num_codebooks": 2, "codebook_size": 8},
                                        "backbone": {"gen_head": "factorized"}},
                                       {"backbone": {"gen_copy_digit": 0, "gen_copy_keys": "hidden", "gen_copy_values": "token",
                                                     "gen_copy_alone": True, "gen_copy_from_image": True,
                                                     "text_copy": True}}],
                         ids=["tiny", "swapped-parts", "product-vq-factorized-head", "pointers"])
def test_save_load_gives_identical_outputs(tmp_path, overrides):
    torch.manual_seed(1)
    pipe = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny", **overrides)))
    before = _outputs(pipe)
    directory = pipe.save_pretrained(tmp_path / "m")
    assert (directory / "config.toml").is_file() and (directory / "model.safetensors").is_file()
    config = tuskml.load_config(directory / "config.toml", "models")
    assert config == pipe.model.config  # the resolved config, derived sizes included
    meta = tuskml.read_metadata(directory / "model.safetensors")
    assert meta["tuskml.kind"] == "models" and meta["tuskml.name"] == "mammoth2"
    loaded = Mammoth2Pipeline.from_pretrained(directory)
    after = _outputs(loaded)
    for a, b in zip(before[:3], after[:3]):
        assert torch.equal(a, b)
    assert before[3] == after[3]
    # the generic checkpoint loader rebuilds the same model from the safetensors file alone
    again = tuskml.load(directory / "model.safetensors")
    assert isinstance(again, Mammoth2Model) and again.config == pipe.model.config


def test_from_pretrained_reports_missing_or_mismatched_files(tmp_path):
    with pytest.raises(tuskml.CheckpointError, match="config.toml is missing"):
        Mammoth2Pipeline.from_pretrained(tmp_path)
    pipe = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny")))
    directory = pipe.save_pretrained(tmp_path / "m")
    # a config that does not fit the weights (another decoder) is refused with both names
    tuskml.save_config(load_preset("tiny", decoder={"type": "lumina2"}), directory / "config.toml")
    with pytest.raises(tuskml.CheckpointError, match="do not"):
        Mammoth2Pipeline.from_pretrained(directory)


def test_saved_folder_is_self_contained_with_files_from_outside(tmp_path):
    """A transformers backbone loaded from a local folder and a tokenizer.json from a path: the saved
    pipeline still loads (and gives the same outputs) after both originals are deleted and it moved."""
    import shutil

    import transformers

    from tuskml.plugins.mammoth2.configs_ar import TINY_QWEN3_CONFIG
    from tuskml.plugins.mammoth2.text_tokenizers import HFTokenizer

    raw = dict(TINY_QWEN3_CONFIG)
    hf_config = transformers.AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(hf_config).save_pretrained(tmp_path / "qwen")
    HFTokenizer().save(tmp_path / "tok")
    config = load_preset("tiny", backbone={"type": "hf-causal-lm", "model_path": str(tmp_path / "qwen")},
                         text_tokenizer={"type": "hf-tokenizer", "path": str(tmp_path / "tok")},
                         answer_pointer_words=[])  # BPE colour words are several tokens
    torch.manual_seed(0)
    pipe = Mammoth2Pipeline(Mammoth2Model(config))
    before = _outputs(pipe)
    pipe.save_pretrained(tmp_path / "saved")
    shutil.rmtree(tmp_path / "qwen")
    shutil.rmtree(tmp_path / "tok")
    (tmp_path / "saved").rename(tmp_path / "moved")
    loaded = Mammoth2Pipeline.from_pretrained(tmp_path / "moved")
    after = _outputs(loaded)
    for a, b in zip(before[:3], after[:3]):
        assert torch.equal(a, b)
    assert before[3] == after[3]
