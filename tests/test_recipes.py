"""The book's training recipes (buildllm.config.RECIPES): each is a valid training
configuration whose model builds, reads back the same from a JSON file of its own, and keeps
the cache key of the model the book trained (buildllm.pretrained.recipe_hash)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from buildllm.config import RECIPES, TrainConfig, preset, recipe
from buildllm.model import GPT
from buildllm.pretrained import recipe_hash

# The keys under which the book's models are cached: a change to them would train them again.
# (book: a8ca4d74f2cd82ee since the recipe took WSD and dropout 0.05; it was 028b2026659fe5d5.)
HASHES = {"book": "a8ca4d74f2cd82ee", "modern": "08179bcc106ba84a",
          "nanogpt_cpu": "c22f025409638e3d"}


def test_the_books_recipes_are_there():
    assert {"book", "nanogpt_cpu", "modern"} <= set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_by_name_equals_the_same_recipe_as_a_json_file(name, tmp_path):
    config = recipe(name)
    assert config == RECIPES[name] and config is not RECIPES[name]  # a copy of its own
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(RECIPES[name].to_dict(), indent=1))
    assert TrainConfig.from_json(path) == config
    model = config.model
    assert model.block_size >= 64 and model.n_layer >= 2 and GPT(model)  # a model that builds


@pytest.mark.parametrize("name", sorted(HASHES))
def test_the_cache_keys_of_the_books_models_stay(name):
    assert recipe_hash(RECIPES[name]) == HASHES[name]
    assert recipe_hash(recipe(name)) == HASHES[name]


def test_one_book_the_recipe_trains_the_book_preset_reshaped():
    """The book's model is the `book` preset (GPT-2's parts, no biases) in another shape."""
    book = RECIPES["book"]
    shape = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0}
    assert dataclasses.replace(book.model, **shape) == preset("book") and not book.model.bias
    assert (book.model.n_layer, book.model.block_size) == (2, 64)
    assert (book.tokenizer, book.model.vocab_size) == ("bpe", 1024)
    assert RECIPES["modern"].model == preset("llama", n_layer=2, block_size=64)
    nanogpt = RECIPES["nanogpt_cpu"]
    assert nanogpt.tokenizer == "char" and nanogpt.model.block_size == 64


def test_recipes_as_first_written_read_the_same():
    """Recipe files of the first form (the model as a preset and its changes, the size of the
    BPE vocabulary beside it) read as the typed recipes."""
    first = {"model": {"preset": "book", "n_layer": 2, "n_head": 6, "n_embd": 192,
                       "block_size": 64, "dropout": 0.05}, "tokenizer": "bpe",
             "vocab_size": 1024, "batch_size": 16, "max_steps": 4000, "lr": 3e-3,
             "min_lr": 0.0, "warmup_steps": 50, "schedule": "wsd", "cooldown": 0.5,
             "eval_interval": 500}
    assert TrainConfig.from_dict(first) == RECIPES["book"]
    modern = {**RECIPES["modern"].to_dict(), "vocab_size": 1024,
              "model": {"preset": "llama", "n_layer": 2, "block_size": 64}}
    assert TrainConfig.from_dict(modern) == RECIPES["modern"]
