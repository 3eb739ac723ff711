"""A tiny, fast training setup for the solver tests: a Python data layer and small nets.

``ShuffledData`` serves a fixed synthetic data set in batches and reshuffles (with protonet's
global RNG) at every wrap; it implements the optional data-position interface
(``get_position()`` / ``set_position(position)``) that protonet snapshots record.
"""

from pathlib import Path

import numpy as np

from protonet.layers import Layer
from protonet.rng import get_rng


class ShuffledData(Layer):
    """param_str "N,D,B": N samples of D features, batches of B, labels 0..2."""

    exact_bottoms = 0
    exact_tops = 2

    def setup(self, bottoms, tops):
        n, dim, batch = (int(v) for v in self.param_str.split(","))
        source = np.random.default_rng(7)
        self.x = source.standard_normal((n, dim)).astype(np.float32)
        self.y = (np.arange(n) % 3).astype(np.float32)
        self.x[:, 0] += self.y          # something to learn
        self.batch = batch
        self.order = list(range(n))
        self.cursor = 0

    def reshape(self, bottoms, tops):
        tops[0].reshape((self.batch, self.x.shape[1]))
        tops[1].reshape((self.batch,))

    def forward(self, bottoms, tops):
        for i in range(self.batch):
            if self.cursor == len(self.order):
                self.cursor = 0
                self.order = [int(k) for k in get_rng().permutation(len(self.order))]
            row = self.order[self.cursor]
            tops[0].data[i] = self.x[row]
            tops[1].data[i] = self.y[row]
            self.cursor += 1

    def get_position(self):
        return {"cursor": self.cursor, "order": self.order}

    def set_position(self, position):
        self.cursor = int(position["cursor"])
        self.order = [int(k) for k in position["order"]]


NET = """name: "tiny"
layer { name: "data" type: "Python" top: "data" top: "label"
  python_param { module: "tests.solvers.nets" layer: "ShuffledData" param_str: "20,6,4" } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc"
  include { phase: TEST } }
"""

SOLVER = {
    "net": '"net.prototxt"',
    "test_iter": "2",
    "test_interval": "4",
    "base_lr": "0.05",
    "lr_policy": '"step"',
    "gamma": "0.5",
    "stepsize": "3",
    "momentum": "0.9",
    "weight_decay": "0.001",
    "type": '"Adam"',
    "max_iter": "8",
    "display": "2",
    "snapshot": "4",
    "snapshot_prefix": '"snap/tiny"',
    "random_seed": "5",
}


def write_workspace(directory, net_text=NET, **fields):
    """Write net.prototxt, solver.prototxt and a snap/ folder into ``directory``.

    ``fields`` override or add solver fields (values in prototxt syntax; None removes one).
    Returns the solver path.
    """
    directory = Path(directory)
    (directory / "snap").mkdir(exist_ok=True)
    (directory / "net.prototxt").write_text(net_text)
    solver = dict(SOLVER)
    solver.update(fields)
    text = "".join(f"{key}: {value}\n" for key, value in solver.items() if value is not None)
    path = directory / "solver.prototxt"
    path.write_text(text)
    return path
