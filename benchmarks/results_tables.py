"""Tables and figures of ``docs/results.md``, generated from the JSON in ``benchmarks/results/``.

A table in the page is a block (the scheme of ``hashlab.docgen``'s registry tables)::

    <!-- results-table: NAME -->
    (generated from the JSON: do not edit)
    <!-- /results-table -->

``TABLES[NAME]`` renders its content (a caption naming the JSON, the command and the machine,
the table, a "partial" line while a benchmark is still running, and the links to its figures)
from the JSON files it reads; prose outside the blocks is hand-written. ``render`` rewrites the
blocks of a page, ``write_figures`` draws the figures (``docs/figures/results-*.png``).
``python benchmarks/run_all.py --tables-only`` does both, ``--check`` reports stale blocks.
Nothing here imports torch or hashlab; matplotlib only when figures are drawn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "results.md"
FIGURES_DIR = REPO / "docs" / "figures"
DASH = "–"
#: the machine of a JSON that does not name it (all such runs were on the project machine)
PROJECT_MACHINE = "2-core CPU (project machine)"

_BLOCK = re.compile(r"(<!-- results-table: ([a-z0-9-]+) -->\n)(.*?)(<!-- /results-table -->)",
                    re.S)

Load = Callable[[str], "dict[str, Any] | None"]

# ---------------------------------------------------------------------------------------------
# display names


#: deep hashing method (key of hashing.py's DEEP) -> (row label, short label)
DEEP_METHODS = {
    "hash-ce (baseline)": ("hash-ce (baseline: CE over the tanh code + quantization)",
                           "hash-ce (baseline)"),
    "dpsh": ("DPSH (pairwise likelihood + quantization, lr 0.05)", "DPSH"),
    "cosface": ("CosFace codes", "CosFace"),
    "sv-arc-softmax": ("SV-Arc-Softmax codes", "SV-Arc-Softmax"),
    "dph": ("DPH (category + attributes)", "DPH"),
    "csq": ("CSQ (Hadamard hash centres, BCE + λ·quantization)", "CSQ"),
    "orthohash": ("OrthoHash (cosine to orthogonal codewords, s = 8, m = 0.2)", "OrthoHash"),
    "dpn": ("DPN (bit-wise polarization hinge, m = 1)", "DPN"),
    "greedy-hash": ("GreedyHash (sign with the greedy straight-through gradient)", "GreedyHash"),
    "hashnet": ("HashNet (weighted pairwise likelihood, tanh(βz) continuation)", "HashNet"),
    "dsh": ("DSH (pairwise contrastive, m = 2k)", "DSH"),
    "dtsh": ("DTSH (triplet likelihood, α = k/2)", "DTSH"),
    "adsh": ("ADSH (asymmetric: database codes learned by DCC, γ = 200)", "ADSH"),
}
CLASSICAL = {
    "lsh": "lsh (SimHash about the origin)",
    "lsh-centered": "lsh, centred",
    "pcah": "pcah",
    "itq": "itq (50 iterations)",
    "sh": "sh (spectral hashing)",
    "klsh": "klsh (kernelised LSH, RBF)",
    "sdh": "sdh (supervised, uses labels)",
    "pq": "pq, asymmetric distance ranking",
}
LOSS_METHODS = {
    "softmax": "softmax", "cosface": "cosface", "arcface": "arcface",
    "sv-softmax": "sv-softmax", "sv-am-softmax": "sv-am-softmax",
    "sv-arc-softmax": "sv-arc-softmax", "triplet": "triplet (semi-hard)",
    "softmax-triplet": "softmax + triplet", "selective-contrastive": "selectively contrastive",
}
LOSS_COLUMNS = ["open mAP (float)", "open mAP (64b)", "verif acc", "TAR@1e-3", "closed mAP (64b)"]
DPH_COLUMNS = {"category mAP": "category mAP@all", "attribute mAP": "attribute mAP",
               "combined R@100": "combined R@100", "combined R@1000": "combined R@1000",
               "combined mAP": "combined mAP"}
MODE_TEXT = {"quick": "quick mode: 3 epochs on 12,000 training images",
             "full": "full mode: 10 epochs on all 60,000 training images"}
UNSEEN_MODE_TEXT = {"quick": "quick mode: 3 epochs on 12,000 training images of classes 0–5",
                    "full": "full mode: 10 epochs on all 36,000 training images of classes 0–5"}

# ---------------------------------------------------------------------------------------------
# formatting


def fmt(value: float | None, spec: str = ".4f") -> str:
    return DASH if value is None else format(value, spec)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def seed_cell(values: list[float] | None, planned: int = 1, spec: str = ".4f") -> str:
    """``mean ± std (n=k)`` over seeds (population std) where more than one seed is planned,
    the bare value where one is, ``–`` where none has run yet."""
    if not values:
        return DASH
    mean = format(float(np.mean(values)), spec)
    if planned <= 1 and len(values) == 1:
        return mean
    if len(values) == 1:
        return f"{mean} (n=1)"
    return f"{mean} ± {format(float(np.std(values)), spec)} (n={len(values)})"


def bold_best(cells: list[list[str]], means: list[list[float | None]]) -> None:
    """Bold, in place, the largest mean of each column."""
    for j in range(len(means[0]) if means else 0):
        column = [(m[j], i) for i, m in enumerate(means) if m[j] is not None]
        if len(column) > 1:
            i = max(column)[1]
            cells[i][j] = f"**{cells[i][j]}**"


def machine_of(d: Mapping[str, Any]) -> str:
    """The machine a JSON was measured on, in words: its ``machine`` description, or one
    composed from the facts older scripts recorded (cores, architecture, library versions)."""
    if isinstance(d.get("machine"), str) and " " in d["machine"]:
        return d["machine"]
    facts: dict[str, Any] = {**d}
    for key in ("machine", "environment", "env"):
        if isinstance(d.get(key), dict):
            facts.update(d[key])
    cores = facts.get("cpus") or facts.get("cpu_count")
    arch = facts.get("machine") if isinstance(facts.get("machine"), str) else ""
    text = f"{cores}-core {arch} CPU".replace("  ", " ") if cores else PROJECT_MACHINE
    extras = [f"{lib} {facts[lib]}" for lib in ("torch", "faiss") if facts.get(lib)]
    if facts.get("omp_num_threads"):
        extras.append(f"OMP_NUM_THREADS={facts['omp_num_threads']}")
    return ", ".join([text, *extras])


def minutes_of(d: Mapping[str, Any]) -> float | None:
    if "seconds" in d:
        return d["seconds"] / 60
    return d.get("minutes")


def source(name: str, d: Mapping[str, Any], command: str | None = None) -> str:
    """The caption line of a generated table: JSON, command, machine, wall time."""
    parts = [f"JSON `benchmarks/results/{name}`"]
    command = command or d.get("command")
    if command:
        parts.append(f"`{command}`")
    parts.append(f"machine: {machine_of(d)}")
    minutes = minutes_of(d)
    if "compute_seconds" in d:  # shared by several processes or sessions: their runs' time
        parts.append(f"{d['compute_seconds'] / 3600:.1f} h of training and evaluation, summed "
                     "over its runs")
    elif minutes is not None:
        parts.append(f"{minutes:.1f} min")
    return "*" + "; ".join(parts) + "*"


def partial_line(done: int, planned: int, resumes: bool = True) -> str:
    state = ("the benchmark is still running (it resumes where it stopped)" if resumes else
             "the run was stopped before the plan was done (re-running starts over)")
    return f"**partial: {done} of {planned} runs done** — {state}; cells not run yet show {DASH}."


def not_run(name: str, how: str | None) -> str:
    how = f" `{how}` writes it." if how else ""
    return f"*Not run yet: there is no `benchmarks/results/{name}`.{how}*"


# ---------------------------------------------------------------------------------------------
# tables: each renders its block's Markdown from (its JSON, the JSON's name, the loader of the
# other JSON files); render_block adds the links to the figures


def _hashing_runs(d: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """mAP@all per method and code length, one value per seed (old files: the mean only)."""
    if "deep_runs" in d:
        return d["deep_runs"]
    return {m: {b: [v] for b, v in row.items()} for m, row in d.get("deep", {}).items()}


def _methods(known: Mapping[str, Any], present: Mapping[str, Any]) -> list[str]:
    return [*known, *(m for m in present if m not in known)]


def _planned_seeds(d: Mapping[str, Any], nbits: int) -> int:
    seeds = d.get("seeds", [0])
    return len(seeds) if nbits in d.get("extra_seed_bits", d.get("bits", [])) else 1


# QSMIH's published Fashion-MNIST mAP@all (small conv net; all 10,000 test queries against the
# 60,000 training images), keyed by the hashlab length set beside it: (QSMIH's length, its mAP).
QSMIH = {12: (12, 0.842), 24: (24, 0.873), 32: (36, 0.863), 48: (48, 0.860)}


def published_comparison(all_queries: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The best hashlab seed-0 run per length on all 10,000 test queries beside QSMIH."""
    rows = []
    for ours, (theirs, published) in QSMIH.items():
        got = {m: row[str(ours)] for m, row in all_queries.items() if str(ours) in row}
        if not got:
            rows.append([f"{ours} ({theirs})", fmt(published), DASH, DASH, DASH])
            continue
        best = max(got, key=got.__getitem__)
        rows.append([f"{ours} ({theirs})", fmt(published),
                     f"{fmt(got[best])} ({DEEP_METHODS.get(best, (best, best))[1]})",
                     f"{got[best] - published:+.4f}",
                     f"{sum(v > published for v in got.values())} of {len(got)}"])
    return ["", "**Against the published table.** QSMIH (a small conv net) is the one deep hashing "
            "table on Fashion-MNIST we know of; it reports mAP@all with every one of the 10,000 "
            "test images querying the 60,000 training images. For a like-for-like comparison the "
            "seed-0 runs at these lengths are also evaluated on that protocol (`retrieval`; the "
            "table above uses fmnist-retrieval's 1,000 seeded queries). QSMIH reports 36 bits, not "
            "32: our 32-bit codes stand beside its 36-bit ones. \"Best\" is the highest of the "
            "methods run, read off the test queries, so it is an optimistic summary; the last "
            "column counts every method above the published figure.", "",
            md_table(["bits: hashlab (QSMIH)", "QSMIH mAP@all", "best hashlab (seed 0)",
                      "difference", "hashlab methods above QSMIH"], rows)]


