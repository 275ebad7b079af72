"""Learning from a reward: best-of-N, DPO and GRPO, on verse that scans. Explained in the
chapter "Learning from a reward".

The reward is :func:`buildllm.verse.reward`: a number in [0, 1] for a line of verse, higher the
nearer it comes to ten syllables, to iambic stress and to English words. Training uses it
sharpened (:func:`line_reward`): the syllable term raised to a power, so that exactly ten
stands out from nine or eleven, and multiplied by the share of the line's pairs of
neighbouring words that are distinct (:func:`distinct_pairs`), since without that a model soon
learns that "my lord, my lord, my lord" scores nearly full marks. The trainers also multiply
each line's reward by its novelty among the lines sampled after the same prompt
(:func:`sibling_novelty`), since no reward of one line can see a model that writes the same
line after every prompt. Three ways to raise the reward, each written out plainly:

* **Best-of-N** (:func:`best_of_n`): sample ``n`` lines and keep the one with the highest
  reward. No training at all: the model stays as it is and pays ``n`` times the sampling at
  every use (inference-time scaling).
* **DPO**, direct preference optimization (Rafailov et al., 2023; :func:`dpo_loss`,
  :func:`train_dpo`): the model's own lines, ranked by the reward, make pairs (per prompt, the
  best of ``K`` samples is *chosen*, the worst *rejected*, a tie is skipped), and the loss
  ``-log σ(β [(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))])`` raises the
  chosen line against the rejected one, measured against a frozen reference copy. Here DPO is
  *online*: each step samples its pairs from the current policy (Guo et al., 2024), not from a
  fixed data set, so the pairs keep up with what the model now writes.
* **GRPO**, group relative policy optimization (Shao et al., 2024, DeepSeekMath;
  :func:`grpo_loss`, :func:`train_grpo`): ``G`` samples per prompt, each sample's advantage its
  reward normalized within its group (:func:`group_advantages`), PPO's clipped objective on the
  ratio of new to old probabilities, and a penalty on the KL divergence to the reference (the
  per-token k3 estimator :func:`kl_k3`). On-policy: every step samples afresh, and takes a
  few gradient steps on what it sampled.

Both trainers need the log-probability of a completion after its prompt
(:func:`completion_logprobs`): one forward pass over prompt and completion, the prompt's
positions left out by construction, the tokens after the completion's newline by a mask. Both
add the next-token loss on Tiny Shakespeare's training text (:func:`lm_loss`, InstructGPT's
"pretraining mix"), which holds the held-out loss while the reward pulls the model away.
:func:`align` runs a method from a settings object (the command ``buildllm align``), and
:func:`measure` samples one line after each of 200 held-out speech openings and scores them.
Prompts for training come from the training plays, measures from the held-out
:data:`~buildllm.plays.TEST_PLAYS`, so a model cannot learn the test's openings. Both cut
their prompts to the same length (:data:`PROMPT_TOKENS`): the book's model has learned
positions, and a policy trained on lines that start at one position does not write them the
same way at another.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from buildllm import data, evaluate, verse
from buildllm import plays as plays_
from buildllm.files import is_number
from buildllm.generate import sample_next
from buildllm.lora import apply_lora, merge_lora
from buildllm.plays import TEST_PLAYS, VAL_PLAYS
from buildllm.tokenizer import Tokenizer
from buildllm.train import NonFiniteLossError

METHODS = ("best-of-n", "dpo", "grpo")
PROMPT_TOKENS = 32  # half the book model's 64-token context, as the report card's prompts
LINE_TOKENS = 64  # the most tokens of a measured line, as the report card
EPS = 1e-4  # added to a group's standard deviation: a group of equal rewards gets advantage 0
Progress = Callable[[dict], None]  # called with each step's log record


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _require(ok: bool, settings, name: str, want: str) -> None:
    """Raise ``ValueError`` naming the settings' class, the field, its value and what it needs."""
    if not ok:
        raise ValueError(f"{type(settings).__name__}.{name} must be {want}, got "
                         f"{getattr(settings, name)!r}")


def _int(x, low: int) -> bool:
    return is_number(x, int) and x >= low


def _number(x, low: float = 0.0, high: float = math.inf, zero: bool = False) -> bool:
    """A finite number in the open interval (low, high), or 0 too with ``zero``."""
    return is_number(x) and (low < x < high or (zero and x == 0))


