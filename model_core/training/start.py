"""Where a training run starts (issue 11): with few dates the start carries the result.

A residual network (``predict_residual``) whose last convolution is zero outputs its base exactly:
the unchanged fine image (``residual_blur`` 0) or the first guess ``fine_t0 + coarse_t1 -
box(fine_t0)``. So, besides the model itself (a fine-tuned model, or a new one), both references
are starts the network can take without retraining. With ``start="best"`` the run begins from
whichever of the three validates best (MAE on the validation windows); the epoch loop then only
ever keeps an epoch that beats it (:meth:`~.checkpoint.TrainingState.start`), so the output is never
worse on validation than the best of the model, the unchanged image and the first guess.
"""

from __future__ import annotations

import dataclasses

from ..errors import OptionError
from ..options import START_CHOICES
_NAMES = {"model": "the model itself", "no_change": "the unchanged fine image", "first_guess": "the first guess"}


def check_start(start):
    if start not in START_CHOICES:
        raise OptionError(f"The starting point {{start}} is '{start}'; choose one of {', '.join(START_CHOICES)}.", "start")
    return start


def reference_config(config, reference, first_guess_box):
    """The network configuration whose zero-headed output is ``reference`` (no_change, first_guess)."""
    blur = 0 if reference == "no_change" else int(config.residual_blur or first_guess_box)
    return dataclasses.replace(config, residual_blur=blur)


def zero_head(model):
    """Zero the CCD's last convolution in place: a residual network then outputs its base."""
    import torch

    last = model.ccd.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def choose_start(run, model, initial_metrics, baselines, start, progress):
    """``(name, metrics)`` of the start: the model as it is, or a reference it is switched to in place.

    Only a residual network can take a reference; ``start="model"`` keeps the model as it is."""
    if start == "model" or not run.network.config.predict_residual or not baselines:
        return "model", initial_metrics
    config = run.network.config
    # A model fed its own reference (the footprint of F0, or C0) always adds the coarse change: it has
    # no zero-headed "unchanged image" form.
    fed_reference = getattr(config, "reference", "box") != "box" or getattr(config, "images", 2) == 3
    references = ("first_guess",) if fed_reference else ("no_change", "first_guess")
    candidates = {"model": initial_metrics, **{key: baselines[key] for key in references}}
    name = min(candidates, key=lambda key: candidates[key]["mae"])
    others = ", ".join(f"{_NAMES[key]} {candidates[key]['mae']:.5f}" for key in candidates if key != name)
    progress.info(
        f"Starting point: {_NAMES[name]} (validation MAE {candidates[name]['mae']:.5f}; {others})."
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

    from .checkpoint import load_checkpoint

    if not Path(ckpt_path).exists():
        return
    saved = (load_checkpoint(ckpt_path).get("identity") or {}).get("config") or {}
    config = run.network.config
    if saved.get("predict_residual") and config.predict_residual and "residual_blur" in saved:
        config = dataclasses.replace(config, residual_blur=int(saved["residual_blur"]))
        run.network.config = config
        model.config = config
