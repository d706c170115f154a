"""Fuse a whole time series: a fine image at every target date, in one job.

:func:`fuse_series` is the job people run spatiotemporal fusion for: a few clear
fine dates (e.g. Landsat) and a coarse image every few days (e.g. MODIS) in, a
fine image at every target date out. Each target date T is predicted by CTSTFM
from its coarse image and the nearest usable fine date before T and the nearest
after it (one when only one exists), and the two predictions are blended per
pixel (:func:`blend_predictions`):

    w_r = valid_r / (gap_r * (fit_r + FIT_FLOOR) ** 2)

``gap_r`` is the time between the reference and T in days; ``fit_r`` is how
badly the reference date explains the coarse image at T locally: the reference
date as the coarse sensor saw it (its own coarse image on the fine grid, or its
fine image when that date has no coarse one), averaged over a coarse pixel,
against the coarse image at T; the absolute difference averaged over bands and
over a coarse pixel around each pixel (reflectance; ``FIT_FLOOR`` keeps a perfect
fit finite). A reference that changed less since T, where the pixel is, weighs
more, like an inverse variance. (CTSTFM's prediction, degraded the same way,
hardly differs between references: its first guess already carries the coarse
image at T; docs/fusion.md has the measurements.) For a three-image model the
first guess of the targets between two fine dates, and the share of their
predicted change kept, are fitted on the series' own fine dates, each left out
in turn (:mod:`model_core.series_fit`). A pixel invalid in one reference (nodata, or
masked as cloud) is taken from the other; invalid in both, from the nearest farther
fine date clear there (:data:`FARTHER_DATES` of them, within ``max_gap_days``),
unchanged; where none is clear, it is nodata. Where the coarse image at T is invalid
(nodata, or masked as cloud by the ``coarse_mask`` column, e.g. MODIS's
``state_1km``), the nearest coarse image within ``coarse_days`` days
(:data:`COARSE_DAYS` by default) that is valid there stands in for it, pixel by
pixel (daily MODIS: the next clear day); where none is, nothing was seen near T: the
references' fine images are interpolated in time there (weights ``valid_r /
gap_r``), so the series stays gap-free. Each output says which share of its pixels
came from another coarse date, which were interpolated and which came from a farther
fine date (``CTSTFM_COARSE_OTHER_DATES_FRACTION``, ``CTSTFM_INTERPOLATED_FRACTION``,
``CTSTFM_FARTHER_FRACTION`` and the index's columns); ``interpolate_gaps=False``
leaves the pixels it would interpolate nodata. Per pixel, a quality layer says the same
(``quality_YYYY-MM-DD.tif``: band 1 the bits :data:`ONE_REFERENCE`,
:data:`COARSE_OTHER_DATE`, :data:`INTERPOLATED` and :data:`FARTHER_DATE`, band 2 the
days to the nearest fine date used there).

Speed: the tiles of a group of targets (the targets between the same two fine
dates) are visited once; each reference tile is read and encoded once
(:meth:`~model_core.network.CTSTFM.encode_fine`) and each target's coarse tile
encoded once (:meth:`~model_core.network.CTSTFM.encode_coarse`), so a target with
two references costs one coarse encoding and two fusion/decoding passes.

Outputs, in one folder: ``fused_YYYY-MM-DD.tif`` per target (written atomically
by :class:`~model_core.raster.RasterWriter`; the date, the references and a key
of everything that made it in its metadata), its ``quality_YYYY-MM-DD.tif`` (on
request, the default), ``index.csv``, ``stack.vrt`` (one
band per date and band) and, on request, ``quicklook.png``. A target whose file
already holds the same key is skipped, so an interrupted run resumes; a cancel
keeps the groups already finished and leaves no partial file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from . import __version__, distributed, paths
from .errors import Cancelled, CtstfmError, OptionError
from .options import SERIES_TARGETS, SIMILAR_WINDOW
from .outputs import atomic_write_text, check_outputs, check_writable, file_of
from .progress import Progress
from .raster import (
    DEFAULT_RESAMPLING,
    RasterInfo,
    RasterReader,
    OutputSpec,
    RasterWriter,
    _fill_invalid,
    check_north_up,
    check_overlap,
    gdal_cache_limit,
    output_spec,
    parse_band_list,
    read_metadata,
)
from .cloud_masks import (
    CloudRule,
    check_cloud_sources,
    check_masks,
    clouds_of,
    clouds_text,
    coarse_cloud_sources,
)
from .scales import check_series_scales
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, plan_tiles, run_tiled

TARGET_MODES = SERIES_TARGETS
WEIGHTINGS = ("fit", "time")
#: Reflectance added to the local misfit so that a near-perfect fit does not take all the weight
#: (about the coarse sensor's noise plus its residual misregistration, real-pair-facts.md).
FIT_FLOOR = 0.005
#: Memory for the blending buffers of one group of targets (targets per group are capped by it).
GROUP_BUFFER_BYTES = 1 << 30
#: The misfit's power in the weight: 2 weighs the references like inverse variances (measured in
#: docs/fusion.md against 1 and 3).
FIT_POWER = 2
INDEX_NAME = "index.csv"
STACK_NAME = "stack.vrt"
QUICKLOOK_NAME = "quicklook.png"
INDEX_COLUMNS = ("date", "file", "quality", "coarse_date", "coarse", "references", "gap_days", "weight_earlier",
                 "valid_fraction", "coarse_other_dates_fraction", "interpolated_fraction", "farther_fraction", "model",
                 "status")
#: How far (days) from a target the coarse images that stand in where its own is cloudy may be, by default. Measured
#: on eight realistic simulated series with three fine dates (docs/benchmarks.md, scripts/bench_coarse_clouds.py):
#: under a cloud, the next day's coarse image beat the fine dates interpolated in time in 7 of 8 (mean MAE -24 %),
#: one 3 days away in 5 of 8 (-9 %). A series with a coarse image every 8 or 16 days has none that near.
COARSE_DAYS = 3
#: The coarse validity a GroupReader hands the predictor for a pixel taken from another coarse date (1: its own).
FROM_OTHER_DATE = 2.0
#: The bits of a quality layer's first band: the pixel came from one reference only (the other is nodata or cloud
#: there, or the date has one), from another date's coarse image (``coarse_days``), or from the fine dates
#: interpolated in time (no coarse image seen). 0: both references and the date's own coarse image.
#: 8: neither reference is clear there; the nearest farther fine date clear there fills it, unchanged (its
#: temporal difference F_f + C_T - C_f was worse in 8 of 8 realistic series: docs/benchmarks.md).
ONE_REFERENCE, COARSE_OTHER_DATE, INTERPOLATED, FARTHER_DATE = 1, 2, 4, 8
#: How many fine dates beyond a target's references may fill the pixels cloudy in both references.
FARTHER_DATES = 2
#: The quality layer's nodata (where the fused image is nodata), in both bands.
QUALITY_NODATA = 65535
QUALITY_BANDS = ("flags (1 one reference, 2 coarse image of another date, 4 interpolated in time, 8 a farther "
                 "fine date, unchanged)", "days to the nearest fine date used")


def output_name(date):
    """The file name of the fused image of ``date``."""
    return f"fused_{date.isoformat()}.tif"


def quality_name(date):
    """The file name of the quality layer of ``date``'s fused image."""
    return f"quality_{date.isoformat()}.tif"


# --------------------------------------------------------------------------- the series and its targets


@dataclass(frozen=True)
class Target:
    """One date to fuse: its coarse image, its references (fine :class:`Pair`s) and its output."""

    date: _dt.date
    coarse: str
    coarse_date: _dt.date
    references: tuple
    path: str
    coarse_mask: str = ""  # where the coarse image is cloudy (the manifest's coarse_mask of its date)
    # The dates (Pairs) whose coarse images stand in where this one is invalid, nearest first (coarse_days).
    stand_ins: tuple = ()
    # The fine dates beyond the references that fill the pixels cloudy in both, nearest first (FARTHER_DATES).
    farther: tuple = ()

    @property
    def quality_path(self):
        """Where the quality layer of this target's fused image goes (beside it)."""
        return os.path.join(os.path.dirname(self.path), quality_name(self.date))

    @property
    def gaps(self):
        """Days from each reference to the target (positive: the reference is later)."""
        return tuple((ref.date - self.date).days for ref in self.references)


def load_series(manifest=None, fines=None, coarses=None, dates=None, progress=None):
    """The dated images of a series (a list of :class:`~model_core.training.Pair`, sorted by
    date), from a manifest CSV ``date,fine,coarse[,mask]`` whose paths may be empty, or from
    lists of fine and coarse rasters with their dates (see
    :func:`~model_core.training.series_from_layers` with ``paired=False``)."""
    from .training.series import read_manifest, series_from_layers

    if manifest and (fines or coarses):
        raise CtstfmError("Give either a manifest or the fine and coarse rasters, not both.")
    if not manifest:
        return series_from_layers(fines, coarses, dates, progress, paired=False)
    pairs = read_manifest(manifest, allow_missing=True)
    if len({pair.scene for pair in pairs}) > 1:
        raise CtstfmError(
            f"The manifest {manifest} holds several scenes; a time series is one scene on one grid, so give one "
            "manifest per scene (drop the scene column)."
        )
    seen = set()
    for pair in pairs:
        if pair.date in seen:
            raise CtstfmError(
                f"The date {pair.date.isoformat()} appears twice in the manifest {manifest}; give one line per date "
                "(with its fine and/or coarse image)."
            )
        seen.add(pair.date)
    return pairs


def target_dates(pairs, mode="missing", start=None, end=None, every_days=None):
    """``[(date, coarse pair)]`` to fuse. ``missing``: every coarse date without a fine image;
    ``all``: every coarse date (dates with a fine image are predicted from the other dates, a
    leave-one-out check); ``step``: from ``start`` to ``end`` every ``every_days`` days, each
    with the coarse image nearest in time (the earlier one on a tie)."""
    from .training.series import parse_date

    if mode not in TARGET_MODES:
        raise CtstfmError(f"Unknown target choice '{mode}'; use one of {', '.join(TARGET_MODES)}.")
    coarse = [pair for pair in pairs if pair.coarse]
    if not coarse:
        raise CtstfmError("The series has no coarse image; give the coarse images of the dates to fuse.")
    if mode == "all":
        return [(pair.date, pair) for pair in coarse]
    if mode == "missing":
        return [(pair.date, pair) for pair in coarse if not pair.fine]
    if not every_days or int(every_days) < 1:
        raise CtstfmError("A regular step needs a step of at least one day (every N days).")
    first = parse_date(start) if start else coarse[0].date
    last = parse_date(end) if end else coarse[-1].date
    if last < first:
        raise CtstfmError(f"The end date {last} is before the start date {first}; swap them.")
    days = range(0, (last - first).days + 1, int(every_days))
    steps = [first + _dt.timedelta(days=offset) for offset in days]
    return [(day, min(coarse, key=lambda pair: (abs((pair.date - day).days), pair.date))) for day in steps]


