"""Tests of mlcomp.distill against independent formulas and autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlcomp import distill, train
from mlcomp.models import SmallCNN

GEN = torch.Generator().manual_seed(0)


def independent_kd(z, v, y, T, alpha):
    """The loss written out with explicit sums (no torch.nn.functional)."""
    p = torch.exp(v / T) / torch.exp(v / T).sum(1, keepdim=True)
    log_q = z / T - torch.logsumexp(z / T, dim=1, keepdim=True)
    kl = (p * (torch.log(p) - log_q)).sum(1).mean()
    log_softmax = z - torch.logsumexp(z, dim=1, keepdim=True)
    ce = -log_softmax[torch.arange(len(y)), y].mean()
    return alpha * T * T * kl + (1 - alpha) * ce


@pytest.mark.parametrize("T, alpha", [(1.0, 0.5), (4.0, 0.9), (20.0, 1.0), (2.0, 0.0)])
def test_kd_loss_matches_an_independent_formula(T, alpha):
    z = torch.randn(16, 10, generator=GEN, dtype=torch.float64)
    v = torch.randn(16, 10, generator=GEN, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (16,), generator=GEN)
    ours = distill.kd_loss(z, v, y, T, alpha)
    assert float(ours) == pytest.approx(
        float(independent_kd(z, v, y, T, alpha)), rel=1e-10
    )


def test_soft_gradient_is_q_minus_p_over_T_and_t_squared_restores_it():
    z = torch.randn(1, 10, generator=GEN, dtype=torch.float64)
    v = torch.randn(1, 10, generator=GEN, dtype=torch.float64)
    v = v - v.mean()
    norms = {}
    for T in (1.0, 4.0, 16.0, 64.0):
        zz = z.clone().requires_grad_(True)
        # the soft term alone, without the T^2 factor
        (distill.kd_loss(zz, v, None, T, alpha=1.0) / (T * T)).backward()
        q, p = torch.softmax(z / T, 1), torch.softmax(v / T, 1)
        assert torch.allclose(zz.grad, (q - p) / T, atol=1e-12)
        norms[T] = float(zz.grad.norm())
    # without T^2 the gradient shrinks as 1/T^2 once T is large ...
    assert norms[16.0] / norms[64.0] == pytest.approx(16.0, rel=0.05)
    # ... and tends to (z - v) / (N T^2) for zero-mean logits
    zc = z - z.mean()
    T = 64.0
    limit = (zc - v) / (10 * T * T)
    zz = z.clone().requires_grad_(True)
    (distill.kd_loss(zz, v, None, T, alpha=1.0) / (T * T)).backward()
    assert float((zz.grad - limit).norm() / limit.norm()) < 0.03
    # with T^2 (the real loss) the gradient stays of the same order
    scaled = {}
    for T in (16.0, 64.0):
        zz = z.clone().requires_grad_(True)
        distill.kd_loss(zz, v, None, T, alpha=1.0).backward()
        scaled[T] = float(zz.grad.norm())
    assert scaled[16.0] / scaled[64.0] == pytest.approx(1.0, rel=0.05)


def test_kd_loss_rejects_bad_arguments():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_loss(z, z, None, T=0.0, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        distill.kd_loss(z, z, None, alpha=1.5)
    with pytest.raises(ValueError, match="targets are needed"):
        distill.kd_loss(z, z, None, alpha=0.5)
    with pytest.raises(ValueError, match="batch, classes"):
        distill.kd_loss(z, torch.zeros(2, 4), None, alpha=1.0)


def test_feature_tap_and_hint_regressor():
    net = SmallCNN()
    with distill.FeatureTap(net, ["conv2"]) as tap:
        net(torch.zeros(3, 1, 28, 28))
        assert tap.features["conv2"].shape == (3, 16, 8, 8)
    assert not net.conv2._forward_hooks
    with pytest.raises(KeyError, match="no module named 'conv9'"):
        distill.FeatureTap(net, ["conv9"])
    r = distill.HintRegressor((16, 8, 8), (50, 8, 8))
    assert isinstance(r.map, nn.Conv2d) and r.map.kernel_size == (1, 1)
    with pytest.raises(ValueError, match="same spatial size"):
        distill.HintRegressor((16, 8, 8), (50, 4, 4))
    with pytest.raises(ValueError, match="both"):
        distill.HintRegressor((16,), (50, 8, 8))
    with pytest.raises(ValueError, match="regressor gives"):
        distill.hint_loss(torch.zeros(2, 16, 8, 8), torch.zeros(2, 40, 8, 8), r)


def blobs(n=1000):
    X = torch.randn(n, 1, 28, 28, generator=GEN) * 0.1
    y = torch.randint(0, 10, (n,), generator=GEN)
    for c in range(10):  # the class is a bright horizontal bar at rows 4+2c, 5+2c
        X[y == c, 0, 4 + 2 * c : 6 + 2 * c, 4:24] += 1.0
    return X, y


def test_distill_is_deterministic_and_leaves_the_teacher_alone():
    X, y = blobs(512)
    teacher = SmallCNN()
    train.fit(teacher, (X, y), epochs=3, lr=3e-3, progress=False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        student = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        distill.distill(student, teacher, (X, y), epochs=2, lr=3e-3, progress=False)
        runs.append(student[1].weight.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())


def test_distilled_student_imitates_the_teacher():
    X, y = blobs(1000)
    teacher = SmallCNN()
    train.fit(teacher, (X, y), epochs=5, lr=3e-3, progress=False)
    assert train.evaluate(teacher, (X, y)) > 0.95
    student = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    losses = distill.distill(
        student, teacher, (X, y), epochs=5, lr=3e-3, progress=False
    )
    assert losses[-1] < losses[0]
    agree = (train.predict(student, (X, y)) == train.predict(teacher, (X, y))).float()
    assert float(agree.mean()) > 0.9


def test_hints_train_the_regressor_and_pull_features_together():
    X, y = blobs(512)
    teacher = SmallCNN(c1=8, c2=24)
    train.fit(teacher, (X, y), epochs=2, lr=3e-3, progress=False)
    torch.manual_seed(0)
    student = SmallCNN(c1=4, c2=8)
    regressor = distill.HintRegressor((8, 8, 8), (24, 8, 8))

    def current_hint_loss():
        with (
            distill.FeatureTap(student, ["conv2"]) as s,
            distill.FeatureTap(teacher, ["conv2"]) as t,
            torch.no_grad(),
        ):
            student(X[:64]), teacher(X[:64])
            return distill.hint_loss(
                s.features["conv2"], t.features["conv2"], regressor
            )

    before = current_hint_loss()
    hint = distill.Hint("conv2", "conv2", beta=1.0, regressor=regressor)
    distill.distill(
        student, teacher, (X, y), epochs=3, lr=3e-3, hint=hint, progress=False
    )
    assert current_hint_loss() < 0.8 * before
    assert not student.conv2._forward_hooks and not teacher.conv2._forward_hooks
    auto = distill.Hint("conv2", "conv2")
    distill.distill(SmallCNN(c1=4, c2=8), teacher, (X, y), epochs=1, hint=auto,
                    progress=False)  # fmt: skip
    assert isinstance(auto.regressor, distill.HintRegressor)


def test_distill_rejects_bad_data():
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    with pytest.raises(TypeError, match="pair"):
        distill.distill(student, teacher, [torch.zeros(4, 3)], epochs=1)
    with pytest.raises(ValueError, match="examples"):
        distill.distill(student, teacher, (torch.zeros(4, 3), torch.zeros(3)), epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        distill.distill(
            student, teacher, (torch.zeros(4, 3), torch.zeros(4)), epochs=-1
        )
    assert math.isfinite(
        distill.distill(
            student,
            teacher,
            (torch.zeros(4, 3), torch.zeros(4).long()),
            epochs=1,
            progress=False,
        )[0]  # fmt: skip
    )
