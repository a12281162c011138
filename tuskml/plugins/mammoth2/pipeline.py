"""Mammoth2Pipeline: text-to-image, editing and image understanding with a :class:`Mammoth2Model`.

Generation runs the two stages of the serial AR-diffusion design::

    prompt ─> AR backbone: KV-cached sampling of h x w visual tokens (CFG on logits, the
              unconditional branch masks the prompt; forced [eol] at row ends; logits restricted
              to the visual vocabulary; temperature / top-k / top-p)
           ─> re-encode prompt + tokens once, all hidden states ─> aligner ─> condition tokens
           ─> DiT: Euler flow-matching steps through a diffusers scheduler (CFG within cfg_range;
              edits: dual guidance with the source as a reference latent) ─> codec decode ─> PIL

Understanding (``ask`` / ``caption``) feeds ViT features at the image_placeholder slots and samples
text with the same KV-cached loop. Every random draw comes from one ``torch.Generator`` seeded by
``seed``, so a seed fixes the output.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import math
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np
import torch

import tuskml
from tuskml.core.config import merge_overrides
from tuskml.core.errors import CheckpointError, ConfigError, TuskmlError
from tuskml.plugins.mammoth2 import flow_matching as fm
from tuskml.plugins.mammoth2.configs_model import Mammoth2Config, final_answer
from tuskml.plugins.mammoth2.model import Mammoth2InputError, Mammoth2Model
from tuskml.plugins.mammoth2.sequence import (
    Role,
    TokenBatch,
    collate,
    dropped_mask,
    positions_from_mask,
)
from tuskml.plugins.mammoth2.token_sampling import check_sampling_args, guided_logits, sample_next

CONFIG_FILE = "config.toml"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "text_tokenizer"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def preset_names() -> list[str]:
    root = importlib.resources.files("tuskml.plugins.mammoth2") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str, **overrides: Any) -> Mammoth2Config:
    """The config of a shipped preset (``presets/<name>.toml``), with optional overrides."""
    root = importlib.resources.files("tuskml.plugins.mammoth2") / "presets"
    path = root / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"no mammoth2 preset {name!r}; available: {', '.join(preset_names())}")
    with importlib.resources.as_file(path) as real:
        config = tuskml.load_config(real, Mammoth2Config)
    return merge_overrides(config, overrides)


# --- images <-> tensors ------------------------------------------------------------------------------


def to_pil(images: torch.Tensor) -> list[Any]:
    """Float ``[B, 3, H, W]`` in [-1, 1] -> PIL RGB images."""
    from PIL import Image

    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy(), mode="RGB") for a in arr]


def image_tensor(image: Any, size: int) -> torch.Tensor:
    """A PIL image, an HWC uint8 array, or a ``[3, H, W]`` / ``[1, 3, H, W]`` float tensor in [-1, 1]
    -> ``[3, size, size]`` float in [-1, 1] (PIL images are resized)."""
    if isinstance(image, torch.Tensor):
        t = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
        if t.dim() != 3 or t.shape[0] != 3:
            raise Mammoth2InputError(f"image tensor must be [3, H, W] in [-1, 1], got {tuple(image.shape)}")
        if tuple(t.shape[1:]) != (size, size):
            t = torch.nn.functional.interpolate(t[None].float(), size=(size, size), mode="bilinear",
                                                align_corners=False)[0]
        return t.float()
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a dependency
        raise Mammoth2InputError("pillow is needed to pass PIL images") from exc
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise Mammoth2InputError(f"expected a PIL image, an HWC uint8 array or a tensor, got {type(image).__name__}")
    image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()
    return arr / 127.5 - 1.0


def _image_text_pairs(image: Any, text: Any, verb: str, noun: str) -> tuple[bool, list[Any], list[Any]]:
    """(single?, images, texts): one image with many texts, or many images with one text, is
    broadcast; otherwise the two lists must have the same length."""
    single = not isinstance(image, (list, tuple)) and isinstance(text, str)
    images, texts = _as_list(image), _as_list(text)
    if len(images) == 1 and len(texts) > 1:
        images = images * len(texts)
    if len(texts) == 1 and len(images) > 1:
        texts = texts * len(images)
    if len(images) != len(texts):
        raise Mammoth2InputError(f"{verb} got {len(images)} images but {len(texts)} {noun}")
    return single, images, texts


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


@attrs.frozen
class GenerationResult:
    """What :meth:`Mammoth2Pipeline.generate` computed, for callers who want more than the images."""

    images: list[Any]  # PIL
    pixels: torch.Tensor  # Float[B, 3, H, W] in [-1, 1]
    visual_codes: torch.Tensor  # Long[B, h, w] sampled by the AR stage
    plan_pixels: torch.Tensor  # Float[B, 3, H, W]: the AR plan decoded by the VQ decoder (for inspection)
    scene_plans: list[str] | None = None  # the scene each image was drawn from (``scene_plan`` models)


def _text_hidden(roles: torch.Tensor, source: bool = False) -> torch.Tensor:
    """What an unconditional branch hides in every row: the text (prompt, plan) and, with ``source``, an edit's source."""
    every = torch.ones(roles.shape[0], dtype=torch.bool, device=roles.device)
    return dropped_mask(roles, every, every if source else ~every)


