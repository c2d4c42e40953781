"""The ``hashlab`` command line: train → encode → eval, and ``demo`` for all three at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from hashlab.errors import HashlabError
from hashlab.registry import load_plugins

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="hashlab: train, encode, index, search and evaluate compact image codes.")


def _choices(module: str, name: str) -> str:
    """``a|b|c``: the keys of a registry, for help texts (never typed by hand)."""
    import importlib

    return "|".join(getattr(importlib.import_module(module), name).names())


@app.callback()
def _main(
    plugin: Annotated[list[str] | None, typer.Option(
        "--plugin", help="import this module or package first, so that the losses, datasets, "
                         "index kinds, ... it registers can be used (repeatable; also "
                         "$HASHLAB_PLUGINS)")] = None,
) -> None:
    try:
        load_plugins(plugin or [])
    except HashlabError as exc:
        _fail(exc)

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
    protocol: Annotated[str, typer.Option(
        help=f"evaluation protocol: {_choices('hashlab.eval.registry', 'PROTOCOLS')}")]
    = "fmnist-retrieval",
    out: Annotated[Path | None, typer.Option(help="output JSON (default RUN/eval/PROTOCOL.json)")]
    = None,
    index: Annotated[Path | None, typer.Option(
        "--index", help="search the queries in this index (built by `hashlab index` from the "
                        "train split) instead of an exhaustive ranking")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Evaluate a run with a retrieval protocol; prints a table and writes JSON."""
    from hashlab.encode import TrainedRun
    from hashlab.eval.protocols import evaluate_run
    from hashlab.eval.report import result_rows
    from hashlab.io import atomic_write_json

    try:
        result = evaluate_run(TrainedRun(run), protocol, progress=progress, index_dir=index)
    except (HashlabError, ValueError) as exc:
        _fail(exc)
    suffix = f"-index-{result['index']['kind']}" if index is not None else ""
    path = out or run / "eval" / f"{protocol}{suffix}.json"
    atomic_write_json(path, result)
    typer.echo(_format_table(result_rows(result), f"{protocol} on {run}"))
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
    from hashlab.eval.report import result_rows
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
    rows = result_rows(result)
    rows.append(("time taken (train + encode + eval)", f"{total:.0f} s"))
    typer.echo(_format_table(rows, f"hashlab demo: {cfg.eval.protocol}, {cfg.name}"))


