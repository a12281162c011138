"""Mammoth2Model: every part of the unified AR + diffusion model, composed from one nested config.

Data flow (training, one batch)::

    ids (prompt + target VQ tokens) ──> AR backbone (experts routed by id) ──> logits ──> NTP loss
                                            │ all hidden states
                                            ▼
                           aligner(text_mask = prompt, visual_mask = target's gen ids)
                                            ▼ cond tokens
    target image ─codec─> x1 ; noise x0 ; t ~ logit-normal (shifted)
                 x_t = t x1 + (1-t) x0 ──> DiT(x_t, t, cond, ref latents of edits) ──> FM loss
    loss = ntp_weight * NTP + fm_weight * FM      (the FM gradient reaches the backbone and experts)

Sizes shared by parts are derived here (:meth:`Mammoth2Model.resolve_config`), not trusted from the
sub-configs, so a preset stays consistent when one part is swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

import tuskml
from tuskml.core.errors import ConfigError, TuskmlError
from tuskml.plugins.mammoth2 import flow_matching as fm
from tuskml.plugins.mammoth2.answer_pointer import AnswerPointer, patch_digit_shares, pointer_word_logits
from tuskml.plugins.mammoth2.configs_model import Mammoth2Config, described_answer
from tuskml.plugins.mammoth2.sequence import (
    Role,
    SequenceError,
    SpecialTokens,
    TokenLayout,
    collate,
    dropped_mask,
    ntp_labels,
    positions_from_mask,
    prompt_mask,
    visual_mask,
)
from tuskml.plugins.mammoth2.vq import mixed_radix_digits


class Mammoth2InputError(TuskmlError, ValueError):
    """An image, prompt or batch handed to the mammoth2 model that it cannot use."""


# --- training samples ------------------------------------------------------------------------------


@attrs.frozen
class TextToImageSample:
    """A prompt and the image it describes (``image``: Float[3, H, W] in [-1, 1]); ``plan``: the
    image's scene as text, which a ``scene_plan`` model learns to write before the image."""

    prompt: str
    image: torch.Tensor
    plan: str | None = None


@attrs.frozen
class EditSample:
    """A source image, an instruction and the edited target image."""

    source: torch.Tensor
    instruction: str
    image: torch.Tensor
    plan: str | None = None  # the target's scene as text (see TextToImageSample)


@attrs.frozen
class UnderstandingSample:
    """An image, a question about it (may be empty: captioning) and the answer; ``plan``: the image
    described in words, which a ``describe_first`` model writes before answering a question."""

    image: torch.Tensor
    question: str
    answer: str
    plan: str | None = None


Sample = TextToImageSample | EditSample | UnderstandingSample


@attrs.frozen
class Mammoth2Output:
    """Losses of one training forward. ``loss = ntp_weight * ntp_loss + fm_weight * fm_loss (+ vq_loss)``;
    with ``edit_keep_gate``, ``ntp_loss`` includes ``keep_loss``."""

    loss: torch.Tensor
    ntp_loss: torch.Tensor
    fm_loss: torch.Tensor
    vq_loss: torch.Tensor
    keep_loss: torch.Tensor | None = None  # ``edit_keep_gate``'s BCE, inside ``ntp_loss`` (None without the gate)


# --- config resolution -----------------------------------------------------------------------------


def _with_fields(config: Any, **values: Any) -> Any:
    """``config`` with each of ``values`` set where the config class has that field (others untouched)."""
    names = {a.name for a in attrs.fields(type(config))}
    present = {k: v for k, v in values.items() if k in names and v is not None}
    try:
        return attrs.evolve(config, **present) if present else config
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{type(config).__qualname__}: derived sizes {present} are invalid: {exc}") from exc


