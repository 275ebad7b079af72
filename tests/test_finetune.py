"""Tests of buildllm.finetune: padding, the classifier, the three methods, the genre task."""

from __future__ import annotations

import pytest
import torch

from buildllm import finetune as ft
from buildllm.lora import lora_layers, trainable_parameters
from buildllm.model import GPT, GPTConfig
from buildllm.tokenizer import train_bpe
from shared import fake_plays

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
    with pytest.raises(AssertionError, match="none empty"):
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
    with pytest.raises(ValueError, match="'adapters'"):  # checked where a run starts
        ft.check_finetune_settings("adapters", 200, 1e-3, 8, 16)


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
    with pytest.raises(AssertionError, match="k=5, n=4"):
        ft.wilson(5, 4)


def test_genre_examples_are_balanced_and_skip_other_genres():
    genre_of = {"a": "comedy", "b": "history", "c": "tragedy", "d": "tragedy"}
    texts, labels = ft.genre_examples(fake_plays(), per_class=3, max_chars=40, genre_of=genre_of)
    assert labels.bincount().tolist() == [3, 3, 3]
    assert not any(t.startswith("e line") for t in texts)  # a play of none of the three
    with pytest.raises(ValueError, match="too few passages"):
        ft.genre_examples(fake_plays(), per_class=1000, genre_of=genre_of)
    assert len(ft.GENRE_OF) == 36 and set(ft.GENRE_OF.values()) == set(ft.CLASSES)
    assert {ft.GENRE_OF[p] for p in ft.TEST_PLAYS} == set(ft.CLASSES)




def test_finetune_classifier_takes_the_methods_learning_rate_and_counts_what_trains():
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(10, 200, (5,), generator=g).tolist() + [259] for _ in range(12)]
    task = ft.GenreTask(ids, torch.arange(12) % 3, ids[:6], torch.arange(6) % 3, 259)
    clf, result = ft.finetune_classifier(gpt(), task, "lora", steps=2)
    assert result["trainable"] == trainable_parameters(clf) and result["steps"] == 2
    assert ft.LEARNING_RATES["lora"] > ft.LEARNING_RATES["full"]


def test_batches_of_fewer_examples_than_a_batch_hold_them_all():
    g = torch.Generator().manual_seed(0)
    first = [b.tolist() for _, b in zip(range(3), ft.batches(5, 32, g))]
    assert all(sorted(b) == [0, 1, 2, 3, 4] for b in first)  # every epoch, all five
