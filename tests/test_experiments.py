"""Every experiment config loads, validates and encodes its paper's settings."""

import importlib.util
import sys
from pathlib import Path

import pytest

from jaxcert.config import validate

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _load(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize(
    "name, arg",
    [("quickstart", None), ("mnist_dm_small", "ibp"), ("mnist_dm_small", "crown-ibp")]
    + [("mnist_crown_ibp", e) for e in ("0.1", "0.2", "0.3", "0.4")]
    + [("cifar_crown_ibp", e) for e in ("2", "8")]
    + [
        ("thesis_table34", f"{d},{m},{e}")
        for d, e in (("mnist", "0.3"), ("cifar10", "8"), ("svhn_cropped", "0.01"))
        for m in ("ibp", "crown-ibp", "cap", "ours")
    ]
    + [
        ("singleprop_table1", a)
        for a in (
            "mnist,small,singleprop-zero",
            "mnist,medium,ibp-reg",
            "mnist,small,singleprop-zero,ahs",
            "cifar10,small,singleprop-fastlin",
            "cifar10,large,ibp-reg",
        )
    ]
    + [
        ("doublemargin_table2", f"{d},{m}")
        for d in ("mnist", "cifar10")
        for m in ("double-margin", "double-margin-s", "ibp+v", "ibp-reg", "adv+rs", "l1")
    ]
    + [("tightness_table2", a) for a in ("0.1", "0.3", "0.3,0.0")]
    + [
        ("bcp_table32", a)
        for a in ("mnist,4c3f,bcp", "mnist,4c3f,lmt", "cifar10,4c3f,bcp", "cifar10,6c2f,bcp")
    ]
    + [("trades", d) for d in ("mnist", "cifar10")],
)
def test_experiment_configs_validate(name, arg):
    validate(_load(name, arg))


def test_every_experiment_file_is_covered():
    files = {p.stem for p in EXPERIMENTS.glob("*.py")} - {"reproduce"}  # the driver
    assert files == {
        "quickstart",
        "mnist_dm_small",
        "mnist_crown_ibp",
        "cifar_crown_ibp",
        "thesis_table34",
        "singleprop_table1",
        "doublemargin_table2",
        "tightness_table2",
        "bcp_table32",
        "trades",
    }


def test_paper_settings():
    c = _load("mnist_crown_ibp", "0.1")
    assert c.method.eps_train == pytest.approx(0.2) and c.model.name == "dm_large"
    assert _load("mnist_crown_ibp", "0.4").method.eps_train == pytest.approx(0.4)
    c = _load("cifar_crown_ibp", "8")
    assert c.method.eps_train == pytest.approx(8.8 / 255) and c.data.augment
    assert (c.method.beta_start, c.method.beta_end) == (1.0, 0.0)
    c = _load("cifar_crown_ibp", "2,1-0.5")  # 003 §5: beta_start = beta_end = 1 at 2/255
    assert (c.method.beta_start, c.method.beta_end) == (1.0, 1.0)
    assert (c.method.kappa_start, c.method.kappa_end) == (1.0, 0.5)
    ours = _load("thesis_table34", "mnist,ours,0.3")
    assert ours.method.name == "crown-ibp-opt" and ours.method.beta_end == 1.0
    assert ours.model.name == "large" and ours.method.opt_step_size >= 1
    assert ours.certify.pgd_steps == 100 and not ours.model.normalize
    assert _load("thesis_table34", "svhn_cropped,ibp,0.01").model.normalize  # only SVHN
    cap = _load("thesis_table34", "cifar10,cap,8")
    assert cap.method.name == "fastlin" and cap.train.batch_size == 32
    assert cap.method.kappa_start == cap.method.kappa_end == 0.0 and cap.model.name == "medium"
    with pytest.raises(ValueError, match="method must be"):
        _load("thesis_table34", "mnist,lp,0.3")


def test_regulariser_paper_settings():
    c = _load("singleprop_table1", "mnist,small,singleprop-zero,ahs")
    assert c.method.adaptive_lambda and c.data.validation_size > 0
    assert (c.train.warmup_steps, c.train.ramp_steps) == (2_000, 10_000)  # 002 §4, in steps
    assert c.method.eps_train == pytest.approx(0.3) and c.model.name == "dm_small"
    c = _load("doublemargin_table2", "mnist,adv+rs")
    assert c.method.name == "pgd" and c.method.rs_weight > 0 and c.method.l1_weight > 0
    assert c.method.lam_end == pytest.approx(0.5)
    c = _load("tightness_table2", "0.3")
    assert c.method.name == "crown-ibp-tight" and c.method.tight_r > 0
    assert c.method.eps_train == pytest.approx(0.4) and c.train.batch_size == 256
    assert _load("tightness_table2", "0.3,0.0").method.name == "crown-ibp"
    with pytest.raises(ValueError, match="model must be"):
        _load("singleprop_table1", "mnist,wide,singleprop-zero")


def test_bcp_settings():
    c = _load("bcp_table32", "mnist,4c3f,bcp")
    assert c.method.norm == c.certify.norm == "l2" and c.certify.eps == pytest.approx(1.58)
    assert c.method.bcp_solver_iters == 10 and c.train.lr == pytest.approx(3e-4)
    assert c.train.batch_size == 50 and c.certify.pgd_step == 0.25 and c.certify.pgd_steps == 100
    c = _load("bcp_table32", "cifar10,6c2f,bcp")
    assert c.model.name == "cnn_6c2f" and c.method.eps_train == pytest.approx(36 / 255)
    with pytest.raises(ValueError, match="bcp or lmt"):
        _load("bcp_table32", "mnist,4c3f,ibp")


def test_trades_settings():
    c = _load("trades", "mnist")
    assert (c.method.name, c.method.pgd_steps, c.method.pgd_step_size) == ("trades", 40, 0.01)
    assert c.method.trades_beta == 1.0 and c.train.ramp_epochs == 0
    assert _load("trades", "cifar10").method.trades_beta == 6.0


def _reproduce_module():
    spec = importlib.util.spec_from_file_location("reproduce", EXPERIMENTS / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("reproduce", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return sys.modules["reproduce"]


def _apply_flags(config, flags):
    """Applies ``--config.a.b=value`` overrides the way the command line parses them."""
    import ast

    for flag in flags:
        key, value = flag.removeprefix("--config.").split("=", 1)
        *sections, name = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        old = target[name]
        if isinstance(old, str):
            new = value
        elif isinstance(old, bool):
            new = value == "True"
        else:
            new = ast.literal_eval(value)
            new = type(old)(new) if not isinstance(old, tuple) else tuple(new)
        target[name] = new
    return config


@pytest.mark.parametrize("comparison", sorted(_reproduce_module().COMPARISONS))
def test_every_reproduction_row_is_a_valid_run(comparison, tmp_path):
    # Each row's command: its paper's config plus the shared budget, validated; all rows
    # of one comparison share the budget flags and the seed.
    reproduce = _reproduce_module()
    rows = reproduce.commands(comparison, str(tmp_path), str(tmp_path / "runs"))
    budget = reproduce.COMPARISONS[comparison].budget
    assert "--config.seed=0" in budget
    for _row, workdir, cmd in rows:
        name, arg = cmd[3].removeprefix("--config=experiments/").split(".py:")
        flags = [f for f in cmd[4:] if f.startswith("--config.")]
        assert flags[: 2 + len(budget)][2:] == list(budget)
        config = _apply_flags(_load(name, arg), flags)
        validate(config)
        assert workdir.parent.name == comparison
        if reproduce.COMPARISONS[comparison].validate:  # a split to choose on
            config.certify.split = "validation"
            validate(config)


def test_reproduction_steps_skip_what_is_done_and_certify_validation_first(tmp_path):
    reproduce = _reproduce_module()
    plain = reproduce.COMPARISONS["bcp"]
    swept = reproduce.COMPARISONS["tightness"]
    assert swept.validate and not plain.validate
    names = lambda comp: [step for step, _ in reproduce._steps(comp, tmp_path)]  # noqa: E731
    assert names(plain) == ["train", "certify"]
    assert names(swept) == ["train", "validation", "certify"]
    (tmp_path / "certify.json").write_text("{}")
    assert names(plain) == []
    assert names(swept) == ["train", "validation"]  # resumes: training returns when done
    (tmp_path / "certify_validation.json").write_text("{}")
    assert names(swept) == []
    flags = dict(reproduce._steps(swept, tmp_path / "new"))["validation"]
    assert "--config.certify.split=validation" in flags
