"""Classical spatiotemporal fusion: temporal difference and STARFM on tiles, FSDAF on a whole image.

Pure per-tile math in torch (CPU or CUDA, whatever device the inputs are on), vectorised
over pixels, bands and a batch. Reading, tiling and writing are the tiling engine's job:
tensors are reflectance, shaped (C, H, W) or (B, C, H, W), and the coarse images are
already resampled onto the fine grid.

* :func:`temporal_difference` is pointwise: it needs no halo.
* :func:`starfm` looks ``window // 2`` pixels around each pixel: read tiles with an
  overlap of at least :func:`starfm_halo` on every side that has a neighbour and crop it
  away afterwards. At the raster's own edges nothing is needed: pixels outside the tile
  are treated as missing, exactly as pixels outside the raster are. With a halo and the
  same ``band_std`` for every tile (see :func:`starfm`), the result of a tile's core is
  identical to that of the whole image at once.
* :func:`fsdaf` unmixes the coarse change by the fine image's classes over all coarse
  pixels at once, so it takes a whole image (on the CPU) and the map of which coarse pixel
  each fine pixel lies in; it is the benchmarks' reference for the strongest classical
  method on real pairs (docs/benchmarks.md), not a plugin algorithm.
"""

import math

import torch

DEFAULT_WINDOW = 31
DEFAULT_CLASSES = 40
DEFAULT_FINE_UNCERTAINTY = 0.002
DEFAULT_COARSE_UNCERTAINTY = 0.002
DEFAULT_EPSILON = 1e-4


def starfm_halo(window=DEFAULT_WINDOW):
    """Pixels of context STARFM needs on each side of a tile: ``window // 2``."""
    return int(window) // 2


def temporal_difference(fine_t0, coarse_t0, coarse_t1):
    """Fine image at T1 predicted as ``fine_t0 + (coarse_t1 - coarse_t0)``.

    Tensors (C, H, W) or (B, C, H, W) of equal shape; NaN in any input stays NaN.
    """
    return fine_t0 + (coarse_t1 - coarse_t0)


def _batched(t, name):
    t = torch.as_tensor(t)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"{name} must be (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}")
    return t


def _masked_band_std(f0, ok):
    """Population std of each band over the valid pixels of each image: (B, C)."""
    w = ok.unsqueeze(1).to(f0.dtype)
    n = w.sum(dim=(2, 3)).clamp_min(1)
    mean = (f0 * w).sum(dim=(2, 3)) / n
    dev = (f0 - mean[:, :, None, None]) * w
    return ((dev * dev).sum(dim=(2, 3)) / n).sqrt()


