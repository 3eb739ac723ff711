"""Training killed with SIGKILL at random points never leaves a corrupt snapshot behind.

One workspace, many cycles: start ``protonet train`` (resuming from the latest complete
snapshot, as a user would after a crash), let it run until a random point — while a snapshot
file is being written (a new temporary file has appeared), at a random moment of a snapshot,
or at a random time after start — and SIGKILL it. After every kill, every file under a snapshot's final name must be complete and
loadable: the weights copy into the net, the solver state reads and names existing weights, the
.pnstate sidecar parses. The next cycle must resume from the latest one. Temporary files (``*.tmp``)
that a killed write leaves behind are counted, and must never carry a final name.

``PROTONET_KILLS`` sets the number of kills (CI default 20; ``make fuzz`` runs 100).
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from protonet.errors import ProtonetError
from protonet.net import Net
from protonet.solvers import snapshot as snap

REPO = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("PROTONET_KILLS", "20"))

# Big enough that a snapshot takes a while to write (1 MB of weights, 2 MB of Adam history).
NET = """name: "killme"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 512 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 512 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
type: "Adam"
max_iter: 1000000
display: 1
snapshot: 1
snapshot_prefix: "snap/killme"
random_seed: 1
"""

FINAL_NAME = re.compile(r"^killme_iter_(\d+)\.(caffemodel|solverstate|solverstate\.pnstate)$")


def _train(workspace, resume):
    argv = [sys.executable, "-m", "protonet", "train", "--solver", "solver.prototxt"]
    if resume:
        argv += ["--snapshot", resume]
    env = dict(os.environ, PYTHONPATH=str(REPO), PROTONET_LOG_LEVEL="INFO")
    return subprocess.Popen(argv, cwd=workspace, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)


def _new_temp(snap_dir, before):
    return any(name.endswith(".tmp") and name not in before for name in os.listdir(snap_dir))


def _kill_at_random(proc, rnd, timing, snap_dir):
    """SIGKILL ``proc`` at a random point, one of three ways, chosen at random:

    - "in a write" (40%): after the chosen "Snapshotting" line, as soon as a new temporary file
      shows up in the snapshot directory (a write is under way);
    - "in a snapshot" (40%): a uniform random time within a snapshot's duration after the chosen
      "Snapshotting" line (``timing["snapshot"]``, measured from the log of earlier runs);
    - "any time" (20%): a random time after start.
    """
    lines = []
    wait_for = rnd.randint(1, 4)
    mode = rnd.choices(("write", "snapshot", "any"), weights=(2, 2, 1))[0]
    seen = threading.Event()
    before = set(os.listdir(snap_dir))

    def read():
        count, started = 0, None
        for line in proc.stderr:
            lines.append(line)
            if "Snapshotting to" in line:
                started = time.monotonic()
            elif "Iteration" in line and started is not None:
                timing["snapshot"] = 0.5 * timing["snapshot"] + 0.5 * (time.monotonic() - started)
                started = None
            if "Snapshotting" in line:
                count += 1
                if count >= wait_for:
                    seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if mode == "any":
        time.sleep(rnd.uniform(0.5, 8.0))
    else:
        seen.wait(timeout=300)
        if mode == "snapshot":
            time.sleep(rnd.uniform(0.0, 1.2 * timing["snapshot"]))
        else:
            deadline = time.monotonic() + 2.0
            while not _new_temp(snap_dir, before) and time.monotonic() < deadline:
                time.sleep(0.0005)
    exited_by_itself = proc.poll() is not None
    if not exited_by_itself:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    return exited_by_itself, "".join(lines)


class Checker:
    def __init__(self, workspace):
        self.workspace = workspace
        self.snap_dir = workspace / "snap"
        self.net = Net(str(workspace / "net.prototxt"), phase="TEST")
        self.verified = set()

    def check(self):
        """Load every snapshot file present; return (latest complete state, corrupt, temps)."""
        corrupt, temps, complete = [], [], []
        for path in sorted(self.snap_dir.iterdir()):
            if path.name.endswith(".tmp"):
                temps.append(path.name)
                continue
            match = FINAL_NAME.match(path.name)
            assert match, f"unexpected file {path.name}"
            try:
                self._load(path, match.group(2))
            except (ProtonetError, ValueError, OSError) as err:
                corrupt.append(f"{path.name}: {err}")
                continue
            if match.group(2) == "solverstate":
                complete.append((int(match.group(1)), path))
        latest = max(complete)[1] if complete else None
        return latest, corrupt, temps

    def _load(self, path, kind):
        stat = path.stat()
        key = (path.name, stat.st_size, stat.st_mtime_ns)
        if key in self.verified:
            return
        if kind == "caffemodel":
            self.net.copy_from(str(path))
        elif kind == "solverstate":
            state = snap.read_state(str(path))
            if not (self.workspace / state.learned_net).is_file():
                raise ProtonetError(f"names missing weights {state.learned_net}")
            if len(state.history) != 2 * len(self.net.learnable_params):
                raise ProtonetError(f"{len(state.history)} history blobs")
        else:
            payload = json.loads(path.read_text())
            if "solverstate_sha256" not in payload:
                raise ProtonetError("sidecar without its fingerprint")
        self.verified.add(key)

    def prune(self, keep):
        """Delete snapshots older than the ``keep`` newest (they were checked already)."""
        iters = sorted({int(m.group(1)) for p in self.snap_dir.iterdir()
                        if (m := FINAL_NAME.match(p.name))})
        for old in iters[:-keep]:
            for p in self.snap_dir.glob(f"killme_iter_{old}.*"):
                if FINAL_NAME.match(p.name):
                    p.unlink()


@pytest.mark.slow
def test_sigkill_at_random_points_never_corrupts_a_snapshot(tmp_path):
    (tmp_path / "snap").mkdir()
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    rnd = random.Random(int(os.environ.get("PROTONET_KILL_SEED", "12345")))
    checker = Checker(tmp_path)
    latest, resumed, corrupt_total, mid_write = None, 0, [], 0
    temps_before = set()
    timing = {"snapshot": 0.3}
    for _ in range(KILLS):
        proc = _train(tmp_path, str(latest.relative_to(tmp_path)) if latest else None)
        exited, log = _kill_at_random(proc, rnd, timing, tmp_path / "snap")
        assert not exited, f"training stopped by itself (status {proc.returncode}):\n{log[-3000:]}"
        if latest is not None and "Iteration" in log:   # it got past start-up and restore
            assert f"Restoring previous solver status from {latest.relative_to(tmp_path)}" in log
            resumed += 1
        latest_now, corrupt, temps = checker.check()
        corrupt_total += corrupt
        new_temps = set(temps) - temps_before
        mid_write += bool(new_temps)
        temps_before = set(temps)
        latest = latest_now or latest
        checker.prune(keep=2)
        last_line = log.strip().splitlines()[-1][-70:] if log.strip() else "(no output yet)"
        print(f"kill: {len(new_temps)} new .tmp, latest {latest and latest.name}; {last_line}")
    # The last complete snapshot resumes and finishes a few more iterations cleanly.
    last_iter = int(FINAL_NAME.match(latest.name).group(1))
    finish = subprocess.run(
        [sys.executable, "-m", "protonet", "train", "--solver", "solver.prototxt",
         "--snapshot", str(latest.relative_to(tmp_path)), "--iterations", str(last_iter + 2)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert (tmp_path / "snap" / f"killme_iter_{last_iter + 2}.solverstate").is_file()
    print(f"\nkilled {KILLS} runs ({mid_write} while writing a snapshot: a new .tmp left), "
          f"{resumed} resumed from the latest snapshot, {len(corrupt_total)} corrupt files, "
          f"{len(temps_before)} stale .tmp files left, last iteration {last_iter}")
    assert corrupt_total == [], corrupt_total
    assert mid_write > 0, "no kill landed in a snapshot write; the test did not test that"
    assert resumed > 0, "no run got far enough to resume; the test did not test that"
