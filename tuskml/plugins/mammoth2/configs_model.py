"""Config of the whole mammoth2 model: one nested config, every part chosen by ``type``.

Torch-free (the plugin module imports it). Each part is typed by its kind base, so any registered
component of that kind fits: ``backbone = {type = "hf-causal-lm", ...}`` swaps the AR backbone,
``decoder = {type = "lumina2", ...}`` the DiT, and so on.

Sizes that must agree between parts (vocabulary sizes, widths, channels, image size) are *derived*
by the model when it is built (see ``Mammoth2Model.resolve_config``): the text vocabulary comes
from the text tokenizer, the generation vocabulary from the visual codebook, the aligner's input
width from the backbone, its output width from the decoder, the decoder's channels from the codec.
What is written in these sub-configs for those fields is overwritten, so a preset stays consistent
when one part is swapped.
"""

from __future__ import annotations

from typing import Literal

import attrs

import tuskml
from tuskml.plugins.mammoth2.configs_ar import BytesTokenizerConfig, Mammoth2ARConfig, VQTokenizerConfig
from tuskml.plugins.mammoth2.configs_gen import Mammoth2AlignerConfig, Mammoth2DiTConfig, PixelCodecConfig

_ge0 = attrs.validators.ge(0)
_ge1 = attrs.validators.ge(1)


#: what a ``describe_first`` model writes between its description of the image and the answer
ANSWER_SEPARATOR = "."


def described_answer(description: str, answer: str) -> str:
    """The text a ``describe_first`` model learns to write for a question: description, separator, answer."""
    return f"{description} {ANSWER_SEPARATOR} {answer}"


def final_answer(text: str) -> str:
    """The answer in what a ``describe_first`` model wrote: the text after the last separator (all of
    it when there is none, as for a caption)."""
    return text.rsplit(ANSWER_SEPARATOR, 1)[-1].strip()


