"""Tests of mlcomp.quant against PyTorch's reference ops, the math, and brute force."""

from __future__ import annotations

import copy
import itertools
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mlcomp import quant
from mlcomp.layers import NoLayerError
from mlcomp.quant import core
from mlcomp.train import evaluate

GEN = torch.Generator().manual_seed(0)


def randn(*shape, scale=1.0):
    return torch.randn(*shape, generator=GEN) * scale


# --- the functional core -------------------------------------------------------


def test_qrange_and_validation():
    assert quant.qrange(4, "affine") == (0, 15)
    assert quant.qrange(4, "symmetric") == (-8, 7)
    with pytest.raises(ValueError, match=r"must be an integer in 2\.\.16"):
        quant.qrange(1, "symmetric")
    with pytest.raises(ValueError, match="must be an integer in"):
        quant.qrange(17)
    with pytest.raises(TypeError, match="must be an integer"):
        quant.qrange(8.0)
    with pytest.raises(ValueError, match="scheme must be one of"):
        quant.qrange(8, "asymmetric")


@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantize_matches_torch_per_tensor(scheme, bits):
    x = randn(1000, scale=3.0).requires_grad_(True)
    scale, zero = quant.qparams(x.detach(), bits, scheme)
    qmin, qmax = quant.qrange(bits, scheme)
    ours = quant.fake_quantize(x, bits, scheme, scale=scale, zero_point=zero)
    ours.sum().backward()
    ours_grad = x.grad.clone()
    x.grad = None
    ref = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero), qmin, qmax)
    ref.sum().backward()
    # torch multiplies by 1/scale, we divide: a value within an ulp of a
    # rounding boundary may land one step apart, nothing more.
    diff = (ours - ref).abs()
    assert float(diff.detach().max()) <= float(scale) * 1.0001
    assert int((diff > 0).sum()) <= 2
    assert torch.equal(ours_grad, x.grad)


@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
def test_fake_quantize_matches_torch_per_channel(scheme):
    w = randn(16, 8, 3, 3) * torch.logspace(-2, 1, 16)[:, None, None, None]
    w.requires_grad_(True)
    scale, zero = quant.qparams(w.detach(), 4, scheme, axis=0)
    assert scale.shape == zero.shape == (16,)
    qmin, qmax = quant.qrange(4, scheme)
    ours = quant.fake_quantize(w, 4, scheme, axis=0)
    ref = torch.fake_quantize_per_channel_affine(
        w, scale, zero.to(torch.int32), 0, qmin, qmax
    )
    diff = (ours - ref).abs().detach()
    assert int((diff > 0).sum()) <= 2
    assert torch.allclose(ours, ref, atol=float(scale.max()) * 1.0001)


def test_minmax_qparams_follow_the_formulas():
    x = torch.tensor([-0.5, 0.25, 2.0])
    scale, zero = quant.qparams(x, 8, "affine")
    assert math.isclose(float(scale), 2.5 / 255, rel_tol=1e-6)
    assert int(zero) == round(0.5 / (2.5 / 255))
    scale, zero = quant.qparams(x, 8, "symmetric")
    assert math.isclose(float(scale), 2.0 / 127, rel_tol=1e-6) and int(zero) == 0
    # all-positive data: the affine range is widened to contain zero
    scale, zero = quant.qparams(torch.tensor([1.0, 3.0]), 8, "affine")
    assert int(zero) == 0 and math.isclose(float(scale), 3.0 / 255, rel_tol=1e-6)
    # a constant zero tensor gets scale 1, not a division by zero
    scale, zero = quant.qparams(torch.zeros(5), 8)
    assert float(scale) == 1.0
    assert torch.equal(quant.fake_quantize(torch.zeros(5)), torch.zeros(5))


@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
def test_round_trip_error_is_at_most_half_a_step(scheme):
    x = randn(64, 50)
    scale, zero = quant.qparams(x, 6, scheme, axis=0)
    q = quant.quantize(x, scale, zero, 6, scheme, axis=0)
    qmin, qmax = quant.qrange(6, scheme)
    assert q.dtype == torch.int64 and q.min() >= qmin and q.max() <= qmax
    x_hat = quant.dequantize(q, scale, zero, axis=0)
    assert bool(((x - x_hat).abs() <= scale[:, None] / 2 * (1 + 1e-5)).all())
    # zero is exact in both schemes
    assert float(quant.dequantize(quant.quantize(torch.zeros(64, 1), scale, zero, 6,
                                                 scheme, axis=0), scale, zero, axis=0)
                 .abs().max()) == 0.0  # fmt: skip


