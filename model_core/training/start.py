"""Where a training run starts (issue 11): with few dates the start carries the result.

A residual network (``predict_residual``) whose last convolution is zero outputs its base exactly:
the unchanged fine image (``residual_blur`` 0, two images) or the first guess ``fine_t0 + coarse_t1 -
reference``, the reference being ``box(fine_t0)`` or, in the three-image mode, ``coarse_t0``. So,
besides the model itself (a fine-tuned model, or a new one), the references are starts the network
can take without retraining. With ``start="best"`` the run begins from whichever validates best
(MAE on the validation windows); the epoch loop then only ever keeps an epoch that beats it
(:meth:`~.checkpoint.TrainingState.start`), so the output is never worse on validation than its start.
With fewer than four dates a pretrained model keeps its place unless a reference is clearly better
(:func:`start_margin`). Where a change gain is fitted, the fitted first guess takes the unchanged fine
image's place among the starts (:func:`choose_start`).

The first guess's coarse change is first scaled per band by a gain fitted on the training dates
(:func:`fit_change_gain`): the fine change is smaller than the coarse change the sensors report
(misregistration, PSF and noise dilute the regression; on the real TM/MODIS pair the slopes were
0.70-0.85), so a first guess that takes the coarse change at face value over-predicts change. In the
three-image mode two slopes are fitted together, on ``C1 - C0`` and on ``C1 - box(F0)`` (:func:`_mix_slopes`).
With them the box the coarse changes are averaged over (``change_blur``, :data:`CHANGE_BLURS`) is chosen by
the same fit: a coarse image delivered on the fine grid by nearest neighbour is blocky, and its raw change
prints the block edges onto the fine image.
"""

from __future__ import annotations

import dataclasses

from ..errors import OptionError
from ..options import START_CHOICES
_NAMES = {"model": "the model itself", "no_change": "the unchanged fine image", "first_guess": "the first guess",
          "fitted_first_guess": "the first guess with the fitted change gain"}
#: Training windows the change gain is fitted on, at most.
GAIN_WINDOWS = 64
#: The boxes (fine pixels) the first guess's coarse changes may be averaged over; 0: as they are.
CHANGE_BLURS = (0, 5, 9, 13, 17)
#: How much lower (a fraction) a blurred change's residual must be on the training windows to be chosen over the raw
#: one. On the few-dates cases the fit on the training pair picked the held-out date's best box where it helped (the
#: coarse images on the fine grid: SSIM of the fitted mix 0.849 -> 0.862 with box 9); the margin keeps the raw change where a box
#: helps the fit by a hair (one 128 px case: 0.15 % in the fit, 0.8 % worse on the next date).
CHANGE_BLUR_MARGIN = 0.005
#: With a spatial split, how much better a reference must validate to replace a pretrained model as the start.
PRETRAINED_START_MARGIN = 0.10
#: Below this mean fitted gain (fine change / coarse change) the training dates are said to have changed little
#: against the coarse images' own noise (:func:`little_change_note`): a gain of signal / (signal + noise) below
#: 0.35 means noise about twice the change or more. The hard-case test's dates fit 0.46, the benchmark's 0.53-1.1.
LITTLE_CHANGE_GAIN = 0.35


def has_first_guess(config):
    """Whether a network of ``config`` adds a coarse change to the fine image (a residual with a reference)."""
    return bool(config.predict_residual and (config.residual_blur or config.takes_coarse_t0))


