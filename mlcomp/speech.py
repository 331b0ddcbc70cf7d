"""Synthetic keyword-spotting data: the 12 classes of Speech Commands, split by voice.

The task is the one of Speech Commands (Warden 2018) and MLPerf Tiny: one
second of 16 kHz audio is one of ten command words, ``_unknown_`` (another
word) or ``_silence_`` (background noise only). Real recordings cannot ship
with the book, so the words are spoken by speech synthesizers that Debian
packages: espeak-ng (its English accents × its ~100 voice variants, each
clip at its own rate and pitch) and Festival (two voices of another
synthesis method, kept out of training entirely: a *held-out family*).

Voices, not clips, are split (:func:`voice_split`): an espeak-ng variant
(the timbre of a "speaker") lands in train, validation or test by the hash
of its name, in every accent, so a test voice is never heard in training.

:func:`augment` is what a serious keyword-spotting recipe does to training
clips: background noise at a random SNR (white, pink or brown, or babble
made of other training clips), a time shift, a gain, a speed change (which
also moves the pitch) and a simple room reverberation.

:func:`generate` synthesizes a split once, deterministically, with a
progress bar; :func:`load` caches it (NumPy ``.npz``, no pickle) with a
SHA-256 and returns int16 clips and labels.

>>> LABELS[:3], LABELS[-2:], len(LABELS)
(('yes', 'no', 'up'), ('_unknown_', '_silence_'), 12)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from mlcomp.audio import SAMPLE_RATE, loudest_window, read_wav, resample, to_mono

__all__ = [
    "WORDS",
    "UNKNOWN_WORDS",
    "LABELS",
    "ACCENTS",
    "FESTIVAL_VOICES",
    "Voice",
    "SpeechData",
    "espeak_variants",
    "voice_split",
    "synthesize",
    "noise",
    "AUGMENTATION",
    "augment",
    "generate",
    "load",
    "manifest_path",
]

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree",
    "wow", "zero", "one", "two", "three", "four", "five", "six", "seven",
    "eight", "nine", "learn", "follow", "forward", "backward", "visual",
)  # fmt: skip
LABELS = (*WORDS, "_unknown_", "_silence_")
ACCENTS = (
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
    "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
FESTIVAL_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts")
SPLITS = ("train", "val", "test", "festival")
_INSTALL = (
    "`sudo apt-get install espeak-ng festival festvox-kallpc16k "
    "festvox-us-slt-hts` (Debian/Ubuntu; `make apt` does it)"
)


class SynthesisError(RuntimeError):
    """A synthesizer is missing or failed."""


@dataclasses.dataclass(frozen=True)
class Voice:
    """Who speaks: ``engine`` ("espeak" or "festival"), and its voice name.

    >>> Voice("espeak", "en-us", "adam").spec
    'en-us+adam'
    """

    engine: str
    accent: str  # espeak-ng language; for festival the voice itself
    variant: str = ""

    @property
    def spec(self) -> str:
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise SynthesisError(f"{name} is not installed: {_INSTALL}")
    return exe


def espeak_variants() -> list[str]:
    """The voice variants espeak-ng offers here, sorted (``adam``, ``f2``, ...).

    >>> variants = espeak_variants()
    >>> "f2" in variants and "m1" in variants
    True
    """
    out = subprocess.run([_exe("espeak-ng"), "--voices=variant"], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    names = [line.split()[4].removeprefix("!v/") for line in out.splitlines()[1:]]
    return sorted(set(names))


def voice_split(variant: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a variant, by the hash of its name.

    70% / 15% / 15%; the same variant always lands in the same split, on any
    machine, whatever other variants exist.

    >>> voice_split("f2") == voice_split("f2")
    True
    """
    h = int.from_bytes(hashlib.sha256(variant.encode()).digest()[:8], "big")
    u = h / 2**64
    return "train" if u < 0.70 else "val" if u < 0.85 else "test"


