"""Text tokenizers ``bytes``, ``words`` and ``hf-tokenizer``.

Both expose the interface the mammoth2 model relies on: ``encode(text) -> list[int]``,
``decode(ids) -> str`` (special tokens skipped), ``vocab_size`` and a ``special`` dict mapping each
role in ``configs_ar.SPECIAL_ROLES`` (pad, bos, eos, image_start, ...) to an id, so the model never
hard-codes ids and either tokenizer can be swapped in by config.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable

from tuskml.core.errors import ConfigError, TuskmlError
from tuskml.plugins.mammoth2.configs_ar import (
    SPECIAL_ROLES,
    BytesTokenizerConfig,
    HFTokenizerConfig,
    WordsTokenizerConfig,
)


class TokenizerInputError(TuskmlError, ValueError):
    """Text or ids a tokenizer cannot handle."""


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TokenizerInputError(f"encode() takes a str, got {type(text).__name__}")
    return text


def _check_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    try:
        out = [int(i) for i in ids]
    except (TypeError, ValueError) as exc:
        raise TokenizerInputError(f"decode() takes a sequence of int ids: {exc}") from exc
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise TokenizerInputError(f"ids {bad[:5]} are outside the text vocabulary [0, {vocab_size})")
    return out


def _special_ids(name: str, base: int, extra: Iterable[str]) -> tuple[dict[str, int], dict[str, int], int]:
    """Ids ``base, base+1, ...`` for the special roles, then ``extra`` tokens.

    Returns (token string -> id for every special token, role -> id (pad, bos, eos, image_start, ...),
    vocab_size).
    """
    names = [f"<|{role}|>" for role in SPECIAL_ROLES] + list(extra)
    if len(set(names)) != len(names):
        raise ConfigError(f"{name} tokenizer: extra_special_tokens repeat a token: {list(extra)}")
    tokens = {tok: base + i for i, tok in enumerate(names)}
    return tokens, {role: tokens[f"<|{role}|>"] for role in SPECIAL_ROLES}, base + len(names)


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; ids 256.. are the special roles, then any extra special tokens.

    Needs no file and no download, which makes it the default of the toy presets.
    """

    def __init__(self, config: BytesTokenizerConfig | None = None):
        config = config or BytesTokenizerConfig()
        self.config = config
        self.tuskml_config = config
        self.special_tokens, self.special, self.vocab_size = _special_ids("bytes", 256, config.extra_special_tokens)

    def encode(self, text: str) -> list[int]:
        return list(_check_text(text).encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the byte ids (invalid UTF-8 replaced by U+FFFD); special ids are skipped."""
        ids = _check_ids(ids, self.vocab_size)
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        return 256 <= token_id < self.vocab_size

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size})"


_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class WordTokenizer:
    """One id per word of a closed vocabulary (``vocabulary``), then the special roles.

    Made for small closed worlds (the shapes world): a prompt is a handful of tokens instead of
    dozens of bytes, so a tiny model learns language far faster. Text is lower-cased and split into
    runs of letters/digits and single punctuation marks; a word outside the vocabulary raises
    :class:`TokenizerInputError` naming it. ``decode`` joins words by spaces and attaches
    punctuation to the word before it, so ``decode(encode(t)) == t`` for normally spaced text.
    """

    def __init__(self, config: WordsTokenizerConfig | None = None):
        config = config or WordsTokenizerConfig()
        self.config = config
        self.tuskml_config = config
        self.words: tuple[str, ...] = tuple(config.vocabulary)
        self._ids = {w: i for i, w in enumerate(self.words)}
        self.special_tokens, self.special, self.vocab_size = _special_ids("words", len(self.words),
                                                                           config.extra_special_tokens)

    def encode(self, text: str) -> list[int]:
        pieces = _WORD.findall(_check_text(text).lower())
        unknown = [p for p in pieces if p not in self._ids]
        if unknown:
            raise TokenizerInputError(
                f"words tokenizer: {sorted(set(unknown))} not in its vocabulary of {len(self.words)} words "
                f"(text {text!r}); add them to the tokenizer's `vocabulary` or use the `bytes` tokenizer")
        return [self._ids[p] for p in pieces]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of the ids joined by spaces (punctuation attached); special ids are skipped."""
        out = ""
        for i in _check_ids(ids, self.vocab_size):
            if i >= len(self.words):
                continue
            word = self.words[i]
            attach = not out or (len(word) == 1 and not word.isalnum())
            out += word if attach else " " + word
        return out

    def is_special(self, token_id: int) -> bool:
        return len(self.words) <= token_id < self.vocab_size

    def __repr__(self) -> str:
        return f"WordTokenizer(words={len(self.words)}, vocab_size={self.vocab_size})"


def _untrained_byte_level_tokenizer():
    """A byte-level BPE with the 256 byte symbols and no merges (the default when no file is given)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


class HFTokenizer:
    """A ``tokenizer.json`` (e.g. Qwen3's) loaded from a local file or folder with ``tokenizers``.

    Role tokens the file lacks are added as special tokens, after its vocabulary.
    """

    def __init__(self, config: HFTokenizerConfig | None = None):
        try:
            from tokenizers import AddedToken, Tokenizer
        except ImportError as exc:  # pragma: no cover - installed in dev and CI
            raise TuskmlError("tokenizer 'hf-tokenizer' needs the tokenizers package: pip install 'tuskml[hf]'") from exc
        config = config or HFTokenizerConfig()
        self.config = config
        self.tuskml_config = config
        if config.path is None:
            self._tok = _untrained_byte_level_tokenizer()
        else:
            path = pathlib.Path(config.path)
            file = path / "tokenizer.json" if path.is_dir() else path
            if not file.is_file():
                raise ConfigError(f"hf-tokenizer: no tokenizer.json at {str(path)!r}")
            try:
                self._tok = Tokenizer.from_file(str(file))
            except Exception as exc:
                raise ConfigError(f"hf-tokenizer: {str(file)!r} is not a readable tokenizer.json: {exc}") from exc
        role_tokens = {role: getattr(config, f"{role}_token") for role in SPECIAL_ROLES}
        if len(set(role_tokens.values())) != len(role_tokens):
            raise ConfigError(f"hf-tokenizer: two roles share a token string: {role_tokens}")
        missing = [s for s in role_tokens.values() if self._tok.token_to_id(s) is None]
        if missing:
            self._tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in missing])
        self.special: dict[str, int] = {role: int(self._tok.token_to_id(s)) for role, s in role_tokens.items()}
        self.special_tokens: dict[str, int] = {s: self.special[role] for role, s in role_tokens.items()}
        self.vocab_size = max(self._tok.get_vocab_size(with_added_tokens=True), max(self.special.values()) + 1)

    @property
    def backend(self):
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(_check_text(text), add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        ids = _check_ids(ids, self.vocab_size)
        special = set(self.special.values())
        return self._tok.decode([i for i in ids if i not in special], skip_special_tokens=True)

    def is_special(self, token_id: int) -> bool:
        return token_id in set(self.special.values()) or self._tok.id_to_token(token_id) in self.special_tokens

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write the tokenizer (with the added role tokens) as ``tokenizer.json`` into ``path`` (a folder)."""
        folder = pathlib.Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(folder / "tokenizer.json"))
        return folder / "tokenizer.json"

    def __repr__(self) -> str:
        return f"HFTokenizer(path={self.config.path!r}, vocab_size={self.vocab_size})"
