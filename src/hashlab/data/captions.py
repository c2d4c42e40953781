"""``fmnist-captions``: Fashion-MNIST images paired with generated English captions.

Every one of the 70,000 Fashion-MNIST images (the 60,000 training images are items 0..59,999,
the 10,000 test images items 60,000..69,999) gets a short description made from its class and
the class's attributes in the shipped table ``configs/fmnist/attributes.csv``: one of several
sentence templates, a synonym of the class name (:data:`CLASS_NOUNS`), a random subset of the
class's attributes, each said one of several ways (:data:`ATTRIBUTE_PHRASES`, before or after
the noun), optional extra words (:data:`EXTRA_WORDS`, :data:`CONTEXTS`) and word dropout. The
class noun is never dropped, so every caption names its class (by a synonym).

A caption is a pure function of ``(seed, item index, class)`` (:func:`make_caption`): its random
choices come from ``random.Random((seed << 32) | index)``, using only ``random()``, whose
sequence Python keeps stable across versions. Captions are therefore reproducible and do not
depend on which items are generated, or in what order.

Labels are multi-hot ``[class one-hot (10) | attributes (10)]``: two items are relevant when
they share the class or an attribute (MIRFLICKR-style multi-label relevance). See
``docs/data-and-models.md``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np

from hashlab.data.arrays import ArrayDataset, resize_images
from hashlab.data.attributes import AttributeTable, read_class_attributes
from hashlab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
)
from hashlab.data.paired import SPLITS, PairedData
from hashlab.data.registry import PAIRED_DATASETS
from hashlab.data.text import bag_of_words, build_vocabulary, resolve_vocabulary
from hashlab.errors import DataError

__all__ = [
    "ATTRIBUTE_PHRASES",
    "CLASS_NOUNS",
    "N_TEST",
    "N_TRAIN",
    "caption_labels",
    "fmnist_captions_loader",
    "fmnist_captions_splits",
    "generate_captions",
    "make_caption",
]

#: Fashion-MNIST's training images are items 0..N_TRAIN-1, its test images the next N_TEST
N_TRAIN = 60_000
N_TEST = 10_000

#: class name -> the noun phrases that name it (one is chosen per caption; never dropped)
CLASS_NOUNS: dict[str, tuple[str, ...]] = {
    "T-shirt/top": ("t-shirt", "tee", "top"),
    "Trouser": ("pair of trousers", "pair of pants", "pair of slacks"),
    "Pullover": ("pullover", "sweater", "jumper"),
    "Dress": ("dress", "frock", "gown"),
    "Coat": ("coat", "jacket", "overcoat"),
    "Sandal": ("sandal", "flip-flop", "slide"),
    "Shirt": ("shirt", "blouse", "button-down"),
    "Sneaker": ("sneaker", "trainer", "running shoe"),
    "Bag": ("bag", "handbag", "purse"),
    "Ankle boot": ("ankle boot", "boot", "bootie"),
}

#: attribute -> ways to say it: ("pre", adjective before the noun) or ("post", phrase after it)
ATTRIBUTE_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "upper_body": (("post", "for the upper body"), ("post", "worn on the torso")),
    "lower_body": (("post", "for the legs"), ("post", "worn below the waist")),
    "footwear": (("post", "for the feet"), ("post", "to wear on your feet")),
    "bag": (("post", "for carrying things"), ("post", "to carry your belongings")),
    "sleeves": (("pre", "sleeved"), ("post", "with sleeves")),
    "long_sleeves": (("pre", "long-sleeved"), ("post", "with long sleeves")),
    "front_opening": (("pre", "open-front"), ("post", "with buttons down the front"),
                      ("post", "that opens at the front")),
    "closed_toe": (("pre", "closed-toe"), ("post", "with a closed toe")),
    "ankle_high": (("pre", "ankle-high"), ("post", "reaching the ankle")),
    "warm": (("pre", "warm"), ("pre", "cosy"), ("post", "for cold weather")),
}

#: sentence templates; ``{np}`` is the noun phrase with its article
TEMPLATES: tuple[str, ...] = (
    "{np}",
    "a photo of {np}",
    "a picture showing {np}",
    "this is {np}",
    "here we see {np}",
    "product image of {np}",
)
#: optional adjectives unrelated to the labels
EXTRA_WORDS: tuple[str, ...] = (
    "plain", "simple", "casual", "classic", "dark", "light", "grey", "black", "white",
    "patterned", "striped", "stylish", "everyday", "basic",
)
#: optional trailing phrases unrelated to the labels
CONTEXTS: tuple[str, ...] = (
    "on a plain background", "in a product photo", "seen from the front", "in black and white",
    "for sale online", "in a small greyscale picture",
)
#: an attribute not mentioned when the class has the one that implies it
IMPLIED_BY: dict[str, str] = {"sleeves": "long_sleeves"}
ATTRIBUTE_RATE = 0.7  # each of the class's attributes is mentioned with this probability
EXTRA_RATE = 0.5
CONTEXT_RATE = 0.35


def _pick(u: float, options: Sequence[str] | Sequence[tuple[str, str]]) -> int:
    return min(int(u * len(options)), len(options) - 1)


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def make_caption(
    class_name: str,
    attributes: Sequence[str],
    index: int,
    seed: int = 0,
    dropout: float = 0.1,
) -> str:
    """The caption of item ``index`` of class ``class_name`` having ``attributes``.

    A pure function: the same arguments always give the same caption. Each word outside the
    class noun is dropped with probability ``dropout``; the class noun never is.
    """
    if seed < 0 or index < 0 or index >= 1 << 32:
        raise DataError(f"captions need seed >= 0 and 0 <= index < 2**32, got {seed}, {index}")
    u = random.Random((int(seed) << 32) | int(index)).random
    template = TEMPLATES[_pick(u(), TEMPLATES)]
    nouns = CLASS_NOUNS.get(class_name, (class_name.lower(),))
    noun = nouns[_pick(u(), nouns)]
    pre: list[str] = []
    post: list[str] = []
    for name in attributes:  # two draws per attribute, used or not: choices stay aligned
        include, which = u(), u()
        options = ATTRIBUTE_PHRASES.get(name, (("post", "with " + name.replace("_", " ")),))
        if include < ATTRIBUTE_RATE and IMPLIED_BY.get(name) not in attributes:
            kind, phrase = options[_pick(which, options)]
            (pre if kind == "pre" else post).append(phrase)
    extra, which_extra = u(), u()
    if extra < EXTRA_RATE:
        pre.insert(0, EXTRA_WORDS[_pick(which_extra, EXTRA_WORDS)])
    context, which_context = u(), u()
    before, _, after = template.partition("{np}")
    parts = [  # (words, protected from dropout)
        (before.split(), False),
        ([_article((pre or [noun])[0]), *" ".join(pre).split()], False),
        (noun.split(), True),
        (" and ".join(post).split(), False),
        (CONTEXTS[_pick(which_context, CONTEXTS)].split() if context < CONTEXT_RATE else [],
         False),
        (after.split(), False),
    ]
    # word dropout last, so that it never changes the choices above
    words = [w for ws, keep in parts for w in ws if keep or not u() < dropout]
    return " ".join(words)


def generate_captions(
    classes: Sequence[int] | np.ndarray,
    indices: Sequence[int] | np.ndarray,
    seed: int = 0,
    dropout: float = 0.1,
    table: AttributeTable | None = None,
) -> list[str]:
    """Captions of the items ``indices`` whose class ids are ``classes``, from ``table``
    (default: the shipped Fashion-MNIST attribute table)."""
    table = read_class_attributes("fmnist") if table is None else table
    if not 0.0 <= float(dropout) < 1.0:
        raise DataError(f"dropout must be in [0, 1), got {dropout}")
    classes = np.asarray(classes, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if classes.shape != indices.shape or classes.ndim != 1:
        raise DataError(f"classes {classes.shape} and indices {indices.shape} must be equal 1-D")
    attrs = [[n for n, v in zip(table.names, row, strict=True) if v] for row in table.matrix]
    return [make_caption(table.classes[c], attrs[c], int(i), seed, dropout)
            for c, i in zip(classes.tolist(), indices.tolist(), strict=True)]


def caption_labels(classes: np.ndarray, table: AttributeTable) -> np.ndarray:
    """uint8 ``[N, C + p]``: the class one-hot, then the class's attributes."""
    classes = np.asarray(classes, dtype=np.int64)
    one_hot = np.eye(len(table.classes), dtype=np.uint8)[classes]
    return np.concatenate([one_hot, table.for_labels(classes).astype(np.uint8)], axis=1)


