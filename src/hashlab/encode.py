"""Load a finished run and turn a dataset split into codes (float32 and packed bits)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hashlab.artifacts import (
    ArtifactError,
    arrays_sha256,
    check_model_state,
    load_torch_file,
    read_npz,
)
from hashlab.config import RunConfig, from_dict
from hashlab.data.facts import TrainData
from hashlab.data.registry import load_dataset
from hashlab.errors import CheckpointError, HashlabError, summary
from hashlab.io import atomic_write
from hashlab.models.model import CodeModel, build_model
from hashlab.train.engine import FINAL_MODEL, build_loss

CODES_DIR = "codes"
# what building a model or loss from a stored config, or loading weights into it, raises on a
# value or shape that does not fit
_BUILD_ERRORS = (ValueError, TypeError, RuntimeError, AssertionError)


#: arrays of a codes ``.npz`` file: required, written for hash models, and metadata
_CODE_ARRAYS = ("float", "labels")
_BIT_ARRAYS = ("bits", "nbits")
_META_ARRAYS = ("sha256", "model_sha256", "split")


@dataclass
class Codes:
    """The codes of one split: float embeddings, packed bits (hash models only) and labels.

    ``model_sha256``: the SHA-256 of the ``model.pt`` that made them, ``split``: the split they
    encode (both recorded in the ``.npz``; None when unknown or a subset)."""

    float: np.ndarray
    bits: np.ndarray | None
    labels: np.ndarray
    nbits: int | None
    model_sha256: str | None = None
    split: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Any) -> Codes:
        """The codes at ``indices`` (integer positions or a boolean mask), in that order."""
        bits = self.bits[indices] if self.bits is not None else None
        return Codes(self.float[indices], bits, self.labels[indices], self.nbits,
                     self.model_sha256)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (atomically) with the arrays, a SHA-256 of their content, and the
        model's fingerprint and split when known."""
        path = Path(path)
        arrays: dict[str, Any] = {"float": self.float, "labels": self.labels}
        if self.bits is not None:
            arrays["bits"], arrays["nbits"] = self.bits, np.int64(self.nbits)
        arrays["sha256"] = np.str_(arrays_sha256(arrays))
        if self.model_sha256 is not None:
            arrays["model_sha256"] = np.str_(self.model_sha256)
        if self.split is not None:
            arrays["split"] = np.str_(self.split)
        if path.is_dir():
            raise ArtifactError(f"{path}: is a directory; give a file name for the codes "
                                "(e.g. codes.npz)")
        try:
            return atomic_write(path, lambda f: np.savez(f, **arrays))
        except HashlabError:
            raise
        except OSError as exc:
            raise ArtifactError(f"cannot write codes to {path}: {exc.strerror or exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> Codes:
        """Read an ``.npz`` written by :meth:`save`, checking its structure (arrays, dtypes,
        shapes) and content checksum; :class:`ArtifactError` naming the file otherwise. Nothing
        in the file is unpickled."""
        path = Path(path)
        z = read_npz(path, "codes file")

        def bad(problem: str) -> ArtifactError:
            return ArtifactError(f"{path}: not a valid codes file: {problem}; encode again "
                                 "(`hashlab encode RUN --split SPLIT --out FILE`)")

        missing = [k for k in _CODE_ARRAYS if k not in z]
        binary = "bits" in z or "nbits" in z
        missing += [k for k in _BIT_ARRAYS if binary and k not in z]
        if "model_sha256" in z and "sha256" not in z:
            missing.append("sha256")
        if missing:
            raise bad(f"missing array(s) {', '.join(missing)} (has {', '.join(sorted(z))})")
        unknown = sorted(set(z) - set(_CODE_ARRAYS + _BIT_ARRAYS + _META_ARRAYS))
        if unknown:
            raise bad(f"unexpected array(s) {', '.join(unknown)}")
        meta = {}
        for key in _META_ARRAYS:
            if key in z:
                if z[key].ndim != 0 or z[key].dtype.kind != "U":
                    raise bad(f"{key} must be a string")
                meta[key] = str(z[key])
        floats, labels = z["float"], z["labels"]
        if floats.dtype != np.float32 or floats.ndim != 2:
            raise bad(f"float must be float32 [n, dim], got {floats.dtype} {floats.shape}")
        n = len(floats)
        if labels.dtype != np.int64 or labels.shape != (n,):
            raise bad(f"labels must be int64 [{n}], got {labels.dtype} {labels.shape}")
        bits, nbits = None, None
        if binary:
            bits, raw = z["bits"], z["nbits"]
            if raw.ndim != 0 or raw.dtype.kind not in "iu" or raw < 1:
                raise bad(f"nbits must be a positive integer, got {raw!r}")
            nbits = int(raw)
            if floats.shape[1] != nbits:
                raise bad(f"float has {floats.shape[1]} columns but nbits is {nbits}")
            if bits.dtype != np.uint8 or bits.shape != (n, (nbits + 7) // 8):
                raise bad(f"bits must be uint8 [{n}, {(nbits + 7) // 8}] for nbits={nbits}, "
                          f"got {bits.dtype} {bits.shape}")
            if nbits % 8 and n and np.any(bits[:, -1] >> (nbits % 8)):
                raise bad(f"padding bits beyond nbits={nbits} are not zero")
        if "sha256" in meta:
            content = {k: z[k] for k in _CODE_ARRAYS + _BIT_ARRAYS if k in z}
            if arrays_sha256(content) != meta["sha256"]:
                raise bad("its arrays do not match their recorded SHA-256 (corrupt or modified)")
        return cls(floats, bits, labels, nbits, meta.get("model_sha256"), meta.get("split"))


class TrainedRun:
    """A run directory with a finished ``model.pt``: its config, model and classifier.

    ``model_sha256`` is the SHA-256 of that ``model.pt``: the codes cache and indexes record
    it, so codes made by another model (the run was retrained) are never used with this one."""

    #: what the evaluation protocols check (``runs=`` in :data:`hashlab.eval.registry.PROTOCOLS`)
    kind = "image"

    def __init__(self, run_dir: str | Path, device: str | torch.device = "cpu") -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / FINAL_MODEL
        if not path.is_file():
            hint = " (training did not finish; continue it with --resume)" if (
                self.run_dir / "checkpoint.pt").exists() else ""
            raise CheckpointError(f"no finished model in {self.run_dir}: {FINAL_MODEL} is "
                                  f"missing{hint}")
        state, self.model_sha256 = load_torch_file(path, map_location=device,
                                                   what="finished model")
        check_model_state(state, path)
        self.device = torch.device(device)
        self.meta: dict[str, Any] = state["dataset"]
        attributes = self.meta.get("attributes")
        try:
            self.config: RunConfig = from_dict(RunConfig, state["config"])
            self.model: CodeModel = build_model(self.config.model, self.meta["image_shape"][0])
            # the loss's parameters are restored below; its factory only needs the shapes
            self.loss_fn = build_loss(self.config, TrainData(
                self.meta["num_classes"], np.empty(0, dtype=np.int64),
                np.empty((0, len(attributes)), dtype=np.int64) if attributes else None,
                attributes))
        except (HashlabError, *_BUILD_ERRORS) as exc:
            raise CheckpointError(f"{path}: the config stored in it does not describe a model "
                                  f"this hashlab can build ({summary(exc)}); restore the file or "
                                  "train the run again") from exc
        for name, module in (("model", self.model), ("loss", self.loss_fn)):
            try:
                module.load_state_dict(state[name])
            except (*_BUILD_ERRORS, KeyError) as exc:
                raise CheckpointError(
                    f"{path}: its {name} weights do not fit the {name} its config describes "
                    f"({summary(exc)}); the file was modified or mixed from two runs: restore "
                    "it or train the run again") from exc
        self.model.to(self.device).eval()

    def load_split(self, split: str) -> Any:
        d = self.config.data
        return load_dataset(d.dataset, split, root=d.root, download=d.download,
                            **({"image_size": d.image_size} if d.image_size else {}))

    def class_names(self, split: str | None = None) -> list[str]:
        """The names of the labels the model was trained on (every split shares them): the
        dataset's class names, or the label numbers as text where it has none."""
        return list(self.meta.get("classes") or []) or \
            [str(i) for i in range(int(self.meta["num_classes"]))]

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
        return Codes(floats, bits, labels, self.model.dim if bits is not None else None,
                     self.model_sha256)

    def encode(self, split: str, batch_size: int = 1024, progress: bool = True,
               cache: bool = True) -> Codes:
        """Codes of a whole split, cached in ``RUN/codes/<split>.npz``.

        The cache records the SHA-256 of ``model.pt`` and the split: a cache made by another
        model is re-encoded, and a damaged one (truncated, foreign, inconsistent) is re-encoded
        with a warning on stderr naming it. A cache that cannot be written costs only a warning.
        """
        path = self.run_dir / CODES_DIR / f"{split}.npz"
        if cache and path.exists():
            cached = self._cached_codes(path, split)
            if cached is not None:
                return cached
        codes = self.encode_dataset(self.load_split(split), batch_size, progress,
                                    desc=f"encode {split}")
        codes.split = split
        if cache:
            try:
                codes.save(path)
            except HashlabError as exc:
                _warn(f"{exc}; the codes are not cached")
            (self.run_dir / CODES_DIR / f".{split}.stamp").unlink(missing_ok=True)  # old format
        return codes

    def _cached_codes(self, path: Path, split: str) -> Codes | None:
        """The cache at ``path`` if it is valid and made by this model for ``split``."""
        try:
            codes = Codes.load(path)
        except HashlabError as exc:
            _warn(f"ignoring the damaged codes cache {path} ({exc}); encoding {split} again")
            return None
        if codes.model_sha256 != self.model_sha256 or codes.split != split:
            _warn(f"the codes cache {path} was made by another model.pt or split (the run was "
                  f"retrained or the file replaced); encoding {split} again")
            return None
        width = (self.model.dim + 7) // 8
        if codes.float.shape[1] != self.model.dim or (codes.bits is not None) != self.model.binary \
                or (codes.bits is not None and codes.bits.shape[1] != width):
            _warn(f"the codes cache {path} does not fit this model's code size; encoding "
                  f"{split} again")
            return None
        return codes


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
