"""`make bench`: every speed and memory benchmark of the project, one after the other.

Each benchmark is a script in this folder with a ``main()`` that prints its own
table. Numbers depend on the machine: copy them into docs/benchmarks.md with
the machine they came from.
"""

import importlib
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

BENCHMARKS = ["bench_network", "bench_fusion", "bench_starfm", "bench_training"]


def machine():
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}"


def main():
    print(f"machine: {machine()}")
    for name in BENCHMARKS:
        if not (HERE / f"{name}.py").exists():
            continue
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
