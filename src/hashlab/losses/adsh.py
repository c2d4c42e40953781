"""ADSH (Jiang & Li, "Asymmetric Deep Supervised Hashing", AAAI 2018): the database codes are
variables learned by discrete optimisation, and only the query network is trained by SGD.

See ``docs/losses.md#adsh-adsh`` for the objective, the alternating schedule and how it maps
onto the trainer's hooks (``takes_indices``, ``on_train_data``, ``on_epoch_end``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hashlab.data.facts import TrainData
from hashlab.losses.factory import factory_for
from hashlab.losses.hashing import check_codes, check_labels
from hashlab.losses.registry import LOSSES
from hashlab.validation import check_choice, check_int, check_nonnegative

__all__ = ["ADSHLoss", "adsh_objective", "dcc_update"]


def _similarity(query_labels: torch.Tensor, database_labels: torch.Tensor,
                similar: float = 1.0, dissimilar: float = -1.0) -> torch.Tensor:
    """``S`` ``[m, n]``: ``similar`` where a query and a database item share a label (class ids
    or multi-hot rows), ``dissimilar`` elsewhere."""
    if query_labels.ndim == 1:
        same = query_labels[:, None] == database_labels[None, :]
    else:
        same = ((query_labels != 0).float() @ (database_labels != 0).float().T) > 0
    return same.double() * (similar - dissimilar) + dissimilar


def _similar_sum(labels: torch.Tensor, database_labels: torch.Tensor,
                 database_rows: torch.Tensor, similar: float = 1.0,
                 dissimilar: float = -1.0) -> torch.Tensor:
    """``Σ_j S_ij r_j`` for every ``i`` of ``labels`` over the ``database_rows`` ``r_j``. Class
    ids: ``(s⁺ − s⁻) · (sum over i's class) + s⁻ · (sum over all)``, O((m + n) k) with no
    ``m × n`` matrix; multi-hot labels: the explicit ``S @ R``."""
    if labels.ndim == 2:
        S = _similarity(labels, database_labels, similar, dissimilar)
        return S.to(database_rows) @ database_rows
    classes = max([int(t.max()) for t in (labels, database_labels) if t.numel()] or [0]) + 1
    by_class = database_rows.new_zeros(classes, database_rows.shape[1])
    by_class.index_add_(0, database_labels, database_rows)
    return (similar - dissimilar) * by_class[labels] + dissimilar * database_rows.sum(0)


def adsh_objective(u: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                   V: torch.Tensor, database_labels: torch.Tensor, gamma: float,
                   similar: float = 1.0, dissimilar: float = -1.0) -> torch.Tensor:
    """``Σ_{i ∈ Ω} Σ_j (u_iᵀ v_j − k S_ij)² + γ Σ_{i ∈ Ω} ‖v_{idx(i)} − u_i‖²`` for the query
    codes ``u`` ``[m, k]`` of the database items ``indices``, the database codes ``V`` ``[n, k]``
    and ``S_ij`` = ``similar`` / ``dissimilar``.

    With class ids the first sum is ``Σ_i u_iᵀ (VᵀV) u_i − 2k u_iᵀ r_i + k² Σ_j S_ij²`` with
    ``r_i = Σ_j S_ij v_j``: O(n k² + m k²) instead of O(m n k).
    """
    k = u.shape[1]
    V = V.to(u)
    if labels.ndim == 1:
        gram = V.T @ V
        r = _similar_sum(labels, database_labels, V, similar, dissimilar)
        classes = max([int(t.max()) for t in (labels, database_labels) if t.numel()] or [0]) + 1
        same = torch.bincount(database_labels, minlength=classes)[labels].to(u.dtype)
        s2 = same * similar**2 + (database_labels.shape[0] - same) * dissimilar**2
        square = ((u @ gram) * u).sum() - 2.0 * k * (u * r).sum() + k**2 * s2.sum()
    else:
        S = _similarity(labels, database_labels, similar, dissimilar).to(u)
        square = ((u @ V.T - k * S) ** 2).sum()
    return square + gamma * ((V[indices] - u) ** 2).sum()


def dcc_update(V: torch.Tensor, U: torch.Tensor, omega: torch.Tensor, labels: torch.Tensor,
               gamma: float, similar: float = 1.0, dissimilar: float = -1.0) -> torch.Tensor:
    """One sweep of ADSH's discrete cyclic coordinate descent over the bits of ``V``.

    Minimises :func:`adsh_objective` over ``V ∈ {−1, +1}^{n×k}`` one column at a time, the query
    codes ``U`` ``[m, k]`` of the database items ``omega`` (``[m]``) held fixed. With
    ``Q = −2k S̄ᵀU − 2γ Ū`` (``S̄`` the ``m × n`` similarities, ``Ū`` = ``U`` scattered into the
    rows ``omega`` of an ``n × k`` zero matrix), the objective is ``‖V Uᵀ‖² + tr(V Qᵀ) + const``,
    and the best column ``k`` given the others is ``V_{*k} = −sign(2 V̂_k Û_kᵀ U_{*k} + Q_{*k})``
    (``V̂_k``, ``Û_k``: the other columns; ``sign(0)`` taken as −1, i.e. ``V_{*k} = +1``).
    ``labels``: the labels of the ``n`` database items. Returns the new ``V`` (a new tensor).
    """
    V = V.clone().to(U)
    k = V.shape[1]
    # Σ_{i ∈ Ω} S_ij u_i for every database item j
    SU = _similar_sum(labels, labels[omega], U, similar, dissimilar)
    U_bar = torch.zeros_like(V)
    U_bar.index_add_(0, omega, U)
    Q = -2.0 * k * SU - 2.0 * gamma * U_bar
    for bit in range(k):
        others = [c for c in range(k) if c != bit]
        grad = 2.0 * V[:, others] @ (U[:, others].T @ U[:, bit]) + Q[:, bit]
        V[:, bit] = torch.where(grad > 0, -1.0, 1.0).to(V)
    return V


class ADSHLoss(nn.Module):
    """ADSH: asymmetric pairwise loss between the network's query codes and database codes ``V``
    that are variables, updated by discrete cyclic coordinate descent (details:
    ``docs/losses.md#adsh-adsh``).

    Jiang & Li 2018 (AAAI). The database is the training set; ``V`` ``[n, k]`` is a buffer
    (saved with checkpoints and the final model), zero until its first update and ±1 after. In
    each batch, the images are the sampled queries ``Ω`` and their codes ``u_i`` (the ``tanh``
    head's output) are trained on::

        L = (1/(nB)) [Σ_{i ∈ batch} Σ_{j=1}^{n} (u_iᵀ v_j − k S_ij)² + γ Σ_i ‖v_{idx(i)} − u_i‖²]

    The trainer passes each batch's dataset ``indices`` (``takes_indices``), the loss records the
    batch's codes, and at the end of every ``update_every``-th epoch (``on_epoch_end``) it
    updates ``V`` by one sweep of :func:`dcc_update` with the codes of the images seen since the
    last update. ``train.max_batches_per_epoch`` gives the paper's sampled anchors: each epoch
    then trains on a fresh random subset of the training set.

    - ``similarity``: ``"soft"`` (default, the authors' code): ``S_ij = 1`` for a shared label and
      ``−r`` otherwise, ``r`` = similar / dissimilar pairs of the training set, which balances the
      two kinds of pairs; ``"pm1"``: the paper's ``S_ij = ±1``;
    - ``gamma`` (default 200, the paper's) weighs ``v_{idx(i)} ≈ u_i``;
    - ``update_every`` (default 1): epochs per ``V`` update (the paper's ``T_in`` = 3 epochs over
      ``m = 2000`` sampled queries).

    The ``1 / (nB)`` scaling is the authors' code's. ``V`` starts at zero, as in their code.
    """

    takes_indices = True

    def __init__(self, gamma: float = 200.0, update_every: int = 1, similarity: str = "soft",
                 dim: int | None = None) -> None:
        super().__init__()
        self.gamma = check_nonnegative(gamma, "gamma")
        self.update_every = check_int(update_every, "update_every")
        self.similarity = check_choice("similarity", similarity, ("soft", "pm1"))
        self.dim = dim
        self.register_buffer("V", torch.empty(0, dim or 0))
        self.register_buffer("U", torch.empty(0, dim or 0))
        self.register_buffer("seen", torch.empty(0, dtype=torch.bool))
        self.register_buffer("database_labels", torch.empty(0, dtype=torch.long))
        self.register_buffer("dissimilar", torch.tensor(-1.0, dtype=torch.float64))

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, update_every={self.update_every}, "
                f"similarity={self.similarity!r}, n={self.V.shape[0]}")

    def on_train_data(self, data: TrainData) -> None:
        """Size ``V`` (zeros) for the ``n`` training images; count ``r`` for ``"soft"``."""
        labels = torch.as_tensor(np.asarray(data.labels, dtype=np.int64))
        if (labels < 0).any():
            raise ValueError("ADSH needs the label of every training image (found -1)")
        if self.dim is None:
            raise ValueError("ADSH needs the code length (dim)")
        n = labels.shape[0]
        dtype, device = self.V.dtype, self.V.device
        self.V = torch.zeros(n, self.dim, dtype=dtype, device=device)
        self.U = torch.zeros(n, self.dim, dtype=dtype, device=device)
        self.seen = torch.zeros(n, dtype=torch.bool, device=device)
        self.database_labels = labels.to(device)
        if self.similarity == "soft":
            similar_pairs = float((torch.bincount(labels).double() ** 2).sum())
            dissimilar_pairs = float(n) ** 2 - similar_pairs
            self.dissimilar.fill_(-similar_pairs / dissimilar_pairs if dissimilar_pairs else 0.0)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # the buffers are sized by the training set: take the stored sizes
        for name in ("V", "U", "seen", "database_labels"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor,
                indices: torch.Tensor | None = None) -> torch.Tensor:
        check_codes(codes, self.dim)
        check_labels(codes, labels, multi_hot=False)
        n = self.V.shape[0]
        if n == 0:
            raise RuntimeError("ADSH has no database codes yet: the trainer calls "
                               "on_train_data(data) before training (see docs/losses.md#adsh-adsh)")
        if indices is None:
            raise ValueError("ADSH needs the batch's dataset indices: loss(codes, labels, "
                             "indices=...)")
        indices = torch.as_tensor(indices, device=self.V.device).long()
        if indices.shape != (codes.shape[0],) or (
                indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n)):
            raise ValueError(f"indices: expected {codes.shape[0]} dataset indices in [0, {n})")
        u = codes.float() if codes.dtype in (torch.float16, torch.bfloat16) else codes
        if self.training:
            self.U[indices] = u.detach().to(self.U)
            self.seen[indices] = True
        total = adsh_objective(u, labels, indices, self.V, self.database_labels, self.gamma,
                               1.0, float(self.dissimilar))
        return total / (n * max(codes.shape[0], 1))

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """Update ``V`` (one DCC sweep) after every ``update_every``-th epoch (``epoch`` counts
        from 0), with the codes of the images seen since the last update."""
        if (epoch + 1) % self.update_every or not self.seen.any():
            return
        omega = self.seen.nonzero().squeeze(1)
        self.V = dcc_update(self.V, self.U[omega], omega, self.database_labels, self.gamma,
                            1.0, float(self.dissimilar))
        self.seen.zero_()


LOSSES.register("adsh")(factory_for(ADSHLoss))
