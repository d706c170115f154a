"""model_core.assess and ``ctstfm:assess``: metrics equal the one metrics module on the
arrays, the error map, grids and bands checked, nothing written on error or cancel,
the command line, processing.run and qgis_process with the installed plugin."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, CancelAfter, run_qgis_process
from helpers import UTM33, fine_geotransform, read_all, smooth_field, write_raster

from model_core.assess import assess, parse_band_pairs
from model_core.errors import Cancelled, CtstfmError
from model_core.metrics import METRIC_LABELS, METRIC_NAMES, compute_metrics
from model_core.raster import FLOAT_NODATA, RasterInfo, read_metadata

H, W, BANDS = 70, 90, 4
NAMES = ["blue", "green", "red", "nir"]


def reflectance(dn):
    """What the reader does: float32 DN x float32 scale, negatives clipped."""
    return np.maximum(dn.astype(np.float32) * np.float32(1e-4), 0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assess")
    rng = np.random.default_rng(3)
    ref = smooth_field(BANDS, H, W, seed=1).astype(np.int16)
    pred = (ref + rng.normal(30, 90, ref.shape)).astype(np.int16)
    ref[:, :6, :9] = -9999  # nodata corner in the reference
    pred[:, 40:42, :] = -9999  # nodata rows in the prediction
    pred[2, 10, 10] = -9999  # one band's nodata invalidates the pixel in every band
    mask = np.ones((H, W), np.uint8)
    mask[50:, 60:] = 0
    gt = fine_geotransform()
    out = {
        "folder": folder,
        "ref_array": ref,
        "pred_array": pred,
        "mask_array": mask,
        "ref": write_raster(folder / "landsat_t1.tif", ref, gt, nodata=-9999, descriptions=NAMES),
        "pred": write_raster(folder / "fused.tif", pred, gt, nodata=-9999),
        "mask": write_raster(folder / "mask.tif", mask, gt),
    }
    # The same prediction as float32 reflectance (nodata -9999, as a float32 fusion output).
    pred_float = np.where(pred == -9999, FLOAT_NODATA, reflectance(pred)).astype(np.float32)
    out["pred_float"] = write_raster(folder / "fused_float.tif", pred_float, gt, nodata=FLOAT_NODATA)
    return out


def expected(data, mask=False, **kw):
    ref, pred = data["ref_array"], data["pred_array"]
    valid = (ref != -9999).all(0) & (pred != -9999).all(0)
    if mask:
        valid &= data["mask_array"] != 0
    return compute_metrics(reflectance(pred), reflectance(ref), valid, **kw), valid


def assert_metrics_equal(got, want, rtol=1e-9):
    assert got["counts"] == want["counts"]
    for name in METRIC_NAMES:
        np.testing.assert_allclose(got[name]["mean"], want[name]["mean"], rtol=rtol, err_msg=name)
        if want[name]["bands"] is not None:
            np.testing.assert_allclose(got[name]["bands"], want[name]["bands"], rtol=rtol, err_msg=name)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("tile", [16, 23, 256])
def test_metrics_equal_the_metrics_module_on_the_arrays_for_any_block_size(data, tmp_path, tile):
    want, _ = expected(data)
    result = assess(data["pred"], data["ref"], tile=tile, table_csv=tmp_path / "m.csv")
    assert_metrics_equal(result, want)
    assert result["band_names"] == NAMES and result["band_pairs"] == [[b, b] for b in range(1, 5)]
    rows = read_csv(tmp_path / "m.csv")
    assert [r["band"] for r in rows] == NAMES + ["mean"]
    for name in METRIC_NAMES:
        label = METRIC_LABELS[name]
        if want[name]["bands"] is not None:
            np.testing.assert_allclose([float(r[label]) for r in rows[:-1]], want[name]["bands"], rtol=1e-12)
        else:
            assert all(r[label] == "" for r in rows[:-1])
        np.testing.assert_allclose(float(rows[-1][label]), want[name]["mean"], rtol=1e-9)


def test_mask_error_map_and_html(data, tmp_path):
    want, valid = expected(data, mask=True)
    err, html = tmp_path / "error.tif", tmp_path / "report.html"
    result = assess(data["pred"], data["ref"], mask_path=data["mask"], error_map_path=err, html=html, tile=32)
    assert_metrics_equal(result, want)
    assert sorted(os.listdir(tmp_path)) == ["error.tif", "report.html"]
    info = RasterInfo.read(err)
    assert info.same_grid(RasterInfo.read(data["ref"])) and info.count == 1 and info.dtype == "float32"
    assert info.nodata == (FLOAT_NODATA,)
    error = read_all(err)[0]
    diff = np.abs(reflectance(data["pred_array"]).astype(np.float64) - reflectance(data["ref_array"])).mean(0)
    np.testing.assert_allclose(error[valid], diff[valid], rtol=1e-6, atol=1e-9)
    assert (error[~valid] == FLOAT_NODATA).all() and (error[valid] >= 0).all()
    assert read_metadata(err)["CTSTFM_REFLECTANCE_SCALE"] == "1.0"
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert "<script" not in page and " src=" not in page  # self-contained
    for text in ("fused.tif", "landsat_t1.tif", "mask.tif", "SSIM", "ERGAS", "docs/metrics.md", "blue",
                 f"{want['rmse']['mean']:.5f}", str(want["counts"]["pixels"])):
        assert text in page, text


def test_float_reflectance_prediction_against_integer_reference(data, tmp_path):
    want, _ = expected(data)
    result = assess(data["pred_float"], data["ref"])
    assert result["scales"] == {"predicted": 1.0, "reference": 1e-4}
    assert_metrics_equal(result, want, rtol=1e-6)
    # A float raster holding DN is caught by the scale check, and fixed by giving its scale.
    dn_float = write_raster(tmp_path / "dn_float.tif", data["pred_array"].astype(np.float32), fine_geotransform(),
                            nodata=-9999)
    with pytest.raises(CtstfmError, match="scales differ"):
        assess(dn_float, data["ref"], error_map_path=tmp_path / "e.tif")
    assert os.listdir(tmp_path) == ["dn_float.tif"]
    assert_metrics_equal(assess(dn_float, data["ref"], pred_scale=1e-4), want, rtol=1e-6)


def test_band_pairs_and_band_count_mismatch(data, tmp_path):
    want, _ = expected(data)
    three = write_raster(tmp_path / "three.tif", data["pred_array"][[2, 0, 1]], fine_geotransform(), nodata=-9999)
    with pytest.raises(CtstfmError, match="3 band.*4.*pairs"):
        assess(three, data["ref"])
    result = assess(three, data["ref"], bands="2:1, 3:2, 1:3")
    assert result["band_names"] == NAMES[:3]
    np.testing.assert_allclose(result["mae"]["bands"], want["mae"]["bands"][:3], rtol=1e-9)
    assert parse_band_pairs([1, (2, 4)], 4, 4) == [(1, 1), (2, 4)]
    assert parse_band_pairs("1,2", 2, 3) == [(1, 1), (2, 2)]
    with pytest.raises(CtstfmError, match="do not exist in the reference"):
        parse_band_pairs("1:5", 4, 4)
    with pytest.raises(CtstfmError, match="not a band number"):
        parse_band_pairs("1:2:3", 4, 4)


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(geotransform=fine_geotransform(x0=500030.0)), "origin"),
        (dict(geotransform=fine_geotransform(pixel=20.0)), "pixels of 20"),
        (dict(crs=4326), "coordinate reference system"),
        (dict(size=(H, W - 1)), f"{W - 1} x {H} pixels against {W} x {H}"),
    ],
)
def test_different_grids_are_a_clear_error_and_nothing_is_written(data, tmp_path, change, words):
    pred = data["pred_array"]
    if "size" in change:
        pred = pred[:, : change["size"][0], : change["size"][1]]
    other = write_raster(tmp_path / "other.tif", pred, change.get("geotransform", fine_geotransform()),
                         crs=change.get("crs", UTM33), nodata=-9999)
    with pytest.raises(CtstfmError, match="not on the grid of the reference image") as info:
        assess(other, data["ref"], error_map_path=tmp_path / "e.tif", table_csv=tmp_path / "t.csv")
    assert words in str(info.value) and "Warp" in str(info.value)
    assert os.listdir(tmp_path) == ["other.tif"]


def test_bad_inputs_are_clear_errors(data, tmp_path):
    with pytest.raises(CtstfmError, match="does not exist"):
        assess(tmp_path / "missing.tif", data["ref"])
    with pytest.raises(CtstfmError, match="folder .* does not exist"):
        assess(data["pred"], data["ref"], table_csv=tmp_path / "no" / "t.csv")
    with pytest.raises(CtstfmError, match="one of the inputs"):
        assess(data["pred"], data["ref"], error_map_path=data["pred"])
    small_mask = write_raster(tmp_path / "m.tif", data["mask_array"][:-1], fine_geotransform())
    with pytest.raises(CtstfmError, match="mask .* not on the grid"):
        assess(data["pred"], data["ref"], mask_path=small_mask)
    empty_mask = write_raster(tmp_path / "m0.tif", 0 * data["mask_array"], fine_geotransform())
    with pytest.raises(CtstfmError, match="No pixel is valid"):
        assess(data["pred"], data["ref"], mask_path=empty_mask, html=tmp_path / "r.html")
    assert sorted(os.listdir(tmp_path)) == ["m.tif", "m0.tif"]


def test_cancel_leaves_no_file(data, tmp_path):
    with pytest.raises(Cancelled):
        assess(data["pred"], data["ref"], tile=16, error_map_path=tmp_path / "e.tif", table_csv=tmp_path / "t.csv",
               html=tmp_path / "r.html", progress=CancelAfter(3))
    assert os.listdir(tmp_path) == []


def test_command_line(data, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "model_core", "assess", "--pred", data["pred"], "--ref", data["ref"]]
    done = subprocess.run(command + ["--json", "--csv", str(tmp_path / "t.csv")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    want, _ = expected(data)
    assert report["counts"] == want["counts"] and report["sam"]["bands"] is None
    np.testing.assert_allclose(report["rmse"]["mean"], want["rmse"]["mean"], rtol=1e-9)
    assert report["files"] == {"csv": str(tmp_path / "t.csv")}
    text = subprocess.run(command, env=env, capture_output=True, text=True)
    assert text.returncode == 0 and "| mean |" in text.stdout and "valid pixels" in text.stdout
    failed = subprocess.run(command[:-1] + [str(tmp_path / "nope.tif")], env=env, capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stderr.startswith("error: ") and "nope.tif" in failed.stderr


# --------------------------------------------------------------------------- QGIS


def test_processing_run_returns_numbers_and_files(qgis_app, data, tmp_path):
    import processing

    want, valid = expected(data, mask=True)
    outputs = {"ERROR_MAP": str(tmp_path / "error.tif"), "OUTPUT_TABLE": str(tmp_path / "metrics.csv"),
               "OUTPUT_HTML": str(tmp_path / "report.html")}
    result = processing.run(
        "ctstfm:assess", {"PREDICTED": data["pred"], "REFERENCE": data["ref"], "MASK": data["mask"], **outputs}
    )
    for key, path in outputs.items():
        assert result[key] == path and os.path.isfile(path)
    for name in ("MAE", "RMSE", "PSNR", "SSIM", "SAM", "ERGAS", "CC"):
        np.testing.assert_allclose(result[name], want[name.lower()]["mean"], rtol=1e-9)
    assert result["VALID_PIXELS"] == want["counts"]["pixels"] == int(valid.sum())
    assert float(read_csv(outputs["OUTPUT_TABLE"])[-1]["SAM (deg)"]) == pytest.approx(result["SAM"], rel=1e-12)


def test_optional_outputs_can_be_skipped_and_bad_input_is_a_processing_exception(qgis_app, data, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    result = processing.run(
        "ctstfm:assess",
        {"PREDICTED": data["pred_float"], "REFERENCE": data["ref"], "BANDS": "1,2",
         "ERROR_MAP": None, "OUTPUT_TABLE": None, "OUTPUT_HTML": None},
    )
    ref, pred = data["ref_array"][:2], data["pred_array"][:2]  # band 3's nodata pixel counts here
    want = compute_metrics(reflectance(pred), reflectance(ref), (ref != -9999).all(0) & (pred != -9999).all(0))
    np.testing.assert_allclose(result["MAE"], want["mae"]["mean"], rtol=1e-6)
    assert "ERROR_MAP" not in result or not result["ERROR_MAP"]
    shifted = write_raster(tmp_path / "shifted.tif", data["pred_array"], fine_geotransform(y0=4000030.0),
                           nodata=-9999)
    with pytest.raises(QgsProcessingException, match="not on the grid"):
        processing.run("ctstfm:assess", {"PREDICTED": shifted, "REFERENCE": data["ref"],
                                         "ERROR_MAP": str(tmp_path / "e.tif")})
    assert os.listdir(tmp_path) == ["shifted.tif"]


def test_definition_html_output_and_help(qgis_app):
    from qgis.core import (
        QgsApplication,
        QgsProcessingOutputHtml,
        QgsProcessingOutputNumber,
    )

    from ctstfm_qgis.compat import FLAG_ADVANCED

    alg = QgsApplication.processingRegistry().createAlgorithmById("ctstfm:assess")
    assert alg.group() == "Assessment" and alg.displayName() == "Assess Fusion Accuracy"
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names[:3] == ["PREDICTED", "REFERENCE", "MASK"]
    assert names[-3:] == ["ERROR_MAP", "OUTPUT_TABLE", "OUTPUT_HTML"]
    advanced = {p.name() for p in alg.parameterDefinitions() if p.flags() & FLAG_ADVANCED}
    assert advanced == {"BANDS", "SCALE", "PRED_SCALE", "REF_SCALE", "ERGAS_RATIO"}
    assert isinstance(alg.outputDefinition("OUTPUT_HTML"), QgsProcessingOutputHtml) and alg.hasHtmlOutputs()
    for name in ("MAE", "RMSE", "PSNR", "SSIM", "SAM", "ERGAS", "CC"):
        assert isinstance(alg.outputDefinition(name), QgsProcessingOutputNumber), name
    for words in ("same grid", "reference", "Mask", "reflectance", "Error map", "modeler"):
        assert words in alg.shortHelpString(), words


def test_qgis_process_runs_assess_from_the_installed_plugin(installed_plugin_env, data, tmp_path):
    csv_path = str(tmp_path / "metrics.csv")
    done = run_qgis_process(
        installed_plugin_env, "run", "ctstfm:assess", "--json", "--",
        f"PREDICTED={data['pred']}", f"REFERENCE={data['ref']}", f"MASK={data['mask']}",
        f"ERROR_MAP={tmp_path / 'error.tif'}", f"OUTPUT_TABLE={csv_path}", f"OUTPUT_HTML={tmp_path / 'r.html'}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    want, _ = expected(data, mask=True)
    np.testing.assert_allclose(results["RMSE"], want["rmse"]["mean"], rtol=1e-9)
    assert results["OUTPUT_TABLE"] == csv_path
    assert sorted(os.listdir(tmp_path)) == ["error.tif", "metrics.csv", "r.html"]


def test_error_map_is_loaded_with_a_descriptive_name(qgis_app, data, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = str(tmp_path / "error.tif")
    processing.runAndLoadResults(
        "ctstfm:assess",
        {"PREDICTED": data["pred"], "REFERENCE": data["ref"], "ERROR_MAP": out, "OUTPUT_TABLE": None,
         "OUTPUT_HTML": None},
        feedback=QgsProcessingFeedback(),
        context=context,
    )
    layers = QgsProject.instance().mapLayersByName("Absolute error of fused")
    assert len(layers) == 1 and layers[0].source() == out and layers[0].isValid()
    QgsProject.instance().removeAllMapLayers()
