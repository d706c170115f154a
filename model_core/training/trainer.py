""":func:`train`: from a series of fine/coarse pairs to a model file, in a few readable steps.

1. :class:`TrainSettings` checks the numbers; :func:`~.series.resolve_series` reads the series.
2. :func:`prepare_run` checks the scenes, chooses the network (new, or the model to
   fine-tune), splits the series and plans the patches and the device: a :class:`TrainingRun`.
3. :func:`start_model` builds the network, optimizer and gradient scaler, fresh or
   resumed from the checkpoint (:class:`~.checkpoint.TrainingState`).
4. :func:`~.loop.run_epochs` trains, validates every epoch and checkpoints.
5. :func:`finish` writes the best model with its provenance, the curves, and the message.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import distributed
from ..cloud_masks import CloudRule, check_masks, clouds_of, coarse_clouds_of
from ..errors import Cancelled, CtstfmError, OptionError
from ..progress import Progress
from .checkpoint import TrainingState, checkpoint_path
from .data import (ASSUMED_COARSE_RATIO, PatchSampler, SeriesData, clamp_patches, coarse_shift_pixels,
                   few_coarse_pixels_note, training_tiles)
from .loop import STOP_CANCELLED, run_epochs
from .reports import (
    build_provenance, closing_message, first_guess_text, log_start, report_paths, scene_records, write_curve_png,
)
from .series import SeriesInfo, check_scenes, keep_out_of_training, resolve_series, series_from_inputs, usable_pairs
from .start import adopt_saved_start, check_start, choose_start, fit_change_gain, little_change_note, zero_head
from .split import pooled_split, split_scenes
from ..device import grad_scaler
from .validation import Validator, metrics_text


@dataclass
class TrainResult:
    """What :func:`train` wrote and how the training went."""

    model_path: str
    report_csv: str
    report_png: str | None
    checkpoint: str
    epochs: int  # epochs completed in total (resumed runs count the earlier ones)
    best_epoch: int
    best_metrics: dict
    initial_metrics: dict
    history: list
    train_dates: list
    validation_dates: list
    validation_mode: str
    device: str
    seconds: float
    cancelled: bool = False
    message: str = ""
    stopped: str = "done"  # why training stopped: done, cancelled, time budget or no improvement
    baselines: dict = field(default_factory=dict)  # "no_change"/"first_guess" -> validation metrics
    provenance: dict = field(default_factory=dict)
    scenes: list = field(default_factory=list)  # per scene: name, manifest, dates, split (as in provenance)
    report_html: str = ""  # the HTML report (report_html.py), when one was asked for
    notes: list = field(default_factory=list)  # warnings about the training data, repeated where the log ends


def _check_positive(key, value, minimum, kind=int):
    """``value`` as ``kind``; an :class:`OptionError` naming the option ``key`` unless it is at least ``minimum``."""
    if value is None or kind(value) < minimum:
        raise OptionError(f"{{{key}}} is {value}; give a value of at least {minimum}.", key)
    return kind(value)


@dataclass(frozen=True)
class TrainSettings:
    """The numbers that steer a training run, checked once."""

    epochs: int = 150
    batch_size: int = 4
    patch_size: int = 64
    patches_per_epoch: int | None = None  # None: as many as tile the training data (see clamp_patches)
    lr: float = 2e-4
    references: int = 1
    max_gap_days: int | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    min_valid: float = 0.5
    max_validation_windows: int = 64
    max_minutes: float = 15.0  # time budget of the run in minutes; 0: none
    start: str = "best"  # "best": the best of the model and the references (training/start.py); "model"
    fit_change_gain: bool = True  # scale the first guess's coarse change by a gain fitted on the training dates
    coarse_shift: float = 0.3  # augmentation: largest random offset of each coarse image, in coarse pixels
    patience: int = 5  # stop after this many epochs without a new best (0: never)
    mask_rule: str = "nonzero"  # which values of the manifest's masks are cloud (model_core.cloud_masks.CloudRule)
    coarse_mask_rule: str = "nonzero"  # the same for its coarse_mask column
    kept_out: tuple = ()  # fine dates (ISO) of the series kept out of training (train's keep_out)

    @property
    def clouds(self):
        """``pair -> [CloudMask]``: where each fine image is cloudy (its manifest mask)."""
        rule = CloudRule.parse(self.mask_rule)
        return lambda pair: clouds_of(pair, rule)

    @property
    def coarse_clouds(self):
        """``pair -> [CloudMask]``: where each coarse image is cloudy (its manifest coarse_mask)."""
        rule = CloudRule.parse(self.coarse_mask_rule, "coarse_mask_rule")
        return lambda pair: coarse_clouds_of(pair, rule)

    @classmethod
    def checked(cls, **values):
        """Settings from keyword arguments, each checked (a clear error names the bad one)."""
        s = cls(**values)
        lr = float(s.lr)
        if not lr > 0:
            raise OptionError(f"The learning rate {{lr}} is {lr}; give a positive value, e.g. 0.0001.", "lr")
        if not float(s.max_minutes or 0) >= 0:
            raise OptionError(
                f"The time budget {{max_minutes}} is {s.max_minutes}; give 0 (no limit) or a number of minutes, e.g. 10.",
                "max_minutes",
            )
        if not 0.0 <= float(s.coarse_shift) <= 1.0:
            raise OptionError(
                f"The coarse shift {{coarse_shift}} is {s.coarse_shift}; give a value between 0 (off) and 1 coarse "
                "pixel, e.g. 0.3.", "coarse_shift",
            )
        if not 0.0 < float(s.min_valid) <= 1.0:
            raise CtstfmError(f"The minimum valid fraction of a patch is {s.min_valid}; give a value in (0, 1].")
        return cls(
            epochs=_check_positive("epochs", s.epochs, 1),
            batch_size=_check_positive("batch_size", s.batch_size, 1),
            patch_size=_check_positive("patch_size", s.patch_size, 8),
            patches_per_epoch=int(s.patches_per_epoch) if s.patches_per_epoch else None,
            lr=lr,
            references=_check_positive("references", s.references, 1),
            max_gap_days=int(s.max_gap_days) if s.max_gap_days else None,
            validation_fraction=s.validation_fraction,
            seed=int(s.seed),
            min_valid=float(s.min_valid),
            max_validation_windows=int(s.max_validation_windows),
            max_minutes=float(s.max_minutes or 0),
            start=check_start(s.start),
            fit_change_gain=bool(s.fit_change_gain),
            coarse_shift=float(s.coarse_shift),
            patience=_check_positive("patience", s.patience, 0),
            mask_rule=CloudRule.parse(s.mask_rule).text,
            coarse_mask_rule=CloudRule.parse(s.coarse_mask_rule, "coarse_mask_rule").text,
            kept_out=tuple(s.kept_out),
        )




@dataclass
class NetworkChoice:
    """The network a run trains: its configuration, bands and scale, and the model it starts from."""

    config: object
    band_names: list
    scale: float
    init_model: str | None = None
    init_state: dict | None = None  # weights of init_model

    @property
    def first_guess_box(self):
        """The box of the first-guess baseline: the network's own, else 33 px (about two 480 m pixels)."""
        from ..network import STAND_IN_BOX

        return int(getattr(self.config, "residual_blur", 0) or STAND_IN_BOX)


