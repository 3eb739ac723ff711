"""Exact resume with real data layers: train k iterations, snapshot, resume to n, and the weights
are bit-identical to an uninterrupted run to n (LMDB Data with crop+mirror and prefetch, ImageData
with shuffle, HDF5Data with shuffle); a Caffe solverstate (no .pnstate) restarts the data."""

import os

import h5py
import numpy as np
import pytest
from PIL import Image

from protonet.data.datum import array_to_datum
from protonet.data.db import LMDBWriter
from protonet.errors import ProtonetError
from protonet.rng import set_random_seed
from protonet.solvers import get_solver
from protonet.solvers.snapshot import SIDECAR_SUFFIX
from tests.helpers.layers import TRAIN, setup_layer

N_ITEMS = 10
SNAPSHOT_AT, MAX_ITER = 3, 7

MODEL = """name: "resume"
{data}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.05 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.01
momentum: 0.9
lr_policy: "fixed"
max_iter: {max_iter}
display: 0
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
random_seed: 3
test_iter: 1
test_interval: 5
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def rng():
    return np.random.default_rng(21)


def lmdb_layer(workspace, rng):
    """Train and test Data layers; two databases, as LMDB opens an environment once a process."""
    layers = []
    for phase in ("train", "test"):
        images = rng.integers(0, 256, size=(N_ITEMS, 3, 8, 8), dtype=np.uint8)
        with LMDBWriter(workspace / f"{phase}_lmdb") as db:
            for i, image in enumerate(images):
                db.put(f"{i:08d}", array_to_datum(image, i % 3).SerializeToString())
        layers.append(f'layer {{ name: "data" type: "Data" top: "data" top: "label"\n'
                      f'  include {{ phase: {phase.upper()} }}\n'
                      f'  transform_param {{ crop_size: 6 mirror: true scale: 0.0039 }}\n'
                      f'  data_param {{ source: "{phase}_lmdb" batch_size: 4 backend: LMDB }} }}')
    return "\n".join(layers)


def image_data_layer(workspace, rng):
    (workspace / "imgs").mkdir()
    lines = []
    for i, pixels in enumerate(rng.integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)):
        Image.fromarray(pixels, "RGB").save(workspace / "imgs" / f"im{i}.png")
        lines.append(f"im{i}.png {i % 3}")
    (workspace / "list.txt").write_text("\n".join(lines) + "\n")
    return ('layer { name: "data" type: "ImageData" top: "data" top: "label"\n'
            '  transform_param { crop_size: 6 mirror: true scale: 0.0039 }\n'
            '  image_data_param { source: "list.txt" root_folder: "imgs/" batch_size: 3 '
            'shuffle: true } }')


def hdf5_data_layer(workspace, rng):
    paths = []
    for i, rows in enumerate((5, 7)):
        path = workspace / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = rng.normal(size=(rows, 2, 3)).astype(np.float32)
            f["label"] = (np.arange(rows) % 3).astype(np.float32)
        paths.append(path.name)
    (workspace / "h5list.txt").write_text("\n".join(paths) + "\n")
    return ('layer { name: "data" type: "HDF5Data" top: "data" top: "label"\n'
            '  hdf5_data_param { source: "h5list.txt" batch_size: 4 shuffle: true } }')


SOURCES = {"lmdb": lmdb_layer, "image_data": image_data_layer, "hdf5": hdf5_data_layer}


def write_solver(prefix):
    path = f"solver_{prefix.replace('/', '_')}.prototxt"
    with open(path, "w") as f:
        f.write(SOLVER.format(max_iter=MAX_ITER, snapshot=SNAPSHOT_AT, prefix=prefix))
    return path


def train(prefix, resume=None):
    with get_solver(write_solver(prefix)) as solver:
        solver.solve(resume_file=resume)
        return [blob.data.copy() for blob in solver.net.learnable_params]


@pytest.mark.parametrize("source", list(SOURCES))
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(workspace, rng, source):
    (workspace / "snap").mkdir()
    (workspace / "net.prototxt").write_text(MODEL.format(data=SOURCES[source](workspace, rng)))
    whole = train("snap/whole")
    resumed = train("snap/resumed", resume=f"snap/whole_iter_{SNAPSHOT_AT}.solverstate")
    for ours, ref in zip(resumed, whole):
        np.testing.assert_array_equal(ours, ref)
    # The check has teeth: without the data positions, resuming gives other weights.
    os.remove(f"snap/whole_iter_{SNAPSHOT_AT}.solverstate{SIDECAR_SUFFIX}")
    restarted = train("snap/restarted", resume=f"snap/whole_iter_{SNAPSHOT_AT}.solverstate")
    assert any(not np.array_equal(a, b) for a, b in zip(restarted, whole))


def test_caffe_solverstate_restarts_the_data_layer_from_the_first_record(workspace, rng):
    (workspace / "snap").mkdir()
    (workspace / "net.prototxt").write_text(MODEL.format(data=lmdb_layer(workspace, rng)))
    train("snap/whole")
    state = f"snap/whole_iter_{SNAPSHOT_AT}.solverstate"
    os.remove(state + SIDECAR_SUFFIX)
    with get_solver(write_solver("snap/caffe")) as solver:
        solver.restore(state)
        assert solver.iter == SNAPSHOT_AT
        assert solver.net.layer_dict["data"].get_position()["index"] == 0
        assert solver.test_nets[0].layer_dict["data"].get_position()["index"] == 0


def test_prefetching_data_layer_reports_the_next_batch_not_the_read_ahead(workspace, rng):
    lmdb_layer(workspace, rng)
    text = ('type: "Data" transform_param { crop_size: 6 mirror: true } data_param { '
            'source: "train_lmdb" batch_size: 4 backend: LMDB prefetch: 3 }')
    set_random_seed(8)
    layer, _, tops = setup_layer(text, [], 2, TRAIN)
    for _ in range(2):
        layer.layer_forward([], tops)
    position = layer.get_position()
    assert (position["index"], position["key"]) == (8, "00000008")   # thread is ahead
    expected = []
    for _ in range(3):
        layer.layer_forward([], tops)
        expected.append(tops[0].data.copy())
    layer.set_position(position)
    for batch in expected:
        layer.layer_forward([], tops)
        np.testing.assert_array_equal(tops[0].data, batch)
    layer.close()
    assert layer.prefetcher is None
    layer.set_position(position)                  # a closed layer reopens its database
    layer.layer_forward([], tops)
    np.testing.assert_array_equal(tops[0].data, expected[0])
    layer.close()


def test_a_position_past_the_end_of_a_changed_database_is_an_error(workspace, rng):
    lmdb_layer(workspace, rng)
    text = 'type: "Data" data_param { source: "train_lmdb" batch_size: 4 backend: LMDB }'
    layer, _, _ = setup_layer(text, [], 2, TRAIN)
    with pytest.raises(ProtonetError, match=r"record 50 of a database of 10.*\.pnstate"):
        layer.set_position({"index": 50, "key": "00000050", "transform": None})
    with pytest.raises(ProtonetError, match="has key '00000002', the snapshot expected 'x'"):
        layer.set_position({"index": 2, "key": "x", "transform": None})
    layer.close()


def test_memory_data_position_is_its_cursor(rng):
    text = ('type: "MemoryData" memory_data_param { batch_size: 2 channels: 1 height: 1 '
            'width: 1 }')
    layer, _, tops = setup_layer(text, [], 2)
    layer.set_input_arrays(np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1), np.zeros(6))
    layer.layer_forward([], tops)
    assert layer.get_position()["pos"] == 2
    layer.set_position({"pos": 4, "transform": None})
    layer.layer_forward([], tops)
    np.testing.assert_array_equal(tops[0].data.ravel(), [4, 5])
    with pytest.raises(ProtonetError, match="item 6 of 6 items"):
        layer.set_position({"pos": 6, "transform": None})
