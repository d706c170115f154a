"""One definition of every user option: the spec the CLI and the QGIS parameters are built from.

Each operation (fuse, train, assess, ...) is an :class:`Operation`: the core function it
calls and its :class:`Option` list, in dialog order. An option names the core function's
keyword argument (``name``) and carries its kind, default, choices, range, help, whether it
is advanced, and its two spellings: the CLI flag (``--tile``) and the QGIS parameter name
(``TILE_SIZE``). :mod:`model_core.commands._options` turns an operation into argparse
options and back into keyword arguments; :mod:`ctstfm_qgis.algorithms.params` does the same
for QGIS parameters. ``tests/test_options.py`` checks that both faces expose exactly the
spec and that every default here is the core function's default.

Light on imports on purpose (no torch, no GDAL, no qgis): ``--help`` answers at once, and
the core modules take their choice lists from here.

To add an option: add an :class:`Option` to the operation's list below (and the keyword
argument, with the same default, to the core function). Both faces pick it up.
"""

from dataclasses import dataclass, field

# --------------------------------------------------------------------------- choice lists

#: Devices, in the QGIS enum's order: saved models and scripts store the index
#: (0 = auto, 1 = cpu, 2 = cuda, 3 = mps), so new devices are only ever appended.
#: ``auto`` takes CUDA, then Apple's MPS, then the CPU (``model_core.device.choose_device``).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: How coarse images are put on the fine grid (the names users see; raster.py maps them to GDAL's).
RESAMPLINGS = ("bilinear", "cubic", "nearest", "average")
#: Output data type of a fused raster.
OUTPUT_TYPES = ("input", "float32")
OUTPUT_TYPE_LABELS = ("Same as the fine input (DN, its data type and nodata)", "Float32 reflectance")
#: CPU inference paths of the network (model_core/inference.py), in the QGIS enum's order (append only).
INFERENCE_PATHS = ("auto", "eager", "exact", "bf16", "compile", "compile-bf16", "int8")
INFERENCE_LABELS = (
    "Automatic: the fastest path that passed the accuracy check on this CPU",
    "Eager fp32: the network as trained",
    "Exact: inference-only algebra, same numbers up to rounding",
    "bfloat16 (CPUs with AVX-512 BF16 or AMX)",
    "Compiled fp32 (torch.compile; needs a C++ compiler)",
    "Compiled bfloat16",
    "int8 quantized convolutions (needs torchao and a C++ compiler)",
)
#: Output file layout of a raster.
OUTPUT_FORMATS = ("GTiff", "COG")
OUTPUT_FORMAT_LABELS = ("GeoTIFF (tiled, compressed)", "Cloud Optimized GeoTIFF")
#: Where training starts (model_core/training/start.py).
START_CHOICES = ("best", "model")

#: Kinds of option. Inputs and outputs are paths on the CLI and layers or file widgets in QGIS.
KINDS = (
    "int", "float", "bool", "str", "choice",
    "raster",          # an input raster: --x PATH / a raster layer (GDAL files only)
    "rasters",         # input rasters, one per date: --x A B C / a multiple-layer parameter
    "file",            # an input file: --x PATH / a file widget
    "files",           # input files: --x A --x B / one file widget (a list of one)
    "output_raster",   # a GeoTIFF to write: --x PATH / a raster destination
    "output_file",     # a file to write: --x PATH / a file destination
    "output_folder",   # a folder to write into: --x DIR / a folder destination
)


