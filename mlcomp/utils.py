"""Small helpers shared by every chapter: seeding, where files live, safe writes.

Reproducibility is a feature of this book: every notebook starts with
``set_seed(0)`` so that its stored outputs are what a reader gets when they
run it again.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

__all__ = ["set_seed", "cache_dir", "atomic_open"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write ``path`` all at once or not at all: a binary file to write into.

    The data goes to a temporary file of a unique name in the same folder,
    which is flushed to disk (fsync) and then renamed over ``path``: readers
    see the old file or the complete new one, never a part; two writers to one
    path leave one of the two complete files; a failure (an exception, a full
    disk) removes the temporary file and leaves ``path`` untouched. A process
    killed mid-write leaves only a hidden ``.NAME.*.tmp`` beside it.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_open(target) as f:
    ...     _ = f.write(b"all or nothing")
    >>> target.read_bytes()
    b'all or nothing'
    >>> with atomic_open(target) as f:  # a failed write leaves the old file
    ...     _ = f.write(b"half")
    ...     raise OSError("disk full")
    Traceback (most recent call last):
    OSError: disk full
    >>> target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
    (b'all or nothing', ['out.bin'])
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a file is not
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
