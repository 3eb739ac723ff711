#!/usr/bin/env python3
"""Write the classic Caffe model-zoo definitions under models/, generated with protonet's NetSpec.

    python tools/gen_models.py [--out models] [--check]

Each net is written as Caffe published it (layer names, order, hyper-parameters, fillers and
lr/decay multipliers, data sources), from a few small builders: one function per architecture
builds the body once for both the ``deploy.prototxt`` (an Input layer, a Softmax "prob", no
fillers) and the ``train_val.prototxt`` (TRAIN and TEST data layers, losses, accuracies).
``--check`` builds every written net with protonet.Net and prints its parameter count.

Sources of the hyper-parameters: BVLC Caffe's models/ and examples/cifar10 (CaffeNet, AlexNet,
GoogLeNet, CIFAR-10 full), forresti/SqueezeNet (v1.1), the VGG ILSVRC-2014 deploy files,
KaimingHe/deep-residual-networks (ResNet-50 deploy) and the Network-in-Network ImageNet model of
the Caffe model zoo (Lin, Chen & Yan 2014).
"""

import argparse
import os
import sys

from google.protobuf import text_format

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from protonet.net_spec import NetSpec, layers as L, params as P  # noqa: E402
from protonet.proto import caffe_pb2  # noqa: E402

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
MAX, AVE = P.Pooling.MAX, P.Pooling.AVE

# lr/decay multipliers: weights learn at the base rate with decay, biases twice as fast without.
LEARN = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
IMAGENET_MEAN_FILE = "data/ilsvrc12/imagenet_mean.binaryproto"
IMAGENET_TRAIN = "examples/imagenet/ilsvrc12_train_lmdb"
IMAGENET_VAL = "examples/imagenet/ilsvrc12_val_lmdb"
BGR_MEAN = [104, 117, 123]


class Builder:
    """Layers that drop their fillers in deploy nets (the deploy files carry none)."""

    def __init__(self, deploy):
        self.deploy = deploy

    def _fill(self, kwargs):
        if self.deploy:
            kwargs.pop("weight_filler", None)
            kwargs.pop("bias_filler", None)
        return kwargs

    def conv(self, bottom, **kwargs):
        return L.Convolution(bottom, **self._fill(kwargs))

    def fc(self, bottom, **kwargs):
        return L.InnerProduct(bottom, **self._fill(kwargs))


def gaussian(std, **extra):
    return dict(type="gaussian", std=std, **extra)


def constant(value=None):
    return dict(type="constant") if value is None else dict(type="constant", value=value)


def relu(bottom):
    """An in-place ReLU (named by the NetSpec attribute it is assigned to)."""
    return L.ReLU(bottom, in_place=True)


def data_layer_pair(train, test, name="data"):
    """TRAIN and TEST Data layers with the same tops (data, label), as LayerParameters.

    NetSpec names each top once, so the second (TEST) layer is made in a NetSpec of its own
    and inserted after the first by :func:`with_test_layer`.
    """
    layers_ = []
    for phase, spec in ((TRAIN, train), (TEST, test)):
        n = NetSpec()
        n.data, n.label = L.Data(name=name, include=dict(phase=phase), ntop=2,
                                 transform_param=spec["transform"],
                                 data_param=dict(source=spec["source"],
                                                 batch_size=spec["batch_size"],
                                                 backend=P.Data.LMDB))
        layers_.append(n.to_proto().layer[0])
    return layers_


def imagenet_data(crop, train_batch, test_batch, mean_file=IMAGENET_MEAN_FILE, mean_value=None,
                  mirror=True):
    """Data layer specs for ILSVRC-12 LMDBs (mirroring in TRAIN, no mirroring in TEST)."""
    def transform(train):
        spec = {}
        if mirror is not None:
            spec["mirror"] = train if mirror else False
        spec["crop_size"] = crop
        if mean_value is not None:
            spec["mean_value"] = mean_value
        else:
            spec["mean_file"] = mean_file
        return spec
    return (dict(transform=transform(True), source=IMAGENET_TRAIN, batch_size=train_batch),
            dict(transform=transform(False), source=IMAGENET_VAL, batch_size=test_batch))


