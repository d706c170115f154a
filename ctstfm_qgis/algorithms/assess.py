"""``ctstfm:assess`` — Assess Fusion Accuracy.

A thin face on :func:`model_core.assess.assess` (numpy and GDAL only: no torch
needed; parameters: :data:`model_core.options.ASSESS`). Besides the files (error map, CSV table, HTML report shown in the
Results Viewer) it returns each metric's band mean as a number, so a graphical
model can use them.
"""

from qgis.core import QgsProcessingOutputNumber

from model_core.options import ASSESS

from .base import CtstfmAlgorithm
from .params import name_output_layer

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
    operation = ASSESS
    VALID_PIXELS = "VALID_PIXELS"

    def tags(self):
        return ["ctstfm", "accuracy", "assessment", "validation", "rmse", "ssim", "psnr", "sam", "ergas", "error"]

    def add_outputs(self):
        for name, _, description in NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(description)))
        self.addOutput(QgsProcessingOutputNumber(self.VALID_PIXELS, self.tr("Number of pixels assessed")))

    def process(self, parameters, context, feedback, progress):
        from model_core.assess import assess
        from model_core.metrics import format_table

        kwargs, layers = self.arguments(parameters, context)
        result = assess(**kwargs, progress=progress)
        feedback.pushInfo(format_table(result, result["band_names"]))
        feedback.pushInfo(self.tr("{} pixels assessed.").format(result["counts"]["pixels"]))
        outputs = {name: result[key]["mean"] for name, key, _ in NUMBERS}
        outputs[self.VALID_PIXELS] = result["counts"]["pixels"]
        error_map = kwargs["error_map_path"]
        if error_map:
            name_output_layer(context, error_map, f"Absolute error of {layers['predicted_path'].name()}")
            from ..styling import ErrorMapStyle, style_output

            style_output(context, error_map, ErrorMapStyle())
        for option in ("error_map_path", "table_csv", "html"):
            if kwargs[option]:
                outputs[ASSESS.option(option).qgis] = kwargs[option]
        return outputs
