"""Flow matching for the DiT: training helpers and a guided sampling loop over diffusers schedulers.

Our convention (MammothModa2 / Lumina-2): t = 0 is noise, t = 1 is data,

    x_t = t * x_data + (1 - t) * noise,        v = dx_t/dt = x_data - noise,

and the loss is the MSE between the decoder's output and v. Training times are logit-normal,
t = sigmoid(N(mean, std)), then shifted for resolution: t' = t / (m - m t + t) with
m = sqrt(num_patch_tokens) / 20 (m > 1 moves t towards noise, where large images need more work).

diffusers' flow schedulers (FlowMatchEulerDiscreteScheduler, ...) run sigma from 1 (noise) to 0
(data) with x_sigma = (1 - sigma) x_data + sigma noise, so sigma = 1 - t, their ``timesteps`` are
sigma * num_train_timesteps and the model output they expect is dx/dsigma = noise - x_data = -v.
:func:`sample_flow` does that translation in one place, so any of these schedulers can be swapped
in; :func:`euler_reference` is the same integration written by hand, for tests.

Guidance (:func:`guided_velocity`): classifier-free guidance ``u + s (c - u)``, limited to the part
of the trajectory inside ``cfg_range`` (in t), and dual guidance for edits,
``u + s_img (r - u) + s_txt (c - r)`` with r the branch that sees the reference image but not the
instruction.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from tuskml.plugins.mammoth2.configs_gen import GenerationInputError

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- training ------------------------------------------------------------------------------------------


def resolution_shift(num_patch_tokens: int, base: float = 20.0) -> float:
    """m = sqrt(tokens) / base; the reference uses base 20 for training (and sqrt(latent H*W)/40 = the same
    value at 2x2 patches for sampling)."""
    if num_patch_tokens <= 0:
        raise GenerationInputError(f"resolution_shift: num_patch_tokens must be positive, got {num_patch_tokens}")
    return math.sqrt(num_patch_tokens) / base


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = t / (m - m t + t): the flow-time form of sigma' = m sigma / (1 + (m - 1) sigma)."""
    return t / (shift - shift * t + t)


