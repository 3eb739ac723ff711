"""Build a single layer from prototxt text and run it, for layer unit tests."""

import numpy as np
from google.protobuf import text_format

from protonet.blob import Blob
from protonet.layers import get_layer_class
from protonet.proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def layer_param(text, name="layer"):
    """A LayerParameter from prototxt text (``type: "ReLU" relu_param { ... }``)."""
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    if not param.name:
        param.name = name
    return param


def make_layer(text, phase=TEST):
    """An unset-up layer instance from prototxt text."""
    param = layer_param(text)
    param.phase = phase
    return get_layer_class(param.type)(param, phase)


def blobs_from(*arrays):
    """Blobs holding copies of the given arrays (float32)."""
    blobs = []
    for array in arrays:
        array = np.asarray(array, dtype=np.float32)
        blob = Blob(array.shape)
        blob.data[...] = array
        blobs.append(blob)
    return blobs


def setup_layer(text, bottoms, n_tops=1, phase=TEST):
    """Make a layer, wrap ``bottoms`` (arrays) in blobs, set it up; return (layer, bottoms, tops)."""
    layer = make_layer(text, phase)
    bottom_blobs = blobs_from(*bottoms)
    tops = [Blob() for _ in range(n_tops)]
    layer.layer_setup(bottom_blobs, tops)
    return layer, bottom_blobs, tops
