"""Validation: fixed windows of the validation samples and a model's metrics on them.

The windows are chosen once (non-overlapping, at most ``max_windows``, shared fairly
between scenes, skipping nodata) and cached in memory when small, so every epoch
is scored on exactly the same pixels with :mod:`model_core.metrics`.
"""

from __future__ import annotations

import math

import numpy as np

from ..device import autocast
from ..errors import OptionError
from ..progress import Progress
from .data import evenly_chosen, fair_shares, grid_windows

METRIC_NAMES = ("mae", "rmse", "psnr", "ssim", "sam")


def summarise(metrics):
    """The five validation numbers of a metrics result as a flat dict."""
    return {name: float(metrics[name]["mean"]) for name in METRIC_NAMES}


def metrics_text(values):
    # SSIM needs a whole valid 7 x 7 window, which striped or cloudy validation windows may not have.
    ssim = f"{values['ssim']:.4f}" if math.isfinite(values["ssim"]) else "n/a (no whole 7 x 7 valid window)"
    return (
        f"MAE {values['mae']:.5f}, RMSE {values['rmse']:.5f}, PSNR {values['psnr']:.2f} dB, "
        f"SSIM {ssim}, SAM {values['sam']:.3f}°"
    )


class Validator:
    """Fixed validation windows and the metrics of a model on them."""

    CACHE_BYTES = 256 * 2**20

    def __init__(self, data, scenes, tile, *, max_windows, min_valid, batch_size, device, amp_dtype, progress):
        self.data, self.device, self.amp_dtype = data, device, amp_dtype
        per_scene = []
        for scene in scenes:
            info, split = scene.info, scene.split
            row0 = info.height - split.validation_rows if split.mode == "spatial" else 0
            per_scene.append(
                [
                    (sample, window)
                    for sample in split.validation_samples
                    for window in grid_windows(row0, info.height, info.width, tile)
                ]
            )
        # At most max_windows in all, shared fairly between the scenes, evenly chosen within each.
        chosen = []
        for candidates, share in zip(per_scene, fair_shares([len(c) for c in per_scene], int(max_windows))):
            chosen.append(evenly_chosen(candidates, share))
        self.windows = []
        self.scene_counts = [0] * len(scenes)
        cache = []
        size = 0
        for scene_index, candidates in enumerate(chosen):
            for sample, window in candidates:
                progress.check()
                arrays = data.read(sample, window)
                if arrays[3].mean() <= 0.01:
                    continue
                self.windows.append((sample, window))
                self.scene_counts[scene_index] += 1
                size += sum(array.nbytes for array in arrays)
                cache.append(arrays)
        if not self.windows:
            raise OptionError(
                "No validation window has valid pixels: the validation dates (or the held-out bottom rows) are "
                "nodata. Check the rasters' nodata values, or change the validation fraction ({validation_fraction}).",
                "validation_fraction",
            )
        self.cache = cache if size <= self.CACHE_BYTES else None
        # Windows of one shape go through the network together, batch_size at a time.
        groups = {}
        for index, (_, window) in enumerate(self.windows):
            groups.setdefault((window[2], window[3]), []).append(index)
        self.batches = [
            members[start : start + batch_size] for members in groups.values() for start in range(0, len(members), batch_size)
        ]

    def baselines(self, first_guess_box, progress=None):
        """Metrics of the two references on the same windows: ``{"no_change": ..., "first_guess": ...}``.

        "no change" is the fine image of the reference date unchanged; "first guess" is
        ``fine_t0 + coarse_t1 - box(fine_t0)`` (:func:`~model_core.network.coarse_change_first_guess`),
        or ``fine_t0 + coarse_t1 - reference`` when the data carry the model's reference (the footprint
        of F0, or C0 for a three-image model): what a residual model starts from. A trained model should beat both."""
        import torch

        from ..metrics import MetricsAccumulator
        from ..network import coarse_change_first_guess

        progress = progress or Progress()
        unchanged, guessed = MetricsAccumulator(), MetricsAccumulator()
        sums = counts = 0.0
        for index, item in enumerate(self.windows):
            progress.check()
            coarse, fine0, fine1, valid, *reference = (
                self.cache[index] if self.cache is not None else self.data.read(*item)
            )
            if reference:  # the model's own stand-in for coarse T0 (footprint of F0, or C0 itself)
                guess = np.maximum(fine0 + coarse - reference[0], 0.0)
            else:
                guess = coarse_change_first_guess(torch.from_numpy(coarse)[None], torch.from_numpy(fine0)[None],
                                                  int(first_guess_box))[0].clamp(min=0.0).numpy()
            unchanged.update(fine0, fine1, valid)
            guessed.update(guess, fine1, valid)
            sums = sums + (fine1 * valid).sum(axis=(1, 2), dtype=np.float64)
            counts = counts + float(valid.sum())
        # The mean reflectance per band (provenance "band_means": what a band-subset model assumes
        # for a band it does not get).
        self.band_means = [float(v) for v in sums / max(counts, 1.0)]
        return {"no_change": summarise(unchanged.result()), "first_guess": summarise(guessed.result())}

    def run(self, model, progress=None):
        """Validation metrics (MAE, RMSE, PSNR, SSIM, SAM over all windows' valid pixels)
        of ``model``; predictions are clipped at 0 as fusion clips them."""
        import torch

        from ..metrics import MetricsAccumulator

        progress = progress or Progress()
        accumulator = MetricsAccumulator()
        model.eval()
        done = 0
        with torch.no_grad():
            for batch in self.batches:
                progress.check()
                items = [
                    self.cache[index] if self.cache is not None else self.data.read(*self.windows[index])
                    for index in batch
                ]
                coarse, fine0, fine1, valid, *coarse0 = (np.stack(parts) for parts in zip(*items))
                inputs = [torch.from_numpy(array).to(self.device) for array in (coarse, fine0, *coarse0)]
                with autocast(self.amp_dtype, self.device):
                    pred = model(*inputs)
                pred = pred.float().clamp(min=0.0).cpu().numpy()
                for i in range(len(batch)):
                    accumulator.update(pred[i], fine1[i], valid[i])
                done += len(batch)
                progress.update(done / len(self.windows), "validating")
        model.train()
        return summarise(accumulator.result())
