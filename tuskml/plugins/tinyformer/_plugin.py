"""Hookimpls of the built-in ``tinyformer`` plugin (CLI: ``tuskml tinyformer ...``)."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
from tuskml.core.registry import ComponentSpec
from tuskml.plugins.tinyformer import configs as _nas_configs

_NAS = "tuskml.plugins.tinyformer"


@hookimpl
def tuskml_datasets():
    yield ComponentSpec(name="digits", factory=f"{_NAS}.datasets:load_digits", config_cls=_nas_configs.DigitsDatasetConfig,
                        description="scikit-learn's bundled 8x8 handwritten digits (real), fixed split, resized")
    yield ComponentSpec(name="shapes-cls", factory=f"{_NAS}.datasets:load_shapes",
                        config_cls=_nas_configs.ShapesClsDatasetConfig,
                        description="procedural 32x32 RGB shape classification, 10 classes, seeded")
    yield ComponentSpec(name="cifar10", factory=f"{_NAS}.datasets:load_cifar10", config_cls=_nas_configs.Cifar10DatasetConfig,
                        description="CIFAR-10 from a local python-pickle folder (no download)")


@hookimpl
def tuskml_search_spaces():
    yield ComponentSpec(name="tinyformer-hybrid", factory=f"{_NAS}.supernet:TinyformerHybridSpace",
                        config_cls=_nas_configs.TinyformerHybridConfig,
                        description="weight-sharing MBConv + MobileViT supernet, elastic width/resolution/depth/"
                                    "kernel/expansion/embed/heads/MLP/transformer start")


@hookimpl
def tuskml_search_strategies():
    yield ComponentSpec(name="supernas", factory=f"{_NAS}.supernas:SuperNAS", config_cls=_nas_configs.SuperNASConfig,
                        description="TinyNAS space selection: FLOPs CDF of subnets fitting the target")
    yield ComponentSpec(name="sparsenas", factory=f"{_NAS}.sparsenas:SparseNAS", config_cls=_nas_configs.SparseNASConfig,
                        description="evolution over arch x per-layer block size x sparsity, inherited weights")
    yield ComponentSpec(name="random", factory=f"{_NAS}.random_search:RandomSearch",
                        config_cls=_nas_configs.RandomSearchConfig,
                        description="random search baseline with the same budget and constraints")


@hookimpl
def tuskml_cli_commands(cli):
    # `tuskml tinyformer deploy`; the command imports torch only when it runs
    from tuskml.plugins.tinyformer.deploy_cli import add_deploy_command

    add_deploy_command(cli)


@hookimpl(specname="tuskml_cli_commands")
def tuskml_cli_commands_search(cli):
    # `tuskml tinyformer search`; shares the `tinyformer` group with deploy (get-or-create)
    from tuskml.plugins.tinyformer.search_cli import add_search_command

    add_search_command(cli)