@dataclass(frozen=True)
class Option:
    """One user option of one operation.

    ``name``: the core function's keyword argument. ``default``: its default (``None``
    for an optional input or an automatic value). ``unset``: the value that stands for
    ``None`` on a face that needs a number (``0`` -> automatic); both faces show and
    accept it and hand ``None`` to the core. ``minimum``/``maximum``: the range both faces
    enforce. ``extension``/``file_filter``: of file options (QGIS widget; CLI metavar).
    ``qgis_create``: an optional output QGIS writes to a temporary file unless skipped.
    """

    name: str
    kind: str
    help: str
    default: object = None
    cli: str = ""
    qgis: str = ""
    choices: tuple = ()
    labels: tuple = ()
    advanced: bool = False
    required: bool = False
    unset: object = None
    minimum: float = None
    maximum: float = None
    decimals: int = None
    extension: str = ""
    file_filter: str = ""
    qgis_create: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"option {self.name}: default {self.default!r} is not one of {self.choices}")
        if not self.cli:
            object.__setattr__(self, "cli", "--" + self.name.replace("_", "-"))
        if not self.qgis:
            object.__setattr__(self, "qgis", self.name.upper())

    @property
    def shown_default(self):
        """The default as both faces show it (``unset`` for an automatic ``None``)."""
        return self.unset if self.default is None and self.unset is not None else self.default

    def to_core(self, value):
        """A face's value as the core's argument (``unset`` -> ``None``, empty text -> ``None``)."""
        if self.unset is not None and value == self.unset:
            return None
        if isinstance(value, str) and not value.strip() and self.kind != "choice":
            return None
        return value.strip() if isinstance(value, str) else value

    @property
    def what(self):
        """The option's help up to its first parenthesis, for messages ('fine image at T0')."""
        text = self.help.split(" (")[0].strip()
        return text[:1].lower() + text[1:]


@dataclass(frozen=True)
class Operation:
    """An operation both faces expose: ``function`` is ``"module:name"`` of the core function
    that takes every option as a keyword argument (plus ``progress``); ``forwards_to`` names the
    function it passes the options it does not name on to (their defaults are that one's)."""

    name: str
    function: str
    options: tuple = field(default_factory=tuple)
    forwards_to: str = ""

    def option(self, name):
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(f"{self.name} has no option {name!r}")

    def core_function(self):
        return _load(self.function)

    def forwarded_function(self):
        return _load(self.forwards_to)


def _load(dotted):
    """The object ``"module:name"`` names (imported only when called: the spec stays light)."""
    import importlib

    module, _, attribute = dotted.partition(":")
    return getattr(importlib.import_module(module), attribute)


# --------------------------------------------------------------------------- shared options


#: The smallest tile a user may ask for (the core's rule is model_core.tiling.check_tile_size).
MIN_TILE = 32


def tile_option():
    return Option(
        "tile", "int", f"Tile size (fine pixels, at least {MIN_TILE})", 256, cli="--tile", qgis="TILE_SIZE",
        minimum=MIN_TILE,
    )


def overlap_option(default, help="Tile overlap (fine pixels)", unset=None):
    return Option("overlap", "int", help, default, minimum=0, unset=unset)


def device_option():
    return Option("device", "choice", "Device", "auto", choices=DEVICES)


def band_options(fine_help, coarse_help):
    return (
        Option("fine_bands", "str", fine_help, advanced=True),
        Option("coarse_bands", "str", coarse_help, advanced=True),
    )


def output_options(resampling_help):
    """Resampling, output data type and file layout of a fused raster."""
    return (
        Option("resampling", "choice", resampling_help, "bilinear", choices=RESAMPLINGS, advanced=True),
        Option(
            "output_type", "choice", "Output data type ('input': the fine image's DN; 'float32': reflectance)",
            "input", choices=OUTPUT_TYPES, labels=OUTPUT_TYPE_LABELS, advanced=True,
        ),
        Option(
            "output_format", "choice", "Output file layout", "GTiff", cli="--format", choices=OUTPUT_FORMATS,
            labels=OUTPUT_FORMAT_LABELS, advanced=True,
        ),
    )


def model_option():
    return Option(
        "model_path", "file", "CTSTFM model file (.pt; empty: the plugin's own model)", cli="--model", qgis="MODEL",
        extension="pt",
    )


def matched_band_options():
    """The bands of fine and coarse images fed to a model, matched to its bands by name
    (``model_core.bands.match_bands``): fusion of one date and of a series."""
    return (
        Option(
            "bands", "str", "Names of the fine image's bands (e.g. green,red,nir; empty: from its band descriptions)",
            advanced=True,
        ),
        *band_options(
            "Fine image bands, in the model's order unless named (e.g. 1,2,3,4,5,6; empty: the first bands)",
            "Coarse image bands, in the fine bands' order (e.g. 3,4,1,2,6,7 for MODIS; empty: by name, else the "
            "first bands)",
        ),
    )


