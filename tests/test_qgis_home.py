"""At home in QGIS: styled outputs, readable help, the provider's settings, results a user sees.

Everything runs in the real headless QGIS (``qgis_app``): outputs are loaded into the project with
``processing.runAndLoadResults``, the path the dialog takes (``handleAlgorithmResults``), so the
post-processors QGIS calls are the ones tested.
"""

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from helpers import SINUSOIDAL, fine_geotransform, save_test_model, smooth_field, write_coarse, write_raster

SIZE = 64
# Band names out of the usual order: the composite must follow the names, not the positions.
NAMES = ["nir", "red", "green", "blue", "swir1", "swir2"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("home")
    fine = smooth_field(6, SIZE, SIZE, seed=11).astype(np.int16)
    fine[:, :4, :4] = -9999
    return {
        "folder": folder,
        "fine": write_raster(folder / "landsat_t0.tif", fine, fine_geotransform(), nodata=-9999, descriptions=NAMES),
        "coarse": write_coarse(folder / "modis_t1.tif", SIZE * 30.0, SIZE * 30.0, 7, SINUSOIDAL, seed=12),
        "model": save_test_model(folder / "identity.pt", "identity"),
    }


@pytest.fixture(autouse=True)
def clean_project(qgis_app):
    """Take the layers a test loaded out of the project again (other tests look layers up by name)."""
    from qgis.core import QgsProject

    before = set(QgsProject.instance().mapLayers())
    yield
    QgsProject.instance().removeMapLayers([key for key in QgsProject.instance().mapLayers() if key not in before])


def run_and_load(alg_id, parameters):
    """Run as the dialog does and return ``(results, {output name: loaded layer})``."""
    import processing
    from qgis.core import QgsProject

    before = set(QgsProject.instance().mapLayers())
    results = processing.runAndLoadResults(alg_id, parameters)
    added = [layer for key, layer in QgsProject.instance().mapLayers().items() if key not in before]
    by_path = {layer.source().split("|")[0]: layer for layer in added}
    return results, {name: by_path.get(str(value)) for name, value in results.items()}


def fuse_parameters(scene, fine, out, **extra):
    return {"FINE": fine, "COARSE": scene["coarse"], "MODEL": scene["model"], "TILE_SIZE": 64, "OVERLAP": 8,
            "DEVICE": 1, "COARSE_BANDS": "3,4,1,2,6,7", "OUTPUT": str(out), **extra}


def stretch(enhancement):
    return enhancement.minimumValue(), enhancement.maximumValue()


def test_fused_file_input_gets_a_natural_colour_composite_with_the_fine_stretch(qgis_app, scene, tmp_path):
    from qgis.core import QgsMultiBandColorRenderer, QgsRasterLayer, QgsRectangle

    results, layers = run_and_load("ctstfm:fuse", fuse_parameters(scene, scene["fine"], tmp_path / "fused.tif"))
    renderer = layers["OUTPUT"].renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (2, 3, 4)  # by name
    fine_layer = QgsRasterLayer(scene["fine"], "fine", "gdal")
    fine = fine_layer.dataProvider()
    for band, enhancement in ((2, renderer.redContrastEnhancement()), (4, renderer.blueContrastEnhancement())):
        low, high = fine.cumulativeCut(band, 0.02, 0.98, QgsRectangle(), 250_000)
        assert stretch(enhancement) == pytest.approx((low, high)) and high > low
    assert results["SECONDS"] > 0 and results["DEVICE"] == "cpu"

    # Float32 reflectance from DN: the same stretch, in reflectance.
    _, layers = run_and_load(
        "ctstfm:fuse", fuse_parameters(scene, scene["fine"], tmp_path / "fused_f32.tif", OUTPUT_TYPE=1)
    )
    red = layers["OUTPUT"].renderer().redContrastEnhancement()
    low, high = fine.cumulativeCut(2, 0.02, 0.98, QgsRectangle(), 250_000)
    assert stretch(red) == pytest.approx((low * 1e-4, high * 1e-4))


def test_fused_layer_input_lends_its_own_renderer(qgis_app, scene, tmp_path):
    from qgis.core import (
        QgsContrastEnhancement,
        QgsMultiBandColorRenderer,
        QgsProject,
        QgsRasterLayer,
    )

    fine = QgsRasterLayer(scene["fine"], "Landsat T0", "gdal")
    provider = fine.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, 1, 2, 3)  # a false-colour look chosen by the user
    for setter, (low, high) in zip(("setRedContrastEnhancement", "setGreenContrastEnhancement",
                                    "setBlueContrastEnhancement"), ((100, 4000), (200, 3000), (300, 2500))):
        enhancement = QgsContrastEnhancement(provider.dataType(1))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        getattr(renderer, setter)(enhancement)
    fine.setRenderer(renderer)
    QgsProject.instance().addMapLayer(fine)
    try:
        # Fine bands reordered: the renderer follows each fine band to its output band.
        _, layers = run_and_load(
            "ctstfm:fuse",
            fuse_parameters(scene, fine.id(), tmp_path / "fused.tif", FINE_BANDS="2,3,1,4,5,6"),
        )
    finally:
        QgsProject.instance().removeMapLayer(fine.id())
    assert layers["OUTPUT"] is not None
    out = layers["OUTPUT"].renderer()
    assert isinstance(out, QgsMultiBandColorRenderer)
    assert (out.redBand(), out.greenBand(), out.blueBand()) == (3, 1, 2)
    assert [stretch(e) for e in (out.redContrastEnhancement(), out.greenContrastEnhancement(),
                                 out.blueContrastEnhancement())] == [(100, 4000), (200, 3000), (300, 2500)]


