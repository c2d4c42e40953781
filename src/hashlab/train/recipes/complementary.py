"""Complementary labels: a binary main task learnt together with "seemingly uninformative"
auxiliary label sets (after Matsoukas et al., "Adding seemingly uninformative labels helps in
low data regimes", ICML 2020).

The trunk (the config's backbone + code head: the codes retrieval uses) feeds a **main head**
for a binary task — is the image of one of the ``positive`` classes? — and one head per
**auxiliary label set** with a weight: ``classes`` (the full class labels, cross-entropy) and
``attributes`` (a class-level attribute table such as the built-in Fashion-MNIST one,
multi-label BCE). The loss of a batch is

    quantization(codes) + main + Σ_s w_s · aux_s

and only the labelled part of ``data.semi`` is used. A weight of 0 (or ``auxiliary: {}``)
switches a set off: no head, no loss, the main-task-only baseline. Everything that is *chosen*
— the stage kept with ``select: best``, the F1 threshold — and everything reported is about the
main task alone: validation AP per stage; test AP, F1 at 0.5 and F1 at the threshold that
maximises F1 on the validation part (never on test); plus the ``eval.protocol`` mAP@all of the
codes. ``docs/recipes.md#complementary-labels``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hashlab.errors import CheckpointError, ConfigError, DataError
from hashlab.train.recipes.registry import RECIPES
from hashlab.train.recipes.semi import ClassifierHeads, Supervised

__all__ = ["AUXILIARY_SETS", "Complementary", "ComplementaryHeads", "average_precision",
           "best_f1_threshold", "f1_at", "load_complementary", "main_targets"]

#: the auxiliary label sets a run can weight
AUXILIARY_SETS = ("classes", "attributes")
MAIN_LOSSES = ("bce", "ce")


def main_targets(labels: Any, positive: Sequence[int]) -> torch.Tensor:
    """The main task's targets ``float32 [N]``: 1 where the class label is one of
    ``positive``, else 0."""
    return torch.from_numpy(np.isin(np.asarray(labels), np.asarray(list(positive)))
                            .astype(np.float32))


def average_precision(targets: Any, scores: Any) -> float | None:
    """scikit-learn's average precision of ``scores`` for the binary ``targets``; None when
    the targets hold only one class (AP is then undefined)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(targets).astype(bool)
    if y.all() or not y.any():
        return None
    return float(average_precision_score(y, np.asarray(scores, dtype=np.float64)))


def f1_at(targets: Any, scores: Any, threshold: float | None) -> float | None:
    """F1 of the prediction ``score >= threshold`` (None without a threshold)."""
    from sklearn.metrics import f1_score

    if threshold is None:
        return None
    pred = np.asarray(scores) >= threshold
    return float(f1_score(np.asarray(targets).astype(bool), pred, zero_division=0))


