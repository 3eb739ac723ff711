"""The layers `make bench` times: which ones, at what shapes, and how they are run and counted.

Every case is a layer of a real Caffe-era model file. Its LayerParameter is read from that file
(after protonet's upgrade of legacy formats) and its bottom shapes come from protonet's own
shape inference: the model is built as a ``Net`` at batch 1, cut after the last layer we need,
and each bottom's batch axis is then set to the bench batch. The layer is the registered
protonet class, set up and run through ``layer_setup`` / ``layer_forward`` /
``layer_backward``, the calls ``Net`` makes, so the bench times protonet's code path.

Counting:
- Convolution and InnerProduct ("gemm" kind): forward FLOPs = 2·M·N·K summed over images and
  groups = 2 · top count · K, with K = weights count / num_output; backward = data gradient +
  weight gradient = 2 × forward (bias work is not counted).
- Memory-bound layers ("memory" kind): the compulsory traffic of the blobs the layer's contract
  reads or writes, each once (scratch buffers such as a pooling mask or an LRN scale are not
  counted): see ``TRAFFIC``.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "caffe-era-models"

GEMM_TYPES = ("Convolution", "InnerProduct")
# Blob traffic in units of (bottom count, top count) elements of float32:
# forward (bottom, top) and backward (bottom, top) coefficients.
TRAFFIC = {
    "Pooling": ((1, 1), (1, 1)),      # fwd: x, y; bwd: dy, dx
    "LRN": ((1, 1), (2, 2)),          # fwd: x, y; bwd: x, y, dy, dx
    "ReLU": ((1, 1), (1, 2)),         # fwd: x, y; bwd: y (or x), dy, dx
    "BatchNorm": ((1, 1), (1, 2)),    # fwd: x, y; bwd: y, dy, dx
    "Scale": ((1, 1), (1, 2)),        # fwd: x, y; bwd: x, dy, dx
    "Softmax": ((1, 1), (1, 2)),      # fwd: x, y; bwd: y, dy, dx
}


@dataclass(frozen=True)
class ModelSpec:
    """A model file and the layers of it we time; ``quick`` is the ``--quick`` subset."""

    key: str
    shared_path: str                  # under ../shared/caffe-era-models
    local_paths: tuple                # fallbacks under the repo's models/
    batch: int
    layers: tuple
    quick: tuple = ()


MODELS = (
    ModelSpec("lenet", "caffe/examples/mnist/lenet.prototxt",
              ("models/lenet/lenet.prototxt",), 64,
              ("conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"),
              ("conv1", "pool1", "conv2", "ip1", "relu1")),
    ModelSpec("cifar10_quick", "caffe/examples/cifar10/cifar10_quick.prototxt",
              ("models/cifar10_quick/cifar10_quick.prototxt",), 100,
              ("conv1", "pool1", "relu1", "conv2", "pool2", "conv3", "ip1"),
              ("conv2", "pool2")),
    ModelSpec("caffenet", "caffe/models/bvlc_reference_caffenet/deploy.prototxt",
              ("models/bvlc_reference_caffenet/deploy.prototxt",
               "models/caffenet/deploy.prototxt"), 16,
              ("conv1", "relu1", "pool1", "norm1", "conv2", "conv3", "conv4", "conv5", "fc6",
               "fc7", "prob"),
              ("conv3", "norm1", "fc7", "prob")),
    ModelSpec("vgg16", "vgg-caffe/model/VGG_ILSVRC_16_layers_deploy.prototxt",
              ("models/vgg16/VGG_ILSVRC_16_layers_deploy.prototxt",
               "models/vgg16/deploy.prototxt"), 8,
              ("conv1_1", "conv1_2", "relu1_2", "pool1", "conv2_2", "conv3_3", "conv4_3",
               "conv5_3")),
    ModelSpec("googlenet", "caffe/models/bvlc_googlenet/deploy.prototxt",
              ("models/bvlc_googlenet/deploy.prototxt", "models/googlenet/deploy.prototxt"), 16,
              ("conv2/3x3_reduce", "conv2/3x3", "conv2/norm2", "inception_3a/1x1",
               "inception_3a/3x3", "inception_3a/5x5", "inception_3a/pool",
               "inception_4a/5x5", "pool5/7x7_s1", "loss3/classifier")),
    ModelSpec("resnet50", "deep-residual-networks/prototxt/ResNet-50-deploy.prototxt",
              ("models/resnet50/ResNet-50-deploy.prototxt",
               "models/resnet/ResNet-50-deploy.prototxt"), 16,
              ("conv1", "bn_conv1", "scale_conv1", "conv1_relu", "pool1", "res2a_branch2a",
               "res2a_branch2b", "res2a_branch2c", "res3a_branch1", "res3a_branch2a",
               "res3a_branch2b", "res4a_branch2b", "res5a_branch2b", "pool5", "fc1000"),
              ("res2a_branch2a", "bn_conv1")),
)


@dataclass
class Case:
    """One layer to time: where it comes from, its LayerParameter and bottom shapes."""

    model: str
    param: object                     # caffe_pb2.LayerParameter
    bottom_shapes: list
    source: str

    @property
    def name(self):
        return f"{self.model}/{self.param.name}"

    @property
    def type(self):
        return self.param.type

    @property
    def kind(self):
        return "gemm" if self.type in GEMM_TYPES else "memory"


@dataclass
class Timing:
    """What one case measured; times in seconds."""

    top_shapes: list
    geometry: str
    first_fwd: float
    first_bwd: float
    fwd: list = field(default_factory=list)
    bwd: list = field(default_factory=list)
    fwd_work: float = 0.0             # FLOPs (gemm) or bytes (memory)
    bwd_work: float = 0.0


# ---- finding the model files and the layers' shapes ----------------------------------------

def model_path(spec):
    """The shared reference copy, else the first of the repo's models/ copies that exists."""
    candidates = [SHARED_MODELS / spec.shared_path] + [REPO / p for p in spec.local_paths]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"model file for {spec.key} not found; tried {tried}")


