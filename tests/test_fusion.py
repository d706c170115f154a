"""model_core.fusion.fuse end to end on small rasters, and the ``fuse`` command line.

Two deterministic test models (seed 0, width 8, one encoder and one fusion block):
``identity``: the network with ``predict_residual`` and its last layer zeroed, so
its output is exactly the fine input (checks grids, bands, scale and nodata
bit for bit); ``residual``: the fine input plus a random-weight network's
correction, with the edge effects of a real CNN (checks seams and tiling).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT, CancelAfter
from helpers import (
    UTM33,
    border_gradient_ratio,
    fine_geotransform,
    read_all,
    save_test_model,
    smooth_field,
    MODIS_BAND_NAMES,
    write_coarse,
    write_raster,
)

from model_core.device import resolve_device
from model_core.errors import Cancelled, CtstfmError
from model_core.fusion import TileModel, fuse
from model_core.model_file import ModelFileError
from model_core.progress import Progress
from model_core.raster import FLOAT_NODATA, RasterInfo, read_metadata
from model_core.raster_job import RasterResult
from model_core.tiling import plan_tiles

SIZE = 160  # fine pixels a side


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fusion")
    fine = smooth_field(6, SIZE, SIZE, seed=0).astype(np.int16)
    fine[:, :12, :20] = -9999  # a nodata corner
    paths = {
        "folder": folder,
        "fine_array": fine,
        "fine": write_raster(folder / "fine.tif", fine, fine_geotransform(), nodata=-9999,
                             descriptions=["B2", "B3", "B4", "B5", "B6", "B7"]),
        # MODIS's seven bands, named as MOD09 names them (matched to the model's by name).
        "coarse": write_coarse(folder / "coarse_utm.tif", SIZE * 30.0, SIZE * 30.0, 7, UTM33,
                               descriptions=MODIS_BAND_NAMES),
        "coarse_4326": write_coarse(folder / "coarse_4326.tif", SIZE * 30.0, SIZE * 30.0, 6, 4326),
        "identity": save_test_model(folder / "identity.pt", "identity"),
        "residual": save_test_model(folder / "residual.pt", "residual"),
    }
    return paths


def listing(folder):
    return sorted(os.listdir(folder))


def test_identity_model_reproduces_the_fine_grid_bands_and_nodata(data, tmp_path):
    out = tmp_path / "fused.tif"
    result = fuse(data["fine"], data["coarse"], data["identity"], out, tile=96, overlap=32)
    assert isinstance(result, RasterResult) and result.out_path == str(out) and result.device == "cpu"
    assert result.coarse_warped and result.tiles == 4 and result.megapixels_per_second > 0
    assert listing(tmp_path) == ["fused.tif"]
    fine_info, out_info = RasterInfo.read(data["fine"]), RasterInfo.read(out)
    assert out_info.same_grid(fine_info) and out_info.dtype == "int16" and out_info.nodata == (-9999.0,) * 6
    assert out_info.descriptions == ("B2", "B3", "B4", "B5", "B6", "B7")
    fused = read_all(out)
    expected = data["fine_array"].copy()
    expected[expected < 0] = 0  # negative reflectance is clipped
    expected[:, :12, :20] = -9999
    np.testing.assert_array_equal(fused, expected)
    meta = read_metadata(out)
    assert meta["CTSTFM_MODEL"] == data["identity"] and meta["CTSTFM_TILE"] == "96" and meta["CTSTFM_OVERLAP"] == "32"
    assert meta["CTSTFM_FINE_T0"] == data["fine"] and meta["CTSTFM_COARSE_T1"] == data["coarse"]
    assert json.loads(meta["CTSTFM_MODEL_PROVENANCE"]) == {"seed": 0, "test": "identity"}
    assert meta["CTSTFM_RESAMPLING"] == "bilinear" and meta["CTSTFM_REFLECTANCE_SCALE"] == "0.0001"


def test_float32_cog_output_has_no_nan_and_plausible_values(data, tmp_path):
    out = tmp_path / "fused.tif"
    fuse(
        data["fine"], data["coarse"], data["residual"], out, tile=256, overlap=32, output_type="float32",
        output_format="COG", coarse_bands="3,4,1,2,6,7", batch_size=2,
    )
    dataset = gdal.Open(str(out))
    assert dataset.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert dataset.GetRasterBand(1).DataType == gdal.GDT_Float32
    fused = read_all(out)
    assert np.isfinite(fused).all()
    assert (fused[:, :12, :20] == FLOAT_NODATA).all() and (dataset.GetRasterBand(1).GetNoDataValue() == FLOAT_NODATA)
    valid = fused[:, 12:, :]
    assert valid.min() >= 0.0 and 0.05 < valid.mean() < 0.6 and valid.max() < 2.0
    assert read_metadata(out)["CTSTFM_COARSE_BANDS"] == "3,4,1,2,6,7"


def test_coarse_in_another_crs_matches_the_same_coarse_prewarped(data, tmp_path):
    grid = RasterInfo.read(data["fine"])
    prewarped = str(tmp_path / "prewarped.tif")
    gdal.Warp(
        prewarped, data["coarse_4326"], outputBounds=grid.bounds, width=grid.width, height=grid.height,
        dstSRS=grid.crs_wkt, resampleAlg="bilinear", srcNodata=-9999, dstNodata=-9999, outputType=gdal.GDT_Float32,
    )
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    ra = fuse(data["fine"], data["coarse_4326"], data["residual"], a, tile=256, output_type="float32")
    rb = fuse(data["fine"], prewarped, data["residual"], b, tile=256, output_type="float32")
    assert ra.coarse_warped and not rb.coarse_warped
    assert read_metadata(b)["CTSTFM_RESAMPLING"].startswith("none")
    fa, fb = read_all(a), read_all(b)
    assert np.abs(fa - fb).mean() < 1e-4 and np.abs(fa - fb).max() < 0.01


def test_tiles_are_seamless_and_agree_with_the_whole_image(data, tmp_path):
    outputs = {}
    for name, tile, overlap in (("whole", 256, 32), ("tiled", 96, 32), ("no_overlap", 96, 0)):
        out = tmp_path / f"{name}.tif"
        fuse(data["fine"], data["coarse"], data["residual"], out, tile=tile, overlap=overlap, output_type="float32")
        outputs[name] = read_all(out)[:, 16:, :]  # rows below the nodata corner
    whole = outputs["whole"]

    def seam(name, overlap):
        # Mean |gradient| across the tile edges / elsewhere, relative to the same
        # measure on the whole-image prediction (no tile edges, same content).
        grid = plan_tiles(SIZE, SIZE, 96, overlap)
        return border_gradient_ratio(outputs[name], grid) / border_gradient_ratio(whole, grid)

    assert abs(seam("tiled", 32) - 1.0) < 0.05
    assert seam("no_overlap", 0) > 1.1  # the measure does see seams when there is no overlap
    tiled = outputs["tiled"]
    assert np.abs(tiled - whole).mean() < 0.01
    assert np.corrcoef(tiled.ravel(), whole.ravel())[0, 1] > 0.99
    assert np.abs(tiled - whole).max() < np.abs(outputs["no_overlap"] - whole).max()


def test_fast_inference_path_and_threads_give_the_eager_result(data, tmp_path):
    import torch

    threads = torch.get_num_threads()
    outputs = {}
    for path in ("eager", "exact"):
        out = tmp_path / f"{path}.tif"
        result = fuse(data["fine"], data["coarse"], data["residual"], out, tile=96, overlap=32, output_type="float32",
                      inference=path, threads=1)
        assert result.inference == path and result.threads == 1
        assert read_metadata(out)["CTSTFM_INFERENCE"] == path
        outputs[path] = read_all(out)
    assert torch.get_num_threads() == threads  # the job's thread count is restored
    np.testing.assert_allclose(outputs["exact"], outputs["eager"], rtol=0, atol=1e-4)
    with pytest.raises(CtstfmError, match="inference path"):
        fuse(data["fine"], data["coarse"], data["residual"], tmp_path / "x.tif", inference="turbo")
    with pytest.raises(CtstfmError, match="threads"):
        fuse(data["fine"], data["coarse"], data["residual"], tmp_path / "x.tif", threads=-2)
    assert not (tmp_path / "x.tif").exists()


def test_cancel_half_way_leaves_no_output_and_no_temp(data, tmp_path):
    out = tmp_path / "fused.tif"
    progress = CancelAfter(2)  # 4 tiles: cancelled after the first row of tiles was written
    with pytest.raises(Cancelled):
        fuse(data["fine"], data["coarse"], data["identity"], out, tile=96, overlap=32, progress=progress)
    assert progress.calls == 3
    assert listing(tmp_path) == []


def test_bad_inputs_give_clear_errors_and_write_nothing(data, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "fused.tif"
    fine, coarse, model = data["fine"], data["coarse"], data["identity"]
    three_bands = write_raster(tmp_path / "three.tif", data["fine_array"][:3], fine_geotransform(), nodata=-9999)
    far = write_raster(tmp_path / "far.tif", np.ones((6, 10, 10), np.int16), (900000, 480, 0, 4000000, 0, -480))
    x0, y0 = 500000.0, 4000000.0
    empty = write_raster(
        tmp_path / "empty.tif", np.full((6, 14, 14), -9999, np.int16), (x0 - 480, 480, 0, y0 + 480, 0, -480),
        nodata=-9999,
    )
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a model")
    cases = [
        (dict(coarse_path=far), CtstfmError, "does not overlap"),
        (dict(fine_path=three_bands), CtstfmError, "has 3 band"),
        (dict(coarse_bands="1,2,3"), CtstfmError, "needs 6"),
        (dict(fine_bands="1,2,3,4,5,9"), CtstfmError, "do not exist"),
        (dict(model_path=tmp_path / "missing.pt"), ModelFileError, "missing.pt"),
        (dict(model_path=corrupt), ModelFileError, "corrupt.pt"),
        (dict(coarse_path=empty), CtstfmError, "no valid pixels"),
        (dict(out_path=tmp_path / "nowhere" / "fused.tif"), CtstfmError, "does not exist"),
        (dict(tile=64, overlap=32), CtstfmError, "more than twice"),
        (dict(fine_path=tmp_path / "nope.tif"), CtstfmError, "does not exist"),
        (dict(resampling="lanczos"), CtstfmError, "resampling"),
        (dict(output_type="int8"), CtstfmError, "output type"),
        (dict(batch_size=0), CtstfmError, "batch size"),
        (dict(out_path=fine), CtstfmError, "is the fine image"),
    ]
    try:
        import torch

        if not torch.cuda.is_available():
            cases.append((dict(device="cuda"), CtstfmError, "CUDA"))
    except ImportError:
        pass
    for change, error, words in cases:
        kwargs = dict(fine_path=fine, coarse_path=coarse, model_path=model, out_path=out)
        kwargs.update(change)
        paths = ("fine_path", "coarse_path", "model_path", "out_path")
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in paths}
        with pytest.raises(error, match=words) as info:
            fuse(kwargs["fine_path"], kwargs["coarse_path"], kwargs["model_path"], kwargs["out_path"], **options)
        assert "\n" not in str(info.value), change
        assert listing(folder) == [], change


def test_resolve_device():
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CtstfmError, match="Unknown device"):
        resolve_device("tpu")


def test_out_of_memory_halves_the_batch_and_retries():
    import torch

    calls = []

    class PickyModel(torch.nn.Module):
        def forward(self, coarse, fine):
            calls.append(coarse.shape[0])
            if coarse.shape[0] > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return fine + coarse

    messages = []

    class Recorder(Progress):
        def info(self, message):
            messages.append(message)

    predictor = TileModel(PickyModel(), torch.device("cpu"), batch_size=8, progress=Recorder())
    fine = np.ones((5, 2, 4, 4), np.float32)
    out = predictor((fine, 2 * fine))
    np.testing.assert_allclose(out, 3.0)
    assert predictor.batch_size == 2 and calls[:3] == [5, 4, 2] and "batch size lowered to 2" in messages[-1]

    class AlwaysOOM(torch.nn.Module):
        def forward(self, coarse, fine):
            raise RuntimeError("CUDA out of memory.")

    with pytest.raises(CtstfmError, match="smaller tile size"):
        TileModel(AlwaysOOM(), torch.device("cpu"), batch_size=2)((fine, fine))


def test_simulated_series_fuses_onto_the_fine_grid(make_series, tmp_path):
    pytest.importorskip("model_core.simulate")
    series = make_series(kind="fields", count=2, size=64, seed=3)
    first, second = series.items[0], series.items[1]
    model = save_test_model(tmp_path / "m.pt", "residual", bands=RasterInfo.read(first.fine).count)
    out = tmp_path / "fused.tif"
    fuse(first.fine, second.coarse, model, out, tile=64, overlap=16)
    fine_info, out_info = RasterInfo.read(first.fine), RasterInfo.read(out)
    assert out_info.same_grid(fine_info) and out_info.dtype == fine_info.dtype
    assert np.isfinite(read_all(out)).all()


def test_command_line(data, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "cli.tif"
    command = [sys.executable, "-m", "model_core", "fuse", "--fine", data["fine"], "--coarse", data["coarse_4326"],
               "--model", data["identity"], "--out", str(out), "--tile", "256", "--overlap", "16", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["out_path"] == str(out) and result["width"] == SIZE and result["tiles"] == 1
    assert RasterInfo.read(out).same_grid(RasterInfo.read(data["fine"]))
    bad = subprocess.run(command[:-5] + ["--tile", "32", "--overlap", "16"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "more than twice the overlap" in bad.stderr


def test_a_coarse_image_with_other_unnamed_bands_is_refused_and_modis_names_are_read(data, tmp_path):
    """Seven unnamed coarse bands for six fine ones: taking the first six would feed MODIS's red, NIR, blue ... as
    blue, green, red ..., so the run stops and says which bands to give; MOD09's own names are matched."""
    from model_core.errors import OptionError

    unnamed = write_coarse(tmp_path / "modis_unnamed.tif", SIZE * 30.0, SIZE * 30.0, 7, UTM33)
    with pytest.raises(OptionError, match=r"^The coarse image has 7 bands without names and the fine image's bands in "
                       r"use are blue, green, red, nir, swir1, swir2: say which coarse bands hold them, in that order, "
                       r"with coarse_bands \(for MODIS surface reflectance bands 1-7 stacked in order: 3,4,1,2,6,7\)"):
        fuse(data["fine"], unnamed, data["identity"], tmp_path / "refused.tif")
    with pytest.raises(OptionError, match=r"bands in use are green, red, nir: .* stacked in order: 4,1,2\)"):
        fuse(data["fine"], unnamed, None, tmp_path / "refused.tif", bands="green,red,nir", fine_bands="2,3,4")
    assert listing(tmp_path) == ["modis_unnamed.tif"]
    out = tmp_path / "named.tif"
    fuse(data["fine"], data["coarse"], data["identity"], out, tile=96, overlap=32)  # sur_refl_b01 ... b07
    assert read_metadata(out)["CTSTFM_COARSE_BANDS"] == "3,4,1,2,6,7"