def test_error_variance_is_step_squared_over_twelve():
    x = torch.rand(200_000, generator=GEN) * 2 - 1
    for bits in (4, 6, 8):
        scale, zero = quant.qparams(x, bits)
        err = quant.fake_quantize(x, bits, scale=scale, zero_point=zero) - x
        assert math.isclose(
            float(err.pow(2).mean()), float(scale) ** 2 / 12, rel_tol=0.03
        )


@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
def test_sqnr_gain_per_bit_is_the_step_ratio(scheme):
    # Noise power is step^2 / 12 and the step is range / qmax (symmetric) or
    # range / (2^b - 1) (affine): one more bit gains 20 log10 of the step
    # ratio, about 6.02 dB, a little more for the symmetric scheme.
    x = randn(100_000)
    for b in (4, 5, 6, 7):
        gain = quant.sqnr(x, quant.fake_quantize(x, b + 1, scheme)) - quant.sqnr(
            x, quant.fake_quantize(x, b, scheme)
        )
        lo_b, hi_b = quant.qrange(b, scheme)
        lo_c, hi_c = quant.qrange(b + 1, scheme)
        steps = (hi_c, hi_b) if scheme == "symmetric" else (hi_c - lo_c, hi_b - lo_b)
        assert gain == pytest.approx(20 * math.log10(steps[0] / steps[1]), abs=0.1)
    assert quant.sqnr(x, x) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        quant.sqnr(x, x[:10])


def test_bad_parameters_are_named():
    x = randn(4, 3)
    with pytest.raises(ValueError, match="axis 0 has 4 channels but got 3 scales"):
        quant.quantize(x, torch.ones(3), torch.zeros(3), axis=0)
    with pytest.raises(ValueError, match="one scale and one zero point"):
        quant.quantize(x, torch.ones(4), torch.zeros(4))
    with pytest.raises(ValueError, match="scale must be positive"):
        quant.quantize(x, 0.0, 0)
    with pytest.raises(ValueError, match="pass both scale and zero_point"):
        quant.fake_quantize(x, scale=torch.tensor(1.0))
    with pytest.raises(ValueError, match="NaN"):
        quant.qparams(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="empty"):
        quant.qparams(torch.zeros(0))
    with pytest.raises(ValueError, match="observer must be one of"):
        quant.qparams(x, observer="max")
    with pytest.raises(ValueError, match="percentile"):
        quant.qparams(x, observer="percentile", percentile=20)


def test_percentile_observer_matches_numpy():
    x = randn(3, 5000)
    lo, hi = quant.observe_range(x, 8, "affine", axis=0, observer="percentile",
                                 percentile=99.0)  # fmt: skip
    np.testing.assert_allclose(lo.numpy(), np.percentile(x.numpy(), 1.0, axis=1))
    np.testing.assert_allclose(hi.numpy(), np.percentile(x.numpy(), 99.0, axis=1))
    lo, hi = quant.observe_range(
        x, 8, "symmetric", observer="percentile", percentile=99.0
    )
    assert float(hi[0]) == pytest.approx(np.percentile(np.abs(x.numpy()), 99.0))
    assert float(lo[0]) == -float(hi[0])


@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
def test_mse_observer_never_loses_to_minmax(scheme):
    heavy = torch.distributions.StudentT(2.0).sample((8, 4000))
    for bits in (3, 4, 8):
        errors = {}
        for observer in ("minmax", "mse"):
            x_hat = quant.fake_quantize(heavy, bits, scheme, axis=0, observer=observer)
            errors[observer] = float((x_hat - heavy).pow(2).mean())
        assert errors["mse"] <= errors["minmax"]
        if bits <= 4:  # heavy tails: clipping pays off at low precision
            assert errors["mse"] < 0.9 * errors["minmax"]


