import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mlcomp import audio, kws, speech, zoo
from mlcomp.cli import main
from mlcomp.models import DSCNN, LeNet5


def random_dscnn(widths=(16, 12, 8), seed=0):
    torch.manual_seed(seed)
    net = DSCNN(widths=widths)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    with torch.no_grad():
        net.feature_mean.uniform_(-1, 1)
        net.feature_std.uniform_(0.5, 2)
    return net.eval()


def test_features_are_hello_edges_mfccs_in_the_models_layout():
    x = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32) * 0.1
    f = kws.features(x)
    assert f.shape == (3, 1, 51, 10)
    reference = audio.mfcc(torch.from_numpy(x), **kws.FEATURES).transpose(-1, -2)
    torch.testing.assert_close(f[:, 0], reference)
    torch.testing.assert_close(kws.features(x[0]), f[:1])
    with pytest.raises(ValueError, match="waveforms must be"):
        kws.features(np.zeros((2, 2, 16000)))


def test_recipes_validate_and_hash_what_makes_the_weights():
    with pytest.raises(ValueError, match="size"):
        kws.KWSRecipe(size="xl")
    with pytest.raises(ValueError, match="base"):
        kws.KWSRecipe(shrink=0.5)
    with pytest.raises(ValueError, match="not both"):
        kws.KWSRecipe(base="dscnn-s-kws", shrink=0.5, sparsity=0.5)
    a = kws.KWSRecipe(epochs=3)
    assert a.digest() != kws.KWSRecipe(epochs=4).digest()
    assert a.digest() == kws.KWSRecipe(epochs=3, min_val_accuracy=0.9).digest()
    shrunk = kws.RECIPES["dscnn-s-kws-kd-shrink25"]
    assert shrunk.model_kwargs() == {"widths": (48,) * 5}
    assert "dscnn-s-kws-kd" in zoo.dependents(["dscnn-m-kws"])  # through the teacher


def test_fit_normalization_makes_features_zero_mean_unit_std():
    X = torch.randn(50, 1, 51, 10) * torch.arange(1, 11) + 3
    net = DSCNN(widths=(4, 4))
    kws.fit_normalization(net, X)
    z = (X - net.feature_mean) / net.feature_std
    torch.testing.assert_close(
        z.mean(dim=(0, 1, 2)), torch.zeros(10), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(z.std(dim=(0, 1, 2)), torch.ones(10), atol=1e-5, rtol=0)


def test_an_mlc_file_rebuilds_the_folded_network(tmp_path):
    net = random_dscnn()
    x = torch.randn(4, 1, 51, 10)
    path = tmp_path / "kws.mlc"
    table = kws.save(net, path, bits=8)
    assert (
        table.loc[table["values"] != "raw float32", "values"] == "codebook 8-bit"
    ).all()
    back = kws.load(path)
    assert back.is_folded and back.widths == (16, 12, 8)
    # 8-bit codebooks: close to the original, not equal
    torch.testing.assert_close(back(x), net(x), atol=0.05, rtol=0.05)
    exact = tmp_path / "kws.safetensors"
    save_file(net.folded().state_dict(), str(exact))
    torch.testing.assert_close(kws.load(exact)(x), net(x), atol=1e-5, rtol=1e-5)


def test_loading_something_else_says_what_is_wrong(tmp_path):
    lenet = tmp_path / "lenet.safetensors"
    save_file(LeNet5().state_dict(), str(lenet))
    with pytest.raises(ValueError, match="not the weights of a DS-CNN"):
        kws.load(lenet)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        kws.load(junk)
    with pytest.raises(ValueError, match=r"\.mlc or a \.safetensors"):
        kws.load(tmp_path / "model.pt")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A clip of "yes" in a test voice (never heard in training), as a phone might
    save it, and three files that are not."""
    folder = tmp_path_factory.mktemp("wav")
    assert speech.voice_split("f2") == "test"
    voice = speech.Voice("espeak", "en-us", "f2")
    yes = speech.synthesize("yes", voice)
    padded = np.concatenate([np.zeros(8000), yes, np.zeros(12000)])  # 2.25 s
    stereo = np.stack([padded, 0.5 * padded], axis=1)
    rate = 44100
    phone = audio.resample(stereo[:, 0], 16000, rate)
    audio.write_wav(folder / "yes.wav", np.stack([phone, 0.5 * phone], 1), rate)
    audio.write_wav(folder / "silent.wav", np.zeros(16000), 16000)
    (folder / "notes.wav").write_text("not audio at all")
    return folder


def test_listen_answers_each_file_and_reports_the_bad_ones(
    recordings, tmp_path, capsys
):
    model = tmp_path / "tiny.safetensors"
    save_file(random_dscnn().state_dict(), str(model))
    files = [recordings / n for n in ("yes.wav", "silent.wav", "notes.wav", "gone.wav")]
    status = main(["listen", *map(str, files), "--model", str(model), "--top", "2"])
    out, err = capsys.readouterr()
    assert status == 1  # some files failed, the others still got their answer
    (line,) = out.splitlines()
    assert line.startswith(f"{files[0]}: ") and line.count(",") == 1
    errors = err.splitlines()
    assert len(errors) == 3 and all(
        e.startswith("mlcomp listen: error: ") for e in errors
    )
    assert "silent" in errors[0] and "not a WAV" in errors[1] and "no such" in errors[2]


def test_listen_refuses_a_model_that_is_not_a_keyword_spotter(
    recordings, tmp_path, capsys
):
    lenet = tmp_path / "lenet.safetensors"
    save_file(LeNet5().state_dict(), str(lenet))
    assert main(["listen", str(recordings / "yes.wav"), "--model", str(lenet)]) == 1
    assert "not the weights of a DS-CNN" in capsys.readouterr().err


def test_the_default_compressed_student_hears_yes(recordings, tmp_path, capsys):
    net = kws.default_model(cache_dir=tmp_path)
    assert net.is_folded
    assert kws.classify(net, recordings / "yes.wav")[0] == "yes"
    assert main(["listen", str(recordings / "yes.wav")]) == 0
    assert capsys.readouterr().out.split(": ")[1].startswith("yes ")


def test_speech_command_reports_each_split(capsys):
    assert main(["speech", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(speech.SPLITS)
    assert all("clips" in line and "generated in" in line for line in lines)


def test_teacher_logits_are_computed_once_per_teacher_and_clips():
    digest = zoo.recipe_for("dscnn-m-kws").digest()
    first = kws._teacher_logits("dscnn-m-kws", digest, 0, 0, None)
    again = kws._teacher_logits("dscnn-m-kws", digest, 0, 0, None)
    X, _ = kws.training_set(copies=0, seed=0)
    assert again is first and first.shape == (len(X), len(speech.LABELS))
    net = zoo.pretrained("dscnn-m-kws", progress=False)
    with torch.inference_mode():
        assert torch.allclose(first[:100], net(X[:100]), atol=1e-5)
