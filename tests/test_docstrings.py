"""Every public function and class of mlcomp documents itself with a runnable example.

The examples themselves run as doctests (``--doctest-modules`` in pyproject.toml).
"""

import importlib
import inspect
import pkgutil

import pytest

import mlcomp

MODULES = [
    importlib.import_module(m.name)
    for m in pkgutil.walk_packages(mlcomp.__path__, prefix="mlcomp.")
    if not m.name.rsplit(".", 1)[-1].startswith("_")
]
PUBLIC = [
    (module.__name__, name, getattr(module, name))
    for module in MODULES
    for name in module.__all__
    if inspect.isfunction(getattr(module, name))
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_module_has_a_docstring(module):
    assert module.__doc__ and len(module.__doc__.strip()) > 40


@pytest.mark.parametrize(
    "module_name, name, obj", PUBLIC, ids=[f"{m}.{n}" for m, n, _ in PUBLIC]
)
def test_public_function_has_a_runnable_example(module_name, name, obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{module_name}.{name} has no example in its docstring"
