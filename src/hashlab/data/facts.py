"""What the training data provides to a method: the hook through which a loss (or a model)
learns the facts it needs (class count, attribute labels, ...) without the engine naming it.

A loss registered with ``needs=("attributes",)`` receives ``data=TrainData`` in its factory,
and any loss may define ``on_train_data(self, data: TrainData)``, called once before
training starts (e.g. to count positive labels). Two more hooks serve methods that keep
per-image state (ADSH's database codes): a loss with ``takes_indices = True`` is called as
``loss(codes, labels, indices=...)`` with the batch's positions in the training set, and
``on_epoch_end(self, epoch)`` is called after each epoch, before the checkpoint is written
(state kept in buffers is saved with it). The model's head gets the same two calls
(``on_train_data``, ``on_epoch_end``), and two more hooks: a head with ``takes_labels = True``
is called as ``head(features, labels=...)`` in training, and a tensor it leaves in
``head.aux_loss`` after a training forward is added to the loss (ExchNet's diversity terms). A
head with ``takes_feature_map = True`` reads the backbone's ``feature_map(x)`` instead of its
feature vector. Losses over very many classes have three more (``docs/scale.md``):
``predict(codes)`` (training accuracy without the ``[batch, classes]`` logits),
``check_optimizer(optimizer)`` (a ValueError for an optimiser the loss cannot train with) and
``sharded = True`` with ``gather_state_dict()`` (rank-local parameters under DDP: the engine
neither wraps nor averages them, and saves the gathered state). See ``docs/contributing.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TrainData"]


@dataclass(frozen=True)
class TrainData:
    """The training set as seen by a loss.

    Attributes:
        num_classes: number of classes.
        labels: int64 class ids ``[N]`` of the training images (``-1`` = category hidden).
        attributes: ``[N, p]`` attribute labels (1 = has it, 0 = has not, 2 = unknown), or None.
        attribute_names: the ``p`` attribute names, or None.
    """

    num_classes: int
    labels: np.ndarray
    attributes: np.ndarray | None = None
    attribute_names: list[str] | None = None

    def provides(self) -> frozenset[str]:
        """The optional facts present (the names a loss may list in ``needs``)."""
        return frozenset({"attributes"} if self.attributes is not None else ())

    @property
    def num_attributes(self) -> int:
        return 0 if self.attributes is None else int(self.attributes.shape[1])
