"""Config validation: impossible values stop with a message naming the key."""

import pytest

from jaxcert.config import ConfigError, default_config, validate


def test_default_config_is_valid():
    validate(default_config())


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("method.eps_train", -0.1, "method.eps_train"),
        ("method.eps_train", float("nan"), "method.eps_train"),
        ("certify.eps", float("inf"), "certify.eps"),
        ("method.name", "magic", "method.name"),
        ("model.name", "resnet999", "model.name"),
        ("method.kappa_start", 1.5, "method.kappa_start"),
        ("train.epochs", 3, "train.epochs"),  # < warmup + ramp (1 + 5)
        ("train.batch_size", 0, "train.batch_size"),
        ("train.optimizer", "lion", "train.optimizer"),
        ("train.lr_decay", "cosine", "train.lr_decay"),
        ("train.eps_shape", "cubic", "train.eps_shape"),
        ("train.lr", 0.0, "train.lr"),
        ("method.gamma", 0.0, "method.gamma"),
        ("method.tight_r", -1.0, "method.tight_r"),
        ("method.rs_weight", -0.1, "method.rs_weight"),
        ("method.trades_beta", -1.0, "method.trades_beta"),
        ("method.alpha", 1.5, "method.alpha"),
        ("method.sabr_lambda", 0.0, "method.sabr_lambda"),
        ("train.ensemble_members", 0, "train.ensemble_members"),
        ("method.adaptive_lambda", True, "data.validation_size"),
        ("certify.verifiers", ("ibp", "alpha-beta"), "certify.verifiers"),
        ("certify.pgd_steps", 0, "certify.pgd_steps"),
        ("data.path", "", "data.path"),
    ],
)
def test_impossible_values_name_the_key(key, value, match):
    c = default_config()
    if key == "data.path":
        c.data.name = "npz"
    section, name = key.split(".")
    c[section][name] = value
    with pytest.raises(ConfigError, match=match):
        validate(c)


def test_unknown_and_ill_typed_keys_are_refused_by_the_config_itself():
    c = default_config()
    with pytest.raises(AttributeError):
        c.train.epochz = 3  # noqa: B018 - unknown key on a locked config
    with pytest.raises(TypeError):
        c.train.epochs = "ten"


def test_loss_fusion_needs_a_linear_method():
    c = default_config()
    c.method.loss_fusion = True
    validate(c)  # crown-ibp
    c.method.name = "ibp"
    with pytest.raises(ConfigError, match="method.loss_fusion"):
        validate(c)


def test_option_lists_come_from_where_they_are_implemented():
    # One vocabulary: config.py keeps no lists of its own.
    from jaxcert import attacks, config, schedules

    for name in ("OPTIMIZERS", "LR_DECAYS", "EPS_SHAPES", "NORMS"):
        assert not hasattr(config, name), name
    c = default_config()
    for optimizer in schedules.OPTIMIZERS:
        c.train.optimizer = optimizer
        validate(c)
    for norm in attacks.NORMS:
        c.certify.norm = norm
        validate(c)
    c.certify.norm = "l1"  # no L1 attack to report a PGD error with
    with pytest.raises(ConfigError, match="certify.norm"):
        validate(c)


def test_training_norm_is_asked_of_the_method():
    c = default_config()
    c.method.norm = "l2"
    with pytest.raises(ConfigError, match="method.norm.*crown-ibp"):
        validate(c)
    c.method.name = "bcp"
    validate(c)


@pytest.mark.parametrize("grid", [(0.1, "a"), (0.1, float("nan")), (-0.1,), (True,)])
def test_eps_grid_entries_are_checked(grid):
    c = default_config()
    c.certify.eps_grid = grid
    with pytest.raises(ConfigError, match="certify.eps_grid"):
        validate(c)
