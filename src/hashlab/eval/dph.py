"""DPH evaluation: category, attribute and combined retrieval with one binary code, and the
bit-functionality analysis. Every ranking goes through :mod:`hashlab.index`.

* **Category retrieval** — Hamming ranking of the database (flat ``BinaryIndex``); relevant =
  same category; mAP@all.
* **Attribute retrieval** — a query is a set of attributes ``U_s`` with wanted values ``a^q``;
  database images are ranked by the joint matching probability
  ``P = Π_{j∈U_s} (1[a_j^q > 0.5] A_ij + 1[a_j^q ≤ 0.5] (1 − A_ij))`` with
  ``A = σ(W^attr B + b^attr)`` on their binary codes ``B``. ``log P`` is an inner product of
  ``[a^q, 1 − a^q]`` (masked to ``U_s``) with ``[log A_i, log(1 − A_i)]``, so the ranking is a
  maximum inner-product search in a ``FloatIndex(metric="inner_product")``. Relevant = the
  image's true attributes equal ``a^q`` on ``U_s``. Reported: mAP averaged over every *valid*
  combination (attribute subsets of size 1 and 2, all value assignments, at least one relevant
  database image).
* **Combined retrieval** — query image + one attribute condition: the database is filtered to
  images predicted to match (``P > 0.5``), then ranked by Hamming distance to the query's code;
  relevant = same category and matching attribute. Reported: recall@k (and P@k, mAP).
* **Bit functionality** — for each bit, flip it in every test code and measure the drop in
  category accuracy and in mean attribute accuracy of the code classifiers: a bit that serves
  categories costs category accuracy when flipped, and so on. Plotted per bit.

The ``fmnist-dph`` protocol (registered here, with its own table rows :func:`dph_rows`) uses
the fmnist-retrieval queries and database. Definitions: ``docs/protocols.md``.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.encode import Codes, TrainedRun
from hashlab.errors import ConfigError
from hashlab.eval.common import (
    FASHION_MNIST,
    binary_index_metrics,
    fmnist_query_indices,
    is_dataset,
    protocol_result,
)
from hashlab.eval.index_metrics import index_retrieval_metrics
from hashlab.eval.metrics import ap_from_relevance
from hashlab.eval.registry import PROTOCOLS
from hashlab.index import BinaryIndex, FloatIndex, unpack_bits
from hashlab.models.dph import attribute_probabilities, category_probabilities

__all__ = [
    "attribute_queries",
    "attribute_retrieval",
    "combined_retrieval",
    "bit_functionality",
    "plot_bit_functionality",
    "dph_metrics",
    "dph_rows",
    "fmnist_dph",
]

_EPS = 1e-7


def attribute_queries(true_attributes: np.ndarray, max_size: int = 2
                      ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every (attribute subset, wanted values) of size 1..``max_size`` that at least one row
    of ``true_attributes`` (0/1, 2 = missing) satisfies: the valid attribute combinations."""
    p = true_attributes.shape[1]
    out = []
    for size in range(1, max_size + 1):
        for subset in itertools.combinations(range(p), size):
            cols = true_attributes[:, subset]
            for values in itertools.product((0, 1), repeat=size):
                if (cols == np.array(values)).all(axis=1).any():
                    out.append((subset, values))
    return out


def _log_prob_vectors(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), _EPS, 1 - _EPS)
    return np.concatenate([np.log(p), np.log1p(-p)], axis=1).astype(np.float32)


def _query_vector(subset: tuple[int, ...], values: tuple[int, ...], p: int) -> np.ndarray:
    w = np.zeros(2 * p, dtype=np.float32)
    for j, v in zip(subset, values, strict=True):
        w[j if v == 1 else p + j] = 1.0
    return w


