"""Blob: a float32 N-D array with its gradient, as in Caffe.

``data`` and ``diff`` are C-contiguous float32 numpy arrays of the blob's shape. Reshaping keeps
the underlying buffer when the element count does not grow, so a net that reshapes back and
forth does not reallocate. ``diff`` is allocated on first use: a net that never runs backward
(deploy, TEST) never pays for gradients.
"""

import gc
import os
import weakref

import math

import numpy as np

from .errors import ProtonetError

# A blob larger than this many elements is almost certainly a forged or mistyped shape.
MAX_BLOB_COUNT = 2**34

# Bytes held by live blob buffers (data and diff) in this process; see _allocate.
_LIVE = {"bytes": 0}


def _memory_limit():
    """This machine's (or container's) memory in bytes; None if unknown."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    return min(limits) if limits else None


_MEMORY_LIMIT = _memory_limit()


def _release(nbytes):
    _LIVE["bytes"] -= nbytes


def _allocate(count, shape):
    """A zeroed float32 buffer of ``count`` elements, or a ProtonetError instead of an OOM kill.

    All blobs of the process together may not exceed the machine's memory: a forged or mistyped
    shape (a weights file, a prototxt) fails here, before anything is allocated, instead of
    being lazily mapped by np.zeros and killing the process when a filler or forward touches it.
    """
    nbytes = 4 * count
    if _MEMORY_LIMIT is not None and _LIVE["bytes"] + nbytes > _MEMORY_LIMIT:
        gc.collect()   # blobs of nets that are gone but not yet collected
        if _LIVE["bytes"] + nbytes > _MEMORY_LIMIT:
            raise ProtonetError(
                f"blob shape {shape} needs {nbytes / 2**30:.3g} GB; with the "
                f"{_LIVE['bytes'] / 2**30:.3g} GB of blobs already allocated that is more than "
                f"this machine's {_MEMORY_LIMIT / 2**30:.3g} GB of memory; check the shapes "
                f"(batch size, num_output, input dimensions)")
    try:
        buf = np.zeros(count, dtype=np.float32)
    except MemoryError:
        raise ProtonetError(f"out of memory allocating a blob of shape {shape} "
                            f"({nbytes / 2**30:.3g} GB); check the shapes (batch size, "
                            f"num_output, input dimensions)") from None
    _LIVE["bytes"] += nbytes
    weakref.finalize(buf, _release, nbytes)
    return buf


def _as_shape(dims):
    if len(dims) == 1 and not np.isscalar(dims[0]):
        dims = tuple(dims[0])
    shape = tuple(int(d) for d in dims)
    for d in shape:
        if d < 0:
            raise ProtonetError(f"blob shape {shape} has a negative dimension")
    count = 1
    for d in shape:   # Python ints: np.prod would wrap around for a forged shape
        count *= d
    if count > MAX_BLOB_COUNT:
        raise ProtonetError(f"blob shape {shape} has {count} elements, more than the limit "
                            f"of {MAX_BLOB_COUNT}")
    return shape, count


class Blob:
    """A named N-D float32 array with a gradient of the same shape.

    Attributes mirror pycaffe: ``data``, ``diff``, ``shape``, ``count``, ``num``, ``channels``,
    ``height``, ``width`` and ``reshape(*dims)``.
    """

    def __init__(self, *dims):
        self._shape = ()
        self._count = 1
        self._data_buf = np.zeros(1, dtype=np.float32)
        self._diff_buf = None
        self._data = self._data_buf.reshape(())
        self._diff = None
        if dims:
            self.reshape(*dims)

    # ---- shape -----------------------------------------------------------------------------
    def reshape(self, *dims):
        """Set a new shape; reallocate only if the element count grows (contents then undefined)."""
        shape, count = _as_shape(dims)
        if shape == self._shape and self._data is not None:
            return
        if count > self._data_buf.size:
            self._data_buf = _allocate(count, shape)
            self._diff_buf = None
        self._shape, self._count = shape, count
        self._data = self._data_buf[:count].reshape(shape)
        self._diff = None
        if self._diff_buf is not None and count <= self._diff_buf.size:
            self._diff = self._diff_buf[:count].reshape(shape)

    def reshape_like(self, other):
        self.reshape(other.shape)

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

    @property
    def num_axes(self):
        return len(self._shape)

    def count_axes(self, start, end=None):
        """Product of dimensions start..end-1 (Caffe's ``count(start, end)``)."""
        end = len(self._shape) if end is None else end
        # math.prod of Python ints: exact, and a tenth of np.prod's cost on a short tuple (this
        # runs in every reshape, which matters for small layers).
        return math.prod(self._shape[start:end]) if end > start else 1

    def canonical_axis(self, axis):
        """A possibly negative axis index as a non-negative one, checked against num_axes."""
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise ProtonetError(f"axis {axis} is out of range for a blob with {n} axes "
                                f"(shape {self._shape})")
        return axis + n if axis < 0 else axis

    def _legacy(self, index):
        # Caffe quirk: legacy 4-D accessors pad missing trailing axes with 1 (blob.hpp LegacyShape).
        n = len(self._shape)
        if n > 4:
            raise ProtonetError(f"legacy num/channels/height/width asked of a {n}-D blob")
        return self._shape[index] if index < n else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    # ---- storage ---------------------------------------------------------------------------
    @property
    def data(self):
        return self._data

    @property
    def diff(self):
        if self._diff is None:
            if self._diff_buf is None or self._diff_buf.size < self._count:
                self._diff_buf = _allocate(max(self._count, self._data_buf.size), self._shape)
            self._diff = self._diff_buf[:self._count].reshape(self._shape)
        return self._diff

    @data.setter
    def data(self, values):
        # pycaffe scripts write `blob.data = x` or `blob.data += x`: copy into the array in
        # place, so layers holding the array keep seeing the blob's storage.
        self._data[...] = values

    @diff.setter
    def diff(self, values):
        self.diff[...] = values

    @property
    def has_diff(self):
        """True once the gradient buffer exists (a forward-only net never allocates it)."""
        return self._diff is not None

    def share_data(self, other):
        """Use ``other``'s data buffer (Caffe's ShareData); counts must match, shapes may differ."""
        if other._count != self._count:
            raise ProtonetError(f"cannot share data of a blob of shape {other._shape} with one "
                                f"of shape {self._shape}")
        self._data_buf = other._data_buf
        self._data = other._data_buf[:self._count].reshape(self._shape)

    def share_diff(self, other):
        """Make this blob use ``other``'s gradient buffer (Caffe's ShareDiff)."""
        other.diff  # noqa: B018 - allocate it so both sides see the same array
        self._diff_buf = other._diff_buf
        self._diff = other._diff_buf[:self._count].reshape(self._shape)

    def share(self, other):
        """Share both data and diff with ``other``: after this the two blobs are one."""
        self.share_data(other)
        self.share_diff(other)

    def __repr__(self):
        return f"Blob(shape={self._shape})"
