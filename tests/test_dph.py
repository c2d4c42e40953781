"""DPH: attribute files, partial labels, the loss (vs a loop transcription), retrieval modes,
bit functionality, and a tiny end-to-end run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hashlab.config import load_config
from hashlab.data.attributes import (
    MISSING,
    partial_labels,
    read_attribute_csv,
    read_celeba_attributes,
    read_class_attributes,
)
from hashlab.encode import Codes, TrainedRun
from hashlab.errors import ConfigError, DataError
from hashlab.eval.dph import (
    attribute_queries,
    attribute_retrieval,
    bit_functionality,
    combined_retrieval,
    dph_metrics,
)
from hashlab.index.codes import hamming_distances, pack_bits
from hashlab.losses.dph import DPHLoss
from hashlab.train.engine import Trainer
from tests.conftest import tiny_config

# ---------------------------------------------------------------------------------------------
# attribute files
# ---------------------------------------------------------------------------------------------


def test_fmnist_table_ships_and_is_complete():
    table = read_class_attributes("fmnist")
    assert table.matrix.shape == (10, 10) and set(np.unique(table.matrix)) <= {0, 1}
    assert table.classes[0] == "T-shirt/top" and table.classes[9] == "Ankle boot"
    assert len({tuple(r) for r in table.matrix}) == 10  # every class has its own attribute set
    np.testing.assert_array_equal(table.for_labels(np.array([9, 0])), table.matrix[[9, 0]])


def test_class_table_errors(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("class,a,b\nx,1,3\n")
    with pytest.raises(DataError, match="attribute 'b': expected 0 or 1"):
        read_class_attributes(bad)
    bad.write_text("class,a,b\nx,1\n")
    with pytest.raises(DataError, match="row 2 has 2 fields"):
        read_class_attributes(bad)
    with pytest.raises(DataError, match="not a file and not a built-in"):
        read_class_attributes(tmp_path / "missing.csv")


def test_per_image_csv_with_missing_values(tmp_path):
    f = tmp_path / "attrs.csv"
    f.write_text("image,smiling,hat\n# comment\na/1.png,1,-1\nb/2.png,,0\nc/3.png,?,1\n")
    table = read_attribute_csv(f)
    assert table.names == ["smiling", "hat"]
    np.testing.assert_array_equal(table.matrix, [[1, 0], [MISSING, 0], [MISSING, 1]])
    aligned = table.align(["c/3.png", "zzz.png", "a/1.png"])
    np.testing.assert_array_equal(aligned, [[MISSING, 1], [MISSING, MISSING], [1, 0]])
    f.write_text("image,smiling\na.png,yes\n")
    with pytest.raises(DataError, match="got 'yes'"):
        read_attribute_csv(f)


def test_celeba_format(tmp_path):
    # list_attr_celeba.txt: count, names, then rows padded with double spaces
    f = tmp_path / "list_attr_celeba.txt"
    f.write_text("3\n5_o_Clock_Shadow Arched_Eyebrows Smiling \n"
                 "000001.jpg -1  1  1\n000002.jpg -1 -1  1\n000003.jpg  1 -1 -1\n")
    table = read_celeba_attributes(f)
    assert table.keys == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert table.names == ["5_o_Clock_Shadow", "Arched_Eyebrows", "Smiling"]
    np.testing.assert_array_equal(table.matrix, [[0, 1, 1], [0, 0, 1], [1, 0, 0]])
    f.write_text("4\na b\n1.jpg 1 -1\n")
    with pytest.raises(DataError, match="truncated"):
        read_celeba_attributes(f)


def test_partial_labels_protocol():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 1000)
    attrs = rng.integers(0, 2, (1000, 4)).astype(np.int8)
    fr = {"both": 0.2, "category": 0.3, "attribute": 0.4}
    full = partial_labels(labels, attrs, fr, seed=3)
    assert full.summary() == {"both": 200, "category": 300, "attribute": 400}
    assert len(np.unique(full.keep)) == 900 and np.all(np.diff(full.keep) > 0)
    cat, att = full.part == "category", full.part == "attribute"
    assert (full.attributes[cat] == MISSING).all() and (full.labels[cat] >= 0).all()
    assert (full.labels[att] == -1).all() and (full.attributes[att] != MISSING).all()
    both = full.part == "both"
    np.testing.assert_array_equal(full.labels[both], labels[full.keep[both]])
    np.testing.assert_array_equal(full.attributes[both], attrs[full.keep[both]])
    # "both only" uses exactly the fully-labelled images of the full protocol
    only = partial_labels(labels, attrs, fr, use=["both"], seed=3)
    np.testing.assert_array_equal(only.keep, full.keep[both])
    assert not np.array_equal(partial_labels(labels, attrs, fr, seed=4).keep, full.keep)
    with pytest.raises(DataError, match="sum to <= 1"):
        partial_labels(labels, attrs, {"both": 0.8, "category": 0.3})


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


def loop_dph_loss(loss: DPHLoss, codes, targets, alpha, hinge=False):
    """Transcription of the DPH objective with explicit loops (float64)."""
    W, b = loss.category_classifier.weight.double(), loss.category_classifier.bias.double()
    Wa, ba = loss.attribute_classifier.weight.double(), loss.attribute_classifier.bias.double()
    x = codes.double()
    n, p = targets.shape[0], targets.shape[1] - 1
    cls_sum, cls_n = 0.0, 0
    for i in range(n):
        y = int(targets[i, 0])
        if y == -1:
            continue
        logits = W @ x[i] + b
        cls_sum = cls_sum - torch.log_softmax(logits, 0)[y]
        cls_n += 1
    total = cls_sum / cls_n if cls_n else 0.0
    for j in range(p):
        s, cnt = 0.0, 0
        for i in range(n):
            a = int(targets[i, 1 + j])
            if a == MISSING:
                continue
            cnt += 1
            z = Wa[j] @ x[i] + ba[j]
            if hinge:
                s = s + torch.clamp(1 - (2 * a - 1) * z, min=0)
            else:
                pij = torch.sigmoid(z)
                wp, wn = loss.pos_weight[j].double(), loss.neg_weight[j].double()
                s = s - (wp * a * torch.log(pij) + wn * (1 - a) * torch.log(1 - pij))
        if cnt:
            total = total + alpha * s / cnt
    return total


def random_targets(rng, n, classes, p, missing=0.3):
    y = rng.integers(0, classes, n)
    y[rng.random(n) < missing] = -1
    a = rng.integers(0, 2, (n, p))
    a[rng.random((n, p)) < missing] = MISSING
    return torch.from_numpy(np.concatenate([y[:, None], a], 1))


@pytest.mark.parametrize("hinge", [False, True])
def test_loss_equals_loop_transcription(hinge):
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    loss = DPHLoss(4, 12, 5, attribute_weight=0.7,
                   attribute_loss="hinge" if hinge else "wsce").double()
    loss.set_attribute_counts(np.array([10, 0, 5, 3, 0]), np.array([30, 8, 5, 0, 0]))
    np.testing.assert_allclose(loss.pos_weight.numpy(), [0.75, 1.0, 0.5, 0.0, 0.5])
    np.testing.assert_allclose(loss.neg_weight.numpy(), [0.25, 0.0, 0.5, 1.0, 0.5])
    codes = torch.rand(20, 12, dtype=torch.float64)
    targets = random_targets(rng, 20, 4, 5)
    got = loss(codes, targets)
    want = loop_dph_loss(loss, codes, targets, 0.7, hinge)
    assert got.item() == pytest.approx(float(want), rel=1e-12)


def test_loss_masks_everything_missing_and_has_gradients():
    loss = DPHLoss(3, 6, 2).double()
    codes = torch.rand(5, 6, dtype=torch.float64, requires_grad=True)
    none = torch.tensor([[-1, 2, 2]] * 5)
    assert float(loss(codes, none)) == 0.0
    targets = torch.tensor([[0, 1, 2], [1, 2, 0], [-1, 1, 1], [2, 0, 2], [-1, 2, 2]])
    assert torch.autograd.gradcheck(lambda c: loss(c, targets), (codes,))
    with pytest.raises(ValueError, match="DPH needs data.attributes"):
        loss(codes, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="0, 1 or 2"):
        loss(codes, torch.tensor([[0, 3, 1]] * 5))


# ---------------------------------------------------------------------------------------------
# retrieval modes
# ---------------------------------------------------------------------------------------------


def test_attribute_queries_are_the_valid_combinations():
    attrs = np.array([[1, 0, 0], [1, 1, 0]])
    combos = attribute_queries(attrs, max_size=2)
    brute = []
    for size in (1, 2):
        import itertools

        for s in itertools.combinations(range(3), size):
            for v in itertools.product((0, 1), repeat=size):
                if any(all(row[j] == vv for j, vv in zip(s, v, strict=True)) for row in attrs):
                    brute.append((s, v))
    assert combos == brute
    assert ((0,), (0,)) not in combos and ((1, 2), (1, 0)) in combos


def test_attribute_retrieval_equals_sklearn_ap_of_joint_probability():
    rng = np.random.default_rng(2)
    n, p = 300, 4
    true = rng.integers(0, 2, (n, p)).astype(np.int8)
    probs = np.clip(0.25 + 0.5 * true + 0.2 * rng.normal(size=(n, p)), 0.01, 0.99)
    got = attribute_retrieval(probs, true, max_size=2)
    aps = []
    for subset, values in attribute_queries(true, 2):
        score = np.ones(n)
        for j, v in zip(subset, values, strict=True):
            score *= probs[:, j] if v == 1 else 1 - probs[:, j]
        rel = (true[:, subset] == np.array(values)).all(axis=1)
        aps.append(average_precision_score(rel, score))
    assert got["mAP"] == pytest.approx(np.mean(aps), abs=1e-6)
    assert got["n_combinations"] == len(aps)


def test_combined_retrieval_against_bruteforce():
    rng = np.random.default_rng(4)
    n, nq, nbits = 200, 15, 16
    db_bits = rng.integers(0, 2, (n, nbits))
    labels = rng.integers(0, 3, n)
    attrs = rng.integers(0, 2, (n, 3)).astype(np.int8)
    probs = np.clip(attrs + 0.3 * rng.normal(size=attrs.shape), 0, 1)
    db = Codes(np.zeros((n, 2), np.float32), pack_bits(db_bits), labels, nbits)
    qi = rng.choice(n, nq, replace=False)
    q = Codes(db.float[qi], db.bits[qi], labels[qi], nbits)
    got = combined_retrieval(q, db, probs, attrs[qi], attrs, topk=(10, 50), seed=7)
    # brute force with the same seeded attribute choice
    rng2 = np.random.default_rng(7)
    d = hamming_distances(q.bits, db.bits)
    rec, aps = [], []
    for i in range(nq):
        j = int(rng2.choice(np.flatnonzero(attrs[qi[i]] != MISSING)))
        v = attrs[qi[i], j]
        order = np.lexsort((np.arange(n), d[i]))
        keep = [o for o in order if (probs[o, j] > 0.5) == (v == 1)]
        relevant = (labels == labels[qi[i]]) & (attrs[:, j] == v)
        rec.append(relevant[keep[:10]].sum() / relevant.sum())
        hits = [r + 1 for r, o in enumerate(keep) if relevant[o]]  # 1-based ranks of hits
        aps.append(sum((m + 1) / r for m, r in enumerate(hits)) / relevant.sum())
    assert got["R@10"] == pytest.approx(np.mean(rec))
    assert got["mAP"] == pytest.approx(np.mean(aps))


def test_bit_functionality_finds_the_bits_each_task_reads():
    loss = DPHLoss(2, 4, 1)
    with torch.no_grad():
        loss.category_classifier.weight.zero_()
        loss.category_classifier.bias.zero_()
        loss.category_classifier.weight[1, 0] = 5.0  # category = bit 0
        loss.category_classifier.bias[1] = -2.5
        loss.attribute_classifier.weight.zero_()
        loss.attribute_classifier.weight[0, 2] = 5.0  # attribute = bit 2
        loss.attribute_classifier.bias[0] = -2.5
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (100, 4))
    codes = Codes(np.zeros((100, 1), np.float32), pack_bits(bits), bits[:, 0], 4)
    result = bit_functionality(loss, codes, bits[:, 2:3].astype(np.int8))
    assert result["category_accuracy"] == 1.0 and result["attribute_accuracy"] == 1.0
    assert result["category_drop"] == [1.0, 0.0, 0.0, 0.0]
    assert result["attribute_drop"] == [0.0, 0.0, 1.0, 0.0]
    assert result["category_share"][0] == 1.0 and result["category_share"][2] == 0.0


def test_dph_result_rows():
    from hashlab.eval.report import result_rows

    metrics = {"category": {"mAP@all": 0.71234, "nbits": 64},
               "attribute": {"mAP": 0.45678, "n_combinations": 55},
               "combined": {"R@100": 0.1, "R@1000": 0.23456, "mAP": 0.3, "P@100": 0.9},
               "bit_functionality": {}, "code_classifier_accuracy": 0.88889}
    result = {"protocol": "fmnist-dph", "n_queries": 1000, "n_database": 60000,
              "attributes": ["a"], "metrics": metrics, "bit_plot": "x.png", "seconds": 1.0}
    assert result_rows(result) == [
        ("category mAP@all (64-bit)", "0.7123"),
        ("attribute mAP (55 combinations)", "0.4568"),
        ("combined R@100", "0.1000"),
        ("combined R@1000", "0.2346"),
        ("combined mAP", "0.3000"),
        ("code → category accuracy", "0.8889"),
    ]


# ---------------------------------------------------------------------------------------------
# end to end on digits
# ---------------------------------------------------------------------------------------------


def _digit_table(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 2, (10, 5))
    path = tmp_path / "digits_attributes.csv"
    path.write_text("class,a0,a1,a2,a3,a4\n" + "".join(
        f"{c}," + ",".join(map(str, r)) + "\n" for c, r in enumerate(rows)))
    return path, rows


def test_dph_trains_and_evaluates_on_digits(tmp_path):
    table, rows = _digit_table(tmp_path)
    cfg = tiny_config(tmp_path, name="dph", model={"head": "dph"},
                      loss={"name": "dph", "args": {"attribute_weight": 1.0}},
                      data={"attributes": str(table),
                            "partial_labels": {"both": 0.3, "category": 0.3, "attribute": 0.3}},
                      train={"epochs": 2, "batch_size": 64, "device": "cpu"})
    trainer = Trainer(load_config(cfg), progress=False)
    assert trainer.partial_summary["both"] > 0 and trainer.targets.shape[1] == 6
    # class ids map to table rows (the digits have no names matching the table)
    both = trainer.targets[:, 0] >= 0
    labels = trainer.targets[both, 0].numpy()
    attrs = trainer.targets[both, 1:].numpy()
    known = (attrs != MISSING).all(axis=1)
    np.testing.assert_array_equal(attrs[known], rows[labels[known]])
    trainer.fit()
    run = TrainedRun(trainer.run_dir)
    assert run.meta["attributes"] == ["a0", "a1", "a2", "a3", "a4"]
    db, test = run.encode("train", progress=False), run.encode("test", progress=False)
    result = dph_metrics(run, test, db, rows[test.labels].astype(np.int8),
                         rows[db.labels].astype(np.int8))
    # two epochs of DPH on digits already rank far above chance (mAP ≈ 0.1 for 10 classes)
    assert result["category"]["mAP@all"] > 0.25
    assert result["attribute"]["n_combinations"] > 0
    assert len(result["bit_functionality"]["category_drop"]) == 16


def test_dph_head_is_a_sigmoid_and_takes_no_activation():
    from hashlab.config import ConfigError as CfgError
    from hashlab.models.dph import DPHHead

    head = DPHHead(8, 4)
    x = torch.randn(5, 8)
    torch.testing.assert_close(head(x), torch.sigmoid(head.pre_activation(x)))
    cfg = tiny_config(Path("/tmp"), model={"head": "dph", "head_args": {"activation": "tanh"}})
    with pytest.raises(CfgError, match="model.head_args.activation: unknown argument"):
        Trainer(load_config(cfg), progress=False)


def test_dph_config_errors(tmp_path):
    cfg = tiny_config(tmp_path, loss={"name": "dph", "args": {}})
    with pytest.raises(ConfigError, match="loss 'dph' needs data.attributes"):
        Trainer(load_config(cfg), progress=False)
    cfg = tiny_config(tmp_path, data={"partial_labels": {"both": 0.5}})
    with pytest.raises(ConfigError, match="needs data.attributes"):
        load_config(cfg)
