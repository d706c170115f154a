"""Ready for QGIS 4 (Qt 6): no removed spelling anywhere, the compatibility layer picks working enums,
and metadata.txt declares the versions the plugin runs on."""

import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_qt6", ROOT / "scripts" / "check_qt6.py")
check_qt6 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_qt6)


def test_the_code_has_no_spelling_that_qgis4_removed():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_qt6.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("source", [
    "from PyQt5.QtCore import Qt",
    "import PyQt6.QtGui",
    "import sip",
    "from qgis.PyQt.QtCore import QRegExp",
    "x = QgsProcessing.TypeRaster",
    "x = QgsProcessingParameterNumber.Integer",
    "x = QgsProcessingParameterFile.File",
    "x = QgsProcessingParameterDefinition.FlagAdvanced",
    "x = QgsProcessingAlgorithm.FlagNoThreading",
    "x = Qt.AlignLeft",
    "x = QVariant.Int",
    "dialog.exec_()",
])
def test_the_check_finds_each_removed_spelling(source):
    assert len(check_qt6.check_source(source)) == 1, source


@pytest.mark.parametrize("source", [
    "from qgis.PyQt.QtCore import Qt, QCoreApplication",
    "x = Qgis.ProcessingSourceType.Raster",
    "x = Qt.AlignmentFlag.AlignLeft",
    "x = QgsProcessing.TEMPORARY_OUTPUT",
    "dialog.exec()",
])
def test_the_check_accepts_the_qt6_spellings(source):
    assert check_qt6.check_source(source) == []


def test_compat_enums_work_on_this_qgis(qgis_app):
    from qgis.core import QgsProcessingParameterDefinition, QgsProcessingParameterNumber

    from ctstfm_qgis import compat

    parameter = QgsProcessingParameterNumber("N", "n", compat.NUMBER_INTEGER, defaultValue=3)
    assert parameter.dataType() == compat.NUMBER_INTEGER
    parameter.setFlags(parameter.flags() | compat.FLAG_ADVANCED)
    assert parameter.flags() & compat.FLAG_ADVANCED and not parameter.flags() & compat.FLAG_OPTIONAL
    assert isinstance(parameter, QgsProcessingParameterDefinition)


def test_metadata_declares_qgis_3_22_to_4():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["qgisMaximumVersion"] == "4.99"
    assert general["supportsQt6"] == "True"
