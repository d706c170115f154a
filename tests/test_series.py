"""The time-series job (model_core.series, fuse-series, ctstfm:fuseseries) on small simulated series,
with the embedded model: leave-one-date-out accuracy, clouds, resume, bad inputs, QGIS loading and
qgis_process."""

import csv
import datetime as dt
import json
import os

import numpy as np
import pytest
import torch

from conftest import run_qgis_process
from helpers import Log, write_raster

from model_core import paths
from model_core.errors import Cancelled, CtstfmError
from model_core.progress import Progress
from model_core.raster import RasterInfo, read_metadata
from model_core.series import fuse_series, load_series
from model_core.training.series import write_manifest

MODEL = str(paths.DEFAULT_MODEL)
FAST = dict(tile=64, overlap=8, device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads are several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def five_dates(make_series):
    return make_series(kind="fields", count=5, size=64, seed=3, interval_days=16)


def read_all(path):
    from osgeo import gdal

    return gdal.Open(str(path)).ReadAsArray()


def mae(predicted, truth, nodata=-9999):
    ok = (predicted != nodata).all(axis=0) & (truth != nodata).all(axis=0)
    return float(np.abs(predicted.astype(float) - truth)[:, ok].mean()) * 1e-4


def fill_second_date(path, items):
    """A manifest of the first date (fine and coarse) and the second (coarse only): one date to fill."""
    return write_manifest(path, [(items[0].date, items[0].fine, items[0].coarse), (items[1].date, "", items[1].coarse)])


def same_up_to_rounding(a, b):
    """Equal DN for DN, but for the odd pixel whose value sits on a rounding tie: the series blends a
    single prediction with weight w as (w p) / w, which can differ from p in the last float bit."""
    difference = np.abs(a.astype(np.int64) - b)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, (difference.max(), (difference > 0).sum())


def test_two_references_beat_the_nearest_one_leaving_each_date_out(five_dates, tmp_path):
    two = fuse_series(str(five_dates.manifest), MODEL, tmp_path / "two", targets="all", **FAST)
    one = fuse_series(str(five_dates.manifest), MODEL, tmp_path / "one", targets="all", references=1, **FAST)
    assert two.dates == [d.isoformat() for d in five_dates.dates] and len(two.written) == 5
    inner = five_dates.items[1:-1]  # the end dates have one reference either way
    errors = {name: np.mean([mae(read_all(result.files[item.date.isoformat()]), read_all(item.fine))
                             for item in inner]) for name, result in (("two", two), ("one", one))}
    assert errors["two"] < 0.95 * errors["one"], errors
    meta = read_metadata(two.files[inner[0].date.isoformat()])
    assert meta["CTSTFM_DATE"] == inner[0].date.isoformat()
    assert meta["CTSTFM_REFERENCE_DATES"] == f"{five_dates.dates[0]},{five_dates.dates[2]}"
    with open(two.index) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["date"] for row in rows] == two.dates and all(0 < float(r["weight_earlier"]) < 1 for r in rows[1:-1])


def test_one_reference_equals_a_fuse_run(five_dates, tmp_path):
    """The reused encodings change nothing: a one-reference date is ctstfm:fuse's result (up to rounding)
    (the series runs the network as trained, so fuse is asked for the same 'eager' path)."""
    from model_core.fusion import fuse

    items = five_dates.items
    manifest = fill_second_date(tmp_path / "m.csv", items)
    outputs = {}
    for window in (31, 0):  # with the similar-pixel filter (the default) and without
        result = fuse_series(manifest, MODEL, tmp_path / f"series_{window}", references=1, similar_window=window,
                             **FAST)
        fused = result.files[items[1].date.isoformat()]
        fuse(items[0].fine, items[1].coarse, MODEL, tmp_path / f"fuse_{window}.tif", inference="eager",
             threads=torch.get_num_threads(), similar_window=window, **FAST)
        assert read_metadata(fused)["CTSTFM_SIMILAR_WINDOW"] == str(window)
        outputs[window] = read_all(fused)
        same_up_to_rounding(outputs[window], read_all(tmp_path / f"fuse_{window}.tif"))
    assert np.abs(outputs[31].astype(float) - outputs[0]).mean() > 1  # DN: the filter did change the series


def test_a_three_image_model_gets_each_reference_dates_coarse_image(five_dates, tmp_path):
    """In a series a three-image model is fed C0, the reference date's own coarse image, automatically:
    a one-reference date is exactly ctstfm:fuse with COARSE_T0 (and differs from fusing without it)."""
    import dataclasses

    from model_core.fusion import fuse
    from model_core.model_file import load_model, save_model

    loaded = load_model(MODEL)
    three = str(save_model(tmp_path / "three.pt", loaded.model, config=dataclasses.replace(loaded.config, images=3),
                           band_names=loaded.band_names, scale=loaded.scale))
    items = five_dates.items
    manifest = fill_second_date(tmp_path / "m.csv", items)
    log = Log()
    result = fuse_series(manifest, three, tmp_path / "series", references=1, progress=log, **FAST)
    assert any("three-image" in m and "coarse T0" in m for m in log.messages), log.messages
    fused = read_all(result.files[items[1].date.isoformat()])
    eager = dict(FAST, inference="eager", threads=torch.get_num_threads())
    fuse(items[0].fine, items[1].coarse, three, tmp_path / "with.tif", coarse_t0_path=items[0].coarse, **eager)
    fuse(items[0].fine, items[1].coarse, three, tmp_path / "without.tif", **eager)
    same_up_to_rounding(fused, read_all(tmp_path / "with.tif"))
    assert np.abs(fused.astype(float) - read_all(tmp_path / "without.tif")).mean() > 1.0  # DN: C0 was used

    # A reference date without its coarse image: the model falls back to its two-image first guess, saying so.
    manifest = write_manifest(tmp_path / "m2.csv", [(items[0].date, items[0].fine, ""),
                                                    (items[1].date, "", items[1].coarse)])
    log = Log()
    result = fuse_series(manifest, three, tmp_path / "series2", references=1, progress=log, **FAST)
    assert any(m.startswith("Warning:") and str(items[0].date) in m for m in log.messages), log.messages
    same_up_to_rounding(read_all(result.files[items[1].date.isoformat()]), read_all(tmp_path / "without.tif"))