def pick_references(date, fines, count=2, max_gap_days=None):
    """The fine pairs a target uses: the nearest fine date before ``date`` and the nearest after it
    (``count=2``; one when only one side has any), or only the nearest one (``count=1``, the earlier
    on a tie). A fine image of ``date`` itself is never used. ``max_gap_days`` drops references further
    away."""
    usable = [pair for pair in fines if pair.date != date and
              (max_gap_days is None or abs((pair.date - date).days) <= int(max_gap_days))]
    before = [pair for pair in usable if pair.date < date]
    after = [pair for pair in usable if pair.date > date]
    sides = [side for side in (before[-1:] + after[:1])]
    if count == 1 and sides:
        sides = [min(sides, key=lambda pair: (abs((pair.date - date).days), pair.date))]
    return tuple(sides)


def farther_references(date, fines, references, max_gap_days=None, count=FARTHER_DATES):
    """The ``count`` fine pairs nearest to ``date`` that are not among its ``references`` (nor of ``date`` itself),
    within ``max_gap_days``, nearest first (the earlier on a tie): they fill what every reference misses."""
    usable = [pair for pair in fines if pair.date != date and pair not in references and
              (max_gap_days is None or abs((pair.date - date).days) <= int(max_gap_days))]
    return tuple(sorted(usable, key=lambda pair: (abs((pair.date - date).days), pair.date))[:count])


def coarse_stand_ins(date, own, pairs, coarse_days):
    """The pairs whose coarse images may stand in for ``own``'s (the coarse pair of a target at ``date``) where it is
    invalid: those within ``coarse_days`` days of ``date``, nearest first (the earlier on a tie)."""
    near = [pair for pair in pairs if pair.coarse and pair is not own and abs((pair.date - date).days) <= coarse_days]
    return tuple(sorted(near, key=lambda pair: (abs((pair.date - date).days), pair.date)))


def plan_targets(pairs, out_folder, *, targets="missing", start=None, end=None, every_days=None, references=2,
                 max_gap_days=None, coarse_days=0):
    """The :class:`Target`s of a series, each with its references (and its coarse stand-ins within
    ``coarse_days``, :func:`coarse_stand_ins`); a clear error when there is no fine date, no target, or a
    target without a reference within ``max_gap_days``."""
    if references not in (1, 2):
        raise CtstfmError(f"Use 1 or 2 references per date (got {references}).")
    if max_gap_days is not None and int(max_gap_days) < 1:
        raise CtstfmError(f"The maximum gap must be at least one day (got {max_gap_days}); leave it empty for none.")
    fines = [pair for pair in pairs if pair.fine]
    if not fines:
        raise CtstfmError(
            "The series has no fine image; fusion needs at least one fine (e.g. Landsat) date as a reference."
        )
    chosen = target_dates(pairs, targets, start, end, every_days)
    if not chosen:
        raise CtstfmError(
            "There is no date to fuse: every coarse date has a fine image. Choose 'all coarse dates' or a regular "
            "step as the target dates."
        )
    planned, orphans = [], []
    for date, coarse in chosen:
        refs = pick_references(date, fines, references, max_gap_days)
        if not refs:
            orphans.append(date.isoformat())
            continue
        path = os.path.join(str(out_folder), output_name(date))
        planned.append(Target(date, coarse.coarse, coarse.date, refs, path, coarse.coarse_mask,
                              coarse_stand_ins(date, coarse, pairs, int(coarse_days or 0)),
                              farther_references(date, fines, refs, max_gap_days)))
    if orphans:
        raise CtstfmError(
            f"No fine date within the maximum gap of {max_gap_days} days of {', '.join(orphans)}; raise the "
            "maximum gap, add a fine image near those dates, or leave them out of the target dates."
            if max_gap_days is not None else
            f"No fine date other than the date itself for {', '.join(orphans)}; add another fine image."
        )
    return planned


# --------------------------------------------------------------------------- checks


def check_series_rasters(targets, n_bands, band_names, fine_bands=None, coarse_bands=None, mask_band=None,
                         mask_rule=None, coarse_mask_rule=None):
    """Open every raster once before any work; returns the fine grid (:class:`RasterInfo`) and the
    1-based fine and coarse band lists. Every fine image must be on the grid of the first, with the
    same bands; every coarse image (of the targets and of the references' dates) must overlap it and hold
    the bands; masks must be readable and not a quality band read as 0/1 (:func:`~.cloud_masks.check_mask`
    with ``mask_rule`` for the fine images' and ``coarse_mask_rule`` for the coarse images', each a
    :class:`~.cloud_masks.CloudRule`)."""
    mask_rule = mask_rule or CloudRule.parse()
    coarse_mask_rule = coarse_mask_rule or CloudRule.parse(option="coarse_mask_rule")
    fines = {ref.fine: ref for target in targets for ref in target.references + target.farther}
    first = grid = None
    for path, ref in sorted(fines.items(), key=lambda item: item[1].date):
        what = f"fine image of {ref.date.isoformat()}"
        info = RasterInfo.read(path, what)
        check_north_up(info, what)
        if grid is None:
            first, grid = ref, info
            bands = parse_band_list(fine_bands, info.count, n_bands, what, band_names)
            if mask_band is not None and not 1 <= int(mask_band) <= info.count:
                raise CtstfmError(
                    f"The mask band {mask_band} does not exist in the {what}, which has {info.count} bands."
                )
        elif not info.same_grid(grid) or info.count != grid.count:
            raise CtstfmError(
                f"The {what} '{path}' ({info.width} x {info.height} px, {info.count} bands) is not on the grid of the "
                f"fine image of {first.date.isoformat()} ('{Path(first.fine).name}', {grid.width} x {grid.height} px, "
                f"{grid.count} bands); every fine image of a series must share one grid and its bands (warp and "
                "clip them onto one grid first)."
            )
        check_masks([ref], mask_rule, mask_band)
    coarse_list = None
    coarse_images = {(t.coarse, t.coarse_date, t.coarse_mask) for t in targets}
    coarse_images |= {(ref.coarse, ref.date, ref.coarse_mask) for t in targets for ref in t.references if ref.coarse}
    coarse_images |= {(pair.coarse, pair.date, pair.coarse_mask) for t in targets for pair in t.stand_ins}
    for path, date, mask in sorted(coarse_images, key=lambda item: item[1]):
        what = f"coarse image of {date.isoformat()}"
        info = RasterInfo.read(path, what)
        check_overlap(grid, info, "fine images", what)
        chosen = parse_band_list(coarse_bands, info.count, n_bands, what, band_names)
        coarse_list = coarse_list or chosen
        for cloud in coarse_cloud_sources(mask, coarse_mask_rule, f" of {date.isoformat()}"):
            check_overlap(grid, RasterInfo.read(cloud.path, cloud.what), "fine images", cloud.what)
            check_cloud_sources([cloud])
    return grid, bands, coarse_list


def coarse_pixel_ratio(grid, coarse_path):
    """The coarse raster's pixel size in pixels of ``grid`` (the fine grid; :meth:`RasterInfo.pixels_of`)."""
    return RasterInfo.read(coarse_path).pixels_of(grid)


