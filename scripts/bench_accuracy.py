"""`make bench-accuracy`: our own Table III — CTSTFM against the baselines on held-out simulated scenes.

For each scene kind, ``fields`` (irrigated fields, CIA-like, seed 301) and ``urban``
(urban change, Daxing-like, seed 401) — seeds no other part of the project uses (the
default model was trained on fields 101-103 and urban 201-203, the sample uses
20240) — the script

1. simulates a series (``--size`` fine pixels a side, ``--dates`` dates ``--interval``
   days apart) with ``model_core.simulate.simulate_series``;
2. trains a model on the scene's first ``dates - 2`` dates as ``ctstfm:train`` does by
   default (``model_core.training.train``: the embedded model fine-tuned in the
   three-image mode), with ``MAX_MINUTES`` ``--train-minutes``;
3. predicts the last date (T1) from the date before it (T0) with every method, each a
   raster written through model_core, timed (wall seconds, including model loading):
   CTSTFM with the plugin's model in both modes and with the scene-trained one
   (``fusion.fuse``, its defaults: the similar-pixel filter on),
   STARFM (``classical_raster.starfm_rasters``), temporal difference
   (``classical_raster.temporal_difference_rasters``), no change (the fine image at
   T0 itself) and coarse only (the coarse image at T1 put on the fine grid by the
   shared pair reader and written by the shared writer);
4. assesses every output against the true fine image at T1 with
   ``model_core.assess.assess`` (block-wise, the metric definitions of
   docs/metrics.md), on one common mask (pixels valid in every output and the
   reference), so all methods are scored on the same pixels.

It prints a Markdown section and writes it into ``--docs`` (docs/benchmarks.md),
replacing the section that starts at the heading ``## Accuracy (make bench-accuracy)``
up to the next ``## `` heading (or appending it); other sections are left alone.
Rasters, models, per-method CSV tables, error maps and ``results.json`` go to
``--work`` (build/bench_accuracy).

    python scripts/bench_accuracy.py [--size 384] [--dates 8] [--train-minutes 5] [--kinds fields,urban]
        [--docs docs/benchmarks.md]
    python scripts/bench_accuracy.py --quick   # smoke test: tiny scenes, 1 min training, markdown under build/

``--quick`` never writes into docs/ unless ``--docs`` is given.
"""

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from benchutil import load_average, machine_info  # noqa: E402

from model_core.errors import Cancelled, CtstfmError  # noqa: E402
from model_core.metrics import format_metric  # noqa: E402
from model_core.progress import ConsoleProgress  # noqa: E402

HEADING = "## Accuracy (make bench-accuracy)"
# (kind, seed, description): seeds used nowhere else in the project.
SCENES = [
    ("fields", 301, "irrigated fields, CIA-like"),
    ("urban", 401, "urban change, Daxing-like"),
]
TABLE_METRICS = ("mae", "rmse", "psnr", "ssim", "sam")

# Method key -> (label, inputs it uses). The order is the table's.
METHODS = {
    "ctstfm_default": ("CTSTFM, the plugin's model (two-image)", "F0, C1"),
    "ctstfm_three": ("CTSTFM, the plugin's model (three-image, `COARSE_T0`)", "F0, C0, C1"),
    "ctstfm_scene": ("CTSTFM, `ctstfm:train` defaults on the scene (three-image)", "F0, C0, C1 (+ training dates)"),
    "starfm": ("STARFM", "F0, C0, C1"),
    "temporal_difference": ("temporal difference", "F0, C0, C1"),
    "no_change": ("no change (fine T0)", "F0"),
    "coarse_only": ("coarse only (coarse T1)", "C1"),
}
# What a method that beats CTSTFM has to go on (facts about its inputs, not results).
ADVANTAGE = {
    "starfm": "uses C0 as well",
    "temporal_difference": "uses C0 as well",
    "no_change": "F0 itself, no prediction",
    "coarse_only": "C1 alone",
    "ctstfm_default": "trained on other scenes",
    "ctstfm_three": "trained on other scenes",
    "ctstfm_scene": "fine-tuned on this scene",
}
# The CTSTFM rows whose rank the text describes.
CTSTFM_ROWS = ("ctstfm_default", "ctstfm_three", "ctstfm_scene")


# --------------------------------------------------------------------------- methods


