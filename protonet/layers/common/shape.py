"""Data-movement layers: Concat, Slice, Split, Flatten, Reshape, Tile, Silence.

None of them computes anything: forward copies bottom data into the tops (numpy slice
assignments over ``(outer, axis, inner)`` views) and backward copies or sums diffs back.
Caffe quirk: Caffe makes the tops of Flatten, Reshape and Split (and of a one-blob Concat or
Slice) share the bottom's memory (ShareData/ShareDiff). Our blobs own their buffers, so we copy;
the values are the same.
"""

import numpy as np

from ..base import Layer
from ..registry import register
from ._helpers import canonical_axis


def _refuse_in_place(layer, bottoms, tops):
    """Caffe's CHECK_NE(top, bottom) in Flatten, Reshape and Split."""
    if any(top is bottoms[0] for top in tops):
        layer.fail(f"{layer.type} does not allow in-place computation; give the top its own name")


def _read_axis_fields(layer, message, prefix, legacy_name):
    """(axis, legacy_axis) from concat_param / slice_param; legacy_axis None unless set."""
    if message.HasField("axis") and message.HasField(legacy_name):
        layer.fail(f"give either {prefix}.axis or {prefix}.{legacy_name} (deprecated), not both")
    legacy = int(getattr(message, legacy_name)) if message.HasField(legacy_name) else None
    return int(message.axis), legacy


def _resolve_axis(layer, blob, axis, legacy_axis, prefix, legacy_name):
    """Caffe reads the deprecated uint32 concat_dim / slice_dim when set (never negative)."""
    if legacy_axis is None:
        return canonical_axis(layer, blob, axis, f"{prefix}.axis")
    if legacy_axis >= blob.num_axes:
        layer.fail(f"{prefix}.{legacy_name} {legacy_axis} is out of range for a bottom with "
                   f"{blob.num_axes} axes (shape {blob.shape})")
    return legacy_axis


def _bounds(sizes):
    """[(start, stop)] of consecutive pieces of the given sizes."""
    stops = np.cumsum(sizes, dtype=np.int64).tolist()
    return list(zip([0] + stops[:-1], stops))


def _pieces(array, outer, bounds, inner):
    """(outer, stop - start, inner) views of ``array`` seen as (outer, total, inner)."""
    whole = array.reshape(outer, bounds[-1][1], inner)
    return [whole[:, start:stop] for start, stop in bounds]


@register("Concat")
class ConcatLayer(Layer):
    """y = the bottoms joined along ``axis``.

    concat_param: axis (1; negative counts from the end), concat_dim (deprecated uint32 alias of
    axis; give one or the other).
    Bottoms: x_i, all of the same shape except along ``axis``.
    Top: y, with shape[axis] = Σ_i x_i.shape[axis].
    Params: none. In place: no.
    """

    min_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        self.axis_param, self.legacy_axis = _read_axis_fields(
            self, self.param.concat_param, "concat_param", "concat_dim")

    def reshape(self, bottoms, tops):
        first = bottoms[0]
        axis = _resolve_axis(self, first, self.axis_param, self.legacy_axis, "concat_param",
                             "concat_dim")
        for i, blob in enumerate(bottoms[1:], start=1):
            same = blob.num_axes == first.num_axes and all(
                a == b for j, (a, b) in enumerate(zip(blob.shape, first.shape)) if j != axis)
            if not same:
                self.fail(f"bottom {i} has shape {blob.shape} but bottom 0 has {first.shape}; "
                          f"all bottoms must have the same shape except along axis {axis}")
        sizes = [blob.shape[axis] for blob in bottoms]
        self.bounds = _bounds(sizes)
        self.outer = first.count_axes(0, axis)
        self.inner = first.count_axes(axis + 1)
        tops[0].reshape(first.shape[:axis] + (sum(sizes),) + first.shape[axis + 1:])

    def forward(self, bottoms, tops):
        pieces = _pieces(tops[0].data, self.outer, self.bounds, self.inner)
        for piece, blob in zip(pieces, bottoms):
            piece[...] = blob.data.reshape(piece.shape)

    def backward(self, tops, propagate_down, bottoms):
        pieces = _pieces(tops[0].diff, self.outer, self.bounds, self.inner)
        for piece, blob, down in zip(pieces, bottoms, propagate_down):
            if down:
                blob.diff.reshape(piece.shape)[...] = piece


