"""Recurrent layers: RNN and LSTM (unrolled through time into an internal net) and LSTMUnit.

Bottoms of RNN/LSTM: ``x`` (T, N, ...) — T timesteps of N independent streams —, ``cont``
(T, N) sequence-continuation flags (0 starts a new sequence), an optional static input
``x_static`` (N, ...), and with ``expose_hidden`` the initial hidden state(s). The layer builds
Caffe's unrolled net (the same layers, blob names and shared param names as
recurrent_layer.cpp, rnn_layer.cpp and lstm_layer.cpp) and runs it, so its param blobs are, in
``.caffemodel`` order: RNN W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o; LSTM W_xc (4H, D), b_c
(4H), [W_xc_static], W_hc (4H, H).
"""

import numpy as np

from ..kernels.recurrent import lstm_unit_backward, lstm_unit_forward
from ..proto import caffe_pb2
from .base import BlobVec, Layer
from .registry import register


# ---- LSTMUnit ------------------------------------------------------------------------------
@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    """One LSTM step: c = cont·f·c_prev + i·g, h = o·tanh(c), gates (i, f, o, g) from bottom 1.

    Bottoms: c_prev (1, N, H), gates (1, N, 4H), cont (1, N). Tops: c (1, N, H), h (1, N, H).
    No params. No backward into cont.
    """

    exact_bottoms = 3
    exact_tops = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottoms, tops):
        c_prev, gates, cont = bottoms
        if c_prev.num_axes != 3 or gates.num_axes != 3 or cont.num_axes != 2:
            self.fail(f"expects c_prev (1, N, H), gates (1, N, 4H), cont (1, N); got "
                      f"{c_prev.shape}, {gates.shape}, {cont.shape}")
        n = c_prev.shape[1]
        if any(b.shape[0] != 1 or b.shape[1] != n for b in bottoms):
            self.fail(f"all bottoms need shape (1, {n}, ...); got {c_prev.shape}, "
                      f"{gates.shape}, {cont.shape}")
        if gates.shape[2] != 4 * c_prev.shape[2]:
            self.fail(f"gates need 4·H = {4 * c_prev.shape[2]} channels, got {gates.shape[2]}")
        tops[0].reshape(c_prev.shape)
        tops[1].reshape(c_prev.shape)

    def forward(self, bottoms, tops):
        c_prev, gates, cont = bottoms
        lstm_unit_forward(c_prev.data[0], gates.data[0], cont.data[0], tops[0].data[0],
                          tops[1].data[0])

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[2]:
            self.fail("cannot backpropagate to the sequence indicators (bottom 2)")
        if not (propagate_down[0] or propagate_down[1]):
            return
        c_prev, gates, cont = bottoms
        c_prev_diff = c_prev.diff if propagate_down[0] else np.empty_like(c_prev.data)
        gates_diff = gates.diff if propagate_down[1] else np.empty_like(gates.data)
        lstm_unit_backward(c_prev.data[0], gates.data[0], cont.data[0], tops[0].data[0],
                           tops[0].diff[0], tops[1].diff[0], c_prev_diff[0], gates_diff[0])


# ---- the unrolled recurrent layers ---------------------------------------------------------
def _layer(net, type_name, name, bottoms=(), tops=()):
    layer = net.layer.add(type=type_name, name=name)
    layer.bottom.extend(bottoms)
    layer.top.extend(tops)
    return layer


def _inner_product(net, name, bottom, top, num_output, recurrent, params, bias, axis=2):
    layer = _layer(net, "InnerProduct", name, [bottom], [top])
    ip = layer.inner_product_param
    ip.num_output, ip.bias_term, ip.axis = num_output, bias, axis
    ip.weight_filler.CopyFrom(recurrent.weight_filler)
    if bias:
        ip.bias_filler.CopyFrom(recurrent.bias_filler)
    for param_name in params:
        layer.param.add(name=param_name)
    return layer


