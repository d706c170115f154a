"""A Landsat/MODIS series simulator: dated fine/coarse GeoTIFF pairs for tests, training and benchmarks.

Plain numpy (and GDAL to write); no torch, no scipy. See ``docs/simulator.md``.

The model, in one paragraph: a *scene* is a map of parcels (rotated rectangular fields, Voronoi
town blocks, roads, canals, a river with its riparian forest, woodland patches) on a "world"
grid of 30 m pixels a little larger than the fine image (so that coarse pixels on the edge see
real land). Each parcel has a land-cover class and a mixture of six endmember spectra (green
vegetation, dry vegetation, soil, water, built-up, asphalt); the green and dry fractions follow a
double-logistic phenology over the day of year with parcel-to-parcel differences in timing and
amplitude. Abrupt *events* (harvest, flooding, new buildings and, in ``urban``, a new airport)
switch parcels to another state from a date on; they are chosen to cover the requested fraction
of the area, and :func:`change_report` measures what changed between two dates. The fine image of a
date is the scene composed for that date, with static texture, a light 3-tap Landsat blur and
white noise. The coarse image is what a MODIS-like sensor would see of the same (unblurred) scene
on its own 480 m grid (or on MODIS's sinusoidal grid, whose cells lean against UTM: modis_grid.py):
a Gaussian PSF convolved with the coarse pixel's box, a per-date sub-pixel misregistration, per-band
gain and offset, and white noise (:func:`coarse_from_fine`).

Array functions work in reflectance (float32, bands first, ``BANDS`` order); files hold
reflectance x 10000 as int16 with nodata -9999.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import CtstfmError
from .modis_grid import SinusoidalGrid, footprint_mean, modis_pixel_size, reach, sinusoidal_wkt

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
SCALE = 1e-4
NODATA = -9999
FINE_RESOLUTION = 30.0
KINDS = ("fields", "urban")
# Where the coarse images are written: "own" (the coarse sensor's grid, aligned with the fine one in its
# UTM zone), "fine" (that, resampled onto the fine grid by nearest neighbour), "sinusoidal" (MODIS's own
# sinusoidal grid, 231.66 / 463.31 / 926.63 m: leaning footprints, see modis_grid.py) and
# "sinusoidal-fine" (that, brought onto the fine grid by nearest neighbour, as real pairs are often delivered).
COARSE_GRIDS = ("own", "fine", "sinusoidal", "sinusoidal-fine")

# Land-cover classes (values of land_cover maps; 0 means "none").
WATER, CROP, NATURAL, BARE, BUILT, ROAD = 1, 2, 3, 4, 5, 6
CLASS_NAMES = {WATER: "water", CROP: "crop", NATURAL: "natural", BARE: "bare", BUILT: "built", ROAD: "road"}

# Abrupt event kinds.
EVENT_NONE, HARVEST, FLOOD, BUILD = 0, 1, 2, 3
EVENT_NAMES = {HARVEST: "harvest", FLOOD: "flood", BUILD: "build"}

# Endmember spectra (surface reflectance, BANDS order). Per-parcel variants are drawn around them.
GREEN_VEG = np.array([0.025, 0.055, 0.030, 0.450, 0.210, 0.095])
DRY_VEG = np.array([0.070, 0.100, 0.130, 0.250, 0.340, 0.240])
SOIL_RED_BROWN = np.array([0.060, 0.090, 0.130, 0.180, 0.270, 0.230])  # CIA clays
SOIL_LOESS = np.array([0.090, 0.120, 0.160, 0.210, 0.290, 0.250])  # North China Plain
WATER_CLEAR = np.array([0.050, 0.050, 0.030, 0.020, 0.010, 0.006])
WATER_TURBID = np.array([0.080, 0.100, 0.090, 0.045, 0.015, 0.010])
BUILT_UP = np.array([0.140, 0.150, 0.160, 0.190, 0.210, 0.190])
ASPHALT = np.array([0.070, 0.080, 0.090, 0.110, 0.130, 0.120])
# Endmember order in the per-parcel fraction matrices.
_G, _D, _S, _W, _B, _A = range(6)

# Texture amplitudes by class: (smooth multiplicative, fine multiplicative).
_TEXTURE = {
    WATER: (0.03, 0.01),
    CROP: (0.04, 0.012),
    NATURAL: (0.06, 0.04),
    BARE: (0.05, 0.015),
    BUILT: (0.06, 0.10),
    ROAD: (0.03, 0.02),
}

# Per kind: site (CRS and top-left corner of the fine image), default start, change settings.
KIND_DEFAULTS = {
    "fields": {
        "site": "Coleambally Irrigation Area-like (NSW, ~34.0S 145.9E)",
        "epsg": 32755,
        "origin": (398400.0, 6237600.0),
        "start": "2021-12-01",
        "change_fraction": 0.10,
        "change_mix": {"harvest": 0.5, "flood": 0.35, "build": 0.15},
    },
    "urban": {
        "site": "Daxing-like (Beijing, ~39.5N 116.4E)",
        "epsg": 32650,
        "origin": (448320.0, 4372800.0),
        "start": "2021-04-10",
        "change_fraction": 0.15,
        "change_mix": {"harvest": 0.25, "flood": 0.10, "build": 0.65},
    },
}


# --------------------------------------------------------------------------------------------
# Data classes


# The coarse sensor's systematic difference from the fine one, per band (blue, green, red, NIR,
# SWIR1, SWIR2): MODIS and Landsat surface reflectance differ by a few percent through band
# passes and processing, consistently from scene to scene. Each scene adds a small jitter
# (view and sun geometry, atmosphere), so no two scenes are calibrated exactly alike.
SENSOR_GAIN = np.array([1.03, 0.98, 1.02, 0.97, 1.01, 1.03])
SENSOR_OFFSET = np.array([0.004, 0.002, -0.002, 0.003, -0.003, 0.001])
SENSOR_GAIN_JITTER = 0.01
SENSOR_OFFSET_JITTER = 0.002

# Sensor presets. "ideal": the coarse image is a clean aggregate of the fine one (systematic
# difference, +-1 % per scene, small shift and noise). "realistic": as different as real MODIS and
# TM surface reflectance of one site are (docs/simulator.md, /work/shared/notes/real-pair-facts.md):
# per-scene gains +-4 % and offsets +-0.006, a per-date BRDF/atmosphere gain and offset, up to
# 0.5 coarse pixel misregistration, a wider PSF, and a smooth multiplicative error of about one
# coarse pixel (gridding, view angle, adjacency) so that the coarse image and the aggregated fine
# image of the same date disagree as much as real ones do. Explicit arguments override a preset.
SENSOR_PRESETS = {
    "ideal": {
        "psf_sigma": 0.5, "coarse_noise": 0.004, "misregistration": 0.1, "gain_jitter": SENSOR_GAIN_JITTER,
        "offset_jitter": SENSOR_OFFSET_JITTER, "date_gain_jitter": 0.0, "date_offset_jitter": 0.0,
        "coarse_error": 0.0,
    },
    "realistic": {
        "psf_sigma": 0.8, "coarse_noise": 0.004, "misregistration": 0.5, "gain_jitter": 0.04,
        "offset_jitter": 0.006, "date_gain_jitter": 0.02, "date_offset_jitter": 0.003, "coarse_error": 0.09,
    },
}
# Length scale (coarse pixels) of the smooth coarse error.
COARSE_ERROR_SCALE = 1.0


def sensor_settings(preset=None, **overrides):
    """The sensor parameters of ``preset`` ("ideal" when None) with the non-None ``overrides``."""
    name = preset or "ideal"
    if name not in SENSOR_PRESETS:
        raise CtstfmError(f"Unknown sensor preset '{name}'; choose one of {', '.join(SENSOR_PRESETS)}.")
    values = dict(SENSOR_PRESETS[name])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return name, values


@dataclass
class SensorModel:
    """The coarse sensor relative to the fine one.

    ``gain``/``offset`` are per band (coarse = gain * aggregated fine + offset), constant over the
    series. ``psf_sigma`` is the standard deviation of the Gaussian PSF in coarse pixels (it is
    convolved with the coarse pixel's box). ``misregistration`` is the largest per-date shift, in
    coarse pixels, of where the coarse sensor really looked relative to its nominal grid.
    ``noise_sigma`` is the white noise of the coarse image, in reflectance.
    """

    factor: float
    gain: np.ndarray
    offset: np.ndarray
    psf_sigma: float
    noise_sigma: float
    misregistration: float
    seed: int
    date_gain_jitter: float = 0.0  # relative std-like spread (uniform +-) of a per-date gain
    date_offset_jitter: float = 0.0  # reflectance, uniform +- per date and band
    coarse_error: float = 0.0  # relative std of the smooth per-date multiplicative error
    preset: str = "ideal"

    def gain_offset(self, date):
        """Per-band ``(gain, offset)`` of ``date``: the scene's, times/plus the date's BRDF/atmosphere draw."""
        if self.date_gain_jitter <= 0 and self.date_offset_jitter <= 0:
            return self.gain, self.offset
        rng = _rng(self.seed, "date-gain", _as_date(date).toordinal())
        bands = len(self.gain)
        gain = self.gain * rng.uniform(1.0 - self.date_gain_jitter, 1.0 + self.date_gain_jitter, bands)
        offset = self.offset + rng.uniform(-self.date_offset_jitter, self.date_offset_jitter, bands)
        return gain, offset

    def shift(self, date):
        """The (dy, dx) misregistration of ``date`` in coarse pixels (deterministic per seed and date)."""
        if self.misregistration <= 0:
            return (0.0, 0.0)
        rng = _rng(self.seed, "shift", _as_date(date).toordinal())
        dy, dx = rng.uniform(-self.misregistration, self.misregistration, 2)
        return (float(dy), float(dx))

    def to_dict(self):
        return {
            "factor": self.factor,
            "gain": [float(v) for v in self.gain],
            "offset": [float(v) for v in self.offset],
            "psf_sigma_coarse_pixels": self.psf_sigma,
            "noise_sigma": self.noise_sigma,
            "misregistration_max_coarse_pixels": self.misregistration,
            "date_gain_jitter": self.date_gain_jitter,
            "date_offset_jitter": self.date_offset_jitter,
            "coarse_error": self.coarse_error,
            "preset": self.preset,
        }


@dataclass
class Events:
    """Abrupt changes planned for a series of dates (day ordinals)."""

    kind: np.ndarray  # (n_parcels,) int8, EVENT_*
    t0: np.ndarray  # (n_parcels,) float64, first day of the new state
    t1: np.ndarray  # (n_parcels,) float64, first day back to normal (floods), else inf
    overlay: np.ndarray | None = None  # world map of overlay parcel ids (airport), -1 elsewhere
    overlay_t0: float = math.inf
    requested_fraction: float = 0.0
    planned: dict = field(default_factory=dict)  # kind name -> fraction of the fine image


@dataclass
class Scene:
    """Everything needed to render any date: parcels, their classes, phenology and spectra."""

    kind: str
    seed: int
    width: int
    height: int
    margin: int
    resolution: float
    epsg: int
    origin: tuple
    parcel: np.ndarray  # world (Hw, Ww) int32 parcel ids
    parcel_class: np.ndarray  # (n,) uint8
    vmin: np.ndarray  # (n,) green fraction floor
    cycles: np.ndarray  # (n, 2, 5): sos, eos (day of year), rate up, rate down, amplitude
    dry_fraction: np.ndarray  # (n,) share of senesced canopy left standing as dry matter
    spectra: np.ndarray  # (n, 6 endmembers, 6 bands)
    texture: np.ndarray  # world (Hw, Ww) float32 multiplier (static)
    veg_texture: np.ndarray  # world (Hw, Ww) float32, unit-std smooth field for green-cover variation
    fine_noise: float
    sensor: SensorModel
    events: Events | None = None
    dates: tuple = ()
    town_center: tuple = (0.0, 0.0)
    irrigated: np.ndarray = None  # (n,) bool, crops that may be flooded
    modis_grid: SinusoidalGrid | None = None  # the coarse sensor's cells when it grids like MODIS, else aligned

    @property
    def n_parcels(self):
        return len(self.parcel_class)

    @property
    def world_shape(self):
        return self.parcel.shape

    @property
    def crop(self):
        """Slices of the world grid holding the fine image."""
        m = self.margin
        return (slice(m, m + self.height), slice(m, m + self.width))

    @property
    def factor(self):
        return self.sensor.factor

    @property
    def coarse_resolution(self):
        return self.resolution * self.sensor.factor

    @property
    def coarse_shape(self):
        if self.modis_grid is not None:
            return self.modis_grid.shape
        f = self.sensor.factor
        return (int(math.ceil(self.height / f - 1e-9)), int(math.ceil(self.width / f - 1e-9)))

    @property
    def fine_geotransform(self):
        x0, y0 = self.origin
        return (x0, self.resolution, 0.0, y0, 0.0, -self.resolution)

    @property
    def coarse_geotransform(self):
        if self.modis_grid is not None:
            return self.modis_grid.geotransform
        x0, y0 = self.origin
        r = self.coarse_resolution
        return (x0, r, 0.0, y0, 0.0, -r)

    @property
    def coarse_crs(self):
        """The coarse grid's CRS: the fine image's EPSG code, or the WKT of MODIS's sinusoidal projection."""
        return self.epsg if self.modis_grid is None else sinusoidal_wkt()

    @property
    def classes(self):
        """The static (event-free) class map of the fine image, (H, W) uint8."""
        return self.parcel_class[self.parcel[self.crop]]


class SeriesItem(NamedTuple):
    date: dt.date
    fine: Path
    coarse: Path


@dataclass
class ChangeReport:
    """What changed between two dates: the share of the fine image whose land cover differs."""

    date_a: dt.date
    date_b: dt.date
    changed_fraction: float
    by_kind: dict  # event name -> fraction of the image
    mean_abs_change: float | None = None  # mean |delta reflectance| over changed pixels and bands

    def to_dict(self):
        return {
            "date_a": self.date_a.isoformat(),
            "date_b": self.date_b.isoformat(),
            "changed_fraction": self.changed_fraction,
            "by_kind": self.by_kind,
            "mean_abs_change": self.mean_abs_change,
        }


@dataclass
class SimulatedSeries:
    out_dir: Path
    manifest: Path
    items: list  # [SeriesItem(date, fine_path, coarse_path)]
    parameters: dict
    changes: list  # [ChangeReport] for consecutive dates
    total_changed_fraction: float  # share of the image with at least one abrupt change
    scene: Scene = field(repr=False, default=None)

    @property
    def dates(self):
        return [item.date for item in self.items]


# --------------------------------------------------------------------------------------------
# Small helpers


def _rng(seed, *keys):
    """An independent numpy Generator for (seed, keys): the same keys give the same stream."""
    words = [int(seed) & 0xFFFFFFFF]
    for key in keys:
        words.append(zlib.crc32(str(key).encode()) if isinstance(key, str) else int(key) & 0xFFFFFFFF)
    return np.random.default_rng(words)


def _as_date(value):
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise CtstfmError(f"'{value}' is not a date; write dates as YYYY-MM-DD.") from None


def make_dates(start, count=6, interval_days=16):
    """``count`` dates from ``start`` every ``interval_days`` days."""
    if count < 1 or interval_days < 1:
        raise CtstfmError("The series needs at least one date and an interval of at least one day.")
    first = _as_date(start)
    return [first + dt.timedelta(days=i * int(interval_days)) for i in range(int(count))]


def _check_dates(dates):
    parsed = sorted(_as_date(d) for d in dates)
    if not parsed:
        raise CtstfmError("Give at least one date.")
    if len(set(parsed)) != len(parsed):
        raise CtstfmError("The dates repeat; give each date once.")
    return parsed


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _fast_len(n):
    """The next length >= n with only factors 2, 3 and 5 (fast FFT)."""
    best = None
    p2 = 1
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < 2 * n:
                if p5 >= n and (best is None or p5 < best):
                    best = p5
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return best


def smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise, zero mean and unit standard deviation, float32."""
    h, w = shape
    if sigma <= 0.3:
        out = rng.standard_normal(shape, dtype=np.float32)
        return out
    ph, pw = _fast_len(h + int(3 * sigma)), _fast_len(w + int(3 * sigma))
    white = rng.standard_normal((ph, pw))
    fy = np.fft.fftfreq(ph)[:, None]
    fx = np.fft.rfftfreq(pw)[None, :]
    gain = np.exp(-2.0 * math.pi**2 * sigma**2 * (fy**2 + fx**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(ph, pw))[:h, :w]
    out -= out.mean()
    std = out.std()
    return (out / (std if std > 0 else 1.0)).astype(np.float32)


def _erf(x):
    """erf, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), vectorised."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _int_cdf(x, sigma):
    """Integral from -inf to x of the Gaussian CDF with std ``sigma`` (max(x, 0) when sigma = 0)."""
    if sigma <= 0:
        return np.maximum(x, 0.0)
    z = x / sigma
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return sigma * (z * cdf + pdf)


