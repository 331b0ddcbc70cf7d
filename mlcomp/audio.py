"""Audio in: WAV files of any common format, resampling, and speech features.

Keyword spotting (chapter 8) listens to one-second clips at 16 kHz. A reader's
own recording can be anything a phone or ``arecord`` writes, so
:func:`read_wav` reads RIFF/WAVE files with 8-, 16-, 24- or 32-bit integer
PCM or 32/64-bit float samples and any number of channels, and
:func:`prepare` turns them into what the model expects: mono, 16 kHz (a
polyphase resampler with an anti-aliasing filter, :func:`resample`), and
the loudest one-second window (:func:`loudest_window`).

The features are the standard ones of keyword spotting (Zhang et al. 2017,
Hello Edge): a log-mel spectrogram — the power spectrum of 30 ms frames
every 10 ms, pooled by triangular filters evenly spaced on the mel scale,
then in decibels — and MFCCs, its orthonormal DCT-II. They are computed with
``torch.stft`` and a mel filter bank built here (:func:`mel_filterbank`, the
Slaney mel scale and normalization), and tested against librosa.

>>> import numpy as np
>>> t = np.arange(16000) / 16000
>>> x = 0.5 * np.sin(2 * np.pi * 440 * t)
>>> log_mel(x).shape  # (mel bands, frames)
torch.Size([40, 101])
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "AudioError",
    "SAMPLE_RATE",
    "read_wav",
    "write_wav",
    "to_mono",
    "resample",
    "loudest_window",
    "prepare",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "log_mel",
    "mfcc",
]

SAMPLE_RATE = 16_000
"""The rate keyword spotting works at, in Hz."""

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class AudioError(ValueError):
    """A file is not audio this module can read, or holds no sound."""


def _chunks(data: bytes, path) -> dict[bytes, bytes]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    chunks, pos = {}, 12
    while pos + 8 <= len(data):
        kind, size = (
            data[pos : pos + 4],
            struct.unpack("<I", data[pos + 4 : pos + 8])[0],
        )
        body = data[pos + 8 : pos + 8 + size]
        if kind == b"data" and len(body) < size:  # a recorder stopped early
            body = body[: len(body) - len(body) % 4]
        chunks.setdefault(kind, body)
        pos += 8 + size + (size & 1)  # chunks are padded to even length
    return chunks


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Samples as float32 in [-1, 1], shape (frames, channels), and the rate in Hz.

    Integer PCM of 8 (unsigned), 16, 24 or 32 bits and IEEE float of 32 or
    64 bits, plain or ``WAVE_FORMAT_EXTENSIBLE``. Anything else — not a WAV
    file, a compressed codec, no samples — raises :class:`AudioError` with
    one line that says what is wrong.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.wav"
    >>> write_wav(path, np.array([0.0, 0.5, -0.5]), 8000)
    >>> x, rate = read_wav(path)
    >>> x.ravel().round(4).tolist(), rate
    ([0.0, 0.5, -0.5], 8000)
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"no such file: {path}")
    chunks = _chunks(path.read_bytes(), path)
    fmt = chunks.get(b"fmt ")
    if fmt is None or len(fmt) < 16:
        raise AudioError(f"{path}: the WAV file has no format chunk")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format's first field
    if channels < 1 or rate < 1:
        raise AudioError(f"{path}: {channels} channels at {rate} Hz is not audio")
    data = chunks.get(b"data", b"")
    width = bits // 8
    if tag == _PCM and bits in (8, 16, 24, 32):
        usable = len(data) - len(data) % (width * channels)
        raw = np.frombuffer(data[:usable], np.uint8)
        if bits == 8:
            x = (raw.astype(np.float32) - 128) / 128
        elif bits == 24:  # little-endian 3-byte words, sign-extended
            b = raw.reshape(-1, 3).astype(np.int32)
            x = ((b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16) << 8 >> 8) / 2**23
        else:
            x = raw.view(f"<i{width}").astype(np.float64) / 2 ** (bits - 1)
    elif tag == _FLOAT and bits in (32, 64):
        usable = len(data) - len(data) % (width * channels)
        x = np.frombuffer(data[:usable], f"<f{width}")
    else:
        raise AudioError(
            f"{path}: WAV format {tag} with {bits}-bit samples is not supported "
            "(use PCM 8/16/24/32-bit or float 32/64-bit, e.g. `sox IN -b 16 OUT.wav`)"
        )
    x = np.asarray(x, np.float32).reshape(-1, channels)
    if not len(x):
        raise AudioError(f"{path}: the WAV file holds no samples")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: the WAV file holds NaN or infinite samples")
    return np.clip(x, -1.0, 1.0), rate


def write_wav(path: str | os.PathLike, x: np.ndarray, rate: int) -> None:
    """Write samples in [-1, 1] (frames or (frames, channels)) as 16-bit PCM.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "b.wav"
    >>> write_wav(path, np.zeros((4, 2)), 16000)
    >>> read_wav(path)[0].shape
    (4, 2)
    """
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    channels = x.shape[1]
    fmt = struct.pack("<HHIIHH", _PCM, channels, rate, rate * 2 * channels,
                      2 * channels, 16)  # fmt: skip
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def to_mono(x: np.ndarray) -> np.ndarray:
    """The mean of the channels of ``x`` (frames, channels); 1-D input as is.

    >>> to_mono(np.array([[1.0, 0.0], [0.5, 0.5]])).tolist()
    [0.5, 0.5]
    """
    x = np.asarray(x, np.float32)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` (1-D) resampled from ``rate`` to ``target`` Hz.

    Polyphase filtering (:func:`scipy.signal.resample_poly`) by the reduced
    ratio ``target / rate``, with a Kaiser-windowed low-pass filter that
    removes what the lower rate cannot hold (no aliasing).

    >>> t = np.arange(44100) / 44100
    >>> y = resample(np.sin(2 * np.pi * 1000 * t), 44100)
    >>> len(y), round(float(np.abs(y[100:-100]).max()), 2)
    (16000, 1.0)
    """
    from scipy.signal import resample_poly

    if rate == target:
        return np.asarray(x, np.float32)
    g = math.gcd(int(rate), int(target))
    return resample_poly(np.asarray(x, np.float64), target // g, rate // g).astype(
        np.float32
    )


