#!/usr/bin/env python3
"""Classify an image the pycaffe way: caffe.io.Transformer by hand, then caffe.Classifier.

A tiny net with random (filler) weights stands in for CaffeNet, and a generated picture for
the cat, so the script runs anywhere in a second; swap in a real deploy.prototxt,
.caffemodel and image to classify for real (raw_scale 255, channel_swap (2, 1, 0) and the
ImageNet mean, as for bvlc_reference_caffenet).

    python examples/classification.py [IMAGE]
"""

import os
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw

import protonet as caffe
from protonet.net_spec import NetSpec, layers as L, params as P

CLASSES = ["circle", "square", "stripes", "noise"]


def tiny_deploy_net(crop=32):
    """Input 1×3×crop×crop → conv → pool → fc → prob over len(CLASSES) classes."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, crop, crop]))
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=5, stride=2,
                            weight_filler=dict(type="xavier"),
                            bias_filler=dict(type="constant", value=0.01))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.fc = L.InnerProduct(n.pool1, num_output=len(CLASSES), weight_filler=dict(type="xavier"))
    n.prob = L.Softmax(n.fc)
    net_param = n.to_proto()
    net_param.name = "TinyClassifier"
    return net_param


def make_image(path, size=48):
    """A red disc on a blue ground, as a PNG."""
    img = Image.new("RGB", (size, size), (30, 60, 200))
    ImageDraw.Draw(img).ellipse((10, 8, 38, 40), fill=(220, 40, 40))
    img.save(path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    caffe.set_mode_cpu()
    caffe.set_random_seed(1701)
    with tempfile.TemporaryDirectory() as tmp:
        model_def = os.path.join(tmp, "deploy.prototxt")
        with open(model_def, "w") as f:
            f.write(str(tiny_deploy_net()))
        model_weights = os.path.join(tmp, "tiny.caffemodel")
        caffe.Net(model_def, caffe.TEST).save(model_weights)       # "pretrained" weights
        image_file = argv[0] if argv else os.path.join(tmp, "picture.png")
        if not argv:
            make_image(image_file)

        net = caffe.Net(model_def, caffe.TEST, weights=model_weights)
        mu = np.array([104.0, 117.0, 123.0])      # BGR mean pixel, as for ImageNet models
        transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
        transformer.set_transpose("data", (2, 0, 1))      # H×W×C → C×H×W
        transformer.set_mean("data", mu)
        transformer.set_raw_scale("data", 255)            # [0, 1] → [0, 255]
        transformer.set_channel_swap("data", (2, 1, 0))   # RGB → BGR
        transformer.set_input_scale("data", 1 / 128.0)     # after the mean: about [-1, 1]

        image = caffe.io.load_image(image_file)
        print(f"image {image.shape}, values in [{image.min():.2f}, {image.max():.2f}]")
        net.blobs["data"].data[...] = transformer.preprocess("data", image)
        probs = net.forward()["prob"][0].copy()
        order = probs.argsort()[::-1]
        print("by hand:    " + ", ".join(f"{CLASSES[i]} {probs[i]:.3f}" for i in order))

        classifier = caffe.Classifier(model_def, model_weights, mean=mu, raw_scale=255,
                                      channel_swap=(2, 1, 0), input_scale=1 / 128.0)
        centre = classifier.predict([image], oversample=False)[0]
        print("Classifier: " + ", ".join(f"{CLASSES[i]} {centre[i]:.3f}" for i in order))
        np.testing.assert_allclose(centre, probs, rtol=1e-5, atol=1e-6)
        ten_crop = caffe.Classifier(model_def, model_weights, image_dims=(40, 40), mean=mu,
                                    raw_scale=255, channel_swap=(2, 1, 0),
                                    input_scale=1 / 128.0)
        averaged = ten_crop.predict([image, image[:, ::-1]])      # 2 images × 10 crops
        print(f"10-crop average over 2 images: {averaged.shape}, rows sum to "
              f"{averaged.sum(axis=1).round(4)}")
        # A mirrored image has the mirrored ten crops: the averages agree.
        np.testing.assert_allclose(averaged[0], averaged[1], rtol=1e-4, atol=1e-6)
        print(f"predicted class: {CLASSES[int(averaged[0].argmax())]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
