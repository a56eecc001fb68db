"""The tiny model and batch the training-method tests share."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcert import methods
from jaxcert.config import default_config
from jaxcert.models import get_model

X = jax.random.uniform(jax.random.PRNGKey(0), (16, 6, 6, 1))


Y = jnp.arange(16) % 3


MODEL = get_model("mlp", num_classes=3)


PARAMS = MODEL.init(jax.random.PRNGKey(1), X)["params"]


HP = {
    "eps": jnp.float32(0.05),
    "kappa": jnp.float32(0.5),
    "beta": jnp.float32(0.5),
    "lam": jnp.float32(0.0),
}


def apply_model(params, x):
    return MODEL.apply({"params": params}, x)


def train_a_few_steps(loss_fn, hp, steps=8):
    """Adam steps on the shared tiny model; asserts finite losses and gradients."""
    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    opt = optax.adam(1e-2)
    params, state = PARAMS, opt.init(PARAMS)
    losses = []
    for i in range(steps):
        (loss, metrics), grads = step(params, X, Y, hp, jax.random.PRNGKey(i))
        assert np.isfinite(float(loss))
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
        losses.append(float(loss))
        updates, state = opt.update(grads, state)
        params = optax.apply_updates(params, updates)
    return losses, metrics


def method_loss(name, **overrides):
    cfg = default_config().method
    for k, v in overrides.items():
        cfg[k] = v
    return methods.make_loss(name, apply_model, 3, cfg)
