"""Writing a .caffemodel by streaming the protobuf wire format, one layer at a time.

``Net.to_proto()`` followed by ``SerializeToString()`` holds every weight three times (the net,
the message, the bytes): seconds and gigabytes for VGG-16. Here each layer's message is written
as its LayerParameter (without blobs, serialized by protobuf) followed by hand-encoded BlobProto
fields whose packed floats go straight from the net's arrays to the file. The bytes are exactly
what protobuf would write, so Caffe and protobuf read the file as any other NetParameter.
"""

import numpy as np

from ..proto import caffe_pb2

WIRE_LENGTH_DELIMITED = 2
NET_NAME, NET_LAYER = 1, 100
LAYER_BLOBS = 7
BLOB_DATA, BLOB_DIFF, BLOB_SHAPE = 5, 6, 7


def varint(value):
    """The protobuf base-128 encoding of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_header(number, length):
    """Key and length prefix of a length-delimited field."""
    return varint(number << 3 | WIRE_LENGTH_DELIMITED) + varint(length)


def _float_bytes(array):
    # Packed floats are little-endian float32; C-contiguous float32 is what Blob stores.
    return np.ascontiguousarray(array, dtype="<f4").reshape(-1)


class _BlobFields:
    """The pieces of one BlobProto: small headers (bytes) and large arrays, in file order."""

    def __init__(self, data, diff=None):
        # Fields in number order (data 5, diff 6, shape 7), as protobuf writes them.
        self.pieces = []
        for number, array in ((BLOB_DATA, data), (BLOB_DIFF, diff)):
            if array is None or array.size == 0:
                continue
            values = _float_bytes(array)
            self.pieces.append(field_header(number, values.nbytes))
            self.pieces.append(values)
        shape = caffe_pb2.BlobShape(dim=data.shape).SerializeToString()
        self.pieces.append(field_header(BLOB_SHAPE, len(shape)) + shape)
        self.size = sum(p.nbytes if isinstance(p, np.ndarray) else len(p) for p in self.pieces)


def write_net_weights(records, name, handle, write_diff=False):
    """Write a NetParameter (name and every layer with its blobs) to the binary file ``handle``.

    ``records``: (LayerParameter, list of Blob) pairs in net order.
    """
    if name:
        encoded = name.encode("utf-8")
        handle.write(field_header(NET_NAME, len(encoded)) + encoded)
    for param, blobs in records:
        head, tail = _split_around_blobs(param)
        fields = [_BlobFields(b.data, b.diff if write_diff else None) for b in blobs]
        body = len(head) + len(tail) + sum(len(field_header(LAYER_BLOBS, f.size)) + f.size
                                           for f in fields)
        handle.write(field_header(NET_LAYER, body))
        handle.write(head)
        for f in fields:
            handle.write(field_header(LAYER_BLOBS, f.size))
            for piece in f.pieces:
                handle.write(piece.data if isinstance(piece, np.ndarray) else piece)
        handle.write(tail)


def _split_around_blobs(param):
    """LayerParameter bytes before and after its blobs field (7), in protobuf's field order."""
    head = caffe_pb2.LayerParameter()
    tail = caffe_pb2.LayerParameter()
    tail.CopyFrom(param)
    del tail.blobs[:]
    for descriptor, _ in param.ListFields():
        if descriptor.number < LAYER_BLOBS:
            field = descriptor.name
            if descriptor.is_repeated:
                getattr(head, field).extend(getattr(param, field))
            elif descriptor.message_type is not None:
                getattr(head, field).CopyFrom(getattr(param, field))
            else:
                setattr(head, field, getattr(param, field))
            tail.ClearField(field)
    return head.SerializeToString(), tail.SerializeToString()
