"""Speed of the language-model coder (chapter 9): bytes per second by batch, threads.

``mlcomp.textcode`` codes ``batch`` chunks of 256 bytes side by side, one
model step per byte (the decoder's computation, which the encoder repeats so
that both sides see the same floats). A wider batch does more work per
step; more threads split each step's matrix products. This script codes the
first ``--kib`` KiB of the held-out works with the chapter's compressed
student (and the float32 teacher) at several batch widths and thread counts,
encoding and decoding, each configuration timed in alternation over
``--rounds`` rounds, and prints the median bytes per second with the range
over rounds, beside the coded size (which does not depend on the batch).
gzip, xz and PPMd on the same bytes give the scale. Run with
``make benchmarks`` or ``.venv/bin/python benchmarks/bench_textcode.py``.
"""

from __future__ import annotations

import argparse
import lzma
import statistics
import time

import pyppmd

from mlcomp import lm, textcode, zoo


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kib", type=int, default=64, help="KiB of text to code")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    data = lm.held_out_sample(args.kib * 256)[: args.kib * 1024]
    models = {
        f"{lm.STUDENT}:mlc{lm.DEFAULT_BITS}": lm.resolve(
            f"{lm.STUDENT}:mlc{lm.DEFAULT_BITS}"
        ),
        lm.TEACHER: zoo.pretrained(lm.TEACHER, progress=False),
    }
    configs = [
        (name, batch, threads)
        for name in models
        for batch in (16, 64, 256)
        for threads in (1, 2)
    ]
    blobs = {
        c: textcode.compress(data, models[c[0]], c[0], batch=c[1], threads=c[2])
        for c in configs
    }
    enc = {c: [] for c in configs}
    dec = {c: [] for c in configs}
    for _ in range(args.rounds):  # every configuration once per round
        for c in configs:
            name, batch, threads = c
            m = models[name]
            enc[c].append(_timed(lambda: textcode.compress(  # noqa: B023
                data, m, name, batch=batch, threads=threads)))  # noqa: B023  # fmt: skip
            dec[c].append(_timed(lambda: textcode.decompress(blobs[c], m)))  # noqa: B023
    print(f"{len(data):,} bytes of held-out text, {args.rounds} rounds")
    print(f"{'model':34s} {'batch':>5s} {'thr':>3s} {'bpc':>6s} "
          f"{'encode kB/s (min-max)':>24s} {'decode kB/s (min-max)':>24s}")  # fmt: skip
    for c in configs:
        cells = []
        for times in (enc[c], dec[c]):
            rates = [len(data) / t / 1e3 for t in times]
            cells.append(
                f"{statistics.median(rates):8.1f} ({min(rates):.1f}-{max(rates):.1f})"
            )
        bpc = 8 * len(blobs[c]) / len(data)
        print(
            f"{c[0]:34s} {c[1]:5d} {c[2]:3d} {bpc:6.3f} {cells[0]:>24s} {cells[1]:>24s}"
        )
    for name, fn in {
        "xz -9e": lambda: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
        "PPMd order 6": lambda: pyppmd.compress(data, max_order=6, mem_size=16 << 20),
    }.items():
        size = len(fn())
        rate = len(data) / statistics.median(_timed(fn) for _ in range(args.rounds))
        print(f"{name:34s} {'':5s} {'':3s} {8 * size / len(data):6.3f} "
              f"{rate / 1e3:8.1f} kB/s encode")  # fmt: skip


if __name__ == "__main__":
    main()
