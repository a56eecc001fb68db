"""The training-method registry: every method trains; unknown and duplicate names raise."""

import pytest
from method_cases import HP, apply_model, method_loss, train_a_few_steps

from jaxcert import methods
from jaxcert.config import default_config


@pytest.mark.parametrize(
    "name", ["natural", "pgd", "ibp", "crown-ibp", "crown-ibp-opt", "cap-ibp", "crown", "fastlin"]
)
def test_loss_is_finite_and_decreases_over_a_few_steps(name):
    losses, metrics = train_a_few_steps(method_loss(name, pgd_steps=3), HP)
    assert losses[-1] < losses[0], (name, losses)
    assert 0 <= float(metrics["clean_acc"]) <= 1


def test_unknown_method_and_duplicate_registration_raise():
    with pytest.raises(ValueError, match="unknown method"):
        methods.make_loss("magic", apply_model, 3, default_config().method)
    with pytest.raises(ValueError, match="already registered"):
        methods.register("ibp")(lambda *a: None)


def test_bound_methods_and_margin_methods_are_training_families():
    import jaxcert
    from jaxcert.domains.margins import MARGIN_METHODS

    names = set(methods.available())
    assert set(jaxcert.METHODS) <= names and set(MARGIN_METHODS) <= names
    assert {"natural", "pgd", "ibp-reg", "crown-ibp-tight"} <= names
    # BCP and LMT keep their own maker (power iteration), overriding the family's.
    assert methods.supported_norms("bcp") == ("l2", "linf")
    assert methods.supported_norms("crown-ibp") == ("linf",)
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        methods.supported_norms("magic")


def test_a_family_member_is_replaced_only_on_purpose():
    with pytest.raises(ValueError, match="already registered"):
        methods.register("crown")(lambda *a: None)
    with pytest.raises(ValueError, match="already registered"):
        methods.register("bcp", override_family=True)(lambda *a: None)  # explicit: once
