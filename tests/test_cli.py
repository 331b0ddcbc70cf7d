import subprocess
import sys

from mlcomp.cli import main


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
