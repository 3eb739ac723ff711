"""pycaffe's ``Detector``: classify windows of images, R-CNN style, with optional context.

    det = protonet.Detector("deploy.prototxt", "weights.caffemodel", raw_scale=255,
                            channel_swap=(2, 1, 0), context_pad=16)
    hits = det.detect_windows([("img.jpg", [(0, 0, 100, 100), (20, 30, 180, 200)])])

Windows are (ymin, xmin, ymax, xmax) in pixels. ``context_pad`` adds that many pixels of the
net input as surrounding context (R-CNN's feature extraction), padding outside the image with
the mean.
"""

import numpy as np

from . import pycaffe
from .errors import ProtonetError
from .io.images import input_transformer, load_image, resize_image
from .net import TEST, Net


class Detector(Net):
    """Net for windowed detection over a list of crops (see the module docstring)."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify each window of each image.

        ``images_windows``: iterable of (image filename, list of windows). Returns a list of
        ``{'window', 'prediction', 'filename'}`` dicts in input order.
        """
        images_windows = [(name, [np.asarray(w) for w in windows])
                          for name, windows in images_windows]
        window_inputs = []
        for image_fname, windows in images_windows:
            image = load_image(image_fname).astype(np.float32)
            window_inputs.extend(self.crop(image, window) for window in windows)
        if not window_inputs:
            return []
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2])
                            + tuple(self.blobs[in_].data.shape[2:]), dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        predictions = pycaffe.forward_all(self, **{in_: caffe_in})[self.outputs[0]]
        detections = []
        ix = 0
        for image_fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix],
                                   "filename": image_fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """Not available: Selective Search proposals need an external MATLAB tool."""
        raise ProtonetError("detect_selective_search needs the external Selective Search tool "
                            "(selective_search_ijcv_with_python + MATLAB), which protonet does "
                            "not ship; compute window proposals with any tool and pass them to "
                            "detect_windows([(filename, windows), ...])")

    def crop(self, im, window):
        """The window (ymin, xmin, ymax, xmax) of image ``im``, with context if configured."""
        window = np.asarray(window)
        if not self.context_pad:
            return im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        crop_size = self.blobs[self.inputs[0]].width     # assumes a square input, as pycaffe
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        # The box grown by the context, about the window's centre.
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        center = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = int(round(max(0, -box[0]) * scale_h))     # rows of context outside the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise ProtonetError(f"window {tuple(window)} lies outside the {im_h}×{im_w} image")
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        box = box.astype(int)
        context_crop = resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context_crop
        return crop

    def configure_crop(self, context_pad):
        """Set the crop size (the net input, as H×W×K) and the context padding and its mean."""
        in_ = self.inputs[0]
        inv_transpose = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_transpose]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        # Padding lives in unprocessed input space: undo transpose, channel swap and scale.
        crop_mean = np.array(mean, dtype=np.float32).transpose(inv_transpose)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_order)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean /= raw_scale
        self.crop_mean = crop_mean
