"""Classical fusion methods on rasters: temporal difference and STARFM.

The raster-level faces of :mod:`model_core.classical`, with exactly the reading,
tiling, writing, progress, cancel, nodata and bad-input behaviour of
:func:`model_core.fusion.fuse`: the fine image at T0 gives the output grid, the
two coarse images (T0 and T1) are put on it by the same
:class:`~model_core.raster.PairReader` / :class:`~model_core.raster.RasterReader`
code, the tiles run through :func:`~model_core.tiling.run_tiled` and the result
is written by :class:`~model_core.raster.RasterWriter` (temporary file renamed at
the end; nothing left behind on error or cancel).

* :func:`temporal_difference_rasters`: ``F1 = F0 + (C1 - C0)`` pixel by pixel
  (plain numpy, no torch: the same formula as
  :func:`model_core.classical.temporal_difference`).
* :func:`starfm_rasters`: :func:`model_core.classical.starfm` on tiles read with an
  overlap of at least ``2 * starfm_halo(window)`` (the halo is cut, not
  blended, so tiles are seamless) and with the per-band standard deviation of the
  whole fine image at T0 (one block pass before the tiles), so the result does
  not depend on the tiling.

Pixels invalid in any of the three inputs (nodata, or cloud in its optional
cloud mask, :mod:`model_core.cloud_masks`) are nodata in the output; predictions
are reflectance, negatives clipped to 0 as everywhere in the project.
"""

import numpy as np

from .cloud_masks import ImageClouds, check_cloud_sources, clouds_text
from .device import device_note, resolve_device
from .errors import CtstfmError
from .progress import Progress
from .raster import (
    DEFAULT_RESAMPLING,
    PairReader,
    RasterInfo,
    RasterReader,
    Window,
    check_overlap,
    output_spec,
    parse_band_list,
)
from .raster_job import JobOutput, RasterJob, check_output_options, output_metadata
from .scales import ScaledImage, check_scale_value, check_scales
from .tiling import DEFAULT_TILE, check_tile_size

# The STARFM defaults of model_core.classical, repeated here so that this module
# (and the temporal difference) can be imported without torch.
DEFAULT_WINDOW = 31
DEFAULT_CLASSES = 40
DEFAULT_FINE_UNCERTAINTY = 0.002
DEFAULT_COARSE_UNCERTAINTY = 0.002

#: Values per working buffer of STARFM on the CPU: buffers that stay in the CPU's cache
#: (about 128 KB) run about ten times faster than classical.starfm's default of a
#: million values (measured on 256 x 256 x 6 tiles, window 31).
CPU_STRIP_VALUES = 1 << 15

FINE_WHAT = "fine image at T0"
COARSE_T0_WHAT = "coarse image at T0"
COARSE_T1_WHAT = "coarse image at T1"


