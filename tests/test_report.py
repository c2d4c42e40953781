"""hashlab report: one self-contained HTML file per run or comparison of runs.

Oracles: evaluate_run run again (the comparison table's mAP), a brute-force numpy Hamming
ranking (the retrieval grid's hits and its red frames, read from the PNG's pixels), the loss's
logits applied directly (the classifier accuracy), scikit-learn's confusion matrix.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import hashlab
from hashlab.encode import Codes, TrainedRun
from hashlab.errors import HashlabError
from hashlab.eval.protocols import evaluate_run
from hashlab.index.codes import pack_bits
from hashlab.report import REPORT_FILE, build_report
from hashlab.report import analysis as A
from hashlab.report.figures import HIT_COLOUR, QUERY_COLOUR, WRONG_COLOUR, GridLayout
from hashlab.train.engine import FINAL_MODEL
from tests.conftest import tiny_config

RUN_SECTIONS = ["config", "training", "evaluation", "pr", "grid", "projection", "classifier",
                "pairs"]
RUN_FIGURES = ["training", "pr", "grid", "projection", "classifier", "pairs"]


class ReportParser(HTMLParser):
    """Sections (id → heading), figures (innermost section id, img src, caption), tables
    (class → rows of cell texts), every src/href and every tag name."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.headings: dict[str, str] = {}
        self.figures: list[dict[str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._text: list[str] | None = None
        self._target: tuple[str, ...] | None = None
        self._table: str | None = None
        self._figure: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "section":
            self.stack.append(a["id"] or "")
        elif tag in ("h2", "h3"):
            self._text, self._target = [], ("heading",)
        elif tag == "figure":
            self._figure = {"section": self.stack[-1], "src": "", "caption": ""}
        elif tag == "img" and self._figure is not None:
            self._figure["src"] = a.get("src") or ""
        elif tag == "figcaption":
            self._text, self._target = [], ("caption",)
        elif tag == "table":
            self._table = a.get("class") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._text, self._target = [], ("cell",)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.stack.pop()
        elif tag in ("h2", "h3") and self._text is not None:
            self.headings[self.stack[-1]] = "".join(self._text).strip()
            self._text = None
        elif tag == "figcaption" and self._figure is not None and self._text is not None:
            self._figure["caption"] = "".join(self._text).strip()
            self._text = None
        elif tag == "figure" and self._figure is not None:
            self.figures.append(self._figure)
            self._figure = None
        elif tag in ("td", "th") and self._table is not None and self._text is not None:
            self.tables[self._table][-1].append("".join(self._text).strip())
            self._text = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def parse(path: Path) -> tuple[str, ReportParser]:
    text = path.read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    return text, parser


def png_of(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True)))
    image.load()
    assert image.format == "PNG"
    return image.convert("RGB")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    dirs = []
    for dim in (8, 16):
        cfg = hashlab.load_config(tiny_config(root, name=f"tiny{dim}", model={"dim": dim},
                                              train={"epochs": 2}))
        trainer = hashlab.Trainer(cfg, progress=False)
        trainer.fit()
        dirs.append(trainer.run_dir)
    return dirs


@pytest.fixture(scope="module")
def one_report(runs):
    return build_report([runs[0]], runs[0] / REPORT_FILE, progress=False)


@pytest.fixture(scope="module")
def two_report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "compare.html"
    return build_report(runs, out, progress=False)


def check_self_contained_and_complete(path: Path, n_runs: int) -> ReportParser:
    text, p = parse(path)
    # nothing outside the file: no external script, stylesheet, image or frame
    assert 'src="http' not in text and "<link" not in text.lower()
    assert not p.tags & {"script", "link", "iframe", "object", "embed"}
    assert all(link.startswith(("data:image/png;base64,", "#")) for link in p.links), p.links
    expected = [f"run-{i}-{s}" for i in range(1, n_runs + 1) for s in RUN_SECTIONS]
    expected += ["comparison"] if n_runs > 1 else []
    for ident in expected:
        assert p.headings.get(ident), f"section {ident} missing or without heading"
    assert ("comparison" in p.headings) == (n_runs > 1)
    fig_sections = [f"run-{i}-{s}" for i in range(1, n_runs + 1) for s in RUN_FIGURES]
    fig_sections += ["comparison"] if n_runs > 1 else []
    assert sorted(f["section"] for f in p.figures) == sorted(fig_sections)
    # one embedded PNG per figure, each with a caption saying what it shows
    assert text.count("data:image/png;base64,") == len(p.figures) == len(fig_sections)
    for fig in p.figures:
        assert len(fig["caption"]) > 80, fig
        image = png_of(fig["src"])
        assert min(image.size) >= 100
        colours = image.getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 10, f"{fig['section']}: near-uniform image"
    return p


