"""Pinned numerics: the same PyTorch arithmetic, bit for bit, wherever it can be.

PyTorch's CPU kernels pick their code path from the processor's instruction
set in three libraries: ATen's own vectorized kernels
(``ATEN_CPU_CAPABILITY``), oneDNN for convolutions (``ONEDNN_MAX_CPU_ISA``)
and MKL for matrix products (``MKL_CBWR``, "conditional bitwise
reproducibility"). An AVX-512 path sums in another order than an AVX2 path,
so one seed gives other weights on another CPU, and every number printed
downstream moves in its last digits. The thread count matters too: a
parallel reduction splits its work by thread and adds the parts in that
order.

This module pins all four to what every x86-64 CPU of the last decade has
(AVX2, two threads). ATen and oneDNN then take their AVX2 paths on any such
CPU; MKL does so on Intel CPUs only, and on an AMD CPU takes its own path
(:func:`mkl_branch`), so Intel and AMD machines agree on everything but the
last bits of matrix products, which is enough for weights trained on one
not to be re-made bit for bit on the other. The variables are read once,
when ``torch`` is first imported, so they must be in the environment
before that:

* ``import mlcomp`` sets them (unless already set) when torch is not yet
  imported, and so does every process the project starts: the Makefile
  exports them, and ``make`` installs a Jupyter kernel "mlcomp" that imports
  mlcomp before anything else (``mlcomp numerics --install-kernel``);
* ``MLCOMP_NUMERICS=native`` turns the pinning off (the fastest code paths
  of this CPU; the book's asserts still hold, its digits may differ).

:func:`report` says what is in effect in this process.

>>> sorted(PINNED)[:2]
['ATEN_CPU_CAPABILITY', 'MKL_CBWR']
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

__all__ = [
    "PINNED",
    "REFERENCE",
    "THREADS",
    "cpu_flags",
    "cpu_vendor",
    "mkl_branch",
    "has_native_bf16",
    "has_vnni",
    "environment",
    "install_kernel",
    "pin",
    "report",
]

THREADS = 2
#: The CPU the shipped zoo weights and the notebooks' stored outputs were made
#: on: a process prints the book's digits only on a CPU like it (see
#: :func:`report`); elsewhere the asserts hold and the last digits may move.
REFERENCE: dict[str, str] = {"cpu_vendor": "AMD", "mkl_branch": "AUTO"}
PINNED: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorized kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions)
    "MKL_CBWR": "AVX2",  # MKL (matrix products)
    "OMP_NUM_THREADS": str(THREADS),  # torch's intra-op threads
    "MKL_NUM_THREADS": str(THREADS),
}
KERNEL_NAME = "mlcomp"
KERNEL_DISPLAY_NAME = "Python 3 (mlcomp, pinned numerics)"


def _enabled(env) -> bool:
    mode = env.get("MLCOMP_NUMERICS", "pinned")
    if mode not in ("pinned", "native"):
        raise ValueError(f"MLCOMP_NUMERICS must be 'pinned' or 'native', got {mode!r}")
    return mode == "pinned"


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: ``os.environ``) with the pinned variables set.

    For starting a subprocess with the book's numerics. Values already in
    ``base`` are kept, so a user's explicit choice wins.

    >>> environment({})["MKL_CBWR"]
    'AVX2'
    >>> environment({"MLCOMP_NUMERICS": "native"}).get("MKL_CBWR") is None
    True
    """
    env = dict(os.environ if base is None else base)
    if _enabled(env):
        for key, value in PINNED.items():
            env.setdefault(key, value)
    return env


def pin() -> bool:
    """Set the pinned variables in this process; True if they can take effect.

    They can only while ``torch`` has not been imported yet (it reads them
    once); after that this changes nothing and returns False.

    >>> import torch
    >>> pin()  # too late in this process: torch is imported
    False
    """
    if "torch" in sys.modules or not _enabled(os.environ):
        return False
    os.environ.update(environment())
    return True


