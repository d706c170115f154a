"""A cloud on the coarse image of a date to fill: what the series job gives with and without the coarse cloud mask.

Per series: the *realistic* sensor difference, green/red/NIR, 192 x 192 fine pixels, dates 24 days apart and
one more the day after the middle one; the first and last are the user's fine dates, the middle one is filled
by the series job with the plugin's model. Its coarse image gets a bright cloud (reflectance 0.5) over its
top-left quarter, flagged in a MODIS-like ``state_1km`` band on its own 960 m grid (bits 0-1 = 1, cloudy). MAE
(reflectance) against its true fine image, under the cloud (the quarter) and elsewhere (the lower half), for:

- ``no coarse mask``: the cloud's reflectance goes through the network as if it were the ground;
- ``masked, interpolated``: ``coarse_mask`` + ``coarse_mask_rule=modis-state``, no other coarse image near
  (``coarse_days=0``): under the cloud the fine dates are interpolated in time (``interpolate_gaps``);
- ``masked, the next day stands in``: the same with the next day's clear coarse image in the series and
  ``coarse_days=3``;
- ``nearest fine date unchanged`` and the ``fine dates interpolated in time, everywhere`` (no coarse image at
  all), for scale.

    .venv/bin/python scripts/bench_coarse_clouds.py [--size 192]
"""

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from benchutil import machine  # noqa: E402

SERIES = [("fields", 21), ("fields", 23), ("urban", 22), ("urban", 24)]  # (kind, seed): seeds used nowhere else
COARSE_PIXEL, STATE_PIXEL = 480.0, 960.0


def cpu_flags():
    """The CPU's SIMD flags that matter for torch (AVX2, AVX-512, AMX), as one line."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(sorted(flag for flag in flags if flag.startswith(("avx", "amx")))) or "none"


def cloudy_date(series, folder, size):
    """Date 2's coarse image with a bright cloud over the top-left quarter, and its state band: their paths."""
    import numpy as np

    from model_core.raster import RasterInfo, RasterReader
    from model_core.simulate import write_geotiff

    item = series.items[1]
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
    args = parser.parse_args(argv)

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
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for kind, seed in SERIES:
            folder = work / f"{kind}_{seed}"
            first = dt.date(2021, 6, 1)
            dates = [first, first + dt.timedelta(days=24), first + dt.timedelta(days=25), first + dt.timedelta(days=48)]
            series = simulate_series(folder / "sim", kind=kind, dates=[d.isoformat() for d in dates], size=args.size,
                                     seed=seed, sensor="realistic", bands=("green", "red", "nir"))
            items = series.items
            truth = gdal.Open(str(items[1].fine)).ReadAsArray() * 1e-4
            coarse, state = cloudy_date(series, folder, args.size)
            runs = (("no coarse mask", "", "nonzero", 0), ("masked, interpolated in time", state, "modis-state", 0),
                    ("masked, the next day's coarse image stands in", state, "modis-state", 3))
            for number, (name, mask, rule, days) in enumerate(runs):
                rows = [(items[0].date, items[0].fine, items[0].coarse, "", ""), (items[1].date, "", coarse, "", mask),
                        (items[2].date, "", items[2].coarse, "", ""), (items[3].date, items[3].fine, items[3].coarse, "", "")]
                manifest = write_manifest(folder / f"{seed}_{number}.csv", rows,
                                          ("date", "fine", "coarse", "mask", "coarse_mask"))
                started = time.perf_counter()
                result = fuse_series(str(manifest), None, folder / f"out_{number}", coarse_mask_rule=rule,
                                     coarse_days=days, device="cpu")
                seconds = time.perf_counter() - started
                error = np.abs(gdal.Open(result.files[items[1].date.isoformat()]).ReadAsArray() * 1e-4 - truth)
                print(f"| {kind} {seed} | {name} | {error[cloud].mean():.4f} | {error[clear].mean():.4f} | "
                      f"{seconds:.1f} |")
            earlier, later = (gdal.Open(str(items[i].fine)).ReadAsArray() * 1e-4 for i in (0, 3))
            for name, estimate in (("nearest fine date unchanged", earlier),
                                   ("fine dates interpolated in time, everywhere", (earlier + later) / 2)):
                error = np.abs(estimate - truth)
                print(f"| {kind} {seed} | {name} | {error[cloud].mean():.4f} | {error[clear].mean():.4f} | |")


if __name__ == "__main__":
    main()
