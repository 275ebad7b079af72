"""buildllm.tokenizer_export: our BPE tokenizer as a tiktoken Encoding and as a Hugging Face
tokenizer, built offline from our own merges; both give exactly our ids (on the whole corpus, on
special tokens and multibyte text, on any assigned Unicode text) and decode to the text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from buildllm.bpe import ENDOFTEXT
from buildllm.tokenizer import BPETokenizer
from buildllm.tokenizer_export import bytes_to_unicode, ranks_by_bytes, to_hf_tokenizer, to_tiktoken
from shared import HARD_PIECES


def test_bytes_to_unicode_is_gpt2s_map():
    b2u = bytes_to_unicode()
    assert len(set(b2u.values())) == 256 and sorted(b2u) == list(range(256))
    assert b2u[ord(" ")] == "Ġ" and b2u[ord("\n")] == "Ċ" and b2u[ord("A")] == "A"
    assert all(c.isprintable() and not c.isspace() for c in b2u.values())
    moved = [b for b in range(256) if b2u[b] != chr(b)]
    assert len(moved) == 68 and [b2u[b] for b in moved] == [chr(256 + n) for n in range(68)]


def test_ranks_by_bytes_maps_each_token_to_its_id(tok):
    ranks = ranks_by_bytes(tok)
    assert len(ranks) == 256 + len(tok.merges)  # the special tokens are not mergeable ranks
    assert all(ranks[tok.vocab[i]] == i for i in range(256 + len(tok.merges)))


def test_tiktoken_and_hf_give_our_ids_on_the_whole_corpus(corpus, big_tok, tmp_path):
    ours = big_tok.encode(corpus)
    enc = to_tiktoken(big_tok)
    assert enc.encode(corpus) == ours
    assert enc.n_vocab == big_tok.vocab_size and enc.eot_token == big_tok.special_tokens[ENDOFTEXT]
    assert enc.name == "buildllm" and to_tiktoken(big_tok, name="mine").name == "mine"
    hf = to_hf_tokenizer(big_tok)
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
    assert to_tiktoken(tok).encode(text, allowed_special="all") == ours
    assert to_hf_tokenizer(tok).encode(text).ids == ours


# Characters assigned in Python's Unicode database. On unassigned code points the three regex
# engines (Python `regex`, tiktoken's Rust `fancy-regex`, HF's Oniguruma) can disagree about
# what is a letter, so the chunks, and then the ids, may differ there.
assigned = st.characters(exclude_categories=["Cn", "Cs"])
assigned_text = st.lists(st.one_of(st.sampled_from(HARD_PIECES), st.text(assigned)), max_size=12)


@pytest.fixture(scope="module")
def exports(tok):
    return to_tiktoken(tok), to_hf_tokenizer(tok)


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
    for export in (ranks_by_bytes, to_tiktoken, to_hf_tokenizer):
        with pytest.raises(ValueError, match="same bytes"):
            export(dup)


def test_hf_export_needs_gpt2s_pattern(tok):
    other = BPETokenizer(tok.merges, tok.special_tokens, r"\S+|\s+")
    with pytest.raises(ValueError, match="supports only GPT2_SPLIT_PATTERN"):
        to_hf_tokenizer(other)
    text = "the cat  sat,\n\nthe end"
    assert to_tiktoken(other).encode(text) == other.encode(text)  # tiktoken takes any pattern