def finish(n, name, data_specs=None, data_name="data"):
    """NetParameter of NetSpec ``n``; for train_val, ``data_specs`` = (train, test) replace the
    placeholder data layer by the TRAIN layer followed by the TEST layer."""
    net = n.to_proto()
    net.name = name
    if data_specs is not None:
        train_layer, test_layer = data_layer_pair(*data_specs, name=data_name)
        net.layer[0].CopyFrom(train_layer)
        net.layer.insert(1, test_layer)
    return net


def start(n, deploy, deploy_shape):
    """The net's input: an Input layer (deploy) or a placeholder Data layer (train_val)."""
    if deploy:
        n.data = L.Input(shape=dict(dim=list(deploy_shape)))
    else:   # replaced by the TRAIN/TEST pair in finish()
        n.data, n.label = L.Data(ntop=2)


# ---- CaffeNet and AlexNet --------------------------------------------------------------------
def _alexnet_family(deploy, caffenet):
    """CaffeNet (pool before norm, biases 1) or AlexNet (norm before pool, biases 0.1)."""
    b = Builder(deploy)
    n = NetSpec()
    start(n, deploy, (10, 3, 227, 227))
    one = 1 if caffenet else 0.1
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)
    n.conv1 = b.conv(n.data, param=LEARN, num_output=96, kernel_size=11, stride=4,
                     weight_filler=gaussian(0.01), bias_filler=constant(0))
    n.relu1 = relu(n.conv1)
    if caffenet:
        n.pool1 = L.Pooling(n.relu1, pool=MAX, kernel_size=3, stride=2)
        n.norm1 = L.LRN(n.pool1, **lrn)
        after1 = n.norm1
    else:
        n.norm1 = L.LRN(n.relu1, **lrn)
        n.pool1 = L.Pooling(n.norm1, pool=MAX, kernel_size=3, stride=2)
        after1 = n.pool1
    n.conv2 = b.conv(after1, param=LEARN, num_output=256, pad=2, kernel_size=5, group=2,
                     weight_filler=gaussian(0.01), bias_filler=constant(one))
    n.relu2 = relu(n.conv2)
    if caffenet:
        n.pool2 = L.Pooling(n.relu2, pool=MAX, kernel_size=3, stride=2)
        n.norm2 = L.LRN(n.pool2, **lrn)
        after2 = n.norm2
    else:
        n.norm2 = L.LRN(n.relu2, **lrn)
        n.pool2 = L.Pooling(n.norm2, pool=MAX, kernel_size=3, stride=2)
        after2 = n.pool2
    n.conv3 = b.conv(after2, param=LEARN, num_output=384, pad=1, kernel_size=3,
                     weight_filler=gaussian(0.01), bias_filler=constant(0))
    n.relu3 = relu(n.conv3)
    n.conv4 = b.conv(n.relu3, param=LEARN, num_output=384, pad=1, kernel_size=3, group=2,
                     weight_filler=gaussian(0.01), bias_filler=constant(one))
    n.relu4 = relu(n.conv4)
    n.conv5 = b.conv(n.relu4, param=LEARN, num_output=256, pad=1, kernel_size=3, group=2,
                     weight_filler=gaussian(0.01), bias_filler=constant(one))
    n.relu5 = relu(n.conv5)
    n.pool5 = L.Pooling(n.relu5, pool=MAX, kernel_size=3, stride=2)
    top = n.pool5
    for i in (6, 7):
        n[f"fc{i}"] = b.fc(top, param=LEARN, num_output=4096, weight_filler=gaussian(0.005),
                           bias_filler=constant(one))
        n[f"relu{i}"] = relu(n[f"fc{i}"])
        n[f"drop{i}"] = L.Dropout(n[f"relu{i}"], in_place=True, dropout_ratio=0.5)
        top = n[f"drop{i}"]
    n.fc8 = b.fc(top, param=LEARN, num_output=1000, weight_filler=gaussian(0.01),
                 bias_filler=constant(0))
    return n


def caffenet(deploy):
    return _classifier_end(_alexnet_family(deploy, True), deploy, "fc8", "CaffeNet",
                           imagenet_data(227, 256, 50))


def alexnet(deploy):
    return _classifier_end(_alexnet_family(deploy, False), deploy, "fc8", "AlexNet",
                           imagenet_data(227, 256, 50))


def _classifier_end(n, deploy, score, name, data_specs, data_name="data"):
    """Softmax "prob" (deploy) or accuracy (TEST only) and SoftmaxWithLoss "loss"."""
    if deploy:
        n.prob = L.Softmax(n[score])
        return finish(n, name)
    n.accuracy = L.Accuracy(n[score], n.label, include=dict(phase=TEST))
    n.loss = L.SoftmaxWithLoss(n[score], n.label)
    return finish(n, name, data_specs, data_name)


