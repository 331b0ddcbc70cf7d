"""Measuring models: parameters, bytes, multiply-accumulates, and latency.

Every size and speed claim in the book goes through these functions, so that
"smaller" and "faster" always mean the same thing:

* parameters: elements of ``model.parameters()`` (total or non-zero);
* bytes: the storage of those parameters in a *dense* representation of a
  given bit width (sparse and entropy-coded formats are measured on real
  files in later chapters);
* MACs: multiply-accumulates of Conv2d and Linear layers for one input,
  counted by forward hooks on the real forward pass;
* latency: wall-clock time of the forward pass, median of many runs after a
  warm-up, with the thread count fixed.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "count_params",
    "storage_bytes",
    "macs",
    "layer_macs",
    "Latency",
    "latency",
    "compare_latency",
    "latency_rounds",
    "ratio_spread",
    "psnr",
]


def _effective_parameters(model: nn.Module):
    """Parameters as the forward pass sees them.

    A module pruned with :mod:`torch.nn.utils.prune` (or :mod:`mlcomp.prune`)
    holds ``weight_orig`` as the parameter and computes ``weight`` from it and
    a mask; the masked ``weight`` is what counts. A parameter shared by two
    modules (a tied embedding and output head) is counted once.
    """
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if name.endswith("_orig") and hasattr(
                module, name[: -len("_orig")] + "_mask"
            ):
                yield getattr(module, name[: -len("_orig")])
            else:
                yield param


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters of ``model`` (only the non-zero ones if ``nonzero``).

    Pruned layers are counted through their masked weights.

    >>> net = nn.Linear(4, 3)  # 12 weights + 3 biases
    >>> count_params(net)
    15
    >>> with torch.no_grad(): _ = net.weight[0].zero_()
    >>> count_params(net, nonzero=True)
    11
    """
    params = list(_effective_parameters(model))
    if nonzero:
        return sum(int(torch.count_nonzero(p)) for p in params)
    return sum(p.numel() for p in params)


def storage_bytes(tensors: nn.Module | Iterable[torch.Tensor], bits: int = 32) -> int:
    """Bytes to store every parameter densely at ``bits`` bits per value.

    Each tensor is rounded up to whole bytes on its own, as a file that stores
    tensors one after another would do. Pass a module (its parameters are
    counted) or an iterable of tensors.

    >>> net = nn.Linear(4, 3)
    >>> storage_bytes(net), storage_bytes(net, bits=16), storage_bytes(net, bits=5)
    (60, 30, 10)
    """
    if not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be an int in [1, 64], got {bits!r}")
    if isinstance(tensors, nn.Module):
        tensors = _effective_parameters(tensors)
    return sum(math.ceil(t.numel() * bits / 8) for t in tensors)


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of each Conv2d and Linear layer for one input.

    ``input_shape`` excludes the batch dimension, e.g. ``(1, 28, 28)``. A
    Conv2d costs ``out_elements * in_channels / groups * kh * kw``; a Linear,
    ``out_elements * in_features``. Biases, activations and pooling are not
    counted.

    >>> conv, fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 26 * 26, 10)
    >>> net = nn.Sequential(conv, nn.Flatten(), fc)
    >>> layer_macs(net, (1, 28, 28))
    {'0': 24336, '2': 27040}
    """
    counts: dict[str, int] = {}
    hooks = []

    def hook(name):
        def count(module, inputs, output):
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                per_out = module.in_channels // module.groups * kh * kw
            else:
                per_out = module.in_features
            counts[name] = counts.get(name, 0) + output.numel() * per_out

        return count

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        first = next(model.parameters(), torch.empty(0))
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=first.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return counts


def macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Total multiply-accumulates of Conv2d and Linear layers for one input.

    >>> from mlcomp.models import LeNet300100
    >>> macs(LeNet300100(), (1, 28, 28))  # 784*300 + 300*100 + 100*10
    266200
    """
    return sum(layer_macs(model, input_shape).values())


