"""Pictures for the README, taken in the real QGIS desktop under Xvfb (``make screenshots``).

Installs the plugin into a throwaway QGIS profile, starts ``qgis`` in a virtual X server
(``xvfb-run``, ``QT_QPA_PLATFORM=xcb``) with the part below the ``--inside-qgis`` line as its
startup code, and saves into ``docs/img/``:

- ``fuse_dialog.png``: the *Spatiotemporal Fusion* dialog with its help panel;
- ``map_fine_vs_fused.png``: the QGIS window, the fine image at T0 (styled as a user would: natural
  colour) in the main map and the fused image at T1 in a second map view beside it, loaded with
  the fine layer's style by the plugin;
- ``train_results_viewer.png``: the QGIS window with the Results Viewer listing the report of a short
  training run started from its dialog; ``train_report.png``: that report (verdict, curves, epochs).

The data are the bundled sample (``resources/sample``: simulated Landsat/MODIS-like, 512 x 512
fine pixels) and the embedded model. Needs ``xvfb-run`` (Debian/Ubuntu: ``apt-get install xvfb``).

    python scripts/screenshots.py [--out docs/img] [--timeout 600]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCREEN = "1600x1000x24"


def enable_plugin(profile):
    """What ``Plugins > Manage and Install`` writes for an enabled plugin, plus a quiet first start."""
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(
        "[PythonPlugins]\nctstfm_qgis=true\nprocessing=true\n\n"
        "[qgis]\nshowTips322=false\ncheckVersion=false\nallowVersionCheck=false\n"
        "newProjectDefault=false\n\n"
        "[core]\nFirstRun=false\n\n"
        "[UI]\nhidebrowser=true\n"
    )


def run_outside(args):
    if not shutil.which("xvfb-run"):
        sys.exit("screenshots: xvfb-run is missing; install it (Debian/Ubuntu: apt-get install xvfb) and rerun.")
    if not shutil.which("qgis"):
        sys.exit("screenshots: the QGIS desktop ('qgis') is missing; install QGIS and rerun.")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ctstfm_shots_") as tmp:
        tmp = Path(tmp)
        profile = tmp / "profiles" / "profiles" / "default"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "package.py"), "--install", str(profile)],
                       check=True, stdout=subprocess.DEVNULL)
        enable_plugin(profile)
        code = tmp / "inside.py"
        me = str(Path(__file__).resolve())
        code.write_text(  # QGIS runs --code files with exec(): no __file__ unless given
            f"import sys\nsys.argv = [{me!r}, '--inside-qgis', {str(out)!r}, {str(tmp / 'work')!r}]\n"
            f"exec(compile(open({me!r}).read(), {me!r}, 'exec'), {{'__file__': {me!r}, '__name__': 'shots'}})\n"
        )
        env = dict(os.environ, QT_QPA_PLATFORM="xcb", HOME=str(tmp), PYTHONPATH=os.pathsep.join(_torch_path()))
        env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", "qgis", "--profiles-path", str(tmp / "profiles"),
                   "--nologo", "--noversioncheck", "--code", str(code)]
        try:
            done = subprocess.run(command, env=env, timeout=args.timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            sys.exit(f"screenshots: QGIS did not finish within {args.timeout} s.")
        status = tmp / "work" / "status.txt"
        if not status.exists() or status.read_text().strip() != "ok":
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            sys.exit("screenshots: " + (status.read_text() if status.exists() else "QGIS stopped before the script ran"))
    for name in sorted(os.listdir(out)):
        if name.endswith(".png"):
            print(out / name)


def _torch_path():
    """The desktop runs the system Python; torch may live in this (venv) Python's site-packages."""
    import sysconfig

    return [sysconfig.get_paths()["purelib"]]


# --------------------------------------------------------------------------- inside QGIS