def coarse_on_fine_grid(fine_path, coarse_path, out_path, scale):
    """The coarse image at T1 on the fine grid, as a raster: the shared pair reader (the same
    bilinear warp fusion uses) in the shared raster job, with the coarse image as the "prediction"."""
    from model_core.raster import PairReader, output_spec
    from model_core.raster_job import JobOutput, RasterJob, software_name

    job = RasterJob("coarse only", out_path, {"fine image": fine_path, "coarse image": coarse_path})
    with job.open(PairReader, fine_path, coarse_path, scale=scale) as pair:
        metadata = {"CTSTFM_SOFTWARE": software_name(), "CTSTFM_REFLECTANCE_SCALE": repr(scale),
                    "CTSTFM_PRODUCT": "coarse image at T1 on the fine grid (bilinear)"}
        output = JobOutput(lambda batch: batch[1], output_spec(pair.grid, "input", scale), pair.count,
                           list(pair.grid.descriptions), metadata)
        job.run(pair, output, tile=256, overlap=0)
    return str(out_path)


def common_mask(paths, out_path):
    """A uint8 mask (1 = valid in every raster of ``paths``, all on one grid) for assess."""
    import numpy as np

    from model_core.raster import OutputSpec, RasterInfo
    from model_core.raster_job import JobOutput, RasterJob, ReaderGroup

    class CommonValidity(ReaderGroup):
        def read(self, window):
            valid = np.ones((window.height, window.width), dtype=bool)
            for reader in self.readers:
                valid &= reader.read(window)[1]
            return valid[None].astype(np.float32), valid

    rasters = [(p, None, os.path.basename(str(p))) for p in paths]
    job = RasterJob("common mask", out_path, {what: path for path, _, what in rasters})
    with job.open(CommonValidity, RasterInfo.read(paths[0], "raster"), rasters) as source:
        output = JobOutput(lambda batch: batch[0], OutputSpec("uint8", 0.0, None), 1, ["valid in every output"])
        job.run(source, output, tile=256, overlap=0)
    return str(out_path)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def fine_tune(folder, train_items, kind, seed, args):
    """A model trained on ``train_items`` as ``ctstfm:train`` does by default, within ``--train-minutes``
    (``MAX_MINUTES``); returns the training record and the model's path (``training["model"]`` is None when no
    epoch finished)."""
    from model_core.training import checkpoint_path, report_paths, train, write_manifest

    manifest = write_manifest(folder / "train_manifest.csv", [(i.date, i.fine, i.coarse) for i in train_items])
    scene_model = folder / "scene_model.pt"
    for stale in (scene_model, checkpoint_path(scene_model), *report_paths(scene_model)):
        stale.unlink(missing_ok=True)  # a failed training must not leave an older model to be used
    training = {"dates": [i.date.isoformat() for i in train_items], "minutes": args.train_minutes}
    print(f"--- ctstfm:train defaults on {len(train_items)} dates ({train_items[0].date} to {train_items[-1].date}), "
          f"MAX_MINUTES {args.train_minutes:g}", flush=True)
    smoke = {"patches_per_epoch": 8, "max_validation_windows": 4} if args.quick else {}
    started = time.perf_counter()
    try:
        result = train(
            manifest, scene_model, max_minutes=args.train_minutes, device=args.device, seed=0,
            data_source={"description": f"bench_accuracy: simulated {kind} seed {seed}, first {len(train_items)} "
                         f"of {args.dates} dates, {args.size} x {args.size} px"},
            progress=ConsoleProgress(f"train {kind}"), **smoke,
        )
        training.update(seconds=time.perf_counter() - started, epochs=result.epochs, best_epoch=result.best_epoch,
                        cancelled=result.cancelled, best_validation_mae=result.best_metrics.get("mae"),
                        initial_validation_mae=result.initial_metrics.get("mae"), model=str(scene_model))
    except Cancelled:
        training.update(seconds=time.perf_counter() - started, epochs=0, model=None)
        print(f"!!! no training epoch finished within {args.train_minutes:g} min: no scene-trained model "
              "(raise --train-minutes)", flush=True)
    return training, scene_model


# --------------------------------------------------------------------------- one scene


