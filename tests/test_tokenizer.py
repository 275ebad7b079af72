"""buildllm.tokenizer: the character baseline and byte-level BPE behind one interface: training
(train_bpe), encode/decode round trips on any Unicode text, special tokens, the characters each
id covers, the fingerprint, and the JSON file (save, load_tokenizer) with clear errors for
every kind of damage."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildllm.bpe import ENDOFTEXT, GPT2_SPLIT_PATTERN, encode_chunk, pretokenize
from buildllm.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
    train_bpe,
)
from shared import HARD_PIECES

hard_text = st.lists(
    st.one_of(st.sampled_from(HARD_PIECES), st.text(max_size=8)), max_size=12
).map("".join)
any_text = st.one_of(st.text(), hard_text)  # st.text() never draws lone surrogates

BPE = train_bpe("héllo wörld, hello world! ünïcode " * 20, 300)


# -- the character baseline ----------------------------------------------------------------------


def test_char_tokenizer_round_trip_and_errors(corpus):
    ct = CharTokenizer(corpus)
    assert ct.vocab_size == len(set(corpus))
    ids = ct.encode(corpus[:5000])
    assert ct.decode(ids) == corpus[:5000]
    assert all(0 <= i < ct.vocab_size for i in ids)
    assert ct.chars == sorted(ct.chars)
    assert CharTokenizer("abc").chars == CharTokenizer("cab").chars
    with pytest.raises(ValueError, match="'é' was not in the text"):
        ct.encode("café")
    for bad in ([ct.vocab_size], [-1], ["a"], [None], [1.0]):
        with pytest.raises(ValueError, match="not in the vocabulary"):
            ct.decode(bad)
    assert ct.decode(np.array(ids[:50])) == ct.decode(torch.tensor(ids[:50])) == corpus[:50]
    with pytest.raises(ValueError, match="non-empty str"):
        CharTokenizer("")
    with pytest.raises(TypeError, match="learns its characters from a str, got list"):
        CharTokenizer(["a", "b"])


def test_char_tokenizer_covers_one_character_per_id():
    ct = CharTokenizer("hello\n")
    assert ct.token_chars() == [1] * ct.vocab_size == [1] * 5
    assert ct.kind == "char" and isinstance(ct, Tokenizer)


# -- training BPE ---------------------------------------------------------------------------------


def test_train_vocab_size_and_special_tokens(small_corpus, tok):
    assert tok.vocab_size == 700 and len(tok.vocab) == 700
    assert tok.special_tokens == {ENDOFTEXT: 699}
    assert len(tok.merges) == 700 - 256 - 1
    assert tok.kind == "bpe" and tok.pattern == GPT2_SPLIT_PATTERN and isinstance(tok, Tokenizer)
    plain = train_bpe(small_corpus[:5000], 300, special_tokens=())
    assert plain.vocab_size == 300 and plain.special_tokens == {}
    naive = train_bpe(small_corpus[:5000], 300, special_tokens=(), naive=True)
    assert naive.merges == plain.merges
    two = train_bpe(small_corpus[:5000], 300, special_tokens=("<|a|>", "<|b|>"))
    assert two.special_tokens == {"<|a|>": 298, "<|b|>": 299} and two.merges == plain.merges[:42]
    tiny = train_bpe("aaab", 1000)  # a tiny text runs out of pairs: fewer merges, no error
    assert len(tiny.merges) == 3 and tiny.vocab_size == 256 + 3 + 1
    assert tiny.encode("aaab") == [258]


@pytest.mark.parametrize("vocab_size", [256, 100, 300.0, True, "300"])
def test_train_bpe_needs_room_for_the_bytes_and_the_specials(vocab_size):
    with pytest.raises(ValueError, match="vocab_size must be an int of at least 256 \\+ 1"):
        train_bpe("hello", vocab_size)  # 256 has no room for <|endoftext|>
    assert train_bpe("hello", 256, special_tokens=()).vocab_size == 256  # the bytes alone


def test_bpe_tokenizer_checks_its_merges_and_specials():
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer([], [ENDOFTEXT, ENDOFTEXT])
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer([], [""])
    with pytest.raises(ValueError, match=r"merge 0 is \(97, 256\), but only ids below 256"):
        BPETokenizer([(97, 256)])
    t = BPETokenizer([(104, 105), (256, 33)], ["<|x|>"], r"\S+|\s+")  # "hi", then "hi!"
    assert t.vocab[256] == b"hi" and t.vocab[257] == b"hi!" and t.vocab[258] == b"<|x|>"
    assert t.encode("hi! hi") == [257, 32, 256]  # cut at spaces only: "hi!" is one chunk
    assert t.ranks == {(104, 105): 256, (256, 33): 257}
    assert BPETokenizer(t.merges).encode("hi! hi") == [256, 33, 32, 256]  # GPT-2's cut


# -- encode and decode ------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_text)
def test_round_trip_any_unicode(tok, text):
    ids = tok.encode_ordinary(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size - 1 for i in ids)  # never the special token's id
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_the_corpus_round_trips_and_compresses(corpus, big_tok):
    ids = big_tok.encode(corpus)
    assert big_tok.decode(ids) == corpus
    assert len(ids) < len(corpus) / 3  # a 4096-token vocabulary compresses Shakespeare > 3x


def test_encode_applies_the_merges_chunk_by_chunk(tok):
    text = "Ångström's 日本語 ½ naïve\u00a0x, and plain ASCII"
    ids = tok.encode(text)
    assert ids == [i for c in pretokenize(text) for i in encode_chunk(c.encode(), tok.ranks)]
    assert len(ids) < len(text.encode())


def test_lone_surrogate_is_a_clear_error(tok):
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("abc\ud800def")


def test_ids_out_of_range_are_a_clear_error(tok):
    for bad in ([tok.vocab_size], [-1], [1, 2, 10**9], ["a"], [None], [1.5]):
        with pytest.raises(ValueError, match="not in the vocabulary"):
            tok.decode(bad)
    assert tok.decode([]) == ""
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # half a character: replaced, not an error
    ids = tok.encode("hello")
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == "hello"
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


# -- what each id covers, and the fingerprint -------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_token_chars_sum_to_the_characters(text):
    """Summed over any encoded text, token_chars counts its characters, even where a character's
    bytes are split across tokens."""
    counts = torch.tensor(BPE.token_chars())
    assert counts.shape == (BPE.vocab_size,)
    assert int(counts[BPE.encode(text)].sum()) == len(text)


def test_token_chars_and_token_text_by_hand():
    t = BPETokenizer([(0xC3, 0xA9), (104, 256)], [ENDOFTEXT])  # "é", then "hé"
    chars = t.token_chars()
    assert chars[ord("a")] == 1 and chars[0xC3] == 1 and chars[0xA9] == 0  # a continuation byte
    assert chars[256] == 1 and chars[257] == 2 and chars[258] == len(ENDOFTEXT)
    assert t.token_text(257) == "hé" and t.token_text(0xC3) == "\\xc3"


def test_fingerprint_changes_exactly_when_encoding_would(tok):
    same = BPETokenizer(tok.merges, tok.special_tokens)
    assert same.fingerprint() == tok.fingerprint() and len(tok.fingerprint()) == 16
    others = [BPETokenizer(tok.merges[:-1], tok.special_tokens),
              BPETokenizer(tok.merges, ["<|other|>"]),
              BPETokenizer(tok.merges, tok.special_tokens, r"\S+|\s+")]
    prints = {t.fingerprint() for t in [tok, *others]}
    assert len(prints) == 4
    assert CharTokenizer("abc").fingerprint() == CharTokenizer("cba").fingerprint()
    assert CharTokenizer("abc").fingerprint() != CharTokenizer("abd").fingerprint()


# -- save and load --------------------------------------------------------------------------


def test_save_load_round_trip(tok, tmp_path, small_corpus):
    path = tmp_path / "tok.json"
    tok.save(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc == tok.to_dict() and doc["format"] == "buildllm-bpe"
    assert doc["merges"][0] == [*tok.merges[0], tok.vocab[256].decode()]
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(tok.merges) + 8  # readable
    back = load_tokenizer(path)
    assert isinstance(back, BPETokenizer)
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(small_corpus[:3000]) == tok.encode(small_corpus[:3000])
    assert back.fingerprint() == tok.fingerprint()
    assert os.listdir(tmp_path) == ["tok.json"]  # no temporary file left behind


def test_char_tokenizer_save_load_round_trip(tmp_path):
    ct = CharTokenizer("To be, or not to be\n")
    ct.save(tmp_path / "chars.json")
    back = load_tokenizer(tmp_path / "chars.json")
    assert isinstance(back, CharTokenizer) and back.chars == ct.chars
    assert tokenizer_from_dict(ct.to_dict()).chars == ct.chars
    # a file written before formats had versions (checkpoints of buildllm 0.1) still loads
    old = {"format": "buildllm-char", "chars": ct.chars}
    assert tokenizer_from_dict(old).encode("be") == ct.encode("be")


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
    yield "no pattern", json.dumps({k: v for k, v in doc.items() if k != "pattern"})
    yield "chars not a list", json.dumps({"format": "buildllm-char", "chars": "ab"})
    yield "no chars", json.dumps({"format": "buildllm-char", "version": 1, "chars": []})


def test_corrupt_files_are_clear_errors(tok, tmp_path):
    good = tmp_path / "good.json"
    tok.save(good)
    text = good.read_text(encoding="utf-8")
    for name, content in _corrupt_variants(json.loads(text), text):
        bad = tmp_path / "bad.json"
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match="bad.json is not a readable tokenizer file") as e:
            load_tokenizer(bad)
        assert "save the tokenizer again" in str(e.value), name
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="bin.json is not a readable tokenizer file"):
        load_tokenizer(tmp_path / "bin.json")
    with pytest.raises(ValueError, match="missing.json is not a readable tokenizer file"):
        load_tokenizer(tmp_path / "missing.json")


def test_save_into_a_missing_folder_names_the_folder(tmp_path, tok):
    for t in (tok, CharTokenizer("abc")):
        with pytest.raises(FileNotFoundError, match="the folder .*nodir does not exist"):
            t.save(tmp_path / "nodir" / "t.json")
    assert not (tmp_path / "nodir").exists()
