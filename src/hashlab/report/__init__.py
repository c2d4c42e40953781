"""``hashlab report``: one self-contained HTML file describing one or several finished runs.

For each run: its config, training curves, the evaluation by a protocol with its
precision–recall curves, a retrieval grid, a 2-D projection of the codes, the confusion matrix
of the code classifier and the score histogram of relevant and irrelevant pairs. With several
runs, a comparison table and mAP@all against code length come first. Images are embedded as
base64 PNG data URIs; nothing outside the file is referenced. Every sample is drawn with
``numpy.random.default_rng(0)``, so the same runs give the same file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.encode import Codes, TrainedRun
from hashlab.errors import HashlabError
from hashlab.report import analysis, figures
from hashlab.report import html as H
from hashlab.train.engine import METRICS_FILE

__all__ = ["REPORT_FILE", "SEED", "build_report"]

#: the default file name of a one-run report, inside the run directory
REPORT_FILE = "report.html"
#: the seed of every sample a report draws
SEED = 0
GRID_QUERIES, GRID_K = 8, 10
PROJECTION_POINTS = 2000
NN_QUERIES = 2000
PAIRS = 5000


@dataclass
class _Summary:
    """One run's row of the comparison."""

    name: str
    path: Path
    dataset: str
    loss: str
    head: str
    code_length: int
    binary: bool
    protocol: str
    maps: dict[str, float]


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _raw_image(dataset: Any, i: int) -> np.ndarray:
    """The stored uint8 image ``i`` of a dataset (before normalisation)."""
    if hasattr(dataset, "images"):
        return np.asarray(dataset.images[int(i)])
    return np.asarray(dataset.load_array(int(i)))


def _loss_name(run: TrainedRun) -> str:
    """The loss's registered name (``hash_ce`` and ``hash-ce`` are one series)."""
    from hashlab.losses.registry import LOSSES

    try:
        return LOSSES.canonical(run.config.loss.name)
    except HashlabError:
        return run.config.loss.name


def _code_words(run: TrainedRun) -> str:
    dim = run.model.dim
    return f"{dim}-bit hash code" if run.model.binary else f"{dim}-d float embedding"


# ------------------------------------------------------------------------------ sections
def _config_section(run: TrainedRun, ident: str) -> str:
    cfg = run.config
    rows = [("run directory", str(run.run_dir)), ("dataset", cfg.data.dataset),
            ("backbone", cfg.model.backbone), ("head", cfg.model.head),
            ("code", _code_words(run)), ("loss", _loss_name(run)),
            ("optimiser", f"{cfg.optim.name}, lr {cfg.optim.lr:g}"),
            ("epochs", cfg.train.epochs), ("seed", cfg.seed),
            ("model.pt SHA-256", run.model_sha256[:16] + "…")]
    return H.section(ident, "Configuration", [
        H.table(["setting", "value"], rows),
        H.details("the resolved config (YAML, as stored in model.pt)", H.pre(cfg.to_yaml())),
    ])


def _training_section(run: TrainedRun, ident: str) -> str:
    path = run.run_dir / METRICS_FILE
    try:
        history = json.loads(path.read_text(encoding="utf-8"))["history"]
        if not history or not all({"epoch", "loss"} <= h.keys() for h in history):
            raise ValueError("no per-epoch loss")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return H.section(ident, "Training curves",
                         [H.note(f"no training curves: {path} is missing or unreadable ({exc})")])
    acc = all(h.get("accuracy") is not None for h in history)
    caption = (f"Training loss{' and training accuracy' if acc else ''} per epoch "
               f"({len(history)} epoch{'s' if len(history) != 1 else ''}), read from {path} "
               "(the history the trainer writes after every epoch: the mean loss over the "
               "epoch's batches"
               + ("; accuracy = fraction of training images of the epoch that the loss's "
                  "classifier (its logits) put in the right class, measured while training, "
                  "with augmentation" if acc else "; this loss has no classifier, so no "
                  "accuracy") + ").")
    return H.section(ident, "Training curves", [
        H.figure(figures.training_plot(history), caption, "training curves")])


