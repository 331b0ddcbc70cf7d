import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlcomp import numerics

ROOT = Path(__file__).resolve().parents[1]


def test_the_makefile_exports_the_same_pinned_values():
    exported = dict(
        re.findall(r"^export (\w+) \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    )
    assert exported == numerics.PINNED


def test_environment_pins_unless_native_and_keeps_explicit_choices():
    env = numerics.environment({"PATH": "/bin", "OMP_NUM_THREADS": "7"})
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["OMP_NUM_THREADS"] == "7"
    assert env["PATH"] == "/bin"
    native = numerics.environment({"MLCOMP_NUMERICS": "native"})
    assert not set(numerics.PINNED) & set(native)
    with pytest.raises(ValueError, match="MLCOMP_NUMERICS"):
        numerics.environment({"MLCOMP_NUMERICS": "fast"})


def test_pin_is_a_no_op_once_torch_is_imported():
    import torch  # noqa: F401

    assert numerics.pin() is False


def _child(code: str, env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in numerics.PINNED}
    out = subprocess.run([sys.executable, "-c", code], env=clean | env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def test_importing_mlcomp_first_pins_a_fresh_process():
    code = "import mlcomp, torch, json; from mlcomp import numerics; " \
           "print(json.dumps(numerics.report()))"  # fmt: skip
    report = json.loads(_child(code, {}))
    assert report["variables"] == numerics.PINNED and report["threads"] == 2
    if report["cpu_capability"] in ("AVX2", "AVX512"):
        assert report["aten_capability"] == "AVX2" and report["pinned"]
    native = json.loads(_child(code, {"MLCOMP_NUMERICS": "native"}))
    assert not any(native["variables"].values()) and not native["pinned"]


@pytest.mark.parametrize("mode", ["pinned", "native"])
def test_the_installed_kernel_pins_unless_told_not_to(tmp_path, monkeypatch, mode):
    from jupyter_client.manager import start_new_kernel

    folder = numerics.install_kernel(tmp_path)
    spec = json.loads((folder / "kernel.json").read_text())
    assert folder.name == numerics.KERNEL_NAME and spec["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINNED}
    env["MLCOMP_NUMERICS"] = mode
    manager, client = start_new_kernel(kernel_name=numerics.KERNEL_NAME, env=env)
    try:
        code = "import json, torch; from mlcomp import numerics; r = numerics.report()"
        client.execute_interactive(code, timeout=60)
        reply = client.execute_interactive(
            "", user_expressions={"r": "json.dumps(r['variables'])"}, timeout=60
        )
        shown = reply["content"]["user_expressions"]["r"]["data"]["text/plain"]
        shown = json.loads(ast.literal_eval(shown))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    if mode == "pinned":
        assert shown == numerics.PINNED
    else:
        assert not any(shown.values()), shown
