"""Snapshots: weights + solver state, in Caffe's binary-proto or HDF5 layout, written atomically.

A snapshot at iteration N is ``PREFIX_iter_N.caffemodel`` + ``PREFIX_iter_N.solverstate``
(BINARYPROTO) or ``PREFIX_iter_N.caffemodel.h5`` + ``PREFIX_iter_N.solverstate.h5`` (HDF5). The
weights file is written first, then the solver state (SolverState: iter, learned_net, history in
learnable-param order — AdaDelta and Adam append their second set — and current_step). Both go
through a temporary file, fsync and rename, so a crash leaves either the old file or the new one.

protonet adds a third, small file beside the solver state, ``<solverstate>.pnstate`` (JSON),
which Caffe never reads: the global RNG state and the position of every data layer that exposes
``get_position()``. Restoring a protonet snapshot then continues bit for bit; restoring a Caffe
solverstate (no .pnstate) starts the data from the first record, as Caffe does. The sidecar
holds the SHA-256 of its solver state, so a stale one (same name, other run) is ignored.

The optional data-position interface (a layer without it simply restarts on resume):

- ``layer.get_position()`` → a JSON-serialisable value (dict/list/str/int/float/bool/None)
  saying where the *next* ``forward()`` reads: the cursor (record index, DB key, file and row),
  the current order if the layer shuffles, and the state of every RNG the layer owns
  (``rng.bit_generator.state``, its transformer's too). A prefetching layer reports the batch
  its next forward returns, not how far its prefetch thread has read.
- ``layer.set_position(position)`` restores that value (discarding prefetched batches and
  restarting the prefetch from there), so the next forward returns exactly that batch.

Data, ImageData, WindowData, HDF5Data and MemoryData implement it (protonet.layers.data); the
prefetching ones capture the position after each batch on their thread and hand it out with the
batch. The global RNG (:mod:`protonet.rng`: fillers, Dropout) is saved and restored by the solver.
"""

import hashlib
import json
import os

import numpy as np
from google.protobuf.message import DecodeError

from .. import rng
from ..errors import ProtonetError
from ..io.blobproto import blobproto_to_array, check_utf8, fill_blobproto
from ..io.files import atomic_write_bytes, atomic_writer
from ..io.weights import save_weights, save_weights_hdf5
from ..log import get_logger
from ..proto import caffe_pb2

log = get_logger(__name__)

SIDECAR_SUFFIX = ".pnstate"
SIDECAR_VERSION = 1


class SolverStateData:
    """What a solverstate holds, whatever its format."""

    def __init__(self, iter, learned_net, current_step, history):
        self.iter = iter
        self.learned_net = learned_net
        self.current_step = current_step
        self.history = history          # list of (shape, float32 array)


# ---- binary proto ------------------------------------------------------------------------------
def _write_binary_model(net, path, write_diff):
    log.info("Snapshotting to binary proto file %s", path)
    save_weights(net, path, write_diff=write_diff)


def _write_binary_state(path, state):
    log.info("Snapshotting solver state to binary proto file %s", path)
    proto = caffe_pb2.SolverState()
    proto.iter = state.iter
    proto.learned_net = state.learned_net
    proto.current_step = state.current_step
    for array in state.history:
        fill_blobproto(proto.history.add(), array)
    atomic_write_bytes(path, proto.SerializeToString())


def _read_binary_state(path):
    proto = caffe_pb2.SolverState()
    with open(path, "rb") as f:
        payload = f.read()
    try:
        proto.ParseFromString(payload)
    except DecodeError as err:
        raise ProtonetError(f"not a valid .solverstate file ({err})", file=path) from None
    check_utf8(proto, path)
    history = [blobproto_to_array(blob, where=f"{path}: history blob {i}")
               for i, blob in enumerate(proto.history)]
    learned = proto.learned_net if proto.HasField("learned_net") else None
    return SolverStateData(proto.iter, learned, proto.current_step, history)


# ---- HDF5 -------------------------------------------------------------------------------------
def _write_hdf5_model(net, path, write_diff):
    log.info("Snapshotting to HDF5 file %s", path)
    save_weights_hdf5(net, path, write_diff=write_diff)


def _h5_string(h5, name, text):
    """A scalar fixed-length, NUL-terminated string dataset, as HDF5's H5LTmake_dataset_string."""
    import h5py

    raw = text.encode("utf-8")
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(raw) + 1)
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dataset = h5py.h5d.create(h5.id, name.encode(), string_type, space)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw + b"\0", dtype=f"S{len(raw) + 1}"))


def _write_hdf5_state(path, state):
    import h5py

    log.info("Snapshotting solver state to HDF5 file %s", path)

    def write(tmp):
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("iter", data=np.array([state.iter], dtype=np.int32))
            _h5_string(h5, "learned_net", state.learned_net)
            h5.create_dataset("current_step", data=np.array([state.current_step], np.int32))
            group = h5.create_group("history")
            for i, array in enumerate(state.history):
                group.create_dataset(str(i), data=array)

    atomic_writer(path, write)


