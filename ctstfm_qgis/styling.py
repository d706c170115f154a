"""How the rasters the algorithms write look when the dialog loads them.

A fused image (CTSTFM, the classical methods, later the series) is drawn like the fine
image it came from, so the two compare at a glance: with the fine input layer's own renderer
when that input is a layer of the project, else with a colour composite chosen by band names
(natural colour, or NIR/red/green when the provider's setting asks) stretched to the same
min/max as the fine input. An error map gets a sequential colour ramp from 0 with a legend.

QGIS applies styles through a post-processor on the layer it loads on completion
(``context.layerToLoadOnCompletionDetails(path).setPostProcessor(...)``): it runs in the main
thread after the layer is added to the project. This module keeps the post-processor alive
(QGIS holds only a pointer); the algorithm takes the fine layer's renderer in ``prepareAlgorithm``,
which also runs in the main thread.
"""

import re

from qgis.core import (
    QgsColorBrewerColorRamp,
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRectangle,
    QgsSingleBandGrayRenderer,
    QgsSingleBandPseudoColorRenderer,
)

from model_core.network import DEFAULT_BANDS

#: QGIS's default stretch of a multiband layer: cumulative count cut 2-98 %.
CUMULATIVE_CUT = (0.02, 0.98)
SAMPLE_PIXELS = 250_000
ERROR_RAMP = "YlOrRd"  # sequential ColorBrewer ramp: light = small error, dark red = large
ERROR_CLASSES = 5
_NAME_PATTERNS = {
    "red": r"\bred\b",
    "green": r"\bgreen\b",
    "blue": r"\bblue\b",
    "nir": r"\bnir\b|near[ _-]?infra",
}


