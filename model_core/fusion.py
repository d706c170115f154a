"""CTSTFM fusion of a fine/coarse pair into a georeferenced raster.

:func:`fuse` is the whole job: check everything that can be checked before any
work (parameters, output path, device, model file, both rasters, their bands,
overlap and coverage), then read the fine image at T0 and the coarse image at T1
on the fine grid tile by tile (:class:`~model_core.raster.PairReader`), run the
network on batches of tiles (:class:`TileModel`), blend the overlapping tiles
(:func:`~model_core.tiling.run_tiled`) and write the result on the fine grid
(:class:`~model_core.raster.RasterWriter`): the fine input's CRS, geotransform,
size, data type and nodata (or float32 reflectance), with metadata saying how it
was made. Pixels invalid in either input are nodata in the output; NaN is never
written. Memory does not grow with the raster's size.

What is particular to fusion is the model, :class:`TileModel` (the per-tile
network call with mixed precision and out-of-memory retries) and the metadata; the
output checks, reading, tiling, writing and timing are the
:class:`~model_core.raster_job.RasterJob` every raster method runs, and device and
precision come from :mod:`model_core.device`.
"""

import json
import os

import numpy as np

from . import paths
from .device import (
    auto_batch_size,
    autocast,
    device_note,
    empty_device_cache,
    is_out_of_memory,
    mixed_precision_dtype,
    resolve_device,
)
from .errors import CtstfmError
from .progress import Progress
from .raster import DEFAULT_RESAMPLING, PairReader, RasterInfo, output_spec
from .raster_job import JobOutput, RasterJob, check_output_options, output_metadata
from .cloud_masks import ImageClouds, check_cloud_sources, clouds_text
from .scales import ScaledImage, check_scale_value, check_scales
from .options import SIMILAR_WINDOW
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, plan_tiles

#: The similar-pixel filter's tolerance, ``2 * std / SIMILAR_CLASSES`` of each band of the fine image at T0 (FSDAF's
#: and STARFM's rule with FSDAF's five classes; docs/fusion.md, *Similar-pixel filter*).
SIMILAR_CLASSES = 5
#: The filter visits every SIMILAR_STEP-th row and column of its window (and the centre): 225 of a 31 px window's
#: 961 pixels, 4 times faster than all of them for the same accuracy (MAE within 0.6 % on the cases measured).
SIMILAR_STEP = 2


