"""MODIS's sinusoidal grid over a fine UTM image: where each coarse pixel of a real MODIS product looks.

Gridded MODIS products (MOD09GA, MOD09A1, ...) are delivered on one global grid in a sinusoidal
projection of a sphere, with square pixels of 231.66, 463.31 or 926.63 m. Far from longitude 0 that
grid is strongly sheared against a local UTM grid: a 500 m pixel over Coleambally (145.9 E, 34 S) is a
parallelogram whose "vertical" side leans about 55 degrees, and a MODIS image brought onto the 30 m
Landsat grid by nearest neighbour is a mosaic of leaning blocks of about 15.4 px, not of aligned
16 x 16 squares. The simulator uses this module to render coarse images on that grid
(``coarse_grid="sinusoidal"`` and ``"sinusoidal-fine"``, docs/simulator.md).

Plain numpy and GDAL's ``osr``; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The MODIS land grid (MODLAND tile grid): a sphere, the projection's false origin, and the grid's
# top-left corner; tiles are 1111950.52 m wide and hold 4800, 2400 or 1200 pixels.
SPHERE_RADIUS = 6371007.181
GRID_LEFT = -20015109.354
GRID_TOP = 10007554.677
TILE_SIZE = 1111950.5197665
PIXEL_SIZES = {250: TILE_SIZE / 4800, 500: TILE_SIZE / 2400, 1000: TILE_SIZE / 1200}
SINUSOIDAL_PROJ4 = f"+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R={SPHERE_RADIUS} +units=m +no_defs"
# Points per side of each coarse pixel at which its footprint is sampled (about one 30 m pixel apart).
FOOTPRINT_SAMPLES = 16


def modis_pixel_size(resolution):
    """The MODIS grid's pixel size (m) nearest a nominal ``resolution`` (e.g. 480 -> 463.31)."""
    nominal = min(PIXEL_SIZES, key=lambda size: abs(math.log(size / float(resolution))))
    return PIXEL_SIZES[nominal]


def _srs(definition):
    from .raster import osr  # with GDAL's exceptions on, as everywhere in model_core

    srs = osr.SpatialReference()
    if isinstance(definition, int):
        srs.ImportFromEPSG(definition)
    else:
        srs.ImportFromProj4(definition)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def sinusoidal_wkt():
    return _srs(SINUSOIDAL_PROJ4).ExportToWkt()


def _transform(source, target, x, y):
    """(x, y) arrays from ``source`` to ``target`` (osr SpatialReferences)."""
    from .raster import osr

    points = np.stack([np.ravel(x), np.ravel(y)], axis=1).astype(np.float64)
    transformed = np.asarray(osr.CoordinateTransformation(source, target).TransformPoints(points))
    return transformed[:, 0].reshape(np.shape(x)), transformed[:, 1].reshape(np.shape(x))


def shear(epsg, x, y):
    """How far (m east per m north) a sinusoidal pixel's side leans against the UTM grid at (x, y)."""
    utm, sinusoidal = _srs(int(epsg)), _srs(SINUSOIDAL_PROJ4)
    sx, sy = _transform(utm, sinusoidal, np.array([x]), np.array([y]))
    step = 1000.0
    ux, uy = _transform(sinusoidal, utm, np.array([sx[0], sx[0]]), np.array([sy[0], sy[0] + step]))
    return float((ux[1] - ux[0]) / (uy[1] - uy[0]))


def reach(epsg, x, y, pixel_size):
    """How far (m) a sinusoidal cell that touches an image can reach beyond it: its footprint's
    east-west span on the UTM grid, ``(1 + |shear|) * pixel_size`` (its north-south span is one pixel)."""
    return (1.0 + abs(shear(epsg, x, y))) * pixel_size


