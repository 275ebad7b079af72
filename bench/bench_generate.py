"""Generation speed: the key/value cache, Hugging Face, memory bandwidth and int8 weights.

GPT-2 small's shape (124M parameters) with random weights, one prompt of 8 tokens, 256 new
tokens, greedy, on the CPU with PyTorch's default thread count. Timings are the best of 3
rounds, each of which runs every decoder once, so that all see the same load on the machine.

1. Cached generation against naive (uncached) generation. Naive generation runs the whole
   sequence through the model at every step; its 256 steps together take minutes on a small
   CPU, so they are timed on a sample: one step of every 16 consecutive lengths, at the middle
   of the group, times 16 (the midpoint rule; the cost of a step grows smoothly with its
   length). Goal: at least 5x faster.
2. Our cached generation against ``transformers``' ``generate`` on the same weights (converted
   offline by :func:`buildllm.convert.to_hf`), greedy, the same 256 tokens, which must be equal
   token for token. Goal: at least as many tokens per second (ratio >= 1.0).
3. Memory: this machine's read bandwidth, measured in the same run (the sum of a 1 GiB float32
   tensor, far larger than the caches, best of 5 in each round of the timings), against the
   bandwidth each decoder achieves: the bytes one generated token reads divided by the time
   per token. Those bytes are the weights (every matrix and vector once, one row of each
   embedding table; a head tied to the embedding reads the whole matrix) plus the keys and
   values the attention reads from the cache (their mean over the 256 steps); writes and
   activations are not counted. Goal: cached float32 generation uses at least 70% of the
   measured bandwidth.
4. Int8 weights (:mod:`buildllm.quantize`), cached, against ``transformers``' float32
   ``generate``. Goal: at least 2x the tokens per second.
5. Quality of int8 on the book's trained model: validation bits per character against float32
   (goal: at most 1% more) and greedy tokens from a fixed prompt (reported).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from bench import Result
from buildllm import generate as gen
from buildllm.config import preset
from buildllm.evaluate import quantization_cost
from buildllm.model import GPT
from buildllm.quantize import Int8Linear, quantize_model
from buildllm.repro import best_time

PROMPT_LEN, NEW_TOKENS, GROUP, ROUNDS = 8, 256, 16, 3
QUALITY_PROMPT = "ROMEO:\n"


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


def read_bandwidth(gib: float = 1.0, repeat: int = 5) -> float:
    """Memory read bandwidth in GB/s: the best of ``repeat`` sums of ``gib`` GiB of float32."""
    x = torch.ones(int(gib * 2**30) // 4)
    return x.nbytes / best_time(x.sum, repeat=repeat) / 1e9


def weight_bytes(model: GPT) -> int:
    """Bytes of weights one token's forward pass reads (see the module docstring)."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            total += module.weight[0].nbytes  # one row
        elif isinstance(module, Int8Linear):
            total += module.weight_q.nbytes + module.weight_scale.nbytes
            total += module.bias.nbytes if module.bias is not None else 0
        else:  # linear layers (a tied head reads the embedding matrix) and normalizations
            total += sum(p.nbytes for p in module.parameters(recurse=False))
    return total


def cache_bytes(model: GPT) -> float:
    """Mean bytes of keys and values the attention reads per step over the NEW_TOKENS steps."""
    attn = model.h[0].attn
    mean_length = PROMPT_LEN + (NEW_TOKENS + 1) / 2  # positions in the cache, on average
    return 2 * model.config.n_layer * attn.n_kv_head * attn.head_dim * 4 * mean_length