def cloud_mask_options(mask_band=True):
    """The images' clouds beyond nodata (model_core.cloud_masks): a band of the fine images (``mask_band``: where
    the images may hold bands the model does not use), and how to read the fine and the coarse images' masks."""
    band = Option(
        "mask_band", "int", "Cloud band of the fine images (cloud as the mask rule says; 0: none)", unset=0,
        minimum=0, advanced=True,
    )
    return (band,) * bool(mask_band) + (
        Option(
            "mask_rule", "str",
            "Cloud mask rule: which values of the fine images' masks are cloud: nonzero (a 0/1 mask), landsat-c2-qa, "
            "landsat-c1-qa, hls-fmask, sentinel2-scl, fmask, bits:N,..., values:N,... or field:L-H=N,...",
            "nonzero", advanced=True,
        ),
        Option(
            "coarse_mask_rule", "str",
            "Coarse cloud mask rule: which values of the coarse images' masks are cloud: nonzero, modis-state "
            "(MODIS state_1km), or any rule the mask rule takes", "nonzero", advanced=True,
        ),
    )


NODATA_THERE = "nodata in the output"


def mask_raster_options(*masks):
    """Optional cloud-mask rasters of single images, any grid (model_core.cloud_masks): ``(option name, the image it
    masks, the rule option that reads it, what its cloudy pixels become)`` each."""
    return tuple(
        Option(name, "raster", f"Cloud mask of the {image} (optional, any grid; cloud as the {rule} says; {effect})",
               advanced=True)
        for name, image, rule, effect in masks
    )


def model_scale_options(image):
    """The reflectance scales of the inputs of a model run (``image``: "image" or "images"), the model's by default."""
    return (
        Option(
            "scale", "float",
            f"Reflectance per DN of the fine {image} and the output (0: the model's, usually 0.0001; 1 for "
            "reflectance)",
            unset=0.0, minimum=0.0, advanced=True, decimals=6,
        ),
        Option(
            "coarse_scale", "float", f"Reflectance per DN of the coarse {image}, if it differs (0: the same)",
            unset=0.0, minimum=0.0, advanced=True, decimals=6,
        ),
    )


def batch_size_option():
    return Option(
        "batch_size", "int", "Tiles per batch (0: automatic; more only helps on a GPU)", unset=0, minimum=0,
        advanced=True,
    )


#: The similar-pixel filter's window by default (fine pixels; model_core.fusion.SimilarPixelFilter).
SIMILAR_WINDOW = 31


def similar_window_option():
    return Option(
        "similar_window", "int",
        "Similar-pixel filter of the predicted change: window (fine pixels, odd; 0: off)", SIMILAR_WINDOW,
        minimum=0, advanced=True,
    )


def fused_output(help="Fused fine image at T1"):
    return Option("out_path", "output_raster", help, cli="--out", qgis="OUTPUT", required=True)


# --------------------------------------------------------------------------- operations

