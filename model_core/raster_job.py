"""The one read -> tile -> write job every raster method runs.

Fusion (:func:`model_core.fusion.fuse`), the classical methods
(:mod:`model_core.classical_raster`), the error map of :func:`model_core.assess.assess`
and the benchmark scripts differ only in what they read, the per-tile function and the
metadata they write. :class:`RasterJob` does the rest, the same way for all:

1. the output checks (:func:`model_core.outputs.check_outputs`, the one output-path rule:
   writable, a GeoTIFF name, not an input, not another output of the same run), before any work;
2. the GDAL block-cache limit (:func:`~model_core.raster.gdal_cache_limit`) while the
   rasters are open;
3. the coverage check of the source (no valid pixel over the output grid is an error);
4. (the method's own part, between :meth:`RasterJob.open` and :meth:`RasterJob.run`: a
   :class:`JobOutput` with the per-tile function, the output's data type, bands and metadata);
5. the atomic writer (:class:`~model_core.raster.RasterWriter`: a temporary file renamed
   at the end, removed on any error or cancel);
6. the tiling run (:func:`~model_core.tiling.run_tiled`: tiles, blending, prefetching,
   cancel before every batch);
7. timing, and one result type, :class:`RasterResult`.

A *source* is any object with ``grid`` (a :class:`~model_core.raster.RasterInfo`, the
output grid), ``warped`` (whether an input was resampled onto it), ``check_coverage()``
and ``read(window) -> (*arrays, valid)``, used as a context manager:
:class:`~model_core.raster.PairReader`, :class:`~model_core.classical_raster.SeriesReader`,
:class:`~model_core.assess.ComparisonReader`.
"""

import contextlib
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from . import __version__
from .errors import CtstfmError
from .options import OUTPUT_TYPES
from .outputs import check_outputs
from .progress import Progress
from .raster import OUTPUT_FORMATS, RESAMPLING_METHODS, RasterReader, RasterWriter, gdal_cache_limit
from .tiling import check_tile_overlap, check_tile_size, plan_tiles, run_tiled


@dataclass
class RasterResult:
    """What a raster job did (fusion, temporal difference, STARFM, an error map)."""

    out_path: str
    method: str
    seconds: float
    megapixels_per_second: float
    tiles: int
    width: int
    height: int
    bands: int
    coarse_warped: bool
    device: str = "cpu"
    batch_size: int = 1
    read_seconds: float = 0.0
    process_seconds: float = 0.0
    write_seconds: float = 0.0
    inference: str = ""  # fusion on the CPU: the inference path that ran (model_core.inference)
    threads: int = 0  # torch threads of the job, where the method set them

    def as_dict(self):
        return asdict(self)


@dataclass
class JobOutput:
    """The method-specific part of a raster job, made once the source is open.

    ``process(batch) -> (B, C, h, w)``: the per-tile function (see
    :func:`~model_core.tiling.run_tiled`). ``spec``, ``count``, ``descriptions``,
    ``metadata``: the output raster's data type/nodata/scale, band count, band
    names and metadata. ``valid_input``: ``process`` gets the tiles' valid mask too, as a last input
    ``(B, 1, h, w)`` (1.0 valid, 0.0 not). ``to_raster(data)``: what is written of each blended row
    band (default: the row band itself); ``on_rows(window, data, valid)`` sees every
    blended row band (before ``to_raster``); ``before_commit()`` is a last check
    after the tiles and before the output is kept (raising removes it).
    """

    process: Callable
    spec: object = None
    count: int = 0
    descriptions: Optional[list] = None
    metadata: Optional[dict] = None
    batch_size: int = 1
    halo: int = 0
    valid_input: bool = False
    to_raster: Optional[Callable] = None
    on_rows: Optional[Callable] = None
    before_commit: Optional[Callable] = None


class ReaderGroup:
    """Several rasters on one grid read together, a raster-job source (subclasses define
    ``read``): opens a :class:`~model_core.raster.RasterReader` per ``(path, bands, what)``
    of ``rasters`` and closes them all, also when opening one fails."""

    warped = False

    def __init__(self, grid, rasters):
        self.grid = grid
        self.readers = []
        try:
            for path, bands, what in rasters:
                self.readers.append(RasterReader(path, bands, what=what))
        except BaseException:
            self.close()
            raise

    def check_coverage(self, readers=None):
        """Raise :class:`CtstfmError` when one of ``readers`` (default all) is nodata everywhere."""
        for reader in self.readers if readers is None else readers:
            if reader.valid_fraction() == 0.0:
                raise CtstfmError(
                    f"The {reader.what} '{reader.source_info.path}' is nodata everywhere (in the bands "
                    "used); give an image with valid pixels."
                )

    def close(self):
        for reader in self.readers:
            reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


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
        "CTSTFM_SOFTWARE": software_name(),
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


