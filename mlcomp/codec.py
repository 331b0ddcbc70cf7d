"""A learned transform codec for images (Ballé, Laparra & Simoncelli 2017).

JPEG fixes its transform (the 8x8 DCT) and its quantizer tables and entropy
codes what comes out; this codec *learns* all three. An analysis transform
``g_a`` (three strided 5x5 convolutions with GDN between them) maps an image
``x`` to latents ``y`` at an eighth of its resolution; they are rounded to
integers ``q``; a synthesis transform ``g_s`` maps ``q`` back to pixels. The
rate is the information of ``q`` under a learned *factorized prior* (one
density per latent channel, Ballé et al. 2018, appendix 6.1), and the three
are trained together on

    L = R + lambda * D = -log2 p(q) / pixels + lambda * 255**2 * MSE(x, g_s(q)),

one model per ``lambda``. Rounding has no gradient, so training replaces it
by additive uniform noise ``y + U(-1/2, 1/2)``: the density of the noisy
latent is the prior convolved with the box, which equals ``p`` integrated
over the unit interval around the value, exactly the probability the rounded
latent gets at test time.

A real file: after training, :meth:`FactorizedPrior.freeze` turns every
channel's density into integer frequencies over 63 integer values and an
escape (stored with the weights), the rounded latents are coded with the
book's rANS (:func:`mlcomp.coding.rans.encode_tabled`) under those tables,
and values outside a channel's window go to a side stream of varints. The
decoder computes no float probability at all, so decoding is exact on any
machine. The ``.mlci`` file is a checked stream (CRC-32) whose header names
the model and a fingerprint of its weights; a file made by another model is
refused.

>>> net = Codec(channels=8, latent=8).eval()
>>> net.prior.freeze()
>>> image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
>>> data = net.compress(image)
>>> net.decompress(data).shape
(20, 30, 3)
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlcomp import utils
from mlcomp.coding import rans
from mlcomp.coding._format import (
    CorruptFileError,
    pack,
    read_varints,
    unpack,
    write_varints,
)
from mlcomp.coding.model import Categorical
from mlcomp.measure import psnr  # noqa: F401  (re-exported: rate-distortion of images)

__all__ = [
    "GDN",
    "FactorizedPrior",
    "Codec",
    "CodecRecipe",
    "RECIPES",
    "train_recipe",
    "rate_distortion",
    "dct",
    "model_for",
    "psnr",
    "jpeg",
    "read_header",
    "rate_at",
    "overhead",
]

FACTOR = 8  # g_a halves the resolution three times
WINDOW = 64  # table columns per channel: an escape and 63 integer values
PRECISION = 16  # the tables' frequencies sum to 2**16
_MAGIC, _VERSION = b"MLCI", 1


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé, Laparra & Simoncelli 2016).

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j**2)`` over channels at each
    pixel; the inverse (``inverse=True``, in the synthesis transform)
    multiplies instead. ``beta`` and ``gamma`` are kept non-negative by
    storing their square roots, bounded below.

    >>> x = torch.full((1, 1, 1, 1), 3.0)  # initially beta = 1, gamma = 0.1
    >>> round(GDN(1)(x).item(), 4), round(3 / math.sqrt(1 + 0.1 * 9), 4)
    (2.1764, 2.1764)
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6):
        super().__init__()
        self.inverse = inverse
        self.beta_min = beta_min
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        self.gamma_sqrt = nn.Parameter(math.sqrt(0.1) * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        beta = self.beta_sqrt.clamp(min=math.sqrt(self.beta_min)) ** 2
        gamma = self.gamma_sqrt.clamp(min=0) ** 2
        c = gamma.shape[0]
        norm = torch.sqrt(F.conv2d(x * x, gamma.view(c, c, 1, 1), beta))
        return x * norm if self.inverse else x / norm


class FactorizedPrior(nn.Module):
    """One learned density per latent channel (Ballé et al. 2018, appendix 6.1).

    The cumulative distribution of channel ``c`` is a small monotone network
    ``sigmoid(f_K(... f_1(v)))`` of its scalar input, each layer
    ``f_k(v) = g(H_k v + b_k)`` with ``H_k = softplus(.)`` (positive, so the
    composition increases) and ``g(u) = u + tanh(a_k) * tanh(u)`` between
    layers (``tanh(a_k) > -1`` keeps it increasing). The probability of an
    integer ``q`` is ``c(q + 1/2) - c(q - 1/2)``, which is also the density
    of ``y + U(-1/2, 1/2)`` at ``q`` during training.

    :meth:`freeze` writes the integer tables the coder uses into the buffers
    ``freq`` (channels x 64) and ``offset`` (channels): column 0 is the
    escape, column ``1 + k`` the value ``offset + k``.

    >>> prior = FactorizedPrior(4)
    >>> p = prior.likelihood(torch.zeros(1, 4, 2, 2))
    >>> p.shape, bool((p > 0).all() and (p < 1).all())
    (torch.Size([1, 4, 2, 2]), True)
    """

    def __init__(
        self,
        channels: int,
        filters: tuple[int, ...] = (3, 3, 3),
        init_scale: float = 10.0,
    ):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(dims) - 1):
            # softplus(init) = 1 / (scale * fan_out): the initial cdf spreads
            # over about init_scale units
            init = math.log(math.expm1(1 / scale / dims[k + 1]))
            self.matrices.append(
                nn.Parameter(torch.full((channels, dims[k + 1], dims[k]), init))
            )
            self.biases.append(nn.Parameter(torch.rand(channels, dims[k + 1], 1) - 0.5))
            if k < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[k + 1], 1)))
        self.register_buffer("freq", torch.zeros(channels, WINDOW, dtype=torch.int32))
        self.register_buffer("offset", torch.zeros(channels, dtype=torch.int32))

    @property
    def channels(self) -> int:
        return self.offset.numel()

    def logits(self, v: torch.Tensor) -> torch.Tensor:
        """The logit of every channel's cdf at ``v`` (channels, 1, N)."""
        for k, (matrix, bias) in enumerate(
            zip(self.matrices, self.biases, strict=True)
        ):
            v = torch.matmul(F.softplus(matrix), v) + bias
            if k < len(self.factors):
                v = v + torch.tanh(self.factors[k]) * torch.tanh(v)
        return v

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """``c(y + 1/2) - c(y - 1/2)`` per element of ``y`` (B, C, H, W).

        Floored at 1e-9 so that the rate's logarithm stays finite.
        """
        b, c, h, w = y.shape
        v = y.transpose(0, 1).reshape(c, 1, -1)
        lower, upper = self.logits(v - 0.5), self.logits(v + 0.5)
        # the difference of two sigmoids taken on the side where they are small
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.clamp(min=1e-9).reshape(c, b, h, w).transpose(0, 1)

    @property
    def frozen(self) -> bool:
        return bool((self.freq.sum(dim=1) == 1 << PRECISION).all())

    @torch.no_grad()
    def freeze(self, reach: int = 512) -> None:
        """Turn each density into integer frequencies (in float64, once).

        Each channel's window is the 63 consecutive integers holding the most
        probability among ``-reach .. reach``; the escape gets the rest (at
        least ``2**-16``). :meth:`Categorical.frequencies` rounds to integers
        summing to ``2**16``, every value with non-zero probability at least 1.
        """
        prior = copy.deepcopy(self).double()
        grid = torch.arange(-reach, reach + 1, dtype=torch.float64)
        v = grid.expand(self.channels, 1, -1)
        lower, upper = prior.logits(v - 0.5), prior.logits(v + 0.5)
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))[:, 0]
        pmf = pmf.numpy()
        width = WINDOW - 1
        sums = np.cumsum(np.pad(pmf, ((0, 0), (1, 0))), axis=1)
        mass = sums[:, width:] - sums[:, :-width]  # window starting at each grid point
        start = mass.argmax(axis=1)
        for c in range(self.channels):
            window = pmf[c, start[c] : start[c] + width]
            escape = max(1.0 - float(window.sum()), 2.0**-PRECISION)
            probs = np.concatenate([[escape], window])
            self.freq[c] = torch.from_numpy(
                Categorical(probs / probs.sum()).frequencies(PRECISION).astype(np.int32)
            )
            self.offset[c] = int(grid[start[c]])


