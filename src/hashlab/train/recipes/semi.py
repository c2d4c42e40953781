"""The engine shared by the semi-supervised recipes (Tri-net, pseudo-labelling, FeatMatch, and
the supervised-only baseline they are measured against).

A semi-supervised recipe trains the config's model (backbone + code head: the codes retrieval
uses) as a shared trunk, with classifier heads on the codes, on the ``data.semi`` split
(:mod:`hashlab.data.semi`): a few labelled images, a held-out validation part, and an
unlabelled pool. Its work is a list of **stages** (initialisation, round 1, round 2, ...); after
each stage everything (weights, optimiser, the recipe's own state such as thresholds or
prototypes, the logs) is written to ``RUN/checkpoint.pt``, and every stage draws its randomness
from a generator seeded by (seed, stage), so a recipe killed at any point and resumed with
``--resume`` gives the result of an uninterrupted run.

At the end ``RUN/model.pt`` is an ordinary finished run (the trunk: ``hashlab encode``,
``index``, ``evaluate`` and ``serve`` work on it) that also holds the heads;
``RUN/recipe.json`` holds the per-stage logs, the test accuracy of the heads' averaged softmax
and the retrieval mAP of the codes under the config's protocol. The recipes:
``docs/recipes.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hashlab.errors import CheckpointError, ConfigError
from hashlab.train.recipes.registry import RECIPES
from hashlab.train.recipes.staged import SUMMARY_FILE, StagedRecipe
from hashlab.validation import check_int

__all__ = ["SUMMARY_FILE", "ClassifierHeads", "SemiRecipe", "Supervised", "load_heads",
           "soft_cross_entropy"]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −Σ_c t_c log softmax(z)_c (targets: rows of a distribution)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class ClassifierHeads(nn.Module):
    """``heads`` classifiers on the codes, each ``Linear(dim, hidden) → ReLU → Dropout(dropout)
    → Linear(hidden, num_classes)``; ``forward`` gives their logits ``[heads, B, C]``. The
    dropout is what Tri-net's pseudo-label editing samples."""

    def __init__(self, dim: int, num_classes: int, heads: int = 3, hidden: int = 256,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                          nn.Linear(hidden, num_classes))
            for _ in range(heads))

    def __len__(self) -> int:
        return len(self.heads)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(codes) for head in self.heads])

    def probabilities(self, codes: torch.Tensor) -> torch.Tensor:
        """The heads' averaged softmax ``[B, C]`` (the recipes' prediction)."""
        return torch.softmax(self(codes), dim=2).mean(dim=0)