def deep_hashing(d: dict[str, Any], name: str, load: Load) -> str:
    runs, bits, mode = _hashing_runs(d), d["bits"], d["mode"]
    methods = _methods(DEEP_METHODS, runs)
    cells, means = [], []
    for m in methods:
        row = runs.get(m, {})
        cells.append([seed_cell(row.get(str(b)), _planned_seeds(d, b)) for b in bits])
        means.append([float(np.mean(row[str(b)])) if row.get(str(b)) else None for b in bits])
    bold_best(cells, means)
    rows = [[DEEP_METHODS.get(m, (m,))[0], *c] for m, c in zip(methods, cells, strict=True)]
    classical = d.get("classical") or {
        h: {b: v["mAP@all"] for b, v in row.items()}
        for h, row in (load("hashers_fmnist.json") or {}).get("table", {}).items()}
    for key, label in (("sdh", "classical best: SDH (supervised, raw pixels)"),
                       ("itq", "classical unsupervised best: ITQ")):
        if key in classical:
            rows.append([f"*{label}*", *(fmt(classical[key].get(str(b))) for b in bits)])
    seeds = d.get("seeds", [0])
    text = [source(name, d), "",
            f"fmnist-retrieval mAP@all, {MODE_TEXT[mode]}; " + (
                f"mean ± std over seeds {', '.join(map(str, seeds))} (n = seeds done) at "
                f"{', '.join(map(str, d.get('extra_seed_bits', bits)))} bits, seed "
                f"{seeds[0]} at the other lengths." if len(seeds) > 1 else f"seed {seeds[0]}."),
            "", md_table(["method", *(f"{b} bits" for b in bits)], rows)]
    if d.get("carried_over"):
        cells_kept = ", ".join(f"{DEEP_METHODS.get(m, (m, m))[1]} at {'/'.join(map(str, b))}"
                               for m, b in d["carried_over"].items())
        text += ["", f"Carried over unchanged from the previous run of this JSON (the last "
                 f"command re-ran only the other cells): {cells_kept} bits."]
    if d.get("complete") is False:
        planned = d.get("planned_runs") or len(methods) * sum(_planned_seeds(d, b) for b in bits)
        done = sum(len(v) for row in runs.values() for v in row.values())
        text += ["", partial_line(done, planned)]
    if mode == "full":
        text += published_comparison(d.get("all_queries") or {})
    return "\n".join(text)


def unseen(d: dict[str, Any], name: str, load: Load) -> str:
    if not d.get("unseen"):
        return source(name, d) + "\n\n*No unseen-class runs in this JSON yet.*"
    runs = _hashing_runs(d)
    text = [source(name, d), "",
            f"fmnist-unseen mAP@all, {UNSEEN_MODE_TEXT[d['mode']]}, seed 0; \"seen\" is the same "
            "method's fmnist-retrieval mAP@all (seed 0)."]
    methods = _methods({k: v for k, v in DEEP_METHODS.items() if k != "dph"}, d["unseen"])
    for b in sorted({b for row in d["unseen"].values() for b in row}, key=int):
        seen = [(runs.get(m, {}).get(b) or [None])[0] for m in methods]
        new = [d["unseen"].get(m, {}).get(b) for m in methods]
        cells = [[fmt(s), fmt(n), DASH if None in (s, n) else f"{n - s:+.4f}"]
                 for s, n in zip(seen, new, strict=True)]
        bold_best(cells, [[None, n, None] for n in new])
        rows = [[DEEP_METHODS.get(m, (m, m))[1], *c] for m, c in zip(methods, cells, strict=True)]
        text += ["", md_table([f"method ({b} bits)", "fmnist-retrieval (seen)", "fmnist-unseen",
                               "difference"], rows)]
        if None in new:
            text += ["", partial_line(len(new) - new.count(None), len(new))]
    return "\n".join(text)


