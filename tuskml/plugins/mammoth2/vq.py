"""``vq``: trainable discrete visual tokenizer (the role of the reference's "MammothTok").

Encoder -> 1x1 projection to a low-dimensional code space -> L2 normalisation -> nearest code of an
L2-normalised codebook (cosine similarity) -> decoder. Low-dim, normalised codes keep the codebook
well used (the reference uses 8-d codes and 16,384 entries). Gradients cross the non-differentiable
lookup either by the *rotation trick* (the encoder output is rotated onto its code by a rotation
treated as a constant, so the gradient keeps the angle between output and code; Fifty et al. 2024)
or by the classic straight-through copy. The encoder here is convolutional (the reference's is a
ViT); the interface (``encode``/``decode``/``forward``) does not depend on that choice.

With ``num_codebooks`` > 1 the code vector is product-quantised (:class:`ProductCodebook`): each of
its groups has its own small codebook and a token is the mixed-radix number of the group codes;
``groups = "colour-structure"`` makes the two groups encode a patch's colour and its structure
(:class:`ColourStructureEncoder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from tuskml.core.errors import TuskmlError
from tuskml.plugins.mammoth2.colour_split import PatchColour, value_structure
from tuskml.plugins.mammoth2.configs_ar import VQTokenizerConfig


class VQInputError(TuskmlError, ValueError):
    """Images or codes that do not fit the visual tokenizer."""


@dataclass
class VQOutput:
    """``recon`` (unclamped), ``codes [B, h, w]``, ``loss`` = recon MSE + weighted commitment and
    codebook terms, and ``codebook_usage`` (fraction of codes used in this batch) / ``perplexity``."""

    recon: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    recon_loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    codebook_usage: torch.Tensor
    perplexity: torch.Tensor


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  _group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _widths(config: VQTokenizerConfig) -> list[int]:
    """Channel width at each resolution level: doubled after the first downsample, then constant."""
    return [config.hidden_channels * min(2**i, 2) for i in range(config.num_downsamples + 1)]


class VQEncoder(nn.Module):
    def __init__(self, config: VQTokenizerConfig):
        super().__init__()
        widths = _widths(config)
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, widths[0], 3, padding=1)]
        for level in range(config.num_downsamples):
            layers += [ResidualBlock(widths[level]) for _ in range(config.num_res_blocks)]
            layers.append(nn.Conv2d(widths[level], widths[level + 1], 4, stride=2, padding=1))
        layers += [ResidualBlock(widths[-1]) for _ in range(config.num_res_blocks)]
        layers += [_group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], config.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VQDecoder(nn.Module):
    def __init__(self, config: VQTokenizerConfig):
        super().__init__()
        widths = _widths(config)
        layers: list[nn.Module] = [nn.Conv2d(config.code_dim, widths[-1], 1)]
        layers += [ResidualBlock(widths[-1]) for _ in range(config.num_res_blocks)]
        for level in reversed(range(config.num_downsamples)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[level + 1], widths[level], 3, padding=1)]
            layers += [ResidualBlock(widths[level]) for _ in range(config.num_res_blocks)]
        layers += [_group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], config.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def rotation_trick(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Return ``q``'s value with gradients flowing to ``e`` through the rotation taking e onto q.

    ``e``, ``q``: ``[N, d]``, both unit length. With ``u = e/|e|`` and ``r = normalize(u + q)``, the
    Householder pair ``R = I - 2 r r^T + 2 q u^T`` maps ``u`` to ``q``; R (and the scale |q|/|e| = 1)
    is held constant, so ``d out / d e = R``.
    """
    u = e.detach()
    qd = q.detach()
    r = F.normalize(u + qd, dim=-1, eps=eps)
    return e - 2.0 * (e * r).sum(-1, keepdim=True) * r + 2.0 * (e * u).sum(-1, keepdim=True) * qd


