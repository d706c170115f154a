"""The ``ctstfm`` Processing provider.

Algorithms are imported here without torch: each imports torch only when it
runs, so a QGIS whose Python lacks PyTorch still lists them and explains what to
install when one is run. Its settings are declared in ``load()`` (see :mod:`.settings`).
"""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from model_core.paths import RESOURCES_DIR

from . import settings
from .algorithms import all_algorithms

ICON_PATH = str(RESOURCES_DIR / "icon.svg")


class CtstfmProvider(QgsProcessingProvider):
    def id(self):
        return "ctstfm"

    def name(self):
        return "CTSTFM spatiotemporal fusion"

    def longName(self):  # noqa: N802
        return "CTSTFM: CNN-Transformer spatiotemporal fusion of fine and coarse satellite images"

    def icon(self):
        return QIcon(ICON_PATH)

    def svgIconPath(self):  # noqa: N802
        return ICON_PATH

    def load(self):
        """Declare the provider's settings (Settings > Options > Processing > Providers), then the algorithms."""
        settings.add_settings(self.name(), self.icon())
        self.refreshAlgorithms()
        return True

    def unload(self):
        settings.remove_settings()

    def isActive(self):  # noqa: N802
        return settings.is_active()

    def setActive(self, active):  # noqa: N802
        settings.set_active(active)

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in all_algorithms():
            self.addAlgorithm(algorithm)
