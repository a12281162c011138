"""``edit_source_vit``: an edit's source also enters the AR as ViT tokens, right after the instruction."""

from __future__ import annotations

import attrs
import pytest
import torch

import tuskml
from tuskml.plugins.mammoth2.model import EditSample, Mammoth2Model
from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline, load_preset
from tuskml.plugins.mammoth2.sequence import Role, collate, dropped_mask

PLAN = "a circle at top left"


def _image(seed: int) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def model() -> Mammoth2Model:
    torch.manual_seed(0)
    return Mammoth2Model(load_preset("tiny", edit_source_vit=True)).eval()


def _positions(roles: torch.Tensor, role: Role) -> list[int]:
    return [i for i, r in enumerate(roles.tolist()) if r == int(role)]


def test_edit_rows_read_instruction_vit_tokens_source_plan_target(model):
    batch = model.make_batch([EditSample(_image(0), "remove the red circle", _image(1), plan=PLAN)])
    roles = batch["roles"][0]
    text, vit, source, plan = (_positions(roles, r) for r in (Role.PROMPT_TEXT, Role.PLACEHOLDER,
                                                                Role.SOURCE_IMAGE, Role.PLAN))
    assert len(vit) == model.layout.num_placeholders == 16
    assert max(text) < min(vit) and max(vit) < min(source) and max(source) < min(plan)
    assert bool(batch["has_understanding"][0]) and torch.equal(batch["understanding_images"][0], _image(0))
    ids = batch["input_ids"][0]
    assert ids[min(vit) - 1] == model.special.image_start and ids[max(vit) + 1] == model.special.image_end
    # without the option an edit row has no placeholder and no ViT image
    plain_model = Mammoth2Model(load_preset("tiny", edit_source_vit=False))
    plain = plain_model.make_batch([EditSample(_image(0), "remove the red circle", _image(1), plan=PLAN)])
    assert not _positions(plain["roles"][0], Role.PLACEHOLDER) and not bool(plain["has_understanding"][0])


def _hidden_states(model: Mammoth2Model, source: torch.Tensor, instruction: str,
                   vit_image: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states of one edit row; ``vit_image`` replaces the ViT's image (the ids, and so the
    source's VQ codes, stay those of ``source``)."""
    batch = model.make_batch([EditSample(source, instruction, _image(1), plan=PLAN)])
    images = batch["understanding_images"] if vit_image is None else vit_image[None]
    with torch.no_grad():
        embeds = model.input_embeddings(batch["input_ids"], batch["roles"], images, batch["has_understanding"])
        out = model.run_backbone(batch["input_ids"], batch["attention_mask"], inputs_embeds=embeds,
                                 output_hidden_states=True)
    return out.hidden_states[-1][0], batch["roles"][0]


def test_the_vit_tokens_carry_the_source_and_see_the_instruction(model):
    base, roles = _hidden_states(model, _image(0), "remove the red circle")
    vit = _positions(roles, Role.PLACEHOLDER)
    # another instruction of the same length changes the ViT tokens' states: they come after it
    other_text, _ = _hidden_states(model, _image(0), "remove the blue square")
    assert not torch.allclose(base[vit], other_text[vit])
    # the same ids (VQ codes) with another image behind the ViT tokens: the plan's first position sees it
    other_vit, _ = _hidden_states(model, _image(0), "remove the red circle", vit_image=_image(5))
    plan_start = min(_positions(roles, Role.PLAN))
    assert not torch.allclose(base[plan_start], other_vit[plan_start])
    assert torch.allclose(base[: min(vit)], other_vit[: min(vit)])  # causal: the instruction does not see it


def test_dropping_the_source_hides_its_vit_tokens_too(model):
    batch = model.make_batch([EditSample(_image(0), "make the red circle blue", _image(1), plan=PLAN)])
    roles = batch["roles"]
    yes, no = torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)
    hidden = dropped_mask(roles, yes, yes)[0]
    for role in (Role.PLACEHOLDER, Role.SOURCE_IMAGE, Role.PROMPT_TEXT, Role.PLAN):
        assert bool(hidden[_positions(roles[0], role)].all()), role
    text_only = dropped_mask(roles, yes, no)[0]
    assert not bool(text_only[_positions(roles[0], Role.PLACEHOLDER)].any())


