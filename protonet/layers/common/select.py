"""Layers that pick batch items by the values of a second bottom: Filter and BatchReindex."""

import numpy as np

from ..base import Layer
from ..registry import register
from ._helpers import Scratch, read_indices


@register("Filter")
class FilterLayer(Layer):
    """y_t = the items x_t[n] whose selector s[n] is non-zero, in batch order.

    No parameters. Bottoms: x_0 … x_{k-1} (each (N, …)), then the selector s (N,) or (N, 1, …).
    Tops: y_t (number selected, x_t's other dims…), one per x_t.
    dx_t is dy_t at the selected items and 0 elsewhere; no gradient reaches s.
    Params: none. In place: no.
    """

    min_bottoms = 2
    min_tops = 1

    def setup(self, bottoms, tops):
        if len(tops) != len(bottoms) - 1:
            self.fail(f"Filter needs one top per filtered bottom: {len(bottoms) - 1} bottoms "
                      f"before the selector, {len(tops)} tops")
        self._selector_index = len(bottoms) - 1
        self._first_reshape = True

    def allow_force_backward(self, bottom_index):
        # Caffe dies in Backward when asked for a gradient w.r.t. the selector; never force it.
        return bottom_index != self._selector_index

    def reshape(self, bottoms, tops):
        selector = bottoms[-1]
        if selector.num_axes < 1 or any(d != 1 for d in selector.shape[1:]):
            self.fail(f"the selector (last bottom) must have shape (N,) or (N, 1, ...), got "
                      f"{selector.shape}")
        for i, blob in enumerate(bottoms[:-1]):
            if blob.num_axes < 1 or blob.shape[0] != selector.shape[0]:
                self.fail(f"bottom {i} (shape {blob.shape}) must have as many items as the "
                          f"selector (shape {selector.shape})")
        self.indices = np.flatnonzero(selector.data.reshape(-1))
        count = len(self.indices)
        if self._first_reshape:
            # Caffe quirk: the reshape at setup sizes the tops for the whole batch, since the
            # selector may not hold data yet; forward then resizes them (filter_layer.cpp).
            count = selector.shape[0]
            self._first_reshape = False
        for top, blob in zip(tops, bottoms):
            top.reshape((count,) + blob.shape[1:])

    def forward(self, bottoms, tops):
        for top, blob in zip(tops, bottoms):
            # The indices are in range, so "clip" never clips; it avoids np.take's buffering.
            np.take(blob.data, self.indices, axis=0, out=top.data, mode="clip")

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[-1]:
            self.fail("cannot backpropagate to the selector bottom of Filter; set "
                      "propagate_down: false for it")
        for top, blob, down in zip(tops, bottoms, propagate_down):
            if down:
                dx = blob.diff
                dx[...] = 0
                dx[self.indices] = top.diff


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """y[n] = x[index[n]]: gathers (and may repeat or drop) batch items.

    No parameters. Bottoms: x (N, …), index (M,) of values in [0, N) (truncated to integers, as
    Caffe's static_cast does). Top: y (M, x's other dims…).
    dx[k] = Σ_{n: index[n] = k} dy[n]; no gradient reaches index. Params: none. In place: no.
    """

    exact_bottoms = 2
    exact_tops = 1

    def setup(self, bottoms, tops):
        self._index_buf = Scratch(np.int64)
        self._bad_buf = Scratch(np.bool_)

    def allow_force_backward(self, bottom_index):
        # Caffe dies in Backward when asked for a gradient w.r.t. the indices; never force it.
        return bottom_index != 1

    def reshape(self, bottoms, tops):
        x, index = bottoms
        if index.num_axes != 1:
            self.fail(f"the index bottom must be 1-D, got shape {index.shape}")
        if x.num_axes < 1:
            self.fail("the data bottom needs a batch axis, got a scalar")
        tops[0].reshape(index.shape + x.shape[1:])
        self._index = self._index_buf.get(index.shape)
        self._bad = self._bad_buf.get(index.shape)

    def forward(self, bottoms, tops):
        x, index = bottoms
        read_indices(self, index.data, x.shape[0], self._index, self._bad, what="index",
                     integral=False)
        np.take(x.data, self._index, axis=0, out=tops[0].data, mode="clip")

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[1]:
            self.fail("cannot backpropagate to the index bottom of BatchReindex; set "
                      "propagate_down: false for it")
        if propagate_down[0]:
            dx = bottoms[0].diff
            dx[...] = 0
            np.add.at(dx, self._index, tops[0].diff)
