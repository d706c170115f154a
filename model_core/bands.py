"""Band names: what a model's bands are, which raster bands hold them, and a model cut down to them.

A CTSTFM model file names its bands (``blue, green, red, nir, swir1, swir2`` for the embedded
model). A user's image may hold fewer of them, in another order, named in its band descriptions
or by a ``BANDS`` string such as ``green,red,nir``. This module

* turns a band name into a *canonical* one (:func:`canonical_band`): the names themselves, the
  usual short forms (``B``/``G``/``R``/``NIR``/``SWIR1``/``SWIR2``, ``near infrared`` ...), and
  sensor band numbers written with their sensor (``tm:3``, ``etm4``, ``oli:B5``, ``L8_SR_B6``,
  ``s2:B8A``, ``modis2``; Sentinel-2's zero-padded ``B02`` .. ``B12`` need no sensor). A bare
  number such as ``B4`` is red on Landsat 8/9 and Sentinel-2 but NIR on Landsat 4-7, so it is
  refused as ambiguous unless a ``sensor`` is given. Case, spaces, ``_``, ``-`` and ``:`` do not
  matter.
* matches a model's bands to the bands of a fine and a coarse raster (:func:`match_bands`);
* cuts a model down to a subset or re-ordering of its bands without retraining
  (:func:`select_model_bands`, built on :meth:`model_core.network.CTSTFM.select_bands`).

No torch or GDAL is imported at module level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import CtstfmError, OptionError

#: Canonical names of the bands CTSTFM models are usually trained on (the simulator's order).
MODEL_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")

#: Other bands sensors have: recognised so that they can be skipped by name, never matched to a model band.
OTHER_BANDS = ("coastal", "rededge1", "rededge2", "rededge3", "nir1240", "watervapour", "cirrus", "thermal", "pan")

_ALIASES = {
    "blue": ("blue", "b", "bl", "blu"),
    "green": ("green", "g", "gr", "grn"),
    "red": ("red", "r"),
    "nir": ("nir", "n", "nearinfrared", "nearir", "infrared", "nir08", "nirnarrow", "vnir"),
    "swir1": ("swir1", "swir16", "swir", "shortwaveinfrared1", "mir", "mir1"),
    "swir2": ("swir2", "swir22", "shortwaveinfrared2", "mir2"),
    "coastal": ("coastal", "coastalaerosol", "aerosol", "ultrablue", "ca"),
    "rededge1": ("rededge1", "re1", "vre1"),
    "rededge2": ("rededge2", "re2", "vre2"),
    "rededge3": ("rededge3", "re3", "vre3"),
    "thermal": ("thermal", "tir", "tir1", "tir2", "lwir", "st", "bt"),
    "pan": ("pan", "panchromatic"),
    "cirrus": ("cirrus",),
    "watervapour": ("watervapour", "watervapor", "wv"),
}
_ALIAS_TO_NAME = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}

_TM = {"1": "blue", "2": "green", "3": "red", "4": "nir", "5": "swir1", "6": "thermal", "7": "swir2", "8": "pan"}
_OLI = {
    "1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "nir", "6": "swir1", "7": "swir2", "8": "pan",
    "9": "cirrus", "10": "thermal", "11": "thermal",
}
_S2 = {
    "1": "coastal", "2": "blue", "3": "green", "4": "red", "5": "rededge1", "6": "rededge2", "7": "rededge3",
    "8": "nir", "8a": "nir", "9": "watervapour", "10": "cirrus", "11": "swir1", "12": "swir2",
}
_MODIS = {"1": "red", "2": "nir", "3": "blue", "4": "green", "5": "nir1240", "6": "swir1", "7": "swir2"}

#: Sensor prefixes (compact, lower case) and their band-number tables.
SENSORS = {
    "tm": _TM, "etm": _TM, "etm+": _TM, "l4": _TM, "l5": _TM, "l7": _TM, "lt4": _TM, "lt5": _TM, "le7": _TM,
    "landsat4": _TM, "landsat5": _TM, "landsat7": _TM,
    "oli": _OLI, "l8": _OLI, "l9": _OLI, "lc8": _OLI, "lc9": _OLI, "lc08": _OLI, "lc09": _OLI,
    "landsat8": _OLI, "landsat9": _OLI,
    "s2": _S2, "msi": _S2, "sentinel2": _S2, "s2a": _S2, "s2b": _S2,
    "modis": _MODIS, "mod09": _MODIS, "myd09": _MODIS, "mcd43": _MODIS,
    "surrefl": _MODIS,  # MOD09's own names: sur_refl_b01 ... sur_refl_b07
}
_SENSOR_PREFIXES = sorted(SENSORS, key=len, reverse=True)
_NUMBER = re.compile(r"^(?:sr)?(?:band|b)?0*(\d{1,2}a?)$")
_S2_PADDED = re.compile(r"^b(0[1-9]|1[0-2]|8a)$")
_WAVELENGTH = re.compile(r"(\d{3,4}(?:\.\d+)?)\s*nm|(\d\.\d+)\s*(?:um|µm|micron)", re.IGNORECASE)

#: Central-wavelength ranges (nm) of the canonical bands, for descriptions such as "B4 (665 nm)".
_WAVELENGTH_RANGES = (
    (400, 450, "coastal"), (450, 520, "blue"), (520, 600, "green"), (620, 690, "red"), (690, 760, "rededge1"),
    (760, 900, "nir"), (1550, 1750, "swir1"), (2050, 2350, "swir2"),
)

#: Typical surface reflectance of vegetated land per band (rounded means of Landsat-like scenes).
#: A model cut down to fewer bands sees these constants in place of the bands it no longer gets,
#: unless its file records the mean of its own training data (``provenance["band_means"]``).
TYPICAL_REFLECTANCE = {"blue": 0.05, "green": 0.08, "red": 0.09, "nir": 0.26, "swir1": 0.23, "swir2": 0.16}

HOW_TO_NAME = (
    "use names such as blue, green, red, nir, swir1, swir2 (or B, G, R, NIR, SWIR1, SWIR2), or sensor band "
    "numbers with their sensor: tm:3, oli:B4, s2:B8A, modis:2"
)


class BandNameError(CtstfmError, ValueError):
    """A band name that is unknown or ambiguous; the message says how to write it."""


def _compact(name) -> str:
    return re.sub(r"[\s_\-:./]+", "", str(name).strip().lower())


def _sensor_band(compact, table, original):
    match = _NUMBER.match(compact)
    if not match:
        return None
    number = match.group(1)
    if number not in table:
        raise BandNameError(f"The sensor named in band '{original}' has no band {number.upper()}.")
    return table[number]


def canonical_band(name, sensor=None) -> str:
    """The canonical name of band ``name`` (``"red"``, ``"nir"``, ...); raises :class:`BandNameError`.

    ``sensor`` (e.g. ``"oli"``, ``"tm"``, ``"s2"``) resolves bare band numbers such as ``B4``.
    """
    compact = _compact(name)
    if not compact:
        raise BandNameError(f"An empty band name was given; {HOW_TO_NAME}.")
    if compact in _ALIAS_TO_NAME:
        return _ALIAS_TO_NAME[compact]
    for prefix in _SENSOR_PREFIXES:
        if compact.startswith(prefix) and len(compact) > len(prefix):
            found = _sensor_band(compact[len(prefix):], SENSORS[prefix], name)
            if found:
                return found
    if _S2_PADDED.match(compact) and (compact[1] == "0" or compact in ("b8a", "b12")):
        return _S2[compact[1:].lstrip("0")]  # Sentinel-2's own spelling: B02 .. B09, B8A; B12 is S2 only
    if _NUMBER.match(compact):
        if sensor:
            table = SENSORS.get(_compact(sensor))
            if table is None:
                raise BandNameError(f"Unknown sensor '{sensor}'; use one of tm, etm, oli, s2, modis.")
            return _sensor_band(compact, table, name)
        number = _NUMBER.match(compact).group(1)
        meanings = sorted({f"{table.get(number)} on {label}" for label, table in
                           (("Landsat 4-7 TM/ETM+", _TM), ("Landsat 8/9 OLI", _OLI), ("Sentinel-2", _S2),
                            ("MODIS", _MODIS)) if table.get(number)})
        raise BandNameError(
            f"Band '{name}' is ambiguous ({'; '.join(meanings) or 'no known sensor has it'}); write it with its "
            f"sensor (e.g. oli:B{number.upper()}, tm:B{number.upper()}, s2:B{number.upper()}) or by name "
            f"(blue, green, red, nir, swir1, swir2)."
        )
    raise BandNameError(f"'{name}' is not a band name known here; {HOW_TO_NAME}.")


def band_from_description(text, sensor=None):
    """The canonical band a raster band description names, or ``None`` when it names none clearly.

    Tries the whole description, then a central wavelength in it ("... 665 nm"), then its words
    one by one; an ambiguous or unknown description gives ``None`` (never an error).
    """
    text = str(text or "").strip()
    if not text:
        return None
    try:
        return canonical_band(text, sensor)
    except BandNameError:
        pass
    match = _WAVELENGTH.search(text)
    if match:
        nm = float(match.group(1)) if match.group(1) else 1000.0 * float(match.group(2))
        for low, high, name in _WAVELENGTH_RANGES:
            if low <= nm < high:
                return name
    found = set()
    for word in re.split(r"[\s,;()\[\]]+", text):
        try:
            found.add(canonical_band(word, sensor))
        except BandNameError:
            continue
    return found.pop() if len(found) == 1 else None


def parse_band_names(spec, sensor=None):
    """A ``BANDS`` string (``"green,red,nir"``) or sequence as a list of canonical names (no duplicates)."""
    if isinstance(spec, str):
        parts = [part.strip() for part in re.split(r"[,;]", spec) if part.strip()]
    else:
        parts = [str(part).strip() for part in spec]
    if not parts:
        raise BandNameError(f"No band names were given; {HOW_TO_NAME}.")
    names = [canonical_band(part, sensor) for part in parts]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise BandNameError(f"The band list '{spec}' names {', '.join(twice)} more than once; name each band once.")
    return names


def model_band_keys(band_names):
    """The model's band names as matching keys: canonical where the name is known, else the name itself."""
    keys = []
    for name in band_names:
        try:
            keys.append(canonical_band(name))
        except BandNameError:
            keys.append(_compact(name))
    return keys