def test_the_edit_loss_trains_the_vision_encoder():
    torch.manual_seed(0)
    model = Mammoth2Model(load_preset("tiny", edit_source_vit=True, fm_weight=0.0))
    batch = model.make_batch([EditSample(_image(0), "remove the red circle", _image(1), plan=PLAN)])
    model(**batch).loss.backward()
    grads = [p.grad for p in model.vision_encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_edit_source_vit_needs_a_vision_encoder():
    config = load_preset("tiny", edit_source_vit=True)
    with pytest.raises(tuskml.ConfigError, match="edit_source_vit = true .* no vision_encoder"):
        Mammoth2Model(attrs.evolve(config, vision_encoder=None))


def test_edit_plans_and_images_batched_equal_single():
    """Instructions of different lengths shift each row's ViT placeholders differently under left
    padding: a batch must plan and draw as each edit alone does."""
    torch.manual_seed(0)
    pipe = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny", edit_source_vit=True)))
    sources = [_image(3), _image(4)]
    instructions = ["remove the red circle", "add a blue square at top left"]
    kw = dict(steps=2, seed=0, max_plan_tokens=4, return_result=True)
    both = pipe.edit(sources, instructions, **kw)
    for k in range(2):
        alone = pipe.edit([sources[k]], [instructions[k]], **kw)
        assert both.scene_plans[k] == alone.scene_plans[0]
        assert torch.equal(both.visual_codes[k], alone.visual_codes[0])
    # the embeddings the pipeline feeds hold the ViT features at each row's placeholders
    lay = pipe.model.layout
    batch = collate([lay.edit_plan_prompt(pipe.model.visual_codes(s[None])[0], pipe.model.text_tokenizer.encode(i))
                     for s, i in zip(sources, instructions)], pipe.model.special.pad, padding_side="left")
    embeds = pipe._vit_embeddings(batch.input_ids, batch.roles, torch.stack(sources))
    with torch.no_grad():
        feats = pipe.model.projector(pipe.model.vision_encoder(torch.stack(sources)))
    for k in range(2):
        slots = _positions(batch.roles[k], Role.PLACEHOLDER)
        torch.testing.assert_close(embeds[k, slots], feats[k])


class _Scaled(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, factor: float):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def test_edit_inference_reads_the_vit_tokens(monkeypatch):
    """The plan's logits and the image tokens both change when only the ViT features change (the ids stay)."""
    torch.manual_seed(0)
    pipe = Mammoth2Pipeline(Mammoth2Model(load_preset("tiny", edit_source_vit=True)))
    kw = dict(steps=1, seed=0, max_plan_tokens=6, return_result=True)
    first_plan_logits: list[torch.Tensor] = []  # what the plan's first word is chosen from, per edit call
    decode = pipe._decode_loop

    def recording(batch, hidden, *, choose, **k):
        def record(step, logits):
            if step == 0 and not k.get("image_tokens"):
                first_plan_logits.append(logits.clone())
            return choose(step, logits)
        return decode(batch, hidden, choose=record, **k)

    monkeypatch.setattr(pipe, "_decode_loop", recording)
    before = pipe.edit([_image(3)], ["remove the red circle"], **kw)
    monkeypatch.setattr(pipe.model, "projector", _Scaled(pipe.model.projector, 30.0))
    pipe.edit([_image(3)], ["remove the red circle"], **kw)
    # an untrained model's greedy words may stay the same; their logits must move
    assert len(first_plan_logits) == 2 and not torch.allclose(first_plan_logits[0], first_plan_logits[1], atol=1e-3)
    plan_ids = pipe.model.text_tokenizer.encode(before.scene_plans[0])
    monkeypatch.setattr(pipe, "_scene_plans", lambda *a, **k: [plan_ids])  # same plan: only the image tokens
    fixed_plan = pipe.edit([_image(3)], ["remove the red circle"], **kw)
    assert not torch.equal(before.visual_codes, fixed_plan.visual_codes)
