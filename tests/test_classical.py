"""model_core.classical: temporal difference, STARFM and FSDAF on small numpy-made tiles."""

import math

import numpy as np
import pytest
import torch

from model_core.classical import fsdaf, starfm, starfm_halo, temporal_difference


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _scene(seed=0, bands=3, h=48, w=48, factor=8):
    """Three land-cover classes in patches, coarse images as block means of the fine ones.

    Class 1 brightens, class 2 darkens between T0 and T1, class 0 does not change.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    classes = ((np.sin(x / 4.0) + np.cos(y / 5.0) + 0.3 * rng.standard_normal((h, w))) > 0.4).astype(int)
    classes[(x // 6 + y // 9) % 5 == 0] = 2
    base = np.array([[0.05, 0.10, 0.20], [0.08, 0.15, 0.35], [0.12, 0.09, 0.05]])[:, :bands]
    change = np.array([[0.0, 0.0, 0.0], [0.03, 0.06, 0.12], [-0.04, -0.03, -0.02]])[:, :bands]
    f0 = base[classes].transpose(2, 0, 1) + 0.005 * rng.standard_normal((bands, h, w))
    f1 = f0 + change[classes].transpose(2, 0, 1)

    def coarse(img):
        blocks = img.reshape(bands, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
        return np.repeat(np.repeat(blocks, factor, axis=1), factor, axis=2)

    return f0, coarse(f0), coarse(f1), f1


def _naive_starfm(f0, c0, c1, valid, window, classes, fu, cu, eps):
    """Literal per-pixel loops of the documented rules (strict filter, copy on zero diff)."""
    bands, h, w = f0.shape
    r = window // 2
    a = window / 2
    out = np.full(f0.shape, np.nan)
    sig_s = math.sqrt(fu**2 + cu**2)
    sig_t = math.sqrt(2) * cu
    for b in range(bands):
        vals = f0[b][valid]
        tol = vals.std() * 2 / classes
        for i in range(h):
            for j in range(w):
                if not valid[i, j]:
                    continue
                s_c = abs(f0[b, i, j] - c0[b, i, j])
                t_c = abs(c0[b, i, j] - c1[b, i, j])
                if t_c == 0:
                    out[b, i, j] = f0[b, i, j]
                    continue
                if s_c == 0:
                    out[b, i, j] = c1[b, i, j]
                    continue
                sw = swv = 0.0
                for k in range(max(0, i - r), min(h, i + r + 1)):
                    for m in range(max(0, j - r), min(w, j + r + 1)):
                        if not valid[k, m] or abs(f0[b, k, m] - f0[b, i, j]) > tol:
                            continue
                        s = abs(f0[b, k, m] - c0[b, k, m])
                        t = abs(c0[b, k, m] - c1[b, k, m])
                        if s > s_c + sig_s or t > t_c + sig_t:
                            continue
                        d = 1 + math.hypot(k - i, m - j) / a
                        wgt = 1 / ((s + eps) * (t + eps) * d)
                        sw += wgt
                        swv += wgt * (f0[b, k, m] + c1[b, k, m] - c0[b, k, m])
                out[b, i, j] = swv / sw
    return out


# --- temporal difference -----------------------------------------------------------------


def test_temporal_difference_exact():
    f0 = _t([[[0.1, 0.2], [0.3, 0.4]]])
    c0 = _t([[[0.15, 0.15], [0.35, 0.35]]])
    c1 = _t([[[0.25, 0.05], [0.35, 0.45]]])
    expected = _t([[[0.2, 0.1], [0.3, 0.5]]])
    torch.testing.assert_close(temporal_difference(f0, c0, c1), expected, rtol=0, atol=1e-15)
    batch = temporal_difference(f0[None].repeat(2, 1, 1, 1), c0[None].repeat(2, 1, 1, 1), c1[None].repeat(2, 1, 1, 1))
    assert batch.shape == (2, 1, 2, 2)
    torch.testing.assert_close(batch[1], expected, rtol=0, atol=1e-15)


# --- STARFM --------------------------------------------------------------------------------


def test_starfm_follows_the_documented_rules_pixel_by_pixel():
    f0, c0, c1, _ = _scene(seed=1, bands=2, h=16, w=16, factor=4)
    rng = np.random.default_rng(1)
    valid = rng.random((16, 16)) > 0.1
    c1[0, 4:8, 4:8] = c0[0, 4:8, 4:8]  # exact zero temporal difference: copied F0
    c0[1, 0, 0] = f0[1, 0, 0]  # exact zero spectral difference: copied C1
    valid[0, 0] = True
    kwargs = dict(window=7, classes=4, fine_uncertainty=0.002, coarse_uncertainty=0.003, epsilon=1e-4)
    got = starfm(_t(f0), _t(c0), _t(c1), valid=torch.from_numpy(valid), **kwargs).numpy()
    expected = _naive_starfm(
        f0, c0, c1, valid, kwargs["window"], kwargs["classes"], kwargs["fine_uncertainty"],
        kwargs["coarse_uncertainty"], kwargs["epsilon"],
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert np.isnan(got[:, ~valid]).all()


def test_starfm_uniform_change_on_homogeneous_image():
    f0 = np.ones((3, 21, 19)) * np.array([0.1, 0.2, 0.3])[:, None, None]
    c0 = f0 + 0.02
    change = np.array([0.05, -0.03, 0.1])[:, None, None]
    c1 = c0 + change
    got = starfm(_t(f0), _t(c0), _t(c1), window=9).numpy()
    np.testing.assert_allclose(got, f0 + change, rtol=0, atol=1e-14)
    # The same with a few invalid pixels, float32 and the default window.
    valid = np.ones((21, 19), dtype=bool)
    valid[5, 5] = valid[0, 18] = False
    got32 = starfm(_t(f0).float(), _t(c0).float(), _t(c1).float(), valid=torch.from_numpy(valid)).numpy()
    np.testing.assert_allclose(got32[:, valid], (f0 + change)[:, valid], atol=1e-6)


def test_starfm_no_change_returns_fine_t0():
    f0, c0, _, _ = _scene(seed=2)
    got = starfm(_t(f0), _t(c0), _t(c0), window=11).numpy()
    np.testing.assert_array_equal(got, f0)
    # Without the paper's copy rule the spectrally similar neighbours are averaged instead:
    # close to F0, within the similarity tolerance.
    smooth = starfm(_t(f0), _t(c0), _t(c0), window=11, classes=4, copy_on_zero_diff=False).numpy()
    tol = f0.reshape(3, -1).std(axis=1) * 2 / 4
    assert (np.abs(smooth - f0) <= tol[:, None, None] + 1e-12).all()


def test_starfm_zero_spectral_difference_with_uniform_change():
    # Coarse equal to fine at T0: STARFM copies C1 (= F0 + change) wherever S == 0.
    f0, _, _, _ = _scene(seed=3)
    change = 0.04
    got = starfm(_t(f0), _t(f0), _t(f0 + change), window=9).numpy()
    np.testing.assert_allclose(got, f0 + change, atol=1e-15)


def test_starfm_beats_no_change_on_a_changing_scene():
    f0, c0, c1, f1 = _scene(seed=4, h=64, w=64)
    pred = starfm(_t(f0), _t(c0), _t(c1), window=15).numpy()
    td = temporal_difference(_t(f0), _t(c0), _t(c1)).numpy()
    mae = lambda p: np.abs(p - f1).mean()  # noqa: E731
    assert np.isfinite(pred).all()
    # On this scene: no change 0.0285, temporal difference 0.0208, STARFM 0.0165.
    assert mae(pred) < 0.75 * mae(f0)
    # And better than the plain temporal difference it refines.
    assert mae(pred) < mae(td)


def test_starfm_ignores_invalid_pixels():
    f0, c0, c1, _ = _scene(seed=5, h=32, w=32)
    rng = np.random.default_rng(5)
    valid = rng.random((32, 32)) > 0.15
    valid[10:14, 3:30] = False

    def with_garbage(value):
        a, b, c = f0.copy(), c0.copy(), c1.copy()
        a[:, ~valid] = value
        b[:, ~valid] = -value
        c[:, ~valid] = 2 * value
        return starfm(_t(a), _t(b), _t(c), valid=torch.from_numpy(valid), window=9, band_std=[0.05, 0.05, 0.1])

    one = with_garbage(5.0).numpy()
    two = with_garbage(0.123).numpy()
    np.testing.assert_array_equal(one[:, valid], two[:, valid])
    assert np.isfinite(one[:, valid]).all()
    assert np.isnan(one[:, ~valid]).all()
    # NaN marks missing data even without a mask.
    nan_in = f0.copy()
    nan_in[:, ~valid] = np.nan
    three = starfm(_t(nan_in), _t(c0), _t(c1), window=9, band_std=[0.05, 0.05, 0.1]).numpy()
    np.testing.assert_array_equal(three[:, valid], one[:, valid])
    # A fill value other than NaN for invalid centres.
    zero = starfm(_t(nan_in), _t(c0), _t(c1), window=9, band_std=[0.05, 0.05, 0.1], fill=0.0).numpy()
    assert (zero[:, ~valid] == 0).all()


def test_starfm_odd_sizes_batches_and_dtypes():
    rng = np.random.default_rng(6)
    f0 = rng.random((2, 3, 17, 23)) * 0.3
    c0 = f0 + 0.01
    c1 = c0 + 0.02 * rng.random((2, 3, 17, 23))
    batch = starfm(torch.from_numpy(f0).float(), torch.from_numpy(c0).float(), torch.from_numpy(c1).float(), window=7)
    assert batch.shape == (2, 3, 17, 23) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    single = starfm(_t(f0[1]).float(), _t(c0[1]).float(), _t(c1[1]).float(), window=7)
    assert single.shape == (3, 17, 23)
    torch.testing.assert_close(single, batch[1])
    # Tiles smaller than the window, and a one-pixel tile.
    tiny = starfm(_t(f0[0, :, :3, :2]), _t(c0[0, :, :3, :2]), _t(c1[0, :, :3, :2]))
    assert tiny.shape == (3, 3, 2) and torch.isfinite(tiny).all()
    one = starfm(_t(f0[0, :, :1, :1]), _t(c0[0, :, :1, :1]), _t(c1[0, :, :1, :1]))
    torch.testing.assert_close(one, _t(f0[0, :, :1, :1] + c1[0, :, :1, :1] - c0[0, :, :1, :1]))
    # Strips of a few rows give the same result as one strip.
    strips = starfm(_t(f0[0]), _t(c0[0]), _t(c1[0]), window=7, rows_per_strip=4)
    whole = starfm(_t(f0[0]), _t(c0[0]), _t(c1[0]), window=7, rows_per_strip=1000)
    torch.testing.assert_close(strips, whole, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError):
        starfm(_t(f0[0]), _t(c0[0]), _t(c1[0]), window=8)
    with pytest.raises(ValueError):
        starfm(_t(f0[0]), _t(c0[0, :2]), _t(c1[0]))


def test_starfm_tiles_with_halo_match_the_whole_image():
    f0, c0, c1, _ = _scene(seed=7, h=40, w=48)
    window = 9
    halo = starfm_halo(window)
    assert halo == 4 and starfm_halo(31) == 15
    std = f0.reshape(3, -1).std(axis=1)
    whole = starfm(_t(f0), _t(c0), _t(c1), window=window, band_std=std).numpy()
    out = np.empty_like(whole)
    for r0, r1 in ((0, 17), (17, 40)):
        for q0, q1 in ((0, 20), (20, 33), (33, 48)):
            R0, R1 = max(0, r0 - halo), min(40, r1 + halo)
            Q0, Q1 = max(0, q0 - halo), min(48, q1 + halo)
            part = (slice(None), slice(R0, R1), slice(Q0, Q1))
            tile = starfm(_t(f0[part]), _t(c0[part]), _t(c1[part]), window=window, band_std=std)
            out[:, r0:r1, q0:q1] = tile.numpy()[:, r0 - R0 : r0 - R0 + r1 - r0, q0 - Q0 : q0 - Q0 + q1 - q0]
    np.testing.assert_allclose(out, whole, rtol=1e-12, atol=1e-15)


def test_starfm_options():
    f0, c0, c1, f1 = _scene(seed=8, h=32, w=32)
    base = starfm(_t(f0), _t(c0), _t(c1), window=11).numpy()
    loose = starfm(_t(f0), _t(c0), _t(c1), window=11, strict=False).numpy()
    sparse = starfm(_t(f0), _t(c0), _t(c1), window=11, offset_step=2).numpy()
    far = starfm(_t(f0), _t(c0), _t(c1), window=11, spatial_factor=100.0).numpy()
    for p in (loose, sparse, far):
        assert np.isfinite(p).all()
        assert np.abs(p - f1).mean() < np.abs(f0 - f1).mean()
    assert not np.array_equal(base, loose) or not np.array_equal(base, far)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_starfm_cuda_matches_cpu():
    f0, c0, c1, _ = _scene(seed=9, h=32, w=32)
    cpu = starfm(_t(f0), _t(c0), _t(c1), window=9)
    gpu = starfm(_t(f0).cuda(), _t(c0).cuda(), _t(c1).cuda(), window=9)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-12)


# --- FSDAF ---------------------------------------------------------------------------------


def _block_ids(h, w, factor):
    rows, cols = np.mgrid[0:h, 0:w]
    return (rows // factor) * (w // factor) + cols // factor


def test_fsdaf_unmixes_the_change_of_each_class():
    # Three classes that each change by their own amount: the coarse change of a mixed coarse pixel is a
    # mix of the three, which the temporal difference spreads evenly and FSDAF's unmixing tells apart.
    for seed in range(3):
        f0, c0, c1, f1 = _scene(seed=seed, h=64, w=64, factor=8)
        out = fsdaf(f0, c0, c1, _block_ids(64, 64, 8), classes=3).numpy()
        fsdaf_error = np.abs(out - f1).mean()
        temporal_error = np.abs(temporal_difference(f0, c0, c1) - f1).mean()
        starfm_error = np.abs(starfm(_t(f0), _t(c0), _t(c1)).numpy() - f1).mean()
        assert fsdaf_error < 0.2 * temporal_error, (seed, fsdaf_error, temporal_error)
        assert fsdaf_error < 0.3 * starfm_error, (seed, fsdaf_error, starfm_error)


def test_fsdaf_uniform_change_and_no_change():
    f0, c0, _, _ = _scene(seed=4, h=48, w=48, factor=8)
    ids = _block_ids(48, 48, 8)
    np.testing.assert_allclose(fsdaf(f0, c0, c0, ids).numpy(), f0, atol=1e-6)
    shift = np.array([0.02, -0.01, 0.05])[:, None, None]
    np.testing.assert_allclose(fsdaf(f0, c0, c0 + shift, ids).numpy(), f0 + shift, atol=1e-4)


def test_fsdaf_invalid_pixels_and_pixels_outside_the_coarse_image_come_out_nan():
    f0, c0, c1, f1 = _scene(seed=5, h=48, w=48, factor=8)
    ids = _block_ids(48, 48, 8)
    f0 = f0.copy()
    f0[:, 3, 4] = np.nan
    ids[40:, :] = -1
    out = fsdaf(f0, c0, c1, ids).numpy()
    assert np.isnan(out[:, 3, 4]).all() and np.isnan(out[:, 40:]).all()
    rest = np.ones((48, 48), bool)
    rest[3, 4] = False
    rest[40:] = False
    assert np.isfinite(out[:, rest]).all()
    assert np.abs(out[:, rest] - f1[:, rest]).mean() < np.abs(f0[:, rest] - f1[:, rest]).mean() / 3
    with pytest.raises(ValueError, match="coarse_pixels"):
        fsdaf(f0, c0, c1, ids[:40])
    with pytest.raises(ValueError, match="window"):
        fsdaf(f0, c0, c1, ids, window=30)
