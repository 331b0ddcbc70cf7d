import gzip
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mlcomp import datasets
from mlcomp.datasets import (
    CorruptDataError,
    DataNotFoundError,
    fashion_mnist,
    penguins,
    read_idx,
    shakespeare,
    shakespeare_works,
)


def write_idx(path, array, compress=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">i", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def fake_fashion_dir(tmp_path, n_train=60_000, n_test=10_000):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            tmp_path / f"{split}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28)),
        )
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return tmp_path


@pytest.fixture(scope="module")
def train():
    return fashion_mnist("train", normalize=False)


def test_fashion_mnist_shapes_and_balance(train):
    test = fashion_mnist("test", normalize=False)
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (
        10_000,
        1,
        28,
        28,
    )
    assert train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0


def test_normalization_constants_are_the_training_statistics(train):
    pixels = train.raw.double() / 255
    assert pixels.mean().item() == pytest.approx(datasets.FASHION_MNIST_MEAN, abs=5e-5)
    assert pixels.std().item() == pytest.approx(datasets.FASHION_MNIST_STD, abs=5e-5)
    normalized = fashion_mnist("train")
    assert abs(normalized.images.mean().item()) < 1e-3
    assert normalized.images.std().item() == pytest.approx(1.0, abs=1e-3)


def test_works_with_dataloader():
    x, y = next(iter(DataLoader(fashion_mnist("test"), batch_size=16)))
    assert x.shape == (16, 1, 28, 28) and y.shape == (16,)


def test_bad_split_is_named():
    with pytest.raises(ValueError, match="'validation'"):
        fashion_mnist("validation")
    with pytest.raises(ValueError, match="'test'"):
        shakespeare("test")


def test_mlcomp_data_env_takes_precedence(tmp_path, monkeypatch):
    fake_fashion_dir(tmp_path)
    monkeypatch.setenv("MLCOMP_DATA", str(tmp_path))
    data = fashion_mnist("test", normalize=False)
    expected = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(data.raw, torch.from_numpy(expected))


def test_missing_data_names_both_remedies(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        fashion_mnist("train", root=tmp_path, download=False)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "MLCOMP_DATA" in message and str(tmp_path) in message


def test_failed_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    monkeypatch.setenv("MLCOMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLCOMP_DATA", raising=False)
    monkeypatch.setattr(
        datasets, "_download_fashion_mnist", lambda: "download failed: offline"
    )
    with pytest.raises(DataNotFoundError, match="download failed: offline"):
        fashion_mnist("test")


def test_truncated_and_corrupt_idx_files(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((3, 28, 28)), compress=False)
    assert read_idx(path).shape == (3, 28, 28)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CorruptDataError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(CorruptDataError, match="magic"):
        read_idx(path)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 40)[:20])
    with pytest.raises(CorruptDataError, match="decompress"):
        read_idx(gz)


def test_wrong_shape_files_are_rejected(tmp_path):
    fake_fashion_dir(tmp_path, n_test=10)
    with pytest.raises(CorruptDataError, match="expected"):
        fashion_mnist("test", root=tmp_path)


def test_shakespeare_splits_are_whole_disjoint_works():
    train, val, everything = (shakespeare_works(s) for s in ("train", "val", "all"))
    assert len(train) == 38 and len(val) == 4 and len(everything) == 42
    assert {w.name for w in train}.isdisjoint(w.name for w in val)
    assert {w.name for w in everything} == {w.name for w in train} | {
        w.name for w in val
    }
    total = sum(len(w.text) for w in everything)
    assert total == 5_057_198  # bytes of the 42 *_gut.txt files (ASCII)
    assert 0.08 < sum(len(w.text) for w in val) / total < 0.10
    hamlet = next(w for w in everything if w.name == "hamlet")
    assert (
        hamlet.text.startswith("HAMLET, PRINCE OF DENMARK")
        and "To be, or not to be" in hamlet.text
    )
    assert shakespeare("train").count("\n\n") >= 37


def test_shakespeare_detects_damage(tmp_path, monkeypatch):
    damaged = tmp_path / "shakespeare.tar.xz"
    blob = bytearray(datasets.SHAKESPEARE_ARCHIVE.read_bytes())
    blob[1000] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    monkeypatch.setattr(datasets, "SHAKESPEARE_ARCHIVE", damaged)
    with pytest.raises(CorruptDataError, match="SHA-256"):
        shakespeare_works()
    with pytest.raises(CorruptDataError, match="not a valid corpus"):
        shakespeare_works(path=damaged)
    with pytest.raises(DataNotFoundError, match="git checkout"):
        shakespeare_works(path=tmp_path / "missing.tar.xz")


def test_penguins_has_real_missing_values():
    df = penguins()
    assert df.shape == (344, 8)
    assert set(df["species"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert df["sex"].isna().sum() == 11 and df["body_mass_g"].isna().sum() == 2


def test_speech_is_deterministic_16_bit_audio():
    a, sr = datasets.speech("compression")
    b, _ = datasets.speech("compression")
    assert a.dtype == np.int16 and sr == 22050 and np.array_equal(a, b)
    assert 0.3 < a.size / sr < 2 and np.abs(a).max() > 1000
    with pytest.raises(ValueError, match="empty"):
        datasets.speech("  ")


def test_speech_without_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(datasets.shutil, "which", lambda name: None)
    with pytest.raises(datasets.DataNotFoundError, match="apt-get install espeak-ng"):
        datasets.speech("hello")