FUSE = Operation(
    "fuse",
    "model_core.fusion:fuse",
    (
        Option("fine_path", "raster", "Fine image at T0 (e.g. Landsat)", cli="--fine", qgis="FINE", required=True),
        Option(
            "coarse_path", "raster", "Coarse image at T1 (e.g. MODIS), any CRS", cli="--coarse", qgis="COARSE",
            required=True,
        ),
        Option(
            "coarse_t0_path", "raster", "Coarse image at T0 (optional; used by three-image models), any CRS",
            cli="--coarse-t0", qgis="COARSE_T0",
        ),
        model_option(),
        tile_option(),
        overlap_option(32),
        device_option(),
        *matched_band_options(),
        *output_options("Resampling of the coarse image onto the fine grid"),
        batch_size_option(),
        *model_scale_options("image"),
        *mask_raster_options(
            ("fine_mask", "fine image", "mask rule", NODATA_THERE),
            ("coarse_mask", "coarse image at T1, e.g. MODIS state_1km", "coarse mask rule", NODATA_THERE),
            ("coarse_t0_mask", "coarse image at T0", "coarse mask rule", "a three-image model sees no change there"),
        ),
        *cloud_mask_options(),
        Option(
            "inference", "choice", "CPU inference path (auto: the fastest that passed the accuracy check here)",
            "auto", choices=INFERENCE_PATHS, labels=INFERENCE_LABELS, advanced=True,
        ),
        Option(
            "threads", "int",
            "CPU threads for the network (0: one per physical core, one left free in the QGIS window)",
            unset=0, minimum=0, advanced=True,
        ),
        similar_window_option(),
        Option(
            "mean_with_plugin", "bool",
            "Average a model fine-tuned by Train CTSTFM with the plugin's model (same mode and bands): their mean "
            "beat either alone on real Landsat pairs; off: your model alone", True, qgis="MEAN_WITH_PLUGIN_MODEL",
            advanced=True,
        ),
        fused_output(),
    ),
)


def classical_inputs():
    return (
        Option("fine_t0", "raster", "Fine image at T0 (e.g. Landsat)", cli="--fine", qgis="FINE", required=True),
        Option(
            "coarse_t0", "raster", "Coarse image at T0 (e.g. MODIS), any CRS", cli="--coarse0", qgis="COARSE_T0",
            required=True,
        ),
        Option(
            "coarse_t1", "raster", "Coarse image at T1 (e.g. MODIS), any CRS", cli="--coarse1", qgis="COARSE_T1",
            required=True,
        ),
    )


def classical_advanced():
    return (
        *band_options(
            "Fine image bands (e.g. 1,2,3,4,5,6; empty: all bands)",
            "Coarse image bands, in the fine bands' order (e.g. 3,4,1,2,6,7 for MODIS; empty: the first bands)",
        ),
        Option(
            "scale", "float", "Reflectance per DN (0.0001 for DN x 10000; 1 for reflectance)", 1e-4, minimum=0.0,
            advanced=True, decimals=6,
        ),
        Option(
            "coarse_scale", "float", "Reflectance per DN of the coarse images, if it differs (0: the same)",
            unset=0.0, minimum=0.0, advanced=True, decimals=6,
        ),
        *output_options("Resampling of the coarse images onto the fine grid"),
        *mask_raster_options(
            ("fine_mask", "fine image at T0", "mask rule", NODATA_THERE),
            ("coarse_t0_mask", "coarse image at T0, e.g. MODIS state_1km", "coarse mask rule", NODATA_THERE),
            ("coarse_t1_mask", "coarse image at T1", "coarse mask rule", NODATA_THERE),
        ),
        *cloud_mask_options(mask_band=False),
    )


TEMPORAL_DIFFERENCE = Operation(
    "temporal-difference",
    "model_core.classical_raster:temporal_difference_rasters",
    (*classical_inputs(), tile_option(), overlap_option(0), *classical_advanced(), fused_output()),
)

STARFM = Operation(
    "starfm",
    "model_core.classical_raster:starfm_rasters",
    (
        *classical_inputs(),
        Option("window", "int", "Moving window (fine pixels, odd)", 31, minimum=1),
        Option("classes", "float", "Number of classes (similarity tolerance 2 std / classes)", 40, minimum=0.001),
        tile_option(),
        overlap_option(None, "Tile overlap (fine pixels; 0: automatic, window - 1, seamless)", unset=0),
        device_option(),
        Option(
            "fine_uncertainty", "float", "Fine image uncertainty (reflectance)", 0.002, minimum=0.0, advanced=True,
            decimals=4,
        ),
        Option(
            "coarse_uncertainty", "float", "Coarse image uncertainty (reflectance)", 0.002, minimum=0.0,
            advanced=True, decimals=4,
        ),
        *classical_advanced(),
        fused_output(),
    ),
)

