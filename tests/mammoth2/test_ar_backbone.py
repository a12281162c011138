"""mammoth2-ar: shapes, KV-cached decoding == full recomputation, Qwen3 weight compatibility, errors."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.ar import BackboneInputError, Mammoth2AR
from tuskml.plugins.mammoth2.kv_cache import KVCache
from tuskml.testing import check_component


def _backbone(**overrides) -> Mammoth2AR:
    torch.manual_seed(0)
    return tuskml.create("backbone", "mammoth2-ar", **overrides).eval()


def _mixed_ids(model: Mammoth2AR, batch: int, n_text: int, n_gen: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, model.text_vocab_size, (batch, n_text), generator=g)
    gen = torch.randint(model.gen_vocab_start, model.gen_vocab_start + model.gen_vocab_size, (batch, n_gen), generator=g)
    return torch.cat((text, gen), dim=1)


def test_shapes_and_interface_attributes():
    model = _backbone()
    ids = _mixed_ids(model, 2, 5, 4)
    out = model(ids, output_hidden_states=True)
    assert out.logits.shape == (2, 9, model.text_vocab_size + model.gen_vocab_size)
    assert len(out.hidden_states) == model.num_layers + 1
    assert all(h.shape == (2, 9, model.hidden_size) for h in out.hidden_states)
    assert out.past_key_values is None
    assert model.gen_vocab_start == model.text_vocab_size == 264
    # hidden_states[0] is the embedding; the last is after the final norm (transformers' convention)
    assert torch.equal(out.hidden_states[0], model.embed(ids))
    assert torch.allclose(model.lm_head(out.hidden_states[-1]), out.logits[..., : model.text_vocab_size])
    assert torch.allclose(model.gen_head(out.hidden_states[-1]), out.logits[..., model.text_vocab_size:])


def test_generation_ids_use_the_generation_embedding_table():
    model = _backbone()
    ids = torch.tensor([[3, model.gen_vocab_start + 5]])
    emb = model.embed(ids)
    assert torch.equal(emb[0, 0], model.embed_tokens.weight[3])
    assert torch.equal(emb[0, 1], model.gen_embed_tokens.weight[5])


def test_inputs_embeds_replace_the_lookup_but_ids_still_route():
    model = _backbone()
    ids = _mixed_ids(model, 1, 3, 3)
    emb = model.embed(ids)
    assert torch.allclose(model(ids, inputs_embeds=emb).logits, model(ids).logits)
    # the same embeddings with other (all-text) ids take the text FFN in the expert layers
    text_ids = ids.clamp(max=model.text_vocab_size - 1)
    assert not torch.allclose(model(text_ids, inputs_embeds=emb).logits[:, 3:], model(ids).logits[:, 3:])


@pytest.mark.parametrize("experts", ["ffn", "ffn-attention", "none"])
def test_kv_cached_decoding_equals_full_recomputation(experts):
    model = _backbone(experts={"type": experts})
    ids = _mixed_ids(model, 2, 6, 6, seed=1)
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        out = model(ids[:, :4], use_cache=True, output_hidden_states=True)
        cache = out.past_key_values
        pieces, hiddens = [out.logits], [out.hidden_states[-1]]
        # one chunk of two tokens, then one token at a time
        for start, stop in [(4, 6)] + [(i, i + 1) for i in range(6, ids.shape[1])]:
            out = model(ids[:, start:stop], past_key_values=cache, use_cache=True, output_hidden_states=True)
            assert out.past_key_values is cache and cache.seq_length == stop
            pieces.append(out.logits)
            hiddens.append(out.hidden_states[-1])
    torch.testing.assert_close(torch.cat(pieces, 1), full.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(hiddens, 1), full.hidden_states[-1], atol=1e-5, rtol=1e-5)


def test_kv_cache_with_left_padding_matches_unpadded_rows():
    """A batch of prompts of different lengths (left-padded) decodes like each prompt alone."""
    model = _backbone()
    short, long = _mixed_ids(model, 1, 3, 2, seed=2), _mixed_ids(model, 1, 5, 2, seed=3)
    pad = torch.zeros(1, 2, dtype=torch.long)
    batch = torch.cat((torch.cat((pad, short), 1), long), 0)
    mask = torch.ones_like(batch, dtype=torch.bool)
    mask[0, :2] = False
    steps = torch.tensor([[model.gen_vocab_start + 1], [model.gen_vocab_start + 2]])
    with torch.no_grad():
        out = model(batch, attention_mask=mask, use_cache=True)
        cache = out.past_key_values
        # new-token-only masks are extended from the cache's mask
        step_out = model(steps, attention_mask=torch.ones(2, 1, dtype=torch.bool), past_key_values=cache, use_cache=True)
        alone_short = model(torch.cat((short, steps[:1]), 1)).logits
        alone_long = model(torch.cat((long, steps[1:]), 1)).logits
    torch.testing.assert_close(out.logits[0, 2:], alone_short[0, :-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits[1], alone_long[0, :-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step_out.logits[0, -1], alone_short[0, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step_out.logits[1, -1], alone_long[0, -1], atol=1e-5, rtol=1e-5)
    assert not step_out.logits.isnan().any() and not out.logits.isnan().any()


def test_kv_cache_select_and_clone_branch_independently():
    model = _backbone()
    ids = _mixed_ids(model, 1, 4, 1)
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
        doubled = cache.select(torch.tensor([0, 0]))
        branch = cache.clone()
        a = model(torch.tensor([[5]]), past_key_values=cache, use_cache=True).logits
        b = model(torch.tensor([[5]]), past_key_values=branch, use_cache=True).logits
        c = model(torch.tensor([[5], [5]]), past_key_values=doubled, use_cache=True).logits
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c[0], a[0])
    torch.testing.assert_close(c[1], a[0])


def test_kv_cache_grows_past_its_initial_capacity():
    cache = KVCache(num_layers=1, initial_capacity=2)
    chunks = [torch.randn(1, 2, 1, 4) for _ in range(5)]
    for x in chunks:
        k, v = cache.update(0, x, -x)
    assert cache.seq_length == 5
    assert torch.equal(k, torch.cat(chunks, 2)) and torch.equal(v, -torch.cat(chunks, 2))


def test_cache_keeps_gradients_when_keys_require_grad():
    model = _backbone()
    model.train()
    ids = _mixed_ids(model, 1, 3, 2)
    out = model(ids[:, :3], use_cache=True)
    out2 = model(ids[:, 3:], past_key_values=out.past_key_values, use_cache=True)
    (out.logits.sum() + out2.logits.sum()).backward()
    assert model.layers[0].self_attn.q_proj.weight.grad is not None


def test_matches_transformers_qwen3_with_copied_weights():
    """With Qwen3's weights copied in, text logits and hidden states equal transformers' Qwen3."""
    transformers = pytest.importorskip("transformers")
    from tuskml.plugins.mammoth2.configs_ar import TINY_QWEN3_CONFIG

    raw = dict(TINY_QWEN3_CONFIG)
    raw.pop("model_type")
    torch.manual_seed(0)
    ref = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**raw, attn_implementation="sdpa")).eval()
    model = _backbone(experts={"type": "ffn", "init": "copy"})
    missing = model.load_qwen3_state_dict(ref.state_dict())
    assert set(missing) == {k for k in model.state_dict() if "gen_" in k}
    ids = torch.randint(0, 264, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        mine = model(ids, output_hidden_states=True)
        theirs = ref(ids, output_hidden_states=True)
    torch.testing.assert_close(mine.logits[..., :264], theirs.logits, atol=1e-5, rtol=1e-4)
    for a, b in zip(mine.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise_clear_errors():
    model = _backbone()
    with pytest.raises(BackboneInputError, match=r"input_ids must lie in \[0, 328\)"):
        model(torch.tensor([[0, 328]]))
    with pytest.raises(BackboneInputError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(BackboneInputError, match="attention_mask has 2 columns"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(BackboneInputError, match="inputs_embeds must be"):
        model(torch.tensor([[1, 2]]), inputs_embeds=torch.zeros(1, 2, 7))
    with pytest.raises(tuskml.ConfigError, match="num_kv_heads"):
        tuskml.create("backbone", "mammoth2-ar", num_heads=4, num_kv_heads=3)


def test_conformance(tmp_path):
    check_component("backbones", "mammoth2-ar", tmp_path)


def test_bf16_autocast_forward_backward_and_cached_step():
    model = _backbone(experts={"type": "ffn-attention"})
    ids = _mixed_ids(model, 2, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, use_cache=True)
        step = model(ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        out.logits.float().sum().backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(step.logits).all()
    assert model.layers[0].gen_mlp.down_proj.weight.grad is not None


def test_checkpoint_round_trip_of_a_non_default_config(tmp_path):
    model = _backbone(num_layers=3, tie_text_embeddings=True, experts={"type": "ffn-attention", "start_layer": 1})
    assert model.lm_head.weight is model.embed_tokens.weight
    path = tuskml.save(model, tmp_path / "ar.safetensors")
    loaded = tuskml.load(path).eval()
    assert loaded.config == model.config and loaded.lm_head.weight is loaded.embed_tokens.weight
    ids = _mixed_ids(model, 2, 4, 3)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_factorized_generation_head_sums_one_logit_and_one_embedding_per_digit():
    model = _backbone(gen_vocab_size=24, gen_head="factorized", gen_factors=(4, 6))
    assert not hasattr(model, "gen_head") and not hasattr(model, "gen_embed_tokens")
    ids = _mixed_ids(model, 2, 3, 5)
    out = model(ids, output_hidden_states=True)
    assert out.logits.shape == (2, 8, model.text_vocab_size + 24)
    h = out.hidden_states[-1]
    a, b = (head(h) for head in model.gen_head_factors)
    expected = (a[..., :, None] + b[..., None, :]).flatten(-2)  # token i*6 + j gets a_i + b_j
    torch.testing.assert_close(out.logits[..., model.text_vocab_size:], expected)
    emb = model.embed(torch.tensor([[model.gen_vocab_start + 2 * 6 + 5]]))[0, 0]
    torch.testing.assert_close(emb, model.gen_embed_factors[0].weight[2] + model.gen_embed_factors[1].weight[5])
    # digits are independent given the context: the softmax over tokens is the product of the digits'
    p = out.logits[..., model.text_vocab_size:].softmax(-1)
    torch.testing.assert_close(p, (a.softmax(-1)[..., :, None] * b.softmax(-1)[..., None, :]).flatten(-2))


def test_factorized_head_kv_cache_matches_full_recomputation():
    model = _backbone(gen_vocab_size=24, gen_head="factorized", gen_factors=(4, 6))
    ids = _mixed_ids(model, 2, 4, 4)
    full = model(ids).logits
    cache = KVCache(model.num_layers)
    model(ids[:, :5], past_key_values=cache)
    step = model(ids[:, 5:], past_key_values=cache).logits
    torch.testing.assert_close(step, full[:, 5:], atol=1e-5, rtol=1e-4)


def test_factorized_head_config_errors():
    from tuskml.plugins.mammoth2.configs_ar import Mammoth2ARConfig

    with pytest.raises(ValueError, match="multiply to 20"):
        Mammoth2ARConfig(gen_vocab_size=24, gen_factors=(4, 5))
    with pytest.raises(BackboneInputError, match="needs gen_factors"):
        _backbone(gen_head="factorized")
