"""The uniform quantizer as pure tensor functions (Jacob et al. 2018).

A ``bits``-bit quantizer maps a real ``x`` to an integer code and back::

    q = clamp(round(x / scale) + zero_point, qmin, qmax)
    x_hat = (q - zero_point) * scale

* ``scheme="affine"`` uses the unsigned range ``[0, 2**bits - 1]``; the range
  ``[lo, hi]`` is widened to contain 0, ``scale = (hi - lo) / (qmax - qmin)``
  and the zero point is the code of 0.0, so zero (padding, ReLU outputs,
  pruned weights) is represented exactly.
* ``scheme="symmetric"`` uses the signed range ``[-2**(bits-1),
  2**(bits-1) - 1]`` with ``zero_point = 0`` and ``scale = amax / qmax``, so
  ``+amax`` and ``-amax`` are both exact and the code ``-2**(bits-1)`` is
  reached only by values clipped below ``-amax`` (the "restricted range" of
  int8 weight kernels).

``axis`` selects per-channel parameters (one scale per index along ``axis``,
e.g. per output channel of a weight); ``axis=None`` is per tensor.

The *observer* chooses the range ``[lo, hi]`` from data:

* ``"minmax"`` — the extremes: nothing is clipped, outliers stretch the grid.
* ``"percentile"`` — the ``percentile``-th and ``(100 - percentile)``-th
  percentiles (of ``|x|`` for the symmetric scheme).
* ``"mse"`` — the range ``alpha * [min, max]``, ``alpha`` from a grid of 100
  values in (0, 1], that minimises the mean squared quantization error.
* ``"entropy"`` — the clipping threshold whose quantized histogram is closest
  in KL divergence to the original one (Migacz 2017, TensorRT's calibrator):
  on ``|x|`` for the symmetric scheme; for the affine scheme the bottom of
  the range stays at ``min(x, 0)`` and only the top is searched, which suits
  ReLU outputs and inputs with a floor such as a normalized image's
  background.

Rounding is round-half-to-even, as in ``torch.round`` and in PyTorch's
``fake_quantize`` ops, against which the tests check this module.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mlcomp.utils import MAX_BITS, check_bits

__all__ = [
    "SCHEMES",
    "OBSERVERS",
    "MAX_BITS",
    "qrange",
    "qparams",
    "observe_range",
    "range_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "sqnr",
]

SCHEMES = ("affine", "symmetric")
OBSERVERS = ("minmax", "percentile", "mse", "entropy")


def _check(bits: int, scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    low = 2 if scheme == "symmetric" else 1
    check_bits(bits, f"bits (of the {scheme} scheme)", low=low)


def qrange(bits: int, scheme: str = "affine") -> tuple[int, int]:
    """The integer codes ``(qmin, qmax)`` of a ``bits``-bit quantizer.

    >>> qrange(8, "affine"), qrange(8, "symmetric"), qrange(2, "symmetric")
    ((0, 255), (-128, 127), (-2, 1))
    """
    _check(bits, scheme)
    if scheme == "affine":
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``x`` as a 2-D (channels, values) float64 view; one row when per tensor."""
    x = torch.as_tensor(x).detach().to(torch.float64)
    if axis is None:
        return x.reshape(1, -1)
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis {axis} is out of range for a {x.dim()}-D tensor")
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _shape_for(params: torch.Tensor, x: torch.Tensor, axis: int | None):
    """Reshape per-channel ``params`` so they broadcast against ``x`` along axis."""
    if axis is None:
        return params.reshape(())
    shape = [1] * x.dim()
    shape[axis] = -1
    return params.reshape(shape)


def _quantize_rows(rows, lo, hi, bits, scheme):
    scale, zero = range_qparams(lo, hi, bits, scheme)
    qmin, qmax = qrange(bits, scheme)
    q = torch.clamp(torch.round(rows / scale[:, None]) + zero[:, None], qmin, qmax)
    return (q - zero[:, None]) * scale[:, None]