def attribute_retrieval(probs: np.ndarray, true_attributes: np.ndarray, *, max_size: int = 2,
                        topk: tuple[int, ...] = (100,)) -> dict[str, Any]:
    """mAP of attribute queries over a database with predicted attribute probabilities
    ``probs [n, p]`` and true attributes ``[n, p]`` (2 = missing: never relevant)."""
    n, p = probs.shape
    combos = attribute_queries(true_attributes, max_size)
    if not combos:
        raise ValueError("no valid attribute combination: the database has no attribute labels")
    index = FloatIndex(2 * p, "flat", metric="inner_product")
    index.add(_log_prob_vectors(probs))
    queries = np.stack([_query_vector(s, v, p) for s, v in combos])
    # relevance "labels": a multi-hot column per combination, set where the image satisfies it
    rel = np.stack([(true_attributes[:, s] == np.array(v)).all(axis=1) for s, v in combos],
                   axis=1)
    eye = np.eye(len(combos), dtype=np.int8)
    by_size, total = {}, dict.fromkeys(["mAP@all", *(f"P@{k}" for k in topk)], 0.0)
    for size in range(1, max_size + 1):
        sel = [i for i, (s, _) in enumerate(combos) if len(s) == size]
        if not sel:
            continue
        m = index_retrieval_metrics(index, queries[sel], eye[sel], np.arange(n),
                                    rel.astype(np.int8), topk=topk, radius=None)
        by_size[size] = {"mAP": m["mAP@all"], "n_queries": len(sel)}
        for key in total:
            total[key] += m[key] * len(sel) / len(combos)
    return {"mAP": total["mAP@all"], **{f"P@{k}": total[f"P@{k}"] for k in topk},
            "n_combinations": len(combos), "by_size": by_size}


def combined_retrieval(query: Codes, database: Codes, db_probs: np.ndarray,
                       query_attributes: np.ndarray, db_attributes: np.ndarray, *,
                       topk: tuple[int, ...] = (100, 1000), seed: int = 0) -> dict[str, Any]:
    """Image + one attribute condition per query (a seeded attribute, the value the query
    image truly has): filter the database by predicted attribute, rank by Hamming distance."""
    rng = np.random.default_rng(seed)
    nq, p = query_attributes.shape
    known = query_attributes != 2
    index = BinaryIndex(database.nbits, "flat")
    index.add(database.bits)
    recalls = {k: np.zeros(nq) for k in topk}
    precisions = {k: np.zeros(nq) for k in topk}
    aps = np.zeros(nq)
    chunk = 64
    for i in range(nq):
        if i % chunk == 0:  # full Hamming ranking of the database, a chunk of queries at a time
            _, order = index.search(query.bits[i: i + chunk], len(database))
        ranking = order[i % chunk]
        choices = np.flatnonzero(known[i])
        if choices.size == 0:
            continue
        j = int(rng.choice(choices))
        v = int(query_attributes[i, j])
        pred = (db_probs[:, j] > 0.5) if v == 1 else (db_probs[:, j] <= 0.5)
        relevant = (database.labels == query.labels[i]) & (db_attributes[:, j] == v)
        ranked = ranking[pred[ranking]]  # attribute filter, Hamming order kept
        hit = relevant[ranked]
        n_rel = int(relevant.sum())
        if n_rel == 0:
            continue
        cum = np.cumsum(hit)
        for k in topk:
            recalls[k][i] = cum[min(k, len(cum)) - 1] / n_rel if len(cum) else 0.0
            precisions[k][i] = cum[min(k, len(cum)) - 1] / k if len(cum) else 0.0
        if len(hit):
            aps[i] = ap_from_relevance(hit[None, :], np.array([n_rel]))[0]
    out: dict[str, Any] = {"mAP": float(aps.mean())}
    out.update({f"R@{k}": float(recalls[k].mean()) for k in topk})
    out.update({f"P@{k}": float(precisions[k].mean()) for k in topk})
    return out


def _accuracies(loss: Any, bits01: np.ndarray, labels: np.ndarray, attrs: np.ndarray
                ) -> tuple[float, float]:
    import torch

    with torch.no_grad():
        b = torch.from_numpy(bits01.astype(np.float32))
        cls = loss.category_classifier(b).argmax(1).numpy()
        att = (loss.attribute_classifier(b) > 0).numpy().astype(np.int8)
    known = attrs != 2
    cat_acc = float((cls == labels).mean())
    att_acc = float((att == attrs)[known].mean()) if known.any() else float("nan")
    return cat_acc, att_acc


def bit_functionality(loss: Any, codes: Codes, attributes: np.ndarray) -> dict[str, Any]:
    """Per bit: drop in category accuracy and in attribute accuracy when it is flipped."""
    bits = unpack_bits(codes.bits, codes.nbits).astype(np.int8)
    base_cat, base_att = _accuracies(loss, bits, codes.labels, attributes)
    cat_drop, att_drop = [], []
    for b in range(codes.nbits):
        flipped = bits.copy()
        flipped[:, b] = 1 - flipped[:, b]
        c, a = _accuracies(loss, flipped, codes.labels, attributes)
        cat_drop.append(base_cat - c)
        att_drop.append(base_att - a)
    cat_drop_a, att_drop_a = np.array(cat_drop), np.array(att_drop)
    total = np.clip(cat_drop_a, 0, None) + np.clip(att_drop_a, 0, None)
    share = np.where(total > 0, np.clip(cat_drop_a, 0, None) / np.where(total > 0, total, 1),
                     np.nan)
    return {"category_accuracy": base_cat, "attribute_accuracy": base_att,
            "category_drop": cat_drop_a.tolist(), "attribute_drop": att_drop_a.tolist(),
            "category_share": [None if np.isnan(x) else float(x) for x in share]}


