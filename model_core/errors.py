"""Errors a user can act on.

Every failure caused by the input (a raster, a model file, a parameter) is raised
as :class:`CtstfmError` with one sentence that names the problem and the fix.
The command line prints it as one line and exits non-zero; the QGIS plugin turns
it into a ``QgsProcessingException``. Anything else is a bug and keeps its
traceback.
"""


class CtstfmError(Exception):
    """A problem with the input that the user can fix; the message says how."""


class Cancelled(CtstfmError):
    """The user cancelled the run; outputs in progress were removed."""

    def __init__(self, message="Cancelled by the user; no output was written."):
        super().__init__(message)


class OptionError(CtstfmError):
    """A bad option value, with the option named the way each face names it.

    ``template`` is the message with the options as ``{key}`` placeholders, ``key``
    being the core's keyword argument (``epochs``, ``lr``, ``out_model``). ``str()``
    names them by that key (right for Python callers); the command line renders
    them as its flags (``--epochs``) and QGIS as its parameters (``EPOCHS``) with
    :meth:`render`, so no face speaks another face's names.
    """

    def __init__(self, template, *options):
        self.template = template
        self.options = tuple(options)
        super().__init__(self.render(lambda key: key))

    def render(self, name_of):
        """The message with each option named by ``name_of(key)``."""
        return self.template.format(**{key: name_of(key) for key in self.options})
