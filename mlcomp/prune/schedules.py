"""Pruning while training: the gradual schedule and lottery tickets.

* :func:`agp_schedule` — Zhu & Gupta's (2017) cubic sparsity schedule, and
  :func:`gradual_prune`, which follows it while training.
* :func:`rewind_` and :func:`iterative_prune` — iterative magnitude pruning
  with rewinding (Frankle & Carbin 2019).

Like :func:`mlcomp.train.fit`, the two training loops change the model they
are given and return what they measured; the verbs with a trailing ``_``
change the model and return it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mlcomp import train
from mlcomp.layers import FilterFn
from mlcomp.prune.masks import _refresh, magnitude_, sparsity

__all__ = ["agp_schedule", "gradual_prune", "rewind_", "iterative_prune"]


def agp_schedule(
    initial: float, final: float, start_step: int, end_step: int, every: int = 1
) -> Callable[[int], float]:
    """Zhu & Gupta's cubic sparsity schedule as a function of the training step.

    ``s(t) = final + (initial - final) * (1 - (t - start) / (end - start))**3``
    for ``start <= t <= end``, with ``t`` rounded down to a multiple of
    ``every`` past ``start``; ``initial`` before and ``final`` after. Pruning
    is fast early, while the network can still recover, and slow near the end.

    >>> s = agp_schedule(0.0, 0.9, start_step=0, end_step=100, every=10)
    >>> [round(s(t), 4) for t in (0, 9, 10, 50, 100, 200)]
    [0.0, 0.0, 0.2439, 0.7875, 0.9, 0.9]
    """
    if not (0 <= initial <= final <= 1):
        raise ValueError(f"need 0 <= initial <= final <= 1, got {initial}, {final}")
    if not (0 <= start_step < end_step) or every < 1:
        raise ValueError("need 0 <= start_step < end_step and every >= 1")

    def schedule(step: int) -> float:
        if step < start_step:
            return initial
        if step >= end_step:
            return final
        t = start_step + (step - start_step) // every * every
        progress = (t - start_step) / (end_step - start_step)
        # = final + (initial - final)(1 - progress)^3, exact at both ends
        return initial + (final - initial) * (1 - (1 - progress) ** 3)

    return schedule


def gradual_prune(
    model: nn.Module,
    data: train.Data,
    final: float,
    epochs: int,
    lr: float = 1e-3,
    *,
    initial: float = 0.0,
    prune_epochs: float | None = None,
    every: int = 50,
    scope: str = "layer",
    filter_fn: FilterFn | None = None,
    **fit_kwargs,
) -> list[float]:
    """Prune while training: sparsity follows :func:`agp_schedule`.

    Sparsity rises from ``initial`` to ``final`` over the first
    ``prune_epochs`` (default: two thirds of ``epochs``), updated every
    ``every`` optimizer steps by :func:`magnitude_`; the remaining epochs
    fine-tune at the final sparsity. Other keyword arguments go to
    :func:`mlcomp.train.fit`. Like ``fit``, it trains ``model`` in place and
    returns the loss history.

    >>> X, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    >>> net = nn.Sequential(nn.Linear(8, 2))
    >>> _ = gradual_prune(net, (X, y), 0.75, epochs=3, every=1, batch_size=16,
    ...                   progress=False)
    >>> sparsity(net)["total"]
    0.75
    """
    batch_size = fit_kwargs.get("batch_size", train.BATCH_SIZE)
    steps_per_epoch = train.steps_per_epoch(data, batch_size)
    prune_epochs = 2 * epochs / 3 if prune_epochs is None else prune_epochs
    end = max(1, round(prune_epochs * steps_per_epoch))
    schedule = agp_schedule(initial, final, 0, end, every)
    magnitude_(model, initial, scope, filter_fn)

    def on_step(step: int) -> None:
        if step <= end and (step % every == 0 or step == end):
            magnitude_(model, schedule(step), scope, filter_fn)

    return train.fit(model, data, epochs, lr, on_step=on_step, **fit_kwargs)


def rewind_(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Reset the weights to ``state`` (an earlier ``state_dict``) and keep the masks.

    The lottery-ticket step (Frankle & Carbin 2019): after training and
    pruning, the surviving weights go back to their values at initialization
    (or at an early step), and the sparse network is trained again.

    >>> net = nn.Sequential(nn.Linear(4, 2))
    >>> init = {k: v.clone() for k, v in net.state_dict().items()}
    >>> _ = magnitude_(net, 0.5)
    >>> with torch.no_grad(): _ = net[0].weight_orig.add_(1.0)
    >>> _ = rewind_(net, init)
    >>> torch.equal(net[0].weight, init["0.weight"] * net[0].weight_mask)
    True
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            for pname, param in module.named_parameters(recurse=False):
                key = f"{name}.{pname}" if name else pname
                key = key.removesuffix("_orig")
                if key not in state:
                    raise KeyError(f"{key} is missing from the rewind state")
                param.copy_(state[key])
            if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
                _refresh(module)
    return model


def iterative_prune(
    model: nn.Module,
    data: train.Data,
    final: float,
    rounds: int,
    epochs: int,
    lr: float = 1e-3,
    *,
    rewind_state: dict[str, torch.Tensor] | None = None,
    trained: bool = False,
    scope: str = "global",
    filter_fn: FilterFn | None = None,
    on_round: Callable[[float, nn.Module], None] | None = None,
    **fit_kwargs,
) -> list[float]:
    """Iterative magnitude pruning with rewinding (lottery tickets).

    Frankle & Carbin (2019): train; prune the same fraction
    ``p = 1 - ((1 - final) / (1 - s0)) ** (1 / rounds)`` of the surviving
    weights by magnitude; rewind the survivors to ``rewind_state`` (default:
    the weights at the call, θ0); repeat ``rounds`` times, then train the
    final sparse network. Each training runs ``epochs`` epochs of
    :func:`mlcomp.train.fit` (other keyword arguments go to it), so the model
    is trained ``rounds + 1`` times. ``on_round(sparsity, model)`` is called
    after every training. Like ``fit``, it trains ``model`` in place; it
    returns the sparsities trained at,
    ``[s0, s1, ..., final]`` (``s0``: the sparsity on entry, usually 0).
    ``trained=True`` says the model on entry has already had its first
    training, from ``rewind_state`` with the same settings, so that training
    is skipped (it would give the same weights again); ``rewind_state`` is
    then required, since the weights at the call are no longer θ0.

    >>> X, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> levels = iterative_prune(net, (X, y), 0.875, rounds=3, epochs=1,
    ...                          batch_size=16, progress=False)
    >>> [round(s, 3) for s in levels]
    [0.0, 0.5, 0.75, 0.875]
    >>> sparsity(net)["total"]
    0.875
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    start = sparsity(model, filter_fn)["total"]
    if not start < final < 1:
        raise ValueError(
            f"final sparsity must lie in ({start:g}, 1) (the sparsity on entry is "
            f"{start:g}), got {final!r}"
        )
    if trained and rewind_state is None:
        raise ValueError("trained=True needs the rewind_state it was trained from")
    if rewind_state is None:
        rewind_state = {
            key.removesuffix("_orig"): value.detach().clone()
            for key, value in model.state_dict().items()
            if not key.endswith("_mask")
        }
    keep = ((1 - final) / (1 - start)) ** (1 / rounds)  # per round, of survivors
    levels = [start]
    for k in range(rounds + 1):
        if k > 0 or not trained:
            train.fit(model, data, epochs, lr, **fit_kwargs)
        if on_round is not None:
            on_round(levels[-1], model)
        if k == rounds:
            break
        target = final if k == rounds - 1 else 1 - (1 - start) * keep ** (k + 1)
        magnitude_(model, target, scope, filter_fn)
        rewind_(model, rewind_state)
        levels.append(target)
    return levels
