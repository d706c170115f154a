"""``python -m model_core train``: train CTSTFM on a series of fine/coarse pairs.

    python -m model_core train --manifest series.csv --out model.pt [--epochs 150 ...]
    python -m model_core train --manifest fields.csv --manifest urban.csv --out model.pt   # several scenes
    python -m model_core train --fine f1.tif f2.tif f3.tif --coarse c1.tif c2.tif c3.tif \\
        --dates 2021-04-01,2021-05-03,2021-06-04 --out model.pt

Ctrl-C once stops after the current batch and writes the best model so far;
Ctrl-C twice stops at once (nothing written beyond the last epoch's checkpoint).
"""

import json
import signal

from model_core.commands._options import add_device_option, add_report_options

#: The flags of core option keys whose argparse ``dest`` differs (see model_core.errors.OptionError).
OPTION_FLAGS = {"out_model": "--out"}


def configure(parser):
    data = parser.add_argument_group("data (a manifest, or fine and coarse rasters)")
    data.add_argument(
        "--manifest",
        action="append",
        metavar="CSV",
        help="CSV with columns date,fine,coarse[,scene] (ISO dates; paths relative to the CSV); repeat it to train "
        "on several manifests together, each its own scene(s), named after the file",
    )
    data.add_argument("--fine", nargs="+", metavar="TIF", help="fine rasters, one per date")
    data.add_argument("--coarse", nargs="+", metavar="TIF", help="coarse rasters, in the same order as --fine")
    data.add_argument(
        "--dates", help="dates of --fine/--coarse, comma-separated YYYY-MM-DD (default: read from the file names)"
    )
    parser.add_argument("--out", required=True, help="the model file to write (.pt)")
    parser.add_argument("--epochs", type=int, default=150, help="total epochs (default 150, the paper's)")
    parser.add_argument("--batch-size", type=int, default=4, help="patches per batch (default 4)")
    parser.add_argument("--patch-size", type=int, default=256, help="patch side in pixels (default 256)")
    parser.add_argument(
        "--patches-per-epoch", type=int, default=0, help="patches per epoch (default 0: the training area in patches)"
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--validation-fraction", type=float, default=0.2, help="latest dates that validate (0.2)")
    parser.add_argument("--references", type=int, default=1, help="nearest reference dates per target (default 1)")
    parser.add_argument("--max-gap-days", type=int, default=0, help="farthest reference in days (default 0: any)")
    parser.add_argument("--init-model", help="fine-tune this model file instead of starting from scratch")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.checkpoint.pt")
    add_device_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--width", type=int, default=0, help="network width N (default 0: the default network)")
    parser.add_argument(
        "--predict-residual", action="store_true", help="predict fine_t0 + a correction (a documented deviation)"
    )
    parser.add_argument(
        "--residual-blur", type=int, default=0, metavar="PX",
        help="with a residual: first guess fine_t0 + coarse_t1 - box_PX(fine_t0), e.g. 33 for 30 m / 480 m",
    )
    parser.add_argument("--scale", type=float, default=0.0, help="reflectance = DN x scale (default 1e-4)")
    add_report_options(parser)


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
    from model_core.errors import CtstfmError
    from model_core.progress import Progress
    from model_core.training import series_from_layers, train

    holder = _InterruptibleProgress(args.quiet)

    class CliProgress(Progress):
        def update(self, fraction, message=None):
            holder.console.update(fraction, message)

        def info(self, message):
            holder.console.info(message)

        def canceled(self):
            return holder.interrupted

    progress = CliProgress()
    if args.manifest and (args.fine or args.coarse):
        raise CtstfmError("Give either --manifest or --fine/--coarse, not both.")
    if args.manifest:
        series = args.manifest[0] if len(args.manifest) == 1 else args.manifest
    elif args.fine or args.coarse:
        series = series_from_layers(args.fine, args.coarse, args.dates, progress=progress)
    else:
        raise CtstfmError("No data: give --manifest series.csv, or --fine ... --coarse ... [--dates ...].")
    previous = holder.install()
    try:
        result = train(
            series,
            args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            patch_size=args.patch_size,
            patches_per_epoch=args.patches_per_epoch or None,
            lr=args.lr,
            references=args.references,
            max_gap_days=args.max_gap_days or None,
            validation_fraction=args.validation_fraction,
            init_model=args.init_model,
            resume=args.resume,
            device=args.device,
            seed=args.seed,
            width=args.width or None,
            predict_residual=args.predict_residual,
            residual_blur=args.residual_blur,
            scale=args.scale or None,
            progress=progress,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(
            json.dumps(
                {
                    "model": result.model_path,
                    "report_csv": result.report_csv,
                    "report_png": result.report_png,
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
