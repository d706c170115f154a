"""Accuracy assessment: a predicted fine image against a reference fine image.

:func:`assess` compares two rasters on the same grid (a fused image and the real
fine image of the same date, typically) with the one metrics module
(:class:`~model_core.metrics.MetricsAccumulator`), block by block through the
tiling engine, and writes:

* an **error map** (optional): per-pixel absolute error averaged over the compared
  bands, float32 reflectance, nodata :data:`~model_core.raster.FLOAT_NODATA` where
  either image (or the mask) is invalid, on the reference grid;
* a **CSV table** (optional): one row per band (MAE, RMSE, PSNR, SSIM, CC) and a
  ``mean`` row that also holds SAM and ERGAS (``metrics.table_rows``);
* an **HTML page** (optional): inputs, the table, and the metric definitions.

It returns the metrics dict of :func:`model_core.metrics.compute_metrics` (same
layout) with a few extra keys: ``band_names``, ``band_pairs``, ``scales``,
``files``, ``seconds``.

Reading goes through :class:`~model_core.raster.RasterReader` and
:func:`~model_core.tiling.run_tiled` with no overlap, so every pixel is passed on
unchanged (weights of exactly 1) and each row band reaches the metrics once. SSIM
needs 5 rows of context across row-band borders: the last ``2 * SSIM_HALO`` rows
of each band are carried into the next block and declared as halo, as
``docs/metrics.md`` describes, so every metric equals the one-shot
:func:`~model_core.metrics.compute_metrics` of the whole images (up to rounding).

Rasters on different grids are refused (no silent resampling): warp the
prediction onto the reference grid first. Reflectance is ``DN * scale``:
``scale`` (default 1e-4) applies to integer rasters; float rasters are read as
reflectance unless the plugin wrote them with another scale
(``CTSTFM_REFLECTANCE_SCALE`` metadata); ``pred_scale`` / ``ref_scale`` override.
"""

import csv
import datetime as _dt
import html as _html
import io
import math
import os
import time

import numpy as np

from . import __version__
from .errors import CtstfmError
from .metrics import (
    DEFAULT_DATA_RANGE,
    DEFAULT_ERGAS_RATIO,
    METRIC_LABELS,
    METRIC_NAMES,
    SSIM_HALO,
    MetricsAccumulator,
    format_metric,
    table_rows,
)
from .outputs import atomic_write_text
from .progress import Progress
from .raster import (
    FLOAT_NODATA,
    OUTPUT_FORMATS,
    OutputSpec,
    RasterInfo,
    RasterReader,
    parse_band_list,
    read_metadata,
    same_crs,
)
from .raster_job import JobOutput, RasterJob, ReaderGroup, software_name
from .tiling import DEFAULT_TILE

DOCS_URL = "https://github.com/ctstfm-qgis/ctstfm_qgis/blob/main/docs/metrics.md"
SCALE_METADATA = "CTSTFM_REFLECTANCE_SCALE"
#: A prediction whose mean reflectance is this many times the reference's (or less
#: than its inverse) is taken as a scale mistake rather than a bad prediction.
SCALE_MISMATCH_FACTOR = 20.0

DEFINITIONS = {
    "mae": "Mean absolute error, mean over valid pixels of |predicted - reference| (reflectance units).",
    "rmse": "Root mean square error, sqrt of the mean squared difference (reflectance units).",
    "psnr": "Peak signal-to-noise ratio, 10 log10(R&sup2; / MSE) with data range R = {data_range:g}.",
    "ssim": "Structural similarity (Wang et al. 2004), mean over 11 x 11 Gaussian windows (&sigma; 1.5) that "
    "lie fully on valid pixels.",
    "sam": "Spectral angle mapper, mean angle in degrees between the predicted and reference spectra of each "
    "pixel (all compared bands).",
    "ergas": "Erreur relative globale adimensionnelle de synth&egrave;se (Wald), 100 (h/l) sqrt(mean over bands "
    "of RMSE&sup2; / reference mean&sup2;) with h/l = {ratio:.6g}.",
    "cc": "Pearson correlation coefficient between predicted and reference values.",
}


# --------------------------------------------------------------------------- checks


