"""Training and generation on a CUDA GPU (`--device cuda`, bf16 autocast).

Skipped where PyTorch sees no CUDA GPU, as on the book's CI machines: these run on a machine
with one (`pytest tests/test_gpu.py`). The CPU-side checks of the same options (a clear error
for a missing GPU, bf16 autocast on the CPU) are in test_train.py and test_generate.py.
"""

from __future__ import annotations

import pytest
import torch

from buildllm import checkpoint, data, train
from buildllm import generate as gen
from buildllm.model import GPT, GPTConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
        * 120)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))


def tiny(**overrides) -> train.TrainConfig:
    settings = dict(model={"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32},
                    tokenizer="char", batch_size=8, max_steps=40, lr=3e-3, min_lr=3e-4,
                    warmup_steps=5, eval_interval=20, eval_windows=8, log_interval=1,
                    device="cuda")
    return train.TrainConfig.from_dict({**settings, **overrides})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("preset", [None, "llama"])
def test_training_on_the_gpu(tmp_path, dtype, preset):
    """The loss falls; weights stay float32 on the GPU; the checkpoint loads on the CPU and
    gives the GPU's logits."""
    model = {"preset": preset, "block_size": 16, "n_layer": 2, "n_embd": 32} if preset else None
    config = tiny(dtype=dtype, **({"model": model} if model else {}))
    result = train.train(config, tmp_path / "run", text=TEXT)
    evals = [r for r in result.log if "val_loss" in r]
    assert result.final["loss"] < 0.7 * evals[0]["val_loss"]
    assert all(p.device.type == "cuda" and p.dtype == torch.float32
               for p in result.model.parameters())
    on_cpu, _ = checkpoint.load_model(tmp_path / "run" / "checkpoint")
    idx = torch.randint(0, on_cpu.config.vocab_size, (2, 16))
    with torch.no_grad():
        cpu_logits, _ = on_cpu(idx)
        gpu_logits, _ = result.model.eval()(idx.cuda())
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, rtol=1e-4, atol=1e-4)


def test_resume_on_the_gpu_continues_exactly(tmp_path, monkeypatch):
    """With dropout, so that the GPU's random state must be saved and restored too."""
    config = tiny(max_steps=24, eval_interval=8, model={
        "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.1})
    whole = train.train(config, tmp_path / "whole", text=TEXT)
    calls = {"n": 0}
    get_batch = data.get_batch

    def crash_at_step_13(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt("the machine went down")
        return get_batch(*args, **kwargs)

    monkeypatch.setattr(data, "get_batch", crash_at_step_13)
    with pytest.raises(KeyboardInterrupt):
        train.train(config, tmp_path / "part", text=TEXT)
    monkeypatch.setattr(data, "get_batch", get_batch)
    resumed = train.train(config, tmp_path / "part", resume=True, text=TEXT)
    steps = [(r["step"], r["loss"]) for r in resumed.log if "loss" in r]
    assert steps == [(r["step"], r["loss"]) for r in whole.log if "loss" in r]
    assert resumed.final["loss"] == whole.final["loss"]


def test_generation_on_the_gpu_equals_the_cpu():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=61, block_size=24, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config).eval()
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    on_cpu = gen.generate(model, prompt, 15, temperature=0)
    model.cuda()
    with_cache = gen.generate(model, prompt, 15, temperature=0)
    without = gen.generate(model, prompt, 15, temperature=0, use_cache=False)
    assert with_cache.device.type == "cuda"
    assert torch.equal(with_cache.cpu(), on_cpu) and torch.equal(without, with_cache)
    sampled = gen.generate(model, prompt, 15, top_k=5, seed=7)
    assert torch.equal(sampled, gen.generate(model, prompt, 15, top_k=5, seed=7))
