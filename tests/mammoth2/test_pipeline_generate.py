"""Mammoth2Pipeline: generate / edit / ask / caption on the tiny preset."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

from tuskml.plugins.mammoth2.model import Mammoth2InputError, Mammoth2Model
from tuskml.plugins.mammoth2.pipeline import GenerationResult, Mammoth2Pipeline, load_preset
from tuskml.plugins.mammoth2.sequence import Role, collate, dropped_mask, positions_from_mask
from tuskml.plugins.mammoth2.token_sampling import SamplingError

#: backbone overrides of a ``tiny`` model without the colour pointer
NO_POINTER = {"gen_copy_digit": None, "gen_copy_alone": False, "gen_copy_from_image": False}


@pytest.fixture(scope="module")
def pipe() -> Mammoth2Pipeline:
    return Mammoth2Pipeline.from_preset("tiny", seed=0)


@pytest.fixture(scope="module", params=["mammoth2-ar", "hf-causal-lm", "visual-positions"])
def either_backbone(request, pipe) -> Mammoth2Pipeline:
    if request.param == "mammoth2-ar":
        return pipe
    if request.param == "visual-positions":
        other = Mammoth2Pipeline.from_preset("tiny", seed=0, overrides={"visual_positions": True})
        with torch.no_grad():  # large enough that a wrong slot would change the sampled tokens
            other.model.visual_positions.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
        return other
    return Mammoth2Pipeline.from_preset("tiny", seed=0, overrides={"backbone": {"type": "hf-causal-lm"}})


def test_image_slots_number_each_image_block():
    model = Mammoth2Model(load_preset("tiny", visual_positions=True))
    lay, s = model.layout, model.special
    codes = torch.zeros(8, 8, dtype=torch.long)
    ids, _ = lay.edit(codes, model.text_tokenizer.encode("make the red circle blue"), codes)
    slots = model.image_slots(torch.tensor([ids]))[0].tolist()
    *vit_start, source_start, target_start = [i for i, t in enumerate(ids) if t == s.image_start]
    assert len(vit_start) == int(lay.edit_vit)  # the source's ViT block (edit_source_vit) gets no slots
    block = list(range(lay.generated_length + 1))  # codes with eols, then eof
    assert slots[source_start + 1:source_start + 2 + lay.generated_length] == block
    assert slots[target_start + 1:target_start + 2 + lay.generated_length] == block
    assert set(slots[:source_start + 1]) == {-1} and slots[target_start] == -1
    assert set(slots[target_start + 2 + lay.generated_length:]) == {-1}  # image_end, eos
    und, _ = Mammoth2Model(load_preset("tiny")).layout.understanding([5, 6], [7])
    assert set(model.image_slots(torch.tensor([und]))[0].tolist()) == {-1}  # placeholders are the ViT's


def test_generate_a_batch_of_prompts(pipe):
    result = pipe.generate(["a red square", "a"], steps=3, seed=0, return_result=True)
    assert isinstance(result, GenerationResult)
    assert [im.size for im in result.images] == [(32, 32)] * 2 and result.images[0].mode == "RGB"
    assert result.pixels.shape == (2, 3, 32, 32) and result.pixels.abs().max() <= 1
    assert result.visual_codes.shape == (2, 8, 8)
    assert result.plan_pixels.shape == (2, 3, 32, 32)  # the AR plan through the VQ decoder
    assert 0 <= int(result.visual_codes.min()) and int(result.visual_codes.max()) < pipe.model.layout.codebook_size
    assert len(pipe.generate("a circle", steps=2)) == 1


def test_generate_is_deterministic_for_a_seed(pipe):
    kw = dict(steps=3, top_k=50, top_p=0.9, temperature=1.0, return_result=True)
    a = pipe.generate(["a red circle", "a blue square"], seed=7, **kw)
    b = pipe.generate(["a red circle", "a blue square"], seed=7, **kw)
    c = pipe.generate(["a red circle", "a blue square"], seed=8, **kw)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.visual_codes, b.visual_codes)
    assert not torch.equal(a.visual_codes, c.visual_codes) and not torch.equal(a.pixels, c.pixels)


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_cached_guided_sampling_equals_full_recompute(either_backbone, guidance):
    """Greedy tokens from the KV-cached loop equal argmax of CFG logits recomputed without a cache,
    where the unconditional branch sees the prompt masked out; row ends are forced [eol]."""
    pipe = either_backbone
    model = pipe.model
    lay = model.layout
    prompts = ["a red circle left of a blue square", "a"]
    batch = collate([lay.generation(model.text_tokenizer.encode(p)) for p in prompts], model.special.pad,
                    padding_side="left")
    rows = torch.ones(2, dtype=torch.bool)
    hidden = dropped_mask(batch.roles, rows, ~rows)
    with torch.no_grad():
        tokens = pipe.sample_visual_tokens(batch, hidden, guidance=guidance, temperature=0.0, top_k=None, top_p=None,
                                           generator=torch.Generator().manual_seed(0))
        ids = torch.cat([batch.input_ids, tokens], dim=1)
        pad = torch.cat([batch.attention_mask, torch.ones_like(tokens, dtype=torch.bool)], dim=1)
        hid = torch.cat([hidden, torch.zeros_like(tokens, dtype=torch.bool)], dim=1)
        pos = positions_from_mask(pad)
        cond = model.run_backbone(ids, pad, position_ids=pos).logits
        uncond = model.run_backbone(ids, pad & ~hid, position_ids=pos).logits
    guided = uncond + guidance * (cond - uncond)
    start, stop = lay.gen_vocab_start, lay.gen_vocab_start + lay.codebook_size
    p = batch.input_ids.shape[1]
    for step in range(lay.generated_length):
        if lay.is_row_end(step):
            assert bool((tokens[:, step] == model.special.eol).all())
        else:
            expect = start + guided[:, p - 1 + step, start:stop].argmax(-1)
            assert torch.equal(tokens[:, step], expect), f"step {step}"


def test_batched_prompts_decode_like_single_prompts(either_backbone):
    pipe = either_backbone
    kw = dict(steps=2, temperature=0.0, return_result=True)
    both = pipe.generate(["a circle", "a red circle left of two blue squares"], **kw)
    alone = pipe.generate(["a circle"], **kw)
    assert torch.equal(both.visual_codes[:1], alone.visual_codes)
    assert torch.allclose(both.pixels[:1], alone.pixels, atol=1e-4)


def test_edit_returns_images_and_is_deterministic(pipe):
    g = torch.Generator().manual_seed(0)
    src = torch.rand(3, 32, 32, generator=g) * 2 - 1
    a = pipe.edit(src, "make it blue", steps=2, seed=3)
    b = pipe.edit(src, "make it blue", steps=2, seed=3)
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))
    result = pipe.edit(src, "make it blue", steps=2, seed=3, return_result=True)
    assert isinstance(result, GenerationResult) and np.array_equal(np.asarray(result.images[0]), np.asarray(a))
    assert result.visual_codes.shape == (1, 8, 8) and result.plan_pixels.shape == (1, 3, 32, 32)
    many = pipe.edit([src, -src], "make it blue", steps=2)
    assert isinstance(many, list) and len(many) == 2
    with pytest.raises(Mammoth2InputError, match="2 images but 3 instructions"):
        pipe.edit([src, src], ["add a circle", "remove it", "make it red"])


def test_edit_accepts_pil_and_uses_the_source_as_reference(pipe):
    from PIL import Image

    im = Image.new("RGB", (48, 40), (200, 20, 20))
    out = pipe.edit(im, "make it green", steps=2, seed=0)
    assert out.size == (32, 32)


def test_ask_and_caption_return_text_deterministically(pipe):
    img = torch.zeros(3, 32, 32)
    a = pipe.ask(img, "what is in the image?", max_new_tokens=6)
    assert isinstance(a, str) and a == pipe.ask(img, "what is in the image?", max_new_tokens=6)
    sampled = pipe.ask(img, "how many circles?", max_new_tokens=6, temperature=1.0, seed=4)
    assert sampled == pipe.ask(img, "how many circles?", max_new_tokens=6, temperature=1.0, seed=4)
    caps = pipe.caption([img, img.flip(-1)], max_new_tokens=4)
    assert isinstance(caps, list) and len(caps) == 2 and all(isinstance(c, str) for c in caps)


def test_question_first_asks_batched_like_single():
    """Question-first rows put the ViT placeholders after questions of different lengths, so left
    padding shifts them differently per row: a batch must answer as each question alone does."""
    torch.manual_seed(0)
    qpipe = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny", question_first=True)))
    g = torch.Generator().manual_seed(3)
    imgs = [torch.rand(3, 32, 32, generator=g) * 2 - 1 for _ in range(2)]
    questions = ["is there a red triangle?", "how many squares?"]
    batched = qpipe.ask(imgs, questions, max_new_tokens=5)
    assert batched == [qpipe.ask(im, q, max_new_tokens=5) for im, q in zip(imgs, questions)]


def test_describe_first_ask_returns_the_answer_after_the_description(monkeypatch):
    dpipe = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny", describe_first=True)))
    written = "a red circle at top left and a blue square at bottom right . top left"
    monkeypatch.setattr(dpipe.model.text_tokenizer, "decode", lambda ids: written)
    img = torch.zeros(3, 32, 32)
    assert dpipe.ask(img, "where is the red circle?", max_new_tokens=3) == "top left"
    assert dpipe.ask(img, "where is the red circle?", max_new_tokens=3, keep_description=True) == written
    monkeypatch.setattr(dpipe.model.text_tokenizer, "decode", lambda ids: "a red circle at top left")
    assert dpipe.caption([img], max_new_tokens=3) == ["a red circle at top left"]  # no separator: all of it


def test_understanding_needs_a_vision_encoder():
    pipe = Mammoth2Pipeline(Mammoth2Model())  # default config: no ViT
    with pytest.raises(Mammoth2InputError, match="no vision_encoder"):
        pipe.ask(torch.zeros(3, 32, 32), "how many circles?")


def test_bad_arguments_are_clear_errors(pipe):
    with pytest.raises(Mammoth2InputError, match="prompts"):
        pipe.generate([])
    with pytest.raises(SamplingError, match="temperature"):
        pipe.generate("a", temperature=-1.0)
    with pytest.raises(Mammoth2InputError, match="cfg_range"):
        pipe.generate("a", steps=1, cfg_range=(0.8, 0.2))
    with pytest.raises(Mammoth2InputError, match=r"\[3, H, W\]"):
        pipe.edit(torch.zeros(4, 32, 32), "a")


def test_bf16_autocast_and_another_diffusers_scheduler():
    from diffusers import FlowMatchHeunDiscreteScheduler

    pipe = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny")), dtype="bfloat16",
                            scheduler=FlowMatchHeunDiscreteScheduler())
    out = pipe.generate(["a red circle"], steps=2, seed=0, shift=1.0, return_result=True)
    assert out.pixels.dtype == torch.float32 and torch.isfinite(out.pixels).all()


def test_cfg_range_outside_the_trajectory_equals_no_guidance():
    model = Mammoth2Model(load_preset("tiny"))
    with torch.no_grad():  # the DiT's zero-initialised output would make every branch's velocity 0
        for p in model.decoder.parameters():
            if not bool(p.any()):
                p.normal_(std=0.05)
    pipe = Mammoth2Pipeline(model)
    kw = dict(steps=3, seed=5, return_result=True)
    unguided = pipe.generate(["a red circle"], guidance=1.0, **kw)
    out_of_range = pipe.generate(["a red circle"], guidance=6.0, cfg_range=(1.0, 1.0), **kw)  # t < 1 at every step
    guided = pipe.generate(["a red circle"], guidance=6.0, **kw)
    assert torch.equal(unguided.visual_codes, guided.visual_codes)  # same AR stage
    # equal up to float noise (the guided call re-encodes two branches in one batch)
    assert torch.allclose(unguided.pixels, out_of_range.pixels, atol=1e-4)
    assert (unguided.pixels - guided.pixels).abs().max() > 1e-2


def test_source_hints_line_up_with_the_slot_each_position_predicts():
    model = Mammoth2Model(load_preset("tiny", source_hints=True))
    lay, s = model.layout, model.special
    source = torch.arange(64).view(8, 8)
    ids, roles = lay.edit(source, model.text_tokenizer.encode("make the red circle blue"), source + 100)
    ids_t, roles_t = torch.tensor([ids]), torch.tensor([[int(r) for r in roles]])
    hints = model.source_hint_ids(ids_t, roles_t, torch.ones_like(ids_t, dtype=torch.bool))[0]
    labels = torch.tensor(ids[1:] + [s.pad])
    want = [int(t) - lay.gen_vocab_start - 100 if t >= lay.gen_vocab_start + 100 else lay.codebook_size
            for t in labels.tolist()]
    target_start = max(i for i, t in enumerate(ids) if t == s.image_start)
    for p in range(target_start, target_start + lay.generated_length + 1):  # predicts slots 0 .. eof
        assert int(hints[p]) == want[p], p
    assert set(hints[:target_start].tolist()) == {-1} and set(hints[target_start + lay.generated_length + 1:].tolist()) == {-1}
    hidden_source = torch.tensor([[r != int(Role.SOURCE_IMAGE) for r in roles_t[0].tolist()]])
    assert set(model.source_hint_ids(ids_t, roles_t, hidden_source)[0].tolist()) == {-1}  # no source, no hints
    t2i, t2i_roles = lay.generation(model.text_tokenizer.encode("a red circle"), source)
    t2i_hints = model.source_hint_ids(torch.tensor([t2i]), torch.tensor([[int(r) for r in t2i_roles]]),
                                      torch.ones(1, len(t2i), dtype=torch.bool))
    assert set(t2i_hints[0].tolist()) == {-1}


COLOUR_STRUCTURE = {"visual_tokenizer": {"num_codebooks": 2, "groups": "colour-structure", "codebook_size": 16,
                                         "colour_codebook_size": 4},
                    "backbone": {"gen_head": "factorized"}}
FLAT = {"visual_tokenizer": {"num_codebooks": 1, "groups": "learned", "codebook_size": 256, "code_dim": 8},
        "backbone": {"gen_head": "flat", **NO_POINTER},  # the colour pointers need a factorised head / VQ
        "answer_pointer_words": []}


@pytest.mark.parametrize("factorized", [False, True], ids=["flat", "colour-structure"])
def test_cached_edit_sampling_with_source_hints_equals_full_recompute(factorized):
    overrides = {"source_hints": True, "visual_positions": True, **(COLOUR_STRUCTURE if factorized else FLAT)}
    pipe = Mammoth2Pipeline.from_preset("tiny", seed=0, overrides=overrides)
    model = pipe.model
    with torch.no_grad():  # large enough that a misaligned hint would change the tokens
        model.source_hints.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))
    lay = model.layout
    src = torch.randint(0, lay.codebook_size, (2, 8, 8), generator=torch.Generator().manual_seed(3))
    batch = collate([lay.edit(c, model.text_tokenizer.encode(t)) for c, t in zip(src, ["remove the red circle", "add a blue square at top left"])],
                    model.special.pad, padding_side="left")
    rows = torch.ones(2, dtype=torch.bool)
    hidden = dropped_mask(batch.roles, rows, ~rows)
    guidance = 2.0
    with torch.no_grad():
        tokens = pipe.sample_visual_tokens(batch, hidden, guidance=guidance, temperature=0.0, top_k=None, top_p=None,
                                           generator=torch.Generator().manual_seed(0))
        ids = torch.cat([batch.input_ids, tokens], dim=1)
        gen_roles = torch.where(tokens == model.special.eol, int(Role.TARGET_SPECIAL), int(Role.TARGET_VISUAL))
        roles = torch.cat([batch.roles, gen_roles], dim=1)
        pad = torch.cat([batch.attention_mask, torch.ones_like(tokens, dtype=torch.bool)], dim=1)
        hid = torch.cat([hidden, torch.zeros_like(tokens, dtype=torch.bool)], dim=1)
        pos = positions_from_mask(pad)
        logits = [model.run_backbone(ids, vis, position_ids=pos, source_hints=model.source_hint_ids(ids, roles, vis),
                                     copy_alone=model.copy_alone_rows(roles)).logits
                  for vis in (pad, pad & ~hid)]
    guided = logits[1] + guidance * (logits[0] - logits[1])
    start, stop = lay.gen_vocab_start, lay.gen_vocab_start + lay.codebook_size
    p = batch.input_ids.shape[1]
    for step in range(lay.generated_length):
        if not lay.is_row_end(step):
            assert torch.equal(tokens[:, step], start + guided[:, p - 1 + step, start:stop].argmax(-1)), f"step {step}"


def test_factorised_source_hints_sum_the_digit_rows():
    model = Mammoth2Model(load_preset("tiny", source_hints=True, **COLOUR_STRUCTURE))
    assert model.hint_factors == (4, 16) and model.source_hints.num_embeddings == 4 + 16 + 1
    with torch.no_grad():
        model.source_hints.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    w = model.source_hints.weight
    hints = torch.tensor([[2 * 16 + 5, 64, -1]])  # code (2, 5), eol / eof, none
    emb = model._hint_embeddings(hints)[0]
    torch.testing.assert_close(emb[0], w[2] + w[4 + 5])
    torch.testing.assert_close(emb[1], w[-1])
    assert torch.equal(emb[2], torch.zeros_like(emb[2]))


def test_scene_plan_model_writes_a_plan_then_draws_after_it():
    pipe = Mammoth2Pipeline.from_preset("tiny", seed=0, overrides={"scene_plan": True})
    model = pipe.model
    specials = set(attrs.astuple(model.special))
    result = pipe.generate(["a red circle", "two squares"], steps=1, max_plan_tokens=5, return_result=True)
    assert len(result.scene_plans) == 2 and len(result.images) == 2
    for plan in result.scene_plans:  # an untrained model writes up to the limit, never a special token
        ids = model.text_tokenizer.encode(plan)
        assert 0 < len(ids) <= 5 and not specials & set(ids)
    bias = torch.zeros(model.backbone.lm_head.out_features)
    bias[model.special.image_start] = 1e4  # [image_start] certain: every plan is empty
    model.backbone.lm_head.bias = torch.nn.Parameter(bias)
    assert pipe.generate(["a red circle"], steps=1, return_result=True).scene_plans == [""]
    source = torch.rand(3, 32, 32) * 2 - 1
    assert pipe.edit([source], ["remove the red circle"], steps=1, return_result=True).scene_plans == [""]
    with pytest.raises(Mammoth2InputError, match="max_plan_tokens"):
        pipe.generate("a red circle", max_plan_tokens=0)
    from tuskml.plugins.mammoth2.model import TextToImageSample
    with pytest.raises(Mammoth2InputError, match="no plan.*scene_plan"):
        model.make_batch([TextToImageSample("a red circle", torch.zeros(3, 32, 32))])
    from tuskml.plugins.mammoth2.model import EditSample
    with pytest.raises(Mammoth2InputError, match="no plan.*scene_plan"):
        model.make_batch([EditSample(source, "remove the red circle", torch.zeros(3, 32, 32))])
    batch = model.make_batch([TextToImageSample("a red circle", torch.zeros(3, 32, 32), plan="a circle at top left"),
                              EditSample(source, "remove the red circle", source, plan="a square at top left")])
    for row, plan in enumerate(("a circle at top left", "a square at top left")):
        plan_ids = torch.tensor(model.text_tokenizer.encode(plan))
        roles = batch["roles"][row]
        assert torch.equal(batch["input_ids"][row][roles == int(Role.PLAN)][:-1], plan_ids)  # then [image_start]


def test_plan_guidance_weighs_the_prompt_against_a_branch_without_it():
    pipe = Mammoth2Pipeline.from_preset("tiny", seed=0)
    model = pipe.model
    assert model.config.scene_plan
    ids, roles = model.layout.plan_prompt(model.text_tokenizer.encode("a green triangle below a red circle"))
    prompt_hidden = dropped_mask(torch.tensor([[int(r) for r in roles]]), torch.ones(1, dtype=torch.bool),
                                 torch.zeros(1, dtype=torch.bool))[0].tolist()
    banned = [i for i in attrs.astuple(model.special) if i != model.special.image_start]
    scale, written = 3.0, []
    with torch.no_grad():  # the reference: full forwards, the prompt hidden in one, the plan so far in neither
        for _ in range(4):
            seq = torch.tensor([ids + written])
            full = torch.ones_like(seq, dtype=torch.bool)
            hidden = torch.tensor([prompt_hidden + [False] * len(written)])
            cond, uncond = (model.run_backbone(seq, vis, position_ids=positions_from_mask(full)).logits[0, -1]
                            for vis in (full, full & ~hidden))
            guided = (uncond + scale * (cond - uncond))[:model.layout.gen_vocab_start]
            guided[banned] = float("-inf")
            written.append(int(guided.argmax()))
    assert model.special.image_start not in written  # an untrained model writes up to the limit
    result = pipe.generate("a green triangle below a red circle", steps=1, plan_guidance=scale, max_plan_tokens=4,
                           return_result=True)
    assert model.text_tokenizer.encode(result.scene_plans[0]) == written
    with pytest.raises(Mammoth2InputError, match="plan_guidance"):
        pipe.generate("a red circle", plan_guidance=0.0)


def test_pointer_scale_weighs_the_colour_pointer_and_needs_one():
    plain = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny", backbone=NO_POINTER)))
    with pytest.raises(Mammoth2InputError, match="pointer_scale=2.0 needs a backbone with a colour pointer"):
        plain.generate("a red circle", steps=1, pointer_scale=2.0)
    torch.manual_seed(0)
    pointed = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny", backbone={"gen_copy_digit": 0, "gen_copy_keys": "hidden",
                                                                         "gen_copy_values": "token"})))
    with torch.no_grad():
        pointed.model.backbone.copy.value.weight.normal_(0.0, 1.0)
    codes = [pointed.generate(["a red circle", "a blue square"], steps=1, seed=3, temperature=0, return_result=True).visual_codes
             for _ in range(2)]
    scaled = pointed.generate(["a red circle", "a blue square"], steps=1, seed=3, temperature=0, pointer_scale=0.0,
                              return_result=True).visual_codes
    assert torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], scaled)
    assert pointed.model.backbone.copy_scale == 1.0  # restored after the call