def test_a_three_band_series_runs_with_the_six_band_model_matched_by_name(make_series, tmp_path):
    """Bands are matched to the model's by name as in ctstfm:fuse: the 6-band model, cut down to green, red
    and NIR by the band descriptions, fills a 3-band series with fuse's result; BANDS names them too."""
    from model_core.fusion import fuse

    series = make_series(kind="fields", count=2, size=64, seed=3, interval_days=16, bands="green,red,nir")
    items = series.items
    manifest = fill_second_date(tmp_path / "m.csv", items)
    log = Log()
    result = fuse_series(manifest, MODEL, tmp_path / "series", references=1, progress=log, **FAST)
    assert any("band descriptions" in m and "specialised to these 3 bands" in m for m in log.messages), log.messages
    fused = result.files[items[1].date.isoformat()]
    assert RasterInfo.read(fused).descriptions == ("green", "red", "nir")
    fuse(items[0].fine, items[1].coarse, MODEL, tmp_path / "fuse.tif", inference="eager",
         threads=torch.get_num_threads(), **FAST)
    same_up_to_rounding(read_all(fused), read_all(tmp_path / "fuse.tif"))

    log = Log()
    named = fuse_series(manifest, MODEL, tmp_path / "named", references=1, bands="green,red", progress=log, **FAST)
    assert any("the band list 'green,red'" in m for m in log.messages), log.messages
    assert RasterInfo.read(named.files[items[1].date.isoformat()]).count == 2
    with pytest.raises(CtstfmError, match="'rededge' is not a band name known here"):
        fuse_series(manifest, MODEL, tmp_path / "bad", references=1, bands="green,rededge,nir", **FAST)
    assert not (tmp_path / "bad").exists() or not os.listdir(tmp_path / "bad")


def test_a_float_reflectance_series_is_read_at_its_scale(five_dates, tmp_path):
    """SCALE 1 reads a series of float reflectance (0-1): its date equals the DN x 10000 series' date (float32
    outputs, up to the DN's rounding). Without it the series is refused before any work, naming the option."""
    from model_core.errors import OptionError

    items = five_dates.items

    def as_reflectance(path):
        info = RasterInfo.read(path)
        data = read_all(path).astype(np.float32)
        nodata = np.array([np.nan if value is None else value for value in info.nodata], np.float32)[:, None, None]
        data = np.where(data == nodata, np.nan, data * 1e-4)
        return write_raster(tmp_path / os.path.basename(path), data, info.geotransform, crs=info.crs_wkt)

    reflectance = fill_second_date(tmp_path / "float.csv", [
        type(item)(item.date, as_reflectance(item.fine), as_reflectance(item.coarse)) for item in items[:2]])
    with pytest.raises(OptionError, match=r"fine image of .* look like reflectance \(0-1\)\. Set scale to 1"):
        fuse_series(reflectance, MODEL, tmp_path / "refused", references=1, **FAST)
    assert not (tmp_path / "refused").exists() or not os.listdir(tmp_path / "refused")
    options = dict(FAST, references=1, output_type="float32")
    fused = fuse_series(reflectance, MODEL, tmp_path / "float", scale=1, **options).files[items[1].date.isoformat()]
    dn = fuse_series(fill_second_date(tmp_path / "dn.csv", items), MODEL, tmp_path / "dn", **options)
    expected = read_all(dn.files[items[1].date.isoformat()])
    assert np.abs(read_all(fused) - expected).max() < 2e-4, np.abs(read_all(fused) - expected).max()


def test_the_scale_check_reads_only_the_bands_in_use(make_series, tmp_path):
    """Images that also hold a band which is not reflectance (a QA band of large DN, whose mean would be refused
    as reflectance) are checked on the bands the series uses, so the series runs."""
    series = make_series(kind="fields", count=2, size=64, seed=3, interval_days=16, bands="green,red,nir")

    def with_qa_band(path):
        info = RasterInfo.read(path)
        data = read_all(path)
        data = np.concatenate([data, np.full((1,) + data.shape[1:], 32000, data.dtype)])
        return write_raster(tmp_path / os.path.basename(path), data, info.geotransform, crs=info.crs_wkt,
                            nodata=info.nodata[0], descriptions=["green", "red", "nir", "qa"])

    items = [type(item)(item.date, with_qa_band(item.fine), with_qa_band(item.coarse)) for item in series.items]
    manifest = fill_second_date(tmp_path / "m.csv", items)
    result = fuse_series(manifest, MODEL, tmp_path / "series", references=1, **FAST)
    assert RasterInfo.read(result.files[items[1].date.isoformat()]).count == 3


