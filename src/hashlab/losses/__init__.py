"""Losses that shape codes; each is an ``nn.Module`` called as ``loss(embeddings, labels)``.

Importing this package registers every loss in :data:`LOSSES` under its config name.
"""

from hashlab.losses import center, dph, hashing, margin, triplet  # noqa: F401  (registers them)
from hashlab.losses.hashing import (
    DPSHLoss,
    EuclideanTripletLoss,
    HammingTripletLoss,
    QuantizationLoss,
)
from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import HashCrossEntropyLoss, SoftmaxLoss, quantization_penalty

__all__ = ["LOSSES", "DPSHLoss", "EuclideanTripletLoss", "HammingTripletLoss",
           "HashCrossEntropyLoss", "QuantizationLoss", "SoftmaxLoss", "quantization_penalty"]