def sample_t(batch: int, *, shift: float | None = None, mean: float = 0.0, std: float = 1.0,
             generator: torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Logit-normal training times Float[batch] in (0, 1), optionally resolution-shifted."""
    if shift is not None and shift <= 0:
        raise GenerationInputError(f"sample_t: shift must be positive, got {shift}")
    z = torch.randn(batch, generator=generator, device=generator.device if generator is not None else device)
    t = torch.sigmoid(z * std + mean)
    if device is not None:
        t = t.to(device)
    return t if shift is None else shift_time(t, shift)


def _expand_t(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if t.dim() != 1 or t.shape[0] != like.shape[0]:
        raise GenerationInputError(f"flow matching: t must be Float[{like.shape[0]}], got {tuple(t.shape)}")
    return t.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def interpolate(x_data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * x_data + (1 - t) * noise."""
    if x_data.shape != noise.shape:
        raise GenerationInputError(f"flow matching: data {tuple(x_data.shape)} and noise {tuple(noise.shape)} differ")
    tt = _expand_t(t, x_data)
    return tt * x_data + (1 - tt) * noise


def velocity_target(x_data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = x_data - noise (constant along the straight path)."""
    return x_data - noise


def flow_matching_loss(predicted_velocity: torch.Tensor, x_data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted and the target velocity (float32)."""
    target = velocity_target(x_data, noise)
    if predicted_velocity.shape != target.shape:
        raise GenerationInputError(
            f"flow matching loss: prediction {tuple(predicted_velocity.shape)} vs target {tuple(target.shape)}"
        )
    return F.mse_loss(predicted_velocity.float(), target.float())


# --- sampling ------------------------------------------------------------------------------------------


def uniform_times(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The step grid t_0 = 0 < ... < t_steps = 1 (uniform, then :func:`shift_time`)."""
    if steps < 1:
        raise GenerationInputError(f"sampling: steps must be >= 1, got {steps}")
    return shift_time(torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64), shift).float()


def euler_reference(velocity_fn: VelocityFn, noise: torch.Tensor, *, steps: int, shift: float = 1.0) -> torch.Tensor:
    """Hand-written Euler integration of dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data)."""
    times = uniform_times(steps, shift)
    x = noise
    for i in range(steps):
        t = times[i].expand(x.shape[0]).to(x.device)
        x = x + (times[i + 1] - times[i]).item() * velocity_fn(x, t)
    return x


def default_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler()


def _prepare_scheduler(scheduler, steps: int, shift: float, device: torch.device):
    """Set the scheduler's timesteps to our grid (sigma = 1 - t), shifted by ``shift`` where it can be."""
    params = inspect.signature(scheduler.set_timesteps).parameters
    kwargs = {}
    config = scheduler.config
    if "sigmas" in params:
        # uniform sigmas 1 .. 1/steps; the scheduler appends the final 0 and applies its shift
        kwargs["sigmas"] = (1.0 - torch.linspace(0.0, 1.0, steps + 1)[:-1]).tolist()
    if getattr(config, "use_dynamic_shifting", False):
        if "mu" not in params:
            raise GenerationInputError(f"{type(scheduler).__name__}: dynamic shifting without a 'mu' argument")
        if getattr(config, "time_shift_type", "exponential") == "exponential":
            kwargs["mu"] = math.log(shift)  # exp(mu) / (exp(mu) + 1/sigma - 1) == the shift above
        else:
            kwargs["mu"] = shift  # linear: mu / (mu + 1/sigma - 1)
    elif hasattr(scheduler, "set_shift"):
        scheduler.set_shift(shift)
    elif shift != 1.0:
        raise GenerationInputError(
            f"{type(scheduler).__name__} cannot take a time shift of {shift}; configure its own shift and pass shift=1.0"
        )
    if "sigmas" in kwargs:
        scheduler.set_timesteps(device=device, **kwargs)
    else:
        scheduler.set_timesteps(steps, device=device, **kwargs)


@torch.no_grad()
def sample_flow(velocity_fn: VelocityFn, noise: torch.Tensor, *, steps: int = 50, shift: float = 1.0,
                scheduler=None, callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Integrate from noise (t = 0) to data (t = 1) with a diffusers flow-matching scheduler.

    ``velocity_fn(x_t, t)`` returns our velocity (x_data - noise) for Float[B] times t. ``scheduler``
    defaults to a fresh FlowMatchEulerDiscreteScheduler; a given one is copied, never mutated.
    ``shift`` is the sampling time shift m (reference: sqrt(latent H * W) / 40).
    """
    scheduler = copy.deepcopy(scheduler) if scheduler is not None else default_scheduler()
    _prepare_scheduler(scheduler, steps, shift, noise.device)
    train_steps = scheduler.config.num_train_timesteps
    x = noise
    for i, timestep in enumerate(scheduler.timesteps):
        sigma = timestep.float() / train_steps
        t = (1.0 - sigma).clamp(0.0, 1.0).expand(x.shape[0]).to(x.device)  # float32 sigma can overshoot 1
        v = velocity_fn(x, t)
        x = scheduler.step(-v, timestep, x, return_dict=False)[0]  # scheduler wants dx/dsigma = -v
        if callback is not None:
            callback(i, t, x)
    return x


# --- guidance ------------------------------------------------------------------------------------------


def in_cfg_range(t: torch.Tensor, cfg_range: tuple[float, float]) -> bool:
    """Whether guidance applies at flow time t (all samples share it); cfg_range is (t_lo, t_hi)."""
    lo, hi = cfg_range
    value = float(t.reshape(-1)[0])
    return lo <= value <= hi


def _pad_cond(conds: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate condition batches of different lengths along the batch, padding with masked zeros."""
    length = max(c.shape[1] for c in conds)
    out_c, out_m = [], []
    for c, m in zip(conds, masks):
        pad = length - c.shape[1]
        out_c.append(F.pad(c, (0, 0, 0, pad)))
        out_m.append(F.pad(m, (0, pad), value=False))
    return torch.cat(out_c), torch.cat(out_m)


def _batch_like(name: str, cond: torch.Tensor, mask: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    if cond.shape[0] == batch:
        return cond, mask
    if cond.shape[0] == 1:
        return cond.expand(batch, -1, -1), mask.expand(batch, -1)
    raise GenerationInputError(f"guidance: {name} has batch {cond.shape[0]}, expected {batch} or 1")


def guided_velocity(decoder, *, cond: torch.Tensor, cond_mask: torch.Tensor,
                    uncond: torch.Tensor | None = None, uncond_mask: torch.Tensor | None = None,
                    ref_latents: list[torch.Tensor] | None = None, guidance_scale: float = 1.0,
                    image_guidance_scale: float = 1.0, cfg_range: tuple[float, float] = (0.0, 1.0)) -> VelocityFn:
    """A ``velocity_fn(x_t, t)`` that calls ``decoder`` with (dual) classifier-free guidance.

    * no guidance (scales 1, or t outside ``cfg_range``): the conditional branch only;
    * text CFG: u + s (c - u); with references both branches see them, so u is the image-only branch;
    * dual (references given and ``image_guidance_scale != 1``): u + s_img (r - u) + s_txt (c - r), where
      u sees neither instruction nor image, r only the image, c both.
    Branches that take the same reference images run as one batched decoder call.
    """
    refs = list(ref_latents or [])
    dual = bool(refs) and image_guidance_scale != 1.0
    needs_uncond = guidance_scale != 1.0 or dual
    if needs_uncond and (uncond is None or uncond_mask is None):
        raise GenerationInputError("guidance: guidance_scale/image_guidance_scale != 1 needs uncond and uncond_mask")
    lo, hi = cfg_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise GenerationInputError(f"guidance: cfg_range must satisfy 0 <= lo <= hi <= 1, got {cfg_range}")

    def velocity_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        c, cm = _batch_like("cond", cond, cond_mask, batch)
        if not needs_uncond or not in_cfg_range(t, cfg_range):
            return decoder(x, t, c, cm, refs or None)
        u, um = _batch_like("uncond", uncond, uncond_mask, batch)
        both_c, both_m = _pad_cond([c, u], [cm, um])
        with_refs = [torch.cat([r, r]) for r in refs] or None
        v_cond, v_second = decoder(torch.cat([x, x]), torch.cat([t, t]), both_c, both_m, with_refs).chunk(2)
        if not dual:
            return v_second + guidance_scale * (v_cond - v_second)
        v_ref = v_second
        v_uncond = decoder(x, t, u, um, None)
        return v_uncond + image_guidance_scale * (v_ref - v_uncond) + guidance_scale * (v_cond - v_ref)

    return velocity_fn


def sample_with_guidance(decoder, noise: torch.Tensor, *, cond: torch.Tensor, cond_mask: torch.Tensor,
                         uncond: torch.Tensor | None = None, uncond_mask: torch.Tensor | None = None,
                         ref_latents: list[torch.Tensor] | None = None, steps: int = 50, guidance_scale: float = 1.0,
                         image_guidance_scale: float = 1.0, cfg_range: tuple[float, float] = (0.0, 1.0),
                         shift: float | None = None, scheduler=None) -> torch.Tensor:
    """Generate latents: :func:`guided_velocity` driven by :func:`sample_flow`.

    ``shift`` None uses the reference's sqrt(latent H * W) / 40 for this latent size.
    """
    if shift is None:
        shift = math.sqrt(noise.shape[-2] * noise.shape[-1]) / 40.0
    fn = guided_velocity(decoder, cond=cond, cond_mask=cond_mask, uncond=uncond, uncond_mask=uncond_mask,
                         ref_latents=ref_latents, guidance_scale=guidance_scale,
                         image_guidance_scale=image_guidance_scale, cfg_range=cfg_range)
    return sample_flow(fn, noise, steps=steps, shift=shift, scheduler=scheduler)
