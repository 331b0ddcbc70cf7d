"""The data sets every chapter uses, loaded offline first.

* Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70,000 grey 28x28 images of
  clothing in 10 classes, read from the original IDX files.
* The complete works of Shakespeare (Project Gutenberg texts), shipped with
  this project in ``data/shakespeare.tar.xz``; the validation split is whole
  held-out works, so no scene is both trained on and tested on.
* Palmer penguins (Horst, Hill & Gorman 2020): 344 rows with real missing
  values.
* Photographs: the RGB sample images scikit-image and scikit-learn ship inside
  their packages (eight to train a learned image codec on, three held out).

Every loader looks for local files before it thinks of the network, and when
it finds nothing it says exactly how to get the data.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from mlcomp.utils import cache_dir

__all__ = [
    "DataNotFoundError",
    "CorruptDataError",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FashionMNIST",
    "fashion_mnist",
    "read_idx",
    "Work",
    "shakespeare_works",
    "shakespeare",
    "penguins",
    "speech",
]

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Mean and standard deviation of all 47,040,000 training pixels scaled to
# [0, 1]; tests/test_datasets.py recomputes both from the data.
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
_IDX_DTYPES = {
    0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}  # fmt: skip


class DataNotFoundError(FileNotFoundError):
    """A data set is not on this machine; the message says how to get it."""


class CorruptDataError(ValueError):
    """A data file exists but is truncated, corrupted or not what it claims."""


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    The header is two zero bytes, a type code, the number of dimensions, and
    one big-endian int32 per dimension; the data follow in C order.

    >>> import tempfile, struct
    >>> p = Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
    >>> _ = p.write_bytes(struct.pack(">BBBBi", 0, 0, 8, 1, 3) + bytes([7, 8, 9]))
    >>> read_idx(p)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # gzip raises these on damaged input
        raise CorruptDataError(f"{path}: cannot decompress ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise CorruptDataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path}: truncated IDX header")
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise CorruptDataError(
            f"{path}: expected {expected} bytes for shape {shape}, found {len(raw)}"
            " (truncated or corrupted download?)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


class FashionMNIST(TensorDataset):
    """Fashion-MNIST as two tensors: ``images`` (N, 1, 28, 28) and ``labels`` (N,).

    Works with :class:`torch.utils.data.DataLoader` and, faster, with
    :func:`mlcomp.train.fit`, which slices the tensors directly. ``raw`` keeps
    the original uint8 pixels.

    >>> import numpy as np
    >>> ds = FashionMNIST(np.zeros((3, 28, 28), np.uint8), np.array([0, 1, 9]))
    >>> ds.images.shape, ds.labels.tolist(), ds.classes[9]
    (torch.Size([3, 1, 28, 28]), [0, 1, 9], 'Ankle boot')
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, raw: np.ndarray, labels: np.ndarray, normalize: bool = True):
        self.raw = torch.from_numpy(raw.copy())
        images = self.raw.unsqueeze(1).float().div_(255.0)
        if normalize:
            images.sub_(FASHION_MNIST_MEAN).div_(FASHION_MNIST_STD)
        super().__init__(images, torch.from_numpy(labels.astype(np.int64)))

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[1]


