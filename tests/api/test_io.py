"""pycaffe's caffe.io: images, Transformer, resizing, 10-crop, BlobProto and Datum helpers."""

import numpy as np
import pytest
from PIL import Image

import protonet
from protonet import io as caffe_io
from protonet.errors import ProtonetError
from protonet.proto import caffe_pb2

from tests.helpers.tolerances import KERNEL_ATOL, KERNEL_RTOL


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_caffe_io_names_are_reachable_from_the_package():
    for name in ("Transformer", "load_image", "resize_image", "oversample", "blobproto_to_array",
                 "array_to_blobproto", "arraylist_to_blobprotovector_str",
                 "blobprotovector_str_to_arraylist", "array_to_datum", "datum_to_array"):
        assert callable(getattr(protonet.io, name)), name


# ---- load_image --------------------------------------------------------------------------------
def test_load_image_returns_float_rgb_in_unit_range(tmp_path):
    pixels = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)   # 1×2 RGB
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    image = caffe_io.load_image(str(path))
    assert image.dtype == np.float32 and image.shape == (1, 2, 3)
    np.testing.assert_allclose(image, pixels / 255.0, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_load_image_grey_is_repeated_to_three_channels_or_kept_as_one(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 51], [102, 255]], dtype=np.uint8)).save(path)
    colour = caffe_io.load_image(str(path))
    grey = caffe_io.load_image(str(path), color=False)
    assert colour.shape == (2, 2, 3) and grey.shape == (2, 2, 1)
    np.testing.assert_allclose(colour[..., 1], [[0, 0.2], [0.4, 1.0]], rtol=KERNEL_RTOL)
    np.testing.assert_allclose(grey[..., 0], colour[..., 0], rtol=KERNEL_RTOL)


def test_load_image_drops_alpha(tmp_path):
    path = tmp_path / "rgba.png"
    Image.fromarray(np.full((3, 3, 4), [10, 20, 30, 40], dtype=np.uint8), "RGBA").save(path)
    image = caffe_io.load_image(str(path))
    np.testing.assert_allclose(image[1, 1], np.array([10, 20, 30]) / 255.0, rtol=KERNEL_RTOL)


def test_load_image_missing_file_is_a_protonet_error(tmp_path):
    with pytest.raises(ProtonetError, match="no such image"):
        caffe_io.load_image(str(tmp_path / "nope.jpg"))


# ---- resize_image ------------------------------------------------------------------------------
def test_resize_bilinear_upsamples_with_half_pixel_centres():
    im = np.array([[0.0, 1.0]], dtype=np.float32)[:, :, np.newaxis]     # 1×2×1
    out = caffe_io.resize_image(im, (1, 4))
    # Output centres map to x = -0.25, 0.25, 0.75, 1.25 → clamped, interpolated.
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.25, 0.75, 1.0], rtol=KERNEL_RTOL)


def test_resize_nearest_repeats_pixels():
    im = np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    out = caffe_io.resize_image(im, (4, 4), interp_order=0)
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3],
                                                [2, 2, 3, 3]])


def test_resize_to_same_size_is_identity_and_keeps_channels(rng):
    im = rng.random((5, 7, 4), dtype=np.float32)
    np.testing.assert_array_equal(caffe_io.resize_image(im, (5, 7)), im)
    assert caffe_io.resize_image(im, (3, 9)).shape == (3, 9, 4)


def test_resize_constant_image_stays_constant():
    im = np.full((4, 4, 3), 0.3, dtype=np.float32)
    out = caffe_io.resize_image(im, (7, 2))
    assert out.shape == (7, 2, 3)
    np.testing.assert_array_equal(out, np.float32(0.3))


def test_resize_downsample_by_two_averages_pixel_pairs():
    im = np.arange(8, dtype=np.float32).reshape(1, 8, 1)
    out = caffe_io.resize_image(im, (1, 4))
    np.testing.assert_allclose(out[0, :, 0], [0.5, 2.5, 4.5, 6.5], rtol=KERNEL_RTOL)


def test_resize_rejects_unsupported_order():
    with pytest.raises(ProtonetError, match="interp_order"):
        caffe_io.resize_image(np.zeros((2, 2, 1)) + np.eye(2)[..., None], (3, 3), 3)


