"""buildllm.bpe_fast: the fast trainer learns exactly the merges of the teaching one, the chunk
encoder gives exactly the ids of the teaching one (with its cache, whatever its size), and the
ASCII twin of GPT-2's pattern cuts ASCII text exactly as the Unicode pattern does."""

from __future__ import annotations

import re

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm import bpe, bpe_fast
from buildllm.tokenizer import train_bpe
from shared import HARD_PIECES

hard_text = st.lists(
    st.one_of(st.sampled_from(HARD_PIECES), st.text(max_size=8)), max_size=12
).map("".join)
any_text = st.one_of(st.text(), hard_text)  # st.text() never draws lone surrogates


def encoder(tok) -> bpe_fast.ChunkEncoder:
    """A fresh encoder (an empty cache) for a tokenizer's merges."""
    return bpe_fast.ChunkEncoder(tok.merges, tok.vocab, tok.pattern)


# ---- cutting text ------------------------------------------------------------------------------

ascii_text = st.lists(
    st.one_of(st.sampled_from(["'s", "'ll", "don't", " ", "  ", "\n", "\r\n", " \t ", "\x0b",
                               "\x0c", "\x1c", "\x1f", "\x00", "\x7f", "_", "12", " 9", "a,b"]),
              st.text(alphabet=st.characters(max_codepoint=127), max_size=8)),
    max_size=12,
).map("".join)


@settings(max_examples=3000, deadline=None)
@given(ascii_text)
def test_ascii_pattern_cuts_ascii_text_as_the_unicode_pattern_does(text):
    assert re.findall(bpe_fast.GPT2_ASCII_PATTERN, text) == regex.findall(
        bpe.GPT2_SPLIT_PATTERN, text)
    assert bpe_fast.pretokenize(text) == bpe.pretokenize(text)


def test_every_ascii_character_is_classed_as_the_unicode_pattern_classes_it():
    for a in map(chr, range(128)):
        for b in map(chr, range(128)):
            text = f"{a}{b} x{a}{a}"
            unicode_classes = regex.findall(bpe.GPT2_SPLIT_PATTERN, text)
            assert re.findall(bpe_fast.GPT2_ASCII_PATTERN, text) == unicode_classes, text


def test_other_text_and_other_patterns_are_cut_by_regex():
    text = "Ångström's 日本語 ½ naïve\u00a0x"
    assert not text.isascii()
    assert bpe_fast.pretokenize(text) == regex.findall(bpe.GPT2_SPLIT_PATTERN, text)
    assert bpe_fast.pretokenize("ab, cd", r"\w|\W") == ["a", "b", ",", " ", "c", "d"]


# ---- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where, size, n_merges", [
    ("start", 6000, 120), ("middle", 3000, 200), ("end", 2000, 80), ("hard", 0, 150),
])
def test_fast_trainer_equals_naive_trainer(corpus, where, size, n_merges):
    text = {"start": corpus[:size], "middle": corpus[500_000:500_000 + size],
            "end": corpus[-size:], "hard": "".join(HARD_PIECES) * 3}[where]
    assert bpe_fast.train_merges(text, n_merges) == bpe.train_merges_naive(text, n_merges)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab c\n'", max_size=120), st.integers(1, 40))
def test_fast_trainer_equals_naive_trainer_with_many_ties(text, n_merges):
    # A four-letter alphabet in short texts: many pairs have equal counts, so this checks the
    # tie-breaking rule, and that both stop when nothing is left to merge.
    assert bpe_fast.train_merges(text, n_merges) == bpe.train_merges_naive(text, n_merges)


def test_fast_trainer_equals_naive_trainer_with_another_pattern():
    text = "the cat, the hat; the bat\n" * 20
    assert bpe_fast.train_merges(text, 30, r"\S+|\s+") == bpe.train_merges_naive(
        text, 30, r"\S+|\s+")


def test_tie_breaking_is_most_frequent_then_smallest_pair():
    assert bpe_fast.train_merges("dcba", 1) == [(ord("b"), ord("a"))]
    assert bpe_fast.train_merges("zz ab zz", 1) == [(ord("z"), ord("z"))]
    assert bpe_fast.train_merges("aaab", 1000) == [(97, 97), (97, 98), (256, 257)]