def choose_network(info, *, init_model=None, from_scratch=False, bands=None, width=None, predict_residual=False,
                   residual_blur=0, scale=None, use_coarse_t0=True, progress):
    """The network a run trains: the model to fine-tune (``init_model``, by default the embedded
    model in the mode's form, cut down to the series' bands by name), or with ``from_scratch`` a new
    one; in the three-image mode with ``use_coarse_t0``, else the two-image one."""
    from ..network import DEFAULT_BANDS, CTSTFMConfig
    from ..scales import check_scale_value

    images = 3 if use_coarse_t0 else 2
    if init_model or not from_scratch:
        loaded, label = start_model_for_bands(init_model, info, bands, progress, three_image=bool(use_coarse_t0))
        if width and int(width) != loaded.config.width:
            progress.info(f"Width {width} ignored: fine-tuning keeps the initial model's width {loaded.config.width}.")
        return NetworkChoice(
            _in_mode(loaded.config, images, label, progress), list(loaded.band_names),
            float(scale) if scale else float(loaded.scale), label, loaded.model.state_dict(),
        )
    band_names = list(info.band_names or (DEFAULT_BANDS if info.bands == len(DEFAULT_BANDS) else []))
    if len(band_names) != info.bands:
        band_names = [f"band{i + 1}" for i in range(info.bands)]
    kwargs = {"bands": info.bands, "predict_residual": bool(predict_residual) or bool(residual_blur),
              "residual_blur": int(residual_blur), "images": images}
    if width:
        kwargs["width"] = int(width)
    scale = check_scale_value(scale, "scale") if scale else 1e-4
    return NetworkChoice(CTSTFMConfig(**kwargs).check_size(), band_names, scale)