class RecurrentLayer(Layer):
    """Shared machinery of RNN and LSTM: build, reshape and run the unrolled net."""

    min_bottoms = 2
    max_bottoms = 5
    min_tops = 1
    recur_input_names = ()
    output_names = ()

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def recur_output_names(self):
        raise NotImplementedError

    def fill_unrolled_net(self, net):
        raise NotImplementedError

    def setup(self, bottoms, tops):
        from ..graph import make_state
        from ..net import Net  # the unrolled net is a Net; imported here, as it imports layers

        recurrent = self.param.recurrent_param
        if recurrent.num_output <= 0:
            self.fail("recurrent_param.num_output must be positive")
        self.num_output = recurrent.num_output
        x, cont = bottoms[0], bottoms[1]
        if x.num_axes < 2:
            self.fail(f"bottom 0 needs at least 2 axes (timesteps, streams, ...), got {x.shape}")
        self.T, self.N = x.shape[0], x.shape[1]
        if cont.shape != (self.T, self.N):
            self.fail(f"bottom 1 (cont) must have shape {(self.T, self.N)}, got {cont.shape}")
        self.expose_hidden = recurrent.expose_hidden
        hidden_bottoms = len(self.recur_input_names) if self.expose_hidden else 0
        self.static_input = len(bottoms) > 2 + hidden_bottoms
        if len(bottoms) != 2 + self.static_input + hidden_bottoms:
            hidden = " and the initial hidden states" if hidden_bottoms else ""
            self.fail(f"expects x, cont, [x_static]{hidden}; got {len(bottoms)} bottoms")
        if len(tops) != len(self.output_names) + hidden_bottoms:
            self.fail(f"expects {len(self.output_names) + hidden_bottoms} tops, got {len(tops)}")
        if self.static_input and bottoms[2].shape[0] != self.N:
            self.fail(f"x_static must have {self.N} rows, got shape {bottoms[2].shape}")
        net = caffe_pb2.NetParameter()
        inputs = _layer(net, "Input", "", tops=["x", "cont"])
        inputs.input_param.shape.add(dim=x.shape)
        inputs.input_param.shape.add(dim=cont.shape)
        if self.static_input:
            inputs.top.append("x_static")
            inputs.input_param.shape.add(dim=bottoms[2].shape)
        self.fill_unrolled_net(net)
        for layer in net.layer:
            layer.name = f"{self.name}_{layer.name}" if self.name else layer.name
        for name in self.output_names:
            pseudo = _layer(net, "Reduction", f"{name}_pseudoloss", [name], [f"{name}_pseudoloss"])
            pseudo.loss_weight.append(1)
        self.unrolled = Net(net, state=make_state(phase=self.phase))
        self.unrolled.set_debug_info(recurrent.debug_info)
        blobs = self.unrolled.blobs
        self.x_blob, self.cont_blob = blobs["x"], blobs["cont"]
        self.static_blob = blobs["x_static"] if self.static_input else None
        self.recur_inputs = [blobs[n] for n in self.recur_input_names]
        self.recur_outputs = [blobs[n] for n in self.recur_output_names()]
        self.outputs = [blobs[n] for n in self.output_names]
        self.last_layer = len(self.unrolled.records) - 1 - len(self.output_names)
        owners = self.unrolled.learnable_params
        if self.blobs:
            self.check_param_shapes([b.shape for b in owners])
            for owner, loaded in zip(owners, self.blobs):
                owner.data[...] = loaded.data
        self.blobs = BlobVec(owners)
        self.param_propagate_down = [True] * len(owners)
        for blob in self.recur_outputs:
            blob.diff[...] = 0

    def reshape(self, bottoms, tops):
        x, cont = bottoms[0], bottoms[1]
        if x.num_axes < 2 or x.shape[0] != self.T:
            self.fail(f"the number of timesteps changed: built for {self.T}, got shape {x.shape}")
        self.N = x.shape[1]
        if cont.shape != (self.T, self.N):
            self.fail(f"bottom 1 (cont) must have shape {(self.T, self.N)}, got {cont.shape}")
        self.x_blob.reshape(x.shape)
        self.cont_blob.reshape(cont.shape)
        if self.static_input:
            self.static_blob.reshape(bottoms[2].shape)
        for blob in self.recur_inputs:
            blob.reshape(1, self.N, self.num_output)
        self.unrolled.reshape()
        for top, blob in zip(tops, self.outputs):
            top.reshape(blob.shape)
        for top, blob in zip(tops[len(self.outputs):], self.recur_outputs):
            top.reshape(blob.shape)

    def _hidden_bottoms(self, bottoms):
        return bottoms[2 + self.static_input:] if self.expose_hidden else []

    def forward(self, bottoms, tops):
        self.x_blob.data[...] = bottoms[0].data
        self.cont_blob.data[...] = bottoms[1].data
        if self.static_input:
            self.static_blob.data[...] = bottoms[2].data
        if self.expose_hidden:
            for blob, bottom in zip(self.recur_inputs, self._hidden_bottoms(bottoms)):
                if blob.shape != bottom.shape:
                    self.fail(f"initial hidden state must have shape {blob.shape}, got "
                              f"{bottom.shape}")
                blob.data[...] = bottom.data
        else:
            # Caffe quirk: the state carries over between batches; cont = 0 resets it.
            for start, end in zip(self.recur_inputs, self.recur_outputs):
                start.data[...] = end.data
        self.unrolled.forward_from_to(0, self.last_layer)
        for top, blob in zip(tops, self.outputs):
            top.data[...] = blob.data
        for top, blob in zip(tops[len(self.outputs):], self.recur_outputs):
            top.data[...] = blob.data

    def backward(self, tops, propagate_down, bottoms):
        if propagate_down[1]:
            self.fail("cannot backpropagate to the sequence indicators (bottom 1)")
        for top, blob in zip(tops, self.outputs):
            blob.diff[...] = top.diff
        self.unrolled.backward_from_to(self.last_layer, 0)
        if propagate_down[0]:
            bottoms[0].diff[...] = self.x_blob.diff
        if self.static_input and propagate_down[2]:
            bottoms[2].diff[...] = self.static_blob.diff
        # Caffe leaves the exposed initial states' diffs unset; we give their true gradient.
        offset = 2 + self.static_input
        for j, (blob, bottom) in enumerate(zip(self.recur_inputs, self._hidden_bottoms(bottoms))):
            if propagate_down[offset + j]:
                bottom.diff[...] = blob.diff


