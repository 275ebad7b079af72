"""Tests of buildllm.train and the token batches of buildllm.data: the loss per character, the
schedule, exact resume, NaN detection, 2 processes == 1 process, a short run whose loss falls."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm import checkpoint, data, train
from buildllm.tokenizer import BPETokenizer, CharTokenizer
from devices import CUDA, DEVICES

ROOT = Path(__file__).resolve().parent.parent
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
        * 120)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))


def tiny(**overrides) -> train.TrainConfig:
    settings_ = dict(model={"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32},
                     tokenizer="char", batch_size=8, max_steps=20, lr=3e-3, min_lr=3e-4,
                     warmup_steps=5, eval_interval=10, eval_windows=8, log_interval=1)
    return train.TrainConfig.from_dict({**settings_, **overrides})


def losses(log: list[dict]) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in log if "loss" in r]


# -- batches ---------------------------------------------------------------------------------

def test_get_batch_targets_are_inputs_shifted():
    ids = torch.arange(100)
    x, y = data.get_batch(ids, 8, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.long
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    torch.testing.assert_close(y - x, torch.ones_like(x))  # consecutive ids: y = x + 1
    # 10 ids, windows of 8 + 1: the only starts are 0 and 1, both drawn, from the generator
    starts = {int(data.get_batch(torch.arange(10), 8, 1, g)[0][0, 0])
              for g in [torch.Generator().manual_seed(s) for s in range(40)]}
    assert starts == {0, 1}
    state = torch.get_rng_state()
    a = data.get_batch(ids, 8, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], data.get_batch(ids, 8, 4, torch.Generator().manual_seed(5))[0])
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not touched


def test_get_batch_too_short_text():
    with pytest.raises(ValueError, match="block_size=8"):
        data.get_batch(torch.arange(8), 8, 2)


def test_eval_windows_score_every_token_once():
    ids = torch.arange(35)
    x, y = data.eval_windows(ids, 8)
    assert x.shape == (4, 8)
    torch.testing.assert_close(y.flatten(), torch.arange(1, 33))
    x, _ = data.eval_windows(ids, 8, max_windows=2)
    torch.testing.assert_close(x[:, 0], torch.tensor([0, 24]))  # the first and the last


def test_damaged_caches_are_rebuilt(tmp_path):
    """A truncated tokenizer file or a garbled token array in the cache is made again, not
    reported as the user's mistake."""
    config = train.TrainConfig.from_dict({"tokenizer": "bpe", "vocab_size": 280})
    tok = train.make_tokenizer(config, TEXT)
    [cached] = (data.cache_dir() / "tokenizers").iterdir()
    cached.write_text(cached.read_text()[:100])
    assert train.make_tokenizer(config, TEXT).merges == tok.merges
    ids = data.encode_corpus(tok, TEXT)
    [array] = (data.cache_dir() / "tokens").iterdir()
    array.write_bytes(b"garbage")
    np.testing.assert_array_equal(data.encode_corpus(tok, TEXT), ids)
    assert np.load(array).dtype == np.uint16


def test_eval_windows_needs_at_least_one():
    with pytest.raises(ValueError, match="max_windows must be at least 1"):
        data.eval_windows(torch.arange(100), 8, 0)


def test_encode_corpus_is_cached_uint16():
    tok = CharTokenizer(TEXT)
    ids = data.encode_corpus(tok, TEXT)
    assert ids.dtype == np.uint16 and tok.decode(ids.tolist()) == TEXT
    assert len(list((data.cache_dir() / "tokens").glob("*.npy"))) == 1
    def no_encoding(text):
        raise AssertionError("encoded again instead of read from the cache")

    tok.encode = no_encoding
    np.testing.assert_array_equal(data.encode_corpus(tok, TEXT), ids)  # from the cache
    other = CharTokenizer(TEXT + "~")  # another tokenizer: another cache entry
    with pytest.raises(ValueError, match="does not fit in uint16"):
        data.encode_corpus(SimpleNamespace(vocab_size=70_000), TEXT)  # checked before all else
    data.encode_corpus(other, TEXT)
    assert len(list((data.cache_dir() / "tokens").glob("*.npy"))) == 2


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_char_counts_sum_to_the_characters(text):
    counts = data.char_counts(BPE)
    assert int(counts[BPE.encode(text)].sum()) == len(text)


