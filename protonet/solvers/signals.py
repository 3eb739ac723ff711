"""What SIGINT, SIGHUP and SIGTERM do to a training run, as Caffe's SignalHandler.

Each signal maps to an effect: ``"snapshot"`` (write a snapshot after the current iteration and
go on), ``"stop"`` (finish the current iteration, then leave the loop; the final snapshot rule
still applies and the log says "Optimization stopped early.") or ``"none"``. Caffe's defaults:
SIGINT stops, SIGHUP snapshots. Caffe does not handle SIGTERM; protonet gives it its own effect,
"stop" by default, so that a batch scheduler's termination leaves a snapshot behind.

The handler only records that a signal came; the solver polls :meth:`SignalHandler.check`
once per iteration (and once per test batch), and each signal is reported once.
"""

import signal
import threading

from ..errors import ProtonetError

NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"
EFFECTS = (SNAPSHOT, STOP, NONE)


def check_effect(value, flag):
    if value not in EFFECTS:
        raise ProtonetError(f"invalid signal effect '{value}' for {flag}; use one of "
                            f"{', '.join(EFFECTS)}")
    return value


class SignalHandler:
    """Context manager: installs the handlers on entry (main thread only), restores on exit."""

    def __init__(self, sigint_effect=STOP, sighup_effect=SNAPSHOT, sigterm_effect=STOP):
        # Checked in Caffe's order: SIGHUP first, then SIGINT (signal_handler.cpp). Windows has
        # no SIGHUP.
        wanted = (("SIGHUP", sighup_effect), ("SIGINT", sigint_effect),
                  ("SIGTERM", sigterm_effect))
        self.effects = {getattr(signal, name): check_effect(effect, name.lower() + "_effect")
                        for name, effect in wanted if hasattr(signal, name)}
        self.pending = {signum: False for signum in self.effects}
        self._previous = {}

    def _handle(self, signum, frame):
        self.pending[signum] = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.effects:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        return False

    def check(self):
        """The effect requested since the last call ("none" if no signal came)."""
        for signum, effect in self.effects.items():
            if self.pending[signum]:
                self.pending[signum] = False
                return effect
        return NONE
