"""Tri-net (Chen, Wang, Gao and Zhou, IJCAI 2018): three classifier heads on a shared trunk
teach one another from an unlabelled pool.

Stages (each checkpointed; :mod:`hashlab.train.recipes.semi` is the engine):

* ``init`` — trunk and heads trained on the labelled images, each head on its own
  **output-smeared** copy of the labels (:func:`smear_labels`), so that the three start
  different;
* ``round-t`` for t = 1..rounds — a pool of ``min(pool_base · 2^t, |U|)`` unlabelled images is
  drawn; for each head v the *other* heads label the pool images on which they agree with
  confidence ≥ σ_t (:func:`agreeing_labels`), **DES** drops the labels that the labelling heads
  do not reproduce under dropout (:func:`des_keep`), and head v (with the trunk) trains on the
  labelled images plus its pseudo-labelled ones. σ_t = σ − σ_os right after an output-smearing
  stage (smeared heads are less confident), else σ;
* a round in which the pool is the whole unlabelled set and t is a multiple of
  ``finetune_every`` instead **fine-tunes** every head on freshly smeared labels (diversity
  augmentation), lowers σ by ``sigma_decay`` and labels nothing.

Prediction is the heads' averaged softmax. Every round logs, per head, how many pseudo-labels
it got before and after DES and their accuracy against the pool's hidden true labels.
``docs/recipes.md#tri-net``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashlab.errors import ConfigError
from hashlab.train.recipes.registry import RECIPES
from hashlab.train.recipes.semi import SemiRecipe, one_hot
from hashlab.validation import check_int

__all__ = ["TriNet", "agreeing_labels", "des_keep", "smear_labels"]


def smear_labels(labels: torch.Tensor, num_classes: int, std: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Output smearing (Breiman 2000): ŷ_c = y_c + ReLU(z_c · std), z ~ N(0, 1), each row then
    divided by its sum. ``labels`` are class indices ``[N]``; returns ``[N, C]``."""
    y = one_hot(labels, num_classes)
    z = torch.randn(y.shape, generator=generator)
    smeared = y + torch.relu(z * std)
    return smeared / smeared.sum(dim=1, keepdim=True)


def agreeing_labels(probs: torch.Tensor, sigma: float, confidence: str = "min"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask [N], labels [N])`` from the labelling heads' softmaxes ``probs [H, N, C]``: an
    image is labelled when every head predicts the same class and their confidence in it — the
    ``min`` (or the ``mean``) of the heads' top probabilities — is at least ``sigma``."""
    top, pred = probs.max(dim=2)  # [H, N]
    label = pred[0]
    agree = (pred == label).all(dim=0)
    conf = top.min(dim=0).values if confidence == "min" else top.mean(dim=0)
    return agree & (conf >= sigma), label


def des_keep(labels: torch.Tensor, dropout_probs: torch.Tensor, max_disagree: float
             ) -> torch.Tensor:
    """Data editing by stability (DES): ``dropout_probs [K, H, N, C]`` are the labelling heads'
    softmaxes in K passes with dropout on; a pass predicts the argmax of the heads' summed
    probabilities. An image's pseudo-label (``labels [N]``, the dropout-free prediction) is kept
    unless the passes disagree with it in ``k ≥ max_disagree · K`` of them (the paper's
    "k ≥ K/3"). Returns the keep mask ``[N]``."""
    passes = dropout_probs.sum(dim=1).argmax(dim=2)  # [K, N]
    k = (passes != labels).sum(dim=0)
    return k < max_disagree * dropout_probs.shape[0]


