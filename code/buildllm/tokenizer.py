"""Tokenizers: text to integers and back. Explained in the chapter "Tokens".

Two tokenizers share one small interface, :class:`Tokenizer`: ``encode``, ``decode``,
``vocab_size``, the characters each id covers (``token_chars``, for bits per character), and
a JSON form (``to_dict``, ``save``, :func:`load_tokenizer`). Callers use that interface and
never ask which kind they hold.

* :class:`CharTokenizer`, one id per distinct character of a training text: the baseline.
* :class:`BPETokenizer`, byte-level byte-pair encoding as in GPT-2 (the algorithm is in
  :mod:`buildllm.bpe`, its fast twin in :mod:`buildllm.bpe_fast`). Special tokens such as
  ``<|endoftext|>`` get ids after the last merge and are never split.

Exports to ``tiktoken`` and Hugging Face ``tokenizers`` are in :mod:`buildllm.tokenizer_export`.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from collections.abc import Iterable
from pathlib import Path

import regex

from buildllm import bpe, bpe_fast
from buildllm.files import READ_ERRORS, is_number, read_problem, write_atomically

BPE_FORMAT, CHAR_FORMAT, FORMAT_VERSION = "buildllm-bpe", "buildllm-char", 1


class Tokenizer:
    """What every tokenizer of the book offers; subclasses fill in the methods."""

    kind: str = ""  # "char" or "bpe", as a checkpoint records it
    special_tokens: dict[str, int] = {}  # special token -> its id (a BPE tokenizer has some)

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_chars(self) -> list[int]:
        """How many characters each id covers, ``vocab_size`` numbers."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Everything that decides how this tokenizer encodes, as JSON-able values."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash that changes whenever the tokenizer would encode differently."""
        return hashlib.sha256(json.dumps(self.to_dict()).encode()).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON, atomically (a temporary file, then a rename)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"
        write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class CharTokenizer(Tokenizer):
    """One id per distinct character of ``text``, in sorted order (nanoGPT's Shakespeare)."""

    kind = "char"

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer learns its characters from a str, got "
                            f"{type(text).__name__}")
        if not text:
            raise ValueError("CharTokenizer learns its characters from a non-empty str, got ''")
        self.chars = sorted(set(text))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} was not in the text this tokenizer "
                             f"was fit on; it knows only those {self.vocab_size} "
                             f"characters") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[_checked_id(i, self.vocab_size)] for i in ids)

    def token_chars(self) -> list[int]:
        return [1] * self.vocab_size

    def to_dict(self) -> dict:
        return {"format": CHAR_FORMAT, "version": FORMAT_VERSION, "chars": self.chars}


