"""buildllm.train and the run's pieces (buildllm.config's TrainConfig, buildllm.data's
prepare_data, buildllm.run): the configuration and its checks, the run's data (tokenizer,
splits, windows), the loss per character, the optimizer and schedule, one step (clipping, a
non-finite loss), the log, the processes, and whole runs: the loss falls, bfloat16 trains like
float32, a resumed run continues exactly, a time budget stops the run, 2 processes == 1
process."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from buildllm import checkpoint, data, train
from buildllm import run as run_
from buildllm.config import GPTConfig, recipe
from buildllm.model import GPT
from buildllm.tokenizer import BPETokenizer, CharTokenizer, train_bpe
from shared import CUDA, DEVICES, TEXT, TINY, losses, tiny

pytestmark = pytest.mark.usefixtures("private_cache")
CPU = torch.device("cpu")


# -- the configuration -------------------------------------------------------------------------


def test_config_errors_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="tokenizer must be one of .*'words'"):
        tiny(tokenizer="words")
    with pytest.raises(ValueError, match="dtype must be one of .*'float16'"):
        tiny(dtype="float16")
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['bogus'\]"):
        train.TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="a training config is a JSON object, got list"):
        train.TrainConfig.from_dict([])
    with pytest.raises(ValueError, match="neither a recipe"):
        recipe(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="missing.json"):
        train.TrainConfig.from_json(tmp_path / "missing.json")
    for field in ("batch_size", "max_steps", "eval_interval", "eval_windows", "log_interval"):
        for value in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match=f"{field} must be a positive integer"):
                tiny(**{field: value})
    for value in (-1, 1.0, True):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            tiny(seed=value)
    assert tiny(seed=0).seed == 0
    for value in (0, -1, float("inf"), "60"):
        with pytest.raises(ValueError, match="max_seconds must be a positive number"):
            tiny(max_seconds=value)
    for lrs in (dict(lr=1e-3, min_lr=1e-2), dict(min_lr=-1.0), dict(lr=float("nan"))):
        with pytest.raises(ValueError, match="need 0 <= min_lr <= lr"):
            tiny(**lrs)
    with pytest.raises(ValueError, match="model must be an object of GPTConfig fields"):
        tiny(model="book")


def test_json_files_and_their_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(TINY))
    assert train.TrainConfig.from_json(path) == tiny()
    assert train.TrainConfig.from_json(str(path)) == tiny()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="mine.json is not a JSON file of training options"):
        train.TrainConfig.from_json(path)
    path.write_text(json.dumps({**TINY, "max_steps": 0}))
    with pytest.raises(ValueError, match="mine.json: max_steps must be a positive integer"):
        train.TrainConfig.from_json(path)


def test_the_model_is_a_gpt_config_and_the_run_takes_the_tokenizers_vocabulary():
    assert tiny().model == GPTConfig(vocab_size=1024, **TINY["model"])  # 1024: BPE's default
    book = tiny(model={"preset": "book", "n_layer": 2}).model
    assert (book.vocab_size, book.n_layer, book.n_embd) == (1024, 2, 128)  # the preset, changed
    assert train.TrainConfig.from_dict(tiny().to_dict()) == tiny()
    assert train.start_run(tiny(), 65, CPU).model.config.vocab_size == 65
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        tiny(model={"layers": 2})


# -- data ----------------------------------------------------------------------------------------


def test_make_tokenizer_caches_bpe_and_rebuilds_a_damaged_cache(private_cache):
    """A truncated tokenizer file in the cache is made again, not reported as the user's
    mistake."""
    assert data.make_tokenizer(tiny(), TEXT).chars == CharTokenizer(TEXT).chars
    config = tiny(tokenizer="bpe", vocab_size=280)
    tok = data.make_tokenizer(config, TEXT)
    assert isinstance(tok, BPETokenizer) and tok.merges == train_bpe(TEXT, 280).merges
    [cached] = (private_cache / "tokenizers").iterdir()
    lie = {**tok.to_dict(), "merges": [], "special_tokens": {"<|endoftext|>": 256}}
    cached.write_text(json.dumps(lie))  # a cache that lies ...
    assert data.make_tokenizer(config, TEXT).merges == []  # ... is read: it is the cache
    cached.write_text(cached.read_text()[:100])  # a damaged one is learned again
    assert data.make_tokenizer(config, TEXT).merges == tok.merges
    assert data.make_tokenizer(config, TEXT[:-1]).merges != []  # another text, another entry
    assert len(list((private_cache / "tokenizers").iterdir())) == 2


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_prepare_data(kind):
    """BPE learns from the training 90% only; a character tokenizer takes its alphabet from the
    whole text. The splits are cut as text, so every tokenizer is measured on the same text."""
    text = TEXT + "Ça va?"  # 'Ç' and '?' only in the last 10%
    config = tiny(tokenizer=kind, vocab_size=300)
    d = data.prepare_data(config, text)
    train_text, val_text = data.train_val_split(text)
    if kind == "char":
        assert d.tokenizer.chars == sorted(set(text))
    else:
        assert d.tokenizer.merges == train_bpe(train_text, 300).merges
    assert d.tokenizer.decode(d.train_ids.tolist()) == train_text
    assert d.tokenizer.decode(d.val_ids.tolist()) == val_text
    torch.testing.assert_close(d.counts, torch.tensor(d.tokenizer.token_chars()))
    assert d.val_x.shape == d.val_y.shape == (config.eval_windows, 16)
    torch.testing.assert_close(d.val_x[:, 1:], d.val_y[:, :-1])


def test_prepare_data_reads_the_corpus_by_default(monkeypatch):
    monkeypatch.setattr(data, "load_text", lambda: TEXT)
    assert data.prepare_data(tiny()).tokenizer.chars == CharTokenizer(TEXT).chars


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


def test_evaluate_does_not_depend_on_its_batch_size_and_keeps_the_mode():
    tok = CharTokenizer(TEXT)
    ids = torch.tensor(tok.encode(TEXT))
    x, y = data.eval_windows(ids, 16)
    assert len(x) > 130  # several batches of 64
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=16, dropout=0.5))
    counts = torch.tensor(tok.token_chars())
    one = train.evaluate(model, x, y, counts, batch_size=1)  # dropout off while evaluating
    assert model.training  # ... and back on after
    many = train.evaluate(model, x, y, counts, batch_size=64)
    assert one == pytest.approx(many, rel=1e-5)
    first_batch = train.evaluate(model, x[:64], y[:64], counts)
    assert first_batch["loss"] != pytest.approx(many["loss"], rel=1e-6)
    assert train.evaluate(model.eval(), x, y, counts) == many
    assert not model.training


# -- optimizer and schedule --------------------------------------------------------------------

def test_weight_decay_only_on_matrices():
    config = tiny()
    model = GPT(dataclasses.replace(config.model, vocab_size=10))
    optimizer = train.make_optimizer(model, config)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == config.weight_decay and no_decay["weight_decay"] == 0
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    n = sum(p.numel() for p in decay["params"] + no_decay["params"])
    assert n == sum(p.numel() for p in model.parameters())
    assert decay["betas"] == (config.beta1, config.beta2) and decay["lr"] == config.lr


def test_learning_rate_warmup_then_cosine():
    c = tiny(lr=1.0, min_lr=0.1, warmup_steps=4)
    warm = [train.learning_rate(s, s / 100, c) for s in range(4)]
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert train.learning_rate(50, 0.5, c) == pytest.approx(0.55)
    assert train.learning_rate(100, 1.0, c) == pytest.approx(0.1)
    assert train.learning_rate(100, 1.7, c) == pytest.approx(0.1)  # past the end: min_lr
    decay = [train.learning_rate(s, s / 100, c) for s in range(4, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_learning_rate_wsd_is_flat_then_a_straight_line():
    c = tiny(lr=1.0, min_lr=0.0, warmup_steps=4, schedule="wsd", cooldown=0.25)
    assert train.learning_rate(2, 0.02, c) == pytest.approx(0.75)  # the warmup is the same
    assert [train.learning_rate(s, s / 100, c) for s in (10, 50, 75)] == pytest.approx([1.0] * 3)
    assert train.learning_rate(80, 0.8, c) == pytest.approx(0.8)  # 1/5 of the way down
    assert train.learning_rate(100, 1.0, c) == pytest.approx(0.0)
    assert train.learning_rate(100, 1.3, c) == pytest.approx(0.0)


@pytest.mark.parametrize("setting, message", [({"schedule": "linear"}, "schedule must be one"),
                                              ({"cooldown": 0}, "cooldown must be a fraction"),
                                              ({"cooldown": 1.5}, "cooldown must be a fraction")])
def test_bad_schedules_are_named(setting, message):
    with pytest.raises(ValueError, match=message):
        tiny(**setting)


# -- one step ----------------------------------------------------------------------------------

def fresh_run(grad_clip: float = 1.0):
    """A new run and a fixed batch for one step: (config, run, x, y)."""
    config = tiny(grad_clip=grad_clip)
    run = train.start_run(config, 20, CPU)
    x = torch.randint(0, 20, (4, 16), generator=torch.Generator().manual_seed(0))
    return config, run, x, torch.roll(x, -1, dims=1)


def test_start_run_is_seeded():
    a, b = train.start_run(tiny(), 20, CPU), train.start_run(tiny(), 20, CPU)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(a.batches.get_state(), b.batches.get_state())
    c = train.start_run(tiny(seed=7), 20, CPU)
    assert not torch.equal(c.model.wte.weight, a.model.wte.weight)
    assert (a.step, a.seconds) == (0, 0.0)


def test_gradient_clipping():
    """The returned norm is the norm before clipping; the optimizer sees at most grad_clip.
    grad_clip=0 turns clipping off and returns no norm."""
    config, run, x, y = fresh_run(grad_clip=0.01)
    loss, norm = train.train_step(run.model, run, x, y, 1e-3, config)
    grads = torch.stack([p.grad.norm() for p in run.model.parameters()]).norm()
    assert norm > 0.01  # would have been clipped ...
    assert grads.item() == pytest.approx(0.01, rel=1e-4)  # ... and was
    assert loss.item() > 0 and not loss.requires_grad
    assert all(g["lr"] == 1e-3 for g in run.optimizer.param_groups)  # the step's learning rate
    config, run, x, y = fresh_run(grad_clip=0.0)
    _, norm = train.train_step(run.model, run, x, y, 1e-3, config)
    assert norm is None
    assert torch.stack([p.grad.norm() for p in run.model.parameters()]).norm() > 0.01


def test_a_non_finite_loss_stops_before_the_weights_change():
    config, run, x, y = fresh_run()
    before = {k: v.clone() for k, v in run.model.state_dict().items()}

    def exploding(x, y):
        _, loss = run.model(x, y)
        return None, loss * float("nan")

    run.step = 7
    with pytest.raises(train.NonFiniteLossError, match=r"loss is nan at step 7 \(learning rate "
                                                       r"0.001\).*Lower lr"):
        train.train_step(exploding, run, x, y, 1e-3, config)
    assert all(torch.equal(v, run.model.state_dict()[k]) for k, v in before.items())
    train.train_step(run.model, run, x, y, 1e-3, config)  # a finite loss: the weights move
    assert any(not torch.equal(v, run.model.state_dict()[k]) for k, v in before.items())


def test_a_diverging_run_is_caught():
    with pytest.raises(train.NonFiniteLossError, match="at step 1 .*Lower lr .*now 1e\\+30"):
        train.train(tiny(lr=1e30, min_lr=0.0, warmup_steps=1, grad_clip=0.0), text=TEXT)


# -- the log -------------------------------------------------------------------------------------

def test_run_log(tmp_path):
    path = tmp_path / "out" / "log.jsonl"
    log = run_.RunLog(path)
    log.start(None)  # a new run: a new (empty) log in a new folder
    assert path.read_text() == ""
    for step in (1, 2, 3):
        log.add({"step": step, "loss": 1.0 / step})
    assert [json.loads(line) for line in path.open()] == log.records
    resumed = run_.RunLog(path)
    resumed.start(2)  # resuming from step 2: the records after it are dropped, here too
    assert [r["step"] for r in resumed.records] == [1, 2]
    assert [json.loads(line)["step"] for line in path.open()] == [1, 2]
    run_.RunLog(path).start(None)
    assert path.read_text() == ""
    memory = run_.RunLog(None)  # no folder: records in memory only
    memory.start(None)
    memory.add({"step": 1})
    assert memory.records == [{"step": 1}] and list(tmp_path.iterdir()) == [path.parent]


def test_a_torn_last_log_line_does_not_stop_a_resume(tmp_path):
    """A run killed in the middle of a write leaves half a line: resuming skips it."""
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = run_.RunLog(path)
    log.start(2)
    assert [r["step"] for r in log.records] == [1, 2]
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


# -- processes and progress --------------------------------------------------------------------

def test_one_process():
    procs = run_.Processes.start(tiny())
    assert (procs.rank, procs.world, procs.device) == (0, 1, CPU)
    x, y = torch.arange(8).view(4, 2), torch.arange(8).view(4, 2) + 1
    sx, sy = procs.share(x, y)
    assert torch.equal(sx, x) and torch.equal(sy, y)  # one process takes the whole batch
    assert procs.reduce(torch.tensor(2.5)) == 2.5 and procs.reduce(3, "max") == 3.0


def test_each_process_takes_its_part_of_the_batch():
    x, y = torch.arange(8).view(4, 2), torch.arange(8).view(4, 2) + 1
    parts = [run_.Processes(rank, 2, CPU).share(x, y) for rank in (0, 1)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(parts[1][1], y[2:])


def test_a_device_this_machine_lacks_is_refused_before_any_data_is_read(monkeypatch):
    def no_corpus():
        raise AssertionError("the corpus was read before the device was checked")

    monkeypatch.setattr(data, "load_text", no_corpus)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        train.train(tiny(device="gpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            train.train(tiny(device="cuda"))


def test_progress_counts_steps_or_seconds_whichever_is_further():
    procs = run_.Processes(0, 1, CPU)
    run = train.start_run(tiny(), 20, CPU)
    run.step, run.seconds = 5, 30.0
    assert run_.run_progress(run, tiny(max_steps=20), procs) == 0.25
    assert run_.run_progress(run, tiny(max_steps=20, max_seconds=60), procs) == 0.5
    assert run_.run_progress(run, tiny(max_steps=10, max_seconds=600), procs) == 0.5


def test_progress_bar(capsys):
    quiet = run_.ProgressBar(False)
    quiet.update(0.5, 10, torch.tensor(1.0))
    quiet.close()
    assert capsys.readouterr() == ("", "")
    bar = run_.ProgressBar(True)
    bar.update(0.42, 10, torch.tensor(1.25))
    bar.close()
    err = capsys.readouterr().err
    assert "42%" in err and "step=10" in err and "loss=1.250" in err


def test_autocast():
    assert run_.make_autocast(tiny(), CPU) is contextlib.nullcontext
    with run_.make_autocast(tiny(dtype="bfloat16"), CPU)():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


# -- whole runs ----------------------------------------------------------------------------------

def test_short_run_loss_falls(tmp_path):
    result = train.train(tiny(max_steps=40), tmp_path / "run", text=TEXT)
    evals = [r for r in result.log if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 10, 20, 30]
    assert result.final["loss"] < 0.7 * evals[0]["val_loss"]
    first, last = losses(result.log)[0][1], losses(result.log)[-1][1]
    assert last < 0.7 * first
    assert result.log[-1]["step"] == 40 and "final_bits_per_char" in result.log[-1]
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    assert logged == json.loads(json.dumps(result.log))  # the file holds the same records
    assert result.out_dir == tmp_path / "run"
    model, tok = checkpoint.load_model(tmp_path / "run")
    assert tok.vocab_size == model.config.vocab_size == len(set(TEXT))
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_a_character_only_in_the_validation_text_is_no_error():
    text = TEXT + "Ça va?"  # 'Ç' and '?' only in the last 10%
    result = train.train(tiny(max_steps=2), text=text)
    assert "Ç" in result.tokenizer.chars and result.final["loss"] > 0


def test_a_bpe_run():
    result = train.train(tiny(tokenizer="bpe", vocab_size=300, max_steps=4), text=TEXT,
                         final_eval_windows=2)
    assert isinstance(result.tokenizer, BPETokenizer) and result.model.config.vocab_size == 300
    assert result.final["chars_per_token"] > 1.5  # tokens of several characters


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


def crashing_clock(at_reading: int):
    """A clock that takes the machine down at its n-th reading (each step reads it twice)."""
    readings = iter(range(1, 10**6))

    def clock() -> float:
        if next(readings) == at_reading:
            raise KeyboardInterrupt("the machine went down")
        return time.perf_counter()

    return clock


@pytest.mark.parametrize("device", DEVICES)
def test_resume_continues_exactly(tmp_path, device):
    """With dropout, so that every random state (on a GPU, the GPU's too) must be restored."""
    config = tiny(max_steps=24, eval_interval=8, device=device, model={
        "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.1})
    whole = train.train(config, tmp_path / "whole", text=TEXT)
    with pytest.raises(KeyboardInterrupt):  # down at step 13: the checkpoint is step 8's
        train.train(config, tmp_path / "part", text=TEXT, clock=crashing_clock(2 * 13 - 1))
    on_disk = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").open()]
    assert losses(on_disk)[-1][0] == 12
    resumed = train.train(config, tmp_path / "part", resume=True, text=TEXT)
    assert losses(resumed.log) == losses(whole.log)  # bit for bit, step 1 to step 24
    on_disk = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").open()]
    assert losses(on_disk) == losses(whole.log)  # the file too: no step twice
    assert resumed.final["loss"] == whole.final["loss"]
    with pytest.raises(ValueError, match="another configuration .*max_steps: 24 -> 30"):
        train.train(tiny(max_steps=30, eval_interval=8, device=device,
                         model=config.model.to_dict()),
                    tmp_path / "part", resume=True, text=TEXT)


def test_resume_needs_a_folder_with_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="resume=True needs the out_dir"):
        train.train(tiny(), resume=True, text=TEXT)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        train.train(tiny(), tmp_path / "none", resume=True, text=TEXT)


def test_time_budget_stops_the_run():
    result = train.train(tiny(max_steps=10**6, max_seconds=0.5, eval_interval=10**5),
                         text=TEXT)
    assert 0 < result.final["step"] < 10**6
    assert result.final["train_seconds"] >= 0.5


def test_time_budget_counts_the_given_clock():
    """A clock that advances 30 s at every reading ends a 60-s budget after two steps; the
    learning rate follows the time spent."""
    ticks = iter(range(0, 10**6, 30))
    result = train.train(tiny(max_steps=10**6, max_seconds=60, warmup_steps=1), text=TEXT,
                         clock=lambda: next(ticks))
    assert result.final["step"] == 2 and result.final["train_seconds"] == 60
    lrs = [r["lr"] for r in result.log if "lr" in r]
    assert lrs == pytest.approx([TINY["lr"], (TINY["lr"] + TINY["min_lr"]) / 2])  # half-way


# -- several processes -------------------------------------------------------------------------

def _rank(rank: int, world: int, port: int, config: dict, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = train.train(train.TrainConfig.from_dict(config), text=TEXT)
    if rank == 0:
        Path(out).write_text(json.dumps(losses(result.log)))
    else:
        assert result.final == {}  # only the first process evaluates
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

