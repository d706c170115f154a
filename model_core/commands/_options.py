"""The command-line options several subcommands share, and what they turn into.

Light on imports on purpose (no torch, no GDAL): ``--help`` answers at once. The
choices repeat :data:`model_core.device.DEVICES`, :data:`model_core.raster_job.OUTPUT_TYPES`,
:data:`model_core.raster.RESAMPLING_METHODS` and :data:`model_core.raster.OUTPUT_FORMATS`,
which the core checks again.
"""

import json

DEVICES = ("auto", "cpu", "cuda")
RESAMPLING = ("bilinear", "cubic", "nearest", "average")
OUTPUT_TYPES = ("input", "float32")
FORMATS = ("GTiff", "COG")


def add_tiling_options(parser, default_overlap, overlap_help=None):
    """``--tile`` and ``--overlap`` (fine pixels)."""
    parser.add_argument("--tile", type=int, default=256, help="tile size in fine pixels (default 256)")
    parser.add_argument(
        "--overlap", type=int, default=default_overlap, help=overlap_help or f"tile overlap (default {default_overlap})"
    )


def add_device_option(parser):
    """``--device auto|cpu|cuda``."""
    parser.add_argument("--device", default="auto", choices=list(DEVICES), help="default auto")


def add_band_options(parser, fine_help, coarse_help):
    """``--fine-bands`` and ``--coarse-bands`` (1-based band lists)."""
    parser.add_argument("--fine-bands", default=None, help=fine_help)
    parser.add_argument("--coarse-bands", default=None, help=coarse_help)


def add_resampling_option(parser, help_text):
    """``--resampling``: how coarse images are put on the fine grid."""
    parser.add_argument("--resampling", default="bilinear", choices=list(RESAMPLING), help=help_text)


def add_output_options(parser):
    """``--output-type`` and ``--format`` of a fused raster."""
    parser.add_argument(
        "--output-type", default="input", choices=list(OUTPUT_TYPES),
        help="'input': the fine image's data type and scale (default); 'float32': reflectance",
    )
    parser.add_argument("--format", default="GTiff", choices=list(FORMATS), help="default GTiff")


def add_report_options(parser):
    """``--json`` and ``--quiet``."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def console_progress(args, label):
    """The progress bar of a command with :func:`add_report_options` (none with ``--quiet`` or ``--json``)."""
    from model_core.progress import ConsoleProgress

    return ConsoleProgress(label, quiet=args.quiet or args.json)


def fusion_kwargs(args):
    """The keyword arguments of :func:`add_tiling_options`, :func:`add_band_options`,
    :func:`add_resampling_option` and :func:`add_output_options` for the core's fusion functions."""
    return dict(
        tile=args.tile,
        overlap=args.overlap,
        fine_bands=args.fine_bands,
        coarse_bands=args.coarse_bands,
        resampling=args.resampling,
        output_type=args.output_type,
        output_format=args.format,
    )


# --------------------------------------------------------------------------- classical methods


def add_classical_options(parser, default_overlap, overlap_help=None):
    """The inputs and options both classical methods (``temporal-difference``, ``starfm``) share."""
    parser.add_argument("--fine", required=True, help="fine image at T0 (e.g. Landsat surface reflectance x10000)")
    parser.add_argument("--coarse0", required=True, help="coarse image at T0 (e.g. MODIS), any CRS")
    parser.add_argument("--coarse1", required=True, help="coarse image at T1 (the date to predict), any CRS")
    parser.add_argument("--out", required=True, help="output raster (GeoTIFF) on the fine image's grid")
    add_tiling_options(parser, default_overlap, overlap_help)
    add_band_options(
        parser,
        "fine bands to use, e.g. 1,2,3,4,5,6 (default all)",
        "the matching bands of both coarse images, in the fine bands' order, e.g. 3,4,1,2,6,7 "
        "(default the first ones)",
    )
    add_resampling_option(parser, "how the coarse images are put on the fine grid (default bilinear)")
    parser.add_argument(
        "--scale", type=float, default=1e-4, help="reflectance per DN of all inputs (default 0.0001; 1 for reflectance)"
    )
    parser.add_argument("--coarse-scale", type=float, default=None, help="the coarse images' scale, if it differs")
    add_output_options(parser)
    add_report_options(parser)


def classical_kwargs(args, label):
    """The keyword arguments of :func:`add_classical_options` for :mod:`model_core.classical_raster`."""
    return dict(
        **fusion_kwargs(args),
        scale=args.scale,
        coarse_scale=args.coarse_scale,
        progress=console_progress(args, label),
    )


def report_classical(args, result):
    """Print a :class:`~model_core.raster_job.RasterResult` (as JSON with ``--json``)."""
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"wrote {result.out_path} ({result.width} x {result.height} px, {result.bands} bands, {result.method}) "
            f"in {result.seconds:.1f} s"
        )