def test_a_model_of_the_users_is_checked_against_the_plugins_on_fine_dates_left_out(five_dates, tmp_path, monkeypatch):
    """A model of the user's filling dates between fine dates is scored against the plugin's model and the mean of
    both on the inner fine date left out, when that date was not among its training dates: the best fills those
    dates (the plugin's: exactly its own run's files), the given model the dates beyond the last fine date, and a
    tie keeps the user's. Trained on that date (its provenance says), it is not scored: the plugin's model fills
    them. CHOOSE_MODEL off keeps the given model everywhere; without an inner fine date a fine-tuned model fills
    them unchecked, averaged with the plugin's model (the mean of the two runs' files), with the caveat."""
    import dataclasses
    import shutil

    from model_core.model_file import load_model, save_model

    loaded = load_model(MODEL)
    items = five_dates.items
    # fine dates 0, 2 and 4 with their coarse images; dates 1 and 3 between them, 5 (a coarse date 16 days after the
    # last fine one) beyond
    rows = [(it.date, it.fine if i % 2 == 0 else "", it.coarse) for i, it in enumerate(items)]
    rows.append((items[4].date + dt.timedelta(days=16), "", items[3].coarse))
    manifest = write_manifest(tmp_path / "m.csv", rows)
    between, beyond = [items[1].date.isoformat(), items[3].date.isoformat()], rows[-1][0].isoformat()

    def tuned(name, dates):
        """A model that over-predicts every coarse change twice over, trained (its provenance says) on ``dates``."""
        return str(save_model(tmp_path / name, loaded.model, band_names=loaded.band_names, scale=loaded.scale,
                              config=dataclasses.replace(loaded.config, change_gain=(2.0,) * loaded.config.bands),
                              provenance={"dates": [date.isoformat() for date in dates]}))

    def run(name, model, **options):
        log = Log()
        result = fuse_series(manifest, model, tmp_path / name, progress=log, **FAST, **options)
        with open(result.index) as f:
            index = {row["date"]: row for row in csv.DictReader(f)}
        scores = {date: json.loads(read_metadata(result.files[date])["CTSTFM_FIRST_GUESS"]).get(
            "model_scores_on_fine_dates_left_out") for date in between}
        return {date: read_all(path) for date, path in result.files.items()}, index, scores, log.messages

    plugin, plugin_index, _, _ = run("plugin", None)
    elsewhere = tuned("elsewhere.pt", [items[0].date, items[4].date])  # date 2 kept out of its training
    chosen, index, scores, messages = run("elsewhere", elsewhere)
    unchecked, unchecked_index, _, _ = run("unchecked", elsewhere, choose_model=False)
    said = [m for m in messages if m.startswith("Warning: Dates between fine dates")]
    assert len(said) == 1 and f"the fine dates {items[2].date.isoformat()}, left out" in said[0], messages
    assert "the plugin's model fills the 2 date(s)" in said[0], said
    for date in between:
        truth = read_all(items[1 if date == between[0] else 3].fine)
        assert np.array_equal(chosen[date], plugin[date]), date
        assert mae(chosen[date], truth) < mae(unchecked[date], truth), date
        assert index[date]["model"] == plugin_index[date]["model"] == "default_model_three_image.pt", index[date]
        assert unchecked_index[date]["model"] == "elsewhere.pt"
        assert scores[date]["default_model_three_image.pt"]["mae"] < scores[date]["elsewhere.pt"]["mae"], scores
        assert len(scores[date]) == 2, scores  # trained on two dates: its mean with the plugin's is not weighed
    assert any(m.startswith("elsewhere.pt lists 2 training date(s)") for m in messages), messages
    assert np.array_equal(chosen[beyond], unchecked[beyond]) and index[beyond]["model"] == "elsewhere.pt"

    # Trained on three dates (date 2 still kept out): the mean of both is the third candidate, and the lowest score
    # on date 2 left out names the file that fills the dates between.
    broader, index, scores, messages = run("broader", tuned("broader.pt", [items[i].date for i in (0, 1, 4)]))
    files = {"broader.pt": "broader.pt", "default_model_three_image.pt": "default_model_three_image.pt",
             "mean of broader.pt and default_model_three_image.pt": "broader.pt + default_model_three_image.pt"}
    for date in between:
        assert set(scores[date]) == set(files), scores
        assert index[date]["model"] == files[min(scores[date], key=lambda name: scores[date][name]["mae"])], index
    assert any("Dates between fine dates: the fine dates" in m and "the mean of both models MAE" in m for m in messages)
    # The mean is scored from its members' predictions (a blend is linear in them): the same as predicting it afresh.
    from model_core.series_fit import LeftOutPredictions

    monkeypatch.setattr(LeftOutPredictions, "mean", staticmethod(lambda parts: None))
    _, _, afresh, _ = run("broader_afresh", str(tmp_path / "broader.pt"))
    name = "mean of broader.pt and default_model_three_image.pt"
    assert abs(afresh[between[0]][name]["mae"] - scores[between[0]][name]["mae"]) < 1e-5, (afresh, scores)
    monkeypatch.undo()

    # Trained on date 2 too: its score there would flatter it; the plugin's model fills the dates between.
    everywhere, index, scores, messages = run("everywhere", tuned("everywhere.pt", [items[i].date for i in (0, 2, 4)]))
    assert any(m.startswith("Warning: everywhere.pt's score on the fine dates") and "keep one of these" in m
               for m in messages), messages
    assert all(np.array_equal(everywhere[date], plugin[date]) and scores[date] is None for date in between)

    # The plugin's own model under another name scores the same: a tie keeps the user's file.
    mine = shutil.copy(paths.DEFAULT_MODEL_THREE_IMAGE, tmp_path / "mine.pt")
    same, same_index, _, messages = run("mine", mine)
    assert any(m.startswith("Dates between fine dates") and m.endswith("mine.pt fills every date.")
               for m in messages), messages
    assert all(same_index[date]["model"] == "mine.pt" and np.array_equal(same[date], plugin[date]) for date in between)

    # A band the plugin's model does not know: the check is skipped, not the run.
    names = tuple(loaded.band_names[:-1]) + ("thermal",)
    odd = str(save_model(tmp_path / "odd.pt", loaded.model, band_names=names, scale=loaded.scale, config=loaded.config,
                         provenance={}))
    log = Log()
    result = fuse_series(manifest, odd, tmp_path / "odd", progress=log, bands=",".join(names), **FAST)
    assert any(m.startswith("The plugin's model cannot read this series' bands") for m in log.messages), log.messages
    assert len(result.files) == 3

    # No fine date between two others: nothing to check the model on; averaged with the plugin's, it fills the date,
    # with the caveat.
    # (Without the similar-pixel filter: it clips at 0 after averaging a change, so at dark pixels the filtered mean of
    # two predictions may differ from the mean of the two filtered runs by a few DN.)
    two = write_manifest(tmp_path / "two.csv", rows[:3])
    log = Log()
    unfiltered = dict(FAST, similar_window=0)
    averaged = fuse_series(two, elsewhere, tmp_path / "two", progress=log, **unfiltered)
    assert any(m.startswith("Warning: Model elsewhere.pt was fine-tuned") and "unchecked by the mean of" in m
               for m in log.messages), log.messages
    alone = fuse_series(two, elsewhere, tmp_path / "two_alone", choose_model=False, **unfiltered)
    plugin_alone = fuse_series(two, None, tmp_path / "two_plugin", **unfiltered)
    date = between[0]
    with open(averaged.index) as f:
        assert {row["date"]: row["model"] for row in csv.DictReader(f)}[date] == \
            "elsewhere.pt + default_model_three_image.pt"
    mean_of_runs = (read_all(alone.files[date]).astype(float) + read_all(plugin_alone.files[date])) / 2
    assert np.abs(read_all(averaged.files[date]) - mean_of_runs).max() <= 1.0  # DN rounding
    assert not np.array_equal(read_all(alone.files[date]), read_all(plugin_alone.files[date]))
    first_guess = json.loads(read_metadata(averaged.files[date])["CTSTFM_FIRST_GUESS"])
    assert [member["model"] for member in first_guess["averaged"]] == ["elsewhere.pt", "default_model_three_image.pt"]
    assert [member["fitted_on_the_series"] for member in first_guess["averaged"]] == [False, True], first_guess
    log = Log()
    fuse_series(fill_second_date(tmp_path / "after.csv", items), elsewhere, tmp_path / "after", progress=log, **FAST)
    assert not any("fine-tuned" in m or "Dates between" in m for m in log.messages), log.messages


