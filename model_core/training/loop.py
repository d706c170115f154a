"""The epoch loop: train on random patches, validate, keep the best, checkpoint."""

from __future__ import annotations

import time

from .. import distributed
from ..errors import Cancelled
from ..prefetch import Prefetcher
from .reports import write_report_csv
from .step import train_step
from .validation import metrics_text


def run_epochs(run, model, optimizer, scaler, rng, state, sampler, validator, *, ckpt_path, csv_path, started,
               progress):
    """Train from epoch ``state.epoch + 1`` up to ``run.settings.epochs``; returns whether it was cancelled.

    After every epoch: validate, record the epoch in ``state`` (best weights kept
    by validation MAE), rewrite the report CSV and the checkpoint. A cancel during
    an epoch drops that epoch and stops.
    """
    import torch

    settings = run.settings
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
            for step, arrays in enumerate(prefetch):
                distributed.check_stop(progress)  # every rank stops at the same step
                coarse, fine0, fine1, valid = (torch.from_numpy(array).to(run.device) for array in arrays)
                loss = train_step(trained, optimizer, scaler, coarse, fine0, fine1, valid, run.device, run.amp_dtype)
                loss_sum += float(loss.detach()) * rank_counts[step]
                seen += rank_counts[step]
                epoch_progress.update(0.9 * (step + 1) / run.steps, f"epoch {epoch}/{epochs}")
            train_seconds = time.monotonic() - epoch_started
            metrics = validator.run(model, epoch_progress.sub(0.9, 1.0))
        except Cancelled:
            return True
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
        )
        if main:
            write_report_csv(state.history, csv_path)
            state.save(
                ckpt_path, model=model, optimizer=optimizer, scaler=scaler, rng=rng,
                seconds=state.seconds_before + time.monotonic() - started,
            )
        distributed.barrier()  # the epoch's checkpoint is complete before any rank goes on
    return False
