"""Training-recipe benchmark: the semi-supervised recipes on ``fmnist-semi`` and the Born-Again
replication on ``fmnist-ban``, 3 seeds (each seed also draws its own label split).

- ``fmnist-semi`` (``data.semi``): 100 labels per class (1,000; also 25 and 400 per class in
  full mode), 5,000 held-out validation images, the rest unlabelled. Methods on the same trunk
  (small CNN + 64-bit hash layer) and heads: supervised-only (given as many optimiser steps as
  Tri-net took with the same seed), single-head pseudo-labelling, Tri-net and its ablations
  (no output smearing / no DES / no fine-tuning), FeatMatch-lite with and without its
  prototype attention. Reported: test accuracy of the heads and fmnist-retrieval mAP@all of
  the codes; Tri-net's per-round pseudo-label counts and accuracies (against the hidden labels).
- ``fmnist-ban``: a small labelled training subset (200 per class quick, 500 full) that the
  hash-ce model fits; generations 1-3 of BAN, the generation-2 variants BAN+L, CWTM, DKPP and
  BAN with embedding-level distillation of the codes, BANE (the generations' averaged softmax)
  against an ensemble of independently trained models of the same size.

    python benchmarks/recipes.py --quick   # 8,000 unlabelled images, 5 rounds; BAN 20 epochs
    python benchmarks/recipes.py           # the whole pool, 10 rounds, 3 label counts; 40 epochs

Runs are cached under --workdir (a finished run is read back, a killed one resumes) and the
JSON is rewritten after every run with ``"complete": false`` until the plan is done.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.io import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hashing import machine  # noqa: E402  (sibling scripts)
from results_tables import BAN_VARIANT_NAMES  # noqa: E402
from results_tables import recipes as recipes_table  # noqa: E402

TRINET_PRESET = "configs/fmnist/semi/trinet-1000.yaml"
FEATMATCH_PRESET = "configs/fmnist/semi/featmatch-lite.yaml"
#: method → (preset, recipe name, recipe args over the preset's); run in this order (the
#: supervised baseline's budget is read from the Tri-net run of the same seed)
SEMI_METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tri-net": (TRINET_PRESET, "tri-net", {}),
    "tri-net, no smearing": (TRINET_PRESET, "tri-net", {"smearing": False}),
    "tri-net, no DES": (TRINET_PRESET, "tri-net", {"des": False}),
    "tri-net, no fine-tuning": (TRINET_PRESET, "tri-net", {"finetune": False}),
    "pseudo-label (one head)": (TRINET_PRESET, "pseudo-label", {}),
    "supervised only (Tri-net's steps)": (TRINET_PRESET, "supervised", {}),
    "featmatch-lite": (FEATMATCH_PRESET, "featmatch", {}),
    "featmatch-lite, no attention": (FEATMATCH_PRESET, "featmatch", {"attention": False}),
}
ROUND_ARGS = ("init_epochs", "rounds", "unlabelled_limit")  # what quick mode shortens
QUICK_SEMI = {"init_epochs": 30, "rounds": 5, "unlabelled_limit": 8000}
FULL_SEMI = {"init_epochs": 50, "rounds": 10}
BAN_PRESET = "fmnist/hash64"
#: gen-2 variants: name → recipe args (``generations: 2``; generation 1 is shared)
BAN_VARIANTS = dict(zip(BAN_VARIANT_NAMES, (
    {"loss": "ban+l"}, {"loss": "cwtm"}, {"loss": "dkpp"}, {"loss": "ban", "code_weight": 1.0}),
    strict=True))
INDEPENDENT = 2  # models trained beside generation 1 with other seeds, for the ensemble control
INDEPENDENT_SEED_STEP = 7777  # their seeds: seed + 7777·i (never a generation's seed + 1000·k)


def load(preset: str, overrides: list[str]) -> Any:
    from hashlab.cli import resolve_config_path
    from hashlab.config import load_config

    return load_config(resolve_config_path(preset), overrides)


def run_recipe(config: Any, run_dir: Path) -> dict[str, Any]:
    """A recipe's summary: read back when finished, else trained (resumed if started)."""
    from hashlab.train.recipes.registry import RECIPES

    done = run_dir / "recipe.json"
    if done.exists():
        return json.loads(done.read_text())
    start = time.perf_counter()
    recipe = RECIPES.get(config.recipe.name)(config, run_dir, progress=False,
                                              **config.recipe.args)
    started = (run_dir / "checkpoint.pt").exists() or any(run_dir.glob("gen-*"))
    summary = recipe.run(resume=started)
    summary["wall_seconds"] = time.perf_counter() - start
    atomic_write_json(done, summary)
    return summary