def report() -> dict[str, object]:
    """What decides this process's arithmetic, and whether it is the book's.

    ``pinned`` is True when every pinned variable has the book's value and
    ATen really runs its AVX2 kernels (a CPU without AVX2 falls back to
    another path: the asserts hold there, the digits may not) with
    :data:`THREADS` threads.

    ``mkl_branch`` and ``cpu_vendor`` say which digits MKL's matrix products
    give here (see :func:`mkl_branch`): two processes print the same digits
    only where both agree. ``book_digits`` is True when this process is
    pinned on a CPU like :data:`REFERENCE`, the one the book's stored
    outputs come from.

    >>> r = report()
    >>> sorted(r)  # doctest: +NORMALIZE_WHITESPACE
    ['aten_capability', 'book_digits', 'cpu_capability', 'cpu_vendor',
     'mkl_branch', 'pinned', 'threads', 'variables']
    """
    import torch

    variables = {key: os.environ.get(key) for key in PINNED}
    aten = torch.backends.cpu.get_cpu_capability()
    pinned = (
        all(os.environ.get(k) == v for k, v in PINNED.items())
        and aten == "AVX2"
        and torch.get_num_threads() == THREADS
    )
    here = {"cpu_vendor": cpu_vendor(), "mkl_branch": mkl_branch()}
    return {
        "pinned": pinned,
        "book_digits": pinned and here == REFERENCE,
        "aten_capability": aten,
        "cpu_capability": _cpu_capability(),
        **here,
        "threads": torch.get_num_threads(),
        "variables": variables,
    }


def cpu_flags() -> set[str]:
    """The instruction-set flags this CPU reports (empty where /proc/cpuinfo is not).

    For telling, e.g., whether it has native bf16 (``avx512_bf16``,
    ``amx_bf16``) or int8 dot products (``avx512_vnni``, ``avx_vnni``).

    >>> isinstance(cpu_flags(), set)
    True
    """
    try:
        return next(
            set(line.split(":", 1)[1].split())
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return set()


def cpu_vendor() -> str:
    """Who made this CPU: ``"Intel"``, ``"AMD"``, another vendor id, or ``"unknown"``.

    >>> cpu_vendor() in ("Intel", "AMD", "unknown") or bool(cpu_vendor())
    True
    """
    try:
        vendor = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("vendor_id")
        )
    except (OSError, StopIteration):
        return "unknown"
    return {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(vendor, vendor)


def mkl_branch(env=None) -> str:
    """The code path of MKL's matrix products in a process started with ``env``.

    ``MKL_CBWR=AVX2`` holds MKL to its AVX2 kernels only on an Intel CPU
    with AVX2. On any other CPU MKL ignores the named branch and takes its
    ``AUTO`` branch (oneMKL Developer Guide, "Getting Started with
    Conditional Numerical Reproducibility"): its own kernels for that CPU,
    still the same from run to run, but summing in another order than
    Intel's AVX2 kernels. So an AMD CPU and an Intel CPU give products that
    differ in their last bits, and weights trained on one are not re-made
    bit for bit on the other: ``"AVX2"`` here means the digits of every
    Intel CPU with AVX2, ``"AUTO"`` those of this kind of CPU only. (Only
    ``MKL_CBWR=COMPATIBLE``, MKL's SSE2 path, is documented to agree across
    vendors, and its products are slower.)

    >>> mkl_branch({"MKL_CBWR": "AVX2"}) in ("AVX2", "AUTO")
    True
    >>> mkl_branch({})
    'off'
    """
    env = os.environ if env is None else env
    branch = env.get("MKL_CBWR", "").split(",")[0].strip().upper()
    branch = branch.removeprefix("BRANCH=")
    if not branch:
        return "off"
    if branch in ("AUTO", "COMPATIBLE"):
        return branch
    if cpu_vendor() != "Intel":
        return "AUTO"
    return branch


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX).

    Without them, int8 kernels must widen to 16 bits and gain far less over fp32.

    >>> isinstance(has_vnni(), bool)
    True
    """
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX).

    >>> isinstance(has_native_bf16(), bool)
    True
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cpu_capability() -> str:
    """The best instruction set this CPU offers."""
    flags = cpu_flags()
    if not flags:
        return "unknown"
    for flag, name in [("avx512f", "AVX512"), ("avx2", "AVX2")]:
        if flag in flags:
            return name
    return "below AVX2"


def install_kernel(prefix: str | os.PathLike | None = None) -> Path:
    """Install the Jupyter kernel "mlcomp": this Python, numerics pinned.

    The kernel imports :mod:`mlcomp` before anything else
    (``python -m mlcomp._kernel``), so it pins the numerics unless Jupyter
    was started with ``MLCOMP_NUMERICS=native``. Written under ``prefix``
    (default: this Python's ``sys.prefix``, i.e. the virtual environment),
    where Jupyter started from that environment finds it. The notebooks name
    this kernel, so opening one in Jupyter gives the book's numbers.

    >>> import json, tempfile
    >>> folder = install_kernel(tempfile.mkdtemp())
    >>> json.loads((folder / "kernel.json").read_text())["argv"][1:3]
    ['-m', 'mlcomp._kernel']
    """
    folder = Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "mlcomp._kernel", "-f", "{connection_file}"],
        "display_name": KERNEL_DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": True},
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return folder
