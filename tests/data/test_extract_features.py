"""extract_features (Caffe's tool) on LeNet with random weights: Datum records with float_data
under keys %010d in an LMDB, or one dataset per blob in HDF5; the CLI wiring and user errors."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from protonet import Net, cli
from protonet.data.datum import array_to_datum, parse_datum
from protonet.data.db import LMDBWriter, iterate_lmdb
from protonet.data.tools import extract_features
from protonet.errors import ProtonetError
from protonet.rng import set_random_seed

REPO = Path(__file__).resolve().parents[2]
N_IMAGES, BATCH, BATCHES = 10, 4, 3


@pytest.fixture
def lenet(tmp_path, monkeypatch):
    """LeNet reading a 10-image LMDB in batches of 4, and random weights; returns paths."""
    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(4).integers(0, 256, size=(N_IMAGES, 1, 28, 28),
                                               dtype=np.uint8)
    with LMDBWriter(tmp_path / "digits_lmdb") as db:
        for i, image in enumerate(images):
            db.put(f"{i:08d}", array_to_datum(image, i % 10).SerializeToString())
    text = (REPO / "models" / "lenet" / "lenet_train_test.prototxt").read_text()
    text = text.replace("data/mnist/mnist_test_lmdb", "digits_lmdb").replace(
        "batch_size: 100", f"batch_size: {BATCH}")
    (tmp_path / "lenet.prototxt").write_text(text)
    set_random_seed(9)
    with Net("lenet.prototxt", phase="TEST") as net:
        net.save("lenet.caffemodel")
    return "lenet.caffemodel", "lenet.prototxt"


def reference(weights, model, blob):
    """Each image's values of ``blob`` over BATCHES forwards, from a plain TEST net."""
    with Net(model, weights, "TEST") as net:
        rows = []
        for _ in range(BATCHES):
            net.forward()
            rows.append(net.blobs[blob].data.reshape(BATCH, -1).copy())
    return np.concatenate(rows)


def test_lmdb_holds_one_float_datum_per_image_under_caffes_keys(lenet):
    weights, model = lenet
    counts = extract_features(weights, model, "ip1,pool2", "ip1_lmdb,pool2_lmdb", BATCHES)
    assert counts == {"ip1": BATCHES * BATCH, "pool2": BATCHES * BATCH}
    for blob, shape in (("ip1", (500, 1, 1)), ("pool2", (50, 4, 4))):
        records = list(iterate_lmdb(f"{blob}_lmdb"))
        assert [key for key, _ in records] == [f"{i:010d}" for i in range(BATCHES * BATCH)]
        datums = [parse_datum(value) for _, value in records]
        assert all((d.channels, d.height, d.width) == shape for d in datums)
        assert all(not d.data and d.label == 0 for d in datums)
        features = np.array([d.float_data for d in datums], dtype=np.float32)
        np.testing.assert_array_equal(features, reference(weights, model, blob))


def test_hdf5_holds_one_dataset_named_like_the_blob(lenet):
    weights, model = lenet
    extract_features(weights, model, ["ip2"], ["ip2.h5"], BATCHES, db_type="hdf5")
    with h5py.File("ip2.h5", "r") as f:
        assert list(f) == ["ip2"]
        assert f["ip2"].shape == (BATCHES * BATCH, 10) and f["ip2"].dtype == np.float32
        np.testing.assert_array_equal(f["ip2"][...], reference(weights, model, "ip2"))


def test_cli_extract_features_and_its_user_errors(lenet, capsys):
    weights, model = lenet
    assert cli.main(["extract_features", weights, model, "ip2", "out_lmdb", "2", "lmdb"]) == 0
    assert len(list(iterate_lmdb("out_lmdb"))) == 2 * BATCH
    err = capsys.readouterr().err
    assert "Extracted features of 8 query images for feature blob ip2" in err
    assert "Successfully extracted the features!" in err
    assert cli.main(["extract_features", weights, model, "ip2", "out_lmdb", "1"]) == 1
    assert "already exists; remove it or pass --overwrite" in capsys.readouterr().err
    assert cli.main(["extract_features", weights, model, "ip2", "out_lmdb", "1", "--overwrite"]) \
        == 0
    assert len(list(iterate_lmdb("out_lmdb"))) == BATCH
    for args, message in ((["fc7", "a_lmdb", "1"], "Unknown feature blob name fc7 in the network"),
                          (["ip1,ip2", "a_lmdb", "1"], "number of blob names and dataset names"),
                          (["ip2", "a_db", "1", "leveldb"], "LevelDB is not supported")):
        assert cli.main(["extract_features", weights, model] + args) == 1
        assert message in capsys.readouterr().err
    assert not Path("a_lmdb").exists()


def test_a_failed_extraction_leaves_no_database(lenet, monkeypatch):
    weights, model = lenet
    calls = []

    def failing_forward(self, start=0, end=None):
        calls.append(1)
        if len(calls) == 2:
            raise ProtonetError("disk on fire")
        return original(self, start, end)

    original = Net.forward_from_to
    monkeypatch.setattr(Net, "forward_from_to", failing_forward)
    for db_type, path in (("lmdb", "f_lmdb"), ("hdf5", "f.h5")):
        calls.clear()
        with pytest.raises(ProtonetError, match="disk on fire"):
            extract_features(weights, model, "ip2", path, BATCHES, db_type=db_type)
        assert not Path(path).exists()
    assert sorted(p.name for p in Path(".").iterdir()) == ["digits_lmdb", "lenet.caffemodel",
                                                           "lenet.prototxt"]
