"""A Python data layer for the distributed tests: a fixed data set read as a sharded stream.

``param_str`` is JSON: ``n`` samples of ``dim`` features, batches of ``batch``, ``shuffle``
(reshuffle with protonet's global RNG at every wrap, as the solver tests' ShuffledData), and an
optional ``fault`` {"rank": r, "iter": k, "kind": "kill" | "hang" | "error"} that rank r
commits at its k-th forward (TRAIN phase only), to test how the other ranks stop.

It implements the sharding contract of :mod:`protonet.distributed`: ``set_shard(rank, size)``;
each forward skips rank·batch items of the stream, reads batch items, skips (size−1−rank)·batch.
``get_position()`` is the position of the next *global* batch, the same on every rank.
"""

import json
import os
import signal
import time

import numpy as np

from protonet.distributed import shard_skips
from protonet.errors import ProtonetError
from protonet.layers import Layer
from protonet.rng import get_rng


class ShardedArrayData(Layer):
    exact_bottoms = 0
    exact_tops = 2

    def setup(self, bottoms, tops):
        spec = json.loads(self.param_str)
        n, dim = spec["n"], spec["dim"]
        source = np.random.default_rng(11)
        self.x = source.standard_normal((n, dim)).astype(np.float32)
        self.y = (np.arange(n) % 3).astype(np.float32)
        self.x[:, 0] += self.y
        self.batch = spec["batch"]
        self.shuffle = spec.get("shuffle", False)
        self.fault = spec.get("fault")
        self.order = list(range(n))
        self.cursor = 0
        self.rank, self.size = 0, 1
        self.forwards = 0

    def set_shard(self, rank, size):
        self.rank, self.size = rank, size

    def reshape(self, bottoms, tops):
        tops[0].reshape((self.batch, self.x.shape[1]))
        tops[1].reshape((self.batch,))

    def _take(self):
        if self.cursor == len(self.order):
            self.cursor = 0
            if self.shuffle:
                self.order = [int(k) for k in get_rng().permutation(len(self.order))]
        row = self.order[self.cursor]
        self.cursor += 1
        return row

    def forward(self, bottoms, tops):
        self._commit_fault()
        before, after = shard_skips(self.rank, self.size, self.batch)
        for _ in range(before):
            self._take()
        for i in range(self.batch):
            row = self._take()
            tops[0].data[i] = self.x[row]
            tops[1].data[i] = self.y[row]
        for _ in range(after):
            self._take()

    def _commit_fault(self):
        self.forwards += 1
        fault = self.fault
        if not fault or self.phase != 0 or self.rank != fault["rank"] or \
                self.forwards != fault["iter"]:
            return
        if fault["kind"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault["kind"] == "hang":
            time.sleep(3600)
        else:
            raise ProtonetError("injected data error", layer=self.name, layer_type="Python")

    def get_position(self):
        return {"cursor": self.cursor, "order": self.order}

    def set_position(self, position):
        self.cursor = int(position["cursor"])
        self.order = [int(k) for k in position["order"]]
