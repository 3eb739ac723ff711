"""Every net under ../shared/caffe-era-models builds exactly as BVLC Caffe built it.

CAFFE_SHAPES.json records, per file and phase, Caffe's layer list (with its Split layers),
every blob's shape, every param's shape, the inputs and the outputs — or the message Caffe died
with. Where Caffe built the net, protonet must build the same; where Caffe failed (a missing
data source, a layer its build lacked), protonet must fail with a ProtonetError, not a crash.
"""

import json
from pathlib import Path

import pytest

from protonet.errors import ProtonetError
from protonet.net import Net

MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "caffe-era-models"
SHAPES = MODELS / "CAFFE_SHAPES.json"
CASES = []
if SHAPES.is_file():
    for file_name, phases in sorted(json.loads(SHAPES.read_text()).items()):
        for phase, expected in sorted(phases.items()):
            CASES.append((file_name, phase, expected))


def case_id(case):
    return f"{case[0]}:{case[1]}"


@pytest.mark.skipif(not CASES, reason="../shared/caffe-era-models is not beside the checkout")
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_net_builds_like_caffe(case, monkeypatch):
    file_name, phase, expected = case
    monkeypatch.chdir(MODELS)
    if "caffe_fails" in expected:
        with pytest.raises(ProtonetError):
            Net(file_name, phase)
        return
    net = Net(file_name, phase)
    assert [[r.param.name, r.layer.type] for r in net.records] == expected["layers"]
    assert {name: list(blob.shape) for name, blob in net.blobs.items()} == expected["blobs"]
    assert {name: [list(b.shape) for b in blobs] for name, blobs in net.params.items()} == \
        expected["params"]
    assert net.inputs == expected["inputs"]
    assert net.outputs == expected["outputs"]
