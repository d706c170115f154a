"""Time STARFM (model_core.classical.starfm) on a 1000 x 1000, 6-band scene.

The scene is random but structured: patches of a few land-cover classes with noise,
coarse images as 16 x 16 block means (30 m against 480 m) put back on the fine grid,
and a class-dependent change between the two dates. Prints seconds per run and the
accuracy against the simulated truth, on the CPU (and on CUDA when there is one).
"seconds" is wall-clock time, "cpu s" the process's CPU time (all threads): on a
shared machine the wall-clock time of a multi-threaded run grows a lot when other
processes compete for the cores.

    python scripts/bench_starfm.py [--size 1000] [--bands 6] [--window 31] [--threads N]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_scene(size=1000, bands=6, factor=16, seed=0):
    """(fine_t0, coarse_t0, coarse_t1, fine_t1) float32 tensors (bands, size, size)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    full = -(-size // factor) * factor  # whole coarse pixels; cropped to size at the end
    y = torch.arange(full, dtype=torch.float32)[:, None]
    x = torch.arange(full, dtype=torch.float32)[None, :]
    field = torch.sin(x / 23.0) + torch.cos(y / 17.0) + 0.5 * torch.sin((x + y) / 7.0)
    field = field + 0.4 * torch.randn(full, full, generator=g)
    classes = torch.bucketize(field, torch.tensor([-1.0, 0.0, 1.0]))  # 4 classes
    base = 0.05 + 0.4 * torch.rand(4, bands, generator=g)
    change = 0.1 * (torch.rand(4, bands, generator=g) - 0.5)
    f0 = base[classes].permute(2, 0, 1) + 0.01 * torch.randn(bands, full, full, generator=g)
    f1 = f0 + change[classes].permute(2, 0, 1)

    def coarse(img):
        blocks = torch.nn.functional.avg_pool2d(img[None], factor)
        return torch.nn.functional.interpolate(blocks, scale_factor=factor, mode="nearest")[0]

    def crop(img):
        return img[:, :size, :size].contiguous()

    return crop(f0), crop(coarse(f0)), crop(coarse(f1)), crop(f1)


def main(argv=None):
    import torch

    from model_core.classical import starfm, temporal_difference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--window", type=int, default=31)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv if argv is not None else [])
    if args.threads:
        torch.set_num_threads(args.threads)

    f0, c0, c1, f1 = make_scene(args.size, args.bands)
    _, h, w = f0.shape
    print(f"STARFM, {args.bands} bands, {h} x {w} px, float32, torch threads {torch.get_num_threads()}")

    def mae(pred):
        return float((pred.cpu() - f1).abs().mean())

    print(f"MAE against truth: no change {mae(f0):.5f}, temporal difference {mae(temporal_difference(f0, c0, c1)):.5f}")
    print(f"{'device':8} {'window':>6} {'step':>4} {'seconds':>8} {'cpu s':>8} {'MAE':>8}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        a, b, c = (t.to(device) for t in (f0, c0, c1))
        for step in (1, 2):
            if device == "cuda":
                starfm(a[:, :64, :64], b[:, :64, :64], c[:, :64, :64], window=args.window)  # warm-up
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            pred = starfm(a, b, c, window=args.window, offset_step=step)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            print(f"{device:8} {args.window:6d} {step:4d} {seconds:8.2f} {cpu:8.2f} {mae(pred):8.5f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
