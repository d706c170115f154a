"""A gap-free series from three fine dates: what the time-series job gives, trained or not, against simple estimates.

Per series: the *realistic* sensor difference with the few-dates bench's milder settings (coarse error 4 %,
misregistration 0.3 coarse pixel; ``bench_few_dates.MILD``), green/red/NIR, 320 x 320 fine pixels, five
dates 24 days apart. The fine images of dates 1, 3 and 5 are the user's; dates 2 and 4 are filled by
``ctstfm:fuseseries`` (two references, blended) and scored against their true fine images. Rows:

- the nearest fine date unchanged, the fine dates interpolated linearly in time, the temporal difference
  from both sides weighted by time (``w_b (F_b + C_t - C_b) + w_a (F_a + C_t - C_a)``);
- the series job with the plugin's model (no training; its first guess between fine dates fitted on the
  series by leaving date 3 out, ``model_core.series_fit``);
- the series job with a model trained by ``ctstfm:train``'s defaults (``--train-minutes``, MAX_MINUTES) on the
  three fine dates, and on dates 1 and 5 only (date 3 kept out of its training); each with the series job's
  check against the plugin's model (``CHOOSE_MODEL``, the default: on date 3 left out, when the model was not
  trained on it; else the plugin's model fills dates 2 and 4) and without it.

    .venv/bin/python scripts/bench_series_few_dates.py [--train-minutes 3] [--series 3]
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from bench_few_dates import BANDS, MILD, read_on_fine_grid, read_raster, scores  # noqa: E402
from benchutil import load_average, machine_info  # noqa: E402

# (seed, coarse grid): seeds used nowhere else. Two with MODIS's sinusoidal grid warped onto the fine grid
# (as reprojected MODIS comes), one with the coarse images on their own aligned grid.
SERIES = [(961, "sinusoidal-fine"), (962, "sinusoidal-fine"), (963, "own")]
KNOWN, TARGETS = (0, 2, 4), (1, 3)
METHODS = {
    "nearest": "nearest fine date unchanged",
    "linear": "fine dates interpolated linearly in time",
    "temporal_difference": "temporal difference from both sides, weighted by time",
    "series_plugin_model": "`ctstfm:fuseseries`, the plugin's model (no training)",
    "series_trained_unchecked": "`ctstfm:fuseseries`, a model trained with `ctstfm:train` defaults on the 3 fine "
                                "dates, `CHOOSE_MODEL=false`",
    "series_trained": "`ctstfm:fuseseries`, the same model, checked (default: trained on date 3, so not scored)",
    "series_kept_out_unchecked": "`ctstfm:fuseseries`, a model trained on dates 1 and 5 only, `CHOOSE_MODEL=false`",
    "series_kept_out": "`ctstfm:fuseseries`, the same model, checked against the plugin's model on date 3 (default; "
                       "trained on two dates, so not against the mean of both)",
}


def simple_estimates(items, target):
    """The simple estimates of a target date from the fine dates on either side (reflectance), by method."""
    before, after = items[target - 1], items[target + 1]
    fine_b, coarse_b, _ = read_on_fine_grid(before.fine, before.coarse)
    fine_a, coarse_a, _ = read_on_fine_grid(after.fine, after.coarse)
    _, coarse_t, _ = read_on_fine_grid(before.fine, items[target].coarse)
    gap_b = (items[target].date - before.date).days
    gap_a = (after.date - items[target].date).days
    weight_b, weight_a = gap_a / (gap_b + gap_a), gap_b / (gap_b + gap_a)
    return {
        "nearest": fine_b if gap_b <= gap_a else fine_a,
        "linear": weight_b * fine_b + weight_a * fine_a,
        "temporal_difference": weight_b * (fine_b + coarse_t - coarse_b) + weight_a * (fine_a + coarse_t - coarse_a),
    }


def mean_scores(per_date):
    return {key: sum(s[key] for s in per_date) / len(per_date) for key in ("mae", "rmse", "ssim")}


def run_series(seed, coarse_grid, args, work):
    from model_core.series import fuse_series
    from model_core.simulate import simulate_series
    from model_core.training import train, write_manifest

    folder = work / f"fields_{seed}_{coarse_grid}"
    series = simulate_series(folder / "series", kind="fields", seed=seed, size=args.size, count=5, interval_days=24,
                             start="2021-10-01", sensor="realistic", bands=BANDS, coarse_grid=coarse_grid, **MILD)
    items = series.items
    rows = [(it.date, it.fine if i in KNOWN else "", it.coarse) for i, it in enumerate(items)]
    manifest = write_manifest(folder / "series.csv", rows)
    truths = {t: read_raster(items[t].fine) for t in TARGETS}
    estimates = {t: simple_estimates(items, t) for t in TARGETS}
    results = {method: mean_scores([scores(estimates[t][method], *truths[t]) for t in TARGETS])
               for method in estimates[TARGETS[0]]}
    minutes, chosen, seconds, checked = {}, {}, {}, {}
    results["series_plugin_model"], seconds["series_plugin_model"], _, _ = fuse_and_score(
        fuse_series, manifest, None, folder / "series_plugin_model", items, truths)
    # Trained on all three fine dates, then on dates 1 and 5 only (date 3 kept out, so the series job can check it).
    for name, known in (("trained", KNOWN), ("kept_out", (KNOWN[0], KNOWN[-1]))):
        model = folder / f"{name}.pt"
        started = time.monotonic()
        train(write_manifest(folder / f"train_{name}.csv", [items[i] for i in known]), model,
              max_minutes=args.train_minutes, device="cpu")
        minutes[name] = (time.monotonic() - started) / 60
        for method, options in ((f"series_{name}_unchecked", {"choose_model": False}), (f"series_{name}", {})):
            results[method], seconds[method], chosen[name], checked[name] = fuse_and_score(
                fuse_series, manifest, str(model), folder / method, items, truths, **options)
    return {"seed": seed, "coarse_grid": coarse_grid, "rows": results, "minutes": minutes, "chosen": chosen,
            "seconds": seconds, "checked": checked, "dates": [it.date.isoformat() for it in items]}


def fuse_and_score(fuse_series, manifest, model_path, folder, items, truths, **options):
    """Run the series job; the mean scores of dates 2 and 4, its seconds, the model files that filled them and
    the models' scores on the fine date left out (``CTSTFM_FIRST_GUESS``; ``{}`` when not checked)."""
    from model_core.raster import read_metadata

    fused = fuse_series(str(manifest), model_path, folder, device="cpu", **options)
    per_date = []
    for t in TARGETS:
        estimate, valid = read_raster(fused.files[items[t].date.isoformat()])
        per_date.append(scores(estimate, truths[t][0], truths[t][1] & valid))
    with open(fused.index) as f:
        models = " ".join(sorted({row["model"] for row in csv.DictReader(f)}))
    first_guess = json.loads(read_metadata(fused.files[items[TARGETS[0]].date.isoformat()])["CTSTFM_FIRST_GUESS"])
    return mean_scores(per_date), fused.seconds, models, first_guess.get("model_scores_on_fine_dates_left_out", {})