def test_the_first_guess_between_fine_dates_is_fitted_on_dates_left_out():
    """The fit on a fine date left out: where the fine image deviates from the time interpolation of its
    neighbours by half what the coarse image does, the gain is 0.5; where it does not deviate at all and the
    coarse deviation is noise, the gain is 0; without a fine date on either side nothing is fitted."""
    import datetime

    from model_core.progress import Progress
    from model_core.series_fit import (
        fit_between_first_guess,
        fit_change_share,
        fit_samples,
        left_out_dates,
        predict_left_out,
    )
    from model_core.training.series import Pair

    day = datetime.date(2021, 4, 1)
    pairs = [Pair(day + datetime.timedelta(days=d), f"f{d}.tif", f"c{d}.tif") for d in (0, 10, 30)]
    assert left_out_dates(pairs[:2]) == [] and fit_between_first_guess([], None, 64, 64, ["red"], Progress()) == {}
    # two fine dates: each is fitted from the other alone (the whole change between them)
    assert fit_samples(pairs[:2]) == [(pairs[1], ((pairs[0], 1.0),)), (pairs[0], ((pairs[1], 1.0),))]
    assert fit_samples(pairs[:1]) == []
    triples = left_out_dates(pairs + [Pair(day + datetime.timedelta(days=20), "", "c20.tif")])
    assert triples == [tuple(pairs)]
    samples = fit_samples(pairs)
    assert samples == [(pairs[1], ((pairs[0], 2 / 3), (pairs[2], 1 / 3)))], samples
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.normal(0.0, 0.02, (2, 8, 8)), 8, axis=1), 8, axis=2).astype(np.float32)
    base = rng.uniform(0.05, 0.3, (2, 64, 64)).astype(np.float32)
    for factor, expected in ((0.5, 0.5), (0.0, 0.0)):
        # neighbours 10 days before and 20 after: weights 2/3 and 1/3; the middle date deviates from them
        fine = {0: base, 30: base + 0.03, 10: base + 0.01 + factor * smooth}
        coarse = {0: base, 30: base + 0.03, 10: base + 0.01 + smooth}
        days = {pair: (pair.date - day).days for pair in pairs}

        def read(pair, window):
            c, r, w, h = window
            area = np.s_[:, r:r + h, c:c + w]
            return fine[days[pair]][area], coarse[days[pair]][area], np.ones((h, w), bool)

        log = Log()
        fitted = fit_between_first_guess(samples, read, 64, 64, ["red", "nir"], log)
        assert np.allclose(fitted["change_gain"], expected, atol=0.02), fitted
        assert any("fitted on the series' own fine dates left out (2021-04-11)" in m for m in log.messages)

    # The share of the predicted change: a prediction that deviates from the interpolation (earlier weight 0.6)
    # twice as much as the truth does keeps half of its change.
    interpolated = 0.6 * fine[0] + 0.4 * fine[30]

    def predict(before, date, after, window):
        c, r, w, h = window
        truth = fine[10][:, r:r + h, c:c + w]
        return (interpolated[:, r:r + h, c:c + w] + 2.0 * (truth - interpolated[:, r:r + h, c:c + w]),
                np.ones((h, w), bool), np.full((h, w), 0.6, np.float32))

    fine[10] = base + 0.01 + 0.5 * smooth
    log = Log()
    predictions = predict_left_out(triples, read, predict, 64, 64, log)
    share = fit_change_share(predictions, ["red", "nir"], log)
    assert np.allclose(share, 0.5, atol=1e-3), share
    assert any(m.startswith("Share of each prediction's change kept") for m in log.messages), log.messages
    # The same predictions score a model: with that share they are the truth, without it as far off as the
    # interpolation (on the other side); only the dates asked for count.
    deviation = np.abs(fine[10] - interpolated).mean()
    assert predictions.score(share).mae < 1e-3 * deviation, predictions.score(share)
    assert np.isclose(predictions.score().mae, deviation, rtol=1e-3), (predictions.score(), deviation)
    assert predictions.score().pixels == 64 * 64 and predictions.score(dates={day}) is None


