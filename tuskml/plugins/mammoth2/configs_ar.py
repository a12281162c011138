"""Configs of the mammoth2 AR-side components: backbones, generation experts, tokenizers.

Torch-free on purpose: the plugin's hookimpls import this module, and ``import tuskml`` /
``tuskml plugins list`` must not import torch. Defaults build toy-sized components (well under a
second on a CPU); real sizes are overrides or presets.

A field whose default is not ``None`` never takes ``None`` (TOML has no null, so such a value would
not survive a round trip); "use the architecture's own value" is written ``0`` where needed.
"""

from __future__ import annotations

import json
import math
from typing import Literal

import attrs

import tuskml
from tuskml.plugins.mammoth2.configs_data import CELLS, COLOURS, NUMBER_WORDS, SHAPES

_ge0 = attrs.validators.ge(0)
_ge1 = attrs.validators.ge(1)
_gt0 = attrs.validators.gt(0)


# --- generation experts ---------------------------------------------------------------------------------


def _check_layer_range(instance: FFNExpertsConfig, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= instance.start_layer:
        raise ValueError(f"end_layer={value} must be greater than start_layer={instance.start_layer} (or None for all)")


@tuskml.config_class
class FFNExpertsConfig(tuskml.ExpertsConfig):
    """Hard-routed generation FFN copies in decoder layers ``[start_layer, end_layer)``.

    A token whose id is ``>= gen_vocab_start`` goes through the layer's generation FFN, any other
    token through the original FFN; attention and norms are shared. The reference puts experts in
    the deep layers only (after layer 14 of 36) and initialises them randomly; ``init="copy"``
    starts them from the text FFN instead (useful with pretrained backbones).
    """

    start_layer: int = attrs.field(default=0, validator=_ge0)
    end_layer: int | None = attrs.field(default=None, validator=_check_layer_range)
    init: Literal["random", "copy"] = "random"


@tuskml.config_class
class FFNAttentionExpertsConfig(FFNExpertsConfig):
    """Like ``ffn``, and generation tokens also get their own Q/K/V/O projections in those layers."""


@tuskml.config_class
class NoExpertsConfig(tuskml.ExpertsConfig):
    """No generation experts: every token uses the shared FFN and attention (ablation baseline)."""


# --- backbones ----------------------------------------------------------------------------------------


@tuskml.config_class
class Mammoth2ARConfig(tuskml.BackboneConfig):
    """Qwen3-style decoder with a text vocabulary plus a separate generation (visual) vocabulary.

    Token ids ``< text_vocab_size`` are text; ids in ``[text_vocab_size, text_vocab_size +
    gen_vocab_size)`` are generation tokens with their own embedding table and head. The model that
    owns this backbone sets the two vocabulary sizes from its tokenizers.
    """

    text_vocab_size: int = attrs.field(default=264, validator=_ge1)
    gen_vocab_size: int = attrs.field(default=64, validator=_ge1)
    hidden_size: int = attrs.field(default=64, validator=_ge1)
    num_layers: int = attrs.field(default=2, validator=_ge1)
    num_heads: int = attrs.field(default=4, validator=_ge1)
    num_kv_heads: int = attrs.field(default=2, validator=_ge1)
    head_dim: int = attrs.field(default=16, validator=_ge1)
    intermediate_size: int = attrs.field(default=128, validator=_ge1)
    rope_theta: float = attrs.field(default=1_000_000.0, validator=_gt0)
    rms_norm_eps: float = attrs.field(default=1e-6, validator=_gt0)
    qk_norm: bool = True
    attention_bias: bool = False
    tie_text_embeddings: bool = False
    init_std: float = attrs.field(default=0.02, validator=_gt0)
    experts: tuskml.ExpertsConfig = attrs.field(factory=FFNExpertsConfig)
    gen_head: Literal["flat", "factorized"] = "flat"
    gen_factors: tuple[int, ...] = ()
    #: with ``gen_head = "factorized"``: the digit whose logits also get a pointer over the earlier
    #: text tokens (``ar.TextCopy``; digit 0 is the colour of a ``colour-structure`` VQ); None: no pointer
    gen_copy_digit: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    gen_copy_dim: int = attrs.field(default=32, validator=_ge1)
    #: what a pointed-at text token j brings: its own value plus its predecessor's, or the predecessor's only,
    #: or ("token") its own only, or ("split-next", two-digit tokens) its own to the pointed digit and the next
    #: word's to the other digit
    gen_copy_values: Literal["token-and-previous", "previous", "token", "split-next"] = "token-and-previous"
    #: what a text token's key is: a table on its id, or ("hidden") a projection of its final hidden state
    gen_copy_keys: Literal["ids", "hidden"] = "ids"
    #: rows without an edit source (text to image) take the pointed digit from the pointer alone, whose
    #: null slot then brings a learned value (the background); the digit's own head serves edit rows only,
    #: so no head learns which colours went with which shape in text-to-image training
    gen_copy_alone: bool = False
    #: the colour pointer also reads the earlier image tokens (needs gen_copy_keys = "hidden"): each brings its
    #: own colour digit, so a patch can take the colour of its object's patches drawn before it
    gen_copy_from_image: bool = False
    #: a pointer-generator on the text logits (``ar.TextPointer``): a gate mixes the text head with a
    #: copy of an earlier visible text token, found by a key on its predecessor's id (an induction
    #: head on ids), so a plan can copy "green triangle" from the prompt although no training text had it
    text_copy: bool = False

    def __attrs_post_init__(self) -> None:
        if self.gen_copy_digit is not None and self.gen_head != "factorized":
            raise ValueError("gen_copy_digit points one digit of a factorised generation token at the text; "
                             "it needs gen_head = 'factorized'")
        if self.gen_copy_alone and self.gen_copy_digit is None:
            raise ValueError("gen_copy_alone takes a digit from the colour pointer alone; it needs gen_copy_digit")
        if self.gen_copy_from_image and (self.gen_copy_digit is None or self.gen_copy_keys != "hidden"):
            raise ValueError("gen_copy_from_image makes image tokens keys of the colour pointer; it needs "
                             "gen_copy_digit and gen_copy_keys = 'hidden' (image tokens have no id keys)")
        if any(f < 1 for f in self.gen_factors):
            raise ValueError(f"gen_factors must be positive radices, got {self.gen_factors}")
        if self.gen_factors and math.prod(self.gen_factors) != self.gen_vocab_size:
            raise ValueError(f"gen_factors {self.gen_factors} multiply to {math.prod(self.gen_factors)}, but "
                             f"gen_vocab_size is {self.gen_vocab_size}; they must agree")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")


#: A tiny random Qwen3 (transformers ``Qwen3Config`` keys), the default of ``hf-causal-lm``.
TINY_QWEN3_CONFIG: dict[str, object] = {
    "model_type": "qwen3",
    "vocab_size": 264,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}


@tuskml.config_class
class HFCausalLMConfig(tuskml.BackboneConfig):
    """A transformers causal LM (e.g. Qwen3) plus a generation vocabulary and experts, by module surgery.

    ``model_path``: a local folder holding ``config.json`` + weights (``save_pretrained`` layout);
    nothing is downloaded. Without it the model is built with random weights from ``hf_config_json``
    (a JSON object of transformers config keys including ``model_type``). ``text_vocab_size`` 0 keeps
    the model's own vocabulary; another value resizes its embeddings and head.
    """

    model_path: str | None = None
    hf_config_json: str = json.dumps(TINY_QWEN3_CONFIG, sort_keys=True)
    text_vocab_size: int = attrs.field(default=0, validator=_ge0)
    gen_vocab_size: int = attrs.field(default=64, validator=_ge1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    init_std: float = attrs.field(default=0.02, validator=_gt0)
    experts: tuskml.ExpertsConfig = attrs.field(factory=FFNExpertsConfig)


@tuskml.config_class
class TimmViTConfig(tuskml.BackboneConfig):
    """Understanding vision encoder from timm (``pretrained=False``; weights only from a local file).

    ``embed_dim``/``depth``/``num_heads`` override the architecture of ``model_name``; 0 keeps the
    architecture's own value. ``weights_path`` (``.safetensors``/``.pth``/``.bin``) is loaded after
    building, with the position embedding resampled to ``img_size``/``patch_size`` when needed.
    """

    model_name: str = "vit_tiny_patch16_224"
    img_size: int = attrs.field(default=32, validator=_ge1)
    patch_size: int = attrs.field(default=8, validator=_ge1)
    embed_dim: int = attrs.field(default=64, validator=_ge0)
    depth: int = attrs.field(default=2, validator=_ge0)
    num_heads: int = attrs.field(default=4, validator=_ge0)
    in_chans: int = attrs.field(default=3, validator=_ge1)
    weights_path: str | None = None
    keep_prefix_tokens: bool = False
    #: map [-1, 1] images to the (mean, std) normalisation of the timm model; False feeds them as is
    imagenet_normalize: bool = True
    #: a convolutional stem in front of the transformer (timm's ``ConvStem`` inside ``HybridEmbed``):
    #: one 3x3 conv per entry with these output channels, norm + activation between convs; ``()``
    #: patchifies the pixels directly. The stem gives a small from-scratch encoder the locality a
    #: linear patchify lacks; ``patch_size`` stays the pixels per token (the stem's strides included).
    stem_channels: tuple[int, ...] = ()
    #: stride of each stem conv (one per ``stem_channels`` entry); their product must divide ``patch_size``
    stem_strides: tuple[int, ...] = ()
    #: normalisation between the stem's convs: ``batch`` (timm's default) or ``group`` (one group, no
    #: running statistics, so training and inference see the same function)
    stem_norm: Literal["batch", "group"] = attrs.field(default="batch",
                                                       validator=attrs.validators.in_(("batch", "group")))
    #: the stem sees each token patch's value structure (colour-blind) and every token gets its patch's
    #: colours added (:mod:`tuskml.plugins.mammoth2.colour_split`): colour and shape enter as a sum of
    #: two learned parts, as in the ``vq`` tokenizer's ``groups = "colour-structure"``. Needs a stem.
    colour_split: bool = False

    def __attrs_post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}")
        if len(self.stem_channels) != len(self.stem_strides):
            raise ValueError(f"stem_channels {self.stem_channels} and stem_strides {self.stem_strides} need one entry "
                             f"per stem conv (same length)")
        if any(c < 1 for c in self.stem_channels) or any(s < 1 for s in self.stem_strides):
            raise ValueError(f"stem_channels {self.stem_channels} and stem_strides {self.stem_strides} must be >= 1")
        if self.colour_split and (not self.stem_channels or self.in_chans != 3):
            raise ValueError("colour_split needs a convolutional stem (stem_channels) and RGB images (in_chans=3)")
        stride = math.prod(self.stem_strides)
        if self.patch_size % stride:
            raise ValueError(f"the stem's total stride {stride} (product of stem_strides {self.stem_strides}) must "
                             f"divide patch_size={self.patch_size}")


# --- tokenizers ---------------------------------------------------------------------------------------

#: Roles every text tokenizer provides in its ``special`` dict, so the model never hard-codes ids.
SPECIAL_ROLES: tuple[str, ...] = (
    "pad", "bos", "eos", "image_start", "image_end", "eol", "eof", "image_placeholder",
)


@tuskml.config_class
class BytesTokenizerConfig(tuskml.TokenizerConfig):
    """UTF-8 bytes as ids 0..255, then one id per special role (and per ``extra_special_tokens``)."""

    extra_special_tokens: tuple[str, ...] = ()


def _shapes_world_words() -> tuple[str, ...]:
    """Every word and punctuation mark the shapes world writes (prompts, instructions, questions,
    answers, captions), plus a few for hand-written prompts ("make it green")."""
    words = ["a", "an", "the", "and", "at", "of", "left", "right", "above", "below", "top", "bottom",
             "add", "remove", "make", "replace", "with", "it", "how", "many", "what", "colour", "color", "is",
             "there", "where", "yes", "no", "nothing", "in", "picture", "image", "shape", "shapes", ",", "?", "."]
    words += list(COLOURS) + list(SHAPES) + [s + "s" for s in SHAPES] + list(NUMBER_WORDS)
    words += [w for cell in CELLS for w in cell.split()]
    return tuple(dict.fromkeys(words))


#: the default vocabulary of the ``words`` tokenizer
SHAPES_WORLD_WORDS: tuple[str, ...] = _shapes_world_words()


def _vocabulary(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("words tokenizer: vocabulary is empty")
    dup = sorted({w for w in value if value.count(w) > 1})
    if dup:
        raise ValueError(f"words tokenizer: vocabulary repeats {dup}")
    bad = [w for w in value if not w or w != w.strip().lower() or " " in w]
    if bad:
        raise ValueError(f"words tokenizer: vocabulary entries must be lower-case single words, got {bad[:5]}")


@tuskml.config_class
class WordsTokenizerConfig(tuskml.TokenizerConfig):
    """A closed word-level vocabulary (default: the shapes world's words): one id per word or
    punctuation mark, then one per special role. Text is lower-cased; an unknown word is an error."""

    vocabulary: tuple[str, ...] = attrs.field(default=SHAPES_WORLD_WORDS, validator=_vocabulary)
    extra_special_tokens: tuple[str, ...] = ()


@tuskml.config_class
class HFTokenizerConfig(tuskml.TokenizerConfig):
    """A ``tokenizer.json`` read with the ``tokenizers`` package from a local file or folder.

    Each ``*_token`` names the token string used for that role; strings the tokenizer lacks are
    added as special tokens (new ids after its vocabulary). Without ``path`` an untrained byte-level
    tokenizer (256 byte tokens, no merges) is built in memory, so the default config needs no file.
    """

    path: str | None = None
    pad_token: str = "<|pad|>"
    bos_token: str = "<|bos|>"
    eos_token: str = "<|eos|>"
    image_start_token: str = "<|image_start|>"
    image_end_token: str = "<|image_end|>"
    eol_token: str = "<|eol|>"
    eof_token: str = "<|eof|>"
    image_placeholder_token: str = "<|image_pad|>"


@tuskml.config_class
class VQTokenizerConfig(tuskml.TokenizerConfig):
    """Trainable discrete visual tokenizer: conv encoder -> 1x1 projection to a low-dim L2-normalised
    codebook -> conv decoder (the reference's MammothTok uses a ViT encoder and an 8-d codebook of
    16,384 codes at 448 px; this toy default is 32 px -> 8x8 codes of 256).

    ``quantizer``: ``rotation`` (gradients pass through the rotation taking the encoder output onto its
    code, Fifty et al. 2024) or ``straight-through`` (identity gradient).

    ``num_codebooks`` > 1 is product quantisation: ``code_dim`` is split into that many equal groups,
    each quantised by its own codebook of ``codebook_size`` entries; a token is the mixed-radix number
    of the group codes, so the visual vocabulary has ``codebook_size ** num_codebooks`` tokens (e.g.
    two codebooks of 16 make 256 tokens from 32 learned vectors). Pair it with the backbone's
    ``gen_head = "factorized"`` to predict each group's code separately.

    ``groups = "colour-structure"`` (needs ``num_codebooks = 2``) decides what each group sees, the way
    JPEG and HSV split chroma from luma: group 0 (the token's first digit, ``colour_codebook_size``
    entries) encodes each patch from per-pixel features max-pooled over the patch, so it can only hold
    the patch's colours, not where they are; group 1 (``codebook_size`` entries) encodes the image's
    value channel (max over RGB) divided by its patch maximum, so it holds the patch's structure but
    not its colour. The decoder is bilinear in the two groups (structure maps times per-patch colours).
    A colour seen on one shape and a shape seen in another colour then combine into a token whose
    digits were both learned, and which decodes as well as either did. ``groups = "learned"`` splits
    ``code_dim`` with no such bias.
    """

    image_size: int = attrs.field(default=32, validator=_ge1)
    in_channels: int = attrs.field(default=3, validator=_ge1)
    hidden_channels: int = attrs.field(default=16, validator=_ge1)
    num_downsamples: int = attrs.field(default=2, validator=_ge0)
    num_res_blocks: int = attrs.field(default=1, validator=_ge0)
    codebook_size: int = attrs.field(default=256, validator=_ge1)
    code_dim: int = attrs.field(default=8, validator=_ge1)
    num_codebooks: int = attrs.field(default=1, validator=_ge1)
    groups: Literal["learned", "colour-structure"] = "learned"
    colour_codebook_size: int = attrs.field(default=8, validator=attrs.validators.ge(2))
    quantizer: Literal["rotation", "straight-through"] = "rotation"
    commitment_weight: float = attrs.field(default=0.25, validator=_ge0)
    codebook_weight: float = attrs.field(default=1.0, validator=_ge0)
    #: training steps after which an unused code is moved onto a current encoder output (0: never)
    restart_unused_after: int = attrs.field(default=20, validator=_ge0)

    def __attrs_post_init__(self) -> None:
        if self.image_size % (2**self.num_downsamples):
            raise ValueError(
                f"image_size={self.image_size} is not divisible by 2**num_downsamples={2**self.num_downsamples}"
            )
        if self.code_dim % self.num_codebooks:
            raise ValueError(f"code_dim={self.code_dim} must be divisible by num_codebooks={self.num_codebooks} "
                             f"(each sub-codebook quantises code_dim / num_codebooks dimensions)")
        if self.groups == "colour-structure" and self.num_codebooks != 2:
            raise ValueError(f"groups='colour-structure' quantises a colour group and a structure group, so it needs "
                             f"num_codebooks=2, got {self.num_codebooks}")
        if self.groups == "colour-structure" and self.in_channels != 3:
            raise ValueError(f"groups='colour-structure' splits RGB images into colour and value, so it needs "
                             f"in_channels=3, got {self.in_channels}")
        if self.num_codebooks > 1 and self.codebook_size < 2:
            raise ValueError(f"product quantisation (num_codebooks={self.num_codebooks}) needs codebook_size >= 2, "
                             f"got {self.codebook_size}")

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """Entries of each group's codebook, most significant digit first."""
        if self.groups == "colour-structure":
            return (self.colour_codebook_size, self.codebook_size)
        return (self.codebook_size,) * self.num_codebooks
