"""``mammoth2-ar``: the autoregressive backbone of MammothModa2, a Qwen3-style decoder.

RMSNorm pre-norm blocks, RoPE, grouped-query attention with QK RMSNorm, SwiGLU FFN (Qwen3), plus
what MammothModa2 adds for generation:

* a generation (visual-token) vocabulary after the text vocabulary, with its own embedding table
  and its own head; the logits are ``[text logits | generation logits]``;
* hard-routed generation experts: in the layers chosen by the experts config, tokens with
  ``id >= gen_vocab_start`` use a separate FFN (and, with ``ffn-attention``, separate Q/K/V/O);
* a KV cache (``kv_cache.KVCache``) for sampling;
* an extension, ``gen_copy_digit``: one digit of a factorised generation token (the colour of a
  ``colour-structure`` VQ) also gets a pointer over the earlier text tokens (:class:`TextCopy`).

Parameter names match transformers' Qwen3 minus the ``model.`` prefix, so
:meth:`Mammoth2AR.load_qwen3_state_dict` takes a Qwen3 checkpoint as is. ``hidden_states`` follows
transformers too: the embeddings, then each layer's output, the last one after the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import tuskml
from tuskml.core.errors import TuskmlError
from tuskml.plugins.mammoth2.configs_ar import Mammoth2ARConfig
from tuskml.plugins.mammoth2.experts import ExpertPlan, TokenRoute, init_linear_weights, route_tokens
from tuskml.plugins.mammoth2.kv_cache import KVCache
from tuskml.plugins.mammoth2.layers import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    rope_cos_sin,
    rope_inverse_frequencies,
    scaled_dot_product_gqa,
)
from tuskml.plugins.mammoth2.vq import mixed_radix_digits


class BackboneInputError(TuskmlError, ValueError):
    """Input ids, masks, embeddings or a cache that do not fit the backbone."""


@dataclass
class BackboneOutput:
    """``logits [B, T, text_vocab + gen_vocab]``; ``hidden_states``: ``num_layers + 1`` tensors
    ``[B, T, D]`` or None; ``past_key_values``: the cache to pass to the next call, or None."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    past_key_values: Any = None


def check_id_range(input_ids: torch.Tensor, text_vocab_size: int, gen_vocab_size: int) -> None:
    """Ids must lie in ``[0, text + gen)``; one host sync for both bounds."""
    if not input_ids.numel():
        return
    low, high = torch.stack((input_ids.min(), input_ids.max())).tolist()
    total = text_vocab_size + gen_vocab_size
    if low < 0 or high >= total:
        raise BackboneInputError(
            f"input_ids must lie in [0, {total}) (text {text_vocab_size} + generation {gen_vocab_size}); "
            f"got values in [{low}, {high}]"
        )


# --- masks and positions, shared with hf_backbone ------------------------------------------------------


def full_key_mask(attention_mask: torch.Tensor | None, past_mask: torch.Tensor | None, batch: int, past_len: int,
                  new_len: int, device: torch.device) -> torch.Tensor | None:
    """The padding mask of all keys (cached + new) ``[B, past + T]``, or None if nothing is padded.

    ``attention_mask`` may cover the new tokens only (``[B, T]``) or all of them (``[B, past + T]``).
    """
    if attention_mask is None:
        if past_mask is None:
            return None
        return torch.cat((past_mask, torch.ones(batch, new_len, dtype=torch.bool, device=device)), dim=1)
    mask = attention_mask.to(device=device, dtype=torch.bool)
    if mask.dim() != 2 or mask.shape[0] != batch:
        raise BackboneInputError(f"attention_mask must be Bool[B={batch}, T], got shape {tuple(attention_mask.shape)}")
    if mask.shape[1] == past_len + new_len:
        return mask
    if mask.shape[1] == new_len:
        if past_len == 0:
            return mask
        if past_mask is None:
            past_mask = torch.ones(batch, past_len, dtype=torch.bool, device=device)
        return torch.cat((past_mask, mask), dim=1)
    raise BackboneInputError(
        f"attention_mask has {mask.shape[1]} columns; expected the new tokens ({new_len}) or cached + new "
        f"tokens ({past_len + new_len})"
    )