def test_dates_between_fine_dates_get_the_fitted_first_guess(five_dates, tmp_path):
    """With three fine dates the series job fits the first guess of the dates between them (logged); dates
    with one reference keep the model's own, and FIT_BETWEEN off gives the model's own everywhere."""
    import dataclasses

    from model_core.model_file import load_model, save_model

    loaded = load_model(MODEL)
    three = str(save_model(tmp_path / "three.pt", loaded.model, config=dataclasses.replace(loaded.config, images=3),
                           band_names=loaded.band_names, scale=loaded.scale))
    items = five_dates.items
    manifest = write_manifest(tmp_path / "m.csv", [(it.date, it.fine if i % 2 == 0 else "", it.coarse)
                                                   for i, it in enumerate(items)])
    outputs = {}
    for fit in (True, False):
        log = Log()
        result = fuse_series(manifest, three, tmp_path / f"fit_{fit}", targets="all", fit_between=fit, progress=log,
                             **FAST)
        assert any("fitted on the series' own fine dates left out" in m for m in log.messages) == fit, log.messages
        outputs[fit] = {date: read_all(path) for date, path in result.files.items()}
        for index, (date, path) in enumerate(result.files.items()):
            first_guess = json.loads(read_metadata(path)["CTSTFM_FIRST_GUESS"])
            assert first_guess["fitted_on_the_series"] == (fit and index in (1, 2, 3)), (fit, index, first_guess)
            if first_guess["fitted_on_the_series"]:
                assert len(first_guess["change_share"]) == len(first_guess["change_gain"]) == 6, first_guess
    for index, item in enumerate(items):
        same = np.array_equal(outputs[True][item.date.isoformat()], outputs[False][item.date.isoformat()])
        assert same == (index in (0, 4)), (index, same)  # dates 0 and 4 have one reference

    # Two fine dates: the first guess is fitted on the change between them; no share is fitted.
    manifest = write_manifest(tmp_path / "two.csv", [(it.date, it.fine if i in (0, 4) else "", it.coarse)
                                                     for i, it in enumerate(items)])
    log = Log()
    result = fuse_series(manifest, three, tmp_path / "two", progress=log, **FAST)
    assert any(f"fitted on the change between the two fine dates ({items[0].date} and {items[4].date})" in m
               for m in log.messages), log.messages
    assert not any(m.startswith("Share of") for m in log.messages), log.messages
    first_guess = json.loads(read_metadata(result.files[items[2].date.isoformat()])["CTSTFM_FIRST_GUESS"])
    assert first_guess["fitted_on_the_series"] and first_guess["change_share"] == [], first_guess


def test_a_cloudy_reference_is_filled_from_the_other(five_dates, tmp_path):
    from model_core.simulate import write_geotiff

    items = five_dates.items
    grid = RasterInfo.read(items[0].fine)
    clouds = {"a": (10, 40), "b": (30, 40)}  # rows and columns from, to; 30:40 is cloudy in both
    masks = {}
    for name, (first, last) in clouds.items():
        cloud = np.zeros((1, 64, 64), dtype=np.int16)
        cloud[0, first:last, first:last] = 1
        masks[name] = str(tmp_path / f"cloud_{name}.tif")
        write_geotiff(masks[name], cloud, grid.geotransform, five_dates.parameters["epsg"], ("cloud",), None)
    target = items[1]

    def run(name, mask_a, mask_b, with_a=True):
        rows = [(items[0].date, items[0].fine, items[0].coarse, mask_a)] if with_a else []
        rows += [(target.date, "", target.coarse, ""), (items[2].date, items[2].fine, items[2].coarse, mask_b)]
        manifest = str(write_manifest(tmp_path / f"{name}.csv", rows, ("date", "fine", "coarse", "mask")))
        return read_all(fuse_series(manifest, MODEL, tmp_path / name, **FAST).files[target.date.isoformat()])

    from_b = run("only_b", "", "", with_a=False)
    cloudy_a = run("cloudy_a", masks["a"], "")
    inside = (slice(None), slice(10, 40), slice(10, 40))
    assert (cloudy_a != -9999).all()
    assert np.abs(cloudy_a[inside].astype(int) - from_b[inside]).max() <= 1  # A's cloud comes from B alone
    assert np.abs(cloudy_a[:, 45:, 45:].astype(int) - from_b[:, 45:, 45:]).max() > 5  # elsewhere both count
    both = run("both", masks["a"], masks["b"])
    assert (both[:, 30:40, 30:40] == -9999).all()
    assert (both[:, 10:30, 10:40] != -9999).all() and (both[:, 40:] != -9999).all()
    # The quality layer: 1 (one reference) where one date is cloudy, nodata where both are.
    flags, days = read_all(tmp_path / "both" / f"quality_{target.date.isoformat()}.tif")
    expected = np.zeros((64, 64))
    expected[10:40, 10:40] = 1
    expected[30:40, 30:40] = 65535
    assert np.array_equal(flags, expected) and np.array_equal(days == 16, expected != 65535)


def test_a_pixel_cloudy_in_both_references_comes_from_a_farther_fine_date(five_dates, tmp_path):
    """Fine dates 1, 3 and 5; date 2 is filled from 1 and 3. Where both are cloudy, date 5 (48 days away) fills the
    pixel, unchanged; the quality layer says 8 and 48 days, the index the share; cloudy in date 5 too, it stays
    nodata."""
    from model_core.simulate import write_geotiff

    items = five_dates.items
    grid = RasterInfo.read(items[0].fine)
    cloud = np.zeros((1, 64, 64), dtype=np.int16)
    cloud[0, 20:40, 20:40] = 1
    mask = str(tmp_path / "cloud.tif")
    write_geotiff(mask, cloud, grid.geotransform, five_dates.parameters["epsg"], ("cloud",), None)
    small = np.zeros((1, 64, 64), dtype=np.int16)
    small[0, 20:25, 20:25] = 1
    mask_5 = str(tmp_path / "cloud_5.tif")
    write_geotiff(mask_5, small, grid.geotransform, five_dates.parameters["epsg"], ("cloud",), None)
    rows = [(items[0].date, items[0].fine, items[0].coarse, mask), (items[1].date, "", items[1].coarse, ""),
            (items[2].date, items[2].fine, items[2].coarse, mask), (items[4].date, items[4].fine, items[4].coarse,
                                                                      mask_5)]
    manifest = write_manifest(tmp_path / "m.csv", rows, ("date", "fine", "coarse", "mask"))
    result = fuse_series(str(manifest), MODEL, tmp_path / "out", **FAST)
    fused = read_all(result.files[items[1].date.isoformat()])
    filled = (slice(None), slice(25, 40), slice(20, 40))
    assert np.array_equal(fused[filled], read_all(items[4].fine)[filled])
    assert (fused[:, 20:25, 20:25] == -9999).all()  # cloudy in all three fine dates
    flags, days = read_all(tmp_path / "out" / f"quality_{items[1].date.isoformat()}.tif")
    assert (flags[filled[1:]] == 8).all() and (days[filled[1:]] == 48).all()
    with open(result.index) as handle:
        row = next(csv.DictReader(handle))
    assert float(row["farther_fraction"]) == round((15 * 20 + 5 * 15) / 64 ** 2, 4)
    assert read_metadata(result.files[items[1].date.isoformat()])["CTSTFM_FARTHER_DATES"] == items[4].date.isoformat()


