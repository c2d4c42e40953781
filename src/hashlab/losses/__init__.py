"""Losses that shape codes; each is an ``nn.Module`` called as ``loss(embeddings, labels)``."""

from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import HashCrossEntropyLoss, SoftmaxLoss, quantization_penalty

__all__ = ["LOSSES", "HashCrossEntropyLoss", "SoftmaxLoss", "quantization_penalty"]
