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
from .raster import DEFAULT_RESAMPLING, PairReader, output_spec
from .raster_job import JobOutput, RasterJob, check_output_options, output_metadata
from .scales import ScaledImage, check_scale_value, check_scales
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE


class TileModel:
    """The per-tile network call the tiling engine runs: ``(fine, coarse) -> fine_t1``.

    Takes numpy batches ``(B, C, h, w)`` of reflectance, returns ``float32``
    ``(B, C, h, w)`` on the CPU. On a GPU it runs under ``torch.autocast``
    (:func:`~model_core.device.mixed_precision_dtype`) unless ``mixed_precision`` is
    False; when the GPU runs out of memory the batch is halved and retried, and
    the smaller size kept for the following batches. Negative predictions are
    clipped to 0 reflectance (``clip_negative``), as the inputs are.
    """

    def __init__(self, model, device, batch_size=1, mixed_precision=True, progress=None, clip_negative=True):
        import torch

        self.torch = torch
        self.device = device
        self.model = model.to(device).eval()
        self.batch_size = max(1, int(batch_size))
        self.progress = progress or Progress()
        self.clip_negative = clip_negative
        self.autocast_dtype = mixed_precision_dtype(device) if mixed_precision else None

    def _run(self, fine, coarse):
        torch = self.torch
        coarse_t = torch.from_numpy(np.ascontiguousarray(coarse)).to(self.device, non_blocking=True)
        fine_t = torch.from_numpy(np.ascontiguousarray(fine)).to(self.device, non_blocking=True)
        coarse_t = coarse_t.contiguous(memory_format=torch.channels_last)
        fine_t = fine_t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.autocast_dtype, self.device):
            out = self.model(coarse_t, fine_t)
        out = out.float().cpu().numpy()
        return np.maximum(out, 0.0) if self.clip_negative else out

    def __call__(self, batch):
        fine, coarse = batch
        outputs, start = [], 0
        while start < len(fine):
            stop = min(start + self.batch_size, len(fine))
            try:
                outputs.append(self._run(fine[start:stop], coarse[start:stop]))
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


def _provenance_summary(provenance, limit=2000):
    """The scalar fields of a model's provenance as JSON, at most ``limit`` characters."""
    if not isinstance(provenance, dict):
        return ""
    simple = {k: v for k, v in provenance.items() if isinstance(v, (str, int, float, bool)) or v is None}
    text = json.dumps(simple, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fuse(
    fine_path,
    coarse_path,
    model_path,
    out_path,
    *,
    tile=DEFAULT_TILE,
    overlap=DEFAULT_OVERLAP,
    device="auto",
    batch_size=None,
    fine_bands=None,
    coarse_bands=None,
    resampling=DEFAULT_RESAMPLING,
    output_type="input",
    output_format="GTiff",
    progress=None,
    mixed_precision=True,
    max_strips=None,
    scale=None,
    coarse_scale=None,
):
    """Predict the fine image at T1 from a fine image at T0 and a coarse image at T1.

    ``fine_path``: fine image at T0 (e.g. Landsat surface reflectance x 10000);
    its grid is the output's. ``coarse_path``: coarse image at T1 (e.g. MODIS
    MOD09GA), any CRS and resolution; put on the fine grid with ``resampling``
    (``bilinear``, ``cubic``, ``nearest`` or ``average``) unless already on it.
    ``model_path``: a CTSTFM model file (``None``: the bundled default model). ``fine_bands`` / ``coarse_bands``:
    1-based band lists in the model's band order (default the first N bands).
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
    stops after that many tile rows and writes nothing.

    Returns a :class:`~model_core.raster_job.RasterResult`. Raises :class:`CtstfmError` (a
    :class:`~model_core.model_file.ModelFileError` for a bad model file) before
    any work for bad input, and :class:`~model_core.errors.Cancelled` when
    cancelled; in both cases nothing is left at ``out_path``.
    """
    progress = progress or Progress()
    model_path = paths.model_or_default(model_path)
    check_output_options(tile, overlap, resampling, output_type, output_format)
    if batch_size is not None and int(batch_size) < 1:
        raise CtstfmError(f"The batch size must be at least 1 (got {batch_size}).")
    scale = check_scale_value(scale, "scale")
    coarse_scale = check_scale_value(coarse_scale, "coarse_scale")
    job = RasterJob(
        "CTSTFM", out_path, {"fine image": fine_path, "coarse image": coarse_path, "model file": model_path},
        progress=progress,
    )
    torch_device = resolve_device(device)

    from .model_file import load_model

    loaded = load_model(model_path, map_location="cpu")
    band_names = list(loaded.band_names)
    progress.info(f"Model {os.path.basename(str(model_path))}: {len(band_names)} bands ({', '.join(band_names)}).")

    with job.open(
        PairReader,
        fine_path,
        coarse_path,
        fine_bands=fine_bands,
        coarse_bands=coarse_bands,
        n_bands=len(band_names),
        band_names=band_names,
        scale=scale or loaded.scale,
        coarse_scale=coarse_scale,
        resampling=resampling,
    ) as pair:
        check_scales(
            ScaledImage("fine image", pair.fine, pair.scale, "scale"),
            [ScaledImage("coarse image", pair.coarse, pair.coarse_scale, "coarse_scale")],
        )
        grid = pair.grid
        if pair.coarse.warped:
            progress.info(f"Coarse image resampled onto the fine grid ({resampling}), window by window.")
        spec = output_spec(grid, output_type, pair.scale)
        tile_h, tile_w = min(int(tile), grid.height), min(int(tile), grid.width)
        if batch_size is None:
            batch_size = auto_batch_size(torch_device, tile_h, tile_w, getattr(loaded.config, "width", 20))
        predictor = TileModel(loaded.model, torch_device, batch_size, mixed_precision, progress)
        progress.info(
            f"Fusing {grid.width} x {grid.height} px on {torch_device} "
            f"(tiles {tile_w} x {tile_h}, overlap {overlap}, batch {batch_size})."
        )
        if device_note(torch_device):
            progress.info(device_note(torch_device))
        descriptions = [
            grid.descriptions[b - 1] or (band_names[i] if i < len(band_names) else "")
            for i, b in enumerate(pair.fine.bands)
        ]
        metadata = output_metadata(
            "CTSTFM fused fine image at T1",
            {"CTSTFM_FINE_T0": fine_path, "CTSTFM_COARSE_T1": coarse_path},
            fine_bands=pair.fine.bands, coarse_bands=pair.coarse.bands, resampling=resampling,
            warped=pair.coarse.warped, tile=tile, overlap=overlap, output_type=output_type, spec=spec,
            extra={
                "CTSTFM_MODEL": os.path.abspath(str(model_path)),
                "CTSTFM_MODEL_PROVENANCE": _provenance_summary(getattr(loaded, "provenance", {})),
                "CTSTFM_BANDS": ",".join(band_names),
                "CTSTFM_DEVICE": str(torch_device),
            },
        )
        output = JobOutput(predictor, spec, pair.count, descriptions, metadata, batch_size=batch_size)
        result = job.run(pair, output, tile=tile, overlap=overlap, output_format=output_format, device=torch_device,
                         max_strips=max_strips)
    result.batch_size = predictor.batch_size  # lowered when the GPU ran out of memory
    return result
