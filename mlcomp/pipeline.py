"""Deep Compression end to end: prune, share, code, store (Han, Mao & Dally 2016).

The recipe composes the rest of the package:

1. **Prune** with fine-tuning: :func:`mlcomp.prune.gradual_prune` (the zoo
   caches the pruned reference models, e.g. ``lenet5-fashion-sparse94``).
2. **Share weights**: :func:`share_weights` clusters each layer's weights
   into a k-means codebook (:func:`mlcomp.quant.kmeans_`; 8 bits for
   convolutions, 5 for fully connected layers by default), fine-tunes the
   centroids and bakes them into ordinary weights.
3. **Code and store**: :func:`deep_compression_spec` says how each tensor
   goes into an ``.mlc`` file at each stage — P (relative indices, float32
   values), P+Q (relative indices, codebook indices, fixed width) and P+Q+H
   (both streams Huffman-coded). :func:`file_report` accounts for every
   byte of the real files.

:func:`compress_state_dict` applies the same storage recipe to any state dict
without data (per-tensor magnitude pruning and plain k-means, no
fine-tuning): the ``mlcomp compress`` command. With a ``step`` it stores the
weights the way of the MPEG NNC standard instead (:func:`step_spec`): one
uniform step, entropy-coded levels, no codebooks. :class:`StepAllocator`
gives each layer its own step, by how much the layer's weights matter to the
model's predictions (the diagonal of the Fisher information,
:func:`fisher_diagonal`, from a few unlabelled inputs).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from mlcomp import prune, quant, train, utils
from mlcomp.coding import TensorSpec, inspect, save_compressed

__all__ = [
    "STAGES",
    "layer_bits",
    "share_weights",
    "deep_compression_spec",
    "step_spec",
    "file_report",
    "prune_state_dict",
    "compress_state_dict",
    "fisher_diagonal",
    "StepAllocator",
]

STAGES = ("P", "P+Q", "P+Q+H")


def layer_bits(
    model: nn.Module, conv_bits: int = 8, fc_bits: int = 5
) -> dict[str, int]:
    """Codebook width per prunable layer: ``conv_bits`` for Conv2d, else ``fc_bits``.

    >>> from mlcomp.models import LeNet5
    >>> layer_bits(LeNet5())
    {'conv1': 8, 'conv2': 8, 'fc1': 5, 'fc2': 5}
    """
    return {
        name: conv_bits if isinstance(m, nn.Conv2d) else fc_bits
        for name, m in prune.prunable(model).items()
    }


def share_weights(
    model: nn.Module,
    data,
    bits: int | Mapping[str, int],
    epochs: float = 1,
    lr: float = 1e-4,
    **fit_kwargs,
) -> list[float]:
    """k-means weight sharing with centroid fine-tuning; returns the losses.

    Replaces each layer's weights by ``2**bits`` shared values
    (:func:`mlcomp.quant.kmeans_`; pruned zeros stay zero and take one of the
    codes), trains only what is left to train — the centroids, biases and
    other parameters — for ``epochs`` on ``data`` with
    :func:`mlcomp.train.fit`, then makes the shared weights ordinary
    parameters again, so the model holds at most ``2**bits`` distinct values
    per layer and saves losslessly with a codebook spec. ``epochs=0`` skips
    the fine-tuning. Like :func:`mlcomp.train.fit`, it changes ``model`` in
    place and returns the loss history (empty without fine-tuning).

    >>> X, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> _ = share_weights(net, (X, y), bits=2, epochs=1, progress=False)
    >>> net[0].weight.unique().numel() <= 4, isinstance(net[0].weight, nn.Parameter)
    (True, True)
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    quant.kmeans_(model, bits)
    history = train.fit(model, data, epochs, lr, **fit_kwargs) if epochs else []
    quant.remove_(model)
    return history


