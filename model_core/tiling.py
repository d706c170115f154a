"""The one tiling engine: any per-tile function over rasters of any size.

:func:`run_tiled` cuts a ``width x height`` grid into overlapping tiles, reads
each tile through a caller's ``read(window)``, runs the caller's
``process(batch)`` on batches of tiles, blends the overlapping predictions with
weights and hands finished rows to the caller's ``write(window, data, valid)``.
It knows nothing about CTSTFM: fusion, the classical methods (temporal
difference, STARFM) and assessment all run through it.

Tiles
    ``tile`` x ``tile`` pixels (shrunk to the raster when the raster is smaller)
    with ``overlap`` pixels shared between neighbours; ``tile > 2 * overlap``.
    Tile starts are ``0, step, 2*step, ...`` with ``step = tile - overlap``; the
    last tile of a row or column is moved back to end exactly on the raster's
    edge, so every tile has the same size (batches stack) and no tile reads
    outside the raster.

Blending
    Each tile's prediction is multiplied by a weight that is 1 in its centre and
    ramps across the ``overlap`` pixels of every side shared with a neighbour as
    a raised cosine (Hann half-window), ``sin^2(pi/2 * (i + 0.5) / overlap)``
    for the ``i``-th pixel from the edge; sides on the image border keep weight
    1. Weighted sums and the sums of weights are accumulated and divided at the
    end. Two neighbours overlapping by exactly ``overlap`` pixels cross-fade
    with weights ``sin^2 + cos^2 = 1``; any larger overlap (the last tile of a
    row, moved back onto the edge) is normalised all the same. The raised cosine
    gives a tile's outermost pixels, where a CNN's zero padding distorts most,
    almost no weight (0.0006 for the edge pixel at overlap 32, against 0.016 for
    a linear ramp).

Halo
    A method that needs context around each pixel (STARFM's moving window)
    passes ``halo``: the outer ``halo`` pixels of every shared side get weight 0
    (never used), and the ramp spans the remaining ``overlap - 2 * halo``
    pixels. So ``overlap >= 2 * halo`` is required; ``overlap = 2 * halo`` is a
    plain cut in the middle of the overlap.

Memory
    Tiles are processed one tile row (a strip) at a time. The weighted sums live
    in a strip buffer of ``tile`` rows x raster width; after each strip the rows
    that no later tile touches are divided, written and dropped. Memory is
    ``O(tile * width * bands)``, whatever the raster's height.

Progress
    ``progress.check()`` before every batch (raises
    :class:`~model_core.errors.Cancelled`), ``progress.update`` after it.
"""

import time
from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np

from .errors import CtstfmError
from .options import MIN_TILE
from .prefetch import Prefetcher
from .progress import Progress
from .raster import Window

DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32
# MIN_TILE (defined with the options, 32 px): the smallest tile a user may ask for (a raster
# smaller than a tile is still one tile of its own size). Below it a tile is mostly blended
# border (the default overlap is 32 px), the network's channel attention and 7 x 7 kernels see
# too little context, and per-tile overhead dominates: 1-pixel tiles ran 45 times slower.


def check_tile_size(tile):
    """Raise :class:`CtstfmError` unless the tile size a user asked for is at least :data:`MIN_TILE`."""
    try:
        tile = int(tile)
    except (TypeError, ValueError):
        raise CtstfmError(f"The tile size must be a whole number of pixels (got {tile!r}).") from None
    if tile < MIN_TILE:
        raise CtstfmError(
            f"The tile size {tile} is too small: tiles must be at least {MIN_TILE} pixels, because smaller tiles are "
            f"mostly blended border and give the network too little context around each pixel (and run many times "
            f"slower); use {DEFAULT_TILE} (the default) or at least {MIN_TILE}. A raster smaller than a tile is "
            "processed as one tile anyway."
        )
    return tile


def check_tile_overlap(tile, overlap, halo=0):
    """Raise :class:`CtstfmError` unless ``tile > 2 * overlap >= 4 * halo >= 0``."""
    tile, overlap, halo = int(tile), int(overlap), int(halo)
    if tile < 1:
        raise CtstfmError(f"The tile size must be at least 1 pixel (got {tile}).")
    if overlap < 0 or halo < 0:
        raise CtstfmError("The tile overlap and halo cannot be negative.")
    if tile <= 2 * overlap:
        raise CtstfmError(
            f"The tile size ({tile}) must be more than twice the overlap ({overlap}); "
            f"use a larger tile or an overlap below {(tile + 1) // 2}."
        )
    if overlap < 2 * halo:
        raise CtstfmError(
            f"The overlap ({overlap}) must be at least twice the halo ({halo}) so that every pixel is "
            f"predicted with its full context; use an overlap of {2 * halo} or more."
        )


def _starts(size, tile, step):
    if size <= tile:
        return (0,)
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return tuple(starts)


