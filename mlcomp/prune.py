"""Unstructured pruning: criteria, masks, schedules and sparse storage sizes.

Masks are kept the way :mod:`torch.nn.utils.prune` keeps them (a parameter
``weight_orig``, a buffer ``weight_mask`` and a forward pre-hook that sets
``weight = weight_orig * weight_mask``), so a model pruned here reads, trains
and un-prunes (:func:`remove_`) exactly like one pruned by PyTorch.

* Criteria: magnitude ``|w|`` (Han et al. 2015), first-order Taylor
  ``|w * mean gradient|`` and SNIP's connection sensitivity (Lee et al. 2019).
* Scope: ``"layer"`` (the same fraction of every layer) or ``"global"`` (one
  threshold for all layers).
* ``amount`` is the *total* fraction (float in [0, 1]) or count (int) of each
  scope's weights that are zero afterwards; already-pruned weights count, so
  calling again with a larger amount prunes further (gradual pruning).
* The gradual schedule of Zhu & Gupta (2017) and N:M masks.
* Exact byte counts of sparse formats: CSR, bitmask, and Deep Compression's
  relative indices with filler zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mlcomp import train

__all__ = [
    "prunable",
    "magnitude_mask",
    "magnitude_",
    "prune_by_scores_",
    "taylor_scores",
    "snip_scores",
    "sparsity",
    "remove_",
    "sensitivity_scan",
    "agp_schedule",
    "gradual_prune_",
    "rewind_",
    "iterative_prune_",
    "nm_mask",
    "csr_bytes",
    "bitmask_bytes",
    "relative_indices",
    "relative_index_bytes",
]

FilterFn = Callable[[str, nn.Module], bool]


def prunable(
    model: nn.Module, filter_fn: FilterFn | None = None
) -> dict[str, nn.Module]:
    """The Linear and Conv2d layers of ``model`` that ``filter_fn`` accepts, by name.

    >>> from mlcomp.models import LeNet5
    >>> list(prunable(LeNet5(), lambda name, m: isinstance(m, nn.Linear)))
    ['fc1', 'fc2']
    """
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
        and (filter_fn is None or filter_fn(name, m))
    }


def _weight(module: nn.Module) -> torch.Tensor:
    """The dense, unmasked weight (``weight_orig`` once pruned)."""
    return getattr(module, "weight_orig", module.weight)


def _mask(module: nn.Module) -> torch.Tensor:
    mask = getattr(module, "weight_mask", None)
    return mask if mask is not None else torch.ones_like(module.weight)


def _count(amount: float | int, total: int) -> int:
    """Number of entries to be zero, validated like torch.nn.utils.prune's amount."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"amount must be a float in [0, 1] or an int, got {amount!r}")
    if isinstance(amount, int):
        if not 0 <= amount <= total:
            raise ValueError(f"amount={amount} is not a count in [0, {total}]")
        return amount
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount={amount} is not a fraction in [0, 1]")
    return round(amount * total)  # the same rounding as torch.nn.utils.prune


def _set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
        module.weight_mask.copy_(mask)
    else:
        torch_prune.custom_from_mask(module, "weight", mask)
    _refresh(module)


def _refresh(module: nn.Module) -> None:
    """Recompute ``weight`` from ``weight_orig`` and the mask, outside autograd.

    The forward pre-hook recomputes it (with gradients) before every forward
    pass; computing it here without a graph keeps the module copyable with
    :func:`copy.deepcopy` until then.
    """
    with torch.no_grad():
        module.weight = module.weight_orig * module.weight_mask


def _keep_largest(scores: torch.Tensor, n_zero: int) -> torch.Tensor:
    """0/1 mask zeroing the ``n_zero`` smallest scores."""
    mask = torch.ones(scores.numel(), dtype=torch.float32, device=scores.device)
    if n_zero > 0:
        mask[torch.topk(scores.flatten(), n_zero, largest=False).indices] = 0
    return mask.view_as(scores)


def magnitude_mask(weight: torch.Tensor, amount: float | int) -> torch.Tensor:
    """0/1 mask of ``weight``'s shape that zeroes its ``amount`` smallest ``|w|``.

    The pure-tensor core of :func:`magnitude_`.

    >>> magnitude_mask(torch.tensor([[0.5, -2.0], [0.1, 1.0]]), 0.5)
    tensor([[0., 1.],
            [0., 1.]])
    """
    return _keep_largest(weight.detach().abs(), _count(amount, weight.numel()))


