"""hf-causal-lm: a tiny random Qwen3 from transformers, extended by surgery, behaves like the original
on text and routes generation tokens to the added vocabulary and experts."""

from __future__ import annotations

import json

import pytest
import torch

import tuskml
from tuskml.testing import check_component

transformers = pytest.importorskip("transformers")

from tuskml.plugins.mammoth2.ar import BackboneInputError  # noqa: E402
from tuskml.plugins.mammoth2.configs_ar import TINY_QWEN3_CONFIG  # noqa: E402
from tuskml.plugins.mammoth2.hf_backbone import HFCacheState  # noqa: E402


@pytest.fixture(scope="module")
def qwen3_folder(tmp_path_factory):
    """A tiny random Qwen3ForCausalLM saved with save_pretrained, plus the model itself."""
    raw = dict(TINY_QWEN3_CONFIG)
    raw.pop("model_type")
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**raw)).eval()
    folder = tmp_path_factory.mktemp("qwen3")
    model.save_pretrained(folder)
    return folder, model


def _backbone(folder, **overrides):
    torch.manual_seed(1)
    return tuskml.create("backbone", "hf-causal-lm", model_path=str(folder), **overrides).eval()


@pytest.mark.parametrize("experts", ["ffn", "ffn-attention"])
def test_text_tokens_match_the_plain_transformers_model(qwen3_folder, experts):
    folder, plain = qwen3_folder
    backbone = _backbone(folder, experts={"type": experts})
    ids = torch.randint(0, 264, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = backbone(ids, output_hidden_states=True)
        theirs = plain(ids, output_hidden_states=True)
    assert ours.logits.shape == (2, 10, 264 + 64)
    torch.testing.assert_close(ours.logits[..., :264], theirs.logits, atol=1e-6, rtol=1e-5)
    assert len(ours.hidden_states) == backbone.num_layers + 1 == 3
    for a, b in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_routing_is_exact_after_surgery(qwen3_folder):
    folder, _ = qwen3_folder
    backbone = _backbone(folder, experts={"type": "ffn"})
    g = torch.Generator().manual_seed(3)
    text = torch.randint(0, 264, (1, 5), generator=g)
    gen = torch.randint(264, 328, (1, 4), generator=g)
    ids = torch.cat((text, gen), 1)
    with torch.no_grad():
        before = backbone(ids).logits
        for _, expert in backbone.expert_pairs():
            for p in expert.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        after = backbone(ids).logits
    assert len(backbone.expert_pairs()) == 2
    assert torch.equal(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])
    assert backbone.routing.gen_mask is None  # the routing state is cleared after each call


def test_kv_cached_decoding_equals_full_recomputation(qwen3_folder):
    folder, _ = qwen3_folder
    backbone = _backbone(folder, experts={"type": "ffn-attention"})
    g = torch.Generator().manual_seed(4)
    ids = torch.cat((torch.randint(0, 264, (2, 4), generator=g), torch.randint(264, 328, (2, 5), generator=g)), 1)
    with torch.no_grad():
        full = backbone(ids).logits
        out = backbone(ids[:, :4], use_cache=True)
        state = out.past_key_values
        assert isinstance(state, HFCacheState)
        pieces = [out.logits]
        for i in range(4, ids.shape[1]):
            out = backbone(ids[:, i:i + 1], past_key_values=state, use_cache=True)
            pieces.append(out.logits)
    assert state.seq_length == ids.shape[1]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    # rows of the cache can be reordered / repeated (e.g. for classifier-free guidance)
    swapped = state.select(torch.tensor([1, 0]))
    nxt = torch.tensor([[270], [271]])
    with torch.no_grad():
        a = backbone(nxt, past_key_values=state, use_cache=True).logits
        b = backbone(nxt.flip(0), past_key_values=swapped, use_cache=True).logits
    torch.testing.assert_close(a, b.flip(0), atol=1e-5, rtol=1e-5)


def test_text_vocab_resize_and_config_json(qwen3_folder):
    config = dict(TINY_QWEN3_CONFIG, num_hidden_layers=3)
    backbone = tuskml.create("backbone", "hf-causal-lm", hf_config_json=json.dumps(config), text_vocab_size=300,
                             experts={"type": "ffn", "start_layer": 1})
    assert backbone.num_layers == 3 and backbone.text_vocab_size == 300 == backbone.gen_vocab_start
    assert backbone(torch.tensor([[299, 300 + 63]])).logits.shape == (1, 2, 364)
    assert len(backbone.expert_pairs()) == 2


def test_bad_configs_and_inputs(tmp_path):
    with pytest.raises(tuskml.ConfigError, match="not a folder with a config.json"):
        tuskml.create("backbone", "hf-causal-lm", model_path=str(tmp_path))
    with pytest.raises(tuskml.ConfigError, match="model_type"):
        tuskml.create("backbone", "hf-causal-lm", hf_config_json='{"hidden_size": 8}')
    with pytest.raises(tuskml.ConfigError, match="not valid JSON"):
        tuskml.create("backbone", "hf-causal-lm", hf_config_json="{")
    backbone = tuskml.create("backbone", "hf-causal-lm")
    with pytest.raises(BackboneInputError, match="must lie in"):
        backbone(torch.tensor([[400]]))


def test_conformance(tmp_path):
    check_component("backbones", "hf-causal-lm", tmp_path)


def test_tied_embeddings_survive_resize_and_checkpoint(tmp_path):
    config = dict(TINY_QWEN3_CONFIG, tie_word_embeddings=True)
    backbone = tuskml.create("backbone", "hf-causal-lm", hf_config_json=json.dumps(config), text_vocab_size=300).eval()
    assert backbone.lm.get_output_embeddings().weight is backbone.lm.get_input_embeddings().weight
    loaded = tuskml.load(tuskml.save(backbone, tmp_path / "hf.safetensors")).eval()
    ids = torch.tensor([[1, 2, 299, 300, 363]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, backbone(ids).logits)