def _fashion_dirs(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    dirs = []
    if os.environ.get("MLCOMP_DATA"):
        base = Path(os.environ["MLCOMP_DATA"])
        dirs += [base / "fashion-mnist", base]
    dirs.append(DEBIAN_FASHION_MNIST)
    dirs.append(cache_dir("data") / "FashionMNIST" / "raw")  # torchvision's layout
    return dirs


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist(
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    download: bool = True,
) -> FashionMNIST:
    """Load the Fashion-MNIST ``"train"`` (60,000) or ``"test"`` (10,000) split.

    Looks in ``root`` if given; otherwise in ``$MLCOMP_DATA`` (or its
    ``fashion-mnist`` sub-folder), then in ``/usr/share/datasets/fashion-mnist``
    (Debian's ``dataset-fashion-mnist`` package), then in the mlcomp cache. If
    the files are nowhere and ``download`` is true, torchvision downloads them
    into the cache (this needs internet). Pixels are scaled to [0, 1] and, with
    ``normalize=True``, standardized with the training set's mean and std.

    >>> test = fashion_mnist("test")
    >>> test.images.shape, test.labels.shape
    (torch.Size([10000, 1, 28, 28]), torch.Size([10000]))
    >>> test.classes[int(test.labels[0])]
    'Ankle boot'
    """
    _check_split(split, ("train", "test"))
    images_stem, labels_stem, n = _FASHION_FILES[split]
    searched = _fashion_dirs(root)
    for directory in searched:
        images, labels = _find(directory, images_stem), _find(directory, labels_stem)
        if images and labels:
            return _fashion_from_files(images, labels, n, normalize)
    if download and root is None:
        error = _download_fashion_mnist()
        if error is None:
            directory = cache_dir("data") / "FashionMNIST" / "raw"
            return _fashion_from_files(
                _find(directory, images_stem),
                _find(directory, labels_stem),
                n,
                normalize,
            )
    else:
        error = "download=False"
    where = "\n  ".join(str(d) for d in searched)
    raise DataNotFoundError(
        f"Fashion-MNIST ({images_stem}, {labels_stem}) not found in:\n  {where}\n"
        f"and not downloaded ({error}). Get it in one of two ways:\n"
        "  * Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist\n"
        "  * anywhere: put the four *-ubyte.gz files from "
        "https://github.com/zalandoresearch/fashion-mnist in a folder and set "
        "MLCOMP_DATA=/that/folder (or run once while online to download them)."
    )


def _fashion_from_files(images: Path, labels: Path, n: int, normalize: bool):
    x, y = read_idx(images), read_idx(labels)
    if x.shape != (n, 28, 28) or y.shape != (n,):
        raise CorruptDataError(
            f"{images}, {labels}: shapes {x.shape} and {y.shape}, "
            f"expected ({n}, 28, 28) and ({n},)"
        )
    if y.max() > 9:
        raise CorruptDataError(f"{labels}: label {int(y.max())} outside 0..9")
    return FashionMNIST(x, y, normalize=normalize)


def _download_fashion_mnist() -> str | None:
    """Let torchvision fetch the files; return None on success, else the error."""
    try:
        from torchvision.datasets import FashionMNIST as TVFashionMNIST

        TVFashionMNIST(str(cache_dir("data")), train=True, download=True)
        TVFashionMNIST(str(cache_dir("data")), train=False, download=True)
    except Exception as exc:  # offline, mirror down, ...: report, don't hide
        return f"download failed: {type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------
# Shakespeare
# --------------------------------------------------------------------------

SHAKESPEARE_ARCHIVE = REPO_DATA / "shakespeare.tar.xz"
SHAKESPEARE_SHA256 = "85a94e4fd336b5fa758fb4c09804e28169f8bb0ba2c4959ce1f21f41b3d12490"
# Held out for validation: every tenth work in alphabetical order of file name
# (indices 9, 19, 29, 39 of 42): a history, a tragedy, a poem and a comedy,
# 9.0% of the characters.
SHAKESPEARE_VAL = ("henry_v", "macbeth", "rape_of_lucrece", "twelfth_night")


@dataclass(frozen=True)
class Work:
    """One work of the corpus: file stem, title, Project Gutenberg source, text.

    >>> macbeth = shakespeare_works("val")[1]
    >>> macbeth.title, len(macbeth.text) > 90_000
    ('Macbeth', True)
    """

    name: str
    title: str
    source: str
    text: str


def shakespeare_works(split: str = "all", *, path: str | os.PathLike | None = None):
    """Return the works of Shakespeare in ``split`` as a list of :class:`Work`.

    ``split`` is ``"train"`` (38 works), ``"val"`` (4 whole works) or ``"all"``
    (42). The archive's SHA-256 is checked before anything is read.

    >>> [w.title for w in shakespeare_works("val")]
    ['King Henry V', 'Macbeth', 'The Rape of Lucrece', 'Twelfth Night']
    """
    _check_split(split, ("train", "val", "all"))
    shipped = path is None  # only the shipped archive has a known checksum
    path = SHAKESPEARE_ARCHIVE if shipped else Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} is missing. It ships with the mlcomp repository (data/); "
            "restore it with `git checkout -- data/shakespeare.tar.xz`."
        )
    blob = path.read_bytes()
    if shipped and hashlib.sha256(blob).hexdigest() != SHAKESPEARE_SHA256:
        raise CorruptDataError(
            f"{path}: SHA-256 mismatch; the file is damaged. "
            "Restore it with `git checkout -- data/shakespeare.tar.xz`."
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:xz") as tar:
            files = {
                m.name.split("/", 1)[1]: tar.extractfile(m).read()
                for m in tar
                if m.isfile()
            }
        rows = files.pop("metadata.tsv").decode("utf-8").splitlines()[1:]
    except (tarfile.TarError, EOFError, KeyError, OSError) as exc:
        raise CorruptDataError(f"{path}: not a valid corpus archive ({exc})") from exc
    works = []
    for row in rows:
        file, title, source = row.split("\t")
        name = file.removesuffix("_gut.txt")
        held_out = name in SHAKESPEARE_VAL
        if split == "all" or (split == "val") == held_out:
            works.append(Work(name, title, source, files[file].decode("utf-8")))
    return works


def shakespeare(split: str = "train") -> str:
    """The text of the works in ``split``, in file-name order, joined by blank lines.

    >>> text = shakespeare("val")
    >>> len(text), text[:7]
    (457250, 'THE LIF')
    """
    return "\n\n".join(w.text for w in shakespeare_works(split))


# --------------------------------------------------------------------------
# Palmer penguins
# --------------------------------------------------------------------------


def penguins():
    """The Palmer penguins table (344 rows, 8 columns, real missing values).

    >>> df = penguins()
    >>> df.shape, int(df.isna().any(axis=1).sum())
    ((344, 8), 11)
    """
    try:
        from palmerpenguins import load_penguins
    except ImportError as exc:
        raise DataNotFoundError(
            "Palmer penguins come from the PyPI package `palmerpenguins`: "
            "pip install palmerpenguins"
        ) from exc
    return load_penguins()


# --------------------------------------------------------------------------
# Photographs
# --------------------------------------------------------------------------

# (package, file inside it): the colour photographs shipped in the wheels.
# Training: scikit-image's RGB photographs; held out: its cat and
# scikit-learn's two sample photos, never seen in training.
PHOTOS = {
    "train": (
        ("skimage", "data/astronaut.png"),
        ("skimage", "data/coffee.png"),
        ("skimage", "data/hubble_deep_field.jpg"),
        ("skimage", "data/ihc.png"),
        ("skimage", "data/motorcycle_left.png"),
        ("skimage", "data/motorcycle_right.png"),
        ("skimage", "data/retina.jpg"),
        ("skimage", "data/rocket.jpg"),
    ),
    "test": (
        ("skimage", "data/chelsea.png"),
        ("sklearn", "datasets/images/china.jpg"),
        ("sklearn", "datasets/images/flower.jpg"),
    ),
}
_PHOTO_PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}