def dph(d: dict[str, Any], name: str, load: Load) -> str:
    if not d.get("dph"):
        return source(name, d) + "\n\n*No DPH runs in this JSON yet.*"
    n = 12_000 if d["mode"] == "quick" else 60_000
    labels = {"full labels": f"full (all {n:,} images, both labels)",
              "partial B+C+A": "partial: B + C + A",
              "fully-labelled part only (B)": f"fully-labelled part only (B = {n // 5:,} images)"}
    rows = [[labels.get(k, k), *(fmt(v.get(c)) for c in DPH_COLUMNS)]
            for k, v in d["dph"].items()]
    return "\n".join([source(name, d), "",
                      f"fmnist-dph, 64 bits, {MODE_TEXT[d['mode']]}, seed 0.", "",
                      md_table(["labels", *DPH_COLUMNS.values()], rows)])


def losses_openset(d: dict[str, Any], name: str, load: Load) -> str:
    seeds, closed = d["seeds"], d.get("closed_seeds", d["seeds"][:1])
    rows = []
    for m in _methods(LOSS_METHODS, d["table"]):
        row = d["table"].get(m, {})
        rows.append([LOSS_METHODS.get(m, m), *(
            seed_cell(row.get(c), len(closed if c.startswith("closed") else seeds))
            for c in LOSS_COLUMNS)])
    what = "; ".join(d.get("quick_overrides", [])) or "10 epochs, all training images"
    text = [source(name, d), "",
            f"{d['mode']} mode ({what}); open set: seeds {', '.join(map(str, seeds))}, closed "
            "set: " + (f"seeds {', '.join(map(str, closed))}" if closed else "not run") +
            "; mean ± std (n = seeds done).", "",
            md_table(["method", *LOSS_COLUMNS], rows)]
    if d.get("complete") is False:
        text += ["", partial_line(d["runs_done"], d["runs_planned"])]
    return "\n".join(text)


CROSSMODAL_METHODS = {"dcmh": "DCMH (baseline)", "aadah": "AADAH (attention + adversarial)"}
CROSSMODAL_COLUMNS = {"image_to_text": "image→text", "text_to_image": "text→image",
                      "image_to_text_class": "image→text (class)",
                      "text_to_image_class": "text→image (class)",
                      "text_to_image P@100": "text→image P@100"}


def crossmodal(d: dict[str, Any], name: str, load: Load) -> str:
    """fmnist-captions mAP@all per method, direction and code length (mean ± std over seeds)."""
    seeds, bits = d["seeds"], [str(b) for b in d["bits"]]
    what = "; ".join(d.get("quick_overrides", [])) or "the presets' 10,000 pairs and 15 epochs"
    text = [source(name, d), "",
            f"fmnist-captions, {d['mode']} mode ({what}); mAP@all unless the column says P@100; "
            f"relevant = a shared class or attribute, or (class) the same class; mean ± std over "
            f"seeds {', '.join(map(str, seeds))} (n = seeds done)."]
    for b in bits:
        rows = [[CROSSMODAL_METHODS.get(m, m), *(seed_cell(row.get(b, {}).get(c), len(seeds))
                                                 for c in CROSSMODAL_COLUMNS)]
                for m, row in d["table"].items()]
        text += ["", md_table([f"{b} bits", *CROSSMODAL_COLUMNS.values()], rows)]
    if d.get("complete") is False:
        text += ["", partial_line(d["runs_done"], d["planned_runs"])]
    return "\n".join(text)


def finegrained(d: dict[str, Any], name: str, load: Load) -> str:
    """mAP@all per fine-grained protocol, method and code length (mean ± std over seeds)."""
    seeds, bits = d["seeds"], [str(b) for b in d["bits"]]
    what = "; ".join(d.get("quick_overrides", [])) or "10 epochs on all training images"
    text = [source(name, d), "",
            f"{d['mode']} mode ({what}); every method trains on the protocol's classes only "
            f"(`data.classes`); mAP@all, 1,000 test queries against the classes' training "
            f"images; mean ± std over seeds {', '.join(map(str, seeds))} (n = seeds done). "
            f"Chance: 0.25 (upper), 0.33 (shoes)."
            + (f" Training time summed over the {d['runs_done']} runs: "
               f"{d['training_minutes']:.0f} min (evaluation not included)."
               if "training_minutes" in d else "")]
    for protocol, by_method in d["table"].items():
        rows = [[m, *(seed_cell(row.get(b), len(seeds)) for b in bits)]
                for m, row in by_method.items()]
        text += ["", md_table([f"`{protocol}`", *(f"{b} bits" for b in bits)], rows)]
    if d.get("complete") is False:
        text += ["", partial_line(d["runs_done"], d["planned_runs"])]
    return "\n".join(text)


def _finegrained_lines(d: dict[str, Any]) -> Any:
    lines = {f"{m} ({protocol.rsplit('-', 1)[-1]})": sorted(
        (int(b), float(np.mean(v)), float(np.std(v))) for b, v in row.items() if v)
        for protocol, by_method in d["table"].items() for m, row in by_method.items()}
    partial = d.get("complete") is False
    return {"lines": lines, "mode": d["mode"], "partial": partial,
            "title": "fmnist-fine-upper / fmnist-fine-shoes"} if lines else None


def hashers_fmnist(d: dict[str, Any], name: str, load: Load) -> str:
    bits = [str(b) for b in d["bits"]]
    rows = [[CLASSICAL.get(h, h), *(fmt(row.get(b, {}).get("mAP@all")) for b in bits)]
            for h, row in d["table"].items()]
    rows.append(["raw-pixel cosine (no hashing)", fmt(d["baseline_raw_cosine_mAP@all"]),
                 *([""] * (len(bits) - 1))])
    return "\n".join([
        source(name, d, "python benchmarks/hashers_fmnist.py" + " --quick" * d["quick"]), "",
        f"fmnist-retrieval mAP@all, database = {d['n_database']:,} training images as raw "
        f"pixels, {d['n_queries']:,} test queries, random_state={d['seed']}.", "",
        md_table(["method", *(f"{b} bits" for b in bits)], rows)])


