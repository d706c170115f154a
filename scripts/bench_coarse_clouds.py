"""A cloud on the coarse image of a date to fill: what the series job gives with and without the coarse cloud mask.

Per series: the *realistic* sensor difference, green/red/NIR, 192 x 192 fine pixels; the user's fine dates on
days 0, 48 and 96 (three, so that the series job fits its first guess between fine dates on the middle one, as
a user's series does), coarse images on those days and on days 24, 25 and 27. Day 24 is filled by the series job
with the plugin's model and scored. Its coarse image gets a bright cloud (reflectance 0.5) over its top-left
quarter, flagged in a MODIS-like ``state_1km`` band on its own 960 m grid (bits 0-1 = 1, cloudy). MAE
(reflectance) against its true fine image, under the cloud (the quarter) and elsewhere (the lower half), for:

- ``no coarse mask``: the cloud's reflectance goes through the network as if it were the ground;
- ``masked, interpolated``: ``coarse_mask`` + ``coarse_mask_rule=modis-state``, no other coarse image near
  (``coarse_days=0``): under the cloud the fine dates are interpolated in time (``interpolate_gaps``);
- ``masked, the next day stands in``: the same with ``coarse_days=3``: day 25's clear coarse image stands in;
- ``masked, 3 days later stands in``: the same with day 27's instead (day 25 not listed);
- ``nearest fine date unchanged`` and the ``fine dates interpolated in time, everywhere`` (no coarse image at
  all), for scale.

``--fine-clouds`` instead puts the cloud on both fine dates around day 24 (days 0 and 48, cloud masks in the
manifest): the job fills it from day 96, the nearest farther fine date, unchanged; scored against day 96's
temporal difference ``F96 + C24 - C96`` (the coarse images warped onto the fine grid as the job warps them),
against day 0's pixels had it been clear (the nearest fine date, unchanged) and against the job elsewhere.

    .venv/bin/python scripts/bench_coarse_clouds.py [--size 192] [--fine-clouds]
"""

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from benchutil import cpu_flags, machine  # noqa: E402

# (kind, seed): seeds used nowhere else.
SERIES = [("fields", 21), ("urban", 22), ("fields", 23), ("urban", 24), ("fields", 25), ("urban", 26), ("fields", 27),
          ("urban", 28)]
COARSE_PIXEL, STATE_PIXEL = 480.0, 960.0
DAYS = (0, 24, 25, 27, 48, 96)  # every simulated date, days from the first
FINE_DAYS, TARGET_DAY = (0, 48, 96), 24
#: (estimate, coarse mask on the target, the coarse-only days listed besides the target, coarse_days)
RUNS = (
    ("no coarse mask", False, (), 0),
    ("masked, interpolated in time", True, (25,), 0),
    ("masked, the next day's coarse image stands in", True, (25,), 3),
    ("masked, a coarse image 3 days later stands in", True, (27,), 3),
)


def cloudy_date(item, folder, size):
    """``item``'s coarse image with a bright cloud over the top-left quarter, and its state band: their paths."""
    import numpy as np

    from model_core.raster import RasterInfo, RasterReader
    from model_core.simulate import write_geotiff

    info = RasterInfo.read(item.coarse)
    with RasterReader(item.coarse) as reader:
        dn, _ = reader.read((0, 0, info.width, info.height))
    quarter = int(round(size * 30.0 / 2 / COARSE_PIXEL))
    dn[:, :quarter, :quarter] = 5000
    coarse = folder / "coarse_cloudy.tif"
    write_geotiff(coarse, dn.astype(np.int16), info.geotransform, info.crs_wkt, info.descriptions)
    x0, _, _, y0, _, _ = info.geotransform
    cells = int(np.ceil(size * 30.0 / STATE_PIXEL))
    state = np.full((1, cells, cells), 72, dtype=np.int16)  # clear land, low aerosol (state_1km is uint16)
    state[0, :cells // 2, :cells // 2] |= 1
    mask = folder / "state_1km.tif"
    write_geotiff(mask, state, (x0, STATE_PIXEL, 0.0, y0, 0.0, -STATE_PIXEL), info.crs_wkt, ("state_1km",), None)
    return str(coarse), str(mask)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192, help="fine pixels a side (192; a multiple of 64)")
    parser.add_argument("--fine-clouds", action="store_true",
                        help="a cloud on both fine dates around the filled date instead (the farther-date fill)")
    args = parser.parse_args(argv)
    if args.fine_clouds:
        return bench_fine_clouds(args.size)

    import numpy as np
    from osgeo import gdal

    from model_core.series import fuse_series
    from model_core.simulate import simulate_series
    from model_core.training.series import write_manifest

    print(f"machine: {machine(load=True)}; CPU flags: {cpu_flags()}")
    half = args.size // 2
    cloud, clear = (slice(None), slice(0, half), slice(0, half)), (slice(None), slice(half, None))
    print("| series | estimate | MAE under the cloud | MAE elsewhere (lower half) | seconds |")
    print("|---|---|---|---|---|")
    under = {}  # estimate -> MAE under the cloud, per series
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for kind, seed in SERIES:
            folder = work / f"{kind}_{seed}"
            first = dt.date(2021, 6, 1)
            series = simulate_series(folder / "sim", kind=kind, size=args.size, seed=seed, sensor="realistic",
                                     dates=[(first + dt.timedelta(days=day)).isoformat() for day in DAYS],
                                     bands=("green", "red", "nir"))
            item = dict(zip(DAYS, series.items))
            target = item[TARGET_DAY]
            truth = gdal.Open(str(target.fine)).ReadAsArray() * 1e-4
            coarse, state = cloudy_date(target, folder, args.size)
            for number, (name, mask, coarse_only, days) in enumerate(RUNS):
                rows = [(it.date, it.fine, it.coarse, "", "") if day in FINE_DAYS else
                        (it.date, "", coarse, "", state if mask else "") if day == TARGET_DAY else
                        (it.date, "", it.coarse, "", "")
                        for day, it in item.items() if day in FINE_DAYS or day == TARGET_DAY or day in coarse_only]
                manifest = write_manifest(folder / f"{seed}_{number}.csv", rows,
                                          ("date", "fine", "coarse", "mask", "coarse_mask"))
                started = time.perf_counter()
                result = fuse_series(str(manifest), None, folder / f"out_{number}", device="cpu", coarse_days=days,
                                     coarse_mask_rule="modis-state" if mask else "nonzero")
                seconds = time.perf_counter() - started
                error = np.abs(gdal.Open(result.files[target.date.isoformat()]).ReadAsArray() * 1e-4 - truth)
                under.setdefault(name, []).append(error[cloud].mean())
                print(f"| {kind} {seed} | {name} | {error[cloud].mean():.4f} | {error[clear].mean():.4f} | "
                      f"{seconds:.1f} |")
            earlier, later = (gdal.Open(str(item[day].fine)).ReadAsArray() * 1e-4 for day in FINE_DAYS[:2])
            for name, estimate in (("nearest fine date unchanged", earlier),
                                   ("fine dates interpolated in time, everywhere", (earlier + later) / 2)):
                error = np.abs(estimate - truth)
                print(f"| {kind} {seed} | {name} | {error[cloud].mean():.4f} | {error[clear].mean():.4f} | |")
    print("\nMean MAE under the cloud: " + "; ".join(f"{name} {np.mean(values):.5f}" for name, values in under.items()))
    interpolated = np.array(under[RUNS[1][0]])
    for name, *_ in RUNS[2:]:
        stand_in = np.array(under[name])
        print(f"{name}: better than interpolation in {(stand_in < interpolated).sum()} of {len(stand_in)} series "
              f"(median change {100 * np.median(stand_in / interpolated - 1):+.0f} %).")


