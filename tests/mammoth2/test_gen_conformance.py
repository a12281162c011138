"""Core conformance checks (spec, config round trip, default build, save/load with outputs) for M2's parts."""

from __future__ import annotations

import pytest
import torch

from tuskml.testing import check_component

GENERATION_COMPONENTS = [
    ("aligners", "mammoth2"),
    ("aligners", "last-layer"),
    ("decoders", "mammoth2-dit"),
    ("decoders", "lumina2"),
    ("codecs", "pixel"),
    ("codecs", "autoencoder-kl"),
]


@pytest.mark.parametrize(("kind", "name"), GENERATION_COMPONENTS)
def test_conformance(kind, name, tmp_path):
    torch.manual_seed(0)
    check_component(kind, name, tmp_path)

