"""L2 certified training with Lipschitz bounds: BCP (thesis §3.2) and LMT.

Objective (thesis Eq. 3.2.13), with ``kappa = 1 - lambda`` of the thesis::

    kappa * CE(f(x), y) + (1 - kappa) * CE(worst-translated logits from the bound, y)

``bcp`` bounds the margins over ``ball ∩ box`` at the last layer, ``lmt`` over the ball
alone (the global Lipschitz margin). The layers' spectral norms are estimated by one
power-iteration step per training step; the right singular vectors live in the
training state (``TrainState.method_state``), so the estimate sharpens as training goes
(thesis App. B.2.2). Certificates never use these estimates: :func:`jaxcert.bound`
computes certified upper bounds when not given constants.

Config keys: ``norm`` (``"l2"``: the L2 ball of radius eps; ``"linf"``: the L2 ball
circumscribing the Linf ball), ``bcp_solver_iters`` (rounds of the ball ∩ box solver
during training: 10 on MNIST, 1 on CIFAR in the thesis), ``power_iters`` (per step, 1).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcert.bounds import bound
from jaxcert.domains import lipschitz as lipschitz_lib
from jaxcert.losses import mixed_objective, robust_cross_entropy, verified
from jaxcert.methods import config_value, register
from jaxcert.sets import L2Ball, LinfBall
from jaxcert.specs import margin_spec


def _input_set(norm: str, x, eps, clip):
    if norm == "l2":
        return L2Ball(x, eps, clip=clip)
    if norm == "linf":
        return LinfBall(x, eps, clip=clip)
    raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")


def make_lipschitz_margin(method: str):
    def maker(apply_fn, num_classes: int, config: Any):
        norm = str(config_value(config, "norm", "l2"))
        solver_iters = int(config_value(config, "bcp_solver_iters", 10))
        power_iters = int(config_value(config, "power_iters", 1))
        clip = (
            float(config_value(config, "clip_min", 0.0)),
            float(config_value(config, "clip_max", 1.0)),
        )
        _input_set(norm, jnp.zeros((1, 1)), 0.0, clip)  # validate the norm now

        def loss_fn(params, x, y, hparams, rng):
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            s = _input_set(norm, x, hparams["eps"], clip)
            unit = lipschitz_lib.unit_graph(fn, s)
            constants, vectors = lipschitz_lib.power_iteration(
                unit, hparams.get("method_state") or None, rng, iters=power_iters
            )
            spec = margin_spec(y, num_classes)
            m = bound(
                fn,
                s,
                method,
                spec=spec,
                bound_upper=False,
                lipschitz=constants,
                solver_iters=solver_iters,
            ).lower
            robust = robust_cross_entropy(m, y, num_classes)
            # verified_acc uses the estimated constants: a training signal, not a certificate.
            loss, metrics = mixed_objective(fn(x), y, robust, hparams["kappa"], verified(m))
            return loss, {**metrics, "method_state": vectors}

        def init_method_state(params, x, key):
            """Right singular vectors after 20 power iterations from random ones."""
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            unit = lipschitz_lib.unit_graph(fn, LinfBall(x[:1], 0.0))
            return lipschitz_lib.power_iteration(unit, None, key, iters=20)[1]

        loss_fn.init_method_state = init_method_state  # type: ignore[attr-defined]
        return loss_fn

    return maker


for _name in ("bcp", "lmt"):
    register(_name)(make_lipschitz_margin(_name))