# ---- oversample --------------------------------------------------------------------------------
def test_oversample_gives_corners_centre_and_mirrors():
    im = np.arange(5 * 6, dtype=np.float32).reshape(5, 6, 1)
    crops = caffe_io.oversample([im], (3, 4))
    assert crops.shape == (10, 3, 4, 1)
    np.testing.assert_array_equal(crops[0], im[0:3, 0:4])     # top left
    np.testing.assert_array_equal(crops[1], im[0:3, 2:6])     # top right
    np.testing.assert_array_equal(crops[2], im[2:5, 0:4])     # bottom left
    np.testing.assert_array_equal(crops[3], im[2:5, 2:6])     # bottom right
    np.testing.assert_array_equal(crops[4], im[1:4, 1:5])     # centre (2.5-1.5, 3-2)
    for i in range(5):
        np.testing.assert_array_equal(crops[5 + i], crops[i][:, ::-1])


# ---- Transformer -------------------------------------------------------------------------------
def make_transformer():
    t = caffe_io.Transformer({"data": (1, 3, 4, 4)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_applies_pycaffe_steps_in_order(rng):
    image = rng.random((4, 4, 3), dtype=np.float32)
    out = make_transformer().preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[::-1] * 255.0
                - np.array([10.0, 20.0, 30.0])[:, None, None]) * 0.5
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=KERNEL_RTOL, atol=1e-4)


def test_deprocess_inverts_preprocess(rng):
    image = rng.random((4, 4, 3), dtype=np.float32)
    t = make_transformer()
    np.testing.assert_allclose(t.deprocess("data", t.preprocess("data", image)), image,
                               rtol=KERNEL_RTOL, atol=1e-5)


def test_preprocess_resizes_to_the_input_size(rng):
    t = caffe_io.Transformer({"data": (1, 3, 4, 4)})
    t.set_transpose("data", (2, 0, 1))
    assert t.preprocess("data", rng.random((8, 6, 3))).shape == (3, 4, 4)


def test_preprocess_leaves_the_caller_image_unchanged(rng):
    image = rng.random((4, 4, 3), dtype=np.float32)
    before = image.copy()
    make_transformer().preprocess("data", image)
    np.testing.assert_array_equal(image, before)


def test_set_mean_resizes_a_mean_image_of_another_size():
    t = caffe_io.Transformer({"data": (1, 3, 4, 4)})
    mean = np.full((3, 8, 8), 5.0, dtype=np.float32)
    mean[1] = 7.0
    t.set_mean("data", mean)
    assert t.mean["data"].shape == (3, 4, 4)
    np.testing.assert_allclose(t.mean["data"][:, 0, 0], [5.0, 7.0, 5.0], rtol=KERNEL_RTOL)


@pytest.mark.parametrize("call, match", [
    (lambda t: t.set_transpose("data", (1, 0)), "transpose"),
    (lambda t: t.set_channel_swap("data", (1, 0)), "channel swap"),
    (lambda t: t.set_mean("data", np.zeros(4)), "channels"),
    (lambda t: t.set_raw_scale("label", 2), "not one of the net inputs"),
])
def test_transformer_rejects_mismatched_settings(call, match):
    with pytest.raises(ProtonetError, match=match):
        call(caffe_io.Transformer({"data": (1, 3, 4, 4)}))


# ---- BlobProto and Datum -----------------------------------------------------------------------
def test_blobproto_round_trip_with_diff(rng):
    data = rng.standard_normal((2, 3, 4)).astype(np.float32)
    diff = rng.standard_normal((2, 3, 4)).astype(np.float32)
    proto = caffe_io.array_to_blobproto(data, diff)
    assert list(proto.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(proto), data)
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(proto, return_diff=True), diff)


def test_blobproto_legacy_fields_give_a_4d_array():
    proto = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    np.testing.assert_array_equal(caffe_io.blobproto_to_array(proto),
                                  np.arange(6).reshape(1, 2, 1, 3))


def test_blobprotovector_round_trip(rng):
    arrays = [rng.standard_normal((3,)).astype(np.float32),
              rng.standard_normal((2, 2)).astype(np.float32)]
    text = caffe_io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(text, bytes)
    back = caffe_io.blobprotovector_str_to_arraylist(text)
    assert len(back) == 2
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)


def test_datum_uint8_round_trip_stores_bytes():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe_io.array_to_datum(arr, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 7)
    assert datum.data == arr.tobytes() and not datum.float_data
    np.testing.assert_array_equal(caffe_io.datum_to_array(datum), arr)


def test_datum_float_round_trip_stores_float_data():
    arr = np.linspace(-1, 1, 12).reshape(3, 2, 2)
    datum = caffe_io.array_to_datum(arr)
    assert not datum.data and len(datum.float_data) == 12
    np.testing.assert_allclose(caffe_io.datum_to_array(datum), arr, rtol=KERNEL_RTOL)


def test_array_to_datum_needs_three_dimensions():
    with pytest.raises(ProtonetError, match="3-D"):
        caffe_io.array_to_datum(np.zeros((2, 2)))
