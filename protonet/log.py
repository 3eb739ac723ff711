"""glog-style logging, so that Caffe's log tools read protonet's logs unchanged.

Lines look like ``I1122 00:35:08.123456  4242 solver.py:218] Iteration 100, loss = 0.3``:
severity letter, month and day, wall time with microseconds, thread id right-aligned in five
columns, ``file:line]`` and the message. Modules do ``log = get_logger(__name__)``. The level
comes from the ``PROTONET_LOG_LEVEL`` environment variable (DEBUG, INFO, WARNING, ERROR) or the
CLI's ``--log-level`` flag through :func:`set_level`.
"""

import logging
import os
import sys
import threading
import time

_LETTERS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
            logging.CRITICAL: "F"}
_ROOT = "protonet"


class GlogFormatter(logging.Formatter):
    """Formats a record as glog does (``I1122 00:35:08.123456  4242 file.py:12] msg``)."""

    def format(self, record):
        stamp = time.localtime(record.created)
        micros = int((record.created % 1) * 1_000_000)
        tid = threading.get_native_id() if record.thread is None else record.thread
        tid = tid % 100000 if tid is not None else os.getpid()
        head = (f"{_LETTERS.get(record.levelno, 'I')}{stamp.tm_mon:02d}{stamp.tm_mday:02d} "
                f"{stamp.tm_hour:02d}:{stamp.tm_min:02d}:{stamp.tm_sec:02d}.{micros:06d} "
                f"{tid:5d} {record.filename}:{record.lineno}] ")
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return head + message


class _StderrHandler(logging.StreamHandler):
    """A handler that always writes to the *current* sys.stderr (pytest's capsys swaps it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure():
    root = logging.getLogger(_ROOT)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(GlogFormatter())
        root.addHandler(handler)
        root.propagate = False
        root.setLevel(os.environ.get("PROTONET_LOG_LEVEL", "INFO").upper())
    return root


def get_logger(name):
    """The logger for a protonet module; all of them write glog lines to stderr."""
    _configure()
    if not name.startswith(_ROOT):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)


def set_level(level):
    """Set the level of every protonet logger (a name such as "INFO" or a logging constant)."""
    root = _configure()
    root.setLevel(level.upper() if isinstance(level, str) else level)
