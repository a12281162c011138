"""The tinyformer-hybrid space: sampling, extraction with inherited weights, engine compatibility."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import tuskml
from tuskml.plugins.tinyformer.arch import (
    HybridArch,
    SearchSpaceError,
    check_arch,
    crossover_arch,
    mutate_arch,
    restrict,
)
from tuskml.plugins.tinyformer.configs import TinyformerHybridConfig
from tuskml.plugins.tinyformer.supernet import TinyformerHybridSpace, count_macs


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    sp = tuskml.create("search_spaces", "tinyformer-hybrid")
    g = torch.Generator().manual_seed(1)
    for m in sp.modules():  # non-trivial BN statistics so that extraction must copy them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return sp.eval()


def test_sampling_is_seeded_and_valid(space):
    a = [space.sample(random.Random(5)) for _ in range(2)]
    assert a[0] == a[1]
    rng = random.Random(0)
    archs = {space.sample(rng) for _ in range(30)}
    assert len(archs) > 20
    cfg = space.config
    for arch in archs:
        check_arch(arch, cfg)
        assert HybridArch.from_dict(arch.to_dict()) == arch
        assert mutate_arch(arch, cfg, rng, 0.5) is not None
    seen_starts = {a.transformer_start for a in archs}
    assert seen_starts == set(cfg.transformer_starts)
    for a, b in zip(list(archs)[::2], list(archs)[1::2]):
        check_arch(crossover_arch(a, b, cfg, rng), cfg)
        check_arch(mutate_arch(a, cfg, rng, 1.0), cfg)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_extracted_subnet_computes_what_the_supernet_computes(space, seed):
    arch = space.sample(random.Random(seed))
    net = space.extract(arch)
    x = torch.randn(2, 1, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert torch.allclose(space(x, arch), net(x), atol=1e-5)
    # weights really are shared: changing the supernet changes a new extraction
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in space.parameters())


def test_extreme_archs_and_costs(space):
    big, small = space.largest(), space.smallest()
    assert count_macs(space.extract(big)) > 4 * count_macs(space.extract(small))
    assert space.params(big) > space.params(small)
    # MAC count of a known layer: the stem conv alone
    net = space.extract(small)
    stem = net.stem[0]
    r = small.resolution // 2
    assert stem.out_channels * r * r * 9 * stem.in_channels < count_macs(net)


def test_subnets_are_deployable_by_sparseengine(space):
    from tuskml.backends.sparse_engine.frontend import import_torch
    from tuskml.backends.sparse_engine.quantize import quantize_graph
    from tuskml.backends.sparse_engine.reference import quantize_input, run

    arch = space.sample(random.Random(11))
    net = space.extract(arch)
    x = torch.randn(8, 1, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(0))
    graph = import_torch(net, x[:1])
    ops = {n.op for n in graph.nodes}
    assert {"conv2d", "depthwise_conv2d", "fully_connected", "batch_matmul", "softmax", "layer_norm"} <= ops
    q = quantize_graph(graph, x)
    out = run(q, quantize_input(q, x[:4].numpy())).outputs[0]
    assert out.shape == (4, space.config.num_classes)


def test_candidate_spaces_and_restriction(space):
    cands = space.candidate_spaces()
    cfg = space.config
    assert len(cands) == len(cfg.width_mults) * len(cfg.resolutions)
    small = restrict(cfg, cands[0])
    sub = TinyformerHybridSpace(small)
    assert sum(p.numel() for p in sub.parameters()) <= sum(p.numel() for p in space.parameters())
    arch = sub.sample(random.Random(0))
    assert (arch.width_mult, arch.resolution) == (cands[0].width_mult, cands[0].resolution)
    with pytest.raises(SearchSpaceError, match="not inside the space"):
        restrict(small, cands[-1])


def test_bad_space_configs_name_the_field():
    with pytest.raises(SearchSpaceError, match="resolution 20"):
        TinyformerHybridSpace(TinyformerHybridConfig(resolutions=(16, 20)))
    with pytest.raises(SearchSpaceError, match="embed_dims entry 18"):
        TinyformerHybridSpace(TinyformerHybridConfig(embed_dims=(16, 18), head_choices=(1, 4)))
    with pytest.raises(SearchSpaceError, match="stage_strides"):
        TinyformerHybridSpace(TinyformerHybridConfig(stage_strides=(1, 2)))
    with pytest.raises(tuskml.ConfigError, match="resolutions"):
        tuskml.create("search_spaces", "tinyformer-hybrid", resolutions=())
    sp = TinyformerHybridSpace()
    arch = sp.sample(random.Random(0))
    import attrs

    with pytest.raises(SearchSpaceError, match="resolution = 40"):
        sp.extract(attrs.evolve(arch, resolution=40))
