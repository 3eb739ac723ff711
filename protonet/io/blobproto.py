"""BlobProto ↔ numpy, honouring Caffe's legacy shapes and double fields.

A BlobProto carries its shape either in ``shape`` (N-D) or in the legacy
``num/channels/height/width`` fields (old files), and its values in ``data`` (float) or
``double_data``. These helpers hide all of that.
"""

import numpy as np

from ..errors import ProtonetError
from ..proto import caffe_pb2

LEGACY_FIELDS = ("num", "channels", "height", "width")


def blobproto_shape(proto):
    """The blob's shape: ``shape.dim`` if set, else the legacy 4-D fields."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if any(proto.HasField(f) for f in LEGACY_FIELDS):
        return tuple(int(getattr(proto, f)) for f in LEGACY_FIELDS)
    count = len(proto.data) or len(proto.double_data)
    return (count,) if count else (0,)


def check_utf8(message, filename=None):
    """Raise ProtonetError if a string field of a binary-parsed ``message`` is not UTF-8.

    proto2 parsing does not check strings: the Python runtime hands such a field back as
    ``bytes``, which fails far from the corrupt file (a path join, an assignment).
    """
    bad = _bad_string_field(message)
    if bad is not None:
        raise ProtonetError(f"the file is corrupt: field '{bad}' holds bytes that are not "
                            f"UTF-8 text", file=filename)


def _bad_string_field(message):
    """The name of the first string field (depth-first) whose value is not valid UTF-8."""
    for field, value in message.ListFields():
        values = value if field.is_repeated else (value,)
        if field.type == field.TYPE_MESSAGE:
            for item in values:
                bad = _bad_string_field(item)
                if bad is not None:
                    return f"{field.name}.{bad}"
        elif field.type == field.TYPE_STRING and any(isinstance(v, bytes) for v in values):
            return field.name
    return None


def blobproto_to_array(proto, return_diff=False, where="blob"):
    """The data (or diff) of a BlobProto as a float32 array of its shape."""
    shape = blobproto_shape(proto)
    if any(d < 0 for d in shape):
        raise ProtonetError(f"{where}: shape {shape} has a negative dimension; the file is "
                            f"corrupt")
    values = (proto.diff or proto.double_diff) if return_diff else (proto.data or proto.double_data)
    expected = 1
    for d in shape:   # Python ints: a forged shape cannot overflow into a plausible count
        expected *= d
    if len(values) != expected:
        if return_diff and len(values) == 0 and \
                len(proto.data or proto.double_data) == expected:
            return np.zeros(shape, dtype=np.float32)
        raise ProtonetError(f"{where}: shape {shape} needs {expected} values but the file holds "
                            f"{len(values)}")
    return np.asarray(values, dtype=np.float32).reshape(shape)


def array_to_blobproto(array, diff=None, legacy=False):
    """A BlobProto holding ``array`` (and ``diff``); ``legacy`` writes num/channels/height/width."""
    array = np.asarray(array, dtype=np.float32)
    proto = caffe_pb2.BlobProto()
    if legacy:
        if array.ndim > 4:
            raise ProtonetError(f"cannot write a {array.ndim}-D blob in the legacy 4-D form")
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        proto.num, proto.channels, proto.height, proto.width = dims
    else:
        proto.shape.dim.extend(array.shape)
    proto.data.extend(array.ravel().tolist())
    if diff is not None:
        proto.diff.extend(np.asarray(diff, dtype=np.float32).ravel().tolist())
    return proto


def fill_blobproto(proto, array, diff=None):
    """Write ``array`` into an existing BlobProto message (shape, data, optional diff)."""
    proto.Clear()
    proto.shape.dim.extend(array.shape)
    proto.data.extend(np.asarray(array, dtype=np.float32).ravel())
    if diff is not None:
        proto.diff.extend(np.asarray(diff, dtype=np.float32).ravel())
    return proto


def read_blobproto(path):
    """Read a ``.binaryproto`` file (a mean image, an infogain matrix) as a float32 array."""
    proto = caffe_pb2.BlobProto()
    try:
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
    except FileNotFoundError:
        raise ProtonetError("no such file", file=path) from None
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ProtonetError(f"not a valid BlobProto file ({err})", file=path) from None
    return blobproto_to_array(proto, where=str(path))


def write_blobproto(path, array, legacy=True):
    """Write ``array`` as a ``.binaryproto`` (legacy 4-D fields by default, as Caffe's tools do)."""
    from .files import atomic_write_bytes

    atomic_write_bytes(path, array_to_blobproto(array, legacy=legacy).SerializeToString())
