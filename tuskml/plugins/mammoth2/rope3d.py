"""3-axis rotary position embedding for the single-stream DiT's in-context sequence.

Every token gets three integer coordinates (a "time"/sequence axis, a row axis and a column axis);
the head dimension is split into three parts, one rotated by each coordinate. The layout follows
Lumina-2 / OmniGen2 so that one sequence can hold text and several images without ambiguity:

* condition (text / Q-Former) token i:         (i, i, i)           for the i-th *real* token
* reference image k of h x w patches:          (shift_k, row, col) with shift_0 = number of real
                                                condition tokens, shift_{k+1} = shift_k + max(h, w)
* target (noisy) latent:                       (shift_K, row, col) after the last reference image

Padded condition tokens get (0, 0, 0): they are masked as keys, and positions count only real
tokens, so padding never moves anything else (which the padding-invariance test relies on).
"""

from __future__ import annotations

import torch
from torch import nn


def condition_position_ids(cond_mask: torch.Tensor) -> torch.Tensor:
    """Long[B, L, 3]: (i, i, i) for the i-th real condition token, zeros at padding."""
    real = cond_mask.long()
    index = (real.cumsum(dim=1) - 1).clamp_min(0) * real
    return index.unsqueeze(-1).expand(*index.shape, 3).contiguous()


def image_position_ids(shift: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Long[B, height*width, 3]: (shift_b, row, col) for a row-major grid of patches."""
    rows = torch.arange(height, device=shift.device).repeat_interleave(width)
    cols = torch.arange(width, device=shift.device).repeat(height)
    batch = shift.shape[0]
    ids = torch.empty(batch, height * width, 3, dtype=torch.long, device=shift.device)
    ids[:, :, 0] = shift.long().unsqueeze(1)
    ids[:, :, 1] = rows
    ids[:, :, 2] = cols
    return ids


def sequence_position_ids(
    cond_mask: torch.Tensor, image_grids: list[tuple[int, int]]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Position ids of [condition | image_0 | ... | image_n] (reference images first, target last).

    Returns the condition ids [B, L, 3] and one [B, h*w, 3] tensor per image grid (in patches).
    """
    cond_ids = condition_position_ids(cond_mask)
    shift = cond_mask.long().sum(dim=1)
    image_ids = []
    for height, width in image_grids:
        image_ids.append(image_position_ids(shift, height, width))
        shift = shift + max(height, width)
    return cond_ids, image_ids


class RotaryEmbedding3D(nn.Module):
    """Position ids [B, S, 3] -> unit complex rotations [B, S, head_dim / 2], one frequency band per axis."""

    def __init__(self, axes_dim: tuple[int, int, int], theta: float = 10000.0):
        super().__init__()
        self.axes_dim = tuple(int(a) for a in axes_dim)
        self.theta = float(theta)
        for axis, dim in enumerate(self.axes_dim):
            inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
            # not persistent: derived from the config, so checkpoints stay weight-only
            self.register_buffer(f"inv_freq_{axis}", inv_freq.float(), persistent=False)

    @property
    def head_dim(self) -> int:
        return sum(self.axes_dim)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        angles = [
            position_ids[..., axis, None].float() * getattr(self, f"inv_freq_{axis}")
            for axis in range(len(self.axes_dim))
        ]
        angle = torch.cat(angles, dim=-1)
        return torch.polar(torch.ones_like(angle), angle)


def apply_rotary(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` [B, heads, S, head_dim] by complex ``rotations`` [B, S, head_dim/2].

    One complex multiply (in float32) instead of cos/sin arithmetic on strided halves: about 4x faster
    forward + backward on a CPU and it saves fewer tensors for backward.
    """
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotations.unsqueeze(1)).flatten(-2).to(x.dtype)
