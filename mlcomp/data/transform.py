"""Column transformations fitted in one streaming pass, mergeable across workers.

Each transformer is a scikit-learn estimator — ``fit(X, y=None)`` learns
attributes ending in ``_``, ``transform(X)`` applies them, ``get_params``
and :func:`sklearn.base.clone` work, so it goes into a
:class:`sklearn.pipeline.Pipeline` — plus ``partial_fit(chunk)``
to learn from a stream chunk by chunk and ``merge(other)`` to combine two
transformers fitted on different parts of the data (a Dask reduction). The
statistics they need are mergeable: moments (:class:`RunningMoments`),
minima and maxima, and, for equal-frequency bins, a KLL quantile sketch
(Karnin, Lang & Liberty 2016; Apache DataSketches), whose rank error is
bounded whatever the order of the stream.

* :class:`Standardizer` — ``(x - mean) / std``: zero mean, unit variance
  (standardization; it does *not* make data normal).
* :class:`MinMaxScaler` — ``(x - min) / (max - min)``: onto ``[0, 1]``
  (normalization).
* :class:`Discretizer` — bin indices, with ``"uniform"`` (equal-width) or
  ``"quantile"`` (equal-frequency) edges.

Missing values (NaN) are skipped when fitting and stay NaN when transformed.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from mlcomp.data.stats import RunningMoments

__all__ = ["Standardizer", "MinMaxScaler", "Discretizer"]


def _matrix(X, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"expected rows × features, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features, got {X.shape[1]}")
    return X


class _Streaming(TransformerMixin, BaseEstimator):
    """fit = reset + partial_fit; subclasses define the state and its merge."""

    n_features_in_: int | None = None

    def fit(self, X, y=None):
        """Learn from all of ``X`` (``y`` is ignored, as by scikit-learn's scalers)."""
        self._reset()
        return self.partial_fit(X)

    def _reset(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _fitted(self) -> None:
        if self.n_features_in_ is None:
            raise ValueError(f"this {type(self).__name__} is not fitted yet")


class Standardizer(_Streaming):
    """``(x - mean_) / scale_`` per column; ``scale_`` is the population std (ddof=0).

    >>> s = Standardizer().partial_fit([[1.0], [2.0]]).partial_fit([[3.0]])
    >>> s.mean_.tolist(), s.transform([[2.0], [3.0]]).round(4).tolist()
    ([2.0], [[0.0], [1.2247]])
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._moments = RunningMoments()
        self.n_features_in_ = None

    def partial_fit(self, X, y=None) -> Standardizer:
        X = _matrix(X, self.n_features_in_)
        self._moments.update(X)
        self.n_features_in_ = X.shape[1]
        return self

    def merge(self, other: Standardizer) -> Standardizer:
        self._moments.merge(other._moments)
        self.n_features_in_ = self.n_features_in_ or other.n_features_in_
        return self

    @property
    def mean_(self) -> np.ndarray:
        self._fitted()
        return self._moments.mean

    @property
    def scale_(self) -> np.ndarray:
        """Population std per column; 1 where it is 0 (a constant column)."""
        self._fitted()
        std = self._moments.std(ddof=0)
        return np.where(std > 0, std, 1.0)

    def transform(self, X) -> np.ndarray:
        self._fitted()
        return (_matrix(X, self.n_features_in_) - self.mean_) / self.scale_

    def inverse_transform(self, Z) -> np.ndarray:
        self._fitted()
        return _matrix(Z, self.n_features_in_) * self.scale_ + self.mean_


class MinMaxScaler(_Streaming):
    """``(x - data_min_) / (data_max_ - data_min_)`` per column, onto [0, 1].

    >>> m = MinMaxScaler().partial_fit([[1.0], [5.0]]).partial_fit([[3.0]])
    >>> m.transform([[2.0], [5.0]]).tolist()
    [[0.25], [1.0]]
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.data_min_ = self.data_max_ = None
        self.n_features_in_ = None

    def partial_fit(self, X, y=None) -> MinMaxScaler:
        X = _matrix(X, self.n_features_in_)
        with warnings.catch_warnings():  # a chunk may hold an all-NaN column
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
        if self.data_min_ is None:
            self.data_min_, self.data_max_ = lo, hi
        else:
            self.data_min_ = np.fmin(self.data_min_, lo)
            self.data_max_ = np.fmax(self.data_max_, hi)
        self.n_features_in_ = X.shape[1]
        return self

    def merge(self, other: MinMaxScaler) -> MinMaxScaler:
        if other.n_features_in_ is None:
            return self
        if self.n_features_in_ is None:
            self.data_min_, self.data_max_ = other.data_min_, other.data_max_
        else:
            self.data_min_ = np.fmin(self.data_min_, other.data_min_)
            self.data_max_ = np.fmax(self.data_max_, other.data_max_)
        self.n_features_in_ = other.n_features_in_
        return self

    def transform(self, X) -> np.ndarray:
        self._fitted()
        span = self.data_max_ - self.data_min_
        span = np.where(span > 0, span, 1.0)
        return (_matrix(X, self.n_features_in_) - self.data_min_) / span


class Discretizer(_Streaming):
    """Bin index per value: ``n_bins`` equal-width or equal-frequency bins per column.

    ``strategy="uniform"`` cuts ``[min, max]`` into equal widths (exact, from
    mergeable minima and maxima). ``strategy="quantile"`` puts the inner
    edges at the ``1/n_bins, 2/n_bins, ...`` quantiles estimated by a KLL
    sketch with parameter ``k`` (a normalized rank error of about 1.3% for
    ``k = 200`` and half that for ``k = 400``, with high probability,
    whatever the stream's order; DataSketches' ``get_normalized_rank_error``),
    so each bin holds about the same number of values. The sketch compacts at
    random, so two fits of the same data can give slightly different edges.
    ``bin_edges_[j]`` holds the ``n_bins + 1`` edges of column ``j``; values
    beyond the fitted range go to the first or last bin, NaN stays NaN.

    >>> d = Discretizer(n_bins=4, strategy="uniform").fit([[0.0], [8.0]])
    >>> d.transform([[1.0], [2.0], [7.9], [100.0]]).ravel().tolist()
    [0.0, 1.0, 3.0, 3.0]
    """

    def __init__(self, n_bins: int = 5, strategy: str = "quantile", k: int = 200):
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
        if strategy not in ("uniform", "quantile"):
            raise ValueError(
                f"strategy must be 'uniform' or 'quantile', got {strategy!r}"
            )
        self.n_bins, self.strategy, self.k = n_bins, strategy, k
        self._reset()

    def _reset(self) -> None:
        self._range = MinMaxScaler()
        self._sketches: list | None = None
        self.n_features_in_ = None

    def partial_fit(self, X, y=None) -> Discretizer:
        X = _matrix(X, self.n_features_in_)
        self._range.partial_fit(X)
        if self.strategy == "quantile":
            if self._sketches is None:
                self._sketches = [_kll(self.k) for _ in range(X.shape[1])]
            for j, sketch in enumerate(self._sketches):
                column = X[:, j]
                sketch.update(np.ascontiguousarray(column[~np.isnan(column)]))
        self.n_features_in_ = X.shape[1]
        return self

    def merge(self, other: Discretizer) -> Discretizer:
        if (other.n_bins, other.strategy) != (self.n_bins, self.strategy):
            raise ValueError("cannot merge discretizers with different bins")
        if other.n_features_in_ is None:
            return self
        self._range.merge(other._range)
        if self.strategy == "quantile":
            if self._sketches is None:
                self._sketches = [_kll(self.k) for _ in other._sketches]
            for mine, theirs in zip(self._sketches, other._sketches, strict=True):
                mine.merge(theirs)
        self.n_features_in_ = other.n_features_in_
        return self

    @property
    def bin_edges_(self) -> list[np.ndarray]:
        self._fitted()
        lo, hi = self._range.data_min_, self._range.data_max_
        edges = []
        for j in range(self.n_features_in_):
            if np.isnan(lo[j]):
                raise ValueError(f"column {j} has no values (all missing): no bins")
            if self.strategy == "uniform":
                e = np.linspace(lo[j], hi[j], self.n_bins + 1)
            else:
                ranks = np.linspace(0, 1, self.n_bins + 1)[1:-1]
                inner = [self._sketches[j].get_quantile(float(r)) for r in ranks]
                e = np.r_[lo[j], inner, hi[j]]
            edges.append(e)
        return edges

    def transform(self, X) -> np.ndarray:
        X = _matrix(X, self.n_features_in_)
        out = np.full(X.shape, np.nan)
        for j, e in enumerate(self.bin_edges_):
            column = X[:, j]
            ok = ~np.isnan(column)
            idx = np.searchsorted(e[1:-1], column[ok], side="right")
            out[ok, j] = idx
        return out


def _kll(k: int):
    try:
        from datasketches import kll_doubles_sketch
    except ImportError as err:  # pragma: no cover - an install problem
        raise ImportError(
            "equal-frequency bins need Apache DataSketches: pip install datasketches"
        ) from err
    return kll_doubles_sketch(k)
