"""Datasets: digits (real sklearn data), shapes-cls (procedural), cifar10 (local pickle folder)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import tuskml
from tuskml.plugins.tinyformer.datasets import DatasetError


def test_digits_is_real_split_and_resized():
    from sklearn.datasets import load_digits

    train = tuskml.create("datasets", "digits", split="train", resolution=16)
    test = tuskml.create("datasets", "digits", split="test", resolution=16)
    assert len(train) + len(test) == len(load_digits().target) == 1797
    assert train.images.shape[1:] == (1, 16, 16) and test.images.shape[1:] == (1, 16, 16)
    assert 0.2 < len(test) / 1797 < 0.3
    # every class in both splits (stratified), labels match the sklearn targets' class set
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))
    assert train.images.min() >= -1.0 - 1e-6 and train.images.max() <= 1.0 + 1e-6
    again = tuskml.create("datasets", "digits", split="test", resolution=16)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    # no test image appears in train
    tr = {tuple(x.flatten().tolist()) for x in train.images[:, :, ::2, ::2]}
    overlap = sum(tuple(x.flatten().tolist()) in tr for x in test.images[:, :, ::2, ::2])
    assert overlap < 5  # a few digits are pixel-identical duplicates in the source data


def test_digits_native_pixels_and_options():
    from sklearn.datasets import load_digits

    d = tuskml.create("datasets", "digits", split="train", resolution=8)
    raw = load_digits().images.astype(np.float32) / 16.0 * 2 - 1
    # each stored 8x8 image is exactly one of the sklearn images
    assert any(np.allclose(d.images[0, 0].numpy(), img) for img in raw)
    rgb = tuskml.create("datasets", "digits", channels=3, pad=2, resolution=24)
    assert rgb.images.shape[1:] == (3, 24, 24)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])
    assert rgb.resized(12).shape[-1] == 12


def test_shapes_seeded_balanced_and_disjoint():
    a = tuskml.create("datasets", "shapes-cls", num_samples=60, seed=3)
    b = tuskml.create("datasets", "shapes-cls", num_samples=60, seed=3)
    t = tuskml.create("datasets", "shapes-cls", num_samples=60, seed=3, split="test")
    assert a.images.shape == (60, 3, 32, 32) and a.num_classes == 10
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, t.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [6] * 10
    image, label = a[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10


def _write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     b"labels": rng.integers(0, 10, n).tolist()}, fh)


def test_cifar10_reads_local_pickle_folder(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        _write_batch(root / f"data_batch_{i}", 4, i)
    _write_batch(root / "test_batch", 3, 9)
    train = tuskml.create("datasets", "cifar10", root=str(root))
    test = tuskml.create("datasets", "cifar10", root=str(root), split="test")
    assert len(train) == 20 and len(test) == 3
    assert train.images.shape == (20, 3, 32, 32) and train.labels.dtype == torch.int64
    with open(root / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    first = raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255 * 2 - 1
    assert np.allclose(train.images[0].numpy(), first, atol=1e-6)
    assert tuskml.create("datasets", "cifar10", root=str(root), limit=5).images.shape[0] == 5


def test_cifar10_missing_folder_and_files_are_clear_errors(tmp_path):
    missing = tmp_path / "nowhere"
    data = tuskml.create("datasets", "cifar10", root=str(missing))
    with pytest.raises(DatasetError, match="nowhere.*does not exist.*data_batch_1.*test_batch"):
        len(data)
    root = tmp_path / "partial"
    root.mkdir()
    _write_batch(root / "test_batch", 2, 0)
    with pytest.raises(DatasetError, match="lacks data_batch_1"):
        _ = tuskml.create("datasets", "cifar10", root=str(root)).images
    (root / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="not a CIFAR-10 python batch"):
        _ = tuskml.create("datasets", "cifar10", root=str(root), split="test").images