def _read_hdf5_state(path):
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ProtonetError(f"cannot open the HDF5 solver state ({err})", file=path) from None
    with h5:
        for key in ("iter", "current_step", "history"):
            if key not in h5:
                raise ProtonetError(f"not a solver state: no '{key}' in the HDF5 file",
                                    file=path)
        learned = None
        if "learned_net" in h5:
            value = h5["learned_net"][()]
            value = value.tobytes() if isinstance(value, np.ndarray) else value
            learned = value.rstrip(b"\0").decode("utf-8") if isinstance(value, bytes) else value
        group = h5["history"]
        history = [np.asarray(group[str(i)][...], dtype=np.float32) for i in range(len(group))]
        return SolverStateData(int(np.ravel(h5["iter"][()])[0]), learned,
                               int(np.ravel(h5["current_step"][()])[0]), history)


class Format:
    """One snapshot format: file extensions and the four readers/writers."""

    def __init__(self, model_ext, state_ext, write_model, write_state, read_state):
        self.model_ext, self.state_ext = model_ext, state_ext
        self.write_model, self.write_state, self.read_state = write_model, write_state, read_state


FORMATS = {
    caffe_pb2.SolverParameter.BINARYPROTO: Format(".caffemodel", ".solverstate",
                                                  _write_binary_model, _write_binary_state,
                                                  _read_binary_state),
    caffe_pb2.SolverParameter.HDF5: Format(".caffemodel.h5", ".solverstate.h5",
                                           _write_hdf5_model, _write_hdf5_state,
                                           _read_hdf5_state),
}


def format_of_state_file(path):
    """Caffe picks the reader by the extension: ``.h5`` is HDF5, anything else binary proto."""
    key = caffe_pb2.SolverParameter.HDF5 if str(path).endswith(".h5") else \
        caffe_pb2.SolverParameter.BINARYPROTO
    return FORMATS[key]


def read_state(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ProtonetError("solver state file not found", file=path)
    if path.endswith((".caffemodel", ".caffemodel.h5")):
        raise ProtonetError("this is a weights file, not a solver state: pass it as --weights "
                            "to fine-tune, or give the matching .solverstate to resume",
                            file=path)
    return format_of_state_file(path).read_state(path)


# ---- protonet's sidecar: RNG and data positions -----------------------------------------------
def _positions(net):
    return {name: layer.get_position() for name, layer in zip(net._layer_names, net.layers)
            if callable(getattr(layer, "get_position", None))}


def _restore_positions(net, positions, what):
    for name, position in positions.items():
        layer = net.layer_dict.get(name)
        if layer is None or not callable(getattr(layer, "set_position", None)):
            log.warning("%s: cannot restore the data position of layer '%s' (no such layer, "
                        "or it has no set_position); it starts from the beginning", what, name)
            continue
        layer.set_position(position)


def _fingerprint(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sidecar(state_path, iteration, solver_type, train_net, test_nets):
    """Write ``<state>.pnstate``: RNG state and data positions, tied to the state file's hash."""
    payload = {
        "version": SIDECAR_VERSION,
        "iter": iteration,
        "type": solver_type,
        "solverstate_sha256": _fingerprint(state_path),
        "rng": rng.get_state(),
        "train": _positions(train_net),
        "test": [_positions(net) for net in test_nets],
    }
    atomic_write_bytes(state_path + SIDECAR_SUFFIX, json.dumps(payload).encode("utf-8"))


def read_sidecar(state_path, iteration, solver_type, train_net, test_nets):
    """Apply ``<state>.pnstate`` if it belongs to ``state_path``; return whether it was applied.

    Also warns when the snapshot was made by another solver type with the same history size
    (SGD vs Nesterov, Adam vs AdaDelta), which Caffe silently accepts (BVLC/caffe#5581).
    """
    path = os.fspath(state_path) + SIDECAR_SUFFIX
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            payload = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as err:
        raise ProtonetError(f"cannot read protonet's resume state ({err}); delete the file to "
                            f"resume as Caffe would, with the data from the beginning",
                            file=path) from None
    if (payload.get("version") != SIDECAR_VERSION or payload.get("iter") != iteration
            or payload.get("solverstate_sha256") != _fingerprint(state_path)):
        log.warning("Ignoring %s: it does not belong to this solver state", path)
        return False
    if payload.get("type") != solver_type:
        log.warning("%s was written by a %s solver; resuming it with %s", state_path,
                    payload.get("type"), solver_type)
    rng.set_state(payload["rng"])
    _restore_positions(train_net, payload.get("train", {}), path)
    for net, positions in zip(test_nets, payload.get("test", [])):
        _restore_positions(net, positions, path)
    log.info("Restored the RNG state and data positions from %s", path)
    return True