def project_layer_renderer(alg, parameters, name, context):
    """A copy of the renderer of raster parameter ``name`` when it is a layer of the project
    (call from ``prepareAlgorithm``: the main thread), else ``None`` (a file has no style yet)."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    project = context.project()
    if layer is None or project is None or project.mapLayer(layer.id()) is None or layer.renderer() is None:
        return None
    return layer.renderer().clone()


def band_for_names(descriptions, wanted, count):
    """1-based bands whose descriptions name ``wanted`` (e.g. ``("red", "green", "blue")``);
    without names, the positions of :data:`DEFAULT_BANDS` (blue, green, red, NIR, ...) when there
    are that many bands, else the first three bands."""
    found = []
    for name in wanted:
        pattern = re.compile(_NAME_PATTERNS[name], re.IGNORECASE)
        match = [i + 1 for i, text in enumerate(descriptions) if text and pattern.search(text)]
        found.append(match[0] if match else None)
    if all(found):
        return found
    if count >= len(DEFAULT_BANDS):
        return [DEFAULT_BANDS.index(name) + 1 for name in wanted]
    return [min(i + 1, count) for i in range(3)]


def fine_stretch(fine_path, bands):
    """``[(min, max)]`` of ``bands`` of the fine image, as QGIS stretches a new multiband layer."""
    layer = QgsRasterLayer(fine_path, "fine", "gdal")
    provider = layer.dataProvider()
    lower, upper = CUMULATIVE_CUT
    return [tuple(provider.cumulativeCut(band, lower, upper, QgsRectangle(), SAMPLE_PIXELS)) for band in bands]


def _enhancement(data_type, low, high):
    enhancement = QgsContrastEnhancement(data_type)
    enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum, True)
    enhancement.setMinimumValue(low)
    enhancement.setMaximumValue(high)
    return enhancement


def composite_renderer(layer, bands, ranges):
    """A multiband (or, for one band, grey) renderer of ``bands`` stretched to ``ranges``."""
    provider = layer.dataProvider()
    data_type = provider.dataType(bands[0])
    if layer.bandCount() < 3 or len(set(bands)) == 1:
        renderer = QgsSingleBandGrayRenderer(provider, bands[0])
        renderer.setContrastEnhancement(_enhancement(data_type, *ranges[0]))
        return renderer
    renderer = QgsMultiBandColorRenderer(provider, *bands)
    renderer.setRedContrastEnhancement(_enhancement(data_type, *ranges[0]))
    renderer.setGreenContrastEnhancement(_enhancement(data_type, *ranges[1]))
    renderer.setBlueContrastEnhancement(_enhancement(data_type, *ranges[2]))
    return renderer


def _output_bands(metadata, count):
    """The fine-image band behind each output band (``CTSTFM_FINE_BANDS``), 1-based."""
    text = metadata.get("CTSTFM_FINE_BANDS", "")
    bands = [int(b) for b in text.split(",") if b.strip().isdigit()]
    return bands if len(bands) == count else list(range(1, count + 1))


def _value_scale(metadata, fine_path, reflectance_scale):
    """Output value per fine-input value: the reflectance per DN when integer DN became float32
    reflectance (``CTSTFM_OUTPUT_TYPE``), else 1."""
    from model_core.raster import RasterInfo

    if metadata.get("CTSTFM_OUTPUT_TYPE") != "float32" or RasterInfo.read(fine_path).dtype.startswith("float"):
        return 1.0
    return float(reflectance_scale)


def _mapped_renderer(renderer, layer, fine_to_output):
    """``renderer`` (of the fine layer) re-pointed at the output's bands, or ``None`` when it uses
    a band the output lacks or is of a kind that cannot be re-pointed."""
    used = renderer.usesBands()
    if not used or any(band not in fine_to_output for band in used):
        return None
    copy = renderer.clone()
    if isinstance(copy, QgsMultiBandColorRenderer):
        for getter, setter in (("redBand", "setRedBand"), ("greenBand", "setGreenBand"), ("blueBand", "setBlueBand")):
            band = getattr(copy, getter)()
            if band > 0:
                getattr(copy, setter)(fine_to_output[band])
    elif len(used) == 1 and hasattr(copy, "setInputBand"):
        if not copy.setInputBand(fine_to_output[used[0]]):
            return None
    elif any(fine_to_output[band] != band for band in used):
        return None
    copy.setInput(layer.dataProvider())
    return copy


class FineImageStyle(QgsProcessingLayerPostProcessorInterface):
    """Draws a fused output like its fine input (see the module's docstring)."""

    def __init__(self, fine_path, fine_renderer=None, composite=("red", "green", "blue"), reflectance_scale=1e-4):
        super().__init__()
        self.fine_path = fine_path
        self.reflectance_scale = reflectance_scale
        self.fine_renderer = fine_renderer
        self.composite = tuple(composite)

    def renderer_for(self, layer):
        from model_core.raster import RasterInfo, read_metadata

        path = layer.source().split("|")[0]
        metadata = read_metadata(path)
        output_bands = _output_bands(metadata, layer.bandCount())
        scale = _value_scale(metadata, self.fine_path, self.reflectance_scale)
        if self.fine_renderer is not None and scale == 1.0:
            fine_to_output = {fine: out + 1 for out, fine in enumerate(output_bands)}
            renderer = _mapped_renderer(self.fine_renderer, layer, fine_to_output)
            if renderer is not None:
                return renderer
        descriptions = RasterInfo.read(path).descriptions
        bands = band_for_names(descriptions, self.composite, layer.bandCount())
        ranges = fine_stretch(self.fine_path, [output_bands[b - 1] for b in bands])
        return composite_renderer(layer, bands, [(low * scale, high * scale) for low, high in ranges])

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if not isinstance(layer, QgsRasterLayer):
            return
        try:
            layer.setRenderer(self.renderer_for(layer))
        except Exception as exc:  # noqa: BLE001 (a style is never worth failing a finished run)
            feedback.pushWarning(f"The output keeps QGIS's default style: {exc}")
            return
        layer.triggerRepaint()


class ErrorMapStyle(QgsProcessingLayerPostProcessorInterface):
    """A sequential colour ramp from 0 to the 98th percentile of the error, with its legend."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if not isinstance(layer, QgsRasterLayer):
            return
        layer.setRenderer(error_renderer(layer))
        layer.triggerRepaint()


def error_renderer(layer):
    provider = layer.dataProvider()
    _, high = provider.cumulativeCut(1, 0.0, CUMULATIVE_CUT[1], QgsRectangle(), SAMPLE_PIXELS)
    high = high if high > 0 else 1e-6
    ramp_shader = QgsColorRampShader(
        0.0, high, QgsColorBrewerColorRamp(ERROR_RAMP, 9), QgsColorRampShader.Interpolated,
        QgsColorRampShader.EqualInterval,
    )
    ramp_shader.classifyColorRamp(ERROR_CLASSES, 1, QgsRectangle(), provider)
    ramp_shader.setClip(False)
    shader = QgsRasterShader(0.0, high)
    shader.setRasterShaderFunction(ramp_shader)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(high)
    return renderer


#: The post-processors waiting for their layer, by output path. QGIS holds only a pointer, and the
#: algorithm object that made one is gone by then (``QgsProcessingAlgorithm.run`` works on a copy
#: that it deletes before the layers are loaded), so they live here; a rerun to the same path
#: replaces its entry, which keeps this as small as the set of outputs of the session.
_WAITING = {}


def style_output(context, output, style):
    """Apply ``style`` (a post-processor) to ``output`` when the dialog loads it."""
    if not output or not context.willLoadLayerOnCompletion(output):
        return
    _WAITING[output] = style
    context.layerToLoadOnCompletionDetails(output).setPostProcessor(style)
