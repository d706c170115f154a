"""The first guess's reference: the fine image seen through the coarse sensor's footprint, and the
coarse image at T0 (three-image mode) — in the reader, in fusion, on the command line."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from osgeo import gdal

from conftest import ROOT
from helpers import Log, write_scaled_change_pair
from test_raster import SINUSOIDAL, UTM33, fine_geotransform, read_all, smooth_field, write_coarse, write_raster

from model_core.fusion import fuse
from model_core.model_file import save_model
from model_core.network import CTSTFM, CTSTFMConfig, box_mean
from model_core.raster import PairReader, RasterInfo, Window, read_metadata
from model_core.simulate import coarse_from_fine

FACTOR = 16  # 480 m coarse pixels over 30 m fine pixels
OFFSET = (40, 45)  # the fine image's corner in the world, in fine pixels: not on a coarse pixel edge
SIZE = 160


def parcels(height, width, seed):
    """Sharp-edged parcels of different reflectance (the hard case for a blurred stand-in), 6 bands."""
    rng = np.random.default_rng(seed)
    rows = np.cumsum(rng.integers(6, 30, 40))
    cols = np.cumsum(rng.integers(6, 30, 40))
    label = np.searchsorted(rows, np.arange(height))[:, None] * 41 + np.searchsorted(cols, np.arange(width))[None]
    values = rng.uniform(0.02, 0.45, (6, label.max() + 1))
    return values[:, label].astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A fine image cut from a larger world, and coarse images of that world on a 480 m grid."""
    folder = tmp_path_factory.mktemp("first_guess")
    scene = parcels(256, 256, seed=3)
    row, col = OFFSET
    fine = scene[:, row:row + SIZE, col:col + SIZE]
    x0, y0 = fine_geotransform()[0] - col * 30.0, fine_geotransform()[3] + row * 30.0
    coarse_gt = (x0, 480.0, 0.0, y0, 0.0, -480.0)

    def coarse(name, psf, seed):
        image = coarse_from_fine(scene, factor=FACTOR, psf_sigma=psf, noise_sigma=0.003,
                                 rng=np.random.default_rng(seed))
        return write_raster(folder / name, np.round(image / 1e-4).astype(np.int16), coarse_gt, nodata=-9999)

    return {
        "folder": folder,
        "fine_array": fine,
        "fine": write_raster(folder / "fine.tif", np.round(fine / 1e-4).astype(np.int16), fine_geotransform(),
                             nodata=-9999),
        "coarse_box": coarse("coarse_box.tif", 0.0, 1),
        "coarse_psf": coarse("coarse_psf.tif", 0.5, 2),
    }


def interior_errors(data, coarse, psf):
    """Mean |C1 - reference| over the interior, for the footprint (with ``psf``) and box33 references."""
    with PairReader(data["fine"], coarse, footprint=True, psf_sigma=psf) as pair:
        fine, c1, reference, _ = pair.read_inputs(Window(0, 0, SIZE, SIZE))
        assert pair.reference == "footprint" and pair.coarse.warped
    box = box_mean(torch.from_numpy(fine)[None], 33)[0].numpy()
    inner = (slice(None), slice(40, -40), slice(40, -40))
    return float(np.abs(c1 - reference)[inner].mean()), float(np.abs(c1 - box)[inner].mean())


def test_footprint_reproduces_the_coarse_sensors_aggregation(world):
    footprint, box = interior_errors(world, world["coarse_box"], 0.0)
    # The same date: C1 - degrade(F0) is only the coarse noise (0.003, smoothed by the resampling)...
    assert footprint < 0.003, footprint
    # ... while a 33-pixel box leaves most of the parcels' edges in it.
    assert box > 4 * footprint, (footprint, box)
    # A sensor with a PSF (the simulator's coarse_from_fine, sigma 0.5 coarse px) is matched by the same PSF.
    with_psf, box = interior_errors(world, world["coarse_psf"], 0.5)
    without_psf, _ = interior_errors(world, world["coarse_psf"], 0.0)
    assert with_psf < 0.003 and with_psf < 0.6 * without_psf and box > 4 * with_psf, (with_psf, without_psf, box)


