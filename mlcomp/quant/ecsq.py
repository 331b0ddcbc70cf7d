"""Uniform steps with entropy coding: the quantizer of the MPEG NNC standard's kind.

A codebook of ``2**b`` values (:mod:`mlcomp.quant.kmeans`) fixes the number
of levels and lets the step vary. The other way round fixes the *step*
``Δ`` and lets the number of levels be whatever the weights need: each weight
becomes the integer level ``q = round(w / Δ)`` and is reconstructed as
``q Δ``. Zero is a level, so pruned weights stay exactly zero, and an entropy
coder spends about ``-log2 p(q)`` bits on a level, so the many levels of a
fine step cost little when most weights sit near zero. At high rate this is
close to optimal for a mean-squared error: a uniform quantizer followed by an
ideal entropy coder is within ``(1/2) log2(πe/6) ≈ 0.254`` bits per sample of
the rate-distortion bound (Gish & Pierce 1968).

**Entropy-constrained scalar quantization** (ECSQ; Chou, Lookabaugh & Gray
1989) improves on plain rounding by choosing each level to minimize a
Lagrangian cost rather than the error alone,

    J(q) = (w / Δ - q)**2 + λ · (-log2 p(q)),

where ``p`` is the distribution of the levels themselves. :func:`step_levels`
alternates the two steps of a Lloyd-style descent — choose every level for
the current ``p``, then set ``p`` to the levels' frequencies — and each step
can only lower the total cost (the first by construction, the second because
a message's own frequencies minimize its code length; a level no value uses
has probability 0 and is not chosen again). The candidates of a weight are
the two levels around ``w / Δ``, so the error never exceeds one step,
whatever ``λ``; ``λ = 0`` is plain rounding.

Which ``λ``? At high rate a uniform quantizer's distortion is ``D = Δ²/12``
and its rate ``R = h - log2 Δ`` (``h`` the differential entropy of the
weights), so one more bit divides ``D`` by four: ``dD/dR = -2 ln2 · D``. In
the units of ``J`` (distortion in steps squared) the slope of the step's own
rate-distortion curve is ``2 ln 2 / 12 = ln 2 / 6 ≈ 0.116``
(:data:`STEP_LAMBDA`): the ``λ`` that trades bits for error at the rate the
step itself implies. Larger values spend error that a coarser step would
buy more cheaply, so a sweep over the step with ``λ = ln 2 / 6`` is the
recipe; the gain over rounding is small at high rate and grows as the rate
falls (the dead zone around zero widens).

>>> w = np.array([-0.26, -0.04, 0.0, 0.02, 0.11, 0.49])
>>> step_levels(w, 0.1).tolist()
[-3, 0, 0, 0, 1, 5]
>>> zigzag(np.array([0, -1, 1, -2, 2])).tolist()  # signed levels as codes
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "qp_step",
    "step_levels",
    "level_cost",
    "order0_bits",
    "rd_curve",
    "allocate",
    "zigzag",
    "unzigzag",
    "MAX_LEVEL",
    "STEP_LAMBDA",
]

MAX_LEVEL = (1 << 15) - 1
"""The largest ``|q|`` a level may have: its code (:func:`zigzag`) fits 16 bits."""


STEP_LAMBDA = math.log(2) / 6
"""``ln 2 / 6``: the rate weight that matches a step's own trade of bits for error."""


def qp_step(qp: int) -> float:
    """The step of an integer quality parameter ``qp``: about ``2 ** (qp / 4)``.

    One ``qp`` for the whole model is the NNC standard's main knob (ISO/IEC
    15938-17 at its default density of four steps per octave): the step is
    ``(1 + (qp mod 4) / 4) · 2 ** floor(qp / 4)``, a power of two at every
    fourth ``qp`` and linear in between, so four ``qp`` make the step twice
    as fine (one more bit per weight at high rate). The same grid as the
    standard's reference software, so that the two can be compared ``qp``
    for ``qp``.

    >>> qp_step(-16), qp_step(-20) / qp_step(-16), qp_step(-19)
    (0.0625, 0.5, 0.0390625)
    """
    if isinstance(qp, bool) or not isinstance(qp, (int, np.integer)):
        raise TypeError(f"qp must be an integer, got {qp!r}")
    if not -200 <= qp <= 40:
        raise ValueError(f"qp must be in [-200, 40], got {qp}")
    shift, fraction = divmod(int(qp), 4)
    return (1 + fraction / 4) * 2.0**shift


def _check_step(step) -> float:
    if isinstance(step, bool) or not isinstance(step, (int, float, np.number)):
        raise TypeError(f"step must be a positive number, got {step!r}")
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive finite number, got {step}")
    return float(step)


def level_cost(x: np.ndarray, levels: np.ndarray, step: float, lam: float) -> float:
    """The ECSQ cost ``Σ (x/Δ - q)**2 + λ · (code length of q in bits)``.

    The code length is that of the levels under their own frequencies
    (``-Σ log2 p(q)``), i.e. what an ideal order-0 entropy coder spends.

    >>> level_cost(np.array([0.0, 0.25]), np.array([0, 0]), 1.0, 1.0)
    0.0625
    """
    x = np.asarray(x, dtype=np.float64)
    levels = np.asarray(levels)
    distortion = float(np.sum((x / step - levels) ** 2))
    return distortion + lam * order0_bits(levels)


