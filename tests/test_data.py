from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from mlcomp.data import (
    Reservoir,
    RunningMoments,
    hash_split,
    naive_variance,
    reservoir_sample,
)


def exact_variance(column) -> float:
    """Two passes in exact rational arithmetic: the reference."""
    values = [Fraction(float(v)) for v in column]
    mean = sum(values) / len(values)
    return float(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def chunked(x, sizes):
    start = 0
    for size in sizes:
        yield x[start : start + size]
        start += size
    assert start == len(x)


def test_one_pass_matches_the_exact_variance_per_column():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)) * [1.0, 1e-3, 50.0] + [0.0, 5.0, -7.0]
    rm = RunningMoments()
    for chunk in chunked(x, [1, 7, 500, 992, 500]):
        rm.update(chunk)
    assert rm.count.tolist() == [2000] * 3
    for j in range(3):
        exact = exact_variance(x[:, j])
        assert abs(rm.var()[j] - exact) / exact < 1e-12
        assert abs(rm.mean[j] - float(sum(map(Fraction, x[:, j])) / 2000)) < 1e-14 * 50
    assert np.allclose(rm.std(ddof=0), x.std(axis=0), rtol=1e-12)


def test_far_from_zero_naive_fails_plain_chan_loses_digits_shift_does_not():
    rng = np.random.default_rng(1)
    x = 1e9 + rng.normal(size=4000)  # mean 1e9, variance 1
    exact = exact_variance(x)
    sizes = [100] * 40  # forty chunks: forty merges

    def error(estimate):
        return abs(float(estimate) - exact) / exact

    naive = error(naive_variance(x))
    plain, shifted = RunningMoments(shift=False), RunningMoments(shift=True)
    for chunk in chunked(x, sizes):
        plain.update(chunk)
        shifted.update(chunk)
    assert naive > 0.1  # the textbook formula: no correct digit
    assert 1e-10 < error(plain.var()) < 1e-4  # Welford/Chan: about eight digits lost
    assert error(shifted.var()) < 1e-12  # shifted by a reference point: exact
    assert abs(shifted.mean - 1e9 - (np.mean(x - 1e9))) < 1e-6


def test_merge_in_any_tree_equals_one_pass():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(999, 4)) + 1e6
    whole = RunningMoments()
    whole.update(x)
    parts = []
    for chunk in chunked(x, [10, 300, 0, 689]):
        part = RunningMoments()
        part.update(chunk)
        parts.append(part)
    left = RunningMoments().merge(parts[0]).merge(parts[1])
    right = parts[2].merge(parts[3])
    merged = left.merge(right)
    assert merged.count.tolist() == [999] * 4
    assert np.allclose(merged.mean, whole.mean, rtol=1e-15, atol=0)
    assert np.allclose(merged.var(), whole.var(), rtol=1e-12)
    exact = exact_variance(x[:, 0])
    assert abs(merged.var()[0] - exact) / exact < 1e-12


def test_missing_values_are_skipped_per_column():
    x = np.array([[1.0, np.nan, np.nan], [3.0, 4.0, np.nan], [5.0, 8.0, np.nan]])
    rm = RunningMoments()
    rm.update(x[:1])
    rm.update(x[1:])
    assert rm.count.tolist() == [3, 2, 0]
    assert rm.mean[:2].tolist() == [3.0, 6.0] and np.isnan(rm.mean[2])
    assert rm.var()[:2].tolist() == [4.0, 8.0] and np.isnan(rm.var()[2])


def test_per_pixel_statistics_of_images():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(300, 4, 5)).astype(np.float64)
    rm = RunningMoments()
    for chunk in chunked(images, [128, 128, 44]):
        rm.update(chunk)
    assert rm.mean.shape == (4, 5)
    assert np.allclose(rm.mean, images.mean(axis=0), rtol=1e-14)
    assert np.allclose(rm.var(), images.var(axis=0, ddof=1), rtol=1e-12)


def test_moments_errors():
    rm = RunningMoments()
    with pytest.raises(ValueError, match="no data yet"):
        _ = rm.mean
    rm.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="per-example shape"):
        rm.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="axis of examples"):
        rm.update(np.float64(1.0))
    with pytest.raises(ValueError, match="shifted and unshifted"):
        other = RunningMoments(shift=False)
        other.update(np.zeros((1, 3)))
        rm.merge(other)
    with pytest.raises(TypeError, match="merge RunningMoments"):
        rm.merge(3)


# --- sampling -------------------------------------------------------------------


def test_reservoir_is_uniform():
    """Every item of a 20-item stream is kept with probability k/n = 1/4."""
    n, k, trials = 20, 5, 4000
    counts = np.zeros(n)
    for seed in range(trials):
        counts[reservoir_sample(range(n), k, seed=seed, batch=7)] += 1
    expected = np.full(n, trials * k / n)
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # and a biased sampler (always keep the first k) is caught by the same test
    assert stats.chisquare(np.r_[np.full(k, trials), np.zeros(n - k)] + 0.0,
                           expected).pvalue < 1e-6  # fmt: skip


def test_reservoir_does_not_depend_on_batching():
    stream = list(range(5000))
    a, b = Reservoir(50, seed=7), Reservoir(50, seed=7)
    a.update(stream)
    for chunk in chunked(stream, [1, 49, 50, 900, 4000]):
        b.update(chunk)
    assert a.sample == b.sample and a.seen == b.seen == 5000
    assert len(set(a.sample)) == 50
    short = Reservoir(10)
    short.update(range(4))
    assert short.sample == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="positive int"):
        Reservoir(0)


def test_hash_split_is_stable_and_has_the_right_shares():
    keys = [f"user-{i}" for i in range(20000)]
    split = hash_split(keys, [0.8, 0.1, 0.1], salt="s1")
    shares = np.bincount(split, minlength=3) / len(keys)
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.01)
    # the same key gets the same split whatever its order or company
    order = np.random.default_rng(0).permutation(len(keys))
    shuffled = hash_split([keys[i] for i in order], [0.8, 0.1, 0.1], salt="s1")
    assert np.array_equal(shuffled, split[order])
    alone = hash_split(keys[123:124], [0.8, 0.1, 0.1], salt="s1")
    assert alone[0] == split[123]
    # another salt is another split
    other = hash_split(keys, [0.8, 0.1, 0.1], salt="s2")
    assert 0.6 < np.mean(other == split) < 0.75  # independent: 0.66 expected
    assert (
        hash_split([7, "7", b"7"], [0.5, 0.5])
        .tolist()
        .count(hash_split(["7"], [0.5, 0.5])[0])
        == 3
    )


def test_hash_split_errors():
    with pytest.raises(ValueError, match="sum to 1"):
        hash_split(["a"], [0.5, 0.4])
    with pytest.raises(ValueError, match="positive"):
        hash_split(["a"], [1.2, -0.2])
    with pytest.raises(TypeError, match="str, bytes or int"):
        hash_split([3.5], [1.0])
