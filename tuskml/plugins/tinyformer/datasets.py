"""Image classification datasets for the NAS: ``digits``, ``shapes-cls`` and ``cifar10``.

Each factory returns an :class:`ImageClassificationData`: the whole split as one float tensor
``images [N, C, H, W]`` (normalised to about [-1, 1]) and ``labels [N]``. These datasets are small
enough to hold in memory, and whole-tensor access is what fast CPU search needs (no DataLoader
workers, cheap resizing per candidate resolution).
"""

from __future__ import annotations

import pathlib
import pickle
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tuskml.core.errors import TuskmlError
from tuskml.plugins.tinyformer.configs import Cifar10DatasetConfig, DigitsDatasetConfig, ShapesClsDatasetConfig


class DatasetError(TuskmlError):
    """A dataset that cannot be read (missing folder or file, wrong format)."""


class ImageClassificationData:
    """A split held in memory. ``data[i] -> (image [C,H,W], label)``; ``resized(r)`` for other resolutions."""

    def __init__(self, name: str, images: torch.Tensor | None, labels: torch.Tensor | None, num_classes: int,
                 loader: Any = None):
        self.name = name
        self.num_classes = num_classes
        self._images = images
        self._labels = labels
        self._loader = loader  # lazily fills images/labels (cifar10 reads its files on first use)
        self._resized: dict[int, torch.Tensor] = {}

    def _ensure(self) -> None:
        if self._images is None:
            self._images, self._labels = self._loader()

    @property
    def images(self) -> torch.Tensor:
        self._ensure()
        return self._images

    @property
    def labels(self) -> torch.Tensor:
        self._ensure()
        return self._labels

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def resized(self, resolution: int) -> torch.Tensor:
        """All images at ``resolution`` x ``resolution`` (bilinear; cached per resolution)."""
        if resolution == self.resolution:
            return self.images
        if resolution not in self._resized:
            self._resized[resolution] = F.interpolate(self.images, size=(resolution, resolution), mode="bilinear",
                                                      align_corners=False)
        return self._resized[resolution]

    def subset(self, indices: torch.Tensor | np.ndarray, name: str | None = None) -> ImageClassificationData:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageClassificationData(name or self.name, self.images[idx], self.labels[idx], self.num_classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        state = f"{len(self)} images" if self._images is not None else "not loaded"
        return f"ImageClassificationData({self.name!r}, {state}, {self.num_classes} classes)"


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = max(1, int(round(len(idx) * test_fraction)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(config: DigitsDatasetConfig) -> ImageClassificationData:
    """scikit-learn's digits (bundled with the package, no download), split, padded and resized."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = _stratified_split(labels, config.test_fraction, config.seed)
    idx = train_idx if config.split == "train" else test_idx
    x = torch.from_numpy(images[idx]).unsqueeze(1)
    if config.pad:
        x = F.pad(x, (config.pad,) * 4)
    if x.shape[-1] != config.resolution:
        x = F.interpolate(x, size=(config.resolution, config.resolution), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    if config.channels == 3:
        x = x.repeat(1, 3, 1, 1)
    return ImageClassificationData(f"digits-{config.split}", x.contiguous(), torch.from_numpy(labels[idx]), 10)


# --- shapes-cls ----------------------------------------------------------------------------------

SHAPE_CLASSES = ("disk", "square", "triangle", "cross", "ring", "hbar", "vbar", "diamond", "ellipse", "checker")


def _shape_mask(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, rng) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == "disk":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    if kind == "triangle":
        return (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if kind == "cross":
        t = max(1.0, r * 0.3)
        return ((np.abs(dy) <= t) & (np.abs(dx) <= r)) | ((np.abs(dx) <= t) & (np.abs(dy) <= r))
    if kind == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2)
    if kind == "hbar":
        return (np.abs(dy) <= max(1.0, r * 0.3)) & (np.abs(dx) <= r)
    if kind == "vbar":
        return (np.abs(dx) <= max(1.0, r * 0.3)) & (np.abs(dy) <= r)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    if kind == "ellipse":
        return (dy / (r * 0.5)) ** 2 + (dx / r) ** 2 <= 1.0
    if kind == "checker":
        cell = max(2, int(r * 0.5))
        inside = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
        return inside & ((((yy // cell) + (xx // cell)) % 2) == 0)
    raise AssertionError(kind)


def make_shapes(num_samples: int, resolution: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` RGB images [N, 3, R, R] in [0, 1] and balanced labels, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32)
    labels = np.arange(num_samples) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    images = np.empty((num_samples, 3, resolution, resolution), np.float32)
    for i, label in enumerate(labels):
        background = rng.uniform(0.0, 0.6, size=3).astype(np.float32)
        color = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        while np.abs(color - background).sum() < 0.6:  # keep the shape visible
            color = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        r = rng.uniform(0.22, 0.4) * resolution
        cy, cx = rng.uniform(r * 0.9, resolution - r * 0.9, size=2)
        mask = _shape_mask(SHAPE_CLASSES[label], yy, xx, cy, cx, r, rng)
        img = np.where(mask[None], color[:, None, None], background[:, None, None])
        img = img + rng.normal(0.0, noise, size=img.shape).astype(np.float32)
        images[i] = np.clip(img, 0.0, 1.0)
    return images, labels.astype(np.int64)


def load_shapes(config: ShapesClsDatasetConfig) -> ImageClassificationData:
    seed = config.seed * 2 + (0 if config.split == "train" else 1)
    images, labels = make_shapes(config.num_samples, config.resolution, config.noise, seed)
    x = (torch.from_numpy(images) - 0.5) / 0.5
    return ImageClassificationData(f"shapes-cls-{config.split}", x, torch.from_numpy(labels), len(SHAPE_CLASSES))


# --- cifar10 -------------------------------------------------------------------------------------

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)


def read_cifar10(root: pathlib.Path, split: str, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the python-pickle CIFAR-10 batches of ``split`` from ``root``."""
    files = CIFAR10_TRAIN_FILES if split == "train" else CIFAR10_TEST_FILES
    if not root.is_dir():
        raise DatasetError(
            f"cifar10: folder {str(root)!r} does not exist. Extract cifar-10-python.tar.gz there (it must hold "
            f"{', '.join(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES)}) or set the dataset's 'root' to that folder")
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DatasetError(f"cifar10: folder {str(root)!r} lacks {', '.join(missing)} (the {split} split needs "
                           f"{', '.join(files)})")
    datas, labels = [], []
    for name in files:
        path = root / name
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            lab = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as exc:  # foreign or truncated pickle
            raise DatasetError(f"cifar10: {str(path)!r} is not a CIFAR-10 python batch (needs b'data' "
                               f"[N, 3072] uint8 and b'labels'): {exc}") from exc
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DatasetError(f"cifar10: {str(path)!r} has data of shape {data.shape} and {len(lab)} labels; "
                               f"expected [N, 3072] and N labels")
        datas.append(data)
        labels.append(lab)
    x = np.concatenate(datas).reshape(-1, 3, 32, 32)
    y = np.concatenate(labels)
    if limit:
        x, y = x[:limit], y[:limit]
    images = (torch.from_numpy(x.astype(np.float32)) / 255.0 - 0.5) / 0.5
    return images, torch.from_numpy(y)


def load_cifar10(config: Cifar10DatasetConfig) -> ImageClassificationData:
    """CIFAR-10 from a local folder, read on first access (so building the config never fails)."""
    root = pathlib.Path(config.root).expanduser()
    return ImageClassificationData(f"cifar10-{config.split}", None, None, 10,
                                   loader=lambda: read_cifar10(root, config.split, config.limit))


def train_test(dataset_name: str, **overrides: Any) -> tuple[ImageClassificationData, ImageClassificationData]:
    """Both splits of a registered dataset (``overrides`` are config fields other than ``split``)."""
    import tuskml

    train = tuskml.create("datasets", dataset_name, split="train", **overrides)
    test = tuskml.create("datasets", dataset_name, split="test", **overrides)
    return train, test
