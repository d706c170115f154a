"""Bad inputs, table-driven: each gives one clear error naming the problem, and nothing is lost.

Every failing case runs through the core (and a representative subset through the
command line's ``main`` and QGIS's ``processing.run``); before and after it the
checksums of every file in the input folders and of every pre-existing output are
compared: no file may be created, changed or removed. Inputs that have a correct
answer (rasters smaller than the tile overlap: a 20-pixel strip, 1 x 1, 3 x 500)
must give it.
"""

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from helpers import UTM33, fine_geotransform, read_all, save_test_model, smooth_field, write_coarse, write_raster

from model_core.assess import assess
from model_core.classical_raster import starfm_rasters, temporal_difference_rasters
from model_core.errors import CtstfmError, OptionError
from model_core.fusion import fuse
from model_core.model_file import ModelFileError
from model_core.series import fuse_series
from model_core.training import train

SIZE = 40
TRAIN = dict(epochs=1, batch_size=2, patch_size=32, patches_per_epoch=2, width=8)


def write_model_payload(path, **changes):
    """A model file written with plain torch.save, its fields changed (a damaged or hostile file)."""
    import torch

    payload = torch.load(changes.pop("source"), weights_only=True)
    payload["config"] = dict(payload["config"], **changes)
    torch.save(payload, path)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sim_series):
    """Tiny inputs, good and bad, in one folder (``folder``), plus a training manifest of the shared series."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    gt = fine_geotransform()
    field = smooth_field(6, SIZE, SIZE, seed=3)
    p = {"folder": folder}
    p["fine"] = write_raster(folder / "fine.tif", field.astype(np.int16), gt, nodata=-9999)
    p["coarse"] = write_coarse(folder / "coarse.tif", SIZE * 30.0, SIZE * 30.0, 6, UTM33)
    p["fine_float"] = write_raster(folder / "fine_float.tif", (field * 1e-4).astype(np.float32), gt)
    p["fine_uint8"] = write_raster(folder / "fine_uint8.tif", np.clip(field / 20, 0, 250).astype(np.uint8), gt)
    p["coarse_float"] = write_raster(folder / "coarse_float.tif", (field * 1e-4).astype(np.float32), gt)
    p["no_crs"] = write_raster(folder / "no_crs.tif", field.astype(np.int16), gt, crs=None, nodata=-9999)
    ungeoreferenced = gdal.GetDriverByName("GTiff").Create(str(folder / "no_geotransform.tif"), SIZE, SIZE, 6,
                                                            gdal.GDT_Int16)
    ungeoreferenced.WriteRaster(0, 0, SIZE, SIZE, field.astype(np.int16).tobytes())
    ungeoreferenced = None
    p["no_geotransform"] = str(folder / "no_geotransform.tif")
    for name, (height, width) in {"strip": (20, 300), "pixel": (1, 1), "thin": (3, 500)}.items():
        small = smooth_field(6, height, width, seed=5).astype(np.int16)
        p[name] = write_raster(folder / f"{name}.tif", small, gt, nodata=-9999)
        p[f"{name}_coarse"] = write_coarse(folder / f"{name}_coarse.tif", width * 30.0, height * 30.0, 6, UTM33)
    p["model"] = save_test_model(folder / "identity.pt", "identity")
    p["text_model"] = str(folder / "notes.pt")
    Path(p["text_model"]).write_text("this is a text file, not weights\n")
    p["wide_model"] = write_model_payload(folder / "wide.pt", source=p["model"], width=200000)
    p["kernel_model"] = write_model_payload(folder / "kernels.pt", source=p["model"], kernel_sizes=[3, 5, 999])
    p["deep_model"] = write_model_payload(folder / "deep.pt", source=p["model"], width=256, encoder_blocks=16,
                                          fusion_blocks=16, norm_groups=4)
    p["link_to_fine"] = str(folder / "link_to_fine.tif")
    os.symlink(p["fine"], p["link_to_fine"])
    p["hardlink_to_coarse"] = str(folder / "hardlink_to_coarse.tif")
    os.link(p["coarse"], p["hardlink_to_coarse"])
    p["empty_model"] = str(folder / "empty.pt")
    Path(p["empty_model"]).write_bytes(b"")
    p["heads_model"] = write_model_payload(folder / "heads.pt", source=p["model"], heads="two")
    # A manifest named like the epoch report of "series.pt" (the data-loss case of the issue).
    rows = [f"{item.date.isoformat()},{item.fine},{item.coarse}" for item in sim_series.items]
    p["manifest"] = str(folder / "series_training.csv")
    Path(p["manifest"]).write_text("date,fine,coarse\n" + "\n".join(rows) + "\n")
    p["series_fine"] = str(sim_series.items[0].fine)
    p["float_manifest"] = str(folder / "float_series.csv")
    Path(p["float_manifest"]).write_text(
        f"date,fine,coarse\n2021-04-01,{p['fine_float']},{p['coarse']}\n2021-04-17,{p['fine_float']},{p['coarse']}\n"
    )
    # Landsat Collection 2 Level-2 surface reflectance: DN = (reflectance + 0.2) / 0.0000275, no dark pixels.
    p["fine_c2l2"] = write_raster(folder / "fine_c2l2.tif", ((field * 1e-4 + 0.2) / 2.75e-5).astype(np.uint16), gt,
                                  nodata=0)
    # Fill values that the files do not declare as nodata: Landsat's -9999 in a fine image's corner, MODIS's -28672
    # in a coarse image's.
    with_fill = field.astype(np.int16)
    with_fill[:, : SIZE // 3, : SIZE // 2] = -9999
    p["fine_fill"] = write_raster(folder / "fine_fill.tif", with_fill, gt)
    p["coarse_fill"] = write_coarse(folder / "coarse_fill.tif", SIZE * 30.0, SIZE * 30.0, 6, UTM33, nodata=None)
    coarse_fill = gdal.Open(p["coarse_fill"], gdal.GA_Update)
    for index in range(1, coarse_fill.RasterCount + 1):
        band = coarse_fill.GetRasterBand(index)
        values = band.ReadAsArray()
        values[: values.shape[0] // 2] = -28672
        band.WriteArray(values)
    coarse_fill = None
    p["fill_series"] = str(folder / "fill_series.csv")
    Path(p["fill_series"]).write_text(
        f"date,fine,coarse\n2021-04-01,{p['fine']},{p['coarse']}\n2021-04-09,,{p['coarse']}\n"
        f"2021-04-17,{p['fine_fill']},{p['coarse']}\n"
    )
    # A series to fill (the middle date has only its coarse image) whose fine images are float reflectance.
    p["float_series"] = str(folder / "float_fill.csv")
    Path(p["float_series"]).write_text(
        f"date,fine,coarse\n2021-04-01,{p['fine_float']},{p['coarse']}\n2021-04-09,,{p['coarse']}\n"
        f"2021-04-17,{p['fine_float']},{p['coarse']}\n"
    )
    p["sim_folder"] = str(sim_series.out_dir)
    return p


def checksums(*folders, sidecars=True):
    """``{path: sha256}`` of every file under ``folders`` (links by their target's content); without
    ``sidecars``, GDAL's ``.aux.xml`` side files are left out."""
    sums = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                if not sidecars and name.endswith(".aux.xml"):
                    continue
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    sums[path] = hashlib.sha256(handle.read()).hexdigest()
    return sums


@pytest.fixture
def out(tmp_path):
    """An output folder holding one pre-existing output (it must survive every failed run)."""
    (tmp_path / "existing.tif").write_bytes(b"an earlier result")
    (tmp_path / "folder.tif").mkdir()
    return tmp_path


# (id, call(inputs, out) -> None, expected error class, regex the message must match)
CASES = [
    # 1. No output is ever an input (real paths, links, manifests and the rasters they list) or another output.
    ("train-out-is-manifest", lambda p, o: train(p["manifest"], p["manifest"], **TRAIN), CtstfmError,
     r"output model .*series_training\.csv' is the manifest"),
    ("train-report-is-manifest", lambda p, o: train(p["manifest"], Path(p["folder"]) / "series.pt", **TRAIN),
     CtstfmError, r"training report .*series_training\.csv' is the manifest"),
    ("train-out-is-listed-raster", lambda p, o: train(p["manifest"], p["series_fine"], **TRAIN), CtstfmError,
     r"is the fine image of \d{4}-\d\d-\d\d"),
    ("train-out-is-init-model", lambda p, o: train(p["manifest"], p["model"], init_model=p["model"], **TRAIN),
     CtstfmError, "is the initial model"),
    ("fuse-out-is-fine", lambda p, o: fuse(p["fine"], p["coarse"], p["model"], p["fine"]), CtstfmError,
     "is the fine image"),
    ("fuse-out-is-link-to-fine", lambda p, o: fuse(p["fine"], p["coarse"], p["model"], p["link_to_fine"]),
     CtstfmError, "is the fine image"),
    ("fuse-out-is-model", lambda p, o: fuse(p["fine"], p["coarse"], p["model"], p["model"]), CtstfmError,
     "must be a GeoTIFF"),
    ("fuse-out-is-hardlink-to-coarse",
     lambda p, o: fuse(p["fine"], p["coarse"], p["model"], p["hardlink_to_coarse"]), CtstfmError,
     "is the coarse image"),
    ("fuse-out-is-a-folder", lambda p, o: fuse(p["fine"], p["coarse"], p["model"], o / "folder.tif"), CtstfmError,
     "is a folder"),
    ("td-out-is-coarse-t1-relative",
     lambda p, o: temporal_difference_rasters(p["fine"], p["coarse"], p["coarse_float"],
                                              os.path.relpath(p["coarse_float"])),
     CtstfmError, "is the coarse image at T1"),
    ("assess-table-is-error-map",
     lambda p, o: assess(p["fine"], p["fine"], error_map_path=o / "e.tif", table_csv=o / "e.tif"), CtstfmError,
     "also the error map"),
    ("assess-html-is-reference", lambda p, o: assess(p["fine"], p["fine_float"], html=p["fine_float"]),
     CtstfmError, "is the reference image"),
    # 6. GeoTIFFs only under GeoTIFF names.
    ("fuse-out-jpg", lambda p, o: fuse(p["fine"], p["coarse"], p["model"], o / "fused.jpg"), CtstfmError,
     r"must be a GeoTIFF file name ending in \.tif"),
    ("td-out-no-extension", lambda p, o: temporal_difference_rasters(p["fine"], p["coarse"], p["coarse"], o / "fused"),
     CtstfmError, "must be a GeoTIFF"),
    ("assess-error-map-png", lambda p, o: assess(p["fine"], p["fine"], error_map_path=o / "error.png"),
     CtstfmError, "must be a GeoTIFF"),
    # 5. Tiles below the minimum.
    ("fuse-tile-1", lambda p, o: fuse(p["fine"], p["coarse"], p["model"], o / "f.tif", tile=1, overlap=0),
     CtstfmError, r"tile size 1 is too small: tiles must be at least 32 pixels"),
    ("td-tile-8", lambda p, o: temporal_difference_rasters(p["fine"], p["coarse"], p["coarse"], o / "f.tif", tile=8),
     CtstfmError, "at least 32 pixels"),
    ("starfm-tile-16",
     lambda p, o: starfm_rasters(p["fine"], p["coarse"], p["coarse"], o / "f.tif", window=3, tile=16),
     CtstfmError, "at least 32 pixels"),
    # 3. Model files are user input.
    ("model-width-200000", lambda p, o: fuse(p["fine"], p["coarse"], p["wide_model"], o / "f.tif"), ModelFileError,
     r"wide\.pt has an unusable configuration: Network setting width=200000 is out of range; .* from 1 to 256"),
    ("model-kernel-999", lambda p, o: fuse(p["fine"], p["coarse"], p["kernel_model"], o / "f.tif"), ModelFileError,
     r"kernels\.pt .*kernel_sizes=\(3, 5, 999\) is out of range"),
    ("model-too-many-parameters", lambda p, o: fuse(p["fine"], p["coarse"], p["deep_model"], o / "f.tif"),
     ModelFileError, r"deep\.pt .* parameters, more than the 50,000,000 allowed"),
    ("model-is-text", lambda p, o: fuse(p["fine"], p["coarse"], p["text_model"], o / "f.tif"), ModelFileError,
     r"notes\.pt is not a CTSTFM model file \(it is a text file\)"),
    ("model-is-empty", lambda p, o: fuse(p["fine"], p["coarse"], p["empty_model"], o / "f.tif"), ModelFileError,
     r"empty\.pt is not a CTSTFM model file \(it is an empty file\)"),
    ("model-heads-text", lambda p, o: fuse(p["fine"], p["coarse"], p["heads_model"], o / "f.tif"), ModelFileError,
     r"heads\.pt .*heads='two' is out of range; it must be a whole number from 1 to 64"),
    ("model-is-raster", lambda p, o: fuse(p["fine"], p["coarse"], p["fine"], o / "f.tif"), ModelFileError,
     r"fine\.tif is not a CTSTFM model file \(it is a TIFF image\)"),
    ("init-model-is-raster", lambda p, o: train(p["manifest"], o / "m.pt", init_model=p["coarse"], **TRAIN),
     ModelFileError, r"coarse\.tif is not a CTSTFM model file \(it is a TIFF image\)"),
    # 4. Scales that cannot be reflectance, or disagree.
    ("fuse-float-fine", lambda p, o: fuse(p["fine_float"], p["coarse"], p["model"], o / "f.tif"), OptionError,
     r"fine image .* look like reflectance \(0-1\)\. Set scale to 1"),
    ("fuse-uint8-fine", lambda p, o: fuse(p["fine_uint8"], p["coarse"], p["model"], o / "f.tif"), OptionError,
     r"is uint8: .* only up to 0\.0255"),
    ("td-coarse-float", lambda p, o: temporal_difference_rasters(p["fine"], p["coarse_float"], p["coarse_float"],
                                                                 o / "f.tif", coarse_scale=1e-4),
     OptionError, r"coarse image at T0 .* look like reflectance"),
    ("td-fine-and-coarse-differ",
     lambda p, o: temporal_difference_rasters(p["fine"], p["coarse_float"], p["coarse_float"], o / "f.tif",
                                              coarse_scale=0.02),
     OptionError, r"are on different scales: their mean reflectances differ"),
    ("train-float-fine", lambda p, o: train(p["float_manifest"], o / "m.pt", **TRAIN), OptionError,
     r"fine image of 2021-04-01 .* look like reflectance"),
    ("td-int16-at-tiny-scale",
     lambda p, o: temporal_difference_rasters(p["fine"], p["coarse"], p["coarse"], o / "f.tif", coarse_scale=1e-6),
     OptionError, r"is int16: at a reflectance scale of 1e-06 \(coarse_scale\) it can hold reflectance only up to"),
    ("fuse-nan-coarse-scale",
     lambda p, o: fuse(p["fine"], p["coarse"], p["model"], o / "f.tif", coarse_scale=float("nan")), OptionError,
     r"reflectance scale \(coarse_scale\) must be a positive number \(got nan\)"),
    ("fuse-c2l2-fine", lambda p, o: fuse(p["fine_c2l2"], p["coarse"], p["model"], o / "f.tif"), OptionError,
     r"fine image .*fine_c2l2\.tif' has no dark pixels: .* Landsat Collection 2 Level-2 .* convert the image"),
    ("td-c2l2-fine-at-its-scale",
     lambda p, o: temporal_difference_rasters(p["fine_c2l2"], p["coarse"], p["coarse"], o / "f.tif", scale=2.75e-5,
                                              coarse_scale=1e-4),
     OptionError, r"at least DN \d+ \(reflectance 0\.2\d* at scale 2\.75e-05\)"),
    ("series-float-fine", lambda p, o: fuse_series(p["float_series"], p["model"], o / "series"), OptionError,
     r"fine image of 2021-04-01 .* look like reflectance \(0-1\)\. Set scale to 1"),
    ("series-coarse-read-as-reflectance",
     lambda p, o: fuse_series(p["float_series"], p["model"], o / "series", scale=1, coarse_scale=1),
     OptionError, r"coarse image of 2021-04-01 .* Set coarse_scale to 0\.0001"),
    # 4. (continued) Fill values the file does not declare as nodata would be read as ground.
    ("fuse-fine-fill-undeclared", lambda p, o: fuse(p["fine_fill"], p["coarse"], p["model"], o / "f.tif"),
     CtstfmError, r"fine image .*fine_fill\.tif' holds the value -9999 in \d.* % of the pixels sampled \(band 1\), "
     r"reflectance -0\.9999 at scale 0\.0001: .* declares no nodata value, so it is most likely the product's fill "
     r"value\. Declare it as nodata \(gdal_edit\.py -a_nodata -9999 "),
    ("td-coarse-fill-undeclared",
     lambda p, o: temporal_difference_rasters(p["fine"], p["coarse"], p["coarse_fill"], o / "f.tif"), CtstfmError,
     r"coarse image at T1 .*coarse_fill\.tif' holds the value -28672 .*\(gdal_edit\.py -a_nodata -28672"),
    ("series-fine-fill-undeclared", lambda p, o: fuse_series(p["fill_series"], p["model"], o / "series"),
     CtstfmError, r"fine image of 2021-04-17 .*fine_fill\.tif' holds the value -9999"),
    ("fuse-negative-scale", lambda p, o: fuse(p["fine"], p["coarse"], p["model"], o / "f.tif", scale=-1),
     OptionError, "must be a positive number"),
    # 6. Smaller things: georeferencing and CRS named as they are; option names neutral in the core.
    ("fuse-no-geotransform", lambda p, o: fuse(p["no_geotransform"], p["coarse"], p["model"], o / "f.tif"),
     CtstfmError, r"no_geotransform\.tif' has no georeferencing"),
    ("assess-pred-no-crs", lambda p, o: assess(p["no_crs"], p["fine"]), CtstfmError, r"no_crs\.tif' has no CRS"),
    ("train-epochs-0", lambda p, o: train(p["manifest"], o / "m.pt", **dict(TRAIN, epochs=0)), OptionError,
     r"^epochs is 0; give a value of at least 1\.$"),
]


@pytest.mark.parametrize("call, error, pattern", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_refused_and_nothing_changes(inputs, out, call, error, pattern):
    before = checksums(inputs["folder"], inputs["sim_folder"], out)
    with pytest.raises(error, match=pattern) as caught:
        call(inputs, out)
    message = str(caught.value)
    assert "\n" not in message and not any(name in message for name in ("EPOCHS", "OUTPUT_MODEL", "RESUME", "--"))
    assert checksums(inputs["folder"], inputs["sim_folder"], out) == before


def test_raster_smaller_than_the_overlap_gives_the_right_answer(inputs, out):
    before = checksums(inputs["folder"])
    for name in ("strip", "pixel", "thin"):
        fine, coarse = inputs[name], inputs[f"{name}_coarse"]
        expected = read_all(fine)
        # The identity model returns the fine image exactly; F0 + C1 - C0 with C0 = C1 is F0.
        fuse(fine, coarse, inputs["model"], out / f"{name}_fused.tif", overlap=32)
        temporal_difference_rasters(fine, coarse, coarse, out / f"{name}_td.tif", overlap=32)
        starfm_rasters(fine, coarse, coarse, out / f"{name}_starfm.tif", window=5)
        assert np.array_equal(read_all(out / f"{name}_fused.tif"), expected), name
        assert np.array_equal(read_all(out / f"{name}_td.tif"), expected), name
        # STARFM with C0 = C1 averages F0 over similar neighbours: close to F0, valid everywhere.
        starfm_error = np.abs(read_all(out / f"{name}_starfm.tif").astype(int) - expected)
        assert starfm_error.mean() < 60 and (read_all(out / f"{name}_starfm.tif") != -9999).all(), name
        result = assess(out / f"{name}_fused.tif", fine, table_csv=out / f"{name}.csv")
        assert result["mae"]["mean"] == 0.0 and result["counts"]["pixels"] == expected.shape[1] * expected.shape[2]
    assert checksums(inputs["folder"]) == before


# --------------------------------------------------------------------------- the faces


def run_cli(capsys, *argv):
    from model_core.cli import main

    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit:  # argparse refuses values outside the spec's range itself
        code = exit.code
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if code == 2 and "usage:" in err else err


def test_command_line_speaks_its_own_names(inputs, out, capsys):
    before = checksums(inputs["folder"], inputs["sim_folder"], out)
    fuse_args = ["fuse", "--fine", inputs["fine"], "--coarse", inputs["coarse"], "--model", inputs["model"], "--quiet"]
    cases = [
        (fuse_args + ["--out", out / "fused.jpg"], r"^error: The output .*fused\.jpg' must be a GeoTIFF"),
        (fuse_args + ["--out", out / "fused"], r"^error: The output .*fused' must be a GeoTIFF"),
        (["fuse", "--fine", inputs["fine"], "--coarse", inputs["coarse"], "--model", inputs["text_model"],
          "--out", out / "f.tif", "--quiet"], r"^error: .*notes\.pt is not a CTSTFM model file \(it is a text file\)"),
        (fuse_args + ["--out", out / "f.tif", "--tile", "4"], r"argument --tile: 4 is below the minimum 32$"),
        (["fuse", "--fine", inputs["fine_float"], "--coarse", inputs["coarse"], "--model", inputs["model"],
          "--out", out / "f.tif", "--quiet"], r"Set --scale to 1 if it holds reflectance"),
        (["train", "--manifest", inputs["manifest"], "--out", out / "m.pt", "--epochs", "0", "--quiet"],
         r"argument --epochs: 0 is below the minimum 1$"),
        (["train", "--manifest", inputs["manifest"], "--out", out / "m.pt", "--max-gap-days", "1", "--quiet",
          "--epochs", "1", "--width", "8"], r"raise --max-gap-days or set it to 0"),
        (["train", "--manifest", inputs["manifest"], "--out", Path(inputs["folder"]) / "series.pt", "--quiet"],
         r"^error: The training report .* is the manifest"),
    ]
    for argv, pattern in cases:
        code, err = run_cli(capsys, *argv)
        assert code == 2 and len(err.splitlines()) == 1, (argv, err)
        assert re.search(pattern, err), (pattern, err)
        assert "EPOCHS" not in err and "OUTPUT_MODEL" not in err and "RESUME" not in err
    assert checksums(inputs["folder"], inputs["sim_folder"], out) == before


def test_qgis_refuses_the_same_inputs_in_its_own_names(qgis_app, inputs, out):
    import processing
    from qgis.core import QgsProcessingException

    before = checksums(inputs["folder"], inputs["sim_folder"], out)
    train_params = {"MANIFEST": inputs["manifest"], "EPOCHS": 1, "BATCH_SIZE": 2, "PATCH_SIZE": 32,
                    "PATCHES_PER_EPOCH": 2, "WIDTH": 8, "DEVICE": 1}
    cases = [
        ("ctstfm:train", dict(train_params, OUTPUT_MODEL=str(Path(inputs["folder"]) / "series.pt")),
         r"training report .* is the manifest"),
        ("ctstfm:train", dict(train_params, OUTPUT_MODEL=str(out / "m.pt"), MAX_GAP_DAYS=1),
         r"raise MAX_GAP_DAYS or set it to 0"),
        ("ctstfm:fuse", {"FINE": inputs["fine"], "COARSE": inputs["coarse"], "MODEL": inputs["text_model"],
                         "OUTPUT": str(out / "f.tif")}, r"not a CTSTFM model file \(it is a text file\)"),
        ("ctstfm:fuse", {"FINE": inputs["fine_float"], "COARSE": inputs["coarse"], "MODEL": inputs["model"],
                         "OUTPUT": str(out / "f.tif")}, r"Set SCALE to 1 if it holds reflectance"),
        ("ctstfm:temporaldifference", {"FINE": inputs["fine"], "COARSE_T0": inputs["coarse"],
                                       "COARSE_T1": inputs["coarse"], "OUTPUT": inputs["coarse"]},
         "is the coarse image at T0"),
        ("ctstfm:temporaldifference", {"FINE": inputs["fine"], "COARSE_T0": inputs["coarse"],
                                       "COARSE_T1": inputs["coarse"], "OUTPUT": str(out / "f.png")},
         "must be a GeoTIFF"),
    ]
    for algorithm, params, pattern in cases:
        with pytest.raises(QgsProcessingException, match=pattern) as caught:
            processing.run(algorithm, params)
        assert "--" not in str(caught.value), str(caught.value)
    assert checksums(inputs["folder"], inputs["sim_folder"], out) == before
    # A 20-pixel strip works in QGIS too, and gives F0 when C0 = C1.
    result = processing.run("ctstfm:temporaldifference", {
        "FINE": inputs["strip"], "COARSE_T0": inputs["strip_coarse"], "COARSE_T1": inputs["strip_coarse"],
        "OVERLAP": 32, "OUTPUT": str(out / "strip.tif")})
    assert np.array_equal(read_all(result["OUTPUT"]), read_all(inputs["strip"]))


def test_qgis_process_prints_our_error_no_more_often_than_qgis_prints_its_own(installed_plugin_env, inputs, out):
    """qgis_process repeats every error (QGIS logs it, prints it as ERROR:, logs it again); the plugin adds
    no copy of its own: ours appears exactly as often as the message of QGIS's C++ native:raiseexception."""
    from conftest import run_qgis_process

    # qgis_process loads each input as a map layer, and QGIS then stores the layer's statistics in a GDAL
    # side file (fine.tif.aux.xml), as it does for its own native:rasterlayerproperties: only the side files
    # may appear; every input and output file is unchanged.
    before = checksums(inputs["folder"], out, sidecars=False)
    ours = run_qgis_process(
        installed_plugin_env, "run", "ctstfm:temporaldifference", "--", f"FINE={inputs['fine']}",
        f"COARSE_T0={inputs['coarse']}", f"COARSE_T1={inputs['coarse']}", f"OUTPUT={inputs['coarse']}",
    )
    theirs = run_qgis_process(installed_plugin_env, "run", "native:raiseexception", "--", "MESSAGE=boom")
    assert ours.returncode != 0 and theirs.returncode != 0

    def copies(result):
        """How many times the error (the ERROR: line's text) is printed, with or without the prefix."""
        lines = (result.stderr + result.stdout).splitlines()
        message = next(line for line in lines if line.startswith("ERROR:\t"))[len("ERROR:\t"):]
        return message, sum(line in (message, "ERROR:\t" + message) for line in lines)

    message, count = copies(ours)
    assert "is the coarse image at T0, one of the inputs" in message
    assert count == copies(theirs)[1], (ours.stderr, theirs.stderr)
    assert checksums(inputs["folder"], out, sidecars=False) == before


def test_atomic_writes_keep_the_old_file_until_the_new_one_is_complete(tmp_path):
    from model_core.outputs import atomic_open, atomic_torch_save, atomic_write_text

    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["table.csv"]
    with pytest.raises(CtstfmError, match=r"Writing '.*nowhere.*' failed"):
        atomic_write_text(tmp_path / "nowhere" / "x.csv", "text")
    atomic_torch_save({"a": 1}, tmp_path / "state.pt")
    assert sorted(os.listdir(tmp_path)) == ["state.pt", "table.csv"]
    assert oct(os.stat(tmp_path / "state.pt").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_few_saturated_pixels_are_not_taken_for_a_fill_value(inputs, tmp_path):
    """Sentinel-2 marks saturation with 65535: a bright cloud's few such pixels fuse; a third of the image is a
    fill value to declare."""
    field = read_all(inputs["fine"]).astype(np.uint16)
    field[:, 5:7, 5:8] = 65535
    few = write_raster(tmp_path / "few.tif", field, fine_geotransform(), nodata=0)
    fuse(few, inputs["coarse"], inputs["model"], tmp_path / "fused.tif")
    field[:, : SIZE // 3] = 65535
    many = write_raster(tmp_path / "many.tif", field, fine_geotransform(), nodata=0)
    with pytest.raises(CtstfmError, match=r"holds the value 65535 .* declares another nodata value \(0\)"):
        fuse(many, inputs["coarse"], inputs["model"], tmp_path / "refused.tif")
    assert not (tmp_path / "refused.tif").exists()
