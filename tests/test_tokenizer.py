"""buildllm.tokenizer: the character baseline, BPE training (naive == fast), encode/decode round
trips on any Unicode text, special tokens, save/load, and equality with Hugging Face
`tokenizers` and `tiktoken` built offline from our own merges."""

from __future__ import annotations

import json
import os

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildllm import tokenizer as tk
from buildllm.tokenizer import ENDOFTEXT, BPETokenizer, CharTokenizer

# Text a reader could meet: several scripts, combining marks, emoji (with zero-width joiners and
# skin tones), control characters, whitespace of many kinds, digits, contractions.
HARD_PIECES = [
    "Hello", " world", "naïve", "e\u0301", "Ångström", "日本語のテキスト", "中文", "한국어",
    "Привет", "مرحبا", "שלום", "🙂", "👩\u200d👩\u200d👧\u200d👦", "👍🏽", "🇫🇷", "\u200d",
    "\ufeff", "\x00", "\x1b[0m", "\r\n", "\t", "\n\n\n", "    ", " " * 40, "\u00a0",
    "\u3000", "don't", "'ll", "1234567", "½", "Ⅻ", "²", "<|endoftext|>", "<|", "|>",
    "\U0010ffff", "\ud7ff", "\ue000",
]

hard_text = st.lists(
    st.one_of(st.sampled_from(HARD_PIECES), st.text(max_size=8)), max_size=12
).map("".join)
any_text = st.one_of(st.text(), hard_text)  # st.text() never draws lone surrogates


@pytest.fixture(scope="module")
def small_corpus(corpus) -> str:
    """A slice of Shakespeare with every HARD_PIECE mixed in, so merges span multibyte text."""
    return corpus[:60_000] + "".join(HARD_PIECES) * 20


@pytest.fixture(scope="module")
def tok(small_corpus) -> BPETokenizer:
    return tk.train_bpe(small_corpus, 700)


@pytest.fixture(scope="module")
def big_tok(corpus) -> BPETokenizer:
    return tk.train_bpe(corpus, 4096)


# -- the character baseline ----------------------------------------------------------------------


def test_char_tokenizer_round_trip_and_errors(corpus):
    ct = CharTokenizer(corpus)
    assert ct.vocab_size == len(set(corpus))
    ids = ct.encode(corpus[:5000])
    assert ct.decode(ids) == corpus[:5000]
    assert all(0 <= i < ct.vocab_size for i in ids)
    assert ct.chars == sorted(ct.chars)
    assert CharTokenizer.fit("abc").chars == CharTokenizer("cab").chars
    with pytest.raises(ValueError, match="'é' was not in the text"):
        ct.encode("café")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ct.decode([ct.vocab_size])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ct.decode([-1])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ct.decode(["a"])
    import numpy as np
    import torch

    assert ct.decode(np.array(ids[:50])) == ct.decode(torch.tensor(ids[:50])) == corpus[:50]
    with pytest.raises(ValueError, match="non-empty text"):
        CharTokenizer("")
    with pytest.raises(TypeError, match="learns from a str"):
        CharTokenizer(["a", "b"])


# -- the teaching functions ----------------------------------------------------------------------

ids_lists = st.lists(st.integers(0, 3), max_size=30)


@settings(max_examples=300, deadline=None)
@given(ids_lists, st.integers(0, 3), st.integers(0, 3))
def test_merge_is_left_to_right_replacement(ids, a, b):
    """merge() does what str.replace does on the ids written as characters (what the fast code
    relies on), and get_stats counts every adjacent pair once."""
    as_text = "".join(map(chr, ids))
    merged = tk.merge(ids, (a, b), 99)
    assert merged == [ord(c) for c in as_text.replace(chr(a) + chr(b), chr(99))]
    stats = tk.get_stats(ids)
    assert sum(stats.values()) == max(len(ids) - 1, 0)
    assert len(merged) == len(ids) - as_text.count(chr(a) + chr(b))
    counts = {}
    tk.get_stats(ids, counts)
    tk.get_stats(ids, counts)
    assert counts == {p: 2 * c for p, c in stats.items()}


def test_pretokenize_keeps_every_character():
    text = "".join(HARD_PIECES)
    chunks = tk.pretokenize(text)
    assert "".join(chunks) == text
    assert tk.pretokenize("Hello, world!  It's") == ["Hello", ",", " world", "!", " ", " It", "'s"]


