"""Small helpers shared by the common layers: axis checks, reusable scratch, index bottoms."""

import numpy as np


def canonical_axis(layer, blob, axis, field):
    """``axis`` (negative counts from the end) as an index into ``blob``'s axes, or fail.

    Caffe's ``Blob::CanonicalAxisIndex``: -num_axes <= axis < num_axes.
    """
    n = blob.num_axes
    if not -n <= axis < n:
        layer.fail(f"{field} {axis} is out of range for a bottom with {n} axes (shape "
                   f"{blob.shape}); use an axis in [{-n}, {n - 1}]")
    return axis + n if axis < 0 else axis


class Scratch:
    """A work buffer reused across reshapes: it reallocates only when the element count grows."""

    def __init__(self, dtype=np.float32):
        self.dtype = dtype
        self._buf = np.empty(0, dtype=dtype)

    def get(self, shape):
        """A C-contiguous array of ``shape`` over the buffer (contents undefined)."""
        shape = tuple(int(d) for d in shape)
        count = int(np.prod(shape, dtype=np.int64))
        if count > self._buf.size:
            self._buf = np.empty(count, dtype=self.dtype)
        return self._buf[:count].reshape(shape)


def read_indices(layer, values, upper, out, bad, *, what, integral):
    """Convert float32 index ``values`` into ints in ``out`` (truncating, as static_cast<int>).

    Fails naming the first value that is not in [0, upper) or, with ``integral``, not a whole
    number. ``out`` (int64) and ``bad`` (bool) have the shape of ``values`` and are scratch.
    """
    if values.size == 0:
        return
    lo = values.min()
    hi = values.max()
    if not (lo >= 0 and hi < upper):
        pos = int(np.flatnonzero(~((values >= 0) & (values < upper)))[0])
        layer.fail(f"{what} {values.flat[pos]:g} at position {pos} is out of range; indices must "
                   f"be in [0, {upper})")
    np.copyto(out, values, casting="unsafe")
    if integral:
        np.not_equal(out, values, out=bad)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            layer.fail(f"{what} {values.flat[pos]:g} at position {pos} is not a whole number")
