"""The embedded default model and `make demo`'s script, on the bundled sample."""

import json
import subprocess
import sys


from conftest import ROOT

T0, T1 = "2021-12-01", "2022-01-02"
# "A clear margin" (docs/default_model.md): at least 5 % lower MAE, 10 % lower RMSE and 0.002 higher SSIM.
MARGIN_MAE, MARGIN_RMSE, MARGIN_SSIM = 0.95, 0.90, 0.002


def _read(path, grid):
    from model_core.raster import RasterReader

    with RasterReader(str(path), grid=grid) as reader:
        return reader.read_reflectance((0, 0, grid.width, grid.height), 1e-4)


def test_default_model_beats_no_change_and_coarse_only_on_the_sample(tmp_path):
    """On a scene and dates it never saw, the default model beats both trivial estimates."""
    from model_core.fusion import fuse
    from model_core.metrics import compute_metrics
    from model_core.model_file import load_model
    from model_core.paths import DEFAULT_MODEL, SAMPLE_DIR
    from model_core.raster import RasterInfo

    loaded = load_model(DEFAULT_MODEL)
    assert loaded.provenance.get("data"), "the default model must say what it was trained on"
    out = tmp_path / "fused.tif"
    fuse(str(SAMPLE_DIR / f"fine_{T0}.tif"), str(SAMPLE_DIR / f"coarse_{T1}.tif"), str(DEFAULT_MODEL), str(out))

    grid = RasterInfo.read(str(SAMPLE_DIR / f"fine_{T1}.tif"))
    truth, valid = _read(SAMPLE_DIR / f"fine_{T1}.tif", grid)
    no_change, valid0 = _read(SAMPLE_DIR / f"fine_{T0}.tif", grid)
    coarse_only, valid1 = _read(SAMPLE_DIR / f"coarse_{T1}.tif", grid)
    fused, valid2 = _read(out, grid)
    valid &= valid0 & valid1 & valid2
    score = {name: compute_metrics(estimate, truth, valid)
             for name, estimate in (("fused", fused), ("no_change", no_change), ("coarse", coarse_only))}
    mean = {name: {k: m[k]["mean"] for k in ("mae", "rmse", "ssim")} for name, m in score.items()}
    for baseline in ("no_change", "coarse"):
        assert mean["fused"]["mae"] < MARGIN_MAE * mean[baseline]["mae"], mean
        assert mean["fused"]["rmse"] < MARGIN_RMSE * mean[baseline]["rmse"], mean
        assert mean["fused"]["ssim"] > mean[baseline]["ssim"] + MARGIN_SSIM, mean


def test_demo_writes_the_fused_raster_and_a_five_panel_picture():
    from PIL import Image

    done = subprocess.run([sys.executable, str(ROOT / "scripts/demo.py")], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((ROOT / "demo_output/metrics.json").read_text())
    assert (ROOT / "demo_output" / f"fused_{T1}.tif").exists()
    assert len(summary["panels"]) == 5
    width, height = Image.open(summary["png"]).size
    assert width > 3.5 * height  # five panels side by side
    assert "CTSTFM (default model)" in done.stdout and "no change" in done.stdout
