"""Losses that shape codes; each is an ``nn.Module`` called as ``loss(embeddings, labels)``.

Every module of this package registers its methods itself (``LOSSES``, ``MINERS``,
``DISTANCES``, ``REDUCTIONS`` in :mod:`hashlab.losses.registry`), and the registries import the
package's modules on their first look-up: a new loss is one new file here, nothing else. The
names below are re-exported for convenience only. Formulas: ``docs/losses.md``.
"""

from hashlab.losses.hashing import (
    DPSHLoss,
    EuclideanTripletLoss,
    HammingTripletLoss,
    QuantizationLoss,
)
from hashlab.losses.registry import DISTANCES, LOSSES, MINERS, REDUCTIONS
from hashlab.losses.softmax import HashCrossEntropyLoss, SoftmaxLoss, quantization_penalty

__all__ = ["DISTANCES", "LOSSES", "MINERS", "REDUCTIONS", "DPSHLoss", "EuclideanTripletLoss",
           "HammingTripletLoss", "HashCrossEntropyLoss", "QuantizationLoss", "SoftmaxLoss",
           "quantization_penalty"]