def _set_batch_one(net_param):
    for layer in net_param.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = 1


def load_cases(spec, names, batch):
    """Cases for layers ``names`` of ``spec``'s model at ``batch``, in the file's order."""
    from protonet.io.prototxt import read_net
    from protonet.net import Net
    from protonet.proto import caffe_pb2

    path = model_path(spec)
    net_param = read_net(str(path))
    _set_batch_one(net_param)
    positions = {layer.name: i for i, layer in enumerate(net_param.layer)}
    missing = [name for name in names if name not in positions]
    if missing:
        raise KeyError(f"{path}: no layer named {', '.join(missing)}")
    # Cut after the last layer we time: later layers (VGG's fc6 weights…) cost build time only.
    del net_param.layer[max(positions[name] for name in names) + 1:]
    net = Net(net_param, caffe_pb2.TEST)
    records = {record.param.name: record for record in net.records}
    cases = []
    for name in sorted(names, key=positions.get):
        record = records[name]
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(net_param.layer[positions[name]])
        shapes = [(batch,) + tuple(bottom.shape[1:]) for bottom in record.bottoms]
        cases.append(Case(spec.key, param, shapes, str(path)))
    return cases


def _matches(name, pattern):
    """Substring match; a leading ``^`` anchors at the start (``^lenet/`` excludes googlenet)."""
    return name.startswith(pattern[1:]) if pattern.startswith("^") else pattern in name


def select_cases(quick, filters, batch_override):
    """All cases of the run, model by model; ``filters`` keeps names matching any of them."""
    cases = []
    for spec in MODELS:
        names = spec.quick if quick else spec.layers
        if filters:
            names = tuple(n for n in names
                          if any(_matches(f"{spec.key}/{n}", f) for f in filters))
        if names:
            cases += load_cases(spec, names, batch_override or spec.batch)
    return cases


# ---- building and running one layer ----------------------------------------------------------

def _geometry(layer, param):
    """A short description of what shapes the work besides the blob shapes."""
    kind = param.type
    if kind == "Convolution":
        g = layer.geometry
        text = f"k{'x'.join(map(str, g.ksize))} s{g.stride[0]} p{g.pad[0]}"
        return text + (f" g{layer.group}" if layer.group > 1 else "")
    if kind == "Pooling":
        p = param.pooling_param
        method = caffe_pooling_name(p.pool)
        if p.global_pooling:
            return f"{method} global"
        k = p.kernel_size or p.kernel_h
        return f"{method} k{k} s{p.stride or p.stride_h or 1}"
    if kind == "LRN":
        return f"size {param.lrn_param.local_size}"
    if kind == "InnerProduct":
        return f"K {layer.k}"
    return ""


