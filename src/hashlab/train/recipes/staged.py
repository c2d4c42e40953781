"""The driver shared by recipes that run their own training loop as a list of **stages**
(initialisation, round 1, round 2, ...; or clustering rounds): after each stage everything —
the weights and optimisers named by ``trainables()``, the recipe's own state (thresholds,
prototypes, cluster centres), the logs — is written to ``RUN/checkpoint.pt``, and every stage
draws its randomness from generators seeded by (seed, stage), so a recipe killed at any point
and resumed with ``--resume`` ends with the weights of an uninterrupted run.

A subclass names its stages (``stage_names``), runs one (``run_stage(name, generator) -> log
dict``), may add metrics measured after each stage (``stage_metrics``) and keep state across
stages (``extra_state`` / ``load_extra_state``), and writes its outputs (``save_final``,
``summarise``, ``summary_table``). ``docs/recipes.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hashlab.errors import CheckpointError, DivergedError

__all__ = ["SUMMARY_FILE", "StagedRecipe"]

SUMMARY_FILE = "recipe.json"


class StagedRecipe:
    """Stages, checkpoints and exact resumption; see the module docstring."""

    recipe_name = "staged"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *, progress: bool = True,
                 callbacks: Sequence[Any] = ()) -> None:
        from hashlab.train.engine import check_run_dir, resolve_device, seed_everything

        self.config = config
        self.run_dir = Path(run_dir) if run_dir else Path(config.output_dir) / config.name
        check_run_dir(self.run_dir)
        self.progress, self.callbacks = progress, list(callbacks)
        self.device = resolve_device(config.train.device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        seed_everything(config.seed)
        self.stage = 0  # stages completed
        self.steps = 0  # optimiser steps taken
        self.logs: list[dict[str, Any]] = []

    # ------------------------------------------------------------ to override
    def stage_names(self) -> list[str]:
        raise NotImplementedError

    def run_stage(self, name: str, gen: torch.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def trainables(self) -> dict[str, Any]:
        """What the checkpoint holds besides the recipe's extra state: name → an object with
        ``state_dict`` / ``load_state_dict`` (modules, optimisers)."""
        raise NotImplementedError

    def stage_metrics(self) -> dict[str, Any]:
        """Measured after every stage and added to its log (e.g. validation accuracy)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def save_final(self) -> Path:
        raise NotImplementedError

    def summarise(self) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------ driving
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run the stages not yet done (continuing a killed recipe with ``resume``), write the
        finished model and the summary, and return the summary."""
        from hashlab.io import atomic_torch_save, atomic_write_json, atomic_write_text
        from hashlab.train.engine import (
            CHECKPOINT,
            CONFIG_FILE,
            load_checkpoint,
            prepare_run_dir,
            seed_everything,
        )

        prepare_run_dir(self.run_dir, resume, self.config,
                        load=lambda p: load_checkpoint(p, map_location=self.device),
                        restore=self.load_state_dict,
                        restore_errors=(KeyError, RuntimeError, ValueError, TypeError))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / CONFIG_FILE, self.config.to_yaml())
        names = self.stage_names()
        if self.stage > len(names):
            raise CheckpointError(f"{self.run_dir / CHECKPOINT}: {self.stage} stages done, but "
                                  f"the recipe has {len(names)}")
        while self.stage < len(names):
            name = names[self.stage]
            # every stage's randomness (dropout, shuffles, draws) from (seed, stage): a resumed
            # recipe replays exactly what an uninterrupted one does
            seed_everything(self.config.seed * 1_000_003 + 7919 * (self.stage + 1))
            gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.stage + 1)
            start = time.perf_counter()
            log = {"stage": name, **self.run_stage(name, gen), **self.stage_metrics()}
            log["steps"] = self.steps
            log["seconds"] = round(time.perf_counter() - start, 2)
            self.logs.append(log)
            self.stage += 1
            atomic_torch_save(self.run_dir / CHECKPOINT, self.state_dict(),
                              then="continue the recipe with --resume")
            if self.progress:
                tqdm.write(self.describe(log))
            for cb in self.callbacks:
                cb(self, self.stage - 1, -1)
        self.save_final()
        summary = self.summarise()
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def describe(self, log: dict[str, Any]) -> str:
        """A stage's log as one line (printed after the stage with progress on)."""
        shown = {k: v for k, v in log.items()
                 if k not in ("stage", "seconds") and not isinstance(v, list | dict)}
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in shown.items())
        return f"{self.recipe_name} {log['stage']}: {text} ({log['seconds']:.1f}s)"

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "steps": self.steps, "logs": self.logs,
                **{name: part.state_dict() for name, part in self.trainables().items()},
                "extra": self.extra_state(), "config": self.config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.trainables().items():
            part.load_state_dict(state[name])
        self.logs = list(state["logs"])
        self.stage, self.steps = int(state["stage"]), int(state["steps"])
        self.load_extra_state(state["extra"])

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """One optimiser step on ``loss`` (``optimizer``: default ``self.optimizer``); a
        non-finite loss stops the recipe with a :class:`DivergedError`."""
        if not torch.isfinite(loss):
            lr = self.config.optim.lr
            raise DivergedError(f"recipe {self.recipe_name}: the loss became {loss.item()} at "
                                f"stage {self.stage + 1} (optim.lr: {lr:g}); lower optim.lr")
        optimizer = optimizer or self.optimizer  # type: ignore[attr-defined]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.steps += 1