def prune_by_scores_(
    model: nn.Module,
    scores: dict[str, torch.Tensor],
    amount: float | int,
    scope: str = "layer",
) -> nn.Module:
    """Zero the lowest-scoring weights of the layers named in ``scores``, in place.

    Weights that are already pruned stay pruned (their score is taken as -inf).

    >>> net = nn.Sequential(nn.Linear(4, 2))
    >>> scores = {"0": torch.arange(8.0).view(2, 4)}
    >>> prune_by_scores_(net, scores, amount=0.25)[0].weight_mask
    tensor([[0., 0., 1., 1.],
            [1., 1., 1., 1.]])
    """
    modules = dict(model.named_modules())
    missing = set(scores) - set(modules)
    if missing:
        raise KeyError(f"no layer named {sorted(missing)} in the model")
    masked = {}
    for name, score in scores.items():
        mask = _mask(modules[name])
        if score.shape != mask.shape:
            raise ValueError(
                f"{name}: scores of shape {tuple(score.shape)} for a "
                f"weight of shape {tuple(mask.shape)}"
            )
        masked[name] = score.detach().float().masked_fill(mask == 0, -math.inf)
    if scope == "layer":
        for name, score in masked.items():
            _set_mask(
                modules[name], _keep_largest(score, _count(amount, score.numel()))
            )
    elif scope == "global":
        flat = torch.cat([s.flatten() for s in masked.values()])
        mask = _keep_largest(flat, _count(amount, flat.numel()))
        start = 0
        for name, score in masked.items():
            n = score.numel()
            _set_mask(modules[name], mask[start : start + n].view_as(score))
            start += n
    else:
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    return model


