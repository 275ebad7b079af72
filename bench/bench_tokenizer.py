"""Tokenizer speed: our pure-Python BPE against Hugging Face `tokenizers` (Rust) and `tiktoken`.

1. Training a 4096-token vocabulary on Tiny Shakespeare: our time / HF time (goal <= 1).
2. Encoding Tiny Shakespeare: our MB/s / tiktoken MB/s (goal >= 0.5), measured as every speed
   here is, in steady state: the best of five calls, the chunk cache filled by the first. The
   first call of a fresh tokenizer (empty cache: each distinct chunk merged once in Python) is
   reported too, for information.
3. The fast trainer against the naive one on a 100 kB slice (goal: at least 100x faster).

Both sides run on one thread: `make bench` sets TOKENIZERS_PARALLELISM=false, and so does this
module when it is not set.
"""

from __future__ import annotations

import os
import time

from bench import Result
from buildllm import data
from buildllm.bpe import ENDOFTEXT, train_merges_naive
from buildllm.bpe_fast import train_merges
from buildllm.repro import best_time
from buildllm.tokenizer import BPETokenizer, train_bpe
from buildllm.tokenizer_export import to_tiktoken

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB_SIZE = 4096


def _hf_train(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text], trainer)
    assert tok.get_vocab_size() == vocab_size
    return tok


def run() -> list[Result]:
    text = data.load_text()
    megabytes = len(text.encode("utf-8")) / 1e6
    results = []

    ours = best_time(lambda: train_bpe(text, VOCAB_SIZE), repeat=3)
    ref = best_time(lambda: _hf_train(text, VOCAB_SIZE), repeat=3)
    results.append(Result(f"tokenizer: train {VOCAB_SIZE} tokens on Tiny Shakespeare (time)",
                          ours, ref, "s", goal=1.0, higher_is_better=False,
                          note="reference: HF tokenizers BpeTrainer, ByteLevel"))

    tok = train_bpe(text, VOCAB_SIZE)
    enc = to_tiktoken(tok)
    assert enc.encode(text) == tok.encode(text)  # same ids, so the speeds compare like for like
    ref_speed = megabytes / best_time(lambda: enc.encode(text), repeat=5)
    ours_speed = megabytes / best_time(lambda: tok.encode(text), repeat=5)  # cache filled above
    results.append(Result("tokenizer: encode Tiny Shakespeare, steady state (MB/s)",
                          ours_speed, ref_speed, "MB/s", goal=0.5, higher_is_better=True,
                          note="reference: tiktoken.Encoding built from our merges"))
    cold = float("inf")
    for _ in range(3):
        fresh = BPETokenizer(tok.merges, tok.special_tokens)
        start = time.perf_counter()
        fresh.encode(text)
        cold = min(cold, time.perf_counter() - start)
    results.append(Result("tokenizer: encode, first call of a fresh tokenizer (MB/s)",
                          megabytes / cold, ref_speed, "MB/s", goal=None, higher_is_better=True,
                          note="each of the ~13k distinct chunks that are not tokens is merged "
                               "once in Python"))

    piece = text[:100_000]
    num_merges = 512 - 256
    fast = best_time(lambda: train_merges(piece, num_merges), repeat=3)
    start = time.perf_counter()
    naive_merges = train_merges_naive(piece, num_merges)
    naive = time.perf_counter() - start
    assert naive_merges == train_merges(piece, num_merges)
    results.append(Result(f"tokenizer: fast / naive trainer, 100 kB, {num_merges} merges (time)",
                          fast, naive, "s", goal=0.01, higher_is_better=False,
                          note=f"fast is {naive / fast:.0f}x faster"))
    return results
