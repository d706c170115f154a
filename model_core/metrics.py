"""The one metrics module: MAE, RMSE, PSNR, SSIM, SAM, ERGAS and CC, nodata-aware.

Every metric has exactly one definition here, written down in ``docs/metrics.md``.
Inputs are reflectance images shaped (C, H, W) (a single band may be (H, W); a batch
(B, C, H, W) pools the pixels of all its images), as numpy arrays or torch tensors
(converted to float64 numpy; torch is never imported here). A pixel counts when the
``valid`` mask (H, W) says so *and* every band of both images is finite there.

Two entry points, one implementation:

* :func:`compute_metrics` for arrays in memory (validation during training, tests);
* :class:`MetricsAccumulator` for rasters read block by block. MAE, RMSE, PSNR, SAM,
  ERGAS and CC are accumulated through exact sums (and a pairwise merge of means and
  co-moments for CC), so the result equals the one-shot result up to rounding. SSIM is a
  mean over 11 x 11 windows: a window counts in the block that holds its centre, and
  only when the whole window lies inside the block. Blocks read with a ``halo`` of
  :data:`SSIM_HALO` pixels on the sides that have a neighbour (and ``update(...,
  halo=...)`` told about it) give exactly the one-shot SSIM; blocks without a halo lose
  the windows that straddle block borders (half a window, 5 px, on each side of every
  border), which changes SSIM slightly but never the other metrics.

``compute_metrics(pred, ref, valid)`` is ``MetricsAccumulator`` fed one block.

Result layout (plain Python floats, JSON-friendly)::

    {"mae": {"bands": [b1, b2, ...], "mean": m}, "rmse": ..., "psnr": ..., "ssim": ...,
     "sam": {"bands": None, "mean": m}, "ergas": {"bands": None, "mean": m}, "cc": ...,
     "counts": {"pixels": n, "sam_pixels": n, "ssim_windows": n}}

SAM and ERGAS are whole-spectrum metrics, so they have no per-band values. A metric
with nothing to average over (no valid pixel, a constant band for CC, ...) is NaN.
"""

import math

import numpy as np

METRIC_NAMES = ("mae", "rmse", "psnr", "ssim", "sam", "ergas", "cc")
"""Every metric key of a result, in table order."""

BAND_METRICS = ("mae", "rmse", "psnr", "ssim", "cc")
"""Metrics with a value per band; their ``mean`` is the mean over bands."""

METRIC_LABELS = {
    "mae": "MAE",
    "rmse": "RMSE",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "sam": "SAM (deg)",
    "ergas": "ERGAS",
    "cc": "CC",
}

# How many decimals format_table prints.
_DIGITS = {"mae": 5, "rmse": 5, "psnr": 3, "ssim": 4, "sam": 3, "ergas": 4, "cc": 4}

# SSIM settings: those of Wang et al. (2004) and of skimage.metrics.structural_similarity
# with gaussian_weights=True, sigma=1.5, use_sample_covariance=False.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5 -> an 11 x 11 window
SSIM_WINDOW = 2 * SSIM_RADIUS + 1
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_HALO = SSIM_RADIUS
"""Pixels of context a block needs on each side for its SSIM to match the one-shot value."""

DEFAULT_DATA_RANGE = 1.0
DEFAULT_ERGAS_RATIO = 30.0 / 480.0
"""Fine / coarse pixel size for ERGAS (Landsat 30 m against MODIS at 480 m, i.e. 1/16)."""


def _to_numpy(array):
    """A float64 numpy copy of a numpy array or torch tensor (no torch import needed)."""
    if hasattr(array, "detach") and hasattr(array, "cpu"):
        array = array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def _to_mask(valid):
    if hasattr(valid, "detach") and hasattr(valid, "cpu"):
        valid = valid.detach().cpu().numpy()
    return np.asarray(valid).astype(bool)


def _gaussian_kernel():
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return kernel / kernel.sum()


