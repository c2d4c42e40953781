"""AADAH: Attention-Aware Deep Adversarial Hashing (Zhang, Lai & Feng, ECCV 2018).

Three modules per modality: **feature learning** (the tower: a CNN for images, an MLP over the
bag of words for texts), **attention** (a mask in ``[0, 1]`` that divides a representation into
an attended and an unattended part) and **hashing** (the hash layer, applied to both parts).
Attention and hashing are trained adversarially: the attention module tries to make the hashing
module *unable* to preserve the cross-modal similarities from the unattended features, while
the hashing module preserves them from the attended *and* the unattended features. Retrieval
codes are the signs of the attended codes.

Our reading (the paper gives the three modules and the adversarial roles; the layers and the
losses below are this implementation's choices, documented in ``docs/crossmodal.md``):

- **attention**: ``m = σ(W f + b) ∈ (0, 1)^d`` over a tower's feature vector ``f`` (one linear
  layer per modality); attended ``a = m ⊙ f``, unattended ``u = (1 − m) ⊙ f``, so
  ``a + u = f``.
- **hashing**: one hash layer ``h`` per modality, ``h(v) = tanh(W v + c)``, on both parts:
  ``F^a = h_x(a_x)``, ``F^u = h_x(u_x)`` (images), ``G^a``, ``G^u`` (texts).
- **similarity loss** of a batch of b codes against the other modality's memory of n attended
  codes (DCMH's memory): ``L(P; Q) = (1 / (b n)) Σ_{i,j} log(1 + e^{Θ_ij}) − S_ij Θ_ij``,
  ``Θ_ij = ½ P_iᵀ Q_j``.
- **hashing objective** (towers and hash layers; image side, texts alike)::

      L_H = J_x(F^a) + μ · L(F^u; G)

  with ``J_x`` DCMH's normalised batch loss (likelihood against the memory ``G``, quantization
  towards ``B``, bit balance), so AADAH with ``μ = 0`` and a mask fixed at 1 is DCMH.
- **attention objective** (attention module only; towers and hash layers fixed)::

      L_A = L(F^a; G) − λ · L(F^u; G)

  the unattended codes should fail (their similarity loss goes *up*) while the attended ones
  stay useful.
- **schedule** (:meth:`AADAH.adversarial_step`, DCMH's alternation around it): every batch of a
  modality's pass takes one hashing step (minimise ``L_H``; the batch's attended codes then
  refresh the memory), and every ``attention_every``-th batch then one attention step on the
  same batch (minimise ``L_A`` at the batch's features, with the just-updated hash layer). After
  the image and the text pass, ``B = sign(γ(F + G))`` as in DCMH.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from hashlab.crossmodal.base import CrossModalBatch, optimiser_step
from hashlab.crossmodal.dcmh import DCMH, pairwise_nll
from hashlab.crossmodal.registry import CROSSMODAL_METHODS
from hashlab.crossmodal.towers import MODALITIES, CrossModalNet, Modality, split_features
from hashlab.validation import check_int, check_nonnegative, check_real

__all__ = ["AADAH", "FeatureAttention", "similarity_loss", "split_features"]


class FeatureAttention(nn.Module):
    """Attention mask over a feature vector: ``m = σ(W f + b) ∈ (0, 1)^d``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(features))


