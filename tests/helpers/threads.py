"""Running a piece of a test on a given number of Numba (and so protonet) threads."""

import numba


def with_threads(count, function):
    """``function()`` with ``numba.set_num_threads(count)``; the previous count is restored."""
    saved = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        return function()
    finally:
        numba.set_num_threads(saved)


def on_one_thread(function):
    return with_threads(1, function)
