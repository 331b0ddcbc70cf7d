"""Speed and size of mlcomp's entropy coders next to zlib, bz2, lzma and zstd.

Two inputs, one byte per symbol: 4 million quantized weights (a rounded
Laplacian, like 8-bit weights after quantization) and Shakespeare's complete
works (bytes of the shipped text). For each coder the table gives bits per
symbol, encode and decode speed in M symbols/s (= MB/s of input here), and
the order-0 entropy for reference. Our coders are order-0 (each symbol coded
on its own); the general-purpose compressors also exploit repetition (LZ
matches, block sorting, context models), which is why they can go below the
order-0 entropy on text. Every run is checked to round-trip; times are the
best of ``--repeats`` runs on one core.

The peers of our two model-driven coders are constriction's (Bamler 2022;
``pip install constriction``, in the test extras): its ANS stack and its
range coder, driven by the same model as ours — the message's own symbol
counts, counted inside the timed encode as ours are — and timed in the same
loop. Their ``ratio`` rows give our speed over theirs (above 1: ours is
faster) and our size over theirs. Without constriction those rows are left
out. Run with `make benchmarks` or `.venv/bin/python benchmarks/bench_coding.py`.
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import time
import zlib

import numpy as np
import zstandard

from mlcomp import datasets
from mlcomp.coding import Categorical, arithmetic, huffman, rans


def inputs(n_weights: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    weights = np.clip(np.round(rng.laplace(0, 6, n_weights)), -127, 127) + 128
    text = datasets.shakespeare("all").encode("utf-8")
    return {
        f"quantized weights ({n_weights / 1e6:g} M)": weights.astype(np.uint8),
        f"Shakespeare ({len(text) / 1e6:.1f} MB)": np.frombuffer(text, np.uint8),
    }


def ours(coder):
    return (lambda a: coder.encode(a), lambda d: coder.decode(d).astype(np.uint8))


def general(compress, decompress):
    return (
        lambda a: compress(a.tobytes()),
        lambda d: np.frombuffer(decompress(d), np.uint8),
    )


CODERS = {
    "Huffman (mlcomp)": ours(huffman),
    "rANS (mlcomp)": ours(rans),
    "arithmetic (mlcomp)": ours(arithmetic),
    "zlib -9": general(lambda b: zlib.compress(b, 9), zlib.decompress),
    "bz2 -9": general(lambda b: bz2.compress(b, 9), bz2.decompress),
    "lzma (xz -6)": general(lzma.compress, lzma.decompress),
    "zstd -3": general(
        zstandard.ZstdCompressor(level=3).compress,
        zstandard.ZstdDecompressor().decompress,
    ),
    "zstd -19": general(
        zstandard.ZstdCompressor(level=19).compress,
        zstandard.ZstdDecompressor().decompress,
    ),
}


def constriction_coders():
    """constriction's ANS and range coders, with the message's counts as the model."""
    try:
        import constriction
    except ImportError:
        return {}

    def model(a):
        counts = np.bincount(a, minlength=256).astype(np.float64)
        return constriction.stream.model.Categorical(
            counts / counts.sum(), perfect=False
        )

    def coder(encoder, method: str, decoder):
        def encode(a):
            m = model(a)
            enc = encoder()
            getattr(enc, method)(a.astype(np.int32), m)  # ANS codes in reverse
            return enc.get_compressed(), m, a.size

        def decode(blob):
            words, m, n = blob
            return decoder(words).decode(m, n).astype(np.uint8)

        return encode, decode

    stream = constriction.stream
    return {
        "ANS (constriction)": coder(
            stream.stack.AnsCoder, "encode_reverse", stream.stack.AnsCoder
        ),
        "range (constriction)": coder(
            stream.queue.RangeEncoder, "encode", stream.queue.RangeDecoder
        ),
    }


PEERS = {"rANS (mlcomp)": "ANS (constriction)",
         "arithmetic (mlcomp)": "range (constriction)"}  # fmt: skip


def size_of(blob) -> int:
    return 4 * blob[0].size if isinstance(blob, tuple) else len(blob)


def best_time(fn, arg, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(arg)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", type=int, default=4_000_000)
    args = parser.parse_args()
    for coder in (huffman, rans, arithmetic):  # compile the numba kernels
        coder.decode(coder.encode(np.arange(100) % 7))

    coders = CODERS | constriction_coders()
    header = f"{'coder':24s} {'bits/sym':>9s} {'encode M/s':>11s} {'decode M/s':>11s}"
    for name, data in inputs(args.weights).items():
        h = Categorical.from_symbols(data).entropy()
        print(f"\n{name}: order-0 entropy {h:.3f} bits/symbol")
        print(header)
        print("-" * len(header))
        results = {}
        for coder, (enc, dec) in coders.items():
            t_enc, blob = best_time(enc, data, args.repeats)
            t_dec, back = best_time(dec, blob, args.repeats)
            assert np.array_equal(back, data), coder
            results[coder] = (size_of(blob), t_enc, t_dec)
            print(
                f"{coder:24s} {8 * size_of(blob) / data.size:9.3f} "
                f"{data.size / t_enc / 1e6:11.1f} {data.size / t_dec / 1e6:11.1f}"
            )
        for ours, theirs in PEERS.items():
            if theirs in results:
                (b1, e1, d1), (b2, e2, d2) = results[ours], results[theirs]
                print(f"{'ratio ' + ours.split()[0] + ' / ' + theirs.split()[0]:24s} "
                      f"{b1 / b2:9.4f} {e2 / e1:11.2f} {d2 / d1:11.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
