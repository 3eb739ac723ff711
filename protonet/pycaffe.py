"""pycaffe's batch helpers on a Net: ``forward_all``, ``forward_backward_all``, ``_batch``.

Written as functions of the net so that they can be attached as methods
(``Net.forward_all = pycaffe.forward_all``) and also called directly
(``pycaffe.forward_all(net, data=images)``) by code that must work either way.

``forward_all`` feeds any number of input rows through the net, one batch at a time (the input
blob's first dimension), pads the last batch with zeros and drops the padded rows from the
results, as pycaffe does.
"""

import itertools

import numpy as np

from .errors import ProtonetError

__all__ = ["forward_all", "forward_backward_all", "batch"]


def batch(net, blobs):
    """Yield ``{name: rows}`` dicts of the net's batch size over ``blobs`` (name → array).

    The last batch is padded with zero rows when the row count is not a multiple of it.
    """
    blobs = {name: np.asarray(rows) for name, rows in blobs.items()}
    if not blobs:
        return
    counts = {name: len(rows) for name, rows in blobs.items()}
    if len(set(counts.values())) != 1:
        raise ProtonetError(f"all arrays must have the same number of rows, got {counts}")
    num = next(iter(counts.values()))
    first = next(iter(blobs))
    batch_size = net.blobs[first].shape[0] if first in net.blobs else \
        next(iter(net.blobs.values())).shape[0]
    for start in range(0, num - num % batch_size, batch_size):
        yield {name: rows[start:start + batch_size] for name, rows in blobs.items()}
    remainder = num % batch_size
    if remainder:
        padded = {}
        for name, rows in blobs.items():
            padding = np.zeros((batch_size - remainder,) + rows.shape[1:], dtype=rows.dtype)
            padded[name] = np.concatenate([rows[-remainder:], padding])
        yield padded


def _collect(store, arrays):
    for name, values in arrays.items():
        store[name].append(np.array(values, copy=True))


def _package(store, keep):
    """Concatenate each name's batches and drop the padding rows beyond ``keep``.

    A scalar output (a loss) gives one value per batch.
    """
    return {name: np.concatenate([np.atleast_1d(p) for p in parts])[:keep] if parts
            else np.zeros((0,), np.float32) for name, parts in store.items()}


def _row_count(arrays, what):
    if not arrays:
        raise ProtonetError(f"{what} needs input arrays as keyword arguments (name=array), one "
                            f"per net input")
    return len(next(iter(arrays.values())))


def forward_all(net, blobs=None, **kwargs):
    """Run forward over all rows of the keyword inputs; return ``{blob name: all rows}``.

    ``blobs`` lists extra blobs to return besides the net's outputs.
    """
    num = _row_count(kwargs, "forward_all")
    all_outs = {name: [] for name in set(net.outputs + list(blobs or []))}
    for chunk in batch(net, kwargs):
        _collect(all_outs, net.forward(blobs=blobs, **chunk))
    return _package(all_outs, num)


def forward_backward_all(net, blobs=None, diffs=None, **kwargs):
    """Forward and backward over all rows; return ``(outputs, diffs)`` dicts of all rows.

    Keyword arrays named after net inputs feed forward; arrays named after net outputs are the
    top diffs for backward (omit them for a net ending in a loss). ``blobs`` and ``diffs`` list
    extra blobs whose data and diff to return.
    """
    inputs = {name: kwargs[name] for name in net.inputs if name in kwargs}
    top_diffs = {name: kwargs[name] for name in net.outputs if name in kwargs}
    unknown = set(kwargs) - set(inputs) - set(top_diffs)
    if unknown:
        raise ProtonetError(f"{sorted(unknown)} are neither inputs {net.inputs} nor outputs "
                            f"{net.outputs} of the net")
    num = _row_count(inputs or top_diffs, "forward_backward_all")
    all_outs = {name: [] for name in set(net.outputs + list(blobs or []))}
    all_diffs = {name: [] for name in set(net.inputs + list(diffs or []))}
    pairs = itertools.zip_longest(batch(net, inputs), batch(net, top_diffs), fillvalue={})
    for forward_batch, backward_batch in pairs:
        _collect(all_outs, net.forward(blobs=blobs, **forward_batch))
        _collect(all_diffs, net.backward(diffs=diffs, **backward_batch))
    return _package(all_outs, num), _package(all_diffs, num)
