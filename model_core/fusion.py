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

Assessment and training reuse the pieces: :func:`resolve_device`,
:class:`TileModel` (the per-tile network call with mixed precision and
out-of-memory retries) and :func:`predict_pair` (tiled prediction of a
:class:`~model_core.raster.PairReader` into any ``write`` callback).
"""

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import MPS_FALLBACK, __version__, paths
from .errors import CtstfmError
from .options import DEVICES, OUTPUT_TYPES
from .progress import Progress
from .scales import ScaledImage, check_scale_value, check_scales
from .raster import (
    DEFAULT_RESAMPLING,
    OUTPUT_FORMATS,
    RESAMPLING_METHODS,
    PairReader,
    RasterWriter,
    check_output_path,
    gdal_cache_limit,
    output_spec,
)
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, check_tile_overlap, check_tile_size, plan_tiles, run_tiled



@dataclass
class FusionResult:
    """What :func:`fuse` did."""

    out_path: str
    seconds: float
    megapixels_per_second: float
    device: str
    batch_size: int
    tiles: int
    width: int
    height: int
    bands: int
    coarse_warped: bool
    read_seconds: float = 0.0
    network_seconds: float = 0.0
    write_seconds: float = 0.0

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class DeviceAvailability:
    """What accelerators this PyTorch can use: the number of CUDA GPUs and whether Apple's MPS works."""

    cuda: int = 0
    mps: bool = False

    @classmethod
    def detect(cls):
        import torch

        mps = getattr(torch.backends, "mps", None)
        return cls(
            cuda=torch.cuda.device_count() if torch.cuda.is_available() else 0,
            mps=bool(mps is not None and mps.is_available()),
        )


def choose_device(device="auto", available=None):
    """The device name for ``device``: ``"auto"`` takes CUDA, then Apple's MPS, then the CPU;
    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` are checked against ``available`` (a
    :class:`DeviceAvailability`, detected when ``None``); asking for one that is absent is a
    :class:`CtstfmError` that says what to choose instead."""
    name = str(device or "auto").strip().lower()
    if name not in ("auto", "cpu", "mps") and not name.startswith("cuda"):
        raise CtstfmError(f"Unknown device '{device}'; use one of {', '.join(DEVICES)}.")
    if name == "cpu":
        return "cpu"
    available = available or DeviceAvailability.detect()
    if name == "auto":
        return "cuda" if available.cuda else "mps" if available.mps else "cpu"
    if name == "mps":
        if not available.mps:
            raise CtstfmError(
                "The Apple GPU (mps) was asked for, but this PyTorch cannot use it (it needs a Mac with Apple "
                "silicon or an AMD GPU, macOS 12.3 or later and a PyTorch built with MPS); choose device 'auto' "
                "or 'cpu'."
            )
        return "mps"
    if not available.cuda:
        raise CtstfmError(
            "The CUDA device was asked for, but this PyTorch sees no CUDA GPU; choose device 'auto' or 'cpu', "
            "or install a CUDA build of PyTorch."
        )
    index = name.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= available.cuda):
        raise CtstfmError(f"There is no GPU {name}; this machine has {available.cuda} CUDA device(s).")
    return name


def resolve_device(device="auto", available=None):
    """A ``torch.device`` for :func:`choose_device`'s choice."""
    import torch

    return torch.device(choose_device(device, available))


def device_note(device):
    """A line for the log about ``device``'s limits, or ``None``: on MPS, whether operators it lacks
    fall back to the CPU (slower) or fail, and how to change that."""
    if torch_device_type(device) != "mps":
        return None
    if os.environ.get(MPS_FALLBACK, "0").strip() not in ("", "0"):
        return (
            f"Apple GPU (mps): operators MPS lacks run on the CPU instead ({MPS_FALLBACK}=1), which is slower "
            "but gives the same result."
        )
    return (
        f"Apple GPU (mps) without CPU fallback ({MPS_FALLBACK} is not 1): an operator MPS lacks stops the run; "
        f"set {MPS_FALLBACK}=1 before starting QGIS or Python, or choose device 'cpu'."
    )


