"""Reading and writing Caffe's files: prototxt, binaryproto, caffemodel, solverstate; upgrades.

The package also is pycaffe's ``caffe.io``: ``Transformer``, ``load_image``, ``resize_image``,
``oversample`` and the BlobProto / Datum ↔ numpy helpers are re-exported here from
:mod:`protonet.io.images`, so ``import protonet as caffe; caffe.io.Transformer(...)`` works.
"""

from .images import (  # noqa: F401
    Transformer,
    array_to_blobproto,
    array_to_datum,
    arraylist_to_blobprotovector_str,
    blobproto_to_array,
    blobprotovector_str_to_arraylist,
    datum_to_array,
    load_image,
    oversample,
    resize_image,
)
