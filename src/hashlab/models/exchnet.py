"""ExchNet's head (Cui et al., "ExchNet: A Unified Hashing Network for Large-Scale Fine-Grained
Image Retrieval", ECCV 2020): attention parts of the backbone's feature map, refined local and
global features, two diversity losses, class anchors with feature exchange, and a hash layer.

The asymmetric hash learning of the paper (database codes as variables, alternating updates) is
the ``adsh`` loss; a config pairs them: ``model: {head: exchnet}``, ``loss: {name: adsh}``.
The head is where the paper's other parts live, through generic hooks of the model and trainer
(``takes_feature_map``, ``takes_labels``, ``aux_loss``, ``on_train_data``, ``on_epoch_end``;
see :mod:`hashlab.models.registry`). Formulas and choices: ``docs/losses.md#exchnet``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hashlab.data.facts import TrainData
from hashlab.models.registry import HEADS
from hashlab.validation import check_int, check_nonnegative

__all__ = ["ExchNetHead", "channel_diversity", "class_anchors", "exchange_parts",
           "spatial_diversity"]


def _mean_pairwise_hellinger(logits: torch.Tensor) -> torch.Tensor:
    """``(1 / C(M, 2)) Σ_{l<k} H(p_l, p_k)`` for the distributions ``p = softmax(logits)``
    ``[B, M, D]``, with the Hellinger distance ``H(p, q) = ‖√p − √q‖₂ / √2`` (in ``[0, 1]``);
    ``[B]``. ``√p`` is computed as ``exp(log_softmax / 2)``: a probability that underflows to 0
    would give ``√p`` an infinite gradient."""
    m = logits.shape[1]
    root = torch.exp(0.5 * torch.log_softmax(logits, dim=-1))
    left, right = torch.triu_indices(m, m, offset=1, device=logits.device)
    dist = torch.linalg.vector_norm(root[:, left] - root[:, right], dim=-1) / math.sqrt(2.0)
    return dist.mean(1)


def spatial_diversity(part_maps: torch.Tensor) -> torch.Tensor:
    """``L_sp`` per image, ``[B]``, of the refined part feature maps ``[B, M, C', H', W']``:
    each part's aggregation map (the sum over channels) becomes a distribution over the
    ``H'·W'`` positions by a softmax, and ``L_sp = 1 − mean over part pairs of their Hellinger
    distance``: 0 when the parts look at disjoint places, 1 when they all look alike."""
    if part_maps.ndim != 5 or part_maps.shape[1] < 2:
        raise ValueError(f"part_maps: expected [B, M >= 2, C, H, W], got "
                         f"{tuple(part_maps.shape)}")
    return 1.0 - _mean_pairwise_hellinger(part_maps.sum(2).flatten(2))


def channel_diversity(part_features: torch.Tensor, threshold: float) -> torch.Tensor:
    """``L_cp`` per image, ``[B]``, of the part features ``[B, M, C']``: ``p_j = softmax(f_j)``
    over the channels and ``L_cp = [t − mean over part pairs of H(p_l, p_k)]_+``."""
    if part_features.ndim != 3 or part_features.shape[1] < 2:
        raise ValueError(f"part_features: expected [B, M >= 2, C], got "
                         f"{tuple(part_features.shape)}")
    return torch.clamp(threshold - _mean_pairwise_hellinger(part_features), min=0.0)


def class_anchors(part_features: torch.Tensor, labels: torch.Tensor, num_classes: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of the part features ``[B, M, C']`` and the class counts: ``(sums
    [num_classes, M, C'], counts [num_classes])``; the anchors are ``sums / counts``."""
    sums = part_features.new_zeros(num_classes, *part_features.shape[1:])
    sums.index_add_(0, labels, part_features)
    counts = torch.bincount(labels, minlength=num_classes).to(part_features.dtype)
    return sums, counts


def exchange_parts(part_features: torch.Tensor, anchors: torch.Tensor, prob: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap each part feature of each image for its class anchor with probability ``prob``:
    ``f̂_j = c_{y}^j`` where ``ξ_j = 1``, else ``f_j``, with ``ξ_j ~ Bernoulli(prob)`` drawn
    per image and part. ``anchors``: the anchors of each image's class ``[B, M, C']``.
    Returns the features and the exchange mask ``[B, M]``."""
    draw = torch.rand(part_features.shape[:2], generator=generator,
                      device=part_features.device if generator is None else "cpu")
    swap = (draw < prob).to(part_features.device)
    return torch.where(swap[..., None], anchors.to(part_features), part_features), swap


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@HEADS.register("exchnet")
class ExchNetHead(nn.Module):
    """ExchNet's representation, alignment and hashing layers over a feature map ``E``
    ``[B, C, H, W]`` (details: ``docs/losses.md#exchnet``).

    - attention: ``A = σ(conv1×1(E))`` ``[B, M, H, W]``; part ``j`` sees ``E ⊗ A_j``;
    - local feature refinement (one 3×3 conv-BN-ReLU block shared by the parts) and global
      feature refinement (another), each followed by global average pooling: part features
      ``f_j`` and ``f_global`` ``∈ R^{C'}``;
    - in training (with labels): ``aux_loss = λ mean L_sp + γ mean L_cp`` over the batch, the
      part features are added to their class's running sums, and, once anchors exist (after the
      first epoch), each part is exchanged with its class anchor with probability
      ``exchange_prob``; ``on_epoch_end`` turns the sums into the anchors;
    - the code: ``u = tanh(W BN([f̂_1; …; f̂_M; f_global]) + b)`` (the BatchNorm is our
      addition: without it the shared recipe collapsed); bits = pre-activation > 0 (encoding
      never exchanges).

    Args: ``parts`` M (≥ 2), ``local_dim`` C' (default: C), ``exchange_prob`` (0.5),
    ``spatial_weight`` λ, ``channel_weight`` γ, ``threshold`` t of ``L_cp`` (in [0, 1]).
    """

    binary = True
    takes_feature_map = True
    takes_labels = True

    def __init__(self, in_dim: int, dim: int, parts: int = 4, local_dim: int | None = None,
                 exchange_prob: float = 0.5, spatial_weight: float = 1.0,
                 channel_weight: float = 1.0, threshold: float = 0.5) -> None:
        super().__init__()
        check_int(parts, "parts", minimum=2)
        local = in_dim if local_dim is None else check_int(local_dim, "local_dim", minimum=1)
        if not 0.0 <= exchange_prob <= 1.0:
            raise ValueError(f"exchange_prob must be in [0, 1], got {exchange_prob}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        check_nonnegative(spatial_weight, "spatial_weight")
        check_nonnegative(channel_weight, "channel_weight")
        self.dim, self.parts, self.local_dim = dim, parts, local
        self.exchange_prob, self.threshold = float(exchange_prob), float(threshold)
        self.spatial_weight, self.channel_weight = float(spatial_weight), float(channel_weight)
        self.attention = nn.Conv2d(in_dim, parts, 1)
        self.local_refine = _conv_bn_relu(in_dim, local)
        self.global_refine = _conv_bn_relu(in_dim, local)
        # the concatenated features are batch-normalised before the hash layer, as the plain
        # hash head's features are (the backbone's fc ends in a BatchNorm)
        self.norm = nn.BatchNorm1d((parts + 1) * local)
        self.hash = nn.Linear((parts + 1) * local, dim)
        # anchors [classes, M, C'] and whether each class has one; sized by on_train_data
        self.register_buffer("anchors", torch.zeros(0, parts, local))
        self.register_buffer("has_anchor", torch.zeros(0, dtype=torch.bool))
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        #: the diversity losses of the last training forward (added by the trainer)
        self.aux_loss: torch.Tensor | None = None

    # -- hooks ----------------------------------------------------------------------------

    def on_train_data(self, data: TrainData) -> None:
        """Size the anchors by the number of classes (before training)."""
        n = int(data.num_classes)
        if self.anchors.shape[0] < n:
            self._grow(n)

    def _grow(self, n: int) -> None:
        """Room for ``n`` classes (anchors, their flags and this epoch's sums)."""
        extra = n - self.anchors.shape[0]
        self.anchors = torch.cat([self.anchors, self.anchors.new_zeros(
            extra, self.parts, self.local_dim)])
        self.has_anchor = torch.cat([self.has_anchor, self.has_anchor.new_zeros(extra)])
        if self._sums is not None and self._counts is not None:
            self._sums = torch.cat([self._sums, self._sums.new_zeros(
                extra, *self._sums.shape[1:])])
            self._counts = torch.cat([self._counts, self._counts.new_zeros(extra)])

    def on_epoch_end(self, epoch: int) -> None:
        """The anchors become the mean part features of each class over the epoch (classes
        not seen this epoch keep theirs)."""
        if self._sums is None or self._counts is None:
            return
        seen = self._counts > 0
        means = self._sums / self._counts.clamp(min=1)[:, None, None]
        self.anchors = torch.where(seen[:, None, None], means.to(self.anchors), self.anchors)
        self.has_anchor = self.has_anchor | seen.to(self.has_anchor.device)
        self._sums = self._counts = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        for name in ("anchors", "has_anchor"):  # sized by the training set: the stored sizes
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the network ----------------------------------------------------------------------

    def features(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
        """``(part maps [B, M, C', H', W'], part features [B, M, C'], global [B, C'])``."""
        if feature_map.ndim != 4:
            raise ValueError(f"ExchNet needs a feature map [B, C, H, W], got "
                             f"{tuple(feature_map.shape)}")
        b = feature_map.shape[0]
        attention = torch.sigmoid(self.attention(feature_map))
        parts = feature_map[:, None] * attention[:, :, None]  # [B, M, C, H, W]
        maps = self.local_refine(parts.flatten(0, 1))
        maps = maps.view(b, self.parts, *maps.shape[1:])
        glob = self.global_refine(feature_map).mean((2, 3))
        return maps, maps.mean((3, 4)), glob

    def _code(self, part_features: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        return self.hash(self.norm(torch.cat([part_features.flatten(1), glob], dim=1)))

    def pre_activation(self, feature_map: torch.Tensor) -> torch.Tensor:
        _, f, glob = self.features(feature_map)
        return self._code(f, glob)

    def forward(self, feature_map: torch.Tensor, labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        maps, f, glob = self.features(feature_map)
        self.aux_loss = None
        if self.training and labels is not None:
            labels = labels.long()
            self.aux_loss = (self.spatial_weight * spatial_diversity(maps).mean()
                             + self.channel_weight * channel_diversity(f, self.threshold).mean())
            known = labels >= 0  # -1: the class is hidden
            if bool(known.any()) and int(labels.max()) >= self.anchors.shape[0]:
                self._grow(int(labels.max()) + 1)  # without on_train_data: as classes appear
            sums, counts = class_anchors(f.detach()[known].double(), labels[known],
                                         self.anchors.shape[0])
            if self._sums is None or self._counts is None:
                self._sums, self._counts = sums, counts
            else:
                self._sums, self._counts = self._sums + sums, self._counts + counts
            safe = labels.clamp(min=0)
            anchored = known & self.has_anchor[safe] if self.anchors.shape[0] else known & False
            if self.exchange_prob > 0 and bool(anchored.any()):
                swapped, _ = exchange_parts(f, self.anchors[safe], self.exchange_prob)
                f = torch.where(anchored[:, None, None], swapped, f)
        return torch.tanh(self._code(f, glob))
