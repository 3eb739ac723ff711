"""Weights files: .caffemodel (binary NetParameter) and .caffemodel.h5 (Caffe's HDF5 layout).

Loading copies blobs into a built net by layer name, as Caffe's CopyTrainedLayersFrom: source
layers the net lacks are skipped with "Ignoring source layer X"; a shape mismatch is an error
naming the layer and both shapes. Binary files are memory-mapped and read layer by layer with a
small wire-format scanner, so a 500 MB model never exists twice in memory: each blob's packed
floats go straight from the mapped file into the net's param array.
"""

import mmap
import os

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import ProtonetError
from ..log import get_logger
from ..proto import caffe_pb2
from .files import atomic_writer

log = get_logger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Field numbers (caffe.proto) the scanner needs.
NET_LAYER, NET_LAYERS_V1 = 100, 2
LAYER_NAME, LAYER_BLOBS = 1, 7
V1_NAME, V1_BLOBS, V1_V0_LAYER = 4, 6, 1
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8


class _WireError(Exception):
    pass


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start, end):
    """Yield (field number, wire type, value start, value end or varint value) over a message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, None
        elif wire == 1:
            pos += 8
            yield number, wire, pos - 8, pos
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _WireError("a field runs past the end of its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == 5:
            pos += 4
            yield number, wire, pos - 4, pos
        else:
            raise _WireError(f"unsupported wire type {wire}")
        if pos > end:
            raise _WireError("truncated field")


class SourceBlob:
    """A blob read from a weights file: its shape, whether that shape is legacy 4-D, its values."""

    def __init__(self, shape, legacy, values):
        self.shape, self.legacy, self.values = shape, legacy, values


def _scan_blob(buf, start, end):
    legacy = {}
    shape = None
    values = None
    for number, wire, a, b in _fields(buf, start, end):
        if number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == 0:
            legacy[number] = a
        elif number == BLOB_SHAPE and wire == 2:
            msg = caffe_pb2.BlobShape()
            try:
                msg.ParseFromString(bytes(buf[a:b]))
            except DecodeError:
                raise _WireError("a corrupt BlobShape") from None
            shape = tuple(int(d) for d in msg.dim)
        elif number == BLOB_DATA and wire == 2:
            values = np.frombuffer(buf, dtype="<f4", count=(b - a) // 4, offset=a)
        elif number == BLOB_DOUBLE_DATA and wire == 2 and values is None:
            values = np.frombuffer(buf, dtype="<f8", count=(b - a) // 8, offset=a)
        elif number == BLOB_DATA and wire == 5:
            raise _WireError("unpacked float data")
    is_legacy = shape is None and bool(legacy)
    if shape is None:
        shape = tuple(legacy.get(k, 0) for k in (1, 2, 3, 4)) if legacy else (0,)
    if values is None:
        values = np.zeros(0, dtype=np.float32)
    return SourceBlob(shape, is_legacy, values)


def _scan_layers(buf):
    """Yield (layer name, [SourceBlob]) for every layer of a binary NetParameter."""
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if wire != 2 or number not in (NET_LAYER, NET_LAYERS_V1):
            continue
        name_field, blobs_field = (LAYER_NAME, LAYER_BLOBS) if number == NET_LAYER else \
            (V1_NAME, V1_BLOBS)
        name, blobs = None, []
        for field, fwire, fa, fb in _fields(buf, a, b):
            if fwire != 2:
                continue
            if field == name_field:
                name = bytes(buf[fa:fb]).decode("utf-8", "replace")
            elif field == blobs_field:
                blobs.append(_scan_blob(buf, fa, fb))
            elif number == NET_LAYERS_V1 and field == V1_V0_LAYER:
                raise _WireError("V0 layer")
        yield name, blobs


def _layers_via_protobuf(data, path):
    """Slow path for old formats (V0 layers, unpacked data): full parse and upgrade."""
    from .blobproto import blobproto_shape, blobproto_to_array, check_utf8

    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except Exception as err:
        raise ProtonetError(f"not a valid .caffemodel (NetParameter) file: {err}",
                            file=path) from None
    check_utf8(net, path)
    try:
        from .upgrade import upgrade_net
    except ImportError:  # the upgrade module is optional for current-format files
        upgrade_net = None
    if upgrade_net is not None:
        upgrade_net(net, source=path)
    for layer in net.layer:
        blobs = []
        for i, proto in enumerate(layer.blobs):
            legacy = not proto.HasField("shape") and proto.HasField("num")
            values = blobproto_to_array(proto, where=f"{path}: layer '{layer.name}' blob {i}")
            blobs.append(SourceBlob(blobproto_shape(proto), legacy, values.ravel()))
        yield layer.name, blobs


def _legacy_equal(target_shape, source_shape):
    # Caffe quirk: legacy num/channels/height/width blobs compare right-aligned (blob.cpp
    # ShapeEquals), so an InnerProduct weight stored as 1x1xMxN matches (M, N).
    if len(target_shape) > 4:
        return False
    padded = (1,) * (4 - len(target_shape)) + tuple(target_shape)
    return padded == tuple(source_shape)


def _copy_layer(net, name, blobs, path):
    layer = net.layer_dict.get(name)
    if layer is None:
        log.info("Ignoring source layer %s", name)
        return
    if len(blobs) != len(layer.blobs):
        raise ProtonetError(f"incompatible number of blobs for layer '{name}': the file has "
                            f"{len(blobs)}, the net expects {len(layer.blobs)}", file=path)
    for j, (target, source) in enumerate(zip(layer.blobs, blobs)):
        same = (_legacy_equal(target.shape, source.shape) if source.legacy
                else tuple(target.shape) == tuple(source.shape))
        if not same:
            raise ProtonetError(
                f"cannot copy param {j} weights from layer '{name}': shape mismatch, source "
                f"shape {tuple(source.shape)}, target shape {tuple(target.shape)}. To learn this "
                f"layer's parameters from scratch rather than copying them, rename the layer",
                file=path)
        if source.values.size != target.count:
            raise ProtonetError(f"layer '{name}' blob {j}: shape {tuple(source.shape)} needs "
                                f"{target.count} values, the file holds {source.values.size}",
                                file=path)
        target.data.reshape(-1)[...] = source.values


def _copy_from_binary(net, path):
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ProtonetError("the weights file is empty", file=path)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        try:
            layers = list(_scan_layers(mapped))
            for name, blobs in layers:
                _copy_layer(net, name, blobs, path)
        except _WireError:
            for name, blobs in _layers_via_protobuf(mapped[:], path):
                _copy_layer(net, name, blobs, path)
    finally:
        layers = None
        try:
            mapped.close()
        except BufferError:  # arrays still viewing the map; the GC closes it later
            pass


def _copy_from_hdf5(net, path):
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ProtonetError(f"cannot open HDF5 weights: {err}", file=path) from None
    with h5:
        if "data" not in h5:
            raise ProtonetError("not Caffe's HDF5 weights layout: no /data group", file=path)
        for name in h5["data"]:
            group = h5["data"][name]
            record_index = net._layer_index.get(name)
            if record_index is None:
                log.info("Ignoring source layer %s", name)
                continue
            record = net.records[record_index]
            targets = record.layer.blobs
            if len(group) > len(targets):
                raise ProtonetError(f"incompatible number of blobs for layer '{name}': the file "
                                    f"has {len(group)}, the net expects {len(targets)}",
                                    file=path)
            for j, target in enumerate(targets):
                key = str(j)
                if key not in group:
                    if getattr(record, "param_shared", [False] * len(targets))[j]:
                        continue
                    raise ProtonetError(f"layer '{name}': the file has no blob {j}", file=path)
                dataset = group[key]
                if tuple(dataset.shape) != tuple(target.shape):
                    raise ProtonetError(
                        f"cannot copy param {j} weights from layer '{name}': shape mismatch, "
                        f"source shape {tuple(dataset.shape)}, target shape "
                        f"{tuple(target.shape)}", file=path)
                dataset.read_direct(target.data) if dataset.dtype == np.float32 else \
                    target.data.__setitem__(Ellipsis, dataset[...])


def is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def copy_trained_layers_from(net, path):
    """Copy weights from ``path`` (.caffemodel or HDF5) into ``net`` by layer name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ProtonetError("weights file not found", file=path)
    if is_hdf5(path):
        _copy_from_hdf5(net, path)
    else:
        _copy_from_binary(net, path)


def save_weights(net, path, write_diff=False):
    """Write ``net``'s weights: HDF5 if ``path`` ends in .h5, else a binary .caffemodel."""
    if os.fspath(path).endswith(".h5"):
        save_weights_hdf5(net, path, write_diff=write_diff)
        return
    from .wire import write_net_weights

    def write(tmp):
        with open(tmp, "wb") as handle:
            write_net_weights([(r.param, r.layer.blobs) for r in net.records], net.name, handle,
                              write_diff=write_diff)

    atomic_writer(path, write)


def save_weights_hdf5(net, path, write_diff=False):
    """Caffe's HDF5 layout: /data/<layer>/<i> (and /diff/...), shared params saved once."""
    import h5py

    names = [record.param.name for record in net.records]
    for name in names:
        if names.count(name) > 1:
            raise ProtonetError(f"two layers are named '{name}'; Caffe's HDF5 weights layout "
                                f"(/data/<layer name>) needs unique layer names: rename one, "
                                f"or save as a binary .caffemodel (snapshot_format: "
                                f"BINARYPROTO)", file=os.fspath(path))

    def write(tmp):
        with h5py.File(tmp, "w") as h5:
            data = h5.create_group("data")
            diff = h5.create_group("diff") if write_diff else None
            for record in net.records:
                name = record.param.name
                layer_data = data.create_group(name)
                layer_diff = diff.create_group(name) if write_diff else None
                shared = getattr(record, "param_shared", [False] * len(record.layer.blobs))
                for j, blob in enumerate(record.layer.blobs):
                    if not shared[j]:
                        layer_data.create_dataset(str(j), data=blob.data)
                    if write_diff:
                        layer_diff.create_dataset(str(j), data=blob.diff)

    atomic_writer(path, write)