class L2Codebook(nn.Module):
    """Cosine-similarity vector quantiser over an L2-normalised codebook ``[codebook_size, code_dim]``."""

    def __init__(self, codebook_size: int, code_dim: int, quantizer: str, restart_unused_after: int = 0):
        super().__init__()
        self.quantizer = quantizer
        self.restart_unused_after = restart_unused_after
        self.embedding = nn.Parameter(F.normalize(torch.randn(codebook_size, code_dim), dim=-1))
        # training steps since each code was last chosen (not saved: it only steers restarts)
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def _restart_dead_codes(self, e: torch.Tensor, codes: torch.Tensor) -> None:
        """Move codes unused for ``restart_unused_after`` training steps onto random current encoder
        outputs, so the codebook cannot collapse onto a few entries (which otherwise happens within
        tens of steps on small data). Uses the global torch RNG, so it is seeded like the rest."""
        used = torch.bincount(codes, minlength=self.embedding.shape[0]) > 0
        self.unused_steps += 1
        self.unused_steps[used] = 0
        dead = (self.unused_steps >= self.restart_unused_after).nonzero().flatten()
        if dead.numel():
            pick = torch.randint(0, e.shape[0], (dead.numel(),), device=e.device)
            self.embedding[dead] = e[pick].to(self.embedding.dtype)
            self.unused_steps[dead] = 0

    def normalized(self) -> torch.Tensor:
        return F.normalize(self.embedding, dim=-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.normalized())

    def nearest(self, e: torch.Tensor) -> torch.Tensor:
        """Ids of the closest codes to unit vectors ``e [N, d]``."""
        return (e @ self.normalized().t()).argmax(-1)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``e [N, d]`` unit vectors -> (quantised with gradient path, ids, commitment, codebook loss)."""
        codes = self.nearest(e.detach())
        if self.training and self.restart_unused_after > 0:
            self._restart_dead_codes(e.detach(), codes)
        q = self.lookup(codes)
        commitment = F.mse_loss(e, q.detach())
        codebook = F.mse_loss(q, e.detach())
        out = rotation_trick(e, q) if self.quantizer == "rotation" else e + (q - e).detach()
        return out, codes, commitment, codebook


def radices(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The place value of each digit of a mixed-radix token, first digit most significant."""
    return tuple(math.prod(sizes[g + 1:]) for g in range(len(sizes)))


