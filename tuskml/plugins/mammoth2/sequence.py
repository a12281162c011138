"""Token layout of mammoth2 sequences, and batching with padding masks.

One sequence interleaves text ids, special ids and generation (visual) ids. A generated image is::

    [image_start] (w gen tokens, [eol]) * h [eof] [image_end]

A text-to-image training sample is ``[bos] prompt [image_start] rows [eof] [image_end] [eos]``; with
a *scene plan* (``Mammoth2Config.scene_plan``) the AR first writes the scene it will draw as text,
``[bos] prompt plan [image_start] rows ...``, and predicts the ``[image_start]`` that ends it; an
edit puts the instruction, then the source image as its own discrete tokens, before the target; an
understanding sample carries ``image_placeholder`` slots that the model fills with ViT features.

Besides the ids, every position carries a *role* (:class:`Role`). The model derives everything else
from the roles, so the layout lives in this one file:

* NTP labels: positions whose next token is a target (generated visual ids, the row/end structure
  of the target image, answer text, the final ``[eos]``);
* the aligner's ``text_mask`` (the prompt: every non-pad token before the target image) and
  ``visual_mask`` (the target's generation ids);
* classifier-free guidance: the unconditional branch masks the user's text (``PROMPT_TEXT``) and the
  scene plan written from it (``PLAN``) out of attention, and for edits the source image's tokens as
  well (``SOURCE_IMAGE``).

Generation ids are ``gen_vocab_start + code`` for a visual code in ``[0, codebook_size)``; this file
never hard-codes a special id, it reads them from the text tokenizer's ``special`` dict.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import attrs
import torch

from tuskml.core.errors import TuskmlError


class SequenceError(TuskmlError, ValueError):
    """A sequence that cannot be built: a missing special token, a wrong grid, a bad batch."""


class Role(enum.IntEnum):
    """What a position of a sequence is; stored per position in ``roles``."""

    PAD = 0
    PROMPT_SPECIAL = 1  # bos and image brackets of the prompt (never dropped)
    PROMPT_TEXT = 2  # the user's prompt / instruction / question (dropped by the uncond branch)
    SOURCE_IMAGE = 3  # discrete tokens (and their eol/eof) of an edit's source image
    PLACEHOLDER = 4  # slots filled with ViT features (understanding)
    TARGET_VISUAL = 5  # generation ids of the target image
    TARGET_SPECIAL = 6  # eol / eof / image_end / eos of the target
    ANSWER = 7  # answer text of an understanding sample (and its eos)
    PLAN = 8  # the AR's scene plan (text) before a target image, and the [image_start] that ends it


#: roles the NTP loss predicts (position i is trained on token i+1 when role[i+1] is one of these)
TARGET_ROLES = (Role.TARGET_VISUAL, Role.TARGET_SPECIAL, Role.ANSWER, Role.PLAN)
#: roles that form the prompt (the aligner's text condition)
PROMPT_ROLES = (Role.PROMPT_SPECIAL, Role.PROMPT_TEXT, Role.SOURCE_IMAGE, Role.PLACEHOLDER, Role.PLAN)
#: roles an unconditional (CFG) branch hides in every row it drops the text of
TEXT_ROLES = (Role.PROMPT_TEXT, Role.PLAN)

REQUIRED_SPECIALS = ("pad", "bos", "eos", "image_start", "image_end", "eol", "eof", "image_placeholder")


@attrs.frozen
class SpecialTokens:
    """The special ids the layout needs, read from a text tokenizer's ``special`` dict."""

    pad: int
    bos: int
    eos: int
    image_start: int
    image_end: int
    eol: int
    eof: int
    image_placeholder: int

    @classmethod
    def from_mapping(cls, special: Mapping[str, int], *, source: str = "text tokenizer") -> SpecialTokens:
        missing = [key for key in REQUIRED_SPECIALS if key not in special]
        if missing:
            raise SequenceError(
                f"{source} lacks special tokens {missing}; mammoth2 needs {list(REQUIRED_SPECIALS)} in its "
                f"`special` dict (has: {sorted(special)})"
            )
        return cls(**{key: int(special[key]) for key in REQUIRED_SPECIALS})


