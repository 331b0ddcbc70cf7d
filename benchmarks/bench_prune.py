"""When does pruning save time on this CPU? Dense, masked, shrunk and CSR side by side.

Two tables, each taken in one run with the variants timed alternately over
several rounds (medians of per-round medians):

1. LeNet-5 at batch 256: dense; unstructured 90% (global magnitude, masked,
   dense kernels); the same with its fully connected layers as CSR sparse
   matrices (torch.sparse.mm); 40% of the filters removed (physically smaller).
2. LeNet-5's fc1 (500 x 800) times a 800 x 256 activation matrix: dense matmul
   against CSR at several sparsities.

Run with `make benchmarks` or `.venv/bin/python benchmarks/bench_prune.py`.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
from torch import nn

from mlcomp import measure, prune, zoo
from mlcomp.prune import shrink_channels


class CSRLinear(nn.Module):
    """y = x W^T + b with W stored as a CSR sparse matrix."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.weight, x.T).T + self.bias


def executed_macs(net: nn.Module) -> int:
    """MACs per image the variant really performs.

    The hooks of measure.macs count Conv2d and Linear layers densely; a
    CSRLinear performs one multiply-accumulate per stored non-zero.
    """
    csr = [m for m in net.modules() if isinstance(m, CSRLinear)]
    return measure.macs(net, (1, 28, 28)) + sum(m.weight._nnz() for m in csr)


def main() -> None:
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)

    dense = zoo.pretrained("lenet5-fashion", progress=False)
    masked = prune.remove_(prune.magnitude_(copy.deepcopy(dense), 0.9, scope="global"))
    csr = copy.deepcopy(masked)
    csr.fc1, csr.fc2 = CSRLinear(masked.fc1), CSRLinear(masked.fc2)
    x = torch.randn(256, 1, 28, 28)
    shrunk = shrink_channels(dense, 0.4, x[:1])
    variants = {
        "dense": dense,
        "unstructured 90%, masked (dense kernels)": masked,
        "unstructured 90%, fc layers as CSR": csr,
        "40% of filters removed (shrunk)": shrunk,
    }
    with torch.inference_mode():
        torch.testing.assert_close(csr(x), masked(x), atol=1e-4, rtol=1e-4)
    ms = measure.compare_latency(variants, x, args.rounds, args.repeats, args.threads)
    print(f"LeNet-5, batch 256, {args.threads} threads")
    print(f"{'variant':42s} {'MACs executed':>13s} {'ms':>8s} {'speed-up':>8s}")
    for name, net in variants.items():
        print(
            f"{name:42s} {executed_macs(net):13d} {ms[name]:8.2f} "
            f"{ms['dense'] / ms[name]:7.2f}x"
        )

    W = dense.fc1.weight.detach()
    a = torch.randn(800, 256)
    print(f"\nfc1 (500 x 800) @ (800 x 256), {args.threads} threads")
    print(f"{'sparsity':>8s} {'dense ms':>9s} {'CSR ms':>8s} {'dense/CSR':>9s}")
    for s in (0.5, 0.8, 0.9, 0.95, 0.98, 0.99):
        Ws = W * prune.magnitude_mask(W, s)
        sparse = Ws.to_sparse_csr()
        pair = {
            "dense": lambda b, Ws=Ws: Ws @ b,
            "csr": lambda b, sparse=sparse: torch.sparse.mm(sparse, b),
        }
        t = measure.compare_latency(pair, a, args.rounds, args.repeats, args.threads)
        print(
            f"{s:8.2f} {t['dense']:9.3f} {t['csr']:8.3f} {t['dense'] / t['csr']:8.2f}x"
        )


if __name__ == "__main__":
    main()