class SemiRecipe(StagedRecipe):
    """Base of the semi-supervised recipes. A subclass names its stages (``stage_names``),
    runs one (``run_stage(name, generator) -> log dict``) and may keep state across stages
    (``extra_state`` / ``load_extra_state``). Arguments common to all (``recipe.args``):
    ``heads``, ``hidden``, ``dropout`` (the classifier heads), ``batch_size`` (default
    ``train.batch_size``) and ``quantization_weight`` (the pull of the codes towards ±1 that
    makes their signs good hash codes, as in the ``hash-ce`` loss)."""

    recipe_name = "semi"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *, progress: bool = True,
                 callbacks: Sequence[Any] = (), heads: int = 3, hidden: int = 256,
                 dropout: float = 0.5, batch_size: int | None = None,
                 quantization_weight: float = 0.1) -> None:
        super().__init__(config, run_dir, progress=progress, callbacks=callbacks)
        from hashlab.data.learned_augment import build_batch_augment
        from hashlab.data.registry import load_dataset
        from hashlab.data.semi import semi_parts
        from hashlab.train.engine import _subset, build_model_for, build_optimizer

        if config.data.semi is None:
            raise ConfigError(f"recipe {self.recipe_name} trains on the low-label split: set "
                              "data.semi (labels_per_class, validation, seed)")
        for name, value in (("data.attributes", config.data.attributes),
                            ("data.classes", config.data.classes),
                            ("data.augment.learned", config.data.augment.learned)):
            if value is not None:
                raise ConfigError(f"recipe {self.recipe_name} does not support {name}")
        try:
            self.num_heads = check_int(heads, "recipe.args.heads", minimum=1)
            self.hidden = check_int(hidden, "recipe.args.hidden", minimum=1)
            self.batch_size = check_int(batch_size or config.train.batch_size,
                                        "recipe.args.batch_size", minimum=2)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not 0 <= dropout < 1:
            raise ConfigError(f"recipe.args.dropout must be in [0, 1), got {dropout}")
        if quantization_weight < 0:
            raise ConfigError(f"recipe.args.quantization_weight must be >= 0, got "
                              f"{quantization_weight}")
        self.quantization_weight = float(quantization_weight)
        d = config.data
        dataset = load_dataset(d.dataset, "train", root=d.root, download=d.download,
                               **({"image_size": d.image_size} if d.image_size else {}))
        if config.train.limit_train_samples:
            dataset = _subset(dataset, config.train.limit_train_samples, config.seed)
        self.parts = semi_parts(dataset, d.semi.labels_per_class, d.semi.validation,
                                d.semi.seed)
        self.labelled, self.unlabelled = self.parts.labelled, self.parts.unlabelled
        self.validation = self.parts.validation
        self.num_classes = int(dataset.num_classes)
        self.image_shape = [int(v) for v in dataset.image_shape]
        self.class_names = list(getattr(dataset, "classes", None) or [])
        self.model = build_model_for(config, self.image_shape[0]).to(self.device)
        self.heads = ClassifierHeads(config.model.dim, self.num_classes, self.num_heads,
                                     self.hidden, dropout).to(self.device)
        self.optimizer = build_optimizer(config, [*self.model.parameters(),
                                                  *self.heads.parameters()])
        self.augment = build_batch_augment(d.augment)  # flips, shifts, affine, elastic

    def trainables(self) -> dict[str, Any]:
        return {"model": self.model, "heads": self.heads, "optimizer": self.optimizer}

    def stage_metrics(self) -> dict[str, Any]:
        """The validation accuracy of the heads after every stage."""
        return {"val_accuracy": self.accuracy(self.validation) if len(self.validation)
                else None}

    # ------------------------------------------------------------ training pieces
    def batches(self, n: int, gen: torch.Generator, epochs: int = 1) -> Iterator[torch.Tensor]:
        """Shuffled index batches over ``n`` items for ``epochs`` epochs (the last partial
        batch of an epoch is kept when it holds at least two items)."""
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for batch in order.split(self.batch_size):
                if len(batch) >= 2:
                    yield batch

    def images(self, dataset: Any, idx: torch.Tensor, gen: torch.Generator | None
               ) -> torch.Tensor:
        """The images of ``dataset`` at ``idx``, augmented when a generator is given."""
        images, _ = dataset.get_batch(idx)
        if gen is not None and self.augment.active:
            images = self.augment(images, gen)
        return images.to(self.device)

    def quantization(self, codes: torch.Tensor) -> torch.Tensor:
        """``quantization_weight · mean((|codes| − 1)²)`` for a binary head, else 0."""
        if not self.model.binary or self.quantization_weight == 0:
            return codes.new_zeros(())
        return self.quantization_weight * (codes.abs() - 1).pow(2).mean()

    def fit_heads(self, images: Any, targets: torch.Tensor, heads: Sequence[int],
                  gen: torch.Generator, epochs: int, desc: str) -> float:
        """Train the trunk with ``heads`` on (``images``, ``targets``): ``images`` is a dataset,
        ``targets`` ``[len(heads), N, C]`` (one distribution per head and image, so each head
        can have its own smeared or pseudo-labelled targets; rows of all zeros are skipped).
        Returns the mean loss."""
        self.model.train()
        self.heads.train()
        n = targets.shape[1]
        total, count = 0.0, 0
        steps = sum(1 for _ in range(epochs) for b in torch.arange(n).split(self.batch_size)
                    if len(b) >= 2)
        bar = tqdm(self.batches(n, gen, epochs), total=steps, desc=desc, leave=False,
                   disable=not self.progress, unit="batch", dynamic_ncols=True)
        for idx in bar:
            codes = self.model(self.images(images, idx, gen))
            loss = self.quantization(codes)
            for row, v in enumerate(heads):
                t = targets[row, idx].to(self.device)
                keep = t.sum(dim=1) > 0
                if keep.any():
                    loss = loss + soft_cross_entropy(self.heads.heads[v](codes[keep]), t[keep])
            self.step(loss)
            total += loss.item()
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        return total / max(count, 1)

    @torch.no_grad()
    def codes_of(self, dataset: Any, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Eval-mode codes of ``dataset`` (or of its ``indices``), ``[N, dim]`` on the CPU."""
        self.model.eval()
        idx = torch.arange(len(dataset)) if indices is None else indices
        out = [self.model(self.images(dataset, chunk, None)).cpu()
               for chunk in idx.split(self.config.eval.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.config.model.dim)

    @torch.no_grad()
    def head_probabilities(self, codes: torch.Tensor, dropout: bool = False) -> torch.Tensor:
        """Each head's softmax ``[heads, N, C]`` of precomputed codes (dropout on if asked)."""
        self.heads.train(dropout)
        out = [torch.softmax(self.heads(chunk.to(self.device)), dim=2).cpu()
               for chunk in codes.split(self.config.eval.batch_size)]
        self.heads.eval()
        return torch.cat(out, dim=1)

    def accuracy(self, dataset: Any) -> float:
        """Accuracy of the heads' averaged softmax on ``dataset``."""
        probs = self.head_probabilities(self.codes_of(dataset)).mean(dim=0)
        return float((probs.argmax(1).numpy() == np.asarray(dataset.labels)).mean())

    # ------------------------------------------------------------ outputs
    def save_final(self) -> Path:
        from hashlab.io import atomic_torch_save
        from hashlab.train.engine import FINAL_MODEL, build_loss

        loss = build_loss(self.config, num_classes=self.num_classes)  # untrained: see load_heads
        return atomic_torch_save(self.run_dir / FINAL_MODEL, {
            "model": self.model.state_dict(), "loss": loss.state_dict(),
            "config": self.config.to_dict(), "epochs": self.stage,
            "dataset": {"num_classes": self.num_classes, "image_shape": self.image_shape,
                        "classes": self.class_names, "semi": self.parts.split.summary()},
            "recipe_heads": {"state": self.heads.state_dict(), "heads": self.num_heads,
                             "hidden": self.hidden,
                             "dropout": float(self.heads.heads[0][2].p)},
            **self.final_extras(),
        })

    def final_extras(self) -> dict[str, Any]:
        """Entries a subclass adds to ``RUN/model.pt`` (what its predictions need)."""
        return {}

    @staticmethod
    def summary_table(summary: dict[str, Any]) -> str:
        """The summary as the text table ``hashlab train`` prints: a row per stage, then the
        test accuracy and mAP."""
        lines = ["stage          val acc  pseudo-labels  their acc  steps"]
        for log in summary["stages"]:
            val, n, acc = (log.get("val_accuracy"), log.get("pseudo_labels"),
                           log.get("pseudo_accuracy"))
            lines.append(f"{log['stage']:<13}  {_fmt(val, '7.4f')}  {_fmt(n, '13.0f')}  "
                         f"{_fmt(acc, '9.4f')}  {log['steps']:>5}")
        lines.append(f"{summary['recipe']}: test accuracy {summary['test_accuracy']:.4f}, "
                     f"{summary['protocol']} mAP@all {summary['mAP@all']:.4f}")
        return "\n".join(lines)

    def summarise(self) -> dict[str, Any]:
        from hashlab.encode import TrainedRun
        from hashlab.eval.protocols import evaluate_run

        run = TrainedRun(self.run_dir)
        test = run.load_split("test")
        metrics = evaluate_run(run, self.config.eval.protocol, progress=False)["metrics"]
        probs = self.head_probabilities(self.codes_of(test))
        labels = np.asarray(test.labels)
        return {
            "recipe": self.recipe_name, "split": self.parts.split.summary(),
            "protocol": self.config.eval.protocol,
            "test_accuracy": float((probs.mean(0).argmax(1).numpy() == labels).mean()),
            "head_accuracies": [float((p.argmax(1).numpy() == labels).mean()) for p in probs],
            "mAP@all": float((metrics.get("binary") or metrics["float"])["mAP@all"]),
            "steps": self.steps, "stages": self.logs,
        }


def _fmt(value: Any, spec: str) -> str:
    width = int(spec.split(".")[0] or 0)
    return format(value, spec) if isinstance(value, int | float) else "–".rjust(width)


def load_heads(run_dir: str | Path) -> ClassifierHeads:
    """The classifier heads a semi-supervised recipe stored in ``RUN/model.pt`` (the run's own
    ``loss`` classifier is not trained by these recipes)."""
    from hashlab.artifacts import load_torch_file
    from hashlab.train.engine import FINAL_MODEL

    path = Path(run_dir) / FINAL_MODEL
    state, _ = load_torch_file(path, what="finished model")
    saved = state.get("recipe_heads")
    if saved is None:
        raise CheckpointError(f"{path}: not a semi-supervised recipe's model (no recipe heads)")
    meta = state["dataset"]
    heads = ClassifierHeads(state["config"]["model"]["dim"], meta["num_classes"],
                            saved["heads"], saved["hidden"], saved["dropout"])
    heads.load_state_dict(saved["state"])
    return heads.eval()


def one_hot(labels: Any, num_classes: int) -> torch.Tensor:
    return F.one_hot(torch.as_tensor(np.asarray(labels), dtype=torch.long),
                     num_classes).float()


@RECIPES.register("supervised")
class Supervised(SemiRecipe):
    """The supervised-only baseline of the semi-supervised recipes: the same trunk and heads
    trained on the labelled images alone for ``epochs`` epochs, in ``chunks`` checkpointed
    stages (so that its optimiser steps can match another recipe's budget)."""

    recipe_name = "supervised"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *,
                 epochs: int = 60, chunks: int = 1, **kwargs: Any) -> None:
        super().__init__(config, run_dir, **kwargs)
        try:
            self.epochs = check_int(epochs, "recipe.args.epochs", minimum=1)
            self.chunks = check_int(chunks, "recipe.args.chunks", minimum=1)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.chunks > self.epochs:
            raise ConfigError(f"recipe.args.chunks: {chunks} stages of {epochs} epochs leaves "
                              "some empty; use at most as many chunks as epochs")

    def stage_names(self) -> list[str]:
        return [f"train-{i + 1}" for i in range(self.chunks)]

    def run_stage(self, name: str, gen: torch.Generator) -> dict[str, Any]:
        i = int(name.split("-")[1]) - 1
        epochs = self.epochs * (i + 1) // self.chunks - self.epochs * i // self.chunks
        target = one_hot(self.labelled.labels, self.num_classes)
        targets = target.expand(len(self.heads), *target.shape)
        loss = self.fit_heads(self.labelled, targets, range(len(self.heads)), gen,
                              epochs, desc=name)
        return {"epochs": epochs, "loss": loss}
