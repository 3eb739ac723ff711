"""The Data layer, convert_mnist and compute_image_mean against BVLC Caffe's own outputs
(../shared/conformance/data, README "data/")."""

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from protonet.blob import Blob
from protonet.data.db import iterate_lmdb
from protonet.data.tools import compute_image_mean, convert_mnist
from protonet.io.blobproto import read_blobproto
from protonet.layers import get_layer_class
from protonet.proto import caffe_pb2
from tests.helpers.tolerances import DATA_ATOL

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "data"
CASES = sorted(p.stem for p in DATA_DIR.glob("*.prototxt")) if DATA_DIR.is_dir() else []
FORWARD_PASSES = 3

pytestmark = pytest.mark.skipif(not CASES, reason="../shared/conformance/data is not beside the "
                                                  "checkout")


def _run_case(case):
    net = text_format.Parse((DATA_DIR / f"{case}.prototxt").read_text(), caffe_pb2.NetParameter())
    param = net.layer[0]
    layer = get_layer_class(param.type)(param, caffe_pb2.TEST)
    tops = [Blob(), Blob()]
    layer.layer_setup([], tops)
    data, labels = [], []
    for _ in range(FORWARD_PASSES):
        layer.layer_forward([], tops)
        data.append(tops[0].data.copy())
        labels.append(tops[1].data.copy())
    layer.close()
    return np.concatenate(data), np.concatenate(labels)


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_data_layer_batches_match_caffe(case, monkeypatch):
    monkeypatch.chdir(DATA_DIR)
    expected = np.load(DATA_DIR / "expected.npz")
    data, labels = _run_case(case)
    np.testing.assert_allclose(data, expected[f"{case}/data"], rtol=0, atol=DATA_ATOL,
                               err_msg=case)
    np.testing.assert_array_equal(labels, expected[f"{case}/label"], err_msg=case)


def test_convert_mnist_writes_caffes_datums_under_caffes_keys(tmp_path):
    db = tmp_path / "mnist_lmdb"
    count = convert_mnist(DATA_DIR / "images-idx3-ubyte", DATA_DIR / "labels-idx1-ubyte", db)
    ours = list(iterate_lmdb(str(db)))
    caffes = list(iterate_lmdb(str(DATA_DIR / "db_lmdb")))
    assert count == len(caffes)
    assert [k for k, _ in ours] == [k for k, _ in caffes]
    for (key, value), (_, ref) in zip(ours, caffes):
        ours_datum, ref_datum = caffe_pb2.Datum(), caffe_pb2.Datum()
        ours_datum.ParseFromString(value)
        ref_datum.ParseFromString(ref)
        assert ours_datum == ref_datum, key
        assert value == ref, key


def test_compute_image_mean_matches_caffes_binaryproto(tmp_path):
    out = tmp_path / "mean.binaryproto"
    mean = compute_image_mean(str(DATA_DIR / "db_lmdb"), str(out))
    reference = read_blobproto(DATA_DIR / "mean.binaryproto")
    np.testing.assert_array_equal(mean, reference)
    np.testing.assert_array_equal(read_blobproto(out), reference)
    ours, theirs = caffe_pb2.BlobProto(), caffe_pb2.BlobProto()
    ours.ParseFromString(out.read_bytes())
    theirs.ParseFromString((DATA_DIR / "mean.binaryproto").read_bytes())
    assert (ours.num, ours.channels, ours.height, ours.width) == \
        (theirs.num, theirs.channels, theirs.height, theirs.width)
