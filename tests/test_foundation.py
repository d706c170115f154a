"""The plugin loads in QGIS and in qgis_process, and explains a missing PyTorch."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

from conftest import ROOT, run_qgis_process

from model_core.cli import COMMANDS


def test_provider_is_registered_in_headless_qgis(qgis_app):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("ctstfm")
    assert provider is not None
    assert provider.name()
    algorithm_ids = {alg.id() for alg in provider.algorithms()}
    assert "ctstfm:fuse" in algorithm_ids
    for alg in provider.algorithms():
        assert alg.group(), alg.id()
        assert len(alg.shortHelpString()) > 40, alg.id()


def test_zip_is_self_contained(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts/package.py"), "--dist", str(tmp_path)], check=True)
    names = zipfile.ZipFile(tmp_path / "ctstfm_qgis.zip").namelist()
    assert all(name.startswith("ctstfm_qgis/") for name in names)
    for required in (
        "ctstfm_qgis/__init__.py",
        "ctstfm_qgis/metadata.txt",
        "ctstfm_qgis/model_core/__init__.py",
        "ctstfm_qgis/resources/icon.svg",
    ):
        assert required in names
    assert not any("__pycache__" in name for name in names)


def test_qgis_process_lists_provider_from_installed_zip(installed_plugin_env):
    result = run_qgis_process(installed_plugin_env, "list", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout[result.stdout.index("{"):])
    assert "ctstfm" in listing["providers"], sorted(listing["providers"])
    assert "ctstfm:fuse" in listing["providers"]["ctstfm"]["algorithms"]


def test_model_core_command_line():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    help_text = subprocess.run([sys.executable, "-m", "model_core", "--help"], env=env, capture_output=True, text=True)
    assert help_text.returncode == 0 and "version" in help_text.stdout
    version = subprocess.run(
        [sys.executable, "-m", "model_core", "version", "--json"], env=env, capture_output=True, text=True
    )
    assert version.returncode == 0, version.stderr
    info = json.loads(version.stdout)
    assert info["model_core"] and info["torch"] and info["gdal"]


@pytest.mark.parametrize("command", [name for name, _, _ in COMMANDS])
def test_every_subcommand_answers_help(command, capsys):
    """``--help`` of each subcommand prints its usage and exits 0 (argparse %-formats help texts: a bare ``%`` in an
    option's help once made ``train --help`` a traceback)."""
    from model_core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and f"python -m model_core {command}" in capsys.readouterr().out


def test_gdal_exceptions_are_explicitly_on():
    # GDAL >= 3.7 prints a FutureWarning on every command unless this is chosen explicitly
    # (conftest makes that warning an error in every command the tests start).
    from osgeo import gdal, osr

    import model_core.raster  # noqa: F401

    assert gdal.GetUseExceptions() == 1 and osr.GetUseExceptions() == 1


def test_model_core_never_imports_qgis():
    offenders = [
        str(path)
        for path in (ROOT / "model_core").rglob("*.py")
        if any(line.strip().startswith(("import qgis", "from qgis")) for line in path.read_text().splitlines())
    ]
    assert offenders == []


def test_missing_torch_gives_a_clear_message(tmp_path):
    """With torch unimportable, the provider still loads and running an algorithm explains what to install."""
    script = tmp_path / "no_torch.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import importlib.abc, os, sys
            class BlockTorch(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name == "torch" or name.startswith("torch."):
                        raise ImportError("No module named 'torch' (blocked by test)")
                    return None
            sys.meta_path.insert(0, BlockTorch())
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
            sys.path[:0] = [{str(ROOT)!r}, "/usr/share/qgis/python/plugins"]
            from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsProcessingException
            app = QgsApplication([], False); app.initQgis()
            from processing.core.Processing import Processing
            Processing.initialize()
            import ctstfm_qgis
            plugin = ctstfm_qgis.classFactory(None)  # kept alive, as QGIS keeps it
            plugin.initProcessing()
            registry = QgsApplication.processingRegistry()
            assert registry.providerById("ctstfm") is not None
            alg = registry.createAlgorithmById("ctstfm:fuse")
            try:
                alg.processAlgorithm({{}}, QgsProcessingContext(), QgsProcessingFeedback())
            except QgsProcessingException as exc:
                print("MESSAGE:", str(exc))
            assert "torch" not in sys.modules
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=dict(os.environ, QT_QPA_PLATFORM="offscreen")
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout.split("MESSAGE:", 1)[1]
    assert "PyTorch is not installed" in message and "pip install" in message