def loudest_window(x: np.ndarray, length: int = SAMPLE_RATE) -> np.ndarray:
    """The ``length`` consecutive samples of ``x`` with the most energy.

    Shorter input is centred and padded with zeros.

    >>> x = np.r_[np.zeros(10), np.ones(3), np.zeros(10)]
    >>> loudest_window(x, 3).tolist()
    [1.0, 1.0, 1.0]
    """
    x = np.asarray(x, np.float32)
    if len(x) <= length:
        pad = length - len(x)
        return np.pad(x, (pad // 2, pad - pad // 2))
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[length:] - energy[:-length]))
    return x[start : start + length]


def prepare(path: str | os.PathLike) -> np.ndarray:
    """A WAV file as the model hears it: mono, 16 kHz, its loudest second.

    A silent file (no sample above -80 dBFS) is an :class:`AudioError`: no
    word can be heard in it.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "c.wav"
    >>> write_wav(path, np.sin(np.arange(24000) / 5), 48000)
    >>> prepare(path).shape
    (16000,)
    """
    x, rate = read_wav(path)
    x = resample(to_mono(x), rate)
    if np.abs(x).max(initial=0.0) < 1e-4:
        raise AudioError(f"{path}: the recording is silent")
    return loudest_window(x)


# --- features -----------------------------------------------------------------


