"""Automatic Split layers where one top feeds several bottoms, named exactly as Caffe names them.

A top used by more than one bottom (a loss weight counts as a use) gets a ``Split`` layer right
after the layer that produced it: layer ``<blob>_<layer>_<top index>_split`` with tops
``<blob>_<layer>_<top index>_split_<k>``, and each consumer reads its own split top, so the
gradients of all consumers are summed by the Split layer's backward (insert_splits.cpp).
"""

from ..errors import ProtonetError
from ..proto import caffe_pb2


def split_layer_name(layer_name, blob_name, top_index):
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name, blob_name, top_index, split_index):
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def _count_uses(net_param, lines):
    last_producer = {}
    source_of_bottom = {}
    uses = {}
    loss_weights = {}
    for i, layer in enumerate(net_param.layer):
        for j, blob in enumerate(layer.bottom):
            if blob not in last_producer:
                raise ProtonetError(
                    f"unknown bottom blob '{blob}' (bottom index {j}): no earlier layer "
                    f"produces it", layer=layer.name, layer_type=layer.type,
                    line=lines[i] if lines else None)
            producer = last_producer[blob]
            source_of_bottom[(i, j)] = producer
            uses[producer] = uses.get(producer, 0) + 1
        for j, blob in enumerate(layer.top):
            last_producer[blob] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            producer = last_producer[layer.top[j]]
            loss_weights[producer] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                uses[producer] = uses.get(producer, 0) + 1
    return source_of_bottom, uses, loss_weights


def insert_splits(net_param, lines=None):
    """Copy of ``net_param`` with Split layers inserted; returns (net_param, source lines)."""
    source_of_bottom, uses, loss_weights = _count_uses(net_param, lines)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    out_lines = []
    next_split = {}
    for i, layer in enumerate(net_param.layer):
        line = lines[i] if lines else None
        copy = out.layer.add()
        copy.CopyFrom(layer)
        out_lines.append(line)
        for j, blob in enumerate(layer.bottom):
            producer = source_of_bottom[(i, j)]
            if uses.get(producer, 0) > 1:
                producer_name = net_param.layer[producer[0]].name
                k = next_split.get(producer, 0)
                next_split[producer] = k + 1
                copy.bottom[j] = split_blob_name(producer_name, blob, producer[1], k)
        for j, blob in enumerate(layer.top):
            count = uses.get((i, j), 0)
            if count <= 1:
                continue
            weight = loss_weights.get((i, j), 0.0)
            split = out.layer.add()
            out_lines.append(line)
            split.name = split_layer_name(layer.name, blob, j)
            split.type = "Split"
            split.bottom.append(blob)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, blob, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                del copy.loss_weight[:]
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out, out_lines
