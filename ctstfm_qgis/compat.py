"""The QGIS enums whose spelling changed between QGIS 3.22 and QGIS 4, spelled once.

QGIS 3.36 added scoped enums (``Qgis.ProcessingSourceType.Raster``); QGIS 4 removed the
old class-level spellings (``QgsProcessing.TypeRaster``). Every value here is the scoped
enum when this QGIS has it, else the old one, looked up by name so that no removed
spelling appears in the code (``make test`` runs ``scripts/check_qt6.py``, which fails
on any). Qt is imported only through ``qgis.PyQt``, which is PyQt5 or PyQt6.
"""

from qgis.core import Qgis, QgsProcessing, QgsProcessingParameterDefinition, QgsProcessingParameterFile
from qgis.core import QgsProcessingParameterNumber
from qgis.PyQt.QtCore import QCoreApplication


def _pick(scoped, old_owner, old_name):
    """``Qgis.<scoped>`` (e.g. ``"ProcessingSourceType.Raster"``) when it exists, else ``old_owner.<old_name>``."""
    value = Qgis
    for part in scoped.split("."):
        value = getattr(value, part, None)
        if value is None:
            return getattr(old_owner, old_name)
    return value


NUMBER_INTEGER = _pick("ProcessingNumberParameterType.Integer", QgsProcessingParameterNumber, "Integer")
NUMBER_DOUBLE = _pick("ProcessingNumberParameterType.Double", QgsProcessingParameterNumber, "Double")
SOURCE_RASTER = _pick("ProcessingSourceType.Raster", QgsProcessing, "TypeRaster")
FILE_BEHAVIOR_FILE = _pick("ProcessingFileParameterBehavior.File", QgsProcessingParameterFile, "File")
FLAG_ADVANCED = _pick("ProcessingParameterFlag.Advanced", QgsProcessingParameterDefinition, "FlagAdvanced")
FLAG_OPTIONAL = _pick("ProcessingParameterFlag.Optional", QgsProcessingParameterDefinition, "FlagOptional")


def translate(context, text):
    """``QCoreApplication.translate`` (the same call in Qt5 and Qt6)."""
    return QCoreApplication.translate(context, text)
