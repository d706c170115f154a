"""The README's recipe for real Landsat and MODIS downloads, run as written on stand-in files.

Stand-ins: a simulated green/red/NIR series written the way the products come. Landsat Collection 2 Level-2:
one uint16 file per band, DN = (reflectance + 0.2) / 0.0000275, fill 0, and a QA_PIXEL file (21824 clear land,
bit 3 cloud) over a bright cloud; the second Landsat date reaches further west and south (as scenes of one
path/row do), so only the README's ``-te`` puts both on one grid. MOD09GA: a container of subdatasets on
MODIS's sinusoidal grid, with a state_1km band on a grid of twice the pixel size (bits 0-1: 1 cloudy) over a
bright cloud on the MODIS-only date; GDAL cannot write HDF-EOS, so netCDFs hold them and the README's subdataset
names are swapped for the netCDFs' (and its -te extent for the stand-ins'). Every other command (gdalbuildvrt,
gdal_calc.py, the manifest, qgis_process) is the README's text.
"""

import datetime as dt
import re
import subprocess

import numpy as np
from osgeo import gdal

from conftest import QGIS_PROCESS, ROOT
from helpers import write_raster

DATES = ("2001-10-17", "2001-11-02", "2001-11-18")  # the README's: two Landsat dates and a MODIS date between
CLOUD = (slice(8, 28), slice(30, 56))  # rows, columns of the cloud on the first Landsat date
MODIS_CLOUD = (slice(0, 1), slice(2, 3))  # rows, columns of the state_1km pixel cloudy on the MODIS-only date


def readme_blocks():
    """The fenced blocks (language, text) of the README's real-data recipe, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Real Landsat and MODIS"):]
    section = section[: section.index("**Speed on a CPU**")]
    return [(language, body.replace("\\\n", " ")) for language, body in re.findall(r"```(\w+)\n(.*?)```", section,
                                                                                    re.S)]


def landsat_name(day, suffix):
    return f"LT05_L2SP_093084_{day.replace('-', '')}_20200905_02_T1_{suffix}"


def modis_name(day):
    return f"MOD09GA.A{dt.date.fromisoformat(day).strftime('%Y%j')}.h29v12.061"


def write_downloads(series, folder):
    """The series as Landsat C2 L2 band files with QA_PIXEL (the Landsat dates) and netCDF MODIS containers."""
    for index, item in enumerate(series.items):
        day = item.date.isoformat()
        modis = gdal.Open(str(item.coarse))
        x0, dx, _, y0, _, dy = modis.GetGeoTransform()
        state = np.full(((modis.RasterYSize + 1) // 2, (modis.RasterXSize + 1) // 2), 72, dtype=np.uint16)  # clear
        reflectance = modis.ReadAsArray()
        if index == 1:
            state[MODIS_CLOUD] |= 1
            reflectance[:, 2 * MODIS_CLOUD[0].start:2 * MODIS_CLOUD[0].stop,
                        2 * MODIS_CLOUD[1].start:2 * MODIS_CLOUD[1].stop] = 5000  # a bright cloud
        bright = write_raster(folder / "modis_stand_in.tif", reflectance, modis.GetGeoTransform(),
                              crs=modis.GetProjection(), nodata=modis.GetRasterBand(1).GetNoDataValue())
        gdal.Translate(str(folder / f"{modis_name(day)}.nc"), bright, format="netCDF")
        state_tif = write_raster(folder / "state_stand_in.tif", state, (x0, 2 * dx, 0, y0, 0, 2 * dy),
                                 crs=modis.GetProjection())
        gdal.Translate(str(folder / f"{modis_name(day)}_state.nc"), state_tif, format="netCDF")
        if index == 1:
            continue
        source = gdal.Open(str(item.fine))
        reflectance = source.ReadAsArray().astype(np.float64) * 1e-4
        qa = np.full(reflectance.shape[1:], 21824, dtype=np.uint16)
        if index == 0:
            reflectance[(slice(None), *CLOUD)] = 0.6  # a bright cloud, flagged in QA_PIXEL bit 3
            qa[CLOUD] |= 8
        transform = list(source.GetGeoTransform())
        dn = np.round((reflectance + 0.2) / 0.0000275).astype(np.uint16)
        if index == 2:  # another scene extent: 2 more columns west, 3 more rows south, fill 0 there
            dn = np.pad(dn, ((0, 0), (0, 3), (2, 0)))
            transform[0] -= 2 * transform[1]
        for band, name in zip(dn, ("SR_B2", "SR_B3", "SR_B4")):
            write_raster(folder / landsat_name(day, f"{name}.TIF"), band, transform, crs=source.GetProjection(),
                         nodata=0)
        write_raster(folder / landsat_name(day, "QA_PIXEL.TIF"), qa, source.GetGeoTransform(),
                     crs=source.GetProjection(), nodata=1)


def for_date(command, day, extent):
    """A README command (written for its first date) for ``day``, cut to the stand-ins' ``extent`` (``-te``
    values); MODIS subdatasets as the netCDF stand-in's."""
    command = re.sub(r"-te( -?\d+(\.\d+)?){4}", "-te " + " ".join(f"{v:.0f}" for v in extent), command)
    first = DATES[0]
    command = command.replace(first, day).replace(first.replace("-", ""), day.replace("-", ""))
    command = command.replace(modis_name(first), modis_name(day))
    for band, variable in (("b04", "Band1"), ("b01", "Band2"), ("b02", "Band3")):  # green, red, NIR
        command = re.sub(rf"'HDF4_EOS:EOS_GRID:\"([^\"]+)\.hdf\":MODIS_Grid_500m_2D:sur_refl_{band}_1'",
                         lambda match, variable=variable: f"'NETCDF:\"{match.group(1)}.nc\":{variable}'", command)
    return re.sub(r"'HDF4_EOS:EOS_GRID:\"([^\"]+)\.hdf\":MODIS_Grid_1km_2D:state_1km_1'",
                  lambda match: f"'{match.group(1)}_state.nc'", command)