def _in_mode(config, images, label, progress):
    """``config`` in the run's mode (two or three images): a model is fine-tuned into the other mode by
    feeding its coarse stream the other input (its weights fit both; training adapts them)."""
    if config.images == images:
        return config
    mode = {2: "two-image (fine T0, coarse T1)", 3: "three-image (fine T0, coarse T0, coarse T1)"}
    progress.info(
        f"The model to fine-tune ({label}) is {mode[config.images]}; it is trained here as {mode[images]}"
        + (" because USE_COARSE_T0 is off." if images == 2 else " because USE_COARSE_T0 is on.")
    )
    return dataclasses.replace(config, images=images)


def start_model_for_bands(init_model, info, bands, progress, three_image=False):
    """``(loaded, label)``: ``init_model`` (default: the embedded model, its three-image form with
    ``three_image``) for the series' bands.

    A model with other bands than the fine rasters is cut down to them by name
    (:func:`model_core.bands.select_bands_by_name`): the names come from ``bands``
    (e.g. ``"green,red,nir"``) or the fine rasters' band descriptions."""
    from ..model_file import load_model
    from ..paths import default_model

    path = str(init_model) if init_model else default_model(three_image)
    if path is None:
        raise OptionError(
            "This installation has no built-in model to fine-tune; give a model ({init_model}) or train from "
            "scratch ({from_scratch}).", "init_model", "from_scratch",
        )
    label = path if init_model else f"the default model ({path})"
    loaded = load_model(path, map_location="cpu")
    model_bands = list(loaded.band_names)
    names = bands or (list(info.band_names) if info.band_names else None)
    if loaded.config.bands == info.bands and (
        names is None or [str(n).strip().lower() for n in (names.split(",") if isinstance(names, str) else names)]
        == [n.lower() for n in model_bands]
    ):
        return loaded, label
    if names is None:
        raise OptionError(
            f"The initial model {label} has {loaded.config.bands} bands ({', '.join(model_bands)}) but the fine "
            f"rasters have {info.bands} without band names; name them ({{bands}}, e.g. green,red,nir, or the rasters' "
            "band descriptions), or give rasters with the model's bands, or train from scratch ({from_scratch}).",
            "bands", "from_scratch",
        )
    if info.bands > loaded.config.bands:
        raise OptionError(
            f"The initial model {label} has {loaded.config.bands} bands ({', '.join(model_bands)}) but the fine "
            f"rasters have {info.bands}; give rasters with (a subset of) the model's bands, or train from scratch "
            "({from_scratch}).", "from_scratch",
        )
    from ..bands import parse_band_names, select_bands_by_name

    wanted = parse_band_names(names)
    if len(wanted) != info.bands:
        raise OptionError(
            f"{{bands}} names {len(wanted)} bands ({', '.join(wanted)}) but the fine rasters have {info.bands}; name "
            "every band of the fine rasters, in their order.", "bands",
        )
    cut = select_bands_by_name(loaded, wanted)
    if cut is not loaded:
        progress.info(
            f"The {loaded.config.bands}-band model {label} is cut down to the series' bands "
            f"{', '.join(cut.band_names)} (matched by name) to start from."
        )
    return cut, label


@dataclass
class TrainingRun:
    """Everything decided before the first step: data, network, split, patches, device."""

    pairs: list
    scenes: list
    labels: list  # how logs and the checkpoint name each date ("scene date" with several scenes)
    info: SeriesInfo
    network: NetworkChoice
    settings: TrainSettings
    split: object
    patch: int
    patches_per_epoch: int
    sample_text: list
    device: str
    amp_dtype: object
    resampling: str

    @property
    def steps(self):
        return int(math.ceil(self.patches_per_epoch / self.settings.batch_size))

    @property
    def identity(self):
        """What a resumed run must share with the checkpoint it resumes."""
        return {
            "dates": self.labels,
            "bands": self.info.bands,
            "config": self.network.config.to_dict(),
            "validation_mode": self.split.mode,
        }