def hz_to_mel(f):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above.

    >>> float(hz_to_mel(1000.0)), round(float(hz_to_mel(2000.0)), 3)
    (15.0, 25.082)
    """
    f = np.asarray(f, np.float64)
    linear = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, linear)


def mel_to_hz(m):
    """The inverse of :func:`hz_to_mel`.

    >>> round(float(mel_to_hz(hz_to_mel(3000.0))), 6)
    3000.0
    """
    m = np.asarray(m, np.float64)
    return np.where(
        m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3
    )


def mel_filterbank(
    n_mels: int = 40,
    n_fft: int = 512,
    rate: int = SAMPLE_RATE,
    fmin: float = 20.0,
    fmax: float | None = 7600.0,
) -> torch.Tensor:
    """Triangular filters, evenly spaced in mel, over ``n_fft // 2 + 1`` FFT bins.

    Each filter rises from the centre of its lower neighbour to its own
    centre and falls to the centre of its upper neighbour, and is divided by
    its width in Hz (Slaney's normalization: every band holds the same
    energy of white noise). Shape (n_mels, n_fft // 2 + 1).

    >>> fb = mel_filterbank(n_mels=10, n_fft=256, rate=8000, fmin=0, fmax=4000)
    >>> fb.shape, bool((fb >= 0).all())
    (torch.Size([10, 129]), True)
    """
    fmax = rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= rate / 2, got {fmin}, {fmax}")
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs - lower) / (centre - lower)
    fall = (upper - freqs) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (upper - lower))
    return torch.from_numpy(weights.astype(np.float32))


def log_mel(
    x,
    rate: int = SAMPLE_RATE,
    n_mels: int = 40,
    win_ms: float = 30.0,
    hop_ms: float = 10.0,
    n_fft: int = 512,
    floor_db: float = -100.0,
) -> torch.Tensor:
    """Log-mel spectrogram in dB, shape (..., n_mels, frames).

    Frames of ``win_ms`` (Hann window) every ``hop_ms``, centred (the signal
    is padded by reflection), power spectrum ``|STFT|^2`` pooled by
    :func:`mel_filterbank`, then ``10 log10(max(., 1e-10))`` floored at
    ``floor_db``. ``x`` is a waveform (samples last), NumPy or torch.

    >>> tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    >>> db = log_mel(tone)
    >>> centres = mel_to_hz(np.linspace(hz_to_mel(20), hz_to_mel(7600), 42))[1:-1]
    >>> round(float(centres[int(db[:, 50].argmax())]))  # the band nearest 1 kHz
    1027
    """
    x = torch.as_tensor(np.asarray(x, np.float32) if not torch.is_tensor(x) else x)
    x = x.float()
    win, hop = round(rate * win_ms / 1000), round(rate * hop_ms / 1000)
    if win > n_fft:
        raise ValueError(f"a {win_ms} ms window needs n_fft >= {win}, got {n_fft}")
    shape = x.shape[:-1]
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]), n_fft, hop_length=hop, win_length=win,
        window=torch.hann_window(win), center=True, pad_mode="reflect",
        return_complex=True,
    )  # fmt: skip
    power = spec.abs() ** 2  # (batch, n_fft // 2 + 1, frames)
    mel = mel_filterbank(n_mels, n_fft, rate) @ power
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    return db.clamp_min(floor_db).reshape(*shape, n_mels, -1)


def mfcc(x, n_mfcc: int = 10, rate: int = SAMPLE_RATE, **mel_kwargs) -> torch.Tensor:
    """MFCCs: the orthonormal DCT-II of :func:`log_mel` over the mel axis.

    Shape (..., n_mfcc, frames). The DCT decorrelates the bands; the first
    coefficients keep the spectral envelope, which is what tells words apart.

    >>> x = np.random.default_rng(0).normal(size=16000)
    >>> mfcc(x).shape
    torch.Size([10, 101])
    """
    mel = log_mel(x, rate, **mel_kwargs)
    n = mel.shape[-2]
    k, i = torch.arange(n_mfcc)[:, None], torch.arange(n)[None, :]
    basis = torch.cos(math.pi / n * (i + 0.5) * k) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis @ mel
