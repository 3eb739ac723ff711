"""DataTransformer: each transform_param option against a direct NumPy statement of Caffe's rule."""

import numpy as np
import pytest
from google.protobuf import text_format

from protonet.data.datum import datum_to_array, encode_image, image_to_datum
from protonet.data.transformer import DataTransformer
from protonet.errors import ProtonetError
from protonet.io.blobproto import write_blobproto
from protonet.proto import caffe_pb2
from protonet.rng import set_random_seed

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture(autouse=True)
def seeded():
    set_random_seed(1234)


@pytest.fixture
def image(rng):
    return rng.integers(0, 256, size=(3, 7, 9), dtype=np.uint8)


def make(text, phase=TEST):
    return DataTransformer(text_format.Parse(text, caffe_pb2.TransformationParameter()), phase)


def run(transformer, image):
    shape = transformer.infer_shape(*image.shape)
    out = np.empty(shape, dtype=np.float32)
    transformer.transform(image, out)
    return out


def test_no_options_gives_the_pixels_as_float32(image):
    np.testing.assert_array_equal(run(make(""), image), image.astype(np.float32))


def test_scale_multiplies_in_float32(image):
    out = run(make("scale: 0.00390625"), image)
    np.testing.assert_array_equal(out, image.astype(np.float32) * np.float32(0.00390625))


def test_mean_value_is_subtracted_before_scaling(image):
    out = run(make("mean_value: 104 scale: 0.017"), image)
    expected = (image.astype(np.float32) - np.float32(104)) * np.float32(0.017)
    np.testing.assert_array_equal(out, expected)


def test_one_mean_value_per_channel(image):
    out = run(make("mean_value: 104 mean_value: 117 mean_value: 123"), image)
    expected = image.astype(np.float32) - np.array([104, 117, 123], np.float32)[:, None, None]
    np.testing.assert_array_equal(out, expected)


def test_mean_file_is_subtracted_at_the_crop_window(image, rng, tmp_path):
    mean = rng.uniform(0, 255, size=(1, 3, 7, 9)).astype(np.float32)
    write_blobproto(tmp_path / "mean.binaryproto", mean)
    transformer = make(f'mean_file: "{tmp_path / "mean.binaryproto"}" crop_size: 5 scale: 0.5')
    out = run(transformer, image)
    h0, w0 = (7 - 5) // 2, (9 - 5) // 2
    window = (slice(None), slice(h0, h0 + 5), slice(w0, w0 + 5))
    expected = (image[window].astype(np.float32) - mean[0][window]) * np.float32(0.5)
    np.testing.assert_array_equal(out, expected)


def test_center_crop_at_test(image):
    out = run(make("crop_size: 4"), image)
    np.testing.assert_array_equal(out, image[:, 1:5, 2:6])


def test_random_crop_at_train_picks_every_valid_window(image):
    transformer = make("crop_size: 4", TRAIN)
    windows = {(h, w): image[:, h:h + 4, w:w + 4] for h in range(4) for w in range(6)}
    seen = set()
    for _ in range(400):
        out = run(transformer, image)
        match = [k for k, v in windows.items() if np.array_equal(out, v)]
        assert len(match) >= 1
        seen.update(match)
    assert seen == set(windows)


def test_mirror_flips_some_images_even_at_test(image):
    transformer = make("mirror: true", TEST)
    outs = [run(transformer, image) for _ in range(64)]
    flipped = [np.array_equal(o, image[:, :, ::-1]) for o in outs]
    plain = [np.array_equal(o, image) for o in outs]
    assert all(f or p for f, p in zip(flipped, plain))
    assert 10 < sum(flipped) < 54


def test_same_seed_gives_the_same_crops_and_flips(image):
    def draws():
        set_random_seed(99)
        transformer = make("crop_size: 3 mirror: true", TRAIN)
        return np.stack([run(transformer, image) for _ in range(20)])

    np.testing.assert_array_equal(draws(), draws())


def test_float_data_is_transformed_like_bytes(rng):
    values = rng.normal(size=(2, 4, 4)).astype(np.float32)
    out = run(make("mean_value: 0.5 scale: 2"), values)
    np.testing.assert_array_equal(out, (values - np.float32(0.5)) * np.float32(2))


def test_force_gray_and_force_color_decode_encoded_datums(rng):
    bgr = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    datum = caffe_pb2.Datum(data=encode_image(bgr, "png"), encoded=True, label=3)
    native = datum_to_array(datum)
    np.testing.assert_array_equal(native, bgr.transpose(2, 0, 1))
    assert datum_to_array(datum, force_gray=True).shape == (1, 5, 6)
    gray = image_to_datum(bgr[:, :, :1])
    gray_encoded = caffe_pb2.Datum(data=encode_image(bgr[:, :, :1], "png"), encoded=True)
    assert datum_to_array(gray_encoded, force_color=True).shape == (3, 5, 6)
    np.testing.assert_array_equal(datum_to_array(gray), bgr[:, :, :1].transpose(2, 0, 1))


@pytest.mark.parametrize("text, match", [
    ("crop_size: 8", "crop_size 8 is larger than the image"),
    ("mean_value: 1 mean_value: 2", "1 mean_value or as many as channels"),
])
def test_bad_shapes_are_clear_errors(image, text, match):
    with pytest.raises(ProtonetError, match=match):
        run(make(text), image)


def test_mean_file_of_another_shape_is_an_error(image, tmp_path):
    write_blobproto(tmp_path / "mean.binaryproto", np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ProtonetError, match="has shape 3×8×8 but the data is 3×7×9"):
        run(make(f'mean_file: "{tmp_path / "mean.binaryproto"}"'), image)


@pytest.mark.parametrize("text, match", [
    ('mean_file: "m.binaryproto" mean_value: 3', "mean_file or mean_value, not both"),
    ("force_color: true force_gray: true", "cannot both be set"),
])
def test_contradictory_options_are_rejected(text, match):
    with pytest.raises(ProtonetError, match=match):
        make(text)
