"""``answer_pointer_words``: which colour word an answer writes is read from the asked image's VQ colour digits."""

from __future__ import annotations

import pytest
import torch

from tuskml.core.errors import ConfigError
from tuskml.plugins.mammoth2.answer_pointer import AnswerPointer, patch_digit_shares, pointer_word_logits
from tuskml.plugins.mammoth2.model import Mammoth2InputError, Mammoth2Model, UnderstandingSample
from tuskml.plugins.mammoth2.pipeline import Mammoth2Pipeline, load_preset
from tuskml.plugins.mammoth2.sequence import Role, collate, ntp_labels
from tuskml.plugins.mammoth2.vq import VQInputError, mixed_radix_digits

WORDS = ["red", "green", "blue", "yellow", "cyan", "magenta"]


def _image(seed: int) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def model() -> Mammoth2Model:
    torch.manual_seed(0)
    m = Mammoth2Model(load_preset("tiny", answer_pointer_words=WORDS, describe_first=False)).eval()
    with torch.no_grad():  # a trained-looking table: every colour code favours some word
        m.answer_pointer.value.normal_(0, 1)
    return m


def test_patch_digit_shares_by_hand():
    # 4x4 codes of two digits (4 x 3), a 2x2 token grid: each token covers 2x2 codes
    # a 4x4 grid of one digit (4 values), a 2x2 token grid: each token covers 2x2 cells
    digits = torch.tensor([[[0, 0, 1, 2], [0, 3, 1, 1], [2, 2, 3, 3], [2, 2, 3, 0]]])
    shares = patch_digit_shares(digits, 4, (2, 2))
    expected = torch.tensor([[0.75, 0, 0, 0.25], [0, 0.75, 0.25, 0], [0, 0, 1, 0], [0.25, 0, 0, 0.75]])
    assert torch.allclose(shares[0], expected)
    with pytest.raises(ConfigError, match="does not split"):
        patch_digit_shares(digits, 4, (3, 3))


def test_the_colour_digit_alone_equals_the_full_codes_digit(model):
    vq = model.visual_tokenizer
    images = torch.stack([_image(s) for s in range(4)])
    digits = mixed_radix_digits(vq.encode(images), vq.codebook_factors)
    for d in range(len(vq.codebook_factors)):
        assert torch.equal(vq.encode_digit(images, d), digits[..., d])
    with pytest.raises(VQInputError, match="out of range"):
        vq.encode_digit(images, 2)


def test_pointer_word_logits_keep_the_heads_mass_and_take_the_pointers_split():
    g = torch.Generator().manual_seed(1)
    head, pointer = torch.randn(2, 5, 20, generator=g), torch.randn(2, 5, 3, generator=g)
    ids = torch.tensor([4, 9, 17])
    out = pointer_word_logits(head, ids, pointer)
    others = torch.ones(20, dtype=torch.bool)
    others[ids] = False
    assert torch.equal(out[..., others], head[..., others])
    assert torch.allclose(out[..., ids].logsumexp(-1), head[..., ids].logsumexp(-1), atol=1e-5)
    assert torch.allclose(out[..., ids].softmax(-1), pointer.softmax(-1), atol=1e-6)


def test_the_pointer_brings_the_pointed_patchs_colour_word():
    ptr = AnswerPointer(hidden_size=8, num_codes=4, num_words=4, dim=8)
    with torch.no_grad():
        ptr.value.copy_(torch.eye(4))
        ptr.query.weight.copy_(torch.eye(8) * 10)
        ptr.key.weight.copy_(torch.eye(8) * 10)
    keys = torch.eye(8)[None, :3]  # three tokens, orthogonal states
    shares = torch.tensor([[[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0.5, 0, 0.5]]])
    for token, word in ((0, 0), (1, 2)):
        out = ptr(keys[:, token:token + 1], keys, shares)  # the query matches token `token`
        assert int(out[0, 0].argmax()) == word


