"""Training CTSTFM on a time series of fine/coarse pairs (paper, Section III).

From a series of dated pairs (a fine raster, e.g. Landsat 30 m, and a coarse
raster, e.g. MODIS 500 m, per date) to a model file that
:func:`model_core.fusion.fuse` and ``ctstfm:fuse`` load.

What happens, in order:

1. **Series** — :func:`read_manifest` (CSV ``date,fine,coarse``, optionally
   ``scene``), :func:`read_manifests` (several manifests) or
   :func:`series_from_layers` give a list of :class:`Pair`. A series holds one or
   several *scenes* (:attr:`Pair.scene`), each on its own grid.
   :func:`check_scenes` opens every raster once: within each scene at least two
   dates, no duplicate date, every fine raster on the same grid (size, extent,
   CRS) with the same band count, every coarse raster with that band count and
   covering its fine raster (:func:`check_series`); the same band count in every
   scene.
2. **Samples** — for a target date T1 the input is (coarse at T1, fine at a
   reference date T0) and the label is fine at T1. The reference dates are the
   ``references`` nearest other dates, before or after (``max_gap_days`` drops
   references further away). :func:`choose_references`.
3. **Split** — chronological, as in the paper: the earliest dates train, the
   latest ``validation_fraction`` of the dates validate. Training samples take
   their references among training dates only; validation samples may take any
   other date. With fewer than four dates (or too few left for training) the
   split falls back to a spatial block: the bottom ``validation_fraction`` of the
   rows of every date validates and no training patch touches it.
   :func:`split_series`, per scene (:func:`split_scenes`); the samples of all
   scenes are pooled.
4. **Patches** — random crops of ``patch_size`` (shrunk to the smallest
   scene's training area), from a sample drawn in proportion to its training
   area (so every training pixel of every scene is equally likely), read
   window by window through the same pair reader and warping as fusion
   (:mod:`model_core.raster`), so memory does not grow with the scene. Crops
   with less than ``min_valid`` valid pixels are redrawn. Flips and 90° rotations
   augment. Nodata pixels are left out of the L1 loss.
5. **Optimisation** — the paper's defaults: L1 loss (eq. 20), Adam (lr 1e-4,
   betas 0.9/0.999), batch 4, 150 epochs. After every epoch the model is
   validated on fixed, non-overlapping validation windows (of every scene, at
   most ``max_validation_windows`` shared fairly between scenes) with
   :mod:`model_core.metrics` (MAE, RMSE, PSNR, SSIM, SAM) and the weights with
   the best validation MAE are kept. On CUDA, mixed precision (bf16 where the
   card supports it, else fp16 with a gradient scaler).
6. **Outputs** — the model file (written once, at the end, atomically), a
   checkpoint ``<model>.checkpoint.pt`` after every epoch (``resume=True``
   continues from it), a CSV with one row per epoch and a PNG of the curves.

Cancelling (``progress.canceled()``) after at least one finished epoch writes
the best model so far and returns a :class:`TrainResult` with
``cancelled=True`` and a message; before that, :class:`Cancelled` is raised and
nothing is written.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import Cancelled, CtstfmError
from .fusion import autocast, mixed_precision_dtype
from .progress import Progress

CHECKPOINT_SUFFIX = ".checkpoint.pt"
CHECKPOINT_FORMAT = "ctstfm-training-checkpoint"
CHECKPOINT_VERSION = 1
REPORT_COLUMNS = [
    "epoch",
    "train_loss",
    "val_mae",
    "val_rmse",
    "val_psnr",
    "val_ssim",
    "val_sam",
    "seconds",
    "patches_per_second",
]
METRIC_NAMES = ("mae", "rmse", "psnr", "ssim", "sam")
MIN_SPATIAL_VALIDATION_ROWS = 8
AUTO_PATCHES_CAP = 1000


# --------------------------------------------------------------------------- series


@dataclass(frozen=True)
class Pair:
    """One date of the series: the fine and the coarse raster acquired that day."""

    date: _dt.date
    fine: str
    coarse: str
    scene: str = ""  # pairs of one scene share a grid; "" when the series is one scene


@dataclass(frozen=True)
class Sample:
    """One training/validation sample: predict fine at ``target`` from coarse at
    ``target`` and fine at ``reference`` (indices into the series)."""

    target: int
    reference: int


_ISO = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})\s*$")
_COMPACT = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})\s*$")
_NAME_ISO = re.compile(r"(?<!\d)(\d{4})[-_.]?(\d{2})[-_.]?(\d{2})(?!\d)")
_NAME_DOY = re.compile(r"(?:^|[._])A(\d{4})(\d{3})(?=[._]|$)")


def parse_date(text):
    """An ISO date ``YYYY-MM-DD`` (or ``YYYYMMDD``) as a :class:`datetime.date`."""
    if isinstance(text, _dt.datetime):
        return text.date()
    if isinstance(text, _dt.date):
        return text
    match = _ISO.match(str(text)) or _COMPACT.match(str(text))
    if match:
        try:
            return _dt.date(*(int(part) for part in match.groups()))
        except ValueError:
            pass
    raise CtstfmError(f"'{text}' is not a date; write dates as YYYY-MM-DD, e.g. 2021-04-01.")


def date_from_name(path):
    """The acquisition date written in a file name, or None.

    Recognises ``YYYY-MM-DD``, ``YYYY_MM_DD``, ``YYYYMMDD`` (the first one in the
    name, as in Landsat product names) and MODIS's ``.AYYYYDDD.`` (year and day of
    year).
    """
    name = Path(str(path)).name
    for match in _NAME_ISO.finditer(name):
        year, month, day = (int(part) for part in match.groups())
        if 1950 <= year <= 2100:
            try:
                return _dt.date(year, month, day)
            except ValueError:
                continue
    match = _NAME_DOY.search(name)
    if match:
        year, doy = int(match.group(1)), int(match.group(2))
        if 1950 <= year <= 2100 and 1 <= doy <= 366:
            return _dt.date(year, 1, 1) + _dt.timedelta(days=doy - 1)
    return None


def read_manifest(path, scene_prefix=None):
    """Read a series from a CSV with the columns ``date,fine,coarse`` (and optionally ``scene``).

    Dates are ISO (``2021-04-01``); paths may be relative to the CSV's folder.
    Other columns are ignored, as are blank lines and lines starting with ``#``.
    The optional ``scene`` column (any text) groups the rows into scenes, each on
    its own grid; without it the manifest is one scene. ``scene_prefix`` (used when
    several manifests train together) is put before every scene name:
    ``prefix`` or ``prefix:scene``. Returns the pairs grouped by scene (in order of
    first appearance), sorted by date within a scene.
    """
    path = Path(path)
    if not path.is_file():
        raise CtstfmError(f"The manifest {path} does not exist; give the path of a CSV with columns date,fine,coarse.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CtstfmError(f"The manifest {path} cannot be read as a text CSV ({exc}).") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise CtstfmError(f"The manifest {path} is empty; it needs a header 'date,fine,coarse' and one line per date.")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(lines, dialect)
    header = [name.strip().lower() for name in next(reader)]
    missing = [name for name in ("date", "fine", "coarse") if name not in header]
    if missing:
        raise CtstfmError(
            f"The manifest {path} has no column {', '.join(missing)} (found: {', '.join(header) or 'none'}); "
            "its first line must be the header 'date,fine,coarse'."
        )
    column = {name: header.index(name) for name in ("date", "fine", "coarse")}
    scene_column = header.index("scene") if "scene" in header else None
    pairs = []
    for line_number, row in enumerate(reader, start=2):
        values = {}
        for name, index in column.items():
            value = row[index].strip() if index < len(row) else ""
            if not value:
                raise CtstfmError(f"Line {line_number} of the manifest {path} has no {name}; fill it in or remove the line.")
            values[name] = value
        try:
            date = parse_date(values["date"])
        except CtstfmError as exc:
            raise CtstfmError(f"Line {line_number} of the manifest {path}: {exc}") from None
        files = {}
        for name in ("fine", "coarse"):
            file_path = Path(values[name]).expanduser()
            if not file_path.is_absolute():
                file_path = path.parent / file_path
            if not file_path.exists():
                raise CtstfmError(
                    f"Line {line_number} of the manifest {path}: the {name} raster {file_path} does not exist; "
                    "fix the path (relative paths are read from the manifest's folder)."
                )
            files[name] = str(file_path)
        scene = row[scene_column].strip() if scene_column is not None and scene_column < len(row) else ""
        if scene_prefix:
            scene = f"{scene_prefix}:{scene}" if scene else str(scene_prefix)
        pairs.append(Pair(date, files["fine"], files["coarse"], scene))
    return group_scenes(pairs)


def read_manifests(paths):
    """Pairs of several manifests, each its own scene(s).

    With more than one manifest every scene name starts with the manifest's file
    stem (``fields``, ``fields:north``); manifests with the same stem are told
    apart by their folder (``site_a/manifest``). Returns ``(pairs, manifests)``:
    the pairs grouped by scene, and each scene's manifest path (resolved).
    """
    paths = [Path(path) for path in paths]
    resolved = [path.expanduser().resolve() for path in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise CtstfmError(f"The manifest {paths[index]} is given twice; give each manifest once.")
    names = [path.stem for path in resolved]
    if len(paths) > 1:
        names = [f"{path.parent.name}/{path.stem}" if names.count(path.stem) > 1 else path.stem for path in resolved]
        names = [name if names.count(name) == 1 else f"{name}#{index + 1}" for index, name in enumerate(names)]
    pairs, manifests = [], {}
    for path, real, name in zip(paths, resolved, names):
        found = read_manifest(path, scene_prefix=name if len(paths) > 1 else None)
        for pair in found:
            manifests.setdefault(pair.scene, str(real))
        pairs.extend(found)
    return group_scenes(pairs), manifests


def group_scenes(pairs):
    """Pairs grouped by scene (scenes in order of first appearance), sorted by date within each."""
    order = {}
    for pair in pairs:
        order.setdefault(pair.scene, len(order))
    return sorted(pairs, key=lambda pair: (order[pair.scene], pair.date))


def series_from_layers(fines, coarses, dates=None, progress=None):
    """Pairs from two equally long lists of raster paths and their dates.

    ``dates`` is a list of dates or one string ``"2021-04-01,2021-05-03,..."`` in
    the same order as the rasters. When it is empty each date is read from the
    fine raster's file name (else the coarse one's), and the log says so.
    """
    fines = [str(item) for item in (fines or [])]
    coarses = [str(item) for item in (coarses or [])]
    if not fines or not coarses:
        raise CtstfmError(
            "No series given: pick the fine rasters and the coarse rasters (one of each per date), "
            "or give a manifest CSV with columns date,fine,coarse."
        )
    if len(fines) != len(coarses):
        raise CtstfmError(
            f"{len(fines)} fine rasters but {len(coarses)} coarse rasters; give one coarse raster per fine raster, "
            "in the same date order."
        )
    if isinstance(dates, str):
        dates = [part for part in re.split(r"[,;\s]+", dates) if part]
    dates = list(dates or [])
    progress = progress or Progress()
    if dates:
        if len(dates) != len(fines):
            raise CtstfmError(
                f"{len(dates)} dates for {len(fines)} fine rasters; give one date per raster pair, in the same order "
                "(e.g. 2021-04-01,2021-05-03), or leave the dates empty to read them from the file names."
            )
        parsed = [parse_date(item) for item in dates]
    else:
        parsed = []
        for fine, coarse in zip(fines, coarses):
            date = date_from_name(fine) or date_from_name(coarse)
            if date is None:
                raise CtstfmError(
                    f"No date given and none found in the file name of {fine}; type the dates "
                    "(YYYY-MM-DD, comma-separated, in the order of the rasters) or put YYYY-MM-DD or YYYYMMDD "
                    "in the file names."
                )
            parsed.append(date)
        progress.info(
            "Dates read from the file names: "
            + ", ".join(f"{Path(fine).name} -> {date.isoformat()}" for fine, date in zip(fines, parsed))
        )
    return sorted((Pair(date, fine, coarse) for date, fine, coarse in zip(parsed, fines, coarses)), key=lambda p: p.date)


# --------------------------------------------------------------------------- samples and split


def choose_references(dates, targets, candidates, references=1, max_gap_days=None):
    """Samples for each target index: its ``references`` nearest candidate dates.

    ``dates`` is the list of all dates; ``targets`` and ``candidates`` are index
    lists. A target is never its own reference; ties in distance go to the
    earlier date. Candidates more than ``max_gap_days`` away are not used. Returns
    a list of :class:`Sample`, in target order.
    """
    samples = []
    for target in targets:
        others = [index for index in candidates if index != target]
        gaps = [(abs((dates[index] - dates[target]).days), dates[index], index) for index in others]
        if max_gap_days:
            gaps = [gap for gap in gaps if gap[0] <= max_gap_days]
        gaps.sort()
        for _, _, index in gaps[: max(1, int(references))]:
            samples.append(Sample(target, index))
    return samples


def _span(dates, indices, what):
    if len(indices) == 1:
        return f"1 {what} date ({dates[indices[0]]})"
    return f"{len(indices)} {what} dates ({dates[indices[0]]} to {dates[indices[-1]]})"


@dataclass
class Split:
    """How the series is divided into training and validation."""

    mode: str  # "dates" or "spatial"
    train_dates: list
    validation_dates: list
    train_samples: list
    validation_samples: list
    validation_rows: int = 0  # spatial mode: rows at the bottom kept for validation
    note: str = ""


def split_series(dates, height, *, validation_fraction=0.2, references=1, max_gap_days=None, patch_size=256):
    """The chronological split of the paper, or the spatial fallback.

    ``dates`` must be sorted and unique; ``height`` is the fine rasters' row count.
    """
    if not 0.0 < float(validation_fraction) < 1.0:
        raise CtstfmError(f"VALIDATION_FRACTION is {validation_fraction}; give a fraction between 0 and 1, e.g. 0.2.")
    count = len(dates)
    everything = list(range(count))
    n_val = max(1, int(round(count * validation_fraction)))
    if count >= 4 and count - n_val >= 2:
        train = everything[: count - n_val]
        val = everything[count - n_val:]
        train_samples = choose_references(dates, train, train, references, max_gap_days)
        val_samples = choose_references(dates, val, everything, references, max_gap_days)
        if train_samples and val_samples:
            return Split(
                "dates",
                [dates[i] for i in train],
                [dates[i] for i in val],
                train_samples,
                val_samples,
                note=f"Chronological split: {_span(dates, train, 'training')}, {_span(dates, val, 'validation')}.",
            )
        reason = f"no reference within MAX_GAP_DAYS={max_gap_days} on one side of the chronological split"
    else:
        reason = f"only {count} dates"
    samples = choose_references(dates, everything, everything, references, max_gap_days)
    if not samples:
        raise CtstfmError(
            f"No date has another date within MAX_GAP_DAYS={max_gap_days} days; raise MAX_GAP_DAYS or set it to 0 "
            "(no limit)."
        )
    rows = int(round(height * validation_fraction))
    rows = min(max(rows, MIN_SPATIAL_VALIDATION_ROWS), height // 2)
    if rows < 1 or height - rows < 8:
        raise CtstfmError(
            f"The rasters are {height} rows high: too small to hold out a validation block with {count} dates; "
            "give at least four dates or larger rasters."
        )
    return Split(
        "spatial",
        [dates[i] for i in sorted({s.target for s in samples})],
        [dates[i] for i in sorted({s.target for s in samples})],
        samples,
        samples,
        validation_rows=rows,
        note=(
            f"Validation on a held-out spatial block ({reason}; a chronological split needs at least four dates "
            f"with two left for training): the bottom {rows} of {height} rows of every date validate, "
            "and no training patch touches them."
        ),
    )


# --------------------------------------------------------------------------- data access


@dataclass(frozen=True)
class SeriesInfo:
    """The common grid of a series' fine rasters."""

    width: int
    height: int
    bands: int
    band_names: tuple  # from the band descriptions when all are set and distinct, else ()
    crs_wkt: str
    geotransform: tuple


