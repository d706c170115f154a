"""``python -m model_core train``: train CTSTFM on a series of fine/coarse pairs.

    python -m model_core train --manifest series.csv --out model.pt [--epochs 150 ...]
    python -m model_core train --manifest fields.csv --manifest urban.csv --out model.pt   # several scenes
    python -m model_core train --fine f1.tif f2.tif f3.tif --coarse c1.tif c2.tif c3.tif \\
        --dates 2021-04-01,2021-05-03,2021-06-04 --out model.pt

Ctrl-C once stops after the current batch and writes the best model so far;
Ctrl-C twice stops at once (nothing written beyond the last epoch's checkpoint).
The options are :data:`model_core.options.TRAIN`.
"""

import json
import signal

from model_core import distributed
from model_core.commands._options import add_operation_options, operation_kwargs
from model_core.options import TRAIN


def configure(parser):
    add_operation_options(parser, TRAIN)


class _InterruptibleProgress:
    """ConsoleProgress that reports cancelled after the first Ctrl-C."""

    def __init__(self, quiet):
        from model_core.progress import ConsoleProgress

        self.console = ConsoleProgress("train", quiet=quiet)
        self.interrupted = False

    def install(self):
        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            self.console.info("Stopping after this batch and writing the best model so far (Ctrl-C again to abort).")

        return signal.signal(signal.SIGINT, handler)


def run(args):
    from model_core.progress import Progress
    from model_core.training import train_from_inputs

    holder = _InterruptibleProgress(args.quiet)

    class CliProgress(Progress):
        def update(self, fraction, message=None):
            holder.console.update(fraction, message)

        def info(self, message):
            holder.console.info(message)

        def canceled(self):
            return holder.interrupted

    progress = CliProgress()
    previous = holder.install()
    try:
        result = train_from_inputs(**operation_kwargs(args, TRAIN), progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not distributed.world().main:
        return 130 if result.cancelled else 0  # rank 0 prints the result
    if args.json:
        print(
            json.dumps(
                {
                    "model": result.model_path,
                    "report_csv": result.report_csv,
                    "report_png": result.report_png,
                    "report_html": result.report_html or None,
                    "checkpoint": result.checkpoint,
                    "epochs": result.epochs,
                    "best_epoch": result.best_epoch,
                    "best_validation": result.best_metrics,
                    "initial_validation": result.initial_metrics,
                    "scenes": result.scenes,
                    "cancelled": result.cancelled,
                    "device": result.device,
                    "seconds": round(result.seconds, 1),
                },
                indent=2,
            )
        )
    else:
        print(result.message)
    return 130 if result.cancelled else 0
