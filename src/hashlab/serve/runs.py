"""The runs ``hashlab serve`` can serve, behind one interface: :func:`open_served_run`.

An image run (:class:`~hashlab.encode.TrainedRun`) is served as it is. A cross-modal run
(:class:`~hashlab.crossmodal.trainer.CrossModalRun`) is wrapped in :class:`CrossModalServed`,
which gives :class:`~hashlab.serve.state.ServeState` the same few things (the model's code
width and image encoder, a split's images and codes, the class names) for the modality of the
served index, plus what only a cross-modal run has: text queries, and the text and labels of an
item. Its items are the pairs of one split; the index holds their image codes or their text
codes (``hashlab index RUN --modality image|text``). See ``docs/serve.md#cross-modal-runs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CrossModalServed", "ServedCodes", "open_served_run"]


@dataclass
class ServedCodes:
    """The codes of a split as the server needs them (the fields of
    :class:`~hashlab.encode.Codes` that it reads)."""

    float: np.ndarray
    bits: np.ndarray | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


class _ImageEncoder:
    """The image tower of a cross-modal network, shaped like an image run's model: ``binary``,
    ``dim`` and ``encode_all(images) -> (float codes, packed bits)``."""

    binary = True

    def __init__(self, net: Any) -> None:
        self.net, self.dim = net, int(net.dim)

    def encode_all(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self.net.encode("image", x, "float"), self.net.encode("image", x, "binary")


class CrossModalServed:
    """A cross-modal run as the server sees it; ``modality``: what the served codes are of
    (``image`` or ``text``). Queries may be images or texts either way: both towers hash into
    one Hamming space."""

    cross_modal = True

    def __init__(self, run_dir: str | Path, modality: str = "image") -> None:
        from hashlab.crossmodal.trainer import CrossModalRun

        if modality not in ("image", "text"):
            raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
        self.xrun = CrossModalRun(run_dir)
        self.modality = modality
        self.run_dir, self.model_sha256 = self.xrun.run_dir, self.xrun.model_sha256
        self.device = self.xrun.device
        self.model = _ImageEncoder(self.xrun.net)
        self._splits: dict[str, Any] = {}
        self.meta: dict[str, Any] = {**self.xrun.meta, "image_shape": list(self.xrun.image_shape)}

    def paired(self, split: str) -> Any:
        """The split's :class:`~hashlab.data.paired.PairedData` (loaded once)."""
        if split not in self._splits:
            self._splits[split] = self.xrun.load_split(split)
        return self._splits[split]

    def load_split(self, split: str) -> Any:
        """The split's images (an :class:`~hashlab.data.arrays.ArrayDataset`: thumbnails and
        the normalisation of uploaded query images)."""
        return self.paired(split).images

    def class_names(self, split: str) -> list[str]:
        """Names of the item labels the server reports: the dataset's classes where it has
        single classes, else its label names (an item's label is then its first label)."""
        data = self.paired(split)
        if data.classes is not None and data.images.classes:
            return list(data.images.classes)
        return list(data.label_names)

    def encode(self, split: str, progress: bool = False) -> ServedCodes:
        """The served modality's packed bits of a split, and the items' labels."""
        data = self.paired(split)
        bits = (self.xrun.encode_images(data) if self.modality == "image"
                else self.xrun.encode_texts(data))
        labels = np.asarray(data.images.labels, dtype=np.int64)
        return ServedCodes(np.zeros((len(data), 0), np.float32), bits, labels)

    # -- what only a cross-modal run has ----------------------------------------------------

    @property
    def vocabulary_size(self) -> int:
        """Words of the text encoder's vocabulary."""
        return len(self.xrun.vocabulary)

    def text_code(self, text: str) -> tuple[np.ndarray, list[str]]:
        """The packed bits of a text query, and warnings (words not in the vocabulary).
        :class:`~hashlab.errors.HashlabError` when no word of it is known."""
        from hashlab.crossmodal.search import encode_text_queries

        bits, warnings = encode_text_queries(self.xrun, [text], what="text")
        return bits[0], warnings

    def item_text(self, split: str, i: int) -> str | None:
        """The text of item ``i`` of a text index: its sentence, else the words of its bag of
        words; None for an image index."""
        if self.modality != "text":
            return None
        from hashlab.crossmodal.search import item_text

        return item_text(self.paired(split), i)

    def item_labels(self, split: str, i: int) -> list[str]:
        """The names of item ``i``'s labels (multi-hot)."""
        data = self.paired(split)
        return [n for n, on in zip(data.label_names, data.labels[i], strict=True) if on]


def open_served_run(run_dir: str | Path, modality: str | None = None) -> Any:
    """The run at ``run_dir`` for serving: a :class:`~hashlab.encode.TrainedRun`, or a
    :class:`CrossModalServed` for a cross-modal run (``modality`` of the served index; default
    ``image``). A modality for an image run is an error."""
    from hashlab.crossmodal.trainer import is_crossmodal_run
    from hashlab.errors import HashlabError

    if is_crossmodal_run(run_dir):
        return CrossModalServed(run_dir, modality or "image")
    if modality not in (None, "image"):
        raise HashlabError(f"the index holds {modality} codes, but {run_dir} is an image run "
                           "(not cross-modal)")
    from hashlab.encode import TrainedRun

    return TrainedRun(run_dir)
