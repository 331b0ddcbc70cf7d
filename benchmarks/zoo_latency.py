"""Latency of the reference models on this CPU, by batch size and thread count.

Prints one table; every ratio in it is taken between rows of the same run.
Run with `make benchmarks` or `.venv/bin/python benchmarks/zoo_latency.py`.
"""

from __future__ import annotations

import argparse
import platform

import torch

from mlcomp import measure, zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    args = parser.parse_args()

    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads available"
    )
    header = (
        f"{'model':18s} {'batch':>5s} {'1 thread ms':>12s} {'2 threads ms':>13s} "
        f"{'speed-up':>8s} {'µs/image (2 thr)':>17s}"
    )
    print(header)
    print("-" * len(header))
    for name in sorted(zoo.RECIPES):
        net = zoo.pretrained(name, progress=False)
        for batch in args.batches:
            x = torch.randn(batch, 1, 28, 28)
            one = measure.latency(net, x, repeats=args.repeats, threads=1)
            two = measure.latency(net, x, repeats=args.repeats, threads=2)
            speedup = one.median_ms / two.median_ms
            print(
                f"{name:18s} {batch:5d} {one.median_ms:12.3f} {two.median_ms:13.3f} "
                f"{speedup:7.2f}x {1e3 * two.median_ms / batch:17.1f}"
            )


if __name__ == "__main__":
    main()
