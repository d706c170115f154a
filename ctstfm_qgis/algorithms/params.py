"""The QGIS face of :mod:`model_core.options`: parameters from an operation's spec, and the
core function's keyword arguments back from the parameter values.

:func:`add_operation_parameters` defines one QGIS parameter per option (its name, label,
default, range, choices and Advanced flag all come from the spec); :func:`operation_arguments`
turns the values into the core's arguments: layers into file paths (GDAL files only), enum
indices into choices, the ``unset`` value into ``None``. Also the naming of the layer the dialog
loads.
"""

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..compat import FILE_BEHAVIOR_FILE, FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER, SOURCE_RASTER

# --------------------------------------------------------------------------- definitions


def _number(option, label):
    kwargs = dict(defaultValue=option.shown_default)
    if option.minimum is not None:
        kwargs["minValue"] = option.minimum
    if option.maximum is not None:
        kwargs["maxValue"] = option.maximum
    kind = NUMBER_INTEGER if option.kind == "int" else NUMBER_DOUBLE
    parameter = QgsProcessingParameterNumber(option.qgis, label, kind, **kwargs)
    if option.decimals is not None:
        parameter.setMetadata({"widget_wrapper": {"decimals": option.decimals}})
    return parameter


def _file(option, label):
    kwargs = dict(behavior=FILE_BEHAVIOR_FILE, optional=not option.required)
    if option.extension:
        kwargs["extension"] = option.extension
    else:
        kwargs["fileFilter"] = option.file_filter
    return QgsProcessingParameterFile(option.qgis, label, **kwargs)


def make_parameter(alg, option):
    """The QGIS parameter of one :class:`~model_core.options.Option` (label through ``alg.tr``)."""
    label = alg.tr(option.help)
    optional = not option.required
    kind = option.kind
    if kind in ("int", "float"):
        return _number(option, label)
    if kind == "bool":
        return QgsProcessingParameterBoolean(option.qgis, label, defaultValue=bool(option.default))
    if kind == "choice":
        labels = [alg.tr(text) for text in (option.labels or option.choices)]
        return QgsProcessingParameterEnum(
            option.qgis, label, options=labels, defaultValue=option.choices.index(option.default)
        )
    if kind == "str":
        return QgsProcessingParameterString(option.qgis, label, defaultValue=option.default or "", optional=optional)
    if kind == "raster":
        return QgsProcessingParameterRasterLayer(option.qgis, label, optional=optional)
    if kind == "rasters":
        return QgsProcessingParameterMultipleLayers(option.qgis, label, SOURCE_RASTER, optional=optional)
    if kind in ("file", "files"):
        return _file(option, label)
    create = option.required or option.qgis_create
    if kind == "output_raster":
        return QgsProcessingParameterRasterDestination(option.qgis, label, optional=optional, createByDefault=create)
    if kind == "output_file":
        return QgsProcessingParameterFileDestination(
            option.qgis, label, option.file_filter, optional=optional, createByDefault=create
        )
    raise ValueError(f"no QGIS parameter for kind {kind!r}")


def add_operation_parameters(alg, operation):
    """Every option of ``operation`` as a parameter of ``alg``, in the spec's order."""
    for option in operation.options:
        parameter = make_parameter(alg, option)
        if option.advanced:
            parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
        alg.addParameter(parameter)


# --------------------------------------------------------------------------- reading


def raster_layer_source(alg, parameters, name, context, label, optional=False):
    """``(path, layer)`` of a raster-layer parameter; a clear error unless it is a GDAL file
    (``(None, None)`` for an empty optional one)."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        if optional:
            return None, None
        raise QgsProcessingException(f"The {label} could not be loaded; choose a raster layer or file.")
    return layer_path(layer, label), layer


def layer_path(layer, label="layer"):
    """The file behind a raster layer; a clear error unless GDAL reads it."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {label} '{layer.name()}' is not a file-based raster (provider '{layer.providerType()}'); "
            "save it as a GeoTIFF first (Export > Save As)."
        )
    return layer.source().split("|")[0]


def _output_raster(alg, parameters, option, context):
    """The path of a GeoTIFF output; the core's name rule (:func:`model_core.outputs.check_geotiff_name`)
    is checked at once, so QGIS does not open a half-configured job."""
    from model_core.outputs import check_geotiff_name

    output = (alg.parameterAsOutputLayer(parameters, option.qgis, context) or "").strip()
    if output:
        check_geotiff_name(output, option.what)
    return output or None


def read_option(alg, option, parameters, context):
    """``(value for the core, layer or None)`` of one option."""
    kind, name = option.kind, option.qgis
    if kind == "raster":
        return raster_layer_source(alg, parameters, name, context, option.what, optional=not option.required)
    if kind == "int":
        value = alg.parameterAsInt(parameters, name, context)
    elif kind == "float":
        value = alg.parameterAsDouble(parameters, name, context)
    elif kind == "bool":
        value = alg.parameterAsBool(parameters, name, context)
    elif kind == "choice":
        value = option.choices[alg.parameterAsEnum(parameters, name, context)]
    elif kind == "str":
        value = alg.parameterAsString(parameters, name, context)
    elif kind == "rasters":
        value = [layer_path(layer, option.what) for layer in alg.parameterAsLayerList(parameters, name, context)]
        value = value or None
    elif kind == "file":
        value = alg.parameterAsFile(parameters, name, context)
    elif kind == "files":
        path = (alg.parameterAsFile(parameters, name, context) or "").strip()
        value = [path] if path else None
    elif kind == "output_raster":
        value = _output_raster(alg, parameters, option, context)
    else:  # output_file
        value = (alg.parameterAsFileOutput(parameters, name, context) or "").strip()
    return option.to_core(value), None


def operation_arguments(alg, operation, parameters, context):
    """``(kwargs, layers)``: the core function's keyword arguments, and the raster layers by option name."""
    kwargs, layers = {}, {}
    for option in operation.options:
        kwargs[option.name], layer = read_option(alg, option, parameters, context)
        if layer is not None:
            layers[option.name] = layer
    return kwargs, layers


def name_output_layer(context, output, name):
    """The name of the layer the dialog loads from ``output`` when the algorithm is done."""
    if context.willLoadLayerOnCompletion(output):
        context.layerToLoadOnCompletionDetails(output).name = name
