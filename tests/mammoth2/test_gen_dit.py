"""mammoth2-dit and the lumina2 adapter: shapes, in-context layout, RoPE ids, masking, zero-init, training."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.configs_gen import GenerationInputError, Mammoth2DiTConfig
from tuskml.plugins.mammoth2.dit import DiTBlock, Mammoth2DiT, patchify, unpatchify
from tuskml.plugins.mammoth2.flow_matching import flow_matching_loss, interpolate, sample_t
from tuskml.plugins.mammoth2.rope3d import RotaryEmbedding3D, apply_rotary, sequence_position_ids


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter (zero-initialised gates included) so outputs are not trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(1 + noise if name.endswith("weight") and p.dim() == 1 else noise)
    return module


def small_dit(**overrides) -> Mammoth2DiT:
    torch.manual_seed(0)
    return tuskml.create("decoder", "mammoth2-dit", **overrides)


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 6, 8)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 12, 12)
    assert torch.equal(tokens[0, 1], x[0, :, 0:2, 2:4].permute(1, 2, 0).reshape(-1))  # row-major patches
    assert torch.equal(unpatchify(tokens, 2, 3, 6, 8), x)


def test_position_ids_layout():
    mask = torch.tensor([[True, False, True, True], [True, True, False, False]])
    cond_ids, (ref0, ref1, target) = sequence_position_ids(mask, [(2, 3), (4, 4), (2, 2)])
    # text tokens (i, i, i) over REAL tokens only; padding (0, 0, 0)
    assert cond_ids[0, :, 0].tolist() == [0, 0, 1, 2]
    assert torch.equal(cond_ids[..., 0], cond_ids[..., 1]) and torch.equal(cond_ids[..., 0], cond_ids[..., 2])
    assert cond_ids[1, :, 0].tolist() == [0, 1, 0, 0]
    # images: (shift, row, col), shift starts after the real text and advances by max(h, w)
    assert ref0[0, :, 0].unique().tolist() == [3] and ref0[1, :, 0].unique().tolist() == [2]
    assert ref0[0, :, 1].tolist() == [0, 0, 0, 1, 1, 1] and ref0[0, :, 2].tolist() == [0, 1, 2, 0, 1, 2]
    assert ref1[0, :, 0].unique().tolist() == [3 + 3]
    assert target[0, :, 0].unique().tolist() == [3 + 3 + 4] and target[1, :, 0].unique().tolist() == [2 + 3 + 4]
    assert target[0, :, 1:].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_rope_is_relative():
    """Scores after 3-axis RoPE depend only on position differences (per axis)."""
    rope = RotaryEmbedding3D((4, 6, 6))
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        return (apply_rotary(q, rope(torch.tensor([[pq]]))) * apply_rotary(k, rope(torch.tensor([[pk]])))).sum()

    assert torch.allclose(score([3, 1, 2], [1, 0, 5]), score([10, 4, 9], [8, 3, 12]), atol=1e-5)
    assert not torch.allclose(score([3, 1, 2], [1, 0, 5]), score([3, 1, 2], [1, 1, 5]), atol=1e-4)


def test_shapes_with_and_without_references():
    dit = randomize_(small_dit())
    x_t, t, cond, cond_mask, refs = dit.example_inputs()
    assert dit(x_t, t, cond, cond_mask, refs).shape == x_t.shape
    assert dit(x_t, t, cond, cond_mask).shape == x_t.shape
    # non-square target and references of another size
    x = torch.randn(2, 3, 4, 12)
    out = dit(x, t, cond, cond_mask, [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)])
    assert out.shape == x.shape
    assert dit.cond_dim == 32 and dit.in_channels == 3


def test_one_in_context_sequence_with_expected_layout():
    """The joint blocks see [cond | ref_0 | ref_1 | target] as one sequence with the documented ids."""
    dit = randomize_(small_dit())
    seen, rope_inputs = [], []
    dit.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args))
    dit.rope.register_forward_pre_hook(lambda m, args: rope_inputs.append(args[0].clone()))
    cond = torch.randn(2, 5, 32)
    cond_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    dit(torch.randn(2, 3, 8, 8), torch.rand(2), cond, cond_mask, [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 4)])
    seq, sdpa_mask, rotations, _temb = seen[0]
    assert seq.shape == (2, 5 + 4 + 8 + 16, 32)
    assert sdpa_mask.shape == (2, 1, 1, 33)
    assert sdpa_mask[1, 0, 0].tolist() == [True] * 3 + [False] * 2 + [True] * 28
    assert rotations.shape == (2, 33, 8) and rotations.is_complex()
    cond_ids, target_ids, ref_ids = rope_inputs  # computed in this order: condition, target, references
    assert cond_ids.shape == (2, 5, 3) and target_ids.shape == (2, 16, 3) and ref_ids.shape == (2, 12, 3)
    # sample 1: 3 real text tokens -> ref_0 at 3, ref_1 at 3 + 2, target at 3 + 2 + max(4, 2)
    assert ref_ids[1, :4, 0].unique().tolist() == [3] and ref_ids[1, 4:, 0].unique().tolist() == [5]
    assert target_ids[1, :, 0].unique().tolist() == [9] and target_ids[0, :, 0].unique().tolist() == [11]
    # no cross-attention anywhere: every attention in the DiT is self-attention over its input
    assert not any("cross" in name for name, _ in dit.named_modules())


def test_padded_condition_tokens_do_not_change_the_output():
    dit = randomize_(small_dit()).eval()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.rand(2, generator=g)
    cond = torch.randn(2, 3, 32, generator=g)
    mask = torch.ones(2, 3, dtype=torch.bool)
    refs = [torch.randn(2, 3, 4, 4, generator=g)]
    base = dit(x, t, cond, mask, refs)
    # insert junk padding between and after the real tokens
    padded = torch.randn(2, 6, 32, generator=g) * 50
    padded[:, [0, 2, 3]] = cond
    padded_mask = torch.tensor([[True, False, True, True, False, False]] * 2)
    out = dit(x, t, padded, padded_mask, refs)
    assert base.abs().mean() > 1e-2  # a real, non-trivial output
    assert torch.allclose(out, base, atol=1e-5), (out - base).abs().max()
    # ...while a real token does matter
    changed = padded.clone()
    changed[:, 0] += 1
    assert not torch.allclose(dit(x, t, changed, padded_mask, refs), base, atol=1e-4)
    # a sample whose condition is all padding still works (no NaN)
    empty_mask = padded_mask.clone()
    empty_mask[1] = False
    assert torch.isfinite(dit(x, t, padded, empty_mask, refs)).all()


def test_batch_items_are_independent():
    dit = randomize_(small_dit()).eval()
    x_t, t, cond, cond_mask, refs = dit.example_inputs()
    full = dit(x_t, t, cond, cond_mask, refs)
    one = dit(x_t[1:], t[1:], cond[1:, :3], cond_mask[1:, :3], [r[1:] for r in refs])
    assert torch.allclose(full[1:], one, atol=1e-5)


def test_reference_images_and_their_index_embeddings_matter():
    dit = randomize_(small_dit()).eval()
    x_t, t, cond, cond_mask, refs = dit.example_inputs()
    base = dit(x_t, t, cond, cond_mask, refs)
    assert not torch.allclose(dit(x_t, t, cond, cond_mask, [refs[0] + 1]), base, atol=1e-4)
    two = [refs[0], refs[0].flip(-1)]
    swapped = [refs[0].flip(-1), refs[0]]
    assert not torch.allclose(dit(x_t, t, cond, cond_mask, two), dit(x_t, t, cond, cond_mask, swapped), atol=1e-4)


def test_fresh_modulated_block_is_identity_and_fresh_dit_outputs_zero():
    block = DiTBlock(32, 2, 1, 64, modulated=True, temb_dim=32, eps=1e-5)
    x = torch.randn(2, 7, 32)
    rope = RotaryEmbedding3D((4, 6, 6))(torch.zeros(2, 7, 3, dtype=torch.long))
    assert torch.equal(block(x, None, rope, torch.randn(2, 32)), x)
    plain = DiTBlock(32, 2, 1, 64, modulated=False, temb_dim=32, eps=1e-5)
    assert not torch.allclose(plain(x, None, rope), x)  # the context refiner is not gated
    dit = small_dit()
    out = dit(*dit.example_inputs())
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised final layer (adaLN-Zero design)


def test_gradients_reach_condition_and_references():
    dit = randomize_(small_dit())
    x_t, t, cond, cond_mask, refs = dit.example_inputs()
    cond = cond.clone().requires_grad_(True)
    refs = [refs[0].clone().requires_grad_(True)]
    dit(x_t, t, cond, cond_mask, refs).square().mean().backward()
    assert cond.grad[0].abs().sum() > 0 and refs[0].grad.abs().sum() > 0
    assert cond.grad[1, 3:].abs().sum() == 0  # padded tokens get no gradient


def test_training_steps_reduce_flow_matching_loss():
    torch.manual_seed(0)
    dit = tuskml.create("decoder", "mammoth2-dit", hidden_size=32, depth=2)
    g = torch.Generator().manual_seed(0)
    # a toy dataset: 4 ramps (left/right/up/down), each tied to its own condition
    ramp = torch.linspace(-1, 1, 8).view(1, 1, 8).expand(3, 8, 8)
    data = torch.stack([ramp, -ramp, ramp.transpose(1, 2), -ramp.transpose(1, 2)])
    cond = torch.randn(4, 2, 32, generator=g)
    mask = torch.ones(4, 2, dtype=torch.bool)
    eval_noise = torch.randn(4, 3, 8, 8, generator=g)
    eval_t = sample_t(4, generator=g)

    def eval_loss() -> float:
        with torch.no_grad():
            return flow_matching_loss(dit(interpolate(data, eval_noise, eval_t), eval_t, cond, mask), data, eval_noise).item()

    before = eval_loss()
    opt = torch.optim.AdamW(dit.parameters(), lr=3e-3)
    for _ in range(40):
        noise = torch.randn(data.shape, generator=g)
        t = sample_t(4, generator=g)
        loss = flow_matching_loss(dit(interpolate(data, noise, t), t, cond, mask), data, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.6 * before, (before, after)


def test_bad_inputs_raise_named_errors():
    dit = small_dit()
    x_t, t, cond, cond_mask, refs = dit.example_inputs()
    with pytest.raises(GenerationInputError, match="in_channels"):
        dit(torch.randn(2, 4, 8, 8), t, cond, cond_mask)
    with pytest.raises(GenerationInputError, match="patch_size"):
        dit(torch.randn(2, 3, 7, 8), t, cond, cond_mask)
    with pytest.raises(GenerationInputError, match="cond_dim"):
        dit(x_t, t, cond[..., :16], cond_mask)
    with pytest.raises(GenerationInputError, match="cond_mask"):
        dit(x_t, t, cond, cond_mask.float())
    with pytest.raises(GenerationInputError, match="max_ref_images"):
        dit(x_t, t, cond, cond_mask, refs * 6)
    with pytest.raises(GenerationInputError, match=r"ref_latents\[0\]"):
        dit(x_t, t, cond, cond_mask, [torch.randn(2, 3, 5, 4)])
    with pytest.raises(tuskml.ConfigError, match="rope_axes_dim"):
        tuskml.create("decoder", "mammoth2-dit", rope_axes_dim=[4, 4, 4])
    with pytest.raises(tuskml.ConfigError, match="num_kv_heads"):
        Mammoth2DiTConfig(num_heads=4, num_kv_heads=3, hidden_size=48, rope_axes_dim=(4, 4, 4))


def test_gqa_and_larger_config_build():
    dit = tuskml.create("decoder", "mammoth2-dit", hidden_size=64, num_heads=4, num_kv_heads=2,
                        rope_axes_dim=[4, 6, 6], cond_dim=24, in_channels=4)
    out = dit(torch.randn(1, 4, 8, 8), torch.rand(1), torch.randn(1, 3, 24), torch.ones(1, 3, dtype=torch.bool))
    assert out.shape == (1, 4, 8, 8)


def test_bf16_autocast_matches_float32_loosely():
    dit = randomize_(small_dit(), std=0.1).eval()
    inputs = dit.example_inputs()
    with torch.no_grad():
        full = dit(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = dit(*inputs)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float() - full).abs().mean() < 0.05 * full.abs().mean() + 1e-3


def test_randomised_dit_round_trips_through_a_checkpoint(tmp_path):
    """A fresh DiT outputs zeros (zero-initialised gates), so the conformance output check is weak: redo it here."""
    dit = randomize_(small_dit()).eval()
    loaded = tuskml.load(tuskml.save(dit, tmp_path / "dit.safetensors")).eval()
    inputs = dit.example_inputs()
    with torch.no_grad():
        out = dit(*inputs)
        assert out.abs().mean() > 1e-2
        assert torch.equal(loaded(*inputs), out)


# --- lumina2 adapter -----------------------------------------------------------------------------------


def test_lumina2_adapter_interface_and_padding():
    torch.manual_seed(0)
    dec = tuskml.create("decoder", "lumina2").eval()
    x_t, t, cond, cond_mask, refs = dec.example_inputs()
    out = dec(x_t, t, cond, cond_mask, refs)
    assert out.shape == x_t.shape and torch.isfinite(out).all()
    assert dec(x_t, t, cond, cond_mask).shape == x_t.shape  # missing reference -> zero slot
    # interleaved padding: the adapter packs real tokens first, as Lumina2 expects
    cond2 = torch.randn(2, 3, 32)
    base = dec(x_t, t, cond2, torch.ones(2, 3, dtype=torch.bool), refs)
    padded = torch.randn(2, 5, 32) * 30
    padded[:, [1, 2, 4]] = cond2
    mask = torch.tensor([[False, True, True, False, True]] * 2)
    assert torch.allclose(dec(x_t, t, padded, mask, refs), base, atol=1e-5)
    with pytest.raises(GenerationInputError, match="channel-concat"):
        dec(x_t, t, cond, cond_mask, [torch.randn(2, 3, 4, 4)])


def test_lumina2_unsupported_references_and_pretrained_folder(tmp_path):
    torch.manual_seed(0)
    dec = tuskml.create("decoder", "lumina2", reference_images="unsupported")
    x_t, t, cond, cond_mask, _ = dec.example_inputs()
    with pytest.raises(GenerationInputError, match="unsupported"):
        dec(x_t, t, cond, cond_mask, [x_t])
    dec.transformer.save_pretrained(tmp_path / "transformer")
    loaded = tuskml.create("decoder", "lumina2", pretrained_path=str(tmp_path), reference_images="unsupported")
    assert torch.allclose(loaded(x_t, t, cond, cond_mask), dec(x_t, t, cond, cond_mask))
    with pytest.raises(tuskml.ConfigError, match="pretrained_path"):
        tuskml.create("decoder", "lumina2", pretrained_path=str(tmp_path / "nope"), reference_images="unsupported")
    with pytest.raises(tuskml.ConfigError, match="channel-concat"):
        tuskml.create("decoder", "lumina2", pretrained_path=str(tmp_path))


def test_reference_shortcut_adds_each_reference_at_its_own_patch():
    """With reference_shortcut, same-size references are also added to the noisy tokens (one linear per
    reference slot): the output changes when that linear is zeroed, and every given slot gets gradients."""
    dit = randomize_(small_dit(reference_shortcut=True, max_ref_images=2)).eval()
    assert len(dit.ref_shortcut) == 2 and len(small_dit().ref_shortcut) == 0
    x_t, t, cond, cond_mask, refs = dit.example_inputs()
    with torch.no_grad():
        base = dit(x_t, t, cond, cond_mask, refs)
        dit.ref_shortcut[0].weight.zero_()
        dit.ref_shortcut[0].bias.zero_()
        without = dit(x_t, t, cond, cond_mask, refs)
    assert not torch.allclose(base, without)  # the shortcut is used
    # gradients reach the shortcut of every given reference, and only those
    dit = small_dit(reference_shortcut=True, max_ref_images=2)
    loss = flow_matching_loss(dit(x_t, t, cond, cond_mask, refs + refs), x_t, torch.randn_like(x_t))
    loss.backward()
    assert all(lin.weight.grad is not None for lin in dit.ref_shortcut)
