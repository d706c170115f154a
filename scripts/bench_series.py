"""Speed of the time-series job (``model_core.series.fuse_series``) against separate ``fuse`` runs.

A series of 2 fine dates (references) and ``--targets`` coarse dates between them, ``--size`` x
``--size`` fine pixels (6-band int16, UTM) with 480 m coarse rasters in the MODIS sinusoidal
projection (warped on the fly), tile 256, overlap 32, the default (full-width) network with random
weights, on the CPU. Timed, in one process and in this order:

1. ``fuse_series`` with two references per date (both blended);
2. ``fuse`` once per (target, reference): the same predictions as separate runs;
3. ``fuse_series`` with one reference (the nearest) per date;

and the ratios: (2) / (1) is the gain of encoding each reference and each coarse image once
(reading each reference tile once per group), the sum of the nearest-reference runs of (2) / (3)
the same for one reference, and (1) against the nearest-reference runs what a second reference costs.

``--per-tile`` measures the network work of one 256 x 256 tile alone (no reading, warping or writing),
alternating the series predictor and the separate per-pair calls ``--repeats`` times and keeping the
fastest of each: the fairest ratio on a machine other processes load.

``--accuracy`` instead measures the blending rule: leave-one-date-out on simulated series (every
date with a fine image predicted from the other dates through ``fuse_series(targets="all")``, with
the embedded model), MAE against the left-out fine image over the dates that have a fine date on
both sides, for the nearest reference only, two references weighted by time only, and the rule.

    .venv/bin/python scripts/bench_series.py [--size 1024] [--targets 10] [--threads N]
    .venv/bin/python scripts/bench_series.py --per-tile [--targets 10] [--repeats 2]
    .venv/bin/python scripts/bench_series.py --accuracy
    .venv/bin/python scripts/bench_series.py --quality-cost [--size 384] [--targets 4]

``--quality-cost`` times the whole job with the plugin's model with and without the per-date quality layers,
alternating ``--repeats`` times: what writing them costs.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from bench_fusion import write_coarse, write_fine, write_model  # noqa: E402
from benchutil import load_average, machine  # noqa: E402


def make_series(folder, size, targets):
    """Two fine dates 10 * (targets + 1) days apart and ``targets`` coarse dates between them."""
    import datetime as dt

    from model_core.training import Pair

    first = dt.date(2021, 6, 1)
    fine = write_fine(folder / "fine.tif", size)
    coarse = write_coarse(folder / "coarse.tif", size)
    pairs = []
    for index in range(targets + 2):
        date = first + dt.timedelta(days=10 * index)
        coarse_copy = folder / f"coarse_{date}.tif"
        shutil.copy(coarse, coarse_copy)
        fine_copy = ""
        if index in (0, targets + 1):
            fine_copy = folder / f"fine_{date}.tif"
            shutil.copy(fine, fine_copy)
        pairs.append(Pair(date, str(fine_copy), str(coarse_copy)))
    return pairs


#: (kind, size, dates, days apart, seed) of the leave-one-date-out scenes.
ACCURACY_SCENES = (("fields", 128, 6, 16, 3), ("urban", 128, 6, 24, 5), ("fields", 64, 5, 16, 3))


def bench_accuracy(folder):
    """Leave-one-date-out MAE of the nearest reference, two by time only, and the rule, per scene."""
    import numpy as np
    from osgeo import gdal

    from model_core.series import fuse_series
    from model_core.simulate import simulate_series

    variants = {"nearest only": dict(references=1), "two, time only": dict(weighting="time"), "two, rule": {}}
    print("leave-one-date-out MAE (reflectance) over the dates with a fine date on both sides, embedded model:")
    for kind, size, count, days, seed in ACCURACY_SCENES:
        series = simulate_series(folder / f"{kind}{size}", kind=kind, size=size, count=count, interval_days=days,
                                 seed=seed)
        errors = {}
        for name, options in variants.items():
            # the blend rule alone: the series fit (model_core.series_fit) would leave out, and so learn from,
            # the very dates scored here
            result = fuse_series(str(series.manifest), None, folder / f"{kind}{size}_{len(errors)}", targets="all",
                                 tile=128, overlap=16, device="cpu", fit_between=False, **options)
            maes = []
            for item in series.items[1:-1]:
                fused = gdal.Open(result.files[item.date.isoformat()]).ReadAsArray().astype(float)
                truth = gdal.Open(str(item.fine)).ReadAsArray().astype(float)
                ok = (fused != -9999).all(0) & (truth != -9999).all(0)
                maes.append(np.abs(fused - truth)[:, ok].mean() * 1e-4)
            errors[name] = float(np.mean(maes))
        print(f"  {kind} {size} x {size}, {count} dates {days} days apart, seed {seed}: "
              + ", ".join(f"{name} {value:.5f}" for name, value in errors.items())
              + f" (rule / nearest {errors['two, rule'] / errors['nearest only']:.2f})", flush=True)


def bench_tile(targets, repeats, size=256):
    """Seconds of network work for one tile: the series predictor (2 references, ``targets`` dates)
    against one ``TileModel`` call per (target, reference), alternating, fastest of ``repeats``."""
    import datetime as dt

    import numpy as np
    import torch

    from model_core.fusion import TileModel
    from model_core.network import CTSTFM, CTSTFMConfig
    from model_core.series import SeriesPredictor, Target
    from model_core.training import Pair

    model, device, bands = CTSTFM(CTSTFMConfig()).eval(), torch.device("cpu"), 6
    first = dt.date(2021, 6, 1)
    refs = [Pair(first, "fine_a", "coarse_a"), Pair(first + dt.timedelta(days=10 * (targets + 1)), "fine_b", "")]
    plan = [Target(first + dt.timedelta(days=10 * (k + 1)), f"coarse_{k}", first, tuple(refs), "")
            for k in range(targets)]
    series = SeriesPredictor(model, device, plan, refs, footprint=17)
    single = TileModel(model, device)
    rng = np.random.default_rng(0)
    fine, coarse = rng.random((1, 2 * bands, size, size), np.float32), rng.random((1, targets * bands, size, size),
                                                                                  np.float32)
    batch = (fine, np.ones((1, 2, size, size), np.float32), coarse, np.ones((1, targets, size, size), np.float32),
             fine.copy(), np.zeros_like(coarse), np.zeros((1, targets, size, size), np.float32))

    def separate():
        for k in range(targets):
            for r in range(2):
                single((fine[:, r * bands:(r + 1) * bands], coarse[:, k * bands:(k + 1) * bands]))

    best = {}
    single((fine[:, :bands], coarse[:, :bands]))  # warm-up
    for _ in range(repeats):
        for name, work in (("series", lambda: series(batch)), ("separate", separate)):
            started = time.perf_counter()
            work()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    print(f"one {size} x {size} tile, {targets} targets x 2 references, network only, fastest of {repeats}: "
          f"series predictor {best['series']:.1f} s, {2 * targets} separate calls {best['separate']:.1f} s "
          f"-> {best['separate'] / best['series']:.2f} x")
    return best


def bench_quality(size, targets, repeats):
    """Seconds of the whole series job (plugin model, 2 references) with and without the quality layers,
    alternating, fastest of ``repeats``: what writing them costs."""
    from model_core.series import fuse_series

    best = {}
    with tempfile.TemporaryDirectory(prefix="bench_series_") as tmp:
        folder = Path(tmp)
        pairs = make_series(folder, size, targets)
        for repeat in range(repeats):
            for quality in (False, True):
                started = time.perf_counter()
                fuse_series(pairs, None, folder / f"out_{repeat}_{quality}", quality=quality, device="cpu")
                best[quality] = min(best.get(quality, float("inf")), time.perf_counter() - started)
    print(f"{size} x {size}, {targets} targets x 2 references, end to end, fastest of {repeats}: without quality "
          f"layers {best[False]:.1f} s, with {best[True]:.1f} s -> {best[True] / best[False]:.3f} x")
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the fine rasters (1024)")
    parser.add_argument("--targets", type=int, default=10, help="coarse dates between the two fine dates (10)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--accuracy", action="store_true", help="measure the blending rule instead of the speed")
    parser.add_argument("--per-tile", action="store_true", help="measure one tile's network work only")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of --per-tile and --quality-cost (2)")
    parser.add_argument("--quality-cost", action="store_true",
                        help="the series job with and without its quality layers, alternating (end to end)")
    args = parser.parse_args(argv if argv is not None else [])
    import torch

    from model_core.fusion import fuse
    from model_core.series import fuse_series

    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; load average before: {load_average()}")
    if args.per_tile:
        return bench_tile(args.targets, args.repeats)
    if args.quality_cost:
        return bench_quality(args.size, args.targets, args.repeats)
    if args.accuracy:
        with tempfile.TemporaryDirectory(prefix="bench_series_") as tmp:
            bench_accuracy(Path(tmp))
        return {}
    options = dict(tile=256, overlap=32, device="cpu")
    with tempfile.TemporaryDirectory(prefix="bench_series_") as tmp:
        folder = Path(tmp)
        model = write_model(folder / "model.pt")
        pairs = make_series(folder, args.size, args.targets)
        fine = [p for p in pairs if p.fine]
        fuse(fine[0].fine, pairs[1].coarse, model, folder / "warm.tif", max_strips=1, **options)
        started = time.perf_counter()
        two = fuse_series(pairs, model, folder / "two", **options)
        series_two = time.perf_counter() - started
        separate = {0: 0.0, 1: 0.0}
        for pair in pairs[1:-1]:
            for side, ref in enumerate(fine):
                started = time.perf_counter()
                fuse(ref.fine, pair.coarse, model, folder / "one.tif", **options)
                separate[side] += time.perf_counter() - started
        started = time.perf_counter()
        fuse_series(pairs, model, folder / "one", references=1, **options)
        series_one = time.perf_counter() - started
    runs = 2 * args.targets
    both = separate[0] + separate[1]
    nearest = sum(separate.values()) / 2  # every fuse run costs the same; half of them are the nearest ones
    print(f"{args.targets} targets, 2 references, {args.size} x {args.size} x 6, tile 256, overlap 32, cpu, "
          f"{args.threads} thread(s), {two.tiles} tile visits:")
    print(f"  fuse-series, 2 references:      {series_two:7.1f} s")
    print(f"  {runs} separate fuse runs:         {both:7.1f} s  -> fuse-series is {both / series_two:.2f} x faster "
          "for the same predictions")
    print(f"  fuse-series, 1 reference:       {series_one:7.1f} s  vs {args.targets} fuse runs {nearest:7.1f} s "
          f"-> {nearest / series_one:.2f} x")
    print(f"  2 references in fuse-series cost {series_two / nearest:.2f} x the {args.targets} single-reference "
          f"fuse runs users make today; load average after: {load_average()}")
    return {"series_two": series_two, "separate": both, "series_one": series_one, "nearest_runs": nearest}


if __name__ == "__main__":
    main(sys.argv[1:])
