"""Unsupervised deep hashing from k-means self-labels: the idea of Fine-Grained Segmentation
Networks (FGSN; Larsson, Stenborg, Toft, Hammarstrand, Sattler and Kahl, ICCV 2019), itself
built on DeepCluster (Caron et al., ECCV 2018), turned into label-free image hashing.

No label of the training images is used. The recipe alternates, for ``rounds`` rounds, two
checkpointed stages:

* ``cluster-r`` — encode the un-augmented training images with the current trunk (the
  backbone's features, or the codes), L2-normalise them and cluster them into ``clusters``
  ids with FAISS k-means (:func:`kmeans_labels`; a cluster left empty takes half of the largest
  one, so every id labels at least one image); then re-initialise the loss (its classifier, if
  it has one) and drop its optimiser state, as DeepCluster does, since the new ids have nothing
  to do with the previous round's;
* ``train-r`` — ``epochs_per_round`` epochs of the config's loss with the cluster ids as
  classes, on a view augmented by ``data.augment``, plus a **correspondence** term on a second,
  stronger view of the same image (``consistency_weight``): the same loss with the same cluster
  id (FGSN's correspondence cross-entropy, with "the same point under another season" replaced
  by "the same image under another augmentation"), or the squared difference of the two views'
  codes.

Each round logs the cluster sizes, how many clusters were re-filled, the NMI / ARI of the ids
against the hidden true labels when the dataset has them (logging only), the NMI against the
previous round's ids and the training loss. ``RUN/model.pt`` is an ordinary finished run (the
config's loss trained on the last round's ids: ``num_classes`` = ``clusters``) that
``hashlab encode``, ``eval`` and ``index`` accept; ``RUN/recipe.json`` holds the logs and the
mAP@all of the codes under ``eval.protocol`` (the true labels are used for scoring only).
``docs/recipes.md#k-means-self-labels-unsupervised-hashing``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from hashlab.errors import ConfigError
from hashlab.train.recipes.registry import RECIPES
from hashlab.train.recipes.staged import SUMMARY_FILE, StagedRecipe
from hashlab.validation import check_int

__all__ = ["SUMMARY_FILE", "FEATURES", "CONSISTENCY", "KMeansLabels", "KMeansResult",
           "fill_empty_clusters", "kmeans_labels"]

#: what the clustering stage clusters: the backbone's feature vector or the model's codes
FEATURES = ("backbone", "codes")
#: the correspondence term between the two views of an image
CONSISTENCY = ("cluster", "agreement")


class KMeansResult(NamedTuple):
    """``labels [N]`` (int64, every id in ``0..k-1`` used), ``centroids [k, d]`` (float32, in
    the space that was clustered: L2-normalised, PCA-whitened first when asked) and how many
    clusters were ``reassigned`` (found empty and re-filled)."""

    labels: torch.Tensor
    centroids: torch.Tensor
    reassigned: int


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fill_empty_clusters(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """Re-fill every empty cluster of an assignment, so that each of the ``k`` ids labels at
    least one point (needs ``len(x) >= k``).

    The rule (bisecting k-means): the empty ids are taken in increasing order; each takes half
    of the cluster that is the largest at that moment (the lowest id among equally large ones).
    That cluster's members are projected onto their principal direction (the top right singular
    vector of the centred members, its sign fixed so that its largest-magnitude component is
    positive) and ordered by projection, ties in image order (a stable sort); the upper
    ``⌊m / 2⌋`` of its ``m`` members move to the empty id, and both centroids become the means
    of their halves. DeepCluster (and FAISS inside its iterations) instead copies a large
    cluster's centroid with a small symmetric perturbation and lets the points choose between
    the two copies; the median split has the same effect (the cluster is cut in two across
    its centroid) but cannot leave a side empty, e.g. for identical points.

    Returns ``(labels, centroids, reassigned)``: new arrays, and the number of ids re-filled."""
    labels = np.array(labels, dtype=np.int64, copy=True)
    centroids = np.array(centroids, dtype=np.float32, copy=True)
    k = len(centroids)
    if len(x) < k:
        raise ValueError(f"cannot give {k} clusters a point each with {len(x)} points")
    sizes = np.bincount(labels, minlength=k)
    reassigned = 0
    for empty in np.flatnonzero(sizes == 0):
        big = int(np.argmax(sizes))  # the first of the largest
        members = np.flatnonzero(labels == big)
        pts = x[members].astype(np.float64)
        centred = pts - pts.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        direction = vt[0]
        if direction[np.argmax(np.abs(direction))] < 0:
            direction = -direction
        proj = centred @ direction
        proj[np.abs(proj) < 1e-9 * max(1.0, float(np.abs(proj).max(initial=0.0)))] = 0.0
        order = np.argsort(proj, kind="stable")
        moved = members[order[len(members) - len(members) // 2:]]
        labels[moved] = empty
        sizes[big] -= len(moved)
        sizes[empty] = len(moved)
        centroids[big] = x[labels == big].mean(axis=0)
        centroids[empty] = x[moved].mean(axis=0)
        reassigned += 1
    return labels, centroids, reassigned


def kmeans_labels(features: torch.Tensor | np.ndarray, k: int, seed: int = 0,
                  iterations: int = 20, pca_dim: int | None = None) -> KMeansResult:
    """Cluster ``features [N, d]`` into ``k`` ids with every id used.

    The rows are L2-normalised (after an optional PCA-whitening to ``pca_dim`` dimensions,
    FAISS ``PCAMatrix`` with eigen-power −0.5, as FGSN and DeepCluster do), then clustered with
    ``faiss.Kmeans(d, k, niter=iterations, seed=seed mod (2³¹ − 1))`` on every point (no
    subsampling, no minimum cluster size). Each point takes its nearest centroid (squared L2);
    a cluster left empty by that assignment is re-filled by :func:`fill_empty_clusters`. When
    nothing was re-filled (``reassigned`` = 0) every label is its point's nearest centroid;
    a re-fill moves half of a cluster and the two centroids, and re-assigns no other point."""
    import faiss

    x = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) \
        else np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"features must be a non-empty [N, d] array, got shape {x.shape}")
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means of {len(x)} points into {k} clusters: k must be in "
                         f"1..{len(x)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if pca_dim is not None:
        if not 1 <= pca_dim <= x.shape[1]:
            raise ValueError(f"pca_dim must be in 1..{x.shape[1]}, got {pca_dim}")
        pca = faiss.PCAMatrix(x.shape[1], pca_dim, -0.5)
        pca.train(x)
        x = pca.apply(x)
    x = np.ascontiguousarray(_l2_normalise(x), dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed % (2**31 - 1), verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=len(x))
    km.train(x)
    _, assign = km.index.search(x, 1)
    labels, centroids, reassigned = fill_empty_clusters(x, assign[:, 0], km.centroids)
    return KMeansResult(torch.from_numpy(labels), torch.from_numpy(centroids), reassigned)


def _nmi_ari(truth: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return (float(normalized_mutual_info_score(truth, labels)),
            float(adjusted_rand_score(truth, labels)))


@RECIPES.register("kmeans-labels")
class KMeansLabels(StagedRecipe):
    """Unsupervised hashing from k-means self-labels (FGSN / DeepCluster): rounds of clustering
    the trunk's features into ``clusters`` ids and training the config's loss on those ids, with
    a correspondence term between two augmented views of each image; no label is used.

    Arguments (``recipe.args``): ``rounds``; ``epochs_per_round``; ``clusters`` (k; more than
    the expected number of classes, "over-clustering", works best); ``features`` (``backbone``:
    the backbone's feature vector before the code head, or ``codes``); ``kmeans_iterations``;
    ``pca_dim`` (PCA-whiten the features to this many dimensions before clustering; null: off);
    ``reinit_loss`` (re-initialise the loss after each clustering); ``consistency``
    (``cluster``: the loss on the strong view with the image's cluster id, FGSN's
    correspondence term; ``agreement``: ``mean((codes₁ − codes₂)²)``); ``consistency_weight``
    (0: no second view); ``strong_shift``, ``strong_rotation``, ``strong_brightness``,
    ``strong_contrast``, ``strong_cutout``, ``strong_hflip`` (the strong view,
    :func:`hashlab.train.recipes.featmatch.strong_augment`); ``batch_size`` (default
    ``train.batch_size``); ``evaluate`` (score the codes under ``eval.protocol`` at the end)."""

    recipe_name = "kmeans-labels"

    def __init__(self, config: Any, run_dir: str | Path | None = None, *, progress: bool = True,
                 callbacks: Sequence[Any] = (), rounds: int = 3, epochs_per_round: int = 2,
                 clusters: int = 100, features: str = "backbone", kmeans_iterations: int = 20,
                 pca_dim: int | None = None, reinit_loss: bool = True,
                 consistency: str = "cluster", consistency_weight: float = 1.0,
                 strong_shift: float = 0.1, strong_rotation: float = 10.0,
                 strong_brightness: float = 0.2, strong_contrast: float = 0.2,
                 strong_cutout: float = 0.25, strong_hflip: bool = False,
                 batch_size: int | None = None, evaluate: bool = True) -> None:
        super().__init__(config, run_dir, progress=progress, callbacks=callbacks)
        from hashlab.data.learned_augment import build_batch_augment
        from hashlab.data.registry import load_dataset
        from hashlab.train.engine import (
            _split_validation,
            _subset,
            build_loss,
            build_model_for,
            build_optimizer,
            select_classes,
        )

        try:
            self.rounds = check_int(rounds, "recipe.args.rounds")
            self.epochs_per_round = check_int(epochs_per_round, "recipe.args.epochs_per_round")
            self.clusters = check_int(clusters, "recipe.args.clusters", minimum=2)
            self.kmeans_iterations = check_int(kmeans_iterations,
                                               "recipe.args.kmeans_iterations")
            self.pca_dim = None if pca_dim is None else check_int(pca_dim,
                                                                  "recipe.args.pca_dim")
            self.batch_size = check_int(batch_size or config.train.batch_size,
                                        "recipe.args.batch_size", minimum=2)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if features not in FEATURES:
            raise ConfigError(f"recipe.args.features must be one of {', '.join(FEATURES)}, "
                              f"got {features!r}")
        if consistency not in CONSISTENCY:
            raise ConfigError(f"recipe.args.consistency must be one of "
                              f"{', '.join(CONSISTENCY)}, got {consistency!r}")
        for name, value in (("reinit_loss", reinit_loss), ("strong_hflip", strong_hflip),
                            ("evaluate", evaluate)):
            if not isinstance(value, bool):
                raise ConfigError(f"recipe.args.{name} must be true or false, got {value!r}")
        self.strong = {"shift": strong_shift, "rotation": strong_rotation,
                       "brightness": strong_brightness, "contrast": strong_contrast,
                       "cutout": strong_cutout}
        limits = {"shift": 1.0, "rotation": 180.0, "brightness": None, "contrast": 1.0,
                  "cutout": 1.0}
        for name, value in [("consistency_weight", consistency_weight),
                            *((f"strong_{k}", v) for k, v in self.strong.items())]:
            high = limits.get(name.removeprefix("strong_")) if name.startswith("strong_") \
                else None
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not np.isfinite(value) or value < 0 or (high is not None and value > high):
                bound = f"in [0, {high:g}]" if high is not None else ">= 0"
                raise ConfigError(f"recipe.args.{name} must be a number {bound}, got {value!r}")
        self.strong = {k: float(v) for k, v in self.strong.items()}
        self.features, self.consistency = features, consistency
        self.consistency_weight = float(consistency_weight)
        self.reinit_loss, self.strong_hflip, self.evaluate = reinit_loss, strong_hflip, evaluate

        c, d = config, config.data
        for key, value in (("data.semi", d.semi), ("data.attributes", d.attributes)):
            if value is not None:
                raise ConfigError(f"recipe {self.recipe_name} trains without labels: {key} is "
                                  "not used; remove it")
        if c.train.validation.keep == "best":
            raise ConfigError(f"train.validation.keep: 'best' is not supported by recipe "
                              f"{self.recipe_name} (its model is the last round's); use 'last'")
        dataset = load_dataset(d.dataset, "train", root=d.root, download=d.download,
                               **({"image_size": d.image_size} if d.image_size else {}))
        if d.classes is not None:
            dataset = select_classes(dataset, d.classes)
        if c.train.limit_train_samples:
            dataset = _subset(dataset, c.train.limit_train_samples, c.seed)
        self.validation: Any = None
        if c.train.validation.fraction > 0:  # held out for model selection; scored, not trained
            dataset, self.validation = _split_validation(dataset, c.train.validation)
        self.dataset = dataset
        n = len(dataset)
        if n < self.clusters:
            raise ConfigError(f"recipe.args.clusters: {self.clusters} clusters but only {n} "
                              "training images; use fewer clusters")
        if self.pca_dim is not None and self.pca_dim > n:
            raise ConfigError(f"recipe.args.pca_dim: {self.pca_dim} dimensions from {n} "
                              "training images; use at most as many as images")
        # the true labels, for the logs and the final score only (None: a folder of one class)
        truth = np.asarray(dataset.labels)
        self.truth = truth if len(np.unique(truth)) >= 2 else None
        sampler = c.train.sampler
        if sampler.name == "pk":  # P cluster ids × K images each, drawn from the cluster ids
            self.batch_size = sampler.p * sampler.k
            if sampler.p > self.clusters:
                raise ConfigError(f"train.sampler.p: {sampler.p} clusters per batch, but "
                                  f"recipe.args.clusters is {self.clusters}")
        if n < self.batch_size:
            raise ConfigError(f"recipe.args.batch_size: {self.batch_size} is larger than the "
                              f"training set ({n} images)")
        if evaluate and self.truth is not None:
            self._check_protocol()
        self.image_shape = [int(v) for v in dataset.image_shape]
        self.model = build_model_for(c, self.image_shape[0]).to(self.device)
        self.loss_fn = build_loss(c, num_classes=self.clusters).to(self.device)
        self._check_hooks()
        if self.pca_dim is not None and self.pca_dim > self.feature_dim:
            raise ConfigError(f"recipe.args.pca_dim: {self.pca_dim} is more than the "
                              f"{self.feature_dim} dimensions of the {features} features")
        self.optimizer = build_optimizer(c, [*self.model.parameters(),
                                             *self.loss_fn.parameters()])
        self.augment = build_batch_augment(d.augment)  # flips, shifts, affine, elastic
        self.channels_last = self.device.type == "cpu"  # faster convolutions on a CPU
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.labels: torch.Tensor | None = None  # the current round's cluster id per image
        self.centroids: torch.Tensor | None = None
        self._last_kind = ""

    # ------------------------------------------------------------ checks
    def _check_protocol(self) -> None:
        from hashlab.eval.common import FASHION_MNIST, is_dataset
        from hashlab.eval.registry import PROTOCOLS

        name = PROTOCOLS.canonical(self.config.eval.protocol)
        if name == "fmnist-retrieval" and not is_dataset(self.config.data.dataset,
                                                         FASHION_MNIST):
            raise ConfigError(f"eval.protocol: fmnist-retrieval scores Fashion-MNIST runs; this "
                              f"run trains on {self.config.data.dataset!r}: set eval.protocol: "
                              "retrieval, or recipe.args.evaluate: false")

    def _check_hooks(self) -> None:
        """The recipe calls ``loss(codes, cluster ids)`` and ``model(images)``: a loss or head
        that needs the trainer's other hooks (batch indices, training-data facts, end of
        epoch, labels in the forward pass) is refused."""
        for part, what in ((self.loss_fn, f"loss {self.config.loss.name!r}"),
                           (self.model.head, f"model.head {self.config.model.head!r}")):
            hooks = [h for h in ("takes_indices", "takes_labels") if getattr(part, h, False)]
            hooks += [h for h in ("on_train_data", "on_epoch_end") if callable(getattr(part, h,
                                                                                       None))]
            if hooks:
                raise ConfigError(f"{what} uses the trainer's {', '.join(hooks)}; recipe "
                                  f"{self.recipe_name} trains losses called as loss(codes, "
                                  "cluster ids) on plain heads (hashlab list losses)")

    @property
    def feature_dim(self) -> int:
        return int(self.model.dim if self.features == "codes" else
                   self.model.backbone.feature_dim)

    # ------------------------------------------------------------ state
    def trainables(self) -> dict[str, Any]:
        return {"model": self.model, "loss": self.loss_fn, "optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {"labels": self.labels, "centroids": self.centroids}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.labels, self.centroids = state["labels"], state["centroids"]
        if self.labels is not None and len(self.labels) != len(self.dataset):
            raise ValueError(f"the checkpoint's cluster ids are for {len(self.labels)} images, "
                             f"the training set has {len(self.dataset)}")

    def stage_names(self) -> list[str]:
        return [f"{kind}-{r}" for r in range(1, self.rounds + 1) for kind in ("cluster", "train")]

    def stage_metrics(self) -> dict[str, Any]:
        """After a training stage with ``train.validation``: the held-out part's mAP@all."""
        if self._last_kind != "train" or self.validation is None:
            return {}
        from hashlab.train.heldout import validation_map

        return {"val_mAP": validation_map(self.model, self.validation, self.device,
                                          self.config.eval.batch_size)}

    # ------------------------------------------------------------ stages
    def run_stage(self, name: str, gen: torch.Generator) -> dict[str, Any]:
        kind, r = name.split("-")
        self._last_kind = kind
        return self.cluster(gen) if kind == "cluster" else self.train_round(int(r), gen)

    @torch.no_grad()
    def encode_features(self) -> torch.Tensor:
        """Eval-mode features of the un-augmented training images ``[N, d]`` on the CPU."""
        self.model.eval()
        out = []
        idx = torch.arange(len(self.dataset))
        for chunk in tqdm(idx.split(self.config.eval.batch_size), desc="features",
                          leave=False, disable=not self.progress, unit="batch"):
            images, _ = self.dataset.get_batch(chunk)
            x = self.to_device(images)
            f = self.model(x) if self.features == "codes" else self.model.backbone(x)
            out.append(f.flatten(1).float().cpu())
        return torch.cat(out)

    def cluster(self, gen: torch.Generator) -> dict[str, Any]:
        from hashlab.train.engine import build_loss

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        result = kmeans_labels(self.encode_features(), self.clusters, seed,
                               self.kmeans_iterations, self.pca_dim)
        previous, self.labels, self.centroids = self.labels, result.labels, result.centroids
        if self.reinit_loss:  # fresh classifier for the new ids (DeepCluster); no momentum
            fresh = build_loss(self.config, num_classes=self.clusters)
            self.loss_fn.load_state_dict(fresh.state_dict())
            for p in self.loss_fn.parameters():
                self.optimizer.state.pop(p, None)
        sizes = torch.bincount(self.labels, minlength=self.clusters)
        log: dict[str, Any] = {"clusters_min": int(sizes.min()), "clusters_max": int(sizes.max()),
                               "reassigned": result.reassigned, "nmi": None, "ari": None,
                               "nmi_previous": None}
        ids = self.labels.numpy()
        if self.truth is not None:
            log["nmi"], log["ari"] = _nmi_ari(self.truth, ids)
        if previous is not None:
            log["nmi_previous"] = _nmi_ari(previous.numpy(), ids)[0]
        return log

    def batches(self, gen: torch.Generator) -> Iterator[torch.Tensor]:
        """One epoch of index batches: shuffled (the last partial batch kept when it holds at
        least two images), or P×K batches over the cluster ids with ``train.sampler: pk``."""
        assert self.labels is not None
        cfg = self.config.train
        limit = cfg.max_batches_per_epoch
        if cfg.sampler.name == "pk":
            from hashlab.data.sampler import pk_batches

            count = max(1, len(self.dataset) // self.batch_size)
            yield from pk_batches(self.labels.numpy(), cfg.sampler.p, cfg.sampler.k, gen,
                                  num_batches=min(count, limit) if limit else count)
            return
        order = torch.randperm(len(self.dataset), generator=gen)
        batches = [b for b in order.split(self.batch_size) if len(b) >= 2]
        yield from batches[:limit] if limit else batches

    def views(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The ``data.augment`` view of the images at ``idx``, then (with a consistency weight)
        their strong view, stacked ``[2B or B, C, H, W]``; the dataset's labels are not read."""
        from hashlab.train.recipes.featmatch import strong_augment

        images, _ = self.dataset.get_batch(idx)
        first = self.augment(images, gen) if self.augment.active else images
        if self.consistency_weight == 0:
            return self.to_device(first)
        second = strong_augment(images, gen, hflip=self.strong_hflip, **self.strong)
        return self.to_device(torch.cat([first, second]))

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last \
            else images

    def train_round(self, r: int, gen: torch.Generator) -> dict[str, Any]:
        assert self.labels is not None
        self.model.train()
        self.loss_fn.train()
        has_logits = callable(getattr(self.loss_fn, "logits", None))
        totals = {"loss": 0.0, "cluster_loss": 0.0, "consistency": 0.0}
        count, correct, seen = 0, 0, 0
        for epoch in range(self.epochs_per_round):
            bar = tqdm(self.batches(gen), desc=f"round {r} epoch {epoch + 1}", leave=False,
                       disable=not self.progress, unit="batch", dynamic_ncols=True)
            for idx in bar:
                y = self.labels[idx].to(self.device)
                codes = self.model(self.views(idx, gen))
                first, second = codes[:len(idx)], codes[len(idx):]
                main = self.loss_fn(first, y)
                extra = main.new_zeros(())
                if self.consistency_weight:
                    extra = (self.loss_fn(second, y) if self.consistency == "cluster"
                             else (first - second).pow(2).mean())
                aux = getattr(self.model.head, "aux_loss", None)
                loss = main + self.consistency_weight * extra + (aux if aux is not None else 0)
                self.step(loss)
                totals["loss"] += loss.item()
                totals["cluster_loss"] += main.item()
                totals["consistency"] += extra.item()
                count += 1
                if has_logits:
                    with torch.no_grad():
                        correct += int((self.loss_fn.logits(first).argmax(1) == y).sum())
                    seen += len(idx)
                bar.set_postfix(loss=f"{totals['loss'] / count:.4f}")
            bar.close()
        log: dict[str, Any] = {k: v / max(count, 1) for k, v in totals.items()}
        log["cluster_accuracy"] = correct / seen if seen else None
        return log

    # ------------------------------------------------------------ outputs
    def save_final(self) -> Path:
        from hashlab.io import atomic_torch_save
        from hashlab.train.engine import FINAL_MODEL

        return atomic_torch_save(self.run_dir / FINAL_MODEL, {
            "model": self.model.state_dict(), "loss": self.loss_fn.state_dict(),
            "config": self.config.to_dict(), "epochs": self.rounds * self.epochs_per_round,
            # the loss's classes are the last round's cluster ids, which have no names
            "dataset": {"num_classes": self.clusters, "image_shape": self.image_shape,
                        "classes": []},
            "recipe": {"name": self.recipe_name, "cluster_ids": self.labels},
        })

    def summarise(self) -> dict[str, Any]:
        from hashlab.encode import TrainedRun
        from hashlab.eval.protocols import evaluate_run

        summary: dict[str, Any] = {
            "recipe": self.recipe_name, "clusters": self.clusters, "rounds": self.rounds,
            "features": self.features, "consistency": self.consistency,
            "consistency_weight": self.consistency_weight, "train_images": len(self.dataset),
            "protocol": None, "kind": None, "mAP@all": None, "steps": self.steps,
            "stages": self.logs}
        if not self.evaluate:
            summary["not_evaluated"] = "recipe.args.evaluate is false"
        elif self.truth is None:
            summary["not_evaluated"] = "the training images have no classes to score against"
        else:
            run = TrainedRun(self.run_dir)
            metrics = evaluate_run(run, self.config.eval.protocol, progress=False)["metrics"]
            kind = "binary" if metrics.get("binary") else "float"
            summary.update(protocol=self.config.eval.protocol, kind=kind,
                           **{"mAP@all": float(metrics[kind]["mAP@all"])})
        return summary

    @staticmethod
    def summary_table(summary: dict[str, Any]) -> str:
        """The summary as the text table ``hashlab train`` prints: a row per stage (cluster
        sizes, re-filled clusters, NMI / ARI against the hidden labels; training loss), then
        the mAP."""
        lines = ["stage       min size  max size  re-filled     NMI     ARI    loss  steps"]
        for log in summary["stages"]:
            lines.append(
                f"{log['stage']:<10}  {_fmt(log.get('clusters_min'), '8.0f')}  "
                f"{_fmt(log.get('clusters_max'), '8.0f')}  {_fmt(log.get('reassigned'), '9.0f')}"
                f"  {_fmt(log.get('nmi'), '6.4f')}  {_fmt(log.get('ari'), '6.4f')}  "
                f"{_fmt(log.get('loss'), '6.4f')}  {log['steps']:>5}")
        if summary["mAP@all"] is None:
            lines.append(f"{summary['recipe']}: not evaluated ({summary['not_evaluated']})")
        else:
            lines.append(f"{summary['recipe']}: {summary['protocol']} {summary['kind']} "
                         f"mAP@all {summary['mAP@all']:.4f}")
        return "\n".join(lines)


def _fmt(value: Any, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if isinstance(value, int | float) else "–".rjust(width)