@pytest.mark.parametrize("crs", [UTM33, SINUSOIDAL])
def test_footprint_of_a_constant_image_is_constant(tmp_path, crs):
    fine = np.full((2, 70, 90), 1234, np.int16)
    fine[:, :5, :5] = -9999  # nodata is left out of the means, not averaged in
    fine_path = write_raster(tmp_path / "fine.tif", fine, fine_geotransform(), nodata=-9999)
    coarse = write_coarse(tmp_path / "coarse.tif", 90 * 30.0, 70 * 30.0, 2, crs)
    with PairReader(fine_path, coarse, footprint=True, psf_sigma=0.5) as pair:
        reference = pair.read_inputs(Window(0, 0, 90, 70)).coarse_t0
    np.testing.assert_allclose(reference, 0.1234, atol=1e-6)


def test_no_footprint_when_the_coarse_image_is_already_on_the_fine_grid(tmp_path):
    fine = write_raster(tmp_path / "fine.tif", smooth_field(2, 40, 40).astype(np.int16), fine_geotransform())
    resampled = write_raster(tmp_path / "coarse.tif", smooth_field(2, 40, 40, seed=1).astype(np.int16),
                             fine_geotransform())
    with PairReader(fine, resampled, footprint=True) as pair:
        assert pair.reference is None and pair.read_inputs(Window(0, 0, 40, 40)).coarse_t0 is None


# --------------------------------------------------------------------------- three-image mode in fusion


def zero_correction_model(path, images, reference="box", bands=6):
    """A model whose correction is zero: its output is exactly its first guess."""
    torch.manual_seed(0)
    config = CTSTFMConfig(bands=bands, width=8, encoder_blocks=1, fusion_blocks=1, predict_residual=True,
                          residual_blur=9, reference=reference, images=images)
    names = ["blue", "green", "red", "nir", "swir1", "swir2"][:bands]
    return str(save_model(path, CTSTFM(config), config=config, band_names=names, scale=1e-4))


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    folder = tmp_path_factory.mktemp("three_image")
    fine = smooth_field(6, 96, 96, seed=4).astype(np.int16)
    return {
        "folder": folder,
        "fine_array": fine,
        "fine": write_raster(folder / "fine.tif", fine, fine_geotransform(), nodata=-9999),
        "coarse_t1": write_coarse(folder / "c1.tif", 96 * 30.0, 96 * 30.0, 6, SINUSOIDAL, seed=5),
        "coarse_t0": write_coarse(folder / "c0.tif", 96 * 30.0, 96 * 30.0, 6, SINUSOIDAL, seed=6),
        "coarse_t0_4326": write_coarse(folder / "c0_4326.tif", 96 * 30.0, 96 * 30.0, 6, 4326, seed=6),
        "three": zero_correction_model(folder / "three.pt", 3, "footprint"),
        "two": zero_correction_model(folder / "two.pt", 2, "footprint"),
    }


def first_guess(data, **reader):
    with PairReader(data["fine"], data["coarse_t1"], **reader) as pair:
        fine, c1, reference, _ = pair.read_inputs(Window(0, 0, 96, 96))
    return np.maximum(fine + c1 - reference, 0)


