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