def _evaluation_sections(run: TrainedRun, ident: str, protocol: str, replaced: str | None,
                         progress: bool) -> tuple[list[str], dict[str, Any]]:
    from hashlab.eval.report import result_rows

    result, path, was_read = analysis.load_or_evaluate(run, protocol, progress)
    source = (f"read from {path}" if was_read else
              f"computed by evaluate_run and saved to {path}")
    body = [H.table(["metric", "value"], result_rows(result)),
            f"<p>Protocol <code>{escape(protocol)}</code>: "
            f"{escape(str(result.get('n_queries')))} queries against "
            f"{escape(str(result.get('n_database')))} database images (definitions: "
            f"docs/protocols.md); {escape(source)}.</p>"]
    if replaced:
        body.insert(0, H.note(replaced))
    sections = [H.section(f"{ident}-evaluation", "Evaluation", body)]

    metrics = result.get("metrics", {})
    curves: dict[str, dict[str, list[float]]] = {}
    if isinstance(metrics.get("binary"), dict) and "pr_curve" in metrics["binary"]:
        nbits = metrics["binary"].get("nbits")
        curves[f"{nbits}-bit code, Hamming ranking"] = metrics["binary"]["pr_curve"]
    if isinstance(metrics.get("float"), dict) and "pr_curve" in metrics["float"]:
        curves["float code, cosine ranking"] = metrics["float"]["pr_curve"]
    if curves:
        caption = (f"Precision against recall of the {protocol} protocol "
                   f"({result.get('n_queries')} queries, {result.get('n_database')} database "
                   "images, relevant = same class), averaged over queries; "
                   f"{source}. Binary code: one point per Hamming radius r = 0…bits (every "
                   "database image within distance r is retrieved; a query retrieving nothing "
                   "has precision 0). Float code: precision and recall at about 100 cut-off "
                   "ranks evenly spaced from 1 to the database size.")
        body = [H.figure(figures.pr_plot(curves), caption, "precision-recall curves")]
    else:
        body = [H.note(f"the {protocol} protocol reports no precision–recall curve")]
    sections.append(H.section(f"{ident}-pr", "Precision–recall curves", body))
    return sections, result


def _grid_section(run: TrainedRun, ident: str, test: Codes, db: Codes,
                  names: Sequence[str]) -> str:
    ex = analysis.retrieval_examples(test, db, n_queries=GRID_QUERIES, k=GRID_K, seed=SEED)
    test_ds, train_ds = run.load_split("test"), run.load_split("train")
    query_images = [_raw_image(test_ds, i) for i in ex.query_ids]
    hit_images = [[_raw_image(train_ds, j) for j in row] for row in ex.ids]
    png = figures.retrieval_grid(ex, query_images, hit_images, test.labels[ex.query_ids],
                                 db.labels[ex.ids], names)
    ranking = ("Hamming distance of the binary codes (d = distance)" if ex.binary else
               "cosine similarity of the float codes (the number is the similarity)")
    caption = (f"Retrieval examples: {len(ex.query_ids)} test images drawn with "
               f"numpy.random.default_rng({SEED}) (blue frame, left) and their top "
               f"{ex.ids.shape[1]} training images ranked by {ranking}, ties broken by "
               "database index. A red frame marks a hit of another class than the query "
               f"(wrong), a green one a hit of the same class: {int(ex.wrong.sum())} of "
               f"{ex.wrong.size} hits are wrong. Under each image: its class"
               + (" and distance." if ex.binary else " and similarity."))
    score = "distance" if ex.binary else "similarity"
    rows = [(f"test:{q}", _name(test.labels[q], names),
             " ".join(f"{j}" for j in ids),
             " ".join(f"{s:d}" if ex.binary else f"{s:.3f}" for s in scores),
             " ".join("x" if w else "." for w in wrong))
            for q, ids, scores, wrong in zip(ex.query_ids, ex.ids, ex.scores, ex.wrong,
                                             strict=True)]
    table = H.table(["query", "class", "hits (train ids, ranked)", f"{score}s",
                     "wrong (x)"], rows, cls="retrieval-hits")
    return H.section(ident, "Retrieval examples", [
        H.figure(png, caption, "retrieval grid"),
        H.details("the hits as numbers", table)])


def _name(label: Any, names: Sequence[str]) -> str:
    label = int(label)
    return names[label] if 0 <= label < len(names) else str(label)