def run_scene(kind, seed, description, args, work):
    from model_core.assess import assess
    from model_core.classical_raster import starfm_rasters, temporal_difference_rasters
    from model_core.fusion import fuse
    from model_core.simulate import SCALE, simulate_series

    folder = work / f"{kind}_{seed}"
    outputs = folder / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    print(f"\n=== {kind} (seed {seed}): simulating {args.dates} dates of {args.size} x {args.size} px ===", flush=True)
    series = simulate_series(folder / "series", kind=kind, size=args.size, seed=seed, count=args.dates,
                             interval_days=args.interval, progress=ConsoleProgress(f"simulate {kind}"))
    items = series.items
    t0, t1 = items[-2], items[-1]
    train_items = items[:-2]
    change = series.changes[-1]

    # --- the scene-trained model: ctstfm:train's defaults on the first dates
    training, scene_model = fine_tune(folder, train_items, kind, seed, args)

    # --- every method, each a raster on the fine grid
    fine0, coarse0, coarse1, truth = str(t0.fine), str(t0.coarse), str(t1.coarse), str(t1.fine)
    files, seconds = {}, {}
    runs = [
        ("ctstfm_default", lambda out: fuse(fine0, coarse1, None, out, device=args.device)),
        ("ctstfm_three", lambda out: fuse(fine0, coarse1, None, out, device=args.device, coarse_t0_path=coarse0)),
        ("ctstfm_scene", (lambda out: fuse(fine0, coarse1, str(scene_model), out, device=args.device,
                                           coarse_t0_path=coarse0)) if training.get("model") else None),
        ("starfm", lambda out: starfm_rasters(fine0, coarse0, coarse1, out, window=args.window, classes=args.classes,
                                              device=args.device, scale=SCALE)),
        ("temporal_difference", lambda out: temporal_difference_rasters(fine0, coarse0, coarse1, out, scale=SCALE)),
        ("coarse_only", lambda out: coarse_on_fine_grid(fine0, coarse1, out, SCALE)),
    ]
    for key, run in runs:
        if run is None:
            continue
        out = outputs / f"{key}.tif"
        print(f"--- {METHODS[key][0]}", flush=True)
        seconds[key] = timed(run, out)
        files[key] = str(out)
    files["no_change"] = fine0
    seconds["no_change"] = 0.0

    # --- assess every output on the same pixels
    mask = common_mask(list(files.values()) + [truth], outputs / "common_mask.tif")
    metrics = {}
    for key in METHODS:
        if key not in files:
            continue
        m = assess(files[key], truth, mask_path=mask, scale=SCALE, table_csv=outputs / f"{key}_metrics.csv",
                   error_map_path=outputs / f"{key}_error.tif")
        metrics[key] = m
    return {
        "kind": kind,
        "seed": seed,
        "description": description,
        "size": args.size,
        "dates": [i.date.isoformat() for i in items],
        "t0": t0.date.isoformat(),
        "t1": t1.date.isoformat(),
        "change": change.to_dict(),
        "training": training,
        "files": files,
        "seconds": seconds,
        "metrics": metrics,
        "pixels": sorted({m["counts"]["pixels"] for m in metrics.values()}),
        "band_names": list(next(iter(metrics.values()))["band_names"]),
    }


# --------------------------------------------------------------------------- report


def _ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _rank(metrics, key, metric):
    """1-based rank of ``key`` among the methods by ``metric`` (lower is better except PSNR/SSIM)."""
    higher = metric in ("psnr", "ssim", "cc")
    values = {k: m[metric]["mean"] for k, m in metrics.items()}
    mine = values[key]
    better = [k for k, v in values.items() if k != key and (v > mine if higher else v < mine)]
    return len(better) + 1, better


def _advantage(method, ctstfm_row):
    """What ``method`` has to go on that ``ctstfm_row`` has not (the images both use are no advantage)."""
    if ADVANTAGE[method] == "uses C0 as well" and "C0" in METHODS[ctstfm_row][1]:
        return "the same images"
    return ADVANTAGE[method]


def what_we_see(scene):
    """Sentences written from the numbers: where each CTSTFM variant ranks and where it loses."""
    metrics = scene["metrics"]
    n = len(metrics)
    names = scene["band_names"]
    lines = []
    for key in CTSTFM_ROWS:
        if key not in metrics:
            continue
        mae = metrics[key]["mae"]
        rank, better = _rank(metrics, key, "mae")
        text = f"{METHODS[key][0]} is {_ordinal(rank)} of {n} by MAE ({format_metric('mae', mae['mean'])})"
        if better:
            better.sort(key=lambda k: metrics[k]["mae"]["mean"])
            text += "; behind " + ", ".join(
                f"{METHODS[k][0]} at {format_metric('mae', metrics[k]['mae']['mean'])} ({_advantage(k, key)})"
                for k in better)
            best = metrics[better[0]]["mae"]["bands"]
            gaps = [m - b for m, b in zip(mae["bands"], best)]
            worst = max(range(len(gaps)), key=gaps.__getitem__)
            text += (f"; its largest per-band gap to {METHODS[better[0]][0]} is {names[worst]} "
                     f"({gaps[worst]:+.5f})")
        ranks = [f"{label} {_ordinal(_rank(metrics, key, metric)[0])}"
                 for metric, label in (("rmse", "RMSE"), ("psnr", "PSNR"), ("ssim", "SSIM"), ("sam", "SAM"))]
        lines.append(text + "; by " + ", ".join(ranks) + ".")
    if "ctstfm_three" in metrics and "ctstfm_scene" in metrics:
        a, b = metrics["ctstfm_three"]["mae"]["mean"], metrics["ctstfm_scene"]["mae"]["mean"]
        t = scene["training"]
        lines.append(
            f"Training on this scene ({t['epochs']} epoch(s), {t['seconds'] / 60:.1f} min) changed the three-image "
            f"MAE by {100 * (b - a) / a:+.1f} %."
        )
    if "no_change" in metrics:
        reference = metrics["no_change"]["mae"]["mean"]
        not_better = [METHODS[k][0] for k in metrics if k != "no_change" and metrics[k]["mae"]["mean"] >= reference]
        if not_better:
            lines.append("Not better than no change by MAE: " + ", ".join(not_better) + ".")
    return lines


