"""A cloud on the coarse image of a date to fill: what the series job gives with and without the coarse cloud mask.

Per series: the *realistic* sensor difference, green/red/NIR, 192 x 192 fine pixels, three dates 24 days apart;
dates 1 and 3 are the user's fine dates, date 2 is filled by the series job with the plugin's model. Date 2's
coarse image gets a bright cloud (reflectance 0.5) over its top-left quarter, flagged in a MODIS-like
``state_1km`` band on its own 960 m grid (bits 0-1 = 1, cloudy). MAE (reflectance) against the true fine image
of date 2, under the cloud and elsewhere, for:

- ``unmasked``: no coarse mask; the cloud's reflectance goes through the network as if it were the ground;
- ``masked``: ``coarse_mask`` + ``coarse_mask_rule=modis-state``; under the cloud the fine dates are
  interpolated in time (``interpolate_gaps``, the default);
- ``nearest fine date``: the earlier fine date unchanged, for scale.

    .venv/bin/python scripts/bench_coarse_clouds.py [--size 192]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from benchutil import machine  # noqa: E402

SERIES = [("fields", 21), ("urban", 22)]  # (kind, seed): seeds used nowhere else
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
            series = simulate_series(folder / "sim", kind=kind, count=3, size=args.size, seed=seed,
                                     interval_days=24, sensor="realistic", bands=("green", "red", "nir"))
            items = series.items
            truth = gdal.Open(str(items[1].fine)).ReadAsArray() * 1e-4
            coarse, state = cloudy_date(series, folder, args.size)
            for name, mask, rule in (("unmasked", "", "nonzero"), ("masked, interpolated in time", state,
                                                                   "modis-state")):
                rows = [(items[0].date, items[0].fine, items[0].coarse, "", ""), (items[1].date, "", coarse, "", mask),
                        (items[2].date, items[2].fine, items[2].coarse, "", "")]
                manifest = write_manifest(folder / f"{seed}_{len(mask)}.csv", rows,
                                          ("date", "fine", "coarse", "mask", "coarse_mask"))
                started = time.perf_counter()
                result = fuse_series(str(manifest), None, folder / f"out_{len(mask)}", coarse_mask_rule=rule,
                                     device="cpu")
                seconds = time.perf_counter() - started
                error = np.abs(gdal.Open(result.files[items[1].date.isoformat()]).ReadAsArray() * 1e-4 - truth)
                print(f"| {kind} {seed} | {name} | {error[cloud].mean():.4f} | {error[clear].mean():.4f} | "
                      f"{seconds:.1f} |")
            error = np.abs(gdal.Open(str(items[0].fine)).ReadAsArray() * 1e-4 - truth)
            print(f"| {kind} {seed} | nearest fine date unchanged | {error[cloud].mean():.4f} | "
                  f"{error[clear].mean():.4f} | |")


if __name__ == "__main__":
    main()