def test_each_merge_is_the_best_pair_of_its_step(corpus):
    """Replay the merges: merge k is the most frequent pair after merges 0..k-1 (then smallest)."""
    text = corpus[:8000]
    merges = bpe_fast.train_merges(text, 60)
    chunks = [list(c.encode()) for c in bpe.pretokenize(text)]
    for k, pair in enumerate(merges):
        stats = {}
        for ids in chunks:
            bpe.get_stats(ids, stats)
        best = max(stats.values())
        assert stats[pair] == best and pair == min(p for p, c in stats.items() if c == best)
        chunks = [bpe.merge(ids, pair, 256 + k) for ids in chunks]


def test_lone_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match="lone surrogate"):
        bpe_fast.train_merges("abc\udfff", 5)
    with pytest.raises(ValueError, match="lone surrogate"):
        bpe_fast.ChunkEncoder([], {i: bytes([i]) for i in range(256)},
                              bpe.GPT2_SPLIT_PATTERN).encode("abc\ud800def")


# ---- encoding ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_fast_chunk_encoder_equals_teaching_version(tok, text):
    """The library's encoder (ids as characters, str.replace) == the loop with get_stats/merge."""
    fast, teaching = encoder(tok), []
    for chunk in bpe.pretokenize(text):
        data = chunk.encode("utf-8")
        ids = bpe.encode_chunk(data, tok.ranks)
        assert fast.encode_chunk(data) == ids
        teaching.extend(ids)
    assert fast.encode(text) == teaching  # the cache and the ASCII cut change nothing


@pytest.mark.parametrize("where, size", [(0, 30_000), (500_000, 50_000), (1_000_000, 80_000)])
def test_a_chunk_that_is_a_token_merges_into_that_token(corpus, where, size):
    """The encoder's cache starts with every token as its own chunk (tiktoken does the same).
    That is exact for trained merges: merging a token's bytes gives back the token."""
    fast = encoder(train_bpe(corpus[where : where + size], 1024))
    assert len(fast.tokens_as_text) > 800  # most tokens are text, not parts of characters
    for text, ids in fast.tokens_as_text.items():
        assert fast.encode_chunk(text.encode("utf-8")) == ids, text


def test_unicode_text_is_cut_by_the_unicode_pattern(tok):
    text = "Ångström's 日本語 ½ naïve\u00a0x"
    chunks = regex.findall(bpe.GPT2_SPLIT_PATTERN, text)
    assert encoder(tok).encode(text) == [i for c in chunks for i in bpe.encode_chunk(
        c.encode(), tok.ranks)]


def test_cache_does_not_change_ids(tok, small_corpus, monkeypatch):
    text = small_corpus[:20_000]
    fresh = encoder(tok)
    cold = fresh.encode(text)
    assert fresh.encode(text) == cold  # warm
    monkeypatch.setattr(bpe_fast, "CACHE_SIZE", 10)  # a cache too small for the text: still right
    small = encoder(tok)
    assert small.encode(text) == cold
    assert small.encode(text[:30]) == cold[: len(small.encode(text[:30]))]
    assert len(small.cache) <= 10 + len(small.tokens_as_text)  # the tokens, then <= 10


def test_a_cache_limit_below_the_vocabulary_still_remembers_chunks(tok, monkeypatch):
    """CACHE_SIZE counts the chunks remembered besides the tokens the cache starts with, so a
    vocabulary larger than it does not empty the cache at every new chunk."""
    monkeypatch.setattr(bpe_fast, "CACHE_SIZE", 10)
    fresh = encoder(tok)
    assert len(fresh.tokens_as_text) > 10
    new = [c for c in dict.fromkeys(bpe.pretokenize("Zyxw qvvq jjkk Ppqq xxzz"))
           if c not in fresh.tokens_as_text]
    fresh.encode("Zyxw qvvq jjkk Ppqq xxzz")
    assert new and all(c in fresh.cache for c in new)


def test_a_pattern_that_is_not_a_regular_expression_fails_at_once():
    with pytest.raises(regex.error):
        bpe_fast.ChunkEncoder([], {i: bytes([i]) for i in range(256)}, "(unclosed")
