"""Shared test setup: a real headless QGIS with the ctstfm provider, and helpers.

No QGIS, GDAL or torch is mocked. Torch runs single-threaded-ish (2 threads) so
the suite behaves the same on a 2-core CI machine.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# GDAL >= 3.7 warns on every call until UseExceptions() or DontUseExceptions() is called; model_core
# calls it. Make that warning an error in every command the tests start (CLI, qgis_process) ...
GDAL_WARNINGS = ["error:Neither gdal:FutureWarning", "error:Neither osr:FutureWarning", "error:Neither ogr:FutureWarning"]
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), *GDAL_WARNINGS]))
for path in (str(ROOT), QGIS_PLUGINS):
    if path not in sys.path:
        sys.path.insert(0, path)

from model_core.progress import Progress  # noqa: E402


def pytest_configure(config):
    # ... and in the tests themselves.
    config.addinivalue_line("filterwarnings", r"error:Neither (gdal|osr|ogr)\.UseExceptions:FutureWarning")


class CancelAfter(Progress):
    """A progress that asks to cancel from its ``calls + 1``-th ``canceled()`` on; counts them in ``calls``."""

    def __init__(self, calls):
        self.calls, self.left = 0, calls

    def canceled(self):
        self.calls += 1
        return self.calls > self.left


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """One QgsApplication for the session, with Processing and our provider."""
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path_factory.mktemp("qgis_profile"))
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import ctstfm_qgis

    plugin = ctstfm_qgis.classFactory(None)
    plugin.initProcessing()
    yield app
    plugin.unload()


@pytest.fixture(scope="session")
def installed_plugin_env(tmp_path_factory):
    """Environment for qgis_process.bin with the packaged plugin installed and enabled.

    Builds the zip, unzips it into a throwaway HOME's QGIS profile, and enables it
    there, exactly as a user installing from the zip would.
    """
    import zipfile

    home = tmp_path_factory.mktemp("home")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "package.py"), "--dist", str(dist)], check=True)
    plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(dist / "ctstfm_qgis.zip") as archive:
        archive.extractall(plugins)
    env = dict(os.environ)
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", PYTHONPATH=os.pathsep.join(_venv_site_packages()))
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "ctstfm_qgis"], env=env, check=True, capture_output=True)
    return env


def _venv_site_packages():
    """qgis_process runs the system Python; torch lives in the venv's site-packages."""
    import sysconfig

    return [sysconfig.get_paths()["purelib"]]


def run_qgis_process(env, *args, timeout=600):
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def make_series(tmp_path_factory):
    """Factory of simulated Landsat/MODIS series: ``make_series(**kwargs) -> SimulatedSeries``.

    Keyword arguments are those of :func:`model_core.simulate.simulate_series` (``out_dir`` aside);
    each distinct set of arguments is simulated once per session and shared.
    """
    from model_core.simulate import simulate_series

    cache = {}

    def make(**kwargs):
        key = repr(sorted(kwargs.items()))
        if key not in cache:
            cache[key] = simulate_series(tmp_path_factory.mktemp("sim"), **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def sim_series(make_series):
    """A small CIA-like ``fields`` series: 4 dates 16 days apart, 128 x 128 fine pixels, seed 7."""
    return make_series(kind="fields", count=4, size=128, seed=7)
