"""``ctstfm:fuse`` in QGIS: processing.run, the dialog's loading, cancel, the default
model hook, the graphical modeler, and qgis_process with the installed plugin zip."""

import json
import os

import numpy as np
import pytest

from conftest import run_qgis_process
from helpers import (
    MODIS_BAND_NAMES,
    SINUSOIDAL,
    fine_geotransform,
    read_all,
    save_test_model,
    smooth_field,
    write_coarse,
    write_raster,
)

from model_core.raster import RasterInfo, read_metadata

SIZE = 96


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alg")
    fine = smooth_field(6, SIZE, SIZE, seed=4).astype(np.int16)
    fine[:, -5:, -5:] = -9999
    return {
        "fine_array": fine,
        "fine": write_raster(folder / "landsat_t0.tif", fine, fine_geotransform(), nodata=-9999),
        "coarse": write_coarse(folder / "modis_t1.tif", SIZE * 30.0, SIZE * 30.0, 7, SINUSOIDAL, seed=5,
                               descriptions=MODIS_BAND_NAMES),
        "identity": save_test_model(folder / "identity.pt", "identity"),
        "residual": save_test_model(folder / "residual.pt", "residual"),
    }


def expected_identity(fine):
    expected = fine.copy()
    expected[expected < 0] = 0
    expected[:, -5:, -5:] = -9999
    return expected


def test_processing_run_writes_the_fine_grid(qgis_app, inputs, tmp_path):
    import processing

    out = str(tmp_path / "fused.tif")
    result = processing.run(
        "ctstfm:fuse",
        {
            "FINE": inputs["fine"],
            "COARSE": inputs["coarse"],
            "MODEL": inputs["identity"],
            "TILE_SIZE": 64,
            "OVERLAP": 16,
            "DEVICE": 1,
            "COARSE_BANDS": "3,4,1,2,6,7",
            "RESAMPLING": 1,
            "OUTPUT": out,
        },
    )
    assert result["OUTPUT"] == out
    assert sorted(os.listdir(tmp_path)) == ["fused.tif"]
    assert RasterInfo.read(out).same_grid(RasterInfo.read(inputs["fine"]))
    assert RasterInfo.read(out).nodata == (-9999.0,) * 6
    np.testing.assert_array_equal(read_all(out), expected_identity(inputs["fine_array"]))
    meta = read_metadata(out)
    assert meta["CTSTFM_COARSE_BANDS"] == "3,4,1,2,6,7" and meta["CTSTFM_RESAMPLING"] == "cubic"
    assert meta["CTSTFM_DEVICE"] == "cpu"


