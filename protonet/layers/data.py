"""Data and input layers: Data, ImageData, WindowData, HDF5Data, HDF5Output, MemoryData,
DummyData, Input.

Data layers have no bottoms and no backward. They shape their tops at setup (Caffe reads the
first record to do so). Data, ImageData and WindowData prepare batches on a background thread
(``data_param.prefetch`` batches ahead, default 4; 0 loads synchronously) and apply
``transform_param`` through :class:`protonet.data.transformer.DataTransformer`. Call ``close()``
to stop the thread early; it also stops when the layer is garbage-collected, and a forward after
``close()`` restarts it where the layer was.

Every layer that reads a source implements the data-position interface of exact resume
(:mod:`protonet.solvers.snapshot`): ``get_position()`` returns, as JSON-serialisable values,
where the *next* forward reads (cursor, current order, and the state of every RNG the layer and
its transformer own); ``set_position(position)`` puts the layer back there. A prefetching layer
reports the position of the batch its next forward returns, not how far its thread has read;
``set_position`` discards the prefetched batches and restarts the thread from the position.
"""

import h5py
import numpy as np

from ..data.datum import datum_to_array, decode_image, parse_datum, read_image, resize_image
from ..data.db import LMDBCursor
from ..data.prefetch import Prefetcher
from ..data.transformer import DataTransformer, derived_rng
from ..distributed import shard_skips
from ..errors import ProtonetError
from ..fillers import fill
from ..log import get_logger
from ..proto import caffe_pb2
from ..rng import get_rng
from .base import Layer
from .registry import register

log = get_logger(__name__)

RESTART_MESSAGE = "Restarting data prefetching from start."
_DEPRECATED_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _read_list_file(source, what):
    """The non-blank lines of a text list file; a ProtonetError if it cannot be read."""
    if not source:
        raise ProtonetError(f"no source given; set it to the {what}")
    try:
        with open(source, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f if line.strip()]
    except OSError as err:
        raise ProtonetError(f"could not open the {what} ({err.strerror})", file=source) from None


def _parse_image_list(source):
    """Caffe's "path label" list (the label follows the last space); [(path, label)]."""
    entries = []
    for number, line in enumerate(_read_list_file(source, "image list file"), start=1):
        path, _, label = line.rstrip().rpartition(" ")
        try:
            entries.append((path, int(label)))
        except ValueError:
            raise ProtonetError(f"line {number}: expected 'path label' with an integer label, "
                                f"got {line!r}", file=source, line=number) from None
        if not path:
            raise ProtonetError(f"line {number}: no image path before the label",
                                file=source, line=number)
    if not entries:
        raise ProtonetError("the image list file is empty", file=source)
    return entries


def _jsonable(value):
    """``value`` with numpy arrays and scalars turned into lists and Python numbers."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _rng_state(rng):
    return None if rng is None else rng.bit_generator.state


def _set_rng_state(rng, state, what):
    if (rng is None) != (state is None):
        raise ProtonetError(f"the saved data position does not match this layer: {what} was "
                            f"switched on or off since the snapshot; delete the snapshot's "
                            f".pnstate file to start the data from the beginning")
    if rng is not None:
        rng.bit_generator.state = state


def _changed_source(what):
    return ProtonetError(f"the saved data position does not fit the data: {what}. The source "
                         f"changed since the snapshot; delete the snapshot's .pnstate file to "
                         f"start the data from the beginning")


def _warn_deprecated_transform(layer, message):
    """Caffe ignores scale/mean_file/crop_size/mirror in the V2 per-layer params; say so."""
    for field in _DEPRECATED_TRANSFORM_FIELDS:
        if message.HasField(field):
            log.warning("layer '%s': %s is deprecated and ignored, as in Caffe; move it into "
                        "transform_param", layer.name, field)


# ---- prefetching layers ----------------------------------------------------------------------
class PrefetchingDataLayer(Layer):
    """Base of Data, ImageData and WindowData: transformer + background batch loading.

    Subclasses implement ``data_setup(tops)`` (open the source, shape the tops),
    ``load_batch()`` → (data (N, C, H, W) float32, labels (N,) float32), run on the thread,
    ``capture()`` → the loader's position (where its next batch starts; arrays in it are never
    mutated afterwards) and ``restore(position)``, which puts the loader back there (reopening
    the source if ``close()`` closed it).
    """

    exact_bottoms = 0
    min_tops = 1
    max_tops = 2
    prefetcher = None
    shard = (0, 1)

    def set_shard(self, rank, size):
        """Read rank ``rank``'s 1/``size`` of the data (distributed training).

        Of every size·batch_size consecutive items of the stream, this layer reads items
        rank·batch_size … rank·batch_size + batch_size − 1 (protonet.distributed.shard_skips);
        positions stay those of the whole stream, so every rank can restore rank 0's. Batches
        prefetched before the call are dropped: the next forward reads from the same place.
        """
        self.shard = (int(rank), int(size))
        self._restart(self._position)

    def setup(self, bottoms, tops):
        self.close()
        self.output_labels = len(tops) == 2
        with self.naming_errors():
            self.transformer = DataTransformer(self.param.transform_param, self.phase)
            self.data_setup(tops)
        self._position = self.capture()
        self._start_prefetch()

    def _start_prefetch(self):
        self.prefetcher = Prefetcher(self._load_with_position, self.param.data_param.prefetch,
                                     name=f"prefetch-{self.name}")

    def _load_with_position(self):
        """A batch and the loader's position after it, i.e. where the following batch starts."""
        batch = self.load_batch()
        return batch, self.capture()

    def reshape(self, bottoms, tops):
        """Tops are shaped at setup and by each batch (Caffe's BaseDataLayer::Reshape is empty)."""

    def forward(self, bottoms, tops):
        with self.naming_errors():
            if self.prefetcher is None:             # closed: carry on from where we were
                self._restart(self._position)
            (data, labels), self._position = self.prefetcher.get()
        tops[0].reshape(data.shape)
        tops[0].data[...] = data
        if self.output_labels:
            tops[1].reshape(labels.shape)
            tops[1].data[...] = labels

    def get_position(self):
        """Where the next forward reads (JSON-serialisable); see the module docstring."""
        return _jsonable(self._position)

    def set_position(self, position):
        """Make the next forward return the batch at ``position`` (from get_position)."""
        with self.naming_errors():
            self._restart(position)

    def _restart(self, position):
        self._stop_prefetch()
        self.restore(position)
        self._position = self.capture()
        self._start_prefetch()

    def _stop_prefetch(self):
        if self.prefetcher is not None:
            # Wait for the batch being loaded: the loader's state must be quiet from here on.
            self.prefetcher.close(timeout=None)
            self.prefetcher = None

    def close(self):
        """Stop the prefetch thread (also happens when the layer is garbage-collected)."""
        self._stop_prefetch()

    def _shape_tops(self, tops, batch_size, item_shape):
        tops[0].reshape((batch_size,) + tuple(item_shape))
        log.info("output data size: %s", ",".join(str(d) for d in tops[0].shape))
        if self.output_labels:
            tops[1].reshape(batch_size)


