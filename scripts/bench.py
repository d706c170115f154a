"""`make bench`: every speed and memory benchmark of the project, one after the other.

Each benchmark is a script in this folder with a ``main()`` that prints its own
table. Numbers depend on the machine: copy them into docs/benchmarks.md with
the machine they came from.
"""

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from benchutil import machine  # noqa: E402

BENCHMARKS = ["bench_network", "bench_fusion", "bench_series", "bench_starfm", "bench_training"]


def main():
    print(f"machine: {machine()}")
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