BPE = BPETokenizer().train("héllo wörld, hello world! ünïcode " * 20, 300)


# -- the loss per character --------------------------------------------------------------------

class Uniform(torch.nn.Module):
    """Predicts every token with probability 1/V: the loss is ln V per token."""

    def __init__(self, V):
        super().__init__()
        self.V, self.w = V, torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.V) + 0 * self.w, None


def test_bits_per_char_by_hand():
    # Four tokens covering 1, 2, 3 and 0 characters. The targets 1 2 3 | 0 2 2 are 6 tokens
    # covering 2+3+0 + 1+3+3 = 12 characters; a uniform model loses ln 4 nats per token.
    counts = torch.tensor([1, 2, 3, 0])
    x = torch.tensor([[0, 1, 2], [3, 0, 2]])
    y = torch.tensor([[1, 2, 3], [0, 2, 2]])
    result = train.evaluate(Uniform(4), x, y, counts)
    assert result["loss"] == pytest.approx(math.log(4))
    assert result["nats_per_char"] == pytest.approx(6 * math.log(4) / 12)
    assert result["bits_per_char"] == pytest.approx(6 * 2 / 12)  # ln 4 nats = 2 bits
    assert result["chars_per_token"] == pytest.approx(2.0)
    assert train.per_character(math.log(2) * 10, 5) == pytest.approx(
        {"nats_per_char": 2 * math.log(2), "bits_per_char": 2.0})


# -- optimizer and schedule --------------------------------------------------------------------

def test_weight_decay_only_on_matrices():
    from buildllm.model import GPT

    config = tiny()
    model = GPT(config.model_config(10))
    decay, no_decay = train.make_optimizer(model, config).param_groups
    assert decay["weight_decay"] == config.weight_decay and no_decay["weight_decay"] == 0
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    n = sum(p.numel() for p in decay["params"] + no_decay["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_learning_rate_warmup_then_cosine():
    c = tiny(lr=1.0, min_lr=0.1, warmup_steps=4)
    warm = [train.learning_rate(s, s / 100, c) for s in range(4)]
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert train.learning_rate(50, 0.5, c) == pytest.approx(0.55)
    assert train.learning_rate(100, 1.0, c) == pytest.approx(0.1)
    decay = [train.learning_rate(s, s / 100, c) for s in range(4, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_config_errors_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="'words'"):
        tiny(tokenizer="words")
    with pytest.raises(ValueError, match="bogus"):
        train.TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="neither a recipe"):
        train.TrainConfig.from_json(tmp_path / "missing.json")


@pytest.mark.parametrize("name", sorted(train.RECIPES))
def test_config_files_are_the_recipes(name):
    from_file = train.TrainConfig.from_json(ROOT / "configs" / f"{name}.json")
    assert from_file == train.TrainConfig.from_json(name)


def test_resolve_device_explains_what_is_missing():
    assert train.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        train.resolve_device("gpu")
    with pytest.raises(ValueError, match="runs on cpu, cuda or mps"):
        train.resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU; use --device cpu"):
            train.resolve_device("cuda")
        with pytest.raises(ValueError, match="no CUDA GPU"):  # before any data is read
            train.train(tiny(device="cuda"), text=TEXT)
    else:
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"has {n} GPU"):
            train.resolve_device(f"cuda:{n}")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="no Apple GPU"):
            train.resolve_device("mps")


