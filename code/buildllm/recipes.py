"""The book's training recipes, by name: ``buildllm train --config book``. The one place they
are written; :meth:`buildllm.train.TrainConfig.from_json` reads a recipe by its name, or any
JSON file with the same fields. Explained in the chapters "Training on a CPU" and "From GPT-2
to today's LLMs"; ``make bench`` measures them against nanoGPT's.
"""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    # The book's model: BPE with 1024 tokens, 4 layers, 128 wide, 128-token context, many
    # small steps. A minute or two on two CPU cores.
    "book": dict(model={"preset": "book", "bias": False}, tokenizer="bpe", vocab_size=1024,
                 batch_size=8, max_steps=1200, lr=3e-3, min_lr=3e-4, warmup_steps=50,
                 eval_interval=200),
    # nanoGPT's CPU recipe for Shakespeare (its README): one id per character, 4 layers, 4 heads,
    # 128 wide, a 64-character context, 12 sequences a step, 2000 steps, no dropout.
    "nanogpt_cpu": dict(model={"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128,
                               "bias": False}, tokenizer="char", batch_size=12,
                        max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                        eval_interval=250),
    # The book's best CPU recipe (chapter "From GPT-2 to today's LLMs"): the `llama` preset cut
    # to two blocks and a 64-token context, on the same BPE tokenizer, many small steps at a high
    # learning rate, held for the first half of the run, then brought down to 0 in a straight
    # line (WSD). Tuned on two cores for the time that nanogpt_cpu's 2000 steps take there
    # (`make bench BENCH=recipe`; the ablation behind it: `make bench BENCH=ablation`).
    "modern": dict(model={"preset": "llama", "n_layer": 2, "block_size": 64}, tokenizer="bpe",
                   vocab_size=1024, batch_size=16, max_steps=2000, lr=3e-3, min_lr=0.0,
                   warmup_steps=50, schedule="wsd", cooldown=0.5, eval_interval=500),
}