def hashers_itq(d: dict[str, Any], name: str, load: Load) -> str:
    seeds = [k for k in d["rows"] if k.startswith("seed ")]
    labels = {"n_iter 0": "0 iterations (a random rotation of PCA-H)",
              "n_iter 1": "1 iteration", "n_iter 10": "10 iterations",
              "fit on 10k": "fitted on a 10,000-image subset, all 60,000 encoded",
              "pcah": "PCA-H (no rotation)"}
    rows = [[f"seeds {seeds[0][5:]}–{seeds[-1][5:]}, 50 iterations",
             f"{d['seed_mean']:.4f} ± {d['seed_std']:.4f} (n={len(seeds)}, sample std)"]]
    rows += [[labels.get(k, k), fmt(v)] for k, v in d["rows"].items() if k not in seeds]
    return "\n".join([source(name, d, "python benchmarks/hashers_itq.py"), "",
                      f"64-bit ITQ on fmnist-retrieval (reference {d['reference_itq_64']} ± 0.02).",
                      "", md_table(["ITQ variant", "mAP@all"], rows)])


def metrics_speed(d: dict[str, Any], name: str, load: Load) -> str:
    rows = []
    for r in d["results"]:
        label = (f"binary, {r['bits_or_dim']} bits (Hamming by FAISS)" if r["kind"] == "binary"
                 else f"float, {r['bits_or_dim']}-d (cosine)")
        rows.append([label, f"{r['seconds']:.2f}", f"{r['queries_per_second']:,.0f}",
                     f"{r['naive_seconds_extrapolated']:.1f}", f"{r['speedup_vs_naive']:.1f}×"])
        if "index_path_seconds" in r:
            s = r["index_path_seconds"]
            rows.append(["binary, through a flat `BinaryIndex` (what the protocols run)",
                         f"{s:.2f}", f"{r['n_queries'] / s:,.0f}",
                         f"{r['naive_seconds_extrapolated']:.1f}",
                         f"{r['naive_seconds_extrapolated'] / s:.1f}×"])
    a = d["args"]
    return "\n".join([
        source(name, d, "python benchmarks/metrics_speed.py"), "",
        f"{a['n_queries']:,} queries × {a['n_database']:,} database items, all metrics incl. "
        f"the PR curve, best of {a['repeats']}; naive = per-query full argsort on "
        f"{a['baseline_queries']} queries, extrapolated.", "",
        md_table(["kind", "seconds", "queries/s", "naive (s)", "speed-up"], rows)])


def losses_speed(d: dict[str, Any], name: str, load: Load) -> str:
    c = d["config"]
    rows = [[k, f"{v:.1f}"] for k, v in d["ms"].items()]
    rows += [[f"ratio {k}", f"{v:.2f}× (target ≤ 1.30)"] for k, v in d["ratios"].items()]
    return "\n".join([
        source(name, d, "python benchmarks/losses_speed.py"), "",
        f"forward + backward, batch {c['batch']} × dim {c['dim']} × {c['classes']:,} classes, "
        f"{c['threads']} threads, median of {c['repeats']} × 3 interleaved rounds.", "",
        md_table(["loss", "ms"], rows)])


def search(d: dict[str, Any], name: str, load: Load) -> str:
    text = [source(name, d)]
    for res in d["results"]:
        k, radius = res["k"], res["radius"]
        what = "random codes" if res["name"].startswith("random") else f"codes ({res['name']})"
        text += ["", f"{res['n']:,} × {res['nbits']}-bit {what}, {res['queries']:,} queries; "
                     f"mean {res['mean_hits_within_radius']:,.1f} codes within radius {radius}:",
                 ""]
        rows = []
        for r in res["rows"]:
            knn = f"{r['knn_qps']:,.0f}"
            if "knn_vs_raw_flat" in r:
                knn += f" ({r['knn_vs_raw_flat']:.2f}× raw, alternating)"
            rows.append([
                r["kind"], fmt(r.get("build_s"), ".1f"), knn, fmt(r.get("knn_recall"), ".3f"),
                fmt(r.get("range_qps"), ",.0f"),
                fmt(r.get("range_recall"), ".3f") if "knn_recall" in r else DASH,
                fmt(r.get("range_speedup_vs_flat"), ".1f"), f"{r['bytes_per_code']:.1f}"])
        text.append(md_table(["kind", "build s", f"top-{k} q/s", f"recall@{k}",
                              f"radius-{radius} q/s", f"radius-{radius} recall",
                              f"×flat (radius {radius})", "B/code"], rows))
    return "\n".join(text)


