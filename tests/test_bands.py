"""Band names (model_core.bands): aliases, matching a model to rasters, and a model cut down to some bands."""

import numpy as np
import pytest
import torch
from osgeo import gdal

from test_raster import UTM33, fine_geotransform, read_all, write_coarse, write_raster

from model_core.bands import (
    BandNameError,
    band_from_description,
    canonical_band,
    match_bands,
    parse_band_names,
    select_bands_by_name,
)
from model_core.metrics import compute_metrics
from model_core.network import CTSTFM, CTSTFMConfig
from model_core.paths import DEFAULT_MODEL, SAMPLE_DIR
from model_core.raster import RasterInfo, RasterReader, Window

MODEL_BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Red", "red"), ("NIR", "nir"), ("near infrared", "nir"), ("SWIR-1", "swir1"), ("swir 2", "swir2"),
        ("B", "blue"), ("g", "green"), ("tm3", "red"), ("TM:4", "nir"), ("etm+5", "swir1"), ("L7_B7", "swir2"),
        ("oli:B5", "nir"), ("L8_SR_B4", "red"), ("landsat9 band 6", "swir1"), ("s2:B8A", "nir"), ("B02", "blue"),
        ("B8A", "nir"), ("b12", "swir2"), ("S2_B11", "swir1"), ("modis1", "red"), ("MODIS:2", "nir"),
        ("oli1", "coastal"),
    ],
)
def test_aliases(name, expected):
    assert canonical_band(name) == expected


def test_bare_band_numbers_are_ambiguous_unless_a_sensor_is_given():
    with pytest.raises(BandNameError, match=r"ambiguous.*nir on Landsat 4-7.*red on Landsat 8/9.*oli:B4"):
        canonical_band("B4")
    assert canonical_band("B4", sensor="oli") == "red" and canonical_band("band 4", sensor="TM") == "nir"
    with pytest.raises(BandNameError, match="not a band name known here.*blue, green, red, nir, swir1, swir2"):
        canonical_band("ultraviolet")
    with pytest.raises(BandNameError, match="no band 9"):
        canonical_band("tm9")
    with pytest.raises(BandNameError, match="more than once"):
        parse_band_names("red,R,nir")
    assert parse_band_names("green, red ; NIR") == ["green", "red", "nir"]


def test_descriptions():
    assert band_from_description("B4 (665 nm)") == "red" and band_from_description("Band 5, 0.86 um") == "nir"
    assert band_from_description("Red (B4)") == "red" and band_from_description("SR_B5") is None
    assert band_from_description("Band 1") is None and band_from_description("") is None


def test_matching_by_descriptions_by_list_and_by_order():
    def info(descriptions, count=None):
        count = count or len(descriptions)
        return RasterInfo("x.tif", 10, 10, count, "", (0, 1, 0, 0, 0, -1), (None,) * count, "int16",
                          tuple(descriptions) + ("",) * (count - len(descriptions)))

    oli = info(["coastal aerosol", "blue", "green", "red", "nir", "swir1", "swir2"])
    match = match_bands(MODEL_BANDS, oli, info([], 7))
    assert match.fine_bands == (2, 3, 4, 5, 6, 7) and match.model_indices == (0, 1, 2, 3, 4, 5)
    assert match.coarse_bands == (2, 3, 4, 5, 6, 7) and "band 1 ('coastal aerosol') = coastal" in match.describe()

    three = info(["NIR", "Red", "Green"])
    match = match_bands(MODEL_BANDS, three, info(["green", "red", "nir"]))
    assert match.model_indices == (3, 2, 1) and match.names == ("nir", "red", "green")
    assert match.coarse_bands == (3, 2, 1) and match.subset_of == 6  # the coarse image's own names

    unnamed = info([], 3)
    match = match_bands(MODEL_BANDS, unnamed, info([], 7), bands="green,red,nir", coarse_bands="4,1,2")
    assert match.fine_bands == (1, 2, 3) and match.model_indices == (1, 2, 3) and match.coarse_bands == (4, 1, 2)
    with pytest.raises(BandNameError, match="without names known here.*BANDS.*model's bands are blue, green"):
        match_bands(MODEL_BANDS, unnamed, info([], 3))
    with pytest.raises(BandNameError, match="model has no coastal band; the model's bands are blue, green, red"):
        match_bands(MODEL_BANDS, unnamed, unnamed, bands="coastal,red,nir")
    six = info([], 6)
    assert match_bands(MODEL_BANDS, six, six).source.startswith("band order")