def fmnist_captions_splits(seed: int = 0, n_query: int = 2000,
                           n_train: int = 10000) -> dict[str, np.ndarray]:
    """Item indices (sorted) of each split: ``query`` = ``n_query`` test images, ``database``
    = the 60,000 training images, ``train`` = ``n_train`` of the database.

    One ``numpy.random.default_rng(seed)`` draws a permutation of the test images, then one of
    the training images; the splits take their first ``n_query`` / ``n_train`` entries (so a
    smaller split is a subset of a larger one, and ``train`` does not depend on ``n_query``)."""
    if not 0 < n_query <= N_TEST:
        raise DataError(f"n_query must be in 1..{N_TEST}, got {n_query}")
    if not 0 < n_train <= N_TRAIN:
        raise DataError(f"n_train must be in 1..{N_TRAIN}, got {n_train}")
    rng = np.random.default_rng(seed)
    test_order = rng.permutation(N_TEST)
    train_order = rng.permutation(N_TRAIN)
    return {
        "query": np.sort(test_order[:n_query]) + N_TRAIN,
        "database": np.arange(N_TRAIN, dtype=np.int64),
        "train": np.sort(train_order[:n_train]),
    }


@PAIRED_DATASETS.register("fmnist-captions")
def fmnist_captions_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_query: int = 2000,
    n_train: int = 10000,
    dropout: float = 0.1,
    min_count: int = 1,
    vocabulary: Sequence[str] | str | os.PathLike[str] | None = None,
    normalize: bool = True,
    image_size: int | tuple[int, int] | None = None,
    download: bool = True,
) -> PairedData:
    """Fashion-MNIST images with generated captions; labels = class + its 10 attributes.

    Splits: ``query`` = ``n_query`` seeded test images, ``database`` = the 60,000 training
    images, ``train`` = ``n_train`` seeded database images. The vocabulary is built from the
    ``train`` split's captions (words seen ``min_count`` times) unless ``vocabulary`` (a list
    or a vocabulary file) is given. ``root``, ``download``, ``normalize``, ``image_size`` are
    the ``fashion-mnist`` loader's.
    """
    if split not in SPLITS:
        raise DataError(f"fmnist-captions: unknown split {split!r}; known: {', '.join(SPLITS)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"fmnist-captions: seed must be an integer >= 0, got {seed!r}")
    table = read_class_attributes("fmnist")
    if table.classes != FASHION_MNIST_CLASSES:
        raise DataError(f"the fmnist attribute table's classes {table.classes} are not "
                        "Fashion-MNIST's")
    splits = fmnist_captions_splits(int(seed), n_query, n_train)
    part, offset = ("test", N_TRAIN) if split == "query" else ("train", 0)
    pixels, part_classes = load_fashion_mnist(part, root=root, download=download)  # type: ignore[arg-type]
    if vocabulary is None:
        train_idx = splits["train"]
        train_classes = part_classes if part == "train" else load_fashion_mnist(
            "train", root=root, download=download)[1]
        vocab = build_vocabulary(generate_captions(train_classes[train_idx], train_idx, seed,
                                                   dropout, table), min_count)
    else:
        vocab = resolve_vocabulary(vocabulary)
    idx = splits[split]
    classes = np.asarray(part_classes[idx - offset], dtype=np.int64)
    sentences = generate_captions(classes, idx, seed, dropout, table)
    images = pixels[idx - offset]  # only the split's images are resized
    if image_size is not None:
        images = resize_images(images, image_size)
    mean, std = (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if normalize else (None, None)
    return PairedData(
        images=ArrayDataset(images, classes, FASHION_MNIST_CLASSES, mean, std),
        texts=bag_of_words(sentences, vocab), labels=caption_labels(classes, table),
        vocabulary=vocab, label_names=[*table.classes, *table.names], classes=classes,
        sentences=sentences, indices=idx)