@register("Data")
class DataLayer(PrefetchingDataLayer):
    """Batches of Datum records from an LMDB, transformed; the database wraps around.

    data_param: source (LMDB directory), batch_size, backend (LEVELDB default → only LMDB is
    supported), rand_skip (0), prefetch (4). Records hold raw uint8 ``data``, ``float_data`` or
    an ``encoded`` JPEG/PNG (force_color/force_gray in transform_param).
    Tops: data (N, C, H, W); optional label (N,). No in-place use.
    """

    def data_setup(self, tops):
        p = self.param.data_param
        _warn_deprecated_transform(self, p)
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise ProtonetError("data_param.batch_size must be positive")
        self.source = p.source
        self.cursor = LMDBCursor(self.source)
        self.index = 0              # the cursor's record number, counted from the first
        self._check_backend(p)
        if p.rand_skip:
            skip = int(get_rng().integers(p.rand_skip))
            log.info("Skipping first %d data points.", skip)
            self.cursor.skip(skip)
            self.index = skip % self.cursor.entries
        image, _ = self._read_record()
        try:
            shape = self.transformer.infer_shape(*image.shape, where=self._where())
        except ProtonetError as err:
            raise err.with_context(file=self.source)
        self._shape_tops(tops, self.batch_size, shape)

    def _check_backend(self, p):
        """LMDB is the only backend (a LevelDB directory fails in LMDBCursor, with advice)."""
        source = self.source
        if p.HasField("backend") and p.backend == caffe_pb2.DataParameter.LEVELDB:
            log.warning("layer '%s': backend LEVELDB requested; reading %s as LMDB (the only "
                        "backend protonet supports)", self.name, source)

    def _where(self):
        return f"record '{self.cursor.key()}'"

    def _read_record(self):
        where = self._where()
        try:
            datum = parse_datum(self.cursor.value(), where)
            tp = self.transformer
            image = datum_to_array(datum, tp.force_color, tp.force_gray, where)
        except ProtonetError as err:
            raise err.with_context(file=self.source)
        return image, datum.label

    def _advance(self):
        if self.cursor.next():
            log.info(RESTART_MESSAGE)
            self.index = 0
        else:
            self.index += 1

    def load_batch(self):
        data = None
        labels = np.zeros(self.batch_size, dtype=np.float32)
        before, after = shard_skips(*self.shard, self.batch_size)
        for _ in range(before):
            self._advance()
        for item in range(self.batch_size):
            image, labels[item] = self._read_record()
            where = self._where()
            if data is None:
                # Like Caffe, the first record of each batch sets the batch's shape.
                shape = image.shape if self.transformer.crop_size == 0 else \
                    (image.shape[0], self.transformer.crop_size, self.transformer.crop_size)
                data = np.empty((self.batch_size,) + shape, dtype=np.float32)
            try:
                self.transformer.transform(image, data[item], where)
            except ProtonetError as err:
                raise err.with_context(file=self.source)
            self._advance()
        for _ in range(after):
            self._advance()
        return data, labels

    def capture(self):
        return {"index": self.index, "key": self.cursor.key(),
                "transform": self.transformer.get_state()}

    def restore(self, position):
        """Reopen the database and step to record ``index`` (checking that its key matches)."""
        index = int(position["index"])
        if self.cursor is not None:
            self.cursor.close()
        self.cursor = LMDBCursor(self.source)
        if not 0 <= index < self.cursor.entries:
            raise _changed_source(f"record {index} of a database of {self.cursor.entries}")
        self.cursor.skip(index)
        self.index = index
        key = position.get("key")
        if key is not None and self.cursor.key() != key:
            raise _changed_source(f"record {index} has key '{self.cursor.key()}', the snapshot "
                                  f"expected '{key}'")
        self.transformer.set_state(position.get("transform"))

    def close(self):
        super().close()
        cursor = getattr(self, "cursor", None)
        if cursor is not None:
            cursor.close()
            self.cursor = None


