"""Cross-modal hashing: images and texts hashed into one Hamming space, so that a text query
finds images and an image query finds texts (DCMH, AADAH). See ``docs/crossmodal.md``.

- :class:`~hashlab.crossmodal.trainer.CrossModalTrainer` trains a
  :class:`~hashlab.crossmodal.config.CrossModalConfig` on a paired dataset;
- :class:`~hashlab.crossmodal.trainer.CrossModalRun` loads a trained run and encodes images
  and bags of words into packed bits;
- methods register in :data:`~hashlab.crossmodal.registry.CROSSMODAL_METHODS`.
"""

from hashlab.crossmodal.config import CrossModalConfig, load_crossmodal_config
from hashlab.crossmodal.registry import CROSSMODAL_METHODS
from hashlab.crossmodal.trainer import CrossModalRun, CrossModalTrainer, train_crossmodal

__all__ = [
    "CROSSMODAL_METHODS",
    "CrossModalConfig",
    "CrossModalRun",
    "CrossModalTrainer",
    "load_crossmodal_config",
    "train_crossmodal",
]
