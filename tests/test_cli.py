"""Tests of the `buildllm` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from buildllm import data
from buildllm.cli import main

# -- buildllm train ----------------------------------------------------------------------------

TINY = {"model": {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
        "tokenizer": "char", "batch_size": 4, "max_steps": 6, "eval_interval": 3,
        "eval_windows": 4, "log_interval": 1}


@pytest.fixture
def tiny_config(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    text = "To be, or not to be, that is the question:\n" * 200
    monkeypatch.setattr(data, "load_text", lambda: text)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def test_train_help():
    out = subprocess.run([sys.executable, "-m", "buildllm.cli", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for option in ("--config", "--out", "--resume", "--device", "--max-seconds", "--clock"):
        assert option in out


def test_train_then_resume(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bits/char" in printed and "step 6" in printed
    assert (out / "checkpoint" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert records[-1]["step"] == 6 and "final_bits_per_char" in records[-1]
    # Resuming with another configuration (here more steps) is refused: not an exact resume.
    assert main(["train", "--config", str(tiny_config), "--out", str(out), "--resume",
                 "--max-steps", "8"]) != 0  # another configuration: refused
    assert "another configuration" in capsys.readouterr().err


def test_a_missing_corpus_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    assert main(["tokenizer", "train", str(tmp_path / "tok.json")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_train_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tokenizer": "words"}))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "tokenizer must be 'char' or 'bpe', got 'words'" in capsys.readouterr().err
    assert main(["train", "--config", "no-such-recipe"]) == 2
    assert "neither a recipe" in capsys.readouterr().err


def test_train_resume_without_checkpoint(tiny_config, tmp_path, capsys):
    assert main(["train", "--config", str(tiny_config), "--out", str(tmp_path / "none"),
                 "--resume"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_train_time_budget_in_cpu_seconds(tiny_config, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--out", str(out), "--max-seconds", "60",
                 "--clock", "cpu"]) == 0
    saved = json.loads((out / "checkpoint" / "config.json").read_text())["train"]["config"]
    assert saved["clock"] == "cpu" and saved["max_seconds"] == 60
    # a CPU clock that advances 30 s at every reading ends a 60-s budget after one step
    from buildllm import train

    ticks = iter(range(0, 10**6, 30))
    monkeypatch.setattr(train.time, "process_time", lambda: next(ticks))
    assert main(["train", "--config", str(tiny_config), "--out", str(tmp_path / "cpu"),
                 "--max-seconds", "60", "--clock", "cpu"]) == 0
    assert "step 2:" in capsys.readouterr().out  # wall clock: all 6 steps, as above
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tiny_config), "--clock", "gpu"])
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
