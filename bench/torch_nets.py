"""PyTorch twins of the benchmark nets, translated from the same NetParameter layer by layer.

PyTorch is an optional extra (``pip install torch==2.13.0``, a CPU build); nothing in protonet
imports this module. ``TorchNet(net_param, train)`` walks the layers of a (deploy or train)
NetParameter in file order, as protonet's ``Net`` does, and maps each to the PyTorch module a
PyTorch user would write for it:

    Convolution   nn.Conv2d (groups, dilation, bias_term)
    Pooling       nn.MaxPool2d / nn.AvgPool2d with ceil_mode=True (Caffe's output size: round
                  up, and drop a last window that would start in the padding; PyTorch's ceil
                  mode applies the same rule); global_pooling → adaptive average/max to 1×1
    LRN           nn.LocalResponseNorm (ACROSS_CHANNELS; Caffe's α/size and k are the same)
    InnerProduct  flatten from ``axis`` + nn.Linear
    ReLU          nn.ReLU (in place when the prototxt runs it in place)
    Dropout       nn.Dropout (in place likewise)
    Concat        torch.cat; Eltwise SUM / PROD / MAX
    BatchNorm     nn.BatchNorm2d; a Scale (bias_term) directly after it on the same blob is
                  folded in as BatchNorm2d's affine weight and bias, as PyTorch models are written
    Scale alone   a per-channel multiply (+ bias)
    Softmax       torch.softmax over the channel axis
    SoftmaxWithLoss  nn.CrossEntropyLoss (mean over the batch, Caffe's VALID normalization with
                  no ignore_label)
    Input / DummyData  nothing: the caller feeds the blobs by name

``forward(inputs)`` returns every blob by name, so the bench can check that each twin blob has
the protonet blob's shape.
"""

import torch
from torch import nn

_POOL_MAX, _POOL_AVE = 0, 1
_ELTWISE_PROD, _ELTWISE_SUM, _ELTWISE_MAX = 0, 1, 2


def _pair(values, h, w, default):
    """Caffe's repeated spatial field or its _h/_w form → (h, w)."""
    if h is not None:
        return int(h), int(w)
    values = [int(v) for v in values]
    if not values:
        return default, default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _hw(message, name):
    h, w = f"{name}_h", f"{name}_w"
    if message.HasField(h) or message.HasField(w):
        return getattr(message, h), getattr(message, w)
    return None, None


def _conv(layer, in_channels):
    p = layer.convolution_param
    kernel = _pair(p.kernel_size, *_hw(p, "kernel"), 0)
    stride = _pair(p.stride, *_hw(p, "stride"), 1)
    pad = _pair(p.pad, *_hw(p, "pad"), 0)
    dilation = _pair(p.dilation, None, None, 1)
    return nn.Conv2d(in_channels, int(p.num_output), kernel, stride, pad, dilation,
                     groups=int(p.group), bias=bool(p.bias_term))


def _pool(layer):
    p = layer.pooling_param
    if p.global_pooling:
        return (nn.AdaptiveMaxPool2d(1) if p.pool == _POOL_MAX else nn.AdaptiveAvgPool2d(1))
    kernel = _pair([p.kernel_size] if p.HasField("kernel_size") else [], *_hw(p, "kernel"), 0)
    stride = _pair([p.stride], *_hw(p, "stride"), 1)
    pad = _pair([p.pad], *_hw(p, "pad"), 0)
    ceil = p.round_mode == 0
    if p.pool == _POOL_MAX:
        return nn.MaxPool2d(kernel, stride, pad, ceil_mode=ceil)
    if p.pool == _POOL_AVE:
        return nn.AvgPool2d(kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)
    raise NotImplementedError(f"pooling method {p.pool} has no PyTorch twin")


class _Flatten(nn.Module):
    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return x.flatten(self.axis)


