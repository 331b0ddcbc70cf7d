import copy
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from mlcomp import datasets, pipeline, prune, train, zoo
from mlcomp.coding import inspect, load_compressed, save_compressed
from mlcomp.models import LeNet5


def sparse_lenet5(sparsity=0.9):
    torch.manual_seed(0)
    net = LeNet5()
    return prune.remove_(prune.magnitude_(net, sparsity, scope="global"))


def test_shared_model_saves_and_reloads_with_identical_predictions(tmp_path):
    """The issue's contract: the reloaded file predicts exactly what was saved."""
    net = zoo.pretrained("lenet300-fashion-sparse93", progress=False)
    train_set = datasets.fashion_mnist("train")
    subset = (train_set.images[:2048], train_set.labels[:2048])
    pipeline.share_weights(net, subset, pipeline.layer_bits(net), epochs=1,
                            progress=False)  # fmt: skip
    for name, layer in prune.prunable(net).items():
        assert layer.weight.unique().numel() <= 32, name  # zero included
    path = tmp_path / "lenet300.mlc"
    save_compressed(net.state_dict(), path, pipeline.deep_compression_spec())
    fresh = type(net)()
    fresh.load_state_dict(load_compressed(path))
    test = datasets.fashion_mnist("test")
    reloaded = fresh.state_dict()
    for name, a in net.state_dict().items():
        assert torch.equal(a, reloaded[name]), name
    assert torch.equal(train.predict(fresh, test), train.predict(net, test))
    assert (inspect(path)["max error"] == 0).all()  # nothing left to lose


def test_centroid_fine_tuning_keeps_zeros_and_the_codebook_size():
    net = sparse_lenet5()
    zeros = {n: m.weight == 0 for n, m in prune.prunable(net).items()}
    X, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    before = copy.deepcopy(net)
    pipeline.share_weights(net, (X, y), {"conv1": 8, "conv2": 8, "fc1": 3, "fc2": 3},
                            epochs=2, lr=1e-2, progress=False)  # fmt: skip
    for name, layer in prune.prunable(net).items():
        assert torch.equal(layer.weight == 0, zeros[name]), name
        assert isinstance(layer.weight, nn.Parameter)
    assert net.fc1.weight.unique().numel() <= 8
    assert not torch.equal(net.fc1.bias, before.fc1.bias)  # biases trained too
    with pytest.raises(ValueError, match="epochs"):
        pipeline.share_weights(before, (X, y), 4, epochs=-1)


def test_each_stage_is_smaller_and_the_account_closes(tmp_path):
    net = sparse_lenet5()
    pipeline.share_weights(net, None, pipeline.layer_bits(net), epochs=0)
    state = net.state_dict()
    files = {}
    for stage in pipeline.STAGES:
        files[stage] = tmp_path / f"{stage}.mlc"
        save_compressed(state, files[stage], pipeline.deep_compression_spec(stage))
    reference = sum(t.numel() * 4 for t in state.values())
    report = pipeline.file_report(files, reference_bytes=reference)
    parts = ["weight codes", "indices", "codebooks", "exact tensors", "header"]
    assert (report[parts].sum(axis=1) == report["file bytes"]).all()
    sizes = report["file bytes"]
    assert sizes["P"] > sizes["P+Q"] > sizes["P+Q+H"]
    assert report.loc["P", "codebooks"] == 0 and report.loc["P+Q", "codebooks"] > 0
    # P stores float32 values: 4 bytes per stored entry, fillers included
    stored = inspect(files["P"])
    weights = stored["values"] == "float32"
    assert report.loc["P", "weight codes"] == 4 * stored.loc[weights, "stored"].sum()
    # P+Q: fixed-width 8-bit conv and 5-bit fc indices into the codebooks
    table = inspect(files["P+Q"])
    expected = sum(
        (table.loc[f"{n}.weight", "stored"] * b + 7) // 8
        for n, b in pipeline.layer_bits(net).items()
    )
    assert report.loc["P+Q", "weight codes"] == expected
    assert report.loc["P+Q+H", "ratio"] == pytest.approx(reference / sizes["P+Q+H"])