def _checked_id(i, vocab_size: int) -> int:
    """``i`` as an int id below ``vocab_size`` (a numpy int or a 0-d tensor too), or an error."""
    try:
        k = operator.index(i)
    except TypeError:
        k = -1
    if not 0 <= k < vocab_size:
        raise ValueError(f"id {i!r} is not in the vocabulary (0 to {vocab_size - 1}); ids "
                         f"must be ints (use tensor.tolist()) from this tokenizer")
    return k


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 0-255 are bytes, ``256 + k`` is merge ``k``, special tokens follow.

    ``merges[k] = (a, b)`` means "the pair of ids a, b becomes the id 256 + k";
    ``vocab[id]`` is the token's bytes; ``special_tokens`` maps each special token to its id.
    """

    kind = "bpe"

    def __init__(self, merges: Iterable[tuple[int, int]] = (),
                 special_tokens: Iterable[str] = (),
                 pattern: str = bpe.GPT2_SPLIT_PATTERN) -> None:
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.vocab = {i: bytes([i]) for i in range(256)}  # id -> bytes
        for k, (a, b) in enumerate(self.merges):
            if not (a in self.vocab and b in self.vocab):
                raise ValueError(f"merge {k} is {(a, b)}, but only ids below {256 + k} "
                                 f"exist yet")
            self.vocab[256 + k] = self.vocab[a] + self.vocab[b]
        specials = list(special_tokens)
        if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s
                                                          for s in specials):
            raise ValueError(f"special tokens must be distinct non-empty strings, "
                             f"got {specials}")
        self.special_tokens = {s: len(self.vocab) + i for i, s in enumerate(specials)}
        self.vocab.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self.ranks = {pair: 256 + k for k, pair in enumerate(self.merges)}  # pair -> new id
        self.pattern = pattern
        self._encoder = bpe_fast.ChunkEncoder(self.merges, self.vocab, pattern)

    @property
    def vocab_size(self) -> int:
        """How many ids there are: 256 bytes, the merges, the special tokens."""
        return len(self.vocab)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` ignoring special tokens: ``<|endoftext|>`` is just 13 characters."""
        return self._encoder.encode(text)

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Encode ``text`` into ids; the special tokens named in ``allowed_special`` (or all
        of them, with ``"all"``) become their ids. Any other special token in the text is an
        error, as in tiktoken."""
        if not isinstance(text, str):
            raise TypeError(f"encode needs a str, got {type(text).__name__}")
        allowed = self._allowed(allowed_special)
        for s in set(self.special_tokens) - allowed:
            if s in text:
                raise ValueError(
                    f"text contains the special token {s!r}, which is not allowed: pass "
                    f"allowed_special={{{s!r}}} (or 'all') to encode it as its id "
                    f"{self.special_tokens[s]}, or call encode_ordinary to encode it as "
                    f"text")
        if not allowed:
            return self.encode_ordinary(text)
        # regex.split with a group keeps the specials, at the odd positions (longest first)
        alternatives = "|".join(regex.escape(s)
                                for s in sorted(allowed, key=len, reverse=True))
        out: list[int] = []
        for i, part in enumerate(regex.split(f"({alternatives})", text)):
            out.extend([self.special_tokens[part]] if i % 2 else self.encode_ordinary(part))
        return out

    def _allowed(self, allowed_special: str | Iterable[str]) -> set[str]:
        """``allowed_special`` as a set of this tokenizer's special tokens, checked."""
        if allowed_special == "all":
            return set(self.special_tokens)
        allowed = {allowed_special} if isinstance(allowed_special, str) else set(allowed_special)
        if unknown := allowed - set(self.special_tokens):
            raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special "
                             f"tokens of this tokenizer: {sorted(self.special_tokens)}")
        return allowed

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text. Ids that cut a character's bytes apart decode to U+FFFD."""
        data = b"".join(self.vocab[_checked_id(i, self.vocab_size)] for i in ids)
        return data.decode("utf-8", errors="replace")

    def token_text(self, idx: int) -> str:
        """Token ``idx`` as readable text; bytes that are not whole UTF-8 show as ``\\xe2``."""
        return self.vocab[idx].decode("utf-8", errors="backslashreplace")

    def token_chars(self) -> list[int]:
        """The UTF-8 bytes of each token that *start* a character (all but ``10xxxxxx``):
        summed over any encoded text, exactly its number of characters."""
        return [sum(1 for b in self.vocab[i] if b & 0xC0 != 0x80)
                for i in range(self.vocab_size)]

    def to_dict(self) -> dict:
        merges = [[a, b, self.token_text(256 + k)] for k, (a, b) in enumerate(self.merges)]
        return {"format": BPE_FORMAT, "version": FORMAT_VERSION, "pattern": self.pattern,
                "special_tokens": self.special_tokens, "merges": merges}

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as readable JSON, one merge per line, ``[a, b, "its text"]``
        (the text is for the reader; :func:`load_tokenizer` checks it against the ids)."""
        doc = self.to_dict()
        merges = ",\n  ".join(json.dumps(m, ensure_ascii=False) for m in doc.pop("merges"))
        fields = [f'"{key}": {json.dumps(value, ensure_ascii=False)}' for key, value in doc.items()]
        fields.append(f'"merges": [\n  {merges}\n ]')
        text = "{\n " + ",\n ".join(fields) + "\n}\n"
        write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def train_bpe(text: str, vocab_size: int, special_tokens: Iterable[str] = (bpe.ENDOFTEXT,),
              naive: bool = False) -> BPETokenizer:
    """A :class:`BPETokenizer` learned from ``text``, with ``vocab_size`` tokens in all
    (bytes, merges and special tokens; a text too small for that many merges gives
    fewer)."""
    specials = list(special_tokens)
    if not (is_number(vocab_size, int) and vocab_size >= 256 + len(specials)):
        raise ValueError(f"vocab_size must be an int of at least 256 + {len(specials)} "
                         f"special tokens, got {vocab_size!r}")
    trainer = bpe.train_merges_naive if naive else bpe_fast.train_merges
    return BPETokenizer(trainer(text, vocab_size - 256 - len(specials)), specials)


def tokenizer_from_dict(doc: dict) -> Tokenizer:
    """The tokenizer that :meth:`Tokenizer.to_dict` described; a bad field is a ValueError."""
    if not isinstance(doc, dict) or doc.get("format") not in (BPE_FORMAT, CHAR_FORMAT):
        raise ValueError(f"not a tokenizer: no 'format' of {BPE_FORMAT!r} or {CHAR_FORMAT!r}")
    if doc.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"format version {doc.get('version')!r}; this buildllm reads "
                         f"version {FORMAT_VERSION}")
    if doc["format"] == CHAR_FORMAT:
        chars = doc.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise ValueError("'chars' must be a list of characters")
        return CharTokenizer("".join(chars))
    merges, specials = doc.get("merges"), doc.get("special_tokens")
    if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 3 and all(type(x) is int for x in m[:2])
            for m in merges):
        raise ValueError("'merges' must be a list of [int, int, text]")
    if not isinstance(specials, dict) or not all(type(i) is int for i in specials.values()):
        raise ValueError("'special_tokens' must be an object of token -> int id")
    if not isinstance(doc.get("pattern"), str):
        raise ValueError("'pattern' must be a string")
    tok = BPETokenizer([m[:2] for m in merges], sorted(specials, key=specials.get), doc["pattern"])
    for k, m in enumerate(merges):
        if m[2] != tok.token_text(256 + k):
            raise ValueError(f"merge {k} {m} makes {tok.token_text(256 + k)!r}, not {m[2]!r}")
    if tok.special_tokens != specials:
        raise ValueError(f"special token ids {specials} should be {tok.special_tokens}")
    return tok


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a file written by :meth:`Tokenizer.save`, of either kind. A file that cannot be read
    (missing, a folder, not UTF-8, not JSON) or does not describe a tokenizer is a
    ``ValueError`` that names it, says what is wrong and what to do."""
    try:
        return tokenizer_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except READ_ERRORS as e:  # the file: missing, a folder, not UTF-8, not JSON
        problem = f"it {read_problem(e)}"
    except (ValueError, regex.error) as e:  # its contents
        problem = str(e)
    raise ValueError(f"{path} is not a readable tokenizer file ({problem}); save the tokenizer "
                     f"again, or pass the file that \"buildllm tokenizer train\" writes")
