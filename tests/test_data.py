import json
from fractions import Fraction

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlcomp.data import (
    Discretizer,
    HashSample,
    MinMaxScaler,
    Reservoir,
    RunningMoments,
    Standardizer,
    clean,
    hash_split,
    hashing,
    naive_variance,
    outofcore,
    reservoir_sample,
    synth,
)
from mlcomp.data.schema import read_partition


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
    assert 1e-10 < error(plain.var()) < 1e-4  # Welford/Chan: digits lost
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


# --- cleaning -------------------------------------------------------------------


def test_impute_matches_sklearn_and_reports():
    from sklearn.impute import SimpleImputer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).round(1)
    X[rng.random(X.shape) < 0.2] = np.nan
    df = pd.DataFrame(X, columns=list("abc"))
    for strategy, sk in [
        ("mean", "mean"),
        ("median", "median"),
        ("mode", "most_frequent"),
    ]:
        ours, report = clean.impute(df, strategy)
        ref = SimpleImputer(strategy=sk).fit_transform(X)
        assert np.allclose(ours.to_numpy(), ref), strategy
        assert report.tolist() == np.isnan(X).sum(axis=0).tolist()
    dropped, _ = clean.impute(df, "drop")
    assert len(dropped) == int((~np.isnan(X).any(axis=1)).sum())
    assert df.isna().sum().sum() == np.isnan(X).sum()  # the input is untouched


def test_model_based_imputation_uses_the_other_columns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=500)
    df = pd.DataFrame({"x": x, "y": 2 * x + 1 + 0.01 * rng.normal(size=500)})
    hidden = rng.random(500) < 0.2
    df.loc[hidden, "y"] = np.nan
    model, _ = clean.impute(df, "model")
    mean, _ = clean.impute(df, "mean")
    truth = 2 * x[hidden] + 1
    assert np.abs(model.loc[hidden, "y"] - truth).max() < 0.1
    assert np.abs(mean.loc[hidden, "y"] - truth).mean() > 1  # the mean ignores x


def test_impute_refuses_what_it_cannot_do():
    df = pd.DataFrame({"a": [np.nan, np.nan], "b": [1.0, 2.0], "s": ["x", None]})
    with pytest.raises(ValueError, match=r"\['a'\] have no values"):
        clean.impute(df, "mean")
    with pytest.raises(TypeError, match="use 'mode'"):
        clean.impute(df, "mean", columns=["s"])
    assert clean.impute(df, "mode", columns=["s"])[0]["s"].tolist() == ["x", "x"]
    with pytest.raises(KeyError, match="no such columns"):
        clean.impute(df, "mean", columns=["zz"])
    with pytest.raises(ValueError, match="strategy"):
        clean.impute(df, "average")


def test_outlier_rules_against_their_definitions():
    rng = np.random.default_rng(2)
    x = np.r_[rng.normal(size=1000), [8.0, -9.0, 12.0]]
    q1, q3 = np.percentile(x, [25, 75])
    expected = (x < q1 - 1.5 * (q3 - q1)) | (x > q3 + 1.5 * (q3 - q1))
    assert np.array_equal(clean.iqr_outliers(x), expected)
    assert np.array_equal(clean.zscore_outliers(x, 3), np.abs(stats.zscore(x)) > 3)
    mad = stats.median_abs_deviation(x)
    modified = 0.6745 * np.abs(x - np.median(x)) / mad
    assert np.array_equal(clean.mad_outliers(x, 3.5), modified > 3.5)
    for rule in (clean.iqr_outliers, clean.zscore_outliers, clean.mad_outliers):
        assert rule(x)[-3:].all(), rule.__name__


def test_masking_zscore_misses_what_mad_finds():
    rng = np.random.default_rng(3)
    x = np.r_[rng.normal(size=90), np.full(10, 6.0)]  # 10% at one far value
    planted = np.r_[np.zeros(90, bool), np.ones(10, bool)]
    assert clean.zscore_outliers(x, 3)[planted].sum() == 0  # std inflated: masked
    assert clean.mad_outliers(x)[planted].all()
    # MAD of zero: more than half the values equal; the mean deviation takes over
    flat = np.r_[np.zeros(60), [0.1, -0.2, 50.0]]
    assert clean.mad_outliers(flat).tolist() == [False] * 62 + [True]
    with pytest.raises(ValueError, match="all missing"):
        clean.mad_outliers([np.nan, np.nan])


def test_isolation_forest_finds_planted_points_and_refuses_nan():
    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(size=(500, 3)), rng.normal(8, 0.5, size=(5, 3))])
    flagged = clean.isolation_forest_outliers(X, contamination=0.01)
    assert flagged[-5:].all() and flagged.sum() <= 6
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="impute first"):
        clean.isolation_forest_outliers(X)


