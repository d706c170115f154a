"""``python -m model_core info``: the network configuration and parameter count, of a model file or a fresh one."""

import json


def configure(parser):
    parser.add_argument("--model", metavar="FILE", help="model file to describe (default: a fresh default network)")
    parser.add_argument("--bands", type=int, metavar="N", help="bands of the fresh network (without --model; default 6)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    from ..errors import CtstfmError
    from ..network import CTSTFM, CTSTFMConfig, count_parameters

    info = {}
    if args.model:
        from ..model_file import load_model

        loaded = load_model(args.model)
        if args.bands is not None and args.bands != loaded.config.bands:
            raise CtstfmError(
                f"--bands {args.bands} contradicts {loaded.path}, a {loaded.config.bands}-band model; drop --bands."
            )
        config = loaded.config
        info["model"] = str(loaded.path)
        info["format_version"] = loaded.format_version
        parameters = count_parameters(loaded.model)
    else:
        config = CTSTFMConfig(bands=6 if args.bands is None else args.bands)
        parameters = count_parameters(CTSTFM(config))
    info["parameters"] = parameters
    info["config"] = config.to_dict()
    if args.model:
        info["band_names"] = list(loaded.band_names)
        info["scale"] = loaded.scale
        info["provenance"] = loaded.provenance

    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if args.model:
        print(f"model: {info['model']} (format version {info['format_version']})")
        print(f"bands: {', '.join(info['band_names'])}")
        print(f"scale: reflectance = DN * {info['scale']:g}")
    print(f"parameters: {parameters:,}")
    print("config:")
    for key, value in info["config"].items():
        print(f"  {key}: {value}")
    if args.model:
        print("provenance:" + ("" if info["provenance"] else " (none)"))
        for key, value in info["provenance"].items():
            print(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0
