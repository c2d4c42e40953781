"""Born-Again Networks as a recipe (Furlanello et al., ICML 2018): generation 1 is the config
trained as usual; generation k is a fresh copy (its own seed) trained on generation k−1's
outputs, recomputed on the same augmented batch the student sees.

``hashlab train CONFIG`` runs it when the config has ``recipe: {name: ban, args: {...}}``. Each
generation is an ordinary run in ``RUN/gen-K`` (checkpointed every epoch), so a recipe killed in
any generation resumes with ``--resume`` and gives the result of an uninterrupted one. At the
end ``RUN/recipe.json`` holds every generation's test accuracy and retrieval mAP and the
accuracy of BANE (the average of generations 1..k). Losses: :mod:`hashlab.train.recipes.distill`;
the recipe: ``docs/data-and-models.md#recipes``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashlab.errors import CheckpointError, ConfigError
from hashlab.train.recipes.distill import (
    ban_l_loss,
    ban_loss,
    cwtm_loss,
    dkpp_loss,
    ensemble_probabilities,
)
from hashlab.train.recipes.registry import RECIPES
from hashlab.validation import check_int

__all__ = ["BAN_LOSSES", "BornAgain"]

#: the generation-k losses: the paper's BAN, BAN+L and its two ablations
BAN_LOSSES = ("ban", "ban+l", "cwtm", "dkpp")
SUMMARY_FILE = "recipe.json"


@RECIPES.register("ban", "born-again")
class BornAgain:
    """Born-Again Networks: ``generations`` (≥ 2) identically shaped models, each after the
    first trained on the previous one's outputs with ``loss`` (``ban``: teacher only, ``ban+l``:
    plus the labels, ``cwtm``, ``dkpp``: the paper's ablations) at ``temperature`` (1, the
    paper's; ``ban`` / ``ban+l`` only). Generation k's seed is ``seed + seed_step·(k−1)``. The
    config's loss provides the classifier whose logits are distilled (it needs ``logits``).
    ``code_weight`` > 0 adds embedding-level distillation of the retrieval codes:
    ``code_weight · mean((codes − teacher codes)²)`` on the same batch."""

    def __init__(self, config: Any, run_dir: str | Path | None = None, *, progress: bool = True,
                 callbacks: Any = (), generations: int = 3, loss: str = "ban",
                 temperature: float = 1.0, seed_step: int = 1000,
                 code_weight: float = 0.0) -> None:
        from hashlab.losses.registry import LOSSES

        try:
            self.generations = check_int(generations, "recipe.args.generations", minimum=2)
            self.seed_step = check_int(seed_step, "recipe.args.seed_step", minimum=1)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if loss not in BAN_LOSSES:
            raise ConfigError(f"recipe.args.loss: {loss!r} is not one of {', '.join(BAN_LOSSES)}")
        if not code_weight >= 0:
            raise ConfigError(f"recipe.args.code_weight must be >= 0, got {code_weight}")
        self.code_weight = float(code_weight)
        if not temperature > 0:
            raise ConfigError(f"recipe.args.temperature must be > 0, got {temperature}")
        if temperature != 1.0 and loss in ("cwtm", "dkpp"):
            raise ConfigError(f"recipe.args.temperature: {loss} is defined at T = 1 only")
        if not callable(getattr(LOSSES.get(config.loss.name), "logits", None)):
            raise ConfigError(f"recipe ban distils class logits, but loss.name "
                              f"{config.loss.name!r} has no classifier (logits); use a "
                              "softmax-family loss such as hash-ce")
        self.loss, self.temperature = loss, float(temperature)
        self.config, self.progress, self.callbacks = config, progress, list(callbacks)
        self.run_dir = Path(run_dir) if run_dir else Path(config.output_dir) / config.name

    def generation_dir(self, k: int) -> Path:
        return self.run_dir / f"gen-{k}"

    def generation_config(self, k: int) -> Any:
        """Generation ``k``'s run config: the recipe's, as one plain run with its own seed."""
        return dataclasses.replace(
            self.config, name=f"gen-{k}", seed=self.config.seed + self.seed_step * (k - 1),
            recipe=type(self.config.recipe)())

    def objective(self, teacher: Any) -> Any:
        """The generation-k training loss, from the teacher run (frozen, eval mode)."""
        teacher.model.eval()
        teacher.loss_fn.eval()

        def distil(trainer: Any, images: torch.Tensor, codes: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # the same augmented batch as the student's
                teacher_codes = teacher.model(images)
                target = teacher.loss_fn.logits(teacher_codes)
            student = trainer.loss_fn.logits(codes)
            if self.loss == "ban":
                loss = ban_loss(student, target, self.temperature)
            elif self.loss == "ban+l":
                loss = ban_l_loss(student, target, labels, self.temperature)
            elif self.loss == "cwtm":
                loss = cwtm_loss(student, target, labels)
            else:
                loss = dkpp_loss(student, target)
            if self.code_weight:  # embedding-level distillation of the retrieval codes
                loss = loss + self.code_weight * (codes - teacher_codes).pow(2).mean()
            return loss

        return distil

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train the generations (continuing a killed recipe with ``resume``), then write and
        return the summary."""
        from hashlab.encode import TrainedRun
        from hashlab.io import atomic_write_json
        from hashlab.train.engine import CHECKPOINT, FINAL_MODEL, Trainer

        started = [k for k in range(1, self.generations + 1)
                   if self.generation_dir(k).exists()]
        if started and not resume:
            raise CheckpointError(f"{self.run_dir} already holds a recipe run (generations "
                                  f"{started}); pass --resume to continue it, or choose another "
                                  "name / remove the directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for k in range(1, self.generations + 1):
            gen_dir = self.generation_dir(k)
            if (gen_dir / FINAL_MODEL).exists():
                continue
            objective = None
            if k > 1:
                objective = self.objective(TrainedRun(self.generation_dir(k - 1),
                                                      device=self._device()))
            Trainer(self.generation_config(k), gen_dir, progress=self.progress,
                    callbacks=self.callbacks, objective=objective).fit(
                resume=(gen_dir / CHECKPOINT).exists())
        summary = self.summarise()
        atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        return summary

    def _device(self) -> Any:
        from hashlab.train.engine import resolve_device

        return resolve_device(self.config.train.device)

    @staticmethod
    def summary_table(summary: dict[str, Any]) -> str:
        """The summary as the text table ``hashlab train`` prints."""
        lines = ["generation  loss      test acc  ensemble acc  mAP@all"]
        lines += [f"{r['generation']:>10}  {r['loss']:<8}  {r['test_accuracy']:8.4f}  "
                  f"{r['ensemble_accuracy']:12.4f}  {r['mAP@all']:.4f}"
                  for r in summary["generations"]]
        return "\n".join(lines)

    def summarise(self) -> dict[str, Any]:
        """Per generation: test accuracy of its classifier, retrieval mAP@all (the config's
        protocol) and the accuracy of BANE over generations 1..k."""
        from hashlab.encode import TrainedRun
        from hashlab.eval.protocols import evaluate_run

        rows, logits, labels = [], [], None
        for k in range(1, self.generations + 1):
            run = TrainedRun(self.generation_dir(k))
            codes = run.encode("test", progress=False)
            with torch.no_grad():
                z = run.loss_fn.logits(torch.from_numpy(codes.float)).double()
            labels = torch.from_numpy(np.asarray(codes.labels))
            logits.append(z)
            result = evaluate_run(run, self.config.eval.protocol, progress=False)
            metrics = result["metrics"]
            mAP = (metrics.get("binary") or metrics["float"])["mAP@all"]
            rows.append({
                "generation": k, "seed": self.generation_config(k).seed,
                "loss": self.config.loss.name if k == 1 else self.loss,
                "test_accuracy": float((z.argmax(1) == labels).double().mean()),
                "ensemble_accuracy": float(
                    (ensemble_probabilities(logits).argmax(1) == labels).double().mean()),
                "mAP@all": float(mAP)})
        return {"recipe": "ban", "loss": self.loss, "temperature": self.temperature,
                "code_weight": self.code_weight,
                "protocol": self.config.eval.protocol, "generations": rows}
