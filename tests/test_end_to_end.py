"""The README's main job: train LeNet on the bundled MNIST digits, then score the snapshot.

Needs the data that `make data` prepares (data/mnist); CI runs that first. A run takes about
a minute and a half on two quiet cores, so it is marked slow.
"""

import re
from pathlib import Path

import pytest

from protonet import commands
from protonet.cli import main

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "data" / "mnist"
TARGET_ACCURACY = 0.96  # issue target on the 1,000 held-back digits


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST / "mnist_train_lmdb").is_dir(),
                    reason="run `make data` first to prepare the bundled MNIST digits")
def test_lenet_trains_to_target_and_test_reproduces_the_final_score(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(ROOT)
    solver_text = (ROOT / "models/lenet/lenet_solver.prototxt").read_text()
    prefix = tmp_path / "lenet"
    solver_text = re.sub(r'snapshot_prefix: ".*"', f'snapshot_prefix: "{prefix}"', solver_text)
    solver_file = tmp_path / "lenet_solver.prototxt"
    solver_file.write_text(solver_text + "\nrandom_seed: 1701\n")
    assert main(["train", "--solver", str(solver_file)]) == 0
    log = capsys.readouterr().err
    finals = re.findall(r"Test net output #0: accuracy = ([0-9.]+)", log)
    assert float(finals[-1]) >= TARGET_ACCURACY, log[-2000:]
    weights = Path(f"{prefix}_iter_1000.caffemodel")
    assert weights.is_file() and Path(f"{prefix}_iter_1000.solverstate").is_file()
    scored = commands.test_model("models/lenet/lenet_train_test.prototxt", str(weights),
                                 iterations=10)
    assert scored["outputs"]["accuracy"] == pytest.approx(float(finals[-1]), abs=1e-4)
