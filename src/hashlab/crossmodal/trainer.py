"""The generic cross-modal trainer and the trained run: :class:`CrossModalTrainer`,
:class:`CrossModalRun`.

The trainer names no method: it builds the two towers, asks the configured method
(:data:`~hashlab.crossmodal.registry.CROSSMODAL_METHODS`) for attention modules, its parameter
groups and, every epoch, trains each modality's pass batch by batch (see
:mod:`hashlab.crossmodal.base`). A run directory holds, written atomically after every
epoch, ``checkpoint.pt`` (the network, the method's state (DCMH's memory matrices F, G, B),
every optimiser, the torch RNG, the history and the config), ``config.yaml`` and
``metrics.json`` (the per-epoch history), and when training ends ``curve.png`` (the training
curve) and ``model.pt`` (the final network with its config, image shape and vocabulary).
Shuffles come from a generator seeded by (seed, epoch), so resuming from any epoch's
checkpoint replays the uninterrupted run exactly.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from hashlab.artifacts import check_fields, load_torch_file
from hashlab.config import from_dict
from hashlab.crossmodal.base import CrossModalBatch, CrossModalMethod
from hashlab.crossmodal.config import CrossModalConfig
from hashlab.crossmodal.registry import CROSSMODAL_METHODS
from hashlab.crossmodal.towers import CrossModalNet, Modality, TextTower, build_image_tower
from hashlab.data.paired import PairedData
from hashlab.errors import CheckpointError, ConfigError, DataError, DivergedError, summary
from hashlab.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
)
from hashlab.train.engine import (
    CHECKPOINT,
    CONFIG_FILE,
    CURVE_FILE,
    FINAL_MODEL,
    METRICS_FILE,
    build_optimizer,
    check_run_dir,
    plot_training_curve,
    prepare_run_dir,
    resolve_device,
    seed_everything,
)

__all__ = ["CrossModalRun", "CrossModalTrainer", "build_net", "train_crossmodal"]

Callback = Callable[["CrossModalTrainer", int, int], None]

_CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "net": dict, "method": dict, "optimizers": dict, "torch_rng": torch.Tensor,
    "history": list, "config": dict}
_MODEL_FIELDS: dict[str, type | tuple[type, ...]] = {"net": dict, "config": dict, "meta": dict}


def build_net(config: CrossModalConfig, in_channels: int, vocab_size: int) -> CrossModalNet:
    """The towers, hash layers and (if the method has them) attention modules of ``config``."""
    method = CROSSMODAL_METHODS.get(config.method.name, key="method.name")
    image = build_image_tower(config.image.backbone, config.image.backbone_args, in_channels)
    t = config.text
    text = TextTower(vocab_size, t.hidden, t.feature_dim, t.dropout)
    net = CrossModalNet(image, text, config.dim, method.build_attention(image.feature_dim),
                        method.build_attention(text.feature_dim))
    net.towers["image"].to(memory_format=torch.channels_last)  # see CrossModalNet.features
    return net


def load_train_data(config: CrossModalConfig) -> Any:
    """The training split of ``config.data`` (``hashlab.data.registry.load_paired``)."""
    from hashlab.data.registry import load_paired  # the paired loaders may be added later

    d = config.data
    return load_paired(d.dataset, "train", root=d.root, **d.args)


def lr_factor(schedule: str, epoch: int, epochs: int, final: float) -> float:
    """The learning rate of ``epoch`` (0-based) as a factor of ``optim.lr``."""
    if schedule == "constant" or epochs == 1:
        return 1.0
    t = epoch / (epochs - 1)
    if schedule == "linear":
        return 1.0 + (final - 1.0) * t
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))


class CrossModalTrainer:
    """Trains a cross-modal ``config`` into ``run_dir`` (default ``output_dir/name``).

    ``data``: the training :class:`~hashlab.data.paired.PairedData` (default: the ``train``
    split of ``config.data``). ``callbacks`` are called as ``callback(trainer, epoch, step)``
    after every batch (``step`` counts the batches of the epoch, over all passes) and with
    ``step = -1`` after each epoch's checkpoint.
    """

    def __init__(self, config: CrossModalConfig, run_dir: str | Path | None = None, *,
                 progress: bool = True, data: Any = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir else Path(config.output_dir) / config.name
        check_run_dir(self.run_dir)
        self.progress = progress
        self.callbacks = list(callbacks)
        self.device = resolve_device(config.train.device)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0

        seed_everything(config.seed)
        data = load_train_data(config) if data is None else data
        limit = config.train.limit_train_samples
        if limit and limit < len(data):
            keep = np.sort(np.random.default_rng(config.seed).permutation(len(data))[:limit])
            data = data.subset(keep)
        self.data = data
        n, b = len(data), config.train.batch_size
        if n < b:
            raise ConfigError(f"train.batch_size: {b} is larger than the training set "
                              f"({n} items)")
        # every item once per pass, in ⌊n/b⌋ nearly equal batches of b to 2b − 1 items (never a
        # tiny last batch, which batch normalisation cannot take)
        self.batches_per_pass = n // b
        in_channels = int(data.images.image_shape[0])
        self.net = build_net(config, in_channels, int(data.texts.shape[1])).to(self.device)
        self._check_net_runs()
        self.method: CrossModalMethod = CROSSMODAL_METHODS.get(config.method.name)(
            dim=config.dim, **config.method.args).to(self.device)
        labels = torch.as_tensor(np.asarray(data.labels)).to(self.device)
        if labels.ndim != 2:
            raise DataError(f"the training labels must be multi-hot [N, L], got shape "
                            f"{tuple(labels.shape)}")
        self.method.bind(labels, torch.Generator().manual_seed(config.seed))
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.lr_factors: dict[str, float] = {}
        for name, (params, factor) in self.method.param_groups(self.net).items():
            if params:
                self.optimizers[name] = build_optimizer(config, params)  # type: ignore[arg-type]
                self.lr_factors[name] = float(factor)

    def _check_net_runs(self) -> None:
        """Encode two training items, so that a backbone that cannot take these images is a
        ConfigError now, not a crash mid-run."""
        idx = torch.arange(min(2, len(self.data)))
        images, _ = self.data.images.get_batch(idx)
        try:
            self.net.encode("image", images.to(self.device))
        except torch.OutOfMemoryError:
            raise
        except (ValueError, TypeError, RuntimeError) as exc:
            im = self.config.image
            raise ConfigError(
                f"image.backbone: {im.backbone!r} with {im.backbone_args or 'default args'} "
                f"cannot encode this dataset's images of shape {tuple(images.shape[1:])} "
                f"({summary(exc)})") from exc

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {
            "epoch": self.epoch,
            "net": self.net.state_dict(),
            "method": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "config": self.config.to_dict(),
        }
        if self.device.type == "cuda":  # dropout on the GPU draws from the device's generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.method.load_state_dict(state["method"])
        if set(state["optimizers"]) != set(self.optimizers):
            raise KeyError(f"optimisers {sorted(state['optimizers'])} in the checkpoint, "
                           f"{sorted(self.optimizers)} now")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])

    def _then(self) -> str:
        if (self.run_dir / CHECKPOINT).exists():
            return "continue the run with resume"
        return "run the command again"

    def _prepare_run_dir(self, resume: bool) -> None:
        def load(ckpt: Path) -> dict[str, Any]:
            state = load_torch_file(ckpt, map_location=self.device, what="checkpoint")[0]
            check_fields(state, _CHECKPOINT_FIELDS, ckpt, "cross-modal training checkpoint",
                         CheckpointError, "; restore the file, or train the run again from "
                                          "scratch")
            return state  # type: ignore[no-any-return]

        prepare_run_dir(self.run_dir, resume, self.config, load=load,
                        restore=self.load_state_dict,
                        restore_errors=(KeyError, IndexError, AttributeError, ValueError,
                                        RuntimeError))

    # ---------------------------------------------------------------- training
    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train until ``train.epochs`` (continuing the run's checkpoint with ``resume``);
        returns the per-epoch history."""
        self._prepare_run_dir(resume)
        try:
            while self.epoch < self.config.train.epochs:
                stats = self._train_epoch(self.epoch)
                self.history.append(stats)
                self.epoch += 1
                atomic_torch_save(self.run_dir / CHECKPOINT, self.state_dict(),
                                  then=self._then())
                # after the checkpoint: a folder holding a config.yaml and no checkpoint would
                # not be recognised as a run (check_run_dir) and could not be trained into
                atomic_write_text(self.run_dir / CONFIG_FILE, self.config.to_yaml(),
                                  then=self._then())
                atomic_write_json(self.run_dir / METRICS_FILE, {"history": self.history},
                                  then=self._then())
                for cb in self.callbacks:
                    cb(self, self.epoch - 1, -1)
        except KeyboardInterrupt:
            tqdm.write(f"interrupted; the last completed epoch ({self.epoch}) is saved in "
                       f"{self.run_dir / CHECKPOINT}; resume to continue")
            raise
        plot_training_curve(self.history, self.run_dir / CURVE_FILE, then=self._then())
        self.save_final()
        return self.history

    def _set_lr(self, epoch: int) -> float:
        o = self.config.optim
        factor = lr_factor(o.schedule, epoch, self.config.train.epochs, o.final_lr_fraction)
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = o.lr * factor * self.lr_factors[name]
        return o.lr * factor

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        lr = self._set_lr(epoch)
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        self.net.train()
        self.method.train()
        start = time.perf_counter()
        stats: dict[str, Any] = {"epoch": epoch + 1}
        losses, step = [], 0
        for modality in self.method.passes:
            sums: dict[str, float] = defaultdict(float)
            seen = 0
            order = torch.randperm(len(self.data), generator=gen)
            bar = tqdm(torch.tensor_split(order, self.batches_per_pass),
                       desc=f"epoch {epoch + 1}/{self.config.train.epochs} {modality}",
                       disable=not self.progress, leave=False, unit="batch", dynamic_ncols=True)
            for i, idx in enumerate(bar):
                batch = CrossModalBatch(self.data, idx, self.device)
                logs = self.method.train_batch(self.net, modality, batch, self.optimizers, i)
                self._check_finite(logs, epoch, modality, i)
                for key, value in logs.items():
                    sums[key] += value * len(batch)
                seen += len(batch)
                bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}")
                for cb in self.callbacks:
                    cb(self, epoch, step)
                step += 1
            bar.close()
            stats.update({f"{modality}_{k}": v / seen for k, v in sums.items()})
            losses.append(sums["loss"] / seen)
        self.method.end_epoch(epoch)
        seconds = time.perf_counter() - start
        stats.update({"loss": float(np.mean(losses)), "lr": lr, "seconds": seconds})
        if self.progress:
            parts = ", ".join(f"{m} loss {stats[f'{m}_loss']:.4f}" for m in self.method.passes)
            tqdm.write(f"epoch {epoch + 1}/{self.config.train.epochs}: {parts}, "
                       f"{seconds:.1f}s")
        return stats

    def _check_finite(self, logs: dict[str, float], epoch: int, modality: Modality,
                      step: int) -> None:
        if not math.isfinite(logs["loss"]):
            lr = self.config.optim.lr
            raise DivergedError(
                f"training diverged: the {modality} loss became {logs['loss']} at epoch "
                f"{epoch + 1}, step {step} (optim.lr: {lr:g}): lower optim.lr (e.g. "
                f"optim.lr={lr / 10:g}) or check the data, then train under another name or "
                f"remove {self.run_dir}")

    # ---------------------------------------------------------------- outputs
    def save_final(self) -> Path:
        """Write ``model.pt``: the network, the config and what encoding needs."""
        meta = {
            "image_shape": [int(s) for s in self.data.images.image_shape],
            "vocabulary_size": int(self.data.texts.shape[1]),
            "vocabulary": list(self.data.vocabulary),
            "label_names": list(self.data.label_names),
            "num_train": len(self.data),
        }
        return atomic_torch_save(self.run_dir / FINAL_MODEL, {
            "net": self.net.state_dict(), "config": self.config.to_dict(), "meta": meta,
            "epochs": self.epoch, "kind": "cross-modal"}, then=self._then())