def inside_qgis(out, work):
    """Runs as QGIS's startup code: each step after the previous one has been drawn."""
    import traceback

    from qgis.PyQt.QtCore import QTimer
    from qgis.utils import iface

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    state = {}
    steps = [load_fine, run_fuse, show_side_by_side, grab_map, open_dialog, grab_dialog, run_train, grab_results,
             open_report, grab_report]

    def finish(message):
        (work / "status.txt").write_text(message)
        # Quit without QGIS's "save the project?" questions: nothing here is worth keeping.
        QTimer.singleShot(500, lambda: os._exit(0))

    def next_step(index=0):
        if index == len(steps):
            finish("ok")
            return
        try:
            delay = steps[index](state, Path(out), work) or 1500
        except Exception:  # noqa: BLE001 (reported through the status file)
            finish(f"step {steps[index].__name__} failed:\n{traceback.format_exc()}")
            return
        QTimer.singleShot(delay, lambda: next_step(index + 1))

    window = iface.mainWindow()
    window.move(0, 0)  # Xvfb has no window manager to maximise it
    window.resize(1600, 1000)
    QTimer.singleShot(3000, next_step)


def natural_colour(layer):
    """What a user does first with a Landsat layer: red, green, blue with QGIS's 2-98 % stretch."""
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer, QgsRectangle

    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, 3, 2, 1)
    for band, setter in ((3, "setRedContrastEnhancement"), (2, "setGreenContrastEnhancement"),
                         (1, "setBlueContrastEnhancement")):
        low, high = provider.cumulativeCut(band, 0.02, 0.98, QgsRectangle(), 250_000)
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        getattr(renderer, setter)(enhancement)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def load_fine(state, out, work):
    from qgis.utils import iface

    sample = ROOT / "resources" / "sample"
    state["fine"] = iface.addRasterLayer(str(sample / "fine_2022-01-02.tif"), "Landsat-like fine image, 2022-01-02")
    state["coarse"] = iface.addRasterLayer(str(sample / "coarse_2022-02-03.tif"), "MODIS-like coarse image, 2022-02-03")
    state["coarse"].setOpacity(1.0)
    natural_colour(state["fine"])
    iface.layerTreeView().setCurrentLayer(state["fine"])
    return 1000


def run_fuse(state, out, work):
    import processing

    results = processing.runAndLoadResults("ctstfm:fuse", {
        "FINE": state["fine"].id(), "COARSE": state["coarse"].id(), "TILE_SIZE": 256, "OVERLAP": 32, "DEVICE": 0,
        "OUTPUT": str(work / "fused_2022-02-03.tif"),
    })
    from qgis.core import QgsProject

    state["fused"] = next(layer for layer in QgsProject.instance().mapLayers().values()
                          if layer.source() == results["OUTPUT"])
    state["seconds"], state["device"] = results["SECONDS"], results["DEVICE"]
    return 1000