# ---- GoogLeNet -------------------------------------------------------------------------------
# Inception modules: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) output counts.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
XAVIER = dict(type="xavier")


def _gconv(b, n, name, bottom, relu_name, **kwargs):
    """A GoogLeNet convolution (xavier weights, 0.2 biases) and its in-place ReLU."""
    n[name] = b.conv(bottom, param=LEARN, weight_filler=XAVIER, bias_filler=constant(0.2),
                     **kwargs)
    n[relu_name] = relu(n[name])
    return n[relu_name]


def _inception(b, n, key, bottom):
    c1, r3, c3, r5, c5, pp = INCEPTION[key]
    p = f"inception_{key}/"
    out1 = _gconv(b, n, p + "1x1", bottom, p + "relu_1x1", num_output=c1, kernel_size=1)
    red3 = _gconv(b, n, p + "3x3_reduce", bottom, p + "relu_3x3_reduce", num_output=r3,
                  kernel_size=1)
    out3 = _gconv(b, n, p + "3x3", red3, p + "relu_3x3", num_output=c3, pad=1, kernel_size=3)
    red5 = _gconv(b, n, p + "5x5_reduce", bottom, p + "relu_5x5_reduce", num_output=r5,
                  kernel_size=1)
    out5 = _gconv(b, n, p + "5x5", red5, p + "relu_5x5", num_output=c5, pad=2, kernel_size=5)
    n[p + "pool"] = L.Pooling(bottom, pool=MAX, kernel_size=3, stride=1, pad=1)
    proj = _gconv(b, n, p + "pool_proj", n[p + "pool"], p + "relu_pool_proj", num_output=pp,
                  kernel_size=1)
    n[p + "output"] = L.Concat(out1, out3, out5, proj)
    return n[p + "output"]


def _aux_classifier(b, n, k, bottom):
    """GoogLeNet's auxiliary classifier ``loss<k>`` (train_val only), loss weight 0.3."""
    p = f"loss{k}/"
    n[p + "ave_pool"] = L.Pooling(bottom, pool=AVE, kernel_size=5, stride=3)
    top = _gconv(b, n, p + "conv", n[p + "ave_pool"], p + "relu_conv", num_output=128,
                 kernel_size=1)
    n[p + "fc"] = b.fc(top, param=LEARN, num_output=1024, weight_filler=XAVIER,
                       bias_filler=constant(0.2))
    n[p + "relu_fc"] = relu(n[p + "fc"])
    n[p + "drop_fc"] = L.Dropout(n[p + "relu_fc"], in_place=True, dropout_ratio=0.7)
    _googlenet_head(b, n, k, n[p + "drop_fc"], p + "loss", 0.3)


def _googlenet_head(b, n, k, bottom, loss_layer_name, loss_weight):
    p = f"loss{k}/"
    n[p + "classifier"] = b.fc(bottom, param=LEARN, num_output=1000, weight_filler=XAVIER,
                               bias_filler=constant(0))
    score = n[p + "classifier"]
    n[p + f"loss{k}"] = L.SoftmaxWithLoss(score, n.label, name=loss_layer_name,
                                          loss_weight=loss_weight)
    n[p + "top-1"] = L.Accuracy(score, n.label, include=dict(phase=TEST))
    n[p + "top-5"] = L.Accuracy(score, n.label, include=dict(phase=TEST), top_k=5)


