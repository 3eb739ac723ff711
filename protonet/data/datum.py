"""Datum records and images: decode, encode, resize, as Caffe's util/io.cpp does with OpenCV.

Notation: images in memory are ``(H, W, C)`` uint8 arrays in **OpenCV channel order** (BGR for
colour, BGRA with alpha, one channel for grey), because that is what Caffe stores: its tools read
images with OpenCV, so every colour Datum and every colour blob Caffe ever produced is BGR.
Datums hold pixels as ``(C, H, W)``; :func:`datum_to_array` returns that layout.

Decoding uses Pillow instead of OpenCV. Lossless files (PNG, BMP, raw Datums) give the same
pixels as Caffe; a JPEG may differ by a grey level or so where libjpeg builds differ, and
:func:`resize_image` follows OpenCV's INTER_LINEAR sampling grid in floating point, which can
differ from OpenCV's fixed-point arithmetic by one grey level.
"""

import io

import numpy as np
from google.protobuf.message import DecodeError
from PIL import Image, UnidentifiedImageError

from ..errors import ProtonetError
from ..proto import caffe_pb2

# Pillow's format names for the encode types convert_imageset accepts.
_PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF",
                "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "webp": "WEBP"}


# ---- decoding ------------------------------------------------------------------------------
def _pil_to_array(img, color):
    """A Pillow image as an (H, W, C) uint8 array in OpenCV order.

    ``color`` True: 3-channel BGR (IMREAD_COLOR); False: 1-channel grey (IMREAD_GRAYSCALE);
    None: the file's own channels (IMREAD_UNCHANGED, Caffe's "native" decode).
    """
    if color is None:
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise ValueError(f"{img.mode} images (16/32 bits per pixel) are not supported; "
                             f"Caffe needs 8-bit images")
        if img.mode in ("1", "L"):
            color_mode = "L"
        elif img.mode in ("LA", "RGBA") or "transparency" in img.info:
            color_mode = "RGBA"
        else:
            color_mode = "RGB"
    else:
        color_mode = "RGB" if color else "L"
    array = np.asarray(img.convert(color_mode), dtype=np.uint8)
    if color_mode == "L":
        return array.reshape(array.shape[0], array.shape[1], 1)
    if color_mode == "RGB":
        return np.ascontiguousarray(array[:, :, ::-1])
    return np.ascontiguousarray(array[:, :, [2, 1, 0, 3]])


def decode_image(payload, color=None, where="image"):
    """Decode JPEG/PNG/... bytes into an (H, W, C) uint8 BGR array (see :func:`_pil_to_array`)."""
    try:
        with Image.open(io.BytesIO(payload)) as img:
            img.load()
            return _pil_to_array(img, color)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ProtonetError(f"{where}: could not decode the image ({err})") from None


def read_image(path, height=0, width=0, is_color=True):
    """Caffe's ReadImageToCVMat: decode ``path`` (colour or grey) and resize if both sizes > 0."""
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except OSError as err:
        raise ProtonetError(f"could not open or find the image ({err.strerror})",
                            file=str(path)) from None
    image = decode_image(payload, color=bool(is_color), where=str(path))
    if height > 0 and width > 0:
        image = resize_image(image, height, width)
    return image


def encode_image(image, encode_type, where="image"):
    """Encode an (H, W, C) uint8 OpenCV-order array as ``encode_type`` ("png", "jpg", ...)."""
    fmt = _PIL_FORMATS.get(encode_type.lower())
    if fmt is None:
        raise ProtonetError(f"{where}: unknown encode_type {encode_type!r}; use one of "
                            f"{', '.join(sorted(_PIL_FORMATS))}")
    channels = image.shape[2]
    if channels == 1:
        pil = Image.fromarray(image[:, :, 0], "L")
    elif channels == 3:
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]), "RGB")
    else:
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, [2, 1, 0, 3]]), "RGBA")
    buf = io.BytesIO()
    # OpenCV's imencode uses JPEG quality 95 by default.
    options = {"quality": 95} if fmt == "JPEG" else {}
    pil.save(buf, format=fmt, **options)
    return buf.getvalue()


# ---- resizing ------------------------------------------------------------------------------
def _linear_taps(out_size, in_size):
    """OpenCV INTER_LINEAR source taps: index pairs and weights for each output coordinate."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    lo = np.floor(src)
    frac = src - lo
    lo = lo.astype(np.int64)
    # OpenCV clamps at the borders: a coordinate left of 0 uses pixel 0 with full weight.
    frac[lo < 0] = 0.0
    lo[lo < 0] = 0
    hi = np.minimum(lo + 1, in_size - 1)
    at_end = lo >= in_size - 1
    lo[at_end] = in_size - 1
    frac[at_end] = 0.0
    return lo, hi, frac


def resize_image(image, height, width):
    """Resize an (H, W, C) uint8 image to (height, width) like ``cv::resize`` INTER_LINEAR."""
    in_h, in_w = image.shape[:2]
    if (in_h, in_w) == (height, width):
        return image
    y0, y1, fy = _linear_taps(height, in_h)
    x0, x1, fx = _linear_taps(width, in_w)
    src = image.astype(np.float64)
    rows = (src[y0] * (1.0 - fy)[:, None, None] + src[y1] * fy[:, None, None])
    out = rows[:, x0] * (1.0 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


# ---- Datum ---------------------------------------------------------------------------------
def image_to_datum(image, label=None):
    """Caffe's CVMatToDatum: an (H, W, C) uint8 image → raw Datum (C, H, W bytes)."""
    height, width, channels = image.shape
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = channels, height, width
    datum.data = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    if label is not None:
        datum.label = int(label)
    return datum


def array_to_datum(array, label=None):
    """A (C, H, W) array as a Datum: uint8 arrays go in ``data``, others in ``float_data``."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ProtonetError(f"a Datum holds a 3-D (C, H, W) array, got shape {array.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = array.shape
    if array.dtype == np.uint8:
        datum.data = array.tobytes()
    else:
        datum.float_data.extend(array.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def parse_datum(value, where="record"):
    """Parse serialized bytes as a Datum; a ProtonetError if they are not one."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(bytes(value))
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ProtonetError(f"{where} is not a Datum ({err}); the database must hold "
                            f"serialized caffe.Datum records") from None
    if not datum.encoded:
        expected = datum.channels * datum.height * datum.width
        found = len(datum.data) if datum.data else len(datum.float_data)
        if expected <= 0 or found != expected:
            raise ProtonetError(f"{where} is not a valid Datum: channels×height×width = "
                                f"{datum.channels}×{datum.height}×{datum.width} but it holds "
                                f"{found} values")
    return datum


def datum_to_array(datum, force_color=False, force_gray=False, where="record"):
    """The pixels of a Datum as a (C, H, W) array: uint8 for bytes and images, float32 for floats.

    Encoded Datums are decoded natively, or in colour/grey when ``force_color``/``force_gray``
    (Caffe's DecodeDatumToCVMat / DecodeDatumToCVMatNative).
    """
    if datum.encoded:
        color = True if force_color else (False if force_gray else None)
        image = decode_image(datum.data, color=color, where=where)
        return image.transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)