def fit_change_gain(run, data, progress):
    """The first guess's per-band gains and its change blur fitted on (at most :data:`GAIN_WINDOWS`) windows of
    the training samples, as :class:`~model_core.network.CTSTFMConfig` fields (``{}`` when the network has no
    first guess): ``change_gain``, the least-squares slope of the fine change ``F1 - F0`` on the coarse change
    ``C1 - reference``, clamped to [0, 1]; in the three-image mode also ``box_change_gain``, the two slopes of
    ``F1 - F0`` on ``C1 - C0`` and ``C1 - box(F0)`` together (:func:`_mix_slopes`); ``change_blur``, the box
    of :data:`CHANGE_BLURS` whose averaged changes fit best (:func:`_pick_blur`)."""
    import numpy as np
    import torch

    from ..network import STAND_IN_BOX, box_mean
    from .data import evenly_chosen, grid_windows

    config = run.network.config
    if not has_first_guess(config):
        return {}
    three_image = config.images == 3
    box = int(config.residual_blur or STAND_IN_BOX)
    scenes = [scene for scene in run.scenes for _ in scene.split.train_samples]
    windows = [(sample, window) for sample, scene in zip(run.split.train_samples, scenes)
               for window in grid_windows(0, scene.train_rows, scene.info.width, run.patch)]
    # per blur and band: the normal equations of F1 - F0 on [C1 - reference, C1 - box(F0)], and sum (F1 - F0)^2
    normal = np.zeros((len(CHANGE_BLURS), config.bands, 2, 2))
    moment = np.zeros((len(CHANGE_BLURS), config.bands, 2))
    energy = 0.0
    for sample, window in evenly_chosen(windows, GAIN_WINDOWS):
        progress.check()
        coarse, fine0, fine1, valid, *reference = data.read(sample, window)
        boxed = box_mean(torch.from_numpy(fine0)[None], box)[0].numpy()
        reference = reference[0] if reference and config.takes_coarse_t0 else boxed
        raw = torch.from_numpy(np.stack([coarse - reference, coarse - boxed], axis=1))  # (bands, 2, h, w)
        change = (fine1 - fine0)[:, valid].astype(np.float64)
        energy += float((change ** 2).sum())
        for c, blur in enumerate(CHANGE_BLURS):
            changes = (box_mean(raw, blur) if blur > 1 else raw).numpy()[:, :, valid].astype(np.float64)
            normal[c] += np.einsum("bip,bjp->bij", changes, changes)
            moment[c] += np.einsum("bip,bp->bi", changes, change)
    fits = [_band_slopes(normal[c], moment[c], three_image) for c in range(len(CHANGE_BLURS))]
    chosen = _pick_blur([energy + fit_loss for _, fit_loss in fits])
    slopes = fits[chosen][0]
    fitted = {"change_gain": _rounded(slopes[:, 0]), "change_blur": CHANGE_BLURS[chosen]}
    if three_image:
        fitted["box_change_gain"] = _rounded(slopes[:, 1])
    return fitted


def _band_slopes(normal, moment, three_image):
    """Per band ``(a, b)`` (``b`` 0 in the two-image mode: one slope on ``C1 - reference``) and the summed
    residual sum of squares less the target's energy."""
    import numpy as np

    slopes = np.zeros(moment.shape)
    for band in range(len(moment)):
        if three_image:
            slopes[band] = _mix_slopes(normal[band], moment[band])
        elif normal[band, 0, 0] > 0:
            slopes[band, 0] = min(max(moment[band, 0] / normal[band, 0, 0], 0.0), 1.0)
        else:
            slopes[band, 0] = 1.0
    loss = float(np.einsum("bi,bij,bj->", slopes, normal, slopes) - 2.0 * np.einsum("bi,bi->", slopes, moment))
    return slopes, loss


def _pick_blur(residuals):
    """The index of :data:`CHANGE_BLURS` to use: the lowest residual, unless it is not at least
    :data:`CHANGE_BLUR_MARGIN` below the raw change's (index 0)."""
    best = min(range(len(residuals)), key=residuals.__getitem__)
    return best if residuals[best] < (1.0 - CHANGE_BLUR_MARGIN) * residuals[0] else 0


