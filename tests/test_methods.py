"""Training methods: finite losses that decrease, and their defining properties."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcert import methods
from jaxcert.config import default_config
from jaxcert.domains.margins import MARGIN_METHODS
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


def _apply(params, x):
    return MODEL.apply({"params": params}, x)


def _train_a_few_steps(loss_fn, hp, steps=8):
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


def _loss(name, **overrides):
    cfg = default_config().method
    for k, v in overrides.items():
        cfg[k] = v
    return methods.make_loss(name, _apply, 3, cfg)


@pytest.mark.parametrize(
    "name", ["natural", "pgd", "ibp", "crown-ibp", "crown-ibp-opt", "cap-ibp", "crown", "fastlin"]
)
def test_loss_is_finite_and_decreases_over_a_few_steps(name):
    losses, metrics = _train_a_few_steps(_loss(name, pgd_steps=3), HP)
    assert losses[-1] < losses[0], (name, losses)
    assert 0 <= float(metrics["clean_acc"]) <= 1


def test_ibp_robust_loss_is_at_least_the_natural_loss():
    hp = dict(HP, kappa=jnp.float32(0.0))
    robust, _ = _loss("ibp")(PARAMS, X, Y, hp, jax.random.PRNGKey(0))
    natural, _ = _loss("natural")(PARAMS, X, Y, hp, jax.random.PRNGKey(0))
    assert float(robust) >= float(natural) - 1e-6
    zero_eps, _ = _loss("ibp")(PARAMS, X, Y, dict(hp, eps=jnp.float32(0.0)), jax.random.PRNGKey(0))
    np.testing.assert_allclose(zero_eps, natural, rtol=1e-5)  # eps=0: bounds are the logits


def test_kappa_one_is_the_natural_loss_and_beta_zero_is_ibp():
    key = jax.random.PRNGKey(0)
    natural, _ = _loss("natural")(PARAMS, X, Y, HP, key)
    k1, _ = _loss("crown-ibp")(PARAMS, X, Y, dict(HP, kappa=jnp.float32(1.0)), key)
    np.testing.assert_allclose(k1, natural, rtol=1e-6)
    b0, _ = _loss("crown-ibp")(PARAMS, X, Y, dict(HP, beta=jnp.float32(0.0)), key)
    ibp, _ = _loss("ibp")(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(b0, ibp, rtol=1e-6)


def test_unknown_method_and_duplicate_registration_raise():
    with pytest.raises(ValueError, match="unknown method"):
        methods.make_loss("magic", _apply, 3, default_config().method)
    with pytest.raises(ValueError, match="already registered"):
        methods.register("ibp")(lambda *a: None)


def test_static_use_linear_false_skips_the_linear_bound():
    key = jax.random.PRNGKey(0)
    loss_fn = _loss("crown-ibp")
    skipped, _ = loss_fn(PARAMS, X, Y, dict(HP, use_linear=False), key)
    ibp, _ = _loss("ibp")(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(skipped, ibp, rtol=1e-6)

    def program_size(use_linear):
        hp = dict(HP, use_linear=use_linear)
        return len(str(jax.make_jaxpr(lambda p: loss_fn(p, X, Y, hp, key))(PARAMS)))

    assert program_size(False) < 0.75 * program_size(True)


def test_loss_fusion_trains_on_the_fused_bound_and_is_ibp_at_beta_zero():
    from jaxcert.loss_fusion import fused_cross_entropy_bound
    from jaxcert.sets import LinfBall

    key = jax.random.PRNGKey(0)
    fused_loss = _loss("crown-ibp", loss_fusion=True)
    losses, metrics = _train_a_few_steps(fused_loss, HP)
    assert losses[-1] < losses[0]
    assert 0 <= float(metrics["verified_acc"]) <= 1
    _, metrics = fused_loss(PARAMS, X, Y, HP, key)
    s = LinfBall(X, HP["eps"], clip=(0.0, 1.0))
    want = fused_cross_entropy_bound(lambda z: _apply(PARAMS, z), s, Y, 3, "crown-ibp", 0.5)
    np.testing.assert_allclose(metrics["robust_loss"], jnp.mean(want.upper), rtol=1e-5)
    b0, _ = fused_loss(PARAMS, X, Y, dict(HP, beta=jnp.float32(0.0)), key)
    ibp, _ = _loss("ibp")(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(b0, ibp, rtol=1e-5)
    with pytest.raises(ValueError, match="loss_fusion"):
        _loss("crown-ibp-opt", loss_fusion=True)


REGULARIZED = [*MARGIN_METHODS, "ibp-reg"]
TIGHT = ["crown-ibp-tight", "crown-tight", "fastlin-tight"]


@pytest.mark.parametrize("name", REGULARIZED + TIGHT)
def test_regulariser_methods_train(name):
    hp = dict(HP, lam=jnp.float32(0.5))
    losses, metrics = _train_a_few_steps(_loss(name, tight_d=0.1, tight_r=0.1), hp)
    assert losses[-1] < losses[0], (name, losses)
    if name in TIGHT:
        assert float(metrics["tight_d"]) >= -1e-5 and float(metrics["tight_r"]) >= 0


@pytest.mark.parametrize("name", REGULARIZED)
def test_regulariser_loss_is_natural_plus_lambda_times_r(name):
    key = jax.random.PRNGKey(0)
    natural, _ = _loss("natural")(PARAMS, X, Y, HP, key)
    at_zero, m0 = _loss(name)(PARAMS, X, Y, dict(HP, lam=jnp.float32(0.0)), key)
    np.testing.assert_allclose(at_zero, natural, rtol=1e-5)
    at_half, m = _loss(name)(PARAMS, X, Y, dict(HP, lam=jnp.float32(0.5)), key)
    np.testing.assert_allclose(at_half, natural + 0.5 * m["regularizer"], rtol=1e-5)
    assert float(m["regularizer"]) > 0  # eps > 0 widens the range


def test_ibp_regulariser_bounds_the_adversarial_loss():
    # DoubleMargin Table 1: L + R with IBP is an upper bound of the loss at any point of
    # the ball; check at a PGD point.
    from jaxcert.attacks import pgd
    from jaxcert.losses import cross_entropy

    hp = dict(HP, lam=jnp.float32(1.0))
    total, _ = _loss("ibp-reg")(PARAMS, X, Y, hp, jax.random.PRNGKey(0))
    fn = lambda z: _apply(PARAMS, z)  # noqa: E731
    x_adv = pgd(fn, X, Y, 0.05, steps=10, key=jax.random.PRNGKey(1), clip=(0.0, 1.0))
    assert float(total) >= float(cross_entropy(fn(x_adv), Y)) - 1e-5


def test_penalties_add_to_any_method():
    from jaxcert.methods.penalties import l1_norm

    key = jax.random.PRNGKey(0)
    base, _ = _loss("pgd", pgd_steps=2)(PARAMS, X, Y, HP, key)
    both, m = _loss("pgd", pgd_steps=2, rs_weight=0.01, l1_weight=1e-3)(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(
        both, base + 0.01 * m["relu_stability"] + 1e-3 * l1_norm(PARAMS), rtol=1e-5
    )
    assert float(m["relu_stability"]) < 0 and float(m["l1"]) > 0


def test_relu_stability_rewards_stable_neurons():
    import jaxcert
    from jaxcert.methods.penalties import relu_stability

    def fn(x):
        return jax.nn.relu(x)

    x = jnp.array([[0.0, 2.0]])
    # [-1, 1] gives -tanh(1 - 1) = 0; [1, 3] gives -tanh(4).
    np.testing.assert_allclose(
        relu_stability(fn, jaxcert.LinfBall(x, 1.0)), -np.tanh(4.0), rtol=1e-6
    )


@pytest.mark.parametrize("name", ["bcp", "lmt"])
def test_lipschitz_methods_train_and_update_their_power_iteration_state(name):
    loss_fn = _loss(name, norm="l2", bcp_solver_iters=3)
    state = loss_fn.init_method_state(PARAMS, X, jax.random.PRNGKey(0))
    assert state and all(np.isfinite(np.asarray(v)).all() for v in state.values())
    hp = dict(HP, eps=jnp.float32(0.3), method_state=state)
    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    opt = optax.adam(1e-2)
    params, opt_state = PARAMS, opt.init(PARAMS)
    losses = []
    for i in range(8):
        (loss, metrics), grads = step(params, X, Y, hp, jax.random.PRNGKey(i))
        new_state = metrics.pop("method_state")
        assert set(new_state) == set(state)
        hp = dict(hp, method_state=new_state)
        losses.append(float(loss))
        updates, opt_state = opt.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
    assert losses[-1] < losses[0], losses
    assert any(
        not np.allclose(state[k], new_state[k]) for k in state
    )  # the vectors follow the weights
