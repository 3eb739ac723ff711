"""Dataset tools: convert_imageset, compute_image_mean, convert_mnist, convert_cifar, and the
MNIST set-up."""

import argparse
import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protonet.data.datum import parse_datum
from protonet.data.db import LMDBWriter, iterate_lmdb
from protonet.data.mnist import split_mnist_5k, prepare_mnist
from protonet.data.tools import (TOOLS, compute_image_mean, convert_cifar, convert_imageset,
                                 convert_mnist, read_idx, write_idx)
from protonet.errors import ProtonetError
from protonet.io.blobproto import read_blobproto
from protonet.rng import set_random_seed
from tests.helpers.layers import setup_layer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rng():
    return np.random.default_rng(3)


@pytest.fixture
def image_set(tmp_path, rng):
    """Four 5×7 RGB PNGs and a list file; returns (root/, list path, rgb pixels)."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rgb = rng.integers(0, 256, size=(4, 5, 7, 3), dtype=np.uint8)
    lines = []
    for i, pixels in enumerate(rgb):
        name = f"sub/img{i}.png"
        Image.fromarray(pixels, "RGB").save(root / name)
        lines.append(f"{name} {i + 1}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return f"{root}/", str(tmp_path / "list.txt"), rgb


def read_all(db, batch):
    layer, _, tops = setup_layer(f'type: "Data" data_param {{ source: "{db}" batch_size: {batch} '
                                 f'backend: LMDB prefetch: 0 }}', [], 2)
    layer.layer_forward([], tops)
    layer.close()
    return tops[0].data.copy(), tops[1].data.copy()


@pytest.mark.parametrize("encoded", [False, True])
def test_convert_imageset_round_trips_pixels_through_the_data_layer(image_set, tmp_path, encoded):
    root, list_file, rgb = image_set
    db = tmp_path / "db"
    assert convert_imageset(root, list_file, db, encoded=encoded) == 4
    keys = [key for key, _ in iterate_lmdb(str(db))]
    assert keys == [f"{i:08d}_sub/img{i}.png" for i in range(4)]
    data, labels = read_all(db, 4)
    np.testing.assert_array_equal(data, rgb[..., ::-1].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, [1, 2, 3, 4])
    if encoded:
        _, value = next(iter(iterate_lmdb(str(db))))
        datum = parse_datum(value)
        assert datum.encoded and datum.data == Path(root, "sub/img0.png").read_bytes()


def test_convert_imageset_gray_resize_and_encode_type(image_set, tmp_path):
    root, list_file, _ = image_set
    convert_imageset(root, list_file, tmp_path / "g", gray=True, resize_height=3,
                     resize_width=4, encode_type="png")
    datum = parse_datum(next(iter(iterate_lmdb(str(tmp_path / "g"))))[1])
    assert datum.encoded
    data, _ = read_all(tmp_path / "g", 4)
    assert data.shape == (4, 1, 3, 4)


def test_convert_imageset_shuffle_keeps_pairs_and_numbers_keys_in_new_order(image_set, tmp_path):
    root, list_file, rgb = image_set
    set_random_seed(4)
    convert_imageset(root, list_file, tmp_path / "s", shuffle=True)
    records = list(iterate_lmdb(str(tmp_path / "s")))
    for position, (key, value) in enumerate(records):
        index = int(key.split("img")[1].split(".")[0])
        assert key.startswith(f"{position:08d}_")
        assert parse_datum(value).label == index + 1


def test_convert_imageset_check_size_rejects_mixed_sizes(image_set, tmp_path):
    root, list_file, _ = image_set
    Image.new("RGB", (3, 3)).save(Path(root, "sub/img3.png"))
    with pytest.raises(ProtonetError, match="incorrect data field size"):
        convert_imageset(root, list_file, tmp_path / "c", check_size=True)
    assert not (tmp_path / "c").exists()


def test_a_failed_conversion_leaves_the_existing_database_untouched(image_set, tmp_path):
    root, list_file, _ = image_set
    db = tmp_path / "db"
    convert_imageset(root, list_file, db)
    before = list(iterate_lmdb(str(db)))
    with pytest.raises(ProtonetError, match="already exists"):
        convert_imageset(root, list_file, db)
    Path(list_file).write_text("sub/img0.png not-a-label\n")
    with pytest.raises(ProtonetError, match="integer label"):
        convert_imageset(root, list_file, db, overwrite=True)
    assert list(iterate_lmdb(str(db))) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "images", "list.txt"]


def test_writer_removes_its_temporary_directory_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with LMDBWriter(tmp_path / "x") as db:
            db.put("a", b"1")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_compute_image_mean_of_color_images(image_set, tmp_path):
    root, list_file, rgb = image_set
    convert_imageset(root, list_file, tmp_path / "db")
    mean = compute_image_mean(str(tmp_path / "db"), str(tmp_path / "mean.binaryproto"))
    expected = rgb[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32).sum(0) / np.float32(4)
    np.testing.assert_array_equal(mean, expected[np.newaxis])
    np.testing.assert_array_equal(read_blobproto(tmp_path / "mean.binaryproto"), mean)


def test_convert_mnist_reads_gzipped_idx_and_rejects_bad_magic(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], np.uint8)
    write_idx(tmp_path / "img", images)
    write_idx(tmp_path / "lab", labels)
    (tmp_path / "img.gz").write_bytes(gzip.compress((tmp_path / "img").read_bytes()))
    convert_mnist(tmp_path / "img.gz", tmp_path / "lab", tmp_path / "db")
    data, got = read_all(tmp_path / "db", 5)
    np.testing.assert_array_equal(data[:, 0], images)
    np.testing.assert_array_equal(got, labels)
    with pytest.raises(ProtonetError, match="incorrect image file magic"):
        convert_mnist(tmp_path / "lab", tmp_path / "lab", tmp_path / "db2")


def test_convert_cifar_writes_train_and_test_databases(tmp_path, rng):
    def batch(n, seed):
        labels = np.arange(n, dtype=np.uint8) % 10
        pixels = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
        return np.concatenate([labels[:, None], pixels], axis=1), pixels, labels

    for i in range(5):
        records, _, _ = batch(2, i)
        (tmp_path / f"data_batch_{i + 1}.bin").write_bytes(records.tobytes())
    records, pixels, labels = batch(3, 99)
    (tmp_path / "test_batch.bin").write_bytes(records.tobytes())
    assert convert_cifar(str(tmp_path), str(tmp_path / "out")) == (10, 3)
    test_db = tmp_path / "out" / "cifar10_test_lmdb"
    assert [k for k, _ in iterate_lmdb(str(test_db))] == ["00000", "00001", "00002"]
    data, got = read_all(test_db, 3)
    np.testing.assert_array_equal(data, pixels.reshape(3, 3, 32, 32))
    np.testing.assert_array_equal(got, labels)


def test_tool_table_parses_caffe_style_flags(image_set, tmp_path):
    root, list_file, _ = image_set
    add_arguments, run = TOOLS["convert_imageset"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([root, list_file, str(tmp_path / "db"), "-gray", "--shuffle"])
    assert run(args) == 0
    assert parse_datum(next(iter(iterate_lmdb(str(tmp_path / "db"))))[1]).channels == 1


# ---- MNIST set-up ------------------------------------------------------------------------------
def test_split_is_stratified_and_shuffled():
    labels = np.repeat(np.arange(10, dtype=np.uint8), 50)
    images = np.arange(500)[:, None, None].repeat(2, 1).repeat(2, 2)
    (train_x, train_y), (test_x, test_y) = split_mnist_5k(images, labels, test_per_class=10)
    assert np.bincount(test_y).tolist() == [10] * 10
    assert np.bincount(train_y).tolist() == [40] * 10
    assert not set(train_x[:, 0, 0]) & set(test_x[:, 0, 0])
    assert not np.all(np.diff(train_y.astype(int)) >= 0)


def test_prepare_mnist_from_a_directory_of_idx_files(tmp_path, rng):
    source = tmp_path / "mnist"
    source.mkdir()
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(source / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (source / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + labels.tobytes()))
    train_db, test_db = prepare_mnist(str(source), str(tmp_path / "out"))
    assert len(list(iterate_lmdb(train_db))) == 6 and len(list(iterate_lmdb(test_db))) == 4
    with pytest.raises(ProtonetError, match="no train-images-idx3-ubyte"):
        prepare_mnist(str(tmp_path / "out"), str(tmp_path / "out2"))


BUNDLED = REPO / "data" / "mnist"


@pytest.mark.skipif(not (BUNDLED / "mnist_test_lmdb").is_dir(),
                    reason="bundled MNIST not prepared; run `make data`")
def test_bundled_mnist_batches_are_the_held_back_digits(monkeypatch):
    monkeypatch.chdir(REPO)
    images = read_idx(BUNDLED / "t10k-images-idx3-ubyte", 2051)
    labels = read_idx(BUNDLED / "t10k-labels-idx1-ubyte", 2049)
    assert len(images) == 1000 and np.bincount(labels).tolist() == [100] * 10
    layer, _, tops = setup_layer('type: "Data" transform_param { scale: 0.00390625 } '
                                 'data_param { source: "data/mnist/mnist_test_lmdb" '
                                 'batch_size: 100 backend: LMDB }', [], 2)
    layer.layer_forward([], tops)
    layer.close()
    np.testing.assert_array_equal(tops[0].data[:, 0],
                                  images[:100].astype(np.float32) * np.float32(0.00390625))
    np.testing.assert_array_equal(tops[1].data, labels[:100])
    assert 0 < tops[0].data.mean() < 0.5


@pytest.mark.parametrize("model", ["lenet", "cifar10_quick"])
def test_model_files_parse_and_point_at_repo_relative_data(model):
    from google.protobuf import text_format

    from protonet.proto import caffe_pb2

    folder = REPO / "models" / model
    solver = text_format.Parse((folder / f"{model}_solver.prototxt").read_text(),
                               caffe_pb2.SolverParameter())
    assert (REPO / solver.net).is_file()
    net = text_format.Parse((REPO / solver.net).read_text(), caffe_pb2.NetParameter())
    sources = [layer.data_param.source for layer in net.layer if layer.type == "Data"]
    assert len(sources) == 2 and all(s.startswith("data/") for s in sources)
    deploy = text_format.Parse((folder / f"{model}.prototxt").read_text(),
                               caffe_pb2.NetParameter())
    assert deploy.layer[0].type == "Input"
    assert [layer.name for layer in deploy.layer[1:-1]] == \
        [layer.name for layer in net.layer[2:] if layer.type not in ("Accuracy",
                                                                      "SoftmaxWithLoss")]
    if model == "lenet":
        test_batch = [layer.data_param.batch_size for layer in net.layer
                      if layer.type == "Data" and layer.include[0].phase == caffe_pb2.TEST][0]
        assert solver.test_iter[0] * test_batch == 1000


def test_two_readers_of_one_lmdb_share_the_environment(tmp_path):
    from protonet.data.db import LMDBCursor, LMDBWriter, iterate_lmdb

    path = tmp_path / "db"
    with LMDBWriter(path) as writer:
        writer.put("00000000", b"a")
        writer.put("00000001", b"b")
    first, second = LMDBCursor(str(path)), LMDBCursor(str(path))
    assert first.key() == second.key() == "00000000"
    assert [k for k, _ in iterate_lmdb(str(path))] == ["00000000", "00000001"]
    first.close()
    assert second.next() is False and second.key() == "00000001"
    second.close()
