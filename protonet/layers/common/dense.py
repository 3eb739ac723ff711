"""Layers that own learnable blobs: InnerProduct, Embed and Parameter."""

import numpy as np

from ... import threads
from ...fillers import fill
from ..base import Layer
from ..registry import register
from ._helpers import Scratch, canonical_axis, read_indices

# Below this many rows (the batch), x · Wᵀ is a poor GEMM shape for OpenBLAS (M tiny, the
# threads split M); the same product as yᵀ = W · xᵀ into a scratch buffer runs 2–5× faster
# (fc6 at batch 16: 168 → 35 ms on 2 cores), and the transpose back costs M · N copies.
SMALL_BATCH_ROWS = 64


def _make_params(layer, shapes, fillers):
    """Check blobs loaded from a file against ``shapes``, or create and fill them."""
    if layer.blobs:
        layer.check_param_shapes(shapes)
        return
    for shape, filler in zip(shapes, fillers):
        fill(layer.add_param_blob(shape).data, filler)


def _accumulate_bias_grad(layer, index, top_diff2d, scratch):
    """param_diff[index] += Σ_rows top_diff2d (Caffe's gemv with a ones vector)."""
    if not layer.param_propagate_down[index]:
        return
    bias_diff = layer.blobs[index].diff
    np.sum(top_diff2d, axis=0, out=scratch)
    np.add(bias_diff, scratch, out=bias_diff)