def googlenet(deploy):
    b = Builder(deploy)
    n = NetSpec()
    start(n, deploy, (10, 3, 224, 224))
    top = _gconv(b, n, "conv1/7x7_s2", n.data, "conv1/relu_7x7", num_output=64, pad=3,
                 kernel_size=7, stride=2)
    n["pool1/3x3_s2"] = L.Pooling(top, pool=MAX, kernel_size=3, stride=2)
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], **lrn)
    top = _gconv(b, n, "conv2/3x3_reduce", n["pool1/norm1"], "conv2/relu_3x3_reduce",
                 num_output=64, kernel_size=1)
    top = _gconv(b, n, "conv2/3x3", top, "conv2/relu_3x3", num_output=192, pad=1,
                 kernel_size=3)
    n["conv2/norm2"] = L.LRN(top, **lrn)
    n["pool2/3x3_s2"] = L.Pooling(n["conv2/norm2"], pool=MAX, kernel_size=3, stride=2)
    top = n["pool2/3x3_s2"]
    for key in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        top = _inception(b, n, key, top)
        if key == "4a" and not deploy:
            _aux_classifier(b, n, 1, top)
        elif key == "4d" and not deploy:
            _aux_classifier(b, n, 2, top)
        elif key in ("3b", "4e"):
            pool = "pool3/3x3_s2" if key == "3b" else "pool4/3x3_s2"
            n[pool] = L.Pooling(top, pool=MAX, kernel_size=3, stride=2)
            top = n[pool]
    n["pool5/7x7_s1"] = L.Pooling(top, pool=AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], in_place=True, dropout_ratio=0.4)
    if deploy:
        n["loss3/classifier"] = b.fc(n["pool5/drop_7x7_s1"], param=LEARN, num_output=1000,
                                     weight_filler=XAVIER, bias_filler=constant(0))
        n.prob = L.Softmax(n["loss3/classifier"])
        return finish(n, "GoogleNet")
    _googlenet_head(b, n, 3, n["pool5/drop_7x7_s1"], "loss3/loss3", 1)
    return finish(n, "GoogleNet", imagenet_data(224, 32, 50, mean_value=BGR_MEAN))


# ---- VGG -------------------------------------------------------------------------------------
def _vgg(deploy, convs_per_stage, name):
    if not deploy:
        raise ValueError("VGG was published as a deploy net only")
    n = NetSpec()
    start(n, True, (10, 3, 224, 224))
    top = n.data
    widths = (64, 128, 256, 512, 512)
    for stage, (width, count) in enumerate(zip(widths, convs_per_stage), start=1):
        for i in range(1, count + 1):
            n[f"conv{stage}_{i}"] = L.Convolution(top, num_output=width, pad=1, kernel_size=3)
            n[f"relu{stage}_{i}"] = relu(n[f"conv{stage}_{i}"])
            top = n[f"relu{stage}_{i}"]
        n[f"pool{stage}"] = L.Pooling(top, pool=MAX, kernel_size=2, stride=2)
        top = n[f"pool{stage}"]
    for i in (6, 7):
        n[f"fc{i}"] = L.InnerProduct(top, num_output=4096)
        n[f"relu{i}"] = relu(n[f"fc{i}"])
        n[f"drop{i}"] = L.Dropout(n[f"relu{i}"], in_place=True, dropout_ratio=0.5)
        top = n[f"drop{i}"]
    n.fc8 = L.InnerProduct(top, num_output=1000)
    n.prob = L.Softmax(n.fc8)
    return finish(n, name)


def vgg16(deploy):
    return _vgg(deploy, (2, 2, 3, 3, 3), "VGG_ILSVRC_16_layers")


def vgg19(deploy):
    return _vgg(deploy, (2, 2, 4, 4, 4), "VGG_ILSVRC_19_layers")


# ---- ResNet-50 -------------------------------------------------------------------------------
def _conv_bn(n, name, suffix, bottom, num_output, kernel_size, stride, pad, with_relu):
    """res<name>: bias-free conv, BatchNorm (global stats) and Scale in place, maybe ReLU."""
    conv = f"res{name}{suffix}"
    n[conv] = L.Convolution(bottom, num_output=num_output, bias_term=False, pad=pad,
                            kernel_size=kernel_size, stride=stride)
    n[f"bn{name}{suffix}"] = L.BatchNorm(n[conv], in_place=True, use_global_stats=True)
    n[f"scale{name}{suffix}"] = L.Scale(n[f"bn{name}{suffix}"], in_place=True, bias_term=True)
    top = n[f"scale{name}{suffix}"]
    if with_relu:
        n[f"{conv}_relu"] = relu(top)
        top = n[f"{conv}_relu"]
    return top


def _bottleneck(n, name, bottom, width, stride, project):
    if project:
        shortcut = _conv_bn(n, name, "_branch1", bottom, 4 * width, 1, stride, 0, False)
    else:
        shortcut = bottom
    top = _conv_bn(n, name, "_branch2a", bottom, width, 1, stride, 0, True)
    top = _conv_bn(n, name, "_branch2b", top, width, 3, 1, 1, True)
    top = _conv_bn(n, name, "_branch2c", top, 4 * width, 1, 1, 0, False)
    n[f"res{name}"] = L.Eltwise(shortcut, top)
    n[f"res{name}_relu"] = relu(n[f"res{name}"])
    return n[f"res{name}_relu"]


