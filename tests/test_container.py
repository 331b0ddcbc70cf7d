import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from mlcomp import prune
from mlcomp.coding import (
    CorruptFileError,
    TensorSpec,
    inspect,
    load_compressed,
    save_compressed,
)
from mlcomp.models import LeNet5
from mlcomp.quant import kmeans_1d


def lenet5_state(sparsity=0.0):
    torch.manual_seed(0)
    net = LeNet5()
    if sparsity:
        prune.remove_(prune.magnitude_(net, sparsity, scope="global"))
    return net.state_dict()


def roundtrip(state, tmp_path, spec=None, name="m.mlc"):
    path = tmp_path / name
    save_compressed(state, path, spec)
    return load_compressed(path), path


def test_lossless_by_default_for_every_dtype_and_shape(tmp_path):
    state = {
        "w": torch.randn(3, 4),
        "half": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "double": torch.randn(3).double(),
        "steps": torch.tensor(7),
        "flags": torch.tensor([True, False]),
        "bytes": torch.arange(4, dtype=torch.uint8),
        "empty": torch.zeros(0, 3),
    }
    back, _ = roundtrip(state, tmp_path)
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


@pytest.mark.parametrize("sparsity", ["bitmask", "relative"])
@pytest.mark.parametrize("coder", ["none", "huffman", "rans"])
def test_sparse_float32_storage_is_exact_and_smaller(tmp_path, sparsity, coder):
    state = lenet5_state(0.9)
    spec = TensorSpec(values="float32", sparsity=sparsity, coder=coder)
    back, path = roundtrip(state, tmp_path, spec)
    for name, t in state.items():
        assert torch.equal(back[name], t), name
    dense_path = tmp_path / "dense.mlc"
    save_compressed(state, dense_path)
    assert path.stat().st_size < 0.3 * dense_path.stat().st_size


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_uniform_values_error_is_at_most_half_a_step(tmp_path, per_channel, bits):
    state = lenet5_state(0.5)
    spec = TensorSpec(values="uniform", bits=bits, per_channel=per_channel,
                      sparsity="relative", coder="rans")  # fmt: skip
    back, _ = roundtrip(state, tmp_path, spec)
    for name, w in state.items():
        if w.dim() < 2:
            assert torch.equal(back[name], w)
            continue
        rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
        span = rows.max(1).values.clamp(min=0) - rows.min(1).values.clamp(max=0)
        step = (span / (2**bits - 1)).reshape(-1, *[1] * (w.dim() - 1))
        assert ((back[name] - w).abs() <= step / 2 + 1e-6).all(), name
        assert (back[name][w == 0] == 0).all()  # zeros stay exact


def test_per_channel_beats_per_tensor_on_uneven_rows(tmp_path):
    w = torch.randn(8, 64) * torch.logspace(-2, 0, 8)[:, None]
    errors = {}
    for per_channel in (False, True):
        spec = TensorSpec(values="uniform", bits=4, per_channel=per_channel)
        back, _ = roundtrip({"w": w}, tmp_path, spec, f"{per_channel}.mlc")
        errors[per_channel] = float((back["w"] - w).pow(2).mean())
    assert errors[True] < errors[False] / 2


def test_codebook_has_at_most_2_to_the_bits_values_and_keeps_zeros(tmp_path):
    state = lenet5_state(0.9)
    spec = TensorSpec(values="codebook", bits=4, sparsity="relative", index_bits=3)
    back, path = roundtrip(state, tmp_path, spec)
    w, w_hat = state["fc1.weight"], back["fc1.weight"]
    assert torch.unique(w_hat).numel() <= 16
    assert torch.equal(w_hat == 0, w == 0)  # fillers decode to exact zeros
    assert float((w_hat - w).abs().max()) < 0.1 * float(w.abs().max())
    table = inspect(path)
    assert table.loc["fc1.weight", "stored"] > (w != 0).sum()  # fillers counted


