"""pycaffe's ``caffe.io``: images in, blobs out, and the proto ↔ numpy helpers scripts use.

Images are float32 arrays H×W×K with values in [0, 1] (RGB, or one intensity channel), as
pycaffe returns them; Pillow reads the files (pycaffe used scikit-image). ``Transformer`` turns
such an image into a K×H×W blob row in pycaffe's order: resize to the input size, transpose,
swap channels, ``raw_scale``, subtract the mean, ``input_scale``; ``deprocess`` undoes it.

Resizing is our own bilinear / nearest-neighbour sampling with pixel centres aligned (the
half-pixel rule of scikit-image and Pillow) and edge pixels replicated, so there is no scipy or
scikit-image dependency.
"""

import numpy as np

from ..errors import ProtonetError
from ..proto import caffe_pb2

__all__ = [
    "Transformer", "load_image", "resize_image", "oversample", "blobproto_to_array",
    "array_to_blobproto", "arraylist_to_blobprotovector_str", "blobprotovector_str_to_arraylist",
    "array_to_datum", "datum_to_array",
]

LEGACY_FIELDS = ("num", "channels", "height", "width")


# ---- proto / datum / ndarray conversion ------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """A BlobProto's data (or diff, with ``return_diff``) as an array of the blob's shape.

    As pycaffe: the legacy ``num/channels/height/width`` fields win when any of them is set,
    else ``shape.dim``. Values come from ``data`` (or ``double_data`` in double files).
    """
    if return_diff:
        values = blob.diff or blob.double_diff
    else:
        values = blob.data or blob.double_data
    if any(blob.HasField(f) for f in LEGACY_FIELDS):
        shape = tuple(int(getattr(blob, f)) for f in LEGACY_FIELDS)
    else:
        shape = tuple(int(d) for d in blob.shape.dim)
    expected = int(np.prod(shape, dtype=np.int64))
    if return_diff and not values:
        return np.zeros(shape, dtype=np.float32)
    if len(values) != expected:
        raise ProtonetError(f"BlobProto of shape {shape} needs {expected} values, it holds "
                            f"{len(values)}")
    return np.asarray(values, dtype=np.float32).reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A BlobProto holding ``arr`` (N-D ``shape``) and, if given, ``diff`` of the same shape."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float32).ravel())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ProtonetError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
        blob.diff.extend(diff.astype(np.float32).ravel())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """A serialized BlobProtoVector holding each array of ``arraylist``."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data):
    """The arrays of a serialized BlobProtoVector, in order."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a C×H×W array: uint8 arrays go to ``data`` bytes, others to ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ProtonetError(f"array_to_datum needs a 3-D C×H×W array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """A Datum's pixels as a C×H×W array (uint8 from ``data``, float from ``float_data``).

    The label is not returned: read ``datum.label``. Encoded (JPEG/PNG) datums are decoded.
    """
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        return _decode_datum(datum)
    if len(datum.data):
        expected = int(np.prod(shape))
        if len(datum.data) != expected:
            raise ProtonetError(f"Datum of shape {shape} needs {expected} bytes, it holds "
                                f"{len(datum.data)}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    return np.asarray(datum.float_data, dtype=np.float64).reshape(shape)


def _decode_datum(datum):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(datum.data)) as img:
        pixels = np.asarray(img.convert("RGB" if img.mode not in ("L", "I;16") else "L"))
    if pixels.ndim == 2:
        return pixels[np.newaxis]
    # Caffe quirk: OpenCV decodes to BGR, so encoded datums come out BGR (io.cpp DecodeDatum).
    return pixels[:, :, ::-1].transpose(2, 0, 1).copy()


# ---- pre-processing --------------------------------------------------------------------------
class Transformer:
    """Turn H×W×K images into inputs for a Net, per input blob (pycaffe's ``caffe.io.Transformer``).

    ``inputs`` maps input names to their blob shapes, e.g. ``{'data': net.blobs['data'].shape}``.
    ``preprocess`` applies, in order: convert to float32, resize to the blob's H×W, transpose,
    channel swap, ``raw_scale``, mean subtraction, ``input_scale``. ``deprocess`` inverts it.
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise ProtonetError(f"'{in_}' is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data):
        """An H'×W'×K image as a K×H×W float32 array for input ``in_``."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)    # a copy: the steps below work in place
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            caffe_in *= raw_scale
        mean = self.mean.get(in_)
        if mean is not None:
            caffe_in -= mean
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """Invert ``preprocess`` (except the resize): a K×H×W blob row back to H×W×K."""
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32).squeeze()
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        mean = self.mean.get(in_)
        if mean is not None:
            decaf_in += mean
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            decaf_in /= raw_scale
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Order of the axes, e.g. (2, 0, 1) turns H×W×K into K×H×W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ProtonetError(f"transpose order {tuple(order)} needs "
                                f"{len(self.inputs[in_]) - 1} axes, as the input")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order after transposing, e.g. (2, 1, 0) for RGB → BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ProtonetError(f"channel swap {tuple(order)} needs {self.inputs[in_][1]} "
                                f"entries, one per input channel")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply raw [0, 1] input by ``scale`` (255 for the reference ImageNet models)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: one value per channel (K,), or a K×H×W (or H×W) mean image.

        A mean image of another size is resized to the input size, as pycaffe does.
        """
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        channels, in_shape = self.inputs[in_][1], tuple(self.inputs[in_][1:])
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise ProtonetError(f"mean has {mean.shape[0]} channels, input '{in_}' has "
                                    f"{channels}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3:
                raise ProtonetError(f"mean must be (K,), (H, W) or (K, H, W); got shape "
                                    f"{mean.shape}")
            if mean.shape != in_shape:
                if mean.shape[0] != channels:
                    raise ProtonetError(f"mean image has {mean.shape[0]} channels, input "
                                        f"'{in_}' has {channels}")
                mean = resize_image(mean.transpose(1, 2, 0), in_shape[1:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input by ``scale`` (after the mean is subtracted)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# ---- image I/O -------------------------------------------------------------------------------
def load_image(filename, color=True):
    """Read an image as float32 in [0, 1]: H×W×3 RGB (``color``) or H×W×1 intensity.

    Grey images are repeated into three channels when ``color``; alpha is dropped.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(filename) as img:
            img.load()
            mode = img.mode
            if color:
                pixels = np.asarray(img.convert("RGB"))
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(img, dtype=np.float64)
            else:
                pixels = np.asarray(img.convert("L"))
    except FileNotFoundError:
        raise ProtonetError("no such image file", file=filename) from None
    except (UnidentifiedImageError, OSError) as err:
        raise ProtonetError(f"cannot read image ({err})", file=filename) from None
    if pixels.dtype == np.uint8:
        image = pixels.astype(np.float32) / 255.0
    else:   # 16/32-bit grey
        image = (pixels / (65535.0 if mode.startswith("I;16") else max(pixels.max(), 1)))
        image = image.astype(np.float32)
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    return image


def _sample_positions(n_in, n_out):
    """Source coordinates of output pixel centres: (i + 0.5) · n_in / n_out − 0.5."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _linear_axis(im, n_out, axis):
    """Linear interpolation along ``axis`` with edge pixels replicated."""
    n_in = im.shape[axis]
    pos = np.clip(_sample_positions(n_in, n_out), 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    shape = [1] * im.ndim
    shape[axis] = n_out
    frac = frac.reshape(shape)
    a = np.take(im, lo, axis=axis)
    b = np.take(im, hi, axis=axis)
    return a + (b - a) * frac


def _nearest_axis(im, n_out, axis):
    n_in = im.shape[axis]
    index = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.take(im, np.minimum(index, n_in - 1), axis=axis)


def resize_image(im, new_dims, interp_order=1):
    """Resize an H×W×K array to ``new_dims`` = (height, width), K unchanged.

    ``interp_order`` 0 is nearest neighbour, 1 (default) bilinear; both sample at pixel centres
    and replicate the edges. A constant image stays exactly constant, as in pycaffe.
    """
    im = np.asarray(im, dtype=np.float32)
    if im.ndim != 3:
        raise ProtonetError(f"resize_image needs an H×W×K array, got shape {im.shape}")
    new_h, new_w = (int(d) for d in new_dims)
    if new_h <= 0 or new_w <= 0:
        raise ProtonetError(f"resize_image: new dimensions {(new_h, new_w)} must be positive")
    im_min, im_max = (float(im.min()), float(im.max())) if im.size else (0.0, 0.0)
    if im_max == im_min:
        return np.full((new_h, new_w, im.shape[2]), im_min, dtype=np.float32)
    resample = {0: _nearest_axis, 1: _linear_axis}.get(interp_order)
    if resample is None:
        raise ProtonetError(f"resize_image: interp_order {interp_order} is not supported; use "
                            f"0 (nearest) or 1 (bilinear)")
    out = im
    if new_h != im.shape[0]:
        out = resample(out, new_h, 0)
    if new_w != im.shape[1]:
        out = resample(out, new_w, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def oversample(images, crop_dims):
    """Ten crops per image: four corners and the centre, then the same five mirrored.

    ``images`` is a sequence of H×W×K arrays of one size; returns (10·N)×h×w×K float32.
    """
    im_shape = np.asarray(images[0].shape)
    crop_h, crop_w = (int(d) for d in crop_dims)
    if crop_h > im_shape[0] or crop_w > im_shape[1]:
        raise ProtonetError(f"crop {(crop_h, crop_w)} is larger than the images "
                            f"{tuple(im_shape[:2])}")
    corners = [(i, j) for i in (0, im_shape[0] - crop_h) for j in (0, im_shape[1] - crop_w)]
    # pycaffe's centre crop: centre ± half the crop, truncated to integers.
    centre = (int(im_shape[0] / 2.0 - crop_h / 2.0), int(im_shape[1] / 2.0 - crop_w / 2.0))
    starts = corners + [centre]
    crops = np.empty((10 * len(images), crop_h, crop_w, im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for i, j in starts:
            crops[ix] = im[i:i + crop_h, j:j + crop_w, :]
            ix += 1
        crops[ix:ix + 5] = crops[ix - 5:ix, :, ::-1, :]
        ix += 5
    return crops


def input_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """A Transformer for ``net``'s first input, H×W×K images in, set as Classifier/Detector do."""
    name = net.inputs[0]
    transformer = Transformer({name: net.blobs[name].data.shape})
    transformer.set_transpose(name, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(name, mean)
    if input_scale is not None:
        transformer.set_input_scale(name, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(name, channel_swap)
    return transformer
