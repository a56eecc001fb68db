"""TRADES (Zhang et al., 2019), the adversarial-training baseline of 000 and 002.

    python -m jaxcert.main --config=experiments/trades.py:mnist
    python -m jaxcert.main --config=experiments/trades.py:cifar10

``CE + beta * KL(p(x) || p(x'))``, ``x'`` from sign-gradient ascent on the KL term.
TRADES is not one of our five source papers and its text is not in ``../shared/papers``:
the values below are **from the TRADES authors' released training scripts as we know
them, to check before reporting**: MNIST eps 0.3, 40 steps of 0.01, beta 1, SGD lr 0.01
(momentum 0.9 in their code; optax's plain ``sgd`` here), batch 128, 100 epochs;
CIFAR-10 eps 8/255 (0.031), 10 steps of 0.007, beta 6, SGD lr 0.1 decayed 10x at epoch
75 of 76, batch 128, weight decay 2e-4, crop + flip. Their models (a small CNN,
WideResNet-34-10) are not in our zoo; we use DM-small and DM-large, a guess. No eps
ramp: TRADES trains at the full eps from the first step. Certification: PGD-20 as
TRADES reports, with IBP and CROWN-IBP (an adversarially trained network is rarely
certifiable; 000 and 002 show exactly that).
"""

from jaxcert.config import default_config


def get_config(dataset: str = "mnist"):
    c = default_config()
    c.data.name = dataset
    c.method.name = "trades"
    c.method.kappa_start = c.method.kappa_end = 1.0  # unused by TRADES
    c.train.warmup_epochs = c.train.ramp_epochs = 0
    c.train.batch_size = 128
    c.train.optimizer = "sgd"
    c.certify.verifiers = ("ibp", "crown-ibp")
    c.certify.pgd_steps = 20
    if dataset == "mnist":
        c.model.name = "dm_small"
        c.method.eps_train = c.certify.eps = 0.3
        c.method.pgd_steps, c.method.pgd_step_size = 40, 0.01
        c.method.trades_beta = 1.0
        c.train.epochs, c.train.lr = 100, 0.01
        c.certify.eps_grid = (0.0, 0.1, 0.2, 0.3)
    elif dataset == "cifar10":
        c.model.name = "dm_large"
        c.data.augment = True
        c.method.eps_train = c.certify.eps = 8 / 255
        c.method.pgd_steps, c.method.pgd_step_size = 10, 0.007
        c.method.trades_beta = 6.0
        c.train.epochs, c.train.lr = 76, 0.1
        c.train.lr_decay, c.train.decay_epochs = "step", (75,)
        c.train.weight_decay = 2e-4
        c.certify.eps_grid = tuple(e / 255 for e in (0, 2, 4, 8))
    else:
        raise ValueError(f"dataset must be mnist or cifar10, got {dataset!r}")
    return c