# --------------------------------------------------------------------------- matching rasters to a model


@dataclass(frozen=True)
class BandMatch:
    """Which raster bands feed which model bands.

    ``fine_bands`` / ``coarse_bands``: 1-based raster band numbers, in the order used;
    ``model_indices``: the 0-based model band each one feeds; ``names``: the model's names of those
    bands; ``source``: how the match was made (for the log).
    """

    fine_bands: tuple
    coarse_bands: tuple
    model_indices: tuple
    names: tuple
    source: str
    skipped: tuple = ()
    subset_of: int = 0  # the model's band count when the match is a subset or re-ordering of it, else 0

    def describe(self) -> str:
        pairs = ", ".join(f"{name} = fine band {f} / coarse band {c}"
                          for name, f, c in zip(self.names, self.fine_bands, self.coarse_bands))
        text = f"Bands matched by {self.source}: {pairs}."
        if self.subset_of:
            text += f" The {self.subset_of}-band model is specialised to these {len(self.names)} bands, in this order."
        if self.skipped:
            text += f" Not used: {'; '.join(self.skipped)}."
        return text


def _model_error(model_names, problem):
    return BandNameError(f"{problem}; the model's bands are {', '.join(model_names)}.")


def _band_numbers(spec, count, what):
    from .raster import parse_band_list

    return parse_band_list(spec, count, what=what)


