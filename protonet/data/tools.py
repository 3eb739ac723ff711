"""Dataset tools, as library functions: convert_imageset, compute_image_mean, convert_mnist,
convert_cifar, extract_features. Each has the behaviour, keys and Datum layout of Caffe's tool of
the same name.

For the CLI, each tool also has a ``(add_arguments, run)`` pair in :data:`TOOLS`, e.g.
``CONVERT_IMAGESET = (add_convert_imageset_arguments, run_convert_imageset)``; flags keep
Caffe's names and accept both ``-flag`` and ``--flag`` spellings.
"""

import contextlib
import gzip
import os
import struct
import tempfile

import numpy as np

from ..errors import ProtonetError
from ..io.blobproto import write_blobproto
from ..log import get_logger
from ..proto import caffe_pb2
from ..rng import get_rng
from .datum import datum_to_array, image_to_datum, parse_datum, read_image
from .db import LEVELDB_HELP, LMDBWriter, iterate_lmdb

log = get_logger(__name__)


# ---- convert_imageset -------------------------------------------------------------------------
def _read_list(list_file):
    try:
        with open(list_file, encoding="utf-8") as f:
            lines = [line.rstrip("\r\n") for line in f if line.strip()]
    except OSError as err:
        raise ProtonetError(f"could not open the list file ({err.strerror})",
                            file=list_file) from None
    entries = []
    for number, line in enumerate(lines, start=1):
        path, _, label = line.rstrip().rpartition(" ")
        try:
            entries.append((path, int(label)))
        except ValueError:
            raise ProtonetError(f"expected 'path label' with an integer label, got {line!r}",
                                file=list_file, line=number) from None
    return entries


def _matches_extension(path, encoding):
    ext = path.rsplit(".", 1)[-1].lower()
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def _image_datum(path, label, size, is_color, encoding):
    """Caffe's ReadImageToDatum: raw pixels, the file's own bytes, or re-encoded bytes."""
    from .datum import encode_image

    image = read_image(path, *size, is_color)
    if not encoding:
        return image_to_datum(image, label)
    datum = caffe_pb2.Datum()
    if (image.shape[2] == 3) == is_color and not any(size) and _matches_extension(path, encoding):
        with open(path, "rb") as f:
            datum.data = f.read()
    else:
        datum.data = encode_image(image, encoding, where=path)
    datum.label = int(label)
    datum.encoded = True
    return datum


def convert_imageset(root_folder, list_file, db_path, *, resize_height=0, resize_width=0,
                     gray=False, shuffle=False, encoded=False, encode_type="", check_size=False,
                     overwrite=False):
    """Images listed as "path label" → a new LMDB of Datums; returns the number written.

    Keys are ``%08d_<path>`` with the line's index (after shuffling), as Caffe writes them.
    Images are stored in BGR order (grey with ``gray``), resized when both sizes are > 0, and
    stored encoded (``encoded``/``encode_type``; the file's own bytes when nothing changes).
    An image that cannot be read is skipped with a warning, as Caffe does.
    """
    entries = _read_list(list_file)
    if shuffle:
        log.info("Shuffling data")
        order = get_rng().permutation(len(entries))
        entries = [entries[i] for i in order]
    log.info("A total of %d images.", len(entries))
    if encode_type and not encoded:
        log.info("encode_type specified, assuming encoded=true.")
    size = (max(0, int(resize_height)), max(0, int(resize_width)))
    data_size = None
    with LMDBWriter(db_path, overwrite=overwrite) as db:
        for line_id, (path, label) in enumerate(entries):
            encoding = encode_type.lower()
            if (encoded or encode_type) and not encoding:
                encoding = path.rsplit(".", 1)[-1].lower() if "." in path else ""
                if not encoding:
                    log.warning("Failed to guess the encoding of '%s'", path)
            try:
                datum = _image_datum(root_folder + path, label, size, not gray, encoding)
            except ProtonetError as err:
                log.warning("skipping %s: %s", path, err)
                continue
            if check_size:
                if data_size is None:
                    data_size = len(datum.data)
                elif len(datum.data) != data_size:
                    raise ProtonetError(f"incorrect data field size {len(datum.data)} (expected "
                                        f"{data_size}); resize the images or drop --check_size",
                                        file=root_folder + path)
            db.put(f"{line_id:08d}_{path}", datum.SerializeToString())
            if db.count % 1000 == 0:
                log.info("Processed %d files.", db.count)
        count = db.count
    if count % 1000:
        log.info("Processed %d files.", count)
    return count