@register("Slice")
class SliceLayer(Layer):
    """y_i = x[..., start_i:stop_i, ...] along ``axis``: the inverse of Concat.

    slice_param: axis (1; negative counts from the end), slice_dim (deprecated uint32 alias of
    axis), slice_point (repeated: the start of each top after the first, strictly increasing;
    give one fewer than the number of tops, or none to split into equal parts).
    Bottom: x. Tops: y_i, x's shape with shape[axis] = the slice's length.
    Params: none. In place: no.
    """

    exact_bottoms = 1
    min_tops = 1

    def setup(self, bottoms, tops):
        self.axis_param, self.legacy_axis = _read_axis_fields(
            self, self.param.slice_param, "slice_param", "slice_dim")
        self.slice_points = [int(p) for p in self.param.slice_param.slice_point]

    def _sizes(self, dim, n_tops, axis):
        if not self.slice_points:
            if dim % n_tops:
                self.fail(f"{n_tops} tops cannot evenly divide the {dim} entries of axis {axis}; "
                          f"give slice_point or change the number of tops")
            return [dim // n_tops] * n_tops
        if len(self.slice_points) != n_tops - 1:
            self.fail(f"slice_point given {len(self.slice_points)} times for {n_tops} tops; give "
                      f"one fewer than the number of tops")
        if n_tops > dim:
            self.fail(f"{n_tops} tops for only {dim} entries along axis {axis}")
        bounds = [0] + self.slice_points
        if any(b <= a for a, b in zip(bounds[:-1], bounds[1:])) or bounds[-1] > dim:
            self.fail(f"slice_point {self.slice_points} must be positive, strictly increasing "
                      f"and at most {dim} (the length of axis {axis})")
        return [b - a for a, b in zip(bounds, bounds[1:] + [dim])]

    def reshape(self, bottoms, tops):
        x = bottoms[0]
        axis = _resolve_axis(self, x, self.axis_param, self.legacy_axis, "slice_param",
                             "slice_dim")
        sizes = self._sizes(x.shape[axis], len(tops), axis)
        self.bounds = _bounds(sizes)
        self.outer = x.count_axes(0, axis)
        self.inner = x.count_axes(axis + 1)
        for top, size in zip(tops, sizes):
            top.reshape(x.shape[:axis] + (size,) + x.shape[axis + 1:])

    def forward(self, bottoms, tops):
        pieces = _pieces(bottoms[0].data, self.outer, self.bounds, self.inner)
        for piece, top in zip(pieces, tops):
            top.data.reshape(piece.shape)[...] = piece

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        pieces = _pieces(bottoms[0].diff, self.outer, self.bounds, self.inner)
        for piece, top in zip(pieces, tops):
            piece[...] = top.diff.reshape(piece.shape)


@register("Split")
class SplitLayer(Layer):
    """y_i = x for every top; dx = Σ_i dy_i. The net inserts it where one blob feeds many layers.

    No parameters. Bottom: x. Tops: y_i, x's shape. Params: none.
    In place: no (Caffe quirk: split_layer.cpp refuses it).
    """

    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottoms, tops):
        _refuse_in_place(self, bottoms, tops)
        for top in tops:
            top.reshape(bottoms[0].shape)

    def forward(self, bottoms, tops):
        for top in tops:
            top.data[...] = bottoms[0].data

    def backward(self, tops, propagate_down, bottoms):
        if not propagate_down[0]:
            return
        dx = bottoms[0].diff
        if len(tops) == 1:
            dx[...] = tops[0].diff
            return
        # Same order as Caffe: dy_0 + dy_1, then the others added one by one.
        np.add(tops[0].diff, tops[1].diff, out=dx)
        for top in tops[2:]:
            np.add(dx, top.diff, out=dx)


class _ViewLayer(Layer):
    """A top that is the bottom with another shape (Flatten, Reshape): copy data and diff."""

    exact_bottoms = 1
    exact_tops = 1

    def top_shape(self, bottom):
        raise NotImplementedError

    def reshape(self, bottoms, tops):
        _refuse_in_place(self, bottoms, tops)
        shape = self.top_shape(bottoms[0])
        count = int(np.prod(shape, dtype=np.int64))
        if count != bottoms[0].count:
            self.fail(f"output shape {shape} has {count} elements, input shape "
                      f"{bottoms[0].shape} has {bottoms[0].count}")
        tops[0].reshape(shape)

    def forward(self, bottoms, tops):
        tops[0].data[...] = bottoms[0].data.reshape(tops[0].shape)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            bottoms[0].diff[...] = tops[0].diff.reshape(bottoms[0].shape)


@register("Flatten")
class FlattenLayer(_ViewLayer):
    """y = x with axes ``axis``..``end_axis`` merged into one.

    flatten_param: axis (1), end_axis (-1); both may be negative (counted from the end).
    Bottom: x (d_0, …). Top: y (d_0, …, d_{axis-1}, d_axis·…·d_end_axis, d_{end_axis+1}, …).
    Params: none. In place: no (Caffe quirk: flatten_layer.cpp refuses it).
    """

    def setup(self, bottoms, tops):
        p = self.param.flatten_param
        self.axis_param = int(p.axis)
        self.end_axis_param = int(p.end_axis)

    def top_shape(self, bottom):
        start = canonical_axis(self, bottom, self.axis_param, "flatten_param.axis")
        end = canonical_axis(self, bottom, self.end_axis_param, "flatten_param.end_axis")
        # Caffe quirk: Blob::count(start, end + 1) allows end_axis = axis - 1, which inserts an
        # axis of length 1 (flatten_layer.cpp); anything earlier is an error.
        if start > end + 1:
            self.fail(f"flatten_param.end_axis ({end}) comes before axis ({start})")
        return bottom.shape[:start] + (bottom.count_axes(start, end + 1),) + bottom.shape[end + 1:]


