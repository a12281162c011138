"""Swapping one part of the model by config works end to end (train step, generate, edit, ask)."""

from __future__ import annotations

import pytest
import torch

from tuskml.plugins.mammoth2.model import Mammoth2Model
from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline, load_preset

# name -> (overrides of the tiny preset, model attribute, a word its class name contains)
SWAPS = {
    "decoder-lumina2": ({"decoder": {"type": "lumina2"}}, "decoder", "Lumina2"),
    "aligner-last-layer": ({"aligner": {"type": "last-layer"}}, "aligner", "LastLayer"),
    "experts-none": ({"backbone": {"experts": {"type": "none"}}}, "backbone", "Mammoth2AR"),
    "experts-ffn-attention": ({"backbone": {"experts": {"type": "ffn-attention", "start_layer": 2}}}, "backbone",
                              "Mammoth2AR"),
    "backbone-hf-causal-lm": ({"backbone": {"type": "hf-causal-lm"}}, "backbone", "HF"),
    "codec-autoencoder-kl": ({"codec": {"type": "autoencoder-kl"}}, "codec", "AutoencoderKL"),
    # a byte-level BPE writes "red" as several tokens, and the answer pointer needs one-token words
    "text-tokenizer-hf": ({"text_tokenizer": {"type": "hf-tokenizer"}, "answer_pointer_words": []}, "text_tokenizer", "HF"),
}


@pytest.mark.parametrize("name", sorted(SWAPS))
def test_swapped_part_works_end_to_end(name):
    overrides, attribute, class_word = SWAPS[name]
    torch.manual_seed(0)
    model = Mammoth2Model(load_preset("tiny", **overrides))
    assert class_word in type(getattr(model, attribute)).__name__
    model.train()
    out = model(**model.example_inputs())
    assert torch.isfinite(out.loss)
    out.loss.backward()

    pipe = Mammoth2Pipeline(model)
    images = pipe.generate(["a red circle", "two blue squares"], steps=2, seed=0)
    assert [im.size for im in images] == [(32, 32), (32, 32)]
    edited = pipe.edit(torch.zeros(3, 32, 32), "make it red", steps=2, seed=0)
    assert edited.size == (32, 32)
    assert isinstance(pipe.ask(torch.zeros(3, 32, 32), "how many circles?", max_new_tokens=4), str)


def test_experts_swap_changes_the_backbone_modules():
    none = Mammoth2Model(load_preset("tiny", backbone={"experts": {"type": "none"}}))
    ffn = Mammoth2Model(load_preset("tiny"))
    names_none = {n for n, _ in none.backbone.named_parameters()}
    names_ffn = {n for n, _ in ffn.backbone.named_parameters()}
    assert not any("gen_mlp" in n for n in names_none)
    assert any("layers.3.gen_mlp" in n for n in names_ffn) and not any("layers.1.gen_mlp" in n for n in names_ffn)
