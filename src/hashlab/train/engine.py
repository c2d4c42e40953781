"""The training loop: seeded, checkpointed every epoch, resumable, with a progress bar.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoint.pt`` (everything needed
to resume: weights, optimiser, scheduler, RNG state, history), ``model.pt`` (the final model for
encoding), ``metrics.json`` (per-epoch history) and ``curve.png`` (the training curve); with
``data.augment.learned`` also ``augmentations.png`` (originals vs the learned augmentor's output).

Launched by ``torchrun`` (``hashlab train --nproc N``), the same loop trains with PyTorch's
DistributedDataParallel: every rank draws the same seeded global batches and trains on its
contiguous part of each, gradients are averaged across ranks (the model's and, through a second
DDP wrapper, the loss's class weights), a loss marked ``sharded`` keeps rank-local parameters,
``train.distributed.gather`` shows the loss the whole global batch, and only rank 0 writes files
and shows progress. The checkpoint is the same file whatever the number of processes
(``docs/scale.md#distributed-training``).
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hashlab import distributed as dist
from hashlab.artifacts import check_checkpoint_state, load_torch_file
from hashlab.config import RunConfig, from_dict
from hashlab.data.facts import TrainData
from hashlab.data.learned_augment import LearnedAugmentTraining, build_batch_augment
from hashlab.data.registry import load_dataset
from hashlab.errors import CheckpointError, ConfigError, DivergedError, HashlabError, summary
from hashlab.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    is_temp_file,
    remove_stale_temp_files,
)
from hashlab.losses.registry import LOSSES
from hashlab.models.model import CodeModel, build_model
from hashlab.models.registry import BACKBONES
from hashlab.registry import check_kwargs

CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.png"
BEST_MODEL = "best_model.pt"  # train.validation.keep: best — the best epoch's weights
AUGMENTATIONS_FIGURE = "augmentations.png"  # data.augment.learned: originals vs augmented
# a method's constructor rejecting a value of its args raises one of these
_BUILD_ERRORS = (ValueError, TypeError, RuntimeError, AssertionError)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {name!r} requested but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float | None
    lr: float
    seconds: float
    images_per_second: float
    val_mAP: float | None = None  # with train.validation: binary mAP@all on the held-out part


Callback = Callable[["Trainer", int, int], None]
#: a recipe's training loss: (trainer, augmented images, codes, labels) -> scalar
Objective = Callable[["Trainer", torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def build_loss(config: RunConfig, data: TrainData | None = None, *,
               num_classes: int | None = None) -> nn.Module:
    """The configured loss for training data ``data`` (or just ``num_classes``).

    A loss registered with ``needs=(fact, ...)`` (see :mod:`hashlab.data.facts`) gets
    ``data=`` as well, and the config must provide each fact (``data.<fact>``); a fact the data
    provides but the loss does not need is refused, since it would be silently ignored.
    """
    if data is None:
        if num_classes is None:
            raise TypeError("build_loss needs data or num_classes")
        data = TrainData(num_classes=num_classes, labels=np.empty(0, dtype=np.int64))
    entry = LOSSES.entry(config.loss.name, key="loss.name")
    check_kwargs(entry.obj, config.loss.args, "loss.args")
    needs = frozenset(entry.meta.get("needs", ()))
    for fact in sorted(needs - data.provides()):
        raise ConfigError(f"loss {entry.name!r} needs data.{fact} (labels the training "
                          f"images do not have yet): set data.{fact}")
    for fact in sorted(data.provides() - needs):
        raise ConfigError(f"data.{fact} is set but loss {entry.name!r} does not use {fact}; "
                          f"remove data.{fact} or choose a loss that needs it "
                          "(hashlab list losses)")
    extra: dict[str, Any] = {"data": data} if needs else {}
    try:
        return entry.obj(num_classes=data.num_classes, dim=config.model.dim, **extra,
                         **config.loss.args)
    except HashlabError:
        raise
    except _BUILD_ERRORS as exc:
        raise ConfigError(f"loss.args: {entry.name!r} refuses {config.loss.args} "
                          f"({summary(exc)})") from exc


def build_model_for(config: RunConfig, in_channels: int) -> CodeModel:
    """:func:`~hashlab.models.model.build_model`, with a constructor's error on a bad value
    turned into a ConfigError naming ``model.backbone_args``, ``model.head_args`` or
    ``model.dim``."""
    m = config.model
    try:
        return build_model(m, in_channels)
    except HashlabError:
        raise
    except _BUILD_ERRORS as exc:
        try:  # which part refused: build the backbone alone
            BACKBONES.get(m.backbone)(in_channels=in_channels, **m.backbone_args)
            key, args = ("model.head_args", m.head_args) if m.head_args else ("model.dim", m.dim)
        except _BUILD_ERRORS:
            key, args = "model.backbone_args", m.backbone_args
        raise ConfigError(f"{key}: {args} is refused ({summary(exc)})") from exc


def build_optimizer(config: RunConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    o = config.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov and o.momentum > 0)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Schedulers step once per batch, so resuming mid-schedule is exact."""
    s, total = config.scheduler, config.train.epochs * steps_per_epoch
    if s.name == "none":
        return None
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size * steps_per_epoch,
                                               gamma=s.gamma)
    if s.warmup_fraction * total <= 1:  # OneCycleLR divides by (warm-up steps - 1)
        raise ConfigError(
            f"scheduler.warmup_fraction: onecycle warms up for {s.warmup_fraction:g} × {total} "
            f"steps = {s.warmup_fraction * total:g} steps, but needs more than 1; raise "
            "scheduler.warmup_fraction, train for more steps (train.epochs, "
            "train.max_batches_per_epoch) or use scheduler.name: cosine")
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.optim.lr, total_steps=total,
                                               pct_start=s.warmup_fraction)