def test_clouds_of_the_fine_and_the_coarse_image_are_nodata_in_the_output(data, tmp_path):
    """A cloud mask (here Landsat's QA_PIXEL, read by its rule) makes its cloudy pixels nodata, as the fine image's
    own nodata are; read as 0/1 it would mask everything, and is refused with nothing written. So does a cloud mask
    of the coarse image."""
    from model_core.errors import OptionError

    qa = np.full((SIZE, SIZE), 21824, dtype=np.uint16)  # clear land
    qa[40:80, 50:120] |= 8  # bit 3: cloud
    mask = write_raster(tmp_path / "qa_pixel.tif", qa, fine_geotransform())
    out = tmp_path / "fused.tif"
    fuse(data["fine"], data["coarse"], data["identity"], out, tile=96, overlap=32, fine_mask=mask,
         mask_rule="landsat-c2-qa")
    expected = data["fine_array"].copy()
    expected[:, 40:80, 50:120] = -9999
    np.testing.assert_array_equal(read_all(out), expected)
    assert read_metadata(out)["CTSTFM_CLOUDS"] == f"{mask} band 1 (landsat-c2-qa)"
    with pytest.raises(OptionError, match=r"cloud mask '.*qa_pixel\.tif' marks 100 % of the image as cloud .* most "
                       r"common value is 21824"):
        fuse(data["fine"], data["coarse"], data["identity"], tmp_path / "refused.tif", fine_mask=mask)
    assert sorted(os.listdir(tmp_path)) == ["fused.tif", "qa_pixel.tif"]
    # The coarse image's clouds (a MODIS-like state_1km band on its own 960 m grid, bits 0-1: 1 cloudy): nothing
    # was seen at T1 there, so it is nodata too.
    x0, _, _, y0, _, _ = fine_geotransform()
    state = np.full((SIZE * 30 // 960 + 1,) * 2, 72, dtype=np.uint16)  # clear land
    state[0, 1] |= 1
    state_path = write_raster(tmp_path / "state_1km.tif", state, (x0, 960.0, 0, y0, 0, -960.0))
    fuse(data["fine"], data["coarse"], data["identity"], tmp_path / "both.tif", tile=96, overlap=32, fine_mask=mask,
         mask_rule="landsat-c2-qa", coarse_mask=state_path, coarse_mask_rule="modis-state")
    expected[:, 0:40, 24:72] = -9999  # the state pixel, widened by the half coarse pixel bilinear carries it
    np.testing.assert_array_equal(read_all(tmp_path / "both.tif"), expected)
    assert read_metadata(tmp_path / "both.tif")["CTSTFM_CLOUDS"].endswith(f"{state_path} band 1 (modis-state)")
    # The coarse image at T0's clouds: a three-image model sees no change there (C0 filled from C1), so the output
    # stays valid; the mask is recorded, and refused when read as 0/1.
    fuse(data["fine"], data["coarse"], None, tmp_path / "t0.tif", tile=96, overlap=32, coarse_t0_path=data["coarse"],
         coarse_t0_mask=state_path, coarse_mask_rule="modis-state", device="cpu")
    assert (read_all(tmp_path / "t0.tif")[:, 0:40, 24:72] != -9999).all()
    assert read_metadata(tmp_path / "t0.tif")["CTSTFM_CLOUDS"] == f"{state_path} band 1 (modis-state)"
    with pytest.raises(OptionError, match=r"coarse cloud mask at T0 '.*state_1km\.tif' marks 100 %"):
        fuse(data["fine"], data["coarse"], None, tmp_path / "refused.tif", coarse_t0_path=data["coarse"],
             coarse_t0_mask=state_path, device="cpu")
    assert not (tmp_path / "refused.tif").exists()


def test_similar_pixel_filter_averages_the_change_over_similar_valid_neighbours(data, tmp_path):
    import torch

    from model_core.classical import similar_neighbour_change
    from model_core.fusion import SIMILAR_CLASSES, SIMILAR_STEP

    outputs = {}
    for window in (0, 31):
        out = tmp_path / f"window_{window}.tif"
        fuse(data["fine"], data["coarse"], data["residual"], out, tile=256, overlap=32, output_type="float32",
             similar_window=window)
        assert read_metadata(out)["CTSTFM_SIMILAR_WINDOW"] == str(window)
        outputs[window] = read_all(out)
    raw, filtered = outputs[0], outputs[31]
    valid = (raw != FLOAT_NODATA).all(axis=0)
    assert (valid == (filtered != FLOAT_NODATA).all(axis=0)).all() and not valid[:12, :20].any()
    fine = data["fine_array"].astype(np.float32) * 1e-4
    std = fine[:, valid].std(axis=1)  # the whole image's, as the job's one pass
    change = similar_neighbour_change(torch.from_numpy(fine), torch.from_numpy(raw - fine), torch.from_numpy(valid),
                                      torch.from_numpy(std * 2 / SIMILAR_CLASSES), 31, SIMILAR_STEP).numpy()
    expected = np.maximum(fine + change, 0.0)
    np.testing.assert_allclose(filtered[:, valid], expected[:, valid], atol=2e-6)
    assert np.abs(filtered - raw)[:, valid].mean() > 1e-4  # it did change the network's output
    with pytest.raises(CtstfmError, match="odd"):
        fuse(data["fine"], data["coarse"], data["residual"], tmp_path / "even.tif", similar_window=30)
    assert not (tmp_path / "even.tif").exists()


def test_a_fine_tuned_model_is_averaged_with_the_plugins_model(data, tmp_path):
    import dataclasses

    from model_core.model_file import load_model, save_model
    from model_core.paths import DEFAULT_MODEL

    # A model as ctstfm:train's fine-tuning leaves it: the plugin's, its first guess fitted, its weights moved.
    plugin = load_model(DEFAULT_MODEL)
    state = {name: value * 1.05 if value.is_floating_point() and value.dim() == 4 else value
             for name, value in plugin.model.state_dict().items()}
    config = dataclasses.replace(plugin.config, change_gain=(0.8,) * plugin.config.bands)
    tuned = save_model(tmp_path / "tuned.pt", state, config=config, band_names=plugin.band_names,
                       scale=plugin.scale)
    assert config.fine_tuned and not plugin.config.fine_tuned
    options = dict(tile=96, overlap=16, output_type="float32", similar_window=0)
    outputs = {}
    for name, model, mean in (("mean", tuned, True), ("alone", tuned, False), ("plugin", None, True),
                              ("untuned", data["residual"], True)):
        out = tmp_path / f"{name}.tif"
        fuse(data["fine"], data["coarse"], model, out, mean_with_plugin=mean, **options)
        outputs[name] = read_all(out)
        expected = str(DEFAULT_MODEL.resolve()) if name == "mean" else ""  # only a fine-tuned model is averaged
        assert read_metadata(out).get("CTSTFM_MEAN_WITH", "") == expected, name
    valid = (outputs["mean"] != FLOAT_NODATA).all(axis=0)
    assert np.abs(outputs["alone"] - outputs["plugin"])[:, valid].mean() > 1e-3  # two different predictions
    np.testing.assert_allclose(outputs["mean"][:, valid], ((outputs["alone"] + outputs["plugin"]) / 2)[:, valid],
                               atol=1e-5)
