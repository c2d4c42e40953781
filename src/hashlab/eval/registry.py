"""The registry of evaluation protocols.

A protocol is ``fn(run, progress=True, batch_size=1024[, index=None]) → result dict`` (with
``protocol``, ``n_queries``, ``n_database``, ``metrics``, ``seconds``). Metadata:
``rows=fn(result) → [(label, value), ...]`` gives the protocol's own rows of the result table
(default: :func:`hashlab.eval.report.retrieval_rows`); ``index=True`` says it can search a
saved index (``hashlab eval --index``); ``runs=("cross-modal",)`` says which kind of run it
evaluates (a run's ``kind`` attribute; default ``("image",)``, the single-modality runs).
"""

from __future__ import annotations

from typing import Any

from hashlab.registry import Registry

PROTOCOLS: Registry[Any] = Registry(
    "protocol", packages=("hashlab.eval",),
    description="evaluation protocols: queries, database, relevance and reported metrics")