def show_side_by_side(state, out, work):
    """The fine image in the main map, the fused one in a second map view of the same extent."""
    from qgis.core import QgsMapThemeCollection, QgsProject
    from qgis.utils import iface

    project = QgsProject.instance()
    root = project.layerTreeRoot()
    root.findLayer(state["coarse"].id()).setItemVisibilityChecked(False)
    themes = project.mapThemeCollection()
    for name, shown in (("fine T0", state["fine"]), ("fused T1", state["fused"])):
        for layer in (state["fine"], state["fused"]):
            root.findLayer(layer.id()).setItemVisibilityChecked(layer is shown)
        themes.insert(name, QgsMapThemeCollection.createThemeFromCurrentState(root, iface.layerTreeView().layerTreeModel()))
    for layer in (state["fine"], state["fused"]):
        root.findLayer(layer.id()).setItemVisibilityChecked(True)
    main = iface.mapCanvas()
    main.setTheme("fine T0")
    view = iface.createNewMapCanvas("Fused T1 (CTSTFM)")
    view.setTheme("fused T1")
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QDockWidget

    window = iface.mainWindow()
    for dock in window.findChildren(QDockWidget):
        if dock.objectName() == "Browser":
            dock.hide()
    dock = view.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    if dock is not None:  # the second map as wide as the main one
        window.resizeDocks([dock], [window.width() // 2 - 150], Qt.Orientation.Horizontal)
    extent = state["fine"].extent()
    for canvas in (main, view):
        canvas.setExtent(extent)
        canvas.refresh()
    state["view"] = view
    return 4000


def grab_map(state, out, work):
    from qgis.utils import iface

    iface.mainWindow().grab().save(str(out / "map_fine_vs_fused.png"))
    return 200


def open_dialog(state, out, work):
    import processing

    dialog = processing.createAlgorithmDialog("ctstfm:fuse", {
        "FINE": state["fine"].id(), "COARSE": state["coarse"].id(),
    })
    dialog.resize(1400, 900)
    dialog.show()
    from qgis.PyQt.QtWidgets import QSplitter

    for splitter in dialog.findChildren(QSplitter):  # parameters | help: give the help room to read
        if splitter.count() == 2:
            splitter.setSizes([760, 640])
    state["dialog"] = dialog
    return 2500


def grab_dialog(state, out, work):
    dialog = state.pop("dialog")
    dialog.grab().save(str(out / "fuse_dialog.png"))
    dialog.close()
    return 200


def run_train(state, out, work):
    """A short fine-tuning of the embedded model on the sample, run from its dialog as a user would: the
    dialog lists the HTML report in the Results Viewer when it finishes."""
    import processing

    from model_core import paths

    sample = ROOT / "resources" / "sample"
    dialog = processing.createAlgorithmDialog("ctstfm:train", {
        "MANIFEST": str(sample / "manifest.csv"), "INIT_MODEL": str(paths.DEFAULT_MODEL), "EPOCHS": 2,
        "PATCH_SIZE": 96, "PATCHES_PER_EPOCH": 8, "BATCH_SIZE": 4, "DEVICE": 0, "LEARNING_RATE": 2e-4,
        "OUTPUT_MODEL": str(work / "sample_finetuned.pt"), "OUTPUT_HTML": str(work / "sample_finetuned.html"),
    })
    dialog.show()
    dialog.runAlgorithm()
    state["train_dialog"] = dialog
    return wait_for(lambda: (work / "sample_finetuned.html").exists(), then=3000)


def wait_for(done, then):
    """Milliseconds to wait: polls ``done`` while processing events (training runs in a task)."""
    import time

    from qgis.PyQt.QtWidgets import QApplication

    deadline = time.monotonic() + 600
    while not done() and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.1)
    return then


def grab_results(state, out, work):
    """The QGIS window with the Results Viewer listing the training report."""
    from qgis.PyQt.QtWidgets import QDockWidget
    from qgis.utils import iface

    dialog = state.pop("train_dialog", None)
    if dialog is not None:
        dialog.grab().save(str(work / "train_dialog.png"))
        dialog.close()
    dock = next(d for d in iface.mainWindow().findChildren(QDockWidget) if d.objectName() == "ResultsViewer")
    dock.show()
    dock.raise_()
    iface.mainWindow().grab().save(str(out / "train_results_viewer.png"))
    return 200


def open_report(state, out, work):
    """The report itself, as the browser the Results Viewer opens shows it (QtWebKit, when QGIS has it)."""
    try:
        from qgis.PyQt.QtWebKitWidgets import QWebView
    except ImportError:
        return 0
    from qgis.PyQt.QtCore import QUrl

    view = QWebView()
    view.resize(1100, 1250)
    view.load(QUrl.fromLocalFile(str(work / "sample_finetuned.html")))
    view.show()
    state["report_view"] = view
    return 3000


def grab_report(state, out, work):
    view = state.pop("report_view", None)
    if view is not None:
        view.grab().save(str(out / "train_report.png"))
        view.close()
    return 200


if len(sys.argv) > 1 and sys.argv[1] == "--inside-qgis":
    inside_qgis(sys.argv[2], sys.argv[3])
elif __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"), help="folder for the PNGs (default docs/img)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds QGIS may take (default 900)")
    run_outside(parser.parse_args())