def add_convert_imageset_arguments(parser):
    parser.add_argument("root_folder", help="prefix for the paths in the list file (ROOTFOLDER/)")
    parser.add_argument("list_file", help="text file of 'path label' lines")
    parser.add_argument("db_path", help="LMDB directory to create")
    parser.add_argument("-gray", "--gray", action="store_true", help="store grey images")
    parser.add_argument("-shuffle", "--shuffle", action="store_true",
                        help="shuffle the order of the images")
    parser.add_argument("-resize_height", "--resize_height", type=int, default=0)
    parser.add_argument("-resize_width", "--resize_width", type=int, default=0)
    parser.add_argument("-check_size", "--check_size", action="store_true",
                        help="check that all images have the same size")
    parser.add_argument("-encoded", "--encoded", action="store_true",
                        help="store the encoded image in the Datum")
    parser.add_argument("-encode_type", "--encode_type", default="",
                        help="encode as this type ('png', 'jpg', ...)")
    parser.add_argument("-backend", "--backend", default="lmdb", choices=["lmdb"])
    parser.add_argument("--overwrite", action="store_true", help="replace an existing database")


def run_convert_imageset(args):
    convert_imageset(args.root_folder, args.list_file, args.db_path,
                     resize_height=args.resize_height, resize_width=args.resize_width,
                     gray=args.gray, shuffle=args.shuffle, encoded=args.encoded,
                     encode_type=args.encode_type, check_size=args.check_size,
                     overwrite=args.overwrite)
    return 0


# ---- compute_image_mean -------------------------------------------------------------------------
def compute_image_mean(db_path, output_file=None):
    """The mean image of an LMDB as a (1, C, H, W) float32 array; written as a legacy 4-D
    binaryproto when ``output_file`` is given. Sums and divides in float32 as Caffe does."""
    total = None
    count = 0
    for key, value in iterate_lmdb(db_path):
        where = f"record '{key}'"
        try:
            image = datum_to_array(parse_datum(value, where), where=where)
        except ProtonetError as err:
            raise err.with_context(file=db_path)
        if total is None:
            total = np.zeros(image.shape, dtype=np.float32)
        elif image.shape != total.shape:
            raise ProtonetError(f"{where}: image is {image.shape}, but the first one is "
                                f"{total.shape}; every image must have the same size",
                                file=db_path)
        total += image.astype(np.float32)
        count += 1
        if count % 10000 == 0:
            log.info("Processed %d files.", count)
    if total is None:
        raise ProtonetError("the database is empty", file=db_path)
    if count % 10000:
        log.info("Processed %d files.", count)
    mean = (total / np.float32(count)).astype(np.float32)[np.newaxis]
    if output_file:
        log.info("Write to %s", output_file)
        write_blobproto(output_file, mean, legacy=True)
    log.info("Number of channels: %d", mean.shape[1])
    for c, value in enumerate(mean[0].reshape(mean.shape[1], -1).sum(axis=1, dtype=np.float32)):
        log.info("mean_value channel [%d]: %g", c, value / (mean.shape[2] * mean.shape[3]))
    return mean


def add_compute_image_mean_arguments(parser):
    parser.add_argument("db_path", help="LMDB directory of Datums")
    parser.add_argument("output_file", nargs="?", help="mean .binaryproto to write")
    parser.add_argument("-backend", "--backend", default="lmdb", choices=["lmdb"])


def run_compute_image_mean(args):
    compute_image_mean(args.db_path, args.output_file)
    return 0


# ---- MNIST idx files ---------------------------------------------------------------------------
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def _open_maybe_gzip(path):
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx(path, magic):
    """Read an MNIST idx file (plain or gzipped): images (n, rows, cols) or labels (n,) uint8."""
    try:
        with _open_maybe_gzip(path) as f:
            payload = f.read()
    except OSError as err:
        raise ProtonetError(f"unable to open the file ({err.strerror})", file=path) from None
    dims = 3 if magic == IDX_IMAGES_MAGIC else 1
    header = 4 * (1 + dims)
    if len(payload) < header or struct.unpack(">I", payload[:4])[0] != magic:
        kind = "image" if magic == IDX_IMAGES_MAGIC else "label"
        raise ProtonetError(f"incorrect {kind} file magic; expected an idx file with magic "
                            f"{magic}", file=path)
    shape = struct.unpack(f">{dims}I", payload[4:header])
    count = int(np.prod(shape))
    if len(payload) - header < count:
        raise ProtonetError(f"truncated idx file: {shape} needs {count} bytes after the header, "
                            f"found {len(payload) - header}", file=path)
    return np.frombuffer(payload, dtype=np.uint8, count=count, offset=header).reshape(shape)


