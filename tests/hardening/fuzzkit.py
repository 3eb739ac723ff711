"""The fuzzing kit shared by ``tests/hardening/test_fuzz_files.py`` and ``tools/fuzz.py``.

Each *file kind* (prototxt, solver, caffemodel, solverstate, binaryproto, datum) has real seed
files, a set of mutations and a loader that does what protonet does with such a file. A case is
a seed and a list of mutation operations; it ends in one of three outcomes:

- ``loaded``: the mutated file loaded (and, where cheap, ran) without error;
- ``error``: protonet raised :class:`ProtonetError` (what the CLI prints on one line);
- ``other``: anything else — a traceback the user would see. The target is 0.

Mutations come as plain data (tuples), so the same operations are drawn by hypothesis in the
tests and by ``random.Random`` in ``tools/fuzz.py``:

- byte level (every kind): truncate, flip a bit, set a byte, insert/delete/duplicate a range;
- text level (prototxt, solver): a number replaced by an interesting one (0, -1, 2**31, 2**63,
  nan, 1e308…), a name replaced by another name of the same file (which makes cycles,
  self-loops and duplicate tops), lines duplicated, dropped or swapped, snippets inserted;
- message level (binary kinds): blob shapes set to huge, negative or zero dimensions, legacy
  4-D fields, data dropped or cut short, Datum sizes forged, solver-state counters forged,
  layers duplicated, renamed or dropped.
"""

import contextlib
import logging
import os
import random
import re
import resource
import shutil
import tempfile
import traceback

import numpy as np

from protonet.errors import ProtonetError
from protonet.proto import caffe_pb2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("prototxt", "solver", "caffemodel", "solverstate", "binaryproto", "datum")

INTERESTING_INTS = (0, 1, -1, 2, 3, 7, -2, 255, 65535, 65536, -2**31, 2**31 - 1, 2**32,
                    2**40, 10**9, 2**63 - 1, -2**63, 3 * 10**5)
INTERESTING_TEXT = ("0", "-1", "1", "2", "3", "-7", "2147483647", "-2147483648", "4294967296",
                    "9223372036854775807", "-9223372036854775808", "1000000", "65536", "100000",
                    "0.0", "-0.5", "0.5", "1e308", "-1e308", "1e-45", "nan", "inf", "-inf",
                    '"x"', "true", "{")
# Snippets for anywhere inside a layer block, and for the top level of a net or a solver.
LAYER_SNIPPETS = ('top: "data"', 'bottom: "data"', 'bottom: "loss"', 'top: "loss"',
                  'top: "conv"', 'bottom: "label"', 'include { phase: TEST }',
                  'exclude { stage: "x" }', 'param { name: "shared" }', 'loss_weight: 1e30',
                  'loss_weight: 0', 'propagate_down: false', 'param { lr_mult: 0 }',
                  'type: "Python"', 'type: "Split"', 'type: "Silence"',
                  'python_param { module: "os" layer: "system" }',
                  'input_param { shape { dim: 0 } }', 'dummy_data_param { shape { dim: 2 } }',
                  'convolution_param { kernel_size: 0 }', 'pooling_param { global_pooling: true }',
                  'inner_product_param { axis: 5 }')
TOP_SNIPPETS = (('layer { name: "self" type: "InnerProduct" bottom: "s" top: "s" '
                 'inner_product_param { num_output: 2 } }'),
                'layer { name: "relu_x" type: "ReLU" bottom: "data" top: "data" }',
                'layer { name: "loop" type: "Concat" bottom: "loop" top: "loop" }',
                ('layer { name: "py" type: "Python" bottom: "data" top: "py" '
                 'python_param { module: "os" layer: "system" } }'),
                ('layer { name: "zero" type: "DummyData" top: "zero" '
                 'dummy_data_param { shape { dim: 0 dim: 3 } } }'),
                'layer { name: "in" type: "Input" top: "in" input_param { shape { dim: -3 } } }',
                'input: "extra" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2',
                'force_backward: true', 'debug_info: true', 'state { phase: TEST level: 3 }')
