"""Hostile input: mutated streams and .mlc files fail with CorruptFileError only.

A seeded mutator changes bytes, truncates, inserts huge varints and, for
``.mlc`` files, rewrites the JSON header (wrong types, missing keys, huge or
negative shapes, duplicate names, deep nesting, a zlib bomb), with and
without recomputing the CRCs. Whatever it does, a reader raises
``CorruptFileError`` and nothing else, allocates no more than a small
multiple of the input, and a mutation that leaves the CRCs stale is always
detected. About half a minute in all.
"""

import json
import random
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

from mlcomp.coding import (
    CorruptFileError,
    TensorSpec,
    arithmetic,
    huffman,
    inspect,
    load_compressed,
    lzw,
    rans,
    save_compressed,
)
from mlcomp.coding._format import pack, read_varints, unpack, write_varints

CODERS = {"huffman": huffman, "rans": rans, "arithmetic": arithmetic}


def _streams():
    rng = np.random.default_rng(0)
    messages = [rng.integers(0, 20, 300), np.full(50, 5), rng.geometric(0.3, 400)]
    out = [(name, c.encode(m)) for name, c in CODERS.items() for m in messages]
    out += [("lzw", lzw.encode(b"abracadabra" * 30)), ("lzw", lzw.encode(bytes(256)))]
    return out


def _decode(name, data):
    limit = 8 * len(data)  # the caller's bound: memory stays a multiple of the input
    if name == "lzw":
        return lzw.decode(data, max_bytes=limit)
    return CODERS[name].decode(data, max_symbols=limit)


def _recrc(data: bytes) -> bytes:
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")


