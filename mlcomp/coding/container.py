"""The ``.mlc`` file: a compressed ``state_dict`` that loads back into PyTorch.

Each tensor is stored in one of these representations, chosen per tensor by
a :class:`TensorSpec`:

* **sparsity** — ``dense``; ``bitmask`` (one bit per entry, then the
  non-zeros); ``relative``: Deep Compression's relative indices, each
  non-zero's distance from the previous one in ``index_bits`` bits, with a
  filler zero wherever a gap is too long for the field; or ``auto``, the
  smallest of the three for this tensor.
* **values** — ``float32``; ``float16``; ``uniform`` (``bits``-bit codes with
  an affine scale and zero point, per tensor or per output channel);
  ``step`` (integer levels on a grid of a given ``step``, as many as the
  values need, chosen by :func:`mlcomp.quant.ecsq.step_levels` with the
  rate-distortion weight ``rd_lambda``, zero exact: the quantizer of the NNC
  standard's kind, made for an entropy coder); or ``codebook`` (``2**bits``
  centroids found by 1-D k-means with linear initialization, stored as a
  float table, and a ``bits``-bit index per value, as in Deep Compression).
  Exact zeros stay exact zeros: when a tensor has any, zero takes one of the
  ``2**bits`` codebook entries.
* **coder** for the integer streams (codes, indices): ``none`` (fixed-width
  bit packing), ``huffman``, ``rans``, or ``auto``, the smallest of the three
  (a coded stream carries its own table, which small tensors cannot repay).

Without a spec a tensor is stored exactly (its own dtype, dense, raw bytes).
The file is ``MAGIC | version | header length | header | header CRC-32 |
sections``; the header is zlib-compressed JSON that lists every tensor's
resolved spec, its largest absolute reconstruction error, and each of its
sections with length and CRC-32, so a damaged file fails with a
:class:`~mlcomp.coding.CorruptFileError` that names the tensor and section.
Nothing in a file is ever executed: the header is JSON and the sections are
numbers.

>>> import tempfile, torch
>>> state = {"w": torch.linspace(-1, 1, 64).reshape(8, 8), "b": torch.zeros(8)}
>>> path = tempfile.mkdtemp() + "/tiny.mlc"
>>> save_compressed(state, path, TensorSpec(values="codebook", bits=4))
>>> back = load_compressed(path)
>>> error = (back["w"] - state["w"]).abs().max()
>>> bool(error < 0.07), torch.equal(back["b"], state["b"])
(True, True)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zlib
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from mlcomp.coding import huffman, rans
from mlcomp.coding._format import MAX_SYMBOLS, CorruptFileError
from mlcomp.coding.bits import pack_bits, unpack_bits
from mlcomp.prune.storage import relative_gaps
from mlcomp.quant import core as quant_core
from mlcomp.quant import ecsq
from mlcomp.quant.kmeans import kmeans_1d, nearest_centroid
from mlcomp.utils import atomic_open, check_bits

__all__ = ["TensorSpec", "save_compressed", "load_compressed", "inspect", "MAGIC"]

MAGIC, VERSION = b"MLC\x1a", 3
_READS = (2, 3)  # a file without step values is written as version 2, as before
_STEP_FIELDS = {"step": 0.0, "rd_lambda": 0.0}  # in a header only for step values
_DTYPES = {
    str(t).removeprefix("torch."): t
    for t in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
              torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
              torch.bool)
}  # fmt: skip


SPARSITIES, CODERS = ("dense", "bitmask", "relative"), ("none", "huffman", "rans")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """How to store one tensor; validates itself.

    >>> TensorSpec(values="uniform", bits=20)
    Traceback (most recent call last):
    ...
    ValueError: bits must be an integer in 1..16, got 20
    >>> TensorSpec(values="step", step=0.01, coder="rans").step
    0.01
    """

    values: str = "float32"  # float32 | float16 | uniform | step | codebook
    bits: int = 8  # for uniform and codebook values (step: set to what levels need)
    per_channel: bool = False  # uniform: one scale per output channel (axis 0)
    sparsity: str = "dense"  # dense | bitmask | relative | auto
    index_bits: int = 5  # relative indices: 5 for fc, 8 for conv in Deep Compression
    coder: str = "none"  # none | huffman | rans | auto, for the integer streams
    step: float = 0.0  # step values: the grid's step (> 0)
    rd_lambda: float = 0.0  # step values: rate weight of the level choice (0: round)

    def __post_init__(self) -> None:
        choices = {
            "values": ("float32", "float16", "uniform", "step", "codebook"),
            "sparsity": SPARSITIES + ("auto",),
            "coder": CODERS + ("auto",),
        }
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(
                    f"{field} must be one of {allowed}, got {getattr(self, field)!r}"
                )
        check_bits(self.bits)
        check_bits(self.index_bits, "index_bits")
        for field in ("step", "rd_lambda"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{field} must be a number, got {v!r}")
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{field} must be finite and >= 0, got {v}")
        if self.values == "step" and not self.step > 0:
            raise ValueError("step values need a step > 0 (e.g. quant.qp_step(-32))")


SpecLike = (
    TensorSpec
    | Mapping[str, TensorSpec]
    | Callable[[str, torch.Tensor], TensorSpec | None]
)


def _spec_for(spec, name: str, tensor: torch.Tensor) -> TensorSpec | None:
    if spec is None:
        return None
    if isinstance(spec, TensorSpec):  # weights only: floating, two or more dims
        return spec if tensor.is_floating_point() and tensor.dim() >= 2 else None
    if isinstance(spec, Mapping):
        return spec.get(name)
    return spec(name, tensor)


# --- integer streams ----------------------------------------------------------


def _code_ints(values: np.ndarray, bits: int, coder: str) -> bytes:
    if coder == "huffman":
        return huffman.encode(values)
    if coder == "rans":
        return rans.encode(values)
    return pack_bits(values, bits)


def _decode_ints(data: bytes, bits: int, coder: str, count: int) -> np.ndarray:
    if coder == "huffman":  # a stream may hold no more than the header says
        out = huffman.decode(data, max_symbols=count)
    elif coder == "rans":
        out = rans.decode(data, max_symbols=count)
    else:
        out = unpack_bits(data, bits, count)
        if len(data) != (count * bits + 7) // 8:
            raise CorruptFileError("packed stream has the wrong length")
    if out.size != count or (out.size and out.max() >= 1 << bits):
        raise CorruptFileError("integer stream does not match the header")
    return out


# --- quantizers ---------------------------------------------------------------


def _uniform(x: np.ndarray, rows: np.ndarray, n_rows: int, bits: int):
    """Affine ``bits``-bit codes per row (:mod:`mlcomp.quant.core`'s quantizer).

    The stored entries of a sparse tensor do not form a rectangle, so each
    row's min-max range is taken here; the range contains 0, so 0 is exact.
    """
    lo, hi = np.zeros(n_rows), np.zeros(n_rows)
    np.minimum.at(lo, rows, x)
    np.maximum.at(hi, rows, x)
    scale, zero = quant_core.range_qparams(
        torch.from_numpy(lo), torch.from_numpy(hi), bits, "affine"
    )
    rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    codes = quant_core.quantize(  # one (scale, zero point) per stored entry
        torch.from_numpy(x), scale[rows], zero[rows], bits, "affine", axis=0
    )
    return codes.numpy(), scale.numpy(), zero.numpy()


# --- one tensor -----------------------------------------------------------------


def _quantize(values: np.ndarray, positions: np.ndarray, t: torch.Tensor, s):
    """Values of the stored entries -> (header fields, integer codes or raw bytes)."""
    if s.values in ("float32", "float16"):
        dtype = "<f4" if s.values == "float32" else "<f2"
        return {}, values.astype(dtype).tobytes()
    if s.values == "uniform":
        n_rows = t.shape[0] if s.per_channel and t.dim() >= 1 else 1
        rows = (
            positions // max(t.numel() // max(n_rows, 1), 1)
            if n_rows > 1
            else np.zeros_like(positions)
        )
        codes, scale, zero = _uniform(values, rows, n_rows, s.bits)
        return {"scale": scale.tolist(), "zero_point": zero.tolist()}, codes
    if s.values == "step":
        codes = ecsq.zigzag(ecsq.step_levels(values, s.step, s.rd_lambda))
        return {"bits": max(int(codes.max(initial=0)).bit_length(), 1)}, codes
    k, nonzero = 1 << s.bits, values[values != 0]
    if nonzero.size == values.size:
        centroids = kmeans_1d(values, k) if values.size else np.zeros(1)
    else:  # zeros (pruned weights, relative fillers) stay exact: zero takes a code
        centroids = np.union1d(kmeans_1d(nonzero, k - 1), [0.0])
    return {"centroids": centroids}, nearest_centroid(values, centroids)


def _encode(t: torch.Tensor, s: TensorSpec, name: str):
    """The smallest encoding of ``t`` that ``s`` allows: (resolved entry, sections)."""
    x = t.detach().to(torch.float64).numpy().ravel()
    if s.values == "float16" and np.abs(x).max(initial=0) > 65504:
        raise ValueError(f"tensor {name!r} has values beyond float16's range")
    table_dtype = "<f8" if t.dtype == torch.float64 else "<f4"
    best: tuple[int, dict, dict] | None = None
    for sparsity in SPARSITIES if s.sparsity == "auto" else (s.sparsity,):
        streams: dict[str, tuple[np.ndarray, int]] = {}  # integer streams to code
        fixed: dict[str, bytes] = {}
        if sparsity == "dense":
            positions = np.arange(x.size)
        elif sparsity == "bitmask":
            mask = x != 0
            fixed["mask"] = np.packbits(mask).tobytes()
            positions = np.flatnonzero(mask)
        else:
            gaps, _ = relative_gaps(np.flatnonzero(x), s.index_bits)
            streams["index"] = (gaps, s.index_bits)
            positions = np.cumsum(gaps + 1) - 1  # fillers land on zeros
        try:
            fields, codes = _quantize(x[positions], positions, t, s)
        except ValueError as err:  # e.g. a step too fine for the tensor
            raise ValueError(f"tensor {name!r}: {err}") from None
        value_bits = fields.pop("bits", s.bits)  # step values: what levels need
        if isinstance(codes, bytes):
            fixed["values"] = codes
        else:
            streams["values"] = (codes, value_bits)
        if "centroids" in fields:
            fixed["codebook"] = fields.pop("centroids").astype(table_dtype).tobytes()
        coders = CODERS if s.coder == "auto" and streams else (s.coder,)
        for coder in coders if streams else ("none",):
            sections = dict(fixed)
            for kind, (ints, bits) in streams.items():
                sections[kind] = _code_ints(ints, bits, coder)
            order = ("mask", "index", "codebook", "values")
            sections = {k: sections[k] for k in order if k in sections}
            size = sum(map(len, sections.values()))
            if best is None or size < best[0]:
                spec = dataclasses.replace(
                    s, sparsity=sparsity, coder=coder, bits=value_bits
                )
                fields_ = dataclasses.asdict(spec)
                if spec.values != "step":  # files without step values: as in v2
                    fields_ = {k: v for k, v in fields_.items()
                               if k not in _STEP_FIELDS}  # fmt: skip
                entry = {"spec": fields_, "stored": len(positions)}
                best = (size, entry | fields, sections)
    return best[1], best[2]


def _decode(entry: dict, sections: dict[str, bytes], name: str) -> np.ndarray:
    s = TensorSpec(**entry["spec"])
    count, stored = int(np.prod(entry["shape"])), int(entry["stored"])
    if s.sparsity == "dense":
        positions = np.arange(count)
    elif s.sparsity == "bitmask":
        mask = np.unpackbits(np.frombuffer(sections["mask"], np.uint8))[:count]
        if mask.size != count or len(sections["mask"]) != (count + 7) // 8:
            raise CorruptFileError(f"tensor {name!r}: the bitmask has the wrong size")
        positions = np.flatnonzero(mask)
    else:
        gaps = _decode_ints(sections["index"], s.index_bits, s.coder, stored)
        positions = np.cumsum(gaps + 1) - 1
    if positions.size != stored or (stored and positions[-1] >= count):
        raise CorruptFileError(f"tensor {name!r}: sparse indices do not fit its shape")
    if s.values in ("float32", "float16"):
        dtype = "<f4" if s.values == "float32" else "<f2"
        if len(sections["values"]) != stored * np.dtype(dtype).itemsize:
            raise CorruptFileError(f"tensor {name!r}: values have the wrong length")
        values = np.frombuffer(sections["values"], dtype).astype(np.float64)
    elif s.values == "uniform":
        scale, zero = np.array(entry["scale"]), np.array(entry["zero_point"])
        n_rows = scale.size
        rows = positions // max(count // n_rows, 1) if n_rows > 1 else 0
        codes = _decode_ints(sections["values"], s.bits, s.coder, stored)
        values = (codes - zero[rows]) * scale[rows]
    elif s.values == "step":
        codes = _decode_ints(sections["values"], s.bits, s.coder, stored)
        values = ecsq.unzigzag(codes) * s.step
    else:
        dtype = "<f8" if entry["dtype"] == "float64" else "<f4"
        if len(sections["codebook"]) % np.dtype(dtype).itemsize:
            raise CorruptFileError(f"tensor {name!r}: the codebook has the wrong size")
        centroids = np.frombuffer(sections["codebook"], dtype).astype(np.float64)
        idx = _decode_ints(sections["values"], s.bits, s.coder, stored)
        if idx.size and idx.max() >= centroids.size:
            raise CorruptFileError(f"tensor {name!r}: codebook index out of range")
        values = centroids[idx]
    x = np.zeros(count)
    x[positions] = values
    return x


# --- files ----------------------------------------------------------------------


def save_compressed(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    spec: SpecLike | None = None,
    progress: bool = False,
    reference: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write ``state_dict`` to an ``.mlc`` file; without ``spec``, losslessly.

    ``spec`` is a :class:`TensorSpec` (applied to every floating tensor with
    two or more dimensions, i.e. the weights; biases, norms and buffers stay
    exact), a mapping from tensor names to specs (unnamed tensors stay
    exact), or a function ``(name, tensor) -> TensorSpec | None``. The file
    is written by :func:`mlcomp.utils.atomic_open` (a unique temporary file,
    fsync, rename), so a failed or concurrent save never leaves a
    half-written file behind. ``progress`` shows a bar over the
    tensors. Each lossy tensor's header records ``max_error``, the largest
    ``|decoded - x|`` over its entries, measured by decoding what was
    encoded; ``x`` is the tensor itself, or ``reference[name]`` when given
    (e.g. the weights before pruning, so that the bound covers the pruning
    too).

    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/exact.mlc"
    >>> state = {"w": torch.randn(4, 4), "steps": torch.tensor(3)}
    >>> save_compressed(state, path)
    >>> all(torch.equal(a, b) for a, b in zip(load_compressed(path).values(),
    ...                                       state.values()))
    True
    """
    entries, blobs = [], []
    items = tqdm(state_dict.items(), desc="compressing", unit="tensor",
                 total=len(state_dict), disable=not progress)  # fmt: skip
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(tensor).__name__}, not a tensor")
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {dtype}")
        tensor = tensor.detach().cpu().contiguous()
        s = _spec_for(spec, name, tensor)
        if s is None:
            entry, sections = (
                {"spec": None},
                {
                    "raw": tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
                    if tensor.numel()
                    else b""
                },
            )
        else:
            if not tensor.is_floating_point():
                raise ValueError(f"tensor {name!r} ({dtype}) is not floating point")
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:  # a codebook or grid over them would destroy every other value
                raise ValueError(
                    f"tensor {name!r} holds {bad} NaN or infinite value(s), which a "
                    "lossy representation cannot keep: fix the model, or store the "
                    "tensor exactly (spec None; --recipe lossless on the command line)"
                )
            entry, sections = _encode(tensor, s, name)
        entry |= {"name": name, "shape": list(tensor.shape), "dtype": dtype}
        if s is not None:  # decode what was encoded: the stated error is measured
            back = torch.from_numpy(_decode(entry, sections, name)).to(tensor.dtype)
            x = tensor if reference is None else reference[name].detach().cpu()
            if x.shape != tensor.shape:
                raise ValueError(f"reference[{name!r}] has another shape")
            error = (back.double() - x.reshape(-1).double()).abs()
            entry["max_error"] = float(error.max()) if error.numel() else 0.0
        entry["sections"] = [
            {"kind": kind, "length": len(blob), "crc32": zlib.crc32(blob)}
            for kind, blob in sections.items()
        ]
        entries.append(entry)
        blobs.extend(sections.values())
    header = json.dumps({"tensors": entries}, separators=(",", ":")).encode()
    header = zlib.compress(header, 9)
    steps = any(e["spec"] and e["spec"]["values"] == "step" for e in entries)
    version = VERSION if steps else 2
    with atomic_open(path) as f:
        f.write(MAGIC + bytes([version]) + len(header).to_bytes(4, "little"))
        f.write(header + zlib.crc32(header).to_bytes(4, "little"))
        for blob in blobs:
            f.write(blob)