def test_entropy_observer_clips_outliers_but_not_uniform_data():
    gauss = torch.cat([randn(20_000), torch.tensor([40.0, -40.0])])
    lo, hi = quant.observe_range(gauss, 8, "symmetric", observer="entropy")
    assert 2.0 < float(hi[0]) < 20.0 and float(lo[0]) == -float(hi[0])
    flat = torch.rand(20_000, generator=GEN)
    lo, hi = quant.observe_range(flat, 8, "affine", observer="entropy")
    assert float(hi[0]) > 0.95 * float(flat.max()) and float(lo[0]) == 0.0
    # post-ReLU data: the spike of exact zeros does not drag the range down
    relu = torch.relu(randn(20_000))
    lo, hi = quant.observe_range(relu, 4, "affine", observer="entropy")
    assert float(lo[0]) == 0.0 and 0.3 * float(relu.max()) < float(hi[0])


# --- binary, ternary, k-means --------------------------------------------------


def test_binarize_scale_is_l2_optimal():
    w = randn(6, 20)
    b = quant.binarize(w, axis=0)
    assert torch.equal(b.sign(), torch.where(w >= 0, 1.0, -1.0))
    alpha = b.abs()[:, 0]
    for row, a in zip(w, alpha, strict=True):
        grid = torch.linspace(0.5 * float(a), 1.5 * float(a), 101)
        errors = [float((row - g * torch.where(row >= 0, 1.0, -1.0)).pow(2).sum())
                  for g in grid]  # fmt: skip
        assert float(grid[int(np.argmin(errors))]) == pytest.approx(float(a), rel=0.02)


def test_ternarize_follows_the_twn_rule():
    w = randn(4, 100)
    t = quant.ternarize(w, threshold=0.7, axis=0)
    for row, out in zip(w, t, strict=True):
        delta = 0.7 * row.abs().mean()
        keep = row.abs() > delta
        alpha = row.abs()[keep].mean()
        expected = torch.where(keep, torch.sign(row) * alpha, torch.zeros(()))
        assert torch.allclose(out, expected, atol=1e-6)
        assert out.unique().numel() <= 3
    with pytest.raises(ValueError, match="threshold"):
        quant.ternarize(w, threshold=-1.0)


def test_kmeans_shares_weights_and_sums_centroid_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    reference = copy.deepcopy(net)
    quant.kmeans_(net, {"0": 3, "2": 2})
    assert net[0].weight_centroids.numel() == 8 and net[2].weight_centroids.numel() == 4
    assert net[0].weight.unique().numel() <= 8
    # the shared weight is the nearest centroid of each original weight
    centroids, index = quant.codebooks(net)["0"]
    nearest = (reference[0].weight.detach()[..., None] - centroids).abs().argmin(-1)
    assert torch.equal(index, nearest)
    # d loss / d centroid = sum of d loss / d weight over the weights sharing it
    x = randn(16, 20)
    net(x).pow(2).sum().backward()
    unshared = copy.deepcopy(reference)
    with torch.no_grad():
        unshared[0].weight.copy_(net[0].weight)
        unshared[2].weight.copy_(net[2].weight)
    unshared(x).pow(2).sum().backward()
    summed = torch.zeros(8).index_add_(
        0, index.flatten(), unshared[0].weight.grad.flatten()
    )
    assert torch.allclose(net[0].weight_centroids.grad, summed, atol=1e-5)
    # and remove_ turns it back into an ordinary layer with the shared values
    shared = net[0].weight.detach().clone()
    quant.remove_(net)
    assert isinstance(net[0].weight, nn.Parameter) and torch.equal(
        net[0].weight, shared
    )
    assert not hasattr(net[0], "weight_centroids")


