"""fmnist-captions: the caption generator (a pure function of seed, index and class), the
tokeniser and vocabulary files, the bags of words, the splits, and the loader on the real data."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hashlab.data.attributes import read_class_attributes
from hashlab.data.captions import (
    ATTRIBUTE_PHRASES,
    CLASS_NOUNS,
    IMPLIED_BY,
    N_TRAIN,
    caption_labels,
    fmnist_captions_splits,
    generate_captions,
    make_caption,
)
from hashlab.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from hashlab.data.registry import PAIRED_DATASETS, load_paired
from hashlab.data.text import (
    bag_of_words,
    build_vocabulary,
    load_vocabulary,
    resolve_vocabulary,
    save_vocabulary,
    tokenize,
)
from hashlab.errors import DataError
from tests.conftest import needs_fmnist

TABLE = read_class_attributes("fmnist")
ATTRS = {c: [n for n, v in zip(TABLE.names, row, strict=True) if v]
         for c, row in zip(TABLE.classes, TABLE.matrix, strict=True)}


def _has(words: list[str], phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``words`` as consecutive words."""
    p = phrase.split()
    return any(words[i : i + len(p)] == p for i in range(len(words) - len(p) + 1))


def _noun(words: list[str], class_name: str) -> str | None:
    """The longest of the class's nouns that the caption contains."""
    found = [n for n in CLASS_NOUNS[class_name] if _has(words, n)]
    return max(found, key=len) if found else None


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


# ------------------------------------------------------------------------------ generator
def test_a_caption_is_a_function_of_seed_index_and_class():
    a = make_caption("Coat", ATTRS["Coat"], index=123, seed=7, dropout=0.1)
    assert a == make_caption("Coat", ATTRS["Coat"], index=123, seed=7, dropout=0.1)
    others_index = {make_caption("Coat", ATTRS["Coat"], i, 7, 0.1) for i in range(200)}
    others_seed = {make_caption("Coat", ATTRS["Coat"], 123, s, 0.1) for s in range(200)}
    assert len(others_index) > 100 and len(others_seed) > 100  # the text varies a lot


def test_generation_does_not_depend_on_order_or_on_the_other_items():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 10, 500)
    indices = np.arange(1000, 1500)
    full = generate_captions(classes, indices, seed=3)
    pick = rng.permutation(500)[:50]
    assert generate_captions(classes[pick], indices[pick], seed=3) == [full[i] for i in pick]
    assert generate_captions(classes, indices, seed=4) != full


def test_every_caption_names_its_class_even_under_heavy_dropout():
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        for dropout in (0.0, 0.5, 0.95):
            caps = generate_captions(np.full(300, c), np.arange(300), seed=1, dropout=dropout)
            assert all(_noun(cap.split(), name) for cap in caps), (name, dropout)
            if dropout == 0.0:  # several synonyms are used
                assert len({_noun(cap.split(), name) for cap in caps}) == len(CLASS_NOUNS[name])


def test_dropout_only_removes_words_at_its_rate_and_never_the_class_noun():
    classes = np.arange(4000) % 10
    indices = np.arange(4000)
    full = generate_captions(classes, indices, seed=5, dropout=0.0)
    dropped = generate_captions(classes, indices, seed=5, dropout=0.3)
    removed = candidates = 0
    for c, a, b in zip(classes, full, dropped, strict=True):
        wa, wb = a.split(), b.split()
        assert _is_subsequence(wb, wa)  # the same caption, less some words
        noun = _noun(wa, FASHION_MNIST_CLASSES[c])
        assert noun is not None and _has(wb, noun)
        removed += len(wa) - len(wb)
        candidates += len(wa) - len(noun.split())
    assert abs(removed / candidates - 0.3) < 0.02