def psf_weights(n_coarse, n_fine, factor, sigma, start=0.0):
    """(n_coarse, n_fine) weights: coarse pixel i averages the fine pixels through its PSF.

    Coarse pixel ``i`` covers fine coordinates ``[start + i*factor, start + (i+1)*factor)`` (fine
    pixel ``y`` covers ``[y, y+1)``); its response is that box convolved with a Gaussian of std
    ``sigma`` fine pixels, integrated exactly over each fine pixel. Rows are normalised to sum 1
    (which only matters where the PSF runs off the array).
    """
    a = start + factor * np.arange(n_coarse, dtype=np.float64)[:, None]
    b = a + factor
    y = np.arange(n_fine, dtype=np.float64)[None, :]
    w = _int_cdf(b - y, sigma) - _int_cdf(b - y - 1, sigma) - _int_cdf(a - y, sigma) + _int_cdf(a - y - 1, sigma)
    w[w < 1e-12] = 0.0
    total = w.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    return w / total


def coarse_from_fine(
    fine,
    factor=16.0,
    psf_sigma=0.5,
    gain=None,
    offset=None,
    shift=(0.0, 0.0),
    noise_sigma=0.0,
    rng=None,
    shape=None,
    origin=(0.0, 0.0),
):
    """The coarse image a sensor would record of ``fine`` (B, H, W) reflectance.

    ``factor``: coarse pixel size in fine pixels; ``psf_sigma``: Gaussian PSF std in coarse pixels;
    ``gain``/``offset``: per band; ``shift``: (dy, dx) misregistration in coarse pixels (the sensor
    really looked that far down/right of its nominal grid); ``noise_sigma`` with ``rng``: white
    noise; ``shape``: (hc, wc), by default ``ceil(H / factor), ceil(W / factor)``; ``origin``:
    (row, col) of the nominal coarse grid's top-left corner in fine pixel coordinates.
    Returns float32 (B, hc, wc).
    """
    fine = np.asarray(fine, dtype=np.float32)
    if fine.ndim == 2:
        fine = fine[None]
    bands, h, w = fine.shape
    if shape is None:
        shape = (int(math.ceil(h / factor - 1e-9)), int(math.ceil(w / factor - 1e-9)))
    hc, wc = shape
    sigma = psf_sigma * factor
    ky = psf_weights(hc, h, factor, sigma, origin[0] + shift[0] * factor).astype(np.float32)
    kx = psf_weights(wc, w, factor, sigma, origin[1] + shift[1] * factor).astype(np.float32)
    out = np.empty((bands, hc, wc), dtype=np.float32)
    for b in range(bands):
        out[b] = ky @ fine[b] @ kx.T
    if gain is not None:
        out *= np.asarray(gain, dtype=np.float32)[:, None, None]
    if offset is not None:
        out += np.asarray(offset, dtype=np.float32)[:, None, None]
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("noise_sigma > 0 needs an rng")
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise_sigma)
    return out


# --------------------------------------------------------------------------------------------
# Layout


