import math

import numpy as np
import pytest
import torch

from mlcomp import codec, datasets
from mlcomp.coding import CorruptFileError, rans
from mlcomp.coding.model import Categorical


def tiny(seed=0, channels=6, latent=6, frozen=True):
    torch.manual_seed(seed)
    net = codec.Codec(channels, latent).eval()
    if frozen:
        net.prior.freeze()
    return net


def photo(h=37, w=53, seed=0):
    """A smooth colour image with some noise (not constant, not white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [128 + 100 * np.sin(xx / 7 + c) * np.cos(yy / 5) for c in range(3)], -1
    )
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


# --- rANS with per-symbol tables ----------------------------------------------


def random_tables(rows, k, seed=0, precision=16):
    rng = np.random.default_rng(seed)
    freq = np.zeros((rows, k), np.int64)
    for r in range(rows):
        p = rng.dirichlet(np.full(k, 0.5))
        p[rng.integers(k)] = 0  # a zero-frequency column in every row
        freq[r] = Categorical(p / p.sum()).frequencies(precision)
    return freq


def test_tabled_rans_round_trips_and_costs_the_cross_entropy():
    rng = np.random.default_rng(1)
    freq = random_tables(7, 12)
    rows = rng.integers(7, size=50_000)
    symbols = np.array([rng.choice(12, p=freq[r] / 2**16) for r in rows])
    data = rans.encode_tabled(symbols, rows, freq)
    assert np.array_equal(rans.decode_tabled(data, rows, freq), symbols)
    ideal = -np.log2(freq[rows, symbols] / 2**16).sum()
    assert (
        ideal <= 8 * len(data) <= ideal + 64 + 1e-4 * ideal
    )  # the flush, and little else


def test_tabled_rans_empty_and_single_symbol():
    freq = np.array([[1 << 16]])
    assert rans.decode_tabled(rans.encode_tabled([], [], freq), [], freq).size == 0
    data = rans.encode_tabled([0] * 1000, [0] * 1000, freq)
    assert len(data) == 8  # a certain symbol costs nothing: only the state
    assert rans.decode_tabled(data, [0] * 1000, freq).tolist() == [0] * 1000


def test_tabled_rans_refuses_bad_input():
    freq = np.array([[8, 8, 0]])
    with pytest.raises(ValueError, match="zero frequency"):
        rans.encode_tabled([2], [0], freq, precision=4)
    with pytest.raises(ValueError, match="sum to 2\\*\\*4"):
        rans.encode_tabled([0], [0], np.array([[8, 7]]), precision=4)
    with pytest.raises(ValueError, match="table row index"):
        rans.encode_tabled([0], [1], freq, precision=4)
    with pytest.raises(ValueError, match="outside"):
        rans.encode_tabled([3], [0], freq, precision=4)
    data = rans.encode_tabled([0, 1] * 50, [0] * 100, freq, precision=4)
    with pytest.raises(CorruptFileError):
        rans.decode_tabled(data[:-4], [0] * 100, freq, precision=4)
    with pytest.raises(CorruptFileError):
        rans.decode_tabled(data[:-1], [0] * 100, freq, precision=4)


# --- the entropy model -----------------------------------------------------------


def test_prior_is_a_distribution_over_the_integers():
    prior = tiny(latent=3, frozen=False).prior
    with torch.no_grad():
        for p in prior.parameters():  # something other than the initial density
            p.add_(0.3 * torch.randn_like(p))
        grid = torch.arange(-400, 401, dtype=torch.float32)
        pmf = prior.likelihood(grid.expand(1, 3, 1, -1).contiguous())[0, :, 0]
        cdf = torch.sigmoid(prior.logits(grid.expand(3, 1, -1).contiguous()))[:, 0]
    assert torch.allclose(pmf.sum(dim=1), torch.ones(3), atol=1e-4)
    assert (cdf.diff(dim=1) >= 0).all()  # monotone, by its construction


def test_noise_proxy_density_is_the_rounding_probability():
    # the density of y + U(-1/2, 1/2) at t is P(y in [t - 1/2, t + 1/2]):
    # a histogram of the noisy samples matches the prior's likelihood
    prior = tiny(latent=1, frozen=False).prior
    with torch.no_grad():
        cdf_inverse_grid = torch.linspace(-30, 30, 20001)
        cdf = torch.sigmoid(prior.logits(cdf_inverse_grid.view(1, 1, -1)))[0, 0]
        u = torch.rand(400_000, generator=torch.Generator().manual_seed(0))
        y = cdf_inverse_grid[torch.searchsorted(cdf, u).clamp(max=20000)]  # y ~ prior
        noisy = (
            y + torch.rand(y.shape, generator=torch.Generator().manual_seed(1)) - 0.5
        )
        t = torch.tensor([-1.0, 0.0, 0.7, 2.0])
        h = 0.05
        density = torch.stack(
            [((noisy - v).abs() < h).float().mean() / (2 * h) for v in t]
        )
        p = prior.likelihood(t.view(1, 1, 1, -1))[0, 0, 0]
    assert torch.allclose(density, p, atol=0.01)


def compressai_entropy_models(monkeypatch):
    """CompressAI's entropy models, without its package ``__init__``.

    ``import compressai`` loads its data sets and models too, which need
    torch-geometric; the entropy models need only their own module, the
    compiled ``_CXX`` and ``ops``, and two functions naming the coders.
    """
    import importlib
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("compressai")
    if spec is None:
        pytest.skip("CompressAI is not installed (make setup installs it)")
    package = types.ModuleType("compressai")
    package.__path__ = list(spec.submodule_search_locations)
    package.get_entropy_coder = lambda: "ans"
    package.available_entropy_coders = lambda: ["ans"]
    for name in [
        m for m in sys.modules if m == "compressai" or m.startswith("compressai.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "compressai", package)
    return importlib.import_module("compressai.entropy_models.entropy_models")


def test_prior_matches_compressai_entropy_bottleneck(monkeypatch):
    entropy_models = compressai_entropy_models(monkeypatch)
    ours = tiny(latent=5, frozen=False).prior
    theirs = entropy_models.EntropyBottleneck(5, filters=(3, 3, 3))
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.3 * torch.randn_like(p))
        for name, p in ours.named_parameters():
            dict(theirs.named_parameters())[name].copy_(p)
        v = torch.randn(5, 1, 1000) * 4
        their_p = theirs._likelihood(v)[0]
        ours_p = ours.likelihood(v.view(5, 1, 1, 1000).transpose(0, 1))
        their_p = their_p.view(5, 1, 1, 1000).transpose(0, 1)
    assert torch.allclose(ours_p, their_p.clamp(min=1e-9), rtol=1e-5, atol=1e-7)


def test_frozen_tables_sum_to_the_precision_and_follow_the_density():
    prior = tiny(latent=4).prior
    freq = prior.freq.numpy()
    assert (freq.sum(axis=1) == 2**codec.PRECISION).all()
    assert (freq[:, 0] >= 1).all()  # the escape is always codable
    with torch.no_grad():
        values = prior.offset[:, None].float() + torch.arange(codec.WINDOW - 1)
        p = prior.likelihood(
            values.T[None, :, :, None].transpose(1, 2).reshape(1, 4, -1, 1)
        )
    p = p[0, :, :, 0].numpy()
    q = freq[:, 1:] / 2**codec.PRECISION
    assert np.abs(p - q).max() < 2e-3  # integer frequencies of the same pmf


# --- real files ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (37, 53), (64, 17)])
def test_latents_round_trip_exactly(shape):
    net = tiny()
    image = photo(*shape)
    data = net.compress(image)
    q, size = net.decode_latents(data)
    assert size == shape
    assert np.array_equal(q, net.latents(image))
    back = net.decompress(data)
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.array_equal(back, net.decompress(data))  # deterministic


def test_values_outside_the_window_are_escaped_and_restored():
    net = tiny()
    with torch.no_grad():  # scale the last convolution: latents far outside the windows
        net.analysis[-1].weight.mul_(2000.0)
        net.analysis[-1].bias.add_(40.0)
    image = photo()
    q = net.latents(image)
    offset = net.prior.offset.numpy()[:, None, None]
    outside = (q < offset) | (q >= offset + codec.WINDOW - 1)
    assert outside.mean() > 0.1
    data = net.compress(image)
    assert codec.read_header(data)["sizes"][2] >= int(outside.sum())
    assert np.array_equal(net.decode_latents(data)[0], q)


def test_table_bits_is_the_information_under_the_frozen_tables():
    net = tiny()
    q = net.latents(photo(48, 64))
    q[0, 0, 0] = 1000  # outside every window: costs the escape's frequency
    freq, offset = net.prior.freq.numpy(), net.prior.offset.numpy()
    expected = 0.0
    for (c, _, _), v in np.ndenumerate(q):
        k = v - offset[c] + 1
        k = k if 1 <= k < codec.WINDOW and freq[c, k] > 0 else 0
        expected -= math.log2(freq[c, k] / 2**codec.PRECISION)
    assert net.table_bits(q) == pytest.approx(expected, rel=1e-12)
    payload = len(codec.read_header(net.compress(photo(48, 64)))["payload"])
    assert abs(8 * payload - net.table_bits(net.latents(photo(48, 64)))) < 64


def test_file_bytes_are_close_to_the_models_rate():
    net = tiny()
    image = photo(64, 64)
    q = net.latents(image)
    with torch.no_grad():
        p = net.prior.likelihood(torch.from_numpy(q).float()[None])
    bits = float(-torch.log2(p).sum())
    data = net.compress(image)
    header = len(data) - len(codec.read_header(data)["payload"])
    assert header < 40
    assert 8 * len(data) < bits + 8 * header + 64 + 0.02 * bits


def test_file_from_another_model_and_corrupt_files_are_refused():
    a, b = tiny(0), tiny(1)
    data = a.compress(photo())
    with pytest.raises(CorruptFileError, match="coded with the model"):
        b.decompress(data)
    for i in range(0, len(data), max(1, len(data) // 40)):
        bad = bytearray(data)
        bad[i] ^= 0x10
        with pytest.raises(CorruptFileError):
            a.decompress(bytes(bad))
    with pytest.raises(CorruptFileError):
        a.decompress(data[:-3])
    with pytest.raises(CorruptFileError, match="not a MLCI stream"):
        a.decompress(b"GIF89a" + data[6:])


def test_bad_images_and_an_unfrozen_prior_are_refused():
    net = tiny()
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        net.compress(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        net.compress(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(RuntimeError, match="not frozen"):
        tiny(frozen=False).compress(photo())


def test_psnr_and_jpeg():
    image = photo(64, 64)
    assert codec.psnr(image, image) == math.inf
    sizes, quality = [], []
    for q in (10, 50, 90):
        data, back = codec.jpeg(image, q)
        sizes.append(len(data))
        quality.append(codec.psnr(image, back))
    assert sizes == sorted(sizes) and quality == sorted(quality)


def test_rate_at_reads_a_curve_in_log_rate_and_refuses_bad_curves():
    rates, psnrs = [0.1, 0.2, 0.8], [20.0, 24.0, 30.0]
    for r, p in zip(rates, psnrs, strict=True):  # the measured points themselves
        assert codec.rate_at(p, rates, psnrs) == pytest.approx(r)
    # halfway in quality between two points is their geometric mean in rate
    assert codec.rate_at(27.0, rates, psnrs) == pytest.approx(math.sqrt(0.2 * 0.8))
    # unsorted input reads the same curve; off either end is NaN, not a guess
    assert codec.rate_at(22.0, rates[::-1], psnrs[::-1]) == pytest.approx(
        math.sqrt(0.1 * 0.2)
    )
    assert math.isnan(codec.rate_at(19.0, rates, psnrs))
    assert math.isnan(codec.rate_at(31.0, rates, psnrs))
    with pytest.raises(ValueError, match="positive rates"):
        codec.rate_at(20.0, [0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="two or more"):
        codec.rate_at(20.0, [1.0], [1.0])


def test_overhead_counts_what_is_not_coded_pixels():
    net, image = tiny(), photo()
    data = net.compress(image)
    assert codec.overhead(data) == len(data) - len(codec.read_header(data)["payload"])
    assert 20 < codec.overhead(data) < 60
    jpg, _ = codec.jpeg(image, 50)
    head = codec.overhead(jpg)
    # the JPEG overhead ends right after the start-of-scan header
    sos = jpg.index(b"\xff\xda")
    assert head == sos + 2 + int.from_bytes(jpg[sos + 2 : sos + 4], "big") + 2
    assert jpg[-2:] == b"\xff\xd9" and head < len(jpg)
    with pytest.raises(ValueError, match="neither"):
        codec.overhead(b"GIF89a")
    with pytest.raises(ValueError, match="start of scan"):
        codec.overhead(jpg[:sos])


def test_ms_ssim_is_one_on_equal_images_and_falls_with_noise():
    from mlcomp import measure

    pytest.importorskip("pytorch_msssim")
    image = photo(176, 200)
    noisy = np.clip(
        image + np.random.default_rng(1).normal(0, 20, image.shape), 0, 255
    ).astype(np.uint8)
    assert measure.ms_ssim(image, image) == pytest.approx(1.0)
    assert 0 < measure.ms_ssim(image, noisy) < 0.99
    with pytest.raises(ValueError, match="160 pixels"):
        measure.ms_ssim(image[:100], image[:100])
    with pytest.raises(ValueError, match="one shape"):
        measure.ms_ssim(image, image[:170])
    rd = codec.rate_distortion(
        lambda im: codec.jpeg(im, 50), {"a": image}, ms_ssim=True
    )
    assert 0 < rd["ms_ssim"] < 1


def test_training_lowers_the_loss_and_writes_metrics():
    recipe = codec.CodecRecipe(
        steps=60, batch_size=4, crop=32, channels=8, latent=8, lam=0.01
    )
    net, info = codec.train_recipe(recipe, progress=False)
    assert net.prior.frozen and not net.training
    assert info["test_bpp"] > 0 and 10 < info["test_psnr"] < 60
    with pytest.raises(ValueError, match="multiple of 8"):
        codec.CodecRecipe(crop=20)


def test_photos_are_split_and_refuse_unknown_splits():
    train, test = datasets.photos("train"), datasets.photos("test")
    assert not set(train) & set(test)
    assert all(
        im.dtype == np.uint8 and im.shape[2] == 3
        for im in [*train.values(), *test.values()]
    )
    with pytest.raises(ValueError, match="split"):
        datasets.photos("val")


# --- the command line (the shipped codecs) -----------------------------------------


def test_image_command_round_trips_a_photograph(tmp_path, capsys):
    from PIL import Image

    from mlcomp import cli

    src = tmp_path / "cat.png"
    image = datasets.photos("test")["chelsea"][:120, :200]
    Image.fromarray(image).save(src)
    coded, back = tmp_path / "cat.mlci", tmp_path / "back.png"
    assert cli.main(["image", "compress", str(src), "-o", str(coded), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "bits per pixel" in said and codec.model_for() in said
    assert (
        cli.main(["image", "decompress", str(coded), "-o", str(back), "--quiet"]) == 0
    )
    net = codec.pretrained(codec.model_for(), progress=False)
    decoded = np.asarray(Image.open(back))
    assert np.array_equal(decoded, net.decompress(coded.read_bytes()))
    assert codec.psnr(image, decoded) > 20
    small = tmp_path / "small.mlci"
    args = ["image", "compress", str(src), "-o", str(small), "--lambda", "0.0016"]
    assert cli.main([*args, "--quiet"]) == 0
    assert small.stat().st_size < coded.stat().st_size
    assert codec.read_header(small.read_bytes())["model"] == "codec-l0016"


def test_image_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    from mlcomp import cli

    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    assert (
        cli.main(["image", "compress", str(text), "-o", str(tmp_path / "x.mlci")]) == 1
    )
    err = capsys.readouterr().err
    assert "not an image" in err and err.count("\n") == 1
    assert cli.main(["image", "compress", str(text), "-o", str(tmp_path / "x.mlci"),
                     "--lambda", "0.3"]) == 1  # fmt: skip
    assert "choose from 0.0004, 0.0016, 0.0064, 0.0256" in capsys.readouterr().err
    assert (
        cli.main(["image", "decompress", str(text), "-o", str(tmp_path / "x.png")]) == 1
    )
    assert "not a MLCI stream" in capsys.readouterr().err
    assert (
        cli.main(["image", "decompress", str(text), "-o", str(tmp_path / "x.jpg")]) == 1
    )
    assert "losslessly" in capsys.readouterr().err
