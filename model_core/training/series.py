"""The series a model trains on: dated fine/coarse pairs, grouped in scenes, checked.

:func:`read_manifest` (CSV ``date,fine,coarse``, optionally ``scene``; written by
:func:`write_manifest`),
:func:`read_manifests` (several manifests, each its own scene(s)) and
:func:`series_from_layers` give a list of :class:`Pair`; :func:`resolve_series`
accepts any of these forms. :func:`check_scenes` opens every raster once: within
each scene at least two dates, no duplicate date, every fine raster on the same
grid with the same band count, every coarse raster covering its fine raster
(:func:`check_series`); the same band count in every scene.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CtstfmError, OptionError
from ..progress import Progress

@dataclass(frozen=True)
class Pair:
    """One date of the series: the fine and the coarse raster acquired that day.

    In a series to fuse (``allow_missing``) either path may be ``""`` (no image that day);
    ``mask`` and ``coarse_mask`` are optional rasters marking the fine and the coarse image's cloudy pixels
    (read by a :class:`~model_core.cloud_masks.CloudRule`)."""

    date: _dt.date
    fine: str
    coarse: str
    scene: str = ""  # pairs of one scene share a grid; "" when the series is one scene
    mask: str = ""
    coarse_mask: str = ""


#: The optional columns of a manifest that name rasters, besides ``fine`` and ``coarse``.
MASK_COLUMNS = ("mask", "coarse_mask")


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


MANIFEST_COLUMNS = ("date", "fine", "coarse")


def write_manifest(path, rows, columns=None):
    """Write a series manifest that :func:`read_manifest` reads back; returns its path.

    ``rows``: ``(date, fine, coarse[, scene])`` per date; dates are written ISO (a
    ``datetime.date``) or as given (text), paths relative to the manifest's folder (as
    absolute paths where they cannot be, e.g. on another drive; an empty path stays
    empty). ``columns``: the header (default ``date,fine,coarse``, plus ``scene`` when
    the rows have a fourth value).
    """
    path = Path(path)
    rows = [tuple(row) for row in rows]
    if columns is None:
        columns = MANIFEST_COLUMNS + (("scene",) if rows and len(rows[0]) > 3 else ())
    folder = path.resolve().parent
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            date = row[0].isoformat() if hasattr(row[0], "isoformat") else row[0]
            writer.writerow([date, *(_manifest_path(value, folder) for value in row[1:3]), *row[3:]])
    return path


def _manifest_path(value, folder):
    if value is None or str(value) == "":
        return ""
    absolute = os.path.abspath(os.path.expanduser(str(value)))
    try:
        return Path(os.path.relpath(absolute, folder)).as_posix()
    except ValueError:  # another drive (Windows)
        return absolute


def read_manifest(path, scene_prefix=None, allow_missing=False):
    """Read a series from a CSV with the columns ``date,fine,coarse`` (and optionally ``scene``).

    Dates are ISO (``2021-04-01``); paths may be relative to the CSV's folder.
    Other columns are ignored, as are blank lines and lines starting with ``#``.
    The optional ``scene`` column (any text) groups the rows into scenes, each on
    its own grid; without it the manifest is one scene. ``scene_prefix`` (used when
    several manifests train together) is put before every scene name:
    ``prefix`` or ``prefix:scene``. Returns the pairs grouped by scene (in order of
    first appearance), sorted by date within a scene.

    Optional ``mask`` and ``coarse_mask`` columns name cloud-mask rasters of that date's fine and coarse image
    (may be empty; a subdataset name such as MODIS's ``state_1km`` is a path too).
    ``allow_missing`` (a series to fuse): either path of a line may be empty (a fine
    date without a coarse image, or a coarse date without a fine one).
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
        delimiter = csv.Sniffer().sniff(lines[0], delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    # Only the delimiter is guessed (from the header); quoting is the usual one, so that a quoted cell may hold
    # quotes doubled, as a subdataset name's do.
    reader = csv.reader(lines, delimiter=delimiter)
    header = [name.strip().lower() for name in next(reader)]
    missing = [name for name in ("date", "fine", "coarse") if name not in header]
    if missing:
        raise CtstfmError(
            f"The manifest {path} has no column {', '.join(missing)} (found: {', '.join(header) or 'none'}); "
            "its first line must be the header 'date,fine,coarse'."
        )
    column = {name: header.index(name) for name in ("date", "fine", "coarse")}
    scene_column = header.index("scene") if "scene" in header else None
    column.update({name: header.index(name) for name in MASK_COLUMNS if name in header})
    optional = ("fine", "coarse", *MASK_COLUMNS) if allow_missing else MASK_COLUMNS
    pairs = []
    for line_number, row in enumerate(reader, start=2):
        values = {}
        for name, index in column.items():
            value = row[index].strip() if index < len(row) else ""
            if not value and name not in optional:
                raise CtstfmError(f"Line {line_number} of the manifest {path} has no {name}; fill it in or remove the line.")
            values[name] = value
        if allow_missing and not (values["fine"] or values["coarse"]):
            raise CtstfmError(
                f"Line {line_number} of the manifest {path} has neither a fine nor a coarse image; fill one in or "
                "remove the line."
            )
        try:
            date = parse_date(values["date"])
        except CtstfmError as exc:
            raise CtstfmError(f"Line {line_number} of the manifest {path}: {exc}") from None
        files = {}
        for name in ("fine", "coarse", *MASK_COLUMNS):
            files[name] = _listed_raster(values.get(name), path, line_number, name.replace("_", " "))
        scene = row[scene_column].strip() if scene_column is not None and scene_column < len(row) else ""
        if scene_prefix:
            scene = f"{scene_prefix}:{scene}" if scene else str(scene_prefix)
        pairs.append(Pair(date, files["fine"], files["coarse"], scene, files["mask"], files["coarse_mask"]))
    return group_scenes(pairs)


def _listed_raster(value, manifest, line_number, name):
    """The raster a manifest cell names, absolute (relative paths are read from the manifest's folder; a GDAL
    subdataset name, e.g. ``HDF4_EOS:EOS_GRID:"MOD09GA....hdf":MODIS_Grid_1km_2D:state_1km_1``, keeps its form with
    the file inside made absolute); ``""`` for an empty cell; a clear error when the file does not exist."""
    from ..outputs import SUBDATASET_NAME

    if not value:
        return ""
    match = SUBDATASET_NAME.match(value)
    file_path = Path(match.group(1) if match else value).expanduser()
    if not file_path.is_absolute():
        file_path = manifest.parent / file_path
    if not file_path.exists():
        raise CtstfmError(
            f"Line {line_number} of the manifest {manifest}: the {name} raster {file_path} does not exist; "
            "fix the path (relative paths are read from the manifest's folder)."
        )
    if match:
        return f'{value[:match.start(1)]}{file_path}{value[match.end(1):]}'
    return str(file_path)


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
        # A series manifest serves training as it is: its dates without a fine or a coarse image are left out by
        # train (usable_pairs), which says so.
        found = read_manifest(path, scene_prefix=name if len(paths) > 1 else None, allow_missing=True)
        for pair in found:
            manifests.setdefault(pair.scene, str(real))
        pairs.extend(found)
    return group_scenes(pairs), manifests


def usable_pairs(pairs, progress=None):
    """The pairs with both a fine and a coarse image (what training can use); the others are named in the log."""
    usable = [pair for pair in pairs if pair.fine and pair.coarse]
    left_out = [pair for pair in pairs if not (pair.fine and pair.coarse)]
    if left_out and progress is not None:
        progress.info(
            f"{len(left_out)} date(s) without a fine or a coarse image do not train: "
            + ", ".join(f"{pair.date.isoformat()}{scene_suffix(pair)} ({'no fine' if not pair.fine else 'no coarse'})"
                        for pair in left_out) + "."
        )
    return usable


def keep_out_of_training(pairs, dates, progress=None):
    """The pairs without those of ``dates`` (a list, or one string ``"2021-05-03,2021-06-04"``; empty: none),
    each a date of the series with a fine image, else a clear error naming the fine dates there are. A fine date
    kept out of training and given to the series job lets it check the model there (docs/fusion.md, *Which
    model for a series*); with none kept out, the log says so where the series has dates to fill between four or
    more fine dates (with three, keeping one out leaves a single pair twice as far apart)."""
    texts = [text.strip() for text in (dates.split(",") if isinstance(dates, str) else dates or ()) if str(text).strip()]
    fine_dates = sorted({pair.date for pair in pairs if pair.fine})
    if not texts:
        to_fill = [pair.date for pair in pairs if not pair.fine and fine_dates[0] < pair.date < fine_dates[-1]] \
            if fine_dates else []
        if to_fill and len(fine_dates) >= 4 and progress is not None:
            progress.info(
                f"This series has {len(to_fill)} date(s) to fill between fine dates. Given this model, Fuse Time "
                "Series fills them with the plugin's model (better there in every simulated series measured; on real "
                "Landsat series tuned models did from 12 % better to 12 % worse, and their mean with the plugin's "
                "model better in 37 of 38) unless it can check this model, alone and averaged with the plugin's, on "
                "a fine date it was not trained on and one of them wins there: for that, "
                "keep one fine date between two others out of training (KEEP_OUT, e.g. KEEP_OUT="
                f"{fine_dates[len(fine_dates) // 2].isoformat()}). Dates beyond the last fine date take this model."
            )
        return pairs
    wanted = []
    for text in texts:
        try:
            date = parse_date(text)
        except CtstfmError:
            raise OptionError(f"{{keep_out}}: '{text}' is not a date; write dates as YYYY-MM-DD, e.g. 2021-04-01.",
                              "keep_out") from None
        if date not in fine_dates:
            raise OptionError(
                f"{{keep_out}}: {date.isoformat()} is not a fine date of the series; its fine dates are "
                + ", ".join(day.isoformat() for day in fine_dates) + ".", "keep_out",
            )
        wanted.append(date)
    if progress is not None:
        progress.info(
            "Kept out of training: " + ", ".join(date.isoformat() for date in sorted(wanted)) + ". Given to Fuse Time "
            "Series with this model, a fine date between two others is where it checks the model against the "
            "plugin's."
        )
    return [pair for pair in pairs if pair.date not in wanted]


def group_scenes(pairs):
    """Pairs grouped by scene (scenes in order of first appearance), sorted by date within each."""
    order = {}
    for pair in pairs:
        order.setdefault(pair.scene, len(order))
    return sorted(pairs, key=lambda pair: (order[pair.scene], pair.date))


def series_from_layers(fines, coarses, dates=None, progress=None, paired=True):
    """Pairs from lists of raster paths and their dates.

    ``paired`` (training): two equally long lists, one fine and one coarse raster per
    date; ``dates`` is a list of dates or one string ``"2021-04-01,2021-05-03,..."`` in
    the same order as the rasters. Not ``paired`` (a series to fuse): the lists may
    differ in length and ``dates`` gives the fine rasters' dates, then the coarse
    rasters'; a fine and a coarse raster of the same date make one pair, any other
    raster a pair with an empty path. When ``dates`` is empty each date is read from
    the file name (a pair's fine raster first), and the log says so.
    """
    fines = [str(item) for item in (fines or [])]
    coarses = [str(item) for item in (coarses or [])]
    if paired and (not fines or not coarses):
        raise CtstfmError(
            "No series given: pick the fine rasters and the coarse rasters (one of each per date), "
            "or give a manifest CSV with columns date,fine,coarse."
        )
    if not paired and not (fines or coarses):
        raise CtstfmError(
            "No series given: pick the fine and the coarse rasters, or give a manifest CSV with columns "
            "date,fine,coarse."
        )
    if paired and len(fines) != len(coarses):
        raise CtstfmError(
            f"{len(fines)} fine rasters but {len(coarses)} coarse rasters; give one coarse raster per fine raster, "
            "in the same date order."
        )
    if isinstance(dates, str):
        dates = [part for part in re.split(r"[,;\s]+", dates) if part]
    dates = list(dates or [])
    progress = progress or Progress()
    named = list(zip(fines, coarses)) if paired else [(path,) for path in fines + coarses]
    if dates:
        if len(dates) != len(named):
            what = "fine rasters" if paired else "rasters (fine ones first, then coarse ones)"
            raise CtstfmError(
                f"{len(dates)} dates for {len(named)} {what}; give one date per raster"
                + (" pair" if paired else "") + ", in the same order (e.g. 2021-04-01,2021-05-03), or leave the "
                "dates empty to read them from the file names."
            )
        parsed = [parse_date(item) for item in dates]
    else:
        parsed = []
        for paths in named:
            date = next((found for found in map(date_from_name, paths) if found), None)
            if date is None:
                raise CtstfmError(
                    f"No date given and none found in the file name of {paths[0]}; type the dates "
                    "(YYYY-MM-DD, comma-separated, in the order of the rasters) or put YYYY-MM-DD or YYYYMMDD "
                    "in the file names."
                )
            parsed.append(date)
        progress.info(
            "Dates read from the file names: "
            + ", ".join(f"{Path(paths[0]).name} -> {date.isoformat()}" for paths, date in zip(named, parsed))
        )
    if paired:
        pairs = (Pair(date, fine, coarse) for date, fine, coarse in zip(parsed, fines, coarses))
        return sorted(pairs, key=lambda p: p.date)
    by_date = {}
    for index, (date, path) in enumerate(zip(parsed, fines + coarses)):
        kind = "fine" if index < len(fines) else "coarse"
        entry = by_date.setdefault(date, {"fine": "", "coarse": ""})
        if entry[kind]:
            raise CtstfmError(
                f"Two {kind} rasters have the date {date.isoformat()} ({Path(entry[kind]).name} and "
                f"{Path(path).name}); give one {kind} raster per date."
            )
        entry[kind] = path
    return [Pair(date, entry["fine"], entry["coarse"]) for date, entry in sorted(by_date.items())]


def series_from_inputs(manifest=None, fine=None, coarse=None, dates=None, progress=None):
    """``(series, data_source)`` from what a user gives: manifest(s) *or* fine and coarse rasters.

    The one rule every face follows: ``manifest`` (a path or a list of paths) or the
    ``fine``/``coarse`` raster lists with their ``dates`` (see :func:`series_from_layers`),
    never both, never neither. ``data_source`` is what provenance records.
    """
    manifests = [manifest] if isinstance(manifest, (str, os.PathLike)) else list(manifest or [])
    if manifests and (fine or coarse):
        raise CtstfmError("Give either a manifest or the fine and coarse rasters, not both.")
    if manifests:
        return (manifests[0] if len(manifests) == 1 else manifests), None
    if fine or coarse:
        pairs = series_from_layers(fine, coarse, dates, progress=progress)
        fine_paths = [str(item) for item in fine or []]
        coarse_paths = [str(item) for item in coarse or []]
        return pairs, {"layers": {"fine": fine_paths, "coarse": coarse_paths, "dates": dates or "from file names"}}
    raise CtstfmError(
        "No series given: choose a manifest CSV (date,fine,coarse), or the fine and the coarse rasters of each date."
    )


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
    from .. import raster

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
        raster.check_north_up(fine, what)
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


def _bounds_text(bounds):
    return "(" + ", ".join(f"{value:.1f}" for value in bounds) + ")"


def scene_suffix(pair):
    """`` in scene NAME`` for messages about a pair of a named scene, else ``""``."""
    return f" in scene '{pair.scene}'" if pair.scene else ""


def resolve_series(series, data_source=None):
    """``(pairs, manifests, data_source)`` for any form :func:`~model_core.training.train` accepts.

    ``series``: a manifest path, a list of manifest paths, or a list of :class:`Pair`.
    ``manifests`` maps scene names to their manifest; ``data_source`` is what
    provenance records as the data (the given one, else the manifest path(s) or the pairs).
    """
    manifests = {}
    series = [series] if isinstance(series, (str, os.PathLike)) else list(series)
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
    return pairs, manifests, data_source
