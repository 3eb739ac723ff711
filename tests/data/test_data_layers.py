"""Data layers on small generated sources: LMDB, image lists, HDF5, memory, dummy, input,
windows."""

import gc
from pathlib import Path
import threading

import h5py
import numpy as np
import pytest
from PIL import Image

from protonet.blob import Blob
from protonet.data.datum import array_to_datum, encode_image
from protonet.data.db import LMDBWriter
from protonet.errors import ProtonetError
from protonet.io.blobproto import write_blobproto
from protonet.proto import caffe_pb2
from protonet.rng import set_random_seed
from tests.helpers.layers import TEST, TRAIN, make_layer, setup_layer

N_RECORDS = 10


@pytest.fixture(autouse=True)
def seeded():
    set_random_seed(5)


@pytest.fixture
def rng():
    return np.random.default_rng(11)


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, size=(N_RECORDS, 1, 6, 5), dtype=np.uint8)


def write_db(path, datums):
    with LMDBWriter(path) as db:
        for i, datum in enumerate(datums):
            db.put(f"{i:08d}", datum if isinstance(datum, bytes) else datum.SerializeToString())
    return str(path)


@pytest.fixture
def raw_db(tmp_path, images):
    return write_db(tmp_path / "raw_lmdb", [array_to_datum(im, i) for i, im in enumerate(images)])


def data_layer(source, extra="", batch=4, prefetch=4, phase=TEST, n_tops=2):
    text = (f'type: "Data" {extra} data_param {{ source: "{source}" batch_size: {batch} '
            f'backend: LMDB prefetch: {prefetch} }}')
    return setup_layer(text, [], n_tops, phase)


def forward(layer, tops, n):
    data, labels = [], []
    for _ in range(n):
        layer.layer_forward([], tops)
        data.append(tops[0].data.copy())
        if len(tops) > 1:
            labels.append(tops[1].data.copy())
    return np.concatenate(data), (np.concatenate(labels) if labels else None)


# ---- Data -------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefetch", [0, 4])
def test_data_layer_reads_records_in_order_and_wraps(raw_db, images, prefetch, capsys):
    layer, _, tops = data_layer(raw_db, prefetch=prefetch)
    assert tops[0].shape == (4, 1, 6, 5) and tops[1].shape == (4,)
    data, labels = forward(layer, tops, 3)
    layer.close()
    order = np.arange(12) % N_RECORDS
    np.testing.assert_array_equal(data, images[order].astype(np.float32))
    np.testing.assert_array_equal(labels, order.astype(np.float32))
    assert "Restarting data prefetching from start." in capsys.readouterr().err


def test_data_layer_with_one_top_gives_only_data(raw_db, images):
    layer, _, tops = data_layer(raw_db, n_tops=1)
    data, _ = forward(layer, tops, 1)
    layer.close()
    np.testing.assert_array_equal(data, images[:4].astype(np.float32))


def test_data_layer_reads_float_data_and_encoded_images(tmp_path, rng):
    floats = rng.normal(size=(3, 2, 3, 4)).astype(np.float32)
    source = write_db(tmp_path / "f", [array_to_datum(f, 1) for f in floats])
    layer, _, tops = data_layer(source, batch=3)
    data, _ = forward(layer, tops, 1)
    layer.close()
    np.testing.assert_array_equal(data, floats)

    bgr = rng.integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    datums = [caffe_pb2.Datum(data=encode_image(im, "png"), encoded=True, label=i)
              for i, im in enumerate(bgr)]
    source = write_db(tmp_path / "png", datums)
    layer, _, tops = data_layer(source, batch=3)
    data, labels = forward(layer, tops, 1)
    layer.close()
    np.testing.assert_array_equal(data, bgr.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(labels, [0, 1, 2])


def test_data_layer_random_crop_and_mirror_stay_inside_the_image(raw_db, images):
    layer, _, tops = data_layer(raw_db, 'transform_param { crop_size: 3 mirror: true }',
                                batch=N_RECORDS, phase=TRAIN)
    data, _ = forward(layer, tops, 1)
    layer.close()
    for item, image in zip(data, images):
        windows = [image[:, h:h + 3, w:w + 3] for h in range(4) for w in range(3)]
        candidates = windows + [win[:, :, ::-1] for win in windows]
        assert any(np.array_equal(item, c) for c in candidates)


def test_prefetch_thread_stops_on_close_and_when_the_layer_is_dropped(raw_db):
    layer, _, tops = data_layer(raw_db)
    layer.layer_forward([], tops)
    thread = layer.prefetcher._thread
    assert thread.is_alive()
    layer.close()
    assert not thread.is_alive()

    layer, _, tops = data_layer(raw_db)
    thread = layer.prefetcher._thread
    del layer
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("prefetch-") and t.is_alive()]


def _setup_error(source, extra="", match=""):
    with pytest.raises(ProtonetError, match=match) as info:
        layer, _, tops = data_layer(source, extra, prefetch=0)
        layer.layer_forward([], tops)
    return str(info.value)


def test_missing_database_names_layer_and_path(tmp_path):
    message = _setup_error(tmp_path / "nope", match="source must be the LMDB directory")
    assert "layer 'layer' (Data)" in message and "nope" in message


def test_a_file_inside_the_database_is_refused_with_the_directory_to_use(raw_db):
    message = _setup_error(f"{raw_db}/data.mdb", match="source must be the LMDB directory")
    assert f"('{raw_db}')" in message


def test_empty_database_is_an_error(tmp_path):
    with LMDBWriter(tmp_path / "empty"):
        pass
    _setup_error(tmp_path / "empty", match="the database is empty")


def test_leveldb_directory_says_how_to_convert(tmp_path):
    leveldb = tmp_path / "old_leveldb"
    leveldb.mkdir()
    (leveldb / "CURRENT").write_text("MANIFEST-000001\n")
    _setup_error(leveldb, match="LevelDB is not supported; convert it to LMDB")


def test_record_that_is_not_a_datum_names_its_key(tmp_path, images):
    source = write_db(tmp_path / "bad", [array_to_datum(images[0], 0), b"\xff\xff\xff garbage"])
    message = _setup_error(source, match="is not a")
    assert "record '00000001'" in message and "layer 'layer'" in message


def test_image_that_does_not_decode_names_its_key(tmp_path):
    datum = caffe_pb2.Datum(data=b"not a png at all", encoded=True, label=0)
    message = _setup_error(write_db(tmp_path / "bad", [datum]), match="could not decode")
    assert "record '00000000'" in message


def test_crop_larger_than_the_image_is_an_error(raw_db):
    _setup_error(raw_db, "transform_param { crop_size: 9 }", match="crop_size 9 is larger")


def test_mean_file_of_the_wrong_shape_is_an_error(raw_db, tmp_path):
    mean = tmp_path / "mean.binaryproto"
    write_blobproto(mean, np.zeros((1, 3, 6, 5), np.float32))
    _setup_error(raw_db, f'transform_param {{ mean_file: "{mean}" }}', match="mean file")


# ---- ImageData --------------------------------------------------------------------------------
@pytest.fixture
def image_list(tmp_path, rng):
    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = rng.integers(0, 256, size=(5, 8, 6, 3), dtype=np.uint8)
    lines = []
    for i, rgb in enumerate(pixels):
        Image.fromarray(rgb, "RGB").save(folder / f"im{i}.png")
        lines.append(f"im{i}.png {i * 10}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, pixels


def image_layer(root, extra="", batch=5, phase=TEST):
    text = (f'type: "ImageData" image_data_param {{ source: "{root}/list.txt" '
            f'root_folder: "{root}/imgs/" batch_size: {batch} {extra} }} '
            f'data_param {{ prefetch: 0 }}')
    return setup_layer(text, [], 2, phase)


def test_image_data_gives_bgr_pixels_and_labels(image_list):
    root, rgb = image_list
    layer, _, tops = image_layer(root)
    data, labels = forward(layer, tops, 1)
    np.testing.assert_array_equal(data, rgb[:, :, :, ::-1].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, [0, 10, 20, 30, 40])


def test_image_data_gray_and_resize(image_list):
    root, _ = image_list
    layer, _, tops = image_layer(root, "is_color: false new_height: 4 new_width: 3")
    data, _ = forward(layer, tops, 1)
    assert data.shape == (5, 1, 4, 3)
    assert data.min() >= 0 and data.max() <= 255


def test_image_data_shuffle_visits_every_image_once_per_pass(image_list):
    root, _ = image_list
    layer, _, tops = image_layer(root, "shuffle: true")
    _, labels = forward(layer, tops, 4)
    for start in range(0, 20, 5):
        assert sorted(labels[start:start + 5]) == [0, 10, 20, 30, 40]


def test_image_data_missing_list_and_missing_image(image_list, tmp_path):
    with pytest.raises(ProtonetError, match="could not open the image list"):
        setup_layer('type: "ImageData" image_data_param { source: "/no/list.txt" }', [], 2)
    root, _ = image_list
    (root / "list.txt").write_text("missing.png 1\n")
    with pytest.raises(ProtonetError, match="could not open or find the image"):
        image_layer(root)


# ---- HDF5Data / HDF5Output --------------------------------------------------------------------
@pytest.fixture
def h5_sources(tmp_path, rng):
    arrays = []
    paths = []
    for i, rows in enumerate((4, 3)):
        data = rng.normal(size=(rows, 2, 3)).astype(np.float32)
        label = np.arange(rows, dtype=np.float64) + 100 * i
        path = tmp_path / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = data
            f["label"] = label
        arrays.append((data, label))
        paths.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(paths) + "\n")
    return tmp_path / "list.txt", arrays