def test_error_map_gets_a_sequential_ramp_with_a_legend(qgis_app, scene, tmp_path):
    from qgis.core import QgsSingleBandPseudoColorRenderer

    reference = smooth_field(6, SIZE, SIZE, seed=13).astype(np.int16)
    reference_path = write_raster(tmp_path / "truth.tif", reference, fine_geotransform(), nodata=-9999)
    _, layers = run_and_load("ctstfm:assess", {
        "PREDICTED": scene["fine"], "REFERENCE": reference_path, "ERROR_MAP": str(tmp_path / "error.tif"),
        "OUTPUT_TABLE": str(tmp_path / "m.csv"), "OUTPUT_HTML": str(tmp_path / "m.html"),
    })
    renderer = layers["ERROR_MAP"].renderer()
    # band() is deprecated where inputBand() exists
    band = renderer.inputBand() if hasattr(renderer, "inputBand") else renderer.band()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer) and band == 1
    assert renderer.classificationMin() == 0.0 and renderer.classificationMax() > 0.0
    legend = renderer.legendSymbologyItems()
    assert len(legend) == 5
    lightness = [color.lightness() for _, color in legend]
    assert lightness == sorted(lightness, reverse=True)  # sequential: light = small error, dark = large


class _Blocks(HTMLParser):
    """The text of every paragraph and list item of an HTML fragment."""

    def __init__(self):
        super().__init__()
        self.blocks, self.open = [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("p", "li"):
            self.open = [tag, ""]

    def handle_data(self, data):
        if self.open is not None:
            self.open[1] += data

    def handle_endtag(self, tag):
        if tag in ("p", "li") and self.open is not None:
            self.blocks.append(tuple(self.open))
            self.open = None


def test_help_renders_as_whole_paragraphs_in_the_dialog(qgis_app):
    """QGIS's dialog wraps each line of the help in <p> (QgsProcessingAlgorithmDialogBase::formatHelp):
    the help must be one line, and every paragraph a whole sentence."""
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("ctstfm")
    algorithms = provider.algorithms()
    assert len(algorithms) >= 5
    for alg in algorithms:
        text = alg.shortHelpString()
        assert "\n" not in text, alg.id()
        parser = _Blocks()
        parser.feed(text)
        paragraphs = [body for tag, body in parser.blocks if tag == "p" and not body.startswith("qgis_process ")]
        assert len(paragraphs) >= 2, alg.id()
        for body in paragraphs:
            assert re.search(r"[.:)]$", body.strip()), f"{alg.id()}: paragraph ends mid-sentence: {body[-60:]!r}"
        headings = re.findall(r"<h3>(.*?)</h3>", text)
        assert {"Inputs", "Outputs", "Typical values", "Example"} <= set(headings), alg.id()
        assert len(headings) == len(set(headings)), f"{alg.id()}: a section twice: {headings}"
        assert f"qgis_process run {alg.id()} -- " in text  # the worked example


def test_help_reads_as_plain_text_in_qgis_process(installed_plugin_env):
    from conftest import run_qgis_process

    done = run_qgis_process(installed_plugin_env, "help", "ctstfm:fuse", timeout=120)
    assert done.returncode == 0, done.stderr
    description = done.stdout.split("Arguments")[0]
    assert "<p>" not in description and "<b>" not in description
    assert "Inputs\n------\n\n- Fine image at T0: e.g. Landsat" in description
    assert "    qgis_process run ctstfm:fuse -- FINE=" in description


def test_provider_settings_exist_and_are_honoured(qgis_app, scene, tmp_path):
    import shutil

    import processing
    from processing.core.ProcessingConfig import ProcessingConfig
    from qgis.core import QgsApplication

    from ctstfm_qgis import settings
    from ctstfm_qgis.algorithms.fuse import BUILT_IN_MODEL

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("ctstfm")
    names = {settings.ACTIVATE, settings.DEFAULT_DEVICE, settings.MODELS_FOLDER, settings.COMPOSITE}
    assert {name: ProcessingConfig.settings[name].group for name in names} == dict.fromkeys(names, provider.name())
    assert provider.isActive()
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(scene["model"], folder / "my_area.pt")
    shutil.copy(scene["model"], folder / "my_area.pt.checkpoint.pt")  # a resume file is no model
    try:
        provider.setActive(False)
        assert not provider.isActive() and ProcessingConfig.getSetting(settings.ACTIVATE) is False
        provider.setActive(True)
        ProcessingConfig.setSettingValue(settings.DEFAULT_DEVICE, 3)  # mps
        ProcessingConfig.setSettingValue(settings.MODELS_FOLDER, str(folder))
        fuse = registry.createAlgorithmById("ctstfm:fuse")
        assert fuse.parameterDefinition("DEVICE").defaultValue() == 3
        assert registry.createAlgorithmById("ctstfm:train").parameterDefinition("DEVICE").defaultValue() == 3
        assert fuse.parameterDefinition("MODEL_NAME").options() == [BUILT_IN_MODEL, "my_area"]
        result = processing.run("ctstfm:fuse", {
            **fuse_parameters(scene, scene["fine"], tmp_path / "by_name.tif"), "MODEL": None, "MODEL_NAME": "my_area",
        })
        from model_core.raster import read_metadata

        assert read_metadata(result["OUTPUT"])["CTSTFM_MODEL"] == str(folder / "my_area.pt")
    finally:
        provider.setActive(True)
        ProcessingConfig.setSettingValue(settings.DEFAULT_DEVICE, 0)
        ProcessingConfig.setSettingValue(settings.MODELS_FOLDER, "")
    assert registry.createAlgorithmById("ctstfm:fuse").parameterDefinition("DEVICE").defaultValue() == 0