def prepare_run_dir(run_dir: Path, resume: bool, config: Any, *,
                    load: Callable[[Path], dict[str, Any]],
                    restore: Callable[[dict[str, Any]], Any],
                    restore_errors: tuple[type[BaseException], ...],
                    clean: bool = True) -> None:
    """Ready ``run_dir`` for a trainer: a new run must not overwrite a run there; a resumed one
    reads its checkpoint with ``load`` (which checks the file's fields), checks the saved config
    against ``config`` (:func:`check_resume_config`) and hands the state to ``restore``, whose
    ``restore_errors`` become a :class:`CheckpointError` naming the file. Then removes the
    temporary files a killed run left (``clean``; only the process that writes files: rank 0 of
    a distributed run). Shared by every trainer."""
    check_run_dir(run_dir)
    ckpt = run_dir / CHECKPOINT
    if resume:
        if not ckpt.exists():
            raise CheckpointError(f"cannot resume: no {CHECKPOINT} in {run_dir}")
        state = load(ckpt)
        check_resume_config(state.get("config"), config, run_dir)
        try:
            restore(state)
        except restore_errors as exc:
            raise CheckpointError(
                f"cannot resume from {ckpt}: the checkpoint does not match this config/model "
                f"({summary(exc)}); it was written by another version of hashlab or for "
                f"another model: train under another name (--name) or remove "
                f"{run_dir}") from exc
    elif ckpt.exists() or (run_dir / FINAL_MODEL).exists():
        raise CheckpointError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose "
            "another name (name=... or --name) / remove the directory")
    # a run killed while writing left its temporary files: they are of no use any more
    if clean:
        remove_stale_temp_files(run_dir)


