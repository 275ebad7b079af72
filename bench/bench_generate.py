"""Generation speed: the key/value cache against recomputing everything, and against Hugging Face.

GPT-2 small's shape (124M parameters) with random weights, one prompt of 8 tokens, 256 new
tokens, greedy, on the CPU with PyTorch's default thread count.

1. Cached generation against naive (uncached) generation. Naive generation runs the whole
   sequence through the model at every step; its 256 steps together take minutes on a small
   CPU, so they are timed on a sample: one step of every 16 consecutive lengths, at the middle
   of the group, times 16 (the midpoint rule; the cost of a step grows smoothly with its
   length). Goal: at least 5x faster.
2. Our cached generation against ``transformers``' ``generate`` on the same weights (converted
   offline by :func:`buildllm.convert.to_hf`), greedy, the same 256 tokens, which must be equal
   token for token. Goal: at least as many tokens per second (ratio >= 1.0).
"""

from __future__ import annotations

import torch

from bench import Result, best_time
from buildllm import generate as gen
from buildllm.model import GPT, preset

PROMPT_LEN, NEW_TOKENS, GROUP = 8, 256, 16


def _model() -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(0)
    model = GPT(preset("gpt2")).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, PROMPT_LEN))
    return model, prompt


def _naive_seconds(model: GPT, sequence: torch.Tensor) -> float:
    """Estimated time of NEW_TOKENS naive steps (midpoint rule over groups of GROUP steps)."""
    total = 0.0
    with torch.no_grad():
        for start in range(PROMPT_LEN, PROMPT_LEN + NEW_TOKENS, GROUP):
            length = start + GROUP // 2  # the step that sees `length` tokens
            idx = sequence[:, :length]
            total += GROUP * best_time(lambda idx=idx: model(idx)[0][:, -1].argmax(-1), repeat=1)
    return total


def run() -> list[Result]:
    from transformers import GenerationConfig

    from buildllm.convert import to_hf

    model, prompt = _model()
    hf = to_hf(model).eval()
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
    mask = torch.ones_like(prompt)
    outputs = {}

    def ours() -> None:
        outputs["ours"] = gen.generate(model, prompt, NEW_TOKENS, temperature=0)

    def theirs() -> None:
        with torch.no_grad():
            outputs["hf"] = hf.generate(prompt, attention_mask=mask, generation_config=config)

    gen.generate(model, prompt, 4, temperature=0)  # warm up both
    theirs_warm = hf.generate(prompt, attention_mask=mask, max_new_tokens=4, do_sample=False,
                              pad_token_id=0)
    del theirs_warm
    cached, hf_time = float("inf"), float("inf")
    for _ in range(2):  # interleaved, so that both see the same load on the machine
        cached = min(cached, best_time(ours, repeat=1))
        hf_time = min(hf_time, best_time(theirs, repeat=1))
    same = torch.equal(outputs["ours"], outputs["hf"])
    naive = _naive_seconds(model, outputs["ours"])
    threads = torch.get_num_threads()
    return [
        Result(f"generate: KV cache vs naive, GPT-2 small, {NEW_TOKENS} new tokens",
               ours=NEW_TOKENS / cached, reference=NEW_TOKENS / naive, unit="tokens/s",
               goal=5.0, higher_is_better=True,
               note=f"naive timed on 1 step in {GROUP}; {threads} threads"),
        Result(f"generate: ours (cached) vs transformers generate, greedy, {NEW_TOKENS} tokens",
               ours=NEW_TOKENS / cached, reference=NEW_TOKENS / hf_time, unit="tokens/s",
               goal=1.0, higher_is_better=True,
               note=f"same tokens: {'yes' if same else 'NO'}; {threads} threads"),
    ]