@dataclass(frozen=True)
class Sampling:
    """How lines are sampled and scored, for every method. ``weights`` (syllables, metre,
    English words), ``sharpness`` and ``distinct`` make the reward (:func:`line_reward`); a line
    that has not ended within ``max_new_tokens`` gets reward 0. Prompts have
    ``prompt_tokens`` tokens."""

    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sharpness: float = 4.0
    distinct: bool = True
    temperature: float = 0.8
    top_k: int | None = 40
    prompt_tokens: int = PROMPT_TOKENS
    max_new_tokens: int = 24
    seed: int = 0

    def __post_init__(self):
        _require(verse.valid_weights(self.weights), self, "weights",
                 "three numbers >= 0 (syllables, metre, words) with a positive sum")
        _require(_number(self.sharpness), self, "sharpness", "a number > 0; 1 is "
                 "verse.reward's syllable score")
        _require(isinstance(self.distinct, bool), self, "distinct", "True or False")
        _require(_number(self.temperature), self, "temperature",
                 "a number > 0 (the log-probabilities divide by it)")
        _require(self.top_k is None or _int(self.top_k, 1), self, "top_k",
                 "a positive integer or None")
        for name in ("prompt_tokens", "max_new_tokens"):
            _require(_int(getattr(self, name), 1), self, name, "a positive integer")
        _require(_int(self.seed, 0), self, "seed", "an integer >= 0")

    def reward(self, line: str) -> float:
        """The reward of ``line`` under these settings (:func:`line_reward`)."""
        return line_reward(line, self.weights, self.sharpness, self.distinct)


@dataclass(frozen=True)
class BestOfNSettings(Sampling):
    """Best-of-N: ``n`` lines per prompt, the best kept; shown on ``prompts`` training prompts."""

    n: int = 8
    prompts: int = 64

    def __post_init__(self):
        super().__post_init__()
        _require(_int(self.n, 1), self, "n", "a positive integer (lines per prompt)")
        _require(_int(self.prompts, 1), self, "prompts", "a positive integer")


@dataclass(frozen=True)
class Training(Sampling):
    """What both trainers share: ``steps`` steps, each sampling ``samples`` lines after each of
    ``prompts_per_step`` fresh prompts and taking ``inner_steps`` AdamW steps (learning rate
    ``lr``, gradient norm clipped to ``max_grad_norm``) on them. Each step adds ``lm_coef``
    times the next-token loss on ``lm_windows`` windows of the training text
    (:func:`lm_loss`). ``lora_rank`` ``None`` trains every weight; a rank trains LoRA adapters
    (``lora_alpha``), merged at the end. ``siblings`` multiplies each reward by the line's
    :func:`sibling_novelty`, with the overlap raised to ``sibling_power``."""

    steps: int = 160
    prompts_per_step: int = 8
    samples: int = 8
    lr: float = 5e-4
    inner_steps: int = 2
    max_grad_norm: float = 1.0
    lm_coef: float = 0.5
    lm_windows: int = 8
    lora_rank: int | None = None
    lora_alpha: float = 16.0
    siblings: bool = True
    sibling_power: float = 3.0

    def __post_init__(self):
        super().__post_init__()
        _require(isinstance(self.siblings, bool), self, "siblings", "True or False")
        _require(_number(self.sibling_power), self, "sibling_power",
                 "a number > 0 (1: the overlap itself, 3: its cube)")
        for name, low in (("steps", 1), ("prompts_per_step", 1), ("samples", 2),
                          ("inner_steps", 1), ("lm_windows", 1)):
            _require(_int(getattr(self, name), low), self, name, f"an integer >= {low}")
        _require(_number(self.lr), self, "lr", "a positive number; try 1e-4")
        _require(_number(self.max_grad_norm), self, "max_grad_norm", "a positive number")
        _require(_number(self.lm_coef, zero=True), self, "lm_coef", "a number >= 0")
        _require(self.lora_rank is None or _int(self.lora_rank, 1), self, "lora_rank",
                 "a positive integer or None (full fine-tuning)")
        _require(_number(self.lora_alpha), self, "lora_alpha", "a positive number")


@dataclass(frozen=True)
class DPOSettings(Training):
    """Online DPO: ``beta`` scales the log-ratios (a larger ``beta`` keeps nearer the
    reference). DPO pulls harder than GRPO on the same lines, so it takes a lower learning
    rate and more of the language-modelling term."""

    lr: float = 3e-4
    lm_coef: float = 1.0
    beta: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _require(_number(self.beta), self, "beta", "a positive number; try 0.1")


@dataclass(frozen=True)
class GRPOSettings(Training):
    """GRPO: ``samples`` is the group size ``G``; ``clip`` PPO's ε; ``kl_coef`` the weight of
    the KL penalty to the reference."""

    clip: float = 0.2
    kl_coef: float = 0.04

    def __post_init__(self):
        super().__post_init__()
        _require(_number(self.clip, 0.0, 1.0), self, "clip", "a number in (0, 1)")
        _require(_number(self.kl_coef, zero=True), self, "kl_coef", "a number >= 0")


SETTINGS = {"best-of-n": BestOfNSettings, "dpo": DPOSettings, "grpo": GRPOSettings}


# ---------------------------------------------------------------------------------------------
# Prompts, samples and their rewards
# ---------------------------------------------------------------------------------------------


def word_pairs(line: str) -> list[tuple[str, str]]:
    """A line's pairs of neighbouring words, in order (:func:`verse.words` finds the words)."""
    found = verse.words(line)
    return list(zip(found, found[1:]))


