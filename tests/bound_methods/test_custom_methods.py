"""A user's own bound method: an object of theirs, named once, bounds and trains.

``BestOf`` takes the tightest of several sound methods on one traced network (their
IBP pass is shared): the kind of method a researcher adds without touching jaxcert.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CLIP, EPS, assert_contains, box_points, box_vertices, make_case, spec_for
from helpers_train import tiny_config, write_tiny_npz

import jaxcert
from jaxcert import methods
from jaxcert.certify import certify
from jaxcert.config import validate
from jaxcert.train import train

NAME = "best-of-test"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BestOf(jaxcert.Method):
    """The tightest bounds of ``members`` (each sound, so their intersection is)."""

    members: tuple[jaxcert.Method, ...] = (jaxcert.IBP(), jaxcert.CrownIBP())

    def intermediate(self, net):
        return net.ibp_intervals()

    def lower(self, net, A, intervals):
        return jnp.max(jnp.stack([m.lower(net, A, m.intermediate(net)) for m in self.members]), 0)

    def bounds(self, net, A, bound_upper):
        parts = [m.bounds(net, A, bound_upper) for m in self.members]
        lower = jnp.max(jnp.stack([p[0] for p in parts]), 0)
        upper = jnp.min(jnp.stack([p[1] for p in parts]), 0)
        intervals: Sequence = self.intermediate(net)
        return lower, upper, intervals


@pytest.fixture(scope="module", autouse=True)
def registered():
    jaxcert.register_method(NAME, BestOf(), override=True)
    return NAME


def test_a_registered_object_bounds_by_name_and_is_sound_and_tighter():
    case = make_case("cnn")
    s = jaxcert.LinfBall(case.x, 2 * EPS, clip=CLIP)
    spec = spec_for(case, True)
    best = jaxcert.bound(case.fn, s, NAME, spec=spec)
    for member in ("ibp", "crown-ibp"):
        other = jaxcert.bound(case.fn, s, member, spec=spec)
        assert np.all(np.asarray(best.lower) >= np.asarray(other.lower) - 1e-6), member
        assert np.all(np.asarray(best.upper) <= np.asarray(other.upper) + 1e-6), member
    rng = np.random.default_rng(0)
    lo = np.clip(np.asarray(case.x) - 2 * EPS, *CLIP)
    hi = np.clip(np.asarray(case.x) + 2 * EPS, *CLIP)
    points = np.concatenate([box_points(rng, lo, hi, 100), box_vertices(rng, lo, hi, 100)])
    values = np.einsum("bsk,nbk->nbs", spec, np.asarray(jax.vmap(case.fn)(jnp.asarray(points))))
    assert_contains(best.lower, best.upper, values, NAME)
    with pytest.raises(TypeError, match="BestOf has no option 'chunk_size'"):
        jaxcert.bound(case.fn, s, NAME, chunk_size=2)


def test_a_registered_object_is_a_training_method():
    assert NAME in methods.available()
    assert methods.supported_norms(NAME) == ("linf",)


def test_training_and_certifying_with_a_registered_object(tmp_path):
    npz = write_tiny_npz(tmp_path / "tiny.npz")
    c = tiny_config(npz, NAME, epochs=2)
    c.certify.verifiers = ("ibp", "crown-ibp", NAME)
    c.certify.num_examples = 16
    validate(c)
    state, records = train(c, tmp_path / "run", progress=False)
    assert int(state.step) == 16
    assert all(np.isfinite([r["loss"] for r in records]))
    assert all("verified_acc" in r for r in records)  # the mixed certified objective
    report = certify(c, tmp_path / "run")
    assert report["clean_error"] < 0.5  # it learned (3 classes: chance is 2/3)
    errors = report["verified_error"]
    # The best of IBP and CROWN-IBP verifies at least what either does.
    assert errors[NAME] <= min(errors["ibp"], errors["crown-ibp"]) + 1e-9
    assert errors["best"] <= errors[NAME]