MAX_ELEMENTS = MAX_SYMBOLS
"""The most entries a tensor of a file may declare (2**27); no model here is near."""

_SPEC_FIELDS = {f.name: f.type for f in dataclasses.fields(TensorSpec)}
_SECTION_KINDS = {"raw", "mask", "index", "codebook", "values"}


def _fail(path, message: str):
    raise CorruptFileError(f"{path}: {message}")


def _check_entry(e, path, seen: set, version: int = VERSION) -> None:
    """Validate one header entry's fields and types before anything is allocated.

    A spec without step values may omit ``step`` and ``rd_lambda`` (as every
    version-2 file does); their defaults are filled in, in place.
    """
    if not isinstance(e, dict):
        _fail(path, "a header entry is not an object")
    name = e.get("name")
    if not isinstance(name, str):
        _fail(path, "a tensor has no name")
    if name in seen:
        _fail(path, f"tensor {name!r} appears twice")
    seen.add(name)
    shape, dtype = e.get("shape"), e.get("dtype")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        _fail(path, f"tensor {name!r} has an invalid shape")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        _fail(
            path, f"tensor {name!r} declares {count:,} entries (limit {MAX_ELEMENTS:,})"
        )
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    sections = e.get("sections")
    if not isinstance(sections, list) or not all(
        isinstance(x, dict)
        and isinstance(x.get("kind"), str)
        and x["kind"] in _SECTION_KINDS
        and isinstance(x.get("length"), int)
        and x["length"] >= 0
        and isinstance(x.get("crc32"), int)
        for x in sections
    ):
        _fail(path, f"tensor {name!r} has an invalid section list")
    kinds = [x["kind"] for x in sections]
    length = {x["kind"]: x["length"] for x in sections}
    if len(set(kinds)) != len(kinds):
        _fail(path, f"tensor {name!r} lists a section twice")
    if "spec" not in e:
        _fail(path, f"tensor {name!r} has no spec")
    spec = e["spec"]
    if isinstance(spec, dict) and spec.get("values") != "step":
        spec = e["spec"] = _STEP_FIELDS | spec
    elif isinstance(spec, dict) and version < 3:
        _fail(path, f"tensor {name!r} has step values in a version-{version} file")
    if spec is None:
        if kinds != ["raw"] or length["raw"] != count * _DTYPES[dtype].itemsize:
            _fail(path, f"tensor {name!r}: its exact bytes have the wrong size")
        return
    if not isinstance(spec, dict) or set(spec) != set(_SPEC_FIELDS):
        _fail(path, f"tensor {name!r} has an invalid spec")
    try:
        s = TensorSpec(**spec)
    except (TypeError, ValueError) as err:
        _fail(path, f"tensor {name!r} has an invalid spec ({err})")
    if (
        s.sparsity == "auto"
        or s.coder == "auto"
        or not _DTYPES[dtype].is_floating_point
    ):
        _fail(path, f"tensor {name!r} has an unresolved or impossible spec")
    stored = e.get("stored")
    if not isinstance(stored, int) or isinstance(stored, bool) or stored < 0:
        _fail(path, f"tensor {name!r} has an invalid stored count")
    need = {"dense": [], "bitmask": ["mask"], "relative": ["index"]}[s.sparsity]
    need = need + (["codebook"] if s.values == "codebook" else []) + ["values"]
    if sorted(kinds) != sorted(need):
        _fail(path, f"tensor {name!r} has sections {kinds}, expected {need}")
    if s.sparsity == "dense" and stored != count:
        _fail(path, f"tensor {name!r}: a dense tensor stores every entry")
    if s.sparsity == "bitmask" and (
        stored > count or length["mask"] != (count + 7) // 8
    ):
        _fail(path, f"tensor {name!r}: the bitmask has the wrong size")
    if s.sparsity == "relative" and stored > count * (1 + 1 / (1 << s.index_bits)) + 1:
        _fail(path, f"tensor {name!r} stores more entries than it has")
    if s.values in ("float32", "float16"):
        if length["values"] != stored * (4 if s.values == "float32" else 2):
            _fail(path, f"tensor {name!r}: values have the wrong length")
    elif s.coder == "none" and length["values"] != (stored * s.bits + 7) // 8:
        _fail(path, f"tensor {name!r}: packed values have the wrong length")
    if s.sparsity == "relative" and s.coder == "none":
        if length["index"] != (stored * s.index_bits + 7) // 8:
            _fail(path, f"tensor {name!r}: packed indices have the wrong length")
    if s.values == "uniform":
        rows = shape[0] if s.per_channel and shape else 1
        for field in ("scale", "zero_point"):
            v = e.get(field)
            if not isinstance(v, list) or len(v) != max(rows, 1) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool)
                and math.isfinite(x) for x in v
            ):  # fmt: skip
                _fail(path, f"tensor {name!r} has an invalid {field}")
        if not all(x > 0 for x in e["scale"]) or not all(
            0 <= z < 1 << s.bits for z in e["zero_point"]
        ):
            _fail(path, f"tensor {name!r} has an invalid scale or zero point")
    if s.values == "codebook":
        item = 8 if dtype == "float64" else 4
        if not 0 < length["codebook"] <= item << s.bits or length["codebook"] % item:
            _fail(path, f"tensor {name!r}: the codebook has the wrong size")
    error = e.get("max_error", 0.0)
    if not isinstance(error, (int, float)) or isinstance(error, bool) or error < 0:
        _fail(path, f"tensor {name!r} has an invalid max_error")


