"""Single-head pseudo-labelling, the baseline Tri-net is measured against: one classifier head
labels the unlabelled pool with its own confident predictions (softmax ≥ σ) and trains on them,
round after round, with Tri-net's pools and σ schedule (:mod:`hashlab.train.recipes.trinet`)
but no second opinion: no smearing, no DES and no fine-tuning by default.
``docs/recipes.md#tri-net``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hashlab.errors import ConfigError
from hashlab.train.recipes.registry import RECIPES
from hashlab.train.recipes.trinet import TriNet, agreeing_labels

__all__ = ["PseudoLabel"]


@RECIPES.register("pseudo-label")
class PseudoLabel(TriNet):
    """Self-training with one head (``heads`` = 1): the arguments of ``tri-net``, with
    ``smearing``, ``des`` and ``finetune`` off unless asked for."""

    recipe_name = "pseudo-label"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *, heads: int = 1,
                 smearing: bool = False, des: bool = False, finetune: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(config, run_dir, heads=heads, smearing=smearing, des=des,
                         finetune=finetune, **kwargs)

    def check_heads(self, heads: int) -> None:
        if heads != 1:
            raise ConfigError(f"recipe.args.heads: pseudo-label trains one head, got {heads}")

    def labellers(self, v: int) -> list[int]:
        return [v]

    def pseudo_labels(self, v: int, probs: torch.Tensor, sigma: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        return agreeing_labels(probs, sigma)