class _ChannelAffine(nn.Module):
    """Caffe's Scale over axis 1 with a learned per-channel scale (and bias)."""

    def __init__(self, channels, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x * self.weight.view(shape)
        return y + self.bias.view(shape) if self.bias is not None else y


class TorchNet(nn.Module):
    """The NetParameter's layers as PyTorch modules; ``input_shapes`` maps input blob → shape."""

    def __init__(self, net_param, input_shapes, train):
        super().__init__()
        self.train(train)
        self.steps = []            # (kind, module name or None, bottoms, tops, extra)
        self.loss_blob = None
        shapes = dict(input_shapes)
        layers = list(net_param.layer)
        skip = set()
        for index, layer in enumerate(layers):
            if index in skip or layer.type in ("Input", "DummyData", "Silence"):
                continue
            name = f"m{index}"
            bottoms, tops = list(layer.bottom), list(layer.top)
            module, kind, extra = self._module(layer, shapes, layers, index, skip)
            if module is not None:
                self.add_module(name, module)
            self.steps.append((kind, name if module is not None else None, bottoms, tops, extra))
            if kind == "loss":
                self.loss_blob = tops[0]
            shapes.update(self._shapes(kind, name, module, bottoms, tops, extra, shapes))

    def _module(self, layer, shapes, layers, index, skip):
        t = layer.type
        in_place = list(layer.top) == list(layer.bottom)
        channels = shapes[layer.bottom[0]][1] if layer.bottom else None
        if t == "Convolution":
            return _conv(layer, channels), "module", None
        if t == "Pooling":
            return _pool(layer), "module", None
        if t == "LRN":
            p = layer.lrn_param
            if p.norm_region != 0:
                raise NotImplementedError("WITHIN_CHANNEL LRN has no PyTorch twin")
            return nn.LocalResponseNorm(int(p.local_size), p.alpha, p.beta, p.k), "module", None
        if t == "InnerProduct":
            p = layer.inner_product_param
            shape = shapes[layer.bottom[0]]
            axis = int(p.axis) % len(shape)
            k = 1
            for d in shape[axis:]:
                k *= d
            linear = nn.Linear(k, int(p.num_output), bias=bool(p.bias_term))
            return nn.Sequential(_Flatten(axis), linear), "module", None
        if t == "ReLU":
            return nn.ReLU(inplace=in_place), "module", None
        if t == "Dropout":
            # Not in place: an in-place Dropout after an in-place ReLU overwrites the tensor
            # ReLU's backward reads (autograd refuses); PyTorch models use inplace=False here.
            return nn.Dropout(layer.dropout_param.dropout_ratio), "module", None
        if t == "BatchNorm":
            nxt = layers[index + 1] if index + 1 < len(layers) else None
            fold = (nxt is not None and nxt.type == "Scale" and list(nxt.bottom) == list(layer.top)
                    and len(nxt.bottom) == 1 and nxt.scale_param.bias_term)
            if fold:
                skip.add(index + 1)
            bn = nn.BatchNorm2d(channels, eps=layer.batch_norm_param.eps,
                                momentum=1 - layer.batch_norm_param.moving_average_fraction,
                                affine=fold)
            return bn, "module", None
        if t == "Scale":
            return _ChannelAffine(channels, layer.scale_param.bias_term), "module", None
        if t == "Concat":
            return None, "concat", int(layer.concat_param.axis)
        if t == "Eltwise":
            return None, "eltwise", int(layer.eltwise_param.operation)
        if t == "Softmax":
            return None, "softmax", int(layer.softmax_param.axis)
        if t == "SoftmaxWithLoss":
            return nn.CrossEntropyLoss(), "loss", None
        if t == "Split":
            return None, "split", None
        raise NotImplementedError(f"layer type {t} has no PyTorch twin in bench/torch_nets.py")

    def _shapes(self, kind, name, module, bottoms, tops, extra, shapes):
        """Top shapes by running the step on zeros (setup only; cheap at batch 1 or 2)."""
        with torch.no_grad():
            blobs = {b: torch.zeros(shapes[b]) for b in bottoms}
            if kind == "loss":
                blobs[bottoms[1]] = torch.zeros(shapes[bottoms[1]], dtype=torch.long)
            self._step(kind, getattr(self, name) if module is not None else None,
                       bottoms, tops, extra, blobs)
        return {t: tuple(blobs[t].shape) for t in tops}

    @staticmethod
    def _step(kind, module, bottoms, tops, extra, blobs):
        if kind == "module":
            blobs[tops[0]] = module(blobs[bottoms[0]])
        elif kind == "loss":
            blobs[tops[0]] = module(blobs[bottoms[0]], blobs[bottoms[1]])
        elif kind == "concat":
            blobs[tops[0]] = torch.cat([blobs[b] for b in bottoms], dim=extra or 1)
        elif kind == "eltwise":
            out = blobs[bottoms[0]]
            for b in bottoms[1:]:
                if extra == _ELTWISE_SUM:
                    out = out + blobs[b]
                elif extra == _ELTWISE_PROD:
                    out = out * blobs[b]
                else:
                    out = torch.maximum(out, blobs[b])
            blobs[tops[0]] = out
        elif kind == "softmax":
            blobs[tops[0]] = torch.softmax(blobs[bottoms[0]], dim=extra)
        elif kind == "split":
            for t in tops:
                blobs[t] = blobs[bottoms[0]]

    def forward(self, inputs):
        """Run every layer; returns the dict of all blobs by name (inputs included)."""
        blobs = dict(inputs)
        for kind, name, bottoms, tops, extra in self.steps:
            module = getattr(self, name) if name is not None else None
            self._step(kind, module, bottoms, tops, extra, blobs)
        return blobs


def init_like_caffe_bench(model, seed):
    """He-normal weights (std √(2 / fan_in)) and zero biases, the bench's protonet init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                if module.bias is not None:
                    module.bias.zero_()
