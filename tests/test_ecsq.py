"""The uniform-step quantizer with entropy-constrained levels (mlcomp.quant.ecsq)."""

import math

import numpy as np
import pytest
import torch

from mlcomp.coding import (
    CorruptFileError,
    TensorSpec,
    inspect,
    load_compressed,
    save_compressed,
)
from mlcomp.quant import ecsq


def entropy_bits(levels: np.ndarray) -> float:
    _, counts = np.unique(levels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_rounding_matches_high_rate_theory():
    # Gaussian, fine step: H(Q) = h(X) - log2(step), D = step^2 / 12
    x = np.random.default_rng(1).normal(0, 1, 400_000)
    q = ecsq.step_levels(x, 0.1)
    assert np.array_equal(q, np.rint(x / 0.1))
    h = 0.5 * math.log2(2 * math.pi * math.e)
    assert abs(entropy_bits(q) - (h - math.log2(0.1))) < 0.01
    assert abs(np.mean((x - q * 0.1) ** 2) / (0.1**2 / 12) - 1) < 0.01


def test_cost_never_rises_and_error_stays_below_a_step():
    x = np.random.default_rng(2).laplace(0, 1, 50_000)
    lam = 0.3
    costs = [ecsq.level_cost(x, ecsq.step_levels(x, 0.7), 0.7, lam)]
    for k in range(1, 8):
        q = ecsq.step_levels(x, 0.7, lam, iterations=k)
        costs.append(ecsq.level_cost(x, q, 0.7, lam))
        assert np.abs(x - q * 0.7).max() < 0.7
    assert all(b <= a + 1e-9 for a, b in zip(costs, costs[1:], strict=False))
    assert costs[-1] < 0.99 * costs[0]


def test_step_lambda_beats_rounding_at_equal_distortion():
    # Laplacian weights: ECSQ at lambda = ln2/6 lies below the rounding curve
    x = np.random.default_rng(0).laplace(0, 1, 200_000)
    steps = np.geomspace(0.02, 6, 120)
    curve = []
    for d in steps:
        q = ecsq.step_levels(x, d)
        curve.append((np.mean((x - q * d) ** 2), entropy_bits(q)))
    D, R = np.array(curve).T
    assert np.all(np.diff(D) > 0)  # so that np.interp reads the curve
    gains = {}
    for d in (0.5, 1.0, 2.0):
        q = ecsq.step_levels(x, d, ecsq.STEP_LAMBDA)
        rate = entropy_bits(q)
        gains[d] = 1 - rate / np.interp(np.mean((x - q * d) ** 2), D, R)
    assert gains[0.5] > 0.002 and gains[1.0] > 0.01 and gains[2.0] > 0.05
    assert gains[0.5] < gains[1.0] < gains[2.0]  # more at low rate


def test_zigzag_is_a_bijection():
    q = np.arange(-ecsq.MAX_LEVEL, ecsq.MAX_LEVEL + 1)
    codes = ecsq.zigzag(q)
    assert sorted(codes.tolist()) == list(range(codes.size))
    assert codes.max() < 1 << 16
    assert np.array_equal(ecsq.unzigzag(codes), q)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(step=0.0), ValueError),
        (dict(step=float("nan")), ValueError),
        (dict(step="1"), TypeError),
        (dict(step=1.0, lam=-1), ValueError),
        (dict(step=1.0, iterations=0), ValueError),
        (dict(step=1e-9), ValueError),  # levels beyond 16 bits
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        ecsq.step_levels(np.array([0.5, -1.0]), **kwargs)


def test_qp_step():
    assert ecsq.qp_step(0) == 1.0 and ecsq.qp_step(-4) == 0.5
    with pytest.raises(ValueError):
        ecsq.qp_step(1000)


# --- step values in the .mlc file ---------------------------------------------


