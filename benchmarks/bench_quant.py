"""Latency of real int8 models (ONNX Runtime) against fp32, side by side.

For LeNet-300-100 and LeNet-5 from the zoo: PyTorch fp32 (eager), ONNX
Runtime fp32, and ONNX Runtime int8 — static QDQ per tensor, static per
channel, static per channel with LeNet-5's first convolution left in fp32,
and dynamic. Every variant of a model is timed in alternation over several
rounds (``measure.compare_latency``), so drift on a shared machine does not
favour any of them; the table gives the median ms per batch, the speed-up
over ONNX Runtime fp32 (the per-round ratios' median, min and max), the
file size and the top-1 accuracy on the test set. Run with
``make benchmarks`` or ``.venv/bin/python benchmarks/bench_quant.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import torch

from mlcomp import datasets, measure, quant, train, zoo


def build(workdir: str, threads: int) -> dict[str, dict[str, object]]:
    """{model: {variant: module}} with every ONNX file written under workdir."""
    calibration = datasets.fashion_mnist("train").images[:1024]
    example = torch.zeros(1, 1, 28, 28)
    out = {}
    for name in ("lenet300-fashion", "lenet5-fashion"):
        net = zoo.pretrained(name, progress=False)
        fp32 = quant.export_onnx(net, f"{workdir}/{name}.onnx", example)
        options = {
            "int8 static per tensor": {"per_channel": False},
            "int8 static per channel": {"per_channel": True},
            "int8 dynamic": {"mode": "dynamic"},
        }
        convs = quant.node_names(fp32, "Conv")
        if convs:
            options["int8 static, conv1 fp32"] = {"exclude": [convs[0]]}
        files = {"ONNX fp32": fp32}
        for i, (label, kwargs) in enumerate(options.items()):
            files[label] = quant.quantize_onnx(
                fp32, f"{workdir}/{name}-{i}.onnx", calibration, **kwargs
            )
        out[name] = {"PyTorch fp32": net} | {
            label: quant.OnnxModule(path, threads=threads)
            for label, path in files.items()
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=30, help="runs per round")
    args = parser.parse_args()

    test = datasets.fashion_mnist("test")
    x = test.images[: args.batch]
    with tempfile.TemporaryDirectory() as workdir:
        models = build(workdir, args.threads)
        header = (
            f"{'model':17s} {'variant':24s} {'ms':>8s} {'vs ORT fp32 (min-max)':>22s} "
            f"{'bytes':>10s} {'acc %':>6s}"
        )
        print(f"batch {args.batch}, {args.threads} threads, {args.rounds} rounds")
        print(header)
        print("-" * len(header))
        for name, variants in models.items():
            per_round = measure.latency_rounds(
                variants, x, args.rounds, args.repeats, threads=args.threads
            )
            for label, module in variants.items():
                median, low, high = measure.ratio_spread(per_round, "ONNX fp32", label)
                size = (
                    f"{os.path.getsize(module.path):10,d}"
                    if isinstance(module, quant.OnnxModule)
                    else f"{'-':>10s}"
                )
                ms = statistics.median(per_round[label])
                spread = f"({low:.2f}-{high:.2f})"
                print(
                    f"{name:17s} {label:24s} {ms:8.3f} "
                    f"{median:8.2f}x {spread}"
                    f"{'':2s} {size} {100 * train.evaluate(module, test):6.2f}"
                )


if __name__ == "__main__":
    main()
