"""Tokens: text to integers and back. Explained in the chapter "Tokens".

Two tokenizers live here:

* :class:`CharTokenizer`, one id per distinct character of a training text: the baseline.
* :class:`BPETokenizer`, byte-level byte-pair encoding as in GPT-2. Text becomes UTF-8 bytes
  (ids 0-255); training learns *merges*, each of which replaces the most frequent adjacent pair
  of ids with a new id (256, 257, ...). A regular expression first cuts text into chunks
  (words, numbers, punctuation, spaces) so that merges never cross a word boundary.

The teaching functions :func:`get_stats` and :func:`merge` and the naive trainer
:func:`train_merges_naive` recount every pair after every merge. :func:`train_merges` learns
the very same merges much faster: it counts pairs once over the *distinct* chunks, weighted by
how often each occurs, then after each merge updates only the counts that changed, with an
index from each pair to the chunks that hold it and a heap to find the most frequent pair.

Tie-breaking, the same in both trainers: the most frequent pair wins, and among pairs equally
frequent, the smallest pair ``(first id, second id)``.

A trained tokenizer exports to Hugging Face ``tokenizers`` and to ``tiktoken``; both give
exactly the ids that :meth:`BPETokenizer.encode` gives (for merges learned by ``train``, where
every token's bytes merge back into that token; hand-made merge lists need not have that).
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import regex

from buildllm.files import write_atomically

if TYPE_CHECKING:  # only for type hints: the exports import them when called
    import tiktoken
    import tokenizers

class CharTokenizer:
    """One id per distinct character of ``text``, in sorted order (nanoGPT's Shakespeare)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer learns from a str, got {type(text).__name__}")
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text to learn its characters from")
        self.chars = sorted(set(text))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """The same as ``CharTokenizer(text)``."""
        return cls(text)

    @property
    def vocab_size(self) -> int:
        """How many ids there are: the number of distinct characters."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} was not in the text this tokenizer was fit on; a "
                f"character tokenizer knows only those {self.vocab_size} characters"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        chars = []
        for i in ids:
            try:
                k = operator.index(i)  # an int, a numpy int, a one-element integer tensor
            except TypeError:
                k = -1
            if not 0 <= k < self.vocab_size:
                raise ValueError(f"id {i!r} is not in the vocabulary (0 to "
                                 f"{self.vocab_size - 1}); ids are ints (tensor.tolist())")
            chars.append(self.chars[k])
        return "".join(chars)


def get_stats(ids: list[int], counts: dict | None = None) -> dict[tuple[int, int], int]:
    """Count each adjacent pair: ``[1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}``.

    Pass ``counts`` to add to an existing dictionary (to count over many chunks).
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], idx: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``, left to right, with ``idx``.

    ``merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]``
    """
    out = []
    i = 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# GPT-2's pattern (as tiktoken writes it): contractions, an optional space followed by letters,
# by digits or by other symbols, then runs of whitespace. Every character matches some
# alternative, so the chunks put back together are the text.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
# The same pattern for pure-ASCII text, where a letter (\p{L}) is [A-Za-z], a number (\p{N})
# is [0-9] and whitespace (\s) is the six characters in _WS. Written for the standard library's
# `re`, which cuts ASCII text about twice as fast as `regex` cuts it with the Unicode classes.
_WS = r" \t\n\x0b\x0c\r"
GPT2_ASCII_PATTERN = (
    rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+"""
    rf"""|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
)
_ASCII_SPLIT = re.compile(GPT2_ASCII_PATTERN)
ENDOFTEXT = "<|endoftext|>"


def pretokenize(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """Cut ``text`` into chunks: ``"Hello, world!" -> ['Hello', ',', ' world', '!']``.

    ASCII text cut by GPT-2's pattern goes through its ASCII twin and ``re``: the same chunks,
    faster.
    """
    if pattern == GPT2_SPLIT_PATTERN and text.isascii():
        return _ASCII_SPLIT.findall(text)
    return regex.findall(pattern, text)


def _utf8(chunk: str) -> bytes:
    """``chunk`` as UTF-8 bytes, or a ValueError that says what a lone surrogate is."""
    try:
        return chunk.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end]
        raise ValueError(
            f"text holds {bad!r}, a lone surrogate, which UTF-8 cannot encode (it comes from "
            f"broken UTF-16 or from decoding with errors='surrogateescape'); repair the text, "
            f"e.g. with text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


def train_merges_naive(
    text: str, num_merges: int, pattern: str = GPT2_SPLIT_PATTERN
) -> list[tuple[int, int]]:
    """Learn ``num_merges`` merges by recounting every pair of every chunk after each merge.

    Merge ``k`` of the returned list creates the id ``256 + k``. Slow: the book times it.
    """
    chunks = [list(_utf8(chunk)) for chunk in pretokenize(text, pattern)]
    merges = []
    for k in range(num_merges):
        stats = {}
        for ids in chunks:
            get_stats(ids, stats)
        if not stats:  # every chunk is a single token: nothing left to merge
            break
        pair = min(stats, key=lambda p: (-stats[p], p))  # most frequent, then smallest
        chunks = [merge(ids, pair, 256 + k) for ids in chunks]
        merges.append(pair)
    return merges


def train_merges(
    text: str, num_merges: int, pattern: str = GPT2_SPLIT_PATTERN
) -> list[tuple[int, int]]:
    """Learn the same merges as :func:`train_merges_naive`, fast.

    Three ideas. (1) Work on the *distinct* chunks, each weighted by how often it occurs.
    (2) Write a chunk's ids as a ``str`` with one character per id, ``chr(id)``: merging a pair
    is then ``str.replace``, which runs in C, and a pair of ids is a pair of characters, which
    sort as the ids do. (3) After a merge, rewrite only the chunks that hold the pair (an index
    ``where`` says which) and change only the counts of pairs next to the new token.
    """
    chunk_counts = Counter(pretokenize(text, pattern))
    words = [_utf8(chunk).decode("latin-1") for chunk in chunk_counts]  # chr(byte) per byte
    freqs = list(chunk_counts.values())  # how often each distinct chunk occurs
    counts: defaultdict[tuple[str, str], int] = defaultdict(int)  # pair -> occurrences
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> words with it
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            counts[pair] += freqs[w]
            where[pair].add(w)
    # A heap of (-count, pair): its smallest entry is the most frequent pair, then the smallest
    # pair. A count that changes is pushed again; entries whose count is out of date are skipped.
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if counts.get(pair) != -neg_count:  # stale entry
            continue
        new = chr(256 + len(merges))
        merges.append((ord(pair[0]), ord(pair[1])))
        del counts[pair]  # every occurrence is about to be merged
        a, b = pair
        ab = a + b
        delta: defaultdict[tuple[str, str], int] = defaultdict(int)  # change of other counts
        for w in where.pop(pair):
            before = words[w]
            after = before.replace(ab, new)
            if len(after) == len(before):  # the word lost this pair to an earlier merge
                continue
            words[w] = after
            f = freqs[w]
            for p in zip(after, after[1:]):
                x, y = p
                if x == new or y == new:  # a pair next to the new token, e.g. (x, new) ...
                    delta[p] += f
                    delta[(b if x == new else x, a if y == new else y)] -= f  # ... was (x, a)
                    where[p].add(w)
        for p, d in delta.items():
            if d and p != pair:
                c = counts[p] + d
                if c:
                    counts[p] = c
                    heapq.heappush(heap, (-c, p))
                else:
                    del counts[p]
    return merges


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character.

    Printable bytes stand for themselves; the other 68 (control characters, space, ...) get the
    characters from U+0100 on, in byte order. Space (32) becomes 'Ġ', newline (10) 'Ċ'.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


FORMAT = "buildllm-bpe"
FORMAT_VERSION = 1
CACHE_SIZE = 1 << 16  # chunks encode remembers, besides the tokens, before it starts over
NO_MERGE = 1 << 40  # the rank of a pair that no merge knows: larger than any id


class BPETokenizer:
    """Byte-level BPE: ids 0-255 are bytes, ``256 + k`` is merge ``k``, special tokens follow.

    ``merges[k] = (a, b)`` means "the pair of ids a, b becomes the id 256 + k";
    ``vocab[id]`` is the token's bytes; ``special_tokens`` maps each special token
    (``<|endoftext|>``) to its id, after the last merge. Special tokens are never split.
    """

    def __init__(
        self,
        merges: Iterable[tuple[int, int]] = (),
        special_tokens: Iterable[str] = (),
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> None:
        self._build(list(merges), list(special_tokens), pattern)

    def _build(self, merges: list[tuple[int, int]], specials: list[str], pattern: str) -> None:
        """Check the merges and derive everything encode and decode need from them."""
        vocab = {i: bytes([i]) for i in range(256)}
        for k, (a, b) in enumerate(merges):
            idx = 256 + k
            if not (a in vocab and b in vocab):
                raise ValueError(f"merge {k} is {(a, b)}, but only ids below {idx} exist yet")
            vocab[idx] = vocab[a] + vocab[b]
        if len(set(specials)) != len(specials) or not all(s and isinstance(s, str)
                                                          for s in specials):
            raise ValueError(f"special tokens must be distinct non-empty strings, got {specials}")
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.ranks = {pair: 256 + k for k, pair in enumerate(self.merges)}  # pair -> its new id
        # The same, with ids as characters (as in train_merges): "ab" -> chr(new id) and back.
        self._rank_of_text = {chr(a) + chr(b): idx for (a, b), idx in self.ranks.items()}
        self._text_of_rank = {idx: text for text, idx in self._rank_of_text.items()}
        self.special_tokens = {s: len(vocab) + i for i, s in enumerate(specials)}
        for s, i in self.special_tokens.items():
            vocab[i] = s.encode("utf-8")
        self.vocab = vocab  # id -> bytes
        self.pattern = pattern
        regex.compile(pattern)  # a pattern that is not a regular expression fails here, not later
        # A chunk that is itself a token is that token, as in tiktoken: the encoder's cache
        # starts with every token that is text, so the first call has less left to merge.
        self._tokens_as_text = {}
        for idx in range(len(vocab) - len(specials)):
            try:
                self._tokens_as_text[vocab[idx].decode("utf-8")] = [idx]
            except UnicodeDecodeError:
                pass  # part of a character: never a whole chunk
        self._cache: dict[str, list[int]] = dict(self._tokens_as_text)

    @property
    def vocab_size(self) -> int:
        """How many ids there are: 256 bytes, the merges, the special tokens."""
        return len(self.vocab)

    def train(
        self,
        text: str,
        vocab_size: int,
        special_tokens: Iterable[str] = (ENDOFTEXT,),
        naive: bool = False,
    ) -> BPETokenizer:
        """Learn merges from ``text`` until the vocabulary holds ``vocab_size`` tokens.

        ``vocab_size`` counts the 256 bytes, the merges and the special tokens. A text too small
        to give that many merges gives fewer. Returns ``self``, trained.
        """
        specials = list(special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size must be an int of at least 256 + {len(specials)} "
                             f"special tokens, got {vocab_size!r}")
        trainer = train_merges_naive if naive else train_merges
        merges = trainer(text, vocab_size - 256 - len(specials), self.pattern)
        self._build(merges, specials, self.pattern)
        return self

    def _encode_chunk(self, data: bytes) -> list[int]:
        """Apply the merges to one chunk's bytes, the earliest-learned pair first.

        The chunk is a ``str`` of ``chr(id)``, as in :func:`train_merges`: ``map`` lists its
        adjacent pairs in C, the loop finds the pair of lowest rank, and ``str.replace`` merges.
        """
        word = data.decode("latin-1")  # chr(byte) for each byte
        rank_of = self._rank_of_text.get
        while True:
            best = NO_MERGE
            for pair in map(operator.add, word, word[1:]):  # "abc" -> "ab", "bc"
                rank = rank_of(pair, NO_MERGE)
                if rank < best:
                    best = rank
            if best == NO_MERGE:
                return [ord(c) for c in word]  # no pair left that a merge knows
            word = word.replace(self._text_of_rank[best], chr(best))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` ignoring special tokens: ``<|endoftext|>`` is just 13 characters.

        A text repeats its chunks (" the", " and", ","): each distinct chunk is merged once and
        its ids remembered, for this call and later ones (up to ``CACHE_SIZE`` chunks besides
        the tokens the cache starts with).
        """
        cache = self._cache
        full = len(self._tokens_as_text) + CACHE_SIZE
        out: list[int] = []
        for chunk in pretokenize(text, self.pattern):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(_utf8(chunk))
                if len(cache) >= full:
                    cache.clear()
                    cache.update(self._tokens_as_text)
                cache[chunk] = ids
            out.extend(ids)
        return out

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Encode ``text`` into ids.

        Special tokens named in ``allowed_special`` (or all of them, with ``"all"``) become
        their single ids. Any other special token in the text is an error, as in tiktoken.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode needs a str, got {type(text).__name__}")
        if isinstance(allowed_special, str) and allowed_special != "all":
            allowed_special = {allowed_special}  # one token named alone, not its characters
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        if unknown := allowed - set(self.special_tokens):
            raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special "
                             f"tokens of this tokenizer: {sorted(self.special_tokens)}")
        for s in self.special_tokens:
            if s not in allowed and s in text:
                raise ValueError(
                    f"text contains the special token {s!r}, which is not allowed: pass "
                    f"allowed_special={{{s!r}}} (or 'all') to encode it as its id "
                    f"{self.special_tokens[s]}, or call encode_ordinary to encode it as text")
        if not allowed:
            return self.encode_ordinary(text)
        # Split around the allowed special tokens (longest first), keeping them: regex.split
        # puts the text between them at even positions and the tokens at odd positions.
        alternatives = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
        out: list[int] = []
        for i, part in enumerate(regex.split(f"({alternatives})", text)):
            if i % 2:
                out.append(self.special_tokens[part])
            else:
                out.extend(self.encode_ordinary(part))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text. Ids that cut a character's bytes apart decode to U+FFFD."""
        ids = list(ids)
        try:
            data = b"".join([self.vocab[i] for i in ids])
        except (KeyError, TypeError):  # TypeError: an id that cannot be a key, such as a list
            bad = next(i for i in ids if not isinstance(i, Hashable) or i not in self.vocab)
            raise ValueError(
                f"id {bad!r} is not in the vocabulary (0 to {self.vocab_size - 1}); ids must be "
                f"Python ints (use tensor.tolist()) from this tokenizer"
            ) from None
        return data.decode("utf-8", errors="replace")

    def _token_text(self, idx: int) -> str:
        """Token ``idx`` as readable text; bytes that are not whole UTF-8 show as ``\\xe2``."""
        return self.vocab[idx].decode("utf-8", errors="backslashreplace")

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as readable JSON, atomically (a temporary file, then a rename).

        One merge per line, ``[a, b, "text of the new token"]``; the text is for the reader,
        and :meth:`load` checks that it agrees with the ids.
        """
        def dumps(value: object) -> str:
            return json.dumps(value, ensure_ascii=False)

        head = {"format": FORMAT, "version": FORMAT_VERSION, "pattern": self.pattern,
                "special_tokens": self.special_tokens}
        fields = [f'"{key}": {dumps(value)}' for key, value in head.items()]
        merges = [dumps([a, b, self._token_text(256 + k)])
                  for k, (a, b) in enumerate(self.merges)]
        fields.append('"merges": [\n  ' + ",\n  ".join(merges) + "\n ]")
        content = "{\n " + ",\n ".join(fields) + "\n}\n"
        write_atomically(path, lambda tmp: tmp.write_text(content, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by :meth:`save`; a corrupt or truncated file is a ValueError."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a tokenizer file (not valid JSON: {e}); it may be "
                             f"truncated or corrupt: save the tokenizer again") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file (no 'format': '{FORMAT}' in it)")
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format version {doc.get('version')!r}; this buildllm "
                             f"reads version {FORMAT_VERSION}")
        try:
            merges, specials = doc["merges"], doc["special_tokens"]
            if not all(len(m) == 3 and type(m[0]) is int and type(m[1]) is int for m in merges):
                raise ValueError("every merge must be [int, int, text]")
            tok = cls([m[:2] for m in merges], sorted(specials, key=specials.get), doc["pattern"])
        except (KeyError, TypeError, AttributeError, ValueError, regex.error) as e:
            raise ValueError(f"{path} is a damaged tokenizer file ({type(e).__name__}: {e}); "
                             f"save the tokenizer again") from None
        for k, m in enumerate(merges):
            if m[2] != tok._token_text(256 + k):
                raise ValueError(f"{path} is a damaged tokenizer file: merge {k} {m} makes "
                                 f"{tok._token_text(256 + k)!r}, not {m[2]!r}")
        if tok.special_tokens != specials:
            raise ValueError(f"{path} is a damaged tokenizer file: special token ids "
                             f"{specials} should be {tok.special_tokens}")
        return tok

    def _ranks_by_bytes(self) -> dict[bytes, int]:
        """Each token's bytes -> its id (its rank), for the bytes-keyed tables of the exports."""
        ranks = {self.vocab[i]: i for i in range(256 + len(self.merges))}
        if len(ranks) != 256 + len(self.merges):
            raise ValueError("two merges make the same bytes; tiktoken and Hugging Face need "
                             "each token's bytes to be unique")
        return ranks

    def to_tiktoken(self, name: str = "buildllm") -> tiktoken.Encoding:
        """A ``tiktoken.Encoding`` with our merges: rank = id, the same split pattern."""
        import tiktoken

        return tiktoken.Encoding(name=name, pat_str=self.pattern,
                                 mergeable_ranks=self._ranks_by_bytes(),
                                 special_tokens=dict(self.special_tokens))

    def to_hf_tokenizer(self) -> tokenizers.Tokenizer:
        """A Hugging Face ``tokenizers.Tokenizer`` (byte-level BPE, as GPT-2's tokenizer.json).

        Hugging Face writes each token with GPT-2's printable stand-ins for bytes
        (:func:`bytes_to_unicode`). ``.save("tokenizer.json")`` writes the file.
        """
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        if self.pattern != GPT2_SPLIT_PATTERN:
            raise ValueError("the Hugging Face export supports only GPT2_SPLIT_PATTERN, the "
                             "pattern of its ByteLevel pre-tokenizer")
        b2u = bytes_to_unicode()
        text = {i: "".join(b2u[b] for b in data) for data, i in self._ranks_by_bytes().items()}
        tok = Tokenizer(models.BPE(
            vocab={t: i for i, t in text.items()},
            merges=[(text[a], text[b]) for a, b in self.merges],
        ))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                                for s in self.special_tokens])  # in id order: ids match
        return tok


