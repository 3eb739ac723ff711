"""A full disk or a read-only directory: a one-line error, the previous snapshot kept.

The snapshot directory is a small tmpfs that the test mounts (root only; skipped with the
reason otherwise): sized so that one snapshot fits and the second does not, or remounted
read-only after the first snapshot.
"""

import os
import subprocess
from pathlib import Path

import pytest

from protonet.cli import main
from protonet.errors import ProtonetError
from protonet.net import Net
from protonet.solvers import get_solver
from protonet.solvers import snapshot as snap

from .test_killed_runs import NET

# The NET of the kill test: a snapshot is ~1.06 MB of weights + ~2.12 MB of Adam history.
ONE_SNAPSHOT_FITS = "4m"

SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
type: "Adam"
max_iter: {max_iter}
display: 1
snapshot: 1
snapshot_prefix: "snap/disk"
snapshot_format: {fmt}
random_seed: 1
"""


def _can_mount():
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def small_fs(tmp_path):
    """``mount(size)`` mounts a tmpfs of that size at tmp_path/snap; ``remount_ro()`` too."""
    if not _can_mount():
        pytest.skip("mounting a size-limited tmpfs needs root (the test makes its own file "
                    "system; chmod cannot make a directory read-only for root)")
    target = tmp_path / "snap"
    target.mkdir()
    mounted = []

    class SmallFs:
        path = target

        def mount(self, size):
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                     str(target)], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
            mounted.append(target)

        def remount_ro(self):
            subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)

    yield SmallFs()
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _workspace(tmp_path, monkeypatch, max_iter=3, fmt="BINARYPROTO"):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(max_iter=max_iter, fmt=fmt))
    monkeypatch.chdir(tmp_path)
    return "solver.prototxt"


def _assert_snapshot_loads(tmp_path, iteration, ext=("caffemodel", "solverstate")):
    model, state = (tmp_path / "snap" / f"disk_iter_{iteration}.{e}" for e in ext)
    Net(str(tmp_path / "net.prototxt"), phase="TEST").copy_from(str(model))
    assert snap.read_state(str(state)).iter == iteration


def _leftover_temps(tmp_path):
    return [p.name for p in (tmp_path / "snap").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("fmt, ext", [("BINARYPROTO", ("caffemodel", "solverstate")),
                                      ("HDF5", ("caffemodel.h5", "solverstate.h5"))])
def test_full_disk_stops_training_with_one_line_and_keeps_the_last_snapshot(
        tmp_path, monkeypatch, capsys, small_fs, fmt, ext):
    small_fs.mount(ONE_SNAPSHOT_FITS)
    solver = _workspace(tmp_path, monkeypatch, fmt=fmt)
    assert main(["train", "--solver", solver]) == 1
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("protonet: error")]
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert "disk_iter_2" in err[0]
    _assert_snapshot_loads(tmp_path, 1, ext)
    assert _leftover_temps(tmp_path) == []


def test_read_only_snapshot_directory_fails_at_start_with_one_line(tmp_path, monkeypatch,
                                                                   capsys, small_fs):
    small_fs.mount("8m")
    small_fs.remount_ro()
    solver = _workspace(tmp_path, monkeypatch)
    assert main(["train", "--solver", solver]) == 1
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("protonet: error")]
    assert len(err) == 1 and "Cannot write to snapshot prefix 'snap/disk'" in err[0], err


def test_directory_turning_read_only_mid_run_keeps_the_previous_snapshot(tmp_path, monkeypatch,
                                                                         small_fs):
    small_fs.mount("8m")
    solver = get_solver(_workspace(tmp_path, monkeypatch, max_iter=5))
    solver.step(1)                      # snapshot at iteration 1
    _assert_snapshot_loads(tmp_path, 1)
    small_fs.remount_ro()
    with pytest.raises(ProtonetError, match="Read-only file system") as info:
        solver.step(1)
    assert "disk_iter_2" in str(info.value)
    _assert_snapshot_loads(tmp_path, 1)
    assert sorted(p.name for p in Path("snap").iterdir()) == [
        "disk_iter_1.caffemodel", "disk_iter_1.solverstate", "disk_iter_1.solverstate.pnstate"]



def test_full_disk_with_snapshot_failure_keep_trains_to_the_end(tmp_path, monkeypatch, capsys,
                                                                small_fs):
    small_fs.mount(ONE_SNAPSHOT_FITS)
    solver = _workspace(tmp_path, monkeypatch, max_iter=4)
    assert main(["train", "--solver", solver, "--snapshot_failure", "keep"]) == 0
    err = capsys.readouterr().err
    assert "Optimization Done." in err
    assert "No space left on device" in err          # logged as a warning per failed snapshot
    _assert_snapshot_loads(tmp_path, 1)
    assert _leftover_temps(tmp_path) == []
