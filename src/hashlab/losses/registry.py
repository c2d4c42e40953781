"""The loss-side registries: losses, and the triplet family's miners, distances and reductions.

- ``LOSSES``: config name → ``nn.Module`` factory called as ``factory(num_classes=, dim=,
  **loss.args)``. Metadata: ``needs=("attributes",)`` declares what the loss needs from the
  training data (see :class:`hashlab.train.data.TrainData`); the factory then also receives
  ``data=`` and the engine refuses a config that does not provide it.
- ``MINERS``: ``miner(dist [B, B], labels [B], margin) → (anchor, positive, negative)`` indices.
- ``DISTANCES``: ``distance(embeddings [B, d]) → [B, B]`` distance matrix.
- ``REDUCTIONS``: ``reduce(losses [T]) → scalar`` over per-triplet losses.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hashlab.registry import Registry

LOSSES: Registry[nn.Module] = Registry(
    "loss", plural="losses", packages=("hashlab.losses",),
    description="training objectives, called as loss(embeddings, labels)")
MINERS: Registry[Any] = Registry(
    "miner", packages=("hashlab.losses",),
    description="triplet selection from a batch: (distances, labels, margin) -> (a, p, n)")
DISTANCES: Registry[Any] = Registry(
    "distance", packages=("hashlab.losses",),
    description="pairwise distance matrices of a batch of embeddings or codes")
REDUCTIONS: Registry[Any] = Registry(
    "reduction", packages=("hashlab.losses",),
    description="how per-triplet losses become one scalar")
