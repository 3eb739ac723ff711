"""show_filters / show_activations: PNG grids with known pixels on tiny nets with known weights."""

import argparse

import numpy as np
import pytest
from PIL import Image

import protonet
from protonet import cli_tools, visualize
from protonet.errors import ProtonetError

NET = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 2 kernel_size: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
        inner_product_param { num_output: 2 } }
"""

GREY_NET = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
layer { name: "split" type: "Convolution" bottom: "data" top: "split"
        convolution_param { num_output: 2 kernel_size: 1 } }
"""


def write_model(tmp_path, text, fill):
    """Write prototxt and a .caffemodel whose params are set by ``fill(net)``."""
    model = tmp_path / "net.prototxt"
    model.write_text(text)
    net = protonet.Net(str(model), protonet.TEST)
    fill(net)
    weights = tmp_path / "net.caffemodel"
    net.save(str(weights))
    return str(model), str(weights)


def fill_known(net):
    for blobs in net.params.values():
        w = blobs[0].data
        w[...] = np.arange(w.size, dtype=np.float32).reshape(w.shape) % 7 - 3
        blobs[1].data[...] = 0


def scaled(values):
    values = np.asarray(values, dtype=np.float64)
    return np.rint((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


def test_first_layer_filters_are_rgb_tiles_normalised_per_tile(tmp_path):
    model, weights = write_model(tmp_path, NET, fill_known)
    out = tmp_path / "conv1.png"
    image = visualize.show_filters(model, weights, "conv1", str(out), scale=1, pad=1)
    assert image.mode == "RGB" and image.size == (7, 4)     # 2 tiles of 2×2, 1-pixel borders
    pixels = np.asarray(Image.open(out))
    np.testing.assert_array_equal(pixels, np.asarray(image))
    w = protonet.Net(model, protonet.TEST, weights=weights).params["conv1"][0].data
    for i, x in enumerate((1, 4)):
        np.testing.assert_array_equal(pixels[1:3, x:x + 2], scaled(w[i].transpose(1, 2, 0)))
    assert (pixels[0] == 255).all() and (pixels[:, 3] == 255).all()     # white separators


def test_multi_channel_filters_are_grey_rows_per_filter(tmp_path):
    model, weights = write_model(tmp_path, NET, fill_known)
    image = visualize.show_filters(model, weights, "conv2", None, scale=2, pad=1)
    # 3 filters × 2 channels of 1×1, magnified 2×: 2 columns, 3 rows of 2-pixel tiles.
    assert image.mode == "L" and image.size == (2 * 3 + 1, 3 * 3 + 1)
    pixels = np.asarray(image)
    # Each 1×1 tile is constant, so normalising it alone gives mid grey (128).
    assert pixels[1, 1] == 128 and pixels[1:3, 1:3].tolist() == [[128, 128], [128, 128]]


def test_inner_product_weights_are_one_strip_per_output(tmp_path):
    model, weights = write_model(tmp_path, NET, fill_known)
    image = visualize.show_filters(model, weights, "ip", None, scale=1, pad=0)
    w = protonet.Net(model, protonet.TEST, weights=weights).params["ip"][0].data   # (2, 27)
    assert image.size == (2 * 27, 1)
    np.testing.assert_array_equal(np.asarray(image)[0, :27], scaled(w[0]))


def test_activations_are_grey_maps_normalised_over_the_layer(tmp_path):
    def fill(net):
        net.params["split"][0].data[:, 0, 0, 0] = [1.0, -1.0]
        net.params["split"][1].data[...] = 0
    model, weights = write_model(tmp_path, GREY_NET, fill)
    picture = np.linspace(0, 1, 9, dtype=np.float32).reshape(3, 3, 1)
    out = tmp_path / "act.png"
    image = visualize.show_activations(model, weights, picture, "split", str(out),
                                       raw_scale=None, channel_swap=None, scale=1, pad=1)
    assert image.size == (2 * 4 + 1, 4 + 1)
    pixels = np.asarray(Image.open(out))
    both = scaled(np.stack([picture[..., 0], -picture[..., 0]]))   # one range for the layer
    np.testing.assert_array_equal(pixels[1:4, 1:4], both[0])
    np.testing.assert_array_equal(pixels[1:4, 5:8], both[1])


def test_activations_from_an_image_file_with_caffe_preprocessing(tmp_path):
    model, weights = write_model(tmp_path, NET, fill_known)
    picture = tmp_path / "pic.png"
    Image.fromarray(np.full((6, 6, 3), [255, 0, 0], dtype=np.uint8)).save(picture)
    image = visualize.show_activations(model, weights, str(picture), "conv1", None, scale=1)
    net = protonet.Net(model, protonet.TEST, weights=weights)
    net.blobs["data"].data[...] = np.array([0, 0, 255.0])[:, None, None]    # BGR, 0..255
    expected = net.forward(end="conv1")["conv1"][0]
    assert image.size == (2 * 4 + 1, 4 + 1)         # two 3×3 maps side by side
    np.testing.assert_array_equal(np.asarray(image)[1:4, 1:4], scaled(expected)[0])


def test_unknown_layer_lists_the_choices(tmp_path):
    model, weights = write_model(tmp_path, NET, fill_known)
    with pytest.raises(ProtonetError, match="layers with weights: \\['conv1', 'conv2', 'ip'\\]"):
        visualize.show_filters(model, weights, "relu", None)


def run_command(name, argv):
    parser = argparse.ArgumentParser()
    _, build, command = cli_tools.CLI_COMMANDS[name]
    build(parser)
    return command(parser.parse_args(argv))


def test_show_commands_write_pngs(tmp_path):
    model, weights = write_model(tmp_path, NET, fill_known)
    filters = tmp_path / "filters.png"
    assert run_command("show-filters", [model, weights, "conv1", str(filters)]) == 0
    assert Image.open(filters).mode == "RGB"
    picture = tmp_path / "pic.png"
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(picture)
    acts = tmp_path / "acts.png"
    assert run_command("show-activations", [model, weights, str(picture), "conv2", str(acts),
                                            "--mean", "1,2,3", "--scale", "1"]) == 0
    assert Image.open(acts).size == (2 * 4 + 1, 2 * 4 + 1)      # 3 maps of 3×3 in a 2×2 grid