def hdf5_layer(source, extra="", batch=5, tops=("data", "label")):
    top_text = " ".join(f'top: "{t}"' for t in tops)
    text = (f'type: "HDF5Data" {top_text} hdf5_data_param {{ source: "{source}" '
            f'batch_size: {batch} {extra} }}')
    return setup_layer(text, [], len(tops))


def test_hdf5_data_reads_files_in_order_and_wraps(h5_sources):
    source, arrays = h5_sources
    layer, _, tops = hdf5_layer(source)
    assert tops[0].shape == (5, 2, 3) and tops[1].shape == (5,)
    data, labels = forward(layer, tops, 3)
    all_data = np.concatenate([a[0] for a in arrays])
    all_labels = np.concatenate([a[1] for a in arrays]).astype(np.float32)
    order = np.arange(15) % 7
    np.testing.assert_array_equal(data, all_data[order])
    np.testing.assert_array_equal(labels, all_labels[order])


def test_hdf5_data_shuffle_keeps_rows_and_labels_together(h5_sources):
    source, arrays = h5_sources
    layer, _, tops = hdf5_layer(source, "shuffle: true", batch=7)
    data, labels = forward(layer, tops, 2)
    all_data = np.concatenate([a[0] for a in arrays])
    all_labels = np.concatenate([a[1] for a in arrays]).astype(np.float32)
    for start in (0, 7):
        assert sorted(labels[start:start + 7]) == sorted(all_labels)
    for row, label in zip(data, labels):
        np.testing.assert_array_equal(row, all_data[list(all_labels).index(label)])


def test_hdf5_data_missing_dataset_names_the_file_and_top(h5_sources):
    source, _ = h5_sources
    with pytest.raises(ProtonetError, match="no dataset 'weights' for top 1") as info:
        hdf5_layer(source, tops=("data", "weights"))
    assert "part0.h5" in str(info.value)


def test_hdf5_data_refuses_transform_param_and_missing_list(h5_sources):
    source, _ = h5_sources
    with pytest.raises(ProtonetError, match="does not transform data"):
        setup_layer(f'type: "HDF5Data" top: "data" transform_param {{ scale: 2 }} '
                    f'hdf5_data_param {{ source: "{source}" batch_size: 2 }}', [], 1)
    with pytest.raises(ProtonetError, match="could not open the HDF5 file list"):
        hdf5_layer("/no/such/list.txt")


def test_hdf5_output_writes_data_and_label(tmp_path, rng):
    data = rng.normal(size=(3, 2, 4)).astype(np.float32)
    label = np.array([1, 2, 3], np.float32)
    out = tmp_path / "out.h5"
    layer, bottoms, tops = setup_layer(
        f'type: "HDF5Output" hdf5_output_param {{ file_name: "{out}" }}', [data, label], 0)
    layer.layer_forward(bottoms, tops)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["data"][...], data.reshape(3, 2, 4, 1))
        np.testing.assert_array_equal(f["label"][...], label.reshape(3, 1, 1, 1))


# ---- MemoryData, DummyData, Input ------------------------------------------------------------
def test_memory_data_cycles_through_the_arrays(rng):
    layer, _, tops = setup_layer('type: "MemoryData" memory_data_param { batch_size: 2 '
                                 'channels: 1 height: 2 width: 3 }', [], 2)
    data = rng.normal(size=(4, 1, 2, 3)).astype(np.float32)
    labels = np.array([5, 6, 7, 8], np.float32)
    layer.set_input_arrays(data, labels)
    seen, seen_labels = forward(layer, tops, 3)
    np.testing.assert_array_equal(seen, data[[0, 1, 2, 3, 0, 1]])
    np.testing.assert_array_equal(seen_labels.ravel(), labels[[0, 1, 2, 3, 0, 1]])