def resnet50(deploy):
    if not deploy:
        raise ValueError("ResNet-50 was published as a deploy net only")
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 224, 224]), name="input")
    n.conv1 = L.Convolution(n.data, num_output=64, pad=3, kernel_size=7, stride=2)
    n.bn_conv1 = L.BatchNorm(n.conv1, in_place=True, use_global_stats=True)
    n.scale_conv1 = L.Scale(n.bn_conv1, in_place=True, bias_term=True)
    n.conv1_relu = relu(n.scale_conv1)
    n.pool1 = L.Pooling(n.conv1_relu, pool=MAX, kernel_size=3, stride=2)
    top = n.pool1
    stages = ((2, 64, 3, 1), (3, 128, 4, 2), (4, 256, 6, 2), (5, 512, 3, 2))
    for stage, width, blocks, stride in stages:
        for i in range(blocks):
            top = _bottleneck(n, f"{stage}{chr(ord('a') + i)}", top, width,
                              stride if i == 0 else 1, project=i == 0)
    n.pool5 = L.Pooling(top, pool=AVE, kernel_size=7, stride=1)
    n.fc1000 = L.InnerProduct(n.pool5, num_output=1000)
    n.prob = L.Softmax(n.fc1000)
    return finish(n, "ResNet-50")


# ---- SqueezeNet 1.1 --------------------------------------------------------------------------
def _fire(b, n, k, bottom, squeeze, expand):
    p = f"fire{k}/"
    n[p + "squeeze1x1"] = b.conv(bottom, num_output=squeeze, kernel_size=1,
                                 weight_filler=XAVIER)
    n[p + "relu_squeeze1x1"] = relu(n[p + "squeeze1x1"])
    s = n[p + "relu_squeeze1x1"]
    n[p + "expand1x1"] = b.conv(s, num_output=expand, kernel_size=1, weight_filler=XAVIER)
    n[p + "relu_expand1x1"] = relu(n[p + "expand1x1"])
    n[p + "expand3x3"] = b.conv(s, num_output=expand, pad=1, kernel_size=3,
                                weight_filler=XAVIER)
    n[p + "relu_expand3x3"] = relu(n[p + "expand3x3"])
    n[p + "concat"] = L.Concat(n[p + "relu_expand1x1"], n[p + "relu_expand3x3"])
    return n[p + "concat"]


def squeezenet11(deploy):
    b = Builder(deploy)
    n = NetSpec()
    start(n, deploy, (10, 3, 227, 227))
    n.conv1 = b.conv(n.data, num_output=64, kernel_size=3, stride=2, weight_filler=XAVIER)
    n.relu_conv1 = relu(n.conv1)
    n.pool1 = L.Pooling(n.relu_conv1, pool=MAX, kernel_size=3, stride=2)
    top = n.pool1
    fires = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128), 6: (48, 192), 7: (48, 192),
             8: (64, 256), 9: (64, 256)}
    for k, (squeeze, expand) in fires.items():
        top = _fire(b, n, k, top, squeeze, expand)
        if k in (3, 5):
            n[f"pool{k}"] = L.Pooling(top, pool=MAX, kernel_size=3, stride=2)
            top = n[f"pool{k}"]
    n.drop9 = L.Dropout(top, in_place=True, dropout_ratio=0.5)
    n.conv10 = b.conv(n.drop9, num_output=1000, kernel_size=1,
                      weight_filler=gaussian(0.01, mean=0.0))
    n.relu_conv10 = relu(n.conv10)
    n.pool10 = L.Pooling(n.relu_conv10, pool=AVE, global_pooling=True)
    if deploy:
        n.prob = L.Softmax(n.pool10)
        return finish(n, "")
    n.loss = L.SoftmaxWithLoss(n.pool10, n.label)
    n.accuracy = L.Accuracy(n.pool10, n.label)
    n.accuracy_top5 = L.Accuracy(n.pool10, n.label, top_k=5)
    data = imagenet_data(227, 32, 25, mean_value=BGR_MEAN, mirror=None)
    return finish(n, "", data)


