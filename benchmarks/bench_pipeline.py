"""Chapter 7's two questions, measured: how fast does it run, how fast does it store.

Table 1 — deployment latency of LeNet-5 by batch size: PyTorch fp32, ONNX
Runtime fp32 and int8 (static, per channel), for the full model and for the
model with half the filters of both convolutions removed. The variants of
one batch size are timed in alternation (``measure.compare_latency``); the
speed-up is against ONNX Runtime fp32 of the full model at the same batch
size. (The shrunk model is not fine-tuned here: latency does not depend on
the weights.)

Table 2 — the ``.mlc`` container's own speed: bytes, compression and
decompression seconds (median of a few runs) for the 94%-sparse LeNet-5 and
a randomly initialised torchvision ResNet-18 (11.7M parameters), with the
Deep Compression spec coded by Huffman, by rANS, and with ``auto``.

Run with ``make benchmarks`` or ``.venv/bin/python benchmarks/bench_pipeline.py``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time

import pandas as pd
import torch
import torchvision

from mlcomp import coding, datasets, measure, pipeline, quant, zoo
from mlcomp.prune import shrink_channels


def latency_table(workdir: str, batches: list[int], threads: int, rounds: int):
    calibration = datasets.fashion_mnist("train").images[:1024]
    test = datasets.fashion_mnist("test").images
    example = torch.zeros(1, 1, 28, 28)
    full = zoo.pretrained("lenet5-fashion", progress=False)
    nets = {"LeNet-5": full, "half the filters": shrink_channels(full, 0.5, example)}
    variants = {("LeNet-5", "PyTorch fp32"): full}
    for label, net in nets.items():
        fp32 = quant.export_onnx(net, f"{workdir}/{len(variants)}.onnx", example)
        int8 = quant.quantize_onnx(
            fp32, f"{workdir}/{len(variants)}-q.onnx", calibration
        )
        variants[(label, "ORT fp32")] = quant.OnnxModule(fp32, threads=threads)
        variants[(label, "ORT int8")] = quant.OnnxModule(int8, threads=threads)
    rows = []
    for batch in batches:
        times = measure.compare_latency(
            variants, test[:batch], rounds=rounds, repeats=20, threads=threads
        )
        base = times[("LeNet-5", "ORT fp32")]
        for (model, fmt), ms in times.items():
            rows.append({"batch": batch, "model": model, "runtime": fmt,
                         "ms per batch": round(ms, 3),
                         "speed-up": round(base / ms, 2)})  # fmt: skip
    return pd.DataFrame(rows).set_index(["batch", "model", "runtime"])


def _median_seconds(fn, runs: int) -> float:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def container_table(workdir: str, runs: int):
    torch.manual_seed(0)
    lenet5 = zoo.pretrained("lenet5-fashion-sparse94", progress=False)
    states = {
        "LeNet-5, 94% sparse": lenet5.state_dict(),
        "ResNet-18, random init": torchvision.models.resnet18(
            weights=None
        ).state_dict(),
    }
    rows = []
    for model, state in states.items():
        fp32 = sum(t.numel() * t.element_size() for t in state.values())
        for coder, sparsity in [("huffman", "relative"), ("rans", "relative"),
                                ("auto", "auto")]:  # fmt: skip
            spec = pipeline.deep_compression_spec(sparsity=sparsity, coder=coder)
            path = os.path.join(workdir, f"{len(rows)}.mlc")
            save = _median_seconds(
                functools.partial(coding.save_compressed, state, path, spec), runs
            )
            load = _median_seconds(
                functools.partial(coding.load_compressed, path), runs
            )
            size = os.path.getsize(path)
            rows.append({"model": model, "coder / sparsity": f"{coder} / {sparsity}",
                         "bytes": size, "ratio": round(fp32 / size, 1),
                         "compress s": round(save, 2), "decompress s": round(load, 2),
                         "decompress MB/s": round(fp32 / load / 1e6, 1)})  # fmt: skip
    return pd.DataFrame(rows).set_index(["model", "coder / sparsity"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="runs per .mlc timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", None)
    with tempfile.TemporaryDirectory() as workdir:
        print(f"LeNet-5 latency, {args.threads} threads, median of {args.rounds} "
              "alternating rounds; speed-up vs ORT fp32 of the full model")  # fmt: skip
        print(latency_table(workdir, args.batches, args.threads, args.rounds))
        print()
        print(f".mlc files (median of {args.runs} runs)")
        print(container_table(workdir, args.runs))


if __name__ == "__main__":
    main()
