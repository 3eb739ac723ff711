"""Blob storage rules and the fillers' distributions."""

import numpy as np
import pytest

from protonet import rng
from protonet.blob import Blob
from protonet.errors import ProtonetError
from protonet.fillers import fill
from protonet.proto import caffe_pb2

STAT_TOL = 0.02  # tolerance on sample means/stds over 100k draws


def test_reshape_keeps_buffer_when_count_does_not_grow():
    blob = Blob(2, 3, 4)
    blob.data[...] = 1
    buffer = blob._data_buf
    blob.reshape(4, 6)
    assert blob._data_buf is buffer and blob.shape == (4, 6)
    blob.reshape(5, 6)
    assert blob._data_buf is not buffer and blob.count == 30


def test_legacy_accessors_pad_missing_axes_with_one():
    blob = Blob(7, 3)
    assert (blob.num, blob.channels, blob.height, blob.width) == (7, 3, 1, 1)


def test_diff_is_allocated_on_first_use_only():
    blob = Blob(3, 3)
    assert not blob.has_diff
    blob.diff[...] = 2
    assert blob.has_diff and blob.diff.sum() == 18


def test_negative_and_forged_shapes_are_refused_before_allocating():
    with pytest.raises(ProtonetError, match="negative"):
        Blob(3, -1)
    with pytest.raises(ProtonetError, match="more than the limit"):
        Blob(2**20, 2**20, 2**10)


def test_shared_blobs_see_each_others_writes():
    owner, other = Blob(2, 3), Blob(6)
    other.share(owner)
    owner.data[...] = np.arange(6).reshape(2, 3)
    owner.diff[...] = 5
    assert np.array_equal(other.data, np.arange(6)) and np.all(other.diff == 5)


def filler(text):
    from google.protobuf import text_format

    return text_format.Parse(text, caffe_pb2.FillerParameter())


@pytest.fixture
def seeded():
    rng.set_random_seed(1701)


def test_constant_filler_default_is_zero(seeded):
    a = np.ones((3, 4), np.float32)
    fill(a, caffe_pb2.FillerParameter())
    assert np.all(a == 0)


def test_uniform_and_gaussian_match_their_parameters(seeded):
    a = np.empty((100, 1000), np.float32)
    fill(a, filler('type: "uniform" min: -2 max: 4'))
    assert a.min() >= -2 and a.max() <= 4 and abs(a.mean() - 1) < STAT_TOL * 6
    fill(a, filler('type: "gaussian" mean: 3 std: 0.5'))
    assert abs(a.mean() - 3) < STAT_TOL and abs(a.std() - 0.5) < STAT_TOL


def test_gaussian_sparse_keeps_sparse_over_num_outputs(seeded):
    a = np.empty((20, 5000), np.float32)
    fill(a, filler('type: "gaussian" sparse: 5'))
    assert abs(np.mean(a != 0) - 5 / 20) < STAT_TOL


def test_xavier_and_msra_scale_with_fan_in(seeded):
    a = np.empty((64, 50, 3, 3), np.float32)
    fill(a, filler('type: "xavier"'))
    bound = np.sqrt(3.0 / 450)
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.95 * bound
    fill(a, filler('type: "msra" variance_norm: FAN_OUT'))
    assert abs(a.std() - np.sqrt(2.0 / (64 * 9))) < 0.05 * np.sqrt(2.0 / (64 * 9))


def test_positive_unitball_rows_sum_to_one(seeded):
    a = np.empty((6, 2, 3, 3), np.float32)
    fill(a, filler('type: "positive_unitball"'))
    assert np.allclose(a.reshape(6, -1).sum(axis=1), 1.0, atol=1e-5) and np.all(a >= 0)


def test_bilinear_filler_is_the_upsampling_kernel():
    a = np.empty((1, 1, 4, 4), np.float32)
    fill(a, filler('type: "bilinear"'))
    row = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    assert np.allclose(a[0, 0], np.outer(row, row))


def test_sparse_is_refused_by_fillers_other_than_gaussian():
    with pytest.raises(ProtonetError, match="sparse"):
        fill(np.empty((2, 2), np.float32), filler('type: "xavier" sparse: 1'))