def _understanding_row(model: Mammoth2Model, question: str, answer: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
    return model.make_batch([UnderstandingSample(image, question, answer)])


def _answer_logits(model: Mammoth2Model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training forward's logits of one batch (eval mode: no dropout)."""
    embeds = model.input_embeddings(batch["input_ids"], batch["roles"], batch["understanding_images"],
                                    batch["has_understanding"])
    out = model.run_backbone(batch["input_ids"], batch["attention_mask"].bool(), inputs_embeds=embeds,
                             output_hidden_states=True)
    return model.point_answer_words(out.logits, out.hidden_states[-1], batch["roles"], batch["understanding_shares"])


def test_the_head_cannot_choose_among_the_pointer_words(model):
    batch = _understanding_row(model, "what colour is the circle?", "blue", _image(3))
    ids = model.answer_word_ids
    with torch.no_grad():
        before = _answer_logits(model, batch)
        saved = model.backbone.lm_head.weight.clone()
        model.backbone.lm_head.weight[ids] += torch.randn(len(ids), saved.shape[1])  # the head's colour "prior"
        after = _answer_logits(model, batch)
        model.backbone.lm_head.weight.copy_(saved)
    assert torch.allclose(before[..., ids].softmax(-1), after[..., ids].softmax(-1), atol=1e-5)
    assert not torch.allclose(before[..., ids].logsumexp(-1), after[..., ids].logsumexp(-1))


def test_the_pointer_trains_on_its_own_loss_and_leaves_the_backbone_to_the_head(model):
    model.train()
    try:
        batch = _understanding_row(model, "what colour is the circle?", "blue", _image(3))
        embeds = model.input_embeddings(batch["input_ids"], batch["roles"], batch["understanding_images"],
                                        batch["has_understanding"])
        out = model.run_backbone(batch["input_ids"], batch["attention_mask"].bool(), inputs_embeds=embeds,
                                 output_hidden_states=True)
        labels = ntp_labels(batch["input_ids"], batch["roles"])
        rows = torch.ones(1, dtype=torch.bool)
        model.zero_grad()
        loss = model.answer_pointer_loss(out.hidden_states[-1], batch["roles"], batch["understanding_shares"], labels, rows)
        loss.backward()
        # the answer "blue" is the one pointer word: the loss is -log softmax(pointer)["blue"]
        blue = WORDS.index("blue")
        first = int((batch["roles"][0] == int(Role.ANSWER)).nonzero()[0]) - 1
        with torch.no_grad():
            logits = _answer_logits(model, batch)[0, first, model.answer_word_ids]
        assert torch.allclose(loss, -logits.log_softmax(-1)[blue], atol=1e-4)
        assert model.answer_pointer.value.grad.abs().sum() > 0
        assert all(p.grad is None or not p.grad.any() for p in model.backbone.parameters())
        # an answer with no pointer word gives no loss; the training forward adds the loss and needs the shares
        other = _understanding_row(model, "how many circles?", "two", _image(3))
        with torch.no_grad():
            embeds = model.input_embeddings(other["input_ids"], other["roles"], other["understanding_images"],
                                            other["has_understanding"])
            hidden = model.run_backbone(other["input_ids"], other["attention_mask"].bool(), inputs_embeds=embeds,
                                        output_hidden_states=True).hidden_states[-1]
            none = model.answer_pointer_loss(hidden, other["roles"], other["understanding_shares"],
                                             ntp_labels(other["input_ids"], other["roles"]), rows)
            assert float(none) == 0.0 and float(model(**other).ntp_loss) > 0
        other.pop("understanding_shares")
        with pytest.raises(Mammoth2InputError, match="understanding_shares"):
            model(**other)
    finally:
        model.zero_grad()
        model.eval()


def test_decoding_reads_the_same_logits_as_the_training_forward(model):
    """Teacher-forced answers through the KV-cached decode loop (left padding, two rows) equal one full forward."""
    pipe = Mammoth2Pipeline(model)
    questions, answers = ["what colour is the circle?", "is there a red square?"], ["blue", "yes"]
    images = torch.stack([_image(5), _image(6)])
    tok = model.text_tokenizer
    full = [_answer_logits(model, _understanding_row(model, q, a, im)) for q, a, im in zip(questions, answers, images)]
    batch = collate([model.layout.understanding(tok.encode(q)) for q in questions], model.special.pad,
                    padding_side="left")
    answer_ids = [tok.encode(a)[0] for a in answers]
    with torch.no_grad():
        embeds = pipe._vit_embeddings(batch.input_ids, batch.roles, images)
        shares = model.answer_digit_shares(images)
        steps = []
        loop = pipe._decode_loop(batch, None, steps=2, guidance=1.0, inputs_embeds=embeds, answer_shares=shares,
                                 choose=lambda step, logits: steps.append(logits) or torch.tensor(answer_ids))
        list(loop)
    for row, logits in enumerate(full):
        roles = _understanding_row(model, questions[row], answers[row], images[row])["roles"][0]
        first = int((roles == int(Role.ANSWER)).nonzero()[0]) - 1  # the position that predicts the answer
        for step in range(2):
            assert torch.allclose(steps[step][row], logits[0, first + step].float(), atol=1e-4)


def test_ask_answers_and_a_saved_pipeline_answers_the_same(model, tmp_path):
    pipe = Mammoth2Pipeline(model)
    images = [_image(7), _image(8)]
    questions = ["what colour is the circle?", "how many squares?"]
    answers = pipe.ask(images, questions, max_new_tokens=3)
    pipe.save_pretrained(tmp_path / "p")
    again = Mammoth2Pipeline.from_pretrained(tmp_path / "p").ask(images, questions, max_new_tokens=3)
    assert answers == again and all(isinstance(a, str) for a in answers)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"vision_encoder": None, "edit_source_vit": False, "question_first": False}, "no vision_encoder"),
    ({"answer_pointer_digit": 2}, "names no digit"),
    ({"answer_pointer_words": ["red", "red"]}, "repeated"),
    ({"text_tokenizer": {"type": "bytes"}}, "tokens for the text tokenizer"),
])
def test_config_errors_name_the_problem(overrides, match):
    cfg = load_preset("tiny", **{"answer_pointer_words": WORDS, **overrides})
    with pytest.raises(ConfigError, match=match):
        Mammoth2Model(cfg)


