"""Keyword spotting (chapter 8): features, training recipes and inference.

The front end is Hello Edge's (Zhang et al. 2017): ten MFCCs from 40 ms
frames every 20 ms, 51 frames for one second at 16 kHz
(:func:`features`). The networks are :class:`mlcomp.models.DSCNN`; their
input normalization (a mean and a standard deviation per coefficient,
measured on the training features) lives inside the model, so a saved
model needs nothing else to run.

A :class:`KWSRecipe` is a zoo recipe (:mod:`mlcomp.zoo`): a DS-CNN trained on
the synthetic speech of :mod:`mlcomp.speech` (the ``train`` voices, each clip
once as synthesized and ``copies`` more times through
:func:`mlcomp.speech.augment`), optionally distilled from a zoo teacher,
optionally shrunk by structured pruning from a zoo base and fine-tuned, or
pruned gradually to a sparsity. The validation voices judge it; the test
voices and the held-out Festival family are only for the book.

:func:`classify` is what ``mlcomp listen`` runs: any WAV file, any rate,
channels and length, scored on its loudest second.

>>> features(np.zeros(16000, np.float32)).shape
torch.Size([1, 1, 51, 10])
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlcomp import audio, models, speech, train, utils

__all__ = [
    "FEATURES",
    "KWSRecipe",
    "features",
    "training_set",
    "evaluation_set",
    "fit_normalization",
    "train_recipe",
    "DEFAULT_MODEL",
    "DEFAULT_BITS",
    "from_state_dict",
    "save",
    "load",
    "export_onnx",
    "default_model",
    "accuracy_by_voice",
    "probabilities",
    "classify",
]

# Hello Edge's front end: 10 MFCCs of 40 ms frames every 20 ms (1024-point FFT)
FEATURES = {"n_mfcc": 10, "win_ms": 40, "hop_ms": 20, "n_fft": 1024}


def features(waveforms: np.ndarray | torch.Tensor) -> torch.Tensor:
    """MFCCs of float waveforms in [-1, 1]: (N, 16000) -> (N, 1, frames, 10).

    A single clip (16000,) gives a batch of one.

    >>> features(np.zeros((3, 16000), np.float32)).shape
    torch.Size([3, 1, 51, 10])
    """
    x = torch.as_tensor(np.asarray(waveforms, np.float32))
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(
            f"waveforms must be (samples,) or (N, samples), got {tuple(x.shape)}"
        )
    out = []
    for i in range(0, len(x), 2048):  # bounded memory for long lists of clips
        out.append(audio.mfcc(x[i : i + 2048], **FEATURES).transpose(-1, -2)[:, None])
    return torch.cat(out)


@functools.lru_cache(maxsize=8)
def training_set(copies: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of the ``train`` voices: each clip, plus ``copies``
    augmented copies (noise at a random SNR, shift, gain, speed, reverb).

    Babble noise is made of other training clips of command words.
    Deterministic for a given ``seed``; cached in memory.

    >>> X, y = training_set(copies=0)
    >>> X.shape[1:], len(X) == len(speech.load("train", progress=False))
    (torch.Size([1, 51, 10]), True)
    """
    data = speech.load("train", progress=False)
    clean = data.waveforms()
    rng = np.random.default_rng([seed, 8])
    babble = data.clips[data.labels < len(speech.WORDS)]
    waves = [clean] + [
        np.stack([speech.augment(x, rng, babble) for x in clean]) for _ in range(copies)
    ]
    X = features(np.concatenate(waves))
    y = torch.from_numpy(np.tile(data.labels, copies + 1))
    return X, y


@functools.lru_cache(maxsize=4)
def _teacher_logits(
    teacher: str, digest: str, copies: int, seed: int, cache_dir
) -> torch.Tensor:
    """The zoo model ``teacher``'s logits on :func:`training_set` ``(copies, seed)``.

    Cached in memory: the students distilled from one teacher on the same
    clips (three in the zoo) compute them once. ``digest`` (the teacher's
    recipe digest) is part of the key, so a changed teacher is recomputed.
    """
    from mlcomp import distill, zoo

    net = zoo.pretrained(teacher, progress=False, cache_dir=cache_dir)
    return distill._teacher_logits(net, training_set(copies, seed)[0])