ASSESS = Operation(
    "assess",
    "model_core.assess:assess",
    (
        Option(
            "predicted_path", "raster", "Predicted fine image (e.g. fused)", cli="--pred", qgis="PREDICTED",
            required=True,
        ),
        Option(
            "reference_path", "raster", "Reference fine image of the same date (e.g. real Landsat)", cli="--ref",
            qgis="REFERENCE", required=True,
        ),
        Option("mask_path", "raster", "Mask (same grid; band 1 nonzero = assess)", cli="--mask", qgis="MASK"),
        Option(
            "bands", "str", "Bands to compare (e.g. 1,2,3 or predicted:reference pairs 1:3,2:4; empty: all)",
            advanced=True,
        ),
        Option(
            "scale", "float", "Reflectance per DN of integer rasters (float rasters are read as reflectance)", 1e-4,
            minimum=0.0, advanced=True, decimals=6,
        ),
        Option(
            "pred_scale", "float", "Reflectance per DN of the predicted image, if it differs (0: the scale)",
            unset=0.0, minimum=0.0, advanced=True, decimals=6,
        ),
        Option(
            "ref_scale", "float", "Reflectance per DN of the reference image, if it differs (0: the scale)",
            unset=0.0, minimum=0.0, advanced=True, decimals=6,
        ),
        Option(
            "ratio", "float", "Fine / coarse pixel size for ERGAS (30 m / 480 m = 0.0625)", 30.0 / 480.0,
            qgis="ERGAS_RATIO", minimum=0.0, advanced=True, decimals=4,
        ),
        Option(
            "error_map_path", "output_raster", "Error map (mean absolute error per pixel)", cli="--error-map",
            qgis="ERROR_MAP", qgis_create=True,
        ),
        Option(
            "table_csv", "output_file", "Metrics table (CSV)", cli="--csv", qgis="OUTPUT_TABLE",
            file_filter="CSV files (*.csv)", qgis_create=True,
        ),
        # An HTML file filter makes the QGIS output a QgsProcessingOutputHtml, listed in the Results Viewer.
        Option(
            "html", "output_file", "Accuracy report (HTML)", qgis="OUTPUT_HTML", file_filter="HTML files (*.html)",
            qgis_create=True,
        ),
    ),
)

