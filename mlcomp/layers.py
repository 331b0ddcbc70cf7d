"""Picking and replacing layers: the vocabulary every compression verb shares.

Every model-level verb of the book (``prune.magnitude_``, ``quant.quantize_``,
``quant.kmeans_``, ``lowrank.factorize_``, ``prune.shrink_channels``, ...)
takes a ``filter_fn(module, name) -> bool`` that says which layers it
touches, in the argument order of torchao's ``quantize_``: the module first,
its fully qualified name second. :func:`select` applies it, and refuses a
filter that matches nothing, with the names it could have matched, instead of
silently doing nothing. :func:`replace_module` swaps a submodule for another,
by name.

>>> from mlcomp.models import LeNet5
>>> list(select(LeNet5(), lambda m, name: name.startswith("conv")))
['conv1', 'conv2']
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = [
    "FilterFn",
    "LAYER_TYPES",
    "NoLayerError",
    "select",
    "prunable",
    "replace_module",
]

FilterFn = Callable[[nn.Module, str], bool]
"""``filter_fn(module, name)``: True for the layers a verb should touch."""

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
"""The layers pruning and quantization act on: they hold the weight matrices."""


class NoLayerError(ValueError):
    """A verb was asked to act on layers, and ``filter_fn`` left it none."""


def _kinds(types: tuple[type[nn.Module], ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def select(
    model: nn.Module,
    filter_fn: FilterFn | None = None,
    types: tuple[type[nn.Module], ...] = LAYER_TYPES,
) -> dict[str, nn.Module]:
    """The layers of ``model`` of one of ``types`` that ``filter_fn`` accepts, by name.

    Raises :class:`NoLayerError` when there are none: a verb given a filter
    that matches nothing (a misspelt name, a wrong type) fails loudly instead
    of leaving the model unchanged.

    >>> from mlcomp.models import LeNet5
    >>> list(select(LeNet5(), lambda m, name: isinstance(m, nn.Linear)))
    ['fc1', 'fc2']
    >>> select(LeNet5(), lambda m, name: name == "fc3")
    Traceback (most recent call last):
    ...
    mlcomp.layers.NoLayerError: filter_fn matched none of the Linear or Conv2d \
layers of LeNet5 (conv1, conv2, fc1, fc2); it is called as filter_fn(module, name)
    """
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, types)}
    if not candidates:
        raise NoLayerError(
            f"{type(model).__name__} has no {_kinds(types)} layer to act on"
        )
    if filter_fn is None:
        return candidates
    chosen = {name: m for name, m in candidates.items() if filter_fn(m, name)}
    if not chosen:
        names = ", ".join(name or "<the model itself>" for name in candidates)
        raise NoLayerError(
            f"filter_fn matched none of the {_kinds(types)} layers of "
            f"{type(model).__name__} ({names}); it is called as "
            "filter_fn(module, name)"
        )
    return chosen


def prunable(
    model: nn.Module, filter_fn: FilterFn | None = None
) -> dict[str, nn.Module]:
    """The Linear and Conv2d layers of ``model`` that ``filter_fn`` accepts, by name.

    :func:`select` with the default ``types``: the layers that pruning and
    quantization act on.

    >>> from mlcomp.models import LeNet5
    >>> list(prunable(LeNet5()))
    ['conv1', 'conv2', 'fc1', 'fc2']
    """
    return select(model, filter_fn, LAYER_TYPES)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule ``name`` of ``model`` is; returns ``model``.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    >>> replace_module(net, "1.0", nn.Tanh())[1][0]
    Tanh()
    """
    if not name:
        raise ValueError("cannot replace the model itself (name is empty)")
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    if not hasattr(owner, child):
        raise AttributeError(f"{type(model).__name__} has no submodule {name!r}")
    setattr(owner, child, new)
    return model
