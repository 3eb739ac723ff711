"""Pictures of a trained net: its filters and its activations, as PNG grids (Pillow only).

``show_filters`` draws a layer's weights: when a filter has 3 input channels (a first layer
on colour images) each filter is one RGB tile; otherwise each (filter, channel) pair is one grey
tile, a row per filter; 2-D weights (InnerProduct) give one grey strip per output. Every tile
is normalised on its own to the full 0..255 range. ``show_activations`` runs one image through
the net and draws each channel of a layer's output as a grey tile, normalised together over
the whole layer (as in pycaffe's classification notebook), so tiles compare.

Tiles are magnified by an integer ``scale`` (automatic by default: small tiles become about
64 pixels) and separated by ``pad`` pixels of white.
"""

import math

import numpy as np

from .errors import ProtonetError

__all__ = ["show_filters", "show_activations", "filter_tiles", "activation_tiles",
           "tile_grid", "normalize"]

# At most this many filters (rows) and channels (columns) in a grey (filter, channel) grid.
MAX_FILTER_ROWS = 64
MAX_CHANNEL_COLUMNS = 32


def normalize(array):
    """Map ``array`` linearly onto [0, 1] (a constant array becomes 0.5)."""
    array = np.asarray(array, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    if high == low:
        return np.full(array.shape, 0.5)
    return (array - low) / (high - low)


def _auto_scale(tile_h, tile_w):
    return max(1, min(16, 64 // max(tile_h, tile_w, 1)))


def tile_grid(tiles, ncols, scale=None, pad=1):
    """Arrange (n, h, w) or (n, h, w, 3) tiles with values in [0, 1] into a uint8 image.

    Tiles fill rows of ``ncols`` left to right; each is magnified ``scale`` times and
    surrounded by ``pad`` white pixels on every side that has a neighbour or an edge.
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    n, h, w = tiles.shape[:3]
    scale = _auto_scale(h, w) if scale is None else int(scale)
    if scale < 1:
        raise ProtonetError(f"scale must be at least 1, got {scale}")
    rows = math.ceil(n / ncols)
    th, tw = h * scale, w * scale
    channels = tiles.shape[3:]
    canvas = np.full((rows * (th + pad) + pad, ncols * (tw + pad) + pad) + channels, 255,
                     dtype=np.uint8)
    pixels = np.rint(np.clip(tiles, 0, 1) * 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        big = pixels[i].repeat(scale, axis=0).repeat(scale, axis=1)
        canvas[y:y + th, x:x + tw] = big
    return canvas


def filter_tiles(weights):
    """(tiles in [0, 1], columns) for a layer's weight array; see the module docstring."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 2:       # InnerProduct: one 1×K strip per output
        weights = weights[:, np.newaxis, np.newaxis, :]
    if weights.ndim != 4:
        raise ProtonetError(f"cannot draw filters of shape {weights.shape}; expected 4-D "
                            f"convolution weights or 2-D inner product weights")
    n, c = weights.shape[:2]
    if c == 3:
        tiles = np.stack([normalize(f) for f in weights.transpose(0, 2, 3, 1)])
        return tiles, math.ceil(math.sqrt(n))
    if c == 1:
        tiles = np.stack([normalize(f[0]) for f in weights])
        return tiles, math.ceil(math.sqrt(n))
    n, c = min(n, MAX_FILTER_ROWS), min(c, MAX_CHANNEL_COLUMNS)
    tiles = np.stack([normalize(weights[i, j]) for i in range(n) for j in range(c)])
    return tiles, c


def activation_tiles(activation):
    """(tiles in [0, 1], columns) for one image's activation (C, H, W) or vector (C,)."""
    activation = np.asarray(activation, dtype=np.float64)
    if activation.ndim == 1:    # a vector: one square tile of its values, row by row
        side = math.ceil(math.sqrt(activation.size))
        square = np.full(side * side, activation.min())
        square[:activation.size] = activation
        return normalize(square.reshape(1, side, side)), 1
    if activation.ndim == 2:
        activation = activation[np.newaxis]
    if activation.ndim != 3:
        raise ProtonetError(f"cannot draw an activation of shape {activation.shape}")
    return normalize(activation), math.ceil(math.sqrt(activation.shape[0]))


def _save(grid, out_png):
    from PIL import Image

    image = Image.fromarray(grid, mode="RGB" if grid.ndim == 3 else "L")
    if out_png is not None:
        try:
            image.save(str(out_png))
        except (OSError, ValueError) as err:
            raise ProtonetError(f"cannot write image ({err})", file=str(out_png)) from None
    return image


def _as_net(model, weights):
    from .net import TEST, Net

    if hasattr(model, "params") and hasattr(model, "blobs"):
        return model
    return Net(model, TEST, weights=weights)


def show_filters(model, weights, layer, out_png, scale=None, pad=1):
    """Draw ``layer``'s filters into ``out_png``; return the PIL image.

    ``model`` is a prototxt path (with ``weights`` a .caffemodel) or an already built Net.
    """
    net = _as_net(model, weights)
    if layer not in net.params:
        raise ProtonetError(f"layer '{layer}' has no weights; layers with weights: "
                            f"{list(net.params)}")
    tiles, ncols = filter_tiles(net.params[layer][0].data)
    return _save(tile_grid(tiles, ncols, scale=scale, pad=pad), out_png)


def _top_blob(net, layer):
    """(blob name, layer name to stop at) for a layer name or a blob name."""
    if layer in net.top_names:
        return net.top_names[layer][0], layer
    if layer in net.blobs:
        producers = [name for name, tops in net.top_names.items() if layer in tops]
        return layer, producers[-1] if producers else None
    raise ProtonetError(f"no layer or blob named '{layer}'; layers: {list(net.top_names)}")


def _preprocess(net, image, raw_scale, channel_swap, mean):
    from .io.images import Transformer, load_image

    in_ = net.inputs[0] if net.inputs else None
    if in_ is None:
        raise ProtonetError("show_activations needs a net with an Input layer (a deploy net)")
    shape = net.blobs[in_].shape
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise ProtonetError(f"input '{in_}' has shape {shape}; images need N×1×H×W or "
                            f"N×3×H×W")
    pixels = load_image(image, color=shape[1] == 3) if isinstance(image, str) else image
    transformer = Transformer({in_: (1,) + tuple(shape[1:])})
    transformer.set_transpose(in_, (2, 0, 1))
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None and shape[1] == 3:
        transformer.set_channel_swap(in_, channel_swap)
    if mean is not None:
        transformer.set_mean(in_, mean)
    return in_, transformer.preprocess(in_, pixels)


def show_activations(model, weights, image, layer, out_png, raw_scale=255.0,
                     channel_swap=(2, 1, 0), mean=None, scale=None, pad=1):
    """Run ``image`` through the net and draw ``layer``'s output maps; return the PIL image.

    ``image`` is a file name or an H×W×K float array in [0, 1]. Preprocessing follows Caffe's
    reference models by default (BGR, 0..255); pass ``raw_scale=None, channel_swap=None`` for
    nets trained on [0, 1] RGB input, and ``mean`` (per channel or an image) if the net
    subtracted one. ``layer`` may name a layer (its first top is drawn) or a blob. A Net passed
    as ``model`` is reshaped to a batch of one image.
    """
    net = _as_net(model, weights)
    blob_name, end = _top_blob(net, layer)
    in_, caffe_in = _preprocess(net, image, raw_scale, channel_swap, mean)
    net.blobs[in_].reshape(1, *caffe_in.shape)
    net.reshape()
    net.blobs[in_].data[0] = caffe_in
    net.forward(end=end)
    tiles, ncols = activation_tiles(net.blobs[blob_name].data[0])
    return _save(tile_grid(tiles, ncols, scale=scale, pad=pad), out_png)
