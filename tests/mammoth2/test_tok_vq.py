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
])
def test_product_quantisation_config_errors(fields, message):
    from tuskml.plugins.mammoth2.configs_ar import VQTokenizerConfig

    with pytest.raises(ValueError, match=message):
        VQTokenizerConfig(**fields)