def _covered_fraction(fine_info, coarse_info):
    """Fraction of the fine extent inside the coarse raster's extent (in the fine CRS),
    or None when the extents cannot be compared."""
    a = fine_info.bounds
    b = coarse_info.bounds_in(fine_info.crs_wkt)
    if b is None:
        return None
    # Half a fine pixel of slack for rounding in the coarse grid or the transform.
    slack = 0.5 * max(abs(fine_info.geotransform[1]), abs(fine_info.geotransform[5]))
    b = (b[0] - slack, b[1] - slack, b[2] + slack, b[3] + slack)
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return width * height / area if area > 0 else 0.0


def check_series(pairs, progress=None, scene=""):
    """Check one scene's series before any training; returns its :class:`SeriesInfo`.

    At least two dates, no date twice; every fine raster readable, on the grid of
    the first (size, extent, CRS) with its band count; every coarse raster
    readable, with at least that many bands, covering its fine raster's extent
    and holding valid data over it. Raises :class:`CtstfmError` naming the file
    (and ``scene``, when given). :func:`check_scenes` checks a several-scene series.
    """
    from . import raster

    pairs = list(pairs)
    in_scene = f" in scene '{scene}'" if scene else ""
    if len(pairs) < 2:
        raise CtstfmError(
            (f"The scene '{scene}'" if scene else "The series")
            + f" has {len(pairs)} date(s); training needs at least two dates"
            + (" per scene" if scene else "")
            + " with a fine and a coarse image each (one to predict, one as reference)."
        )
    seen = {}
    for pair in pairs:
        if pair.date in seen:
            raise CtstfmError(
                f"The date {pair.date.isoformat()} appears twice{in_scene} ({Path(seen[pair.date]).name} and "
                f"{Path(pair.fine).name}); give one fine/coarse pair per date."
            )
        seen[pair.date] = pair.fine
    first = None
    for index, pair in enumerate(pairs):
        if progress is not None:
            progress.check()
        what = f"fine image of {pair.date.isoformat()}{in_scene}"
        fine = raster.RasterInfo.read(pair.fine, what)
        if not fine.is_north_up:
            raise CtstfmError(f"The {what} '{pair.fine}' is rotated or not north-up; warp it to a north-up grid first.")
        if first is None:
            first = fine
        else:
            reference = f"the fine image of {pairs[0].date.isoformat()}{in_scene} ('{Path(first.path).name}')"
            if not raster.same_crs(fine.crs_wkt, first.crs_wkt):
                raise CtstfmError(
                    f"The {what} '{pair.fine}' is in another CRS than {reference}; every fine image must be on the "
                    "same grid (reproject it with Raster > Projections > Warp, onto that image's grid)."
                )
            if fine.count != first.count:
                raise CtstfmError(
                    f"The {what} '{pair.fine}' has {fine.count} bands but {reference} has {first.count}; every "
                    "fine image needs the same bands."
                )
            if not fine.same_grid(first):
                raise CtstfmError(
                    f"The {what} '{pair.fine}' covers another extent or pixel grid ({fine.width} x {fine.height} px, "
                    f"bounds {_bounds_text(fine.bounds)}) than {reference} ({first.width} x {first.height} px, "
                    f"bounds {_bounds_text(first.bounds)}); clip or warp every fine image onto the same grid."
                )
        coarse_what = f"coarse image of {pair.date.isoformat()}{in_scene}"
        coarse = raster.RasterInfo.read(pair.coarse, coarse_what)
        covered = _covered_fraction(fine, coarse)
        if covered is not None and covered < 0.999:
            raise CtstfmError(
                f"The {coarse_what} '{pair.coarse}' covers only {100 * covered:.0f}% of its fine image's extent; "
                "give a coarse image (or a mosaic) that covers the whole fine image."
            )
        reader = raster.PairReader(
            pair.fine, pair.coarse, n_bands=first.count, fine_what=what, coarse_what=coarse_what
        )
        try:
            reader.check_coverage()
        finally:
            reader.close()
    names = tuple(first.descriptions)
    if not all(names) or len(set(names)) != len(names):
        names = ()
    return SeriesInfo(first.width, first.height, first.count, names, first.crs_wkt, first.geotransform)


