"""``ctstfm:fuse`` — Spatiotemporal Fusion."""

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import CtstfmAlgorithm

DEVICES = ["auto", "cpu", "cuda"]


class FuseAlgorithm(CtstfmAlgorithm):
    algorithm_id = "fuse"
    display_name = "Spatiotemporal Fusion"
    group_key = "fusion"
    help_text = (
        "Predicts the fine image (e.g. Landsat, 30 m) at date T1 from the coarse image "
        "(e.g. MODIS, 500 m) at T1 and a fine image at another date T0, with the CTSTFM "
        "network (Jiang & Shao, IEEE JSTARS 2024)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("FINE", "Fine image at T0"))
        self.addParameter(QgsProcessingParameterRasterLayer("COARSE", "Coarse image at T1"))
        self.addParameter(
            QgsProcessingParameterFile("MODEL", "CTSTFM model file (.pt)", extension="pt")
        )
        self.addParameter(
            QgsProcessingParameterNumber("TILE_SIZE", "Tile size (pixels)", defaultValue=256, minValue=32)
        )
        self.addParameter(
            QgsProcessingParameterNumber("OVERLAP", "Tile overlap (pixels)", defaultValue=32, minValue=0)
        )
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Fused fine image at T1"))

    def run(self, parameters, context, feedback, progress):
        from model_core.fusion import fuse

        fine = self.parameterAsRasterLayer(parameters, "FINE", context)
        coarse = self.parameterAsRasterLayer(parameters, "COARSE", context)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        fuse(
            fine.source(),
            coarse.source(),
            self.parameterAsFile(parameters, "MODEL", context),
            output,
            tile=self.parameterAsInt(parameters, "TILE_SIZE", context),
            overlap=self.parameterAsInt(parameters, "OVERLAP", context),
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            progress=progress,
        )
        return {"OUTPUT": output}
