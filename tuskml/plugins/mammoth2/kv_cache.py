"""Key/value cache for autoregressive decoding with the ``mammoth2-ar`` backbone.

Keys and values live in preallocated buffers that double in length when full, so appending one
token per step copies nothing (``torch.cat`` per step would copy the whole cache each time: O(T^2)
traffic for T generated tokens). The cache also remembers the padding mask of every cached token
and hence each row's next RoPE position, so a caller may pass masks for the new tokens only.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer keys/values ``[B, H_kv, S, Dh]`` of the tokens seen so far.

    Updated in place by the backbone: a cache passed to ``forward`` is extended by that call. Use
    :meth:`clone` before branching two continuations from one prefix, and :meth:`select` to reorder
    or repeat batch rows (e.g. to duplicate a prompt for classifier-free guidance).
    """

    def __init__(self, num_layers: int, initial_capacity: int = 64):
        self.num_layers = num_layers
        self.initial_capacity = initial_capacity
        self._keys: list[torch.Tensor | None] = [None] * num_layers
        self._values: list[torch.Tensor | None] = [None] * num_layers
        self._lengths = [0] * num_layers
        #: Bool [B, S]: True for real tokens; None while no call has passed a padding mask.
        self.key_mask: torch.Tensor | None = None
        #: Long [B, S]: the ids of the cached tokens, kept only by backbones that read them back
        #: (``mammoth2-ar`` with ``gen_copy_digit`` or ``text_copy``); None otherwise.
        self.token_ids: torch.Tensor | None = None
        #: [B, S, D]: the final hidden states of the cached tokens (``gen_copy_keys = "hidden"``); else None.
        self.pointer_states: torch.Tensor | None = None
        #: Bool [B]: the rows whose pointed digit has no head (``gen_copy_alone``); else None.
        self.copy_alone: torch.Tensor | None = None

    @property
    def seq_length(self) -> int:
        """Number of cached tokens (per row, padding included)."""
        return self._lengths[0]

    def __len__(self) -> int:
        return self.seq_length

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``keys/values [B, H_kv, T, Dh]`` for ``layer``; return all cached keys/values (views)."""
        new = keys.shape[2]
        length = self._lengths[layer]
        buf_k, buf_v = self._keys[layer], self._values[layer]
        if keys.requires_grad or values.requires_grad:
            # writing into a buffer in place would invalidate earlier views autograd still needs
            if buf_k is not None and length:
                keys = torch.cat((buf_k[:, :, :length], keys), dim=2)
                values = torch.cat((buf_v[:, :, :length], values), dim=2)
            self._keys[layer], self._values[layer] = keys, values
            self._lengths[layer] = length + new
            return keys, values
        if buf_k is None or length + new > buf_k.shape[2]:
            capacity = max(self.initial_capacity, 2 * (length + new))
            shape = (*keys.shape[:2], capacity, keys.shape[3])
            grown_k = keys.new_empty(shape)
            grown_v = values.new_empty((*values.shape[:2], capacity, values.shape[3]))
            if buf_k is not None and length:
                grown_k[:, :, :length] = buf_k[:, :, :length]
                grown_v[:, :, :length] = buf_v[:, :, :length]
            buf_k, buf_v = grown_k, grown_v
            self._keys[layer], self._values[layer] = buf_k, buf_v
        elif buf_k.shape[0] != keys.shape[0]:
            raise ValueError(f"cache holds batch {buf_k.shape[0]} but layer {layer} got batch {keys.shape[0]}")
        buf_k[:, :, length:length + new] = keys
        buf_v[:, :, length:length + new] = values
        self._lengths[layer] = length + new
        return buf_k[:, :, :length + new], buf_v[:, :, :length + new]

    def get(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = self._lengths[layer]
        if self._keys[layer] is None:
            raise ValueError(f"layer {layer} has nothing cached")
        return self._keys[layer][:, :, :length], self._values[layer][:, :, :length]

    def select(self, batch_index: torch.Tensor) -> KVCache:
        """A new cache whose rows are ``self``'s rows ``batch_index`` (reorder, drop or repeat rows)."""
        out = KVCache(self.num_layers, self.initial_capacity)
        for layer in range(self.num_layers):
            if self._keys[layer] is not None:
                out._keys[layer] = self._keys[layer].index_select(0, batch_index.to(self._keys[layer].device))
                out._values[layer] = self._values[layer].index_select(0, batch_index.to(self._values[layer].device))
        out._lengths = list(self._lengths)
        for name in ("key_mask", "token_ids", "pointer_states", "copy_alone"):  # per-row state besides keys/values
            kept = getattr(self, name)
            if kept is not None:
                setattr(out, name, kept.index_select(0, batch_index.to(kept.device)))
        return out

    def clone(self) -> KVCache:
        """An independent copy (same rows), so two continuations can grow from one prefix."""
        any_buf = next((k for k in self._keys if k is not None), None)
        if any_buf is None:
            return KVCache(self.num_layers, self.initial_capacity)
        return self.select(torch.arange(any_buf.shape[0], device=any_buf.device))

    def __repr__(self) -> str:
        return f"KVCache(layers={self.num_layers}, seq_length={self.seq_length})"