def test_product_masks_are_read_by_their_rule_and_a_quality_band_read_as_0_1_is_refused(five_dates, tmp_path):
    """Landsat's QA_PIXEL (bit 3 cloud; 21824 is clear land) and Sentinel-2's SCL (9 cloud, 4 vegetation) mask the
    same pixels as a 0/1 mask when read by their rule; read as "non-zero is cloud" they would mask everything, and
    are refused."""
    from model_core.cloud_masks import CloudRule
    from model_core.errors import OptionError

    items = five_dates.items
    grid = RasterInfo.read(items[0].fine)
    cloud = np.zeros((64, 64), dtype=bool)
    cloud[10:40, 10:40] = True
    masks = {"zero_one": cloud.astype(np.int16), "qa_pixel": np.where(cloud, 21824 | 8, 21824).astype(np.uint16),
             "scl": np.where(cloud, 9, 4).astype(np.uint8)}
    for name, values in masks.items():
        masks[name] = str(tmp_path / f"{name}.tif")
        write_raster(masks[name], values, grid.geotransform, crs=five_dates.parameters["epsg"])

    def run(name, mask, rule=None):
        rows = [(items[0].date, items[0].fine, items[0].coarse, mask), (items[1].date, "", items[1].coarse, ""),
                (items[2].date, items[2].fine, items[2].coarse, "")]
        manifest = str(write_manifest(tmp_path / f"{name}.csv", rows, ("date", "fine", "coarse", "mask")))
        result = fuse_series(manifest, MODEL, tmp_path / name, mask_rule=rule, **FAST)
        return read_all(result.files[items[1].date.isoformat()])

    expected = run("zero_one", masks["zero_one"])
    assert not np.array_equal(expected, run("unmasked", ""))  # the mask matters
    assert np.array_equal(run("qa_pixel", masks["qa_pixel"], "landsat-c2-qa"), expected)
    assert np.array_equal(run("qa_bits", masks["qa_pixel"], "bits:3"), expected)
    assert np.array_equal(run("scl", masks["scl"], "sentinel2-scl"), expected)
    with pytest.raises(OptionError, match=r"cloud mask of 2021-12-01 '.*qa_pixel\.tif' marks 100 % of the image as "
                       r"cloud when every non-zero value is cloud, and its most common value is 21824: .* Say how to "
                       r"read it with mask_rule: one of landsat-c2-qa, "):
        run("refused", masks["qa_pixel"])
    assert not (tmp_path / "refused").exists() or not os.listdir(tmp_path / "refused")
    # The same QA band as the fine images' 7th band (MASK_BAND): read by its rule, refused as 0/1.
    descriptions = [RasterInfo.read(items[0].fine).descriptions[i] for i in range(6)] + ["qa_pixel"]
    with_qa = {}
    for index, qa in ((0, masks["qa_pixel"]), (2, None)):
        qa_values = read_all(qa).reshape(64, 64) if qa else np.full((64, 64), 21824)
        with_qa[index] = write_raster(tmp_path / f"with_qa_{index}.tif",
                                      np.concatenate([read_all(items[index].fine), qa_values[None]]).astype(np.int16),
                                      grid.geotransform, crs=five_dates.parameters["epsg"], nodata=-9999,
                                      descriptions=descriptions)
    rows = [(items[0].date, with_qa[0], items[0].coarse), (items[1].date, "", items[1].coarse),
            (items[2].date, with_qa[2], items[2].coarse)]
    qa_manifest = str(write_manifest(tmp_path / "qa_band.csv", rows))
    result = fuse_series(qa_manifest, MODEL, tmp_path / "qa_band", mask_band=7, mask_rule="landsat-c2-qa", **FAST)
    assert np.array_equal(read_all(result.files[items[1].date.isoformat()]), expected)
    with pytest.raises(OptionError,
                       match=r"mask band 7 of the fine image of 2021-12-01 '.*with_qa_0\.tif' marks 100 %"):
        fuse_series(qa_manifest, MODEL, tmp_path / "qa_refused", mask_band=7, **FAST)
    with pytest.raises(OptionError, match=r"cloud mask rule \(mask_rule\) 'bits:x' is not one we read"):
        CloudRule.parse("bits:x")
    assert CloudRule.parse(" Values:3, 8 ").text == "values:3,8" and CloudRule.parse(None).reads_nonzero
    # MODIS state_1km: cloud state (bits 0-1) 1 cloudy or 2 mixed, shadow (bit 2), internal cloud flag (bit 10);
    # 0 clear and 3 "not set, assumed clear" are not cloud, whatever the land/water bits (3-5) say.
    state = np.array([8, 8 | 1, 8 | 2, 8 | 3, 8 | 4, 72 | 1024, 72, np.nan])
    expected_state = [False, True, True, False, True, True, False, False]
    assert CloudRule.parse("modis-state").flags(state).tolist() == expected_state
    assert CloudRule.parse("field:0-1=1,2 + bits:2,10").flags(state).tolist() == expected_state
    assert CloudRule.parse("field:3-5=1").flags(state).tolist() == [True] * 7 + [False]
    with pytest.raises(OptionError, match=r"\(coarse_mask_rule\) 'field:0-1=4' is not one we read: .* field:L-H=N"):
        CloudRule.parse("field:0-1=4", "coarse_mask_rule")  # two bits hold 0 to 3


