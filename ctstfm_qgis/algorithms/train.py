"""``ctstfm:train`` — Train CTSTFM on a time series of fine/coarse pairs."""

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from model_core.errors import CtstfmError

from .base import CtstfmAlgorithm
from .params import add_device_parameter, device_argument


HELP = """
Trains the CTSTFM network (Jiang & Shao, IEEE JSTARS 2024) on a time series of fine/coarse pairs (e.g. Landsat
30 m and MODIS 500 m, one pair per date) and writes a model file for *Spatiotemporal Fusion*.

## Inputs
- **Series**: either a manifest CSV with the columns date,fine,coarse (ISO dates, paths relative to the CSV
  allowed; an optional scene column trains on several scenes, each on its own grid), or the fine and the coarse
  layers of each date in the same order, with their dates typed as 2021-04-01,2021-05-03,... (left empty, each
  date is read from the file name: YYYY-MM-DD or YYYYMMDD).
- At least two dates; every fine image on the same grid with the same bands; each coarse image must cover its
  fine image (it is resampled onto the fine grid exactly as fusion does). With a scene column these rules hold
  within each scene, and every scene needs the same bands.
- **Model to fine-tune** (optional): start from an existing model instead of from scratch.

## How it trains
Each target date T1 is predicted from the coarse image at T1 and the fine image at the nearest other date(s)
(references). The latest share of the dates (validation fraction) validates, the earlier ones train; with two
or three dates the bottom rows of every date are held out instead. Random patches, flipped and rotated, skip
mostly-nodata areas; nodata is left out of the L1 loss. After every epoch the model is validated (MAE, RMSE,
PSNR, SSIM, SAM) and the best by validation MAE is written.

## Outputs
- **Trained model** (e.g. cia.pt), plus next to it cia_training.csv (one row per epoch), cia_training.png (the
  curves) and cia.pt.checkpoint.pt, saved after every epoch: tick *Resume* to continue an interrupted run.
  Cancelling writes the best model so far.
- **Training report** (HTML) in the Results Viewer: the curves, the best epoch, the baselines the training
  measured and the verdict.

## Typical values
The paper's settings: Adam with learning rate 1e-4, batch 4, patches of 256 pixels, 150 epochs. Training is slow
on a CPU (the plugin's own model took 45 minutes on 2 cores); fine-tuning it for a few epochs on patches of
96-128 pixels is the quick start. A CUDA or Apple GPU is used with mixed precision when the device is auto.

## Example
Six Landsat/MODIS dates of one area listed in series.csv, fine-tuning the plugin's model for 20 epochs:

$ qgis_process run ctstfm:train -- MANIFEST=series.csv INIT_MODEL=default_model.pt EPOCHS=20 PATCH_SIZE=128 OUTPUT_MODEL=my_area.pt OUTPUT_HTML=my_area_report.html
"""


