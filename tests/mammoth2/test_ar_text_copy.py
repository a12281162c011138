"""mammoth2-ar ``gen_copy_digit``: a pointer from generation positions to earlier text tokens that adds
logits to one digit of a factorised generation token (TextCopy)."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.ar import BackboneInputError, Mammoth2AR
from tuskml.plugins.mammoth2.configs_ar import Mammoth2ARConfig
from tuskml.plugins.mammoth2.kv_cache import KVCache


def _backbone(**overrides) -> Mammoth2AR:
    torch.manual_seed(0)
    kwargs = dict(gen_vocab_size=24, gen_head="factorized", gen_factors=(4, 6), gen_copy_digit=0, gen_copy_dim=8)
    kwargs.update(overrides)
    model = tuskml.create("backbone", "mammoth2-ar", **kwargs).eval()
    with torch.no_grad():  # values start at zero; make the pointer's part of the logits clearly visible
        if model.copy.value is not None:
            model.copy.value.weight.normal_(0.0, 1.0)
        if model.copy.value_prev is not None:
            model.copy.value_prev.weight.normal_(0.0, 1.0)
        if not model.copy.hidden_keys:
            model.copy.key.weight.normal_(0.0, 1.0)
    return model


def _ids(model: Mammoth2AR, batch: int, n_text: int, n_gen: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, model.text_vocab_size, (batch, n_text), generator=g)
    gen = torch.randint(model.gen_vocab_start, model.gen_vocab_start + model.gen_vocab_size, (batch, n_gen), generator=g)
    return torch.cat((text, gen), dim=1)


def _digits(model: Mammoth2AR, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-digit logits back from the summed token logits (token i*6 + j = a_i + b_j)."""
    gen = logits[..., model.text_vocab_size:].unflatten(-1, (4, 6))
    return gen[..., :, 0], gen[..., 0, :]


@pytest.mark.parametrize("values", ["token-and-previous", "previous"])
def test_the_pointer_adds_to_its_digit_only_and_matches_its_definition(values):
    model = _backbone(gen_copy_values=values)
    ids = _ids(model, 2, 5, 4)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        x = out.hidden_states[-1]
        a, b = (head(x) for head in model.gen_head_factors)
        got_a, got_b = _digits(model, out.logits)
        # the structure digit is the plain head's; the colour digit's head plus the pointer
        torch.testing.assert_close(got_b - got_b[..., :1], b - b[..., :1], atol=1e-5, rtol=1e-5)
        copy = model.copy
        q = copy.query(x)
        for row in range(2):
            for i in (5, 8):  # a generation position's query reads the 5 text tokens before it
                keys = copy.key(ids[row, :5])
                scores = torch.cat((q[row, i] @ copy.null_key[None].T, q[row, i] @ keys.T)) * copy.dim ** -0.5
                w = scores.softmax(-1)[1:]
                prev = copy.value_prev(ids[row, :4])  # the first token has no predecessor
                prev = torch.cat((torch.zeros_like(prev[:1]), prev))
                own = copy.value(ids[row, :5]) if values == "token-and-previous" else 0.0
                want = w @ (own + prev) * copy.value_gain
                delta = (got_a[row, i] - got_b[row, i, :1]) - a[row, i]
                torch.testing.assert_close(delta - delta[0], want - want[0], atol=1e-5, rtol=1e-5)


def test_hidden_keys_are_projections_of_the_final_hidden_states():
    model = _backbone(gen_copy_keys="hidden", gen_copy_values="token")
    ids = _ids(model, 1, 5, 3)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        x = out.hidden_states[-1]
        a = model.gen_head_factors[0](x)
        got_a, got_b = _digits(model, out.logits)
        copy = model.copy
        assert copy.value_prev is None
        q, k = copy.query(x[0]), copy.key(x[0, :5])
        for i in (5, 7):
            w = (torch.cat((q[i] @ copy.null_key[None].T, q[i] @ k.T)) * copy.dim ** -0.5).softmax(-1)[1:]
            want = w @ copy.value(ids[0, :5]) * copy.value_gain
            delta = (got_a[0, i] - got_b[0, i, :1]) - a[0, i]
            torch.testing.assert_close(delta - delta[0], want - want[0], atol=1e-5, rtol=1e-5)


