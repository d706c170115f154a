#!/usr/bin/env python3
"""Static check: no spelling that QGIS 4 (Qt 6, PyQt6) removed.

    python scripts/check_qt6.py [PATH ...]      # default: ctstfm_qgis model_core scripts tests

Reads the Python files as syntax trees (nothing is imported, so it runs without QGIS) and
reports, one ``file:line: message`` a finding, exit status 1 when there is any:

- Qt imported around ``qgis.PyQt`` (``PyQt5``, ``PyQt6``, ``sip``, ``PySide*``): QGIS 4 ships PyQt6;
- QGIS's unscoped Processing enums, removed in QGIS 4: ``QgsProcessing.TypeRaster``,
  ``QgsProcessingParameterDefinition.FlagAdvanced``, ``QgsProcessingAlgorithm.FlagNoThreading``
  and every other ``QgsProcessing*.Type*``/``Flag*``, ``QgsProcessingParameterNumber.Integer``/``Double``,
  ``QgsProcessingParameterFile.File``/``Folder``, ``QgsProcessingParameterField.Numeric``/``String``/...;
  their scoped forms (``Qgis.ProcessingSourceType.Raster``) are in ``ctstfm_qgis/compat.py``;
- PyQt6 removals: unscoped Qt enums (``Qt.AlignLeft`` instead of ``Qt.AlignmentFlag.AlignLeft``),
  ``QVariant.Int`` and the other ``QVariant`` types, ``exec_()``, ``qApp``, ``QRegExp``, ``QDesktopWidget``.

Why our own check and not flake8-qgis (PyPI, maintained): its QGIS 4 rules (QGS4xx) cover Qt's
removals, but not QGIS's own removed Processing enums, which are what this plugin uses; and it would
bring flake8 with its style rules into the test environment for a dozen spellings.
"""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = ("ctstfm_qgis", "model_core", "scripts", "tests")

QT_MODULES = re.compile(r"^(PyQt[456]|sip|PySide[26]?)(\.|$)")
#: Enum values that QGIS 4 removed from these classes (the scoped Qgis.* forms replace them).
REMOVED_MEMBERS = {
    "QgsProcessingParameterNumber": {"Integer", "Double"},
    "QgsProcessingParameterFile": {"File", "Folder"},
    "QgsProcessingParameterField": {"Any", "Numeric", "String", "DateTime", "Binary", "Boolean"},
    "QgsProcessingParameterDateTime": {"DateTime", "Date", "Time"},
    "QgsProcessingParameterTinInputLayers": {"Vertices", "StructureLines", "BreakLines"},
}
#: QgsProcessing* classes lost every unscoped TypeX / FlagX member.
REMOVED_PREFIX = re.compile(r"^(Type|Flag)[A-Z]")
#: Qt classes whose members are looked up through their enum in PyQt6 (Qt.AlignmentFlag.AlignLeft).
SCOPED_QT_OWNERS = {"Qt", "QMessageBox", "QDialogButtonBox", "QSizePolicy", "QAbstractItemView", "QFrame",
                    "QPainter", "QFont", "QEvent", "QItemSelectionModel", "QHeaderView", "QLineEdit"}
REMOVED_NAMES = {"qApp": "use QApplication.instance()", "QRegExp": "use QRegularExpression",
                 "QDesktopWidget": "use QScreen (QApplication.primaryScreen())"}


def _findings(tree):
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if QT_MODULES.match(alias.name):
                    yield node.lineno, f"import {alias.name}: import Qt through qgis.PyQt"
        elif isinstance(node, ast.ImportFrom) and node.module and QT_MODULES.match(node.module):
            yield node.lineno, f"from {node.module} import ...: import Qt through qgis.PyQt"
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in REMOVED_NAMES:
                    yield node.lineno, f"{alias.name} is removed in Qt 6: {REMOVED_NAMES[alias.name]}"
        elif isinstance(node, ast.Attribute) and node.attr == "exec_":
            yield node.lineno, "exec_() is removed in PyQt6: use exec()"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield from _attribute_findings(node, parents.get(node))


def _attribute_findings(node, parent):
    owner, member = node.value.id, node.attr
    if member in REMOVED_MEMBERS.get(owner, ()) or (owner.startswith("QgsProcessing") and REMOVED_PREFIX.match(member)):
        yield node.lineno, f"{owner}.{member} is removed in QGIS 4: use its Qgis.* scoped enum (ctstfm_qgis/compat.py)"
    elif owner == "QVariant" and member[:1].isupper() and member != "Type":
        yield node.lineno, f"QVariant.{member} is removed in Qt 6: use QMetaType.Type"
    elif owner in SCOPED_QT_OWNERS and member[:1].isupper() and not isinstance(parent, ast.Attribute):
        # Qt.AlignLeft: a value straight on the class; Qt.AlignmentFlag.AlignLeft is the PyQt6 spelling.
        yield node.lineno, f"{owner}.{member} is removed in PyQt6: spell it {owner}.<Enum>.{member}"


def check_source(text, name="<string>"):
    """The findings ``[(line, message)]`` in one file's text."""
    return sorted(set(_findings(ast.parse(text, filename=name))))


def python_files(paths):
    for path in paths:
        path = Path(path)
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def main(argv=None):
    paths = (argv if argv is not None else sys.argv[1:]) or [ROOT / name for name in DEFAULT_PATHS]
    count = 0
    for path in python_files(paths):
        for line, message in check_source(path.read_text(encoding="utf-8"), str(path)):
            print(f"{path}:{line}: {message}")
            count += 1
    print(f"check_qt6: {count} removed spelling(s)" if count else "check_qt6: no removed Qt 5 / QGIS 3 spellings")
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