def _projection_section(ident: str, test: Codes, names: Sequence[str]) -> str:
    proj = analysis.pca_projection(test.float, test.labels, max_points=PROJECTION_POINTS,
                                   seed=SEED)
    what = ("the float codes (the relaxed code before the sign is taken)"
            if test.bits is not None else "the float embeddings")
    caption = (f"2-D projection of {what} of {len(proj.points)} test images (a sample drawn "
               f"with numpy.random.default_rng({SEED}) when the split has more than "
               f"{PROJECTION_POINTS}), one colour per class: the first two principal "
               "components of the centred codes (numpy SVD), which explain "
               f"{100 * proj.explained[0]:.1f}% and {100 * proj.explained[1]:.1f}% of their "
               "variance.")
    return H.section(ident, "Code projection", [
        H.figure(figures.projection_plot(proj, names), caption, "PCA projection of the codes")])


def _classifier_section(run: TrainedRun, ident: str, test: Codes, db: Codes,
                        names: Sequence[str]) -> str:
    clf = analysis.code_classifier(run, test, db, max_nn_queries=NN_QUERIES, seed=SEED)
    classes, counts = analysis.confusion_matrix(clf.true, clf.predicted)
    if clf.method == "logits":
        how = (f"the loss's classifier ({_loss_name(run)}'s logits) applied to the float "
               f"codes of all {len(clf.true)} test images")
    else:
        kind = ("Hamming distance of the binary codes" if db.bits is not None and
                test.bits is not None else "cosine similarity of the float codes")
        how = (f"a 1-nearest-neighbour classifier (the loss {_loss_name(run)} has no "
               f"logits): each of {len(clf.true)} test images (a sample drawn with "
               f"numpy.random.default_rng({SEED}) when the split has more than {NN_QUERIES}) "
               f"takes the class of its nearest of the {clf.n_database} training images by "
               f"{kind}, ties broken by index")
    caption = (f"Confusion matrix of the code classifier: {how}. Rows: true class, columns: "
               f"predicted class, cells: numbers of images. Accuracy {clf.accuracy:.4f}.")
    return H.section(ident, "Code classifier", [
        H.figure(figures.confusion_plot(classes, counts, names), caption, "confusion matrix")])


def _pairs_section(ident: str, test: Codes, db: Codes) -> str:
    pairs = analysis.pair_scores(test, db, n_pairs=PAIRS, seed=SEED)
    what = (f"Hamming distances between the {pairs.nbits}-bit codes" if pairs.binary
            else "cosine similarities between the float codes")
    rel = f"{pairs.relevant.mean():.3f}" if len(pairs.relevant) else "n/a"
    irr = f"{pairs.irrelevant.mean():.3f}" if len(pairs.irrelevant) else "n/a"
    caption = (f"Histograms (densities) of the {what} of sampled (test image, training image) "
               f"pairs: {len(pairs.relevant)} relevant pairs (same class) and "
               f"{len(pairs.irrelevant)} irrelevant ones (different classes), each drawn with "
               f"numpy.random.default_rng({SEED}) as a uniform test image and a uniform "
               f"training image of its class / of another class. Means: relevant {rel}, "
               f"irrelevant {irr}.")
    title = "Hamming distances" if pairs.binary else "Cosine similarities"
    return H.section(ident, title, [
        H.figure(figures.pair_histogram(pairs), caption, "score histogram of pairs")])


def _run_section(run: TrainedRun, number: int, protocol: str | None, progress: bool
                 ) -> tuple[str, _Summary]:
    ident = f"run-{number}"
    names = [str(n) for n in (run.meta.get("classes") or [])]
    chosen, replaced = analysis.choose_protocol(run, protocol)
    _say(progress, f"report: {run.run_dir}: evaluation ({chosen})")
    parts = [_config_section(run, f"{ident}-config"),
             _training_section(run, f"{ident}-training")]
    evaluation, result = _evaluation_sections(run, ident, chosen, replaced, progress)
    parts += evaluation
    _say(progress, f"report: {run.run_dir}: figures")
    db = run.encode("train", progress=progress)
    test = run.encode("test", progress=progress)
    parts += [_grid_section(run, f"{ident}-grid", test, db, names),
              _projection_section(f"{ident}-projection", test, names),
              _classifier_section(run, f"{ident}-classifier", test, db, names),
              _pairs_section(f"{ident}-pairs", test, db)]
    cfg = run.config
    summary = _Summary(cfg.name, run.run_dir, cfg.data.dataset, _loss_name(run), cfg.model.head,
                       run.model.dim, run.model.binary, chosen, analysis.summary_maps(result))
    title = f"Run {number}: {cfg.name} ({_code_words(run)}, loss {summary.loss})"
    return H.section(ident, title, parts, level=2), summary


