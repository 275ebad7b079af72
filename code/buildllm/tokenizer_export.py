"""A :class:`~buildllm.tokenizer.BPETokenizer` as a ``tiktoken.Encoding`` or a Hugging Face
``tokenizers.Tokenizer``. Used by the chapter "Tokens" to check our ids against both.

Both exports give exactly the ids that :meth:`BPETokenizer.encode` gives, for merges learned by
:func:`~buildllm.tokenizer.train_bpe` (where every token's bytes merge back into that token;
hand-made merge lists need not have that). These are the library's reference packages
(``pip install buildllm[reference]``).
"""

from __future__ import annotations

import tiktoken
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from buildllm.bpe import GPT2_SPLIT_PATTERN
from buildllm.tokenizer import BPETokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character.

    Printable bytes stand for themselves; the other 68 (control characters, space, ...) get
    the characters from U+0100 on, in byte order. Space (32) becomes 'Ġ', newline (10) 'Ċ'.
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


def ranks_by_bytes(tok: BPETokenizer) -> dict[bytes, int]:
    """Each token's bytes -> its id (its rank), the table both exports are built from."""
    ranks = {tok.vocab[i]: i for i in range(256 + len(tok.merges))}
    if len(ranks) != 256 + len(tok.merges):
        raise ValueError("two merges make the same bytes; tiktoken and Hugging Face need "
                         "each token's bytes to be unique")
    return ranks


def to_tiktoken(tok: BPETokenizer, name: str = "buildllm") -> tiktoken.Encoding:
    """A ``tiktoken.Encoding`` with our merges: rank = id, the same split pattern."""
    return tiktoken.Encoding(name=name, pat_str=tok.pattern, mergeable_ranks=ranks_by_bytes(tok),
                             special_tokens=dict(tok.special_tokens))


def to_hf_tokenizer(tok: BPETokenizer) -> Tokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` (byte-level BPE, as GPT-2's tokenizer.json).

    Hugging Face writes each token with GPT-2's printable stand-ins for bytes
    (:func:`bytes_to_unicode`). ``.save("tokenizer.json")`` writes the file.
    """
    if tok.pattern != GPT2_SPLIT_PATTERN:
        raise ValueError("the Hugging Face export supports only GPT2_SPLIT_PATTERN, the "
                         "pattern of its ByteLevel pre-tokenizer")
    b2u = bytes_to_unicode()
    text = {i: "".join(b2u[b] for b in data) for data, i in ranks_by_bytes(tok).items()}
    hf = Tokenizer(models.BPE(vocab={t: i for i, t in text.items()},
                              merges=[(text[a], text[b]) for a, b in tok.merges]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False)
                           for s in tok.special_tokens])  # in id order: ids match
    return hf
