"""Re-run the benchmarks in ``benchmarks/`` and regenerate the tables and figures of
``docs/results.md`` from their JSON.

    python benchmarks/run_all.py --quick            # the quick tier: ~100 min on a 2-core CPU
    python benchmarks/run_all.py                    # full mode: many hours (GPU advised)
    python benchmarks/run_all.py --only 'hash*'     # some benchmarks (fnmatch or substring)
    python benchmarks/run_all.py --tables-only      # no running: tables and figures from JSON
    python benchmarks/run_all.py --check            # exit 1 if docs/results.md is stale
    python benchmarks/run_all.py --list             # the plan, with time estimates

Each benchmark runs as a subprocess (``python benchmarks/<script> <args>``) with its output
streamed; one that fails does not stop the others (the failures are listed at the end and the
exit code is 1). Resume: a benchmark whose JSON already exists, was written in the same mode and
is complete (``"complete": true``, or no such field for scripts that write their JSON once, at
the end) is skipped unless ``--force``; the training benchmarks also cache every finished
training run under ``runs/``, so an interrupted one continues where it stopped. A fresh clone
has the committed JSON, so ``--quick --force`` is what re-measures it. After running, every
``<!-- results-table: NAME -->`` block of ``docs/results.md`` is regenerated
(``benchmarks/results_tables.py``) and the figures are redrawn under ``docs/figures/``.

Quick mode never writes the JSON of full mode: where a script's quick arguments differ from its
full ones, its quick JSON has a ``_quick`` name (or ``"mode": "quick"`` inside).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_tables  # noqa: E402  (a sibling module)

REPO = results_tables.REPO


@dataclass(frozen=True)
class Plan:
    """How a benchmark runs in one mode: its arguments, the JSON files it writes (relative to
    ``benchmarks/results/``) and the expected wall time on an idle 2-core CPU."""

    args: tuple[str, ...]
    outputs: tuple[str, ...]
    minutes: float


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    quick: Plan | None  # None: not part of the quick tier
    full: Plan
    what: str
    env: dict[str, str] = field(default_factory=dict)

    def plan(self, mode: str) -> Plan | None:
        return self.quick if mode == "quick" else self.full


#: every benchmark, in the order run_all runs them (the cheap ones first)
BENCHMARKS: list[Benchmark] = [
    Benchmark("metrics-speed", "metrics_speed.py",
              Plan((), ("metrics_speed.json",), 0.5), Plan((), ("metrics_speed.json",), 0.5),
              "retrieval_metrics speed against a naive argsort (same run in both modes)"),
    Benchmark("losses-speed", "losses_speed.py",
              Plan((), ("losses_speed.json",), 0.5), Plan((), ("losses_speed.json",), 0.5),
              "MarginSoftmax forward + backward at 10,000 classes (same run in both modes)"),
    Benchmark("hashers-fmnist", "hashers_fmnist.py",
              Plan(("--quick",), ("hashers_fmnist_quick.json",), 0.6),
              Plan((), ("hashers_fmnist.json",), 3.6),
              "classical hashers on raw pixels; quick: a 10,000-image database subset",
              env={"OMP_NUM_THREADS": "1"}),
    Benchmark("hashers-itq", "hashers_itq.py",
              Plan((), ("hashers_itq.json",), 1.3), Plan((), ("hashers_itq.json",), 1.3),
              "64-bit ITQ: seeds, iterations, fitting subset (same run in both modes)"),
    Benchmark("train-throughput", "train_throughput.py",
              Plan((), ("train_throughput.json",), 2.0),
              Plan((), ("train_throughput.json",), 2.0),
              "Trainer against a plain PyTorch loop (same run in both modes)"),
    Benchmark("serve", "serve.py",
              Plan((), ("serve.json",), 1.5), Plan((), ("serve.json",), 1.5),
              "hashlab serve throughput and latency; trains a 1-epoch model into runs/ first"),
    Benchmark("search", "search.py", None, Plan((), ("search.json",), 5.0),
              "binary index kinds on 1M random codes (+ runs/fmnist-hash64 if trained); "
              "full mode only"),
    Benchmark("partial-fc", "partial_fc.py",
              Plan(("--quick",), ("partial_fc_quick.json",), 5.0),
              Plan((), ("partial_fc_full.json",), 30.0),
              "Partial FC: memory and step time at 100k / 1M classes (full classifier vs "
              "r = 0.1, dense and sparse gradient) and accuracy at r = 0.1 vs 1.0, seeds 0-2; "
              "quick: 2,000 classes, 3,000 steps; full: 10,000 classes, 15,000 steps"),
    Benchmark("search-backends", "search_backends.py",
              Plan(("--quick",), ("search_backends_quick.json",), 3.0),
              Plan((), ("search_backends_full.json",), 40.0),
              "FAISS flat vs Milvus (milvus-lite, a test stand-in) on the same random codes: "
              "inserts/s, single-query latency, batch throughput, agreement; 64-bit binary and "
              "128-d float; quick: 100k codes; full: 100k and 1M"),
    Benchmark("losses-openset", "losses_openset.py",
              Plan(("--quick",), ("losses_openset_quick.json",), 10.0),
              Plan((), ("losses_openset_full.json",), 180.0),
              "discriminative losses, fmnist-openset + fmnist-retrieval; quick: 3 epochs on "
              "12,000 images, seeds 0-2; full: 10 epochs, all images, seeds 0-2"),
    Benchmark("hashing", "hashing.py",
              Plan(("--quick", "--skip-classical", "--bits", "64", "--unseen-bits"),
                   ("hashing_quick.json",), 11.0),
              Plan((), ("hashing_full.json",), 660.0),
              "deep hashing (12 methods) + DPH; quick: 3 epochs on 12,000 images, 64 bits, "
              "seed 0, no unseen-class runs, no classical hashers (hashers-fmnist has them; "
              "the 49-run default plan of `hashing.py --quick` alone takes ~30 min); full: "
              "10 epochs, 12-64 bits, seeds 0-2 at 16/64 bits, unseen classes at 64 bits, "
              "classical hashers (~5 min per run on the CPU)"),
    Benchmark("crossmodal", "crossmodal.py",
              Plan(("--quick",), ("crossmodal_quick.json",), 12.0),
              Plan((), ("crossmodal_full.json",), 150.0),
              "cross-modal hashing on fmnist-captions, AADAH vs DCMH, 16/32/64 bits, seeds "
              "0-2; quick: 2,000 training pairs, 5 epochs, 500 queries"),
    Benchmark("finegrained", "finegrained.py",
              Plan(("--quick",), ("finegrained_quick.json",), 60.0),
              Plan((), ("finegrained_full.json",), 600.0),
              "fine-grained hashing, ExchNet vs ADSH / OrthoHash / hash-ce on fmnist-fine-upper "
              "and fmnist-fine-shoes, 12/24/32/48 bits, seeds 0-2 (96 runs); quick: 3 epochs on "
              "6,000 images of the classes; full: 10 epochs on all of them"),
    Benchmark("recipes", "recipes.py",
              Plan(("--quick",), ("recipes_quick.json",), 75.0),
              Plan((), ("recipes_full.json",), 900.0),
              "training recipes: Tri-net (+ ablations), pseudo-labelling, FeatMatch-lite and "
              "supervised-only on fmnist-semi; Born-Again generations, variants and ensembles "
              "on fmnist-ban; seeds 0-2; quick: 1,000 labels, 8,000 unlabelled images, 5 "
              "rounds, BAN on 2,000 images for 20 epochs; full: 250/1,000/4,000 labels, the "
              "whole pool, 10 rounds, BAN on 5,000 images for 40 epochs"),
    Benchmark("recipes-weak", "recipes_weak.py",
              Plan(("--quick",), ("recipes_weak_quick.json",), 60.0),
              Plan((), ("recipes_weak_full.json",), 400.0),
              "complementary labels (Shirt vs rest, with / without the class labels), fixed vs "
              "learned augmentation on the low-label split, k-means self-label hashing vs "
              "LSH/PCAH/ITQ/SH at 16-64 bits; seeds 0-2; quick: 100 and 1,000 labelled images, "
              "1,000 labels, 12,000 images and 2 rounds for k-means; full: 100-5,000 images, "
              "1,000 and 5,000 labels, all images"),
]


def select(patterns: Sequence[str] | None, benchmarks: Sequence[Benchmark] = BENCHMARKS
           ) -> list[Benchmark]:
    """The benchmarks whose name matches one of ``patterns`` (fnmatch or substring; each item
    may be a comma-separated list); all of them without patterns."""
    pats = [p.strip() for item in patterns or [] for p in item.split(",") if p.strip()]
    if not pats:
        return list(benchmarks)
    return [b for b in benchmarks
            if any(fnmatch.fnmatch(b.name, p) or p in b.name for p in pats)]


def is_done(path: Path, mode: str) -> bool:
    """Whether a JSON exists, is complete and was written in ``mode``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if data.get("complete") is False:
        return False
    if "mode" in data and data["mode"] != mode:
        return False
    return "quick" not in data or data["quick"] == (mode == "quick")