def test_captions_mention_only_the_classs_attributes_and_each_of_them_sometimes():
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        caps = [cap.split() for cap in generate_captions(np.full(400, c), np.arange(400),
                                                         seed=2, dropout=0.0)]
        for attr, options in ATTRIBUTE_PHRASES.items():
            hits = sum(any(_has(w, phrase) for _, phrase in options) for w in caps)
            if attr not in ATTRS[name]:
                assert hits == 0, (name, attr)
            elif IMPLIED_BY.get(attr) not in ATTRS[name]:
                assert 0.5 * 400 < hits < 0.9 * 400, (name, attr, hits)  # rate 0.7


def test_caption_arguments_are_checked():
    with pytest.raises(DataError, match="dropout"):
        generate_captions([0], [0], dropout=1.0)
    with pytest.raises(DataError, match="seed >= 0"):
        make_caption("Bag", ["bag"], index=0, seed=-1)
    with pytest.raises(DataError, match="equal 1-D"):
        generate_captions([0, 1], [0])


# ------------------------------------------------------------------------------ text
def test_tokenizer_keeps_hyphenated_words_whole_and_drops_everything_else():
    assert tokenize("A Long-Sleeved T-shirt, size 42! (don't)") == [
        "a", "long-sleeved", "t-shirt", "size", "don", "t"]
    assert tokenize("--x-- y-") == ["x", "y"]


def test_vocabulary_is_sorted_by_count_then_alphabetically_and_filtered():
    texts = ["b a c", "a b", "a d", "e"]
    assert build_vocabulary(texts) == ["a", "b", "c", "d", "e"]
    assert build_vocabulary(texts, min_count=2) == ["a", "b"]
    with pytest.raises(DataError, match="min_count"):
        build_vocabulary(texts, min_count=0)


