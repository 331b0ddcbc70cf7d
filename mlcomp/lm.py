"""The character (byte) language models of chapter 9: recipes, training, evaluation.

A :class:`LMRecipe` fixes everything that determines the weights of a
:class:`mlcomp.gpt.GPT` trained on the 38 training works of the shipped
Shakespeare corpus (:func:`mlcomp.datasets.shakespeare`): the shape, the
number of optimizer steps, the learning-rate schedule, the seed and, for a
student, its teacher and the distillation loss. The four held-out works
(``"val"``) are never trained on; :func:`evaluate` reports bits per
character on them. The zoo (:mod:`mlcomp.zoo`) trains, checks and ships
these models like the others.

Training draws windows of ``block_size + 1`` bytes at uniformly random
offsets of the training text from a seeded generator, and runs AdamW with
a linear warm-up then a cosine decay to a tenth of the peak rate, weight
decay on the matrices only, and the gradient norm clipped at 1, the usual
recipe for small GPTs. A student is trained on

``alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T))
+ (1 - alpha) * cross_entropy(student, next byte)``

at every position of every window (the teacher's whole next-byte
distribution as the target, Hinton et al. 2015), see
:func:`mlcomp.distill.kd_loss`.

>>> LMRecipe(n_layer=2, n_head=2, n_embd=32, steps=10).config().n_embd
32
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mlcomp import datasets, gpt, utils

__all__ = [
    "LMRecipe",
    "OnnxLM",
    "RECIPES",
    "STUDENT",
    "TEACHER",
    "calibration_batches",
    "corpus",
    "evaluate",
    "export_onnx",
    "in_blocks",
    "prequential",
    "shipped_budget",
    "train_recipe",
    "two_part_code",
]


@dataclass(frozen=True)
class LMRecipe:
    """Everything that determines a byte-level GPT's weights.

    ``steps`` optimizer steps of ``batch_size`` windows of ``block_size``
    predictions; warm-up over ``warmup`` steps to ``lr``, cosine decay to
    ``lr / 10``. With ``teacher`` (a zoo name), distillation at
    ``temperature`` and ``alpha``. With ``base`` (a zoo name) and
    ``energy``, the base model's block matrices are factorized by truncated
    SVD, each at the rank that keeps ``energy`` of its squared singular
    values (:func:`mlcomp.lowrank.factorize_`), and the factorized model is
    fine-tuned; its shape is the base's. ``max_val_bpc`` judges the result
    (not hashed): training that ends above it is an error.
    ``claims_steps`` and ``claims_max_val_bpc`` (not hashed) are the shorter
    budget ``make claims`` trains with when it retrains the zoo from another
    seed, and the check that budget must pass.

    >>> LMRecipe(steps=0)
    Traceback (most recent call last):
    ValueError: steps, lr, batch_size and warmup must be positive (warmup >= 0)
    """

    n_layer: int = 4
    n_head: int = 6
    n_embd: int = 192
    block_size: int = 256
    steps: int = 4000
    lr: float = 2e-3
    batch_size: int = 32
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    teacher: str | None = None
    temperature: float = 1.0
    alpha: float = 0.5
    eval_every: int = 250
    threads: int = 2
    max_val_bpc: float = 8.0  # a check, not hashed
    base: str | None = None
    energy: float | None = None
    claims_steps: int | None = None  # the budget of `make claims`, not hashed
    claims_max_val_bpc: float | None = None  # its check, not hashed

    model = "gpt"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.batch_size < 1 or self.warmup < 0:
            raise ValueError(
                "steps, lr, batch_size and warmup must be positive (warmup >= 0)"
            )
        if (self.base is None) != (self.energy is None):
            raise ValueError("a low-rank recipe needs both base and energy")
        if self.base is None:
            self.config()  # validates the shape

    def config(self) -> gpt.GPTConfig:
        """The model shape of this recipe (a low-rank recipe's: its base's)."""
        if self.base is not None:
            from mlcomp import zoo

            return zoo.recipe_for(self.base).config()
        return gpt.GPTConfig(
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )

    def build(self, cache_dir: str | os.PathLike | None = None) -> gpt.GPT:
        """An untrained model of this recipe's shape; for a low-rank recipe,
        its base factorized (the starting point of its fine-tuning)."""
        if self.base is None:
            return gpt.GPT(self.config())
        from mlcomp import lowrank, zoo

        net = zoo.pretrained(self.base, progress=False, cache_dir=cache_dir)
        return lowrank.factorize_(net, energy=self.energy, filter_fn=in_blocks)

    def digest(self) -> str:
        from mlcomp import zoo

        extra = {"data": datasets.SHAKESPEARE_SHA256, "format": zoo.FORMAT_VERSION}
        for field in ("teacher", "base"):
            name = getattr(self, field)
            if name is not None:
                extra[f"{field}_digest"] = zoo.recipe_for(name).digest()
        payload = {
            k: v for k, v in dataclasses.asdict(self).items()
            if k not in zoo.CHECKS and not (k in _OPTIONAL and v is None)
        }  # fmt: skip
        return hashlib.sha256(
            json.dumps(payload | extra, sort_keys=True).encode()
        ).hexdigest()


# fields added after the first models were shipped: hashed only when set, so
# that the recipes that do not use them keep their digests
_OPTIONAL = ("base", "energy")


def in_blocks(module: nn.Module, name: str) -> bool:
    """A ``filter_fn`` for the matrices of the Transformer blocks.

    The embeddings and the tied output head are left alone: they are one
    matrix, and pruning or factorizing the head would untie it.

    >>> net = LMRecipe(n_layer=1, n_head=1, n_embd=8, block_size=8, steps=1).build()
    >>> [n for n, m in net.named_modules() if in_blocks(m, n)][:2]
    ['blocks.0', 'blocks.0.ln1']
    """
    return name.startswith("blocks.")


TEACHER = "gpt-shakespeare"

STUDENT = "gpt-shakespeare-s-kd"
_STUDENT_SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "steps": 2500}

RECIPES: dict[str, LMRecipe] = {
    # The teacher: 4 blocks of width 192 (1.9M parameters), 4,000 steps of
    # 32 x 256 bytes (33M bytes, about 7 passes over the training works).
    TEACHER: LMRecipe(max_val_bpc=2.2, claims_steps=600, claims_max_val_bpc=2.8),
    # The student: width 128 (0.86M parameters), 2,500 steps, distilled from
    # the teacher (T = 2, alpha = 0.5).
    STUDENT: LMRecipe(
        **_STUDENT_SHAPE,
        teacher=TEACHER,
        temperature=2.0,
        alpha=0.5,
        max_val_bpc=2.6,
        claims_steps=400,
        claims_max_val_bpc=3.3,
    ),  # fmt: skip
    # A small model (2 blocks of width 64, 0.1M parameters) for the
    # description-length curve.
    "gpt-shakespeare-xs": LMRecipe(
        n_layer=2,
        n_head=2,
        n_embd=64,
        steps=2000,
        lr=3e-3,
        max_val_bpc=3.5,
        claims_steps=400,
        claims_max_val_bpc=3.8,
    ),  # fmt: skip
    # The teacher's block matrices factorized by truncated SVD at 80% energy
    # (0.80M parameters), then fine-tuned for 500 steps.
    "gpt-shakespeare-svd": LMRecipe(
        base=TEACHER,
        energy=0.8,
        steps=500,
        lr=1e-3,
        warmup=20,
        max_val_bpc=2.6,
        claims_steps=100,
        claims_max_val_bpc=3.5,
    ),  # fmt: skip
}


@functools.lru_cache(maxsize=2)
def corpus(split: str) -> torch.Tensor:
    """The bytes of a Shakespeare split as a 1-D uint8 tensor (cached).

    >>> corpus("val")[:3].tolist()
    [84, 72, 69]
    """
    data = datasets.shakespeare(split).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def calibration_batches(
    windows: int = 16, batch_size: int = 4, block_size: int = 256, seed: int = 0
) -> list[torch.Tensor]:
    """``windows`` random windows of the training works, in batches (int64 inputs).

    The calibration data of post-training methods (Wanda's activation norms,
    static quantization): text the model was trained on, never the held-out
    works, drawn at seeded uniform offsets.

    >>> [tuple(b.shape) for b in calibration_batches(6, 4, 8)]
    [(4, 8), (2, 8)]
    """
    if windows < 1 or batch_size < 1 or block_size < 1:
        raise ValueError(
            f"windows, batch_size and block_size must be >= 1, got "
            f"{windows}, {batch_size}, {block_size}"
        )
    text = corpus("train")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(text) - block_size, (windows,), generator=g)
    rows = [text[s : s + block_size] for s in starts.tolist()]
    return [
        torch.stack(rows[i : i + batch_size]).long()
        for i in range(0, windows, batch_size)
    ]


def shipped_budget() -> bool:
    """Whether this chapter's models are trained with their shipped step counts.

    False under ``make claims`` (``$MLCOMP_ZOO_SEED`` set), whose recipes use
    the shorter ``claims_steps``: a notebook asks this before asserting a
    claim that only the full budget can support, and says which case holds.

    >>> shipped_budget()  # $MLCOMP_ZOO_SEED not set
    True
    """
    from mlcomp import zoo  # imported late: zoo builds on lm

    return all(zoo.recipe_for(n).steps == r.steps for n, r in RECIPES.items())


BETAS = (0.9, 0.99)  # AdamW's moment decays
FINAL_LR_FRACTION = 0.1  # the cosine decay ends at this fraction of the peak
CLIP_NORM = 1.0  # the gradient norm is clipped at this


def _learning_rate(recipe: LMRecipe, step: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr / 10``."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    f = FINAL_LR_FRACTION
    return recipe.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t)))


def _batch(
    data: torch.Tensor, n: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    high = len(data) - n - 1
    starts = torch.randint(0, high, (batch_size,), generator=generator)
    windows = torch.stack([data[s : s + n + 1] for s in starts.tolist()]).long()
    return windows[:, :-1], windows[:, 1:]  # (B, T) inputs and next bytes


def _optimizer(net: nn.Module, recipe: LMRecipe) -> torch.optim.Optimizer:
    decay = [p for p in net.parameters() if p.dim() >= 2]
    rest = [p for p in net.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        betas=BETAS,
    )


def evaluate(model: gpt.GPT, split: str = "val", max_bytes: int | None = None) -> float:
    """Bits per character of ``model`` on a Shakespeare split (or its first bytes).

    >>> net = LMRecipe(n_layer=1, n_head=1, n_embd=8, block_size=8, steps=1).build()
    >>> round(evaluate(net, max_bytes=1000), 1)
    8.0
    """
    data = corpus(split)
    if max_bytes is not None:
        data = data[:max_bytes]
    return gpt.bits_per_byte(model, data.long())


def _fit(
    net: gpt.GPT,
    data: torch.Tensor,
    recipe: LMRecipe,
    teacher: gpt.GPT | None = None,
    progress: bool = True,
    curve: bool = True,
) -> list:
    """The training loop of :func:`train_recipe`, on the bytes ``data``.

    Returns the learning curve (empty with ``curve=False``).
    """
    from mlcomp import distill

    optimizer = _optimizer(net, recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    n = net.config.block_size
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    points, running, count = [], 0.0, 0
    bar = tqdm(range(recipe.steps), desc="train", disable=not progress,
               mininterval=5.0)  # fmt: skip
    try:
        net.train()
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step)
            x, y = _batch(data, n, recipe.batch_size, generator)
            logits, loss = net(x, targets=y)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits, _ = teacher(x)
                loss = distill.kd_loss(
                    logits.flatten(0, 1),
                    teacher_logits.flatten(0, 1),
                    y.flatten(),
                    recipe.temperature,
                    recipe.alpha,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), CLIP_NORM)
            optimizer.step()
            running, count = running + loss.item(), count + 1
            last = step + 1 == recipe.steps
            if curve and ((step + 1) % recipe.eval_every == 0 or last):
                val = evaluate(net, max_bytes=16384)
                net.train()
                points.append([step + 1, round(running / count / math.log(2), 4),
                               round(val, 4)])  # fmt: skip
                running, count = 0.0, 0
                bar.set_postfix(loss_bits=points[-1][1], val_bpc=points[-1][2])
    finally:
        torch.set_num_threads(threads_before)
        bar.close()
    net.eval()
    return points


def train_recipe(
    recipe: LMRecipe,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[gpt.GPT, dict]:
    """Train a byte-level GPT by ``recipe``; return it (eval mode) and its metrics.

    The metrics are the held-out bits per character (``val_bpc``), the
    training time, and the learning curve: every ``eval_every`` steps, the
    mean training loss since the last point and the bits per character on
    the first 16 KiB of the held-out works (in bits). With a teacher, the
    training loss is the distillation loss.

    >>> r = LMRecipe(n_layer=1, n_head=1, n_embd=16, block_size=16, steps=3,
    ...              eval_every=2)
    >>> net, info = train_recipe(r, progress=False)
    >>> sorted(info)
    ['curve', 'train_bytes', 'train_seconds', 'val_bpc']
    """
    from mlcomp import zoo

    utils.set_seed(recipe.seed)
    net = recipe.build(cache_dir=cache_dir)
    teacher = None
    if recipe.teacher is not None:
        teacher = zoo.pretrained(recipe.teacher, progress=progress, cache_dir=cache_dir)
        if teacher.config.block_size != recipe.config().block_size:
            raise ValueError("a student must have its teacher's block_size")
    start = time.perf_counter()
    curve = _fit(net, corpus("train"), recipe, teacher, progress)
    seconds = time.perf_counter() - start
    val_bpc = evaluate(net)
    if val_bpc > recipe.max_val_bpc:
        raise RuntimeError(
            f"held-out {val_bpc:.3f} bits per character is above the recipe's "
            f"target {recipe.max_val_bpc}"
        )
    return net, {
        "val_bpc": round(val_bpc, 5),
        "train_seconds": round(seconds, 1),
        "train_bytes": recipe.steps * recipe.batch_size * net.config.block_size,
        "curve": curve,
    }


def prequential(
    data: bytes, boundaries: list[int], recipe: LMRecipe, progress: bool = False
):
    """The prequential (online) code length of ``data`` (Blier & Ollivier 2018).

    The first ``boundaries[0]`` bytes are sent with a uniform code (8 bits
    each); then, for each block ``[b_k, b_(k+1))`` (the last one ends at
    ``len(data)``), a fresh model of ``recipe``'s shape is trained from
    ``recipe.seed`` for ``recipe.steps`` steps on the bytes before ``b_k``
    and codes the block (:func:`mlcomp.textcode.code_length`). A receiver
    can repeat every training run on what it has decoded, so no model is
    ever sent: the total is a description length of the data alone.

    Returns a table with one row per block: its bytes and bits.

    >>> r = LMRecipe(n_layer=1, n_head=1, n_embd=16, block_size=16, steps=2,
    ...              batch_size=4, warmup=1)
    >>> table = prequential(b"abcd" * 64, [64, 128], r)
    >>> table["bytes"].tolist(), float(table["bits"].iloc[0])
    ([64, 64, 128], 512.0)
    """
    import pandas as pd

    from mlcomp import textcode

    data = bytes(data)
    edges = [0, *boundaries, len(data)]
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError("boundaries must increase strictly inside (0, len(data))")
    n = recipe.config().block_size
    if boundaries[0] <= n + 1:
        raise ValueError(
            f"the first block must be longer than block_size + 1 ({n + 1} bytes) "
            "to train on"
        )
    rows = [{"start": 0, "end": edges[1], "bytes": edges[1], "bits": 8.0 * edges[1]}]
    for a, b in tqdm(list(zip(edges[1:], edges[2:], strict=False)),
                     desc="prequential", disable=not progress):  # fmt: skip
        utils.set_seed(recipe.seed)
        net = recipe.build()
        prefix = torch.frombuffer(bytearray(data[:a]), dtype=torch.uint8)
        _fit(net, prefix, recipe, progress=False, curve=False)
        bits, _ = textcode.code_length(net, data[a:b])
        rows.append({"start": a, "end": b, "bytes": b - a, "bits": bits})
    table = pd.DataFrame(rows)
    table["bits per byte"] = table["bits"] / table["bytes"]
    return table


# --------------------------------------------------------------------------
# ONNX Runtime: the whole-window graph and the one-step graph with a KV cache
# --------------------------------------------------------------------------


class _Prefill(nn.Module):
    """idx (B, T) -> logits (B, T, V) and the cache (L, 2, B, H, T, D)."""

    def __init__(self, net: gpt.GPT):
        super().__init__()
        self.net = net

    def forward(self, idx):
        logits, cache = self.net(idx, cache=[])
        return logits, torch.stack([torch.stack(kv) for kv in cache])


class _Step(nn.Module):
    """idx (B, 1), cache (L, 2, B, H, S, D) -> logits (B, V), the cache with S + 1."""

    def __init__(self, net: gpt.GPT):
        super().__init__()
        self.net = net

    def forward(self, idx, past):
        cache = [(past[i, 0], past[i, 1]) for i in range(past.shape[0])]
        logits, cache = self.net(idx, cache=cache)
        return logits[:, -1], torch.stack([torch.stack(kv) for kv in cache])


def export_onnx(
    model: gpt.GPT, folder: str | os.PathLike, quantize: str | None = None
) -> dict[str, Path]:
    """Write ``model`` as two ONNX graphs in ``folder``: ``prefill`` and ``step``.

    ``prefill`` runs a window of up to ``block_size`` bytes and returns the
    logits and the keys and values of every block (the KV cache); ``step``
    takes one byte per row and the cache, and returns the next logits and
    the cache one longer. Both hold all the weights; ``prefill.onnx``'s size
    is the model's. ``quantize="dynamic"`` adds ``prefill.int8.onnx`` and
    ``step.int8.onnx``, ONNX Runtime's dynamic int8 quantization of both
    (int8 weights, per channel; activations quantized to 8 bits on the fly
    in every matrix product). Returns the paths by name.

    >>> import tempfile
    >>> net = LMRecipe(n_layer=1, n_head=1, n_embd=8, block_size=8, steps=1).build()
    >>> sorted(export_onnx(net, tempfile.mkdtemp(), quantize="dynamic"))
    ['prefill', 'prefill.int8', 'step', 'step.int8']
    """
    from mlcomp.quant import runtime

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    head = c.n_embd // c.n_head
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=1, max=c.block_size)
    past = torch.export.Dim("past", min=1, max=c.block_size - 1)
    was_training = model.training
    model.eval()
    paths = {"prefill": folder / "prefill.onnx", "step": folder / "step.onnx"}
    example = torch.zeros(2, 3, dtype=torch.long)
    cache = torch.zeros(c.n_layer, 2, 2, c.n_head, 3, head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            torch.onnx.export(
                _Prefill(model), (example,), str(paths["prefill"]),
                input_names=["idx"], output_names=["logits", "present"],
                dynamic_shapes=({0: batch, 1: length},), dynamo=True,
                external_data=False, verbose=False,
            )  # fmt: skip
            torch.onnx.export(
                _Step(model), (example[:, :1], cache), str(paths["step"]),
                input_names=["idx", "past"], output_names=["logits", "present"],
                dynamic_shapes=({0: batch}, {2: batch, 4: past}), dynamo=True,
                external_data=False, verbose=False,
            )  # fmt: skip
    finally:
        model.train(was_training)
    for path in list(paths.values()):
        runtime.strip_metadata(path)
    if quantize == "dynamic":
        for name in ("prefill", "step"):
            paths[f"{name}.int8"] = runtime.quantize_onnx(
                paths[name], folder / f"{name}.int8.onnx", mode="dynamic"
            )
    elif quantize is not None:
        raise ValueError(f"quantize must be None or 'dynamic', got {quantize!r}")
    return paths


class OnnxLM(nn.Module):
    """A GPT run by ONNX Runtime, with the interface of :class:`mlcomp.gpt.GPT`.

    ``forward(idx)`` returns ``(logits, None)``; ``forward(idx, cache=[])``
    runs the prefill graph and ``forward(idx, cache=cache)`` the step graph,
    so :func:`mlcomp.gpt.bits_per_byte` and :func:`mlcomp.gpt.generate` work
    on it unchanged. ``threads`` is ONNX Runtime's intra-op thread count.

    >>> import tempfile
    >>> net = LMRecipe(n_layer=1, n_head=1, n_embd=8, block_size=8, steps=1).build()
    >>> paths = export_onnx(net, tempfile.mkdtemp())
    >>> onnx = OnnxLM(paths["prefill"], paths["step"], net.config, threads=1)
    >>> onnx(torch.zeros(2, 8, dtype=torch.long))[0].shape
    torch.Size([2, 8, 256])
    """

    def __init__(
        self,
        prefill: str | os.PathLike,
        step: str | os.PathLike,
        config: gpt.GPTConfig,
        threads: int = 2,
    ):
        from mlcomp.quant import runtime

        super().__init__()
        self.config = config
        self.prefill = runtime._session(Path(prefill), threads)
        self.step = runtime._session(Path(step), threads)

    def forward(self, idx, targets=None, cache=None):
        if targets is not None:
            raise ValueError("OnnxLM computes logits only")
        x = idx.detach().cpu().numpy().astype(np.int64, copy=False)
        if cache:  # one more position per row
            logits, present = self.step.run(None, {"idx": x, "past": cache[0]})
            return torch.from_numpy(logits)[:, None], [present]
        logits, present = self.prefill.run(None, {"idx": x})
        logits = torch.from_numpy(logits)
        return (logits, [present]) if cache is not None else (logits, None)


# --------------------------------------------------------------------------
# Files: the .mlc pipeline, and the models `mlcomp text` can code with
# --------------------------------------------------------------------------

_CONFIG_KEY = "gpt_config"  # (vocab, block, layers, heads, width), stored exactly


def from_state_dict(state: dict[str, torch.Tensor]) -> gpt.GPT:
    """The GPT that ``state`` holds (with its shape under ``"gpt_config"``).

    >>> net = LMRecipe(n_layer=1, n_head=2, n_embd=8, block_size=4, steps=1).build()
    >>> from_state_dict(_with_config(net)).config.n_head
    2
    """
    from mlcomp import lowrank
    from mlcomp.layers import replace_module

    state = dict(state)
    try:
        vocab, block, layers, heads, width = (int(v) for v in state.pop(_CONFIG_KEY))
        net = gpt.GPT(gpt.GPTConfig(vocab, block, layers, heads, width))
        for key, value in state.items():  # factorized layers (an SVD model)
            if key.endswith(".first.weight"):
                name = key.removesuffix(".first.weight")
                dense = net.get_submodule(name)
                replace_module(net, name, lowrank.LowRankLinear(
                    dense.in_features, dense.out_features, value.shape[0],
                    bias=f"{name}.second.bias" in state))  # fmt: skip
        net.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"not the weights of an mlcomp GPT: {exc}") from None
    return net.eval()


def _with_config(net: gpt.GPT) -> dict[str, torch.Tensor]:
    c = net.config
    shape = [c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd]
    return {**net.state_dict(), _CONFIG_KEY: torch.tensor(shape, dtype=torch.int32)}


def save(net: gpt.GPT, path: str | os.PathLike, bits: int = 6):
    """Write ``net`` as an ``.mlc`` file: a k-means codebook of ``bits`` for
    every matrix (embeddings included; zeros of a pruned model stored by
    position), entropy-coded; norms and biases exact.

    Returns the file's :func:`mlcomp.coding.inspect` table.

    >>> import tempfile
    >>> net = LMRecipe(n_layer=1, n_head=2, n_embd=16, block_size=8, steps=1).build()
    >>> table = save(net, Path(tempfile.mkdtemp()) / "lm.mlc", bits=4)
    >>> table.loc["blocks.0.mlp.fc.weight", "values"]
    'codebook 4-bit'
    """
    from mlcomp import pipeline

    return pipeline.compress_state_dict(
        _with_config(net), path, conv_bits=bits, fc_bits=bits, sparsity="auto",
        coder="auto",
    )  # fmt: skip


def load(path: str | os.PathLike) -> gpt.GPT:
    """A GPT from an ``.mlc`` file written by :func:`save`.

    >>> import tempfile
    >>> net = LMRecipe(n_layer=1, n_head=2, n_embd=16, block_size=8, steps=1).build()
    >>> path = Path(tempfile.mkdtemp()) / "lm.mlc"
    >>> _ = save(net, path)
    >>> load(path).config.n_embd
    16
    """
    from mlcomp.coding import load_compressed

    if Path(path).suffix.lower() != ".mlc":
        raise ValueError(f"{path}: a compressed language model is an .mlc file")
    return from_state_dict(load_compressed(path))


DEFAULT_MODEL = "gpt-shakespeare-svd"  # the chapter's compressed model
DEFAULT_BITS = 6


def model_names() -> list[str]:
    """The names ``mlcomp text --model`` accepts (besides a path to an .mlc file)."""
    return sorted(RECIPES) + sorted(f"{n}:mlc{DEFAULT_BITS}" for n in RECIPES)


def resolve(name: str, cache_dir: str | os.PathLike | None = None) -> gpt.GPT:
    """The model called ``name``: a zoo name (float32 weights), ``NAME:mlcB``
    (that model through an ``.mlc`` file of ``B`` bits, written into the cache
    on first use and reloaded), or the path of an ``.mlc`` file.

    >>> resolve("gpt2-xl")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: unknown language model 'gpt2-xl'; choose from [...] or give an .mlc file
    """
    from mlcomp import zoo

    if name.lower().endswith(".mlc"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"no model file {name}")
        return load(name)
    base, _, suffix = name.partition(":")
    if base not in RECIPES or (suffix and not (
            suffix.startswith("mlc") and suffix[3:].isdigit())):  # fmt: skip
        raise ValueError(
            f"unknown language model {name!r}; choose from {model_names()} "
            "or give an .mlc file"
        )
    if not suffix:
        return zoo.pretrained(base, progress=False, cache_dir=cache_dir)
    bits = int(suffix[3:])
    folder = utils.cache_dir("lm") if cache_dir is None else Path(cache_dir) / "lm"
    digest = zoo.record(base, cache_dir=cache_dir)["sha256"][:12]
    path = folder / f"{base}-{bits}bit-{digest}.mlc"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        save(zoo.pretrained(base, progress=False, cache_dir=cache_dir), path, bits)
    return load(path)


def two_part_code(
    net: gpt.GPT,
    bits: int,
    texts: dict[str, bytes],
    folder: str | os.PathLike,
    every: int | dict[str, int] = 1,
) -> dict[str, float]:
    """A two-part description: the model's ``.mlc`` file, then each text coded with it.

    Saves ``net`` at ``bits`` into ``folder``, reloads it (the receiver's
    model, quantization error included) and returns ``{"model bytes": ...}``
    plus ``"<name> data bytes"`` for every text: the exact arithmetic-code
    length of :func:`mlcomp.textcode.code_length`, estimated from every
    ``every``-th chunk (per text if a dict) and scaled to the whole text.
    The description length of the text is the sum of the two parts.

    >>> net = LMRecipe(n_layer=1, n_head=1, n_embd=8, block_size=8, steps=1).build()
    >>> import tempfile
    >>> d = two_part_code(net, 6, {"x": b"abc" * 20}, tempfile.mkdtemp())
    >>> sorted(d), d["x data bytes"] > 0
    (['model bytes', 'x data bytes'], True)
    """
    from mlcomp import textcode  # imported late: textcode builds on lm

    path = Path(folder) / f"two-part-{bits}.mlc"
    save(net, path, bits=bits)
    model = load(path)
    out: dict[str, float] = {"model bytes": path.stat().st_size}
    for name, data in texts.items():
        k = every[name] if isinstance(every, dict) else every
        coded, counted = textcode.code_length(model, data, every=k)
        out[f"{name} data bytes"] = coded / counted * len(data) / 8 if counted else 0.0
    path.unlink()
    return out


def held_out_sample(per_work: int = 16384) -> bytes:
    """The first ``per_work`` bytes of each held-out work, joined by blank lines.

    A fixed sample for comparing many variants quickly; the full held-out
    works (:func:`evaluate`) for the numbers that matter most.

    >>> len(held_out_sample(1000))
    4006
    """
    texts = [w.text[:per_work] for w in datasets.shakespeare_works("val")]
    return "\n\n".join(texts).encode("utf-8")
