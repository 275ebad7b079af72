"""Learning from a reward (buildllm.align): the losses against formulas and loops written here,
log-probabilities of completions against one sequence at a time, best-of-N against the reward,
and short training runs of DPO and GRPO on a tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from buildllm import align, evaluate, verse
from buildllm.lora import LoRALinear
from buildllm.tokenizer import CharTokenizer
from buildllm.train import NonFiniteLossError
from shared import randomize, small_model

ALPHABET = "abo de\n"  # a random model over 7 characters ends a line often


@pytest.fixture
def tiny():
    """A random GPT over :data:`ALPHABET` with a context of 32, and its tokenizer."""
    tokenizer = CharTokenizer(ALPHABET)
    model = randomize(small_model(vocab_size=tokenizer.vocab_size, block_size=32), seed=1)
    return model.eval(), tokenizer


def prompts(tokenizer, n: int = 4, length: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, tokenizer.vocab_size, (n, length), generator=g)


SETTINGS = dict(steps=3, prompts_per_step=2, samples=4, prompt_tokens=6, max_new_tokens=10,
                lr=1e-3, temperature=1.0, top_k=None, lm_coef=0.0)


# ---------------------------------------------------------------------------------------------
# The losses
# ---------------------------------------------------------------------------------------------


def test_dpo_loss_is_the_formula_by_hand():
    # chosen: policy -3, reference -4 (+1); rejected: policy -5, reference -4 (-1); beta 0.5
    loss = align.dpo_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]),
                          torch.tensor([-4.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)))  # -log sigma(0.5 * 2)
    two = align.dpo_loss(torch.tensor([-3.0, -2.0]), torch.tensor([-5.0, -1.0]),
                         torch.tensor([-4.0, -2.0]), torch.tensor([-4.0, -2.0]), beta=0.5)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert two.item() == pytest.approx(expected)


def test_dpo_loss_raises_the_chosen_and_lowers_the_rejected():
    chosen, rejected = torch.tensor([-3.0, -7.0], requires_grad=True), torch.tensor(
        [-5.0, -2.0], requires_grad=True)
    align.dpo_loss(chosen, rejected, torch.full((2,), -4.0), torch.full((2,), -4.0),
                   0.1).backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent: chosen up


def grpo_by_loop(logp, old, ref, adv, mask, clip, kl_coef) -> float:
    """GRPO's loss token by token: the surrogate, the clip, k3, the mean per completion."""
    logp, old, ref, adv, mask = (x.tolist() for x in (logp, old, ref, adv, mask))
    total = 0.0
    for i in range(len(logp)):
        terms = []
        for t in range(len(logp[i])):
            if not mask[i][t]:
                continue
            ratio = math.exp(logp[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - clip), 1 + clip)
            d = ref[i][t] - logp[i][t]
            k3 = math.exp(d) - d - 1
            terms.append(-(min(ratio * adv[i], clipped * adv[i]) - kl_coef * k3))
        total += sum(terms) / len(terms)
    return total / len(logp)


@pytest.mark.parametrize("spread", [0.05, 0.8])  # ratios within the clip, and far outside it
def test_grpo_loss_matches_a_loop(spread):
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=g) * 3
    old = logp + (torch.rand(3, 5, generator=g) - 0.5) * 2 * spread
    ref = logp + (torch.rand(3, 5, generator=g) - 0.5)
    adv = torch.tensor([1.5, -0.7, 0.2])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    args = (logp, old, ref, adv, mask)
    got = align.grpo_loss(*args, clip=0.2, kl_coef=0.1)
    assert got.item() == pytest.approx(grpo_by_loop(*args, 0.2, 0.1), abs=1e-6)
    unclipped = align.grpo_loss(*args, clip=0.999, kl_coef=0.1).item()
    assert (unclipped != pytest.approx(got.item())) == (spread > 0.2)  # the clip bites or not


def test_grpo_clipped_tokens_get_no_gradient():
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, 0.0]])  # ratio e (beyond 1.2) and 1
    align.grpo_loss(logp, old, logp.detach(), torch.tensor([1.0]),
                    torch.ones(1, 2, dtype=torch.bool), clip=0.2, kl_coef=0.0).backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] < 0