def _series_info(scenes, progress):
    """The first scene's grid info; band names dropped when the scenes' descriptions disagree."""
    info = scenes[0].info
    if any(scene.info.band_names != info.band_names for scene in scenes):
        if all(scene.info.band_names for scene in scenes):
            progress.info(
                "The scenes' band descriptions differ ("
                + "; ".join(f"{scene.label}: {', '.join(scene.info.band_names)}" for scene in scenes)
                + "); check that every scene has its bands in the same order."
            )
        info = SeriesInfo(info.width, info.height, info.bands, (), info.crs_wkt, info.geotransform)
    return info


def _plan_patches(scenes, settings, progress):
    """``(patch, patches_per_epoch)``: the patch side (shrunk to the smallest training area) and epoch size."""
    patch = min([settings.patch_size] + [min(scene.train_rows, scene.info.width) for scene in scenes])
    if patch < settings.patch_size:
        progress.info(
            f"The patch size {settings.patch_size} is larger than the training area; using {patch} x {patch} patches."
        )
    per_epoch = settings.patches_per_epoch or clamp_patches(
        sum(training_tiles(scene.split, scene.info.height, scene.info.width, patch) for scene in scenes)
    )
    return patch, _check_positive("patches_per_epoch", per_epoch, 1)


def _log_series(run, progress):
    pairs, scenes, info, network = run.pairs, run.scenes, run.info, run.network
    bands = f"{info.bands} bands ({', '.join(network.band_names)}), scale {network.scale:g}."
    if len(scenes) > 1:
        progress.info(f"{len(scenes)} scenes, {len(pairs)} dates in all, {bands}")
        for scene in scenes:
            progress.info(
                f"Scene '{scene.label}': {len(scene.pairs)} dates, {scene.info.width} x {scene.info.height} px. "
                f"{scene.split.note}"
            )
    else:
        progress.info(f"{len(pairs)} dates, {info.width} x {info.height} px, {bands}")
        progress.info(run.split.note)
    progress.info(
        f"{len(run.split.train_samples)} training samples (target <- reference): " + ", ".join(run.sample_text)
    )


def prepare_run(pairs, manifests, settings, *, network_options, device, progress):
    """Check the scenes, choose the network, split the series, plan patches and device."""
    from ..device import device_note, mixed_precision_dtype, resolve_device
    from ..raster import DEFAULT_RESAMPLING
    from ..scales import check_series_scales

    progress.update(0.0, "checking the series")
    scenes = check_scenes(pairs, progress)
    pairs = [pair for scene in scenes for pair in scene.pairs]
    for scene in scenes:
        scene.manifest = manifests.get(scene.name)
    several = len(scenes) > 1
    labels = [f"{pair.scene or '(unnamed)'} {pair.date}" if several else pair.date.isoformat() for pair in pairs]
    info = _series_info(scenes, progress)
    network = choose_network(info, progress=progress, **network_options)
    check_series_scales(pairs, network.scale)
    check_masks(pairs, CloudRule.parse(settings.mask_rule),
                coarse_rule=CloudRule.parse(settings.coarse_mask_rule, "coarse_mask_rule"))
    split_scenes(
        scenes, validation_fraction=settings.validation_fraction, references=settings.references,
        max_gap_days=settings.max_gap_days, patch_size=settings.patch_size,
    )
    split = pooled_split(scenes) if several else scenes[0].split
    patch, per_epoch = _plan_patches(scenes, settings, progress)
    per_epoch = distributed.share_patches(settings.batch_size, per_epoch, progress)
    dates = [pair.date for pair in pairs]
    torch_device = distributed.rank_device(resolve_device(device))
    if device_note(torch_device):
        progress.info(device_note(torch_device))
    run = TrainingRun(
        pairs=pairs, scenes=scenes, labels=labels, info=info, network=network, settings=settings, split=split,
        patch=patch, patches_per_epoch=per_epoch,
        sample_text=[f"{labels[s.target]}<-{dates[s.reference]}" for s in split.train_samples],
        device=torch_device, amp_dtype=mixed_precision_dtype(torch_device), resampling=DEFAULT_RESAMPLING,
    )
    _log_series(run, progress)
    return run


