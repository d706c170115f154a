"""Training through model_core: series, split, a tiny run, report, resume, cancel, bad input.

Runs are tiny (width 8, 32 px patches, 16 patches per epoch, lr 3e-3) on the simulator's
128 x 128 series; one trained model is shared by the module.
"""

import csv
import os
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal

from helpers import Log

from model_core.errors import Cancelled, CtstfmError
from model_core.training import (
    Pair,
    choose_references,
    date_from_name,
    read_manifest,
    report_paths,
    series_from_layers,
    split_series,
    train,
    write_manifest,
)

TINY = dict(epochs=2, batch_size=4, patch_size=32, patches_per_epoch=16, lr=3e-3, width=8, seed=0, from_scratch=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread for the whole module (the shared run too): faster on a busy 2-core machine, and
    the resume test compares weights bit for bit with the shared run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(sim_series, tmp_path_factory):
    """One tiny training run (2 epochs) on the 4-date series; shared by the module."""
    out = tmp_path_factory.mktemp("trained") / "model.pt"
    log = Log()
    result = train(sim_series.manifest, out, progress=log, **TINY)
    return result, log, out


# ------------------------------------------------------------------ series


def write_csv_lines(path, rows, header="date,fine,coarse"):
    """A manifest written literally (for reader tests: bad rows, relative and absolute paths as given);
    model_core.training.write_manifest writes well-formed ones."""
    path.write_text("\n".join([header] + [",".join(map(str, row)) for row in rows]) + "\n")
    return path


def test_read_manifest_relative_paths_sorted(sim_series, tmp_path):
    items = sim_series.items
    rows = [(item.date.isoformat(), Path("..") / item.fine.parent.name / item.fine.name,
             Path(item.coarse).resolve()) for item in reversed(items)]
    folder = sim_series.out_dir.parent / f"manifest_{tmp_path.name}"
    folder.mkdir()
    pairs = read_manifest(write_csv_lines(folder / "series.csv", rows))
    assert [p.date for p in pairs] == sorted(item.date for item in items)
    assert all(Path(p.fine).exists() and Path(p.coarse).exists() for p in pairs)


def test_write_manifest_writes_relative_paths_that_read_back(sim_series, tmp_path):
    items = sim_series.items
    (tmp_path / "sub").mkdir()
    manifest = write_manifest(tmp_path / "sub" / "series.csv", [(item.date, item.fine, item.coarse) for item in items])
    lines = manifest.read_text().splitlines()
    assert lines[0] == "date,fine,coarse" and not any(os.path.isabs(p) for p in lines[1].split(",")[1:])
    pairs = read_manifest(manifest)
    assert [(p.date, Path(p.fine).resolve(), Path(p.coarse).resolve()) for p in pairs] == [
        (item.date, Path(item.fine).resolve(), Path(item.coarse).resolve()) for item in items
    ]


@pytest.mark.parametrize(
    "header, row, expected",
    [
        ("date,fine", ("2021-04-01", "fine_a.tif"), "no column coarse"),
        ("date,fine,coarse", ("2021-04-01", "missing.tif", "coarse_a.tif"), "does not exist"),
        ("date,fine,coarse", ("01/04/2021", "fine_a.tif", "coarse_a.tif"), "not a date"),
        ("date,fine,coarse", ("2021-04-01", "", "coarse_a.tif"), "has no fine"),
    ],
)
def test_bad_manifest(tmp_path, header, row, expected):
    for name in ("fine_a.tif", "coarse_a.tif"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(CtstfmError, match=expected):
        read_manifest(write_csv_lines(tmp_path / "m.csv", [row], header))


def test_manifest_with_unreadable_raster_fails_before_writing(tmp_path, sim_series):
    (tmp_path / "fine_bad.tif").write_text("not a raster")
    first = sim_series.items[0]
    manifest = write_csv_lines(
        tmp_path / "m.csv",
        [("2021-01-01", "fine_bad.tif", first.coarse), (first.date.isoformat(), first.fine, first.coarse)],
    )
    out = tmp_path / "model.pt"
    out.write_bytes(b"old model")
    with pytest.raises(CtstfmError, match="could not be read as a raster"):
        train(manifest, out, **TINY)
    assert out.read_bytes() == b"old model"


def test_dates_from_names_and_layer_lists():
    assert date_from_name("/x/LC08_L2SP_044034_20210401_20210409_02_T1.tif") == dt.date(2021, 4, 1)
    assert date_from_name("fine_2021-05-03.tif") == dt.date(2021, 5, 3)
    assert date_from_name("MOD09GA.A2021091.h29v12.061.tif") == dt.date(2021, 4, 1)
    assert date_from_name("scene.tif") is None
    log = Log()
    pairs = series_from_layers(["b_20210503.tif", "a_20210401.tif"], ["c2.tif", "c1.tif"], "", progress=log)
    assert [p.date for p in pairs] == [dt.date(2021, 4, 1), dt.date(2021, 5, 3)]
    assert [p.coarse for p in pairs] == ["c1.tif", "c2.tif"]
    assert "file names" in log.text()
    pairs = series_from_layers(["a.tif", "b.tif"], ["c.tif", "d.tif"], "2021-06-01, 2021-05-01")
    assert [p.fine for p in pairs] == ["b.tif", "a.tif"]
    with pytest.raises(CtstfmError, match="2 fine rasters but 1 coarse"):
        series_from_layers(["a.tif", "b.tif"], ["c.tif"], "")
    with pytest.raises(CtstfmError, match="none found in the file name"):
        series_from_layers(["a.tif", "b.tif"], ["c.tif", "d.tif"], "")
    with pytest.raises(CtstfmError, match="1 dates for 2"):
        series_from_layers(["a.tif", "b.tif"], ["c.tif", "d.tif"], "2021-04-01")


def test_references_and_split():
    dates = [dt.date(2021, 1, 1) + dt.timedelta(days=d) for d in (0, 10, 30, 31, 80)]
    samples = choose_references(dates, [2], range(5), references=2)
    assert [(s.target, s.reference) for s in samples] == [(2, 3), (2, 1)]
    assert choose_references(dates, [4], range(5), references=1, max_gap_days=40) == []
    split = split_series(dates, 128, validation_fraction=0.2)
    assert split.mode == "dates"
    assert split.train_dates == dates[:4] and split.validation_dates == dates[4:]
    assert all(dates[s.reference] in split.train_dates for s in split.train_samples)
    assert split.validation_samples[0].reference == 3
    few = split_series(dates[:3], 100, validation_fraction=0.2)
    assert few.mode == "spatial" and few.validation_rows == 20 and "spatial block" in few.note


# ------------------------------------------------------------------ a training run


def test_training_learns_and_writes_everything(trained, sim_series):
    from model_core.model_file import load_model

    result, log, out = trained
    assert not result.cancelled and result.epochs == 2
    assert result.best_metrics["mae"] < 0.8 * result.initial_metrics["mae"], (result.initial_metrics, result.history)
    loaded = load_model(out)
    assert loaded.config.width == 8 and loaded.config.bands == 6
    assert list(loaded.band_names) == ["blue", "green", "red", "nir", "swir1", "swir2"]
    prov = loaded.provenance
    assert prov["data"]["manifest"] == str(Path(sim_series.manifest).resolve())
    assert prov["train_dates"] == [d.isoformat() for d in sim_series.dates[:3]]
    assert prov["validation_dates"] == [sim_series.dates[3].isoformat()]
    assert prov["epochs"] == 2 and prov["best_epoch"] == result.best_epoch and prov["seed"] == 0
    assert prov["device"] == "cpu" and prov["best_validation"]["mae"] == pytest.approx(result.best_metrics["mae"])
    csv_path, png_path = report_paths(out)
    rows = list(csv.DictReader(open(csv_path)))
    # The two baselines and the starting model (epoch 0) on the same windows come first.
    assert [r["epoch"] for r in rows] == ["no_change", "first_guess", "0", "1", "2"]
    assert float(rows[0]["val_mae"]) == pytest.approx(result.baselines["no_change"]["mae"], rel=1e-5)
    assert float(rows[2]["val_mae"]) == pytest.approx(result.initial_metrics["mae"], rel=1e-5)
    assert prov["baselines"] == result.baselines and prov["stopped"] == "done"
    rows = rows[3:]
    assert set(rows[0]) == {
        "epoch", "train_loss", "val_mae", "val_rmse", "val_psnr", "val_ssim", "val_sam", "seconds",
        "patches_per_second",
    }
    assert float(rows[0]["patches_per_second"]) > 0
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    assert Path(result.checkpoint).exists()
    text = log.text()
    assert "Chronological split" in text and "patches/s" in text
    assert "Unchanged fine image, same windows: validation MAE" in text and "First guess (fine T0 + coarse T1 - coarse T0)" in text
    assert log.fractions[-1] == 1.0 and all(0 <= f <= 1 for f in log.fractions)
    # The log ends with the verdict against the unchanged fine image.
    gain = 100 * (1 - result.best_metrics["mae"] / result.baselines["no_change"]["mae"])
    if gain > 0:
        assert log.messages[-1].startswith(f"The model improves on the unchanged fine image by {gain:.1f} % MAE")
    else:
        assert log.messages[-1].startswith("WARNING: the model does not improve on the unchanged fine image")


def test_a_model_worse_than_its_start_is_never_kept(trained, sim_series, tmp_path):
    """Fine-tuning with an absurd learning rate: every epoch is worse, so the output is the start."""
    from model_core.model_file import load_model

    start = load_model(trained[0].model_path).model.state_dict()
    log = Log()
    result = train(sim_series.manifest, tmp_path / "worse.pt", init_model=trained[0].model_path, progress=log,
                   **dict(TINY, epochs=2, lr=5.0, width=None))
    # (NaN weights give NaN metrics: never "better", never kept)
    assert result.best_epoch == 0 and not any(row["val_mae"] <= result.initial_metrics["mae"] for row in result.history)
    assert "No epoch beat the starting model" in log.text()
    kept = load_model(result.model_path).model.state_dict()
    assert all(torch.equal(kept[key], start[key]) for key in start)


def test_training_stops_after_patience_epochs_without_a_new_best(trained, sim_series, tmp_path):
    """Every epoch worse than the start: with PATIENCE 2 the run stops after epoch 2 and keeps the start."""
    log = Log()
    result = train(sim_series.manifest, tmp_path / "patient.pt", init_model=trained[0].model_path, progress=log,
                   **dict(TINY, epochs=10, lr=5.0, width=None, patience=2))
    assert (result.epochs, result.best_epoch, result.stopped) == (2, 0, "no improvement")
    assert "stopped: no new best for 2 epochs" in log.text()
    assert result.provenance["patience"] == 2 and result.provenance["stopped"] == "no improvement"
    with pytest.raises(CtstfmError, match="patience"):
        train(sim_series.manifest, tmp_path / "bad.pt", **dict(TINY, patience=-1))


def test_a_residual_network_starts_from_the_best_of_itself_and_the_references(make_series, tmp_path):
    """Realistic sensors make the first guess worse than no change: the run starts from no change."""
    series = make_series(kind="fields", count=3, size=64, seed=5, sensor="realistic", bands="green,red,nir")
    log = Log()
    result = train(series.manifest, tmp_path / "start.pt", progress=log, predict_residual=True, residual_blur=33,
                   fit_change_gain=False, **dict(TINY, epochs=1, patches_per_epoch=4))
    references = result.baselines
    best = min([references["no_change"]["mae"], references["first_guess"]["mae"]])
    assert result.initial_metrics["mae"] <= best + 1e-9
    assert "Starting point:" in log.text()
    if references["no_change"]["mae"] < references["first_guess"]["mae"]:
        assert result.initial_metrics == pytest.approx(references["no_change"], rel=1e-5)
        assert result.provenance["best_epoch"] > 0 or "the unchanged fine image" in log.text()
    # The kept model never validates worse than the start.
    assert result.best_metrics["mae"] <= result.initial_metrics["mae"]


def test_max_minutes_stops_with_the_best_model_so_far(sim_series, tmp_path):
    log = Log()
    result = train(sim_series.manifest, tmp_path / "budget.pt", progress=log,
                   **dict(TINY, epochs=10000, patches_per_epoch=400, max_minutes=0.1))
    assert result.stopped == "time budget" and not result.cancelled
    assert 1 <= result.epochs < 10000 and result.seconds < 0.1 * 60 + 20
    assert "stopped at the 0.1-minute budget" in log.text() and Path(result.model_path).exists()
    with pytest.raises(CtstfmError, match="max_minutes"):
        train(sim_series.manifest, tmp_path / "bad.pt", **dict(TINY, max_minutes=-1))


def test_trained_model_fuses(trained, sim_series, tmp_path):
    from model_core.fusion import fuse

    result, _, _ = trained
    items = sim_series.items
    fused = tmp_path / "fused.tif"
    # Trained with the default USE_COARSE_T0: a three-image model, fused with the coarse image at T0.
    fuse(items[2].fine, items[3].coarse, result.model_path, fused, coarse_t0_path=items[2].coarse, tile=128,
         overlap=0, device="cpu")
    dataset = gdal.Open(str(fused))
    assert (dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount) == (128, 128, 6)


def test_resume_continues_the_epoch_count_and_matches_an_uninterrupted_run(trained, sim_series, tmp_path):
    result, _, _ = trained
    out = tmp_path / "model.pt"
    first = train(sim_series.manifest, out, **dict(TINY, epochs=1))
    assert first.epochs == 1
    log = Log()
    resumed = train(sim_series.manifest, out, resume=True, progress=log, **TINY)
    assert resumed.epochs == 2 and [row["epoch"] for row in resumed.history] == [1, 2]
    assert "Resuming" in log.text()
    rows = list(csv.DictReader(open(report_paths(out)[0])))
    assert [r["epoch"] for r in rows] == ["no_change", "first_guess", "0", "1", "2"]
    # Same seed, same patches, same weights as the uninterrupted run.
    for key in ("train_loss", "val_mae"):
        assert [row[key] for row in resumed.history] == pytest.approx([row[key] for row in result.history], rel=1e-5)
    a = torch.load(resumed.checkpoint, weights_only=True)["model"]
    b = torch.load(result.checkpoint, weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


def test_resume_without_checkpoint_is_an_error(sim_series, tmp_path):
    with pytest.raises(CtstfmError, match="no checkpoint"):
        train(sim_series.manifest, tmp_path / "m.pt", resume=True, **TINY)


def test_cancel_keeps_the_best_model(sim_series, tmp_path):
    out = tmp_path / "model.pt"
    log = Log(cancel_after_epoch=1)
    result = train(sim_series.manifest, out, progress=log, **dict(TINY, epochs=3))
    assert result.cancelled and result.epochs == 1 and result.best_epoch == 1
    assert "best model so far" in result.message and out.exists()
    assert len(list(csv.DictReader(open(report_paths(out)[0])))) == 3 + 1


def test_cancel_before_the_first_epoch_writes_nothing(sim_series, tmp_path):
    out = tmp_path / "model.pt"
    out.write_bytes(b"old model")
    with pytest.raises(Cancelled):
        train(sim_series.manifest, out, progress=Log(cancel_at_once=True), **TINY)
    assert out.read_bytes() == b"old model"


def test_three_dates_validate_on_a_spatial_block(make_series, tmp_path):
    series = make_series(kind="fields", count=3, size=64, seed=5)
    log = Log()
    result = train(series.manifest, tmp_path / "m.pt", progress=log, **dict(TINY, epochs=1, patches_per_epoch=4))
    assert result.validation_mode == "spatial"
    assert "held-out spatial block" in log.text()
    assert result.provenance["validation_rows"] == 13


def test_fine_tune_checks_bands(trained, sim_series, tmp_path):
    from model_core.model_file import save_model
    from model_core.network import CTSTFM, CTSTFMConfig

    config = CTSTFMConfig(bands=4, width=8)
    other = tmp_path / "four_bands.pt"
    save_model(other, CTSTFM(config), config=config, band_names=["b", "g", "r", "n"], scale=1e-4)
    with pytest.raises(CtstfmError, match="has 4 bands"):
        train(sim_series.manifest, tmp_path / "m.pt", init_model=other, **TINY)
    # A matching model fine-tunes: its weights are the starting point.
    log = Log()
    tuned = train(
        sim_series.manifest, tmp_path / "tuned.pt", init_model=trained[0].model_path, progress=log,
        **dict(TINY, epochs=1, patches_per_epoch=4, width=None),
    )
    assert tuned.initial_metrics["mae"] == pytest.approx(trained[0].best_metrics["mae"], rel=1e-4)
    assert "Fine-tuning" in log.text()


# ------------------------------------------------------------------ bad series


def translated(source, target, **options):
    gdal.Translate(str(target), str(source), **options)
    return str(target)


def series_pairs(sim_series, **replace):
    pairs = [Pair(item.date, str(item.fine), str(item.coarse)) for item in sim_series.items]
    for index, pair in replace.items():
        pairs[int(index[1:])] = pair
    return pairs


def run_bad(pairs, tmp_path, match):
    out = tmp_path / "model.pt"
    out.write_bytes(b"old model")
    with pytest.raises(CtstfmError, match=match):
        train(pairs, out, **TINY)
    assert out.read_bytes() == b"old model"
    assert not Path(str(out) + ".checkpoint.pt").exists()


def test_fewer_than_two_dates(sim_series, tmp_path):
    run_bad(series_pairs(sim_series)[:1], tmp_path, "at least two dates")


def test_duplicate_dates(sim_series, tmp_path):
    pairs = series_pairs(sim_series)
    pairs.append(Pair(pairs[0].date, pairs[1].fine, pairs[1].coarse))
    run_bad(pairs, tmp_path, "appears twice")


def test_fine_with_another_extent(sim_series, tmp_path):
    item = sim_series.items[1]
    cropped = translated(item.fine, tmp_path / "crop.tif", srcWin=[0, 0, 100, 128])
    run_bad(series_pairs(sim_series, i1=Pair(item.date, cropped, str(item.coarse))), tmp_path, "another extent")


def test_fine_with_another_crs(sim_series, tmp_path):
    item = sim_series.items[1]
    other = translated(item.fine, tmp_path / "crs.tif", outputSRS="EPSG:32756")
    run_bad(series_pairs(sim_series, i1=Pair(item.date, other, str(item.coarse))), tmp_path, "another CRS")


def test_fine_with_other_bands(sim_series, tmp_path):
    item = sim_series.items[2]
    other = translated(item.fine, tmp_path / "bands.tif", bandList=[1, 2, 3, 4])
    run_bad(series_pairs(sim_series, i2=Pair(item.date, other, str(item.coarse))), tmp_path, "has 4 bands")


def test_coarse_not_covering_its_fine(sim_series, tmp_path):
    item = sim_series.items[0]
    info = gdal.Info(str(item.coarse), format="json")
    width, height = info["size"]
    half = translated(item.coarse, tmp_path / "half.tif", srcWin=[0, 0, width // 2, height])
    run_bad(series_pairs(sim_series, i0=Pair(item.date, str(item.fine), half)), tmp_path, "covers only")


def test_no_patch_with_enough_valid_pixels(sim_series, tmp_path):
    pairs = series_pairs(sim_series)
    for index in range(3):  # the training dates: three pixels in four are nodata
        path = translated(pairs[index].fine, tmp_path / f"holes{index}.tif")
        dataset = gdal.Open(path, gdal.GA_Update)
        for band in range(1, dataset.RasterCount + 1):
            data = dataset.GetRasterBand(band).ReadAsArray()
            holes = np.ones(data.shape, bool)
            holes[::2, ::2] = False
            data[holes] = -9999
            dataset.GetRasterBand(band).WriteArray(data)
        dataset = None
        pairs[index] = Pair(pairs[index].date, path, pairs[index].coarse)
    run_bad(pairs, tmp_path, "valid pixels")


def test_bad_parameters(sim_series, tmp_path):
    with pytest.raises(CtstfmError, match="validation_fraction"):
        train(sim_series.manifest, tmp_path / "m.pt", validation_fraction=1.5, **TINY)
    with pytest.raises(CtstfmError, match="epochs"):
        train(sim_series.manifest, tmp_path / "m.pt", **dict(TINY, epochs=0))


def test_command_line(sim_series, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "cli.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "model_core", "train", "--out", str(out), "--epochs", "1", "--patch-size", "32",
            "--patches-per-epoch", "4", "--width", "8", "--lr", "3e-3", "--device", "cpu", "--quiet", "--json"]
    done = subprocess.run(args + ["--manifest", str(sim_series.manifest)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"] == str(out) and report["epochs"] == 1 and out.exists()
    bad = subprocess.run(args + ["--fine", str(sim_series.items[0].fine), "--coarse", str(sim_series.items[0].coarse),
                                 "--dates", "2021-04-01"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "at least two dates" in bad.stderr


# ------------------------------------------------------------------ several scenes


@pytest.fixture(scope="module")
def two_scenes(make_series):
    """Two small scenes of different kinds, sizes and CRSs (fields 64 px in EPSG:32755, urban 80 px in
    EPSG:32650), 4 dates each."""
    return make_series(kind="fields", seed=1, size=64, count=4), make_series(kind="urban", seed=2, size=80, count=4)


def scene_rows(series, name, dates=None):
    dates = dates or [item.date for item in series.items]
    return [(date.isoformat(), item.fine, item.coarse, name) for date, item in zip(dates, series.items)]


@pytest.fixture(scope="module")
def two_scene_run(two_scenes, tmp_path_factory):
    """One tiny run on a manifest with a scene column; the urban rows carry the fields scene's dates
    (the same date in two scenes is fine)."""
    fields, urban = two_scenes
    folder = tmp_path_factory.mktemp("two_scenes")
    dates = [item.date for item in fields.items]
    manifest = write_manifest(folder / "scenes.csv", scene_rows(urban, "urban", dates) + scene_rows(fields, "fields"))
    log = Log()
    out = folder / "model.pt"
    result = train(manifest, out, progress=log, max_validation_windows=5, **dict(TINY, patches_per_epoch=8))
    return result, log, out, manifest


def test_manifest_scene_column(two_scene_run):
    pairs = read_manifest(two_scene_run[3])
    assert [p.scene for p in pairs] == ["urban"] * 4 + ["fields"] * 4
    assert [p.date for p in pairs[:4]] == [p.date for p in pairs[4:]] == sorted(p.date for p in pairs[:4])


def test_two_scenes_train_together(two_scene_run, two_scenes):
    from model_core.model_file import load_model

    result, log, out, manifest = two_scene_run
    fields, urban = two_scenes
    assert not result.cancelled and result.epochs == 2
    assert [s["name"] for s in result.scenes] == ["urban", "fields"]
    assert [s["size"] for s in result.scenes] == [[80, 80], [64, 64]]
    prov = load_model(out).provenance
    assert prov["data"]["manifest"] == str(manifest.resolve())
    for record in prov["scenes"]:
        assert record["manifest"] == str(manifest.resolve())
        assert record["dates"] == [d.isoformat() for d in fields.dates]
        assert record["validation_mode"] == "dates" and record["validation_dates"] == [fields.dates[3].isoformat()]
    # 5 validation windows at most, shared between the scenes (4 candidates each).
    assert sorted(s["validation_windows"] for s in prov["scenes"]) == [2, 3] and prov["validation_windows"] == 5
    assert prov["samples"][0].startswith("urban 2") and prov["samples"][-1].startswith("fields 2")
    text = log.text()
    assert "2 scenes, 8 dates in all" in text
    assert "Scene 'urban': 4 dates, 80 x 80 px. Chronological split" in text
    assert "Scene 'fields': 4 dates, 64 x 64 px. Chronological split" in text
    assert "(urban: " in text and ", fields: " in text


def test_two_scene_checkpoint_refuses_other_data(two_scene_run, two_scenes, tmp_path):
    _, _, out, _ = two_scene_run
    fields, _ = two_scenes
    with pytest.raises(CtstfmError, match="other data"):
        train(fields.manifest, out, resume=True, **TINY)


def test_patches_are_drawn_in_proportion_to_the_training_area():
    from model_core.training import PatchSampler, Sample, fair_shares

    class Data:
        def __init__(self):
            self.reads = []

        def read(self, sample, window):
            self.reads.append((sample, window))
            return [np.ones((1, 4, 4), np.float32)] * 3 + [np.ones((4, 4), bool)]

    data = Data()
    small, large = Sample(1, 0), Sample(3, 2)
    sampler = PatchSampler(data, [small, large], [16, 48], [16, 32], 4, 0.5, np.random.default_rng(0))
    sampler.batch(800)
    share = sum(sample == large for sample, _ in data.reads) / len(data.reads)
    assert share == pytest.approx(6 / 7, abs=0.04)  # areas 16 x 16 and 48 x 32
    assert all(w[1] + w[3] <= 16 and w[0] + w[2] <= 16 for sample, w in data.reads if sample == small)
    assert fair_shares([100], 64) == [64]
    assert fair_shares([3, 100, 100], 64) == [3, 30, 31]
    assert fair_shares([2, 2], 64) == [2, 2]


def test_coarse_images_are_shifted_each_by_its_own_offset():
    """The fine images, label and mask stay at the window's centre; C1 and C0 each move by up to the margin."""
    from model_core.training import PatchSampler, Sample
    from model_core.training.data import ASSUMED_COARSE_RATIO, coarse_shift_pixels

    rows, cols = np.mgrid[0:40, 0:40].astype(np.float32)
    position = rows * 100 + cols  # each pixel says where it is

    class Data:
        def read(self, sample, window):
            col, row, width, height = window
            crop = position[None, row: row + height, col: col + width]
            return (crop + 0.25, crop.copy(), crop + 0.5, np.ones(crop.shape[1:], bool), crop + 0.75)

    sampler = PatchSampler(Data(), [Sample(1, 0)], 40, 40, 8, 0.5, np.random.default_rng(1), shift=3)
    offsets = set()
    for _ in range(200):
        coarse1, fine0, fine1, valid, coarse0 = sampler._draw()[0]
        assert fine0.shape == coarse1.shape == coarse0.shape == (1, 8, 8) and valid.shape == (8, 8)
        np.testing.assert_array_equal(fine1, fine0 + 0.5)
        moves = []
        for coarse, tag in ((coarse1, 0.25), (coarse0, 0.75)):
            dy, dx = divmod(float(coarse[0, 0, 0] - tag - fine0[0, 0, 0]), 100)
            dy, dx = (dy + 1, dx - 100) if dx > 50 else (dy, dx)
            assert abs(dy) <= 3 and abs(dx) <= 3
            np.testing.assert_array_equal(coarse - tag, fine0 + 100 * dy + dx)  # a rigid shift
            moves.append((dy, dx))
        offsets.add(tuple(moves))
    assert len({move for pair in offsets for move in pair}) == 49  # every offset within +-3 px is drawn
    assert any(c1 != c0 for c1, c0 in offsets)  # C1 and C0 move independently
    # a footprint of F0 (two-image model, reference "footprint") is made from the fine image: it stays in place
    from model_core.training.data import shift_coarse

    wide = Data().read(None, (0, 0, 14, 14))
    _, fine0, _, _, footprint = shift_coarse(wide, 3, 8, np.random.default_rng(2), shift_t0=False)
    np.testing.assert_array_equal(footprint, fine0 + 0.75)
    assert coarse_shift_pixels(0.3, 16.0) == 5 and coarse_shift_pixels(0.5, 8.0) == 4
    assert coarse_shift_pixels(0.3, 1.0) == round(0.3 * ASSUMED_COARSE_RATIO)  # already on the fine grid
    assert coarse_shift_pixels(0.0, 16.0) == 0


def test_scenes_need_the_same_bands(two_scenes, tmp_path):
    fields, urban = two_scenes
    pairs = [Pair(item.date, str(item.fine), str(item.coarse), "fields") for item in fields.items]
    pairs += [
        Pair(item.date, translated(item.fine, tmp_path / f"u{i}.tif", bandList=[1, 2, 3, 4]), str(item.coarse), "urban")
        for i, item in enumerate(urban.items)
    ]
    run_bad(pairs, tmp_path, "scene 'urban' have 4 bands but those of scene 'fields' have 6")


def test_duplicate_date_within_a_scene(two_scenes, tmp_path):
    fields, urban = two_scenes
    pairs = [Pair(item.date, str(item.fine), str(item.coarse), "fields") for item in fields.items]
    pairs += [Pair(item.date, str(item.fine), str(item.coarse), "urban") for item in urban.items]
    pairs.append(Pair(urban.items[0].date, str(urban.items[1].fine), str(urban.items[1].coarse), "urban"))
    run_bad(pairs, tmp_path, "appears twice in scene 'urban'")


def test_command_line_repeated_manifest(two_scenes, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    fields, urban = two_scenes
    out = tmp_path / "cli.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "model_core", "train", "--out", str(out), "--epochs", "1", "--patch-size", "32",
            "--patches-per-epoch", "4", "--width", "8", "--lr", "3e-3", "--device", "cpu", "--quiet", "--json",
            "--manifest", str(fields.manifest), "--manifest", str(urban.manifest)]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Both files are called manifest.csv: their folders tell the scenes apart.
    names = [f"{Path(series.manifest).parent.name}/manifest" for series in (fields, urban)]
    assert [s["name"] for s in report["scenes"]] == names
    assert [s["manifest"] for s in report["scenes"]] == [str(Path(s.manifest).resolve()) for s in (fields, urban)]
    assert [len(s["dates"]) for s in report["scenes"]] == [4, 4] and out.exists()


def test_a_favourable_verdict_from_a_spatial_split_says_what_it_cannot_show():
    """With fewer than four dates the validation rows belong to the training dates: the verdict says so."""
    from types import SimpleNamespace

    from model_core.training.reports import SPATIAL_CAVEAT, verdict

    def state(model_mae):
        return SimpleNamespace(best_metrics={"mae": model_mae}, initial_metrics={"mae": 0.02}, best_epoch=3,
                               baselines={"no_change": {"mae": 0.02}, "first_guess": {"mae": 0.03}})

    better = verdict(state(0.015), "spatial")[-1]
    assert better.startswith("The model improves on the unchanged fine image by 25.0 % MAE (validation MAE 0.01500 "
                             "vs 0.02000); it improves on the first guess by 50.0 % MAE (0.03000).")
    assert better.endswith(SPATIAL_CAVEAT) and "ctstfm:assess" in better
    assert not verdict(state(0.015), "dates")[-1].endswith(SPATIAL_CAVEAT)
    worse = verdict(state(0.025), "spatial")[-1]
    assert worse.startswith("WARNING") and SPATIAL_CAVEAT not in worse
    assert "it improves on the first guess by 16.7 % MAE (0.03000)" in worse
    assert "the first guess validated better, by 20.0 % MAE (0.03000)" in verdict(state(0.036), "spatial")[-1]


def test_a_warning_verdict_says_when_even_the_first_guess_is_worse_than_no_change():
    """Where the coarse change is mostly the sensors' disagreement, the warning says so; otherwise it does not."""
    from types import SimpleNamespace

    from model_core.training.reports import verdict

    def state(guess_mae):
        return SimpleNamespace(best_metrics={"mae": 0.025}, initial_metrics={"mae": 0.03}, best_epoch=3,
                               baselines={"no_change": {"mae": 0.02}, "first_guess": {"mae": guess_mae}})

    noisy = verdict(state(0.03), "spatial")[-1]
    assert noisy.startswith("WARNING") and "Even the first guess, the coarse change added to the fine image, is 50 % " \
        "worse than the unchanged image here" in noisy and noisy.endswith("for these dates.")
    assert "Even the first guess" not in verdict(state(0.018), "spatial")[-1]


def test_training_leaves_out_the_clouds_of_its_fine_and_coarse_images(sim_series, tmp_path):
    """The manifest's mask column, read by its rule, makes cloudy pixels neither input (filled like nodata, from
    the coarse image) nor label; its coarse_mask column (a MODIS-like state band on its own 960 m grid) makes the
    pixels cloudy in the coarse image at T1 no label; a quality band read as 0/1 is refused before any work."""
    from helpers import write_raster

    from model_core.errors import OptionError
    from model_core.model_file import load_model
    from model_core.raster import RasterInfo
    from model_core.training.data import SeriesData
    from model_core.training.series import Sample, read_manifest, write_manifest
    from model_core.training.trainer import TrainSettings

    pairs = read_manifest(sim_series.manifest)
    grid = RasterInfo.read(pairs[0].fine)
    clouds = {0: (slice(0, 16), slice(0, 24)), 1: (slice(8, 24), slice(16, 32))}  # reference, target
    x0, _, _, y0, _, _ = grid.geotransform
    state = np.full((4, 4), 72, dtype=np.uint16)  # clear land, low aerosol
    state[1, 0] |= 1  # cloudy: fine rows 32:64, columns 0:32 of the target's coarse image
    state_path = write_raster(tmp_path / "state_1.tif", state, (x0, 960.0, 0, y0, 0, -960.0), crs=grid.crs_wkt)
    rows = []
    for index, pair in enumerate(pairs):
        mask = ""
        if index in clouds:
            qa = np.full((grid.height, grid.width), 21824, dtype=np.uint16)  # Landsat C2 QA_PIXEL, clear land
            qa[clouds[index]] |= 8  # bit 3: cloud
            mask = write_raster(tmp_path / f"qa_{index}.tif", qa, grid.geotransform, crs=grid.crs_wkt)
        rows.append((pair.date, pair.fine, pair.coarse, mask, state_path if index == 1 else ""))
    manifest = write_manifest(tmp_path / "clouds.csv", rows, ("date", "fine", "coarse", "mask", "coarse_mask"))
    masked = read_manifest(manifest)
    assert [bool(pair.mask) for pair in masked] == [True, True, False, False]
    assert [bool(pair.coarse_mask) for pair in masked] == [False, True, False, False]

    sample, window = Sample(target=1, reference=0), (0, 0, 64, 64)
    plain = SeriesData(pairs, scale=1e-4, bands=6)
    rules = TrainSettings(mask_rule="landsat-c2-qa", coarse_mask_rule="modis-state")
    cloudy = SeriesData(masked, scale=1e-4, bands=6, clouds=rules.clouds, coarse_clouds=rules.coarse_clouds)
    (_, _, _, valid_plain), (coarse1, fine0, label, valid) = plain.read(sample, window), cloudy.read(sample, window)
    plain.close(), cloudy.close()
    expected = valid_plain.copy()
    # The coarse cloud: its state pixel, widened by the half coarse pixel (8 fine pixels) bilinear carries it.
    for rows_cols in (*clouds.values(), (slice(24, 64), slice(0, 40))):
        expected[rows_cols] = False
    assert valid_plain.all() and np.array_equal(valid, expected)
    reference_cloud = clouds[0]
    np.testing.assert_array_equal(fine0[(slice(None), *reference_cloud)], coarse1[(slice(None), *reference_cloud)])
    assert (label[(slice(None), *clouds[1])] == 0).all()

    settings = dict(epochs=1, batch_size=2, patch_size=32, patches_per_epoch=2, width=8, from_scratch=True,
                    max_validation_windows=4)
    with pytest.raises(OptionError, match=r"cloud mask of 2021-\d\d-\d\d '.*qa_0\.tif' marks 100 % of the image as "
                       r"cloud .* most common value is 21824"):
        train(manifest, tmp_path / "refused.pt", **settings)
    assert not (tmp_path / "refused.pt").exists()
    before = (tmp_path / "qa_0.tif").read_bytes()
    with pytest.raises(CtstfmError, match=r"is the cloud mask of"):
        train(manifest, tmp_path / "qa_0.tif", mask_rule="landsat-c2-qa", **settings)
    assert (tmp_path / "qa_0.tif").read_bytes() == before
    with pytest.raises(OptionError, match=r"coarse cloud mask of 2021-\d\d-\d\d '.*state_1\.tif' marks 100 % .* "
                       r"with coarse_mask_rule"):
        train(manifest, tmp_path / "refused.pt", mask_rule="landsat-c2-qa", **settings)
    result = train(manifest, tmp_path / "masked.pt", mask_rule="landsat-c2-qa", coarse_mask_rule="modis-state",
                   **settings)
    assert load_model(result.model_path).provenance["clouds"] == {
        "masks": 2, "mask_rule": "landsat-c2-qa", "coarse_masks": 1, "coarse_mask_rule": "modis-state"}


def test_a_series_manifest_trains_on_its_dates_with_both_images(sim_series, tmp_path):
    """The manifest of a series to fill (a date with only its coarse image) trains as it is: that date is left
    out, and the log says so."""
    from model_core.model_file import load_model
    from model_core.training.series import write_manifest

    items = sim_series.items
    rows = [(item.date, "" if index == 1 else item.fine, item.coarse) for index, item in enumerate(items)]
    manifest = write_manifest(tmp_path / "series.csv", rows)
    log = Log()
    result = train(manifest, tmp_path / "m.pt", epochs=1, batch_size=2, patch_size=32, patches_per_epoch=2, width=8,
                   from_scratch=True, max_validation_windows=4, progress=log)
    assert f"1 date(s) without a fine or a coarse image do not train: {items[1].date.isoformat()} (no fine)." \
        in log.messages
    used = [item.date.isoformat() for index, item in enumerate(items) if index != 1]
    assert load_model(result.model_path).provenance["dates"] == used


def test_a_fine_date_kept_out_of_training_is_where_the_series_job_checks_the_model(sim_series, tmp_path):
    """KEEP_OUT leaves a fine date of the manifest out of training (provenance: not among its dates, listed as kept
    out); the series job then scores the model there against the plugin's instead of ruling on it unscored. A date
    that is not a fine date of the series, or not a date, is refused before any work, naming the option."""
    from model_core.model_file import load_model
    from model_core.series import fuse_series
    from model_core.training.series import write_manifest

    items = sim_series.items
    inner = items[1].date.isoformat()
    for bad, said in (("2001-01-01", "is not a fine date of the series; its fine dates are"), ("May", "not a date")):
        with pytest.raises(CtstfmError, match=f"keep_out: .*{said}"):
            train(sim_series.manifest, tmp_path / "new_folder" / "bad.pt", keep_out=bad, **TINY)
    assert not list(tmp_path.iterdir())
    log = Log()
    result = train(sim_series.manifest, tmp_path / "m.pt", progress=log, keep_out=inner,
                   **dict(TINY, epochs=1, patches_per_epoch=4))
    assert any(m.startswith(f"Kept out of training: {inner}.") for m in log.messages), log.messages
    provenance = load_model(result.model_path).provenance
    assert inner not in provenance["dates"] and provenance["kept_out"] == [inner], provenance

    # The series: every date's fine image, and a coarse-only date between the first two. Trained on as it is, the
    # log says what KEEP_OUT is for.
    rows = [(item.date, item.fine, item.coarse) for item in items]
    rows.append((items[0].date + dt.timedelta(days=8), "", items[1].coarse))
    log = Log()
    train(write_manifest(tmp_path / "to_fill.csv", rows), tmp_path / "all.pt", progress=log,
          **dict(TINY, epochs=1, patches_per_epoch=4))
    middle = sorted(item.date for item in items)[len(items) // 2].isoformat()
    assert any(m.startswith("This series has 1 date(s) to fill between fine dates.") and f"KEEP_OUT={middle}" in m
               for m in log.messages), log.messages
    log = Log()
    fuse_series(write_manifest(tmp_path / "series.csv", rows), result.model_path, tmp_path / "fused", tile=64,
                overlap=8, device="cpu", progress=log)
    weighed = " and the mean of both" if len(provenance["dates"]) >= 3 else ""
    assert any(m.startswith(f"Checking m.pt against the plugin's model{weighed} on the series' fine dates {inner},")
               for m in log.messages), log.messages
    assert any(m.startswith("Dates between fine dates:") or m.startswith("Warning: Dates between fine dates:")
               for m in log.messages), log.messages


def test_training_on_an_area_of_few_coarse_pixels_warns_that_tuning_may_not_pay(make_series, sim_series):
    """A 64 px site spans 16 coarse pixels of 480 m (own grid, or assumed so on the fine grid): warned; 128 px
    (64 coarse pixels) is not."""
    from model_core.training.data import few_coarse_pixels_note
    from model_core.training.series import check_scenes, read_manifest

    def note(series):
        return few_coarse_pixels_note(check_scenes(read_manifest(str(series.manifest))))

    small = note(make_series(kind="fields", count=2, size=64, seed=5))
    assert small.startswith("The training images span only about 16 coarse pixels (64 x 64 px, coarse pixels of "
                            "16.0 fine pixels)") and "untrained one (no MODEL)" in small
    on_fine_grid = note(make_series(kind="fields", count=2, size=64, seed=5, coarse_grid="fine"))
    assert "a coarse pixel taken as 16 fine pixels, the coarse images being on the fine grid" in on_fine_grid
    assert note(sim_series) == ""
