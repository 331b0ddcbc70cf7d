import os
import subprocess
import sys
from fractions import Fraction

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from mlcomp.cli import main
from mlcomp.coding import inspect, load_compressed, save_compressed


def test_zoo_command_reports_each_model(capsys):
    assert main(["zoo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "lenet5-fashion: test accuracy 0.9" in out and "lenet300-fashion" in out


def test_unknown_model_is_an_error_with_choices(capsys):
    assert main(["zoo", "alexnet"]) == 2
    assert "lenet5-fashion" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "mlcomp", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "zoo" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "mlcomp"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "required" in result.stderr


# --- compress / inspect / decompress -------------------------------------------


@pytest.fixture(scope="module")
def resnet18_state(tmp_path_factory):
    """A torchvision ResNet-18's randomly initialised state dict, saved as .pt."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("resnet") / "resnet18.pt"
    torch.save(state, path)
    return state, path


def test_any_state_dict_round_trips_within_the_stated_error(resnet18_state, tmp_path,
                                                            capsys):  # fmt: skip
    state, model = resnet18_state
    mlc, back = tmp_path / "r.mlc", tmp_path / "r.safetensors"
    assert main(["compress", str(model), "-o", str(mlc), "--quiet"]) == 0
    assert "smaller than the 46,796,608 bytes" in capsys.readouterr().out
    assert main(["inspect", str(mlc)]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2.weight" in out and "bytes in all" in out
    assert main(["decompress", str(mlc), "-o", str(back), "--quiet"]) == 0
    restored = load_file(back)
    table = inspect(mlc)
    assert sorted(restored) == sorted(state)  # safetensors sorts the names
    for name, t in state.items():
        error = (restored[name].double() - t.double()).abs().max().item()
        assert restored[name].dtype == t.dtype and error <= table.loc[name, "max error"]
        if t.dim() < 2:  # batch-norm parameters, buffers and counters: exact
            assert torch.equal(restored[name], t), name
    conv = table.loc["layer4.1.conv2.weight"]
    assert conv["values"] == "codebook 8-bit" and 0 < conv["max error"] < 1e-2
    assert table.loc["fc.weight", "values"] == "codebook 5-bit"
    assert mlc.stat().st_size < 46_796_608 / 4


def test_pruning_bits_and_lossless_options(resnet18_state, tmp_path):
    state, model = resnet18_state
    mlc = tmp_path / "p.mlc"
    args = ["compress", str(model), "-o", str(mlc), "--prune", "0.9", "--bits", "4",
            "--coder", "rans", "--quiet"]  # fmt: skip
    assert main(args) == 0
    table = inspect(mlc)
    restored = load_compressed(mlc)
    for name in ["conv1.weight", "layer3.0.conv1.weight", "fc.weight"]:
        zeros = (restored[name] == 0).double().mean().item()
        assert zeros == pytest.approx(0.9, abs=1e-3)
        assert table.loc[name, "values"] == "codebook 4-bit"
    assert mlc.stat().st_size < 46_796_608 / 30
    exact = tmp_path / "exact.mlc"
    assert main(["compress", str(model), "-o", str(exact), "--recipe", "lossless",
                 "--quiet"]) == 0  # fmt: skip
    restored = load_compressed(exact)
    assert all(torch.equal(restored[name], t) for name, t in state.items())


def test_step_recipe(tmp_path, capsys):
    torch.manual_seed(0)
    state = {"fc.weight": torch.randn(64, 32) * 0.1, "fc.bias": torch.randn(64)}
    model, mlc = tmp_path / "m.pt", tmp_path / "s.mlc"
    torch.save(state, model)
    args = ["compress", str(model), "-o", str(mlc), "--recipe", "step", "--qp", "-20",
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    table = inspect(mlc)
    assert table.loc["fc.weight", "values"] == "step 0.03125 λ=0.116"
    assert table.loc["fc.bias", "values"] == "float16"
    back = load_compressed(mlc)
    assert (back["fc.weight"] - state["fc.weight"]).abs().max() < 0.03125
    rounded = tmp_path / "r.mlc"
    assert main(["compress", str(model), "-o", str(rounded), "--recipe", "step",
                 "--step", "0.01", "--rd-lambda", "0", "--quiet"]) == 0  # fmt: skip
    assert (
        load_compressed(rounded)["fc.weight"] - state["fc.weight"]
    ).abs().max() <= 0.005
    capsys.readouterr()
    assert (
        main(["compress", str(model), "-o", str(tmp_path / "x.mlc"), "--qp", "-20"])
        == 1
    )
    assert "--qp: only with --recipe step" in capsys.readouterr().err
    assert main(["compress", str(model), "-o", str(tmp_path / "x.mlc"), "--recipe",
                 "step", "--qp", "-20", "--step", "0.1"]) == 1  # fmt: skip
    assert "give --qp or --step, not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", str(model), "-o", "x.mlc", "--recipe", "step", "--qp", "99"])
    with pytest.raises(SystemExit):
        main(["compress", str(model), "-o", "x.mlc", "--recipe", "step", "--step", "0"])


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, capsys):
    missing = str(tmp_path / "missing.pt")
    assert main(["compress", missing, "-o", str(tmp_path / "x.mlc")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["inspect", missing]) == 1
    # a pickle that runs code is refused by weights_only=True, never executed
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "f": Fraction(1, 3)}, evil)
    assert main(["compress", str(evil), "-o", str(tmp_path / "x.mlc")]) == 1
    assert "weights_only=True" in capsys.readouterr().err
    # an entry that is not a tensor
    odd = tmp_path / "odd.pt"
    torch.save({"w": torch.ones(2), "step": 3}, odd)
    assert main(["compress", str(odd), "-o", str(tmp_path / "x.mlc")]) == 1
    assert "entry 'step' is a int, not a tensor" in capsys.readouterr().err
    # a tensor the format cannot hold
    cplx = tmp_path / "complex.pt"
    torch.save({"w": torch.ones(2, 2, dtype=torch.complex64)}, cplx)
    assert main(["compress", str(cplx), "-o", str(tmp_path / "x.mlc")]) == 1
    assert "unsupported dtype complex64" in capsys.readouterr().err
    # a damaged .mlc
    good = tmp_path / "good.mlc"
    save_compressed({"w": torch.ones(4, 4)}, good)
    data = bytearray(good.read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.mlc"
    bad.write_bytes(bytes(data))
    assert main(["decompress", str(bad), "-o", str(tmp_path / "w.safetensors")]) == 1
    assert "CRC-32 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()
    assert main(["decompress", str(good), "-o", str(tmp_path / "w.npz")]) == 1
    assert "name it .safetensors or .pt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: status 2
        main(["compress", missing, "-o", "x.mlc", "--prune", "1.5"])
    assert exit_info.value.code == 2


def test_the_console_script_exit_status(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mlcomp", "inspect", str(tmp_path / "none.mlc")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().startswith("mlcomp inspect: error: no such file")


# --- an output that is the input, interrupted and concurrent writes -------------


def _small_model(tmp_path):
    path = tmp_path / "m.safetensors"
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.randn(20, 30), "fc.bias": torch.zeros(20)}, path)
    return path


@pytest.mark.parametrize("how", ["same name", "symlink", "hard link"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path, capsys,
                                                                    how):  # fmt: skip
    model = _small_model(tmp_path)
    before = model.read_bytes()
    out = model
    if how == "symlink":
        out = tmp_path / "alias.mlc"
        out.symlink_to(model)
    elif how == "hard link":
        out = tmp_path / "twin.mlc"
        out.hardlink_to(model)
    assert main(["compress", str(model), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "is the input" in err and len(err.strip().splitlines()) == 1
    assert model.read_bytes() == before
    mlc = tmp_path / "m.mlc"
    assert main(["compress", str(model), "-o", str(mlc), "--quiet"]) == 0
    assert main(["decompress", str(mlc), "-o", str(mlc), "--quiet"]) == 1
    assert load_compressed(mlc)["fc.weight"].shape == (20, 30)  # still the .mlc


def test_two_writers_to_one_output_leave_one_complete_file(tmp_path):
    model = _small_model(tmp_path)
    out = tmp_path / "m.mlc"
    cmd = [sys.executable, "-m", "mlcomp", "compress", str(model), "-o", str(out),
           "--quiet", "--recipe", "lossless"]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    restored = load_compressed(out)  # every section's CRC checked
    assert torch.equal(restored["fc.weight"], load_file(model)["fc.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlc", "m.safetensors"]


def test_a_writer_killed_midway_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "out.pt"
    code = (
        "import os, sys; from mlcomp.utils import atomic_open\n"
        "with atomic_open(sys.argv[1]) as f:\n"
        "    f.write(b'x' * 4096); f.flush(); os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(target)])
    assert result.returncode == -9 and not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(n.startswith(".out.pt.") and n.endswith(".tmp") for n in leftovers)
    assert main(["inspect", str(target)]) == 1  # nothing there to be mistaken for it


def test_decompress_to_pt_is_atomic_and_round_trips(tmp_path):
    model = _small_model(tmp_path)
    mlc, back = tmp_path / "m.mlc", tmp_path / "back.pt"
    assert main(["compress", str(model), "-o", str(mlc), "--recipe", "lossless",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["decompress", str(mlc), "-o", str(back), "--quiet"]) == 0
    state = torch.load(back, weights_only=True)
    assert torch.equal(state["fc.weight"], load_file(model)["fc.weight"])
    umask = os.umask(0)
    os.umask(umask)
    assert back.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file


def test_a_non_finite_weight_is_refused_with_its_tensor_named(tmp_path, capsys):
    from safetensors.torch import save_file

    weight = torch.randn(20, 30)
    weight[3, 4] = float("nan")
    model = tmp_path / "nan.safetensors"
    save_file({"fc.weight": weight, "fc.bias": torch.zeros(20)}, model)
    out = tmp_path / "nan.mlc"
    assert main(["compress", str(model), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "'fc.weight' holds 1 NaN or infinite" in err and not out.exists()
    assert main(["compress", str(model), "-o", str(out), "--recipe", "lossless",
                 "--quiet"]) == 0  # fmt: skip
    back = load_compressed(out)["fc.weight"]
    assert torch.equal(back.isnan(), weight.isnan())
    assert torch.equal(back.nan_to_num(), weight.nan_to_num())


def test_inspect_prints_an_upper_bound_of_the_error_pruning_included(tmp_path, capsys):
    torch.manual_seed(0)
    state = {"conv1.weight": torch.randn(20, 1, 5, 5), "fc.weight": torch.randn(30, 40)}
    model, mlc = tmp_path / "m.pt", tmp_path / "m.mlc"
    torch.save(state, model)
    assert main(["compress", str(model), "-o", str(mlc), "--prune", "0.9",
                 "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["inspect", str(mlc)]) == 0
    lines = capsys.readouterr().out.splitlines()
    back = load_compressed(mlc)
    for name, t in state.items():
        actual = (back[name].double() - t.double()).abs().max().item()
        assert actual > 0.2  # 90% of a N(0, 1) tensor pruned: the error is large
        printed = next(line for line in lines if line.startswith(name)).split()[-1]
        assert Fraction(printed) >= Fraction(actual), (name, printed, actual)
