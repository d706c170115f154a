"""Three-image mode: how should the network get the coarse image at T0? A short training measurement.

    .venv/bin/python scripts/bench_three_image.py [--steps 300] [--size 192] [--out build/bench_three_image.json]

One simulated series per scene kind with a hard coarse sensor (PSF 1 coarse pixel, misregistration
up to 0.3 coarse pixels, noise 0.008, the simulator's systematic gain/offset); dates 1-4 train, the
pairs 4 -> 5 and 5 -> 4 are held out. All inputs come from :class:`~model_core.raster.PairReader`
(footprint / coarse T0 references). Variants, trained identically (same seed, steps, patches):

* ``two-image footprint``: ``reference="footprint"``, first guess F0 + C1 - degrade(F0)
* ``three-image, C0 channels``: first guess F0 + C1 - C0, coarse stream (C1, C0) through a 2C -> N stem
  whose C0 half starts at zero (built here: the alternative that was not kept)
* ``three-image, C1 - C0 input``: ``images=3`` as built, first guess F0 + C1 - C0, coarse stream C1 - C0

plus the untrained estimates (no change, the two first guesses). MAE / RMSE on the held-out pairs,
evaluated on the training patch size (64 x 64 tiles).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SENSOR = dict(psf_sigma=1.0, misregistration=0.3, coarse_noise=0.008)
PATCH = 64


def load_pair(fine0, coarse1, coarse0, fine1):
    from model_core.raster import PairReader, RasterReader, Window

    with PairReader(fine0, coarse1, footprint=True, psf_sigma=0.5) as pair:
        window = Window(0, 0, pair.width, pair.height)
        f0, c1, degraded, valid = pair.read_inputs(window)
    with PairReader(fine0, coarse1, coarse_t0_path=coarse0) as pair:
        c0 = pair.read_inputs(window).coarse_t0
    with RasterReader(fine1) as reader:
        f1, ok = reader.read_reflectance(window, 1e-4)
    return dict(f0=f0, c1=c1, c0=c0, degraded=degraded, f1=f1, valid=valid & ok)


def inputs(variant, pair, torch, sl=(slice(None), slice(None))):
    t = {k: torch.from_numpy(np.ascontiguousarray(v[(slice(None),) + sl] if v.ndim == 3 else v[sl]))
         for k, v in pair.items()}
    if variant == "two-image footprint":
        return t["c1"], t["f0"], t["degraded"]
    return t["c1"], t["f0"], t["c0"]


def make_model(variant, torch):
    from model_core.network import CTSTFM, CTSTFMConfig

    torch.manual_seed(0)
    images = 3 if variant == "three-image, C1 - C0 input" else 2
    model = CTSTFM(CTSTFMConfig(bands=6, predict_residual=True, residual_blur=33, images=images))
    return channels_variant(model, torch) if variant == "three-image, C0 channels" else model


def channels_variant(net, torch):
    """The alternative not kept: C0 as C extra channels of the coarse stream (stem 2C -> N, C0 half at zero)."""
    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            stem = net.coarse_encoder.stem
            wide = torch.nn.Conv2d(2 * stem.in_channels, stem.out_channels, 1)
            with torch.no_grad():
                wide.weight.zero_()
                wide.weight[:, : stem.in_channels] = stem.weight
                wide.bias.copy_(stem.bias)
            net.coarse_encoder.stem = wide

        def forward(self, coarse_t1, fine_t0, coarse_t0):
            n = self.net
            c, f = n.cfm(n.coarse_encoder(torch.cat((coarse_t1, coarse_t0), 1)), n.fine_encoder(fine_t0))
            return n.ccd(torch.cat((c, f), 1)) + fine_t0 + coarse_t1 - coarse_t0

    return Module()


def train(variant, pairs, steps, torch, rng):
    model = make_model(variant, torch).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    size = pairs[0]["f0"].shape[-1]
    for _ in range(steps):
        batch = [[], [], [], [], []]
        for _ in range(4):
            pair = pairs[rng.integers(len(pairs))]
            r, c = rng.integers(0, size - PATCH + 1, 2)
            sl = (slice(r, r + PATCH), slice(c, c + PATCH))
            for store, tensor in zip(batch, inputs(variant, pair, torch, sl)):
                store.append(tensor)
            batch[3].append(torch.from_numpy(np.ascontiguousarray(pair["f1"][:, sl[0], sl[1]])))
            batch[4].append(torch.from_numpy(np.ascontiguousarray(pair["valid"][sl])))
        coarse, fine, reference, label, valid = (torch.stack(b) for b in batch)
        pred = model(coarse, fine, reference)
        loss = ((pred - label).abs() * valid[:, None]).sum() / (valid.sum() * 6).clamp(min=1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def evaluate(predict, pairs):
    maes, rmses = [], []
    for pair in pairs:
        size = pair["f0"].shape[-1]
        pred = np.zeros_like(pair["f1"])
        for r in range(0, size, PATCH):
            for c in range(0, size, PATCH):
                sl = (slice(r, r + PATCH), slice(c, c + PATCH))
                pred[:, sl[0], sl[1]] = predict(pair, sl)
        diff = (np.maximum(pred, 0) - pair["f1"])[:, pair["valid"]]
        maes.append(np.abs(diff).mean())
        rmses.append(np.sqrt((diff ** 2).mean(axis=1)).mean())
    return float(np.mean(maes)), float(np.mean(rmses))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--out", default="build/bench_three_image.json")
    args = parser.parse_args()

    import torch

    from model_core.simulate import simulate_series

    torch.set_num_threads(1)
    train_pairs, test_pairs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, seed in (("fields", 11), ("urban", 12)):
            series = simulate_series(Path(tmp) / kind, kind=kind, seed=seed, size=args.size, count=5,
                                     interval_days=24, **SENSOR)
            items = series.items
            for i in range(3):
                for a, b in ((i, i + 1), (i + 1, i)):
                    train_pairs.append(load_pair(items[a].fine, items[b].coarse, items[a].coarse, items[b].fine))
            for a, b in ((3, 4), (4, 3)):
                test_pairs.append(load_pair(items[a].fine, items[b].coarse, items[a].coarse, items[b].fine))
    results = {
        "no change": evaluate(lambda p, sl: p["f0"][:, sl[0], sl[1]], test_pairs),
        "first guess F0 + C1 - degrade(F0)": evaluate(
            lambda p, sl: (p["f0"] + p["c1"] - p["degraded"])[:, sl[0], sl[1]], test_pairs),
        "temporal difference F0 + C1 - C0": evaluate(lambda p, sl: (p["f0"] + p["c1"] - p["c0"])[:, sl[0], sl[1]],
                                                     test_pairs),
    }
    minutes = {}
    for variant in ("two-image footprint", "three-image, C0 channels", "three-image, C1 - C0 input"):
        started = time.perf_counter()
        model = train(variant, train_pairs, args.steps, torch, np.random.default_rng(0))
        minutes[variant] = (time.perf_counter() - started) / 60

        def predict(pair, sl, model=model, variant=variant):
            with torch.no_grad():
                return model(*(t[None] for t in inputs(variant, pair, torch, sl)))[0].numpy()

        results[f"CTSTFM {variant}"] = evaluate(predict, test_pairs)
        print(f"{variant}: {minutes[variant]:.1f} min", flush=True)
    print(f"\n{args.steps} steps x 4 patches of {PATCH} px, {len(train_pairs)} training pairs, "
          f"{len(test_pairs)} held-out pairs ({args.size} px)")
    for name, (mae, rmse) in results.items():
        print(f"  {name:40s} MAE {mae:.5f}  RMSE {rmse:.5f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": results, "minutes": minutes, "steps": args.steps}, indent=2))


if __name__ == "__main__":
    main()