def test_kmeans_keeps_pruned_weights_zero_through_training():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 10))
    with torch.no_grad():
        net[0].weight[net[0].weight.abs() < 0.15] = 0.0
    zeros = net[0].weight == 0
    quant.kmeans_(net, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(randn(8, 10)).pow(2).mean().backward()
        opt.step()
    net(randn(1, 10))
    assert torch.equal(net[0].weight == 0, zeros)
    # the zero is one of the 2**2 codes: three trainable centroids are left
    assert net[0].weight_centroids.numel() == 3
    assert net[0].weight.unique().numel() <= 4


def test_kmeans_refuses_layers_already_transformed():
    from mlcomp import prune

    net = nn.Sequential(nn.Linear(4, 4))
    prune.magnitude_(net, 0.5)
    with pytest.raises(ValueError, match="prune.remove_"):
        quant.kmeans_(net, 4)
    with pytest.raises(ValueError, match="bits of layer"):
        quant.kmeans_(nn.Sequential(nn.Linear(4, 4)), 0)


# --- model-level fake quantization ---------------------------------------------


def test_quant_config_validates_itself():
    with pytest.raises(ValueError, match="weight_scheme"):
        quant.QuantConfig(weight_scheme="log")
    with pytest.raises(ValueError, match="granularity"):
        quant.QuantConfig(granularity="per_group")
    with pytest.raises(ValueError, match="binary scheme needs weight_bits=1"):
        quant.QuantConfig(weight_bits=8, weight_scheme="binary")
    with pytest.raises(ValueError, match="must be an integer in"):
        quant.QuantConfig(weight_bits=0)
    with pytest.raises(ValueError, match="must be an integer in"):
        quant.QuantConfig(activation_bits=33)
    with pytest.raises(ValueError, match="nothing to quantize"):
        quant.QuantConfig(weight_bits=None)
    with pytest.raises(ValueError, match="activation_observer"):
        quant.QuantConfig(activation_observer="kl")
    with pytest.raises(ValueError, match="momentum"):
        quant.QuantConfig(momentum=0.0)


def test_quantize_sets_per_channel_grids_and_trains_the_shadow_weights():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    )
    quant.quantize_(net, quant.QuantConfig(weight_bits=3))
    for layer in (net[0], net[3]):
        for row in layer.weight.detach().flatten(1):
            assert row.unique().numel() <= 8
    x, y = randn(32, 1, 8, 8), torch.randint(0, 3, (32,), generator=GEN)
    nn.functional.cross_entropy(net(x), y).backward()
    original = net[0].parametrizations.weight.original
    assert original.grad is not None and original.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="already quantized"):
        quant.quantize_(net, quant.QuantConfig())
    with pytest.raises(NoLayerError, match="no Linear or Conv2d"):
        quant.quantize_(nn.Sequential(nn.ReLU()), quant.QuantConfig())
    with pytest.raises(TypeError, match="QuantConfig"):
        quant.quantize_(net, {"weight_bits": 8})


def test_binary_and_ternary_configs_project_the_weights():
    for scheme, bits, project in (
        ("binary", 1, quant.binarize),
        ("ternary", 2, quant.ternarize),
    ):
        for granularity, axis in (("per_channel", 0), ("per_tensor", None)):
            net = nn.Sequential(nn.Linear(50, 4))
            w = net[0].weight.detach().clone()
            config = quant.QuantConfig(
                weight_bits=bits, weight_scheme=scheme, granularity=granularity
            )
            quant.quantize_(net, config)
            expected = project(w, axis=axis)
            assert torch.equal(net[0].weight.detach(), expected), (scheme, axis)
            assert bool((expected != 0).any())  # not an all-zero weight


def test_activation_ranges_follow_a_moving_average_then_freeze():
    q = quant.ActivationQuantizer(bits=8, momentum=0.5).train()
    q(torch.tensor([0.0, 1.0]))
    q(torch.tensor([-1.0, 3.0]))
    assert float(q.lo) == pytest.approx(-0.5) and float(q.hi) == pytest.approx(2.0)
    q.eval()
    q(torch.tensor([-9.0, 9.0]))
    assert float(q.hi) == pytest.approx(2.0)
    fresh = quant.ActivationQuantizer(bits=8).eval()
    with pytest.raises(RuntimeError, match="calibrate"):
        fresh(torch.ones(2))


def test_calibrate_uses_the_requested_observer():
    net = nn.Sequential(nn.Identity(), nn.Linear(1000, 2))
    cfg = quant.QuantConfig(
        weight_bits=None, activation_bits=4, activation_observer="mse"
    )
    quant.quantize_(net, cfg)
    torch.manual_seed(0)
    x = torch.distributions.StudentT(2.0).sample((8, 1000))
    quant.calibrate_(net, (x, torch.zeros(8)), n_batches=1)
    q = net[1].input_quantizer

    def error(lo, hi):
        scale, zero = quant.range_qparams(lo, hi, 4)
        x_hat = quant.fake_quantize(x, 4, scale=scale[0], zero_point=zero[0])
        return float((x_hat - x).pow(2).mean())

    # the sample is all of the data here: the calibrated range is MSE-optimal
    lo, hi = quant.observe_range(x.flatten(), 4, "affine", observer="mse")
    assert error(q.lo, q.hi) == pytest.approx(error(lo, hi), rel=0.05)
    assert error(q.lo, q.hi) < 0.9 * error(x.min(), x.max())
    quant.calibrate_(net, (x, torch.zeros(8)), n_batches=1, observer="minmax")
    assert float(q.hi) == float(x.max()) and float(q.lo) == float(x.min())
    with pytest.raises(ValueError, match="no activation quantizers"):
        quant.calibrate_(nn.Linear(2, 2), (x, torch.zeros(8)))


