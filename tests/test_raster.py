"""model_core.raster: opening, describing, reading (and warping) windows, pairs, writing.

The small raster helpers (``write_raster``, ``UTM33``, ``SINUSOIDAL``...) are in
``tests/helpers.py``. Every raster here is at most 200 px a side.
"""

import os

import numpy as np
import pytest
from osgeo import gdal

from helpers import (
    FINE_ORIGIN,
    SINUSOIDAL,
    UTM33,
    fine_geotransform,
    make_pair,
    read_all,  # noqa: F401 (tests written before helpers.py import it from here)
    smooth_field,
    wkt_of,
    write_coarse,
    write_raster,
)

from model_core.errors import CtstfmError
from model_core.raster import (
    FLOAT_NODATA,
    OutputSpec,
    PairReader,
    RasterInfo,
    RasterReader,
    RasterWriter,
    Window,
    check_writable,
    default_nodata,
    open_raster,
    output_spec,
    parse_band_list,
    read_metadata,
    to_output_dtype,
)


# --------------------------------------------------------------------------- opening


def test_open_missing_unreadable_and_folder(tmp_path):
    with pytest.raises(CtstfmError, match="does not exist"):
        open_raster(tmp_path / "nope.tif", "fine image")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(CtstfmError, match="could not be read as a raster"):
        open_raster(text, "coarse image")
    with pytest.raises(CtstfmError, match="folder"):
        open_raster(tmp_path, "fine image")
    with pytest.raises(CtstfmError, match="No fine image"):
        open_raster("", "fine image")


def test_raster_info(tmp_path):
    data = np.arange(2 * 30 * 40, dtype=np.uint16).reshape(2, 30, 40)
    path = write_raster(tmp_path / "a.tif", data, fine_geotransform(), nodata=0, descriptions=["red", "nir"])
    info = RasterInfo.read(path)
    assert (info.width, info.height, info.count) == (40, 30, 2)
    assert info.shape == (2, 30, 40)
    assert info.dtype == "uint16" and info.nodata == (0.0, 0.0) and info.descriptions == ("red", "nir")
    assert info.geotransform == fine_geotransform() and info.pixel_size == (30.0, -30.0) and info.is_north_up
    assert info.bounds == (500000.0, 4000000.0 - 900.0, 500000.0 + 1200.0, 4000000.0)
    assert info.window_bounds(Window(10, 5, 2, 3)) == (500300.0, 4000000.0 - 240.0, 500360.0, 4000000.0 - 150.0)
    assert info.window_transform(Window(10, 5, 2, 3))[0::3] == (500300.0, 4000000.0 - 150.0)
    assert "UTM zone 33N" in info.crs_wkt
    lon_lat = info.bounds_in(wkt_of(4326))
    assert 14.9 < lon_lat[0] < 15.1 and 36.0 < lon_lat[1] < 36.2
    assert info.same_grid(RasterInfo.read(path))


def test_parse_band_list():
    assert parse_band_list(None, 7, 6) == [1, 2, 3, 4, 5, 6]
    assert parse_band_list("", 3) == [1, 2, 3]
    assert parse_band_list("3,4,1,2,6,7", 7, 6) == [3, 4, 1, 2, 6, 7]
    assert parse_band_list("3 4 1", 4, 3) == [3, 4, 1]
    assert parse_band_list([2, 1], 2, 2) == [2, 1]
    with pytest.raises(CtstfmError, match="has 3 band.*needs 6"):
        parse_band_list(None, 3, 6, "fine image", ["b", "g", "r", "n", "s1", "s2"])
    with pytest.raises(CtstfmError, match="do not exist"):
        parse_band_list("1,9", 7, 2)
    with pytest.raises(CtstfmError, match="needs 6"):
        parse_band_list("1,2", 7, 6)
    with pytest.raises(CtstfmError, match="not a comma-separated"):
        parse_band_list("red,nir", 7, 2)


# --------------------------------------------------------------------------- reading


