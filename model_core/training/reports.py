"""What a training run leaves beside its model: the epoch report (CSV, PNG curves),
the provenance stored in the model file, and the closing message."""

from __future__ import annotations

import csv
import datetime as _dt
import math
from pathlib import Path

from ..outputs import atomic_open
from .validation import metrics_text

REPORT_COLUMNS = [
    "epoch",
    "train_loss",
    "val_mae",
    "val_rmse",
    "val_psnr",
    "val_ssim",
    "val_sam",
    "seconds",
    "patches_per_second",
]


def report_paths(out_model):
    """``(csv, png)``: the epoch report and curves beside ``out_model`` (``cia.pt`` -> ``cia_training.csv``)."""
    out_model = Path(out_model)
    stem = out_model.with_suffix("") if out_model.suffix else out_model
    return Path(str(stem) + "_training.csv"), Path(str(stem) + "_training.png")


# The report's first rows: the two references on the validation windows, then the starting model.
BASELINE_ROWS = (("no_change", "the unchanged fine image"), ("first_guess", "the first guess"))


def reference_rows(initial_metrics=None, baselines=None):
    """Report rows for the baselines (``epoch`` = ``no_change``, ``first_guess``) and epoch 0 (the start)."""
    rows = [
        {"epoch": key, **{f"val_{name}": value for name, value in baselines[key].items()}}
        for key, _ in BASELINE_ROWS
        if baselines and key in baselines
    ]
    if initial_metrics:
        rows.append({"epoch": 0, **{f"val_{name}": value for name, value in initial_metrics.items()}})
    return rows


