"""A small, deterministic training loop and the evaluation helpers.

``data`` arguments accept a ``(X, y)`` pair of tensors, a
:class:`~torch.utils.data.TensorDataset` (such as
:class:`mlcomp.datasets.FashionMNIST`), which are batched by slicing the
tensors (fast), or any map-style dataset, batched by a ``DataLoader``.
Shuffling draws from a generator seeded by ``seed``, so the same call gives
the same weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

__all__ = [
    "Data",
    "BATCH_SIZE",
    "batches",
    "steps_per_epoch",
    "fit",
    "predict",
    "evaluate",
    "confusion_matrix",
    "scan_layers",
]

Data = Dataset | tuple[torch.Tensor, torch.Tensor]
"""What every ``data`` argument accepts: an ``(X, y)`` pair or a dataset."""

BATCH_SIZE = 128
"""The training batch size of :func:`fit` unless one is given."""


def _tensors(data: Data) -> tuple[torch.Tensor, torch.Tensor] | None:
    if isinstance(data, tuple):
        if len(data) != 2 or len(data[0]) != len(data[1]):
            raise ValueError("data must be a pair (X, y) of tensors of equal length")
        return data
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors
    return None


def batches(
    data: Data,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches; the last one may be smaller.

    >>> X, y = torch.arange(10.).unsqueeze(1), torch.arange(10)
    >>> [len(yb) for _, yb in batches((X, y), 4)]
    [4, 4, 2]
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    tensors = _tensors(data)
    if tensors is None:
        loader = DataLoader(
            data, batch_size=batch_size, shuffle=shuffle, generator=generator
        )
        yield from loader
        return
    X, y = tensors
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield X[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield X[idx], y[idx]


def steps_per_epoch(data: Data, batch_size: int = BATCH_SIZE) -> int:
    """Number of batches (optimizer steps) in one pass over ``data``.

    >>> steps_per_epoch((torch.zeros(300, 2), torch.zeros(300)), 128)
    3
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return math.ceil(len(data[1] if isinstance(data, tuple) else data) / batch_size)


def fit(
    model: nn.Module,
    train_data: Data,
    epochs: int,
    lr: float = 1e-3,
    *,
    batch_size: int = BATCH_SIZE,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    autocast: torch.dtype | None = None,
    extra_params: Iterable[nn.Parameter] = (),
) -> list[float]:
    """Train ``model`` in place and return the mean training loss of each epoch.

    ``optimizer`` is ``"adam"`` or ``"sgd"`` (momentum 0.9); ``schedule`` is
    ``"cosine"`` (decay to zero over all steps) or ``"constant"``. ``on_step``
    is called with the global step number after every optimizer step (later
    chapters use it to re-apply pruning masks or advance a sparsity schedule).
    ``autocast`` (e.g. ``torch.bfloat16``) runs the forward pass and loss
    under ``torch.autocast("cpu", dtype=autocast)``: mixed precision, with the
    weights and the optimizer state kept in fp32 (the "master weights").
    bfloat16 has fp32's exponent range, so no loss scaling is needed; float16
    would need it and is refused here. ``extra_params`` are optimized along
    with the model's own (e.g. a distillation hint's regressor).

    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(256, 2, generator=g); y = (X[:, 0] > 0).long()
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> losses = fit(net, (X, y), epochs=20, lr=0.1, batch_size=64, progress=False)
    >>> losses[-1] < losses[0], evaluate(net, (X, y)) > 0.95
    (True, True)
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    params = [*model.parameters(), *extra_params]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    n_steps = steps_per_epoch(train_data, batch_size)
    total = max(1, epochs * n_steps)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
    elif schedule == "constant":
        sched = None
    else:
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if autocast not in (None, torch.bfloat16):
        raise ValueError(f"autocast must be None or torch.bfloat16, got {autocast}")
    loss_fn = loss_fn or nn.functional.cross_entropy
    generator = torch.Generator().manual_seed(seed)
    history, step = [], 0
    model.train()
    for epoch in range(epochs):
        total_loss, seen = 0.0, 0
        bar = tqdm(
            batches(train_data, batch_size, shuffle=True, generator=generator),
            total=n_steps,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
            mininterval=1.0,  # keeps logs short when stderr is not a terminal
        )
        for xb, yb in bar:
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16,
                                enabled=autocast is not None):  # fmt: skip
                loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if on_step is not None:
                on_step(step)
            total_loss += loss.item() * len(yb)
            seen += len(yb)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        history.append(total_loss / max(seen, 1))
    model.eval()
    return history


@torch.inference_mode()
def predict(model: nn.Module, data: Data, batch_size: int = 1000) -> torch.Tensor:
    """Predicted class (argmax of the logits) for every example, in order.

    >>> net = nn.Linear(2, 3)
    >>> predict(net, (torch.zeros(5, 2), torch.zeros(5, dtype=torch.long))).shape
    torch.Size([5])
    """
    was_training = model.training
    model.eval()
    preds = [model(xb).argmax(dim=1) for xb, _ in batches(data, batch_size)]
    model.train(was_training)
    return torch.cat(preds)


def _labels(data: Data) -> torch.Tensor:
    tensors = _tensors(data)
    if tensors is not None:
        return tensors[1]
    return torch.cat([yb for _, yb in batches(data, 1000)])


def evaluate(model: nn.Module, data: Data, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data``, a fraction in [0, 1].

    >>> net = nn.Linear(2, 2)
    >>> X, y = torch.randn(8, 2), torch.zeros(8, dtype=torch.long)
    >>> 0.0 <= evaluate(net, (X, y)) <= 1.0
    True
    """
    y = _labels(data)
    return (predict(model, data, batch_size) == y).float().mean().item()


def confusion_matrix(
    y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts ``C[i, j]`` of examples of true class ``i`` predicted as ``j``.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
    tensor([[1, 0],
            [1, 1]])
    """
    y_true, y_pred = torch.as_tensor(y_true), torch.as_tensor(y_pred)
    if y_true.shape != y_pred.shape or y_true.dim() != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D of equal length, got "
            f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}"
        )
    if len(y_true):
        lo = min(y_true.min(), y_pred.min())
        hi = max(y_true.max(), y_pred.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}), found {int(lo)}..{int(hi)}"
            )
    flat = y_true.long() * num_classes + y_pred.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def scan_layers(
    model: nn.Module,
    data: Data,
    layers: Iterable[str],
    values: Iterable,
    apply: Callable[[nn.Module, str, object], object],
) -> dict[str, dict]:
    """Accuracy on ``data`` when each layer alone is changed, for every value.

    For each layer name and value, ``apply(trial, name, value)`` changes a
    deep copy of ``model`` in place; the result is ``{layer: {value:
    accuracy}}`` and ``model`` is left untouched. Pruning and quantization
    sensitivity scans are both this loop.

    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> X, y = torch.randn(8, 2), torch.zeros(8, dtype=torch.long)
    >>> def scale(m, name, v):
    ...     m.get_submodule(name).weight.data *= v
    >>> list(scan_layers(net, (X, y), ["0"], [1.0, 0.0], scale)["0"])
    [1.0, 0.0]
    """
    values = list(values)
    result: dict[str, dict] = {}
    for name in layers:
        result[name] = {}
        for value in values:
            trial = copy.deepcopy(model)
            apply(trial, name, value)
            result[name][value] = evaluate(trial, data)
    return result
