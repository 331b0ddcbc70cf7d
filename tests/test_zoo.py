import dataclasses
import json
import shutil
import warnings

import pytest
import torch

from mlcomp import prune, zoo
from mlcomp.datasets import fashion_mnist
from mlcomp.train import evaluate
from mlcomp.zoo import RECIPES, Recipe, StaleCacheWarning, pretrained

TINY = Recipe("lenet300100", epochs=1, lr=1e-3, train_subset=1024)


def weights_of(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.fixture
def cached(tmp_path):
    net = pretrained("tiny", recipe=TINY, cache_dir=tmp_path, progress=False)
    return tmp_path, net


def forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("retrained although the cache was valid")

    monkeypatch.setattr(zoo, "train_recipe", fail)


def test_cache_round_trip_without_retraining(cached, monkeypatch):
    cache, net = cached
    assert (cache / "tiny.safetensors").exists()
    info = json.loads((cache / "tiny.json").read_text())
    assert (
        info["recipe_digest"] == TINY.digest()
        and info["recipe"]["train_subset"] == 1024
    )
    forbid_training(monkeypatch)
    again = pretrained("tiny", recipe=TINY, cache_dir=cache)
    assert torch.equal(weights_of(net), weights_of(again)) and not again.training


def test_training_is_deterministic(cached):
    cache, net = cached
    again = pretrained(
        "tiny", recipe=TINY, cache_dir=cache, retrain=True, progress=False
    )
    assert torch.equal(weights_of(net), weights_of(again))


def test_corrupt_weights_are_detected_and_retrained(cached):
    cache, net = cached
    path = cache / "tiny.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0x01  # one flipped bit in a weight
    path.write_bytes(bytes(blob))
    with pytest.warns(StaleCacheWarning, match="checksum"):
        again = pretrained("tiny", recipe=TINY, cache_dir=cache, progress=False)
    assert torch.equal(weights_of(net), weights_of(again))
    assert json.loads((cache / "tiny.json").read_text())["sha256"] == zoo._sha256(path)


def test_changed_recipe_makes_the_cache_stale(cached):
    cache, _ = cached
    changed = Recipe("lenet300100", epochs=1, lr=2e-3, train_subset=1024)
    with pytest.warns(StaleCacheWarning, match="different recipe"):
        pretrained("tiny", recipe=changed, cache_dir=cache, progress=False)


@pytest.mark.parametrize("damage", ["json", "missing-weights"])
def test_unreadable_cache_is_retrained(cached, damage):
    cache, _ = cached
    if damage == "json":
        (cache / "tiny.json").write_text("{not json")
    else:
        (cache / "tiny.safetensors").unlink()
    with pytest.warns(StaleCacheWarning, match="cannot be read"):
        pretrained("tiny", recipe=TINY, cache_dir=cache, progress=False)


def test_missed_accuracy_target_is_an_error_and_not_cached(tmp_path):
    hopeless = Recipe(
        "lenet300100", epochs=1, lr=1e-3, train_subset=64, min_test_accuracy=0.99
    )
    with pytest.raises(RuntimeError, match="below the recipe's target"):
        pretrained("hopeless", recipe=hopeless, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "hopeless.safetensors").exists()


def test_bad_names_and_recipes():
    with pytest.raises(KeyError, match="lenet5-fashion"):
        pretrained("resnet-imagenet")
    with pytest.raises(ValueError):
        Recipe("resnet", epochs=1, lr=1e-3)
    with pytest.raises(ValueError):
        Recipe("lenet5", epochs=0, lr=1e-3)


@pytest.mark.parametrize(
    "name, target", [("lenet5-fashion", 0.91), ("lenet300-fashion", 0.885)]
)
def test_reference_models_reach_their_targets(name, target):
    assert RECIPES[name].min_test_accuracy == target
    accuracy = evaluate(pretrained(name, progress=False), fashion_mnist("test"))
    assert accuracy >= target
    assert accuracy == pytest.approx(zoo.record(name)["test_accuracy"], abs=1e-9)


def test_prune_recipe_builds_on_its_cached_base(tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny", TINY)
    sparse = zoo.PruneRecipe("tiny", sparsity=0.5, epochs=1, lr=1e-3, prune_epochs=0.5,
                             max_accuracy_drop=1.0)  # fmt: skip
    net = pretrained("tiny-sparse", recipe=sparse, cache_dir=tmp_path, progress=False)
    assert (tmp_path / "tiny.safetensors").exists()  # the base was trained and cached
    assert prune.sparsity(net)["total"] == pytest.approx(0.5, abs=1e-4)
    assert not any(
        n.endswith("_orig") for n, _ in net.named_parameters()
    )  # masks removed
    info = zoo.record("tiny-sparse", cache_dir=tmp_path)
    assert info["recipe_digest"] == sparse.digest() and "base_test_accuracy" in info
    # retraining the base (another recipe) makes the sparse model stale
    monkeypatch.setitem(zoo.RECIPES, "tiny", Recipe("lenet300100", epochs=1, lr=2e-3,
                                                    train_subset=1024))  # fmt: skip
    assert sparse.digest() != info["recipe_digest"]


def test_a_sparse_base_is_continued_from_its_own_sparsity(tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny", TINY)
    half = zoo.PruneRecipe("tiny", sparsity=0.5, epochs=1, lr=1e-3, prune_epochs=0.5,
                           max_accuracy_drop=1.0)  # fmt: skip
    monkeypatch.setitem(zoo.RECIPES, "tiny-half", half)
    more = zoo.PruneRecipe("tiny-half", sparsity=0.75, epochs=1, lr=1e-3,
                           prune_epochs=0.5, max_accuracy_drop=1.0)  # fmt: skip
    base = pretrained("tiny-half", cache_dir=tmp_path, progress=False)
    net = pretrained("tiny-more", recipe=more, cache_dir=tmp_path, progress=False)
    assert prune.sparsity(net)["total"] == pytest.approx(0.75, abs=1e-4)
    after = net.state_dict()
    for name, w0 in base.state_dict().items():
        assert torch.all(after[name][w0 == 0] == 0)  # pruned weights never come back


@pytest.mark.parametrize(
    "name",
    ["lenet300-fashion-sparse90", "lenet5-fashion-sparse90",
     "lenet300-fashion-sparse93", "lenet5-fashion-sparse94"],
)  # fmt: skip
def test_sparse_reference_models_meet_their_targets(name):
    recipe = RECIPES[name]
    net = pretrained(name, progress=False)
    assert prune.sparsity(net)["total"] == pytest.approx(recipe.sparsity, abs=1e-5)
    test = fashion_mnist("test")
    dense = recipe
    while isinstance(dense, zoo.PruneRecipe):  # accuracy is held against the dense root
        root = dense.base
        dense = RECIPES[root]
    dense_accuracy = evaluate(pretrained(root, progress=False), test)
    assert evaluate(net, test) >= dense_accuracy - recipe.max_accuracy_drop


def test_record_of_an_unknown_uncached_model_is_a_key_error(tmp_path):
    with pytest.raises(KeyError, match="no record"):
        zoo.record("never-trained", cache_dir=tmp_path)


# --- the shipped weights ---------------------------------------------------------

# the cheapest entries that together cover Adam from scratch, gradual pruning of a
# shipped base, and convolutions (oneDNN): about a minute on two cores
REPRODUCED = [
    "lenet300-fashion",
    "lenet300-fashion-sparse93",
    "lenet5-fashion-sparse80-3ep",
]


def shipped_record(name):
    return json.loads((zoo.SHIPPED_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_registered_model_is_shipped_by_its_current_recipe(name):
    info = shipped_record(name)
    assert info["recipe_digest"] == RECIPES[name].digest(), (
        f"the recipe of {name} changed but its weights were not re-shipped: "
        f"run `make zoo-retrain NAMES={name}` and commit mlcomp/weights/"
    )
    assert info["sha256"] == zoo._sha256(zoo.SHIPPED_DIR / f"{name}.safetensors")
    assert info["numerics"] == "pinned" and info["aten_capability"] == "AVX2"
    assert info["mkl_branch"] in ("AVX2", "AUTO") and info["cpu_vendor"]
    recipe = RECIPES[name]
    if isinstance(recipe, zoo.PruneRecipe):  # made from the base that is shipped now
        assert info["base_sha256"] == shipped_record(recipe.base)["sha256"], (
            f"{recipe.base} was re-shipped without {name}: "
            f"run `make zoo-retrain NAMES={recipe.base}`"
        )


def test_a_fresh_cache_trains_nothing(tmp_path, monkeypatch):
    forbid_training(monkeypatch)
    net = pretrained("lenet5-fashion", cache_dir=tmp_path)
    assert not net.training and not any(tmp_path.iterdir())
    assert zoo.record("lenet5-fashion", cache_dir=tmp_path) == shipped_record(
        "lenet5-fashion"
    )


def test_another_zoo_seed_skips_the_shipped_weights_silently(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.SEED_VARIABLE, "3")
    recipe = zoo.recipe_for("lenet5-fashion-sparse90")
    assert recipe.seed == 3 and recipe.digest() != RECIPES[recipe.base].digest()
    assert recipe.digest() != dataclasses.replace(recipe, seed=0).digest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert zoo._locate("lenet5-fashion", zoo.recipe_for("lenet5-fashion"),
                           tmp_path) is None  # fmt: skip
    seeds = [n for n, r in RECIPES.items() if r.seed == 1]
    assert seeds and zoo.recipe_for(seeds[0]).seed == 4  # shifted, so still distinct
    for bad in ["-1", "one", str(2**31)]:
        monkeypatch.setenv(zoo.SEED_VARIABLE, bad)
        with pytest.raises(ValueError, match="MLCOMP_ZOO_SEED"):
            zoo.recipe_for("lenet5-fashion")


def test_damaged_or_stale_shipped_weights_are_not_used(tmp_path, monkeypatch):
    shipped = tmp_path / "weights"
    shutil.copytree(zoo.SHIPPED_DIR, shipped)
    monkeypatch.setattr(zoo, "SHIPPED_DIR", shipped)
    name = "lenet300-fashion"
    path = shipped / f"{name}.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.warns(StaleCacheWarning, match="shipped.*checksum"):
        assert zoo._locate(name, RECIPES[name], tmp_path / "cache") is None
    changed = dataclasses.replace(RECIPES["lenet5-fashion"], epochs=8)
    monkeypatch.setitem(zoo.RECIPES, "lenet5-fashion", changed)
    with pytest.warns(StaleCacheWarning, match="make zoo-retrain NAMES=lenet5-fashion"):
        assert zoo._locate("lenet5-fashion", changed, tmp_path / "cache") is None


def test_retraining_the_shipped_weights_needs_pinned_numerics(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo.numerics, "report", lambda: {
        "pinned": False, "aten_capability": "AVX512", "threads": 16})  # fmt: skip
    with pytest.raises(RuntimeError, match="pinned numerics"):
        zoo.retrain_shipped(["lenet300-fashion"], folder=tmp_path)
    monkeypatch.setenv(zoo.SEED_VARIABLE, "1")
    with pytest.raises(RuntimeError, match="MLCOMP_ZOO_SEED"):
        zoo.retrain_shipped(["lenet300-fashion"], folder=tmp_path)
    assert not any(tmp_path.iterdir())


def test_ensure_trains_what_is_missing_and_what_it_needs(monkeypatch, tmp_path):
    monkeypatch.setenv("MLCOMP_CACHE", str(tmp_path))
    assert zoo.ensure(progress=False) == []  # all shipped
    monkeypatch.setenv(zoo.SEED_VARIABLE, "7")  # nothing shipped applies now
    started = []
    monkeypatch.setattr(zoo, "_run_parallel", lambda order, *_: started.append(order))
    chain = [
        "lenet300-fashion",
        "lenet300-fashion-sparse90",
        "lenet300-fashion-sparse93",
    ]
    assert zoo.ensure(["lenet300-fashion-sparse93"], jobs=2, progress=False) == chain
    assert started == [chain]
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        zoo.ensure(jobs=0)
    with pytest.raises(KeyError, match="unknown zoo model"):
        zoo.ensure(["alexnet"])


def test_a_worker_reports_a_failed_model_in_one_line():
    worker = zoo._Worker(None)
    try:
        reply = worker.train("alexnet")
        assert (
            reply["name"] == "alexnet"
            and "unknown zoo model 'alexnet'" in reply["error"]
        )
        assert "\n" not in reply["error"]
    finally:
        worker.close()
    assert "exited with status" in worker.train("lenet300-fashion")["error"]


def test_an_interrupted_parallel_run_stops_its_workers(monkeypatch):
    import concurrent.futures
    import threading

    class Blocking:  # a worker that trains until it is closed
        made = []

        def __init__(self, target, jobs):
            self.stop = threading.Event()
            Blocking.made.append(self)

        def train(self, name):
            self.closed_in_time = self.stop.wait(20)  # the old code waited here
            return {"name": name, "error": "closed"}

        def close(self):
            self.stop.set()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "_Worker", Blocking)
    monkeypatch.setattr(zoo, "_prepare", lambda order: None)
    monkeypatch.setattr(concurrent.futures, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zoo._run_parallel(["lenet300-fashion", "lenet5-fashion"], 2, False, None)
    assert len(Blocking.made) == 2
    assert all(w.closed_in_time for w in Blocking.made)


def test_retraining_reproduces_the_shipped_weights_bit_for_bit(tmp_path):
    report = zoo.numerics.report()
    if report["cpu_capability"] not in ("AVX2", "AVX512"):
        pytest.skip(f"this CPU ({report['cpu_capability']}) lacks AVX2: other digits")
    made_by = shipped_record(REPRODUCED[0])["torch"]
    if made_by != torch.__version__.split("+")[0]:
        pytest.skip(f"the shipped weights were made by torch {made_by}")
    assert report["pinned"], f"run under the pinned numerics (make unit): {report}"
    made_on = shipped_record(REPRODUCED[0])
    here = (report["cpu_vendor"], report["mkl_branch"])
    if (made_on["cpu_vendor"], made_on["mkl_branch"]) != here:
        pytest.skip(
            f"the shipped weights were made on an {made_on['cpu_vendor']} CPU (MKL "
            f"branch {made_on['mkl_branch']}), this is {here[0]} ({here[1]}): MKL's "
            "products differ in their last bits between the two"
        )
    # two worker processes (jobs=2): the weights must not depend on it
    records = zoo.retrain_shipped(REPRODUCED, folder=tmp_path, include_dependents=False,
                                  progress=False, jobs=2)  # fmt: skip
    assert [r["name"] for r in records] == REPRODUCED
    for name in REPRODUCED:
        mine = (tmp_path / f"{name}.safetensors").read_bytes()
        theirs = (zoo.SHIPPED_DIR / f"{name}.safetensors").read_bytes()
        assert mine == theirs, f"{name}: retrained weights differ from the shipped ones"