# -- training -------------------------------------------------------------------------------------


@pytest.mark.parametrize("where, size, n_merges", [
    ("start", 6000, 120), ("middle", 3000, 200), ("end", 2000, 80), ("hard", 0, 150),
])
def test_fast_trainer_equals_naive_trainer(corpus, where, size, n_merges):
    text = {"start": corpus[:size], "middle": corpus[500_000:500_000 + size],
            "end": corpus[-size:], "hard": "".join(HARD_PIECES) * 3}[where]
    assert tk.train_merges(text, n_merges) == tk.train_merges_naive(text, n_merges)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab c\n'", max_size=120), st.integers(1, 40))
def test_fast_trainer_equals_naive_trainer_with_many_ties(text, n_merges):
    # A four-letter alphabet in short texts: many pairs have equal counts, so this checks the
    # tie-breaking rule, and that both stop when nothing is left to merge.
    assert tk.train_merges(text, n_merges) == tk.train_merges_naive(text, n_merges)


def test_tie_breaking_is_most_frequent_then_smallest_pair():
    # One chunk "dcba": three pairs, each once; the smallest pair (ord('b'), ord('a')) wins.
    for trainer in (tk.train_merges, tk.train_merges_naive):
        assert trainer("dcba", 1) == [(ord("b"), ord("a"))]
        # "zz" occurs twice, and beats every pair that occurs once, however small.
        assert trainer("zz ab zz", 1) == [(ord("z"), ord("z"))]


def test_each_merge_is_the_best_pair_of_its_step(corpus):
    """Replay the merges: merge k is the most frequent pair after merges 0..k-1 (then smallest)."""
    text = corpus[:8000]
    merges = tk.train_merges(text, 60)
    chunks = [list(c.encode()) for c in tk.pretokenize(text)]
    for k, pair in enumerate(merges):
        stats = {}
        for ids in chunks:
            tk.get_stats(ids, stats)
        best = max(stats.values())
        assert stats[pair] == best and pair == min(p for p, c in stats.items() if c == best)
        chunks = [tk.merge(ids, pair, 256 + k) for ids in chunks]


def test_train_vocab_size_and_special_tokens(small_corpus, tok):
    assert tok.vocab_size == 700 and len(tok.vocab) == 700
    assert tok.special_tokens == {ENDOFTEXT: 699}
    assert len(tok.merges) == 700 - 256 - 1
    plain = BPETokenizer().train(small_corpus[:5000], 300, special_tokens=())
    assert plain.vocab_size == 300 and plain.special_tokens == {}
    naive = BPETokenizer().train(small_corpus[:5000], 300, special_tokens=(), naive=True)
    assert naive.merges == plain.merges
    tiny = tk.train_bpe("aaab", 1000)  # a tiny text runs out of pairs: fewer merges, no error
    assert len(tiny.merges) == 3 and tiny.vocab_size == 256 + 3 + 1
    assert tiny.encode("aaab") == [258]
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer().train("hello", 256)  # no room for <|endoftext|>
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer([], [ENDOFTEXT, ENDOFTEXT])
    with pytest.raises(ValueError, match="only ids below 256"):
        BPETokenizer([(97, 256)])