def test_qat_recovers_accuracy_on_a_toy_problem():
    from mlcomp import train

    torch.manual_seed(0)
    X = randn(2000, 10)
    y = (X[:, :3].sum(1) > 0).long() + (X[:, 3] > 1).long()
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    train.fit(net, (X, y), epochs=10, lr=1e-2, progress=False)
    fp32 = train.evaluate(net, (X, y))
    cfg = quant.QuantConfig(weight_bits=2, activation_bits=4)
    quant.quantize_(net, cfg)
    quant.calibrate_(net, (X, y))
    ptq = train.evaluate(net, (X, y))
    train.fit(net, (X, y), epochs=10, lr=5e-3, progress=False)
    qat = train.evaluate(net, (X, y))
    assert qat > ptq + 0.02 and qat > fp32 - 0.05, (fp32, ptq, qat)
    baked = quant.remove_(copy.deepcopy(net))
    assert not list(baked.modules())[1].__dict__.get("_forward_pre_hooks")
    for row in baked[0].weight.detach():
        assert row.unique().numel() <= 4


def test_round_params_matches_a_dtype_cast():
    net = nn.Linear(30, 30)
    w = net.weight.detach().clone()
    quant.round_params_(net, torch.float16)
    assert torch.equal(net.weight.detach(), w.half().float())
    with pytest.raises(ValueError, match="floating-point"):
        quant.round_params_(net, torch.int8)


def test_sensitivity_leaves_the_model_untouched():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = copy.deepcopy(net.state_dict())
    X, y = randn(64, 4), torch.randint(0, 2, (64,), generator=GEN)
    result = quant.sensitivity(net, (X, y), [2, 8])
    assert list(result) == ["1", "3"] and all(
        list(r) == [2, 8] for r in result.values()
    )
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    for layer in result:  # each entry: that layer alone, fake-quantized by hand
        for b in (2, 8):
            trial = copy.deepcopy(net)
            with torch.no_grad():
                w = trial.get_submodule(layer).weight
                w.copy_(core.fake_quantize(w, b, "symmetric", axis=0))
            assert result[layer][b] == evaluate(trial, (X, y)), (layer, b)


# --- bit allocation ------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=4),
    st.data(),
)
def test_allocate_bits_is_exact(sizes, data):
    widths = [2, 4, 8]
    layers = [f"l{i}" for i in range(len(sizes))]
    costs = {name: {b: data.draw(st.floats(0, 1)) for b in widths} for name in layers}
    size_of = dict(zip(layers, sizes, strict=True))
    budget = data.draw(st.integers(2 * sum(sizes), 8 * sum(sizes)))
    chosen = quant.allocate_bits(costs, size_of, budget)
    best = min(
        sum(costs[n][b] for n, b in zip(layers, combo, strict=True))
        for combo in itertools.product(widths, repeat=len(layers))
        if sum(size_of[n] * b for n, b in zip(layers, combo, strict=True)) <= budget
    )
    assert sum(size_of[n] * b for n, b in chosen.items()) <= budget
    assert sum(costs[n][b] for n, b in chosen.items()) == pytest.approx(best)


def test_allocate_bits_reports_an_impossible_budget():
    with pytest.raises(ValueError, match="below the smallest allocation"):
        quant.allocate_bits({"a": {4: 0.0}}, {"a": 10}, budget=39)
    with pytest.raises(ValueError, match="different layers"):
        quant.allocate_bits({"a": {4: 0.0}}, {"b": 10}, budget=100)


# --- real int8 with ONNX Runtime -----------------------------------------------


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 64), nn.ReLU(),
        nn.Linear(64, 4),
    ).eval()  # fmt: skip
    d = tmp_path_factory.mktemp("onnx")
    fp32 = quant.export_onnx(net, d / "fp32.onnx", torch.zeros(1, 1, 8, 8))
    return net, fp32, d