def step_levels(x, step: float, lam: float = 0.0, iterations: int = 8) -> np.ndarray:
    """Integer levels ``q`` of ``x`` on the grid of ``step`` (``x ≈ q · step``).

    ``lam = 0`` rounds to the nearest level. ``lam > 0`` runs entropy-
    constrained quantization (the module's docstring): up to ``iterations``
    rounds of choosing, for each value, the cheaper of the two levels around
    ``x / step`` under the current level frequencies, stopping early when no
    level changes. A larger ``lam`` buys a smaller file with more error, and
    the error of every value stays below ``step``; a value already on the
    grid (a pruned zero, say) keeps its level. Levels are int64 with
    ``|q| <= MAX_LEVEL``; a step too fine for the values is an error.

    >>> x = np.random.default_rng(0).laplace(0, 1, 10_000)
    >>> plain, rd = step_levels(x, 0.5), step_levels(x, 0.5, lam=0.2)
    >>> level_cost(x, rd, 0.5, 0.2) < level_cost(x, plain, 0.5, 0.2)
    True
    >>> bool(np.abs(x - rd * 0.5).max() < 0.5)
    True
    """
    step = _check_step(step)
    if isinstance(lam, bool) or not (isinstance(lam, (int, float, np.number))):
        raise TypeError(f"lam must be a number, got {lam!r}")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a non-negative finite number, got {lam}")
    bad = isinstance(iterations, bool) or not isinstance(iterations, int)
    if bad or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size and not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    u = x / step
    biggest = float(np.abs(u).max(initial=0.0))
    if biggest > MAX_LEVEL:
        raise ValueError(
            f"step {step:g} is too fine for values up to {biggest * step:g}: "
            f"levels would exceed ±{MAX_LEVEL} (use a step of at least "
            f"{biggest * step / MAX_LEVEL:.3g})"
        )
    levels = np.rint(u).astype(np.int64)
    if lam == 0 or x.size == 0:
        return levels
    low = np.floor(u).astype(np.int64)
    d_low, d_high = (u - low) ** 2, (low + 1 - u) ** 2
    d_high[u == low] = np.inf  # on the grid already: stays there
    offset = int(low.min())
    for _ in range(iterations):
        counts = np.bincount(levels - offset)
        with np.errstate(divide="ignore"):  # an unused level costs infinitely
            bits = np.append(-np.log2(counts / levels.size), np.inf)  # and past top
        cost_low = d_low + lam * bits[low - offset]
        cost_high = d_high + lam * bits[low + 1 - offset]
        new = np.where(cost_high < cost_low, low + 1, low)
        if np.array_equal(new, levels):
            break
        levels = new
    return levels


def order0_bits(levels: np.ndarray) -> float:
    """The bits an ideal order-0 entropy coder spends on ``levels``: ``-Σ log2 p(q)``.

    >>> order0_bits(np.array([0, 0, 1, -1]))
    6.0
    """
    levels = np.asarray(levels).ravel()
    if levels.size == 0:
        return 0.0
    _, counts = np.unique(levels, return_counts=True)
    return float(-(counts * np.log2(counts / levels.size)).sum())


def rd_curve(x, steps, lam: float = STEP_LAMBDA, weights=None):
    """Rate and distortion of ``x`` at each of ``steps`` (arrays, one entry per step).

    The rate is :func:`order0_bits` of the levels :func:`step_levels` picks
    (with ``lam``); the distortion is the squared error, weighted by
    ``weights`` (one non-negative number per value, e.g. its Fisher
    information) when given: ``Σ weights · (x - q Δ)**2``, so that the
    curves of different tensors add up (:func:`allocate`).

    >>> x = np.random.default_rng(0).normal(0, 1, 1000)
    >>> bits, dist = rd_curve(x, [0.5, 0.25])
    >>> bool(bits[1] > bits[0] and dist[1] < dist[0])
    True
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w is not None and w.shape != x.shape:
        raise ValueError(
            f"weights must have one entry per value ({x.size}), got {w.size}"
        )
    bits, distortion = [], []
    for step in steps:
        q = step_levels(x, step, lam)
        err = (x - q * float(step)) ** 2
        bits.append(order0_bits(q))
        distortion.append(float(err.sum() if w is None else (w * err).sum()))
    return np.array(bits), np.array(distortion)


def allocate(curves, mu: float) -> list[int]:
    """For each curve ``(bits, distortion)``, the point of least ``bits + mu · dist``.

    Optimal bit allocation across independent parts (Shoham & Gersho 1988):
    when the total distortion is the sum of the parts' distortions, the
    points that minimize each part's Lagrangian at one common ``mu`` lie
    on the lower convex hull of the total rate-distortion curve. A larger
    ``mu`` prices error higher: more bits, less distortion. Sweeping ``mu``
    traces the whole curve; each value gives one allocation.

    >>> flat = (np.array([10.0, 20.0]), np.array([5.0, 4.9]))  # bits buy little
    >>> steep = (np.array([10.0, 20.0]), np.array([5.0, 0.1]))  # bits buy a lot
    >>> allocate([flat, steep], mu=3.0)
    [0, 1]
    """
    if not (isinstance(mu, (int, float, np.number)) and math.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be a non-negative finite number, got {mu!r}")
    return [int(np.argmin(np.asarray(b) + mu * np.asarray(d))) for b, d in curves]


def zigzag(levels: np.ndarray) -> np.ndarray:
    """Signed levels as non-negative codes: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ...

    >>> unzigzag(zigzag(np.array([-7, 0, 7]))).tolist()
    [-7, 0, 7]
    """
    q = np.asarray(levels, dtype=np.int64)
    return np.where(q < 0, -2 * q - 1, 2 * q)


def unzigzag(codes: np.ndarray) -> np.ndarray:
    """The inverse of :func:`zigzag`.

    >>> unzigzag(np.array([0, 1, 2, 3])).tolist()
    [0, -1, 1, -2]
    """
    c = np.asarray(codes, dtype=np.int64)
    return np.where(c & 1, -(c >> 1) - 1, c >> 1)
