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


class TrainAlgorithm(CtstfmAlgorithm):
    algorithm_id = "train"
    display_name = "Train CTSTFM"
    group_key = "training"
    parameter_names = {"lr": "LEARNING_RATE", "out_model": "OUTPUT_MODEL"}
    help_text = (
        "Trains the CTSTFM network (Jiang & Shao, IEEE JSTARS 2024) on a time series of fine/coarse pairs "
        "(e.g. Landsat 30 m and MODIS 500 m, one pair per date) and writes a model file for "
        "'Spatiotemporal Fusion'.\n\n"
        "Data: either a manifest CSV with the columns date,fine,coarse (ISO dates, paths relative to the CSV "
        "allowed; an optional scene column trains on several scenes, each on its own grid), or the fine and "
        "the coarse layers of each date, in the same order, with their dates typed as 2021-04-01,2021-05-03,... "
        "(left empty, each date is read from the file name: YYYY-MM-DD or YYYYMMDD). At least two dates; every "
        "fine image on the same grid with the same bands; each coarse image must cover its fine image (it is "
        "resampled onto the fine grid exactly as fusion does). With a scene column these rules hold within each "
        "scene, and every scene needs the same bands.\n\n"
        "Each target date T1 is predicted from the coarse image at T1 and the fine image at the nearest "
        "other date(s) (REFERENCES). The latest VALIDATION_FRACTION of the dates validates, the earlier "
        "ones train (with two or three dates, the bottom rows of every date are held out instead). Random "
        "patches, flipped and rotated, skip mostly-nodata areas; nodata is left out of the L1 loss. Adam "
        "with the paper's settings (learning rate 1e-4, batch 4, 150 epochs); after every epoch the model is "
        "validated (MAE, RMSE, PSNR, SSIM, SAM) and the best by validation MAE is written.\n\n"
        "Next to the model (e.g. cia.pt): cia_training.csv (one row per epoch), cia_training.png (curves) and "
        "cia.pt.checkpoint.pt, saved after every epoch: tick 'Resume' to continue an interrupted run. "
        "Cancelling writes the best model so far. Training is slow on a CPU; a CUDA GPU is used with mixed "
        "precision when the device is auto or cuda."
    )

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
        return {
            "OUTPUT_MODEL": result.model_path,
            "REPORT_CSV": result.report_csv,
            "REPORT_PNG": result.report_png or "",
        }


def _layer_path(layer):
    """The file behind a raster layer (GDAL sources only)."""
    if layer.providerType() != "gdal":
        raise CtstfmError(
            f"The layer '{layer.name()}' is not a raster file (provider {layer.providerType()}); "
            "save it as a GeoTIFF first."
        )
    return layer.source().split("|")[0]