def _probability(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must lie in [0, 1), got {value}")


@tuskml.config_class
class Mammoth2Config(tuskml.ModelConfig):
    """MammothModa2-style unified model: AR backbone with generation experts -> aligner -> DiT.

    ``vision_encoder`` is the understanding ViT (``None``: the model cannot answer questions about
    images, only generate and edit). ``fm_weight`` is the lambda of ``loss = ntp + lambda * fm``
    (the paper does not publish it). ``prompt_dropout`` / ``source_dropout`` hide the prompt text /
    the edit source (its tokens and its reference latent) from a training sample with that
    probability, which teaches the unconditional branches classifier-free guidance uses.
    """

    text_tokenizer: tuskml.TokenizerConfig = attrs.field(factory=BytesTokenizerConfig)
    visual_tokenizer: tuskml.TokenizerConfig = attrs.field(factory=VQTokenizerConfig)
    backbone: tuskml.BackboneConfig = attrs.field(factory=Mammoth2ARConfig)
    vision_encoder: tuskml.BackboneConfig | None = None
    aligner: tuskml.AlignerConfig = attrs.field(factory=Mammoth2AlignerConfig)
    decoder: tuskml.DecoderConfig = attrs.field(factory=Mammoth2DiTConfig)
    codec: tuskml.CodecConfig = attrs.field(factory=PixelCodecConfig)

    image_size: int = attrs.field(default=32, validator=_ge1)
    fm_weight: float = attrs.field(default=1.0, validator=_ge0)
    ntp_weight: float = attrs.field(default=1.0, validator=_ge0)
    prompt_dropout: float = attrs.field(default=0.1, validator=_probability)
    source_dropout: float = attrs.field(default=0.1, validator=_probability)
    # flow-matching time shift m for training times and (by default) for sampling; None: the
    # reference's resolution rule (train sqrt(tokens)/20, sample sqrt(latent H*W)/40). Small latents
    # get m < 1 from that rule, which starves the noisy end where an image's layout is decided.
    fm_shift: float | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.gt(0)))
    # the AR plan, decoded to pixels by the visual tokenizer, enters the DiT as its first reference
    # latent (teacher-forced codes in training, sampled codes at inference), so the DiT sees the
    # plan on the target's own grid instead of only through the aligner (an extension, not in the paper)
    plan_reference: bool = False
    # a learned embedding per slot of an image block (row-major codes with their eol, then eof),
    # added to the AR's input at every source and target image token, so the AR knows which cell it
    # reads or writes without counting eols through 1-D RoPE, and an edit's target token finds its
    # source token by content; the role of LlamaGen's 2-D RoPE / Qwen2-VL's M-RoPE (not in the paper)
    visual_positions: bool = False
    # edits: the AR input that predicts target slot j also gets an embedding of the SOURCE token at
    # slot j (zero-initialised table), so copying the unchanged part of an edit is an identity through
    # the residual stream and the AR's capacity goes to the edited cell; the AR counterpart of
    # InstructPix2Pix's channel-concatenated source latent (an extension, not in the paper)
    source_hints: bool = False
    # edits, with source_hints: a learned gate on the AR's final hidden state at each target slot says
    # "keep the source's code here" (trained by binary cross-entropy on whether the target code equals
    # the source code at that slot). At inference a slot whose gate is above 0.5 takes the source's
    # code instead of a sampled one, so copying an object the instruction does not name never passes
    # through the code heads, which redraw a never-seen colour-shape pair in a seen colour (a learned
    # edit mask, like an inpainting mask; not in the paper). Edit probe held out 0.43 -> 0.57 (with
    # keep_gate_code_loss = "changed"); joint 30-min runs at 2 seeds: edits +0.02 / +0.12 but text to
    # image and understanding -0.08 to -0.13 against the preset at the same seeds (plugin README), so off
    edit_keep_gate: bool = False
    # with edit_keep_gate: which target slots of an edit train the code heads: "every" slot, or only
    # the "changed" ones (target code != source code), so that copying is the gate's job alone and the
    # heads never learn to echo the source hint (in a joint run with "every", the heads gave the old
    # colour at the first recoloured patch of 29 of 32 train-split recolours)
    keep_gate_code_loss: Literal["every", "changed"] = "every"
    # text to image and edits: the AR first writes the scene it will draw as text (the sample's
    # ``plan``; the shapes world's is the target's layout, e.g. "a circle at top left and a square at
    # bottom right", and for an edit the cell it changes, "at top left"), then the image tokens after
    # it. Counting, number and place of objects are then decided in words, which the AR also
    # practises when it captions, and the image tokens only draw the written scene. The plan joins the aligner's text condition too (a layout-planning step like
    # GoT / LayoutGPT; not in the paper)
    scene_plan: bool = False
    # understanding: the question comes before the image, so each image token can match itself against
    # the question ("is there a red triangle?") instead of the question tokens searching a
    # question-blind image
    question_first: bool = False
    # edits: the source also enters as ViT tokens, right after the instruction (``[bos] instruction
    # [image_start] ViT tokens [image_end] source codes ...``), so an edit finds the object it names
    # the way a question-first understanding row does: each ViT token sees the instruction. The
    # source's discrete codes still follow (they are what the target copies). Needs a vision_encoder
    edit_source_vit: bool = False
    # understanding: before answering a question the AR describes the image (the sample's ``plan``;
    # the shapes world's lists the objects of the asked shape, "a red triangle at top left and a blue
    # triangle at bottom right"), then writes " . " and the answer; ``Mammoth2Pipeline.ask`` returns
    # the part after the last ".". Finding "the red triangle" next to a blue one then means matching
    # words the model wrote, not a colour-and-shape conjunction among image tokens (a describe-then-
    # answer chain of thought; not in the paper). Probe 0.89 vs 0.69; joint 30-min run 0.70 vs 0.83
    describe_first: bool = False
    # understanding: which of these words (e.g. the colour words) an answer writes is read from the
    # asked image by a pointer (``model.AnswerPointer``): a query from the answer position scores the
    # ViT tokens by their final hidden states, and each brings the words of its patch's VQ digit
    # ``answer_pointer_digit`` (the colour digit of a colour-structure VQ) through a table on that
    # digit. The text head still decides how much mass these words get together, the pointer alone
    # which one: no head learns which colours went with which shape, so "what colour is the circle?"
    # can answer a colour never seen on a circle. Empty: off. Needs a vision_encoder
    answer_pointer_words: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    answer_pointer_digit: int = attrs.field(default=0, validator=_ge0)
    # training: at most this many image-making rows of a batch get the flow-matching loss (0: all).
    # The DiT mostly renders the plan it is given, while the AR must learn the plan itself; on the
    # tiny preset the aligner + DiT take ~75% of a step, so the AR can see several times more rows
    # per second when only some rows also train the DiT. Every row still trains the AR (NTP).
    fm_max_rows: int = attrs.field(default=0, validator=_ge0)
    # training, with plan_reference: each code of the teacher-forced plan is swapped for a random
    # code with this probability before the DiT sees it. Sampled plans are never as clean as the
    # target's own codes (an edit's AR copies its source imperfectly), so the DiT learns to check
    # the plan against the edit source and the aligner's conditions instead of copying it blindly
    plan_noise: float = attrs.field(default=0.0, validator=_probability)
    projector_depth: int = attrs.field(default=2, validator=_ge1)  # ViT features -> AR width (MLP depth)
    train_visual_tokenizer: bool = False  # add the VQ loss to the total and let its gradients flow
