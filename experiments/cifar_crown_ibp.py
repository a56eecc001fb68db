"""CROWN-IBP Table 2, CIFAR-10: DM-large at eps_test 2/255 or 8/255.

    python -m jaxcert.main --config=experiments/cifar_crown_ibp.py:8 [--config.train.epochs=200]

Settings of the CROWN-IBP paper for CIFAR-10 (§5; its Appendix C is not in our copy
of the text, so the values marked "code" are those of the authors' released configs as
we know them, to be checked against the paper before reporting): eps_train = 1.1 x
eps_test, 3200 epochs with 100 warm-up and 800 ramp-up epochs (code), batch 1024 (code),
Adam 5e-4 decayed by 10x at epochs 2600 and 3040 (code), kappa 1 -> 0 (8/255) or
1 -> 0.5 (2/255), beta 1 -> 0, random crop + flip augmentation, per-channel
normalisation inside the model. Use ``--config.train.epochs`` (and the warm-up/ramp
keys) for shorter runs.
"""

from jaxcert.config import default_config


def get_config(eps_255: str = "8"):
    eps = float(eps_255) / 255
    c = default_config()
    c.data.name = "cifar10"
    c.data.augment = True
    c.model.name = "dm_large"
    c.method.name = "crown-ibp"
    c.method.eps_train = 1.1 * eps
    c.method.kappa_start = 1.0
    c.method.kappa_end = 0.5 if float(eps_255) <= 2 else 0.0
    c.method.beta_start, c.method.beta_end = 1.0, 0.0
    c.train.epochs = 3200
    c.train.warmup_epochs = 100
    c.train.ramp_epochs = 800
    c.train.batch_size = 1024
    c.train.lr = 5e-4
    c.train.lr_decay = "step"
    c.train.decay_epochs = (2600, 3040)
    c.certify.eps = eps
    c.certify.verifiers = ("ibp", "crown-ibp")
    c.certify.eps_grid = tuple(e / 255 for e in (0, 1, 2, 4, 6, 8))
    c.certify.pgd_steps = 200
    return c
