"""``python -m model_core fuse-series``: a fine image at every target date of a time series.

    python -m model_core fuse-series --manifest series.csv --out fused/ [--targets missing|all|step \\
        --start 2021-04-01 --end 2021-10-01 --every-days 8 --references 2 --max-gap-days 64 --quicklook]
    python -m model_core fuse-series --fine l_2021-04-01.tif l_2021-06-04.tif \\
        --coarse m_2021-04-17.tif m_2021-05-03.tif --out fused/

The manifest is a CSV ``date,fine,coarse[,mask]`` in which either path may be empty. Ctrl-C keeps the
dates already finished; the same command again resumes.
"""

import json


def configure(parser):
    from model_core.commands._options import (
        add_band_options,
        add_device_option,
        add_output_options,
        add_report_options,
        add_resampling_option,
        add_tiling_options,
    )

    data = parser.add_argument_group("the series (a manifest, or fine and coarse rasters)")
    data.add_argument("--manifest", metavar="CSV",
                      help="CSV with columns date,fine,coarse[,mask]; either path may be empty (paths relative to it)")
    data.add_argument("--fine", nargs="+", metavar="TIF", help="fine rasters (e.g. Landsat), any dates")
    data.add_argument("--coarse", nargs="+", metavar="TIF", help="coarse rasters (e.g. MODIS), any dates")
    data.add_argument("--dates", help="dates of --fine then --coarse, comma-separated YYYY-MM-DD "
                                      "(default: read from the file names)")
    parser.add_argument("--model", default=None, help="CTSTFM model file (.pt; default: the embedded model)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    targets = parser.add_argument_group("target dates")
    targets.add_argument("--targets", default="missing", choices=["missing", "all", "step"],
                         help="missing: coarse dates without a fine image (default); all: every coarse date; "
                              "step: --start to --end every --every-days days, each with the nearest coarse image")
    targets.add_argument("--start", help="first date of --targets step (default: the first coarse date)")
    targets.add_argument("--end", help="last date of --targets step (default: the last coarse date)")
    targets.add_argument("--every-days", type=int, default=None, help="step of --targets step in days")
    parser.add_argument("--references", type=int, default=2, choices=[1, 2],
                        help="2: the nearest fine dates before and after, blended (default); 1: the nearest only")
    parser.add_argument("--max-gap-days", type=int, default=None, help="farthest usable fine date in days (default any)")
    parser.add_argument("--mask-band", type=int, default=None,
                        help="a band of the fine images whose non-zero pixels are clouds (default none)")
    add_tiling_options(parser, 32, "overlap between tiles in pixels (default 32)")
    add_device_option(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per network call (default 1)")
    add_band_options(parser, "fine bands in the model's order, e.g. 1,2,3,4,5,6",
                     "coarse bands in the model's order, e.g. 3,4,1,2,6,7")
    add_resampling_option(parser, "how the coarse images are put on the fine grid (default bilinear)")
    add_output_options(parser)
    parser.add_argument("--quicklook", action="store_true", help="also write quicklook.png (thumbnails, mean NDVI)")
    add_report_options(parser)


def run(args):
    from model_core import paths
    from model_core.commands._options import console_progress, fusion_kwargs
    from model_core.errors import CtstfmError
    from model_core.series import fuse_series, load_series

    progress = console_progress(args, "fuse-series")
    model = args.model or str(paths.DEFAULT_MODEL)
    if not args.manifest and not (args.fine or args.coarse):
        raise CtstfmError("Give the series: --manifest CSV, or --fine and --coarse rasters.")
    series = args.manifest or load_series(fines=args.fine, coarses=args.coarse, dates=args.dates, progress=progress)
    result = fuse_series(
        series, model, args.out, targets=args.targets, start=args.start, end=args.end, every_days=args.every_days,
        references=args.references, max_gap_days=args.max_gap_days, mask_band=args.mask_band, device=args.device,
        batch_size=args.batch_size, quicklook=args.quicklook, progress=progress, **fusion_kwargs(args),
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"{len(result.written)} date(s) fused, {len(result.kept)} kept from an earlier run, into {result.out_folder} "
            f"({result.width} x {result.height} px, {result.bands} bands) in {result.seconds:.1f} s on {result.device}; "
            f"index {result.index}, stack {result.stack}"
        )
    return 0