def train_bpe(
    text: str, vocab_size: int, special_tokens: Iterable[str] = (ENDOFTEXT,)
) -> BPETokenizer:
    """A new :class:`BPETokenizer` trained on ``text`` to ``vocab_size`` tokens."""
    return BPETokenizer().train(text, vocab_size, special_tokens)


def add_cli(subparsers) -> None:
    """Add ``buildllm tokenizer train|encode|decode`` to the command line (``buildllm.cli``)."""
    parser = subparsers.add_parser("tokenizer", help="train a tokenizer, encode, decode",
                                   description="Train a byte-level BPE tokenizer, or use one.")
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    train = actions.add_parser("train", help="learn merges from a text, write the tokenizer")
    train.add_argument("out", help="the JSON file to write")
    train.add_argument("--vocab-size", type=int, default=4096, help="tokens in all (4096)")
    train.add_argument("--text", help="a UTF-8 text file to learn from (default: Tiny "
                                      "Shakespeare's training text, its first 90%%)")
    train.set_defaults(func=_cli_train)
    encode = actions.add_parser("encode", help="print the ids of a text")
    encode.add_argument("tokenizer", help="a file written by 'buildllm tokenizer train'")
    encode.add_argument("text")
    encode.add_argument("--allow-special", action="store_true",
                        help="encode special tokens such as <|endoftext|> as their ids")
    encode.set_defaults(func=_cli_encode)
    decode = actions.add_parser("decode", help="print the text of ids")
    decode.add_argument("tokenizer", help="a file written by 'buildllm tokenizer train'")
    decode.add_argument("ids", type=int, nargs="+")
    decode.set_defaults(func=_cli_decode)


def _cli_train(args) -> int:
    """``buildllm tokenizer train``: learn from a file, or from the book's training text (the
    validation text stays unseen, as in chapter "Training")."""
    if args.text:
        text = Path(args.text).read_text(encoding="utf-8")
    else:
        from buildllm import data

        text = data.train_val_split(data.load_text())[0]
    tok = train_bpe(text, args.vocab_size)
    tok.save(args.out)
    print(f"wrote {args.out}: {tok.vocab_size} tokens, {len(tok.merges)} merges")
    return 0


def _cli_encode(args) -> int:
    """``buildllm tokenizer encode``: the ids, separated by spaces."""
    tok = BPETokenizer.load(args.tokenizer)
    if not args.allow_special and any(s in args.text for s in tok.special_tokens):
        raise ValueError("the text contains a special token: add --allow-special to encode it "
                         "as its id, or remove it")
    print(*tok.encode(args.text, allowed_special="all" if args.allow_special else ()))
    return 0


def _cli_decode(args) -> int:
    """``buildllm tokenizer decode``: the text, exactly (no newline added)."""
    print(BPETokenizer.load(args.tokenizer).decode(args.ids), end="")
    return 0