SOLVER_SNIPPETS = ('stepvalue: 1', 'test_iter: 1', 'test_interval: 1', 'iter_size: 3',
                'lr_policy: "poly"', 'lr_policy: "multistep"', 'lr_policy: "sigmoid"',
                'type: "AdaDelta"', 'type: "RMSProp"', 'solver_type: NESTEROV',
                'snapshot_format: HDF5', 'clip_gradients: 0', 'regularization_type: "L1"',
                'test_state { stage: "x" }', 'train_state { level: 2 }', 'snapshot_diff: true',
                'test_initialization: false', 'delta: 0', 'momentum2: 1')

MAX_OPS = 3


# ---- mutation operations -------------------------------------------------------------------
def random_ops(rnd, kind):
    """A list of mutation operations drawn with ``rnd`` (a random.Random)."""
    ops = []
    for _ in range(rnd.choice((1, 1, 2, 2, MAX_OPS))):
        family = rnd.random()
        if kind in ("prototxt", "solver") and family < 0.9:
            ops.append(random_text_op(rnd))
        elif kind not in ("prototxt", "solver") and family < 0.6:
            ops.append(("msg", rnd.randrange(1 << 30), rnd.randrange(1 << 30),
                        rnd.choice(INTERESTING_INTS)))
        else:
            ops.append(random_byte_op(rnd))
    return ops


def random_byte_op(rnd):
    name = rnd.choice(("truncate", "flip", "set", "insert", "delete", "dup"))
    return (name, rnd.random(), rnd.randrange(256), rnd.randrange(1, 64))


def random_text_op(rnd):
    name = rnd.choice(("number", "number", "number", "name", "name", "enum", "dupline",
                       "dropline", "swaplines", "snippet", "snippet", "snippet"))
    return (name, rnd.randrange(1 << 30), rnd.randrange(1 << 30),
            rnd.randrange(len(INTERESTING_TEXT)))


def _pos(data, frac):
    return min(int(frac * len(data)), max(len(data) - 1, 0))


def apply_byte_op(data, op):
    name, frac, value, length = op
    if not data:
        return bytes([value]) if name in ("insert", "set") else data
    pos = _pos(data, frac)
    if name == "truncate":
        return data[:pos]
    if name == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << (value % 8))]) + data[pos + 1:]
    if name == "set":
        return data[:pos] + bytes([value]) + data[pos + 1:]
    if name == "insert":
        return data[:pos] + bytes((value + i * 37) % 256 for i in range(length)) + data[pos:]
    if name == "delete":
        return data[:pos] + data[pos + length:]
    if name == "dup":
        return data[:pos] + data[pos:pos + length] * 2 + data[pos + length:]
    raise AssertionError(name)


_NUMBER_RE = re.compile(rb"(?<=:)\s*-?\d+(?:\.\d*)?(?:e[-+]?\d+)?(?![\w.])")
_NAME_RE = re.compile(rb'"[^"\n]*"')
_ENUM_RE = re.compile(rb"(?<=:)\s*[A-Z][A-Z_0-9]+\b")
_BLOCK_RE = re.compile(rb"\b(layers?|\w+_param|shape|include|exclude)\s*\{")


def _replace_match(data, spots, a, replacement):
    m = spots[a % len(spots)]
    return data[:m.start()] + replacement + data[m.end():]


def apply_text_op(data, op, kind="prototxt"):
    """A text-level mutation that keeps the file mostly parseable, to reach deeper checks."""
    name, a, b, c = op
    if name == "number":
        spots = list(_NUMBER_RE.finditer(data))
        return _replace_match(data, spots, a, b" " + INTERESTING_TEXT[c % len(
            INTERESTING_TEXT)].encode()) if spots else data
    if name in ("name", "enum"):
        spots = list((_NAME_RE if name == "name" else _ENUM_RE).finditer(data))
        return _replace_match(data, spots, a, spots[b % len(spots)].group()) if spots else data
    if name == "snippet":
        blocks = list(_BLOCK_RE.finditer(data))
        if blocks and c % 2:
            at = blocks[a % len(blocks)].end()
            return data[:at] + b" " + LAYER_SNIPPETS[b % len(LAYER_SNIPPETS)].encode() + \
                b" " + data[at:]
        snippets = SOLVER_SNIPPETS if kind == "solver" and c % 4 else TOP_SNIPPETS
        return snippets[b % len(snippets)].encode() + b"\n" + data
    lines = data.split(b"\n")
    i, j = a % len(lines), b % len(lines)
    if name == "dupline":
        lines.insert(j, lines[i])
    elif name == "dropline":
        del lines[i]
    elif name == "swaplines":
        lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _blobs_of(message):
    """Every BlobProto inside ``message`` (depth-first)."""
    found = []
    if isinstance(message, caffe_pb2.BlobProto):
        found.append(message)
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        values = value if field.is_repeated else [value]
        for item in values:
            found.extend(_blobs_of(item))
    return found


