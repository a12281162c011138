"""Hookimpls of the built-in ``mammoth2`` plugin. Imports only torch-free config modules."""

from __future__ import annotations

from tuskml.core.hookspecs import hookimpl
from tuskml.core.registry import ComponentSpec
from tuskml.plugins.mammoth2 import configs_ar, configs_data, configs_gen, configs_model

# --- AR side (backbones, generation experts, tokenizers) ---------------------------------------

_M = "tuskml.plugins.mammoth2"


@hookimpl
def tuskml_backbones():
    yield ComponentSpec(name="mammoth2-ar", factory=f"{_M}.ar:Mammoth2AR", config_cls=configs_ar.Mammoth2ARConfig,
                        description="Qwen3-style decoder (RMSNorm, RoPE, GQA, QK-norm, SwiGLU) with a separate "
                                    "generation vocabulary, KV cache and hard-routed generation experts")
    yield ComponentSpec(name="hf-causal-lm", factory=f"{_M}.hf_backbone:HFCausalLMBackbone",
                        config_cls=configs_ar.HFCausalLMConfig,
                        description="a transformers causal LM (e.g. Qwen3, local folder or config) with a "
                                    "generation vocabulary and experts added by module surgery")
    yield ComponentSpec(name="timm-vit", factory=f"{_M}.vit:TimmViTEncoder", config_cls=configs_ar.TimmViTConfig,
                        description="timm ViT understanding encoder (optional conv stem; no download; optional "
                                    "local weights) returning patch features [B, N, D]")


@hookimpl
def tuskml_experts():
    yield ComponentSpec(name="ffn", factory=f"{_M}.experts:ExpertPlan", config_cls=configs_ar.FFNExpertsConfig,
                        description="generation-token FFN copies in layers [start, end), routed by token id")
    yield ComponentSpec(name="ffn-attention", factory=f"{_M}.experts:ExpertPlan",
                        config_cls=configs_ar.FFNAttentionExpertsConfig,
                        description="generation-token FFN and Q/K/V/O projections in layers [start, end)")
    yield ComponentSpec(name="none", factory=f"{_M}.experts:ExpertPlan", config_cls=configs_ar.NoExpertsConfig,
                        description="no generation experts: all tokens share every weight")


@hookimpl
def tuskml_tokenizers():
    yield ComponentSpec(name="bytes", factory=f"{_M}.text_tokenizers:ByteTokenizer",
                        config_cls=configs_ar.BytesTokenizerConfig,
                        description="UTF-8 byte-level text tokenizer with special-role ids; no download")
    yield ComponentSpec(name="words", factory=f"{_M}.text_tokenizers:WordTokenizer",
                        config_cls=configs_ar.WordsTokenizerConfig,
                        description="closed word-level vocabulary (default: the shapes world's words) with "
                                    "special-role ids; unknown words are an error")
    yield ComponentSpec(name="hf-tokenizer", factory=f"{_M}.text_tokenizers:HFTokenizer",
                        config_cls=configs_ar.HFTokenizerConfig,
                        description="a tokenizer.json from a local path (tokenizers package) with special roles")
    yield ComponentSpec(name="vq", factory=f"{_M}.vq:VQTokenizer", config_cls=configs_ar.VQTokenizerConfig,
                        description="trainable discrete visual tokenizer: conv encoder, L2-normalised codebook "
                                    "(rotation trick or straight-through; optional product quantisation, optionally "
                                    "split into colour and structure groups), conv decoder")


# --- generation side (aligners, decoders, latent codecs) ----------------------------------------


@hookimpl
def tuskml_aligners():
    yield ComponentSpec(name="mammoth2", factory=f"{_M}.aligner:Mammoth2Aligner",
                        config_cls=configs_gen.Mammoth2AlignerConfig,
                        description="mean over AR layers; caption embedder for text, Q-Former queries over "
                                    "visual tokens; context refiner blocks")
    yield ComponentSpec(name="last-layer", factory=f"{_M}.aligner:LastLayerAligner",
                        config_cls=configs_gen.LastLayerAlignerConfig,
                        description="ablation: last AR hidden state of the condition tokens, one linear projection")


@hookimpl
def tuskml_decoders():
    yield ComponentSpec(name="mammoth2-dit", factory=f"{_M}.dit:Mammoth2DiT",
                        config_cls=configs_gen.Mammoth2DiTConfig,
                        description="Lumina-2 style single-stream DiT: refiners, adaLN RMSNormZero joint blocks, "
                                    "3-axis RoPE, in-context condition and reference-image tokens")
    yield ComponentSpec(name="lumina2", factory=f"{_M}.lumina2_adapter:Lumina2Decoder",
                        config_cls=configs_gen.Lumina2DecoderConfig,
                        description="diffusers Lumina2Transformer2DModel (local folder or config) behind the "
                                    "mammoth2 decoder interface")


@hookimpl
def tuskml_codecs():
    yield ComponentSpec(name="pixel", factory=f"{_M}.codecs:PixelCodec", config_cls=configs_gen.PixelCodecConfig,
                        description="identity codec: pixels (optionally space-to-depth folded) are the latents")
    yield ComponentSpec(name="autoencoder-kl", factory=f"{_M}.codecs:AutoencoderKLCodec",
                        config_cls=configs_gen.AutoencoderKLCodecConfig,
                        description="diffusers AutoencoderKL (local folder or config) with latent shift/scale")


# --- the composed model ------------------------------------------------------------------------


@hookimpl
def tuskml_models():
    yield ComponentSpec(name="mammoth2", factory="tuskml.plugins.mammoth2.model:Mammoth2Model",
                        config_cls=configs_model.Mammoth2Config,
                        description="MammothModa2-style unified model: AR backbone with generation experts, "
                                    "AR->diffusion aligner and single-stream DiT, trained with NTP + flow matching")


# --- data, evaluation and training (datasets, CLI) ----------------------------------------------


@hookimpl
def tuskml_datasets():
    yield ComponentSpec(name="shapes-world", factory=f"{_M}.shapes_world:build_shapes_world",
                        config_cls=configs_data.ShapesWorldConfig,
                        description="procedural seeded shapes world: GenEval-category prompts, edit triplets, "
                                    "understanding Q&A, held-out compositions; no download")


@hookimpl
def tuskml_cli_commands(cli):
    from tuskml.plugins.mammoth2.cli import add_commands

    add_commands(cli)