def _fine_by_names(names, model_keys, model_names, fine_bands, fine_info):
    """Fine band numbers and model indices for a ``BANDS`` list."""
    missing = [name for name in names if name not in model_keys]
    if missing:
        raise _model_error(model_names, f"The model has no {', '.join(missing)} band")
    if fine_bands:
        numbers = _band_numbers(fine_bands, fine_info.count, "fine image")
        if len(numbers) != len(names):
            raise BandNameError(
                f"{len(numbers)} fine band number(s) but {len(names)} band name(s) were given; give one name per "
                "chosen fine band."
            )
    else:
        if fine_info.count < len(names):
            raise BandNameError(
                f"{len(names)} band names were given but the fine image has only {fine_info.count} band(s); name "
                "only the bands it has, in its order."
            )
        numbers = list(range(1, len(names) + 1))
    return numbers, [model_keys.index(name) for name in names]


def _fine_by_descriptions(model_keys, fine_bands, fine_info, sensor):
    """Fine band numbers, model indices and skipped bands from the band descriptions, or None."""
    candidates = _band_numbers(fine_bands, fine_info.count, "fine image") if fine_bands else \
        list(range(1, fine_info.count + 1))
    named = [(b, band_from_description(fine_info.descriptions[b - 1], sensor)) for b in candidates]
    if not any(name in model_keys for _, name in named):
        return None
    numbers, indices, skipped = [], [], []
    for number, name in named:
        label = f"band {number} ('{fine_info.descriptions[number - 1]}')"
        if name is None:
            skipped.append(f"{label}, not a band name known here")
        elif name not in model_keys:
            skipped.append(f"{label} = {name}, not a band of the model")
        elif model_keys.index(name) in indices:
            skipped.append(f"{label} = {name} again")
        else:
            numbers.append(number)
            indices.append(model_keys.index(name))
    if fine_bands and skipped:
        raise BandNameError(
            f"The chosen fine bands cannot all be matched to the model by their descriptions ({'; '.join(skipped)}); "
            "name them with BANDS."
        )
    return numbers, indices, skipped