@dataclass
class Scene:
    """One scene of a series: its pairs (sorted by date) on one grid, and their split."""

    name: str
    pairs: list
    first: int  # index of its first pair in the whole series (samples index the whole series)
    info: SeriesInfo
    label: str = ""  # how messages name it: "" when the series is one scene
    split: Split | None = None  # set by split_scenes; sample indices into the whole series
    manifest: str | None = None

    @property
    def dates(self):
        return [pair.date for pair in self.pairs]

    @property
    def train_rows(self):
        return self.info.height - self.split.validation_rows


def check_scenes(pairs, progress=None):
    """Check a series of one or several scenes (:attr:`Pair.scene`); returns the list of :class:`Scene`.

    Each scene is checked with :func:`check_series` (its own grid, dates, bands);
    all scenes must have the same band count. Pairs are grouped as
    :func:`group_scenes` groups them, the order the samples index.
    """
    pairs = group_scenes(pairs)
    names = list(dict.fromkeys(pair.scene for pair in pairs)) or [""]
    several = len(names) > 1
    scenes = []
    for name in names:
        members = [pair for pair in pairs if pair.scene == name]
        label = (name or "(unnamed)") if several else ""
        info = check_series(members, progress, scene=label)
        if scenes and info.bands != scenes[0].info.bands:
            raise CtstfmError(
                f"The fine images of scene '{label}' have {info.bands} bands but those of scene "
                f"'{scenes[0].label}' have {scenes[0].info.bands}; every scene needs the same bands, in the same "
                "order (train separate models, or drop the extra bands)."
            )
        start = scenes[-1].first + len(scenes[-1].pairs) if scenes else 0
        scenes.append(Scene(name, members, start, info, label))
    return scenes


