"""Flow matching: time convention, t sampling, diffusers scheduler loop vs a hand-written Euler loop, guidance."""

from __future__ import annotations

import math

import pytest
import torch

from tuskml.plugins.mammoth2.configs_gen import GenerationInputError
from tuskml.plugins.mammoth2.flow_matching import (
    euler_reference,
    flow_matching_loss,
    guided_velocity,
    interpolate,
    resolution_shift,
    sample_flow,
    sample_t,
    sample_with_guidance,
    shift_time,
    velocity_target,
)


def test_path_endpoints_and_velocity():
    x, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    assert torch.equal(interpolate(x, noise, torch.zeros(3)), noise)  # t = 0 is noise
    assert torch.equal(interpolate(x, noise, torch.ones(3)), x)  # t = 1 is data
    t = torch.tensor([0.2, 0.5, 0.9])
    eps = 1e-3
    derivative = (interpolate(x, noise, t + eps) - interpolate(x, noise, t)) / eps
    assert torch.allclose(derivative, velocity_target(x, noise), atol=1e-3)
    assert flow_matching_loss(x - noise, x, noise) == 0
    with pytest.raises(GenerationInputError):
        interpolate(x, noise, torch.zeros(2))


def test_sample_t_is_logit_normal_and_shifted():
    g = torch.Generator().manual_seed(0)
    t = sample_t(20000, generator=g)
    assert 0 < t.min() and t.max() < 1
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean()) < 0.05 and abs(logit.std() - 1) < 0.05
    g = torch.Generator().manual_seed(0)
    m = resolution_shift(64 * 64)  # sqrt(4096) / 20 = 3.2
    assert m == pytest.approx(3.2)
    shifted = sample_t(20000, generator=g, shift=m)
    assert torch.allclose(shifted, shift_time(t, m))
    assert shifted.mean() < t.mean() - 0.1  # m > 1 moves training towards noise (t = 0)
    # the flow-time shift is the scheduler's sigma shift with sigma = 1 - t
    sigma = 1 - t
    assert torch.allclose(1 - shift_time(t, m), m * sigma / (1 + (m - 1) * sigma), atol=1e-6)


def _nonlinear_velocity(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 4, generator=g) * 0.5

    def fn(x, t):
        return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x)) * (1 + t.view(-1, 1, 1, 1)) - 0.3 * x

    return fn


@pytest.mark.parametrize("shift", [1.0, 2.5, 0.4])
def test_diffusers_euler_scheduler_matches_hand_written_euler(shift):
    fn = _nonlinear_velocity()
    noise = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    times = []
    ours = sample_flow(fn, noise, steps=7, shift=shift, callback=lambda i, t, x: times.append(float(t[0])))
    reference = euler_reference(fn, noise, steps=7, shift=shift)
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
    assert times[0] == 0.0 and all(a < b for a, b in zip(times, times[1:]))  # t runs from noise up to data


def test_scheduler_with_dynamic_shifting_gives_the_same_grid():
    from diffusers import FlowMatchEulerDiscreteScheduler

    fn = _nonlinear_velocity(2)
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    ours = sample_flow(fn, noise, steps=5, shift=1.7, scheduler=scheduler)
    assert torch.allclose(ours, euler_reference(fn, noise, steps=5, shift=1.7), atol=1e-5)
    assert not hasattr(scheduler, "num_inference_steps")  # the given scheduler was copied, not mutated


def test_exact_flow_reaches_the_data_point():
    """For one data point the exact velocity is (x* - x) / (1 - t): a wrong sign or time flip diverges."""
    target = torch.randn(2, 3, 4, 4)
    fn = lambda x, t: (target - x) / (1 - t).view(-1, 1, 1, 1)  # noqa: E731
    out = sample_flow(fn, torch.randn(2, 3, 4, 4), steps=6, shift=3.0)
    assert torch.allclose(out, target, atol=1e-5)


