"""Latency of factorized reference models against the dense ones.

LeNet-300-100 with fc1/fc2 at ranks (64, 32), and LeNet-5 with conv2 replaced
by its Tucker-2 factorization at ranks (26, 10) (a 35% MAC budget), as in the
low-rank chapter. Weights are the zoo's, truncated without fine-tuning:
latency does not depend on the values. Latency on a shared machine drifts, so
dense and factorized are timed alternately over several rounds; the table
gives the median time of each and the median, min and max of the per-round
ratio dense / factorized. Run with `make benchmarks` or
`.venv/bin/python benchmarks/bench_lowrank.py`.
"""

from __future__ import annotations

import argparse
import copy
import statistics

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
    parser.add_argument("--repeats", type=int, default=20, help="runs per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    args = parser.parse_args()

    header = (
        f"{'model':14s} {'variant':24s} {'MACs':>9s} {'batch':>5s} {'thr':>3s} "
        f"{'dense ms':>9s} {'factor. ms':>10s} {'speed-up (min-max)':>20s}"
    )
    print(header)
    print("-" * len(header))
    for model, dense, variant, low in variants():
        for batch in args.batches:
            x = torch.randn(batch, 1, 28, 28)
            for threads in args.threads:
                d, f = [], []
                for _ in range(args.rounds):
                    d.append(measure.latency(dense, x, args.repeats, threads=threads))
                    f.append(measure.latency(low, x, args.repeats, threads=threads))
                ratios = [a.median_ms / b.median_ms for a, b in zip(d, f, strict=True)]
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                print(
                    f"{model:14s} {variant:24s} {measure.macs(low, (1, 28, 28)):9d} "
                    f"{batch:5d} {threads:3d} "
                    f"{statistics.median(t.median_ms for t in d):9.3f} "
                    f"{statistics.median(t.median_ms for t in f):10.3f} "
                    f"{statistics.median(ratios):6.2f}x ({spread:>9s})"
                )


if __name__ == "__main__":
    main()