def test_a_describe_first_row_trains_the_pointer_on_its_descriptions_colour_words():
    """The tiny preset describes the asked objects first ("at top left a red circle . yes"): the colour words of
    the description are pointer targets too, though the answer itself has none."""
    torch.manual_seed(0)
    m = Mammoth2Model(load_preset("tiny"))
    assert m.config.describe_first and m.answer_pointer is not None
    batch = m.make_batch([UnderstandingSample(_image(3), "is there a red circle?", "yes", plan="at top left a red circle")])
    labels = ntp_labels(batch["input_ids"], batch["roles"])
    assert int(torch.isin(labels, m.answer_word_ids).sum()) == 1  # "red", in the description
    with torch.no_grad():
        embeds = m.input_embeddings(batch["input_ids"], batch["roles"], batch["understanding_images"],
                                    batch["has_understanding"])
        hidden = m.run_backbone(batch["input_ids"], batch["attention_mask"].bool(), inputs_embeds=embeds,
                                output_hidden_states=True).hidden_states[-1]
        loss = m.answer_pointer_loss(hidden, batch["roles"], batch["understanding_shares"], labels,
                                     torch.ones(1, dtype=torch.bool))
    assert torch.isclose(loss, torch.log(torch.tensor(float(len(WORDS)))), atol=1e-4)  # untrained: uniform over 6