def auto_block(width, pixels=1 << 20):
    """Block size for a raster ``width`` pixels wide: row bands of about a million
    pixels (SSIM works on a whole row band in float64), between 32 and
    :data:`~model_core.tiling.DEFAULT_TILE` rows."""
    return int(min(DEFAULT_TILE, max(32, pixels // max(int(width), 1))))


def parse_band_pairs(spec, pred_count, ref_count):
    """Which bands to compare, as ``[(predicted_band, reference_band), ...]`` (1-based).

    ``spec``: ``None``/empty (all bands; both rasters must have the same count), a
    list of ints (the same bands in both), a list of ``(p, r)`` pairs, or a string
    such as ``"1,2,3"`` or ``"1:3,2:4"`` (predicted:reference).
    """
    if spec is None or (isinstance(spec, (str, list, tuple)) and len(spec) == 0) or str(spec).strip() == "":
        if pred_count != ref_count:
            raise CtstfmError(
                f"The predicted image has {pred_count} band(s) and the reference image {ref_count}; "
                "choose the bands to compare, as predicted:reference pairs (e.g. 1:1,2:2,3:3)."
            )
        return [(b, b) for b in range(1, ref_count + 1)]
    if isinstance(spec, str):
        items = [p.strip() for p in spec.replace(";", ",").split(",") if p.strip()]
        pred, ref = [], []
        for item in items:
            parts = item.split(":")
            if len(parts) not in (1, 2):
                raise CtstfmError(
                    f"The band choice '{item}' is not a band number or a predicted:reference pair (e.g. 1:3)."
                )
            pred.append(parts[0].strip())
            ref.append(parts[-1].strip())
        pred_bands = parse_band_list(",".join(pred), pred_count, what="predicted image")
        ref_bands = parse_band_list(",".join(ref), ref_count, what="reference image")
    else:
        pred, ref = [], []
        for item in spec:
            if isinstance(item, (tuple, list)):
                if len(item) != 2:
                    raise CtstfmError(f"The band pair {item!r} must be (predicted band, reference band).")
                pred.append(item[0])
                ref.append(item[1])
            else:
                pred.append(item)
                ref.append(item)
        pred_bands = parse_band_list(pred, pred_count, what="predicted image")
        ref_bands = parse_band_list(ref, ref_count, what="reference image")
    return list(zip(pred_bands, ref_bands))


def check_same_grid(info, reference, what, reference_what="reference image"):
    """Raise :class:`CtstfmError` unless ``info`` is on ``reference``'s grid (pixels one to one)."""
    if info.same_grid(reference):
        return
    if bool(info.crs_wkt) != bool(reference.crs_wkt):
        missing = info if not info.crs_wkt else reference
        raise CtstfmError(
            f"'{missing.path}' has no CRS (coordinate reference system), so it cannot be matched to the other "
            "image; assign the CRS it was made in (Raster > Projections > Assign Projection, or gdal_edit.py "
            "-a_srs) and try again."
        )
    if not same_crs(info.crs_wkt, reference.crs_wkt):
        reason = "another coordinate reference system"
    elif (info.width, info.height) != (reference.width, reference.height):
        reason = f"{info.width} x {info.height} pixels against {reference.width} x {reference.height}"
    elif any(abs(a - b) > 1e-6 * abs(b) for a, b in zip(info.pixel_size, reference.pixel_size)):
        reason = f"pixels of {info.pixel_size[0]:g} x {abs(info.pixel_size[1]):g} against " \
                 f"{reference.pixel_size[0]:g} x {abs(reference.pixel_size[1]):g}"
    else:
        reason = (
            f"origin {info.geotransform[0]:.3f}, {info.geotransform[3]:.3f} against "
            f"{reference.geotransform[0]:.3f}, {reference.geotransform[3]:.3f}"
        )
    raise CtstfmError(
        f"The {what} '{info.path}' is not on the grid of the {reference_what} '{reference.path}' ({reason}); "
        "warp it onto the reference's CRS, extent and pixel size first (Raster > Projections > Warp), "
        "so that pixels correspond one to one."
    )


def reflectance_scale(info, scale, override=None, what="raster"):
    """Reflectance per stored value of a raster: ``override`` when given, else the
    plugin's own ``CTSTFM_REFLECTANCE_SCALE`` metadata, else 1 for float rasters and
    ``scale`` for integer ones."""
    value = override
    if value is None:
        meta = read_metadata(info.path)
        if SCALE_METADATA in meta:
            try:
                value = float(meta[SCALE_METADATA])
            except ValueError:
                value = None
    if value is None:
        value = 1.0 if np.dtype(info.dtype).kind == "f" else scale
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise CtstfmError(f"The reflectance scale {value!r} of the {what} is not a number.") from None
    if not math.isfinite(value) or value <= 0:
        raise CtstfmError(
            f"The reflectance scale of the {what} must be a positive number (got {value}); "
            "use 0.0001 for DN x 10000 and 1 for reflectance."
        )
    return value


def _band_names(pairs, pred_info, ref_info):
    names = []
    for p, r in pairs:
        name = ref_info.descriptions[r - 1] or pred_info.descriptions[p - 1] or f"band {r}"
        names.append(name)
    # Keep names unique for the table.
    seen = {}
    for i, name in enumerate(names):
        if names.count(name) > 1:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name} ({seen[name]})"
    return names


# --------------------------------------------------------------------------- metrics by row band


class RowBandMetrics:
    """Feeds full-width row bands, top to bottom, into a :class:`MetricsAccumulator`.

    The last ``2 * SSIM_HALO`` rows of each block are carried into the next one: the
    rows already counted are declared as top halo, the last ``SSIM_HALO`` rows of a
    block that is not the raster's last are its bottom halo (counted in the next
    block). Every pixel and every SSIM window is counted exactly once.
    """

    def __init__(self, accumulator, height):
        self.acc = accumulator
        self.height = int(height)
        self.carry = None  # (pred, ref, valid, uncounted_rows)

    def update(self, row, pred, ref, valid):
        last = row + pred.shape[1] >= self.height
        top = 0
        if self.carry is not None:
            c_pred, c_ref, c_valid, uncounted = self.carry
            top = c_pred.shape[1] - uncounted
            pred = np.concatenate([c_pred, pred], axis=1)
            ref = np.concatenate([c_ref, ref], axis=1)
            valid = np.concatenate([c_valid, valid], axis=0)
        n = pred.shape[1]
        bottom = 0 if last else min(SSIM_HALO, n - top)
        self.acc.update(pred, ref, valid, halo=(top, bottom, 0, 0))
        keep = min(2 * SSIM_HALO, n)
        self.carry = None if last else (
            pred[:, n - keep:].copy(), ref[:, n - keep:].copy(), valid[n - keep:].copy(), bottom
        )


# --------------------------------------------------------------------------- outputs


def table_csv_text(metrics, band_names):
    """The metrics table as CSV: one row per band and a ``mean`` row; full precision."""
    header, rows = table_rows(metrics, band_names)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[0]] + ["" if v is None else repr(float(v)) for v in row[1:]])
    return buffer.getvalue()


