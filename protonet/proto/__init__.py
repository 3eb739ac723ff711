"""Protocol-buffer schema of protonet (Caffe-compatible).

``protonet_pb2`` is generated from ``proto/protonet.proto`` by
``tools/gen_proto.sh`` (``make proto``); do not edit it by hand. The schema is
package ``caffe`` and matches BVLC Caffe's ``caffe.proto`` field for field, so
Caffe's text (``.prototxt``) and binary (``.caffemodel``, ``.binaryproto``,
``.solverstate``) files load unchanged.

``caffe_pb2`` is an alias of ``protonet_pb2`` for pycaffe-style code::

    from protonet.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
"""

from . import protonet_pb2
# A real submodule (not just an alias attribute) so that
# ``import protonet.proto.caffe_pb2`` and ``from protonet.proto import
# caffe_pb2`` give the same object; its classes are protonet_pb2's.
from . import caffe_pb2

__all__ = ["protonet_pb2", "caffe_pb2"]
