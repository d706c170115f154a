"""``ctstfm:assess`` — Assess Fusion Accuracy.

A thin face on :func:`model_core.assess.assess` (numpy and GDAL only: no torch
needed). Besides the files (error map, CSV table, HTML report shown in the
Results Viewer) it returns each metric's band mean as a number, so a graphical
model can use them.
"""

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import CtstfmAlgorithm
from .params import add_advanced, name_output_layer, raster_layer_source

#: (output name, metric key, description) of the numeric outputs.
NUMBERS = [
    ("MAE", "mae", "Mean absolute error (reflectance, mean over bands)"),
    ("RMSE", "rmse", "Root mean square error (reflectance, mean over bands)"),
    ("PSNR", "psnr", "PSNR in dB (mean over bands)"),
    ("SSIM", "ssim", "SSIM (mean over bands)"),
    ("SAM", "sam", "Spectral angle in degrees (mean over pixels)"),
    ("ERGAS", "ergas", "ERGAS"),
    ("CC", "cc", "Correlation coefficient (mean over bands)"),
]

HELP = """
Measures how close a **predicted fine image** (e.g. the output of *Spatiotemporal Fusion*, STARFM or the
temporal difference) is to the **reference**: the real fine image (e.g. Landsat) of the same date, which the
prediction did not see.

## Inputs
- **Predicted** and **reference** images on the **same grid** (CRS, extent, pixel size) with the same bands
  in the same order; nothing is resampled. A fused image has the grid of its fine input, so use a fine T0
  image on the reference's grid (or warp the prediction with Raster > Projections > Warp).
- **Mask** (optional, same grid): only pixels where its first band is nonzero are assessed, e.g. a
  cloud-free or a changed-area mask. Pixels that are nodata in either image are always left out.
- Reflectance is DN × **scale** (0.0001 by default) for integer rasters; float rasters (such as a float32
  fusion output) are read as reflectance. Under Advanced: bands as `1,2,3` or as predicted:reference pairs
  `1:3,2:4`, and the fine/coarse pixel-size ratio for ERGAS (30/480 = 0.0625).

## Outputs
- **Error map**: per-pixel absolute error averaged over the bands, in reflectance (float32), on the
  reference grid, loaded with a colour ramp (light yellow = small error, dark red = large) and its legend;
  nodata where a pixel was not assessed. It shows *where* the prediction fails.
- **Metrics table** (CSV): MAE, RMSE, PSNR, SSIM and CC per band, and a mean row that also holds SAM and
  ERGAS.
- **HTML report**: the inputs, the table and the definitions, shown in the Results Viewer.
- The band means of MAE, RMSE, PSNR, SSIM, SAM, ERGAS and CC as numbers, for the graphical modeler.

## Typical values
MAE and RMSE are in reflectance (0.01 = 100 DN), PSNR and SSIM use a data range of 1, SAM is in degrees (see
docs/metrics.md). Lower is better for MAE, RMSE, SAM and ERGAS; higher for PSNR, SSIM and CC. For scale: on the paper's CIA test set
(Landsat/MODIS, six bands) CTSTFM reached MAE 0.0149, PSNR 34.1 dB, SSIM 0.880 and SAM 8.2°, STARFM MAE 0.0177.

## Example
$ qgis_process run ctstfm:assess -- PREDICTED=fused_2022-01-17.tif REFERENCE=landsat_2022-01-17.tif ERROR_MAP=error.tif OUTPUT_HTML=report.html
"""