def write_idx(path, array):
    """Write uint8 images (n, rows, cols) or labels (n,) as an idx file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    from ..io.files import atomic_write_bytes

    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    atomic_write_bytes(path, header + array.tobytes())


def _signed_char(value):
    """A byte read as C's (signed) char, as Caffe's converters read labels."""
    value = int(value)
    return value - 256 if value > 127 else value


def convert_mnist(image_file, label_file, db_path, overwrite=False):
    """MNIST idx files → LMDB of raw 1×rows×cols uint8 Datums under keys ``%08d``, exactly as
    Caffe's convert_mnist_data writes them. Returns the number of records."""
    images = read_idx(image_file, IDX_IMAGES_MAGIC)
    labels = read_idx(label_file, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ProtonetError(f"{len(images)} images but {len(labels)} labels in {label_file}",
                            file=image_file)
    rows, cols = images.shape[1:]
    log.info("A total of %d items.", len(images))
    log.info("Rows: %d Cols: %d", rows, cols)
    datum = caffe_pb2.Datum(channels=1, height=rows, width=cols)
    with LMDBWriter(db_path, overwrite=overwrite) as db:
        for item_id, (image, label) in enumerate(zip(images, labels)):
            datum.data = image.tobytes()
            # Caffe quirk: the label is read as a (signed) char.
            datum.label = _signed_char(label)
            db.put(f"{item_id:08d}", datum.SerializeToString())
    log.info("Processed %d files.", len(images))
    return len(images)


def add_convert_mnist_arguments(parser):
    parser.add_argument("image_file", help="idx3 image file (may be gzipped)")
    parser.add_argument("label_file", help="idx1 label file (may be gzipped)")
    parser.add_argument("db_path", help="LMDB directory to create")
    parser.add_argument("-backend", "--backend", default="lmdb", choices=["lmdb"])
    parser.add_argument("--overwrite", action="store_true", help="replace an existing database")


def run_convert_mnist(args):
    convert_mnist(args.image_file, args.label_file, args.db_path, overwrite=args.overwrite)
    return 0


# ---- CIFAR-10 ------------------------------------------------------------------------------------
CIFAR_SIZE = 32
CIFAR_IMAGE_BYTES = 3 * CIFAR_SIZE * CIFAR_SIZE
CIFAR_BATCH_SIZE = 10000
CIFAR_TRAIN_BATCHES = 5


def _read_cifar_batch(path):
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except OSError as err:
        raise ProtonetError(f"unable to open the CIFAR-10 batch ({err.strerror}); download and "
                            f"unpack the binary version (cifar-10-binary.tar.gz)",
                            file=path) from None
    record = CIFAR_IMAGE_BYTES + 1
    if len(payload) == 0 or len(payload) % record:
        raise ProtonetError(f"size {len(payload)} is not a multiple of the {record}-byte CIFAR-10 "
                            f"record", file=path)
    return np.frombuffer(payload, dtype=np.uint8).reshape(-1, record)


def _write_cifar(paths, db_path, overwrite):
    datum = caffe_pb2.Datum(channels=3, height=CIFAR_SIZE, width=CIFAR_SIZE)
    with LMDBWriter(db_path, overwrite=overwrite) as db:
        for path in paths:
            for row in _read_cifar_batch(path):
                datum.label = _signed_char(row[0])
                datum.data = row[1:].tobytes()
                # Caffe quirk: keys are %05d of the running index (convert_cifar_data.cpp).
                db.put(f"{db.count:05d}", datum.SerializeToString())
        return db.count


def convert_cifar(input_folder, output_folder, overwrite=False):
    """CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin) → cifar10_train_lmdb and
    cifar10_test_lmdb in ``output_folder``; returns (train count, test count)."""
    train = [os.path.join(input_folder, f"data_batch_{i + 1}.bin")
             for i in range(CIFAR_TRAIN_BATCHES)]
    log.info("Writing Training data")
    n_train = _write_cifar(train, os.path.join(output_folder, "cifar10_train_lmdb"), overwrite)
    log.info("Writing Testing data")
    n_test = _write_cifar([os.path.join(input_folder, "test_batch.bin")],
                          os.path.join(output_folder, "cifar10_test_lmdb"), overwrite)
    return n_train, n_test


def add_convert_cifar_arguments(parser):
    parser.add_argument("input_folder", help="folder with data_batch_*.bin and test_batch.bin")
    parser.add_argument("output_folder", help="where cifar10_{train,test}_lmdb are created")
    parser.add_argument("db_type", nargs="?", default="lmdb", choices=["lmdb"])
    parser.add_argument("--overwrite", action="store_true", help="replace existing databases")


def run_convert_cifar(args):
    convert_cifar(args.input_folder, args.output_folder, overwrite=args.overwrite)
    return 0


# ---- extract_features ---------------------------------------------------------------------------
class _LMDBFeatures:
    """One feature blob → Datum records with float_data under keys ``%010d`` (Caffe's layout)."""

    def __init__(self, path, overwrite):
        self._db = LMDBWriter(path, overwrite=overwrite)
        self._datum = caffe_pb2.Datum()

    def __enter__(self):
        self._db.__enter__()
        return self

    def __exit__(self, *exc):
        return self._db.__exit__(*exc)

    def add_batch(self, blob):
        # Caffe quirk: channels/height/width are the blob's legacy 4-D dims (extract_features.cpp).
        datum = self._datum
        datum.channels, datum.height, datum.width = blob.channels, blob.height, blob.width
        for row in _rows(blob):
            datum.ClearField("float_data")
            datum.float_data.extend(row.tolist())
            self._db.put(f"{self._db.count:010d}", datum.SerializeToString())


class _HDF5Features:
    """One feature blob → an HDF5 file holding one float32 dataset named like the blob, with
    shape (images,) + blob shape[1:] (readable by an HDF5Data layer whose top has that name).
    Written to a temporary sibling and renamed into place only when complete."""

    def __init__(self, path, blob_name, overwrite):
        self.path = os.path.abspath(os.fspath(path))
        self.blob_name = blob_name
        self.overwrite = overwrite
        self._file = self._dataset = self._tmp = None

    def __enter__(self):
        import h5py

        if os.path.exists(self.path) and not self.overwrite:
            raise ProtonetError("already exists; remove it or pass --overwrite", file=self.path)
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".",
                                             suffix=".tmp", dir=os.path.dirname(self.path))
            os.close(fd)
        except OSError as err:
            raise ProtonetError(f"cannot create the file: {err.strerror}", file=self.path) from None
        self._file = h5py.File(self._tmp, "w")
        return self

    def add_batch(self, blob):
        rows = _rows(blob).reshape((-1,) + tuple(blob.shape[1:]))
        if self._dataset is None:
            shape = rows.shape[1:]
            self._dataset = self._file.create_dataset(self.blob_name, shape=(0,) + shape,
                                                      maxshape=(None,) + shape, dtype=np.float32,
                                                      chunks=(len(rows),) + shape)
        elif rows.shape[1:] != self._dataset.shape[1:]:
            raise ProtonetError(f"blob '{self.blob_name}' changed shape between batches, from "
                                f"{self._dataset.shape[1:]} to {rows.shape[1:]}", file=self.path)
        size = self._dataset.shape[0]
        self._dataset.resize(size + len(rows), axis=0)
        self._dataset[size:] = rows

    def __exit__(self, exc_type, exc, tb):
        self._file.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            os.unlink(self._tmp)
        return False


