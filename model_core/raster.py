"""The one raster reader, warper and writer (GDAL, window by window).

Everything in ``model_core`` that touches a raster file goes through this module:
fusion, training (pairs of coarse T1 / fine T0 plus a fine T1 label) and
assessment. Nothing here reads a whole raster into memory; callers read windows.

Reading
    :func:`open_raster` opens a file with a clear :class:`CtstfmError` when it is
    missing or not a raster. :class:`RasterInfo` describes its grid (size, CRS,
    geotransform, per-band nodata, data type, band descriptions).
    :class:`RasterReader` reads a window of chosen bands as ``float32`` plus a
    validity mask (nodata or NaN in *any* chosen band makes the pixel invalid).
    Given a ``grid`` (another raster's :class:`RasterInfo`) it presents the raster
    on that grid: a raster already on the grid (same CRS, geotransform and size)
    is read as it is; any other is warped lazily through a GDAL warped VRT in
    ``/vsimem`` (only the windows asked for are ever warped). Source nodata is
    carried through the warp and everything outside the source comes out invalid.

Pairs
    :class:`PairReader` reads, for one window of the fine grid, the fine image at
    T0 and the coarse image at T1 resampled onto the fine grid, both as
    reflectance (``DN * scale``, negatives clipped to 0) with their invalid pixels
    filled so that no nodata value ever reaches a network, plus the joint
    validity mask.

Writing
    :class:`RasterWriter` writes a tiled, DEFLATE-compressed GeoTIFF (or a COG) on
    the fine grid to a temporary file in the output folder and renames it onto
    the output path only when :meth:`RasterWriter.commit` is called; on any error
    or cancel (:meth:`RasterWriter.abort`, or leaving its ``with`` block with an
    exception) nothing is left behind. :func:`output_spec` picks the output data
    type and nodata ("same as the fine input" or float32 reflectance).

Conventions
    Windows are :class:`Window` ``(col, row, width, height)`` in pixels of the
    raster (or grid) being read; arrays are ``(bands, rows, cols)``. Band indices
    are 1-based, as in GDAL and QGIS.
"""

import json
import math
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import numpy as np
from osgeo import gdal, gdal_array, osr

from .errors import CtstfmError
from .outputs import check_output, check_writable, file_of, temporary_name

# GDAL 4 raises Python exceptions by default; say so explicitly (GDAL >= 3.7 warns on every
# command otherwise, and QGIS >= 3.38 turns them on too). Every call that can fail goes
# through _try_gdal, which turns GDAL's exception into our own message.
gdal.UseExceptions()
osr.UseExceptions()
from .options import OUTPUT_FORMATS, RESAMPLINGS

#: Resampling methods for putting a coarse raster on the fine grid, by the name
#: users see, mapped to GDAL's. ``bilinear`` is the default: for 500 m -> 30 m it
#: gives a smooth field without the blocks of ``nearest`` or the overshoot of
#: ``cubic``. ``average`` suits the rarer case of a source finer than the grid.
RESAMPLING_METHODS = dict(zip(RESAMPLINGS, ("bilinear", "cubic", "near", "average")))
DEFAULT_RESAMPLING = "bilinear"
#: How far past a source pixel's edge, in source pixels, each resampling carries its value onto a finer grid
#: (bilinear blends the 2 x 2 nearest source pixels, cubic the 4 x 4): a cloud's reflectance reaches that far
#: beyond its mask, so a warped image's cloud masks are widened by as much.
RESAMPLING_REACH = dict(zip(RESAMPLINGS, (0.5, 1.5, 0.0, 0.0)))

#: Nodata written in float32 reflectance outputs (NaN is never written).
FLOAT_NODATA = -9999.0



class Window(NamedTuple):
    """A rectangle of pixels: first column, first row, width, height."""

    col: int
    row: int
    width: int
    height: int

    @property
    def slices(self):
        """``(rows, cols)`` slices selecting this window from a full array."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


# --------------------------------------------------------------------------- GDAL


@contextmanager
def _quiet_gdal():
    """Silence GDAL's own printing; failures are reported as CtstfmError instead."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    gdal.ErrorReset()
    try:
        yield
    finally:
        gdal.PopErrorHandler()


def _last_gdal_error(default="unknown GDAL error"):
    return (gdal.GetLastErrorMsg() or default).strip()


def _try_gdal(call, default="unknown GDAL error"):
    """``(result, None)`` of a GDAL call, or ``(None, GDAL's message)`` when it fails.

    With exceptions on, GDAL raises ``RuntimeError``; an error code or ``None`` counts as a failure too.
    """
    try:
        result = call()
    except RuntimeError as exc:
        return None, (str(exc).strip() or _last_gdal_error(default))
    if result is None:
        return None, _last_gdal_error(default)
    return result, None


def _is_vsi(path):
    return str(path).startswith("/vsi")


#: How many subdatasets a "this is a container" message names.
SUBDATASETS_NAMED = 3


def _container_message(dataset, path, what):
    """The error for a dataset with subdatasets and no bands of its own (MODIS HDF, netCDF): what it holds and how
    to make one image of the bands needed."""
    names = [name for name, _ in dataset.GetSubDatasets()]
    short = ", ".join(name.rsplit('":', 1)[-1] for name in names[:SUBDATASETS_NAMED])
    more = f" and {len(names) - SUBDATASETS_NAMED} more" if len(names) > SUBDATASETS_NAMED else ""
    return (
        f"The {what} '{path}' is a container of {len(names)} subdatasets, not one image ({short}{more}; gdalinfo "
        f"lists their full names, such as '{names[0]}'). Stack the bands you need into one raster, in order, e.g. "
        "gdalbuildvrt -separate stack.vrt 'SUBDATASET_A' 'SUBDATASET_B' ... (for MODIS surface reflectance the "
        "blue, green, red, NIR, SWIR1, SWIR2 bands are sur_refl_b03, b04, b01, b02, b06, b07), or give one "
        "subdataset's name as the path."
    )


@contextmanager
def gdal_cache_limit(max_bytes=256 * 2**20):
    """Cap GDAL's block cache while a job runs (GDAL's default is 5% of RAM).

    The tiling engine re-reads the overlaps of neighbouring tiles, so a cache of
    a few strips is all it needs; the cap keeps memory use independent of the
    machine's RAM. The previous setting is restored afterwards.
    """
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(int(min(previous, max_bytes)))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


def open_raster(path, what="raster"):
    """Open ``path`` read-only as a GDAL raster dataset.

    Raises :class:`CtstfmError` naming ``what`` (e.g. "fine image") when the path
    is empty, missing, not a raster, or has no bands.
    """
    if path is None or str(path).strip() == "":
        raise CtstfmError(f"No {what} was given; choose a raster file.")
    path = str(path)
    if not _is_vsi(path) and not os.path.exists(file_of(path)):
        raise CtstfmError(f"The {what} '{path}' does not exist; check the path.")
    if os.path.isdir(path) and not path.lower().endswith((".gdb", ".safe")):
        raise CtstfmError(f"The {what} '{path}' is a folder, not a raster file; choose the image file.")
    with _quiet_gdal():
        dataset, message = _try_gdal(
            lambda: gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY), "not a format GDAL can read"
        )
    if dataset is None:
        raise CtstfmError(
            f"The {what} '{path}' could not be read as a raster ({message}); "
            "give a GeoTIFF or another raster that GDAL can read."
        )
    if dataset.RasterCount == 0:
        if dataset.GetSubDatasets():
            raise CtstfmError(_container_message(dataset, path, what))
        raise CtstfmError(f"The {what} '{path}' has no raster bands; give a raster image.")
    return dataset


