"""ctstfm:train in QGIS: the dialog's parameters through processing.run and qgis_process."""

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import run_qgis_process

TINY = {
    "EPOCHS": 2,
    "BATCH_SIZE": 4,
    "PATCH_SIZE": 32,
    "PATCHES_PER_EPOCH": 16,
    "LEARNING_RATE": 3e-3,
    "WIDTH": 8,
    "SEED": 0,
    "DEVICE": 1,  # cpu
    "FROM_SCRATCH": True,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_feedback(cancel_at=None):
    from qgis.core import QgsProcessingFeedback

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.infos, self.warnings = [], []
            if cancel_at is not None:
                self.progressChanged.connect(lambda value: self.cancel() if value >= cancel_at else None)

        def pushInfo(self, text):  # noqa: N802
            self.infos.append(text)
            super().pushInfo(text)

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)
            super().pushWarning(text)

    return Feedback()


def rows(path):
    """The epoch rows of a training report (the baselines and epoch 0 come first)."""
    with open(path) as handle:
        return [row for row in csv.DictReader(handle) if row["epoch"] not in ("no_change", "first_guess", "0")]


def test_train_algorithm_is_declared(qgis_app):
    from qgis.core import QgsApplication

    from ctstfm_qgis.compat import FLAG_ADVANCED

    alg = QgsApplication.processingRegistry().algorithmById("ctstfm:train")
    assert alg is not None and alg.group() == "Training" and alg.displayName() == "Train CTSTFM"
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {
        "MANIFEST", "FINE_LAYERS", "COARSE_LAYERS", "DATES", "INIT_MODEL", "OUTPUT_MODEL", "EPOCHS", "BATCH_SIZE",
        "PATCH_SIZE", "PATCHES_PER_EPOCH", "DEVICE", "SEED", "RESUME", "LEARNING_RATE", "VALIDATION_FRACTION",
        "REFERENCES", "MAX_MINUTES", "BANDS", "FROM_SCRATCH", "START", "RESIDUAL_BLUR", "SCALE",
    } <= names
    advanced = {
        p.name() for p in alg.parameterDefinitions() if p.flags() & FLAG_ADVANCED
    }
    assert {"LEARNING_RATE", "VALIDATION_FRACTION", "REFERENCES", "FROM_SCRATCH", "START"} <= advanced
    assert "MAX_MINUTES" not in advanced
    assert {o.name() for o in alg.outputDefinitions()} >= {
        "OUTPUT_MODEL", "REPORT_CSV", "REPORT_PNG", "OUTPUT_HTML", "VALIDATION_MAE", "NO_CHANGE_MAE",
        "FIRST_GUESS_MAE", "IMPROVEMENT_PERCENT", "VERDICT",
    }
    assert alg.outputDefinition("OUTPUT_HTML").type() == "outputHtml"  # listed in the Results Viewer
    assert "manifest" in alg.shortHelpString().lower()