# -- encode and decode ------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_text)
def test_round_trip_any_unicode(tok, text):
    ids = tok.encode_ordinary(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size - 1 for i in ids)  # never the special token's id
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_fast_chunk_encoder_equals_teaching_version(tok, text):
    """The library's encoder (ids as characters, str.replace) == the loop with get_stats/merge."""
    for chunk in tk.pretokenize(text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            stats = tk.get_stats(ids)
            pair = min(stats, key=lambda p: tok.ranks.get(p, float("inf")))
            if pair not in tok.ranks:
                break
            ids = tk.merge(ids, pair, tok.ranks[pair])
        assert tok._encode_chunk(chunk.encode("utf-8")) == ids


ascii_text = st.lists(
    st.one_of(st.sampled_from(["'s", "'ll", "don't", " ", "  ", "\n", "\r\n", " \t ", "\x0b",
                               "\x0c", "\x1c", "\x1f", "\x00", "\x7f", "_", "12", " 9", "a,b"]),
              st.text(alphabet=st.characters(max_codepoint=127), max_size=8)),
    max_size=12,
).map("".join)


@settings(max_examples=3000, deadline=None)
@given(ascii_text)
def test_ascii_pattern_cuts_ascii_text_as_the_unicode_pattern_does(text):
    assert tk.re.findall(tk.GPT2_ASCII_PATTERN, text) == regex.findall(tk.GPT2_SPLIT_PATTERN, text)
    assert tk.pretokenize(text) == regex.findall(tk.GPT2_SPLIT_PATTERN, text)


def test_every_ascii_character_is_classed_as_the_unicode_pattern_classes_it():
    for a in map(chr, range(128)):
        for b in map(chr, range(128)):
            text = f"{a}{b} x{a}{a}"
            unicode_classes = regex.findall(tk.GPT2_SPLIT_PATTERN, text)
            assert tk.re.findall(tk.GPT2_ASCII_PATTERN, text) == unicode_classes, text


@pytest.mark.parametrize("where, size", [(0, 30_000), (500_000, 50_000), (1_000_000, 80_000)])
def test_a_chunk_that_is_a_token_merges_into_that_token(corpus, where, size):
    """The encoder's cache starts with every token as its own chunk (tiktoken does the same).
    That is exact for trained merges: merging a token's bytes gives back the token."""
    trained = tk.train_bpe(corpus[where : where + size], 1024)
    assert len(trained._tokens_as_text) > 800  # most tokens are text, not parts of characters
    for text, ids in trained._tokens_as_text.items():
        assert trained._encode_chunk(text.encode("utf-8")) == ids, text


def test_unicode_text_is_cut_by_the_unicode_pattern(tok):
    text = "Ångström's 日本語 ½ naïve\u00a0x"
    assert not text.isascii()
    ids = tok.encode(text)
    chunks = regex.findall(tk.GPT2_SPLIT_PATTERN, text)
    assert tk.pretokenize(text) == chunks
    assert ids == [i for c in chunks for i in tok._encode_chunk(c.encode())]


def test_encode_corpus_round_trip_and_compression(corpus, big_tok):
    ids = big_tok.encode(corpus)
    assert big_tok.decode(ids) == corpus
    assert len(ids) < len(corpus) / 3  # a 4096-token vocabulary compresses Shakespeare > 3x


def test_cache_does_not_change_ids(tok, small_corpus, monkeypatch):
    text = small_corpus[:20_000]
    fresh = BPETokenizer(tok.merges, tok.special_tokens)
    cold = fresh.encode(text)
    assert fresh.encode(text) == cold  # warm
    monkeypatch.setattr(tk, "CACHE_SIZE", 10)  # a cache too small for the text: still right
    small = BPETokenizer(tok.merges, tok.special_tokens)
    assert small.encode(text) == cold and small.encode(text[:30]) == cold[: len(small.encode(
        text[:30]))]
    assert len(small._cache) <= 10 + len(small._tokens_as_text)  # the tokens, then <= 10


def test_a_cache_limit_below_the_vocabulary_still_remembers_chunks(tok, monkeypatch):
    """CACHE_SIZE counts the chunks remembered besides the tokens the cache starts with, so a
    vocabulary larger than it does not empty the cache at every new chunk."""
    monkeypatch.setattr(tk, "CACHE_SIZE", 10)
    fresh = BPETokenizer(tok.merges, tok.special_tokens)
    assert len(fresh._tokens_as_text) > 10
    new = [c for c in dict.fromkeys(tk.pretokenize("Zyxw qvvq jjkk Ppqq xxzz"))
           if c not in fresh._tokens_as_text]
    fresh.encode_ordinary("Zyxw qvvq jjkk Ppqq xxzz")
    assert new and all(c in fresh._cache for c in new)


def test_lone_surrogate_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("abc\ud800def")
    with pytest.raises(ValueError, match="lone surrogate"):
        tk.train_merges("abc\udfff", 5)


def test_ids_out_of_range_are_a_clear_error(tok):
    for bad in ([tok.vocab_size], [-1], [1, 2, 10**9], ["a"], [None]):
        with pytest.raises(ValueError, match="not in the vocabulary"):
            tok.decode(bad)
    assert tok.decode([]) == ""
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # half a character: replaced, not an error
    with pytest.raises(TypeError, match="needs a str"):
        tok.encode(b"bytes")


def test_special_tokens_only_when_allowed(tok):
    eot = tok.special_tokens[ENDOFTEXT]
    text = f"Hello{ENDOFTEXT} world"
    with pytest.raises(ValueError, match="not allowed"):
        tok.encode(text)
    for allowed in ("all", {ENDOFTEXT}, [ENDOFTEXT], ENDOFTEXT):  # a lone str: that one token
        ids = tok.encode(text, allowed_special=allowed)
        assert ids == tok.encode("Hello") + [eot] + tok.encode(" world")
        assert tok.decode(ids) == text
    ordinary = tok.encode_ordinary(text)
    assert eot not in ordinary and tok.decode(ordinary) == text
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|im_start|>"})
    assert tok.encode(ENDOFTEXT * 3, allowed_special="all") == [eot] * 3


def test_overlapping_special_tokens_prefer_the_longest():
    t = BPETokenizer([], ["<|a|>", "<|a|><|b|>"])
    assert t.encode("x<|a|><|b|>", allowed_special="all") == [120, 257]
    assert t.encode("<|a|>x", allowed_special={"<|a|>"}) == [256, 120]
    with pytest.raises(ValueError, match="not allowed"):
        t.encode("<|a|><|b|>", allowed_special={"<|a|>"})


# -- save and load --------------------------------------------------------------------------


def test_save_load_round_trip(tok, tmp_path, small_corpus):
    path = tmp_path / "tok.json"
    tok.save(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == tk.FORMAT
    assert doc["merges"][0] == [*tok.merges[0], tok.vocab[256].decode()]
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(tok.merges) + 8
    back = BPETokenizer.load(path)
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(small_corpus[:3000]) == tok.encode(small_corpus[:3000])
    assert os.listdir(tmp_path) == ["tok.json"]  # no temporary file left behind


def _corrupt_variants(doc: dict, text: str):
    yield "truncated", text[: len(text) // 2]
    yield "empty", ""
    yield "not json", "merges: 1 2\n"
    yield "a list", "[]"
    yield "other format", json.dumps({**doc, "format": "something"})
    yield "future version", json.dumps({**doc, "version": 99})
    yield "no merges", json.dumps({k: v for k, v in doc.items() if k != "merges"})
    yield "merge to the future", json.dumps({**doc, "merges": [[97, 300, "a?"]] + doc["merges"]})
    yield "merge of floats", json.dumps({**doc, "merges": [[97.0, 98, "ab"]]})
    yield "merge without text", json.dumps({**doc, "merges": [[97, 98]]})
    yield "text that disagrees", json.dumps({**doc, "merges": [[97, 98, "ba"]]})
    yield "bad special id", json.dumps({**doc, "special_tokens": {ENDOFTEXT: 5}})
    yield "specials not a dict", json.dumps({**doc, "special_tokens": [ENDOFTEXT]})
    yield "bad pattern", json.dumps({**doc, "pattern": "(unclosed"})


def test_corrupt_files_are_clear_errors(tok, tmp_path):
    good = tmp_path / "good.json"
    tok.save(good)
    text = good.read_text(encoding="utf-8")
    for name, content in _corrupt_variants(json.loads(text), text):
        bad = tmp_path / "bad.json"
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match="bad.json") as e:
            BPETokenizer.load(bad)
        assert "tokenizer" in str(e.value) or "format" in str(e.value), name
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.load(tmp_path / "bin.json")


# -- the industry tokenizers, built offline from our merges -------------------------------------


def test_bytes_to_unicode_is_gpt2s_map():
    b2u = tk.bytes_to_unicode()
    assert len(set(b2u.values())) == 256 and sorted(b2u) == list(range(256))
    assert b2u[ord(" ")] == "Ġ" and b2u[ord("\n")] == "Ċ" and b2u[ord("A")] == "A"
    assert all(c.isprintable() and not c.isspace() for c in b2u.values())


def test_tiktoken_and_hf_give_our_ids_on_the_whole_corpus(corpus, big_tok, tmp_path):
    from tokenizers import Tokenizer

    ours = big_tok.encode(corpus)
    enc = big_tok.to_tiktoken()
    assert enc.encode(corpus) == ours
    assert enc.n_vocab == big_tok.vocab_size and enc.eot_token == big_tok.special_tokens[ENDOFTEXT]
    hf = big_tok.to_hf_tokenizer()
    assert hf.encode(corpus).ids == ours
    assert hf.get_vocab_size() == big_tok.vocab_size
    # tokenizer.json, written and read back, gives the same ids and decodes to the text
    hf.save(str(tmp_path / "tokenizer.json"))
    hf2 = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    part = corpus[:50_000]
    assert hf2.encode(part).ids == big_tok.encode(part)
    assert hf2.decode(big_tok.encode(part)) == part == enc.decode(big_tok.encode(part))


def test_tiktoken_and_hf_agree_on_special_tokens_and_multibyte_text(tok, small_corpus):
    text = small_corpus[-3000:] + ENDOFTEXT + "".join(HARD_PIECES) + ENDOFTEXT + "end"
    ours = tok.encode(text, allowed_special="all")
    assert tok.to_tiktoken().encode(text, allowed_special="all") == ours
    assert tok.to_hf_tokenizer().encode(text).ids == ours


# Characters assigned in Python's Unicode database. On unassigned code points the three regex
# engines (Python `regex`, tiktoken's Rust `fancy-regex`, HF's Oniguruma) can disagree about
# what is a letter, so the chunks, and then the ids, may differ there.
assigned = st.characters(exclude_categories=["Cn", "Cs"])
assigned_text = st.lists(st.one_of(st.sampled_from(HARD_PIECES), st.text(assigned)), max_size=12)


@pytest.fixture(scope="module")
def exports(tok):
    return tok.to_tiktoken(), tok.to_hf_tokenizer()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assigned_text.map("".join))
def test_tiktoken_and_hf_give_our_ids_on_any_assigned_text(tok, exports, text):
    ours = tok.encode(text, allowed_special="all")
    assert exports[0].encode(text, allowed_special="all") == ours
    assert exports[1].encode(text).ids == ours


def test_exports_refuse_duplicate_tokens():
    # "abc" made twice: as ("ab", "c") and as ("a", "bc"). tiktoken and HF key tokens by bytes.
    dup = BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])
    assert dup.vocab[257] == dup.vocab[259] == b"abc"
    with pytest.raises(ValueError, match="same bytes"):
        dup.to_tiktoken()
    with pytest.raises(ValueError, match="same bytes"):
        dup.to_hf_tokenizer()


