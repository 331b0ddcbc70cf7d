"""Lossy coding: the core of baseline JPEG, and G.711's companding laws.

* **Transform coding** (JPEG's core, Wallace 1992): an 8-bit grayscale image
  is cut into 8×8 blocks, each block goes through the orthonormal 2-D DCT-II,
  every coefficient is divided by its entry in a quantization table (scaled
  by a quality factor as the IJG library does) and rounded; the rounding is
  the only lossy step. The quantized blocks are read in zig-zag order and
  turned into JPEG's symbols — DC differences by size category, AC
  coefficients as (zero run, size) pairs with an end-of-block — which our
  Huffman coder stores, with the amplitude bits appended raw. :func:`jpeg_encode`
  writes a self-describing stream; :func:`jpeg_decode` inverts every step.
  Not a JFIF file: no headers, chroma or restart markers.
* **Companding** (ITU-T G.711): ``mu_law`` / ``a_law`` compress the
  amplitude logarithmically before uniform quantization, so quiet samples
  get fine steps and loud ones coarse steps; the standard uses a
  piecewise-linear approximation of these curves.
"""

from __future__ import annotations

import numpy as np

from mlcomp.coding import huffman
from mlcomp.coding._format import (
    CorruptFileError,
    pack,
    read_varints,
    unpack,
    write_varints,
)

__all__ = [
    "dct_matrix",
    "LUMA_TABLE",
    "quality_table",
    "ZIGZAG",
    "jpeg_encode",
    "jpeg_decode",
    "mu_law",
    "mu_law_inverse",
    "a_law",
    "a_law_inverse",
    "quantize_uniform",
]

_MAGIC, _VERSION = b"MLCJ", 1

# ITU-T T.81 Annex K, Table K.1: the example luminance quantization table
LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)


def _zigzag(n: int = 8) -> np.ndarray:
    """Flat indices of an n×n block in zig-zag order (anti-diagonals, alternating)."""
    order = sorted(
        ((i, j) for i in range(n) for j in range(n)),
        key=lambda ij: (ij[0] + ij[1], ij[0] if (ij[0] + ij[1]) % 2 else ij[1]),
    )
    return np.array([i * n + j for i, j in order])


ZIGZAG = _zigzag()


def dct_matrix(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C``: a block ``X`` transforms as ``C @ X @ C.T``.

    >>> C = dct_matrix(8)
    >>> bool(np.allclose(C @ C.T, np.eye(8)))
    True
    """
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    C = np.sqrt(2 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    C[0] /= np.sqrt(2)
    return C


def quality_table(quality: int, base: np.ndarray = LUMA_TABLE) -> np.ndarray:
    """The IJG libjpeg scaling of a quantization table for ``quality`` in 1..100.

    >>> int(quality_table(50)[0, 0]), int(quality_table(90)[0, 0])
    (16, 3)
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255).astype(np.int64)


