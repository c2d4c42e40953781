"""Heads: backbone features → code. An embedding head gives a float vector, a hash head a k-bit
relaxed code ``act(W φ + b)`` whose pre-activation signs are the binary code.

Hash-head activations (``HashHead(in_dim, dim, activation=...)``, from a config
``model: {head: hash, head_args: {activation: sigmoid}}``):

- ``"tanh"`` (the default, unchanged): ``u = tanh(z) ∈ (−1, 1)^k``, the usual continuous relaxation
  of ``sgn`` (learning-to-hash survey);
- ``"sigmoid"``: ``u = σ(z) ∈ (0, 1)^k``, DPH's "binary-like" layer ``B^r = σ(W φ(x) + b)``; its
  binary code is ``u > 0.5 ⇔ z > 0``. Losses written for ±1 codes need ``2u − 1 = tanh(z / 2)``
  (the hashing losses take ``code_range="01"`` for that);
- ``"sign_ste"``: ``u = sgn(z) ∈ {−1, +1}^k`` exactly, with ``sgn(z) = +1 if z > 0 else −1`` (so
  ``sgn(0) = −1``, agreeing with bit = ``z > 0``), trained with the *clipped* straight-through
  estimator ``∂u/∂z = 1[|z| ≤ 1]`` (the identity inside ``[−1, 1]``, zero outside: the gradient
  of ``hardtanh``; Hubara et al. 2016, "Binarized Neural Networks").

:meth:`~hashlab.models.model.CodeModel.encode` takes the bits from the pre-activation,
``bit = z > 0``, for every activation. (Thresholding the *float* output instead can disagree
for the sigmoid head at ``|z| ≲ 2e−7`` in float32, where ``σ(z)`` rounds to 0.5 or across it.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hashlab.models.registry import HEADS

ACTIVATIONS = ("tanh", "sigmoid", "sign_ste")


@HEADS.register("embedding")
class EmbeddingHead(nn.Module):
    """Linear projection to a d-dimensional float embedding."""

    binary = False

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.dim = dim

    def pre_activation(self, features: torch.Tensor) -> torch.Tensor:
        """The code before any squashing; its signs are the bits of a hash head."""
        return self.proj(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class _SignSTE(torch.autograd.Function):
    """``sgn(z)`` with ``sgn(0) = −1`` forward; clipped straight-through ``g · 1[|z| ≤ 1]``
    backward."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        one = torch.ones((), dtype=z.dtype, device=z.device)
        return torch.where(z > 0, one, -one)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return grad * (z.abs() <= 1).to(grad.dtype)


def sign_ste(z: torch.Tensor) -> torch.Tensor:
    """``+1 where z > 0 else −1`` (so that it agrees with bit = ``z > 0``), with the clipped
    straight-through gradient ``∂/∂z = 1[|z| ≤ 1]`` (Hubara et al. 2016)."""
    return _SignSTE.apply(z)


@HEADS.register("hash")
class HashHead(EmbeddingHead):
    """k-bit hash layer: relaxed code ``u = act(W φ + b)``; bits = ``W φ + b > 0``.

    ``activation``: ``"tanh"`` (default, ``u ∈ (−1, 1)^k``), ``"sigmoid"`` (DPH's binary-like
    layer, ``u ∈ (0, 1)^k``) or ``"sign_ste"`` (``u ∈ {−1, 1}^k``, clipped straight-through
    gradient). See the module docstring.
    """

    binary = True

    def __init__(self, in_dim: int, dim: int, activation: str = "tanh") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        super().__init__(in_dim, dim)
        self.activation = activation

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.proj(features)
        if self.activation == "tanh":
            return torch.tanh(z)
        if self.activation == "sigmoid":
            return torch.sigmoid(z)
        return sign_ste(z)


