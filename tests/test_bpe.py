"""buildllm.bpe, byte-pair encoding as the chapter "Tokens" teaches it: counting and merging
pairs, cutting text into chunks, the naive trainer and its tie-breaking rule, and encoding a
chunk with learned merges, each checked by hand or against a definition. (The fast twins are
proven equal to these in test_bpe_fast.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm import bpe
from shared import HARD_PIECES

ids_lists = st.lists(st.integers(0, 3), max_size=30)


@settings(max_examples=300, deadline=None)
@given(ids_lists, st.integers(0, 3), st.integers(0, 3))
def test_merge_is_left_to_right_replacement(ids, a, b):
    """merge() does what str.replace does on the ids written as characters (what the fast code
    relies on), and get_stats counts every adjacent pair once."""
    as_text = "".join(map(chr, ids))
    merged = bpe.merge(ids, (a, b), 99)
    assert merged == [ord(c) for c in as_text.replace(chr(a) + chr(b), chr(99))]
    stats = bpe.get_stats(ids)
    assert sum(stats.values()) == max(len(ids) - 1, 0)
    assert len(merged) == len(ids) - as_text.count(chr(a) + chr(b))
    counts = {}
    bpe.get_stats(ids, counts)
    bpe.get_stats(ids, counts)
    assert counts == {p: 2 * c for p, c in stats.items()}


def test_the_docstring_examples():
    assert bpe.get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert bpe.merge([1, 1, 1], (1, 1), 4) == [4, 1]  # left to right, no overlaps
    assert bpe.pretokenize("Hello, world!") == ["Hello", ",", " world", "!"]


def test_pretokenize_keeps_every_character():
    text = "".join(HARD_PIECES)
    chunks = bpe.pretokenize(text)
    assert "".join(chunks) == text
    assert bpe.pretokenize("Hello, world!  It's") == ["Hello", ",", " world", "!", " ", " It", "'s"]
    assert bpe.pretokenize("naïve 日本語 ½") == ["naïve", " 日本語", " ½"]


def test_pretokenize_cuts_with_the_pattern_it_is_given():
    assert bpe.pretokenize("ab, cd", r"\w|\W") == ["a", "b", ",", " ", "c", "d"]


def test_utf8_and_lone_surrogates():
    assert bpe.utf8("é€") == b"\xc3\xa9\xe2\x82\xac"
    with pytest.raises(ValueError, match=r"text holds '\\ud800', a lone surrogate"):
        bpe.utf8("abc\ud800def")
    with pytest.raises(ValueError, match="lone surrogate"):
        bpe.train_merges_naive("abc\udfff", 5)


def test_tie_breaking_is_most_frequent_then_smallest_pair():
    # One chunk "dcba": three pairs, each once; the smallest pair (ord('b'), ord('a')) wins.
    assert bpe.train_merges_naive("dcba", 1) == [(ord("b"), ord("a"))]
    # "zz" occurs twice, and beats every pair that occurs once, however small.
    assert bpe.train_merges_naive("zz ab zz", 1) == [(ord("z"), ord("z"))]


def test_naive_training_by_hand():
    # "aaab": (a, a) twice -> 256; then (256, a) and (a, b) once each: the smaller, (a, b) -> 257;
    # then (256, 257) -> 258, and the chunk is a single token: nothing is left to merge.
    assert bpe.train_merges_naive("aaab", 1000) == [(97, 97), (97, 98), (256, 257)]
    # merges never cross chunks: " b" and "a" are separate chunks of "a b"
    assert bpe.train_merges_naive("a b", 10) == [(32, 98)]


def test_encode_chunk_applies_the_earliest_learned_merge_first():
    ranks = {(97, 98): 256, (98, 99): 257, (256, 99): 258}
    assert bpe.encode_chunk(b"abc", ranks) == [258]  # ab first, then (ab)c
    assert bpe.encode_chunk(b"abc", {(98, 99): 256, (97, 98): 257}) == [97, 256]  # bc first
    assert bpe.encode_chunk(b"xyz", ranks) == [120, 121, 122]  # no merge known: the bytes
    assert bpe.encode_chunk(b"", ranks) == [] and bpe.encode_chunk(b"a", ranks) == [97]


def test_encoding_with_learned_merges_gives_the_bytes_back(corpus):
    text = corpus[:3000]
    merges = bpe.train_merges_naive(text, 40)
    ranks = {pair: 256 + k for k, pair in enumerate(merges)}
    vocab = {i: bytes([i]) for i in range(256)}
    for k, (a, b) in enumerate(merges):
        vocab[256 + k] = vocab[a] + vocab[b]
    ids = [i for chunk in bpe.pretokenize(text) for i in bpe.encode_chunk(bpe.utf8(chunk), ranks)]
    assert b"".join(vocab[i] for i in ids).decode() == text
    assert len(ids) < 0.75 * len(text.encode())  # 40 merges already compress English