def test_a_cloudy_coarse_date_takes_a_clear_day_nearby_else_is_interpolated_in_time(five_dates, tmp_path):
    """A MODIS-like state_1km band (its own 960 m grid; bits 0-1: 1 cloudy, 3 not set) marks a bright cloud on the
    coarse image of the date to fill: the two fine dates are interpolated in time under it, or a clear coarse image
    two days later stands in there (within coarse_days); the index says which share is which; without
    interpolation it is nodata and the rest is unchanged; a state band read as a 0/1 mask is refused, naming
    coarse_mask_rule."""
    from model_core.errors import OptionError

    items = five_dates.items
    info = RasterInfo.read(items[1].coarse)
    cloudy = read_all(items[1].coarse)
    cloudy[:, :2, :2] = 6000  # the 960 m state pixel top left: fine rows and columns 0:32
    cloudy_path = write_raster(tmp_path / "coarse_cloudy.tif", cloudy, info.geotransform,
                               crs=five_dates.parameters["epsg"], nodata=-9999, descriptions=info.descriptions)
    x0, _, _, y0, _, _ = info.geotransform
    state = write_raster(tmp_path / "state_1km.tif", np.array([[8 | 1, 8 | 3], [72, 8]], dtype=np.uint16),
                         (x0, 960.0, 0, y0, 0, -960.0), crs=five_dates.parameters["epsg"])

    def run(name, coarse_mask="", clear_day_after=False, coarse=cloudy_path, **options):
        rows = [(items[0].date, items[0].fine, items[0].coarse, "", ""), (items[1].date, "", coarse, "", coarse_mask),
                (items[2].date, items[2].fine, items[2].coarse, "", "")]
        if clear_day_after:  # the same scene seen clear two days later (the simulated coarse image of the date)
            rows.insert(2, (items[1].date + dt.timedelta(days=2), "", items[1].coarse, "", ""))
        manifest = write_manifest(tmp_path / f"{name}.csv", rows, ("date", "fine", "coarse", "mask", "coarse_mask"))
        return fuse_series(str(manifest), MODEL, tmp_path / name, **FAST, **options)

    masked = run("masked", state, coarse_mask_rule="modis-state")
    fused = read_all(masked.files[items[1].date.isoformat()])
    truth = read_all(items[1].fine).astype(float)
    between = (read_all(items[0].fine).astype(float) + read_all(items[2].fine)) / 2  # 16 days either side
    # The state pixel covers fine rows and columns 0:32; bilinear warping carries the cloud's reflectance half a
    # coarse pixel (8 fine pixels) further, so the mask is widened by as much.
    cloud = (slice(None), slice(0, 40), slice(0, 40))
    assert np.abs(fused[cloud] - between[cloud]).max() <= 1
    unmasked = read_all(run("unmasked").files[items[1].date.isoformat()])
    assert np.abs(unmasked[cloud] - truth[cloud]).mean() > 3 * np.abs(fused[cloud] - truth[cloud]).mean()
    with open(masked.index) as handle:
        row = next(csv.DictReader(handle))
    assert float(row["interpolated_fraction"]) == round(40 * 40 / 64 ** 2, 4) and \
        float(row["coarse_other_dates_fraction"]) == 0
    # The quality layer says so pixel by pixel: 4 (interpolated in time) under the cloud, 0 elsewhere; both fine
    # dates are 16 days away.
    flags, days = read_all(tmp_path / "masked" / f"quality_{items[1].date.isoformat()}.tif")
    expected_flags = np.zeros((64, 64))
    expected_flags[cloud[1:]] = 4
    assert np.array_equal(flags, expected_flags) and (days == 16).all()
    meta = read_metadata(masked.files[items[1].date.isoformat()])
    assert "state_1km.tif band 1 (modis-state)" in meta["CTSTFM_CLOUDS"]
    assert meta["CTSTFM_GAPS"] == "interpolated in time"
    # A clear day nearby: the network sees exactly the clear coarse image, so the date is what it is without cloud.
    clear = read_all(run("clear", coarse=items[1].coarse, clear_day_after=True).files[items[1].date.isoformat()])
    nearby = run("nearby", state, clear_day_after=True, coarse_mask_rule="modis-state", coarse_days=3)
    assert np.array_equal(read_all(nearby.files[items[1].date.isoformat()]), clear)
    with open(nearby.index) as handle:
        row = next(csv.DictReader(handle))
    assert float(row["coarse_other_dates_fraction"]) == round(40 * 40 / 64 ** 2, 4)
    assert float(row["interpolated_fraction"]) == 0
    assert read_metadata(nearby.files[items[1].date.isoformat()])["CTSTFM_COARSE_STAND_INS"] == \
        (items[1].date + dt.timedelta(days=2)).isoformat()
    flags, _ = read_all(tmp_path / "nearby" / f"quality_{items[1].date.isoformat()}.tif")
    assert np.array_equal(flags, expected_flags / 2)  # 2: the coarse image of another date
    too_far = run("too_far", state, clear_day_after=True, coarse_mask_rule="modis-state", coarse_days=1)
    assert np.array_equal(read_all(too_far.files[items[1].date.isoformat()]), fused)
    holes = read_all(run("holes", state, coarse_mask_rule="field:0-1=1,2", interpolate_gaps=False)
                     .files[items[1].date.isoformat()])
    assert (holes[cloud] == -9999).all() and (holes[:, 40:] != -9999).all() and (holes[:, :, 40:] != -9999).all()
    assert np.array_equal(holes[:, 40:], fused[:, 40:]) and np.array_equal(holes[:, :, 40:], fused[:, :, 40:])
    with pytest.raises(OptionError, match=r"coarse cloud mask of 2021-12-17 '.*state_1km\.tif' marks 100 % .* Say how "
                                          r"to read it with coarse_mask_rule: one of "):
        run("refused", state)
    assert not os.listdir(tmp_path / "refused")