def test_grpo_without_a_change_is_minus_the_mean_advantage():
    logp = -torch.rand(4, 3)
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0])
    mask = torch.ones(4, 3, dtype=torch.bool)
    assert torch.equal(align.kl_k3(logp, logp), torch.zeros(4, 3))
    loss = align.grpo_loss(logp, logp, logp, adv, mask, 0.2, kl_coef=1.0)
    assert loss.item() == pytest.approx(-adv.mean().item())
    assert (align.kl_k3(logp, logp - 0.3) > 0).all()


def test_group_advantages_are_standardized_per_group():
    rewards = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.2, 0.2, 0.2, 0.2], [1.0, 0.0, 0.0, 0.0]])
    adv = align.group_advantages(rewards)
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv[[0, 2]].std(1), torch.ones(2), atol=1e-3, rtol=0)
    assert torch.equal(adv[1], torch.zeros(4))  # equal rewards: nothing to learn, not NaN
    with pytest.raises(ValueError, match="G >= 2"):
        align.group_advantages(torch.ones(3, 1))


def test_preference_pairs_take_best_and_worst_and_skip_ties():
    chosen, rejected = align.preference_pairs(torch.tensor([[0.2, 0.9, 0.1], [0.5, 0.5, 0.5],
                                                            [0.3, 0.1, 0.7]]))
    assert chosen.tolist() == [1, 8] and rejected.tolist() == [2, 7]


# ---------------------------------------------------------------------------------------------
# Completions and their log-probabilities
# ---------------------------------------------------------------------------------------------