def _timestep_scaffold(net, prefix, x_param_names, recurrent, width, static):
    """Layers common to RNN and LSTM before the time loop; returns (cont slice, x slice)."""
    cont_slice = _layer(net, "Slice", "cont_slice", ["cont"])
    cont_slice.slice_param.axis = 0
    _inner_product(net, "x_transform", "x", f"{prefix}_x", width, recurrent, x_param_names,
                   True).propagate_down.append(True)
    if static:
        _inner_product(net, f"{prefix}_x_static", "x_static", f"{prefix}_x_static_preshape",
                       width, recurrent, [f"{prefix}_static"], False,
                       axis=1).propagate_down.append(True)
        reshape = _layer(net, "Reshape", f"{prefix}_x_static_reshape",
                         [f"{prefix}_x_static_preshape"], [f"{prefix}_x_static"])
        reshape.reshape_param.shape.dim.extend([1, -1, width])
    x_slice = _layer(net, "Slice", f"{prefix}_x_slice", [f"{prefix}_x"])
    x_slice.slice_param.axis = 0
    return cont_slice, x_slice


def _scale_by_cont(net, t):
    layer = _layer(net, "Scale", f"h_conted_{t - 1}", [f"h_{t - 1}", f"cont_{t}"],
                   [f"h_conted_{t - 1}"])
    layer.scale_param.axis = 0