def test_spec_choices_and_errors():
    spec = pipeline.deep_compression_spec("P", conv_index_bits=6)
    assert spec("c.weight", torch.zeros(4, 2, 3, 3)).values == "float32"
    assert spec("c.weight", torch.zeros(4, 2, 3, 3)).index_bits == 6
    assert spec("steps", torch.zeros(3, 3, dtype=torch.long)) is None
    with pytest.raises(ValueError, match="stage must be one of"):
        pipeline.deep_compression_spec("P+H")
    with pytest.raises(ValueError, match=r"bits must be an integer in 1\.\.16"):
        pipeline.deep_compression_spec(fc_bits=0)


def test_prune_state_dict_per_tensor():
    torch.manual_seed(0)
    state = {
        "a": torch.randn(40, 50),
        "b": torch.randn(10, 3, 3, 3),
        "c": torch.randn(7),
    }
    out = pipeline.prune_state_dict(state, 0.75)
    for name in "ab":
        assert (out[name] == 0).double().mean().item() == pytest.approx(0.75, abs=0.01)
        kept = out[name] != 0
        assert out[name][kept].abs().min() >= state[name][~kept].abs().max()
    assert torch.equal(out["c"], state["c"])
    assert not (state["a"] == 0).any()  # the input is not changed
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipeline.prune_state_dict(state, 1.5)
    counted = pipeline.prune_state_dict(state, 270)  # an int: entries per tensor
    assert all(int((counted[name] == 0).sum()) == 270 for name in "ab")
    with pytest.raises(ValueError, match="count in"):
        pipeline.prune_state_dict(state, 1000)  # more than "b" has


def test_compress_state_dict_bounds_its_error(tmp_path):
    torch.manual_seed(0)
    state = {"w": torch.randn(300, 200), "k": torch.randn(16, 8, 3, 3)}
    table = pipeline.compress_state_dict(state, tmp_path / "m.mlc", prune_amount=0.5,
                                         conv_bits=6, fc_bits=3)  # fmt: skip
    back = load_compressed(tmp_path / "m.mlc")
    pruned = pipeline.prune_state_dict(state, 0.5)
    for name in state:  # the stated error covers the pruning: against the input
        error = (back[name] - state[name]).abs().max().item()
        assert error == pytest.approx(table.loc[name, "max error"], abs=1e-7)
    # every weight went to its nearest codebook entry (the 3-bit codebook
    # holds the zero of the pruned weights and seven k-means centroids)
    codebook = torch.unique(back["w"])
    assert len(codebook) <= 8 and 0 in codebook
    nearest = (pruned["w"][..., None] - codebook).abs().min(-1).values
    assert torch.allclose((back["w"] - pruned["w"]).abs(), nearest, atol=1e-6)
    assert table.loc["k", "values"] == "codebook 6-bit"


def test_max_error_bounds_the_error_against_the_input_pruning_included(tmp_path):
    torch.manual_seed(0)
    state = {"conv1.weight": torch.randn(20, 1, 5, 5), "fc.weight": torch.randn(9, 40)}
    path = tmp_path / "m.mlc"
    table = pipeline.compress_state_dict(state, path, prune_amount=0.9, fc_bits=4)
    back = load_compressed(path)
    for name, t in state.items():
        actual = float((back[name].double() - t.double()).abs().max())
        assert table.loc[name, "max error"] == pytest.approx(actual, rel=1e-12)
        assert actual > 0.2  # pruning 90% of a N(0, 1) tensor removes |w| up to ~1.6
    from mlcomp.cli import upper_bound

    for error in table["max error"]:
        assert Fraction(upper_bound(error)) >= Fraction(error)