@pytest.fixture
def sparse_state():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(200, 120, generator=g) * 0.05
    w[w.abs() < 0.04] = 0  # about 60% zeros
    return {"w": w, "b": torch.randn(200, generator=g)}


@pytest.mark.parametrize("coder", ["none", "huffman", "rans"])
@pytest.mark.parametrize("sparsity", ["dense", "bitmask", "relative"])
def test_step_values_round_trip(tmp_path, sparse_state, coder, sparsity):
    path = tmp_path / "s.mlc"
    spec = TensorSpec(values="step", step=0.004, coder=coder, sparsity=sparsity)
    save_compressed(sparse_state, path, spec)
    back = load_compressed(path)
    w = sparse_state["w"]
    expected = ecsq.step_levels(w.double().numpy(), 0.004) * 0.004  # float64
    assert torch.equal(back["w"], torch.from_numpy(expected).reshape(w.shape).float())
    assert torch.equal(back["w"][w == 0], w[w == 0])  # zeros exact
    assert torch.equal(back["b"], sparse_state["b"])
    table = inspect(path)
    assert table.loc["w", "max error"] <= 0.002 + 1e-7
    assert open(path, "rb").read()[4] == 3  # step values: version 3


def test_step_values_entropy_coded_beat_codebook_at_lower_error(tmp_path):
    # a fine step with an entropy coder: fewer bytes and less error than 4-bit k-means
    w = torch.from_numpy(np.random.default_rng(0).laplace(0, 0.02, (256, 256))).float()
    sizes, errors = {}, {}
    for label, spec in {
        "step": TensorSpec(values="step", step=0.012, coder="rans"),
        "codebook": TensorSpec(values="codebook", bits=4, coder="rans"),
    }.items():
        save_compressed({"w": w}, tmp_path / f"{label}.mlc", spec)
        back = load_compressed(tmp_path / f"{label}.mlc")["w"]
        sizes[label] = (tmp_path / f"{label}.mlc").stat().st_size
        errors[label] = float(((back - w) ** 2).mean())
    assert errors["step"] < errors["codebook"] and sizes["step"] < sizes["codebook"]


def test_rd_lambda_makes_files_smaller(tmp_path, sparse_state):
    sizes = []
    for lam in (0.0, ecsq.STEP_LAMBDA, 0.5):
        spec = TensorSpec(values="step", step=0.01, coder="rans", rd_lambda=lam)
        save_compressed(sparse_state, tmp_path / "r.mlc", spec)
        sizes.append((tmp_path / "r.mlc").stat().st_size)
    assert sizes[0] > sizes[1] > sizes[2]


def test_files_without_step_values_stay_version_2(tmp_path, sparse_state):
    path = tmp_path / "c.mlc"
    save_compressed(sparse_state, path, TensorSpec(values="codebook", bits=3))
    data = path.read_bytes()
    assert data[4] == 2 and b"rd_lambda" not in data
    load_compressed(path)


def test_step_values_in_a_version_2_file_are_refused(tmp_path, sparse_state):
    path = tmp_path / "s.mlc"
    save_compressed(sparse_state, path, TensorSpec(values="step", step=0.01))
    data = bytearray(path.read_bytes())
    data[4] = 2
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="step values in a version-2 file"):
        load_compressed(path)


def test_bad_step_specs():
    with pytest.raises(ValueError, match="step > 0"):
        TensorSpec(values="step")
    with pytest.raises(ValueError):
        TensorSpec(values="step", step=0.1, rd_lambda=-1)
    with pytest.raises(TypeError):
        TensorSpec(values="step", step="0.1")


def test_too_fine_a_step_names_the_tensor(tmp_path, sparse_state):
    with pytest.raises(ValueError, match="tensor 'w'.*too fine"):
        save_compressed(sparse_state, tmp_path / "x.mlc",
                        TensorSpec(values="step", step=1e-8))  # fmt: skip


