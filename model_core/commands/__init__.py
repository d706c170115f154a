"""One module per ``python -m model_core`` subcommand (see :mod:`model_core.cli`)."""