@attrs.frozen
class TokenLayout:
    """Builds the token sequences of one model: its specials, generation-id offset and image grid."""

    special: SpecialTokens
    gen_vocab_start: int
    codebook_size: int
    grid: tuple[int, int]  # (h, w) of the visual token grid
    num_placeholders: int = 0  # ViT tokens per image (understanding, and edits with edit_vit)
    question_first: bool = False  # understanding: the question before the image (Mammoth2Config)
    edit_vit: bool = False  # edits: ViT placeholders of the source after the instruction (edit_source_vit)

    @property
    def image_length(self) -> int:
        """Tokens of one image block, brackets included."""
        h, w = self.grid
        return 1 + h * (w + 1) + 2

    @property
    def generated_length(self) -> int:
        """Tokens the AR sampler produces after ``[image_start]``: rows with their ``[eol]``."""
        h, w = self.grid
        return h * (w + 1)

    def is_row_end(self, step: int) -> bool:
        """Whether sampling step ``step`` (0 = first token after ``[image_start]``) is a forced ``[eol]``."""
        w = self.grid[1]
        return step % (w + 1) == w

    # --- pieces ------------------------------------------------------------------------------------

    def image_rows(self, codes: torch.Tensor | Sequence[Sequence[int]]) -> list[int]:
        """``(w gen ids, [eol]) * h`` for a grid of visual codes ``[h, w]``."""
        grid = torch.as_tensor(codes)
        if grid.dim() != 2 or tuple(grid.shape) != tuple(self.grid):
            raise SequenceError(f"visual codes have shape {tuple(grid.shape)}, expected the grid {self.grid}")
        if grid.numel() and (int(grid.min()) < 0 or int(grid.max()) >= self.codebook_size):
            raise SequenceError(
                f"visual codes must lie in [0, {self.codebook_size}), got [{int(grid.min())}, {int(grid.max())}]"
            )
        out: list[int] = []
        for row in grid.tolist():
            out.extend(self.gen_vocab_start + c for c in row)
            out.append(self.special.eol)
        return out

    def codes_from_generated(self, generated: torch.Tensor) -> torch.Tensor:
        """Generated ids ``[B, h*(w+1)]`` (rows with eol) -> visual codes ``[B, h, w]``."""
        h, w = self.grid
        if generated.shape[-1] != self.generated_length:
            raise SequenceError(f"expected {self.generated_length} generated ids, got {generated.shape[-1]}")
        rows = generated.reshape(generated.shape[0], h, w + 1)[:, :, :w]
        return rows - self.gen_vocab_start

    # --- whole samples: (ids, roles) -----------------------------------------------------------------

    def _target_image(self, codes: torch.Tensor | None,
                      start_role: Role = Role.PROMPT_SPECIAL) -> tuple[list[int], list[Role]]:
        ids = [self.special.image_start]
        roles = [start_role]  # the prompt ends with [image_start] at inference
        if codes is None:
            return ids, roles
        rows = self.image_rows(codes)
        ids += rows + [self.special.eof, self.special.image_end, self.special.eos]
        roles += [Role.TARGET_SPECIAL if t == self.special.eol else Role.TARGET_VISUAL for t in rows]
        roles += [Role.TARGET_SPECIAL] * 3
        return ids, roles

    def generation(self, prompt_ids: Sequence[int], codes: torch.Tensor | None = None,
                   plan_ids: Sequence[int] | None = None) -> tuple[list[int], list[Role]]:
        """Text to image; without ``codes`` only the prompt (ending in ``[image_start]``). With
        ``plan_ids`` the scene plan follows the prompt, and it and its ``[image_start]`` are targets."""
        return self._plan_and_target(*self.plan_prompt(prompt_ids), codes, plan_ids)

    def _plan_and_target(self, ids: list[int], roles: list[Role], codes: torch.Tensor | None,
                         plan_ids: Sequence[int] | None) -> tuple[list[int], list[Role]]:
        """``ids`` / ``roles`` of a prompt, then the scene plan (if any), then the target image."""
        if plan_ids is None:
            tid, trole = self._target_image(codes)
        else:
            ids, roles = ids + list(plan_ids), roles + [Role.PLAN] * len(plan_ids)
            tid, trole = self._target_image(codes, Role.PLAN)
        return ids + tid, roles + trole

    def plan_prompt(self, prompt_ids: Sequence[int]) -> tuple[list[int], list[Role]]:
        """``[bos] prompt``: what a scene plan is written after."""
        return [self.special.bos, *prompt_ids], [Role.PROMPT_SPECIAL] + [Role.PROMPT_TEXT] * len(prompt_ids)

    def edit(self, source_codes: torch.Tensor, instruction_ids: Sequence[int],
             codes: torch.Tensor | None = None, plan_ids: Sequence[int] | None = None) -> tuple[list[int], list[Role]]:
        """The instruction, then the source image as discrete tokens, then (``plan_ids``) the target's
        scene plan, then the target image.

        The source comes right before the target, so every target token sits a fixed distance
        (one image block) after the source token it usually copies, whatever the instruction's
        length: with 1-D RoPE that is one relative offset to learn. Measured with the AR alone
        (4 min of edit-only training, greedy plans), source-then-instruction copied 0.28 of the
        held-out unedited codes and this order 0.55.
        """
        return self._plan_and_target(*self.edit_plan_prompt(source_codes, instruction_ids), codes, plan_ids)

    def edit_plan_prompt(self, source_codes: torch.Tensor, instruction_ids: Sequence[int]) -> tuple[list[int], list[Role]]:
        """``[bos] instruction [source image]``: what an edit's scene plan is written after. With
        ``edit_vit`` the source's ViT placeholders come first: ``[bos] instruction [image_start]
        placeholders [image_end] [source image]``; they belong to the source (CFG hides them with it)."""
        src = [self.special.image_start, *self.image_rows(source_codes), self.special.eof, self.special.image_end]
        ids = [self.special.bos, *instruction_ids]
        roles = [Role.PROMPT_SPECIAL] + [Role.PROMPT_TEXT] * len(instruction_ids)
        if self.edit_vit:
            vit_ids, vit_roles = self._placeholder_block()
            ids, roles = ids + vit_ids, roles + vit_roles
        ids += src
        roles += [Role.PROMPT_SPECIAL] + [Role.SOURCE_IMAGE] * (len(src) - 2) + [Role.PROMPT_SPECIAL]
        return ids, roles

    def _placeholder_block(self) -> tuple[list[int], list[Role]]:
        """``[image_start] placeholders [image_end]``: where the model puts an image's ViT features."""
        if self.num_placeholders <= 0:
            raise SequenceError("this model has no vision encoder: ViT image blocks need image placeholders")
        ids = [self.special.image_start, *[self.special.image_placeholder] * self.num_placeholders,
               self.special.image_end]
        return ids, [Role.PROMPT_SPECIAL] + [Role.PLACEHOLDER] * self.num_placeholders + [Role.PROMPT_SPECIAL]

    def understanding(self, question_ids: Sequence[int],
                      answer_ids: Sequence[int] | None = None) -> tuple[list[int], list[Role]]:
        """``[bos] [image_start] placeholders [image_end] question answer [eos]``; with
        ``question_first``, ``[bos] question [image_start] placeholders [image_end] answer [eos]``."""
        image, image_roles = self._placeholder_block()
        question, question_roles = list(question_ids), [Role.PROMPT_TEXT] * len(question_ids)
        if self.question_first:
            ids = [self.special.bos, *question, *image]
            roles = [Role.PROMPT_SPECIAL, *question_roles, *image_roles]
        else:
            ids = [self.special.bos, *image, *question]
            roles = [Role.PROMPT_SPECIAL, *image_roles, *question_roles]
        if answer_ids is not None:
            ids += [*answer_ids, self.special.eos]
            roles += [Role.ANSWER] * (len(answer_ids) + 1)
        return ids, roles


