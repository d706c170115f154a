"""Speed and memory of ``model_core.fusion.fuse`` with the default (full-width) network.

1. Speed: fuses a 1024 x 1024, 6-band int16 fine raster (UTM, 30 m) with a 480 m
   coarse raster in the MODIS sinusoidal projection (warped on the fly), tile 256,
   with the defaults (overlap 32, the similar-pixel filter), with overlap 0 and
   without the filter, alternating ``--repeats`` times, and prints megapixels per
   second (end to end: checks, model loading, reading, network, filter, writing) of
   the fastest run of each and the ratios (the cost of the overlap and of the
   filter, from the same run).
2. Memory: fuses an 8000 x 8000, 6-band raster in a fresh process and prints its
   peak resident memory. On a 2-core CPU the whole raster takes hours, so by
   default the run stops after ``--strips`` tile rows (each a full 8000-px-wide
   strip of 36 tiles): memory is constant in the raster's size (one strip buffer,
   one batch, the GDAL cache cap), so the peak is reached in the first strip. The
   resident memory at the end of every strip is printed to show it does not grow.
   ``--strips 0`` runs the whole raster.

    .venv/bin/python scripts/bench_fusion.py [--size 1024] [--big 8000] [--strips 2] [--repeats 2]
        [--device cpu] [--threads N] [--skip-speed] [--skip-memory]

The input rasters are written to a temporary folder (about 500 MB for 8000 x 8000)
and removed at the end. The random-weight network runs at the speed of a trained one.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from benchutil import machine, peak_rss_mib, rss_mib  # noqa: E402

SINUSOIDAL = (
    'PROJCS["unnamed",GEOGCS["Unknown datum based upon the custom spheroid",DATUM["Not specified (based on custom '
    'spheroid)",SPHEROID["Custom spheroid",6371007.181,0]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Sinusoidal"],PARAMETER["longitude_of_center",0],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1]]'
)
ORIGIN = (500000.0, 4000000.0)  # UTM 33N


def write_fine(path, size, bands=6, strip=512):
    """A smooth int16 reflectance field, written strip by strip (never whole in memory)."""
    import numpy as np
    from osgeo import gdal, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), size, size, bands, gdal.GDT_Int16,
        ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER"],
    )
    dataset.SetGeoTransform((ORIGIN[0], 30.0, 0.0, ORIGIN[1], 0.0, -30.0))
    dataset.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)[None, :]
    for row in range(0, size, strip):
        h = min(strip, size - row)
        y = np.arange(row, row + h, dtype=np.float32)[:, None]
        for band in range(bands):
            wave = np.sin(x / (37.0 + band)) * np.cos(y / (53.0 + band))
            values = 1500 + 200 * band + 600 * wave + 100 * rng.standard_normal((h, size)).astype(np.float32)
            dataset.GetRasterBand(band + 1).WriteArray(values.astype(np.int16), 0, row)
    for band in range(bands):
        dataset.GetRasterBand(band + 1).SetNoDataValue(-9999)
    dataset = None
    return str(path)


def write_coarse(path, fine_size, bands=6, pixel=480.0):
    """A 480 m coarse raster in the MODIS sinusoidal projection covering the fine extent."""
    import numpy as np
    from osgeo import gdal, osr

    utm, sinu = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32633)
    sinu.ImportFromWkt(SINUSOIDAL)
    for srs in (utm, sinu):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    extent = fine_size * 30.0
    xmin, ymin, xmax, ymax = osr.CoordinateTransformation(utm, sinu).TransformBounds(
        ORIGIN[0] - 2 * pixel, ORIGIN[1] - extent - 2 * pixel, ORIGIN[0] + extent + 2 * pixel, ORIGIN[1] + 2 * pixel, 21
    )
    width, height = int((xmax - xmin) / pixel) + 1, int((ymax - ymin) / pixel) + 1
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    data = np.stack([1800 + 150 * b + 400 * np.sin(x / 5.0 + b) * np.cos(y / 7.0) for b in range(bands)])
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, bands, gdal.GDT_Int16)
    dataset.SetGeoTransform((xmin, pixel, 0.0, ymax, 0.0, -pixel))
    dataset.SetProjection(SINUSOIDAL)
    for band in range(bands):
        dataset.GetRasterBand(band + 1).WriteArray(data[band].astype(np.int16))
        dataset.GetRasterBand(band + 1).SetNoDataValue(-9999)
    dataset = None
    return str(path)


def write_model(path, seed=0):
    import torch

    from model_core.model_file import save_model
    from model_core.network import CTSTFM, DEFAULT_BANDS, CTSTFMConfig

    torch.manual_seed(seed)
    config = CTSTFMConfig()
    save_model(path, CTSTFM(config), config=config, band_names=list(DEFAULT_BANDS), scale=1e-4,
               provenance={"note": "benchmark, random weights"})
    return str(path)


def bench_speed(folder, size, model, repeats=2, device="cpu"):
    from model_core.fusion import fuse
    from model_core.options import SIMILAR_WINDOW

    fine = write_fine(folder / f"fine_{size}.tif", size)
    coarse = write_coarse(folder / f"coarse_{size}.tif", size)
    # A first, short run warms oneDNN up so no timed run pays for it. The settings then alternate `repeats`
    # times and the fastest run of each counts, which keeps the ratios fair when other processes load the CPU.
    fuse(fine, coarse, model, folder / "warm.tif", tile=256, overlap=32, device=device, max_strips=1)
    settings = {"default": (32, SIMILAR_WINDOW), "overlap 0": (0, SIMILAR_WINDOW), "no filter": (32, 0)}
    best = {}
    for _ in range(repeats):
        for name, (overlap, window) in settings.items():
            result = fuse(fine, coarse, model, folder / "out.tif", tile=256, overlap=overlap, device=device,
                          similar_window=window)
            print(
                f"  {size} x {size} x 6, tile 256, overlap {overlap:2d}, similar-pixel window {window:2d}, "
                f"{result.device}, batch {result.batch_size}: {result.tiles:3d} tiles, "
                f"{result.seconds:7.1f} s, {result.megapixels_per_second:.4f} Mpx/s "
                f"({result.seconds / result.tiles:.2f} s/tile; reading {result.read_seconds:.1f} s, "
                f"network and filter {result.process_seconds:.1f} s, blending+writing {result.write_seconds:.1f} s)",
                flush=True,
            )
            if name not in best or result.seconds < best[name].seconds:
                best[name] = result
    overlap_ratio = best["default"].seconds / best["overlap 0"].seconds
    filter_ratio = best["default"].seconds / best["no filter"].seconds
    print(
        f"  best of {repeats}: default (overlap 32, similar-pixel window {SIMILAR_WINDOW}) "
        f"{best['default'].megapixels_per_second:.4f} Mpx/s; overlap 32 costs {overlap_ratio:.2f} x the time of "
        f"overlap 0 (tiles {best['default'].tiles} vs {best['overlap 0'].tiles}: "
        f"{best['default'].tiles / best['overlap 0'].tiles:.2f} x; for a large raster the tile ratio tends to "
        f"(256 / 224)^2 = 1.31); the similar-pixel filter costs {filter_ratio:.2f} x the time without it"
    )
    return {"size": size, "default": best["default"].as_dict(), "overlap0": best["overlap 0"].as_dict(),
            "no_filter": best["no filter"].as_dict(), "ratio": overlap_ratio, "filter_ratio": filter_ratio}


def _memory_child(fine, coarse, model, out, strips, device="cpu", threads=0):
    """Runs in a fresh process: fuse and report peak RSS and RSS at each strip's end."""
    from model_core.fusion import fuse
    from model_core.progress import Progress

    import torch  # (counted in the baseline)

    if threads:
        torch.set_num_threads(threads)

    baseline = rss_mib()
    samples = []

    class Sampler(Progress):
        def update(self, fraction, message=None):
            samples.append((fraction, rss_mib()))

    started = time.perf_counter()
    result = fuse(fine, coarse, model, out, tile=256, overlap=32, device=device, progress=Sampler(),
                  max_strips=strips or None)
    tiles_per_strip = None
    from model_core.raster import RasterInfo
    from model_core.tiling import plan_tiles

    info = RasterInfo.read(fine)
    grid = plan_tiles(info.width, info.height, 256, 32)
    tiles_per_strip = len(grid.cols)
    # Resident memory after the last tile of each strip (sampled at every tile).
    per_strip = []
    for k in range(1, (result.tiles // tiles_per_strip) + 1):
        target = 0.99 * k * tiles_per_strip / grid.n_tiles
        per_strip.append([rss for fraction, rss in samples if fraction <= target + 1e-9][-1])
    print(json.dumps({
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
        "rss_at_strip_end_mib": per_strip,
        "tiles": result.tiles,
        "tiles_per_strip": tiles_per_strip,
        "seconds": time.perf_counter() - started,
        "width": info.width,
        "height": info.height,
    }))


def bench_memory(folder, size, model, strips, device="cpu", threads=0):
    started = time.perf_counter()
    fine = write_fine(folder / f"fine_{size}.tif", size)
    coarse = write_coarse(folder / f"coarse_{size}.tif", size)
    print(f"  wrote the {size} x {size} x 6 input ({os.path.getsize(fine) / 2**20:.0f} MiB compressed) "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    code = (
        "import sys; sys.path.insert(0, %r); sys.path.insert(0, %r); import bench_fusion; "
        "bench_fusion._memory_child(%r, %r, %r, %r, %d, %r, %d)"
        % (str(ROOT), str(Path(__file__).parent), fine, coarse, model, str(folder / "big_out.tif"), strips, device,
           threads)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr)
        raise SystemExit("memory benchmark failed")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    scope = "the whole raster" if not strips else f"the first {strips} tile row(s) ({report['tiles']} tiles)"
    print(
        f"  {size} x {size} x 6, tile 256, overlap 32, {scope}: peak RSS {report['peak_rss_mib']:.0f} MiB "
        f"(after importing torch: {report['baseline_rss_mib']:.0f} MiB); RSS at the end of each strip: "
        + ", ".join(f"{v:.0f}" for v in report["rss_at_strip_end_mib"]) + f" MiB; {report['seconds']:.0f} s"
    )
    verdict = "under" if report["peak_rss_mib"] < 2048 else "OVER"
    print(f"  peak RSS is {verdict} the 2 GiB budget")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the speed benchmark raster (1024)")
    parser.add_argument("--big", type=int, default=8000, help="side of the memory benchmark raster (8000)")
    parser.add_argument("--strips", type=int, default=2, help="tile rows of the big raster to run (0: all)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each overlap; the fastest counts (2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv if argv is not None else [])
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench_fusion_") as tmp:
        folder = Path(tmp)
        model = write_model(folder / "model.pt")
        if not args.skip_speed:
            print("speed (default network, width 20, random weights; coarse warped from sinusoidal on the fly):")
            bench_speed(folder, args.size, model, args.repeats, args.device)
        if not args.skip_memory:
            print("memory:")
            bench_memory(folder, args.big, model, args.strips, args.device, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
