"""``ctstfm:train`` — Train CTSTFM on a time series of fine/coarse pairs.

A thin face on :func:`model_core.training.train_from_inputs` (parameters: :data:`model_core.options.TRAIN`).
"""

from qgis.core import QgsProcessingOutputFile, QgsProcessingOutputNumber, QgsProcessingOutputString

from model_core.options import TRAIN

from .base import CtstfmAlgorithm


class TrainAlgorithm(CtstfmAlgorithm):
    algorithm_id = "train"
    display_name = "Train CTSTFM"
    group_key = "training"
    operation = TRAIN
    REPORT_CSV = "REPORT_CSV"
    REPORT_PNG = "REPORT_PNG"
    VERDICT = "VERDICT"
    # Validation MAE of the kept model and of the two baselines on the same windows.
    RESULT_NUMBERS = (
        ("VALIDATION_MAE", "Validation MAE of the trained model"),
        ("NO_CHANGE_MAE", "Validation MAE of the unchanged fine image (same windows)"),
        ("FIRST_GUESS_MAE", "Validation MAE of the first guess (same windows)"),
        ("IMPROVEMENT_PERCENT", "MAE improvement on the unchanged fine image (%)"),
    )
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
        "ones train (with two or three dates, the bottom rows of every date are held out instead).\n\n"
        "Default recipe (made for a few dates and a CPU): fine-tune the embedded default model, cut down to "
        "your bands by name (band descriptions, or BANDS such as green,red,nir). It predicts a correction to a "
        "first guess; training starts from whichever validates best of the model, the unchanged fine image and "
        "the first guess fine(T0) + coarse(T1) - box33(fine(T0)), and only an epoch that beats that start "
        "replaces it, so the result is never worse on validation than where it started. MAX_MINUTES (default "
        "15) stops training with the best model so far. Patches of 64 px, Adam lr 2e-4, batch 4. 'Train from "
        "scratch' (advanced) is the paper's recipe (lr 1e-4, up to 150 epochs): it needs many dates and a "
        "GPU.\n\n"
        "Next to the model (e.g. cia.pt): cia_training.csv (the unchanged fine image and the first guess on the "
        "same validation windows, epoch 0 = the start, then one row per epoch), cia_training.png (curves with "
        "both baselines) and cia.pt.checkpoint.pt, saved after every epoch: tick 'Resume' to continue an "
        "interrupted run. The log ends with how much the model improves on the unchanged fine image (or a "
        "warning that it does not, with what to try). Cancelling writes the best model so far. A CUDA GPU is "
        "used with mixed precision when the device is auto or cuda."
    )

    def add_outputs(self):
        self.addOutput(QgsProcessingOutputFile(self.REPORT_CSV, self.tr("Training report (CSV, one row per epoch)")))
        self.addOutput(QgsProcessingOutputFile(self.REPORT_PNG, self.tr("Training curves (PNG)")))
        for name, label in self.RESULT_NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))
        self.addOutput(QgsProcessingOutputString(self.VERDICT, self.tr("How the model compares with the baselines")))

    def process(self, parameters, context, feedback, progress):
        from model_core.training import train_from_inputs

        kwargs, _ = self.arguments(parameters, context)
        result = train_from_inputs(**kwargs, progress=progress)
        verdict = result.message.splitlines()[-1]
        if result.cancelled or verdict.startswith("WARNING"):
            feedback.pushWarning(result.message)
        no_change = result.baselines.get("no_change", {}).get("mae")
        return {
            self.OUTPUT_MODEL: result.model_path,
            self.REPORT_CSV: result.report_csv,
            self.REPORT_PNG: result.report_png or "",
            "VALIDATION_MAE": result.best_metrics.get("mae"),
            "NO_CHANGE_MAE": no_change,
            "FIRST_GUESS_MAE": result.baselines.get("first_guess", {}).get("mae"),
            "IMPROVEMENT_PERCENT": 100.0 * (1.0 - result.best_metrics["mae"] / no_change) if no_change else None,
            self.VERDICT: verdict,
        }