def _comparison_section(summaries: list[_Summary]) -> str:
    rows = [(i, s.name, str(s.path), s.dataset, s.loss, s.head,
             f"{s.code_length} bits" if s.binary else f"{s.code_length}-d float", s.protocol,
             s.maps.get("float", "—"), s.maps.get("binary", "—"))
            for i, s in enumerate(summaries, 1)]
    table = H.table(["#", "run", "directory", "dataset", "loss", "head", "code", "protocol",
                     "float mAP@all", "binary mAP@all"], rows, cls="comparison")
    series: dict[str, list[tuple[int, float]]] = {}
    for s in summaries:
        kind = "binary" if "binary" in s.maps else "float"
        if kind in s.maps:
            label = f"{s.loss} ({'Hamming' if kind == 'binary' else 'cosine, float'})"
            series.setdefault(label, []).append((s.code_length, s.maps[kind]))
    protocols = sorted({s.protocol for s in summaries})
    mixed = (f" The runs were evaluated by different protocols ({', '.join(protocols)}), so "
             "their numbers are not directly comparable." if len(protocols) > 1 else "")
    caption = ("mAP@all against code length, one series per loss: for a hash head the binary "
               "code's mAP@all (Hamming ranking) against its number of bits, for an embedding "
               "head the float code's mAP@all (cosine ranking) against its dimension; the "
               f"numbers are those of the table above (protocol {', '.join(protocols)})."
               + mixed)
    body = [table]
    if series:
        body.append(H.figure(figures.comparison_plot(series), caption, "mAP vs code length"))
    else:
        body.append(H.note("no mAP@all to compare: the protocols report none"))
    return H.section("comparison", "Comparison", body, level=2)


def build_report(runs: Sequence[str | Path], out: str | Path, *, protocol: str | None = None,
                 progress: bool = True) -> Path:
    """Write one self-contained HTML report of ``runs`` (finished run directories) to ``out``
    (atomically) and return its path.

    ``protocol``: the evaluation protocol of every run (default: each run config's
    ``eval.protocol``, or ``retrieval`` when that needs Fashion-MNIST and the run was trained
    on another dataset). A run's ``RUN/eval/<protocol>.json`` is used when it is newer than its
    ``model.pt``; otherwise the protocol is run and its result saved there.
    """
    from hashlab.io import atomic_write_text

    paths = [Path(r) for r in runs]
    if not paths:
        raise HashlabError("report: give at least one run directory")
    if protocol is not None:  # an unknown name is refused before any work
        from hashlab.eval.registry import PROTOCOLS

        PROTOCOLS.canonical(protocol, key="--protocol")
    out = Path(out)
    if out.is_dir():
        raise HashlabError(f"--out {out}: is a folder; give a file name (e.g. "
                           f"{out / REPORT_FILE})")
    trained = [TrainedRun(p) for p in paths]  # every run is checked before any work
    sections, summaries = [], []
    for number, run in enumerate(trained, 1):
        section, summary = _run_section(run, number, protocol, progress)
        sections.append(section)
        summaries.append(summary)
    title = (f"hashlab report: {summaries[0].name}" if len(summaries) == 1
             else f"hashlab report: {len(summaries)} runs")
    intro = ("<p>Generated by <code>hashlab report</code> from "
             + ", ".join(f"<a href=\"#run-{i}\">{escape(str(s.path))}</a>"
                         for i, s in enumerate(summaries, 1))
             + f". Every sample (queries, points, pairs) is drawn with "
             f"<code>numpy.random.default_rng({SEED})</code>; the database is each run's "
             "training split and the queries its test split, except in the evaluation, which "
             "follows its protocol.</p>")
    body = [intro]
    if len(summaries) > 1:
        body.append(_comparison_section(summaries))
    body += sections
    _say(progress, f"report: writing {out}")
    return atomic_write_text(out, H.page(title, body))