def _time_generation(model: GPT, int8: GPT, prompt: torch.Tensor) -> tuple[dict, dict]:
    """Seconds for NEW_TOKENS greedy tokens of each decoder and the read bandwidth in GB/s
    (key "bandwidth"), each the best of ROUNDS rounds that interleave them all; the tokens."""
    from transformers import GenerationConfig

    from buildllm.convert import to_hf

    hf = to_hf(model).eval()
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
    mask = torch.ones_like(prompt)
    runs = {
        "ours": lambda: gen.generate(model, prompt, NEW_TOKENS, temperature=0),
        "int8": lambda: gen.generate(int8, prompt, NEW_TOKENS, temperature=0),
        "hf": lambda: hf.generate(prompt, attention_mask=mask, generation_config=config),
    }
    gen.generate(model, prompt, 4, temperature=0)  # warm up
    gen.generate(int8, prompt, 4, temperature=0)
    hf.generate(prompt, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    seconds, tokens, bandwidth = dict.fromkeys(runs, float("inf")), {}, 0.0
    for _ in range(ROUNDS):  # interleaved, so that all see the same load on the machine
        bandwidth = max(bandwidth, read_bandwidth())
        for name, run in runs.items():
            start = time.perf_counter()
            with torch.no_grad():
                tokens[name] = run()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    return {**seconds, "bandwidth": bandwidth}, tokens


def _quality_results() -> list[Result]:
    from buildllm.data import load_text
    from buildllm.pretrained import pretrained

    model, tokenizer = pretrained("book")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the book's model is tiny: a second thread only waits (and more
    try:  # so on a busy machine); the numbers do not depend on it
        q = quantization_cost(model, tokenizer, load_text(), QUALITY_PROMPT, NEW_TOKENS)
    finally:
        torch.set_num_threads(threads)
    return [
        Result("int8: validation bits/char vs float32, book model",
               ours=q["bits_per_char_int8"], reference=q["bits_per_char_fp32"],
               unit="bits/char", goal=1.01, higher_is_better=False,
               note="whole validation split"),
        Result(f"int8: greedy tokens equal to float32's, {NEW_TOKENS} steps",
               ours=q["same_choice_on_model_text"], reference=q["steps"], unit="tokens",
               goal=None, higher_is_better=True,
               note=f"prompt {QUALITY_PROMPT!r}; on float32's text; generating freely the "
                    f"texts agree for {q['same_before_first_difference']} tokens, then "
                    f"differ ({q['same_positions']} equal positions in all)"),
    ]


def run() -> list[Result]:
    model, prompt = _model()
    int8 = quantize_model(model)
    seconds, tokens = _time_generation(model, int8, prompt)
    bandwidth = seconds.pop("bandwidth")
    same_hf = torch.equal(tokens["ours"], tokens["hf"])
    same_int8 = int((tokens["ours"] == tokens["int8"]).sum()) - PROMPT_LEN
    naive = _naive_seconds(model, tokens["ours"])
    kv = cache_bytes(model)
    fp32_bytes, int8_bytes = weight_bytes(model) + kv, weight_bytes(int8) + kv
    rate = {name: NEW_TOKENS / s for name, s in seconds.items()}  # tokens/s
    threads = torch.get_num_threads()
    mb = f"{fp32_bytes / 1e6:.0f} MB/token ({kv / 1e6:.0f} MB of it the KV cache)"

    def memory(name: str, tokens_per_s: float, nbytes: float, goal: float | None,
               note: str) -> Result:
        return Result(f"memory: {name}, GB/s vs measured read bandwidth",
                      ours=nbytes * tokens_per_s / 1e9, reference=bandwidth, unit="GB/s",
                      goal=goal, higher_is_better=True, note=note)

    return [
        Result(f"generate: KV cache vs naive, GPT-2 small, {NEW_TOKENS} new tokens",
               ours=rate["ours"], reference=NEW_TOKENS / naive, unit="tokens/s",
               goal=5.0, higher_is_better=True,
               note=f"naive timed on 1 step in {GROUP}; {threads} threads"),
        Result(f"generate: ours (cached) vs transformers generate, greedy, {NEW_TOKENS} tokens",
               ours=rate["ours"], reference=rate["hf"], unit="tokens/s",
               goal=1.0, higher_is_better=True,
               note=f"same tokens: {'yes' if same_hf else 'NO'}; {threads} threads"),
        Result("generate: int8 (cached) vs transformers generate (float32)",
               ours=rate["int8"], reference=rate["hf"], unit="tokens/s",
               goal=2.0, higher_is_better=True,
               note=f"{same_int8} of {NEW_TOKENS} tokens equal to float32's (random weights); "
                    f"{threads} threads"),
        memory("ours float32 cached", rate["ours"], fp32_bytes, 0.7, mb),
        memory("ours int8 cached", rate["int8"], int8_bytes, None,
               f"{int8_bytes / 1e6:.0f} MB/token ({kv / 1e6:.0f} MB of it the KV cache)"),
        memory("transformers float32", rate["hf"], fp32_bytes, None, mb),
        memory("ours float32 naive", NEW_TOKENS / naive, weight_bytes(model), None,
               f"{weight_bytes(model) / 1e6:.0f} MB/token: weights only, no cache"),
        *_quality_results(),
    ]