def subprocess_runner(cmd: list[str], env: dict[str, str]) -> int:
    return subprocess.call(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


Runner = Callable[[list[str], dict[str, str]], int]


def run_benchmarks(benchmarks: Sequence[Benchmark], mode: str, force: bool = False,
                   results_dir: Path = results_tables.RESULTS_DIR,
                   runner: Runner | None = None) -> list[tuple[str, str, float]]:
    """Run what is not done yet; returns (name, "ran" / "skipped" / "FAILED (rc)", seconds)."""
    runner = runner or subprocess_runner
    todo = [(b, b.plan(mode)) for b in benchmarks if b.plan(mode) is not None]
    for b in benchmarks:
        if b.plan(mode) is None:
            print(f"{b.name}: not part of {mode} mode", flush=True)
    start = time.perf_counter()
    report = []
    for i, (b, plan) in enumerate(todo, 1):
        head = f"[{i}/{len(todo)}] {b.name}"
        elapsed = f"{(time.perf_counter() - start) / 60:.1f} min elapsed"
        if not force and all(is_done(results_dir / out, mode) for out in plan.outputs):
            print(f"{head}: done already ({', '.join(plan.outputs)}), skipped; {elapsed}",
                  flush=True)
            report.append((b.name, "skipped", 0.0))
            continue
        cmd = [sys.executable, str(Path("benchmarks") / b.script), *plan.args]
        print(f"\n{head}: {' '.join(cmd[1:])} (expected ~{plan.minutes:g} min; {elapsed})",
              flush=True)
        t0 = time.perf_counter()
        rc = runner(cmd, b.env)
        seconds = time.perf_counter() - t0
        report.append((b.name, "ran" if rc == 0 else f"FAILED (exit code {rc})", seconds))
        print(f"{head}: {report[-1][1]} in {seconds / 60:.1f} min", flush=True)
    return report


def update_tables(doc: Path, results_dir: Path, figures_dir: Path | None) -> list[str]:
    """Regenerate the blocks of ``doc`` (and the figures, unless ``figures_dir`` is None);
    returns the names of the blocks that changed."""
    load = results_tables.loader(results_dir)
    text = doc.read_text(encoding="utf-8")
    changed = results_tables.stale_blocks(text, load)
    new = results_tables.render(text, load)
    if new != text:
        doc.write_text(new, encoding="utf-8")
    if figures_dir is not None:
        results_tables.write_figures(load, figures_dir)
    return changed


def print_plan(benchmarks: Sequence[Benchmark], results_dir: Path) -> None:
    total = {"quick": 0.0, "full": 0.0}
    for b in benchmarks:
        print(f"{b.name}  (benchmarks/{b.script}): {b.what}")
        for mode in ("quick", "full"):
            plan = b.plan(mode)
            if plan is None:
                print(f"  {mode:5s}  not run")
                continue
            total[mode] += plan.minutes
            done = all(is_done(results_dir / out, mode) for out in plan.outputs)
            print(f"  {mode:5s}  ~{plan.minutes:g} min  args: {' '.join(plan.args) or '-'}  "
                  f"-> {', '.join(plan.outputs)}{'  [done]' if done else ''}")
    print(f"\nexpected on an idle 2-core CPU: quick ~{total['quick']:.0f} min, full "
          f"~{total['full'] / 60:.0f} h")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick tier (~30 min, CPU)")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="benchmarks to run: fnmatch pattern or substring of the name; "
                             "repeatable or comma-separated")
    parser.add_argument("--force", action="store_true", help="re-run finished benchmarks too")
    parser.add_argument("--tables-only", action="store_true",
                        help="run nothing: regenerate the tables and figures from the JSON")
    parser.add_argument("--check", action="store_true",
                        help="run nothing, write nothing: exit 1 if a table is stale")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    parser.add_argument("--doc", type=Path, default=results_tables.DOC)
    parser.add_argument("--results", type=Path, default=results_tables.RESULTS_DIR)
    parser.add_argument("--figures", type=Path, default=results_tables.FIGURES_DIR)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    chosen = select(args.only)
    if not chosen:
        parser.error(f"--only {args.only}: no benchmark matches; known: "
                     f"{', '.join(b.name for b in BENCHMARKS)}")

    if args.list:
        print_plan(chosen, args.results)
        return 0
    if args.check:
        stale = results_tables.stale_blocks(args.doc.read_text(encoding="utf-8"),
                                            results_tables.loader(args.results))
        for name in stale:
            print(f"stale: {args.doc} table {name}")
        if stale:
            print("run `python benchmarks/run_all.py --tables-only` to regenerate them")
        return 1 if stale else 0

    report = [] if args.tables_only else run_benchmarks(chosen, mode, args.force, args.results)
    changed = update_tables(args.doc, args.results, args.figures)
    print(f"\n{args.doc}: {len(changed)} table(s) regenerated"
          f"{': ' + ', '.join(changed) if changed else ''}; figures in {args.figures}")
    for name, status, seconds in report:
        print(f"  {name:18s} {status:28s} {seconds / 60:6.1f} min")
    failed = [name for name, status, _ in report if status.startswith("FAILED")]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
