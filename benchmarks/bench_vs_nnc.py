"""Our ``.mlc`` files against the MPEG NNC standard's reference encoder, data-free.

For the four LeNet models of the zoo (dense and pruned LeNet-5 and
LeNet-300-100) every method stores the trained weights without any
fine-tuning, the file is decoded back into the model, and the model is
evaluated on the 10,000 Fashion-MNIST test images. Methods:

* ``mlc step`` — ``mlcomp compress --recipe step``: one uniform step for all
  weights (``qp``, :func:`mlcomp.quant.qp_step`), levels chosen by
  entropy-constrained quantization at ``λ = ln 2 / 6``, coded by rANS or
  Huffman, biases in float16;
* ``mlc step, λ=0`` — the same with plain rounding;
* ``mlc step, Fisher`` — one step per weight tensor
  (:class:`mlcomp.pipeline.StepAllocator`): the Fisher information of the
  model's predictions on 1,024 training images (no labels) weighs each
  weight's error, and a price of error sets every tensor's step at equal
  slopes of rate and weighted error; swept over as many prices as the
  others have ``qp``;
* ``mlc codebook`` — the Deep Compression recipe (k-means codebooks of
  ``--bits`` 2–8, coded indices), what ``mlcomp compress`` did before;
* ``NNCodec`` and ``NNCodec, no DQ`` — NNCodec (PyPI ``nncodec``, Fraunhofer
  HHI's implementation of ISO/IEC 15938-17 with DeepCABAC), with and without
  its dependent (trellis) quantization, at each ``qp`` of the same grid.

The table gives, per model and method, the smallest file whose accuracy is
within 0.5 and within 0.1 points of the float32 model, and the ratio of
ours to NNCodec's. Both sides are picked from a sweep on the test set, the
same optimistic choice for both.

The benchmark installs nothing. Without ``nncodec`` it prints ours alone and
how to get the peer. NNCodec builds a C++ extension and pins ``numpy<2``, so
it lives in its own environment next to ours, e.g.::

    python3 -m venv .venv-nnc
    .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \\
        > .venv-nnc/lib/python3.11/site-packages/mlcomp-venv.pth
    .venv-nnc/bin/pip install pybind11 setuptools wheel
    .venv-nnc/bin/pip install --no-deps opencv-python-headless h5py ptflops \
        torchmetrics lightning-utilities
    .venv-nnc/bin/pip install --no-deps --no-build-isolation nncodec==2.1.3
    .venv-nnc/bin/pip install --no-deps -e .
    .venv-nnc/bin/python benchmarks/bench_vs_nnc.py

(the ``.pth`` file lets that environment import our environment's packages;
``--no-deps`` keeps our numpy, which NNCodec's encoder and decoder run on;
the second line is what NNCodec imports at start-up).
Run with ``.venv/bin/python benchmarks/bench_vs_nnc.py [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from mlcomp import datasets, pipeline, quant, train, zoo
from mlcomp.coding import load_compressed

MODELS = (
    "lenet5-fashion",
    "lenet5-fashion-sparse94",
    "lenet300-fashion",
    "lenet300-fashion-sparse93",
)
QPS = range(-34, -9)  # both sides, one qp apart: steps of 1/128 to 1/4
TOLERANCES = (0.5, 0.1)  # accuracy points below float32
FISHER_IMAGES = 1024  # training images (labels unused) for the Fisher information


def _nncodec():
    try:
        import nncodec.nn
    except ImportError:
        return None
    return nncodec.nn


def ours_step(state, qp: int, path: str, rd_lambda: float) -> dict:
    pipeline.compress_state_dict(
        state, path, step=quant.qp_step(qp), rd_lambda=rd_lambda, coder="auto"
    )
    return load_compressed(path)


def ours_codebook(state, bits: int, path: str) -> dict:
    pipeline.compress_state_dict(
        state, path, conv_bits=bits, fc_bits=bits, coder="auto"
    )
    return load_compressed(path)


def nnc_round_trip(nnc, state, qp: int, use_dq: bool, workdir: str):
    """NNCodec's bitstream of ``state`` at ``qp`` and the state dict it decodes to.

    The state dict goes in as numpy arrays: NNCodec's data-free path (a
    ``torch.nn.Module`` would take its data-driven one).
    """
    args = {"qp": qp, "use_dq": use_dq, "verbose": False, "results": workdir,
            "model": "bench"}  # fmt: skip
    params = {k: v.numpy() for k, v in state.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints per tensor
        bitstream = nnc.encode(params, args=args)
        decoded = nnc.decode(bitstream, args=args)
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in decoded.items()}
    return len(bitstream), state


def sweep(name: str, workdir: str, nnc) -> pd.DataFrame:
    test = datasets.fashion_mnist("test")
    net = zoo.pretrained(name, progress=False)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    fp32 = train.evaluate(net, test)
    path = os.path.join(workdir, "model.mlc")
    rows = [
        {
            "method": "float32",
            "setting": "",
            "bytes": sum(t.numel() * t.element_size() for t in state.values()),
            "accuracy": fp32,
        }
    ]

    def evaluate(decoded) -> float:
        net.load_state_dict({k: v.to(state[k].dtype).reshape(state[k].shape)
                             for k, v in decoded.items()})  # fmt: skip
        return train.evaluate(net, test)

    images = datasets.fashion_mnist("train").images[:FISHER_IMAGES]
    allocator = pipeline.StepAllocator(state, pipeline.fisher_diagonal(net, images))
    jobs = [("mlc step", qp) for qp in QPS] + [("mlc step, λ=0", qp) for qp in QPS]
    jobs += [("mlc step, Fisher", mu) for mu in allocator.prices(len(QPS))]
    jobs += [("mlc codebook", bits) for bits in range(2, 9)]
    if nnc is not None:
        jobs += [("NNCodec", qp) for qp in QPS] + [("NNCodec, no DQ", qp) for qp in QPS]
    for method, setting in tqdm(jobs, desc=name, unit="file", leave=False):
        if method == "mlc step, Fisher":
            allocator.save(path, setting)
            decoded, size = load_compressed(path), None
        elif method.startswith("mlc step"):
            lam = 0.0 if "λ=0" in method else quant.STEP_LAMBDA
            decoded, size = ours_step(state, setting, path, lam), None
        elif method == "mlc codebook":
            decoded, size = ours_codebook(state, setting, path), None
        else:
            size, decoded = nnc_round_trip(
                nnc, state, setting, method == "NNCodec", workdir
            )
        size = os.path.getsize(path) if size is None else size
        rows.append({"method": method, "setting": setting, "bytes": size,
                     "accuracy": evaluate(decoded)})  # fmt: skip
    net.load_state_dict(state)
    table = pd.DataFrame(rows)
    table["drop (points)"] = 100 * (fp32 - table["accuracy"])
    table.insert(0, "model", name)
    return table


def smallest_within(table: pd.DataFrame, tolerance: float) -> pd.Series:
    """Per method, the fewest bytes whose accuracy drop is at most ``tolerance``."""
    ok = table[(table["drop (points)"] <= tolerance) & (table["method"] != "float32")]
    return ok.groupby("method")["bytes"].min()


def summary(tables: list[pd.DataFrame], peer: bool) -> pd.DataFrame:
    rows = []
    for table in tables:
        row = {"model": table["model"].iloc[0]}
        for tol in TOLERANCES:
            best = smallest_within(table, tol)
            for method, size in best.items():
                row[f"{method} ≤{tol}"] = int(size)
            if peer and "NNCodec" in best:
                theirs = min(best["NNCodec"], best.get("NNCodec, no DQ", np.inf))
                for ours in ("mlc step", "mlc step, Fisher"):
                    if ours in best:
                        row[f"{ours} / NNCodec ≤{tol}"] = round(best[ours] / theirs, 3)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--json", help="also write every measured point here")
    args = parser.parse_args()
    nnc = _nncodec()
    if nnc is None:
        print("NNCodec is not importable: ours alone. To compare, make the "
              "environment in this file's docstring and run the benchmark "
              "with its python.")  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        tables = [sweep(name, workdir, nnc) for name in args.models]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(pd.concat(tables).to_dict(orient="records"), f, indent=1)
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(summary(tables, nnc is not None).T)


if __name__ == "__main__":
    main()