def _read_header(f, path, file_size: int) -> tuple[list[dict], int]:
    """Read and validate the header from the open file ``f``; (entries, its bytes).

    Nothing is read beyond what the file holds, the decompressed JSON is
    bounded, and every entry is checked (:func:`_check_entry`) so that the
    sections it declares add up to the file exactly.
    """
    head = f.read(9)
    if len(head) < 9 or head[:4] != MAGIC:
        _fail(path, "not an .mlc file (no MLC magic number)")
    if head[4] not in _READS:
        _fail(path, f".mlc version {head[4]}; this reader knows versions {_READS}")
    size = int.from_bytes(head[5:9], "little")
    end = 9 + size + 4
    if end > file_size:
        _fail(path, "truncated inside its header")
    header = f.read(size)
    crc = f.read(4)
    if zlib.crc32(header) != int.from_bytes(crc, "little"):
        _fail(path, "the header is corrupted (CRC-32 mismatch)")
    inflate = zlib.decompressobj()
    limit = (1 << 20) + 64 * size  # a zlib bomb stops here
    try:
        text = inflate.decompress(header, limit)
        if inflate.unconsumed_tail or not inflate.eof:
            _fail(path, f"the header inflates to more than {limit:,} bytes")
        entries = json.loads(text)["tensors"]
    except (ValueError, KeyError, TypeError, RecursionError, zlib.error) as err:
        if isinstance(err, CorruptFileError):
            raise
        raise CorruptFileError(f"{path}: the header is not valid .mlc JSON") from None
    if not isinstance(entries, list):
        _fail(path, "the header is not valid .mlc JSON")
    seen: set = set()
    for e in entries:
        _check_entry(e, path, seen, head[4])
    sections = sum(x["length"] for e in entries for x in e["sections"])
    if end + sections != file_size:
        what = "truncated" if end + sections > file_size else "has trailing bytes"
        _fail(path, f"{what}: the header declares {end + sections:,} bytes, "
                    f"the file has {file_size:,}")  # fmt: skip
    return entries, end


