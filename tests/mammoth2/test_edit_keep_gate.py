"""``edit_keep_gate``: a learned per-slot gate that copies an edit's source code instead of sampling one."""

from __future__ import annotations

import pytest
import torch

from tuskml.core.errors import ConfigError
from tuskml.plugins.mammoth2.model import EditSample, Mammoth2Model, TextToImageSample
from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline, load_preset
from tuskml.plugins.mammoth2.sequence import ntp_labels


def _image(seed: int) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _half_copied(source: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``source`` with its left half replaced by ``other``'s."""
    target = source.clone()
    target[:, :, :16] = other[:, :, :16]
    return target


@pytest.fixture(scope="module")
def model() -> Mammoth2Model:
    torch.manual_seed(0)
    return Mammoth2Model(load_preset("tiny", edit_keep_gate=True, keep_gate_code_loss="every"))


def test_keep_gate_needs_source_hints():
    with pytest.raises(ConfigError, match="edit_keep_gate.*source_hints"):
        Mammoth2Model(load_preset("tiny", edit_keep_gate=True, source_hints=False))


def test_keep_targets_mark_target_codes_equal_to_the_source_code_at_their_slot(model):
    src = _image(0)
    tgt = _half_copied(src, _image(1))
    batch = model.make_batch([EditSample(src, "make the red circle blue", tgt, plan="a circle at top left"),
                              TextToImageSample("a red circle", tgt, plan="a circle at top left")])
    ids, roles = batch["input_ids"], batch["roles"]
    hints = model.source_hint_ids(ids, roles, batch["attention_mask"].bool())
    where, keep = model.keep_targets(hints, ntp_labels(ids, roles))
    src_codes, tgt_codes = (model.visual_codes(x[None])[0].flatten() for x in (src, tgt))
    assert int(where[0].sum()) == src_codes.numel() == 64  # every code slot of the edit's target, no eol / eof
    assert not bool(where[1].any())  # text to image: no source, no gate
    assert torch.equal(keep[0][where[0]], src_codes == tgt_codes)
    assert 0 < int((src_codes == tgt_codes).sum()) < 64  # both labels occur, so the check above can fail


def test_keep_loss_is_part_of_the_ntp_loss_and_trains_the_gate(model):
    src = _image(2)
    batch = model.make_batch([EditSample(src, "remove the red circle", _half_copied(src, _image(3)),
                                         plan="a circle at top left")])
    model.train()
    torch.manual_seed(0)
    out = model(**batch)
    assert out.keep_loss is not None and float(out.keep_loss.detach()) > 0
    out.loss.backward()
    assert model.keep_gate.weight.grad is not None and float(model.keep_gate.weight.grad.abs().sum()) > 0
    model.zero_grad(set_to_none=True)
    without = Mammoth2Model(load_preset("tiny", edit_keep_gate=False))
    assert without.keep_gate is None and without(**batch).keep_loss is None


def _edit_codes(pipe: Mammoth2Pipeline, sources: list[torch.Tensor], instructions: list[str]) -> torch.Tensor:
    result = pipe.edit(sources, instructions, steps=1, temperature=1.0, top_k=None, seed=5, max_plan_tokens=4,
                       return_result=True)
    return result.visual_codes


def test_an_open_gate_copies_the_source_and_a_closed_gate_changes_nothing(model):
    pipe = Mammoth2Pipeline(model.eval())
    sources = [_image(4), _image(5)]
    instructions = ["remove the red circle", "add a blue square at top left"]
    codes = torch.stack([model.visual_codes(s[None])[0] for s in sources])  # [2, 8, 8]
    gate = model.keep_gate
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.fill_(1e4)
        opened = _edit_codes(pipe, sources, instructions)
        gate.bias.fill_(-1e4)
        closed = _edit_codes(pipe, sources, instructions)
    model.keep_gate = None
    try:
        ungated = _edit_codes(pipe, sources, instructions)
    finally:
        model.keep_gate = gate
    assert torch.equal(opened, codes)
    assert torch.equal(closed, ungated)
    assert not torch.equal(ungated, codes)  # sampling alone does not copy, so the first check can fail


def test_changed_code_loss_ignores_kept_slots_only(model):
    src = _image(8)
    batch = model.make_batch([EditSample(src, "remove the red circle", _half_copied(src, _image(9)),
                                         plan="a circle at top left")])
    ids, roles = batch["input_ids"], batch["roles"]
    hints = model.source_hint_ids(ids, roles, batch["attention_mask"].bool())
    labels = ntp_labels(ids, roles)
    assert torch.equal(model.code_labels(hints, labels), labels)  # "every"
    changed = Mammoth2Model(load_preset("tiny", edit_keep_gate=True, keep_gate_code_loss="changed"))
    out = changed.code_labels(hints, labels)
    where, same = changed.keep_targets(hints, labels)
    kept = where & same
    assert 0 < int(kept.sum()) < int(where.sum())
    assert set(out[kept].tolist()) == {-100} and torch.equal(out[~kept], labels[~kept])
    with pytest.raises(ConfigError, match="keep_gate_code_loss"):
        load_preset("tiny", edit_keep_gate=True, keep_gate_code_loss="some")
