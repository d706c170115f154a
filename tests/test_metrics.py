"""model_core.metrics against hand-computed values and scikit-image."""

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from model_core.metrics import (
    METRIC_NAMES,
    SSIM_HALO,
    MetricsAccumulator,
    compute_metrics,
    format_table,
    table_rows,
)


def _skimage_ssim(pred, ref, full=False):
    return structural_similarity(
        pred, ref, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=full
    )


def _structured(rng, bands=3, h=64, w=64):
    """Smooth-ish reflectance images and a noisy prediction of them."""
    y, x = np.mgrid[0:h, 0:w]
    ref = np.stack([0.3 + 0.2 * np.sin(x / (5 + b)) * np.cos(y / 7) for b in range(bands)])
    ref = ref + 0.05 * rng.random(ref.shape)
    pred = np.clip(ref + 0.03 * rng.standard_normal(ref.shape) + 0.01, 0, 1)
    return pred, ref


# --- hand-computed values on tiny arrays --------------------------------------------------


def test_mae_rmse_psnr_cc_by_hand():
    ref = np.array(
        [
            [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]],
            [[0.2, 0.3, 0.2], [0.3, 0.2, 0.3], [0.2, 0.3, 0.2]],
        ]
    )
    pred = ref.copy()
    pred[0] += 0.1  # band 1: a uniform error of 0.1
    pred[1, 0, 0] += 0.2  # band 2: two errors, +0.2 and -0.1
    pred[1, 2, 2] -= 0.1
    m = compute_metrics(pred, ref)

    assert m["mae"]["bands"] == pytest.approx([0.1, 0.3 / 9])
    assert m["mae"]["mean"] == pytest.approx((0.1 + 0.3 / 9) / 2)
    assert m["rmse"]["bands"] == pytest.approx([0.1, math.sqrt(0.05 / 9)])
    assert m["psnr"]["bands"] == pytest.approx([20.0, 10 * math.log10(9 / 0.05)])
    assert m["psnr"]["mean"] == pytest.approx((20.0 + 10 * math.log10(180)) / 2)
    assert m["cc"]["bands"][0] == pytest.approx(1.0)
    # Band 2 by hand: pred values and reference values as flat lists.
    p, r = pred[1].ravel(), ref[1].ravel()
    pm, rm = sum(p) / 9, sum(r) / 9
    cov = sum((a - pm) * (b - rm) for a, b in zip(p, r))
    cc = cov / math.sqrt(sum((a - pm) ** 2 for a in p) * sum((b - rm) ** 2 for b in r))
    assert m["cc"]["bands"][1] == pytest.approx(cc)
    assert m["counts"]["pixels"] == 9


def test_cc_known_value():
    ref = np.array([[[1.0, 3.0, 2.0]]]) / 10
    pred = np.array([[[1.0, 2.0, 3.0]]]) / 10
    assert compute_metrics(pred, ref)["cc"]["mean"] == pytest.approx(0.5)


def test_sam_in_degrees_by_hand():
    # Pixels: 45 deg, 0 deg, 90 deg, and one zero spectrum that SAM leaves out.
    pred = np.array([[[0.2, 0.3, 0.0, 0.0]], [[0.0, 0.3, 0.5, 0.0]]])
    ref = np.array([[[0.1, 0.1, 0.4, 0.2]], [[0.1, 0.1, 0.0, 0.1]]])
    m = compute_metrics(pred, ref)
    assert m["sam"]["mean"] == pytest.approx(45.0)
    assert m["sam"]["bands"] is None
    assert m["counts"]["sam_pixels"] == 3


def test_sam_small_angle_is_accurate():
    ref = np.array([[[0.5]], [[0.5]]])
    angle = 1e-6  # radians
    pred = np.array([[[math.cos(math.pi / 4 + angle)]], [[math.sin(math.pi / 4 + angle)]]])
    assert compute_metrics(pred, ref)["sam"]["mean"] == pytest.approx(math.degrees(angle), rel=1e-6)


def test_ergas_by_hand():
    ref = np.array([[[0.2, 0.4]], [[0.1, 0.3]]])
    pred = np.array([[[0.25, 0.35]], [[0.1, 0.35]]])
    rmse1, mean1 = math.sqrt((0.05**2 + 0.05**2) / 2), 0.3
    rmse2, mean2 = math.sqrt((0.0 + 0.05**2) / 2), 0.2
    expected = 100 * (1 / 16) * math.sqrt(((rmse1 / mean1) ** 2 + (rmse2 / mean2) ** 2) / 2)
    assert compute_metrics(pred, ref)["ergas"]["mean"] == pytest.approx(expected)
    assert compute_metrics(pred, ref, ratio=30 / 500)["ergas"]["mean"] == pytest.approx(expected * 16 * 30 / 500)