def test_one_run_report_is_self_contained_and_complete(one_report, runs):
    assert one_report == runs[0] / REPORT_FILE and one_report.is_file()
    p = check_self_contained_and_complete(one_report, 1)
    captions = {f["section"]: f["caption"] for f in p.figures}
    assert "Hamming" in captions["run-1-pairs"] and "metrics.json" in captions["run-1-training"]
    assert "logits" in captions["run-1-classifier"]
    # the evaluation it used is saved where `hashlab eval` writes it
    assert json.loads((runs[0] / "eval" / "retrieval.json").read_text())["protocol"] == \
        "retrieval"


def test_comparison_table_matches_evaluate_run(two_report, runs):
    p = check_self_contained_and_complete(two_report, 2)
    header, *rows = p.tables["comparison"]
    assert len(rows) == 2
    col = {name: header.index(name) for name in ("directory", "code", "float mAP@all",
                                                 "binary mAP@all", "loss")}
    for row, run_dir, bits in zip(rows, runs, (8, 16), strict=True):
        assert row[col["directory"]] == str(run_dir)
        assert row[col["code"]] == f"{bits} bits" and row[col["loss"]] == "hash-ce"
        oracle = evaluate_run(TrainedRun(run_dir), "retrieval", progress=False)["metrics"]
        assert row[col["float mAP@all"]] == f"{oracle['float']['mAP@all']:.4f}"
        assert row[col["binary mAP@all"]] == f"{oracle['binary']['mAP@all']:.4f}"


