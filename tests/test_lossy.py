import io

import numpy as np
import pytest
from PIL import Image
from scipy.fft import dctn, idctn
from sklearn.datasets import load_sample_images

from mlcomp.coding import CorruptFileError, lossy
from mlcomp.measure import psnr


def gray_photo():
    rgb = load_sample_images().images[0]
    return np.asarray(Image.fromarray(rgb).convert("L"))


def test_dct_matches_scipy_orthonormal_dct():
    block = np.random.default_rng(0).normal(size=(8, 8))
    C = lossy.dct_matrix(8)
    assert np.allclose(C @ block @ C.T, dctn(block, norm="ortho"))
    assert np.allclose(C @ C.T, np.eye(8))


def test_zigzag_is_the_standard_order():
    assert lossy.ZIGZAG[:10].tolist() == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]
    assert lossy.ZIGZAG[-3:].tolist() == [55, 62, 63]
    assert sorted(lossy.ZIGZAG.tolist()) == list(range(64))


def test_quality_scaling_follows_libjpeg():
    assert np.array_equal(lossy.quality_table(50), lossy.LUMA_TABLE)
    assert (lossy.quality_table(100) == 1).all()
    assert lossy.quality_table(1).max() == 255
    with pytest.raises(ValueError, match="1..100"):
        lossy.quality_table(0)


@pytest.mark.parametrize("quality", [10, 50, 95])
def test_only_the_rounding_is_lossy(quality):
    # reference pipeline with scipy: level shift, DCT, round(X / Q) * Q, IDCT
    rng = np.random.default_rng(quality)
    image = np.clip(rng.normal(128, 40, (21, 30)), 0, 255).astype(np.uint8)
    padded = np.pad(image, ((0, 3), (0, 2)), mode="edge").astype(float) - 128
    Q = lossy.quality_table(quality)
    out = np.empty_like(padded)
    for i in range(0, 24, 8):
        for j in range(0, 32, 8):
            X = dctn(padded[i : i + 8, j : j + 8], norm="ortho")
            out[i : i + 8, j : j + 8] = idctn(np.round(X / Q) * Q, norm="ortho")
    expected = np.clip(np.round(out[:21, :30] + 128), 0, 255).astype(np.uint8)
    assert np.array_equal(
        lossy.jpeg_decode(lossy.jpeg_encode(image, quality)), expected
    )


def test_matches_real_jpeg_at_the_same_quality():
    image = gray_photo()
    for quality in (30, 75):
        ours = lossy.jpeg_decode(lossy.jpeg_encode(image, quality))
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=quality)
        theirs = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        assert abs(psnr(image, ours) - psnr(image, theirs)) < 0.5


def test_higher_quality_costs_bits_and_buys_psnr():
    image = gray_photo()
    sizes, quality_psnr = [], []
    for quality in (10, 50, 90):
        blob = lossy.jpeg_encode(image, quality)
        sizes.append(len(blob))
        quality_psnr.append(psnr(image, lossy.jpeg_decode(blob)))
    assert sizes == sorted(sizes) and quality_psnr == sorted(quality_psnr)


def test_jpeg_rejects_bad_input_and_damage():
    with pytest.raises(ValueError, match="2-D uint8"):
        lossy.jpeg_encode(np.zeros((4, 4, 3), np.uint8))
    blob = lossy.jpeg_encode(np.zeros((16, 16), np.uint8) + 7)
    with pytest.raises(CorruptFileError):
        lossy.jpeg_decode(blob[:-6])


def test_companding_laws():
    x = np.linspace(-1, 1, 2001)
    for law, inverse in ((lossy.mu_law, lossy.mu_law_inverse),
                         (lossy.a_law, lossy.a_law_inverse)):  # fmt: skip
        y = law(x)
        assert np.allclose(inverse(y), x)
        assert np.all(np.diff(y) > 0) and law(1.0) == pytest.approx(1.0)
        assert np.allclose(law(-x), -y)
    A = 87.6  # the two pieces of the A-law meet at |x| = 1/A
    assert lossy.a_law(1 / A - 1e-12) == pytest.approx(lossy.a_law(1 / A + 1e-12))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        lossy.mu_law(np.array([1.5]))


def test_companding_keeps_quiet_signals_clean():
    t = np.arange(8000) / 8000
    quiet = 0.01 * np.sin(2 * np.pi * 440 * t)

    def snr(x, y):
        return 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))

    linear = snr(quiet, lossy.quantize_uniform(quiet, 8))
    mu = snr(
        quiet, lossy.mu_law_inverse(lossy.quantize_uniform(lossy.mu_law(quiet), 8))
    )
    assert mu > linear + 15
