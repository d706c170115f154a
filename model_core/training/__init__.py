"""Training CTSTFM on a time series of fine/coarse pairs (paper, Section III).

From a series of dated pairs (a fine raster, e.g. Landsat 30 m, and a coarse
raster, e.g. MODIS 500 m, per date) to a model file that
:func:`model_core.fusion.fuse` and ``ctstfm:fuse`` load.

What happens, in order:

1. **Series** — :func:`read_manifest` (CSV ``date,fine,coarse``, optionally
   ``scene``), :func:`read_manifests` (several manifests) or
   :func:`series_from_layers` give a list of :class:`Pair`. A series holds one or
   several *scenes* (:attr:`Pair.scene`), each on its own grid.
   :func:`check_scenes` opens every raster once: within each scene at least two
   dates, no duplicate date, every fine raster on the same grid (size, extent,
   CRS) with the same band count, every coarse raster with that band count and
   covering its fine raster (:func:`check_series`); the same band count in every
   scene.
2. **Samples** — for a target date T1 the input is (coarse at T1, fine at a
   reference date T0) and the label is fine at T1. The reference dates are the
   ``references`` nearest other dates, before or after (``max_gap_days`` drops
   references further away). :func:`choose_references`.
3. **Split** — chronological, as in the paper: the earliest dates train, the
   latest ``validation_fraction`` of the dates validate. Training samples take
   their references among training dates only; validation samples may take any
   other date. With fewer than four dates (or too few left for training) the
   split falls back to a spatial block: the bottom ``validation_fraction`` of the
   rows of every date validates and no training patch touches it.
   :func:`split_series`, per scene (:func:`split_scenes`); the samples of all
   scenes are pooled.
4. **Patches** — random crops of ``patch_size`` (shrunk to the smallest
   scene's training area), from a sample drawn in proportion to its training
   area (so every training pixel of every scene is equally likely), read
   window by window through the same pair reader and warping as fusion
   (:mod:`model_core.raster`), so memory does not grow with the scene. Crops
   with less than ``min_valid`` valid pixels are redrawn. Flips and 90° rotations
   augment. Nodata pixels are left out of the L1 loss.
5. **Optimisation** — the paper's defaults: L1 loss (eq. 20), Adam (lr 1e-4,
   betas 0.9/0.999), batch 4, 150 epochs. After every epoch the model is
   validated on fixed, non-overlapping validation windows (of every scene, at
   most ``max_validation_windows`` shared fairly between scenes) with
   :mod:`model_core.metrics` (MAE, RMSE, PSNR, SSIM, SAM) and the weights with
   the best validation MAE are kept. On CUDA, mixed precision (bf16 where the
   card supports it, else fp16 with a gradient scaler).
6. **Outputs** — the model file (written once, at the end, atomically), a
   checkpoint ``<model>.checkpoint.pt`` after every epoch (``resume=True``
   continues from it), a CSV with one row per epoch and a PNG of the curves.

Cancelling (``progress.canceled()``) after at least one finished epoch writes
the best model so far and returns a :class:`TrainResult` with
``cancelled=True`` and a message; before that, :class:`Cancelled` is raised and
nothing is written.

Where each part lives:

| module | what |
|---|---|
| :mod:`.series` | pairs, manifests, dates, scenes, the checks of a series |
| :mod:`.split` | samples (target <- reference) and the chronological or spatial split |
| :mod:`.data` | windows read as fusion reads them, random patches (read ahead by ``model_core.prefetch``) |
| :mod:`.validation` | fixed validation windows and their metrics |
| :mod:`.step` | the masked L1 loss and one optimisation step |
| :mod:`.checkpoint` | :class:`TrainingState`, saved after every epoch, resumed |
| :mod:`.loop` | the epoch loop |
| :mod:`.reports` | epoch CSV, PNG curves, provenance, closing message |
| :mod:`.trainer` | :func:`train`, the orchestration of the above |
"""

from ..device import grad_scaler
from ..prefetch import Prefetcher
from .checkpoint import CHECKPOINT_SUFFIX, TrainingState, checkpoint_path, load_checkpoint
from .data import (
    AUTO_PATCHES_CAP,
    PatchSampler,
    SeriesData,
    default_patches_per_epoch,
    fair_shares,
    grid_windows,
)
from .reports import REPORT_COLUMNS, report_paths, write_curve_png
from .series import (
    Pair,
    Sample,
    Scene,
    SeriesInfo,
    check_scenes,
    check_series,
    date_from_name,
    group_scenes,
    parse_date,
    read_manifest,
    read_manifests,
    resolve_series,
    series_from_inputs,
    series_from_layers,
    write_manifest,
)
from .split import Split, choose_references, split_scenes, split_series
from .step import masked_l1, train_step
from .trainer import TrainResult, TrainSettings, train, train_from_inputs
from .validation import METRIC_NAMES, Validator

__all__ = [
    "AUTO_PATCHES_CAP", "CHECKPOINT_SUFFIX", "METRIC_NAMES", "REPORT_COLUMNS", "Pair", "PatchSampler", "Prefetcher",
    "Sample", "Scene", "SeriesData", "SeriesInfo", "Split", "TrainResult", "TrainSettings", "TrainingState",
    "Validator", "check_scenes", "check_series", "checkpoint_path", "choose_references", "date_from_name",
    "default_patches_per_epoch", "fair_shares", "grad_scaler", "grid_windows", "group_scenes", "load_checkpoint",
    "masked_l1", "parse_date", "read_manifest", "read_manifests", "report_paths", "resolve_series",
    "series_from_inputs", "series_from_layers", "split_scenes", "split_series", "train", "train_from_inputs",
    "train_step", "write_curve_png", "write_manifest",
]