def _coarse_numbers(coarse_bands, coarse_info, fine_info, fine_numbers, names, sensor):
    """Coarse band numbers for the chosen fine bands (given; by description; the same numbers; else an error)."""
    from .raster import parse_band_list

    if coarse_bands:
        return parse_band_list(coarse_bands, coarse_info.count, len(fine_numbers), "coarse image", list(names))
    described = [band_from_description(text, sensor) for text in coarse_info.descriptions]
    if all(name in described for name in names):
        return [described.index(name) + 1 for name in names]
    if coarse_info.count == fine_info.count:
        return list(fine_numbers)
    # Other band counts and no names: the first bands would be a guess (MODIS's bands 1-7 stacked in order hold
    # red, NIR, blue, green, ...), and a wrong guess fuses without a word.
    modis = [number for number, name in sorted(_MODIS.items(), key=lambda item: int(item[0])) if name in names]
    example = ",".join(str(int(n)) for n in sorted(modis, key=lambda n: list(names).index(_MODIS[n]))) \
        if len(modis) == len(names) else ""
    raise OptionError(
        f"The coarse image has {coarse_info.count} bands without names and the fine image's bands in use are "
        f"{', '.join(names)}: say which coarse bands hold them, in that order, with {{coarse_bands}}"
        + (f" (for MODIS surface reflectance bands 1-7 stacked in order: {example})" if example else "")
        + ", or name the coarse image's bands in its band descriptions.",
        "coarse_bands",
    )


