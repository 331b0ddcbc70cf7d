"""Chapter 7's compressed LeNet-5 applied to any picture: ``mlcomp look``.

The chapter stores LeNet-5 by Deep Compression: 94% of its weights pruned
(the zoo's ``lenet5-fashion-sparse94``), the rest shared in k-means
codebooks (8 bits for the convolutions, 5 for the matrices), and the file
coded stage P+Q+H (:func:`mlcomp.pipeline.deep_compression_spec`).
:func:`default_model` makes that ``.mlc`` file once, into the cache, and
loads it back. It skips the chapter's epoch of centroid fine-tuning, which
needs the training set and half a minute and which, the chapter measures,
moves this model's accuracy by less than a tenth of a point.

A photograph is not a Fashion-MNIST image, so :func:`prepare` makes it look
like one, the way the data set was made (Xiao, Rasul & Vollgraf 2017): grey
levels, the object light on a black background (a picture with a light
background, which most product photos have, is inverted), cropped to the
object, scaled so that its longer side is 28 pixels, centred on a 28 × 28
canvas, then standardized like the training images. The model has only
ever seen 10 kinds of clothing, centred and alone: on anything else it
still answers one of them, and the probabilities say how sure it is, not
whether it is right.

>>> from PIL import Image
>>> x = prepare(Image.new("L", (40, 30), 255))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: the image is blank (one grey level): nothing to classify
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from mlcomp import datasets, models, utils

__all__ = [
    "DEFAULT_MODEL",
    "ImageError",
    "default_model",
    "load_image",
    "prepare",
    "probabilities",
]

DEFAULT_MODEL = "lenet5-fashion-sparse94"  # the pruned model chapter 7 stores
SIZE = 28


class ImageError(ValueError):
    """A file that is not an image Pillow can read, named with the reason."""


def load_image(path: str | os.PathLike):
    """Open an image file with Pillow (PNG, JPEG, GIF, BMP, TIFF, WebP, ...).

    >>> load_image(__file__)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlcomp.vision.ImageError: ...vision.py: not an image Pillow can read ...
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise ImageError(f"{path}: no such file") from None
        why = str(err).split("\n")[0] or type(err).__name__
        raise ImageError(
            f"{path}: not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, "
            f"WebP): {why}"
        ) from None


def prepare(image) -> torch.Tensor:
    """A picture as LeNet-5's input, (1, 1, 28, 28), made as Fashion-MNIST was.

    ``image`` is a Pillow image (any mode; transparency is laid on white).
    See the module's docstring for the steps.

    >>> from PIL import Image, ImageDraw
    >>> im = Image.new("RGB", (90, 60), "white")
    >>> ImageDraw.Draw(im).rectangle([20, 10, 49, 49], fill="black")
    >>> x = prepare(im)
    >>> x.shape, round(float(x.max()), 2) == round(float(x.min()), 2)
    (torch.Size([1, 1, 28, 28]), False)
    """
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    if grey.max() - grey.min() < 1e-6:
        raise ValueError("the image is blank (one grey level): nothing to classify")
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # a light background: make the object light
        grey, border = 1.0 - grey, 1.0 - border
    background = float(np.median(border))
    grey = np.clip((grey - background) / max(grey.max() - background, 1e-6), 0, 1)
    rows, cols = np.nonzero(grey > 0.1)  # the object: clearly above background
    if rows.size == 0:
        raise ValueError("no object stands out of the background: nothing to classify")
    crop = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = SIZE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray((255 * crop).astype(np.uint8)).resize(
        size, Image.Resampling.LANCZOS
    )
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(small, ((SIZE - size[0]) // 2, (SIZE - size[1]) // 2))
    x = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)
    x = (x - datasets.FASHION_MNIST_MEAN) / datasets.FASHION_MNIST_STD
    return x.reshape(1, 1, SIZE, SIZE)


def default_model(cache_dir: str | os.PathLike | None = None) -> models.LeNet5:
    """Chapter 7's P+Q+H LeNet-5 (no fine-tuning), from its ``.mlc`` file.

    The file is written into the cache (``$MLCOMP_CACHE/vision``) from the
    zoo's :data:`DEFAULT_MODEL`: seeded k-means weight sharing
    (:func:`mlcomp.pipeline.share_weights` with the chapter's bits, no
    fine-tuning), in about a second; later calls only load it.

    >>> default_model().training
    False
    """
    from mlcomp import coding, pipeline, zoo

    path = zoo.derived_path(DEFAULT_MODEL, "vision", "PQH", cache_dir)
    if not path.is_file():
        net = zoo.pretrained(DEFAULT_MODEL, progress=False)
        utils.set_seed(0)
        pipeline.share_weights(net, None, pipeline.layer_bits(net), epochs=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        coding.save_compressed(net.state_dict(), path, pipeline.deep_compression_spec())
    net = models.LeNet5()
    net.load_state_dict(coding.load_compressed(path))
    return net.eval()


def probabilities(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The 10 class probabilities (:data:`mlcomp.datasets.FASHION_MNIST_CLASSES`).

    >>> p = probabilities(models.LeNet5().eval(), torch.zeros(1, 1, 28, 28))
    >>> p.shape, round(float(p.sum()), 5)
    ((10,), 1.0)
    """
    with torch.inference_mode():
        return torch.softmax(net(x), dim=1)[0].double().numpy()
