"""Mammoth2Model: conformance, derived sizes, losses, FM gradients into the backbone, training."""

from __future__ import annotations

import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.model import (
    EditSample,
    Mammoth2InputError,
    Mammoth2Model,
    TextToImageSample,
    UnderstandingSample,
)
from tuskml.plugins.mammoth2.pipeline import load_preset, preset_names
from tuskml.plugins.mammoth2.sequence import Role
from tuskml.testing import check_component

PLAN = "a circle at top left"  # a scene plan for the tiny preset's scene_plan = true


@pytest.fixture(scope="module")
def tiny() -> Mammoth2Model:
    torch.manual_seed(0)
    return Mammoth2Model(load_preset("tiny"))


def test_conformance(tmp_path):
    check_component("models", "mammoth2", tmp_path)


def test_presets_are_shipped_and_parse():
    assert {"tiny", "small"} <= set(preset_names())
    small = load_preset("small")
    assert small.image_size == 128 and small.vision_encoder is not None
    with pytest.raises(tuskml.ConfigError, match="no mammoth2 preset 'huge'"):
        load_preset("huge")


def test_model_derives_sizes_shared_by_parts(tiny):
    cfg = tiny.config
    assert cfg.backbone.text_vocab_size == tiny.text_tokenizer.vocab_size
    assert cfg.backbone.gen_vocab_size == tiny.visual_tokenizer.codebook_size
    assert cfg.aligner.in_dim == tiny.backbone.hidden_size
    assert cfg.aligner.out_dim == tiny.decoder.cond_dim
    assert cfg.decoder.in_channels == tiny.codec.latent_channels
    assert cfg.vision_encoder.img_size == cfg.image_size == cfg.visual_tokenizer.image_size
    # a preset written with inconsistent sizes is fixed up, not trusted
    bad = load_preset("tiny", backbone={"text_vocab_size": 7, "gen_vocab_size": 3}, aligner={"in_dim": 5})
    model = Mammoth2Model(bad)
    assert model.backbone.gen_vocab_start == model.text_tokenizer.vocab_size
    assert model.config.aligner.in_dim == model.backbone.hidden_size


def test_factorized_generation_head_takes_its_digits_from_a_product_quantised_vq():
    cfg = load_preset("tiny", visual_tokenizer={"num_codebooks": 2, "codebook_size": 8, "groups": "learned"},
                      backbone={"gen_head": "factorized", "gen_factors": [3, 5], "gen_vocab_size": 15})
    model = Mammoth2Model(cfg)  # written sizes are replaced by the derived ones
    assert model.config.backbone.gen_factors == (8, 8) and model.config.backbone.gen_vocab_size == 64
    assert model.layout.codebook_size == 64
    out = model(**model.example_inputs())
    assert torch.isfinite(out.loss)
    with pytest.raises(tuskml.ConfigError, match="num_codebooks >= 2"):
        Mammoth2Model(load_preset("tiny", visual_tokenizer={"num_codebooks": 1, "groups": "learned"},
                                  backbone={"gen_head": "factorized"}))


def test_inconsistent_image_size_is_a_clear_error():
    with pytest.raises(tuskml.ConfigError, match="image_size"):
        Mammoth2Model(load_preset("tiny", image_size=30))


def test_forward_losses_and_weighting(tiny):
    batch = tiny.example_inputs()
    assert batch["input_ids"].shape[0] == 3 and bool(batch["has_understanding"][2])
    tiny.eval()
    torch.manual_seed(0)
    out = tiny(**batch)
    for value in (out.loss, out.ntp_loss, out.fm_loss):
        assert value.dim() == 0 and torch.isfinite(value)
    assert out.ntp_loss > 1.0 and out.fm_loss > 0.1  # untrained
    w = tiny.config.fm_weight
    assert torch.allclose(out.loss, tiny.config.ntp_weight * out.ntp_loss + w * out.fm_loss)
    torch.manual_seed(0)
    again = tiny(**batch)
    assert torch.equal(out.loss, again.loss)  # eval mode: deterministic for a seed


def test_understanding_features_enter_at_placeholders(tiny):
    """Changing the understanding image changes the answer's loss; with no ViT rows nothing changes."""
    tiny.eval()
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 32, 32, generator=g) * 2 - 1
    a = tiny.make_batch([UnderstandingSample(img, "what colour is it?", "red", plan="at top left a red circle")])
    b = tiny.make_batch([UnderstandingSample(-img, "what colour is it?", "red", plan="at top left a red circle")])
    with torch.no_grad():
        la, lb = tiny(**a).ntp_loss, tiny(**b).ntp_loss
    assert not torch.isclose(la, lb)
    with pytest.raises(Mammoth2InputError, match="TextToImageSample"):
        tiny.make_batch(["not a sample"])
    with pytest.raises(Mammoth2InputError, match="32x32"):
        tiny.make_batch([TextToImageSample("a", torch.zeros(3, 16, 16))])


