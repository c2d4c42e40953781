"""``hashlab serve``: an HTTP API (FastAPI) for a trained run and its index.

:func:`create_app` builds the app; ``hashlab serve RUN [--index DIR | --index milvus://...]``
runs it with uvicorn on 127.0.0.1:8000 (a ``milvus://`` reference serves a Milvus collection
written by ``hashlab index --backend milvus``). ``docs/serve.md`` describes every endpoint.
In short:

* ``GET /v1/info`` — the run, code, index kind and size, classes, image shape.
* ``POST /v1/encode`` — codes of uploaded images (multipart ``images`` or ``images_b64``).
* ``POST /v1/search`` — top-k or Hamming-radius search by image, code, vector or item id,
  optionally filtered by metadata (near a point, tags, time window) and re-ranked by
  ``visual distance + lambda * km``; ``POST /v1/search/image`` takes a multipart file.
* ``GET /v1/items/{id}`` (and ``/image``), ``POST /v1/items``, ``DELETE /v1/items/{id}``.
* ``GET /health/live``, ``/health/ready``, ``/metrics`` (Prometheus text).

Modules: :mod:`~hashlab.serve.app` (routes, middleware), :mod:`~hashlab.serve.state` (model,
the served index: FAISS snapshots with atomic saves, or a Milvus collection; items),
:mod:`~hashlab.serve.batcher` (micro-batching of the encoder), :mod:`~hashlab.serve.images`
(upload checks and decoding), :mod:`~hashlab.serve.metadata` (metadata, synthetic demo
locations, ``items.json``), :mod:`~hashlab.serve.metrics`, :mod:`~hashlab.serve.limits`,
:mod:`~hashlab.serve.errors`.
Filtered search itself lives in :mod:`hashlab.index.filters`.
"""

from hashlab.serve.app import create_app
from hashlab.serve.limits import ServeLimits
from hashlab.serve.metadata import synthetic_metadata

__all__ = ["ServeLimits", "create_app", "synthetic_metadata"]
