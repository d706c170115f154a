"""``python -m model_core``: the core's command line.

Each subcommand is one module in :mod:`model_core.commands` with
``configure(parser)`` and ``run(args) -> int``. Heavy imports (torch, GDAL) stay
inside ``run`` so that ``--help`` answers at once. A :class:`CtstfmError` is
printed as one line on stderr with exit status 2 (an :class:`OptionError` naming
the options by their flags).
"""

import argparse
import importlib
import sys

from . import __version__
from .errors import Cancelled, CtstfmError, OptionError

# (subcommand, module in model_core.commands, one-line help)
COMMANDS = [
    ("version", "version", "print the version of model_core and of its libraries"),
    ("info", "info", "print a model's configuration, bands, scale, provenance and parameter count"),
    ("init", "init", "write a freshly initialised (untrained) CTSTFM model file"),
    ("fuse", "fuse", "predict the fine image at T1 from a fine image at T0 and a coarse image at T1"),
    ("fuse-series", "fuse_series", "fuse a time series: a fine image at every target date, from the fine dates around it"),
    ("train", "train", "train CTSTFM on a series of fine/coarse pairs and write a model file"),
    ("simulate", "simulate", "write a simulated Landsat/MODIS series (dated fine/coarse GeoTIFFs and a manifest)"),
    ("assess", "assess", "compare a predicted fine image with a reference: metrics table, HTML report, error map"),
    ("temporal-difference", "temporal_difference", "classical fusion: fine T1 = fine T0 + (coarse T1 - coarse T0)"),
    ("starfm", "starfm", "classical fusion: STARFM (Gao et al. 2006) from a fine/coarse pair at T0 and coarse T1"),
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m model_core",
        description="CTSTFM spatiotemporal fusion (Jiang & Shao 2024): fuse, train, assess, simulate.",
    )
    parser.add_argument("--version", action="version", version=f"model_core {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"model_core.commands.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(_run=module.run, _flag=_flag_namer(sub))
    return parser


def _flag_namer(parser):
    """``name_of(key)`` for :class:`OptionError`: the command's flag for a core option key (the
    argparse option whose ``dest`` is the key, as :mod:`model_core.commands._options` builds
    them from the spec), else ``--key-with-dashes``."""
    flags = {action.dest: action.option_strings[-1] for action in parser._actions if action.option_strings}

    def name_of(key):
        return flags.get(key) or "--" + key.replace("_", "-")

    return name_of


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    from .distributed import session

    try:
        with session(args.command):  # joins the process group under torchrun; nothing otherwise
            return args._run(args) or 0
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except OptionError as exc:
        print(f"error: {exc.render(args._flag)}", file=sys.stderr)
        return 2
    except CtstfmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled: interrupted; no output was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
