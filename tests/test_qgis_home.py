"""At home in QGIS: styled outputs, readable help, the provider's settings, results a user sees.

Everything runs in the real headless QGIS (``qgis_app``): outputs are loaded into the project with
``processing.runAndLoadResults``, the path the dialog takes (``handleAlgorithmResults``), so the
post-processors QGIS calls are the ones tested.
"""

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from test_fusion import save_test_model
from test_raster import SINUSOIDAL, fine_geotransform, smooth_field, write_coarse, write_raster

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
