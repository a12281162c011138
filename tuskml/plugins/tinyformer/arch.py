"""One architecture of the ``tinyformer-hybrid`` space, and how to draw, mutate and cross them.

An :class:`HybridArch` is plain data (ints and tuples) so it is hashable (for caching), JSON-able
(for ``result.json`` and the search history) and independent of torch. Per-stage tuples always have
one entry per stage; entries a stage does not use are normalised (``canonical``) so two archs that
build the same network compare equal.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from tuskml.core.errors import TuskmlError
from tuskml.plugins.tinyformer.configs import TinyformerHybridConfig


class SearchSpaceError(TuskmlError):
    """A search-space config or an architecture that does not fit the space (names the field)."""


@attrs.frozen(kw_only=True)
class HybridArch:
    """Choices for every elastic dimension.

    ``kernels[s][b]`` / ``expands[s][b]``: MBConv block ``b`` of stage ``s`` (``max(depth_choices)``
    entries, the first ``depths[s]`` used). Stage ``s >= transformer_start`` runs its first MBConv
    block then a MobileViT block with ``embed_dims[s]``, ``heads[s]``, ``mlp_ratios[s]``,
    ``vit_depths[s]`` transformer layers.
    """

    resolution: int
    width_mult: float
    transformer_start: int
    depths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[int, ...], ...]
    embed_dims: tuple[int, ...]
    heads: tuple[int, ...]
    mlp_ratios: tuple[int, ...]
    vit_depths: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def is_vit_stage(self, s: int) -> bool:
        return s >= self.transformer_start

    def mbconv_depth(self, s: int) -> int:
        return 1 if self.is_vit_stage(s) else self.depths[s]

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(map(list, v)) if k in ("kernels", "expands") else list(v) if isinstance(v, tuple) else v)
                for k, v in attrs.asdict(self, recurse=False).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HybridArch:
        try:
            return cls(
                resolution=int(data["resolution"]), width_mult=float(data["width_mult"]),
                transformer_start=int(data["transformer_start"]),
                depths=tuple(int(v) for v in data["depths"]),
                kernels=tuple(tuple(int(v) for v in row) for row in data["kernels"]),
                expands=tuple(tuple(int(v) for v in row) for row in data["expands"]),
                embed_dims=tuple(int(v) for v in data["embed_dims"]), heads=tuple(int(v) for v in data["heads"]),
                mlp_ratios=tuple(int(v) for v in data["mlp_ratios"]),
                vit_depths=tuple(int(v) for v in data["vit_depths"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchSpaceError(f"not a tinyformer-hybrid arch: {exc!r} in {data!r}") from exc

    def short(self) -> str:
        """A compact human-readable summary (for progress lines and plots)."""
        parts = [f"r{self.resolution}", f"w{self.width_mult:g}"]
        for s in range(self.num_stages):
            if self.is_vit_stage(s):
                parts.append(f"V(e{self.embed_dims[s]}h{self.heads[s]}m{self.mlp_ratios[s]}L{self.vit_depths[s]})")
            else:
                blocks = ",".join(f"k{self.kernels[s][b]}e{self.expands[s][b]}" for b in range(self.depths[s]))
                parts.append(f"M[{blocks}]")
        return " ".join(parts)


@attrs.frozen
class CandidateSpace:
    """A coarse sub-space for SuperNAS: width multiplier and resolution fixed, the rest elastic."""

    width_mult: float
    resolution: int

    @property
    def label(self) -> str:
        return f"w{self.width_mult:g}-r{self.resolution}"


def validate_space(cfg: TinyformerHybridConfig) -> None:
    """Raise :class:`SearchSpaceError` naming the field if ``cfg`` cannot build every subnet."""
    n = len(cfg.stage_channels)
    if len(cfg.stage_strides) != n:
        raise SearchSpaceError(f"stage_strides has {len(cfg.stage_strides)} entries but stage_channels has {n}")
    if any(t < 0 or t > n - 1 for t in cfg.transformer_starts):
        raise SearchSpaceError(f"transformer_starts {cfg.transformer_starts} must be stage indices in [0, {n - 1}] "
                               f"(at least the last stage is a transformer stage)")
    for e in cfg.embed_dims:
        bad = [h for h in cfg.head_choices if e % h]
        if bad:
            raise SearchSpaceError(f"embed_dims entry {e} is not divisible by head_choices {bad}")
    stride = 2
    for s in range(n):
        stride *= cfg.stage_strides[s]
        if s >= min(cfg.transformer_starts):
            for r in cfg.resolutions:
                if r % (stride * cfg.patch_size):
                    raise SearchSpaceError(
                        f"resolution {r} gives a feature map of {r / stride:g} pixels at transformer stage {s}, "
                        f"not divisible by patch_size {cfg.patch_size}; use resolutions divisible by "
                        f"{stride * cfg.patch_size}")
    if any(k % 2 == 0 for k in cfg.kernel_choices):
        raise SearchSpaceError(f"kernel_choices must be odd, got {cfg.kernel_choices}")


def _choice(rng: random.Random, values: tuple) -> Any:
    return values[rng.randrange(len(values))]


def canonical(arch: HybridArch, cfg: TinyformerHybridConfig) -> HybridArch:
    """Normalise unused entries (blocks past the depth, ViT fields of conv stages ...)."""
    n = len(cfg.stage_channels)
    dmax = max(cfg.depth_choices)
    kmin, emin = min(cfg.kernel_choices), min(cfg.expand_choices)
    depths, kernels, expands, embeds, heads, mlps, vds = [], [], [], [], [], [], []
    for s in range(n):
        vit = s >= arch.transformer_start
        d = 1 if vit else arch.depths[s]
        depths.append(d)
        kernels.append(tuple(arch.kernels[s][b] if b < d else kmin for b in range(dmax)))
        expands.append(tuple(arch.expands[s][b] if b < d else emin for b in range(dmax)))
        embeds.append(arch.embed_dims[s] if vit else 0)
        heads.append(arch.heads[s] if vit else 0)
        mlps.append(arch.mlp_ratios[s] if vit else 0)
        vds.append(arch.vit_depths[s] if vit else 0)
    return attrs.evolve(arch, depths=tuple(depths), kernels=tuple(kernels), expands=tuple(expands),
                        embed_dims=tuple(embeds), heads=tuple(heads), mlp_ratios=tuple(mlps), vit_depths=tuple(vds))


def check_arch(arch: HybridArch, cfg: TinyformerHybridConfig) -> None:
    """Raise :class:`SearchSpaceError` naming the first choice that is not in the space."""
    n = len(cfg.stage_channels)
    if arch.num_stages != n:
        raise SearchSpaceError(f"arch has {arch.num_stages} stages, the space has {n}")
    checks = [("resolution", arch.resolution, cfg.resolutions), ("width_mult", arch.width_mult, cfg.width_mults),
              ("transformer_start", arch.transformer_start, cfg.transformer_starts)]
    for s in range(n):
        if arch.is_vit_stage(s):
            checks += [(f"embed_dims[{s}]", arch.embed_dims[s], cfg.embed_dims),
                       (f"heads[{s}]", arch.heads[s], cfg.head_choices),
                       (f"mlp_ratios[{s}]", arch.mlp_ratios[s], cfg.mlp_ratios),
                       (f"vit_depths[{s}]", arch.vit_depths[s], cfg.transformer_depths)]
        else:
            checks.append((f"depths[{s}]", arch.depths[s], cfg.depth_choices))
        for b in range(arch.mbconv_depth(s)):
            checks += [(f"kernels[{s}][{b}]", arch.kernels[s][b], cfg.kernel_choices),
                       (f"expands[{s}][{b}]", arch.expands[s][b], cfg.expand_choices)]
    for name, value, allowed in checks:
        if value not in allowed:
            raise SearchSpaceError(f"arch {name} = {value!r} is not in the space's choices {allowed}")


def sample_arch(cfg: TinyformerHybridConfig, rng: random.Random, candidate: CandidateSpace | None = None) -> HybridArch:
    """A uniformly random arch (width and resolution fixed by ``candidate`` when given)."""
    n = len(cfg.stage_channels)
    dmax = max(cfg.depth_choices)
    arch = HybridArch(
        resolution=candidate.resolution if candidate else _choice(rng, cfg.resolutions),
        width_mult=candidate.width_mult if candidate else _choice(rng, cfg.width_mults),
        transformer_start=_choice(rng, cfg.transformer_starts),
        depths=tuple(_choice(rng, cfg.depth_choices) for _ in range(n)),
        kernels=tuple(tuple(_choice(rng, cfg.kernel_choices) for _ in range(dmax)) for _ in range(n)),
        expands=tuple(tuple(_choice(rng, cfg.expand_choices) for _ in range(dmax)) for _ in range(n)),
        embed_dims=tuple(_choice(rng, cfg.embed_dims) for _ in range(n)),
        heads=tuple(_choice(rng, cfg.head_choices) for _ in range(n)),
        mlp_ratios=tuple(_choice(rng, cfg.mlp_ratios) for _ in range(n)),
        vit_depths=tuple(_choice(rng, cfg.transformer_depths) for _ in range(n)))
    return canonical(arch, cfg)


def extreme_arch(cfg: TinyformerHybridConfig, largest: bool, candidate: CandidateSpace | None = None) -> HybridArch:
    """The largest (or smallest) arch: the two ends of the sandwich rule."""
    pick = max if largest else min
    n = len(cfg.stage_channels)
    dmax = max(cfg.depth_choices)
    arch = HybridArch(
        resolution=candidate.resolution if candidate else pick(cfg.resolutions),
        width_mult=candidate.width_mult if candidate else pick(cfg.width_mults),
        # more convolution stages before the transformer is the "larger" network
        transformer_start=pick(cfg.transformer_starts),
        depths=(pick(cfg.depth_choices),) * n,
        kernels=((pick(cfg.kernel_choices),) * dmax,) * n,
        expands=((pick(cfg.expand_choices),) * dmax,) * n,
        embed_dims=(pick(cfg.embed_dims),) * n,
        heads=(pick(cfg.head_choices),) * n,
        mlp_ratios=(pick(cfg.mlp_ratios),) * n,
        vit_depths=(pick(cfg.transformer_depths),) * n)
    return canonical(arch, cfg)


def mutate_arch(arch: HybridArch, cfg: TinyformerHybridConfig, rng: random.Random, prob: float,
                candidate: CandidateSpace | None = None) -> HybridArch:
    """Resample each choice with probability ``prob`` (width/resolution stay inside ``candidate``)."""
    fresh = sample_arch(cfg, rng, candidate)

    def maybe(old: Any, new: Any) -> Any:
        return new if rng.random() < prob else old

    def per_stage(old: tuple, new: tuple) -> tuple:
        return tuple(maybe(o, v) for o, v in zip(old, new))

    mutated = HybridArch(
        resolution=maybe(arch.resolution, fresh.resolution), width_mult=maybe(arch.width_mult, fresh.width_mult),
        transformer_start=maybe(arch.transformer_start, fresh.transformer_start),
        depths=per_stage(arch.depths, fresh.depths),
        kernels=tuple(per_stage(o, v) for o, v in zip(arch.kernels, fresh.kernels)),
        expands=tuple(per_stage(o, v) for o, v in zip(arch.expands, fresh.expands)),
        embed_dims=per_stage(arch.embed_dims, fresh.embed_dims), heads=per_stage(arch.heads, fresh.heads),
        mlp_ratios=per_stage(arch.mlp_ratios, fresh.mlp_ratios), vit_depths=per_stage(arch.vit_depths, fresh.vit_depths))
    # a ViT stage that mutation turned on needs valid ViT fields: take them from the fresh sample
    mutated = attrs.evolve(mutated, embed_dims=tuple(m or _choice(rng, cfg.embed_dims) for m in mutated.embed_dims),
                           heads=tuple(m or _choice(rng, cfg.head_choices) for m in mutated.heads),
                           mlp_ratios=tuple(m or _choice(rng, cfg.mlp_ratios) for m in mutated.mlp_ratios),
                           vit_depths=tuple(m or _choice(rng, cfg.transformer_depths) for m in mutated.vit_depths))
    return canonical(mutated, cfg)


def crossover_arch(a: HybridArch, b: HybridArch, cfg: TinyformerHybridConfig, rng: random.Random) -> HybridArch:
    """Each top-level choice and each stage's choices from ``a`` or ``b`` at random."""
    pick = lambda x, y: x if rng.random() < 0.5 else y  # noqa: E731
    n = a.num_stages
    child = HybridArch(
        resolution=pick(a.resolution, b.resolution), width_mult=pick(a.width_mult, b.width_mult),
        transformer_start=pick(a.transformer_start, b.transformer_start),
        depths=tuple(pick(a.depths[s], b.depths[s]) for s in range(n)),
        kernels=tuple(pick(a.kernels[s], b.kernels[s]) for s in range(n)),
        expands=tuple(pick(a.expands[s], b.expands[s]) for s in range(n)),
        embed_dims=tuple(pick(a.embed_dims[s], b.embed_dims[s]) or max(a.embed_dims[s], b.embed_dims[s]) or cfg.embed_dims[0]
                         for s in range(n)),
        heads=tuple(pick(a.heads[s], b.heads[s]) or max(a.heads[s], b.heads[s]) or cfg.head_choices[0] for s in range(n)),
        mlp_ratios=tuple(pick(a.mlp_ratios[s], b.mlp_ratios[s]) or max(a.mlp_ratios[s], b.mlp_ratios[s]) or cfg.mlp_ratios[0]
                         for s in range(n)),
        vit_depths=tuple(pick(a.vit_depths[s], b.vit_depths[s]) or max(a.vit_depths[s], b.vit_depths[s])
                         or cfg.transformer_depths[0] for s in range(n)))
    return canonical(child, cfg)


def candidate_spaces(cfg: TinyformerHybridConfig) -> list[CandidateSpace]:
    """Every (width multiplier, resolution) pair: the coarse spaces SuperNAS chooses among."""
    return [CandidateSpace(w, r) for w in cfg.width_mults for r in cfg.resolutions]


def restrict(cfg: TinyformerHybridConfig, candidate: CandidateSpace) -> TinyformerHybridConfig:
    """The space config with width and resolution fixed to ``candidate`` (what SuperNAS hands on)."""
    if candidate.width_mult not in cfg.width_mults or candidate.resolution not in cfg.resolutions:
        raise SearchSpaceError(f"candidate space {candidate.label} is not inside the space "
                               f"(width_mults {cfg.width_mults}, resolutions {cfg.resolutions})")
    return attrs.evolve(cfg, width_mults=(candidate.width_mult,), resolutions=(candidate.resolution,))


def make_divisible(value: float, divisor: int = 4, minimum: int = 4) -> int:
    """Round channel counts to multiples of ``divisor`` (int8 SIMD works on groups of 4)."""
    return max(minimum, int(value / divisor + 0.5) * divisor)