def serve(d: dict[str, Any], name: str, load: Load) -> str:
    rows = [[f"search by {r['kind']}", str(r["concurrency"]), f"{r['requests_per_second']:,.0f}",
             f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}"] for r in d["rows"]]
    ceiling = d["encoder_images_per_second"]
    image = [r["requests_per_second"] for r in d["rows"] if r["kind"] == "image"]
    ratio = f"; search by image at best {max(image) / ceiling:.2f}× the encoder" if image else ""
    return "\n".join([
        source(name, d), "",
        f"{d['rows'][0]['requests']:,} requests per row, `--max-batch {d['max_batch']} "
        f"--max-delay-ms {d['max_delay_ms']:g}`; encoder alone: {ceiling:,.0f} images/s{ratio}.",
        "", md_table(["request", "concurrency", "requests/s", "p50 ms", "p99 ms"], rows)])


THROUGHPUT_LOOPS = {
    "plain_images_per_second": "plain PyTorch loop, as usually written",
    "plain_channels_last_images_per_second":
        "plain loop with channels-last (what the Trainer does on the CPU)",
    "trainer_images_per_second": "hashlab `Trainer` (its epoch timer; + seeding, logging, "
                                 "accuracy)",
}


def train_throughput(d: dict[str, Any], name: str, load: Load) -> str:
    rows = [[label, f"{max(d[k]):,.0f}", f"{min(d[k]):,.0f}–{max(d[k]):,.0f}"]
            for k, label in THROUGHPUT_LOOPS.items()]
    n = len(d["trainer_images_per_second"])
    return "\n".join([
        source(name, d), "",
        f"batch {d['batch_size']}, {d['batches']} steps per measurement, {d['threads']} "
        f"threads, runs alternated; Trainer / best plain loop = **{d['ratio_best']:.2f}** "
        f"(target ≥ 0.95).", "",
        md_table(["loop", f"images/s (best of {n})", f"all {n} repeats"], rows)])


def recorded_demo(d: dict[str, Any], name: str, load: Load) -> str:
    header = ["metric", *(f"{r['date']}: `{r['command']}`" for r in d["runs"])]
    rows = [[label, *(format(r["metrics"][key], spec) for r in d["runs"])]
            for key, label, spec in d["rows"]]
    return "\n".join([_recorded(name, d), "", md_table(header, rows)])


def recorded_sweep(d: dict[str, Any], name: str, load: Load) -> str:
    def cell(v: float | list[float]) -> str:
        return " / ".join(f"{x:.3f}" for x in v) if isinstance(v, list) else f"{v:.4f}"

    rows = [[r["variant"], *(cell(r[c]) for c in d["columns"])] for r in d["rows"]]
    return "\n".join([_recorded(name, d), "", md_table(["variant", *d["columns"]], rows)])


def _recorded(name: str, d: Mapping[str, Any]) -> str:
    return (f"*Recorded one-off run ({d['date']}; machine: {d['machine']}): JSON "
            f"`benchmarks/results/{name}`, copied from the run's printout; `run_all.py` does "
            f"not repeat it. Command: {d['command']}.*")


# ---------------------------------------------------------------------------------------------
# figures: (file stem, alt text, data extractor, drawer); the extractor returns None when the
# JSON holds nothing to draw (then neither the file nor the link is made)


#: fmnist-ban's gen-2 variants, in table order (benchmarks/recipes.py's BAN_VARIANTS)
BAN_VARIANT_NAMES = ("ban+l", "cwtm", "dkpp", "ban + code distillation")


def ban_rows(ban: Mapping[str, Any]) -> list[tuple[str, list[float], list[float]]]:
    """fmnist-ban's rows (model, test accuracies over seeds, mAP@all over seeds)."""
    seeds = list(ban.values())
    rows = []
    for k in range(3):
        rows.append((f"generation {k + 1}" + (" (teacher, CE)" if k == 0 else " (BAN)"),
                     [s["generations"][k]["test_accuracy"] for s in seeds],
                     [s["generations"][k]["mAP@all"] for s in seeds]))
    for name in BAN_VARIANT_NAMES:
        cells = [s["variants"][name] for s in seeds if name in s.get("variants", {})]
        rows.append((f"generation 2, {name}", [c["test_accuracy"] for c in cells],
                     [c["mAP@all"] for c in cells]))
    for k in (2, 3):
        rows.append((f"BANE, generations 1–{k}",
                     [s["generations"][k - 1]["ensemble_accuracy"] for s in seeds], []))
        rows.append((f"ensemble of {k} independently trained models",
                     [s["independent"]["ensemble_accuracy"][str(k)] for s in seeds], []))
    return rows


def recipes(d: dict[str, Any], name: str, load: Load) -> str:
    """fmnist-semi (test accuracy, mAP@all, steps per method) and fmnist-ban."""
    seeds = d["seeds"]
    n = len(seeds)
    settings = ", ".join(f"{k} {v}" for k, v in d["semi_settings"].items())
    text = [source(name, d), ""]
    for labels, by_method in d["semi"].items():
        text += [f"`fmnist-semi`, {int(labels):,} labels ({d['mode']} mode: Tri-net family "
                 f"{settings}); mean ± std over seeds {', '.join(map(str, seeds))}, each "
                 "seed its own label split. Steps: optimiser steps (the supervised baseline "
                 "gets Tri-net's).", "",
                 md_table(["method", "test accuracy", "mAP@all (64 bits)", "steps"],
                          [[m, seed_cell(c["test_accuracy"], n), seed_cell(c["mAP@all"], n),
                            f"{np.mean(c['steps']):.0f}"] for m, c in by_method.items()]), ""]
    if d.get("ban"):
        b = d["ban_settings"]
        gates = [s["teacher_train_accuracy"] for s in d["ban"].values()]
        text += [f"`fmnist-ban`: {b['labels_per_class'] * 10:,} labelled training images, "
                 f"{b['epochs']} epochs; the teachers' final training accuracy "
                 f"{seed_cell(gates, n)}.", "",
                 md_table(["model", "test accuracy", "mAP@all (64 bits)"],
                          [[m, seed_cell(a, n), seed_cell(v, n)]
                           for m, a, v in ban_rows(d["ban"])]), ""]
    if d.get("complete") is False:
        text += [partial_line(d["runs_done"], d["planned_runs"])]
    return "\n".join(text).rstrip()


def recipes_weak(d: dict[str, Any], name: str, load: Load) -> str:
    """Complementary labels (main-task AP/F1), augmentation arms (accuracy, mAP), k-means
    self-labels against the classical hashers (mAP@all per code length)."""
    n = len(d["seeds"])
    text = [source(name, d), ""]
    if d.get("complementary"):
        rows = [[f"{int(size):,}", arm, seed_cell(c["test_ap"], n), seed_cell(c["test_f1"], n),
                 seed_cell(c["mAP@all"], n)]
                for size, arms in d["complementary"].items() for arm, c in arms.items()]
        text += [f"`fmnist-complementary` (Shirt vs the rest; {d['complementary_steps']} "
                 "optimiser steps per run at every size; F1 at the threshold chosen on the "
                 "validation part):", "",
                 md_table(["labelled images", "training", "test AP (Shirt)", "test F1 (Shirt)",
                           "mAP@all (10 classes)"], rows), ""]
    if d.get("augment"):
        rows = [[f"{int(labels):,}", arm, seed_cell(c["test_accuracy"], n),
                 seed_cell(c["mAP@all"], n)]
                for labels, arms in d["augment"].items() for arm, c in arms.items()]
        text += [f"Augmentation on the low-label split (`fmnist/hash64`, "
                 f"{d['augment_epochs']} epochs, batch 100):", "",
                 md_table(["labels", "augmentation", "test accuracy", "mAP@all (64 bits)"],
                          rows), ""]
    if d.get("unsupervised") or d.get("classical"):
        bits = sorted({int(b) for b in (d.get("unsupervised") or {})}
                      | {int(b) for rows in (d.get("classical") or {}).values() for b in rows})
        rows = [["k-means self-labels (no labels)",
                 *(seed_cell(d["unsupervised"].get(str(b)), n) for b in bits)]]
        rows += [[CLASSICAL.get(h, h), *(seed_cell(v.get(str(b)), n) for b in bits)]
                 for h, v in (d.get("classical") or {}).items()]
        text += ["Unsupervised hashing, fmnist-retrieval mAP@all (labels used only to score):",
                 "", md_table(["method", *(f"{b} bits" for b in bits)], rows), ""]
    if d.get("complete") is False:
        text += [partial_line(d["runs_done"], d["planned_runs"])]
    return "\n".join(text).rstrip()


def _mib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def partial_fc(d: dict[str, Any], name: str, load: Load) -> str:
    """Partial FC: memory and step time at 100k / 1M classes, accuracy at r = 0.1 vs 1.0."""
    text = [source(name, d), ""]
    st = d["settings"]
    if d.get("scale"):
        rows = []
        for r in d["scale"]:
            optimiser = f"SGD, momentum {r['momentum']:g}" if r["momentum"] else "SGD"
            if r["status"] == "ran":
                cells = [_mib(r["memory_bytes"]), f"{r['median_step_ms']:,.1f}"]
            elif r["status"] == "does not fit":
                cells = [f"does not fit (estimate > {st['mem_cap_gib']:g} GiB cap)", DASH]
            else:
                cells = [r["status"], DASH]
            rows.append([f"{r['classes']:,}", r["name"], optimiser, f"{r.get('classes_used', 0):,}"
                         if r["status"] == "ran" else DASH, cells[0], _mib(r["estimate_bytes"]),
                         cells[1]])
        text += [f"One training step of the classifier alone ({st['scale_method']}, batch "
                 f"{st['batch']}, dim {st['dim']}, forward + backward + SGD step, a fresh "
                 "subprocess per row): memory = peak RSS minus the RSS before the run, time = "
                 "median step.", "",
                 md_table(["classes", "classifier", "optimiser", "classes per step",
                           "memory", "estimate", "step (ms)"], rows), ""]
    acc = d.get("accuracy") or {}
    if acc.get("runs"):
        a, n = st["accuracy"], len(d["seeds"])
        rows = [[f"{float(rate):g}", seed_cell(c["test"], n), seed_cell(c["val"], n),
                 f"{np.mean(c['train_seconds']):.0f}"] for rate, c in acc["runs"].items()]
        text += [f"Accuracy: {a['classes']:,} Gaussian classes in {a['input_dim']}-d "
                 f"(σ = {a['sigma']}; {a['train_per_class']} training, {a['test_per_class']} "
                 f"test samples per class), MLP trunk to {st['dim']}-d, {a['method']} through "
                 f"`partial-fc`, {a['steps']:,} steps of batch {a['batch']}; top-1 = nearest "
                 "class centre; mean ± std over seeds " + ", ".join(map(str, d["seeds"])) + ".",
                 "", md_table(["sample rate", "test top-1", "val top-1", "training (s)"], rows),
                 ""]
        if "ratio" in acc:
            text += [f"r = 0.1 / r = 1.0 test top-1: **{acc['ratio']:.4f}** (per seed: "
                     + ", ".join(f"{v:.4f}" for v in acc["ratio_per_seed"]) + ").", ""]
    if d.get("complete") is False:
        text += [partial_line(d["runs_done"], d["planned_runs"])]
    return "\n".join(text).rstrip()


def search_backends(d: dict[str, Any], name: str, load: Load) -> str:
    """FAISS flat against Milvus (milvus-lite) on the same codes: inserts/s, latency, agreement."""
    text = [source(name, d), ""]
    st = d["settings"]
    rows = []
    for r in d.get("rows", []):
        what = (f"binary, {st['nbits']} bits" if r["family"] == "binary"
                else f"float, {st['dim']}-d cosine")
        agree = f"{r['agreement']:.3f}" if "agreement" in r else DASH
        rows.append([what, f"{r['n']:,}", r["backend"], f"{r['inserts_per_s']:,.0f}",
                     f"{r['single_median_ms']:.3f}", f"{r['single_p95_ms']:.3f}",
                     f"{r['batch_qps']:,.0f}", agree])
    text += [f"{st['queries']:,} queries (half perturbed database entries, half random), "
             f"k = {st['k']}; latency: one query per call ({st['single_queries']:,} calls); "
             "batch: one call with every query; agreement: queries whose k ids equal FAISS's, "
             f"in order. FAISS `flat` on {st['faiss_threads']} thread(s); Milvus through "
             "`MilvusIndex` on **milvus-lite, the embedded test engine: a stand-in, not a "
             "performance claim** for Milvus standalone or a cluster.", "",
             md_table(["codes", "n", "backend", "inserts/s", "query median (ms)",
                       "query p95 (ms)", "batch (queries/s)", "agreement"], rows)]
    if d.get("complete") is False:
        text += ["", partial_line(d["runs_done"], d["planned_runs"], resumes=False)]
    return "\n".join(text).rstrip()


def _trinet_rounds(d: dict[str, Any]) -> Any:
    by_labels = d.get("trinet_rounds") or {}
    if not by_labels:
        return None
    labels = "1000" if "1000" in by_labels else next(iter(by_labels))
    runs = list(by_labels[labels].values())
    stages = [s["stage"] for s in runs[0]][1:]
    rows = []
    for i, stage in enumerate(stages, 1):
        cells = [r[i] for r in runs if len(r) > i]
        counts = [c["pseudo_labels"] for c in cells if c["pseudo_labels"] is not None]
        accs = [c["pseudo_accuracy"] for c in cells if c["pseudo_accuracy"] is not None]
        rows.append((stage.replace("round-", ""), float(np.mean(counts)) if counts else 0.0,
                     float(np.mean(accs)) if accs else None,
                     any(c["fine_tune"] for c in cells)))
    return {"rows": rows, "labels": int(labels), "seeds": len(runs), "mode": d["mode"]}


def _draw_trinet_rounds(data: Any, ax: Any) -> None:
    rows = data["rows"]
    x = np.arange(len(rows))
    ax.bar(x, [r[1] for r in rows], color=["#bbbbbb" if r[3] else "#4c72b0" for r in rows])
    ax.set_xticks(x, [f"{r[0]}\n(fine-tune)" if r[3] else r[0] for r in rows])
    ax.set_xlabel("Tri-net round")
    ax.set_ylabel("pseudo-labels per head (after DES)", color="#4c72b0")
    twin = ax.twinx()
    pts = [(i, r[2]) for i, r in enumerate(rows) if r[2] is not None]
    if pts:
        xs, ys = zip(*pts, strict=True)
        twin.plot(xs, ys, "o-", color="#c44e52")
    twin.set_ylabel("their accuracy (hidden labels)", color="#c44e52")
    twin.set_ylim(0.5, 1.0)
    ax.set_title(f"Tri-net pseudo-labels per round, fmnist-semi {data['labels']:,} labels, "
                 f"{data['mode']} mode (mean over {data['seeds']} seeds)", fontsize=9)


@dataclass(frozen=True)
class Figure:
    stem: str
    alt: str
    data: Callable[[dict[str, Any]], Any]  # the table's JSON -> what to draw (None: nothing)
    draw: Callable[[Any, Any], None]  # (data, matplotlib Axes)
    size: tuple[float, float] = (6.4, 3.8)


def _bits_lines(d: dict[str, Any]) -> Any:
    lines = {DEEP_METHODS.get(m, (m, m))[1]: sorted(
        (int(b), float(np.mean(v)), float(np.std(v))) for b, v in row.items() if v)
        for m, row in _hashing_runs(d).items()}
    partial = d.get("complete") is False
    return {"lines": lines, "mode": d["mode"], "partial": partial} if lines else None


def _draw_bits(data: Any, ax: Any) -> None:
    import matplotlib

    colors = matplotlib.colormaps["tab20"]
    for i, (label, pts) in enumerate(data["lines"].items()):
        b, mean, std = zip(*pts, strict=True)
        ax.errorbar(b, mean, yerr=std if any(std) else None, marker="os^D"[i % 4], ms=3, lw=1,
                    capsize=2, label=label, color=colors(i % 20))
    ax.set_xscale("log", base=2)
    bits = sorted({p[0] for pts in data["lines"].values() for p in pts})
    ax.set_xticks(bits, [str(b) for b in bits])
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel("mAP@all")
    ax.set_title(f"{data.get('title', 'fmnist-retrieval')}, {data['mode']} mode" +
                 (" (mean ± std over seeds)" if data["mode"] == "full" else "") +
                 (", partial" if data.get("partial") else ""))
    ax.legend(fontsize=6, ncol=2, loc="lower right")


def _pr_curves(d: dict[str, Any]) -> Any:
    return {"curves": d["pr_curves"], "mode": d["mode"]} if d.get("pr_curves") else None


def _draw_pr(data: Any, ax: Any) -> None:
    for m, c in data["curves"].items():
        ax.plot(c["recall"], c["precision"], lw=1, label=DEEP_METHODS.get(m, (m, m))[1])
    c = next(iter(data["curves"].values()))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"Hamming ranking, {c['bits']} bits, seed {c['seed']}, {data['mode']} mode")
    ax.legend(fontsize=6, ncol=2, loc="lower left")


