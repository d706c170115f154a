"""``python -m model_core starfm``: STARFM (Gao et al. 2006) from one fine/coarse pair at T0 and a coarse T1.

    python -m model_core starfm --fine landsat_t0.tif --coarse0 modis_t0.tif --coarse1 modis_t1.tif --out starfm.tif \\
        [--window 31 --classes 40 --fine-uncertainty 0.002 --coarse-uncertainty 0.002 --tile 256 \\
         --overlap 30 --device auto ...]
"""

from model_core.commands._options import add_classical_options, add_device_option, classical_kwargs, report_classical


def configure(parser):
    add_classical_options(
        parser, default_overlap=None, overlap_help="tile overlap, at least window - 1 (default window - 1: seamless)"
    )
    parser.add_argument("--window", type=int, default=31, help="moving window in fine pixels, odd (default 31)")
    parser.add_argument("--classes", type=float, default=40, help="classes of the similarity tolerance (default 40)")
    parser.add_argument("--fine-uncertainty", type=float, default=0.002, help="in reflectance (default 0.002)")
    parser.add_argument("--coarse-uncertainty", type=float, default=0.002, help="in reflectance (default 0.002)")
    add_device_option(parser)


def run(args):
    from model_core.classical_raster import starfm_rasters

    result = starfm_rasters(
        args.fine,
        args.coarse0,
        args.coarse1,
        args.out,
        window=args.window,
        classes=args.classes,
        fine_uncertainty=args.fine_uncertainty,
        coarse_uncertainty=args.coarse_uncertainty,
        device=args.device,
        **classical_kwargs(args, "starfm"),
    )
    report_classical(args, result)
    return 0