_KERNEL = _gaussian_kernel()


def _filter_valid(image):
    """Separable Gaussian filter of (..., H, W), 'valid' mode: (..., H - 10, W - 10).

    Output [i, j] is the weighted mean of the window centred on input pixel
    (i + SSIM_RADIUS, j + SSIM_RADIUS); only windows fully inside the image exist.
    """
    k = _KERNEL
    n = len(k)
    h, w = image.shape[-2], image.shape[-1]
    rows = k[0] * image[..., 0 : h - n + 1, :]
    for i in range(1, n):
        rows = rows + k[i] * image[..., i : h - n + 1 + i, :]
    out = k[0] * rows[..., 0 : w - n + 1]
    for i in range(1, n):
        out = out + k[i] * rows[..., i : w - n + 1 + i]
    return out


def _full_windows(mask):
    """(H - 10, W - 10) bool: the 11 x 11 window at each 'valid'-mode position is all True."""
    n = SSIM_WINDOW
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    counts = integral[n:, n:] - integral[:-n, n:] - integral[n:, :-n] + integral[:-n, :-n]
    return counts == n * n


def ssim_map(pred, ref, data_range=DEFAULT_DATA_RANGE):
    """SSIM index of each 11 x 11 window fully inside (C, H, W) images: (C, H - 10, W - 10).

    Inputs must be finite; the centre of output [c, i, j] is input pixel (i + 5, j + 5).
    """
    x = _to_numpy(pred)
    y = _to_numpy(ref)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ux = _filter_valid(x)
    uy = _filter_valid(y)
    vx = _filter_valid(x * x) - ux * ux
    vy = _filter_valid(y * y) - uy * uy
    vxy = _filter_valid(x * y) - ux * uy
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _halo4(halo):
    if isinstance(halo, (int, np.integer)):
        return (int(halo),) * 4
    top, bottom, left, right = (int(v) for v in halo)
    return top, bottom, left, right