class TileModel:
    """The per-tile network call the tiling engine runs: ``(fine, coarse) -> fine_t1``.

    Takes numpy batches ``(B, C, h, w)`` of reflectance, returns ``float32``
    ``(B, C, h, w)`` on the CPU. On a GPU it runs under ``torch.autocast``
    (:func:`~model_core.device.mixed_precision_dtype`) unless ``mixed_precision`` is
    False; when the GPU runs out of memory the batch is halved and retried, and
    the smaller size kept for the following batches. Negative predictions are
    clipped to 0 reflectance (``clip_negative``), as the inputs are.

    On the CPU, ``inference`` (one of :data:`model_core.inference.PATHS`, for a
    CTSTFM network) runs the network through that fast path, prepared for a job
    of ``n_tiles`` tiles of ``tile_shape``; ``None`` runs it as it is.
    ``inference_path`` says which path runs.
    """

    def __init__(self, model, device, batch_size=1, mixed_precision=True, progress=None, clip_negative=True,
                 inference=None, n_tiles=1, tile_shape=(256, 256)):
        import torch

        self.torch = torch
        self.device = device
        self.model = model.to(device).eval()
        self.batch_size = max(1, int(batch_size))
        self.tile_shape = tuple(tile_shape)
        self.progress = progress or Progress()
        self.clip_negative = clip_negative
        self.autocast_dtype = mixed_precision_dtype(device) if mixed_precision else None
        self.prepared, self.inference_path = None, "eager"
        config = getattr(model, "config", None)
        # The fast paths take (coarse_t1, fine_t0): two-image box models only; others run as they are.
        takes_two = getattr(config, "images", 2) == 2 and getattr(config, "reference", "box") == "box"
        if inference is not None and device.type == "cpu" and takes_two:
            from .inference import prepare_for_job

            self.prepared = prepare_for_job(self.model, inference, n_tiles, tuple(tile_shape), self.progress)
            self.inference_path = self.prepared.path

    def _tensor(self, array):
        tensor = self.torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":  # page-locked host memory: the copies overlap with queued GPU work
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True).contiguous(memory_format=self.torch.channels_last)

    def _run(self, fine, coarse, coarse_t0=None):
        torch = self.torch
        if self.prepared is not None and coarse_t0 is None:
            coarse_t, fine_t = torch.from_numpy(np.ascontiguousarray(coarse)), torch.from_numpy(np.ascontiguousarray(fine))
            out = self.prepared(coarse_t, fine_t).numpy()
            return np.maximum(out, 0.0) if self.clip_negative else out
        inputs = (self._tensor(coarse), self._tensor(fine)) + ((self._tensor(coarse_t0),) if coarse_t0 is not None else ())
        with torch.inference_mode(), autocast(self.autocast_dtype, self.device):
            out = self.model(*inputs)
        out = out.float().cpu().numpy()
        return np.maximum(out, 0.0) if self.clip_negative else out

    def __call__(self, batch):
        """``batch``: ``(fine, coarse)`` or ``(fine, coarse, coarse_t0)`` numpy batches."""
        fine, coarse = batch[0], batch[1]
        coarse_t0 = batch[2] if len(batch) > 2 else None
        outputs, start = [], 0
        while start < len(fine):
            stop = min(start + self.batch_size, len(fine))
            try:
                part = None if coarse_t0 is None else coarse_t0[start:stop]
                outputs.append(self._run(fine[start:stop], coarse[start:stop], part))
                start = stop
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                empty_device_cache(self.device)
                if self.batch_size == 1:
                    raise CtstfmError(
                        f"The GPU ran out of memory on a single {fine.shape[2]} x {fine.shape[3]} tile; "
                        "use a smaller tile size, or device 'cpu'."
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                self.progress.info(f"GPU out of memory: batch size lowered to {self.batch_size}.")
        return np.concatenate(outputs, axis=0)


class MeanOfTileModels:
    """The mean of several :class:`TileModel`'s predictions: a model of the user's and the plugin's, averaged
    (``fuse(..., mean_with_plugin=True)``, :func:`plugin_model_to_average`)."""

    def __init__(self, members):
        self.members = list(members)

    @property
    def inference_path(self):
        return self.members[0].inference_path

    @property
    def batch_size(self):
        return min(member.batch_size for member in self.members)

    def __call__(self, batch):
        return sum(member(batch) for member in self.members) / len(self.members)


def similar_tolerance(band_std):
    """The similar-pixel filter's tolerance per band: ``2 * std / SIMILAR_CLASSES`` of the fine image's ``band_std``."""
    return np.asarray(band_std, dtype=np.float64) * 2.0 / SIMILAR_CLASSES


def filtered_prediction(prediction, fine, valid, tolerance, window):
    """``prediction`` ``(C, h, w)`` (a torch tensor) with its change from ``fine`` averaged over the similar
    ``valid`` pixels around each pixel (:func:`model_core.classical.similar_neighbour_change`), clipped at 0."""
    from .classical import similar_neighbour_change

    return (fine + similar_neighbour_change(fine, prediction - fine, valid, tolerance, window, SIMILAR_STEP)
            ).clamp_min(0.0)


class SimilarPixelFilter:
    """The network's predicted change, averaged over each pixel's spectrally similar neighbours (FSDAF's last
    step, :func:`filtered_prediction`): wraps a per-tile ``predict`` whose batches end with the tiles' valid
    mask (a raster job's ``valid_input``) and start with the fine image at T0.

    ``band_std``: each band's std over the whole fine image, so that every tile uses the same tolerance;
    ``window``: the neighbourhood (odd, fine pixels). Only valid pixels are neighbours; a valid pixel is
    always its own, so it keeps a prediction. The neighbourhood stops at the tile's edge: no halo is cut
    from the tiles, whose blend already gives their outer pixels little weight (measured: a 96 px tiling
    differed from the whole image no more with a 15 px halo, 0.0037 mean, than without, 0.0035)."""

    def __init__(self, predict, band_std, window, device=None):
        import torch

        self.predict = predict
        self.window = int(window)
        self.device = device or torch.device("cpu")  # the network's: on a GPU the filter runs there too
        self.tolerance = torch.as_tensor(similar_tolerance(band_std), dtype=torch.float32, device=self.device)

    def __call__(self, batch):
        import torch

        def on_device(array):
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

        *inputs, valid = batch
        out = self.predict(tuple(inputs))
        fine, valid = on_device(inputs[0]), on_device(valid) > 0
        for i in range(len(out)):
            out[i] = filtered_prediction(on_device(out[i]), fine[i], valid[i, 0], self.tolerance,
                                         self.window).cpu().numpy()
        return out


def check_similar_window(window):
    """Refuse a similar-pixel window that is not 0 (off) or odd."""
    window = int(window)
    if window < 0 or (window and window % 2 == 0):
        raise CtstfmError(f"The similar-pixel window must be 0 (off) or an odd number of fine pixels (got {window}).")
    return window


def _provenance_summary(provenance, limit=2000):
    """The scalar fields of a model's provenance as JSON, at most ``limit`` characters."""
    if not isinstance(provenance, dict):
        return ""
    simple = {k: v for k, v in provenance.items() if isinstance(v, (str, int, float, bool)) or v is None}
    text = json.dumps(simple, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reference_options(config, coarse_t0_path=None, progress=None, coarse_t0_clouds=()):
    """The :class:`~model_core.raster.PairReader` options that give a model the reference it was
    trained with: ``{"coarse_t0_path": ..., "coarse_t0_clouds": ..., "footprint": ..., "psf_sigma": ...}``.

    A three-image model (``config.images == 3``) gets the coarse image at T0; without one it falls
    back, with a warning, to its two-image stand-in (the fine image seen through the coarse
    footprint, or the box). A ``reference="footprint"`` model gets that footprint image; a
    two-image model ignores a coarse image at T0 (it was not trained with one), saying so.
    """
    progress = progress or Progress()
    footprint = {"footprint": True, "psf_sigma": float(config.footprint_psf)}
    if config.images == 3:
        if coarse_t0_path:
            return {"coarse_t0_path": coarse_t0_path, "coarse_t0_clouds": list(coarse_t0_clouds)}
        from .network import STAND_IN_BOX

        box = config.residual_blur or STAND_IN_BOX
        stand_in = "seen through the coarse sensor's footprint" if config.reference == "footprint" else \
            f"averaged over {box} x {box} pixels"
        progress.warning(
            "This model was trained with the coarse image at T0 (three-image mode), but none was given: the fine "
            f"image at T0 {stand_in} stands in for it. That is usually less accurate (the two sensors' difference "
            "no longer cancels); give the coarse image at T0 (COARSE_T0, --coarse-t0) for the model's full accuracy."
        )
        return footprint if config.reference == "footprint" else {}
    if coarse_t0_path:
        progress.info(
            "This is a two-image model (fine T0, coarse T1): the coarse image at T0 is not used. Train with the "
            "coarse images of the reference dates (three-image mode) to use it."
        )
    return footprint if config.reference == "footprint" else {}


def describe_reference(config, pair):
    """One sentence: the first guess the network corrects, as read by ``pair``."""
    text = _describe_first_guess(config, pair)
    if not (config.predict_residual and "coarse T1" in text):
        return text
    if config.change_blur > 1:
        text = text.rstrip(".") + f"; each coarse change averaged over {config.change_blur} x {config.change_blur} pixels."
    if config.box_change_gain:
        from .network import STAND_IN_BOX

        box = config.residual_blur or STAND_IN_BOX
        pairs = ", ".join(f"({a:.2f}, {b:.2f})" for a, b in zip(config.change_gain or (1.0,) * config.bands,
                                                                  config.box_change_gain))
        return text.rstrip(".") + (f"; fitted per band: a x that coarse change + b x (coarse T1 - box{box}(fine T0)), "
                                   f"(a, b) = {pairs}.")
    if config.change_gain:
        gains = ", ".join(f"{g:.2f}" for g in config.change_gain)
        text = text.rstrip(".") + f"; the coarse change scaled per band by the fitted change gain ({gains})."
    return text


def _describe_first_guess(config, pair):
    if not config.predict_residual:
        return "The network predicts the fine image directly (no first guess)."
    if pair.reference == "coarse_t0":
        return "First guess: fine T0 + coarse T1 - coarse T0 (both coarse images resampled onto the fine grid alike)."
    if pair.reference == "footprint":
        return (
            "First guess: fine T0 + coarse T1 - (fine T0 aggregated onto the coarse image's own pixels, PSF "
            f"{config.footprint_psf:g} coarse px, resampled back like coarse T1)."
        )
    if config.residual_blur:
        why = " (the coarse image is on a grid as fine as the fine image, so its footprint is unknown)" \
            if config.reference == "footprint" else ""
        return f"First guess: fine T0 + coarse T1 - box{config.residual_blur}(fine T0){why}."
    return "First guess: fine T0 (the network predicts the change)."


def _check_fuse_options(tile, overlap, resampling, output_type, output_format, batch_size, inference, threads):
    """Refuse bad fuse options before any file is opened."""
    from .inference import check_path, check_threads

    check_output_options(tile, overlap, resampling, output_type, output_format)
    if batch_size is not None and int(batch_size) < 1:
        raise CtstfmError(f"The batch size must be at least 1 (got {batch_size}).")
    check_path(inference)
    check_threads(threads)


def _model_for_inputs(model_path, fine_path, coarse_path, progress, bands, fine_bands, coarse_bands):
    """(loaded model cut down to the matched bands, band match) for this fine/coarse pair."""
    from .bands import model_for_rasters
    from .model_file import load_model

    loaded = load_model(model_path, map_location="cpu")
    mode = "three-image" if loaded.config.images == 3 else "two-image"
    progress.info(
        f"Model {os.path.basename(str(model_path))}: {len(loaded.band_names)} bands "
        f"({', '.join(loaded.band_names)}), {mode}."
    )
    loaded, match = model_for_rasters(
        loaded, RasterInfo.read(fine_path, "fine image"), RasterInfo.read(coarse_path, "coarse image"),
        bands=bands, fine_bands=fine_bands, coarse_bands=coarse_bands,
    )
    progress.info(match.describe())
    return loaded, match


def plugin_model_to_average(loaded, match, model_path, fine_path, coarse_path, progress, bands, fine_bands,
                            coarse_bands):
    """The plugin's model in the mode of ``loaded`` (a model of the user's, from ``model_path``), cut down to the
    same bands, whose prediction ``fuse(..., mean_with_plugin=True)`` averages with the user's model's. Only for a
    model ``ctstfm:train`` fine-tuned (:attr:`~model_core.network.CTSTFMConfig.fine_tuned`); ``None`` for any
    other, and (logged) when the plugin's model would read other bands or another first-guess reference. Why: on
    real Landsat pairs a model fine-tuned on two dates and the plugin's model erred differently, and their mean
    had a lower MAE than either on average (docs/fusion.md, *A fine-tuned model and the plugin's, averaged*)."""
    if paths.is_bundled_model(model_path) or not loaded.config.fine_tuned:
        return None
    three_image = loaded.config.images == 3
    plugin_path = paths.default_model(three_image=three_image)
    if plugin_path is None:
        return None
    name = os.path.basename(str(model_path))
    try:
        plugin, plugin_match = _model_for_inputs(plugin_path, fine_path, coarse_path, Progress(), bands, fine_bands,
                                                 coarse_bands)
    except CtstfmError as exc:  # e.g. a band named only in the user's model
        progress.info(f"{name} is used alone: the plugin's model cannot read these bands ({exc}).")
        return None
    same_bands = (list(plugin_match.fine_bands), list(plugin_match.coarse_bands), list(plugin.band_names)) == (
        list(match.fine_bands), list(match.coarse_bands), list(loaded.band_names))
    same_reference = (plugin.config.images, plugin.config.reference) == (loaded.config.images, loaded.config.reference)
    if not (same_bands and same_reference):
        progress.info(f"{name} is used alone: the plugin's model reads other "
                      f"{'bands' if not same_bands else 'reference images'} than it.")
        return None
    progress.info(f"Averaging {name}'s prediction with the plugin's model's ({os.path.basename(plugin_path)}, "
                  f"{'three' if three_image else 'two'}-image): on real Landsat pairs their mean had 4-6 % lower "
                  "MAE than a model fine-tuned on two dates alone (MEAN_WITH_PLUGIN_MODEL / --no-mean-with-plugin: "
                  "your model alone).")
    return plugin


def _check_pair_scales(pair):
    """The fine and coarse images (and coarse T0 when used) must look like reflectance at their scales."""
    check_scales(
        ScaledImage("fine image", pair.fine, pair.scale, "scale"),
        [ScaledImage("coarse image", pair.coarse, pair.coarse_scale, "coarse_scale")]
        + ([ScaledImage("coarse image at T0", pair.coarse_t0, pair.coarse_scale, "coarse_scale")]
           if pair.reference == "coarse_t0" else []),
    )


def _fused_band_descriptions(pair, band_names):
    """Output band descriptions: the fine image's, else the model's band names."""
    return [
        pair.grid.descriptions[b - 1] or (band_names[i] if i < len(band_names) else "")
        for i, b in enumerate(pair.fine.bands)
    ]


def _fused_metadata(pair, loaded, model_path, paths_in, spec, predictor, torch_device, options):
    """The fused output's metadata: inputs, model, bands, first guess, device and inference path.

    ``paths_in``: (fine T0, coarse T1, coarse T0 or None); ``options``: resampling, tile, overlap, output_type,
    clouds (the fine image's :class:`~model_core.cloud_masks.CloudMask` sources), similar_window.
    """
    fine_path, coarse_path, coarse_t0_path = paths_in
    return output_metadata(
        "CTSTFM fused fine image at T1",
        {"CTSTFM_FINE_T0": fine_path, "CTSTFM_COARSE_T1": coarse_path,
         **({"CTSTFM_COARSE_T0": coarse_t0_path} if pair.reference == "coarse_t0" else {})},
        fine_bands=pair.fine.bands, coarse_bands=pair.coarse.bands, resampling=options["resampling"],
        warped=pair.coarse.warped, tile=options["tile"], overlap=options["overlap"],
        output_type=options["output_type"], spec=spec,
        extra={
            "CTSTFM_MODEL": os.path.abspath(str(model_path)),
            "CTSTFM_MODEL_PROVENANCE": _provenance_summary(getattr(loaded, "provenance", {})),
            "CTSTFM_BANDS": ",".join(loaded.band_names),
            "CTSTFM_FIRST_GUESS": describe_reference(loaded.config, pair),
            "CTSTFM_DEVICE": str(torch_device),
            "CTSTFM_INFERENCE": predictor.inference_path,
            "CTSTFM_SIMILAR_WINDOW": str(options["similar_window"]),
            # The plugin's model the prediction was averaged with (mean_with_plugin); absent: the model alone.
            **({"CTSTFM_MEAN_WITH": os.path.abspath(str(options["plugin"].path))} if options.get("plugin") else {}),
            **({"CTSTFM_CLOUDS": clouds_text(options["clouds"])} if options.get("clouds") else {}),
        },
    )


def _tile_predictor(loaded, grid, torch_device, tiling, mixed_precision, inference, n_threads, progress):
    """(TileModel, batch size) for this grid; ``tiling``: (tile, overlap, batch size or None for automatic)."""
    tile, overlap, batch_size = tiling
    tile_h, tile_w = min(int(tile), grid.height), min(int(tile), grid.width)
    if batch_size is None:
        batch_size = auto_batch_size(torch_device, tile_h, tile_w, getattr(loaded.config, "width", 20))
    n_tiles = plan_tiles(grid.width, grid.height, tile, overlap).n_tiles
    predictor = TileModel(loaded.model, torch_device, batch_size, mixed_precision, progress,
                          inference=inference, n_tiles=n_tiles, tile_shape=(tile_h, tile_w))
    progress.info(
        f"Fusing {grid.width} x {grid.height} px on {torch_device} "
        f"(tiles {tile_w} x {tile_h}, overlap {overlap}, batch {batch_size}, "
        f"inference path {predictor.inference_path}, {n_threads} thread(s))."
    )
    if device_note(torch_device):
        progress.info(device_note(torch_device))
    return predictor, batch_size


def fuse(
    fine_path, coarse_path, model_path, out_path, *, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, device="auto",
    batch_size=None, fine_bands=None, coarse_bands=None, resampling=DEFAULT_RESAMPLING, output_type="input",
    output_format="GTiff", progress=None, mixed_precision=True, max_strips=None, scale=None, coarse_scale=None,
    bands=None, coarse_t0_path=None, inference="auto", threads=None, fine_mask=None, mask_band=None,
    mask_rule="nonzero", coarse_mask=None, coarse_mask_rule="nonzero", coarse_t0_mask=None,
    similar_window=SIMILAR_WINDOW, mean_with_plugin=True,
):
    """Predict the fine image at T1 from a fine image at T0 and a coarse image at T1
    (and the coarse image at T0, for a three-image model).

    ``fine_path``: fine image at T0 (e.g. Landsat surface reflectance x 10000);
    its grid is the output's. ``coarse_path``: coarse image at T1 (e.g. MODIS
    MOD09GA), any CRS and resolution; put on the fine grid with ``resampling``
    (``bilinear``, ``cubic``, ``nearest`` or ``average``) unless already on it.
    ``model_path``: a CTSTFM model file (``None``: the bundled default model). Bands
    are matched to the model's by name (:func:`~model_core.bands.match_bands`):
    ``bands`` (e.g. ``"green,red,nir"``) names the fine image's bands in use, else
    its band descriptions name them, else ``fine_bands`` / ``coarse_bands`` (1-based
    band lists) are in the model's order (default the first N bands); a model is
    cut down to the bands matched. ``coarse_t0_path``: the coarse image at T0,
    used by three-image models (:func:`reference_options` says what happens
    without it). ``fine_mask`` (a raster, any grid) and ``mask_band`` (a band of the fine image) mark the
    fine image's clouds, read by ``mask_rule`` (:class:`~model_core.cloud_masks.CloudRule`); they are
    nodata in the output, as nodata pixels of the fine image are. ``coarse_mask`` (a raster, any grid, e.g.
    MODIS ``state_1km``) marks the coarse image's clouds at T1, read by ``coarse_mask_rule``; nodata in the
    output too (nothing was seen there at T1). ``coarse_t0_mask``: the same for the coarse image at T0; there a
    three-image model sees no change (its C0 is filled from C1).
    ``tile`` / ``overlap``: tile size and overlap in fine pixels
    (``tile > 2 * overlap``). ``device``: ``auto``, ``cpu``, ``cuda`` or ``mps``.
    ``batch_size``: tiles per network call (``None``: 1 on CPU, from free memory
    on CUDA). ``output_type``: ``"input"`` (the fine image's data type, nodata and
    DN scale) or ``"float32"`` (reflectance, nodata -9999). ``output_format``:
    ``"GTiff"`` or ``"COG"``. ``scale``: reflectance per DN of the fine image (and
    the output; default the model's, 0.0001 for the usual x10000 products; 1 for
    float reflectance); ``coarse_scale``: the coarse image's, when it differs. An
    input whose values do not look like reflectance at its scale is refused
    (:func:`model_core.scales.check_scales`). ``progress``: a :class:`~model_core.progress.Progress`
    (cancel is checked before every batch). ``max_strips`` (benchmarks only)
    stops after that many tile rows and writes nothing. ``inference``: the CPU
    inference path (:data:`model_core.inference.PATHS`; ``auto`` picks the
    fastest that passed the accuracy check on this CPU). ``threads``: torch
    threads (``None``/0: one per physical core; GDAL gets the rest). ``similar_window``: the
    network's predicted change is averaged over the spectrally similar valid pixels of a window this
    wide (:class:`SimilarPixelFilter`; one pass over the fine image first for its band std); 0 turns the
    filter off. ``mean_with_plugin``: a model ``ctstfm:train`` fine-tuned is averaged with the plugin's model
    in its mode (:func:`plugin_model_to_average`); False uses it alone.

    Returns a :class:`~model_core.raster_job.RasterResult`. Raises :class:`CtstfmError` (a
    :class:`~model_core.model_file.ModelFileError` for a bad model file) before
    any work for bad input, and :class:`~model_core.errors.Cancelled` when
    cancelled; in both cases nothing is left at ``out_path``.
    """
    progress = progress or Progress()
    model_path = paths.model_or_default(model_path, three_image=bool(coarse_t0_path))
    _check_fuse_options(tile, overlap, resampling, output_type, output_format, batch_size, inference, threads)
    similar_window = check_similar_window(similar_window)
    scale = check_scale_value(scale, "scale")
    coarse_scale = check_scale_value(coarse_scale, "coarse_scale")
    from .inference import job_threads

    clouds = ImageClouds.of(fine_path, fine_mask, coarse_t0_mask, coarse_mask, mask_rule, coarse_mask_rule, mask_band)
    inputs = {"fine image": fine_path, "coarse image": coarse_path, "model file": model_path,
              **({"coarse image at T0": coarse_t0_path} if coarse_t0_path else {}),
              **{mask.what: mask.path for mask in clouds.every}}
    job = RasterJob("CTSTFM", out_path, inputs, progress=progress)
    torch_device = resolve_device(device)
    loaded, match = _model_for_inputs(model_path, fine_path, coarse_path, progress, bands, fine_bands, coarse_bands)
    band_names = list(loaded.band_names)
    plugin = plugin_model_to_average(loaded, match, model_path, fine_path, coarse_path, progress, bands, fine_bands,
                                     coarse_bands) if mean_with_plugin else None

    with job_threads(threads) as n_threads, job.open(
        PairReader, fine_path, coarse_path, fine_bands=list(match.fine_bands), coarse_bands=list(match.coarse_bands),
        n_bands=len(band_names), band_names=band_names, scale=scale or loaded.scale, coarse_scale=coarse_scale,
        resampling=resampling, fine_clouds=clouds.fine, coarse_clouds=clouds.coarse_t1,
        **reference_options(loaded.config, coarse_t0_path, progress, clouds.coarse_t0),
    ) as pair:
        _check_pair_scales(pair)
        used = clouds.fine + clouds.coarse_t1 + (clouds.coarse_t0 if pair.reference == "coarse_t0" else [])
        check_cloud_sources(used)
        grid = pair.grid
        if pair.coarse.warped:
            progress.info(f"Coarse image resampled onto the fine grid ({resampling}), window by window.")
        progress.info(describe_reference(loaded.config, pair))
        spec = output_spec(grid, output_type, pair.scale)
        predictor, batch_size = _tile_predictor(
            loaded, grid, torch_device, (tile, overlap, batch_size), mixed_precision, inference, n_threads, progress
        )
        if plugin is not None:
            first = predictor
            predictor = MeanOfTileModels([first, TileModel(
                plugin.model, torch_device, batch_size, mixed_precision, progress, inference=inference,
                n_tiles=plan_tiles(grid.width, grid.height, tile, overlap).n_tiles, tile_shape=first.tile_shape)])
        metadata = _fused_metadata(
            pair, loaded, model_path, (fine_path, coarse_path, coarse_t0_path), spec, predictor, torch_device,
            {"resampling": resampling, "tile": tile, "overlap": overlap, "output_type": output_type,
             "clouds": used, "similar_window": similar_window, "plugin": plugin},
        )
        process = predictor
        if similar_window:
            from .classical_raster import fine_band_std

            progress.info(f"Similar-pixel filter of the predicted change, window {similar_window} px: the fine "
                          "image's band std first (one pass).")
            process = SimilarPixelFilter(predictor, fine_band_std(pair.fine, pair.scale, progress.sub(0.0, 0.02)),
                                         similar_window, torch_device)
        output = JobOutput(process, spec, pair.count, _fused_band_descriptions(pair, band_names), metadata,
                           batch_size=batch_size, valid_input=bool(similar_window))
        result = job.run(pair, output, tile=tile, overlap=overlap, output_format=output_format, device=torch_device,
                         progress_from=0.02 if similar_window else 0.0,
                         max_strips=max_strips)
    result.batch_size = predictor.batch_size  # lowered when the GPU ran out of memory
    result.inference, result.threads = predictor.inference_path, n_threads
    return result