def test_question_first_puts_the_question_before_the_image_and_the_image_sees_it():
    """With ``question_first`` the ViT tokens come after the question, so changing the question changes
    the hidden states at the image placeholders; in the default order they cannot see it."""
    torch.manual_seed(0)
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for question_first in (False, True):
        model = Mammoth2Model(load_preset("tiny", question_first=question_first)).eval()
        states = []
        for question in ("is there a red circle?", "is there a blue square?"):
            batch = model.make_batch([UnderstandingSample(img, question, "yes", plan="nothing")])
            roles = batch["roles"][0].tolist()
            ph = [i for i, r in enumerate(roles) if r == int(Role.PLACEHOLDER)]
            text = [i for i, r in enumerate(roles) if r == int(Role.PROMPT_TEXT)]
            assert (max(text) < min(ph)) == question_first and len(ph) == model.layout.num_placeholders
            with torch.no_grad():
                out = model.run_backbone(batch["input_ids"], batch["attention_mask"],
                                         inputs_embeds=model.input_embeddings(batch["input_ids"], batch["roles"],
                                                                              batch["understanding_images"],
                                                                              batch["has_understanding"]),
                                         output_hidden_states=True)
            states.append(out.hidden_states[-1][0, ph])
        assert torch.allclose(states[0], states[1]) != question_first


def test_describe_first_answers_after_the_description_and_captions_stay_as_they_are():
    model = Mammoth2Model(load_preset("tiny", describe_first=True))
    tok = model.text_tokenizer
    img = torch.zeros(3, 32, 32)
    caption = "a red circle at top left"

    def answer_ids(m: Mammoth2Model, sample: UnderstandingSample) -> list[int]:
        batch = m.make_batch([sample])
        keep = batch["roles"][0] == int(Role.ANSWER)
        return batch["input_ids"][0][keep].tolist()[:-1]  # the answer's tokens, without its eos

    question = UnderstandingSample(img, "is there a red circle?", "yes", plan=caption)
    assert answer_ids(model, question) == tok.encode("a red circle at top left . yes")
    assert answer_ids(model, UnderstandingSample(img, "", caption, plan=caption)) == tok.encode(caption)
    assert answer_ids(Mammoth2Model(load_preset("tiny", describe_first=False)), question) == tok.encode("yes")  # option off
    with pytest.raises(Mammoth2InputError, match="describe_first"):
        model.make_batch([UnderstandingSample(img, "how many circles?", "one")])


def test_fm_gradients_reach_backbone_and_generation_experts():
    torch.manual_seed(0)
    model = Mammoth2Model(load_preset("tiny", prompt_dropout=0.0, source_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    batch = model.make_batch([TextToImageSample("red", img[0], plan=PLAN), EditSample(img[0], "blue", img[1], plan=PLAN)])
    # the DiT starts with zero-initialised output/gates (adaLN-zero), which blocks every upstream
    # gradient at step 0; give those weights small values, as after a few training steps
    with torch.no_grad():
        for p in model.decoder.parameters():
            if not bool(p.any()):
                p.normal_(std=0.02)
    model.zero_grad()
    model(**batch).fm_loss.backward()
    start = model.config.backbone.experts.start_layer
    for i, layer in enumerate(model.backbone.layers):
        attn_grad = sum(p.grad.abs().sum() for p in layer.self_attn.parameters() if p.grad is not None)
        assert attn_grad > 0, f"no FM gradient in backbone layer {i} attention"
        if i >= start:
            expert_grad = sum(p.grad.abs().sum() for p in layer.gen_mlp.parameters() if p.grad is not None)
            assert expert_grad > 0, f"no FM gradient in the generation expert of layer {i}"
    bb = model.backbone  # one generation table, or one per digit with a factorised head
    tables = list(bb.gen_embed_factors) if bb.gen_factors else [bb.gen_embed_tokens]
    assert all(t.weight.grad.abs().sum() > 0 for t in tables)
    # NTP alone does not touch the DiT
    model.zero_grad()
    model(**batch).ntp_loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.parameters())


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = Mammoth2Model(load_preset("tiny"))
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    batch = model.make_batch([TextToImageSample("red", img[0], plan=PLAN), TextToImageSample("blue", img[1], plan=PLAN),
                              UnderstandingSample(img[0], "color?", "red", plan="at top left a red circle")])

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(123)
            return float(model(**batch).loss)

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(12):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.slow
def test_small_preset_builds_consistently_and_runs_a_forward():
    """The GPU preset on a CPU: derived sizes agree and one 128 px text-to-image sample gives finite losses."""
    torch.manual_seed(0)
    model = Mammoth2Model(load_preset("small")).eval()
    assert model.layout.grid == (16, 16) and model.latent_size == 64
    assert model.config.aligner.out_dim == model.decoder.cond_dim == 384
    batch = model.make_batch([TextToImageSample("a cat", torch.zeros(3, 128, 128), plan=PLAN)])
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss) and out.fm_loss > 0