# ---- Network in Network (ImageNet) -----------------------------------------------------------
# (conv, outputs, kernel, stride, pad, conv std, cccp names, relu names, pool) per mlpconv block;
# the cccp (1×1) layers use std 0.05. Caffe quirk of the original file: relu4 does not exist.
NIN_BLOCKS = (
    ("conv1", 96, 11, 4, 0, 0.01, ("cccp1", "cccp2"), ("relu0", "relu1", "relu2"), "pool0"),
    ("conv2", 256, 5, 1, 2, 0.05, ("cccp3", "cccp4"), ("relu3", "relu5", "relu6"), "pool2"),
    ("conv3", 384, 3, 1, 1, 0.01, ("cccp5", "cccp6"), ("relu7", "relu8", "relu9"), "pool3"),
)


def nin(deploy):
    """NiN for ImageNet: three mlpconv blocks, a 1024-wide fourth, global average pooling.

    As the model-zoo file (nin_imagenet): the last three convolutions are named
    conv4-1024/cccp7-1024/cccp8-1024 with tops conv4/cccp7/cccp8, the TEST batch is 89 and the
    loss (TRAIN only) has no named top. Data paths are Caffe's standard ImageNet ones.
    """
    b = Builder(deploy)
    n = NetSpec()
    start(n, deploy, (10, 3, 224, 224))
    top = n.data
    for conv, width, kernel, stride, pad, std, cccps, relus, pool in NIN_BLOCKS:
        extra = dict(pad=pad) if pad else {}
        n[conv] = b.conv(top, param=LEARN, num_output=width, kernel_size=kernel,
                         stride=stride, weight_filler=gaussian(std, mean=0),
                         bias_filler=constant(0), **extra)
        n[relus[0]] = relu(n[conv])
        top = n[relus[0]]
        for cccp, relu_name in zip(cccps, relus[1:]):
            n[cccp] = b.conv(top, param=LEARN, num_output=width, kernel_size=1, stride=1,
                             weight_filler=gaussian(0.05, mean=0), bias_filler=constant(0))
            n[relu_name] = relu(n[cccp])
            top = n[relu_name]
        n[pool] = L.Pooling(top, pool=MAX, kernel_size=3, stride=2)
        top = n[pool]
    n.drop = L.Dropout(top, in_place=True, dropout_ratio=0.5)
    top = n.drop
    for blob, name, width, kernel, std, relu_name in (
            ("conv4", "conv4-1024", 1024, 3, 0.05, "relu10"),
            ("cccp7", "cccp7-1024", 1024, 1, 0.05, "relu11"),
            ("cccp8", "cccp8-1024", 1000, 1, 0.01, "relu12")):
        extra = dict(pad=1) if kernel == 3 else {}
        n[blob] = b.conv(top, name=name, param=LEARN, num_output=width, kernel_size=kernel,
                         stride=1, weight_filler=gaussian(std, mean=0), bias_filler=constant(0),
                         **extra)
        n[relu_name] = relu(n[blob])
        top = n[relu_name]
    n.pool4 = L.Pooling(top, pool=AVE, kernel_size=6, stride=1)
    if deploy:
        n.prob = L.Softmax(n.pool4)
        return finish(n, "nin_imagenet")
    n.accuracy = L.Accuracy(n.pool4, n.label, include=dict(phase=TEST))
    n.loss = L.SoftmaxWithLoss(n.pool4, n.label, include=dict(phase=TRAIN), ntop=0)
    return finish(n, "nin_imagenet", imagenet_data(224, 64, 89))