def write_report_csv(history, path, initial_metrics=None, baselines=None):
    """The epoch report: the baselines and epoch 0 (the starting model), then one row per epoch."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in reference_rows(initial_metrics, baselines) + list(history):
            writer.writerow({key: format_number(row.get(key)) for key in REPORT_COLUMNS})


def format_number(value):
    """A report cell: floats with 6 significant digits, anything else as it is."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_curve_png(history, path, initial_metrics=None, best_epoch=None, baselines=None):
    """Training loss and validation metrics per epoch as a PNG (matplotlib Agg, no pyplot).

    Returns the path, or None when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    val_epochs = list(epochs)
    val_mae = [row["val_mae"] for row in history]
    if initial_metrics and math.isfinite(initial_metrics.get("mae", math.nan)):
        val_epochs = [epochs[0] - 1 if epochs else 0] + val_epochs
        val_mae = [initial_metrics["mae"]] + val_mae
    left.plot(epochs, [row["train_loss"] for row in history], "o-", label="training L1 loss")
    left.plot(val_epochs, val_mae, "s-", label="validation MAE")
    for (key, label), colour in zip(BASELINE_ROWS, ("tab:red", "tab:purple")):
        if baselines and key in baselines:
            left.axhline(baselines[key]["mae"], color=colour, linestyle="--", label=f"MAE of {label}")
    if best_epoch is not None:
        left.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    left.set_xlabel("epoch")
    left.set_ylabel("reflectance")
    left.set_title("Loss and validation MAE")
    left.legend()
    right.plot(epochs, [row["val_ssim"] for row in history], "o-", color="tab:green", label="SSIM")
    right.set_xlabel("epoch")
    right.set_ylabel("SSIM", color="tab:green")
    twin = right.twinx()
    twin.plot(epochs, [row["val_psnr"] for row in history], "s-", color="tab:red", label="PSNR (dB)")
    twin.set_ylabel("PSNR (dB)", color="tab:red")
    right.set_title("Validation SSIM and PSNR")
    for axes in (left, right):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return str(path)




def scene_records(scenes, window_counts):
    """Per scene: name, manifest, dates, split and validation windows (for provenance and results)."""
    return [
        {
            "name": scene.name,
            "manifest": scene.manifest,
            "dates": [d.isoformat() for d in scene.dates],
            "train_dates": [d.isoformat() for d in scene.split.train_dates],
            "validation_dates": [d.isoformat() for d in scene.split.validation_dates],
            "validation_mode": scene.split.mode,
            "validation_rows": scene.split.validation_rows,
            "validation_windows": count,
            "size": [scene.info.width, scene.info.height],
        }
        for scene, count in zip(scenes, window_counts)
    ]


def build_provenance(run, state, *, data_source, scenes, stopped, seconds):
    """The provenance a trained model file carries: data, split, settings and results.

    ``run`` is the :class:`~model_core.training.trainer.TrainingRun` (settings, split,
    device), ``state`` the final :class:`~model_core.training.checkpoint.TrainingState`.
    """
    split, settings = run.split, run.settings
    return {
        "kind": "ctstfm-training",
        "data": data_source,
        "scenes": scenes,
        "dates": sorted({pair.date.isoformat() for pair in run.pairs}),
        "kept_out": list(settings.kept_out),  # fine dates of the series not trained on (keep_out)
        "train_dates": [d.isoformat() for d in split.train_dates],
        "validation_dates": [d.isoformat() for d in split.validation_dates],
        "validation": split.note,
        "validation_mode": split.mode,
        "validation_rows": split.validation_rows,
        "validation_windows": sum(scene["validation_windows"] for scene in scenes),
        "samples": run.sample_text,
        "epochs": state.epoch,
        "epochs_requested": settings.epochs,
        "best_epoch": state.best_epoch,
        "best_validation": state.best_metrics,
        "initial_validation": state.initial_metrics,
        "cancelled": stopped == "cancelled",
        "stopped": stopped,
        "max_minutes": settings.max_minutes,
        "patience": settings.patience,
        "baselines": state.baselines,
        "band_means": state.band_means,
        "start": settings.start,
        "coarse_shift": settings.coarse_shift,
        "clouds": {"masks": sum(bool(pair.mask) for pair in run.pairs), "mask_rule": settings.mask_rule,
                   "coarse_masks": sum(bool(pair.coarse_mask) for pair in run.pairs),
                   "coarse_mask_rule": settings.coarse_mask_rule},
        "seed": settings.seed,
        "device": run.device,
        "world_size": _world_size(),  # ranks that trained it (torchrun); 1 for a single process
        "mixed_precision": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else None,
        "batch_size": settings.batch_size,
        "patch_size": run.patch,
        "patches_per_epoch": run.patches_per_epoch,
        "learning_rate": settings.lr,
        "optimizer": "Adam(betas=(0.9, 0.999))",
        "loss": "L1 over valid pixels",
        "resampling": run.resampling,
        "scale": run.network.scale,
        "references": settings.references,
        "max_gap_days": settings.max_gap_days,
        "init_model": str(run.network.init_model) if run.network.init_model else None,
        "seconds": round(seconds, 1),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def first_guess_text(config, first_guess_box):
    """How the first-guess baseline is made for a network of ``config``."""
    if config.images == 3:
        return "fine T0 + coarse T1 - coarse T0"
    if config.reference == "footprint":
        return "fine T0 + coarse T1 - footprint of fine T0"
    return f"fine + coarse - box{first_guess_box}(fine)"


def log_start(state, first_guess, progress):
    """Log the starting model and the two baselines on the validation windows (``first_guess``: how
    the first guess is made, :func:`first_guess_text`)."""
    progress.info(f"Initial model (epoch 0): validation {metrics_text(state.initial_metrics)}.")
    names = {"no_change": "Unchanged fine image", "first_guess": f"First guess ({first_guess})"}
    for key, values in (state.baselines or {}).items():
        progress.info(f"{names.get(key, key)}, same windows: validation {metrics_text(values)}.")


def improvement(best, reference):
    """Relative MAE improvement of ``best`` over ``reference`` in percent (positive: better)."""
    return 100.0 * (reference["mae"] - best["mae"]) / reference["mae"] if reference.get("mae") else math.nan


#: Appended to a favourable verdict when the validation windows come from the training dates themselves.
SPATIAL_CAVEAT = (
    " These windows are held-out rows of the training dates (fewer than four dates: a spatial split), so they "
    "cannot show how the model carries to a new date: before relying on it, fuse a date whose fine image you "
    "kept back and score it with Assess Fusion Accuracy (ctstfm:assess)."
)


def verdict(state, validation_mode="dates"):
    """The last sentence of a training log: how the kept model compares with the unchanged fine image.

    ``validation_mode`` is the split's (:class:`~.split.Split`): with "spatial" a favourable verdict says
    what its windows cannot show. On a hard simulated 128 px case with two training dates a model that
    validated 12 % better than the unchanged fine image was 26 % worse on the next date (docs/benchmarks.md)."""
    best, baselines = state.best_metrics, state.baselines or {}
    lines = []
    if state.best_epoch == 0:
        lines.append(
            f"No epoch beat the starting model (validation MAE {state.initial_metrics['mae']:.5f}): the output is the "
            "starting model unchanged."
        )
    if "no_change" not in baselines:
        return lines
    gain = improvement(best, baselines["no_change"])
    versus_guess = _versus_first_guess(best, baselines.get("first_guess"))
    if gain > 0:
        lines.append(
            f"The model improves on the unchanged fine image by {gain:.1f} % MAE (validation MAE "
            f"{best['mae']:.5f} vs {baselines['no_change']['mae']:.5f}){versus_guess}."
            + (SPATIAL_CAVEAT if validation_mode == "spatial" else "")
        )
    else:
        lines.append(
            f"WARNING: the model does not improve on the unchanged fine image (validation MAE {best['mae']:.5f} vs "
            f"{baselines['no_change']['mae']:.5f}){versus_guess}. " + _noise_note(baselines) + "Try: more training "
            "dates (4 or more) or a longer MAX_MINUTES; fine-tuning the default model (leave INIT_MODEL empty, do not "
            "train from scratch); check that the coarse images are co-registered with the fine ones and use the same "
            "SCALE; or use the unchanged fine image or the temporal difference (ctstfm:temporaldifference) for these "
            "dates."
        )
    return lines


def _versus_first_guess(best, guess):
    """The verdict's clause on the first guess, in words (a signed percentage read as "more MAE")."""
    if not guess or not guess.get("mae"):
        return ""
    gain = improvement(best, guess)
    if gain > 0:
        return f"; it improves on the first guess by {gain:.1f} % MAE ({guess['mae']:.5f})"
    return f"; the first guess validated better, by {-gain:.1f} % MAE ({guess['mae']:.5f})"


