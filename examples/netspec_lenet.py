#!/usr/bin/env python3
"""LeNet written with NetSpec and printed as prototxt (pycaffe's 01-learning-lenet notebook).

    python examples/netspec_lenet.py [--train LMDB] [--test LMDB] [--out DIR]

Prints the train net; with --out also writes lenet_auto_train.prototxt and
lenet_auto_test.prototxt there. A deploy twin (Input instead of Data) is built and run on
random digits to show the blob shapes.
"""

import argparse
import os
import sys

import numpy as np

import protonet as caffe
from protonet.net_spec import NetSpec, layers as L, params as P


def lenet_body(n):
    """conv(20,5) → pool → conv(50,5) → pool → fc(500) → relu → score(10); tops on ``n``."""
    xavier = dict(type="xavier")
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=xavier)
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=xavier)
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=xavier)
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=xavier)
    return n.score


def lenet(lmdb, batch_size):
    """The training net: an LMDB Data layer scaled to [0, 1], LeNet, softmax loss."""
    n = NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1.0 / 255), ntop=2)
    score = lenet_body(n)
    n.loss = L.SoftmaxWithLoss(score, n.label)
    return n.to_proto()


def lenet_deploy(batch_size=1):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch_size, 1, 28, 28]))
    n.prob = L.Softmax(lenet_body(n))
    return n.to_proto()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="examples/mnist/mnist_train_lmdb")
    parser.add_argument("--test", default="examples/mnist/mnist_test_lmdb")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    train = lenet(args.train, 64)
    print(train)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for name, proto in (("lenet_auto_train", train), ("lenet_auto_test", lenet(args.test,
                                                                                   100))):
            with open(os.path.join(args.out, name + ".prototxt"), "w") as f:
                f.write(str(proto))
    caffe.set_random_seed(1701)
    net = caffe.Net(lenet_deploy(batch_size=2), caffe.TEST)
    digits = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    probs = net.forward(data=digits)["prob"]
    for name, blob in net.blobs.items():
        print(f"{name:8s} {blob.data.shape}")
    print("class probabilities sum to", probs.sum(axis=1).round(5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
