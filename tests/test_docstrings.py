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
    (module.__name__, name, obj)
    for module in MODULES
    for name in module.__all__
    if (obj := getattr(module, name)) is not None
    and getattr(obj, "__module__", None) == module.__name__  # its home, once
    and (
        inspect.isfunction(obj)
        # classes too; an exception or warning class is documented by the
        # functions that raise it
        or (inspect.isclass(obj) and not issubclass(obj, BaseException))
    )
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_module_has_a_docstring(module):
    assert module.__doc__ and len(module.__doc__.strip()) > 40


@pytest.mark.parametrize(
    "module_name, name, obj", PUBLIC, ids=[f"{m}.{n}" for m, n, _ in PUBLIC]
)
def test_public_function_and_class_has_a_runnable_example(module_name, name, obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{module_name}.{name} has no example in its docstring"