def test_split_next_sends_the_word_to_the_colour_and_the_next_word_to_the_structure():
    model = _backbone(gen_copy_keys="hidden", gen_copy_values="split-next")
    ids = _ids(model, 1, 5, 4)
    with torch.no_grad():
        model.copy.value_next.weight.normal_(0.0, 1.0)
        out = model(ids, output_hidden_states=True)
        x = out.hidden_states[-1]
        a, b = (head(x) for head in model.gen_head_factors)
        got_a, got_b = _digits(model, out.logits)
        copy = model.copy
        q, k = copy.query(x[0]), copy.key(x[0])
        for i in (3, 5, 8):  # a text query reads the text before it, never itself
            keys = list(range(min(i, 5)))
            w = (torch.cat((q[i] @ copy.null_key[None].T, q[i] @ k[keys].T)) * copy.dim ** -0.5).softmax(-1)[1:]
            nxt = copy.value_next(ids[0, 1:6].clamp(max=model.text_vocab_size - 1))[keys] * (ids[0, 1:6] < model.text_vocab_size)[keys, None]
            want_a = w @ copy.value(ids[0, keys]) * copy.value_gain
            want_b = w @ nxt * copy.value_gain
            delta_a = (got_a[0, i] - got_a[0, i, 0]) - (a[0, i] - a[0, i, 0])
            delta_b = (got_b[0, i] - got_b[0, i, 0]) - (b[0, i] - b[0, i, 0])
            torch.testing.assert_close(delta_a, want_a - want_a[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(delta_b, want_b - want_b[0], atol=1e-5, rtol=1e-5)


def test_hidden_and_later_text_tokens_are_not_read():
    model = _backbone()
    ids = _ids(model, 1, 5, 3)
    later = torch.cat((ids, torch.tensor([[7, 9]])), dim=1)
    with torch.no_grad():
        base = model(ids).logits
        # text after a position changes nothing before it (causal pointer)
        torch.testing.assert_close(model(later).logits[:, :8], base, atol=1e-5, rtol=1e-5)
        # a text token hidden by the attention mask is skipped by the pointer too
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[0, 2] = False
        hidden = model(ids, attention_mask=mask, output_hidden_states=True)
        # huge values on the hidden token, as itself and as the predecessor of the visible token after it
        model.copy.value.weight[ids[0, 2]] += 100.0
        model.copy.value_prev.weight[ids[0, 2]] += 100.0
        again = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(again, hidden.logits, atol=1e-4, rtol=1e-4)


def test_copy_alone_rows_take_the_digit_from_the_pointer_and_its_null_value_only():
    model = _backbone(gen_copy_keys="hidden", gen_copy_values="previous", gen_copy_alone=True)
    ids = _ids(model, 2, 5, 4)
    alone = torch.tensor([True, False])
    with torch.no_grad():
        model.copy.null_value.normal_(0.0, 1.0)
        out = model(ids, output_hidden_states=True, copy_alone=alone)
        x = out.hidden_states[-1]
        head_a = model.gen_head_factors[0](x)
        got_a, got_b = _digits(model, out.logits)
        copy = model.copy
        q, k = copy.query(x), copy.key(x)
        for row in range(2):
            for i in (5, 8):
                w = (torch.cat((q[row, i] @ copy.null_key[None].T, q[row, i] @ k[row, :5].T)) * copy.dim ** -0.5).softmax(-1)
                prev = torch.cat((torch.zeros(1, 4), copy.value_prev(ids[row, :4])))
                want = (w[1:] @ prev + w[0] * copy.null_value) * copy.value_gain
                if not alone[row]:  # a row with the head keeps it, the pointer added
                    want = want + head_a[row, i]
                delta = got_a[row, i] - got_b[row, i, :1]
                torch.testing.assert_close(delta - delta[0], want - want[0], atol=1e-5, rtol=1e-5)
        # the head of the pointed digit changes nothing in the alone row, and the other row's logits
        model.gen_head_factors[0].weight.add_(torch.randn_like(model.gen_head_factors[0].weight))
        again = model(ids, copy_alone=alone).logits
    torch.testing.assert_close(again[0], out.logits[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(again[1, 5:], out.logits[1, 5:], atol=1e-3)
    # every row takes the pointer alone unless told otherwise
    torch.testing.assert_close(model(ids).logits, model(ids, copy_alone=torch.tensor([True, True])).logits)


def test_from_image_makes_earlier_image_tokens_keys_that_bring_their_own_colour_digit():
    model = _backbone(gen_copy_keys="hidden", gen_copy_values="previous", gen_copy_alone=True, gen_copy_from_image=True)
    ids = _ids(model, 1, 4, 5, seed=2)
    assert torch.equal(model.copy.value_code.weight, torch.eye(4))  # copying starts as the identity
    with torch.no_grad():
        model.copy.value_code.weight.normal_(0.0, 1.0)
        out = model(ids, output_hidden_states=True)
        x = out.hidden_states[-1]
        got_a, got_b = _digits(model, out.logits)
        copy = model.copy
        q, k = copy.query(x[0]), copy.key(x[0])
        colour = (ids[0] - model.gen_vocab_start) // 6  # token = colour * 6 + structure
        for i in (3, 4, 6, 8):  # a text query, the first image token, and later ones reading the image before them
            w = (torch.cat((q[i] @ copy.null_key[None].T, q[i] @ k[:i + 1].T)) * copy.dim ** -0.5).softmax(-1)
            text = torch.cat((torch.zeros(1, 4), copy.value_prev(ids[0, :3])))  # values of the 4 text keys
            image = copy.value_code(colour[4:i + 1])  # the image keys up to the query itself
            values = torch.cat((text, image))[:i + 1]
            want = (w[1:] @ values + w[0] * copy.null_value) * copy.value_gain
            delta = got_a[0, i] - got_b[0, i, :1]
            torch.testing.assert_close(delta - delta[0], want - want[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"gen_copy_keys": "hidden", "gen_copy_values": "token"},
                                       {"gen_copy_keys": "hidden", "gen_copy_values": "split-next"},
                                       {"gen_copy_keys": "hidden", "gen_copy_values": "previous", "gen_copy_alone": True},
                                       {"gen_copy_keys": "hidden", "gen_copy_values": "split-next", "gen_copy_alone": True,
                                        "gen_copy_from_image": True}])
def test_kv_cached_decoding_with_left_padding_equals_full_recomputation(overrides):
    model = _backbone(**overrides)
    ids = _ids(model, 2, 5, 6, seed=1)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :2] = False  # row 1 is left-padded
    alone = {"copy_alone": torch.tensor([False, True])} if model.config.gen_copy_alone else {}
    with torch.no_grad():
        if model.copy.null_value is not None:
            model.copy.null_value.normal_(0.0, 1.0)
        full = model(ids, attention_mask=mask, **alone).logits
        out = model(ids[:, :4], attention_mask=mask[:, :4], use_cache=True, **alone)
        cache = out.past_key_values
        assert cache.token_ids is not None and cache.token_ids.shape == (2, 4)
        pieces = [out.logits]
        for start, stop in [(4, 6)] + [(i, i + 1) for i in range(6, ids.shape[1])]:
            pieces.append(model(ids[:, start:stop], attention_mask=mask[:, start:stop], past_key_values=cache,
                                use_cache=True).logits)
        assert cache.token_ids.shape == ids.shape
        # a duplicated cache (as for classifier-free guidance) carries the ids along
        doubled = cache.select(torch.tensor([0, 0]))
        if alone:
            assert doubled.copy_alone.tolist() == [False, False]
        step = torch.tensor([[model.gen_vocab_start + 3]] * 2)
        a = model(step[:1], past_key_values=cache.select(torch.tensor([0])), use_cache=True).logits
        c = model(step, past_key_values=doubled, use_cache=True).logits
    torch.testing.assert_close(torch.cat(pieces, 1)[0], full[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat(pieces, 1)[1, 2:], full[1, 2:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(c[1], a[0], atol=1e-5, rtol=1e-5)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs gen_head = 'factorized'"):
        Mammoth2ARConfig(gen_copy_digit=0)
    with pytest.raises(ValueError):
        Mammoth2ARConfig(gen_head="factorized", gen_copy_digit=-1)
    with pytest.raises(BackboneInputError, match="split-next' needs a two-digit"):
        tuskml.create("backbone", "mammoth2-ar", gen_vocab_size=24, gen_head="factorized", gen_factors=(2, 3, 4),
                      gen_copy_digit=0, gen_copy_values="split-next")
    with pytest.raises(ValueError, match="gen_copy_alone .* needs gen_copy_digit"):
        Mammoth2ARConfig(gen_head="factorized", gen_factors=(4, 6), gen_vocab_size=24, gen_copy_alone=True)
    with pytest.raises(BackboneInputError, match="copy_alone needs a backbone with gen_copy_alone"):
        _backbone()(_ids(_backbone(), 1, 3, 1), copy_alone=torch.tensor([True]))
    with pytest.raises(ValueError, match="gen_copy_from_image .* needs gen_copy_digit and gen_copy_keys = 'hidden'"):
        Mammoth2ARConfig(gen_head="factorized", gen_factors=(4, 6), gen_vocab_size=24, gen_copy_digit=0,
                         gen_copy_from_image=True)
    alone = _backbone(gen_copy_alone=True)
    with pytest.raises(BackboneInputError, match=r"copy_alone must be a bool tensor \[B=1\]"):
        alone(_ids(alone, 1, 3, 1), copy_alone=torch.tensor([1, 0]))
    with pytest.raises(BackboneInputError, match="gen_copy_digit=2 names no digit"):
        tuskml.create("backbone", "mammoth2-ar", gen_vocab_size=24, gen_head="factorized", gen_factors=(4, 6),
                      gen_copy_digit=2)
    model = _backbone()
    ids = _ids(model, 1, 3, 1)
    foreign = KVCache(model.num_layers)
    model(ids, past_key_values=foreign)
    foreign.token_ids = None  # e.g. a cache filled by another backbone
    with pytest.raises(BackboneInputError, match="holds no token ids"):
        model(ids[:, :1], past_key_values=foreign)