def test_memory_data_errors(rng):
    layer, _, tops = setup_layer('type: "MemoryData" memory_data_param { batch_size: 2 '
                                 'channels: 1 height: 2 width: 3 }', [], 2)
    with pytest.raises(ProtonetError, match="call set_input_arrays"):
        layer.layer_forward([], tops)
    with pytest.raises(ProtonetError, match="multiple of batch_size"):
        layer.set_input_arrays(np.zeros((3, 1, 2, 3)), np.zeros(3))
    with pytest.raises(ProtonetError, match="must be specified and positive"):
        setup_layer('type: "MemoryData" memory_data_param { batch_size: 2 }', [], 2)


def test_dummy_data_fills_constants_once_and_refills_random_tops():
    layer, _, tops = setup_layer(
        'type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 } '
        'data_filler { type: "constant" value: 7 } data_filler { type: "gaussian" } }', [], 2)
    assert tops[0].shape == (2, 3) and tops[1].shape == (4,)
    np.testing.assert_array_equal(tops[0].data, 7)
    layer.layer_forward([], tops)
    first = tops[1].data.copy()
    layer.layer_forward([], tops)
    assert not np.array_equal(first, tops[1].data)
    np.testing.assert_array_equal(tops[0].data, 7)


def test_dummy_data_legacy_dims_and_bad_counts():
    _, _, tops = setup_layer('type: "DummyData" dummy_data_param { num: 2 channels: 3 '
                             'height: 4 width: 5 }', [], 2)
    assert tops[0].shape == tops[1].shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(tops[1].data, 0)
    with pytest.raises(ProtonetError, match="give 'shape' once, or once per top"):
        setup_layer('type: "DummyData" dummy_data_param { shape { dim: 1 } shape { dim: 2 } }',
                    [], 3)


def test_input_shapes_none_one_or_per_top():
    _, _, tops = setup_layer('type: "Input" input_param { shape { dim: 2 dim: 3 } }', [], 2)
    assert tops[0].shape == tops[1].shape == (2, 3)
    _, _, tops = setup_layer('type: "Input" input_param { shape { dim: 1 } shape { dim: 4 } }',
                             [], 2)
    assert (tops[0].shape, tops[1].shape) == ((1,), (4,))
    layer = make_layer('type: "Input"')
    blob = Blob(3, 2)
    blob.data[...] = 9
    layer.layer_setup([], [blob])
    layer.layer_forward([], [blob])
    assert blob.shape == (3, 2) and (blob.data == 9).all()
    with pytest.raises(ProtonetError, match="once per top"):
        setup_layer('type: "Input" input_param { shape { dim: 1 } shape { dim: 4 } }', [], 3)


# ---- WindowData -------------------------------------------------------------------------------
@pytest.fixture
def window_file(tmp_path):
    colors = [(10, 20, 30), (200, 100, 50)]
    lines = []
    for i, rgb in enumerate(colors):
        Image.new("RGB", (16, 12), rgb).save(tmp_path / f"w{i}.png")
        lines += ["# %d" % i, f"w{i}.png", "3", "12", "16", "3",
                  f"{i + 1} 0.9 1 1 10 8", "0 0.1 0 0 5 5", f"{i + 1} 0.3 2 2 6 6"]
    (tmp_path / "windows.txt").write_text("\n".join(lines) + "\n")
    return tmp_path, colors


@pytest.mark.parametrize("mode", ['crop_mode: "warp"', 'crop_mode: "square" context_pad: 1'])
def test_window_data_samples_fg_and_bg_windows(window_file, mode):
    root, colors = window_file
    layer, _, tops = setup_layer(
        f'type: "WindowData" transform_param {{ crop_size: 6 mirror: true }} '
        f'window_data_param {{ source: "{root}/windows.txt" root_folder: "{root}/" '
        f'batch_size: 8 fg_fraction: 0.5 {mode} }} data_param {{ prefetch: 0 }}', [], 2, TRAIN)
    assert tops[0].shape == (8, 3, 6, 6)
    data, labels = forward(layer, tops, 1)
    assert (labels[:4] == 0).all() and set(labels[4:]) <= {1, 2}
    bgr = {tuple(c[::-1]) for c in colors}
    for item in data:
        pixels = {tuple(p) for p in item.reshape(3, -1).T if p.any()}
        assert pixels and pixels <= bgr


def test_interpreter_exits_promptly_with_a_running_prefetch_thread(raw_db):
    import subprocess
    import sys

    script = ("from tests.helpers.layers import setup_layer\n"
              f"layer, _, tops = setup_layer('type: \"Data\" data_param {{ source: \"{raw_db}\" "
              "batch_size: 2 backend: LMDB prefetch: 2 }', [], 2)\n"
              "layer.layer_forward([], tops)\n"
              "print(int(tops[1].data[1]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=str(Path(__file__).resolve().parents[2]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
