"""Every shipped recipe parses into a valid TrainConfig."""

from pathlib import Path

import pytest

from pof.models import list_models
from pof.training.config import TrainConfig

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 6


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid(path):
    cfg = TrainConfig.from_yaml(path)
    assert cfg.model in list_models()