def magnitude_(
    model: nn.Module,
    amount: float | int,
    scope: str = "layer",
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Magnitude pruning: zero the weights of smallest ``|w|``, in place.

    Applies to every Linear and Conv2d layer that ``filter_fn(name, module)``
    accepts; biases are never pruned. Afterwards ``module.weight`` reads as
    the masked weight, as with :func:`torch.nn.utils.prune.l1_unstructured`.

    >>> net = nn.Sequential(nn.Linear(4, 1))
    >>> w = torch.tensor([[0.1, -3.0, 0.2, 2.0]])
    >>> with torch.no_grad(): _ = net[0].weight.copy_(w)
    >>> magnitude_(net, amount=0.5)[0].weight
    tensor([[ 0., -3.,  0.,  2.]])
    """
    layers = prunable(model, filter_fn)
    scores = {name: _weight(m).detach().abs() for name, m in layers.items()}
    return prune_by_scores_(model, scores, amount, scope)


def _gradients(model, data, batches, loss_fn):
    layers = prunable(model)
    grads = {name: torch.zeros_like(_weight(m)) for name, m in layers.items()}
    was_training = model.training
    model.eval()
    n = 0
    for n, (xb, yb) in enumerate(data, start=1):
        model.zero_grad(set_to_none=True)
        (loss_fn or nn.functional.cross_entropy)(model(xb), yb).backward()
        for name, m in layers.items():
            grads[name] += _weight(m).grad.detach()
        if n == batches:
            break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if n == 0:
        raise ValueError("data yielded no batch")
    return layers, {name: g / n for name, g in grads.items()}


def taylor_scores(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    batches: int = 8,
    loss_fn=None,
) -> dict[str, torch.Tensor]:
    """First-order Taylor saliency ``|w * dL/dw|``, the gradient averaged over batches.

    Removing ``w`` changes the loss by about ``-w * dL/dw``; the absolute
    value of this estimate ranks weights by how little their removal costs.

    >>> from mlcomp.train import batches as make_batches
    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> taylor_scores(net, make_batches((X, y), 8))["0"].shape
    torch.Size([2, 3])
    """
    layers, grads = _gradients(model, data, batches, loss_fn)
    return {
        name: (_weight(m).detach() * grads[name]).abs() for name, m in layers.items()
    }


def snip_scores(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    batches: int = 1,
    loss_fn=None,
) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity: ``|w * dL/dw|`` normalized to sum to 1 overall.

    Lee et al. (2019) compute it on one mini-batch at initialization and
    prune globally; within a layer it ranks like :func:`taylor_scores`.

    >>> from mlcomp.train import batches as make_batches
    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> s = snip_scores(net, make_batches((X, y), 16))
    >>> round(float(sum(v.sum() for v in s.values())), 6)
    1.0
    """
    raw = taylor_scores(model, data, batches, loss_fn)  # |w * g| on `batches`
    total = sum(float(v.sum()) for v in raw.values()) or 1.0
    return {name: v / total for name, v in raw.items()}


def sparsity(model: nn.Module, filter_fn: FilterFn | None = None) -> dict[str, float]:
    """Fraction of zero weights per Linear/Conv2d layer, and ``"total"`` over them.

    >>> net = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2))
    >>> _ = magnitude_(net, 0.5, filter_fn=lambda n, m: n == "0")
    >>> sparsity(net)
    {'0': 0.5, '1': 0.0, 'total': 0.3333333333333333}
    """
    layers = prunable(model, filter_fn)
    zeros = {name: int((m.weight == 0).sum()) for name, m in layers.items()}
    sizes = {name: m.weight.numel() for name, m in layers.items()}
    result = {name: zeros[name] / sizes[name] for name in layers}
    result["total"] = sum(zeros.values()) / max(sum(sizes.values()), 1)
    return result


def remove_(model: nn.Module) -> nn.Module:
    """Make pruning permanent: ``weight`` becomes a plain parameter holding the zeros.

    >>> net = magnitude_(nn.Sequential(nn.Linear(4, 2)), 0.5)
    >>> sorted(n for n, _ in remove_(net).named_parameters())
    ['0.bias', '0.weight']
    """
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
    return model


def sensitivity_scan(
    model: nn.Module,
    data,
    amounts: Iterable[float],
    filter_fn: FilterFn | None = None,
) -> dict[str, dict[float, float]]:
    """Accuracy on ``data`` when each layer alone is magnitude-pruned by each amount.

    Returns ``{layer: {amount: accuracy}}``; ``model`` is left untouched.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> X, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    >>> list(sensitivity_scan(net, (X, y), [0.0, 0.5]))
    ['1']
    """

    def prune_one(trial: nn.Module, name: str, amount: float) -> None:
        magnitude_(trial, amount, filter_fn=lambda n, m: n == name)

    return train.scan_layers(
        model, data, prunable(model, filter_fn), amounts, prune_one
    )


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


def gradual_prune_(
    model: nn.Module,
    data,
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
    """Prune while training: sparsity follows :func:`agp_schedule`, in place.

    Sparsity rises from ``initial`` to ``final`` over the first
    ``prune_epochs`` (default: two thirds of ``epochs``), updated every
    ``every`` optimizer steps by :func:`magnitude_`; the remaining epochs
    fine-tune at the final sparsity. Other keyword arguments go to
    :func:`mlcomp.train.fit`; returns its loss history.

    >>> X, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    >>> net = nn.Sequential(nn.Linear(8, 2))
    >>> _ = gradual_prune_(net, (X, y), 0.75, epochs=3, every=1, batch_size=16,
    ...                    progress=False)
    >>> sparsity(net)["total"]
    0.75
    """
    n = len(data[1]) if isinstance(data, tuple) else len(data)
    steps_per_epoch = math.ceil(n / fit_kwargs.get("batch_size", 128))
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


def iterative_prune_(
    model: nn.Module,
    data,
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
    """Iterative magnitude pruning with rewinding (lottery tickets), in place.

    Frankle & Carbin (2019): train; prune the same fraction
    ``p = 1 - ((1 - final) / (1 - s0)) ** (1 / rounds)`` of the surviving
    weights by magnitude; rewind the survivors to ``rewind_state`` (default:
    the weights at the call, θ0); repeat ``rounds`` times, then train the
    final sparse network. Each training runs ``epochs`` epochs of
    :func:`mlcomp.train.fit` (other keyword arguments go to it), so the model
    is trained ``rounds + 1`` times. ``on_round(sparsity, model)`` is called
    after every training; returns the sparsities trained at,
    ``[s0, s1, ..., final]`` (``s0``: the sparsity on entry, usually 0).
    ``trained=True`` says the model on entry has already had its first
    training, from ``rewind_state`` with the same settings, so that training
    is skipped (it would give the same weights again); ``rewind_state`` is
    then required, since the weights at the call are no longer θ0.

    >>> X, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> levels = iterative_prune_(net, (X, y), 0.875, rounds=3, epochs=1,
    ...                           batch_size=16, progress=False)
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


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """0/1 mask keeping the ``n`` largest ``|w|`` in every group of ``m`` inputs.

    Groups run along the input dimension of each output row (for a conv,
    over ``in_channels * kh * kw`` in memory order), as sparse tensor cores
    expect for 2:4 sparsity.

    >>> nm_mask(torch.tensor([[0.1, -0.9, 0.5, 0.2, 3.0, 1.0, -2.0, 0.0]]))
    tensor([[0., 1., 1., 0., 1., 0., 1., 0.]])
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got n={n}, m={m}")
    rows = weight.detach().reshape(weight.shape[0], -1)
    if rows.shape[1] % m:
        raise ValueError(f"input size {rows.shape[1]} is not a multiple of m={m}")
    groups = rows.abs().reshape(rows.shape[0], -1, m)  # (out, in/m, m)
    keep = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(weight.shape)


def _bytes(bits: int) -> int:
    return math.ceil(bits / 8)


def csr_bytes(tensor: torch.Tensor, value_bits: int = 32, index_bits: int = 32) -> int:
    """Bytes of CSR storage: values, column indices and row pointers.

    A tensor of more than two dimensions is viewed as (shape[0], rest).

    >>> csr_bytes(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))  # 2 values, 2 cols, 3 ptrs
    28
    """
    rows = (
        tensor.reshape(tensor.shape[0], -1)
        if tensor.dim() > 1
        else tensor.reshape(1, -1)
    )
    nnz = int(torch.count_nonzero(rows))
    return (
        _bytes(nnz * value_bits)
        + _bytes(nnz * index_bits)
        + _bytes((rows.shape[0] + 1) * index_bits)
    )


def bitmask_bytes(tensor: torch.Tensor, value_bits: int = 32) -> int:
    """Bytes of a one-bit-per-entry presence mask plus the non-zero values.

    >>> bitmask_bytes(torch.tensor([0.0, 1.0, 0.0, 2.0]))  # 1 byte of mask + 2 values
    9
    """
    nnz = int(torch.count_nonzero(tensor))
    return _bytes(tensor.numel()) + _bytes(nnz * value_bits)


def relative_indices(
    mask: torch.Tensor, index_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression's relative indices of the non-zeros of ``mask`` (flattened).

    Each stored entry records its distance ``d`` (1 to ``2**index_bits``) from
    the previous stored entry, starting before position 0; the index field
    holds ``d - 1``. A gap too long for the field is bridged by filler
    entries (stored zeros). Returns the index fields and a flag per entry
    that is True for fillers.

    >>> gaps, filler = relative_indices(torch.tensor([1, 0, 0, 0, 0, 0, 1]), 2)
    >>> gaps.tolist(), filler.tolist()
    ([0, 3, 1], [False, True, False])
    """
    if not 1 <= index_bits <= 32:
        raise ValueError(f"index_bits must be in [1, 32], got {index_bits}")
    positions = torch.nonzero(mask.flatten()).flatten().numpy()
    span = 2**index_bits
    gaps, filler, previous = [], [], -1
    for p in positions:
        d = int(p) - previous
        while d > span:  # a filler zero at the farthest reachable position
            gaps.append(span - 1)
            filler.append(True)
            d -= span
        gaps.append(d - 1)
        filler.append(False)
        previous = int(p)
    return np.asarray(gaps, dtype=np.int64), np.asarray(filler, dtype=bool)


def relative_index_bytes(
    tensor: torch.Tensor, index_bits: int, value_bits: int = 32
) -> int:
    """Bytes of relative-index storage: index and value per entry, fillers included.

    >>> relative_index_bytes(torch.tensor([1.0, 0, 0, 0, 0, 0, 2.0]), 2, value_bits=8)
    4
    """
    gaps, _ = relative_indices(tensor != 0, index_bits)
    return _bytes(len(gaps) * index_bits) + _bytes(len(gaps) * value_bits)