# ------------------------------------------------------------------ fmnist-semi
def semi_run(method: str, per_class: int, seed: int, quick: bool, workdir: Path,
             budget_steps: int | None) -> dict[str, Any]:
    preset, name, extra = SEMI_METHODS[method]
    cfg = load(preset, [f"seed={seed}", f"data.semi.seed={seed}",
                        f"data.semi.labels_per_class={per_class}"])
    args = dict(cfg.recipe.args) if name == cfg.recipe.name else {}
    cfg.recipe.name = name
    if name in ("tri-net", "pseudo-label"):
        args.update(QUICK_SEMI if quick else FULL_SEMI)
    if name == "supervised":
        if budget_steps is None:  # Tri-net's run of this seed sets the budget
            budget_steps = semi_run("tri-net", per_class, seed, quick, workdir, None)["steps"]
        n_labelled = 10 * per_class
        per_epoch = math.ceil(n_labelled / cfg.train.batch_size)
        epochs = max(1, round(budget_steps / per_epoch))
        args = {"epochs": epochs, "chunks": min(5, epochs)}
    cfg.recipe.args = {**args, **extra}
    slug = method.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
    summary = run_recipe(cfg, workdir / f"semi-{per_class * 10}-{slug}-s{seed}")
    return summary


def semi_rounds(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Tri-net's per-round log, as the figure draws it."""
    return [{"stage": s["stage"], "pseudo_labels": s.get("pseudo_labels"),
             "pseudo_accuracy": s.get("pseudo_accuracy"), "val_accuracy": s["val_accuracy"],
             "fine_tune": bool(s.get("fine_tune"))} for s in summary["stages"]]


# ------------------------------------------------------------------ fmnist-ban
def ban_config(seed: int, quick: bool, recipe: dict[str, Any] | None) -> Any:
    per_class, epochs = (200, 20) if quick else (500, 40)
    cfg = load(BAN_PRESET, [f"seed={seed}", f"train.epochs={epochs}", "train.batch_size=128",
                            f"data.semi={{labels_per_class: {per_class}, validation: 5000, "
                            f"seed: {seed}}}"])
    if recipe is not None:
        cfg.recipe.name, cfg.recipe.args = "ban", recipe
    return cfg


def test_probabilities(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from hashlab.encode import TrainedRun

    run = TrainedRun(run_dir)
    codes = run.encode("test", progress=False)
    with torch.no_grad():
        z = run.loss_fn.logits(torch.from_numpy(codes.float)).double()
    return torch.softmax(z, 1).numpy(), np.asarray(codes.labels)


def ban_seed(seed: int, quick: bool, workdir: Path) -> dict[str, Any]:
    from hashlab.train.engine import FINAL_MODEL, Trainer, load_checkpoint

    base = workdir / f"ban-s{seed}"
    chain = run_recipe(ban_config(seed, quick, {"generations": 3, "loss": "ban"}), base / "ban")
    gen1 = base / "ban" / "gen-1"
    out: dict[str, Any] = {"generations": chain["generations"]}
    history = load_checkpoint(gen1 / "checkpoint.pt")["history"]
    out["teacher_train_accuracy"] = history[-1]["accuracy"]
    variants = {}
    for name, args in BAN_VARIANTS.items():
        vdir = base / name.replace(" ", "-").replace("+", "plus")
        if not (vdir / "gen-1" / FINAL_MODEL).exists():
            shutil.copytree(gen1, vdir / "gen-1", dirs_exist_ok=True)  # the shared teacher
        variants[name] = run_recipe(ban_config(seed, quick, {"generations": 2, **args}),
                                    vdir)["generations"][1]
    out["variants"] = variants
    probs, labels = [test_probabilities(gen1)[0]], None
    for i in range(1, INDEPENDENT + 1):
        run_dir = base / f"independent-{i}"
        cfg = ban_config(seed + INDEPENDENT_SEED_STEP * i, quick, None)
        if not (run_dir / FINAL_MODEL).exists():
            Trainer(cfg, run_dir, progress=False).fit(
                resume=(run_dir / "checkpoint.pt").exists())
        p, labels = test_probabilities(run_dir)
        probs.append(p)
    singles = [float((p.argmax(1) == labels).mean()) for p in probs]
    out["independent"] = {
        "test_accuracy": singles,
        "ensemble_accuracy": {str(k): float((np.mean(probs[:k], 0).argmax(1) == labels).mean())
                              for k in range(2, len(probs) + 1)}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", nargs="+", default=["semi", "ban"], choices=["semi", "ban"])
    parser.add_argument("--methods", nargs="+", default=list(SEMI_METHODS),
                        choices=list(SEMI_METHODS))
    parser.add_argument("--labels-per-class", nargs="+", type=int, default=None,
                        help="fmnist-semi label counts per class (quick: 100; full: 25 100 400)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    workdir = args.workdir or Path("runs") / f"bench-recipes-{mode}"
    out = args.out or Path("benchmarks/results") / f"recipes_{mode}.json"
    per_class = args.labels_per_class or ([100] if args.quick else [25, 100, 400])
    methods = [m for m in SEMI_METHODS if m in args.methods]
    jobs: list[tuple[Any, ...]] = []
    for seed in args.seeds:  # seed by seed, so that a partial run has every part
        if "semi" in args.parts:
            jobs += [("semi", seed, p, m) for p in per_class for m in methods]
        if "ban" in args.parts:
            jobs.append(("ban", seed))
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv), "mode": mode, "machine": machine(),
        "seeds": args.seeds, "semi_settings": QUICK_SEMI if args.quick else FULL_SEMI,
        "ban_settings": {"labels_per_class": 200 if args.quick else 500,
                         "epochs": 20 if args.quick else 40},
        "planned_runs": len(jobs), "complete": False, "semi": {}, "trinet_rounds": {},
        "ban": {}}
    start = time.perf_counter()
    budgets: dict[tuple[int, int], int] = {}
    for done, job in enumerate(jobs, 1):
        if job[0] == "semi":
            _, seed, p, method = job
            summary = semi_run(method, p, seed, args.quick, workdir, budgets.get((seed, p)))
            if method == "tri-net":
                budgets[(seed, p)] = summary["steps"]
                result["trinet_rounds"].setdefault(str(p * 10), {})[str(seed)] = \
                    semi_rounds(summary)
            cell = result["semi"].setdefault(str(p * 10), {}).setdefault(
                method, {"test_accuracy": [], "mAP@all": [], "steps": [], "seeds": []})
            for key in ("test_accuracy", "mAP@all", "steps"):
                cell[key].append(summary[key])
            cell["seeds"].append(seed)
        else:
            result["ban"][str(job[1])] = ban_seed(job[1], args.quick, workdir)
        result.update(runs_done=done, complete=done == len(jobs),
                      wall_minutes_this_invocation=(time.perf_counter() - start) / 60)
        atomic_write_json(out, result)
    print(recipes_table(result, out.name, lambda name: None))  # the docs/results.md table
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