def _sections(f, entry: dict, path) -> dict[str, bytes]:
    """Read one tensor's sections from ``f``, each checked by its CRC-32."""
    out = {}
    for sec in entry["sections"]:
        blob = f.read(sec["length"])
        if len(blob) != sec["length"]:
            _fail(path, f"truncated: tensor {entry['name']!r}, section {sec['kind']!r}")
        if zlib.crc32(blob) != sec["crc32"]:
            _fail(path, f"tensor {entry['name']!r}, section {sec['kind']!r} is "
                        "corrupted (CRC-32 mismatch)")  # fmt: skip
        out[sec["kind"]] = blob
    return out


def load_compressed(
    path: str | os.PathLike, progress: bool = False, max_elements: int | None = None
) -> dict[str, torch.Tensor]:
    """Read an ``.mlc`` file back into a ``state_dict`` (tensors in saved order).

    ``progress`` shows a bar over the tensors. The header is validated
    first; so that a tiny forged file cannot make the reader allocate
    gigabytes, the tensors may hold at most ``max_elements`` entries in all
    (default: 4,096 per byte of the file, at least 2**20 — far more than any
    real model needs, whose entries cost bits, not 1/4,096 of a byte;
    ``mlcomp decompress --max-elements``).

    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/half.mlc"
    >>> save_compressed({"w": torch.ones(2, 3)}, path, TensorSpec(values="float16"))
    >>> load_compressed(path)["w"]
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    """
    state = {}
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        entries, _ = _read_header(f, path, file_size)
        limit = max_elements or min(MAX_ELEMENTS, max(1 << 20, 4096 * file_size))
        total = sum(math.prod(e["shape"]) for e in entries)
        if total > limit:
            _fail(path, f"declares {total:,} entries, more than {limit:,} for a "
                        f"{file_size:,}-byte file; pass max_elements= if it is "
                        "real")  # fmt: skip
        for entry in tqdm(entries, desc="decompressing", unit="tensor",
                          disable=not progress):  # fmt: skip
            name, sections = entry["name"], _sections(f, entry, path)
            dtype, shape = _DTYPES[entry["dtype"]], tuple(entry["shape"])
            if entry["spec"] is None:
                raw = bytearray(sections["raw"])  # its size checked with the header
                if not raw:  # torch.frombuffer refuses an empty buffer
                    state[name] = torch.empty(shape, dtype=dtype)
                    continue
                raw = torch.frombuffer(raw, dtype=torch.uint8)
                state[name] = raw.view(dtype).reshape(shape).clone()
            else:
                x = _decode(entry, sections, name)
                state[name] = torch.from_numpy(x).to(dtype).reshape(shape)
    return state


