import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mlcomp import prune
from mlcomp.models import LeNet5, LeNet300100
from mlcomp.train import batches, evaluate


def seeded(model_cls, seed=0):
    torch.manual_seed(seed)
    return model_cls()


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9, 1.0, 100])
def test_layer_masks_agree_with_torch_l1_unstructured(amount):
    ours, ref = seeded(LeNet5), seeded(LeNet5)
    prune.magnitude_(ours, amount)
    for name, module in prune.prunable(ref).items():
        torch_prune.l1_unstructured(module, "weight", amount=amount)
        assert torch.equal(
            dict(ours.named_modules())[name].weight_mask, module.weight_mask
        )


@pytest.mark.parametrize("amount", [0.2, 0.8, 5000])
def test_global_masks_agree_with_torch_global_unstructured(amount):
    ours, ref = seeded(LeNet300100), seeded(LeNet300100)
    prune.magnitude_(ours, amount, scope="global")
    params = [(m, "weight") for m in prune.prunable(ref).values()]
    torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=amount)
    for (name, a), b in zip(
        prune.prunable(ours).items(), prune.prunable(ref).values(), strict=True
    ):
        assert torch.equal(a.weight_mask, b.weight_mask), name


def test_global_scope_prunes_layers_unevenly_and_keeps_the_total():
    net = seeded(LeNet300100)
    with torch.no_grad():
        net.fc3.weight.mul_(100)  # the output layer's weights are now the largest
    prune.magnitude_(net, 0.5, scope="global")
    s = prune.sparsity(net)
    assert s["fc3"] < 0.01 and s["fc1"] > 0.5
    assert s["total"] == pytest.approx(0.5, abs=1e-5)


def test_magnitude_uses_absolute_values_not_signs():
    net = nn.Sequential(nn.Linear(6, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-5.0, -0.1, 0.2, 4.0, -3.0, 0.05]]))
    prune.magnitude_(net, 0.5)
    assert net[0].weight_mask.tolist() == [[1, 0, 0, 1, 1, 0]]


def test_repeated_calls_reach_the_total_amount_and_keep_old_zeros():
    net = seeded(LeNet300100)
    prune.magnitude_(net, 0.5)
    first = net.fc1.weight_mask.clone()
    with torch.no_grad():  # pruned weights grow large: they must stay pruned
        net.fc1.weight_orig.add_(10 * (1 - first))
    prune.magnitude_(net, 0.8)
    assert prune.sparsity(net)["fc1"] == pytest.approx(0.8, abs=1e-5)
    assert torch.all(net.fc1.weight_mask <= first)


def test_weight_reads_masked_and_trains_through_the_mask():
    net = prune.magnitude_(seeded(LeNet300100), 0.9)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(net(x), y).backward()
    grad = net.fc1.weight_orig.grad
    assert torch.all(grad[net.fc1.weight_mask == 0] == 0)
    assert torch.equal(net.fc1.weight, net.fc1.weight_orig * net.fc1.weight_mask)


def test_remove_makes_it_permanent_and_preserves_the_function():
    net = prune.magnitude_(seeded(LeNet5), 0.7)
    x = torch.randn(3, 1, 28, 28)
    before = net(x)
    prune.remove_(net)
    assert not any(torch_prune.is_pruned(m) for m in net.modules())
    assert isinstance(net.conv2.weight, nn.Parameter)
    torch.testing.assert_close(net(x), before)
    assert prune.sparsity(net)["conv2"] == pytest.approx(0.7, abs=1e-4)


@pytest.mark.parametrize(
    "amount, error", [(-0.1, ValueError), (1.5, ValueError), (10**9, ValueError),
                      ("half", TypeError), (True, TypeError)]
)  # fmt: skip
def test_bad_amounts_are_rejected(amount, error):
    with pytest.raises(error, match="amount"):
        prune.magnitude_(seeded(LeNet300100), amount)


