"""Are the inputs on the reflectance scale they are read with? One cheap check before any work.

Every method reads rasters as reflectance, ``DN * scale``. A wrong scale does not
fail: a float 0-1 fine image next to a x10000 coarse image, or an 8-bit display
image, fuses into nonsense without a word. :func:`check_scales` samples each input
(:meth:`~model_core.raster.RasterReader.sample`, the same cheap reads as the
coverage check) and refuses, naming the option that fixes it, when

* an integer image cannot hold reflectance at its scale (``uint8`` at 0.0001 holds
  at most 0.0255): :data:`MIN_REPRESENTABLE`;
* an image's brightest band has a mean reflectance outside
  :data:`PLAUSIBLE_MEAN` (DN read as reflectance, or reflectance read as DN);
* an image holds a value that no reflectance can have (:data:`POSSIBLE_REFLECTANCE`), one value over and over,
  and does not declare it as nodata: a product's fill value (-9999, MODIS's -28672) that would be read as dark or
  bright ground;
* an integer image has no dark pixels in any band (:data:`OFFSET_FLOOR_DN`): DN with an additive
  offset, such as Landsat Collection 2 Level-2 (``DN x 0.0000275 - 0.2``), which a scale alone cannot read;
* the fine and the coarse images differ by :data:`MISMATCH_FACTOR` or more
  (median over bands of the ratio of their mean reflectance), which real
  change, clouds or haze do not reach in most bands at once.

Option names reach the user through :class:`~model_core.errors.OptionError`, so the
command line says ``--coarse-scale`` and QGIS ``COARSE_SCALE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CtstfmError, OptionError

#: The largest value an integer image can hold, times its scale, must reach this reflectance.
MIN_REPRESENTABLE = 0.2
#: The mean reflectance of an image's brightest band lies in this range for any land scene
#: (dark water ~0.01-0.05, snow and cloud ~0.8-1.2).
PLAUSIBLE_MEAN = (0.002, 3.0)
#: Fine and coarse mean reflectances this many times apart are a scale mistake, not change.
MISMATCH_FACTOR = 10.0
#: An integer image whose 1st-percentile DN is at least this in every band (and at least
#: :data:`OFFSET_FLOOR_REFLECTANCE` at its scale) holds an additive offset: Landsat Collection 2 Level-2 surface
#: reflectance is DN x 0.0000275 - 0.2, so reflectance 0 is DN 7273 and its darkest pixels stay near it. A DN x
#: 10000 image would need reflectance above 0.5 almost everywhere in every band (cloud or snow cover).
OFFSET_FLOOR_DN = 5000
OFFSET_FLOOR_REFLECTANCE = 0.1
#: Reflectance outside this range is no ground: surface reflectance products keep valid pixels within about -0.2
#: to 1.6 (Landsat's valid range), so a value beyond it, repeated, is a fill value (Landsat's -9999 and MODIS's
#: -28672 at 0.0001, 65535 where unsigned products mark fill or saturation).
POSSIBLE_REFLECTANCE = (-0.5, 3.0)
#: A fill value is one value: the most common impossible value must be at least this share of the impossible
#: pixels. (An image read at the wrong scale has many different impossible values; the scale check names it.)
FILL_VALUE_SHARE = 0.5
#: A value too bright to be ground is also how products mark saturation (Sentinel-2's 65535), which a few pixels of
#: a bright cloud may carry: such a value is called a fill value only when it covers at least this share of the
#: sample. Too dark a value (-9999, -28672) is a fill value whatever its share.
BRIGHT_FILL_SHARE = 0.01


@dataclass
class ScaledImage:
    """One input of a scale check: its reader, its scale and the option that sets that scale."""

    what: str  # e.g. "fine image at T0"
    reader: object  # model_core.raster.RasterReader
    scale: float
    option: str  # core option key, e.g. "coarse_scale"

    @property
    def path(self):
        return self.reader.source_info.path

    def band_statistics(self):
        """:class:`BandStatistics` of a sample of the valid pixels (``None`` when nothing is valid)."""
        data, valid = self.reader.sample()
        if not valid.any():
            return None
        values = data[:, valid].astype(np.float64)
        return BandStatistics(values.mean(axis=1) * self.scale, np.percentile(values, 1, axis=1),
                              _fill_value(values, self.scale))


@dataclass
class BandStatistics:
    """What the checks need to know of an image's valid pixels (a sample of them)."""

    means: np.ndarray  # mean reflectance per band
    floor_dn: np.ndarray  # 1st-percentile DN per band
    fill: object  # (band index, DN, share of the sampled pixels) of an undeclared fill value, or None


