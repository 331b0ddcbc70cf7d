import heapq
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mlcomp.coding import (
    Categorical,
    CorruptFileError,
    _format,
    arithmetic,
    cross_entropy,
    entropy,
    huffman,
    kl_divergence,
    lzw,
    pack_bits,
    rans,
    unpack_bits,
)

CODERS = [huffman, rans, arithmetic]


def laplacian_symbols(n, scale=3.0, seed=0):
    """Like quantized weights: a rounded Laplacian, shifted to be non-negative."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0, scale, n)), -100, 100).astype(np.int64) + 100


# --- information measures ---------------------------------------------------


def test_entropy_kl_and_cross_entropy_match_scipy():
    rng = np.random.default_rng(1)
    p, q = rng.random(50), rng.random(50)
    p[::7] = 0
    assert entropy(p) == pytest.approx(stats.entropy(p, base=2))
    assert kl_divergence(p, q) == pytest.approx(stats.entropy(p, q, base=2))
    assert cross_entropy(p, q) == pytest.approx(entropy(p) + kl_divergence(p, q))
    assert entropy(np.ones(256)) == pytest.approx(8.0)
    assert cross_entropy([1, 1], [1, 0]) == math.inf


@pytest.mark.parametrize(
    "bad, match",
    [([], "non-empty"), ([[0.5, 0.5]], "1-D"), ([0.5, -0.1], "non-negative"),
     ([0, 0], "sums to zero"), ([np.nan, 1], "finite")],
)  # fmt: skip
def test_measures_reject_bad_distributions(bad, match):
    with pytest.raises(ValueError, match=match):
        entropy(bad)


def test_kl_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        kl_divergence([0.5, 0.5], [0.2, 0.3, 0.5])


@pytest.mark.parametrize("precision", [8, 12, 16])
def test_frequencies_sum_keep_support_and_lose_little(precision):
    rng = np.random.default_rng(precision)
    p = rng.dirichlet(np.full(200, 0.3))
    p[[3, 50]] = 0
    f = Categorical(p).frequencies(precision)
    assert f.sum() == 2**precision and f.dtype == np.int64
    assert np.all((f > 0) == (p > 0))
    # the loss from quantizing to integers shrinks with the precision ...
    assert kl_divergence(p, f) < {8: 1.0, 12: 0.02, 16: 1e-3}[precision]
    # ... and is no worse than rounding and giving the remainder to the mode
    naive = np.where(p > 0, np.maximum(np.round(p * 2**precision), 1), 0)
    naive[np.argmax(p)] += 2**precision - naive.sum()
    if naive.min() >= 0:  # (at 8 bits the remainder is negative)
        assert kl_divergence(p, f) <= kl_divergence(p, naive) + 1e-12


def test_frequencies_need_enough_precision():
    with pytest.raises(ValueError, match="precision >= 9"):
        Categorical(np.ones(300)).frequencies(8)
    with pytest.raises(ValueError, match="1..31"):
        Categorical([1, 1]).frequencies(0)


def test_from_symbols_counts_and_validates():
    assert Categorical.from_symbols([2, 2, 0], size=4).probs.tolist() == [
        1 / 3, 0, 2 / 3, 0,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        Categorical.from_symbols([5], size=4)
    with pytest.raises(ValueError, match="empty"):
        Categorical.from_symbols([])


# --- Huffman code construction ----------------------------------------------


def reference_huffman_cost(weights):
    """Sum of merged weights = total weighted code length (a classic identity)."""
    heap = list(map(float, weights))
    heapq.heapify(heap)
    cost = 0.0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@pytest.mark.parametrize("seed", range(5))
def test_huffman_lengths_are_optimal_and_within_one_bit_of_entropy(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 1000, size=rng.integers(2, 300))
    lengths = huffman.code_lengths(counts, max_length=None)
    assert (counts * lengths).sum() == pytest.approx(reference_huffman_cost(counts))
    p = counts / counts.sum()
    avg, h = (p * lengths).sum(), entropy(p)
    assert h <= avg < h + 1
    assert avg - h <= p.max() + 0.086  # Gallager 1978
    assert (2.0 ** -lengths.astype(float)).sum() == pytest.approx(1.0)  # complete


def brute_force_limited(weights, max_length):
    best = math.inf
    for lengths in itertools.product(range(1, max_length + 1), repeat=len(weights)):
        if sum(2.0**-n for n in lengths) <= 1:
            best = min(best, sum(w * n for w, n in zip(weights, lengths, strict=True)))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_package_merge_matches_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    weights = rng.geometric(0.3, size=6) ** 3  # skewed, so the limit binds
    for max_length in (3, 4):
        lengths = huffman.code_lengths(weights, max_length)
        assert lengths.max() <= max_length
        assert (2.0 ** -lengths.astype(float)).sum() <= 1
        assert (weights * lengths).sum() == brute_force_limited(weights, max_length)


def test_code_length_edge_cases():
    assert huffman.code_lengths([0, 5, 0]).tolist() == [0, 0, 0]  # lone symbol
    assert huffman.code_lengths([1, 1]).tolist() == [1, 1]
    fib = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]
    assert huffman.code_lengths(fib, max_length=None).max() == 11
    assert huffman.code_lengths(fib, max_length=6).max() == 6
    with pytest.raises(ValueError, match="cannot have codes"):
        huffman.code_lengths(np.ones(9), max_length=3)


def test_canonical_codes_are_prefix_free():
    lengths = huffman.code_lengths(np.random.default_rng(0).integers(1, 99, 40))
    codes = huffman.canonical_codes(lengths)
    words = [format(int(c), f"0{n}b") for c, n in zip(codes, lengths, strict=True)]
    assert len(set(words)) == len(words)
    for a, b in itertools.permutations(words, 2):
        assert not b.startswith(a)
    with pytest.raises(ValueError, match="Kraft"):
        huffman.canonical_codes([1, 1, 1])


# --- round trips --------------------------------------------------------------


def rare_pair(n=1_000_000):
    message = np.zeros(n, np.int64)
    message[n // 3] = 1  # p = 1e-6
    return message


MESSAGES = {
    "empty": lambda: np.zeros(0, np.int64),
    "one distinct symbol": lambda: np.full(1000, 7),
    "two symbols, p = 1e-6": rare_pair,
    "65,536-symbol alphabet": lambda: np.random.default_rng(0).integers(
        0, 65536, 300_000
    ),
    "large symbol values": lambda: np.array([2**40, 3, 2**40, 2**62]),
}


@pytest.mark.parametrize("coder", CODERS, ids=lambda c: c.__name__.split(".")[-1])
@pytest.mark.parametrize("name", MESSAGES)
def test_round_trip_edge_cases(coder, name):
    message = MESSAGES[name]()
    decoded = coder.decode(coder.encode(message))
    assert decoded.dtype == np.int64
    assert np.array_equal(decoded, message)


@pytest.mark.parametrize("coder", CODERS, ids=lambda c: c.__name__.split(".")[-1])
def test_round_trip_ten_million_symbols(coder):
    message = laplacian_symbols(10_000_000)
    assert np.array_equal(coder.decode(coder.encode(message)), message)


@pytest.mark.parametrize("coder", CODERS, ids=lambda c: c.__name__.split(".")[-1])
@settings(max_examples=60, deadline=None)
@given(message=st.lists(st.integers(0, 300), max_size=200))
def test_round_trip_property(coder, message):
    message = np.array(message, dtype=np.int64)
    assert np.array_equal(coder.decode(coder.encode(message)), message)


@pytest.mark.parametrize("coder", CODERS, ids=lambda c: c.__name__.split(".")[-1])
def test_coders_take_a_model_and_reject_symbols_it_cannot_code(coder):
    model = Categorical([0.5, 0.0, 0.25, 0.25])
    message = np.array([0, 2, 3, 0, 0])
    assert np.array_equal(coder.decode(coder.encode(message, model)), message)
    with pytest.raises(ValueError, match="symbol 1 has probability 0"):
        coder.encode(np.array([0, 1]), model)
    with pytest.raises(ValueError, match="outside the model"):
        coder.encode(np.array([9]), model)
    with pytest.raises(ValueError, match="1-D"):
        coder.encode(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        coder.encode(np.array([1, -1]))
    with pytest.raises(ValueError, match="integers"):
        coder.encode(np.array([0.5]))


# --- compression efficiency -------------------------------------------------


def test_rans_reaches_the_entropy_on_quantized_weights():
    message = laplacian_symbols(1_000_000)
    data = rans.encode(message)
    n_h = message.size * Categorical.from_symbols(message).entropy()
    header = len(rans.encode(message[:0])) + 3 * np.unique(message).size  # bound
    assert 8 * len(data) <= n_h * 1.001 + 8 * header


@pytest.mark.parametrize("coder", [rans, arithmetic])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64])
def test_model_coders_read_any_integer_dtype_and_write_the_same_stream(coder, dtype):
    message = np.random.default_rng(3).geometric(0.2, 50_000) % 200
    reference = coder.encode(message.astype(np.int64))
    assert coder.encode(message.astype(dtype)) == reference
    assert coder.encode(message.astype(dtype)[::2]) == coder.encode(message[::2])
    assert np.array_equal(coder.decode(reference), message)


def test_rans_matches_constriction_ans_in_size():
    # an independent implementation of the same coder, with the same model
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(0)
    message = np.clip(np.round(rng.laplace(0, 6, 400_000)), -127, 127) + 128
    message = message.astype(np.int64)
    counts = np.bincount(message, minlength=256).astype(np.float64)
    model = constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(message.astype(np.int32), model)
    theirs = 4 * coder.get_compressed().size
    ours = len(rans.encode(message))  # the frequency table included
    assert abs(ours / theirs - 1) < 0.003


def test_arithmetic_coder_is_within_a_hundredth_of_a_percent_of_ideal():
    rng = np.random.default_rng(3)
    cdf = Categorical(rng.dirichlet(np.ones(20))).cdf(16)
    message = rng.integers(0, 20, 200_000)
    message = message[np.diff(cdf)[message] > 0]
    ideal = -np.log2(np.diff(cdf)[message] / cdf[-1]).sum()
    enc = arithmetic.ArithmeticEncoder()
    for s in message:
        enc.encode(s, cdf)
    data = enc.finish()
    assert 8 * len(data) <= ideal * 1.0001 + 8
    dec = arithmetic.ArithmeticDecoder(data)
    assert all(dec.decode(cdf) == s for s in message[:5000])


def reference_range_words(idx, cdf) -> list[int]:
    """The range coder of arithmetic.encode in Python integers: low never wraps,
    so no carry is ever propagated; the words are the digits of the end value."""
    total, low, rng, shifts = int(cdf[-1]), 0, 2**64 - 1, 0
    for s in idx:
        r = rng // total
        low += r * int(cdf[s])
        rng = r * int(cdf[s + 1] - cdf[s])
        while rng < 2**32:
            low, rng, shifts = low << 32, rng << 32, shifts + 1
    value = -(-low // 2**32)  # the end rounded up to a whole word, in words
    return [(value >> (32 * (shifts - k))) & 0xFFFFFFFF for k in range(shifts + 1)]


@pytest.mark.parametrize("last_probability", [0.5, 0.999])
def test_range_coder_writes_the_words_of_exact_arithmetic(last_probability):
    # a likely *last* symbol adds almost the whole range to low at every
    # step, so the 64-bit low overflows often: the carries must come out right
    rng = np.random.default_rng(11)
    probs = np.append(
        rng.dirichlet(np.ones(6)) * (1 - last_probability), last_probability
    )
    message = rng.choice(7, size=30_000, p=probs)
    model = Categorical.from_symbols(message)
    alphabet = np.flatnonzero(model.probs > 0)
    cdf = np.concatenate([[0], np.cumsum(model.frequencies(16)[alphabet])])
    idx = np.searchsorted(alphabet, message)
    lut = np.zeros(7, np.int64)  # value -> index in the alphabet, as encode makes
    lut[alphabet] = np.arange(alphabet.size)
    words = arithmetic._range_encode(message, lut, cdf.astype(np.uint64), 16)
    assert words.tolist() == reference_range_words(idx, cdf)
    data = arithmetic.encode(message, model, precision=16)
    assert np.array_equal(arithmetic.decode(data), message)
    ideal = -np.log2(np.diff(cdf)[idx] / cdf[-1]).sum()
    payload_bits = 8 * len(data) - 8 * len(arithmetic.encode(message[:0]))
    assert payload_bits < ideal * 1.0001 + 32 + 8 * 60  # + one word + the table


# A version 1 stream (the bit-by-bit coder of the classes), as written before
# the range coder: still read.
V1_MESSAGE = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4] * 5
V1_STREAM = bytes.fromhex(
    "4d4c4341011e6409100101010101010101019a339a33b3669a33e64ccd19cd199933e64c273548998a7c000ff2747ab5a9ae3c049550e988abe8abd27347c6339d3f3787b111d7618971ce405474859e"
)


def test_version_1_streams_are_still_read():
    assert V1_STREAM[4] == 1 and arithmetic.encode(V1_MESSAGE)[4] == 2
    assert arithmetic.decode(V1_STREAM).tolist() == V1_MESSAGE


def test_range_decoder_refuses_a_payload_cut_short():
    message = laplacian_symbols(5000, seed=12)
    data = arithmetic.encode(message)
    header, payload = _format.unpack(data, b"MLCA", 2)
    short = _format.pack(b"MLCA", 2, header, payload[:-12])  # three words fewer
    with pytest.raises(CorruptFileError, match="truncated or corrupted"):
        arithmetic.decode(short)


def test_arithmetic_decoder_adapts_with_the_encoder():
    # an adaptive order-0 model: counts updated after every symbol
    message = np.clip(laplacian_symbols(3000, scale=2.0, seed=5) - 90, 0, 20)
    enc, counts = arithmetic.ArithmeticEncoder(), np.ones(21, np.int64)
    for s in message:
        enc.encode(s, np.concatenate([[0], np.cumsum(counts)]))
        counts[s] += 1
    dec, counts = arithmetic.ArithmeticDecoder(enc.finish()), np.ones(21, np.int64)
    for s in message:
        assert dec.decode(np.concatenate([[0], np.cumsum(counts)])) == s
        counts[s] += 1


def test_arithmetic_coder_validates_cdfs():
    enc = arithmetic.ArithmeticEncoder()
    with pytest.raises(ValueError, match="zero frequency"):
        enc.encode(1, [0, 3, 3, 4])
    with pytest.raises(ValueError, match="outside"):
        enc.encode(3, [0, 3, 3, 4])
    with pytest.raises(ValueError, match="start at 0"):
        enc.encode(0, [1, 3])
    with pytest.raises(CorruptFileError, match="ended too early"):
        dec = arithmetic.ArithmeticDecoder(b"\x00")
        for _ in range(100):
            dec.decode([0, 1, 2])


# --- damaged streams ----------------------------------------------------------


@pytest.mark.parametrize("coder", CODERS, ids=lambda c: c.__name__.split(".")[-1])
def test_damaged_streams_raise_clear_errors(coder):
    data = coder.encode(laplacian_symbols(5000))
    with pytest.raises(CorruptFileError, match="truncated"):
        coder.decode(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated"):
        coder.decode(data[:3])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(CorruptFileError, match="CRC-32"):
        coder.decode(bytes(flipped))
    with pytest.raises(CorruptFileError, match="not a"):
        coder.decode(b"XXXX" + data[4:])
    with pytest.raises(CorruptFileError, match="version 9"):
        coder.decode(data[:4] + b"\x09" + data[5:])
    with pytest.raises(CorruptFileError, match="trailing"):
        coder.decode(data + b"\x00")
    other = huffman if coder is not huffman else rans
    with pytest.raises(CorruptFileError, match="not a"):
        coder.decode(other.encode([1, 2, 3]))


# --- bit packing --------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 3, 7, 8, 13, 16, 32])
def test_pack_bits_round_trips_in_the_minimum_bytes(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**bits, size=1001, dtype=np.int64)
    values[:2] = [0, 2**bits - 1]
    data = pack_bits(values, bits)
    assert len(data) == math.ceil(1001 * bits / 8)
    assert np.array_equal(unpack_bits(data, bits, 1001), values)


def test_pack_bits_matches_a_string_of_bits():
    values = [5, 0, 7, 2]
    expected = "".join(format(v, "03b") for v in values).ljust(16, "0")
    assert pack_bits(values, 3) == int(expected, 2).to_bytes(2, "big")


def test_pack_bits_validates():
    with pytest.raises(ValueError, match="0..7 for 3 bits"):
        pack_bits([8], 3)
    with pytest.raises(ValueError, match="bits must be an integer in 1..32"):
        pack_bits([1], 0)
    with pytest.raises(CorruptFileError, match="truncated"):
        unpack_bits(b"\x00", 5, 2)
    assert pack_bits([], 4) == b"" and unpack_bits(b"", 4, 0).size == 0


# --- LZW ----------------------------------------------------------------------


def test_lzw_codes_match_welchs_worked_example():
    # the classic TOBEORNOT example; our learned codes start at 258, after
    # the CLEAR (256) and END (257) control codes
    expected = [84, 79, 66, 69, 79, 82, 78, 79, 84, 258, 260, 262, 267, 261,
                263, 265, 257]  # fmt: skip
    assert lzw.codes(b"TOBEORNOTTOBEORTOBEORNOT") == expected


@pytest.mark.parametrize("max_bits", [9, 12, 16])
def test_lzw_round_trips_through_dictionary_resets(max_bits):
    rng = np.random.default_rng(max_bits)
    samples = [
        b"",
        b"a",
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # the KwKwK case, repeatedly
        rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        rng.choice(list(b"ab \n"), 50_000).astype(np.uint8).tobytes(),
    ]
    for data in samples:
        assert lzw.decode(lzw.encode(data, max_bits)) == data
    if max_bits == 9:
        assert lzw.codes(samples[3], 9).count(256) > 10  # CLEAR codes were sent


def test_lzw_compresses_text_and_rejects_damage():
    data = ("the rain in spain stays mainly in the plain " * 200).encode()
    blob = lzw.encode(data)
    assert len(blob) < len(data) / 8
    with pytest.raises(CorruptFileError, match="truncated"):
        lzw.decode(blob[:-9])
    with pytest.raises(ValueError, match="max_bits"):
        lzw.encode(data, 20)
