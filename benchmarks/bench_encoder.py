"""Latency of the compressed all-MiniLM-L6-v2 variants (chapter 9): batch 1 and 32.

Every variant of ``mlcomp.encoder.VARIANTS`` is built once (into the
cache, as ``mlcomp embed`` builds them) and timed on the same tokenized
batches of the evaluation sentences, batch 1 and batch 32, on ``--threads``
threads (ONNX Runtime's intra-op threads; PyTorch's for the ``.mlc``
model). The variants are interleaved: each round times every variant once,
so that a slow moment of the machine falls on all of them. Prints the
median milliseconds per batch with the range over rounds, and the speed-up
over ONNX Runtime float32 at each batch size, both the plain graph and the
fused one the int8 variant is built from, with whether this CPU has
VNNI int8 dot-product instructions (where int8 gains the most). Three
variants that exist only in PyTorch are timed as float32 ONNX graphs of the
same model (``encoder.onnx_twin``, the exporter of ``fp32``): 50% of the
layers' weights zeroed (Wanda, by row), 2:4, and the feed-forward matrices
factorized by SVD at 80% of their energy. On a CPU without VNNI, one more
row, ``int8-u8s8``, times the int8 file in ONNX Runtime's default AVX2 path
(u8 x s8 products summed in pairs in 16 bits, which saturates on 8-bit
weights, so its outputs are not the variant's): the speed-up int8 could have
on this CPU at all, beside the exact path the book uses. Run with
``make benchmarks`` or ``.venv/bin/python benchmarks/bench_encoder.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from mlcomp import encoder, measure, numerics, utils


def pytorch_variants(net, tok, scratch, threads: int) -> dict:
    """Pruned and factorized copies of ``net``, as float32 ONNX Runtime graphs."""
    import copy
    from pathlib import Path

    from mlcomp import lowrank, prune

    calibration = [
        encoder.tokenize(tok, [s])[0]
        for s in encoder.sentences(256, seed=encoder.CALIBRATION_SEED)
    ]
    out = {}
    for name, pattern in (("pruned-50%", "50%"), ("pruned-2:4", "2:4")):
        model = copy.deepcopy(net)
        scores = prune.wanda_scores(model, calibration, encoder.in_layers)
        if pattern == "50%":
            prune.prune_by_scores_(model, scores, 0.5, scope="row")
        else:
            prune.prune_nm_(model, 2, 4, scores=scores)
        prune.remove_(model)
        out[name] = encoder.onnx_twin(model, Path(scratch) / name, threads)
    model = lowrank.factorize_(copy.deepcopy(net), energy=0.8, filter_fn=encoder.in_ffn)
    out["svd-ffn-80%"] = encoder.onnx_twin(model, Path(scratch) / "svd", threads)
    return out


def saturating_int8(path, threads: int):
    """The int8 file in ONNX Runtime's default (saturating) AVX2 path, for timing."""
    from mlcomp.quant import runtime

    model = encoder.OnnxEncoder(path, threads)
    model.session = runtime._session(model.path, threads, exact=False)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    net, tok = encoder.load()
    folder = utils.cache_dir("encoder")
    models = {
        v: encoder.open_variant(
            v, encoder.build_variant(v, folder, net, tok), threads=args.threads
        )
        for v in encoder.VARIANTS
    }
    scratch = tempfile.TemporaryDirectory()  # the twins' files, removed at exit
    models |= pytorch_variants(net, tok, scratch.name, args.threads)
    if not numerics.has_vnni():
        models["int8-u8s8"] = saturating_int8(models["int8"].path, args.threads)
    texts = encoder.sentences(32, seed=3)
    print(f"VNNI int8 dot products on this CPU: {numerics.has_vnni()}; "
          f"{args.threads} threads, {args.rounds} rounds")  # fmt: skip
    print(f"{'variant':12s} {'batch':>5s} {'ms (min-max)':>22s} {'x fp32':>7s}"
          f" {'x fused':>8s}")  # fmt: skip
    for size in (1, 32):
        batch = encoder.tokenize(tok, texts[:size])

        def call(model):
            return lambda b: model(*b)

        with torch.inference_mode():
            times = measure.latency_rounds(
                {v: call(m) for v, m in models.items()}, batch,
                rounds=args.rounds, repeats=3, threads=args.threads, warmup=1,
            )  # fmt: skip
        base = statistics.median(times["fp32"])
        fused = statistics.median(times["fp32-fused"])
        for v, t in times.items():
            med = statistics.median(t)
            print(f"{v:12s} {size:5d} {med:9.2f} ({min(t):.2f}-{max(t):.2f})"
                  f" {base / med:7.2f} {fused / med:8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
