"""Checks of the files hashlab reads back: fingerprints, safe loading and structure.

Everything hashlab wrote earlier and reads again (``model.pt``, ``checkpoint.pt``, codes
``.npz`` files, index sidecar JSON) may since have been truncated, overwritten with something
else, crafted to run code, or made stale by a retrained model. The helpers here

* fingerprint a file or a set of arrays with SHA-256 (:func:`sha256_bytes`,
  :func:`file_sha256`, :func:`arrays_sha256`),
* load without ever executing code from the file: torch files with ``weights_only=True``
  (:func:`load_torch_file`), ``.npz`` files with ``allow_pickle=False`` (:func:`read_npz`),
  JSON (:func:`read_json_object`),
* check the structure of what was loaded (:func:`check_model_state`,
  :func:`check_checkpoint_state`, :func:`check_fields`),

and raise an error that names the file and says how to fix it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashlab.errors import CheckpointError, HashlabError, summary

__all__ = [
    "ArtifactError",
    "SHA256_PATTERN",
    "arrays_sha256",
    "check_checkpoint_state",
    "check_fields",
    "check_model_state",
    "file_sha256",
    "load_torch_file",
    "parse_json_object",
    "read_json_object",
    "read_npz",
    "sha256_bytes",
    "zip_damage",
]

#: a SHA-256 hex digest as hashlab writes it
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class ArtifactError(HashlabError):
    """A file hashlab wrote earlier (codes, sidecar JSON) is damaged, foreign or stale."""


# ------------------------------------------------------------------------------ fingerprints
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of named arrays: names, dtypes, shapes and contents, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ safe loading
def zip_damage(data: bytes) -> str | None:
    """What is wrong with the zip archive ``data`` (the format of ``torch.save`` and ``.npz``
    files): a member whose CRC-32 does not match, or an unreadable directory; None when every
    member checks out or ``data`` is not a zip archive at all."""
    buf = io.BytesIO(data)
    if not zipfile.is_zipfile(buf):
        return None
    try:
        with zipfile.ZipFile(buf) as z:
            bad = z.testzip()
    except Exception as exc:  # a damaged central directory raises many errors
        return summary(exc)
    return None if bad is None else f"member {bad} fails its CRC-32 check"


def load_torch_file(path: str | Path, *, map_location: Any = "cpu", what: str = "checkpoint"
                    ) -> tuple[dict[str, Any], str]:
    """Read a torch file once: its content (tensors and plain data only: ``weights_only=True``,
    so no code in the file runs) and the SHA-256 of its bytes. Raises :class:`CheckpointError`
    naming the file when it is missing, unreadable, not a torch file or not a dict."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    damage = zip_damage(data)
    if damage is not None:  # torch does not check the CRCs: a flipped weight would load
        raise CheckpointError(f"{path}: the {what} is corrupt ({damage}); restore the file or "
                              "train the run again")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated / foreign / code-carrying files raise many errors
        raise CheckpointError(
            f"{path}: not a readable {what} ({summary(exc)}); the file is truncated, "
            "corrupt, not a torch file, or holds Python objects other than tensors and plain "
            "data, which hashlab refuses to load because loading them could run code") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a hashlab {what} (a torch file holding a "
                              f"{type(state).__name__}, not a dict)")
    return state, sha256_bytes(data)


def read_npz(path: str | Path, what: str = "codes file") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read completely (so the zip CRC of each is checked),
    never unpickling anything. Raises :class:`ArtifactError` naming the file otherwise."""
    path = Path(path)

    def refuse(exc: Exception) -> ArtifactError:
        return ArtifactError(f"{path}: not a readable .npz {what} ({summary(exc)}); it is "
                             "truncated, corrupt or not written by hashlab")

    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ArtifactError(f"{what} not found: {path}") from None
    except Exception as exc:
        raise refuse(exc) from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ArtifactError(f"{path}: a single .npy array, not a .npz {what}")
    try:
        with z:
            return {key: z[key] for key in z.files}
    except Exception as exc:
        raise refuse(exc) from exc


def parse_json_object(data: bytes, path: str | Path, what: str,
                      error: type[HashlabError] = ArtifactError) -> dict[str, Any]:
    """The JSON object in ``data`` (the bytes of ``path``); ``error`` naming the file when it
    is empty, not UTF-8, not JSON or not an object."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = "empty file" if not data.strip() else summary(exc)
        raise error(f"{path}: not valid JSON ({detail}); the {what} is corrupt") from exc
    if not isinstance(value, dict):
        raise error(f"{path}: not a {what} (a JSON {type(value).__name__}, not an object)")
    return value


