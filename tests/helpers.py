"""Helpers several test modules share: small georeferenced rasters, a tiny model file, a seam measure.

Rasters are GeoTIFFs written with GDAL in a UTM 33N grid (30 m fine pixels, 480 m
coarse ones, or the same area in EPSG:4326 / the MODIS sinusoidal grid); every one
is at most a few hundred pixels a side.
"""

from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from model_core.progress import Progress as _Progress

UTM33 = 32633
#: MODIS sinusoidal grid (as in MOD09GA files).
SINUSOIDAL = (
    'PROJCS["unnamed",GEOGCS["Unknown datum based upon the custom spheroid",DATUM["Not specified (based on custom '
    'spheroid)",SPHEROID["Custom spheroid",6371007.181,0]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Sinusoidal"],PARAMETER["longitude_of_center",0],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1]]'
)
FINE_ORIGIN = (500000.0, 4000000.0)  # UTM 33N, near 36.1N 15E


def wkt_of(crs):
    if isinstance(crs, str):
        return crs
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(crs)
    return srs.ExportToWkt()


def write_raster(path, data, geotransform, crs=UTM33, nodata=None, dtype=None, descriptions=None):
    """Write ``data`` (C, H, W) to a GeoTIFF and return its path as str."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    dtype = np.dtype(dtype or data.dtype)
    from osgeo import gdal_array

    count, height, width = data.shape
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), width, height, count, gdal_array.NumericTypeCodeToGDALTypeCode(dtype.type)
    )
    dataset.SetGeoTransform(tuple(geotransform))
    if crs is not None:
        dataset.SetProjection(wkt_of(crs))
    for index in range(count):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(data[index].astype(dtype))
        if nodata is not None:
            band.SetNoDataValue(float(nodata))
        if descriptions:
            band.SetDescription(descriptions[index])
    dataset = None
    return str(path)


def fine_geotransform(x0=FINE_ORIGIN[0], y0=FINE_ORIGIN[1], pixel=30.0):
    return (x0, pixel, 0.0, y0, 0.0, -pixel)


def smooth_field(bands, height, width, seed=0, base=1500.0, amplitude=600.0, noise=150.0):
    """A plausible reflectance field in DN: smooth waves plus texture, per band."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = []
    for band in range(bands):
        wave = np.sin(x / (9.0 + band) + band) * np.cos(y / (13.0 + band))
        out.append(base + 200 * band + amplitude * wave + noise * rng.standard_normal((height, width)))
    return np.stack(out)


def read_all(path):
    dataset = gdal.Open(str(path))
    data = dataset.ReadAsArray()
    return data if data.ndim == 3 else data[None]


def make_pair(folder, size=(120, 100), bands=6, fine_nodata=-9999, coarse_crs=UTM33, seed=0):
    """A fine int16 raster (UTM, 30 m) and a coarse one (480 m) covering it, in ``folder``."""
    width, height = size
    fine = smooth_field(bands, height, width, seed).astype(np.int16)
    fine_path = write_raster(folder / "fine.tif", fine, fine_geotransform(), nodata=fine_nodata)
    coarse_path = write_coarse(folder / "coarse.tif", width * 30.0, height * 30.0, bands, coarse_crs, seed + 1)
    return fine_path, coarse_path


#: MOD09's names of its seven land bands, as a band-description list.
MODIS_BAND_NAMES = tuple(f"sur_refl_b0{number}" for number in range(1, 8))


def write_coarse(path, extent_x, extent_y, bands=6, crs=UTM33, seed=1, pixel=480.0, nodata=-9999, descriptions=None):
    """A coarse raster covering the fine extent with a margin, in ``crs`` (480 m pixels,
    or the equivalent in degrees / the sinusoidal grid)."""
    x0, y0 = FINE_ORIGIN
    margin = 2 * pixel
    xmin, ymin, xmax, ymax = x0 - margin, y0 - extent_y - margin, x0 + extent_x + margin, y0 + margin
    if crs != UTM33:
        transform = osr.CoordinateTransformation(_srs(UTM33), _srs(crs))
        xmin, ymin, xmax, ymax = transform.TransformBounds(xmin, ymin, xmax, ymax, 21)
        if crs == 4326:
            pixel_x, pixel_y = pixel / 90000.0, pixel / 111000.0
        else:
            pixel_x = pixel_y = pixel
    else:
        pixel_x = pixel_y = pixel
    width = int(np.ceil((xmax - xmin) / pixel_x))
    height = int(np.ceil((ymax - ymin) / pixel_y))
    data = smooth_field(bands, height, width, seed, base=1800.0, amplitude=400.0, noise=80.0).astype(np.int16)
    return write_raster(path, data, (xmin, pixel_x, 0.0, ymax, 0.0, -pixel_y), crs=crs, nodata=nodata,
                        descriptions=descriptions)


