"""``hf-causal-lm``: a transformers causal LM turned into a mammoth2 backbone by module surgery.

So that real pretrained weights (e.g. a local Qwen3 folder) can serve as the AR path, the LM is
loaded unchanged and then extended in place:

* a generation embedding table and a generation head are added beside the LM's own (the text
  path keeps its pretrained embeddings and head; logits are ``[text | generation]``);
* in the expert layers, each per-token module (the MLP, and with ``ffn-attention`` the Q/K/V/O
  projections) is replaced by a :class:`~tuskml.plugins.mammoth2.experts.TokenRoutedModule` holding
  the original and a generation copy. The LM's layer signatures cannot carry a routing mask, so the
  mask of the current call is put in a shared :class:`RoutingState` for the duration of ``forward``.

Text tokens therefore see exactly the original model until a generation token is in their context.
"""

from __future__ import annotations

import copy
import inspect
import json
import pathlib
from typing import Any

import torch
from torch import nn

import tuskml
from tuskml.core.errors import ConfigError, TuskmlError
from tuskml.plugins.mammoth2.ar import (
    BackboneInputError,
    BackboneOutput,
    check_id_range,
    default_position_ids,
    full_key_mask,
)
from tuskml.plugins.mammoth2.configs_ar import HFCausalLMConfig
from tuskml.plugins.mammoth2.experts import ExpertPlan, RoutingState, TokenRoute, TokenRoutedModule, init_linear_weights


class HFCacheState:
    """The wrapped LM's own cache plus the padding mask of the cached tokens (see ``ar.full_key_mask``)."""

    def __init__(self, cache: Any, key_mask: torch.Tensor | None):
        self.cache = cache
        self.key_mask = key_mask

    @property
    def seq_length(self) -> int:
        return 0 if self.cache is None else int(self.cache.get_seq_length())

    def select(self, batch_index: torch.Tensor) -> HFCacheState:
        """A copy whose rows are ``batch_index`` (reorder / repeat rows)."""
        cache = copy.deepcopy(self.cache)
        cache.reorder_cache(batch_index)
        mask = None if self.key_mask is None else self.key_mask.index_select(0, batch_index)
        return HFCacheState(cache, mask)


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - transformers is installed in dev and CI
        raise TuskmlError("backbone 'hf-causal-lm' needs transformers: pip install 'tuskml[hf]'") from exc
    return transformers


def build_causal_lm(config: HFCausalLMConfig) -> nn.Module:
    """The plain transformers model the config describes (local folder, or random weights from JSON)."""
    transformers = _import_transformers()
    dtype = getattr(torch, config.dtype)
    if config.model_path is not None:
        path = pathlib.Path(config.model_path)
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"hf-causal-lm: model_path {str(path)!r} is not a folder with a config.json (a save_pretrained "
                f"folder); nothing is downloaded"
            )
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, attn_implementation=config.attn_implementation, local_files_only=True)
    try:
        raw = json.loads(config.hf_config_json)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"hf-causal-lm: hf_config_json is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ConfigError("hf-causal-lm: hf_config_json must be a JSON object with a 'model_type' key, e.g. \"qwen3\"")
    raw = dict(raw)
    model_type = raw.pop("model_type")
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"hf-causal-lm: transformers has no config for model_type {model_type!r}: {exc}") from exc
    return transformers.AutoModelForCausalLM.from_config(
        hf_config, dtype=dtype, attn_implementation=config.attn_implementation)