def test_exported_onnx_computes_what_torch_computes(onnx_pair):
    net, fp32, _ = onnx_pair
    x = randn(10, 1, 8, 8)
    with torch.no_grad():
        expected = net(x)
    assert torch.allclose(quant.OnnxModule(fp32)(x), expected, atol=1e-5)
    # the weights are inside the file
    n_params = sum(p.numel() for p in net.parameters())
    assert os.path.getsize(fp32) > 4 * n_params


def test_exported_file_is_reproducible_and_carries_no_local_paths(onnx_pair, tmp_path):
    import onnx

    net, fp32, _ = onnx_pair
    again = quant.export_onnx(net, tmp_path / "again.onnx", torch.zeros(1, 1, 8, 8))
    assert fp32.read_bytes() == again.read_bytes()
    proto = onnx.load(str(fp32))
    assert not proto.graph.metadata_props
    assert not any(node.metadata_props for node in proto.graph.node)
    assert b"stack_trace" not in fp32.read_bytes() and b".py" not in fp32.read_bytes()


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_model_is_smaller_and_close(onnx_pair, mode):
    net, fp32, d = onnx_pair
    calib = torch.rand(256, 1, 8, 8, generator=GEN)
    q = quant.quantize_onnx(fp32, d / f"{mode}.onnx", calib, mode=mode)
    # below 4x: the QDQ graph's scales and zero points weigh on a tiny model
    assert os.path.getsize(fp32) / os.path.getsize(q) > 2.5
    x = torch.rand(64, 1, 8, 8, generator=GEN)
    with torch.no_grad():
        ref = net(x)
    out = quant.OnnxModule(q)(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    names = quant.node_names(q)
    ops = [n.op_type for n in __import__("onnx").load(str(q)).graph.node]
    assert len(names) == len(ops)
    if mode == "static":
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    else:
        assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_products_do_not_saturate_without_vnni(tmp_path, mode):
    # every input 255 and every weight 127: each pair of products sums to
    # 64,770, which the u8 x s8 multiply-add of CPUs without VNNI clips to
    # 32,767 (the output would come out near half); the sessions ask ONNX
    # Runtime for exact products, so the output is the float one on any CPU
    net = nn.Linear(64, 4, bias=False)
    nn.init.ones_(net.weight)
    fp32 = quant.export_onnx(net, tmp_path / "ones.onnx", torch.zeros(1, 64))
    calib = torch.cat([torch.ones(1, 64), torch.rand(255, 64, generator=GEN)])
    q = quant.quantize_onnx(fp32, tmp_path / "q.onnx", calib, mode=mode)
    out = quant.OnnxModule(q)(torch.ones(8, 64))
    assert torch.allclose(out, torch.full((8, 4), 64.0), rtol=0.01), out[0]


def test_excluded_nodes_stay_in_float(onnx_pair):
    _, fp32, d = onnx_pair
    conv = quant.node_names(fp32, "Conv")
    assert len(conv) == 1
    q = quant.quantize_onnx(
        fp32, d / "mixed.onnx", torch.rand(64, 1, 8, 8), exclude=conv
    )
    import onnx

    graph = onnx.load(str(q)).graph
    conv_node = next(n for n in graph.node if n.op_type == "Conv")
    weight = next(t for t in graph.initializer if t.name == conv_node.input[1])
    assert weight.data_type == onnx.TensorProto.FLOAT
    profile = quant.profile_onnx(q, torch.rand(4, 1, 8, 8), runs=3)
    assert set(profile.columns) == {"node", "op", "ms"} and (profile.ms >= 0).all()


def test_runtime_errors_are_clear(onnx_pair, tmp_path):
    _, fp32, d = onnx_pair
    with pytest.raises(ValueError, match="needs calibration inputs"):
        quant.quantize_onnx(fp32, tmp_path / "q.onnx")
    with pytest.raises(ValueError, match="no nodes named"):
        quant.quantize_onnx(fp32, tmp_path / "q.onnx", torch.rand(8, 1, 8, 8),
                            exclude=["conv_that_is_not_there"])  # fmt: skip
    with pytest.raises(ValueError, match="mode must be"):
        quant.quantize_onnx(fp32, tmp_path / "q.onnx", mode="weights")
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        quant.OnnxModule(tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        quant.quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx")


def test_every_listed_observer_is_served_and_others_are_refused():
    x = torch.cat([randn(2000), torch.tensor([40.0])])
    ranges = {}
    for observer in core.OBSERVERS:
        lo, hi = core.observe_range(x, bits=4, observer=observer)
        assert float(lo[0]) <= 0 < float(hi[0]) <= 40.0, observer
        quant.QuantConfig(weight_observer=observer, activation_observer=observer)
        ranges[observer] = float(hi[0])
    assert ranges["minmax"] == 40.0 and ranges["mse"] < 40.0  # mse clips the outlier
    with pytest.raises(ValueError, match="observer must be one of"):
        core.observe_range(x, observer="max")
    with pytest.raises(ValueError, match="weight_observer must be one of"):
        quant.QuantConfig(weight_observer="max")


def test_capture_inputs_sees_what_each_layer_gets():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).train()
    x = randn(6, 3)
    inputs = quant.capture_inputs(net, x)
    assert torch.equal(inputs["0"], x)
    assert torch.equal(inputs["2"], torch.relu(net[0](x)).detach())
    assert net.training and not net[0]._forward_pre_hooks


# --- group-wise weight-only quantization ------------------------------------


def test_group_quantization_is_exact_on_its_grid_and_bounded_elsewhere():
    from mlcomp.quant.groups import GroupQuantized

    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 256, generator=g)
    q = GroupQuantized.from_weight(w, bits=4, group_size=64)
    assert q.codes.max() <= 15 and q.scales.dtype == torch.float16
    err = (q.dequantize() - w).abs().reshape(16, 4, 64)
    assert bool((err <= q.scales.float()[..., None] * 0.5 + 1e-6).all())
    again = GroupQuantized.from_weight(q.dequantize(), bits=4, group_size=64)
    torch.testing.assert_close(again.dequantize(), q.dequantize())  # idempotent
    w[0, 0] = 0.0
    assert float(GroupQuantized.from_weight(w, 4, 64).dequantize()[0, 0]) == 0.0