def _blocks(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = image.shape
    padded = np.pad(image, ((0, -h % 8), (0, -w % 8)), mode="edge").astype(np.float64)
    H, W = padded.shape
    blocks = padded.reshape(H // 8, 8, W // 8, 8).swapaxes(1, 2).reshape(-1, 8, 8)
    return blocks, (H, W)


def _size(v: np.ndarray) -> np.ndarray:
    """JPEG's size category: bits needed for |v| (0 for v = 0)."""
    return np.where(v == 0, 0, np.floor(np.log2(np.maximum(np.abs(v), 1))) + 1).astype(
        np.int64
    )


def _amplitude_bits(v: np.ndarray, size: np.ndarray) -> np.ndarray:
    """JPEG amplitude bits: v if v >= 0, else v + 2**size - 1 (ones' complement)."""
    return np.where(v >= 0, v, v + (1 << size) - 1)


def jpeg_encode(image, quality: int = 75) -> bytes:
    """Transform-code an 8-bit grayscale image (2-D uint8 array) into a stream.

    >>> img = (np.add.outer(np.arange(16), np.arange(24)) * 5).astype(np.uint8)
    >>> back = jpeg_decode(jpeg_encode(img, quality=90))
    >>> back.shape, bool(np.abs(back.astype(int) - img).max() <= 4)
    ((16, 24), True)
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(
            f"expected a non-empty 2-D uint8 image, got {image.dtype} {image.shape}"
        )
    Q = quality_table(quality)
    C = dct_matrix()
    blocks, _ = _blocks(image)
    coeffs = np.einsum("ij,bjk,lk->bil", C, blocks - 128, C)  # C X C^T per block
    q = np.round(coeffs / Q).astype(np.int64).reshape(-1, 64)[:, ZIGZAG]

    dc_diff = np.diff(q[:, 0], prepend=0)
    dc_size = _size(dc_diff)
    ac_symbols, amp_values, amp_sizes = [], [], []
    for b in range(q.shape[0]):
        amp_values.append(dc_diff[b : b + 1])
        amp_sizes.append(dc_size[b : b + 1])
        ac = q[b, 1:]
        nz = np.flatnonzero(ac)
        prev = -1
        for i in nz:
            run = i - prev - 1
            while run > 15:  # ZRL: a run of 16 zeros
                ac_symbols.append(0xF0)
                run -= 16
            s = int(_size(ac[i : i + 1])[0])
            ac_symbols.append(run << 4 | s)
            amp_values.append(ac[i : i + 1])
            amp_sizes.append(np.array([s]))
            prev = i
        if prev < 62:
            ac_symbols.append(0x00)  # end of block
    values = np.concatenate(amp_values)
    sizes = np.concatenate(amp_sizes)
    amps = _amplitude_bits(values, sizes)
    shifts = np.arange(15, -1, -1)
    bits = (amps[:, None] >> shifts) & 1
    raw = np.packbits(bits[shifts[None, :] < sizes[:, None]].astype(np.uint8)).tobytes()
    dc_stream = huffman.encode(dc_size, max_length=16)
    ac_stream = huffman.encode(np.array(ac_symbols, dtype=np.int64), max_length=16)
    h, w = image.shape
    header = write_varints([h, w, quality, len(dc_stream), len(ac_stream), len(raw)])
    return pack(_MAGIC, _VERSION, header, dc_stream + ac_stream + raw)


def jpeg_decode(data: bytes) -> np.ndarray:
    """Invert :func:`jpeg_encode`: the decoded uint8 image.

    >>> flat = np.full((8, 8), 77, np.uint8)  # a flat block survives exactly
    >>> bool((jpeg_decode(jpeg_encode(flat)) == flat).all())
    True
    """
    header, payload = unpack(data, _MAGIC, _VERSION)
    (h, w, quality, n_dc, n_ac, n_raw), _ = read_varints(header, 6)
    if n_dc + n_ac + n_raw != len(payload) or not 1 <= quality <= 100:
        raise CorruptFileError("JPEG-core header does not match its payload")
    dc_size = huffman.decode(payload[:n_dc])
    ac_symbols = huffman.decode(payload[n_dc : n_dc + n_ac])
    raw = np.unpackbits(np.frombuffer(payload[n_dc + n_ac :], np.uint8))
    n_blocks = ((h + 7) // 8) * ((w + 7) // 8)
    if dc_size.size != n_blocks:
        raise CorruptFileError("JPEG-core stream has the wrong number of blocks")
    q = np.zeros((n_blocks, 64), np.int64)
    pos, a = 0, 0

    def read(size: int) -> int:
        nonlocal pos
        if size == 0:
            return 0
        if pos + size > raw.size:
            raise CorruptFileError("JPEG-core amplitude bits are truncated")
        v = int("".join(map(str, raw[pos : pos + size])), 2)
        pos += size
        return v if v >= 1 << (size - 1) else v - (1 << size) + 1

    for b in range(n_blocks):
        q[b, 0] = read(int(dc_size[b]))
        i = 1
        while i < 64:
            if a >= ac_symbols.size:
                raise CorruptFileError("JPEG-core AC symbols are truncated")
            sym = int(ac_symbols[a])
            a += 1
            if sym == 0x00:
                break
            run, size = sym >> 4, sym & 15
            i += run
            if sym == 0xF0:
                i += 1
                continue
            if i >= 64:
                raise CorruptFileError("JPEG-core AC run overflows the block")
            q[b, i] = read(size)
            i += 1
    q[:, 0] = np.cumsum(q[:, 0])  # DC was coded as differences
    zz = np.empty_like(q)
    zz[:, ZIGZAG] = q
    C = dct_matrix()
    coeffs = zz.reshape(-1, 8, 8) * quality_table(quality)
    blocks = np.einsum("ji,bjk,kl->bil", C, coeffs, C) + 128  # C^T Y C per block
    H, W = (h + 7) // 8 * 8, (w + 7) // 8 * 8
    image = blocks.reshape(H // 8, W // 8, 8, 8).swapaxes(1, 2).reshape(H, W)
    return np.clip(np.round(image[:h, :w]), 0, 255).astype(np.uint8)


# --- companding -----------------------------------------------------------------


def _check_unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if np.any(np.abs(x) > 1):
        raise ValueError("companding expects samples in [-1, 1]")
    return x


def mu_law(x, mu: float = 255.0) -> np.ndarray:
    """mu-law compression ``sign(x) ln(1 + mu|x|) / ln(1 + mu)`` of samples in [-1, 1].

    >>> x = np.linspace(-1, 1, 9)
    >>> bool(np.allclose(mu_law_inverse(mu_law(x)), x)), round(float(mu_law(0.5)), 4)
    (True, 0.8757)
    """
    x = _check_unit(x)
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def mu_law_inverse(y, mu: float = 255.0) -> np.ndarray:
    """Inverse of :func:`mu_law`.

    >>> round(float(mu_law_inverse(0.8757)), 3)
    0.5
    """
    y = _check_unit(y)
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def a_law(x, A: float = 87.6) -> np.ndarray:
    """A-law compression: linear below ``1/A``, logarithmic above.

    >>> x = np.linspace(-1, 1, 9)
    >>> bool(np.allclose(a_law_inverse(a_law(x)), x))
    True
    """
    x = _check_unit(x)
    ax = np.abs(x)
    small = A * ax / (1 + np.log(A))
    large = (1 + np.log(np.maximum(A * ax, 1))) / (1 + np.log(A))
    return np.sign(x) * np.where(ax < 1 / A, small, large)


def a_law_inverse(y, A: float = 87.6) -> np.ndarray:
    """Inverse of :func:`a_law`.

    >>> round(float(a_law_inverse(a_law(0.01))), 6)
    0.01
    """
    y = _check_unit(y)
    ay = np.abs(y) * (1 + np.log(A))
    return np.sign(y) * np.where(ay < 1, ay / A, np.exp(ay - 1) / A)


def quantize_uniform(x, bits: int) -> np.ndarray:
    """Round samples in [-1, 1] to ``2**bits`` uniform levels (mid-rise), and back.

    >>> quantize_uniform(np.array([-1.0, 0.0, 0.3, 1.0]), 2).tolist()
    [-0.75, 0.25, 0.25, 0.75]
    """
    if not 1 <= bits <= 24:
        raise ValueError(f"bits must be in 1..24, got {bits}")
    x = _check_unit(x)
    levels = 1 << bits
    idx = np.clip(np.floor((x + 1) / 2 * levels), 0, levels - 1)
    return (idx + 0.5) / levels * 2 - 1