def test_exact_duplicates_match_pandas_and_survive_collisions(monkeypatch):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"a": rng.integers(0, 4, 300), "b": rng.choice(list("xyz"), 300),
                       "c": rng.integers(0, 3, 300).astype(float)})  # fmt: skip
    expected = df.duplicated(keep="first").to_numpy()
    assert expected.sum() > 100
    assert np.array_equal(clean.exact_duplicates(df), expected)

    # every row hashing to the same value changes nothing: rows are compared
    def collide(frame, seed=0):
        return np.zeros(len(frame), np.uint64)

    monkeypatch.setattr(clean, "row_hashes", collide)
    assert np.array_equal(clean.exact_duplicates(df), expected)
    # nor do a few colliding pairs among otherwise distinct hashes
    real = hashing.row_hashes(df)
    monkeypatch.setattr(clean, "row_hashes", lambda frame, seed=0: real % 7)
    assert np.array_equal(clean.exact_duplicates(df), expected)


def test_row_hashes_equal_rows_equal_hashes_over_dtypes():
    df = pd.DataFrame({
        "i": pd.array([1, None, 1, 1, 2], dtype="Int64"),
        "f": [0.0, np.nan, -0.0, 0.0, 1.5],
        "s": pd.array(["ab", None, "ab", "ab", "é" * 9], dtype="str"),
        "o": ["x", None, "x", "x", 3],  # mixed objects: pandas' hash_array
        "b": [True, False, True, True, False],
        "t": pd.to_datetime(["2020-01-01"] * 4 + ["2021-06-30"]),
    })  # fmt: skip
    h = hashing.row_hashes(df)
    assert h.dtype == np.uint64
    assert h[0] == h[2] == h[3] and len(set(h[[0, 1, 4]])) == 3
    # a slice and a frame of other length agree with the whole: no offset or
    # row count leaks into the hash
    assert np.array_equal(hashing.row_hashes(df.iloc[2:]), h[2:])
    assert np.array_equal(hashing.row_hashes(pd.concat([df, df])), np.r_[h, h])
    # every column counts, and its place counts
    for column in df.columns:
        changed = df.copy()
        changed.loc[0, column] = df.loc[4, column]
        assert hashing.row_hashes(changed)[0] != h[0], column
    swapped = hashing.row_hashes(df[["f", "i"]])[0]
    assert swapped != hashing.row_hashes(df[["i", "f"]])[0]
    # long strings cross 8-byte blocks: one changed byte anywhere changes the hash
    text = "abcdefghijklmnopqrstuvwxyz"
    variants = [text] + [text[:k] + "_" + text[k + 1 :] for k in range(len(text))]
    one = hashing.row_hashes(pd.DataFrame({"s": variants}))
    assert len(set(one.tolist())) == len(variants)
    # the seed gives another function; duplicates agree with pandas' own
    assert not np.array_equal(hashing.row_hashes(df, seed=1), h)
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"a": rng.integers(0, 50, 5000).astype(float),
                        "b": rng.choice(["p", "q", "r", None], 5000)})  # fmt: skip
    dup = pd.Series(hashing.row_hashes(big)).duplicated().to_numpy()
    assert np.array_equal(dup, big.duplicated().to_numpy())


def test_repeats_marks_every_later_copy_as_pandas_does():
    rng = np.random.default_rng(3)
    # few distinct values (long probe runs, a full table's worth of repeats),
    # then values spread over all 64 bits, negative integers among them
    for a in (rng.integers(0, 20, 5000), rng.integers(-(2**63), 2**63 - 1, 5000)):
        a = np.r_[a, a[:100]].astype(np.int64)
        expected = pd.Series(a).duplicated(keep="first").to_numpy()
        assert np.array_equal(hashing.repeats(a), expected)
        assert np.array_equal(hashing.repeats(a.view(np.uint64)), expected)
    # pairs: equal only where both halves are
    a, b = rng.integers(0, 4, 2000), rng.integers(0, 4, 2000)
    pairs = pd.DataFrame({"a": a, "b": b}).duplicated(keep="first").to_numpy()
    assert np.array_equal(hashing.repeats(a, b), pairs)
    assert not np.array_equal(hashing.repeats(a), pairs)
    assert hashing.repeats(np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="64-bit integers"):
        hashing.repeats(np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="of one length"):
        hashing.repeats(np.zeros(3, np.int64), np.zeros(2, np.int64))