@functools.lru_cache(maxsize=8)
def evaluation_set(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of a held-out split (``val``, ``test``, ``festival``).

    >>> X, y = evaluation_set("festival")
    >>> X.shape[1:], sorted(set(y.tolist())) == list(range(len(speech.LABELS)))
    (torch.Size([1, 51, 10]), True)
    """
    if split == "train":
        raise ValueError("the train split is for training; use training_set()")
    data = speech.load(split, progress=False)
    return features(data.waveforms()), torch.from_numpy(data.labels)


def fit_normalization(net: nn.Module, X: torch.Tensor) -> None:
    """Set ``net``'s input statistics (one mean and std per coefficient) from X.

    >>> net = models.DSCNN(widths=(4, 4))
    >>> fit_normalization(net, torch.ones(8, 1, 51, 10) * torch.arange(10))
    >>> net.feature_mean.tolist()[:3]
    [0.0, 1.0, 2.0]
    """
    with torch.no_grad():
        net.feature_mean.copy_(X.mean(dim=(0, 1, 2)))
        net.feature_std.copy_(X.std(dim=(0, 1, 2)))


@dataclass(frozen=True)
class KWSRecipe:
    """A DS-CNN keyword spotter trained on the synthetic speech of :mod:`mlcomp.speech`.

    ``size`` picks the DS-CNN (``"s"``, ``"m"``, ``"l"``). With ``teacher``
    (a zoo name), the loss is :func:`mlcomp.distill.kd_loss` at
    ``temperature`` and ``alpha``. With ``base`` (a zoo name), training
    starts from that model instead of from scratch: shrunk first by
    :func:`mlcomp.prune.shrink_channels` when ``shrink`` is set (the fraction
    of channels removed in every stage), or pruned gradually (global
    magnitude, over the first ``prune_epochs``) to ``sparsity``.

    >>> KWSRecipe(size="s", epochs=1, lr=1e-3).model
    'dscnn'
    """

    size: str = "s"
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    copies: int = 3
    seed: int = 0
    teacher: str | None = None
    temperature: float = 4.0
    alpha: float = 0.9
    base: str | None = None
    shrink: float | None = None
    sparsity: float | None = None
    prune_epochs: float = 0.0
    threads: int = 2
    min_val_accuracy: float = 0.0  # a check, not hashed

    def __post_init__(self) -> None:
        if self.size not in models.DSCNN.SIZES:
            raise ValueError(f"size must be one of {sorted(models.DSCNN.SIZES)}")
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1 or self.copies < 0:
            raise ValueError(f"invalid recipe {self}")
        if (self.shrink is not None or self.sparsity is not None) and self.base is None:
            raise ValueError("shrink and sparsity start from a base model")
        if self.shrink is not None and self.sparsity is not None:
            raise ValueError("a recipe either shrinks or sparsifies its base, not both")

    model = "dscnn"

    def model_kwargs(self) -> dict:
        """The DSCNN arguments that rebuild this recipe's architecture."""
        from mlcomp import zoo

        if self.base is None:
            return {"size": self.size}
        widths = models.DSCNN(**zoo.recipe_for(self.base).model_kwargs()).widths
        if self.shrink is not None:
            widths = tuple(max(1, w - round(self.shrink * w)) for w in widths)
        return {"widths": widths}

    def digest(self) -> str:
        from mlcomp import zoo

        extra = {"features": FEATURES, "data": "speech-v1"}
        for field in ("teacher", "base"):
            name = getattr(self, field)
            if name is not None:
                extra[f"{field}_digest"] = zoo.recipe_for(name).digest()
        return zoo._digest(self, extra)


# The keyword spotters of chapter 8. Seconds are two cores, pinned numerics.
RECIPES: dict[str, KWSRecipe] = {
    # the teacher: DS-CNN-M, 136,580 parameters
    "dscnn-m-kws": KWSRecipe(size="m", epochs=20, min_val_accuracy=0.95),
    # the student trained on labels alone, and the same student distilled
    "dscnn-s-kws": KWSRecipe(size="s", epochs=30, min_val_accuracy=0.95),
    "dscnn-s-kws-kd": KWSRecipe(
        size="s", epochs=30, teacher="dscnn-m-kws", min_val_accuracy=0.95
    ),
    # two more seeds of each, to tell a distillation gain from seed noise
    **{
        f"dscnn-s-kws{kd}-seed{seed}": KWSRecipe(
            size="s", epochs=30, seed=seed, teacher=teacher, min_val_accuracy=0.95
        )
        for seed in (1, 2)
        for kd, teacher in (("", None), ("-kd", "dscnn-m-kws"))
    },
    # structured: a quarter of every stage's channels removed, then fine-tuned
    "dscnn-s-kws-kd-shrink25": KWSRecipe(
        size="s",
        base="dscnn-s-kws-kd",
        shrink=0.25,
        epochs=8,
        lr=1e-3,
        teacher="dscnn-m-kws",
        min_val_accuracy=0.95,
    ),
    # unstructured on top, for the file: half of the remaining weights zero
    "dscnn-s-kws-kd-shrink25-sparse50": KWSRecipe(
        size="s",
        base="dscnn-s-kws-kd-shrink25",
        sparsity=0.5,
        epochs=6,
        lr=1e-3,
        prune_epochs=4,
        teacher="dscnn-m-kws",
        min_val_accuracy=0.95,
    ),
}


def _accuracies(net: nn.Module) -> dict:
    return {
        f"{split}_accuracy": train.evaluate(net, evaluation_set(split))
        for split in ("val", "test", "festival")
    }


def train_recipe(
    recipe: KWSRecipe, progress: bool = True, cache_dir: str | os.PathLike | None = None
) -> tuple[nn.Module, dict]:
    """Train a keyword spotter by ``recipe``; return it (eval mode) and metrics.

    The metrics are the accuracies on the validation and test voices and on
    the held-out Festival family; the zoo stores them as the model's record
    (``test_accuracy`` is the test voices').

    >>> net, info = train_recipe(KWSRecipe(epochs=1, copies=0), progress=False)
    >>> sorted(info)  # doctest: +NORMALIZE_WHITESPACE
    ['festival_accuracy', 'test_accuracy', 'train_clips', 'train_seconds',
     'val_accuracy']
    """
    from mlcomp import distill, prune, zoo

    X, y = training_set(recipe.copies, recipe.seed)
    utils.set_seed(recipe.seed)
    if recipe.base is None:
        net = models.DSCNN(recipe.size)
        fit_normalization(net, X)
    else:
        net = zoo.pretrained(recipe.base, progress=progress, cache_dir=cache_dir)
        if recipe.shrink is not None:
            net = prune.shrink_channels(net, recipe.shrink, X[:1])
    if recipe.teacher is not None:
        digest = zoo.recipe_for(recipe.teacher).digest()
        teacher_logits = _teacher_logits(
            recipe.teacher, digest, recipe.copies, recipe.seed, cache_dir
        )

        def loss_fn(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return distill.kd_loss(
                logits,
                teacher_logits[index],
                y[index],
                recipe.temperature,
                recipe.alpha,
            )

        data, kwargs = (X, torch.arange(len(X))), {"loss_fn": loss_fn}
    else:
        data, kwargs = (X, y), {}
    kwargs |= {
        "batch_size": recipe.batch_size,
        "seed": recipe.seed,
        "progress": progress,
    }
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    start = time.perf_counter()
    try:
        if recipe.sparsity is not None:
            prune.gradual_prune(
                net, data, recipe.sparsity, recipe.epochs, recipe.lr, scope="global",
                prune_epochs=recipe.prune_epochs, **kwargs,
            )  # fmt: skip
            prune.remove_(net)
        else:
            train.fit(net, data, recipe.epochs, recipe.lr, **kwargs)
    finally:
        torch.set_num_threads(threads_before)
    seconds = time.perf_counter() - start
    net.eval()
    metrics = _accuracies(net)
    if metrics["val_accuracy"] < recipe.min_val_accuracy:
        raise RuntimeError(
            f"validation accuracy {metrics['val_accuracy']:.4f} is below the recipe's "
            f"target {recipe.min_val_accuracy}"
        )
    return net, {
        "test_accuracy": metrics.pop("test_accuracy"),
        **metrics,
        "train_seconds": round(seconds, 1),
        "train_clips": len(X),
    }


# `mlcomp listen`'s default: the final student of chapter 8, as a .mlc file
DEFAULT_MODEL = "dscnn-s-kws-kd-shrink25-sparse50"
DEFAULT_BITS = 6


def from_state_dict(state: dict[str, torch.Tensor]) -> models.DSCNN:
    """The DS-CNN that ``state`` is the weights of (widths, folding read off it).

    >>> from_state_dict(models.DSCNN(widths=(8, 6, 4)).folded().state_dict()).widths
    (8, 6, 4)
    """
    try:
        widths = [state["conv.weight"].shape[0]]
        i = 0
        while f"blocks.{i}.pointwise.weight" in state:
            widths.append(state[f"blocks.{i}.pointwise.weight"].shape[0])
            i += 1
        net = models.DSCNN(
            widths=widths,
            num_classes=state["fc.weight"].shape[0],
            n_coefficients=state["feature_mean"].shape[0],
            folded="conv.bias" in state,
        )
        net.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:
        raise ValueError(
            f"not the weights of a DS-CNN keyword spotter: {exc}"
        ) from None
    return net.eval()


def save(net: models.DSCNN, path: str | os.PathLike, bits: int = DEFAULT_BITS):
    """Write ``net`` as an ``.mlc`` file: batch norms folded, k-means codebooks of
    ``bits`` for every kernel, positions and codes stored the smallest way.

    Returns the file's :func:`mlcomp.coding.inspect` table.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "kws.mlc"
    >>> table = save(models.DSCNN(widths=(8, 8)).eval(), path, bits=4)
    >>> table.loc["blocks.0.pointwise.weight", "values"]
    'codebook 4-bit'
    """
    from mlcomp import pipeline

    state = net.folded().state_dict()
    return pipeline.compress_state_dict(
        state, path, conv_bits=bits, fc_bits=bits, sparsity="auto", coder="auto"
    )


def load(path: str | os.PathLike) -> models.DSCNN:
    """A keyword spotter from an ``.mlc`` or ``.safetensors`` file.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "kws.mlc"
    >>> _ = save(models.DSCNN(widths=(8, 8)).eval(), path)
    >>> load(path).widths, load(path).is_folded
    ((8, 8), True)
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mlcomp.coding import load_compressed

    suffix = Path(path).suffix.lower()
    if suffix == ".mlc":
        state = load_compressed(path)
    elif suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except SafetensorError as exc:
            raise ValueError(
                f"{path}: not a readable safetensors file ({exc})"
            ) from None
    else:
        raise ValueError(f"{path}: a model is an .mlc or a .safetensors file")
    return from_state_dict(state)


def export_onnx(
    net: models.DSCNN, folder: str | os.PathLike, calibration_clips: int = 512
) -> dict[str, Path]:
    """ONNX files of ``net`` (batch norms folded): ``fp32`` and ``int8``.

    int8 is ONNX Runtime's static quantization, per channel, calibrated
    (min-max) on ``calibration_clips`` clean training clips spread over
    the training voices.

    >>> import tempfile
    >>> files = export_onnx(models.DSCNN(widths=(8, 8)).eval(), tempfile.mkdtemp(), 64)
    >>> from mlcomp import quant
    >>> sorted(files), len(quant.node_names(files["int8"], "QuantizeLinear")) > 0
    (['fp32', 'int8'], True)
    """
    from mlcomp import quant

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = quant.export_onnx(
        net.folded(), folder / "kws-fp32.onnx", torch.zeros(1, 1, 51, 10)
    )
    clips = speech.load("train", progress=False).waveforms()
    step = max(1, len(clips) // calibration_clips)
    calibration = features(clips[::step][:calibration_clips])
    int8 = quant.quantize_onnx(fp32, folder / "kws-int8.onnx", calibration)
    return {"fp32": fp32, "int8": int8}


def default_model(cache_dir: str | os.PathLike | None = None) -> models.DSCNN:
    """The compressed student (:data:`DEFAULT_MODEL` at :data:`DEFAULT_BITS`), from
    its ``.mlc`` file, written into the cache from the zoo model on first use.

    >>> default_model().is_folded
    True
    """
    from mlcomp import zoo

    path = zoo.derived_path(DEFAULT_MODEL, "kws", f"{DEFAULT_BITS}bit", cache_dir)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save(zoo.pretrained(DEFAULT_MODEL, progress=False), path)
    return load(path)


def accuracy_by_voice(net: nn.Module, split: str) -> dict[str, float]:
    """Accuracy of ``net`` on each voice of a held-out split (noise clips apart).

    >>> acc = accuracy_by_voice(default_model(), "festival")
    >>> sorted(acc)[:2]
    ['cmu_us_slt_arctic_hts', 'kal_diphone']
    """
    data = speech.load(split, progress=False)
    X, y = evaluation_set(split)
    right = train.predict(net, (X, y)) == y
    voices = np.array(data.voices)
    return {
        str(v): float(right[torch.from_numpy(voices == v)].float().mean())
        for v in sorted(set(data.voices))
    }


def probabilities(net: nn.Module, waveform: np.ndarray) -> np.ndarray:
    """Class probabilities (over :data:`mlcomp.speech.LABELS`) of a 1 s clip.

    >>> p = probabilities(models.DSCNN(widths=(4, 4)).eval(), np.zeros(16000))
    >>> p.shape, round(float(p.sum()), 5)
    ((12,), 1.0)
    """
    with torch.inference_mode():
        return torch.softmax(net(features(waveform)), dim=1)[0].numpy()


def classify(net: nn.Module, path: str | os.PathLike) -> tuple[str, float]:
    """The word ``net`` hears in the WAV file ``path``, and its probability.

    The file is read at any rate and channel count, made 16 kHz mono, and
    its loudest second is scored (:func:`mlcomp.audio.prepare`). Raises
    :class:`mlcomp.audio.AudioError` for a file that is not audio, is empty
    or is silent.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "yes.wav"
    >>> voice = speech.Voice("espeak", "en-us", "f2")  # a test voice
    >>> audio.write_wav(path, speech.synthesize("yes", voice), 16000)
    >>> classify(default_model(), path)[0]
    'yes'
    """
    p = probabilities(net, audio.prepare(path))
    best = int(p.argmax())
    return speech.LABELS[best], float(p[best])
