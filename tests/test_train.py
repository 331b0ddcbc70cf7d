import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import nn
from torch.utils.data import Dataset

from mlcomp.train import batches, confusion_matrix, evaluate, fit, predict
from mlcomp.utils import set_seed


def blobs(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    return centers[y] + torch.randn(n, 2, generator=g), y


class ListDataset(Dataset):
    """A plain map-style dataset, to exercise the DataLoader path."""

    def __init__(self, X, y):
        self.items = list(zip(X, y, strict=True))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def make_net():
    set_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def test_fit_learns_separable_blobs():
    X, y = blobs()
    net = make_net()
    losses = fit(net, (X, y), epochs=10, lr=1e-2, batch_size=32, progress=False)
    assert len(losses) == 10 and losses[-1] < 0.3 * losses[0]
    assert evaluate(net, blobs(seed=1)) > 0.97
    assert not net.training


def test_fit_is_deterministic_and_seed_sensitive():
    X, y = blobs()
    runs = []
    for seed in (0, 0, 1):
        net = make_net()
        fit(net, (X, y), epochs=2, lr=1e-2, batch_size=32, seed=seed, progress=False)
        runs.append(torch.cat([p.flatten() for p in net.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_bf16_autocast_trains_with_fp32_master_weights():
    X, y = blobs()
    net, reference = make_net(), make_net()
    fit(net, (X, y), epochs=5, lr=1e-2, batch_size=32, progress=False,
        autocast=torch.bfloat16)  # fmt: skip
    fit(reference, (X, y), epochs=5, lr=1e-2, batch_size=32, progress=False)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert evaluate(net, blobs(seed=1)) > 0.97
    # bf16 rounding changes the trajectory: the weights differ, but not by much
    a, b = (torch.cat([p.flatten() for p in m.parameters()]) for m in (net, reference))
    assert not torch.equal(a, b) and (a - b).norm() < 0.2 * b.norm()


def test_tensor_and_dataloader_paths_agree_without_shuffle():
    X, y = blobs(100)
    fast = [yb for _, yb in batches((X, y), 32)]
    slow = [yb for _, yb in batches(ListDataset(X, y), 32)]
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))
    net = make_net()
    assert evaluate(net, (X, y)) == evaluate(net, ListDataset(X, y))


def test_shuffle_is_a_permutation():
    X, y = torch.arange(50.0).unsqueeze(1), torch.arange(50)
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([yb for _, yb in batches((X, y), 7, shuffle=True, generator=g)])
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))


def test_cosine_schedule_ends_at_zero_and_on_step_counts():
    X, y = blobs(64)
    net, steps = make_net(), []
    fit(net, (X, y), epochs=3, lr=0.1, batch_size=16, optimizer="sgd",
        on_step=steps.append, progress=False)  # fmt: skip
    assert steps == list(range(1, 13))


def test_evaluate_matches_manual_accuracy():
    X, y = blobs(200)
    net = make_net()
    manual = (net(X).argmax(1) == y).float().mean().item()
    assert evaluate(net, (X, y), batch_size=7) == pytest.approx(manual)
    assert torch.equal(predict(net, (X, y), batch_size=13), net(X).argmax(1))


def test_confusion_matrix_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    t, p = (
        torch.randint(0, 5, (500,), generator=g),
        torch.randint(0, 5, (500,), generator=g),
    )
    ours = confusion_matrix(t, p, 5).numpy()
    assert (ours == sk_confusion_matrix(t, p, labels=range(5))).all()
    assert ours.sum() == 500


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 1, "lr": 0}, "lr"),
        ({"epochs": 1, "optimizer": "rmsprop"}, "optimizer"),
        ({"epochs": 1, "schedule": "step"}, "schedule"),
        ({"epochs": 1, "batch_size": 0}, "batch_size"),
        ({"epochs": 1, "autocast": torch.float16}, "autocast"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(make_net(), blobs(10), progress=False, **kwargs)


def test_bad_data_and_labels_are_rejected():
    with pytest.raises(ValueError, match="equal length"):
        evaluate(make_net(), (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ValueError, match="labels must lie"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="1-D"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 2), 3)


def test_scan_layers_changes_one_layer_at_a_time_on_copies():
    from mlcomp.train import scan_layers

    X, y = blobs(200)
    net = make_net()
    fit(net, (X, y), epochs=5, lr=1e-2, batch_size=32, progress=False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []

    def zero_out(trial, name, keep):
        seen.append((name, sum(p.abs().sum().item() for p in trial.parameters())))
        if not keep:
            trial.get_submodule(name).weight.data.zero_()

    result = scan_layers(net, (X, y), ["0", "2"], [True, False], zero_out)
    assert result["0"][True] == result["2"][True] == evaluate(net, (X, y))
    assert result["0"][False] < result["0"][True]
    # every trial started from the untouched model
    assert len({round(total, 6) for _, total in seen}) == 1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