def _ramp(length, overlap, halo, at_start, at_end):
    """1-D weights of one tile side to side: 0 in the halo, a raised-cosine ramp
    over ``overlap - 2*halo`` pixels, 1 in the middle; sides on the border stay 1.

    A tile shorter than the overlap (a raster smaller than a tile on this axis is
    one tile, whose both sides are on the border) keeps the part of the ramp that
    fits, so any raster size works, down to 1 x 1."""
    weights = np.ones(length, dtype=np.float32)
    span = overlap - 2 * halo
    if overlap == 0 or (at_start and at_end):
        return weights
    edge = np.zeros(halo + max(span, 0), dtype=np.float32)
    if span > 0:
        edge[halo:] = np.sin(0.5 * np.pi * (np.arange(span) + 0.5) / span) ** 2
    else:
        edge[halo:] = 1.0
    edge = edge[:length]
    n = edge.size
    if not at_start:
        weights[:n] = np.minimum(weights[:n], edge)
    if not at_end:
        weights[length - n:] = np.minimum(weights[length - n:], edge[::-1])
    return weights


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of a ``width x height`` raster go (see :func:`plan_tiles`)."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    overlap: int
    halo: int
    cols: Tuple[int, ...]
    rows: Tuple[int, ...]

    @property
    def n_tiles(self):
        return len(self.cols) * len(self.rows)

    def row_windows(self, row_index):
        """The windows of one tile row, left to right."""
        y = self.rows[row_index]
        return [Window(x, y, self.tile_width, self.tile_height) for x in self.cols]

    def windows(self):
        """Every tile window, row by row."""
        return [w for i in range(len(self.rows)) for w in self.row_windows(i)]

    def weights(self, window):
        """The ``(h, w)`` blending weights of one tile window."""
        wy = _ramp(window.height, self.overlap, self.halo, window.row == 0, window.row + window.height >= self.height)
        wx = _ramp(window.width, self.overlap, self.halo, window.col == 0, window.col + window.width >= self.width)
        return wy[:, None] * wx[None, :]


def plan_tiles(width, height, tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, halo=0):
    """The :class:`TileGrid` for a raster; a raster smaller than a tile is one tile."""
    check_tile_overlap(tile, overlap, halo)
    width, height, tile, overlap = int(width), int(height), int(tile), int(overlap)
    if width < 1 or height < 1:
        raise CtstfmError(f"The raster is empty ({width} x {height} pixels).")
    tile_w, tile_h = min(tile, width), min(tile, height)
    step = tile - overlap
    return TileGrid(
        width=width,
        height=height,
        tile_width=tile_w,
        tile_height=tile_h,
        overlap=overlap,
        halo=int(halo),
        cols=_starts(width, tile_w, step),
        rows=_starts(height, tile_h, step),
    )


@dataclass
class TilingStats:
    """What a :func:`run_tiled` call did."""

    n_tiles: int
    n_batches: int
    tile_width: int
    tile_height: int
    seconds: float
    read_seconds: float
    process_seconds: float
    write_seconds: float
    strip_buffer_bytes: int


def run_tiled(
    width, height, read: Callable, process: Callable, write: Callable, *, tile=DEFAULT_TILE,
    overlap=DEFAULT_OVERLAP, halo=0, batch_size=1, progress=None, max_strips=None, prefetch=True,
):
    """Run a per-tile function over a raster and write the blended result.

    ``read(window) -> (inputs, valid)``: ``inputs`` a tuple of arrays
    ``(C_i, h, w)`` for that window, ``valid`` a bool ``(h, w)`` mask.

    ``process(batch) -> predictions``: ``batch`` is a tuple with one array
    ``(B, C_i, h, w)`` per input (tiles stacked); it returns ``(B, C, h, w)``.

    ``write(window, data, valid)``: receives finished full-width row bands in
    top-to-bottom order, ``data`` ``float32 (C, h, w)`` blended, ``valid``
    ``(h, w)``: valid in a tile that gave the pixel a weight. A prediction that
    is not finite (NaN, inf) in any band contributes nothing to that pixel; a
    pixel no tile could predict comes out invalid, never NaN.

    ``batch_size`` tiles go to ``process`` at once (batches never span tile
    rows). ``max_strips`` stops after that many tile rows (for measuring memory
    on huge rasters; the rest of the output is then not written). With
    ``prefetch`` the next batch is read in a background thread while the
    current one is processed (``read`` is then called from that thread, never
    concurrently with itself). Returns :class:`TilingStats`; its
    ``read_seconds`` is the reading time, overlapped with processing when
    prefetching.
    """
    progress = progress or Progress()
    grid = plan_tiles(width, height, tile, overlap, halo)
    plan = _batch_plan(grid, max(1, int(batch_size)), max_strips)
    strip = _StripBuffer(grid)
    total = grid.n_tiles
    done = batches = 0
    t_read = t_process = t_write = 0.0
    started = time.perf_counter()
    progress.update(0.0, f"{total} tile(s) of {grid.tile_width} x {grid.tile_height} px")
    load = _stacked_reader(read)
    # Batches are read ahead in one thread while the current one is processed
    # (the read callback is only ever called from that thread, one window at a time).
    windows = [batch_windows for _, batch_windows, _ in plan]
    loaded = Prefetcher(load, windows, depth=1) if prefetch and len(plan) > 1 else map(load, windows)
    try:
        pending = iter(loaded)
        for row_index, batch_windows, row_done in plan:
            progress.check()
            valids, stacked, seconds = next(pending)
            t1 = time.perf_counter()
            predictions = np.asarray(process(stacked), dtype=np.float32)
            t_process += time.perf_counter() - t1
            t_read += seconds
            _check_predictions(predictions, len(batch_windows), grid)
            for window, prediction, valid in zip(batch_windows, predictions, valids):
                strip.add(window, prediction, valid)
            done += len(batch_windows)
            batches += 1
            progress.update(done / total, f"tile {done}/{total}")
            if row_done:  # rows above the next strip's first row are final: write and drop them
                t3 = time.perf_counter()
                write(*strip.pop_final_rows(row_index))
                t_write += time.perf_counter() - t3
    finally:
        if isinstance(loaded, Prefetcher):
            loaded.close()
    return TilingStats(
        n_tiles=done,
        n_batches=batches,
        tile_width=grid.tile_width,
        tile_height=grid.tile_height,
        seconds=time.perf_counter() - started,
        read_seconds=t_read,
        process_seconds=t_process,
        write_seconds=t_write,
        strip_buffer_bytes=strip.nbytes,
    )