def _minmax(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rows.min(dim=1).values, rows.max(dim=1).values


def _percentile(rows, scheme, percentile):
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (50, 100], got {percentile}")
    p = percentile / 100.0
    data = rows.numpy()
    if scheme == "symmetric":
        amax = torch.from_numpy(np.quantile(np.abs(data), p, axis=1))
        return -amax, amax
    lo, hi = np.quantile(data, [1.0 - p, p], axis=1)
    return torch.from_numpy(lo), torch.from_numpy(hi)


def _mse(rows, bits, scheme, grid: int = 100):
    lo, hi = _minmax(rows)
    best = torch.full_like(lo, math.inf)
    best_lo, best_hi = lo.clone(), hi.clone()
    for alpha in torch.linspace(1.0 / grid, 1.0, grid, dtype=torch.float64):
        c_lo, c_hi = alpha * lo, alpha * hi
        err = (_quantize_rows(rows, c_lo, c_hi, bits, scheme) - rows).pow(2).mean(1)
        better = err < best  # strict: ties keep the smaller range found first
        best = torch.where(better, err, best)
        best_lo = torch.where(better, c_lo, best_lo)
        best_hi = torch.where(better, c_hi, best_hi)
    return best_lo, best_hi


def _kl_threshold(values: np.ndarray, levels: int, bins: int = 2048) -> float:
    """Migacz's entropy calibration: the threshold on ``|x|`` of least KL divergence.

    For each candidate threshold (a bin edge), the histogram below it, with
    everything above folded into its last bin, is the reference P; Q is P
    merged into ``levels`` equal groups, each group's mass spread evenly over
    its non-empty bins. The threshold minimising KL(P || Q) wins.

    Exact zeros (a ReLU's output is often mostly zeros) are represented
    exactly by every threshold; left in, their spike in the first bin would
    dominate both distributions, so the first bin is given the second's
    count, as in NVIDIA's calibrator. Candidates start at ``bins / 16``, so
    the range keeps at least 1/16 of the observed maximum.
    """
    mags = np.abs(values)
    top = float(mags.max(initial=0.0))
    if top == 0.0:
        return 0.0
    levels = min(levels, bins)
    hist, edges = np.histogram(mags, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    hist[0] = hist[1]
    best, best_kl = bins, math.inf
    start = max(levels, bins // 16)
    stride = max(1, (bins - start) // 256)
    for i in range(start, bins + 1, stride):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        # Q: merge the i bins into `levels` groups, then spread evenly.
        group = np.minimum((np.arange(i) * levels) // i, levels - 1)
        nonzero = (hist[:i] > 0).astype(np.float64)
        mass = np.bincount(group, weights=hist[:i], minlength=levels)
        count = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero > 0, mass[group] / np.maximum(count[group], 1), 0.0)
        support = p > 0
        if np.any(q[support] == 0):  # P has mass where Q has none: infinite KL
            continue
        pn, qn = p[support] / p.sum(), q[support] / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best, best_kl = i, kl
    return float(edges[best])


def _entropy(rows, bits, scheme):
    """Symmetric: a threshold on ``|x|``. Affine: the bottom stays at min(x, 0)
    and the top is searched on ``x - bottom``."""
    qmin, qmax = qrange(bits, scheme)
    if scheme == "symmetric":
        t = [_kl_threshold(r, qmax) for r in rows.numpy()]
        t = torch.tensor(t, dtype=torch.float64)
        return -t, t
    lo, hi = _minmax(rows)
    bottom = torch.clamp(lo, max=0.0)
    shifted = (rows - bottom[:, None]).numpy()
    t = [_kl_threshold(r, qmax - qmin) for r in shifted]
    return bottom, torch.minimum(hi, bottom + torch.tensor(t, dtype=torch.float64))


def observe_range(
    x: torch.Tensor,
    bits: int = 8,
    scheme: str = "affine",
    axis: int | None = None,
    observer: str = "minmax",
    percentile: float = 99.99,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The range ``(lo, hi)`` that ``observer`` picks for ``x``, per channel of axis.

    Returns two float64 tensors with one entry per channel (one entry per
    tensor when ``axis`` is None).

    >>> x = torch.cat([torch.linspace(-1, 1, 99999), torch.tensor([50.0])])
    >>> lo, hi = observe_range(x, observer="minmax"); float(hi[0])
    50.0
    >>> lo, hi = observe_range(x, bits=4, observer="mse")  # clips the outlier
    >>> float(hi[0]) < 10
    True
    """
    _check(bits, scheme)
    rows = _rows(x, axis)
    if rows.numel() == 0:
        raise ValueError("cannot observe the range of an empty tensor")
    if not torch.isfinite(rows).all():
        raise ValueError("x contains NaN or infinite values")
    if observer == "minmax":
        return _minmax(rows)
    if observer == "percentile":
        return _percentile(rows, scheme, percentile)
    if observer == "mse":
        return _mse(rows, bits, scheme)
    if observer == "entropy":
        return _entropy(rows, bits, scheme)
    raise ValueError(f"observer must be one of {OBSERVERS}, got {observer!r}")


def range_qparams(
    lo: torch.Tensor, hi: torch.Tensor, bits: int = 8, scheme: str = "affine"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` of the quantizer that covers ``[lo, hi]``.

    The affine range is first widened to contain 0; a range of width zero
    gets ``scale = 1`` so that quantizing never divides by zero.

    >>> scale, zero = range_qparams(torch.tensor([-1.0]), torch.tensor([3.0]), 8)
    >>> round(float(scale[0]) * 255, 6), int(zero[0])
    (4.0, 64)
    """
    qmin, qmax = qrange(bits, scheme)
    lo = torch.as_tensor(lo, dtype=torch.float64).reshape(-1)
    hi = torch.as_tensor(hi, dtype=torch.float64).reshape(-1)
    if scheme == "symmetric":
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = amax / qmax
        zero = torch.zeros_like(scale, dtype=torch.int64)
    else:
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.clamp(qmin - torch.round(lo / torch.where(scale > 0, scale, 1)),
                           qmin, qmax).to(torch.int64)  # fmt: skip
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def qparams(
    x: torch.Tensor,
    bits: int = 8,
    scheme: str = "affine",
    axis: int | None = None,
    observer: str = "minmax",
    percentile: float = 99.99,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int64) for ``x``, chosen by ``observer``.

    Per tensor (``axis=None``) both are 0-d; per channel they have one entry
    per index along ``axis``.

    >>> scale, zero = qparams(torch.tensor([-1.0, 0.5, 3.0]), bits=8)
    >>> round(float(scale) * 255, 6), int(zero)
    (4.0, 64)
    >>> w = torch.tensor([[0.5, -0.25], [2.0, 1.0]])
    >>> scale, zero = qparams(w, 8, "symmetric", axis=0)
    >>> (scale * 127).tolist(), zero.tolist()
    ([0.5, 2.0], [0, 0])
    """
    lo, hi = observe_range(x, bits, scheme, axis, observer, percentile)
    scale, zero = range_qparams(lo, hi, bits, scheme)
    if axis is None:
        return scale.reshape(()).float(), zero.reshape(())
    return scale.float(), zero


def _check_params(x, scale, zero_point, axis):
    scale, zero_point = torch.as_tensor(scale), torch.as_tensor(zero_point)
    if axis is None:
        if scale.numel() != 1 or zero_point.numel() != 1:
            raise ValueError(
                "per-tensor quantization needs one scale and one zero point; "
                f"got {scale.numel()} and {zero_point.numel()} (pass axis=...)"
            )
    else:
        n = x.shape[axis]
        if scale.numel() != n or zero_point.numel() != n:
            raise ValueError(
                f"axis {axis} has {n} channels but got {scale.numel()} scales "
                f"and {zero_point.numel()} zero points"
            )
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive")
    return _shape_for(scale, x, axis), _shape_for(zero_point, x, axis)


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    bits: int = 8,
    scheme: str = "affine",
    axis: int | None = None,
) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)`` (int64).

    >>> quantize(torch.tensor([-1.0, 0.0, 0.26, 9.0]), 0.5, 2, bits=3).tolist()
    [0, 2, 3, 7]
    """
    _check(bits, scheme)
    x = torch.as_tensor(x)
    scale, zero_point = _check_params(x, scale, zero_point, axis)
    qmin, qmax = qrange(bits, scheme)
    q = torch.round(x / scale) + zero_point
    return torch.clamp(q, qmin, qmax).to(torch.int64)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    axis: int | None = None,
) -> torch.Tensor:
    """Real values ``(q - zero_point) * scale`` (float32) of integer codes.

    >>> dequantize(torch.tensor([0, 2, 3, 7]), 0.5, 2).tolist()
    [-1.0, 0.0, 0.5, 2.5]
    """
    q = torch.as_tensor(q)
    scale, zero_point = _check_params(q, scale, zero_point, axis)
    return ((q - zero_point) * scale).to(torch.float32)


class _FakeQuantize(torch.autograd.Function):
    """Quantize-dequantize forward; straight-through estimator backward.

    The gradient passes unchanged where the code was not clipped and is zero
    where it was (Bengio et al. 2013; Jacob et al. 2018), as in
    ``torch.fake_quantize_per_tensor_affine``.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        q = torch.round(x / scale) + zero_point
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return ((torch.clamp(q, qmin, qmax) - zero_point) * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(
    x: torch.Tensor,
    bits: int = 8,
    scheme: str = "affine",
    axis: int | None = None,
    observer: str = "minmax",
    *,
    scale: torch.Tensor | None = None,
    zero_point: torch.Tensor | None = None,
    percentile: float = 99.99,
) -> torch.Tensor:
    """``dequantize(quantize(x))`` with a straight-through gradient, for training.

    Without ``scale``/``zero_point`` they are chosen from ``x`` by
    ``observer`` (outside autograd). The backward pass lets the gradient
    through where ``x`` fell inside the grid and blocks it where it was
    clipped.

    >>> x = torch.tensor([-1.0, 0.1, 0.3, 2.0], requires_grad=True)
    >>> y = fake_quantize(x, bits=2, scheme="symmetric", scale=torch.tensor(0.5),
    ...                   zero_point=torch.tensor(0))
    >>> y.tolist()
    [-1.0, 0.0, 0.5, 0.5]
    >>> y.sum().backward(); x.grad.tolist()  # 2.0 was clipped
    [1.0, 1.0, 1.0, 0.0]
    """
    _check(bits, scheme)
    if (scale is None) != (zero_point is None):
        raise ValueError("pass both scale and zero_point, or neither")
    if scale is None:
        scale, zero_point = qparams(
            x.detach(), bits, scheme, axis, observer, percentile
        )
    scale, zero_point = _check_params(x, scale, zero_point, axis)
    qmin, qmax = qrange(bits, scheme)
    return _FakeQuantize.apply(x, scale.to(x.dtype), zero_point.to(x.dtype), qmin, qmax)


def sqnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-noise ratio ``10 log10(sum x^2 / sum (x - x_hat)^2)``, in dB.

    Each extra bit of a uniform quantizer adds about 6.02 dB.

    >>> x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    >>> gain = sqnr(x, fake_quantize(x, 8)) - sqnr(x, fake_quantize(x, 7))
    >>> round(gain)
    6
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    x_hat = torch.as_tensor(x_hat, dtype=torch.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} and {tuple(x_hat.shape)}")
    noise = float((x - x_hat).pow(2).sum())
    signal = float(x.pow(2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf
