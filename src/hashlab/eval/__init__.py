"""Evaluation: retrieval metrics for float and binary codes, and the evaluation protocols.

The metric functions are re-exported here from :mod:`hashlab.eval.metrics`; the protocols are
registered in :data:`hashlab.eval.registry.PROTOCOLS` by their own modules and run with
:func:`hashlab.eval.protocols.evaluate_run`. Definitions: ``docs/protocols.md``.
"""

from __future__ import annotations

from hashlab.eval import metrics as _metrics
from hashlab.eval.metrics import *  # noqa: F403  (the public metric functions)

__all__ = list(_metrics.__all__)
