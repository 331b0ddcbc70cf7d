"""The ``mlcomp`` command line.

    mlcomp zoo [NAME ...]    train, or verify the cache of, the reference models

Also available as ``python -m mlcomp``.
"""

from __future__ import annotations

import argparse
import sys
import time

from mlcomp import zoo

__all__ = ["main"]


def _zoo(args: argparse.Namespace) -> int:
    unknown = [n for n in args.names if n not in zoo.RECIPES]
    if unknown:
        print(
            f"mlcomp zoo: unknown model(s) {unknown}; "
            f"choose from {sorted(zoo.RECIPES)}",
            file=sys.stderr,
        )
        return 2
    for name in args.names or sorted(zoo.RECIPES):
        start = time.perf_counter()
        zoo.pretrained(name, progress=not args.quiet)
        info = zoo.record(name)
        print(
            f"{name}: test accuracy {info['test_accuracy']:.4f}, trained in "
            f"{info['train_seconds']} s, ready in {time.perf_counter() - start:.1f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    >>> main(["zoo", "lenet300-fashion", "--quiet"])  # doctest: +ELLIPSIS
    lenet300-fashion: test accuracy 0.8... ready in ... s
    0
    """
    parser = argparse.ArgumentParser(prog="mlcomp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("zoo", help="train or verify the cached reference models")
    p.add_argument("names", nargs="*", help=f"default: all of {sorted(zoo.RECIPES)}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_zoo)
    args = parser.parse_args(argv)
    return args.run(args)