def planted_pair(rng, size, overlap):
    """Two sets of `size` tokens sharing `overlap` of them."""
    common = {f"c{rng.integers(1 << 40)}" for _ in range(overlap)}
    a = common | {f"a{rng.integers(1 << 40)}" for _ in range(size - overlap)}
    b = common | {f"b{rng.integers(1 << 40)}" for _ in range(size - overlap)}
    return a, b


def test_minhash_estimates_jaccard_within_its_standard_error():
    from datasketch import MinHash

    rng = np.random.default_rng(6)
    m, ours_err, theirs_err = 256, [], []
    for overlap in (20, 60, 100, 140, 180):
        a, b = planted_pair(rng, 200, overlap)
        exact = clean.jaccard(a, b)
        sig = clean.minhash([a, b], num_perm=m, seed=overlap)
        estimate = float((sig[0] == sig[1]).mean())
        sigma = np.sqrt(exact * (1 - exact) / m)
        assert abs(estimate - exact) < 4 * sigma + 1e-9
        ours_err.append(abs(estimate - exact))
        ma, mb = MinHash(num_perm=m, seed=overlap), MinHash(num_perm=m, seed=overlap)
        ma.update_batch([t.encode() for t in a])
        mb.update_batch([t.encode() for t in b])
        theirs_err.append(abs(ma.jaccard(mb) - exact))
    # same estimator, same accuracy as the datasketch library (up to chance)
    assert np.mean(ours_err) < 2 * np.mean(theirs_err) + 0.02


def test_lsh_finds_near_duplicates_and_follows_the_s_curve():
    rng = np.random.default_rng(7)
    sets, truth = [], {}
    for overlap in [190] * 10 + [40] * 10:  # J ≈ 0.90 and ≈ 0.11
        a, b = planted_pair(rng, 200, overlap)
        truth[(len(sets), len(sets) + 1)] = clean.jaccard(a, b)
        sets += [a, b]
    sig = clean.minhash(sets, num_perm=128)
    candidates = clean.lsh_candidates(sig, bands=32)  # r = 4: threshold ≈ 0.42
    near = [p for p, j in truth.items() if j > 0.8]
    far = [p for p, j in truth.items() if j < 0.2]
    assert all(p in candidates for p in near)
    # P(candidate | J = 0.11) = 1 - (1 - 0.11^4)^32 ≈ 0.005
    assert sum(p in candidates for p in far) <= 1
    with pytest.raises(ValueError, match="equal bands"):
        clean.lsh_candidates(sig, bands=30)


# --- transformations ------------------------------------------------------------


def test_streaming_scalers_match_sklearn():
    from sklearn.preprocessing import MinMaxScaler as SkMinMax
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(8)
    X = rng.normal(size=(1000, 4)) * [1, 10, 100, 1e-3] + [0, 5, -1e6, 3]
    std, mm = Standardizer(), MinMaxScaler()
    left, right = Standardizer(), MinMaxScaler()
    for chunk in chunked(X, [100, 400, 500]):
        std.partial_fit(chunk)
        mm.partial_fit(chunk)
    left.partial_fit(X[:300]).merge(Standardizer().partial_fit(X[300:]))
    right.partial_fit(X[:300]).merge(MinMaxScaler().partial_fit(X[300:]))
    sk = StandardScaler().fit(X)
    for s in (std, left):
        assert np.allclose(s.mean_, sk.mean_, rtol=1e-13)
        assert np.allclose(s.scale_, sk.scale_, rtol=1e-12)
        assert np.allclose(s.transform(X), sk.transform(X), atol=1e-9)
        assert np.allclose(s.inverse_transform(s.transform(X)), X, rtol=1e-12)
    skmm = SkMinMax().fit(X)
    for m in (mm, right):
        assert np.allclose(m.transform(X), skmm.transform(X), atol=1e-12)
    with pytest.raises(ValueError, match="not fitted"):
        Standardizer().transform(X)
    with pytest.raises(ValueError, match="expected 4 features"):
        std.transform(X[:, :3])


