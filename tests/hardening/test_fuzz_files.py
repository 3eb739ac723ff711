"""Malformed files load or fail with one ProtonetError line: never a traceback or a huge allocation.

Each file kind is mutated by hypothesis (see :mod:`tests.hardening.fuzzkit` for the mutations)
and loaded as protonet loads it. ``PROTONET_FUZZ_EXAMPLES`` sets the examples per kind (CI
default: 80, so about 500 cases in all); ``make fuzz`` runs ``tools/fuzz.py`` for 10,000 per
kind. Below the property tests, one regression test per crash the fuzzer found.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protonet import blob as blob_module
from protonet.blob import Blob
from protonet.errors import ProtonetError
from protonet.io.blobproto import read_blobproto
from protonet.io.prototxt import read_net
from protonet.net import Net
from protonet.proto import caffe_pb2

from . import fuzzkit

# Fuzzed weights and learning rates diverge; numpy's overflow warnings are expected noise here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

EXAMPLES = int(os.environ.get("PROTONET_FUZZ_EXAMPLES", "80"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.data_too_large,
                                                HealthCheck.function_scoped_fixture])

BYTE_OP = st.tuples(st.sampled_from(("truncate", "flip", "set", "insert", "delete", "dup")),
                    st.floats(0, 1, exclude_max=True), st.integers(0, 255),
                    st.integers(1, 63))
TEXT_OP = st.tuples(st.sampled_from(("number", "name", "enum", "dupline", "dropline",
                                     "swaplines", "snippet")),
                    st.integers(0, 2**30), st.integers(0, 2**30), st.integers(0, 2**30))
MSG_OP = st.tuples(st.just("msg"), st.integers(0, 2**30), st.integers(0, 2**30),
                   st.sampled_from(fuzzkit.INTERESTING_INTS))


def ops_for(kind):
    structured = TEXT_OP if kind in ("prototxt", "solver") else MSG_OP
    return st.lists(st.one_of(structured, structured, structured, BYTE_OP), min_size=1,
                    max_size=fuzzkit.MAX_OPS)


@pytest.fixture(scope="module")
def workspace():
    ws = fuzzkit.Workspace()
    yield ws
    ws.close()


def check_case(workspace, kind, seed_index, ops):
    with fuzzkit.limited_address_space():
        (outcome, detail), _ = workspace.run(kind, seed_index, ops)
    assert outcome != "other", (
        f"{kind} case (seed {seed_index}, ops {ops}) raised something other than "
        f"ProtonetError; replay with fuzzkit.replay({kind!r}, {seed_index}, {ops!r}):\n{detail}")


def _fuzz_test(kind):
    @FUZZ_SETTINGS
    @given(seed_index=st.integers(0, 2**16), ops=ops_for(kind))
    def test(workspace, seed_index, ops):
        check_case(workspace, kind, seed_index, ops)

    test.__name__ = f"test_fuzzed_{kind}_loads_or_raises_protonet_error"
    test.__doc__ = f"A mutated {kind} file loads, or raises ProtonetError; nothing else."
    return test


test_fuzzed_prototxt_loads_or_raises_protonet_error = _fuzz_test("prototxt")
test_fuzzed_solver_loads_or_raises_protonet_error = _fuzz_test("solver")
test_fuzzed_caffemodel_loads_or_raises_protonet_error = _fuzz_test("caffemodel")
test_fuzzed_solverstate_loads_or_raises_protonet_error = _fuzz_test("solverstate")
test_fuzzed_binaryproto_loads_or_raises_protonet_error = _fuzz_test("binaryproto")
test_fuzzed_datum_loads_or_raises_protonet_error = _fuzz_test("datum")


def test_every_kind_has_seeds_that_load_unmutated(workspace):
    for kind in fuzzkit.KINDS:
        assert workspace.seeds[kind], kind
        for index, (name, _) in enumerate(workspace.seeds[kind]):
            (outcome, detail), _ = workspace.run(kind, index, [])
            assert outcome == "loaded", f"{kind} seed {name}: {detail}"


# ---- regressions: one per crash the fuzzer found ---------------------------------------------
def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _plain_net(tmp_path):
    path = tmp_path / "plain.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 2 dim: 3 } } }\n'
                    'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                    'inner_product_param { num_output: 4 } }\n')
    return Net(str(path), phase="TEST")


def test_caffemodel_with_a_corrupt_blob_shape_is_a_protonet_error(tmp_path):
    # weights.py's scanner parsed BlobShape without catching DecodeError.
    blob = _field(7, b"\x0a\x05\x01")           # shape { dim: packed, length 5, 1 byte }
    layer = _field(1, b"ip") + _field(7, blob)
    path = tmp_path / "corrupt_shape.caffemodel"
    path.write_bytes(_field(100, layer))
    with pytest.raises(ProtonetError, match="not a valid .caffemodel"):
        _plain_net(tmp_path).copy_from(str(path))


def test_non_utf8_layer_name_in_a_binary_net_is_a_protonet_error(tmp_path):
    # Upgrading a V1 layer assigned the name (returned as bytes) to a string field: TypeError.
    path = tmp_path / "bad_name.caffemodel"
    path.write_bytes(_field(2, _field(4, b"c\xefnv")))   # layers { name: <not UTF-8> }
    with pytest.raises(ProtonetError, match="not UTF-8"):
        read_net(str(path))


def test_python_layer_naming_a_function_not_a_class_is_a_protonet_error(tmp_path):
    # python.py called issubclass() on whatever the module attribute was: TypeError.
    path = tmp_path / "py.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" '
                    'input_param { shape { dim: 1 } } }\n'
                    'layer { name: "py" type: "Python" bottom: "x" top: "y" '
                    'python_param { module: "os" layer: "getcwd" } }\n')
    with pytest.raises(ProtonetError, match="module 'os' has no class 'getcwd'"):
        Net(str(path), phase="TEST")


def test_binaryproto_with_negative_dims_whose_product_matches_is_a_protonet_error(tmp_path):
    # shape (-1, -2) "needs" 2 values; numpy's reshape then raised ValueError.
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend([-1, -2])
    proto.data.extend([1.0, 2.0])
    path = tmp_path / "negative.binaryproto"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ProtonetError, match="negative dimension"):
        read_blobproto(path)


def test_binaryproto_with_an_overflowing_shape_is_a_protonet_error(tmp_path):
    # np.prod wraps around in int64: 2**32 × 2**32 "needs" 0 values.
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend([2**32, 2**32])
    path = tmp_path / "overflow.binaryproto"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ProtonetError, match="needs 18446744073709551616 values"):
        read_blobproto(path)


def test_blob_larger_than_memory_fails_before_allocating(monkeypatch):
    # A prototxt asking for an 8 GB conv output got a lazily mapped np.zeros, and the OOM killer
    # took the process when a layer touched it. Now the size is checked first.
    monkeypatch.setattr(blob_module, "_MEMORY_LIMIT", 1 << 30)
    with pytest.raises(ProtonetError, match="more than this machine's 1 GB of memory"):
        Blob(1, (1 << 28) + 1, 1, 1)   # 4 bytes over 1 GB
    assert Blob(4, 4).data.sum() == 0


def test_gaussian_filler_with_negative_std_is_a_protonet_error(tmp_path):
    path = tmp_path / "std.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" '
                    'input_param { shape { dim: 2 dim: 3 } } }\n'
                    'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                    'inner_product_param { num_output: 2 '
                    'weight_filler { type: "gaussian" std: -1 } } }\n')
    with pytest.raises(ProtonetError, match="std"):
        Net(str(path), phase="TEST")


def test_solverstate_with_non_utf8_learned_net_is_a_protonet_error(tmp_path):
    from protonet.solvers import snapshot as snap

    path = tmp_path / "bad.solverstate"
    path.write_bytes(_field(2, b"w\xff.caffemodel"))   # learned_net: <not UTF-8>
    with pytest.raises(ProtonetError, match="not UTF-8"):
        snap.read_state(str(path))


def test_forged_blob_shapes_in_a_caffemodel_do_not_allocate(tmp_path):
    # A weights file claiming a 2**40-element blob is rejected by its value count, not by
    # trying to allocate it.
    net_param = caffe_pb2.NetParameter()
    layer = net_param.layer.add(name="ip", type="InnerProduct")
    forged = layer.blobs.add()
    forged.shape.dim.extend([2**20, 2**20])
    forged.data.extend(np.zeros(12, np.float32))
    layer.blobs.add().shape.dim.append(4)
    path = tmp_path / "forged.caffemodel"
    path.write_bytes(net_param.SerializeToString())
    with pytest.raises(ProtonetError, match="shape mismatch"):
        _plain_net(tmp_path).copy_from(str(path))
    with pytest.raises(ProtonetError, match="needs 1099511627776 values"):
        Net(read_net(str(path)), phase="TEST")


def test_blob_shape_whose_count_overflows_int64_is_a_protonet_error():
    # np.prod wrapped (4, 2**63 - 1, 6, 6) around to a small count; reshape raised ValueError.
    with pytest.raises(ProtonetError, match="more than the limit"):
        Blob(4, 2**63 - 1, 6, 6)


def test_hdf5_weights_of_a_net_with_duplicate_layer_names_is_a_protonet_error(tmp_path):
    # h5py raised ValueError "name already exists" for the second /data/<name> group.
    path = tmp_path / "dup.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" '
                    'input_param { shape { dim: 2 dim: 3 } } }\n'
                    'layer { name: "twice" type: "InnerProduct" bottom: "x" top: "y" '
                    'inner_product_param { num_output: 2 } }\n'
                    'layer { name: "twice" type: "ReLU" bottom: "y" top: "y" }\n')
    net = Net(str(path), phase="TEST")
    with pytest.raises(ProtonetError, match="two layers are named 'twice'"):
        net.save(str(tmp_path / "dup.caffemodel.h5"))
    assert not list(tmp_path.glob("dup.caffemodel.h5*"))
    net.save(str(tmp_path / "dup.caffemodel"))   # the binary format has no such limit


def test_adam_with_momentum_one_is_a_protonet_error(tmp_path):
    from protonet.solvers import get_solver

    (tmp_path / "net.prototxt").write_text(fuzzkit.TINY_NET)
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\n'
                           'lr_policy: "fixed"\ntype: "Adam"\nmomentum: 1\nmax_iter: 1\n')
    with pytest.raises(ProtonetError, match="momentum"):
        get_solver(str(solver_path)).step(1)


def test_convolution_over_zero_channels_is_a_protonet_error(tmp_path):
    # An Input with 0 channels built a (32, 0, 5, 5) weight; forward's reshape raised ValueError.
    path = tmp_path / "zero.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "x" '
                    'input_param { shape { dim: 1 dim: 0 dim: 8 dim: 8 } } }\n'
                    'layer { name: "conv" type: "Convolution" bottom: "x" top: "y" '
                    'convolution_param { num_output: 4 kernel_size: 3 } }\n')
    with pytest.raises(ProtonetError, match="0 channels; it needs at least one"):
        Net(str(path), phase="TEST")
