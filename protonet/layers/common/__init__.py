"""Utility and structural layers (Caffe's "common" family); importing registers them.

- :mod:`.dense`: InnerProduct, Embed, Parameter (layers with learnable blobs).
- :mod:`.shape`: Concat, Slice, Split, Flatten, Reshape, Tile, Silence (data movement).
- :mod:`.elementwise`: Eltwise (PROD, SUM, MAX).
- :mod:`.reduce`: Reduction, ArgMax.
- :mod:`.select`: Filter, BatchReindex (pick batch items by a second bottom).
"""

from . import dense, elementwise, reduce, select, shape  # noqa: F401
