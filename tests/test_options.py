"""Option objects and registries: options are replaced or refused, never dropped."""

import dataclasses

import pytest

import jaxcert
from jaxcert.options import Registry, option_names, with_options


def test_with_options_replaces_and_refuses_with_the_list_of_options():
    crown = with_options(jaxcert.Crown(), chunk_size=8, intersect_ibp=False)
    assert (crown.chunk_size, crown.intersect_ibp) == (8, False)
    assert jaxcert.Crown().chunk_size is None  # the default object is untouched
    with pytest.raises(TypeError, match="Crown has no option 'steps'") as info:
        with_options(jaxcert.Crown(), steps=3)
    for name in option_names(jaxcert.Crown()):
        assert name in str(info.value)
    with pytest.raises(TypeError, match="its options: none"):
        with_options(jaxcert.IBP(), key=None)


def test_option_names_are_the_init_fields():
    assert option_names(jaxcert.BCP()) == ("lipschitz", "solver_iters")
    assert option_names(jaxcert.CrownIBPOpt()) == ("key", "steps", "step_size", "objective")
    assert all(f.name != "needs_key" for f in dataclasses.fields(jaxcert.CrownIBPOpt()))


def test_registry_registers_once_resolves_and_overrides():
    r = Registry("demo method", jaxcert.Method)
    r.register("zero-ibp", jaxcert.CrownIBP(relaxation="zero"))
    assert r.resolve("zero-ibp") == jaxcert.CrownIBP(relaxation="zero")
    assert r.resolve("zero-ibp", chunk_size=4).chunk_size == 4
    assert r.resolve(jaxcert.IBP()) == jaxcert.IBP()  # objects pass through
    assert list(r.defaults) == ["zero-ibp"]
    with pytest.raises(ValueError, match="already registered"):
        r.register("zero-ibp", jaxcert.IBP())
    r.register("zero-ibp", jaxcert.IBP(), override=True)
    assert r.resolve("zero-ibp") == jaxcert.IBP()
    with pytest.raises(ValueError, match="unknown demo method 'nope'"):
        r.resolve("nope")
    with pytest.raises(TypeError, match="must be a Method"):
        r.register("bad", "crown")
    with pytest.raises(TypeError, match="a name or a Method"):
        r.resolve(3.0)
    with pytest.raises(TypeError):
        r.defaults["x"] = jaxcert.IBP()  # read-only view