# -- training ----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_autocast_trains_like_float32(tmp_path, device):
    """--dtype bfloat16 (autocast, for GPUs; the CPU autocasts too): the loss falls as in
    float32, and the weights and the optimizer's state stay float32."""
    f32 = train.train(tiny(max_steps=40, device=device), text=TEXT)
    bf16 = train.train(tiny(max_steps=40, dtype="bfloat16", device=device), tmp_path / "run",
                       text=TEXT)
    assert all(p.dtype == torch.float32 and p.device.type == device
               for p in bf16.model.parameters())
    assert losses(bf16.log) != losses(f32.log)  # the products did run in bfloat16
    evals = [r for r in bf16.log if "val_loss" in r]
    assert bf16.final["loss"] < 0.7 * evals[0]["val_loss"]
    assert abs(bf16.final["loss"] - f32.final["loss"]) < 0.05 * f32.final["loss"]
    model, _ = checkpoint.load_model(tmp_path / "run" / "checkpoint")
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_trained_on_a_gpu_loads_on_the_cpu(tmp_path, device, dtype):
    """The Llama parts too (rotary tables are buffers that must follow the model)."""
    model = {"preset": "llama", "block_size": 16, "n_layer": 2, "n_embd": 32}
    result = train.train(tiny(max_steps=40, device=device, dtype=dtype, model=model),
                         tmp_path / "run", text=TEXT)
    evals = [r for r in result.log if "val_loss" in r]
    assert result.final["loss"] < 0.7 * evals[0]["val_loss"]
    on_cpu, _ = checkpoint.load_model(tmp_path / "run" / "checkpoint")
    idx = torch.randint(0, on_cpu.config.vocab_size, (2, 16))
    with torch.no_grad():
        cpu_logits, _ = on_cpu(idx)
        gpu_logits, _ = result.model.eval()(idx.to(device))
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, rtol=1e-4, atol=1e-4)


def test_gradient_clipping(monkeypatch):
    """The logged norm is the norm before clipping; the optimizer sees at most grad_clip.
    grad_clip=0 turns clipping off and logs no norm."""
    seen = []
    step = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    result = train.train(tiny(max_steps=5, grad_clip=0.01), text=TEXT)
    norms = [r["grad_norm"] for r in result.log if "grad_norm" in r]
    assert all(n > 0.01 for n in norms)  # would have been clipped ...
    assert max(seen) == pytest.approx(0.01, rel=1e-4)  # ... and was
    seen.clear()
    result = train.train(tiny(max_steps=5, grad_clip=0.0), text=TEXT)
    assert all(r["grad_norm"] is None for r in result.log if "grad_norm" in r)
    assert max(seen) > 0.01  # not clipped


def test_evaluate_does_not_depend_on_its_batch_size():
    tok = CharTokenizer(TEXT)
    ids = torch.tensor(tok.encode(TEXT))
    x, y = data.eval_windows(ids, 16)
    assert len(x) > 130  # several batches of 64
    model = train.GPT(train.GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1,
                                      n_head=2, n_embd=16))
    counts = data.char_counts(tok)
    one = train.evaluate(model, x, y, counts, batch_size=1)
    many = train.evaluate(model, x, y, counts, batch_size=64)
    assert one == pytest.approx(many, rel=1e-5)
    first_batch = train.evaluate(model, x[:64], y[:64], counts)
    assert first_batch["loss"] != pytest.approx(many["loss"], rel=1e-6)


def test_a_character_only_in_the_validation_text_is_no_error():
    text = TEXT + "Ça va?"  # 'Ç' and '?' only in the last 10%
    result = train.train(tiny(max_steps=2), text=text)
    assert "Ç" in result.tokenizer.chars and result.final["loss"] > 0