# ---- CIFAR-10 full ---------------------------------------------------------------------------
def cifar10_full(deploy):
    b = Builder(deploy)
    n = NetSpec()
    start(n, deploy, (1, 3, 32, 32))
    lr12 = [dict(lr_mult=1), dict(lr_mult=2)]
    lrn = dict(local_size=3, alpha=5e-05, beta=0.75, norm_region=P.LRN.WITHIN_CHANNEL)
    n.conv1 = b.conv(n.data, param=lr12, num_output=32, pad=2, kernel_size=5, stride=1,
                     weight_filler=gaussian(0.0001), bias_filler=constant())
    n.pool1 = L.Pooling(n.conv1, pool=MAX, kernel_size=3, stride=2)
    n.relu1 = relu(n.pool1)
    n.norm1 = L.LRN(n.relu1, **lrn)
    n.conv2 = b.conv(n.norm1, param=lr12, num_output=32, pad=2, kernel_size=5, stride=1,
                     weight_filler=gaussian(0.01), bias_filler=constant())
    n.relu2 = relu(n.conv2)
    n.pool2 = L.Pooling(n.relu2, pool=AVE, kernel_size=3, stride=2)
    n.norm2 = L.LRN(n.pool2, **lrn)
    n.conv3 = b.conv(n.norm2, num_output=64, pad=2, kernel_size=5, stride=1,
                     weight_filler=gaussian(0.01), bias_filler=constant())
    n.relu3 = relu(n.conv3)
    n.pool3 = L.Pooling(n.relu3, pool=AVE, kernel_size=3, stride=2)
    n.ip1 = b.fc(n.pool3, param=[dict(lr_mult=1, decay_mult=250), dict(lr_mult=2, decay_mult=0)],
                 num_output=10, weight_filler=gaussian(0.01), bias_filler=constant())
    mean = "examples/cifar10/mean.binaryproto"
    data = (dict(transform=dict(mean_file=mean), source="examples/cifar10/cifar10_train_lmdb",
                 batch_size=100),
            dict(transform=dict(mean_file=mean), source="examples/cifar10/cifar10_test_lmdb",
                 batch_size=100))
    return _classifier_end(n, deploy, "ip1", "CIFAR10_full_deploy" if deploy else "CIFAR10_full",
                           data, data_name="cifar")


# ---- the zoo ---------------------------------------------------------------------------------
# folder → (builder, {file name: deploy?}, description)
ZOO = {
    "bvlc_reference_caffenet": (caffenet, {"deploy.prototxt": True, "train_val.prototxt": False},
                                "CaffeNet: AlexNet with pooling before normalization"),
    "bvlc_alexnet": (alexnet, {"deploy.prototxt": True, "train_val.prototxt": False},
                     "AlexNet (Krizhevsky et al. 2012) as trained by BVLC"),
    "bvlc_googlenet": (googlenet, {"deploy.prototxt": True, "train_val.prototxt": False},
                       "GoogLeNet / Inception v1 (Szegedy et al. 2014), BVLC training"),
    "vgg16": (vgg16, {"deploy.prototxt": True}, "VGG ILSVRC-2014 16 layers (configuration D)"),
    "vgg19": (vgg19, {"deploy.prototxt": True}, "VGG ILSVRC-2014 19 layers (configuration E)"),
    "resnet50": (resnet50, {"deploy.prototxt": True}, "ResNet-50 (He et al. 2015), MSRA"),
    "squeezenet_v1.1": (squeezenet11, {"deploy.prototxt": True, "train_val.prototxt": False},
                        "SqueezeNet v1.1 (Iandola et al.)"),
    "nin": (nin, {"deploy.prototxt": True, "train_val.prototxt": False},
            "Network in Network for ImageNet (Lin et al. 2014)"),
    "cifar10_full": (cifar10_full, {"cifar10_full.prototxt": True,
                                    "cifar10_full_train_test.prototxt": False},
                     "CIFAR-10 full (Caffe's examples/cifar10)"),
}


def net_text(net_param, description):
    header = (f"# {description}.\n"
              f"# Generated by tools/gen_models.py with protonet.net_spec; edit the generator, "
              f"not this file.\n")
    return header + text_format.MessageToString(net_param)


def generate(out_dir):
    """Write every zoo file under ``out_dir``; return the paths written."""
    written = []
    for folder, (build, files, description) in ZOO.items():
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
        for file_name, deploy in files.items():
            path = os.path.join(out_dir, folder, file_name)
            with open(path, "w") as f:
                f.write(net_text(build(deploy), description))
            written.append(path)
    return written


def count_params(path):
    """Parameters of the deploy net at ``path``, built with protonet at batch size 1."""
    import protonet
    from protonet.io.prototxt import read_net

    net_param = read_net(path)
    for layer in net_param.layer:
        if layer.type == "Input":
            layer.input_param.shape[0].dim[0] = 1
    net = protonet.Net(net_param, protonet.TEST)
    return sum(blob.count for blobs in net.params.values() for blob in blobs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    parser.add_argument("--check", action="store_true",
                        help="build each deploy net and print its parameter count")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        path = os.path.normpath(path)
        line = path
        if args.check and ("deploy" in path or path.endswith("cifar10_full.prototxt")):
            line += f"  {count_params(path):,} parameters"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
