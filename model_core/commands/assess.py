"""``python -m model_core assess``: accuracy of a predicted fine image against a reference.

    python -m model_core assess --pred fused.tif --ref landsat_t1.tif [--mask mask.tif] \\
        [--error-map error.tif --csv metrics.csv --html report.html --bands 1:1,2:2 --scale 0.0001 --json]
"""

import json

from model_core.commands._options import add_report_options, console_progress


def configure(parser):
    parser.add_argument("--pred", required=True, help="predicted fine image (e.g. a fused image)")
    parser.add_argument("--ref", required=True, help="reference fine image of the same date, on the same grid")
    parser.add_argument("--mask", default=None, help="optional mask on the same grid: band 1 nonzero = assess")
    parser.add_argument("--error-map", default=None, help="write the per-pixel mean absolute error (GeoTIFF)")
    parser.add_argument("--csv", default=None, help="write the metrics table (CSV)")
    parser.add_argument("--html", default=None, help="write an HTML report")
    parser.add_argument(
        "--bands", default=None,
        help="bands to compare: 1,2,3 (same in both) or predicted:reference pairs 1:3,2:4 (default all)",
    )
    parser.add_argument(
        "--scale", type=float, default=1e-4,
        help="reflectance per DN of integer rasters (default 0.0001); float rasters are read as reflectance",
    )
    parser.add_argument("--pred-scale", type=float, default=None, help="override the predicted image's scale")
    parser.add_argument("--ref-scale", type=float, default=None, help="override the reference image's scale")
    parser.add_argument(
        "--ratio", type=float, default=30.0 / 480.0,
        help="fine / coarse pixel size for ERGAS (default 30/480 = 0.0625)",
    )
    add_report_options(parser)


def run(args):
    from model_core.assess import assess, format_summary, json_safe

    result = assess(
        args.pred,
        args.ref,
        mask_path=args.mask,
        bands=args.bands,
        scale=args.scale,
        pred_scale=args.pred_scale,
        ref_scale=args.ref_scale,
        error_map_path=args.error_map,
        table_csv=args.csv,
        html=args.html,
        ratio=args.ratio,
        progress=console_progress(args, "assess"),
    )
    if args.json:
        print(json.dumps(json_safe(result)))
    else:
        print(format_summary(result))
        for key, path in result["files"].items():
            print(f"wrote {path}")
    return 0