@register("RNN")
class RNNLayer(RecurrentLayer):
    """Elman RNN: h_t = tanh(W_hh·(cont_t·h_{t−1}) + W_xh·x_t + b_h), o_t = tanh(W_ho·h_t + b_o).

    recurrent_param: num_output, weight_filler, bias_filler, expose_hidden (debug_info is
    accepted). Bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0 (1, N, H)].
    Tops: o (T, N, H), [h_T (1, N, H)]. Params: W_xh (H, D), b_h (H), [W_xh_static (H, Ds)],
    W_hh (H, H), W_ho (H, H), b_o (H).
    """

    recur_input_names = ("h_0",)
    output_names = ("o",)

    def recur_output_names(self):
        return (f"h_{self.T}",)

    def fill_unrolled_net(self, net):
        recurrent, width = self.param.recurrent_param, self.num_output
        hidden = _layer(net, "Input", "", tops=["h_0"])
        hidden.input_param.shape.add(dim=[1, self.N, width])
        cont_slice, x_slice = _timestep_scaffold(net, "W_xh", ["W_xh", "b_h"], recurrent, width,
                                                 self.static_input)
        concat = caffe_pb2.LayerParameter(name="o_concat", type="Concat", top=["o"])
        concat.concat_param.axis = 0
        for t in range(1, self.T + 1):
            cont_slice.top.append(f"cont_{t}")
            x_slice.top.append(f"W_xh_x_{t}")
            _scale_by_cont(net, t)
            _inner_product(net, f"W_hh_h_{t - 1}", f"h_conted_{t - 1}", f"W_hh_h_{t - 1}", width,
                           recurrent, ["W_hh"], False)
            sum_bottoms = [f"W_hh_h_{t - 1}", f"W_xh_x_{t}"]
            if self.static_input:
                sum_bottoms.append("W_xh_x_static")
            _layer(net, "Eltwise", f"h_input_sum_{t}", sum_bottoms, [f"h_neuron_input_{t}"])
            _layer(net, "TanH", f"h_neuron_{t}", [f"h_neuron_input_{t}"], [f"h_{t}"])
            _inner_product(net, f"W_ho_h_{t}", f"h_{t}", f"W_ho_h_{t}", width, recurrent,
                           ["W_ho", "b_o"], True)
            _layer(net, "TanH", f"o_neuron_{t}", [f"W_ho_h_{t}"], [f"o_{t}"])
            concat.bottom.append(f"o_{t}")
        net.layer.add().CopyFrom(concat)


@register("LSTM")
class LSTMLayer(RecurrentLayer):
    """LSTM (Caffe's, without peepholes), unrolled over T timesteps with LSTMUnit cells.

    recurrent_param: num_output (H), weight_filler, bias_filler, expose_hidden. Bottoms: x
    (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0, c_0 (1, N, H)]. Tops: h (T, N, H),
    [h_T, c_T (1, N, H)]. Params: W_xc (4H, D), b_c (4H), [W_xc_static (4H, Ds)], W_hc (4H, H).
    """

    recur_input_names = ("h_0", "c_0")
    output_names = ("h",)

    def recur_output_names(self):
        return (f"h_{self.T}", "c_T")

    def fill_unrolled_net(self, net):
        recurrent, width = self.param.recurrent_param, self.num_output
        states = _layer(net, "Input", "", tops=["c_0", "h_0"])
        for _ in range(2):
            states.input_param.shape.add(dim=[1, self.N, width])
        cont_slice, x_slice = _timestep_scaffold(net, "W_xc", ["W_xc", "b_c"], recurrent,
                                                 4 * width, self.static_input)
        concat = caffe_pb2.LayerParameter(name="h_concat", type="Concat", top=["h"])
        concat.concat_param.axis = 0
        for t in range(1, self.T + 1):
            cont_slice.top.append(f"cont_{t}")
            x_slice.top.append(f"W_xc_x_{t}")
            _scale_by_cont(net, t)
            _inner_product(net, f"transform_{t}", f"h_conted_{t - 1}", f"W_hc_h_{t - 1}",
                           4 * width, recurrent, ["W_hc"], False)
            sum_bottoms = [f"W_hc_h_{t - 1}", f"W_xc_x_{t}"]
            if self.static_input:
                sum_bottoms.append("W_xc_x_static")
            _layer(net, "Eltwise", f"gate_input_{t}", sum_bottoms, [f"gate_input_{t}"])
            _layer(net, "LSTMUnit", f"unit_{t}", [f"c_{t - 1}", f"gate_input_{t}", f"cont_{t}"],
                   [f"c_{t}", f"h_{t}"])
            concat.bottom.append(f"h_{t}")
        _layer(net, "Split", "", [f"c_{self.T}"], ["c_T"])
        net.layer.add().CopyFrom(concat)

