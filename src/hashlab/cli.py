"""The ``hashlab`` command line: train → encode → eval, and ``demo`` for all three at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from hashlab.errors import HashlabError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="hashlab: train, encode, index, search and evaluate compact image codes.")

CONFIG_ROOT = Path(__file__).parent / "configs"
DEMO_CONFIG = "fmnist/hash64"


def resolve_config_path(config: str) -> Path:
    """A YAML path, or the name of a bundled preset such as ``fmnist/hash64``."""
    path = Path(config)
    if path.is_file():
        return path
    preset = CONFIG_ROOT / (config if config.endswith(".yaml") else f"{config}.yaml")
    if preset.is_file():
        return preset
    presets = ", ".join(sorted(str(p.relative_to(CONFIG_ROOT).with_suffix(""))
                               for p in CONFIG_ROOT.rglob("*.yaml")))
    raise HashlabError(f"config {config!r} is neither a file nor a preset; presets: {presets}")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _format_table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
    out = [title, line]
    out += [f"| {k:<{width}} | {v:>{vwidth}} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)


ROW_LABELS = {"mAP@all": "mAP@all", "mAP@1000": "mAP@1000", "P@100": "P@100",
              "P@r2": "precision within radius 2", "verification_accuracy": "verification acc",
              "TAR@FAR=0.001": "TAR@FAR=1e-3"}


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Table rows of an evaluation result: every reported metric of the binary code, and of the
    float code (only mAP@all when a binary code is reported too, to keep the table short)."""
    m = result["metrics"]
    rows: list[tuple[str, str]] = []
    for kind in ("float", "binary"):
        if kind not in m:
            continue
        prefix = "float" if kind == "float" else f"{m[kind]['nbits']}-bit"
        keys = ["mAP@all"] if kind == "float" and "binary" in m else list(ROW_LABELS)
        for key in keys:
            if key in m[kind]:
                rows.append((f"{prefix} {ROW_LABELS[key]}", f"{m[kind][key]:.4f}"))
    return rows


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="YAML config file or preset name (fmnist/hash64)")],
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from its checkpoint")]
    = False,
    name: Annotated[str | None, typer.Option(help="run name (default: the config's name)")]
    = None,
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default: OUTPUT_DIR/NAME)")]
    = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a config key, e.g. --set train.epochs=2 (repeatable)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train a model from a YAML config; writes checkpoints, metrics and plots to the run dir."""
    from hashlab.config import load_config
    from hashlab.train.engine import Trainer

    try:
        overrides = list(set_ or []) + ([f"name={name}"] if name else [])
        cfg = load_config(resolve_config_path(config), overrides)
        trainer = Trainer(cfg, run_dir, progress=progress)
        typer.echo(f"training {cfg.name} → {trainer.run_dir}")
        trainer.fit(resume=resume)
    except HashlabError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    typer.echo(f"done: {trainer.run_dir}")


@app.command()
def encode(
    run: Annotated[Path, typer.Argument(help="run directory of a finished training run")],
    split: Annotated[str, typer.Option(help="dataset split to encode (train or test)")] = "test",
    out: Annotated[Path | None, typer.Option(help="output .npz (default RUN/codes/SPLIT.npz)")]
    = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per batch")] = 1024,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Encode a split into float32 codes and packed bits (.npz with float, bits, labels)."""
    from hashlab.encode import CODES_DIR, TrainedRun

    try:
        trained = TrainedRun(run)
        codes = trained.encode(split, batch_size=batch_size, progress=progress)
        path = out or run / CODES_DIR / f"{split}.npz"
        if out:
            codes.save(out)
    except HashlabError as exc:
        _fail(exc)
    bits = f", bits {codes.bits.shape} uint8" if codes.bits is not None else ""
    typer.echo(f"{len(codes)} codes → {path} (float {codes.float.shape} float32{bits})")


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory of a finished training run")],
    protocol: Annotated[str, typer.Option(help="fmnist-retrieval, fmnist-openset or retrieval")]
    = "fmnist-retrieval",
    out: Annotated[Path | None, typer.Option(help="output JSON (default RUN/eval/PROTOCOL.json)")]
    = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Evaluate a run with a retrieval protocol; prints a table and writes JSON."""
    from hashlab.encode import TrainedRun
    from hashlab.eval.protocols import evaluate_run
    from hashlab.io import atomic_write_json

    try:
        result = evaluate_run(TrainedRun(run), protocol, progress=progress)
    except HashlabError as exc:
        _fail(exc)
    path = out or run / "eval" / f"{protocol}.json"
    atomic_write_json(path, result)
    typer.echo(_format_table(summary_rows(result), f"{protocol} on {run}"))
    typer.echo(f"written {path}")


@app.command()
def demo(
    config: Annotated[str, typer.Option(help="config file or preset")] = DEMO_CONFIG,
    run_dir: Annotated[Path | None, typer.Option(help="run directory")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a config key, e.g. --set train.epochs=2 (repeatable)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train the default config on Fashion-MNIST, encode, evaluate with fmnist-retrieval and print
    a table. Re-running continues an interrupted run, or re-evaluates a finished one."""
    from hashlab.config import load_config
    from hashlab.encode import TrainedRun
    from hashlab.eval.protocols import evaluate_run
    from hashlab.io import atomic_write_json
    from hashlab.train.engine import CHECKPOINT, FINAL_MODEL, Trainer

    start = time.perf_counter()
    try:
        cfg = load_config(resolve_config_path(config), list(set_ or []))
        directory = run_dir or Path(cfg.output_dir) / cfg.name
        if (directory / FINAL_MODEL).exists():
            typer.echo(f"{directory} already holds a finished run: evaluating it "
                       "(remove the directory to train again)")
        else:
            resume = (directory / CHECKPOINT).exists()
            typer.echo(("resuming" if resume else "training") + f" {cfg.name} → {directory}")
            Trainer(cfg, directory, progress=progress).fit(resume=resume)
        train_seconds = time.perf_counter() - start
        result = evaluate_run(TrainedRun(directory), cfg.eval.protocol, progress=progress)
    except HashlabError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    total = time.perf_counter() - start
    result["seconds_total"], result["seconds_train"] = total, train_seconds
    atomic_write_json(directory / "eval" / "demo.json", result)
    rows = summary_rows(result)
    rows.append(("time taken (train + encode + eval)", f"{total:.0f} s"))
    typer.echo(_format_table(rows, f"hashlab demo: {cfg.eval.protocol}, {cfg.name}"))


@app.command()
def presets() -> None:
    """List the bundled config presets."""
    for p in sorted(CONFIG_ROOT.rglob("*.yaml")):
        typer.echo(str(p.relative_to(CONFIG_ROOT).with_suffix("")))


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


__all__ = ["app"]
