"""Weak-supervision recipe benchmark (issue 16): complementary labels, the learned sample-aware
augmentor, and unsupervised hashing from k-means self-labels. 3 seeds.

- ``complementary`` (the ``fmnist-complementary`` protocol): the main task is Shirt vs the
  rest (``configs/fmnist/semi/complementary-shirt.yaml``), trained on N labelled images
  (stratified over the 10 classes) with and without the other class labels as complementary
  targets; the same steps for both arms at a size. Reported: the main task's test AP and F1
  (threshold chosen on the validation part).
- ``augment``: ``fmnist/hash64`` on the low-label split (``data.semi``) with no augmentation,
  fixed random affine, fixed random elastic, and the learned augmentor; test accuracy of the
  run's classifier and fmnist-retrieval mAP@all of its codes.
- ``unsupervised``: the ``kmeans-labels`` recipe (``configs/unsupervised/kmeans-64.yaml``, no
  labels) at 16 / 32 / 64 bits against the unsupervised classical hashers LSH, PCAH, ITQ and SH
  fitted in the same run, all on fmnist-retrieval (mAP@all; true labels only for scoring).

    python benchmarks/recipes_weak.py --quick   # sizes 100 and 1,000; 1,000 labels; 2 rounds
    python benchmarks/recipes_weak.py           # sizes 100-5,000; 1,000 and 5,000 labels

Runs are cached under --workdir; the JSON is rewritten after every run (``"complete": false``
until the plan is done).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from hashlab.io import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hashing import machine  # noqa: E402  (sibling scripts)
from recipes import load, run_recipe, test_probabilities  # noqa: E402

COMPLEMENTARY_PRESET = "configs/fmnist/semi/complementary-shirt.yaml"
#: fixed optimiser steps per complementary run (both arms, every size)
COMPLEMENTARY_STEPS = {"quick": 600, "full": 1500}
AUGMENTS: dict[str, tuple[str, list[str]]] = {  # arm → (run-name slug, data.augment overrides)
    "none": ("none", []),
    "fixed affine (0.1)": ("affine", ["data.augment.affine=0.1"]),
    "fixed elastic (0.1)": ("elastic", ["data.augment.elastic=0.1"]),
    "learned (affine + TPS)": ("learned", ["data.augment.learned={}"]),
}
AUGMENT_EPOCHS = {"quick": 30, "full": 60}
KMEANS_PRESET = "configs/unsupervised/kmeans-64.yaml"
CLASSICAL = ("lsh", "pcah", "itq", "sh")


def complementary_run(n: int, aux: bool, seed: int, mode: str, workdir: Path) -> dict[str, Any]:
    cfg = load(COMPLEMENTARY_PRESET, [f"seed={seed}", f"data.semi.seed={seed}",
                                      f"data.semi.labels_per_class={n // 10}"])
    per_epoch = math.ceil(n / cfg.train.batch_size)
    epochs = max(10, round(COMPLEMENTARY_STEPS[mode] / per_epoch))
    cfg.recipe.args = {**cfg.recipe.args, "epochs": epochs, "chunks": 10,
                       "auxiliary": {"classes": 1.0} if aux else {}}
    return run_recipe(cfg, workdir / f"comp-{n}-{'aux' if aux else 'main'}-s{seed}")


def augment_run(arm: str, per_class: int, seed: int, mode: str, workdir: Path
                ) -> dict[str, Any]:
    from hashlab.encode import TrainedRun
    from hashlab.eval.protocols import evaluate_run
    from hashlab.train.engine import FINAL_MODEL, Trainer

    slug, overrides = AUGMENTS[arm]
    run_dir = workdir / f"aug-{per_class * 10}-{slug}-s{seed}"
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = load("fmnist/hash64", [
        f"seed={seed}", f"train.epochs={AUGMENT_EPOCHS[mode]}", "train.batch_size=100",
        f"data.semi={{labels_per_class: {per_class}, validation: 5000, seed: {seed}}}",
        *overrides])
    start = time.perf_counter()
    if not (run_dir / FINAL_MODEL).exists():
        Trainer(cfg, run_dir, progress=False).fit(resume=(run_dir / "checkpoint.pt").exists())
    probs, labels = test_probabilities(run_dir)
    metrics = evaluate_run(TrainedRun(run_dir), "fmnist-retrieval", progress=False)["metrics"]
    result = {"test_accuracy": float((probs.argmax(1) == labels).mean()),
              "mAP@all": float(metrics["binary"]["mAP@all"]),
              "wall_seconds": time.perf_counter() - start}
    atomic_write_json(done, result)
    return result


def kmeans_run(nbits: int, seed: int, mode: str, workdir: Path) -> dict[str, Any]:
    overrides = [f"seed={seed}", f"model.dim={nbits}"]
    if mode == "quick":
        overrides.append("train.limit_train_samples=12000")
    cfg = load(KMEANS_PRESET, overrides)
    if mode == "quick":
        cfg.recipe.args = {**cfg.recipe.args, "rounds": 2, "epochs_per_round": 1}
    return run_recipe(cfg, workdir / f"kmeans-{nbits}-s{seed}")


def classical(bits: list[int], seeds: list[int]) -> dict[str, dict[str, list[float]]]:
    from hashers_fmnist import load as load_pixels
    from hashers_fmnist import run_one

    data = load_pixels(False)
    return {name: {str(b): [run_one(name, b, data, s)["mAP@all"] for s in seeds] for b in bits}
            for name in CLASSICAL}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", nargs="+", default=["complementary", "augment",
                                                       "unsupervised"],
                        choices=["complementary", "augment", "unsupervised"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    workdir = args.workdir or Path("runs") / f"bench-recipes-weak-{mode}"
    out = args.out or Path("benchmarks/results") / f"recipes_weak_{mode}.json"
    sizes = [100, 1000] if args.quick else [100, 300, 1000, 5000]
    aug_labels = [100] if args.quick else [100, 500]
    bits = [16, 32, 64]
    jobs: list[tuple[Any, ...]] = []
    for seed in args.seeds:  # seed by seed, so that a partial run has every part
        if "unsupervised" in args.parts:
            jobs += [("unsupervised", seed, b) for b in reversed(bits)]
        if "complementary" in args.parts:
            jobs += [("complementary", seed, n, aux) for n in sizes for aux in (False, True)]
        if "augment" in args.parts:
            jobs += [("augment", seed, p, arm) for p in aug_labels for arm in AUGMENTS]
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv), "mode": mode, "machine": machine(),
        "seeds": args.seeds, "planned_runs": len(jobs), "complete": False,
        "complementary_steps": COMPLEMENTARY_STEPS[mode], "augment_epochs": AUGMENT_EPOCHS[mode],
        "complementary": {}, "augment": {}, "unsupervised": {}}
    if "unsupervised" in args.parts:
        result["classical"] = classical(bits, args.seeds)
    start = time.perf_counter()
    for done, job in enumerate(jobs, 1):
        part, seed = job[0], job[1]
        if part == "complementary":
            summary = complementary_run(job[2], job[3], seed, mode, workdir)
            cell = result["complementary"].setdefault(str(job[2]), {}).setdefault(
                "with complementary labels" if job[3] else "main task only",
                {"test_ap": [], "test_f1": [], "mAP@all": []})
            cell["test_ap"].append(summary["test_ap"])
            cell["test_f1"].append(summary["test_f1@val_threshold"])
            cell["mAP@all"].append(summary["mAP@all"])
        elif part == "augment":
            row = augment_run(job[3], job[2], seed, mode, workdir)
            cell = result["augment"].setdefault(str(job[2] * 10), {}).setdefault(
                job[3], {"test_accuracy": [], "mAP@all": []})
            cell["test_accuracy"].append(row["test_accuracy"])
            cell["mAP@all"].append(row["mAP@all"])
        else:
            summary = kmeans_run(job[2], seed, mode, workdir)
            result["unsupervised"].setdefault(str(job[2]), []).append(summary["mAP@all"])
        result.update(runs_done=done, complete=done == len(jobs),
                      wall_minutes_this_invocation=(time.perf_counter() - start) / 60)
        atomic_write_json(out, result)
    print(json.dumps({k: result[k] for k in ("complementary", "augment", "unsupervised")},
                     indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
