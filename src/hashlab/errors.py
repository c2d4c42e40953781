"""Exceptions hashlab raises on bad input. Each names what was wrong and how to fix it."""

from __future__ import annotations


class HashlabError(Exception):
    """Base class of every error hashlab raises on purpose."""


class ConfigError(HashlabError, ValueError):
    """A configuration file or value is invalid; the message names the key."""


class DataError(HashlabError):
    """A dataset is missing, corrupt or malformed; the message names the file."""


class CheckpointError(HashlabError):
    """A checkpoint or run directory is missing or unreadable."""
