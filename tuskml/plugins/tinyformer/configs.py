"""Configs of the tinyformer NAS components (datasets, search space, search strategies).

Torch-free on purpose: ``tuskml plugins list`` and ``tuskml --help`` import this module. Every
default builds a toy-sized component instantly; the CLI and benchmarks pass bigger budgets.
"""

from __future__ import annotations

from typing import Literal

import attrs

from tuskml.core.config import DatasetConfig, SearchSpaceConfig, SearchStrategyConfig, config_class

_ge0 = attrs.validators.ge(0)
_ge1 = attrs.validators.ge(1)


def _fraction(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1), got {value}")


def _nonempty_positive(instance: object, attribute: attrs.Attribute, value: tuple) -> None:
    if not value or any(v <= 0 for v in value):
        raise ValueError(f"{attribute.name} must be a non-empty tuple of positive numbers, got {value}")


def _sparsities(instance: object, attribute: attrs.Attribute, value: tuple) -> None:
    if not value or any(not 0.0 <= v < 1.0 for v in value):
        raise ValueError(f"{attribute.name} must be a non-empty tuple of fractions in [0, 1), got {value}")


# --- datasets ------------------------------------------------------------------------------------


@config_class
class DigitsDatasetConfig(DatasetConfig):
    """scikit-learn's bundled 8x8 handwritten digits (1797 real images, 10 classes).

    The fixed split holds out ``test_fraction`` of the images per class (stratified, ``seed``).
    ``pad`` zero pixels are added around the 8x8 image, then it is resized (bilinear) to
    ``resolution``; ``channels`` 1 (grey) or 3 (grey repeated, for RGB-shaped models).
    """

    split: Literal["train", "test"] = "train"
    resolution: int = attrs.field(default=16, validator=attrs.validators.ge(8))
    pad: int = attrs.field(default=0, validator=_ge0)
    channels: Literal[1, 3] = 1
    test_fraction: float = attrs.field(default=0.25, validator=_fraction)
    seed: int = 0


@config_class
class ShapesClsDatasetConfig(DatasetConfig):
    """Procedural 32x32 RGB shape classification (10 classes, CIFAR-10-like in form), seeded.

    Train and test draw from different seeds derived from ``seed``, so they never share an image.
    """

    split: Literal["train", "test"] = "train"
    num_samples: int = attrs.field(default=256, validator=_ge1)
    resolution: int = attrs.field(default=32, validator=attrs.validators.ge(16))
    noise: float = attrs.field(default=0.08, validator=_ge0)
    seed: int = 0


@config_class
class Cifar10DatasetConfig(DatasetConfig):
    """CIFAR-10 from the standard python-pickle folder (``data_batch_1..5``, ``test_batch``).

    Nothing is downloaded: ``root`` must already hold the extracted ``cifar-10-batches-py`` folder.
    The files are read on first access, so a missing folder is reported when the data is needed.
    ``limit`` (0 = all) keeps only the first images, for quick runs.
    """

    root: str = "data/cifar-10-batches-py"
    split: Literal["train", "test"] = "train"
    limit: int = attrs.field(default=0, validator=_ge0)


# --- search space --------------------------------------------------------------------------------


@config_class
class TinyformerHybridConfig(SearchSpaceConfig):
    """The ``tinyformer-hybrid`` weight-sharing supernet: MBConv stages, then MobileViT stages.

    Stage ``s`` is a MobileViT stage (first MBConv block with the stage's stride, then one MobileViT
    block: local conv, unfold to patches, ``transformer_depths`` transformer layers, fold, fuse) when
    ``s >= transformer_start``; otherwise it is ``depth`` MBConv blocks. All ``*_choices`` tuples are
    the elastic dimensions; the largest value of each sizes the shared weights.
    """

    in_channels: int = attrs.field(default=1, validator=_ge1)
    num_classes: int = attrs.field(default=10, validator=attrs.validators.ge(2))
    stem_channels: int = attrs.field(default=8, validator=_ge1)
    stage_channels: tuple[int, ...] = attrs.field(default=(8, 16, 24, 32), validator=_nonempty_positive)
    stage_strides: tuple[int, ...] = attrs.field(default=(1, 2, 2, 1), validator=_nonempty_positive)
    head_channels: int = attrs.field(default=64, validator=_ge1)
    patch_size: int = attrs.field(default=2, validator=_ge1)
    resolutions: tuple[int, ...] = attrs.field(default=(16, 32, 48), validator=_nonempty_positive)
    width_mults: tuple[float, ...] = attrs.field(default=(0.5, 0.75, 1.0), validator=_nonempty_positive)
    depth_choices: tuple[int, ...] = attrs.field(default=(1, 2, 3), validator=_nonempty_positive)
    kernel_choices: tuple[int, ...] = attrs.field(default=(3, 5), validator=_nonempty_positive)
    expand_choices: tuple[int, ...] = attrs.field(default=(2, 3, 4), validator=_nonempty_positive)
    embed_dims: tuple[int, ...] = attrs.field(default=(16, 24, 32), validator=_nonempty_positive)
    head_choices: tuple[int, ...] = attrs.field(default=(1, 2, 4), validator=_nonempty_positive)
    mlp_ratios: tuple[int, ...] = attrs.field(default=(1, 2), validator=_nonempty_positive)
    transformer_depths: tuple[int, ...] = attrs.field(default=(1, 2), validator=_nonempty_positive)
    transformer_starts: tuple[int, ...] = attrs.field(default=(2, 3), validator=_nonempty_positive)


# --- search strategies ---------------------------------------------------------------------------


@config_class
class SuperNASConfig(SearchStrategyConfig):
    """TinyNAS-style space selection: per candidate space (width, resolution) sample
    ``samples_per_space`` subnets, keep those fitting the target, pick the space whose survivors
    have the most FLOPs (compared by ``statistic`` of the FLOPs distribution)."""

    samples_per_space: int = attrs.field(default=16, validator=_ge1)
    statistic: Literal["mean", "median"] = "mean"
    min_fit_fraction: float = attrs.field(default=0.05, validator=_ge0)
    seed: int = 0


@config_class
class SparseNASConfig(SearchStrategyConfig):
    """Evolution over architecture x per-layer block size x per-layer sparsity, inherited weights.

    Fitness is validation accuracy after block pruning and BN recalibration; every candidate must fit
    the target (limits, including an optional instruction cap, come from the evaluator).
    """

    population: int = attrs.field(default=8, validator=attrs.validators.ge(2))
    generations: int = attrs.field(default=2, validator=_ge1)
    parents_fraction: float = attrs.field(default=0.25, validator=_fraction)
    mutation_prob: float = attrs.field(default=0.2, validator=_fraction)
    mutation_fraction: float = attrs.field(default=0.5, validator=_fraction)
    block_sizes: tuple[int, ...] = attrs.field(default=(4, 8, 16), validator=_nonempty_positive)
    sparsities: tuple[float, ...] = attrs.field(default=(0.0, 0.25, 0.5, 0.75), validator=_sparsities)
    seed: int = 0


@config_class
class RandomSearchConfig(SearchStrategyConfig):
    """The baseline: ``budget`` random (arch, per-layer block size, sparsity) candidates under the
    same constraints and fitness as ``sparsenas``; keeps the best."""

    budget: int = attrs.field(default=24, validator=_ge1)
    block_sizes: tuple[int, ...] = attrs.field(default=(4, 8, 16), validator=_nonempty_positive)
    sparsities: tuple[float, ...] = attrs.field(default=(0.0, 0.25, 0.5, 0.75), validator=_sparsities)
    seed: int = 0
