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

import functools
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
    "TEACHER",
    "corpus",
    "evaluate",
    "export_onnx",
    "train_recipe",
]


@dataclass(frozen=True)
class LMRecipe:
    """Everything that determines a byte-level GPT's weights.

    ``steps`` optimizer steps of ``batch_size`` windows of ``block_size``
    predictions; warm-up over ``warmup`` steps to ``lr``, cosine decay to
    ``lr / 10``. With ``teacher`` (a zoo name), distillation at
    ``temperature`` and ``alpha``. ``max_val_bpc`` judges the result (not
    hashed): training that ends above it is an error.

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

    model = "gpt"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.batch_size < 1 or self.warmup < 0:
            raise ValueError(
                "steps, lr, batch_size and warmup must be positive (warmup >= 0)"
            )
        self.config()  # validates the shape

    def config(self) -> gpt.GPTConfig:
        """The model shape of this recipe."""
        return gpt.GPTConfig(
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )

    def build(self) -> gpt.GPT:
        """An untrained model of this recipe's shape."""
        return gpt.GPT(self.config())

    def digest(self) -> str:
        from mlcomp import zoo

        extra = {"data": datasets.SHAKESPEARE_SHA256, "format": zoo.FORMAT_VERSION}
        if self.teacher is not None:
            extra["teacher_digest"] = zoo.recipe_for(self.teacher).digest()
        return zoo._digest(self, extra)


TEACHER = "gpt-shakespeare"

RECIPES: dict[str, LMRecipe] = {
    # The teacher: 4 blocks of width 192 (1.9M parameters), 4,000 steps of
    # 32 x 256 bytes (33M bytes, about 7 passes over the training works).
    TEACHER: LMRecipe(max_val_bpc=2.2),
}


@functools.lru_cache(maxsize=2)
def corpus(split: str) -> torch.Tensor:
    """The bytes of a Shakespeare split as a 1-D uint8 tensor (cached).

    >>> corpus("val")[:3].tolist()
    [84, 72, 69]
    """
    data = datasets.shakespeare(split).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _learning_rate(recipe: LMRecipe, step: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr / 10``."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _batch(
    data: torch.Tensor, recipe: LMRecipe, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    n = recipe.block_size
    high = len(data) - n - 1
    starts = torch.randint(0, high, (recipe.batch_size,), generator=generator)
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
        betas=(0.9, 0.99),
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


def train_recipe(
    recipe: LMRecipe,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[gpt.GPT, dict]:
    """Train a byte-level GPT by ``recipe``; return it (eval mode) and its metrics.

    The metrics are the held-out bits per character (``val_bpc``), the
    training time, and the learning curve: every ``eval_every`` steps, the
    mean training loss since the last point and the bits per character on
    the first 16 KiB of the held-out works (in bits).

    >>> r = LMRecipe(n_layer=1, n_head=1, n_embd=16, block_size=16, steps=3,
    ...              eval_every=2)
    >>> net, info = train_recipe(r, progress=False)
    >>> sorted(info)
    ['curve', 'train_bytes', 'train_seconds', 'val_bpc']
    """
    from mlcomp import distill, zoo

    data = corpus("train")
    utils.set_seed(recipe.seed)
    net = recipe.build()
    teacher = None
    if recipe.teacher is not None:
        teacher = zoo.pretrained(recipe.teacher, progress=progress, cache_dir=cache_dir)
        if teacher.config.block_size != recipe.block_size:
            raise ValueError("a student must have its teacher's block_size")
    optimizer = _optimizer(net, recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    curve, running, count = [], 0.0, 0
    start = time.perf_counter()
    bar = tqdm(range(recipe.steps), desc="train", disable=not progress,
               mininterval=5.0)  # fmt: skip
    try:
        net.train()
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step)
            x, y = _batch(data, recipe, generator)
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
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            running, count = running + loss.item(), count + 1
            if (step + 1) % recipe.eval_every == 0 or step + 1 == recipe.steps:
                val = evaluate(net, max_bytes=16384)
                net.train()
                curve.append([step + 1, round(running / count / math.log(2), 4),
                              round(val, 4)])  # fmt: skip
                running, count = 0.0, 0
                bar.set_postfix(loss_bits=curve[-1][1], val_bpc=curve[-1][2])
    finally:
        torch.set_num_threads(threads_before)
    seconds = time.perf_counter() - start
    net.eval()
    val_bpc = evaluate(net)
    if val_bpc > recipe.max_val_bpc:
        raise RuntimeError(
            f"held-out {val_bpc:.3f} bits per character is above the recipe's "
            f"target {recipe.max_val_bpc}"
        )
    return net, {
        "val_bpc": round(val_bpc, 5),
        "train_seconds": round(seconds, 1),
        "train_bytes": recipe.steps * recipe.batch_size * recipe.block_size,
        "curve": curve,
    }


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
    state = dict(state)
    try:
        vocab, block, layers, heads, width = (int(v) for v in state.pop(_CONFIG_KEY))
        net = gpt.GPT(gpt.GPTConfig(vocab, block, layers, heads, width))
        net.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
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


DEFAULT_MODEL = TEACHER
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
