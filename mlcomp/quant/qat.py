"""Model-level fake quantization: ``quantize_(model, QuantConfig(...))``.

Fake quantization simulates integer inference in floating point: every
weight (and, optionally, the input of every Linear/Conv2d layer) goes
through ``dequantize(quantize(.))`` in the forward pass, so the network sees
exactly the rounding and clipping an integer kernel would apply, while the
backward pass uses the straight-through estimator. That makes the same model
serve two purposes:

* **post-training quantization, simulated** — quantize a trained model,
  :func:`calibrate_` the activation ranges on a few batches, evaluate;
* **quantization-aware training** (Jacob et al. 2018) — train it: weights
  are re-quantized from their float "shadow" copies at every step, and the
  activation ranges follow an exponential moving average of each batch's
  min and max.

Numbers measured on such a model are *fake-quant (simulated)*: the kernels
still run in fp32. Real int8 kernels are in :mod:`mlcomp.quant.runtime`.

Weights are quantized with a :mod:`torch.nn.utils.parametrize`
parametrization, inputs with a forward pre-hook that calls the layer's
``input_quantizer`` submodule; :func:`remove_` bakes the quantized weights
in and takes all of it away again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from mlcomp import train
from mlcomp.layers import FilterFn, prunable
from mlcomp.quant import core, nonuniform

__all__ = [
    "QuantConfig",
    "WeightQuantizer",
    "ActivationQuantizer",
    "quantize_",
    "calibrate_",
    "capture_inputs",
    "remove_",
    "round_params_",
    "sensitivity",
]

WEIGHT_SCHEMES = ("affine", "symmetric", "binary", "ternary")
GRANULARITIES = ("per_tensor", "per_channel")


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how; validated on construction.

    * ``weight_bits`` — 1..16, or None to leave weights in fp32.
    * ``weight_scheme`` — ``"symmetric"`` (signed, zero point 0; the usual
      choice for weights), ``"affine"``, ``"binary"`` (needs 1 bit) or
      ``"ternary"`` (needs 2 bits).
    * ``granularity`` — ``"per_channel"`` (one scale per output channel, axis
      0 of the weight) or ``"per_tensor"``.
    * ``weight_observer`` — how the weight range is chosen (see
      :mod:`mlcomp.quant.core`).
    * ``activation_bits`` — 1..16, or None to leave layer inputs in fp32;
      ``activation_scheme`` and ``activation_observer`` as for weights (the
      observer is used by :func:`calibrate_`; training uses a moving average
      of min/max with factor ``momentum``).

    >>> QuantConfig(weight_bits=4, activation_bits=8)
    QuantConfig(weight_bits=4, weight_scheme='symmetric', ...)
    >>> QuantConfig(weight_bits=3, weight_scheme="ternary")
    Traceback (most recent call last):
    ...
    ValueError: the ternary scheme needs weight_bits=2, got 3
    """

    weight_bits: int | None = 8
    weight_scheme: str = "symmetric"
    granularity: str = "per_channel"
    weight_observer: str = "minmax"
    activation_bits: int | None = None
    activation_scheme: str = "affine"
    activation_observer: str = "minmax"
    momentum: float = 0.01

    def __post_init__(self) -> None:
        if self.weight_scheme not in WEIGHT_SCHEMES:
            raise ValueError(
                f"weight_scheme must be one of {WEIGHT_SCHEMES}, "
                f"got {self.weight_scheme!r}"
            )
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )
        for kind in ("weight", "activation"):
            if getattr(self, f"{kind}_observer") not in core.OBSERVERS:
                raise ValueError(
                    f"{kind}_observer must be one of {core.OBSERVERS}, "
                    f"got {getattr(self, kind + '_observer')!r}"
                )
        fixed = {"binary": 1, "ternary": 2}
        if self.weight_scheme in fixed:
            need = fixed[self.weight_scheme]
            if self.weight_bits != need:
                raise ValueError(
                    f"the {self.weight_scheme} scheme needs weight_bits={need}, "
                    f"got {self.weight_bits}"
                )
        elif self.weight_bits is not None:
            core.qrange(self.weight_bits, self.weight_scheme)  # validates bits
        if self.activation_bits is not None:
            core.qrange(self.activation_bits, self.activation_scheme)
        if self.weight_bits is None and self.activation_bits is None:
            raise ValueError(
                "nothing to quantize: weight_bits and activation_bits are None"
            )
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {self.momentum}")