def _fill_value(values, scale):
    """``(band index, DN, share of pixels)`` of the value, impossible as reflectance, that ``values`` (C, N) hold
    most often, when it is :data:`FILL_VALUE_SHARE` or more of their impossible values; else None."""
    low, high = POSSIBLE_REFLECTANCE
    reflectance = values * scale
    impossible = (reflectance < low) | (reflectance > high)
    if not impossible.any():
        return None
    band = int(np.argmax(impossible.sum(axis=1)))
    candidates, counts = np.unique(values[band][impossible[band]], return_counts=True)
    top = int(np.argmax(counts))
    share = float(counts[top]) / values.shape[1]
    if counts[top] < FILL_VALUE_SHARE * impossible[band].sum() or (candidates[top] > 0 and share < BRIGHT_FILL_SHARE):
        return None
    return band, float(candidates[top]), share


def check_scale_value(value, option):
    """``value`` as a float (None stays None); an :class:`OptionError` unless it is a positive number."""
    if value is None:
        return None
    try:
        number = float(value)
        ok = number > 0 and np.isfinite(number)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OptionError(
            f"The reflectance scale ({{{option}}}) must be a positive number (got {_escape(value)}); use 0.0001 for "
            "DN x 10000 and 1 for reflectance.", option,
        )
    return number


def _escape(text):
    return str(text).replace("{", "{{").replace("}", "}}")


def _check_representable(image):
    dtype = np.dtype(image.reader.source_info.dtype)
    if dtype.kind not in "iu":
        return
    top = float(np.iinfo(dtype).max) * image.scale
    if top < MIN_REPRESENTABLE:
        guess = " (an 8-bit display image?)" if dtype.itemsize == 1 else ""
        raise OptionError(
            f"The {image.what} '{_escape(image.path)}' is {dtype.name}: at a reflectance scale of {image.scale:g} "
            f"({{{image.option}}}) it can hold reflectance only up to {top:.3g}, so it is not surface reflectance"
            f"{guess}. Give the original product (e.g. 16-bit DN x 10000), or set "
            f"{{{image.option}}} so that its values times the scale are reflectance (0-1).",
            image.option,
        )


def _check_fill(image, fill):
    """Refuse an image holding an undeclared fill value: read as reflectance it would be ground (clipped to 0)."""
    if fill is None:
        return
    band, dn, share = fill
    declared = image.reader.nodata[band]
    path = image.path
    value = f"{dn:.0f}" if dn == round(dn) else f"{dn:g}"
    raise CtstfmError(
        f"The {image.what} '{path}' holds the value {value} in {100 * share:.3g} % of the pixels sampled (band "
        f"{image.reader.bands[band]}), reflectance {dn * image.scale:.4g} at scale {image.scale:g}: no ground is that "
        f"{'dark' if dn < 0 else 'bright'}, and the image "
        + ("declares no nodata value" if declared is None else f"declares another nodata value ({declared:g})")
        + f", so it is most likely the product's fill value. Declare it as nodata (gdal_edit.py -a_nodata {value} "
        f"'{path}', or gdal_translate -a_nodata {value} to a new file) and run again."
    )


def _check_offset(image, floor_dn):
    """Refuse an integer image whose darkest pixels sit far above 0 in every band: DN with an additive offset."""
    if np.dtype(image.reader.source_info.dtype).kind not in "iu":
        return
    floor = float(np.min(floor_dn))
    if floor < OFFSET_FLOOR_DN or floor * image.scale < OFFSET_FLOOR_REFLECTANCE:
        return
    raise OptionError(
        f"The {image.what} '{_escape(image.path)}' has no dark pixels: in every band 99 % of its values are at least "
        f"DN {floor:.0f} (reflectance {floor * image.scale:.3g} at scale {image.scale:g}). That is a product with an "
        "additive offset, such as Landsat Collection 2 Level-2 surface reflectance (reflectance = DN x 0.0000275 - "
        "0.2), or an image covered by cloud or snow. CTSTFM reads reflectance as DN x scale, without an offset: "
        "convert the image to reflectance x 10000 first (one GDAL command: docs/fusion.md, What to feed it), or give a "
        "clear date.",
        image.option,
    )