def _field_layout(rng, shape, angle, row_range, col_range):
    """Rotated rectangular fields: rows of random height split into fields of random width.

    Returns (labels, dist_row_lo, dist_row_hi, dist_col_lo, dist_col_hi, row_index, row_count)
    with distances (in pixels) to the four edges of each pixel's field.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    u = ca * xx + sa * yy
    v = -sa * xx + ca * yy
    v_lo, v_hi = float(v.min()) - 1, float(v.max()) + 1
    u_lo, u_hi = float(u.min()) - 1, float(u.max()) + 1
    edges = [v_lo - rng.uniform(0, row_range[1])]
    while edges[-1] < v_hi:
        edges.append(edges[-1] + rng.uniform(*row_range))
    edges = np.array(edges)
    row = np.clip(np.searchsorted(edges, v) - 1, 0, len(edges) - 2)
    big = 4.0 * (u_hi - u_lo + col_range[1] * 4)
    flat = []
    for r in range(len(edges) - 1):
        cols = [u_lo - rng.uniform(0, col_range[1])]
        while cols[-1] < u_hi:
            cols.append(cols[-1] + rng.uniform(*col_range))
        flat.extend(c + r * big for c in cols)
    flat = np.array(flat)
    key = u + row.astype(np.float64) * big
    idx = np.searchsorted(flat, key)
    labels = idx.astype(np.int64)
    d_row_lo = v - edges[row]
    d_row_hi = edges[row + 1] - v
    d_col_lo = key - flat[idx - 1]
    d_col_hi = flat[np.minimum(idx, len(flat) - 1)] - key
    return labels, d_row_lo, d_row_hi, d_col_lo, d_col_hi, row, len(edges) - 1


def _voronoi(rng, shape, spacing, jitter=0.45):
    """Voronoi cells on a jittered grid: (labels, gap) with gap = d2 - d1 (pixels) to spot edges."""
    h, w = shape
    ny, nx = int(math.ceil(h / spacing)) + 2, int(math.ceil(w / spacing)) + 2
    sy = (np.arange(ny)[:, None] - 1 + 0.5 + rng.uniform(-jitter, jitter, (ny, nx))) * spacing
    sx = (np.arange(nx)[None, :] - 1 + 0.5 + rng.uniform(-jitter, jitter, (ny, nx))) * spacing
    yy = np.arange(h, dtype=np.float64)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float64)[None, :] + 0.5
    cy = (yy // spacing).astype(np.int64) + 1
    cx = (xx // spacing).astype(np.int64) + 1
    d1 = np.full(shape, np.inf)
    d2 = np.full(shape, np.inf)
    lab = np.zeros(shape, dtype=np.int64)
    for dy in (-1, 0, 1):
        iy = np.broadcast_to(cy + dy, shape)
        for dx in (-1, 0, 1):
            ix = np.broadcast_to(cx + dx, shape)
            d = np.hypot(sy[iy, ix] - yy, sx[iy, ix] - xx)
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            d1 = np.where(closer, d, d1)
            lab = np.where(closer, iy * nx + ix, lab)
    return lab, d2 - d1


def _meander(rng, shape):
    """A meandering band across the world: returns |distance| (pixels) from its centre line."""
    h, w = shape
    angle = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
    u = ca * (xx - cx) + sa * (yy - cy)
    v = -sa * (xx - cx) + ca * (yy - cy)
    centre = np.zeros_like(u)
    scale = max(h, w)
    for k in range(3):
        wavelength = scale * rng.uniform(0.25, 0.8) / (k + 1)
        amplitude = wavelength * rng.uniform(0.05, 0.15)
        centre += amplitude * np.sin(2 * math.pi * u / wavelength + rng.uniform(0, 2 * math.pi))
    slope = np.gradient(centre, axis=1) * ca + np.gradient(centre, axis=0) * sa
    return np.abs(v - centre) / np.sqrt(1.0 + slope**2)


def _relabel(code, sub):
    """Unique parcel ids for (layer code, sub-label) pairs: (ids int32, codes of each id, subs)."""
    key = code.astype(np.int64) * (1 << 40) + sub.astype(np.int64)
    uniq, inverse = np.unique(key.ravel(), return_inverse=True)
    return inverse.reshape(code.shape).astype(np.int32), (uniq >> 40).astype(np.int64), uniq & ((1 << 40) - 1)


# Layer codes (which generator made the parcel).
(
    _L_FIELD,
    _L_WOOD,
    _L_ROAD,
    _L_CANAL,
    _L_BLOCK,
    _L_STREET,
    _L_RIPARIAN,
    _L_RIVER,
    _L_BED,
    _L_MAINROAD,
    _L_VILLAGE,
    _L_NURSERY,
) = range(12)


def _layout_fields(rng, shape):
    """CIA-like: large rotated irrigated fields, farm roads and canals, woodland, a river, a town."""
    h, w = shape
    angle = math.radians(rng.uniform(-12, 12))
    labels, r_lo, r_hi, c_lo, _, row, n_rows = _field_layout(rng, shape, angle, (10, 36), (8, 40))
    code = np.full(shape, _L_FIELD, dtype=np.int64)
    sub = labels.copy()
    # Woodland / pasture remnants on field lines.
    wood = smooth_noise(rng, shape, 10.0)
    code[wood > np.quantile(wood, 0.93)] = _L_WOOD
    # Farm roads and supply canals along some row boundaries, tracks along some field boundaries.
    boundary_kind = rng.choice(3, size=n_rows + 1, p=[0.58, 0.30, 0.12])  # 0 none, 1 road, 2 canal
    near_lo = r_lo < 0.75
    near_hi = r_hi < 0.75
    kind_lo = boundary_kind[row]
    kind_hi = boundary_kind[row + 1]
    road = (near_lo & (kind_lo == 1)) | (near_hi & (kind_hi == 1))
    canal = (near_lo & (kind_lo == 2)) | (near_hi & (kind_hi == 2))
    track_flag = rng.random(int(labels.max()) + 2) < 0.12
    track = (c_lo < 0.6) & track_flag[labels]
    code[road | track] = _L_ROAD
    sub[road | track] = 0
    code[canal] = _L_CANAL
    sub[canal] = 0
    # A town: a blob of Voronoi blocks with streets.
    area = h * w
    radius = min(math.sqrt(rng.uniform(0.03, 0.06) * area / math.pi), 60.0)  # a country town, <= ~3.6 km
    ty, tx = h * rng.uniform(0.25, 0.75), w * rng.uniform(0.25, 0.75)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = np.hypot(yy - ty, xx - tx) / radius + 0.25 * smooth_noise(rng, shape, 8.0)
    town = blob < 1.0
    blocks, gap = _voronoi(rng, shape, 7.0)
    code[town] = _L_BLOCK
    sub[town] = blocks[town]
    streets = town & (gap < 1.0)
    code[streets] = _L_STREET
    sub[streets] = 0
    # A river with riparian forest.
    dist = _meander(rng, shape)
    half = rng.uniform(1.0, 2.0)
    riparian = dist < half + rng.uniform(3.0, 7.0)
    code[riparian] = _L_RIPARIAN
    sub[riparian] = labels[riparian]
    river = dist < half
    code[river] = _L_RIVER
    sub[river] = 0
    return code, sub, (ty, tx)


def _layout_urban(rng, shape):
    """Daxing-like: a city of Voronoi blocks fading into small farmland, arterial roads, a river bed."""
    h, w = shape
    blocks, gap = _voronoi(rng, shape, rng.uniform(13.0, 18.0))
    angle = math.radians(rng.uniform(-8, 8))
    labels = _field_layout(rng, shape, angle, (6, 18), (4, 14))[0]
    # Urbanness: high near a centre on one side, with noise.
    cy, cx = h * rng.uniform(0.2, 0.8), w * rng.uniform(0.15, 0.45)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    reach = 0.75 * math.hypot(h, w)
    urbanness = 1.0 - np.hypot(yy - cy, xx - cx) / reach + 0.08 * smooth_noise(rng, shape, 25.0)
    n_blocks = int(blocks.max()) + 1
    counts = np.bincount(blocks.ravel(), minlength=n_blocks)
    mean_u = np.bincount(blocks.ravel(), weights=urbanness.ravel(), minlength=n_blocks) / np.maximum(counts, 1)
    # About half the land is city (block by block), the rest farmland and villages.
    urban_block = mean_u > np.quantile(mean_u[blocks], rng.uniform(0.5, 0.65))
    urban = urban_block[blocks]
    code = np.where(urban, _L_BLOCK, _L_FIELD).astype(np.int64)
    # Rural land: fields cut by block edges, so that parcels stay within a block; some rural
    # blocks are whole villages or tree nurseries.
    sub = np.where(urban, blocks, blocks * (int(labels.max()) + 1) + labels)
    rural_draw = rng.random(n_blocks)[blocks]
    village = ~urban & (rural_draw < 0.08)
    nursery = ~urban & (rural_draw >= 0.08) & (rural_draw < 0.16)
    code[village] = _L_VILLAGE
    code[nursery] = _L_NURSERY
    sub[village | nursery] = blocks[village | nursery]
    # Streets: every urban block edge, some rural ones.
    pair_keep = rng.random(n_blocks) < 0.35
    street = (gap < 0.6) & (urban | pair_keep[blocks])
    code[street] = _L_STREET
    sub[street] = 0
    # Two arterial roads crossing near the centre, 2 px wide.
    a0 = rng.uniform(0, math.pi)
    for a in (a0, a0 + math.pi / 2 + rng.uniform(-0.3, 0.3)):
        d = np.abs(-math.sin(a) * (xx - cx) + math.cos(a) * (yy - cy) - rng.uniform(-0.1, 0.1) * max(h, w))
        main = d < 1.0
        code[main] = _L_MAINROAD
        sub[main] = 0
    # A wide, mostly dry river bed with a narrow channel (Yongding-like).
    if rng.random() < 0.7:
        dist = _meander(rng, shape)
        bed = dist < rng.uniform(4.0, 7.0)
        code[bed] = _L_BED
        sub[bed] = blocks[bed]
        channel = dist < rng.uniform(0.6, 1.2)
        code[channel] = _L_RIVER
        sub[channel] = 0
    return code, sub, (cy, cx)


# --------------------------------------------------------------------------------------------
# Scene


def _crop_types(kind):
    """(name, probability, cycles [(sos, eos, vmax)], irrigated) per crop type, day-of-year units."""
    if kind == "fields":  # southern hemisphere, irrigated
        return [
            ("rice", 0.25, [(318, 440, 0.90)], True),
            ("summer crop", 0.30, [(328, 450, 0.85)], True),
            ("winter cereal", 0.30, [(150, 300, 0.80)], False),
            ("fallow", 0.15, [(200, 330, 0.15)], False),
        ]
    return [  # northern hemisphere, wheat-maize rotation
        ("wheat-maize", 0.55, [(78, 158, 0.85), (188, 265, 0.85)], True),
        ("spring maize", 0.20, [(145, 255, 0.85)], False),
        ("vegetables", 0.15, [(95, 190, 0.60)], True),
        ("fallow", 0.10, [(120, 260, 0.15)], False),
    ]


def _check_coarse_grid(coarse_grid):
    if coarse_grid not in COARSE_GRIDS:
        raise CtstfmError(
            f"coarse_grid must be one of {', '.join(COARSE_GRIDS)}: the coarse sensor's own grid, the fine grid, "
            "MODIS's sinusoidal grid, or that brought onto the fine grid."
        )


def _check_scene_size(width, height, factor, psf_sigma, misregistration, coarse_noise, fine_noise, sensor_values):
    """Reject scene sizes and sensor settings the simulator cannot honour, naming the fix."""
    if width < 8 or height < 8:
        raise CtstfmError("The fine image must be at least 8 x 8 pixels; raise --size.")
    if width * height > 20000 * 20000:
        raise CtstfmError("The fine image is too large to simulate in memory; lower --size.")
    if factor < 2:
        raise CtstfmError("The coarse resolution must be at least twice the fine resolution (30 m).")
    if not 0 <= psf_sigma <= 3:
        raise CtstfmError("psf_sigma is in coarse pixels and must lie between 0 and 3.")
    if not 0 <= misregistration <= 1:
        raise CtstfmError("misregistration is in coarse pixels and must lie between 0 and 1.")
    if coarse_noise < 0 or fine_noise < 0 or min(sensor_values.values()) < 0:
        raise CtstfmError("Noise levels, jitters and the coarse error must not be negative.")


def _world_shape(width, height, factor, psf_sigma, misregistration, footprint_reach=0.0):
    """(margin, world shape): whole coarse pixels over the image plus a margin the PSF and shift can reach.

    ``footprint_reach``: fine pixels a coarse cell that touches the image may reach beyond it (a
    sheared MODIS cell, modis_grid.reach); 0 for cells aligned with the fine grid."""
    hc = int(math.ceil(height / factor - 1e-9))
    wc = int(math.ceil(width / factor - 1e-9))
    margin = int(math.ceil(4 * psf_sigma * factor + misregistration * factor + footprint_reach + 2))
    world = (hc * factor, wc * factor)
    world_shape = (int(math.ceil(world[0])) + 2 * margin, int(math.ceil(world[1])) + 2 * margin)
    return margin, world_shape


def _parcel_classes(rng, kind, pcode):
    """Land-cover class of each parcel from its layout code (fields and blocks drawn per kind)."""
    n = len(pcode)
    cls = np.empty(n, dtype=np.uint8)
    draw = rng.random(n)
    if kind == "fields":
        field_classes = np.select([draw < 0.82, draw < 0.90, draw < 0.97], [CROP, BARE, NATURAL], WATER)
        block_draw = rng.random(n)
        block_classes = np.select([block_draw < 0.75, block_draw < 0.90], [BUILT, NATURAL], BARE)
    else:
        field_classes = np.select([draw < 0.80, draw < 0.90, draw < 0.95], [CROP, BARE, NATURAL], WATER)
        block_draw = rng.random(n)
        block_classes = np.select(
            [block_draw < 0.72, block_draw < 0.87, block_draw < 0.98], [BUILT, NATURAL, BARE], WATER
        )
    cls[:] = np.select(
        [
            pcode == _L_FIELD,
            pcode == _L_WOOD,
            np.isin(pcode, (_L_ROAD, _L_STREET, _L_MAINROAD)),
            pcode == _L_CANAL,
            pcode == _L_BLOCK,
            pcode == _L_RIPARIAN,
            pcode == _L_RIVER,
            pcode == _L_BED,
            pcode == _L_VILLAGE,
            pcode == _L_NURSERY,
        ],
        [field_classes, NATURAL, ROAD, WATER, block_classes, NATURAL, WATER, BARE, BUILT, NATURAL],
        BARE,
    )
    return cls


def _parcel_phenology(rng, kind, cls):
    """(cycles, vmin, dry_fraction, irrigated): up to two green-up cycles per parcel, by class and crop type."""
    n = len(cls)
    cycles = np.zeros((n, 2, 5))
    vmin = np.zeros(n)
    dry_fraction = rng.uniform(0.6, 0.9, n)
    irrigated = np.zeros(n, dtype=bool)
    types = _crop_types(kind)
    probs = np.array([t[1] for t in types])
    choice = rng.choice(len(types), size=n, p=probs / probs.sum())
    for ti, (_, _, tcycles, irr) in enumerate(types):
        sel = (cls == CROP) & (choice == ti)
        k = int(sel.sum())
        irrigated[sel] = irr
        for ci, (sos, eos, vmax) in enumerate(tcycles):
            shift = rng.normal(0, 8, k)
            cycles[sel, ci, 0] = sos + shift
            cycles[sel, ci, 1] = eos + shift + rng.normal(0, 8, k)
            cycles[sel, ci, 2] = rng.uniform(5, 11, k)
            cycles[sel, ci, 3] = rng.uniform(7, 14, k)
            cycles[sel, ci, 4] = np.clip(vmax + rng.normal(0, 0.05, k), 0.05, 0.97)
    vmin[cls == CROP] = rng.uniform(0.0, 0.05, int((cls == CROP).sum()))
    nat = cls == NATURAL
    k = int(nat.sum())
    if kind == "fields":  # rain-fed winter growth, evergreen trees
        sos, eos, lo, hi = 140, 320, (0.25, 0.45), (0.15, 0.3)
    else:  # deciduous trees and lawns
        sos, eos, lo, hi = 105, 290, (0.08, 0.2), (0.5, 0.7)
    vmin[nat] = rng.uniform(*lo, k)
    cycles[nat, 0, 0] = sos + rng.normal(0, 8, k)
    cycles[nat, 0, 1] = eos + rng.normal(0, 8, k)
    cycles[nat, 0, 2] = rng.uniform(8, 15, k)
    cycles[nat, 0, 3] = rng.uniform(10, 18, k)
    cycles[nat, 0, 4] = rng.uniform(*hi, k)
    dry_fraction[nat] *= 0.3
    for c, lo_hi in ((BUILT, (0.02, 0.12)), (ROAD, (0.0, 0.04)), (BARE, (0.0, 0.04))):
        sel = cls == c
        vmin[sel] = rng.uniform(*lo_hi, int(sel.sum()))
    # Bright fine-grained built pixels are flat-spectrum; a weak green-up for street trees.
    sel = cls == BUILT
    k = int(sel.sum())
    cycles[sel, 0, 0] = 110 if kind == "urban" else 150
    cycles[sel, 0, 1] = 290 if kind == "urban" else 320
    cycles[sel, 0, 2] = 12
    cycles[sel, 0, 3] = 15
    cycles[sel, 0, 4] = rng.uniform(0.0, 0.05, k)
    return cycles, vmin, dry_fraction, irrigated


def _parcel_spectra(rng, kind, irrigated):
    """Per-parcel variants of the endmember spectra, shape (parcels, endmembers, bands)."""
    n = len(irrigated)
    soil = SOIL_RED_BROWN if kind == "fields" else SOIL_LOESS
    spectra = np.zeros((n, 6, 6))
    spectra[:, _G] = GREEN_VEG * rng.uniform(0.9, 1.1, (n, 1))
    spectra[:, _G, 3] = GREEN_VEG[3] * rng.uniform(0.88, 1.12, n)  # leaf structure varies NIR on its own
    spectra[:, _D] = DRY_VEG * rng.uniform(0.9, 1.1, (n, 1))
    moist = np.where(irrigated, rng.uniform(0.75, 0.95, n), rng.uniform(0.9, 1.2, n))
    spectra[:, _S] = soil * moist[:, None] * (1 + rng.normal(0, 0.02, (n, 6)))
    turbid = rng.uniform(0, 1, (n, 1))
    spectra[:, _W] = WATER_CLEAR * (1 - turbid) + WATER_TURBID * turbid
    spectra[:, _B] = BUILT_UP * rng.uniform(0.8, 1.25, (n, 1)) + rng.normal(0, 0.005, (n, 6))
    spectra[:, _A] = ASPHALT * rng.uniform(0.9, 1.2, (n, 1))
    return np.clip(spectra, 0.001, 1.0)


def _static_texture(seed, kind, world_shape, pixel_class):
    """(texture, veg_texture): the per-pixel brightness texture by class and the vegetation texture."""
    rng_tex = _rng(seed, kind, "texture")
    amp = np.array([_TEXTURE.get(int(c), (0.04, 0.01)) for c in range(7)])
    smooth = smooth_noise(rng_tex, world_shape, 3.0)
    speckle = smooth_noise(rng_tex, world_shape, 0.6)
    veg_texture = smooth_noise(rng_tex, world_shape, 2.5)
    pc = pixel_class
    texture = 1.0 + amp[pc, 0].astype(np.float32) * smooth + amp[pc, 1].astype(np.float32) * speckle
    texture = texture.astype(np.float32)
    np.clip(texture, 0.5, 1.6, out=texture)
    return texture, veg_texture


def _sensor_model(seed, factor, preset, sensor_values):
    """The coarse sensor of a scene: per-band gain/offset drawn once per seed, the rest from the settings."""
    rng_sensor = _rng(seed, "sensor")
    gain_jitter, offset_jitter = sensor_values["gain_jitter"], sensor_values["offset_jitter"]
    return SensorModel(
        factor=factor,
        gain=SENSOR_GAIN * rng_sensor.uniform(1.0 - gain_jitter, 1.0 + gain_jitter, 6),
        offset=SENSOR_OFFSET + rng_sensor.uniform(-offset_jitter, offset_jitter, 6),
        psf_sigma=float(sensor_values["psf_sigma"]),
        noise_sigma=float(sensor_values["coarse_noise"]),
        misregistration=float(sensor_values["misregistration"]),
        seed=int(seed),
        date_gain_jitter=float(sensor_values["date_gain_jitter"]),
        date_offset_jitter=float(sensor_values["date_offset_jitter"]),
        coarse_error=float(sensor_values["coarse_error"]),
        preset=preset,
    )


def _scene_layout(seed, kind, world_shape):
    """(parcel id per pixel, layout code per parcel, town centre) of the kind's drawn layout."""
    rng_layout = _rng(seed, kind, "layout")
    if kind == "fields":
        code, sub, town = _layout_fields(rng_layout, world_shape)
    else:
        code, sub, town = _layout_urban(rng_layout, world_shape)
    parcel, pcode, _ = _relabel(code, sub)
    return parcel, pcode, town