# -- the command line ------------------------------------------------------------------------


def test_command_line_trains_on_the_training_text_by_default(tmp_path, capsys, monkeypatch,
                                                              small_corpus):
    """Without --text, the book's corpus minus its validation 10%, as chapter "Training" does."""
    from buildllm import cli, data

    monkeypatch.setattr(data, "load_text", lambda: small_corpus[:20_000])
    out = tmp_path / "tok.json"
    assert cli.main(["tokenizer", "train", str(out), "--vocab-size", "300"]) == 0
    train_text, val_text = data.train_val_split(small_corpus[:20_000])
    assert BPETokenizer.load(out).merges == tk.train_bpe(train_text, 300).merges
    assert BPETokenizer.load(out).merges != tk.train_bpe(train_text + val_text, 300).merges


def test_command_line_train_encode_decode(tmp_path, capsys, small_corpus):
    from buildllm import cli

    text_file = tmp_path / "text.txt"
    text_file.write_text(small_corpus[:20_000], encoding="utf-8")
    out = tmp_path / "tok.json"
    assert cli.main(["tokenizer", "train", str(out), "--vocab-size", "300",
                     "--text", str(text_file)]) == 0
    assert "300 tokens" in capsys.readouterr().out
    tok = BPETokenizer.load(out)
    assert tok.merges == tk.train_bpe(small_corpus[:20_000], 300).merges
    line = "To be, or not to be"
    assert cli.main(["tokenizer", "encode", str(out), line]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert ids == tok.encode(line)
    assert cli.main(["tokenizer", "decode", str(out), *map(str, ids)]) == 0
    assert capsys.readouterr().out == line
    # errors: a clear message and exit status 2, no traceback
    assert cli.main(["tokenizer", "encode", str(out), f"a{ENDOFTEXT}"]) == 2
    assert "--allow-special" in capsys.readouterr().err
    assert cli.main(["tokenizer", "encode", str(out), f"a{ENDOFTEXT}", "--allow-special"]) == 0
    assert capsys.readouterr().out.split()[-1] == str(tok.special_tokens[ENDOFTEXT])
    assert cli.main(["tokenizer", "decode", str(out), "99999"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["tokenizer", "--help"])
    assert "train" in capsys.readouterr().out


def test_save_into_a_missing_folder_names_the_folder(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="the folder .*nodir does not exist"):
        tok.save(tmp_path / "nodir" / "t.json")
    assert not (tmp_path / "nodir").exists()