def test_ssim_by_hand_on_constant_images():
    # Constant windows: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.3, 0.5
    c1 = (0.01 * 1.0) ** 2
    m = compute_metrics(np.full((1, 11, 11), a), np.full((1, 11, 11), b))
    assert m["ssim"]["mean"] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    assert m["counts"]["ssim_windows"] == 1
    same = compute_metrics(np.full((2, 12, 13), a), np.full((2, 12, 13), a))
    assert same["ssim"]["bands"] == pytest.approx([1.0, 1.0])
    assert same["counts"]["ssim_windows"] == 2 * 3


def test_perfect_prediction():
    rng = np.random.default_rng(1)
    ref = rng.random((4, 20, 20))
    m = compute_metrics(ref, ref)
    assert m["mae"]["mean"] == 0 and m["rmse"]["mean"] == 0
    assert m["psnr"]["mean"] == math.inf
    assert m["ssim"]["mean"] == pytest.approx(1.0)
    assert m["sam"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert m["ergas"]["mean"] == 0
    assert m["cc"]["mean"] == pytest.approx(1.0)


# --- against scikit-image --------------------------------------------------------------


def test_ssim_and_psnr_match_skimage():
    rng = np.random.default_rng(0)
    pred, ref = _structured(rng)
    m = compute_metrics(pred, ref)
    for b in range(3):
        assert m["ssim"]["bands"][b] == pytest.approx(_skimage_ssim(pred[b], ref[b]), abs=1e-12)
        psnr = peak_signal_noise_ratio(ref[b], pred[b], data_range=1.0)
        assert m["psnr"]["bands"][b] == pytest.approx(psnr, rel=1e-12)
    # Pure noise too, where SSIM is far from 1.
    pred, ref = rng.random((2, 64, 64)), rng.random((2, 64, 64))
    m = compute_metrics(pred, ref)
    for b in range(2):
        assert m["ssim"]["bands"][b] == pytest.approx(_skimage_ssim(pred[b], ref[b]), abs=1e-12)


def test_masked_ssim_matches_skimage_map_over_fully_valid_windows():
    rng = np.random.default_rng(2)
    pred, ref = _structured(rng, bands=1)
    valid = np.ones((64, 64), dtype=bool)
    valid[10:20, 30:45] = False
    valid[50, 5] = False
    m = compute_metrics(pred, ref, valid)
    _, smap = _skimage_ssim(pred[0], ref[0], full=True)
    centres = np.zeros_like(valid)
    for i in range(5, 59):
        for j in range(5, 59):
            centres[i, j] = valid[i - 5 : i + 6, j - 5 : j + 6].all()
    assert m["counts"]["ssim_windows"] == centres.sum()
    assert m["ssim"]["mean"] == pytest.approx(smap[centres].mean(), abs=1e-12)


# --- nodata -------------------------------------------------------------------------------


def test_garbage_under_the_mask_changes_nothing():
    rng = np.random.default_rng(3)
    pred, ref = _structured(rng, bands=4, h=40, w=50)
    valid = rng.random((40, 50)) > 0.02
    valid[:8, :8] = False
    clean = compute_metrics(pred, ref, valid)

    dirty_pred, dirty_ref = pred.copy(), ref.copy()
    dirty_pred[:, ~valid] = np.nan
    dirty_ref[:, ~valid] = 1e6
    dirty_ref[1, 0, 0] = -np.inf
    dirty = compute_metrics(dirty_pred, dirty_ref, valid)
    for name in METRIC_NAMES:
        assert dirty[name] == clean[name], name
    assert dirty["counts"] == clean["counts"]
    assert clean["counts"]["pixels"] == valid.sum()

    # Pixel metrics are those of the valid pixels alone.
    only = compute_metrics(pred[:, valid][:, None, :], ref[:, valid][:, None, :])
    for name in ("mae", "rmse", "psnr", "sam", "ergas", "cc"):
        assert dirty[name]["mean"] == pytest.approx(only[name]["mean"], rel=1e-12), name


def test_non_finite_values_are_invalid_without_a_mask():
    rng = np.random.default_rng(4)
    pred, ref = _structured(rng, bands=2, h=30, w=30)
    valid = np.ones((30, 30), dtype=bool)
    valid[3, 4] = valid[20, 21] = False
    expected = compute_metrics(pred, ref, valid)
    pred[0, 3, 4] = np.nan  # one band is enough to drop the pixel
    ref[1, 20, 21] = np.nan
    got = compute_metrics(pred, ref)
    for name in METRIC_NAMES:
        assert got[name] == expected[name], name


def test_nothing_valid_gives_nan():
    m = compute_metrics(np.zeros((2, 12, 12)), np.zeros((2, 12, 12)), np.zeros((12, 12), dtype=bool))
    for name in METRIC_NAMES:
        assert math.isnan(m[name]["mean"]), name
    assert m["counts"] == {"pixels": 0, "sam_pixels": 0, "ssim_windows": 0}


# --- accumulator over blocks --------------------------------------------------------------


def _blocks(h, w, rows, cols):
    """Irregular block edges covering (h, w)."""
    r_edges = [0] + rows + [h]
    c_edges = [0] + cols + [w]
    for r0, r1 in zip(r_edges[:-1], r_edges[1:]):
        for c0, c1 in zip(c_edges[:-1], c_edges[1:]):
            yield r0, r1, c0, c1


def test_accumulator_over_blocks_equals_one_shot():
    rng = np.random.default_rng(5)
    h, w = 70, 90
    pred, ref = _structured(rng, bands=3, h=h, w=w)
    valid = rng.random((h, w)) > 0.01
    valid[30:40, 0:25] = False
    one = compute_metrics(pred, ref, valid)

    with_halo = MetricsAccumulator()
    without_halo = MetricsAccumulator()
    for r0, r1, c0, c1 in _blocks(h, w, [17, 40, 41], [33, 60]):
        # Read with a halo where there is a neighbour, as a block reader would.
        R0, R1 = max(r0 - SSIM_HALO, 0), min(r1 + SSIM_HALO, h)
        C0, C1 = max(c0 - SSIM_HALO, 0), min(c1 + SSIM_HALO, w)
        with_halo.update(
            pred[:, R0:R1, C0:C1], ref[:, R0:R1, C0:C1], valid[R0:R1, C0:C1], halo=(r0 - R0, R1 - r1, c0 - C0, C1 - c1)
        )
        without_halo.update(pred[:, r0:r1, c0:c1], ref[:, r0:r1, c0:c1], valid[r0:r1, c0:c1])

    for acc in (with_halo.result(), without_halo.result()):
        assert acc["counts"]["pixels"] == one["counts"]["pixels"]
        assert acc["counts"]["sam_pixels"] == one["counts"]["sam_pixels"]
        for name in ("mae", "rmse", "psnr", "cc"):
            np.testing.assert_allclose(acc[name]["bands"], one[name]["bands"], rtol=1e-12, err_msg=name)
        for name in ("mae", "rmse", "psnr", "sam", "ergas", "cc"):
            assert acc[name]["mean"] == pytest.approx(one[name]["mean"], rel=1e-12), name

    halo = with_halo.result()
    assert halo["counts"]["ssim_windows"] == one["counts"]["ssim_windows"]
    np.testing.assert_allclose(halo["ssim"]["bands"], one["ssim"]["bands"], rtol=1e-12)
    # Without a halo the windows across block borders are lost: close, not equal.
    plain = without_halo.result()
    assert plain["counts"]["ssim_windows"] < one["counts"]["ssim_windows"]
    np.testing.assert_allclose(plain["ssim"]["bands"], one["ssim"]["bands"], atol=0.02)


def test_batches_and_torch_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    pred, ref = _structured(rng, bands=2, h=24, w=24)
    one = compute_metrics(pred, ref)
    got = compute_metrics(torch.from_numpy(pred).float(), torch.from_numpy(ref).float())
    for name in METRIC_NAMES:
        assert got[name]["mean"] == pytest.approx(one[name]["mean"], rel=1e-5), name

    # A batch pools its images' pixels (and windows); SSIM windows never cross images.
    batch_p = np.stack([pred[:, :, :12], pred[:, :, 12:]])
    batch_r = np.stack([ref[:, :, :12], ref[:, :, 12:]])
    pooled = compute_metrics(batch_p, batch_r)
    assert pooled["mae"]["mean"] == pytest.approx(one["mae"]["mean"], rel=1e-12)
    assert pooled["counts"]["ssim_windows"] == 2 * 14 * 2  # images x (24 - 10) x (12 - 10)


def test_format_table():
    rng = np.random.default_rng(7)
    pred, ref = _structured(rng, bands=2, h=16, w=16)
    m = compute_metrics(pred, ref)
    table = format_table(m, ["red", "nir"])
    lines = table.strip().splitlines()
    assert lines[0] == "| band | MAE | RMSE | PSNR (dB) | SSIM | SAM (deg) | ERGAS | CC |"
    assert lines[2].startswith("| red | ") and lines[3].startswith("| nir | ") and lines[4].startswith("| mean | ")
    assert lines[2].split(" | ")[5:7] == ["-", "-"]
    assert f"{m['sam']['mean']:.3f}" in lines[4]
    header, rows = table_rows(m)
    assert rows[0][0] == "band 1" and rows[-1][1] == m["mae"]["mean"]
    with pytest.raises(ValueError):
        format_table(m, ["only one"])
