"""Training config of mammoth2 (torch-free). Shipped presets: ``train_presets/{tiny,small}.toml``.

Training runs in two phases. First the visual tokenizer (VQ) alone learns to reconstruct images
(``tokenizer``), because the AR model's targets are its codes. Then the joint model trains
end to end with ``loss = ntp + lambda * fm`` on mixed text-to-image / edit / understanding batches
through ``stages``: each stage runs ``steps`` optimizer steps with the named top-level parts of the
model frozen (e.g. ``frozen = ["backbone"]`` first, then everything). One AdamW and one warm-up +
cosine schedule span all stages; the visual tokenizer stays frozen in the joint phase.
"""

from __future__ import annotations

import importlib.resources
import pathlib
from typing import Literal

import attrs

import tuskml
from tuskml.core.errors import ConfigError
from tuskml.plugins.mammoth2.configs_data import ShapesWorldConfig

_ge0 = attrs.validators.ge(0)
_ge1 = attrs.validators.ge(1)

#: top-level parts of Mammoth2Model a stage may freeze
FREEZABLE: tuple[str, ...] = ("backbone", "vision_encoder", "projector", "aligner", "decoder")


def _frozen_names(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    bad = [v for v in value if v not in FREEZABLE]
    if bad:
        raise ValueError(f"frozen: unknown model parts {bad}; freezable parts: {list(FREEZABLE)}")


def _unit(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must lie in [0, 1), got {value}")


def _task_batch(instance: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if value and (len(value) != 3 or any(int(v) != v or v < 0 for v in value) or sum(value) <= 0):
        raise ValueError(f"task_batch must be empty or three non-negative integers (text-to-image, edit, "
                         f"understanding) with a positive sum, got {value}")


@tuskml.config_class
class StageConfig:
    """One joint-training stage: ``steps`` optimizer steps with the ``frozen`` parts frozen."""

    name: str = "full"
    steps: int = attrs.field(default=100, validator=_ge0)
    frozen: tuple[str, ...] = attrs.field(default=(), validator=_frozen_names)


@tuskml.config_class
class TokenizerTrainConfig:
    """The visual-tokenizer phase (``steps = 0`` skips it, e.g. for a pretrained tokenizer)."""

    steps: int = attrs.field(default=200, validator=_ge0)
    batch_size: int = attrs.field(default=64, validator=_ge1)
    lr: float = attrs.field(default=2e-3, validator=attrs.validators.gt(0))
    warmup_steps: int = attrs.field(default=20, validator=_ge0)


@tuskml.config_class
class TrainConfig:
    """Everything a run needs. ``model`` (a full ``{type = "mammoth2", ...}`` table) replaces the
    shipped model preset named by ``model_preset`` when given. ``batch_size`` is per process."""

    model_preset: str = "tiny"
    model: tuskml.ModelConfig | None = None
    data: ShapesWorldConfig = attrs.field(factory=ShapesWorldConfig)
    tokenizer: TokenizerTrainConfig = attrs.field(factory=TokenizerTrainConfig)
    stages: tuple[StageConfig, ...] = attrs.field(
        factory=lambda: (StageConfig(name="frozen-backbone", steps=50, frozen=("backbone",)),
                         StageConfig(name="full", steps=450)))
    batch_size: int = attrs.field(default=16, validator=_ge1)
    # per-task batch sizes (text-to-image, edit, understanding) per process; when given, every step
    # draws this many samples of each task and runs each task group as its own forward (no padding
    # of short understanding rows to edit length), summing the three losses. Empty: ``batch_size``
    # samples of the ``data.mix`` mixture, all in one forward.
    task_batch: tuple[int, ...] = attrs.field(default=(), validator=_task_batch)
    lr: float = attrs.field(default=1e-3, validator=attrs.validators.gt(0))
    min_lr_ratio: float = attrs.field(default=0.1, validator=[_ge0, attrs.validators.le(1)])
    weight_decay: float = attrs.field(default=0.01, validator=_ge0)
    betas: tuple[float, ...] = (0.9, 0.99)
    warmup_steps: int = attrs.field(default=50, validator=_ge0)
    grad_clip: float = attrs.field(default=1.0, validator=_ge0)  # 0: no clipping
    ema_decay: float = attrs.field(default=0.999, validator=_unit)
    checkpoint_every: int = attrs.field(default=100, validator=_ge1)
    keep_checkpoints: int = attrs.field(default=2, validator=_ge1)
    log_every: int = attrs.field(default=10, validator=_ge1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"
    progress: bool = True
    # build the next joint step's batches in a background thread while this step computes (the same
    # run, bit for bit). For GPU runs; 0.66x on a 2-core CPU, where torch's threads fill the cores
    # (benchmarks/results/mammoth2_prefetch.md)
    prefetch: bool = False
    # wall-clock budget of one invocation (0: none). When spent, the run checkpoints and finishes
    # early (pipeline written, ``stopped_early`` in the summary); the schedule is still by steps.
    time_limit_minutes: float = attrs.field(default=0.0, validator=_ge0)

    def __attrs_post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not self.stages:
            raise ValueError("stages must list at least one joint-training stage")
        if self.task_batch and self.data.task != "mixed":
            raise ValueError(f"task_batch sets per-task batch sizes, so data.task must be 'mixed', got "
                             f"{self.data.task!r}")

    @property
    def samples_per_step(self) -> int:
        """Samples per process in one joint step."""
        return sum(self.task_batch) if self.task_batch else self.batch_size

    def uses_understanding(self) -> bool:
        if self.task_batch:
            return self.task_batch[2] > 0
        return self.data.task == "understanding" or (self.data.task == "mixed" and self.data.mix[2] > 0)

    @property
    def joint_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def train_preset_names() -> list[str]:
    root = importlib.resources.files("tuskml.plugins.mammoth2") / "train_presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_train_config(name_or_path: str | pathlib.Path) -> TrainConfig:
    """A shipped training preset by name (``tiny``, ``small``) or a TOML/JSON file."""
    path = pathlib.Path(name_or_path)
    if path.suffix in (".toml", ".json"):
        return tuskml.load_config(path, TrainConfig)
    root = importlib.resources.files("tuskml.plugins.mammoth2") / "train_presets"
    res = root / f"{name_or_path}.toml"
    if not res.is_file():
        raise ConfigError(f"no mammoth2 training preset {str(name_or_path)!r} and not a .toml/.json file; "
                          f"presets: {', '.join(train_preset_names())}")
    with importlib.resources.as_file(res) as real:
        return tuskml.load_config(real, TrainConfig)
