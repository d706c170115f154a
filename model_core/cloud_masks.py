"""Which values of a cloud mask are cloud: one rule for the fine images' masks a run reads (a series or training
manifest's ``mask`` column, Fuse's fine-image mask, a mask band of the fine images) and one for the coarse images'
(the ``coarse_mask`` column, Fuse's coarse mask), and where the masks come from.

A 0/1 cloud mask needs no rule (``nonzero``, the default). The masks that come with the products do: Landsat's
quality band is a bit field in which a clear pixel is not 0 (Collection 2 ``QA_PIXEL`` holds 21824 for clear
land), Sentinel-2's scene classification holds a class per pixel (4, vegetation), and MODIS's ``state_1km`` keeps
its cloud state in two bits (0 clear, 1 cloudy, 2 mixed, 3 not set). Read as "non-zero is cloud", each masks the
whole image. :func:`check_mask` refuses that case before any work, naming the rule that reads it.

Rules, as the ``mask_rule`` and ``coarse_mask_rule`` options take them: a preset name (:data:`PRESETS`),
``bits:1,3`` (cloud where any of those bits is set, bit 0 the lowest), ``values:3,8,9`` (cloud where the value is
one of those) or ``field:0-1=1,2`` (cloud where bits 0 to 1, read as a number, are one of those), and any of them
joined by ``+`` (cloud where any part says so): the ``modis-state`` preset is ``field:0-1=1,2+bits:2,10``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionError

#: Product masks by name, as rules.
PRESETS = {
    "nonzero": "nonzero",
    # Landsat Collection 2 QA_PIXEL: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow.
    "landsat-c2-qa": "bits:0,1,2,3,4",
    # Landsat Collection 1 pixel_qa: 0 fill, 3 cloud shadow, 5 cloud.
    "landsat-c1-qa": "bits:0,3,5",
    # HLS v2 Fmask band: 1 cloud, 2 adjacent to cloud or shadow, 3 cloud shadow.
    "hls-fmask": "bits:1,2,3",
    # Sentinel-2 L2A scene classification (SCL): 0 no data, 1 saturated or defective, 3 cloud shadow,
    # 8 and 9 cloud (medium and high probability), 10 thin cirrus.
    "sentinel2-scl": "values:0,1,3,8,9,10",
    # Fmask's classes: 2 cloud shadow, 4 cloud, 255 no observation.
    "fmask": "values:2,4,255",
    # MODIS MOD09GA/MYD09GA state_1km: bits 0-1 cloud state (1 cloudy, 2 mixed; 0 clear, 3 not set), 2 cloud
    # shadow, 10 the internal cloud algorithm's flag.
    "modis-state": "field:0-1=1,2+bits:2,10",
}
DEFAULT_RULE = "nonzero"
#: A mask that flags at least this share of its image under ``nonzero`` while its most common value is neither 1
#: nor 255 (a 0/1 or 0/255 mask of a cloudy date) is a quality or class band read with the wrong rule.
WHOLE_IMAGE = 0.9
#: The highest bit a rule may name (masks are read as 64-bit integers).
HIGHEST_BIT = 63


@dataclass(frozen=True)
class RulePart:
    """One test of a rule: cloud where bits ``low``..``high`` of the value, read as a number, are one of
    ``values`` (``bits:3`` is bit 3 equal to 1; ``values:`` reads the whole value)."""

    low: int
    high: int
    values: tuple

    def flags(self, whole):
        field = (whole >> self.low) & ((1 << (self.high - self.low + 1)) - 1) if self.high < HIGHEST_BIT else whole
        return np.isin(field, self.values)


@dataclass(frozen=True)
class CloudRule:
    """A parsed ``mask_rule``: its :class:`RulePart`s (none for ``nonzero``) and its normalised ``text``."""

    parts: tuple
    text: str  # as the user gave it, normalised (recorded in each output's resume key and metadata)
    option: str = "mask_rule"  # the option it came from, which errors about its masks name

    @property
    def reads_nonzero(self):
        """True for the ``nonzero`` rule (a 0/1 mask), the one :func:`check_mask` guards."""
        return not self.parts

    @classmethod
    def parse(cls, text=None, option="mask_rule"):
        """The rule of ``text`` (None or empty: ``nonzero``); an :class:`OptionError` naming ``option`` when it is
        neither a preset nor parts as the module docstring says."""
        text = (str(text).strip().lower() if text is not None else "") or DEFAULT_RULE
        spelled = PRESETS.get(text, text)
        if spelled == DEFAULT_RULE:
            return cls((), text, option)
        parts, texts = [], []
        for piece in spelled.split("+"):
            found = _parse_part(piece.strip().replace(" ", ""))
            if found is None:
                raise OptionError(
                    f"The cloud mask rule ({{{option}}}) '{_escape(text)}' is not one we read: give one of "
                    f"{', '.join(PRESETS)}, or bits:N,... (cloud where any of those bits is set, 0 the lowest, e.g. "
                    "bits:3,4), values:N,... (cloud where the value is one of those, e.g. values:3,8,9,10) or "
                    "field:L-H=N,... (cloud where bits L to H, read as a number, are one of those, e.g. "
                    "field:0-1=1,2), joined by + to combine them.",
                    option,
                )
            parts += found[0]
            texts.append(found[1])
        return cls(tuple(parts), text if text in PRESETS else "+".join(texts), option)

    def flags(self, values):
        """Bool array: where ``values`` (a mask band as read, float) is cloud under this rule."""
        if not self.parts:
            return values != 0
        finite = np.isfinite(values)
        whole = np.where(finite, values, 0).astype(np.int64)
        cloud = np.zeros(values.shape, dtype=bool)
        for part in self.parts:
            cloud |= part.flags(whole)
        return finite & cloud


def _numbers(listed):
    try:
        numbers = tuple(int(part) for part in listed.split(",") if part)
    except ValueError:
        return ()
    return numbers if numbers and all(n >= 0 for n in numbers) else ()


def _parse_part(text):
    """``([RulePart], normalised text)`` of one ``bits:``, ``values:`` or ``field:`` part, or None."""
    kind, _, listed = text.partition(":")
    if kind == "bits":
        bits = _numbers(listed)
        if not bits or max(bits) > HIGHEST_BIT:
            return None
        return [RulePart(bit, bit, (1,)) for bit in bits], f"bits:{','.join(map(str, bits))}"
    if kind == "values":
        values = _numbers(listed)
        return ([RulePart(0, HIGHEST_BIT, values)], f"values:{','.join(map(str, values))}") if values else None
    if kind == "field":
        span, _, listed = listed.partition("=")
        low, _, high = span.partition("-")
        values = _numbers(listed)
        if not (low.isdigit() and (high or low).isdigit() and values):
            return None
        low, high = int(low), int(high or low)
        if not low <= high < HIGHEST_BIT or max(values) >= 1 << (high - low + 1):
            return None
        return [RulePart(low, high, values)], f"field:{low}-{high}={','.join(map(str, values))}"
    return None


@dataclass(frozen=True)
class CloudMask:
    """Where an image is cloudy: band ``band`` of the raster ``path`` read with ``rule`` (a
    :class:`~model_core.raster.RasterReader` given it as ``clouds`` marks those pixels invalid; a mask on another
    grid is put on the image's by nearest neighbour)."""

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


def coarse_cloud_sources(mask, rule, of=""):
    """The :class:`CloudMask` sources of a coarse image: the raster ``mask`` (its first band; e.g. MODIS
    ``state_1km``, on its own grid), or none."""
    return [CloudMask(str(mask), 1, rule, f"coarse cloud mask{of}")] if mask else []


@dataclass(frozen=True)
class ImageClouds:
    """The :class:`CloudMask` sources of one fusion's three images: the fine image at T0 and the coarse images at
    T0 and T1 (lists, each may be empty)."""

    fine: list
    coarse_t0: list
    coarse_t1: list

    @classmethod
    def of(cls, fine_path, fine_mask=None, coarse_t0_mask=None, coarse_t1_mask=None, mask_rule=None,
           coarse_mask_rule=None, mask_band=None):
        """From the mask rasters (and the fine image's ``mask_band``), read by ``mask_rule`` (the fine image's) and
        ``coarse_mask_rule`` (the coarse images')."""
        coarse_rule = CloudRule.parse(coarse_mask_rule, "coarse_mask_rule")
        return cls(cloud_sources(fine_path, fine_mask, CloudRule.parse(mask_rule), mask_band),
                   coarse_cloud_sources(coarse_t0_mask, coarse_rule, " at T0"),
                   coarse_cloud_sources(coarse_t1_mask, coarse_rule, " at T1"))

    @property
    def every(self):
        return self.fine + self.coarse_t0 + self.coarse_t1


def clouds_of(pair, rule, mask_band=None):
    """:func:`cloud_sources` of a series date (``pair``: its ``fine``, ``mask`` and ``date``)."""
    return cloud_sources(pair.fine, getattr(pair, "mask", ""), rule, mask_band, f" of {pair.date.isoformat()}")


def coarse_clouds_of(pair, rule):
    """:func:`coarse_cloud_sources` of a series date (``pair``: its ``coarse_mask`` and ``date``)."""
    return coarse_cloud_sources(getattr(pair, "coarse_mask", ""), rule, f" of {pair.date.isoformat()}")


def clouds_text(clouds):
    """The :class:`CloudMask` sources as output metadata records them (empty: none)."""
    return "; ".join(f"{mask.path} band {mask.band} ({mask.rule.text})" for mask in clouds)


def check_cloud_sources(clouds):
    """:func:`check_mask` on each :class:`CloudMask`, before any work."""
    from .raster import RasterInfo, RasterReader

    for mask in clouds:
        with RasterReader(mask.path, [mask.band], grid=RasterInfo.read(mask.path, mask.what), what=mask.what) as reader:
            check_mask(reader, mask.rule, mask.what)


def check_masks(pairs, rule, mask_band=None, coarse_rule=None):
    """:func:`check_mask` on every mask of ``pairs``' fine images (and, given ``coarse_rule``, of their coarse
    images), before any work."""
    for pair in pairs:
        if getattr(pair, "fine", ""):
            check_cloud_sources(clouds_of(pair, rule, mask_band))
        if coarse_rule is not None and getattr(pair, "coarse", ""):
            check_cloud_sources(coarse_clouds_of(pair, coarse_rule))


def _escape(text):
    return str(text).replace("{", "{{").replace("}", "}}")


def check_mask(reader, rule, what):
    """Refuse a mask band that ``rule`` would read as cloud nearly everywhere because it is a quality or class band
    read as "non-zero is cloud" (a cheap sample, :meth:`~model_core.raster.RasterReader.sample`)."""
    if not rule.reads_nonzero:
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
        "class band (Landsat's QA_PIXEL holds 21824 for clear land, Sentinel-2's SCL 4 for vegetation, MODIS's "
        "state_1km 8 or more), not a 0/1 cloud mask. "
        f"Say how to read it with {{{rule.option}}}: one of "
        f"{', '.join(name for name in PRESETS if name != 'nonzero')}, or bits:N,..., values:N,... or field:L-H=N,....",
        rule.option,
    )