def _is_weight(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and tensor.dim() >= 2


def deep_compression_spec(
    stage: str = "P+Q+H",
    *,
    conv_bits: int = 8,
    fc_bits: int = 5,
    conv_index_bits: int = 8,
    fc_index_bits: int = 5,
    sparsity: str = "relative",
    coder: str = "huffman",
) -> Callable[[str, torch.Tensor], TensorSpec | None]:
    """The ``.mlc`` spec of a Deep Compression stage, as a function of the tensor.

    Weights (floating tensors of two or more dimensions) are stored with
    ``sparsity`` (Deep Compression's relative indices by default:
    ``conv_index_bits`` for convolution kernels, ``fc_index_bits`` for
    matrices) and, by stage: ``"P"`` float32 values; ``"P+Q"`` a codebook of
    ``2**conv_bits`` or ``2**fc_bits`` values with fixed-width indices;
    ``"P+Q+H"`` the same, with both integer streams coded by ``coder``.
    Everything else (biases, norms, buffers) is stored exactly.

    >>> spec = deep_compression_spec("P+Q+H")
    >>> spec("fc1.weight", torch.zeros(500, 800))
    TensorSpec(values='codebook', bits=5, per_channel=False, sparsity='relative', \
index_bits=5, coder='huffman', step=0.0, rd_lambda=0.0)
    >>> spec("conv1.weight", torch.zeros(20, 1, 5, 5)).bits
    8
    >>> spec("fc1.bias", torch.zeros(5)) is None
    True
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    # build one spec per kind now, so bad widths fail here and not mid-save
    specs = {}
    for conv, bits, index_bits in [
        (True, conv_bits, conv_index_bits),
        (False, fc_bits, fc_index_bits),
    ]:
        if stage == "P":
            specs[conv] = TensorSpec(sparsity=sparsity, index_bits=index_bits)
        else:
            specs[conv] = TensorSpec(
                values="codebook",
                bits=bits,
                sparsity=sparsity,
                index_bits=index_bits,
                coder="none" if stage == "P+Q" else coder,
            )

    def spec(name: str, tensor: torch.Tensor) -> TensorSpec | None:
        return specs[tensor.dim() > 2] if _is_weight(tensor) else None

    return spec


def step_spec(
    step: float | Mapping[str, float],
    *,
    rd_lambda: float = quant.STEP_LAMBDA,
    coder: str = "auto",
    sparsity: str = "auto",
    others: str = "float16",
) -> Callable[[str, torch.Tensor], TensorSpec | None]:
    """An ``.mlc`` spec that puts every weight on a uniform grid of ``step``.

    Weights (floating tensors of two or more dimensions) get step values
    (:mod:`mlcomp.quant.ecsq`: levels chosen with rate weight ``rd_lambda``,
    coded by ``coder``, zeros exact, positions by ``sparsity``); ``step`` is
    one number for all of them (a global step, as the NNC standard's ``qp``
    sets one, see :func:`mlcomp.quant.qp_step`) or a mapping from weight
    names to steps (e.g. finer for the layers that matter more). Other
    floating tensors (biases, norms) are stored as ``others`` (``float16``
    by default, ``float32`` for exact), and the rest exactly.

    >>> spec = step_spec(0.01)
    >>> spec("w", torch.zeros(8, 8)).values, spec("b", torch.zeros(8)).values
    ('step', 'float16')
    >>> step_spec({"fc1.weight": 0.02})("fc1.weight", torch.zeros(8, 8)).step
    0.02
    """
    if others not in ("float16", "float32"):
        raise ValueError(f"others must be 'float16' or 'float32', got {others!r}")
    steps = dict(step) if isinstance(step, Mapping) else None
    check = [TensorSpec(values="step", step=v, rd_lambda=rd_lambda, coder=coder,
                        sparsity=sparsity)
             for v in (steps.values() if steps else [step])]  # fmt: skip
    other = TensorSpec(values=others)

    def spec(name: str, tensor: torch.Tensor) -> TensorSpec | None:
        if _is_weight(tensor):
            if steps is None:
                return check[0]
            if name not in steps:
                raise KeyError(f"no step given for weight {name!r}")
            return dataclasses.replace(check[0], step=steps[name])
        return other if tensor.is_floating_point() else None

    return spec


def file_report(
    files: Mapping[str, str | os.PathLike], reference_bytes: int | None = None
) -> pd.DataFrame:
    """Where every byte of some ``.mlc`` files goes, one row per file.

    Columns: ``file bytes`` (``os.path.getsize``), then its parts —
    ``weight codes`` (values or codebook indices of the weights),
    ``indices`` (sparse positions), ``codebooks``, ``exact tensors``
    (biases and other tensors stored as they are) and ``header`` — which add
    up to the file; and, with ``reference_bytes`` (e.g. the float32 state
    dict's), ``ratio = reference_bytes / file bytes``.

    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.mlc"
    >>> save_compressed({"w": torch.randn(32, 32), "b": torch.zeros(32)}, path,
    ...                 deep_compression_spec("P+Q"))
    >>> row = file_report({"P+Q": path}, reference_bytes=33 * 32 * 4).loc["P+Q"]
    >>> int(row["weight codes"]), int(row["indices"]), int(row["codebooks"])
    (640, 640, 128)
    """
    rows = {}
    for label, path in files.items():
        table = inspect(path)
        exact = table["values"].str.startswith("raw")
        row = {
            "file bytes": os.path.getsize(path),
            "weight codes": int(table.loc[~exact, "value bytes"].sum()),
            "indices": int(table["index bytes"].sum()),
            "codebooks": int(table["codebook bytes"].sum()),
            "exact tensors": int(table.loc[exact, "bytes"].sum()),
            "header": table.attrs["header_bytes"],
        }
        parts = sum(v for k, v in row.items() if k != "file bytes")
        if parts != row["file bytes"]:  # the account must close
            raise RuntimeError(f"{path}: parts add up to {parts}, not the file size")
        if reference_bytes is not None:
            row["ratio"] = reference_bytes / row["file bytes"]
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def prune_state_dict(
    state_dict: Mapping[str, torch.Tensor], amount: float | int
) -> dict[str, torch.Tensor]:
    """A copy with the smallest-magnitude ``amount`` of each weight tensor set to zero.

    Weights are the floating tensors of two or more dimensions; everything
    else is copied unchanged. This is one-shot, per-tensor magnitude pruning
    without fine-tuning — what can be done to a state dict without data.
    ``amount`` follows :func:`mlcomp.utils.count`: a fraction in [0, 1] or a
    count of each tensor's entries.

    >>> state = {"w": torch.tensor([[0.1, -2.0], [0.5, -0.3]]), "b": torch.ones(2)}
    >>> prune_state_dict(state, 0.5)["w"].tolist()
    [[0.0, -2.0], [0.5, 0.0]]
    """
    utils.count(amount, max((t.numel() for t in state_dict.values()), default=0))
    out = {}
    for name, t in state_dict.items():
        if _is_weight(t) and utils.count(amount, t.numel(), f"entries of {name}"):
            t = t.masked_fill(~prune.magnitude_mask(t.float(), amount).bool(), 0)
        out[name] = t.clone()
    return out


def compress_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    prune_amount: float = 0.0,
    conv_bits: int = 8,
    fc_bits: int = 5,
    coder: str = "huffman",
    sparsity: str = "auto",
    step: float | Mapping[str, float] | None = None,
    rd_lambda: float = quant.STEP_LAMBDA,
    progress: bool = False,
) -> pd.DataFrame:
    """Prune (optionally) and store any state dict the Deep Compression way.

    Weights get magnitude pruning of ``prune_amount`` per tensor
    (:func:`prune_state_dict`), then k-means codebooks of ``conv_bits``
    (kernels of three or more dimensions) or ``fc_bits`` (matrices) with
    ``coder``-coded indices; ``sparsity="auto"`` picks dense, bitmask or
    relative positions per tensor, whichever is smallest, so unpruned tensors
    do not pay for indices. Other tensors are stored exactly. Returns the
    file's :func:`mlcomp.coding.inspect` table, whose ``max error`` column
    is each tensor's largest reconstruction error against the input as
    given, pruning included. With ``step``, the weights are stored on that
    uniform grid instead (:func:`step_spec`, biases in float16), and the
    bits are not used.

    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.mlc"
    >>> table = compress_state_dict({"w": torch.randn(64, 64)}, path,
    ...                             prune_amount=0.9, fc_bits=4)
    >>> table.loc["w", "values"], bool(table.loc["w", "bits/entry"] < 2)
    ('codebook 4-bit', True)
    >>> compress_state_dict({"w": torch.randn(64, 64)}, path, step=0.05,
    ...                     coder="rans").loc["w", "values"]
    'step 0.05 λ=0.116'
    """
    pruned = prune_state_dict(state_dict, prune_amount)
    if step is not None:
        spec = step_spec(step, rd_lambda=rd_lambda, coder=coder, sparsity=sparsity)
    else:
        spec = deep_compression_spec(
            "P+Q+H", conv_bits=conv_bits, fc_bits=fc_bits, sparsity=sparsity,
            coder=coder,
        )  # fmt: skip
    save_compressed(pruned, path, spec, progress=progress, reference=state_dict)
    return inspect(path)


def fisher_diagonal(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 64, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The diagonal of the Fisher information of ``model`` at ``inputs``, per parameter.

    ``F_i = E_x E_{y ~ p(y|x)} [(∂ log p(y|x) / ∂θ_i)**2]``: the expected
    squared gradient of the log-likelihood of a label drawn from the model's
    own prediction, averaged over the inputs (no labels needed). To second
    order, a small change ``δ`` of the weights raises the expected KL
    divergence from the model's predictions by ``(1/2) Σ F_i δ_i**2``,
    which is why it weighs quantization errors (Choi et al. 2017 use the
    Hessian the same way). Gradients are taken per example
    (``torch.func.vmap``), the model in eval mode, the labels sampled with
    ``seed``. Returns a dict of tensors shaped like the parameters.

    >>> from mlcomp.models import LeNet300100
    >>> F = fisher_diagonal(LeNet300100(), torch.randn(8, 1, 28, 28))
    >>> F["fc1.weight"].shape, bool(F["fc3.bias"].min() >= 0)
    (torch.Size([300, 784]), True)
    """
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2 or len(inputs) == 0:
        raise ValueError("inputs must be a non-empty batch tensor (N, ...)")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def log_likelihood(p, x, y):
        logits = torch.func.functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return -nn.functional.cross_entropy(logits, y.unsqueeze(0))

    per_example = torch.func.vmap(torch.func.grad(log_likelihood), in_dims=(None, 0, 0))
    generator = torch.Generator().manual_seed(seed)
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size]
            with torch.no_grad():
                probs = torch.softmax(model(x), dim=-1)
            y = torch.multinomial(probs, 1, generator=generator)[:, 0]
            grads = per_example(params, x, y)
            for k in total:
                total[k] += grads[k].pow(2).sum(0)
    finally:
        model.train(was_training)
    return {k: v / len(inputs) for k, v in total.items()}


class StepAllocator:
    """One uniform step per weight tensor, by equal slopes of rate and weighted error.

    For each weight tensor (two or more dimensions) and each ``qp`` of
    ``qps`` (steps :func:`mlcomp.quant.qp_step`), the levels are chosen by
    entropy-constrained quantization and the pair (bits of the levels,
    squared error of the weights weighted by their Fisher information
    ``fisher``, e.g. :func:`fisher_diagonal`) is recorded
    (:func:`mlcomp.quant.ecsq.rd_curve`; :attr:`curves`). Since the summed
    weighted error approximates twice the model's loss of fidelity (the
    expected KL divergence of its predictions), the best steps for a given
    total are those at which every tensor's curve has the same slope
    (:func:`mlcomp.quant.ecsq.allocate`): :meth:`steps` picks them for a
    price ``mu`` of error in bits, so a sensitive layer gets a finer step
    than one that matters little. :meth:`state_dict` returns the weights on
    their grids and :meth:`save` writes the ``.mlc`` file (step values,
    biases float16). The Fisher information sets the steps only: weighting
    each weight's error in the choice of its level as well (Choi et al.
    2017) made the LeNets' files larger at equal accuracy.

    Without ``fisher`` every weight counts the same, and the allocation
    minimizes the plain squared error of the weights.

    >>> state = {"a.weight": torch.randn(64, 64), "b.weight": torch.randn(8, 64)}
    >>> fisher = {"a.weight": torch.ones(64, 64),
    ...           "b.weight": torch.full((8, 64), 100.0)}
    >>> steps = StepAllocator(state, fisher, qps=range(-24, -4)).steps(mu=1.0)
    >>> steps["b.weight"] < steps["a.weight"]  # the sensitive layer is finer
    True
    """

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor],
        fisher: Mapping[str, torch.Tensor] | None = None,
        *,
        qps=range(-40, -3),
        rd_lambda: float = quant.STEP_LAMBDA,
        progress: bool = False,
    ):
        self.state = dict(state_dict)
        self.qps = [int(qp) for qp in qps]
        if not self.qps:
            raise ValueError("qps must name at least one quality parameter")
        self.rd_lambda = rd_lambda
        self.weights = {k: _importance(k, v, fisher)
                        for k, v in self.state.items() if _is_weight(v)}  # fmt: skip
        steps = np.array([quant.qp_step(qp) for qp in self.qps])
        rows, self._curves = [], {}
        for name in tqdm(self.weights, desc="rate-distortion", disable=not progress):
            x = self.state[name].detach().double().numpy().ravel()
            # a step too fine for the largest weight is never chosen
            usable = steps > float(np.abs(x).max(initial=0.0)) / quant.ecsq.MAX_LEVEL
            bits, dist = np.full(len(steps), np.inf), np.full(len(steps), np.inf)
            bits[usable], dist[usable] = quant.ecsq.rd_curve(
                x, steps[usable], rd_lambda, self.weights[name]
            )
            self._curves[name] = (bits, dist)
            rows += [
                {"tensor": name, "qp": qp, "bits": b, "distortion": d}
                for qp, b, d in zip(self.qps, bits, dist, strict=True)
            ]
        self.curves = pd.DataFrame(rows)

    def prices(self, n: int = 25) -> np.ndarray:
        """``n`` prices ``mu`` from coarse to fine, log-spaced over the curves' slopes.

        A tensor moves from one ``qp`` to the next finer one at the price
        ``Δbits / -Δdistortion`` between them; the grid spans the 2nd to the
        98th percentile of those prices over all tensors, so that a sweep
        over it runs from nearly the coarsest to nearly the finest steps.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        slopes = []
        for bits, dist in self._curves.values():
            ok = np.isfinite(bits) & np.isfinite(dist)
            d_bits, d_dist = np.diff(bits[ok]), np.diff(dist[ok])
            good = d_bits * d_dist < 0  # a finer step: more bits, less error
            slopes.append(-d_bits[good] / d_dist[good])
        slopes = np.concatenate(slopes)
        if slopes.size == 0:
            return np.ones(n)
        low, high = np.percentile(slopes, [2, 98])
        return np.geomspace(low, high, n)

    def qp(self, mu: float) -> dict[str, int]:
        """The ``qp`` of each weight tensor at the price ``mu``."""
        picks = quant.ecsq.allocate(list(self._curves.values()), mu)
        return {name: self.qps[i] for name, i in zip(self._curves, picks, strict=True)}

    def steps(self, mu: float) -> dict[str, float]:
        """The step of each weight tensor at the price ``mu`` (see the class)."""
        return {name: quant.qp_step(qp) for name, qp in self.qp(mu).items()}

    def state_dict(self, mu: float) -> dict[str, torch.Tensor]:
        """The state dict with every weight tensor on its grid at the price ``mu``."""
        out = dict(self.state)
        for name, step in self.steps(mu).items():
            tensor = self.state[name]
            x = tensor.detach().double().numpy()
            q = quant.step_levels(x, step, self.rd_lambda)
            out[name] = torch.from_numpy(q * step).reshape(tensor.shape)
            out[name] = out[name].to(tensor.dtype)
        return out

    def save(
        self, path: str | os.PathLike, mu: float, *, coder: str = "auto",
        progress: bool = False,
    ) -> pd.DataFrame:  # fmt: skip
        """Write :meth:`state_dict` at ``mu`` as an ``.mlc`` file; its inspect table."""
        spec = step_spec(self.steps(mu), rd_lambda=0.0, coder=coder)
        save_compressed(self.state_dict(mu), path, spec=spec, progress=progress)
        return inspect(path)


def _importance(name: str, tensor: torch.Tensor, fisher) -> np.ndarray | None:
    """A weight tensor's Fisher information as a flat array (None: all equal)."""
    if fisher is None:
        return None
    if name not in fisher:
        raise KeyError(f"no Fisher information for weight {name!r}")
    f = torch.as_tensor(fisher[name]).detach().double()
    if f.shape != tensor.shape:
        raise ValueError(
            f"Fisher information of {name!r} has shape {tuple(f.shape)}, "
            f"the weight {tuple(tensor.shape)}"
        )
    f = f.numpy().ravel()
    if not (np.isfinite(f).all() and f.min(initial=0.0) >= 0):
        raise ValueError(f"Fisher information of {name!r} must be finite and >= 0")
    return f
