"""buildllm.recipes: the book's training recipes, by name. Each is a valid training
configuration that builds its model, and reads back the same from a JSON file of its own."""

from __future__ import annotations

import json

import pytest

from buildllm.config import preset
from buildllm.recipes import RECIPES
from buildllm.train import TrainConfig


def test_the_books_recipes_are_there():
    assert {"book", "nanogpt_cpu", "modern"} <= set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_by_name_equals_the_same_recipe_as_a_json_file(name, tmp_path):
    config = TrainConfig.from_json(name)
    assert config == TrainConfig.from_dict(RECIPES[name])
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(RECIPES[name], indent=1))
    assert TrainConfig.from_json(path) == config
    model = config.model_config(vocab_size=1024 if config.tokenizer == "bpe" else 65)
    assert model.block_size >= 64 and model.n_layer >= 2  # a model that builds


def test_the_book_recipe_is_the_book_preset_without_biases():
    book = TrainConfig.from_json("book")
    assert book.model_config(1024) == preset("book", bias=False)
    assert (book.tokenizer, book.vocab_size) == ("bpe", 1024)
    modern = TrainConfig.from_json("modern").model_config(1024)
    assert modern == preset("llama", n_layer=2, block_size=64)
    nanogpt = TrainConfig.from_json("nanogpt_cpu")
    assert nanogpt.tokenizer == "char" and nanogpt.model_config(65).block_size == 64