@dataclass
class SinusoidalGrid:
    """The MODIS grid cells over a fine image: shape, geotransform, and their footprints on the fine grid.

    ``fine_origin``: the fine image's top-left corner (UTM m); ``resolution``: its pixel size;
    ``margin``: fine pixels of the simulator's world grid around the fine image.
    """

    epsg: int
    fine_origin: tuple
    resolution: float
    width: int
    height: int
    margin: int
    pixel_size: float
    shape: tuple = (0, 0)
    geotransform: tuple = ()

    def __post_init__(self):
        x0, y0 = self.fine_origin
        r = self.resolution
        # The fine image's outline, densified, in sinusoidal metres; its bounding box snapped to the grid.
        t = np.linspace(0.0, 1.0, 17)
        xs = np.concatenate([x0 + t * self.width * r, x0 + t * self.width * r, np.full(17, x0),
                             np.full(17, x0 + self.width * r)])
        ys = np.concatenate([np.full(17, y0), np.full(17, y0 - self.height * r), y0 - t * self.height * r,
                             y0 - t * self.height * r])
        sx, sy = _transform(_srs(int(self.epsg)), _srs(SINUSOIDAL_PROJ4), xs, ys)
        p = self.pixel_size
        col0 = math.floor((sx.min() - GRID_LEFT) / p)
        col1 = math.ceil((sx.max() - GRID_LEFT) / p)
        row0 = math.floor((GRID_TOP - sy.max()) / p)
        row1 = math.ceil((GRID_TOP - sy.min()) / p)
        self.shape = (row1 - row0, col1 - col0)
        self.geotransform = (GRID_LEFT + col0 * p, p, 0.0, GRID_TOP - row0 * p, 0.0, -p)

    def footprint_points(self, shift=(0.0, 0.0), samples=FOOTPRINT_SAMPLES):
        """(rows, cols), each (hc, wc, samples**2): where each cell's footprint falls on the world grid.

        Coordinates are in world fine pixels (pixel centres at ``i + 0.5``). ``shift``: (dy, dx) in
        coarse pixels, where the sensor really looked relative to the nominal cell (down/right)."""
        hc, wc = self.shape
        left, p, _, top, _, _ = self.geotransform
        offsets = (np.arange(samples) + 0.5) / samples
        sub_rows = (np.arange(hc)[:, None, None, None] + offsets[None, None, :, None] + shift[0])
        sub_cols = (np.arange(wc)[None, :, None, None] + offsets[None, None, None, :] + shift[1])
        sub_rows, sub_cols = np.broadcast_arrays(sub_rows, sub_cols)
        sx = left + sub_cols * p
        sy = top - sub_rows * p
        ux, uy = _transform(_srs(SINUSOIDAL_PROJ4), _srs(int(self.epsg)), sx, sy)
        x0, y0 = self.fine_origin
        cols = (ux - x0) / self.resolution + self.margin
        rows = (y0 - uy) / self.resolution + self.margin
        return rows.reshape(hc, wc, -1), cols.reshape(hc, wc, -1)


def footprint_mean(world, rows, cols):
    """Mean of ``world`` (B, Hw, Ww) over each cell's footprint points (bilinear), (B, hc, wc).

    A cell with any point off the world grid is NaN: the simulator knows nothing there."""
    world = np.asarray(world, dtype=np.float32)
    if world.ndim == 2:
        world = world[None]
    _, hw, ww = world.shape
    y = rows - 0.5
    x = cols - 0.5
    inside = (y >= 0) & (y <= hw - 1) & (x >= 0) & (x <= ww - 1)
    y = np.clip(y, 0, hw - 1)
    x = np.clip(x, 0, ww - 1)
    y0 = np.minimum(np.floor(y).astype(np.int64), hw - 2)
    x0 = np.minimum(np.floor(x).astype(np.int64), ww - 2)
    fy = (y - y0).astype(np.float32)
    fx = (x - x0).astype(np.float32)
    out = np.empty((world.shape[0],) + rows.shape[:2], dtype=np.float32)
    for band in range(world.shape[0]):
        image = world[band]
        top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
        bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
        out[band] = (top * (1 - fy) + bottom * fy).mean(axis=-1)
    out[:, ~inside.all(axis=-1)] = np.nan
    return out
