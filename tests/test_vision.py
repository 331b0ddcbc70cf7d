"""Chapter 7's compressed LeNet-5 on any picture (mlcomp.vision, mlcomp look)."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mlcomp import datasets, train, vision, zoo
from mlcomp.cli import main


def as_photo(raw: np.ndarray, scale: int = 4, margin: int = 30) -> Image.Image:
    """A Fashion-MNIST image as a product photo: dark object on white, larger."""
    big = Image.fromarray(255 - raw).resize((28 * scale, 28 * scale), Image.BICUBIC)
    photo = Image.new(
        "RGB", (28 * scale + 2 * margin, 28 * scale + 3 * margin), "white"
    )
    photo.paste(big.convert("RGB"), (margin, 2 * margin))
    return photo


@pytest.fixture(scope="module")
def lenet5():
    return zoo.pretrained("lenet5-fashion", progress=False)


def test_a_photo_of_a_test_image_gets_the_test_image_answer(lenet5):
    test = datasets.fashion_mnist("test")
    n = 200
    direct = train.predict(lenet5, (test.images[:n], test.labels[:n]))
    via_photo = torch.tensor([
        int(vision.probabilities(lenet5, vision.prepare(as_photo(test.raw[i].numpy())))
            .argmax())
        for i in range(n)
    ])  # fmt: skip
    assert (via_photo == direct).double().mean() >= 0.9


def test_prepare_matches_the_data_set_layout():
    # an object 30 wide and 60 tall: 14 x 28 after scaling, centred
    photo = Image.new("L", (100, 120), 255)
    photo.paste(0, (35, 30, 65, 90))
    x = vision.prepare(photo)[0, 0] * datasets.FASHION_MNIST_STD
    x += datasets.FASHION_MNIST_MEAN
    cols = torch.nonzero(x.max(0).values > 0.5)[:, 0]
    rows = torch.nonzero(x.max(1).values > 0.5)[:, 0]
    assert (rows.min(), rows.max()) == (0, 27)
    assert 13 <= len(cols) <= 15 and abs(int(cols.min()) + int(cols.max()) - 27) <= 1
    # a transparent background counts as white
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    rgba.paste((200, 30, 30, 255), (10, 10, 40, 40))
    assert vision.prepare(rgba).shape == (1, 1, 28, 28)
    with pytest.raises(ValueError, match="blank"):
        vision.prepare(Image.new("RGB", (20, 20), "grey"))


def test_look_answers_each_picture_and_reports_the_bad_ones(tmp_path, capsys, lenet5):
    test = datasets.fashion_mnist("test")
    boot = tmp_path / "boot.jpg"
    as_photo(test.raw[0].numpy()).save(boot)  # test image 0 is an ankle boot
    (tmp_path / "notes.png").write_text("not a picture")
    Image.new("L", (30, 30), 0).save(tmp_path / "blank.png")
    model = tmp_path / "lenet5.safetensors"
    save_file(lenet5.state_dict(), model)
    files = [
        boot,
        tmp_path / "notes.png",
        tmp_path / "blank.png",
        tmp_path / "gone.png",
    ]
    status = main(["look", *map(str, files), "--model", str(model), "--top", "3"])
    out, err = capsys.readouterr()
    assert status == 1
    assert out.startswith(f"{boot}: Ankle boot ") and out.count(",") == 2
    errors = err.strip().split("\n")
    assert len(errors) == 3 and all(
        e.startswith("mlcomp look: error: ") for e in errors
    )
    assert "not an image Pillow can read" in errors[0] and "notes.png" in errors[0]
    assert "blank.png: the image is blank" in errors[1]
    assert "gone.png: no such file" in errors[2]


def test_look_refuses_a_model_that_is_not_a_lenet5(tmp_path, capsys):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, other)
    Image.new("L", (30, 30), 255).save(tmp_path / "x.png")
    assert main(["look", str(tmp_path / "x.png"), "--model", str(other)]) == 1
    assert "not a LeNet-5 state dict" in capsys.readouterr().err


def test_the_default_model_is_the_compressed_file(tmp_path):
    net = vision.default_model(tmp_path)
    (path,) = tmp_path.glob("*.mlc")
    assert path.name.startswith("lenet5-fashion-sparse94-PQH-")
    weights = net.fc1.weight.detach()
    assert (weights == 0).double().mean() > 0.9 and len(weights.unique()) <= 2**5
    assert torch.equal(vision.default_model(tmp_path).fc1.weight, net.fc1.weight)
