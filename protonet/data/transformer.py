"""DataTransformer: Caffe's transform_param applied to one (C, H, W) image.

TransformationParameter fields and defaults: scale (1), mirror (false), crop_size (0),
mean_file (""), mean_value (repeated; 1 or C values), force_color (false), force_gray (false).

Per image, in Caffe's order (data_transformer.cpp): pick the crop window (random in TRAIN,
centred in TEST), subtract the mean (mean_file at the same window, or one mean_value per
channel), multiply by scale, and flip left-right when the mirror coin says so. All arithmetic is
float32, as in Caffe, so deterministic transforms are bit-exact.
"""

import numpy as np

from ..errors import ProtonetError
from ..io.blobproto import read_blobproto
from ..log import get_logger
from ..proto import caffe_pb2
from ..rng import get_rng

log = get_logger(__name__)


def derived_rng():
    """A generator seeded from the global one, as Caffe seeds each layer's RNG from its own."""
    return np.random.default_rng(int(get_rng().integers(2**63)))


class DataTransformer:
    """Applies a TransformationParameter to (C, H, W) arrays.

    ``phase`` is caffe_pb2.TRAIN or TEST. The transformer owns a generator derived from the
    global RNG at construction (Caffe's InitRand), used for crops and mirror coin flips; so a
    seeded run repeats even though batches are prepared on a background thread.
    ``get_state()``/``set_state(state)`` save and restore that generator (None when the
    transformer draws no random numbers), so random crops and mirrors replay after a resume.
    """

    def __init__(self, param, phase, where="transform_param"):
        self.phase = phase
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop_size = int(param.crop_size)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise ProtonetError(f"{where}: force_color and force_gray cannot both be set")
        if param.mean_file and len(param.mean_value):
            raise ProtonetError(f"{where}: give mean_file or mean_value, not both")
        self.mean = None
        self.mean_file = param.mean_file
        if param.mean_file:
            log.info("Loading mean file from: %s", param.mean_file)
            mean = read_blobproto(param.mean_file)
            if mean.ndim == 4 and mean.shape[0] == 1:
                mean = mean[0]
            if mean.ndim != 3:
                raise ProtonetError(f"the mean must be a 1×C×H×W blob, got shape {mean.shape}",
                                    file=param.mean_file)
            self.mean = mean
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)
        needs_rand = self.mirror or (phase == caffe_pb2.TRAIN and self.crop_size > 0)
        self.rng = derived_rng() if needs_rand else None

    def get_state(self):
        """The generator's state (JSON-serialisable), or None if the transformer has none."""
        return None if self.rng is None else self.rng.bit_generator.state

    def set_state(self, state):
        """Restore a state from :meth:`get_state`."""
        if (state is None) != (self.rng is None):
            log.warning("the saved crop/mirror RNG state does not match this transform_param "
                        "(random crop or mirror was switched on or off since the snapshot); "
                        "the transformer keeps its fresh state")
            return
        if state is not None:
            self.rng.bit_generator.state = state

    def infer_shape(self, channels, height, width, where="record"):
        """The (C, H', W') a (channels, height, width) image becomes; checks crop and means."""
        if channels <= 0:
            raise ProtonetError(f"{where}: image has {channels} channels")
        if self.crop_size > height or self.crop_size > width:
            raise ProtonetError(f"{where}: crop_size {self.crop_size} is larger than the image "
                                f"({height}×{width}); lower crop_size or resize the images")
        if self.mean is not None and self.mean.shape != (channels, height, width):
            raise ProtonetError(f"{where}: the mean file {self.mean_file!r} has shape "
                                f"{'×'.join(map(str, self.mean.shape))} but the data is "
                                f"{channels}×{height}×{width}; recompute it with "
                                f"compute_image_mean on this database")
        if len(self.mean_values) not in (0, 1, channels):
            raise ProtonetError(f"{where}: give either 1 mean_value or as many as channels "
                                f"({channels}), got {len(self.mean_values)}")
        if self.crop_size:
            return channels, self.crop_size, self.crop_size
        return channels, height, width

    def _offsets(self, height, width):
        crop = self.crop_size
        if not crop:
            return 0, 0, height, width
        if self.phase == caffe_pb2.TRAIN:
            h_off = int(self.rng.integers(height - crop + 1))
            w_off = int(self.rng.integers(width - crop + 1))
        else:
            h_off, w_off = (height - crop) // 2, (width - crop) // 2
        return h_off, w_off, crop, crop

    def transform(self, image, out, where="record"):
        """Transform a (C, H, W) uint8/float32 array into ``out`` (C, H', W') float32."""
        channels, height, width = image.shape
        expected = self.infer_shape(channels, height, width, where)
        if out.shape != expected:
            raise ProtonetError(f"{where}: image is {channels}×{height}×{width}, which gives "
                                f"{expected}, but this batch holds {out.shape} (every record of "
                                f"a batch must have the size of its first one)")
        # Caffe draws the mirror coin before the crop offsets (data_transformer.cpp).
        do_mirror = self.mirror and bool(self.rng.integers(2))
        h_off, w_off, h, w = self._offsets(height, width)
        window = (slice(None), slice(h_off, h_off + h), slice(w_off, w_off + w))
        x = image[window].astype(np.float32)
        if self.mean is not None:
            x -= self.mean[window]
        elif len(self.mean_values):
            x -= self.mean_values.reshape(-1, 1, 1)
        x *= self.scale
        out[...] = x[:, :, ::-1] if do_mirror else x