FEATURE_WRITERS = {
    "lmdb": lambda path, blob_name, overwrite: _LMDBFeatures(path, overwrite),
    "hdf5": _HDF5Features,
}


def _rows(blob):
    """A blob's data as (images, features): one row per item of the first axis."""
    return blob.data.reshape(blob.shape[0] if blob.shape else 1, -1)


def _names(value):
    return value.split(",") if isinstance(value, str) else list(value)


def extract_features(weights, model, blob_names, dataset_names, num_mini_batches,
                     db_type="lmdb", overwrite=False):
    """Run ``model`` (TEST phase, weights from ``weights``) for ``num_mini_batches`` forwards and
    store each image's values of every blob in ``blob_names`` in the matching database of
    ``dataset_names`` (comma-separated strings or lists), as Caffe's extract_features does.

    ``db_type`` "lmdb": Datum records with ``float_data`` and the blob's legacy
    channels/height/width, under keys ``%010d`` (the image's index); "hdf5": one dataset named
    like the blob. Returns {blob name: number of images written}.
    """
    from ..net import Net

    blob_names, dataset_names = _names(blob_names), _names(dataset_names)
    if len(blob_names) != len(dataset_names):
        raise ProtonetError(f"the number of blob names and dataset names must be equal "
                            f"({len(blob_names)} blobs, {len(dataset_names)} datasets)")
    db_type = db_type.lower()
    if db_type == "leveldb":
        raise ProtonetError(f"extract_features writes lmdb or hdf5. {LEVELDB_HELP}")
    if db_type not in FEATURE_WRITERS:
        raise ProtonetError(f"unknown database type '{db_type}'; use lmdb or hdf5")
    num_mini_batches = int(num_mini_batches)
    if num_mini_batches < 0:
        raise ProtonetError(f"num_mini_batches must be >= 0, got {num_mini_batches}")
    with Net(model, phase="TEST") as net, contextlib.ExitStack() as stack:
        net.copy_from(weights)
        for name in blob_names:
            if name not in net.blobs:
                raise ProtonetError(f"Unknown feature blob name {name} in the network {model}")
        writers = []
        for name, path in zip(blob_names, dataset_names):
            log.info("Opening dataset %s", path)
            writers.append(stack.enter_context(FEATURE_WRITERS[db_type](path, name, overwrite)))
        counts = _extract(net, blob_names, writers, num_mini_batches)
    log.info("Successfully extracted the features!")
    return counts