def default_position_ids(key_mask: torch.Tensor | None, batch: int, past_len: int, new_len: int,
                         device: torch.device) -> torch.Tensor:
    """1-D positions of the new tokens: counting real tokens only, so left padding does not shift them."""
    if key_mask is None:
        return (torch.arange(new_len, device=device) + past_len).unsqueeze(0).expand(batch, new_len)
    positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)
    return positions[:, -new_len:]


def attention_mask_4d(key_mask: torch.Tensor | None, past_len: int, new_len: int,
                      device: torch.device) -> torch.Tensor | None:
    """Bool ``[B|1, 1, T, S]`` causal & padding mask; None when SDPA's own causal flag suffices.

    Every query may always see its own key, so rows of padding tokens are never all-masked (which
    would give NaN); their outputs are ignored anyway.
    """
    total = past_len + new_len
    if key_mask is None and (past_len == 0 or new_len == 1):
        return None
    q_pos = torch.arange(new_len, device=device) + past_len
    k_pos = torch.arange(total, device=device)
    causal = k_pos[None, :] <= q_pos[:, None]
    if key_mask is None:
        return causal[None, None]
    mask = causal[None] & key_mask[:, None, :]
    mask = mask | (k_pos[None, :] == q_pos[:, None])[None]
    return mask[:, None]


# --- the decoder ---------------------------------------------------------------------------------------


class ARAttention(nn.Module):
    """Causal GQA self-attention with QK RMSNorm, RoPE and a KV cache; optional generation Q/K/V/O."""

    def __init__(self, config: Mammoth2ARConfig, layer_index: int, attention_expert: bool, plan: ExpertPlan):
        super().__init__()
        self.layer_index = layer_index
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        d, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else nn.Identity()
        self.has_expert = attention_expert
        if attention_expert:  # QK norms stay shared, as in the reference's attention experts
            self.gen_q_proj = plan.make_expert(self.q_proj, config.init_std)
            self.gen_k_proj = plan.make_expert(self.k_proj, config.init_std)
            self.gen_v_proj = plan.make_expert(self.v_proj, config.init_std)
            self.gen_o_proj = plan.make_expert(self.o_proj, config.init_std)

    def _project(self, x: torch.Tensor, gen_mask: TokenRoute | None, name: str) -> torch.Tensor:
        text = getattr(self, name)
        if not self.has_expert:
            return text(x)
        return route_tokens(x, gen_mask, text, getattr(self, "gen_" + name))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, gen_mask: TokenRoute | None, cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self._project(x, gen_mask, "q_proj").view(b, t, self.num_heads, self.head_dim)
        k = self._project(x, gen_mask, "k_proj").view(b, t, self.num_kv_heads, self.head_dim)
        v = self._project(x, gen_mask, "v_proj").view(b, t, self.num_kv_heads, self.head_dim)
        q = apply_rope(self.q_norm(q).transpose(1, 2), cos, sin)
        k = apply_rope(self.k_norm(k).transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)
        out = scaled_dot_product_gqa(q, k, v, mask=mask, is_causal=is_causal)
        out = out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self._project(out, gen_mask, "o_proj")


class ARDecoderLayer(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))`` with the FFN routed by token id."""

    def __init__(self, config: Mammoth2ARConfig, layer_index: int, plan: ExpertPlan):
        super().__init__()
        experts_here = plan.has_experts(layer_index, config.num_layers)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = ARAttention(config, layer_index, experts_here and plan.routes_attention, plan)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.has_ffn_expert = experts_here and plan.routes_ffn
        if self.has_ffn_expert:
            self.gen_mlp = plan.make_expert(self.mlp, config.init_std)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, gen_mask: TokenRoute | None, cache: KVCache | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, gen_mask, cache)
        h = self.post_attention_layernorm(x)
        if self.has_ffn_expert:
            return x + route_tokens(h, gen_mask, self.mlp, self.gen_mlp)
        return x + self.mlp(h)


def _up_to_self(total_len: int, past_len: int, device: torch.device) -> torch.Tensor:
    """Bool ``[T, S]``: which of ``S = total_len`` keys (cached + new) each of the ``T`` new tokens may read:
    those not later than itself."""
    q_pos = torch.arange(past_len, total_len, device=device)
    return torch.arange(total_len, device=device)[None, :] <= q_pos[:, None]


def _shifted(ids: torch.Tensor, visible: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each key's predecessor (``step = -1``) or successor (``step = 1``): its id ``[B, S]`` and whether
    it is visible text (False past either end)."""
    none = torch.zeros_like(visible[:, :1])
    if step < 0:
        return torch.cat((ids[:, :1], ids[:, :-1]), dim=1), torch.cat((none, visible[:, :-1]), dim=1)
    return torch.cat((ids[:, 1:], ids[:, -1:]), dim=1), torch.cat((visible[:, 1:], none), dim=1)


