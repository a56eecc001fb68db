"""DoubleMargin Table 2: regularisers on a small CNN, MNIST and CIFAR-10.

    python -m jaxcert.main --config=experiments/doublemargin_table2.py:mnist,double-margin
    python -m jaxcert.main --config=experiments/doublemargin_table2.py:cifar10,ibp-reg
    python -m jaxcert.main --config=experiments/doublemargin_table2.py:mnist,adv+rs

The argument is ``dataset,method``: ``double-margin``, ``double-margin-s`` ("s only"),
``ibp+v``, ``ibp-reg`` (IBP as a regulariser), ``natural``, ``l1`` (natural + L1),
``pgd`` (adversarial training), ``rs`` (natural + ReLU stability), ``adv+rs``
(adversarial training + ReLU stability + L1), ``double-margin+l1``.

Stated in 000 §5: lambda ramps 0 -> 1/2 over the eps ramp as in IBP, eps follows IBP's
piecewise linear schedule, and certified accuracy is CNN-Cert's (our ``crown``) over
eps in [0, 0.4] (MNIST) and [0, 9/255] (CIFAR) on 200 test points; the metric of
Table 2 is the certified radius (``certify.radius``). The paper's App. G is not in our
copy, so these are **guesses**: the model (DM-small), the epochs, warm-up and ramp-up
(60 / 3 / 17 on MNIST, 200 / 5 / 50 on CIFAR: IBP's schedules shortened), Adam 1e-3
and its decays, batch 100 (MNIST) and 50 (CIFAR), gamma = 0.1 (DoubleMargin's
finite-difference step, a fraction of the margin: see :mod:`jaxcert.domains.margins`),
the L1 and ReLU-stability weights (1e-5 and 1e-2: Xiao et al.'s, scaled to our sums),
and eps_train (0.3 on MNIST, 8/255 on CIFAR).
"""

from jaxcert.config import default_config

_METHODS = {
    "double-margin": ("double-margin", 0.0, 0.0),
    "double-margin-s": ("double-margin-s", 0.0, 0.0),
    "ibp+v": ("ibp+v", 0.0, 0.0),
    "ibp-reg": ("ibp-reg", 0.0, 0.0),
    "natural": ("natural", 0.0, 0.0),
    "l1": ("natural", 0.0, 1e-5),
    "pgd": ("pgd", 0.0, 0.0),
    "rs": ("natural", 1e-2, 0.0),
    "adv+rs": ("pgd", 1e-2, 1e-5),
    "double-margin+l1": ("double-margin", 0.0, 1e-5),
}


def get_config(arg: str = "mnist,double-margin"):
    dataset, method = arg.split(",")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    name, rs_weight, l1_weight = _METHODS[method]
    c = default_config()
    c.data.name = dataset
    c.model.name = "dm_small"
    c.method.name = name
    c.method.rs_weight, c.method.l1_weight = rs_weight, l1_weight
    c.method.kappa_start = c.method.kappa_end = 1.0
    c.method.lam_start, c.method.lam_end = 0.0, 0.5
    c.method.gamma = 0.1
    c.certify.verifiers = ("ibp", "crown")
    c.certify.num_examples = 200
    if dataset == "mnist":
        c.method.eps_train = 0.3
        c.train.epochs, c.train.warmup_epochs, c.train.ramp_epochs = 60, 3, 17
        c.train.lr, c.train.lr_decay, c.train.decay_epochs = 1e-3, "step", (40, 50)
        c.certify.eps = 0.3
        c.certify.eps_grid = (0.0, 0.01, 0.03, 0.05, 0.07, 0.1, 0.2, 0.3, 0.4)
    elif dataset == "cifar10":
        c.method.eps_train = 8 / 255
        c.data.augment = True
        c.train.epochs, c.train.warmup_epochs, c.train.ramp_epochs = 200, 5, 50
        c.train.batch_size = 50
        c.train.lr, c.train.lr_decay, c.train.decay_epochs = 1e-3, "step", (150, 180)
        c.certify.eps = 8 / 255
        c.certify.eps_grid = tuple(e / 255 for e in (0, 0.5, 1, 2, 3, 5, 7, 8, 9))
    else:
        raise ValueError(f"dataset must be mnist or cifar10, got {dataset!r}")
    return c