def distinct_pairs(line: str) -> float:
    """The share of a line's pairs of neighbouring words that are distinct and not one word
    twice: 1 for a line that repeats nothing, 3/7 for "my lord, and my lord, and my lord",
    1/2 for "I not not not" (1 for a line of fewer than two words)."""
    pairs = word_pairs(line)
    return len({p for p in pairs if p[0] != p[1]}) / len(pairs) if pairs else 1.0


def line_reward(line: str, weights: Sequence[float] = verse.WEIGHTS, sharpness: float = 1.0,
                distinct: bool = False) -> float:
    """The reward of a line: the weighted mean of its syllable score raised to
    ``sharpness``, its metre and its share of English words (:func:`verse.score_line`); with
    ``distinct``, times :func:`distinct_pairs`. With ``sharpness`` 1 and no ``distinct`` it
    is :func:`verse.reward`. At ``sharpness`` 4 a line of 9 or 11 syllables earns 0.66 of
    the syllable term instead of 0.9, so exactly ten stands out. ``distinct`` stops the
    cheapest way to ten syllables of real words, which a model finds when nothing stops it:
    a word or a phrase said again ("I have not not, sir, I not not not")."""
    score = verse.score_line(line, weights)
    parts = (score.syllable_score ** sharpness, score.metre, score.english)
    total = sum(w * p for w, p in zip(weights, parts)) / sum(weights)
    return total * distinct_pairs(line) if distinct else total


def training_prompts(tokenizer: Tokenizer, n: int, length: int, seed: int = 0,
                     corpus: str | None = None) -> torch.Tensor:
    """``n`` speech openings of the training plays (every play but :data:`TEST_PLAYS` and
    :data:`VAL_PLAYS`), each cut to its last ``length`` tokens: ``(n, length)``. With
    ``corpus``, openings with a character outside it are left out (as :mod:`evaluate` does)."""
    train = plays_.split_by_play(plays_.load_plays(), TEST_PLAYS, VAL_PLAYS)["train"]
    alphabet = set(corpus) if corpus is not None else None
    openings = evaluate.speech_openings(train, alphabet)
    return evaluate.encode_prompts(tokenizer, openings, n, length, seed)[1]


def training_text(tokenizer: Tokenizer, corpus: str) -> torch.Tensor:
    """Tiny Shakespeare's training 90% (``corpus`` the whole) as token ids ``(N,)``, for
    :func:`lm_loss`; encoded once and cached on disk (:func:`data.encode_corpus`)."""
    ids = data.encode_corpus(tokenizer, data.train_val_split(corpus)[0])
    return torch.from_numpy(ids.astype(np.int64))


def completion_mask(tokens: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool: True up to and including each row's first newline token (all True in
    a row without one), False after it."""
    is_newline = newline.to(tokens.device)[tokens].long()  # (B, L)
    return (is_newline.cumsum(1) - is_newline) == 0


@torch.no_grad()
def sample_completions(model: torch.nn.Module, prompts: torch.Tensor, max_new_tokens: int,
                       newline: torch.Tensor, temperature: float = 1.0,
                       top_k: int | None = None,
                       generator: torch.Generator | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """A completion after each prompt ``(B, P)``, with the key/value cache: tokens are drawn
    until every row has made a newline token, or ``max_new_tokens``. Returns the tokens
    ``(B, L)`` and :func:`completion_mask` ``(B, L)``; what a row draws after its newline is
    masked out."""
    if prompts.size(1) + max_new_tokens > model.config.block_size:
        raise ValueError(f"prompts of {prompts.size(1)} tokens and {max_new_tokens} new ones "
                         f"exceed the context ({model.config.block_size}); shorten either")
    newline = newline.to(prompts.device)
    with evaluate.evaluating(model):
        cache = model.new_cache(len(prompts), prompts.size(1) + max_new_tokens)
        logits = model(prompts, cache=cache)[0][:, -1]  # (B, V): the prefill
        tokens, done = [], torch.zeros(len(prompts), dtype=torch.bool, device=prompts.device)
        while True:
            evaluate.check_finite(logits, "while sampling")
            tokens.append(sample_next(logits, temperature, top_k, None, generator))  # (B,)
            done |= newline[tokens[-1]]
            if done.all() or len(tokens) == max_new_tokens:
                break
            logits = model(tokens[-1][:, None], cache=cache)[0][:, -1]
    out = torch.stack(tokens, 1)  # (B, L)
    return out, completion_mask(out, newline)


@dataclass
class Samples:
    """Sampled completions and their scores: ``prompts`` ``(B, P)``, ``tokens`` and ``mask``
    ``(B, L)``, the ``lines`` (text before the newline), whether each ``ended`` ``(B,)``, the
    ``scores`` (:class:`verse.LineScore`) and ``rewards`` ``(B,)`` (0 for a line that did not
    end)."""

    prompts: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    lines: list[str]
    ended: torch.Tensor
    scores: list[verse.LineScore]
    rewards: torch.Tensor

    def record(self) -> dict:
        """The batch's mean reward, share of ten-syllable lines and mean English-word share."""
        ten = [bool(e) and s.syllables == verse.TARGET_SYLLABLES
               for s, e in zip(self.scores, self.ended)]
        return {"reward": float(self.rewards.mean()), "ten_syllables": sum(ten) / len(ten),
                "english": sum(s.english for s in self.scores) / len(self.scores)}


