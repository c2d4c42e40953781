"""Crash-safe file writes: write to a temporary file in the same folder, then rename over.

A failed write (disk full, no permission, ...) raises :class:`~hashlab.errors.WriteError`
naming the file and leaves the previous file intact. A process killed mid-write leaves its
temporary file ``.NAME.XXXXXXXX.tmp`` behind; :func:`remove_stale_temp_files` deletes those
(the trainer does so when a run starts again).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from hashlab.errors import WriteError

TEMP_SUFFIX = ".tmp"
# ".NAME." + tempfile.mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")

# errno → (what happened, what to do about it)
_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOSPC: ("no space left on device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space"),
    errno.EACCES: ("permission denied", "check the folder's permissions"),
    errno.EPERM: ("operation not permitted", "check the folder's permissions"),
    errno.EROFS: ("read-only file system", "write somewhere else"),
    errno.EISDIR: ("it is a directory", "give a file name"),
    errno.ENOTDIR: ("a parent of it is not a directory", "check the path"),
}


def _os_cause(exc: BaseException) -> OSError | None:
    """``exc`` or the first OSError it was raised from (torch wraps write errors in a
    RuntimeError such as "inline_container.cc: unexpected pos")."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def write_error(path: Path, exc: BaseException, then: str = "run the command again"
                ) -> WriteError:
    """A :class:`WriteError` for a failed write of ``path``: what happened and how to fix it."""
    cause = _os_cause(exc)
    reason, action = describe_os_error(cause or exc)
    kept = f"; the previous {path.name} is unchanged" if path.is_file() else ""
    err = WriteError(f"cannot write {path}: {reason}{kept} ({action}, then {then})")
    err.errno, err.filename = getattr(cause, "errno", None), str(path)
    return err


def describe_os_error(exc: BaseException) -> tuple[str, str]:
    """(what happened, what to do about it) for an OSError, in plain words."""
    code = getattr(exc, "errno", None)
    if code in _REASONS:
        return _REASONS[code]
    return (getattr(exc, "strerror", None) or str(exc)), "check the disk and the path"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], *,
                 then: str = "run the command again") -> Path:
    """Call ``write(file)`` on a temporary file, fsync it, then atomically replace ``path``.

    If ``write`` raises (or the process dies), ``path`` keeps its previous content. An OSError
    (or a RuntimeError caused by one, as torch.save raises) becomes a :class:`WriteError`
    naming ``path``, whose hint ends with ``then`` (e.g. how to resume).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise write_error(path, exc, then) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, WriteError):
            raise write_error(path, exc, then) from exc
        raise
    return path


def is_temp_file(path: str | Path) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_write`."""
    return _TEMP_NAME.fullmatch(Path(path).name) is not None


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``directory``
    (only regular files named like hashlab's own, ``.NAME.XXXXXXXX.tmp``); returns them."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if is_temp_file(entry) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def atomic_write_text(path: str | Path, text: str, **kwargs: Any) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), **kwargs)


def atomic_write_json(path: str | Path, data: Any, **kwargs: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", **kwargs)


def atomic_torch_save(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f), **kwargs)