class Mammoth2Pipeline:
    """Inference around a :class:`Mammoth2Model` (see the module docstring).

    ``dtype="bfloat16"`` runs the model under bf16 autocast (weights stay float32).
    ``scheduler`` is a diffusers flow-matching scheduler class or instance (default
    ``FlowMatchEulerDiscreteScheduler``); see ``flow_matching.py``.
    """

    def __init__(self, model: Mammoth2Model, *, device: str | torch.device | None = None,
                 dtype: str = "float32", scheduler: Any = None):
        if not isinstance(model, Mammoth2Model):
            raise TuskmlError(f"Mammoth2Pipeline needs a Mammoth2Model, got {type(model).__qualname__}")
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.dtype = dtype
        self.scheduler = scheduler

    # --- construction / persistence ------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mammoth2Config, **kwargs: Any) -> Mammoth2Pipeline:
        return cls(Mammoth2Model(config), **kwargs)

    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0, overrides: dict[str, Any] | None = None,
                    **kwargs: Any) -> Mammoth2Pipeline:
        """A randomly initialised model of a shipped preset (``"tiny"``: 32x32 CPU toy, ``"small"``: GPU)."""
        config = load_preset(name, **(overrides or {}))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Mammoth2Model(config)
        return cls(model, **kwargs)

    def _portable_config(self, d: pathlib.Path) -> Mammoth2Config:
        """The resolved config, made independent of files outside ``d``: a tokenizer read from a path
        is written into ``d`` (and referred to relative to it), and a transformers backbone loaded from
        a folder is described by its config JSON instead (its weights are in model.safetensors)."""
        config = self.model.config
        tok_cfg, tok = config.text_tokenizer, self.model.text_tokenizer
        if getattr(tok_cfg, "path", None) is not None and callable(getattr(tok, "save", None)):
            tok.save(d / TOKENIZER_DIR)
            tok_cfg = attrs.evolve(tok_cfg, path=TOKENIZER_DIR)
        bb_cfg, lm = config.backbone, getattr(self.model.backbone, "lm", None)
        if getattr(bb_cfg, "model_path", None) is not None and hasattr(getattr(lm, "config", None), "to_json_string"):
            raw = json.loads(lm.config.to_json_string(use_diff=False))
            bb_cfg = attrs.evolve(bb_cfg, model_path=None, hf_config_json=json.dumps(raw, sort_keys=True))
        return attrs.evolve(config, text_tokenizer=tok_cfg, backbone=bb_cfg)

    def save_pretrained(self, directory: str | pathlib.Path) -> pathlib.Path:
        """``config.toml`` (the resolved config) + ``model.safetensors`` (weights with tuskml metadata),
        plus ``text_tokenizer/`` when the tokenizer came from a file: the folder is self-contained."""
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        config = self._portable_config(d)
        tuskml.save_config(config, d / CONFIG_FILE)
        tuskml.save(self.model, d / WEIGHTS_FILE, config=config)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | pathlib.Path, **kwargs: Any) -> Mammoth2Pipeline:
        from safetensors.torch import load_model

        d = pathlib.Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (d / name).is_file():
                raise CheckpointError(f"{d} is not a saved mammoth2 pipeline: {name} is missing "
                                      f"(write one with Mammoth2Pipeline.save_pretrained)")
        config = tuskml.load_config(d / CONFIG_FILE, "models")  # the file names its model: type = "mammoth2"
        if not isinstance(config, Mammoth2Config):
            raise CheckpointError(f"{d / CONFIG_FILE} configures model {type(config).__qualname__}, not mammoth2")
        tuskml.read_metadata(d / WEIGHTS_FILE)  # clear error for a truncated file
        tok_path = getattr(config.text_tokenizer, "path", None)
        if tok_path is not None and not pathlib.Path(tok_path).is_absolute() and (d / tok_path).exists():
            config = attrs.evolve(config, text_tokenizer=attrs.evolve(config.text_tokenizer, path=str(d / tok_path)))
        model = Mammoth2Model(config)
        try:
            missing, unexpected = load_model(model, str(d / WEIGHTS_FILE), strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"{d / WEIGHTS_FILE}: weights do not fit the model of {d / CONFIG_FILE}: {exc}") from exc
        if missing or unexpected:
            raise CheckpointError(f"{d / WEIGHTS_FILE}: weights do not match {d / CONFIG_FILE}: missing "
                                  f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
        return cls(model, **kwargs)

    # --- small helpers ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.dtype])

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    # --- stage 1: AR sampling with a KV cache ----------------------------------------------------------

    def _decode_loop(self, batch: TokenBatch, hidden: torch.Tensor | None, *, steps: int, guidance: float,
                     choose: Any, inputs_embeds: torch.Tensor | None = None,
                     image_tokens: bool = False, answer_shares: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Prefill the prompt, then yield logits and take the next token from ``choose(step, logits)``.

        Rows are the batch (conditional) and, when ``guidance != 1``, a copy of the batch with
        ``hidden`` positions masked out of attention (the unconditional branch). The generator
        yields guided logits ``[B, V]`` for each step; ``choose`` returns tokens ``Long[B]``.
        ``image_tokens``: the prompt ends with ``[image_start]`` and step k feeds slot k of an image
        block (for ``visual_positions``), and an edit's source hints follow the fed slot. With the
        model's ``keep_gate``, a slot whose gate (conditional branch) is open takes the source's code.
        ``answer_shares`` (``answer_pointer_words`` models, no CFG): :meth:`Mammoth2Model.answer_digit_shares`
        of the prompts' ViT images; the pointer words' logits then come from the pointer.
        """
        model = self.model
        ids, pad_mask, roles = batch.input_ids, batch.attention_mask, batch.roles
        visible = pad_mask
        use_cfg = guidance != 1.0 and hidden is not None
        if use_cfg:
            ids, roles = torch.cat([ids, ids]), torch.cat([roles, roles])
            visible = torch.cat([pad_mask, pad_mask & ~hidden])
            pad_mask = torch.cat([pad_mask, pad_mask])
            if inputs_embeds is not None:
                inputs_embeds = torch.cat([inputs_embeds, inputs_embeds])
        hints = source = None
        if model.source_hints is not None and image_tokens:  # step k feeds slot k and predicts slot k+1
            hints = model.source_hint_ids(ids, roles, visible)
            source = model.source_codes(ids, roles, visible)
        gated = source is not None and model.keep_gate is not None
        pointed = answer_shares is not None
        if pointed and use_cfg:
            raise Mammoth2InputError("the answer pointer decodes without guidance")
        states = gated or pointed
        positions = positions_from_mask(pad_mask)
        out = model.run_backbone(ids, visible, position_ids=positions, inputs_embeds=inputs_embeds, use_cache=True,
                                 source_hints=hints, output_hidden_states=states, copy_alone=model.copy_alone_rows(roles))
        cache = out.past_key_values
        next_pos = positions[:, -1:] + 1
        keys = None
        if pointed:  # the ViT tokens' final states stay the pointer's keys for every step
            keys = model.vit_states(out.hidden_states[-1], roles)

        def last_logits(out: Any) -> torch.Tensor:
            if not pointed:
                return out.logits[:, -1]
            return model.point_answer_words(out.logits[:, -1:], out.hidden_states[-1][:, -1:], roles, answer_shares,
                                            key_states=keys)[:, 0]

        logits = last_logits(out)
        rows = batch.input_ids.shape[0]
        for step in range(steps):
            guided = guided_logits(logits[:rows].float(), logits[rows:].float(), guidance) if use_cfg else logits.float()
            token = choose(step, guided)
            if gated and step < source.shape[1]:
                token = self._keep_source(token, out.hidden_states[-1][:rows, -1], source[:rows, step])
            yield token
            if step == steps - 1:
                break
            feed = torch.cat([token, token]) if use_cfg else token
            # slot of the fed token in its image block (image sampling starts right after [image_start])
            slots = torch.full_like(feed[:, None], step if image_tokens else -1)
            if source is not None:
                hints = source[:, step + 1:step + 2] if step + 1 < source.shape[1] else torch.full_like(slots, -1)
            out = model.run_backbone(feed[:, None], torch.ones_like(feed[:, None], dtype=torch.bool),
                                     position_ids=next_pos, past_key_values=cache, use_cache=True,
                                     image_slots=slots, source_hints=hints, output_hidden_states=states)
            cache = out.past_key_values
            next_pos = next_pos + 1
            logits = last_logits(out)

    def _keep_source(self, token: torch.Tensor, final_hidden: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``edit_keep_gate``: ``token`` (Long[B]), with the source's code (``source``, Long[B] hint
        indices) where the gate on ``final_hidden`` ([B, D]) is open and that slot holds a code."""
        layout = self.model.layout
        assert self.model.keep_gate is not None
        is_open = self.model.keep_gate(final_hidden).squeeze(-1) > 0
        has_code = (source >= 0) & (source < layout.codebook_size)
        return torch.where(is_open & has_code, layout.gen_vocab_start + source.clamp(min=0), token)

    def sample_visual_tokens(self, batch: TokenBatch, hidden: torch.Tensor | None, *, guidance: float,
                             temperature: float, top_k: int | None, top_p: float | None,
                             generator: torch.Generator, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Prompts ending in ``[image_start]`` (left-padded) -> generated ids ``Long[B, h*(w+1)]``.
        ``inputs_embeds``: the prompts' embeddings when they hold ViT tokens (:meth:`_vit_embeddings`)."""
        layout = self.model.layout
        start, stop = layout.gen_vocab_start, layout.gen_vocab_start + layout.codebook_size
        eol = layout.special.eol

        def choose(step: int, logits: torch.Tensor) -> torch.Tensor:
            if layout.is_row_end(step):
                return torch.full((logits.shape[0],), eol, dtype=torch.long, device=logits.device)
            visual = logits[:, start:stop]  # only visual codes may be sampled inside a row
            return start + sample_next(visual, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)

        tokens = list(self._decode_loop(batch, hidden, steps=layout.generated_length, guidance=guidance,
                                        choose=choose, image_tokens=True, inputs_embeds=inputs_embeds))
        return torch.stack(tokens, dim=1)

    # --- stage 2: condition + DiT ----------------------------------------------------------------------

    def _vit_embeddings(self, input_ids: torch.Tensor, roles: torch.Tensor,
                        images: torch.Tensor | None) -> torch.Tensor | None:
        """Embeddings of ``input_ids`` with ``images`` (one per row, or per row of a stack of
        branches) as ViT tokens at their placeholders; None when ``images`` is None (ids only)."""
        if images is None:
            return None
        reps = input_ids.shape[0] // images.shape[0]
        rows = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.model.input_embeddings(input_ids, roles, images.repeat(reps, 1, 1, 1), rows)

    def _conditions(self, batch: TokenBatch, generated: torch.Tensor, branches: Sequence[torch.Tensor],
                    vit_images: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Re-encode prompt + generated tokens once per branch (rows stacked) and run the aligner.
        ``branches``: Bool[B, T_prompt] masks of positions hidden in that branch; ``vit_images``: the
        images behind the prompts' ViT placeholders (edits with ``edit_source_vit``)."""
        model = self.model
        s = model.special
        b = generated.shape[0]
        tail = torch.tensor([s.eof, s.image_end], device=generated.device).expand(b, 2)
        ids = torch.cat([batch.input_ids, generated, tail], dim=1)
        gen_roles = torch.where(generated == s.eol, int(Role.TARGET_SPECIAL), int(Role.TARGET_VISUAL))
        roles = torch.cat([batch.roles, gen_roles, torch.full_like(tail, int(Role.TARGET_SPECIAL))], dim=1)
        pad_mask = torch.cat([batch.attention_mask, torch.ones_like(gen_roles, dtype=torch.bool),
                              torch.ones_like(tail, dtype=torch.bool)], dim=1)
        extra = ids.shape[1] - batch.input_ids.shape[1]
        visibles = [pad_mask & ~torch.cat([h, h.new_zeros(b, extra)], dim=1) for h in branches]
        n = len(branches)
        all_visible = torch.cat(visibles)
        hints = (model.source_hint_ids(ids.repeat(n, 1), roles.repeat(n, 1), all_visible)
                 if model.source_hints is not None else None)
        out = model.run_backbone(ids.repeat(n, 1), all_visible, position_ids=positions_from_mask(pad_mask).repeat(n, 1),
                                 output_hidden_states=True, source_hints=hints,
                                 inputs_embeds=self._vit_embeddings(ids.repeat(n, 1), roles.repeat(n, 1), vit_images))
        cond, mask = model.condition(out.hidden_states, roles.repeat(n, 1), torch.cat(visibles))
        return [(cond[i * b:(i + 1) * b], mask[i * b:(i + 1) * b]) for i in range(n)]

    def _plan_refs(self, generated: torch.Tensor) -> list[torch.Tensor] | None:
        """With ``plan_reference``: the sampled plan as the DiT's first reference latent, else None."""
        model = self.model
        if not model.config.plan_reference:
            return None
        return [model.plan_latents(model.layout.codes_from_generated(generated))]

    def _render(self, conditions: list[tuple[torch.Tensor, torch.Tensor]], refs: list[list[torch.Tensor] | None],
                scales: Sequence[float], *, steps: int, cfg_range: tuple[float, float],
                shift: float | None, generator: torch.Generator) -> torch.Tensor:
        """Flow-matching sampling of latents with guidance over the branches, then codec decode.

        ``conditions[0]`` is the conditional branch; with one unconditional branch the velocity is
        ``u + s (c - u)``, with two (edits) dual guidance ``u + s_img (r - u) + s_txt (c - r)``.
        """
        model = self.model
        b = conditions[0][0].shape[0]
        shape = (b, int(model.decoder.in_channels), model.latent_size, model.latent_size)
        noise = torch.randn(shape, generator=generator, device=self.device)

        if shift is None:
            # the model's own shift, else the reference sampling shift
            shift = model.config.fm_shift or math.sqrt(model.latent_size * model.latent_size) / 40.0
        lo, hi = cfg_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise Mammoth2InputError(f"cfg_range must satisfy 0 <= lo <= hi <= 1, got {cfg_range}")

        # branches that share reference latents run as one batched decoder call
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(refs):
            groups.setdefault(id(r), []).append(i)

        def branches(x: torch.Tensor, t: torch.Tensor, wanted: int) -> list[torch.Tensor]:
            out: list[torch.Tensor | None] = [None] * wanted
            for members in groups.values():
                members = [i for i in members if i < wanted]
                if not members:
                    continue
                n = len(members)
                r = refs[members[0]]
                v = model.decoder(x.repeat(n, 1, 1, 1), t.repeat(n), torch.cat([conditions[i][0] for i in members]),
                                  torch.cat([conditions[i][1] for i in members]),
                                  [ref.repeat(n, 1, 1, 1) for ref in r] if r else None)
                for k, i in enumerate(members):
                    out[i] = v[k * b:(k + 1) * b]
            return out  # type: ignore[return-value]

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not scales or not fm.in_cfg_range(t, cfg_range):
                return branches(x, t, 1)[0]
            if len(scales) == 1:  # u + s (c - u)
                v_cond, v_uncond = branches(x, t, 2)
                return v_uncond + scales[0] * (v_cond - v_uncond)
            # dual guidance: u + s_img (r - u) + s_txt (c - r)
            v_cond, v_ref, v_uncond = branches(x, t, 3)
            return v_uncond + scales[0] * (v_ref - v_uncond) + scales[1] * (v_cond - v_ref)

        latents = fm.sample_flow(velocity, noise, steps=steps, shift=shift, scheduler=self.scheduler)
        return model.codec.decode(latents).float().clamp(-1, 1)

    # --- public verbs --------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: str | Sequence[str], *, seed: int = 0, steps: int = 20, guidance: float = 4.0,
                 ar_guidance: float = 3.0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, cfg_range: tuple[float, float] = (0.0, 1.0),
                 shift: float | None = None, plan_temperature: float = 0.0, plan_guidance: float = 1.0,
                 max_plan_tokens: int = 64, pointer_scale: float = 1.0,
                 return_result: bool = False) -> list[Any] | GenerationResult:
        """Text to image for one prompt or a batch of prompts; returns PIL images (one per prompt).

        A ``scene_plan`` model first writes each prompt's scene as text (greedy unless
        ``plan_temperature`` > 0, at most ``max_plan_tokens``), then samples the image tokens after it;
        ``return_result`` gives the written plans as ``scene_plans``. ``plan_guidance`` is a CFG scale on
        the plan's words against a branch that does not see the prompt (only the plan written so far):
        above 1 it weighs what the prompt says over the words the model expects anyway.

        ``ar_guidance`` is the CFG scale on the AR logits (reference: 7.0), ``guidance`` the DiT's;
        ``temperature=0`` samples the visual tokens greedily. ``cfg_range`` (in flow time, 0 = noise)
        limits the DiT's guidance to part of the trajectory; ``shift`` is the sampling time shift
        (None: the reference's sqrt(latent H*W)/40; pass 1.0 for schedulers that cannot shift).
        ``pointer_scale`` weighs the colour pointer's logits (``gen_copy_digit``) in the image tokens (1: as trained).
        """
        check_sampling_args(temperature, top_k, top_p)
        backbone = self.model.backbone
        if pointer_scale != 1.0 and getattr(backbone, "copy", None) is None:
            raise Mammoth2InputError(f"pointer_scale={pointer_scale} needs a backbone with a colour pointer "
                                     "([backbone] gen_copy_digit); this one has none")
        prompts = _as_list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise Mammoth2InputError(f"prompts must be a string or a non-empty list of strings, got {prompts!r}")
        model = self.model
        g = self._generator(seed)
        tok = model.text_tokenizer
        prompt_ids = [tok.encode(p) for p in prompts]
        plans: list[list[int]] | None = None
        if model.config.scene_plan:
            plans = self._scene_plans([model.layout.plan_prompt(p) for p in prompt_ids], max_tokens=max_plan_tokens,
                                      temperature=plan_temperature, top_k=top_k, top_p=top_p, generator=g,
                                      guidance=plan_guidance)
        batch = collate([model.layout.generation(p, plan_ids=plans[i] if plans else None)
                         for i, p in enumerate(prompt_ids)], model.special.pad, padding_side="left").to(self.device)
        no_text = _text_hidden(batch.roles)
        with self._autocast():
            try:
                if pointer_scale != 1.0:
                    backbone.copy_scale = pointer_scale
                generated = self.sample_visual_tokens(batch, no_text, guidance=ar_guidance, temperature=temperature,
                                                      top_k=top_k, top_p=top_p, generator=g)
            finally:
                if pointer_scale != 1.0:
                    backbone.copy_scale = 1.0
            use_cfg = guidance != 1.0
            branches = [torch.zeros_like(no_text)] + ([no_text] if use_cfg else [])
            conditions = self._conditions(batch, generated, branches)
            plan = self._plan_refs(generated)
            pixels = self._render(conditions, [plan] * len(conditions), [guidance] if use_cfg else [],
                                  steps=steps, cfg_range=cfg_range, shift=shift, generator=g)
        images = to_pil(pixels)
        return self._result(images, pixels, generated, plans) if return_result else images

    def _result(self, images: list[Any], pixels: torch.Tensor, generated: torch.Tensor,
                plans: list[list[int]] | None) -> GenerationResult:
        model = self.model
        codes = model.layout.codes_from_generated(generated)
        plan_pixels = model.visual_tokenizer.decode(codes).float().clamp(-1, 1)
        scene_plans = [model.text_tokenizer.decode(p) for p in plans] if plans is not None else None
        return GenerationResult(images, pixels, codes, plan_pixels, scene_plans)

    def _scene_plans(self, prompts: list[tuple[list[int], list[Role]]], *, max_tokens: int, temperature: float,
                     top_k: int | None, top_p: float | None, generator: torch.Generator,
                     vit_images: torch.Tensor | None = None, guidance: float = 1.0) -> list[list[int]]:
        """Each prompt's scene plan: text ids written after the prompt (``TokenLayout.plan_prompt`` /
        ``edit_plan_prompt``) up to the ``[image_start]`` that ends it (special tokens other than that
        one are never sampled). ``vit_images``: the images behind the prompts' ViT placeholders.
        ``guidance``: CFG against a branch where the prompt's text is hidden (its plan so far is not)."""
        if max_tokens < 1:
            raise Mammoth2InputError(f"max_plan_tokens must be >= 1, got {max_tokens}")
        if guidance <= 0:
            raise Mammoth2InputError(f"plan_guidance must be > 0 (1 = unguided), got {guidance}")
        check_sampling_args(temperature, top_k, top_p)
        model = self.model
        batch = collate(prompts, model.special.pad, padding_side="left").to(self.device)
        stop = model.special.image_start
        banned = torch.tensor([i for i in attrs.astuple(model.special) if i != stop], device=self.device)
        done = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)

        def choose(step: int, logits: torch.Tensor) -> torch.Tensor:
            nonlocal done
            text = logits[:, :model.layout.gen_vocab_start].clone()
            text[:, banned] = float("-inf")
            token = sample_next(text, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            token = torch.where(done, torch.full_like(token, stop), token)
            done = done | (token == stop)
            return token

        written: list[torch.Tensor] = []
        with self._autocast():
            embeds = self._vit_embeddings(batch.input_ids, batch.roles, vit_images)
            for token in self._decode_loop(batch, _text_hidden(batch.roles), steps=max_tokens, guidance=guidance,
                                           choose=choose, inputs_embeds=embeds):
                written.append(token)
                if bool(done.all()):
                    break
        rows = torch.stack(written, dim=1).tolist()
        return [row[:row.index(stop)] if stop in row else row for row in rows]

    @torch.no_grad()
    def edit(self, image: Any, instruction: str | Sequence[str], *, seed: int = 0, steps: int = 20,
             text_guidance: float = 4.0, image_guidance: float = 1.5, ar_guidance: float = 1.0,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             cfg_range: tuple[float, float] = (0.0, 1.0), shift: float | None = None,
             plan_temperature: float = 0.0, max_plan_tokens: int = 64, return_result: bool = False) -> Any:
        """Edit an image (or a list) by an instruction: the source enters the prompt as discrete tokens
        and the DiT as a reference latent; the DiT uses dual guidance (``image_guidance`` toward the
        source, ``text_guidance`` toward the instruction). Returns a PIL image (a list for lists), or
        with ``return_result`` a :class:`GenerationResult` (always batched) that includes the plan.

        The AR plan is greedy and unguided by default: an edit's plan is mostly a copy of the source,
        and sampling (or CFG against the instruction-less branch, which pushes every token away from
        plain copying) breaks objects the instruction does not name. On a tiny-preset run, held-out
        edit plans succeeded 0.42 greedy / guidance 1 against 0.06 at temperature 1, top_k 8,
        guidance 3 (``benchmarks/results/mammoth2_edit_sampling_previous_run.md``)."""
        check_sampling_args(temperature, top_k, top_p)
        single, images, instructions = _image_text_pairs(image, instruction, "edit", "instructions")
        model = self.model
        size = model.config.image_size
        src = torch.stack([image_tensor(im, size) for im in images]).to(self.device)
        codes = model.visual_codes(src).cpu()
        tok = model.text_tokenizer
        instruction_ids = [tok.encode(ins) for ins in instructions]
        g = self._generator(seed)
        vit_src = src if model.config.edit_source_vit else None  # the source as ViT tokens too
        plans: list[list[int]] | None = None
        if model.config.scene_plan:  # the target's scene, written after the instruction and the source
            plans = self._scene_plans([model.layout.edit_plan_prompt(c, i) for c, i in zip(codes, instruction_ids)],
                                      max_tokens=max_plan_tokens, temperature=plan_temperature, top_k=top_k,
                                      top_p=top_p, generator=g, vit_images=vit_src)
        batch = collate([model.layout.edit(c, i, plan_ids=plans[k] if plans else None)
                         for k, (c, i) in enumerate(zip(codes, instruction_ids))],
                        model.special.pad, padding_side="left").to(self.device)
        no_text = _text_hidden(batch.roles)
        no_text_no_source = _text_hidden(batch.roles, source=True)
        with self._autocast():
            generated = self.sample_visual_tokens(batch, no_text, guidance=ar_guidance, temperature=temperature,
                                                  top_k=top_k, top_p=top_p, generator=g,
                                                  inputs_embeds=self._vit_embeddings(batch.input_ids, batch.roles, vit_src))
            plan = self._plan_refs(generated)
            ref = (plan or []) + [model.encode_latents(src)]
            conditions = self._conditions(batch, generated, [torch.zeros_like(no_text), no_text, no_text_no_source],
                                          vit_src)
            pixels = self._render(conditions, [ref, ref, plan], [image_guidance, text_guidance],
                                  steps=steps, cfg_range=cfg_range, shift=shift, generator=g)
        out = to_pil(pixels)
        if return_result:
            return self._result(out, pixels, generated, plans)
        return out[0] if single else out

    @torch.no_grad()
    def ask(self, image: Any, question: str | Sequence[str], *, max_new_tokens: int = 160, temperature: float = 0.0,
            top_k: int | None = None, top_p: float | None = None, seed: int = 0,
            keep_description: bool = False) -> str | list[str]:
        """Answer a question about an image (greedy by default); a list in gives a list out.

        A ``describe_first`` model describes the image before it answers; the description is left
        out of the returned text unless ``keep_description``."""
        check_sampling_args(temperature, top_k, top_p)
        model = self.model
        if model.vision_encoder is None:
            raise Mammoth2InputError("this model has no vision_encoder, so it cannot look at images; "
                                     "use a config with vision_encoder set (e.g. the 'tiny' preset)")
        if max_new_tokens < 1:
            raise Mammoth2InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        single, images, questions = _image_text_pairs(image, question, "ask", "questions")
        size = model.config.image_size
        pixels = torch.stack([image_tensor(im, size) for im in images]).to(self.device)
        tok = model.text_tokenizer
        batch = collate([model.layout.understanding(tok.encode(q)) for q in questions], model.special.pad,
                        padding_side="left").to(self.device)
        g = self._generator(seed)
        text_vocab = model.layout.gen_vocab_start
        eos = model.special.eos
        done = torch.zeros(len(images), dtype=torch.bool, device=self.device)

        def choose(step: int, logits: torch.Tensor) -> torch.Tensor:
            nonlocal done
            token = sample_next(logits[:, :text_vocab], temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=g)
            token = torch.where(done, torch.full_like(token, eos), token)
            done = done | (token == eos)
            return token

        answers: list[torch.Tensor] = []
        with self._autocast():
            embeds = self._vit_embeddings(batch.input_ids, batch.roles, pixels)
            shares = model.answer_digit_shares(pixels) if model.answer_pointer is not None else None
            for token in self._decode_loop(batch, None, steps=max_new_tokens, guidance=1.0, choose=choose,
                                           inputs_embeds=embeds, answer_shares=shares):
                answers.append(token)
                if bool(done.all()):
                    break
        ids = torch.stack(answers, dim=1).tolist()
        texts = [tok.decode(row[: row.index(eos)] if eos in row else row) for row in ids]
        if model.config.describe_first and not keep_description:
            texts = [final_answer(t) for t in texts]
        return texts[0] if single else texts

    def caption(self, image: Any, **kwargs: Any) -> str | list[str]:
        """Describe an image: :meth:`ask` with an empty question."""
        return self.ask(image, [""] * len(image) if isinstance(image, (list, tuple)) else "", **kwargs)