def test_training_forward_under_bf16_autocast(tiny):
    tiny.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(**tiny.example_inputs())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in tiny.backbone.parameters() if p.grad is not None)
    tiny.zero_grad(set_to_none=True)
    tiny.eval()


def test_plan_reference_gives_the_dit_the_decoded_target_codes(monkeypatch):
    """With plan_reference, every image-making row's DiT call gets the VQ-decoded plan (the target's
    own codes in training) as its first reference; edits get the source as the second."""
    model = Mammoth2Model(load_preset("tiny", plan_reference=True, prompt_dropout=0.0, source_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    batch = model.make_batch([TextToImageSample("a red circle", img[0], plan=PLAN), EditSample(img[1], "make it blue", img[2], plan=PLAN)])
    seen = []
    decoder_forward = model.decoder.forward

    def spy(x_t, t, cond, cond_mask, refs=None):
        seen.append([r.clone() for r in refs or []])
        return decoder_forward(x_t, t, cond, cond_mask, refs)

    monkeypatch.setattr(model.decoder, "forward", spy)
    model(**batch)
    assert sorted(len(r) for r in seen) == [1, 2]
    plans = torch.cat([r[0] for r in sorted(seen, key=len)])
    codes = model.visual_codes(torch.stack([img[0], img[2]]))
    assert torch.allclose(plans, model.plan_latents(codes), atol=1e-5)
    edit_refs = max(seen, key=len)
    assert torch.allclose(edit_refs[1], model.encode_latents(img[1:2]), atol=1e-6)


def test_fm_max_rows_limits_the_dit_rows_but_not_the_ar_rows(monkeypatch):
    """fm_max_rows = 1: only the first image-making row reaches the DiT; NTP still covers every row."""
    model = Mammoth2Model(load_preset("tiny", fm_max_rows=1, prompt_dropout=0.0, source_dropout=0.0)).eval()
    full = Mammoth2Model(load_preset("tiny", prompt_dropout=0.0, source_dropout=0.0)).eval()
    full.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    batch = model.make_batch([TextToImageSample("a red circle", img[0], plan=PLAN), TextToImageSample("a square", img[1], plan=PLAN)])
    rows = []
    decoder_forward = model.decoder.forward

    def spy(x_t, t, cond, cond_mask, refs=None):
        rows.append(x_t.shape[0])
        return decoder_forward(x_t, t, cond, cond_mask, refs)

    monkeypatch.setattr(model.decoder, "forward", spy)
    out, ref = model(**batch), full(**batch)
    assert rows == [1]
    assert torch.allclose(out.ntp_loss, ref.ntp_loss)  # the AR's loss is over both rows either way
    with pytest.raises(ValueError, match="fm_max_rows"):
        load_preset("tiny", fm_max_rows=-1)


def test_plan_noise_swaps_plan_codes_in_training_only(monkeypatch):
    model = Mammoth2Model(load_preset("tiny", plan_reference=True, plan_noise=0.5, prompt_dropout=0.0))
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = model.make_batch([TextToImageSample("a red circle", img[0], plan=PLAN), TextToImageSample("a square", img[1], plan=PLAN)])
    planned = []
    plan_latents = model.plan_latents

    def spy(codes):
        planned.append(codes.clone())
        return plan_latents(codes)

    monkeypatch.setattr(model, "plan_latents", spy)
    truth = model.visual_codes(img)
    model.train()(**batch)
    changed = (planned[-1] != truth).float().mean().item()
    assert 0.3 < changed < 0.6  # about half the codes swapped (a swap may draw the same code)
    model.eval()(**batch)
    assert torch.equal(planned[-1], truth)


def test_copy_alone_text_to_image_rows_train_the_pointer_not_the_colour_head():
    torch.manual_seed(0)
    model = Mammoth2Model(load_preset("tiny", prompt_dropout=0.0, source_dropout=0.0))  # the preset has the option
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    t2i = model.make_batch([TextToImageSample("a red circle", img[0], plan=PLAN)])
    edit = model.make_batch([EditSample(img[0], "make it blue", img[1], plan=PLAN)])
    assert model.copy_alone_rows(t2i["roles"]).tolist() == [True]
    assert model.copy_alone_rows(edit["roles"]).tolist() == [False]
    colour_head = model.backbone.gen_head_factors[0].weight
    for batch, head_learns in ((t2i, False), (edit, True)):
        model.zero_grad()
        model(**batch).ntp_loss.backward()
        assert model.backbone.copy.null_value.grad.abs().sum() > 0  # the pointer learns in both
        got = colour_head.grad is not None and bool(colour_head.grad.abs().sum() > 0)
        assert got == head_learns
    plain = Mammoth2Model(load_preset("tiny", backbone={"gen_copy_digit": None, "gen_copy_alone": False,
                                                        "gen_copy_from_image": False}))
    assert plain.copy_alone_rows(t2i["roles"]) is None