def _projector(in_dim: int, out_dim: int, depth: int) -> nn.Module:
    """ViT features -> AR width: Linear, then (depth-1) x (GELU, Linear), as in LLaVA-style projectors."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


class Mammoth2Model(nn.Module):
    """Text tokenizer, VQ visual tokenizer, AR backbone (+experts), optional ViT + projector, aligner,
    DiT decoder and latent codec. ``config`` is the resolved config (derived sizes filled in)."""

    def __init__(self, config: Mammoth2Config | None = None):
        super().__init__()
        config = config if config is not None else Mammoth2Config()
        if not isinstance(config, Mammoth2Config):
            raise ConfigError(f"Mammoth2Model needs a Mammoth2Config, got {type(config).__qualname__}")
        size = config.image_size

        # tokenizers first: they fix the vocabularies and the visual grid
        self.text_tokenizer = tuskml.create("tokenizers", config.text_tokenizer)
        special = SpecialTokens.from_mapping(self.text_tokenizer.special,
                                             source=f"text tokenizer {tuskml.core.config.component_name(config.text_tokenizer)!r}")
        vq_cfg = _with_fields(config.visual_tokenizer, image_size=size)
        self.visual_tokenizer = tuskml.create("tokenizers", vq_cfg)
        codebook_size = int(self.visual_tokenizer.codebook_size)
        grid = tuple(int(g) for g in self.visual_tokenizer.grid_size(size))

        text_vocab = int(self.text_tokenizer.vocab_size)
        factors = None
        if getattr(config.backbone, "gen_head", "flat") == "factorized":
            factors = tuple(int(f) for f in getattr(self.visual_tokenizer, "codebook_factors", (codebook_size,)))
            if len(factors) < 2:
                raise ConfigError(
                    "backbone.gen_head = 'factorized' predicts a visual token digit by digit, which needs a "
                    "product-quantised visual tokenizer: set visual_tokenizer.num_codebooks >= 2 (or gen_head = 'flat')"
                )
        backbone_cfg = _with_fields(config.backbone, text_vocab_size=text_vocab, gen_vocab_size=codebook_size,
                                    gen_factors=factors)
        self.backbone = tuskml.create("backbones", backbone_cfg)
        if int(self.backbone.gen_vocab_start) < text_vocab:
            raise ConfigError(
                f"backbone's text vocabulary ({self.backbone.gen_vocab_start}) is smaller than the text tokenizer's "
                f"({text_vocab}); set backbone.text_vocab_size"
            )
        if int(self.backbone.gen_vocab_size) < codebook_size:
            raise ConfigError(
                f"backbone's generation vocabulary ({self.backbone.gen_vocab_size}) is smaller than the visual "
                f"codebook ({codebook_size}); set backbone.gen_vocab_size"
            )
        hidden = int(self.backbone.hidden_size)

        vit_cfg = None
        self.vision_encoder: nn.Module | None = None
        self.projector: nn.Module | None = None
        num_placeholders = 0
        if config.vision_encoder is not None:
            vit_cfg = _with_fields(config.vision_encoder, img_size=size)
            self.vision_encoder = tuskml.create("backbones", vit_cfg)
            self.projector = _projector(int(self.vision_encoder.feature_dim), hidden, config.projector_depth)
            num_placeholders = int(self.vision_encoder.num_tokens)
        elif config.edit_source_vit:
            raise ConfigError("edit_source_vit = true shows an edit's source to the AR as ViT tokens, but this "
                              "config has no vision_encoder; add one (e.g. [vision_encoder] type = \"timm-vit\")")

        self.codec = tuskml.create("codecs", config.codec)
        latent_channels = int(self.codec.latent_channels)
        downsample = int(self.codec.downsample)
        if size % downsample:
            raise ConfigError(f"image_size {size} is not divisible by the codec's downsampling factor {downsample}")
        refs_needed = None
        if config.plan_reference:  # the plan and an edit's source: two reference latents
            if getattr(config.decoder, "reference_images", "channel-concat") == "unsupported":
                raise ConfigError("plan_reference = true gives the decoder the plan as a reference latent, but the "
                                  "decoder has reference_images = 'unsupported'; set plan_reference = false")
            refs_needed = max(int(getattr(config.decoder, "max_ref_images", 2)), 2)
        decoder_cfg = _with_fields(config.decoder, in_channels=latent_channels, max_ref_images=refs_needed)
        self.decoder = tuskml.create("decoders", decoder_cfg)
        if int(self.decoder.in_channels) != latent_channels:
            raise ConfigError(
                f"decoder takes {self.decoder.in_channels} latent channels but the codec makes {latent_channels}"
            )
        aligner_cfg = _with_fields(config.aligner, in_dim=hidden, out_dim=int(self.decoder.cond_dim))
        self.aligner = tuskml.create("aligners", aligner_cfg)

        self.config = attrs.evolve(config, visual_tokenizer=vq_cfg, backbone=backbone_cfg, vision_encoder=vit_cfg,
                                   decoder=decoder_cfg, aligner=aligner_cfg)
        self.layout = TokenLayout(special=special, gen_vocab_start=int(self.backbone.gen_vocab_start),
                                  codebook_size=codebook_size, grid=grid, num_placeholders=num_placeholders,
                                  question_first=config.question_first, edit_vit=config.edit_source_vit)
        self.source_hints: nn.Embedding | None = None
        self.hint_factors: tuple[int, ...] = ()
        if config.source_hints:
            # one row per code (per digit of a product-quantised code, whose hint is the sum of its
            # digits' rows, so unseen digit combinations still get a hint), plus one for eol / eof
            factors = tuple(int(f) for f in getattr(self.visual_tokenizer, "codebook_factors", (codebook_size,)))
            self.hint_factors = factors if len(factors) > 1 else ()
            self.source_hints = nn.Embedding((sum(factors) if self.hint_factors else codebook_size) + 1, hidden)
            nn.init.zeros_(self.source_hints.weight)
        self.keep_gate: nn.Linear | None = None
        if config.edit_keep_gate:
            if self.source_hints is None:
                raise ConfigError("edit_keep_gate = true gates the copy of an edit's source code at each slot, "
                                  "but source_hints is off; set source_hints = true")
            self.keep_gate = nn.Linear(hidden, 1)
        self.visual_positions: nn.Embedding | None = None
        if config.visual_positions:  # one slot per generated token (rows with eol) plus eof
            self.visual_positions = nn.Embedding(self.layout.generated_length + 1, hidden)
            nn.init.normal_(self.visual_positions.weight, std=0.02)
        self.latent_size = size // downsample
        self.answer_pointer: AnswerPointer | None = None
        if config.answer_pointer_words:
            self._build_answer_pointer(config, hidden, grid)

    def _build_answer_pointer(self, config: Mammoth2Config, hidden: int, grid: tuple[int, ...]) -> None:
        words = config.answer_pointer_words
        if self.vision_encoder is None:
            raise ConfigError("answer_pointer_words reads answer words from the asked image's ViT tokens, but this "
                              "config has no vision_encoder; add one or set answer_pointer_words = []")
        factors = tuple(int(f) for f in getattr(self.visual_tokenizer, "codebook_factors", ()))
        if len(factors) < 2 or config.answer_pointer_digit >= len(factors):
            raise ConfigError(f"answer_pointer_digit = {config.answer_pointer_digit} names no digit of the visual "
                              f"tokenizer's codes (digits {factors or 'none: not product-quantised'})")
        ids = []
        for word in words:
            encoded = self.text_tokenizer.encode(word)
            if len(encoded) != 1:
                raise ConfigError(f"answer_pointer_words: {word!r} is {len(encoded)} tokens for the text tokenizer; "
                                  "each pointer word must be one token (e.g. the 'words' tokenizer)")
            ids.append(encoded[0])
        if len(set(ids)) != len(ids):
            raise ConfigError(f"answer_pointer_words has repeated words: {list(words)}")
        side = int(round(self.layout.num_placeholders ** 0.5))
        if side * side != self.layout.num_placeholders:
            raise ConfigError(f"answer_pointer_words needs a square grid of ViT tokens, got {self.layout.num_placeholders}")
        self.answer_token_grid = (side, side)
        self.answer_factors = factors
        patch_digit_shares(torch.zeros(1, *grid[:2], dtype=torch.long), factors[config.answer_pointer_digit],
                           self.answer_token_grid)  # fail now if the grids do not nest
        self.answer_pointer = AnswerPointer(hidden, factors[config.answer_pointer_digit], len(ids))
        self.register_buffer("answer_word_ids", torch.tensor(ids, dtype=torch.long), persistent=False)

    # --- small helpers ---------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def special(self) -> SpecialTokens:
        return self.layout.special

    def check_images(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        size = self.config.image_size
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise Mammoth2InputError(f"{name} must be a float tensor [B, 3, {size}, {size}] in [-1, 1], got {shape}")
        if tuple(images.shape[2:]) != (size, size):
            raise Mammoth2InputError(
                f"{name} are {tuple(images.shape[2:])} pixels but this model works at {size}x{size}; resize them"
            )
        return images.to(self.device, torch.float32)

    @torch.no_grad()
    def visual_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` -> discrete visual codes ``Long[B, h, w]``."""
        return self.visual_tokenizer.encode(self.check_images(images))

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(self.check_images(images))

    @torch.no_grad()
    def plan_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Visual codes ``Long[B, h, w]`` -> the plan's latents (VQ decode, then the codec)."""
        return self.encode_latents(self.visual_tokenizer.decode(codes).float().clamp(-1, 1))

    # --- batches ---------------------------------------------------------------------------------------

    def make_batch(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Tokenize samples into the keyword arguments of :meth:`forward` (right-padded)."""
        if not samples:
            raise Mammoth2InputError("make_batch needs at least one sample")
        size = self.config.image_size
        blank = torch.zeros(3, size, size)
        seqs, targets, sources, und = [], [], [], []
        has_target, has_source, has_und = [], [], []
        tok = self.text_tokenizer
        # one tokenizer pass for every image of the batch (per sample it dominated small-model steps)
        to_encode = [im for s in samples if isinstance(s, (TextToImageSample, EditSample))
                     for im in ((s.source, s.image) if isinstance(s, EditSample) else (s.image,))]
        codes_iter = iter(self.visual_codes(torch.stack(to_encode)).cpu()) if to_encode else iter(())
        for i, s in enumerate(samples):
            plan = None
            if self.config.scene_plan and isinstance(s, (TextToImageSample, EditSample)):
                if s.plan is None:
                    text = s.prompt if isinstance(s, TextToImageSample) else s.instruction
                    raise Mammoth2InputError(f"sample {i} ({text!r}) has no plan, but this model has "
                                             "scene_plan = true and learns to write one before each image")
                plan = tok.encode(s.plan)
            if isinstance(s, TextToImageSample):
                seqs.append(self.layout.generation(tok.encode(s.prompt), next(codes_iter), plan))
            elif isinstance(s, EditSample):
                source_codes, target_codes = next(codes_iter), next(codes_iter)
                seqs.append(self.layout.edit(source_codes, tok.encode(s.instruction), target_codes, plan))
            elif isinstance(s, UnderstandingSample):
                if self.vision_encoder is None:
                    raise Mammoth2InputError(f"sample {i} asks about an image, but this model has no vision_encoder")
                answer = s.answer
                if self.config.describe_first and s.question:  # a caption is its own description
                    if s.plan is None:
                        raise Mammoth2InputError(f"sample {i} ({s.question!r}) has no plan, but this model has "
                                                 "describe_first = true and learns to describe the image first")
                    answer = described_answer(s.plan, s.answer)
                seqs.append(self.layout.understanding(tok.encode(s.question), tok.encode(answer)))
            else:
                raise Mammoth2InputError(f"sample {i}: expected a TextToImageSample, EditSample or "
                                         f"UnderstandingSample, got {type(s).__qualname__}")
            is_gen = isinstance(s, (TextToImageSample, EditSample))
            targets.append(s.image if is_gen else blank)
            has_target.append(is_gen)
            sources.append(s.source if isinstance(s, EditSample) else blank)
            has_source.append(isinstance(s, EditSample))
            # the ViT's image: the asked-about one, or (edit_source_vit) an edit's source
            vit_image = (s.image if isinstance(s, UnderstandingSample) else
                         s.source if isinstance(s, EditSample) and self.config.edit_source_vit else None)
            und.append(blank if vit_image is None else vit_image)
            has_und.append(vit_image is not None)
        batch = collate(seqs, self.special.pad, padding_side="right")
        out = {
            "input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "roles": batch.roles,
            "target_images": torch.stack([t.float() for t in targets]), "has_target": torch.tensor(has_target),
            "source_images": torch.stack([t.float() for t in sources]), "has_source": torch.tensor(has_source),
        }
        if self.vision_encoder is not None:
            out["understanding_images"] = torch.stack([t.float() for t in und])
            out["has_understanding"] = torch.tensor(has_und)
            asked = [i for i, s in enumerate(samples) if isinstance(s, UnderstandingSample)]
            if self.answer_pointer is not None and asked:  # the pointer's values: the asked images' VQ digits
                shares = self.answer_digit_shares(out["understanding_images"][asked].to(self.device))
                out["understanding_shares"] = shares.new_zeros(len(samples), *shares.shape[1:]).index_copy(
                    0, torch.tensor(asked, device=shares.device), shares)  # zeros in rows that ask nothing
        return {k: v.to(self.device) for k, v in out.items()}

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """A small fixed batch (text-to-image, edit and, with a ViT, understanding) for checks."""
        g = torch.Generator().manual_seed(0)
        size = self.config.image_size

        def image() -> torch.Tensor:
            return torch.rand(3, size, size, generator=g) * 2 - 1

        samples: list[Sample] = [TextToImageSample("a red square", image(), plan="a square at top left"),
                                 EditSample(image(), "make it blue", image(), plan="a square at top left")]
        if self.vision_encoder is not None:
            samples.append(UnderstandingSample(image(), "how many circles?", "two",
                                               plan="at top left a red circle and at bottom right a blue circle"))
        return self.make_batch(samples)

    # --- the AR pass -----------------------------------------------------------------------------------

    def input_embeddings(self, input_ids: torch.Tensor, roles: torch.Tensor,
                         understanding_images: torch.Tensor | None = None,
                         has_understanding: torch.Tensor | None = None) -> torch.Tensor | None:
        """Token embeddings with ViT features (projected) at the image_placeholder slots, or None when
        the batch has no ViT image (the backbone then embeds the ids itself). ``understanding_images``
        are the asked-about images, or with ``edit_source_vit`` an edit row's source."""
        if understanding_images is None or has_understanding is None or not bool(has_understanding.any()):
            return None
        if self.vision_encoder is None or self.projector is None:
            raise Mammoth2InputError("understanding images given, but this model has no vision_encoder")
        rows = has_understanding.nonzero().squeeze(-1)
        feats = self.projector(self.vision_encoder(self.check_images(understanding_images[rows], "understanding images")))
        embeds = self.backbone.embed(input_ids)
        slots = roles[rows] == int(Role.PLACEHOLDER)
        per_row = slots.sum(-1)
        if bool((per_row != feats.shape[1]).any()):
            raise SequenceError(
                f"ViT rows have {per_row.tolist()} image_placeholder slots but the vision encoder makes "
                f"{feats.shape[1]} tokens per image"
            )
        row_embeds = embeds[rows]
        row_embeds = row_embeds.masked_scatter(slots[..., None], feats.to(row_embeds.dtype).reshape(-1))
        return embeds.index_copy(0, rows, row_embeds)

    def image_slots(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Long[B, T]: each image token's slot in its block (0 = first code after ``[image_start]``,
        eols and eof included), -1 elsewhere (text, specials, understanding placeholders)."""
        s = self.special
        t = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        last_start = torch.where(input_ids == s.image_start, t, torch.full_like(t, -1)).cummax(dim=1).values
        body = (input_ids >= self.layout.gen_vocab_start) | (input_ids == s.eol) | (input_ids == s.eof)
        slot = t - last_start - 1
        return torch.where(body & (last_start >= 0) & (slot <= self.layout.generated_length), slot, -1)

    def source_codes(self, input_ids: torch.Tensor, roles: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Long[B, L]: each row's source block (rows with eols, then eof) as ``source_hints`` indices
        (the code, or ``codebook_size`` for eol / eof), -1 for rows without a source or whose source
        is hidden (``visible`` False there: unconditional branches see no hints)."""
        length = self.layout.generated_length + 1
        is_source = roles == int(Role.SOURCE_IMAGE)
        out = torch.full((input_ids.shape[0], length), -1, dtype=torch.long, device=input_ids.device)
        rows = (visible & is_source).any(-1)
        if bool(rows.any()):
            ids = input_ids[rows][is_source[rows]].view(-1, length) - self.layout.gen_vocab_start
            out[rows] = torch.where(ids >= 0, ids, self.layout.codebook_size)
        return out

    def source_hint_ids(self, input_ids: torch.Tensor, roles: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Long[B, T]: at the position that predicts target slot j, the source's slot-j hint index;
        -1 elsewhere and in rows whose source is hidden (unconditional branches see no hints)."""
        source = self.source_codes(input_ids, roles, visible)
        t = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        target = (roles == int(Role.TARGET_VISUAL)) | (roles == int(Role.TARGET_SPECIAL))
        slots = torch.where(target, self.image_slots(input_ids), -1)
        # the target's [image_start] (the last one of an edit row) predicts slot 0
        last_start = torch.where(input_ids == self.special.image_start, t, -1).max(dim=1, keepdim=True).values
        predicts = torch.where(t == last_start, 0, torch.where(slots >= 0, slots + 1, -1))
        predicts = torch.where(predicts < source.shape[1], predicts, -1)
        hints = source.gather(1, predicts.clamp(min=0))
        return torch.where((predicts >= 0) & (hints >= 0), hints, -1)

    def _hint_embeddings(self, hints: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` embeddings of ``source_hint_ids`` (zero where -1)."""
        assert self.source_hints is not None
        valid = (hints >= 0).unsqueeze(-1)
        hints = hints.clamp(min=0)
        if not self.hint_factors:
            return self.source_hints(hints) * valid
        offsets = hints.new_tensor([sum(self.hint_factors[:g]) for g in range(len(self.hint_factors))])
        rows = mixed_radix_digits(hints, self.hint_factors) + offsets  # digit g's rows follow digit g-1's
        digit_sum = self.source_hints(rows).sum(-2)
        eol = self.source_hints.weight[-1]  # eol / eof slots (id codebook_size) have a row of their own
        return torch.where((hints == self.layout.codebook_size).unsqueeze(-1), eol, digit_sum) * valid

    def run_backbone(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                     position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                     output_hidden_states: bool = False, past_key_values: Any = None, use_cache: bool = False,
                     image_slots: torch.Tensor | None = None, source_hints: torch.Tensor | None = None,
                     copy_alone: torch.Tensor | None = None) -> Any:
        """The AR backbone on ``input_ids``. With ``visual_positions``, image tokens get their slot's
        embedding added; ``image_slots`` (Long[B, T], -1 = none) must be given when the ids do not
        hold the ``[image_start]`` of their block (one-token decoding steps), else it is derived.
        With ``source_hints``, ``source_hints`` (Long[B, T] from :meth:`source_hint_ids`, -1 = none)
        adds the edit source's hint embeddings; None adds none. ``copy_alone``: :meth:`copy_alone_rows` of the
        rows' roles; pass it whenever the logits of edit rows matter (the backbone alone takes every row as text to image)."""
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        extra = None
        if self.visual_positions is not None:
            slots = self.image_slots(input_ids) if image_slots is None else image_slots
            extra = self.visual_positions(slots.clamp(min=0)) * (slots >= 0).unsqueeze(-1)
        if self.source_hints is not None and source_hints is not None:
            hint = self._hint_embeddings(source_hints)
            extra = hint if extra is None else extra + hint
        if extra is not None:
            if inputs_embeds is None:
                inputs_embeds = self.backbone.embed(input_ids)
            inputs_embeds = inputs_embeds + extra.to(inputs_embeds.dtype)
        kwargs = {} if copy_alone is None else {"copy_alone": copy_alone}
        return self.backbone(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, past_key_values=past_key_values, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, **kwargs)

    def answer_digit_shares(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, K, C]``: for each ViT patch of ``images``, the share of its VQ cells holding each value of
        digit ``answer_pointer_digit`` (the values :class:`AnswerPointer` reads)."""
        assert self.answer_pointer is not None
        digit = self.config.answer_pointer_digit
        images = self.check_images(images)
        encode_digit = getattr(self.visual_tokenizer, "encode_digit", None)  # cheaper where the tokenizer has it
        digits = encode_digit(images, digit) if encode_digit is not None else \
            mixed_radix_digits(self.visual_codes(images), self.answer_factors)[..., digit]
        return patch_digit_shares(digits, self.answer_factors[digit], self.answer_token_grid)

    @staticmethod
    def vit_states(states: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
        """``states [B, T, D]`` at the ViT placeholders of ``roles`` -> ``[B, K, D]`` (every row has K of them)."""
        return states[roles == int(Role.PLACEHOLDER)].view(states.shape[0], -1, states.shape[-1])

    def point_answer_words(self, logits: torch.Tensor, final_hidden: torch.Tensor, roles: torch.Tensor,
                           shares: torch.Tensor, key_states: torch.Tensor | None = None) -> torch.Tensor:
        """``answer_pointer_words``: ``logits [B, T, V]`` (understanding rows) with the pointer words' columns
        split by :class:`AnswerPointer`. ``final_hidden [B, T, D]`` holds the queries and, unless
        ``key_states [B, K, D]`` is given (decoding), the keys at the ViT placeholders of ``roles``;
        ``shares [B, K, C]`` from :meth:`answer_digit_shares`."""
        assert self.answer_pointer is not None
        keys = self.vit_states(final_hidden, roles) if key_states is None else key_states
        text = self.layout.gen_vocab_start
        pointer = self.answer_pointer(final_hidden, keys, shares)
        return torch.cat((pointer_word_logits(logits[..., :text], self.answer_word_ids, pointer), logits[..., text:]), dim=-1)

    def answer_pointer_loss(self, final_hidden: torch.Tensor, roles: torch.Tensor, shares: torch.Tensor,
                            labels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``answer_pointer_words``: cross-entropy of :class:`AnswerPointer`'s split among the pointer words at
        the positions of ``rows`` (Bool[B]) whose NTP label is one of them (0 where there is none).

        It reads *detached* hidden states, so the backbone trains exactly as without the pointer, and the
        text head keeps its full loss: in an understanding-only probe, a pointer whose loss reached the
        backbone while the head no longer learned which colour to write lost presence and position
        questions (held out 0.84 / 0.86 -> 0.70 / 0.79, 96 questions each); the colour answers had been
        what made the states carry each object's colour."""
        assert self.answer_pointer is not None
        index = rows.nonzero().squeeze(-1)
        match = labels[index].unsqueeze(-1) == self.answer_word_ids  # [N, T, W]
        targets = torch.where(match.any(-1), match.long().argmax(-1), -1)
        if not bool((targets >= 0).any()):
            return final_hidden.sum() * 0.0
        final = final_hidden[index].detach()
        pointer = self.answer_pointer(final, self.vit_states(final, roles[index]), shares[index])
        return F.cross_entropy(pointer.reshape(-1, pointer.shape[-1]), targets.reshape(-1), ignore_index=-1)

    def copy_alone_rows(self, roles: torch.Tensor) -> torch.Tensor | None:
        """Bool[B]: the rows with no edit source, which take the colour digit from the pointer alone
        (``[backbone] gen_copy_alone``); None when the backbone has no such option set."""
        if not getattr(getattr(self.backbone, "config", None), "gen_copy_alone", False):
            return None
        return ~(roles == int(Role.SOURCE_IMAGE)).any(-1)

    def condition(self, hidden_states: Sequence[torch.Tensor], roles: torch.Tensor,
                  hidden_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligner on the prompt (text condition) and the target's visual tokens (visual condition).
        ``hidden_mask`` is False at pads and at positions hidden from this branch (CFG)."""
        text = prompt_mask(roles) & hidden_mask
        vis = visual_mask(roles) & hidden_mask
        if not bool(text.any(-1).all()):
            raise SequenceError("a row has no prompt token left for the aligner's text condition")
        return self.aligner(hidden_states, text, vis)

    # --- training forward ------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, roles: torch.Tensor,
                target_images: torch.Tensor | None = None, has_target: torch.Tensor | None = None,
                source_images: torch.Tensor | None = None, has_source: torch.Tensor | None = None,
                understanding_images: torch.Tensor | None = None,
                has_understanding: torch.Tensor | None = None,
                understanding_shares: torch.Tensor | None = None) -> Mammoth2Output:
        """Joint NTP + flow-matching losses of a batch from :meth:`make_batch`.

        In training mode the prompt text (and the edit source) are hidden from a random subset of
        rows (``prompt_dropout`` / ``source_dropout``) so the model also learns the unconditional
        branches of classifier-free guidance. Randomness comes from the global torch RNG.
        """
        cfg = self.config
        batch, _ = input_ids.shape
        device = input_ids.device
        if input_ids.shape != attention_mask.shape or input_ids.shape != roles.shape:
            raise Mammoth2InputError(
                f"input_ids {tuple(input_ids.shape)}, attention_mask {tuple(attention_mask.shape)} and roles "
                f"{tuple(roles.shape)} must have the same shape"
            )
        attention_mask = attention_mask.bool()
        has_target = has_target.bool() if has_target is not None else torch.zeros(batch, dtype=torch.bool, device=device)
        has_source = has_source.bool() if has_source is not None else torch.zeros(batch, dtype=torch.bool, device=device)

        if self.training and (cfg.prompt_dropout > 0 or cfg.source_dropout > 0):
            # only image-making rows need unconditional branches (an answer needs its question)
            drop_text = (torch.rand(batch, device=device) < cfg.prompt_dropout) & has_target
            drop_source = (torch.rand(batch, device=device) < cfg.source_dropout) & has_source
            drop_text = drop_text | drop_source  # the unconditional branch of dual guidance hides both
        else:
            drop_text = drop_source = torch.zeros(batch, dtype=torch.bool, device=device)
        hidden = dropped_mask(roles, drop_text, drop_source)
        visible = attention_mask & ~hidden

        embeds = self.input_embeddings(input_ids, roles, understanding_images, has_understanding)
        hints = self.source_hint_ids(input_ids, roles, visible) if self.source_hints is not None else None
        out = self.run_backbone(input_ids, visible, position_ids=positions_from_mask(attention_mask),
                                inputs_embeds=embeds, output_hidden_states=True, source_hints=hints,
                                copy_alone=self.copy_alone_rows(roles))

        labels = ntp_labels(input_ids, roles)
        code_labels = labels if hints is None else self.code_labels(hints, labels)
        if bool((code_labels != -100).any()):
            logits = out.logits
            ntp_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), code_labels.reshape(-1),
                                       ignore_index=-100)
        else:
            ntp_loss = out.logits.sum() * 0.0
        keep_loss = None
        if self.keep_gate is not None:
            assert hints is not None
            keep_loss = self.keep_loss(out.hidden_states[-1], hints, labels)
            ntp_loss = ntp_loss + keep_loss

        asked = has_understanding.bool() & ~has_source if has_understanding is not None else None
        if self.answer_pointer is not None and asked is not None and bool(asked.any()):
            if understanding_shares is None:
                raise Mammoth2InputError("this model has answer_pointer_words: pass understanding_shares "
                                         "(make_batch adds them)")
            ntp_loss = ntp_loss + self.answer_pointer_loss(out.hidden_states[-1], roles, understanding_shares, labels,
                                                           asked)

        fm_loss = self._flow_matching_loss(out.hidden_states, roles, visible, target_images, has_target,
                                           source_images, has_source & ~drop_source, input_ids)

        vq_loss = torch.zeros((), device=device)
        if cfg.train_visual_tokenizer and target_images is not None and bool(has_target.any()):
            vq_loss = self.visual_tokenizer(self.check_images(target_images[has_target])).loss

        loss = cfg.ntp_weight * ntp_loss + cfg.fm_weight * fm_loss + vq_loss
        return Mammoth2Output(loss=loss, ntp_loss=ntp_loss, fm_loss=fm_loss, vq_loss=vq_loss, keep_loss=keep_loss)

    def keep_targets(self, hints: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``edit_keep_gate``'s training targets (Bool[B, T] each): the positions that predict a target
        code with a source code at its slot, and whether the target code equals the source code there."""
        start, size = self.layout.gen_vocab_start, self.layout.codebook_size
        where = (hints >= 0) & (hints < size) & (labels >= start) & (labels < start + size)
        return where, (labels - start) == hints

    def code_labels(self, hints: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The NTP labels the cross-entropy sees: ``labels``, except that with ``keep_gate_code_loss =
        "changed"`` an edit's target slots whose code equals the source's are ignored (-100)."""
        if self.keep_gate is None or self.config.keep_gate_code_loss == "every":
            return labels
        kept, same = self.keep_targets(hints, labels)
        return labels.masked_fill(kept & same, -100)

    def keep_loss(self, final_hidden: torch.Tensor, hints: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of ``keep_gate`` against "the target code equals the source's" at every
        position that predicts a target code of a visible edit source (0 where there is none)."""
        assert self.keep_gate is not None
        where, keep = self.keep_targets(hints, labels)
        gate = self.keep_gate(final_hidden).squeeze(-1).float()
        if not bool(where.any()):
            return gate.sum() * 0.0
        return F.binary_cross_entropy_with_logits(gate[where], keep[where].float())

    def _flow_matching_loss(self, hidden_states: Sequence[torch.Tensor], roles: torch.Tensor,
                            visible: torch.Tensor, target_images: torch.Tensor | None, has_target: torch.Tensor,
                            source_images: torch.Tensor | None, use_source: torch.Tensor,
                            input_ids: torch.Tensor | None = None) -> torch.Tensor:
        if target_images is None or not bool(has_target.any()):
            return hidden_states[-1].sum() * 0.0
        rows = has_target.nonzero().squeeze(-1)
        if self.config.fm_max_rows:
            rows = rows[: self.config.fm_max_rows]
        cond, cond_mask = self.condition([h[rows] for h in hidden_states], roles[rows], visible[rows])
        with torch.no_grad():  # the codec is frozen: latents are data, not parameters
            x1 = self.encode_latents(target_images[rows])
        noise = torch.randn_like(x1)
        patch = int(getattr(self.decoder, "patch_size", 1))
        shift = self.config.fm_shift or fm.resolution_shift((x1.shape[-2] // patch) * (x1.shape[-1] // patch))
        t = fm.sample_t(x1.shape[0], shift=shift, device=x1.device)
        x_t = fm.interpolate(x1, noise, t)
        with_ref = use_source[rows] if source_images is not None else torch.zeros_like(rows, dtype=torch.bool)
        plan = None
        if self.config.plan_reference:
            if input_ids is None:
                raise Mammoth2InputError("plan_reference needs the input_ids of the batch (the target's codes)")
            h, w = self.layout.grid
            codes = input_ids[rows][roles[rows] == int(Role.TARGET_VISUAL)] - self.layout.gen_vocab_start
            if self.training and self.config.plan_noise > 0:
                swap = torch.rand(codes.shape, device=codes.device) < self.config.plan_noise
                codes = torch.where(swap, torch.randint_like(codes, self.layout.codebook_size), codes)
            plan = self.plan_latents(codes.view(rows.numel(), h, w))
        pred = torch.empty_like(x1)
        for group_has_ref in (False, True):
            idx = (with_ref == group_has_ref).nonzero().squeeze(-1)
            if idx.numel() == 0:
                continue
            refs = [plan[idx]] if plan is not None else []
            if group_has_ref:
                with torch.no_grad():
                    refs.append(self.encode_latents(source_images[rows[idx]]))
            pred = pred.index_copy(0, idx, self.decoder(x_t[idx], t[idx], cond[idx], cond_mask[idx], refs or None))
        return fm.flow_matching_loss(pred, x1, noise)
