"""Pretrained reference models: shipped with the project, re-made bit for bit.

Every chapter compresses the same few networks. Their weights are trained
once, by a fixed recipe under the book's pinned numerics
(:mod:`mlcomp.numerics`), and shipped in the package as safetensors files
(``mlcomp/weights/``), each with a JSON record beside it: the recipe, the
recipe's hash, the file's SHA-256, the test accuracy, the torch version and
the numerics it was trained under. So a fresh clone trains nothing, and
every machine starts from the same bytes.

:func:`pretrained` takes a model from the first of these that holds it
under the current recipe, checksum verified:

1. the shipped weights;
2. the cache ``$MLCOMP_CACHE/zoo`` (default ``~/.cache/mlcomp/zoo``), for
   models trained here: a recipe a user changed, or the whole zoo trained
   from another seed (``MLCOMP_ZOO_SEED=N``, what ``make claims`` does);
3. otherwise it trains the model by its recipe and caches it.

A corrupt file or a changed recipe is reported with a warning and never
used. ``mlcomp zoo --retrain [NAME ...]`` (``make zoo-retrain``) re-makes
the shipped weights; a unit test retrains the cheapest ones and checks that
the bytes come out identical. No pickle is ever loaded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn
from tqdm import tqdm

from mlcomp import datasets, models, numerics, train, utils

__all__ = [
    "Recipe",
    "PruneRecipe",
    "RECIPES",
    "SHIPPED_DIR",
    "StaleCacheWarning",
    "ensure",
    "pretrained",
    "recipe_for",
    "record",
    "retrain_shipped",
    "train_recipe",
]

FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).with_name("weights")
SEED_VARIABLE = "MLCOMP_ZOO_SEED"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a reference model's weights.

    >>> RECIPES["lenet5-fashion"].model
    'lenet5'
    """

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
        """SHA-256 of what determines the weights, and the file-format version.

        The acceptance check (``min_test_accuracy``) is not hashed: it judges
        the weights, it does not make them. The torch version and the
        numerics are recorded beside the weights, not hashed either: weights
        made by one torch load in any other.

        >>> len(Recipe("lenet5", epochs=1, lr=1e-3).digest())
        64
        """
        return _digest(self, {"format": FORMAT_VERSION})


@dataclass(frozen=True)
class PruneRecipe:
    """A sparse model: a zoo model pruned gradually while fine-tuning.

    Starts from the zoo model ``base`` and runs
    :func:`mlcomp.prune.gradual_prune` to ``sparsity``; the masks are made
    permanent, so the cached weights simply contain the zeros. A sparse
    ``base`` (itself a ``PruneRecipe``) continues from its own sparsity, so a
    sparser model can be had for a few more epochs.

    >>> r = RECIPES["lenet5-fashion-sparse90"]
    >>> r.base, r.sparsity, r.model
    ('lenet5-fashion', 0.9, 'lenet5')
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

        As for :meth:`Recipe.digest`, the check ``max_accuracy_drop`` is not
        hashed.

        >>> len(RECIPES["lenet5-fashion-sparse90"].digest())
        64
        """
        return _digest(self, {"base_digest": recipe_for(self.base).digest()})


CHECKS = (
    "min_test_accuracy",
    "max_accuracy_drop",
    "min_val_accuracy",
    "max_val_bpc",
    "claims_steps",
    "claims_max_val_bpc",
)  # judge the weights, not hashed


def _digest(recipe, extra: dict) -> str:
    payload = {k: v for k, v in dataclasses.asdict(recipe).items() if k not in CHECKS}
    return hashlib.sha256(
        json.dumps(payload | extra, sort_keys=True).encode()
    ).hexdigest()


def _kws():
    from mlcomp import kws  # imported late: kws builds on zoo

    return kws


def _lm():
    from mlcomp import lm  # imported late: lm builds on zoo

    return lm


def _codec():
    from mlcomp import codec  # imported late: codec's recipes digest through zoo

    return codec