def _bars(ax: Any, groups: list[str], series: dict[str, list[float]],
          errors: dict[str, list[float]] | None = None) -> None:
    """Grouped bars: one group per label, one bar per series."""
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name,
               yerr=(errors or {}).get(name), capsize=2)
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=7)
    if len(series) > 1:
        ax.legend(fontsize=7)


def _losses_bars(d: dict[str, Any]) -> Any:
    rows = {LOSS_METHODS.get(m, m): r for m, r in d["table"].items() if r}
    cols = [c for c in LOSS_COLUMNS[:3] + LOSS_COLUMNS[4:]  # a column not run yet: no bars
            if any(r.get(c) for r in rows.values())]
    return {"groups": list(rows), "mode": d["mode"],
            "series": {c: [float(np.mean(r.get(c) or [0])) for r in rows.values()] for c in cols},
            "errors": {c: [float(np.std(r.get(c) or [0])) for r in rows.values()] for c in cols}
            } if rows else None


def _draw_losses(data: Any, ax: Any) -> None:
    _bars(ax, data["groups"], data["series"], data["errors"])
    ax.set_ylim(0, 1.12)
    ax.legend(fontsize=7, ncol=len(data["series"]), loc="upper center")
    ax.set_title(f"discriminative losses, {data['mode']} mode (mean ± std over seeds)")


