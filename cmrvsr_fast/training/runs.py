"""A training run's folder as other programs read it: whether it finished a given step budget with a given
recipe (so that a sweep can skip it), from the card and log a finished run leaves behind."""

from __future__ import annotations

import json
from pathlib import Path


def optimiser_recipe(lr: float) -> str:
    """The optimiser as a run's card records it."""
    return f"Adam lr={lr} weight_decay=0"


def finished_with_budget(run: Path, steps: int, batch: int, lr: float) -> bool:
    """Whether `run` holds a finished run of `steps` steps of `batch` clips at learning rate `lr`: its last card
    records that budget and optimiser, and its log.json (written at the end) exists."""
    card = run / "last.json"
    if not card.is_file():
        return False
    training = json.loads(card.read_text()).get("training", {})
    budget, recipe = training.get("budget", {}), training.get("recipe", {})
    same_lr = recipe.get("optimiser") == optimiser_recipe(lr)
    return budget.get("steps") == steps and budget.get("batch") == batch and same_lr and (run / "log.json").is_file()