def test_three_image_model_uses_coarse_t0_warped_like_coarse_t1(three, tmp_path):
    out = tmp_path / "fused.tif"
    log = Log()
    # similar_window=0: the network's own output (its head is zero), which the similar-pixel filter would average
    fuse(three["fine"], three["coarse_t1"], three["three"], out, coarse_t0_path=three["coarse_t0"], tile=96,
         overlap=16, output_type="float32", progress=log, similar_window=0)
    np.testing.assert_allclose(read_all(out), first_guess(three, coarse_t0_path=three["coarse_t0"]), atol=1e-5)
    meta = read_metadata(out)
    assert meta["CTSTFM_COARSE_T0"] == three["coarse_t0"] and "coarse T1 - coarse T0" in meta["CTSTFM_FIRST_GUESS"]
    assert any("three-image" in m for m in log.messages)

    # The same coarse image as T0 and T1 (two files): both warped alike, so the first guess is the fine image.
    same = tmp_path / "same.tif"
    copy = gdal.Translate(str(tmp_path / "c1_copy.tif"), three["coarse_t1"])
    copy = None
    fuse(three["fine"], three["coarse_t1"], three["three"], same, coarse_t0_path=str(tmp_path / "c1_copy.tif"),
         tile=96, overlap=16)
    np.testing.assert_array_equal(read_all(same), np.maximum(three["fine_array"], 0))

    # Coarse T0 in another CRS gives what the same image warped beforehand onto the fine grid gives.
    grid = RasterInfo.read(three["fine"])
    prewarped = str(tmp_path / "c0_prewarped.tif")
    gdal.Warp(prewarped, three["coarse_t0_4326"], outputBounds=grid.bounds, width=grid.width, height=grid.height,
              dstSRS=grid.crs_wkt, resampleAlg="bilinear", srcNodata=-9999, dstNodata=-9999,
              outputType=gdal.GDT_Float32)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    fuse(three["fine"], three["coarse_t1"], three["three"], a, coarse_t0_path=three["coarse_t0_4326"], tile=96,
         overlap=16, output_type="float32")
    fuse(three["fine"], three["coarse_t1"], three["three"], b, coarse_t0_path=prewarped, tile=96, overlap=16,
         output_type="float32")
    assert np.abs(read_all(a) - read_all(b)).max() < 1e-3


def test_three_image_model_without_coarse_t0_falls_back_with_a_warning(three, tmp_path):
    out = tmp_path / "fused.tif"
    log = Log()
    fuse(three["fine"], three["coarse_t1"], three["three"], out, tile=96, overlap=16, output_type="float32",
         progress=log, similar_window=0)
    assert any(m.startswith("Warning:") and "COARSE_T0" in m for m in log.messages), log.messages
    np.testing.assert_allclose(read_all(out), first_guess(three, footprint=True, psf_sigma=0.5), atol=1e-5)
    assert "CTSTFM_COARSE_T0" not in read_metadata(out)

    # Without a stand-in of its own (no footprint, no residual_blur) the 33-pixel box stands in for C0.
    config = CTSTFMConfig(bands=6, width=8, encoder_blocks=1, fusion_blocks=1, predict_residual=True, images=3)
    bare = save_model(tmp_path / "bare.pt", CTSTFM(config), config=config,
                      band_names=["blue", "green", "red", "nir", "swir1", "swir2"], scale=1e-4)
    log = Log()
    fuse(three["fine"], three["coarse_t1"], bare, tmp_path / "bare.tif", tile=96, overlap=16, output_type="float32",
         progress=log, similar_window=0)
    assert any(m.startswith("Warning:") and "averaged over 33 x 33 pixels" in m for m in log.messages), log.messages
    with PairReader(three["fine"], three["coarse_t1"]) as pair:
        fine, c1, _, _ = pair.read_inputs(Window(0, 0, 96, 96))
    box = box_mean(torch.from_numpy(fine)[None], 33)[0].numpy()
    np.testing.assert_allclose(read_all(tmp_path / "bare.tif"), np.maximum(fine + c1 - box, 0), atol=1e-5)


def test_two_image_model_says_it_does_not_use_coarse_t0(three, tmp_path):
    a, b, log = tmp_path / "a.tif", tmp_path / "b.tif", Log()
    fuse(three["fine"], three["coarse_t1"], three["two"], a, coarse_t0_path=three["coarse_t0"], tile=96,
         overlap=16, progress=log)
    fuse(three["fine"], three["coarse_t1"], three["two"], b, tile=96, overlap=16)
    assert any("coarse image at T0 is not used" in m for m in log.messages)
    np.testing.assert_array_equal(read_all(a), read_all(b))


