"""Open-set and closed-set benchmark of the discriminative loss family on Fashion-MNIST.

fmnist-openset (docs/protocols.md): train on classes 0–5, evaluate on the test images
of the unseen classes 6–9: retrieval mAP@all (each image against all others), 10-fold
verification accuracy and TAR@FAR=1e-3 on 6,000 seeded pairs. fmnist-retrieval: the closed-set
protocol of the demo, with 64-bit codes. Each method is a bundled preset
(configs/fmnist/<method>-64.yaml): the same network and schedule, only the loss differs.

    python benchmarks/losses_openset.py --quick          # < 20 min on a 2-core CPU
    python benchmarks/losses_openset.py                  # full: 10 epochs, all training images

Every finished run is kept under --workdir and reused, so an interrupted benchmark continues
where it stopped. The runs go seed by seed (every method's seed 0 before any method's seed 1),
and the JSON (--out) is rewritten after every run with ``"complete": false`` and the counts
``runs_done`` / ``runs_planned`` until the plan is done, so a partial table can be published.
Prints a table (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from hashing import machine  # a sibling script: the machine in words

from hashlab.cli import resolve_config_path
from hashlab.config import load_config
from hashlab.encode import TrainedRun
from hashlab.eval.openset import OPENSET_TRAIN_CLASSES
from hashlab.eval.protocols import evaluate_run
from hashlab.io import atomic_write_json
from hashlab.train.engine import FINAL_MODEL, Trainer

METHODS = ["softmax", "cosface", "arcface", "sv-softmax", "sv-am-softmax", "sv-arc-softmax",
           "triplet", "softmax-triplet", "selective-contrastive"]
QUICK = ["train.epochs=3", "train.limit_train_samples=12000",
         "model.backbone_args={width: 16, feature_dim: 256}"]
COLUMNS = {  # (protocol, code kind, metric key) → column title
    ("fmnist-openset", "float", "mAP@all"): "open mAP (float)",
    ("fmnist-openset", "binary", "mAP@all"): "open mAP (64b)",
    ("fmnist-openset", "float", "verification_accuracy"): "verif acc",
    ("fmnist-openset", "float", "TAR@FAR=0.001"): "TAR@1e-3",
    ("fmnist-retrieval", "binary", "mAP@all"): "closed mAP (64b)",
}


def run_one(method: str, seed: int, protocol: str, quick: bool, workdir: Path) -> dict:
    """Train (or reuse) one run and evaluate it; the result JSON doubles as a cache."""
    name = f"{method}-{protocol.split('-')[1]}-s{seed}"
    run_dir = workdir / name
    result_path = run_dir / "eval" / f"{protocol}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    overrides = [f"seed={seed}", f"name={name}", f"eval.protocol={protocol}"]
    if protocol == "fmnist-openset":
        overrides.append(f"data.classes={OPENSET_TRAIN_CLASSES}")
    preset = resolve_config_path(f"fmnist/{method}-64")
    cfg = load_config(preset, overrides + (QUICK if quick else []))
    start = time.perf_counter()
    if not (run_dir / FINAL_MODEL).exists():
        resume = (run_dir / "checkpoint.pt").exists()
        Trainer(cfg, run_dir, progress=False).fit(resume=resume)
    result = evaluate_run(TrainedRun(run_dir), protocol, progress=False)
    result["train_and_eval_seconds"] = time.perf_counter() - start
    atomic_write_json(result_path, result)
    return result


def summarise(results: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, list[float]]]:
    table: dict[str, dict[str, list[float]]] = {}
    for method, by_protocol in results.items():
        row: dict[str, list[float]] = {}
        for (protocol, kind, key), title in COLUMNS.items():
            values = [r["metrics"][kind][key] for r in by_protocol.get(protocol, [])
                      if kind in r["metrics"]]
            if values:
                row[title] = values
        table[method] = row
    return table


def format_table(table: dict[str, dict[str, list[float]]]) -> str:
    titles = list(COLUMNS.values())
    lines = ["| method | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for method, row in table.items():
        cells = []
        for t in titles:
            v = row.get(t)
            cells.append("–" if not v else f"{np.mean(v):.4f} ± {np.std(v):.4f}" if len(v) > 1
                         else f"{v[0]:.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plan(methods: list[str], seeds: list[int], closed_seeds: list[int]
         ) -> list[tuple[str, str, int]]:
    """(method, protocol, seed) in run order, seed by seed: every method's first seed (open
    set, then closed set) before any method's second."""
    order = [*seeds, *(s for s in closed_seeds if s not in seeds)]
    return [(m, protocol, seed) for seed in order for m in methods
            for protocol, used in (("fmnist-openset", seeds), ("fmnist-retrieval", closed_seeds))
            if seed in used]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs on 12,000 images")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--closed-seeds", nargs="*", type=int, default=None,
                        help="seeds of the closed-set runs (default: the first seed in quick "
                             "mode, all seeds otherwise; the option alone: none, open set only)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    workdir = args.workdir or Path("runs") / f"bench-losses-{mode}"
    out = args.out or Path("benchmarks/results") / f"losses_openset_{mode}.json"
    closed_seeds = args.closed_seeds if args.closed_seeds is not None else (
        args.seeds[:1] if args.quick else args.seeds)

    jobs = plan(args.methods, args.seeds, closed_seeds)
    start = time.perf_counter()
    results: dict[str, dict[str, dict[int, dict]]] = {
        m: {"fmnist-openset": {}, "fmnist-retrieval": {}} for m in args.methods}
    record = {"mode": mode, "machine": machine(), "seeds": args.seeds,
              "closed_seeds": closed_seeds, "methods": args.methods,
              "quick_overrides": QUICK if args.quick else [], "runs_planned": len(jobs),
              "command": "python " + " ".join(sys.argv)}

    def save(done: int) -> dict[str, dict[str, list[float]]]:
        table = summarise({m: {p: [r for _, r in sorted(by_seed.items())]
                               for p, by_seed in row.items()} for m, row in results.items()})
        atomic_write_json(out, {**record, "runs_done": done, "complete": done == len(jobs),
                                "minutes": (time.perf_counter() - start) / 60, "table": table})
        return table

    for done, (method, protocol, seed) in enumerate(jobs, 1):
        r = run_one(method, seed, protocol, args.quick, workdir)
        results[method][protocol][seed] = r
        m = r["metrics"]
        print(f"[{done}/{len(jobs)}] {method:22s} {protocol:16s} seed {seed}: float mAP "
              f"{m['float']['mAP@all']:.4f}, 64-bit mAP {m['binary']['mAP@all']:.4f}"
              f" ({r.get('train_and_eval_seconds', 0):.0f} s)", flush=True)
        table = save(done)
    elapsed = time.perf_counter() - start
    print(f"\n{mode} mode, seeds {args.seeds} (closed-set seeds {closed_seeds}), "
          f"{elapsed / 60:.1f} min\n{format_table(table)}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