def similarity_loss(codes: torch.Tensor, other: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """``L(P; Q)``: the cross-modal pairwise negative log-likelihood of ``[b, k]`` codes
    against ``[n, k]`` codes of the other modality, averaged over the ``b × n`` pairs."""
    return pairwise_nll(codes, other, S) / (codes.shape[0] * other.shape[0])


@CROSSMODAL_METHODS.register("aadah")
class AADAH(DCMH):
    """AADAH (Zhang, Lai & Feng, ECCV 2018): attention masks split the features; hashing
    preserves the similarities from both parts, attention adversarially defeats the unattended.

    ``gamma``, ``eta``: DCMH's weights on the attended codes; ``unattended_weight`` μ: the
    unattended similarity loss in the hashing objective; ``adversarial_weight`` λ: the
    unattended loss the attention step maximises; ``attention_every``: one attention step per
    this many hashing steps; ``attention_lr_factor``: the attention optimisers' learning rate
    as a factor of ``optim.lr``.
    """

    def __init__(self, dim: int, gamma: float = 1.0, eta: float = 0.01,
                 unattended_weight: float = 1.0, adversarial_weight: float = 1.0,
                 attention_every: int = 1, attention_lr_factor: float = 1.0) -> None:
        super().__init__(dim, gamma=gamma, eta=eta)
        self.unattended_weight = check_nonnegative(unattended_weight, "unattended_weight")
        self.adversarial_weight = check_nonnegative(adversarial_weight, "adversarial_weight")
        self.attention_every = check_int(attention_every, "attention_every")
        self.attention_lr_factor = check_real(attention_lr_factor, "attention_lr_factor")

    @classmethod
    def build_attention(cls, feature_dim: int) -> nn.Module:
        return FeatureAttention(feature_dim)

    def param_groups(self, net: CrossModalNet) -> Mapping[str, tuple[list[nn.Parameter], float]]:
        groups = dict(super().param_groups(net))
        for m in MODALITIES:
            groups[f"{m}-attention"] = (list(net.attention_parameters(m)),
                                        self.attention_lr_factor)
        return groups

    # ------------------------------------------------------------------ objectives
    @staticmethod
    def codes(net: CrossModalNet, modality: Modality, features: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(attended codes, unattended codes, mask) of a batch of features."""
        mask = net.attention[modality](features)
        attended, unattended = split_features(features, mask)
        return net.codes_of(modality, attended), net.codes_of(modality, unattended), mask

    def hashing_loss(self, net: CrossModalNet, modality: Modality, features: torch.Tensor,
                     idx: torch.Tensor, S: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """``L_H = J(attended) + μ L(unattended)``; returns (loss, its parts, attended codes)."""
        attended, unattended, _ = self.codes(net, modality, features)
        j = self.batch_loss(modality, attended, idx, S)
        u = similarity_loss(unattended, self.memory(modality)[1], S)
        parts = {"attended": float(j.detach()), "unattended": float(u.detach())}
        return j + self.unattended_weight * u, parts, attended

    def attention_loss(self, net: CrossModalNet, modality: Modality, features: torch.Tensor,
                       S: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``L_A = L(attended) − λ L(unattended)``; returns (loss, its parts)."""
        attended, unattended, mask = self.codes(net, modality, features)
        other = self.memory(modality)[1]
        a = similarity_loss(attended, other, S)
        u = similarity_loss(unattended, other, S)
        parts = {"attended_similarity": float(a.detach()),
                 "unattended_similarity": float(u.detach()),
                 "mask_mean": float(mask.detach().mean())}
        return a - self.adversarial_weight * u, parts

    # ------------------------------------------------------------------ schedule
    def adversarial_step(self, net: CrossModalNet, modality: Modality, inputs: torch.Tensor,
                         idx: torch.Tensor, optimizers: Mapping[str, torch.optim.Optimizer],
                         attention_step: bool = True) -> dict[str, float]:
        """One hashing step on a batch (tower + hash layer of ``modality`` minimise ``L_H``;
        the attended codes refresh the memory), then, if ``attention_step``, one attention
        step on the same batch (the attention module minimises ``L_A`` at the batch's
        features, towers and hash layer fixed). Returns the losses for the log."""
        S = self.similarity(idx)
        features = net.features(modality, inputs)
        loss, parts, attended = self.hashing_loss(net, modality, features, idx, S)
        optimiser_step(optimizers[modality], loss)
        self.remember(modality, idx, attended)
        logs = {"loss": float(loss.detach()), **parts}
        if attention_step:
            adversarial, attention_parts = self.attention_loss(net, modality, features.detach(),
                                                               S)
            optimiser_step(optimizers[f"{modality}-attention"], adversarial)
            logs.update({"attention_loss": float(adversarial.detach()), **attention_parts})
        return logs

    def train_batch(self, net: CrossModalNet, modality: Modality, batch: CrossModalBatch,
                    optimizers: Mapping[str, torch.optim.Optimizer], step: int
                    ) -> dict[str, float]:
        return self.adversarial_step(net, modality, batch.inputs(modality), batch.idx,
                                     optimizers, (step + 1) % self.attention_every == 0)