def test_cut_down_network_equals_the_full_one_with_the_other_bands_filled():
    torch.manual_seed(0)
    for images in (2, 3):
        config = CTSTFMConfig(bands=6, width=8, encoder_blocks=1, fusion_blocks=1, predict_residual=True,
                              residual_blur=5, images=images)
        full = CTSTFM(config).eval()
        with torch.no_grad():  # give the zero-initialised pieces weights, so that every path counts
            torch.nn.init.normal_(full.ccd.layers[-1].weight, std=0.1)
            torch.nn.init.normal_(full.coarse_encoder.stem.weight, std=0.3)
        indices, fill = [3, 1, 2], torch.tensor([0.05, 0.08, 0.09, 0.26, 0.23, 0.16])
        part = full.select_bands(indices, fill=fill).eval()
        assert part.config.bands == 3 and part.config.images == images
        CTSTFM(part.config).load_state_dict(part.state_dict(), strict=True)  # a plain 3-band network
        c1, f0, c0 = torch.rand(3, 2, 6, 24, 24).unbind(0)
        filled = [x.clone() for x in (c1, f0, c0)]
        for x in filled:
            x[:, [0, 4, 5]] = fill[[0, 4, 5]][None, :, None, None]
        with torch.no_grad():
            expected = full(*filled)[:, indices]
            got = part(c1[:, indices], f0[:, indices], c0[:, indices])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        # and the bands do interact: changing a band left out changes the full model's output
        with torch.no_grad():
            other = [x.clone() for x in filled]
            other[1][:, 0] += 0.2
            assert (full(*other)[:, indices] - expected).abs().max() > 1e-4


def test_select_by_name_for_fine_tuning():
    from model_core.model_file import load_model

    loaded = load_model(DEFAULT_MODEL)
    part = select_bands_by_name(loaded, "g,r,nir")
    assert part.band_names == ["green", "red", "nir"] and part.config.bands == 3
    assert part.model.fine_encoder.stem.weight.shape[1] == 3 and part.model.ccd.layers[-1].weight.shape[0] == 3
    with pytest.raises(BandNameError, match="model has no rededge1 band"):
        select_bands_by_name(loaded, "re1,red")


@pytest.fixture(scope="module")
def sample_three_bands(tmp_path_factory):
    """The bundled sample cut to green, red, NIR and 128 x 128 fine pixels (descriptions kept)."""
    folder = tmp_path_factory.mktemp("three_bands")
    window = [192, 192, 128, 128]
    paths = {}
    for key, name in (("fine", "fine_2021-12-01.tif"), ("truth", "fine_2022-01-02.tif")):
        paths[key] = str(folder / name)
        gdal.Translate(paths[key], str(SAMPLE_DIR / name), bandList=[2, 3, 4], srcWin=window)
    paths["coarse"] = str(folder / "coarse.tif")
    gdal.Translate(paths["coarse"], str(SAMPLE_DIR / "coarse_2022-01-02.tif"), bandList=[2, 3, 4])
    return paths


def test_embedded_model_fuses_a_green_red_nir_image(sample_three_bands, tmp_path):
    from model_core.fusion import fuse
    from model_core.progress import Progress

    messages = []

    class Log(Progress):
        def info(self, message):
            messages.append(message)

    data = sample_three_bands
    out = tmp_path / "fused.tif"
    result = fuse(data["fine"], data["coarse"], DEFAULT_MODEL, out, tile=128, overlap=16, device="cpu",
                  output_type="float32", progress=Log())
    assert result.bands == 3
    assert any("green = fine band 1" in m and "nir = fine band 3" in m and "specialised" in m for m in messages)
    with RasterReader(data["truth"]) as reader:
        truth, valid = reader.read_reflectance(Window(0, 0, 128, 128), 1e-4)
    with RasterReader(data["coarse"], grid=RasterInfo.read(data["fine"])) as reader:
        coarse, _ = reader.read_reflectance(Window(0, 0, 128, 128), 1e-4)
    scores = {name: compute_metrics(image, truth, valid)["mae"]["mean"]
              for name, image in (("fused", read_all(out)), ("coarse only", coarse))}
    assert scores["fused"] < 0.7 * scores["coarse only"], scores


def test_unmatched_band_is_a_clear_error_and_writes_nothing(sample_three_bands, tmp_path):
    from model_core.fusion import fuse

    fine = write_raster(tmp_path / "fine.tif", np.full((2, 20, 20), 1000, np.int16), fine_geotransform(),
                        descriptions=["red", "red edge 1"])
    coarse = write_coarse(tmp_path / "coarse.tif", 600.0, 600.0, 2, UTM33)
    out = tmp_path / "out.tif"
    with pytest.raises(BandNameError, match="model has no rededge1 band; the model's bands are blue, green, red, nir"):
        fuse(fine, coarse, DEFAULT_MODEL, out, bands="red,re1", tile=32, overlap=0)
    assert not out.exists()
