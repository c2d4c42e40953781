"""The losses of Born-Again Networks (Furlanello et al., ICML 2018): a student generation learns
from the outputs of the previous one, identically shaped and freshly initialised.

- :func:`ban_loss` — BAN: cross-entropy between the student and the teacher's distribution
  (``T = 1`` as in the paper, no softening; ``T > 1`` as an extension, scaled by ``T²``);
- :func:`ban_l_loss` — BAN+L: the label cross-entropy plus the BAN term;
- :func:`cwtm_loss` — CWTM (confidence-weighted by teacher max): the label cross-entropy of each
  sample weighted by the teacher's maximum probability, normalised over the batch;
- :func:`dkpp_loss` — DKPP (dark-knowledge with permuted predictions): the BAN term against
  teacher distributions whose non-argmax entries are permuted within each sample;
- :func:`ensemble_probabilities` — BANE: the average of the generations' softmax outputs.

Teacher outputs are never differentiated. Formulas: ``docs/data-and-models.md#recipes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ban_l_loss", "ban_loss", "cwtm_loss", "dkpp_loss", "dkpp_targets",
           "ensemble_probabilities"]


def _check(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(f"student and teacher logits must both be [B, C], got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")


def _soft_cross_entropy(student: torch.Tensor, target: torch.Tensor, temperature: float
                        ) -> torch.Tensor:
    """``mean_b −Σ_c target_bc log softmax(student_b / T)_c``, times ``T²`` (the gradient scale
    of Hinton et al.; 1 at ``T = 1``)."""
    log_q = F.log_softmax(student / temperature, dim=1)
    return -(target * log_q).sum(1).mean() * temperature**2


def ban_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0
             ) -> torch.Tensor:
    """BAN: ``mean_b −Σ_c p_bc log q_bc`` with ``p = softmax(teacher / T)`` (detached) and
    ``q = softmax(student / T)``, times ``T²``. At ``T = 1`` its gradient in the student logits
    is ``(q − p) / B`` per sample."""
    _check(student, teacher)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = F.softmax(teacher.detach() / temperature, dim=1)
    return _soft_cross_entropy(student, p, temperature)


def ban_l_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """BAN+L: ``CE(student, labels) + ban_loss(student, teacher, T)``."""
    return F.cross_entropy(student, labels) + ban_loss(student, teacher, temperature)


def cwtm_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
              ) -> torch.Tensor:
    """CWTM: ``Σ_b w_b CE(student_b, y_b)`` with ``w_b = max_c p_bc / Σ_u max_c p_uc`` (the
    teacher's confidence, normalised over the batch, detached)."""
    _check(student, teacher)
    confidence = F.softmax(teacher.detach(), dim=1).max(1).values
    weights = confidence / confidence.sum()
    return (weights * F.cross_entropy(student, labels, reduction="none")).sum()


def dkpp_targets(teacher_probs: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """The teacher's distributions with the argmax entry of each row kept in place and the other
    ``C − 1`` entries permuted within the row, a fresh permutation per row."""
    if teacher_probs.ndim != 2:
        raise ValueError(f"teacher_probs must be [B, C], got {tuple(teacher_probs.shape)}")
    b, c = teacher_probs.shape
    top = teacher_probs.argmax(1)
    # for every row: the column order with the argmax first, then the others permuted
    keys = torch.rand(b, c, generator=generator).to(teacher_probs.device)
    keys[torch.arange(b), top] = -1.0  # sorts first
    order = keys.argsort(1)  # order[:, 0] = top; order[:, 1:] = the others, shuffled
    others = torch.ones_like(teacher_probs, dtype=torch.bool)
    others[torch.arange(b), top] = False
    sources = teacher_probs[others].view(b, c - 1)  # the non-argmax entries, in column order
    out = teacher_probs.clone()
    dest = order[:, 1:]  # where each non-argmax value goes
    out.scatter_(1, dest, sources)
    return out


def dkpp_loss(student: torch.Tensor, teacher: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """DKPP: the BAN term (``T = 1``) against :func:`dkpp_targets` of the teacher's softmax:
    the teacher's confidence in its argmax and the shape of its distribution are kept, its
    class-to-class similarities destroyed."""
    _check(student, teacher)
    targets = dkpp_targets(F.softmax(teacher.detach(), dim=1), generator)
    return _soft_cross_entropy(student, targets, 1.0)


def ensemble_probabilities(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """BANE: ``(1/k) Σ_i softmax(z_i)`` over the ``k`` generations' logits ``[B, C]``."""
    if not logits:
        raise ValueError("ensemble_probabilities needs the logits of at least one model")
    shape = logits[0].shape
    if any(z.shape != shape for z in logits):
        raise ValueError(f"every model's logits must have the shape {tuple(shape)}")
    return torch.stack([F.softmax(z, dim=1) for z in logits]).mean(0)