@register("ImageData")
class ImageDataLayer(PrefetchingDataLayer):
    """Batches of image files listed as "path label" lines, transformed.

    image_data_param: source (list file), root_folder (""; prefixed to each path as is),
    batch_size (1), shuffle (false; reshuffled at each pass), new_height/new_width (0: keep
    size; both or neither), is_color (true: BGR; false: grey), rand_skip (0).
    Tops: data (N, C, H, W), label (N,).
    """

    min_tops = 2

    def data_setup(self, tops):
        p = self.param.image_data_param
        _warn_deprecated_transform(self, p)
        self.new_size = (int(p.new_height), int(p.new_width))
        if (self.new_size[0] > 0) != (self.new_size[1] > 0):
            raise ProtonetError("set new_height and new_width together (or neither)")
        self.is_color = bool(p.is_color)
        self.root_folder = p.root_folder
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise ProtonetError("image_data_param.batch_size must be positive")
        self.source = p.source
        log.info("Opening file %s", self.source)
        self.all_lines = _parse_image_list(self.source)
        self.order = np.arange(len(self.all_lines))     # replaced, never mutated, by a shuffle
        self.lines = self.all_lines
        self.shuffle = bool(p.shuffle)
        self.rng = None
        if self.shuffle:
            log.info("Shuffling data")
            self.rng = derived_rng()
            self._shuffle()
        log.info("A total of %d images.", len(self.lines))
        self.line_id = 0
        if p.rand_skip:
            skip = int(get_rng().integers(p.rand_skip))
            log.info("Skipping first %d data points.", skip)
            if skip >= len(self.lines):
                raise ProtonetError(f"rand_skip {skip} exceeds the {len(self.lines)} images")
            self.line_id = skip
        image = self._read(self.line_id)
        shape = self.transformer.infer_shape(*image.shape, where=self._where(self.line_id))
        self._shape_tops(tops, self.batch_size, shape)

    def _shuffle(self):
        self.order = self.order[self.rng.permutation(len(self.order))]
        self.lines = [self.all_lines[i] for i in self.order]

    def capture(self):
        return {"line_id": self.line_id, "order": self.order if self.shuffle else None,
                "rng": _rng_state(self.rng), "transform": self.transformer.get_state()}

    def restore(self, position):
        line_id = int(position["line_id"])
        n = len(self.all_lines)
        if not 0 <= line_id < n:
            raise _changed_source(f"line {line_id + 1} of a list of {n} images")
        order = position.get("order")
        if (order is None) == self.shuffle:
            raise _changed_source("shuffle was switched on or off")
        if order is not None:
            order = np.asarray(order, dtype=np.int64)
            if sorted(order.tolist()) != list(range(n)):
                raise _changed_source(f"the saved order does not list {n} images")
            self.order = order
            self.lines = [self.all_lines[i] for i in order]
        _set_rng_state(self.rng, position.get("rng"), "shuffle")
        self.transformer.set_state(position.get("transform"))
        self.line_id = line_id

    def _where(self, line_id):
        return f"image '{self.lines[line_id][0]}' (line {line_id + 1} of {self.source})"

    def _read(self, line_id):
        path = self.root_folder + self.lines[line_id][0]
        with self.naming_errors():
            return read_image(path, *self.new_size, self.is_color).transpose(2, 0, 1)

    def _advance(self):
        self.line_id += 1
        if self.line_id >= len(self.lines):
            log.debug(RESTART_MESSAGE)
            self.line_id = 0
            if self.shuffle:
                self._shuffle()

    def load_batch(self):
        data = None
        labels = np.zeros(self.batch_size, dtype=np.float32)
        before, after = shard_skips(*self.shard, self.batch_size)
        for _ in range(before):
            self._advance()
        for item in range(self.batch_size):
            image = self._read(self.line_id)
            where = self._where(self.line_id)
            if data is None:
                shape = self.transformer.infer_shape(*image.shape, where=where)
                data = np.empty((self.batch_size,) + shape, dtype=np.float32)
            self.transformer.transform(image, data[item], where)
            labels[item] = self.lines[self.line_id][1]
            self._advance()
        for _ in range(after):
            self._advance()
        return data, labels


