"""Generation experts: hard routing of tokens to separate weights by token id.

MammothModa2 gives each deep decoder layer a second SwiGLU FFN for generation (visual) tokens; a
token is routed by its id alone (``id >= gen_vocab_start``), so there is no router to learn and the
text path of a pretrained LM stays exactly as it was. This module holds the *plan* (which layers,
which sub-modules) built from an experts config, and the routing primitive both backbones use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from tuskml.core.errors import ConfigError
from tuskml.plugins.mammoth2.configs_ar import FFNAttentionExpertsConfig, FFNExpertsConfig, NoExpertsConfig


class ExpertPlan:
    """Which decoder layers get generation experts, and which of their sub-modules are duplicated.

    Built from an ``ffn`` / ``ffn-attention`` / ``none`` config (the factory of those registered
    experts). Backbones ask it ``has_experts(layer, num_layers)`` and ``make_expert(text_module)``.
    """

    def __init__(self, config: FFNExpertsConfig | NoExpertsConfig):
        if not isinstance(config, (FFNExpertsConfig, NoExpertsConfig)):
            raise ConfigError(f"ExpertPlan needs an ffn, ffn-attention or none experts config, got {type(config).__qualname__}")
        self.config = config
        self.routes_ffn = isinstance(config, FFNExpertsConfig)
        self.routes_attention = isinstance(config, FFNAttentionExpertsConfig)

    def layer_range(self, num_layers: int) -> range:
        """Layers ``[start_layer, end_layer)``; an error if the range does not fit the backbone."""
        if not self.routes_ffn:
            return range(0)
        start, end = self.config.start_layer, self.config.end_layer
        end = num_layers if end is None else end
        if start >= num_layers or end > num_layers:
            raise ConfigError(
                f"experts.start_layer={start}, experts.end_layer={self.config.end_layer} do not fit a backbone with "
                f"{num_layers} layers: need start_layer < {num_layers} and end_layer <= {num_layers}"
            )
        return range(start, end)

    def has_experts(self, layer_index: int, num_layers: int) -> bool:
        return layer_index in self.layer_range(num_layers)

    def make_expert(self, text_module: nn.Module, init_std: float) -> nn.Module:
        """A generation copy of ``text_module``: same shapes, weights copied or freshly initialised."""
        expert = copy.deepcopy(text_module)
        if self.config.init == "random":
            init_linear_weights(expert, init_std)
        return expert

    def __repr__(self) -> str:
        return f"ExpertPlan({self.config!r})"


def init_linear_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) weights and zero biases for every Linear / Embedding inside ``module``."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if getattr(sub, "bias", None) is not None:
                nn.init.zeros_(sub.bias)


class TokenRoute:
    """Which tokens of a ``[B, T]`` batch are generation tokens, resolved once per forward call.

    Counting and indexing the generation tokens needs one device-to-host sync; doing it here once
    instead of in every routed module keeps decoding on a GPU from stalling once per layer.
    """

    def __init__(self, gen_mask: torch.Tensor):
        self.shape = tuple(gen_mask.shape)
        flat = gen_mask.reshape(-1)
        n_gen = int(flat.sum())
        self.all_text = n_gen == 0
        self.all_gen = n_gen == flat.numel()
        self.gen_index = self.text_index = None
        if not (self.all_text or self.all_gen):
            order = torch.argsort(flat.to(torch.int8), stable=True)  # text positions first, then generation
            n_text = flat.numel() - n_gen
            self.text_index, self.gen_index = order[:n_text], order[n_text:]

    def apply(self, x: torch.Tensor, text_fn: Callable[[torch.Tensor], torch.Tensor],
              gen_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if tuple(x.shape[:-1]) != self.shape:
            raise ValueError(f"routing computed for tokens {self.shape} applied to tokens {tuple(x.shape[:-1])}")
        if self.all_text:
            return text_fn(x)
        if self.all_gen:
            return gen_fn(x)
        flat = x.reshape(-1, x.shape[-1])
        gen_out = gen_fn(flat.index_select(0, self.gen_index))
        text_out = text_fn(flat.index_select(0, self.text_index))
        out = gen_out.new_empty(flat.shape[0], gen_out.shape[-1])
        out = out.index_copy(0, self.gen_index, gen_out).index_copy(0, self.text_index, text_out.to(gen_out.dtype))
        return out.view(*x.shape[:-1], gen_out.shape[-1])


def route_tokens(x: torch.Tensor, route: TokenRoute | torch.Tensor | None,
                 text_fn: Callable[[torch.Tensor], torch.Tensor],
                 gen_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``gen_fn`` to generation tokens and ``text_fn`` to the rest (``route``: a
    :class:`TokenRoute` or a Bool ``[B, T]`` generation mask; None means all text).

    Each token is computed by exactly one of the two functions (gathered, not masked after the
    fact), so text tokens never touch expert weights and the cost is one pass per token. All-text and
    all-generation inputs (the usual decoding step) skip the gather entirely.
    """
    if route is None:
        return text_fn(x)
    if isinstance(route, torch.Tensor):
        if tuple(route.shape) != tuple(x.shape[:-1]):
            raise ValueError(f"generation mask of shape {tuple(route.shape)} does not match tokens {tuple(x.shape[:-1])}")
        route = TokenRoute(route)
    return route.apply(x, text_fn, gen_fn)


class RoutingState:
    """The generation mask of the tokens now being processed, shared by the routed modules of a
    wrapped model whose layer signatures cannot carry it (``hf-causal-lm``). Set per forward call."""

    def __init__(self) -> None:
        self.gen_mask: TokenRoute | None = None


class TokenRoutedModule(nn.Module):
    """Drop-in replacement for a per-token module (an MLP or a projection): routes each token to
    ``text_module`` or ``gen_module`` by the mask in a shared :class:`RoutingState`."""

    def __init__(self, text_module: nn.Module, gen_module: nn.Module, state: RoutingState):
        super().__init__()
        self.text_module = text_module
        self.gen_module = gen_module
        self._state = [state]  # a list, so nn.Module does not treat the state as a child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return route_tokens(x, self._state[0].gen_mask, self.text_module, self.gen_module)
