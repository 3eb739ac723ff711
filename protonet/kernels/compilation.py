"""How long Numba spent compiling kernels in this process, so commands can say so.

Kernels compile on first use (``cache=True`` keeps the result on disk), so a first run on a
machine spends seconds to minutes inside its first iteration. Commands print that time
(``report``) instead of hiding it. Numba fires a ``numba:compile`` event only for a real
compilation, not for a cache load; nested events (a kernel compiling a helper) count once.
"""

import threading
import time

from numba.core import event


class _CompileTimer(event.Listener):
    def __init__(self):
        self.kernels = 0
        self.seconds = 0.0
        self._depth = 0
        self._start = 0.0

    def on_start(self, ev):
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def on_end(self, ev):
        self._depth -= 1
        if self._depth == 0:
            self.kernels += 1
            self.seconds += time.perf_counter() - self._start


_timer = None
_lock = threading.Lock()


def start():
    """Start counting compilations (idempotent)."""
    global _timer
    with _lock:
        if _timer is None:
            _timer = _CompileTimer()
            event.register("numba:compile", _timer)


def totals():
    """(kernels compiled, seconds spent) since ``start()``."""
    return (_timer.kernels, _timer.seconds) if _timer is not None else (0, 0.0)


def report(log, what="the first iteration"):
    """Log what Numba compiled so far, in one line."""
    kernels, seconds = totals()
    if kernels:
        log.info("Numba compiled %d kernels in %.1f s during %s (once per machine: later "
                 "runs load them from the cache)", kernels, seconds, what)
    else:
        log.info("Numba kernels loaded from the cache: nothing compiled during %s", what)