@register("Reshape")
class ReshapeLayer(_ViewLayer):
    """y = x with axes ``axis`` .. ``axis + num_axes - 1`` replaced by ``shape``.

    reshape_param: shape (BlobShape; 0 copies the bottom's dimension at that position, one -1
    is inferred from the element count), axis (0; negative counts from the end, -1 meaning
    "after the last axis"), num_axes (-1: all axes from ``axis`` on).
    Bottom: x. Top: y with x's count.
    Params: none. In place: no (Caffe quirk: reshape_layer.cpp refuses it).
    """

    def setup(self, bottoms, tops):
        p = self.param.reshape_param
        self.dims = [int(d) for d in p.shape.dim]
        self.axis_param = int(p.axis)
        self.num_axes_param = int(p.num_axes)
        self.copy_axes = [i for i, d in enumerate(self.dims) if d == 0]
        inferred = [i for i, d in enumerate(self.dims) if d == -1]
        if len(inferred) > 1:
            self.fail(f"reshape_param.shape {self.dims} has {len(inferred)} dims of -1; at most "
                      f"one can be inferred")
        if any(d < -1 for d in self.dims):
            self.fail(f"reshape_param.shape {self.dims} has a dim below -1; use a size, 0 (copy) "
                      f"or -1 (infer)")
        self.inferred_axis = inferred[0] if inferred else None
        if self.num_axes_param < -1:
            self.fail(f"reshape_param.num_axes must be >= 0, or -1 for all; got "
                      f"{self.num_axes_param}")

    def top_shape(self, bottom):
        n = bottom.num_axes
        start = self.axis_param if self.axis_param >= 0 else n + self.axis_param + 1
        if not 0 <= start <= n:
            self.fail(f"reshape_param.axis {self.axis_param} is out of range for a {n}-axis "
                      f"bottom (shape {bottom.shape})")
        end = n if self.num_axes_param == -1 else start + self.num_axes_param
        if end > n:
            self.fail(f"reshape_param.axis + num_axes = {end} is beyond the {n} axes of the "
                      f"bottom (shape {bottom.shape})")
        dims = list(self.dims)
        for i in self.copy_axes:
            if start + i >= n:
                self.fail(f"reshape_param.shape {self.dims} has a 0 at position {i} but the "
                          f"bottom (shape {bottom.shape}) has no axis {start + i} to copy")
            dims[i] = bottom.shape[start + i]
        if self.inferred_axis is not None:
            known = [d for i, d in enumerate(dims) if i != self.inferred_axis]
            explicit = (int(np.prod(known, dtype=np.int64)) * bottom.count_axes(0, start)
                        * bottom.count_axes(end))
            if explicit == 0 or bottom.count % explicit:
                self.fail(f"cannot infer the -1 in reshape_param.shape {self.dims}: the bottom "
                          f"count {bottom.count} (shape {bottom.shape}) is not divisible by the "
                          f"product of the other dimensions ({explicit})")
            dims[self.inferred_axis] = bottom.count // explicit
        return bottom.shape[:start] + tuple(dims) + bottom.shape[end:]


@register("Tile")
class TileLayer(Layer):
    """y = x repeated ``tiles`` times along ``axis`` (each block x[..., :, ...] copied whole).

    tile_param: axis (1; negative counts from the end), tiles (required, > 0).
    Bottom: x. Top: y, x's shape with shape[axis] multiplied by tiles.
    dx = the sum of dy over the tiles. Params: none. In place: no.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.tile_param
        if not p.HasField("tiles"):
            self.fail("tile_param.tiles is required: the number of copies")
        self.tiles = int(p.tiles)
        if self.tiles <= 0:
            self.fail(f"tile_param.tiles must be positive, got {self.tiles}")
        self.axis_param = int(p.axis)

    def reshape(self, bottoms, tops):
        x = bottoms[0]
        axis = canonical_axis(self, x, self.axis_param, "tile_param.axis")
        self.outer = x.count_axes(0, axis)
        self.inner = x.count_axes(axis)
        tops[0].reshape(x.shape[:axis] + (x.shape[axis] * self.tiles,) + x.shape[axis + 1:])

    def forward(self, bottoms, tops):
        tiled = tops[0].data.reshape(self.outer, self.tiles, self.inner)
        tiled[...] = bottoms[0].data.reshape(self.outer, 1, self.inner)

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            dy = tops[0].diff.reshape(self.outer, self.tiles, self.inner)
            np.sum(dy, axis=1, out=bottoms[0].diff.reshape(self.outer, self.inner))


@register("Silence")
class SilenceLayer(Layer):
    """Consumes its bottoms so they are not net outputs; dx = 0 for each bottom.

    No parameters. Bottoms: any number (at least one), any shapes. Tops: none.
    """

    min_bottoms = 1
    exact_tops = 0

    def reshape(self, bottoms, tops):
        pass

    def forward(self, bottoms, tops):
        pass

    def backward(self, tops, propagate_down, bottoms):
        for blob, down in zip(bottoms, propagate_down):
            if down:
                blob.diff[...] = 0