def _add_scene_changes(scene, dates, change_fraction, change_mix):
    """Set the scene's dates and plan its abrupt changes over them (defaults per kind)."""
    defaults = KIND_DEFAULTS[scene.kind]
    dates = _check_dates(dates)
    scene.dates = tuple(dates)
    if change_fraction is None:
        change_fraction = defaults["change_fraction"]
    if not 0 <= change_fraction <= 0.6:
        raise CtstfmError("change_fraction is a share of the image between 0 and 0.6.")
    scene.events = _plan_events(scene, dates, float(change_fraction), change_mix or defaults["change_mix"])


def make_scene(
    kind="fields",
    size=256,
    width=None,
    height=None,
    seed=0,
    dates=None,
    change_fraction=None,
    change_mix=None,
    coarse_resolution=480.0,
    psf_sigma=None,
    coarse_noise=None,
    fine_noise=0.002,
    misregistration=None,
    resolution=FINE_RESOLUTION,
    sensor=None,
    gain_jitter=None,
    offset_jitter=None,
    date_gain_jitter=None,
    date_offset_jitter=None,
    coarse_error=None,
    coarse_grid="own",
):
    """Build a scene; with ``dates`` (two or more) also plan abrupt changes over them.

    ``change_fraction``: share of the fine image that changes abruptly at least once over the dates
    (default per kind, see ``KIND_DEFAULTS``); ``change_mix``: {"harvest", "flood", "build"}
    weights of that share. ``sensor``: a ``SENSOR_PRESETS`` name ("ideal" by default,
    "realistic"); the sensor arguments left None come from it. ``coarse_grid``: one of
    ``COARSE_GRIDS``; the two sinusoidal ones grid the coarse sensor like MODIS, with the MODIS pixel
    size nearest ``coarse_resolution`` (480 -> 463.31 m).
    """
    preset, sensor_values = sensor_settings(
        sensor, psf_sigma=psf_sigma, coarse_noise=coarse_noise, misregistration=misregistration,
        gain_jitter=gain_jitter, offset_jitter=offset_jitter, date_gain_jitter=date_gain_jitter,
        date_offset_jitter=date_offset_jitter, coarse_error=coarse_error,
    )
    psf_sigma, coarse_noise = sensor_values["psf_sigma"], sensor_values["coarse_noise"]
    misregistration = sensor_values["misregistration"]
    if kind not in KINDS:
        raise CtstfmError(f"Unknown kind '{kind}'; choose one of {', '.join(KINDS)}.")
    _check_coarse_grid(coarse_grid)
    width = int(width or size)
    height = int(height or size)
    defaults = KIND_DEFAULTS[kind]
    sinusoidal = coarse_grid.startswith("sinusoidal")
    if sinusoidal:
        coarse_resolution = modis_pixel_size(coarse_resolution)
    factor = float(coarse_resolution) / float(resolution)
    _check_scene_size(width, height, factor, psf_sigma, misregistration, coarse_noise, fine_noise, sensor_values)
    footprint_reach = 0.0
    if sinusoidal:
        x0, y0 = defaults["origin"]
        centre = (x0 + 0.5 * width * resolution, y0 - 0.5 * height * resolution)
        footprint_reach = reach(defaults["epsg"], *centre, coarse_resolution) / float(resolution)
    margin, world_shape = _world_shape(width, height, factor, psf_sigma, misregistration, footprint_reach)

    parcel, pcode, town = _scene_layout(seed, kind, world_shape)
    # One generator for classes, phenology and spectra, drawn in that order.
    rng = _rng(seed, kind, "parcels")
    cls = _parcel_classes(rng, kind, pcode)
    cycles, vmin, dry_fraction, irrigated = _parcel_phenology(rng, kind, cls)
    spectra = _parcel_spectra(rng, kind, irrigated)
    texture, veg_texture = _static_texture(seed, kind, world_shape, cls[parcel])
    scene = Scene(
        kind=kind,
        seed=int(seed),
        width=width,
        height=height,
        margin=margin,
        resolution=float(resolution),
        epsg=defaults["epsg"],
        origin=defaults["origin"],
        parcel=parcel,
        parcel_class=cls,
        vmin=vmin,
        cycles=cycles,
        dry_fraction=dry_fraction,
        spectra=spectra,
        texture=texture,
        veg_texture=veg_texture,
        fine_noise=float(fine_noise),
        sensor=_sensor_model(seed, factor, preset, sensor_values),
        town_center=town,
        irrigated=irrigated,
        modis_grid=SinusoidalGrid(defaults["epsg"], defaults["origin"], float(resolution), width, height, margin,
                                  coarse_resolution) if sinusoidal else None,
    )
    if dates is not None:
        _add_scene_changes(scene, dates, change_fraction, change_mix)
    return scene


