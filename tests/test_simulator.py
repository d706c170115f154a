"""The Landsat/MODIS simulator: georeferenced, deterministic, physically consistent series.

The coarse/fine consistency check re-implements the sensor model independently (sampled Gaussian
kernel as a Toeplitz matrix, box means from cumulative sums) instead of calling the simulator's
own ``coarse_from_fine``.
"""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import ROOT
from model_core import simulate as sim

gdal.UseExceptions()


def _read(path):
    ds = gdal.Open(str(path))
    try:
        return ds.ReadAsArray().astype(np.int16), ds.GetGeoTransform(), ds.GetProjection(), [
            (ds.GetRasterBand(i + 1).GetNoDataValue(), ds.GetRasterBand(i + 1).GetDescription())
            for i in range(ds.RasterCount)
        ]
    finally:
        ds = None


def _extent(gt, shape):
    h, w = shape
    return gt[0], gt[3] + h * gt[5], gt[0] + w * gt[1], gt[3]  # xmin, ymin, xmax, ymax


def _shifts(mask):
    """The 3 x 3 neighbourhood of every pixel, as 9 shifted copies (edges padded with False)."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _erode(mask):
    return np.logical_and.reduce(_shifts(mask))


def _dilate(mask):
    return np.logical_or.reduce(_shifts(mask))


def test_files_are_georeferenced_and_cover_the_same_area(sim_series):
    params = sim_series.parameters
    assert len(sim_series.items) == 4
    assert params["width"] == params["height"] == 128
    for date, fine_path, coarse_path in sim_series.items:
        assert date.isoformat() in fine_path.name and fine_path.name.startswith("fine_")
        assert date.isoformat() in coarse_path.name and coarse_path.name.startswith("coarse_")
        fine, fgt, fproj, fbands = _read(fine_path)
        coarse, cgt, cproj, cbands = _read(coarse_path)
        assert fine.shape == (6, 128, 128) and coarse.shape == (6, 8, 8)
        for proj in (fproj, cproj):
            srs = osr.SpatialReference(wkt=proj)
            srs.AutoIdentifyEPSG()
            assert srs.GetAuthorityCode(None) == "32755"
        assert fgt[1] == 30 and fgt[5] == -30 and cgt[1] == 480 and cgt[5] == -480
        assert fbands == [(-9999, name) for name in sim.BANDS]
        assert cbands == [(-9999, name) for name in sim.BANDS]
        f_ext = _extent(fgt, fine.shape[1:])
        c_ext = _extent(cgt, coarse.shape[1:])
        for a, b in zip(f_ext, c_ext):
            assert abs(a - b) < 480
        # The coarse grid covers the fine image.
        assert c_ext[0] <= f_ext[0] and c_ext[1] <= f_ext[1] and c_ext[2] >= f_ext[2] and c_ext[3] >= f_ext[3]
        assert ((fine > 0) & (fine < 10000)).mean() > 0.99


def test_extent_with_a_size_that_is_not_a_multiple_of_the_coarse_pixel():
    scene = sim.make_scene(kind="urban", width=130, height=100, seed=4)
    assert scene.coarse_shape == (7, 9)  # ceil(100 / 16), ceil(130 / 16)
    fine = sim.fine_image(scene, "2021-05-01")
    coarse = sim.coarse_image(scene, "2021-05-01")
    assert fine.shape == (6, 100, 130) and fine.dtype == np.float32
    assert coarse.shape == (6, 7, 9) and np.isfinite(coarse).all()
    c_ext = _extent(scene.coarse_geotransform, scene.coarse_shape)
    f_ext = _extent(scene.fine_geotransform, (100, 130))
    assert c_ext[0] == f_ext[0] and c_ext[3] == f_ext[3]
    assert 0 <= c_ext[2] - f_ext[2] < 480 and 0 <= f_ext[1] - c_ext[1] < 480


def test_same_seed_same_bytes_other_seed_other_images(sim_series, tmp_path):
    again = sim.simulate_series(tmp_path / "again", kind="fields", count=4, size=128, seed=7)
    other = sim.simulate_series(tmp_path / "other", kind="fields", count=4, size=128, seed=8)
    for a, b, c in zip(sim_series.items, again.items, other.items):
        for path_a, path_b, path_c in zip(a[1:], b[1:], c[1:]):
            arr_a, arr_b, arr_c = _read(path_a)[0], _read(path_b)[0], _read(path_c)[0]
            assert arr_a.tobytes() == arr_b.tobytes()
            assert (arr_a != arr_c).mean() > 0.5
    assert again.parameters["sensor"] == sim_series.parameters["sensor"]
    assert other.parameters["sensor"]["gain"] != sim_series.parameters["sensor"]["gain"]


def _independent_coarse(fine, factor, sigma, shift, gain, offset, shape):
    """Gaussian blur (sampled kernel), box means over the shifted coarse footprints, gain and offset."""

    def blur_matrix(n):
        radius = int(math.ceil(4 * sigma))
        x = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (x / sigma) ** 2)
        kernel /= kernel.sum()
        m = np.zeros((n, n))
        for i in range(n):
            for k, weight in zip(x, kernel):
                if 0 <= i + k < n:
                    m[i, i + k] = weight
        return m

    def box_means(image, n_out, start, axis):
        # Cumulative integral of a piecewise-constant signal, read at the footprint edges.
        image = np.moveaxis(image, axis, -1)
        cum = np.concatenate([np.zeros(image.shape[:-1] + (1,)), np.cumsum(image, axis=-1)], axis=-1)
        pos = np.arange(cum.shape[-1])
        edges = start + factor * np.arange(n_out + 1)
        flat = cum.reshape(-1, cum.shape[-1])
        at = np.stack([np.interp(edges, pos, row) for row in flat]).reshape(image.shape[:-1] + (n_out + 1,))
        return np.moveaxis(np.diff(at, axis=-1) / factor, -1, axis)

    bands, h, w = fine.shape
    by, bx = blur_matrix(h), blur_matrix(w)
    blurred = np.stack([by @ fine[b] @ bx.T for b in range(bands)])
    rows = box_means(blurred, shape[0], shift[0] * factor, axis=1)
    out = box_means(rows, shape[1], shift[1] * factor, axis=2)
    return out * np.asarray(gain)[:, None, None] + np.asarray(offset)[:, None, None]


@pytest.mark.parametrize("which", ["fields", "urban"])
def test_coarse_is_the_fine_image_seen_by_the_coarse_sensor(which, sim_series, make_series):
    series = sim_series if which == "fields" else make_series(kind="urban", count=2, size=192, seed=3)
    sensor = series.parameters["sensor"]
    factor = sensor["factor"]
    sigma = sensor["psf_sigma_coarse_pixels"] * factor
    noise = sensor["noise_sigma"]
    residuals = []
    for (_, fine_path, coarse_path), per_date in zip(series.items, series.parameters["per_date"]):
        fine = _read(fine_path)[0] * sim.SCALE
        coarse = _read(coarse_path)[0] * sim.SCALE
        shift = per_date["misregistration_coarse_pixels"]
        model = _independent_coarse(fine, factor, sigma, shift, sensor["gain"], sensor["offset"], coarse.shape[1:])
        # Only coarse pixels whose PSF lies inside the fine image.
        reach = 4 * sigma + factor * 0.1 + 1
        inside = [
            i for i in range(coarse.shape[1]) if i * factor - reach >= 0 and (i + 1) * factor + reach <= fine.shape[1]
        ]
        sel = np.ix_(range(6), inside, inside)
        residuals.append((coarse[sel] - model[sel]).ravel())
    residuals = np.concatenate(residuals)
    assert residuals.size >= 96
    rms = float(np.sqrt(np.mean(residuals**2)))
    # What is left is the coarse sensor's noise (plus the fine noise, blurred away).
    assert 0.6 * noise < rms < 1.5 * noise, rms
    assert abs(float(residuals.mean())) < noise


def test_coarse_from_fine_api():
    rng = np.random.default_rng(0)
    flat = np.full((6, 64, 48), 0.2, dtype=np.float32)
    gain = np.linspace(0.95, 1.05, 6)
    offset = np.linspace(-0.01, 0.01, 6)
    out = sim.coarse_from_fine(flat, factor=16, psf_sigma=0.5, gain=gain, offset=offset, shift=(0.1, -0.1))
    assert out.shape == (6, 4, 3)
    np.testing.assert_allclose(out, (0.2 * gain + offset)[:, None, None] * np.ones((6, 4, 3)), atol=1e-5)
    noisy = sim.coarse_from_fine(flat, factor=16, noise_sigma=0.004, rng=rng)
    assert 0.002 < float(np.std(noisy - 0.2)) < 0.006
    # Without PSF and shift a coarse pixel is the plain block mean.
    image = rng.random((1, 32, 32)).astype(np.float32)
    box = sim.coarse_from_fine(image, factor=16, psf_sigma=0.0)
    np.testing.assert_allclose(box[0], image[0].reshape(2, 16, 2, 16).mean(axis=(1, 3)), atol=1e-5)


def _median_spectrum(fine, mask):
    return np.median(fine[:, mask], axis=1)


def test_class_spectra_are_plausible(sim_series, make_series):
    scene = sim_series.scene
    greenest = None
    for date, fine_path, _ in sim_series.items:
        fine = _read(fine_path)[0] * sim.SCALE
        cover = sim.vegetation_cover(scene, date)
        lc = sim.land_cover(scene, date)
        peak = _erode((lc == sim.CROP) & (cover >= 0.7))
        if peak.sum() > 50:
            greenest = (fine, peak)
        water = _erode((scene.classes == sim.WATER) & (lc == sim.WATER))
        assert water.sum() > 10
        spectrum = _median_spectrum(fine, water)
        assert spectrum[3] < 0.05 and spectrum.max() < 0.1, spectrum
        bare = _erode(lc == sim.BARE)
        soil = _median_spectrum(fine, bare)
        assert soil[0] < soil[2] < soil[4] and 0.04 < soil[0] and soil[4] < 0.4, soil  # rising, flat-ish
    assert greenest is not None, "no crop reaches its peak in the fixture's dates"
    fine, peak = greenest
    veg = _median_spectrum(fine, peak)
    assert 0.3 <= veg[3] <= 0.5 and 0.02 <= veg[2] <= 0.08 and veg[3] > 5 * veg[2], veg
    assert veg[1] > veg[0] and veg[1] > veg[2]  # the green peak

    urban = make_series(kind="urban", count=2, size=192, seed=3)
    lc = sim.land_cover(urban.scene, urban.items[0].date)
    built = _erode(lc == sim.BUILT)
    assert built.mean() > 0.1
    spectrum = _median_spectrum(_read(urban.items[0].fine)[0] * sim.SCALE, built)
    assert 0.08 < spectrum.min() and spectrum.max() < 0.3 and spectrum.max() / spectrum.min() < 1.8, spectrum


def test_changed_area_matches_the_parameters(sim_series, make_series):
    asked = sim_series.parameters["change_fraction"]
    assert asked == sim.KIND_DEFAULTS["fields"]["change_fraction"]
    assert abs(sim_series.total_changed_fraction - asked) < 0.02
    mix = sim_series.parameters["change_mix"]
    planned = sim_series.parameters["planned_change"]
    assert abs(sum(planned.values()) - asked) < 0.02
    for name, weight in mix.items():
        assert planned[name] > 0 if weight > 0 else planned[name] == 0
    # The reports are what the land-cover maps say.
    scene = sim_series.scene
    for report in sim_series.changes:
        changed = sim.land_cover(scene, report.date_a) != sim.land_cover(scene, report.date_b)
        assert report.changed_fraction == pytest.approx(changed.mean())
        assert sum(report.by_kind.values()) == pytest.approx(report.changed_fraction)
        if report.changed_fraction > 0.002:
            assert report.mean_abs_change > 0.03

    # Another amount: 30 % of a Daxing-like scene, airport included.
    urban = make_series(kind="urban", count=3, size=128, seed=5, change_fraction=0.3)
    assert abs(urban.total_changed_fraction - 0.3) < 0.03
    assert urban.scene.events.overlay is not None
    none = make_series(kind="fields", count=4, size=128, seed=7, change_fraction=0.0)
    assert none.total_changed_fraction == 0 and all(c.changed_fraction == 0 for c in none.changes)


def test_abrupt_changes_show_in_the_images_and_nowhere_else(sim_series, make_series):
    """Against the same seed without events, images differ exactly where an event is in effect."""
    baseline = make_series(kind="fields", count=4, size=128, seed=7, change_fraction=0.0)
    scene = sim_series.scene
    for k, (item, base) in enumerate(zip(sim_series.items, baseline.items)):
        with_events = _read(item.fine)[0] * sim.SCALE
        without = _read(base.fine)[0] * sim.SCALE
        differ = np.abs(with_events - without).max(axis=0) > 0.003
        active = sim.event_mask(scene, item.date)
        if k == 0:
            assert not active.any() and not differ.any()
            continue
        assert active.any()
        # Nothing changes outside events (+ 1 px of Landsat blur; the outer ring also sees pixels
        # beyond the image).
        assert not (differ & ~_dilate(active))[1:-1, 1:-1].any()
        core = _erode(active)
        assert differ[core].mean() > 0.98
        assert float(np.abs(with_events - without)[:, core].mean()) > 0.03
        # The coarse image sees it too.
        c_with = _read(item.coarse)[0] * sim.SCALE
        c_without = _read(base.coarse)[0] * sim.SCALE
        assert np.abs(c_with - c_without).max() > 0.01


def test_clouds_become_nodata(make_series):
    series = make_series(kind="fields", count=2, size=128, seed=11, clouds=0.25)
    for item, per_date in zip(series.items, series.parameters["per_date"]):
        fine = _read(item.fine)[0]
        coarse = _read(item.coarse)[0]
        nodata = fine == sim.NODATA
        assert (nodata == nodata[0]).all()  # whole pixels, all bands
        assert abs(nodata[0].mean() - 0.25) < 0.01
        assert per_date["cloud_fraction_fine"] == pytest.approx(nodata[0].mean())
        c_nodata = coarse == sim.NODATA
        assert (c_nodata == c_nodata[0]).all() and 0 < c_nodata[0].mean() < 0.6
        assert (fine[:, ~nodata[0]] > -500).all() and (coarse[:, ~c_nodata[0]] > -500).all()
    fine_only = make_series(kind="fields", count=2, size=128, seed=11, clouds=0.25, cloud_target="fine")
    assert not (_read(fine_only.items[0].coarse)[0] == sim.NODATA).any()
    assert (_read(fine_only.items[0].fine)[0] == sim.NODATA).any()


def test_command_line_writes_a_manifest(tmp_path):
    out = tmp_path / "series"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    dates = ["2021-04-01", "2021-05-03", "2021-06-04"]
    result = subprocess.run(
        [sys.executable, "-m", "model_core", "simulate", "--out", str(out), "--kind", "urban",
         "--dates", ",".join(dates), "--width", "70", "--height", "50", "--seed", "2", "--quiet",
         "--sensor", "realistic", "--coarse-error", "0.04", "--gain-jitter", "0.12"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    sensor = json.loads((out / "simulation.json").read_text())["sensor"]
    # the flags override the preset; what they leave alone keeps the preset's value
    assert sensor["coarse_error"] == 0.04 and sensor["misregistration_max_coarse_pixels"] == 0.5
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["date", "fine", "coarse"]
    assert [row[0] for row in rows[1:]] == dates
    for date, fine, coarse in rows[1:]:
        assert fine == f"fine_{date}.tif" and coarse == f"coarse_{date}.tif"
        assert _read(out / fine)[0].shape == (6, 50, 70)
        assert _read(out / coarse)[0].shape == (6, 4, 5)
    assert (out / "simulation.json").exists()
    # series.csv: the same dates, the middle one without its fine image, which the series job fills.
    with open(out / "series.csv", newline="") as handle:
        series_rows = list(csv.reader(handle))
    assert series_rows[1:] == [rows[1], [dates[1], "", f"coarse_{dates[1]}.tif"], rows[3]]
    filled = subprocess.run(
        [sys.executable, "-m", "model_core", "fuse-series", "--manifest", str(out / "series.csv"),
         "--out", str(tmp_path / "fused"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert filled.returncode == 0, filled.stderr
    assert _read(tmp_path / "fused" / f"fused_{dates[1]}.tif")[0].shape == (6, 50, 70)
    bad = subprocess.run(
        [sys.executable, "-m", "model_core", "simulate", "--out", str(tmp_path / "bad"), "--dates", "2021-13-01"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


# The real Landsat TM / MODIS pair (/work/shared/notes/real-pair-facts.md), bands green, red, NIR.
REAL_PAIR = {"bias17": (-0.001, -0.002, 0.009), "std17": (0.004, 0.005, 0.022), "slope": (0.70, 0.85, 0.76)}
PAIR_CASES = [("fields", 1, "2021-12-01"), ("fields", 2, "2022-02-01"), ("urban", 3, "2021-05-01"),
              ("urban", 4, "2021-08-01")]


def _mean_pair_statistics(sensor):
    import datetime as dt

    stats = []
    for kind, seed, start in PAIR_CASES:
        first = dt.date.fromisoformat(start)
        second = first + dt.timedelta(days=28)
        scene = sim.make_scene(kind=kind, size=256, seed=seed, dates=[first, second], sensor=sensor)
        stats.append(sim.scene_pair_statistics(scene, first, second, bands=("green", "red", "nir")))
    return {key: np.mean([s[key] for s in stats], axis=0) for key in stats[0]}, stats


def test_realistic_sensor_reproduces_the_real_pair_statistics():
    realistic, per_scene = _mean_pair_statistics("realistic")
    ideal, _ = _mean_pair_statistics("ideal")
    # Regression dilution as on the real pair: slopes of box33(fine) on coarse well below 1, per band
    # within 0.1 of the real ones; the ideal sensor stays close to 1 in NIR.
    assert np.all(np.abs(realistic["slope"] - np.array(REAL_PAIR["slope"])) < 0.1), realistic["slope"]
    assert ideal["slope"][2] > 0.9 > realistic["slope"][2] + 0.05
    # Same-date disagreement at least as large as the real pair's (the simulated landscapes have more
    # sub-coarse-pixel contrast than the real site, so it is up to about 2.5 times larger).
    assert np.all(realistic["std17"] >= np.array(REAL_PAIR["std17"])), realistic["std17"]
    assert np.all(realistic["std17"] <= 3.0 * np.array(REAL_PAIR["std17"]) + 0.01), realistic["std17"]
    assert np.all(realistic["std17"] > ideal["std17"] * 1.3)
    # Per-scene biases as large as the real ones (a few 0.001 up to ~0.01-0.02), never absurd.
    biases = np.abs([s["bias17"] for s in per_scene])
    assert biases.max() >= 0.009 and biases.max() < 0.03, biases


def test_bands_coarse_grid_and_sensor_choices(make_series):
    series = make_series(count=2, size=64, seed=5, sensor="realistic", bands="green,red,nir", coarse_grid="fine")
    fine = gdal.Open(str(series.items[0].fine))
    coarse = gdal.Open(str(series.items[0].coarse))
    assert fine.RasterCount == coarse.RasterCount == 3
    assert [fine.GetRasterBand(i + 1).GetDescription() for i in range(3)] == ["green", "red", "nir"]
    assert coarse.GetGeoTransform() == fine.GetGeoTransform()
    assert (coarse.RasterXSize, coarse.RasterYSize) == (64, 64)
    blocks = coarse.GetRasterBand(3).ReadAsArray()
    assert np.all(blocks[:16, :16] == blocks[0, 0])  # nearest neighbour: one value per coarse pixel
    assert series.parameters["sensor"]["preset"] == "realistic"
    assert series.parameters["bands"] == ["green", "red", "nir"]
    with pytest.raises(sim.CtstfmError, match="green,red,nir"):
        sim.simulate_series(series.out_dir / "bad", size=32, count=2, bands="green,rededge")


def _utm_to_world(x, y, origin, margin, resolution=30.0):
    """World fine-pixel coordinates (row, col) of UTM points, pixel centres at i + 0.5."""
    return (origin[1] - y) / resolution + margin, (x - origin[0]) / resolution + margin


def test_a_modis_cell_averages_its_own_leaning_footprint():
    """Independently of modis_grid's sampling: a linear field averaged over a cell is its value at the
    cell's centre (transformed here with osr), and the footprint leans as far as the sinusoidal
    projection's shear λ·sin φ says at Coleambally."""
    from model_core import modis_grid

    origin, margin, size = (398400.0, 6237600.0), 80, 64
    grid = modis_grid.SinusoidalGrid(32755, origin, 30.0, size, size, margin, modis_grid.PIXEL_SIZES[500])
    left, p, _, top, _, _ = grid.geotransform
    assert p == pytest.approx(463.3127, abs=1e-3)
    assert (left - modis_grid.GRID_LEFT) / p == pytest.approx(round((left - modis_grid.GRID_LEFT) / p), abs=1e-6)
    assert (modis_grid.GRID_TOP - top) / p == pytest.approx(round((modis_grid.GRID_TOP - top) / p), abs=1e-6)

    world = size + 2 * margin
    row_ramp, col_ramp = np.meshgrid(np.arange(world) + 0.5, np.arange(world) + 0.5, indexing="ij")
    rows, cols = grid.footprint_points()
    mean = modis_grid.footprint_mean(np.stack([row_ramp, col_ramp]), rows, cols)
    sinusoidal = osr.SpatialReference()
    sinusoidal.ImportFromProj4(modis_grid.SINUSOIDAL_PROJ4)
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32755)
    for srs in (sinusoidal, utm):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    hc, wc = grid.shape
    centres = [(left + (j + 0.5) * p, top - (i + 0.5) * p) for i in range(hc) for j in range(wc)]
    utm_centres = np.array(osr.CoordinateTransformation(sinusoidal, utm).TransformPoints(centres))
    expected_rows, expected_cols = _utm_to_world(utm_centres[:, 0], utm_centres[:, 1], origin, margin)
    inside = ~np.isnan(mean[0].ravel())
    assert inside.sum() >= 4
    np.testing.assert_allclose(mean[0].ravel()[inside], expected_rows[inside], atol=0.05)
    np.testing.assert_allclose(mean[1].ravel()[inside], expected_cols[inside], atol=0.05)

    # The lean: one cell's left edge, top to bottom, moves by λ·sin φ fine columns per fine row.
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat, _ = osr.CoordinateTransformation(utm, wgs84).TransformPoint(*origin)
    lean = math.radians(lon) * math.sin(math.radians(lat))
    assert lean == pytest.approx(-1.42, abs=0.03)
    k = modis_grid.FOOTPRINT_SAMPLES
    cell_rows, cell_cols = rows[hc // 2, wc // 2].reshape(k, k), cols[hc // 2, wc // 2].reshape(k, k)
    measured = (cell_cols[-1, 0] - cell_cols[0, 0]) / (cell_rows[-1, 0] - cell_rows[0, 0])
    assert -measured == pytest.approx(lean, abs=0.05)  # rows run south, the lean is east per metre north
    assert modis_grid.shear(32755, *origin) == pytest.approx(lean, abs=0.05)


def test_sinusoidal_coarse_grids_cover_the_fine_image(make_series):
    own = make_series(count=2, size=96, seed=5, sensor="realistic", bands="red,nir", coarse_grid="sinusoidal")
    on_fine = make_series(count=2, size=96, seed=5, sensor="realistic", bands="red,nir", coarse_grid="sinusoidal-fine")
    fine_path, coarse_path = own.items[0].fine, own.items[0].coarse
    coarse, coarse_gt, coarse_wkt, coarse_bands = _read(coarse_path)
    fine, fine_gt, fine_wkt, _ = _read(fine_path)
    assert "Sinusoidal" in coarse_wkt and coarse_gt[1] == pytest.approx(463.3127, abs=1e-3)
    assert coarse_bands == [(sim.NODATA, "red"), (sim.NODATA, "nir")]
    assert own.parameters["coarse_crs"] == "MODIS sinusoidal"
    # GDAL's own warp of the MODIS-grid image onto the fine grid leaves no fine pixel uncovered.
    ds = gdal.Open(str(coarse_path))
    warped = gdal.Warp("", ds, format="MEM", dstSRS=fine_wkt, resampleAlg="near", width=96, height=96,
                       outputBounds=_extent(fine_gt, (96, 96))).ReadAsArray()
    ds = None
    assert (warped != sim.NODATA).all()
    # The same scene delivered on the fine grid: that warp, done by the simulator.
    delivered, delivered_gt, _, _ = _read(on_fine.items[0].coarse)
    assert delivered_gt == fine_gt and delivered.shape == fine.shape
    np.testing.assert_array_equal(delivered, warped)
    # Its blocks lean: a pixel equals its lower neighbour one column east (the lean at Coleambally,
    # 1.42 columns per row) more often than the one straight below, and that one more than the one west.
    nir = delivered[1]
    leaning = np.mean(nir[1:, 1:] == nir[:-1, :-1])
    straight = np.mean(nir[1:, :] == nir[:-1, :])
    against = np.mean(nir[1:, :-1] == nir[:-1, 1:])
    assert leaning > straight + 0.03 > against + 0.06, (leaning, straight, against)
