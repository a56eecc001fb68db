"""Penalties any method can add: ReLU stability and L1 weight decay (Xiao et al.).

DoubleMargin's baselines combine them with natural or adversarial training
("Adv+RS", "L1+RS") and with its own regulariser ("Double Margin + L1"). They are
terms added to a method's loss, so :func:`jaxcert.methods.make_loss` wraps any
registered method with them when ``rs_weight`` or ``l1_weight`` is positive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.bound_methods import IBP
from jaxcert.bounds import bound
from jaxcert.methods.options import clip_range
from jaxcert.sets import LinfBall

Array = jax.Array

__all__ = ["relu_stability", "l1_norm", "with_penalties"]


def relu_stability(fn: Callable[[Array], Array], input_set: Any) -> Array:
    """Xiao et al.'s ReLU-stability loss: ``sum_j -tanh(1 + l_j u_j)``, batch mean.

    ``l, u`` are the IBP bounds of every activation's input over ``input_set``; the
    loss is lowest (-tanh(1 + l u) -> -1) when both bounds have the same sign and are far
    from zero, so it pushes neurons to be stable over the set.

    Example:
      >>> fn = lambda x: jax.nn.relu(x)
      >>> float(relu_stability(fn, jaxcert.LinfBall(jnp.array([[0.0, 2.0]]), 1.0)))
      -0.9993...
    """
    inter = bound(fn, input_set, IBP(), return_intermediate=True).intermediate or {}
    total = jnp.zeros(())
    for b in inter.values():
        total = total + jnp.sum(-jnp.tanh(1 + b.lower * b.upper))
    return total / input_set.shape[0]


def _is_weight(path: tuple[Any, ...], leaf: Array) -> bool:
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    if names and names[-1] in ("kernel", "weight", "w"):
        return True
    return "bias" not in names and jnp.ndim(leaf) >= 2


def l1_norm(params: Any) -> Array:
    """Sum of ``|w|`` over the weights (Flax ``kernel`` leaves; biases excluded).

    Example:
      >>> float(l1_norm({"dense": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.ones(2)}}))
      3.0
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum((jnp.sum(jnp.abs(leaf)) for p, leaf in leaves if _is_weight(p, leaf)), jnp.zeros(()))


def with_penalties(loss_fn, apply_fn, config: Any, rs_weight: float, l1_weight: float):
    """``loss_fn`` plus ``rs_weight * relu_stability + l1_weight * l1_norm``."""
    clip = clip_range(config)

    def penalised(params, x, y, hparams, rng):
        loss, metrics = loss_fn(params, x, y, hparams, rng)
        extra = {}
        if rs_weight > 0:
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            rs = relu_stability(fn, LinfBall(x, hparams["eps"], clip=clip))
            loss = loss + rs_weight * rs
            extra["relu_stability"] = rs
        if l1_weight > 0:
            l1 = l1_norm(params)
            loss = loss + l1_weight * l1
            extra["l1"] = l1
        return loss, {**metrics, **extra, "loss": loss}

    return penalised