RECIPES: dict[str, Recipe | PruneRecipe] = {
    # About 75 s and 15 s of training on two cores (pinned numerics).
    "lenet5-fashion": Recipe("lenet5", epochs=7, lr=2e-3, min_test_accuracy=0.91),
    "lenet300-fashion": Recipe(
        "lenet300100", epochs=20, lr=1e-3, min_test_accuracy=0.885
    ),
    # 90% of the weights zero: global magnitude, Zhu & Gupta schedule (about
    # 15 s and 90 s on two cores). LeNet-300-100's drop varies with the seed
    # between about -0.2 and +0.7 points, hence its wider check.
    "lenet300-fashion-sparse90": PruneRecipe(
        "lenet300-fashion",
        sparsity=0.9,
        epochs=15,
        lr=5e-4,
        prune_epochs=8,
        max_accuracy_drop=0.01,
    ),  # fmt: skip
    "lenet5-fashion-sparse90": PruneRecipe(
        "lenet5-fashion", sparsity=0.9, epochs=8, lr=1e-3, prune_epochs=4
    ),
    # Deep Compression's sparsities (chapter 7): a few more epochs from the
    # 90% models, to 93% and 94% (about 10 s and 35 s on two cores).
    "lenet300-fashion-sparse93": PruneRecipe(
        "lenet300-fashion-sparse90",
        sparsity=0.93,
        epochs=10,
        lr=5e-4,
        prune_epochs=4,
        max_accuracy_drop=0.01,
    ),  # fmt: skip
    "lenet5-fashion-sparse94": PruneRecipe(
        "lenet5-fashion-sparse90", sparsity=0.94, epochs=3, lr=1e-3, prune_epochs=2
    ),
    # The accuracy-sparsity curve of LeNet-5: one short schedule (3 epochs,
    # pruning over the first 2; about 35 s each) at four sparsities.
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
    **_kws().RECIPES,
    **_lm().RECIPES,
    **_codec().RECIPES,
}


class StaleCacheWarning(UserWarning):
    """A shipped or cached model was corrupt or made by another recipe; not used."""


