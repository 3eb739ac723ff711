"""`make fuzz`: mutate every kind of file protonet reads, 10,000 cases per kind, and count.

    python tools/fuzz.py [--cases 10000] [--kinds prototxt,solver,...] [--jobs 2]
                         [--timeout 60] [--out fuzz-findings]

Each kind runs in worker processes (``--worker``) supervised by this one, so a segfault or a
hang is caught and counted instead of ending the run: the supervisor notes the case, restarts
the worker after it and goes on. A worker caps its address space (a forged allocation is then
a MemoryError, reported, rather than the machine's OOM killer). Case N of a kind is always the
same mutation (``fuzzkit.case_ops``), so a finding is replayed with

    python tools/fuzz.py --replay KIND:N

Prints, per kind: loaded / ProtonetError / other exception / crashed / hung, and the rate.
Exit status 1 if anything but loaded or ProtonetError happened (details under --out).
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.hardening import fuzzkit

BAD = ("other", "crash", "hang")


def run_worker(kind, start, stop):
    """Run cases start..stop-1 of ``kind``; one JSON line per case on stdout."""
    os.chdir(REPO)
    workspace = fuzzkit.Workspace()
    with fuzzkit.limited_address_space():
        for case in range(start, stop):
            seed_index, ops = fuzzkit.case_ops(case, kind)
            (outcome, detail), _ = workspace.run(kind, seed_index, ops)
            record = {"case": case, "outcome": outcome}
            if outcome == "other":
                record.update(detail=detail, seed=seed_index, ops=ops)
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
    workspace.close()


class KindRun:
    """Supervises the workers of one kind and keeps its counts."""

    def __init__(self, kind, cases, timeout, out_dir):
        self.kind, self.cases, self.timeout, self.out_dir = kind, cases, timeout, out_dir
        self.counts = collections.Counter()
        self.seconds = 0.0

    def _finding(self, case, outcome, text):
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, f"{self.kind}-{case}-{outcome}.txt")
        with open(path, "w") as f:
            f.write(f"replay: python tools/fuzz.py --replay {self.kind}:{case}\n\n{text}\n")

    def run(self):
        started = time.monotonic()
        next_case = 0
        while next_case < self.cases:
            next_case = self._one_worker(next_case)
        self.seconds = time.monotonic() - started

    def _one_worker(self, start):
        """Run a worker from ``start``; return the next case to run."""
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", self.kind, "--start",
             str(start), "--stop", str(self.cases)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        expected = start
        stderr_tail = collections.deque(maxlen=200)
        threading.Thread(target=lambda: [stderr_tail.append(line) for line in proc.stderr],
                         daemon=True).start()
        last = [time.monotonic()]
        hung = threading.Event()

        def watchdog():
            while proc.poll() is None:
                if time.monotonic() - last[0] > self.timeout:
                    hung.set()
                    proc.kill()
                    return
                time.sleep(1)

        threading.Thread(target=watchdog, daemon=True).start()
        for line in proc.stdout:
            record = json.loads(line)
            last[0] = time.monotonic()
            self.counts[record["outcome"]] += 1
            if record["outcome"] == "other":
                self._finding(record["case"], "other",
                              f"seed {record['seed']} ops {record['ops']}\n{record['detail']}")
            expected = record["case"] + 1
        proc.wait()
        if expected >= self.cases and proc.returncode == 0:
            return expected
        outcome = "hang" if hung.is_set() else "crash"
        self.counts[outcome] += 1
        self._finding(expected, outcome, f"worker exit status {proc.returncode}\n"
                      + "".join(stderr_tail))
        return expected + 1


def report(runs):
    print(f"{'kind':<12} {'cases':>7} {'loaded':>7} {'ProtonetError':>14} {'other':>6} "
          f"{'crash':>6} {'hang':>5} {'cases/s':>8}")
    for run in runs:
        c = run.counts
        total = sum(c.values())
        rate = total / run.seconds if run.seconds else 0.0
        print(f"{run.kind:<12} {total:>7} {c['loaded']:>7} {c['error']:>14} {c['other']:>6} "
              f"{c['crash']:>6} {c['hang']:>5} {rate:>8.1f}")
    bad = sum(run.counts[k] for run in runs for k in BAD)
    print(f"total: {sum(sum(r.counts.values()) for r in runs)} cases, {bad} not loaded and "
          f"not a ProtonetError")
    return bad


def replay(spec):
    kind, case = spec.split(":")
    seed_index, ops = fuzzkit.case_ops(int(case), kind)
    print(f"{kind} case {case}: seed {seed_index}, ops {ops}")
    with fuzzkit.limited_address_space():
        (outcome, detail), _ = fuzzkit.replay(kind, seed_index, ops)
    print(outcome)
    print(detail or "")
    return 1 if outcome == "other" else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int,
                        default=int(os.environ.get("PROTONET_FUZZ_CASES", "10000")))
    parser.add_argument("--kinds", default=",".join(fuzzkit.KINDS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds without progress before a worker counts as hung")
    parser.add_argument("--out", default="fuzz-findings")
    parser.add_argument("--replay", metavar="KIND:N")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.start, args.stop)
        return 0
    if args.replay:
        return replay(args.replay)
    runs = [KindRun(kind, args.cases, args.timeout, args.out) for kind in args.kinds.split(",")]
    pending = list(runs)
    lock = threading.Lock()

    def drain():
        while True:
            with lock:
                if not pending:
                    return
                run = pending.pop(0)
            run.run()
            print(f"{run.kind}: done, {dict(run.counts)} in {run.seconds:.0f} s", flush=True)

    threads = [threading.Thread(target=drain) for _ in range(max(args.jobs, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 1 if report(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
