"""Run one case of ../shared/conformance/layers against protonet, as its README prescribes.

Procedure: build → set params → set inputs → forward → compare tops (and params after forward)
→ zero param diffs → set top diffs → backward → compare bottom diffs and param diffs.
"""

import json
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from protonet.blob import Blob
from protonet.layers import get_layer_class
from protonet.proto import caffe_pb2

from .tolerances import LAYER_RTOL, conformance_atol

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LAYER_CASES = SHARED / "conformance" / "layers"
INPUT_TYPES = ("Input", "Parameter")


def layer_case_names():
    return sorted(p.name for p in LAYER_CASES.iterdir() if p.is_dir()) if LAYER_CASES.is_dir() else []


def assert_close(ours, ref, what):
    np.testing.assert_allclose(ours, ref, rtol=LAYER_RTOL, atol=conformance_atol(ref),
                               err_msg=what)


def _blob(array):
    blob = Blob(array.shape)
    blob.data[...] = array
    return blob


def run_layer_case(case_dir):
    """Run the case in ``case_dir`` through the layer alone; raise AssertionError on mismatch."""
    case_dir = Path(case_dir)
    meta = json.loads((case_dir / "meta.json").read_text())
    data = np.load(case_dir / "data.npz")
    net = text_format.Parse((case_dir / "net.prototxt").read_text(), caffe_pb2.NetParameter())
    phase = caffe_pb2.Phase.Value(meta["phase"])
    tested = [lp for lp in net.layer if lp.type not in INPUT_TYPES]
    assert len(tested) == 1, f"{case_dir.name}: expected one layer under test"
    param = tested[0]
    param.phase = phase
    param_blobs = []
    i = 0
    while f"param/{param.name}/{i}" in data:
        param_blobs.append(_blob(data[f"param/{param.name}/{i}"]))
        i += 1
    layer = get_layer_class(param.type)(param, phase, blobs=param_blobs)
    bottoms = [_blob(data[f"bottom/{name}"]) for name in param.bottom]
    tops = [Blob() for _ in param.top]
    layer.layer_setup(bottoms, tops)
    for blob, name in zip(bottoms, param.bottom):
        blob.data[...] = data[f"bottom/{name}"]
    layer.layer_forward(bottoms, tops)
    for blob, name in zip(tops, param.top):
        if f"top/{name}" in data:
            assert_close(blob.data, data[f"top/{name}"], f"{case_dir.name}: top {name}")
    for j, blob in enumerate(layer.blobs):
        key = f"param_after/{param.name}/{j}"
        if key in data:
            assert_close(blob.data, data[key], f"{case_dir.name}: {key}")
    if meta.get("forward_only"):
        return
    for blob in layer.blobs:
        blob.diff[...] = 0
    for blob, name in zip(tops, param.top):
        key = f"top_diff/{name}"
        blob.diff[...] = data[key] if key in data else 0
    propagate = [name in meta["diff_bottoms"] for name in param.bottom]
    layer.backward(tops, propagate, bottoms)
    for blob, name in zip(bottoms, param.bottom):
        key = f"bottom_diff/{name}"
        if name in meta["diff_bottoms"] and key in data:
            assert_close(blob.diff, data[key], f"{case_dir.name}: {key}")
    for j, blob in enumerate(layer.blobs):
        key = f"param_diff/{param.name}/{j}"
        if key in data:
            assert_close(blob.diff, data[key], f"{case_dir.name}: {key}")