def test_vocabulary_file_round_trip_and_errors(tmp_path):
    vocab = ["a", "long-sleeved", "t-shirt", "café"]
    path = save_vocabulary(vocab, tmp_path / "sub" / "vocab.txt")
    assert path.read_text(encoding="utf-8") == "a\nlong-sleeved\nt-shirt\ncafé\n"
    assert load_vocabulary(path) == vocab == resolve_vocabulary(str(path))
    assert resolve_vocabulary(vocab) == vocab
    (tmp_path / "dup.txt").write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(DataError, match="duplicate"):
        load_vocabulary(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_vocabulary(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="cannot read"):
        load_vocabulary(tmp_path / "missing.txt")


def test_bag_of_words_is_presence_and_ignores_unknown_words():
    bags = bag_of_words(["a coat a coat zebra", "", "warm Coat"], ["coat", "warm", "a"])
    assert bags.dtype == np.float32
    np.testing.assert_array_equal(bags, [[1, 0, 1], [0, 0, 0], [1, 1, 0]])


# ------------------------------------------------------------------------------ labels, splits
def test_labels_are_class_then_attributes_and_relevance_is_a_shared_label():
    classes = np.arange(10)
    labels = caption_labels(classes, TABLE)
    assert labels.dtype == np.uint8 and labels.shape == (10, 20)
    np.testing.assert_array_equal(labels[:, :10], np.eye(10))
    np.testing.assert_array_equal(labels[:, 10:], TABLE.matrix)
    relevant = labels.astype(int) @ labels.T.astype(int) > 0
    for a in range(10):
        for b in range(10):
            shared = set(ATTRS[TABLE.classes[a]]) & set(ATTRS[TABLE.classes[b]])
            assert relevant[a, b] == (a == b or bool(shared))
    assert relevant[0, 2] and not relevant[0, 8]  # t-shirt ~ pullover (upper body); not bag


def test_splits_are_seeded_disjoint_and_nested():
    s = fmnist_captions_splits(seed=0)
    assert [len(s[k]) for k in ("query", "database", "train")] == [2000, 60000, 10000]
    assert s["query"].min() >= N_TRAIN and s["query"].max() < N_TRAIN + 10000
    assert not set(s["query"]) & set(s["database"])
    assert set(s["train"]) <= set(s["database"])
    np.testing.assert_array_equal(s["database"], np.arange(N_TRAIN))
    again = fmnist_captions_splits(seed=0)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = fmnist_captions_splits(seed=1)
    assert not np.array_equal(s["query"], other["query"])
    small = fmnist_captions_splits(seed=0, n_query=100, n_train=500)
    assert set(small["query"]) <= set(s["query"]) and set(small["train"]) <= set(s["train"])
    np.testing.assert_array_equal(fmnist_captions_splits(0, n_query=10)["train"], s["train"])
    with pytest.raises(DataError, match="n_query"):
        fmnist_captions_splits(n_query=10001)
    with pytest.raises(DataError, match="n_train"):
        fmnist_captions_splits(n_train=0)


def test_registry_names_and_errors():
    assert "fmnist-captions" in PAIRED_DATASETS
    with pytest.raises(DataError, match="unknown paired-dataset 'nope'; known: .*fmnist-captions"):
        load_paired("nope", "query")
    with pytest.raises(DataError, match="unknown split 'test'; known: query, database, train"):
        load_paired("fmnist-captions", "test")


# ------------------------------------------------------------------------------ the loader
@pytest.fixture(scope="module")
def loaded():
    return {s: load_paired("fmnist-captions", s, seed=0) for s in ("query", "train", "database")}


@needs_fmnist
def test_loader_splits_images_labels_and_sentences(loaded):
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    all_x, all_y = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    splits = fmnist_captions_splits(seed=0)
    for name, d in loaded.items():
        np.testing.assert_array_equal(d.indices, splits[name])
        np.testing.assert_array_equal(d.classes, all_y[d.indices])
        np.testing.assert_array_equal(d.images.images, all_x[d.indices])
        np.testing.assert_array_equal(d.images.labels, d.classes)
        np.testing.assert_array_equal(d.labels, caption_labels(d.classes, TABLE))
        rows = np.random.default_rng(1).choice(len(d), 500, replace=False)
        assert [d.sentences[i] for i in rows] == generate_captions(
            d.classes[rows], d.indices[rows], seed=0, dropout=0.1)
        assert d.label_names == [*FASHION_MNIST_CLASSES, *TABLE.names]
        assert d.images.mean == pytest.approx(0.2860)


@needs_fmnist
def test_loader_vocabulary_comes_from_train_and_bags_match_a_plain_split(loaded):
    train = loaded["train"]
    counts = Counter(w for s in train.sentences for w in s.split())
    assert train.vocabulary == sorted(counts, key=lambda w: (-counts[w], w))
    for d in loaded.values():
        assert d.vocabulary == train.vocabulary
        col = {w: j for j, w in enumerate(d.vocabulary)}
        rows = np.random.default_rng(0).choice(len(d), 300, replace=False)
        for i in rows:
            expected = np.zeros(len(col), dtype=np.float32)
            expected[[col[w] for w in d.sentences[i].split() if w in col]] = 1
            np.testing.assert_array_equal(d.texts[i], expected)


@needs_fmnist
def test_loader_reuses_a_stored_vocabulary_and_ignores_unknown_words(loaded, tmp_path):
    path = loaded["train"].save_vocabulary(tmp_path / "vocab.txt")
    query = load_paired("fmnist-captions", "query", vocabulary=path, n_train=100)
    assert query.vocabulary == loaded["train"].vocabulary
    np.testing.assert_array_equal(query.texts, loaded["query"].texts)
    small = load_paired("fmnist-captions", "query", vocabulary=["zebra", "coat", "a"],
                        image_size=14, normalize=False)
    assert small.images.image_shape == (1, 14, 14) and small.images.mean is None
    np.testing.assert_array_equal(small.texts[:, 0], 0)
    np.testing.assert_array_equal(small.texts[:, 1],
                                  ["coat" in s.split() for s in small.sentences])
    other = load_paired("fmnist-captions", "train", seed=1, n_train=500, min_count=5)
    assert not np.array_equal(other.indices, loaded["train"].indices[:500])
    counts = Counter(w for s in other.sentences for w in s.split())
    assert min(counts[w] for w in other.vocabulary) >= 5