def inspect(path: str | os.PathLike, verify: bool = True) -> pd.DataFrame:
    """Per-tensor table of an ``.mlc`` file: representation, bytes and error.

    Checks the header (its CRC-32, every field, and that the sections it
    declares fill the file exactly) and, with ``verify`` (the default), the
    CRC-32 of every section, one section at a time; ``verify=False`` reads
    the header only. Columns:
    the resolved representation; ``bytes`` of the tensor's sections, split
    into ``value bytes`` (codes or raw values), ``index bytes`` (bitmask or
    relative indices) and ``codebook bytes``; ``bits/entry`` over all
    entries of the tensor; and ``max error``, the largest absolute
    difference between a decoded entry and the tensor that was saved (0 for
    exact tensors). ``attrs["header_bytes"]`` and ``attrs["file_bytes"]``
    complete the account: the file is the header plus the sections.

    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/q.mlc"
    >>> save_compressed({"w": torch.randn(64, 64)}, path,
    ...                 TensorSpec(values="uniform", bits=4))
    >>> table = inspect(path)
    >>> table[["values", "bytes", "bits/entry"]]
                   values  bytes  bits/entry
    tensor
    w       uniform 4-bit   2048         4.0
    >>> table.attrs["file_bytes"] == table.attrs["header_bytes"] + 2048
    True
    """
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        entries, header_bytes = _read_header(f, path, file_size)
        if verify:
            for entry in entries:
                _sections(f, entry, path)
    rows = []
    for e in entries:
        s = e["spec"] or {}
        count = int(np.prod(e["shape"]))
        kinds = {sec["kind"]: sec["length"] for sec in e["sections"]}
        size = sum(kinds.values())
        values = s.get("values", "raw " + e["dtype"])
        if s.get("values") in ("uniform", "codebook"):
            values = f"{values} {s['bits']}-bit" + (
                " per channel" if s.get("per_channel") else ""
            )
        elif s.get("values") == "step":
            values = f"step {s['step']:.4g}" + (
                f" λ={s['rd_lambda']:.3g}" if s["rd_lambda"] else ""
            )
        sparsity = s.get("sparsity", "dense")
        if sparsity == "relative":
            sparsity += f" ({s['index_bits']}-bit)"
        rows.append(
            {
                "tensor": e["name"],
                "shape": "×".join(map(str, e["shape"])) or "scalar",
                "sparsity": sparsity,
                "values": values,
                "coder": s.get("coder", "none"),
                "entries": count,
                "stored": e.get("stored", count),
                "bytes": size,
                "value bytes": kinds.get("values", 0) + kinds.get("raw", 0),
                "index bytes": kinds.get("index", 0) + kinds.get("mask", 0),
                "codebook bytes": kinds.get("codebook", 0),
                "bits/entry": round(8 * size / max(count, 1), 3),
                "max error": e.get("max_error", 0.0),
            }
        )
    columns = ["tensor", "shape", "sparsity", "values", "coder", "entries", "stored",
               "bytes", "value bytes", "index bytes", "codebook bytes", "bits/entry",
               "max error"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns).set_index("tensor")
    table.attrs["header_bytes"] = header_bytes
    table.attrs["file_bytes"] = file_size  # = header + sections, checked above
    return table