def test_bad_scope_and_scores_are_rejected():
    with pytest.raises(ValueError, match="scope"):
        prune.magnitude_(seeded(LeNet300100), 0.5, scope="rows")
    with pytest.raises(KeyError, match="fc9"):
        prune.prune_by_scores_(seeded(LeNet300100), {"fc9": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        prune.prune_by_scores_(seeded(LeNet300100), {"fc3": torch.zeros(3)}, 0.5)


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(
        0, 10, (n,), generator=g
    )


def test_taylor_scores_match_autograd_by_hand():
    net = seeded(LeNet300100)
    X, y = data()
    scores = prune.taylor_scores(net, (X, y), n_batches=2, batch_size=32)
    grads = []
    for xb, yb in batches((X, y), 32):
        net.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        grads.append(net.fc2.weight.grad.clone())
    expected = (net.fc2.weight * (grads[0] + grads[1]) / 2).abs()
    torch.testing.assert_close(scores["fc2"], expected.detach())


def test_snip_scores_are_normalized_taylor_on_one_batch():
    net = seeded(LeNet300100)
    X, y = data()
    snip = prune.snip_scores(net, (X, y), batch_size=64)
    taylor = prune.taylor_scores(net, (X, y), n_batches=1, batch_size=64)
    total = sum(float(t.sum()) for t in taylor.values())
    for name in snip:
        torch.testing.assert_close(snip[name], taylor[name] / total)


def test_sensitivity_leaves_model_alone_and_equals_pruning_by_hand():
    net = seeded(LeNet300100)
    X, y = data(256)
    before = copy.deepcopy(net.state_dict())
    scan = prune.sensitivity(net, (X, y), [0.0, 0.7, 1.0])
    assert set(scan) == {"fc1", "fc2", "fc3"}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    dense = evaluate(net, (X, y))
    for layer in scan:
        assert scan[layer][0.0] == dense
        for amount in (0.7, 1.0):  # torch prunes the same layer the same way
            ref = copy.deepcopy(net)
            torch_prune.l1_unstructured(ref.get_submodule(layer), "weight", amount)
            assert scan[layer][amount] == evaluate(ref, (X, y)), (layer, amount)
    # a whole layer of zeros: the logits no longer depend on the input
    zeroed = copy.deepcopy(net)
    with torch.no_grad():
        zeroed.fc3.weight.zero_()
    assert scan["fc3"][1.0] == evaluate(zeroed, (X, y))
    assert scan["fc3"][1.0] == (y == zeroed(X[:1]).argmax()).float().mean().item()


def test_agp_schedule_matches_zhu_gupta_formula():
    s = prune.agp_schedule(0.1, 0.95, start_step=100, end_step=1100, every=50)
    for step in range(0, 1300, 7):
        t = min(max(step, 100), 1100)
        t = 100 + (t - 100) // 50 * 50
        expected = 0.95 + (0.1 - 0.95) * (1 - (t - 100) / 1000) ** 3
        assert s(step) == pytest.approx(expected)
    values = [s(t) for t in range(0, 1300, 10)]
    assert values == sorted(values)
    with pytest.raises(ValueError):
        prune.agp_schedule(0.9, 0.1, 0, 10)
    with pytest.raises(ValueError):
        prune.agp_schedule(0.0, 0.5, 10, 10)


def test_nm_mask_keeps_n_of_every_m_largest():
    w = torch.randn(6, 16, 3, 3)
    mask = prune.nm_mask(w, 2, 4)
    groups = mask.reshape(6, -1, 4)
    assert torch.all(groups.sum(-1) == 2)
    magnitudes = w.abs().reshape(6, -1, 4)
    kept_min = torch.where(groups.bool(), magnitudes, torch.inf).amin(-1)
    dropped_max = torch.where(groups.bool(), -torch.inf, magnitudes).amax(-1)
    assert torch.all(kept_min >= dropped_max)
    with pytest.raises(ValueError, match="multiple"):
        prune.nm_mask(torch.randn(2, 6), 2, 4)
    with pytest.raises(ValueError):
        prune.nm_mask(w, 5, 4)


def test_sparse_format_byte_counts():
    dense = torch.zeros(10, 20)
    dense[0, :5] = 1.0
    dense[9, 19] = 2.0  # 6 non-zeros
    assert prune.csr_bytes(dense) == 6 * 4 + 6 * 4 + 11 * 4
    assert prune.csr_bytes(dense, value_bits=8, index_bits=16) == 6 + 12 + 22
    assert prune.bitmask_bytes(dense) == 200 // 8 + 6 * 4
    assert prune.relative_index_bytes(dense, index_bits=8) == 6 + 6 * 4  # no filler


def reference_relative(positions, bits):
    """Brute force: walk the positions and count fillers one step at a time."""
    out, prev, span = [], -1, 2**bits
    for p in positions:
        while p - prev > span:
            prev += span
            out.append((span - 1, True))
        out.append((p - prev - 1, False))
        prev = p
    return out


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_relative_indices_against_brute_force_and_decode(bits):
    rng = np.random.default_rng(bits)
    mask = torch.from_numpy(rng.random(3000) < 0.02)
    gaps, filler = prune.relative_indices(mask, bits)
    positions = torch.nonzero(mask).flatten().tolist()
    assert list(zip(gaps.tolist(), filler.tolist(), strict=True)) == reference_relative(
        positions, bits
    )
    decoded = np.cumsum(gaps + 1) - 1  # positions of all stored entries
    assert decoded[~filler].tolist() == positions
    assert gaps.max() < 2**bits


def test_gradual_prune_reaches_target_and_follows_the_schedule():
    X, y = data(512)
    net = seeded(LeNet300100)
    seen = []
    original = prune.magnitude_

    def spy(model, amount, *args, **kwargs):
        seen.append(amount)
        return original(model, amount, *args, **kwargs)

    prune.schedules.magnitude_ = spy  # the name gradual_prune calls
    try:
        prune.gradual_prune(
            net, (X, y), 0.9, epochs=3, every=2, batch_size=64, progress=False
        )
    finally:
        prune.schedules.magnitude_ = original
    assert prune.sparsity(net)["total"] == pytest.approx(0.9, abs=1e-4)
    assert seen[0] == 0.0 and seen[-1] == 0.9 and seen == sorted(seen)
    schedule = prune.agp_schedule(0.0, 0.9, 0, 16, 2)  # 8 steps/epoch, 2 epochs pruning
    assert seen[1:] == [schedule(t) for t in range(2, 17, 2)]


def test_rewind_restores_surviving_weights_and_checks_keys():
    net = seeded(LeNet300100)
    init = copy.deepcopy(net.state_dict())
    prune.magnitude_(net, 0.8)
    with torch.no_grad():
        net.fc1.weight_orig.mul_(3)
        net.fc1.bias.add_(1)
    prune.rewind_(net, init)
    assert torch.equal(net.fc1.weight, init["fc1.weight"] * net.fc1.weight_mask)
    assert torch.equal(net.fc1.bias, init["fc1.bias"])
    assert prune.sparsity(net)["fc1"] == pytest.approx(0.8, abs=1e-4)
    del init["fc2.bias"]
    with pytest.raises(KeyError, match="fc2.bias"):
        prune.rewind_(net, init)


def _no_training(model, data, epochs, lr, **kwargs):
    return []


def test_iterative_prune_without_training_matches_torch_iterated_global(monkeypatch):
    # No training and rewinding to the same weights: every round ranks the same
    # magnitudes, so the masks must equal torch's global_unstructured applied
    # three times with amount=0.5 (torch counts the amount among survivors).
    monkeypatch.setattr(prune.schedules.train, "fit", _no_training)
    ours, ref = seeded(LeNet300100), seeded(LeNet300100)
    levels = prune.iterative_prune(ours, None, 0.875, rounds=3, epochs=1)
    assert levels == pytest.approx([0.0, 0.5, 0.75, 0.875])
    params = [(m, "weight") for m in prune.prunable(ref).values()]
    for _ in range(3):
        torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=0.5)
    for (name, a), b in zip(
        prune.prunable(ours).items(), prune.prunable(ref).values(), strict=True
    ):
        assert torch.equal(a.weight_mask, b.weight_mask), name


def test_iterative_prune_rewinds_before_every_training_and_nests_masks(monkeypatch):
    seen = []
    real_fit = prune.schedules.train.fit

    def recording_fit(model, data, epochs, lr, **kwargs):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_fit(model, data, epochs, lr, **kwargs)

    monkeypatch.setattr(prune.schedules.train, "fit", recording_fit)
    torch.manual_seed(0)
    X, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    net = seeded(LeNet300100)
    theta0 = {k: v.clone() for k, v in net.state_dict().items()}
    masks = []
    levels = prune.iterative_prune(
        net, (X, y), 0.9, rounds=2, epochs=1, batch_size=32, progress=False,
        on_round=lambda s, m: masks.append(m.fc1.weight.detach() != 0),
    )  # fmt: skip
    assert len(seen) == 3 and len(masks) == 3
    assert levels == pytest.approx([0.0, 1 - 0.1**0.5, 0.9])
    assert torch.equal(seen[0]["fc1.weight"], theta0["fc1.weight"])
    for state in seen[1:]:  # every later training starts from theta0 * mask
        mask = state["fc1.weight_mask"]
        assert torch.equal(state["fc1.weight_orig"] * mask, theta0["fc1.weight"] * mask)
        assert torch.equal(state["fc2.bias"], theta0["fc2.bias"])
    assert not (masks[2] & ~masks[1]).any()  # pruned weights stay pruned
    assert prune.sparsity(net)["total"] == pytest.approx(0.9, abs=1e-5)


def test_iterative_prune_can_start_from_an_already_trained_model():
    torch.manual_seed(0)
    X, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    kwargs = {"batch_size": 32, "progress": False}
    fresh = seeded(LeNet300100)
    theta0 = {k: v.clone() for k, v in fresh.state_dict().items()}
    trained = copy.deepcopy(fresh)
    prune.schedules.train.fit(trained, (X, y), 1, 1e-3, **kwargs)
    prune.iterative_prune(fresh, (X, y), 0.9, rounds=2, epochs=1, **kwargs)
    prune.iterative_prune(trained, (X, y), 0.9, rounds=2, epochs=1,
                           rewind_state=theta0, trained=True, **kwargs)  # fmt: skip
    for (name, a), b in zip(fresh.state_dict().items(), trained.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name  # skipping the first training changes nothing
    with pytest.raises(ValueError, match="rewind_state"):
        prune.iterative_prune(seeded(LeNet300100), None, 0.9, rounds=1, epochs=1,
                               trained=True)  # fmt: skip


def test_iterative_prune_validates_arguments():
    net = seeded(LeNet300100)
    with pytest.raises(ValueError, match="rounds"):
        prune.iterative_prune(net, None, 0.9, rounds=0, epochs=1)
    with pytest.raises(ValueError, match="final sparsity"):
        prune.iterative_prune(net, None, 1.0, rounds=2, epochs=1)
    prune.magnitude_(net, 0.5)
    with pytest.raises(ValueError, match="sparsity on entry is 0.5"):
        prune.iterative_prune(net, None, 0.4, rounds=2, epochs=1)


# --- Wanda and N:M with scores ------------------------------------------------


def test_wanda_scores_weigh_each_weight_by_its_inputs_norm():
    from mlcomp.prune import wanda_scores

    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(5, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1])
          for _ in range(3)]  # fmt: skip
    scores = wanda_scores(net, xs)
    norms = torch.cat(xs).pow(2).sum(0).sqrt()
    torch.testing.assert_close(scores["0"], net[0].weight.abs() * norms)
    hidden = torch.relu(net[0](torch.cat(xs)))
    torch.testing.assert_close(
        scores["2"], net[2].weight.abs() * hidden.pow(2).sum(0).sqrt()
    )
    with pytest.raises(ValueError, match="calibration"):
        wanda_scores(net, [])