def markdown(runs, info, args, seconds):
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, no GPU; load average "
        f"{info['load_before'][0] if info['load_before'] else '?'} before, "
        f"{info['load_after'][0] if info['load_after'] else '?'} after. Whole run {seconds / 60:.1f} min. "
        f"Training: MAX_MINUTES {args.train_minutes:g}. Cells: MAE / RMSE / SSIM, mean of dates 2 and 4.",
        "",
        "| method | " + " | ".join(f"fields {r['seed']}, coarse grid {r['coarse_grid']}" for r in runs) + " |",
        "| --- |" + " --- |" * len(runs),
    ]
    for key, label in METHODS.items():
        cells = [f"{r['rows'][key]['mae']:.5f} / {r['rows'][key]['rmse']:.5f} / {r['rows'][key]['ssim']:.4f}"
                 for r in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| training minutes (3 dates / dates 1 and 5) | " + " | ".join(
        f"{r['minutes']['trained']:.1f} / {r['minutes']['kept_out']:.1f}" for r in runs) + " |")
    for name, label in (("trained", "3 dates"), ("kept_out", "dates 1 and 5")):
        lines.append(f"| model that filled dates 2 and 4, checked, trained on {label} | "
                     + " | ".join(r["chosen"][name] for r in runs) + " |")
    lines.append("| date 3 left out, MAE: model trained on dates 1 and 5 / plugin's model | " + " | ".join(
        " / ".join(f"{score['mae']:.5f}" for score in r["checked"]["kept_out"].values()) or "-" for r in runs) + " |")
    lines.append("| series job seconds: plugin's model / 3 dates unchecked / checked / dates 1 and 5 unchecked / "
                 "checked | " + " | ".join(" / ".join(f"{r['seconds'][key]:.1f}" for key in (
                     "series_plugin_model", "series_trained_unchecked", "series_trained",
                     "series_kept_out_unchecked", "series_kept_out")) for r in runs) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-minutes", type=float, default=3.0, help="MAX_MINUTES of each training run (3)")
    parser.add_argument("--size", type=int, default=320, help="fine pixels per side (320)")
    parser.add_argument("--series", type=int, default=len(SERIES), help="how many of the series to run")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench_series_few_dates"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    info["load_before"] = load_average()
    started = time.monotonic()
    runs = [run_series(seed, grid, args, work) for seed, grid in SERIES[: args.series]]
    info["load_after"] = load_average()
    print(markdown(runs, info, args, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