def _draw_simple(data: Any, ax: Any) -> None:
    _bars(ax, data["groups"], data["series"])
    ax.set_ylabel(data["ylabel"])
    ax.set_title(data["title"])
    if data.get("log"):
        ax.set_yscale("log")


def _metrics_speed_data(d: dict[str, Any]) -> dict[str, Any]:
    groups, ours, naive = [], [], []
    for r in d["results"]:
        runs = [(f"{r['kind']} {r['bits_or_dim']}", r["seconds"])]
        if "index_path_seconds" in r:
            runs.append((f"{r['kind']} {r['bits_or_dim']}, flat BinaryIndex",
                         r["index_path_seconds"]))
        for label, seconds in runs:
            groups.append(label)
            ours.append(seconds)
            naive.append(r["naive_seconds_extrapolated"])
    return {"groups": groups, "series": {"hashlab": ours, "naive argsort (extrapolated)": naive},
            "ylabel": "seconds", "title": "all metrics, 1,000 queries × 60,000 items"}


def _losses_speed_data(d: dict[str, Any]) -> dict[str, Any]:
    return {"groups": list(d["ms"]), "series": {"ms": list(d["ms"].values())},
            "ylabel": "ms (forward + backward)", "title": "MarginSoftmax at 10,000 classes"}


def _search_data(d: dict[str, Any]) -> dict[str, Any]:
    kinds = [r["kind"] for r in d["results"][0]["rows"] if "range_qps" in r]
    series = {}
    for res in d["results"]:
        by_kind = {r["kind"]: r.get("range_qps", 0) for r in res["rows"]}
        series[f"{res['name']} ({res['n']:,})"] = [by_kind.get(k, 0) for k in kinds]
    return {"groups": kinds, "series": series, "ylabel": "radius-2 queries/s",
            "title": "radius-2 search", "log": True}


def _serve_data(d: dict[str, Any]) -> dict[str, Any]:
    conc = sorted({r["concurrency"] for r in d["rows"]})
    kinds = list(dict.fromkeys(r["kind"] for r in d["rows"]))
    rps = {(r["kind"], r["concurrency"]): r["requests_per_second"] for r in d["rows"]}
    return {"groups": [f"search by {k}" for k in kinds],
            "series": {f"concurrency {c}": [rps.get((k, c), 0) for k in kinds] for c in conc},
            "ylabel": "requests/s", "title": "hashlab serve"}


def _throughput_data(d: dict[str, Any]) -> dict[str, Any]:
    return {"groups": ["plain", "plain channels-last", "Trainer"],
            "series": {"best": [max(d[k]) for k in THROUGHPUT_LOOPS],
                       "worst": [min(d[k]) for k in THROUGHPUT_LOOPS]},
            "ylabel": "images/s", "title": "training throughput"}


def _hashers_data(d: dict[str, Any]) -> dict[str, Any]:
    return {"lines": {h: [(int(b), v["mAP@all"], 0.0) for b, v in row.items()]
                      for h, row in d["table"].items()}, "mode": "classical"}


def _draw_hashers(data: Any, ax: Any) -> None:
    _draw_bits(data, ax)
    ax.set_title("classical hashers on raw pixels, fmnist-retrieval")


# ---------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Table:
    source: str  # its JSON, relative to benchmarks/results/
    render: Callable[[dict[str, Any], str, Load], str]
    figures: tuple[Figure, ...] = ()
    how: str | None = None  # the command that writes the JSON, said while there is none


def _deep_figures(mode: str) -> tuple[Figure, ...]:
    return (Figure(f"deep-hashing-{mode}",
                   f"deep hashing, {mode} mode: mAP@all against code length",
                   _bits_lines, _draw_bits, (6.4, 4.2)),
            Figure(f"deep-hashing-{mode}-pr", f"deep hashing, {mode} mode: PR curves",
                   _pr_curves, _draw_pr, (6.4, 4.2)))


def _losses_figure(mode: str) -> tuple[Figure, ...]:
    return (Figure(f"losses-openset-{mode}",
                   f"open-set and closed-set results per loss, {mode} mode",
                   _losses_bars, _draw_losses, (7.5, 4.0)),)


