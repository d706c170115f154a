"""`make demo`: the plugin's main job, end to end, on the bundled sample.

1. installs the packaged plugin into a throwaway QGIS profile (demo_output/qgis_home),
2. runs ``ctstfm:fuse`` through ``qgis_process.bin`` on the sample's fine image at T0
   and coarse image at T1 with the embedded default model, then again with the coarse image at
   T0 too (COARSE_T0: the embedded model's three-image form),
3. scores the fused image against the true fine image at T1, next to the simple
   baselines, with the project's metrics module,
4. writes a PNG a person can look at: fine T0 | coarse T1 | fused T1 | true fine T1 |
   error map, the four images in one colour stretch.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from model_core.metrics import compute_metrics  # noqa: E402
from model_core.paths import DEFAULT_MODEL, SAMPLE_DIR  # noqa: E402
from model_core.raster import RasterInfo, RasterReader  # noqa: E402

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
OUT = ROOT / "demo_output"
T0, T1 = "2021-12-01", "2022-01-02"
SCALE = 1e-4
ERROR_TITLE = "|fused - true|, mean of bands"


def install_plugin(home):
    """Package the plugin and unzip it into a throwaway profile, as 'Install from ZIP' does."""
    subprocess.run([sys.executable, str(ROOT / "scripts/package.py"), "--dist", str(OUT)], check=True,
                   stdout=subprocess.DEVNULL)
    plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
    if plugins.exists():
        shutil.rmtree(plugins)
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(OUT / "ctstfm_qgis.zip") as archive:
        archive.extractall(plugins)
    env = dict(os.environ, HOME=str(home), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=sysconfig.get_paths()["purelib"])
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "ctstfm_qgis"], env=env, capture_output=True,
                             text=True)
    # qgis_process exits 1 when the plugin is already enabled (a second `make demo`).
    if enabled.returncode != 0 and "already enabled" not in enabled.stdout + enabled.stderr:
        sys.stderr.write(enabled.stdout + enabled.stderr)
        raise SystemExit("demo: qgis_process could not enable the plugin (output above)")
    return env


def run_fuse(env, fine, coarse, output, coarse_t0=None):
    command = [QGIS_PROCESS, "run", "ctstfm:fuse", "--", f"FINE={fine}", f"COARSE={coarse}",
               *([f"COARSE_T0={coarse_t0}"] if coarse_t0 else []), f"OUTPUT={output}"]
    print("$ " + " ".join(command[:1] + ["run", "ctstfm:fuse", "--"] + command[4:]), flush=True)
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not Path(output).exists():
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit("demo: qgis_process failed (output above)")
    return time.monotonic() - started


def read_on_grid(path, grid):
    with RasterReader(path, grid=grid) as reader:
        data, valid = reader.read_reflectance((0, 0, grid.width, grid.height), SCALE)
    return data, valid


def stretch(rgb, low, high):
    return np.clip((rgb - low[:, None, None]) / (high - low)[:, None, None], 0, 1).transpose(1, 2, 0)


def write_png(path, panels, error, valid):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # False colour NIR/red/green (bands 4, 3, 2): vegetation red, water dark, soil and towns grey-brown.
    bands = [3, 2, 1]
    truth = panels[3][1][bands]
    low = np.array([np.percentile(b[valid], 2) for b in truth])
    high = np.array([np.percentile(b[valid], 98) for b in truth])
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.6), constrained_layout=True)
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(stretch(image[bands], low, high), interpolation="nearest")
        ax.set_title(title)
    shown = axes[4].imshow(np.where(valid, error, np.nan), cmap="magma", vmin=0,
                           vmax=float(np.percentile(error[valid], 99)), interpolation="nearest")
    axes[4].set_title(ERROR_TITLE)
    fig.colorbar(shown, ax=axes[4], fraction=0.046, label="reflectance")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("CTSTFM demo: NIR/red/green, one stretch for all four images", fontsize=12)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main():
    if not DEFAULT_MODEL.exists():
        raise SystemExit(f"demo: the default model {DEFAULT_MODEL} is missing; run 'make train-default'.")
    OUT.mkdir(exist_ok=True)
    fine_t0, coarse_t1 = SAMPLE_DIR / f"fine_{T0}.tif", SAMPLE_DIR / f"coarse_{T1}.tif"
    fused_path, three_path = OUT / f"fused_{T1}.tif", OUT / f"fused_three_image_{T1}.tif"
    for path in (fused_path, three_path):
        path.unlink(missing_ok=True)
    env = install_plugin(OUT / "qgis_home")
    seconds = run_fuse(env, fine_t0, coarse_t1, fused_path)
    run_fuse(env, fine_t0, coarse_t1, three_path, coarse_t0=SAMPLE_DIR / f"coarse_{T0}.tif")

    grid = RasterInfo.read(str(SAMPLE_DIR / f"fine_{T1}.tif"))
    truth, valid = read_on_grid(SAMPLE_DIR / f"fine_{T1}.tif", grid)
    fine0, valid0 = read_on_grid(fine_t0, grid)
    coarse1, valid1 = read_on_grid(coarse_t1, grid)
    coarse0, valid2 = read_on_grid(SAMPLE_DIR / f"coarse_{T0}.tif", grid)
    fused, valid3 = read_on_grid(fused_path, grid)
    three, valid4 = read_on_grid(three_path, grid)
    valid = valid & valid0 & valid1 & valid2 & valid3 & valid4

    estimates = {
        "CTSTFM (default model)": fused,
        "CTSTFM, three-image (default model's three-image form, + coarse T0)": three,
        "no change (fine T0)": fine0,
        "coarse only (coarse T1 on fine grid)": coarse1,
        "temporal difference (fine T0 + coarse T1 - coarse T0; uses one image more)": fine0 + coarse1 - coarse0,
    }
    print(f"\nfused {fused_path.relative_to(ROOT)} in {seconds:.1f} s; accuracy against the true fine image at {T1}:")
    print(f"{'estimate':76s} {'MAE':>8s} {'RMSE':>8s} {'PSNR':>7s} {'SSIM':>6s} {'SAM':>6s}")
    scores = {}
    for name, estimate in estimates.items():
        m = compute_metrics(estimate, truth, valid)
        scores[name] = {k: m[k]["mean"] for k in ("mae", "rmse", "psnr", "ssim", "sam")}
        s = scores[name]
        print(f"{name:76s} {s['mae']:8.4f} {s['rmse']:8.4f} {s['psnr']:7.2f} {s['ssim']:6.3f} {s['sam']:6.2f}")
    error = np.abs(fused - truth).mean(axis=0)
    png = OUT / "demo.png"
    panels = [(f"fine T0 ({T0})", fine0), (f"coarse T1 ({T1})", coarse1), ("CTSTFM fused T1", fused),
              (f"true fine T1 ({T1})", truth)]
    write_png(png, panels, error, valid)
    summary = {"fused": str(fused_path), "png": str(png), "panels": [t for t, _ in panels] + [ERROR_TITLE],
               "seconds": seconds, "metrics": scores}
    (OUT / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(f"\nfiles:\n  fused GeoTIFF  {fused_path}\n  picture        {png}\n  metrics        {OUT / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