def is_crossmodal_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a cross-modal run (its ``config.yaml`` has a ``method``)."""
    from hashlab.crossmodal.config import is_crossmodal_config

    try:
        saved = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(saved, dict) and is_crossmodal_config(saved)


def train_crossmodal(config: CrossModalConfig, run_dir: str | Path | None = None, *,
                     resume: bool = False, progress: bool = True, data: Any = None
                     ) -> CrossModalTrainer:
    """Train ``config`` and return the finished :class:`CrossModalTrainer`."""
    trainer = CrossModalTrainer(config, run_dir, progress=progress, data=data)
    trainer.fit(resume=resume)
    return trainer


class CrossModalRun:
    """A trained cross-modal run (its ``model.pt``), for encoding both modalities into the
    shared Hamming space.

    ``encode_images`` / ``encode_texts`` give packed bits (``kind="binary"``, the default:
    uint8 ``[N, ceil(k/8)]`` in :func:`hashlab.index.codes.pack_bits` order, bit = the hash
    layer's pre-activation > 0) or the relaxed float codes (``kind="float"``: float32
    ``[N, k]`` in ``(−1, 1)``); :meth:`image_codes` / :meth:`text_codes` are the float ones.
    """

    #: what the evaluation protocols check (``runs=`` in :data:`hashlab.eval.registry.PROTOCOLS`)
    kind = "cross-modal"

    def __init__(self, run_dir: str | Path, device: str | torch.device = "cpu") -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / FINAL_MODEL
        state, self.model_sha256 = load_torch_file(path, map_location="cpu",
                                                   what="cross-modal model")
        check_fields(state, _MODEL_FIELDS, path, "cross-modal model (model.pt)",
                     CheckpointError, "; train the run (again)")
        self.config = from_dict(CrossModalConfig, state["config"])
        self.meta: dict[str, Any] = dict(state["meta"])
        self.device = torch.device(device)
        self.net = build_net(self.config, int(self.meta["image_shape"][0]),
                             int(self.meta["vocabulary_size"]))
        try:
            self.net.load_state_dict(state["net"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: the weights do not match its config "
                                  f"({summary(exc)})") from exc
        self.net.to(self.device).eval()

    @property
    def dim(self) -> int:
        """Bits per code."""
        return int(self.config.dim)

    @property
    def model(self) -> CrossModalNet:
        """The network (both towers); ``model.dim`` bits per code, as for image runs."""
        return self.net

    def load_split(self, split: str) -> PairedData:
        """A split of the run's paired dataset (its data arguments, its vocabulary)."""
        from hashlab.data.registry import load_paired

        d = self.config.data
        return load_paired(d.dataset, split, root=d.root,
                           **{**d.args, "vocabulary": self.vocabulary})

    def encode_split(self, split: str, modality: Modality,
                     batch_size: int = 256) -> tuple[np.ndarray, PairedData]:
        """Packed bits of one modality of a split, and the split."""
        data = self.load_split(split)
        codes = (self.encode_images(data, batch_size=batch_size) if modality == "image"
                 else self.encode_texts(data, batch_size=batch_size))
        return codes, data

    @property
    def vocabulary(self) -> list[str]:
        return list(self.meta.get("vocabulary", []))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.meta["image_shape"])  # type: ignore[return-value]

    def _encode(self, modality: Modality, batches: Any, kind: str) -> np.ndarray:
        out = [self.net.encode(modality, x.to(self.device), kind) for x in batches]  # type: ignore[arg-type]
        if not out:
            width = self.dim if kind == "float" else (self.dim + 7) // 8
            return np.zeros((0, width), np.float32 if kind == "float" else np.uint8)
        return np.concatenate(out)

    def encode_images(self, images: Any, kind: Literal["binary", "float"] = "binary",
                      batch_size: int = 256) -> np.ndarray:
        """Codes of images: a float tensor / array ``[N, C, H, W]`` normalised as the training
        data, an ArrayDataset, or a PairedData (its images)."""
        source = images.images if isinstance(images, PairedData) else images
        if hasattr(source, "get_batch"):
            n = len(source)
            batches = (source.get_batch(torch.arange(s, min(s + batch_size, n)))[0]
                       for s in range(0, n, batch_size))
            return self._encode("image", batches, kind)
        x = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor)
                            else source, dtype=torch.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"images: expected [N, {', '.join(map(str, self.image_shape))}], "
                             f"got {tuple(x.shape)}")
        return self._encode("image", x.split(batch_size), kind)

    def encode_texts(self, texts: Any, kind: Literal["binary", "float"] = "binary",
                     batch_size: int = 1024) -> np.ndarray:
        """Codes of bags of words: a float tensor / array ``[N, V]`` over the training
        vocabulary (:attr:`vocabulary`), or a PairedData (its texts)."""
        source = texts.texts if isinstance(texts, PairedData) else texts
        x = torch.as_tensor(np.asarray(source, dtype=np.float32)
                            if not isinstance(source, torch.Tensor) else source,
                            dtype=torch.float32)
        v = int(self.meta["vocabulary_size"])
        if x.ndim != 2 or x.shape[1] != v:
            raise ValueError(f"texts: expected bags of words [N, {v}], got {tuple(x.shape)}")
        return self._encode("text", x.split(batch_size), kind)

    def image_codes(self, images: Any, batch_size: int = 256) -> np.ndarray:
        """Float codes ``[N, k]`` of images (see :meth:`encode_images`)."""
        return self.encode_images(images, "float", batch_size)

    def text_codes(self, texts: Any, batch_size: int = 1024) -> np.ndarray:
        """Float codes ``[N, k]`` of bags of words (see :meth:`encode_texts`)."""
        return self.encode_texts(texts, "float", batch_size)