def test_codebook_is_exact_for_already_shared_weights(tmp_path):
    levels = torch.tensor([-0.5, -0.1, 0.0, 0.2, 0.7])
    w = levels[torch.randint(0, 5, (40, 30))]
    back, _ = roundtrip({"w": w}, tmp_path, TensorSpec(values="codebook", bits=3))
    assert torch.equal(back["w"], w)


def test_kmeans_matches_sklearn_from_the_same_linear_start():
    x = np.random.default_rng(0).laplace(size=5000)
    ours = kmeans_1d(x, 8)
    init = np.linspace(x.min(), x.max(), 8)[:, None]
    km = KMeans(8, init=init, n_init=1, max_iter=300, tol=0).fit(x[:, None])
    assert np.allclose(ours, np.sort(km.cluster_centers_.ravel()), atol=1e-6)


def test_float16_values_and_range_check(tmp_path):
    state = {"w": torch.randn(16, 16)}
    back, _ = roundtrip(state, tmp_path, TensorSpec(values="float16"))
    assert torch.equal(back["w"], state["w"].half().float())
    with pytest.raises(ValueError, match="float16's range"):
        save_compressed({"w": torch.full((2, 2), 1e6)}, tmp_path / "x.mlc",
                        TensorSpec(values="float16"))  # fmt: skip
    assert not (tmp_path / "x.mlc").exists()


def test_inspect_accounts_for_the_file(tmp_path):
    state = lenet5_state(0.9)
    spec = {
        "fc1.weight": TensorSpec(values="codebook", bits=5, sparsity="relative",
                                 coder="huffman"),
        "conv2.weight": TensorSpec(values="uniform", bits=8, sparsity="bitmask"),
    }  # fmt: skip
    _, path = roundtrip(state, tmp_path, spec)
    table = inspect(path)
    assert list(table.index) == list(state)
    assert table.loc["fc1.bias", "values"] == "raw float32"
    assert table.loc["fc1.weight", "values"] == "codebook 5-bit"
    assert table.loc["fc1.weight", "sparsity"] == "relative (5-bit)"
    assert table.loc["fc1.weight", "bits/entry"] < 1.2  # 10% kept, ~10 bits each
    header = path.stat().st_size - table["bytes"].sum()
    assert 0 < header < 8000


def test_spec_validation():
    with pytest.raises(ValueError, match="values must be one of"):
        TensorSpec(values="int3")
    with pytest.raises(ValueError, match="coder must be one of"):
        TensorSpec(coder="zip")
    with pytest.raises(ValueError, match="index_bits"):
        TensorSpec(sparsity="relative", index_bits=0)


def test_bad_state_dicts_are_refused(tmp_path):
    with pytest.raises(TypeError, match="'x' is a list"):
        save_compressed({"x": [1, 2]}, tmp_path / "a.mlc")
    with pytest.raises(ValueError, match="not floating point"):
        save_compressed({"n": torch.arange(4)}, tmp_path / "a.mlc",
                        {"n": TensorSpec()})  # fmt: skip


def test_damaged_files_name_what_failed(tmp_path):
    state = lenet5_state(0.9)
    _, path = roundtrip(state, tmp_path, TensorSpec(sparsity="bitmask", coder="rans"))
    data = path.read_bytes()
    bad = tmp_path / "bad.mlc"

    def load(blob):
        bad.write_bytes(blob)
        return load_compressed(bad)

    with pytest.raises(CorruptFileError, match="truncated: the header declares"):
        load(data[:-10])
    bad.write_bytes(data[:-10])
    with pytest.raises(CorruptFileError, match="truncated: the header declares"):
        inspect(bad)  # inspect checks the file's size too, and every section
    flipped = bytearray(data)
    flipped[-300] ^= 1
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CorruptFileError, match="section"):
        inspect(bad)
    assert len(inspect(bad, verify=False)) == 8  # header only: it cannot tell
    with pytest.raises(CorruptFileError, match="truncated inside its header"):
        load(data[:50])
    with pytest.raises(CorruptFileError, match="not an .mlc file"):
        load(b"PK\x03\x04" + data[4:])
    with pytest.raises(CorruptFileError, match="version 7"):
        load(data[:4] + b"\x07" + data[5:])
    with pytest.raises(CorruptFileError, match="trailing"):
        load(data + b"\x00")
    flipped = bytearray(data)
    flipped[20] ^= 1  # inside the JSON header
    with pytest.raises(CorruptFileError, match="header is corrupted"):
        load(bytes(flipped))
    flipped = bytearray(data)
    flipped[-300] ^= 1  # inside the last tensor (remove_ puts weights after biases)
    with pytest.raises(CorruptFileError, match="tensor 'fc2.weight', section"):
        load(bytes(flipped))
    empty = tmp_path / "empty.mlc"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="not an .mlc file"):
        inspect(empty)


