"""Crop: cut bottom[0] down to bottom[1]'s shape from a given axis on (FCN)."""

from ..base import Layer
from ..registry import register


@register("Crop")
class CropLayer(Layer):
    """y = x[..., o_a : o_a + s_a, ..., o_last : o_last + s_last] for the axes a ≥ ``axis``.

    ``crop_param``: axis (2; may be negative): the first cropped axis; offset (repeated):
    none (all offsets 0), one (the same offset for every cropped axis), or one per cropped axis.
    Axes before ``axis`` are kept whole.

    Bottoms: x (any shape), reference (at least as many axes as x; only its sizes from
    ``axis`` on are read). Top: y, x's shape with the cropped axes taken from the reference.
    Backward: x's diff is zero outside the crop and the top diff inside; the reference gets
    a zero diff. No param blobs. Not in place.
    """

    exact_bottoms = 2
    exact_tops = 1

    def setup(self, bottoms, tops):
        cp = self.param.crop_param
        self.axis_param = int(cp.axis)
        self.offsets = [int(o) for o in cp.offset]

    def reshape(self, bottoms, tops):
        shape, ref_shape = bottoms[0].shape, bottoms[1].shape
        num_axes = len(shape)
        if not -num_axes <= self.axis_param < num_axes:
            self.fail(f"crop axis {self.axis_param} is out of range for a bottom with "
                      f"{num_axes} axes (shape {shape})")
        axis = self.axis_param % num_axes
        if len(self.offsets) > 1 and len(self.offsets) != num_axes - axis:
            self.fail(f"offset given {len(self.offsets)} times for {num_axes - axis} cropped "
                      f"axes (axis {axis} of a {num_axes}-axis bottom); give it once or once "
                      f"per cropped axis")
        if len(ref_shape) < num_axes:
            self.fail(f"the reference bottom has {len(ref_shape)} axes, fewer than the "
                      f"{num_axes} of the cropped bottom")
        top_shape = list(shape)
        self.slices = [slice(None)] * len(shape)
        for i in range(axis, num_axes):
            offset = self._offset(i - axis)
            if shape[i] - offset < ref_shape[i]:
                self.fail(f"the crop of axis {i} is out of bounds: size {ref_shape[i]} at "
                          f"offset {offset} does not fit in {shape[i]}")
            top_shape[i] = ref_shape[i]
            self.slices[i] = slice(offset, offset + ref_shape[i])
        self.slices = tuple(self.slices)
        tops[0].reshape(top_shape)

    def _offset(self, k):
        """Offset of the k-th cropped axis: 0, the single offset, or the k-th one."""
        if not self.offsets:
            return 0
        return self.offsets[0] if len(self.offsets) == 1 else self.offsets[k]

    def forward(self, bottoms, tops):
        tops[0].data[...] = bottoms[0].data[self.slices]

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[0]:
            bottom_diff = bottoms[0].diff
            bottom_diff[...] = 0
            bottom_diff[self.slices] = tops[0].diff
        if propagate_down[1]:
            bottoms[1].diff[...] = 0
