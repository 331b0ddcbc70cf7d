"""Unstructured pruning: criteria and masks.

Masks are kept the way :mod:`torch.nn.utils.prune` keeps them (a parameter
``weight_orig``, a buffer ``weight_mask`` and a forward pre-hook that sets
``weight = weight_orig * weight_mask``), so a model pruned here reads, trains
and un-prunes (:func:`remove_`) exactly like one pruned by PyTorch.

* Criteria: magnitude ``|w|`` (Han et al. 2015), first-order Taylor
  ``|w * mean gradient|``, SNIP's connection sensitivity (Lee et al. 2019)
  and Wanda's ``|w_ij| * ||x_j||`` (Sun et al. 2023), which weighs each
  weight by the size of the input it multiplies.
* Scope: ``"layer"`` (the same fraction of every layer), ``"row"`` (the same
  fraction of every output row, Wanda's comparison group) or ``"global"``
  (one threshold for all layers).
* ``amount`` is the *total* fraction (float in [0, 1]) or count (int) of each
  scope's weights that are zero afterwards (:func:`mlcomp.utils.count`);
  already-pruned weights count, so calling again with a larger amount prunes
  further (gradual pruning).
* N:M masks (2:4 sparsity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from mlcomp import train
from mlcomp.layers import FilterFn, prunable
from mlcomp.utils import count

__all__ = [
    "magnitude_mask",
    "magnitude_",
    "prune_by_scores_",
    "taylor_scores",
    "snip_scores",
    "wanda_scores",
    "prune_nm_",
    "sparsity",
    "remove_",
    "sensitivity",
    "nm_mask",
]


def _weight(module: nn.Module) -> torch.Tensor:
    """The dense, unmasked weight (``weight_orig`` once pruned)."""
    return getattr(module, "weight_orig", module.weight)


def _mask(module: nn.Module) -> torch.Tensor:
    mask = getattr(module, "weight_mask", None)
    return mask if mask is not None else torch.ones_like(module.weight)


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
    return _keep_largest(weight.detach().abs(), count(amount, weight.numel()))


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
    if not scores:
        raise ValueError("scores is empty: it names no layer to prune")
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
            _set_mask(modules[name], _keep_largest(score, count(amount, score.numel())))
    elif scope == "row":
        for name, score in masked.items():
            rows = score.reshape(score.shape[0], -1)
            n_zero = count(amount, rows.shape[1])
            mask = torch.ones_like(rows)
            if n_zero:
                lowest = torch.topk(rows, n_zero, dim=1, largest=False).indices
                mask.scatter_(1, lowest, 0.0)
            _set_mask(modules[name], mask.view_as(score))
    elif scope == "global":
        flat = torch.cat([s.flatten() for s in masked.values()])
        mask = _keep_largest(flat, count(amount, flat.numel()))
        start = 0
        for name, score in masked.items():
            n = score.numel()
            _set_mask(modules[name], mask[start : start + n].view_as(score))
            start += n
    else:
        raise ValueError(f"scope must be 'layer', 'row' or 'global', got {scope!r}")
    return model


def magnitude_(
    model: nn.Module,
    amount: float | int,
    scope: str = "layer",
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Magnitude pruning: zero the weights of smallest ``|w|``, in place.

    Applies to every Linear and Conv2d layer that ``filter_fn(module, name)``
    accepts (:func:`mlcomp.layers.select`: a filter that matches none is an
    error); biases are never pruned. Afterwards ``module.weight`` reads as
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


def _gradients(model, data, n_batches, batch_size, loss_fn):
    if not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches must be a positive int, got {n_batches!r}")
    layers = prunable(model)
    grads = {name: torch.zeros_like(_weight(m)) for name, m in layers.items()}
    was_training = model.training
    model.eval()
    n = 0
    for n, (xb, yb) in enumerate(train.batches(data, batch_size), start=1):
        model.zero_grad(set_to_none=True)
        (loss_fn or nn.functional.cross_entropy)(model(xb), yb).backward()
        for name, m in layers.items():
            grads[name] += _weight(m).grad.detach()
        if n == n_batches:
            break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if n == 0:
        raise ValueError("data yielded no batch")
    return layers, {name: g / n for name, g in grads.items()}


def taylor_scores(
    model: nn.Module,
    data: train.Data,
    n_batches: int = 8,
    batch_size: int = 256,
    loss_fn=None,
) -> dict[str, torch.Tensor]:
    """First-order Taylor saliency ``|w * dL/dw|``, the gradient averaged over batches.

    Removing ``w`` changes the loss by about ``-w * dL/dw``; the absolute
    value of this estimate ranks weights by how little their removal costs.
    The gradient is averaged over the first ``n_batches`` batches of
    ``batch_size`` examples of ``data`` (in order, as
    :func:`mlcomp.train.batches` gives them).

    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> taylor_scores(net, (X, y), n_batches=2, batch_size=8)["0"].shape
    torch.Size([2, 3])
    """
    layers, grads = _gradients(model, data, n_batches, batch_size, loss_fn)
    return {
        name: (_weight(m).detach() * grads[name]).abs() for name, m in layers.items()
    }


def snip_scores(
    model: nn.Module,
    data: train.Data,
    n_batches: int = 1,
    batch_size: int = 256,
    loss_fn=None,
) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity: ``|w * dL/dw|`` normalized to sum to 1 overall.

    Lee et al. (2019) compute it on one mini-batch at initialization and
    prune globally; within a layer it ranks like :func:`taylor_scores`.

    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> s = snip_scores(net, (X, y), batch_size=16)
    >>> round(float(sum(v.sum() for v in s.values())), 6)
    1.0
    """
    raw = taylor_scores(model, data, n_batches, batch_size, loss_fn)  # |w * g|
    total = sum(float(v.sum()) for v in raw.values()) or 1.0
    return {name: v / total for name, v in raw.items()}