def test_float32_output_and_loading_with_a_descriptive_name(qgis_app, inputs, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = str(tmp_path / "fused.tif")
    processing.runAndLoadResults(
        "ctstfm:fuse",
        {"FINE": inputs["fine"], "COARSE": inputs["coarse"], "MODEL": inputs["residual"], "OUTPUT_TYPE": 1,
         "OUTPUT": out},
        feedback=QgsProcessingFeedback(),
        context=context,
    )
    layers = QgsProject.instance().mapLayersByName("CTSTFM fused modis_t1")
    assert len(layers) == 1 and layers[0].source() == out and layers[0].isValid()
    fused = read_all(out)
    assert fused.dtype == np.float32 and np.isfinite(fused).all()
    assert 0.05 < fused[:, :-5, :-5].mean() < 0.6 and (fused[:, -5:, -5:] == -9999).all()
    QgsProject.instance().removeAllMapLayers()


def test_cancel_from_the_progress_signal_leaves_nothing(qgis_app, inputs, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    seen = []

    def on_progress(value):
        seen.append(value)
        if 0 < value < 100 and len(seen) >= 2:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    out = str(tmp_path / "fused.tif")
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        processing.run(
            "ctstfm:fuse",
            {"FINE": inputs["fine"], "COARSE": inputs["coarse"], "MODEL": inputs["identity"], "TILE_SIZE": 48,
             "OVERLAP": 8, "OUTPUT": out},
            feedback=feedback,
        )
    assert feedback.isCanceled() and max(seen) < 100
    assert os.listdir(tmp_path) == []


def test_model_defaults_to_the_plugins_own_model(qgis_app, inputs, tmp_path, monkeypatch):
    import processing
    from qgis.core import QgsProcessingException

    from model_core import paths

    params = {"FINE": inputs["fine"], "COARSE": inputs["coarse"], "OUTPUT": str(tmp_path / "fused.tif")}
    monkeypatch.setattr(paths, "DEFAULT_MODEL", tmp_path / "no_default_model.pt")
    with pytest.raises(QgsProcessingException, match="pick a CTSTFM model file"):
        processing.run("ctstfm:fuse", params)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(paths, "DEFAULT_MODEL", inputs["identity"])
    processing.run("ctstfm:fuse", params)
    assert read_metadata(params["OUTPUT"])["CTSTFM_MODEL"] == inputs["identity"]


def test_bad_input_is_a_processing_exception(qgis_app, inputs, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    params = {"FINE": inputs["fine"], "COARSE": inputs["coarse"], "MODEL": inputs["identity"], "TILE_SIZE": 64,
              "OVERLAP": 32, "OUTPUT": str(tmp_path / "fused.tif")}
    with pytest.raises(QgsProcessingException, match="more than twice the overlap"):
        processing.run("ctstfm:fuse", params)
    with pytest.raises(QgsProcessingException, match="needs 6"):
        processing.run("ctstfm:fuse", {**params, "OVERLAP": 16, "FINE_BANDS": "1,2,3"})
    assert os.listdir(tmp_path) == []


def test_parameters_are_documented_and_advanced_ones_flagged(qgis_app):
    from qgis.core import QgsApplication

    from ctstfm_qgis.compat import FLAG_ADVANCED, FLAG_OPTIONAL

    alg = QgsApplication.processingRegistry().createAlgorithmById("ctstfm:fuse")
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names[:8] == ["FINE", "COARSE", "COARSE_T0", "MODEL", "MODEL_NAME", "TILE_SIZE", "OVERLAP", "DEVICE"]
    assert names[-1] == "OUTPUT"
    flag = FLAG_ADVANCED
    advanced = {p.name() for p in alg.parameterDefinitions() if p.flags() & flag}
    assert advanced == {"BANDS", "FINE_BANDS", "COARSE_BANDS", "RESAMPLING", "OUTPUT_TYPE", "OUTPUT_FORMAT",
                        "BATCH_SIZE", "SCALE", "COARSE_SCALE", "FINE_MASK", "COARSE_MASK", "COARSE_T0_MASK",
                        "MASK_BAND", "MASK_RULE", "COARSE_MASK_RULE", "INFERENCE", "THREADS", "SIMILAR_WINDOW",
                        "MEAN_WITH_PLUGIN_MODEL"}
    for optional in ("MODEL", "COARSE_T0", "BANDS", "FINE_MASK", "COARSE_MASK", "COARSE_T0_MASK"):
        assert alg.parameterDefinition(optional).flags() & FLAG_OPTIONAL
    help_text = alg.shortHelpString()
    for words in ("Landsat", "MODIS", "T0", "T1", "overlap", "tile", "model's order", "any CRS", "green,red,nir",
                  "Three-image", "inference path", "Threads", "Clouds", "Similar-pixel window",
                  "MEAN_WITH_PLUGIN_MODEL"):
        assert words in help_text, words


def test_runs_inside_a_graphical_model(qgis_app, inputs, tmp_path):
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("fuse twice removed", "tests")
    for name in ("fine", "coarse"):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name))
    child = QgsProcessingModelChildAlgorithm("ctstfm:fuse")
    child.setChildId("fuse")
    child.addParameterSources("FINE", [QgsProcessingModelChildParameterSource.fromModelParameter("fine")])
    child.addParameterSources("COARSE", [QgsProcessingModelChildParameterSource.fromModelParameter("coarse")])
    child.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(inputs["identity"])])
    child.addParameterSources("TILE_SIZE", [QgsProcessingModelChildParameterSource.fromStaticValue(64)])
    child.addParameterSources("OVERLAP", [QgsProcessingModelChildParameterSource.fromStaticValue(16)])
    output = QgsProcessingModelOutput("fused", "fused")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"fused": output})
    model.addChildAlgorithm(child)
    out = str(tmp_path / "modeled.tif")
    # The model's name for the child's output is "fuse:fused" on QGIS 3.22 and "fused" on 3.40: ask the model.
    (destination,) = model.destinationParameterDefinitions()
    result = processing.run(model, {"fine": inputs["fine"], "coarse": inputs["coarse"], destination.name(): out})
    assert result[destination.name()] == out
    np.testing.assert_array_equal(read_all(out), expected_identity(inputs["fine_array"]))