def _fit(x: np.ndarray, rate: int) -> np.ndarray:
    """Mono float at 16 kHz, one second (the loudest one, or padded)."""
    return loudest_window(resample(to_mono(x), rate))


def synthesize(word: str, voice: Voice, rate: int = 160, pitch: int = 50) -> np.ndarray:
    """One second of ``word`` spoken by ``voice`` at 16 kHz, float32 in [-1, 1].

    ``rate`` is in words per minute and ``pitch`` in espeak-ng's 0..99 (for
    Festival, the rate stretches the durations and the pitch is the voice's).

    >>> x = synthesize("yes", Voice("espeak", "en-us", "f2"))
    >>> x.shape, x.dtype, bool(np.abs(x).max() > 0.05)
    ((16000,), dtype('float32'), True)
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.wav"
        if voice.engine == "espeak":
            cmd = [_exe("espeak-ng"), "-v", voice.spec, "-s", str(rate),
                   "-p", str(pitch), "-w", str(path), word]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)
        elif voice.engine == "festival":
            stretch = 160 / rate
            script = (f"(voice_{voice.accent})"
                      f"(Parameter.set 'Duration_Stretch {stretch:.3f})")  # fmt: skip
            cmd = [_exe("text2wave"), "-o", str(path), "-eval", script]
            subprocess.run(cmd, input=word.encode(), check=True, capture_output=True)
        else:
            raise ValueError(
                f"engine must be 'espeak' or 'festival', got {voice.engine!r}"
            )
        x, sr = read_wav(path)
    return _fit(x, sr)


# --- noise and augmentation -----------------------------------------------------


def noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of unit-RMS noise: white, pink (1/f) or brown (1/f²).

    Coloured by shaping the spectrum of white noise: power ∝ ``f**-a`` with
    ``a`` = 0, 1, 2.

    >>> x = noise(16000, "pink", np.random.default_rng(0))
    >>> round(float(np.sqrt(np.mean(x ** 2))), 6)
    1.0
    """
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}.get(colour)
    if exponent is None:
        raise ValueError(f"colour must be white, pink or brown, got {colour!r}")
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def _reverb(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A room: the dry sound plus exponentially decaying noise (60 dB in rt60 s)."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
    ir = np.r_[1.0, 0.3 * tail[1:] / np.sqrt(np.sum(tail**2))]
    from scipy.signal import fftconvolve  # O(n log n): the tail is long

    return fftconvolve(x, ir)[: len(x)].astype(np.float32)


# What augment() draws from, in its order (module constants, so the book can print them)
AUGMENTATION = {
    "speed (%)": (90, 110),  # whole percent, uniform; the pitch moves with it
    "circular shift (ms)": 100,  # uniform in ±100 ms
    "reverberation share": 0.5,  # of the clips
    "RT60 (s)": (0.1, 0.5),
    "gain (dB)": 6.0,  # uniform in ±6 dB
    "babble share": 0.3,  # of the draws, when babble is given (else coloured noise)
    "babble clips": 3,
    "noise colours": ("white", "pink", "brown"),
    "SNR (dB)": (0.0, 20.0),  # uniform; the default of augment's snr_db
}


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    babble: np.ndarray | None = None,
    snr_db: tuple[float, float] | None = None,
) -> np.ndarray:
    """A randomly perturbed copy of the one-second clip ``x``.

    In order (the ranges are :data:`AUGMENTATION`): speed ×0.9–1.1
    (resampling; the pitch moves with it), a circular time shift of ±100 ms,
    reverberation (half the clips, RT60 0.1–0.5 s), gain ±6 dB, then
    background noise at an SNR drawn from ``snr_db``: white, pink or brown,
    or in 30% of the draws, when ``babble`` clips are given, three of them
    summed.

    >>> rng = np.random.default_rng(0)
    >>> clip = np.sin(np.arange(16000) / 8).astype(np.float32) * 0.5
    >>> augment(clip, rng).shape
    (16000,)
    """
    x = np.asarray(x, np.float32)
    a = AUGMENTATION
    low, high = a["speed (%)"]
    percent = int(rng.integers(low, high + 1))  # speed in whole percent: a short filter
    x = resample(x, SAMPLE_RATE * percent // 100, SAMPLE_RATE)  # shorter if faster
    x = (
        loudest_window(x)
        if len(x) > SAMPLE_RATE
        else np.pad(x, (0, SAMPLE_RATE - len(x)))
    )
    shift = SAMPLE_RATE * a["circular shift (ms)"] // 1000
    x = np.roll(x, int(rng.integers(-shift, shift + 1)))
    if rng.random() < a["reverberation share"]:
        x = _reverb(x, rng.uniform(*a["RT60 (s)"]), rng)
    x = x * 10 ** (rng.uniform(-a["gain (dB)"], a["gain (dB)"]) / 20)
    signal = np.sqrt(np.mean(x.astype(np.float64) ** 2)) or 1e-3
    if babble is not None and rng.random() < a["babble share"]:
        picks = babble[rng.integers(0, len(babble), a["babble clips"])]
        picks = picks.astype(np.float32) / 32767
        bg = picks.sum(0)
        bg /= np.sqrt(np.mean(bg**2)) or 1.0
    else:
        bg = noise(SAMPLE_RATE, str(rng.choice(list(a["noise colours"]))), rng)
    snr_db = a["SNR (dB)"] if snr_db is None else snr_db
    level = signal / 10 ** (rng.uniform(*snr_db) / 20)
    return np.clip(x + level * bg, -1.0, 1.0).astype(np.float32)


# --- the data set ------------------------------------------------------------------


@dataclasses.dataclass
class SpeechData:
    """Clips (int16, (n, 16000)), labels (indices into :data:`LABELS`), and who spoke.

    >>> data = SpeechData(np.zeros((2, 16000), np.int16), np.array([0, 11]),
    ...                   ["en-us+f2", "noise"])
    >>> len(data), data.label_names()
    (2, ['yes', '_silence_'])
    """

    clips: np.ndarray
    labels: np.ndarray
    voices: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def label_names(self) -> list[str]:
        return [LABELS[i] for i in self.labels]

    def waveforms(self) -> np.ndarray:
        """The clips as float32 in [-1, 1]."""
        return self.clips.astype(np.float32) / 32767


def _plan(split: str, accents_per_voice: int, unknown_per_voice: int, seed: int):
    """Every clip of a split: (word, voice, rate, pitch), deterministic."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    if split == "festival":
        voices = [Voice("festival", v) for v in FESTIVAL_VOICES]
        repeats = 3  # three rates each
    else:
        variants = [v for v in espeak_variants() if voice_split(v) == split]
        voices = [
            Voice("espeak", str(accent), v)
            for v in variants
            for accent in rng.choice(ACCENTS, accents_per_voice, replace=False)
        ]
        repeats = 1
    plan = []
    for voice in voices:
        for _ in range(repeats):
            words = [
                *WORDS,
                *rng.choice(UNKNOWN_WORDS, unknown_per_voice, replace=False),
            ]
            for word in words:
                rate, pitch = int(rng.integers(120, 201)), int(rng.integers(25, 76))
                plan.append((str(word), voice, rate, pitch))
    return plan


def generate(
    split: str,
    *,
    accents_per_voice: int = 2,
    unknown_per_voice: int = 4,
    silence_fraction: float = 0.08,
    seed: int = 0,
    progress: bool = True,
) -> tuple[SpeechData, dict]:
    """Synthesize one split; returns the data and a manifest of how it was made.

    ``"train"``, ``"val"`` and ``"test"`` are espeak-ng voices of disjoint
    variants (:func:`voice_split`), each variant in ``accents_per_voice``
    accents, each voice saying the ten words and ``unknown_per_voice`` other
    words; ``"festival"`` is the held-out family. ``silence_fraction`` more
    clips are background noise only (label ``_silence_``). Clips are raw
    (no augmentation): :func:`augment` is applied while training.

    >>> data, manifest = generate("festival", unknown_per_voice=1, progress=False)
    >>> len(data), manifest["voices"][:2]
    (71, ['cmu_us_slt_arctic_hts', 'kal_diphone'])
    """
    from tqdm import tqdm

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    start = time.perf_counter()
    plan = _plan(split, accents_per_voice, unknown_per_voice, seed)
    clips, labels, voices = [], [], []
    for word, voice, rate, pitch in tqdm(plan, desc=f"speaking ({split})",
                                         disable=not progress):  # fmt: skip
        clips.append(synthesize(word, voice, rate, pitch))
        labels.append(LABELS.index(word) if word in WORDS else len(WORDS))
        voices.append(voice.spec)
    rng = np.random.default_rng([seed, 99, SPLITS.index(split)])
    for _ in range(round(silence_fraction * len(plan))):
        colour = str(rng.choice(["white", "pink", "brown"]))
        clips.append(
            noise(SAMPLE_RATE, colour, rng) * 10 ** (rng.uniform(-50, -20) / 20)
        )
        labels.append(len(LABELS) - 1)
        voices.append(f"noise-{colour}")
    pcm = np.round(np.clip(np.stack(clips), -1, 1) * 32767).astype(np.int16)
    data = SpeechData(pcm, np.array(labels, np.int64), voices)
    version = subprocess.run([_exe("espeak-ng"), "--version"], capture_output=True,
                             text=True).stdout.strip()  # fmt: skip
    manifest = {
        "split": split, "clips": len(data), "seed": seed,
        "accents_per_voice": accents_per_voice, "unknown_per_voice": unknown_per_voice,
        "silence_fraction": silence_fraction, "espeak_ng": version,
        "voices": sorted(set(voices)), "seconds": round(time.perf_counter() - start, 1),
        "bytes": int(pcm.nbytes),
    }  # fmt: skip
    return data, manifest


def _paths(split: str, cache_dir, kwargs: dict) -> tuple[Path, Path]:
    from mlcomp.utils import cache_dir as default_cache

    folder = Path(cache_dir) if cache_dir else default_cache("speech")
    made_by = {k: v for k, v in kwargs.items() if k != "progress"}  # not the bar
    key = json.dumps({"split": split, **made_by}, sort_keys=True)
    stem = f"speech-{split}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def manifest_path(
    split: str, cache_dir: str | os.PathLike | None = None, **kwargs
) -> Path:
    """Where :func:`load` keeps the JSON manifest of a split (how it was made).

    >>> manifest_path("test", cache_dir="/tmp/c").name.startswith("speech-test-")
    True
    """
    return _paths(split, cache_dir, kwargs)[1]


def load(
    split: str, cache_dir: str | os.PathLike | None = None, **kwargs
) -> SpeechData:
    """A split, generated on first use and then read from the cache.

    The cache holds ``speech-SPLIT-DIGEST.npz`` (no pickle) and a JSON
    manifest with its SHA-256 (checked on every load) and the generation
    time; the digest covers the arguments, so other arguments make another
    file. A missing synthesizer names the command that installs it.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> a = load("festival", cache_dir=folder, unknown_per_voice=1, progress=False)
    >>> b = load("festival", cache_dir=folder, unknown_per_voice=1)  # from the cache
    >>> bool((a.clips == b.clips).all()), a.clips.shape
    (True, (71, 16000))
    """
    from mlcomp.utils import atomic_open

    npz, meta = _paths(split, cache_dir, kwargs)
    folder = npz.parent
    if npz.is_file() and meta.is_file():
        manifest = json.loads(meta.read_text())
        if hashlib.sha256(npz.read_bytes()).hexdigest() == manifest.get("sha256"):
            with np.load(npz, allow_pickle=False) as f:
                return SpeechData(f["clips"], f["labels"], f["voices"].tolist())
    data, manifest = generate(split, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(npz) as f:
        np.savez(f, clips=data.clips, labels=data.labels, voices=np.array(data.voices))
    manifest["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    with atomic_open(meta) as f:
        f.write(json.dumps(manifest, indent=1).encode())
    return data