class TextCopy(nn.Module):
    """Logits for one digit of a generation token, read from the earlier text tokens by a pointer.

    A query from the final hidden state at position i scores every earlier visible text token j by
    ``q(x_i) . key[id_j]`` (and a null slot, whose value is 0); the result is the attention-weighted
    sum of ``value[id_j] + value_prev[id_{j-1}]``. Keys and values are tables on token ids, not hidden
    states, so "green" adds the same colour logits whatever shape it was paired with in training:
    the pointer can draw a colour-shape pair that no training prompt named. ``value_prev`` reads
    the word before, so a shape word can carry the colour written just before it. With
    ``gen_copy_values = "previous"`` there is no ``value``: a word's own id never brings logits, so a
    shape word cannot carry the colours seen with that shape. ``"token"`` keeps only ``value``.

    ``keys = "hidden"`` (``gen_copy_keys``) takes the keys from the text tokens' final hidden states
    instead of id tables; the values stay tables on ids. In a cell-first plan ("at bottom right a green
    triangle") the state of "green" knows its cell, so an image slot can point at the colour word of its
    own cell. ``"split-next"`` then sends the pointed word's value to the colour digit and the *next*
    word's (``value_next``, "triangle") to the other digit of a two-digit token, the structure: both the
    colour and the shape of a cell come from ids, whatever pairs were seen.

    With ``alone`` (``gen_copy_alone``) the null slot brings a learned value too (``null_value``): in
    the rows that take the digit from the pointer alone, it is what a slot reads when no word names it.
    With ``from_image`` (``gen_copy_from_image``, hidden keys) the earlier image tokens are keys too, each
    bringing its own pointed digit through ``value_code`` (starting as the identity): a patch can take
    the colour of the patches of its object drawn before it, which no word names when the prompt has no colour.

    The tables start as N(0, 1) keys and zero values read through ``value_gain``: with the backbone's
    0.02-std initialisation and Adam's per-parameter step the attention stayed uniform and the values
    below 1 for a whole probe, and the hidden-state head did all the work.
    """

    value_gain = 8.0

    def __init__(self, hidden_size: int, text_vocab_size: int, out_size: int, dim: int,
                 values: str = "token-and-previous", other_size: int = 0, keys: str = "ids", alone: bool = False,
                 from_image: bool = False):
        super().__init__()
        self.dim = dim
        self.hidden_keys = keys == "hidden"
        self.query = nn.Linear(hidden_size, dim, bias=False)
        self.key: nn.Module = nn.Linear(hidden_size, dim, bias=False) if self.hidden_keys else nn.Embedding(text_vocab_size, dim)
        self.null_key = nn.Parameter(torch.zeros(dim))
        self.value = None if values == "previous" else nn.Embedding(text_vocab_size, out_size)
        self.value_prev = None if values in ("token", "split-next") else nn.Embedding(text_vocab_size, out_size)
        self.value_next = nn.Embedding(text_vocab_size, other_size) if values == "split-next" else None
        self.null_value = nn.Parameter(torch.zeros(out_size)) if alone else None
        self.value_code = nn.Embedding(out_size, out_size) if from_image else None

    def reset_tables(self) -> None:
        if self.hidden_keys:  # unit-variance queries and keys from RMS-normed states
            for proj in (self.query, self.key):
                nn.init.normal_(proj.weight, std=proj.weight.shape[1] ** -0.5)
        else:
            nn.init.normal_(self.key.weight, std=1.0)
        for table in (self.value, self.value_prev, self.value_next):
            if table is not None:
                nn.init.zeros_(table.weight)
        if self.value_code is not None:  # an image key brings its own digit (times value_gain)
            with torch.no_grad():
                self.value_code.weight.copy_(torch.eye(self.value_code.weight.shape[0]))

    def forward(self, x: torch.Tensor, ids: torch.Tensor, visible: torch.Tensor, allowed: torch.Tensor,
                key_states: torch.Tensor | None = None,
                image: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x [B, T, D]`` queries; ``ids [B, S]`` ids of all keys (clamped into the text vocabulary;
        ``S >= T``, the last ``T`` are the queries' own tokens); ``visible [B, S]`` the visible text
        tokens; ``allowed [B, T, S]`` which keys each query may read (visible, not later than itself);
        ``key_states [B, S, D]`` the final hidden states of all keys (``keys = "hidden"`` only).
        Returns logits ``[B, T, out_size]`` to add to the pointed digit's head and, with ``"split-next"``,
        ``[B, T, other_size]`` for the other digit (else None). A token whose predecessor (successor) is
        not visible text reads no ``value_prev`` (``value_next``). ``image`` (``from_image`` only): each
        key's pointed digit if it is an image token (-1 if not) ``[B, S]``, and which of them each query may
        read ``[B, T, S]``."""
        q = self.query(x)
        if self.hidden_keys:
            if key_states is None:
                raise BackboneInputError("gen_copy_keys='hidden' needs the hidden states of the keys")
            keys = self.key(key_states)
        else:
            keys = self.key(ids)
        if self.value_next is not None:  # a query never reads its own token, whose next word it has not seen
            t, s_len = x.shape[1], ids.shape[1]
            own = torch.arange(s_len, device=ids.device)[None, :] == torch.arange(s_len - t, s_len, device=ids.device)[:, None]
            allowed = allowed & ~own
        image_digit = None
        if self.value_code is not None:
            if image is None:
                raise BackboneInputError("gen_copy_from_image needs the image tokens' digits")
            image_digit, image_allowed = image
            allowed = allowed | image_allowed
        scores = q @ keys.transpose(1, 2) * self.dim ** -0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        null = (q @ self.null_key.to(q.dtype)).unsqueeze(-1) * self.dim ** -0.5
        weights = torch.softmax(torch.cat((null, scores), dim=-1), dim=-1)
        null_weight, weights = weights[..., :1], weights[..., 1:]
        values = 0.0
        if self.value_prev is not None:
            prev, prev_ok = _shifted(ids, visible, -1)
            values = self.value_prev(prev) * prev_ok.unsqueeze(-1).to(self.value_prev.weight.dtype)
        if self.value is not None:
            values = values + self.value(ids)
        if image_digit is not None:  # an image key brings its own digit through value_code
            values = torch.where((image_digit >= 0).unsqueeze(-1), self.value_code(image_digit.clamp(min=0)), values)
        out = weights @ (values * self.value_gain).to(weights.dtype)
        if self.null_value is not None:
            out = out + null_weight * (self.null_value * self.value_gain).to(weights.dtype)
        if self.value_next is None:
            return out, None
        nxt, nxt_ok = _shifted(ids, visible, 1)
        if image_digit is not None:  # an image key brings nothing to the other digit
            nxt_ok = nxt_ok & (image_digit < 0)
        other = self.value_next(nxt) * nxt_ok.unsqueeze(-1).to(self.value_next.weight.dtype)
        return out, weights @ (other * self.value_gain).to(weights.dtype)


class TextPointer(nn.Module):
    """A pointer-generator on the text logits (``text_copy = true``, an extension).

    The next text token is drawn from ``(1 - g) softmax(head) + g p_copy``: ``g = sigmoid(gate(x_i))``
    and ``p_copy`` puts the attention weight of each earlier visible text token j on its id. Keys are
    tables on ids, ``key_prev[id_(j-1)] + key[id_j]``, and the query comes from the final hidden state:
    after writing "green" the query learns to match ``key_prev["green"]``, the key of whatever followed
    "green" in the prompt. Nothing in it depends on which words were seen together, so a plan can copy
    "green triangle" from a prompt although no training text held that pair; the text head alone learns
    never to write it. Returns text logits whose softmax is that mixture and whose logsumexp is the
    head's, so the text block keeps its weight against the generation block in the model's joint
    softmax (log-probabilities alone started a joint run at NTP 27 against the preset's ~21: 1,024
    generation logits near 0 against text logits below 0).
    """

    def __init__(self, hidden_size: int, text_vocab_size: int, dim: int):
        super().__init__()
        self.dim = dim
        self.query = nn.Linear(hidden_size, dim, bias=False)
        self.key = nn.Embedding(text_vocab_size, dim)
        self.key_prev = nn.Embedding(text_vocab_size, dim)
        self.gate = nn.Linear(hidden_size, 1)

    def reset_tables(self) -> None:
        """N(0, 1) keys, as for :class:`TextCopy`: at 0.02 std a pointer stays unused; the gate starts at 0.12."""
        nn.init.normal_(self.key.weight, std=1.0)
        nn.init.normal_(self.key_prev.weight, std=1.0)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, -2.0)

    def forward(self, x: torch.Tensor, text_logits: torch.Tensor, ids: torch.Tensor, visible: torch.Tensor,
                allowed: torch.Tensor) -> torch.Tensor:
        """``x [B, T, D]``, ``text_logits [B, T, V]``; ``ids``, ``visible`` ``[B, S]`` and ``allowed
        [B, T, S]`` as for :class:`TextCopy`. Returns logits ``[B, T, V]`` (see the class). A query
        with no key it may read takes the head alone."""
        prev, prev_ok = _shifted(ids, visible, -1)
        keys = self.key(ids) + self.key_prev(prev) * prev_ok.unsqueeze(-1).to(self.key.weight.dtype)
        q = self.query(x).float()
        scores = (q @ keys.float().transpose(1, 2) * self.dim ** -0.5).masked_fill(~allowed, float("-inf"))
        any_key = allowed.any(-1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(~any_key, 0.0), dim=-1) * any_key
        b, t, s = weights.shape
        p_copy = weights.new_zeros(b, t, text_logits.shape[-1]).scatter_add_(2, ids[:, None, :].expand(b, t, s), weights)
        gate = self.gate(x).float().masked_fill(~any_key, float("-inf"))
        logits = text_logits.float()
        norm = torch.logsumexp(logits, dim=-1, keepdim=True)
        head = logits - norm + F.logsigmoid(-gate)
        copied = torch.log(p_copy + 1e-9) + F.logsigmoid(gate)
        return torch.logaddexp(head, copied) + norm


class Mammoth2AR(nn.Module):
    """The ``mammoth2-ar`` backbone (see the module docstring)."""

    def __init__(self, config: Mammoth2ARConfig | None = None):
        super().__init__()
        config = config or Mammoth2ARConfig()
        self.config = config
        self.tuskml_config = config
        self.experts = tuskml.create("experts", config.experts)
        self.experts.layer_range(config.num_layers)  # fail early if the range does not fit
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_layers
        self.text_vocab_size = config.text_vocab_size
        self.gen_vocab_size = config.gen_vocab_size
        self.gen_vocab_start = config.text_vocab_size

        self.embed_tokens = nn.Embedding(config.text_vocab_size, config.hidden_size)
        self.gen_factors: tuple[int, ...] = ()
        if config.gen_head == "factorized":
            if not config.gen_factors:
                raise BackboneInputError(
                    "gen_head='factorized' needs gen_factors (the radices of a generation token's digits); a "
                    "mammoth2 model derives them from a product-quantised visual tokenizer (num_codebooks > 1)"
                )
            self.gen_factors = tuple(config.gen_factors)
            # one embedding table and one head per digit; a token's embedding / logit is their sum
            self.gen_embed_factors = nn.ModuleList(nn.Embedding(f, config.hidden_size) for f in self.gen_factors)
            self.gen_head_factors = nn.ModuleList(nn.Linear(config.hidden_size, f, bias=False) for f in self.gen_factors)
        else:
            self.gen_embed_tokens = nn.Embedding(config.gen_vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ARDecoderLayer(config, i, self.experts) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.text_vocab_size, bias=False)
        if not self.gen_factors:
            self.gen_head = nn.Linear(config.hidden_size, config.gen_vocab_size, bias=False)
        self.copy: TextCopy | None = None
        if config.gen_copy_digit is not None:
            if not self.gen_factors or config.gen_copy_digit >= len(self.gen_factors):
                raise BackboneInputError(
                    f"gen_copy_digit={config.gen_copy_digit} names no digit of the generation tokens "
                    f"(gen_factors {self.gen_factors}); it needs gen_head = 'factorized' and a digit below {len(self.gen_factors)}"
                )
            if config.gen_copy_values == "split-next" and len(self.gen_factors) != 2:
                raise BackboneInputError(f"gen_copy_values={config.gen_copy_values!r} needs a two-digit generation token, "
                                         f"got gen_factors {self.gen_factors}")
            self.copy = TextCopy(config.hidden_size, config.text_vocab_size, self.gen_factors[config.gen_copy_digit],
                                 config.gen_copy_dim, values=config.gen_copy_values,
                                 other_size=self.gen_factors[1 - config.gen_copy_digit] if len(self.gen_factors) == 2 else 0,
                                 keys=config.gen_copy_keys, alone=config.gen_copy_alone,
                                 from_image=config.gen_copy_from_image)
        #: inference knob: the weight of :class:`TextCopy`'s added logits (1 in training); see ``Mammoth2Pipeline.generate``
        self.copy_scale = 1.0
        self.pointer = TextPointer(config.hidden_size, config.text_vocab_size, config.gen_copy_dim) if config.text_copy else None
        self.register_buffer("inv_freq", rope_inverse_frequencies(config.head_dim, config.rope_theta), persistent=False)
        self._init_weights()
        if config.tie_text_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self) -> None:
        init_linear_weights(self, self.config.init_std)
        for pointer in (self.copy, self.pointer):
            if pointer is not None:
                pointer.reset_tables()
        if self.experts.routes_ffn and self.config.experts.init == "copy":
            for text_module, gen_module in self.expert_pairs():
                gen_module.load_state_dict(text_module.state_dict())

    def expert_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(shared text module, its generation expert) for every expert in the backbone."""
        pairs: list[tuple[nn.Module, nn.Module]] = []
        for layer in self.layers:
            if layer.has_ffn_expert:
                pairs.append((layer.mlp, layer.gen_mlp))
            if layer.self_attn.has_expert:
                for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    pairs.append((getattr(layer.self_attn, name), getattr(layer.self_attn, "gen_" + name)))
        return pairs

    # --- inputs --------------------------------------------------------------------------------------

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise BackboneInputError(
                f"input_ids must be an integer tensor [B, T], got {type(input_ids).__name__} "
                f"{tuple(getattr(input_ids, 'shape', ()))} {getattr(input_ids, 'dtype', '')}"
            )
        check_id_range(input_ids, self.text_vocab_size, self.gen_vocab_size)

    def generation_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool ``[B, T]``: True where the token is a generation (visual) token and so uses the experts."""
        return input_ids >= self.gen_vocab_start

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[B, T, D]``: text table for text ids, generation table for generation ids."""
        self._check_ids(input_ids)
        return self._embed_checked(input_ids)

    def _embed_checked(self, input_ids: torch.Tensor) -> torch.Tensor:
        gen_mask = self.generation_mask(input_ids)
        text = self.embed_tokens(input_ids.clamp(max=self.text_vocab_size - 1))
        gen = self.gen_embed((input_ids - self.gen_vocab_start).clamp(min=0))
        return torch.where(gen_mask.unsqueeze(-1), gen, text)

    def gen_embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[..., D]`` of generation codes (ids minus ``gen_vocab_start``) ``[...]``."""
        if not self.gen_factors:
            return self.gen_embed_tokens(codes)
        digits = mixed_radix_digits(codes, self.gen_factors)
        return sum(table(digits[..., i]) for i, table in enumerate(self.gen_embed_factors))

    def gen_logits(self, x: torch.Tensor, copied: tuple[torch.Tensor, torch.Tensor | None] | None = None,
                   alone: torch.Tensor | None = None) -> torch.Tensor:
        """Generation logits ``[B, ..., gen_vocab_size]`` of final hidden states ``x [B, ..., D]``;
        ``copied`` (:class:`TextCopy`'s logits, times ``copy_scale``) is added to digit ``gen_copy_digit``
        (and, with ``gen_copy_values = "split-next"``, its second part to the other digit). In the rows
        where ``alone`` (Bool[B]) is True that digit has no head: its logits are the pointer's alone."""
        if not self.gen_factors:
            return self.gen_head(x)
        out = None
        for digit, head in enumerate(self.gen_head_factors):  # logit(i, j, ...) = a_i + b_j + ...
            part = head(x)
            if alone is not None and digit == self.config.gen_copy_digit:
                part = part * (~alone).to(part.dtype).view(-1, *[1] * (part.dim() - 1))
            if copied is not None:
                extra = copied[0] if digit == self.config.gen_copy_digit else copied[1]
                if extra is not None:
                    part = part + self.copy_scale * extra
            out = part if out is None else (out[..., :, None] + part[..., None, :]).flatten(-2)
        return out

    def _pointer_keys(self, input_ids: torch.Tensor, key_mask: torch.Tensor | None, cache: KVCache | None,
                      past_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the id pointers (:class:`TextCopy`, :class:`TextPointer`) read for the new tokens: the
        ids of all keys (cached + new, clamped into the text vocabulary), which of them are visible
        text, and ``allowed [B, T, S]``: the visible text up to each new token itself."""
        ids = input_ids
        if cache is not None:
            if past_len and (cache.token_ids is None or cache.token_ids.shape[1] != past_len):
                raise BackboneInputError("this KV cache holds no token ids for the id pointers "
                                         "(gen_copy_digit, text_copy); fill it with this backbone")
            ids = input_ids if not past_len else torch.cat((cache.token_ids, input_ids), dim=1)
            cache.token_ids = ids
        causal = _up_to_self(ids.shape[1], past_len, ids.device)
        visible = ids < self.gen_vocab_start
        if key_mask is not None:
            visible = visible & key_mask
        return ids.clamp(max=self.text_vocab_size - 1), visible, causal[None] & visible[:, None, :]

    def _image_digits(self, ids: torch.Tensor, key_mask: torch.Tensor | None,
                      past_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For ``gen_copy_from_image``: the pointed digit of each key (cached + new ids ``[B, S]``) that is a
        visible image token, -1 elsewhere, and ``[B, T, S]``: the image keys up to each new token itself."""
        is_image = ids >= self.gen_vocab_start
        if key_mask is not None:
            is_image = is_image & key_mask
        digit = mixed_radix_digits((ids - self.gen_vocab_start).clamp(min=0), self.gen_factors)[..., self.config.gen_copy_digit]
        causal = _up_to_self(ids.shape[1], past_len, ids.device)
        return torch.where(is_image, digit, -1), causal[None] & is_image[:, None, :]

    def _copy_alone(self, copy_alone: torch.Tensor | None, cache: KVCache | None, batch: int,
                    device: torch.device) -> torch.Tensor | None:
        """The rows whose pointed digit comes from the pointer alone (``gen_copy_alone``): those given,
        else those the cache kept from its prefill, else every row; None without ``gen_copy_alone``."""
        if not self.config.gen_copy_alone:
            if copy_alone is not None:
                raise BackboneInputError("copy_alone needs a backbone with gen_copy_alone = true")
            return None
        if copy_alone is None:
            copy_alone = cache.copy_alone if cache is not None and cache.copy_alone is not None \
                else torch.ones(batch, dtype=torch.bool, device=device)
        if copy_alone.shape != (batch,) or copy_alone.dtype != torch.bool:
            raise BackboneInputError(f"copy_alone must be a bool tensor [B={batch}], got "
                                     f"{tuple(copy_alone.shape)} {copy_alone.dtype}")
        if cache is not None:
            cache.copy_alone = copy_alone
        return copy_alone

    @staticmethod
    def _key_states(x: torch.Tensor, cache: KVCache | None, past_len: int) -> torch.Tensor:
        """Final hidden states of all keys (cached + new) for ``gen_copy_keys = "hidden"``."""
        if cache is None:
            return x
        if past_len and (cache.pointer_states is None or cache.pointer_states.shape[1] != past_len):
            raise BackboneInputError("this KV cache holds no hidden states for gen_copy_keys='hidden'; fill it with this backbone")
        states = x if not past_len else torch.cat((cache.pointer_states.to(x.dtype), x), dim=1)
        cache.pointer_states = states
        return states

    # --- forward -------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                output_hidden_states: bool = False, copy_alone: torch.Tensor | None = None) -> BackboneOutput:
        """Logits (and optionally all hidden states) for ``input_ids [B, T]``.

        ``input_ids`` always drive expert routing, even when ``inputs_embeds`` replaces the lookup.
        ``attention_mask`` (True = may be attended to) covers the new tokens or cached + new ones.
        Without ``position_ids``, positions count the unmasked tokens, which is right for left
        padding; pass them explicitly when the mask also hides real tokens (e.g. a CFG branch that
        masks the prompt). A ``past_key_values`` cache is extended in place; with ``use_cache`` and
        no cache a new one is started and returned. ``copy_alone`` (Bool[B], ``gen_copy_alone`` only):
        the rows whose pointed digit has no head (default: every row, or what the cache's prefill got).
        """
        self._check_ids(input_ids)
        b, t = input_ids.shape
        device = input_ids.device
        if inputs_embeds is None:
            x = self._embed_checked(input_ids)
        else:
            if inputs_embeds.shape != (b, t, self.hidden_size):
                raise BackboneInputError(
                    f"inputs_embeds must be [B={b}, T={t}, D={self.hidden_size}], got {tuple(inputs_embeds.shape)}"
                )
            x = inputs_embeds
        cache = past_key_values
        if cache is not None and not isinstance(cache, KVCache):
            raise BackboneInputError(f"past_key_values must be a KVCache from this backbone, got {type(cache).__name__}")
        if cache is None and use_cache:
            cache = KVCache(self.num_layers)
        past_len = cache.seq_length if cache is not None else 0

        key_mask = full_key_mask(attention_mask, cache.key_mask if cache is not None else None, b, past_len, t, device)
        if position_ids is None:
            position_ids = default_position_ids(key_mask, b, past_len, t, device)
        elif position_ids.shape != (b, t):
            raise BackboneInputError(f"position_ids must be [B={b}, T={t}], got {tuple(position_ids.shape)}")
        if cache is not None and key_mask is not None:
            cache.key_mask = key_mask
        mask = attention_mask_4d(key_mask, past_len, t, device)
        is_causal = mask is None and past_len == 0 and t > 1

        cos, sin = rope_cos_sin(position_ids, self.inv_freq, x.dtype)
        gen_mask = TokenRoute(self.generation_mask(input_ids)) if self.experts.routes_ffn else None
        hidden: list[torch.Tensor] = [x] if output_hidden_states else []
        for layer in self.layers:
            x = layer(x, cos, sin, mask, is_causal, gen_mask, cache)
            if output_hidden_states:
                hidden.append(x)
        x = self.norm(x)
        if output_hidden_states:
            hidden[-1] = x
        text_logits, copied = self.lm_head(x), None
        if self.copy is not None or self.pointer is not None:
            keys = self._pointer_keys(input_ids, key_mask, cache, past_len)
            if self.copy is not None:
                image = self._image_digits(cache.token_ids if cache is not None else input_ids, key_mask, past_len) \
                    if self.copy.value_code is not None else None
                copied = self.copy(x, *keys, key_states=self._key_states(x, cache, past_len) if self.copy.hidden_keys else None,
                                   image=image)
            if self.pointer is not None:
                text_logits = self.pointer(x, text_logits, *keys).to(x.dtype)
        alone = self._copy_alone(copy_alone, cache, b, device)
        logits = torch.cat((text_logits, self.gen_logits(x, copied, alone)), dim=-1)
        return BackboneOutput(logits=logits, hidden_states=tuple(hidden) if output_hidden_states else None,
                              past_key_values=cache if use_cache else None)

    # --- weights from transformers' Qwen3 -------------------------------------------------------------

    def load_qwen3_state_dict(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Copy a transformers ``Qwen3ForCausalLM`` state dict into this backbone.

        Returns the names of this backbone's tensors the checkpoint did not provide (the generation
        embedding, head and experts, which stay as initialised). A shape mismatch or a Qwen3 tensor
        with no counterpart here is an error.
        """
        own = self.state_dict()
        mapped: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            name = key[len("model."):] if key.startswith("model.") else key
            if name not in own:
                raise BackboneInputError(f"Qwen3 tensor {key!r} has no counterpart in mammoth2-ar")
            if own[name].shape != value.shape:
                raise BackboneInputError(
                    f"Qwen3 tensor {key!r} has shape {tuple(value.shape)}, mammoth2-ar expects {tuple(own[name].shape)}"
                )
            mapped[name] = value
        if self.config.tie_text_embeddings and "lm_head.weight" not in mapped and "embed_tokens.weight" in mapped:
            mapped["lm_head.weight"] = mapped["embed_tokens.weight"]
        self.load_state_dict(mapped, strict=False)
        return sorted(set(own) - set(mapped))

    def example_inputs(self) -> dict[str, Any]:
        """Two rows mixing text and generation ids (so both expert paths run), one left-padded."""
        g = torch.Generator().manual_seed(0)
        text = torch.randint(0, self.text_vocab_size, (2, 4), generator=g)
        gen = torch.randint(self.gen_vocab_start, self.gen_vocab_start + self.gen_vocab_size, (2, 3), generator=g)
        mask = torch.ones(2, 7, dtype=torch.bool)
        mask[1, :2] = False
        return {"input_ids": torch.cat((text, gen), dim=1), "attention_mask": mask, "output_hidden_states": True}
