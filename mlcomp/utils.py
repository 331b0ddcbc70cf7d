"""Small helpers shared by every chapter: seeding, and where files live.

Reproducibility is a feature of this book: every notebook starts with
``set_seed(0)`` so that its stored outputs are what a reader gets when they
run it again.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["set_seed", "cache_dir"]


def set_seed(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, NumPy and PyTorch, and make PyTorch deterministic.

    With ``deterministic=True``, PyTorch is told to use only deterministic
    algorithms (an op without a deterministic implementation raises instead of
    silently varying from run to run).

    >>> set_seed(0); a = torch.rand(3)
    >>> set_seed(0); b = torch.rand(3)
    >>> bool(torch.equal(a, b))
    True
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state is what we seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under the mlcomp cache.

    The cache is ``$MLCOMP_CACHE`` when that variable is set, else
    ``~/.cache/mlcomp``.

    >>> cache_dir("zoo").name
    'zoo'
    """
    root = os.environ.get("MLCOMP_CACHE") or Path.home() / ".cache" / "mlcomp"
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
