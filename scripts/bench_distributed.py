"""Training speed-up of torchrun ranks: the same training (same global batch) on 1 process and on K ranks.

Each run is ``python -m model_core train`` (1 process, ``torch`` threads = cores / 1) or
``torchrun --standalone --nproc_per_node=K -m model_core train`` (gloo on CPUs, cores / K
threads per rank) on one simulated series; the number compared is the training throughput
of the last epoch from the run's report CSV (``patches_per_second``: optimisation and data,
not the start-up or validation), plus the wall time of the whole command.

    python scripts/bench_distributed.py [--ranks 2] [--patch 64] [--batch 4] [--patches 16] [--epochs 2]

Copy the table into docs/scale-out.md with the machine (and its load) it came from.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from benchutil import load_average, machine  # noqa: E402


def run_training(manifest, out, ranks, threads, options):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    launcher = [sys.executable, "-m", "model_core"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "model_core"]
    started = time.monotonic()
    subprocess.run([*launcher, "train", "--manifest", str(manifest), "--out", str(out), "--quiet", *options],
                   cwd=str(ROOT), env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    with open(str(out).replace(".pt", "_training.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["patches_per_second"]), wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patches", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    from model_core.simulate import simulate_series

    print(f"machine: {machine()}; load average before: {load_average()}")
    print("cpu flags:", next((line.split(":", 1)[1].strip()[:200] for line in Path("/proc/cpuinfo").read_text()
                              .splitlines() if line.startswith("flags")), "?"))
    options = ["--epochs", str(args.epochs), "--batch-size", str(args.batch), "--patch-size", str(args.patch),
               "--patches-per-epoch", str(args.patches), "--device", "cpu", "--validation-fraction", "0.2"]
    with tempfile.TemporaryDirectory() as folder:
        series = simulate_series(Path(folder) / "sim", kind="fields", count=4, size=160, seed=11)
        cores = os.cpu_count() or 1
        # One process with all cores, K ranks sharing them, and one process on one thread: the last
        # separates the cost of threads fighting over busy cores from the gain of ranks.
        runs = [(1, cores), (args.ranks, max(1, cores // args.ranks)), (1, 1)]
        results = {(ranks, threads): run_training(series.manifest, Path(folder) / f"r{ranks}t{threads}.pt", ranks,
                                                  threads, options) for ranks, threads in runs}
    print(f"\npatch {args.patch}, global batch {args.batch}, {args.patches} patches/epoch, {args.epochs} epochs")
    print("| ranks | threads per rank | training patches/s (last epoch) | vs first row | whole command (s) |")
    print("|---|---|---|---|---|")
    base = next(iter(results.values()))[0]
    for (ranks, threads), (speed, wall) in results.items():
        print(f"| {ranks} | {threads} | {speed:.2f} | {speed / base:.2f} x | {wall:.1f} |")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