def split_scenes(scenes, *, validation_fraction=0.2, references=1, max_gap_days=None, patch_size=256):
    """:func:`split_series` for every scene, its samples re-indexed into the whole series; sets ``scene.split``."""
    for scene in scenes:
        try:
            split = split_series(
                scene.dates,
                scene.info.height,
                validation_fraction=validation_fraction,
                references=references,
                max_gap_days=max_gap_days,
                patch_size=patch_size,
            )
        except CtstfmError as exc:
            if not scene.label:
                raise
            raise CtstfmError(f"Scene '{scene.label}': {exc}") from None
        shift = scene.first
        split.train_samples = [Sample(s.target + shift, s.reference + shift) for s in split.train_samples]
        split.validation_samples = [Sample(s.target + shift, s.reference + shift) for s in split.validation_samples]
        scene.split = split
    return scenes


def _bounds_text(bounds):
    return "(" + ", ".join(f"{value:.1f}" for value in bounds) + ")"


def _in_scene(pair):
    return f" in scene '{pair.scene}'" if pair.scene else ""


class SeriesData:
    """Opened rasters of a series, read window by window through :mod:`model_core.raster`.

    Inputs come from the same :class:`~model_core.raster.PairReader` that fusion
    uses (fine at T0, coarse at T1 warped onto the fine grid, reflectance,
    negatives clipped, invalid pixels filled), so training sees exactly what
    fusion will feed the network; the label (fine at T1) is read with the same
    scale. Only the windows asked for are ever in memory.
    """

    def __init__(self, pairs, *, scale, bands, resampling=None):
        from . import raster

        self.raster = raster
        self.pairs = list(pairs)
        self.scale = float(scale)
        self.bands = int(bands)
        self.resampling = resampling or raster.DEFAULT_RESAMPLING
        self._pair_readers = {}
        self._label_readers = {}

    def _pair_reader(self, sample):
        key = (sample.reference, sample.target)
        if key not in self._pair_readers:
            reference, target = self.pairs[sample.reference], self.pairs[sample.target]
            self._pair_readers[key] = self.raster.PairReader(
                reference.fine,
                target.coarse,
                n_bands=self.bands,
                scale=self.scale,
                resampling=self.resampling,
                fine_what=f"fine image of {reference.date.isoformat()}{_in_scene(reference)}",
                coarse_what=f"coarse image of {target.date.isoformat()}{_in_scene(target)}",
            )
        return self._pair_readers[key]

    def _label_reader(self, index):
        if index not in self._label_readers:
            pair = self.pairs[index]
            self._label_readers[index] = self.raster.RasterReader(
                pair.fine,
                list(range(1, self.bands + 1)),
                what=f"fine image of {pair.date.isoformat()}{_in_scene(pair)}",
            )
        return self._label_readers[index]

    def read(self, sample, window):
        """``(coarse_t1, fine_t0, fine_t1, valid)`` for a window ``(col, row, width, height)``.

        Arrays are float32 reflectance ``(C, h, w)``; ``valid`` is bool ``(h, w)``,
        True where all three images hold data. The label is 0 where it is invalid.
        """
        window = self.raster.Window(*(int(v) for v in window))
        fine0, coarse1, valid = self._pair_reader(sample).read(window)
        label, label_ok = self._label_reader(sample.target).read_reflectance(window, self.scale)
        label[:, ~label_ok] = 0.0
        return coarse1, fine0, label, valid & label_ok

    def close(self):
        for reader in list(self._pair_readers.values()) + list(self._label_readers.values()):
            reader.close()
        self._pair_readers.clear()
        self._label_readers.clear()


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train` wrote and how the training went."""

    model_path: str
    report_csv: str
    report_png: str | None
    checkpoint: str
    epochs: int  # epochs completed in total (resumed runs count the earlier ones)
    best_epoch: int
    best_metrics: dict
    initial_metrics: dict
    history: list
    train_dates: list
    validation_dates: list
    validation_mode: str
    device: str
    seconds: float
    cancelled: bool = False
    message: str = ""
    provenance: dict = field(default_factory=dict)
    scenes: list = field(default_factory=list)  # per scene: name, manifest, dates, split (as in provenance)


def checkpoint_path(out_model):
    return Path(str(out_model) + CHECKPOINT_SUFFIX)


def report_paths(out_model):
    out_model = Path(out_model)
    stem = out_model.with_suffix("") if out_model.suffix else out_model
    return Path(str(stem) + "_training.csv"), Path(str(stem) + "_training.png")


def default_patches_per_epoch(split, height, width, patch_size):
    """As many patches as non-overlapping tiles cover the training data (the paper's
    epoch), at least 8 and at most :data:`AUTO_PATCHES_CAP`."""
    return _clamp_patches(_training_tiles(split, height, width, patch_size))


def _training_tiles(split, height, width, patch_size):
    rows = height - split.validation_rows
    return max(1, rows // patch_size) * max(1, width // patch_size) * len(split.train_samples)


def _clamp_patches(tiles):
    return int(min(max(tiles, 8), AUTO_PATCHES_CAP))


def _resolve_device(device):
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``: the same rules as fusion."""
    from .fusion import resolve_device

    return str(resolve_device(device))


def masked_l1(pred, target, valid):
    """Mean absolute error over the valid pixels of all bands (eq. 20 with nodata left out)."""
    mask = valid.unsqueeze(1).to(pred.dtype)
    count = mask.sum() * pred.shape[1]
    return ((pred - target).abs() * mask).sum() / count.clamp(min=1.0)


def train_step(model, optimizer, scaler, coarse, fine0, fine1, valid, device, amp_dtype):
    """One optimisation step on a batch: forward (autocast to ``amp_dtype`` on CUDA), the
    masked L1 loss, backward (through ``scaler`` when there is one) and the optimizer's
    update. Returns the loss tensor (float32, still on ``device``)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(amp_dtype):
        pred = model(coarse, fine0)
    loss = masked_l1(pred.float(), fine1, valid)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss


def _augment(arrays, rng):
    """The same random flip / 90° rotation for every (…, H, W) array of one patch."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for array in arrays:
        if flip:
            array = array[..., :, ::-1]
        if k:
            array = np.rot90(array, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(array))
    return out


def _grid_windows(row0, row1, width, tile):
    """Non-overlapping (col, row, w, h) tiles of a row band; a band or raster smaller
    than one tile gives one tile that size."""
    th = min(tile, row1 - row0)
    tw = min(tile, width)
    return [
        (col, row, tw, th)
        for row in range(row0, row0 + ((row1 - row0) // th) * th, th)
        for col in range(0, (width // tw) * tw, tw)
    ]


def _atomic_torch_save(obj, path):
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_csv(history, path):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({key: _fmt(row.get(key)) for key in REPORT_COLUMNS})
    os.replace(tmp, path)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_curve_png(history, path, initial_metrics=None, best_epoch=None):
    """Training loss and validation metrics per epoch as a PNG (matplotlib Agg, no pyplot).

    Returns the path, or None when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    val_epochs = list(epochs)
    val_mae = [row["val_mae"] for row in history]
    if initial_metrics and math.isfinite(initial_metrics.get("mae", math.nan)):
        val_epochs = [epochs[0] - 1 if epochs else 0] + val_epochs
        val_mae = [initial_metrics["mae"]] + val_mae
    left.plot(epochs, [row["train_loss"] for row in history], "o-", label="training L1 loss")
    left.plot(val_epochs, val_mae, "s-", label="validation MAE")
    if best_epoch:
        left.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    left.set_xlabel("epoch")
    left.set_ylabel("reflectance")
    left.set_title("Loss and validation MAE")
    left.legend()
    right.plot(epochs, [row["val_ssim"] for row in history], "o-", color="tab:green", label="SSIM")
    right.set_xlabel("epoch")
    right.set_ylabel("SSIM", color="tab:green")
    twin = right.twinx()
    twin.plot(epochs, [row["val_psnr"] for row in history], "s-", color="tab:red", label="PSNR (dB)")
    twin.set_ylabel("PSNR (dB)", color="tab:red")
    right.set_title("Validation SSIM and PSNR")
    for axes in (left, right):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part.png")
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)
    return str(path)


def _summary(metrics):
    """The five validation numbers of a metrics result as a flat dict."""
    return {name: float(metrics[name]["mean"]) for name in METRIC_NAMES}


def _metrics_text(values):
    return (
        f"MAE {values['mae']:.5f}, RMSE {values['rmse']:.5f}, PSNR {values['psnr']:.2f} dB, "
        f"SSIM {values['ssim']:.4f}, SAM {values['sam']:.3f}°"
    )


def _check_positive(name, value, minimum, kind=int):
    if value is None or kind(value) < minimum:
        raise CtstfmError(f"{name} is {value}; give a value of at least {minimum}.")
    return kind(value)


def train(
    series,
    out_model,
    *,
    epochs=150,
    batch_size=4,
    patch_size=256,
    patches_per_epoch=None,
    lr=1e-4,
    references=1,
    max_gap_days=None,
    validation_fraction=0.2,
    init_model=None,
    resume=False,
    device="auto",
    seed=0,
    width=None,
    predict_residual=False,
    residual_blur=0,
    scale=None,
    min_valid=0.5,
    max_validation_windows=64,
    data_source=None,
    progress=None,
):
    """Train CTSTFM on a series and write the best model to ``out_model``.

    ``series``: a manifest path (CSV ``date,fine,coarse``, optionally ``scene``), a list
    of manifest paths (:func:`read_manifests`: each its own scene(s)) or a list of
    :class:`Pair` (from one or several scenes).
    ``epochs`` is the total epoch count (a resumed run continues up to it).
    ``patches_per_epoch`` None or 0: :func:`default_patches_per_epoch`.
    ``width``/``predict_residual``/``residual_blur`` shape a new network (ignored with ``init_model``,
    whose configuration, band names and scale are kept). ``scale``: reflectance = DN
    x scale (None: the init model's, else 1e-4). ``data_source``: what provenance
    records as the data (default: the manifest path(s) or the list of pairs); the
    scenes (name, manifest, dates, split) are recorded too.
    Returns a :class:`TrainResult`.
    """
    started = time.monotonic()
    progress = progress or Progress()
    manifests = {}
    if isinstance(series, (str, os.PathLike)):
        series = [series]
    else:
        series = list(series)
    if series and all(isinstance(item, (str, os.PathLike)) for item in series):
        pairs, manifests = read_manifests(series)
        if data_source is None:
            paths = [str(Path(item).expanduser().resolve()) for item in series]
            data_source = {"manifest": paths[0]} if len(paths) == 1 else {"manifests": paths}
    else:
        pairs = group_scenes(series)
    if data_source is None:
        data_source = {
            "pairs": [
                dict(date=p.date.isoformat(), fine=p.fine, coarse=p.coarse, **({"scene": p.scene} if p.scene else {}))
                for p in pairs
            ]
        }
    epochs = _check_positive("EPOCHS", epochs, 1)
    batch_size = _check_positive("BATCH_SIZE", batch_size, 1)
    patch_size = _check_positive("PATCH_SIZE", patch_size, 8)
    references = _check_positive("REFERENCES", references, 1)
    lr = float(lr)
    if not lr > 0:
        raise CtstfmError(f"LEARNING_RATE is {lr}; give a positive value, e.g. 0.0001.")
    if not 0.0 < float(min_valid) <= 1.0:
        raise CtstfmError(f"The minimum valid fraction of a patch is {min_valid}; give a value in (0, 1].")
    max_gap_days = int(max_gap_days) if max_gap_days else None

    out_model = Path(out_model).expanduser()
    if out_model.is_dir():
        raise CtstfmError(f"The output model {out_model} is a folder; give a file name ending in .pt.")
    out_model.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_path(out_model)
    csv_path, png_path = report_paths(out_model)

    # --- the series and what it says about the network
    progress.update(0.0, "checking the series")
    scenes = check_scenes(pairs, progress)
    pairs = [pair for scene in scenes for pair in scene.pairs]
    for scene in scenes:
        scene.manifest = manifests.get(scene.name)
    several = len(scenes) > 1
    info = scenes[0].info
    dates = [pair.date for pair in pairs]
    # How logs, provenance and the checkpoint name a date: with several scenes, "scene date".
    labels = [f"{pair.scene or '(unnamed)'} {pair.date}" if several else pair.date.isoformat() for pair in pairs]
    if any(scene.info.band_names != info.band_names for scene in scenes):
        if all(scene.info.band_names for scene in scenes):
            progress.info(
                "The scenes' band descriptions differ ("
                + "; ".join(f"{scene.label}: {', '.join(scene.info.band_names)}" for scene in scenes)
                + "); check that every scene has its bands in the same order."
            )
        info = SeriesInfo(info.width, info.height, info.bands, (), info.crs_wkt, info.geotransform)
    import torch

    from .network import CTSTFM, DEFAULT_BANDS, CTSTFMConfig

    init_loaded = None
    if init_model:
        from .model_file import load_model

        init_loaded = load_model(str(init_model), map_location="cpu")
        model_bands = list(init_loaded.band_names)
        if init_loaded.config.bands != info.bands:
            raise CtstfmError(
                f"The initial model {init_model} has {init_loaded.config.bands} bands ({', '.join(model_bands)}) "
                f"but the fine rasters have {info.bands}; give rasters with the model's bands, or leave INIT_MODEL "
                "empty to train from scratch."
            )
        config = init_loaded.config
        band_names = model_bands
        scale = float(scale) if scale else float(init_loaded.scale)
        if width and int(width) != config.width:
            progress.info(f"WIDTH {width} ignored: fine-tuning keeps the initial model's width {config.width}.")
    else:
        band_names = list(info.band_names or (DEFAULT_BANDS if info.bands == len(DEFAULT_BANDS) else []))
        if len(band_names) != info.bands:
            band_names = [f"band{i + 1}" for i in range(info.bands)]
        kwargs = {"bands": info.bands, "predict_residual": bool(predict_residual) or bool(residual_blur),
                  "residual_blur": int(residual_blur)}
        if width:
            kwargs["width"] = int(width)
        config = CTSTFMConfig(**kwargs)
        scale = float(scale) if scale else 1e-4

    split_scenes(
        scenes,
        validation_fraction=validation_fraction,
        references=references,
        max_gap_days=max_gap_days,
        patch_size=patch_size,
    )
    split = scenes[0].split if not several else _pooled_split(scenes)
    patch = min([patch_size] + [min(scene.train_rows, scene.info.width) for scene in scenes])
    if patch < patch_size:
        progress.info(f"PATCH_SIZE {patch_size} is larger than the training area; using {patch} x {patch} patches.")
    if not patches_per_epoch:
        patches_per_epoch = _clamp_patches(
            sum(_training_tiles(scene.split, scene.info.height, scene.info.width, patch) for scene in scenes)
        )
    patches_per_epoch = _check_positive("PATCHES_PER_EPOCH", patches_per_epoch, 1)
    steps = int(math.ceil(patches_per_epoch / batch_size))
    if several:
        progress.info(
            f"{len(scenes)} scenes, {len(pairs)} dates in all, {info.bands} bands ({', '.join(band_names)}), "
            f"scale {scale:g}."
        )
        for scene in scenes:
            progress.info(
                f"Scene '{scene.label}': {len(scene.pairs)} dates, {scene.info.width} x {scene.info.height} px. "
                f"{scene.split.note}"
            )
    else:
        progress.info(
            f"{len(pairs)} dates, {info.width} x {info.height} px, {info.bands} bands ({', '.join(band_names)}), "
            f"scale {scale:g}."
        )
        progress.info(split.note)
    sample_text = [f"{labels[s.target]}<-{dates[s.reference]}" for s in split.train_samples]
    progress.info(f"{len(split.train_samples)} training samples (target <- reference): " + ", ".join(sample_text))

    # --- device, seeds, network, optimiser
    device = _resolve_device(device)
    amp_dtype = mixed_precision_dtype(device)
    torch.manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    model = CTSTFM(config)
    if init_loaded is not None:
        model.load_state_dict(init_loaded.model.state_dict())
        progress.info(f"Fine-tuning {init_model}.")
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    scaler = grad_scaler(amp_dtype)

    history = []
    best_state = None
    best_epoch = 0
    best_metrics = {}
    initial_metrics = None
    done_epochs = 0
    elapsed_before = 0.0
    identity = {
        "dates": labels,
        "bands": info.bands,
        "config": config.to_dict(),
        "validation_mode": split.mode,
    }
    if resume:
        if not ckpt_path.exists():
            raise CtstfmError(
                f"RESUME is set but there is no checkpoint {ckpt_path}; untick RESUME to start a new training, or "
                "give the OUTPUT_MODEL of the interrupted run."
            )
        state = _load_checkpoint(ckpt_path)
        for key, value in identity.items():
            if state["identity"].get(key) != value:
                raise CtstfmError(
                    f"The checkpoint {ckpt_path} was made from other data or another network ({key} differs); "
                    "untick RESUME to start a new training, or give the same series and settings."
                )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        history = list(state["history"])
        best_state = state["best_state"]
        best_epoch = int(state["best_epoch"])
        best_metrics = dict(state["best_metrics"])
        initial_metrics = dict(state["initial_metrics"])
        done_epochs = int(state["epoch"])
        elapsed_before = float(state.get("seconds", 0.0))
        progress.info(
            f"Resuming from {ckpt_path}: {done_epochs} epochs done, best epoch {best_epoch} (val MAE "
            f"{best_metrics.get('mae', math.nan):.5f}); training up to epoch {epochs}."
        )
    elif ckpt_path.exists():
        progress.info(f"An old checkpoint {ckpt_path} exists; this new training replaces it after its first epoch.")

    from .raster import DEFAULT_RESAMPLING, gdal_cache_limit

    if done_epochs >= epochs:
        progress.info(
            f"The checkpoint already holds {done_epochs} epochs (EPOCHS is {epochs}): writing its best model; "
            "raise EPOCHS to train further."
        )
    data = SeriesData(pairs, scale=scale, bands=info.bands, resampling=DEFAULT_RESAMPLING)
    stack = contextlib.ExitStack()
    stack.enter_context(gdal_cache_limit())
    stack.callback(data.close)
    with stack:
        # --- fixed validation windows
        progress.update(0.005, "choosing validation windows")
        validator = _Validator(
            data,
            scenes,
            patch,
            max_windows=max_validation_windows,
            min_valid=min_valid,
            batch_size=batch_size,
            device=device,
            amp_dtype=amp_dtype,
            progress=progress,
        )
        progress.info(
            f"Validation on {len(validator.windows)} fixed windows of up to {patch} x {patch} px"
            + (f" from {len(split.validation_samples)} validation samples" if split.mode == "dates" else "")
            + (
                " (" + ", ".join(f"{s.label}: {n}" for s, n in zip(scenes, validator.scene_counts)) + ")."
                if several
                else "."
            )
        )
        for scene, count in zip(scenes, validator.scene_counts):
            if several and not count:
                progress.info(f"Scene '{scene.label}' has no validation window with valid pixels: it is not validated.")
        sampler = _PatchSampler(
            data,
            split.train_samples,
            [scene.train_rows for scene in scenes for _ in scene.split.train_samples],
            [scene.info.width for scene in scenes for _ in scene.split.train_samples],
            patch,
            min_valid,
            rng,
        )
        sampler.probe()
        if initial_metrics is None:
            progress.update(0.01, "validating the initial model")
            initial_metrics = validator.run(model)
            progress.info(f"Initial model: validation {_metrics_text(initial_metrics)}.")
        precision = f" with {str(amp_dtype).replace('torch.', '')} mixed precision" if amp_dtype else ""
        progress.info(
            f"Training on {device}{precision}: {patches_per_epoch} patches of {patch} x {patch} px per epoch, batch {batch_size}, lr {lr:g}, "
            f"epochs {done_epochs + 1} to {epochs}."
        )

        cancelled = False
        epochs_to_run = max(epochs - done_epochs, 0)
        first = 0.02
        for index, epoch in enumerate(range(done_epochs + 1, epochs + 1)):
            span = (1.0 - first) / epochs_to_run
            epoch_progress = progress.sub(first + index * span, first + (index + 1) * span)
            epoch_started = time.monotonic()
            counts = [min(batch_size, patches_per_epoch - step * batch_size) for step in range(steps)]
            prefetch = _Prefetcher(sampler.batch, counts)
            try:
                model.train()
                loss_sum = 0.0
                seen = 0
                for step, arrays in enumerate(prefetch):
                    epoch_progress.check()
                    count = counts[step]
                    coarse, fine0, fine1, valid = (torch.from_numpy(array).to(device) for array in arrays)
                    loss = train_step(model, optimizer, scaler, coarse, fine0, fine1, valid, device, amp_dtype)
                    loss_sum += float(loss.detach()) * count
                    seen += count
                    epoch_progress.update(0.9 * (step + 1) / steps, f"epoch {epoch}/{epochs}")
                train_seconds = time.monotonic() - epoch_started
                metrics = validator.run(model, epoch_progress.sub(0.9, 1.0))
            except Cancelled:
                cancelled = True
                break
            finally:
                prefetch.close()
            seconds = time.monotonic() - epoch_started
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / max(seen, 1),
                **{f"val_{name}": value for name, value in metrics.items()},
                "seconds": seconds,
                "patches_per_second": seen / max(train_seconds, 1e-9),
            }
            history.append(row)
            improved = best_state is None or metrics["mae"] < best_metrics["mae"]
            if improved:
                best_state = {key: value.detach().to("cpu").clone() for key, value in model.state_dict().items()}
                best_epoch = epoch
                best_metrics = dict(metrics)
            progress.info(
                f"Epoch {epoch}/{epochs}: train L1 {row['train_loss']:.5f}; validation {_metrics_text(metrics)}; "
                f"{row['patches_per_second']:.2f} patches/s; {seconds:.1f} s" + (" (best so far)" if improved else "")
            )
            _write_csv(history, csv_path)
            _atomic_torch_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": CHECKPOINT_VERSION,
                    "identity": identity,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "torch_rng": torch.get_rng_state(),
                    "numpy_rng": rng.bit_generator.state,
                    "history": history,
                    "best_state": best_state,
                    "best_epoch": best_epoch,
                    "best_metrics": best_metrics,
                    "initial_metrics": initial_metrics,
                    "seconds": elapsed_before + time.monotonic() - started,
                },
                ckpt_path,
            )
            done_epochs = epoch

    if best_state is None:
        raise Cancelled("Cancelled before the first epoch finished; no model was written.")

    # --- the best model, the report
    seconds = elapsed_before + time.monotonic() - started
    model.load_state_dict(best_state)
    model.to("cpu")
    scene_records = [
        {
            "name": scene.name,
            "manifest": scene.manifest,
            "dates": [d.isoformat() for d in scene.dates],
            "train_dates": [d.isoformat() for d in scene.split.train_dates],
            "validation_dates": [d.isoformat() for d in scene.split.validation_dates],
            "validation_mode": scene.split.mode,
            "validation_rows": scene.split.validation_rows,
            "validation_windows": count,
            "size": [scene.info.width, scene.info.height],
        }
        for scene, count in zip(scenes, validator.scene_counts)
    ]
    provenance = {
        "kind": "ctstfm-training",
        "data": data_source,
        "scenes": scene_records,
        "dates": sorted({d.isoformat() for d in dates}),
        "train_dates": [d.isoformat() for d in split.train_dates],
        "validation_dates": [d.isoformat() for d in split.validation_dates],
        "validation": split.note,
        "validation_mode": split.mode,
        "validation_rows": split.validation_rows,
        "validation_windows": len(validator.windows),
        "samples": sample_text,
        "epochs": done_epochs,
        "epochs_requested": epochs,
        "best_epoch": best_epoch,
        "best_validation": best_metrics,
        "initial_validation": initial_metrics,
        "cancelled": cancelled,
        "seed": int(seed),
        "device": device,
        "mixed_precision": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "batch_size": batch_size,
        "patch_size": patch,
        "patches_per_epoch": patches_per_epoch,
        "learning_rate": lr,
        "optimizer": "Adam(betas=(0.9, 0.999))",
        "loss": "L1 over valid pixels",
        "resampling": DEFAULT_RESAMPLING,
        "scale": scale,
        "references": references,
        "max_gap_days": max_gap_days,
        "init_model": str(init_model) if init_model else None,
        "seconds": round(seconds, 1),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from .model_file import save_model

    save_model(str(out_model), model, config=config, band_names=band_names, scale=scale, provenance=provenance)
    png = write_curve_png(history, png_path, initial_metrics, best_epoch) if history else None
    if png is None:
        progress.info("matplotlib is not installed: no PNG curve was drawn (the CSV holds the same numbers).")
    if cancelled:
        message = (
            f"Cancelled after {done_epochs} of {epochs} epochs: {out_model} holds the best model so far "
            f"(epoch {best_epoch}, validation MAE {best_metrics['mae']:.5f}); tick RESUME to continue from "
            f"{ckpt_path.name}."
        )
    else:
        message = (
            f"Trained {done_epochs} epochs in {seconds:.0f} s; best epoch {best_epoch}: validation "
            f"{_metrics_text(best_metrics)} (initial model: MAE {initial_metrics['mae']:.5f}). Wrote {out_model}."
        )
    progress.info(message)
    progress.update(1.0, "done")
    return TrainResult(
        model_path=str(out_model),
        report_csv=str(csv_path) if history else "",
        report_png=png,
        checkpoint=str(ckpt_path),
        epochs=done_epochs,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        initial_metrics=initial_metrics,
        history=history,
        train_dates=list(split.train_dates),
        validation_dates=list(split.validation_dates),
        validation_mode=split.mode,
        device=device,
        seconds=seconds,
        cancelled=cancelled,
        message=message,
        provenance=provenance,
        scenes=scene_records,
    )


def _pooled_split(scenes):
    """One :class:`Split` standing for several scenes: samples pooled, dates merged
    (sorted, each once), notes joined, mode "dates", "spatial" or "mixed"."""
    modes = {scene.split.mode for scene in scenes}
    return Split(
        modes.pop() if len(modes) == 1 else "mixed",
        sorted({d for scene in scenes for d in scene.split.train_dates}),
        sorted({d for scene in scenes for d in scene.split.validation_dates}),
        [s for scene in scenes for s in scene.split.train_samples],
        [s for scene in scenes for s in scene.split.validation_samples],
        validation_rows=max(scene.split.validation_rows for scene in scenes),
        note=" ".join(f"Scene '{scene.label}': {scene.split.note}" for scene in scenes),
    )


def grad_scaler(amp_dtype):
    import torch

    if amp_dtype is None or amp_dtype == torch.bfloat16:
        return None
    return torch.amp.GradScaler("cuda")


def _load_checkpoint(path):
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CtstfmError(
            f"The checkpoint {path} cannot be read ({exc}); delete it and untick RESUME to start a new training."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CtstfmError(f"{path} is not a CTSTFM training checkpoint; untick RESUME to start a new training.")
    if int(state.get("version", 0)) > CHECKPOINT_VERSION:
        raise CtstfmError(f"The checkpoint {path} was written by a newer model_core; update the plugin to resume it.")
    return state


class _Prefetcher:
    """Reads the batches of one epoch in a background thread while the network trains.

    One producer draws the batches in order, so the patch sequence (and the random
    state at the end of the epoch) is the same as without it. GDAL releases the GIL
    while it reads, so reading overlaps the optimisation step.
    """

    def __init__(self, make_batch, counts, depth=2):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._counts = list(counts)
        self._thread = threading.Thread(target=self._work, args=(make_batch,), name="ctstfm-patches", daemon=True)
        self._thread.start()

    def _put(self, item):
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, make_batch):
        try:
            for count in self._counts:
                if self._stop.is_set() or not self._put(make_batch(count)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)

    def __iter__(self):
        for _ in self._counts:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._thread.join()


class _PatchSampler:
    """Random training patches: a sample, a window, a redraw when too much is nodata.

    ``rows`` and ``width`` (the training area: rows from the top, full width) are
    one value for all samples, or one per sample when the samples come from
    scenes of different sizes; a sample is then drawn in proportion to its
    training area, so every training pixel of every scene is equally likely.
    """

    TRIES = 30
    PROBE_TRIES = 200

    def __init__(self, data, samples, rows, width, patch, min_valid, rng):
        self.data, self.samples, self.patch = data, list(samples), patch
        count = len(self.samples)
        self.rows = [int(rows)] * count if np.isscalar(rows) else [int(value) for value in rows]
        self.widths = [int(width)] * count if np.isscalar(width) else [int(value) for value in width]
        self.min_valid, self.rng = min_valid, rng
        areas = np.array(self.rows, dtype=float) * np.array(self.widths, dtype=float)
        # Equal areas (one scene): a plain uniform draw, the patch sequence of a one-scene series.
        self.cumulative = None if np.all(areas == areas[0]) else np.cumsum(areas)

    def _draw(self):
        if self.cumulative is None:
            index = int(self.rng.integers(len(self.samples)))
        else:
            position = self.rng.random() * self.cumulative[-1]
            index = min(int(np.searchsorted(self.cumulative, position, side="right")), len(self.samples) - 1)
        row = int(self.rng.integers(self.rows[index] - self.patch + 1))
        col = int(self.rng.integers(self.widths[index] - self.patch + 1))
        arrays = self.data.read(self.samples[index], (col, row, self.patch, self.patch))
        return arrays, float(arrays[3].mean())

    def probe(self):
        """Fail early, with a clear message, when no patch has enough valid pixels.

        Uses its own generator so the patch order stays that of the seed.
        """
        saved, self.rng = self.rng, np.random.default_rng(12345)
        try:
            best = 0.0
            for _ in range(self.PROBE_TRIES):
                best = max(best, self._draw()[1])
                if best >= self.min_valid:
                    return
            # Random draws can miss a small valid area; look at every tile before giving up.
            for sample, rows, width in zip(self.samples, self.rows, self.widths):
                for window in _grid_windows(0, rows, width, self.patch):
                    valid = self.data.read(sample, window)[3]
                    best = max(best, float(valid.mean()))
                    if best >= self.min_valid:
                        return
        finally:
            self.rng = saved
        raise CtstfmError(
            f"No {self.patch} x {self.patch} patch of the training dates has at least {100 * self.min_valid:.0f}% "
            f"valid pixels (the best has {100 * best:.0f}%): the rasters are mostly nodata where fine and coarse "
            "overlap. Check their nodata values and extents, or use a smaller PATCH_SIZE."
        )

    def patch_arrays(self):
        best = None
        for _ in range(self.TRIES):
            arrays, fraction = self._draw()
            if fraction >= self.min_valid:
                return arrays
            if best is None or fraction > best[1]:
                best = (arrays, fraction)
        return best[0]

    def batch(self, count):
        parts = [_augment(self.patch_arrays(), self.rng) for _ in range(count)]
        coarse, fine0, fine1, valid = (np.stack(items) for items in zip(*parts))
        return coarse, fine0, fine1, valid


def _fair_shares(counts, cap):
    """Split ``cap`` items between groups holding ``counts``: equal shares, what a small
    group cannot use going to the others."""
    shares = [0] * len(counts)
    left = cap
    order = sorted(range(len(counts)), key=counts.__getitem__)
    for done, index in enumerate(order):
        shares[index] = min(counts[index], left // (len(counts) - done))
        left -= shares[index]
    return shares


class _Validator:
    """Fixed validation windows and the metrics of a model on them."""

    CACHE_BYTES = 256 * 2**20

    def __init__(self, data, scenes, tile, *, max_windows, min_valid, batch_size, device, amp_dtype, progress):
        self.data, self.device, self.amp_dtype = data, device, amp_dtype
        per_scene = []
        for scene in scenes:
            info, split = scene.info, scene.split
            row0 = info.height - split.validation_rows if split.mode == "spatial" else 0
            per_scene.append(
                [
                    (sample, window)
                    for sample in split.validation_samples
                    for window in _grid_windows(row0, info.height, info.width, tile)
                ]
            )
        # At most max_windows in all, shared fairly between the scenes, evenly chosen within each.
        chosen = []
        for candidates, share in zip(per_scene, _fair_shares([len(c) for c in per_scene], int(max_windows))):
            if len(candidates) > share:
                picks = np.unique(np.linspace(0, len(candidates) - 1, share).round().astype(int)) if share else []
                candidates = [candidates[i] for i in picks]
            chosen.append(candidates)
        self.windows = []
        self.scene_counts = [0] * len(scenes)
        cache = []
        size = 0
        for scene_index, candidates in enumerate(chosen):
            for sample, window in candidates:
                progress.check()
                arrays = data.read(sample, window)
                if arrays[3].mean() <= 0.01:
                    continue
                self.windows.append((sample, window))
                self.scene_counts[scene_index] += 1
                size += sum(array.nbytes for array in arrays)
                cache.append(arrays)
        if not self.windows:
            raise CtstfmError(
                "No validation window has valid pixels: the validation dates (or the held-out bottom rows) are "
                "nodata. Check the rasters' nodata values, or change VALIDATION_FRACTION."
            )
        self.cache = cache if size <= self.CACHE_BYTES else None
        # Windows of one shape go through the network together, batch_size at a time.
        groups = {}
        for index, (_, window) in enumerate(self.windows):
            groups.setdefault((window[2], window[3]), []).append(index)
        self.batches = [
            members[start : start + batch_size] for members in groups.values() for start in range(0, len(members), batch_size)
        ]

    def run(self, model, progress=None):
        """Validation metrics (MAE, RMSE, PSNR, SSIM, SAM over all windows' valid pixels)
        of ``model``; predictions are clipped at 0 as fusion clips them."""
        import torch

        from .metrics import MetricsAccumulator

        progress = progress or Progress()
        accumulator = MetricsAccumulator()
        model.eval()
        done = 0
        with torch.no_grad():
            for batch in self.batches:
                progress.check()
                items = [
                    self.cache[index] if self.cache is not None else self.data.read(*self.windows[index])
                    for index in batch
                ]
                coarse, fine0, fine1, valid = (np.stack(parts) for parts in zip(*items))
                with autocast(self.amp_dtype):
                    pred = model(torch.from_numpy(coarse).to(self.device), torch.from_numpy(fine0).to(self.device))
                pred = pred.float().clamp(min=0.0).cpu().numpy()
                for i in range(len(batch)):
                    accumulator.update(pred[i], fine1[i], valid[i])
                done += len(batch)
                progress.update(done / len(self.windows), "validating")
        model.train()
        return _summary(accumulator.result())