class AssessAlgorithm(CtstfmAlgorithm):
    algorithm_id = "assess"
    display_name = "Assess Fusion Accuracy"
    group_key = "assessment"
    help_text = HELP
    needs_torch = False

    def tags(self):
        return ["ctstfm", "accuracy", "assessment", "validation", "rmse", "ssim", "psnr", "sam", "ergas", "error"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("PREDICTED", "Predicted fine image (e.g. fused)"))
        self.addParameter(
            QgsProcessingParameterRasterLayer("REFERENCE", "Reference fine image of the same date (e.g. real Landsat)")
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer("MASK", "Mask (same grid; nonzero = assess)", optional=True)
        )
        advanced = [
            QgsProcessingParameterString(
                "BANDS",
                "Bands to compare (e.g. 1,2,3 or predicted:reference pairs 1:3,2:4; empty: all)",
                defaultValue="",
                optional=True,
            ),
            QgsProcessingParameterNumber(
                "SCALE", "Reflectance per DN of integer rasters (float rasters are read as reflectance)",
                QgsProcessingParameterNumber.Double, defaultValue=0.0001, minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                "ERGAS_RATIO", "Fine / coarse pixel size for ERGAS (30 m / 480 m = 0.0625)",
                QgsProcessingParameterNumber.Double, defaultValue=0.0625, minValue=0.0,
            ),
        ]
        add_advanced(self, advanced)
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                "ERROR_MAP", "Error map (mean absolute error per pixel)", optional=True, createByDefault=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT_TABLE", "Metrics table", "CSV files (*.csv)", optional=True, createByDefault=True
            )
        )
        # An HTML file filter makes the output a QgsProcessingOutputHtml: the dialog lists it in the
        # Results Viewer.
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT_HTML", "Accuracy report", "HTML files (*.html)", optional=True, createByDefault=True
            )
        )
        for name, _, description in NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(name, description))
        self.addOutput(QgsProcessingOutputNumber("VALID_PIXELS", "Number of pixels assessed"))

    def _destination(self, parameters, name, context, kind):
        if kind == "raster":
            path = self.parameterAsOutputLayer(parameters, name, context)
        else:
            path = self.parameterAsFileOutput(parameters, name, context)
        return (path or "").strip() or None

    def process(self, parameters, context, feedback, progress):
        from model_core.assess import assess

        predicted, pred_layer = raster_layer_source(self, parameters, "PREDICTED", context, "predicted image")
        reference, _ = raster_layer_source(self, parameters, "REFERENCE", context, "reference image")
        mask, _ = raster_layer_source(self, parameters, "MASK", context, "mask", optional=True)
        error_map = self._destination(parameters, "ERROR_MAP", context, "raster")
        table = self._destination(parameters, "OUTPUT_TABLE", context, "file")
        html = self._destination(parameters, "OUTPUT_HTML", context, "file")
        if error_map and not error_map.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException(f"The error map '{error_map}' must be a GeoTIFF file (.tif).")
        scale = self.parameterAsDouble(parameters, "SCALE", context)
        ratio = self.parameterAsDouble(parameters, "ERGAS_RATIO", context)
        if not scale > 0 or not ratio > 0:
            raise QgsProcessingException(
                "The reflectance scale and the ERGAS ratio must be positive numbers (e.g. 0.0001 and 0.0625)."
            )
        result = assess(
            predicted,
            reference,
            mask_path=mask,
            bands=(self.parameterAsString(parameters, "BANDS", context) or "").strip() or None,
            scale=scale,
            ratio=ratio,
            error_map_path=error_map,
            table_csv=table,
            html=html,
            progress=progress,
        )
        from model_core.metrics import format_table

        feedback.pushInfo(format_table(result, result["band_names"]))
        feedback.pushInfo(f"{result['counts']['pixels']} pixels assessed.")
        outputs = {name: result[key]["mean"] for name, key, _ in NUMBERS}
        outputs["VALID_PIXELS"] = result["counts"]["pixels"]
        if error_map:
            outputs["ERROR_MAP"] = error_map
            name_output_layer(context, error_map, f"Absolute error of {pred_layer.name()}")
            from ..styling import ErrorMapStyle, style_output

            style_output(context, error_map, ErrorMapStyle())
        if table:
            outputs["OUTPUT_TABLE"] = table
        if html:
            outputs["OUTPUT_HTML"] = html
        return outputs