def test_auto_picks_the_smallest_representation_per_tensor(tmp_path):
    state = lenet5_state(0.9)
    auto = TensorSpec(values="codebook", bits=5, sparsity="auto", coder="auto")
    _, path = roundtrip(state, tmp_path, auto, "auto.mlc")
    table = inspect(path)
    for name in ["conv1.weight", "fc1.weight"]:
        sizes = []
        for sparsity in ["dense", "bitmask", "relative"]:
            for coder in ["none", "huffman", "rans"]:
                spec = {name: TensorSpec(values="codebook", bits=5,
                                         sparsity=sparsity, coder=coder)}  # fmt: skip
                _, p = roundtrip(state, tmp_path, spec, f"{sparsity}-{coder}.mlc")
                sizes.append(inspect(p).loc[name, "bytes"])
        assert table.loc[name, "bytes"] == min(sizes), name
    # 90%-sparse fc1 goes below one bit per weight (an entropy coder or a
    # sparse format); the 500 weights of conv1 cannot repay a coder's table
    assert table.loc["fc1.weight", "bits/entry"] < 1
    assert table.loc["conv1.weight", "coder"] == "none"


def test_stated_error_bounds_the_real_error_and_zeros_stay_exact(tmp_path):
    state = lenet5_state(0.9)
    spec = TensorSpec(values="codebook", bits=3, sparsity="dense", coder="rans")
    back, path = roundtrip(state, tmp_path, spec)
    table = inspect(path)
    for name, t in state.items():
        error = float((back[name] - t).abs().max())
        assert error == pytest.approx(table.loc[name, "max error"], abs=1e-12), name
        assert torch.equal(back[name] == 0, t == 0), name  # even dense codebooks
    assert table.loc["fc1.bias", "max error"] == 0
    assert table.loc["fc1.weight", "max error"] > 0


def test_codebook_is_a_float_table_and_the_header_is_compressed(tmp_path):
    state = lenet5_state(0.9)
    spec = TensorSpec(values="codebook", bits=8, sparsity="relative", coder="huffman")
    _, path = roundtrip(state, tmp_path, spec)
    table = inspect(path)
    # 255 non-zero centroids and the zero, float32 each
    assert table.loc["conv2.weight", "codebook bytes"] == 256 * 4
    assert (
        table["value bytes"] + table["index bytes"] + table["codebook bytes"]
        == table["bytes"]
    ).all()
    assert table.attrs["file_bytes"] == path.stat().st_size
    assert table.attrs["header_bytes"] < 1000  # eight tensors, zlib-compressed JSON


def test_empty_state_dict(tmp_path):
    back, path = roundtrip({}, tmp_path)
    assert back == {} and len(inspect(path)) == 0


def test_a_tiny_file_declaring_a_huge_model_needs_permission(tmp_path):
    path = tmp_path / "zeros.mlc"
    save_compressed({"w": torch.zeros(2000, 1000)}, path,
                    TensorSpec(values="codebook", bits=2, coder="huffman"))  # fmt: skip
    assert path.stat().st_size < 500  # legitimately tiny: every entry is one code
    with pytest.raises(CorruptFileError, match="pass max_elements="):
        load_compressed(path)
    assert load_compressed(path, max_elements=2_000_000)["w"].shape == (2000, 1000)