@dataclass(frozen=True)
class Latency:
    """Forward-pass timings in milliseconds.

    >>> print(Latency(1.25, 1.2, 1.4, repeats=50, threads=1))
    1.250 ms (p10 1.200, p90 1.400; 50 runs, 1 threads)
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    threads: int

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}; "
            f"{self.repeats} runs, {self.threads} threads)"
        )


def latency(
    model: nn.Module | Callable[[torch.Tensor], object],
    example: torch.Tensor,
    repeats: int = 50,
    warmup: int = 10,
    threads: int | None = None,
) -> Latency:
    """Time ``model(example)``: ``warmup`` untimed runs, then ``repeats`` timed.

    ``threads`` fixes ``torch.set_num_threads`` for the measurement (and is
    restored afterwards); ``None`` keeps the current setting. Any callable
    works, e.g. an ONNX Runtime session wrapped in a lambda.

    >>> net, x = nn.Linear(64, 64), torch.randn(1, 64)
    >>> t = latency(net, x, repeats=5, warmup=1, threads=1)
    >>> t.median_ms > 0, t.threads
    (True, 1)
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    if isinstance(model, nn.Module):
        was_training = model.training
        model.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(example)
            for _ in range(repeats):
                start = time.perf_counter()
                model(example)
                times.append((time.perf_counter() - start) * 1e3)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
        if isinstance(model, nn.Module):
            model.train(was_training)
    deciles = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return Latency(statistics.median(times), deciles[0], deciles[-1], repeats, used)


def latency_rounds(
    variants: dict[str, nn.Module | Callable[[torch.Tensor], object]],
    example: torch.Tensor,
    rounds: int = 5,
    repeats: int = 20,
    threads: int | None = None,
    warmup: int = 10,
) -> dict[str, list[float]]:
    """Median latency in ms of each variant in each of ``rounds``, in alternation.

    A shared machine drifts (other jobs, frequency scaling), and whatever is
    timed first or last takes the drift; alternating the variants within
    each round puts them on an equal footing. The per-round values give the
    spread of a ratio (:func:`ratio_spread`).

    >>> t = latency_rounds({"a": nn.Linear(8, 8)}, torch.randn(4, 8), rounds=3,
    ...                    repeats=2, threads=1)
    >>> len(t["a"])
    3
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t = latency(fn, example, repeats, warmup=warmup, threads=threads)
            times[name].append(t.median_ms)
    return times


def ratio_spread(
    times: dict[str, list[float]], reference: str, name: str
) -> tuple[float, float, float]:
    """Median, min and max over rounds of ``times[reference] / times[name]``.

    >>> ratio_spread({"ref": [2.0, 3.0, 4.0], "x": [1.0, 1.0, 1.0]}, "ref", "x")
    (3.0, 2.0, 4.0)
    """
    ratios = [a / b for a, b in zip(times[reference], times[name], strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def compare_latency(
    variants: dict[str, nn.Module | Callable[[torch.Tensor], object]],
    example: torch.Tensor,
    rounds: int = 5,
    repeats: int = 20,
    threads: int | None = None,
) -> dict[str, float]:
    """Median latency in ms of each variant, timed in alternation over ``rounds``.

    The median of the per-round medians of :func:`latency_rounds`. Compare
    ratios only within one call.

    >>> t = compare_latency({"a": nn.Linear(8, 8), "b": nn.Linear(8, 2)},
    ...                     torch.randn(4, 8), rounds=2, repeats=3, threads=1)
    >>> sorted(t)
    ['a', 'b']
    """
    times = latency_rounds(variants, example, rounds, repeats, threads)
    return {name: statistics.median(t) for name, t in times.items()}


def psnr(reference, distorted, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(peak**2 / MSE)``; inf if equal.

    >>> import numpy as np
    >>> round(psnr(np.zeros(4), np.array([0, 0, 0, 2.0])), 2)
    48.13
    """
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(distorted, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {out.shape}")
    mse = float(np.mean((ref - out) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def ms_ssim(reference, distorted) -> float:
    """Multi-scale structural similarity of two uint8 RGB images, in [0, 1].

    Wang, Simoncelli & Bovik (2003), five scales with their weights, through
    the PyPI package ``pytorch-msssim`` (Gaussian window of 11 pixels, so both
    sides must exceed 160 pixels).

    >>> import numpy as np
    >>> im = np.random.default_rng(0).integers(0, 256, (176, 176, 3), np.uint8)
    >>> round(ms_ssim(im, im), 6)
    1.0
    """
    import numpy as np

    try:
        from pytorch_msssim import ms_ssim as _ms_ssim
    except ImportError:
        raise ImportError(
            "MS-SSIM needs the PyPI package pytorch-msssim: pip install pytorch-msssim"
        ) from None
    ref, out = np.asarray(reference), np.asarray(distorted)
    if ref.shape != out.shape or ref.ndim != 3 or ref.shape[2] != 3:
        raise ValueError(
            f"MS-SSIM needs two H x W x 3 images of one shape, got {ref.shape} "
            f"and {out.shape}"
        )
    if min(ref.shape[:2]) <= 160:
        raise ValueError(
            "MS-SSIM's five scales need both sides over 160 pixels, "
            f"got {ref.shape[:2]}"
        )

    def tensor(a):
        return torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]

    with torch.no_grad():
        return float(_ms_ssim(tensor(ref), tensor(out), data_range=255.0))
