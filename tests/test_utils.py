import random

import numpy as np
import pytest
import torch

from mlcomp.utils import cache_dir, set_seed


def draws():
    legacy_numpy = np.random.rand()  # noqa: NPY002 (set_seed seeds the global state)
    return random.random(), legacy_numpy, torch.rand(1).item()


def test_set_seed_reproduces_all_three_generators():
    set_seed(123)
    first = draws()
    set_seed(123)
    assert draws() == first
    set_seed(124)
    assert draws() != first


def test_set_seed_makes_torch_deterministic():
    set_seed(0)
    assert torch.are_deterministic_algorithms_enabled()
    set_seed(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    set_seed(0)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises((TypeError, ValueError)):
        set_seed(bad)


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOMP_CACHE", str(tmp_path))
    path = cache_dir("zoo", "x")
    assert path == tmp_path / "zoo" / "x" and path.is_dir()