def photos(split: str = "train") -> dict[str, np.ndarray]:
    """The colour photographs of ``split`` (``train`` or ``test``): name -> uint8 HxWx3.

    Read with Pillow from the files inside the installed packages (nothing is
    imported from them, nothing downloaded). Five of the eleven files are
    JPEGs already (``hubble_deep_field``, ``retina``, ``rocket``, ``china``,
    ``flower``): their pixels carry a JPEG's blocking at high quality, which
    a chapter comparing codecs must keep in mind.

    >>> sorted(photos("test"))
    ['chelsea', 'china', 'flower']
    >>> photos("test")["china"].shape
    (427, 640, 3)
    """
    import importlib.util

    from PIL import Image

    _check_split(split, tuple(PHOTOS))
    out = {}
    for package, file in PHOTOS[split]:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise DataNotFoundError(
                f"the photographs come with the PyPI package {_PHOTO_PACKAGES[package]}"
                f": pip install {_PHOTO_PACKAGES[package]}"
            )
        path = Path(spec.submodule_search_locations[0]) / file
        try:
            with Image.open(path) as image:
                out[path.stem] = np.asarray(image.convert("RGB"))
        except OSError as exc:
            raise CorruptDataError(f"cannot read the photograph {path}: {exc}") from exc
    return out


# --------------------------------------------------------------------------
# Synthetic speech
# --------------------------------------------------------------------------


def speech(text: str, voice: str = "en-us", rate: int = 150) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng; return (int16 samples, sample rate in Hz).

    Deterministic for a given espeak-ng version, offline, and fast (about a
    second of audio in a few milliseconds). ``voice`` is an espeak-ng voice,
    optionally with a variant (``"en-us+f2"``); ``rate`` is in words per
    minute.

    >>> samples, sr = speech("hello")
    >>> samples.dtype, sr, bool(0.2 < samples.size / sr < 2)
    (dtype('int16'), 22050, True)
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataNotFoundError(
            "speech synthesis needs espeak-ng: `sudo apt-get install espeak-ng` "
            "(Debian/Ubuntu; `make apt` does it), or `brew install espeak-ng`"
        )
    if not text.strip():
        raise ValueError("text to speak is empty")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speech.wav")
        subprocess.run(
            [exe, "-v", voice, "-s", str(int(rate)), "-w", path, text],
            check=True, capture_output=True,
        )  # fmt: skip
        with wave.open(path) as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise CorruptDataError("espeak-ng did not write 16-bit mono audio")
            sr = w.getframerate()
            samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()
    return samples, sr
