"""One option spec per operation (model_core.options): the CLI and the QGIS parameters are exactly the
spec, both faces hand the core the same arguments, and the spec's defaults are the core functions'."""

import argparse
import inspect

import numpy as np
import pytest
from osgeo import gdal

from model_core.cli import build_parser
from model_core.commands._options import REPORT_FLAGS, operation_kwargs
from model_core.options import DEVICES, OPERATIONS

NO_DEFAULT = inspect.Parameter.empty


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _cli_actions(subparser):
    return {a.option_strings[0]: a for a in subparser._actions if a.option_strings and a.option_strings[0] != "-h"}


def _algorithms():
    from ctstfm_qgis.algorithms import all_algorithms

    found = {}
    for alg in all_algorithms():
        alg.initAlgorithm()
        if alg.operation is not None:
            found[alg.operation.name] = alg
    return found


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_cli_options_are_the_spec(name):
    operation = OPERATIONS[name]
    actions = _cli_actions(_subparsers()[name])
    assert set(actions) - set(REPORT_FLAGS) == {option.cli for option in operation.options}
    for option in operation.options:
        action = actions[option.cli]
        assert action.dest == option.name
        assert action.required == option.required, option.cli
        if option.kind == "choice":
            assert tuple(action.choices) == option.choices and action.default == option.default
        elif option.kind in ("int", "float", "str"):
            assert action.default == option.shown_default, option.cli


def test_every_operation_has_one_algorithm(qgis_app):
    assert set(_algorithms()) == set(OPERATIONS)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_qgis_parameters_are_the_spec(qgis_app, name):
    from ctstfm_qgis.compat import FLAG_ADVANCED, FLAG_OPTIONAL

    operation = OPERATIONS[name]
    alg = _algorithms()[name]
    extra = getattr(alg, "qgis_only_parameters", ())  # QGIS-only (e.g. the provider's models folder)
    assert [p.name() for p in alg.parameterDefinitions() if p.name() not in extra] == [
        option.qgis for option in operation.options
    ]
    for option in operation.options:
        parameter = alg.parameterDefinition(option.qgis)
        assert getattr(type(alg), option.qgis) == option.qgis  # the class constant
        assert bool(parameter.flags() & FLAG_ADVANCED) == option.advanced, option.qgis
        assert bool(parameter.flags() & FLAG_OPTIONAL) == (not option.required and option.kind not in (
            "int", "float", "bool", "choice")), option.qgis
        assert parameter.description() == option.help
        if option.kind in ("int", "float"):
            assert parameter.defaultValue() == option.shown_default, option.qgis
            if option.minimum is not None:
                assert parameter.minimum() == option.minimum
        elif option.kind == "choice":
            assert len(parameter.options()) == len(option.choices)
            assert parameter.defaultValue() == option.choices.index(option.default)
        elif option.kind == "bool":
            assert parameter.defaultValue() == option.default


def test_device_indices_stay_put():
    # Saved graphical models and scripts store DEVICE as an index: 0 auto, 1 cpu, 2 cuda.
    assert DEVICES[:3] == ("auto", "cpu", "cuda")


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_spec_defaults_are_the_core_defaults(name):
    operation = OPERATIONS[name]
    function = operation.core_function()
    parameters = dict(inspect.signature(function).parameters)
    if operation.forwards_to:  # the rest of the options go on to this function
        parameters.update(inspect.signature(operation.forwarded_function()).parameters)
    for option in operation.options:
        assert option.name in parameters, f"{function.__name__} has no argument {option.name}"
        default = parameters[option.name].default
        if default is NO_DEFAULT:
            assert option.required or option.default is None, option.name
        else:
            assert default == option.default, (option.name, default, option.default)


@pytest.fixture(scope="module")
def tiny_raster(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("options") / "tiny.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 8, 8, 1, gdal.GDT_Int16)
    ds.SetGeoTransform((500000, 30, 0, 4000000, 0, -30))
    ds.GetRasterBand(1).WriteArray(np.ones((8, 8), np.int16))
    ds = None
    return path


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_both_faces_give_the_core_the_same_arguments(qgis_app, tiny_raster, tmp_path, name):
    from qgis.core import QgsProcessingContext

    from ctstfm_qgis.algorithms.params import operation_arguments

    operation = OPERATIONS[name]
    argv, values = [name], {}
    for option in operation.options:
        if not option.required:
            continue
        path = tiny_raster if option.kind == "raster" else str(tmp_path / f"{option.name}.{option.extension or 'tif'}")
        argv += [option.cli, path]
        values[option.qgis] = path
    cli = operation_kwargs(build_parser().parse_args(argv), operation)
    qgis, _ = operation_arguments(_algorithms()[name], operation, values, QgsProcessingContext())
    assert cli == qgis
    for option in operation.options:  # what the core gets when nothing is chosen: its own defaults
        if not option.required:
            assert cli[option.name] == option.default, option.name


def test_rules_about_what_the_user_gave_live_in_the_core(tmp_path, monkeypatch):
    from model_core import paths
    from model_core.errors import CtstfmError
    from model_core.training import series_from_inputs

    with pytest.raises(CtstfmError, match="not both"):
        series_from_inputs("series.csv", ["f.tif"], ["c.tif"])
    with pytest.raises(CtstfmError, match="No series given"):
        series_from_inputs()
    assert series_from_inputs(["a.csv", "b.csv"]) == (["a.csv", "b.csv"], None)
    assert paths.model_or_default(" chosen.pt ") == "chosen.pt"
    monkeypatch.setattr(paths, "DEFAULT_MODEL", tmp_path / "none.pt")
    with pytest.raises(CtstfmError, match="no built-in model"):
        paths.model_or_default(None)
