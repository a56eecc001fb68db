"""Every ``Example:`` in jaxcert's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import pytest

import jaxcert

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(jaxcert.__path__, "jaxcert.") if m.name != "jaxcert.main"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    globs = {"jax": jax, "jnp": jnp, "jaxcert": jaxcert}
    for test in finder.find(module, name, globs=globs):
        test.globs.update(module.__dict__ | globs)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"


def test_every_public_name_has_an_example():
    for name in jaxcert.__all__:
        obj = getattr(jaxcert, name)
        if callable(obj):
            assert ">>>" in (obj.__doc__ or ""), name