def _extract(net, blob_names, writers, num_mini_batches):
    # Caffe logs these progress lines at ERROR level so that they show by default; protonet
    # logs them at INFO, with the same text.
    log.info("Extracting Features")
    counts = dict.fromkeys(blob_names, 0)
    for _ in range(num_mini_batches):
        net.forward_from_to()
        for name, writer in zip(blob_names, writers):
            blob = net.blobs[name]
            writer.add_batch(blob)
            before, counts[name] = counts[name], counts[name] + len(_rows(blob))
            for thousands in range(before // 1000 + 1, counts[name] // 1000 + 1):
                log.info("Extracted features of %d query images for feature blob %s",
                         thousands * 1000, name)
    for name in blob_names:
        log.info("Extracted features of %d query images for feature blob %s", counts[name],
                 name)
    return counts


def add_extract_features_arguments(parser):
    parser.add_argument("weights", help="pretrained .caffemodel (or .caffemodel.h5)")
    parser.add_argument("model", help="net prototxt with a data layer (run in TEST phase)")
    parser.add_argument("blobs", help="feature blob names, comma-separated (e.g. fc7,fc8)")
    parser.add_argument("datasets", help="databases to create, one per blob, comma-separated")
    parser.add_argument("num_mini_batches", type=int, help="number of forward passes")
    parser.add_argument("db_type", nargs="?", default="lmdb", choices=["lmdb", "hdf5", "leveldb"])
    parser.add_argument("mode", nargs="?", default="CPU", choices=["CPU", "GPU"],
                        help="accepted for Caffe compatibility; protonet runs on the CPU")
    parser.add_argument("device_id", nargs="?", type=int, default=0,
                        help="accepted for Caffe compatibility")
    parser.add_argument("--overwrite", action="store_true", help="replace existing databases")


def run_extract_features(args):
    if args.mode == "GPU":
        log.warning("GPU requested; protonet runs on the CPU")
    extract_features(args.weights, args.model, args.blobs, args.datasets,
                     args.num_mini_batches, db_type=args.db_type, overwrite=args.overwrite)
    return 0


CONVERT_IMAGESET = (add_convert_imageset_arguments, run_convert_imageset)
COMPUTE_IMAGE_MEAN = (add_compute_image_mean_arguments, run_compute_image_mean)
CONVERT_MNIST = (add_convert_mnist_arguments, run_convert_mnist)
CONVERT_CIFAR = (add_convert_cifar_arguments, run_convert_cifar)
EXTRACT_FEATURES = (add_extract_features_arguments, run_extract_features)

# Command name → (add_arguments(parser), run(args) → exit code), for the CLI's table.
TOOLS = {
    "convert_imageset": CONVERT_IMAGESET,
    "compute_image_mean": COMPUTE_IMAGE_MEAN,
    "convert_mnist": CONVERT_MNIST,
    "convert_cifar": CONVERT_CIFAR,
    "extract_features": EXTRACT_FEATURES,
}