class MetricsAccumulator:
    """Accumulates every metric over blocks of a pair of images; see the module docstring.

    ``data_range`` is the reflectance range for PSNR and SSIM (1.0); ``ratio`` the
    fine / coarse pixel-size ratio for ERGAS.
    """

    def __init__(self, data_range=DEFAULT_DATA_RANGE, ratio=DEFAULT_ERGAS_RATIO):
        self.data_range = float(data_range)
        self.ratio = float(ratio)
        self.bands = None
        self.n = 0
        self.sam_sum = 0.0
        self.sam_n = 0
        self.ssim_windows = 0

    def _init_bands(self, bands):
        self.bands = bands
        zeros = lambda: np.zeros(bands, dtype=np.float64)  # noqa: E731
        self.abs_sum = zeros()
        self.sq_sum = zeros()
        self.mean_p = zeros()
        self.mean_r = zeros()
        self.m2_p = zeros()
        self.m2_r = zeros()
        self.c_pr = zeros()
        self.ssim_sum = zeros()

    def update(self, pred, ref, valid=None, halo=0):
        """Add one block. ``pred``/``ref``: (C, H, W) (or (H, W), or a batch (B, C, H, W)).

        ``valid``: (H, W) bool (or (B, H, W) for a batch), True where both images hold
        data; non-finite values are invalid whatever it says. ``halo``: an int or
        (top, bottom, left, right): rows/columns on each side that belong to a
        neighbouring block. They only serve as context for SSIM windows and are counted
        nowhere else; use ``SSIM_HALO`` where the block has a neighbour, 0 at the
        raster's edges. Returns self.
        """
        pred = _to_numpy(pred)
        ref = _to_numpy(ref)
        if pred.shape != ref.shape:
            raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
        if pred.ndim == 4:
            masks = [None] * pred.shape[0] if valid is None else _to_mask(valid)
            for i in range(pred.shape[0]):
                self.update(pred[i], ref[i], masks[i], halo)
            return self
        if pred.ndim == 2:
            pred, ref = pred[None], ref[None]
        if pred.ndim != 3:
            raise ValueError(f"expected (C, H, W) images, got shape {pred.shape}")
        bands, h, w = pred.shape
        if self.bands is None:
            self._init_bands(bands)
        elif bands != self.bands:
            raise ValueError(f"block has {bands} bands, earlier blocks had {self.bands}")

        mask = np.isfinite(pred).all(axis=0) & np.isfinite(ref).all(axis=0)
        if valid is not None:
            valid = _to_mask(valid)
            if valid.shape != (h, w):
                raise ValueError(f"valid mask {valid.shape} does not match the images' {(h, w)}")
            mask &= valid
        # Garbage under the mask must not leak into any window sum.
        pred = np.where(mask, pred, 0.0)
        ref = np.where(mask, ref, 0.0)

        top, bottom, left, right = _halo4(halo)
        core = np.zeros((h, w), dtype=bool)
        core[top : h - bottom, left : w - right] = True
        self._update_pixels(pred[:, mask & core], ref[:, mask & core])
        self._update_ssim(pred, ref, mask, (top, bottom, left, right))
        return self

    def _update_pixels(self, p, r):
        """p, r: (C, N) values of the counted pixels of one block."""
        nb = p.shape[1]
        if nb == 0:
            return
        diff = p - r
        self.abs_sum += np.abs(diff).sum(axis=1)
        self.sq_sum += (diff * diff).sum(axis=1)

        # Means and co-moments of this block (two-pass), merged into the totals
        # (Chan et al.'s pairwise update): exact up to rounding, no cancellation.
        mp = p.mean(axis=1)
        mr = r.mean(axis=1)
        dp = p - mp[:, None]
        dr = r - mr[:, None]
        m2p = (dp * dp).sum(axis=1)
        m2r = (dr * dr).sum(axis=1)
        cpr = (dp * dr).sum(axis=1)
        na = self.n
        n = na + nb
        delta_p = mp - self.mean_p
        delta_r = mr - self.mean_r
        factor = na * nb / n
        self.m2_p += m2p + delta_p * delta_p * factor
        self.m2_r += m2r + delta_r * delta_r * factor
        self.c_pr += cpr + delta_p * delta_r * factor
        self.mean_p += delta_p * (nb / n)
        self.mean_r += delta_r * (nb / n)
        self.n = n

        # SAM: angle between the spectra, pixels with a zero spectrum left out.
        norm_p = np.sqrt((p * p).sum(axis=0))
        norm_r = np.sqrt((r * r).sum(axis=0))
        ok = (norm_p > 0) & (norm_r > 0)
        if ok.any():
            u = p[:, ok] / norm_p[ok]
            v = r[:, ok] / norm_r[ok]
            # 2 atan2(|u - v|, |u + v|) == arccos(u . v), accurate for small angles too.
            angle = 2.0 * np.arctan2(np.sqrt(((u - v) ** 2).sum(axis=0)), np.sqrt(((u + v) ** 2).sum(axis=0)))
            self.sam_sum += float(np.degrees(angle).sum())
            self.sam_n += int(ok.sum())

    def _update_ssim(self, pred, ref, mask, halo):
        h, w = mask.shape
        if h < SSIM_WINDOW or w < SSIM_WINDOW:
            return
        top, bottom, left, right = halo
        r = SSIM_RADIUS
        windows = _full_windows(mask)
        # Only windows centred in the block's core: centre (i + r, j + r) of output (i, j).
        windows[: max(top - r, 0), :] = False
        windows[max(h - bottom - r, 0) :, :] = False
        windows[:, : max(left - r, 0)] = False
        windows[:, max(w - right - r, 0) :] = False
        count = int(windows.sum())
        if count == 0:
            return
        rows = np.nonzero(windows.any(axis=1))[0]
        cols = np.nonzero(windows.any(axis=0))[0]
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        # Filter only the rows/columns that hold counted windows (plus their support).
        rows, cols = slice(r0, r1 + 2 * r), slice(c0, c1 + 2 * r)
        s = ssim_map(pred[:, rows, cols], ref[:, rows, cols], self.data_range)
        self.ssim_sum += s[:, windows[r0:r1, c0:c1]].sum(axis=1)
        self.ssim_windows += count

    def result(self):
        """The metrics of everything added so far (layout: module docstring)."""
        bands = self.bands or 0
        nan_bands = [math.nan] * bands
        out = {name: {"bands": list(nan_bands), "mean": math.nan} for name in BAND_METRICS}
        out["sam"] = {"bands": None, "mean": math.nan}
        out["ergas"] = {"bands": None, "mean": math.nan}
        out["counts"] = {"pixels": int(self.n), "sam_pixels": int(self.sam_n), "ssim_windows": int(self.ssim_windows)}
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.n > 0:
                mse = self.sq_sum / self.n
                per_band = {
                    "mae": self.abs_sum / self.n,
                    "rmse": np.sqrt(mse),
                    "psnr": 10.0 * np.log10(self.data_range**2 / mse),
                    "cc": self.c_pr / np.sqrt(self.m2_p * self.m2_r),
                }
                for name, values in per_band.items():
                    out[name] = {"bands": [float(v) for v in values], "mean": float(np.mean(values))}
                ergas = 100.0 * self.ratio * np.sqrt(np.mean(mse / self.mean_r**2))
                out["ergas"]["mean"] = float(ergas)
            if self.ssim_windows > 0:
                values = self.ssim_sum / self.ssim_windows
                out["ssim"] = {"bands": [float(v) for v in values], "mean": float(np.mean(values))}
            if self.sam_n > 0:
                out["sam"]["mean"] = self.sam_sum / self.sam_n
        return out