TABLES: dict[str, Table] = {
    "demo": Table("recorded/demo.json", recorded_demo),
    "demo-config-sweep": Table("recorded/demo_config_sweep.json", recorded_sweep),
    "metrics-speed": Table("metrics_speed.json", metrics_speed, (Figure(
        "metrics-speed", "metric speed against the naive baseline", _metrics_speed_data,
        _draw_simple),)),
    "losses-openset-quick": Table("losses_openset_quick.json", losses_openset,
                                  _losses_figure("quick"),
                                  "python benchmarks/run_all.py --quick --only losses-openset"),
    "losses-openset-full": Table("losses_openset_full.json", losses_openset,
                                 _losses_figure("full"),
                                 "python benchmarks/run_all.py --only losses-openset"),
    "losses-speed": Table("losses_speed.json", losses_speed, (Figure(
        "losses-speed", "MarginSoftmax forward + backward time", _losses_speed_data,
        _draw_simple, (5.0, 3.4)),)),
    "search": Table("search.json", search, (Figure(
        "search", "radius-2 queries/s per index kind", _search_data, _draw_simple),)),
    "hashers-fmnist": Table("hashers_fmnist.json", hashers_fmnist, (Figure(
        "hashers-fmnist", "classical hashers: mAP@all against code length", _hashers_data,
        _draw_hashers),)),
    "hashers-fmnist-quick": Table("hashers_fmnist_quick.json", hashers_fmnist),
    "hashers-itq": Table("hashers_itq.json", hashers_itq),
    "dph-quick": Table("hashing_quick.json", dph),
    "dph-full": Table("hashing_full.json", dph),
    "deep-hashing-quick": Table("hashing_quick.json", deep_hashing, _deep_figures("quick"),
                                "python benchmarks/run_all.py --quick --only hashing"),
    "deep-hashing-full": Table("hashing_full.json", deep_hashing, _deep_figures("full"),
                               "python benchmarks/run_all.py --only hashing"),
    "unseen-quick": Table("hashing_quick.json", unseen),
    "unseen-full": Table("hashing_full.json", unseen),
    "crossmodal-quick": Table("crossmodal_quick.json", crossmodal, (),
                              "python benchmarks/run_all.py --quick --only crossmodal"),
    "crossmodal-full": Table("crossmodal_full.json", crossmodal, (),
                             "python benchmarks/run_all.py --only crossmodal"),
    "finegrained-quick": Table("finegrained_quick.json", finegrained, (Figure(
        "finegrained-quick", "fine-grained hashing, quick mode: mAP@all against code length",
        _finegrained_lines, _draw_bits, (6.4, 4.2)),),
        "python benchmarks/run_all.py --quick --only finegrained"),
    "finegrained-full": Table("finegrained_full.json", finegrained, (Figure(
        "finegrained-full", "fine-grained hashing, full mode: mAP@all against code length",
        _finegrained_lines, _draw_bits, (6.4, 4.2)),),
        "python benchmarks/run_all.py --only finegrained"),
    "recipes-quick": Table("recipes_quick.json", recipes, (Figure(
        "trinet-rounds-quick", "Tri-net pseudo-labels per round, quick mode", _trinet_rounds,
        _draw_trinet_rounds, (6.4, 3.8)),), "python benchmarks/run_all.py --quick --only recipes"),
    "recipes-full": Table("recipes_full.json", recipes, (Figure(
        "trinet-rounds-full", "Tri-net pseudo-labels per round, full mode", _trinet_rounds,
        _draw_trinet_rounds, (6.4, 3.8)),), "python benchmarks/run_all.py --only recipes"),
    "recipes-weak-quick": Table("recipes_weak_quick.json", recipes_weak, (),
                                "python benchmarks/run_all.py --quick --only recipes-weak"),
    "recipes-weak-full": Table("recipes_weak_full.json", recipes_weak, (),
                               "python benchmarks/run_all.py --only recipes-weak"),
    "partial-fc-quick": Table("partial_fc_quick.json", partial_fc, (),
                              "python benchmarks/run_all.py --quick --only partial-fc"),
    "partial-fc-full": Table("partial_fc_full.json", partial_fc, (),
                             "python benchmarks/run_all.py --only partial-fc"),
    "search-backends-quick": Table("search_backends_quick.json", search_backends, (),
                                   "python benchmarks/run_all.py --quick --only search-backends"),
    "search-backends-full": Table("search_backends_full.json", search_backends, (),
                                  "python benchmarks/run_all.py --only search-backends"),
    "serve": Table("serve.json", serve, (Figure(
        "serve", "requests/s per request kind and concurrency", _serve_data, _draw_simple),)),
    "train-throughput": Table("train_throughput.json", train_throughput, (Figure(
        "train-throughput", "training images/s: plain loops and the Trainer", _throughput_data,
        _draw_simple, (5.0, 3.4)),)),
}


def loader(results_dir: Path = RESULTS_DIR) -> Load:
    """JSON by name (relative to ``results_dir``), None where the file does not exist."""
    cache: dict[str, Any] = {}

    def load(name: str) -> dict[str, Any] | None:
        if name not in cache:
            path = results_dir / name
            cache[name] = json.loads(path.read_text()) if path.exists() else None
        return cache[name]

    return load


def render_block(name: str, load: Load) -> str:
    """The generated content of one block: the table and the links to its figures."""
    if name not in TABLES:
        raise KeyError(f"results-table {name!r}: no such table; known: {', '.join(TABLES)}")
    table = TABLES[name]
    d = load(table.source)
    if d is None:
        return not_run(table.source, table.how) + "\n"
    text = table.render(d, table.source, load)
    for fig in table.figures:
        if fig.data(d) is not None:
            text += f"\n\n![{fig.alt}](figures/results-{fig.stem}.png)"
    return text + "\n"


def render(text: str, load: Load) -> str:
    """``text`` with every results-table block regenerated."""
    return _BLOCK.sub(lambda m: m.group(1) + render_block(m.group(2), load) + m.group(4), text)


def blocks(text: str) -> list[str]:
    return [m.group(2) for m in _BLOCK.finditer(text)]


def stale_blocks(text: str, load: Load) -> list[str]:
    """Names of the blocks whose content differs from what the JSON renders, and of the
    registered tables the page lacks."""
    stale = [m.group(2) for m in _BLOCK.finditer(text)
             if m.group(3) != render_block(m.group(2), load)]
    return stale + [f"{name} (missing)" for name in TABLES if name not in blocks(text)]


def write_figures(load: Load, folder: Path = FIGURES_DIR) -> list[Path]:
    """Draw every figure whose JSON exists; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES.values():
        d = load(table.source)
        for fig in table.figures:
            data = None if d is None else fig.data(d)
            if data is None:
                continue
            figure, ax = plt.subplots(figsize=fig.size)
            fig.draw(data, ax)
            ax.grid(alpha=0.3)
            figure.tight_layout()
            path = folder / f"results-{fig.stem}.png"
            figure.savefig(path, dpi=110, metadata={"Software": None})
            plt.close(figure)
            written.append(path)
    return written