def score_completions(tokenizer: Tokenizer, prompts: torch.Tensor, tokens: torch.Tensor,
                      mask: torch.Tensor,
                      reward: Callable[[str], float] = verse.reward) -> Samples:
    """Decode each completion, cut it at its newline, score the line
    (:func:`verse.score_line`) and reward it (``reward``, 0 for a line that did not end)."""
    texts = [tokenizer.decode(row[keep].tolist()) for row, keep in zip(tokens.cpu(), mask.cpu())]
    lines = [t.split("\n")[0] for t in texts]
    ended = torch.tensor(["\n" in t for t in texts])
    scores = [verse.score_line(line) for line in lines]
    rewards = torch.tensor([reward(line) for line in lines], dtype=torch.float32) * ended
    return Samples(prompts, tokens, mask, lines, ended, scores, rewards)


def sample_scored(model: torch.nn.Module, tokenizer: Tokenizer, prompts: torch.Tensor,
                  settings: Training, newline: torch.Tensor,
                  generator: torch.Generator) -> Samples:
    """:func:`sample_completions` with the settings' sampling, then
    :func:`score_completions`; with ``settings.siblings`` each reward is multiplied by the
    line's :func:`sibling_novelty` in its group of ``settings.samples``, at the settings'
    ``sibling_power``."""
    tokens, mask = sample_completions(model, prompts, settings.max_new_tokens, newline,
                                      settings.temperature, settings.top_k, generator)
    batch = score_completions(tokenizer, prompts, tokens, mask, settings.reward)
    if settings.siblings:
        novelty = sibling_novelty(batch.lines, settings.samples, settings.sibling_power)
        batch.rewards = batch.rewards * novelty
    return batch


def sibling_novelty(lines: Sequence[str], group: int, power: float = 3.0) -> torch.Tensor:
    """``(B,)``: for each line, 1 less its largest overlap with another line of its group
    (the ``group`` lines in a row sampled after one prompt) raised to ``power``, the overlap
    of two lines being the share of their distinct pairs of neighbouring words that both
    hold. 1 for a line that shares no pair with a sibling, 0 for a line that a sibling
    repeats; the cube (``power`` 3) spares a shared phrase: an overlap of 0.3 costs 2.7%,
    not 30%. No reward of one line can see a model that writes the same line after every
    prompt; siblings can."""
    if group < 1 or len(lines) % group:
        raise ValueError(f"{len(lines)} lines do not split into groups of {group}")
    pairs = [set(word_pairs(line)) for line in lines]
    novelty = []
    for i, mine in enumerate(pairs):
        start = i - i % group
        overlaps = [len(mine & theirs) / len(mine | theirs)
                    for j, theirs in enumerate(pairs[start:start + group], start)
                    if j != i and mine | theirs]
        novelty.append(1.0 - max(overlaps, default=0.0) ** power)
    return torch.tensor(novelty)


# ---------------------------------------------------------------------------------------------
# Best-of-N
# ---------------------------------------------------------------------------------------------


@dataclass
class Best:
    """Best-of-N: ``candidates`` (N prompts, n lines each), their ``rewards`` ``(N, n)``, the
    index of each prompt's best ``picks`` ``(N,)`` and the best ``lines`` (N of them)."""

    candidates: list[list[str]]
    rewards: torch.Tensor
    picks: torch.Tensor
    lines: list[str]


def pick_best(lines: Sequence[str], n: int,
              reward: Callable[[str], float] = verse.reward) -> Best:
    """Group ``lines`` (``n`` per prompt, in order) and keep the one of highest ``reward``
    of each group, the first of equal ones."""
    if n < 1 or len(lines) % n:
        raise ValueError(f"{len(lines)} lines do not split into groups of n={n}")
    groups = [list(lines[i:i + n]) for i in range(0, len(lines), n)]
    rewards = torch.tensor([[reward(x) for x in g] for g in groups],
                           dtype=torch.float64).view(len(groups), n)
    picks = rewards.argmax(1)
    return Best(groups, rewards, picks, [g[int(k)] for g, k in zip(groups, picks)])


def best_of_n(model: torch.nn.Module, tokenizer: Tokenizer, prompts: torch.Tensor, n: int,
              reward: Callable[[str], float] = verse.reward, temperature: float = 0.8,
              top_k: int | None = 40, seed: int = 0,
              max_new_tokens: int = LINE_TOKENS) -> Best:
    """Sample ``n`` lines after each prompt ``(N, P)`` (:func:`evaluate.sample_lines`, up to
    ``max_new_tokens``) and keep the best by the reward (:func:`pick_best`). With ``n = 1``
    the lines are exactly :func:`evaluate.sample_lines`'s."""
    lines, _ = evaluate.sample_lines(model, tokenizer, prompts.repeat_interleave(n, 0),
                                     max_new_tokens, temperature, top_k, seed)
    return pick_best(lines, n, reward)


