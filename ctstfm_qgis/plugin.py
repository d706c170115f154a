"""The plugin object: registers the Processing provider, nothing more.

qgis_process calls ``classFactory(None)`` and then ``initProcessing()``; QGIS
desktop calls ``initGui()``. Neither path touches ``iface``: every feature is a
Processing algorithm, so it works the same in the Toolbox, the Modeler and on
the command line.
"""

from qgis.core import QgsApplication

from .provider import CtstfmProvider


class CtstfmPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS naming)
        if self.provider is None:
            self.provider = CtstfmProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