def test_smaller_groups_cost_more_bits_and_err_less_with_an_outlier():
    from mlcomp.quant.groups import GroupQuantized

    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(1))
    w[:, 7] *= 40  # one outlier input, as in Transformer activations' weights
    errors, sizes = [], []
    for group in (32, 128, 512):
        q = GroupQuantized.from_weight(w, bits=4, group_size=group)
        errors.append(float(((q.dequantize() - w) ** 2).mean()))
        sizes.append(q.nbytes)
        assert q.bits_per_weight == pytest.approx(4 + (16 + 4) / group)
    assert errors[0] < errors[1] < errors[2]
    assert sizes[0] > sizes[1] > sizes[2]


def test_group_quantization_rejects_bad_shapes_and_saves_a_real_file(tmp_path):
    from safetensors.torch import load_file

    from mlcomp.quant.groups import GroupQuantized, quantize_groups_, save_groups

    with pytest.raises(ValueError, match="divide"):
        GroupQuantized.from_weight(torch.zeros(4, 30), 4, 8)
    with pytest.raises(ValueError, match="2-D"):
        GroupQuantized.from_weight(torch.zeros(30), 4, 10)
    net = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 8))
    q = quantize_groups_(net, bits=4, group_size=32)
    path = save_groups(tmp_path / "m.safetensors", q, net)
    stored = load_file(str(path))
    assert stored["0.codes"].numel() == 64 * 128 // 2  # two codes per byte
    payload = sum(t.numel() * t.element_size() for t in stored.values())
    assert payload == sum(g.nbytes for g in q.values()) + 2 * (64 + 8)  # biases
    assert path.stat().st_size < payload + 2048  # the header is small


def test_group_quantization_can_take_the_embedding_tables_too():
    from mlcomp.quant.groups import quantize_groups_

    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(10, 64), nn.Linear(64, 4))
    before = net[0].weight.detach().clone()
    assert list(quantize_groups_(net, 4, 32)) == ["1"]
    assert torch.equal(net[0].weight, before)  # tables untouched by default
    q = quantize_groups_(net, 4, 32, embeddings=True)
    assert sorted(q) == ["0", "1"]
    assert all(len(torch.unique(row[:32])) <= 16 for row in net[0].weight)
    assert (net[0].weight - before).abs().max() <= q["0"].scales.max() / 2 + 1e-6
