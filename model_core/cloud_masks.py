"""Which values of a cloud mask are cloud: one rule for every mask a run reads (a series or training manifest's
``mask`` column, Fuse's fine-image mask, a mask band of the fine images), and where the masks come from.

A 0/1 cloud mask needs no rule (``nonzero``, the default). The masks that come with the products do: Landsat's
quality band is a bit field in which a clear pixel is not 0 (Collection 2 ``QA_PIXEL`` holds 21824 for clear
land), and Sentinel-2's scene classification holds a class per pixel (4, vegetation). Read as "non-zero is cloud",
either masks the whole image. :func:`check_mask` refuses that case before any work, naming the rule that reads it.

Rules, as the ``mask_rule`` option takes them: a preset name (:data:`PRESETS`), ``bits:1,3`` (cloud where any of
those bits is set, bit 0 the lowest) or ``values:3,8,9`` (cloud where the value is one of those).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionError

#: Product masks by name: (kind, numbers).
PRESETS = {
    "nonzero": ("nonzero", ()),
    # Landsat Collection 2 QA_PIXEL: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow.
    "landsat-c2-qa": ("bits", (0, 1, 2, 3, 4)),
    # Landsat Collection 1 pixel_qa: 0 fill, 3 cloud shadow, 5 cloud.
    "landsat-c1-qa": ("bits", (0, 3, 5)),
    # HLS v2 Fmask band: 1 cloud, 2 adjacent to cloud or shadow, 3 cloud shadow.
    "hls-fmask": ("bits", (1, 2, 3)),
    # Sentinel-2 L2A scene classification (SCL): 0 no data, 1 saturated or defective, 3 cloud shadow,
    # 8 and 9 cloud (medium and high probability), 10 thin cirrus.
    "sentinel2-scl": ("values", (0, 1, 3, 8, 9, 10)),
    # Fmask's classes: 2 cloud shadow, 4 cloud, 255 no observation.
    "fmask": ("values", (2, 4, 255)),
}
DEFAULT_RULE = "nonzero"
#: A mask that flags at least this share of its image under ``nonzero`` while its most common value is neither 1
#: nor 255 (a 0/1 or 0/255 mask of a cloudy date) is a quality or class band read with the wrong rule.
WHOLE_IMAGE = 0.9


@dataclass(frozen=True)
class CloudRule:
    """A parsed ``mask_rule``: ``kind`` ("nonzero", "bits" or "values") and its ``numbers``."""

    kind: str
    numbers: tuple
    text: str  # as the user gave it, normalised (recorded in each output's resume key)

    @classmethod
    def parse(cls, text=None):
        """The rule of ``text`` (None or empty: ``nonzero``); an :class:`OptionError` naming ``mask_rule`` when it is
        neither a preset nor ``bits:``/``values:`` with whole numbers."""
        text = (str(text).strip().lower() if text is not None else "") or DEFAULT_RULE
        if text in PRESETS:
            kind, numbers = PRESETS[text]
            return cls(kind, numbers, text)
        kind, _, listed = text.partition(":")
        try:
            numbers = tuple(int(part) for part in listed.split(",") if part.strip())
        except ValueError:
            numbers = ()
        limit = 63 if kind == "bits" else None
        if kind not in ("bits", "values") or not numbers or any(n < 0 or (limit and n > limit) for n in numbers):
            raise OptionError(
                f"The cloud mask rule ({{mask_rule}}) '{_escape(text)}' is not one we read: give one of "
                f"{', '.join(PRESETS)}, or bits:N,... (cloud where any of those bits is set, 0 the lowest, e.g. "
                "bits:3,4) or values:N,... (cloud where the value is one of those, e.g. values:3,8,9,10).",
                "mask_rule",
            )
        return cls(kind, numbers, f"{kind}:{','.join(str(n) for n in numbers)}")

    def flags(self, values):
        """Bool array: where ``values`` (a mask band as read, float) is cloud under this rule."""
        if self.kind == "nonzero":
            return values != 0
        finite = np.isfinite(values)
        whole = np.where(finite, values, 0).astype(np.int64)
        if self.kind == "bits":
            return finite & ((whole & sum(1 << bit for bit in self.numbers)) != 0)
        return finite & np.isin(whole, self.numbers)


@dataclass(frozen=True)
class CloudMask:
    """Where a fine image is cloudy: band ``band`` of the raster ``path`` read with ``rule`` (a
    :class:`~model_core.raster.RasterReader` given it as ``clouds`` marks those pixels invalid)."""

    path: str
    band: int
    rule: CloudRule
    what: str  # e.g. "cloud mask of 2021-04-01"


def cloud_sources(fine, mask, rule, mask_band=None, of=""):
    """The :class:`CloudMask` sources of the fine image ``fine``: the raster ``mask`` (its first band) and the
    image's own band ``mask_band``, either may be missing; ``of`` (e.g. " of 2021-04-01") names the date."""
    clouds = [CloudMask(str(mask), 1, rule, f"cloud mask{of}")] if mask else []
    if mask_band:
        clouds.append(CloudMask(str(fine), int(mask_band), rule, f"mask band {mask_band} of the fine image{of}"))
    return clouds


def clouds_of(pair, rule, mask_band=None):
    """:func:`cloud_sources` of a series date (``pair``: its ``fine``, ``mask`` and ``date``)."""
    return cloud_sources(pair.fine, getattr(pair, "mask", ""), rule, mask_band, f" of {pair.date.isoformat()}")


def clouds_text(clouds):
    """The :class:`CloudMask` sources as output metadata records them (empty: none)."""
    return "; ".join(f"{mask.path} band {mask.band} ({mask.rule.text})" for mask in clouds)


def check_cloud_sources(clouds):
    """:func:`check_mask` on each :class:`CloudMask`, before any work."""
    from .raster import RasterInfo, RasterReader

    for mask in clouds:
        with RasterReader(mask.path, [mask.band], grid=RasterInfo.read(mask.path, mask.what), what=mask.what) as reader:
            check_mask(reader, mask.rule, mask.what)


def check_masks(pairs, rule, mask_band=None):
    """:func:`check_mask` on every mask of ``pairs``' fine images, before any work."""
    for pair in pairs:
        if getattr(pair, "fine", ""):
            check_cloud_sources(clouds_of(pair, rule, mask_band))


def _escape(text):
    return str(text).replace("{", "{{").replace("}", "}}")


def check_mask(reader, rule, what):
    """Refuse a mask band that ``rule`` would read as cloud nearly everywhere because it is a quality or class band
    read as "non-zero is cloud" (a cheap sample, :meth:`~model_core.raster.RasterReader.sample`)."""
    if rule.kind != "nonzero":
        return
    data, known = reader.sample()
    values = data[0][known & np.isfinite(data[0])]
    if values.size == 0:
        return
    flagged = values != 0
    if flagged.mean() < WHOLE_IMAGE:
        return
    candidates, counts = np.unique(values[flagged], return_counts=True)
    common = float(candidates[np.argmax(counts)])
    if common in (1.0, 255.0):
        return
    raise OptionError(
        f"The {what} '{_escape(reader.source_info.path)}' marks {100 * flagged.mean():.0f} % of the image as cloud "
        f"when every non-zero value is cloud, and its most common value is {common:g}: it looks like a quality or "
        "class band (Landsat's QA_PIXEL holds 21824 for clear land, Sentinel-2's SCL 4 for vegetation), not a 0/1 "
        "cloud mask. "
        f"Say how to read it with {{mask_rule}}: one of {', '.join(name for name in PRESETS if name != 'nonzero')}, "
        "or bits:N,... or values:N,....",
        "mask_rule",
    )