def test_completion_mask_ends_at_the_first_newline():
    newline = torch.tensor([False, True, False])
    tokens = torch.tensor([[0, 2, 1, 0, 1], [1, 0, 0, 0, 0], [2, 2, 2, 2, 2]])
    assert align.completion_mask(tokens, newline).int().tolist() == [
        [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_logprobs_match_one_sequence_at_a_time(tiny, temperature):
    model, tokenizer = tiny
    p, c = prompts(tokenizer, 3, 5), prompts(tokenizer, 3, 6, seed=1)
    lengths = [6, 2, 4]
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    got = align.completion_logprobs(model, p, c, mask, temperature)
    for b, n in enumerate(lengths):
        for t in range(6):
            if t >= n:
                assert got[b, t] == 0
                continue
            seq = torch.cat([p[b], c[b, :t]])[None]  # the prompt and the completion so far
            logp = (model(seq)[0][0, -1] / temperature).log_softmax(-1)[c[b, t]]
            assert got[b, t].item() == pytest.approx(logp.item(), abs=1e-5)
    torch.testing.assert_close(align.sequence_logprob(model, p, c, mask, temperature),
                               got.sum(1))


def test_completion_logprobs_ignore_what_follows_the_mask_and_carry_gradients(tiny):
    model, tokenizer = tiny
    p, c = prompts(tokenizer, 2, 5), prompts(tokenizer, 2, 6, seed=1)
    mask = torch.arange(6)[None] < torch.tensor([3, 4])[:, None]
    changed = c.clone()
    changed[~mask] = (changed[~mask] + 1) % tokenizer.vocab_size
    a = align.completion_logprobs(model, p, c, mask)
    torch.testing.assert_close(a, align.completion_logprobs(model, p, changed, mask))
    a.sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_samples_end_at_a_newline_and_are_scored(tiny):
    model, tokenizer = tiny
    newline = evaluate.newline_tokens(tokenizer)
    assert newline.tolist() == [c == "\n" for c in tokenizer.chars]
    p = prompts(tokenizer, 6)
    tokens, mask = align.sample_completions(model, p, 10, newline, 1.0, None,
                                            torch.Generator().manual_seed(0))
    assert tokens.shape == mask.shape and tokens.size(0) == 6 and tokens.size(1) <= 10
    batch = align.score_completions(tokenizer, p, tokens, mask, verse.reward)
    for row, keep, line, ended, r in zip(tokens, mask, batch.lines, batch.ended, batch.rewards):
        text = tokenizer.decode(row[keep].tolist())
        assert text.split("\n")[0] == line and bool(ended) == text.endswith("\n")
        assert r.item() == pytest.approx(verse.reward(line) if ended else 0.0)
    with pytest.raises(ValueError, match="exceed the context"):
        align.sample_completions(model, p, 40, newline)


@pytest.mark.parametrize("line", ["Shall I compare thee to a summer's day?", "a b c", "",
                                  "But soft, what light through yonder window breaks"])
def test_line_reward_is_the_verse_reward_sharpened(line):
    for weights in [(1, 1, 1), (1, 0, 0), (2, 1, 0.5)]:
        assert align.line_reward(line, weights) == pytest.approx(verse.reward(line, weights))
    score = verse.score_line(line)
    expected = (score.syllable_score ** 4 + score.metre + score.english) / 3
    assert align.line_reward(line, sharpness=4) == pytest.approx(expected)
    assert align.line_reward(line, distinct=True) == pytest.approx(verse.reward(line))


@pytest.mark.parametrize("line, pairs, distinct", [
    ("my lord, and my lord, and my lord, and I", 9, 4),  # (my lord) (lord and) (and my), (and i)
    ("I have not not, sir, I not not not", 8, 5),  # (not not) never counts
    ("O, O, O, O, O", 4, 0),
    ("Shall I compare thee to a summer's day?", 7, 7),
    ("Hence", 1, 1),  # no pair: nothing repeated
])
def test_distinct_pairs_take_the_reward_of_a_repeated_phrase(line, pairs, distinct):
    assert align.distinct_pairs(line) == pytest.approx(distinct / pairs)
    assert align.line_reward(line, distinct=True) == pytest.approx(
        verse.reward(line) * distinct / pairs)
    settings = align.GRPOSettings(weights=(1, 0, 1), sharpness=2.0, distinct=False)
    assert settings.reward(line) == pytest.approx(align.line_reward(line, (1, 0, 1), 2.0))


def test_sibling_novelty_is_one_less_the_cube_of_the_largest_overlap_in_the_group():
    lines = ["my gracious lord, I pray you", "my gracious lord, I pray you",  # group 1: twins
             "I know not what to say", "I know not, my lord",  # group 2: (i know) (know not)
             "Hence", "a b c"]  # group 3: no pair in the first line
    novelty = align.sibling_novelty(lines, 2)
    # group 2: pairs {i-know, know-not, not-what, what-to, to-say} and {i-know, know-not,
    # not-my, my-lord}: 2 shared of 7 distinct, so 1 - (2/7)^3
    assert novelty.tolist() == pytest.approx([0.0, 0.0, 335 / 343, 335 / 343, 1.0, 1.0])
    assert align.sibling_novelty(lines, 2, power=2).tolist() == pytest.approx(
        [0.0, 0.0, 45 / 49, 45 / 49, 1.0, 1.0])
    assert align.sibling_novelty(lines, 2, power=1).tolist() == pytest.approx(
        [0.0, 0.0, 5 / 7, 5 / 7, 1.0, 1.0])
    assert align.sibling_novelty(lines, 1).tolist() == [1.0] * 6  # no siblings
    assert align.sibling_novelty(lines[:3], 3).tolist() == pytest.approx([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="groups of 4"):
        align.sibling_novelty(lines, 4)


# ---------------------------------------------------------------------------------------------
# Best-of-N
# ---------------------------------------------------------------------------------------------


def test_pick_best_keeps_the_highest_reward():
    lines = ["no", "Shall I compare thee to a summer's day?", "a b c d e f g h i j k l m n",
             "But soft, what light through yonder window breaks"]
    best = align.pick_best(lines, 2)
    assert align.pick_best(lines, 2, lambda x: -len(x)).lines == [lines[0], lines[2]]
    assert best.lines == [lines[1], lines[3]]
    assert best.rewards.shape == (2, 2) and best.picks.tolist() == [1, 1]
    with pytest.raises(ValueError, match="groups"):
        align.pick_best(lines, 3)


def test_best_of_n_picks_the_max_reward_line(tiny):
    model, tokenizer = tiny
    reward = align.GRPOSettings().reward
    best = align.best_of_n(model, tokenizer, prompts(tokenizer, 3), 4, reward, max_new_tokens=12)
    for group, line, rewards in zip(best.candidates, best.lines, best.rewards):
        assert len(group) == 4 and rewards.tolist() == [reward(x) for x in group]
        assert reward(line) == max(reward(x) for x in group)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, field, value", [
    (align.GRPOSettings, "clip", 1.5), (align.GRPOSettings, "kl_coef", -0.1),
    (align.DPOSettings, "beta", 0), (align.DPOSettings, "samples", 1),
    (align.GRPOSettings, "weights", (0, 0, 0)), (align.GRPOSettings, "weights", (1, 1)),
    (align.GRPOSettings, "temperature", 0), (align.DPOSettings, "top_k", 0),
    (align.GRPOSettings, "lr", float("nan")), (align.GRPOSettings, "lr", -1e-4),
    (align.DPOSettings, "steps", True), (align.GRPOSettings, "lora_rank", 0),
    (align.BestOfNSettings, "n", 0), (align.BestOfNSettings, "seed", -1),
    (align.GRPOSettings, "prompt_tokens", 2.5), (align.DPOSettings, "max_grad_norm", 0),
    (align.GRPOSettings, "sharpness", 0), (align.DPOSettings, "lm_coef", -1),
    (align.BestOfNSettings, "distinct", 1), (align.DPOSettings, "siblings", "yes"),
    (align.GRPOSettings, "lm_windows", 0), (align.GRPOSettings, "sibling_power", 0),
    (align.DPOSettings, "sibling_power", float("inf")),
])
def test_settings_refuse_bad_values(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


def test_align_refuses_a_method_or_settings_it_does_not_know(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="method"):
        align.align(model, tokenizer, "ppo")
    with pytest.raises(TypeError, match="GRPOSettings"):
        align.align(model, tokenizer, "grpo", align.DPOSettings())


def test_training_refuses_prompts_that_leave_no_room(tiny):
    model, tokenizer = tiny
    settings = align.GRPOSettings(**{**SETTINGS, "max_new_tokens": 30})
    with pytest.raises(ValueError, match="context"):
        align.train_grpo(model, tokenizer, prompts(tokenizer), settings)


def test_the_language_modelling_term_needs_a_text(tiny):
    model, tokenizer = tiny
    settings = align.GRPOSettings(**{**SETTINGS, "lm_coef": 0.5})
    with pytest.raises(ValueError, match="lm_coef"):
        align.train_grpo(model, tokenizer, prompts(tokenizer), settings)
    text = prompts(tokenizer, 1, 200)[0]  # 200 random tokens
    log = align.train_grpo(model, tokenizer, prompts(tokenizer), settings, text=text)[1]
    plain = align.train_grpo(model, tokenizer, prompts(tokenizer),
                             align.GRPOSettings(**SETTINGS))[1]
    assert log[0]["loss"] > plain[0]["loss"] + 0.5  # half a next-token loss of ln 7 or more


def test_a_non_finite_loss_raises():
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        align.optimize(optimizer, weight.sum() * float("nan"), 1.0, 2)
    assert torch.equal(weight.detach(), torch.ones(2))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

FIELDS = {"step", "reward", "ten_syllables", "english", "kl", "loss", "lines", "cpu_seconds"}


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_training_returns_a_log_and_leaves_the_model_alone(tiny, method):
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = align.SETTINGS[method](**SETTINGS)
    train = align.train_dpo if method == "dpo" else align.train_grpo
    seen = []
    policy, log = train(model, tokenizer, prompts(tokenizer), settings, seen.append)
    assert seen == log and [r["step"] for r in log] == [1, 2, 3]
    assert all(FIELDS <= set(r) for r in log) and log[-1]["lines"] == 3 * 2 * 4
    assert all(0 <= r["reward"] <= 1 and math.isfinite(r["loss"]) for r in log)
    assert policy is not model and not policy.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, policy.state_dict()[k]) for k, v in before.items())
    again = train(model, tokenizer, prompts(tokenizer), settings)[1]  # seeded: the same run
    assert [r["loss"] for r in again] == [r["loss"] for r in log]