def test_discretizer_uniform_matches_sklearn_and_quantile_is_equal_frequency():
    from sklearn.preprocessing import KBinsDiscretizer

    rng = np.random.default_rng(9)
    X = np.c_[rng.exponential(size=20000), rng.normal(size=20000)]
    uniform = Discretizer(n_bins=6, strategy="uniform").fit(X)
    sk = KBinsDiscretizer(n_bins=6, encode="ordinal", strategy="uniform").fit(X)
    assert np.array_equal(uniform.transform(X), sk.transform(X))
    quantile = Discretizer(n_bins=5, strategy="quantile")
    for chunk in chunked(X, [5000] * 4):
        quantile.partial_fit(chunk)
    counts = np.stack(
        [np.bincount(c.astype(int), minlength=5) for c in quantile.transform(X).T]
    )
    assert np.abs(counts / len(X) - 0.2).max() < 0.02  # KLL rank error, k = 200
    merged = (
        Discretizer(5)
        .partial_fit(X[:10000])
        .merge(Discretizer(5).partial_fit(X[10000:]))
    )
    exact = np.quantile(X, [0.2, 0.4, 0.6, 0.8], axis=0)
    for j, edges in enumerate(merged.bin_edges_):
        ranks = np.searchsorted(np.sort(X[:, j]), edges[1:-1]) / len(X)
        assert np.abs(ranks - [0.2, 0.4, 0.6, 0.8]).max() < 0.02
        assert np.all(np.diff(edges) >= 0) and np.isclose(
            edges[2], exact[1, j], atol=0.1
        )


def test_transformers_skip_missing_values():
    X = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    s = Standardizer().fit(X)
    assert s.mean_[0] == 2.0 and np.isnan(s.mean_[1])
    out = MinMaxScaler().fit(X).transform(X)
    assert out[:2, 0].tolist() == [0.0, 1.0] and np.isnan(out[2, 0])
    d = Discretizer(n_bins=2, strategy="uniform").fit(X[:, :1])
    assert np.isnan(d.transform(X[:, :1])[2, 0])
    with pytest.raises(ValueError, match="all missing"):
        _ = Discretizer(2).fit(X).bin_edges_
    with pytest.raises(ValueError, match="n_bins"):
        Discretizer(1)


# --- the generated table and Dask ------------------------------------------------


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return synth.make_table(tmp_path_factory.mktemp("table"), rows_per_partition=5000,
                            partitions=4, seed=3)  # fmt: skip


def test_generated_table_is_deterministic_and_its_truth_is_right(table, tmp_path):
    frame = pd.read_parquet(table / "table")
    truth = synth.table_truth(table)
    assert len(frame) == 20000 and frame["row_id"].is_unique
    again = synth.make_table(tmp_path, rows_per_partition=5000, partitions=4, seed=3)
    assert pd.read_parquet(again / "table").equals(frame)
    rows = frame.set_index("row_id")
    for column in synth.NUMERIC:  # missing values are where the truth says
        assert np.array_equal(rows[column].isna(), truth[f"{column}_missing"])
        rate = truth[f"{column}_outlier"].mean()
        assert 0.005 < rate < 0.015
    exact = truth[truth["duplicate_of"] >= 0]
    copies = rows.loc[exact.index].reset_index(drop=True)
    sources = rows.loc[exact["duplicate_of"]].reset_index(drop=True)
    assert copies.equals(sources) and (exact.index > exact["duplicate_of"]).all()
    # what the truth calls exact duplicates is what an exact rule finds
    found = clean.exact_duplicates(frame.drop(columns="row_id"))
    assert np.array_equal(found, (truth["duplicate_of"] >= 0).to_numpy())
    near = truth[truth["near_duplicate_of"] >= 0]
    a = rows.loc[near.index, "comment"].str.split()
    b = rows.loc[near["near_duplicate_of"], "comment"].str.split()
    assert all(sum(x != y for x, y in zip(u, v, strict=True)) == 1
               for u, v in zip(a, b, strict=True))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="make_table"):
        synth.read_manifest(tmp_path / "nothing")
    with pytest.raises(ValueError, match="rate"):
        synth.Defects(missing=0.7)


def test_dask_moments_equal_the_exact_ones(table):
    frame = pd.read_parquet(table / "table")
    with outofcore.connect(n_workers=2, processes=False):
        rm = outofcore.moments(table / "table", ["sensor", "income", "age"],
                               split_every=2)  # fmt: skip
    for j, column in enumerate(["sensor", "income", "age"]):
        values = frame[column].dropna()
        assert rm.count[j] == len(values)
        exact = exact_variance(values.to_numpy())
        assert abs(rm.var()[j] - exact) / exact < 1e-12, column
        mean = float(sum(map(Fraction, values)) / len(values))
        assert abs(rm.mean[j] - mean) <= 1e-15 * abs(mean), column
    with pytest.raises(KeyError, match="no such columns"):
        outofcore.moments(dd.from_pandas(frame, npartitions=2), ["nope"])


def test_dask_address_from_the_environment(monkeypatch):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        monkeypatch.setenv("MLCOMP_DASK_ADDRESS", cluster.scheduler_address)
        with outofcore.connect() as client:
            assert client.scheduler.address == cluster.scheduler_address