class Trainer:
    """Trains ``config`` into ``run_dir``.

    ``callbacks`` are called as ``callback(trainer, epoch, step)`` after every batch (``step`` ≥ 0)
    and with ``step = -1`` after each epoch's checkpoint is written.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None, *,
                 progress: bool = True, callbacks: Sequence[Callback] = (),
                 objective: Objective | None = None) -> None:
        #: replaces ``loss_fn(codes, labels)`` in training when given (a recipe's loss, e.g.
        #: distillation from a teacher): ``objective(trainer, images, codes, labels)``
        self.objective = objective
        self.config = config
        self.run_dir = Path(run_dir) if run_dir else Path(config.output_dir) / config.name
        check_run_dir(self.run_dir)  # before any work: never write into a user's own folder
        self.callbacks = list(callbacks)
        self.device = resolve_device(config.train.device)
        if dist.env_world_size() > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank())  # one GPU per process
            torch.cuda.set_device(self.device)
        #: whether this trainer started the process group (and stops it after ``fit``)
        self._owns_group = dist.init_from_env(self.device, config.train.distributed.timeout_s)
        self.rank, self.world_size = dist.rank(), dist.world_size()
        self.progress = progress and self.rank == 0
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        if config.train.threads:
            torch.set_num_threads(config.train.threads)

        seed_everything(config.seed)
        d = config.data
        dataset = load_dataset(d.dataset, "train", root=d.root, download=d.download,
                               **({"image_size": d.image_size} if d.image_size is not None
                                  else {}))
        if d.classes is not None:
            dataset = select_classes(dataset, d.classes)
        if config.train.limit_train_samples:
            dataset = _subset(dataset, config.train.limit_train_samples, config.seed)
        if d.semi is not None:  # the low-label protocol: a plain run sees the labelled part
            from hashlab.data.semi import semi_parts

            dataset = semi_parts(dataset, d.semi.labels_per_class, d.semi.validation,
                                 d.semi.seed).labelled
        self.val_dataset: Any = None
        self.best: dict[str, Any] | None = None  # {"epoch", "val_mAP"} of the best epoch so far
        if config.train.validation.fraction > 0:
            dataset, self.val_dataset = _split_validation(dataset, config.train.validation)
        # with data.attributes the labels given to the loss are [N, 1 + p]: category, attributes
        self.targets: torch.Tensor | None = None
        self.attribute_names: list[str] | None = None
        self.partial_summary: dict[str, int] | None = None
        if d.attributes is not None:
            dataset = self._attach_attributes(dataset)
        self.dataset = dataset
        self.num_classes = int(dataset.num_classes)
        in_channels, height, width = (int(v) for v in dataset.image_shape)
        if d.augment.crop_padding > max(height, width):
            raise ConfigError(f"data.augment.crop_padding: {d.augment.crop_padding} is larger "
                              f"than the images ({height}x{width}); use at most "
                              f"{max(height, width)}")
        self.model: CodeModel = build_model_for(config, in_channels).to(self.device)
        self._check_model_runs()
        self.train_data = self._train_data()
        self.loss_fn = build_loss(config, self.train_data).to(self.device)
        for part in self._hooked():
            on_train_data = getattr(part, "on_train_data", None)
            if callable(on_train_data):  # the documented hook (hashlab.data.facts)
                on_train_data(self.train_data)
        self.augment = build_batch_augment(d.augment)
        params = [*self.model.parameters(), *self.loss_fn.parameters()]
        self.optimizer = build_optimizer(config, params)
        check_optimizer = getattr(self.loss_fn, "check_optimizer", None)
        if callable(check_optimizer):  # a loss that needs a kind of optimizer says so
            try:
                check_optimizer(self.optimizer)
            except ValueError as exc:
                raise ConfigError(f"optim: {exc}") from exc
        n = len(dataset)
        self.batch_size = config.train.batch_size
        if config.train.sampler.name == "pk":
            self.batch_size = config.train.sampler.p * config.train.sampler.k
            if config.train.sampler.p > self.num_classes:
                raise ConfigError(f"train.sampler.p: {config.train.sampler.p} classes per batch, "
                                  f"but the training set has {self.num_classes}")
        if n < self.batch_size:
            raise ConfigError(f"train.batch_size: {self.batch_size} is larger than the "
                              f"training set ({n} images)")
        self.steps_per_epoch = n // self.batch_size  # drop the last partial batch
        if config.train.max_batches_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.train.max_batches_per_epoch)
        self.scheduler = build_scheduler(config, self.optimizer, self.steps_per_epoch)
        # data.augment.learned: an augmentor trained alongside the model
        self.learned_augment: LearnedAugmentTraining | None = None
        if d.augment.learned is not None:
            self.learned_augment = LearnedAugmentTraining(
                d.augment.learned, in_channels, config.train.epochs * self.steps_per_epoch,
                self.device, seed=config.seed)
        self.diagram = None
        if config.train.triplet_diagram:
            from hashlab.diagnostics.triplet_diagram import TripletDiagram

            self.diagram = TripletDiagram(mode="hardest")
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._wrap_distributed()

    def _wrap_distributed(self) -> None:
        """With more than one process: check the batch splits evenly, wrap the model (and a loss
        with shared parameters) in DistributedDataParallel, and give each rank its own stream
        of random numbers for dropout and the like (the weights are already equal: every rank
        built them from the same seed, and DDP broadcasts rank 0's)."""
        self.train_model: nn.Module = self.model
        self.train_loss: nn.Module = self.loss_fn
        #: the loss keeps rank-local parameters (a sharded classifier): no DDP, no gathering
        self.sharded_loss = bool(getattr(self.loss_fn, "sharded", False))
        if self.world_size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        cfg = self.config.train
        if self.batch_size % self.world_size:
            key = "train.sampler.p × k" if cfg.sampler.name == "pk" else "train.batch_size"
            raise ConfigError(f"{key}: the global batch of {self.batch_size} images does not "
                              f"split evenly over {self.world_size} processes")
        if self.learned_augment is not None or self.objective is not None:
            raise ConfigError("data.augment.learned and recipes train in one process only; "
                              "launch them without torchrun / --nproc")
        opts = cfg.distributed
        cuda = self.device.type == "cuda"
        if cuda and opts.sync_batchnorm:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        ids = [self.device.index] if cuda else None
        self.train_model = DDP(self.model, device_ids=ids,
                               find_unused_parameters=opts.find_unused_parameters)
        if not self.sharded_loss and any(p.requires_grad for p in self.loss_fn.parameters()):
            self.train_loss = DDP(self.loss_fn, device_ids=ids,
                                  find_unused_parameters=opts.find_unused_parameters)
        torch.manual_seed(self.config.seed + 1_000_003 * self.rank)

    def _check_model_runs(self) -> None:
        """Encode two training images once, so that a backbone that cannot take this data's
        images (too small for its pooling, ...) is a ConfigError now, not a crash mid-run."""
        images, _ = self.dataset.get_batch(torch.arange(min(2, len(self.dataset))))
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(images.to(self.device))
        except torch.OutOfMemoryError:
            raise
        except _BUILD_ERRORS as exc:
            m = self.config.model
            raise ConfigError(
                f"model.backbone: {m.backbone!r} with {m.backbone_args or 'default args'} cannot "
                f"encode this dataset's images of shape {tuple(images.shape[1:])} "
                f"({summary(exc)}); change data.image_size, model.backbone_args or "
                "model.backbone") from exc
        finally:
            self.model.train()

    def _train_data(self) -> TrainData:
        """What the training set provides to the loss (the ``on_train_data`` hook)."""
        if self.targets is None:
            return TrainData(self.num_classes, np.asarray(self.dataset.labels, dtype=np.int64))
        targets = self.targets.numpy()
        return TrainData(self.num_classes, targets[:, 0], targets[:, 1:], self.attribute_names)

    def _attach_attributes(self, dataset: Any) -> Any:
        """Per-image attributes from ``data.attributes``, then the partial-label protocol
        (``data.partial_labels``: parts with the category or the attributes hidden)."""
        from hashlab.data.attributes import partial_labels, resolve_attributes

        d = self.config.data
        attrs, names = resolve_attributes(d.attributes, dataset)
        labels = np.asarray(dataset.labels, dtype=np.int64)
        if d.partial_labels is not None:
            pl = d.partial_labels
            part = partial_labels(labels, attrs, {"both": pl.both, "category": pl.category,
                                                  "attribute": pl.attribute},
                                  use=pl.use, seed=pl.seed)
            if len(part.keep) < 2:
                raise ConfigError("data.partial_labels: the parts used hold fewer than 2 images")
            if len(part.keep) < len(labels):
                dataset = _subset_indices(dataset, part.keep)
            labels, attrs = part.labels, part.attributes
            self.partial_summary = part.summary()
        self.attribute_names = names
        self.targets = torch.from_numpy(
            np.concatenate([labels[:, None], attrs.astype(np.int64)], axis=1))
        return dataset

    # ---------------------------------------------------------------- checkpoints
    def _loss_state(self) -> dict[str, Any]:
        """The loss's state dict; a sharded loss's whole class-weight matrix (a collective:
        every rank calls it)."""
        if self.sharded_loss:
            return self.loss_fn.gather_state_dict()  # type: ignore[operator, no-any-return]
        return self.loss_fn.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume. With several processes every rank calls it (the RNG
        states and a sharded loss's weights are gathered); rank 0 writes it."""
        rng = torch.get_rng_state()
        extra: dict[str, Any] = {}
        if self.world_size > 1:
            import torch.distributed as tdist

            states: list[Any] = [None] * self.world_size
            tdist.all_gather_object(states, rng)
            extra["torch_rng_ranks"] = states
            if self.sharded_loss:  # the optimiser state of each rank's own class weights
                optims: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
                tdist.gather_object(self.optimizer.state_dict(), optims, dst=0)
                extra["optimizer_ranks"] = optims
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "loss": self._loss_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "torch_rng": rng,
            **extra,
            "history": self.history,
            "config": self.config.to_dict(),
            "best": self.best,
            **({"augmentor": self.learned_augment.state_dict()}
               if self.learned_augment is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        optims = state.get("optimizer_ranks")
        if self.sharded_loss or optims is not None:
            if optims is None or len(optims) != self.world_size or not self.sharded_loss:
                saved = 1 if optims is None else len(optims)
                raise CheckpointError(
                    f"this checkpoint of a sharded classifier was written by {saved} "
                    f"process(es), and the optimiser state of each process's class weights is "
                    f"its own: resume it with {saved} process(es) (hashlab train --nproc "
                    f"{saved}); model.pt loads with any number")
            self.optimizer.load_state_dict(optims[self.rank])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        ranks = state.get("torch_rng_ranks")
        if ranks is not None and len(ranks) == self.world_size:
            torch.set_rng_state(ranks[self.rank])  # the same processes as before
        elif self.world_size == 1:
            torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        self.best = state.get("best")
        if self.learned_augment is not None:  # a checkpoint without one has no augmentor
            self.learned_augment.load_state_dict(state["augmentor"])

    def _prepare_run_dir(self, resume: bool) -> None:
        def load(ckpt: Path) -> dict[str, Any]:
            state = load_checkpoint(ckpt, map_location=self.device)
            check_checkpoint_state(state, ckpt)
            return state

        prepare_run_dir(self.run_dir, resume, self.config, load=load,
                        restore=self.load_state_dict,
                        restore_errors=(KeyError, IndexError, AttributeError, *_BUILD_ERRORS),
                        clean=self.rank == 0)
        dist.barrier()  # every rank has read the checkpoint before rank 0 writes anything
        if self.rank == 0:
            atomic_write_text(self.run_dir / CONFIG_FILE, self.config.to_yaml(),
                              then=self._then())

    def _then(self) -> str:
        """How to carry on after a failed write (disk full, ...): resume if there is a
        checkpoint to resume from, else start again."""
        if (self.run_dir / CHECKPOINT).exists():
            return "continue the run with --resume"
        return "run the command again"

    # ---------------------------------------------------------------- training
    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train until ``train.epochs``; returns the per-epoch history."""
        try:
            self._prepare_run_dir(resume)
            epochs = self.config.train.epochs
            try:
                while self.epoch < epochs:
                    stats = self._train_epoch(self.epoch)
                    if self.val_dataset is not None:
                        self._validate(stats)
                    self.history.append(asdict(stats))
                    self.epoch += 1
                    state = self.state_dict()  # every rank: a collective with several
                    if self.rank == 0:
                        atomic_torch_save(self.run_dir / CHECKPOINT, state, then=self._then())
                        self._write_logs()
                    for cb in self.callbacks:
                        cb(self, self.epoch - 1, -1)
            except KeyboardInterrupt:
                if self.rank == 0:
                    tqdm.write(f"interrupted; the last completed epoch ({self.epoch}) is saved "
                               f"in {self.run_dir / CHECKPOINT}; continue with --resume")
                raise
            if self.learned_augment is not None:
                self._plot_augmentations()
            self.save_final()
            dist.barrier()  # model.pt is written before any rank returns
        finally:
            if self._owns_group:
                # drop the DDP wrappers (their reducers hold the group) before the group goes:
                # left to interpreter exit, their teardown can abort the process
                self.train_model, self.train_loss = self.model, self.loss_fn
                gc.collect()
                dist.destroy()
                self._owns_group = False
        return self.history

    def _hooked(self) -> tuple[Any, ...]:
        """The parts whose training hooks the trainer calls: the loss and the model's head."""
        return (self.loss_fn, self.model.head)

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        # One generator per epoch, derived from (seed, epoch): resuming at any epoch boundary
        # replays exactly the same shuffles and augmentations.
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)

    def _epoch_batches(self, gen: torch.Generator) -> list[torch.Tensor]:
        sampler = self.config.train.sampler
        if sampler.name == "pk":
            from hashlab.data.sampler import pk_batches

            return pk_batches(np.asarray(self.dataset.labels), sampler.p, sampler.k, gen,
                              num_batches=self.steps_per_epoch)
        order = torch.randperm(len(self.dataset), generator=gen)
        return list(order[: self.steps_per_epoch * self.batch_size].split(self.batch_size))

    def _local_batches(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's contiguous part of every global batch (all of it in one process): the
        distributed sampler. Every rank draws the same global batches from the same seeded
        generator, so the parts are disjoint and together make the one-process batch."""
        if self.world_size == 1:
            return batches
        part = self.batch_size // self.world_size
        return [b[self.rank * part : (self.rank + 1) * part] for b in batches]

    def _train_epoch(self, epoch: int) -> EpochStats:
        cfg = self.config.train
        gen = self._epoch_generator(epoch)
        batches = self._local_batches(self._epoch_batches(gen))
        if self.world_size > 1:  # each rank augments its own images: its own random stream
            gen = torch.Generator().manual_seed(
                (self.config.seed * 1_000_003 + epoch) * 1_009 + self.rank)
        gather = self.world_size > 1 and self.config.train.distributed.gather \
            and not self.sharded_loss
        self.model.train()
        self.loss_fn.train()
        total_loss, correct, seen = 0.0, 0, 0
        has_logits = hasattr(self.loss_fn, "logits")
        if self.learned_augment is not None:
            self.learned_augment.start_epoch()
        # the documented hooks of hashlab.data.facts: batch indices, end of epoch
        takes_indices = bool(getattr(self.loss_fn, "takes_indices", False))
        takes_labels = self.model.takes_labels
        # a loss over very many classes predicts without the [batch, classes] logits (and, when
        # sharded, as a collective of every rank): its ``predict`` hook
        predict = getattr(self.loss_fn, "predict", None)
        if not callable(predict):
            def predict(x: torch.Tensor) -> torch.Tensor:
                return self.loss_fn.logits(x).argmax(1)
        start = time.perf_counter()
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, unit="batch", dynamic_ncols=True)
        for step in bar:
            images, labels = self.dataset.get_batch(batches[step])
            if self.targets is not None:
                labels = self.targets.index_select(0, torch.as_tensor(batches[step]))
            if self.augment.active:
                images = self.augment(images, gen)
            images, labels = images.to(self.device), labels.to(self.device)
            learned = None
            if self.learned_augment is not None:  # (originals, augmented with the graph)
                originals = images
                images, augmented = self.learned_augment.augment(
                    images, gen, epoch * self.steps_per_epoch + step)
                learned = (originals, augmented)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            net = self.train_model
            codes = net(images, labels=labels) if takes_labels else net(images)
            if self.diagram is not None:
                self.diagram.record(codes, labels)
            indices = torch.as_tensor(batches[step]).to(self.device) if takes_indices else None
            loss_codes, loss_labels = codes, labels
            if gather:  # the whole global batch, differentiable for this rank's codes
                loss_codes = dist.all_gather_with_grad(codes)
                loss_labels = dist.all_gather_nograd(labels)
                if indices is not None:
                    indices = dist.all_gather_nograd(indices)
            if self.objective is not None:
                loss = self.objective(self, images, codes, labels)
            elif indices is not None:
                loss = self.train_loss(loss_codes, loss_labels, indices=indices)
            else:
                loss = self.train_loss(loss_codes, loss_labels)
            aux = getattr(self.model.head, "aux_loss", None)
            if aux is not None:  # terms the head computed in this forward (hashlab.data.facts)
                loss = loss + aux
            if not torch.isfinite(loss):
                lr = self.config.optim.lr
                raise DivergedError(
                    f"training diverged: the loss became {loss.item()} at epoch {epoch + 1}, "
                    f"step {step} (optim.lr: {lr:g}): lower optim.lr (e.g. --set "
                    f"optim.lr={lr / 10:g}) or check the data, then train under another name "
                    f"(--name) or remove {self.run_dir}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler:
                self.scheduler.step()
            if learned is not None:
                self._learned_augment_step(*learned, labels, batches[step])
            batch = labels.shape[0]
            total_loss += loss.item() * batch
            seen += batch
            if has_logits:
                with torch.no_grad():
                    correct += int((predict(codes) == labels).sum())
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", img_s=f"{seen / elapsed:.0f}")
            for cb in self.callbacks:
                cb(self, epoch, step)
        bar.close()
        for part in self._hooked():
            on_epoch_end = getattr(part, "on_epoch_end", None)
            if callable(on_epoch_end):  # before the checkpoint, so that resuming stays exact
                on_epoch_end(epoch)
        if self.learned_augment is not None:
            entry = self.learned_augment.end_epoch(epoch)
            if self.progress:
                chosen = ", ".join(f"{k} {v:.2f}" for k, v in entry["chosen"].items())
                tqdm.write(f"epoch {epoch + 1}: augmentor l_AC {entry['control_loss']:.4f}, "
                           f"loss original {entry['loss_original']:.4f} → augmented "
                           f"{entry['loss_augmented']:.4f}, tau {entry['tau']:.3f}, {chosen}")
        if self.world_size > 1:  # the epoch's numbers over every rank's images
            totals = dist.all_reduce_sum(torch.tensor([total_loss, correct, seen],
                                                      dtype=torch.float64))
            total_loss, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        seconds = time.perf_counter() - start
        stats = EpochStats(epoch=epoch + 1, loss=total_loss / seen,
                           accuracy=correct / seen if has_logits else None,
                           lr=self.optimizer.param_groups[0]["lr"], seconds=seconds,
                           images_per_second=seen / seconds)
        if self.progress:
            acc = f", train acc {stats.accuracy:.4f}" if stats.accuracy is not None else ""
            tqdm.write(f"epoch {stats.epoch}/{cfg.epochs}: loss {stats.loss:.4f}{acc}, "
                       f"{stats.images_per_second:.0f} img/s, {seconds:.1f}s")
        return stats

    def _learned_augment_step(self, originals: torch.Tensor, augmented: torch.Tensor,
                              labels: torch.Tensor, indices: torch.Tensor) -> None:
        """Update the learned augmentor (``data.augment.learned``) on the model's losses for
        the original and the augmented batch. The model's parameters are not updated, and the
        buffers of the model and the loss (batch-norm statistics, iteration counters, per-image
        state) are restored afterwards, so this step leaves the model as it found it."""
        from hashlab.data.learned_augment import true_class_agreement

        learned_augment = self.learned_augment
        assert learned_augment is not None
        takes_labels = self.model.takes_labels
        takes_indices = bool(getattr(self.loss_fn, "takes_indices", False))

        def loss_of(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            codes = self.model(images, labels=labels) if takes_labels else self.model(images)
            if takes_indices:
                return self.loss_fn(codes, labels,
                                    indices=torch.as_tensor(indices).to(self.device)), codes
            return self.loss_fn(codes, labels), codes

        buffers = [(b, b.detach().clone()) for part in (self.model, self.loss_fn)
                   for b in part.buffers()]
        try:
            with torch.no_grad():
                loss_orig, codes = loss_of(originals)
                probs, onehot = true_class_agreement(self.loss_fn, codes, labels, loss_orig)
            loss_aug, _ = loss_of(augmented)
            learned_augment.step(loss_aug, loss_orig, probs, onehot)
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)

    def _plot_augmentations(self) -> None:
        """``augmentations.png``: the first training images and the augmentor's output."""
        from hashlab.data.learned_augment import plot_augmentations

        n = min(8, len(self.dataset))
        images, _ = self.dataset.get_batch(torch.arange(n))
        la = self.learned_augment
        assert la is not None
        plot_augmentations(la.augmentor, images, self.run_dir / AUGMENTATIONS_FIGURE,
                           generator=torch.Generator().manual_seed(self.config.seed),
                           tau=la.config.tau_min, then=self._then())

    def _validate(self, stats: EpochStats) -> None:
        """Search the held-out part; with ``keep: best`` save the weights of a new best epoch
        (``best_model.pt``, written before the epoch's checkpoint records it). With several
        processes every rank computes the same number (same weights, same held-out images), so
        they agree on the best epoch without a message; rank 0 writes."""
        from hashlab.train.heldout import validation_map

        stats.val_mAP = validation_map(self.model, self.val_dataset, self.device,
                                       self.config.eval.batch_size)
        if self.progress:
            tqdm.write(f"epoch {stats.epoch}: validation mAP@all {stats.val_mAP:.4f} "
                       f"({len(self.val_dataset)} held-out images)")
        if self.config.train.validation.keep != "best":
            return
        if self.best is None or stats.val_mAP > self.best["val_mAP"]:
            self.best = {"epoch": stats.epoch, "val_mAP": stats.val_mAP}
            loss_state = self._loss_state()
            if self.rank == 0:
                atomic_torch_save(self.run_dir / BEST_MODEL, {
                    "model": self.model.state_dict(), "loss": loss_state, **self.best},
                    then=self._then())

    # ---------------------------------------------------------------- outputs
    def save_final(self) -> Path:
        meta = {
            "num_classes": self.num_classes,
            "image_shape": list(self.dataset.image_shape),
            "classes": list(getattr(self.dataset, "classes", None) or []),
        }
        if self.attribute_names is not None:
            meta["attributes"] = self.attribute_names
            meta["partial_labels"] = self.partial_summary
        weights = {"model": self.model.state_dict(), "loss": self._loss_state()}
        if self.rank != 0:  # rank 0 writes model.pt (the others took part in the gathering)
            return self.run_dir / FINAL_MODEL
        if self.best is not None:  # train.validation.keep: best
            best = load_checkpoint(self.run_dir / BEST_MODEL, map_location=self.device)
            weights = {"model": best["model"], "loss": best["loss"],
                       "selected_epoch": self.best}
        return atomic_torch_save(self.run_dir / FINAL_MODEL, {
            **weights, "config": self.config.to_dict(), "dataset": meta, "epochs": self.epoch,
        }, then=self._then())

    def _write_logs(self) -> None:
        logs: dict[str, Any] = {"history": self.history}
        if self.diagram is not None and self.diagram.num_batches:
            logs["triplet_diagram"] = self.diagram.to_dict()
            self.diagram.plot(self.run_dir / "triplet_diagram.png",
                              title=f"triplet diagram, epochs 1–{self.epoch}")
        if self.learned_augment is not None:
            logs["learned_augment"] = self.learned_augment.log
        atomic_write_json(self.run_dir / METRICS_FILE, logs, then=self._then())
        plot_training_curve(self.history, self.run_dir / CURVE_FILE, then=self._then())


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint (tensors and plain data only; CRCs checked), turning unreadable
    files into a clear CheckpointError."""
    return load_torch_file(path, map_location=map_location, what="checkpoint")[0]


def is_run_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a hashlab run: a checkpoint, a finished model, or the
    ``config.yaml`` a run writes first (a run stopped before its first checkpoint)."""
    if (directory / CHECKPOINT).is_file() or (directory / FINAL_MODEL).is_file():
        return True
    try:
        import yaml

        saved = yaml.safe_load((directory / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    fields = RunConfig.__dataclass_fields__
    return isinstance(saved, dict) and {"name", "model", "train"} <= saved.keys() <= fields.keys()


def check_run_dir(directory: Path) -> None:
    """Refuse a run directory that is a file, or a non-empty folder that is not a hashlab run
    (training would overwrite its config.yaml, metrics.json, curve.png, ...). Hidden files and
    hashlab's own temporary files do not count."""
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"run directory {directory}: exists and is not a folder; choose "
                              "another name (--name) or --run-dir")
    if not directory.is_dir() or is_run_dir(directory):
        return
    others = sorted(p.name for p in directory.iterdir()
                    if not p.name.startswith(".") and not is_temp_file(p))
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise CheckpointError(
            f"run directory {directory}: not a hashlab run and not empty (it holds {shown}); "
            f"training would overwrite files there: choose another name (--name) or --run-dir, "
            "or empty the folder")


def check_resume_config(saved: Any, config: Any, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` when its checkpoint's config (``saved``, a dict) differs
    from ``config`` (a config dataclass with ``to_dict``). Options added to the config class
    since the checkpoint was written count with their defaults, so that a new option does not
    make older checkpoints unresumable."""
    if not isinstance(saved, dict):
        return
    try:
        saved = from_dict(type(config), saved).to_dict()
    except (HashlabError, TypeError, ValueError):
        pass  # no longer valid: the comparison below names the difference
    current = config.to_dict()
    if saved != current:
        raise CheckpointError(
            f"cannot resume {run_dir}: its config differs from the one given "
            f"({_config_diff(saved, current)}); resume with the same config (see config.yaml "
            "in the run directory)")


def _config_diff(saved: Any, current: dict[str, Any], prefix: str = "") -> str:
    """The first keys where two config dicts differ, as ``key (saved → current)``."""
    if not isinstance(saved, dict):
        return "the checkpoint's config is not a mapping"
    diffs = []
    for key in sorted(saved.keys() | current.keys(), key=str):
        a, b = saved.get(key, "missing"), current.get(key, "missing")
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                diffs.append(_config_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")


def plot_training_curve(history: list[dict[str, Any]], path: str | Path, **write: Any) -> None:
    """Loss (and training accuracy, when known) per epoch, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    if all(h.get("accuracy") is not None for h in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [h["accuracy"] for h in history], "s--", color="tab:orange")
        ax2.set_ylabel("training accuracy", color="tab:orange")
    ax.set_title("training curve")
    fig.tight_layout()
    from io import BytesIO

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    from hashlab.io import atomic_write

    atomic_write(path, lambda f: f.write(buf.getvalue()), **write)


def select_classes(dataset: Any, classes: Sequence[int]) -> Any:
    """Keep only images of ``classes``, relabelled 0..len(classes)-1 in the order given."""
    from hashlab.data.arrays import ArrayDataset

    if not isinstance(dataset, ArrayDataset):
        raise ConfigError("data.classes needs an in-memory dataset")
    labels = np.asarray(dataset.labels)
    missing = sorted(set(classes) - set(np.unique(labels).tolist()))
    if missing:
        raise ConfigError(f"data.classes: classes {missing} have no training images")
    keep = np.flatnonzero(np.isin(labels, classes))
    remap = np.full(labels.max() + 1, -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    names = [dataset.classes[c] for c in classes] if dataset.classes else None
    return ArrayDataset(dataset.images[keep], remap[labels[keep]], names, dataset.mean,
                        dataset.std)


def _split_validation(dataset: Any, validation: Any) -> tuple[Any, Any]:
    """(training part, held-out part) of ``dataset`` (train.validation)."""
    from hashlab.data.arrays import ArrayDataset
    from hashlab.train.heldout import split_validation

    if not isinstance(dataset, ArrayDataset):
        raise ConfigError("train.validation needs an in-memory dataset")
    train_idx, val_idx = split_validation(dataset.labels, validation.fraction, validation.seed)
    if len(val_idx) < 2 or len(train_idx) < 2:
        raise ConfigError(f"train.validation.fraction: {validation.fraction:g} of "
                          f"{len(dataset)} images leaves {len(train_idx)} to train on and "
                          f"{len(val_idx)} to validate on; both need at least 2")
    return dataset.subset(train_idx), dataset.subset(val_idx)


def _subset_indices(dataset: Any, idx: np.ndarray) -> Any:
    from hashlab.data.arrays import ArrayDataset

    if not isinstance(dataset, ArrayDataset):
        raise ConfigError("data.partial_labels needs an in-memory dataset")
    return dataset.subset(idx)


def _subset(dataset: Any, n: int, seed: int) -> Any:
    """The first ``n`` images of a seeded permutation (an ArrayDataset keeps its fast path)."""
    from hashlab.data.arrays import ArrayDataset

    if n >= len(dataset):
        return dataset
    idx = np.random.default_rng(seed).permutation(len(dataset))[:n]
    idx.sort()
    if not isinstance(dataset, ArrayDataset):
        raise ConfigError("train.limit_train_samples needs an in-memory dataset")
    return dataset.subset(idx)


def train(config: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
          progress: bool = True) -> Trainer:
    """Train ``config`` and return the finished :class:`Trainer`."""
    trainer = Trainer(config, run_dir, progress=progress)
    trainer.fit(resume=resume)
    return trainer


__all__ = ["EpochStats", "Trainer", "build_loss", "check_resume_config", "load_checkpoint",
           "seed_everything", "train"]