class HFCausalLMBackbone(nn.Module):
    """The ``hf-causal-lm`` backbone (see the module docstring); same interface as ``mammoth2-ar``."""

    def __init__(self, config: HFCausalLMConfig | None = None, *, model: nn.Module | None = None):
        super().__init__()
        config = config or HFCausalLMConfig()
        self.config = config
        self.tuskml_config = config
        self.lm = model if model is not None else build_causal_lm(config)
        text_config = self.lm.config.get_text_config()
        if config.text_vocab_size and config.text_vocab_size != self.lm.get_input_embeddings().num_embeddings:
            self.lm.resize_token_embeddings(config.text_vocab_size)
        self.hidden_size = int(text_config.hidden_size)
        self.num_layers = int(text_config.num_hidden_layers)
        self.text_vocab_size = int(self.lm.get_input_embeddings().num_embeddings)
        self.gen_vocab_size = config.gen_vocab_size
        self.gen_vocab_start = self.text_vocab_size
        dtype = self.lm.get_input_embeddings().weight.dtype
        self.gen_embed_tokens = nn.Embedding(config.gen_vocab_size, self.hidden_size, dtype=dtype)
        self.gen_head = nn.Linear(self.hidden_size, config.gen_vocab_size, bias=False, dtype=dtype)
        init_linear_weights(self.gen_embed_tokens, config.init_std)
        init_linear_weights(self.gen_head, config.init_std)
        self.routing = RoutingState()
        self.experts: ExpertPlan = tuskml.create("experts", config.experts)
        self._add_experts()
        forward_params = inspect.signature(self.lm.base_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"

    # --- surgery -------------------------------------------------------------------------------------

    def decoder_layers(self) -> nn.ModuleList:
        layers = getattr(self.lm.base_model, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise TuskmlError(
                f"hf-causal-lm: {type(self.lm).__name__}.base_model has no 'layers' ModuleList; experts need a "
                f"Llama/Qwen-style decoder"
            )
        return layers

    def _add_experts(self) -> None:
        layers = self.decoder_layers()
        for index in self.experts.layer_range(len(layers)):
            layer = layers[index]
            if self.experts.routes_ffn:
                if not isinstance(getattr(layer, "mlp", None), nn.Module):
                    raise TuskmlError(f"hf-causal-lm: decoder layer {index} ({type(layer).__name__}) has no 'mlp' to copy")
                layer.mlp = TokenRoutedModule(layer.mlp, self.experts.make_expert(layer.mlp, self.config.init_std), self.routing)
            if self.experts.routes_attention:
                attn = getattr(layer, "self_attn", None)
                for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    proj = getattr(attn, name, None)
                    if not isinstance(proj, nn.Linear):
                        raise TuskmlError(
                            f"hf-causal-lm: decoder layer {index} has no self_attn.{name} Linear for attention experts"
                        )
                    setattr(attn, name, TokenRoutedModule(proj, self.experts.make_expert(proj, self.config.init_std), self.routing))

    def expert_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(original module, its generation expert) for every expert added by surgery."""
        return [(m.text_module, m.gen_module) for m in self.modules() if isinstance(m, TokenRoutedModule)]

    # --- inputs --------------------------------------------------------------------------------------

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise BackboneInputError(f"input_ids must be an integer tensor [B, T], got {getattr(input_ids, 'shape', input_ids)!r}")
        check_id_range(input_ids, self.text_vocab_size, self.gen_vocab_size)

    def generation_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids >= self.gen_vocab_start

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings: the LM's table for text ids, the added generation table for generation ids."""
        self._check_ids(input_ids)
        gen_mask = self.generation_mask(input_ids)
        text = self.lm.get_input_embeddings()(input_ids.clamp(max=self.text_vocab_size - 1))
        gen = self.gen_embed_tokens((input_ids - self.gen_vocab_start).clamp(min=0))
        return torch.where(gen_mask.unsqueeze(-1), gen, text)

    # --- forward -------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                past_key_values: HFCacheState | None = None, use_cache: bool = False,
                output_hidden_states: bool = False) -> BackboneOutput:
        self._check_ids(input_ids)
        b, t = input_ids.shape
        device = input_ids.device
        if inputs_embeds is None:
            x = self.embed(input_ids)
        elif inputs_embeds.shape != (b, t, self.hidden_size):
            raise BackboneInputError(f"inputs_embeds must be [B={b}, T={t}, D={self.hidden_size}], got {tuple(inputs_embeds.shape)}")
        else:
            x = inputs_embeds
        state = past_key_values
        if state is not None and not isinstance(state, HFCacheState):
            raise BackboneInputError(f"past_key_values must be the HFCacheState this backbone returned, got {type(state).__name__}")
        past_len = state.seq_length if state is not None else 0
        key_mask = full_key_mask(attention_mask, state.key_mask if state is not None else None, b, past_len, t, device)
        if position_ids is None:
            position_ids = default_position_ids(key_mask, b, past_len, t, device)
        kwargs: dict[str, Any] = {
            "inputs_embeds": x,
            "attention_mask": None if key_mask is None else key_mask.long(),
            "position_ids": position_ids,
            "use_cache": bool(use_cache or state is not None),
            "output_hidden_states": output_hidden_states,
            self._cache_kwarg: state.cache if state is not None else None,
        }
        self.routing.gen_mask = TokenRoute(self.generation_mask(input_ids)) if self.experts.routes_ffn else None
        try:
            out = self.lm.base_model(**kwargs)
        finally:
            self.routing.gen_mask = None
        h = out.last_hidden_state
        logits = torch.cat((self.lm.get_output_embeddings()(h), self.gen_head(h)), dim=-1)
        new_cache = getattr(out, "cache", None) if self._cache_kwarg == "cache" else getattr(out, "past_key_values", None)
        result_state = None
        if use_cache or state is not None:
            result_state = state if state is not None else HFCacheState(new_cache, None)
            result_state.cache = new_cache
            result_state.key_mask = key_mask
        hidden = tuple(out.hidden_states) if output_hidden_states else None
        return BackboneOutput(logits=logits, hidden_states=hidden, past_key_values=result_state if use_cache else None)

    def example_inputs(self) -> dict[str, Any]:
        g = torch.Generator().manual_seed(0)
        text = torch.randint(0, self.text_vocab_size, (2, 4), generator=g)
        gen = torch.randint(self.gen_vocab_start, self.gen_vocab_start + self.gen_vocab_size, (2, 3), generator=g)
        return {"input_ids": torch.cat((text, gen), dim=1), "output_hidden_states": True}