# --- bottom-k samples -------------------------------------------------------------


def splitmix64(x: int) -> int:
    """The reference: SplitMix64's output for state ``x`` (Python integers)."""
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_mix64_is_splitmix64():
    from mlcomp.data.sampling import mix64

    keys = [0, 1, 2, 12345, 2**40 + 7, 2**62]
    assert mix64(keys).tolist() == [splitmix64(k) for k in keys]
    assert mix64(keys, salt=5).tolist() == [splitmix64(k + 5) for k in keys]
    with pytest.raises(TypeError, match="integers"):
        mix64([1.5])


def test_hash_sample_merges_exactly_and_is_uniform():
    rng = np.random.default_rng(0)
    n, k = 20_000, 500
    keys = rng.permutation(n)
    values = rng.normal(size=(n, 2))
    whole = HashSample(k)
    whole.update(keys, values)
    parts = [HashSample(k) for _ in range(7)]
    for part, idx in zip(parts, np.array_split(np.arange(n), 7), strict=True):
        for chunk in np.array_split(idx, 3):  # batches inside a partition too
            part.update(keys[chunk], values[chunk])
    merged = HashSample(k)
    for part in parts[::-1]:  # any order
        merged.merge(part)
    assert merged.keys.tolist() == whole.keys.tolist() and merged.seen == n
    assert np.array_equal(merged.values, values[np.argsort(keys)][merged.keys])
    # uniform: over 200 salts every key is kept with probability k / n
    hits = np.zeros(n)
    for salt in range(200):
        s = HashSample(k, salt=salt)
        s.update(np.arange(n), np.zeros(n))
        hits[s.keys] += 1
    by_decile = hits.reshape(10, -1).sum(axis=1)  # keys 0..1999, 2000..3999, ...
    expected = 200 * k / 10
    assert stats.chisquare(by_decile, [expected] * 10).pvalue > 0.001
    # quantiles within a few standard errors in rank
    q = whole.quantile([0.25, 0.5, 0.75])
    ranks = (values[:, 0][:, None] <= q[:, 0]).mean(axis=0)
    se = np.sqrt(np.array([0.1875, 0.25, 0.1875]) / k)
    assert (np.abs(ranks - [0.25, 0.5, 0.75]) < 4 * se).all()
    with pytest.raises(ValueError, match="different k"):
        whole.merge(HashSample(k + 1))
    with pytest.raises(ValueError, match="one row of values per key"):
        HashSample(3).update([1, 2], [1.0])
    with pytest.raises(ValueError, match="empty"):
        HashSample(3).quantile(0.5)


# --- the cleaning pipeline ----------------------------------------------------------


def test_clean_table_is_right_and_the_same_here_and_on_dask(
    table, tmp_path, monkeypatch
):
    report = outofcore.clean_table(table / "table", tmp_path / "here")
    frame = pd.read_parquet(table / "table")
    truth = synth.table_truth(table)
    # exact duplicates: exactly the truth's, nothing quarantined
    out = pd.read_parquet(tmp_path / "here" / "table")
    dropped = set(frame["row_id"]) - set(out["row_id"])
    assert dropped == set(truth.index[truth["duplicate_of"] >= 0])
    assert report.rows_out == len(out) == len(frame) - len(dropped)
    assert report.quarantined == {} and report.empty_partitions == []
    # the moments are those of the in-memory values inside the fences
    kept = frame.set_index("row_id").loc[out["row_id"]]
    for j, column in enumerate(outofcore.Schema().numeric):
        lo, hi = report.fences.get(column, (-np.inf, np.inf))
        inside = kept[column][kept[column].between(lo, hi)]
        assert report.moments.count[j] == len(inside)
        exact = exact_variance(inside.to_numpy())
        assert abs(report.moments.var()[j] - exact) / exact < 1e-12, column
        # outputs: inliers standardized, everything else the median, flagged
        z = out[column].to_numpy()
        raw = kept[column].to_numpy()
        ok = kept[column].between(lo, hi).to_numpy()
        assert np.allclose(z[ok] * report.std[column] + report.mean[column], raw[ok],
                           rtol=1e-12, atol=0)  # fmt: skip
        filled = (report.median[column] - report.mean[column]) / report.std[column]
        assert np.allclose(z[~ok], filled)
        assert np.array_equal(out[f"{column}_imputed"], ~ok)
        if column in report.fences:
            assert np.array_equal(out[f"{column}_outlier"], ~ok & ~np.isnan(raw))
            # the fences come from the exact quartiles of the kept rows
            q1, q3 = np.nanquantile(kept[column], [0.25, 0.75])
            assert report.quartiles[column] == [q1, q3], column
            assert (lo, hi) == (q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1))
        assert report.median[column] == np.nanmedian(kept[column]), column
    assert np.allclose(out[list(report.mean)].mean(), 0, atol=0.05)
    # a sample far smaller than the table only brackets the quartiles: the
    # same exact answer, also when every first bracket misses its rank
    small = outofcore.clean_table(table / "table", tmp_path / "small", sample_size=300)
    assert small.to_dict() == report.to_dict()
    real, widths = outofcore._bracket, []

    def first_misses(sample, q, width):
        widths.append(width)
        return (sample[0], sample[0]) if width == 1 else real(sample, q, width)

    monkeypatch.setattr(outofcore, "_bracket", first_misses)
    missed = outofcore.clean_table(table / "table", tmp_path / "miss", sample_size=300)
    assert missed.to_dict() == report.to_dict() and set(widths) == {1, 4}
    assert pd.read_parquet(tmp_path / "miss" / "table").equals(out)
    assert not (tmp_path / "miss" / ".work").exists()  # the spills are removed
    # on a Dask cluster: the same report and the same files
    with outofcore.connect(n_workers=2, processes=False) as client:
        again = outofcore.clean_table(table / "table", tmp_path / "dask", client=client)
    assert again.to_dict() == report.to_dict()
    assert pd.read_parquet(tmp_path / "dask" / "table").equals(out)
    saved = json.loads((tmp_path / "dask" / "report.json").read_text())
    assert saved["rows_out"] == report.rows_out


