"""buildllm.cli, the `buildllm` command line: `train`, `tokenizer train|encode|decode` and
`generate` (alias `sample`), run as a user runs them; a user's mistake is one line on stderr and
exit status 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from buildllm import data
from buildllm.bpe import ENDOFTEXT
from buildllm.checkpoint import save_checkpoint
from buildllm.cli import main
from buildllm.generate import generate
from buildllm.model import GPT
from buildllm.quantize import quantize_model
from buildllm.tokenizer import CharTokenizer, load_tokenizer, train_bpe
from shared import TINY, small

# -- the program -----------------------------------------------------------------------------


def test_train_help_from_the_module():
    out = subprocess.run([sys.executable, "-m", "buildllm.cli", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for option in ("--config", "--out", "--resume", "--device", "--max-seconds", "--clock"):
        assert option in out


@pytest.mark.parametrize("command, words", [
    ([], ["tokenizer", "train", "generate"]),
    (["tokenizer"], ["train", "encode", "decode"]),
    (["tokenizer", "encode"], ["--allow-special"]),
    (["generate"], ["--checkpoint", "--prompt", "--top-p", "--no-cache", "--device"]),
    (["sample"], ["--checkpoint", "--prompt"]),
])
def test_every_command_has_help(command, words, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(w in out for w in words), out


def test_no_command_prints_the_help_and_fails(capsys):
    assert main([]) == 2
    assert "<command>" in capsys.readouterr().out


# -- buildllm train ----------------------------------------------------------------------------

CLI_RUN = {**TINY, "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
           "batch_size": 4, "max_steps": 6, "eval_interval": 3, "eval_windows": 4}


@pytest.fixture
def tiny_config(tmp_path, monkeypatch, private_cache):
    """A recipe file for a run of six steps on a short text (the corpus, as far as the command
    knows)."""
    text = "To be, or not to be, that is the question:\n" * 200
    monkeypatch.setattr(data, "load_text", lambda: text)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(CLI_RUN))
    return path


def test_train_then_resume(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "step 6: validation loss" in printed and "bits/char" in printed
    assert f"checkpoint: {out / 'checkpoint'}" in printed
    assert (out / "checkpoint" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert records[-1]["step"] == 6 and "final_bits_per_char" in records[-1]
    # --max-steps overrides the recipe; resuming with another configuration is refused
    assert main(["train", "--config", str(tiny_config), "--out", str(out), "--resume",
                 "--max-steps", "8"]) == 2
    err = capsys.readouterr().err
    assert "buildllm train: error: " in err and "another configuration" in err
    assert "max_steps: 6 -> 8" in err and "Traceback" not in err
    assert main(["train", "--config", str(tiny_config), "--out", str(tmp_path / "more"),
                 "--max-steps", "8"]) == 0
    assert "step 8:" in capsys.readouterr().out


def test_a_missing_corpus_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    assert main(["tokenizer", "train", str(tmp_path / "tok.json")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_train_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tokenizer": "words"}))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: tokenizer must be one of ('char', 'bpe'), got 'words'" in err
    assert main(["train", "--config", "no-such-recipe"]) == 2
    assert "neither a recipe" in capsys.readouterr().err
    bad.write_text("{")
    assert main(["train", "--config", str(bad)]) == 2
    assert "bad.json is not a JSON file of training options" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_resume_without_checkpoint(tiny_config, tmp_path, capsys):
    assert main(["train", "--config", str(tiny_config), "--out", str(tmp_path / "none"),
                 "--resume"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_train_time_budget_in_cpu_seconds(tiny_config, tmp_path, capsys, monkeypatch):
    """--clock cpu counts this process's CPU seconds (time.process_time), the default counts
    wall-clock seconds. A CPU clock that advances 30 s at every reading ends a 60-s budget
    after two steps, and leaves a wall-clock budget alone."""
    ticks = iter(range(0, 10**6, 30))
    monkeypatch.setattr(time, "process_time", lambda: next(ticks))
    assert main(["train", "--config", str(tiny_config), "--out", str(tmp_path / "cpu"),
                 "--max-seconds", "60", "--clock", "cpu"]) == 0
    assert "step 2:" in capsys.readouterr().out
    saved = json.loads((tmp_path / "cpu" / "checkpoint" / "config.json").read_text())["train"]
    assert saved["config"]["max_seconds"] == 60 and saved["train_seconds"] == 60
    assert main(["train", "--config", str(tiny_config), "--out", str(tmp_path / "wall"),
                 "--max-seconds", "60"]) == 0
    assert "step 6:" in capsys.readouterr().out  # 60 wall-clock seconds: all 6 steps
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tiny_config), "--clock", "gpu"])
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_a_diverging_run_fails_with_advice(tiny_config, tmp_path, capsys):
    tiny_config.write_text(json.dumps({**CLI_RUN, "lr": 1e30, "min_lr": 0.0, "warmup_steps": 1,
                                       "grad_clip": 0.0}))
    assert main(["train", "--config", str(tiny_config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "buildllm train: error: the loss is nan" in err and "Lower lr" in err


# -- buildllm tokenizer ------------------------------------------------------------------------


def test_tokenizer_trains_on_the_training_text_by_default(tmp_path, monkeypatch, small_corpus):
    """Without --text, the book's corpus minus its validation 10%, as chapter "Training" does."""
    monkeypatch.setattr(data, "load_text", lambda: small_corpus[:20_000])
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", str(out), "--vocab-size", "300"]) == 0
    train_text, val_text = data.train_val_split(small_corpus[:20_000])
    assert load_tokenizer(out).merges == train_bpe(train_text, 300).merges
    assert load_tokenizer(out).merges != train_bpe(train_text + val_text, 300).merges


