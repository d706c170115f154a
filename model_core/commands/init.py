"""``python -m model_core init``: write a freshly initialised (untrained) CTSTFM model file."""


def configure(parser):
    parser.add_argument("--bands", type=int, required=True, metavar="N", help="number of bands")
    parser.add_argument("--out", required=True, metavar="FILE", help="model file to write (.pt)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initial weights (default 0)")
    parser.add_argument("--width", type=int, metavar="N", help="feature channels N (default 20)")
    parser.add_argument(
        "--scale", type=float, default=1e-4, help="reflectance = DN * scale for the rasters it will read (default 1e-4)"
    )


def run(args):
    import datetime

    import torch

    from .. import __version__
    from ..model_file import save_model
    from ..network import CTSTFM, DEFAULT_BANDS, CTSTFMConfig, count_parameters

    settings = {"bands": args.bands}
    if args.width is not None:
        settings["width"] = args.width
    config = CTSTFMConfig(**settings)
    torch.manual_seed(args.seed)
    model = CTSTFM(config)
    band_names = list(DEFAULT_BANDS) if config.bands == len(DEFAULT_BANDS) else [f"band{i + 1}" for i in range(config.bands)]
    provenance = {
        "created_by": f"model_core {__version__} init",
        "trained": False,
        "seed": args.seed,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": "freshly initialised weights; train before use",
    }
    path = save_model(args.out, model, config=config, band_names=band_names, scale=args.scale, provenance=provenance)
    print(f"wrote {path}: untrained {config.bands}-band CTSTFM, {count_parameters(model):,} parameters, seed {args.seed}")
    return 0