@torch.no_grad()
def starfm(
    fine_t0,
    coarse_t0,
    coarse_t1,
    valid=None,
    window=DEFAULT_WINDOW,
    classes=DEFAULT_CLASSES,
    fine_uncertainty=DEFAULT_FINE_UNCERTAINTY,
    coarse_uncertainty=DEFAULT_COARSE_UNCERTAINTY,
    spatial_factor=None,
    band_std=None,
    strict=True,
    copy_on_zero_diff=True,
    epsilon=DEFAULT_EPSILON,
    offset_step=1,
    fill=math.nan,
    rows_per_strip=None,
):
    """STARFM (Gao et al., IEEE TGRS 44(8), 2006), single input pair, on one tile.

    Predicts the fine image at T1 from the fine image at T0 (``fine_t0``, F0) and the
    coarse images at T0 and T1 (``coarse_t0`` C0, ``coarse_t1`` C1), all reflectance,
    (C, H, W) or (B, C, H, W), coarse resampled onto the fine grid. Every band is handled
    on its own. For each pixel (the centre) and band, over the ``window`` x ``window``
    neighbourhood:

    1. Spectrally similar neighbours: ``|F0(n) - F0(centre)| <= tol``, with
       ``tol = band_std * 2 / classes`` (the paper's sigma * 2 / m).
    2. Sample filtering (paper eqs. 13-16, single pair): with ``S = |F0 - C0|``
       (spectral difference) and ``T = |C0 - C1|`` (temporal difference) of each pixel,
       a neighbour is kept when ``S(n) <= S(centre) + sigma_S`` and
       ``T(n) <= T(centre) + sigma_T``, where ``sigma_S = sqrt(fine_uncertainty^2 +
       coarse_uncertainty^2)`` and ``sigma_T = sqrt(2) * coarse_uncertainty``. ``strict``
       (the paper) needs both; ``strict=False`` accepts either, as the USDA reference
       code does. The centre itself always passes, so a valid centre always has a
       candidate.
    3. Weights (paper eq. 10): ``C = (S + epsilon) (T + epsilon) D`` with
       ``D = 1 + d / A``, d the distance to the centre in pixels and
       ``A = spatial_factor`` (default ``window / 2``, as in the reference code);
       ``W = (1 / C) / sum(1 / C)`` over the kept neighbours. The paper writes
       ``(S + 1)(T + 1)`` on integer data scaled by 10,000: ``epsilon = 1e-4`` is that
       same one digital number in reflectance.
    4. Prediction: ``sum W * (F0 + C1 - C0)`` over the kept neighbours.
    5. ``copy_on_zero_diff`` (the paper's special cases): where the centre's temporal
       difference is exactly 0, the prediction is F0 there; else where its spectral
       difference is exactly 0, it is C1 there.

    Published defaults and this implementation's choices:

    * window: the imagefusion library defaults to 51 pixels (about 1.5 km of Landsat),
      starfm4py to 31. Default 31 here, for speed (cost grows as window^2: 31 costs
      about a third of 51).
    * classes: imagefusion (which follows the reference code) defaults to 40,
      starfm4py to 4. Default 40 here: with 4 the tolerance (half a band std) admits
      neighbours of other land covers and smooths F0's texture away, which made STARFM
      worse than the plain temporal difference on the synthetic scenes of the tests and
      of ``scripts/bench_starfm.py``; with 40 it is better than both no-change and
      temporal difference there.
    * tolerance std: the reference code uses each band's std over the *whole* fine
      image; starfm4py uses the std inside each window. Here ``band_std`` (C,) or
      (B, C) can be given (the tiling engine should pass the whole raster's per-band
      std of F0 so that all tiles agree and no seams appear); when None, the std over
      the valid pixels of each image of the batch is used, which equals the
      reference's behaviour when the whole image is one tile.
    * uncertainties: the reference code uses 50 digital numbers (0.005 reflectance) for
      16-bit data; starfm4py 0.03 (Sentinel-2/3). Default 0.002 for both here.
    * the weight uses T as in the paper; the reference code drops T from the weight when
      it has a single pair. The log weight (paper eq. 11) is not implemented.

    ``valid``: optional bool (H, W) or (B, H, W), True where F0, C0 and C1 all hold
    data; non-finite inputs are invalid anyway. Invalid pixels never contribute, and
    invalid centres come out as ``fill`` (NaN). ``offset_step`` > 1 visits only every
    ``offset_step``-th row and column offset of the window (a faster approximation; the
    centre is always visited). ``rows_per_strip`` sets how many output rows are
    processed together (bounds the working memory; default about a million values per
    buffer). Memory: about 15 tensors the size of the input (with its halo).

    Returns a tensor of the shape and dtype of ``fine_t0`` (float32 for integer input).
    """
    window = int(window)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of pixels, got {window}")
    if classes <= 0:
        raise ValueError(f"classes must be positive, got {classes}")
    squeeze = torch.as_tensor(fine_t0).dim() == 3
    f0 = _batched(fine_t0, "fine_t0")
    c0 = _batched(coarse_t0, "coarse_t0")
    c1 = _batched(coarse_t1, "coarse_t1")
    if not (f0.shape == c0.shape == c1.shape):
        raise ValueError(
            f"fine_t0 {tuple(f0.shape)}, coarse_t0 {tuple(c0.shape)} and coarse_t1 {tuple(c1.shape)} "
            "must have one shape"
        )
    dtype = f0.dtype if f0.is_floating_point() else torch.float32
    device = f0.device
    f0, c0, c1 = (t.to(device=device, dtype=dtype) for t in (f0, c0, c1))
    b, c, h, w = f0.shape

    ok = torch.isfinite(f0).all(1) & torch.isfinite(c0).all(1) & torch.isfinite(c1).all(1)
    if valid is not None:
        valid = torch.as_tensor(valid, device=device).bool()
        if valid.dim() == 2:
            valid = valid.unsqueeze(0)
        if valid.shape[-2:] != (h, w) or valid.shape[0] not in (1, b):
            raise ValueError(f"valid mask {tuple(valid.shape)} does not match images {(b, c, h, w)}")
        ok = ok & valid
    okc = ok.unsqueeze(1)
    zero = torch.zeros((), dtype=dtype, device=device)
    f0 = torch.where(okc, f0, zero)
    c0 = torch.where(okc, c0, zero)
    c1 = torch.where(okc, c1, zero)

    if band_std is None:
        std = _masked_band_std(f0, ok)
    else:
        std = torch.as_tensor(band_std, dtype=dtype, device=device)
        std = std.reshape(1, c) if std.dim() <= 1 else std
        if std.shape not in ((1, c), (b, c)):
            raise ValueError(f"band_std must hold one value per band ({c}), got shape {tuple(std.shape)}")
        std = std.expand(b, c)
    tol = (std * 2.0 / classes)[:, :, None, None]

    spec = (f0 - c0).abs()  # S
    temp = (c0 - c1).abs()  # T
    value = f0 + c1 - c0  # each pixel's own prediction
    sigma_s = math.sqrt(fine_uncertainty**2 + coarse_uncertainty**2)
    sigma_t = math.sqrt(2.0) * coarse_uncertainty
    spec_max = spec + sigma_s
    temp_max = temp + sigma_t
    inv_c = torch.where(okc, 1.0 / ((spec + epsilon) * (temp + epsilon)), zero)  # 0 never contributes

    r = window // 2
    pad = (r, r, r, r)
    f0_p = torch.nn.functional.pad(f0, pad)
    spec_p = torch.nn.functional.pad(spec, pad)
    temp_p = torch.nn.functional.pad(temp, pad)
    value_p = torch.nn.functional.pad(value, pad)
    inv_c_p = torch.nn.functional.pad(inv_c, pad)  # padding is 0: outside the tile is missing

    step = max(int(offset_step), 1)
    offsets = list(range(-(r // step) * step, r + 1, step))
    a = float(spatial_factor) if spatial_factor is not None else window / 2.0

    if rows_per_strip is None:
        # About a million values per buffer: bounded memory on large tiles, few strips
        # (so little Python overhead) on the usual ones.
        rows_per_strip = max(1, min(h, (1 << 20) // max(1, b * c * (w + 2 * r))))
    out = torch.empty_like(f0)
    for y0 in range(0, h, rows_per_strip):
        y1 = min(h, y0 + rows_per_strip)
        rows = slice(y0, y1)
        f0_c = f0[:, :, rows]
        s_max = spec_max[:, :, rows]
        t_max = temp_max[:, :, rows]
        sum_w = torch.zeros_like(f0_c)
        sum_wv = torch.zeros_like(f0_c)
        # Preallocated buffers: no allocation inside the offset loop.
        diff = torch.empty_like(f0_c)
        weight = torch.empty_like(f0_c)
        keep = torch.empty(f0_c.shape, dtype=torch.bool, device=device)
        other = torch.empty_like(keep)
        for dy in offsets:
            ys = slice(y0 + r + dy, y1 + r + dy)
            for dx in offsets:
                xs = slice(r + dx, r + dx + w)
                torch.sub(f0_p[:, :, ys, xs], f0_c, out=diff)
                diff.abs_()
                torch.le(diff, tol, out=keep)
                if strict:
                    torch.le(spec_p[:, :, ys, xs], s_max, out=other)
                    keep.logical_and_(other)
                    torch.le(temp_p[:, :, ys, xs], t_max, out=other)
                    keep.logical_and_(other)
                else:
                    torch.le(spec_p[:, :, ys, xs], s_max, out=other)
                    other.logical_or_(torch.le(temp_p[:, :, ys, xs], t_max))
                    keep.logical_and_(other)
                torch.where(keep, inv_c_p[:, :, ys, xs], zero, out=weight)
                inv_d = 1.0 / (1.0 + math.hypot(dy, dx) / a)
                sum_w.add_(weight, alpha=inv_d)
                sum_wv.addcmul_(weight, value_p[:, :, ys, xs], value=inv_d)
        out[:, :, rows] = sum_wv / sum_w

    if copy_on_zero_diff:
        out = torch.where(spec == 0, c1, out)
        out = torch.where(temp == 0, f0, out)
    out = torch.where(okc, out, torch.full((), fill, dtype=dtype, device=device))
    return out[0] if squeeze else out


#: FSDAF's defaults here (see :func:`fsdaf` for where they come from).
FSDAF_CLASSES = 5
FSDAF_WINDOW = 31
FSDAF_SAMPLE = 50000
FSDAF_PURE = 100
#: The residual weights: a floor so that a coarse pixel whose errors are all 0 shares its residual
#: evenly, and a cap (in multiples of the coarse pixel's mean weight) on any one fine pixel's share.
FSDAF_WEIGHT_FLOOR = 1e-6
FSDAF_WEIGHT_MAX = 10.0


def _unmix_purest(fractions, coarse_change, whole, pure):
    """Each class's change ``(classes, C)``: per band, least squares of the coarse change on the class
    fractions over the ``pure`` purest coarse pixels of each class, those whose change lies between that
    set's 10th and 90th percentiles (the paper's robust selection)."""
    classes, bands = fractions.shape[1], coarse_change.shape[1]
    chosen = []
    for k in range(classes):
        candidates = (whole & (fractions[:, k] > 0.01)).nonzero()[:, 0]
        chosen.append(candidates[fractions[candidates, k].argsort(descending=True)[:pure]])
    result = torch.zeros(classes, bands)
    for band in range(bands):
        rows = []
        for idx in chosen:
            if idx.numel() == 0:
                continue
            change = coarse_change[idx, band]
            low, high = torch.quantile(change, torch.tensor([0.1, 0.9]))
            rows.append(idx[(change >= low) & (change <= high)])
        rows = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.int64)
        if rows.numel() == 0:
            continue
        a, b = fractions[rows], coarse_change[rows, band]
        ridge = 1e-4 * a.shape[0] * torch.eye(classes)
        result[:, band] = torch.linalg.solve(a.T @ a + ridge, a.T @ b)
    return result


def _mean_per_pixel(values, member, count):
    """Each row's mean over the rows of its coarse pixel: ``values`` (N, C) -> (N, C)."""
    return (torch.zeros(count.shape[0], values.shape[1]).index_add_(0, member, values) / count)[member]


def _kmeans(points, k, iterations=30, seed=0):
    """Centres ``(k, C)`` of ``points`` ``(N, C)``: k-means from a k-means++ start, seeded, so repeatable."""
    generator = torch.Generator().manual_seed(seed)
    n = points.shape[0]
    centres = [points[torch.randint(n, (1,), generator=generator)[0]]]
    nearest = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        if float(nearest.sum()) <= 0:  # fewer distinct values than classes
            centres.append(centres[-1])
            continue
        pick = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)[0]
        centres.append(points[pick])
        nearest = torch.minimum(nearest, ((points - centres[-1]) ** 2).sum(1))
    centres = torch.stack(centres)
    for _ in range(iterations):
        label = torch.cdist(points, centres).argmin(1)
        count = torch.bincount(label, minlength=k).to(points.dtype)[:, None]
        moved = torch.zeros_like(centres).index_add_(0, label, points)
        moved = torch.where(count > 0, moved / count.clamp_min(1), centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres


@torch.no_grad()
def fsdaf(fine_t0, coarse_t0, coarse_t1, coarse_pixels, *, classes=FSDAF_CLASSES, window=FSDAF_WINDOW,
          pure=FSDAF_PURE, sample=FSDAF_SAMPLE, seed=0):
    """FSDAF (Zhu et al., Remote Sensing of Environment 172, 2016), one input pair, on a whole image.

    ``fine_t0`` (F0), ``coarse_t0`` (C0) and ``coarse_t1`` (C1): reflectance ``(C, H, W)`` on the fine
    grid, NaN where invalid (the coarse images resampled onto it, e.g. bilinear); ``coarse_pixels``:
    ``int64 (H, W)``, the coarse pixel each fine pixel lies in (-1: none;
    :func:`model_core.raster.coarse_pixel_ids`). The paper's steps, as built here:

    1. **Classes**: k-means (``classes`` clusters, from up to ``sample`` valid pixels, seeded) on F0;
       the paper uses ISODATA. Each coarse pixel's class fractions are counted from its fine pixels.
    2. **Temporal change of each class**: the coarse change ``C1 - C0`` (mean over each coarse
       pixel's fine pixels) unmixed by the fractions, per band, by least squares over the ``pure``
       purest coarse pixels of each class that lie wholly inside the image, keeping those whose change
       is between the 10th and 90th percentile of that class's set; each class's change is then held
       within the coarse changes' range widened by their standard deviation.
    3. **Temporal prediction** ``F_TP = F0 + change of the pixel's class``, and the **residual** of each
       coarse pixel: its coarse change minus the mean of its fine pixels' predicted change.
    4. **Spatial prediction** ``F_SP``: C1 as resampled onto the fine grid (the paper interpolates the
       coarse pixels with a thin plate spline).
    5. **Residual distribution**: each fine pixel gets its coarse pixel's residual times a weight of
       mean 1 over the coarse pixel, ``|E_ho| * HI + |R| * (1 - HI)`` normalised (a weight over 10 times
       the mean is cut to 10), where ``E_ho = F_SP - F_TP`` (set to 0 where it moves against the
       residual ``R``) and ``HI`` is the share of the pixel's class in the ``window`` x ``window`` window
       around it. So homogeneous places take the residual where the spatial prediction says the
       temporal one fell short, and mixed ones evenly.
    6. **Neighbourhood**: each pixel's change is the distance-weighted mean (``1 / (1 + d / (window / 2))``)
       of the changes of its spectrally similar neighbours in the window (all bands of F0 within
       ``2 * std / classes`` of the centre's, ``std`` each band's over the image), added to F0; the
       paper keeps the 20 most similar of those, here all are kept.

    Measured choices: the purest-pixel unmixing, the window's homogeneity and the sign rule each
    lowered MAE on the real Landsat pairs of docs/benchmarks.md (64 coarse pixels each), and the
    similarity threshold ``2 * std / classes`` against ``2 * std / 20`` most of all (MAE relative to
    the temporal difference 0.87 against 0.98 there, 0.92 against 0.94 on the simulated few-dates cases).
    Unmixing and the similar-pixel search need the whole image at once; it runs on the CPU. Invalid
    pixels come out NaN. Returns a float32 CPU tensor ``(C, H, W)``.
    """
    window = int(window)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of pixels, got {window}")
    if classes < 1:
        raise ValueError(f"classes must be at least 1, got {classes}")
    f0, c0, c1 = (torch.as_tensor(t).to("cpu", torch.float32) for t in (fine_t0, coarse_t0, coarse_t1))
    pixels = torch.as_tensor(coarse_pixels).to("cpu", torch.int64)
    if not (f0.dim() == 3 and f0.shape == c0.shape == c1.shape and pixels.shape == f0.shape[1:]):
        raise ValueError(
            f"fine_t0 {tuple(f0.shape)}, coarse_t0 {tuple(c0.shape)}, coarse_t1 {tuple(c1.shape)} must be one "
            f"(C, H, W) shape and coarse_pixels {tuple(pixels.shape)} its (H, W)"
        )
    bands, height, width = f0.shape
    ok = torch.isfinite(f0).all(0) & torch.isfinite(c0).all(0) & torch.isfinite(c1).all(0) & (pixels >= 0)
    out = torch.full_like(f0, math.nan)
    if not bool(ok.any()):
        return out

    # 1. classes of F0 and each coarse pixel's fractions
    spectra = f0[:, ok].T  # (N, C)
    generator = torch.Generator().manual_seed(seed)
    sampled = spectra[torch.randperm(spectra.shape[0], generator=generator)[:sample]]
    label = torch.cdist(spectra, _kmeans(sampled, classes, seed=seed)).argmin(1)  # (N,)
    coarse, member = torch.unique(pixels[ok], return_inverse=True)  # member: each fine pixel's coarse pixel
    count = torch.bincount(member, minlength=coarse.numel()).to(torch.float32)[:, None]
    fractions = torch.bincount(member * classes + label, minlength=coarse.numel() * classes)
    fractions = fractions.reshape(-1, classes).to(torch.float32) / count
    coarse_change = torch.zeros(coarse.numel(), bands).index_add_(0, member, (c1 - c0)[:, ok].T) / count

    # 2. the change of each class, unmixed from the coarse pixels wholly inside
    whole = count[:, 0] >= 0.5 * count.max()
    class_change = _unmix_purest(fractions, coarse_change, whole, pure)  # (classes, C)
    spread = coarse_change[whole].std(0)
    class_change = torch.minimum(torch.maximum(class_change, coarse_change[whole].min(0).values - spread),
                                 coarse_change[whole].max(0).values + spread)

    # 3. temporal prediction and the residual of each coarse pixel
    temporal_change = class_change[label]  # (N, C)
    residual = coarse_change - fractions @ class_change  # (P, C)

    # 4-5. spatial prediction and the residual shared out by homogeneity
    onehot = torch.zeros(classes, height, width)
    onehot[:, ok] = torch.nn.functional.one_hot(label, classes).T.to(torch.float32)
    shares = torch.nn.functional.avg_pool2d(onehot[None], window, 1, window // 2, count_include_pad=False)[0]
    valid_share = torch.nn.functional.avg_pool2d(ok[None, None].float(), window, 1, window // 2,
                                                 count_include_pad=False)[0]
    homogeneity = (shares[:, ok] / valid_share[:, ok].clamp_min(1e-12)).T.gather(1, label[:, None])
    own_residual = residual[member]
    error_homogeneous = (c1 - f0)[:, ok].T - temporal_change
    # a pixel whose spatial prediction moves against its coarse pixel's residual takes none of it
    error_homogeneous = torch.where(error_homogeneous * own_residual < 0, 0.0, error_homogeneous)
    weight = error_homogeneous.abs() * homogeneity + own_residual.abs() * (1 - homogeneity) + FSDAF_WEIGHT_FLOOR
    weight = weight / _mean_per_pixel(weight, member, count)
    weight = weight.clamp_max(FSDAF_WEIGHT_MAX)
    weight = weight / _mean_per_pixel(weight, member, count)
    change = torch.zeros_like(f0)
    change[:, ok] = (temporal_change + own_residual * weight).T

    # 6. the change of similar neighbours, distance-weighted
    out[:, ok] = (f0 + similar_neighbour_change(f0, change, ok, spectra.std(0) * 2.0 / classes, window))[:, ok]
    return out


def similar_neighbour_change(fine_t0, change, valid, tolerance, window, step=1):
    """The distance-weighted mean ``(C, H, W)`` of ``change`` over each pixel's spectrally similar
    neighbours in a ``window`` x ``window`` window: valid pixels whose every band of ``fine_t0`` is within
    ``tolerance`` (one value per band) of the centre's, weighted by ``1 / (1 + d / (window / 2))``, d the
    distance in pixels (FSDAF's last step; STARFM's similarity and distance rules). ``step`` > 1 visits
    only every ``step``-th row and column of the window (the centre always). A valid pixel is its own
    neighbour; an invalid one gets 0."""
    bands, height, width = fine_t0.shape
    r = window // 2
    tolerance = torch.as_tensor(tolerance, dtype=fine_t0.dtype).to(fine_t0.device).reshape(-1, 1, 1)
    padding = (r, r, r, r)
    # Invalid pixels and the outside are infinitely far in spectrum, so never similar to anything.
    f0_p = torch.nn.functional.pad(torch.where(valid[None], fine_t0, math.inf), padding, value=math.inf)
    change_p = torch.nn.functional.pad(torch.where(valid[None], change, 0.0), padding)
    centre = f0_p[:, r:r + height, r:r + width]
    sum_w = fine_t0.new_zeros(1, height, width)
    sum_wc = fine_t0.new_zeros(bands, height, width)
    diff = torch.empty_like(centre)
    close = torch.empty(centre.shape, dtype=torch.bool, device=centre.device)
    weight = torch.empty_like(sum_w)
    offsets = range(-(r // step) * step, r + 1, step)
    for dy in offsets:
        rows = slice(r + dy, r + dy + height)
        for dx in offsets:
            cols = slice(r + dx, r + dx + width)
            torch.sub(f0_p[:, rows, cols], centre, out=diff)
            torch.le(diff.abs_(), tolerance, out=close)  # inf - inf = nan: never close
            torch.mul(close.all(0, keepdim=True), 1.0 / (1.0 + math.hypot(dy, dx) / (window / 2.0)), out=weight)
            sum_w += weight
            sum_wc.addcmul_(weight, change_p[:, rows, cols])
    return sum_wc / sum_w.clamp_min(1e-12)