def _noise_note(baselines):
    """Why a model may not beat the unchanged image: its first guess (the coarse change added) is worse still.

    Seen on simulated pairs whose ground changed little in 4-6 weeks (docs/benchmarks.md, *When the ground barely
    changed*): the coarse images then disagree with the fine ones more than the ground changed."""
    guess, unchanged = baselines.get("first_guess"), baselines["no_change"]
    if not guess or not guess.get("mae") or guess["mae"] <= unchanged["mae"]:
        return ""
    return (
        f"Even the first guess, the coarse change added to the fine image, is {-improvement(guess, unchanged):.0f} % "
        "worse than the unchanged image here: between these dates the coarse images disagree with the fine ones more "
        "than the ground changed, so there is little change for any method to predict from them. "
    )


def closing_message(state, *, epochs, out_model, ckpt_path, stopped, seconds, max_minutes=0, patience=0,
                    validation_mode="dates", notes=()):
    """The lines that end a training log: what was trained and written, ``notes`` (warnings about the training
    data said earlier in the log, repeated where a reader looks), then the verdict, always the last line."""
    if stopped == "cancelled":
        head = (
            f"Cancelled after {state.epoch} of {epochs} epochs: {out_model} holds the best model so far "
            f"(epoch {state.best_epoch}, validation MAE {state.best_metrics['mae']:.5f}); resume to continue from "
            f"{Path(ckpt_path).name}."
        )
    else:
        why = {"time budget": f"stopped at the {max_minutes:g}-minute budget",
               "no improvement": f"stopped: no new best for {patience} epochs"}.get(stopped, "done")
        head = (
            f"Trained {state.epoch} epochs in {seconds:.0f} s ({why}); best epoch {state.best_epoch}: validation "
            f"{metrics_text(state.best_metrics)} (initial model: MAE {state.initial_metrics['mae']:.5f}). "
            f"Wrote {out_model}."
        )
    return "\n".join([head] + list(notes) + verdict(state, validation_mode))


def _world_size():
    from ..distributed import world

    return world().size