def test_row_scope_prunes_the_same_share_of_every_output_row():
    from mlcomp.prune import prune_by_scores_

    net = nn.Sequential(nn.Linear(8, 4))
    scores = {"0": torch.arange(32.0).view(4, 8) * torch.tensor([[1], [-1], [1], [1]])}
    prune_by_scores_(net, scores, 0.25, scope="row")
    mask = net[0].weight_mask
    assert mask.sum(1).tolist() == [6, 6, 6, 6]
    assert mask[0, :2].sum() == 0 and mask[1, -2:].sum() == 0  # lowest of each row


def test_wanda_keeps_weights_that_meet_large_inputs():
    from mlcomp.prune import prune_by_scores_, wanda_scores

    net = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.5, 0.4, 0.3]]))
    x = torch.tensor([[0.01, 1.0, 1.0, 1.0]])  # input 0 is almost silent
    prune_by_scores_(net, wanda_scores(net, [x]), 0.25, scope="row")
    assert net[0].weight_mask.tolist() == [[0.0, 1.0, 1.0, 1.0]]  # magnitude: 3


def test_prune_nm_with_and_without_scores():
    from mlcomp.prune import nm_mask, prune_nm_

    w = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert nm_mask(w).tolist() == [[1, 1, 0, 0]]
    assert nm_mask(w, scores=torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist() == [
        [0, 0, 1, 1]
    ]
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 4))
    prune_nm_(net, scores={"0": torch.rand(4, 8)})
    assert hasattr(net[0], "weight_mask") and not hasattr(net[1], "weight_mask")
    groups = net[0].weight_mask.view(4, 2, 4).sum(-1)
    assert bool((groups == 2).all())
    with pytest.raises(ValueError, match="scores of shape"):
        nm_mask(w, scores=torch.zeros(2, 2))


def test_magnitude_scores_are_wandas_with_uniform_inputs():
    from mlcomp.prune import magnitude_scores, prune_by_scores_, wanda_scores

    net = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3))
    mags = magnitude_scores(net)
    assert sorted(mags) == ["0", "1"]
    torch.testing.assert_close(mags["0"], net[0].weight.abs())
    # one input with every feature 1 gives the first layer norms of 1: Wanda's
    # scores of that layer reduce to the magnitudes
    wanda = wanda_scores(net, [torch.ones(1, 6)])
    torch.testing.assert_close(wanda["0"], mags["0"])
    only_first = magnitude_scores(net, lambda m, n: n == "0")
    assert list(only_first) == ["0"]
    prune_by_scores_(net, only_first, 0.5, scope="row")
    assert net[0].weight_mask.sum(1).tolist() == [3, 3, 3, 3]