def write_parts(folder, parts):
    folder.mkdir()
    for i, part in enumerate(parts):
        part.to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    return folder


def test_bad_rows_are_quarantined_and_counted(table, tmp_path):
    good = pd.read_parquet(table / "table" / "part-00000.parquet").head(200)
    text_age = good.copy()
    text_age["age"] = text_age["age"].astype(str)
    text_age.loc[[3, 7], "age"] = ["forty", "12,5"]
    text_age.loc[[4, 8], "age"] = ["n/a", "NaN"]  # missing, not malformed
    bad_key = good.copy()
    bad_key["row_id"] = bad_key["row_id"].astype("float64") + 1000
    bad_key.loc[5, "row_id"] = np.nan
    bad_key.loc[6, "row_id"] = 1e6 + 0.5
    inf_income = good.copy()
    inf_income["row_id"] += 2000
    inf_income.loc[0, "income"] = np.inf
    int_score = good.copy()
    int_score["row_id"] += 3000
    int_score["score"] = int_score["score"].fillna(0).round().astype("int32")
    empty = good.iloc[:0]
    src = write_parts(tmp_path / "src",
                      [text_age, bad_key, inf_income, int_score, empty])  # fmt: skip
    report = outofcore.clean_table(src, tmp_path / "out")
    assert report.quarantined == {
        "age is not a number": 2,
        "income is infinite": 1,
        "row_id is missing or not an integer": 2,
    }
    assert report.empty_partitions == ["part-00004.parquet"]
    assert report.coerced[1:] == ["part-00001.parquet: row_id float64",
                                  "part-00003.parquet: score int32"]  # fmt: skip
    assert report.coerced[0].startswith("part-00000.parquet: age ")  # str or object
    assert report.rows_in == 800
    assert report.rows_in == (report.rows_out + report.duplicates
                              + sum(report.quarantined.values()))  # fmt: skip
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine")
    assert sorted(quarantine.loc[quarantine["partition"] == "part-00000.parquet",
                                 "age"]) == ["12,5", "forty"]  # fmt: skip
    assert all(map(pd.api.types.is_string_dtype, quarantine.dtypes))  # as text
    assert "inf" in quarantine["income"].tolist()
    assert "part-00004.parquet" in str(report)