def test_command_line_coarse_t0_and_band_names(three, tmp_path):
    fine3 = str(tmp_path / "fine3.tif")
    gdal.Translate(fine3, three["fine"], bandList=[4, 3, 2])  # nir, red, green, without descriptions
    out = tmp_path / "fused.tif"
    command = [sys.executable, "-m", "model_core", "fuse", "--fine", fine3, "--coarse", three["coarse_t1"],
               "--coarse-t0", three["coarse_t0"], "--model", three["three"], "--bands", "NIR,red,G",
               "--coarse-bands", "4,3,2", "--out", str(out), "--tile", "96", "--overlap", "16"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "nir = fine band 1 / coarse band 4" in done.stderr and read_all(out).shape == (3, 96, 96)
    bad = subprocess.run(command[:-6] + ["--bands", "nir,red,rededge1", "--out", str(tmp_path / "x.tif")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "the model's bands are blue, green, red, nir, swir1, swir2" in bad.stderr
    assert not (tmp_path / "x.tif").exists()


def test_training_feeds_the_reference_the_model_was_made_for(sim_series, tmp_path):
    """Training reads, for each pair, what the model takes as coarse T0: the reference date's coarse image
    (three-image), the fine image through the footprint (footprint), nothing (box). A three-image model
    trains and keeps its mode, and starts from a better validation than the same start with the box."""
    from model_core.model_file import read_model_metadata
    from model_core.training import train
    from model_core.training.data import SeriesData
    from model_core.training.series import read_manifest
    from model_core.training.series import Sample

    pairs = read_manifest(sim_series.manifest)
    sample, window = Sample(target=1, reference=0), (0, 0, 32, 32)
    for images, reference, expected in ((2, "box", None), (2, "footprint", dict(footprint=True, psf_sigma=0.5)),
                                        (3, "footprint", dict(coarse_t0_path=pairs[0].coarse))):
        config = CTSTFMConfig(predict_residual=True, residual_blur=9, reference=reference, images=images)
        data = SeriesData(pairs, scale=1e-4, bands=6, config=config)
        arrays = data.read(sample, window)
        data.close()
        assert len(arrays) == (4 if expected is None else 5)
        if expected is not None:
            with PairReader(pairs[0].fine, pairs[1].coarse, **expected) as pair:
                np.testing.assert_array_equal(arrays[4], pair.read_inputs(Window(*window)).coarse_t0)

    torch.set_num_threads(1)
    settings = dict(start="model", max_minutes=0, epochs=1, batch_size=4, patch_size=32, patches_per_epoch=4,
                    lr=1e-3, seed=0, max_validation_windows=8)
    initial = {}
    # USE_COARSE_T0 sets the mode, whatever the mode of the model fine-tuned (a three-image start trained
    # as two-image, a two-image start as three-image).
    for name, images, use_coarse_t0 in (("box", 3, False), ("three", 2, True)):
        start = zero_correction_model(tmp_path / f"{name}_start.pt", images, "box")
        result = train(sim_series.manifest, tmp_path / f"{name}.pt", init_model=start, use_coarse_t0=use_coarse_t0,
                       **settings)
        initial[name] = result.initial_metrics["mae"]
        assert read_model_metadata(tmp_path / f"{name}.pt").config.images == (3 if use_coarse_t0 else 2)
    assert initial["three"] < initial["box"], initial


def train_on_scaled_change(tmp_path, factor):
    """Train one epoch on two dates whose fine image changes by ``factor`` times the coarse change (no noise);
    returns (model config, log, TrainResult)."""
    from model_core.model_file import read_model_metadata
    from model_core.training import train

    log = Log()
    torch.set_num_threads(1)
    result = train(write_scaled_change_pair(tmp_path, factor), tmp_path / "model.pt", epochs=1, patches_per_epoch=4,
                   patch_size=32, device="cpu", seed=0, max_validation_windows=4, progress=log)
    return read_model_metadata(tmp_path / "model.pt").config, log, result


LITTLE_CHANGE = "etween the training dates the fine images changed far less than the coarse images show"


def test_training_fits_the_change_gain_of_the_first_guess(tmp_path):
    """Where the fine image changes by half the coarse change, the fitted gain is 0.5 per band, the
    model file keeps it, and the network applies it: F0 + 0.5 (C1 - C0) from a zero correction."""
    from model_core.model_file import load_model
    from model_core.training.start import zero_head

    config, log, _ = train_on_scaled_change(tmp_path, 0.5)
    gains = config.change_gain
    assert len(gains) == 3 and all(abs(g - 0.5) < 0.02 for g in gains), (gains, log.text())
    # the fine change is all in C1 - C0: the fitted mix takes nothing of C1 - box(F0), and nothing is blurred
    assert all(g < 0.02 for g in config.box_change_gain), (config.box_change_gain, log.text())
    assert config.change_blur == 0
    assert any(m.startswith("First guess fitted on the training dates") for m in log.messages)
    # The fitted first guess is a start of its own, next to the parameter-free one.
    assert "the first guess with the fitted change gain" in log.text() and "the first guess 0." in log.text()
    loaded = load_model(tmp_path / "model.pt")
    zero_head(loaded.model)
    f0, c0, c1 = (torch.rand(1, 3, 32, 32) for _ in range(3))
    with torch.no_grad():
        out = loaded.model.eval()(c1, f0, c0)
    expected = f0 + torch.tensor(gains).view(1, 3, 1, 1) * (c1 - c0) + \
        torch.tensor(config.box_change_gain).view(1, 3, 1, 1) * (c1 - box_mean(f0, 33))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)



def test_training_dates_that_barely_change_are_reported(tmp_path):
    """Gains well below one half (the fine image changed by a quarter of what the coarse images show) are
    warned about when they are fitted and again at the end of the log, the report and the HTML verdict;
    gains near 1 are not."""
    from types import SimpleNamespace

    from model_core.training.report_html import verdict

    config, log, result = train_on_scaled_change(tmp_path / "little", 0.25)
    assert all(abs(g - 0.25) < 0.02 for g in config.change_gain), config.change_gain
    assert any(m.startswith("Warning: B" + LITTLE_CHANGE) for m in log.messages), log.text()
    assert result.notes[0].startswith("WARNING: B" + LITTLE_CHANGE) and "green 0.25" in result.notes[0]
    lines = result.message.splitlines()  # the note, then the verdict: the log's last line
    assert result.notes[0] in lines[1:-1] and lines[-1].startswith(("The model improves", "WARNING: the model")), lines
    assert LITTLE_CHANGE in verdict(result)
    config, log, result = train_on_scaled_change(tmp_path / "much", 0.9)
    assert all(g > 0.85 for g in config.change_gain), config.change_gain
    assert LITTLE_CHANGE not in log.text() and result.notes == []
    assert LITTLE_CHANGE not in verdict(SimpleNamespace(**{**vars(result), "notes": []}))

def test_a_blocky_coarse_change_is_averaged_before_it_is_added(tmp_path):
    """Coarse images delivered on the fine grid by nearest neighbour hold the change as 16-pixel blocks:
    the fit picks a change blur, the log and the model file say so, and the network averages each coarse
    change over that box."""
    from model_core.model_file import load_model, read_model_metadata
    from model_core.training import train, write_manifest
    from model_core.training.start import CHANGE_BLURS, zero_head

    size, block, gt = 96, 16, fine_geotransform()
    fine0 = smooth_field(3, size, size, seed=21)
    change = smooth_field(3, size, size, seed=22, base=0.0, amplitude=400.0, noise=20.0)
    blocks = change.reshape(3, size // block, block, size // block, block).mean(axis=(2, 4))
    blocky = np.repeat(np.repeat(blocks, block, axis=1), block, axis=2)
    names = ["green", "red", "nir"]
    paths = {
        name: write_raster(tmp_path / f"{name}.tif", data.astype(np.int16), gt, nodata=-9999, descriptions=names)
        for name, data in (("f0", fine0), ("c0", fine0), ("f1", fine0 + change), ("c1", fine0 + blocky))
    }
    manifest = write_manifest(tmp_path / "m.csv", [("2021-06-01", paths["f0"], paths["c0"]),
                                                  ("2021-07-01", paths["f1"], paths["c1"])])
    log = Log()
    torch.set_num_threads(1)
    train(manifest, tmp_path / "model.pt", epochs=1, patches_per_epoch=4, patch_size=32, device="cpu", seed=0,
          max_validation_windows=4, start="model", progress=log)
    config = read_model_metadata(tmp_path / "model.pt").config
    assert config.change_blur in CHANGE_BLURS and config.change_blur > 1, (config, log.text())
    assert f"averaged over {config.change_blur} x {config.change_blur} fine pixels" in log.text()
    loaded = load_model(tmp_path / "model.pt")
    zero_head(loaded.model)
    f0, c0, c1 = (torch.rand(1, 3, 40, 40) for _ in range(3))
    with torch.no_grad():
        out = loaded.model.eval()(c1, f0, c0)
    per_band = lambda gains: torch.tensor(gains).view(1, -1, 1, 1)  # noqa: E731
    expected = f0 + per_band(config.change_gain) * box_mean(c1 - c0, config.change_blur) + \
        per_band(config.box_change_gain) * box_mean(c1 - box_mean(f0, 33), config.change_blur)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_a_change_blur_must_fit_clearly_better_to_be_chosen():
    from model_core.training.start import CHANGE_BLUR_MARGIN, _pick_blur

    assert _pick_blur([1.0, 0.99, 0.98, 0.985, 0.99]) == 2  # 2 % lower: the best box
    assert _pick_blur([1.0, 1.0 - CHANGE_BLUR_MARGIN / 2, 1.0, 1.0, 1.0]) == 0  # a hair lower: the raw change
    assert _pick_blur([1.0, 1.01, 1.02, 1.03, 1.04]) == 0


def test_the_mix_slopes_are_a_non_negative_least_squares_fit():
    """``_mix_slopes`` (the three-image first guess's fit) recovers two known slopes from the normal
    equations, falls back to the better single regressor when the joint fit has a negative slope, and
    caps each slope at 1."""
    from model_core.training.start import _mix_slopes

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 20000))
    x[1] += 0.5 * x[0]  # correlated, as C1 - C0 and C1 - box(F0) are

    def fit(a, b, noise=0.05):
        y = a * x[0] + b * x[1] + noise * rng.normal(size=x.shape[1])
        return _mix_slopes(x @ x.T, x @ y)

    np.testing.assert_allclose(fit(0.3, 0.6), [0.3, 0.6], atol=0.01)
    np.testing.assert_allclose(fit(0.8, 0.0), [0.8, 0.0], atol=0.01)
    a, b = fit(0.9, -0.4)  # the joint fit's b is negative: the better single slope, the other 0
    assert b == 0.0 and 0.5 < a <= 1.0
    np.testing.assert_allclose(fit(1.6, 0.2), [1.0, 0.2], atol=0.1)  # capped at 1, the other still fitted
    np.testing.assert_array_equal(_mix_slopes(np.zeros((2, 2)), np.zeros(2)), [0.0, 0.0])  # nothing to fit


def test_the_fitted_mix_is_kept_per_mode_and_survives_band_selection(tmp_path, sim_series):
    """A three-image run fits both gains and the network applies them; a two-image run one gain only;
    band selection keeps each band's pair."""
    from model_core.model_file import load_model, read_model_metadata
    from model_core.network import CTSTFM
    from model_core.training import train
    from model_core.training.start import zero_head

    torch.set_num_threads(1)
    settings = dict(epochs=1, patches_per_epoch=4, patch_size=32, device="cpu", seed=0, max_validation_windows=4)
    log = Log()
    train(sim_series.manifest, tmp_path / "three.pt", start="model", progress=log, **settings)
    config = read_model_metadata(tmp_path / "three.pt").config
    assert config.images == 3 and len(config.change_gain) == len(config.box_change_gain) == config.bands
    assert "x (C1 - C0) +" in log.text() and "x (C1 - box(F0))" in log.text()
    two = read_model_metadata(train(sim_series.manifest, tmp_path / "two.pt", use_coarse_t0=False, start="model",
                                    **settings).model_path).config
    assert two.images == 2 and two.box_change_gain == () and len(two.change_gain) == two.bands
    loaded = load_model(tmp_path / "three.pt")
    zero_head(loaded.model)
    f0, c0, c1 = (torch.rand(1, config.bands, 40, 40) for _ in range(3))
    with torch.no_grad():
        out = loaded.model.eval()(c1, f0, c0)
    per_band = lambda gains: torch.tensor(gains).view(1, -1, 1, 1)  # noqa: E731
    smooth = (lambda change: box_mean(change, config.change_blur)) if config.change_blur > 1 else (lambda c: c)
    expected = f0 + per_band(config.change_gain) * smooth(c1 - c0) + \
        per_band(config.box_change_gain) * smooth(c1 - box_mean(f0, config.residual_blur))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    subset = CTSTFM(config).select_bands([2, 0])
    assert subset.config.change_blur == config.change_blur
    assert subset.config.change_gain == (config.change_gain[2], config.change_gain[0])
    assert subset.config.box_change_gain == (config.box_change_gain[2], config.box_change_gain[0])
    # the fused file says which first guess it corrected, with the fitted pair of each band
    from model_core.training import read_manifest

    pairs = read_manifest(sim_series.manifest)
    fuse(pairs[2].fine, pairs[3].coarse, str(tmp_path / "three.pt"), str(tmp_path / "fused.tif"), device="cpu",
         coarse_t0_path=pairs[2].coarse)
    text = read_metadata(str(tmp_path / "fused.tif"))["CTSTFM_FIRST_GUESS"]
    pair = f"({config.change_gain[0]:.2f}, {config.box_change_gain[0]:.2f})"
    assert "coarse T1 - coarse T0" in text and f"(a, b) = {pair}" in text, text


def test_a_pretrained_model_keeps_its_start_unless_a_reference_is_clearly_better():
    """With a spatial split (two or three dates) a reference must validate 10 % better than a pretrained
    model to replace it; with a chronological split, or a new network, the plain best wins."""
    from types import SimpleNamespace

    from model_core.network import CTSTFM, CTSTFMConfig
    from model_core.training.start import PRETRAINED_START_MARGIN, choose_start
    from model_core.training.trainer import NetworkChoice

    def start(model_mae, fitted_mae, *, pretrained=True, mode="spatial"):
        config = CTSTFMConfig(bands=3, width=8, predict_residual=True, images=3, change_gain=(0.8, 0.9, 1.0))
        model = CTSTFM(config)
        run = SimpleNamespace(
            network=NetworkChoice(config, ["green", "red", "nir"], 1e-4, init_state={} if pretrained else None),
            split=SimpleNamespace(mode=mode))
        baselines = {"no_change": {"mae": 0.05}, "first_guess": {"mae": 0.04}}
        log = Log()
        name, metrics = choose_start(run, model, {"mae": model_mae}, baselines, "best", log, {"mae": fitted_mae})
        return name, metrics["mae"], log.text()

    name, mae, text = start(0.0268, 0.0257)  # the few-dates case: the reference 4 % better
    assert (name, mae) == ("model", 0.0268) and f"{100 * PRETRAINED_START_MARGIN:.0f} % better" in text
    assert start(0.0268, 0.0268 * (1 - PRETRAINED_START_MARGIN) - 1e-4)[0] == "fitted_first_guess"
    assert start(0.0268, 0.0257, mode="dates")[0] == "fitted_first_guess"
    assert start(0.0268, 0.0257, pretrained=False)[0] == "fitted_first_guess"
    assert start(0.0250, 0.0257)[0] == "model"


def test_the_fitted_first_guess_takes_the_place_of_the_unchanged_fine_image():
    """With a fitted gain the unchanged fine image is no start, even where it validates best: the fitted
    first guess is that image where the gains are near 0, and scales with a later date's change. Without
    a fitted gain it is a start as before."""
    from types import SimpleNamespace

    from model_core.network import CTSTFM, CTSTFMConfig
    from model_core.training.start import choose_start
    from model_core.training.trainer import NetworkChoice

    config = CTSTFMConfig(bands=3, width=8, predict_residual=True, images=3, change_gain=(0.1, 0.2, 0.3))
    run = SimpleNamespace(network=NetworkChoice(config, ["green", "red", "nir"], 1e-4, init_state={}),
                          split=SimpleNamespace(mode="spatial"))
    baselines = {"no_change": {"mae": 0.0141}, "first_guess": {"mae": 0.0235}}
    log = Log()
    name, metrics = choose_start(run, CTSTFM(config), {"mae": 0.0174}, baselines, "best", log, {"mae": 0.0156})
    assert (name, metrics["mae"]) == ("fitted_first_guess", 0.0156)
    assert "the unchanged fine image" not in log.text()
    new_run = SimpleNamespace(network=NetworkChoice(config, ["green", "red", "nir"], 1e-4, init_state=None),
                              split=SimpleNamespace(mode="spatial"))
    name, _ = choose_start(new_run, CTSTFM(config), {"mae": 0.0174}, baselines, "best", Log(), None)
    assert name == "no_change"