class _StraightThrough(torch.autograd.Function):
    """Forward: the projected weight, exactly; backward: the identity."""

    @staticmethod
    def forward(ctx, w, projected):
        return projected.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class WeightQuantizer(nn.Module):
    """Parametrization ``weight -> fake-quantized weight`` (straight-through).

    >>> q = WeightQuantizer(QuantConfig(weight_bits=2, granularity="per_tensor"))
    >>> q(torch.tensor([[-1.0, 0.2, 0.6]])).tolist()
    [[-1.0, 0.0, 1.0]]
    """

    def __init__(self, config: QuantConfig):
        super().__init__()
        self.bits = config.weight_bits
        self.scheme = config.weight_scheme
        self.per_channel = config.granularity == "per_channel"
        self.observer = config.weight_observer

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        axis = 0 if self.per_channel and w.dim() > 1 else None
        if self.scheme == "binary":
            return _StraightThrough.apply(w, nonuniform.binarize(w.detach(), axis))
        if self.scheme == "ternary":
            return _StraightThrough.apply(
                w, nonuniform.ternarize(w.detach(), axis=axis)
            )
        return core.fake_quantize(w, self.bits, self.scheme, axis, self.observer)

    def extra_repr(self) -> str:
        granularity = "per_channel" if self.per_channel else "per_tensor"
        return f"bits={self.bits}, scheme={self.scheme}, {granularity}"


class ActivationQuantizer(nn.Module):
    """Fake-quantizes a tensor over a range learnt from data (per tensor).

    In training mode the range follows an exponential moving average of each
    batch's min and max (the first batch sets it); in eval mode it is fixed.
    :func:`calibrate_` sets it from a sample with any observer.

    >>> q = ActivationQuantizer(bits=8).train()
    >>> y = q(torch.linspace(0, 2.55, 256))
    >>> round(float(q.hi), 4), bool(torch.allclose(y, torch.linspace(0, 2.55, 256)))
    (2.55, True)
    """

    def __init__(
        self,
        bits: int = 8,
        scheme: str = "affine",
        momentum: float = 0.01,
        observer: str = "minmax",
    ):
        super().__init__()
        core.qrange(bits, scheme)
        if observer not in core.OBSERVERS:
            raise ValueError(
                f"observer must be one of {core.OBSERVERS}, got {observer!r}"
            )
        self.bits, self.scheme, self.momentum = bits, scheme, momentum
        self.observer = observer
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(False))
        self.samples: list[torch.Tensor] | None = None  # set while calibrating
        self.extremes: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.samples is not None:  # calibrating: record, do not quantize
            flat = x.detach().reshape(-1)
            seed = torch.Generator().manual_seed(len(self.samples))
            pick = torch.randperm(flat.numel(), generator=seed)[:16384]
            self.samples.append(flat[pick])
            self.extremes.append(torch.stack([flat.min(), flat.max()]))
            return x
        if self.training:
            with torch.no_grad():
                lo, hi = x.min(), x.max()
                if not self.observed:
                    self.lo.copy_(lo), self.hi.copy_(hi), self.observed.fill_(True)
                else:
                    self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)
        elif not self.observed:
            raise RuntimeError(
                "activation quantizer has no range yet: call quant.calibrate_(model, "
                "data) or run the model in training mode first"
            )
        scale, zero = core.range_qparams(self.lo, self.hi, self.bits, self.scheme)
        return core.fake_quantize(
            x, self.bits, self.scheme, scale=scale[0], zero_point=zero[0]
        )

    def extra_repr(self) -> str:
        lo, hi = float(self.lo), float(self.hi)
        return f"bits={self.bits}, scheme={self.scheme}, range=[{lo:.4g}, {hi:.4g}]"