# ---------------------------------------------------------------------------------------------
# Log-probabilities of completions
# ---------------------------------------------------------------------------------------------


def completion_logprobs(model: torch.nn.Module, prompts: torch.Tensor,
                        completions: torch.Tensor, mask: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """The log-probability of each completion token after its prompt and the completion's
    earlier tokens, ``(B, L)``, differentiable; 0 where ``mask`` ``(B, L)`` is False.

    One forward pass over ``prompts`` ``(B, P)`` followed by ``completions`` ``(B, L)``:
    position ``P - 1 + t`` predicts completion token ``t``, so the prompt's own tokens are
    never scored. ``temperature`` divides the logits, as when the lines were sampled."""
    P = prompts.size(1)
    if prompts.shape[0] != completions.shape[0] or completions.shape != mask.shape:
        raise ValueError(f"prompts {tuple(prompts.shape)}, completions "
                         f"{tuple(completions.shape)} and mask {tuple(mask.shape)} must "
                         f"have one batch size, completions and mask one shape")
    x = torch.cat([prompts, completions[:, :-1]], 1)  # (B, P + L - 1)
    logits = model(x)[0][:, P - 1:]  # (B, L, V)
    evaluate.check_finite(logits, "while scoring completions")
    logp = (logits.float() / temperature).log_softmax(-1)
    picked = logp.gather(-1, completions[..., None])[..., 0]  # (B, L)
    return picked.masked_fill(~mask, 0.0)


def sequence_logprob(model: torch.nn.Module, prompts: torch.Tensor,
                     completions: torch.Tensor, mask: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """The log-probability of each whole completion after its prompt, ``(B,)``: the sum of
    :func:`completion_logprobs` over its tokens."""
    return completion_logprobs(model, prompts, completions, mask, temperature).sum(1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimate of KL(π ‖ π_ref) per sampled token (from John Schulman's note
    "Approximating KL divergence", 2020, as in DeepSeekMath):
    ``exp(ref - logp) - (ref - logp) - 1``, never negative, 0 where the two agree."""
    diff = ref_logp - logp
    return diff.exp() - diff - 1


# ---------------------------------------------------------------------------------------------
# The losses
# ---------------------------------------------------------------------------------------------


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> torch.Tensor:
    """DPO's loss, the mean over pairs ``(N,)`` of sequence log-probabilities of
    ``-log σ(β [(π_w - ref_w) - (π_l - ref_l)])``: lowest when the policy has raised the
    chosen line and lowered the rejected one, each against the reference."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def group_advantages(rewards: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """GRPO's advantages: each reward less its group's mean, over the group's standard
    deviation (with Bessel's correction, as TRL) plus ``eps``: ``(P, G)`` -> ``(P, G)``. A
    group of equal rewards gets zeros: nothing to learn from it."""
    if rewards.dim() != 2 or rewards.size(1) < 2:
        raise ValueError(f"rewards must be (prompts, G) with G >= 2, got "
                         f"{tuple(rewards.shape)}")
    mean, std = rewards.mean(1, keepdim=True), rewards.std(1, keepdim=True)
    return (rewards - mean) / (std + eps)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2,
              kl_coef: float = 0.04) -> torch.Tensor:
    """GRPO's loss on ``(B, L)`` token log-probabilities of the policy, of the policy that
    sampled (``old_logp``) and of the reference, advantages ``(B,)``, mask ``(B, L)``:

    ``-[min(ρ A, clip(ρ, 1-ε, 1+ε) A) - kl_coef · k3]`` per token, ``ρ = exp(logp - old)``,
    averaged over each completion's own tokens, then over completions (as DeepSeekMath's
    ``1/|o_i|``)."""
    ratio = (logp - old_logp).exp()
    adv = advantages[:, None]  # (B, 1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    per_token = -(surrogate - kl_coef * kl_k3(logp, ref_logp))  # (B, L)
    per_sequence = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_sequence.mean()


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def policy_and_reference(model: torch.nn.Module,
                         settings: Training) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two deep copies of ``model``, which is left as it is: the policy to train (with LoRA
    adapters when ``settings.lora_rank`` is set) and the frozen reference. Both in eval mode:
    dropout would make the ratio of new to old probabilities noise."""
    policy, reference = copy.deepcopy(model).eval(), copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    if settings.lora_rank is not None:
        apply_lora(policy, settings.lora_rank, settings.lora_alpha)
    else:
        policy.requires_grad_(True)
    return policy, reference


def check_fits(model: torch.nn.Module, prompts: torch.Tensor, settings: Training,
               text: torch.Tensor | None = None) -> None:
    """Raise ``ValueError`` unless prompts and new tokens fit the context, every step gets
    its prompts, and the language-modelling term has a text longer than the context."""
    if prompts.dim() != 2 or prompts.size(1) + settings.max_new_tokens > model.config.block_size:
        raise ValueError(f"prompts {tuple(prompts.shape)} and max_new_tokens="
                         f"{settings.max_new_tokens} must fit the context "
                         f"({model.config.block_size} tokens); shorten either")
    if len(prompts) < settings.prompts_per_step:
        raise ValueError(f"{len(prompts)} prompts are fewer than prompts_per_step="
                         f"{settings.prompts_per_step}")
    if settings.lm_coef > 0 and (text is None or len(text) <= model.config.block_size):
        raise ValueError(f"lm_coef={settings.lm_coef} needs the training text's tokens, more "
                         f"than the context of {model.config.block_size}: pass text= "
                         f"(training_text), or set lm_coef=0")


def step_prompts(prompts: torch.Tensor, step: int, settings: Training) -> torch.Tensor:
    """The prompts of ``step``, each repeated ``samples`` times: ``(prompts_per_step *
    samples, P)``. Steps take the prompts in order, starting over when they run out."""
    n = settings.prompts_per_step
    index = (step * n + torch.arange(n)) % len(prompts)
    return prompts[index].repeat_interleave(settings.samples, 0)


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float,
             step: int) -> float:
    """One optimizer step on ``loss``, gradients clipped; a NaN or infinite loss raises."""
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(f"the loss is {value} at step {step + 1}: lower the learning "
                                 f"rate, or raise beta / kl_coef")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    return value


@dataclass
class Run:
    """What a training run carries from step to step: the policy it trains, the frozen
    reference, the optimizer, which tokens hold a newline
    (:func:`~buildllm.evaluate.newline_tokens`), the one generator of every random draw, the
    training text's tokens ``(N,)`` for the language-modelling term (``None`` without it) and
    the CPU clock at the start."""

    policy: torch.nn.Module
    reference: torch.nn.Module
    optimizer: torch.optim.Optimizer
    newline: torch.Tensor
    generator: torch.Generator
    text: torch.Tensor | None
    start: float


def start_run(model: torch.nn.Module, tokenizer: Tokenizer, prompts: torch.Tensor,
              settings: Training, text: torch.Tensor | None = None) -> Run:
    """Check the run's inputs (:func:`check_fits`), copy the model
    (:func:`policy_and_reference`), make AdamW (no weight decay: the KL term, not decay
    towards zero, holds the policy) and seed the generator."""
    check_fits(model, prompts, settings, text)
    policy, reference = policy_and_reference(model, settings)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    generator = torch.Generator(device=prompts.device).manual_seed(settings.seed)
    return Run(policy, reference, optimizer, evaluate.newline_tokens(tokenizer), generator, text,
               time.process_time())


def lm_loss(run: Run, settings: Training) -> torch.Tensor:
    """``lm_coef`` times the policy's next-token loss on ``lm_windows`` random windows of the
    training text: the "pretraining mix" of InstructGPT (PPO-ptx, Ouyang et al., 2022), which
    holds the model to the text it learned from while the reward pulls it away. 0 when
    ``lm_coef`` is 0."""
    if settings.lm_coef == 0:
        return torch.zeros(())
    x, y = data.get_batch(run.text, run.policy.config.block_size, settings.lm_windows,
                          run.generator)
    device = next(run.policy.parameters()).device
    return settings.lm_coef * run.policy(x.to(device), y.to(device))[1]


def _finish(run: Run, settings: Training) -> torch.nn.Module:
    """The trained policy as a plain model: LoRA merged, frozen, eval mode."""
    if settings.lora_rank is not None:
        merge_lora(run.policy)
    return run.policy.requires_grad_(False).eval()


def _log(log: list[dict], record: dict, progress: Progress | None) -> None:
    log.append(record)
    if progress is not None:
        progress(record)


def _record(step: int, batch: Samples, run: Run, loss: float, kl: float) -> dict:
    """A step's log record: the batch's :meth:`Samples.record`, the KL and loss, the lines
    sampled so far and the CPU seconds since the start."""
    return {"step": step + 1, **batch.record(), "kl": kl, "loss": loss,
            "lines": (step + 1) * len(batch.lines), "cpu_seconds": time.process_time() - run.start}


def _grpo_step(run: Run, batch: Samples, s: GRPOSettings, step: int) -> tuple[float, float]:
    """The inner steps of GRPO on one batch of groups: the last loss, and the KL to the
    reference (k3, per sampled token) before the first step."""
    args = (batch.prompts, batch.tokens, batch.mask, s.temperature)
    advantages = group_advantages(batch.rewards.view(-1, s.samples)).flatten()  # (B,)
    with torch.no_grad():
        ref = completion_logprobs(run.reference, *args)
        old = completion_logprobs(run.policy, *args) if s.inner_steps > 1 else None
    for _ in range(s.inner_steps):
        logp = completion_logprobs(run.policy, *args)
        old = logp.detach() if old is None else old  # one inner step: the ratio is 1
        loss = grpo_loss(logp, old, ref, advantages, batch.mask, s.clip, s.kl_coef)
        value = optimize(run.optimizer, loss + lm_loss(run, s), s.max_grad_norm, step)
    kl = float((kl_k3(old, ref) * batch.mask).sum() / batch.mask.sum())
    return value, kl


def train_grpo(model: torch.nn.Module, tokenizer: Tokenizer, prompts: torch.Tensor,
               settings: GRPOSettings | None = None, progress: Progress | None = None,
               text: torch.Tensor | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """GRPO on ``prompts`` ``(N, P)``: each step samples a group of ``settings.samples`` lines
    after each of ``prompts_per_step`` prompts from the current policy, scores them, and takes
    ``inner_steps`` steps on :func:`grpo_loss` (plus :func:`lm_loss` on ``text`` ``(M,)``,
    the training text's tokens, needed when ``lm_coef`` > 0); the old log-probabilities are
    the policy's before the first of them (so with one inner step the ratio is 1 and only its
    gradient counts). Returns a trained copy of ``model`` (``model`` is not changed) and a
    record per step: ``step, reward, ten_syllables, english, kl, loss, lines, cpu_seconds``."""
    s = GRPOSettings() if settings is None else settings
    run, log = start_run(model, tokenizer, prompts, s, text), []
    for step in range(s.steps):
        batch = sample_scored(run.policy, tokenizer, step_prompts(prompts, step, s), s,
                              run.newline, run.generator)
        _log(log, _record(step, batch, run, *_grpo_step(run, batch, s, step)), progress)
    return _finish(run, s), log


def preference_pairs(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rows for DPO from rewards ``(P, K)``: per prompt the row (of the
    flattened ``P * K``) of the highest reward and of the lowest, the first of equal ones;
    prompts whose ``K`` rewards are all equal give no pair. Two ``(pairs,)`` index tensors."""
    best, worst = rewards.argmax(1), rewards.argmin(1)
    keep = rewards.amax(1) > rewards.amin(1)
    base = torch.arange(len(rewards)) * rewards.size(1)
    return (base + best)[keep], (base + worst)[keep]


def _dpo_step(run: Run, batch: Samples, s: DPOSettings, step: int) -> tuple[float, float]:
    """The inner steps of DPO on one batch's pairs: the last loss and the KL (k3, per token
    of the paired lines, before the first step); NaN both when no prompt gave a pair."""
    chosen, rejected = preference_pairs(batch.rewards.view(-1, s.samples))
    if len(chosen) == 0:
        return math.nan, math.nan
    rows, n = torch.cat([chosen, rejected]), len(chosen)
    args = (batch.prompts[rows], batch.tokens[rows], batch.mask[rows], s.temperature)
    with torch.no_grad():
        ref = completion_logprobs(run.reference, *args)
    kl = math.nan
    for inner in range(s.inner_steps):
        logp = completion_logprobs(run.policy, *args)
        if inner == 0:
            kl = float((kl_k3(logp.detach(), ref) * args[2]).sum() / args[2].sum())
        pol, old = logp.sum(1), ref.sum(1)  # (2n,): chosen, then rejected
        loss = dpo_loss(pol[:n], pol[n:], old[:n], old[n:], s.beta)
        value = optimize(run.optimizer, loss + lm_loss(run, s), s.max_grad_norm, step)
    return value, kl


def train_dpo(model: torch.nn.Module, tokenizer: Tokenizer, prompts: torch.Tensor,
              settings: DPOSettings | None = None, progress: Progress | None = None,
              text: torch.Tensor | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Online DPO on ``prompts`` ``(N, P)``: each step samples ``settings.samples`` lines after
    each of ``prompts_per_step`` prompts from the current policy, pairs each prompt's best
    line with its worst (:func:`preference_pairs`) and takes ``inner_steps`` steps on
    :func:`dpo_loss` against the frozen reference (plus :func:`lm_loss` on ``text``, as
    :func:`train_grpo`). Returns a trained copy of ``model`` (``model`` is not changed) and a
    record per step: ``step, reward, ten_syllables, english, kl, loss, pairs, lines,
    cpu_seconds`` (``loss`` and ``kl`` NaN in a step without a pair, which trains nothing)."""
    s = DPOSettings() if settings is None else settings
    run, log = start_run(model, tokenizer, prompts, s, text), []
    for step in range(s.steps):
        batch = sample_scored(run.policy, tokenizer, step_prompts(prompts, step, s), s,
                              run.newline, run.generator)
        record = _record(step, batch, run, *_dpo_step(run, batch, s, step))
        record["pairs"] = len(preference_pairs(batch.rewards.view(-1, s.samples))[0])
        _log(log, record, progress)
    return _finish(run, s), log


# ---------------------------------------------------------------------------------------------
# One entry point, and measuring
# ---------------------------------------------------------------------------------------------


def show_best_of_n(model: torch.nn.Module, tokenizer: Tokenizer, prompts: torch.Tensor,
                   settings: BestOfNSettings) -> dict:
    """What best-of-N gains on ``prompts``: the mean reward and share of ten-syllable lines of
    the first sample of each prompt and of the best of ``n``, the lines sampled, CPU seconds."""
    start = time.process_time()
    best = best_of_n(model, tokenizer, prompts, settings.n, settings.reward,
                     settings.temperature, settings.top_k, settings.seed,
                     settings.max_new_tokens)
    first = [g[0] for g in best.candidates]

    def ten(lines: list[str]) -> float:
        return sum(verse.line_syllables(x) == verse.TARGET_SYLLABLES for x in lines) / len(lines)

    return {"step": 0, "reward_first": float(best.rewards[:, 0].mean()),
            "reward": float(best.rewards.max(1).values.mean()), "ten_syllables_first":
            ten(first), "ten_syllables": ten(best.lines), "lines": best.rewards.numel(),
            "cpu_seconds": time.process_time() - start}


def align(model: torch.nn.Module, tokenizer: Tokenizer, method: str,
          settings: Sampling | None = None, progress: Progress | None = None,
          corpus: str | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Raise the reward of ``model``'s lines by ``method`` (:data:`METHODS`) with its
    ``settings`` (by default :data:`SETTINGS`\\ ``[method]()``), on prompts of the training
    plays; ``progress`` is called with each step's record. Returns the model and the log:
    for DPO and GRPO a trained copy (``model`` is not changed); best-of-N trains nothing, so it
    returns ``model`` itself and one record of what picking the best gains."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    settings = SETTINGS[method]() if settings is None else settings
    if type(settings) is not SETTINGS[method]:
        raise TypeError(f"method {method!r} takes {SETTINGS[method].__name__}, got "
                        f"{type(settings).__name__}")
    corpus = data.load_text() if corpus is None else corpus
    n = settings.prompts if method == "best-of-n" else settings.steps * settings.prompts_per_step
    prompts = training_prompts(tokenizer, n, settings.prompt_tokens, settings.seed, corpus)
    if method == "best-of-n":
        log = [show_best_of_n(model, tokenizer, prompts, settings)]
        if progress is not None:
            progress(log[0])
        return model, log
    text = training_text(tokenizer, corpus) if settings.lm_coef > 0 else None
    train = train_dpo if method == "dpo" else train_grpo
    return train(model, tokenizer, prompts, settings, progress, text)


def held_out_nats(model: torch.nn.Module, tokenizer: Tokenizer, corpus: str,
                  pieces: int = 8) -> float:
    """Nats per character on the held-out :data:`TEST_PLAYS`, ``pieces`` stretches of each
    scored as the report card scores them (:func:`evaluate.held_out`)."""
    settings = evaluate.Settings(plays=TEST_PLAYS, play_pieces=pieces, val_chars=1000)
    card = evaluate.held_out(model, tokenizer, corpus, settings)
    return card["all_plays"]["bits_per_char"] * evaluate.LN2


def measure(model: torch.nn.Module, tokenizer: Tokenizer, prompts: int = 200,
            best_of: int = 1, reward: Callable[[str], float] = verse.reward,
            corpus: str | None = None, seed: int = 0, prompt_tokens: int = PROMPT_TOKENS,
            pieces: int = 8) -> dict:
    """One line after each of ``prompts`` speech openings of the held-out
    :data:`TEST_PLAYS`, cut to ``prompt_tokens``, sampled at temperature 0.8, top-k 40 (the
    best of ``best_of`` by ``reward``, :func:`best_of_n`): the share of
    lines of exactly ten syllables (with its 95% Wilson interval), the mean reward
    (:func:`verse.reward`, default weights, whatever picked the lines), the English-word
    share, distinct-2, the lines sampled, the lines, and the held-out nats per character
    (:func:`held_out_nats`)."""
    corpus = data.load_text() if corpus is None else corpus
    openings = evaluate.speech_openings(plays_.load_plays(TEST_PLAYS), set(corpus))
    ids = evaluate.encode_prompts(tokenizer, openings, prompts, prompt_tokens, seed)[1]
    lines = best_of_n(model, tokenizer, ids, best_of, reward, seed=seed).lines
    counts = [verse.line_syllables(x) for x in lines]
    words = evaluate.word_measures(lines)
    return {"ten_syllables": evaluate.share(counts.count(verse.TARGET_SYLLABLES), len(lines)),
            "reward": sum(map(verse.reward, lines)) / len(lines),
            "english_words": words["english_words"], "distinct_2": words["distinct_2"],
            "lines_sampled": prompts * best_of, "lines": lines,
            "nats_per_char": held_out_nats(model, tokenizer, corpus, pieces)}
