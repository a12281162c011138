"""Token layout, batching and logit sampling of the mammoth2 model (no backbone needed)."""

from __future__ import annotations

import pytest
import torch

from tuskml.plugins.mammoth2.sequence import (
    Role,
    SequenceError,
    SpecialTokens,
    TokenLayout,
    collate,
    dropped_mask,
    ntp_labels,
    prompt_mask,
    visual_mask,
)
from tuskml.plugins.mammoth2.token_sampling import SamplingError, filter_logits, guided_logits, sample_next

SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "image_start": 3, "image_end": 4, "eol": 5, "eof": 6,
           "image_placeholder": 7}
GEN = 100  # generation ids start here


def layout(num_placeholders: int = 3) -> TokenLayout:
    return TokenLayout(special=SpecialTokens.from_mapping(SPECIAL), gen_vocab_start=GEN, codebook_size=16,
                       grid=(2, 3), num_placeholders=num_placeholders)


def test_generation_layout_rows_end_with_eol_and_image_is_closed():
    codes = torch.tensor([[0, 1, 2], [3, 4, 15]])
    ids, roles = layout().generation([50, 51], codes)
    assert ids == [1, 50, 51, 3, 100, 101, 102, 5, 103, 104, 115, 5, 6, 4, 2]
    assert roles[:4] == [Role.PROMPT_SPECIAL, Role.PROMPT_TEXT, Role.PROMPT_TEXT, Role.PROMPT_SPECIAL]
    assert roles[4:7] == [Role.TARGET_VISUAL] * 3 and roles[7] == Role.TARGET_SPECIAL
    assert roles[-3:] == [Role.TARGET_SPECIAL] * 3
    lay = layout()
    assert len(ids) == 3 + lay.image_length + 1  # bos, prompt, image block, eos


def test_prompt_only_ends_with_image_start_and_codes_round_trip():
    lay = layout()
    ids, roles = lay.generation([50])
    assert ids == [1, 50, 3]
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6]]])
    generated = torch.tensor([lay.image_rows(codes[0])])
    assert generated.shape[1] == lay.generated_length
    assert torch.equal(lay.codes_from_generated(generated), codes)
    assert [lay.is_row_end(s) for s in range(lay.generated_length)] == [False, False, False, True] * 2


def test_scene_plan_follows_the_prompt_as_a_target_the_uncond_branch_hides():
    lay = layout()
    codes = torch.tensor([[0, 1, 2], [3, 4, 15]])
    ids, roles = lay.generation([50, 51], codes, plan_ids=[70, 71, 72])
    assert ids[:7] == [1, 50, 51, 70, 71, 72, 3] and ids[7:] == layout().generation([50], codes)[0][3:]
    assert roles[3:7] == [Role.PLAN] * 4  # the plan and the [image_start] that ends it
    assert lay.plan_prompt([50, 51]) == (ids[:3], roles[:3])
    batch = collate([(ids, roles)], 0)
    labels = ntp_labels(batch.input_ids, batch.roles)[0]
    assert labels[2:6].tolist() == [70, 71, 72, 3]  # the last prompt token predicts the plan, which ends itself
    assert int((labels != -100).sum()) == 4 + 6 + 2 + 3
    assert bool(prompt_mask(batch.roles)[0, :7].all())  # the plan joins the aligner's text condition
    yes, no = torch.tensor([True]), torch.tensor([False])
    assert dropped_mask(batch.roles, yes, no)[0].nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 6]
    assert ids[:-1] == lay.generation([50, 51], codes, plan_ids=[70, 71, 72])[0][:-1]
    assert lay.generation([50], plan_ids=[])[0] == [1, 50, 3]  # an empty plan: just its end
    src = torch.zeros(2, 3, dtype=torch.long)
    eids, eroles = lay.edit(src, [60], codes, plan_ids=[70, 71])
    prompt_ids, prompt_roles = lay.edit_plan_prompt(src, [60])
    assert eids[:len(prompt_ids)] == prompt_ids and eroles[:len(prompt_ids)] == prompt_roles
    assert prompt_roles[-1] == Role.PROMPT_SPECIAL and eids[len(prompt_ids):len(prompt_ids) + 3] == [70, 71, 3]
    assert eroles[len(prompt_ids):len(prompt_ids) + 3] == [Role.PLAN] * 3
    assert eids[len(prompt_ids) + 3:] == lay.edit(src, [60], codes)[0][len(prompt_ids) + 1:]