class TrainAlgorithm(CtstfmAlgorithm):
    algorithm_id = "train"
    display_name = "Train CTSTFM"
    group_key = "training"
    help_text = HELP

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(
            QgsProcessingParameterFile(
                "MANIFEST",
                "Series manifest (CSV with columns date,fine,coarse, optionally scene)",
                behavior=QgsProcessingParameterFile.File,
                fileFilter="CSV files (*.csv *.CSV);;All files (*.*)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "FINE_LAYERS", "Fine images, one per date (instead of a manifest)", QgsProcessing.TypeRaster,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "COARSE_LAYERS", "Coarse images, in the same date order", QgsProcessing.TypeRaster, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "DATES",
                "Dates of the layers, comma-separated YYYY-MM-DD (empty: read from the file names)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                "INIT_MODEL",
                "Model to fine-tune (empty: train from scratch)",
                behavior=QgsProcessingParameterFile.File,
                extension="pt",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber("EPOCHS", "Epochs", defaultValue=150, minValue=1)
        )
        self.addParameter(
            QgsProcessingParameterNumber("BATCH_SIZE", "Batch size (patches)", defaultValue=4, minValue=1)
        )
        self.addParameter(
            QgsProcessingParameterNumber("PATCH_SIZE", "Patch size (pixels)", defaultValue=256, minValue=8)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "PATCHES_PER_EPOCH",
                "Patches per epoch (0: as many as tile the training dates, at most 1000)",
                defaultValue=0,
                minValue=0,
            )
        )
        add_device_parameter(self)
        self.addParameter(QgsProcessingParameterNumber("SEED", "Random seed", defaultValue=0, minValue=0))
        self.addParameter(
            QgsProcessingParameterBoolean(
                "RESUME", "Resume the interrupted training of this output model (from its checkpoint)",
                defaultValue=False,
            )
        )
        advanced = [
            QgsProcessingParameterNumber(
                "LEARNING_RATE",
                "Learning rate (Adam)",
                QgsProcessingParameterNumber.Double,
                defaultValue=1e-4,
                minValue=1e-8,
                maxValue=1.0,
            ),
            QgsProcessingParameterNumber(
                "VALIDATION_FRACTION",
                "Fraction of the dates (the latest) that validate",
                QgsProcessingParameterNumber.Double,
                defaultValue=0.2,
                minValue=0.01,
                maxValue=0.9,
            ),
            QgsProcessingParameterNumber(
                "REFERENCES", "Reference dates per target date (nearest first)", defaultValue=1, minValue=1
            ),
            QgsProcessingParameterNumber(
                "MAX_GAP_DAYS", "Farthest reference date in days (0: no limit)", defaultValue=0, minValue=0
            ),
            QgsProcessingParameterNumber(
                "WIDTH", "Network width N for a new model (0: the default, 20)", defaultValue=0, minValue=0
            ),
            QgsProcessingParameterBoolean(
                "PREDICT_RESIDUAL", "New model predicts fine(T0) + a correction (a deviation from the paper)",
                defaultValue=False,
            ),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            if parameter.name() == "LEARNING_RATE":
                parameter.setMetadata({"widget_wrapper": {"decimals": 6}})
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterFileDestination("OUTPUT_MODEL", "Trained model", fileFilter="CTSTFM model (*.pt)")
        )
        # An HTML file filter makes it a QgsProcessingOutputHtml: the dialog shows it in the Results Viewer.
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT_HTML", "Training report", "HTML files (*.html)", optional=True, createByDefault=True
            )
        )
        self.addOutput(QgsProcessingOutputFile("REPORT_CSV", "Training report (CSV, one row per epoch)"))
        self.addOutput(QgsProcessingOutputFile("REPORT_PNG", "Training curves (PNG)"))

    def process(self, parameters, context, feedback, progress):
        from model_core.training import series_from_layers, train

        manifest = self.parameterAsFile(parameters, "MANIFEST", context)
        fines = self.parameterAsLayerList(parameters, "FINE_LAYERS", context)
        coarses = self.parameterAsLayerList(parameters, "COARSE_LAYERS", context)
        dates = self.parameterAsString(parameters, "DATES", context)
        if manifest and (fines or coarses):
            raise CtstfmError("Give either a manifest or the fine and coarse layers, not both.")
        if manifest:
            series, source = manifest, None
        elif fines or coarses:
            fine_paths = [_layer_path(layer) for layer in fines]
            coarse_paths = [_layer_path(layer) for layer in coarses]
            series = series_from_layers(fine_paths, coarse_paths, dates, progress=progress)
            source = {"layers": {"fine": fine_paths, "coarse": coarse_paths, "dates": dates or "from file names"}}
        else:
            raise CtstfmError(
                "No series given: choose a manifest CSV (date,fine,coarse), or the fine and the coarse layers of "
                "each date."
            )
        output = self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context)
        report_html = (self.parameterAsFileOutput(parameters, "OUTPUT_HTML", context) or "").strip()
        if report_html and not report_html.lower().endswith((".html", ".htm")):
            raise CtstfmError(f"The training report '{report_html}' must be an HTML file (.html).")
        result = train(
            series,
            output,
            epochs=self.parameterAsInt(parameters, "EPOCHS", context),
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            patch_size=self.parameterAsInt(parameters, "PATCH_SIZE", context),
            patches_per_epoch=self.parameterAsInt(parameters, "PATCHES_PER_EPOCH", context) or None,
            lr=self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            references=self.parameterAsInt(parameters, "REFERENCES", context),
            max_gap_days=self.parameterAsInt(parameters, "MAX_GAP_DAYS", context) or None,
            validation_fraction=self.parameterAsDouble(parameters, "VALIDATION_FRACTION", context),
            init_model=self.parameterAsFile(parameters, "INIT_MODEL", context) or None,
            resume=self.parameterAsBool(parameters, "RESUME", context),
            device=device_argument(self, parameters, context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            width=self.parameterAsInt(parameters, "WIDTH", context) or None,
            predict_residual=self.parameterAsBool(parameters, "PREDICT_RESIDUAL", context),
            data_source=source,
            progress=progress,
        )
        if result.cancelled:
            feedback.pushWarning(result.message)
        outputs = {
            "OUTPUT_MODEL": result.model_path,
            "REPORT_CSV": result.report_csv,
            "REPORT_PNG": result.report_png or "",
        }
        if report_html:
            from model_core.training.report_html import verdict, write_report_html

            outputs["OUTPUT_HTML"] = write_report_html(result, report_html)
            feedback.pushInfo(verdict(result))
        return outputs


def _layer_path(layer):
    """The file behind a raster layer (GDAL sources only)."""
    if layer.providerType() != "gdal":
        raise CtstfmError(
            f"The layer '{layer.name()}' is not a raster file (provider {layer.providerType()}); "
            "save it as a GeoTIFF first."
        )
    return layer.source().split("|")[0]
