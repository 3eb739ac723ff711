"""NetState filtering and automatic Split insertion, rule by rule, on small nets."""

import pytest
from google.protobuf import text_format

from protonet.errors import ProtonetError
from protonet.graph import filter_net, insert_splits, make_state, state_meets_rule
from protonet.proto import caffe_pb2


def net_from(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def kept_names(net_text, **state_kwargs):
    net = net_from(net_text)
    filtered, _ = filter_net(net, make_state(**state_kwargs))
    return [layer.name for layer in filtered.layer]


RULES_NET = """
layer { name: "always" type: "Input" top: "x" }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "x" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "x" include { phase: TEST } }
layer { name: "not_in_test" type: "ReLU" bottom: "x" top: "x" exclude { phase: TEST } }
layer { name: "level_2_up" type: "ReLU" bottom: "x" top: "x" include { min_level: 2 } }
layer { name: "level_up_to_1" type: "ReLU" bottom: "x" top: "x" include { max_level: 1 } }
layer { name: "stage_ab" type: "ReLU" bottom: "x" top: "x" include { stage: "a" stage: "b" } }
layer { name: "not_stage_a" type: "ReLU" bottom: "x" top: "x" include { not_stage: "a" } }
layer { name: "either" type: "ReLU" bottom: "x" top: "x"
        include { stage: "a" } include { stage: "c" } }
"""


def test_phase_rules_keep_train_layers_in_train():
    names = kept_names(RULES_NET, phase=caffe_pb2.TRAIN)
    assert names == ["always", "train_only", "not_in_test", "level_up_to_1", "not_stage_a"]


def test_phase_rules_keep_test_layers_in_test():
    names = kept_names(RULES_NET, phase=caffe_pb2.TEST)
    assert names == ["always", "test_only", "level_up_to_1", "not_stage_a"]


def test_level_rules_follow_min_and_max_level():
    names = kept_names(RULES_NET, phase=caffe_pb2.TEST, level=2)
    assert "level_2_up" in names and "level_up_to_1" not in names


def test_stage_rule_needs_every_stage_and_not_stage_needs_none():
    only_a = kept_names(RULES_NET, phase=caffe_pb2.TEST, stages=("a",))
    assert "stage_ab" not in only_a and "not_stage_a" not in only_a and "either" in only_a
    both = kept_names(RULES_NET, phase=caffe_pb2.TEST, stages=("a", "b"))
    assert "stage_ab" in both
    c_only = kept_names(RULES_NET, phase=caffe_pb2.TEST, stages=("c",))
    assert "either" in c_only and "not_stage_a" in c_only


def test_include_and_exclude_together_is_an_error():
    net = net_from('layer { name: "bad" type: "ReLU" include { phase: TRAIN } '
                   'exclude { phase: TEST } }')
    with pytest.raises(ProtonetError, match="either include rules or exclude rules"):
        filter_net(net, make_state(phase=caffe_pb2.TRAIN))


def test_state_precedence_phase_replaces_stages_add_level_replaces():
    base = caffe_pb2.NetState(phase=caffe_pb2.TRAIN, level=3, stage=["deploy"])
    state = make_state(phase=caffe_pb2.TEST, level=1, stages=("extra",), base=base)
    assert state.phase == caffe_pb2.TEST and state.level == 1
    assert list(state.stage) == ["deploy", "extra"]


def test_rule_without_conditions_always_matches():
    assert state_meets_rule(caffe_pb2.NetState(), caffe_pb2.NetStateRule())


FANOUT_NET = """
layer { name: "data" type: "Input" top: "data" top: "label" }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
"""


def test_split_inserted_after_the_last_producer_with_caffe_names():
    net, _ = insert_splits(net_from(FANOUT_NET))
    names = [layer.name for layer in net.layer]
    assert names == ["data", "label_data_1_split", "ip", "relu", "ip_relu_0_split", "loss",
                     "acc"]
    split = net.layer[4]
    assert split.type == "Split" and list(split.bottom) == ["ip"]
    assert list(split.top) == ["ip_relu_0_split_0", "ip_relu_0_split_1"]
    assert list(net.layer[5].bottom) == ["ip_relu_0_split_0", "label_data_1_split_0"]
    assert list(net.layer[6].bottom) == ["ip_relu_0_split_1", "label_data_1_split_1"]


def test_no_split_for_a_single_consumer():
    net, _ = insert_splits(net_from('layer { name: "a" type: "Input" top: "x" } '
                                    'layer { name: "b" type: "ReLU" bottom: "x" top: "y" }'))
    assert [layer.type for layer in net.layer] == ["Input", "ReLU"]


def test_loss_weight_counts_as_a_use_and_moves_to_the_split():
    net, _ = insert_splits(net_from(
        'layer { name: "a" type: "Input" top: "x" } '
        'layer { name: "b" type: "ReLU" bottom: "x" top: "y" loss_weight: 2 } '
        'layer { name: "c" type: "ReLU" bottom: "y" top: "z" }'))
    split = net.layer[2]
    assert split.name == "y_b_0_split"
    assert list(split.loss_weight) == [2.0, 0.0]
    assert len(net.layer[1].loss_weight) == 0
    assert list(net.layer[3].bottom) == ["y_b_0_split_1"]


def test_unknown_bottom_names_the_blob_and_layer():
    with pytest.raises(ProtonetError, match="unknown bottom blob 'nope'") as info:
        insert_splits(net_from('layer { name: "a" type: "ReLU" bottom: "nope" top: "y" }'))
    assert info.value.layer == "a"