def test_other_diffusers_flow_scheduler_can_be_swapped_in():
    from diffusers import FlowMatchHeunDiscreteScheduler

    noise, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    calls = []

    def constant(x, t):  # straight-line flow: any integrator lands on noise + v
        calls.append(float(t[0]))
        return target - noise

    out = sample_flow(constant, noise, steps=4, scheduler=FlowMatchHeunDiscreteScheduler())
    assert torch.allclose(out, target, atol=1e-4)
    assert len(calls) == 7  # Heun: two evaluations per step except the last
    with pytest.raises(GenerationInputError, match="shift"):
        sample_flow(constant, noise, steps=4, shift=2.0, scheduler=FlowMatchHeunDiscreteScheduler())


class FakeDecoder:
    """v = sum of real condition values + 10 if reference images are given (per sample)."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond, cond_mask, refs=None):
        self.calls.append((x.shape[0], refs is not None))
        value = (cond[..., 0] * cond_mask).sum(1) + (10.0 if refs else 0.0)
        return value.view(-1, 1, 1, 1).expand_as(x).clone()


def _conds():
    cond, cond_mask = torch.ones(2, 2, 1), torch.ones(2, 2, dtype=torch.bool)  # value 2
    uncond, uncond_mask = torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool)  # value 0
    return dict(cond=cond, cond_mask=cond_mask, uncond=uncond, uncond_mask=uncond_mask)


def test_classifier_free_guidance_and_cfg_range():
    dec = FakeDecoder()
    x = torch.zeros(2, 1, 2, 2)
    fn = guided_velocity(dec, **_conds(), guidance_scale=4.0, cfg_range=(0.0, 0.5))
    assert torch.allclose(fn(x, torch.full((2,), 0.25)), torch.full_like(x, 0 + 4.0 * (2 - 0)))
    assert dec.calls == [(4, False)]  # both branches in one batched call
    assert torch.allclose(fn(x, torch.full((2,), 0.75)), torch.full_like(x, 2.0))  # outside cfg_range: cond only
    assert dec.calls[-1] == (2, False)
    # with a reference image and image scale 1, the unconditional branch keeps the reference
    ref = [torch.zeros(2, 1, 2, 2)]
    fn = guided_velocity(dec, **_conds(), ref_latents=ref, guidance_scale=3.0)
    assert torch.allclose(fn(x, torch.full((2,), 0.5)), torch.full_like(x, 10 + 3.0 * (12 - 10)))


def test_dual_guidance_for_edits():
    dec = FakeDecoder()
    x = torch.zeros(2, 1, 2, 2)
    fn = guided_velocity(dec, **_conds(), ref_latents=[torch.zeros(2, 1, 2, 2)], guidance_scale=5.0,
                         image_guidance_scale=1.5)
    # u = 0 (no text, no image), r = 10 (image only), c = 12 (both)
    assert torch.allclose(fn(x, torch.full((2,), 0.5)), torch.full_like(x, 0 + 1.5 * (10 - 0) + 5.0 * (12 - 10)))
    assert sorted(dec.calls) == [(2, False), (4, True)]


def test_guidance_errors():
    with pytest.raises(GenerationInputError, match="uncond"):
        guided_velocity(FakeDecoder(), cond=torch.ones(1, 1, 1), cond_mask=torch.ones(1, 1, dtype=torch.bool),
                        guidance_scale=2.0)
    with pytest.raises(GenerationInputError, match="cfg_range"):
        guided_velocity(FakeDecoder(), **_conds(), guidance_scale=2.0, cfg_range=(0.8, 0.2))


@pytest.mark.parametrize("decoder", ["mammoth2-dit", "lumina2"])
def test_sample_with_guidance_runs_either_decoder(decoder):
    import tuskml

    torch.manual_seed(0)
    dit = tuskml.create("decoder", decoder).eval()
    x_t, _, cond, cond_mask, refs = dit.example_inputs()
    kwargs = dict(cond=cond, cond_mask=cond_mask, uncond=torch.zeros(1, 1, 32),
                  uncond_mask=torch.ones(1, 1, dtype=torch.bool), ref_latents=refs, steps=3,
                  guidance_scale=4.0, image_guidance_scale=2.0, cfg_range=(0.0, 0.8))
    out = sample_with_guidance(dit, x_t, **kwargs)
    assert out.shape == x_t.shape and torch.isfinite(out).all()
    assert torch.equal(out, sample_with_guidance(dit, x_t, **kwargs))  # deterministic
    assert math.isclose(float(shift_time(torch.tensor(0.5), 1.0)), 0.5)