def read_json_object(path: str | Path, what: str, error: type[HashlabError] = ArtifactError
                     ) -> dict[str, Any]:
    """:func:`parse_json_object` of the file ``path``; ``error`` when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: missing (the {what})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    return parse_json_object(data, path, what, error)


# ------------------------------------------------------------------------------ structure
def _type_name(types: type | tuple[type, ...]) -> str:
    items = types if isinstance(types, tuple) else (types,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in items)


def check_fields(data: Mapping[str, Any], spec: Mapping[str, type | tuple[type, ...]],
                 path: Path | str, what: str, error: type[HashlabError] = ArtifactError,
                 hint: str = "") -> None:
    """Every key of ``spec`` is in ``data`` with a value of its type (``bool`` is not an
    ``int``); otherwise ``error`` naming the file, the field and ``hint``."""
    missing = [key for key in spec if key not in data]
    if missing:
        raise error(f"{path}: not a valid {what}: missing {', '.join(missing)}{hint}")
    for key, types in spec.items():
        value = data[key]
        if (isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                     else (types,))) \
                or not isinstance(value, types):
            raise error(f"{path}: not a valid {what}: {key} must be a {_type_name(types)}, got "
                        f"{type(value).__name__}{hint}")


def _check_state_dict(state: Any, name: str, path: Path | str, what: str, hint: str) -> None:
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a valid {what}: {name} must map parameter names to "
                              f"tensors (bad entries: {bad[:3]}){hint}")


_MODEL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "loss": dict, "config": dict, "dataset": dict, "epochs": int}
_DATASET_FIELDS: dict[str, type | tuple[type, ...]] = {"num_classes": int, "image_shape": list}
_CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "model": dict, "loss": dict, "optimizer": dict,
    "scheduler": (dict, type(None)), "torch_rng": torch.Tensor, "history": list, "config": dict}


def check_model_state(state: Mapping[str, Any], path: Path | str) -> None:
    """Check the structure of a finished model (``model.pt``, written by
    ``Trainer.save_final``): keys, types, tensor state dicts, dataset facts."""
    what = "finished model (model.pt)"
    run = Path(path).parent
    resume = f"`hashlab train {run / 'config.yaml'} --resume --run-dir {run}`"
    hint = f"; restore the file, or rewrite it from the run's checkpoint.pt with {resume}"
    if "optimizer" in state and "dataset" not in state:
        raise CheckpointError(
            f"{path}: holds a training checkpoint (checkpoint.pt), not a finished model; "
            f"finish the run with {resume}, which writes model.pt")
    check_fields(state, _MODEL_FIELDS, path, what, CheckpointError, hint)
    for name in ("model", "loss"):
        _check_state_dict(state[name], name, path, what, hint)
    meta = state["dataset"]
    check_fields(meta, _DATASET_FIELDS, path, f"{what} (dataset facts)", CheckpointError, hint)
    shape = meta["image_shape"]
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                  for s in shape):
        raise CheckpointError(f"{path}: not a valid {what}: dataset.image_shape must be "
                              f"[channels, height, width], got {shape!r}{hint}")
    if meta["num_classes"] < 1:
        raise CheckpointError(f"{path}: not a valid {what}: dataset.num_classes must be "
                              f"positive, got {meta['num_classes']}{hint}")
    attributes = meta.get("attributes")
    if attributes is not None and not (isinstance(attributes, list)
                                       and all(isinstance(a, str) for a in attributes)):
        raise CheckpointError(f"{path}: not a valid {what}: dataset.attributes must be a list "
                              f"of names{hint}")


def check_checkpoint_state(state: Mapping[str, Any], path: Path | str) -> None:
    """Check the structure of a training checkpoint (``checkpoint.pt``, written by
    ``Trainer.state_dict``) before resuming from it."""
    what = "training checkpoint (checkpoint.pt)"
    hint = "; restore the file, or train the run again from scratch"
    if "dataset" in state and "optimizer" not in state:
        raise CheckpointError(f"{path}: holds a finished model (model.pt), not a training "
                              "checkpoint; it cannot be resumed (the run is finished)")
    check_fields(state, _CHECKPOINT_FIELDS, path, what, CheckpointError, hint)
    for name in ("model", "loss"):
        _check_state_dict(state[name], name, path, what, hint)
    if state["epoch"] < 0:
        raise CheckpointError(f"{path}: not a valid {what}: epoch {state['epoch']} < 0{hint}")