def best_f1_threshold(targets: Any, scores: Any) -> tuple[float | None, float | None]:
    """``(threshold, F1)``: among the distinct scores, the threshold t whose prediction
    ``score >= t`` has the highest F1 on (``targets``, ``scores``) — the lowest such t on a
    tie; ``(None, None)`` when the targets hold no positive."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(targets).astype(bool)
    s = np.asarray(scores)
    if not y.any():
        return None, None
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:len(thresholds)], recall[:len(thresholds)]
    denominator = precision + recall
    f1 = np.where(denominator > 0, 2 * precision * recall / np.maximum(denominator, 1e-300), 0.0)
    best = int(np.argmax(f1))  # thresholds ascend: argmax is the lowest of tied thresholds
    return float(thresholds[best]), float(f1[best])


class ComplementaryHeads(nn.Module):
    """The heads on the codes: ``main`` (:class:`ClassifierHeads` with ``heads`` heads of 1
    output for ``bce``, 2 for ``ce``) and ``aux`` (one single-head :class:`ClassifierHeads` per
    auxiliary set, ``name → outputs``)."""

    def __init__(self, dim: int, main_loss: str, aux_outputs: Mapping[str, int], heads: int,
                 hidden: int, dropout: float) -> None:
        super().__init__()
        self.main_loss = main_loss
        self.main = ClassifierHeads(dim, 1 if main_loss == "bce" else 2, heads, hidden, dropout)
        self.aux = nn.ModuleDict({name: ClassifierHeads(dim, n, 1, hidden, dropout)
                                  for name, n in aux_outputs.items()})

    def positive_scores(self, codes: torch.Tensor) -> torch.Tensor:
        """The main heads' probability of the positive class ``[N]``, averaged over heads
        (sigmoid of the logit for ``bce``, softmax of the second output for ``ce``)."""
        logits = self.main(codes)  # [H, N, K]
        if self.main_loss == "bce":
            return torch.sigmoid(logits[..., 0]).mean(dim=0)
        return torch.softmax(logits, dim=2)[..., 1].mean(dim=0)


def load_complementary(run_dir: str | Path) -> tuple[ComplementaryHeads, dict[str, Any]]:
    """The heads a ``complementary`` run stored in ``RUN/model.pt`` (eval mode) and the facts
    stored with them (``positive``, ``auxiliary`` weights, ``threshold`` chosen on the
    validation part, ``selected_stage``, ...): ``heads.positive_scores(codes)`` with codes from
    the run's model (``hashlab.encode.TrainedRun(run).model``)."""
    from hashlab.artifacts import load_torch_file
    from hashlab.train.engine import FINAL_MODEL

    path = Path(run_dir) / FINAL_MODEL
    state, _ = load_torch_file(path, what="finished model")
    saved = state.get("complementary")
    if saved is None:
        raise CheckpointError(f"{path}: not a complementary run's model (no complementary "
                              "entry)")
    heads = ComplementaryHeads(state["config"]["model"]["dim"], saved["main_loss"],
                               saved["aux_outputs"], saved["heads"], saved["hidden"],
                               saved["dropout"])
    heads.load_state_dict(saved["state"])
    facts = {k: v for k, v in saved.items() if k != "state"}
    return heads.eval(), facts


def _fmt(value: Any, spec: str, width: int = 0) -> str:
    """``value`` formatted with ``spec``, or a dash when it is missing."""
    return format(value, spec) if isinstance(value, int | float) else "–".rjust(width)


def _check_positive(positive: Any, num_classes: int) -> list[int]:
    key = "recipe.args.positive"
    if positive is None:
        raise ConfigError(f"{key}: required: the class ids of the main task's positive class, "
                          "e.g. [6] (Fashion-MNIST's Shirt vs the rest)")
    if not isinstance(positive, list | tuple) or not positive:
        raise ConfigError(f"{key}: expected a non-empty list of class ids, got {positive!r}")
    out = []
    for v in positive:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ConfigError(f"{key}: class ids are integers, got {v!r}")
        if not 0 <= v < num_classes:
            raise ConfigError(f"{key}: class id {v} is out of range for {num_classes} classes")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: repeated class ids in {positive!r}")
    if len(out) == num_classes:
        raise ConfigError(f"{key}: every class is positive; the main task needs a negative "
                          "class")
    return sorted(out)


def _check_auxiliary(auxiliary: Any) -> dict[str, float]:
    key = "recipe.args.auxiliary"
    if auxiliary is None:
        return {"classes": 1.0}
    if not isinstance(auxiliary, Mapping):
        raise ConfigError(f"{key}: expected a mapping of label set → weight (sets: "
                          f"{', '.join(AUXILIARY_SETS)}), got {auxiliary!r}")
    out = {}
    for name, weight in auxiliary.items():
        if name not in AUXILIARY_SETS:
            raise ConfigError(f"{key}.{name}: unknown label set; known: "
                              f"{', '.join(AUXILIARY_SETS)}")
        if (isinstance(weight, bool) or not isinstance(weight, Real)
                or not math.isfinite(weight) or weight < 0):
            raise ConfigError(f"{key}.{name}: the weight must be a finite number >= 0, got "
                              f"{weight!r}")
        if weight > 0:  # weight 0 switches the set off
            out[name] = float(weight)
    return {name: out[name] for name in AUXILIARY_SETS if name in out}


