"""Progress and cancellation, shared by the command line and the QGIS plugin.

Long-running functions take a ``progress`` object with two methods:
``update(fraction, message=None)`` with ``fraction`` in [0, 1], and
``canceled() -> bool``. They call ``check()`` between tiles or batches, which
raises :class:`~model_core.errors.Cancelled` when the user asked to stop.
"""

import sys
import time

from .errors import Cancelled


class Progress:
    """Silent progress: never cancelled. Subclasses report somewhere."""

    def update(self, fraction, message=None):
        pass

    def info(self, message):
        pass

    def warning(self, message):
        """Something the user should act on; by default an info line starting with "Warning:"."""
        self.info(f"Warning: {message}")

    def canceled(self):
        return False

    def check(self):
        if self.canceled():
            raise Cancelled()

    def sub(self, start, stop):
        """A view of this progress that maps [0, 1] onto [start, stop]."""
        return SubProgress(self, start, stop)


class SubProgress(Progress):
    def __init__(self, parent, start, stop):
        self.parent, self.start, self.stop = parent, start, stop

    def update(self, fraction, message=None):
        self.parent.update(self.start + (self.stop - self.start) * fraction, message)

    def info(self, message):
        self.parent.info(message)

    def warning(self, message):
        self.parent.warning(message)

    def canceled(self):
        return self.parent.canceled()


class ConsoleProgress(Progress):
    """A one-line progress bar on stderr for the command line."""

    def __init__(self, label="", stream=None, quiet=False):
        self.label = label
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()
        self._last_draw = 0.0

    def update(self, fraction, message=None):
        if self.quiet:
            return
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        fraction = min(max(fraction, 0.0), 1.0)
        width = 30
        filled = int(round(width * fraction))
        bar = "#" * filled + "-" * (width - filled)
        elapsed = now - self.started
        text = f"\r{self.label} [{bar}] {100 * fraction:5.1f}% {elapsed:6.1f}s"
        if message:
            text += f" {message}"
        self.stream.write(text[:160].ljust(80))
        if fraction >= 1.0:
            self.stream.write("\n")
        self.stream.flush()

    def info(self, message):
        if not self.quiet:
            self.stream.write(f"\r{message}\n")
            self.stream.flush()
