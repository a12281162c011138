"""Frontend: float IR equals torch; unsupported ops name the op and the module path."""

import pytest
import torch
import torch.nn.functional as F
from _engine_helpers import float_graph_matches_torch
from torch import nn

from tuskml.backends.sparse_engine.example_models import tiny_cnn, tiny_mobilevit
from tuskml.backends.sparse_engine.frontend import FrontendError, UnsupportedOpError, import_torch


def test_example_models_float_graph_equals_torch():
    x = torch.randn(2, 3, 32, 32)
    for factory in (tiny_cnn, tiny_mobilevit):
        float_graph_matches_torch(factory(), x, atol=1e-4)


def test_graph_layout_and_module_paths():
    g = import_torch(tiny_mobilevit(), torch.randn(1, 3, 32, 32))
    assert g.tensors[g.inputs[0]].shape == (1, 32, 32, 3)  # NHWC
    assert g.input_permutations[g.inputs[0]] == (0, 2, 3, 1)
    paths = {n.module_path for n in g.nodes}
    assert "stem.0+stem.1" in paths  # conv + folded batch norm
    assert "vit.layers.0.attn.in_proj" in paths and "vit.layers.0.mlp.0" in paths
    assert all(n.module_path for n in g.nodes)


class Sub(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("module, x, op, path", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), Sub(nn.PReLU())), torch.randn(1, 3, 5, 5), "PReLU", "1.inner"),
    (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), torch.randn(1, 4, 5, 5), "groups=2", "0"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), torch.randn(2, 4), "BatchNorm1d", "1"),
    (nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)), torch.randn(1, 3, 4, 4), "BatchNorm2d", "1"),
    (nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")), torch.randn(1, 3, 5, 5), "padding_mode", "0"),
    (nn.Sequential(nn.AvgPool2d(2, padding=1)), torch.randn(1, 3, 6, 6), "AvgPool2d", "0"),
])
def test_unsupported_ops_name_op_and_module(module, x, op, path):
    with pytest.raises(UnsupportedOpError) as info:
        import_torch(module, x)
    msg = str(info.value)
    assert op in msg and repr(path) in msg


def test_unsupported_function_in_submodule():
    class Block(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return self.block(x)

    with pytest.raises(UnsupportedOpError, match=r"sin.*'block\."):
        import_torch(Model(), torch.randn(1, 4))


def test_untraceable_and_bad_arguments():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(FrontendError, match="could not trace Branchy"):
        import_torch(Branchy(), torch.randn(1, 3))
    with pytest.raises(FrontendError, match="torch.Tensor"):
        import_torch(nn.ReLU(), [1, 2])
    with pytest.raises(FrontendError, match="example input"):
        import_torch(nn.Linear(3, 2), torch.randn(1, 4))


def test_functional_ops_and_lazy_permutes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding="same")
            self.w = nn.Parameter(torch.randn(5, 6))

        def forward(self, x):
            y = F.relu6(self.conv(x))
            y = F.max_pool2d(y, 2)
            t = y.flatten(2).transpose(1, 2)  # [N, T, C] tokens
            t = F.linear(t, self.w)
            return F.gelu(t).mean(1)

    g = import_torch(Net(), torch.randn(1, 3, 8, 8))
    assert [n.op for n in g.nodes].count("transpose") <= 1
    float_graph_matches_torch(Net().eval(), torch.randn(2, 3, 8, 8))
