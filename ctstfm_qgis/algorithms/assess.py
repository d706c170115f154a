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
<p>Measures how close a <b>predicted fine image</b> (e.g. the output of <i>Spatiotemporal Fusion</i>, STARFM or
the temporal difference) is to the <b>reference</b>: the real fine image (e.g. Landsat) of the same date, which
the prediction did not see.</p>
<h3>Inputs</h3>
<ul>
<li><b>Predicted</b> and <b>reference</b> images must be on the <b>same grid</b> (CRS, extent, pixel size) with
the same bands in the same order; nothing is resampled. A fused image always has the grid of its fine input, so
use a fine T0 image on the reference's grid (or warp the prediction with Raster &gt; Projections &gt; Warp).</li>
<li><b>Mask</b> (optional, same grid): only pixels where its first band is nonzero are assessed, e.g. a
cloud-free or a changed-area mask. Pixels that are nodata in either image are always left out.</li>
<li>Reflectance is DN &times; <b>scale</b> (0.0001 by default) for integer rasters; float rasters (such as a
float32 fusion output) are read as reflectance. Under Advanced: choose bands as <tt>1,2,3</tt> or as
predicted:reference pairs <tt>1:3,2:4</tt>, and the fine/coarse pixel-size ratio for ERGAS (30/480 =
0.0625).</li>
</ul>
<h3>Outputs</h3>
<ul>
<li><b>Error map</b>: per-pixel absolute error averaged over the bands, in reflectance (float32), on the
reference grid; nodata where a pixel was not assessed. It shows <i>where</i> the prediction fails.</li>
<li><b>Metrics table</b> (CSV): MAE, RMSE, PSNR, SSIM and CC per band, and a mean row that also holds SAM and
ERGAS.</li>
<li><b>HTML report</b>: the inputs, the table and the definitions (open it from the Results Viewer).</li>
<li>The band means of MAE, RMSE, PSNR, SSIM, SAM, ERGAS and CC as numbers, for the graphical modeler.</li>
</ul>
<p>MAE and RMSE are in reflectance (0.01 = 100 DN), PSNR and SSIM use a data range of 1, SAM is in degrees;
the exact conventions are in docs/metrics.md. Lower is better for MAE, RMSE, SAM and ERGAS; higher for PSNR,
SSIM and CC.</p>
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
        for option in ("error_map_path", "table_csv", "html"):
            if kwargs[option]:
                outputs[ASSESS.option(option).qgis] = kwargs[option]
        return outputs
