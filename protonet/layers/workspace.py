"""Scratch memory shared by the layers of one net.

Layers of a net run one at a time, so scratch that a layer needs only *during* one call (the
convolution's column matrix, its transposed output) can live in one array per slot for the
whole net instead of one per layer. A layer asks for its slot by name in ``reshape``
(``reserve``) so that the largest size is allocated while the net is built, and takes a view
at the start of each call (``get``); it must not keep that view across calls, because a
later, larger request may replace the array.

A Net gives all its layers one Workspace (and a solver lends the train net's to its test
nets); a layer used on its own gets a private one.
"""

import numpy as np


class Workspace:
    """Named float32 scratch arrays that grow to the largest size asked for."""

    def __init__(self):
        self._arrays = {}

    def reserve(self, slot, count):
        """Make ``slot`` hold at least ``count`` elements (allocates only to grow)."""
        array = self._arrays.get(slot)
        if array is None or array.size < count:
            # Drop the old array first, so the two never need to fit in memory together.
            self._arrays.pop(slot, None)
            self._arrays[slot] = np.empty(count, dtype=np.float32)

    def get(self, slot, count):
        """A 1-D view of ``count`` elements of ``slot`` (reserved if it is too small)."""
        self.reserve(slot, count)
        return self._arrays[slot][:count]

    @property
    def nbytes(self):
        return sum(array.nbytes for array in self._arrays.values())
