"""model_core.tiling: tile plans, blending weights, seams, halo, batching, memory, cancel.

The engine runs on plain in-memory arrays here (read/process/write callbacks), so
these tests are exact and fast; test_fusion.py runs it on rasters with the network.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import CancelAfter
from helpers import border_gradient_ratio
from model_core.errors import Cancelled, CtstfmError
from model_core.progress import Progress
from model_core.raster import Window
from model_core.tiling import TileGrid, check_tile_overlap, plan_tiles, run_tiled


class ArrayJob:
    """read/process/write over an in-memory image; records what the engine did."""

    def __init__(self, image, function, valid=None):
        self.image = image
        self.function = function
        self.valid = np.ones(image.shape[1:], bool) if valid is None else valid
        self.out = np.full(image.shape, np.nan, np.float32)
        self.out_valid = np.zeros(image.shape[1:], bool)
        self.writes = []
        self.batches = []

    def read(self, window):
        rows, cols = window.slices
        return (self.image[:, rows, cols],), self.valid[rows, cols]

    def process(self, batch):
        self.batches.append(batch[0].shape)
        return self.function(batch[0])

    def write(self, window, data, valid):
        rows, cols = window.slices
        assert np.isnan(self.out[:, rows, cols]).all(), "a row was written twice"
        self.out[:, rows, cols] = data
        self.out_valid[rows, cols] = valid
        self.writes.append(window)

    def run(self, **kwargs):
        return run_tiled(self.image.shape[2], self.image.shape[1], self.read, self.process, self.write, **kwargs)


def blur(radius, passes=1, padding="zeros"):
    """A local per-tile function with tile-edge effects (zero padding): a box blur."""

    def function(x):
        t = torch.from_numpy(np.ascontiguousarray(x))
        k = 2 * radius + 1
        weight = torch.full((t.shape[1], 1, k, k), 1.0 / k**2)
        for _ in range(passes):
            if padding == "zeros":
                t = F.conv2d(t, weight, padding=radius, groups=t.shape[1])
            else:
                t = F.conv2d(F.pad(t, (radius,) * 4, mode="replicate"), weight, groups=t.shape[1])
        return t.numpy()

    return function


def texture(bands=2, height=150, width=170, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.sin(x / 11.0)[None] * np.cos(y / 7.0)[None] + 1.5
    return (smooth + 0.3 * rng.random((bands, height, width))).astype(np.float32)


def test_plan_tiles():
    grid = plan_tiles(170, 150, tile=64, overlap=16)
    assert isinstance(grid, TileGrid)
    assert grid.cols == (0, 48, 96, 106) and grid.rows == (0, 48, 86)  # last tile moved back onto the edge
    assert (grid.tile_width, grid.tile_height, grid.n_tiles) == (64, 64, 12)
    assert all(w.col + w.width <= 170 and w.row + w.height <= 150 for w in grid.windows())
    small = plan_tiles(40, 30, tile=256, overlap=32)  # smaller than a tile: one tile of the raster's size
    assert (small.tile_width, small.tile_height, small.n_tiles) == (40, 30, 1)
    assert plan_tiles(256, 256, 256, 32).n_tiles == 1
    assert plan_tiles(100, 10, tile=64, overlap=0).cols == (0, 36)


def test_tile_must_exceed_twice_the_overlap():
    for tile, overlap in ((64, 32), (64, 40), (10, 5)):
        with pytest.raises(CtstfmError, match="more than twice the overlap"):
            check_tile_overlap(tile, overlap)
    with pytest.raises(CtstfmError, match="twice the halo"):
        check_tile_overlap(64, 20, halo=15)
    with pytest.raises(CtstfmError, match="negative"):
        plan_tiles(100, 100, 64, -1)
    check_tile_overlap(65, 32)
    check_tile_overlap(64, 30, halo=15)


def test_weights_ramp_across_the_overlap_and_keep_borders_at_one():
    grid = plan_tiles(170, 150, tile=64, overlap=16)
    w = grid.weights(Window(48, 48, 64, 64))  # an interior tile
    assert w.max() == 1.0 and w[32, 32] == 1.0 and 0 < w[0, 0] < w[0, 8] < w[0, 32]
    np.testing.assert_allclose(w[32, :16], np.sin(np.pi / 2 * (np.arange(16) + 0.5) / 16) ** 2, rtol=1e-6)
    corner = grid.weights(Window(0, 0, 64, 64))  # top-left tile: image borders keep full weight
    assert corner[0, 0] == 1.0 and corner[0, 63] < 0.01
    # Two neighbours overlapping by exactly `overlap` pixels cross-fade to a sum of 1.
    left, right = grid.weights(Window(0, 48, 64, 64)), grid.weights(Window(48, 48, 64, 64))
    np.testing.assert_allclose(left[32, 48:] + right[32, :16], 1.0, rtol=1e-6)
    haloed = plan_tiles(170, 150, tile=64, overlap=30, halo=10).weights(Window(50, 50, 64, 64))
    assert (haloed[32, :10] == 0).all() and (haloed[32, 10:20] > 0).all() and haloed[32, 20] == 1.0


@pytest.mark.parametrize(
    "size, tile, overlap, batch",
    [
        ((170, 150), 64, 16, 1),
        ((170, 150), 64, 0, 3),
        ((97, 53), 256, 32, 2),
        ((200, 61), 65, 32, 4),
        ((33, 200), 48, 8, 2),
    ],
)
def test_identity_comes_back_exactly_and_every_row_is_written_once(size, tile, overlap, batch):
    image = texture(height=size[1], width=size[0])
    job = ArrayJob(image, lambda x: x * 2.0)
    stats = job.run(tile=tile, overlap=overlap, batch_size=batch)
    np.testing.assert_allclose(job.out, 2.0 * image, rtol=1e-6)
    assert job.out_valid.all()
    rows = [w.row for w in job.writes]
    assert rows == sorted(rows) and all(w.col == 0 and w.width == size[0] for w in job.writes)
    assert sum(w.height for w in job.writes) == size[1]
    assert max(shape[0] for shape in job.batches) <= batch
    assert stats.n_tiles == plan_tiles(size[0], size[1], tile, overlap).n_tiles


def test_halo_makes_a_local_function_match_the_whole_image_exactly():
    image = texture()
    radius = 3
    whole = blur(radius, padding="replicate")(image[None])[0]
    job = ArrayJob(image, blur(radius, padding="replicate"))
    job.run(tile=64, overlap=2 * radius, halo=radius)
    # Interior tile edges see real context: identical to one pass over the whole image.
    np.testing.assert_allclose(job.out, whole, atol=1e-5)


def test_blending_removes_seams_of_a_function_with_edge_effects():
    rng = np.random.default_rng(3)
    image = (1.0 + 0.2 * rng.random((2, 160, 200))).astype(np.float32)  # stationary texture
    seams = {}
    for overlap in (0, 32):
        job = ArrayJob(image, blur(2, passes=2, padding="zeros"))  # darkens every tile's edges
        job.run(tile=96, overlap=overlap)
        seams[overlap] = border_gradient_ratio(job.out, plan_tiles(200, 160, 96, overlap))
    assert seams[0] > 1.5  # without overlap the tile edges show
    assert abs(seams[32] - 1.0) < 0.05  # with 32 px blended they do not


def test_memory_is_a_strip_whatever_the_height():
    sizes = {}
    for height in (100, 700):
        job = ArrayJob(np.ones((3, height, 120), np.float32), lambda x: x)
        sizes[height] = job.run(tile=64, overlap=16).strip_buffer_bytes
        assert job.out_valid.all()
    assert sizes[100] == sizes[700] <= 64 * 120 * (3 * 4 + 4 + 1)


def test_invalid_pixels_and_unpredictable_pixels_come_out_invalid_never_nan():
    image = texture(bands=1, height=80, width=90)
    valid = np.ones((80, 90), bool)
    valid[10:20, 10:20] = False

    def nan_corner(x):
        y = x.copy()
        y[:, :, :2, :2] = np.nan  # the function cannot predict these
        return y

    job = ArrayJob(image, nan_corner, valid)
    job.run(tile=48, overlap=8)
    assert np.isfinite(job.out).all()
    assert not job.out_valid[10:20, 10:20].any() and not job.out_valid[0, 0]
    assert job.out_valid.sum() == 80 * 90 - 100 - 4
    np.testing.assert_allclose(job.out[:, job.out_valid], image[:, job.out_valid], rtol=1e-6)


def test_cancel_is_checked_before_every_batch():
    job = ArrayJob(texture(), lambda x: x)
    with pytest.raises(Cancelled):
        job.run(tile=64, overlap=16, progress=CancelAfter(5))
    assert len(job.batches) == 5


def test_progress_reaches_one_and_max_strips_stops_early():
    updates = []

    class Recorder(Progress):
        def update(self, fraction, message=None):
            updates.append(fraction)

    job = ArrayJob(texture(), lambda x: x)
    job.run(tile=64, overlap=16, batch_size=2, progress=Recorder())
    assert updates[0] == 0.0 and updates[-1] == 1.0 and updates == sorted(updates)
    partial = ArrayJob(texture(), lambda x: x)
    stats = partial.run(tile=64, overlap=16, max_strips=1)
    assert stats.n_tiles == 4 and len(partial.writes) == 1 and partial.writes[0].height == 48


def test_process_with_wrong_shape_is_a_bug_not_a_user_error():
    job = ArrayJob(texture(), lambda x: x[:, :, :10])
    with pytest.raises(ValueError, match="process returned shape"):
        job.run(tile=64, overlap=16)


def test_prefetching_reads_ahead_in_one_thread_and_changes_nothing():
    import threading

    class ThreadRecorder(ArrayJob):
        def read(self, window):
            self.readers = getattr(self, "readers", set()) | {threading.get_ident()}
            return super().read(window)

    ahead, inline = ThreadRecorder(texture(), blur(2)), ThreadRecorder(texture(), blur(2))
    ahead.run(tile=64, overlap=16, batch_size=2)
    inline.run(tile=64, overlap=16, batch_size=2, prefetch=False)
    np.testing.assert_array_equal(ahead.out, inline.out)
    assert inline.readers == {threading.get_ident()}
    assert len(ahead.readers) == 1 and ahead.readers != inline.readers


def test_prefetcher_keeps_order_raises_errors_in_place_and_stops_on_close():
    from model_core.prefetch import Prefetcher

    squares = Prefetcher(lambda n: n * n, range(5))
    assert list(squares) == [0, 1, 4, 9, 16]
    squares.close()

    def produce(n):
        if n == 2:
            raise KeyError("bad item")
        return n

    got, items = [], Prefetcher(produce, range(5))
    with pytest.raises(KeyError, match="bad item"):
        for item in items:
            got.append(item)
    items.close()
    assert got == [0, 1]

    produced = []
    items = Prefetcher(produced.append, range(1000), depth=1)
    next(iter(items))
    items.close()
    assert len(produced) < 1000 and not items._thread.is_alive()
