"""Text tokenizers bytes and hf-tokenizer: round trips, special roles, a tokenizer.json from disk."""

from __future__ import annotations

import pytest

import tuskml
from tuskml.plugins.mammoth2.configs_ar import SPECIAL_ROLES
from tuskml.plugins.mammoth2.text_tokenizers import TokenizerInputError
from tuskml.testing import check_component

TEXTS = ["a red cube on a blue sphere", "héllo wörld ✓", "", "line\nbreak\ttab"]


def _check_interface(tok) -> None:
    assert set(SPECIAL_ROLES) <= set(tok.special)
    ids = list(tok.special.values())
    assert len(set(ids)) == len(ids), "special roles must have distinct ids"
    assert all(0 <= i < tok.vocab_size for i in ids)
    for text in TEXTS:
        encoded = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in encoded)
        assert not set(encoded) & set(ids), "plain text must not produce special ids"
        assert tok.decode(encoded) == text
        assert tok.decode([tok.special["bos"], *encoded, tok.special["eol"], tok.special["eos"]]) == text


def test_bytes_tokenizer():
    tok = tuskml.create("tokenizer", "bytes")
    _check_interface(tok)
    assert tok.encode("A") == [65] and tok.vocab_size == 256 + len(SPECIAL_ROLES)
    extra = tuskml.create("tokenizer", "bytes", extra_special_tokens=("<|think|>",))
    assert extra.vocab_size == tok.vocab_size + 1 and extra.special_tokens["<|think|>"] == tok.vocab_size
    with pytest.raises(TokenizerInputError, match="outside the text vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(TokenizerInputError, match="takes a str"):
        tok.encode(b"bytes")


def test_hf_tokenizer_default_is_byte_level_without_a_file():
    tok = tuskml.create("tokenizer", "hf-tokenizer")
    _check_interface(tok)
    assert tok.vocab_size == 256 + len(SPECIAL_ROLES)


@pytest.fixture
def trained_tokenizer_json(tmp_path):
    """A small BPE trained here (with two role tokens already in its vocabulary), saved as tokenizer.json."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 20 + ["a photo of a cat", "the quick brown fox jumps"] * 20, trainer)
    path = tmp_path / "tok" / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    return path


def test_hf_tokenizer_from_a_local_tokenizer_json(trained_tokenizer_json, tmp_path):
    folder = trained_tokenizer_json.parent
    tok = tuskml.create("tokenizer", "hf-tokenizer", path=str(folder), pad_token="<|endoftext|>", bos_token="<|im_start|>")
    _check_interface(tok)
    # role tokens already in the file keep their ids; missing ones are appended after the vocabulary
    assert tok.special["pad"] == 0 and tok.special["bos"] == 1
    base = tok.backend.get_vocab_size(with_added_tokens=False)
    assert sorted(tok.special[r] for r in SPECIAL_ROLES if r not in ("pad", "bos")) == list(range(base, base + 6))
    assert len(tok.encode("a photo of a cat")) < len("a photo of a cat")  # merges were learned and used
    # a file path works as well as its folder, and saving keeps the added role tokens
    again = tuskml.create("tokenizer", "hf-tokenizer", path=str(trained_tokenizer_json))
    assert again.encode("a photo") == tuskml.create("tokenizer", "hf-tokenizer", path=str(folder)).encode("a photo")
    saved = tok.save(tmp_path / "saved")
    reloaded = tuskml.create("tokenizer", "hf-tokenizer", path=str(saved), pad_token="<|endoftext|>", bos_token="<|im_start|>")
    assert reloaded.special == tok.special and reloaded.vocab_size == tok.vocab_size


def test_hf_tokenizer_errors(tmp_path):
    with pytest.raises(tuskml.ConfigError, match="no tokenizer.json"):
        tuskml.create("tokenizer", "hf-tokenizer", path=str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(tuskml.ConfigError, match="not a readable tokenizer.json"):
        tuskml.create("tokenizer", "hf-tokenizer", path=str(tmp_path))
    with pytest.raises(tuskml.ConfigError, match="share a token string"):
        tuskml.create("tokenizer", "hf-tokenizer", eol_token="<|eof|>")


def test_words_tokenizer_covers_the_shapes_world_and_rejects_unknown_words():
    from tuskml.plugins.mammoth2.configs_data import ShapesWorldConfig
    from tuskml.plugins.mammoth2.shapes_world import ShapesWorld

    tok = tuskml.create("tokenizer", "words")
    assert set(SPECIAL_ROLES) <= set(tok.special)
    assert len(set(tok.special.values())) == len(SPECIAL_ROLES)
    world = ShapesWorld(ShapesWorldConfig())
    for i in range(300):  # every prompt, instruction, question and answer round-trips, a few ids each
        s = world[i]
        for text in (s.text, s.answer):
            ids = tok.encode(text)
            assert not set(ids) & set(tok.special.values())
            assert tok.decode(ids) == text
            assert len(ids) <= len(text.split()) + 2
    caption = "a red circle at top left, a blue square at bottom right and a green triangle at top right"
    assert tok.decode([tok.special["bos"], *tok.encode(caption), tok.special["eos"]]) == caption
    assert tok.encode("How many circles?") == tok.encode("how many circles ?")
    with pytest.raises(TokenizerInputError, match=r"\['cat'\] not in its vocabulary"):
        tok.encode("a red cat")
    with pytest.raises(TokenizerInputError, match="outside the text vocabulary"):
        tok.decode([tok.vocab_size])
    small = tuskml.create("tokenizer", "words", vocabulary=("a", "cat"), extra_special_tokens=("<|think|>",))
    assert small.encode("a cat") == [0, 1] and small.vocab_size == 2 + len(SPECIAL_ROLES) + 1
    with pytest.raises(ValueError, match="repeats"):
        tuskml.create("tokenizer", "words", vocabulary=("a", "a"))


@pytest.mark.parametrize("name", ["bytes", "words", "hf-tokenizer"])
def test_conformance(name, tmp_path):
    check_component("tokenizers", name, tmp_path)
