"""Knowledge distillation: soft targets, temperature, and hints.

A large *teacher* network's output distribution says more than its top
label: that a shirt looks a little like a T-shirt and not at all like a
boot. Hinton, Vinyals & Dean (2015) train a small *student* to match the
teacher's distribution softened by a temperature ``T``,

    p_i = softmax(v / T)_i   (teacher),   q_i = softmax(z / T)_i   (student),

with the loss

    alpha * T^2 * KL(p || q) + (1 - alpha) * cross_entropy(z, labels).

The gradient of ``KL(p || q)`` with respect to a student logit is
``(q_i - p_i) / T``, so the soft term's gradients shrink as ``1 / T^2`` for
large ``T`` (they tend to ``(z_i - v_i) / (N T^2)`` for zero-mean logits);
multiplying by ``T^2`` keeps the two terms' relative weight independent of
the temperature.

FitNets (Romero et al. 2015) add *hints*: an intermediate feature of the
student, mapped by a small learned regressor, is trained to match a
teacher feature in mean squared error.

* :func:`soft_targets`, :func:`kd_loss`, :func:`hint_loss`
* :class:`FeatureTap` — capture named modules' outputs with forward hooks
* :class:`HintRegressor` — 1x1 convolution (or linear map) between feature
  shapes
* :func:`distill` — :func:`mlcomp.train.fit` with the distillation loss:
  teacher frozen in eval mode, its
  logits computed once when the data is a pair of tensors and no hint is
  used (the teacher is deterministic, so this changes nothing but time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from mlcomp import train

__all__ = [
    "soft_targets",
    "kd_loss",
    "FeatureTap",
    "HintRegressor",
    "hint_loss",
    "Hint",
    "distill",
]


def _check_temperature(T: float) -> None:
    if not (isinstance(T, int | float) and math.isfinite(T) and T > 0):
        raise ValueError(f"temperature T must be a positive number, got {T!r}")


def soft_targets(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension.

    >>> [round(p, 3) for p in soft_targets(torch.tensor([2.0, 0.0]), T=1.0).tolist()]
    [0.881, 0.119]
    >>> [round(p, 3) for p in soft_targets(torch.tensor([2.0, 0.0]), T=4.0).tolist()]
    [0.622, 0.378]
    """
    _check_temperature(T)
    return torch.softmax(logits / T, dim=-1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None,
    T: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss, averaged over the batch.

    ``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T))
    + (1 - alpha) * cross_entropy(student, targets)``; with ``alpha = 1``
    the labels are not used and ``targets`` may be None.

    >>> z = torch.tensor([[1.0, 0.0, -1.0]])
    >>> float(kd_loss(z, z, torch.tensor([0]), alpha=1.0))  # same logits: no loss
    0.0
    """
    _check_temperature(T)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            "student and teacher logits must both be (batch, classes); got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    soft = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits.detach() / T, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    loss = alpha * T * T * soft
    if alpha < 1.0:
        if targets is None:
            raise ValueError("targets are needed when alpha < 1")
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


class FeatureTap:
    """Records the outputs of named submodules on every forward pass.

    Use as a context manager, or call :meth:`remove` when done.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> with FeatureTap(net, ["1"]) as tap:
    ...     _ = net(torch.ones(5, 3))
    ...     tuple(tap.features["1"].shape)
    (5, 4)
    """

    def __init__(self, model: nn.Module, names: Iterable[str]):
        modules = dict(model.named_modules())
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in names:
            if name not in modules:
                raise KeyError(
                    f"no module named {name!r}; choose from {[n for n in modules if n]}"
                )
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(module, inputs, output):
            self.features[name] = output

        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class HintRegressor(nn.Module):
    """Maps a student feature to a teacher feature's channels (FitNets' regressor).

    A 1x1 convolution for (N, C, H, W) features with equal H, W; a linear
    map for (N, C) features.

    >>> r = HintRegressor((16, 8, 8), (50, 8, 8))
    >>> r(torch.zeros(2, 16, 8, 8)).shape
    torch.Size([2, 50, 8, 8])
    """

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__()
        student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
        if len(student_shape) == 3 and len(teacher_shape) == 3:
            if student_shape[1:] != teacher_shape[1:]:
                raise ValueError(
                    "hint features must have the same spatial size, got "
                    f"{student_shape} and {teacher_shape}"
                )
            self.map = nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)
        elif len(student_shape) == 1 and len(teacher_shape) == 1:
            self.map = nn.Linear(student_shape[0], teacher_shape[0])
        else:
            raise ValueError(
                "features must be both (C,) or both (C, H, W) per example, got "
                f"{student_shape} and {teacher_shape}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.map(x)


def hint_loss(
    student_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    regressor: nn.Module,
) -> torch.Tensor:
    """Mean squared error between ``regressor(student_feature)`` and the teacher's.

    >>> r = HintRegressor((4,), (4,))
    >>> with torch.no_grad():
    ...     _ = r.map.weight.copy_(torch.eye(4)), r.map.bias.zero_()
    >>> hint_loss(torch.ones(2, 4), torch.ones(2, 4), r).item()
    0.0
    """
    mapped = regressor(student_feature)
    if mapped.shape != teacher_feature.shape:
        raise ValueError(
            f"the regressor gives {tuple(mapped.shape)} but the teacher feature is "
            f"{tuple(teacher_feature.shape)}"
        )
    return F.mse_loss(mapped, teacher_feature.detach())


class Hint:
    """A hint: student module ``student``, teacher module ``teacher``, weight ``beta``.

    The regressor is built on first use from the two features' shapes (or
    given), and trained with the student.

    >>> Hint("conv2", "conv2", beta=0.5).beta
    0.5
    """

    def __init__(
        self,
        student: str,
        teacher: str,
        beta: float = 1.0,
        regressor: nn.Module | None = None,
    ):
        if not beta >= 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.student, self.teacher, self.beta = student, teacher, beta
        self.regressor = regressor


def _teacher_logits(teacher: nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([teacher(X[i : i + 1000]) for i in range(0, len(X), 1000)])


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    lr: float = 1e-3,
    *,
    T: float = 4.0,
    alpha: float = 0.9,
    hint: Hint | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``student`` in place to imitate ``teacher``; returns epoch mean losses.

    ``data`` is a pair ``(X, y)`` of tensors. The teacher is put in eval mode
    and never updated. The loss is :func:`kd_loss` plus, with a ``hint``,
    ``hint.beta`` times :func:`hint_loss` (whose regressor trains with the
    student). The loop is :func:`mlcomp.train.fit` (Adam, cosine decay)
    with this loss, so for the same ``seed`` a distilled student and one
    trained on labels see the same batches.

    >>> _ = torch.manual_seed(0)  # the layers' initial weights
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(256, 4, generator=g); y = (X[:, 0] > 0).long()
    >>> teacher = nn.Linear(4, 2)
    >>> _ = train.fit(teacher, (X, y), epochs=20, lr=0.05, progress=False)
    >>> student = nn.Linear(4, 2)
    >>> losses = distill(student, teacher, (X, y), epochs=30, lr=0.05, batch_size=64,
    ...                  progress=False)
    >>> train.evaluate(student, (X, y)) > 0.9
    True
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError("data must be a pair (X, y) of tensors")
    X, y = data
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} examples but y has {len(y)}")
    _check_temperature(T)
    teacher.eval()  # frozen: only ever run under no_grad, never optimized
    cached = _teacher_logits(teacher, X) if hint is None else None
    student_tap = teacher_tap = None
    extra: list[nn.Parameter] = []
    if hint is not None:
        student_tap = FeatureTap(student, [hint.student])
        teacher_tap = FeatureTap(teacher, [hint.teacher])
        if hint.regressor is None:
            with torch.no_grad():
                student.eval()
                student(X[:2])
                teacher(X[:2])
            hint.regressor = HintRegressor(
                student_tap.features[hint.student].shape[1:],
                teacher_tap.features[hint.teacher].shape[1:],
            )
        extra = list(hint.regressor.parameters())

    def loss_fn(student_logits: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
        # ib: the indices of this batch's examples in X
        if cached is not None:
            teacher_logits = cached[ib]
        else:
            with torch.no_grad():
                teacher_logits = teacher(X[ib])
        loss = kd_loss(student_logits, teacher_logits, y[ib], T, alpha)
        if hint is not None:
            loss = loss + hint.beta * hint_loss(
                student_tap.features[hint.student],
                teacher_tap.features[hint.teacher],
                hint.regressor,
            )
        return loss

    try:
        # train.fit batches (X, index) exactly as it batches (X, y) for the
        # same seed, so distilled and label-trained students see the same data.
        history = train.fit(
            student,
            (X, torch.arange(len(X))),
            epochs,
            lr,
            batch_size=batch_size,
            seed=seed,
            loss_fn=loss_fn,
            progress=progress,
            extra_params=extra,
        )
    finally:
        for tap in (student_tap, teacher_tap):
            if tap is not None:
                tap.remove()
    return history
