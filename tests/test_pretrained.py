"""buildllm.pretrained: a recipe is trained once and cached by its hash; later calls load it, a
damaged copy is trained again, and a caller waits for a run in progress instead of training a
second copy."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from buildllm import checkpoint, data, pretrained
from buildllm.config import RECIPES, TrainConfig
from shared import TEXT, tiny

pytestmark = pytest.mark.usefixtures("private_cache")
RECIPE = {**tiny(max_steps=3).to_dict(), "eval_interval": 100}


@pytest.fixture
def trainings(monkeypatch) -> list[TrainConfig]:
    """The recipe "tiny" on a short text; the list fills with each training that runs."""
    monkeypatch.setitem(RECIPES, "tiny", TrainConfig.from_dict(RECIPE))
    monkeypatch.setattr(data, "load_text", lambda: TEXT)
    real_train, runs = pretrained.train, []

    def counted(config, *args, **kwargs):
        runs.append(config)
        return real_train(config, *args, **kwargs)

    monkeypatch.setattr(pretrained, "train", counted)
    return runs


def test_pretrained_is_trained_once_then_loaded(trainings, private_cache):
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    pretrained.pretrained_dir("tiny")
    assert trainings == [TrainConfig.from_dict(RECIPE)]
    assert torch.get_num_threads() == threads  # trained with 2 threads, then given back
    assert torch.equal(torch.get_rng_state(), rng)  # training left the caller's generator alone
    model, tok = pretrained.pretrained("tiny")
    folders = [f for f in (private_cache / "models").iterdir() if f.is_dir()]
    expected = f"tiny-{pretrained.recipe_hash(TrainConfig.from_dict(RECIPE))}"
    assert [f.name for f in folders] == [expected] == [pretrained.pretrained_dir("tiny").name]
    again, tok2 = pretrained.pretrained("tiny")
    assert len(trainings) == 1  # later calls load the cached checkpoint
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert tok2.chars == tok.chars
    ckpt = checkpoint.load_checkpoint(folders[0])
    assert ckpt.train_state["step"] == 3 and ckpt.train_state["config"] == RECIPE
    log = [json.loads(line) for line in (folders[0] / "log.jsonl").open()]  # the run's log
    assert log[0]["step"] == 0 and "val_loss" in log[0]
    assert log[-1]["final_loss"] == ckpt.train_state["final"]["loss"]
    with pytest.raises(ValueError, match="unknown recipe 'nope'; choose one of"):
        pretrained.pretrained("nope")


def test_recipe_hash_follows_the_recipe_and_the_corpus(monkeypatch):
    config = TrainConfig.from_dict(RECIPE)
    h = pretrained.recipe_hash(config)
    assert len(h) == 16 and h == pretrained.recipe_hash(TrainConfig.from_dict(RECIPE))
    assert pretrained.recipe_hash(TrainConfig.from_dict({**RECIPE, "max_steps": 4})) != h
    monkeypatch.setattr(data, "SHA256", "0" * 64)  # another corpus: another model
    assert pretrained.recipe_hash(config) != h


def test_settings_that_change_no_training_leave_the_cache_key():
    """Muon's settings do nothing while the optimizer is AdamW: a cached model stays valid."""
    h = pretrained.recipe_hash(TrainConfig.from_dict(RECIPE))
    inert = TrainConfig.from_dict({**RECIPE, "optimizer": "adamw", "muon_momentum": 0.5})
    assert pretrained.recipe_hash(inert) == h
    assert pretrained.recipe_hash(TrainConfig.from_dict({**RECIPE, "optimizer": "muon"})) != h
    cosine = TrainConfig.from_dict({**RECIPE, "schedule": "cosine", "cooldown": 0.5})
    assert pretrained.recipe_hash(cosine) == h  # the cooldown of a cosine does nothing
    assert pretrained.recipe_hash(TrainConfig.from_dict({**RECIPE, "schedule": "wsd"})) != h


def test_pretrained_replaces_a_damaged_cached_model(trainings):
    folder = pretrained.pretrained_dir("tiny")
    (folder / "model.safetensors").write_bytes(b"damaged")
    pretrained.pretrained("tiny")  # trained again, and the cache repaired
    assert pretrained.pretrained_dir("tiny") == folder
    assert len(trainings) == 2  # once at first, once to repair; not again
    checkpoint.read_config(folder)  # whole again


def test_pretrained_waits_for_a_run_in_progress(trainings, private_cache):
    """While another process holds the recipe's lock (here: this test), pretrained_dir waits;
    when that run has published its checkpoint, it loads it instead of training again."""
    config = TrainConfig.from_dict(RECIPE)
    folder = private_cache / "models" / f"tiny-{pretrained.recipe_hash(config)}"
    found = []
    with pretrained.exclusive(folder.with_name(folder.name + ".lock")):  # "another process"
        waiter = threading.Thread(target=lambda: found.append(pretrained.pretrained_dir("tiny")))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not found  # waiting for the lock, not training
        result = pretrained.train(config)  # the other process's run (counted, as it is one)
        checkpoint.save_checkpoint(folder, result.model, result.tokenizer,
                                   train_state={"step": 3}, extra_files={"log.jsonl": ""})
    waiter.join(timeout=30)
    assert found == [folder] and len(trainings) == 1  # it loaded the other run's checkpoint