def _mutate_blob(blob, a, value):
    choice = a % 9
    if choice == 0:
        if blob.shape.dim:
            blob.shape.dim[a // 9 % len(blob.shape.dim)] = value
        else:
            blob.shape.dim.append(value)
    elif choice == 1:
        blob.shape.dim.append(value % 5 if value >= 0 else value)
    elif choice == 2:
        del blob.shape.dim[:]
        blob.ClearField("shape")
    elif choice == 3:
        setattr(blob, ("num", "channels", "height", "width")[a // 9 % 4],
                max(-2**31, min(value, 2**31 - 1)))
    elif choice == 4:
        del blob.data[len(blob.data) // 2:]
    elif choice == 5:
        blob.double_data.extend([1.5] * (abs(value) % 5))
        del blob.data[:]
    elif choice == 6:
        blob.diff.extend([float("nan")] * (abs(value) % 7))
    elif choice == 7:
        blob.data.extend([float("inf")] * (abs(value) % 3 + 1))
    else:
        del blob.data[:]


def _mutate_datum(datum, a, value):
    choice = a % 7
    clamp = max(-2**31, min(value, 2**31 - 1))
    if choice < 3:
        setattr(datum, ("channels", "height", "width")[choice], clamp)
    elif choice == 3:
        datum.encoded = not datum.encoded
    elif choice == 4:
        datum.data = datum.data[:len(datum.data) // 2]
    elif choice == 5:
        datum.float_data.extend([float("nan")] * (abs(value) % 4))
    else:
        datum.label = clamp


def _mutate_state(state, a, value):
    choice = a % 5
    clamp = max(-2**31, min(value, 2**31 - 1))
    if choice == 0:
        state.iter = clamp
    elif choice == 1:
        state.current_step = clamp
    elif choice == 2:
        state.learned_net = ("", "/nonexistent.caffemodel", "../../../etc/passwd",
                             "x.caffemodel.h5")[a // 5 % 4]
    elif choice == 3 and len(state.history):
        del state.history[a // 5 % len(state.history)]
    elif len(state.history):
        state.history.add().CopyFrom(state.history[0])


def _mutate_net(net, a, value):
    layers = net.layer
    if not len(layers):
        return
    layer = layers[a // 7 % len(layers)]
    choice = a % 7
    if choice == 0:
        layers.add().CopyFrom(layer)
    elif choice == 1:
        layer.name = layers[value % len(layers)].name
    elif choice == 2:
        del layer.blobs[-1:]
    elif choice == 3 and len(layer.blobs):
        layer.blobs.add().CopyFrom(layer.blobs[0])
    elif choice == 4:
        layer.type = "Python"
        layer.python_param.module = "os"
        layer.python_param.layer = "system"
    elif choice == 5:
        layer.ClearField("name")
    else:
        del layers[a // 7 % len(layers)]


def apply_msg_op(kind, data, op):
    """A message-level mutation: parse ``data`` as the kind's message, change it, serialize."""
    _, a, b, value = op
    message = {"caffemodel": caffe_pb2.NetParameter, "solverstate": caffe_pb2.SolverState,
               "binaryproto": caffe_pb2.BlobProto, "datum": caffe_pb2.Datum}[kind]()
    try:
        message.ParseFromString(data)
    except Exception:  # noqa: BLE001 - an earlier byte mutation broke it; mutate bytes instead
        return apply_byte_op(data, ("flip", (a % 1000) / 1000, b % 256, 1))
    blobs = _blobs_of(message)
    if kind == "datum" and b % 2 == 0:
        _mutate_datum(message, a, value)
    elif kind == "solverstate" and b % 2 == 0:
        _mutate_state(message, a, value)
    elif kind == "caffemodel" and b % 3 == 0:
        _mutate_net(message, a, value)
    elif blobs:
        _mutate_blob(blobs[b % len(blobs)], a, value)
    return message.SerializeToString()


def mutate(kind, data, ops):
    """``data`` (a seed's bytes) after ``ops``."""
    for op in ops:
        if op[0] == "msg":
            data = apply_msg_op(kind, data, op)
        elif op[0] in ("truncate", "flip", "set", "insert", "delete", "dup"):
            data = apply_byte_op(data, op)
        else:
            data = apply_text_op(data, op, kind)
    return data


# ---- seeds and loaders --------------------------------------------------------------------------
TINY_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "lrn" type: "LRN" bottom: "pool" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "slice" type: "Slice" bottom: "lrn" top: "s1" top: "s2"
  slice_param { axis: 1 slice_point: 1 } }
layer { name: "concat" type: "Concat" bottom: "s2" bottom: "s1" top: "cat" }
layer { name: "sum" type: "Eltwise" bottom: "cat" bottom: "lrn" top: "sum" }
layer { name: "drop" type: "Dropout" bottom: "sum" top: "sum" dropout_param { dropout_ratio: 0.5 } }
layer { name: "flat" type: "Flatten" bottom: "sum" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip"
  param { name: "ipw" } inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "sig" type: "Sigmoid" bottom: "ip" top: "sig" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
"""

TINY_SOLVER = """net: "tiny.prototxt"
test_iter: 1
test_interval: 2
base_lr: 0.01
lr_policy: "step"
gamma: 0.5
stepsize: 2
momentum: 0.9
weight_decay: 0.0005
display: 1
max_iter: 3
snapshot: 2
snapshot_prefix: "snap/tiny"
type: "Adam"
random_seed: 3
average_loss: 2
clip_gradients: 10
"""

V1_NET = """name: "v1"
input: "data"
input_dim: 2 input_dim: 1 input_dim: 5 input_dim: 5
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool"
  pooling_param { pool: AVE kernel_size: 2 } }
layers { name: "ip" type: INNER_PRODUCT bottom: "pool" top: "ip"
  inner_product_param { num_output: 2 } }
layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
"""

SMALL_RUN_BYTES = 64 << 20   # run forward/backward only for nets whose blobs fit in this


# The harness plays a machine with this much memory for blobs (protonet.blob's guard), well
# under the address-space cap, so that an allocation the guard does not see (a layer's scratch
# buffer, a filler's temporaries) shows up as a MemoryError finding.
FUZZ_BLOB_MEMORY = 1536 << 20


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _small(net):
    """Whether running ``net`` is cheap (a huge but valid net is slow, not hung)."""
    return net.memory_used < SMALL_RUN_BYTES and \
        sum(b.count for b in net.learnable_params) < SMALL_RUN_BYTES // 4


class Workspace:
    """Seeds, and the nets and solvers the loaders load into, made once per process."""

    def __init__(self, directory=None):
        from protonet import blob, set_random_seed
        from protonet.log import set_level

        self._blob_memory = blob._MEMORY_LIMIT
        blob._MEMORY_LIMIT = min(blob._MEMORY_LIMIT or FUZZ_BLOB_MEMORY, FUZZ_BLOB_MEMORY)
        self._log_level = logging.getLogger("protonet").level
        set_level("CRITICAL")
        set_random_seed(1)
        self.dir = directory or tempfile.mkdtemp(prefix="protonet-fuzz-")
        self.case_dir = os.path.join(self.dir, "case")
        os.makedirs(self.case_dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "snap"), exist_ok=True)
        self._write(self.dir, "tiny.prototxt", TINY_NET.encode())
        self._write(self.dir, "v1.prototxt", V1_NET.encode())
        self._write(self.dir, "tiny_solver.prototxt", TINY_SOLVER.encode())
        self.seeds = {kind: [] for kind in KINDS}
        self._make_seeds()

    @staticmethod
    def _write(directory, name, payload):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(payload)
        return path

    def _seed(self, kind, name, payload):
        self.seeds[kind].append((name, payload))

    def _make_seeds(self):
        from protonet.io.blobproto import array_to_blobproto
        from protonet.net import Net
        from protonet.solvers import get_solver

        for rel in ("models/lenet/lenet.prototxt", "models/cifar10_quick/cifar10_quick.prototxt",
                    "models/lenet/lenet_train_test.prototxt"):
            with open(os.path.join(REPO, rel), "rb") as f:
                text = f.read()
            # Data layers read the bundled LMDBs; make their paths absolute.
            text = text.replace(b'source: "data/', f'source: "{REPO}/data/'.encode())
            self._seed("prototxt", rel, text)
        self._seed("prototxt", "tiny", TINY_NET.encode())
        self._seed("prototxt", "v1", V1_NET.encode())
        self._seed("solver", "tiny_solver", TINY_SOLVER.encode())
        self._seed("solver", "inline_solver", (
            TINY_SOLVER.replace('net: "tiny.prototxt"', "net_param { " + TINY_NET + " }")
            .replace('lr_policy: "step"', 'lr_policy: "multistep" stepvalue: 1 stepvalue: 2')
            .replace('type: "Adam"', "solver_type: NESTEROV")).encode())
        self._seed("solver", "lenet_solver",
                   _read(os.path.join(REPO, "models/lenet/lenet_solver.prototxt")))

        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            self.tiny_solver = get_solver("tiny_solver.prototxt")
            self.tiny_solver.step(2)   # writes snap/tiny_iter_2.{caffemodel,solverstate}
        finally:
            os.chdir(cwd)
        snap = os.path.join(self.dir, "snap", "tiny_iter_2")
        self._seed("caffemodel", "tiny", _read(snap + ".caffemodel"))
        self._seed("solverstate", "tiny", _read(snap + ".solverstate"))
        self.deploy_net = Net(os.path.join(self.dir, "tiny.prototxt"), phase="TEST")
        v1 = Net(os.path.join(self.dir, "v1.prototxt"), phase="TEST")
        legacy = caffe_pb2.NetParameter()
        legacy.name = "v1"
        legacy.input.append("data")
        legacy.input_dim.extend([2, 1, 5, 5])
        for record in v1.records:
            v1_layer = legacy.layers.add()
            v1_layer.name = record.param.name
            for blob in record.layer.blobs:
                v1_layer.blobs.add().CopyFrom(array_to_blobproto(blob.data, legacy=True))
        self.v1_net = v1
        self._seed("caffemodel", "v1_legacy_blobs", legacy.SerializeToString())
        lenet_model = os.path.join(REPO, "data/mnist/lenet_iter_1000.caffemodel")
        if os.path.isfile(lenet_model):
            self.lenet_net = Net(os.path.join(REPO, "models/lenet/lenet.prototxt"), phase="TEST")
            self._seed("caffemodel", "lenet", _read(lenet_model))

        rng = np.random.default_rng(0)
        mean = rng.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
        self._seed("binaryproto", "mean_legacy",
                   array_to_blobproto(mean, legacy=True).SerializeToString())
        self._seed("binaryproto", "mean_nd",
                   array_to_blobproto(mean[0], legacy=False).SerializeToString())
        self._make_datum_seeds(rng)

    def _make_datum_seeds(self, rng):
        from protonet.data.datum import array_to_datum, encode_image, image_to_datum

        source = os.path.join(REPO, "data/mnist/mnist_train_lmdb")
        if os.path.isdir(source):
            from protonet.data.db import iterate_lmdb

            for _, value in iterate_lmdb(source):
                self._seed("datum", "mnist_record", value)
                break
        image = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        self._seed("datum", "raw_color", image_to_datum(image, label=3).SerializeToString())
        self._seed("datum", "float", array_to_datum(
            rng.standard_normal((2, 5, 5)).astype(np.float32), label=1).SerializeToString())
        for fmt in ("png", "jpg"):
            datum = caffe_pb2.Datum(encoded=True, label=2)
            datum.data = encode_image(image, fmt)
            self._seed("datum", f"encoded_{fmt}", datum.SerializeToString())

    # ---- running one case ------------------------------------------------------------------
    def case_path(self, kind):
        ext = {"prototxt": ".prototxt", "solver": "_solver.prototxt",
               "caffemodel": ".caffemodel", "solverstate": ".solverstate",
               "binaryproto": ".binaryproto", "datum": ".datum"}[kind]
        return os.path.join(self.case_dir, "case" + ext)

    def run(self, kind, seed_index, ops):
        """Mutate seed ``seed_index`` of ``kind`` with ``ops`` and load it: (outcome, detail)."""
        seeds = self.seeds[kind]
        name, payload = seeds[seed_index % len(seeds)]
        data = mutate(kind, payload, ops)
        path = self._write(self.case_dir, os.path.basename(self.case_path(kind)), data)
        return classify(lambda: LOADERS[kind](self, path, name)), data

    # ---- loaders: what protonet does with each kind of file --------------------------------
    def load_prototxt(self, path, seed_name):
        from protonet.net import Net

        net = Net(path, phase="TRAIN")
        if _small(net):
            net.forward_backward()
        Net(path, phase="TEST")

    def load_solver(self, path, seed_name):
        from protonet.io.prototxt import read_solver
        from protonet.solvers import get_solver

        param = read_solver(path)
        if seed_name == "lenet_solver":
            return   # reading it is the test; building LeNet per case is too slow
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            solver = get_solver(path)
            cheap = param.iter_size <= 4 and all(n <= 4 for n in param.test_iter) and all(
                _small(net) for net in [solver.net] + solver.test_nets)
            if cheap:
                solver.step(3)
        finally:
            os.chdir(cwd)

    def load_caffemodel(self, path, seed_name):
        from protonet.io.prototxt import read_net
        from protonet.net import Net

        target = {"tiny": self.deploy_net, "v1_legacy_blobs": self.v1_net}.get(
            seed_name, getattr(self, "lenet_net", None))
        target.copy_from(path)
        param = read_net(path)   # as `protonet upgrade-net` reads it
        if seed_name == "tiny":
            Net(param, phase="TEST")   # a NetParameter that carries its own blobs

    def load_solverstate(self, path, seed_name):
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            self.tiny_solver.restore(path)
        finally:
            os.chdir(cwd)

    def load_binaryproto(self, path, seed_name):
        from protonet.data.transformer import DataTransformer
        from protonet.io.blobproto import read_blobproto

        mean = read_blobproto(path)
        param = caffe_pb2.TransformationParameter(mean_file=path, crop_size=4)
        transformer = DataTransformer(param, caffe_pb2.TEST)
        if mean.ndim in (3, 4) and mean.size < (1 << 20):
            shape = mean.shape[-3:]
            out = np.empty(transformer.infer_shape(*shape), dtype=np.float32)
            transformer.transform(np.zeros(shape, np.uint8), out)

    def load_datum(self, path, seed_name):
        from protonet.data.datum import datum_to_array, parse_datum
        from protonet.data.transformer import DataTransformer

        with open(path, "rb") as f:
            datum = parse_datum(f.read())
        for force_color, force_gray in ((False, False), (True, False), (False, True)):
            image = datum_to_array(datum, force_color, force_gray)
            param = caffe_pb2.TransformationParameter(scale=0.5, mirror=True, crop_size=3,
                                                      mean_value=[1.0])
            transformer = DataTransformer(param, caffe_pb2.TRAIN)
            out = np.empty(transformer.infer_shape(*image.shape), dtype=np.float32)
            transformer.transform(image, out)

    def close(self):
        from protonet import blob

        from protonet.log import set_level

        blob._MEMORY_LIMIT = self._blob_memory
        set_level(self._log_level)
        shutil.rmtree(self.dir, ignore_errors=True)


LOADERS = {kind: getattr(Workspace, f"load_{kind}") for kind in KINDS}


FUZZ_ADDRESS_SPACE = 6 << 30   # a forged allocation fails as MemoryError, not the OOM killer


@contextlib.contextmanager
def limited_address_space(extra=FUZZ_ADDRESS_SPACE):
    """Cap this process's address space at its current size + ``extra`` for the duration.

    A fuzz case that asks for gigabytes then gets a MemoryError (which the harness reports)
    instead of starving the machine. Only the soft limit changes, so it can be restored.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = current + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def classify(load):
    """Run ``load()``: ("loaded", None), ("error", message) or ("other", traceback text)."""
    try:
        load()
    except ProtonetError as err:
        message = str(err)
        if "\n" in message.strip():
            return "other", f"ProtonetError message spans lines: {message!r}"
        return "error", message
    except Exception:  # noqa: BLE001 - that is what the fuzzer looks for
        return "other", traceback.format_exc()
    return "loaded", None


def replay(kind, seed_index, ops, workspace=None):
    """Run one case again (for a regression test or a failure report)."""
    ws = workspace or Workspace()
    return ws.run(kind, seed_index, ops)


def case_ops(case_seed, kind):
    """The (seed index, ops) of case number ``case_seed`` as tools/fuzz.py draws it."""
    rnd = random.Random(f"{kind}:{case_seed}")
    return rnd.randrange(1 << 16), random_ops(rnd, kind)
