"""A language model as a compressor: arithmetic coding with a GPT's next-byte odds.

An arithmetic coder spends ``-log2 q(x_t | x_<t)`` bits (plus a few bits in
all) on a message whose every symbol it is told the probability of; a
language model ``q`` supplies those probabilities. The coded size is the
model's cross-entropy on the text, the number :func:`mlcomp.gpt.bits_per_byte`
measures, made real.

How this module codes ``data`` (any bytes, not only text):

* it cuts the data into chunks of ``block_size`` bytes (the last one
  shorter) and codes ``batch`` chunks side by side; each chunk is predicted
  from a newline and its own earlier bytes, so the model never needs more
  context than it was trained on;
* at step ``t`` the model runs on byte ``t - 1`` of every chunk of the
  batch, with a KV cache, and its next-byte probabilities ``p`` become
  integer frequencies ``floor(p * 2**20) + 1`` (every byte stays codable);
* one stream of :class:`~mlcomp.coding.arithmetic.RowEncoder` codes the
  bytes in the order the decoder will need them: batch after batch, step
  after step, chunk after chunk.

**Why decoding gets the encoder's exact probabilities.** The decoder must
build the same integer frequencies, or it decodes garbage. Floating-point
results depend on the order of operations, which depends on the shapes of
the tensors, the thread count and the CPU's instruction set. So the
encoder does not run the model once over the whole text (which would be
faster): it runs *the decoder's* computation, step by step with the same
batch of chunks, the same cache, the same shapes. The thread count is fixed
by the file's header, and the numerics by :mod:`mlcomp.numerics` (AVX2
kernels; MKL's matrix products take Intel's AVX2 path on Intel CPUs and
their own on others, so the header names that branch too); a file made
under other numerics is refused with the reason. A CRC-32 of the decoded
bytes, checked at the end, catches any mismatch that slips through.

The ``.mlt`` file: magic ``MLCT``, version, then a header with the model's
name and the SHA-256 of its weights (a file coded by another model is
refused), the numerics, the chunk and batch shape, the length and CRC-32
of the original; the arithmetic-coded payload; a CRC-32 of the whole file.

>>> import torch
>>> from mlcomp.gpt import GPT, GPTConfig
>>> _ = torch.manual_seed(0)
>>> net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=16, block_size=8))
>>> blob = compress(b"to be or not to be", net, "tiny")
>>> decompress(blob, net)
b'to be or not to be'
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from mlcomp import numerics
from mlcomp.coding._format import (
    CorruptFileError,
    pack,
    read_varints,
    unpack,
    write_varints,
)
from mlcomp.coding.arithmetic import RowDecoder, RowEncoder
from mlcomp.gpt import GPT, KVCache

__all__ = [
    "FREQUENCY_BITS",
    "classical_sizes",
    "code_length",
    "START",
    "Header",
    "compress",
    "decompress",
    "model_digest",
    "read_header",
]

MAGIC, VERSION = b"MLCT", 1
FREQUENCY_BITS = 20  # frequencies floor(p * 2**20) + 1: a total below 2**24
START = 10  # the byte every chunk is predicted from first: a newline
DEFAULT_BATCH = 64
# the fewest bits a byte can cost: the most a frequency can be of its total
_MIN_BITS = np.log2((2**FREQUENCY_BITS + 256) / (2**FREQUENCY_BITS + 1))
DEFAULT_THREADS = numerics.THREADS


@dataclass(frozen=True)
class Header:
    """What a ``.mlt`` file says about itself.

    >>> from mlcomp.gpt import GPT, GPTConfig
    >>> net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))
    >>> header, _ = read_header(compress(b"hello", net, "tiny"))
    >>> header.model, header.length, header.chunk
    ('tiny', 5, 8)
    """

    model: str
    model_sha256: str
    numerics: str
    length: int
    crc32: int
    chunk: int
    batch: int
    threads: int


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights: names, dtypes, shapes and bytes, in order.

    The same for the same weights however they were stored (a zoo
    safetensors file, a reloaded ``.mlc`` file).

    >>> from mlcomp.gpt import GPT, GPTConfig
    >>> a = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4))
    >>> model_digest(a) == model_digest(a), len(model_digest(a))
    (True, 64)
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _numerics_tag() -> str:
    """``pinned-`` and MKL's branch (``avx2`` on Intel, ``auto`` elsewhere), or
    ``native-`` and ATen's kernels: two processes with the same tag compute the
    same probabilities."""
    report = numerics.report()
    if report["pinned"]:
        return f"pinned-{report['mkl_branch'].lower()}"
    return f"native-{report['aten_capability']}"


def _cdfs(logits: torch.Tensor) -> np.ndarray:
    """(B, V) logits -> (B, V + 1) integer cumulative frequencies."""
    probs = torch.softmax(logits.float(), dim=-1)
    freq = torch.floor(probs * float(1 << FREQUENCY_BITS)).long() + 1
    cdf = torch.zeros(freq.shape[0], freq.shape[1] + 1, dtype=torch.long)
    cdf[:, 1:] = torch.cumsum(freq, dim=1)
    return cdf.numpy()


def _run(model: GPT, n: int, header: Header, coder, data=None, progress=False):
    """The one computation encoder and decoder share.

    Encoding (``data`` given) codes it with ``coder`` (a RowEncoder);
    decoding (``data`` None) fills and returns the decoded bytes.
    """
    chunk, batch = header.chunk, header.batch
    out = np.zeros(n, np.uint8) if data is None else np.frombuffer(data, np.uint8)
    n_chunks = -(-n // chunk)
    starts = np.arange(n_chunks) * chunk
    lengths = np.minimum(chunk, n - starts)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(header.threads)
    was_training = model.training
    model.eval()
    steps = sum(int(lengths[i : i + batch].max()) for i in range(0, n_chunks, batch))
    bar = tqdm(total=steps, desc="text", unit="step", disable=not progress,
               mininterval=1.0, leave=False)  # fmt: skip
    try:
        with torch.inference_mode():
            for first in range(0, n_chunks, batch):
                rows = np.arange(first, min(first + batch, n_chunks))
                s, length = starts[rows], lengths[rows]
                x = torch.full((len(rows), 1), START, dtype=torch.long)
                cache = KVCache(model.config, len(rows))
                for t in range(int(length.max())):
                    logits, cache = model(x, cache=cache)
                    cdfs = _cdfs(logits[:, -1])
                    active = length > t  # the last chunk may end early
                    if data is None:
                        out[s[active] + t] = coder.decode(cdfs[active])
                    else:
                        coder.encode(out[s[active] + t], cdfs[active])
                    nxt = np.zeros(len(rows), np.int64)
                    nxt[active] = out[s[active] + t]
                    x = torch.from_numpy(nxt)[:, None]
                    bar.update()
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
        model.train(was_training)
    return out.tobytes()


@torch.no_grad()
def code_length(
    model: GPT, data: bytes, every: int = 1, batch: int = 64
) -> tuple[float, int]:
    """The bits the coder spends on ``data`` and the number of bytes they code.

    The ideal code length ``sum -log2(f / total)`` of the integer frequencies
    :func:`compress` uses, chunk by chunk as it cuts them, from one forward
    pass per chunk (fast; the float results differ from the step-by-step
    pass of :func:`compress` only in their last bits). The real payload is
    within a few bits of it (a test checks). With ``every=k``, only chunks
    0, k, 2k, ... are counted: a systematic sample of a long text.

    >>> from mlcomp.gpt import GPT, GPTConfig
    >>> net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))
    >>> bits, n = code_length(net, bytes(100))
    >>> n, 7.5 < bits / n < 8.5  # an untrained model: about 8 bits a byte
    (100, True)
    """
    model = _check_model(model)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    chunk = model.config.block_size
    arr = np.frombuffer(bytes(data), np.uint8).astype(np.int64)
    starts = np.arange(0, len(arr), chunk)[::every]
    full = [s for s in starts if s + chunk <= len(arr)]
    tail = [s for s in starts if s + chunk > len(arr)]
    was_training = model.training
    model.eval()
    bits, counted = 0.0, 0
    try:
        groups = [full[i : i + batch] for i in range(0, len(full), batch)]
        groups += [[s] for s in tail]
        for group in groups:
            y = np.stack([arr[s : s + chunk] for s in group])  # (B, T) targets
            x = np.concatenate([np.full((len(group), 1), START), y[:, :-1]], axis=1)
            logits, _ = model(torch.from_numpy(x))
            cdf = _cdfs(logits.reshape(-1, logits.shape[-1]))
            sym = y.reshape(-1)
            rows = np.arange(len(sym))
            f = cdf[rows, sym + 1] - cdf[rows, sym]
            bits += float(np.sum(np.log2(cdf[:, -1] / f)))
            counted += len(sym)
    finally:
        model.train(was_training)
    return bits, counted


def _classical() -> dict:
    import bz2
    import gzip
    import lzma

    try:
        import pyppmd
        import zstandard
    except ImportError as err:
        raise ImportError(
            f"{err.name} is needed for the classical compressors: "
            'pip install "mlcomp[book]" (or pip install zstandard pyppmd)'
        ) from None
    ppmd = {"max_order": 6, "mem_size": 16 << 20}
    return {
        "gzip -9": (lambda b: gzip.compress(b, 9, mtime=0), gzip.decompress),
        "bzip2 -9": (lambda b: bz2.compress(b, 9), bz2.decompress),
        "xz -9e": (
            lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
            lzma.decompress,
        ),
        "zstd -19": (
            zstandard.ZstdCompressor(level=19).compress,
            zstandard.ZstdDecompressor().decompress,
        ),
        "PPMd (order 6, 16 MB)": (
            lambda b: pyppmd.compress(b, **ppmd),
            lambda b: pyppmd.decompress(b, **ppmd),
        ),
    }


def classical_sizes(data: bytes, check: bool = True) -> dict[str, int]:
    """Bytes of ``data`` under gzip -9, bzip2 -9, xz -9e, zstd -19 and PPMd (order 6).

    The general-purpose compressors the language-model coder is measured
    against, at their strongest common settings; PPMd (variant H, as in
    7-Zip, from ``pyppmd``) is the classical context-modelling coder, the
    nearest relative of a language model. With ``check``, every output is
    decompressed and compared with ``data`` (a size is only worth quoting if
    it decodes).

    >>> sizes = classical_sizes(b"to be or not to be, " * 50)
    >>> list(sizes)[:3], all(0 < n < 1000 for n in sizes.values())
    (['gzip -9', 'bzip2 -9', 'xz -9e'], True)
    """
    data = bytes(data)
    sizes = {}
    for name, (squeeze, restore) in _classical().items():
        blob = squeeze(data)
        if check and restore(blob) != data:
            raise RuntimeError(f"{name} did not give back its input")
        sizes[name] = len(blob)
    return sizes


def _check_model(model) -> GPT:
    if not isinstance(model, GPT):
        raise TypeError(
            f"the model must be an mlcomp.gpt.GPT, got {type(model).__name__}"
        )
    return model


def compress(
    data: bytes,
    model: GPT,
    name: str,
    *,
    batch: int = DEFAULT_BATCH,
    threads: int = DEFAULT_THREADS,
    progress: bool = False,
) -> bytes:
    """Code ``data`` with ``model`` (recorded under ``name``); the ``.mlt`` bytes.

    >>> from mlcomp.gpt import GPT, GPTConfig
    >>> net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))
    >>> len(decompress(compress(b"", net, "tiny"), net))
    0
    """
    model = _check_model(model)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if batch < 1 or threads < 1:
        raise ValueError(f"batch and threads must be >= 1, got {batch} and {threads}")
    data = bytes(data)
    header = Header(
        model=name,
        model_sha256=model_digest(model),
        numerics=_numerics_tag(),
        length=len(data),
        crc32=zlib.crc32(data),
        chunk=model.config.block_size,
        batch=batch,
        threads=threads,
    )
    encoder = RowEncoder()
    _run(model, len(data), header, encoder, data=data, progress=progress)
    payload = encoder.finish() if data else b""
    return pack(MAGIC, VERSION, _write_header(header), payload)


def _write_header(h: Header) -> bytes:
    name = h.model.encode("utf-8")
    tag = h.numerics.encode("ascii")
    return (
        write_varints([len(name)]) + name + bytes.fromhex(h.model_sha256)
        + write_varints([len(tag)]) + tag
        + write_varints([h.length, h.crc32, h.chunk, h.batch, h.threads])
    )  # fmt: skip


def read_header(blob: bytes) -> tuple[Header, bytes]:
    """Check a ``.mlt`` file's framing and CRC; return its header and payload.

    >>> read_header(b"MLCT")
    Traceback (most recent call last):
    mlcomp.coding._format.CorruptFileError: stream is truncated: 4 bytes
    """
    header, payload = unpack(blob, MAGIC, VERSION)
    what = "mlt header"
    try:
        (k,), pos = read_varints(header, 1, 0, what)
        name = header[pos : pos + k].decode("utf-8")
        pos += k
        digest = header[pos : pos + 32].hex()
        pos += 32
        (k,), pos = read_varints(header, 1, pos, what)
        tag = header[pos : pos + k].decode("ascii")
        pos += k
        values, pos = read_varints(header, 5, pos, what)
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{what} is not readable: {exc}") from None
    if len(digest) != 64 or pos != len(header):
        raise CorruptFileError(f"{what} is malformed")
    h = Header(name, digest, tag, *values)
    if h.chunk < 1 or h.batch < 1 or not 1 <= h.threads <= 1024:
        raise CorruptFileError(f"{what} has invalid parameters")
    return h, payload


def decompress(blob: bytes, model: GPT) -> bytes:
    """Decode a ``.mlt`` file with ``model``, which must be the one that coded it.

    Refuses, with the reason, a file coded by another model (its SHA-256)
    or under other numerics, and a corrupt or truncated file (CRC-32).

    >>> from mlcomp.gpt import GPT, GPTConfig
    >>> net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))
    >>> decompress(compress(bytes(range(20)), net, "tiny"), net) == bytes(range(20))
    True
    """
    return _decompress(blob, model)


def _decompress(blob: bytes, model: GPT, progress: bool = False) -> bytes:
    model = _check_model(model)
    h, payload = read_header(blob)
    digest = model_digest(model)
    if digest != h.model_sha256:
        raise ValueError(
            f"this file was coded with model {h.model!r} (weights "
            f"{h.model_sha256[:12]}...), not with this one ({digest[:12]}...): "
            "decode it with the model that coded it"
        )
    here = _numerics_tag()
    if h.numerics != here:
        raise ValueError(
            f"this file was coded under {h.numerics} numerics but this process "
            f"runs {here}: decode it where it was coded, or on a CPU of the "
            "same vendor with MLCOMP_NUMERICS unset (mlcomp numerics says "
            "which this is)"
        )
    if h.chunk != model.config.block_size:
        raise CorruptFileError("mlt header's chunk size does not match the model")
    if h.length == 0:
        return b""
    if 8 * len(payload) + 64 < h.length * _MIN_BITS:
        raise CorruptFileError("mlt payload is too short for its declared length")
    data = _run(model, h.length, h, RowDecoder(payload), progress=progress)
    if zlib.crc32(data) != h.crc32:
        raise CorruptFileError(
            "decoded bytes fail the CRC-32 of the original: the model's "
            "probabilities differ from the encoder's (another CPU or library?)"
        )
    return data
