"""Tests of buildllm.finetune: padding, the classifier, the three methods, the masked loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from buildllm import finetune as ft
from buildllm.lora import lora_layers, trainable_parameters
from buildllm.model import GPT, GPTConfig
from buildllm.plays import Play, Speech
from buildllm.tokenizer import train_bpe

CONFIG = GPTConfig(vocab_size=260, block_size=64, n_layer=2, n_head=2, n_embd=16)


def gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def classifier(seed: int = 0) -> ft.GPTClassifier:
    model = ft.GPTClassifier(gpt(seed), 3)
    torch.nn.init.normal_(model.head.weight)
    return model.eval()


@pytest.fixture(scope="module")
def tok():
    return train_bpe("Who speaks this line? Answer: ROMEO, JULIET. " * 4, 260)


def test_pad_right_and_left():
    ids, last = ft.pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and last.tolist() == [2, 0]
    ids, last = ft.pad([[1, 2, 3], [4]], pad_id=9, side="left")
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]] and last.tolist() == [2, 2]
    with pytest.raises(ValueError, match="'middle'"):
        ft.pad([[1]], side="middle")
    with pytest.raises(ValueError, match="no empty"):
        ft.pad([[1], []])


def test_padding_on_the_right_does_not_change_a_prediction():
    model = classifier()
    short, long = [5, 6, 7, 8], list(range(20, 50))
    alone = model(*ft.pad([short]))
    for pad_id in (0, 259):
        batch = model(*ft.pad([long, short, long[:9]], pad_id))
        torch.testing.assert_close(batch[1], alone[0], atol=1e-6, rtol=1e-5)
    assert torch.equal(ft.predict(model, [short]), ft.predict(model, [long, short])[1:])


def test_padding_on_the_left_without_a_mask_would_change_it():
    model, short = classifier(), [5, 6, 7, 8]
    alone = model(*ft.pad([short]))
    left = model(*ft.pad([list(range(20, 50)), short], side="left"))
    assert not torch.allclose(left[1], alone[0], atol=1e-3)


def test_encode_all_cuts_and_ends_with_the_end_token(tok):
    ids = ft.encode_all(tok, ["ROMEO, JULIET. " * 20, "ROMEO"], max_tokens=8, end_id=259)
    assert len(ids[0]) == 8 and ids[0][-1] == 259 and ids[1][-1] == 259
    assert ft.encode_all(tok, ["ROMEO"], max_tokens=8)[0] == tok.encode("ROMEO")
    with pytest.raises(ValueError, match="max_tokens=1"):
        ft.encode_all(tok, ["a"], max_tokens=1, end_id=259)


@pytest.mark.parametrize("method", ft.METHODS)
def test_prepare_chooses_what_trains(method):
    model = ft.prepare(classifier(), method, r=2, alpha=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {"head.weight", "head.bias"}
    if method == "head":
        assert trainable == head
    elif method == "full":
        assert trainable == {n for n, _ in model.named_parameters()}
    else:
        assert trainable == head | {n for n in trainable if ".lora_" in n}
        assert len(lora_layers(model)) == 4 * CONFIG.n_layer
    with pytest.raises(ValueError, match="'adapters'"):
        ft.prepare(classifier(), "adapters")


@pytest.mark.parametrize("method", ft.METHODS)
def test_training_learns_a_toy_task(method):
    """The class is the last real token, which only the right index finds in a padded batch."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (96,), generator=g)
    ids = [torch.randint(10, 200, (int(n),), generator=g).tolist() + [int(y) + 1]
           for y, n in zip(labels, torch.randint(3, 12, (96,), generator=g))]
    model = ft.prepare(classifier(), method, r=4, alpha=8)
    before = trainable_parameters(model)
    log = ft.train_classifier(model, ids, labels, steps=60, lr=1e-2, batch_size=16)
    assert log["steps"] == 60 and log["cpu_seconds"] > 0
    assert sum(log["losses"][-5:]) < sum(log["losses"][:5])
    assert trainable_parameters(model) == before
    assert ft.accuracy(ft.predict(model, ids), labels)["acc"] > 0.5


def test_a_time_budget_stops_training():
    model = ft.prepare(classifier(), "head")
    log = ft.train_classifier(model, [[1, 2]] * 8, torch.zeros(8, dtype=torch.long),
                              steps=10_000, max_seconds=0.0, batch_size=4)
    assert log["steps"] <= 1


def test_wilson_interval():
    lo, hi = ft.wilson(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    assert ft.wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and ft.wilson(10, 10)[1] == 1.0
    acc = ft.accuracy(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]))
    assert acc["acc"] == 0.75 and acc["lo"] < 0.75 < acc["hi"] and acc["n"] == 4
    with pytest.raises(ValueError, match="k=5, n=4"):
        ft.wilson(5, 4)


def test_baselines_on_separable_words():
    texts = ["the king rides to war", "a jest and a song", "the crown of england",
             "sing a merry song"] * 5
    labels = torch.tensor([1, 0, 1, 0] * 5)
    vocab = ft.word_vocab(texts, size=50)
    x = ft.bag_of_words(texts, vocab)
    assert x.shape == (20, len(vocab)) and x[0, vocab["king"]] == pytest.approx(0.6931, abs=1e-4)
    layer = ft.fit_linear(x, labels, 2)
    assert torch.equal(layer(x).argmax(-1), labels)
    assert ft.majority(torch.tensor([2, 2, 1]), 4).tolist() == [2, 2, 2, 2]
    assert ft.words("O'er the moon, 'tis") == ["o'er", "the", "moon", "'tis"]