class Codec(nn.Module):
    """Analysis transform, rounding, synthesis transform, factorized prior.

    ``forward(x)`` takes images in [0, 1] (B, 3, H, W), H and W multiples of
    8, and returns the reconstruction and the likelihoods of the latents:
    with uniform noise in training mode, rounded in eval mode.
    :meth:`compress` and :meth:`decompress` make and read real ``.mlci``
    bytes (the prior must be frozen first).

    >>> net = Codec(channels=4, latent=4).eval()
    >>> x_hat, likelihood = net(torch.rand(1, 3, 16, 24))
    >>> x_hat.shape, likelihood.shape
    (torch.Size([1, 3, 16, 24]), torch.Size([1, 4, 2, 3]))
    """

    def __init__(self, channels: int = 48, latent: int = 48):
        super().__init__()

        def down(i, o):
            return nn.Conv2d(i, o, 5, stride=2, padding=2)

        def up(i, o):
            return nn.ConvTranspose2d(i, o, 5, stride=2, padding=2, output_padding=1)

        n, m = channels, latent
        self.analysis = nn.Sequential(
            down(3, n), GDN(n), down(n, n), GDN(n), down(n, m)
        )
        self.synthesis = nn.Sequential(
            up(m, n), GDN(n, inverse=True), up(n, n), GDN(n, inverse=True), up(n, 3)
        )
        self.prior = FactorizedPrior(m)
        self.name = "codec"  # what the file's header calls the model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.analysis(x)  # (B, M, H/8, W/8)
        if self.training:
            y_hat = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            y_hat = torch.round(y)
        return self.synthesis(y_hat), self.prior.likelihood(y_hat)

    def fingerprint(self) -> bytes:
        """The first 8 bytes of a SHA-256 over the state dict (names, shapes, bytes)."""
        h = hashlib.sha256()
        for key, value in sorted(self.state_dict().items()):
            h.update(key.encode() + str(tuple(value.shape)).encode())
            h.update(value.detach().contiguous().cpu().numpy().tobytes())
        return h.digest()[:8]

    # -- real bytes ---------------------------------------------------------

    @torch.no_grad()
    def latents(self, image: np.ndarray) -> np.ndarray:
        """The rounded latents of an image (uint8 H x W x 3).

        Returns int64 of shape (M, ceil(H/8), ceil(W/8)).
        """
        x = _to_tensor(image)
        return torch.round(self.analysis(x))[0].to(torch.int64).numpy()

    def _symbols(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each latent's table column (0: escaped) and its channel, flattened."""
        freq = self.prior.freq.numpy()
        offset = self.prior.offset.numpy().astype(np.int64)
        rows = np.broadcast_to(np.arange(q.shape[0])[:, None, None], q.shape).reshape(
            -1
        )
        k = (q - offset[:, None, None]).reshape(-1) + 1  # column of each value
        inside = (k >= 1) & (k < WINDOW)
        inside[inside] = freq[rows[inside], k[inside]] > 0
        return np.where(inside, k, 0), rows

    def table_bits(self, q: np.ndarray) -> float:
        """The information of latents ``q`` under the frozen integer tables.

        What an ideal coder would spend on the symbols rANS codes (escapes
        at the escape's probability; the escaped values' varints not counted).
        """
        symbols, rows = self._symbols(q)
        freq = self.prior.freq.numpy().astype(np.float64)
        return float(-np.log2(freq[rows, symbols] / (1 << PRECISION)).sum())

    def compress(self, image: np.ndarray) -> bytes:
        """The ``.mlci`` bytes of ``image`` (uint8, H x W x 3)."""
        if not self.prior.frozen:
            raise RuntimeError("the prior is not frozen: call net.prior.freeze() first")
        h, w = _check_image(image).shape[:2]
        q = self.latents(image)
        symbols, rows = self._symbols(q)
        values = q.reshape(-1)[symbols == 0]
        escapes = write_varints(np.where(values >= 0, 2 * values, -2 * values - 1))
        words = rans.encode_tabled(symbols, rows, self.prior.freq.numpy(), PRECISION)
        name = self.name.encode()
        header = bytes([len(name)]) + name + self.fingerprint()
        header += write_varints([h, w, values.size, len(escapes)])
        return pack(_MAGIC, _VERSION, header, escapes + words)

    @torch.no_grad()
    def decode_latents(self, data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
        """The rounded latents and the image size coded in ``data``."""
        info = read_header(data)
        if info["fingerprint"] != self.fingerprint():
            raise CorruptFileError(
                f"this file was coded with the model {info['model']!r} "
                f"(fingerprint {info['fingerprint'].hex()}), not with this one "
                f"({self.name!r}, {self.fingerprint().hex()})"
            )
        h, w, n_escapes, escape_bytes = info["sizes"]
        payload = info["payload"]
        if escape_bytes > len(payload):
            raise CorruptFileError("image stream's escape values are truncated")
        escapes, used = read_varints(
            payload[:escape_bytes], n_escapes, 0, "escape values"
        )
        if used != escape_bytes:
            raise CorruptFileError("image stream's escape values have trailing bytes")
        m = self.prior.channels
        shape = (m, -(-h // FACTOR), -(-w // FACTOR))
        rows = np.broadcast_to(np.arange(m)[:, None, None], shape).reshape(-1)
        symbols = rans.decode_tabled(
            payload[escape_bytes:], rows, self.prior.freq.numpy(), PRECISION
        )
        escaped = symbols == 0
        if int(escaped.sum()) != n_escapes:
            raise CorruptFileError(
                "image stream's escape count does not match its data"
            )
        offset = self.prior.offset.numpy().astype(np.int64)
        q = symbols - 1 + offset[rows]
        z = np.array(escapes, dtype=np.int64)
        q[escaped] = np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
        return q.reshape(shape), (h, w)

    def round_trip(self, image: np.ndarray) -> tuple[bytes, np.ndarray]:
        """The ``.mlci`` bytes of ``image`` and the image they decode to."""
        data = self.compress(image)
        return data, self.decompress(data)

    @torch.no_grad()
    def decompress(self, data: bytes) -> np.ndarray:
        """The image (uint8 H x W x 3) a ``.mlci`` stream codes."""
        q, (h, w) = self.decode_latents(data)
        x = self.synthesis(torch.from_numpy(q).float()[None])
        return _to_image(x[..., :h, :w])


def read_header(data: bytes) -> dict:
    """The model name, fingerprint and sizes of a ``.mlci`` stream (CRC checked).

    ``sizes`` are the image's height and width, the number of escaped
    latents and the bytes of their varints.

    >>> net = Codec(channels=4, latent=4).eval(); net.prior.freeze()
    >>> info = read_header(net.compress(np.zeros((9, 17, 3), np.uint8)))
    >>> info["model"], info["sizes"][:2]
    ('codec', [9, 17])
    """
    header, payload = unpack(data, _MAGIC, _VERSION)
    if not header or len(header) < 1 + header[0] + 8:
        raise CorruptFileError("image stream header is truncated")
    n = header[0]
    try:
        model = header[1 : 1 + n].decode()
    except UnicodeDecodeError as exc:
        raise CorruptFileError("image stream header names no model") from exc
    fingerprint = header[1 + n : 9 + n]
    sizes, pos = read_varints(header, 4, 9 + n, "image stream header")
    if pos != len(header) or not (
        1 <= sizes[0] <= 1 << 16 and 1 <= sizes[1] <= 1 << 16
    ):
        raise CorruptFileError("image stream header has invalid sizes")
    return {
        "model": model,
        "fingerprint": fingerprint,
        "sizes": sizes,
        "payload": payload,
    }


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"an image is uint8 H x W x 3, got {image.dtype} {image.shape}"
        )
    if min(image.shape[:2]) < 1 or max(image.shape[:2]) > 1 << 16:
        raise ValueError(f"image sides must be in 1 .. 65536, got {image.shape[:2]}")
    return image


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> (1, 3, H', W') in [0, 1].

    Edges are replicated up to multiples of 8.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    pad = (0, -w % FACTOR, 0, -h % FACTOR)
    return F.pad(x, pad, mode="replicate") if any(pad) else x


def _to_image(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def jpeg(image: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """JPEG bytes of ``image`` at ``quality`` (Pillow/libjpeg, optimized Huffman
    tables, 4:2:0 chroma) and the image decoded back.

    >>> data, back = jpeg(np.zeros((8, 8, 3), np.uint8), 50)
    >>> data[:2] == b"\\xff\\xd8", back.shape
    (True, (8, 8, 3))
    """
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_check_image(image)).save(
        buf, "JPEG", quality=quality, optimize=True, subsampling="4:2:0"
    )
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        return data, np.asarray(im.convert("RGB"))


# -- training ------------------------------------------------------------------


@dataclass(frozen=True)
class CodecRecipe:
    """Everything that determines a learned codec's weights.

    ``steps`` Adam steps on ``batch_size`` random ``crop`` x ``crop`` crops
    (random flips) of the training photographs
    (:func:`mlcomp.datasets.photos`), loss ``R + lam * 255**2 * MSE`` with
    ``R`` in bits per pixel; the learning rate decays by a cosine to a tenth.

    >>> CodecRecipe(lam=0.01).model
    'codec'
    """

    lam: float = 0.01
    steps: int = 4000
    lr: float = 1e-3
    batch_size: int = 8
    crop: int = 64
    channels: int = 48
    latent: int = 48
    seed: int = 0
    threads: int = 2

    model = "codec"

    def __post_init__(self) -> None:
        if not (
            self.lam > 0 and self.steps >= 1 and self.lr > 0 and self.batch_size >= 1
        ):
            raise ValueError(f"invalid recipe {self}")
        if self.crop < FACTOR or self.crop % FACTOR:
            raise ValueError(
                f"crop must be a positive multiple of {FACTOR}, got {self.crop}"
            )

    def build(self) -> Codec:
        return Codec(self.channels, self.latent)

    def digest(self) -> str:
        from mlcomp import zoo

        return zoo._digest(self, {"data": "photos-v1"})


# One model per lambda, from about a tenth of a bit per pixel to about one
# (a few minutes of training each on two cores, pinned numerics); the two
# lowest again from another seed, where the comparison with JPEG is closest.
RECIPES: dict[str, CodecRecipe] = {
    **{
        f"codec-{tag}": CodecRecipe(lam=lam)
        for tag, lam in (
            ("l0004", 0.0004),
            ("l0016", 0.0016),
            ("l0064", 0.0064),
            ("l0256", 0.0256),
        )
    },
    **{
        f"codec-{tag}-seed1": CodecRecipe(lam=lam, seed=1)
        for tag, lam in (("l0004", 0.0004), ("l0016", 0.0016))
    },
}


DEFAULT_LAMBDA = 0.0064


def model_for(lam: float | None = None) -> str:
    """The zoo codec trained with ``lam`` (default :data:`DEFAULT_LAMBDA`).

    >>> model_for(0.0256)
    'codec-l0256'
    >>> model_for(0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: no codec was trained with lambda 0.5; choose from 0.0004, ...
    """
    lam = DEFAULT_LAMBDA if lam is None else lam
    for name, recipe in RECIPES.items():
        if recipe.seed == 0 and math.isclose(recipe.lam, lam, rel_tol=1e-9):
            return name
    known = ", ".join(f"{r.lam:g}" for r in RECIPES.values() if r.seed == 0)
    raise ValueError(f"no codec was trained with lambda {lam:g}; choose from {known}")


def _crops(
    images: list[np.ndarray], n: int, size: int, rng: np.random.Generator
) -> torch.Tensor:
    """``n`` random crops (images drawn by area), each flipped at random."""
    area = np.array([im.shape[0] * im.shape[1] for im in images], np.float64)
    which = rng.choice(len(images), size=n, p=area / area.sum())
    out = np.empty((n, size, size, 3), np.uint8)
    for i, j in enumerate(which):
        im = images[j]
        top = rng.integers(im.shape[0] - size + 1)
        left = rng.integers(im.shape[1] - size + 1)
        crop = im[top : top + size, left : left + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = crop
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


def rate_distortion(code, images: dict[str, np.ndarray], ms_ssim: bool = False) -> dict:
    """Bits per pixel of real bytes and PSNR, pooled over ``images``.

    ``code`` is a :class:`Codec` or any function ``image -> (bytes, decoded
    image)`` (:func:`jpeg` and :func:`dct` at a fixed quality, say). Pooled:
    total bits over total pixels, and the PSNR of the total squared error,
    so a large image weighs by its size. With ``ms_ssim``, also the MS-SSIM
    (:func:`mlcomp.measure.ms_ssim`) averaged with the pixels as weights.

    >>> image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    >>> rd = rate_distortion(lambda im: jpeg(im, 90), {"noise": image})
    >>> sorted(rd), rd["bpp"] > 8  # noise costs JPEG more than raw bytes
    (['bpp', 'psnr'], True)
    """
    from mlcomp import measure

    if isinstance(code, Codec):
        code = code.round_trip
    bits = pixels = 0
    sq = similarity = 0.0
    for image in images.values():
        data, back = code(image)
        n = image.shape[0] * image.shape[1]
        bits += 8 * len(data)
        pixels += n
        sq += float(np.sum((image.astype(np.float64) - back) ** 2))
        if ms_ssim:
            similarity += n * measure.ms_ssim(image, back)
    mse = sq / (3 * pixels)
    out = {
        "bpp": bits / pixels,
        "psnr": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse),
    }
    if ms_ssim:
        out["ms_ssim"] = similarity / pixels
    return out


def rate_at(quality: float, rates, qualities) -> float:
    """The rate a codec's measured curve needs for ``quality`` (NaN off its ends).

    Interpolates ``log(rate)`` linearly in quality between the measured
    points (sorted by quality first), the usual way to read a rate-distortion
    curve at a quality it was not measured at.

    >>> round(rate_at(25.0, [0.1, 0.4], [20.0, 30.0]), 4)
    0.2
    >>> rate_at(35.0, [0.1, 0.4], [20.0, 30.0])
    nan
    """
    rates = np.asarray(rates, np.float64)
    qualities = np.asarray(qualities, np.float64)
    if rates.shape != qualities.shape or rates.size < 2 or (rates <= 0).any():
        raise ValueError("need two or more points with positive rates")
    order = np.argsort(qualities)
    return float(
        np.exp(
            np.interp(
                quality,
                qualities[order],
                np.log(rates[order]),
                left=np.nan,
                right=np.nan,
            )
        )
    )


def overhead(data: bytes) -> int:
    """Bytes of a file that are not coded pixels: ``.mlci`` or JPEG.

    For an ``.mlci`` stream, everything but the rANS words and escapes
    (container, model name, fingerprint, sizes, CRC); for a JPEG (JFIF), the
    markers up to the end of its first start-of-scan header (quantization and
    Huffman tables, frame header) plus the 2-byte end marker.

    >>> overhead(jpeg(np.zeros((8, 8, 3), np.uint8), 50)[0]) > 150
    True
    """
    if data[:4] == _MAGIC:
        return len(data) - len(read_header(data)["payload"])
    if data[:2] != b"\xff\xd8":
        raise ValueError("neither an .mlci stream nor a JPEG file")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        i += 2 + length
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            return i + 2
    raise ValueError("JPEG file without a start of scan")


def dct(image: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """Chapter 2's own DCT codec (:func:`mlcomp.coding.lossy.jpeg_encode`) on
    each of R, G and B: the three streams' bytes, and the image decoded back.

    No colour transform and no chroma subsampling: what JPEG adds to this
    core is visible in the difference.

    >>> data, back = dct(np.full((8, 8, 3), 100, np.uint8), 75)
    >>> back.shape, int(back[0, 0, 0])
    ((8, 8, 3), 100)
    """
    from mlcomp.coding import lossy

    image = _check_image(image)
    streams = [lossy.jpeg_encode(image[..., c], quality) for c in range(3)]
    back = np.stack([lossy.jpeg_decode(s) for s in streams], axis=-1)
    return b"".join(streams), back


def train_recipe(
    recipe: CodecRecipe, progress: bool = True, cache_dir=None
) -> tuple[Codec, dict]:
    """Train a codec by ``recipe``; return it (eval mode, prior frozen) and metrics.

    The metrics are the real bytes' bits per pixel and PSNR on the held-out
    photographs (:func:`rate_distortion`).

    >>> net, info = train_recipe(CodecRecipe(steps=2, batch_size=2, crop=16,
    ...                                      channels=4, latent=4), progress=False)
    >>> sorted(info)
    ['test_bpp', 'test_psnr', 'train_seconds']
    """
    from tqdm.auto import tqdm

    from mlcomp import datasets

    images = list(datasets.photos("train").values())
    utils.set_seed(recipe.seed)
    rng = np.random.default_rng([recipe.seed, 26])
    net = recipe.build()
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    start = time.perf_counter()
    try:
        net.train()
        bar = tqdm(
            range(recipe.steps), desc=f"codec lambda={recipe.lam}", disable=not progress
        )
        for step in bar:
            t = step / max(1, recipe.steps - 1)
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))
            x = _crops(images, recipe.batch_size, recipe.crop, rng)
            x_hat, likelihood = net(x)
            rate = -torch.log2(likelihood).sum() / (
                x.shape[0] * x.shape[2] * x.shape[3]
            )
            mse = F.mse_loss(x_hat, x)
            loss = rate + recipe.lam * 255**2 * mse
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            if step % 50 == 0:
                bar.set_postfix(
                    bpp=f"{rate.item():.3f}", psnr=f"{-10 * math.log10(mse.item()):.2f}"
                )
    finally:
        torch.set_num_threads(threads_before)
    seconds = time.perf_counter() - start
    net.eval()
    net.prior.freeze()
    rd = rate_distortion(net, datasets.photos("test"))
    return net, {
        "test_bpp": round(rd["bpp"], 4),
        "test_psnr": round(rd["psnr"], 3),
        "train_seconds": round(seconds, 1),
    }


def pretrained(name: str, progress: bool = True) -> Codec:
    """A zoo codec by name (see :data:`RECIPES`), its file header naming it."""
    from mlcomp import zoo

    net = zoo.pretrained(name, progress=progress)
    net.name = name
    return net