def caffe_pooling_name(value):
    from protonet.proto import caffe_pb2

    return caffe_pb2.PoolingParameter.PoolMethod.Name(value)


def build(case, rng):
    """Set the layer up on random bottoms; returns (layer, bottoms, tops).

    The layer runs in place when the model file runs it in place (ReLU, BatchNorm, Scale).
    BatchNorm is timed as in training (batch statistics): ``use_global_stats`` is cleared.
    """
    from protonet.blob import Blob
    from protonet.layers import get_layer_class
    from protonet.proto import caffe_pb2

    param = case.param
    param.phase = caffe_pb2.TRAIN
    if param.type == "BatchNorm":
        param.batch_norm_param.ClearField("use_global_stats")
    layer = get_layer_class(param.type)(param, caffe_pb2.TRAIN)
    bottoms = []
    for shape in case.bottom_shapes:
        blob = Blob(shape)
        blob.data[...] = rng.standard_normal(shape, dtype=np.float32)
        bottoms.append(blob)
    in_place = list(param.top) == list(param.bottom)
    tops = bottoms if in_place else [Blob() for _ in param.top]
    layer.layer_setup(bottoms, tops)
    for blob in layer.blobs:
        if param.type != "BatchNorm":            # BatchNorm's blobs are statistics
            blob.data[...] = 0.01 * rng.standard_normal(blob.shape, dtype=np.float32)
        blob.diff[...] = 0.0
    return layer, bottoms, tops, in_place


def _work(case, layer, bottoms, tops):
    """(forward, backward) FLOPs for gemm cases, bytes for memory cases."""
    if case.kind == "gemm":
        weights = layer.blobs[0]
        k = weights.count // layer.num_output
        flops = 2.0 * sum(top.count for top in tops) * k
        return flops, 2.0 * flops
    bottom_count = sum(b.count for b in bottoms)
    top_count = sum(t.count for t in tops)
    (fb, ft), (bb, bt) = TRAFFIC[case.type]
    return 4.0 * (fb * bottom_count + ft * top_count), 4.0 * (bb * bottom_count + bt * top_count)


def _nothing():
    pass


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _repeat(fn, before, reps):
    """Time ``fn`` (not ``before``) until reps.min runs and reps.budget seconds, ≤ reps.max."""
    times = []
    while len(times) < reps.max and (len(times) < reps.min or sum(times) < reps.budget):
        before()
        times.append(_timed(fn))
    return times


@dataclass(frozen=True)
class Repeats:
    min: int
    max: int
    budget: float                     # seconds of timed calls per direction


def run_case(case, reps, seed=0):
    """Build the layer, time its first forward/backward, then the repeats; returns a Timing."""
    rng = np.random.default_rng(seed)
    layer, bottoms, tops, in_place = build(case, rng)
    x0 = [b.data.copy() for b in bottoms] if in_place else []
    dy0 = [0.1 * rng.standard_normal(t.shape, dtype=np.float32) for t in tops]
    propagate = [True] * len(bottoms)

    def restore_bottoms():              # in place, forward overwrote its own input
        for blob, x in zip(bottoms, x0):
            blob.data[...] = x

    def restore_top_diffs():            # in place, backward overwrote the top diff
        for blob, dy in zip(tops, dy0):
            blob.diff[...] = dy

    def forward():
        layer.layer_forward(bottoms, tops)

    def backward():
        layer.layer_backward(tops, propagate, bottoms)

    for blob in bottoms:
        blob.diff[...] = 0.0            # allocate and touch diffs outside the timed calls
    first_fwd = _timed(forward)
    restore_top_diffs()
    first_bwd = _timed(backward)
    fwd = _repeat(forward, restore_bottoms, reps)
    bwd = _repeat(backward, restore_top_diffs if in_place else _nothing, reps)
    fwd_work, bwd_work = _work(case, layer, bottoms, tops)
    return Timing([tuple(t.shape) for t in tops], _geometry(layer, case.param), first_fwd,
                  first_bwd, fwd, bwd, fwd_work, bwd_work)