# --------------------------------------------------------------------------------------------
# Phenology and composition


def _phenology(scene, t):
    """Green and dry fractions per parcel at day ordinal ``t`` (event-free)."""
    day = dt.date.fromordinal(int(t))
    green = scene.vmin.copy()
    dry = np.zeros_like(green)
    c = scene.cycles
    for year in (day.year - 1, day.year, day.year + 1):
        tt = t - dt.date(year, 1, 1).toordinal() + 1  # day of year (can run past 365)
        for ci in range(c.shape[1]):
            amp = c[:, ci, 4]
            active = amp > 0
            if not active.any():
                continue
            up = _sigmoid((tt - c[:, ci, 0]) / np.where(active, c[:, ci, 2], 1.0))
            down = _sigmoid((tt - c[:, ci, 1]) / np.where(active, c[:, ci, 3], 1.0))
            green += amp * up * (1 - down)
            # Senesced canopy stands as dry matter for ~4 weeks after senescence, then is cleared.
            cleared = _sigmoid((tt - c[:, ci, 1] - 30) / 6)
            dry += scene.dry_fraction * amp * up * down * (1 - cleared)
    green = np.clip(green, 0, 1)
    dry = np.clip(dry, 0, 1 - green)
    return green, dry


def green_cover(scene, date):
    """Event-free green vegetation fraction per parcel at ``date`` (n_parcels,)."""
    return _phenology(scene, _as_date(date).toordinal())[0]


def _parcel_state(scene, t):
    """(state class per parcel, fraction matrix (n, 6 endmembers)) at day ordinal ``t``."""
    green, dry = _phenology(scene, float(t))
    cls = scene.parcel_class
    n = len(cls)
    frac = np.zeros((n, 6))
    veg = (cls == CROP) | (cls == NATURAL)
    rest = 1 - green - dry
    frac[:, _G] = green
    frac[:, _D] = np.where(veg, dry + np.where(cls == NATURAL, 0.5 * rest, 0), 0)
    frac[:, _S] = np.where(veg, np.where(cls == NATURAL, 0.5 * rest, rest), 0)
    frac[cls == BARE, _S] = 1 - green[cls == BARE]
    frac[cls == WATER] = 0
    frac[cls == WATER, _W] = 1
    frac[cls == BUILT, _B] = 1 - green[cls == BUILT]
    frac[cls == ROAD, _A] = 1 - green[cls == ROAD]
    state = cls.copy()
    ev = scene.events
    if ev is not None:
        harvested = (ev.kind == HARVEST) & (t >= ev.t0)
        frac[harvested] = 0
        frac[harvested, _S] = 0.85
        frac[harvested, _D] = 0.15
        state[harvested] = BARE
        flooded = (ev.kind == FLOOD) & (t >= ev.t0) & (t < ev.t1)
        frac[flooded] *= 0.15
        frac[flooded, _W] += 0.85
        state[flooded] = WATER
        built = (ev.kind == BUILD) & (t >= ev.t0)
        frac[built] = 0
        frac[built, _B] = 0.92
        frac[built, _G] = 0.08
        state[built] = BUILT
    return state, frac, green


def _parcel_map(scene, t):
    ev = scene.events
    if ev is not None and ev.overlay is not None and t >= ev.overlay_t0:
        return np.where(ev.overlay >= 0, ev.overlay, scene.parcel)
    return scene.parcel


def land_cover(scene, date, world=False):
    """The land-cover class map at ``date`` with events applied, (H, W) uint8."""
    t = _as_date(date).toordinal()
    state, _, _ = _parcel_state(scene, t)
    pid = _parcel_map(scene, t)
    out = state[pid]
    return out if world else out[scene.crop]


def vegetation_cover(scene, date, world=False):
    """Green vegetation fraction per pixel at ``date`` (events applied, texture ignored), float32."""
    t = _as_date(date).toordinal()
    _, frac, _ = _parcel_state(scene, t)
    pid = _parcel_map(scene, t)
    out = frac[:, _G].astype(np.float32)[pid]
    return out if world else out[scene.crop]


def scene_reflectance(scene, date, world=True):
    """The true (unblurred, noise-free) surface reflectance at ``date``, float32 (6, H, W)."""
    t = _as_date(date).toordinal()
    _, frac, _ = _parcel_state(scene, t)
    pid = _parcel_map(scene, t)
    if not world:
        pid = pid[scene.crop]
    # Per-parcel spectrum and its derivative with respect to green cover.
    spec = np.einsum("ne,neb->nb", frac, scene.spectra).astype(np.float32)
    fg = frac[:, _G]
    rest = np.clip(1 - fg, 1e-6, None)
    background = (spec - fg[:, None] * scene.spectra[:, _G]) / rest[:, None]
    veg = (scene.parcel_class == CROP) | (scene.parcel_class == NATURAL)
    slope = np.where(veg[:, None], (scene.spectra[:, _G] - background) * (0.48 * fg * (1 - fg))[:, None], 0)
    # Built-up blocks: trees and lawns between buildings vary from pixel to pixel.
    built = scene.parcel_class == BUILT
    slope[built] = 0.06 * (scene.spectra[built, _G] - scene.spectra[built, _B])
    slope = slope.astype(np.float32)
    texture = scene.texture if world else scene.texture[scene.crop]
    vtex = scene.veg_texture if world else scene.veg_texture[scene.crop]
    out = np.empty((6,) + pid.shape, dtype=np.float32)
    for b in range(6):
        band = np.take(spec[:, b], pid)
        band += vtex * np.take(slope[:, b], pid)
        band *= texture
        out[b] = band
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _landsat_blur(image):
    """Separable [0.15, 0.7, 0.15] blur (edge pixels replicated): boundary pixels become mixed."""
    out = image * np.float32(0.7)
    out[..., 1:, :] += 0.15 * image[..., :-1, :]
    out[..., :1, :] += 0.15 * image[..., :1, :]
    out[..., :-1, :] += 0.15 * image[..., 1:, :]
    out[..., -1:, :] += 0.15 * image[..., -1:, :]
    tmp = out
    out = tmp * np.float32(0.7)
    out[..., :, 1:] += 0.15 * tmp[..., :, :-1]
    out[..., :, :1] += 0.15 * tmp[..., :, :1]
    out[..., :, :-1] += 0.15 * tmp[..., :, 1:]
    out[..., :, -1:] += 0.15 * tmp[..., :, -1:]
    return out


def fine_image(scene, date, noise=True, world_image=None):
    """The fine (Landsat-like) image at ``date``: reflectance float32 (6, H, W)."""
    day = _as_date(date)
    if world_image is None:
        world_image = scene_reflectance(scene, day, world=True)
    m = scene.margin
    window = world_image[:, m - 1 : m + scene.height + 1, m - 1 : m + scene.width + 1]
    out = np.ascontiguousarray(_landsat_blur(window)[:, 1:-1, 1:-1])
    if noise:
        out += fine_noise_image(scene, day)
    return out


def fine_noise_image(scene, date):
    """The fine image's white noise at ``date`` (what ``fine_image(noise=True)`` adds), float32."""
    shape = (6, scene.height, scene.width)
    if scene.fine_noise <= 0:
        return np.zeros(shape, dtype=np.float32)
    rng = _rng(scene.seed, scene.kind, "fine-noise", _as_date(date).toordinal())
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scene.fine_noise)


def coarse_image(scene, date, noise=True, world_image=None):
    """The coarse (MODIS-like) image at ``date`` on the coarse grid: reflectance float32 (6, hc, wc)."""
    day = _as_date(date)
    if world_image is None:
        world_image = scene_reflectance(scene, day, world=True)
    s = scene.sensor
    rng = _rng(scene.seed, scene.kind, "coarse-noise", day.toordinal()) if noise else None
    gain, offset = s.gain_offset(day)
    if scene.modis_grid is not None:
        out = _modis_coarse_from_world(scene, world_image, s.shift(day), gain, offset)
        if noise and s.noise_sigma > 0:
            out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(s.noise_sigma)
    else:
        out = coarse_from_fine(
            world_image,
            factor=s.factor,
            psf_sigma=s.psf_sigma,
            gain=gain,
            offset=offset,
            shift=s.shift(day),
            noise_sigma=s.noise_sigma if noise else 0.0,
            rng=rng,
            shape=scene.coarse_shape,
            origin=(scene.margin, scene.margin),
        )
    if noise and s.coarse_error > 0:
        out *= 1.0 + np.float32(s.coarse_error) * coarse_error_field(scene, day)
    return out