def test_qgis_process_runs_the_installed_plugin(installed_plugin_env, inputs, tmp_path):
    out = str(tmp_path / "fused.tif")
    done = run_qgis_process(
        installed_plugin_env, "run", "ctstfm:fuse", "--json", "--",
        f"FINE={inputs['fine']}", f"COARSE={inputs['coarse']}", f"MODEL={inputs['identity']}",
        "TILE_SIZE=64", "OVERLAP=16", "COARSE_BANDS=3,4,1,2,6,7", f"OUTPUT={out}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FutureWarning" not in done.stderr, done.stderr  # e.g. GDAL 3.10 on QGIS 3.40, unless model_core chose
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["results"]["OUTPUT"] == out
    assert RasterInfo.read(out).same_grid(RasterInfo.read(inputs["fine"]))
    np.testing.assert_array_equal(read_all(out), expected_identity(inputs["fine_array"]))
    failed = run_qgis_process(
        installed_plugin_env, "run", "ctstfm:fuse", "--",
        f"FINE={inputs['fine']}", f"COARSE={inputs['coarse']}", f"MODEL={tmp_path / 'missing.pt'}",
        f"OUTPUT={tmp_path / 'never.tif'}",
    )
    assert failed.returncode != 0 and "missing.pt" in failed.stdout + failed.stderr
    assert sorted(os.listdir(tmp_path)) == ["fused.tif"]


def test_embedded_model_on_a_three_band_image_named_by_bands_with_coarse_t0(qgis_app, inputs, tmp_path):
    """No model file, a 3-band image without band names: BANDS names them; with COARSE_T0 (another CRS)
    the embedded model's three-image form runs, band-mapped, and uses it."""
    import processing
    from osgeo import gdal

    fine3 = str(tmp_path / "fine3.tif")
    gdal.Translate(fine3, inputs["fine"], bandList=[2, 3, 4])
    coarse_t0 = write_coarse(tmp_path / "modis_t0.tif", SIZE * 30.0, SIZE * 30.0, 7, 4326, seed=8)
    out = str(tmp_path / "fused.tif")
    result = processing.run("ctstfm:fuse", {
        "FINE": fine3, "COARSE": inputs["coarse"], "COARSE_T0": coarse_t0, "BANDS": "green,red,nir",
        "COARSE_BANDS": "4,1,2", "TILE_SIZE": 96, "OVERLAP": 16, "OUTPUT": out,
    })
    assert result["OUTPUT"] == out and RasterInfo.read(out).count == 3
    meta = read_metadata(out)
    assert meta["CTSTFM_BANDS"] == "green,red,nir" and meta["CTSTFM_COARSE_BANDS"] == "4,1,2"
    assert meta["CTSTFM_COARSE_T0"] == coarse_t0 and "coarse T1 - coarse T0" in meta["CTSTFM_FIRST_GUESS"]
    assert os.path.basename(meta["CTSTFM_MODEL"]) == "default_model_three_image.pt"