def first_batch(model, tokenizer, p, settings) -> align.Samples:
    """The batch the first step of a run samples: the same prompts, seed and model."""
    return align.sample_scored(model, tokenizer, align.step_prompts(p, 0, settings), settings,
                               evaluate.newline_tokens(tokenizer),
                               torch.Generator().manual_seed(settings.seed))


def test_a_grpo_step_raises_the_advantage_weighted_log_probability(tiny):
    model, tokenizer = tiny
    p = prompts(tokenizer)
    settings = align.GRPOSettings(**{**SETTINGS, "steps": 1, "kl_coef": 0.0})
    batch = first_batch(model, tokenizer, p, settings)
    adv = align.group_advantages(batch.rewards.view(-1, settings.samples)).flatten()
    assert adv.abs().sum() > 0
    policy = align.train_grpo(model, tokenizer, p, settings)[0]
    args = (batch.prompts, batch.tokens, batch.mask)

    def objective(m) -> float:  # what GRPO's gradient climbs, to first order
        logp = align.completion_logprobs(m, *args)
        return float((adv * logp.sum(1) / batch.mask.sum(1)).mean())

    with torch.no_grad():
        assert objective(policy) > objective(model)


def test_a_dpo_step_lowers_the_dpo_loss_of_its_pairs(tiny):
    model, tokenizer = tiny
    p = prompts(tokenizer)
    settings = align.DPOSettings(**{**SETTINGS, "steps": 1})
    batch = first_batch(model, tokenizer, p, settings)
    chosen, rejected = align.preference_pairs(batch.rewards.view(-1, settings.samples))
    assert len(chosen) > 0
    policy = align.train_dpo(model, tokenizer, p, settings)[0]

    def loss(m) -> float:
        lp = align.sequence_logprob(m, batch.prompts, batch.tokens, batch.mask)
        ref = align.sequence_logprob(model, batch.prompts, batch.tokens, batch.mask)
        return align.dpo_loss(lp[chosen], lp[rejected], ref[chosen], ref[rejected], 0.1).item()

    with torch.no_grad():
        assert loss(policy) < loss(model) and loss(model) == pytest.approx(math.log(2))