TRAIN = Operation(
    "train",
    "model_core.training:train_from_inputs",
    (
        Option(
            "manifest", "files",
            "Series manifest (CSV with columns date,fine,coarse, optionally scene, mask and coarse_mask; paths "
            "relative to the CSV)",
            file_filter="CSV files (*.csv *.CSV);;All files (*.*)",
        ),
        Option("fine", "rasters", "Fine images, one per date (instead of a manifest)", qgis="FINE_LAYERS"),
        Option("coarse", "rasters", "Coarse images, in the same date order", qgis="COARSE_LAYERS"),
        Option("dates", "str", "Dates of the images, comma-separated YYYY-MM-DD (empty: read from the file names)"),
        Option(
            "bands", "str",
            "Band names of the fine images, comma-separated, e.g. green,red,nir (empty: their band descriptions); "
            "the model to fine-tune is cut down to them",
        ),
        Option(
            "use_coarse_t0", "bool",
            "Three-image mode: also use each reference date's coarse image (first guess fine T0 + coarse T1 - "
            "coarse T0; fusion then takes COARSE_T0); off: fine T0 and coarse T1 only",
            True, qgis="USE_COARSE_T0",
        ),
        Option(
            "max_minutes", "float",
            "Time budget in minutes: training stops there with the best model so far (0: no limit)", 15.0,
            minimum=0.0, decimals=1,
        ),
        Option(
            "patience", "int",
            "Stop after this many epochs without a new best (an epoch must validate 1 % better; 0: never)", 5,
            minimum=0, advanced=True,
        ),
        Option(
            "init_model", "file", "Model to fine-tune (empty: the embedded default model, cut down to the bands)",
            extension="pt",
        ),
        Option("epochs", "int", "Epochs at most (total)", 150, minimum=1),
        Option("batch_size", "int", "Batch size (patches)", 4, minimum=1),
        Option("patch_size", "int", "Patch size (pixels; 64 suits a CPU)", 64, minimum=8),
        Option(
            "patches_per_epoch", "int", "Patches per epoch (0: as many as tile the training dates, at most 1000)",
            unset=0, minimum=0,
        ),
        device_option(),
        Option("seed", "int", "Random seed", 0, minimum=0),
        Option("resume", "bool", "Resume the interrupted training of this output model (from its checkpoint)", False),
        Option(
            "lr", "float", "Learning rate (Adam; the paper's 1e-4 from scratch)", 2e-4, qgis="LEARNING_RATE",
            minimum=1e-8, maximum=1.0, advanced=True, decimals=6,
        ),
        Option(
            "from_scratch", "bool",
            "Train a new network from scratch, as in the paper (instead of fine-tuning; needs many dates and a GPU; "
            "the paper's two-image network with the coarse image at T0 switch off)",
            False, advanced=True,
        ),
        Option(
            "start", "choice",
            "Starting point: best = the best on validation of the model and the first guess, with and without the "
            "fitted change gain (without a fitted gain, the unchanged fine image too; residual models; with fewer "
            "than four dates a reference must be 10 % better than a pretrained model); model = the model as it is",
            "best", choices=START_CHOICES, advanced=True,
        ),
        Option(
            "fit_change_gain", "bool",
            "Fit the first guess's coarse-change gain per band on the training dates (the fine change is usually "
            "smaller than the coarse one; with the coarse image at T0, a fitted mix of C1 - C0 and C1 - box(F0)), and "
            "the box the coarse change is averaged over first (none, or 5 to 17 fine pixels where that fits the "
            "training dates better); off: the coarse change C1 - C0 (or C1 - box(F0)) at face value",
            True, advanced=True,
        ),
        Option(
            "coarse_shift", "float",
            "Augmentation: shift each training patch's coarse images by a random offset of up to this many coarse "
            "pixels, each date its own, so the network does not learn the training dates' misregistration (0: off)",
            0.3, minimum=0.0, maximum=1.0, advanced=True, decimals=2,
        ),
        Option(
            "keep_out", "str",
            "Fine dates to keep out of training, comma-separated YYYY-MM-DD (e.g. one between two others: Fuse Time "
            "Series then checks the model on it against the plugin's)",
            advanced=True,
        ),
        Option(
            "validation_fraction", "float", "Fraction of the dates (the latest) that validate", 0.2, minimum=0.01,
            maximum=0.9, advanced=True, decimals=3,
        ),
        Option("references", "int", "Reference dates per target date (nearest first)", 1, minimum=1, advanced=True),
        Option(
            "max_gap_days", "int", "Farthest reference date in days (0: no limit)", unset=0, minimum=0,
            advanced=True,
        ),
        Option(
            "width", "int", "Network width N for a new model (0: the default, 20)", unset=0, minimum=0,
            advanced=True,
        ),
        Option(
            "predict_residual", "bool", "New model predicts fine(T0) + a correction (a deviation from the paper)",
            False, advanced=True,
        ),
        Option(
            "residual_blur", "int",
            "With a residual: first guess fine(T0) + coarse(T1) - box blur of fine(T0) over this many pixels "
            "(e.g. 33 for 30 m / 480 m; 0: none)",
            0, minimum=0, advanced=True,
        ),
        Option(
            "scale", "float", "Reflectance per DN (0: the model's to fine-tune, else 0.0001)", unset=0.0,
            minimum=0.0, advanced=True, decimals=6,
        ),
        # Training reads every band of its fine images, so clouds come from the manifest's mask columns only.
        *cloud_mask_options(mask_band=False),
        Option(
            "out_model", "output_file", "Trained model (.pt)", cli="--out", qgis="OUTPUT_MODEL", required=True,
            extension="pt", file_filter="CTSTFM model (*.pt)",
        ),
        # An HTML file filter makes the QGIS output a QgsProcessingOutputHtml, listed in the Results Viewer.
        Option(
            "report_html", "output_file", "Training report (HTML: verdict, best epoch, curves)", cli="--report-html",
            qgis="OUTPUT_HTML", file_filter="HTML files (*.html)", qgis_create=True,
        ),
    ),
    forwards_to="model_core.training:train",
)

