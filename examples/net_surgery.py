#!/usr/bin/env python3
"""Net surgery: turn a classifier's fully connected layers into convolutions (Caffe's
examples/net_surgery.ipynb, "Casting a Classifier into a Fully Convolutional Network").

The InnerProduct weights of fc6 (16 × 4·7·7) and fc7 (5 × 16) hold exactly the numbers of
convolution filters fc6-conv (16 × 4 × 7 × 7) and fc7-conv (5 × 16 × 1 × 1), in the same order,
so the surgery is a flat copy. The full-conv net then classifies every 16×16 window of a larger
image in one pass; the window at the centre must score as the original net on the centre crop.

    python examples/net_surgery.py [--out DIR]
"""

import argparse
import os
import sys
import tempfile

import numpy as np

import protonet as caffe

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "net_surgery")


def make_weights(out_dir):
    """Stand-in for a trained model: the small net's filler weights, saved as a .caffemodel."""
    caffe.set_random_seed(1701)
    net = caffe.Net(os.path.join(HERE, "net.prototxt"), caffe.TEST)
    path = os.path.join(out_dir, "net.caffemodel")
    net.save(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the .caffemodel files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or tmp
        os.makedirs(out_dir, exist_ok=True)
        weights = make_weights(out_dir)

        # Load the fully connected net and its weights.
        net = caffe.Net(os.path.join(HERE, "net.prototxt"), weights, caffe.TEST)
        params = ["fc6", "fc7"]
        fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
        for fc in params:
            print(f"{fc} weights are {fc_params[fc][0].shape} dimensional and biases are "
                  f"{fc_params[fc][1].shape} dimensional")

        # Load the fully convolutional twin: conv1 comes from the file ("fc6", "fc7" are
        # ignored there, by name); fc6-conv and fc7-conv still hold zeros.
        net_full_conv = caffe.Net(os.path.join(HERE, "net_full_conv.prototxt"), weights,
                                  caffe.TEST)
        params_full_conv = ["fc6-conv", "fc7-conv"]
        conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
                       for pr in params_full_conv}
        for conv in params_full_conv:
            print(f"{conv} weights are {conv_params[conv][0].shape} dimensional and biases are "
                  f"{conv_params[conv][1].shape} dimensional")

        # The surgery: same numbers, new shapes.
        for pr, pr_conv in zip(params, params_full_conv):
            conv_params[pr_conv][0].flat = fc_params[pr][0].flat    # flat unrolls the arrays
            conv_params[pr_conv][1][...] = fc_params[pr][1]
        surgery_path = os.path.join(out_dir, "net_full_conv.caffemodel")
        net_full_conv.save(surgery_path)

        # Reload the saved model and classify a 24×24 image: a 5×5 map of class scores.
        net_full_conv = caffe.Net(os.path.join(HERE, "net_full_conv.prototxt"), surgery_path,
                                  caffe.TEST)
        rng = np.random.default_rng(7)
        image = rng.random((1, 3, 24, 24), dtype=np.float32)
        out = net_full_conv.forward(data=image)
        score_map = out["prob"][0]
        print(f"class score map: {score_map.shape} (classes × rows × columns)")
        print("arg max class per window:\n", score_map.argmax(axis=0))

        # The centre window (rows/cols 4..20 of the input) is output position (2, 2).
        centre = net.forward(data=image[:, :, 4:20, 4:20])["prob"][0]
        print("original net on the centre crop:", np.round(centre, 5))
        print("full-conv net at the centre:    ", np.round(score_map[:, 2, 2], 5))
        np.testing.assert_allclose(score_map[:, 2, 2], centre, rtol=1e-5, atol=1e-6)
        # Every other window too: output (i, j) sees input rows 2i..2i+16, columns 2j..2j+16.
        for i, j in np.ndindex(*score_map.shape[1:]):
            window = image[:, :, 2 * i:2 * i + 16, 2 * j:2 * j + 16]
            np.testing.assert_allclose(score_map[:, i, j], net.forward(data=window)["prob"][0],
                                       rtol=1e-5, atol=1e-6, err_msg=f"window ({i}, {j})")
        print("OK: the fully convolutional net reproduces the classifier at every window")
    return 0


if __name__ == "__main__":
    sys.exit(main())