def test_short_run_loss_falls(tmp_path):
    result = train.train(tiny(max_steps=40), tmp_path / "run", text=TEXT)
    evals = [r for r in result.log if "val_loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 30
    assert result.final["loss"] < 0.7 * evals[0]["val_loss"]
    first, last = losses(result.log)[0][1], losses(result.log)[-1][1]
    assert last < 0.7 * first
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    assert logged == json.loads(json.dumps(result.log))  # the file holds the same records
    from buildllm.checkpoint import load_model

    model, tok = load_model(tmp_path / "run")
    assert tok.vocab_size == model.config.vocab_size == len(set(TEXT))


@pytest.mark.parametrize("device", DEVICES)
def test_resume_continues_exactly(tmp_path, monkeypatch, device):
    """With dropout, so that every random state (on a GPU, the GPU's too) must be restored."""
    config = tiny(max_steps=24, eval_interval=8, device=device, model={
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
    assert losses(resumed.log) == losses(whole.log)  # bit for bit, step 1 to step 24
    on_disk = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").open()]
    assert losses(on_disk) == losses(whole.log)  # the file too: no step twice
    assert resumed.final["loss"] == whole.final["loss"]
    with pytest.raises(ValueError, match="another configuration .*max_steps: 24 -> 30"):
        train.train(tiny(max_steps=30, eval_interval=8, device=device, model=config.model),
                    tmp_path / "part", resume=True, text=TEXT)


def test_time_budget_stops_the_run():
    result = train.train(tiny(max_steps=10**6, max_seconds=0.5, eval_interval=10**5),
                         text=TEXT)
    assert 0 < result.final["step"] < 10**6
    assert result.final["train_seconds"] >= 0.5


def test_nan_loss_is_caught(monkeypatch):
    class Exploding(train.GPT):
        calls = 0

        def forward(self, idx, targets=None, cache=None):
            logits, loss = super().forward(idx, targets, cache)
            Exploding.calls += self.training
            if Exploding.calls == 3:
                loss = loss * float("nan")
            return logits, loss

    monkeypatch.setattr(train, "GPT", Exploding)
    with pytest.raises(train.NonFiniteLossError, match="at step 2.*Lower lr"):
        train.train(tiny(), text=TEXT)


def test_pretrained_is_cached(monkeypatch):
    recipe = {**tiny(max_steps=3).to_dict(), "eval_interval": 100}
    monkeypatch.setitem(train.RECIPES, "tiny", recipe)
    monkeypatch.setattr(data, "load_text", lambda: TEXT)
    threads = torch.get_num_threads()
    model, tok = train.pretrained("tiny")
    assert torch.get_num_threads() == threads
    folders = [f for f in (data.cache_dir() / "models").iterdir() if f.is_dir()]
    assert [f.name for f in folders] == [f"tiny-{train.recipe_hash(tiny(**recipe))}"]
    monkeypatch.setattr(train, "train", None)  # a second call must not train
    again, tok2 = train.pretrained("tiny")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert tok2.chars == tok.chars
    with pytest.raises(ValueError, match="unknown recipe"):
        train.pretrained("nope")


def test_pretrained_replaces_a_damaged_cached_model(monkeypatch):
    recipe = {**tiny(max_steps=3).to_dict(), "eval_interval": 100}
    monkeypatch.setitem(train.RECIPES, "tiny", recipe)
    monkeypatch.setattr(data, "load_text", lambda: TEXT)
    folder = train.pretrained_dir("tiny")
    (folder / "model.safetensors").write_bytes(b"damaged")
    real_train, trained = train.train, []
    monkeypatch.setattr(train, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    model, _ = train.pretrained("tiny")  # trained again, and the cache repaired
    assert trained == [1] and train.pretrained_dir("tiny") == folder and trained == [1]


def test_pretrained_waits_for_a_run_in_progress(monkeypatch):
    """While another process holds the recipe's lock (here: this test), pretrained_dir waits;
    when that run has published its checkpoint, it loads it instead of training again."""
    import threading

    recipe = {**tiny(max_steps=3).to_dict(), "eval_interval": 100}
    monkeypatch.setitem(train.RECIPES, "tiny", recipe)
    monkeypatch.setattr(data, "load_text", lambda: TEXT)
    config = train.TrainConfig.from_dict(recipe)
    folder = data.cache_dir() / "models" / f"tiny-{train.recipe_hash(config)}"
    real_train, trained = train.train, []
    monkeypatch.setattr(train, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    found = []
    with train.exclusive(folder.with_name(folder.name + ".lock")):  # "another process"
        waiter = threading.Thread(target=lambda: found.append(train.pretrained_dir("tiny")))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not found  # waiting for the lock, not training
        result = real_train(config)
        checkpoint.save_checkpoint(folder, result.model, result.tokenizer,
                                   train_state={"step": 3}, extra_files={"log.jsonl": ""})
    waiter.join(timeout=30)
    assert found == [folder] and trained == []  # it loaded the other run's checkpoint


# -- several processes -------------------------------------------------------------------------

def _rank(rank: int, world: int, port: int, config: dict, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = train.train(train.TrainConfig.from_dict(config), text=TEXT)
    if rank == 0:
        Path(out).write_text(json.dumps(losses(result.log)))
    torch.distributed.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    config = tiny(max_steps=12, eval_interval=100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = losses(train.train(config, text=TEXT).log)
    finally:
        torch.set_num_threads(threads)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "losses.json"
    mp.spawn(_rank, args=(2, port, config.to_dict(), str(out)), nprocs=2, join=True)
    two = json.loads(out.read_text())
    assert [s for s, _ in two] == [s for s, _ in one]
    np.testing.assert_allclose([v for _, v in two], [v for _, v in one], rtol=1e-5)
