"""First guesses without training, on simulated series: which stand-in for the coarse image at T0 is best?

    .venv/bin/python scripts/bench_first_guess.py [--size 256] [--out build/bench_first_guess.json]

For each simulated scene (fields and urban; the simulator's default sensor, and harder sensors with
a wider PSF, more misregistration and noise) and each pair of consecutive dates (T0 -> T1), the
estimates of the fine image at T1, all from the same :class:`~model_core.raster.PairReader` windows:

* no change: ``F0``
* box_k: ``F0 + C1 - box_k(F0)`` (k = 17, 33, 49), the network's ``reference="box"``
* footprint: ``F0 + C1 - degrade(F0)``, degrade = area mean on the coarse grid, resampled back like C1
  (``reference="footprint"``), and with a Gaussian PSF of 0.5 and 1 coarse pixel
* temporal difference (three images): ``F0 + C1 - C0``

Prints MAE / RMSE (reflectance, mean of the bands) averaged over the pairs, per sensor setting.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SENSORS = {
    "simulator default (psf 0.5, misreg 0.1, noise 0.004)": dict(psf_sigma=0.5, misregistration=0.1, coarse_noise=0.004),
    "hard (psf 1.0, misreg 0.3, noise 0.008)": dict(psf_sigma=1.0, misregistration=0.3, coarse_noise=0.008),
    "box sensor (psf 0, misreg 0, noise 0.004)": dict(psf_sigma=0.0, misregistration=0.0, coarse_noise=0.004),
}
SCENES = [("fields", 301), ("urban", 401)]


def errors(pred, ref, valid):
    diff = (pred - ref)[:, valid]
    return float(np.abs(diff).mean()), float(np.sqrt((diff ** 2).mean(axis=1)).mean())


def measure_pair(fine0, coarse1, coarse0, fine1, torch, box_mean):
    from model_core.raster import PairReader, RasterReader, Window

    estimates = {}
    with PairReader(fine0, coarse1, footprint=True) as pair:
        window = Window(0, 0, pair.width, pair.height)
        f0, c1, degraded, valid = pair.read_inputs(window)
    degraded_psf = {}
    for psf in (0.5, 1.0):
        with PairReader(fine0, coarse1, footprint=True, psf_sigma=psf) as pair:
            degraded_psf[psf] = pair.read_inputs(window).coarse_t0
    with PairReader(fine0, coarse1, coarse_t0_path=coarse0) as pair:
        c0 = pair.read_inputs(window).coarse_t0
    with RasterReader(fine1) as reader:
        f1, ok = reader.read_reflectance(window, 1e-4)
    valid = valid & ok
    estimates["no change"] = f0
    for k in (17, 33, 49):
        estimates[f"box_{k}"] = f0 + c1 - box_mean(torch.from_numpy(f0)[None], k)[0].numpy()
    estimates["footprint"] = f0 + c1 - degraded
    for psf, image in degraded_psf.items():
        estimates[f"footprint + psf {psf}"] = f0 + c1 - image
    estimates["temporal difference (3 images)"] = f0 + c1 - c0
    return {name: errors(np.maximum(est, 0), f1, valid) for name, est in estimates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--dates", type=int, default=4)
    parser.add_argument("--out", default="build/bench_first_guess.json")
    args = parser.parse_args()

    import torch

    from model_core.network import box_mean
    from model_core.simulate import simulate_series

    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, sensor in SENSORS.items():
            totals = {}
            for kind, seed in SCENES:
                folder = Path(tmp) / f"{kind}_{seed}_{len(results)}"
                series = simulate_series(folder, kind=kind, seed=seed, size=args.size, count=args.dates,
                                         interval_days=24, **sensor)
                items = series.items
                for a, b in zip(items[:-1], items[1:]):
                    scores = measure_pair(a.fine, b.coarse, a.coarse, b.fine, torch, box_mean)
                    for name, value in scores.items():
                        totals.setdefault(name, []).append(value)
            results[label] = {name: [float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))]
                              for name, values in totals.items()}
            print(f"\n{label} ({len(SCENES)} scenes x {args.dates - 1} pairs, {args.size} px)")
            print(f"  {'estimate':34s} {'MAE':>8s} {'RMSE':>8s}")
            for name, (mae, rmse) in results[label].items():
                print(f"  {name:34s} {mae:8.5f} {rmse:8.5f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