def sparsity(model: nn.Module, filter_fn: FilterFn | None = None) -> dict[str, float]:
    """Fraction of zero weights per Linear/Conv2d layer, and ``"total"`` over them.

    >>> net = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2))
    >>> _ = magnitude_(net, 0.5, filter_fn=lambda m, name: name == "0")
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


def sensitivity(
    model: nn.Module,
    data: train.Data,
    amounts: Iterable[float],
    filter_fn: FilterFn | None = None,
) -> dict[str, dict[float, float]]:
    """Accuracy on ``data`` when each layer alone is magnitude-pruned by each amount.

    Returns ``{layer: {amount: accuracy}}``; ``model`` is left untouched.
    The same loop (:func:`mlcomp.train.scan_layers`) as
    :func:`mlcomp.quant.sensitivity`, which quantizes instead.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> X, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    >>> list(sensitivity(net, (X, y), [0.0, 0.5]))
    ['1']
    """

    def prune_one(trial: nn.Module, name: str, amount: float) -> None:
        magnitude_(trial, amount, filter_fn=lambda m, n: n == name)

    return train.scan_layers(
        model, data, prunable(model, filter_fn), amounts, prune_one
    )


def nm_mask(
    weight: torch.Tensor, n: int = 2, m: int = 4, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """0/1 mask keeping the ``n`` largest ``|w|`` in every group of ``m`` inputs.

    With ``scores`` (of ``weight``'s shape), the ``n`` highest scores instead.

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
    if scores is not None and scores.shape != weight.shape:
        raise ValueError(
            f"scores of shape {tuple(scores.shape)} for a weight of "
            f"{tuple(weight.shape)}"
        )
    rank = rows.abs() if scores is None else scores.detach().reshape(rows.shape)
    groups = rank.reshape(rows.shape[0], -1, m)  # (out, in/m, m)
    keep = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(weight.shape)


def prune_nm_(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    scores: dict[str, torch.Tensor] | None = None,
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Give every prunable layer an N:M mask (:func:`nm_mask`), in place.

    By magnitude, or by ``scores`` (a dict from layer name to scores, e.g.
    :func:`wanda_scores`; then exactly those layers are pruned).

    >>> net = prune_nm_(nn.Sequential(nn.Linear(8, 3)))
    >>> float(net[0].weight_mask.mean())
    0.5
    """
    modules = dict(model.named_modules())
    names = list(scores) if scores is not None else list(prunable(model, filter_fn))
    for name in names:
        if name not in modules:
            raise KeyError(f"no layer named {name!r} in the model")
        module = modules[name]
        score = None if scores is None else scores[name]
        _set_mask(module, nm_mask(_weight(module), n, m, score))
    return model


def magnitude_scores(
    model: nn.Module, filter_fn: FilterFn | None = None
) -> dict[str, torch.Tensor]:
    """``|w_ij|`` for every Linear layer :func:`wanda_scores` would score.

    The data-free baseline Wanda is compared with: the same layers, the same
    dict, to prune with the same call.

    >>> net = nn.Sequential(nn.Linear(2, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[-3.0, 1.0]]))
    >>> magnitude_scores(net)["0"]
    tensor([[3., 1.]])
    """
    return {
        name: _weight(m).detach().abs()
        for name, m in prunable(model, filter_fn).items()
        if isinstance(m, nn.Linear)
    }


@torch.no_grad()
def wanda_scores(
    model: nn.Module,
    inputs: Iterable,
    filter_fn: FilterFn | None = None,
) -> dict[str, torch.Tensor]:
    """Wanda's scores ``|w_ij| * ||x_j||_2`` for every Linear layer (Sun et al. 2023).

    ``||x_j||_2`` is the norm of input feature ``j`` of the layer over every
    row (token, sample) of the calibration batches ``inputs`` (an iterable
    of model inputs). Prune by them with ``scope="row"``: Wanda compares
    weights within each output row. No gradient, no retraining.

    >>> net = nn.Sequential(nn.Linear(2, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
    >>> x = torch.tensor([[3.0, 0.0], [4.0, 1.0]])  # ||x_0|| = 5, ||x_1|| = 1
    >>> wanda_scores(net, [x])["0"]
    tensor([[5., 1.]])
    """
    layers = {
        name: module
        for name, module in prunable(model, filter_fn).items()
        if isinstance(module, nn.Linear)
    }
    sums = {name: torch.zeros(m.in_features, dtype=torch.float64)
            for name, m in layers.items()}  # fmt: skip

    def hook(module, args, name):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
        sums[name] += (x * x).sum(dim=0)

    handles = [
        m.register_forward_pre_hook(lambda mod, args, name=name: hook(mod, args, name))
        for name, m in layers.items()
    ]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in inputs:
            model(batch)
            seen += 1
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("inputs is empty: Wanda needs calibration data")
    return {
        name: _weight(m).detach().abs() * sums[name].sqrt().float()[None, :]
        for name, m in layers.items()
    }
