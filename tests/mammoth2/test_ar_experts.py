"""Generation experts: exact hard routing by token id, layer ranges, and the three registered layouts."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.experts import ExpertPlan, route_tokens
from tuskml.testing import check_component


def _backbone(experts: dict, num_layers: int = 2):
    torch.manual_seed(0)
    return tuskml.create("backbone", "mammoth2-ar", num_layers=num_layers, experts=experts).eval()


def _interleaved_ids(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Text and generation tokens alternating, so routing (not causality) must keep them apart."""
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, model.text_vocab_size, (2, 8), generator=g)
    gen = torch.randint(model.gen_vocab_start, model.gen_vocab_start + model.gen_vocab_size, (2, 8), generator=g)
    is_gen = torch.tensor([i % 3 == 1 for i in range(8)]).expand(2, 8)
    return torch.where(is_gen, gen, text), is_gen


def _perturb_experts(model) -> None:
    with torch.no_grad():
        for _, expert in model.expert_pairs():
            for p in expert.parameters():
                p.add_(torch.randn_like(p) * 0.5)


def test_ffn_experts_route_exactly_by_token_id():
    # one layer: a text token sees generation tokens only through the shared attention of the layer
    # input, so its output cannot depend on the generation FFN unless routing leaks
    model = _backbone({"type": "ffn"}, num_layers=1)
    ids, is_gen = _interleaved_ids(model)
    with torch.no_grad():
        before = model(ids).logits
        _perturb_experts(model)
        after = model(ids).logits
    assert torch.equal(before[~is_gen], after[~is_gen]), "text-token outputs changed with expert weights"
    assert (before[is_gen] - after[is_gen]).abs().amax(-1).min() > 1e-3, "generation tokens ignored their experts"


def test_text_prefix_is_independent_of_experts_in_any_layout_and_depth():
    for experts in ({"type": "ffn"}, {"type": "ffn-attention"}, {"type": "ffn", "start_layer": 1}):
        model = _backbone(experts, num_layers=3)
        g = torch.Generator().manual_seed(1)
        text = torch.randint(0, model.text_vocab_size, (1, 5), generator=g)
        gen = torch.randint(model.gen_vocab_start, model.gen_vocab_start + model.gen_vocab_size, (1, 4), generator=g)
        ids = torch.cat((text, gen), 1)
        with torch.no_grad():
            before = model(ids).logits
            _perturb_experts(model)
            after = model(ids).logits
        assert torch.equal(before[:, :5], after[:, :5]), experts
        assert not torch.allclose(before[:, 5:], after[:, 5:]), experts


def test_ffn_attention_text_queries_and_outputs_never_touch_expert_weights():
    """Gradients of text-token outputs reach the generation K/V (text queries attend to generation
    keys, as intended) but never the generation Q, O or FFN, which only generation tokens use."""
    model = _backbone({"type": "ffn-attention"}, num_layers=1)
    ids, is_gen = _interleaved_ids(model)
    model(ids).logits[~is_gen].sum().backward()
    attn, layer = model.layers[0].self_attn, model.layers[0]
    for name in ("gen_q_proj", "gen_o_proj"):
        assert torch.count_nonzero(getattr(attn, name).weight.grad) == 0, name
    assert all(torch.count_nonzero(p.grad) == 0 for p in layer.gen_mlp.parameters())
    assert torch.count_nonzero(attn.gen_k_proj.weight.grad) > 0
    model.zero_grad()
    model(ids).logits[is_gen].sum().backward()
    for module in (attn.gen_q_proj, attn.gen_k_proj, attn.gen_v_proj, attn.gen_o_proj, layer.gen_mlp.down_proj):
        assert torch.count_nonzero(module.weight.grad) > 0


def test_layer_range_and_layouts():
    model = _backbone({"type": "ffn", "start_layer": 1, "end_layer": 3}, num_layers=4)
    assert [layer.has_ffn_expert for layer in model.layers] == [False, True, True, False]
    assert not any(layer.self_attn.has_expert for layer in model.layers)
    model = _backbone({"type": "ffn-attention", "start_layer": 2}, num_layers=3)
    assert [layer.self_attn.has_expert for layer in model.layers] == [False, False, True]
    model = _backbone({"type": "none"})
    assert model.expert_pairs() == [] and not any("gen_mlp" in k for k in model.state_dict())


def test_copy_init_starts_experts_equal_to_the_text_path():
    model = _backbone({"type": "ffn-attention", "init": "copy"}, num_layers=2)
    for text, gen in model.expert_pairs():
        for a, b in zip(text.parameters(), gen.parameters(), strict=True):
            assert torch.equal(a, b)
    ids, _ = _interleaved_ids(model)
    # with identical experts, routing changes nothing but the generation embedding does
    none_model = _backbone({"type": "none"}, num_layers=2)
    none_model.load_state_dict({k: v for k, v in model.state_dict().items() if ".gen_" not in k}, strict=True)
    torch.testing.assert_close(model(ids).logits, none_model(ids).logits)


def test_bad_layer_ranges_are_rejected():
    with pytest.raises(tuskml.ConfigError, match="end_layer=1 must be greater than start_layer=2"):
        tuskml.create("experts", "ffn", start_layer=2, end_layer=1)
    with pytest.raises(tuskml.ConfigError, match="do not fit a backbone with 2 layers"):
        tuskml.create("backbone", "mammoth2-ar", num_layers=2, experts={"type": "ffn", "start_layer": 2})
    with pytest.raises(tuskml.ConfigError, match="end_layer <= 2"):
        tuskml.create("backbone", "mammoth2-ar", num_layers=2, experts={"type": "ffn", "end_layer": 3})


def test_route_tokens_gathers_each_token_once():
    x = torch.arange(12.0).view(2, 3, 2)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    seen = []

    def text_fn(t):
        seen.append(("text", t.shape[0]))
        return t * 10

    def gen_fn(t):
        seen.append(("gen", t.shape[0]))
        return -t

    out = route_tokens(x, mask, text_fn, gen_fn)
    assert torch.equal(out, torch.where(mask.unsqueeze(-1), -x, x * 10))
    assert sorted(seen) == [("gen", 3), ("text", 3)]
    assert isinstance(tuskml.create("experts", "none"), ExpertPlan)


@pytest.mark.parametrize("name", ["ffn", "ffn-attention", "none"])
def test_conformance(name, tmp_path):
    check_component("experts", name, tmp_path)
