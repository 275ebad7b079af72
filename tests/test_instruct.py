"""Tests of buildllm.instruct: the questions, the loss masked on the prompt, the answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from buildllm import instruct
from buildllm.model import GPT, GPTConfig
from buildllm.plays import Speech
from buildllm.tokenizer import train_bpe
from shared import fake_plays

CONFIG = GPTConfig(vocab_size=260, block_size=64, n_layer=2, n_head=2, n_embd=16)


def gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


@pytest.fixture(scope="module")
def tok():
    return train_bpe("Who speaks this line? Answer: ROMEO, JULIET. " * 4, 260)


def test_speaker_questions_are_answerable_from_the_scene():
    pairs = instruct.speaker_questions(fake_plays(), n=1000, context_chars=60)
    assert pairs
    for prompt, answer in pairs:
        assert prompt.endswith("\nAnswer:\n") and instruct.SPEAKER_QUESTION in prompt
        assert answer == answer.strip() + "\n"
        assert f"\n{answer.strip()}:\n" in "\n" + prompt  # the speaker is among those shown
        assert len(prompt.split(instruct.SPEAKER_QUESTION)[0]) <= 60 + 2
    prompt = instruct.speaker_prompt([Speech("a", "comedies", "ROMEO", ("Hi.",))], "Hello.")
    assert prompt == "ROMEO:\nHi.\n\nWho speaks this line?\nHello.\nAnswer:\n"


def test_the_loss_is_masked_on_the_prompt(tok):
    prompt, answer = "Who speaks this line?\nAnswer:", " ROMEO\n"
    x, y = instruct.instruction_example(tok, prompt, answer)
    p, a = tok.encode(prompt), tok.encode(answer)
    assert x == (p + a)[:-1] and y == [-1] * (len(p) - 1) + a
    model, (xb, yb) = gpt(), instruct.pad_pairs([(x, y)])
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
    pairs = [instruct.instruction_example(tok, "Who speaks", " ROMEO\n"),
             instruct.instruction_example(tok, "Answer:", " JULIET")]
    x, y = instruct.pad_pairs(pairs, pad_id=7)
    n = len(pairs[1][0])
    assert (x[1, n:] == 7).all() and (y[1, n:] == -1).all()


def test_answer_logprob_and_greedy_answer(tok):
    model = gpt()
    pair = instruct.instruction_example(tok, "Who speaks this line?\nAnswer:", " ROMEO\n")
    logp = instruct.answer_logprob(model, [pair, pair])
    _, loss = model(*instruct.pad_pairs([pair]))
    n_answer = sum(t >= 0 for t in pair[1])
    torch.testing.assert_close(logp, torch.stack([-loss * n_answer] * 2))
    answer = instruct.greedy_answer(model, tok, "Who speaks this line?\nAnswer:", max_tokens=4)
    assert isinstance(answer, str) and "\n" not in answer


def test_instruction_tuning_learns_a_fixed_answer(tok):
    pairs = [instruct.instruction_example(tok, f"Who speaks this line? {i}\nAnswer:", " ROMEO\n")
             for i in range(8)]
    model = gpt()
    before = instruct.answer_logprob(model, pairs).mean()
    log = instruct.train_lm(model, pairs, steps=40, lr=3e-2, batch_size=4)
    assert log["steps"] == 40
    assert instruct.answer_logprob(model, pairs).mean() > before + 1
    assert instruct.greedy_answer(model, tok, "Who speaks this line? 9\nAnswer:") == "ROMEO"
