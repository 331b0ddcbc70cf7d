"""Pretrained reference models, trained here and cached, never downloaded.

Every chapter compresses the same two networks, so they are trained once, on
this machine, by a fixed recipe, and cached as safetensors files under
``$MLCOMP_CACHE/zoo`` (default ``~/.cache/mlcomp/zoo``). Each weights file has
a JSON record beside it with the recipe, the recipe's hash and the file's
SHA-256. A cached model is used only if all three still agree; a corrupt file
or a changed recipe is reported with a warning and the model is retrained. No
pickle is ever loaded.

Run ``mlcomp zoo`` (or ``make zoo``) to train or verify every model ahead of time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mlcomp import datasets, models, train, utils

__all__ = [
    "Recipe",
    "RECIPES",
    "StaleCacheWarning",
    "pretrained",
    "record",
    "train_recipe",
]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a reference model's weights."""

    model: str
    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    train_subset: int | None = None  # first N training images; None = all
    threads: int = 2  # fixed, so the weights do not depend on the machine's cores
    min_test_accuracy: float = 0.0  # training that ends below this is an error

    def __post_init__(self) -> None:
        if self.model not in models.MODELS:
            raise ValueError(f"unknown model {self.model!r}")
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1 or self.threads < 1:
            raise ValueError(f"invalid recipe {self}")

    def digest(self) -> str:
        """SHA-256 of the recipe, the file-format version and the torch version.

        >>> len(Recipe("lenet5", epochs=1, lr=1e-3).digest())
        64
        """
        payload = dataclasses.asdict(self) | {
            "format": FORMAT_VERSION,
            "torch": torch.__version__.split("+")[0],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PruneRecipe:
    """A sparse model: a zoo model pruned gradually while fine-tuning.

    Starts from the zoo model ``base`` and runs
    :func:`mlcomp.prune.gradual_prune_` to ``sparsity``; the masks are made
    permanent, so the cached weights simply contain the zeros. A sparse
    ``base`` (itself a ``PruneRecipe``) continues from its own sparsity, so a
    sparser model can be had for a few more epochs.
    """

    base: str
    sparsity: float
    epochs: int
    lr: float
    prune_epochs: float
    scope: str = "global"
    every: int = 50
    batch_size: int = 128
    seed: int = 0
    threads: int = 2
    max_accuracy_drop: float = 0.005  # vs the dense base, on the test set

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1 or self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"invalid recipe {self}")

    @property
    def model(self) -> str:
        return RECIPES[self.base].model

    def digest(self) -> str:
        """SHA-256 of this recipe and, through it, of its base's recipe.

        >>> len(RECIPES["lenet5-fashion-sparse90"].digest())
        64
        """
        payload = dataclasses.asdict(self) | {
            "base_digest": RECIPES[self.base].digest()
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


RECIPES: dict[str, Recipe | PruneRecipe] = {
    # About 150 s and 50 s of training on two cores.
    "lenet5-fashion": Recipe("lenet5", epochs=7, lr=2e-3, min_test_accuracy=0.91),
    "lenet300-fashion": Recipe(
        "lenet300100", epochs=20, lr=1e-3, min_test_accuracy=0.885
    ),
    # 90% of the weights zero: global magnitude, Zhu & Gupta schedule (about
    # 70 s and 4 minutes on two cores).
    "lenet300-fashion-sparse90": PruneRecipe(
        "lenet300-fashion", sparsity=0.9, epochs=15, lr=5e-4, prune_epochs=8
    ),
    "lenet5-fashion-sparse90": PruneRecipe(
        "lenet5-fashion", sparsity=0.9, epochs=8, lr=1e-3, prune_epochs=4
    ),
    # Deep Compression's sparsities (chapter 7): a few more epochs from the
    # 90% models, to 93% and 94% (about 40 s and 70 s on two cores).
    "lenet300-fashion-sparse93": PruneRecipe(
        "lenet300-fashion-sparse90",
        sparsity=0.93,
        epochs=10,
        lr=5e-4,
        prune_epochs=4,
    ),  # fmt: skip
    "lenet5-fashion-sparse94": PruneRecipe(
        "lenet5-fashion-sparse90", sparsity=0.94, epochs=3, lr=1e-3, prune_epochs=2
    ),
    # The accuracy-sparsity curve of LeNet-5: one short schedule (3 epochs,
    # pruning over the first 2; about 60 s each) at four sparsities.
    **{
        f"lenet5-fashion-sparse{round(100 * s)}-3ep": PruneRecipe(
            "lenet5-fashion",
            sparsity=s,
            epochs=3,
            lr=1e-3,
            prune_epochs=2,
            max_accuracy_drop=drop,
        )  # fmt: skip
        for s, drop in [(0.8, 0.01), (0.9, 0.015), (0.95, 0.025), (0.98, 0.07)]
    },
}


class StaleCacheWarning(UserWarning):
    """A cached model was corrupt or trained by another recipe; it is retrained."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_pruned(
    recipe: PruneRecipe, progress: bool, cache_dir
) -> tuple[nn.Module, dict]:
    from mlcomp import prune  # imported here: prune imports train, not zoo

    net = pretrained(recipe.base, progress=progress, cache_dir=cache_dir)
    test = datasets.fashion_mnist("test")
    base_accuracy = train.evaluate(net, test)
    # a sparse base continues from its own sparsity (a dense one starts at 0)
    initial = (
        prune.sparsity(net)["total"]
        if isinstance(RECIPES[recipe.base], PruneRecipe)
        else 0.0
    )
    utils.set_seed(recipe.seed)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    start = time.perf_counter()
    try:
        prune.gradual_prune_(
            net, datasets.fashion_mnist("train"), recipe.sparsity, recipe.epochs,
            recipe.lr, initial=initial, prune_epochs=recipe.prune_epochs,
            every=recipe.every,
            scope=recipe.scope, batch_size=recipe.batch_size, seed=recipe.seed,
            progress=progress,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)
    prune.remove_(net)
    seconds = time.perf_counter() - start
    accuracy = train.evaluate(net, test)
    if accuracy < base_accuracy - recipe.max_accuracy_drop:
        raise RuntimeError(
            f"pruned accuracy {accuracy:.4f} is more than {recipe.max_accuracy_drop} "
            f"below the dense {base_accuracy:.4f}"
        )
    info = {"test_accuracy": accuracy, "train_seconds": round(seconds, 1),
            "base_test_accuracy": base_accuracy}  # fmt: skip
    return net.eval(), info


def train_recipe(
    recipe: Recipe | PruneRecipe,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, dict]:
    """Train a model by ``recipe``; return it (in eval mode) and its metrics.

    >>> net, info = train_recipe(Recipe("lenet300100", epochs=1, lr=1e-3,
    ...                                 train_subset=512), progress=False)
    >>> sorted(info)
    ['test_accuracy', 'train_seconds']
    """
    if isinstance(recipe, PruneRecipe):
        return _train_pruned(recipe, progress, cache_dir)
    utils.set_seed(recipe.seed)
    net = models.create(recipe.model)
    data = datasets.fashion_mnist("train")
    if recipe.train_subset is not None:
        data = (data.images[: recipe.train_subset], data.labels[: recipe.train_subset])
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    start = time.perf_counter()
    try:
        train.fit(
            net,
            data,
            recipe.epochs,
            recipe.lr,
            batch_size=recipe.batch_size,
            optimizer=recipe.optimizer,
            weight_decay=recipe.weight_decay,
            schedule=recipe.schedule,
            seed=recipe.seed,
            progress=progress,
        )
    finally:
        torch.set_num_threads(threads_before)
    seconds = time.perf_counter() - start
    accuracy = train.evaluate(net, datasets.fashion_mnist("test"))
    return net.eval(), {"test_accuracy": accuracy, "train_seconds": round(seconds, 1)}


def _paths(name: str, cache: Path) -> tuple[Path, Path]:
    return cache / f"{name}.safetensors", cache / f"{name}.json"


def _load_cached(name: str, recipe: Recipe, cache: Path) -> nn.Module | None:
    """The cached model, or None (with a warning saying why) if it can't be trusted."""
    weights, meta = _paths(name, cache)
    if not weights.exists() and not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
        if info.get("recipe_digest") != recipe.digest():
            reason = "it was trained by a different recipe or torch version"
        elif info.get("sha256") != _sha256(weights):
            reason = "its checksum does not match (corrupt or modified file)"
        else:
            net = models.create(recipe.model)
            net.load_state_dict(load_file(str(weights)))
            return net.eval()
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        reason = f"it cannot be read ({type(exc).__name__}: {exc})"
    warnings.warn(
        f"cached {name!r} in {cache} is not used: {reason}; retraining",
        StaleCacheWarning,
        stacklevel=3,
    )
    return None


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def pretrained(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    retrain: bool = False,
    recipe: Recipe | PruneRecipe | None = None,
) -> nn.Module:
    """Return the reference model ``name`` (see :data:`RECIPES`) in eval mode.

    Loads it from the cache when the cache is intact and made by the current
    recipe; otherwise trains it (a few minutes on two cores), checks that it
    reaches the recipe's ``min_test_accuracy``, and caches it. ``recipe``
    replaces the registered recipe (tests use tiny ones).

    >>> net = pretrained("lenet300-fashion", progress=False)
    >>> type(net).__name__, net.training
    ('LeNet300100', False)
    """
    if recipe is None:
        if name not in RECIPES:
            raise KeyError(f"unknown zoo model {name!r}; choose from {sorted(RECIPES)}")
        recipe = RECIPES[name]
    cache = Path(cache_dir) if cache_dir is not None else utils.cache_dir("zoo")
    cache.mkdir(parents=True, exist_ok=True)
    if not retrain:
        net = _load_cached(name, recipe, cache)
        if net is not None:
            return net
    net, metrics = train_recipe(recipe, progress=progress, cache_dir=cache)
    if metrics["test_accuracy"] < getattr(recipe, "min_test_accuracy", 0.0):
        raise RuntimeError(
            f"{name}: test accuracy {metrics['test_accuracy']:.4f} is below the "
            f"recipe's target {recipe.min_test_accuracy}; not caching it"
        )
    weights, meta = _paths(name, cache)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    _atomic_write(weights, lambda p: save_file(state, str(p)))
    info = {
        "name": name,
        "recipe": dataclasses.asdict(recipe),
        "recipe_digest": recipe.digest(),
        "sha256": _sha256(weights),
        "torch": torch.__version__,
        **metrics,
    }
    _atomic_write(meta, lambda p: p.write_text(json.dumps(info, indent=2)))
    return net


def record(name: str, cache_dir: str | os.PathLike | None = None) -> dict:
    """The JSON record of a cached model (recipe, checksum, test accuracy, time).

    For a registered model the cache is verified (and trained if needed)
    first; for another name, the record must already exist.

    >>> record("lenet5-fashion")["recipe"]["model"]
    'lenet5'
    """
    cache = Path(cache_dir) if cache_dir is not None else utils.cache_dir("zoo")
    meta = _paths(name, cache)[1]
    if name in RECIPES:
        pretrained(name, cache_dir=cache_dir, progress=False)
    elif not meta.exists():
        raise KeyError(f"no record of {name!r} in {cache}")
    return json.loads(meta.read_text())
