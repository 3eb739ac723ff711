"""The streaming .caffemodel writer produces exactly protobuf's bytes."""

import io

import numpy as np
from google.protobuf import text_format

from protonet.blob import Blob
from protonet.io.wire import varint, write_net_weights
from protonet.proto import caffe_pb2


def test_varint_matches_protobuf_encoding():
    for value in (0, 1, 127, 128, 300, 2**31, 2**40 + 5):
        message = caffe_pb2.BlobShape(dim=[value])
        # packed field: key, length, then the varint itself
        assert message.SerializeToString()[2:] == varint(value)


def test_streamed_weights_equal_protobuf_serialization():
    gen = np.random.default_rng(0)
    layers = []
    expected = caffe_pb2.NetParameter(name="tiny")
    for name, shapes in (("conv", [(4, 3, 2, 2), (4,)]), ("relu", []), ("ip", [(5, 16)])):
        param = text_format.Parse(f'name: "{name}" type: "X" bottom: "a" top: "b" '
                                  'param { lr_mult: 2 } include { phase: TRAIN } '
                                  'convolution_param { num_output: 4 }',
                                  caffe_pb2.LayerParameter())
        blobs = []
        for shape in shapes:
            blob = Blob(shape)
            blob.data[...] = gen.standard_normal(shape)
            blob.diff[...] = gen.standard_normal(shape)
            blobs.append(blob)
        layers.append((param, blobs))
        copy = expected.layer.add()
        copy.CopyFrom(param)
        for blob in blobs:
            proto = copy.blobs.add()
            proto.shape.dim.extend(blob.shape)
            proto.data.extend(blob.data.ravel().tolist())
            proto.diff.extend(blob.diff.ravel().tolist())
    out = io.BytesIO()
    write_net_weights(layers, "tiny", out, write_diff=True)
    assert out.getvalue() == expected.SerializeToString()