def test_tokenizer_train_encode_decode(tmp_path, capsys, small_corpus):
    text_file = tmp_path / "text.txt"
    text_file.write_text(small_corpus[:20_000], encoding="utf-8")
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", str(out), "--vocab-size", "300",
                 "--text", str(text_file)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 300 tokens, 43 merges\n"
    tok = load_tokenizer(out)
    assert tok.merges == train_bpe(small_corpus[:20_000], 300).merges
    line = "To be, or not to be"
    assert main(["tokenizer", "encode", str(out), line]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert ids == tok.encode(line)
    assert main(["tokenizer", "decode", str(out), *map(str, ids)]) == 0
    assert capsys.readouterr().out == line  # exactly the text, no newline added
    # errors: a clear message and exit status 2, no traceback
    assert main(["tokenizer", "encode", str(out), f"a{ENDOFTEXT}"]) == 2
    assert "--allow-special" in capsys.readouterr().err
    assert main(["tokenizer", "encode", str(out), f"a{ENDOFTEXT}", "--allow-special"]) == 0
    assert capsys.readouterr().out.split()[-1] == str(tok.special_tokens[ENDOFTEXT])
    assert main(["tokenizer", "decode", str(out), "99999"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_tokenizer_files_that_cannot_be_read(tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    for path, words in [(latin1, "latin1.txt is not UTF-8 text"), (tmp_path, "is a folder"),
                        (tmp_path / "missing.txt", "missing.txt does not exist")]:
        assert main(["tokenizer", "train", str(tmp_path / "t.json"), "--text", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("buildllm tokenizer: error: ") and words in err
    assert main(["tokenizer", "encode", str(tmp_path / "t.json"), "hi"]) == 2
    assert "t.json is not a readable tokenizer file" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


# -- buildllm generate -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """A checkpoint of a small random model with a character tokenizer."""
    tok = CharTokenizer("abcdefgh ijklmnop\n")
    torch.manual_seed(0)
    model = GPT(small(vocab_size=tok.vocab_size, block_size=24))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(10)  # far from uniform: clear choices
    folder = tmp_path_factory.mktemp("ckpt") / "ckpt"
    save_checkpoint(folder, model, tok)
    return folder, model.eval(), tok


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_generate_prints_the_prompt_and_the_sample(command, sampled, capsys):
    folder, model, tok = sampled
    assert main([command, "--checkpoint", str(folder), "--prompt", "abc", "--max-new-tokens",
                 "15", "--top-k", "5", "--top-p", "0.9", "--seed", "7"]) == 0
    expected = generate(model, tok.encode("abc"), 15, top_k=5, top_p=0.9, seed=7)[3:].tolist()
    assert capsys.readouterr().out == "abc" + tok.decode(expected) + "\n"


def test_generate_options_change_the_sample_as_they_say(sampled, capsys):
    folder, model, tok = sampled
    common = ["generate", "--checkpoint", str(folder), "--prompt", "abc", "--max-new-tokens", "8"]
    greedy = tok.decode(generate(model, tok.encode("abc"), 8, temperature=0)[3:].tolist())
    for extra in (["--temperature", "0"], ["--temperature", "0", "--no-cache"],
                  ["--temperature", "0", "--device", "cpu"]):
        assert main([*common, *extra]) == 0
        assert capsys.readouterr().out == f"abc{greedy}\n"
    outputs = set()
    for seed in ("1", "2", "3"):
        assert main([*common, "--seed", seed]) == 0
        outputs.add(capsys.readouterr().out)
    assert len(outputs) > 1  # sampled: another seed, another text


def test_generate_with_int8_weights_prints_what_the_int8_model_writes(sampled, capsys):
    folder, model, tok = sampled
    assert main(["generate", "--checkpoint", str(folder), "--prompt", "abc", "--max-new-tokens",
                 "10", "--temperature", "0", "--quantize", "int8"]) == 0
    expected = generate(quantize_model(model), tok.encode("abc"), 10, temperature=0)[3:]
    assert capsys.readouterr().out == "abc" + tok.decode(expected.tolist()) + "\n"
    with pytest.raises(SystemExit) as refused:  # argparse refuses what it does not know
        main(["generate", "--checkpoint", str(folder), "--prompt", "abc", "--quantize", "int4"])
    assert refused.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err


def test_generate_refuses_bad_settings_before_reading_the_checkpoint(tmp_path, capsys):
    missing = str(tmp_path / "nothing")
    assert main(["generate", "--checkpoint", missing, "--prompt", "Hi", "--top-p", "2"]) == 2
    err = capsys.readouterr().err
    assert "buildllm generate: error: top_p must be in (0, 1]" in err
    assert main(["sample", "--checkpoint", missing, "--prompt", "Hi", "--temperature", "-1"]) == 2
    assert "temperature must be" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", missing, "--prompt", "Hi"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_generate_errors_print_nothing_on_stdout(sampled, capsys):
    folder, _, _ = sampled
    common = ["generate", "--checkpoint", str(folder), "--max-new-tokens", "4"]
    if not torch.cuda.is_available():
        assert main([*common, "--prompt", "abc", "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err
    # a prompt the tokenizer refuses fails before anything is printed
    assert main([*common, "--prompt", "xyz"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "'x' was not in the text" in err and str(folder) in err
    assert main([*common, "--prompt", "abc" * 9]) == 2  # 27 tokens: more than the context
    out, err = capsys.readouterr()
    assert out == "" and "27 tokens; it needs 1 to 24 (the model's context)" in err