def _quantize_input(module: nn.Module, inputs: tuple) -> tuple:
    return (module.input_quantizer(inputs[0]), *inputs[1:])


def quantize_(
    model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None
) -> nn.Module:
    """Fake-quantize the Linear/Conv2d layers of ``model`` that ``filter_fn`` accepts.

    Weights get a :class:`WeightQuantizer` parametrization (so
    ``layer.weight`` reads quantized and the float original lives in
    ``layer.parametrizations.weight.original``); with ``activation_bits`` each
    layer's input goes through an :class:`ActivationQuantizer`. Returns
    ``model``.

    >>> net = nn.Sequential(nn.Linear(4, 3))
    >>> _ = quantize_(net, QuantConfig(weight_bits=2))
    >>> bool((net[0].weight.unique(dim=None).numel() <= 4 * 3))
    True
    >>> net[0].parametrizations.weight[0]
    WeightQuantizer(bits=2, scheme=symmetric, per_channel)
    """
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    layers = prunable(model, filter_fn)
    for name, module in layers.items():
        if hasattr(module, "weight_orig") or hasattr(module, "weight_centroids"):
            raise ValueError(
                f"layer {name!r} is pruned or weight-shared; call prune.remove_ or "
                "quant.remove_ first"
            )
        if parametrize.is_parametrized(module) or hasattr(module, "input_quantizer"):
            raise ValueError(
                f"layer {name!r} is already quantized; call quant.remove_ first"
            )
    for module in layers.values():
        if config.weight_bits is not None:
            parametrize.register_parametrization(
                module, "weight", WeightQuantizer(config)
            )
        if config.activation_bits is not None:
            module.input_quantizer = ActivationQuantizer(
                config.activation_bits,
                config.activation_scheme,
                config.momentum,
                config.activation_observer,
            )
            module._input_quant_hook = module.register_forward_pre_hook(_quantize_input)
    return model


@torch.no_grad()
def capture_inputs(
    model: nn.Module, x: torch.Tensor, filter_fn: FilterFn | None = None
) -> dict[str, torch.Tensor]:
    """The input of every Linear/Conv2d layer when ``model`` runs on ``x``.

    These are the activations that static quantization must cover.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> inputs = capture_inputs(net, torch.ones(5, 3))
    >>> {name: tuple(t.shape) for name, t in inputs.items()}
    {'0': (5, 3), '2': (5, 4)}
    """
    captured: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_pre_hook(
            lambda m, inputs, name=name: captured.__setitem__(name, inputs[0].detach())
        )
        for name, module in prunable(model, filter_fn).items()
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return captured