def start_model(run, *, ckpt_path, resume, progress):
    """``(model, optimizer, scaler, rng, state)``: seeded, fresh or restored from the checkpoint."""
    import torch

    from ..network import CTSTFM

    torch.manual_seed(run.settings.seed)
    rng = np.random.default_rng(run.settings.seed)
    model = CTSTFM(run.network.config)
    if run.network.init_state is not None:
        model.load_state_dict(run.network.init_state)
        progress.info(f"Fine-tuning {run.network.init_model}.")
    model.to(run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.settings.lr, betas=(0.9, 0.999))
    scaler = grad_scaler(run.amp_dtype, run.device)
    if resume:
        adopt_saved_start(run, model, ckpt_path)
        state = TrainingState.resume(
            ckpt_path, run.identity, model=model, optimizer=optimizer, scaler=scaler, rng=rng, lr=run.settings.lr
        )
        progress.info(
            f"Resuming from {ckpt_path}: {state.epoch} epochs done, best epoch {state.best_epoch} (val MAE "
            f"{state.best_metrics.get('mae', math.nan):.5f}); training up to epoch {run.settings.epochs}."
        )
    else:
        state = TrainingState(identity=run.identity)
        if Path(ckpt_path).exists():
            progress.info(f"An old checkpoint {ckpt_path} exists; this new training replaces it after its first epoch.")
    if state.epoch >= run.settings.epochs:
        progress.info(
            f"The checkpoint already holds {state.epoch} epochs (of the {run.settings.epochs} asked for): writing its "
            "best model; ask for more epochs to train further."
        )
    return model, optimizer, scaler, rng, state


def open_data(run, data, rng, progress):
    """``(validator, sampler)``: the fixed validation windows and the patch sampler, probed."""
    progress.update(0.005, "choosing validation windows")
    validator = Validator(
        data, run.scenes, run.patch, max_windows=run.settings.max_validation_windows,
        min_valid=run.settings.min_valid, batch_size=run.settings.batch_size, device=run.device,
        amp_dtype=run.amp_dtype, progress=progress,
    )
    several = len(run.scenes) > 1
    progress.info(
        f"Validation on {len(validator.windows)} fixed windows of up to {run.patch} x {run.patch} px"
        + (f" from {len(run.split.validation_samples)} validation samples" if run.split.mode == "dates" else "")
        + (" (" + ", ".join(f"{s.label}: {n}" for s, n in zip(run.scenes, validator.scene_counts)) + ")."
           if several else ".")
    )
    for scene, count in zip(run.scenes, validator.scene_counts):
        if several and not count:
            progress.info(f"Scene '{scene.label}' has no validation window with valid pixels: it is not validated.")
    train_scenes = [scene for scene in run.scenes for _ in scene.split.train_samples]
    shifts = coarse_shifts(run.scenes, run.settings.coarse_shift, progress)
    sampler = PatchSampler(
        data, run.split.train_samples, [scene.train_rows for scene in train_scenes],
        [scene.info.width for scene in train_scenes], run.patch, run.settings.min_valid, rng,
        shift=[shifts[scene.name] for scene in train_scenes],
    )
    sampler.probe()
    return validator, sampler


def coarse_shifts(scenes, coarse_shift, progress):
    """Per scene name, the largest random offset of a training patch's coarse images in fine pixels
    (``coarse_shift`` coarse pixels), logged."""
    from ..series import coarse_pixel_ratio

    if not coarse_shift:
        return {scene.name: 0 for scene in scenes}
    ratios = {scene.name: coarse_pixel_ratio(scene.info, scene.pairs[0].coarse) for scene in scenes}
    shifts = {name: coarse_shift_pixels(coarse_shift, ratio) for name, ratio in ratios.items()}
    assumed = (f" (coarse images on the fine grid: a coarse pixel taken as {ASSUMED_COARSE_RATIO} fine pixels)"
               if min(ratios.values()) < 2 else "")
    progress.info(
        f"Augmentation: each coarse image of a training patch is shifted by its own random offset of up to "
        f"{coarse_shift:g} coarse pixel ({', '.join(sorted({str(v) for v in shifts.values()}))} fine pixels{assumed}), "
        "so the network cannot learn the training dates' misregistration."
    )
    return shifts