def test_the_readme_recipe_turns_downloads_into_a_filled_series(installed_plugin_env, make_series, tmp_path):
    series = make_series(kind="fields", dates=list(DATES), size=64, seed=11, bands=("green", "red", "nir"),
                         sensor="realistic", coarse_grid="sinusoidal")
    write_downloads(series, tmp_path)
    x0, dx, _, y0, _, dy = gdal.Open(str(series.items[0].fine)).GetGeoTransform()
    extent = (x0, y0 + 64 * dy, x0 + 64 * dx, y0)  # the simulated fine grid: xmin ymin xmax ymax
    (prepare_language, prepare), (csv_language, manifest), (run_language, run) = readme_blocks()
    assert (prepare_language, csv_language, run_language) == ("bash", "csv", "bash")
    commands = [line.strip() for line in prepare.splitlines() if line.strip()]
    assert [c.split()[0] for c in commands] == ["gdalbuildvrt", "gdal_calc.py", "gdalbuildvrt", "gdalbuildvrt"]
    assert re.search(r"-te( \d+){4} ", commands[0])
    for day in DATES:
        for command in commands if day != DATES[1] else commands[2:]:  # the middle date has no Landsat image
            done = subprocess.run(for_date(command, day, extent), shell=True, cwd=tmp_path, capture_output=True,
                                  text=True)
            assert done.returncode == 0, (command, done.stderr)
    (tmp_path / "series.csv").write_text(manifest)

    def fuse_series(command):
        return subprocess.run(command.replace("qgis_process.bin", QGIS_PROCESS, 1), shell=True, cwd=tmp_path,
                              env=installed_plugin_env, capture_output=True, text=True, timeout=600)

    command = run.strip()
    done = fuse_series(command)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    fused = gdal.Open(str(tmp_path / "fused" / "fused_2001-11-02.tif")).ReadAsArray() * 1e-4
    truth = gdal.Open(str(series.items[1].fine)).ReadAsArray() * 1e-4
    assert (fused > -0.5).all()  # gap-free: the cloud comes from the other Landsat date
    error = np.abs(fused - truth)
    assert error.mean() < 0.03 and error[(slice(None), *CLOUD)].mean() < 0.05, (error.mean(), error[:, CLOUD[0],
                                                                                                    CLOUD[1]].mean())
    # Under MODIS's cloud on that date the Landsat dates are interpolated in time, and the index says how much.
    on_fine = gdal.Warp("", str(tmp_path / f"{modis_name(DATES[1])}_state.nc"), format="MEM",
                        outputBounds=extent, width=64, height=64, dstSRS=gdal.Open(str(series.items[0].fine))
                        .GetProjection(), resampleAlg="near").ReadAsArray()
    modis_cloud = (on_fine & 3) == 1
    assert 0.02 < modis_cloud.mean() < 0.5 and error[:, modis_cloud].mean() < 0.05, error[:, modis_cloud].mean()
    index = (tmp_path / "fused" / "index.csv").read_text().splitlines()
    interpolated = float(dict(zip(index[0].split(","), index[1].split(",")))["interpolated_fraction"])
    # More than the state pixel's share: the mask is widened by the half MODIS pixel (8 fine pixels) the bilinear
    # warp carries the cloud's reflectance.
    assert modis_cloud.mean() < interpolated < 0.5, (interpolated, modis_cloud.mean())
    flags = gdal.Open(str(tmp_path / "fused" / "quality_2001-11-02.tif")).ReadAsArray()[0]
    assert (flags[modis_cloud] & 4).all() and abs(((flags & 4) > 0).mean() - interpolated) < 1e-3
    # Without the mask rule the quality band would mask everything: refused, naming the rule.
    refused = fuse_series(command.replace(" MASK_RULE=landsat-c2-qa", "").replace("fused/", "refused/"))
    assert refused.returncode != 0 and " MASK_RULE" in refused.stdout + refused.stderr
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
    refused = fuse_series(command.replace(" COARSE_MASK_RULE=modis-state", "").replace("fused/", "refused/"))
    assert refused.returncode != 0 and "state_1km" in refused.stdout + refused.stderr
    assert "COARSE_MASK_RULE" in refused.stdout + refused.stderr
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())

