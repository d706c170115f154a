"""`make train-default`: reproduce the embedded default model, resources/default_model.pt.

Simulates training scenes of both kinds with seeds the bundled sample does not use
(make_sample.py uses 20240), writes one manifest with a ``scene`` column, and trains
with the project's own training code (the code behind ``ctstfm:train``). The
command, data, epochs, time and machine end up in the model file's provenance;
docs/default_model.md describes the run that produced the committed file.

    python scripts/train_default.py [--minutes 45] [--epochs 150] [--out resources/default_model.pt]

Training stops after ``--epochs`` or when ``--minutes`` have passed, whichever comes
first; a time-out stops through the same cancel path as the QGIS dialog's Cancel
button, which keeps the best model so far.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from benchutil import machine  # noqa: E402
from model_core.paths import DEFAULT_MODEL  # noqa: E402
from model_core.progress import ConsoleProgress  # noqa: E402
from model_core.simulate import simulate_series  # noqa: E402
from model_core.training import train, write_manifest  # noqa: E402

# (kind, seed): three irrigated-field scenes (CIA-like) and three urban-change scenes (Daxing-like).
SCENES = [("fields", 101), ("fields", 102), ("fields", 103), ("urban", 201), ("urban", 202), ("urban", 203)]


def simulate_scenes(work, size, count, interval):
    rows = []
    for kind, seed in SCENES:
        folder = work / f"{kind}_{seed}"
        series = simulate_series(folder, kind=kind, size=size, seed=seed, count=count, interval_days=interval)
        rows += [(item.date, item.fine, item.coarse, f"{kind}_{seed}") for item in series.items]
    return write_manifest(work / "manifest.csv", rows)


class BudgetProgress(ConsoleProgress):
    """Console progress that asks training to stop once the time budget is spent."""

    def __init__(self, minutes):
        super().__init__("train-default")
        self.deadline = time.monotonic() + 60.0 * minutes

    def canceled(self):
        return time.monotonic() > self.deadline


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_MODEL))
    parser.add_argument("--work", default=str(ROOT / "build" / "default_training"))
    parser.add_argument("--size", type=int, default=384, help="fine pixels per scene side")
    parser.add_argument("--dates", type=int, default=8, help="dates per scene")
    parser.add_argument("--interval", type=int, default=24, help="days between dates")
    parser.add_argument("--minutes", type=float, default=45.0, help="time budget for training")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--patches-per-epoch", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-windows", type=int, default=24)
    parser.add_argument("--residual-blur", type=int, default=33,
                        help="first-guess box in fine pixels (about two coarse pixels; 0: first guess = fine T0)")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = simulate_scenes(work, args.size, args.dates, args.interval)
    started = time.time()
    result = train(
        manifest,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        patches_per_epoch=args.patches_per_epoch,
        lr=args.lr,
        predict_residual=True,
        residual_blur=args.residual_blur,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        max_validation_windows=args.validation_windows,
        data_source={
            "description": "project simulator, scenes " + ", ".join(f"{k} seed {s}" for k, s in SCENES)
            + f", {args.size} x {args.size} fine px, {args.dates} dates {args.interval} days apart",
            "command": "python scripts/train_default.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
        },
        progress=BudgetProgress(args.minutes),
    )
    print(f"default model: {result.model_path}; best epoch {result.best_epoch} of {result.epochs}; "
          f"validation MAE {result.best_metrics.get('mae')}; {(time.time() - started) / 60:.1f} min on {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
