"""DM-small on MNIST at eps_test = 0.3 with eps_train = 0.4 (CROWN-IBP paper, Table 2 row).

    python -m jaxcert.main --config=experiments/mnist_dm_small.py:crown-ibp \
        --config.data.name=npz --config.data.path=../shared/data/mnist.npz

The argument is the method (``ibp`` or ``crown-ibp``). The paper's schedule is 200
epochs (10 warm-up, 50 ramp-up); ``RESULTS.md`` reports shorter runs and says so.
"""

from jaxcert.config import default_config


def get_config(method: str = "crown-ibp"):
    c = default_config()
    c.data.name = "mnist"
    c.model.name = "dm_small"
    c.method.name = method
    c.method.eps_train = 0.4
    c.method.kappa_start, c.method.kappa_end = 1.0, 0.0
    c.method.beta_start, c.method.beta_end = 1.0, 0.0
    c.train.epochs, c.train.warmup_epochs, c.train.ramp_epochs = 200, 10, 50
    c.train.batch_size = 100
    c.train.lr, c.train.lr_decay, c.train.decay_epochs = 5e-4, "step", (130, 190)
    c.certify.eps = 0.3
    c.certify.verifiers = ("ibp", "crown-ibp")
    c.certify.eps_grid = (0.0, 0.1, 0.2, 0.3, 0.4)
    return c
