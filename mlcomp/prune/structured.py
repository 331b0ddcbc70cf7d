"""Structured pruning that removes whole filters, so the model really shrinks.

:func:`shrink_channels` drops the output channels (filters) of each chosen
Conv2d with the smallest L1 or L2 norm (Li et al. 2017) and rebuilds every
layer that touches them: the conv itself, a BatchNorm2d after it, a
depthwise conv (and its BatchNorm2d) on the way, as in MobileNet-style
separable blocks, and the consumer of its output: either the next Conv2d
(fewer input channels) or the first Linear after a flatten (fewer input
features, one block of H*W per channel) or after a global average pool
(``x.mean(dim=(2, 3))``, one feature per channel). The result is an
ordinary dense model with fewer parameters and fewer MACs, which runs
faster on any hardware.

The model is traced with :mod:`torch.fx` to find, for each conv, the path its
output takes. Between a conv and its consumer only channel-wise operations are
allowed (activations, pooling, dropout, BatchNorm2d, depthwise convs);
anything else — a branch, a residual addition, a grouped conv that is not
depthwise, a reshape other than flatten —
is refused with an error rather than risking a silently wrong model.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from mlcomp.layers import FilterFn, replace_module, select
from mlcomp.utils import count

__all__ = ["UnsupportedModelError", "filter_norms", "shrink_channels"]

_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity,
)  # fmt: skip
_F = nn.functional
_CHANNELWISE_FUNCTIONS = {
    torch.relu, _F.relu, _F.relu6, _F.leaky_relu, _F.gelu, _F.silu, torch.sigmoid,
    torch.tanh, torch.max_pool2d, _F.max_pool2d, _F.avg_pool2d, _F.adaptive_avg_pool2d,
    _F.adaptive_max_pool2d, _F.dropout, torch.nn.functional.dropout2d,
}  # fmt: skip
_CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


class UnsupportedModelError(ValueError):
    """shrink_channels met a structure it cannot shrink correctly."""


def filter_norms(conv: nn.Conv2d, norm: str = "l1") -> torch.Tensor:
    """L1 or L2 norm of each output filter of ``conv``, shape (out_channels,).

    >>> conv = nn.Conv2d(1, 2, 1, bias=False)
    >>> w = torch.tensor([-3.0, 4.0]).view(2, 1, 1, 1)
    >>> with torch.no_grad(): _ = conv.weight.copy_(w)
    >>> filter_norms(conv), filter_norms(conv, "l2")
    (tensor([3., 4.]), tensor([3., 4.]))
    """
    w = conv.weight.detach().flatten(1)
    if norm == "l1":
        return w.abs().sum(1)
    if norm == "l2":
        return w.norm(dim=1)
    raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def _is_flatten(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    if node.op == "call_method" and node.target == "flatten":
        return start == 1
    if node.op == "call_function" and node.target is torch.flatten:
        return start == 1
    return False


def _is_global_pool(node: torch.fx.Node) -> bool:
    """``x.mean(dim=(2, 3))`` or ``torch.mean(x, (2, 3))``: one value per channel."""
    if node.target not in ("mean", torch.mean):
        return False
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    ndim = len(node.args[0].meta["tensor_meta"].shape)
    dims = {d % ndim for d in dim} if isinstance(dim, (tuple, list)) else None
    return ndim == 4 and dims == {2, 3} and not keepdim


def _is_depthwise(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.groups > 1
    )


def _is_channelwise(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], (*_CHANNELWISE_MODULES, nn.BatchNorm2d))
    if node.op == "call_function":
        return node.target in _CHANNELWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _CHANNELWISE_METHODS
    return False


def _trace_consumer(conv_node, modules):
    """Follow ``conv_node``'s output to its consumer.

    Returns (batch norms and depthwise convs on the way, consumer node or
    None, spatial size at a flatten or pool, or None). Raises
    UnsupportedModelError on anything unsafe.
    """
    norms, node, spatial = [], conv_node, None
    while True:
        users = list(node.users)
        if len(users) != 1:
            raise UnsupportedModelError(
                f"the output of {conv_node.target!r} is used {len(users)} times "
                f"(at {node.name}); branches and residual connections are not supported"
            )
        node = users[0]
        if node.op == "output":
            return norms, None, None
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d):
            if spatial is not None:
                raise UnsupportedModelError(f"{node.target!r} follows a flatten")
            if _is_depthwise(modules[node.target]):
                norms.append(node.target)  # channel c in, channel c out
                continue
            if modules[node.target].groups != 1:
                raise UnsupportedModelError(f"{node.target!r} is a grouped convolution")
            return norms, node, None
        if node.op == "call_module" and isinstance(modules[node.target], nn.Linear):
            if spatial is None:
                raise UnsupportedModelError(
                    f"{node.target!r} consumes {conv_node.target!r} without a flatten"
                )
            return norms, node, spatial
        if node.op in ("call_method", "call_function") and _is_global_pool(node):
            if spatial is not None:
                raise UnsupportedModelError(f"{node.name} follows a flatten")
            spatial = 1
            continue
        if _is_flatten(node, modules) and spatial is None:
            shape = node.args[0].meta["tensor_meta"].shape  # (N, C, H, W) before it
            spatial = int(torch.tensor(shape[2:]).prod()) if len(shape) > 2 else 1
            continue
        if _is_channelwise(node, modules) and spatial is None:
            if node.op == "call_module" and isinstance(
                modules[node.target], nn.BatchNorm2d
            ):
                norms.append(node.target)
            continue
        what = node.target if node.op != "call_function" else node.target.__name__
        raise UnsupportedModelError(
            f"cannot shrink {conv_node.target!r}: its output passes through "
            f"{node.op} {what!r}, which is not known to be channel-wise"
        )


def _rebuilt_conv(conv: nn.Conv2d, out_keep, in_keep) -> nn.Conv2d:
    w = conv.weight.detach()
    w = w[out_keep] if out_keep is not None else w
    w = w[:, in_keep] if in_keep is not None else w
    new = nn.Conv2d(
        w.shape[1], w.shape[0], conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(w)
        if conv.bias is not None:
            b = conv.bias.detach()
            new.bias.copy_(b[out_keep] if out_keep is not None else b)
    return new.to(conv.weight.device)


def _rebuilt_depthwise(conv: nn.Conv2d, keep) -> nn.Conv2d:
    new = nn.Conv2d(
        len(keep), len(keep), conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=len(keep),
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(conv.weight.detach()[keep])
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach()[keep])
    return new.to(conv.weight.device)


def _rebuilt_bn(bn: nn.BatchNorm2d, keep) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)  # fmt: skip
    state = {k: (v[keep] if v.dim() == 1 else v) for k, v in bn.state_dict().items()}
    new.load_state_dict(state)
    return new.train(bn.training).to(next(iter(state.values())).device)


def _rebuilt_linear(linear: nn.Linear, channel_keep, spatial: int) -> nn.Linear:
    cols = (channel_keep[:, None] * spatial + torch.arange(spatial)).flatten()
    new = nn.Linear(len(cols), linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight.detach()[:, cols])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new.to(linear.weight.device)


def shrink_channels(
    model: nn.Module,
    amount: float | int,
    example_input: torch.Tensor,
    norm: str = "l1",
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """A copy of ``model`` with ``amount`` of each chosen conv's filters removed.

    ``amount`` is the fraction (float in [0, 1]) or number (int) of output
    channels to drop from every Conv2d that ``filter_fn(module, name)``
    accepts (default: all) and whose output feeds another layer; at least
    one channel is always kept. Filters with the smallest ``norm`` go.
    ``model`` itself is not changed.

    >>> from mlcomp.models import LeNet5
    >>> small = shrink_channels(LeNet5(), 0.5, torch.zeros(1, 1, 28, 28))
    >>> small.conv1, small.conv2, small.fc1.in_features
    (Conv2d(1, 10, ...), Conv2d(10, 25, ...), 400)
    """
    chosen = select(model, filter_fn, (nn.Conv2d,))
    try:
        # a copy: shape propagation runs a forward pass, which would update
        # batch-norm statistics of a model in training mode
        traced = torch.fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModelError(
            f"cannot trace the model with torch.fx: {exc}"
        ) from exc
    with torch.no_grad():
        ShapeProp(traced).propagate(example_input)
    modules = dict(traced.named_modules())
    plans = {}  # conv name -> (kept channels, batch norms, consumer name, spatial)
    for node in traced.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        conv = modules[node.target]
        if node.target not in chosen or _is_depthwise(conv):
            continue  # a depthwise conv follows the channels of its producer
        if conv.groups != 1:
            raise UnsupportedModelError(f"{node.target!r} is a grouped convolution")
        norms, consumer, spatial = _trace_consumer(node, modules)
        if consumer is None:
            continue  # its channels are the model's output: leave them
        n_drop = count(amount, conv.out_channels, f"output channels of {node.target}")
        n_keep = max(1, conv.out_channels - n_drop)
        keep = torch.topk(filter_norms(conv, norm), n_keep).indices.sort().values
        plans[node.target] = (keep, norms, consumer.target, spatial)

    small = copy.deepcopy(model)
    original = dict(model.named_modules())
    in_keep = {
        consumer: (keep, spatial) for keep, _, consumer, spatial in plans.values()
    }
    for name, module in original.items():
        out = plans[name][0] if name in plans else None
        inp = in_keep.get(name)
        if isinstance(module, nn.Conv2d) and (out is not None or inp is not None):
            replace_module(
                small, name, _rebuilt_conv(module, out, inp[0] if inp else None)
            )
        elif isinstance(module, nn.Linear) and inp is not None:
            replace_module(small, name, _rebuilt_linear(module, inp[0], inp[1]))
    for keep, on_the_way, _, _ in plans.values():
        for name in on_the_way:
            module = original[name]
            rebuilt = (
                _rebuilt_depthwise(module, keep)
                if isinstance(module, nn.Conv2d)
                else _rebuilt_bn(module, keep)
            )
            replace_module(small, name, rebuilt)
    return small