def scene_markdown(scene):
    metrics = scene["metrics"]
    change = scene["change"]
    by_kind = ", ".join(f"{k} {100 * v:.1f} %" for k, v in change["by_kind"].items() if v) or "none"
    t = scene["training"]
    pixels = (f"{scene['pixels'][0]:,} pixels assessed, the same for every method." if len(scene["pixels"]) == 1
              else f"Assessed pixels differ between methods ({scene['pixels']}): compare with care.")
    out = [
        f"### {scene['kind']} (seed {scene['seed']}, {scene['description']})",
        "",
        f"{scene['size']} x {scene['size']} fine px (30 m), coarse 480 m; {len(scene['dates'])} dates "
        f"{scene['dates'][0]} to {scene['dates'][-1]}. Test pair: T0 {scene['t0']} -> T1 {scene['t1']}; "
        f"abrupt change between them on {100 * change['changed_fraction']:.1f} % of the pixels ({by_kind}). "
        + pixels,
        "",
    ]
    if t.get("model"):
        out.append(
            f"Scene-trained model: `ctstfm:train`'s defaults on {len(t['dates'])} dates ({t['dates'][0]} to "
            f"{t['dates'][-1]}), {t['epochs']} epoch(s) in {t['seconds'] / 60:.1f} min (budget {t['minutes']:g} min; "
            f"best epoch {t['best_epoch']}, validation MAE {t['initial_validation_mae']:.5f} -> "
            f"{t['best_validation_mae']:.5f})."
        )
    else:
        out.append(f"Scene-trained model: none (no epoch finished within {t['minutes']:g} min).")
    out += [
        "",
        "| method | inputs | MAE | RMSE | PSNR (dB) | SSIM | SAM (deg) | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, m in metrics.items():
        label, inputs = METHODS[key]
        cells = [format_metric(metric, m[metric]["mean"]) for metric in TABLE_METRICS]
        secs = "-" if key == "no_change" else f"{scene['seconds'][key]:.1f}"
        out.append(f"| {label} | {inputs} | " + " | ".join(cells) + f" | {secs} |")
    names = scene["band_names"]
    out += [
        "",
        "MAE per band (reflectance):",
        "",
        "| method | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, m in metrics.items():
        out.append(f"| {METHODS[key][0]} | " + " | ".join(format_metric("mae", v) for v in m["mae"]["bands"]) + " |")
    out += ["", "What we see: " + " ".join(what_we_see(scene)), ""]
    return out


def report(scenes, info, args, seconds):
    load = info["load_before"], info["load_after"]
    load_text = f"; load average {load[0][0]} before, {load[1][0]} after" if load[0] and load[1] else ""
    lines = [
        HEADING,
        "",
        "`make bench-accuracy` (`scripts/bench_accuracy.py`): our own version of the paper's Table III. For each "
        "scene kind a held-out series is simulated with a seed no other part of the project uses (the default "
        "model was trained on fields 101-103 and urban 201-203); the last date (T1) is predicted from the date "
        "before it (T0) by every method, each run as a raster through `model_core` and timed (wall seconds, "
        "model loading included), and every output is assessed against the true fine image at T1 with "
        "`model_core.assess` on one common mask (metric definitions: [metrics.md](metrics.md)). F0 = fine "
        "image at T0, C0/C1 = coarse images at T0/T1. Every CTSTFM row is `ctstfm:fuse` with its defaults (the "
        "similar-pixel filter on, a fine-tuned model averaged with the plugin's); the scene-trained model is what `ctstfm:train` makes by default (the embedded "
        "model fine-tuned in the three-image mode) from the scene's dates before T0 only, with MAX_MINUTES "
        f"{args.train_minutes:g}; STARFM: window {args.window}, classes {args.classes}.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads), "
        f"device {info['device']}{' (' + info['gpu'] + ')' if info['gpu'] else ''}{load_text}. "
        f"Date {info['date']}; whole run {seconds / 60:.1f} min."
        + (" **Quick smoke run (--quick): tiny scenes, numbers not meaningful.**" if args.quick else ""),
        "",
    ]
    for scene in scenes:
        lines += scene_markdown(scene)
    return "\n".join(lines).rstrip() + "\n"


def replace_section(path, section, heading=HEADING):
    """Put ``section`` into ``path`` in place of the one under ``heading`` (or append it)."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


# --------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", type=int, default=384, help="fine pixels per scene side")
    parser.add_argument("--dates", type=int, default=8, help="dates per scene (the last two are the test pair)")
    parser.add_argument("--interval", type=int, default=16, help="days between dates")
    parser.add_argument("--kinds", default="fields,urban", help="scene kinds to run")
    parser.add_argument("--train-minutes", type=float, default=5.0, help="MAX_MINUTES of each scene's training")
    parser.add_argument("--window", type=int, default=31, help="STARFM window")
    parser.add_argument("--classes", type=int, default=40, help="STARFM classes")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (fusion, STARFM, training)")
    parser.add_argument("--work", default=argparse.SUPPRESS, help="output folder (default build/bench_accuracy[/quick])")
    parser.add_argument("--docs", default=argparse.SUPPRESS,
                        help="Markdown file whose accuracy section is replaced (default docs/benchmarks.md; "
                             "with --quick build/bench_accuracy/quick/benchmarks.md)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 128 px, 6 dates, 1 min training, 8 patches per epoch")
    parser.add_argument("--few-dates", action="store_true",
                        help="run the 'few dates, real-like sensors' table instead (scripts/bench_few_dates.py: "
                             "realistic sensors, 3 bands, 2 training dates; --few-minutes per training)")
    parser.add_argument("--few-minutes", type=float, default=10.0, help="MAX_MINUTES of each few-dates training")
    parser.add_argument("--few-size", type=int, default=320, help="fine pixels per side of the few-dates cases")
    args = parser.parse_args(argv)
    if args.few_dates:
        return few_dates(args)
    if args.quick:
        defaults = {"size": 128, "dates": 6, "train_minutes": 1.0}
        for name, value in defaults.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    args.work, args.docs = getattr(args, "work", None), getattr(args, "docs", None)
    work = Path(args.work or ROOT / "build" / "bench_accuracy" / ("quick" if args.quick else ""))
    docs = Path(args.docs or (work / "benchmarks.md" if args.quick else ROOT / "docs" / "benchmarks.md"))
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    scenes_to_run = [s for s in SCENES if s[0] in kinds]
    if not scenes_to_run or len(scenes_to_run) != len(kinds):
        parser.error(f"--kinds: choose from {', '.join(s[0] for s in SCENES)}")
    if args.dates < 4:
        parser.error("--dates must be at least 4 (two to train on, T0 and T1)")

    from model_core.assess import json_safe
    from model_core.device import resolve_device

    info = machine_info()
    info["device"] = str(resolve_device(args.device))
    info["date"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    info["load_before"] = load_average()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scenes = []
    try:
        for kind, seed, description in scenes_to_run:
            scenes.append(run_scene(kind, seed, description, args, work))
    except CtstfmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    info["load_after"] = load_average()
    section = report(scenes, info, args, seconds)
    results = {"machine": info, "args": vars(args), "seconds": seconds, "scenes": scenes}
    (work / "results.json").write_text(json.dumps(json_safe(results), indent=2, default=str))
    print("\n" + section)
    replace_section(docs, section)
    print(f"Wrote the section into {docs}; rasters, models, tables and error maps in {work}.")
    return 0


def few_dates(args):
    """The few-dates table (scripts/bench_few_dates.py) into its own section of docs/benchmarks.md."""
    import bench_few_dates

    work = Path(getattr(args, "work", None) or ROOT / "build" / "bench_few_dates")
    docs = Path(getattr(args, "docs", None) or ROOT / "docs" / "benchmarks.md")
    options = argparse.Namespace(train_minutes=args.few_minutes, size=args.few_size, cases=len(bench_few_dates.CASES),
                                 work=str(work))
    section, _ = bench_few_dates.run(options)
    print("\n" + section)
    replace_section(docs, section, heading=bench_few_dates.HEADING)
    print(f"Wrote the section into {docs}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
