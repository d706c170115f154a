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