def bench_fine_clouds(size):
    """The farther-date fill: a cloud over the top-left quarter of both fine dates around day 24."""
    import numpy as np
    from osgeo import gdal

    from model_core.raster import RasterInfo, RasterReader
    from model_core.series import fuse_series
    from model_core.simulate import simulate_series, write_geotiff
    from model_core.training.series import write_manifest

    print(f"machine: {machine(load=True)}; CPU flags: {cpu_flags()}")
    half = size // 2
    cloud, clear = (slice(None), slice(0, half), slice(0, half)), (slice(None), slice(half, None))
    print("| series | the job under the cloud (day 96 unchanged) | day 96's temporal difference | day 0 unchanged "
          "(were it clear) | the job elsewhere |")
    print("|---|---|---|---|---|")
    under = []
    with tempfile.TemporaryDirectory() as work:
        for kind, seed in SERIES:
            folder = Path(work) / f"{kind}_{seed}"
            first = dt.date(2021, 6, 1)
            series = simulate_series(folder / "sim", kind=kind, size=size, seed=seed, sensor="realistic",
                                     dates=[(first + dt.timedelta(days=day)).isoformat() for day in DAYS],
                                     bands=("green", "red", "nir"))
            item = dict(zip(DAYS, series.items))
            info = RasterInfo.read(item[0].fine)
            mask = np.zeros((1, size, size), dtype=np.int16)
            mask[(0, *cloud[1:])] = 1
            write_geotiff(folder / "cloud.tif", mask, info.geotransform, info.crs_wkt, ("cloud",), None)
            rows = [(it.date, it.fine if day in FINE_DAYS else "", it.coarse,
                     str(folder / "cloud.tif") if day in FINE_DAYS[:2] else "")
                    for day, it in item.items() if day in FINE_DAYS or day == TARGET_DAY]
            manifest = write_manifest(folder / "m.csv", rows, ("date", "fine", "coarse", "mask"))
            result = fuse_series(str(manifest), None, folder / "out", device="cpu")
            truth = gdal.Open(str(item[TARGET_DAY].fine)).ReadAsArray() * 1e-4
            fused = gdal.Open(result.files[item[TARGET_DAY].date.isoformat()]).ReadAsArray() * 1e-4
            near = gdal.Open(str(item[0].fine)).ReadAsArray() * 1e-4
            window = (0, 0, size, size)
            with RasterReader(item[96].fine) as fine, RasterReader(item[TARGET_DAY].coarse, grid=info) as now, \
                    RasterReader(item[96].coarse, grid=info) as then:
                difference = np.maximum(fine.read(window)[0] + now.read(window)[0] - then.read(window)[0], 0) * 1e-4
            errors = [np.abs(estimate - truth)[region].mean()
                      for estimate, region in ((fused, cloud), (difference, cloud), (near, cloud), (fused, clear))]
            under.append(errors[:3])
            print(f"| {kind} {seed} | " + " | ".join(f"{e:.4f}" for e in errors) + " |")
    job, difference, near = np.array(under).T
    print(f"\nMean under the cloud: the job (day 96 unchanged) {job.mean():.5f}, day 96's temporal difference "
          f"{difference.mean():.5f}, day 0 unchanged {near.mean():.5f}; unchanged beats the temporal difference in "
          f"{(job < difference).sum()} of {len(job)} series.")


if __name__ == "__main__":
    main()