def torch_device_type(device):
    """``"cpu"``, ``"cuda"`` or ``"mps"`` of a device or device name."""
    return str(getattr(device, "type", device)).split(":")[0]


def mixed_precision_dtype(device):
    """The autocast dtype for ``device``: on CUDA bfloat16 where supported, else float16; on
    Apple's MPS float16 (bfloat16 needs macOS 14 there); ``None`` (full float32) on the CPU.
    Fusion and training share this choice."""
    import torch

    kind = torch_device_type(device)
    if kind == "mps":
        return torch.float16
    if kind != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(amp_dtype, device="cuda"):
    """``torch.autocast`` on ``device`` (CUDA or MPS) for ``amp_dtype``, or a no-op context when it is ``None``."""
    import contextlib

    import torch

    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch_device_type(device), dtype=amp_dtype)


def empty_device_cache(device):
    """Give the accelerator's cached memory back after an out-of-memory error."""
    import torch

    kind = torch_device_type(device)
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps":
        torch.mps.empty_cache()


def auto_batch_size(device, tile_height, tile_width, width_channels=20):
    """Tiles per batch when none was given: 1 on CPU (batching gains nothing
    there and costs memory); on CUDA as many as about a quarter of the free GPU
    memory holds (on MPS: of the memory Metal recommends; at roughly 60 feature maps of ``width_channels`` per pixel in
    float32), between 1 and 32. Out-of-memory errors halve it anyway."""
    if device.type not in ("cuda", "mps"):
        return 1
    import torch

    try:
        if device.type == "mps":  # unified memory: what Metal recommends, less what it holds already
            free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        else:
            free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 (older drivers, older PyTorch)
        return 4
    per_tile = tile_height * tile_width * width_channels * 60 * 4
    return int(max(1, min(32, (free // 4) // max(per_tile, 1))))


class TileModel:
    """The per-tile network call the tiling engine runs: ``(fine, coarse) -> fine_t1``.

    Takes numpy batches ``(B, C, h, w)`` of reflectance, returns ``float32``
    ``(B, C, h, w)`` on the CPU. On a GPU it runs under ``torch.autocast``
    (:func:`mixed_precision_dtype`) unless ``mixed_precision`` is
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
                if not _is_out_of_memory(exc):
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


def _is_out_of_memory(exc):
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def predict_pair(pair, predictor, write, *, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, batch_size=1, progress=None,
                 max_strips=None):
    """Tiled prediction over a :class:`~model_core.raster.PairReader`.

    ``predictor((fine, coarse)) -> (B, C, h, w)`` (e.g. :class:`TileModel`);
    ``write(window, reflectance, valid)`` receives blended full-width row bands
    (see :func:`~model_core.tiling.run_tiled`). Pixels invalid in either input
    are invalid in what ``write`` gets. Returns the tiling statistics.
    """

    def read(window):
        fine, coarse, valid = pair.read(window)
        return (fine, coarse), valid

    return run_tiled(
        pair.width, pair.height, read, predictor, write,
        tile=tile, overlap=overlap, batch_size=batch_size, progress=progress, max_strips=max_strips,
    )


def _provenance_summary(provenance, limit=2000):
    """The scalar fields of a model's provenance as JSON, at most ``limit`` characters."""
    if not isinstance(provenance, dict):
        return ""
    simple = {k: v for k, v in provenance.items() if isinstance(v, (str, int, float, bool)) or v is None}
    text = json.dumps(simple, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_choice(value, choices, what):
    """Raise :class:`CtstfmError` unless ``value`` is one of ``choices`` (``what`` names the option)."""
    if value not in choices:
        raise CtstfmError(f"Unknown {what} '{value}'; use one of {', '.join(choices)}.")


def check_output_options(tile, overlap, resampling, output_type, output_format):
    """The checks of the tiling and output options every fusion method makes before any work."""
    check_tile_size(tile)
    check_tile_overlap(tile, overlap)
    check_choice(resampling, tuple(RESAMPLING_METHODS), "resampling")
    check_choice(output_type, OUTPUT_TYPES, "output type")
    check_choice(output_format, OUTPUT_FORMATS, "output format")


def output_metadata(product, inputs, *, fine_bands, coarse_bands, resampling, warped, tile, overlap, output_type,
                    spec, extra=None):
    """The metadata of a fused raster: software, ``product``, the inputs (``{metadata key: path}``), the band
    lists, the resampling (``warped``: whether the coarse images were resampled), tiling, output type and
    reflectance scale (from the :class:`~model_core.raster.OutputSpec` ``spec``), then ``extra``."""
    meta = {
        "CTSTFM_SOFTWARE": f"ctstfm_qgis model_core {__version__}",
        "CTSTFM_PRODUCT": product,
        **{key: os.path.abspath(str(path)) for key, path in inputs.items()},
        "CTSTFM_FINE_BANDS": ",".join(map(str, fine_bands)),
        "CTSTFM_COARSE_BANDS": ",".join(map(str, coarse_bands)),
        "CTSTFM_RESAMPLING": resampling if warped else "none (coarse already on the fine grid)",
        "CTSTFM_TILE": str(int(tile)),
        "CTSTFM_OVERLAP": str(int(overlap)),
        "CTSTFM_OUTPUT_TYPE": output_type,
        "CTSTFM_REFLECTANCE_SCALE": repr(spec.scale if spec.scale is not None else 1.0),
    }
    meta.update(extra or {})
    return meta


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
    scale=None,
    coarse_scale=None,
    progress=None,
    mixed_precision=True,
    max_strips=None,
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

    Returns a :class:`FusionResult`. Raises :class:`CtstfmError` (a
    :class:`~model_core.model_file.ModelFileError` for a bad model file) before
    any work for bad input, and :class:`~model_core.errors.Cancelled` when
    cancelled; in both cases nothing is left at ``out_path``.
    """
    progress = progress or Progress()
    started = time.perf_counter()
    model_path = paths.model_or_default(model_path)
    check_output_options(tile, overlap, resampling, output_type, output_format)
    if batch_size is not None and int(batch_size) < 1:
        raise CtstfmError(f"The batch size must be at least 1 (got {batch_size}).")
    scale = check_scale_value(scale, "scale")
    coarse_scale = check_scale_value(coarse_scale, "coarse_scale")
    out_path = check_output_path(
        out_path, {"fine image": fine_path, "coarse image": coarse_path, "model file": model_path}, geotiff=True
    )
    torch_device = resolve_device(device)

    from .model_file import load_model

    loaded = load_model(model_path, map_location="cpu")
    band_names = list(loaded.band_names)
    progress.info(f"Model {os.path.basename(str(model_path))}: {len(band_names)} bands ({', '.join(band_names)}).")

    with gdal_cache_limit(), PairReader(
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
        pair.check_coverage()
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
        # Committed at the end of the block, removed on any error or cancel.
        with RasterWriter(
            out_path, grid, pair.count, spec, descriptions=descriptions, metadata=metadata, fmt=output_format
        ) as writer:
            stats = predict_pair(
                pair, predictor, writer.write, tile=tile, overlap=overlap, batch_size=batch_size,
                progress=progress.sub(0.0, 0.99), max_strips=max_strips,
            )
            if max_strips is not None:
                writer.abort()
            else:
                progress.update(0.99, "writing")
    seconds = time.perf_counter() - started
    progress.update(1.0, "done")
    # A partial run (max_strips) counts the share of the raster's tiles it did.
    total_tiles = plan_tiles(grid.width, grid.height, tile, overlap).n_tiles
    megapixels = grid.width * grid.height / 1e6 * stats.n_tiles / total_tiles
    return FusionResult(
        out_path=out_path if max_strips is None else "",
        seconds=seconds,
        megapixels_per_second=megapixels / max(seconds, 1e-9),
        device=str(torch_device),
        batch_size=predictor.batch_size,
        tiles=stats.n_tiles,
        width=grid.width,
        height=grid.height,
        bands=pair.count,
        coarse_warped=pair.coarse.warped,
        read_seconds=stats.read_seconds,
        network_seconds=stats.process_seconds,
        write_seconds=stats.write_seconds,
    )
