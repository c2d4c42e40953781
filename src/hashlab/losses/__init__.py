"""Losses that shape codes; each is an ``nn.Module`` called as ``loss(embeddings, labels)``.

Importing this package registers every loss in :data:`LOSSES` under its config name.
"""

from hashlab.losses import center, margin, triplet  # noqa: F401  (registers the losses)
from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import HashCrossEntropyLoss, SoftmaxLoss, quantization_penalty

__all__ = ["LOSSES", "HashCrossEntropyLoss", "SoftmaxLoss", "quantization_penalty"]