def test_read_window_bands_and_mask(tmp_path):
    data = np.arange(3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    data[1, 2, 3] = -1.0  # nodata in one band only -> pixel invalid
    data[2, 4, 5] = np.nan  # NaN -> invalid
    path = write_raster(tmp_path / "f.tif", data, fine_geotransform(), nodata=-1.0)
    with RasterReader(path, bands=[3, 2]) as reader:
        assert not reader.warped and reader.count == 2
        values, valid = reader.read(Window(1, 1, 10, 6))
    assert values.dtype == np.float32 and values.shape == (2, 6, 10) and valid.shape == (6, 10)
    np.testing.assert_array_equal(values[0][valid], data[2, 1:7, 1:11][valid])
    np.testing.assert_array_equal(values[1], data[1, 1:7, 1:11])
    assert not valid[1, 2] and not valid[3, 4] and valid.sum() == 58
    with pytest.raises(ValueError):
        RasterReader(path).read(Window(25, 0, 10, 5))


def test_read_reflectance_scales_and_clips(tmp_path):
    data = np.array([[[-50, 0, 1234, 10000]]], dtype=np.int16)
    path = write_raster(tmp_path / "r.tif", data, fine_geotransform())
    with RasterReader(path) as reader:
        values, valid = reader.read_reflectance(Window(0, 0, 4, 1), 1e-4)
    np.testing.assert_allclose(values[0, 0], [0.0, 0.0, 0.1234, 1.0], rtol=1e-6)
    assert valid.all()


def test_raster_on_same_grid_passes_through_unwarped(tmp_path):
    data = smooth_field(2, 40, 50).astype(np.int16)
    a = write_raster(tmp_path / "a.tif", data, fine_geotransform())
    b = write_raster(tmp_path / "b.tif", data + 1, fine_geotransform())
    with RasterReader(b, grid=RasterInfo.read(a), resampling="cubic") as reader:
        assert not reader.warped
        values, _ = reader.read(Window(0, 0, 50, 40))
    np.testing.assert_array_equal(values, data + 1)


def test_warp_to_grid_is_lazy_keeps_nodata_and_marks_outside_invalid(tmp_path):
    fine = write_raster(tmp_path / "f.tif", np.zeros((1, 100, 100), np.int16), fine_geotransform())
    # Coarse 480 m covering only the left half of the fine extent, one nodata pixel inside.
    coarse = np.full((1, 8, 4), 1000, dtype=np.int16)
    coarse[0, 2, 1] = -9999
    x0, y0 = FINE_ORIGIN
    coarse_path = write_raster(tmp_path / "c.tif", coarse, (x0 - 480, 480, 0, y0 + 480, 0, -480), nodata=-9999)
    grid = RasterInfo.read(fine)
    with RasterReader(coarse_path, grid=grid, resampling="nearest") as reader:
        assert reader.warped
        assert reader._dataset.GetDriver().ShortName == "VRT"  # warped window by window, on demand
        values, valid = reader.read(Window(0, 0, 100, 100))
        fraction = reader.valid_fraction(max_size=50)
    # Columns 0..47 (x < 1440 m) are covered, the rest is outside the coarse raster.
    assert valid[:, :40].sum() > 0 and not valid[:, 50:].any()
    # Coarse pixel (row 2, col 1) spans fine x [0, 480) m, y [480, 960) m below y0 -> rows 16..31, cols 0..15.
    assert not valid[16:32, 0:16].any() and valid[40:, 0:16].all()
    assert np.all(values[0][valid] == 1000) and np.isnan(values[0][~valid]).all()
    assert 0.2 < fraction < 0.6


def test_warp_from_sinusoidal_and_geographic(tmp_path):
    fine = write_raster(tmp_path / "f.tif", np.zeros((1, 60, 60), np.int16), fine_geotransform())
    grid = RasterInfo.read(fine)
    for crs in (SINUSOIDAL, 4326):
        coarse = write_coarse(tmp_path / f"c{hash(str(crs)) % 1000}.tif", 1800.0, 1800.0, bands=2, crs=crs)
        with RasterReader(coarse, bands=[2, 1], grid=grid) as reader:
            assert reader.warped
            values, valid = reader.read(Window(5, 5, 50, 50))
        assert valid.all() and np.isfinite(values).all()
        assert 1000 < values.mean() < 3000


def test_valid_fraction_of_a_big_raster_samples_it_and_never_misses_a_small_valid_area(tmp_path):
    data = np.full((1, 100, 120), -1, np.int16)
    data[:, 40:60, :] = 5  # valid rows 40..59: a fifth of the raster
    path = write_raster(tmp_path / "a.tif", data, fine_geotransform(), nodata=-1)
    with RasterReader(path) as reader:
        assert reader.valid_fraction() == pytest.approx(0.2, abs=0.02)  # decimated read
        sampled = reader._sample_own_grid(256, samples=6, box=4, decimate_below=0)[1].mean()
        assert 0.1 < sampled < 0.4  # boxes
    data[:] = -1
    data[0, 20:23, 20:23] = 5  # a tiny valid patch between the boxes
    path = write_raster(tmp_path / "b.tif", data, fine_geotransform(), nodata=-1)
    with RasterReader(path) as reader:
        assert reader._sample_own_grid(256, samples=3, box=4, decimate_below=0)[1].mean() == pytest.approx(9 / 12000)


def test_pair_reader_fills_invalid_pixels_and_maps_bands(tmp_path):
    fine_path, coarse_path = make_pair(tmp_path, size=(60, 50), bands=7)
    dataset = gdal.Open(fine_path, gdal.GA_Update)
    for band in range(1, 8):
        block = dataset.GetRasterBand(band).ReadAsArray()
        block[:10, :10] = -9999  # fine nodata
        block[20, 20] = -300  # negative DN -> reflectance 0
        dataset.GetRasterBand(band).WriteArray(block)
    dataset = None
    with PairReader(fine_path, coarse_path, coarse_bands="3,4,1,2,6,7", n_bands=6, scale=1e-4) as pair:
        assert pair.count == 6 and pair.coarse.bands == [3, 4, 1, 2, 6, 7] and pair.fine.bands == [1, 2, 3, 4, 5, 6]
        assert pair.coarse.warped
        fine, coarse, valid = pair.read(Window(0, 0, 60, 50))
        pair.check_coverage()
    assert fine.shape == coarse.shape == (6, 50, 60)
    assert not valid[:10, :10].any() and valid[10:, 10:].all()
    for array in (fine, coarse):
        assert np.isfinite(array).all() and array.min() >= 0.0 and array.max() < 1.0
    # Invalid fine pixels took the coarse value.
    np.testing.assert_array_equal(fine[:, :10, :10], coarse[:, :10, :10])
    assert fine[0, 20, 20] == 0.0
    with RasterReader(coarse_path, bands=[3], grid=pair.grid) as direct:
        np.testing.assert_allclose(direct.read(Window(0, 0, 60, 50))[0][0] * 1e-4, coarse[0], rtol=1e-6)


def test_pair_reader_errors(tmp_path):
    fine_path, coarse_path = make_pair(tmp_path, size=(40, 40), bands=3)
    with pytest.raises(CtstfmError, match="has 3 band.*needs 6"):
        PairReader(fine_path, coarse_path, n_bands=6)
    far = write_raster(
        tmp_path / "far.tif", np.ones((3, 10, 10), np.int16), (700000, 480, 0, 4000000, 0, -480), crs=UTM33
    )
    with pytest.raises(CtstfmError, match="does not overlap"):
        PairReader(fine_path, far, n_bands=3)
    x0, y0 = FINE_ORIGIN
    empty = write_raster(
        tmp_path / "empty.tif", np.full((3, 6, 6), -9999, np.int16), (x0 - 480, 480, 0, y0 + 480, 0, -480), nodata=-9999
    )
    with PairReader(fine_path, empty, n_bands=3) as pair, pytest.raises(CtstfmError, match="no valid pixels"):
        pair.check_coverage()
    nocrs = write_raster(tmp_path / "nocrs.tif", np.ones((3, 6, 6), np.int16), (0, 480, 0, 0, 0, -480), crs=None)
    with pytest.raises(CtstfmError, match="coordinate reference system"):
        PairReader(fine_path, nocrs, n_bands=3)


# --------------------------------------------------------------------------- writing


def test_output_spec_and_conversion():
    info = RasterInfo("f", 1, 1, 1, "", fine_geotransform(), (None,), "uint16", ("",))
    spec = output_spec(info, "input", 1e-4)
    assert spec == OutputSpec("uint16", 65535.0, 1e-4)
    assert output_spec(info, "float32") == OutputSpec("float32", FLOAT_NODATA, None)
    assert default_nodata("int16") == -32768 and default_nodata("uint8") == 255 and default_nodata("float64") == -9999
    with pytest.raises(CtstfmError):
        output_spec(info, "float16")
    refl = np.array([[[0.12344, 0.00006, 7.0, np.nan, 0.5]]], dtype=np.float32)
    valid = np.array([[True, True, True, True, False]])
    out = to_output_dtype(refl, valid, OutputSpec("int16", -9999.0, 1e-4))
    assert out.dtype == np.int16 and out.tolist() == [[[1234, 1, 32767, -9999, -9999]]]
    # A valid value equal to nodata (0 here, as in Landsat C2) is moved off it.
    out = to_output_dtype(np.zeros((1, 1, 2), np.float32), np.array([[True, False]]), OutputSpec("uint16", 0.0, 1e-4))
    assert out.tolist() == [[[1, 0]]]
    out = to_output_dtype(refl, valid, OutputSpec("float32", FLOAT_NODATA, None))
    assert np.isfinite(out).all() and out[0, 0, 3] == FLOAT_NODATA and out[0, 0, 0] == np.float32(0.12344)


def test_writer_writes_georeferenced_tiled_compressed_geotiff(tmp_path):
    grid = RasterInfo.read(write_raster(tmp_path / "g.tif", np.zeros((2, 30, 40), np.int16), fine_geotransform()))
    out = tmp_path / "out.tif"
    spec = OutputSpec("int16", -9999.0, 1e-4)
    with RasterWriter(out, grid, 2, spec, descriptions=["red", "nir"], metadata={"CTSTFM_MODEL": "m.pt", "N": 3}) as w:
        data = np.full((2, 30, 40), 0.25, np.float32)
        valid = np.ones((30, 40), bool)
        valid[0, 0] = False
        w.write(Window(0, 0, 40, 20), data[:, :20], valid[:20])
        w.write(Window(0, 20, 40, 10), data[:, 20:], valid[20:])
        assert not out.exists()  # only the temporary file so far
    assert sorted(os.listdir(tmp_path)) == ["g.tif", "out.tif"]
    dataset = gdal.Open(str(out))
    assert dataset.GetGeoTransform() == grid.geotransform and "UTM zone 33N" in dataset.GetProjection()
    band = dataset.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Int16 and band.GetNoDataValue() == -9999 and band.GetDescription() == "red"
    assert band.GetBlockSize() == [256, 256]
    assert dataset.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    values = dataset.ReadAsArray()
    assert values[0, 0, 0] == -9999 and (values.reshape(2, -1)[:, 1:] == 2500).all()
    assert read_metadata(out)["CTSTFM_MODEL"] == "m.pt" and read_metadata(out)["N"] == "3"


def test_writer_cog(tmp_path):
    grid = RasterInfo.read(write_raster(tmp_path / "g.tif", np.zeros((1, 30, 40), np.int16), fine_geotransform()))
    out = tmp_path / "out.tif"
    with RasterWriter(out, grid, 1, OutputSpec("float32", FLOAT_NODATA, None), fmt="COG", metadata={"A": "b"}) as w:
        w.write(Window(0, 0, 40, 30), np.ones((1, 30, 40), np.float32), np.ones((30, 40), bool))
    assert sorted(os.listdir(tmp_path)) == ["g.tif", "out.tif"]
    dataset = gdal.Open(str(out))
    assert dataset.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert dataset.GetMetadata()["A"] == "b" and dataset.GetRasterBand(1).GetNoDataValue() == FLOAT_NODATA


def test_writer_abort_and_exception_leave_nothing(tmp_path):
    grid = RasterInfo.read(write_raster(tmp_path / "g.tif", np.zeros((1, 10, 10), np.int16), fine_geotransform()))
    out = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="boom"):
        with RasterWriter(out, grid, 1, OutputSpec("int16", -1.0, None)) as writer:
            writer.write(Window(0, 0, 10, 10), np.ones((1, 10, 10)), np.ones((10, 10), bool))
            raise RuntimeError("boom")
    writer = RasterWriter(out, grid, 1, OutputSpec("int16", -1.0, None), fmt="COG")
    writer.abort()
    assert sorted(os.listdir(tmp_path)) == ["g.tif"]


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    with pytest.raises(CtstfmError, match="does not exist"):
        check_writable(tmp_path / "missing" / "out.tif")
    with pytest.raises(CtstfmError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(CtstfmError, match="No output"):
        check_writable("")
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        with pytest.raises(CtstfmError, match="Cannot write"):
            check_writable(locked / "out.tif")
    assert check_writable(tmp_path / "ok.tif") == str(tmp_path / "ok.tif")
    assert os.listdir(tmp_path) == [] or "ok.tif" not in os.listdir(tmp_path)


def test_a_damaged_raster_is_a_clear_error_with_gdal_exceptions_on(tmp_path):
    # GDAL raises exceptions (model_core turns them on); a block that cannot be read is still our message.
    path = str(tmp_path / "damaged.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(
        path, 128, 128, 1, gdal.GDT_Int16, ["TILED=YES", "BLOCKXSIZE=64", "BLOCKYSIZE=64"]
    )
    dataset.SetGeoTransform((500000, 30, 0, 4000000, 0, -30))
    dataset.GetRasterBand(1).WriteArray(np.arange(128 * 128, dtype=np.int16).reshape(128, 128))
    dataset = None
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with RasterReader(path, what="fine image") as reader:
        with pytest.raises(CtstfmError, match=r"Reading the fine image .*damaged.tif' failed: .*"):
            reader.read(Window(0, 0, 128, 128))


def test_a_container_of_subdatasets_is_named_and_its_subdatasets_open(tmp_path):
    """A MODIS HDF or a netCDF holds subdatasets, not bands: the error names them and the GDAL command that stacks
    them; a subdataset's name (what QGIS hands over for such a layer) opens like a file, and the stack fuses as
    the GeoTIFF it came from does."""
    from model_core.fusion import fuse

    fine = write_raster(tmp_path / "fine.tif", smooth_field(6, 64, 64, seed=3).astype(np.int16), fine_geotransform(),
                        nodata=-9999)
    coarse = write_coarse(tmp_path / "coarse.tif", 64 * 30.0, 64 * 30.0, 6, UTM33)
    container = str(tmp_path / "coarse.nc")
    gdal.Translate(container, coarse, format="netCDF")  # one variable per band: Band1 ... Band6
    with pytest.raises(CtstfmError, match=r"coarse image '.*coarse\.nc' is a container of 6 subdatasets, not one image "
                       r"\(Band1, Band2, Band3 and 3 more; gdalinfo lists their full names, such as 'NETCDF:\".*coarse"
                       r"\.nc\":Band1'\)\. Stack .* gdalbuildvrt -separate "):
        fuse(fine, container, None, tmp_path / "refused.tif", device="cpu")
    assert not (tmp_path / "refused.tif").exists()
    names = [name for name, _ in gdal.Open(container).GetSubDatasets()]
    info = RasterInfo.read(names[1])
    assert info.count == 1 and info.width == gdal.Open(coarse).RasterXSize
    with pytest.raises(CtstfmError, match=r"'NETCDF:\".*missing\.nc\":Band1' does not exist"):
        RasterInfo.read(names[0].replace("coarse.nc", "missing.nc"), "coarse image")
    # A manifest names a subdataset as it names a file, relative to the manifest's folder (MODIS's state_1km as a
    # coarse cloud mask); a missing file is named.
    from model_core.training.series import read_manifest

    (tmp_path / "series.csv").write_text(
        'date,fine,coarse,coarse_mask\n2021-06-01,fine.tif,coarse.tif,"NETCDF:""coarse.nc"":Band2"\n')
    pair = read_manifest(tmp_path / "series.csv")[0]
    assert pair.coarse_mask == f'NETCDF:"{tmp_path / "coarse.nc"}":Band2'
    assert RasterInfo.read(pair.coarse_mask).count == 1
    (tmp_path / "series.csv").write_text('date,fine,coarse,coarse_mask\n2021-06-01,fine.tif,coarse.tif,'
                                         '"NETCDF:""elsewhere.nc"":Band2"\n')
    with pytest.raises(CtstfmError, match=r"Line 2 of the manifest .*series\.csv: the coarse mask raster .*elsewhere\.nc "
                       r"does not exist"):
        read_manifest(tmp_path / "series.csv")
    gdal.BuildVRT(str(tmp_path / "stack.vrt"), names, separate=True)
    fuse(fine, str(tmp_path / "stack.vrt"), None, tmp_path / "from_stack.tif", device="cpu")
    fuse(fine, coarse, None, tmp_path / "from_tif.tif", device="cpu")
    assert np.array_equal(read_all(tmp_path / "from_stack.tif"), read_all(tmp_path / "from_tif.tif"))


def test_coarse_pixel_ids_on_the_coarse_grid_any_crs_and_stand_in_blocks(tmp_path):
    from model_core.raster import coarse_pixel_ids

    fine = write_raster(tmp_path / "fine.tif", np.zeros((1, 40, 40), np.int16), fine_geotransform())
    # Aligned 120 m pixels starting half a coarse pixel left of and above the fine corner.
    x0, y0 = FINE_ORIGIN
    aligned = write_raster(tmp_path / "aligned.tif", np.zeros((1, 12, 12), np.int16),
                           (x0 - 60.0, 120.0, 0.0, y0 + 60.0, 0.0, -120.0))
    ids = coarse_pixel_ids(fine, aligned)
    rows, cols = np.mgrid[0:40, 0:40]
    expected = ((rows + 2) // 4) * 100 + (cols + 2) // 4  # any numbering with the same groups
    assert ids.shape == (40, 40) and (ids >= 0).all()
    assert len(np.unique(ids)) == len(np.unique(expected)) == 121
    pairs = np.unique(np.stack([ids.ravel(), expected.ravel()]), axis=1)
    assert pairs.shape[1] == 121  # one id per coarse pixel, one coarse pixel per id
    # MODIS's sinusoidal grid: each fine pixel gets the cell that covers its centre.
    sinusoidal = write_coarse(tmp_path / "modis.tif", 40 * 30.0, 40 * 30.0, bands=1, crs=SINUSOIDAL, pixel=463.3)
    ids = coarse_pixel_ids(fine, sinusoidal)
    assert (ids >= 0).all() and 4 <= len(np.unique(ids)) <= 16
    sizes = np.bincount(np.unique(ids, return_inverse=True)[1].ravel())
    assert sizes.max() <= (463.3 / 30.0 + 2) ** 2
    # Already on the fine grid: the coarse pixels are unknown unless a block size stands in.
    on_fine = write_raster(tmp_path / "on_fine.tif", np.zeros((1, 40, 40), np.int16), fine_geotransform())
    assert coarse_pixel_ids(fine, on_fine) is None
    blocks = coarse_pixel_ids(fine, on_fine, block=16)
    assert len(np.unique(blocks)) == 9 and len(np.unique(blocks[:16, :16])) == 1