def _modis_coarse_from_world(scene, world_image, shift, gain, offset):
    """The noise-free coarse image on MODIS's sinusoidal grid: the world blurred by the Gaussian PSF, then
    averaged over each cell's (leaning) footprint, moved by the date's misregistration; NaN off the world."""
    sigma = scene.sensor.psf_sigma * scene.sensor.factor
    hw, ww = world_image.shape[-2:]
    ky = psf_weights(hw, hw, 1.0, sigma).astype(np.float32)
    kx = psf_weights(ww, ww, 1.0, sigma).astype(np.float32)
    blurred = np.stack([ky @ band @ kx.T for band in np.asarray(world_image, dtype=np.float32)])
    rows, cols = scene.modis_grid.footprint_points(shift)
    out = footprint_mean(blurred, rows, cols)
    out *= np.asarray(gain, dtype=np.float32)[:, None, None]
    out += np.asarray(offset, dtype=np.float32)[:, None, None]
    return out


def coarse_error_field(scene, date):
    """The coarse image's smooth relative error of ``date`` (unit std, ~one coarse pixel long), (hc, wc).

    Real coarse surface reflectance disagrees with the aggregated fine image of the same day far
    beyond white noise: gridding of the swath, footprints that grow off nadir, view-angle effects
    and adjacency vary over a few coarse pixels. The same field scales every band, as these
    effects are mostly geometric."""
    rng = _rng(scene.seed, scene.kind, "coarse-error", _as_date(date).toordinal())
    return smooth_noise(rng, scene.coarse_shape, COARSE_ERROR_SCALE)


def cloud_mask(scene, date, fraction, world=False):
    """Cloud blobs covering ``fraction`` of the fine image at ``date``, bool (H, W) (or world)."""
    if fraction <= 0:
        shape = scene.world_shape if world else (scene.height, scene.width)
        return np.zeros(shape, dtype=bool)
    day = _as_date(date)
    rng = _rng(scene.seed, scene.kind, "clouds", day.toordinal())
    field_ = smooth_noise(rng, scene.world_shape, 12.0)
    level = np.quantile(field_[scene.crop], 1.0 - fraction)
    mask = field_ > level
    return mask if world else mask[scene.crop]


def coarse_cloud_mask(scene, world_mask):
    """Coarse pixels whose nominal footprint is more than half cloud, bool (hc, wc)."""
    if scene.modis_grid is not None:
        return footprint_mean(world_mask.astype(np.float32), *scene.modis_grid.footprint_points())[0] > 0.5
    hc, wc = scene.coarse_shape
    f = scene.sensor.factor
    ky = psf_weights(hc, scene.world_shape[0], f, 0.0, scene.margin).astype(np.float32)
    kx = psf_weights(wc, scene.world_shape[1], f, 0.0, scene.margin).astype(np.float32)
    return (ky @ world_mask.astype(np.float32) @ kx.T) > 0.5


# --------------------------------------------------------------------------------------------
# Events


def _event_candidates(scene, name, used, area, crop_pid, rng):
    """Parcels eligible for a change of kind ``name``, in the order they are tried."""
    cls = scene.parcel_class
    if name == "harvest":
        eligible = (cls == CROP) & ~used & (area > 0)
    elif name == "flood":
        eligible = np.isin(cls, (CROP, BARE)) & ~used & (area > 0)
        if scene.kind == "fields":
            eligible &= scene.irrigated | (cls == BARE)
    else:
        eligible = np.isin(cls, (CROP, BARE, NATURAL)) & ~used & (area > 0)
    candidates = np.flatnonzero(eligible)
    if name != "build":
        return rng.permutation(candidates)
    # New buildings grow next to the town / city.
    n = len(area)
    cy, cx = scene.town_center
    ys, xs = np.indices(crop_pid.shape)
    yc = np.bincount(crop_pid.ravel(), weights=ys.ravel() + scene.margin, minlength=n) / np.maximum(area, 1)
    xc = np.bincount(crop_pid.ravel(), weights=xs.ravel() + scene.margin, minlength=n) / np.maximum(area, 1)
    dist = np.hypot(yc - cy, xc - cx)[candidates] * rng.uniform(0.5, 1.5, len(candidates))
    return candidates[np.argsort(dist)]


def _plan_airport(scene, rng, ev, target_px, planned, pick_times):
    """The airport: an overlay of runways, aprons and grass, from one date on, for part of the build share.

    Updates ``ev``, ``target_px`` and ``planned``; returns the parcels it touched (None: no room for one).
    """
    n = scene.n_parcels
    overlay, changed_px, touched = _airport(scene, rng, target_px["build"] * 0.6)
    if overlay is None:
        return None
    pair, t0 = pick_times(1)
    ev.overlay = overlay
    ev.overlay_t0 = float(t0[0])
    planned["build"] += changed_px
    target_px["build"] -= changed_px
    # The overlay's own parcels were appended to the scene: extend the tables.
    extra = scene.n_parcels - n
    ev.kind = np.concatenate([ev.kind, np.zeros(extra, dtype=np.int8)])
    ev.t0 = np.concatenate([ev.t0, np.full(extra, np.inf)])
    ev.t1 = np.concatenate([ev.t1, np.full(extra, np.inf)])
    return touched


def _plan_events(scene, dates, change_fraction, change_mix):
    """Pick parcels (and, in ``urban``, an airport) so that ``change_fraction`` of the image changes."""
    n = scene.n_parcels
    ev = Events(
        kind=np.zeros(n, dtype=np.int8),
        t0=np.full(n, np.inf),
        t1=np.full(n, np.inf),
        requested_fraction=change_fraction,
    )
    ords = [d.toordinal() for d in dates]
    total = scene.width * scene.height
    if len(dates) < 2 or change_fraction <= 0:
        return ev
    unknown = set(change_mix) - {"harvest", "flood", "build"}
    if unknown:
        raise CtstfmError(f"Unknown change kinds {sorted(unknown)}; use harvest, flood and build.")
    weights = {k: max(float(change_mix.get(k, 0.0)), 0.0) for k in ("harvest", "flood", "build")}
    wsum = sum(weights.values()) or 1.0
    target_px = {k: change_fraction * total * v / wsum for k, v in weights.items()}
    rng = _rng(scene.seed, scene.kind, "events")
    crop_pid = scene.parcel[scene.crop]
    planned = {"harvest": 0.0, "flood": 0.0, "build": 0.0}
    n_pairs = len(ords) - 1
    used = np.zeros(n, dtype=bool)

    def pick_times(k):
        pair = rng.integers(0, n_pairs, k)
        gap = np.array([ords[p + 1] - ords[p] for p in pair])
        return pair, np.array([ords[p] for p in pair]) + np.floor(rng.random(k) * gap) + 1

    if scene.kind == "urban" and target_px["build"] * 0.6 >= 300:
        touched = _plan_airport(scene, rng, ev, target_px, planned, pick_times)
        if touched is not None:
            used, n = touched, scene.n_parcels
    area = np.bincount(crop_pid.ravel(), minlength=n).astype(np.float64)
    green_at = [green_cover(scene, d) for d in dates[:-1]]
    order = ("harvest", "flood", "build")
    carry = 0.0
    for name in order:
        want = target_px[name] + carry
        candidates = _event_candidates(scene, name, used, area, crop_pid, rng)
        chosen, got = [], 0.0
        times = {}
        for p in candidates:
            if got >= want:
                break
            if area[p] > want - got + 0.25 * area[p]:
                continue
            if name == "harvest":
                # Visible: the crop must be green on the date before the harvest.
                pair, t0 = pick_times(1)
                if green_at[pair[0]][p] < 0.35:
                    continue
                times[p] = t0[0]
            chosen.append(p)
            got += area[p]
        chosen = np.array(chosen, dtype=np.int64)
        if len(chosen):
            if name == "harvest":
                t0 = np.array([times[p] for p in chosen])
            else:
                _, t0 = pick_times(len(chosen))
            ev.kind[chosen] = {"harvest": HARVEST, "flood": FLOOD, "build": BUILD}[name]
            ev.t0[chosen] = t0
            if name == "flood":
                ev.t1[chosen] = t0 + rng.integers(20, 100, len(chosen))
            used[chosen] = True
        planned[name] += got
        carry = max(want - got, 0.0)
    ev.planned = {k: v / total for k, v in planned.items()}
    return ev


def _airport(scene, rng, want_px):
    """An airport overlay of about ``want_px`` changed pixels inside the fine image."""
    h, w = scene.height, scene.width
    m = scene.margin
    base_cls = scene.parcel_class[scene.parcel]
    # Rectangle of aspect ~2:1, runways along its long side.
    for _ in range(8):
        long_side = math.sqrt(2.0 * want_px * 1.15)
        short_side = long_side / 2.0
        if long_side > 0.9 * min(h, w) * 1.3:
            long_side = 0.9 * min(h, w)
            short_side = min(want_px * 1.15 / long_side, 0.9 * min(h, w))
        angle = rng.uniform(-0.4, 0.4)
        ca, sa = math.cos(angle), math.sin(angle)
        half_diag = (
            0.5 * (abs(long_side * ca) + abs(short_side * sa)),
            0.5 * (abs(long_side * sa) + abs(short_side * ca)),
        )
        if 2 * half_diag[0] >= w or 2 * half_diag[1] >= h:
            want_px *= 0.7
            continue
        cx = m + rng.uniform(half_diag[0], w - half_diag[0])
        cy = m + rng.uniform(half_diag[1], h - half_diag[1])
        yy, xx = np.mgrid[0 : scene.world_shape[0], 0 : scene.world_shape[1]].astype(np.float32)
        u = ca * (xx - cx) + sa * (yy - cy)
        v = -sa * (xx - cx) + ca * (yy - cy)
        inside = (np.abs(u) < long_side / 2) & (np.abs(v) < short_side / 2)
        # Parts: 0 grass, 1 runways (2 px, concrete), 2 terminal and apron.
        part = np.zeros(scene.world_shape, dtype=np.int8)
        for offset in (-0.3, 0.3):
            part[inside & (np.abs(v - offset * short_side) < 1.0) & (np.abs(u) < 0.45 * long_side)] = 1
        part[inside & (np.abs(v) < 0.12 * short_side) & (np.abs(u) < 0.2 * long_side)] = 2
        overlay_cls = np.array([NATURAL, BUILT, BUILT])[part]
        changed = inside & (overlay_cls != base_cls)
        changed_px = float(changed[scene.crop].sum())
        if changed_px < 0.5 * want_px:
            want_px *= 1.3
            continue
        # Three new parcels appended to the scene's parcel tables.
        n0 = scene.n_parcels
        overlay = np.where(inside, n0 + part.astype(np.int32), -1).astype(np.int32)
        _append_parcels(scene, rng, [NATURAL, BUILT, BUILT])
        touched = np.zeros(scene.n_parcels, dtype=bool)
        touched[np.unique(scene.parcel[inside])] = True
        touched[n0:] = True
        return overlay, changed_px, touched
    return None, 0.0, np.zeros(scene.n_parcels, dtype=bool)