def _batch_plan(grid, batch_size, max_strips):
    """``(row index, windows, last batch of its row?)`` of every batch, in processing order."""
    n_rows = len(grid.rows) if max_strips is None else min(len(grid.rows), int(max_strips))
    plan = []
    for row_index in range(n_rows):
        windows = grid.row_windows(row_index)
        starts = list(range(0, len(windows), batch_size))
        for first in starts:
            plan.append((row_index, windows[first:first + batch_size], first == starts[-1]))
    return plan


def _stacked_reader(read):
    """``read`` for a batch of windows: ``(valid masks, one stacked array per input, seconds)``."""

    def load(batch_windows):
        t0 = time.perf_counter()
        reads = [read(window) for window in batch_windows]
        stacked = tuple(np.stack([r[0][i] for r in reads]) for i in range(len(reads[0][0])))
        return [r[1] for r in reads], stacked, time.perf_counter() - t0

    return load


def _check_predictions(predictions, n_windows, grid):
    expected = (n_windows, grid.tile_height, grid.tile_width)
    if predictions.ndim != 4 or (predictions.shape[0],) + predictions.shape[2:] != expected:
        raise ValueError(
            f"process returned shape {predictions.shape}, expected "
            f"({n_windows}, C, {grid.tile_height}, {grid.tile_width})"
        )


class _StripBuffer:
    """The weighted sums of one strip (``tile_height`` rows x the raster's width): tiles are
    added with their blending weights; finished rows are divided out and dropped."""

    def __init__(self, grid):
        self.grid = grid
        shape = (grid.tile_height, grid.width)
        self.acc = None  # (C, th, W) weighted sums, allocated at the first prediction
        self.wsum = np.zeros(shape, dtype=np.float32)
        self.valid = np.zeros(shape, dtype=bool)

    @property
    def nbytes(self):
        return (self.acc.nbytes if self.acc is not None else 0) + self.wsum.nbytes + self.valid.nbytes

    def add(self, window, prediction, valid):
        """One tile's prediction ``(C, h, w)`` with its ``valid`` mask, weighted."""
        if self.acc is None:
            self.acc = np.zeros((prediction.shape[0],) + self.wsum.shape, dtype=np.float32)
        weights = self.grid.weights(window)
        finite = np.isfinite(prediction).all(axis=0)
        if not finite.all():  # a pixel the method could not predict adds nothing
            weights = np.where(finite, weights, 0.0).astype(np.float32)
            prediction = np.where(finite[None], prediction, 0.0)
        cols = slice(window.col, window.col + window.width)
        self.acc[:, :, cols] += prediction * weights
        self.wsum[:, cols] += weights
        self.valid[:, cols] |= valid & (weights > 0)

    def pop_final_rows(self, row_index):
        """``(window, blended data, valid)`` of the rows no tile after tile row ``row_index``
        touches; the buffer then moves down to the next tile row."""
        grid = self.grid
        y0 = grid.rows[row_index]
        next_y = grid.rows[row_index + 1] if row_index + 1 < len(grid.rows) else grid.height
        n_final = next_y - y0
        out = self.acc[:, :n_final] / np.maximum(self.wsum[:n_final], 1e-12)[None]
        result = (Window(0, y0, grid.width, n_final), out, self.valid[:n_final] & (self.wsum[:n_final] > 0))
        keep = grid.tile_height - n_final
        if keep > 0:
            self.acc[:, :keep] = self.acc[:, n_final:]
            self.wsum[:keep] = self.wsum[n_final:]
            self.valid[:keep] = self.valid[n_final:]
        self.acc[:, keep:] = 0.0
        self.wsum[keep:] = 0.0
        self.valid[keep:] = False
        return result
