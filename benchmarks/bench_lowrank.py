"""Latency of factorized reference models against the dense ones.

LeNet-300-100 with fc1/fc2 at ranks (64, 32), and LeNet-5 with conv2 replaced
by its Tucker-2 factorization at ranks (26, 10) (a 35% MAC budget), as in the
low-rank chapter. Weights are the zoo's, truncated without fine-tuning:
latency does not depend on the values. Ratios are dense / factorized, taken in
the same run. Run with `make benchmarks` or
`.venv/bin/python benchmarks/bench_lowrank.py`.
"""

from __future__ import annotations

import argparse
import copy

import torch

from mlcomp import lowrank, measure, zoo


def variants():
    lenet300 = zoo.pretrained("lenet300-fashion", progress=False)
    lenet5 = zoo.pretrained("lenet5-fashion", progress=False)
    factorized300 = lowrank.factorize_(
        copy.deepcopy(lenet300), rank={"fc1": 64, "fc2": 32}
    )
    tucker5 = copy.deepcopy(lenet5)
    tucker5.conv2 = lowrank.tucker2_conv(tucker5.conv2, (26, 10))
    return [
        ("LeNet-300-100", lenet300, "ranks (64, 32)", factorized300),
        ("LeNet-5", lenet5, "Tucker-2 conv2 (26, 10)", tucker5),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    args = parser.parse_args()

    header = (
        f"{'model':14s} {'variant':24s} {'MACs':>10s} {'batch':>5s} {'thr':>3s} "
        f"{'dense ms':>9s} {'factor. ms':>10s} {'speed-up':>8s}"
    )
    print(header)
    print("-" * len(header))
    for model, dense, variant, low in variants():
        for batch in args.batches:
            x = torch.randn(batch, 1, 28, 28)
            for threads in args.threads:
                d = measure.latency(dense, x, repeats=args.repeats, threads=threads)
                f = measure.latency(low, x, repeats=args.repeats, threads=threads)
                print(
                    f"{model:14s} {variant:24s} {measure.macs(low, (1, 28, 28)):10d} "
                    f"{batch:5d} {threads:3d} {d.median_ms:9.3f} {f.median_ms:10.3f} "
                    f"{d.median_ms / f.median_ms:7.2f}x"
                )


if __name__ == "__main__":
    main()