def plot_bit_functionality(result: dict[str, Any], path: str | Path) -> Path:
    """Bar chart: per bit, accuracy lost when flipped (category vs attribute)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hashlab.io import atomic_write

    cat, att = np.array(result["category_drop"]), np.array(result["attribute_drop"])
    x = np.arange(len(cat))
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(cat)), 3.2))
    ax.bar(x - 0.2, cat, width=0.4, label="category accuracy lost")
    ax.bar(x + 0.2, att, width=0.4, label="attribute accuracy lost")
    ax.set_xlabel("bit")
    ax.set_ylabel("accuracy drop when flipped")
    ax.set_title("DPH bit functionality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(Path(path), lambda f: f.write(buf.getvalue()))


def dph_metrics(run: TrainedRun, queries: Codes, database: Codes, query_attributes: np.ndarray,
                db_attributes: np.ndarray, *, progress: bool = False) -> dict[str, Any]:
    """Category mAP, attribute mAP, combined retrieval and bit functionality of a DPH run."""
    loss = run.loss_fn.cpu().eval()
    if not hasattr(loss, "attribute_classifier"):
        raise ConfigError("this run was not trained with the dph loss (loss.name: dph)")
    category = binary_index_metrics(queries, database, topk=(100, 1000), radius=2,
                                    pr_curve=False, progress=progress)
    db_probs = attribute_probabilities(loss, database.bits, database.nbits)
    attribute = attribute_retrieval(db_probs, db_attributes)
    combined = combined_retrieval(queries, database, db_probs, query_attributes, db_attributes)
    bits = bit_functionality(loss, queries, query_attributes)
    q_cat = category_probabilities(loss, queries.bits, queries.nbits).argmax(1)
    return {"category": category, "attribute": attribute, "combined": combined,
            "bit_functionality": bits,
            "code_classifier_accuracy": float((q_cat == queries.labels).mean())}


def dph_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Table rows of a DPH result: category, attribute and combined retrieval, and the accuracy
    of the category classifier on the codes."""
    m = result["metrics"]
    c, a, comb = m["category"], m["attribute"], m["combined"]
    rows = [(f"category mAP@all ({c['nbits']}-bit)", f"{c['mAP@all']:.4f}"),
            (f"attribute mAP ({a['n_combinations']} combinations)", f"{a['mAP']:.4f}")]
    rows += [(f"combined {key}", f"{comb[key]:.4f}") for key in ("R@100", "R@1000", "mAP")]
    rows.append(("code → category accuracy", f"{m['code_classifier_accuracy']:.4f}"))
    return rows


@PROTOCOLS.register("fmnist-dph", rows=dph_rows, index=False)
def fmnist_dph(run: TrainedRun, progress: bool = True, batch_size: int = 1024) -> dict[str, Any]:
    """fmnist-retrieval's queries and database, evaluated for a DPH run (``loss.name: dph``)."""
    from hashlab.data.attributes import resolve_attributes

    cfg = run.config.data
    if not is_dataset(cfg.dataset, FASHION_MNIST) or cfg.attributes is None:
        raise ConfigError("protocol fmnist-dph needs a Fashion-MNIST run trained with "
                          "data.attributes (e.g. data.attributes: fmnist) and loss.name: dph")
    start = time.perf_counter()
    database = run.encode("train", batch_size=batch_size, progress=progress)
    test = run.encode("test", batch_size=batch_size, progress=progress)
    qi = fmnist_query_indices(len(test))
    queries = test.take(qi)
    db_attr, names = resolve_attributes(cfg.attributes, run.load_split("train"))
    test_attr, _ = resolve_attributes(cfg.attributes, run.load_split("test"))
    metrics = dph_metrics(run, queries, database, test_attr[qi], db_attr, progress=progress)
    plot = plot_bit_functionality(metrics["bit_functionality"],
                                  run.run_dir / "eval" / "dph_bit_functionality.png")
    return protocol_result("fmnist-dph", queries, database, metrics, start, attributes=names,
                           bit_plot=str(plot))
