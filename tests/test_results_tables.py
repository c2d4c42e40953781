"""docs/results.md is generated from benchmarks/results/*.json by benchmarks/run_all.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
if not (BENCHMARKS / "run_all.py").exists():  # pragma: no cover
    pytest.skip("benchmarks/ is not beside the tests", allow_module_level=True)
sys.path.insert(0, str(BENCHMARKS))

import results_tables as rt  # noqa: E402
import run_all  # noqa: E402

FULL_PARTIAL = {
    "command": "python benchmarks/hashing.py", "mode": "full", "machine": "NVIDIA H200, torch 9",
    "bits": [16, 32, 64], "seeds": [0, 1, 2], "extra_seed_bits": [64], "complete": False,
    "seconds": 600.0, "planned_runs": 60,
    "deep_runs": {"orthohash": {"64": [0.90, 0.92], "16": [0.80]}, "dpn": {"64": [0.70]}},
    "deep": {"orthohash": {"64": 0.91, "16": 0.80}, "dpn": {"64": 0.70}},
    "pr_curves": {"orthohash": {"bits": 64, "seed": 0, "radius": [0, 1, 2],
                                "precision": [1.0, 0.9, 0.5], "recall": [0.1, 0.5, 1.0]}},
}


def _loader(tmp_path: Path, files: dict[str, dict]) -> rt.Load:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(data))
    return rt.loader(tmp_path)


def test_seed_cells():
    assert rt.seed_cell(None, 3) == "–"
    assert rt.seed_cell([0.5], 1) == "0.5000"
    assert rt.seed_cell([0.5], 3) == "0.5000 (n=1)"
    assert rt.seed_cell([0.90, 0.92], 3) == "0.9100 ± 0.0100 (n=2)"


def test_partial_full_mode_table(tmp_path):
    text = rt.render_block("deep-hashing-full", _loader(tmp_path, {"hashing_full.json":
                                                                   FULL_PARTIAL}))
    assert "machine: NVIDIA H200, torch 9" in text
    # 12 known methods x (1 + 1 + 3 seeds) planned, 4 done
    assert "partial: 4 of 60 runs done" in text
    ortho = next(line for line in text.splitlines() if line.startswith("| OrthoHash"))
    assert ortho.split(" | ")[1:] == ["0.8000", "–", "**0.9100 ± 0.0100 (n=2)** |"]
    dpsh = next(line for line in text.splitlines() if line.startswith("| DPSH"))
    assert dpsh.count("–") == 3
    assert "figures/results-deep-hashing-full-pr.png" in text


def test_complete_table_has_no_partial_line(tmp_path):
    done = {**FULL_PARTIAL, "complete": True, "pr_curves": {}}
    text = rt.render_block("deep-hashing-full", _loader(tmp_path, {"hashing_full.json": done}))
    assert "partial" not in text
    assert "-pr.png" not in text  # no curves, no figure link


def test_old_quick_file_without_machine_or_runs(tmp_path):
    old = {"command": "python benchmarks/hashing.py --quick", "mode": "quick", "bits": [64],
           "deep": {"dpn": {"64": 0.7351}}, "unseen": {"dpn": {"64": 0.4955}}}
    load = _loader(tmp_path, {"hashing_quick.json": old})
    text = rt.render_block("deep-hashing-quick", load)
    assert rt.PROJECT_MACHINE in text and "| DPN (bit-wise polarization hinge, m = 1) | 0.7351 |" \
        in text and "partial" not in text
    unseen = rt.render_block("unseen-quick", load)
    assert "| DPN | 0.7351 | 0.4955 | -0.2396 |" in unseen
    # one method of twelve has an unseen-class run: the table says it is partial
    assert "**partial: 1 of 12 runs done**" in unseen and "| CSQ | – | – | – |" in unseen


def test_losses_table_partial_and_not_run(tmp_path):
    assert "Not run yet" in rt.render_block("losses-openset-full", rt.loader(tmp_path))
    partial = {"mode": "full", "seeds": [0, 1], "closed_seeds": [0, 1], "complete": False,
               "runs_done": 3, "runs_planned": 36, "machine": "a GPU",
               "table": {"softmax": {"open mAP (float)": [0.6, 0.7],
                                     "closed mAP (64b)": [0.8]}}}
    text = rt.render_block("losses-openset-full",
                           _loader(tmp_path, {"losses_openset_full.json": partial}))
    assert "partial: 3 of 36 runs done" in text and "machine: a GPU" in text
    assert "| softmax | 0.6500 ± 0.0500 (n=2) | – | – | – | 0.8000 (n=1) |" in text
    assert "| cosface | – | – | – | – | – |" in text
    assert "closed set: seeds 0, 1;" in text
    open_only = {**partial, "closed_seeds": []}  # `losses_openset.py --closed-seeds`
    text = rt.render_block("losses-openset-full",
                           _loader(tmp_path, {"losses_openset_full.json": open_only}))
    assert "closed set: not run;" in text
    assert "closed mAP (64b)" in rt._losses_bars(partial)["series"]
    no_closed = {**open_only, "table": {"softmax": {"open mAP (float)": [0.6, 0.7]}}}
    assert list(rt._losses_bars(no_closed)["series"]) == ["open mAP (float)"]


def test_check_passes_on_the_repository():
    doc = rt.DOC.read_text(encoding="utf-8")
    assert rt.stale_blocks(doc, rt.loader()) == [], \
        "run `python benchmarks/run_all.py --tables-only` to regenerate docs/results.md"
    assert run_all.main(["--check"]) == 0


def test_check_fails_after_a_hand_edit(tmp_path):
    doc = tmp_path / "results.md"
    shutil.copy(rt.DOC, doc)
    assert run_all.main(["--check", "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    start = text.index("<!-- results-table: hashers-fmnist -->")
    edited = text[:start] + text[start:].replace("0.4907", "0.5907", 1)
    doc.write_text(edited, encoding="utf-8")
    assert run_all.main(["--check", "--doc", str(doc)]) == 1
    # --tables-only repairs it (figures not drawn into the repository)
    assert run_all.update_tables(doc, rt.RESULTS_DIR, None) == ["hashers-fmnist"]
    assert doc.read_text(encoding="utf-8") == text


def test_only_selects_by_pattern_or_substring():
    names = lambda pats: [b.name for b in run_all.select(pats)]  # noqa: E731
    assert names(None) == [b.name for b in run_all.BENCHMARKS]
    assert names(["hash*"]) == ["hashers-fmnist", "hashers-itq", "hashing"]
    assert names(["speed"]) == ["metrics-speed", "losses-speed"]
    assert names(["serve,search", "hashing"]) == ["serve", "search", "search-backends",
                                                  "hashing"]
    assert names(["nothing"]) == []


def _bench(name: str, out: str, quick: bool = True) -> run_all.Benchmark:
    plan = run_all.Plan(("--x",), (out,), 1.0)
    return run_all.Benchmark(name, f"{name}.py", plan if quick else None, plan, "test")


def test_resume_skips_complete_json_and_reruns_the_rest(tmp_path):
    (tmp_path / "done.json").write_text(json.dumps({"mode": "quick", "complete": True}))
    (tmp_path / "once.json").write_text(json.dumps({"ms": 1}))  # written once, at the end
    (tmp_path / "partial.json").write_text(json.dumps({"mode": "quick", "complete": False}))
    (tmp_path / "other.json").write_text(json.dumps({"mode": "full", "complete": True}))
    benches = [_bench("done", "done.json"), _bench("once", "once.json"),
               _bench("partial", "partial.json"), _bench("other", "other.json"),
               _bench("missing", "missing.json"), _bench("fullonly", "x.json", quick=False)]
    calls = []

    def runner(cmd, env):
        calls.append(Path(cmd[1]).stem)
        return 1 if "partial" in cmd[1] else 0

    report = run_all.run_benchmarks(benches, "quick", results_dir=tmp_path, runner=runner)
    assert calls == ["partial", "other", "missing"]
    assert [r[:2] for r in report] == [
        ("done", "skipped"), ("once", "skipped"), ("partial", "FAILED (exit code 1)"),
        ("other", "ran"), ("missing", "ran")]
    calls.clear()
    run_all.run_benchmarks(benches, "quick", force=True, results_dir=tmp_path, runner=runner)
    assert calls == ["done", "once", "partial", "other", "missing"]


def test_a_failure_is_reported_and_exits_1(tmp_path, monkeypatch):
    doc = tmp_path / "results.md"
    doc.write_text("no tables\n")
    monkeypatch.setattr(run_all, "subprocess_runner", lambda cmd, env: 3)
    assert run_all.main(["--only", "metrics-speed", "--results", str(tmp_path), "--doc",
                         str(doc), "--figures", str(tmp_path / "fig")]) == 1


def test_quick_never_writes_a_full_json():
    for b in run_all.BENCHMARKS:
        if b.quick is not None and b.quick.args != b.full.args:
            assert not set(b.quick.outputs) & set(b.full.outputs), b.name


def test_figures_are_deterministic(tmp_path):
    load = _loader(tmp_path, {"hashing_full.json": FULL_PARTIAL})
    first = rt.write_figures(load, tmp_path / "a")
    second = rt.write_figures(load, tmp_path / "b")
    assert [p.name for p in first] == ["results-deep-hashing-full.png",
                                       "results-deep-hashing-full-pr.png"]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))


def test_hashing_plan_runs_every_method_once_before_any_twice():
    import hashing

    jobs = hashing.deep_plan(["a", "b"], [12, 16, 64], [0, 1, 2], [16, 64])
    assert len(jobs) == len(set(jobs)) == 2 * (3 + 3 + 1)
    assert jobs[:4] == [("a", 64, 0), ("b", 64, 0), ("a", 16, 0), ("b", 16, 0)]
    first_repeat = next(i for i, (_, _, s) in enumerate(jobs) if s != 0)
    assert {m for m, _, _ in jobs[:first_repeat]} == {"a", "b"}
    assert jobs[-2:] == [("a", 12, 0), ("b", 12, 0)]  # single-seed lengths come last


def test_hashing_collect_gathers_finished_runs_and_trains_nothing(tmp_path, monkeypatch):
    import hashing

    def no_training(*args, **kwargs):
        raise AssertionError("--collect must not train")

    monkeypatch.setattr(hashing, "Trainer", no_training)
    finished = {("dpn", 16, 0): 0.5, ("csq", 16, 1): 0.75, ("csq", 16, 0): 0.25}
    for (method, nbits, seed), value in finished.items():
        path = tmp_path / hashing.run_name(hashing.DEEP[method], nbits, seed) / "eval"
        path.mkdir(parents=True)
        (path / "fmnist-retrieval.json").write_text(json.dumps(
            {"metrics": {"binary": {"mAP@all": value}}}))
    unseen = tmp_path / hashing.run_name(hashing.DEEP["dpn"], 16, 0, "-unseen") / "eval"
    unseen.mkdir(parents=True)
    (unseen / "fmnist-unseen.json").write_text(json.dumps(
        {"metrics": {"binary": {"mAP@all": 0.4}}, "train_seconds": 5400.0, "seconds": 1800.0}))
    out = tmp_path / "out.json"
    out.write_text(json.dumps({"command": "python benchmarks/hashing.py", "deep_runs": {},
                               "seconds": 3600.0, "unseen": {"csq": {"64": 0.3}}}))
    assert hashing.main(["--collect", "--workdir", str(tmp_path), "--out", str(out),
                         "--methods", "dpn", "csq", "--bits", "16", "--seeds", "0", "1",
                         "--extra-seed-bits", "16", "--unseen-bits", "16"]) == 0
    d = json.loads(out.read_text())
    assert d["deep_runs"] == {"dpn": {"16": [0.5]}, "csq": {"16": [0.25, 0.75]}}
    # the finished unseen-class run joins the table; the earlier JSON's cells stay
    assert d["unseen"] == {"csq": {"64": 0.3}, "dpn": {"16": 0.4}}
    assert d["complete"] is False and d["planned_runs"] == 4
    assert d["command"] == "python benchmarks/hashing.py" and 3600 <= d["seconds"] < 3660
    # the caption gives the runs' own time (2 h), not the collecting process's
    assert d["compute_seconds"] == 7200.0
    caption = rt.source("hashing_full.json", d)
    assert "2.0 h of training and evaluation" in caption and " min" not in caption


def test_losses_plan_goes_seed_by_seed_and_can_skip_the_closed_set():
    import losses_openset

    jobs = losses_openset.plan(["a", "b"], [0, 1], [0])
    assert jobs == [("a", "fmnist-openset", 0), ("a", "fmnist-retrieval", 0),
                    ("b", "fmnist-openset", 0), ("b", "fmnist-retrieval", 0),
                    ("a", "fmnist-openset", 1), ("b", "fmnist-openset", 1)]
    assert losses_openset.plan(["a"], [0, 1], []) == [("a", "fmnist-openset", 0),
                                                      ("a", "fmnist-openset", 1)]


def test_hashing_carries_over_the_cells_it_does_not_rerun():
    import hashing

    previous = {"deep_runs": {"a": {"16": [0.5], "64": [0.7]}, "old": {"64": [0.1]}}}
    kept = hashing.carried_cells(previous, [("a", 64, 0), ("b", 64, 0)])
    assert kept == {"a": {16: [0.5]}, "old": {64: [0.1]}}
    assert hashing.carried_cells({}, [("a", 64, 0)]) == {}


def test_crossmodal_table_renders_mean_std_and_progress(tmp_path):
    data = {"command": "python benchmarks/crossmodal.py --quick", "mode": "quick",
            "machine": "2-core x86_64 CPU", "bits": [16], "seeds": [0, 1, 2],
            "quick_overrides": ["train.epochs=5"], "planned_runs": 6, "runs_done": 3,
            "complete": False, "minutes": 3.0,
            "table": {"dcmh": {"16": {"image_to_text": [0.80, 0.90],
                                      "text_to_image": [0.70]}}}}
    load = _loader(tmp_path, {"crossmodal_quick.json": data})
    text = rt.render_block("crossmodal-quick", load)
    assert "0.8500 ± 0.0500" in text  # two seeds of image→text
    assert "0.7000" in text and "partial: 3 of 6 runs done" in text
    assert "DCMH (baseline)" in text and "| 16 bits |" in text


def test_recipes_table_and_trinet_rounds(tmp_path):
    rounds = [{"stage": "init", "pseudo_labels": None, "pseudo_accuracy": None,
               "val_accuracy": 0.8, "fine_tune": False},
              {"stage": "round-1", "pseudo_labels": 100.0, "pseudo_accuracy": 0.9,
               "val_accuracy": 0.81, "fine_tune": False},
              {"stage": "round-2", "pseudo_labels": None, "pseudo_accuracy": None,
               "val_accuracy": 0.82, "fine_tune": True}]
    gen = [{"test_accuracy": a, "ensemble_accuracy": e, "mAP@all": 0.7}
           for a, e in ((0.80, 0.80), (0.82, 0.83), (0.81, 0.84))]
    ban = {"generations": gen, "teacher_train_accuracy": 0.999,
           "variants": {"ban+l": {"test_accuracy": 0.85, "mAP@all": 0.75}},
           "independent": {"ensemble_accuracy": {"2": 0.86, "3": 0.87}}}
    data = {"command": "python benchmarks/recipes.py --quick", "mode": "quick",
            "machine": "2-core x86_64 CPU", "seeds": [0, 1], "planned_runs": 6, "runs_done": 5,
            "complete": False, "semi_settings": {"rounds": 5},
            "ban_settings": {"labels_per_class": 200, "epochs": 20},
            "semi": {"1000": {"tri-net": {"test_accuracy": [0.83, 0.85], "mAP@all": [0.76],
                                          "steps": [1000, 1100]}}},
            "trinet_rounds": {"1000": {"0": rounds, "1": [
                rounds[0], {**rounds[1], "pseudo_labels": 300.0, "pseudo_accuracy": 0.8},
                rounds[2]]}},
            "ban": {"0": ban}}
    load = _loader(tmp_path, {"recipes_quick.json": data})
    text = rt.render_block("recipes-quick", load)
    assert "| tri-net | 0.8400 ± 0.0100 (n=2) | 0.7600 (n=1) | 1050 |" in text
    assert "| generation 2, ban+l | 0.8500 (n=1) | 0.7500 (n=1) |" in text
    assert "| BANE, generations 1–3 | 0.8400 (n=1) |" in text
    assert "| ensemble of 3 independently trained models | 0.8700 (n=1) |" in text
    assert "partial: 5 of 6 runs done" in text
    figure = rt._trinet_rounds(data)
    assert figure["rows"] == [("1", 200.0, pytest.approx(0.85), False), ("2", 0.0, None, True)]


def test_recipes_weak_table(tmp_path):
    data = {"command": "python benchmarks/recipes_weak.py --quick", "mode": "quick",
            "machine": "2-core x86_64 CPU", "seeds": [0, 1], "planned_runs": 4, "runs_done": 4,
            "complete": True, "complementary_steps": 600, "augment_epochs": 30,
            "complementary": {"100": {"main task only": {
                "test_ap": [0.5, 0.6], "test_f1": [0.4], "mAP@all": [0.3]}}},
            "augment": {"1000": {"none": {"test_accuracy": [0.8], "mAP@all": [0.7]}}},
            "unsupervised": {"64": [0.5, 0.52]},
            "classical": {"itq": {"16": [0.4], "64": [0.49, 0.49]}}}
    text = rt.render_block("recipes-weak-quick", _loader(tmp_path, {"recipes_weak_quick.json":
                                                                   data}))
    assert "| 100 | main task only | 0.5500 ± 0.0500 (n=2) | 0.4000 (n=1) |" in text
    assert "| 1,000 | none | 0.8000 (n=1) | 0.7000 (n=1) |" in text
    assert "| k-means self-labels (no labels) | – | 0.5100 ± 0.0100 (n=2) |" in text
    assert "partial" not in text


def test_full_table_sets_the_all_query_runs_beside_qsmih(tmp_path):
    d = {**FULL_PARTIAL, "all_queries": {"hashnet": {"12": 0.85, "32": 0.86},
                                         "dpn": {"12": 0.80, "48": 0.90}}}
    text = rt.render_block("deep-hashing-full", _loader(tmp_path, {"hashing_full.json": d}))
    rows = [line for line in text.splitlines() if line.startswith(("| 12 (", "| 24 (", "| 32 (",
                                                                    "| 48 ("))]
    assert rows == ["| 12 (12) | 0.8420 | 0.8500 (HashNet) | +0.0080 | 1 of 2 |",
                    "| 24 (24) | 0.8730 | – | – | – |",
                    "| 32 (36) | 0.8630 | 0.8600 (HashNet) | -0.0030 | 0 of 1 |",
                    "| 48 (48) | 0.8600 | 0.9000 (DPN) | +0.0400 | 1 of 1 |"]
    quick = {**FULL_PARTIAL, "mode": "quick"}
    assert "QSMIH" not in rt.render_block("deep-hashing-quick",
                                          _loader(tmp_path, {"hashing_quick.json": quick}))


def test_all_queries_table_evaluates_only_finished_seed0_runs(tmp_path):
    import hashing

    def write(method, nbits, seed=0, value=None, finished=True):
        run = tmp_path / hashing.run_name(hashing.DEEP[method], nbits, seed)
        (run / "eval").mkdir(parents=True)
        if finished:
            (run / hashing.FINAL_MODEL).parent.mkdir(parents=True, exist_ok=True)
            (run / hashing.FINAL_MODEL).write_bytes(b"")
        if value is not None:  # the cached result of the all-queries protocol
            (run / "eval" / "retrieval.json").write_text(
                json.dumps({"metrics": {"binary": {"mAP@all": value}}}))

    write("dpn", 12, value=0.8)
    write("dpn", 48, value=0.9)
    write("dpn", 64, value=0.95)  # not a length set beside QSMIH
    write("csq", 24, seed=1, value=0.7)  # not seed 0
    write("csq", 32, finished=False)  # still training: never evaluated
    table = hashing.all_queries_table(tmp_path, ["dpn", "csq"], [12, 24, 32, 48, 64], False,
                                      previous={"hashnet": {"12": 0.85}})
    assert table == {"hashnet": {"12": 0.85}, "dpn": {"12": 0.8, "48": 0.9}}
    assert hashing.all_queries_table(tmp_path, ["dpn"], [12], False) == {"dpn": {"12": 0.8}}
