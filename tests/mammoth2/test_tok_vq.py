"""vq visual tokenizer: shapes, the quantiser's gradient paths, a few training steps, codebook usage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tuskml
from tuskml.plugins.mammoth2.vq import VQInputError, rotation_trick
from tuskml.testing import check_component


def _images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1] (upsampled noise), so there is structure to learn."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, size=size, mode="bilinear", align_corners=False)


def test_shapes_and_interface():
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq").eval()
    images = _images(2)
    out = vq(images)
    assert out.recon.shape == images.shape and out.codes.shape == (2, 8, 8) and out.loss.dim() == 0
    assert 0 < float(out.codebook_usage) <= 1 and float(out.perplexity) >= 1
    codes = vq.encode(images)
    assert codes.dtype == torch.long and torch.equal(codes, out.codes)
    assert int(codes.max()) < vq.codebook_size == 256
    decoded = vq.decode(codes)
    assert decoded.shape == images.shape and decoded.abs().max() <= 1
    torch.testing.assert_close(decoded, out.recon.clamp(-1, 1))
    assert vq.grid_size(32) == (8, 8) and vq.grid_size((64, 32)) == (16, 8)
    assert vq.encode(_images(1, size=64)).shape == (1, 16, 16)  # any multiple of the downsampling


def test_rotation_trick_has_the_code_as_value_and_rotates_the_gradient():
    g = torch.Generator().manual_seed(0)
    e = F.normalize(torch.randn(6, 8, generator=g), dim=-1).requires_grad_()
    q = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    out = rotation_trick(e, q)
    torch.testing.assert_close(out, q, atol=1e-6, rtol=0)
    grad_out = torch.randn(6, 8, generator=g)
    out.backward(grad_out)
    # the Jacobian is a rotation: it preserves gradient norms (straight-through would copy it unchanged)
    torch.testing.assert_close(e.grad.norm(dim=-1), grad_out.norm(dim=-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(e.grad, grad_out)


@pytest.mark.parametrize("quantizer", ["rotation", "straight-through"])
def test_training_steps_reduce_the_loss_and_reach_the_encoder(quantizer):
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq", quantizer=quantizer)
    images = _images(8)
    opt = torch.optim.Adam(vq.parameters(), lr=2e-3)
    losses, usage = [], []
    for _ in range(25):
        out = vq(images)
        opt.zero_grad()
        out.loss.backward()
        assert vq.encoder.net[0].weight.grad.abs().sum() > 0, "no gradient reached the encoder"
        opt.step()
        losses.append(float(out.loss.detach()))
        usage.append(float(out.codebook_usage))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    assert min(usage[-5:]) > 0.05, f"codebook collapsed: usage {usage}"


def test_dead_codes_are_restarted_only_in_training():
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq", restart_unused_after=1)
    before = vq.quantize.embedding.detach().clone()
    vq.eval()
    vq(_images(2))
    assert torch.equal(vq.quantize.embedding, before)
    vq.train()
    vq(_images(2))
    assert not torch.equal(vq.quantize.embedding, before)


def test_bad_inputs():
    vq = tuskml.create("tokenizer", "vq")
    with pytest.raises(VQInputError, match="not a positive multiple"):
        vq.encode(torch.zeros(1, 3, 30, 30))
    with pytest.raises(VQInputError, match=r"float images \[B, 3, H, W\]"):
        vq(torch.zeros(1, 1, 32, 32))
    with pytest.raises(VQInputError, match=r"codes must lie in \[0, 256\)"):
        vq.decode(torch.full((1, 2, 2), 256))
    with pytest.raises(tuskml.ConfigError, match="not divisible"):
        tuskml.create("tokenizer", "vq", image_size=30)


def test_conformance(tmp_path):
    check_component("tokenizers", "vq", tmp_path)


def test_product_quantisation_tokens_are_mixed_radix_digits():
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq", num_codebooks=2, codebook_size=16, code_dim=8).eval()
    assert vq.codebook_size == 256 and vq.codebook_factors == (16, 16)
    q = vq.quantize
    codes = torch.arange(256)
    # token i*16 + j is group 0's code i next to group 1's code j
    vectors = q.lookup(codes)
    torch.testing.assert_close(vectors[:, :4], q.codebooks[0].lookup(codes // 16))
    torch.testing.assert_close(vectors[:, 4:], q.codebooks[1].lookup(codes % 16))
    assert torch.equal(q.nearest(vectors), codes)
    images = _images(2)
    out = vq(images)
    assert out.codes.shape == (2, 8, 8) and int(out.codes.max()) < 256
    torch.testing.assert_close(vq.decode(vq.encode(images)), out.recon.clamp(-1, 1))


def test_product_quantisation_trains_every_sub_codebook():
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq", num_codebooks=2, codebook_size=8, code_dim=8)
    out = vq(_images(4))
    out.loss.backward()
    assert all(cb.embedding.grad.abs().sum() > 0 for cb in vq.quantize.codebooks)
    assert vq.encoder.net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("fields", "message"), [
    ({"num_codebooks": 3, "code_dim": 8}, "divisible by num_codebooks"),
    ({"num_codebooks": 0}, "num_codebooks"),
    ({"num_codebooks": 2, "codebook_size": 1}, "codebook_size >= 2"),
    ({"groups": "colour-structure"}, "needs num_codebooks=2"),
    ({"groups": "colour-structure", "num_codebooks": 2, "in_channels": 1}, "in_channels=3"),
    ({"groups": "colour-structure", "num_codebooks": 2, "colour_codebook_size": 1}, "colour_codebook_size"),
])
def test_product_quantisation_config_errors(fields, message):
    from tuskml.plugins.mammoth2.configs_ar import VQTokenizerConfig

    with pytest.raises(ValueError, match=message):
        VQTokenizerConfig(**fields)


def _flat_shapes(colour: tuple[float, float, float], mask: torch.Tensor) -> torch.Tensor:
    """One image in [-1, 1]: ``colour`` (RGB in [0, 1]) where ``mask`` [H, W], black elsewhere."""
    rgb = torch.tensor(colour).view(3, 1, 1) * mask.float()
    return (rgb * 2 - 1).unsqueeze(0)


def test_colour_structure_groups_see_only_colour_and_only_structure():
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq", num_codebooks=2, groups="colour-structure", codebook_size=16,
                       colour_codebook_size=4, code_dim=8).eval()
    assert vq.codebook_factors == (4, 16) and vq.codebook_size == 64
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    square = (xs >= 4) & (xs < 14) & (ys >= 4) & (ys < 14)
    disc = (xs - 22) ** 2 + (ys - 21) ** 2 <= 25
    red, blue = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)
    images = torch.cat([_flat_shapes(red, square), _flat_shapes(blue, square), _flat_shapes(red, disc)])
    z = vq.encoder(images)  # [3, 8, 8, 8]: channels 0-3 colour, 4-7 structure
    colour, structure = z[:, :4], z[:, 4:]
    # the same shape in two colours: identical structure vectors, different colour vectors on the shape
    torch.testing.assert_close(structure[0], structure[1])
    assert (colour[0] - colour[1]).abs().amax() > 1e-3
    # the same colour on two shapes: every patch that holds some red has the same colour vector,
    # however many of its pixels are red (max pooling), while the structure differs
    patches = lambda m: F.max_pool2d(m.float()[None, None], 4)[0, 0].bool()  # noqa: E731
    red_sq, red_disc = patches(square), patches(disc)
    ref = colour[0][:, red_sq][:, :1]
    torch.testing.assert_close(colour[0][:, red_sq], ref.expand(-1, int(red_sq.sum())))
    torch.testing.assert_close(colour[2][:, red_disc], ref.expand(-1, int(red_disc.sum())))
    assert (structure[0] - structure[2]).abs().amax() > 1e-3
    # the token's first digit is the colour group's code: same colour, same digit on the shape
    codes = vq.encode(images)
    digits = codes // 16
    assert torch.equal(digits[0][red_sq], digits[2][red_sq & red_disc]) or not bool((red_sq & red_disc).any())
    assert len(set(digits[0][red_sq].tolist())) == 1 and len(set(digits[2][red_disc].tolist())) == 1
    assert set(digits[0][red_sq].tolist()) == set(digits[2][red_disc].tolist())
    assert torch.equal(codes[0] % 16, codes[1] % 16)  # structure digits ignore colour


def test_colour_structure_trains_both_groups():
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq", num_codebooks=2, groups="colour-structure", codebook_size=8, code_dim=8)
    out = vq(_images(4))
    out.loss.backward()
    assert all(cb.embedding.grad.abs().sum() > 0 for cb in vq.quantize.codebooks)
    assert vq.encoder.colour.pixel[0].weight.grad.abs().sum() > 0
    assert vq.encoder.structure.net[0].weight.grad.abs().sum() > 0
    torch.testing.assert_close(vq.eval().decode(vq.encode(_images(2))), vq(_images(2)).recon.clamp(-1, 1))


def test_colour_structure_decoder_colours_each_patch_from_its_own_colour_code():
    torch.manual_seed(0)
    vq = tuskml.create("tokenizer", "vq", num_codebooks=2, groups="colour-structure", codebook_size=16,
                       colour_codebook_size=4, code_dim=8).eval()
    codes = torch.randint(0, 64, (1, 8, 8), generator=torch.Generator().manual_seed(1))
    recoloured = codes.clone()
    recoloured[0, 2, 3] = (codes[0, 2, 3] // 16 + 1) % 4 * 16 + codes[0, 2, 3] % 16  # new colour digit, same structure
    with torch.no_grad():
        diff = (vq.decoder(vq.quantize.lookup(codes.flatten()).view(1, 8, 8, 8).permute(0, 3, 1, 2))
                - vq.decoder(vq.quantize.lookup(recoloured.flatten()).view(1, 8, 8, 8).permute(0, 3, 1, 2))).abs()
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:12, 12:16] = True
    assert float(diff[0][:, inside].amax()) > 1e-4 and float(diff[0][:, ~inside].amax()) == 0.0