def software_name():
    """The ``CTSTFM_SOFTWARE`` metadata value of every raster the project writes."""
    return f"ctstfm_qgis model_core {__version__}"


class RasterJob:
    """One raster job: ``RasterJob(...)`` checks the output, :meth:`open` opens the source,
    :meth:`run` writes the output tile by tile and returns a :class:`RasterResult`::

        job = RasterJob("STARFM", out_path, {"fine image at T0": fine_path, ...}, progress=progress)
        with job.open(SeriesReader, fine_path, coarse_t0_path, coarse_t1_path) as series:
            ...  # the method's own part: per-tile function, output spec, metadata
            return job.run(series, JobOutput(process, spec, series.count, descriptions, metadata), tile=256, overlap=0)

    ``method``: the method's name (in messages and the result). ``out_path``: the raster
    to write (``what`` names it in messages); ``None`` writes nothing (``on_rows`` still
    sees every row band). ``also``: ``{what: path}`` of the run's other outputs (tables,
    reports; empty paths skipped). All are checked here, before any work, against the
    ``inputs`` (``{what: path}``) and each other (:func:`~model_core.outputs.check_outputs`); ``outputs`` holds
    them as ``{what: absolute path}``. The clock starts here.
    """

    def __init__(self, method, out_path, inputs, *, what="output", also=None, progress=None):
        self.started = time.perf_counter()
        self.method = method
        self.progress = progress or Progress()
        self.outputs = check_outputs({what: out_path, **(also or {})}, inputs, geotiffs=(what,))
        self.out_path = self.outputs.get(what)

    @contextlib.contextmanager
    def open(self, source_class, *args, **kwargs):
        """``source_class(*args, **kwargs)`` opened under the GDAL cache limit, its coverage checked."""
        with gdal_cache_limit(), source_class(*args, **kwargs) as source:
            source.check_coverage()
            yield source

    def run(self, source, output, *, tile, overlap, output_format="GTiff", device="cpu", max_strips=None,
            progress_from=0.0):
        """Write ``output`` (a :class:`JobOutput`) of ``source`` tile by tile; returns a :class:`RasterResult`.

        The tiles report progress from ``progress_from`` (what the method's preparation used)
        to 0.99. ``max_strips`` (benchmarks) stops after that many tile rows and writes
        nothing. Bad input raises :class:`CtstfmError`, cancel
        :class:`~model_core.errors.Cancelled`; either way nothing is left at the output path.
        """
        grid, progress = source.grid, self.progress
        writer = None
        if self.out_path is not None:
            writer = RasterWriter(self.out_path, grid, output.count, output.spec, descriptions=output.descriptions,
                                  metadata=output.metadata, fmt=output_format)
        # Committed at the end of the block, removed on any error or cancel.
        with writer if writer is not None else contextlib.nullcontext():
            stats = run_tiled(
                grid.width, grid.height, _reader(source, output.valid_input), output.process,
                _row_writer(output, writer),
                tile=tile, overlap=overlap, halo=output.halo, batch_size=output.batch_size,
                progress=progress.sub(progress_from, 0.99), max_strips=max_strips,
            )
            if output.before_commit is not None:
                output.before_commit()
            if writer is not None and max_strips is not None:
                writer.abort()
            elif writer is not None:
                progress.update(0.99, "writing")
        seconds = time.perf_counter() - self.started
        progress.update(1.0, "done")
        # A partial run (max_strips) counts the share of the raster's tiles it did.
        total_tiles = plan_tiles(grid.width, grid.height, tile, overlap, output.halo).n_tiles
        megapixels = grid.width * grid.height / 1e6 * stats.n_tiles / total_tiles
        return RasterResult(
            out_path=self.out_path if self.out_path is not None and max_strips is None else "",
            method=self.method,
            seconds=seconds,
            megapixels_per_second=megapixels / max(seconds, 1e-9),
            tiles=stats.n_tiles,
            width=grid.width,
            height=grid.height,
            bands=output.count,
            coarse_warped=bool(source.warped),
            device=str(device),
            batch_size=int(output.batch_size),
            read_seconds=stats.read_seconds,
            process_seconds=stats.process_seconds,
            write_seconds=stats.write_seconds,
        )


def _reader(source, valid_input=False):
    def read(window):
        *arrays, valid = source.read(window)
        if valid_input:
            arrays.append(valid[None].astype(np.float32))
        return tuple(arrays), valid

    return read


def _row_writer(output, writer):
    def write(window, data, valid):
        if output.on_rows is not None:
            output.on_rows(window, data, valid)
        if writer is not None:
            writer.write(window, data if output.to_raster is None else output.to_raster(data), valid)

    return write
