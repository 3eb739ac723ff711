"""pycaffe's ``Classifier``: a Net that scales, crops or oversamples images and classifies them.

    net = protonet.Classifier("deploy.prototxt", "weights.caffemodel", image_dims=(256, 256),
                              mean=mean, raw_scale=255, channel_swap=(2, 1, 0))
    probs = net.predict([protonet.io.load_image("cat.jpg")])     # (N, classes)
"""

import numpy as np

from . import pycaffe
from .io.images import input_transformer, oversample as ten_crops, resize_image
from .net import TEST, Net


class Classifier(Net):
    """Net for image classification by centre crop or 10-crop oversampling.

    ``image_dims`` is the size images are scaled to before cropping (default: the net's input
    size, i.e. the whole image); ``mean``, ``input_scale``, ``raw_scale`` and ``channel_swap``
    configure the Transformer of the first input.
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs, oversample=True):
        """Class probabilities (N, C) for a sequence of H×W×K images.

        With ``oversample`` (default) each image's prediction is the mean over its ten crops
        (corners, centre, mirrored); otherwise the centre crop alone.
        """
        height, width = (int(d) for d in self.image_dims)
        scaled = np.zeros((len(inputs), height, width, inputs[0].shape[2]), dtype=np.float32)
        for ix, image in enumerate(inputs):
            scaled[ix] = resize_image(image, (height, width))
        if oversample:
            crops = ten_crops(scaled, self.crop_dims)
        else:
            centre = np.array([height, width]) / 2.0
            start = (centre - self.crop_dims / 2.0).astype(int)
            stop = (centre + self.crop_dims / 2.0).astype(int)
            crops = scaled[:, start[0]:stop[0], start[1]:stop[1], :]
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(crops), crops.shape[3]) + tuple(crops.shape[1:3]),
                            dtype=np.float32)
        for ix, crop in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, crop)
        predictions = pycaffe.forward_all(self, **{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions
