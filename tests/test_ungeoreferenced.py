"""Images without georeferencing, as fusion benchmark datasets often come, are read pixel for pixel.

The Landsat/MODIS sets fusion papers use (CIA, LGC and their many copies) are commonly passed around as ENVI
``.bil`` / ``.dat`` files or plain TIFFs with no geotransform and no CRS, the MODIS images already resampled onto
the Landsat grid. Such a set trains, fuses, fills a series and is assessed like a georeferenced one (the same
pixels give the same result), and every output has no georeferencing either (not GDAL's default grid written as
if it were one). A coarse image of another size cannot be placed on such a grid and is refused, saying why.
"""

import numpy as np
import pytest
from osgeo import gdal

from model_core.assess import assess
from model_core.errors import CtstfmError
from model_core.fusion import fuse
from model_core.series import fuse_series
from model_core.training import train

from helpers import read_all


def strip_georeferencing(source, target):
    """``source`` (a GeoTIFF) as an ENVI BIL file with no geotransform and no CRS, band names kept."""
    gdal.Translate(str(target), str(source), format="ENVI", creationOptions=["INTERLEAVE=BIL"])
    header = target.with_suffix(".hdr")
    kept = [line for line in header.read_text().splitlines()
            if not line.startswith(("map info", "coordinate system string", "projection info"))]
    header.write_text("\n".join(kept) + "\n")
    for leftover in target.parent.glob(f"{target.name}.aux.xml"):
        leftover.unlink()
    return str(target)


def has_georeferencing(path):
    dataset = gdal.Open(str(path))
    return dataset.GetGeoTransform(can_return_null=True) is not None or bool(dataset.GetProjection())


@pytest.fixture(scope="module")
def benchmark_set(make_series, tmp_path_factory):
    """Three dates of a green/red/NIR series, coarse images on the fine grid: the GeoTIFFs and their ENVI copies."""
    series = make_series(kind="fields", count=3, size=64, seed=21, sensor="realistic", coarse_grid="fine",
                         bands=("green", "red", "nir"))
    folder = tmp_path_factory.mktemp("benchmark_set")
    plain = {}
    for item in series.items:
        day = item.date.isoformat()
        plain[day] = (strip_georeferencing(item.fine, folder / f"L_{day}.bil"),
                      strip_georeferencing(item.coarse, folder / f"M_{day}.bil"))
    (folder / "train.csv").write_text("date,fine,coarse\n" + "".join(
        f"{day},{fine},{coarse}\n" for day, (fine, coarse) in list(plain.items())[:2]))
    return series, plain, folder


def test_a_set_without_georeferencing_trains_fuses_and_fills_a_series_like_a_georeferenced_one(benchmark_set,
                                                                                               tmp_path):
    series, plain, folder = benchmark_set
    (d1, (f1, c1)), (d2, (f2, c2)), (d3, (f3, c3)) = plain.items()
    assert not has_georeferencing(f1) and has_georeferencing(series.items[0].fine)

    model = tmp_path / "model.pt"
    train(str(folder / "train.csv"), str(model), epochs=1, batch_size=2, patch_size=32, patches_per_epoch=2)
    assert model.exists()

    fused = tmp_path / "fused.tif"
    fuse(f2, c3, str(model), str(fused), coarse_t0_path=c2)
    georeferenced = tmp_path / "fused_georeferenced.tif"
    original = {item.date.isoformat(): item for item in series.items}
    fuse(str(original[d2].fine), str(original[d3].coarse), str(model), str(georeferenced),
         coarse_t0_path=str(original[d2].coarse))
    assert not has_georeferencing(fused) and has_georeferencing(georeferenced)
    np.testing.assert_array_equal(read_all(fused), read_all(georeferenced))

    manifests = {}
    for name, files in (("plain", plain), ("georeferenced", {day: (str(item.fine), str(item.coarse))
                                                              for day, item in original.items()})):
        (a, b, c) = files.values()
        manifests[name] = tmp_path / f"{name}.csv"
        manifests[name].write_text(f"date,fine,coarse\n{d1},{a[0]},{a[1]}\n{d2},,{b[1]}\n{d3},{c[0]},{c[1]}\n")
    results = {name: fuse_series(str(path), None, str(tmp_path / name)) for name, path in manifests.items()}
    (filled,) = results["plain"].files.values()
    assert not has_georeferencing(filled) and not has_georeferencing(results["plain"].stack)
    assert gdal.Open(str(results["plain"].stack)).RasterCount == 3
    np.testing.assert_array_equal(read_all(filled), read_all(results["georeferenced"].files[d2]))

    error_map = tmp_path / "error.tif"
    report = assess(str(filled), f2, error_map_path=str(error_map))
    assert report["mae"]["mean"] == assess(results["georeferenced"].files[d2], str(original[d2].fine))["mae"]["mean"]
    assert not has_georeferencing(error_map)


def test_a_coarse_image_of_another_size_without_georeferencing_is_refused_with_the_reason(benchmark_set, tmp_path):
    series, plain, folder = benchmark_set
    (_, (fine, _)), (_, (_, coarse)), _ = plain.items()
    smaller = strip_georeferencing(series.items[1].coarse, tmp_path / "smaller_source.bil")
    gdal.Translate(str(tmp_path / "smaller.tif"), smaller, width=32, height=32)
    with pytest.raises(CtstfmError, match=r"smaller\.tif' cannot be placed on the fine image's grid\. Images without "
                                          r"georeferencing are read pixel for pixel, so each must have the fine "
                                          r"image's size \(64 x 64 px\)"):
        fuse(fine, str(tmp_path / "smaller.tif"), None, str(tmp_path / "f.tif"))
    assert not (tmp_path / "f.tif").exists()


def test_qgis_fuses_a_set_without_georeferencing(qgis_app, benchmark_set, tmp_path):
    import processing

    _, plain, _ = benchmark_set
    (_, _), (_, (fine, coarse_t0)), (_, (_, coarse)) = plain.items()
    out = tmp_path / "fused.tif"
    result = processing.run("ctstfm:fuse", {"FINE": fine, "COARSE": coarse, "COARSE_T0": coarse_t0,
                                            "OUTPUT": str(out)})
    assert result["OUTPUT"] == str(out) and not has_georeferencing(out)
    core = tmp_path / "core.tif"
    fuse(fine, coarse, None, str(core), coarse_t0_path=coarse_t0)
    np.testing.assert_array_equal(read_all(out), read_all(core))