def _srs(crs):
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt_of(crs))
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def save_test_model(path, kind="residual", bands=6, seed=0, gain=0.3):
    import torch

    from model_core.model_file import save_model
    from model_core.network import DEFAULT_BANDS, CTSTFM, CTSTFMConfig

    torch.manual_seed(seed)
    config = CTSTFMConfig(bands=bands, width=8, encoder_blocks=1, fusion_blocks=1, predict_residual=True)
    model = CTSTFM(config)
    with torch.no_grad():
        last = model.ccd.layers[-1]
        if kind == "identity":
            last.weight.zero_()
        else:  # PyTorch's default convolution initialisation, scaled (the network may start it at zero)
            torch.nn.init.kaiming_uniform_(last.weight, a=5**0.5)
            last.weight.mul_(gain)
        last.bias.zero_()
    names = list(DEFAULT_BANDS)[:bands] if bands <= 6 else [f"b{i}" for i in range(bands)]
    save_model(path, model, config=config, band_names=names, scale=1e-4, provenance={"test": kind, "seed": seed})
    return str(path)


def border_gradient_ratio(out, grid, margin=8):
    """Mean |horizontal gradient| across the tile edges / across every other column.

    Columns within ``margin`` of the image's own left and right borders are left
    out of both (a function with edge effects distorts the image border anyway)."""
    gx = np.abs(np.diff(out, axis=2)).mean(axis=(0, 1))  # gx[j]: between columns j and j+1
    ends = {c + grid.tile_width for c in grid.cols if c + grid.tile_width < grid.width}
    edges = {c for c in grid.cols if c > 0} | ends
    at = [e - 1 for e in sorted(edges)]
    elsewhere = [j for j in range(margin, gx.size - margin) if j not in at]
    return gx[at].mean() / gx[elsewhere].mean()


class Log(_Progress):
    """A progress that records the messages (and fractions), and can cancel after an epoch."""

    def __init__(self, cancel_after_epoch=None, cancel_at_once=False):
        self.messages = []
        self.fractions = []
        self.cancel_after_epoch = cancel_after_epoch
        self.cancelled = cancel_at_once

    def info(self, message):
        self.messages.append(message)
        if self.cancel_after_epoch and message.startswith(f"Epoch {self.cancel_after_epoch}/"):
            self.cancelled = True

    def update(self, fraction, message=None):
        self.fractions.append(fraction)

    def canceled(self):
        return self.cancelled

    def text(self):
        return "\n".join(self.messages)


def write_scaled_change_pair(folder, factor, size=96):
    """Two dates of green/red/NIR rasters in ``folder`` whose fine image changes by ``factor`` times the coarse
    change (coarse = fine at the first date, no noise); returns the training manifest's path. A fitted change
    gain on them is ``factor`` per band."""
    from model_core.training import write_manifest

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gt = fine_geotransform()
    fine0 = smooth_field(3, size, size, seed=11)
    change = smooth_field(3, size, size, seed=12, base=0.0, amplitude=300.0, noise=60.0)
    names = ["green", "red", "nir"]
    paths = {
        name: write_raster(folder / f"{name}.tif", data.astype(np.int16), gt, nodata=-9999, descriptions=names)
        for name, data in (("f0", fine0), ("c0", fine0), ("f1", fine0 + factor * change), ("c1", fine0 + change))
    }
    return write_manifest(folder / "m.csv", [("2021-06-01", paths["f0"], paths["c0"]),
                                             ("2021-07-01", paths["f1"], paths["c1"])])