@app.command()
def index(
    run: Annotated[Path, typer.Argument(help="run directory of a finished training run")],
    split: Annotated[str, typer.Option(help="split whose codes fill the index")] = "train",
    kind: Annotated[str, typer.Option(
        help=f"index kind; binary: {_choices('hashlab.index.registry', 'BINARY_KINDS')}; "
             f"float: {_choices('hashlab.index.registry', 'FLOAT_KINDS')}")] = "flat",
    code: Annotated[str, typer.Option(help="binary (Hamming) or float (cosine) codes")]
    = "binary",
    out: Annotated[Path | None, typer.Option(help="index directory (default RUN/index-SPLIT-KIND)")]
    = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per encoding batch")] = 1024,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Build a FAISS index of a split's codes (ids = image positions in the split) and save it."""
    from hashlab.encode import TrainedRun
    from hashlab.index import BinaryIndex, FloatIndex, save_index
    from hashlab.io import atomic_write_json

    try:
        if code not in ("binary", "float"):
            raise HashlabError(f"--code must be 'binary' or 'float', got {code!r}")
        trained = TrainedRun(run)
        codes = trained.encode(split, batch_size=batch_size, progress=progress)
        ids = np.arange(len(codes), dtype=np.int64)
        if code == "binary":
            if codes.bits is None:
                raise HashlabError("this run has an embedding head: use --code float")
            idx: Any = BinaryIndex(codes.nbits, kind)
            idx.add(codes.bits, ids)
        else:
            idx = FloatIndex(codes.float.shape[1], kind)
            idx.add(codes.float, ids)
        name = f"index-{split}-{kind}" if code == "binary" else f"index-{split}-float-{kind}"
        path = out or run / name
        save_index(idx, path, model_run=str(run.resolve()))
        from hashlab.eval.protocols import INDEX_SOURCE_FILE

        atomic_write_json(path / INDEX_SOURCE_FILE, {"run": str(run.resolve()), "split": split,
                                                     "code": code})
    except (HashlabError, ValueError, NotImplementedError) as exc:
        _fail(exc)
    typer.echo(f"{len(idx)} {code} codes ({kind}) → {path}")




def _query_codes(trained: Any, source: dict[str, Any], images: list[Path] | None,
                 ids: list[int] | None, split: str | None, limit: int | None,
                 progress: bool) -> tuple[Any, list[str]]:
    """Codes of the queries and a name for each."""
    from hashlab.data.arrays import ArrayDataset

    if sum(x is not None and x != [] for x in (images, ids, split)) != 1:
        raise HashlabError("give exactly one of --image, --ids or --split")
    if images:
        from PIL import Image, UnidentifiedImageError

        c, h, w = trained.meta["image_shape"]
        arrays = []
        for p in images:
            try:
                with Image.open(p) as im:
                    arrays.append(np.asarray(im.convert("L" if c == 1 else "RGB").resize((w, h))))
            except (OSError, UnidentifiedImageError) as exc:
                raise HashlabError(f"cannot read image {p}: {exc}") from exc
        ref = trained.load_split(source["split"])
        ds = ArrayDataset(np.stack(arrays), np.zeros(len(arrays), dtype=np.int64),
                          mean=ref.mean, std=ref.std)
        return trained.encode_dataset(ds, progress=False), [str(p) for p in images]
    if ids:
        codes = trained.encode(source["split"], progress=progress)
        bad = [i for i in ids if not 0 <= i < len(codes)]
        if bad:
            raise HashlabError(f"--ids {bad} are not in the {source['split']} split "
                               f"(0..{len(codes) - 1})")
        sel = np.asarray(ids)
        return codes.take(sel), [f"{source['split']}:{i}" for i in ids]
    codes = trained.encode(split, progress=progress)
    sel = np.arange(min(limit or len(codes), len(codes)))
    return codes.take(sel), [f"{split}:{i}" for i in sel]


@app.command()
def search(
    index_dir: Annotated[Path, typer.Argument(metavar="INDEX", help="index directory")],
    image: Annotated[list[Path] | None, typer.Option(help="query image file (repeatable)")]
    = None,
    ids: Annotated[list[int] | None, typer.Option(help="query by id of an indexed image")]
    = None,
    split: Annotated[str | None, typer.Option(help="query with every image of a split")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="with --split: the first N only")]
    = None,
    k: Annotated[int, typer.Option(min=1, help="neighbours per query")] = 10,
    radius: Annotated[int | None, typer.Option(
        min=0, help="binary: all codes within this Hamming radius instead of the top k")] = None,
    run: Annotated[Path | None, typer.Option(help="run that encodes queries (default: the "
                                                  "index's run)")] = None,
    out: Annotated[Path | None, typer.Option(help="write results as JSON here")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Search an index with images, indexed ids or a whole split; prints or writes JSON."""
    from hashlab.encode import TrainedRun
    from hashlab.eval.protocols import load_run_index, read_index_source
    from hashlab.io import atomic_write_json

    try:
        source = read_index_source(index_dir)
        trained = TrainedRun(run or source["run"])
        binary = source["code"] == "binary"
        idx, _ = load_run_index(trained, index_dir)
        queries, names = _query_codes(trained, source, image, ids, split, limit, progress)
        q = queries.bits if binary else queries.float
        if radius is not None:
            if not binary:
                raise HashlabError("--radius needs a binary index")
            hits = idx.range_search(q, radius)
        else:
            dist, found = idx.search(q, k)
            hits = [(d[f >= 0], f[f >= 0]) for d, f in zip(dist, found, strict=True)]
    except (HashlabError, ValueError, NotImplementedError) as exc:
        _fail(exc)
    results = [{"query": n, "ids": f.tolist(), ("distances" if binary else "similarities"):
                d.tolist()} for n, (d, f) in zip(names, hits, strict=True)]
    if out:
        atomic_write_json(out, {"index": str(index_dir), "k": k, "radius": radius,
                                "results": results})
        typer.echo(f"{len(results)} queries → {out}")
    else:
        for r in results[:20]:
            pairs = list(zip(r["ids"], r.get("distances", r.get("similarities")), strict=True))
            shown = ", ".join(f"{i} ({d:.4g})" for i, d in pairs[:k])
            more = f" … {len(pairs)} within radius {radius}" if len(pairs) > k else ""
            typer.echo(f"{r['query']}: {shown}{more}")
        if len(results) > 20:
            typer.echo(f"... {len(results) - 20} more queries (use --out for all)")


@app.command("list")
def list_methods(
    family: Annotated[str | None, typer.Argument(
        help="one family (losses, hashers, binary-index-kinds, ...); default: all")] = None,
    markdown: Annotated[bool, typer.Option(help="print Markdown tables (as in docs/)")] = False,
) -> None:
    """List every registered method: name, aliases, one-line description and defaults."""
    from hashlab.docgen import family_table, format_defaults
    from hashlab.registry import all_families

    families = all_families()
    if family is not None:
        key = family.strip().lower().replace("_", "-")
        if key not in families:
            _fail(HashlabError(f"unknown family {family!r}; known: {', '.join(sorted(families))}"))
        families = {key: families[key]}
    for name, registry in families.items():
        entries = registry.entries()
        if markdown:
            typer.echo(f"## {name}\n\n{family_table(registry)}")
            continue
        typer.secho(f"{name} ({len(entries)}): {registry.description}", bold=True)
        for e in entries:
            aliases = f" (alias {', '.join(e.aliases)})" if e.aliases else ""
            typer.echo(f"  {e.name}{aliases}: {e.description}")
            if e.defaults:
                typer.echo(f"      defaults: {format_defaults(e.defaults)}")
        typer.echo("")


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