def test_a_relative_index_stream_does_not_change_the_values_bits(tmp_path):
    # the index stream's width once leaked into the resolved spec's bits
    from mlcomp.coding.container import _read_header

    path = tmp_path / "p.mlc"
    w = torch.zeros(64, 64)
    w[::7, ::5] = 1.0
    save_compressed({"w": w}, path, TensorSpec(sparsity="relative", index_bits=5))
    with open(path, "rb") as f:
        entries, _ = _read_header(f, path, path.stat().st_size)
    assert entries[0]["spec"]["bits"] == 8 and entries[0]["spec"]["index_bits"] == 5


def test_a_value_on_the_grid_keeps_its_level():
    # whatever the rate weight: zeros (pruned weights) stay exactly zero
    on_grid = np.array([0.0, 0.0, 0.8, 1.2, 1.2, 1.2, 1.2, 1.2])
    assert ecsq.step_levels(on_grid, 0.4, 50.0).tolist() == [0, 0, 2, 3, 3, 3, 3, 3]
    off_grid = on_grid + 0.01
    assert ecsq.step_levels(off_grid, 0.4, 50.0).tolist() != [0, 0, 2, 3, 3, 3, 3, 3]


def test_order0_bits_is_the_code_length_of_level_cost():
    q = np.random.default_rng(6).integers(-5, 6, 1000)
    assert ecsq.order0_bits(q) == pytest.approx(1000 * entropy_bits(q))
    assert ecsq.level_cost(q * 1.0, q, 1.0, 2.0) == pytest.approx(
        2 * ecsq.order0_bits(q)
    )
    assert ecsq.order0_bits(np.array([], dtype=np.int64)) == 0.0


def test_allocation_lies_on_the_lower_hull():
    # Everett: a Lagrangian minimizer has the fewest bits of all allocations
    # with at most its distortion. Checked against every combination.
    import itertools

    rng = np.random.default_rng(7)
    curves = []
    for _ in range(4):
        bits = np.sort(rng.uniform(0, 100, 6))
        dist = np.sort(rng.uniform(0, 10, 6))[::-1]
        curves.append((bits, dist))
    combos = list(itertools.product(range(6), repeat=4))
    total = np.array([[sum(c[0][i] for c, i in zip(curves, pick, strict=True)),
                       sum(c[1][i] for c, i in zip(curves, pick, strict=True))]
                      for pick in combos])  # fmt: skip
    for mu in [0.0, 0.3, 1.0, 3.0, 10.0, 100.0]:
        pick = ecsq.allocate(curves, mu)
        bits = sum(c[0][i] for c, i in zip(curves, pick, strict=True))
        dist = sum(c[1][i] for c, i in zip(curves, pick, strict=True))
        assert not np.any((total[:, 1] <= dist) & (total[:, 0] < bits - 1e-9))
    with pytest.raises(ValueError, match="mu must be"):
        ecsq.allocate(curves, -1.0)


def test_rd_curve():
    x = np.random.default_rng(8).normal(0, 1, 5000)
    steps = [ecsq.qp_step(qp) for qp in range(-12, 0)]
    bits, dist = ecsq.rd_curve(x, steps)
    assert np.all(np.diff(bits) < 0) and np.all(
        np.diff(dist) > 0
    )  # coarser: fewer bits
    q = ecsq.step_levels(x, steps[3], ecsq.STEP_LAMBDA)
    assert bits[3] == ecsq.order0_bits(q)
    assert dist[3] == pytest.approx(((x - q * steps[3]) ** 2).sum())
    w = np.random.default_rng(9).uniform(0, 2, x.size)  # weights the error only
    w_bits, w_dist = ecsq.rd_curve(x, steps, weights=w)
    assert np.array_equal(w_bits, bits)
    assert w_dist[3] == pytest.approx((w * (x - q * steps[3]) ** 2).sum())
    with pytest.raises(ValueError, match="one entry per value"):
        ecsq.rd_curve(x, steps, weights=w[:10])