def assert_html_report(path, best_epoch):
    """The report the Results Viewer shows: one file, the curves inline, the best epoch and a verdict."""
    import base64
    import re

    text = Path(path).read_text(encoding="utf-8")
    image = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert image and base64.b64decode(image.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert f"best epoch ({best_epoch})" in text
    assert re.search(r'class="verdict">Best epoch \d+: validation MAE [0-9.]+, [0-9.]+ % (lower|higher)', text)


def test_train_from_layers_then_fuse(qgis_app, sim_series, tmp_path):
    import processing

    from model_core.model_file import load_model

    out = tmp_path / "model.pt"
    feedback = make_feedback()
    result = processing.run(
        "ctstfm:train",
        dict(
            TINY,
            FINE_LAYERS=[str(item.fine) for item in sim_series.items],
            COARSE_LAYERS=[str(item.coarse) for item in sim_series.items],
            DATES="",
            OUTPUT_MODEL=str(out),
            OUTPUT_HTML=str(tmp_path / "report.html"),
        ),
        feedback=feedback,
    )
    assert result["OUTPUT_MODEL"] == str(out) and out.exists()
    assert_html_report(result["OUTPUT_HTML"], best_epoch=max(1, load_model(out).provenance["best_epoch"]))
    assert [int(r["epoch"]) for r in rows(result["REPORT_CSV"])] == [1, 2]
    assert Path(result["REPORT_PNG"]).exists()
    # The results put the model next to the two baselines, and say how it compares.
    assert result["VALIDATION_MAE"] == pytest.approx(load_model(out).provenance["best_validation"]["mae"])
    assert result["NO_CHANGE_MAE"] > 0 and result["FIRST_GUESS_MAE"] > 0
    assert result["IMPROVEMENT_PERCENT"] == pytest.approx(100 * (1 - result["VALIDATION_MAE"] / result["NO_CHANGE_MAE"]))
    assert result["VERDICT"].startswith(("The model improves on the unchanged fine image", "WARNING"))
    infos = "\n".join(feedback.infos)
    assert "Dates read from the file names" in infos and "patches/s" in infos
    loaded = load_model(out)
    provenance = loaded.provenance
    assert provenance["data"]["layers"]["fine"][0] == str(sim_series.items[0].fine)
    assert provenance["best_validation"]["mae"] < 0.8 * provenance["initial_validation"]["mae"]

    fused = tmp_path / "fused.tif"
    fuse = processing.run(
        "ctstfm:fuse",
        {
            "FINE": str(sim_series.items[2].fine),
            "COARSE": str(sim_series.items[3].coarse),
            "MODEL": str(out),
            "TILE_SIZE": 128,
            "OVERLAP": 0,
            "DEVICE": 1,
            "OUTPUT": str(fused),
        },
    )
    assert Path(fuse["OUTPUT"]).exists()


def test_manifest_then_resume(qgis_app, sim_series, tmp_path):
    import processing

    out = tmp_path / "model.pt"
    params = dict(TINY, MANIFEST=str(sim_series.manifest), OUTPUT_MODEL=str(out), EPOCHS=1)
    first = processing.run("ctstfm:train", params)
    assert len(rows(first["REPORT_CSV"])) == 1
    feedback = make_feedback()
    second = processing.run("ctstfm:train", dict(params, EPOCHS=2, RESUME=True), feedback=feedback)
    assert [int(r["epoch"]) for r in rows(second["REPORT_CSV"])] == [1, 2]
    assert any("Resuming" in text for text in feedback.infos)


def test_cancel_keeps_the_best_model_and_warns(qgis_app, sim_series, tmp_path):
    import processing

    out = tmp_path / "model.pt"
    feedback = make_feedback(cancel_at=60)  # epoch 1 of 2 ends at 51 %
    result = processing.run(
        "ctstfm:train", dict(TINY, MANIFEST=str(sim_series.manifest), OUTPUT_MODEL=str(out)), feedback=feedback
    )
    assert out.exists() and len(rows(result["REPORT_CSV"])) == 1
    assert any("best model so far" in text for text in feedback.warnings)


@pytest.mark.parametrize(
    "params, match",
    [
        ({}, "No series given"),
        ({"DATES": "2021-04-01,2021-04-01,2021-05-01,2021-06-01"}, "appears twice"),
        ({"DATES": "2021-04-01"}, "1 dates for 4"),
    ],
)
def test_bad_input_is_a_processing_error(qgis_app, sim_series, tmp_path, params, match):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "model.pt"
    out.write_bytes(b"old model")
    if params:
        params = dict(
            params,
            FINE_LAYERS=[str(item.fine) for item in sim_series.items],
            COARSE_LAYERS=[str(item.coarse) for item in sim_series.items],
        )
    with pytest.raises(QgsProcessingException, match=match):
        processing.run("ctstfm:train", dict(TINY, OUTPUT_MODEL=str(out), **params))
    assert out.read_bytes() == b"old model"


def test_qgis_process_trains_a_model_that_fuses(installed_plugin_env, sim_series, tmp_path):
    from model_core.fusion import fuse

    out = tmp_path / "model.pt"
    args = [f"--{key}={value}" for key, value in dict(TINY, EPOCHS=1).items()]
    env = dict(installed_plugin_env, OMP_NUM_THREADS="1")  # tiny tensors: one thread is fastest
    result = run_qgis_process(
        env,
        "run",
        "ctstfm:train",
        "--json",
        f"--MANIFEST={sim_series.manifest}",
        f"--OUTPUT_MODEL={out}",
        *args,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    outputs = json.loads(result.stdout[result.stdout.index("{"):])["results"]
    assert outputs["OUTPUT_MODEL"] == str(out) and out.exists()
    assert len(rows(outputs["REPORT_CSV"])) == 1
    fused = tmp_path / "fused.tif"
    fuse(sim_series.items[2].fine, sim_series.items[3].coarse, out, fused, tile=128, overlap=0, device="cpu")
    assert fused.exists()


def test_training_dates_that_barely_change_warn_in_qgis(qgis_app, tmp_path):
    """Two dates whose fine image changed by a fifth of the coarse change: the defaults' fitted first guess
    trusts the coarse change little, and QGIS shows the warning (the verdict stays the VERDICT output)."""
    import processing

    from helpers import write_scaled_change_pair

    feedback = make_feedback()
    result = processing.run("ctstfm:train", {
        "MANIFEST": str(write_scaled_change_pair(tmp_path / "pair", 0.2)), "EPOCHS": 1, "PATCH_SIZE": 32,
        "PATCHES_PER_EPOCH": 4, "DEVICE": 1, "OUTPUT_MODEL": str(tmp_path / "model.pt"),
    }, feedback=feedback)
    warned = "\n".join(feedback.warnings)
    assert "the fine images changed far less than the coarse images show" in warned, warned
    assert "green 0.20" in warned, warned
    assert result["VERDICT"].startswith(("The model improves on the unchanged fine image", "WARNING: the model")), \
        result["VERDICT"]
