"""Classical fusion on rasters (model_core.classical_raster) and ``ctstfm:temporaldifference`` /
``ctstfm:starfm``: the formula on the arrays, grids and nodata kept, tiled STARFM equal to one
tile, cancel and bad input leave nothing, command lines, processing.run and qgis_process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, CancelAfter, run_qgis_process
from helpers import fine_geotransform, read_all, smooth_field, write_coarse, write_raster

from model_core.assess import assess
from model_core.classical_raster import fine_band_std, starfm_rasters, temporal_difference_rasters
from model_core.errors import Cancelled, CtstfmError
from model_core.raster import FLOAT_NODATA, RasterInfo, RasterReader, read_metadata

H, W = 60, 80


def reflectance(dn):
    return np.maximum(dn.astype(np.float32) * np.float32(1e-4), 0)


@pytest.fixture(scope="module")
def same_grid(tmp_path_factory):
    """Fine T0 and both coarse images already on the fine grid (exact formula checks)."""
    folder = tmp_path_factory.mktemp("td")
    gt = fine_geotransform()
    f0 = smooth_field(3, H, W, seed=1).astype(np.int16)
    c0 = smooth_field(3, H, W, seed=2, base=1700, noise=20).astype(np.int16)
    c1 = (c0 + np.linspace(-300, 400, W)[None, None, :]).astype(np.int16)
    c1[0, :5, :5] = -1000  # large negative change: clipped to 0 reflectance
    f0[:, :4, -6:] = -9999
    c1[:, 30:33, 10:12] = -9999
    return {
        "folder": folder,
        "f0": f0, "c0": c0, "c1": c1,
        "fine": write_raster(folder / "fine_t0.tif", f0, gt, nodata=-9999, descriptions=["b", "g", "r"]),
        "coarse0": write_raster(folder / "coarse_t0.tif", c0, gt, nodata=-9999),
        "coarse1": write_raster(folder / "coarse_t1.tif", c1, gt, nodata=-9999),
        "valid": (f0 != -9999).all(0) & (c1 != -9999).all(0),
    }


def td_expected(d):
    out = np.maximum(reflectance(d["f0"]) + (reflectance(d["c1"]) - reflectance(d["c0"])), 0)
    return out


def test_temporal_difference_is_the_formula_and_keeps_the_grid_and_nodata(same_grid, tmp_path):
    d = same_grid
    out = tmp_path / "td.tif"
    result = temporal_difference_rasters(d["fine"], d["coarse0"], d["coarse1"], out, tile=32, overlap=0)
    assert result.out_path == str(out) and result.tiles == 6 and not result.coarse_warped
    info, fine_info = RasterInfo.read(out), RasterInfo.read(d["fine"])
    assert info.same_grid(fine_info) and info.crs_wkt == fine_info.crs_wkt
    assert info.dtype == "int16" and info.nodata == (-9999.0,) * 3 and info.descriptions == ("b", "g", "r")
    got, valid = read_all(out), d["valid"]
    want = np.rint(td_expected(d).astype(np.float64) / 1e-4)
    np.testing.assert_array_equal(got[:, valid], want[:, valid])
    f0, c0, c1 = (np.maximum(d[k].astype(int), 0) for k in ("f0", "c0", "c1"))  # inputs clipped at 0, too
    assert np.abs(got[:, valid] - np.maximum(f0 + c1 - c0, 0)[:, valid]).max() <= 1
    assert (got[:, ~valid] == -9999).all() and (got[0, :5, :5][valid[:5, :5]] == 0).any()
    meta = read_metadata(out)
    assert meta["CTSTFM_METHOD"] == "temporal difference" and meta["CTSTFM_COARSE_T1"] == d["coarse1"]
    # float32 reflectance output, and tiling with an overlap changes nothing but rounding.
    out32 = tmp_path / "td32.tif"
    temporal_difference_rasters(d["fine"], d["coarse0"], d["coarse1"], out32, tile=40, overlap=8,
                                output_type="float32")
    got32 = read_all(out32)
    np.testing.assert_allclose(got32[:, valid], td_expected(d)[:, valid], rtol=1e-6, atol=1e-7)
    assert (got32[:, ~valid] == FLOAT_NODATA).all()
    assert read_metadata(out32)["CTSTFM_REFLECTANCE_SCALE"] == "1.0"


def test_cloud_masks_of_the_three_images_are_nodata_in_the_output(same_grid, tmp_path):
    """A QA_PIXEL-like mask of the fine image and a state_1km-like mask of the coarse image at T0 (its own grid,
    twice the pixel size) make their cloudy pixels nodata, in both methods; a state band read as a 0/1 mask is
    refused, naming coarse_mask_rule, with nothing written."""
    from model_core.errors import OptionError

    d = same_grid
    x0, dx, _, y0, _, dy = fine_geotransform()
    qa = np.full((H, W), 21824, dtype=np.uint16)
    qa[40:50, 60:70] |= 8  # Landsat C2 QA_PIXEL bit 3: cloud
    state = np.full((H // 2, W // 2), 72, dtype=np.uint16)
    state[2:4, 3:5] |= 1  # MODIS state_1km cloud state 1: fine rows 4:8, columns 6:10
    masks = dict(fine_mask=write_raster(tmp_path / "qa.tif", qa, fine_geotransform()),
                 coarse_t0_mask=write_raster(tmp_path / "state.tif", state, (x0, 2 * dx, 0, y0, 0, 2 * dy)),
                 mask_rule="landsat-c2-qa", coarse_mask_rule="modis-state")
    cloudy = np.zeros((H, W), dtype=bool)
    cloudy[40:50, 60:70] = cloudy[4:8, 6:10] = True  # the coarse images are on the fine grid: nothing to widen
    for name, method in (("td", temporal_difference_rasters), ("starfm", starfm_rasters)):
        options = dict(tile=32, overlap=0) if name == "td" else dict(tile=40, window=5, device="cpu")
        clear = read_all(method(d["fine"], d["coarse0"], d["coarse1"], tmp_path / f"{name}_clear.tif",
                                **options).out_path)
        masked = read_all(method(d["fine"], d["coarse0"], d["coarse1"], tmp_path / f"{name}.tif", **masks,
                                 **options).out_path)
        assert (masked[:, cloudy] == -9999).all()
        assert np.array_equal(masked[:, ~cloudy], clear[:, ~cloudy]) if name == "td" else \
            (masked[:, ~cloudy] != -9999).mean() > 0.9
        assert read_metadata(tmp_path / f"{name}.tif")["CTSTFM_CLOUDS"].endswith("state.tif band 1 (modis-state)")
    with pytest.raises(OptionError, match=r"coarse cloud mask at T0 '.*state\.tif' marks 100 % .* coarse_mask_rule"):
        temporal_difference_rasters(d["fine"], d["coarse0"], d["coarse1"], tmp_path / "refused.tif",
                                    **dict(masks, coarse_mask_rule="nonzero"))
    assert not (tmp_path / "refused.tif").exists()


def test_temporal_difference_warps_real_coarse_images(sim_series, tmp_path):
    t0, t1 = sim_series.items[0], sim_series.items[1]
    out = tmp_path / "td.tif"
    result = temporal_difference_rasters(t0.fine, t0.coarse, t1.coarse, out, tile=64, output_type="float32")
    assert result.coarse_warped and RasterInfo.read(out).same_grid(RasterInfo.read(t0.fine))
    # The same coarse images read by the shared reader on the fine grid give the same result.
    grid = RasterInfo.read(t0.fine)
    with RasterReader(t0.fine) as f, RasterReader(t0.coarse, grid=grid) as c0, RasterReader(t1.coarse, grid=grid) as c1:
        window = (0, 0, grid.width, grid.height)
        f0, ok0 = f.read_reflectance(window, 1e-4)
        a, ok1 = c0.read_reflectance(window, 1e-4)
        b, ok2 = c1.read_reflectance(window, 1e-4)
    valid = ok0 & ok1 & ok2
    want = np.maximum(f0 + (b - a), 0)
    # GDAL warps each window on its own: equal up to float rounding, not bit for bit.
    np.testing.assert_allclose(read_all(out)[:, valid], want[:, valid], rtol=0, atol=1e-6)


def test_starfm_tiled_equals_one_tile_and_beats_no_change(sim_series, tmp_path):
    t0, t1 = sim_series.items[0], sim_series.items[1]
    whole, tiled = tmp_path / "whole.tif", tmp_path / "tiled.tif"
    kw = dict(window=11, output_type="float32", device="cpu")
    one = starfm_rasters(t0.fine, t0.coarse, t1.coarse, whole, tile=256, **kw)
    many = starfm_rasters(t0.fine, t0.coarse, t1.coarse, tiled, tile=40, **kw)
    assert one.tiles == 1 and many.tiles > 9
    a, b = read_all(whole), read_all(tiled)
    assert (a != FLOAT_NODATA).all()
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    meta = read_metadata(tiled)
    assert meta["CTSTFM_OVERLAP"] == "10" and meta["CTSTFM_STARFM_WINDOW"] == "11"
    starfm_score = assess(tiled, t1.fine)["mae"]["mean"]
    assert starfm_score < assess(t0.fine, t1.fine)["mae"]["mean"]


def test_starfm_band_std_is_the_whole_fine_image_and_invalid_centres_are_nodata(same_grid, tmp_path):
    d = same_grid
    with RasterReader(d["fine"]) as reader:
        std = fine_band_std(reader, 1e-4, max_pixels=W * 7)  # 9 blocks of rows
    f0 = reflectance(d["f0"]).astype(np.float64)
    ok = (d["f0"] != -9999).all(0)
    np.testing.assert_allclose(std, f0[:, ok].std(axis=1), rtol=1e-9)
    out = tmp_path / "starfm.tif"
    starfm_rasters(d["fine"], d["coarse0"], d["coarse1"], out, window=7, tile=32, band_std=std)
    got = read_all(out)
    assert (got[:, ~d["valid"]] == -9999).all() and (got[:, d["valid"]] != -9999).all()
    assert (got[:, d["valid"]] >= 0).all()


def test_cancel_leaves_no_file(same_grid, tmp_path):
    d = same_grid
    with pytest.raises(Cancelled):
        temporal_difference_rasters(d["fine"], d["coarse0"], d["coarse1"], tmp_path / "td.tif", tile=32,
                                    progress=CancelAfter(2))
    with pytest.raises(Cancelled):
        starfm_rasters(d["fine"], d["coarse0"], d["coarse1"], tmp_path / "sf.tif", window=5, tile=32,
                       progress=CancelAfter(2))
    assert os.listdir(tmp_path) == []


def test_bad_inputs_are_clear_errors_and_write_nothing(same_grid, tmp_path):
    d = same_grid
    args = (d["fine"], d["coarse0"], d["coarse1"])
    far = write_raster(tmp_path / "far.tif", d["c1"], fine_geotransform(x0=700000.0), nodata=-9999)
    with pytest.raises(CtstfmError, match="coarse image at T1 .* does not overlap"):
        temporal_difference_rasters(d["fine"], d["coarse0"], far, tmp_path / "o.tif")
    two = write_raster(tmp_path / "two.tif", d["c0"][:2], fine_geotransform(), nodata=-9999)
    with pytest.raises(CtstfmError, match="coarse image at T0 .* has 2 band.*3 fine band"):
        starfm_rasters(d["fine"], two, d["coarse1"], tmp_path / "o.tif")
    with pytest.raises(CtstfmError, match="same bands"):
        temporal_difference_rasters(*args, tmp_path / "o.tif", coarse_bands="1,2")
    with pytest.raises(CtstfmError, match="folder .* does not exist"):
        temporal_difference_rasters(*args, tmp_path / "missing" / "o.tif")
    with pytest.raises(CtstfmError, match="one of the inputs"):
        temporal_difference_rasters(*args, d["coarse1"])
    with pytest.raises(CtstfmError, match="overlap of at least 30"):
        starfm_rasters(*args, tmp_path / "o.tif", window=31, overlap=16)
    with pytest.raises(CtstfmError, match="odd number"):
        starfm_rasters(*args, tmp_path / "o.tif", window=8)
    with pytest.raises(CtstfmError, match="more than twice the overlap"):
        starfm_rasters(*args, tmp_path / "o.tif", window=31, tile=48)
    with pytest.raises(CtstfmError, match=r"scale \(scale\) must be a positive"):
        temporal_difference_rasters(*args, tmp_path / "o.tif", scale=0)
    assert sorted(os.listdir(tmp_path)) == ["far.tif", "two.tif"]


def test_command_lines(same_grid, tmp_path):
    d = same_grid
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = ["--fine", d["fine"], "--coarse0", d["coarse0"], "--coarse1", d["coarse1"]]
    done = subprocess.run(
        [sys.executable, "-m", "model_core", "temporal-difference", *base, "--out", str(tmp_path / "td.tif"),
         "--json", "--tile", "32"], env=env, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["method"] == "temporal difference"
    done = subprocess.run(
        [sys.executable, "-m", "model_core", "starfm", *base, "--out", str(tmp_path / "sf.tif"), "--window", "5",
         "--classes", "20", "--device", "cpu", "--output-type", "float32"], env=env, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "sf.tif" in done.stdout and read_metadata(tmp_path / "sf.tif")["CTSTFM_STARFM_CLASSES"] == "20.0"
    failed = subprocess.run(
        [sys.executable, "-m", "model_core", "starfm", *base, "--out", str(tmp_path / "x.tif"), "--window", "6"],
        env=env, capture_output=True, text=True,
    )
    assert failed.returncode == 2 and "odd number" in failed.stderr
    assert sorted(os.listdir(tmp_path)) == ["sf.tif", "td.tif"]


# --------------------------------------------------------------------------- QGIS


def test_processing_run_both_methods(qgis_app, same_grid, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    d = same_grid
    params = {"FINE": d["fine"], "COARSE_T0": d["coarse0"], "COARSE_T1": d["coarse1"], "TILE_SIZE": 32}
    td = processing.run("ctstfm:temporaldifference", {**params, "OUTPUT": str(tmp_path / "td.tif")})
    want = np.rint(td_expected(d).astype(np.float64) / 1e-4)
    np.testing.assert_array_equal(read_all(td["OUTPUT"])[:, d["valid"]], want[:, d["valid"]])
    sf = processing.run(
        "ctstfm:starfm",
        {**params, "WINDOW": 7, "CLASSES": 30, "DEVICE": 1, "OUTPUT_TYPE": 1, "OUTPUT": str(tmp_path / "sf.tif")},
    )
    meta = read_metadata(sf["OUTPUT"])
    assert meta["CTSTFM_OVERLAP"] == "6" and meta["CTSTFM_DEVICE"] == "cpu"
    assert RasterInfo.read(sf["OUTPUT"]).dtype == "float32"
    with pytest.raises(QgsProcessingException, match="overlap of at least 30"):
        processing.run("ctstfm:starfm", {**params, "TILE_SIZE": 256, "OVERLAP": 10,
                                         "OUTPUT": str(tmp_path / "bad.tif")})
    assert sorted(os.listdir(tmp_path)) == ["sf.tif", "td.tif"]


def test_definitions_and_help(qgis_app):
    from qgis.core import QgsApplication

    from ctstfm_qgis.compat import FLAG_ADVANCED

    registry = QgsApplication.processingRegistry()
    td = registry.createAlgorithmById("ctstfm:temporaldifference")
    sf = registry.createAlgorithmById("ctstfm:starfm")
    assert td.displayName() == "Temporal Difference Fusion" and sf.displayName() == "STARFM Fusion"
    assert td.group() == sf.group() == "Classical fusion methods"
    assert not td.needs_torch and sf.needs_torch
    names = [p.name() for p in sf.parameterDefinitions()]
    assert names[:3] == ["FINE", "COARSE_T0", "COARSE_T1"] and names[-1] == "OUTPUT"
    for name in ("WINDOW", "CLASSES", "FINE_UNCERTAINTY", "COARSE_UNCERTAINTY", "DEVICE", "TILE_SIZE", "OVERLAP"):
        assert name in names, name
    assert sf.parameterDefinition("WINDOW").defaultValue() == 31
    assert sf.parameterDefinition("CLASSES").defaultValue() == 40
    advanced = {p.name() for p in td.parameterDefinitions() if p.flags() & FLAG_ADVANCED}
    assert {"RESAMPLING", "OUTPUT_TYPE", "COARSE_BANDS", "SCALE"} <= advanced
    assert "Gao" in sf.shortHelpString() and "2006" in sf.shortHelpString()
    for alg in (td, sf):
        for words in ("T0", "T1", "Assumes", "any CRS", "same order", "Assess Fusion Accuracy"):
            assert words in alg.shortHelpString(), (alg.id(), words)


def test_qgis_process_runs_temporal_difference_from_the_installed_plugin(installed_plugin_env, same_grid, tmp_path):
    d = same_grid
    out = str(tmp_path / "td.tif")
    done = run_qgis_process(
        installed_plugin_env, "run", "ctstfm:temporaldifference", "--json", "--",
        f"FINE={d['fine']}", f"COARSE_T0={d['coarse0']}", f"COARSE_T1={d['coarse1']}", "TILE_SIZE=32",
        "OUTPUT_TYPE=1", f"OUTPUT={out}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout[done.stdout.index("{"):])["results"]["OUTPUT"] == out
    got = read_all(out)
    np.testing.assert_allclose(got[:, d["valid"]], td_expected(d)[:, d["valid"]], rtol=1e-6, atol=1e-7)
    (tmp_path / "in").mkdir()
    coarse = write_coarse(tmp_path / "in" / "coarse.tif", W * 30.0, H * 30.0, 3, seed=3)
    failed = run_qgis_process(
        installed_plugin_env, "run", "ctstfm:temporaldifference", "--",
        f"FINE={d['fine']}", f"COARSE_T0={coarse}", f"COARSE_T1={d['coarse1']}", "COARSE_BANDS=1,2",
        f"OUTPUT={tmp_path / 'never.tif'}",
    )
    assert failed.returncode != 0 and "same bands" in failed.stdout + failed.stderr
    assert sorted(os.listdir(tmp_path)) == ["in", "td.tif"]


def test_cancel_in_qgis_leaves_nothing(qgis_app, same_grid, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    d = same_grid
    feedback = QgsProcessingFeedback()
    seen = []

    def on_progress(value):
        seen.append(value)
        if 0 < value < 100 and len(seen) >= 3:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        processing.run(
            "ctstfm:starfm",
            {"FINE": d["fine"], "COARSE_T0": d["coarse0"], "COARSE_T1": d["coarse1"], "WINDOW": 3, "TILE_SIZE": 32,
             "DEVICE": 1, "OUTPUT": str(tmp_path / "sf.tif")},
            feedback=feedback,
        )
    assert feedback.isCanceled() and max(seen) < 100
    assert os.listdir(tmp_path) == []


def test_assessment_and_temporal_difference_need_no_torch(same_grid, tmp_path):
    """A QGIS without PyTorch can still assess and run the temporal difference."""
    d = same_grid
    script = f"""
import sys
sys.modules["torch"] = None  # import torch now raises ImportError
from model_core.classical_raster import temporal_difference_rasters
from model_core.assess import assess
temporal_difference_rasters({d['fine']!r}, {d['coarse0']!r}, {d['coarse1']!r}, {str(tmp_path / 'td.tif')!r})
print(assess({str(tmp_path / 'td.tif')!r}, {d['fine']!r})["counts"]["pixels"] > 0)
"""
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
