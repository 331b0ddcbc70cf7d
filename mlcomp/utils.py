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

__all__ = ["set_seed", "cache_dir", "atomic_open", "MAX_BITS", "check_bits", "count"]

MAX_BITS = 16
"""The widest code the book's quantizers, codebooks and index fields use."""


def check_bits(bits, name: str = "bits", low: int = 1, high: int = MAX_BITS) -> int:
    """``bits`` if it is an integer in ``low..high``; else one clear error.

    The one validator of every bit width in the package (quantizers,
    codebooks, index fields, ``TensorSpec``): a non-integer is a
    ``TypeError``, an integer out of range a ``ValueError``.

    >>> check_bits(4)
    4
    >>> check_bits(4.5)
    Traceback (most recent call last):
    ...
    TypeError: bits must be an integer in 1..16, got 4.5
    >>> check_bits(0, "index_bits")
    Traceback (most recent call last):
    ...
    ValueError: index_bits must be an integer in 1..16, got 0
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{name} must be an integer in {low}..{high}, got {bits!r}")
    if not low <= bits <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {bits}")
    return int(bits)


def count(amount, total: int, what: str = "entries") -> int:
    """How many of ``total`` items ``amount`` names: the one rule for ``amount``.

    As in :mod:`torch.nn.utils.prune`: an int is a count in ``[0, total]``, a
    float a fraction in ``[0, 1]`` of ``total`` (rounded half to even, as
    torch rounds it). Every verb that takes an ``amount`` (pruning masks,
    ``shrink_channels``, ``prune_state_dict``) reads it with this function.

    >>> count(0.25, 10), count(3, 10)
    (2, 3)
    >>> count(1.5, 10)
    Traceback (most recent call last):
    ...
    ValueError: amount=1.5 is not a fraction in [0, 1] (or a count of the 10 entries)
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.number)):
        raise TypeError(
            f"amount must be a fraction in [0, 1] (float) or a count (int), "
            f"got {amount!r}"
        )
    if isinstance(amount, (int, np.integer)):
        if not 0 <= amount <= total:
            raise ValueError(
                f"amount={amount} is not a count in [0, {total}] of the {what}"
            )
        return int(amount)
    if not 0.0 <= amount <= 1.0:
        raise ValueError(
            f"amount={amount} is not a fraction in [0, 1] "
            f"(or a count of the {total} {what})"
        )
    return round(amount * total)


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

    >>> import torch
    >>> set_seed(0); a = torch.rand(3)
    >>> set_seed(0); b = torch.rand(3)
    >>> bool(torch.equal(a, b))
    True
    """
    import torch  # here: the validators above serve torch-free code too

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