@attrs.frozen
class TokenBatch:
    """Padded ids with their masks. ``attention_mask`` is True at real (non-pad) tokens."""

    input_ids: torch.Tensor  # Long[B, T]
    attention_mask: torch.Tensor  # Bool[B, T]
    position_ids: torch.Tensor  # Long[B, T], 0 at each row's first real token
    roles: torch.Tensor  # Long[B, T] of Role values

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(*(t.to(device) for t in attrs.astuple(self, recurse=False)))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """1-D positions counting only real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def collate(samples: Sequence[tuple[Sequence[int], Sequence[Role]]], pad_id: int, *,
            padding_side: str = "right") -> TokenBatch:
    """Pad (ids, roles) samples to one length. Left padding lets a batch of prompts decode in lockstep."""
    if not samples:
        raise SequenceError("cannot collate an empty batch")
    if padding_side not in ("left", "right"):
        raise SequenceError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(len(ids) for ids, _ in samples)
    ids_t = torch.full((len(samples), length), pad_id, dtype=torch.long)
    roles_t = torch.full((len(samples), length), int(Role.PAD), dtype=torch.long)
    for i, (ids, roles) in enumerate(samples):
        if len(ids) != len(roles):
            raise SequenceError(f"sample {i}: {len(ids)} ids but {len(roles)} roles")
        n = len(ids)
        sl = slice(0, n) if padding_side == "right" else slice(length - n, length)
        ids_t[i, sl] = torch.as_tensor(list(ids), dtype=torch.long)
        roles_t[i, sl] = torch.as_tensor([int(r) for r in roles], dtype=torch.long)
    mask = roles_t != int(Role.PAD)
    return TokenBatch(ids_t, mask, positions_from_mask(mask), roles_t)


# --- masks the model derives from roles ------------------------------------------------------------


def _isin(roles: torch.Tensor, members: Sequence[Role]) -> torch.Tensor:
    return torch.isin(roles, torch.tensor([int(m) for m in members], device=roles.device))


def ntp_labels(input_ids: torch.Tensor, roles: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Labels aligned with the logits: position i predicts token i+1 when that token is a target."""
    labels = torch.full_like(input_ids, ignore_index)
    is_target = _isin(roles[:, 1:], TARGET_ROLES)
    labels[:, :-1] = torch.where(is_target, input_ids[:, 1:], torch.full_like(input_ids[:, 1:], ignore_index))
    return labels


def prompt_mask(roles: torch.Tensor) -> torch.Tensor:
    """The aligner's text condition: every non-pad prompt position."""
    return _isin(roles, PROMPT_ROLES)


def visual_mask(roles: torch.Tensor) -> torch.Tensor:
    """The aligner's visual condition: the target image's generation ids."""
    return roles == int(Role.TARGET_VISUAL)


def dropped_mask(roles: torch.Tensor, drop_text: torch.Tensor, drop_source: torch.Tensor) -> torch.Tensor:
    """Positions an unconditional branch hides: the user's text and a scene plan (per row
    ``drop_text``) and, per row ``drop_source``, the source image of an edit (its codes and, with
    ``edit_source_vit``, its ViT tokens). Both flags are Bool[B]; only edit rows may drop a source."""
    text = _isin(roles, TEXT_ROLES) & drop_text[:, None]
    source = _isin(roles, (Role.SOURCE_IMAGE, Role.PLACEHOLDER)) & drop_source[:, None]
    return text | source