def test_edit_puts_the_source_right_before_the_target():
    src = torch.zeros(2, 3, dtype=torch.long)
    ids, roles = layout().edit(src, [60, 61], torch.ones(2, 3, dtype=torch.long))
    assert ids[:4] == [1, 60, 61, 3] and ids[4:12] == [100, 100, 100, 5, 100, 100, 100, 5]
    assert ids[12:15] == [6, 4, 3]  # source eof, image_end, then the target's image_start
    assert roles[1:3] == [Role.PROMPT_TEXT] * 2 and roles[4:13] == [Role.SOURCE_IMAGE] * 9  # rows + eof
    assert roles[14] == Role.PROMPT_SPECIAL and roles[15] == Role.TARGET_VISUAL
    # every target code sits one image block after its source code, whatever the instruction length
    for instruction in ([60], [60, 61, 62, 63]):
        ids, roles = layout().edit(src, instruction, torch.ones(2, 3, dtype=torch.long))
        source = [i for i, r in enumerate(roles) if r == Role.SOURCE_IMAGE]
        target = [i for i, r in enumerate(roles) if r == Role.TARGET_VISUAL]
        assert {t - s for s, t in zip([i for i in source if ids[i] == 100], target)} == {layout().image_length}


def test_understanding_has_placeholders_and_answer_targets():
    ids, roles = layout(num_placeholders=3).understanding([70, 71], [80])
    assert ids == [1, 3, 7, 7, 7, 4, 70, 71, 80, 2]
    labels = ntp_labels(torch.tensor([ids]), torch.tensor([[int(r) for r in roles]]))
    assert labels[0].tolist() == [-100] * 7 + [80, 2, -100]
    with pytest.raises(SequenceError, match="no vision encoder"):
        layout(num_placeholders=0).understanding([70])


def test_bad_inputs_get_clear_errors():
    with pytest.raises(SequenceError, match="lacks special tokens.*eol"):
        SpecialTokens.from_mapping({k: v for k, v in SPECIAL.items() if k != "eol"})
    with pytest.raises(SequenceError, match="grid"):
        layout().image_rows(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(SequenceError, match=r"\[0, 16\)"):
        layout().image_rows(torch.full((2, 3), 16))
    with pytest.raises(SequenceError, match="empty"):
        collate([], 0)


def test_collate_pads_left_or_right_and_positions_skip_padding():
    a = layout().generation([50, 51, 52])
    b = layout().generation([50])
    right = collate([a, b], pad_id=0)
    assert right.attention_mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    left = collate([a, b], pad_id=0, padding_side="left")
    assert left.input_ids[1].tolist() == [0, 0, 1, 50, 3]
    assert left.position_ids[1, 2:].tolist() == [0, 1, 2]
    assert left.input_ids[:, -1].tolist() == [3, 3]  # prompts end together: lockstep decoding


def test_masks_derived_from_roles():
    lay = layout()
    batch = collate([lay.edit(torch.zeros(2, 3, dtype=torch.long), [60], torch.ones(2, 3, dtype=torch.long))], 0)
    roles = batch.roles
    assert int(visual_mask(roles).sum()) == 6
    assert bool(prompt_mask(roles)[0, :14].all()) and not bool(prompt_mask(roles)[0, 14:].any())
    yes, no = torch.tensor([True]), torch.tensor([False])
    assert int(dropped_mask(roles, yes, no).sum()) == 1  # the instruction only
    assert int(dropped_mask(roles, yes, yes).sum()) == 10  # plus the source rows and eof
    labels = ntp_labels(batch.input_ids, roles)
    assert int((labels != -100).sum()) == 6 + 2 + 3  # visual ids, two eols, eof/image_end/eos


def test_guidance_and_filters_on_hand_made_logits():
    cond, uncond = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert torch.equal(guided_logits(cond, uncond, 1.0), cond)
    assert guided_logits(cond, uncond, 3.0).tolist() == [[4.0, -2.0]]
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    probs = logits.softmax(-1)[0]  # ~[0.64, 0.24, 0.09, 0.03]
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7))[0]
    assert kept.tolist() == [True, True, False, False] and probs[0] < 0.7
    assert sample_next(logits, temperature=0).tolist() == [0]


def test_sampling_is_seeded_and_checks_arguments():
    logits = torch.zeros(4, 50)
    a = sample_next(logits, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    only = sample_next(logits + torch.arange(50.0), top_k=1, generator=torch.Generator().manual_seed(0))
    assert only.tolist() == [49] * 4
    with pytest.raises(SamplingError, match="top_p"):
        sample_next(logits, top_p=0.0)
    with pytest.raises(SamplingError, match="temperature"):
        sample_next(logits, temperature=-1.0)
