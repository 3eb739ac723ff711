"""pycaffe-compatible name for the generated schema module.

Re-exports every message, enum and enum value of :mod:`protonet_pb2` (plus its
module-level ``DESCRIPTOR``), so ``from protonet.proto import caffe_pb2`` and
``import protonet.proto.caffe_pb2`` both behave like Caffe's ``caffe_pb2``.
"""

from .protonet_pb2 import *  # noqa: F401,F403
from .protonet_pb2 import DESCRIPTOR  # noqa: F401