class SeriesReader:
    """The fine image at T0 and the coarse images at T0 and T1 on the fine grid.

    Built on :class:`~model_core.raster.PairReader` (fine T0 + coarse T0: band
    lists, overlap and warping exactly as fusion) plus a
    :class:`~model_core.raster.RasterReader` for the coarse image at T1 on the same
    grid. ``read(window)`` returns ``(f0, c0, c1, valid)``: reflectance
    ``float32 (C, h, w)`` (``DN * scale``, negatives clipped to 0) and the mask of
    pixels valid in all three; invalid pixels are NaN in all three arrays.
    ``clouds``: the three images' :class:`~model_core.cloud_masks.ImageClouds`;
    cloudy pixels are invalid.
    """

    def __init__(self, fine_path, coarse_t0_path, coarse_t1_path, *, fine_bands=None, coarse_bands=None,
                 scale=1e-4, coarse_scale=None, resampling=DEFAULT_RESAMPLING, clouds=None):
        clouds = clouds or ImageClouds([], [], [])
        fine_info = RasterInfo.read(fine_path, FINE_WHAT)
        c0_info = RasterInfo.read(coarse_t0_path, COARSE_T0_WHAT)
        c1_info = RasterInfo.read(coarse_t1_path, COARSE_T1_WHAT)
        fine_list = parse_band_list(fine_bands, fine_info.count, what=FINE_WHAT)
        coarse_lists = []
        for info, what in ((c0_info, COARSE_T0_WHAT), (c1_info, COARSE_T1_WHAT)):
            empty = coarse_bands is None or str(coarse_bands).strip() in ("", "[]", "()")
            if empty and info.count < len(fine_list):
                raise CtstfmError(
                    f"The {what} '{info.path}' has {info.count} band(s) but {len(fine_list)} fine band(s) are "
                    "used; choose the same bands, in the same order, in the fine and the coarse images."
                )
            chosen = parse_band_list(coarse_bands, info.count, None if not empty else len(fine_list), what)
            if len(chosen) != len(fine_list):
                raise CtstfmError(
                    f"{len(fine_list)} band(s) are used in the fine image and {len(chosen)} in the {what}; "
                    "choose the same bands, in the same order, in the fine and the coarse images."
                )
            coarse_lists.append(chosen)
        check_overlap(fine_info, c1_info, FINE_WHAT, COARSE_T1_WHAT)
        self.scale = float(scale)
        self.coarse_scale = float(coarse_scale if coarse_scale is not None else scale)
        self.pair = PairReader(
            fine_path, coarse_t0_path, fine_bands=fine_list, coarse_bands=coarse_lists[0], scale=self.scale,
            coarse_scale=self.coarse_scale, resampling=resampling, fine_what=FINE_WHAT, coarse_what=COARSE_T0_WHAT,
            fine_clouds=clouds.fine, coarse_clouds=clouds.coarse_t0,
        )
        try:
            self.coarse_t1 = RasterReader(
                coarse_t1_path, coarse_lists[1], grid=self.grid, resampling=resampling, what=COARSE_T1_WHAT,
                clouds=clouds.coarse_t1,
            )
        except BaseException:
            self.pair.close()
            raise

    @property
    def fine(self):
        return self.pair.fine

    @property
    def coarse_t0(self):
        return self.pair.coarse

    @property
    def grid(self):
        return self.pair.grid

    @property
    def count(self):
        return self.pair.count

    @property
    def warped(self):
        return self.coarse_t0.warped or self.coarse_t1.warped

    def check_scales(self, coarse_option="coarse_scale"):
        """The value-range check of :func:`model_core.scales.check_scales` on the three inputs."""
        check_scales(
            ScaledImage(FINE_WHAT, self.fine, self.scale, "scale"),
            [ScaledImage(what, reader, self.coarse_scale, coarse_option)
             for what, reader in ((COARSE_T0_WHAT, self.coarse_t0), (COARSE_T1_WHAT, self.coarse_t1))],
        )

    def check_coverage(self, max_size=256):
        self.pair.check_coverage(max_size)
        if self.coarse_t1.valid_fraction(max_size) == 0.0:
            raise CtstfmError(
                f"The {COARSE_T1_WHAT} '{self.coarse_t1.source_info.path}' has no valid pixels over the extent "
                f"of the {FINE_WHAT}; give a coarse image that covers it with data."
            )

    def read(self, window):
        f0, f0_ok = self.fine.read_reflectance(window, self.scale)
        c0, c0_ok = self.coarse_t0.read_reflectance(window, self.coarse_scale)
        c1, c1_ok = self.coarse_t1.read_reflectance(window, self.coarse_scale)
        valid = f0_ok & c0_ok & c1_ok
        if not valid.all():
            for data in (f0, c0, c1):
                data[:, ~valid] = np.nan
        return f0, c0, c1, valid

    def close(self):
        self.pair.close()
        self.coarse_t1.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def fine_band_std(reader, scale, progress=None, max_pixels=1 << 21):
    """Per-band population std (float64, reflectance) of the valid pixels of a whole
    raster, in one pass of full-width row blocks (means and co-moments merged
    pairwise, so no cancellation); ``progress.check()`` between blocks."""
    progress = progress or Progress()
    grid = reader.grid
    rows = max(1, min(grid.height, int(max_pixels) // max(grid.width, 1)))
    n = 0
    mean = np.zeros(reader.count)
    m2 = np.zeros(reader.count)
    for row in range(0, grid.height, rows):
        progress.check()
        height = min(rows, grid.height - row)
        data, valid = reader.read_reflectance(Window(0, row, grid.width, height), scale)
        values = data[:, valid].astype(np.float64)
        nb = values.shape[1]
        if nb:
            mb = values.mean(axis=1)
            m2b = ((values - mb[:, None]) ** 2).sum(axis=1)
            total = n + nb
            delta = mb - mean
            m2 += m2b + delta * delta * (n * nb / total)
            mean += delta * (nb / total)
            n = total
        progress.update(min(1.0, (row + height) / grid.height))
    return np.sqrt(m2 / max(n, 1))


def _check_common(tile, overlap, resampling, output_type, output_format, scale, coarse_scale):
    check_output_options(tile, overlap, resampling, output_type, output_format)
    check_scale_value(scale, "scale")
    check_scale_value(coarse_scale, "coarse_scale")


def _run(method, product, fine_path, coarse_t0_path, coarse_t1_path, out_path, make_process, *, tile, overlap, halo,
         fine_bands, coarse_bands, scale, coarse_scale, resampling, output_type, output_format, metadata, device,
         progress, batch_size=1, clouds=None):
    """What is particular to the classical methods in a raster job: the three-image reader (with ``clouds``, an
    :class:`~model_core.cloud_masks.ImageClouds`), the per-tile function (``make_process(series, progress)``) and
    the output's metadata."""
    clouds = clouds or ImageClouds([], [], [])
    every_mask = clouds.every
    inputs = {FINE_WHAT: fine_path, COARSE_T0_WHAT: coarse_t0_path, COARSE_T1_WHAT: coarse_t1_path,
              **{mask.what: mask.path for mask in every_mask}}
    job = RasterJob(method, out_path, inputs, progress=progress)
    with job.open(
        SeriesReader, fine_path, coarse_t0_path, coarse_t1_path, fine_bands=fine_bands, coarse_bands=coarse_bands,
        scale=scale, coarse_scale=coarse_scale, resampling=resampling, clouds=clouds,
    ) as series:
        series.check_scales()
        check_cloud_sources(every_mask)
        grid = series.grid
        if series.warped:
            progress.info(f"Coarse images resampled onto the fine grid ({resampling}), window by window.")
        spec = output_spec(grid, output_type, series.scale)
        process = make_process(series, progress.sub(0.0, 0.05))
        meta = output_metadata(
            product,
            {"CTSTFM_FINE_T0": fine_path, "CTSTFM_COARSE_T0": coarse_t0_path, "CTSTFM_COARSE_T1": coarse_t1_path},
            fine_bands=series.fine.bands, coarse_bands=series.coarse_t0.bands, resampling=resampling,
            warped=series.warped, tile=tile, overlap=overlap, output_type=output_type, spec=spec,
            extra={"CTSTFM_METHOD": method, **metadata,
                   **({"CTSTFM_CLOUDS": clouds_text(every_mask)} if every_mask else {})},
        )
        progress.info(
            f"{method}: {grid.width} x {grid.height} px, {series.count} band(s), tiles of "
            f"{min(int(tile), grid.width)} x {min(int(tile), grid.height)} px, overlap {overlap}."
        )
        descriptions = [grid.descriptions[b - 1] for b in series.fine.bands]
        output = JobOutput(process, spec, series.count, descriptions, meta, batch_size=batch_size, halo=halo)
        return job.run(series, output, tile=tile, overlap=overlap, output_format=output_format, device=device,
                       progress_from=0.05)


def temporal_difference_rasters(
    fine_t0,
    coarse_t0,
    coarse_t1,
    out_path,
    *,
    tile=DEFAULT_TILE,
    overlap=0,
    fine_bands=None,
    coarse_bands=None,
    scale=1e-4,
    coarse_scale=None,
    resampling=DEFAULT_RESAMPLING,
    output_type="input",
    output_format="GTiff",
    fine_mask=None,
    coarse_t0_mask=None,
    coarse_t1_mask=None,
    mask_rule="nonzero",
    coarse_mask_rule="nonzero",
    progress=None,
):
    """Temporal-difference fusion of rasters: ``F1 = F0 + (C1 - C0)``, on the fine grid.

    ``fine_t0``: fine image at T0 (its grid, data type and nodata are the
    output's). ``coarse_t0`` / ``coarse_t1``: coarse images at T0 and T1 in any
    CRS, put on the fine grid with ``resampling``. ``fine_bands`` /
    ``coarse_bands``: 1-based band lists in the same order (default: all fine
    bands and the first as many coarse bands). ``scale``: reflectance per DN
    (``coarse_scale`` for the coarse images when it differs; 1 for float
    reflectance). ``tile`` / ``overlap`` as for :func:`model_core.fusion.fuse` (the
    method is pointwise: the overlap only costs time). ``output_type``:
    ``"input"`` or ``"float32"`` (reflectance). ``fine_mask`` / ``coarse_t0_mask`` /
    ``coarse_t1_mask``: cloud masks of the three images (any grid), read by ``mask_rule`` (the fine one) and
    ``coarse_mask_rule`` (:class:`~model_core.cloud_masks.CloudRule`); cloudy pixels are nodata in the output.
    Returns a :class:`~model_core.raster_job.RasterResult`.
    """
    progress = progress or Progress()
    _check_common(tile, overlap, resampling, output_type, output_format, scale, coarse_scale)
    clouds = ImageClouds.of(fine_t0, fine_mask, coarse_t0_mask, coarse_t1_mask, mask_rule, coarse_mask_rule)

    def make_process(series, _progress):
        def process(batch):
            f0, c0, c1 = batch
            # The formula of model_core.classical.temporal_difference, in numpy.
            return np.maximum(f0 + (c1 - c0), 0.0)

        return process

    return _run(
        "temporal difference", "temporal-difference fused fine image at T1 (F0 + C1 - C0)",
        fine_t0, coarse_t0, coarse_t1, out_path, make_process,
        tile=tile, overlap=overlap, halo=0, fine_bands=fine_bands, coarse_bands=coarse_bands, scale=scale,
        coarse_scale=coarse_scale, resampling=resampling, output_type=output_type, output_format=output_format,
        metadata={}, device="cpu", progress=progress, clouds=clouds,
    )


def starfm_overlap(window=DEFAULT_WINDOW):
    """The smallest tile overlap STARFM needs for seamless tiles: twice its halo, ``window - 1``."""
    return 2 * (int(window) // 2)


def _check_starfm(window, classes, fine_uncertainty, coarse_uncertainty, tile, overlap):
    """STARFM's own parameter checks; returns ``(window, overlap)`` as integers (the overlap
    defaults to :func:`starfm_overlap`)."""
    try:
        window = int(window)
    except (TypeError, ValueError):
        raise CtstfmError(f"The STARFM window must be an odd number of pixels (got {window!r}).") from None
    if window < 1 or window % 2 == 0:
        raise CtstfmError(f"The STARFM window must be an odd number of pixels, such as 31 (got {window}).")
    if not classes or float(classes) <= 0:
        raise CtstfmError(f"The number of STARFM classes must be positive, such as 40 (got {classes}).")
    for value, what in ((fine_uncertainty, "fine"), (coarse_uncertainty, "coarse")):
        if value is None or not float(value) >= 0:
            raise CtstfmError(f"The {what} uncertainty must be zero or more, in reflectance (got {value}).")
    check_tile_size(tile)
    needed = starfm_overlap(window)
    overlap = needed if overlap is None else int(overlap)
    if overlap < needed:
        raise CtstfmError(
            f"STARFM with a {window}-pixel window needs a tile overlap of at least {needed} pixels (twice the "
            f"half-window) so that tiles join without seams; use an overlap of {needed} or more."
        )
    if int(tile) <= 2 * overlap:
        raise CtstfmError(
            f"The tile size ({tile}) must be more than twice the overlap ({overlap}); use tiles of at least "
            f"{2 * overlap + 1} pixels, or a smaller window."
        )
    return window, overlap


class StarfmTiles:
    """The per-tile STARFM call the raster job runs: ``(f0, c0, c1)`` numpy batches in,
    reflectance out (negatives clipped to 0; NaN where the centre is invalid, so nodata)."""

    def __init__(self, device, band_std, *, window, classes, fine_uncertainty, coarse_uncertainty):
        import torch

        self.torch = torch
        self.device = device
        self.band_std = torch.as_tensor(band_std, dtype=torch.float32, device=device)
        self.options = dict(window=window, classes=classes, fine_uncertainty=fine_uncertainty,
                            coarse_uncertainty=coarse_uncertainty)

    def __call__(self, batch):
        from .classical import starfm

        f0, c0, c1 = (self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in batch)
        rows_per_strip = None
        if self.device.type == "cpu":
            b, c, _, w = f0.shape
            rows_per_strip = max(1, CPU_STRIP_VALUES // (b * c * (w + 2 * (self.options["window"] // 2))))
        out = starfm(f0, c0, c1, band_std=self.band_std, rows_per_strip=rows_per_strip, **self.options)
        return np.maximum(out.float().cpu().numpy(), 0.0)


def starfm_rasters(
    fine_t0,
    coarse_t0,
    coarse_t1,
    out_path,
    *,
    window=DEFAULT_WINDOW,
    classes=DEFAULT_CLASSES,
    fine_uncertainty=DEFAULT_FINE_UNCERTAINTY,
    coarse_uncertainty=DEFAULT_COARSE_UNCERTAINTY,
    tile=DEFAULT_TILE,
    overlap=None,
    device="auto",
    batch_size=1,
    fine_bands=None,
    coarse_bands=None,
    scale=1e-4,
    coarse_scale=None,
    resampling=DEFAULT_RESAMPLING,
    output_type="input",
    output_format="GTiff",
    band_std=None,
    fine_mask=None,
    coarse_t0_mask=None,
    coarse_t1_mask=None,
    mask_rule="nonzero",
    coarse_mask_rule="nonzero",
    progress=None,
):
    """STARFM fusion of rasters (Gao et al. 2006, one input pair), on the fine grid.

    Inputs, bands, scales, resampling, cloud masks and outputs as for
    :func:`temporal_difference_rasters`. ``window``: moving window in fine pixels
    (odd); ``classes``: the number of classes of the similarity tolerance
    (``2 * std / classes``); ``fine_uncertainty`` / ``coarse_uncertainty``: in
    reflectance (see :func:`model_core.classical.starfm`). ``overlap``: at least
    ``window - 1`` (the default): the outer ``window // 2`` pixels of each shared
    tile side are only context, so tiles join without seams. ``band_std``: the
    per-band std of F0 for the tolerance (default: computed over the whole fine
    image at T0, valid pixels, in one pass). ``device``: ``auto``, ``cpu`` or
    ``cuda``. Returns a :class:`~model_core.raster_job.RasterResult`.
    """
    progress = progress or Progress()
    window, overlap = _check_starfm(window, classes, fine_uncertainty, coarse_uncertainty, tile, overlap)
    halo = window // 2
    _check_common(tile, overlap, resampling, output_type, output_format, scale, coarse_scale)
    clouds = ImageClouds.of(fine_t0, fine_mask, coarse_t0_mask, coarse_t1_mask, mask_rule, coarse_mask_rule)
    if batch_size is None or int(batch_size) < 1:
        raise CtstfmError(f"The batch size must be at least 1 (got {batch_size}).")
    torch_device = resolve_device(device)
    if device_note(torch_device):
        progress.info(device_note(torch_device))

    def make_process(series, std_progress):
        std = band_std
        if std is None:
            progress.info("Per-band standard deviation of the fine image at T0 (one pass)...")
            std = fine_band_std(series.fine, series.scale, std_progress)
        std = np.asarray(std, dtype=np.float64).reshape(-1)
        if std.shape != (series.count,):
            raise CtstfmError(f"band_std must hold one value per band ({series.count}), got {std.size}.")
        return StarfmTiles(torch_device, std, window=window, classes=float(classes),
                           fine_uncertainty=float(fine_uncertainty), coarse_uncertainty=float(coarse_uncertainty))

    metadata = {
        "CTSTFM_STARFM_WINDOW": str(window),
        "CTSTFM_STARFM_CLASSES": repr(float(classes)),
        "CTSTFM_STARFM_FINE_UNCERTAINTY": repr(float(fine_uncertainty)),
        "CTSTFM_STARFM_COARSE_UNCERTAINTY": repr(float(coarse_uncertainty)),
        "CTSTFM_DEVICE": str(torch_device),
    }
    return _run(
        "STARFM", "STARFM fused fine image at T1 (Gao et al. 2006)",
        fine_t0, coarse_t0, coarse_t1, out_path, make_process,
        tile=tile, overlap=overlap, halo=halo, fine_bands=fine_bands, coarse_bands=coarse_bands, scale=scale,
        coarse_scale=coarse_scale, resampling=resampling, output_type=output_type, output_format=output_format,
        metadata=metadata, device=torch_device, progress=progress, batch_size=int(batch_size), clouds=clouds,
    )

