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

from jaxcert.bound_methods import BCP, LMT, Method
from jaxcert.bounds import bound
from jaxcert.domains import lipschitz as lipschitz_lib
from jaxcert.losses import mixed_objective, robust_cross_entropy, verified
from jaxcert.methods.options import clip_range, config_value
from jaxcert.methods.registry import MethodMaker, register
from jaxcert.options import option_names, with_options
from jaxcert.sets import LinfBall, norm_ball
from jaxcert.specs import margin_spec

# Threat models these methods train on: the L2 ball of radius eps, or the L2 ball
# circumscribing the Linf ball.
NORMS = ("l2", "linf")


def make_lipschitz_margin(bound_method: Method) -> MethodMaker:
    """A method maker for Eq. 3.2.13 with ``bound_method`` (:class:`~jaxcert.BCP` or
    :class:`~jaxcert.LMT`), its Lipschitz constants from power iteration."""

    def maker(apply_fn, num_classes: int, config: Any):
        norm = str(config_value(config, "norm", "l2"))
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        power_iters = int(config_value(config, "power_iters", 1))
        clip = clip_range(config)
        method = bound_method
        if "solver_iters" in option_names(method):
            method = with_options(
                method, solver_iters=int(config_value(config, "bcp_solver_iters", 10))
            )

        def loss_fn(params, x, y, hparams, rng):
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            s = norm_ball(norm, x, hparams["eps"], clip)
            unit = lipschitz_lib.unit_graph(fn, s)
            constants, vectors = lipschitz_lib.power_iteration(
                unit, hparams.get("method_state") or None, rng, iters=power_iters
            )
            spec = margin_spec(y, num_classes)
            estimated = with_options(method, lipschitz=constants)
            m = bound(fn, s, estimated, spec=spec, bound_upper=False).lower
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


# Not the family's generic mixed objective: power-iteration constants and their state.
for _name, _method in (("bcp", BCP()), ("lmt", LMT())):
    register(_name, norms=NORMS, override_family=True)(make_lipschitz_margin(_method))
