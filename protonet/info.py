"""`protonet info`: the per-layer table of a net — shapes, params and activation memory."""

import numpy as np


def net_summary(net):
    """Rows (name, type, bottoms, tops, output shapes, param count, activation values) and totals."""
    rows = []
    for record in net.records:
        bottoms = [net._blob_names[b] for b in record.bottom_ids]
        tops = [net._blob_names[t] for t in record.top_ids]
        in_place = [t for t in record.top_ids if t in record.bottom_ids]
        shapes = [tuple(t.shape) for t in record.tops]
        shared = getattr(record, "param_shared", [False] * len(record.layer.blobs))
        params = sum(b.count for b, s in zip(record.layer.blobs, shared) if not s)
        activations = sum(t.count for t, tid in zip(record.tops, record.top_ids)
                          if tid not in in_place)
        rows.append((record.param.name, record.layer.type, bottoms, tops, shapes, params,
                     activations))
    return rows


def format_summary(net):
    """The table as text, with totals per batch and per image."""
    rows = net_summary(net)
    header = ("layer", "type", "bottoms -> tops", "output shape", "params", "activations")
    lines = []
    table = []
    for name, kind, bottoms, tops, shapes, params, acts in rows:
        wiring = f"{','.join(bottoms) or '-'} -> {','.join(tops) or '-'}"
        shape_text = " ".join("x".join(str(d) for d in s) or "scalar" for s in shapes)
        table.append((name, kind, wiring, shape_text, f"{params:,}", f"{acts:,}"))
    widths = [max(len(str(r[i])) for r in table + [header]) for i in range(len(header))]
    for row in [header] + table:
        lines.append("  ".join(str(c).ljust(w) if i < 4 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
    total_params = sum(r[5] for r in rows)
    input_values = sum(net.blobs[name].count for name in net.inputs)
    total_acts = sum(r[6] for r in rows)
    batch = next((net.blobs[n].shape[0] for n in net.inputs if net.blobs[n].shape), None)
    if batch is None:
        first = next((r for r in net.records if r.tops and r.tops[0].shape), None)
        batch = first.tops[0].shape[0] if first else 1
    batch = max(int(batch), 1)
    lines.append("")
    lines.append(f"total params: {total_params:,} ({total_params * 4 / 2**20:.1f} MiB as float32)")
    lines.append(f"total activations: {total_acts:,} values for batch {batch} "
                 f"({total_acts * 4 / 2**20:.1f} MiB); per image: {total_acts // batch:,} values "
                 f"(inputs included: {input_values // batch:,})")
    lines.append(f"Caffe's \"Memory required for data\" (in-place tops counted again): "
                 f"{net.memory_used:,} bytes")
    return "\n".join(lines)


def count_params(net):
    return int(np.sum([r[5] for r in net_summary(net)]))
