"""Aligners: layer mean, caption embedder + Q-Former + refiner layout, padding invariance, errors."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.aligner import pack_by_mask
from tuskml.plugins.mammoth2.configs_gen import GenerationInputError


def make(name: str, **overrides):
    torch.manual_seed(0)
    return tuskml.create("aligner", name, **overrides).eval()


def test_pack_by_mask_keeps_order_and_masks_padding():
    x = torch.arange(10.0).view(1, 5, 2).repeat(2, 1, 1)
    mask = torch.tensor([[False, True, False, True, True], [True, False, False, False, False]])
    packed, packed_mask = pack_by_mask(x, mask)
    assert packed_mask.tolist() == [[True, True, True], [True, False, False]]
    assert packed[0, :, 0].tolist() == [2.0, 6.0, 8.0]
    assert packed[1, 0, 0] == 0.0 and packed[1, 1:].abs().sum() == 0
    empty, empty_mask = pack_by_mask(x, torch.zeros_like(mask))
    assert empty.shape == (2, 1, 2) and not empty_mask.any()


def test_mammoth2_aligner_shapes_and_layout():
    aligner = make("mammoth2", in_dim=24, out_dim=32, num_queries=6)
    hidden, text_mask, visual_mask = aligner.example_inputs()
    hidden = tuple(h[..., :24] for h in hidden)
    cond, cond_mask = aligner(hidden, text_mask, visual_mask)
    # [max 3 text tokens | 6 queries]
    assert cond.shape == (2, 3 + 6, 32)
    assert cond_mask.tolist() == [[True] * 9, [True, True, False] + [True] * 6]


def test_layer_mean_is_plain_and_uses_only_the_configured_layers():
    aligner = make("mammoth2", layers=(-1, -3))
    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(2, 8, 32, generator=g) for _ in range(5)]
    assert torch.allclose(aligner.mean_of_layers(hidden), (hidden[-1] + hidden[-3]) / 2)
    _, text_mask, visual_mask = aligner.example_inputs()
    base = aligner(hidden, text_mask, visual_mask)[0]
    other = list(hidden)
    other[-2] = torch.randn(2, 8, 32, generator=g)  # not an aggregated layer
    other[0] = torch.randn(2, 8, 32, generator=g)
    assert torch.equal(aligner(other, text_mask, visual_mask)[0], base)
    other[-3] = other[-3] + 1
    assert not torch.allclose(aligner(other, text_mask, visual_mask)[0], base)
    swapped = make("mammoth2", layers=(-3, -1))  # same weights (same seed), order of layers irrelevant
    assert torch.allclose(swapped(hidden, text_mask, visual_mask)[0], base, atol=1e-6)


def test_text_goes_through_caption_embedder_and_visual_through_queries():
    aligner = make("mammoth2", refiner_depth=0)
    hidden, text_mask, visual_mask = aligner.example_inputs()
    cond, _ = aligner(hidden, text_mask, visual_mask)
    mean = aligner.mean_of_layers(hidden)
    expected_text = aligner.caption_embedder(mean[0, :3])
    assert torch.allclose(cond[0, :3], expected_text, atol=1e-6)
    # the visual tokens influence only the query tokens (no refiner here), the text only the text part
    changed = tuple(h.clone() for h in hidden)
    for h in changed:
        h[0, 3:7] += 1.0
    cond2, _ = aligner(changed, text_mask, visual_mask)
    assert torch.allclose(cond2[0, :3], cond[0, :3]) and not torch.allclose(cond2[0, 3:], cond[0, 3:])


def test_padding_tokens_do_not_change_the_condition():
    aligner = make("mammoth2")
    hidden, text_mask, visual_mask = aligner.example_inputs()
    base, base_mask = aligner(hidden, text_mask, visual_mask)
    g = torch.Generator().manual_seed(3)
    # insert 3 junk positions (neither text nor visual) in the middle of each sequence
    junk = [torch.randn(2, 3, 32, generator=g) * 100 for _ in hidden]
    padded = tuple(torch.cat([h[:, :2], j, h[:, 2:]], dim=1) for h, j in zip(hidden, junk))
    no = torch.zeros(2, 3, dtype=torch.bool)
    out, out_mask = aligner(padded, torch.cat([text_mask[:, :2], no, text_mask[:, 2:]], 1),
                            torch.cat([visual_mask[:, :2], no, visual_mask[:, 2:]], 1))
    assert torch.equal(out_mask, base_mask)
    assert torch.allclose(out[out_mask], base[base_mask], atol=1e-5)


def test_sample_without_visual_tokens_masks_its_queries():
    aligner = make("mammoth2")
    hidden, text_mask, visual_mask = aligner.example_inputs()
    visual_mask = visual_mask.clone()
    visual_mask[1] = False
    cond, cond_mask = aligner(hidden, text_mask, visual_mask)
    assert torch.isfinite(cond).all()
    assert not cond_mask[1, 3:].any() and cond_mask[0, 3:].all()


def test_last_layer_aligner():
    aligner = make("last-layer", in_dim=16, out_dim=8)
    hidden = [torch.randn(2, 8, 16) for _ in range(3)]
    _, text_mask, visual_mask = aligner.example_inputs()
    cond, cond_mask = aligner(hidden, text_mask, visual_mask)
    assert cond.shape == (2, 7, 8) and cond_mask.sum(1).tolist() == [7, 4]
    assert torch.allclose(cond[0], aligner.proj(hidden[-1][0, :7]))


def test_errors_name_the_problem():
    aligner = make("mammoth2", layers=(-1, -9))
    hidden, text_mask, visual_mask = aligner.example_inputs()
    with pytest.raises(GenerationInputError, match="out of range"):
        aligner(hidden[:3], text_mask, visual_mask)
    with pytest.raises(GenerationInputError, match="in_dim"):
        aligner(tuple(h[..., :8] for h in hidden), text_mask, visual_mask)
    with pytest.raises(GenerationInputError, match="text_mask"):
        aligner(hidden, text_mask.long(), visual_mask)
    with pytest.raises(tuskml.ConfigError, match="layers"):
        tuskml.create("aligner", "mammoth2", layers=[])
