"""Speed and accuracy of every CTSTFM inference path this machine can run, in one process.

The default model (``resources/default_model.pt``) predicts the bundled sample's four 256 x 256 tiles
(fine T0 2021-12-01 + coarse T1 2022-01-02 -> fine T1) through each path of
:mod:`model_core.inference` (``eager`` fp32 is the reference); per path: ms per tile (median of
tiles 2-4; tile 1 warms up), Mpx/s, GFLOP/s (convolutions and matrix products of one forward,
``torch.utils.flop_counter``), the ratio to a plain ``torch.mm`` (2048 x 2048 fp32) measured in the
same run, the speed-up over fp32 eager, setup seconds (compiling, quantizing), and the accuracy: the
MAE against the true fine image, its change relative to eager (the gate: under 1 %) and the max abs
difference to eager's output (reflectance). ``default`` is what ``--inference auto`` runs for a
whole Landsat scene (1,296 tiles) with these measurements, which are also stored as this CPU's
choice (the cache ``auto`` reads).

    .venv/bin/python scripts/bench_network.py [--threads N] [--paths eager exact bf16 ...] [--json]
    .venv/bin/python scripts/bench_network.py --device cuda     # GPU: eager fp32 and autocast, batch 1 and 8

``--json`` prints one JSON line (with ``speedup_vs_fp32_eager``: the default path against eager).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from benchutil import load_average, machine_info, peak_rss_mib  # noqa: E402

SCENE_TILES = 36 * 36  # an 8000 x 8000 Landsat scene at tile 256, overlap 32
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
NEEDS = {
    "eager": "-",
    "exact": "-",
    "bf16": "avx512_bf16 or amx_bf16",
    "compile": "C++ compiler",
    "compile-bf16": "C++ compiler + avx512_bf16/amx_bf16",
    "int8": "C++ compiler + torchao (fast with avx512_vnni/amx_int8)",
}


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
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


def forward_gflop(model, coarse, fine):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(coarse, fine)
    return counter.get_total_flops() / 1e9


def measure_cpu(paths=None):
    """The figures of every path (``paths``: a subset of the available ones) on the bundled sample."""
    import torch

    from model_core import inference
    from model_core.model_file import load_model
    from model_core.paths import DEFAULT_MODEL

    model = load_model(DEFAULT_MODEL, map_location="cpu").model.eval()
    tiles = inference.sample_tiles(256)
    available = inference.available_paths()
    chosen = [p for p in (paths or available) if p in available]
    gflop = forward_gflop(model, tiles[0][:1], tiles[1][:1])
    load_before = load_average()
    layout_ms = inference.measure_layouts(model)
    layout = min(layout_ms, key=layout_ms.get)
    results = inference.measure_paths(model, chosen, layout, tiles=tiles)
    mm = mm_gflops()  # after the paths: the same machine state as the last of them
    eager_ms = results["eager"]["ms"]
    for entry in results.values():
        if "ms" in entry:
            entry["mpx_s"] = 256 * 256 / 1e6 / (entry["ms"] / 1e3)
            entry["gflops"] = gflop / (entry["ms"] / 1e3)
            entry["vs_mm"] = entry["gflops"] / mm
            entry["speedup"] = eager_ms / entry["ms"]
    passing = [p for p, e in results.items() if e.get("passed") and "ms" in e]
    default = min(passing, key=lambda p: inference._job_seconds(results[p], SCENE_TILES, 256 * 256))
    cache = inference.cache_file(model)
    previous = inference.read_cache(cache)
    inference.write_cache(cache, {
        "layout": layout, "layout_ms": layout_ms, "cpu": inference.cpu_model(), "torch": torch.__version__,
        "paths": {**previous.get("paths", {}), **results},
    })
    flags = inference.cpu_flags()
    return {
        "machine": machine_info(),
        "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "c++ compiler": inference.has_cxx_compiler(),
        "torchao": inference.has_int8_quantizer(),
        "load_average": [load_before, load_average()],
        "tile": "6 x 256 x 256",
        "gflop": gflop,
        "mm_gflops": mm,
        "layout_ms": layout_ms,
        "layout": layout,
        "paths": results,
        "default_path": default,
        "speedup_vs_fp32_eager": eager_ms / results[default]["ms"],
        "scene_minutes": {p: inference._job_seconds(e, SCENE_TILES, 256 * 256) / 60
                          for p, e in results.items() if "ms" in e},
        "peak_rss_mib": peak_rss_mib(),
    }


def measure_cuda(device="cuda", batches=(1, 8)):
    """GPU: ms per tile of eager fp32 and of the mixed-precision forward fusion uses, by batch size."""
    import torch

    from model_core.device import autocast, mixed_precision_dtype
    from model_core.inference import sample_tiles
    from model_core.model_file import load_model
    from model_core.paths import DEFAULT_MODEL

    model = load_model(DEFAULT_MODEL, map_location=device).model.eval()
    coarse, fine, _ = sample_tiles(256)
    amp = mixed_precision_dtype(torch.device(device))
    rows = {}
    for batch in batches:
        c = coarse.repeat((batch + 3) // 4, 1, 1, 1)[:batch].to(device).contiguous(memory_format=torch.channels_last)
        f = fine.repeat((batch + 3) // 4, 1, 1, 1)[:batch].to(device).contiguous(memory_format=torch.channels_last)
        for name, dtype in (("eager", None), (f"autocast {amp}".replace("torch.", ""), amp)):
            with torch.inference_mode(), autocast(dtype):
                seconds = _time(lambda: model(c, f), 5, device)
            rows[f"{name}, batch {batch}"] = {"ms": seconds * 1e3 / batch, "mpx_s": batch * 0.065536 / seconds}
    eager_ms = rows[f"eager, batch {batches[0]}"]["ms"]
    best = min(rows, key=lambda k: rows[k]["ms"])
    return {
        "machine": machine_info(),
        "paths": rows,
        "default_path": best,
        "speedup_vs_fp32_eager": eager_ms / rows[best]["ms"],
        "scene_minutes": {k: v["ms"] * SCENE_TILES / 6e4 for k, v in rows.items()},
        "mm_gflops": mm_gflops(device),
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20,
    }


def print_table(r):
    m = r["machine"]
    print(f"{m['cpu']}, {m['cores']} CPUs, torch {m['torch']}, {m['threads']} thread(s); "
          f"load average {r.get('load_average')}")
    if "flags" in r:
        print(f"CPU flags: {', '.join(r['flags']) or 'none of ' + ', '.join(FLAGS_OF_INTEREST)}; "
              f"C++ compiler: {'yes' if r['c++ compiler'] else 'no'}; torchao: {'yes' if r['torchao'] else 'no'}")
        print(f"layout probe (exact, 128 px): " + ", ".join(f"{k} {v:.0f} ms" for k, v in r["layout_ms"].items())
              + f" -> {r['layout']}")
        print(f"torch.mm 2048^2 fp32: {r['mm_gflops']:.1f} GFLOP/s; one forward: {r['gflop']:.1f} GFLOP")
    header = (f"{'path':<14} {'ms/tile':>8} {'Mpx/s':>7} {'vs mm':>6} {'speedup':>7} {'setup s':>7} "
              f"{'MAE':>8} {'MAE chg':>8} {'max abs':>8} {'gate':>4}  needs")
    print(header)
    for name, e in r["paths"].items():
        if "ms" not in e:
            print(f"{name:<14} {'n/a':>8}  {e.get('error', '')[:100]}")
            continue
        accuracy = (f"{e['mae']:8.5f} {e['mae_change']:+8.2%} {e['max_abs']:8.5f} {'ok' if e['passed'] else 'FAIL':>4}"
                    if "mae" in e else f"{'':>8} {'':>8} {'':>8} {'':>4}")
        print(f"{name:<14} {e['ms']:8.0f} {e['mpx_s']:7.3f} {e.get('vs_mm', float('nan')):6.2f} "
              f"{e.get('speedup', r['speedup_vs_fp32_eager'] if name == r['default_path'] else float('nan')):6.2f}x "
              f"{e.get('setup_s', 0.0):7.1f} {accuracy}  {NEEDS.get(name, '')}")
    minutes = r["scene_minutes"].get(r["default_path"], float("nan"))
    print(f"default path (auto, a {SCENE_TILES}-tile scene): {r['default_path']}, "
          f"{r['speedup_vs_fp32_eager']:.2f}x fp32 eager per tile; scene ~{minutes:.0f} min of network time")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--paths", nargs="+", help="paths to measure (default: all this machine can run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args([] if argv is None else argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure_cuda(args.device) if args.device.startswith("cuda") else measure_cpu(args.paths)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_table(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
