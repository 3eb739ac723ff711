"""Vision layers: convolution (Convolution, Deconvolution, Im2col), Pooling, LRN, Crop, SPP.

Importing this package registers them all.
"""

from . import conv, crop, lrn, pool, spp  # noqa: F401