def _mix_slopes(normal, moment):
    """Non-negative least-squares slopes ``(a, b)`` of a two-regressor fit from its normal equations,
    each at most 1: when the joint fit gives a negative slope, the better single-regressor fit.

    Why two: ``C1 - C0`` cancels the sensors' own difference but adds both dates' misregistration;
    ``C1 - box(F0)`` has no misregistration between its terms but keeps the sensor difference. On the
    few-dates benchmark's cases the mix fitted on the training pair beat both on the held-out date."""
    import numpy as np

    def loss(slopes):  # the residual sum of squares, up to a constant
        return float(slopes @ normal @ slopes - 2.0 * slopes @ moment)

    candidates = [np.zeros(2)]
    for i in range(2):
        single = np.zeros(2)
        if normal[i, i] > 0:
            single[i] = min(max(moment[i] / normal[i, i], 0.0), 1.0)
        candidates.append(single)
    if abs(np.linalg.det(normal)) > 1e-12 * max(float(np.abs(normal).max()), 1e-30) ** 2:
        joint = np.linalg.solve(normal, moment)
        if (joint >= 0).all():
            candidates.append(joint.clip(0.0, 1.0))
    return min(candidates, key=loss)


def little_change_note(config, band_names):
    """A warning (without a "Warning:" prefix) when the first guess fitted on the training dates takes less
    than :data:`LITTLE_CHANGE_GAIN` of the coarse change on average over the bands, else ``""``.

    A least-squares gain is about signal / (signal + noise): this low, the coarse change between the
    training dates was mostly the coarse images' own noise, and the model learned to trust it little. Measured
    (docs/training.md, *Training dates that barely change*): two summer dates of a simulated MODIS-like series
    fitted gains 0.04-0.33; on the next date, which changed three to six times as much, the tuned model had 21 %
    more MAE than the plugin's untrained model (though it still beat the unchanged fine image and the temporal
    difference)."""
    totals = [a + b for a, b in zip(config.change_gain or (), config.box_change_gain or (0.0,) * config.bands)]
    if not totals or sum(totals) / len(totals) >= LITTLE_CHANGE_GAIN:
        return ""
    gains = ", ".join(f"{name} {total:.2f}" for name, total in zip(band_names, totals))
    return (
        f"Between the training dates the fine images changed far less than the coarse images show (fitted "
        f"first-guess gains {gains}): the coarse change there was mostly the coarse images' own noise, so the model "
        "learned to trust it little. It will under-predict a date that changed much more than the training dates "
        "did. Train on dates as far apart, or across as much change, as the dates you will fuse; or fuse such dates "
        "with the plugin's untrained model (no MODEL) and compare both on a date you kept back (Assess Fusion "
        "Accuracy)."
    )


def _rounded(gains):
    return tuple(round(float(g), 4) for g in gains)


def start_margin(run):
    """How much better (a fraction of MAE) a reference must validate to replace the model as the start.

    0 unless a pretrained model is fine-tuned with a spatial split (fewer than four dates): its validation
    windows then come from the training dates themselves, and a few windows of one pair of dates judge the
    pair's own change (its misregistration, its sensor offsets) more than what carries to the next date.
    In the few-dates benchmark's second case the embedded model validated 4 % worse than the fitted first
    guess on such windows (MAE 0.02686 against 0.02569) yet beat the temporal difference on the held-out
    date (0.03054 against 0.03130); starting from the first guess threw that prior away."""
    pretrained = run.network.init_state is not None
    return PRETRAINED_START_MARGIN if pretrained and run.split.mode != "dates" else 0.0


def check_start(start):
    if start not in START_CHOICES:
        raise OptionError(f"The starting point {{start}} is '{start}'; choose one of {', '.join(START_CHOICES)}.", "start")
    return start


