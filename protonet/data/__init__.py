"""Data input: Datum records, LMDB databases, the DataTransformer, background prefetching, and
the dataset tools (convert_imageset, compute_image_mean, convert_mnist, convert_cifar, MNIST)."""

from .datum import (array_to_datum, datum_to_array, decode_image, encode_image, image_to_datum,
                    parse_datum, read_image, resize_image)
from .db import LMDBCursor, LMDBWriter, iterate_lmdb
from .prefetch import Prefetcher
from .transformer import DataTransformer

__all__ = ["DataTransformer", "LMDBCursor", "LMDBWriter", "Prefetcher", "array_to_datum",
           "datum_to_array", "decode_image", "encode_image", "image_to_datum", "iterate_lmdb",
           "parse_datum", "read_image", "resize_image"]