#: Target dates of a time series (model_core.series.TARGET_MODES), in the QGIS enum's order.
SERIES_TARGETS = ("missing", "all", "step")
SERIES_TARGET_LABELS = (
    "Coarse dates without a fine image",
    "All coarse dates (dates with a fine image are predicted from the others)",
    "A regular step (start, end, every N days), each with the nearest coarse image",
)

FUSE_SERIES = Operation(
    "fuse-series",
    "model_core.series:fuse_series_from_inputs",
    (
        Option(
            "manifest", "file",
            "Series manifest (CSV date,fine,coarse[,mask,coarse_mask]; either image may be empty; paths relative "
            "to the CSV)",
            file_filter="CSV files (*.csv *.CSV);;All files (*.*)",
        ),
        Option("fine", "rasters", "Fine images, any dates (instead of a manifest)", qgis="FINE_LAYERS"),
        Option("coarse", "rasters", "Coarse images, any dates (instead of a manifest)", qgis="COARSE_LAYERS"),
        Option(
            "dates", "str",
            "Dates of the fine images, then of the coarse images, comma-separated YYYY-MM-DD (empty: read from the "
            "file names)",
        ),
        model_option(),
        Option(
            "targets", "choice", "Target dates", "missing", choices=SERIES_TARGETS, labels=SERIES_TARGET_LABELS,
        ),
        Option("start", "str", "Regular step: first date (YYYY-MM-DD; empty: the first coarse date)"),
        Option("end", "str", "Regular step: last date (YYYY-MM-DD; empty: the last coarse date)"),
        Option("every_days", "int", "Regular step: every N days (0: no step)", unset=0, minimum=0),
        Option(
            "references", "int", "References per date (2: the nearest fine dates before and after, blended; "
            "1: the nearest)", 2, minimum=1, maximum=2,
        ),
        Option("max_gap_days", "int", "Farthest usable fine date in days (0: any)", unset=0, minimum=0),
        Option(
            "coarse_days", "int",
            "Where a date's coarse image is cloudy or nodata, take the nearest coarse image within this many days "
            "that is clear there (0: only its own)", 3, minimum=0, advanced=True,
        ),
        tile_option(),
        overlap_option(32),
        device_option(),
        *matched_band_options(),
        *cloud_mask_options(),
        *output_options("Resampling of the coarse images onto the fine grid"),
        batch_size_option(),
        *model_scale_options("images"),
        Option(
            "interpolate_gaps", "bool",
            "Interpolate the fine dates in time where no coarse image near a date is clear (off: nodata there)",
            True, advanced=True,
        ),
        Option(
            "fit_between", "bool",
            "Fit the first guess and the share of change kept for dates between fine dates on the series' own "
            "fine dates (each left out in turn)",
            True, advanced=True,
        ),
        Option(
            "choose_model", "bool",
            "Check a model of yours against the plugin's and their mean on fine dates left out (the best fills the "
            "dates between fine dates)",
            True, advanced=True,
        ),
        similar_window_option(),
        Option(
            "quality", "bool",
            "Write a quality layer per date (quality_YYYY-MM-DD.tif: where one reference, another day's coarse image, "
            "time interpolation or a farther fine date made a pixel, and the days to the fine date used)",
            True, advanced=True,
        ),
        Option("quicklook", "bool", "Write a quicklook PNG (thumbnails and mean NDVI per date)", False,
               advanced=True),
        Option("out_folder", "output_folder", "Output folder", cli="--out", qgis="OUTPUT_FOLDER", required=True),
    ),
    forwards_to="model_core.series:fuse_series",
)

OPERATIONS = {op.name: op for op in (FUSE, FUSE_SERIES, TRAIN, ASSESS, TEMPORAL_DIFFERENCE, STARFM)}