@register("WindowData")
class WindowDataLayer(PrefetchingDataLayer):
    """R-CNN window sampling: fg/bg windows cut from images, warped to crop_size × crop_size.

    window_data_param: source (window file), batch_size, fg_threshold (0.5), bg_threshold (0.5),
    fg_fraction (0.25), context_pad (0), crop_mode ("warp" | "square"), cache_images (false),
    root_folder (""), scale (1). transform_param: crop_size (required), mirror, mean_file or
    mean_value. Window file: repeated blocks "# index / path / channels / height / width /
    num_windows / num_windows × (class overlap x1 y1 x2 y2)".
    Tops: data (N, C, crop, crop), label (N,): N·fg_fraction foreground windows last.
    Caffe quirk: the scale comes from window_data_param.scale, not transform_param.scale
    (window_data_layer.cpp).
    """

    exact_tops = 2

    def data_setup(self, tops):
        p = self.param.window_data_param
        tp = self.param.transform_param
        self.batch_size = int(p.batch_size)
        self.crop_size = int(tp.crop_size)
        if self.crop_size <= 0:
            raise ProtonetError("WindowData needs transform_param.crop_size > 0")
        if self.batch_size <= 0:
            raise ProtonetError("window_data_param.batch_size must be positive")
        if p.crop_mode not in ("warp", "square"):
            raise ProtonetError(f"crop_mode must be 'warp' or 'square', got {p.crop_mode!r}")
        if tp.scale != 1.0:
            log.warning("layer '%s': WindowData ignores transform_param.scale, as Caffe does; "
                        "use window_data_param.scale", self.name)
        self.scale = np.float32(p.scale)
        self.fg_fraction = float(p.fg_fraction)
        self.context_pad = int(p.context_pad)
        self.square = p.crop_mode == "square"
        self.mirror = bool(tp.mirror)
        self.cache_images = bool(p.cache_images)
        self.source = p.source
        self.images, self.fg_windows, self.bg_windows = self._read_window_file(p)
        if not self.fg_windows or not self.bg_windows:
            raise ProtonetError(f"needs both foreground and background windows; found "
                                f"{len(self.fg_windows)} and {len(self.bg_windows)}",
                                file=self.source)
        self.cache = {}
        if self.cache_images:
            for index, (path, _) in self.images.items():
                self.cache[index] = self._read_bytes(path)
        channels = next(iter(self.images.values()))[1][0]
        self.channels = channels
        self.mean = self.transformer.mean
        self.mean_values = self.transformer.mean_values
        if len(self.mean_values) not in (0, 1, channels):
            raise ProtonetError(f"give either 1 mean_value or as many as channels ({channels})")
        self.rng = derived_rng()
        tops[0].reshape(self.batch_size, channels, self.crop_size, self.crop_size)
        tops[1].reshape(self.batch_size)

    def capture(self):
        """Windows are drawn at random from fixed fg/bg lists: the RNG is the whole position."""
        return {"windows": [len(self.fg_windows), len(self.bg_windows)],
                "rng": _rng_state(self.rng), "transform": self.transformer.get_state()}

    def restore(self, position):
        windows = [len(self.fg_windows), len(self.bg_windows)]
        if list(position.get("windows", windows)) != windows:
            raise _changed_source(f"the window file now has {windows[0]} foreground and "
                                  f"{windows[1]} background windows, the snapshot had "
                                  f"{list(position['windows'])}")
        _set_rng_state(self.rng, position.get("rng"), "the window sampler")
        self.transformer.set_state(position.get("transform"))

    def _read_window_file(self, p):
        try:
            with open(self.source, encoding="utf-8") as f:
                tokens = f.read().split()
        except OSError as err:
            raise ProtonetError(f"could not open the window file ({err.strerror})",
                                file=self.source) from None
        if not tokens:
            raise ProtonetError("the window file is empty", file=self.source)
        images, fg, bg = {}, [], []
        pos = 0
        try:
            while pos < len(tokens):
                if tokens[pos] != "#":
                    raise ValueError(f"expected '#' at token {pos + 1}, got {tokens[pos]!r}")
                index = int(tokens[pos + 1])
                path = p.root_folder + tokens[pos + 2]
                size = tuple(int(t) for t in tokens[pos + 3:pos + 6])
                num_windows = int(tokens[pos + 6])
                pos += 7
                images[index] = (path, size)
                for _ in range(num_windows):
                    label, overlap = int(tokens[pos]), float(tokens[pos + 1])
                    box = [int(t) for t in tokens[pos + 2:pos + 6]]
                    pos += 6
                    if overlap >= p.fg_threshold:
                        if label <= 0:
                            raise ValueError(f"foreground window with label {label} in image "
                                             f"{index}")
                        fg.append((index, label, box))
                    elif overlap < p.bg_threshold:
                        bg.append((index, 0, box))
        except (ValueError, IndexError) as err:
            raise ProtonetError(f"malformed window file: {err}", file=self.source) from None
        log.info("Number of images: %d", len(images))
        return images, fg, bg

    @staticmethod
    def _read_bytes(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as err:
            raise ProtonetError(f"could not open or find the image ({err.strerror})",
                                file=path) from None

    def _image(self, index):
        path = self.images[index][0]
        payload = self.cache[index] if self.cache_images else self._read_bytes(path)
        return decode_image(payload, color=True, where=path)

    def _expand(self, box, do_mirror, rows, cols):
        """Context padding / square crop (window_data_layer.cpp): box, warp size, pad h/w."""
        x1, y1, x2, y2 = box
        crop = self.crop_size
        f32 = np.float32
        context_scale = f32(crop) / f32(crop - 2 * self.context_pad)
        half_h = f32(y2 - y1 + 1) / f32(2.0)
        half_w = f32(x2 - x1 + 1) / f32(2.0)
        center_x, center_y = f32(x1) + half_w, f32(y1) + half_h
        if self.square:
            half_h = half_w = max(half_h, half_w)
        x1 = int(np.round(center_x - half_w * context_scale))
        x2 = int(np.round(center_x + half_w * context_scale))
        y1 = int(np.round(center_y - half_h * context_scale))
        y2 = int(np.round(center_y + half_h * context_scale))
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        scale_x, scale_y = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
        warp_w = int(np.round(f32(x2 - x1 + 1) * scale_x))
        warp_h = int(np.round(f32(y2 - y1 + 1) * scale_y))
        pad_h = int(np.round(f32(pad_y1) * scale_y))
        pad_w = int(np.round(f32(pad_x2 if do_mirror else pad_x1) * scale_x))
        warp_h = min(warp_h, crop - pad_h)
        warp_w = min(warp_w, crop - pad_w)
        return (x1, y1, x2, y2), (warp_h, warp_w), (pad_h, pad_w)

    def load_batch(self):
        crop = self.crop_size
        data = np.zeros((self.batch_size, self.channels, crop, crop), dtype=np.float32)
        labels = np.zeros(self.batch_size, dtype=np.float32)
        rank, size = self.shard
        draws = [self._draw_windows() for _ in range(size)][rank]
        for item, (index, label, box, do_mirror) in enumerate(draws):
            image = self._image(index)
            rows, cols = image.shape[:2]
            pad = (0, 0)
            warp = (crop, crop)
            if self.context_pad > 0 or self.square:
                box, warp, pad = self._expand(box, do_mirror, rows, cols)
            x1, y1, x2, y2 = box
            window = resize_image(image[y1:y2 + 1, x1:x2 + 1], *warp)
            if do_mirror:
                window = window[:, ::-1]
            self._write_window(window, pad, data[item])
            labels[item] = label
        return data, labels

    def _draw_windows(self):
        """One batch's (image index, label, box, mirror) draws: background first, then
        foreground, as Caffe samples them. With a shard, every rank draws the batches of all
        ranks from the same RNG and keeps its own: the ranks' windows are independent draws."""
        num_fg = int(np.float32(self.batch_size) * np.float32(self.fg_fraction))
        draws = []
        for windows, count in ((self.bg_windows, self.batch_size - num_fg),
                               (self.fg_windows, num_fg)):
            for _ in range(count):
                index, label, box = windows[int(self.rng.integers(2**32)) % len(windows)]
                do_mirror = self.mirror and bool(self.rng.integers(2**32) % 2)
                draws.append((index, label, box, do_mirror))
        return draws

    def _write_window(self, window, pad, out):
        """(pixel - mean) * scale into out (C, crop, crop) at offset ``pad``; mean at the same
        place of the centre crop of the mean image (window_data_layer.cpp)."""
        pad_h, pad_w = pad
        h, w = window.shape[:2]
        x = window.transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            off = (self.mean.shape[2] - self.crop_size) // 2
            x -= self.mean[:, off + pad_h:off + pad_h + h, off + pad_w:off + pad_w + w]
        elif len(self.mean_values):
            x -= self.mean_values.reshape(-1, 1, 1)
        out[:, pad_h:pad_h + h, pad_w:pad_w + w] = x * self.scale


# ---- HDF5 ------------------------------------------------------------------------------------
@register("HDF5Data")
class HDF5DataLayer(Layer):
    """Rows of HDF5 datasets, one top per dataset named like the top, in Caffe's order.

    hdf5_data_param: source (text file listing .h5 paths, whitespace-separated), batch_size,
    shuffle (false: files and rows in order; true: file order reshuffled at each pass over the
    files, row order reshuffled whenever a file is (re)loaded or wrapped).
    Tops: any number; top i has shape (batch_size,) + dataset.shape[1:]. No transform_param.
    """

    shard = (0, 1)
    exact_bottoms = 0
    min_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.hdf5_data_param
        if self.param.HasField("transform_param"):
            self.fail("HDF5Data does not transform data; remove transform_param (scale the "
                      "data when writing the HDF5 file)")
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            self.fail("hdf5_data_param.batch_size must be positive")
        self.top_names = list(self.param.top)
        if len(self.top_names) != len(tops):
            self.top_names = [f"top{i}" for i in range(len(tops))]
        self.source = p.source
        log.info("Loading list of HDF5 filenames from: %s", self.source)
        with self.naming_errors():
            self.files = [tok for line in _read_list_file(self.source, "HDF5 file list")
                          for tok in line.split()]
        if not self.files:
            raise ProtonetError("the HDF5 file list is empty", file=self.source,
                                layer=self.name, layer_type=self.type)
        log.info("Number of HDF5 files: %d", len(self.files))
        self.shuffle = bool(p.shuffle)
        self.rng = derived_rng() if self.shuffle else None
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self._load(self.files[self.file_order[0]])
        self.current_row = 0
        for top, array in zip(tops, self.arrays):
            top.reshape((self.batch_size,) + array.shape[1:])

    def _load(self, path):
        arrays = []
        try:
            with h5py.File(path, "r") as f:
                for i, name in enumerate(self.top_names):
                    if name not in f or not isinstance(f[name], h5py.Dataset):
                        found = ", ".join(sorted(f.keys())) or "none"
                        raise ProtonetError(f"no dataset '{name}' for top {i}; the file has: "
                                            f"{found}", file=path, layer=self.name,
                                            layer_type=self.type)
                    dataset = f[name]
                    if dataset.dtype.kind not in "fiub" or dataset.ndim < 1:
                        raise ProtonetError(f"dataset '{name}' must be numeric with at least 1 "
                                            f"axis, got {dataset.dtype} {dataset.shape}",
                                            file=path, layer=self.name, layer_type=self.type)
                    arrays.append(np.ascontiguousarray(dataset[...], dtype=np.float32))
        except OSError as err:
            raise ProtonetError(f"failed opening the HDF5 file ({err})", file=path,
                                layer=self.name, layer_type=self.type) from None
        rows = arrays[0].shape[0]
        for name, array in zip(self.top_names, arrays):
            if array.shape[0] != rows:
                raise ProtonetError(f"dataset '{name}' has {array.shape[0]} rows but "
                                    f"'{self.top_names[0]}' has {rows}", file=path,
                                    layer=self.name, layer_type=self.type)
        self.arrays = arrays
        self.rows = np.arange(rows)
        if self.shuffle:
            self.rng.shuffle(self.rows)

    def _next(self):
        self.current_row += 1
        if self.current_row == len(self.rows):
            if len(self.files) > 1:
                self.current_file += 1
                if self.current_file == len(self.files):
                    self.current_file = 0
                    if self.shuffle:
                        self.rng.shuffle(self.file_order)
                self._load(self.files[self.file_order[self.current_file]])
            self.current_row = 0
            # Caffe quirk: the rows are reshuffled on every wrap, even just after a reload
            # shuffled them (hdf5_data_layer.cpp Next()).
            if self.shuffle:
                self.rng.shuffle(self.rows)

    def get_position(self):
        """File order, current file and row, the row order and the shuffle RNG's state."""
        return {"file_order": self.file_order.tolist(), "current_file": self.current_file,
                "current_row": self.current_row,
                "rows": self.rows.tolist() if self.shuffle else None,
                "rng": _rng_state(self.rng)}

    def set_position(self, position):
        """Load the file the position names and continue at its row, in the saved orders."""
        with self.naming_errors():
            self._set_position(position)

    def _set_position(self, position):
        file_order = np.asarray(position["file_order"], dtype=np.int64)
        if sorted(file_order.tolist()) != list(range(len(self.files))):
            raise _changed_source(f"the saved file order does not list {len(self.files)} "
                                  f"files")
        current_file = int(position["current_file"])
        if not 0 <= current_file < len(self.files):
            raise _changed_source(f"file {current_file} of {len(self.files)}")
        if (position.get("rows") is None) == self.shuffle:
            raise _changed_source("shuffle was switched on or off")
        wanted = int(file_order[current_file])
        if wanted != int(self.file_order[self.current_file]):
            self._load(self.files[wanted])
        rows = np.arange(len(self.rows)) if position.get("rows") is None else \
            np.asarray(position["rows"], dtype=np.int64)
        if sorted(rows.tolist()) != list(range(len(self.rows))):
            raise _changed_source(f"{self.files[wanted]} no longer has {len(rows)} rows")
        current_row = int(position["current_row"])
        if not 0 <= current_row < len(rows):
            raise _changed_source(f"row {current_row} of {len(rows)}")
        _set_rng_state(self.rng, position.get("rng"), "shuffle")
        self.file_order, self.current_file = file_order, current_file
        self.rows, self.current_row = rows, current_row

    def reshape(self, bottoms, tops):
        """Tops keep their setup shapes (Caffe's HDF5DataLayer::Reshape is empty)."""

    def set_shard(self, rank, size):
        """Read rank ``rank``'s 1/``size`` of the rows (distributed training): of every
        size·batch_size consecutive rows, rows rank·batch_size … rank·batch_size + batch_size − 1
        (protonet.distributed.shard_skips). Positions stay those of the whole stream."""
        self.shard = (int(rank), int(size))

    def forward(self, bottoms, tops):
        before, after = shard_skips(*self.shard, self.batch_size)
        for _ in range(before):
            self._next()
        for i in range(self.batch_size):
            row = self.rows[self.current_row]
            for top, array in zip(tops, self.arrays):
                if array.shape[1:] != top.shape[1:]:
                    self.fail(f"an HDF5 file's rows have shape {array.shape[1:]}, but the "
                              f"first file's have {top.shape[1:]}; every file must match")
                top.data[i] = array[row]
            self._next()
        for _ in range(after):
            self._next()


@register("HDF5Output")
class HDF5OutputLayer(Layer):
    """Writes its two bottoms to datasets "data" and "label" of an HDF5 file.

    hdf5_output_param: file_name (created, truncated, at setup). Bottoms: data, label with the
    same first axis; written in Caffe's legacy 4-D form (num, channels, height, width).
    Caffe quirk: Caffe can write only once (a second forward fails, as the datasets exist);
    protonet appends each forward's rows instead.
    """

    exact_bottoms = 2
    exact_tops = 0

    def setup(self, bottoms, tops):
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            self.fail("hdf5_output_param.file_name is not set")
        try:
            with h5py.File(self.file_name, "w"):
                pass
        except OSError as err:
            raise ProtonetError(f"failed to create the HDF5 file ({err})", file=self.file_name,
                                layer=self.name, layer_type=self.type) from None

    def reshape(self, bottoms, tops):
        if bottoms[0].shape[:1] != bottoms[1].shape[:1]:
            self.fail(f"data and label must have the same batch size, got {bottoms[0].shape} "
                      f"and {bottoms[1].shape}")

    def forward(self, bottoms, tops):
        log.info("Saving HDF5 file %s", self.file_name)
        with h5py.File(self.file_name, "a") as f:
            for name, blob in (("data", bottoms[0]), ("label", bottoms[1])):
                legacy = (blob.num, blob.channels, blob.height, blob.width)
                values = blob.data.reshape(legacy)
                if name not in f:
                    f.create_dataset(name, data=values, maxshape=(None,) + legacy[1:])
                else:
                    dataset = f[name]
                    if dataset.shape[1:] != legacy[1:]:
                        self.fail(f"bottom '{name}' changed shape from {dataset.shape[1:]} to "
                                  f"{legacy[1:]} between forwards")
                    start = dataset.shape[0]
                    dataset.resize(start + legacy[0], axis=0)
                    dataset[start:] = values
        log.info("Successfully saved %d rows", bottoms[0].num)


# ---- memory, dummy, input ----------------------------------------------------------------------
@register("MemoryData")
class MemoryDataLayer(Layer):
    """Batches from arrays given by ``set_input_arrays(data, labels)``, cycling through them.

    memory_data_param: batch_size, channels, height, width (all required, > 0).
    Tops: data (batch_size, channels, height, width), label (batch_size,) at setup and
    (batch_size, 1, 1, 1) after a forward — Caffe quirk: memory_data_layer.cpp reshapes it so.
    """

    shard = (0, 1)
    exact_bottoms = 0
    exact_tops = 2

    def setup(self, bottoms, tops):
        p = self.param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.item_shape = (int(p.channels), int(p.height), int(p.width))
        if self.batch_size <= 0 or min(self.item_shape) <= 0:
            self.fail("batch_size, channels, height, and width must be specified and positive "
                      "in memory_data_param")
        self.transformer = DataTransformer(self.param.transform_param, self.phase)
        self._data = None
        self._labels = None
        self.pos = 0
        tops[0].reshape((self.batch_size,) + self.item_shape)
        tops[1].reshape(self.batch_size)

    def set_input_arrays(self, data, labels):
        """Use ``data`` (n, C, H, W) and ``labels`` (n,) or (n, 1, 1, 1); n % batch_size == 0."""
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if data.ndim != 4 or data.shape[1:] != self.item_shape:
            self.fail(f"data must have shape (n, {', '.join(map(str, self.item_shape))}), "
                      f"got {data.shape}")
        n = data.shape[0]
        if labels.size != n or labels.shape[0] != n:
            self.fail(f"labels must have shape ({n},) or ({n}, 1, 1, 1), got {labels.shape}")
        if n == 0 or n % self.batch_size:
            self.fail(f"the number of items ({n}) must be a positive multiple of batch_size "
                      f"({self.batch_size})")
        if self.param.HasField("transform_param"):
            log.warning("layer '%s': MemoryData does not transform array data set by "
                        "set_input_arrays", self.name)
        self._data, self._labels = data, labels.reshape(n)
        self.pos = 0

    def add_datum_vector(self, datums):
        """Transform a list of Datums (as Caffe's AddDatumVector) and use them as the input."""
        if not datums or len(datums) % self.batch_size:
            self.fail(f"the number of datums ({len(datums)}) must be a positive multiple of "
                      f"batch_size ({self.batch_size})")
        tp = self.transformer
        data = np.empty((len(datums),) + self.item_shape, dtype=np.float32)
        for i, datum in enumerate(datums):
            tp.transform(datum_to_array(datum, tp.force_color, tp.force_gray), data[i],
                         where=f"datum {i}")
        self._data = data
        self._labels = np.asarray([d.label for d in datums], dtype=np.float32)
        self.pos = 0

    def set_batch_size(self, batch_size):
        self.batch_size = int(batch_size)

    def get_position(self):
        """The cursor into the arrays (and the transformer's RNG, used by add_datum_vector).

        ``set_input_arrays`` and ``add_datum_vector`` reset the cursor: give the arrays before
        restoring a snapshot.
        """
        return {"pos": self.pos, "transform": self.transformer.get_state()}

    def set_position(self, position):
        pos = int(position["pos"])
        if pos < 0 or (self._data is not None and pos >= self._data.shape[0]):
            size = "no" if self._data is None else self._data.shape[0]
            raise _changed_source(f"item {pos} of {size} items").with_context(
                layer=self.name, layer_type=self.type)
        self.pos = pos
        self.transformer.set_state(position.get("transform"))

    def reshape(self, bottoms, tops):
        """Tops are shaped by forward."""

    def forward(self, bottoms, tops):
        if self._data is None:
            self.fail("no input: call set_input_arrays(data, labels) before forward")
        rank, size = self.shard
        n = self._data.shape[0]
        if n % (size * self.batch_size):
            self.fail(f"with {size} ranks the number of items ({n}) must be a multiple of "
                      f"{size} × batch_size ({self.batch_size})")
        start = self.pos + rank * self.batch_size
        end = start + self.batch_size
        tops[0].reshape((self.batch_size,) + self.item_shape)
        tops[0].data[...] = self._data[start:end]
        tops[1].reshape(self.batch_size, 1, 1, 1)
        tops[1].data[...] = self._labels[start:end].reshape(-1, 1, 1, 1)
        self.pos = (self.pos + size * self.batch_size) % n

    def set_shard(self, rank, size):
        """Read rank ``rank``'s 1/``size`` of the arrays (distributed training): of every
        size·batch_size consecutive items, items rank·batch_size … rank·batch_size + batch_size − 1;
        the arrays must hold a multiple of size·batch_size items. ``pos`` stays the position
        in the whole stream."""
        self.shard = (int(rank), int(size))


def _one_or_per_top(values, n_tops, what):
    if len(values) not in (1, n_tops):
        raise ProtonetError(f"give '{what}' once, or once per top ({n_tops}); got {len(values)}")
    return [values[0 if len(values) == 1 else i] for i in range(n_tops)]


@register("DummyData")
class DummyDataLayer(Layer):
    """Tops filled by fillers: constant fillers once at setup, the others at every forward.

    dummy_data_param: data_filler (0 → constant 0, 1 for all tops, or one per top); shape (1 or
    one per top) or the legacy num/channels/height/width (each 1 or one per top).
    """

    exact_bottoms = 0
    min_tops = 1

    def setup(self, bottoms, tops):
        p = self.param.dummy_data_param
        n = len(tops)
        if len(p.data_filler) not in (0, 1, n):
            self.fail(f"give 0, 1 or {n} (one per top) data fillers; got {len(p.data_filler)}")
        fillers = list(p.data_filler) or [caffe_pb2.FillerParameter(type="constant", value=0)]
        self.fillers = _one_or_per_top(fillers, n, "data_filler") if len(fillers) == 1 \
            else fillers
        legacy = (p.num, p.channels, p.height, p.width)
        with self.naming_errors():
            if any(len(f) for f in legacy):
                if len(p.shape):
                    self.fail("give shape or the legacy num/channels/height/width, not both")
                dims = [_one_or_per_top(f, n, name) for f, name in
                        zip(legacy, ("num", "channels", "height", "width"))]
                shapes = [tuple(int(d[i]) for d in dims) for i in range(n)]
            else:
                shapes = [tuple(s.dim) for s in _one_or_per_top(p.shape, n, "shape")]
        self.refill = [f.type != "constant" for f in self.fillers]
        for top, shape, filler, refill in zip(tops, shapes, self.fillers, self.refill):
            top.reshape(shape)
            if not refill:
                fill(top.data, filler)

    def reshape(self, bottoms, tops):
        """Tops keep their shapes (Caffe's DummyDataLayer::Reshape is empty)."""

    def forward(self, bottoms, tops):
        for top, filler, refill in zip(tops, self.fillers, self.refill):
            if refill:
                fill(top.data, filler)


@register("Input")
class InputLayer(Layer):
    """Deploy-time inputs: tops shaped by input_param.shape (none, one for all, or one per top);
    their contents are set by the caller. Forward does nothing."""

    exact_bottoms = 0
    min_tops = 1

    def setup(self, bottoms, tops):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(tops)):
            self.fail(f"give 'shape' once, once per top, or not at all: {len(tops)} tops vs. "
                      f"{len(shapes)} shapes")
        if shapes:
            for top, shape in zip(tops, _one_or_per_top(shapes, len(tops), "shape")):
                top.reshape(tuple(shape.dim))

    def reshape(self, bottoms, tops):
        """Input blobs keep whatever shape the caller gave them."""

    def forward(self, bottoms, tops):
        """Nothing to compute: the caller fills the tops."""
