"""The provider's settings (Settings > Options > Processing > Providers > CTSTFM), as QGIS's own
providers keep theirs: ``Setting`` objects added to ``ProcessingConfig`` in the provider's
``load()`` and removed in ``unload()``, stored in the QGIS profile.

Algorithms read them through the functions below, which fall back to the defaults where the
Processing plugin's Python is not there (e.g. a bare PyQGIS script that never loaded it).
"""

import os

from model_core.options import DEVICES

ACTIVATE = "CTSTFM_ACTIVATE"
DEFAULT_DEVICE = "CTSTFM_DEFAULT_DEVICE"
MODELS_FOLDER = "CTSTFM_MODELS_FOLDER"
COMPOSITE = "CTSTFM_COMPOSITE"
#: Colour composites of styled outputs: (setting label, band names for red, green, blue).
COMPOSITES = [
    ("Natural colour (red, green, blue)", ("red", "green", "blue")),
    ("False colour (NIR, red, green)", ("nir", "red", "green")),
]


def _processing_config():
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:
        return None, None
    return ProcessingConfig, Setting


def add_settings(group, icon):
    """Declare the settings under the provider's ``group`` (its name) and read their stored values."""
    config, setting = _processing_config()
    if config is None:
        return
    config.settingIcons[group] = icon
    config.addSetting(setting(group, ACTIVATE, "Activate", True))
    config.addSetting(
        setting(group, DEFAULT_DEVICE, "Default device (auto: CUDA, then Apple MPS, then CPU)", DEVICES[0],
                valuetype=setting.SELECTION, options=list(DEVICES))
    )
    config.addSetting(
        setting(group, MODELS_FOLDER, "Models folder (its .pt files are offered by name)", "",
                valuetype=setting.FOLDER)
    )
    config.addSetting(
        setting(group, COMPOSITE, "Colour composite of fused layers without a styled fine layer",
                COMPOSITES[0][0], valuetype=setting.SELECTION, options=[label for label, _ in COMPOSITES])
    )
    config.readSettings()


def remove_settings():
    config, _ = _processing_config()
    if config is None:
        return
    for name in (ACTIVATE, DEFAULT_DEVICE, MODELS_FOLDER, COMPOSITE):
        config.settings.pop(name, None)


def _value(name, default):
    config, _ = _processing_config()
    if config is None or name not in config.settings:
        return default
    value = config.getSetting(name)
    return default if value is None else value


def is_active():
    return bool(_value(ACTIVATE, True))


def set_active(active):
    config, _ = _processing_config()
    if config is not None and ACTIVATE in config.settings:
        config.setSettingValue(ACTIVATE, bool(active))


def default_device_index():
    """The index into ``DEVICES`` that ``DEVICE`` parameters start at."""
    index = _value(DEFAULT_DEVICE, 0)
    return index if isinstance(index, int) and 0 <= index < len(DEVICES) else 0


def composite_bands():
    """The band names (red, green, blue guns) of the chosen colour composite."""
    index = _value(COMPOSITE, 0)
    return COMPOSITES[index if isinstance(index, int) and 0 <= index < len(COMPOSITES) else 0][1]


def models_folder():
    folder = str(_value(MODELS_FOLDER, "") or "").strip()
    return folder if folder and os.path.isdir(folder) else ""


def folder_models():
    """``{name: path}`` of the ``.pt`` files in the models folder (checkpoints left out), sorted by name."""
    folder = models_folder()
    if not folder:
        return {}
    names = sorted(  # training's resume files (model_core.training.CHECKPOINT_SUFFIX) are no models
        entry for entry in os.listdir(folder)
        if entry.lower().endswith(".pt") and not entry.lower().endswith(".checkpoint.pt")
    )
    return {os.path.splitext(entry)[0]: os.path.join(folder, entry) for entry in names}