def _srs(wkt):
    if not wkt:
        return None
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def same_crs(wkt_a, wkt_b):
    """True when two WKT strings describe the same CRS (both empty counts as same)."""
    if not wkt_a or not wkt_b:
        return not wkt_a and not wkt_b
    return bool(_srs(wkt_a).IsSame(_srs(wkt_b)))


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class RasterInfo:
    """What a raster is: its grid, bands, nodata and data type.

    ``geotransform`` is GDAL's ``(x0, dx, rx, y0, ry, dy)``; ``nodata`` and
    ``descriptions`` have one entry per band (``None`` / ``""`` when unset);
    ``dtype`` is the numpy name of band 1's type (e.g. ``"int16"``).
    """

    path: str
    width: int
    height: int
    count: int
    crs_wkt: str
    geotransform: Tuple[float, ...]
    nodata: Tuple[Optional[float], ...]
    dtype: str
    descriptions: Tuple[str, ...]
    has_geotransform: bool = True  # False: the file has no georeferencing (GDAL's default grid)

    @classmethod
    def from_dataset(cls, dataset, path=None):
        bands = [dataset.GetRasterBand(i + 1) for i in range(dataset.RasterCount)]
        dtype = np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(bands[0].DataType)).name
        return cls(
            path=str(path if path is not None else dataset.GetDescription()),
            width=dataset.RasterXSize,
            height=dataset.RasterYSize,
            count=dataset.RasterCount,
            crs_wkt=dataset.GetProjection() or "",
            geotransform=tuple(float(v) for v in dataset.GetGeoTransform()),
            nodata=tuple(band.GetNoDataValue() for band in bands),
            dtype=dtype,
            descriptions=tuple(band.GetDescription() or "" for band in bands),
            has_geotransform=dataset.GetGeoTransform(can_return_null=True) is not None,
        )

    @classmethod
    def read(cls, path, what="raster"):
        """Describe the raster at ``path`` (opens and closes it)."""
        dataset = open_raster(path, what)
        try:
            return cls.from_dataset(dataset, path)
        finally:
            dataset = None

    @property
    def shape(self):
        """``(count, height, width)``, the shape of a full read."""
        return (self.count, self.height, self.width)

    @property
    def pixel_size(self):
        """``(dx, dy)`` in CRS units; dy is negative for a north-up raster."""
        return (self.geotransform[1], self.geotransform[5])

    @property
    def is_north_up(self):
        gt = self.geotransform
        return gt[2] == 0 and gt[4] == 0 and gt[1] > 0 and gt[5] < 0

    @property
    def bounds(self):
        """``(xmin, ymin, xmax, ymax)`` of the raster in its CRS."""
        return self.window_bounds(Window(0, 0, self.width, self.height))

    def window_bounds(self, window):
        """``(xmin, ymin, xmax, ymax)`` of a pixel window in the raster's CRS."""
        gt = self.geotransform
        xs, ys = [], []
        for col in (window.col, window.col + window.width):
            for row in (window.row, window.row + window.height):
                xs.append(gt[0] + col * gt[1] + row * gt[2])
                ys.append(gt[3] + col * gt[4] + row * gt[5])
        return (min(xs), min(ys), max(xs), max(ys))

    def window_transform(self, window):
        """The geotransform of a window of this raster."""
        gt = self.geotransform
        return (
            gt[0] + window.col * gt[1] + window.row * gt[2],
            gt[1],
            gt[2],
            gt[3] + window.col * gt[4] + window.row * gt[5],
            gt[4],
            gt[5],
        )

    def pixels_of(self, grid):
        """This raster's pixel size in pixels of ``grid`` (any CRS; from the areas of the two): about 16 for MODIS
        over Landsat, about 1 for an image already resampled onto the grid."""
        bounds = self.bounds_in(grid.crs_wkt) or self.bounds
        size = math.sqrt((bounds[2] - bounds[0]) * (bounds[3] - bounds[1]) / max(self.width * self.height, 1))
        return size / max(abs(grid.geotransform[1]), 1e-12)

    def bounds_in(self, crs_wkt):
        """The raster's bounds transformed to another CRS (densified edges), or None."""
        if same_crs(self.crs_wkt, crs_wkt):
            return self.bounds
        if not self.crs_wkt or not crs_wkt:
            return None
        try:
            with _quiet_gdal():
                transform = osr.CoordinateTransformation(_srs(self.crs_wkt), _srs(crs_wkt))
                result = transform.TransformBounds(*self.bounds, 21)
        except (RuntimeError, TypeError, ValueError):
            return None
        if result is None or not all(math.isfinite(v) for v in result):
            return None
        return tuple(result)

    def same_grid(self, other, tolerance=1e-6):
        """True when ``other`` has this raster's size, CRS and (within a tiny
        fraction of a pixel) geotransform: pixels correspond one to one."""
        if (self.width, self.height) != (other.width, other.height):
            return False
        scale = max(abs(self.geotransform[1]), abs(self.geotransform[5]), 1e-12)
        if any(abs(a - b) > tolerance * scale for a, b in zip(self.geotransform, other.geotransform)):
            return False
        return same_crs(self.crs_wkt, other.crs_wkt)


def check_north_up(info, what="raster"):
    """Raise :class:`CtstfmError` when a georeferenced raster's grid is rotated or not north-up.

    A raster without georeferencing passes: it is read pixel for pixel, so every image it is used with must
    have its size (:meth:`RasterReader._warp_options` refuses to place one on another's grid)."""
    if info.has_geotransform and not info.is_north_up:
        raise CtstfmError(
            f"The grid of the {what} '{info.path}' is rotated or not north-up; warp it to a north-up grid first "
            "(Raster > Projections > Warp)."
        )