def footprint_pixels(grid, coarse_path):
    """The coarse pixel's size in fine pixels (odd, at least 3): the scale the misfit is measured at."""
    return max(3, int(round(coarse_pixel_ratio(grid, coarse_path))) // 2 * 2 + 1)


#: Raised whenever a rule of the series job changes what it writes for the same inputs and options (2: a model of
#: the user's is also checked as its mean with the plugin's model; 3: the similar-pixel filter), so that outputs of
#: earlier runs are made anew.
SERIES_RULES = 3


def series_key(target, model_path, options, fitted_on=()):
    """A digest of everything a target's output depends on (inputs with their size and time, the
    model file, the options, and for a date between fine dates the fine dates its first guess and model choice
    were fitted on, ``fitted_on``): the same key means the existing file can be kept."""

    def stamp(path):
        if not path:
            return ""
        stat = os.stat(file_of(path))
        return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"

    data = {
        "date": target.date.isoformat(),
        "coarse": stamp(target.coarse),
        "references": [[ref.date.isoformat(), stamp(ref.fine), stamp(ref.mask), stamp(ref.coarse)]
                       for ref in target.references],
        "coarse_masks": [stamp(target.coarse_mask), *(stamp(ref.coarse_mask) for ref in target.references)],
        "coarse_stand_ins": [[pair.date.isoformat(), stamp(pair.coarse), stamp(pair.coarse_mask)]
                             for pair in target.stand_ins],
        "farther": [[pair.date.isoformat(), stamp(pair.fine), stamp(pair.mask)] for pair in target.farther],
        "model": stamp(model_path),
        "fitted_on": [[pair.date.isoformat(), stamp(pair.fine), stamp(pair.mask), stamp(pair.coarse)]
                      for pair in fitted_on],
        "options": options,
        "software": __version__,
        "rules": SERIES_RULES,
    }
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def has_quality(target, key):
    """True when ``target``'s quality layer exists and was made with its fused image (the same series ``key``),
    not left over from another run."""
    if not key or not os.path.isfile(target.quality_path):
        return False
    try:
        return read_metadata(target.quality_path).get("CTSTFM_SERIES_KEY") == key
    except CtstfmError:
        return False


def is_done(target, key, quality=False):
    """True when the target's output (and, with ``quality``, its quality layer) exists and was made with the same
    ``key``."""
    if not os.path.isfile(target.path) or (quality and not has_quality(target, key)):
        return False
    try:
        return read_metadata(target.path).get("CTSTFM_SERIES_KEY") == key
    except CtstfmError:
        return False


# --------------------------------------------------------------------------- one group of targets, tile by tile


def _box_mean(image, size):
    """``(B, C, h, w)`` averaged over a ``size`` x ``size`` box around each pixel (rows, then
    columns); edges replicate, so any tile size works."""
    import torch.nn.functional as F

    before, after = size // 2, size - 1 - size // 2
    padded = F.pad(image, (before, after, before, after), mode="replicate")
    return F.avg_pool2d(F.avg_pool2d(padded, (size, 1), stride=1), (1, size), stride=1)


def local_misfit(image, coarse, valid, footprint):
    """How badly ``image`` (a reference date as the coarse sensor saw it, ``(B, C, h, w)``) explains the
    coarse image around each pixel: the image averaged over a coarse pixel (``footprint`` fine pixels)
    against the coarse image, the absolute difference averaged over bands, then over the valid pixels
    of a coarse pixel around. ``(B, h, w)``, reflectance."""
    difference = (_box_mean(image, footprint) - coarse).abs().mean(dim=1, keepdim=True)
    mask = valid[:, None]
    spread = _box_mean(difference * mask, footprint) / _box_mean(mask, footprint).clamp_min(1e-6)
    return spread[:, 0]


def blend_predictions(predictions, references, valids, gaps, coarse, coarse_valid, footprint, weighting="fit",
                      fines=None, farther=None):
    """Blend the predictions of a target from its references, per pixel (see the module docstring).

    ``predictions`` and ``references`` (each reference date seen at the coarse scale: its coarse image,
    or its fine image when the date has none): ``(B, C, h, w)`` per reference, in date order;
    ``valids``: ``(B, h, w)`` 0/1 per reference; ``gaps``: days from each reference;
    ``coarse`` ``(B, C, h, w)`` and ``coarse_valid`` ``(B, h, w)``: the target's coarse image.
    ``weighting``: ``fit`` (time gap and local fit of the reference to the coarse image) or ``time``
    (time gap only). ``coarse_valid`` is :data:`FROM_OTHER_DATE` where another date's coarse image stood in.
    ``fines``: the references' fine images, ``(B, C, h, w)`` each, interpolated in time where the coarse image
    is invalid (``None``: those pixels are invalid). ``farther``: ``(values (B, C, h, w), days (B, h, w))``,
    the nearest farther fine date clear where no reference is valid (days 0: none). Returns
    ``(B, C + 4, h, w)``: the blend, its validity (0/1), the earlier reference's share of the weight, its quality bits
    (:data:`ONE_REFERENCE`, :data:`COARSE_OTHER_DATE`, :data:`INTERPOLATED`, :data:`FARTHER_DATE`) and the days to
    the nearest fine date used.
    """
    import torch

    in_time = [valid / float(max(abs(gap), 1)) for valid, gap in zip(valids, gaps)]
    weights = list(in_time)
    if weighting == "fit":
        weights = [weight / (local_misfit(reference, coarse, valid, footprint) + FIT_FLOOR) ** FIT_POWER
                   for weight, reference, valid in zip(weights, references, valids)]
    seen = coarse_valid > 0
    total = sum(weights)
    ok = ((total > 0) & seen).to(coarse.dtype)
    scale = ok / total.clamp_min(1e-12)
    blended = sum(weight[:, None] * prediction for weight, prediction in zip(weights, predictions)) * scale[:, None]
    share = weights[0] * scale
    interpolated = torch.zeros_like(ok)
    if fines is not None:
        # Not seen at T: the fine references interpolated in time (the network's prediction there only echoes the
        # reference its coarse input was filled from).
        time_total = sum(in_time)
        interpolated = ((time_total > 0) & ~seen).to(coarse.dtype)
        fill = interpolated / time_total.clamp_min(1e-12)
        blended = blended + sum(weight[:, None] * fine for weight, fine in zip(in_time, fines)) * fill[:, None]
        share = share + in_time[0] * fill
        ok = ok + interpolated
    other_date = (coarse_valid > 0.5 * (1.0 + FROM_OTHER_DATE)).to(coarse.dtype)
    used = [valid > 0 for valid in valids]
    one = (sum(u.to(coarse.dtype) for u in used) == 1).to(coarse.dtype)
    flags = ONE_REFERENCE * one + COARSE_OTHER_DATE * other_date * (1 - interpolated) + INTERPOLATED * interpolated
    far = float(max(abs(gap) for gap in gaps)) + 1
    days = torch.stack([torch.where(u, float(abs(gap)), far) for u, gap in zip(used, gaps)]).amin(dim=0)
    if farther is not None:
        values, farther_days = farther
        # Only where no reference is valid (a pixel merely unseen at T with interpolation off stays nodata).
        filled = (farther_days > 0) & ~torch.stack(used).any(dim=0)
        blended = torch.where(filled[:, None], values, blended)
        ok = torch.where(filled, torch.ones_like(ok), ok)
        flags = torch.where(filled, torch.full_like(flags, FARTHER_DATE), flags)
        days = torch.where(filled, farther_days, days)
        share = torch.where(filled, torch.zeros_like(share), share)
    return torch.cat((blended, ok[:, None], share[:, None], flags[:, None], days[:, None]), dim=1)


def _first_valid(holes, sources):
    """For each source ``(data, ok)`` in order (nearest first), ``(its index, data, take)``: the pixels of ``holes``
    it is the first to hold; stops, reading no further source, once no hole is left."""
    holes = holes.copy()
    for index, (data, ok) in enumerate(sources):
        if not holes.any():
            return
        take = holes & ok
        holes &= ~take
        if take.any():
            yield index, data, take


class GroupReader:
    """Reads one window of every reference (reflectance, cloud-masked, filled) and of every target's
    coarse image (on the fine grid, filled) of a group: the ``read`` of :func:`~model_core.tiling.run_tiled`.

    Inputs: ``(fine (R*C), fine valid (R), coarse (K*C), coarse valid (K), references seen at the coarse
    scale (R*C))``. Invalid fine pixels (nodata, or cloud in ``clouds(ref)``) are filled from the coarse image of
    the reference's own date (else the window's band mean); invalid coarse pixels (nodata, or cloud in
    ``coarse_clouds(mask, date)``) from the target's coarse stand-ins, nearest first (their coarse validity
    :data:`FROM_OTHER_DATE`), else from the target's nearest reference (validity 0), so no nodata reaches the
    network. Then ``(farther (K*C), farther days (K))``: where every reference of a target is invalid, its
    nearest farther fine date clear there and how far that date is (0: none).
    """

    def __init__(self, targets, references, grid, fine_bands, coarse_bands, *, scale, coarse_scale, resampling,
                 clouds=lambda ref: (), coarse_clouds=lambda mask, date: ()):
        self._readers = []
        self.references = list(references)
        self.scale = scale
        self.coarse_scale = coarse_scale
        self.fine = [self._open(ref.fine, fine_bands, None, f"fine image of {ref.date}", clouds=clouds(ref))
                     for ref in references]
        self.ref_coarse = [self._open(ref.coarse, coarse_bands, grid, f"coarse image of {ref.date}", resampling,
                                      coarse_clouds(ref.coarse_mask, ref.date))
                           if ref.coarse else None for ref in references]
        self.coarse = [self._open(t.coarse, coarse_bands, grid, f"coarse image of {t.coarse_date}", resampling,
                                  coarse_clouds(t.coarse_mask, t.coarse_date))
                       for t in targets]
        stand_ins = {pair.date: pair for t in targets for pair in t.stand_ins}
        self._stand_in = {date: self._open(pair.coarse, coarse_bands, grid, f"coarse image of {date}", resampling,
                                           coarse_clouds(pair.coarse_mask, date))
                          for date, pair in sorted(stand_ins.items())}
        self.stand_ins = [[pair.date for pair in t.stand_ins] for t in targets]
        self.uses = [[references.index(ref) for ref in t.references] for t in targets]
        farther = {pair.date: pair for t in targets for pair in t.farther}
        self._farther = {date: self._open(pair.fine, fine_bands, None, f"fine image of {date}", clouds=clouds(pair))
                         for date, pair in sorted(farther.items())}
        self.farther = [[(pair.date, abs((pair.date - t.date).days)) for pair in t.farther] for t in targets]
        self.nearest = [min(range(len(t.references)), key=lambda i: abs(t.gaps[i])) for t in targets]
        self.nearest = [references.index(t.references[i]) for t, i in zip(targets, self.nearest)]

    def _open(self, path, bands, grid, what, resampling=DEFAULT_RESAMPLING, clouds=()):
        reader = RasterReader(path, bands, grid=grid, resampling=resampling, what=what, clouds=clouds)
        self._readers.append(reader)
        return reader

    def read_reference(self, index, window):
        """Reference ``index``'s fine image (cloud-masked) and coarse image in ``window``: ``(fine, fine valid,
        coarse, coarse valid)``, the coarse pair ``None`` when the date has none; the invalid pixels of each are
        filled from the other."""
        data, ok = self.fine[index].read_reflectance(window, self.scale)  # clouds are invalid
        other = self.ref_coarse[index]
        coarse, coarse_ok = other.read_reflectance(window, self.coarse_scale) if other else (None, None)
        if not ok.all():
            _fill_invalid(data, ok, coarse, coarse_ok)
        if coarse is not None and not coarse_ok.all():
            _fill_invalid(coarse, coarse_ok, data, ok)
        return data, ok, coarse, coarse_ok

    def read(self, window):
        fines, fine_ok, seen = [], [], []
        for index in range(len(self.fine)):
            data, ok, coarse, _ = self.read_reference(index, window)
            fines.append(data)
            fine_ok.append(ok)
            seen.append(coarse if coarse is not None else data)
        coarses, coarse_ok, farther, farther_days = [], [], [], []
        reads = {}  # reader -> what it read in this window, once for every target that uses it

        def read(reader, scale):
            if reader not in reads:
                reads[reader] = reader.read_reflectance(window, scale)
            return reads[reader]

        for k, (reader, nearest, stand_ins) in enumerate(zip(self.coarse, self.nearest, self.stand_ins)):
            data, ok = reader.read_reflectance(window, self.coarse_scale)
            validity = ok.astype(np.float32)
            for _, other, take in _first_valid(~ok, (read(self._stand_in[date], self.coarse_scale)
                                                     for date in stand_ins)):
                data[:, take] = other[:, take]
                ok = ok | take
                validity[take] = FROM_OTHER_DATE
            # Where no reference sees the pixel: the nearest farther fine date that does, unchanged.
            fill = np.zeros_like(data)
            days = np.zeros(ok.shape, dtype=np.float32)
            unseen = ~np.any([fine_ok[r] for r in self.uses[k]], axis=0)
            sources = (read(self._farther[date], self.scale) for date, _ in self.farther[k])
            for index, fine, take in _first_valid(unseen, sources):
                fill[:, take] = fine[:, take]
                days[take] = max(self.farther[k][index][1], 1)
            farther.append(fill)
            farther_days.append(days)
            if not ok.all():
                _fill_invalid(data, ok, fines[nearest], fine_ok[nearest])
            coarses.append(data)
            coarse_ok.append(validity)
        inputs = (np.concatenate(fines), np.stack(fine_ok).astype(np.float32),
                  np.concatenate(coarses), np.stack(coarse_ok), np.concatenate(seen), np.concatenate(farther),
                  np.stack(farther_days))
        # Validity is per target, in the predictions' channels; the tiling engine's mask stays open.
        return inputs, np.ones((window.height, window.width), dtype=bool)

    def close(self):
        for reader in self._readers:
            reader.close()


class SeriesPredictor:
    """The per-tile work of a group: encode each reference and each target's coarse image once, fuse
    every (target, reference) pair, blend each target's predictions. The ``process`` of
    :func:`~model_core.tiling.run_tiled`; returns ``(B, K * (C + 4), h, w)`` (see :func:`blend_predictions`)."""

    def __init__(self, model, device, targets, references, footprint, weighting="fit", amp_dtype=None,
                 between=None, interpolate_gaps=True, similar=None):
        import copy

        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        # Dates between fine dates may be fused by another network (the plugin's model, chosen over a fine-tuned one),
        # or by two whose predictions are averaged (MeanOfModels), each with a first guess fitted on the series
        # (model_core.series_fit): a copy with another config, whose fine and coarse encodings are those of the
        # network it copies, keeping its share (per band) of each prediction's change from its reference's fine image.
        self.between = []  # (network, its encoder, share or None) per member
        for member in between.members if between is not None else ():
            encoder = member.network.to(device).eval()
            network = copy.copy(encoder)
            network.config = member.config
            share = None if member.share is None else \
                torch.tensor(member.share, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self.between.append((network, encoder, share))
        self.device = device
        self.uses = [[references.index(ref) for ref in t.references] for t in targets]
        self.gaps = [t.gaps for t in targets]
        self.footprint = footprint
        self.weighting = weighting
        self.interpolate_gaps = interpolate_gaps
        self.amp_dtype = amp_dtype
        # A three-image network gets each reference date's own coarse image as C0 where the series has it (else its
        # two-image stand-in, the box of the fine image).
        self.has_coarse_t0 = [bool(ref.coarse) for ref in references]
        # The similar-pixel filter of each prediction's change (model_core.fusion.SimilarPixelFilter): its window
        # and each reference's tolerance per band, or None.
        self.similar = None if similar is None else \
            (similar[0], [torch.as_tensor(t, dtype=torch.float32, device=device) for t in similar[1]])

    def _filtered(self, prediction, fine, valid, r):
        """``prediction``'s change from reference ``r``'s ``fine`` image averaged over similar ``valid`` pixels."""
        from .fusion import filtered_prediction

        window, tolerances = self.similar
        return self.torch.stack([filtered_prediction(p, f, v, tolerances[r], window)
                                 for p, f, v in zip(prediction, fine, valid)])

    def _coarse_t0(self, seen, r, network):
        """The coarse image of reference ``r``'s date for a three-image ``network``, else ``None``."""
        if network.config.images == 3 and self.has_coarse_t0[r]:
            return seen[:, r].contiguous(memory_format=self.torch.channels_last)
        return None

    def _tensor(self, array):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def __call__(self, batch):
        from .device import autocast

        torch = self.torch
        fine, fine_ok, coarse, coarse_ok, seen, farther, farther_days = (self._tensor(array) for array in batch)
        b, _, h, w = fine.shape
        fine = fine.reshape(b, fine_ok.shape[1], -1, h, w)
        seen = seen.reshape(b, fine_ok.shape[1], -1, h, w)
        coarse = coarse.reshape(b, coarse_ok.shape[1], -1, h, w)
        farther = farther.reshape(b, coarse_ok.shape[1], -1, h, w)
        channels_last = torch.channels_last
        outputs = []
        encoded_fine = {}  # (encoder, reference) -> features: each reference is encoded once per network

        def fine_features(encoder, r):
            if (id(encoder), r) not in encoded_fine:
                with autocast(self.amp_dtype, self.device):
                    encoded_fine[id(encoder), r] = encoder.encode_fine(fines[r])
            return encoded_fine[id(encoder), r]

        with torch.inference_mode():
            fines = [fine[:, r].contiguous(memory_format=channels_last) for r in range(fine.shape[1])]
            for k, uses in enumerate(self.uses):
                image = coarse[:, k].contiguous(memory_format=channels_last)
                members = self.between if self.between and len(uses) == 2 else [(self.model, self.model, None)]
                per_member = []
                for model, encoder, share in members:
                    with autocast(self.amp_dtype, self.device):
                        # The coarse stream's encoding is shared by a target's references only when it sees the
                        # coarse image alone (a three-image network's coarse stream also takes the reference's C0).
                        encoded = encoder.encode_coarse(image) if model.config.images == 2 else None
                        predictions = [
                            model(image, fines[r], self._coarse_t0(seen, r, model),
                                  fine_features=fine_features(encoder, r), coarse_features=encoded)
                            for r in uses
                        ]
                    predictions = [p.float().clamp_min(0.0) for p in predictions]
                    if share is not None:
                        predictions = [fines[r].float() + share * (p - fines[r].float())
                                       for r, p in zip(uses, predictions)]
                    per_member.append(predictions)
                predictions = [sum(each) / len(each) for each in zip(*per_member)]
                if self.similar is not None:
                    predictions = [self._filtered(p, fines[r].float(), (fine_ok[:, r] > 0) & (coarse_ok[:, k] > 0), r)
                                   for r, p in zip(uses, predictions)]
                outputs.append(blend_predictions(
                    predictions, [seen[:, r] for r in uses], [fine_ok[:, r] for r in uses], self.gaps[k],
                    image.float(), coarse_ok[:, k], self.footprint, self.weighting,
                    [fines[r].float() for r in uses] if self.interpolate_gaps else None,
                    (farther[:, k].float(), farther_days[:, k]),
                ))
        return torch.cat(outputs, dim=1).cpu().numpy()


# --------------------------------------------------------------------------- the job


@dataclass
class SeriesResult:
    """What :func:`fuse_series` did. ``written``: outputs made by this run; ``kept``: outputs of an
    earlier run with the same inputs and options, left as they were."""

    out_folder: str
    index: str
    stack: str
    quicklook: str
    dates: list
    written: list
    kept: list
    seconds: float
    tiles: int
    predictions: int
    width: int
    height: int
    bands: int
    device: str
    groups: int = 0
    files: dict = field(default_factory=dict)  # date (ISO) -> fused file, every finished date in date order
    quality: dict = field(default_factory=dict)  # date (ISO) -> its quality layer, where written

    def as_dict(self):
        return asdict(self)


@dataclass
class Between:
    """How the dates between two fine dates are fused: by ``loaded`` (a
    :class:`~model_core.model_file.LoadedModel` cut down to the series' bands, from ``model_path``) with the
    first-guess ``config`` (fitted on the series when ``fitted``), keeping ``share`` of each prediction's change
    (per band; ``None``: all of it). ``scores``: the models scored on the series' fine dates left out, by file
    name (:class:`~model_core.series_fit.LeftOutScore`), when a model was chosen by them."""

    loaded: object
    model_path: str
    config: object
    share: tuple = None
    fitted: bool = False
    scores: dict = field(default_factory=dict)
    left_out: object = None  # its LeftOutPredictions (no share applied) where the share was fitted, for scoring

    @property
    def network(self):
        return self.loaded.model

    @property
    def members(self):
        """The models whose predictions are averaged: this one alone."""
        return (self,)


#: Between the model files of a :class:`MeanOfModels` in its ``model_path``, the outputs' ``CTSTFM_MODEL`` and the
#: index's ``model`` column.
MODEL_SEPARATOR = " + "


def model_files_text(model_path, name=os.path.abspath):
    """``model_path`` (one model file, or a :class:`MeanOfModels`'s) with ``name`` applied to each file."""
    return MODEL_SEPARATOR.join(name(path) for path in str(model_path).split(MODEL_SEPARATOR))


@dataclass
class MeanOfModels:
    """The dates between two fine dates fused by each :class:`Between` of ``members`` (a model of the user's, first,
    and the plugin's), their predictions from each reference averaged before the references are blended.

    Why: on real Landsat series a model fine-tuned on the series' fine dates and the plugin's own model err
    differently; their mean filled the dates between fine dates better than the plugin's model in 37 of the 38
    series measured, and better than the better of the two in most (docs/benchmarks.md). ``scores`` and ``left_out`` as
    for :class:`Between`."""

    members: tuple
    scores: dict = field(default_factory=dict)
    left_out: object = None

    @property
    def loaded(self):  # whose provenance the outputs carry: the user's model
        return self.members[0].loaded

    @property
    def network(self):
        return self.members[0].network

    @property
    def model_path(self):
        return MODEL_SEPARATOR.join(str(member.model_path) for member in self.members)

    @property
    def fitted(self):
        return any(member.fitted for member in self.members)


@dataclass
class _Job:
    """Everything the groups of one run share."""

    grid: RasterInfo
    model: object
    device: object
    spec: object
    scale: float  # reflectance per DN of the fine images and the outputs
    coarse_scale: float
    band_names: list
    fine_bands: list
    coarse_bands: list
    options: dict
    keys: dict
    footprint: int
    batch_size: int
    model_path: str
    mixed_precision: bool
    between: object = None  # a Between: how the dates between two fine dates are fused (None: as the others)
    tolerances: dict = field(default_factory=dict)  # reference date -> its similar-pixel tolerance per band

    def clouds(self, ref):
        """The :class:`~.cloud_masks.CloudMask` sources of reference ``ref``'s fine image in this run."""
        return clouds_of(ref, CloudRule.parse(self.options["mask_rule"]), self.options["mask_band"])

    def coarse_clouds(self, mask, date):
        """The :class:`~.cloud_masks.CloudMask` sources of the coarse image of ``date`` with the cloud mask ``mask``."""
        rule = CloudRule.parse(self.options["coarse_mask_rule"], "coarse_mask_rule")
        return coarse_cloud_sources(mask, rule, f" of {date.isoformat()}")

    def similar_tolerance(self, ref, fine_reader, progress):
        """The similar-pixel filter's tolerance per band for reference ``ref`` (:func:`~.fusion.similar_tolerance`
        of its fine image's valid pixels, one pass of ``fine_reader``), remembered for the run's other groups."""
        from .classical_raster import fine_band_std
        from .fusion import similar_tolerance

        if ref.date not in self.tolerances:
            cancel_only = progress.sub(0.0, 0.0)  # the pass checks for cancel; the group's bar starts with the tiles
            self.tolerances[ref.date] = similar_tolerance(fine_band_std(fine_reader, self.scale, cancel_only))
        return self.tolerances[ref.date]

    def reader(self, targets, references):
        """A :class:`GroupReader` of ``targets`` and ``references`` with this run's bands, scales and masks."""
        return GroupReader(targets, references, self.grid, self.fine_bands, self.coarse_bands, scale=self.scale,
                           coarse_scale=self.coarse_scale, resampling=self.options["resampling"], clouds=self.clouds,
                           coarse_clouds=self.coarse_clouds)


def group_targets(targets, max_per_group):
    """Consecutive targets with the same references, at most ``max_per_group`` per group: the targets
    whose tiles are fused in one pass."""
    groups = []
    for target in targets:
        key = tuple(ref.date for ref in target.references)
        if groups and groups[-1][0] == key and len(groups[-1][1]) < max_per_group:
            groups[-1][1].append(target)
        else:
            groups.append((key, [target]))
    return [members for _, members in groups]


def _target_metadata(job, target, warped):
    from .fusion import _provenance_summary
    from .raster_job import output_metadata

    references = [{"date": ref.date.isoformat(), "fine": os.path.abspath(ref.fine), "gap_days": gap}
                  for ref, gap in zip(target.references, target.gaps)]
    between = job.between if job.between is not None and len(target.references) == 2 else None
    first_guess = {"fitted_on_the_series": bool(between and between.fitted)}

    def fit_of(member):
        return dict(change_gain=list(member.config.change_gain), change_blur=member.config.change_blur,
                    change_share=list(member.share or ())) if member.fitted else {}

    if between and len(between.members) == 1:
        first_guess.update(fit_of(between))
    elif between:
        first_guess["averaged"] = [dict(model=os.path.basename(member.model_path),
                                        fitted_on_the_series=member.fitted, **fit_of(member))
                                   for member in between.members]
    model_path, loaded = (between.model_path, between.loaded) if between else (job.model_path, job.model)
    if between and between.scores:
        first_guess["model_scores_on_fine_dates_left_out"] = {
            name: {"mae": round(score.mae, 6), "rmse": round(score.rmse, 6)} for name, score in between.scores.items()}
    return output_metadata(
        "CTSTFM fused fine image of a time series", {"CTSTFM_COARSE_T1": target.coarse},
        fine_bands=job.fine_bands, coarse_bands=job.coarse_bands, resampling=job.options["resampling"],
        warped=warped, tile=job.options["tile"], overlap=job.options["overlap"],
        output_type=job.options["output_type"], spec=job.spec,
        extra={
            "ACQUISITION_DATE": target.date.isoformat(),
            "CTSTFM_DATE": target.date.isoformat(),
            "CTSTFM_COARSE_DATE": target.coarse_date.isoformat(),
            "CTSTFM_REFERENCE_DATES": ",".join(ref["date"] for ref in references),
            "CTSTFM_REFERENCES": json.dumps(references),
            "CTSTFM_WEIGHTING": job.options["weighting"],
            "CTSTFM_CLOUDS": clouds_text([mask for ref in target.references + target.farther
                                          for mask in job.clouds(ref)]
                                         + job.coarse_clouds(target.coarse_mask, target.coarse_date)
                                         + [mask for pair in target.stand_ins
                                            for mask in job.coarse_clouds(pair.coarse_mask, pair.date)]),
            "CTSTFM_COARSE_STAND_INS": ",".join(pair.date.isoformat() for pair in target.stand_ins),
            "CTSTFM_FARTHER_DATES": ",".join(pair.date.isoformat() for pair in target.farther),
            "CTSTFM_GAPS": "interpolated in time" if job.options["interpolate_gaps"] else "nodata",
            "CTSTFM_SIMILAR_WINDOW": str(job.options["similar_window"]),
            "CTSTFM_FIRST_GUESS": json.dumps(first_guess),
            "CTSTFM_MODEL": model_files_text(model_path),
            "CTSTFM_MODEL_PROVENANCE": _provenance_summary(getattr(loaded, "provenance", {})),
            "CTSTFM_BANDS": ",".join(job.band_names),
            "CTSTFM_DEVICE": str(job.device),
            "CTSTFM_SERIES_KEY": job.keys[target.date],
        },
    )


def _run_group(job, group, progress):
    """Fuse one group of targets in one pass over the tiles; returns the tiling statistics."""
    from .device import mixed_precision_dtype

    references = sorted({ref for target in group for ref in target.references}, key=lambda ref: ref.date)
    grid, bands = job.grid, len(job.fine_bands)
    amp = mixed_precision_dtype(job.device) if job.mixed_precision else None
    # valid pixels, sum of the earlier reference's share, all pixels, pixels interpolated in time, pixels seen by
    # another coarse date, pixels from a farther fine date
    counts = np.zeros((len(group), 6))
    quality_spec = OutputSpec("uint16", QUALITY_NODATA, None)
    descriptions = [grid.descriptions[b - 1] or (job.band_names[i] if i < len(job.band_names) else "")
                    for i, b in enumerate(job.fine_bands)]
    with ExitStack() as stack:
        reader = job.reader(group, references)
        stack.callback(reader.close)
        window = job.options["similar_window"]
        similar = (window, [job.similar_tolerance(ref, reader.fine[i], progress) for i, ref in enumerate(references)]) \
            if window else None
        predictor = SeriesPredictor(job.model.model, job.device, group, references, job.footprint,
                                    job.options["weighting"], amp, job.between, job.options["interpolate_gaps"],
                                    similar)
        writers = [
            stack.enter_context(RasterWriter(
                target.path, grid, bands, job.spec, descriptions=descriptions,
                metadata=_target_metadata(job, target, coarse.warped), fmt=job.options["output_format"],
            ))
            for target, coarse in zip(group, reader.coarse)
        ]
        qualities = [
            stack.enter_context(RasterWriter(
                target.quality_path, grid, 2, quality_spec, descriptions=QUALITY_BANDS,
                fmt=job.options["output_format"],
                metadata={"CTSTFM_DATE": target.date.isoformat(), "CTSTFM_FUSED": os.path.basename(target.path),
                          "CTSTFM_SERIES_KEY": job.keys[target.date]},
            ))
            for target in group
        ] if job.options["quality"] else []

        def write(window, data, _valid):
            for k, writer in enumerate(writers):
                block = data[k * (bands + 4):(k + 1) * (bands + 4)]
                ok = block[bands] > 0.5
                writer.write(window, block[:bands], ok)
                flags = np.rint(block[bands + 2]).astype(np.int64)
                counts[k] += (ok.sum(), block[bands + 1][ok].sum(), ok.size, ((flags & INTERPOLATED) > 0).sum(),
                              ((flags & COARSE_OTHER_DATE) > 0).sum(), ((flags & FARTHER_DATE) > 0).sum())
                if qualities:
                    qualities[k].write(window, block[bands + 2:bands + 4], ok)

        stats = run_tiled(grid.width, grid.height, reader.read, predictor, write, tile=job.options["tile"],
                          overlap=job.options["overlap"], batch_size=job.batch_size, progress=progress)
        for target, writer, (valid, share, total, interpolated, other, farther) in zip(group, writers, counts):
            writer.update_metadata({
                "CTSTFM_FARTHER_FRACTION": f"{farther / max(total, 1):.4f}",
                "CTSTFM_VALID_FRACTION": f"{valid / max(total, 1):.4f}",
                "CTSTFM_WEIGHT_EARLIER": f"{share / max(valid, 1):.4f}",
                "CTSTFM_COARSE_OTHER_DATES_FRACTION": f"{other / max(total, 1):.4f}",
                "CTSTFM_INTERPOLATED_FRACTION": f"{interpolated / max(total, 1):.4f}",
            })
            if interpolated > 0.5 * total:
                progress.warning(
                    f"{target.date.isoformat()}: the coarse image of {target.coarse_date.isoformat()} is cloudy or "
                    f"nodata on {100 * interpolated / max(total, 1):.0f} % of the area; there the fine dates are "
                    "only interpolated in time (index.csv, interpolated_fraction)."
                )
    return stats


def _say_mode(config, model_path, plan, progress):
    """Log which first guess the model makes, and warn where a three-image model lacks a reference's C0."""
    name = os.path.basename(str(model_path))
    if config.images != 3:
        progress.info(f"Model {name}: two-image (fine T0, coarse T1); the reference dates' coarse images are not used.")
        return
    lacking = sorted({ref.date.isoformat() for t in plan for ref in t.references if not ref.coarse})
    progress.info(f"Model {name}: three-image: each reference date's own coarse image is its coarse T0.")
    if lacking:
        progress.warning(
            f"The fine dates {', '.join(lacking)} have no coarse image: from them this three-image model falls back "
            "to its two-image first guess (less accurate); add their coarse images to the series."
        )


def _model_for_series(loaded, plan, options):
    """(model cut down to the matched bands, :class:`~model_core.bands.BandMatch`): the series' bands matched to
    the model's by name, on its earliest fine image and first coarse image, as fusion of one date does
    (every fine image of a series shares its grid and bands, which check_series_rasters then holds)."""
    from .bands import model_for_rasters

    earliest = min((ref for target in plan for ref in target.references), key=lambda ref: ref.date)
    fine_info = RasterInfo.read(earliest.fine, f"fine image of {earliest.date.isoformat()}")
    coarse_info = RasterInfo.read(plan[0].coarse, f"coarse image of {plan[0].coarse_date.isoformat()}")
    return model_for_rasters(loaded, fine_info, coarse_info, bands=options["bands"],
                             fine_bands=options["fine_bands"], coarse_bands=options["coarse_bands"])


def _prepare(pairs, model_path, out_folder, plan, device, batch_size, mixed_precision, options, progress):
    """Load the model, check every input and work out the shared settings (a :class:`_Job`)."""
    from .device import resolve_device
    from .model_file import load_model

    inputs = {f"{kind} of {pair.date}": path for pair in pairs
              for kind, path in (("fine image", pair.fine), ("coarse image", pair.coarse), ("cloud mask", pair.mask),
                                 ("coarse cloud mask", pair.coarse_mask))}
    outputs = {f"fused image of {t.date}": t.path for t in plan}
    if options["quality"]:
        outputs.update({f"quality layer of {t.date}": t.quality_path for t in plan})
    outputs.update({name: os.path.join(out_folder, name) for name in (INDEX_NAME, STACK_NAME, QUICKLOOK_NAME)})
    geotiffs = [f"{kind} of {t.date}" for t in plan for kind in ("fused image", "quality layer")]
    check_outputs(outputs, dict(inputs, **{"model file": model_path}), geotiffs=geotiffs)
    torch_device = distributed.rank_device(resolve_device(device))  # under torchrun: this rank's GPU
    loaded = load_model(model_path, map_location="cpu")
    _say_mode(loaded.config, model_path, plan, progress)
    given_options = options
    loaded, match = _model_for_series(loaded, plan, options)
    progress.info(match.describe())
    band_names = list(loaded.band_names)
    grid, fine_bands, coarse_bands = check_series_rasters(
        plan, len(band_names), band_names, list(match.fine_bands), list(match.coarse_bands), options["mask_band"],
        CloudRule.parse(options["mask_rule"]), CloudRule.parse(options["coarse_mask_rule"], "coarse_mask_rule"),
    )
    options = dict(options, fine_bands=fine_bands, coarse_bands=coarse_bands)
    scale = options["scale"] or loaded.scale
    coarse_scale = options["coarse_scale"] or scale
    used = {ref.date for t in plan for ref in t.references} | {t.coarse_date for t in plan}
    used |= {pair.date for t in plan for pair in t.stand_ins + t.farther}
    check_series_scales([pair for pair in pairs if pair.date in used], scale, coarse_scale=coarse_scale,
                        coarse_option="coarse_scale", fine_bands=fine_bands, coarse_bands=coarse_bands)
    bands = len(fine_bands)
    # the fine dates (with coarse images) a date between fine dates is fitted on and its model chosen by
    fitted_on = [pair for pair in pairs if pair.fine and pair.coarse] \
        if options["fit_between"] or options["choose_model"] else []
    per_group = max(1, GROUP_BUFFER_BYTES // ((bands + 4) * min(int(options["tile"]), grid.height) * grid.width * 4))
    job = _Job(
        grid=grid, model=loaded, device=torch_device, spec=output_spec(grid, options["output_type"], scale),
        scale=scale, coarse_scale=coarse_scale, band_names=band_names, fine_bands=fine_bands,
        coarse_bands=coarse_bands, options=options,
        keys={t.date: series_key(t, model_path, options, fitted_on if len(t.references) == 2 else ()) for t in plan},
        footprint=footprint_pixels(grid, plan[0].coarse),
        batch_size=max(1, int(batch_size or 1)), model_path=str(model_path), mixed_precision=mixed_precision,
    )
    if any(len(t.references) == 2 for t in plan):
        job.between = _between_dates(job, pairs, plan, given_options, progress)
        if job.between is not None:
            job.between.left_out = None  # the fits' predictions of the dates left out: not needed to fuse
    return job, per_group


#: A model of the user's is weighed averaged with the plugin's model only when its provenance lists this many training
#: dates or more: trained on one pair (two dates) it carries that pair's change, and on simulated series its mean
#: with the plugin's model filled the dates between fine dates 66-83 % worse while scoring better on the date left
#: out (docs/benchmarks.md).
MEAN_MIN_TRAINING_DATES = 3

#: What the series job says when it cannot check a model of the user's filling dates between fine dates.
TUNED_BETWEEN_CAVEAT = (
    "To fill dates between fine dates, models trained with ctstfm:train's defaults on the series' fine dates did "
    "worse than the plugin's own model in every simulated series we measured (35-75 % more MAE), and from 12 % "
    "better to 12 % worse on real Landsat series (docs/benchmarks.md)"
)


def _between_dates(job, pairs, plan, options, progress):
    """The :class:`Between` (or :class:`MeanOfModels`) of the dates between fine dates: the job's model, its first
    guess fitted on the series where it can be (:func:`_fitted_between`). With ``choose_model`` a model other than the
    plugin's is checked against the plugin's model and against the mean of the two (:class:`MeanOfModels`) on the
    series' fine dates left out (:class:`~model_core.series_fit.LeftOutPredictions`) that were not among its training
    dates, and the best of the three fills those dates (a tie goes to the user's model, then to the mean). When every
    such date was among its training dates (its score there would flatter it), the plugin's model fills them, as it
    did better than such a model in every series measured; when the series has no such date, a fine-tuned model
    fills them averaged with the plugin's, which did better than the fine-tuned model alone in 40 of the 44 series
    measured (docs/benchmarks.md). The mean is weighed for a model trained on :data:`MEAN_MIN_TRAINING_DATES` dates
    or more."""
    from .series_fit import left_out_dates

    own = _fitted_between(job, pairs, progress)
    if paths.is_bundled_model(job.model_path) or not job.options["choose_model"]:
        return own
    name = os.path.basename(job.model_path)
    between = sum(1 for t in plan if len(t.references) == 2)
    triples = left_out_dates(pairs)
    fine_tuned = job.model.config.fine_tuned
    if not triples and not fine_tuned:
        return own
    trained = _training_dates(job.model)
    unseen = [triple for triple in triples if triple[1].date.isoformat() not in trained]
    dates = ", ".join(date.date.isoformat() for _, date, _ in (unseen or triples))
    weigh_mean = len(trained) >= MEAN_MIN_TRAINING_DATES
    if unseen:
        progress.info(f"Checking {name} against the plugin's model{' and the mean of both' if weigh_mean else ''} on "
                      f"the series' fine dates {dates}, each left out and predicted from its neighbours (the "
                      "plugin's model fitted on the series first):")
        if not weigh_mean:
            progress.info(f"{name} lists {len(trained)} training date(s): its mean with the plugin's model is weighed "
                          f"only for a model trained on {MEAN_MIN_TRAINING_DATES} or more (one pair's change, averaged "
                          "in, filled simulated series worse, and the check did not see it).")
    elif triples:
        progress.info(f"{name} was trained on every fine date this series could check it on ({dates}); the "
                      "plugin's model, fitted on the series, is prepared for the dates between fine dates:")
    plugin = _plugin_model_for_series(job, pairs, plan, options, progress)
    if plugin is None:
        return own
    plugin_name = os.path.basename(plugin.model_path)
    both = MeanOfModels((own, plugin))
    beyond = (f"{name} any date before the first or after the last fine date (CHOOSE_MODEL off: {name} "
              "everywhere)")
    if not triples:
        progress.warning(
            f"Model {name} was fine-tuned (its first guess has gains fitted on its training dates). "
            f"{TUNED_BETWEEN_CAVEAT}. With a fine date between two others (each with its coarse image) the series "
            f"job checks the model on it; this series has none, so the {between} date(s) between fine dates are "
            f"filled unchecked by the mean of {name} and the plugin's model, which filled them better than a "
            f"fine-tuned model alone in 33 of 44 series measured (3.8 % worse at worst; better than the plugin's "
            f"model alone in 37 of 38 real series); {beyond}. To check it, keep "
            "a fine date out of its training (Train CTSTFM's KEEP_OUT) and in this series."
        )
        return both
    if not unseen:
        progress.warning(
            f"{name}'s score on the fine dates {dates} would flatter it: they were among its training dates. "
            f"{TUNED_BETWEEN_CAVEAT}, so the plugin's model fills the {between} date(s) between fine dates, "
            f"{beyond}. To have {name} checked instead, keep one of these fine dates out of its training (Train "
            "CTSTFM's KEEP_OUT) and in this series."
        )
        return plugin
    if len(unseen) != len(triples):
        plugin.left_out = None  # fitted on windows of every such date: scored anew on the others' windows
    candidates = {"given": own, "mean": both, "plugin": plugin}  # in the order a tie is settled
    if not weigh_mean:
        del candidates["mean"]
    scores = _scores_left_out(job, unseen, candidates, progress)
    if scores is None:
        progress.info(f"No fine date left out ({dates}) had a valid pixel to score the models on; {name} fills the "
                      "dates between fine dates.")
        return own
    labels = list(candidates)
    best = min(range(len(labels)), key=lambda i: (scores[labels[i]].mae, i))
    # Under torchrun every rank takes rank 0's choice (GPUs may differ in the last bits of a near tie).
    best = int(distributed.sum_over_ranks(float(best) if distributed.world().main else 0.0)[0])
    label = labels[best]
    chosen = candidates[label]
    given_name = name if name != plugin_name else f"{name} (given)"
    titles = {"given": (given_name, name), "plugin": (plugin_name, "the plugin's model"),
              "mean": (f"mean of {given_name} and {plugin_name}", "the mean of both models")}
    chosen.scores = {titles[key][0]: scores[key] for key in labels}
    said = (f"Dates between fine dates: the fine dates {dates}, left out and predicted from their neighbours, score "
            + ", ".join(f"{titles[key][1]} {scores[key].text()}" for key in labels))
    if label == "given":
        progress.info(f"{said}: {name} fills every date.")
    else:
        which = "the plugin's model" if label == "plugin" else f"the mean of {name} and the plugin's model"
        (progress.warning if label == "plugin" else progress.info)(
            f"{said}: {which} fills the {between} date(s) between fine dates, {beyond}.")
    return chosen


def _scores_left_out(job, triples, candidates, progress):
    """``{label: LeftOutScore}`` of each :class:`Between` or :class:`MeanOfModels` of ``candidates`` on the fine
    dates of ``triples`` left out (from the predictions its share was fitted on, made on the same windows, else
    predicted now, each model's share applied as the dates are fused; a mean from its members' predictions);
    ``None`` when no pixel there is valid."""
    from .series_fit import LeftOutPredictions, predict_left_out

    dates = {date.date for _, date, _ in triples}
    scores, made = {}, {}  # made: id of each candidate scored -> its predictions, share applied
    with ExitStack() as stack:
        # single models first, so that a mean is scored from its members' predictions without running them again
        for label, candidate in sorted(candidates.items(), key=lambda item: len(item[1].members)):
            members = candidate.members
            predictions = LeftOutPredictions.mean([made[id(m)] for m in members]) \
                if len(members) > 1 and all(id(m) in made for m in members) else None
            if predictions is None:
                predictions, share = candidate.left_out, getattr(candidate, "share", None)
                if predictions is None:
                    reader = job.reader([], sorted({pair for triple in triples for pair in triple},
                                                   key=lambda pair: pair.date))
                    stack.callback(reader.close)
                    predict = stack.enter_context(_LeftOutPredictions(job, candidate))
                    predictions = predict_left_out(triples, _reference_reads(reader), predict, job.grid.width,
                                                   job.grid.height, progress)
                    share = None  # applied by the predictor
                predictions = predictions.with_share(share)
            made[id(candidate)] = predictions
            scores[label] = predictions.score(None, dates)
            candidate.left_out = None  # scored: its arrays are not needed any more
    return None if None in scores.values() else scores


def _training_dates(loaded):
    """The dates (ISO) a model's provenance lists as its training run's (empty when it lists none)."""
    return set((getattr(loaded, "provenance", None) or {}).get("dates") or ())


def _plugin_model_for_series(job, pairs, plan, options, progress):
    """The plugin's model as a :class:`Between` candidate: its form for the series (three-image when every fine
    date has its coarse image), cut down to the series' bands and fitted on the series where it can be; ``None``
    (logged) when it does not read the same bands as the job's model."""
    import dataclasses

    from .model_file import load_model

    plugin_path = paths.default_model(three_image=all(pair.coarse for pair in pairs if pair.fine))
    if plugin_path is None:
        return None
    try:
        loaded, match = _model_for_series(load_model(plugin_path, map_location="cpu"), plan, options)
    except CtstfmError as exc:  # e.g. bands named only in the user's model
        progress.info(f"The plugin's model cannot read this series' bands ({exc}); "
                      f"{os.path.basename(job.model_path)} is not checked against it.")
        return None
    if (list(match.fine_bands), list(match.coarse_bands), list(loaded.band_names)) != (
            list(job.fine_bands), list(job.coarse_bands), list(job.band_names)):
        progress.info(
            f"The plugin's model reads other bands of this series ({', '.join(loaded.band_names)}) than "
            f"{os.path.basename(job.model_path)} ({', '.join(job.band_names)}); the model is not checked against it."
        )
        return None
    return _fitted_between(dataclasses.replace(job, model=loaded, model_path=str(plugin_path)), pairs, progress)


def _reference_reads(reader):
    """``read(pair, window)`` of :mod:`model_core.series_fit` from a :class:`GroupReader` of the pairs: fine and
    coarse image of that date, valid where both are."""
    def read(pair, window):
        fine, ok, coarse, coarse_ok = reader.read_reference(reader.references.index(pair), window)
        return fine, coarse, ok & coarse_ok

    return read


class _LeftOutPredictions:
    """``predict(before, date, after, window)`` of :mod:`model_core.series_fit`: a fine date left out, predicted
    from its neighbours as a date between them is fused (by ``between``, a :class:`Between`), blended; returns the
    blend ``(C, h, w)``, its validity and the earlier neighbour's weight. A context manager: closes its readers."""

    def __init__(self, job, between):
        self.job, self.between, self.opened = job, between, {}

    def __call__(self, before, date, after, window):
        job = self.job
        if date not in self.opened:
            target = Target(date.date, date.coarse, date.date, (before, after), "", date.coarse_mask)
            self.opened[date] = (
                job.reader([target], [before, after]),
                SeriesPredictor(self.between.network, job.device, [target], [before, after], job.footprint,
                                job.options["weighting"], None, self.between, interpolate_gaps=False),
            )
        reader, predictor = self.opened[date]
        inputs, _ = reader.read(window)
        out = predictor(tuple(array[None] for array in inputs))[0]
        bands = len(job.fine_bands)
        return out[:bands], out[bands] > 0.5, out[bands + 1]

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for reader, _ in self.opened.values():
            reader.close()


def _fitted_between(job, pairs, progress):
    """The :class:`Between` of the job's model: its first guess and the share of change kept fitted on the series
    (:mod:`model_core.series_fit`; no share with two fine dates only) when ``fit_between`` is on and the model is a
    three-image residual one whose first guess was not fitted in training, else its own (the log says why)."""
    import dataclasses

    from .series_fit import fit_between_first_guess, fit_change_share, fit_samples, left_out_dates, predict_left_out

    config = job.model.config
    own = Between(job.model, job.model_path, config)
    if not job.options["fit_between"]:
        return own
    name = os.path.basename(job.model_path)
    if config.change_gain or config.images != 3 or not config.predict_residual:
        why = ("it was fitted in training" if config.change_gain else
               "it is the two-image one (no coarse T0)" if config.images != 3 else
               "the network predicts the fine image itself, not a correction of a first guess")
        progress.info(f"{name}'s first guess is not refitted on the series for the dates between fine dates: {why}.")
        return own
    samples = fit_samples(pairs)
    if not samples:
        progress.info(
            f"{name}'s first guess is not refitted on the series for the dates between fine dates: that needs two "
            "fine dates with coarse images."
        )
        return own
    references = sorted({pair for date, neighbours in samples for pair in (date, *(n for n, _ in neighbours))},
                        key=lambda pair: pair.date)
    reader = job.reader([], references)
    try:
        read = _reference_reads(reader)
        fitted = fit_between_first_guess(samples, read, job.grid.width, job.grid.height, job.band_names, progress)
        if not fitted:
            return own
        between = Between(job.model, job.model_path, dataclasses.replace(config, **fitted), fitted=True)
        triples = left_out_dates(pairs)
        if triples:  # with two fine dates only there is no date between them to fit the share of change on
            with _LeftOutPredictions(job, between) as predict:
                between.left_out = predict_left_out(triples, read, predict, job.grid.width, job.grid.height,
                                                    progress)
            between.share = fit_change_share(between.left_out, job.band_names, progress)
    finally:
        reader.close()
    return between


def fuse_series_from_inputs(out_folder, *, manifest=None, fine=None, coarse=None, dates=None, model_path=None,
                            progress=None, **options):
    """:func:`fuse_series` on the series a user gives as a manifest *or* fine and coarse rasters with
    dates (:func:`load_series`); ``options`` are :func:`fuse_series`'s. The CLI and QGIS both call this
    (``model_core.options.FUSE_SERIES``)."""
    series = load_series(manifest, fine, coarse, dates, progress)
    return fuse_series(series, model_path, out_folder, progress=progress, **options)


def fuse_series(series, model_path, out_folder, *, targets="missing", start=None, end=None, every_days=None,
                references=2, max_gap_days=None, weighting="fit", tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP,
                device="auto", batch_size=None, bands=None, fine_bands=None, coarse_bands=None, mask_band=None,
                mask_rule="nonzero", coarse_mask_rule="nonzero", coarse_days=COARSE_DAYS, interpolate_gaps=True,
                resampling=DEFAULT_RESAMPLING,
                output_type="input", output_format="GTiff", quicklook=False, progress=None, mixed_precision=True,
                scale=None, coarse_scale=None, fit_between=True, choose_model=True, quality=True,
                similar_window=SIMILAR_WINDOW):
    """Fuse a time series into a fine image per target date (see the module docstring).

    ``series``: a manifest path (CSV ``date,fine,coarse[,mask][,coarse_mask]``, empty paths allowed) or a list of
    :class:`~model_core.training.Pair` (:func:`load_series`). ``model_path``: a CTSTFM model file
    (``None``: the bundled default model). ``targets``: ``missing`` (coarse dates
    without a fine image), ``all`` or ``step`` (``start``, ``end``, ``every_days``). ``references``: 2
    (before and after, blended) or 1 (the nearest). ``max_gap_days``: farthest usable reference.
    ``weighting``: ``fit`` or ``time`` (:func:`blend_predictions`). ``bands`` / ``fine_bands`` /
    ``coarse_bands``: the images' bands matched to the model's by name, as in
    :func:`~model_core.fusion.fuse` (a model with more bands is cut down to them). ``mask_band``: a band of the fine
    images marking clouds; ``mask_rule``: which values of it and of the manifest's masks are cloud
    (:class:`~model_core.cloud_masks.CloudRule`: ``nonzero`` by default, a product preset, ``bits:`` or
    ``values:``); ``coarse_mask_rule``: the same for the manifest's ``coarse_mask`` rasters (e.g. ``modis-state``
    for MODIS's ``state_1km``). ``coarse_days``: where a target's coarse image is invalid, the nearest coarse image
    within that many days valid there stands in (0: none). ``interpolate_gaps``: where no coarse image is valid,
    interpolate the fine references in time (else nodata there). ``scale`` / ``coarse_scale``: reflectance per
    DN of the fine images (and the outputs) / of the coarse images (default the model's; every image used is
    checked, as in :func:`~model_core.fusion.fuse`). ``fit_between``: fit the first guess of the dates between
    fine dates on the series itself (:mod:`model_core.series_fit`; three-image residual models without fitted
    gains).
    ``choose_model``: a model other than the plugin's is scored against the plugin's model on the series' fine
    dates left out (each predicted from its neighbours), and the better one fills the dates between fine dates
    (:class:`Between`). ``similar_window``: each prediction's change from its reference is averaged over the
    spectrally similar pixels of that reference's fine image in a window this wide
    (:class:`~model_core.fusion.SimilarPixelFilter`; 0: off). ``quality``: write each date's quality layer
    (``quality_YYYY-MM-DD.tif``, the module docstring). The other options are those of
    :func:`~model_core.fusion.fuse`. Returns a :class:`SeriesResult`; raises :class:`CtstfmError` before any work
    for bad input, :class:`Cancelled` (keeping the finished dates) when cancelled.
    """
    from .fusion import check_similar_window
    from .raster_job import check_choice, check_output_options
    from .scales import check_scale_value

    progress = distributed.rank_progress(progress or Progress())  # under torchrun: rank 0 reports
    started = time.perf_counter()
    check_output_options(tile, overlap, resampling, output_type, output_format)
    scale, coarse_scale = check_scale_value(scale, "scale"), check_scale_value(coarse_scale, "coarse_scale")
    check_choice(weighting, WEIGHTINGS, "weighting")
    similar_window = check_similar_window(similar_window)
    if batch_size is not None and int(batch_size) < 1:
        raise CtstfmError(f"The batch size must be at least 1 (got {batch_size}).")
    out_folder = _output_folder(out_folder)
    if isinstance(series, (str, os.PathLike)):
        pairs = load_series(manifest=series)
    else:
        pairs = sorted(series, key=lambda pair: pair.date)
    # The bundled model's three-image form when every fine date has its coarse image (the references' C0).
    model_path = paths.model_or_default(model_path, three_image=all(pair.coarse for pair in pairs if pair.fine))
    if coarse_days is not None and int(coarse_days) < 0:
        raise OptionError(f"The coarse stand-in window {{coarse_days}} is {coarse_days} days; give 0 (none) or more.",
                          "coarse_days")
    plan = plan_targets(pairs, out_folder, targets=targets, start=start, end=end, every_days=every_days,
                        references=references, max_gap_days=max_gap_days, coarse_days=coarse_days)
    options = dict(tile=int(tile), overlap=int(overlap), bands=bands, fine_bands=fine_bands,
                   coarse_bands=coarse_bands,
                   mask_band=int(mask_band) if mask_band else None, mask_rule=CloudRule.parse(mask_rule).text,
                   coarse_mask_rule=CloudRule.parse(coarse_mask_rule, "coarse_mask_rule").text,
                   coarse_days=int(coarse_days or 0), interpolate_gaps=bool(interpolate_gaps),
                   resampling=resampling, output_type=output_type,
                   output_format=output_format, weighting=weighting, references=int(references), scale=scale,
                   coarse_scale=coarse_scale, fit_between=bool(fit_between), choose_model=bool(choose_model),
                   quality=bool(quality), similar_window=similar_window)
    job, per_group = _prepare(pairs, model_path, out_folder, plan, device, batch_size, mixed_precision, options,
                              progress)
    todo = [t for t in plan if not is_done(t, job.keys[t.date], job.options["quality"])]
    kept = [t.path for t in plan if t not in todo]
    if kept:
        progress.info(f"{len(kept)} of {len(plan)} date(s) already fused with these inputs and settings: kept.")
    groups = group_targets(todo, per_group)
    distributed.barrier()  # every rank has judged what is done before any rank writes a date
    written, tiles = _fuse_groups(job, share_groups(groups), plan, out_folder, kept, progress)
    here = distributed.world()
    if here.distributed:
        tiles = int(distributed.sum_over_ranks(tiles)[0])  # also waits for every rank's last date
        written = _finished_by_all_ranks(job, todo)
    if not here.main:
        return None  # rank 0 alone writes the index, stack and quicklook and returns the result
    index, stack = write_series_outputs(plan, out_folder, kept, written)
    picture = write_quicklook(plan, os.path.join(out_folder, QUICKLOOK_NAME), job) if quicklook else ""
    progress.update(1.0, "done")
    return SeriesResult(
        out_folder=out_folder, index=index, stack=stack, quicklook=picture or "",
        dates=[t.date.isoformat() for t in plan], written=written, kept=kept,
        seconds=time.perf_counter() - started, tiles=tiles,
        predictions=sum(len(t.references) for t in todo), width=job.grid.width, height=job.grid.height,
        bands=len(job.fine_bands), device=str(job.device), groups=len(groups),
        files={t.date.isoformat(): t.path for t in plan if t.path in set(written) | set(kept)},
        quality={t.date.isoformat(): t.quality_path for t in plan
                 if t.path in set(written) | set(kept) and has_quality(t, job.keys[t.date])},
    )


def share_groups(groups):
    """This rank's groups: round robin over the groups in date order (all of them in a single process),
    so every rank knows every rank's share without talking."""
    here = distributed.world()
    return groups[here.rank::here.size]


def _fuse_groups(job, groups, plan, out_folder, kept, progress):
    """Fuse ``groups`` one after the other; returns the paths written and the tile count. A single
    process rewrites the index after each group, so a cancelled run lists what it finished."""
    alone = not distributed.world().distributed  # under torchrun rank 0 writes the index at the end only
    count = sum(len(group) for group in groups)
    written, tiles = [], 0
    with gdal_cache_limit():
        try:
            for group in groups:
                refs = ", ".join(sorted({r.date.isoformat() for t in group for r in t.references}))
                progress.info(f"Fusing {', '.join(t.date.isoformat() for t in group)} from {refs}.")
                sub = progress.sub(len(written) / count, (len(written) + len(group)) / count)
                tiles += _run_group(job, group, sub).n_tiles
                written += [t.path for t in group]
                if alone:
                    write_series_outputs(plan, out_folder, kept, written)
        except Cancelled:
            if alone:
                write_series_outputs(plan, out_folder, kept, written)
            raise Cancelled(
                f"Cancelled; {len(written) + len(kept)} finished date(s) are kept in {out_folder}, no partial file "
                "was left; run again with the same settings to resume."
            ) from None
    return written, tiles


def _finished_by_all_ranks(job, todo):
    """The paths of ``todo`` that every rank has written, read back from the files' metadata (after the
    ranks have met, so every file is complete); a date missing is an error, not a gap in the index."""
    missing = [t.date.isoformat() for t in todo if not is_done(t, job.keys[t.date], job.options["quality"])]
    if missing:
        raise CtstfmError(f"The ranks finished but no fused file was found for {', '.join(missing)}; "
                          "run the same command again to fuse the missing dates.")
    return [t.path for t in todo]


def _output_folder(path):
    """The output folder, created when missing; a clear error when it cannot be written."""
    if path is None or str(path).strip() == "":
        raise CtstfmError("No output folder was given; choose a folder for the fused dates.")
    path = os.path.abspath(str(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise CtstfmError(f"The output folder '{path}' is a file; choose a folder.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise CtstfmError(f"Cannot create the output folder '{path}' ({exc.strerror}); choose another one.") from None
    check_writable(os.path.join(path, INDEX_NAME), "index")
    return path


# --------------------------------------------------------------------------- index, stack, quicklook


def write_series_outputs(plan, out_folder, kept, written):
    """Write ``index.csv`` and ``stack.vrt`` for the finished targets (``kept`` and ``written`` paths);
    returns their paths (``""`` for the stack when no date is finished)."""
    finished = [t for t in plan if t.path in set(kept) | set(written)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for target in finished:
        meta = read_metadata(target.path)
        writer.writerow([
            target.date.isoformat(), os.path.basename(target.path),
            os.path.basename(target.quality_path) if has_quality(target, meta.get("CTSTFM_SERIES_KEY")) else "",
            target.coarse_date.isoformat(),
            os.path.abspath(target.coarse), " ".join(ref.date.isoformat() for ref in target.references),
            " ".join(str(gap) for gap in target.gaps), meta.get("CTSTFM_WEIGHT_EARLIER", ""),
            meta.get("CTSTFM_VALID_FRACTION", ""), meta.get("CTSTFM_COARSE_OTHER_DATES_FRACTION", ""),
            meta.get("CTSTFM_INTERPOLATED_FRACTION", ""), meta.get("CTSTFM_FARTHER_FRACTION", ""),
            model_files_text(meta.get("CTSTFM_MODEL", ""), os.path.basename),
            "written" if target.path in written else "kept",
        ])
    index = os.path.join(out_folder, INDEX_NAME)
    atomic_write_text(index, buffer.getvalue())
    stack = os.path.join(out_folder, STACK_NAME)
    if not finished:
        return index, ""
    atomic_write_text(stack, stack_vrt([t.path for t in finished], [t.date for t in finished]))
    return index, stack


def stack_vrt(paths, dates):
    """A GDAL VRT (XML text) with one band per date and band, ``YYYY-MM-DD band`` as descriptions,
    referring to the rasters ``paths`` (on one grid) relative to the VRT's folder."""
    from osgeo import gdal, gdal_array

    info = RasterInfo.read(paths[0])
    gdal_type = gdal.GetDataTypeName(gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(info.dtype).type))
    names = [d or f"band {i + 1}" for i, d in enumerate(info.descriptions)]
    lines = [f'<VRTDataset rasterXSize="{info.width}" rasterYSize="{info.height}">']
    if info.crs_wkt:
        lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(info.crs_wkt)}</SRS>')
    if info.has_geotransform:
        lines.append(f"  <GeoTransform>{', '.join(repr(v) for v in info.geotransform)}</GeoTransform>")
    window = f'xOff="0" yOff="0" xSize="{info.width}" ySize="{info.height}"'
    number = 0
    for path, date in zip(paths, dates):
        for band, name in enumerate(names, start=1):
            number += 1
            nodata = info.nodata[band - 1]
            lines += [
                f'  <VRTRasterBand dataType="{gdal_type}" band="{number}">',
                f"    <Description>{escape(date.isoformat())} {escape(name)}</Description>",
                f'    <Metadata><MDI key="DATE">{date.isoformat()}</MDI>'
                f'<MDI key="BAND">{escape(name)}</MDI></Metadata>',
                f"    <NoDataValue>{nodata!r}</NoDataValue>" if nodata is not None else "",
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(os.path.basename(path))}</SourceFilename>',
                f"      <SourceBand>{band}</SourceBand>",
                f"      <SrcRect {window}/>",
                f"      <DstRect {window}/>",
                "    </SimpleSource>",
                "  </VRTRasterBand>",
            ]
    lines.append("</VRTDataset>")
    return "\n".join(line for line in lines if line) + "\n"


def write_quicklook(plan, path, job, size=160):
    """A PNG: one thumbnail per fused date (red, green, blue with one stretch for all) and the scene's
    mean NDVI per date, fused against coarse (when the model has red and NIR bands). Returns the path,
    or ``""`` when matplotlib is missing or no date is finished."""
    import dataclasses

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return ""
    finished = [t for t in plan if os.path.isfile(t.path)]
    if not finished:
        return ""
    grid = job.grid
    factor = max(grid.width, grid.height) / float(size)
    small = dataclasses.replace(
        grid, width=max(1, round(grid.width / max(factor, 1))), height=max(1, round(grid.height / max(factor, 1))),
    )
    small = dataclasses.replace(small, geotransform=(
        grid.geotransform[0], grid.geotransform[1] * grid.width / small.width, 0.0,
        grid.geotransform[3], 0.0, grid.geotransform[5] * grid.height / small.height,
    ))
    names = [name.lower() for name in job.band_names]
    rgb = [names.index(b) if b in names else i for i, b in enumerate(("red", "green", "blue"))]
    whole = (0, 0, small.width, small.height)
    fused, coarse = [], []
    for target in finished:
        with RasterReader(target.path, grid=small, resampling="average") as reader:
            fused.append(reader.read_reflectance(whole, job.scale if job.spec.scale else 1.0))
        with RasterReader(target.coarse, job.coarse_bands, grid=small, resampling="average") as reader:
            coarse.append(reader.read_reflectance(whole, job.coarse_scale))
    valid_values = np.concatenate([data[rgb][:, ok].ravel() for data, ok in fused]) if fused else np.zeros(1)
    low, high = np.percentile(valid_values, [2, 98]) if valid_values.size else (0.0, 1.0)
    ndvi = "red" in names and "nir" in names
    figure = Figure(figsize=(max(6.0, 1.6 * len(finished)), 4.2 if ndvi else 2.2), dpi=100)
    for i, (target, (data, ok)) in enumerate(zip(finished, fused)):
        axes = figure.add_subplot(2 if ndvi else 1, len(finished), i + 1)
        image = np.clip((np.moveaxis(data[rgb], 0, -1) - low) / max(high - low, 1e-6), 0, 1)
        image[~ok] = 1.0
        axes.imshow(image, interpolation="nearest")
        axes.set_title(target.date.isoformat(), fontsize=7)
        axes.axis("off")
    if ndvi:
        red, nir = names.index("red"), names.index("nir")

        def mean_ndvi(data, ok):
            values = (data[nir] - data[red]) / np.maximum(data[nir] + data[red], 1e-6)
            return float(values[ok].mean()) if ok.any() else float("nan")

        axes = figure.add_subplot(2, 1, 2)
        days = [t.date for t in finished]
        axes.plot(days, [mean_ndvi(*item) for item in fused], "o-", label="fused (fine)")
        axes.plot(days, [mean_ndvi(*item) for item in coarse], "s--", label="coarse")
        axes.set_ylabel("mean NDVI")
        axes.legend(fontsize=7)
        axes.tick_params(labelsize=7)
    figure.tight_layout()
    temp = f"{path}.{os.getpid()}.part.png"
    FigureCanvasAgg(figure).print_png(temp)
    os.replace(temp, path)
    return path