def class_attribute_matrix(table: str, class_names: Sequence[str], num_classes: int
                           ) -> tuple[np.ndarray, list[str]]:
    """A class-level attribute table's rows in the dataset's class order ``float32 [C, p]``
    (matched by class name when the dataset's names are all in the table, else by class id
    when the table has as many classes), and the attribute names."""
    from hashlab.data.attributes import read_class_attributes

    key = "recipe.args.attribute_table"
    try:
        parsed = read_class_attributes(table)
    except DataError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if class_names and all(n in parsed.classes for n in class_names):
        rows = [parsed.classes.index(n) for n in class_names]
    elif len(parsed.classes) == num_classes:
        rows = list(range(num_classes))
    else:
        raise ConfigError(f"{key}: {table!r} has {len(parsed.classes)} classes, the dataset "
                          f"{num_classes}, and the class names do not match")
    return parsed.matrix[rows].astype(np.float32), list(parsed.names)


@RECIPES.register("complementary")
class Complementary(Supervised):
    """Complementary labels: a binary main task (``positive`` classes vs the rest) learnt with
    weighted "seemingly uninformative" auxiliary label sets (``classes``, ``attributes``) on the
    labelled part of ``data.semi``; chosen and evaluated on the main task only.

    Arguments (``recipe.args``):

    * ``positive`` — the class ids of the positive class (required), e.g. ``[6]``;
    * ``auxiliary`` — ``{set: weight}`` for the sets ``classes`` and ``attributes`` (default
      ``{classes: 1.0}``; ``{}`` or weight 0 = main task only);
    * ``main_loss`` — ``bce`` (one logit, sigmoid BCE; default) or ``ce`` (two-way softmax);
    * ``attribute_table`` — the class-level table for ``attributes`` (default ``fmnist``);
    * ``select`` — ``last`` (default) keeps the weights after the last stage, ``best`` those
      after the stage with the highest validation AP of the main task;
    * ``epochs``, ``chunks`` — as ``supervised``; plus the engine's ``heads`` (main heads,
      default 1), ``hidden``, ``dropout``, ``batch_size``, ``quantization_weight``.
    """

    recipe_name = "complementary"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *,
                 positive: list[int] | None = None,
                 auxiliary: dict[str, float] | None = None, main_loss: str = "bce",
                 attribute_table: str = "fmnist", select: str = "last", heads: int = 1,
                 hidden: int = 256, dropout: float = 0.5, **kwargs: Any) -> None:
        super().__init__(config, run_dir, heads=heads, hidden=hidden, dropout=dropout,
                         **kwargs)
        from hashlab.train.engine import build_optimizer

        if main_loss not in MAIN_LOSSES:
            raise ConfigError(f"recipe.args.main_loss: expected 'bce' or 'ce', got "
                              f"{main_loss!r}")
        if select not in ("last", "best"):
            raise ConfigError(f"recipe.args.select: expected 'last' or 'best', got {select!r}")
        if select == "best" and not len(self.validation):
            raise ConfigError("recipe.args.select: 'best' chooses a stage by validation AP; "
                              "set data.semi.validation > 0")
        self.positive = _check_positive(positive, self.num_classes)
        self.weights = _check_auxiliary(auxiliary)
        self.main_loss, self.select = main_loss, select
        self.attribute_table = attribute_table
        labels = np.asarray(self.labelled.labels)
        self.class_targets = torch.as_tensor(labels, dtype=torch.long)
        self.main_y = main_targets(labels, self.positive)
        aux_outputs = {}
        self.attribute_names: list[str] = []
        self.attribute_targets: torch.Tensor | None = None
        if "classes" in self.weights:
            aux_outputs["classes"] = self.num_classes
        if "attributes" in self.weights:
            matrix, self.attribute_names = class_attribute_matrix(
                attribute_table, self.class_names, self.num_classes)
            self.attribute_targets = torch.from_numpy(matrix[labels])
            aux_outputs["attributes"] = matrix.shape[1]
        self.aux_outputs = aux_outputs
        # the engine's C-way heads are replaced by the main + auxiliary heads
        self.classifier = ComplementaryHeads(config.model.dim, main_loss, aux_outputs,
                                             self.num_heads, self.hidden, dropout
                                             ).to(self.device)
        self.heads = self.classifier.main
        self.dropout = float(dropout)
        self.optimizer = build_optimizer(config, [*self.model.parameters(),
                                                  *self.classifier.parameters()])
        self.best_ap: float | None = None
        self.best_stage: int | None = None
        self.best_state: dict[str, Any] | None = None

    # ------------------------------------------------------------ state
    def trainables(self) -> dict[str, Any]:
        return {"model": self.model, "heads": self.classifier, "optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {"best_ap": self.best_ap, "best_stage": self.best_stage,
                "best_state": self.best_state}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.best_ap, self.best_stage = state["best_ap"], state["best_stage"]
        self.best_state = state["best_state"]

    # ------------------------------------------------------------ training
    def loss_terms(self, codes: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted losses of the batch ``idx`` (positions in the labelled part) from
        its ``codes``: ``main`` (summed over the main heads) and one per auxiliary set."""
        terms: dict[str, torch.Tensor] = {}
        y = self.main_y[idx].to(self.device)
        logits = self.classifier.main(codes)
        if self.main_loss == "bce":
            terms["main"] = sum((F.binary_cross_entropy_with_logits(z[:, 0], y)
                                 for z in logits), codes.new_zeros(()))
        else:
            terms["main"] = sum((F.cross_entropy(z, y.long()) for z in logits),
                                codes.new_zeros(()))
        for name, head in self.classifier.aux.items():
            z = head(codes)[0]
            if name == "classes":
                terms[name] = F.cross_entropy(z, self.class_targets[idx].to(self.device))
            else:
                assert self.attribute_targets is not None
                terms[name] = F.binary_cross_entropy_with_logits(
                    z, self.attribute_targets[idx].to(self.device))
        return terms

    def loss(self, codes: torch.Tensor, idx: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``quantization(codes) + main + Σ w · aux`` and its unweighted terms."""
        terms = self.loss_terms(codes, idx)
        total = self.quantization(codes) + terms["main"]
        for name, weight in self.weights.items():
            total = total + weight * terms[name]
        return total, terms

    def run_stage(self, name: str, gen: torch.Generator) -> dict[str, Any]:
        i = int(name.split("-")[1]) - 1
        epochs = self.epochs * (i + 1) // self.chunks - self.epochs * i // self.chunks
        self.model.train()
        self.classifier.train()
        n = len(self.labelled)
        sums: dict[str, float] = {}
        count = 0
        steps = epochs * sum(1 for b in torch.arange(n).split(self.batch_size) if len(b) >= 2)
        bar = tqdm(self.batches(n, gen, epochs), total=steps, desc=name, leave=False,
                   disable=not self.progress, unit="batch", dynamic_ncols=True)
        for idx in bar:
            codes = self.model(self.images(self.labelled, idx, gen))
            total, terms = self.loss(codes, idx)
            self.step(total)
            for key, value in {"loss": total, **terms}.items():
                sums[key] = sums.get(key, 0.0) + float(value.item())
            count += 1
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
        bar.close()
        log: dict[str, Any] = {"epochs": epochs}
        for key, value in sums.items():
            log[key if key == "loss" else f"loss_{key}"] = value / max(count, 1)
        return log

    # ------------------------------------------------------------ the main task
    @torch.no_grad()
    def positive_scores(self, dataset: Any) -> np.ndarray:
        """The main task's positive score of every image of ``dataset`` (eval mode)."""
        codes = self.codes_of(dataset)
        self.classifier.eval()
        out = [self.classifier.positive_scores(chunk.to(self.device)).cpu()
               for chunk in codes.split(self.config.eval.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def validation_choice(self) -> dict[str, Any]:
        """The validation part's AP and the F1-maximising threshold (with its F1)."""
        if not len(self.validation):
            return {"val_ap": None, "threshold": None, "val_f1": None}
        y = main_targets(self.validation.labels, self.positive).numpy()
        scores = self.positive_scores(self.validation)
        threshold, f1 = best_f1_threshold(y, scores)
        return {"val_ap": average_precision(y, scores), "threshold": threshold, "val_f1": f1}

    def main_task_metrics(self, dataset: Any, threshold: float | None) -> dict[str, Any]:
        """AP, F1 at 0.5 and F1 at ``threshold`` of the main task on ``dataset``."""
        y = main_targets(dataset.labels, self.positive).numpy()
        scores = self.positive_scores(dataset)
        return {"ap": average_precision(y, scores), "f1@0.5": f1_at(y, scores, 0.5),
                "f1@threshold": f1_at(y, scores, threshold), "positives": int(y.sum()),
                "images": len(y)}

    def stage_metrics(self) -> dict[str, Any]:
        """The main task's validation AP after every stage (with ``select: best``, the stage
        with the highest so far keeps a copy of its weights)."""
        ap = average_precision(main_targets(self.validation.labels, self.positive).numpy(),
                               self.positive_scores(self.validation)) \
            if len(self.validation) else None
        if self.select == "best" and ap is not None and (self.best_ap is None
                                                         or ap > self.best_ap):
            self.best_ap, self.best_stage = ap, self.stage + 1
            self.best_state = {
                "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "heads": {k: v.detach().clone()
                          for k, v in self.classifier.state_dict().items()}}
        return {"val_ap": ap}

    # ------------------------------------------------------------ outputs
    def save_final(self) -> Path:
        if self.select == "best" and self.best_state is not None:
            self.model.load_state_dict(self.best_state["model"])
            self.classifier.load_state_dict(self.best_state["heads"])
        return super().save_final()

    def selected_stage(self) -> int:
        return self.best_stage if self.select == "best" and self.best_stage else self.stage

    def final_extras(self) -> dict[str, Any]:
        """``complementary`` in ``RUN/model.pt`` (:func:`load_complementary`): the heads and
        what their predictions mean. ``recipe_heads`` is emptied: the engine's C-way heads
        are not trained here (``load_heads`` then refuses the run)."""
        return {"recipe_heads": None, "complementary": {
            "state": self.classifier.state_dict(), "main_loss": self.main_loss,
            "aux_outputs": dict(self.aux_outputs), "heads": self.num_heads,
            "hidden": self.hidden, "dropout": self.dropout, "positive": list(self.positive),
            "auxiliary": dict(self.weights), "attribute_table": self.attribute_table
            if "attributes" in self.weights else None,
            "attribute_names": list(self.attribute_names),
            "threshold": self.validation_choice()["threshold"],
            "selected_stage": self.selected_stage()}}

    def summarise(self) -> dict[str, Any]:
        from hashlab.encode import TrainedRun
        from hashlab.eval.protocols import evaluate_run

        run = TrainedRun(self.run_dir)
        metrics = evaluate_run(run, self.config.eval.protocol, progress=False)["metrics"]
        val = self.validation_choice()
        test = self.main_task_metrics(run.load_split("test"), val["threshold"])
        names = [self.class_names[c] for c in self.positive] if self.class_names else []
        return {
            "recipe": self.recipe_name, "split": self.parts.split.summary(),
            "protocol": self.config.eval.protocol, "positive": list(self.positive),
            "positive_names": names, "auxiliary": dict(self.weights),
            "main_loss": self.main_loss, "select": self.select,
            "selected_stage": self.selected_stage(),
            "val_ap": val["val_ap"], "val_threshold": val["threshold"], "val_f1": val["val_f1"],
            "test_ap": test["ap"], "test_f1@0.5": test["f1@0.5"],
            "test_f1@val_threshold": test["f1@threshold"],
            "test_positives": test["positives"], "test_images": test["images"],
            "mAP@all": float((metrics.get("binary") or metrics["float"])["mAP@all"]),
            "steps": self.steps, "stages": self.logs,
        }

    @staticmethod
    def summary_table(summary: dict[str, Any]) -> str:
        """The text table ``hashlab train`` prints: a row per stage (validation AP of the main
        task, loss, steps), then the test results."""
        lines = ["stage          val AP     loss  steps"]
        for log in summary["stages"]:
            lines.append(f"{log['stage']:<13}  {_fmt(log.get('val_ap'), '6.4f', 6)}  "
                         f"{_fmt(log.get('loss'), '7.4f', 7)}  {log['steps']:>5}")
        aux = ", ".join(f"{k} {v:g}" for k, v in summary["auxiliary"].items()) or "none"
        names = "/".join(summary["positive_names"]) or str(summary["positive"])
        lines.append(
            f"{summary['recipe']} ({names} vs rest; auxiliary: {aux}; stage "
            f"{summary['selected_stage']}): test AP {_fmt(summary['test_ap'], '.4f')}, "
            f"F1 {_fmt(summary['test_f1@0.5'], '.4f')} at 0.5, "
            f"{_fmt(summary['test_f1@val_threshold'], '.4f')} at the validation threshold "
            f"{_fmt(summary['val_threshold'], '.4f')}; {summary['protocol']} mAP@all "
            f"{summary['mAP@all']:.4f}")
        return "\n".join(lines)
