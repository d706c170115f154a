"""Write the bundled sample series, resources/sample/ (deterministic; `make sample`).

A small CIA-like irrigated-fields scene from the project's simulator: three dates
32 days apart, 512 x 512 fine pixels (30 m, UTM 55S), coarse images on their own
480 m grid. Seed 20240 is used by no training scene of the default model, so the
demo shows the model on data it never saw.
"""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_core.paths import SAMPLE_DIR  # noqa: E402
from model_core.simulate import simulate_series  # noqa: E402

SAMPLE_SEED = 20240
SAMPLE_DATES = ["2021-12-01", "2022-01-02", "2022-02-03"]


def main():
    if SAMPLE_DIR.exists():
        shutil.rmtree(SAMPLE_DIR)
    series = simulate_series(SAMPLE_DIR, kind="fields", dates=SAMPLE_DATES, size=512, seed=SAMPLE_SEED)
    size = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir())
    print(f"sample: {len(series.items)} dates in {SAMPLE_DIR} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