def compute_metrics(pred, ref, valid=None, data_range=DEFAULT_DATA_RANGE, ratio=DEFAULT_ERGAS_RATIO):
    """All metrics of a prediction against a reference, both (C, H, W) reflectance.

    ``valid``: optional (H, W) bool mask ((B, H, W) for a batch (B, C, H, W)), True where
    both images hold data. ``data_range``: PSNR/SSIM peak (1.0 for reflectance).
    ``ratio``: fine / coarse pixel size for ERGAS. Returns the dict described in the
    module docstring.
    """
    return MetricsAccumulator(data_range=data_range, ratio=ratio).update(pred, ref, valid).result()


def table_rows(metrics, band_names=None):
    """(header, rows) of a metrics result: one row per band, then the mean row.

    Cells are floats, or None where a metric has no per-band value (SAM, ERGAS).
    """
    bands = len(metrics["mae"]["bands"])
    names = list(band_names) if band_names is not None else [f"band {i + 1}" for i in range(bands)]
    if len(names) != bands:
        raise ValueError(f"{len(names)} band names for {bands} bands")
    header = ["band"] + [METRIC_LABELS[m] for m in METRIC_NAMES]
    rows = []
    for b, name in enumerate(names):
        row = [name]
        for m in METRIC_NAMES:
            values = metrics[m]["bands"]
            row.append(None if values is None else values[b])
        rows.append(row)
    rows.append(["mean"] + [metrics[m]["mean"] for m in METRIC_NAMES])
    return header, rows


def format_metric(metric, value, missing="-"):
    """``value`` with the digits the project shows for ``metric`` (MAE 5, PSNR 3, ...);
    ``missing`` where there is no value (None; NaN, e.g. no valid pixel)."""
    if value is None or value != value:
        return missing
    return f"{value:.{_DIGITS[metric]}f}"


def format_table(metrics, band_names=None):
    """A Markdown table of a metrics result: bands as rows plus the mean, metrics as columns."""
    header, rows = table_rows(metrics, band_names)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[0])]
        for m, value in zip(METRIC_NAMES, row[1:]):
            cells.append(format_metric(m, value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