def _check_plausible(image, means):
    brightest = float(np.max(means))
    low, high = PLAUSIBLE_MEAN
    if brightest > high:
        hint = "0.0001 if it holds DN x 10000" if brightest > 50 else "a smaller value"
        guess = "DN (e.g. x 10000)"
    elif 0 < brightest < low:
        hint = "1 if it holds reflectance (0-1)" if brightest < 1e-3 else "a larger value"
        guess = "reflectance (0-1)"
    else:
        return
    raise OptionError(
        f"The {image.what} '{_escape(image.path)}' has a mean reflectance of {brightest:.4g} in its brightest band "
        f"when read with scale {image.scale:g}, far outside the 0-1 of surface reflectance: its values look like "
        f"{guess}. Set {{{image.option}}} to {hint}.",
        image.option,
    )


def _check_pair(fine, coarse, fine_means, coarse_means):
    both = (fine_means > 0) & (coarse_means > 0)
    if not both.any():
        return
    ratio = float(np.median(fine_means[both] / coarse_means[both]))
    if 1.0 / MISMATCH_FACTOR < ratio < MISMATCH_FACTOR:
        return
    options = tuple(dict.fromkeys((fine.option, coarse.option)))
    fix = (
        f"set {{{fine.option}}} and {{{coarse.option}}} so that both are reflectance (0.0001 for DN x 10000, "
        "1 for reflectance)" if len(options) == 2 else
        f"give both in the same units (both DN x 10000, or both reflectance); {{{fine.option}}} sets the scale of both"
    )
    raise OptionError(
        f"The {fine.what} '{_escape(fine.path)}' and the {coarse.what} '{_escape(coarse.path)}' are on different "
        f"scales: their mean reflectances differ {max(ratio, 1 / ratio):.3g} times (fine {float(np.median(fine_means)):.4g}, "
        f"coarse {float(np.median(coarse_means)):.4g} at scales {fine.scale:g} and {coarse.scale:g}), far more than "
        f"real change. {fix[0].upper()}{fix[1:]}.",
        *options,
    )


def check_scales(fine, coarse_images):
    """Raise :class:`~model_core.errors.OptionError` when an input is not reflectance at its scale.

    ``fine``: the :class:`ScaledImage` of the fine image; ``coarse_images``: those of
    the coarse images read with it. Images with no valid sample are left to the
    coverage check."""
    fine_means = None
    for image in (fine, *coarse_images):
        _check_representable(image)
        statistics = image.band_statistics()
        if statistics is None:
            continue
        _check_fill(image, statistics.fill)
        means = statistics.means
        _check_offset(image, statistics.floor_dn)
        _check_plausible(image, means)
        if image is fine:
            fine_means = means
        elif fine_means is not None:
            _check_pair(fine, image, fine_means, means)


def check_series_scales(pairs, scale, option="scale", coarse_scale=None, coarse_option=None, fine_bands=None,
                        coarse_bands=None):
    """:func:`check_scales` on every date of a series: its fine and coarse images together, or the one it has
    (a series to fuse may lack either). ``coarse_scale`` (default ``scale``) reads the coarse images;
    ``fine_bands`` / ``coarse_bands`` (1-based) are the bands in use (default as :class:`PairReader` picks)."""
    from .raster import PairReader, RasterInfo, RasterReader

    coarse_scale = coarse_scale or scale
    coarse_option = coarse_option or option
    for pair in pairs:
        where = f" of {pair.date}" + (f" in scene '{pair.scene}'" if getattr(pair, "scene", "") else "")
        if pair.fine and pair.coarse:
            with PairReader(pair.fine, pair.coarse, scale=scale, coarse_scale=coarse_scale, fine_bands=fine_bands,
                            coarse_bands=coarse_bands) as reader:
                check_scales(
                    ScaledImage(f"fine image{where}", reader.fine, scale, option),
                    [ScaledImage(f"coarse image{where}", reader.coarse, coarse_scale, coarse_option)],
                )
            continue
        path, what, bands, image_scale, image_option = (
            (pair.fine, "fine", fine_bands, scale, option) if pair.fine
            else (pair.coarse, "coarse", coarse_bands, coarse_scale, coarse_option)
        )
        if path:
            with RasterReader(path, bands, grid=RasterInfo.read(path)) as reader:
                check_scales(ScaledImage(f"{what} image{where}", reader, image_scale, image_option), [])