def mixed_radix_digits(codes: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """Token ids ``[...]`` -> digits ``[..., len(sizes)]`` (``i * sizes[1] + j`` has digits ``(i, j)``)."""
    return torch.div(codes[..., None], codes.new_tensor(radices(sizes)), rounding_mode="floor") % codes.new_tensor(sizes)


class ProductCodebook(nn.Module):
    """Product quantiser: the code vector is split into equal groups (one per entry of ``sizes``), each
    L2-normalised and quantised by its own :class:`L2Codebook` of ``sizes[g]`` entries. The token is the
    mixed-radix number of the group codes, first group most significant (``i * sizes[1] + j`` for two
    groups), so the vocabulary is ``prod(sizes)`` while the groups learn only ``sum(sizes)`` vectors.
    Tokens share structure: all tokens with the same first digit share that group's vector, which lets a
    factorised AR head (``gen_head = "factorized"``) predict each digit on its own."""

    def __init__(self, sizes: tuple[int, ...], code_dim: int, quantizer: str, restart_unused_after: int = 0):
        super().__init__()
        self.num_codebooks = len(sizes)
        self.sizes = tuple(sizes)
        self.group_dim = code_dim // self.num_codebooks
        self.codebooks = nn.ModuleList(L2Codebook(size, self.group_dim, quantizer, restart_unused_after)
                                       for size in sizes)
        self.radix = radices(self.sizes)

    def _groups(self, e: torch.Tensor) -> torch.Tensor:
        return e.view(e.shape[0], self.num_codebooks, self.group_dim)

    def digits(self, codes: torch.Tensor) -> torch.Tensor:
        """Token ids ``[N]`` -> per-group code ids ``[N, num_codebooks]``."""
        return mixed_radix_digits(codes, self.sizes)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        d = self.digits(codes)
        return torch.cat([cb.lookup(d[:, g]) for g, cb in enumerate(self.codebooks)], dim=-1)

    def nearest(self, e: torch.Tensor) -> torch.Tensor:
        groups = self._groups(e)
        return sum(cb.nearest(groups[:, g]) * self.radix[g] for g, cb in enumerate(self.codebooks))

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        groups = self._groups(e)
        outs = [cb(groups[:, g]) for g, cb in enumerate(self.codebooks)]
        q = torch.cat([o[0] for o in outs], dim=-1)
        codes = sum(o[1] * self.radix[g] for g, o in enumerate(outs))
        commitment = torch.stack([o[2] for o in outs]).mean()
        codebook = torch.stack([o[3] for o in outs]).mean()
        return q, codes, commitment, codebook


class ColourStructureEncoder(nn.Module):
    """Encoder of ``groups = "colour-structure"``: ``[colour code vector, structure code vector]`` per
    patch, the colour from :class:`~tuskml.plugins.mammoth2.colour_split.PatchColour` and the
    structure from the usual convolutional encoder on
    :func:`~tuskml.plugins.mammoth2.colour_split.value_structure`, which cannot tell colours apart."""

    def __init__(self, config: VQTokenizerConfig):
        super().__init__()
        self.patch = 2**config.num_downsamples
        half = config.code_dim // 2
        self.colour = PatchColour(3, config.hidden_channels, half, self.patch)
        self.structure = VQEncoder(attrs.evolve(config, in_channels=1, code_dim=half, num_codebooks=1, groups="learned"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.colour(x), self.structure(value_structure(x, self.patch))], dim=1)


class ColourStructureDecoder(nn.Module):
    """Decoder of ``groups = "colour-structure"``: ``image = b + sum_k s_k * c_k``.

    ``s`` (``rank`` maps at full resolution) is decoded from the structure vectors alone by the usual
    convolutional decoder; ``c_k`` (an RGB colour per map) and ``b`` (an RGB offset) come from each
    patch's colour vector alone, by a 1x1 convolution, held constant over the patch. Being bilinear in
    the two groups, it renders a colour and a structure that were never seen together as well as it
    renders each of them with other partners (a plain decoder on both vectors need not).
    """

    def __init__(self, config: VQTokenizerConfig, rank: int = 2):
        super().__init__()
        self.patch = 2**config.num_downsamples
        self.rank = rank
        half = config.code_dim // 2
        self.structure = VQDecoder(attrs.evolve(config, in_channels=rank, code_dim=half, num_codebooks=1,
                                                groups="learned"))
        self.colour = nn.Sequential(nn.Conv2d(half, config.hidden_channels, 1), nn.SiLU(),
                                    nn.Conv2d(config.hidden_channels, 3 * (rank + 1), 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        half = z.shape[1] // 2
        s = self.structure(z[:, half:])  # [B, rank, H, W]
        c = F.interpolate(self.colour(z[:, :half]), scale_factor=self.patch, mode="nearest")
        b, h, w = s.shape[0], s.shape[2], s.shape[3]
        c = c.view(b, self.rank + 1, 3, h, w)
        return c[:, -1] + (s.unsqueeze(2) * c[:, :-1]).sum(1)


class VQTokenizer(nn.Module):
    """``encode(images) -> codes [B, h, w]``, ``decode(codes) -> images``, ``forward(images) -> VQOutput``.

    Images are float ``[B, C, H, W]`` in ``[-1, 1]`` with H and W divisible by ``2**num_downsamples``.
    """

    def __init__(self, config: VQTokenizerConfig | None = None):
        super().__init__()
        config = config or VQTokenizerConfig()
        self.config = config
        self.tuskml_config = config
        #: the radices of a token's digits, one per sub-codebook (``(codebook_size,)`` without product quantisation)
        self.codebook_factors = config.group_sizes
        #: tokens of the visual vocabulary (the product of the factors)
        self.codebook_size = math.prod(self.codebook_factors)
        self.code_dim = config.code_dim
        self.downsample = 2**config.num_downsamples
        self.encoder: nn.Module = ColourStructureEncoder(config) if config.groups == "colour-structure" else VQEncoder(config)
        self.quantize: L2Codebook | ProductCodebook
        if config.num_codebooks == 1:
            self.quantize = L2Codebook(config.codebook_size, config.code_dim, config.quantizer, config.restart_unused_after)
        else:
            self.quantize = ProductCodebook(self.codebook_factors, config.code_dim, config.quantizer,
                                            config.restart_unused_after)
        self.decoder: nn.Module = (ColourStructureDecoder(config) if config.groups == "colour-structure"
                                   else VQDecoder(config))

    def grid_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Code grid ``(h, w)`` of an image of ``image_size`` (int for square, or ``(H, W)``)."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if h % self.downsample or w % self.downsample or h <= 0 or w <= 0:
            raise VQInputError(f"image size {(h, w)} is not a positive multiple of the VQ downsampling {self.downsample}")
        return h // self.downsample, w // self.downsample

    def _check_images(self, images: torch.Tensor) -> None:
        c = self.config.in_channels
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != c or not images.is_floating_point():
            raise VQInputError(f"vq expects float images [B, {c}, H, W] in [-1, 1], got {tuple(getattr(images, 'shape', ()))}")
        self.grid_size((images.shape[2], images.shape[3]))

    def _unit_latents(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        z = self.encoder(images)
        b, d, h, w = z.shape
        g = self.config.num_codebooks  # each sub-codebook's group is a unit vector of its own
        e = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, g, d // g), dim=-1)
        return e.reshape(-1, d), (b, h, w)

    def _decode_vectors(self, q: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        b, h, w = shape
        return self.decoder(q.view(b, h, w, self.code_dim).permute(0, 3, 1, 2))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Code ids ``Long [B, h, w]``."""
        self._check_images(images)
        e, (b, h, w) = self._unit_latents(images)
        return self.quantize.nearest(e).view(b, h, w)

    @torch.no_grad()
    def encode_digit(self, images: torch.Tensor, digit: int) -> torch.Tensor:
        """Digit ``digit`` of the code ids (the code of sub-codebook ``digit``) ``Long [B, h, w]``.
        With ``groups = "colour-structure"`` the colour digit (0) comes from the colour branch alone,
        ~30x cheaper than :meth:`encode` on the tiny preset (it skips the convolutional structure encoder)."""
        if not 0 <= digit < len(self.codebook_factors):
            raise VQInputError(f"digit {digit} out of range: the codes have {len(self.codebook_factors)} digit(s)")
        if digit == 0 and isinstance(self.encoder, ColourStructureEncoder) and isinstance(self.quantize, ProductCodebook):
            self._check_images(images)
            z = self.encoder.colour(images)
            b, d, h, w = z.shape
            e = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, d), dim=-1)
            return self.quantize.codebooks[0].nearest(e).view(b, h, w)
        return mixed_radix_digits(self.encode(images), self.codebook_factors)[..., digit]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, h*f, w*f]`` clamped to ``[-1, 1]`` from code ids ``[B, h, w]``."""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.is_floating_point():
            raise VQInputError(f"decode expects integer codes [B, h, w], got {tuple(getattr(codes, 'shape', ()))}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise VQInputError(f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")
        q = self.quantize.lookup(codes.reshape(-1))
        return self._decode_vectors(q, tuple(codes.shape)).clamp(-1.0, 1.0)

    def forward(self, images: torch.Tensor) -> VQOutput:
        self._check_images(images)
        e, shape = self._unit_latents(images)
        q, codes, commitment, codebook = self.quantize(e)
        recon = self._decode_vectors(q, shape)
        recon_loss = F.mse_loss(recon, images)
        loss = recon_loss + self.config.commitment_weight * commitment + self.config.codebook_weight * codebook
        counts = torch.bincount(codes, minlength=self.codebook_size).float()
        probs = counts / counts.sum()
        usage = (counts > 0).float().mean()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum())
        return VQOutput(recon=recon, codes=codes.view(shape), loss=loss, recon_loss=recon_loss,
                        commitment_loss=commitment, codebook_loss=codebook, codebook_usage=usage,
                        perplexity=perplexity)

    def example_inputs(self) -> tuple[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        s = self.config.image_size
        return (torch.rand(2, self.config.in_channels, s, s, generator=g) * 2 - 1,)
