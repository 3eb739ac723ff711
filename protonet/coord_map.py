"""Spatial coordinate maps between NetSpec tops, and ``crop`` for fully convolutional nets.

As pycaffe's ``caffe.coord_map``. A map is ``(axis, a, b)``: output coordinate ``y`` relates
to input coordinate ``x`` by ``y = a·x + b`` on spatial axes from ``axis`` on (``None`` for
layers that do not move coordinates). Maps compose along the graph; ``crop(top_from, top_to)``
walks back from both tops to a common blob and returns a Crop layer that aligns ``top_from``
with ``top_to`` (FCN's score alignment after upsampling).
"""

import numpy as np

from .errors import ProtonetError
from .net_spec import layers as L

__all__ = ["crop", "coord_map", "coord_map_from_to", "compose", "inverse", "conv_params",
           "crop_params", "UndefinedMapException", "AxisMismatchException",
           "PASS_THROUGH_LAYERS"]

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log",
                       "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split",
                       "TanH", "Threshold"]


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (InnerProduct, Reshape...)."""


class AxisMismatchException(Exception):
    """Two maps act on different axes and cannot be composed."""


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution/Pooling/Im2col Function."""
    params = fn.params.get("convolution_param", fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(params)
    if legacy:
        raise ProtonetError(f"crop: layer {fn.type_name} uses {sorted(legacy)}; coordinate "
                            f"maps need kernel_size/stride/pad (not the _h/_w forms)")
    axis = params.get("axis", 1)
    ks = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (axis, np.array(params.get("stride", 1), ndmin=1), (ks - 1) * dilation + 1,
            np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop Function, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) map a single layer applies."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset     # -1: the last non-coordinate axis
    raise UndefinedMapException(fn.type_name)


def compose(base_map, next_map):
    """Apply ``next_map`` after ``base_map``: scales multiply, shifts scale by the base."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException(f"axis {ax1} vs {ax2}")
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map_):
    """The map going the other way (for gradients, or to walk back up)."""
    ax, a, b = coord_map_
    return ax, 1 / a, -b / a


def _mappable_bottoms(top):
    # Only a Crop's first bottom is mapped: the second only gives the output size.
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _walk_back(start, stop_at=None):
    """Maps from every ancestor of ``start`` to ``start``; stop at the first blob in ``stop_at``."""
    maps = {start: (None, 1, 0)}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        if stop_at is not None and top in stop_at:
            return maps, top
        try:
            layer_map = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            maps[bottom] = compose(maps[top], layer_map)
            frontier.append(bottom)
    return maps, None


def coord_map_from_to(top_from, top_to):
    """The map from ``top_from``'s coordinates to ``top_to``'s, through a common ancestor."""
    from_maps, _ = _walk_back(top_from)
    to_maps, common = _walk_back(top_to, stop_at=from_maps)
    if common is None:
        raise ProtonetError("crop: cannot map coordinates between these tops; are they "
                            "connected by spatial layers?")
    return compose(to_maps[common], inverse(from_maps[common]))


def crop(top_from, top_to):
    """A Crop layer (NetSpec Top) cropping ``top_from`` to align with ``top_to``."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a), np.asarray(b)
    if not (a == 1).all():
        raise ProtonetError(f"crop: scale mismatch between the tops (a = {a})")
    if not (b <= 0).all():
        raise ProtonetError(f"crop: cannot crop a negative offset (b = {b})")
    if not (np.round(b) == b).all():
        raise ProtonetError(f"crop: offset is not an integer (b = {b})")
    offsets = [int(o) for o in -np.round(b).astype(int)]
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=offsets))