def parse_band_list(spec, count, needed=None, what="image", band_names=None):
    """Turn a band choice into a list of 1-based band indices, checked against ``count``.

    ``spec`` is ``None``/``""``/``[]`` (the first ``needed`` bands, or all bands
    when ``needed`` is None), a string such as ``"3,4,1,2,6,7"`` or a sequence of
    ints. When ``needed`` is given the list must have exactly that many bands.
    """
    names = f" ({', '.join(band_names)})" if band_names else ""
    if spec is None or (isinstance(spec, (str, list, tuple)) and len(spec) == 0) or str(spec).strip() == "":
        if needed is None:
            return list(range(1, count + 1))
        if count < needed:
            raise CtstfmError(
                f"The {what} has {count} band(s) but the model needs {needed}{names}; "
                f"give an image with those bands, or choose which bands to use."
            )
        return list(range(1, needed + 1))
    if isinstance(spec, str):
        parts = [p for p in spec.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
        try:
            bands = [int(p) for p in parts]
        except ValueError:
            raise CtstfmError(
                f"The band list '{spec}' for the {what} is not a comma-separated list of band numbers (e.g. 1,2,3)."
            ) from None
    else:
        try:
            bands = [int(b) for b in spec]
        except (TypeError, ValueError):
            raise CtstfmError(f"The band list {spec!r} for the {what} is not a list of band numbers.") from None
    bad = [b for b in bands if b < 1 or b > count]
    if bad:
        raise CtstfmError(
            f"Band(s) {', '.join(map(str, bad))} do not exist in the {what}, which has {count} band(s) "
            f"(numbered from 1)."
        )
    if needed is not None and len(bands) != needed:
        raise CtstfmError(
            f"{len(bands)} band(s) were chosen for the {what} but the model needs {needed}{names}; "
            f"choose {needed} bands in the model's order."
        )
    return bands


# --------------------------------------------------------------------------- reading


def _decimated_size(grid, max_size):
    """``(width, height)`` of ``grid`` shrunk to at most ``max_size`` pixels a side."""
    factor = max(max(grid.width, grid.height) / float(max_size), 1.0)
    return max(1, int(round(grid.width / factor))), max(1, int(round(grid.height / factor)))


def _valid_mask(data, nodata):
    """``(h, w)`` bool: every band finite and different from its nodata."""
    valid = np.isfinite(data).all(axis=0)
    for band_index, value in enumerate(nodata):
        if value is not None and math.isfinite(value):
            valid &= data[band_index] != np.float32(value)
    return valid


def _widen(flags, reach):
    """``flags`` (bool ``(h, w)``) with every flagged pixel's neighbours within ``reach`` pixels (a square) flagged."""
    if reach <= 0 or not flags.any():
        return flags
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(flags, reach)
    rows = sliding_window_view(padded, 2 * reach + 1, axis=0).any(axis=-1)
    return sliding_window_view(rows, 2 * reach + 1, axis=1).any(axis=-1)


class RasterReader:
    """Reads windows of chosen bands of one raster as ``float32`` plus a validity mask.

    ``bands``: 1-based band indices (default: all). ``grid``: a
    :class:`RasterInfo` whose pixel grid windows refer to; ``None`` means the
    raster's own grid. A raster on a different grid is warped lazily with
    ``resampling`` (see :data:`RESAMPLING_METHODS`); ``self.warped`` says whether
    it was. ``clouds``: :class:`~model_core.cloud_masks.CloudMask` sources whose
    flagged pixels :meth:`read` marks invalid (each put on the grid by nearest
    neighbour, and, for a warped raster, widened by as far as the resampling
    carries a cloud's reflectance, :data:`RESAMPLING_REACH`). Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, path, bands=None, grid=None, resampling=DEFAULT_RESAMPLING, what="raster", clouds=()):
        if resampling not in RESAMPLING_METHODS:
            raise CtstfmError(
                f"Unknown resampling '{resampling}'; use one of {', '.join(RESAMPLING_METHODS)}."
            )
        self.what = what
        self.resampling = resampling
        self._vsimem = []
        self._dataset = open_raster(path, what)
        self.source_info = RasterInfo.from_dataset(self._dataset, path)
        self.bands = parse_band_list(bands, self.source_info.count, what=what)
        self.grid = grid if grid is not None else self.source_info
        self.warped = not self.source_info.same_grid(self.grid)
        self.nodata = tuple(self.source_info.nodata[b - 1] for b in self.bands)
        self._clouds = []
        # Grid pixels a cloud's reflectance reaches past its mask through the warp.
        self._cloud_reach = math.ceil(RESAMPLING_REACH[resampling] * self.source_info.pixels_of(self.grid) - 1e-6) \
            if self.warped and clouds else 0
        if self.warped:
            self._open_warped()
        try:
            for mask in clouds:
                self._clouds.append((RasterReader(mask.path, [mask.band], grid=self.grid, resampling="nearest",
                                                  what=mask.what), mask.rule))
        except Exception:
            self.close()
            raise

    # The warp reads the source by path from a VRT in /vsimem, so no dataset
    # handle is shared between Python objects (GDAL closes each one once).
    def _band_subset_path(self):
        """A path to the source holding just the chosen bands, in order."""
        info = self.source_info
        if self.bands == list(range(1, info.count + 1)):
            return info.path
        path = f"/vsimem/ctstfm_{uuid.uuid4().hex}_bands.vrt"
        with _quiet_gdal():
            subset, message = _try_gdal(lambda: gdal.Translate(path, self._dataset, format="VRT", bandList=self.bands))
            if subset is None:
                raise CtstfmError(f"Could not select bands of the {self.what}: {message}")
            subset = None
        self._vsimem.append(path)
        return path

    def _source_nodata(self):
        """GDAL's srcNodata for the chosen bands (a band without one borrows another's)."""
        known = [v for v in self.nodata if v is not None]
        if not known:
            return None
        values = [v if v is not None else known[0] for v in self.nodata]
        return " ".join(repr(float(v)) if math.isfinite(v) else "nan" for v in values)

    def _warp_options(self, grid, width, height, resampling, fmt):
        for info in (self.source_info, grid):
            if not info.has_geotransform:
                raise CtstfmError(
                    f"'{info.path}' has no georeferencing (no geotransform), so the {self.what} "
                    f"'{self.source_info.path}' cannot be placed on the fine image's grid. Images without "
                    "georeferencing are read pixel for pixel, so each must have the fine image's size "
                    f"({grid.width} x {grid.height} px); else georeference them (gdal_translate -a_ullr ... -a_srs ...)."
                )
        check_north_up(grid)
        if bool(grid.crs_wkt) != bool(self.source_info.crs_wkt):
            missing = self.source_info.path if not self.source_info.crs_wkt else grid.path
            raise CtstfmError(
                f"'{missing}' has no coordinate reference system, so the images cannot be aligned; "
                "assign its CRS (Raster > Projections > Assign Projection) and try again."
            )
        return gdal.WarpOptions(
            format=fmt,
            outputBounds=grid.bounds,
            width=width,
            height=height,
            dstSRS=grid.crs_wkt or None,
            resampleAlg=RESAMPLING_METHODS[resampling],
            srcNodata=self._source_nodata(),
            dstNodata="nan",
            outputType=gdal.GDT_Float32,
            workingType=gdal.GDT_Float32,
            warpOptions=["UNIFIED_SRC_NODATA=NO", "INIT_DEST=NO_DATA"],
        )

    def _open_warped(self):
        self._warp_source = self._band_subset_path()
        path = f"/vsimem/ctstfm_{uuid.uuid4().hex}_warp.vrt"
        options = self._warp_options(self.grid, self.grid.width, self.grid.height, self.resampling, "VRT")
        with _quiet_gdal():
            warped, message = _try_gdal(lambda: gdal.Warp(path, self._warp_source, options=options))
            if warped is None:
                raise CtstfmError(
                    f"The {self.what} '{self.source_info.path}' could not be resampled onto the grid of "
                    f"'{self.grid.path}': {message}."
                )
            warped = None  # writes the VRT
            self._vsimem.append(path)
            self._dataset, message = _try_gdal(lambda: gdal.Open(path))
        if self._dataset is None:
            raise CtstfmError(f"Could not open the resampled {self.what}: {message}")
        self._read_bands = list(range(1, len(self.bands) + 1))
        # After the warp, invalid is NaN (carried source nodata or outside the source).
        self._read_nodata = (None,) * len(self.bands)

    @property
    def _bands_to_read(self):
        return self._read_bands if self.warped else self.bands

    @property
    def _nodata_to_check(self):
        return self._read_nodata if self.warped else self.nodata

    @property
    def count(self):
        return len(self.bands)

    @property
    def width(self):
        return self.grid.width

    @property
    def height(self):
        return self.grid.height

    def read(self, window):
        """``(data float32 (C, h, w), valid bool (h, w))`` for a window of the grid."""
        col, row, width, height = window
        if col < 0 or row < 0 or col + width > self.grid.width or row + height > self.grid.height:
            raise ValueError(f"window {tuple(window)} is outside the {self.grid.width}x{self.grid.height} grid")
        data, message = _try_gdal(lambda: self._dataset.ReadAsArray(
            int(col), int(row), int(width), int(height), band_list=self._bands_to_read, buf_type=gdal.GDT_Float32
        ))
        if data is None:
            raise CtstfmError(f"Reading the {self.what} '{self.source_info.path}' failed: {message}")
        data = np.asarray(data, dtype=np.float32).reshape(len(self.bands), height, width)
        valid = _valid_mask(data, self._nodata_to_check)
        for reader, rule in self._clouds:
            valid &= ~reader.cloud_flags(window, rule, self._cloud_reach)
        return data, valid

    def cloud_flags(self, window, rule, reach=0):
        """Bool ``(h, w)``: where this (mask) raster's first band is cloud under ``rule`` in ``window``, widened by
        ``reach`` pixels on every side (cloud in the pixels around counts)."""
        col, row, width, height = window
        left, top = max(col - reach, 0), max(row - reach, 0)
        right, bottom = min(col + width + reach, self.grid.width), min(row + height + reach, self.grid.height)
        values, known = self.read(Window(left, top, right - left, bottom - top))
        flags = _widen(known & rule.flags(values[0]), reach)
        return flags[row - top:row - top + height, col - left:col - left + width]

    def read_reflectance(self, window, scale):
        """Like :meth:`read` but as reflectance: ``DN * scale``, negatives clipped to 0.

        Invalid pixels keep whatever value they had (use the mask)."""
        data, valid = self.read(window)
        if scale != 1.0:
            data *= np.float32(scale)
        np.maximum(data, 0.0, out=data, where=np.isfinite(data))
        return data, valid

    def valid_fraction(self, max_size=256):
        """The fraction of valid pixels, estimated cheaply for any size (see :meth:`sample`)."""
        _, valid = self.sample(max_size)
        return float(valid.mean()) if valid.size else 0.0

    def sample(self, max_size=256):
        """A cheap sample of the raster on the grid: ``(data float32 (C, N), valid bool (N,))``.

        A warped raster is warped once more onto a decimated copy of the grid, at most
        ``max_size`` pixels a side (nearest neighbour, straight from the source); a
        raster on its own grid is read decimated or sampled in small boxes
        (:meth:`_sample_own_grid`). Used for the coverage and the value-range checks."""
        grid = self.grid
        if not self.warped:
            return self._sample_own_grid(max_size)
        width, height = _decimated_size(grid, max_size)
        options = self._warp_options(grid, width, height, "nearest", "MEM")
        with _quiet_gdal():
            small, _ = _try_gdal(lambda: gdal.Warp("", self._warp_source, options=options))
        if small is None:
            return np.zeros((len(self.bands), 0), np.float32), np.zeros(0, bool)
        data = np.asarray(small.ReadAsArray(), dtype=np.float32).reshape(len(self.bands), height * width)
        small = None
        return data, np.isfinite(data).all(axis=0)

    def _sample_own_grid(self, max_size, samples=12, box=16, decimate_below=2048 * 2048):
        """:meth:`sample` of a raster on its own grid, without reading all of it.

        A small raster, or one with overviews, is read decimated to at most
        ``max_size`` a side. A big one without overviews (decimating it would
        decode every block) is first sampled in ``samples x samples`` boxes of
        ``box`` pixels spread evenly over it; only when no sample is valid is it
        read decimated after all, so a small valid area is never missed.
        """
        grid = self.grid
        band = self._dataset.GetRasterBand(self.bands[0])
        if not (grid.width * grid.height <= decimate_below or band.GetOverviewCount() > 0):
            box_w, box_h = min(box, grid.width), min(box, grid.height)
            boxes = []
            for row in np.linspace(0, grid.height - box_h, samples).astype(int):
                for col in np.linspace(0, grid.width - box_w, samples).astype(int):
                    data, ok = self.read(Window(int(col), int(row), box_w, box_h))
                    boxes.append((data.reshape(len(self.bands), -1), ok.reshape(-1)))
            valid = np.concatenate([ok for _, ok in boxes])
            if valid.any():
                return np.concatenate([data for data, _ in boxes], axis=1), valid
            # The samples may have missed a small valid area: read it all, decimated.
        width, height = _decimated_size(grid, max_size)
        data, message = _try_gdal(lambda: self._dataset.ReadAsArray(
            0, 0, grid.width, grid.height, buf_xsize=width, buf_ysize=height,
            band_list=self.bands, buf_type=gdal.GDT_Float32,
        ))
        if data is None:
            raise CtstfmError(f"Reading the {self.what} '{self.source_info.path}' failed: {message}")
        data = np.asarray(data, dtype=np.float32).reshape(len(self.bands), height, width)
        return data.reshape(len(self.bands), -1), _valid_mask(data, self.nodata).reshape(-1)

    def close(self):
        self._dataset = None
        for reader, _ in getattr(self, "_clouds", ()):
            reader.close()
        self._clouds = []
        for path in self._vsimem:
            gdal.Unlink(path)
        self._vsimem = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass


def _fill_invalid(data, ok, substitute=None, substitute_ok=None):
    """Replace invalid pixels in place so they never enter a network as outliers.

    Where ``substitute`` (the other image of the pair) is valid, its value is
    used; elsewhere the band mean of this window's valid pixels; 0 when the
    window has none.
    """
    bad = ~ok
    if not bad.any():
        return data
    if substitute is not None:
        take = bad & substitute_ok
        if take.any():
            data[:, take] = substitute[:, take]
            bad = bad & ~take
    if bad.any():
        good = ~bad
        for band in data:
            band[bad] = band[good].mean() if good.any() else 0.0
    return data


# --------------------------------------------------------------------------- the coarse sensor's view of the fine image


def coarse_to_fine_ratio(fine_info, coarse_info):
    """How many fine pixels one coarse pixel spans (geometric mean of x and y), or None when unknown."""
    bounds = fine_info.bounds_in(coarse_info.crs_wkt)
    if bounds is None or not coarse_info.is_north_up:
        return None
    fine_dx = (bounds[2] - bounds[0]) / fine_info.width
    fine_dy = (bounds[3] - bounds[1]) / fine_info.height
    dx, dy = coarse_info.pixel_size
    if fine_dx <= 0 or fine_dy <= 0:
        return None
    return math.sqrt(abs(dx) / fine_dx * abs(dy) / fine_dy)


def _coarse_subgrid(fine_info, coarse_info, margin=2):
    """``(geotransform, width, height)`` of the coarse raster's pixel grid over the fine extent plus
    ``margin`` coarse pixels (so that resampling back onto the fine grid has neighbours at the edge)."""
    xmin, ymin, xmax, ymax = fine_info.bounds_in(coarse_info.crs_wkt)
    x0, dx, _, y0, _, dy = coarse_info.geotransform
    col0 = math.floor((xmin - x0) / dx) - margin
    col1 = math.ceil((xmax - x0) / dx) + margin
    row0 = math.floor((ymax - y0) / dy) - margin
    row1 = math.ceil((ymin - y0) / dy) + margin
    return (x0 + col0 * dx, dx, 0.0, y0 + row0 * dy, 0.0, dy), col1 - col0, row1 - row0


def coarse_pixel_ids(fine_path, coarse_path, block=None):
    """Which coarse pixel each fine pixel lies in: ``int64 (H, W)`` on the fine grid, -1 outside the
    coarse raster (what FSDAF's unmixing groups by, :func:`model_core.classical.fsdaf`).

    The ids (row-major pixel numbers of the coarse raster, over the fine extent) are put on the fine
    grid by nearest neighbour, so a coarse pixel on any grid or CRS (MODIS's sinusoidal one too) is
    the set of fine pixels whose centre it covers. A coarse image already on a grid finer than two
    fine pixels has lost its pixels: then ``block`` (fine pixels per coarse pixel, counted from the
    fine grid's corner) stands in, and without it the result is None.
    """
    fine_info = RasterInfo.read(fine_path, "fine image")
    coarse_info = RasterInfo.read(coarse_path, "coarse image")
    ratio = coarse_to_fine_ratio(fine_info, coarse_info) if bool(fine_info.crs_wkt) == bool(coarse_info.crs_wkt) \
        else None
    if ratio is None or ratio < 2.0:
        if not block:
            return None
        rows, cols = np.mgrid[0:fine_info.height, 0:fine_info.width]
        return (rows // int(block)) * (fine_info.width // int(block) + 1) + cols // int(block)
    geotransform, width, height = _coarse_subgrid(fine_info, coarse_info, margin=0)
    path = f"/vsimem/ctstfm_{uuid.uuid4().hex}_pixel_ids.tif"
    # float32 holds every id up to 2**24 exactly: 16.7 million coarse pixels over the fine extent.
    ids = np.arange(width * height, dtype=np.float32).reshape(1, height, width)
    try:
        _write_float_raster(path, ids, geotransform, coarse_info.crs_wkt)
        with RasterReader(path, grid=fine_info, resampling="nearest", what="coarse pixel ids") as reader:
            values, valid = reader.read(Window(0, 0, fine_info.width, fine_info.height))
    finally:
        gdal.Unlink(path)
    return np.where(valid, values[0], -1).astype(np.int64)


def gaussian_blur_nan(data, sigma):
    """``data`` ``(C, h, w)`` blurred by a Gaussian of ``sigma`` pixels, ignoring NaN (a normalised
    convolution: each output is the weighted mean of the valid neighbours); NaN where none is valid."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    valid = np.isfinite(data).astype(np.float64)
    values = np.where(valid > 0, data, 0.0).astype(np.float64)

    def blur(array):
        for axis in (-1, -2):
            padded = np.moveaxis(array, axis, -1)
            padded = np.pad(padded, [(0, 0)] * (padded.ndim - 1) + [(radius, radius)])
            out = sum(taps[k] * padded[..., k:k + padded.shape[-1] - 2 * radius] for k in range(len(taps)))
            array = np.moveaxis(out, -1, axis)
        return array

    weight = blur(valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = blur(values) / weight
    out[weight < 1e-6] = np.nan
    return out.astype(np.float32)


PSF_SUBPIXELS = 4  # a PSF is applied on a grid this many times finer than the coarse one


def _aggregate(source, coarse_info, geotransform, width, height, subpixels):
    """``source`` (a :class:`RasterReader`) warped by area mean onto ``geotransform`` (``width`` x
    ``height`` pixels, each split into ``subpixels`` x ``subpixels``): float32 ``(C, h, w)``, NaN where
    no valid fine pixel falls."""
    options = gdal.WarpOptions(
        format="MEM",
        outputBounds=(geotransform[0], geotransform[3] + height * geotransform[5],
                      geotransform[0] + width * geotransform[1], geotransform[3]),
        width=width * subpixels, height=height * subpixels, dstSRS=coarse_info.crs_wkt or None,
        resampleAlg="average", srcNodata=source._source_nodata(), dstNodata="nan", outputType=gdal.GDT_Float32,
        workingType=gdal.GDT_Float32, warpOptions=["UNIFIED_SRC_NODATA=NO", "INIT_DEST=NO_DATA"],
    )
    with _quiet_gdal():
        try:
            dataset = gdal.Warp("", source._band_subset_path(), options=options)
        except RuntimeError:
            dataset = None
        if dataset is None:
            raise CtstfmError(f"The fine image could not be aggregated onto the coarse grid: {_last_gdal_error()}.")
    return np.asarray(dataset.ReadAsArray(), dtype=np.float32).reshape(
        len(source.bands), height * subpixels, width * subpixels
    )


def _write_float_raster(path, data, geotransform, crs_wkt):
    """``data`` ``(C, h, w)`` as a float32 GeoTIFF with NaN nodata (e.g. in ``/vsimem``)."""
    with _quiet_gdal():
        dataset = gdal.GetDriverByName("GTiff").Create(path, data.shape[2], data.shape[1], data.shape[0],
                                                       gdal.GDT_Float32)
        if dataset is None:
            raise CtstfmError(f"Could not create '{path}': {_last_gdal_error()}")
        dataset.SetGeoTransform(geotransform)
        if crs_wkt:
            dataset.SetProjection(crs_wkt)
        for index, band in enumerate(data):
            dataset.GetRasterBand(index + 1).WriteArray(band)
            dataset.GetRasterBand(index + 1).SetNoDataValue(float("nan"))
        dataset = None


def _block_nanmean(data, block):
    """Mean of each ``block`` x ``block`` block of ``data`` ``(C, h*block, w*block)``, ignoring NaN."""
    c, h, w = data.shape
    blocks = data.reshape(c, h // block, block, w // block, block)
    valid = np.isfinite(blocks)
    total = np.where(valid, blocks, 0.0).sum(axis=(2, 4))
    count = valid.sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def footprint_reader(fine_path, fine_bands, coarse_info, resampling=DEFAULT_RESAMPLING, psf_sigma=0.0,
                     what="fine image at T0 seen by the coarse sensor"):
    """The fine image as the coarse sensor sees it, on the fine grid: a :class:`RasterReader`, or
    ``None`` when the coarse image's own pixels are unknown (it is already on a grid finer than
    two fine pixels, e.g. resampled onto the fine grid, or its grid is rotated).

    The fine bands are aggregated onto the coarse raster's own pixel grid (its CRS, origin and pixel
    size) by area mean (GDAL ``average``: each coarse pixel is the mean of the fine pixels it covers,
    weighted by the covered fraction; nodata ignored). With ``psf_sigma`` (coarse pixels) the
    aggregation goes through a grid :data:`PSF_SUBPIXELS` times finer, blurred there by the Gaussian
    PSF, so each coarse pixel is its box convolved with the PSF (as the simulator's sensor). The
    result is resampled back onto the fine grid with ``resampling``, exactly as the coarse image is,
    so ``coarse_t1 - this`` holds the change and the sensor difference, not the artefacts of the
    warp. Values stay in the fine image's DN. Only the small coarse-grid copy is held (in
    ``/vsimem``, removed when the reader closes).
    """
    fine_info = RasterInfo.read(fine_path, "fine image")
    ratio = coarse_to_fine_ratio(fine_info, coarse_info) if bool(fine_info.crs_wkt) == bool(coarse_info.crs_wkt) \
        else None
    if ratio is None or ratio < 2.0:
        return None
    margin = 2 + int(math.ceil(3 * psf_sigma))
    geotransform, width, height = _coarse_subgrid(fine_info, coarse_info, margin)
    source = RasterReader(fine_path, fine_bands, what="fine image")
    path = f"/vsimem/ctstfm_{uuid.uuid4().hex}_footprint.tif"
    try:
        subpixels = PSF_SUBPIXELS if psf_sigma > 0 else 1
        data = _aggregate(source, coarse_info, geotransform, width, height, subpixels)
        if psf_sigma > 0:
            data = _block_nanmean(gaussian_blur_nan(data, psf_sigma * subpixels), subpixels)
        _write_float_raster(path, data, geotransform, coarse_info.crs_wkt)
        reader = RasterReader(path, grid=fine_info, resampling=resampling, what=what)
    except BaseException:
        gdal.Unlink(path)
        raise
    finally:
        source.close()
    reader._vsimem.append(path)  # removed with the reader
    return reader


class PairInputs(NamedTuple):
    """One window of a pair: ``fine_t0``, ``coarse_t1`` and ``coarse_t0`` (``None`` when the reader has
    no reference) as ``float32`` reflectance ``(C, h, w)``, and ``valid`` ``(h, w)``."""

    fine_t0: np.ndarray
    coarse_t1: np.ndarray
    coarse_t0: Optional[np.ndarray]
    valid: np.ndarray


#: What a :class:`PairReader` can give as the coarse image at T0 (its ``reference``).
PAIR_REFERENCES = (None, "footprint", "coarse_t0")


class PairReader:
    """Fine image at T0 and coarse image at T1 on the fine grid, window by window, and optionally
    a coarse image at T0 or its stand-in.

    ``read(window)`` returns ``(fine_t0, coarse_t1, valid)``: two ``float32``
    reflectance arrays ``(C, h, w)`` (``DN * scale``, negatives clipped to 0) and
    a ``(h, w)`` mask that is True where both images are valid. Invalid pixels
    are filled (from the other image where that one is valid, else with the
    window's band mean) so no nodata value reaches the network; write them out
    as nodata using the mask. :meth:`read_inputs` adds ``coarse_t0``
    (:class:`PairInputs`).

    ``fine_bands`` / ``coarse_bands``: 1-based band lists (string ``"1,2,3"`` or
    ints; default the first ``n_bands``). ``scale``: reflectance per DN of both
    images (``coarse_scale`` overrides it for the coarse ones). ``resampling``: how
    the coarse images are put on the fine grid (:data:`RESAMPLING_METHODS`).

    ``coarse_t0_path`` (with ``coarse_t0_bands``, default those of the coarse
    image at T1): the coarse image at T0, warped onto the fine grid exactly like
    the coarse image at T1. ``footprint=True`` (without ``coarse_t0_path``): the
    fine image at T0 as the coarse sensor sees it (:func:`footprint_reader`,
    ``psf_sigma`` in coarse pixels) stands in for it. ``self.reference`` says
    which one :meth:`read_inputs` gives (``None``: neither, e.g. the coarse image
    is already on the fine grid, so its footprint is unknown). ``fine_clouds``, ``coarse_clouds``,
    ``coarse_t0_clouds``: the :class:`~model_core.cloud_masks.CloudMask` sources of each image; cloudy pixels
    are invalid. Invalid reference pixels are filled from the coarse image at T1 (no change there); they do
    not make the output invalid. Invalid coarse pixels at T1 do; at T0 they are filled from T1.
    """

    def __init__(
        self,
        fine_path,
        coarse_path,
        *,
        fine_bands=None,
        coarse_bands=None,
        n_bands=None,
        band_names=None,
        scale=1e-4,
        coarse_scale=None,
        resampling=DEFAULT_RESAMPLING,
        fine_what="fine image",
        coarse_what="coarse image",
        coarse_t0_path=None,
        coarse_t0_bands=None,
        footprint=False,
        psf_sigma=0.0,
        coarse_t0_what="coarse image at T0",
        fine_clouds=(),
        coarse_clouds=(),
        coarse_t0_clouds=(),
    ):
        self.scale = float(scale)
        self.coarse_scale = float(coarse_scale if coarse_scale is not None else scale)
        fine_info = RasterInfo.read(fine_path, fine_what)
        coarse_info = RasterInfo.read(coarse_path, coarse_what)
        fine_bands = parse_band_list(fine_bands, fine_info.count, n_bands, fine_what, band_names)
        coarse_bands = parse_band_list(
            coarse_bands, coarse_info.count, n_bands if n_bands is not None else len(fine_bands), coarse_what,
            band_names,
        )
        if len(fine_bands) != len(coarse_bands):
            raise CtstfmError(
                f"The fine image uses {len(fine_bands)} band(s) and the coarse image {len(coarse_bands)}; "
                "choose the same bands, in the same order, in both."
            )
        check_overlap(fine_info, coarse_info, fine_what, coarse_what)
        if coarse_t0_path:
            check_overlap(fine_info, RasterInfo.read(coarse_t0_path, coarse_t0_what), fine_what, coarse_t0_what)
        self.fine = RasterReader(fine_path, fine_bands, what=fine_what, clouds=fine_clouds)
        self.coarse = self.coarse_t0 = None
        try:
            self.coarse = RasterReader(
                coarse_path, coarse_bands, grid=self.fine.source_info, resampling=resampling, what=coarse_what,
                clouds=coarse_clouds,
            )
            if coarse_t0_path:
                self.coarse_t0 = RasterReader(
                    coarse_t0_path, coarse_t0_bands if coarse_t0_bands else coarse_bands,
                    grid=self.fine.source_info, resampling=resampling, what=coarse_t0_what, clouds=coarse_t0_clouds,
                )
                if self.coarse_t0.count != self.coarse.count:
                    raise CtstfmError(
                        f"The {coarse_t0_what} uses {self.coarse_t0.count} band(s) and the {coarse_what} "
                        f"{self.coarse.count}; choose the same bands in both."
                    )
                self.reference = "coarse_t0"
            elif footprint:
                self.coarse_t0 = footprint_reader(fine_path, fine_bands, coarse_info, resampling, psf_sigma)
                self.reference = "footprint" if self.coarse_t0 is not None else None
            else:
                self.reference = None
        except Exception:
            self.close()
            raise

    @property
    def grid(self):
        """The fine image's :class:`RasterInfo`: every window refers to its pixels."""
        return self.fine.source_info

    @property
    def width(self):
        return self.grid.width

    @property
    def height(self):
        return self.grid.height

    @property
    def count(self):
        return self.fine.count

    @property
    def warped(self):
        """Whether the coarse image is resampled onto the fine grid."""
        return self.coarse.warped

    def check_coverage(self, max_size=256):
        """Raise :class:`CtstfmError` when an image has no valid pixel over the fine extent."""
        if self.fine.valid_fraction(max_size) == 0.0:
            raise CtstfmError(
                f"The {self.fine.what} '{self.grid.path}' is nodata everywhere (in the chosen bands); "
                "give an image with valid pixels."
            )
        others = [self.coarse] + ([self.coarse_t0] if self.reference == "coarse_t0" else [])
        for reader in others:
            if reader.valid_fraction(max_size) == 0.0:
                raise CtstfmError(
                    f"The {reader.what} '{reader.source_info.path}' has no valid pixels over the extent of "
                    f"the {self.fine.what}; give a coarse image that covers it with data."
                )

    def read(self, window):
        """``(fine_t0, coarse_t1, valid)`` for a window of the fine grid, or ``(fine_t0, coarse_t1,
        coarse_t0, valid)`` when the reader has a reference (``*arrays, valid``: a raster-job source)."""
        fine, coarse, reference, valid = self.read_inputs(window)
        return (fine, coarse, valid) if reference is None else (fine, coarse, reference, valid)

    def read_inputs(self, window):
        """:class:`PairInputs` for a window of the fine grid (``coarse_t0`` only with a reference)."""
        fine, fine_ok = self.fine.read_reflectance(window, self.scale)
        coarse, coarse_ok = self.coarse.read_reflectance(window, self.coarse_scale)
        valid = fine_ok & coarse_ok
        if not valid.all():
            _fill_invalid(coarse, coarse_ok, fine, fine_ok)
            _fill_invalid(fine, fine_ok, coarse, coarse_ok)
        reference = None
        if self.coarse_t0 is not None:
            scale = self.coarse_scale if self.reference == "coarse_t0" else self.scale
            reference, reference_ok = self.coarse_t0.read_reflectance(window, scale)
            _fill_invalid(reference, reference_ok, coarse, np.ones_like(reference_ok))
        return PairInputs(fine, coarse, reference, valid)

    def close(self):
        for reader in (self.fine, self.coarse, self.coarse_t0):
            if reader is not None:
                reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def check_overlap(fine_info, coarse_info, fine_what="fine image", coarse_what="coarse image"):
    """Raise :class:`CtstfmError` when the two rasters' extents do not intersect.

    The coarse extent is transformed into the fine CRS (edges densified); when
    that transform is undefined the fine extent is transformed the other way.
    When neither is possible the check is left to the coverage check.
    """
    a = fine_info.bounds
    b = coarse_info.bounds_in(fine_info.crs_wkt)
    if b is None:
        a = fine_info.bounds_in(coarse_info.crs_wkt)
        b = coarse_info.bounds
        if a is None:
            return
    if a[0] >= b[2] or b[0] >= a[2] or a[1] >= b[3] or b[1] >= a[3]:
        raise CtstfmError(
            f"The {coarse_what} '{coarse_info.path}' does not overlap the {fine_what} '{fine_info.path}' "
            "(after transforming to the same CRS); give images of the same area."
        )


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class OutputSpec:
    """Data type, nodata and DN scale of an output raster.

    ``scale`` is the reflectance per DN: values handed to the writer are
    reflectance and are written as ``reflectance / scale`` (rounded for integer
    types); ``None`` writes them unchanged.
    """

    dtype: str
    nodata: float
    scale: Optional[float]


def default_nodata(dtype):
    """A nodata value for ``dtype`` when the input has none: the type's minimum
    for signed integers, its maximum for unsigned ones, -9999 for floats."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return FLOAT_NODATA
    info = np.iinfo(dtype)
    return float(info.min if dtype.kind == "i" else info.max)


def output_spec(fine_info, output_type="input", scale=1e-4):
    """How to write a prediction on the fine grid.

    ``"input"``: the fine input's data type and nodata (a default nodata when it
    has none), reflectance converted back to DN with ``scale``. ``"float32"``:
    float32 reflectance with nodata :data:`FLOAT_NODATA`.
    """
    if output_type == "float32":
        return OutputSpec("float32", FLOAT_NODATA, None)
    if output_type != "input":
        raise CtstfmError(f"Unknown output type '{output_type}'; use 'input' or 'float32'.")
    dtype = np.dtype(fine_info.dtype)
    if dtype.kind not in "iuf":
        raise CtstfmError(f"The fine image's data type {dtype} is not supported; convert it to integers or floats.")
    nodata = fine_info.nodata[0]
    if nodata is None or not math.isfinite(nodata):
        nodata = default_nodata(dtype)
    return OutputSpec(dtype.name, float(nodata), float(scale))


def check_output_path(path, inputs, what="output", geotiff=False):
    """The output must be creatable and must not be one of the inputs: the one rule of
    :func:`model_core.outputs.check_outputs` for a single output.

    ``inputs``: ``{name: path}`` of the inputs (empty paths are skipped);
    ``geotiff``: the output is a GeoTIFF raster (so it needs a .tif name). Returns
    the output's absolute path; raises :class:`CtstfmError` before any work.
    """
    return check_output(path, inputs, what, geotiff)


def _gdal_type(dtype):
    return gdal_array.NumericTypeCodeToGDALTypeCode(np.dtype(dtype).type)


def to_output_dtype(data, valid, spec):
    """Convert reflectance ``(C, h, w)`` to the output's stored values.

    Scales to DN, rounds (integer types), clips to the type's range, writes
    ``spec.nodata`` where ``valid`` is False or a value is not finite, and moves
    any valid value that equals the nodata one step into the valid range.
    Works in float32 (exact for the integers of 8- and 16-bit types) in place,
    float64 for wider types.
    """
    dtype = np.dtype(spec.dtype)
    work = np.float64 if dtype.itemsize > 2 or dtype == np.float64 else np.float32
    values = np.array(data, dtype=work, copy=True)
    if spec.scale is not None:
        values /= work(spec.scale)
    valid = valid & np.isfinite(values).all(axis=0)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = float(info.min), float(info.max)
        np.rint(values, out=values)
    else:
        low, high = float(np.finfo(dtype).min), float(np.finfo(dtype).max)
    np.nan_to_num(values, copy=False, nan=0.0, posinf=high, neginf=low)
    np.clip(values, low, high, out=values)
    nodata = spec.nodata
    step = 1.0 if dtype.kind in "iu" else max(abs(nodata) * 1e-6, 1e-6)
    collide = values == work(nodata)
    collide &= valid[None]
    if collide.any():
        values[collide] = nodata + step if nodata - step < low else nodata - step
    values[:, ~valid] = nodata
    return values.astype(dtype)


class RasterWriter:
    """Writes a raster on ``grid`` window by window, atomically.

    The file is created at once (so an unwritable path fails before any work) as
    a hidden temporary file in the output folder: a tiled (256 x 256),
    DEFLATE-compressed GeoTIFF with a predictor and ``BIGTIFF=IF_SAFER``.
    :meth:`write` takes reflectance ``(C, h, w)`` and a validity mask and stores
    them per ``spec`` (see :func:`to_output_dtype`). :meth:`commit` finishes it
    (for ``fmt="COG"`` converting with GDAL's COG driver) and renames it onto
    ``path``; :meth:`abort` removes every temporary file. Used as a context
    manager it commits on success (unless :meth:`abort` was called inside the
    block, which keeps nothing) and aborts on any exception.
    """

    def __init__(self, path, grid, count, spec, *, descriptions=None, metadata=None, fmt="GTiff", block_size=256):
        if fmt not in OUTPUT_FORMATS:
            raise CtstfmError(f"Unknown output format '{fmt}'; use {' or '.join(OUTPUT_FORMATS)}.")
        self.path = check_writable(path)
        self.grid = grid
        self.count = int(count)
        self.spec = spec
        self.fmt = fmt
        self._temp = temporary_name(self.path)
        self._temp_files = [self._temp]
        dtype = np.dtype(spec.dtype)
        block = max(16, min(int(block_size), 512)) // 16 * 16
        options = [
            "TILED=YES",
            f"BLOCKXSIZE={block}",
            f"BLOCKYSIZE={block}",
            "COMPRESS=DEFLATE",
            f"PREDICTOR={3 if dtype.kind == 'f' else 2}",
            "BIGTIFF=IF_SAFER",
            "INTERLEAVE=PIXEL",
        ]
        with _quiet_gdal():
            driver = gdal.GetDriverByName("GTiff")
            dataset, message = _try_gdal(
                lambda: driver.Create(self._temp, grid.width, grid.height, self.count, _gdal_type(dtype), options)
            )
        if dataset is None:
            self._remove_temp()
            raise CtstfmError(f"Cannot create the output '{self.path}' ({message}); choose another path.")
        self._dataset = dataset
        if grid.has_geotransform:  # an image without georeferencing gives one without, not GDAL's default grid
            dataset.SetGeoTransform(grid.geotransform)
        if grid.crs_wkt:
            dataset.SetProjection(grid.crs_wkt)
        descriptions = list(descriptions or [])
        for index in range(self.count):
            band = dataset.GetRasterBand(index + 1)
            band.SetNoDataValue(float(spec.nodata))
            if index < len(descriptions) and descriptions[index]:
                band.SetDescription(str(descriptions[index]))
        if metadata:
            dataset.SetMetadata({str(k): _metadata_text(v) for k, v in metadata.items()})
        self.committed = False
        self.aborted = False

    def write(self, window, data, valid):
        """Store reflectance ``data`` ``(C, h, w)`` with ``valid`` ``(h, w)`` at ``window``."""
        if self._dataset is None:
            raise RuntimeError("the writer is closed")
        col, row, width, height = window
        values = to_output_dtype(data, valid, self.spec)
        if values.shape != (self.count, height, width):
            raise ValueError(f"data of shape {values.shape} does not fit window {tuple(window)}")
        with _quiet_gdal():
            written, message = _try_gdal(lambda: self._dataset.WriteRaster(
                int(col), int(row), int(width), int(height), values.tobytes(),
                buf_type=_gdal_type(values.dtype), band_list=list(range(1, self.count + 1)),
            ) in (None, gdal.CE_None) or None)
        if written is None:
            raise CtstfmError(f"Writing '{self.path}' failed ({message}); is the disk full?")

    def update_metadata(self, metadata):
        """Add or change metadata items before :meth:`commit` (e.g. statistics known only at the end)."""
        for key, value in metadata.items():
            self._dataset.SetMetadataItem(str(key), _metadata_text(value))

    def commit(self):
        """Finish the file and move it onto the output path; returns the path."""
        dataset, self._dataset = self._dataset, None
        with _quiet_gdal():
            flushed, message = _try_gdal(lambda: dataset.FlushCache() in (None, gdal.CE_None) or None)
        dataset = None
        if flushed is None:
            self._remove_temp()
            raise CtstfmError(f"Writing '{self.path}' failed ({message}); is the disk full?")
        final = self._temp
        if self.fmt == "COG":
            final = self._temp + ".cog"
            self._temp_files.append(final)
            with _quiet_gdal():
                cog, message = _try_gdal(lambda: gdal.Translate(
                    final, self._temp, format="COG",
                    creationOptions=["COMPRESS=DEFLATE", "PREDICTOR=YES", "BIGTIFF=IF_SAFER"],
                ))
            if cog is None:
                self._remove_temp()
                raise CtstfmError(f"Writing the COG '{self.path}' failed ({message}).")
            cog = None
        for stale in (self.path + ".aux.xml", self.path + ".ovr"):
            if os.path.exists(stale):
                os.remove(stale)
        os.replace(final, self.path)
        if os.path.exists(final + ".aux.xml"):
            os.replace(final + ".aux.xml", self.path + ".aux.xml")
        self._remove_temp()
        self.committed = True
        return self.path

    def _remove_temp(self):
        for temp in self._temp_files:
            for candidate in (temp, temp + ".aux.xml", temp + ".ovr", temp + ".msk"):
                try:
                    os.remove(candidate)
                except FileNotFoundError:
                    pass

    def abort(self):
        """Close and delete everything written; the output path is left untouched."""
        self._dataset = None
        self.aborted = True
        self._remove_temp()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self.committed and not self.aborted:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        elif not self.committed:
            self.abort()
        return False

    def __del__(self):
        if getattr(self, "_dataset", None) is not None:
            self.abort()


def _metadata_text(value):
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def read_metadata(path):
    """The default-domain metadata of a raster as a dict (for tests and reports)."""
    dataset = open_raster(path)
    try:
        return dict(dataset.GetMetadata() or {})
    finally:
        dataset = None
