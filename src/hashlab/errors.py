"""Exceptions hashlab raises on bad input. Each names what was wrong and how to fix it.

The command line prints every :class:`HashlabError` as ``error: <message>`` and exits with
status 2; anything else that escapes a command is a bug in hashlab (see ``hashlab.cli``).
"""

from __future__ import annotations


class HashlabError(Exception):
    """Base class of every error hashlab raises on purpose."""


class ConfigError(HashlabError, ValueError):
    """A configuration file or value is invalid; the message names the key."""


class DataError(HashlabError):
    """A dataset is missing, corrupt or malformed; the message names the file."""


class CheckpointError(HashlabError):
    """A checkpoint or run directory is missing or unreadable."""


class DivergedError(HashlabError, FloatingPointError):
    """Training produced a non-finite loss; the message says at which epoch and step."""


class WriteError(HashlabError, OSError):
    """A file could not be written (disk full, permissions, ...); the message names the file.

    It is also an :class:`OSError` (with ``errno`` and ``filename`` of the cause), so code that
    treats a failed write as best-effort keeps working.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def summary(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters), for error messages
    that quote the low-level error they explain."""
    lines = str(exc).strip().splitlines()
    line = lines[0][:limit] if lines else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
