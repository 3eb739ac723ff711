"""pycaffe's Classifier and Detector on a tiny net with known weights."""

import numpy as np
import pytest
from PIL import Image

import protonet
from protonet.errors import ProtonetError
from protonet.io.images import oversample, resize_image

from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL

# Mean of each channel over the input → InnerProduct with identity weights → Softmax.
NET = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(NET)
    net = protonet.Net(str(path), protonet.TEST)
    net.params["ip"][0].data[...] = np.eye(3)
    net.params["ip"][1].data[...] = 0
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    return str(path), str(weights)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_classifier_centre_crop_matches_channel_means(model):
    rng = np.random.default_rng(0)
    images = [rng.random((6, 6, 3), dtype=np.float32) for _ in range(3)]    # 3 > batch of 2
    clf = protonet.Classifier(*model, image_dims=(6, 6), raw_scale=10.0, channel_swap=(2, 1, 0))
    probs = clf.predict(images, oversample=False)
    expected = softmax(np.stack([im[1:5, 1:5].mean(axis=(0, 1))[::-1] * 10 for im in images]))
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=KERNEL_ATOL)


def test_classifier_oversample_averages_the_ten_crops(model):
    rng = np.random.default_rng(1)
    image = rng.random((8, 8, 3), dtype=np.float32)
    clf = protonet.Classifier(*model, image_dims=(6, 6), mean=np.array([0.1, 0.2, 0.3]))
    probs = clf.predict([image])
    crops = oversample([resize_image(image, (6, 6))], (4, 4))
    expected = softmax(crops.mean(axis=(1, 2)) - [0.1, 0.2, 0.3]).mean(axis=0)
    np.testing.assert_allclose(probs[0], expected, rtol=1e-4, atol=KERNEL_ATOL)


def test_classifier_default_image_dims_is_the_input_size(model):
    clf = protonet.Classifier(*model)
    np.testing.assert_array_equal(clf.image_dims, [4, 4])
    np.testing.assert_array_equal(clf.crop_dims, [4, 4])


def write_image(tmp_path, pixels):
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def test_detector_classifies_each_window(model, tmp_path):
    pixels = np.zeros((10, 10, 3), dtype=np.uint8)
    pixels[:5, :5, 0] = 255        # red top-left quarter
    pixels[5:, 5:, 2] = 255        # blue bottom-right quarter
    path = write_image(tmp_path, pixels)
    det = protonet.Detector(*model, raw_scale=5.0)
    hits = det.detect_windows([(path, [(0, 0, 5, 5), (5, 5, 10, 10), (0, 0, 10, 10)])])
    assert [h["filename"] for h in hits] == [path] * 3
    assert [tuple(h["window"]) for h in hits] == [(0, 0, 5, 5), (5, 5, 10, 10), (0, 0, 10, 10)]
    np.testing.assert_allclose(hits[0]["prediction"], softmax(np.array([5.0, 0, 0])),
                               rtol=KERNEL_RTOL)
    np.testing.assert_allclose(hits[1]["prediction"], softmax(np.array([0, 0, 5.0])),
                               rtol=KERNEL_RTOL)
    np.testing.assert_allclose(hits[2]["prediction"], softmax(np.array([1.25, 0, 1.25])),
                               rtol=1e-4)


def test_detector_context_pad_fills_outside_with_the_mean(model):
    det = protonet.Detector(*model, mean=np.array([30.0, 60.0, 90.0]), raw_scale=255.0,
                            channel_swap=(2, 1, 0), context_pad=1)
    np.testing.assert_array_equal(det.crop_dims, [4, 4, 3])
    # Mean back in raw RGB space: un-swap (BGR → RGB) and un-scale.
    np.testing.assert_allclose(det.crop_mean.ravel(), np.array([90.0, 60.0, 30.0]) / 255.0,
                               rtol=KERNEL_RTOL)
    image = np.ones((8, 8, 3), dtype=np.float32)
    crop = det.crop(image, np.array([0, 0, 3, 3]))     # the context runs off the top-left
    assert crop.shape == (4, 4, 3)
    np.testing.assert_allclose(crop[0, 0], np.array([90.0, 60.0, 30.0]) / 255.0,
                               rtol=KERNEL_RTOL)
    np.testing.assert_allclose(crop[3, 3], 1.0, rtol=KERNEL_RTOL)


def test_detector_without_context_crops_the_window(model):
    det = protonet.Detector(*model)
    image = np.arange(100 * 3, dtype=np.float32).reshape(10, 10, 3)
    np.testing.assert_array_equal(det.crop(image, (2, 3, 6, 8)), image[2:6, 3:8])


def test_selective_search_explains_what_is_missing(model):
    det = protonet.Detector(*model)
    with pytest.raises(ProtonetError, match="detect_windows"):
        det.detect_selective_search(["a.jpg"])