@register("InnerProduct")
class InnerProductLayer(Layer):
    """y = x · Wᵀ + b, with x the bottom flattened to (M, K) from ``axis`` on.

    inner_product_param: num_output (required, > 0), bias_term (true), weight_filler and
    bias_filler (constant 0), axis (1; negative counts from the end), transpose (false; true
    stores W as (K, num_output) and computes y = x · W).
    Bottom: x (d_0, …, d_{axis-1}, d_axis, …, d_last); M = d_0·…·d_{axis-1}, K = d_axis·…·d_last,
    fixed at setup.
    Top: y (d_0, …, d_{axis-1}, num_output).
    Params: W (num_output, K), or (K, num_output) with transpose; b (num_output,) if bias_term.
    In place: no.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            self.fail("inner_product_param.num_output must be positive, got 0; set num_output")
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose)
        self.axis_param = int(p.axis)
        axis = canonical_axis(self, bottoms[0], self.axis_param, "inner_product_param.axis")
        self.k = bottoms[0].count_axes(axis)
        w_shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        shapes = [w_shape, (self.num_output,)][:2 if self.bias_term else 1]
        _make_params(self, shapes, [p.weight_filler, p.bias_filler])
        self._bias_grad = np.empty(self.num_output, dtype=np.float32)
        self._y_t_buf = Scratch(np.float32)
        self._dx_t_buf = Scratch(np.float32)

    def reshape(self, bottoms, tops):
        x = bottoms[0]
        axis = canonical_axis(self, x, self.axis_param, "inner_product_param.axis")
        k = x.count_axes(axis)
        if k != self.k:
            self.fail(f"input size incompatible with the weights: {self.k} inputs per item at "
                      f"setup, now {k} (bottom shape {x.shape}, axis {axis})")
        self.m = x.count_axes(0, axis)
        tops[0].reshape(x.shape[:axis] + (self.num_output,))
        self.small_batch = self.m < SMALL_BATCH_ROWS and not self.transpose
        if self.small_batch:
            self._y_t = self._y_t_buf.get((self.num_output, self.m))
            self._dx_t = self._dx_t_buf.get((self.k, self.m))

    def forward(self, bottoms, tops):
        x = bottoms[0].data.reshape(self.m, self.k)
        y = tops[0].data.reshape(self.m, self.num_output)
        w = self.blobs[0].data
        if self.small_batch:
            threads.matmul(w, x.T, self._y_t)
            if self.bias_term:
                np.add(self._y_t.T, self.blobs[1].data, out=y)
            else:
                np.copyto(y, self._y_t.T)
            return
        threads.matmul(x, w if self.transpose else w.T, y)
        if self.bias_term:
            np.add(y, self.blobs[1].data, out=y)

    def backward(self, tops, propagate_down, bottoms):
        x = bottoms[0].data.reshape(self.m, self.k)
        dy = tops[0].diff.reshape(self.m, self.num_output)
        w = self.blobs[0].data
        if self.param_propagate_down[0]:
            # Caffe quirk: param diffs accumulate (inner_product_layer.cpp, gemm with beta 1).
            if self.transpose:
                threads.matmul(x.T, dy, self.blobs[0].diff, accumulate=True)
            else:
                threads.matmul(dy.T, x, self.blobs[0].diff, accumulate=True)
        if self.bias_term:
            _accumulate_bias_grad(self, 1, dy, self._bias_grad)
        if propagate_down[0]:
            dx = bottoms[0].diff.reshape(self.m, self.k)
            if self.small_batch:
                threads.matmul(w.T, dy.T, self._dx_t)
                np.copyto(dx, self._dx_t.T)
            else:
                threads.matmul(dy, w.T if self.transpose else w, dx)


@register("Embed")
class EmbedLayer(Layer):
    """y[..., :] = W[x[...], :] + b: a lookup table indexed by the integer values of x.

    embed_param: num_output (required, > 0), input_dim (required, > 0: the number of rows of
    W), bias_term (true), weight_filler and bias_filler (constant 0).
    Bottom: x (any shape) of whole numbers in [0, input_dim), stored as float32; anything else
    is an error (Caffe only DCHECKs it).
    Top: y (x's shape…, num_output).
    Params: W (input_dim, num_output) (transposed from InnerProduct's layout); b (num_output,)
    if bias_term.
    No gradient reaches x (it holds indices). In place: no.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.embed_param
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        if self.num_output <= 0:
            self.fail("embed_param.num_output must be positive, got 0; set num_output")
        if self.input_dim <= 0:
            self.fail("embed_param.input_dim must be positive, got 0; set input_dim to the "
                      "number of distinct indices")
        self.bias_term = bool(p.bias_term)
        shapes = [(self.input_dim, self.num_output), (self.num_output,)]
        _make_params(self, shapes[:2 if self.bias_term else 1], [p.weight_filler, p.bias_filler])
        self._bias_grad = np.empty(self.num_output, dtype=np.float32)
        self._index_buf = Scratch(np.int64)
        self._bad_buf = Scratch(np.bool_)

    def allow_force_backward(self, bottom_index):
        # Caffe dies in Backward when asked for a gradient w.r.t. the indices; never force it.
        return False

    def reshape(self, bottoms, tops):
        x = bottoms[0]
        self.m = x.count
        tops[0].reshape(x.shape + (self.num_output,))
        self._index = self._index_buf.get((self.m,))
        self._bad = self._bad_buf.get((self.m,))

    def forward(self, bottoms, tops):
        read_indices(self, bottoms[0].data.reshape(-1), self.input_dim, self._index, self._bad,
                     what="index", integral=True)
        y = tops[0].data.reshape(self.m, self.num_output)
        # The indices were checked above, so "clip" never clips; it avoids np.take's buffering.
        np.take(self.blobs[0].data, self._index, axis=0, out=y, mode="clip")
        if self.bias_term:
            np.add(y, self.blobs[1].data, out=y)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            self.fail("cannot backpropagate to the index bottom of Embed; set propagate_down: "
                      "false for it")
        dy = tops[0].diff.reshape(self.m, self.num_output)
        if self.param_propagate_down[0]:
            # Repeated indices add up, in index order, as Caffe's axpy loop does.
            np.add.at(self.blobs[0].diff, self._index, dy)
        if self.bias_term:
            _accumulate_bias_grad(self, 1, dy, self._bias_grad)


@register("Parameter")
class ParameterLayer(Layer):
    """y = P: exposes a learnable blob as a top.

    parameter_param: shape (BlobShape; the blob starts at zero, no filler, as in Caffe).
    Bottoms: none. Top: y of ``shape``. Params: P (shape).
    Caffe shares P's data and diff with the top; we copy P into the top in forward and add the
    top diff into P's diff in backward (param diffs accumulate like every other layer's).
    In place: no.
    """

    exact_bottoms = 0
    exact_tops = 1

    def setup(self, bottoms, tops):
        self.shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        if self.blobs:
            self.check_param_shapes([self.shape])
        else:
            self.add_param_blob(self.shape)

    def reshape(self, bottoms, tops):
        tops[0].reshape(self.shape)

    def forward(self, bottoms, tops):
        tops[0].data[...] = self.blobs[0].data

    def backward(self, tops, propagate_down, bottoms):
        if self.param_propagate_down[0]:
            diff = self.blobs[0].diff
            np.add(diff, tops[0].diff, out=diff)
