"""The interface of a cross-modal hashing method (one module per method, registered in
:data:`~hashlab.crossmodal.registry.CROSSMODAL_METHODS`).

The generic trainer (:class:`~hashlab.crossmodal.trainer.CrossModalTrainer`) builds the
:class:`~hashlab.crossmodal.towers.CrossModalNet` (asking the method for attention modules),
then the method as ``factory(dim=bits, **method.args)``, calls :meth:`CrossModalMethod.bind` with
the training labels, builds one optimiser per entry of :meth:`CrossModalMethod.param_groups` and
then, every epoch, for each modality of :attr:`CrossModalMethod.passes` in turn, calls
:meth:`CrossModalMethod.train_batch` on every batch of a seeded shuffle of the training items,
then :meth:`CrossModalMethod.end_epoch`. Everything a method must keep across epochs lives in its
buffers (its ``state_dict`` is saved in every checkpoint), so that resuming is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hashlab.crossmodal.towers import MODALITIES, CrossModalNet, Modality

__all__ = ["CrossModalBatch", "CrossModalMethod", "cross_modal_similarity", "optimiser_step"]


class CrossModalBatch:
    """One batch of training items: ``idx`` (positions in the training set, on the device)
    and their images / texts, loaded on first use (a pass over images never reads texts)."""

    def __init__(self, data: Any, idx: torch.Tensor, device: torch.device) -> None:
        self.data = data
        self.idx = idx.to(device)
        self._cpu_idx = idx.cpu()
        self.device = device
        self._inputs: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return int(self.idx.numel())

    def inputs(self, modality: Modality) -> torch.Tensor:
        """The batch's images ``[B, C, H, W]`` or bags of words ``[B, V]`` (float32)."""
        if modality not in self._inputs:
            if modality == "image":
                x, _ = self.data.images.get_batch(self._cpu_idx)
            else:
                x = self.data.text_batch(self._cpu_idx.numpy())
            self._inputs[modality] = x.to(self.device)
        return self._inputs[modality]


def cross_modal_similarity(labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``S [b, n]`` (float 0/1): ``S_ij = 1`` iff item ``idx[i]`` and item ``j`` share a label
    (multi-hot ``labels [n, L]``). The image of one item and the text of another are relevant
    exactly when the items are, so one matrix serves both directions."""
    y = (labels != 0).to(torch.float32)
    return ((y[idx] @ y.T) > 0).to(torch.float32)


def optimiser_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Clear the optimiser's gradients, back-propagate ``loss`` and take one step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class CrossModalMethod(nn.Module):
    """Base class of a cross-modal method: the hooks the generic trainer calls.

    Subclasses are registered with ``@CROSSMODAL_METHODS.register("name")`` and built as
    ``cls(dim=bits, **method.args)``.
    """

    #: the modalities trained one after the other in each epoch (DCMH's alternation)
    passes: tuple[Modality, ...] = MODALITIES

    def __init__(self, dim: int) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a number of bits >= 1, got {dim!r}")
        self.dim = dim

    @classmethod
    def build_attention(cls, feature_dim: int) -> nn.Module | None:
        """The attention module of a modality with ``feature_dim`` features (a module mapping
        features to a mask in ``[0, 1]^feature_dim``), or None (the default: no attention)."""
        return None

    def bind(self, labels: torch.Tensor, generator: torch.Generator) -> None:
        """Called once before training (and before a checkpoint is loaded): the training
        labels (multi-hot ``[n, L]``, on the device) and a seeded CPU generator for any random
        initial state (memory matrices, ...)."""
        raise NotImplementedError

    def param_groups(self, net: CrossModalNet) -> Mapping[str, tuple[list[nn.Parameter], float]]:
        """``name -> (parameters, learning-rate factor)``: one optimiser is built per entry.
        Default: one per modality (its tower and hash layer), at the configured rate."""
        return {m: (list(net.modality_parameters(m)), 1.0) for m in MODALITIES}

    def train_batch(self, net: CrossModalNet, modality: Modality, batch: CrossModalBatch,
                    optimizers: Mapping[str, torch.optim.Optimizer], step: int
                    ) -> dict[str, float]:
        """Train on one batch of the ``modality`` pass (``step``: its position in the pass);
        returns the numbers to log, at least ``"loss"``."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> None:
        """Called after every pass of an epoch, before its checkpoint is written."""