def _append_parcels(scene, rng, classes):
    """Add parcels (grass, concrete, terminal) used only by overlays."""
    k = len(classes)
    scene.parcel_class = np.concatenate([scene.parcel_class, np.array(classes, dtype=np.uint8)])
    vmin = np.array([0.35 if c == NATURAL else 0.0 for c in classes])
    scene.vmin = np.concatenate([scene.vmin, vmin])
    cyc = np.zeros((k, 2, 5))
    for i, c in enumerate(classes):
        if c == NATURAL:
            cyc[i, 0] = (105, 290, 10, 14, 0.3)
    scene.cycles = np.concatenate([scene.cycles, cyc])
    scene.dry_fraction = np.concatenate([scene.dry_fraction, np.full(k, 0.2)])
    spectra = np.zeros((k, 6, 6))
    spectra[:, _G] = GREEN_VEG
    spectra[:, _D] = DRY_VEG
    spectra[:, _S] = SOIL_LOESS
    spectra[:, _W] = WATER_CLEAR
    spectra[:, _B] = BUILT_UP * np.array([1.35 if i == 1 else 1.15 for i in range(k)])[:, None]
    spectra[:, _A] = ASPHALT
    scene.spectra = np.concatenate([scene.spectra, spectra])
    scene.irrigated = np.concatenate([scene.irrigated, np.zeros(k, dtype=bool)])


def change_mask(scene, date_a, date_b):
    """Pixels of the fine image whose land-cover class differs between the two dates, bool (H, W)."""
    return land_cover(scene, date_a) != land_cover(scene, date_b)


def _event_kind_map(scene):
    """Which event (EVENT_*) can affect each fine pixel, int8 (H, W)."""
    ev = scene.events
    if ev is None:
        return np.zeros((scene.height, scene.width), dtype=np.int8)
    out = ev.kind[scene.parcel[scene.crop]].copy()
    if ev.overlay is not None:
        out[ev.overlay[scene.crop] >= 0] = BUILD
    return out


def event_mask(scene, date):
    """Pixels whose state at ``date`` differs from the event-free scene (an event is in effect)."""
    if scene.events is None:
        return np.zeros((scene.height, scene.width), dtype=bool)
    t = _as_date(date).toordinal()
    ev = scene.events
    kind = ev.kind[scene.parcel[scene.crop]]
    t0 = ev.t0[scene.parcel[scene.crop]]
    t1 = ev.t1[scene.parcel[scene.crop]]
    active = (kind != EVENT_NONE) & (t >= t0) & (t < t1)
    if ev.overlay is not None and t >= ev.overlay_t0:
        active |= ev.overlay[scene.crop] >= 0
    return active


def change_report(scene, date_a, date_b, image_a=None, image_b=None):
    """A :class:`ChangeReport` for two dates; with both fine images, also the mean |change| there."""
    a, b = _as_date(date_a), _as_date(date_b)
    changed = change_mask(scene, a, b)
    total = changed.size
    kinds = _event_kind_map(scene)
    by_kind = {name: float((changed & (kinds == code)).sum()) / total for code, name in EVENT_NAMES.items()}
    mean_abs = None
    if image_a is not None and image_b is not None and changed.any():
        mean_abs = float(np.abs(image_b[:, changed] - image_a[:, changed]).mean())
    return ChangeReport(a, b, float(changed.sum()) / total, by_kind, mean_abs)


# --------------------------------------------------------------------------------------------
# How different the two sensors are (the quantities of the real pair, docs/simulator.md)


def box_mean(image, box):
    """``box`` x ``box`` moving mean of (..., H, W), edges replicated (numpy, via cumulative sums)."""
    before, after = box // 2, box - 1 - box // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(before, after), (before, after)]
    padded = np.pad(np.asarray(image, dtype=np.float64), pad, mode="edge")
    cum = np.cumsum(np.cumsum(padded, axis=-2), axis=-1)
    cum = np.pad(cum, [(0, 0)] * (image.ndim - 2) + [(1, 0), (1, 0)])
    h, w = image.shape[-2:]
    total = cum[..., box:box + h, box:box + w] - cum[..., :h, box:box + w] - cum[..., box:box + h, :w] + cum[..., :h, :w]
    return (total / (box * box)).astype(np.float32)


def pair_statistics(fine_a, coarse_a, fine_b, coarse_b, border=16):
    """The sensor-difference statistics of two dates, per band (lists), as measured on the real pair.

    Arrays are reflectance (B, H, W) on the fine grid (coarse images resampled onto it). Keys:
    ``bias17``/``std17``: mean and std of ``coarse_a - box17(fine_a)``; ``coarse_change``: mean of
    ``coarse_b - coarse_a``; ``slope``/``intercept``: least-squares ``box33(fine) ~ slope * coarse +
    intercept`` over both dates. ``border`` pixels at the edges are left out.
    """
    inner = (slice(None), slice(border, -border or None), slice(border, -border or None))
    diff = (coarse_a - box_mean(fine_a, 17))[inner]
    stats = {
        "bias17": diff.mean(axis=(1, 2)).tolist(),
        "std17": diff.std(axis=(1, 2)).tolist(),
        "coarse_change": (coarse_b - coarse_a)[inner].mean(axis=(1, 2)).tolist(),
        "slope": [],
        "intercept": [],
    }
    for band in range(fine_a.shape[0]):
        x = np.concatenate([coarse_a[inner][band].ravel(), coarse_b[inner][band].ravel()]).astype(np.float64)
        y = np.concatenate([box_mean(f[band], 33)[inner[1:]].ravel() for f in (fine_a, fine_b)]).astype(np.float64)
        slope, intercept = np.polyfit(x, y, 1)
        stats["slope"].append(float(slope))
        stats["intercept"].append(float(intercept))
    return stats


def scene_pair_statistics(scene, date_a, date_b, bands=None):
    """:func:`pair_statistics` of a simulated scene's two dates, the coarse images brought onto the
    fine grid by nearest neighbour (as in the real pair); ``bands``: names (default all)."""
    index = select_bands(bands)
    images = []
    for day in (date_a, date_b):
        world = scene_reflectance(scene, day, world=True)
        images.append(fine_image(scene, day, world_image=world)[index])
        images.append(coarse_on_fine_grid(coarse_image(scene, day, world_image=world), scene)[index])
    return pair_statistics(*images)


# --------------------------------------------------------------------------------------------
# Files


def select_bands(bands=None):
    """Indices into ``BANDS`` of the band names ``bands`` (None: all six), in the order given."""
    if bands is None:
        return list(range(len(BANDS)))
    if isinstance(bands, str):
        bands = [part for part in (p.strip() for p in bands.split(",")) if part]
    names = [str(b).strip().lower() for b in bands]
    unknown = [b for b in names if b not in BANDS]
    if unknown or not names or len(set(names)) != len(names):
        raise CtstfmError(
            f"Bands {', '.join(names) or '(none)'}: give distinct names among {', '.join(BANDS)}, e.g. green,red,nir."
        )
    return [BANDS.index(b) for b in names]


def coarse_on_fine_grid(coarse, scene):
    """A coarse image (B, hc, wc) brought onto the fine grid (B, H, W) by nearest neighbour (NaN stays NaN)."""
    if scene.modis_grid is not None:
        return _warp_nearest_to_fine(coarse, scene)
    f = scene.sensor.factor
    rows = np.minimum(((np.arange(scene.height) + 0.5) / f).astype(int), coarse.shape[-2] - 1)
    cols = np.minimum(((np.arange(scene.width) + 0.5) / f).astype(int), coarse.shape[-1] - 1)
    return np.ascontiguousarray(coarse[:, rows[:, None], cols[None, :]])


def _warp_nearest_to_fine(coarse, scene):
    """A coarse image on MODIS's sinusoidal grid warped onto the fine grid by nearest neighbour, as GDAL
    (``gdalwarp -r near``) does when a user or a data portal reprojects MODIS onto the Landsat grid."""
    from .raster import gdal

    coarse = np.asarray(coarse, dtype=np.float32)
    bands = coarse.shape[0]
    source = gdal.GetDriverByName("MEM").Create("", coarse.shape[2], coarse.shape[1], bands, gdal.GDT_Float32)
    source.SetGeoTransform(scene.coarse_geotransform)
    source.SetProjection(scene.coarse_crs)
    for i in range(bands):
        source.GetRasterBand(i + 1).SetNoDataValue(float("nan"))
        source.GetRasterBand(i + 1).WriteArray(coarse[i])
    x0, y0 = scene.origin
    r = scene.resolution
    target = gdal.Warp("", source, format="MEM", dstSRS=_srs_wkt(scene.epsg), resampleAlg="near",
                       outputBounds=(x0, y0 - scene.height * r, x0 + scene.width * r, y0),
                       width=scene.width, height=scene.height, dstNodata=float("nan"))
    return target.ReadAsArray().reshape(bands, scene.height, scene.width).astype(np.float32)


def _srs_wkt(crs):
    """WKT of ``crs``: an EPSG code, or WKT already."""
    if isinstance(crs, str):
        return crs
    from .raster import osr  # with GDAL's exceptions on, as everywhere in model_core

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(crs))
    return srs.ExportToWkt()


def to_dn(reflectance, mask=None):
    """Reflectance -> int16 DN (x 10000, small negatives kept), nodata where ``mask``."""
    dn = np.rint(np.asarray(reflectance, dtype=np.float32) * np.float32(1.0 / SCALE))
    np.clip(dn, -500, 16000, out=dn)
    dn = dn.astype(np.int16)
    if mask is not None:
        dn[:, mask] = NODATA
    return dn


def write_geotiff(path, dn, geotransform, crs, descriptions=BANDS, nodata=NODATA, metadata=None):
    """Write a (B, H, W) array as a GeoTIFF (DEFLATE) with CRS (EPSG code or WKT), nodata and band descriptions."""
    from .raster import gdal  # with GDAL's exceptions on, as everywhere in model_core

    dn = np.asarray(dn)
    if dn.ndim == 2:
        dn = dn[None]
    types = {np.dtype(np.int16): gdal.GDT_Int16, np.dtype(np.uint8): gdal.GDT_Byte}
    bands, h, w = dn.shape
    options = ["COMPRESS=DEFLATE", "ZLEVEL=1", "PREDICTOR=2", "INTERLEAVE=BAND"]
    if h >= 512 and w >= 512:
        options += ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, bands, types[dn.dtype], options=options)
    try:
        ds.SetGeoTransform(tuple(float(v) for v in geotransform))
        ds.SetProjection(_srs_wkt(crs))
        if metadata:
            ds.SetMetadata({str(k): str(v) for k, v in metadata.items()})
        for i in range(bands):
            band = ds.GetRasterBand(i + 1)
            if nodata is not None:
                band.SetNoDataValue(nodata)
            if descriptions:
                band.SetDescription(descriptions[i])
            band.WriteArray(dn[i])
    finally:
        ds = None


