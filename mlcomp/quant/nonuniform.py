"""Non-uniform weights: k-means weight sharing, binary and ternary weights.

* **Weight sharing** (Han, Mao & Dally 2016): the weights of a layer are
  clustered by 1-D k-means into ``2**bits`` centroids started evenly over
  ``[min, max]`` (linear initialisation keeps the rare large weights, which
  matter most); each weight is then stored as a ``bits``-bit index into the
  layer's codebook. Fine-tuning trains the centroids: the gradient of a
  centroid is the sum of the gradients of the weights that share it, which
  is exactly what autograd gives for ``centroids[index]``.
* **Binary weights** ``alpha * sign(w)`` with ``alpha = mean |w|`` per output
  channel, the scale that minimises ``||w - alpha * sign(w)||^2``
  (BinaryConnect, Courbariaux et al. 2015; XNOR-Net, Rastegari et al. 2016).
* **Ternary weights** ``alpha * t`` with ``t`` in {-1, 0, +1}: weights with
  ``|w| <= delta`` become 0, with ``delta = 0.7 * mean |w|`` (the threshold
  rule of Ternary Weight Networks, Li & Liu 2016, an approximation of the
  optimum for roughly Gaussian or uniform weights), and ``alpha`` is the mean
  ``|w|`` of the weights above the threshold.

Binary and ternary weights are trained with a straight-through estimator:
the forward pass uses the projected weights, the backward pass updates the
real-valued latent weights as if the projection were the identity.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mlcomp.layers import FilterFn, prunable
from mlcomp.quant.kmeans import kmeans_1d, nearest_centroid
from mlcomp.utils import check_bits

__all__ = ["binarize", "ternarize", "kmeans_", "codebooks"]


def _channel_mean(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Mean over everything but ``axis``, shaped to broadcast against ``x``."""
    if axis is None or x.dim() == 0:
        return x.mean()
    dims = [d for d in range(x.dim()) if d != axis % x.dim()]
    return x.mean(dim=dims, keepdim=True) if dims else x


def binarize(w: torch.Tensor, axis: int | None = 0) -> torch.Tensor:
    """``alpha * sign(w)`` with the L2-optimal ``alpha = mean |w|`` per channel of axis.

    ``sign(0)`` is taken as +1 so that every weight gets one of two values.

    >>> binarize(torch.tensor([[0.5, -1.5], [0.2, 0.0]])).tolist()
    [[1.0, -1.0], [0.10000000149011612, 0.10000000149011612]]
    """
    alpha = _channel_mean(w.abs(), axis)
    return torch.where(w >= 0, alpha, -alpha)


def ternarize(
    w: torch.Tensor, threshold: float = 0.7, axis: int | None = 0
) -> torch.Tensor:
    """Ternary Weight Networks' projection ``alpha * t``, ``t`` in {-1, 0, +1}.

    ``delta = threshold * mean |w|`` per channel of axis; weights at or below
    ``delta`` in magnitude become 0, the others ``+-alpha`` with ``alpha`` the
    mean magnitude of the weights above ``delta``.

    >>> ternarize(torch.tensor([1.0, -0.9, 0.1, 0.0]), axis=None).tolist()
    [0.949999988079071, -0.949999988079071, 0.0, 0.0]
    """
    if not threshold >= 0.0:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    mags = w.abs()
    delta = threshold * _channel_mean(mags, axis)
    keep = mags > delta
    kept = _channel_mean(mags * keep, axis)
    share = _channel_mean(keep.to(w.dtype), axis)
    alpha = torch.where(
        share > 0, kept / share.clamp_min(1e-12), torch.zeros_like(kept)
    )
    return torch.sign(w) * keep * alpha


# --- weight sharing ----------------------------------------------------------


def _shared_weight(module: nn.Module, _inputs) -> None:
    """Forward pre-hook: rebuild the weight from the codebook (with gradients)."""
    table = torch.cat([module.weight_centroids, module.weight_centroids.new_zeros(1)])
    module.weight = table[module.weight_index]


def kmeans_(
    model: nn.Module,
    bits: int | Mapping[str, int],
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Share the weights of each Linear/Conv2d layer among ``2**bits`` centroids.

    ``bits`` is one width for every layer or a mapping from layer name to
    width (Deep Compression uses 8 bits for convolutions and 5 for fully
    connected layers). Each layer's ``weight`` parameter is replaced by a
    trainable ``weight_centroids`` (``2**bits`` values) and an int64 buffer
    ``weight_index`` of the weight's shape; a forward pre-hook rebuilds
    ``weight = weight_centroids[weight_index]``, so training the model
    fine-tunes the centroids. Weights that are exactly zero (pruned) index a
    fixed zero and stay zero; that zero is one of the ``2**bits`` codes, so a
    pruned layer gets ``2**bits - 1`` trainable centroids and every weight,
    zero or not, still fits in ``bits`` bits (this is what lets an ``.mlc``
    file store the layer losslessly, see :mod:`mlcomp.coding.container`).
    :func:`mlcomp.quant.remove_` makes the shared weights ordinary parameters
    again. Returns ``model``.

    >>> net = nn.Linear(16, 4)
    >>> _ = kmeans_(net, bits=2)
    >>> net(torch.zeros(1, 16)).shape, net.weight.unique().numel() <= 4
    (torch.Size([1, 4]), True)
    >>> net.weight_centroids.shape
    torch.Size([4])
    """
    layers = prunable(model, filter_fn)
    if isinstance(bits, Mapping):
        unknown = set(bits) - set(layers)
        if unknown:
            raise KeyError(f"bits names no Linear or Conv2d layer {sorted(unknown)}")
    for name, module in layers.items():
        b = bits[name] if isinstance(bits, Mapping) else bits
        check_bits(b, f"bits of layer {name!r}")
        if hasattr(module, "weight_orig") or hasattr(module, "weight_centroids"):
            raise ValueError(
                f"layer {name!r} already has a mask or a codebook; call "
                "prune.remove_ / quant.remove_ first"
            )
        if torch.nn.utils.parametrize.is_parametrized(module, "weight"):
            raise ValueError(
                f"layer {name!r} is parametrized; call quant.remove_ first"
            )
        w = module.weight.detach()
        nonzero = w != 0
        k = (1 << b) - int(not bool(nonzero.all()))  # the zero takes one code
        centroids = (
            torch.from_numpy(kmeans_1d(w[nonzero].numpy(), k)).to(w.dtype)
            if nonzero.any()
            else w.new_zeros(1)
        )
        index = torch.from_numpy(nearest_centroid(w.numpy(), centroids.numpy()))
        index[~nonzero] = centroids.numel()  # the fixed zero after the codebook
        del module._parameters["weight"]
        module.register_parameter("weight_centroids", nn.Parameter(centroids))
        module.register_buffer("weight_index", index)
        module._shared_weight_hook = module.register_forward_pre_hook(_shared_weight)
        with torch.no_grad():  # a graph-free weight keeps the module deep-copyable
            _shared_weight(module, None)
    return model


def codebooks(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (centroids, index)}`` of every layer shared by :func:`kmeans_`.

    Index ``len(centroids)`` marks a pruned (zero) weight.

    >>> net = kmeans_(nn.Linear(8, 2), bits=1)
    >>> centroids, index = codebooks(net)[""]
    >>> centroids.shape, index.shape
    (torch.Size([2]), torch.Size([2, 8]))
    """
    return {
        name: (m.weight_centroids.detach().clone(), m.weight_index.clone())
        for name, m in model.named_modules()
        if hasattr(m, "weight_centroids")
    }
