"""``python -m model_core temporal-difference``: fine T1 = fine T0 + (coarse T1 - coarse T0).

    python -m model_core temporal-difference --fine landsat_t0.tif --coarse0 modis_t0.tif --coarse1 modis_t1.tif \\
        --out td.tif [--tile 256 --overlap 0 --fine-bands 1,2,3,4,5,6 --coarse-bands 3,4,1,2,6,7 \\
        --resampling bilinear --scale 0.0001 --output-type input --format GTiff --json]
"""

import json


def add_common_arguments(parser, default_overlap, overlap_help=None):
    """The inputs and options both classical methods share (also used by ``starfm``)."""
    parser.add_argument("--fine", required=True, help="fine image at T0 (e.g. Landsat surface reflectance x10000)")
    parser.add_argument("--coarse0", required=True, help="coarse image at T0 (e.g. MODIS), any CRS")
    parser.add_argument("--coarse1", required=True, help="coarse image at T1 (the date to predict), any CRS")
    parser.add_argument("--out", required=True, help="output raster (GeoTIFF) on the fine image's grid")
    parser.add_argument("--tile", type=int, default=256, help="tile size in fine pixels (default 256)")
    parser.add_argument(
        "--overlap", type=int, default=default_overlap, help=overlap_help or f"tile overlap (default {default_overlap})"
    )
    parser.add_argument("--fine-bands", default=None, help="fine bands to use, e.g. 1,2,3,4,5,6 (default all)")
    parser.add_argument(
        "--coarse-bands", default=None,
        help="the matching bands of both coarse images, in the fine bands' order, e.g. 3,4,1,2,6,7 "
        "(default the first ones)",
    )
    parser.add_argument(
        "--resampling", default="bilinear", choices=["bilinear", "cubic", "nearest", "average"],
        help="how the coarse images are put on the fine grid (default bilinear)",
    )
    parser.add_argument(
        "--scale", type=float, default=1e-4, help="reflectance per DN of all inputs (default 0.0001; 1 for reflectance)"
    )
    parser.add_argument("--coarse-scale", type=float, default=None, help="the coarse images' scale, if it differs")
    parser.add_argument(
        "--output-type", default="input", choices=["input", "float32"],
        help="'input': the fine image's data type and scale (default); 'float32': reflectance",
    )
    parser.add_argument("--format", default="GTiff", choices=["GTiff", "COG"], help="default GTiff")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def common_kwargs(args, label):
    from model_core.progress import ConsoleProgress

    return dict(
        tile=args.tile,
        overlap=args.overlap,
        fine_bands=args.fine_bands,
        coarse_bands=args.coarse_bands,
        scale=args.scale,
        coarse_scale=args.coarse_scale,
        resampling=args.resampling,
        output_type=args.output_type,
        output_format=args.format,
        progress=ConsoleProgress(label, quiet=args.quiet or args.json),
    )


def report(args, result):
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"wrote {result.out_path} ({result.width} x {result.height} px, {result.bands} bands, {result.method}) "
            f"in {result.seconds:.1f} s"
        )


def configure(parser):
    add_common_arguments(parser, default_overlap=0)


def run(args):
    from model_core.classical_raster import temporal_difference_rasters

    result = temporal_difference_rasters(
        args.fine, args.coarse0, args.coarse1, args.out, **common_kwargs(args, "temporal-difference")
    )
    report(args, result)
    return 0
