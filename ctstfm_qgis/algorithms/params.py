"""The parameters several algorithms share: how they are defined and how they are read.

Builders (``add_*`` / ``*_parameters``) define the parameters on an algorithm with
the same names, labels and defaults everywhere; readers (``*_arguments``) turn
them into the keyword arguments of the core's functions. Also the checks of
input rasters and output files, and the naming of the layer the dialog loads.
"""

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

# Appended only: users' scripts and models give the DEVICE index (0 auto, 1 cpu, 2 cuda, 3 mps).
DEVICES = ["auto", "cpu", "cuda", "mps"]
RESAMPLINGS = ["bilinear", "cubic", "nearest", "average"]
OUTPUT_TYPES = [("input", "Same as the fine input (DN, its data type and nodata)"), ("float32", "Float32 reflectance")]
FORMATS = [("GTiff", "GeoTIFF (tiled, compressed)"), ("COG", "Cloud Optimized GeoTIFF")]


# --------------------------------------------------------------------------- definitions


def add_advanced(alg, parameters):
    """Add ``parameters`` to ``alg`` under the dialog's Advanced section."""
    for parameter in parameters:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        alg.addParameter(parameter)


def add_tiling_parameters(alg, default_overlap, overlap_label="Tile overlap (pixels)"):
    """``TILE_SIZE`` and ``OVERLAP`` (fine pixels)."""
    alg.addParameter(
        QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size (pixels)", QgsProcessingParameterNumber.Integer, defaultValue=256, minValue=16
        )
    )
    alg.addParameter(
        QgsProcessingParameterNumber(
            "OVERLAP", overlap_label, QgsProcessingParameterNumber.Integer, defaultValue=default_overlap, minValue=0
        )
    )


def add_device_parameter(alg):
    """``DEVICE``: auto, cpu, cuda or mps; the default is the provider's default-device setting."""
    from ..settings import default_device_index

    alg.addParameter(
        QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=default_device_index())
    )


def band_parameters(fine_label, coarse_label):
    """``FINE_BANDS`` and ``COARSE_BANDS`` (optional band lists such as ``3,4,1,2,6,7``), to add as advanced."""
    return [
        QgsProcessingParameterString("FINE_BANDS", fine_label, defaultValue="", optional=True),
        QgsProcessingParameterString("COARSE_BANDS", coarse_label, defaultValue="", optional=True),
    ]


def output_parameters(resampling_label):
    """``RESAMPLING``, ``OUTPUT_TYPE`` and ``OUTPUT_FORMAT`` of a fused raster, to add as advanced."""
    return [
        QgsProcessingParameterEnum("RESAMPLING", resampling_label, options=RESAMPLINGS, defaultValue=0),
        QgsProcessingParameterEnum(
            "OUTPUT_TYPE", "Output data type", options=[label for _, label in OUTPUT_TYPES], defaultValue=0
        ),
        QgsProcessingParameterEnum(
            "OUTPUT_FORMAT", "Output file layout", options=[label for _, label in FORMATS], defaultValue=0
        ),
    ]


# --------------------------------------------------------------------------- reading


def tiling_arguments(alg, parameters, context):
    """``tile`` and ``overlap`` from :func:`add_tiling_parameters`."""
    return dict(
        tile=alg.parameterAsInt(parameters, "TILE_SIZE", context),
        overlap=alg.parameterAsInt(parameters, "OVERLAP", context),
    )


def device_argument(alg, parameters, context):
    """The device name from :func:`add_device_parameter`."""
    return DEVICES[alg.parameterAsEnum(parameters, "DEVICE", context)]


def band_arguments(alg, parameters, context):
    """``fine_bands`` and ``coarse_bands`` from :func:`band_parameters` (None when empty)."""
    return dict(
        fine_bands=(alg.parameterAsString(parameters, "FINE_BANDS", context) or "").strip() or None,
        coarse_bands=(alg.parameterAsString(parameters, "COARSE_BANDS", context) or "").strip() or None,
    )


def output_arguments(alg, parameters, context):
    """``resampling``, ``output_type`` and ``output_format`` from :func:`output_parameters`."""
    return dict(
        resampling=RESAMPLINGS[alg.parameterAsEnum(parameters, "RESAMPLING", context)],
        output_type=OUTPUT_TYPES[alg.parameterAsEnum(parameters, "OUTPUT_TYPE", context)][0],
        output_format=FORMATS[alg.parameterAsEnum(parameters, "OUTPUT_FORMAT", context)][0],
    )


def raster_layer_source(alg, parameters, name, context, label, optional=False):
    """``(path, layer)`` of a raster-layer parameter; a clear error unless it is a GDAL file
    (``(None, None)`` for an empty optional one)."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        if optional:
            return None, None
        raise QgsProcessingException(f"The {label} could not be loaded; choose a raster layer or file.")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {label} '{layer.name()}' is not a file-based raster (provider '{layer.providerType()}'); "
            "save it as a GeoTIFF first (Export > Save As)."
        )
    return layer.source(), layer


def geotiff_output(alg, parameters, name, context):
    """The path of a raster-destination parameter; a clear error unless it is a GeoTIFF."""
    output = alg.parameterAsOutputLayer(parameters, name, context)
    if os.path.splitext(output)[1].lower() not in (".tif", ".tiff"):
        raise QgsProcessingException(f"The output '{output}' must be a GeoTIFF file (.tif).")
    return output


def name_output_layer(context, output, name):
    """The name of the layer the dialog loads from ``output`` when the algorithm is done."""
    if context.willLoadLayerOnCompletion(output):
        context.layerToLoadOnCompletionDetails(output).name = name
