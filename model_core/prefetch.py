"""Reading ahead in one background thread: the one prefetcher of the tiling engine and of training.

:class:`Prefetcher` calls ``produce(item)`` for each item, in order, in a single
background thread and hands the results out in the same order, so the work the
caller does on one result overlaps the reading of the next (GDAL and torch
release the GIL). One producer thread means ``produce`` is never called
concurrently with itself, and a random generator it draws from sees the same
sequence of calls as without prefetching.
"""

import queue
import threading


class Prefetcher:
    """Iterate over ``produce(item)`` for ``items``, read up to ``depth`` results ahead.

    An exception in ``produce`` is raised to the consumer at the result it would
    have given. :meth:`close` (always call it, e.g. in ``finally``) stops the
    thread after the call in progress, without producing the rest.
    """

    def __init__(self, produce, items, depth=2, name="ctstfm-prefetch"):
        self._queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._items = list(items)
        self._thread = threading.Thread(target=self._work, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _put(self, result):
        while not self._stop.is_set():
            try:
                self._queue.put(result, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, produce):
        try:
            for item in self._items:
                if self._stop.is_set() or not self._put(produce(item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)

    def __iter__(self):
        for _ in self._items:
            result = self._queue.get()
            if isinstance(result, BaseException):
                raise result
            yield result

    def close(self):
        self._stop.set()
        self._thread.join()
