import os
import zlib

import numpy as np
import pytest
import torch

from mlcomp import textcode
from mlcomp.coding import CorruptFileError
from mlcomp.coding.arithmetic import ArithmeticEncoder, RowDecoder, RowEncoder
from mlcomp.gpt import GPT, GPTConfig


def net(seed=0, block_size=16):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size)).eval()


def trained(steps=150, seed=0):
    """A tiny model that has learned a repetitive text, so coding gains."""
    model = net(seed).train()
    text = torch.tensor(list(b"abcabcabd " * 40), dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        s = torch.randint(0, len(text) - 17, (16,), generator=g)
        w = torch.stack([text[i : i + 17] for i in s.tolist()])
        _, loss = model(w[:, :-1], targets=w[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), bytes(text.tolist())


def test_row_coder_writes_the_bits_of_the_streaming_class():
    rng = np.random.default_rng(0)
    freq = rng.integers(1, 1000, size=(300, 6))
    cdfs = np.concatenate([np.zeros((300, 1), np.int64), freq.cumsum(1)], axis=1)
    symbols = rng.integers(0, 6, size=300)
    reference = ArithmeticEncoder()
    for s, c in zip(symbols, cdfs, strict=True):
        reference.encode(int(s), c)
    rows = RowEncoder()
    for i in range(0, 300, 70):  # the stream continues across calls
        rows.encode(symbols[i : i + 70], cdfs[i : i + 70])
    data = rows.finish()
    assert data == reference.finish()
    dec = RowDecoder(data)
    back = np.concatenate([dec.decode(cdfs[i : i + 50]) for i in range(0, 300, 50)])
    assert back.tolist() == symbols.tolist()


def test_row_coder_rejects_bad_rows_and_truncation():
    enc = RowEncoder()
    with pytest.raises(ValueError, match="zero frequency"):
        enc.encode([1], [[0, 5, 5, 9]])
    with pytest.raises(ValueError, match="start at 0"):
        enc.encode([0], [[1, 5, 9]])
    with pytest.raises(ValueError, match="2 symbols but 1"):
        enc.encode([0, 1], [[0, 5, 9]])
    cdfs = np.array([[0, 1, 1 << 20]] * 400)  # symbol 0 costs 20 bits
    enc.encode(np.zeros(400, np.int64), cdfs)
    data = enc.finish()
    with pytest.raises(CorruptFileError, match="ended too early"):
        RowDecoder(data[: len(data) // 2]).decode(cdfs)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"x",
        b"\x00\xff",
        os.urandom(333),
        bytes(range(256)) * 2,
        "naïve café — ünïcödé".encode(),
    ],  # fmt: skip
)
def test_decode_of_encode_is_the_identity_on_any_bytes(data):
    model = net()
    blob = textcode.compress(data, model, "tiny", batch=3)
    assert textcode.decompress(blob, model) == data


def test_a_long_input_over_many_batches_and_a_short_last_chunk():
    model, text = trained(steps=60)
    data = text * 3 + b"tail"  # 1,204 bytes: 76 chunks of 16, the last of 4
    blob = textcode.compress(data, model, "tiny", batch=8)
    assert textcode.decompress(blob, model) == data


def test_coded_size_is_the_models_cross_entropy():
    model, text = trained()
    blob = textcode.compress(text, model, "tiny", batch=4)
    header, payload = textcode.read_header(blob)
    # the model's cross-entropy of the chunks, each predicted from a newline
    chunks = [text[i : i + 16] for i in range(0, len(text), 16)]
    ideal = 0.0
    with torch.no_grad():
        for c in chunks:
            x = torch.tensor([textcode.START] + list(c[:-1]))[None]
            logp = torch.log_softmax(model(x)[0][0], dim=-1)
            ideal -= float(logp[torch.arange(len(c)), torch.tensor(list(c))].sum())
    ideal_bits = ideal / np.log(2)
    assert ideal_bits / len(text) < 4  # the model learned something
    assert 8 * len(payload) >= ideal_bits - 1
    assert 8 * len(payload) <= ideal_bits * 1.001 + 16  # quantization + ending
    bits, counted = textcode.code_length(model, text, batch=5)
    assert counted == len(text)
    assert 8 * len(payload) - 10 <= bits <= 8 * len(payload)  # ending + padding
    sampled, n = textcode.code_length(model, text, every=3)
    assert n == 16 * len(range(0, len(text) // 16, 3))


def test_another_model_or_other_numerics_are_refused():
    a, b = net(0), net(1)
    blob = textcode.compress(b"hello world", a, "a")
    with pytest.raises(ValueError, match="coded with model 'a'"):
        textcode.decompress(blob, b)
    header, payload = textcode.read_header(blob)
    forged = textcode.Header(**{**header.__dict__, "numerics": "native-avx512"})
    from mlcomp.coding._format import pack

    other = pack(textcode.MAGIC, textcode.VERSION, textcode._write_header(forged),
                 payload)  # fmt: skip
    with pytest.raises(ValueError, match="native-avx512 numerics"):
        textcode.decompress(other, a)


def test_the_numerics_tag_names_mkls_branch(monkeypatch):
    """A file coded pinned on an AMD CPU is refused on an Intel one up front
    (MKL's products differ between them in their last bits)."""
    from mlcomp import numerics

    real = numerics.report()
    for branch, tag in (("AVX2", "pinned-avx2"), ("AUTO", "pinned-auto")):
        fake = {**real, "pinned": True, "mkl_branch": branch}
        monkeypatch.setattr(numerics, "report", lambda fake=fake: fake)
        assert textcode._numerics_tag() == tag
    fake = {**real, "pinned": False, "aten_capability": "AVX512"}
    monkeypatch.setattr(numerics, "report", lambda: fake)
    assert textcode._numerics_tag() == "native-AVX512"


def test_corrupt_and_truncated_files_are_refused():
    model = net()
    blob = bytearray(textcode.compress(b"some text to code", model, "tiny"))
    with pytest.raises(CorruptFileError, match="CRC-32"):
        bad = blob.copy()
        bad[len(bad) // 2] ^= 1
        textcode.decompress(bytes(bad), model)
    with pytest.raises(CorruptFileError, match="truncated"):
        textcode.decompress(bytes(blob[:-7]), model)
    with pytest.raises(CorruptFileError, match="not a MLCT stream"):
        textcode.decompress(b"PK\x03\x04" + bytes(20), model)


def test_a_model_whose_probabilities_differ_fails_the_crc(monkeypatch):
    model = net()
    data = b"the probabilities must match exactly"
    blob = textcode.compress(data, model, "tiny")
    real = textcode._cdfs

    def perturbed(logits):
        cdf = real(logits)
        cdf[:, 1:] += np.arange(1, cdf.shape[1])  # every frequency one larger
        return cdf

    monkeypatch.setattr(textcode, "_cdfs", perturbed)
    with pytest.raises(CorruptFileError):
        textcode.decompress(blob, model)


def test_thread_count_is_taken_from_the_header():
    model = net()
    blob = textcode.compress(b"threads" * 30, model, "tiny", threads=1)
    before = torch.get_num_threads()
    assert textcode.read_header(blob)[0].threads == 1
    assert textcode.decompress(blob, model) == b"threads" * 30
    assert torch.get_num_threads() == before


def test_header_records_the_original():
    data = b"abc" * 50
    model = net()
    header, _ = textcode.read_header(textcode.compress(data, model, "m", batch=5))
    assert (header.model, header.length, header.crc32, header.chunk, header.batch) == (
        "m", 150, zlib.crc32(data), 16, 5)  # fmt: skip
    assert header.model_sha256 == textcode.model_digest(model)
    with pytest.raises(TypeError, match="bytes"):
        textcode.compress("a str", model, "m")
    with pytest.raises(ValueError, match="batch"):
        textcode.compress(b"x", model, "m", batch=0)


def test_classical_sizes_are_those_of_the_libraries_and_decode():
    import bz2
    import gzip
    import lzma

    data = os.urandom(2000) + b"all the world's a stage " * 200
    sizes = textcode.classical_sizes(data)
    assert list(sizes) == ["gzip -9", "bzip2 -9", "xz -9e", "zstd -19",
                           "PPMd (order 6, 16 MB)"]  # fmt: skip
    assert sizes["gzip -9"] == len(gzip.compress(data, 9, mtime=0))
    assert sizes["bzip2 -9"] == len(bz2.compress(data, 9))
    assert sizes["xz -9e"] == len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    assert all(2000 < n < len(data) for n in sizes.values())  # random part stays
    assert textcode.classical_sizes(b"", check=True)["gzip -9"] > 0