def fake_plays() -> list[Play]:
    out = []
    for name, genre in [("a", "comedies"), ("b", "histories"), ("c", "tragedies"),
                        ("d", "roman"), ("e", "romances")]:
        speeches = [Speech(name, genre, who, (f"{name} line {i}.", "Another line."), i // 4)
                    for i, who in enumerate(["ROMEO", "JULIET", "ROMEO", "NURSE"] * 4)]
        out.append(Play(name, genre, name.upper(), speeches))
    return out


def test_genre_examples_are_balanced_and_skip_other_genres():
    genre_of = {"a": "comedy", "b": "history", "c": "tragedy", "d": "tragedy"}
    texts, labels = ft.genre_examples(fake_plays(), per_class=3, max_chars=40, genre_of=genre_of)
    assert labels.bincount().tolist() == [3, 3, 3]
    assert not any(t.startswith("e line") for t in texts)  # a play of none of the three
    with pytest.raises(ValueError, match="too few passages"):
        ft.genre_examples(fake_plays(), per_class=1000, genre_of=genre_of)
    assert len(ft.GENRE_OF) == 36 and set(ft.GENRE_OF.values()) == set(ft.CLASSES)
    assert {ft.GENRE_OF[p] for p in ft.TEST_PLAYS} == set(ft.CLASSES)


def test_speaker_questions_are_answerable_from_the_scene():
    pairs = ft.speaker_questions(fake_plays(), n=1000, context_chars=60)
    assert pairs
    for prompt, answer in pairs:
        assert prompt.endswith("\nAnswer:\n") and ft.SPEAKER_QUESTION in prompt
        assert answer == answer.strip() + "\n"
        assert f"\n{answer.strip()}:\n" in "\n" + prompt  # the speaker is among those shown
        assert len(prompt.split(ft.SPEAKER_QUESTION)[0]) <= 60 + 2
    prompt = ft.speaker_prompt([Speech("a", "comedies", "ROMEO", ("Hi.",))], "Hello.")
    assert prompt == "ROMEO:\nHi.\n\nWho speaks this line?\nHello.\nAnswer:\n"


def test_the_loss_is_masked_on_the_prompt(tok):
    prompt, answer = "Who speaks this line?\nAnswer:", " ROMEO\n"
    x, y = ft.instruction_example(tok, prompt, answer)
    p, a = tok.encode(prompt), tok.encode(answer)
    assert x == (p + a)[:-1] and y == [-1] * (len(p) - 1) + a
    model, (xb, yb) = gpt(), ft.pad_pairs([(x, y)])
    logits, loss = model(xb, yb)
    answer_only = F.cross_entropy(logits[0, len(p) - 1:], torch.tensor(a))
    torch.testing.assert_close(loss, answer_only)
    # A prompt token's target does not count: changing it leaves the loss as it was.
    full = torch.tensor(p + a)[1:][None]
    changed = full.clone()
    changed[0, 3] = (changed[0, 3] + 1) % 260
    mask = torch.arange(full.size(1)) < len(p) - 1
    for targets in (full, changed):
        assert torch.equal(model(xb, targets.masked_fill(mask, -1))[1], loss)
    assert not torch.equal(model(xb, full)[1], loss)  # without the mask it would


def test_pad_pairs_pads_targets_with_minus_one(tok):
    pairs = [ft.instruction_example(tok, "Who speaks", " ROMEO\n"),
             ft.instruction_example(tok, "Answer:", " JULIET")]
    x, y = ft.pad_pairs(pairs, pad_id=7)
    n = len(pairs[1][0])
    assert (x[1, n:] == 7).all() and (y[1, n:] == -1).all()


def test_answer_logprob_and_greedy_answer(tok):
    model = gpt()
    pair = ft.instruction_example(tok, "Who speaks this line?\nAnswer:", " ROMEO\n")
    logp = ft.answer_logprob(model, [pair, pair])
    _, loss = model(*ft.pad_pairs([pair]))
    n_answer = sum(t >= 0 for t in pair[1])
    torch.testing.assert_close(logp, torch.stack([-loss * n_answer] * 2))
    answer = ft.greedy_answer(model, tok, "Who speaks this line?\nAnswer:", max_tokens=4)
    assert isinstance(answer, str) and "\n" not in answer


def test_instruction_tuning_learns_a_fixed_answer(tok):
    pairs = [ft.instruction_example(tok, f"Who speaks this line? {i}\nAnswer:", " ROMEO\n")
             for i in range(8)]
    model = gpt()
    before = ft.answer_logprob(model, pairs).mean()
    log = ft.train_lm(model, pairs, steps=40, lr=3e-2, batch_size=4)
    assert log["steps"] == 40
    assert ft.answer_logprob(model, pairs).mean() > before + 1
    assert ft.greedy_answer(model, tok, "Who speaks this line? 9\nAnswer:") == "ROMEO"