def test_fisher_diagonal_of_softmax_regression_matches_the_formula():
    # logits z = W x: E_y[(d log p_y / d W_kj)^2] = E_x[p_k (1 - p_k) x_j^2]
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 4, bias=False)
    x = torch.randn(5, 3).repeat(4000, 1)  # many label draws per input
    F = pipeline.fisher_diagonal(net, x, batch_size=2000)["weight"]
    p = torch.softmax(net(x[:5]), -1).detach()
    exact = ((p * (1 - p)).T @ x[:5] ** 2) / 5
    assert torch.allclose(F, exact, rtol=0.05)


def test_fisher_diagonal_matches_a_loop_of_backward_passes():
    torch.manual_seed(1)
    net = LeNet5()
    x = torch.randn(6, 1, 28, 28)
    F = pipeline.fisher_diagonal(net, x, batch_size=4, seed=3)
    generator = torch.Generator().manual_seed(3)
    total = {k: torch.zeros_like(v) for k, v in net.named_parameters()}
    for start in (0, 4):  # the same batches, so the same label draws
        batch = x[start : start + 4]
        with torch.no_grad():
            probs = torch.softmax(net(batch), -1)
        labels = torch.multinomial(probs, 1, generator=generator)[:, 0]
        for xi, yi in zip(batch, labels, strict=True):
            net.zero_grad()
            torch.log_softmax(net(xi[None]), -1)[0, yi].backward()
            for k, v in net.named_parameters():
                total[k] += v.grad**2
    for k, v in total.items():
        assert torch.allclose(F[k], v / 6, rtol=1e-4, atol=1e-10), k
    with pytest.raises(ValueError, match="non-empty batch"):
        pipeline.fisher_diagonal(net, torch.zeros(0, 1, 28, 28))


def test_step_allocator(tmp_path):
    torch.manual_seed(2)
    state = {"a.weight": torch.randn(32, 64), "a.bias": torch.randn(32),
             "b.weight": torch.randn(16, 32) * 0.1}  # fmt: skip
    fisher = {"a.weight": torch.rand(32, 64), "b.weight": torch.rand(16, 32) * 50}
    alloc = pipeline.StepAllocator(state, fisher, qps=range(-30, -2))
    assert set(alloc.curves["tensor"]) == {"a.weight", "b.weight"}
    totals = []
    for mu in [1e-2, 1e-1, 1.0, 10.0, 100.0]:
        qp = alloc.qp(mu)
        rows = alloc.curves.set_index(["tensor", "qp"]).loc[list(qp.items())]
        totals.append((rows["bits"].sum(), rows["distortion"].sum()))
    bits, dist = np.array(totals).T
    assert (
        np.all(np.diff(bits) >= 0) and np.all(np.diff(dist) <= 0) and bits[-1] > bits[0]
    )
    prices = alloc.prices(9)
    assert len(prices) == 9 and np.all(np.diff(prices) > 0)
    coarse, fine = alloc.qp(prices[0]), alloc.qp(prices[-1])
    assert all(coarse[k] > fine[k] for k in coarse)  # a finer step for each
    # the file holds exactly the levels chosen; biases in float16
    table = alloc.save(tmp_path / "m.mlc", 1.0)
    loaded, on_grid = load_compressed(tmp_path / "m.mlc"), alloc.state_dict(1.0)
    for name, step in alloc.steps(1.0).items():
        assert torch.equal(loaded[name], on_grid[name])
        levels = on_grid[name].double() / step
        assert torch.equal(levels, levels.round())
        assert (on_grid[name] - state[name]).abs().max() < step
    assert torch.equal(loaded["a.bias"], state["a.bias"].half().float())
    assert table.loc["a.bias", "values"] == "float16"
    assert table.loc["b.weight", "values"].startswith("step ")
    with pytest.raises(KeyError, match="no Fisher information for weight 'b.weight'"):
        pipeline.StepAllocator(state, {"a.weight": fisher["a.weight"]})
    with pytest.raises(ValueError, match="has shape"):
        pipeline.StepAllocator(state, {**fisher, "b.weight": torch.ones(3)})