def brute_force_topk(q_bits: np.ndarray, db_bits: np.ndarray, nbits: int, k: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    q = np.unpackbits(q_bits, axis=1, count=nbits, bitorder="little").astype(np.int64)
    d = np.unpackbits(db_bits, axis=1, count=nbits, bitorder="little").astype(np.int64)
    dist = (q[:, None, :] != d[None, :, :]).sum(axis=2)
    ids = np.arange(len(d))
    order = np.array([sorted(ids, key=lambda j, row=row: (row[j], j))[:k] for row in dist])
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.mark.parametrize("which", [0, 1])
def test_retrieval_grid_matches_brute_force_ranking(one_report, two_report, runs, which):
    path = one_report if which == 0 else two_report
    _, p = parse(path)
    run = TrainedRun(runs[0])
    test = run.encode("test", progress=False, cache=False)
    db = run.encode("train", progress=False, cache=False)
    header, *rows = p.tables["retrieval-hits"][: 1 + 8]  # run 1's table comes first
    assert len(rows) == 8
    queries = np.array([int(r[0].removeprefix("test:")) for r in rows])
    ids = np.array([[int(x) for x in r[2].split()] for r in rows])
    shown = np.array([[int(x) for x in r[3].split()] for r in rows])
    marks = np.array([[x == "x" for x in r[4].split()] for r in rows])
    assert len(set(queries)) == 8 and ids.shape == (8, 10)
    oracle_ids, oracle_dist = brute_force_topk(test.bits[queries], db.bits, db.nbits, 10)
    np.testing.assert_array_equal(ids, oracle_ids)
    np.testing.assert_array_equal(shown, oracle_dist)
    wrong = db.labels[oracle_ids] != test.labels[queries][:, None]
    np.testing.assert_array_equal(marks, wrong)
    # the red frames in the picture are exactly those hits
    grid = next(f for f in p.figures if f["section"] == "run-1-grid")
    image = np.asarray(png_of(grid["src"]))
    layout = GridLayout(8, 11)
    assert image.shape[:2] == layout.size[::-1]
    for r in range(8):
        x0, y0, _, _ = layout.box(r, 0)
        assert tuple(image[y0 + 1, x0 + 1]) == QUERY_COLOUR
        for c in range(10):
            x0, y0, x1, y1 = layout.box(r, c + 1)
            expected = WRONG_COLOUR if wrong[r, c] else HIT_COLOUR
            for y, x in ((y0 + 1, x0 + 1), (y1 - 2, x1 - 2), (y0 + 1, (x0 + x1) // 2)):
                assert tuple(image[y, x]) == expected, (r, c)
    assert f"{int(wrong.sum())} of 80 hits are wrong" in grid["caption"]


def test_classifier_accuracy_matches_the_loss_logits(one_report, runs):
    _, p = parse(one_report)
    caption = next(f["caption"] for f in p.figures if f["section"] == "run-1-classifier")
    run = TrainedRun(runs[0])
    test = run.encode("test", progress=False, cache=False)
    with torch.no_grad():
        pred = run.loss_fn.eval().logits(torch.from_numpy(test.float)).argmax(1).numpy()
    assert f"Accuracy {(pred == test.labels).mean():.4f}." in caption
    assert f"all {len(test)} test images" in caption


def test_report_is_deterministic(one_report, runs, tmp_path):
    # the first report evaluated the run; these read the evaluation it saved
    first = build_report([runs[0]], tmp_path / "a.html", progress=False)
    second = build_report([runs[0]], tmp_path / "b.html", progress=False)
    assert first.read_bytes() == second.read_bytes()
    # the same figures, byte for byte, whether the evaluation was computed or read
    assert [f["src"] for f in parse(first)[1].figures] == \
        [f["src"] for f in parse(one_report)[1].figures]


def test_existing_evaluation_is_used_unless_older_than_the_model(runs, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0], run_dir)  # keeps the mtimes
    result = evaluate_run(TrainedRun(run_dir), "retrieval", progress=False)
    result["metrics"]["binary"]["mAP@all"] = 0.123456
    path = run_dir / "eval" / "retrieval.json"
    path.write_text(json.dumps(result))
    out = build_report([run_dir, runs[1]], tmp_path / "r.html", progress=False)
    assert "<td class=\"num\">0.1235</td>" in out.read_text()
    model_time = (run_dir / FINAL_MODEL).stat().st_mtime
    os.utime(path, (model_time - 10, model_time - 10))  # a stale file is evaluated again
    out = build_report([run_dir, runs[1]], tmp_path / "r.html", progress=False)
    assert "0.1235" not in out.read_text()
    assert json.loads(path.read_text())["metrics"]["binary"]["mAP@all"] != 0.123456


def test_protocol_choice():
    def fake(dataset, protocol):
        return SimpleNamespace(config=SimpleNamespace(
            data=SimpleNamespace(dataset=dataset), eval=SimpleNamespace(protocol=protocol)))

    name, note = A.choose_protocol(fake("digits", "fmnist-retrieval"), None)
    assert name == "retrieval" and "Fashion-MNIST" in note
    assert A.choose_protocol(fake("fmnist", "fmnist-retrieval"), None) == \
        ("fmnist-retrieval", None)
    assert A.choose_protocol(fake("digits", "retrieval"), "fmnist-retrieval") == \
        ("fmnist-retrieval", None)
    with pytest.raises(HashlabError):
        A.choose_protocol(fake("digits", "retrieval"), "no-such-protocol")


def test_refuses_a_folder_as_output(runs, tmp_path):
    with pytest.raises(HashlabError, match="is a folder"):
        build_report([runs[0]], tmp_path, progress=False)
    with pytest.raises(HashlabError, match="at least one run"):
        build_report([], tmp_path / "x.html", progress=False)


# ------------------------------------------------------------ the analysis, on synthetic codes
def synthetic(n: int, dim: int, classes: int, seed: int, binary: bool) -> Codes:
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n).astype(np.int64)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    floats = centres[labels] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    bits = pack_bits(floats) if binary else None
    return Codes(floats, bits, labels, dim if binary else None)


def test_float_examples_match_brute_force_cosine():
    q, db = synthetic(30, 6, 4, 1, False), synthetic(200, 6, 4, 2, False)
    db.float[7] = db.float[3]  # an exact tie: the lower index ranks first
    ex = A.retrieval_examples(q, db, n_queries=8, k=10, seed=0)
    assert not ex.binary
    np.testing.assert_array_equal(ex.query_ids, np.sort(
        np.random.default_rng(0).choice(30, 8, replace=False)))
    for row, qi in enumerate(ex.query_ids):
        a = q.float[qi] / np.linalg.norm(q.float[qi])
        sims = [float(a @ (d / np.linalg.norm(d))) for d in db.float]
        order = sorted(range(len(sims)), key=lambda j: (-round(sims[j], 5), j))[:10]
        assert list(ex.ids[row]) == order
        np.testing.assert_allclose(ex.scores[row], [sims[j] for j in order], atol=1e-5)
        np.testing.assert_array_equal(ex.wrong[row], db.labels[order] != q.labels[qi])


@pytest.mark.parametrize("binary", [True, False])
def test_pair_scores_are_relevant_and_irrelevant_pairs(binary):
    # every code of a class is the same, and the classes' codes differ: relevant pairs score
    # exactly "identical", irrelevant ones never do
    rng = np.random.default_rng(3)
    table = np.array([[1, 0, 0, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 1, 1, 1],
                      [1, 1, 0, 1, 0, 0, 1, 0]], dtype=np.float32) * 2 - 1

    def codes(labels):
        f = table[labels]
        return Codes(f, pack_bits(f) if binary else None,
                     labels.astype(np.int64), 8 if binary else None)

    q, db = codes(rng.integers(3, size=50)), codes(rng.integers(3, size=120))
    pairs = A.pair_scores(q, db, n_pairs=400, seed=0)
    assert pairs.binary == binary and len(pairs.relevant) == len(pairs.irrelevant) == 400
    if binary:
        assert (pairs.relevant == 0).all() and (pairs.irrelevant > 0).all()
    else:
        np.testing.assert_allclose(pairs.relevant, 1.0, atol=1e-6)
        assert (pairs.irrelevant < 0.99).all()
    rel, irr = pairs.relevant_pairs, pairs.irrelevant_pairs
    assert (q.labels[rel[:, 0]] == db.labels[rel[:, 1]]).all()
    assert (q.labels[irr[:, 0]] != db.labels[irr[:, 1]]).all()
    # drawn uniformly: 400 draws reach most of the 50 queries and 120 database items
    for drawn in (rel, irr):
        assert len(np.unique(drawn[:, 0])) > 40 and len(np.unique(drawn[:, 1])) > 90
    if binary:
        a, b = (np.unpackbits(x, axis=1) for x in (q.bits[irr[:, 0]], db.bits[irr[:, 1]]))
        np.testing.assert_array_equal(pairs.irrelevant, (a != b).sum(1))
    again = A.pair_scores(q, db, n_pairs=400, seed=0)
    np.testing.assert_array_equal(again.irrelevant, pairs.irrelevant)


def test_one_nn_classifier_and_confusion_matrix():
    from sklearn.metrics import confusion_matrix

    q, db = synthetic(60, 16, 5, 4, True), synthetic(300, 16, 5, 5, True)
    fake = SimpleNamespace(loss_fn=object(), config=None)  # a loss without logits
    clf = A.code_classifier(fake, q, db, max_nn_queries=40, seed=0)
    assert clf.method == "1-nn" and len(clf.true) == 40
    idx = np.sort(np.random.default_rng(0).choice(60, 40, replace=False))
    qb = np.unpackbits(q.bits[idx], axis=1, bitorder="little")
    dbb = np.unpackbits(db.bits, axis=1, bitorder="little")
    nearest = (qb[:, None, :] != dbb[None]).sum(2).argmin(1)
    np.testing.assert_array_equal(clf.predicted, db.labels[nearest])
    np.testing.assert_array_equal(clf.true, q.labels[idx])
    classes, counts = A.confusion_matrix(clf.true, clf.predicted)
    np.testing.assert_array_equal(counts, confusion_matrix(clf.true, clf.predicted,
                                                           labels=classes))


def test_projection_is_pca():
    from sklearn.decomposition import PCA

    codes = synthetic(2500, 12, 4, 6, False)
    proj = A.pca_projection(codes.float, codes.labels, max_points=2000, seed=0)
    assert len(proj.points) == 2000 and len(np.unique(proj.indices)) == 2000
    ref = PCA(2).fit(codes.float[proj.indices].astype(np.float64))
    want = ref.transform(codes.float[proj.indices].astype(np.float64))
    for i in range(2):  # equal up to each component's sign
        assert min(np.abs(proj.points[:, i] - want[:, i]).max(),
                   np.abs(proj.points[:, i] + want[:, i]).max()) < 1e-6
    np.testing.assert_allclose(proj.explained, ref.explained_variance_ratio_, rtol=1e-6)
    np.testing.assert_array_equal(proj.labels, codes.labels[proj.indices])


def test_caption_numbers_are_not_placeholders(one_report):
    _, p = parse(one_report)
    for fig in p.figures:
        assert not re.search(r"\{|\}|None|nan", fig["caption"]), fig["caption"]
