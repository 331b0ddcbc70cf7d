"""What pinned numerics cost and buy: LeNet-5 training steps, pinned vs native.

Each configuration runs in a fresh process (the variables are read when torch
is imported): ``--steps`` SGD steps of LeNet-5 from seed 0 on Fashion-MNIST,
then the SHA-256 of the weights. Rounds are interleaved; the table gives the
median wall time of the steps relative to the pinned run and whether the
weights repeat bit for bit across rounds.

    python benchmarks/bench_numerics.py [--rounds 3] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from mlcomp.numerics import PINNED

CHILD = r"""
import hashlib, json, sys, time
import mlcomp, torch
from mlcomp import datasets, models, numerics, utils
steps = int(sys.argv[1])
utils.set_seed(0)
net = models.create("lenet5")
data = datasets.fashion_mnist("train")
x, y = data.images[: 64 * steps], data.labels[: 64 * steps]
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
start = time.perf_counter()
for i in range(steps):
    opt.zero_grad()
    batch = slice(64 * i, 64 * i + 64)
    loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
    loss.backward()
    opt.step()
seconds = time.perf_counter() - start
h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters()))
print(json.dumps({"seconds": seconds, "sha256": h.hexdigest()[:16],
                  "aten": numerics.report()["aten_capability"]}))
"""

CONFIGS = {
    "pinned (AVX2, 2 threads)": {},
    "native (this CPU's best paths, 2 threads)": {
        "MLCOMP_NUMERICS": "native", "OMP_NUM_THREADS": "2"},
}  # fmt: skip


def run(env_extra: dict[str, str], steps: int) -> dict:
    drop = {*PINNED, "MLCOMP_NUMERICS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):  # interleaved: each round runs every configuration
        for name, extra in CONFIGS.items():
            results[name].append(run(extra, args.steps))
    base = statistics.median(r["seconds"] for r in results["pinned (AVX2, 2 threads)"])
    print(
        f"LeNet-5, {args.steps} SGD steps of batch 64, {args.rounds} interleaved rounds"
    )
    print(
        f"{'configuration':45} {'ATen':8} {'time / pinned':>14} {'spread':>8}  weights"
    )
    for name, rs in results.items():
        t = [r["seconds"] for r in rs]
        hashes = {r["sha256"] for r in rs}
        same = "same every round" if len(hashes) == 1 else f"{len(hashes)} different"
        print(f"{name:45} {rs[0]['aten']:8} {statistics.median(t) / base:14.2f} "
              f"{(max(t) - min(t)) / base:8.2f}  {same} ({min(hashes)})")  # fmt: skip


if __name__ == "__main__":
    main()
