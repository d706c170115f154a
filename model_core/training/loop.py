"""The epoch loop: train on random patches, validate, keep the best, checkpoint."""

from __future__ import annotations

import time

from .. import distributed
from ..errors import Cancelled
from ..prefetch import Prefetcher
from .reports import write_report_csv
from .step import train_step
from .validation import metrics_text


STOP_DONE, STOP_CANCELLED, STOP_BUDGET, STOP_PATIENCE = "done", "cancelled", "time budget", "no improvement"


def run_epochs(run, model, optimizer, scaler, rng, state, sampler, validator, *, ckpt_path, csv_path, started,
               progress, validation_seconds=0.0):
    """Train from epoch ``state.epoch + 1`` up to ``run.settings.epochs``; returns why it stopped
    (``STOP_DONE``, ``STOP_CANCELLED``, ``STOP_BUDGET`` or ``STOP_PATIENCE``).

    After every epoch: validate, record the epoch in ``state`` (best weights kept
    by validation MAE), rewrite the report CSV and the checkpoint. A cancel during
    an epoch drops that epoch and stops. With ``settings.max_minutes``, the epoch that
    would run past the budget (counted from ``started``, leaving time to validate)
    ends early, is validated and recorded, and training stops. With ``settings.patience``, training
    stops once that many epochs have passed without a new best (early stopping).
    """
    import torch

    settings = run.settings
    deadline = started + 60.0 * settings.max_minutes if settings.max_minutes else None
    epochs, batch_size, per_epoch = settings.epochs, settings.batch_size, run.patches_per_epoch
    counts = [min(batch_size, per_epoch - step * batch_size) for step in range(run.steps)]
    rank_counts = distributed.rank_counts(counts)  # this rank's share (all of it in a single process)
    trained = distributed.wrap_model(model, run.device)  # DDP under torchrun: gradients all-reduced
    main = distributed.world().main
    epochs_to_run = max(epochs - state.epoch, 0)
    first = 0.02
    for index, epoch in enumerate(range(state.epoch + 1, epochs + 1)):
        span = (1.0 - first) / epochs_to_run
        epoch_progress = progress.sub(first + index * span, first + (index + 1) * span)
        epoch_started = time.monotonic()
        distributed.seed_epoch(sampler, settings.seed, epoch)
        prefetch = Prefetcher(sampler.batch, rank_counts)
        try:
            model.train()
            loss_sum = 0.0
            seen = 0
            out_of_time = False
            for step, arrays in enumerate(prefetch):
                distributed.check_stop(progress)  # every rank stops at the same step
                # every rank agrees on the time budget too, or one would wait for the others for ever
                if distributed.any_rank(
                    deadline is not None and seen > 0 and time.monotonic() + validation_seconds > deadline
                ):
                    out_of_time = True
                    break
                coarse, fine0, fine1, valid, *coarse0 = (torch.from_numpy(array).to(run.device) for array in arrays)
                loss = train_step(trained, optimizer, scaler, coarse, fine0, fine1, valid, run.device, run.amp_dtype,
                                  coarse0[0] if coarse0 else None)
                loss_sum += float(loss.detach()) * rank_counts[step]
                seen += rank_counts[step]
                epoch_progress.update(0.9 * (step + 1) / run.steps, f"epoch {epoch}/{epochs}")
            train_seconds = time.monotonic() - epoch_started
            metrics = validator.run(model, epoch_progress.sub(0.9, 1.0))
            validation_seconds = time.monotonic() - epoch_started - train_seconds
        except Cancelled:
            return STOP_CANCELLED
        finally:
            prefetch.close()
        loss_sum, seen = distributed.sum_over_ranks(loss_sum, seen)
        seconds = time.monotonic() - epoch_started
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            **{f"val_{name}": value for name, value in metrics.items()},
            "seconds": seconds,
            "patches_per_second": seen / max(train_seconds, 1e-9),
        }
        improved = state.record(row, metrics, model)
        progress.info(
            f"Epoch {epoch}/{epochs}: train L1 {row['train_loss']:.5f}; validation {metrics_text(metrics)}; "
            f"{row['patches_per_second']:.2f} patches/s; {seconds:.1f} s" + (" (best so far)" if improved else "")
            + (f" (cut short at the {settings.max_minutes:g}-minute budget after {seen} patches)" if out_of_time else "")
        )
        if main:
            write_report_csv(state.history, csv_path, state.initial_metrics, state.baselines)
            state.save(
                ckpt_path, model=model, optimizer=optimizer, scaler=scaler, rng=rng,
                seconds=state.seconds_before + time.monotonic() - started,
            )
        distributed.barrier()  # the epoch's checkpoint is complete before any rank goes on
        if out_of_time or distributed.any_rank(deadline is not None and time.monotonic() + validation_seconds >= deadline):
            return STOP_BUDGET
        if settings.patience and state.epoch - state.best_epoch >= settings.patience:
            return STOP_PATIENCE
    return STOP_DONE
