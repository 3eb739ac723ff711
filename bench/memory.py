"""Peak resident memory of one benchmark worker, and the memory a net needs on paper.

Each net is measured in its own subprocess (``bench/nets.py`` starts one worker per framework,
net and phase), so no other net's arrays or another framework's thread pool share the numbers.

- ``rss_bytes()``: the process's resident set now (``VmRSS``).
- ``reset_peak()`` / ``peak_bytes()``: Linux keeps a high-water mark of the resident set
  (``VmHWM``); writing 5 to ``/proc/self/clear_refs`` resets it to the current RSS. The worker
  resets it after warm-up, so the peak covers the timed iterations only. Where that file is not
  writable the peak is ``resource.getrusage`` maxrss (the whole process lifetime).
- ``maxrss_bytes()``: ``getrusage(RUSAGE_SELF).ru_maxrss``, always reported beside it.
- ``net_bytes(net, history)``: what the issue calls the compulsory memory: every blob's data
  and (allocated) diff, each buffer once (in-place tops share their bottom's blob), plus every
  learnable param's data and diff and the solver's history arrays.

The reported ratio is ``(peak − baseline) / net_bytes`` where the baseline is the RSS after the
interpreter, numpy, Numba (with every kernel the net uses loaded, from a warm-up at batch 1) or
torch are in memory, so it measures what the net costs, not the Python runtime.
"""

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field):
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def maxrss_bytes():
    """The process's lifetime peak RSS (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes():
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else maxrss_bytes()


def reset_peak():
    """Reset the RSS high-water mark to the current RSS; False where the kernel refuses."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_bytes():
    """The RSS high-water mark since the last ``reset_peak`` (or the process start)."""
    kb = _status_kb("VmHWM")
    return kb * 1024 if kb is not None else maxrss_bytes()


def _array_bytes(array):
    return 0 if array is None else int(array.nbytes)


def net_bytes(net, history=()):
    """Sum of blob data + allocated diffs, param data + diffs and solver history, in bytes.

    Reads ``Blob._diff`` rather than ``Blob.diff`` so that measuring does not allocate a diff the
    net never touched (a TEST net must not pay for gradients).
    """
    blobs = {id(b): b for b in net._blobs}
    for blob in net.learnable_params:
        blobs[id(blob)] = blob
    data = sum(_array_bytes(b.data) for b in blobs.values())
    diff = sum(_array_bytes(b._diff) for b in blobs.values())
    hist = sum(_array_bytes(h) for h in history)
    return {"data_bytes": data, "diff_bytes": diff, "history_bytes": hist,
            "total_bytes": data + diff + hist}