def _mutate(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    kind = r.randrange(4)
    if kind == 0:
        for _ in range(r.randint(1, 3)):
            b[r.randrange(len(b))] = r.randrange(256)
    elif kind == 1:
        del b[r.randrange(len(b)) :]
    elif kind == 2:
        at = r.randrange(5, min(len(b), 40))
        big = r.choice([2**63, 2**60, 2**36, 2**33, 2**20, 0, 1])
        b[at:at] = write_varints([big])
    else:
        b[r.randrange(5, min(len(b), 40))] = 0xFF
    return bytes(b)


def _bounded(call, size: int) -> None:
    """Run ``call``; it may only raise CorruptFileError, within bounded memory."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        call()
    except CorruptFileError:
        pass
    peak = tracemalloc.get_traced_memory()[1] - base
    assert peak <= 256 * size + (4 << 20), f"{peak:,} bytes for a {size:,}-byte input"


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


def test_mutated_coder_streams_raise_only_corrupt_file_error(traced):
    r = random.Random(0)
    streams = _streams()
    for trial in range(3000):
        name, data = r.choice(streams)
        bad = _mutate(data, r)
        fresh_crc = trial % 2 == 0 and len(bad) > 4
        bad = _recrc(bad) if fresh_crc else bad
        if not fresh_crc and bad != data:  # a stale CRC is always caught
            with pytest.raises(CorruptFileError):
                _decode(name, bad)
        else:
            _bounded(lambda name=name, bad=bad: _decode(name, bad), len(bad))


def _reframe(data: bytes, field: int, value: int) -> bytes:
    """``data`` with header varint number ``field`` set to ``value``, CRC valid."""
    magic, version = data[:4], data[4]
    header, payload = unpack(data, magic, version)
    fields, pos = read_varints(header, field + 1)
    fields[field] = value
    return pack(magic, version, write_varints(fields) + header[pos:], payload)


def test_forged_headers_of_each_coder():
    message = np.array([1, 2, 2, 3, 1, 1, 0, 5] * 10)
    for coder in CODERS.values():  # symbol counts no payload can carry
        data = coder.encode(message)
        for big in (2**63, 2**60, 2**36, 2**33, 10**6):
            with pytest.raises(CorruptFileError, match="declares|invalid"):
                coder.decode(_reframe(data, 0, big))
    single = huffman.encode(np.full(10, 3))  # one symbol: 0 bits each
    with pytest.raises(CorruptFileError, match="more than the limit"):
        huffman.decode(_reframe(single, 0, 2**40))
    assert huffman.decode(_reframe(single, 0, 1000), max_symbols=1000).size == 1000
    for field, value in ((2, 2**36), (2, 2**33), (2, 0)):  # arithmetic's precision
        with pytest.raises(CorruptFileError):
            arithmetic.decode(_reframe(arithmetic.encode(message), field, value))
    short = lzw.encode(b"a" * 5000)
    with pytest.raises(CorruptFileError, match="decodes to more than 5 bytes"):
        lzw.decode(_reframe(short, 0, 5))
    with pytest.raises(CorruptFileError, match="more than the limit"):
        lzw.decode(_reframe(short, 0, 2**40))


# --- .mlc files -------------------------------------------------------------------


def _mlc(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 24, generator=g)
    w[w.abs() < 0.8] = 0
    state = {"w": w, "b": torch.randn(16, generator=g), "v": torch.randn(8, 9)}
    path = tmp_path / "m.mlc"
    spec = {
        "w": TensorSpec(
            values="codebook", bits=4, sparsity="relative", coder="huffman"
        ),
        "v": TensorSpec(values="uniform", bits=5, per_channel=True, coder="rans"),
    }
    save_compressed(state, path, spec)
    return path.read_bytes()


def _split(data: bytes):
    size = int.from_bytes(data[5:9], "little")
    header = json.loads(zlib.decompress(data[9 : 9 + size]))
    return header, data[9 + size + 4 :]


def _join(header_bytes: bytes, sections: bytes) -> bytes:
    return (
        b"MLC\x1a\x02"
        + len(header_bytes).to_bytes(4, "little")
        + header_bytes
        + zlib.crc32(header_bytes).to_bytes(4, "little")
        + sections
    )


def _forge(header: dict, r: random.Random) -> dict:
    header = json.loads(json.dumps(header))
    e = r.choice(header["tensors"])
    choice = r.randrange(9)
    junk = [None, "x", -1, 2**70, 1e308, [], {}, [[[]]], True, 0.5]
    if choice == 0:
        del e[r.choice(list(e))]
    elif choice == 1:
        e[r.choice(list(e))] = r.choice(junk)
    elif choice == 2:
        e["shape"] = r.choice([[-1, 5], [2**31, 2**31], [1 << 40], [3, "4"], []])
    elif choice == 3 and e["spec"]:
        e["spec"][r.choice(list(e["spec"]))] = r.choice(junk + ["dense", 17])
    elif choice == 4:
        header["tensors"].append(json.loads(json.dumps(e)))  # a duplicate name
    elif choice == 5 and e["sections"]:
        sec = r.choice(e["sections"])
        sec[r.choice(list(sec))] = r.choice(junk + [0, 10**9])
    elif choice == 6:
        e["scale"] = r.choice([1.0, [0.0], [float("nan")], ["a"], [1.0] * 3])
    elif choice == 7:
        e["stored"] = r.choice([-5, 10**12, 0, 1])
    else:
        header = {"tensors": r.choice([None, 5, "x", [1, 2], {"a": 1}])}
    return header


def _read_both(path):
    load_compressed(path)
    inspect(path)


def test_mutated_mlc_files_raise_only_corrupt_file_error(tmp_path, traced):
    data = _mlc(tmp_path)
    header, sections = _split(data)
    path = tmp_path / "bad.mlc"
    r = random.Random(1)
    for trial in range(1500):
        if trial % 3 == 0:  # forged JSON, CRC recomputed
            forged = _forge(header, r)
            blob = json.dumps(forged, separators=(",", ":")).encode()
            bad = _join(zlib.compress(blob), sections)
        elif trial % 3 == 1:  # bytes changed, CRCs stale: always caught
            bad = bytearray(data)
            bad[r.randrange(len(bad))] ^= 1 << r.randrange(8)
            path.write_bytes(bytes(bad))
            with pytest.raises(CorruptFileError):
                load_compressed(path)
            continue
        else:  # truncated or extended
            bad = data[: r.randrange(len(data))] if r.random() < 0.7 else data + b"\0"
        path.write_bytes(bad)
        _bounded(lambda: _read_both(path), len(bad))


def test_named_hostile_headers(tmp_path, traced):
    data = _mlc(tmp_path)
    header, sections = _split(data)
    path = tmp_path / "bad.mlc"
    nested = b'{"tensors":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    bomb = b'{"tensors":[],"pad":"' + b" " * 50_000_000 + b'"}'
    for blob, match in [
        (zlib.compress(nested), "not valid .mlc JSON"),
        (zlib.compress(bomb, 9), "inflates to more than"),
    ]:
        path.write_bytes(_join(blob, sections))
        for read in (load_compressed, inspect):
            with pytest.raises(CorruptFileError, match=match):
                _bounded(lambda read=read: read(path), len(blob))
                read(path)
    path.write_bytes(data[:5] + (0xFFFFFFF0).to_bytes(4, "little") + data[9:])
    with pytest.raises(CorruptFileError, match="truncated inside its header"):
        inspect(path)
    twice = dict(header, tensors=header["tensors"] + header["tensors"][:1])
    blob = zlib.compress(json.dumps(twice).encode())
    path.write_bytes(_join(blob, sections))
    with pytest.raises(CorruptFileError, match="appears twice"):
        inspect(path)


def test_an_alphabet_beyond_int64_is_refused_not_wrapped():
    data = huffman.encode(np.array([0, 1, 1, 0]))
    header, payload = unpack(data, data[:4], data[4])
    (n, k), pos = read_varints(header, 2)
    gaps = write_varints([2**62, 2**62])  # the second symbol would be 2**63
    forged = pack(
        data[:4], data[4], write_varints([n, k]) + gaps + header[-2:], payload
    )
    with pytest.raises(CorruptFileError, match="invalid alphabet"):
        huffman.decode(forged)
