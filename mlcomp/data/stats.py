"""One-pass, mergeable moments: Welford's update and Chan et al.'s merge.

For a chunk of ``n`` values with mean ``m`` and sum of squared deviations
``M2``, and a second chunk ``(n', m', M2')``, the union has

    n'' = n + n',   d = m' - m,   m'' = m + d n' / n'',
    M2'' = M2 + M2' + d^2 n n' / n''

(Chan, Golub & LeVeque 1979). Welford's update is the case n' = 1. Each chunk's
own ``(m, M2)`` is computed by two passes over the chunk, which is in memory.

Two things go wrong far from zero. The textbook one-pass formula
``(sum x^2 - (sum x)^2 / n) / (n - 1)`` subtracts two numbers of size
``n * mean^2`` to get one of size ``n * var``: with mean 1e9 and variance 1,
float64's 16 digits are all spent on the mean and the result is noise (or
negative). Welford/Chan avoid the cancellation in ``M2`` but still carry the
mean in absolute terms, so each merge's ``d = m' - m`` rounds at the scale of
the mean: digits of the variance are lost, more the farther from zero. Working on values
shifted by a reference point ``K`` (the first value seen in each column)
fixes both: the moments of ``x - K`` are those of ``x`` (the mean shifted
back), and ``x - K`` is of the size of the spread, not of the mean.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RunningMoments", "naive_variance"]


def naive_variance(x, ddof: int = 1) -> np.ndarray:
    """The textbook one-pass variance ``(Σx² − (Σx)²/n) / (n − ddof)``, per column.

    Shown for its failure: it cancels catastrophically when the mean is
    large against the spread.

    >>> float(naive_variance(np.array([1.0, 2.0, 3.0, 4.0])))
    1.6666666666666667
    >>> float(naive_variance(1e9 + np.array([1.0, 2.0, 3.0, 4.0])))  # noise
    0.0
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    return (np.sum(x * x, axis=0) - np.sum(x, axis=0) ** 2 / n) / (n - ddof)


class RunningMoments:
    """Count, mean and variance per column, in one pass over chunks, mergeable.

    ``update(batch)`` takes an array whose axis 0 runs over examples (rows of
    a table, images of a data set); the statistics are kept for every entry
    of the remaining axes (per column, per pixel). NaN entries are missing
    values: they are skipped, and each column keeps its own count.
    ``merge(other)`` combines two accumulators as if one had seen both
    streams, so chunks can be reduced in any tree (a Dask reduction).

    ``shift=True`` (the default) stores moments of ``x - K`` with ``K`` the
    first non-missing value of each column; ``shift=False`` is plain
    Welford/Chan, kept to show what the shift buys.

    >>> rm = RunningMoments()
    >>> _ = rm.update(np.array([[1.0, 10.0], [2.0, np.nan]]))
    >>> _ = rm.update(np.array([[3.0, 30.0]]))
    >>> rm.count.tolist(), rm.mean.tolist(), rm.var().tolist()
    ([3, 2], [2.0, 20.0], [1.0, 200.0])
    """

    def __init__(self, shift: bool = True) -> None:
        self.shift = shift
        self.count: np.ndarray | None = None  # int64 per column
        self._mean: np.ndarray | None = None  # of x - K
        self._m2: np.ndarray | None = None
        self._ref: np.ndarray | None = None  # K, NaN until a column has data

    # --- accumulation -----------------------------------------------------------

    def _init(self, shape: tuple[int, ...]) -> None:
        self.count = np.zeros(shape, np.int64)
        self._mean = np.zeros(shape)
        self._m2 = np.zeros(shape)
        self._ref = np.full(shape, np.nan)

    def update(self, batch) -> RunningMoments:
        """Add a chunk (axis 0 = examples) to the statistics; returns ``self``."""
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim == 0:
            raise ValueError("a batch needs an axis of examples (axis 0)")
        if self.count is None:
            self._init(x.shape[1:])
        elif x.shape[1:] != self.count.shape:
            raise ValueError(
                f"batch has per-example shape {x.shape[1:]}, expected "
                f"{self.count.shape}"
            )
        if x.shape[0] == 0:
            return self
        present = ~np.isnan(x)
        if self.shift:  # the reference point: the first value each column sees
            unset = np.isnan(self._ref) & present.any(axis=0)
            if unset.any():
                first = np.argmax(present, axis=0)
                firsts = np.take_along_axis(x, first[None], axis=0)[0]
                self._ref = np.where(unset, firsts, self._ref)
            x = x - np.where(np.isnan(self._ref), 0.0, self._ref)
        n = present.sum(axis=0)
        safe_n = np.maximum(n, 1)
        xz = np.where(present, x, 0.0)
        mean = xz.sum(axis=0) / safe_n  # two passes over the chunk
        dev = np.where(present, x - mean, 0.0)
        m2 = (dev * dev).sum(axis=0)
        self._combine(n, mean, m2)
        return self

    def _combine(self, n, mean, m2) -> None:
        total = self.count + n
        safe = np.maximum(total, 1)
        delta = mean - self._mean
        self._mean = np.where(total > 0, self._mean + delta * (n / safe), 0.0)
        self._m2 = self._m2 + m2 + delta * delta * (self.count * (n / safe))
        self.count = total

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Fold ``other``'s statistics into this one (in place); returns ``self``.

        >>> a, b, ab = RunningMoments(), RunningMoments(), RunningMoments()
        >>> x = np.arange(10.0)
        >>> _ = a.update(x[:3]), b.update(x[3:]), ab.update(x)
        >>> bool(np.isclose(a.merge(b).var(), ab.var()))
        True
        """
        if not isinstance(other, RunningMoments):
            raise TypeError(f"can only merge RunningMoments, not {type(other)}")
        if other.count is None:
            return self
        if self.count is None:
            self.shift = other.shift
            self._init(other.count.shape)
        if other.count.shape != self.count.shape:
            raise ValueError(
                f"cannot merge statistics of shape {other.count.shape} into "
                f"{self.count.shape}"
            )
        if self.shift != other.shift:
            raise ValueError("cannot merge shifted and unshifted statistics")
        mean = other._mean
        if self.shift:  # bring other's mean to our reference point
            ours_unset = np.isnan(self._ref)
            self._ref = np.where(ours_unset, other._ref, self._ref)
            gap = np.where(np.isnan(other._ref), 0.0, other._ref - self._ref)
            mean = mean + gap
        self._combine(other.count, mean, other._m2)
        return self

    # --- results ----------------------------------------------------------------

    def _check(self) -> None:
        if self.count is None:
            raise ValueError("no data yet: call update() first")

    @property
    def mean(self) -> np.ndarray:
        """Mean per column (NaN where a column has no values)."""
        self._check()
        ref = np.where(np.isnan(self._ref), 0.0, self._ref) if self.shift else 0.0
        return np.where(self.count > 0, self._mean + ref, np.nan)

    def var(self, ddof: int = 1) -> np.ndarray:
        """Variance per column with ``ddof`` (NaN where count <= ddof)."""
        self._check()
        return np.where(
            self.count > ddof, self._m2 / np.maximum(self.count - ddof, 1), np.nan
        )

    def std(self, ddof: int = 1) -> np.ndarray:
        """Standard deviation per column with ``ddof``."""
        return np.sqrt(self.var(ddof))

    def __repr__(self) -> str:
        if self.count is None:
            return "RunningMoments(empty)"
        return (
            f"RunningMoments(shape={self.count.shape}, count={int(self.count.max())})"
        )