def finish(run, model, state, *, out_model, ckpt_path, png_path, csv_path, data_source, window_counts, stopped,
           seconds, progress):
    """Write the best model with its provenance and the curves; the :class:`TrainResult`."""
    from ..model_file import save_model

    cancelled = stopped == STOP_CANCELLED
    model.load_state_dict(state.best_state)
    model.to("cpu")
    scenes = scene_records(run.scenes, window_counts)
    provenance = build_provenance(
        run, state, data_source=data_source, scenes=scenes, stopped=stopped, seconds=seconds
    )
    network = run.network
    main = distributed.world().main  # under torchrun rank 0 alone writes
    if main:
        save_model(
            str(out_model), model, config=network.config, band_names=network.band_names, scale=network.scale,
            provenance=provenance,
        )
    png = None
    if state.history and main:
        png = write_curve_png(state.history, png_path, state.initial_metrics, state.best_epoch, state.baselines)
    if png is None and main:
        progress.info("matplotlib is not installed: no PNG curve was drawn (the CSV holds the same numbers).")
    notes = [f"WARNING: {note}" for note in (little_change_note(network.config, network.band_names),
                                             few_coarse_pixels_note(run.scenes)) if note]
    message = closing_message(
        state, epochs=run.settings.epochs, out_model=out_model, ckpt_path=ckpt_path, stopped=stopped,
        seconds=seconds, max_minutes=run.settings.max_minutes, patience=run.settings.patience,
        validation_mode=run.split.mode, notes=notes,
    )
    for line in message.splitlines():
        progress.info(line)
    progress.update(1.0, "done")
    return TrainResult(
        model_path=str(out_model), report_csv=str(csv_path) if state.history else "", report_png=png,
        checkpoint=str(ckpt_path), epochs=state.epoch, best_epoch=state.best_epoch, best_metrics=state.best_metrics,
        initial_metrics=state.initial_metrics, history=state.history, train_dates=list(run.split.train_dates),
        validation_dates=list(run.split.validation_dates), validation_mode=run.split.mode, device=run.device,
        seconds=seconds, cancelled=cancelled, message=message, provenance=provenance, scenes=scenes,
        stopped=stopped, baselines=dict(state.baselines), notes=notes,
    )


def _output_paths(out_model, pairs, manifests, init_model, report_html=None):
    """``(model, checkpoint, csv, png, html or None)`` paths, checked by the one output rule: none is an input (a
    manifest, a raster it lists, the initial model) or another of these outputs. The checkpoint is the
    run's own file: a resumed run reads it, and every run rewrites it."""
    from ..outputs import check_outputs, check_writable

    if out_model is None or not str(out_model).strip():
        check_writable(out_model, "output model")  # raises: no file given
    out_model = Path(out_model).expanduser()
    outputs = dict(zip(("output model", "checkpoint", "training report", "training curves"),
                       (out_model, checkpoint_path(out_model), *report_paths(out_model))))
    if report_html:
        outputs["HTML training report"] = Path(report_html).expanduser()
    inputs = {"initial model": init_model}
    for name, manifest in manifests.items():
        inputs[f"manifest of scene '{name}'" if name else "manifest"] = manifest
    for pair in pairs:
        where = f" of {pair.date}" + (f" in scene '{pair.scene}'" if pair.scene else "")
        for what, path in (("fine image", pair.fine), ("coarse image", pair.coarse), ("cloud mask", pair.mask),
                           ("coarse cloud mask", pair.coarse_mask)):
            if path:
                inputs[f"{what}{where}"] = path
    folder = out_model.parent
    created = not out_model.is_dir() and not folder.exists()
    if created:
        folder.mkdir(parents=True)
    try:
        checked = check_outputs({what: str(path) for what, path in outputs.items()}, inputs)
    except CtstfmError:
        if created:
            folder.rmdir()
        raise
    paths = [Path(path) for path in checked.values()]
    return (*paths[:4], paths[4] if report_html else None)


def _adopt_change_gain(run, model, gains, progress):
    """Give the run's network the fitted first-guess gains (``{}``: none), and say what they are."""
    if not gains:
        return
    config = dataclasses.replace(run.network.config, **gains)
    run.network.config = config
    model.config = config
    names = run.network.band_names
    blur = (f" Each coarse change is averaged over {config.change_blur} x {config.change_blur} fine pixels first: "
            "that fitted the training dates better than the raw change (coarse pixel edges and noise smoothed)."
            if config.change_blur > 1 else "")
    if config.box_change_gain:
        terms = ", ".join(f"{name} {a:.2f} x (C1 - C0) + {b:.2f} x (C1 - box(F0))"
                          for name, a, b in zip(names, config.change_gain, config.box_change_gain))
        progress.info(f"First guess fitted on the training dates (F0 plus, per band): {terms}.{blur}")
    else:
        progress.info(
            "Change gain fitted on the training dates (fine change / coarse change, per band; the first guess "
            "scales the coarse change by it): "
            + ", ".join(f"{name} {gain:.2f}" for name, gain in zip(names, config.change_gain)) + f".{blur}"
        )
    note = little_change_note(config, names)
    if note:
        progress.warning(note)