def _date_clouds(scene, day, clouds, cloud_target):
    """(fine mask, coarse mask, fine cloud share, coarse cloud share) of one date; masks None where clear."""
    fine_mask = coarse_mask = None
    cloud_fraction_fine = cloud_fraction_coarse = 0.0
    if clouds > 0:
        wmask = cloud_mask(scene, day, clouds, world=True)
        if cloud_target in ("fine", "both"):
            fine_mask = wmask[scene.crop]
            cloud_fraction_fine = float(fine_mask.mean())
        if cloud_target in ("coarse", "both"):
            coarse_mask = coarse_cloud_mask(scene, wmask)
            cloud_fraction_coarse = float(coarse_mask.mean())
    return fine_mask, coarse_mask, cloud_fraction_fine, cloud_fraction_coarse


def _series_parameters(scene, kind, seed, dates, cloud_settings, change_mix, per_date, band_names, coarse_grid):
    """The parameters recorded in simulation.json; ``cloud_settings``: (clouds, cloud_target)."""
    clouds, cloud_target = cloud_settings
    return {
        "kind": kind,
        "site": KIND_DEFAULTS[kind]["site"],
        "seed": int(seed),
        "dates": [d.isoformat() for d in dates],
        "width": scene.width,
        "height": scene.height,
        "resolution": scene.resolution,
        "coarse_resolution": scene.coarse_resolution,
        "coarse_shape": list(scene.coarse_shape),
        "epsg": scene.epsg,
        "fine_geotransform": list(scene.fine_geotransform),
        "coarse_geotransform": list(
            scene.fine_geotransform if coarse_grid in ("fine", "sinusoidal-fine") else scene.coarse_geotransform
        ),
        "clouds": float(clouds),
        "cloud_target": cloud_target,
        "change_fraction": scene.events.requested_fraction if scene.events else 0.0,
        "change_mix": change_mix or KIND_DEFAULTS[kind]["change_mix"],
        "planned_change": scene.events.planned if scene.events else {},
        "fine_noise": scene.fine_noise,
        "sensor": scene.sensor.to_dict(),
        "per_date": per_date,
        "bands": list(band_names),
        "coarse_grid": coarse_grid,
        "coarse_crs": "MODIS sinusoidal" if coarse_grid == "sinusoidal" else f"EPSG:{scene.epsg}",
        "scale": SCALE,
        "nodata": NODATA,
        "classes": {str(k): v for k, v in CLASS_NAMES.items()},
    }


def _write_date_images(out_dir, scene, day, fine_masked, coarse_masked, band_index, settings):
    """Write one date's fine, coarse (and land-cover) GeoTIFFs; returns (fine path, coarse path).

    ``fine_masked`` / ``coarse_masked``: (reflectance, cloud mask or None); ``settings``:
    (kind, seed, coarse_grid, write_landcover).
    """
    fine, fine_mask = fine_masked
    coarse, coarse_mask = coarse_masked
    kind, seed, coarse_grid, write_landcover = settings
    band_names = tuple(BANDS[i] for i in band_index)
    stamp = day.isoformat()
    fine_path = out_dir / f"fine_{stamp}.tif"
    coarse_path = out_dir / f"coarse_{stamp}.tif"
    meta = {"ACQUISITION_DATE": stamp, "SCALE_FACTOR": SCALE, "SIMULATOR": f"model_core.simulate {kind} seed={seed}"}
    coarse_geotransform, coarse_crs = scene.coarse_geotransform, scene.coarse_crs
    if coarse_grid in ("fine", "sinusoidal-fine"):
        coarse = coarse_on_fine_grid(coarse, scene)
        if coarse_mask is not None:
            coarse_mask = coarse_on_fine_grid(coarse_mask[None].astype(np.float32), scene)[0] > 0.5
        coarse_geotransform, coarse_crs = scene.fine_geotransform, scene.epsg
    off_world = np.isnan(coarse).any(axis=0)  # MODIS cells the simulated world does not cover
    if off_world.any():
        coarse_mask = off_world if coarse_mask is None else coarse_mask | off_world
        coarse = np.nan_to_num(coarse)
    write_geotiff(
        fine_path,
        to_dn(fine[band_index], fine_mask),
        scene.fine_geotransform,
        scene.epsg,
        descriptions=band_names,
        metadata=dict(meta, SENSOR=f"simulated Landsat ({scene.resolution:g} m)"),
    )
    write_geotiff(
        coarse_path,
        to_dn(coarse[band_index], coarse_mask),
        coarse_geotransform,
        coarse_crs,
        descriptions=band_names,
        metadata=dict(meta, SENSOR=f"simulated MODIS ({scene.coarse_resolution:g} m)"),
    )
    if write_landcover:
        write_geotiff(
            out_dir / f"landcover_{stamp}.tif",
            land_cover(scene, day)[None],
            scene.fine_geotransform,
            scene.epsg,
            descriptions=("land cover",),
            nodata=0,
            metadata={"ACQUISITION_DATE": stamp, "CLASSES": json.dumps(CLASS_NAMES)},
        )
    return fine_path, coarse_path


def _check_series_options(kind, coarse_grid, sensor_overrides, clouds, cloud_target):
    """Refuse series options the simulator does not know, before anything is written."""
    _check_coarse_grid(coarse_grid)
    unknown = set(sensor_overrides) - set(SENSOR_PRESETS["ideal"])
    if unknown:
        raise TypeError(f"simulate_series() got unexpected arguments: {', '.join(sorted(unknown))}")
    if kind not in KINDS:
        raise CtstfmError(f"Unknown kind '{kind}'; choose one of {', '.join(KINDS)}.")
    if not 0 <= clouds <= 0.9:
        raise CtstfmError("clouds is the cloud-covered share of each image, between 0 and 0.9.")
    if cloud_target not in ("fine", "coarse", "both"):
        raise CtstfmError("cloud_target must be fine, coarse or both.")


def simulate_series(
    out_dir, kind="fields", dates=None, start=None, count=6, interval_days=16, size=256, width=None, height=None,
    seed=0, clouds=0.0, cloud_target="both", coarse_resolution=480.0, change_fraction=None, change_mix=None,
    psf_sigma=None, coarse_noise=None, fine_noise=0.002, misregistration=None, write_landcover=False,
    progress=None, sensor=None, bands=None, resolution=FINE_RESOLUTION, coarse_grid="own", **sensor_overrides,
):
    """Simulate and write a dated Landsat/MODIS series; returns a :class:`SimulatedSeries`.

    Files in ``out_dir``: ``fine_YYYY-MM-DD.tif`` and ``coarse_YYYY-MM-DD.tif`` per date,
    ``manifest.csv`` (``date,fine,coarse``, paths relative to it), ``series.csv`` (the same without the fine
    image of every other date but the last, a series for the series job to fill), ``simulation.json`` (parameters,
    sensor model, per-date misregistration, changes) and, with ``write_landcover``,
    ``landcover_YYYY-MM-DD.tif`` (class codes, see ``CLASS_NAMES``).
    ``sensor``: a ``SENSOR_PRESETS`` name ("ideal" by default, or "realistic"); ``sensor_overrides``:
    ``gain_jitter``, ``offset_jitter``, ``date_gain_jitter``, ``date_offset_jitter``, ``coarse_error``
    (see :func:`make_scene`). ``bands``: band names to write (default all of ``BANDS``), e.g.
    ``("green", "red", "nir")``. ``resolution``: fine pixel size in metres (layouts are in pixels).
    ``coarse_grid``: "own" (the coarse sensor's grid, aligned with the fine one), "fine" (already
    resampled onto the fine grid by nearest neighbour, as many distributed MODIS/Landsat pairs are),
    "sinusoidal" (MODIS's own sinusoidal grid, leaning footprints) or "sinusoidal-fine" (that,
    warped onto the fine grid by nearest neighbour, as a real MODIS product reprojected for Landsat is).
    """
    band_index = select_bands(bands)
    _check_series_options(kind, coarse_grid, sensor_overrides, clouds, cloud_target)
    if dates is None:
        dates = make_dates(start or KIND_DEFAULTS[kind]["start"], count, interval_days)
    dates = _check_dates(dates)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(
        kind=kind, size=size, width=width, height=height, seed=seed, dates=dates, change_fraction=change_fraction,
        change_mix=change_mix, coarse_resolution=coarse_resolution, psf_sigma=psf_sigma, coarse_noise=coarse_noise,
        fine_noise=fine_noise, misregistration=misregistration, resolution=resolution, sensor=sensor,
        coarse_grid=coarse_grid, **sensor_overrides,
    )
    band_names = tuple(BANDS[i] for i in band_index)
    if progress is not None:
        progress.update(0.05, "scene ready")
    items, changes, per_date = [], [], []
    previous = None
    union = np.zeros((scene.height, scene.width), dtype=bool)
    for i, day in enumerate(dates):
        if progress is not None:
            progress.check()
        world = scene_reflectance(scene, day, world=True)
        fine_clean = fine_image(scene, day, noise=False, world_image=world)
        fine = fine_clean + fine_noise_image(scene, day)
        coarse = coarse_image(scene, day, noise=True, world_image=world)
        fine_mask, coarse_mask, cloud_fraction_fine, cloud_fraction_coarse = _date_clouds(
            scene, day, clouds, cloud_target
        )
        fine_path, coarse_path = _write_date_images(
            out_dir, scene, day, (fine, fine_mask), (coarse, coarse_mask), band_index,
            (kind, seed, coarse_grid, write_landcover),
        )
        stamp = day.isoformat()
        items.append(SeriesItem(day, fine_path, coarse_path))
        dy, dx = scene.sensor.shift(day)
        per_date.append({"date": stamp, "misregistration_coarse_pixels": [dy, dx],
                         "cloud_fraction_fine": cloud_fraction_fine, "cloud_fraction_coarse": cloud_fraction_coarse})
        if previous is not None:
            report = change_report(scene, previous[0], day, previous[1], fine_clean)
            changes.append(report)
            union |= change_mask(scene, previous[0], day)
        previous = (day, fine_clean)
        if progress is not None:
            progress.update(0.05 + 0.95 * (i + 1) / len(dates), stamp)

    from .training.series import write_manifest

    manifest = write_manifest(out_dir / "manifest.csv", [(item.date, item.fine, item.coarse) for item in items])
    # The same dates as a series to fill: every other date (the first and last kept) without its fine image,
    # whose file stays as the truth to assess the filled date against.
    to_fill = {item.date for index, item in enumerate(items) if index % 2 and index < len(items) - 1}
    write_manifest(out_dir / "series.csv",
                   [(item.date, "" if item.date in to_fill else item.fine, item.coarse) for item in items])
    parameters = _series_parameters(
        scene, kind, seed, dates, (clouds, cloud_target), change_mix, per_date, band_names, coarse_grid
    )
    total_changed = float(union.mean())
    summary = dict(parameters, changes=[c.to_dict() for c in changes], total_changed_fraction=total_changed)
    (out_dir / "simulation.json").write_text(json.dumps(summary, indent=2))
    if progress is not None:
        progress.update(1.0, "done")
    return SimulatedSeries(out_dir=out_dir, manifest=manifest, items=items, parameters=parameters, changes=changes,
                           total_changed_fraction=total_changed, scene=scene)