def recipe_for(name: str) -> Recipe | PruneRecipe:
    """The recipe :func:`pretrained` uses for ``name``.

    That is ``RECIPES[name]``, with ``$MLCOMP_ZOO_SEED`` added to its seed
    when that variable is set: the whole zoo, retrained from other seeds,
    is how ``make claims`` checks that the book's claims are not the luck of
    one training run. Adding (not replacing) keeps apart the recipes that
    differ only in their seed, e.g. the three seeds of one student.

    >>> recipe_for("lenet5-fashion").seed
    0
    """
    if name not in RECIPES:
        raise KeyError(f"unknown zoo model {name!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[name]
    seed = os.environ.get(SEED_VARIABLE, "").strip()
    if seed:
        if not seed.isdigit() or int(seed) >= 2**31:
            raise ValueError(
                f"{SEED_VARIABLE} must be an integer in [0, 2**31), got {seed!r}"
            )
        recipe = dataclasses.replace(recipe, seed=recipe.seed + int(seed))
        if getattr(recipe, "claims_steps", None):  # a shorter budget for claims
            recipe = dataclasses.replace(
                recipe,
                steps=recipe.claims_steps,
                max_val_bpc=recipe.claims_max_val_bpc or recipe.max_val_bpc,
            )
    return recipe


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_pruned(
    recipe: PruneRecipe, progress: bool, cache_dir
) -> tuple[nn.Module, dict]:
    from mlcomp import prune  # imported here: prune imports train, not zoo

    net = pretrained(recipe.base, progress=progress, cache_dir=cache_dir)
    test = datasets.fashion_mnist("test")
    base_accuracy = train.evaluate(net, test)
    base_sha256 = record(recipe.base, cache_dir=cache_dir)["sha256"]
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
        prune.gradual_prune(
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
            "base_test_accuracy": base_accuracy,
            "base_sha256": base_sha256}  # fmt: skip
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
    if recipe.model == "dscnn":
        return _kws().train_recipe(recipe, progress=progress, cache_dir=cache_dir)
    if recipe.model == "gpt":
        return _lm().train_recipe(recipe, progress=progress, cache_dir=cache_dir)
    if recipe.model == "codec":
        return _codec().train_recipe(recipe, progress=progress, cache_dir=cache_dir)
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


def _paths(name: str, folder: Path) -> tuple[Path, Path]:
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def _check(name: str, recipe, folder: Path) -> tuple[dict | None, str | None]:
    """(record, None) if ``folder`` holds ``name`` made by ``recipe`` intact,
    else (None, why not); (None, None) if it holds nothing of that name."""
    weights, meta = _paths(name, folder)
    if not weights.exists() and not meta.exists():
        return None, None
    try:
        info = json.loads(meta.read_text())
        if info.get("recipe_digest") != recipe.digest():
            return None, "it was made by a different recipe"
        if info.get("sha256") != _sha256(weights):
            return None, "its checksum does not match (corrupt or modified file)"
        return info, None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"it cannot be read ({type(exc).__name__}: {exc})"


def _build(recipe) -> nn.Module:
    """An untrained model of the recipe's architecture."""
    if hasattr(recipe, "build"):
        return recipe.build()
    kwargs = recipe.model_kwargs() if hasattr(recipe, "model_kwargs") else {}
    return models.create(recipe.model, **kwargs)


def _load(name: str, recipe, folder: Path) -> nn.Module:
    weights = _paths(name, folder)[0]
    try:
        net = _build(recipe)
        net.load_state_dict(load_file(str(weights)))
    except (OSError, RuntimeError, SafetensorError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise RuntimeError(f"cannot load {weights}: {why}") from exc
    return net.eval()


def _locate(name: str, recipe, cache: Path) -> tuple[Path, dict] | None:
    """Where a trusted copy of ``name`` (made by ``recipe``) lies, with its record.

    The shipped folder first, then the cache. A registered model whose
    shipped copy is stale or damaged is warned about (the weights were not
    re-shipped after a recipe change); a cached one likewise.
    """
    for folder in (SHIPPED_DIR, cache):
        info, why = _check(name, recipe, folder)
        if info is not None:
            return folder, info
        if why is None or (folder == SHIPPED_DIR and recipe != RECIPES.get(name)):
            continue  # nothing there, or shipped for another recipe (or seed)
        shipped = folder == SHIPPED_DIR
        hint = f"; re-ship it with `make zoo-retrain NAMES={name}`" if shipped else ""
        warnings.warn(
            f"{'shipped' if shipped else 'cached'} {name!r} in {folder} is not "
            f"used: {why}{hint}",
            StaleCacheWarning,
            stacklevel=4,
        )
    return None


def _save(name: str, net: nn.Module, recipe, metrics: dict, folder: Path) -> dict:
    """Write ``net`` and its record into ``folder``; return the record."""
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta = _paths(name, folder)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    with utils.atomic_open(weights) as f:
        f.write(save(state))
    report = numerics.report()
    info = {
        "name": name,
        "recipe": dataclasses.asdict(recipe),
        "recipe_digest": recipe.digest(),
        "sha256": _sha256(weights),
        "torch": torch.__version__.split("+")[0],
        "numerics": "pinned" if report["pinned"] else "native",
        "aten_capability": report["aten_capability"],
        # MKL's products take Intel's AVX2 path on Intel CPUs only (numerics.mkl_branch)
        "mkl_branch": report["mkl_branch"],
        "cpu_vendor": report["cpu_vendor"],
        **metrics,
    }
    with utils.atomic_open(meta) as f:
        f.write((json.dumps(info, indent=2) + "\n").encode())
    return info


def _train_and_check(name: str, recipe, progress: bool, cache: Path):
    net, metrics = train_recipe(recipe, progress=progress, cache_dir=cache)
    if metrics.get("test_accuracy", 1.0) < getattr(recipe, "min_test_accuracy", 0.0):
        raise RuntimeError(
            f"{name}: test accuracy {metrics['test_accuracy']:.4f} is below the "
            f"recipe's target {recipe.min_test_accuracy}; not caching it"
        )
    return net, metrics


def pretrained(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    retrain: bool = False,
    recipe: Recipe | PruneRecipe | None = None,
) -> nn.Module:
    """Return the reference model ``name`` (see :data:`RECIPES`) in eval mode.

    Loads the shipped weights, or else the cached ones, when they were made
    by the current recipe (:func:`recipe_for`) and their checksum holds;
    otherwise trains the model (seconds to minutes on two cores), checks that
    it reaches the recipe's ``min_test_accuracy``, and caches it.
    ``recipe`` replaces the registered recipe (tests use tiny ones);
    ``retrain=True`` trains into the cache even when a copy exists.

    >>> net = pretrained("lenet300-fashion", progress=False)
    >>> type(net).__name__, net.training
    ('LeNet300100', False)
    """
    if recipe is None:
        recipe = recipe_for(name)
    cache = Path(cache_dir) if cache_dir is not None else utils.cache_dir("zoo")
    if not retrain:
        found = _locate(name, recipe, cache)
        if found is not None:
            return _load(name, recipe, found[0])
    net, metrics = _train_and_check(name, recipe, progress, cache)
    _save(name, net, recipe, metrics, cache)
    return net


def record(name: str, cache_dir: str | os.PathLike | None = None) -> dict:
    """The JSON record of the model :func:`pretrained` returns for ``name``.

    Recipe, checksum, test accuracy, training time, torch version and
    numerics. For a registered model it is made available (shipped, cached
    or trained) first; for another name, its record must already be cached.

    >>> record("lenet5-fashion")["recipe"]["model"]
    'lenet5'
    """
    cache = Path(cache_dir) if cache_dir is not None else utils.cache_dir("zoo")
    if name in RECIPES:
        recipe = recipe_for(name)
        found = _locate(name, recipe, cache)
        if found is None:
            pretrained(name, cache_dir=cache_dir, progress=False)
            found = _locate(name, recipe, cache)
        return found[1]
    meta = _paths(name, cache)[1]
    if not meta.exists():
        raise KeyError(f"no record of {name!r} in {cache}")
    return json.loads(meta.read_text())


def derived_path(name: str, kind: str, tag: str, cache_dir=None) -> Path:
    """Where a file made from the zoo model ``name`` is cached (not created).

    ``$MLCOMP_CACHE/<kind>/<name>-<tag>-<first 12 hex of its SHA-256>.mlc``
    (or ``cache_dir`` instead of the folder): a model retrained from
    another recipe or seed gets a file of its own.

    >>> derived_path("lenet5-fashion", "vision", "PQH").name  # doctest: +ELLIPSIS
    'lenet5-fashion-PQH-....mlc'
    """
    folder = Path(cache_dir) if cache_dir else utils.cache_dir(kind)
    return folder / f"{name}-{tag}-{record(name)['sha256'][:12]}.mlc"


def dependents(names: list[str]) -> list[str]:
    """``names`` and every model trained from one of them, in training order.

    >>> dependents(["lenet5-fashion-sparse90"])
    ['lenet5-fashion-sparse90', 'lenet5-fashion-sparse94']
    """
    chosen = set(names)
    for name, recipe in RECIPES.items():  # bases come before what builds on them
        if {getattr(recipe, "base", None), getattr(recipe, "teacher", None)} & chosen:
            chosen.add(name)
    return [name for name in RECIPES if name in chosen]


def retrain_shipped(
    names: list[str] | None = None,
    *,
    folder: str | os.PathLike | None = None,
    include_dependents: bool = True,
    progress: bool = True,
    jobs: int = 1,
) -> list[dict]:
    """Re-make the shipped weights of ``names`` (default: all) and what builds on them.

    Each model is trained by its registered recipe under the pinned numerics
    (refused otherwise: the shipped bytes must be reproducible on any x86-64
    machine), a sparse model's base first, and written into ``folder``
    (default :data:`SHIPPED_DIR`). With ``include_dependents=False`` only
    ``names`` are re-made (the unit test that checks the shipped bytes does
    that). ``jobs`` trains that many models at a time, each in its own
    process (see :func:`ensure`); the bytes are the same. Returns the new
    records.

    >>> retrain_shipped(["resnet-imagenet"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    KeyError: "unknown zoo model(s) ['resnet-imagenet']; choose from [...]"
    """
    unknown = [n for n in names or [] if n not in RECIPES]
    if unknown:
        raise KeyError(f"unknown zoo model(s) {unknown}; choose from {sorted(RECIPES)}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    if os.environ.get(SEED_VARIABLE, "").strip():
        raise RuntimeError(
            f"the shipped weights use the registered seeds; unset {SEED_VARIABLE}"
        )
    report = numerics.report()
    if not report["pinned"]:
        raise RuntimeError(
            "the shipped weights are made under the pinned numerics, which are not "
            f"in effect ({report['aten_capability']} kernels, {report['threads']} "
            "threads): run `make zoo-retrain`, or import mlcomp before torch and "
            "leave MLCOMP_NUMERICS unset"
        )
    target = Path(folder) if folder is not None else SHIPPED_DIR
    chosen = list(names) if names else list(RECIPES)
    if include_dependents:
        order = dependents(chosen)
    else:
        order = [name for name in RECIPES if name in chosen]
    if jobs > 1:
        _run_parallel(order, jobs, progress, target)
        return [json.loads(_paths(name, target)[1].read_text()) for name in order]
    records = []
    for name in order:
        records.append(_retrain_one(name, progress, target))
    return records


def _retrain_one(name: str, progress: bool, target: Path) -> dict:
    recipe = RECIPES[name]
    net, metrics = _train_and_check(name, recipe, progress, target)
    return _save(name, net, recipe, metrics, target)


def _requires(name: str) -> set[str]:
    """The zoo models that ``name`` is trained from (its base, its teacher)."""
    recipe = RECIPES[name]
    return {getattr(recipe, "base", None), getattr(recipe, "teacher", None)} - {None}


def ensure(
    names: list[str] | None = None, *, jobs: int = 1, progress: bool = True
) -> list[str]:
    """Make ``names`` (default: all) available, training what is missing.

    A model counts as available when :func:`pretrained` would load it
    without training (shipped or cached under its current recipe). The
    missing ones, and the missing models they are trained from, are
    trained into the cache, a base or teacher before what builds on it.
    With ``jobs > 1`` they are trained in that many worker processes at
    once, the longest remaining chain of training first (times estimated
    from the shipped records). Each process trains with its recipe's
    threads (two), so ``jobs`` should be at most half the cores. The
    weights do not depend on ``jobs``: on a machine with eight cores,
    ``jobs=4`` makes the same bytes as ``jobs=1``, four models at a time.
    On two cores it does not pay: two trainings that share the cores and
    the memory bandwidth each run far slower than alone. Returns the names
    trained, in the order they were started.

    >>> ensure(["lenet300-fashion"], progress=False)  # shipped: nothing to train
    []
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    unknown = [n for n in names or [] if n not in RECIPES]
    if unknown:
        raise KeyError(f"unknown zoo model(s) {unknown}; choose from {sorted(RECIPES)}")
    cache = utils.cache_dir("zoo")
    missing: set[str] = set()
    stack = list(names) if names else list(RECIPES)
    while stack:
        name = stack.pop()
        if name in missing or _locate(name, recipe_for(name), cache) is not None:
            continue
        missing.add(name)
        stack.extend(_requires(name))
    order = [name for name in RECIPES if name in missing]  # bases come first
    if jobs > 1 and len(order) > 1:
        _run_parallel(order, jobs, progress, None)
    else:
        for name in order:
            pretrained(name, progress=progress)
    return order


def _estimate(name: str) -> float:
    """Seconds that training ``name`` took when it was shipped (60 if unknown),
    scaled by the steps of the current recipe for a language model."""
    try:
        info = json.loads(_paths(name, SHIPPED_DIR)[1].read_text())
        seconds = float(info["train_seconds"])
        steps = info["recipe"].get("steps")
    except (OSError, ValueError, KeyError, TypeError):
        return 60.0
    now = getattr(recipe_for(name), "steps", None)
    return seconds * now / steps if steps and now else seconds


def _prepare(order: list[str]) -> None:
    """Make the data sets the models need, once, before workers share them."""
    kinds = {recipe_for(name).model for name in order}
    if kinds & {"lenet5", "lenet300100"}:
        datasets.fashion_mnist("train"), datasets.fashion_mnist("test")
    if "dscnn" in kinds:
        from mlcomp import speech

        for split in ("train", "val", "test", "festival"):
            speech.load(split, progress=False)


class _Worker:
    """A process that trains zoo models named on its stdin (see :func:`_serve`)."""

    def __init__(self, target: Path | None, jobs: int = 1):
        env = dict(os.environ)
        if jobs * numerics.THREADS > (os.cpu_count() or 1):
            # more threads than cores: OpenMP threads that spin while they
            # wait take the cores from the other workers (3x slower, measured)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.target = target
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from mlcomp import zoo; zoo._serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip

    def train(self, name: str) -> dict:
        target = None if self.target is None else str(self.target)
        task = {"name": name, "target": target}
        try:
            self.process.stdin.write(json.dumps(task) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (OSError, ValueError):  # the worker died; its status says how
            line = ""
        if not line:
            status = self.process.wait()
            return {"name": name, "error": f"its worker exited with status {status}"}
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _run_parallel(order: list[str], jobs: int, progress: bool, target) -> None:
    """Train ``order`` (bases before dependents) in ``jobs`` worker processes.

    Each free worker takes the ready model (its base and teacher done) with
    the longest estimated chain of training still to come after it (list
    scheduling by critical path). The first failure stops everything.
    """
    _prepare(order)
    pending = set(order)
    needs = {name: _requires(name) & pending for name in order}
    rank: dict[str, float] = {}
    for name in reversed(order):  # dependents come later in the order
        after = [rank[m] for m in order if name in needs[m]]
        rank[name] = _estimate(name) + max(after, default=0.0)
    done: set[str] = set()
    jobs = min(jobs, len(order))
    idle = [_Worker(target, jobs) for _ in range(jobs)]
    workers = list(idle)
    bar = tqdm(total=len(order), desc="zoo", unit="model", disable=not progress)
    pool = concurrent.futures.ThreadPoolExecutor(len(workers))
    try:
        running: dict[concurrent.futures.Future, tuple[str, _Worker]] = {}
        while pending or running:
            ready = [n for n in pending if needs[n] <= done]
            while idle and ready:
                name = max(ready, key=lambda n: (rank[n], -order.index(n)))
                ready.remove(name)
                pending.remove(name)
                worker = idle.pop()
                running[pool.submit(worker.train, name)] = (name, worker)
            bar.set_postfix_str(", ".join(sorted(n for n, _ in running.values())))
            finished, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                name, worker = running.pop(future)
                reply = future.result()
                if "error" in reply:
                    raise RuntimeError(f"training {name} failed: {reply['error']}")
                done.add(name)
                idle.append(worker)
                bar.update()
    finally:
        # the workers go first, whatever stopped the loop (a failed model, an
        # interrupt, a test's timeout): a thread blocked reading a live
        # worker's reply would otherwise keep the pool, and this call, waiting
        bar.close()
        for worker in workers:
            worker.close()
        pool.shutdown(wait=True)


def _serve() -> None:
    """The loop of a :class:`_Worker`: one JSON task per line in, one reply out.

    A task ``{"name": ..., "target": null}`` makes the model available in
    the cache (:func:`pretrained`); with a folder as ``target`` it re-makes
    the shipped weights there (:func:`retrain_shipped`). The reply is
    ``{"name": ...}`` or ``{"name": ..., "error": "..."}``. Anything else
    printed while training goes to stderr.
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        task = json.loads(line)
        name = task["name"]
        try:
            if task["target"] is None:
                pretrained(name, progress=False)
            else:
                _retrain_one(name, False, Path(task["target"]))
            reply = {"name": name}
        except Exception as exc:  # reported to the parent, which stops
            reply = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
