"""Bound methods as option objects: names, options, pytrees, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    CLIP,
    EPS,
    assert_close,
    assert_contains,
    box_points,
    box_vertices,
    make_case,
    spec_for,
)

import jaxcert
from jaxcert.loss_fusion import LINEAR_METHODS
from jaxcert.options import option_names
from jaxcert.tightness import TIGHTNESS_METHODS

KEY = jax.random.PRNGKey(0)


def test_names_map_to_default_objects():
    m = jaxcert.METHODS
    assert m["ibp"] == jaxcert.IBP()
    assert m["crown-ibp"] == jaxcert.CrownIBP()
    assert m["cap-ibp"] == jaxcert.CrownIBP(relaxation="fastlin")
    assert m["crown"] == jaxcert.Crown()
    assert m["fastlin"] == jaxcert.Crown(relaxation="fastlin")
    assert m["crown-opt"] == jaxcert.CrownOpt()
    assert m["bcp"] == jaxcert.BCP() and m["lmt"] == jaxcert.LMT()
    assert isinstance(m["crown-ibp-opt"], jaxcert.CrownIBPOpt) and m["crown-ibp-opt"].key is None
    assert jaxcert.get_method("crown", chunk_size=16) == jaxcert.Crown(chunk_size=16)


def test_callers_ask_the_object():
    # Lists that used to be spelled out are questions to the objects now.
    linear = {n for n, m in jaxcert.METHODS.items() if isinstance(m, jaxcert.LinearMethod)}
    assert {"crown-ibp", "cap-ibp", "crown", "fastlin"} <= linear
    assert set(LINEAR_METHODS) <= linear and set(TIGHTNESS_METHODS) <= linear
    assert [n for n, m in jaxcert.METHODS.items() if m.needs_key] == ["crown-ibp-opt"]
    opt = jaxcert.METHODS["crown-ibp-opt"].with_key(KEY)
    assert opt.key is KEY and jaxcert.IBP().with_key(KEY) == jaxcert.IBP()


ALL_OPTIONS = {
    "slopes": {},
    "key": KEY,
    "steps": 5,
    "step_size": 0.1,
    "objective": "ce",
    "chunk_size": 4,
    "intersect_ibp": False,
    "lipschitz": {},
    "solver_iters": 3,
    "relaxation": "fastlin",
}


@pytest.mark.parametrize("name", list(jaxcert.METHODS))
def test_an_option_the_method_lacks_raises_type_error_before_tracing(name):
    # jnp.tan has no rule: reaching the tracer would raise UnsupportedOperation instead.
    s = jaxcert.LinfBall(jnp.zeros((1, 2)), 0.1)
    own = set(option_names(jaxcert.METHODS[name]))
    foreign = sorted(set(ALL_OPTIONS) - own)
    assert foreign, name
    for option in foreign:
        with pytest.raises(TypeError, match=f"no option '{option}'.*its options"):
            jaxcert.bound(jnp.tan, s, name, **{option: ALL_OPTIONS[option]})
        with pytest.raises(TypeError, match=f"no option '{option}'"):
            jaxcert.TracedNetwork(jnp.tanh, s).bound(name, **{option: ALL_OPTIONS[option]})


def test_the_issues_examples_of_dropped_options_raise():
    case = make_case("mlp")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    with pytest.raises(TypeError, match="IBP has no option 'slopes'"):
        jaxcert.bound(
            case.fn, s, "ibp", slopes={}, steps=5, key=KEY, lipschitz={}, solver_iters=3,
            objective="ce",
        )  # fmt: skip
    with pytest.raises(TypeError, match="CrownOpt has no option 'slopes'"):
        jaxcert.bound(case.fn, s, "crown-opt", slopes={})
    with pytest.raises(TypeError, match="LMT has no option 'solver_iters'"):
        jaxcert.bound(case.fn, jaxcert.L2Ball(case.x, 0.1), "lmt", solver_iters=3)


@pytest.mark.parametrize(
    ("name", "options", "obj"),
    [
        ("crown-ibp-opt", {"key": KEY}, jaxcert.CrownIBPOpt(key=KEY)),
        ("crown-ibp-opt", {"key": KEY, "steps": 3}, jaxcert.CrownIBPOpt(KEY, steps=3)),
        ("cap-ibp", {}, jaxcert.CrownIBP(relaxation="fastlin")),
        ("crown", {"intersect_ibp": False}, jaxcert.Crown(intersect_ibp=False)),
        ("fastlin", {"chunk_size": 7}, jaxcert.Crown(relaxation="fastlin", chunk_size=7)),
        ("bcp", {"solver_iters": 2}, jaxcert.BCP(solver_iters=2)),
    ],
)
def test_a_name_with_options_is_the_object(name, options, obj):
    case = make_case("cnn")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    spec = spec_for(case, True)
    by_name = jaxcert.bound(case.fn, s, name, spec=spec, **options)
    by_object = jaxcert.bound(case.fn, s, obj, spec=spec)
    assert jaxcert.get_method(name, **options) == obj
    assert_close(by_name.lower, by_object.lower, name)
    assert_close(by_name.upper, by_object.upper, name)


def test_method_objects_are_pytrees_with_static_options():
    assert jax.tree.leaves(jaxcert.CrownIBP()) == []
    assert jax.tree.leaves(jaxcert.CrownIBPOpt(key=KEY)) == [KEY]
    slopes = {"relu_0": jnp.ones((2, 16))}
    assert jax.tree.leaves(jaxcert.Crown(slopes=slopes)) == [slopes["relu_0"]]
    # Static options are part of the structure: changing one retraces.
    assert jax.tree.structure(jaxcert.Crown()) != jax.tree.structure(jaxcert.Crown(chunk_size=2))

    case = make_case("mlp")
    spec = spec_for(case, True)

    @jax.jit
    def lower(method, x):
        s = jaxcert.LinfBall(x, EPS, clip=CLIP)
        return jaxcert.bound(case.fn, s, method, spec=spec, bound_upper=False).lower

    for method in (jaxcert.CrownIBPOpt(key=KEY), jaxcert.Crown(slopes=None), jaxcert.BCP()):
        eager = jaxcert.bound(case.fn, jaxcert.LinfBall(case.x, EPS, clip=CLIP), method, spec=spec)
        assert_close(lower(method, case.x), eager.lower, type(method).__name__)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: jaxcert.CrownIBP(relaxation="bogus"), "relaxation"),
        (lambda: jaxcert.Crown(chunk_size=-1), "chunk_size"),
        (lambda: jaxcert.Crown(chunk_size=0), "chunk_size"),
        (lambda: jaxcert.CrownIBP(chunk_size=1.5), "chunk_size"),
        (lambda: jaxcert.CrownIBPOpt(steps=0), "steps"),
        (lambda: jaxcert.CrownOpt(objective="max"), "objective"),
        (lambda: jaxcert.BCP(solver_iters=0), "solver_iters"),
        (lambda: jaxcert.get_method("crown", chunk_size=-1), "chunk_size"),
    ],
)
def test_bad_options_are_refused_when_the_object_is_made(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_method_that_draws_random_numbers_needs_a_key():
    case = make_case("mlp")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    with pytest.raises(ValueError, match="needs key"):
        jaxcert.bound(case.fn, s, jaxcert.CrownIBPOpt())


@pytest.mark.parametrize("chunk", [1, 3])  # 20 rows: a lax.map of 20 chunks; 7 unrolled
@pytest.mark.parametrize("name", ["crown-ibp", "crown"])
def test_chunk_size_splits_the_final_pass_into_equal_results(name, chunk):
    case = make_case("cnn")  # identity spec: 4 outputs, with upper bounds 8 rows
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    spec = jnp.concatenate([spec_for(case, True), -spec_for(case, True)] * 2, axis=1)
    whole = jaxcert.bound(case.fn, s, name, spec=spec[:, :10])
    chunked = jaxcert.bound(case.fn, s, name, spec=spec[:, :10], chunk_size=chunk)
    assert_close(chunked.lower, whole.lower, f"{name}: chunked lower")
    assert_close(chunked.upper, whole.upper, f"{name}: chunked upper")


@pytest.mark.parametrize("name", ["bcp", "lmt"])
@pytest.mark.parametrize("kind", ["box", "l0"])
def test_lipschitz_methods_bound_boxes_and_l0_balls_soundly(name, kind):
    # Every set encloses itself in an L2 ball; before, a Box failed with AttributeError.
    case = make_case("mlp")
    x = np.asarray(case.x)
    if kind == "box":
        lo, hi = np.clip(x - 0.1, 0, 1), np.clip(x + 0.05, 0, 1)
        s = jaxcert.Box(jnp.asarray(lo), jnp.asarray(hi))
        rng = np.random.default_rng(0)
        points = np.concatenate([box_points(rng, lo, hi, 200), box_vertices(rng, lo, hi, 200)])
    else:
        s = jaxcert.L0Ball(case.x, 2)
        points = np.concatenate(
            [np.asarray(s.sample(KEY, 200)), np.asarray(s.vertices(jax.random.PRNGKey(1), 200))]
        )
    spec = spec_for(case, True)
    b = jaxcert.bound(case.fn, s, name, spec=spec)
    assert np.all(np.isfinite(np.asarray(b.lower)))
    values = np.einsum("bsk,nbk->nbs", spec, np.asarray(jax.vmap(case.fn)(jnp.asarray(points))))
    assert_contains(b.lower, b.upper, values, f"{name}/{kind}")


def test_a_slope_optimiser_s_lower_is_its_bound_s_lower():
    # What a composite method calls (m.lower) must be what bound() returns for those rows.
    case = make_case("cnn")
    net = jaxcert.TracedNetwork(case.fn, jaxcert.LinfBall(case.x, EPS, clip=CLIP))
    m = jaxcert.CrownIBPOpt(key=KEY)
    A = net.spec_matrix(spec_for(case, True))
    lower = m.lower(net, A, m.intermediate(net))
    assert_close(lower, net.bound(m, spec_for(case, True)).lower, "lower vs bound")
