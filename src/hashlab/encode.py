"""Load a finished run and turn a dataset split into codes (float32 and packed bits)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hashlab.config import RunConfig, from_dict
from hashlab.data.facts import TrainData
from hashlab.data.registry import load_dataset
from hashlab.errors import CheckpointError
from hashlab.io import atomic_write
from hashlab.models.model import CodeModel, build_model
from hashlab.train.engine import FINAL_MODEL, build_loss, load_checkpoint

CODES_DIR = "codes"


@dataclass
class Codes:
    """The codes of one split: float embeddings, packed bits (hash models only) and labels."""

    float: np.ndarray
    bits: np.ndarray | None
    labels: np.ndarray
    nbits: int | None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Any) -> Codes:
        """The codes at ``indices`` (integer positions or a boolean mask), in that order."""
        bits = self.bits[indices] if self.bits is not None else None
        return Codes(self.float[indices], bits, self.labels[indices], self.nbits)

    def save(self, path: str | Path) -> Path:
        arrays: dict[str, Any] = {"float": self.float, "labels": self.labels}
        if self.bits is not None:
            arrays["bits"], arrays["nbits"] = self.bits, np.int64(self.nbits)
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> Codes:
        with np.load(path) as z:
            bits = z["bits"] if "bits" in z else None
            return cls(z["float"], bits, z["labels"], int(z["nbits"]) if bits is not None else None)


class TrainedRun:
    """A run directory with a finished ``model.pt``: its config, model and classifier."""

    def __init__(self, run_dir: str | Path, device: str | torch.device = "cpu") -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / FINAL_MODEL
        if not path.exists():
            hint = " (training did not finish; continue it with --resume)" if (
                self.run_dir / "checkpoint.pt").exists() else ""
            raise CheckpointError(f"no finished model in {self.run_dir}: {FINAL_MODEL} is "
                                  f"missing{hint}")
        state = load_checkpoint(path, map_location=device)
        self.config: RunConfig = from_dict(RunConfig, state["config"])
        self.meta: dict[str, Any] = state["dataset"]
        self.device = torch.device(device)
        self.model: CodeModel = build_model(self.config.model, self.meta["image_shape"][0])
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        attributes = self.meta.get("attributes")
        # the loss's parameters are restored below; its factory only needs the shapes
        self.loss_fn = build_loss(self.config, TrainData(
            self.meta["num_classes"], np.empty(0, dtype=np.int64),
            np.empty((0, len(attributes)), dtype=np.int64) if attributes else None, attributes))
        self.loss_fn.load_state_dict(state["loss"])
        self._mtime = path.stat().st_mtime_ns

    def load_split(self, split: str) -> Any:
        d = self.config.data
        return load_dataset(d.dataset, split, root=d.root, download=d.download,
                            **({"image_size": d.image_size} if d.image_size else {}))

    @torch.no_grad()
    def encode_dataset(self, dataset: Any, batch_size: int = 1024, progress: bool = True,
                       desc: str = "encode") -> Codes:
        """Encode every image of ``dataset`` in batches (bounded memory, progress bar)."""
        n = len(dataset)
        floats = np.empty((n, self.model.dim), dtype=np.float32)
        bits = np.empty((n, (self.model.dim + 7) // 8), dtype=np.uint8) if self.model.binary \
            else None
        labels = np.empty(n, dtype=np.int64)
        for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False,
                          unit="batch"):
            idx = torch.arange(start, min(start + batch_size, n))
            images, y = dataset.get_batch(idx)
            f, b = self.model.encode_all(images.to(self.device))
            floats[start:start + len(idx)] = f
            if bits is not None:
                bits[start:start + len(idx)] = b
            labels[start:start + len(idx)] = y.numpy()
        return Codes(floats, bits, labels, self.model.dim if bits is not None else None)

    def encode(self, split: str, batch_size: int = 1024, progress: bool = True,
               cache: bool = True) -> Codes:
        """Codes of a whole split, cached in ``RUN/codes/<split>.npz`` until the model changes."""
        path = self.run_dir / CODES_DIR / f"{split}.npz"
        stamp = self.run_dir / CODES_DIR / f".{split}.stamp"
        if cache and path.exists() and stamp.exists() and stamp.read_text() == str(self._mtime):
            return Codes.load(path)
        codes = self.encode_dataset(self.load_split(split), batch_size, progress,
                                    desc=f"encode {split}")
        if cache:
            codes.save(path)
            atomic_write(stamp, lambda f: f.write(str(self._mtime).encode()))
        return codes