def reference_config(config, reference, first_guess_box):
    """The network configuration whose zero-headed output is ``reference`` (no_change, first_guess,
    fitted_first_guess: the first guess with the config's change gain).

    The unchanged fine image is a two-image network without a first guess: a model fed its own
    reference (the footprint of F0, or C0 in the three-image mode) always adds the coarse change, so it
    switches to the two-image box form (and ignores the reference the data still carry)."""
    from ..network import GAIN_FIELDS

    no_gains = dict({name: () for name in GAIN_FIELDS}, change_blur=0)
    if reference == "no_change":
        return dataclasses.replace(config, residual_blur=0, reference="box", images=2, **no_gains)
    gains = {} if reference == "fitted_first_guess" else no_gains
    return dataclasses.replace(config, residual_blur=int(config.residual_blur or first_guess_box), **gains)


def zero_head(model):
    """Zero the CCD's last convolution in place: a residual network then outputs its base."""
    import torch

    last = model.ccd.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def choose_start(run, model, initial_metrics, baselines, start, progress, fitted_metrics=None):
    """``(name, metrics)`` of the start: the model as it is, or a reference it is switched to in place.

    Only a residual network can take a reference; ``start="model"`` keeps the model as it is.
    ``fitted_metrics``: the zero-headed model's validation when its first guess has a fitted change
    gain. That candidate, the first guess with the gain, replaces the unchanged fine image: where the
    training dates' coarse change does not carry to the fine image its gains are near 0 and it is the
    unchanged image, and where it does, it scales with a later date's change. The unchanged image as
    a start becomes a network without a first guess, which learns how much change to add from the
    training pair alone: on a 400 px three-date case (coarse on the fine grid) whose training pair changed
    little, it validated best and was then 3 % worse than no change on the next date (MAE 0.03226 against
    0.03119), while the fitted first guess as the start gave 0.02544."""
    if start == "model" or not run.network.config.predict_residual or not baselines:
        return "model", initial_metrics
    candidates = {"model": initial_metrics, "first_guess": baselines["first_guess"]}
    if fitted_metrics:
        candidates["fitted_first_guess"] = fitted_metrics
    else:
        candidates["no_change"] = baselines["no_change"]
    margin = start_margin(run)
    # the model keeps its place unless a reference's MAE is below (1 - margin) times its own
    name = min(candidates, key=lambda key: candidates[key]["mae"] * (1.0 - margin if key == "model" else 1.0))
    others = ", ".join(f"{_NAMES[key]} {candidates[key]['mae']:.5f}" for key in candidates if key != name)
    kept = (f"; a reference replaces a pretrained model only when it validates {100 * margin:.0f} % better on "
            "windows of the training dates" if margin else "")
    progress.info(
        f"Starting point: {_NAMES[name]} (validation MAE {candidates[name]['mae']:.5f}; {others}{kept})."
    )
    if name == "no_change" and run.network.config.takes_coarse_t0:
        what = "the coarse image at T0" if run.network.config.images == 3 else "the coarse footprint of F0"
        progress.info(
            f"The coarse change measured with {what} did not help on the validation windows, so this model "
            "becomes a two-image model that corrects the unchanged fine image."
        )
    if name != "model":
        config = reference_config(run.network.config, name, run.network.first_guess_box)
        run.network.config = config
        model.config = config
        zero_head(model)
    return name, candidates[name]


def adopt_saved_start(run, model, ckpt_path):
    """On resume: take the start the interrupted run chose (its first-guess base), recorded in its checkpoint."""
    from pathlib import Path

    from ..network import GAIN_FIELDS
    from .checkpoint import load_checkpoint

    if not Path(ckpt_path).exists():
        return
    saved = (load_checkpoint(ckpt_path).get("identity") or {}).get("config") or {}
    config = run.network.config
    if saved.get("predict_residual") and config.predict_residual and "residual_blur" in saved:
        config = dataclasses.replace(
            config, residual_blur=int(saved["residual_blur"]), reference=saved.get("reference", config.reference),
            images=int(saved.get("images", config.images)),
            **{name: tuple(saved.get(name, ())) for name in GAIN_FIELDS}, change_blur=int(saved.get("change_blur", 0)),
        )
        run.network.config = config
        model.config = config
