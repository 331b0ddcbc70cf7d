"""Latency of the keyword spotters per one-second clip, fp32 against int8.

The teacher (DS-CNN-M) and the compressed student of chapter 8 in PyTorch
(eager, fp32) and in ONNX Runtime (fp32 and static int8 per channel, batch
norms folded), one clip at a time on one thread by default, timed in
alternation over several rounds (``measure.compare_latency``) so that drift
on a shared machine favours none of them. The MFCC front end of one clip is
timed on its own row, since a deployed spotter pays it too. The table gives
the median ms per clip, the speed-up over the student's ONNX fp32 (median,
min and max of the per-round ratios), the file size and the accuracy on the
test voices. Whether int8 gains depends on the CPU (VNNI); the header says
which case holds. Run with ``make benchmarks`` or
``.venv/bin/python benchmarks/bench_kws.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import numpy as np
import torch

from mlcomp import kws, measure, numerics, quant, speech, train, zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=200, help="runs per round")
    args = parser.parse_args()

    test = kws.evaluation_set("test")
    clip = speech.load("test", progress=False).waveforms()[0]
    x = test[0][:1]
    teacher = zoo.pretrained("dscnn-m-kws", progress=False)
    student = zoo.pretrained(kws.DEFAULT_MODEL, progress=False)
    with tempfile.TemporaryDirectory() as workdir:
        files = kws.export_onnx(student, workdir)
        variants = {
            "teacher, PyTorch fp32": teacher,
            "final student, PyTorch fp32": student,
            "final, ORT fp32": quant.OnnxModule(files["fp32"], threads=args.threads),
            "final, ORT int8": quant.OnnxModule(files["int8"], threads=args.threads),
        }
        torch.set_num_threads(args.threads)
        timed = variants | {"MFCC front end": lambda _: kws.features(clip)}
        per_round = measure.latency_rounds(
            timed, x, args.rounds, args.repeats, threads=args.threads
        )
        vnni = "yes" if numerics.has_vnni() else "no"
        print(
            f"one clip, {args.threads} thread(s), {args.rounds} rounds; "
            f"int8 dot-product instructions (VNNI) on this CPU: {vnni}"
        )
        header = (
            f"{'variant':28s} {'ms/clip':>8s} {'vs ORT fp32 (min-max)':>22s} "
            f"{'bytes':>9s} {'test %':>7s}"
        )
        print(header)
        print("-" * len(header))
        front = statistics.median(per_round["MFCC front end"])
        print(f"{'MFCC front end':28s} {front:8.3f}")
        for label, module in variants.items():
            median, low, high = measure.ratio_spread(
                per_round, "final, ORT fp32", label
            )
            size = (
                f"{os.path.getsize(module.path):9,d}"
                if isinstance(module, quant.OnnxModule)
                else f"{'-':>9s}"
            )
            print(
                f"{label:28s} {statistics.median(per_round[label]):8.3f} "
                f"{median:8.2f}x ({low:.2f}-{high:.2f})"
                f"{'':3s} {size} {100 * train.evaluate(module, test):7.2f}"
            )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