def _validate_start(run, model, state, validator, data, progress):
    """Fit the change gain, validate the initial model, its baselines and the chosen start once per run
    (not on resume); returns the seconds it took."""
    started = time.monotonic()
    if state.initial_metrics is None:
        fitted = None
        if run.settings.fit_change_gain and run.network.config.predict_residual:
            _adopt_change_gain(run, model, fit_change_gain(run, data, progress), progress)
        progress.update(0.01, "validating the initial model")
        initial = validator.run(model)
        state.baselines = validator.baselines(run.network.first_guess_box)
        state.band_means = validator.band_means
        if run.network.config.change_gain and run.settings.start == "best":
            guess = copy.deepcopy(model)
            zero_head(guess)
            fitted = validator.run(guess)
        _, initial = choose_start(run, model, initial, state.baselines, run.settings.start, progress, fitted)
        state.identity = run.identity
        state.start(initial, model)
    return time.monotonic() - started


def train(
    series, out_model, *, epochs=150, batch_size=4, patch_size=64, patches_per_epoch=None, lr=2e-4, references=1,
    max_gap_days=None, validation_fraction=0.2, init_model=None, from_scratch=False, bands=None, resume=False,
    device="auto", seed=0, width=None, predict_residual=False, residual_blur=0, scale=None, use_coarse_t0=True,
    fit_change_gain=True, coarse_shift=0.3, min_valid=0.5, max_validation_windows=64, max_minutes=15.0, patience=5,
    start="best", mask_rule="nonzero", coarse_mask_rule="nonzero", keep_out=None, data_source=None, report_html=None,
    progress=None,
):
    """Train CTSTFM on a series and write the best model to ``out_model``.

    ``series``: a manifest path (CSV ``date,fine,coarse``, optionally ``scene``), a list
    of manifest paths (:func:`~.series.read_manifests`: each its own scene(s)) or a list of
    :class:`~.series.Pair` (from one or several scenes).
    ``epochs`` is the total epoch count (a resumed run continues up to it).
    ``patches_per_epoch`` None or 0: as many as tile the training data (at most 1000).
    ``init_model``: the model to fine-tune; None (default): the embedded default model. Either is cut
    down to the series' bands by name (``bands``, e.g. ``"green,red,nir"``, else the fine rasters' band
    descriptions). ``from_scratch``: a new network instead (the paper's recipe unless
    ``predict_residual``). ``start``: "best" starts a residual network from the best of itself, the
    unchanged fine image and the first guess (:mod:`.start`); "model" from the model as it is.
    ``max_minutes``: time budget in minutes (0: none); training stops there with the best model so far.
    ``patience``: stop after this many epochs without a new best (an epoch must validate 1 % better,
    :data:`~.checkpoint.MIN_IMPROVEMENT`); 0: never.
    ``width``/``predict_residual``/``residual_blur`` shape a new network (ignored with ``init_model``,
    whose configuration, band names and scale are kept). ``scale``: reflectance = DN
    x scale (None: the init model's, else 1e-4). ``use_coarse_t0``: the three-image mode (docs/architecture.md):
    each sample also gets its reference date's coarse image, the first guess is ``F0 + C1 - C0``, and the
    default start is the embedded model's three-image form; off: two images (F0, C1). ``fit_change_gain``:
    scale the first guess's coarse change per band by its slope on the training dates, in the three-image
    mode a fitted mix of ``C1 - C0`` and ``C1 - box(F0)`` (:func:`.start.fit_change_gain`).
    ``coarse_shift``: shift each training patch's coarse images by a random offset of up to this many coarse
    pixels, each date its own (0: off), so that the network does not learn one date's misregistration.
    ``mask_rule``: which values of the manifest's optional ``mask`` rasters are cloud, as
    :func:`model_core.series.fuse_series` reads them; cloudy pixels are neither input nor label.
    ``coarse_mask_rule``: the same for its ``coarse_mask`` rasters (e.g. ``modis-state``); a pixel cloudy in the
    coarse image at T1 is no label. ``keep_out``: fine dates of the series not to train on (comma-separated
    ``YYYY-MM-DD`` or a list; :func:`~.series.keep_out`), so that the series job can check the model on them;
    provenance lists them.
    ``data_source``: what provenance
    records as the data (default: the manifest path(s) or the list of pairs). ``report_html``: also
    write the report as one HTML page (:mod:`.report_html`: verdict, curves inline, every epoch).
    Returns a :class:`TrainResult`; raises :class:`~model_core.errors.Cancelled` when
    cancelled before the first epoch finished (nothing written).
    """
    started = time.monotonic()
    progress = distributed.rank_progress(progress or Progress())
    settings = TrainSettings.checked(
        epochs=epochs, batch_size=batch_size, patch_size=patch_size, patches_per_epoch=patches_per_epoch, lr=lr,
        references=references, max_gap_days=max_gap_days, validation_fraction=validation_fraction, seed=seed,
        min_valid=min_valid, max_validation_windows=max_validation_windows, max_minutes=max_minutes, patience=patience,
        start=start, fit_change_gain=fit_change_gain, coarse_shift=coarse_shift, mask_rule=mask_rule,
        coarse_mask_rule=coarse_mask_rule,
    )
    pairs, manifests, data_source = resolve_series(series, data_source)
    trained = keep_out_of_training(pairs, keep_out, progress)  # a bad date is refused before any folder is made
    with distributed.main_first():  # rank 0 creates the output folder
        out_model, ckpt_path, csv_path, png_path, html_path = _output_paths(
            out_model, pairs, manifests, init_model, report_html
        )  # every raster listed is protected, also those of dates that do not train
    settings = dataclasses.replace(settings, kept_out=tuple(
        sorted({pair.date.isoformat() for pair in pairs} - {pair.date.isoformat() for pair in trained})))
    pairs = usable_pairs(trained, progress)
    network_options = dict(init_model=init_model, from_scratch=from_scratch, bands=bands, width=width,
                           predict_residual=predict_residual, residual_blur=residual_blur, scale=scale,
                           use_coarse_t0=use_coarse_t0)
    run = prepare_run(pairs, manifests, settings, network_options=network_options, device=device, progress=progress)
    model, optimizer, scaler, rng, state = start_model(run, ckpt_path=ckpt_path, resume=resume, progress=progress)

    from ..raster import gdal_cache_limit

    data = SeriesData(run.pairs, scale=run.network.scale, bands=run.info.bands, resampling=run.resampling,
                      config=run.network.config, clouds=settings.clouds, coarse_clouds=settings.coarse_clouds)
    with contextlib.ExitStack() as stack:
        stack.enter_context(gdal_cache_limit())
        stack.callback(data.close)
        validator, sampler = open_data(run, data, rng, progress)
        first_guess = first_guess_text(run.network.config, run.network.first_guess_box)  # before the start is chosen
        validation_seconds = _validate_start(run, model, state, validator, data, progress)
        log_start(state, first_guess, progress)
        precision = f" with {str(run.amp_dtype).replace('torch.', '')} mixed precision" if run.amp_dtype else ""
        progress.info(
            f"Training on {run.device}{precision}: {run.patches_per_epoch} patches of {run.patch} x {run.patch} px "
            f"per epoch, batch {settings.batch_size}, lr {settings.lr:g}, epochs {state.epoch + 1} to {settings.epochs}."
        )
        stopped = run_epochs(
            run, model, optimizer, scaler, rng, state, sampler, validator, ckpt_path=ckpt_path, csv_path=csv_path,
            started=started, progress=progress, validation_seconds=validation_seconds,
        )
    if stopped == STOP_CANCELLED and not state.history:
        raise Cancelled("Cancelled before the first epoch finished; no model was written.")
    result = finish(
        run, model, state, out_model=out_model, ckpt_path=ckpt_path, png_path=png_path, csv_path=csv_path,
        data_source=data_source, window_counts=validator.scene_counts, stopped=stopped,
        seconds=state.seconds_before + time.monotonic() - started, progress=progress,
    )
    if html_path and distributed.world().main:
        from .report_html import write_report_html

        result.report_html = write_report_html(result, html_path)
    distributed.barrier()  # no rank leaves before rank 0 has written everything
    return result


def train_from_inputs(out_model, *, manifest=None, fine=None, coarse=None, dates=None, progress=None, **options):
    """:func:`train` on the series a user gives as manifest(s) *or* fine/coarse rasters and dates
    (:func:`~.series.series_from_inputs`); ``options`` are :func:`train`'s keyword arguments.
    The CLI and QGIS both call this (``model_core.options.TRAIN``)."""
    series, data_source = series_from_inputs(manifest, fine, coarse, dates, progress=progress)
    return train(series, out_model, data_source=data_source, progress=progress, **options)
