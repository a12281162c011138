"""mammoth2-ar ``text_copy``: a pointer-generator on the text logits (TextPointer) whose keys are tables
on token ids, so that it copies word pairs no training sequence held."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tuskml
from tuskml.plugins.mammoth2.ar import Mammoth2AR


def _backbone(**overrides) -> Mammoth2AR:
    torch.manual_seed(0)
    kwargs = dict(text_vocab_size=32, gen_vocab_size=8, num_layers=2, text_copy=True, gen_copy_dim=8)
    kwargs.update(overrides)
    return tuskml.create("backbone", "mammoth2-ar", **kwargs).eval()


def test_text_logits_are_the_gated_mixture_of_head_and_copy():
    model = _backbone()
    with torch.no_grad():
        model.pointer.gate.bias.fill_(0.3)
        model.pointer.gate.weight.normal_(0.0, 0.5)
        ids = torch.tensor([[1, 7, 9, 7, 3, 36, 9]])  # 36 is a generation token: never copied
        out = model(ids, output_hidden_states=True)
        x = out.hidden_states[-1]
        p = model.pointer
        got = out.logits[0, :, :32]
        # the text block keeps the head's total weight against the generation block
        torch.testing.assert_close(got.logsumexp(-1), model.lm_head(x[0]).logsumexp(-1), atol=1e-5, rtol=1e-5)
        got = F.log_softmax(got, dim=-1)
        for i in (2, 6):
            text = ids[0, :i + 1].clamp(max=31)
            keys = p.key(text) + torch.cat((torch.zeros(1, 8), p.key_prev(text[:-1])))
            visible = ids[0, :i + 1] < 32
            scores = (p.query(x[0, i]) @ keys.T * 8 ** -0.5).masked_fill(~visible, float("-inf"))
            copy = torch.zeros(32).index_add_(0, text, scores.softmax(-1))
            g = torch.sigmoid(p.gate(x[0, i]))
            want = torch.log((1 - g) * model.lm_head(x[0, i]).softmax(-1) + g * copy + 1e-9)
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-4)
        # a query with no visible text token to read takes the head alone
        only_gen = model(torch.tensor([[36, 37]]), output_hidden_states=True)
        head = model.lm_head(only_gen.hidden_states[-1])
        torch.testing.assert_close(only_gen.logits[..., :32], head, atol=1e-5, rtol=1e-5)


def test_hidden_text_is_not_copied_and_cached_decoding_equals_full():
    model = _backbone()
    ids = torch.tensor([[1, 7, 9, 11, 7, 13], [2, 2, 5, 9, 5, 3]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :2] = False  # left padding
    mask[0, 2] = False   # a hidden prompt word
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        changed = ids.clone()
        changed[0, 2] = 20  # a different hidden word changes nothing the other positions read
        again = model(changed, attention_mask=mask).logits
        torch.testing.assert_close(again[0, 3:], full[0, 3:], atol=1e-5, rtol=1e-5)
        out = model(ids[:, :3], attention_mask=mask[:, :3], use_cache=True)
        pieces = [out.logits]
        for i in range(3, ids.shape[1]):
            pieces.append(model(ids[:, i:i + 1], attention_mask=mask[:, :i + 1], past_key_values=out.past_key_values,
                                use_cache=True).logits)
    cached = torch.cat(pieces, 1)
    torch.testing.assert_close(cached[0], full[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached[1, 2:], full[1, 2:], atol=1e-5, rtol=1e-4)


def _rows(pairs: list[tuple[int, int]], copy: bool) -> torch.Tensor:
    """Copy rows ``[bos] colour shape [sep] colour shape`` (the second phrase repeats the first), or
    caption rows ``[bos2] colour shape [sep] [sep] [sep]`` that teach which pairs exist."""
    return torch.tensor([[1, c, s, 5, c, s] if copy else [2, c, s, 5, 5, 5] for c, s in pairs])


def _trained(**overrides) -> Mammoth2AR:
    colours, shapes = range(10, 16), range(20, 23)
    train = [(c, s) for c in colours for s in shapes if (c, s) not in HELD_OUT]
    model = _backbone(**overrides).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = torch.cat((_rows(train, True), _rows(train, False)))
    for _ in range(150):
        logits = model(batch).logits[:, :-1, :32]
        loss = F.cross_entropy(logits.reshape(-1, 32), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


HELD_OUT = {(10, 20), (11, 21), (12, 22)}


def test_the_pointer_copies_pairs_no_training_sequence_held():
    """Caption rows teach which pairs exist; without the pointer the same backbone then writes a seen
    pair for 2 of the 3 held-out ones (checked by hand, not asserted: it is not this option's contract)."""
    model = _trained()
    test = _rows(sorted(HELD_OUT), True)
    with torch.no_grad():
        shape_guess = model(test).logits[:, 4, :32].argmax(-1)
    # after "[sep] green" the copy of the word that followed "green" in the first phrase
    assert shape_guess.tolist() == test[:, 5].tolist(), f"wrote {shape_guess.tolist()} for {test[:, 5].tolist()}"
