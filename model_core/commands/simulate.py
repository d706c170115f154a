"""``python -m model_core simulate``: write a simulated Landsat/MODIS series (see docs/simulator.md)."""

#: The sensor difference's settings (model_core.simulate.SENSOR_PRESETS) a flag can override.
SENSOR_FLAGS = {
    "--gain-jitter": "coarse/fine gain difference per scene and band, relative (uniform +-)",
    "--offset-jitter": "coarse - fine offset per scene and band, reflectance (uniform +-)",
    "--date-gain-jitter": "extra gain difference per date, relative (uniform +-)",
    "--date-offset-jitter": "extra offset per date, reflectance (uniform +-)",
    "--coarse-error": "relative std of the smooth multiplicative error of each coarse image",
}


def sensor_overrides(args):
    """The sensor settings given on the command line, as ``simulate_series`` keywords."""
    names = (flag[2:].replace("-", "_") for flag in SENSOR_FLAGS)
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def configure(parser):
    from ..simulate import COARSE_GRIDS

    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--kind", choices=("fields", "urban"), default="fields",
        help="fields: CIA-like irrigated farmland; urban: Daxing-like city growth (default fields)",
    )
    parser.add_argument("--dates", help="comma-separated dates YYYY-MM-DD (overrides --start/--count/--interval-days)")
    parser.add_argument(
        "--start", help="first date YYYY-MM-DD (default per kind: fields 2021-12-01, urban 2021-04-10)"
    )
    parser.add_argument("--count", type=int, default=6, help="number of dates with --start (default 6)")
    parser.add_argument("--interval-days", type=int, default=16, help="days between dates with --start (default 16)")
    parser.add_argument("--size", type=int, default=256, help="fine image width and height in 30 m pixels (default 256)")
    parser.add_argument("--width", type=int, help="fine image width (overrides --size)")
    parser.add_argument("--height", type=int, help="fine image height (overrides --size)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    parser.add_argument("--clouds", type=float, default=0.0,
                        help="cloud-covered share of each image, written as nodata (default 0)")
    parser.add_argument("--cloud-target", choices=("fine", "coarse", "both"), default="both",
                        help="which images get the clouds (default both)")
    parser.add_argument(
        "--coarse-resolution", type=float, default=480.0, help="coarse pixel size in metres (default 480)"
    )
    parser.add_argument(
        "--change-fraction", type=float,
        help="share of the image that changes abruptly over the series (default fields 0.10, urban 0.15)",
    )
    parser.add_argument(
        "--change-mix",
        help="weights of the abrupt change kinds, e.g. harvest=0.5,flood=0.35,build=0.15 (default per kind)",
    )
    parser.add_argument(
        "--sensor", choices=("ideal", "realistic"), default="ideal",
        help="sensor difference preset: ideal (clean aggregate, default) or realistic (as different as real "
             "MODIS and Landsat: gain/offset per scene and date, misregistration, smooth coarse error)",
    )
    parser.add_argument("--bands", help="bands to write, e.g. green,red,nir (default blue,green,red,nir,swir1,swir2)")
    parser.add_argument("--resolution", type=float, default=30.0, help="fine pixel size in metres (default 30)")
    parser.add_argument("--coarse-grid", choices=COARSE_GRIDS, default="own",
                        help="coarse images on their own grid aligned with the fine one (default), resampled onto "
                             "the fine grid (nearest), on MODIS's sinusoidal grid (463 m at --coarse-resolution "
                             "480, leaning footprints), or that warped onto the fine grid (nearest)")
    parser.add_argument(
        "--psf-sigma", type=float, help="coarse PSF Gaussian sigma in coarse pixels (default from --sensor: 0.5 / 0.8)"
    )
    parser.add_argument(
        "--coarse-noise", type=float, help="coarse noise sigma, reflectance (default from --sensor: 0.004)"
    )
    parser.add_argument("--fine-noise", type=float, default=0.002, help="fine noise sigma, reflectance (default 0.002)")
    parser.add_argument("--misregistration", type=float,
                        help="largest per-date coarse shift in coarse pixels (default from --sensor: 0.1 / 0.5)")
    for flag, what in SENSOR_FLAGS.items():
        parser.add_argument(flag, type=float, help=f"{what} (default from --sensor)")
    parser.add_argument("--landcover", action="store_true", help="also write landcover_DATE.tif class maps")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from ..errors import CtstfmError
    from ..progress import ConsoleProgress
    from ..simulate import simulate_series

    dates = None
    if args.dates:
        dates = [d for d in (part.strip() for part in args.dates.split(",")) if d]
        if not dates:
            raise CtstfmError("--dates is empty; give dates as YYYY-MM-DD,YYYY-MM-DD,...")
    change_mix = None
    if args.change_mix:
        change_mix = {}
        for part in args.change_mix.split(","):
            name, _, value = part.partition("=")
            try:
                change_mix[name.strip()] = float(value)
            except ValueError:
                raise CtstfmError(
                    f"--change-mix: '{part}' is not NAME=WEIGHT; write e.g. harvest=0.5,flood=0.3,build=0.2."
                ) from None
    series = simulate_series(
        args.out,
        kind=args.kind,
        dates=dates,
        start=args.start,
        count=args.count,
        interval_days=args.interval_days,
        size=args.size,
        width=args.width,
        height=args.height,
        seed=args.seed,
        clouds=args.clouds,
        cloud_target=args.cloud_target,
        coarse_resolution=args.coarse_resolution,
        change_fraction=args.change_fraction,
        change_mix=change_mix,
        psf_sigma=args.psf_sigma,
        coarse_noise=args.coarse_noise,
        fine_noise=args.fine_noise,
        misregistration=args.misregistration,
        write_landcover=args.landcover,
        sensor=args.sensor,
        bands=args.bands,
        resolution=args.resolution,
        coarse_grid=args.coarse_grid,
        progress=ConsoleProgress("simulate", quiet=args.quiet),
        **sensor_overrides(args),
    )
    print(f"manifest: {series.manifest}")
    print(f"series to fill: {series.manifest.with_name('series.csv')} (every other date without its fine image, "
          "for fuse-series; the fine images stay as the truth)")
    print(f"dates: {len(series.items)}, fine {series.scene.width} x {series.scene.height} px, "
          f"coarse {series.scene.coarse_shape[1]} x {series.scene.coarse_shape[0]} px")
    for change in series.changes:
        print(f"changed {change.date_a} -> {change.date_b}: {100 * change.changed_fraction:.2f} %")
    print(f"changed over the series: {100 * series.total_changed_fraction:.2f} %")
    return 0
