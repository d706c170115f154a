"""The CTSTFM network: shapes at any size, gradients, ablations, determinism, learning, size."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from model_core.errors import CtstfmError
from model_core.network import (
    BEB,
    BFB,
    CETB,
    CFTB,
    CTSTFM,
    DEFAULT_BANDS,
    MKCB,
    MKSB,
    ConfigError,
    CTSTFMConfig,
    count_parameters,
)

SMALL = CTSTFMConfig(bands=4, width=8, encoder_blocks=1, fusion_blocks=1, heads=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors gain nothing from threads, and on a busy 2-core machine two threads run 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(bands, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, bands, height, width, generator=g), torch.rand(1, bands, height, width, generator=g)


@pytest.mark.parametrize(
    "config, height, width",
    [
        (CTSTFMConfig(), 256, 256),
        (CTSTFMConfig(bands=4, width=8, heads=2), 67, 131),
        (CTSTFMConfig(bands=1, width=8), 32, 32),
    ],
    ids=["6-bands-256x256", "4-bands-67x131", "1-band-32x32"],
)
def test_output_has_the_input_shape(config, height, width):
    torch.manual_seed(0)
    model = CTSTFM(config).eval()
    coarse, fine = images(config.bands, height, width)
    with torch.no_grad():
        out = model(coarse, fine)
    assert out.shape == (1, config.bands, height, width)
    assert torch.isfinite(out).all()


def test_batch_and_layout_give_the_same_result():
    torch.manual_seed(0)
    model = CTSTFM(SMALL).eval()
    coarse, fine = images(4, 33, 35)
    coarse2, fine2 = images(4, 33, 35, seed=1)
    with torch.no_grad():
        batched = model(torch.cat([coarse, coarse2]), torch.cat([fine, fine2]))
        single = model(coarse2, fine2)
        contiguous = model.to(memory_format=torch.contiguous_format)(coarse2, fine2)
    torch.testing.assert_close(batched[1:], single, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(contiguous, single, rtol=1e-4, atol=1e-5)


def test_mismatched_inputs_are_refused_with_a_clear_message():
    model = CTSTFM(SMALL)
    with pytest.raises(CtstfmError, match="same shape"):
        model(torch.zeros(1, 4, 16, 16), torch.zeros(1, 4, 16, 17))
    with pytest.raises(CtstfmError, match="4 bands"):
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


def test_every_parameter_gets_a_finite_nonzero_gradient():
    torch.manual_seed(0)
    model = CTSTFM(dataclasses.replace(SMALL, encoder_blocks=2, fusion_blocks=2))
    coarse, fine = images(4, 24, 20)
    model(coarse, fine).sub(fine).abs().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "switch, block_types",
    [("use_mkcb", (MKCB,)), ("use_mksb", (MKSB,)), ("use_cetb", (CETB,)), ("use_cftb", (CFTB,))],
)
def test_each_ablation_removes_exactly_its_blocks(switch, block_types):
    full = CTSTFM(CTSTFMConfig())
    ablated = CTSTFM(dataclasses.replace(CTSTFMConfig(), **{switch: False}))
    blocks = [m for m in full.modules() if isinstance(m, block_types)]
    assert len(blocks) == (6 if block_types[0] in (MKCB, MKSB) else 3)
    assert not any(isinstance(m, block_types) for m in ablated.modules())
    removed = sum(count_parameters(block) for block in blocks)
    assert removed > 0
    assert count_parameters(full) - count_parameters(ablated) == removed
    coarse, fine = images(6, 16, 16)
    with torch.no_grad():
        assert ablated.eval()(coarse, fine).shape == (1, 6, 16, 16)


def test_all_ablations_leave_brb_only_blocks():
    config = dataclasses.replace(SMALL, use_mkcb=False, use_mksb=False, use_cetb=False, use_cftb=False)
    model = CTSTFM(config)
    assert all(not any(isinstance(m, t) for m in model.modules()) for t in (MKCB, MKSB, CETB, CFTB))
    assert sum(isinstance(m, (BEB, BFB)) for m in model.modules()) == 3
    assert model(*images(4, 16, 16)).shape == (1, 4, 16, 16)


def test_same_seed_and_input_give_the_same_output():
    coarse, fine = images(4, 40, 36)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = CTSTFM(SMALL).eval()
        with torch.no_grad():
            outputs.append(model(coarse, fine))
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(124)
    with torch.no_grad():
        assert not torch.equal(CTSTFM(SMALL).eval()(coarse, fine), outputs[0])


def synthetic_pair(bands=4, size=32, seed=0):
    """A fine image, the same scene changed (a brightened/darkened block, an offset), and its coarse view."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(1, bands, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear")
    fine_t0 = 0.05 + 0.3 * (0.6 * smooth + 0.4 * torch.rand(1, bands, size, size, generator=g))
    changed = torch.zeros(1, 1, size, size)
    changed[..., size // 4 : size // 2, size // 3 :] = 1
    gain = torch.linspace(0.8, 1.3, bands).view(1, bands, 1, 1)
    fine_t1 = fine_t0 * (1 + (gain - 1) * changed) + 0.02
    coarse_t1 = F.interpolate(F.avg_pool2d(fine_t1, 8), size=(size, size), mode="bilinear")
    return coarse_t1, fine_t0, fine_t1


def test_a_few_hundred_adam_steps_fit_one_pair():
    coarse, fine_t0, fine_t1 = synthetic_pair()
    torch.manual_seed(0)
    model = CTSTFM(SMALL)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    with torch.no_grad():
        start = (model(coarse, fine_t0) - fine_t1).abs().mean().item()
    for _ in range(300):
        loss = (model(coarse, fine_t0) - fine_t1).abs().mean()  # eq. 20
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        end = (model(coarse, fine_t0) - fine_t1).abs().mean().item()
    copy_fine = (fine_t0 - fine_t1).abs().mean().item()
    assert end < 0.5 * start, (start, end)
    assert end < 0.85 * copy_fine, (end, copy_fine)  # better than predicting "no change"


def test_predict_residual_adds_the_fine_image():
    config = dataclasses.replace(SMALL, predict_residual=True)
    torch.manual_seed(0)
    residual = CTSTFM(config).eval()
    plain = CTSTFM(SMALL).eval()
    plain.load_state_dict(residual.state_dict())
    coarse, fine = images(4, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(residual(coarse, fine), plain(coarse, fine) + fine)
        # A fresh residual model starts as "no change": its last convolution is zero.
        torch.testing.assert_close(residual(coarse, fine), fine)
        torch.nn.init.normal_(plain.ccd.layers[-1].weight)
        residual.load_state_dict(plain.state_dict())
        torch.testing.assert_close(residual(coarse, fine), plain(coarse, fine) + fine)


def test_residual_blur_starts_from_the_coarse_change_estimate():
    config = dataclasses.replace(SMALL, predict_residual=True, residual_blur=5)
    model = CTSTFM(config).eval()
    coarse, fine = images(4, 21, 17)
    with torch.no_grad():
        out = model(coarse, fine)
    # fine + coarse - 5x5 box mean of fine, edges replicated; check one interior pixel by hand
    expected = fine[0, :, 10, 8] + coarse[0, :, 10, 8] - fine[0, :, 8:13, 6:11].mean(dim=(1, 2))
    torch.testing.assert_close(out[0, :, 10, 8], expected)
    assert count_parameters(model) == count_parameters(CTSTFM(SMALL))
    with pytest.raises(ConfigError, match="residual_blur"):
        dataclasses.replace(SMALL, residual_blur=5)


def test_default_parameter_count_is_within_ten_percent_of_the_paper():
    n = count_parameters(CTSTFM(CTSTFMConfig()))
    assert abs(n - 701_000) / 701_000 < 0.10, n
    assert n == 670_935  # the count documented in docs/architecture.md


def test_config_round_trip_and_validation():
    config = CTSTFMConfig(bands=4, width=12, heads=3, use_cetb=False, predict_residual=True)
    data = config.to_dict()
    assert data["kernel_sizes"] == [3, 5, 7]
    assert CTSTFMConfig.from_dict(data) == config
    assert CTSTFMConfig.from_dict({}) == CTSTFMConfig()
    with pytest.raises(ConfigError, match="Unknown network setting.*colour"):
        CTSTFMConfig.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="multiple of heads"):
        CTSTFMConfig(width=20, heads=3)
    with pytest.raises(ConfigError, match="multiple of norm_groups"):
        CTSTFMConfig(width=18)
    with pytest.raises(ConfigError, match="bands"):
        CTSTFMConfig(bands=0)
    with pytest.raises(ConfigError, match="kernel_sizes"):
        CTSTFMConfig(kernel_sizes=(3, 4))
    with pytest.raises(ConfigError, match="use_cetb"):
        CTSTFMConfig(use_cetb="yes")
    assert isinstance(ConfigError("x"), CtstfmError)
    assert DEFAULT_BANDS == ("blue", "green", "red", "nir", "swir1", "swir2")


def test_precomputed_encodings_give_the_same_output():
    torch.manual_seed(3)
    model = CTSTFM(CTSTFMConfig(width=8, encoder_blocks=1, fusion_blocks=1, predict_residual=True,
                                residual_blur=5)).eval()
    coarse, fine = torch.rand(2, 6, 24, 20), torch.rand(2, 6, 24, 20)
    with torch.no_grad():
        expected = model(coarse, fine)
        reused = model(coarse, fine, fine_features=model.encode_fine(fine), coarse_features=model.encode_coarse(coarse))
        fine_only = model(coarse, fine, fine_features=model.encode_fine(fine))
    torch.testing.assert_close(reused, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(fine_only, expected, rtol=0, atol=1e-6)
