"""Speed of one CTSTFM forward pass on a 256 x 256 tile (default 6-band network).

Prints parameters, GFLOP of one forward (convolutions and matrix products, counted by
``torch.utils.flop_counter.FlopCounterMode``), milliseconds per tile (one warm-up, then the
median of several runs), the GFLOP/s achieved, a plain ``torch.mm`` (2048 x 2048 fp32)
GFLOP/s measured in the same run for scale, and peak resident memory. Also times the same
network with contiguous (NCHW) weights, the layout channels-last replaced.

    .venv/bin/python scripts/bench_network.py [--size 256] [--bands 6] [--repeats 5] [--threads N] [--device cpu]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from benchutil import peak_rss_mib, rss_mib  # noqa: E402


def _sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, repeats, device):
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mm_gflops(device="cpu", n=2048, repeats=5):
    """GFLOP/s of a plain fp32 matrix product, the machine's practical peak for dense math."""
    import torch

    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    seconds = _time(lambda: a @ b, repeats, device)
    return 2 * n**3 / seconds / 1e9


def measure(size=256, bands=6, repeats=5, device="cpu"):
    """A dict of the network's numbers for one ``bands x size x size`` tile."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model_core.network import CTSTFM, CTSTFMConfig, count_parameters

    torch.manual_seed(0)
    model = CTSTFM(CTSTFMConfig(bands=bands)).eval().to(device)
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, bands, size, size, generator=g).to(device)
    fine = torch.rand(1, bands, size, size, generator=g).to(device)

    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model(coarse, fine)
        flops = counter.get_total_flops()
        rss_before = rss_mib()
        seconds = _time(lambda: model(coarse, fine), repeats, device)
        peak = peak_rss_mib()
        model_nchw = model.to(memory_format=torch.contiguous_format)
        seconds_nchw = _time(lambda: model_nchw(coarse, fine), max(1, repeats // 2), device)
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    mm = mm_gflops(device)
    gflop = flops / 1e9
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "tile": f"{bands} x {size} x {size}",
        "parameters": count_parameters(model),
        "gflop": gflop,
        "ms": seconds * 1e3,
        "gflops": gflop / seconds,
        "mm_gflops": mm,
        "ratio": gflop / seconds / mm,
        "ms_nchw": seconds_nchw * 1e3,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak,
        "cuda_peak_mib": cuda_peak,
    }


def print_table(r):
    rows = [
        ("tile", r["tile"]),
        ("device / threads", f"{r['device']} / {r['threads']}"),
        ("parameters", f"{r['parameters']:,}"),
        ("GFLOP per forward", f"{r['gflop']:.1f}"),
        ("ms per tile (median)", f"{r['ms']:.0f}"),
        ("achieved GFLOP/s", f"{r['gflops']:.1f}"),
        ("torch.mm 2048^2 fp32 GFLOP/s", f"{r['mm_gflops']:.1f}"),
        ("network / mm ratio", f"{r['ratio']:.2f}"),
        ("ms per tile, NCHW weights", f"{r['ms_nchw']:.0f}"),
        ("RSS before forward (MiB)", f"{r['rss_before_mib']:.0f}"),
        ("peak RSS (MiB)", f"{r['peak_rss_mib']:.0f}"),
    ]
    if r["cuda_peak_mib"] is not None:
        rows.append(("peak CUDA memory (MiB)", f"{r['cuda_peak_mib']:.0f}"))
    width = max(len(name) for name, _ in rows)
    print(f"{'network':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args([] if argv is None else argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.size, args.bands, args.repeats, args.device)
    print_table(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