def test_clean_table_refuses_what_it_cannot_use(table, tmp_path):
    good = pd.read_parquet(table / "table" / "part-00000.parquet").head(100)
    no_score = write_parts(tmp_path / "a", [good.assign(score=np.nan)])
    with pytest.raises(ValueError, match=r"\['score'\] have no values in any"):
        outofcore.clean_table(no_score, tmp_path / "out")
    lacking = write_parts(tmp_path / "b", [good, good.drop(columns="age")])
    with pytest.raises(ValueError, match=r"part-00001.parquet: missing column.*'age'"):
        outofcore.clean_table(lacking, tmp_path / "out")
    corrupt = write_parts(tmp_path / "c", [good])
    data = (corrupt / "part-00000.parquet").read_bytes()
    (corrupt / "part-00000.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="part-00000.parquet: cannot be read as Parq"):
        outofcore.clean_table(corrupt, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no \\*.parquet files"):
        outofcore.clean_table(tmp_path / "nothing", tmp_path / "out")
    with pytest.raises(ValueError, match="fence multiplier"):
        outofcore.clean_table(table / "table", tmp_path / "out", k=0)
    with pytest.raises(ValueError, match="not numeric columns"):
        outofcore.Schema(outliers=("user",))


def test_clean_table_never_overwrites_its_input_or_foreign_files(table, tmp_path):
    src = table / "table"
    before = {p.name: p.read_bytes() for p in src.glob("*.parquet")}
    for dst in (table, src, src / "clean"):  # contains, is, or lies inside the source
        with pytest.raises(ValueError, match="neither contain nor lie inside"):
            outofcore.clean_table(src, dst)
    assert {p.name: p.read_bytes() for p in src.glob("*.parquet")} == before
    foreign = tmp_path / "out" / "table"
    foreign.mkdir(parents=True)
    (foreign / "mine.parquet").write_bytes(b"a user's own file")
    with pytest.raises(FileExistsError, match="did not write"):
        outofcore.clean_table(src, tmp_path / "out")
    assert (foreign / "mine.parquet").read_bytes() == b"a user's own file"
    again = tmp_path / "again"
    first = outofcore.clean_table(src, again)
    second = outofcore.clean_table(src, again)  # its own earlier output is replaced
    assert first.rows_out == second.rows_out
    assert len(list((again / "table").glob("*.parquet"))) == len(before)


def test_task_layers_show_the_tree_reduction():
    frame = dd.from_pandas(pd.DataFrame({"x": np.arange(80.0)}), npartitions=8)
    graph = outofcore.moments_graph(frame, ["x"], split_every=2)
    layers, edges = outofcore.task_layers(graph)
    assert [len(layer) for layer in layers] == [8, 8, 4, 2, 1]
    assert len(edges) == 8 + 8 + 4 + 2  # each task but the root feeds one
    position = {key: i for layer in layers for i, key in enumerate(layer)}
    for layer in layers[:-1]:  # drawn in this order, no two edges cross
        users = [position[next(t for d, t in edges if d == key)] for key in layer]
        assert users == sorted(users)
    assert graph.compute().mean.tolist() == [39.5]
    with pytest.raises(ValueError, match="split_every"):
        outofcore.moments_graph(frame, ["x"], split_every=1)


def test_peak_memory_is_this_process_high_water_mark():
    import subprocess
    import sys

    code = (
        "import numpy as np, psutil\n"
        "from mlcomp.data.outofcore import peak_memory_mib\n"
        "block = np.ones(40_000_000); del block\n"  # 305 MiB touched, freed
        "print(peak_memory_mib(), psutil.Process().memory_info().rss / 2**20)\n"
    )
    # started from this (large) test process, the child must not inherit its peak
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    peak, now = map(float, out)
    assert peak > now + 250
    assert peak < now + 305 + 200  # its own peak, not the parent's


def test_transformers_work_in_a_sklearn_pipeline_and_clone():
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import KBinsDiscretizer, StandardScaler

    rng = np.random.default_rng(0)
    X, y = rng.normal(3.0, 2.0, size=(500, 3)), rng.integers(0, 2, 500)
    ours = Pipeline(
        [("std", Standardizer()), ("bins", Discretizer(4, strategy="uniform"))]
    )
    theirs = Pipeline(
        [
            ("std", StandardScaler()),
            ("bins", KBinsDiscretizer(4, encode="ordinal", strategy="uniform")),
        ]
    )
    np.testing.assert_array_equal(ours.fit_transform(X, y), theirs.fit_transform(X))
    copy = clone(ours.named_steps["bins"])
    assert copy.get_params() == {"k": 200, "n_bins": 4, "strategy": "uniform"}
    assert copy.n_features_in_ is None  # a clone is not fitted
    with pytest.raises(ValueError, match="not fitted"):
        copy.transform(X)
    assert ours.set_params(bins__n_bins=3).named_steps["bins"].n_bins == 3


def test_running_moments_update_returns_itself_like_merge():
    rm = RunningMoments()
    assert rm.update(np.ones((4, 2))) is rm and rm.update(np.ones((0, 2))) is rm
    assert rm.merge(RunningMoments().update(np.zeros((4, 2)))) is rm
    np.testing.assert_allclose(rm.mean, [0.5, 0.5])


def test_keys_out_of_int64_or_float_precision_are_quarantined_not_wrapped():
    from mlcomp.data.schema import Schema, validate

    schema = Schema(numeric=("x",), outliers=(), text=())
    frame = pd.DataFrame(
        {"row_id": ["1", "1e20", "-1e19", "12345678901234567890123", "7"],
         "x": [1.0, 2.0, 3.0, 4.0, 5.0]}
    )  # fmt: skip
    rows, bad, counts = validate(frame, schema)
    assert rows["row_id"].tolist() == [1, 7]
    assert counts["quarantined"] == {
        "row_id is out of the exactly representable range": 3
    }
    huge = pd.DataFrame({"row_id": np.array([3, 2**64 - 1], np.uint64), "x": [1.0, 2]})
    rows, bad, _ = validate(huge, schema)
    assert rows["row_id"].tolist() == [3] and len(bad) == 1


def test_repeated_keys_and_non_numeric_types_are_not_passed_through():
    from mlcomp.data.schema import Schema, validate

    schema = Schema(numeric=("x",), outliers=(), text=())
    frame = pd.DataFrame({"row_id": [4, 5, 4], "x": [1.0, 2.0, 3.0]})
    rows, bad, counts = validate(frame, schema)
    assert rows["x"].tolist() == [1.0, 2.0]
    assert counts["quarantined"] == {"row_id repeats an earlier row's key": 1}
    for column in (pd.Series([True, False, True]), pd.date_range("2026", periods=3)):
        with pytest.raises(ValueError, match="numeric column 'x' holds"):
            validate(frame.assign(x=column), schema)


def test_parquet_the_pipeline_would_skip_is_an_error(tmp_path):
    root = synth.make_table(tmp_path / "raw", rows_per_partition=200, partitions=2)
    (root / "table" / "late").mkdir()
    (root / "table" / "part-00000.parquet").rename(
        root / "table" / "late" / "p.PARQUET"
    )
    with pytest.raises(ValueError, match=r"does not read \(late/p.PARQUET\)"):
        outofcore.clean_table(root / "table", tmp_path / "clean")


def test_a_flipped_bit_in_a_partition_is_caught_by_page_checksums(tmp_path):
    import random

    root = synth.make_table(tmp_path / "raw", rows_per_partition=300, partitions=1)
    part = root / "table" / "part-00000.parquet"
    original, data = pd.read_parquet(part), part.read_bytes()
    import pyarrow.parquet as pq

    # the pages: from after the magic number to the end of the last column chunk
    # (the footer, with the schema and statistics, has no checksum in Parquet)
    meta = pq.ParquetFile(part).metadata.row_group(0)
    last = meta.column(meta.num_columns - 1)
    pages_end = (last.dictionary_page_offset or last.data_page_offset) + (
        last.total_compressed_size
    )
    r, caught = random.Random(0), 0
    for _ in range(40):
        flipped = bytearray(data)
        at = r.randrange(4, pages_end)
        flipped[at] ^= 1 << r.randrange(8)
        part.write_bytes(bytes(flipped))
        try:
            got = read_partition(part)
        except ValueError as err:
            assert "cannot be read as Parquet" in str(err)
            caught += 1
            continue
        pd.testing.assert_frame_equal(got, original)  # never silently other rows
    assert caught >= 30


def test_copies_and_repeated_keys_across_partitions_are_found(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    base = pd.DataFrame(
        {"row_id": np.arange(6), "age": np.arange(6.0) + 20,
         "income": np.linspace(1e4, 5e4, 6), "score": np.arange(6.0),
         "sensor": np.zeros(6), "user": list("abcdef"), "comment": list("uvwxyz")}
    )  # fmt: skip
    later = base.iloc[:4].copy()
    later["row_id"] = [10, 11, 2, 13]  # rows 0, 1: copies under new keys
    later.loc[2:3, "age"] = [90.0, 91.0]  # row 2: other content, repeated key 2
    # a whole copy, key included: dropped as a copy, not quarantined for its key
    later = pd.concat([later, base.iloc[[4]]], ignore_index=True)
    base.to_parquet(src / "part-0.parquet")
    later.to_parquet(src / "part-1.parquet")
    for client in (None, "dask"):
        if client:
            with outofcore.connect(n_workers=1, processes=False) as c:
                report = outofcore.clean_table(src, tmp_path / "dask", client=c)
            out = pd.read_parquet(tmp_path / "dask" / "table")
        else:
            report = outofcore.clean_table(src, tmp_path / "here")
            out = pd.read_parquet(tmp_path / "here" / "table")
        assert report.duplicates == 3
        assert report.quarantined == {"row_id repeats a key of an earlier partition": 1}
        assert sorted(out["row_id"]) == [0, 1, 2, 3, 4, 5, 13]
        assert report.rows_in == 11 and report.rows_out == 7