def _crs_name(wkt):
    if not wkt:
        return "none"
    from .raster import osr

    srs = osr.SpatialReference()
    try:
        srs.ImportFromWkt(wkt)
    except RuntimeError:  # GDAL exceptions are on (model_core.raster)
        return "unrecognised"
    name = srs.GetName() or "unnamed"
    code = srs.GetAuthorityCode(None)
    authority = srs.GetAuthorityName(None)
    return f"{name} ({authority}:{code})" if code and authority else name


def report_html(metrics, band_names, info):
    """A self-contained HTML page: inputs, the metrics table and the definitions."""
    esc = _html.escape
    header, rows = table_rows(metrics, band_names)
    counts = metrics["counts"]
    total = info["width"] * info["height"]
    inputs = [
        ("Predicted image", info["predicted"]),
        ("Reference image", info["reference"]),
        ("Mask", info["mask"] or "none (all pixels valid in both images)"),
        ("Grid", f"{info['width']} x {info['height']} pixels of {info['pixel_size'][0]:g} x "
                 f"{abs(info['pixel_size'][1]):g}, {info['crs']}"),
        ("Bands compared (predicted:reference)",
         ", ".join(f"{n} ({p}:{r})" for n, (p, r) in zip(band_names, info["band_pairs"]))),
        ("Reflectance scale", f"predicted x {info['scales'][0]:g}, reference x {info['scales'][1]:g}"),
        ("Valid pixels", f"{counts['pixels']} of {total} ({100.0 * counts['pixels'] / max(total, 1):.1f}%)"),
        ("SSIM windows", str(counts["ssim_windows"])),
        ("Error map", info["error_map"] or "not written"),
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Fusion accuracy assessment</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:0.25em 0.6em}"
        "th{background:#eee}td.num{text-align:right;font-family:monospace}tr.mean td{font-weight:bold;"
        "background:#f6f6f6}td.key{font-weight:bold;white-space:nowrap;vertical-align:top}"
        "dt{font-weight:bold;margin-top:0.4em}.note{color:#555;font-size:0.9em}</style>",
        "</head><body>",
        "<h1>Fusion accuracy assessment</h1>",
        f'<p class="note">Written {esc(info["date"])} by ctstfm_qgis model_core {esc(__version__)}.</p>',
        "<h2>Inputs</h2>",
        "<table>",
    ]
    for key, value in inputs:
        out.append(f'<tr><td class="key">{esc(key)}</td><td>{esc(str(value))}</td></tr>')
    out += ["</table>", "<h2>Metrics</h2>", "<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        css = ' class="mean"' if row is rows[-1] else ""
        cells = [f"<td>{esc(str(row[0]))}</td>"]
        for metric, value in zip(METRIC_NAMES, row[1:]):
            cells.append(f'<td class="num">{esc(format_metric(metric, value, missing="")) or "&ndash;"}</td>')
        out.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    out.append("</table>")
    out.append(
        '<p class="note">MAE and RMSE are in reflectance (0.01 = 100 DN at scale 0.0001). The mean row is the '
        "mean of the band values; SAM and ERGAS use all bands at once, so they have no per-band value.</p>"
    )
    out.append("<h2>Definitions</h2><dl>")
    for metric in METRIC_NAMES:
        text = DEFINITIONS[metric].format(data_range=info["data_range"], ratio=info["ratio"])
        out.append(f"<dt>{esc(METRIC_LABELS[metric])}</dt><dd>{text}</dd>")
    out.append("</dl>")
    out.append(
        f'<p>The exact conventions (and how they differ between published codes) are in '
        f'<a href="{DOCS_URL}">docs/metrics.md</a>. Values are only comparable between studies that use the '
        "same conventions.</p>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def json_safe(result):
    """The result with NaN/inf replaced by None (strict JSON)."""
    return _json_safe(result)


# --------------------------------------------------------------------------- main


def assess(
    predicted_path,
    reference_path,
    *,
    mask_path=None,
    bands=None,
    scale=1e-4,
    pred_scale=None,
    ref_scale=None,
    error_map_path=None,
    table_csv=None,
    html=None,
    data_range=DEFAULT_DATA_RANGE,
    ratio=DEFAULT_ERGAS_RATIO,
    tile=None,
    output_format="GTiff",
    progress=None,
):
    """Compare a predicted fine image with a reference fine image on the same grid.

    ``predicted_path``, ``reference_path``: rasters on one grid (CRS, geotransform,
    size). ``mask_path``: optional raster on that grid, band 1 nonzero = assess the
    pixel. ``bands``: which bands to compare (see :func:`parse_band_pairs`; default
    all, same count in both). ``scale``: reflectance per DN of integer rasters;
    ``pred_scale`` / ``ref_scale`` override per raster (see
    :func:`reflectance_scale`). ``error_map_path`` / ``table_csv`` / ``html``:
    optional outputs (see the module docstring). ``data_range``: PSNR/SSIM peak;
    ``ratio``: fine / coarse pixel size for ERGAS. ``tile``: block size read at
    once (default: :func:`auto_block`). ``progress``: cancel is checked before
    every block.

    Returns the metrics dict (``compute_metrics`` layout) plus ``band_names``,
    ``band_pairs``, ``scales``, ``files`` and ``seconds``. Raises
    :class:`CtstfmError` for bad input (nothing written) and
    :class:`~model_core.errors.Cancelled` when cancelled (nothing written).
    """
    progress = progress or Progress()
    started = time.perf_counter()
    _check_options(output_format, data_range, ratio)
    comparison = Comparison.read(predicted_path, reference_path, mask_path)
    job = RasterJob(
        "error map", error_map_path, comparison.inputs, what=ERROR_MAP_WHAT,
        also={TABLE_WHAT: table_csv, HTML_WHAT: html}, progress=progress.sub(0.0, 0.95),
    )
    comparison.choose(bands, scale, pred_scale, ref_scale)
    tile = auto_block(comparison.reference.width) if tile is None else int(tile)
    if tile < 16:
        raise CtstfmError(f"The block size must be at least 16 pixels (got {tile}).")
    progress.info(
        f"Assessing {len(comparison.pairs)} band(s) on {comparison.reference.width} x "
        f"{comparison.reference.height} px (reflectance = predicted x {comparison.scales[0]:g}, "
        f"reference x {comparison.scales[1]:g})."
    )
    metrics = _compare(job, comparison, tile, output_format, data_range, ratio)
    files = {key: job.outputs[what] for key, what in OUTPUT_KEYS.items() if what in job.outputs}
    _write_reports(files, metrics, comparison, data_range, ratio)
    progress.update(1.0, "done")
    result = dict(metrics)
    result.update(
        band_names=comparison.band_names,
        band_pairs=[list(p) for p in comparison.pairs],
        scales={"predicted": comparison.scales[0], "reference": comparison.scales[1]},
        files=files,
        seconds=time.perf_counter() - started,
    )
    return result


ERROR_MAP_WHAT, TABLE_WHAT, HTML_WHAT = "error map", "table", "HTML report"
#: The keys of ``assess()["files"]`` and the outputs they name.
OUTPUT_KEYS = {"error_map": ERROR_MAP_WHAT, "csv": TABLE_WHAT, "html": HTML_WHAT}


def _check_options(output_format, data_range, ratio):
    if output_format not in OUTPUT_FORMATS:
        raise CtstfmError(f"Unknown output format '{output_format}'; use {' or '.join(OUTPUT_FORMATS)}.")
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise CtstfmError(f"The data range must be a positive number (got {data_range}).")
    if not (isinstance(ratio, (int, float)) and ratio > 0):
        raise CtstfmError(f"The ERGAS resolution ratio must be a positive number such as 0.0625 (got {ratio}).")


class Comparison:
    """What is compared: the rasters' headers (:meth:`read`) and, once :meth:`choose` has checked
    that they share one grid, the band pairs, their names and the reflectance scales
    ``(predicted, reference)``."""

    def __init__(self, predicted, reference, mask=None):
        self.predicted, self.reference, self.mask = predicted, reference, mask
        self.pairs, self.band_names, self.scales = [], [], (1.0, 1.0)

    @classmethod
    def read(cls, predicted_path, reference_path, mask_path=None):
        """The headers of the rasters (an unreadable one is a :class:`CtstfmError`)."""
        return cls(
            RasterInfo.read(predicted_path, "predicted image"),
            RasterInfo.read(reference_path, "reference image"),
            RasterInfo.read(mask_path, "mask") if mask_path else None,
        )

    @property
    def inputs(self):
        """``{what: path}`` of the inputs, which no output may be."""
        return {"predicted image": self.predicted.path, "reference image": self.reference.path,
                "mask": self.mask.path if self.mask else None}

    def choose(self, bands, scale, pred_scale, ref_scale):
        """Check the grids, then choose the band pairs and the scales (see :func:`assess`)."""
        check_same_grid(self.predicted, self.reference, "predicted image")
        if self.mask is not None:
            check_same_grid(self.mask, self.reference, "mask")
        self.pairs = parse_band_pairs(bands, self.predicted.count, self.reference.count)
        self.band_names = _band_names(self.pairs, self.predicted, self.reference)
        self.scales = (
            reflectance_scale(self.predicted, scale, pred_scale, "predicted image"),
            reflectance_scale(self.reference, scale, ref_scale, "reference image"),
        )


class ComparisonReader(ReaderGroup):
    """A :class:`Comparison`'s rasters as a raster-job source: ``read(window)`` gives the predicted
    and the reference reflectance ``(C, h, w)`` of the compared bands and the mask of pixels valid
    in both (and in the mask)."""

    def __init__(self, comparison):
        rasters = [
            (comparison.predicted.path, [p for p, _ in comparison.pairs], "predicted image"),
            (comparison.reference.path, [r for _, r in comparison.pairs], "reference image"),
        ]
        if comparison.mask is not None:
            rasters.append((comparison.mask.path, [1], "mask"))
        super().__init__(comparison.reference, rasters)
        self.scales = comparison.scales

    def check_coverage(self):
        super().check_coverage(self.readers[:2])  # an empty mask is reported as no pixel to compare

    def read(self, window):
        pred, pred_ok = self.readers[0].read_reflectance(window, self.scales[0])
        ref, ref_ok = self.readers[1].read_reflectance(window, self.scales[1])
        valid = pred_ok & ref_ok
        if len(self.readers) > 2:
            mask, mask_ok = self.readers[2].read(window)
            valid &= mask_ok & (mask[0] != 0)
        return pred, ref, valid


def _compare(job, comparison, tile, output_format, data_range, ratio):
    """Run the comparison block by block (the error map, when asked for, written on the way);
    returns the metrics, checked for plausibility before the error map is kept."""
    nb = len(comparison.pairs)
    acc = MetricsAccumulator(data_range=data_range, ratio=ratio)
    rows = RowBandMetrics(acc, comparison.reference.height)
    metrics = {}

    def check():
        metrics.update(acc.result())
        _check_result(acc, metrics, *comparison.scales)

    output = JobOutput(
        process=lambda batch: np.concatenate(batch, axis=1),
        spec=OutputSpec("float32", FLOAT_NODATA, None),
        count=1,
        descriptions=["mean absolute error (reflectance)"],
        metadata=_error_map_metadata(comparison),
        to_raster=lambda data: np.abs(data[:nb].astype(np.float64) - data[nb:]).mean(axis=0)[None],
        on_rows=lambda window, data, valid: rows.update(window.row, data[:nb], data[nb:], valid),
        before_commit=check,
    )
    with job.open(ComparisonReader, comparison) as source:
        job.run(source, output, tile=tile, overlap=0, output_format=output_format)
    return metrics


def _error_map_metadata(comparison):
    return {
        "CTSTFM_SOFTWARE": software_name(),
        "CTSTFM_PRODUCT": "absolute error |predicted - reference| averaged over bands",
        "CTSTFM_PREDICTED": os.path.abspath(str(comparison.predicted.path)),
        "CTSTFM_REFERENCE": os.path.abspath(str(comparison.reference.path)),
        "CTSTFM_MASK": os.path.abspath(str(comparison.mask.path)) if comparison.mask else "",
        "CTSTFM_BAND_PAIRS": ",".join(f"{p}:{r}" for p, r in comparison.pairs),
        SCALE_METADATA: "1.0",
    }


def _write_reports(files, metrics, comparison, data_range, ratio):
    """The CSV table and the HTML page, where asked for."""
    if "csv" in files:
        atomic_write_text(files["csv"], table_csv_text(metrics, comparison.band_names))
    if "html" not in files:
        return
    ref = comparison.reference
    info = {
        "predicted": os.path.abspath(str(comparison.predicted.path)),
        "reference": os.path.abspath(str(ref.path)),
        "mask": os.path.abspath(str(comparison.mask.path)) if comparison.mask else "",
        "width": ref.width,
        "height": ref.height,
        "pixel_size": ref.pixel_size,
        "crs": _crs_name(ref.crs_wkt),
        "band_pairs": comparison.pairs,
        "scales": comparison.scales,
        "error_map": files.get("error_map", ""),
        "data_range": float(data_range),
        "ratio": float(ratio),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
    atomic_write_text(files["html"], report_html(metrics, comparison.band_names, info))


def _check_result(acc, metrics, p_scale, r_scale):
    if metrics["counts"]["pixels"] == 0:
        raise CtstfmError(
            "No pixel is valid in both images (and in the mask); check that the prediction and the reference "
            "cover the same area with data."
        )
    mean_p = float(np.mean(acc.mean_p))
    mean_r = float(np.mean(acc.mean_r))
    if mean_p > 0 and mean_r > 0:
        factor = mean_p / mean_r
        if factor > SCALE_MISMATCH_FACTOR or factor < 1.0 / SCALE_MISMATCH_FACTOR:
            raise CtstfmError(
                f"The predicted image's mean reflectance ({mean_p:.4g}, scale {p_scale:g}) is {factor:.3g} times "
                f"the reference's ({mean_r:.4g}, scale {r_scale:g}), so their scales differ; set the reflectance "
                "scale of each (0.0001 for DN x 10000, 1 for reflectance)."
            )


def format_summary(result):
    """A plain-text summary: the table (Markdown) and the pixel count."""
    from .metrics import format_table

    text = format_table(result, result.get("band_names"))
    counts = result["counts"]
    return f"{text}\n{counts['pixels']} valid pixels, {counts['ssim_windows']} SSIM windows."