@torch.no_grad()
def calibrate_(
    model: nn.Module,
    data: train.Data,
    n_batches: int = 8,
    batch_size: int = 256,
    observer: str | None = None,
) -> nn.Module:
    """Set every activation range from ``n_batches`` batches of ``data``, in place.

    Each quantizer records a sample of its inputs (16,384 values a batch)
    and their exact min and max while the model runs unquantized, then takes
    its range from ``observer`` (default: the one in the config); min-max
    uses the exact extremes, the other observers the sample. This is the
    calibration step of post-training quantization. Returns ``model``, in
    eval mode.

    >>> net = quantize_(nn.Sequential(nn.Linear(4, 2)),
    ...                 QuantConfig(weight_bits=None, activation_bits=8))
    >>> X = torch.rand(64, 4); _ = calibrate_(net, (X, torch.zeros(64)), n_batches=1)
    >>> bool(net[0].input_quantizer.hi == X.max())
    True
    """
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    if not quantizers:
        raise ValueError("model has no activation quantizers; quantize_ it first")
    if not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches must be a positive int, got {n_batches!r}")
    for q in quantizers:
        q.samples, q.extremes = [], []
    model.eval()
    try:
        for i, (xb, _) in enumerate(train.batches(data, batch_size)):
            if i == n_batches:
                break
            model(xb)
        for q in quantizers:
            if not q.samples:
                raise ValueError("data gave no batch to calibrate on")
            chosen = observer or q.observer
            if chosen == "minmax":
                extremes = torch.stack(q.extremes)
                lo, hi = extremes[:, 0].min()[None], extremes[:, 1].max()[None]
            else:
                lo, hi = core.observe_range(
                    torch.cat(q.samples), q.bits, q.scheme, observer=chosen
                )
            q.lo.fill_(float(lo[0])), q.hi.fill_(float(hi[0])), q.observed.fill_(True)
    finally:
        for q in quantizers:
            q.samples, q.extremes = None, []
    return model


def remove_(model: nn.Module) -> nn.Module:
    """Make quantization permanent: bake quantized weights in, drop the machinery.

    Fake-quantized and weight-shared weights become ordinary parameters that
    hold their quantized values; activation quantizers are removed (so the
    model runs its inputs unquantized again). Returns ``model``.

    >>> net = quantize_(nn.Sequential(nn.Linear(4, 3)), QuantConfig(weight_bits=2))
    >>> w = net[0].weight.detach().clone()
    >>> _ = remove_(net)
    >>> torch.equal(net[0].weight, w), type(net[0].weight).__name__
    (True, 'Parameter')
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(
                module, "weight", leave_parametrized=True
            )
        if hasattr(module, "input_quantizer"):
            module._input_quant_hook.remove()
            del module.input_quantizer, module._input_quant_hook
        if hasattr(module, "weight_centroids"):
            module._shared_weight_hook.remove()
            with torch.no_grad():
                nonuniform._shared_weight(module, None)
                weight = module.weight.detach().clone()
            del module.weight, module.weight_centroids, module.weight_index
            del module._shared_weight_hook
            module.weight = nn.Parameter(weight)
    return model


@torch.no_grad()
def round_params_(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Round every floating-point parameter through ``dtype`` (storage precision).

    The model still computes in fp32; this measures what storing the weights
    in, say, bfloat16 or float16 costs in accuracy. Returns ``model``.

    >>> net = nn.Linear(1, 1).requires_grad_(False); _ = net.weight.fill_(1 + 2**-10)
    >>> round_params_(net, torch.bfloat16).weight.item()  # bf16 keeps 8 bits
    1.0
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    for p in model.parameters():
        if p.is_floating_point():
            p.copy_(p.to(dtype).to(p.dtype))
    return model


def sensitivity(
    model: nn.Module,
    data: train.Data,
    bits: Iterable[int],
    filter_fn: FilterFn | None = None,
    config: QuantConfig | None = None,
) -> dict[str, dict[int, float]]:
    """Accuracy on ``data`` with each layer alone quantized to each weight width.

    ``config`` gives the other settings (default: symmetric, per channel,
    weights only). Returns ``{layer: {bits: accuracy}}``; ``model`` is left
    untouched. The same loop (:func:`mlcomp.train.scan_layers`) as
    :func:`mlcomp.prune.sensitivity`, which prunes instead.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> X, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    >>> list(sensitivity(net, (X, y), [2, 8]))
    ['1']
    """
    base = config or QuantConfig()

    def quantize_one(trial: nn.Module, name: str, b: int) -> None:
        config = dataclasses.replace(base, weight_bits=b)
        quantize_(trial, config, filter_fn=lambda m, n: n == name)

    return train.scan_layers(
        model, data, prunable(model, filter_fn), bits, quantize_one
    )