@RECIPES.register("tri-net", "trinet")
class TriNet(SemiRecipe):
    """Tri-net. Arguments (``recipe.args``; σ values are softmax probabilities):
    ``init_epochs`` (training on the smeared labels), ``rounds``, ``round_epochs`` (epochs over
    L ∪ PL_v per head and round), ``finetune_epochs``, ``smear_std``, ``sigma0`` (0.95),
    ``sigma_os`` (0.25), ``sigma_decay`` (0.05), ``pool_base`` (1000), ``finetune_every`` (4),
    ``des_passes`` (K, 9), ``des_max_disagree`` (1/3), ``confidence`` (``min`` | ``mean`` of
    the two labelling heads), ``unlabelled_limit`` (use a seeded subset of the pool, for quick
    runs), and the ablation switches ``smearing``, ``des``, ``finetune``; plus the engine's
    (``heads`` = 3, ``hidden``, ``dropout``, ``batch_size``, ``quantization_weight``)."""

    recipe_name = "tri-net"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *,
                 init_epochs: int = 50, rounds: int = 8, round_epochs: int = 1,
                 finetune_epochs: int = 10, smear_std: float = 0.05, sigma0: float = 0.95,
                 sigma_os: float = 0.25, sigma_decay: float = 0.05, pool_base: int = 1000,
                 finetune_every: int = 4, des_passes: int = 9, des_max_disagree: float = 1 / 3,
                 confidence: str = "min", unlabelled_limit: int | None = None,
                 smearing: bool = True, des: bool = True, finetune: bool = True,
                 heads: int = 3, **kwargs: Any) -> None:
        super().__init__(config, run_dir, heads=heads, **kwargs)
        try:
            self.init_epochs = check_int(init_epochs, "recipe.args.init_epochs")
            self.rounds = check_int(rounds, "recipe.args.rounds", minimum=0)
            self.round_epochs = check_int(round_epochs, "recipe.args.round_epochs")
            self.finetune_epochs = check_int(finetune_epochs, "recipe.args.finetune_epochs")
            self.pool_base = check_int(pool_base, "recipe.args.pool_base")
            self.finetune_every = check_int(finetune_every, "recipe.args.finetune_every")
            self.des_passes = check_int(des_passes, "recipe.args.des_passes")
            if unlabelled_limit is not None:
                check_int(unlabelled_limit, "recipe.args.unlabelled_limit")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.check_heads(heads)
        for name, value in (("sigma0", sigma0), ("sigma_os", sigma_os),
                            ("sigma_decay", sigma_decay), ("des_max_disagree", des_max_disagree)):
            if not 0 <= value <= 1:
                raise ConfigError(f"recipe.args.{name} must be in [0, 1], got {value}")
        if smear_std < 0:
            raise ConfigError(f"recipe.args.smear_std must be >= 0, got {smear_std}")
        if confidence not in ("min", "mean"):
            raise ConfigError(f"recipe.args.confidence must be 'min' or 'mean', got "
                              f"{confidence!r}")
        self.smear_std, self.sigma_os, self.sigma_decay = smear_std, sigma_os, sigma_decay
        self.des_max_disagree, self.confidence = des_max_disagree, confidence
        self.smearing, self.des, self.finetune = bool(smearing), bool(des), bool(finetune)
        if unlabelled_limit is not None and unlabelled_limit < len(self.unlabelled):
            keep = np.random.default_rng(config.data.semi.seed).permutation(
                len(self.unlabelled))[:unlabelled_limit]
            self.unlabelled = self.unlabelled.subset(np.sort(keep))
        self.sigma = float(sigma0)
        self.after_smearing = self.smearing  # the init stage trains on smeared labels

    def check_heads(self, heads: int) -> None:
        if heads < 2:
            raise ConfigError("recipe.args.heads: tri-net needs at least 2 heads (3 in the "
                              "paper): each head is taught by the others")

    # ------------------------------------------------------------ state
    def extra_state(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "after_smearing": self.after_smearing}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.sigma = float(state["sigma"])
        self.after_smearing = bool(state["after_smearing"])

    def stage_names(self) -> list[str]:
        return ["init", *(f"round-{t}" for t in range(1, self.rounds + 1))]

    # ------------------------------------------------------------ stages
    def labelled_targets(self, gen: torch.Generator, smear: bool) -> torch.Tensor:
        """``[heads, N_L, C]``: each head's own smeared labels, or the one-hot labels."""
        labels = torch.as_tensor(np.asarray(self.labelled.labels))
        if not smear:
            target = one_hot(labels, self.num_classes)
            return target.expand(len(self.heads), *target.shape)
        return torch.stack([smear_labels(labels, self.num_classes, self.smear_std, gen)
                            for _ in range(len(self.heads))])

    def run_stage(self, name: str, gen: torch.Generator) -> dict[str, Any]:
        heads = range(len(self.heads))
        if name == "init":
            loss = self.fit_heads(self.labelled, self.labelled_targets(gen, self.smearing),
                                  heads, gen, self.init_epochs, desc="init")
            return {"loss": loss, "smeared": self.smearing}
        t = int(name.split("-")[1])
        n_pool = min(self.pool_base * 2 ** t, len(self.unlabelled))
        if self.finetune and n_pool == len(self.unlabelled) and t % self.finetune_every == 0:
            loss = self.fit_heads(self.labelled, self.labelled_targets(gen, self.smearing),
                                  heads, gen, self.finetune_epochs, desc=f"{name} fine-tune")
            self.sigma = max(self.sigma - self.sigma_decay, 0.0)
            self.after_smearing = self.smearing
            return {"fine_tune": True, "loss": loss, "sigma": self.sigma}
        sigma_t = self.sigma - self.sigma_os if self.after_smearing else self.sigma
        self.after_smearing = False
        pool = torch.randperm(len(self.unlabelled), generator=gen)[:n_pool].sort().values
        codes = self.codes_of(self.unlabelled, pool)
        probs = self.head_probabilities(codes)
        dropout_probs = None
        if self.des:
            dropout_probs = torch.stack([self.head_probabilities(codes, dropout=True)
                                         for _ in range(self.des_passes)])
        truth = torch.as_tensor(np.asarray(self.unlabelled.labels))[pool]
        chosen, per_head = [], []
        for v in heads:
            others = self.labellers(v)
            mask, labels = self.pseudo_labels(v, probs[others], sigma_t)
            before = int(mask.sum())
            acc_before = _accuracy(labels[mask], truth[mask])
            if dropout_probs is not None:
                mask = mask & des_keep(labels, dropout_probs[:, others], self.des_max_disagree)
            chosen.append((pool[mask], labels[mask]))
            per_head.append({"head": v + 1, "pseudo_labels": before,
                             "accuracy": acc_before, "after_des": int(mask.sum()),
                             "accuracy_after_des": _accuracy(labels[mask], truth[mask])})
        losses = [self.fit_pseudo(v, idx, labels, gen, name) for v, (idx, labels)
                  in zip(heads, chosen, strict=True)]
        kept = sum(h["after_des"] for h in per_head)
        correct = sum(h["after_des"] * (h["accuracy_after_des"] or 0.0) for h in per_head)
        return {"pool": n_pool, "sigma_t": round(sigma_t, 6),
                "pseudo_labels": kept / len(per_head),
                "pseudo_accuracy": correct / kept if kept else None,
                "loss": float(np.mean(losses)), "heads": per_head}

    def labellers(self, v: int) -> list[int]:
        """The heads that label head ``v``'s pool: all the others."""
        return [h for h in range(len(self.heads)) if h != v]

    def pseudo_labels(self, v: int, probs: torch.Tensor, sigma: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        return agreeing_labels(probs, sigma, self.confidence)

    def fit_pseudo(self, v: int, pool: torch.Tensor, labels: torch.Tensor,
                   gen: torch.Generator, name: str) -> float:
        """Train head ``v`` and the trunk on the labelled images and its pseudo-labelled ones."""
        from hashlab.data.arrays import ArrayDataset

        u = self.unlabelled
        idx = pool.numpy()
        data = ArrayDataset(np.concatenate([self.labelled.images, u.images[idx]]),
                            np.concatenate([np.asarray(self.labelled.labels), labels.numpy()]),
                            None, u.mean, u.std)
        targets = one_hot(data.labels, self.num_classes)[None]
        return self.fit_heads(data, targets, [v], gen, self.round_epochs,
                              desc=f"{name} head {v + 1}")


def _accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float | None:
    return float((pred == truth).double().mean()) if len(pred) else None