def test_resume_after_cancel_gives_the_files_of_an_uninterrupted_run(five_dates, tmp_path):
    items = five_dates.items
    rows = [(it.date, it.fine if i in (0, 2, 4) else "", it.coarse) for i, it in enumerate(items)]
    manifest = write_manifest(tmp_path / "m.csv", rows)

    class CancelOnceADateIsDone(Progress):
        def canceled(self):
            return (tmp_path / "resumed" / "fused_2021-12-17.tif").exists()

    with pytest.raises(Cancelled, match="1 finished date"):
        fuse_series(manifest, MODEL, tmp_path / "resumed", progress=CancelOnceADateIsDone(), **FAST)
    assert sorted(os.listdir(tmp_path / "resumed")) == ["fused_2021-12-17.tif", "index.csv", "quality_2021-12-17.tif",
                                                        "stack.vrt"]
    resumed = fuse_series(manifest, MODEL, tmp_path / "resumed", **FAST)
    straight = fuse_series(manifest, MODEL, tmp_path / "straight", **FAST)
    assert len(resumed.kept) == 1 and len(resumed.written) == 1 and resumed.groups == 1
    for day in straight.files:
        np.testing.assert_array_equal(read_all(resumed.files[day]), read_all(straight.files[day]))
        assert read_metadata(resumed.files[day]) == read_metadata(straight.files[day])
    again = fuse_series(manifest, MODEL, tmp_path / "resumed", **FAST)
    assert again.written == [] and len(again.kept) == 2
    # A date whose quality layer is gone is fused again; a quality layer of another run is not listed as this one's.
    os.remove(again.quality[items[1].date.isoformat()])
    redone = fuse_series(manifest, MODEL, tmp_path / "resumed", **FAST)
    assert redone.written == [again.files[items[1].date.isoformat()]] and len(redone.quality) == 2
    without = fuse_series(manifest, MODEL, tmp_path / "resumed", quality=False, **FAST)
    assert len(without.written) == 2 and without.quality == {}
    with open(without.index) as handle:
        assert [row["quality"] for row in csv.DictReader(handle)] == ["", ""]
    from osgeo import gdal

    stack = gdal.Open(again.stack)
    assert stack.RasterCount == 12 and stack.GetRasterBand(7).GetDescription() == "2022-01-18 blue"


def test_bad_series_get_one_clear_error(five_dates, tmp_path, make_series):
    items = five_dates.items
    no_fine = write_manifest(tmp_path / "a.csv", [(it.date, "", it.coarse) for it in items])
    with pytest.raises(CtstfmError, match="no fine image"):
        fuse_series(no_fine, MODEL, tmp_path / "out", **FAST)
    far = write_manifest(tmp_path / "b.csv",
                         [(items[0].date, items[0].fine, ""), (items[4].date, "", items[4].coarse)])
    with pytest.raises(CtstfmError, match="within the maximum gap of 30 days of 2022-02-03"):
        fuse_series(far, MODEL, tmp_path / "out", max_gap_days=30, **FAST)
    other = make_series(kind="fields", count=2, size=48, seed=3)
    mixed = write_manifest(tmp_path / "c.csv", [(items[0].date, items[0].fine, ""),
                                                (items[1].date, "", items[1].coarse),
                                                (items[2].date, other.items[0].fine, "")])
    with pytest.raises(CtstfmError, match="not on the grid of the fine image of 2021-12-01"):
        fuse_series(mixed, MODEL, tmp_path / "out", **FAST)
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []


def test_layers_with_dates_from_file_names(five_dates):
    items = five_dates.items
    pairs = load_series(fines=[items[0].fine, items[2].fine], coarses=[it.coarse for it in items[:3]])
    assert [(p.date, bool(p.fine), bool(p.coarse)) for p in pairs] == [
        (items[0].date, True, True), (items[1].date, False, True), (items[2].date, True, True)]


def test_qgis_loads_every_date_with_its_temporal_range(qgis_app, five_dates, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    items = five_dates.items
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    result = processing.runAndLoadResults(
        "ctstfm:fuseseries",
        {"FINE_LAYERS": [str(items[0].fine), str(items[2].fine)], "COARSE_LAYERS": [str(items[1].coarse)],
         "TILE_SIZE": 64, "OVERLAP": 8, "DEVICE": 1, "OUTPUT_FOLDER": str(tmp_path / "out")},
        feedback=QgsProcessingFeedback(), context=context,
    )
    assert os.path.isfile(result["INDEX"]) and os.path.isfile(result["STACK"])
    assert result["QUALITY_LAYERS"] == [str(tmp_path / "out" / f"quality_{items[1].date.isoformat()}.tif")]
    layers = QgsProject.instance().mapLayersByName(f"CTSTFM fused {items[1].date.isoformat()}")
    assert len(layers) == 1 and layers[0].isValid()
    temporal = layers[0].temporalProperties()
    assert temporal.isActive()
    assert temporal.fixedTemporalRange().begin().date().toPyDate() == items[1].date
    QgsProject.instance().removeAllMapLayers()


def test_qgis_process_fuses_twelve_dates_with_four_fine_ones(installed_plugin_env, make_series, tmp_path):
    series = make_series(kind="fields", count=12, size=32, seed=11, interval_days=8)
    fine_dates = {0, 4, 7, 11}
    rows = [(it.date, it.fine if i in fine_dates else "", it.coarse) for i, it in enumerate(series.items)]
    manifest = write_manifest(tmp_path / "series.csv", rows)
    env = dict(installed_plugin_env, OMP_NUM_THREADS="1")
    done = run_qgis_process(env, "run", "ctstfm:fuseseries", "--", f"MANIFEST={manifest}", f"MODEL={MODEL}",
                            "TILE_SIZE=32", "OVERLAP=4", "DEVICE=1", "QUICKLOOK=true",
                            f"OUTPUT_FOLDER={tmp_path / 'out'}")
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(os.listdir(tmp_path / "out"))
    fused = [f"{kind}_{it.date.isoformat()}.tif" for i, it in enumerate(series.items) if i not in fine_dates
             for kind in ("fused", "quality")]
    assert names == sorted(fused + ["index.csv", "quicklook.png", "stack.vrt"])
    assert RasterInfo.read(tmp_path / "out" / "stack.vrt").count == 8 * 6
