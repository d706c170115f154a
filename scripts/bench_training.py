"""Training speed: patches per second at 256 x 256 (default network, batch 4).

Two numbers, then their combination:

* optimisation: one Adam step of the L1 loss on a batch already in memory
  (forward, backward, update), timed after warm-up steps;
* data: drawing one training patch from a simulated series through the real
  pipeline (pair reader, coarse warped onto the fine grid, label, augmentation);
* end to end: patches per second of the two in sequence, as ``train`` runs them.

    python scripts/bench_training.py [--device cpu] [--patch 256] [--batch 4] [--steps 3] [--warmup 1]

Copy the table into docs/benchmarks.md ("## Training") with the machine it came from.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from benchutil import machine  # noqa: E402


def bench_step(device, patch, batch, steps, warmup, width=None, amp=True):
    import torch

    from model_core.network import CTSTFM, CTSTFMConfig
    from model_core.device import grad_scaler, mixed_precision_dtype
    from model_core.training import train_step

    torch.manual_seed(0)
    config = CTSTFMConfig(width=width) if width else CTSTFMConfig()
    model = CTSTFM(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    amp_dtype = mixed_precision_dtype(device) if amp else None
    scaler = grad_scaler(amp_dtype, device)
    shape = (batch, config.bands, patch, patch)
    coarse = torch.rand(shape, device=device) * 0.4
    fine0 = torch.rand(shape, device=device) * 0.4
    fine1 = torch.rand(shape, device=device) * 0.4
    valid = torch.ones((batch, patch, patch), dtype=torch.bool, device=device)

    def step():
        train_step(model, optimizer, scaler, coarse, fine0, fine1, valid, device, amp_dtype)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return seconds, peak, str(amp_dtype).replace("torch.", "") if amp_dtype else "float32"


def bench_data(patch, count=24):
    """Seconds per training patch drawn from a simulated 512 x 512 series."""
    import numpy as np

    from model_core.simulate import simulate_series
    from model_core.training import PatchSampler, Sample, SeriesData, read_manifest

    with tempfile.TemporaryDirectory() as folder:
        simulate_series(folder, kind="fields", dates=["2021-04-01", "2021-05-03", "2021-06-04"], size=512, seed=0)
        pairs = read_manifest(Path(folder) / "manifest.csv")
        data = SeriesData(pairs, scale=1e-4, bands=6)
        try:
            samples = [Sample(1, 0), Sample(2, 1)]
            sampler = PatchSampler(data, samples, 512, 512, patch, 0.5, np.random.default_rng(0))
            sampler.batch(2)  # warm-up: opens the readers, builds the warped VRTs
            start = time.perf_counter()
            sampler.batch(count)
            return (time.perf_counter() - start) / count
        finally:
            data.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--width", type=int, default=0, help="network width (0: the default)")
    parser.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    args = parser.parse_args(argv)

    print(f"machine: {machine(load=True)}")
    step, peak, precision = bench_step(
        args.device, args.patch, args.batch, args.steps, args.warmup, args.width or None, not args.no_amp
    )
    try:
        per_patch = bench_data(args.patch)
    except ImportError as exc:  # the simulator is not there
        per_patch = None
        print(f"(data pipeline not measured: {exc})")
    optimisation = args.batch / step
    print()
    print("| device | precision | patch | batch | s / step | optimisation patches/s | data s / patch | end-to-end patches/s |")
    print("|---|---|---|---|---|---|---|---|")
    data_text = f"{per_patch:.4f}" if per_patch is not None else "-"
    total = args.batch / (step + args.batch * per_patch) if per_patch is not None else optimisation
    print(
        f"| {args.device} | {precision} | {args.patch} | {args.batch} | {step:.2f} | {optimisation:.2f} | "
        f"{data_text} | {total:.2f} |"
    )
    if peak is not None:
        print(f"peak GPU memory: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