def match_bands(model_names, fine_info, coarse_info, *, bands=None, fine_bands=None, coarse_bands=None,
                sensor=None) -> BandMatch:
    """Match a model's bands (``model_names``) to a fine and a coarse raster (:class:`RasterInfo`).

    In order of precedence: ``bands`` (a ``BANDS`` string naming the fine image's bands in use:
    those in ``fine_bands``, else its first bands); the fine image's band descriptions (bands named
    but not in the model are skipped and listed); else the fine bands ``fine_bands`` (default the
    first) in the model's order, as before band names existed. Coarse bands: ``coarse_bands``, else
    the coarse image's own descriptions, else the fine band numbers when both images have as many
    bands; else an :class:`~model_core.errors.OptionError` asking for ``coarse_bands``. Raises
    :class:`BandNameError` naming the model's bands.
    """
    model_names = list(model_names)
    model_keys = model_band_keys(model_names)
    skipped = ()
    if bands is not None and str(bands).strip():
        names = parse_band_names(bands, sensor)
        numbers, indices = _fine_by_names(names, model_keys, model_names, fine_bands, fine_info)
        source = f"the band list '{bands}'"
    else:
        found = _fine_by_descriptions(model_keys, fine_bands, fine_info, sensor)
        if found is not None:
            numbers, indices, skipped = found
            source = "the fine image's band descriptions"
        else:
            if not fine_bands and fine_info.count < len(model_names):
                raise _model_error(
                    model_names,
                    f"The fine image has {fine_info.count} band(s) without names known here, and the model needs "
                    f"{len(model_names)} in its order; name the image's bands with BANDS (e.g. "
                    f"{','.join(model_names[:fine_info.count])}) or in its band descriptions",
                )
            from .raster import parse_band_list

            numbers = parse_band_list(fine_bands, fine_info.count, len(model_names), "fine image", model_names)
            indices = list(range(len(model_names)))
            source = "band order (the model's order)"
    names = tuple(model_names[i] for i in indices)
    coarse = _coarse_numbers(coarse_bands, coarse_info, fine_info, numbers, [model_keys[i] for i in indices], sensor)
    whole = list(indices) == list(range(len(model_names)))
    return BandMatch(tuple(numbers), tuple(coarse), tuple(indices), names, source, tuple(skipped),
                     0 if whole else len(model_names))


# --------------------------------------------------------------------------- a model cut down to some bands


def band_fill(loaded):
    """Per model band, the reflectance a cut-down model assumes for a band it no longer gets: the
    mean of its training data when the file records it (``provenance["band_means"]``), else
    :data:`TYPICAL_REFLECTANCE` (0 for a band without a known name)."""
    means = (loaded.provenance or {}).get("band_means") if isinstance(loaded.provenance, dict) else None
    if isinstance(means, list) and len(means) == len(loaded.band_names) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in means
    ):
        return [float(v) for v in means]
    return [TYPICAL_REFLECTANCE.get(key, 0.0) for key in model_band_keys(loaded.band_names)]


def select_model_bands(loaded, indices):
    """A :class:`~model_core.model_file.LoadedModel` cut down to the model bands ``indices`` (0-based,
    in the order wanted), without retraining; the loaded model itself is returned when nothing changes.

    Every weight that touches bands is sliced (:meth:`~model_core.network.CTSTFM.select_bands`), and
    the bands left out are assumed to hold :func:`band_fill` (the embedded model on the sample's
    green, red and NIR: MAE 0.0149 with typical reflectance, 0.0160 with zeros; 0.0144 for the
    full 6-band model on those bands, 0.0179 for no change). Training
    uses this to fine-tune a model on an image with fewer bands (``INIT_MODEL``).
    """
    from dataclasses import replace

    indices = [int(i) for i in indices]
    if indices == list(range(loaded.config.bands)):
        return loaded
    model = loaded.model.select_bands(indices, fill=band_fill(loaded))
    return replace(loaded, model=model, config=model.config, band_names=[loaded.band_names[i] for i in indices])


def select_bands_by_name(loaded, names, sensor=None):
    """:func:`select_model_bands` for band names (``"green,red,nir"`` or a list), as training needs them."""
    wanted = parse_band_names(names, sensor)
    keys = model_band_keys(loaded.band_names)
    missing = [name for name in wanted if name not in keys]
    if missing:
        raise _model_error(loaded.band_names, f"The model has no {', '.join(missing)} band")
    return select_model_bands(loaded, [keys.index(name) for name in wanted])


def model_for_rasters(loaded, fine_info, coarse_info, *, bands=None, fine_bands=None, coarse_bands=None,
                      sensor=None):
    """``(model, match)``: the loaded model cut down to the bands :func:`match_bands` finds in a fine
    and a coarse raster (:class:`~model_core.raster.RasterInfo`), and that :class:`BandMatch`. The one
    rule fusion and fine-tuning (``INIT_MODEL`` on a series) share."""
    match = match_bands(loaded.band_names, fine_info, coarse_info, bands=bands, fine_bands=fine_bands,
                        coarse_bands=coarse_bands, sensor=sensor)
    return select_model_bands(loaded, match.model_indices), match