def test_lora_training_gives_back_a_plain_model(tiny):
    model, tokenizer = tiny
    settings = align.GRPOSettings(**{**SETTINGS, "lora_rank": 2})
    policy, log = align.train_grpo(model, tokenizer, prompts(tokenizer), settings)
    assert not any(isinstance(m, LoRALinear) for m in policy.modules())
    assert set(policy.state_dict()) == set(model.state_dict()) and len(log) == 3


# ---------------------------------------------------------------------------------------------
# The entry point and the measure, on the plays
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def char_model(corpus):
    """A random GPT over Tiny Shakespeare's characters, context 32."""
    tokenizer = CharTokenizer(corpus)
    return small_model(vocab_size=tokenizer.vocab_size, block_size=32), tokenizer


def test_align_trains_on_prompts_of_the_training_plays(char_model, corpus, private_cache):
    model, tokenizer = char_model
    p = align.training_prompts(tokenizer, 5, 12, corpus=corpus)
    assert p.shape == (5, 12)
    settings = align.GRPOSettings(**{**SETTINGS, "steps": 1, "prompt_tokens": 12,
                                     "lm_coef": 0.3})  # on Tiny Shakespeare's training text
    policy, log = align.align(model, tokenizer, "grpo", settings, corpus=corpus)
    assert policy is not model and len(log) == 1
    same, log = align.align(model, tokenizer, "best-of-n", align.BestOfNSettings(
        n=2, prompts=3, prompt_tokens=12, max_new_tokens=8), corpus=corpus)
    assert same is model and log[0]["lines"] == 6
    assert log[0]["reward"] >= log[0]["reward_first"]


def test_measure_reports_the_numbers_of_the_chapter(char_model, corpus):
    model, tokenizer = char_model
    card = align.measure(model, tokenizer, prompts=4, best_of=2, corpus=corpus, pieces=1,
                         prompt_tokens=16)
    assert card["lines_sampled"] == 8 and len(card["lines"]) == 4
    assert card["ten_syllables"]["n"] == 4 and 0 <= card["reward"] <= 1
    assert {"english_words", "distinct_2"} <= set(card)
    assert 0 < card["nats_per_char"] < math.log(tokenizer.vocab_size) * 1.5
