"""Tests of jaxcert.attacks: FGSM, PGD, EOT-PGD and adversarial accuracy on tiny models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcert.attacks import adversarial_accuracy, eot_pgd, fgsm, pgd

BATCH, DIM, HIDDEN, CLASSES = 32, 6, 16, 3

# Reference computations are in numpy: eager jnp ops would each compile on first use.
_RNG = np.random.default_rng(0)


class Model:
    """A tiny network: ``fn`` (jnp, attacked) and ``np_fn`` (numpy, for references)."""

    def __init__(self, fn, np_fn):
        self.fn, self.np_fn = fn, np_fn


def _linear(num_classes: int) -> tuple[np.ndarray, np.ndarray, Model]:
    w = _RNG.normal(size=(DIM, num_classes)).astype(np.float32)
    b = (0.1 * _RNG.normal(size=num_classes)).astype(np.float32)
    return w, b, Model(lambda x: x @ w + b, lambda x: x @ w + b)


def _mlp(seed: int = 5) -> Model:
    # Large weights and biases: many ReLUs switch inside the eps-balls, so the loss is
    # far from linear there and PGD has something to gain over FGSM.
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(DIM, HIDDEN)) * 4 / np.sqrt(DIM)).astype(np.float32)
    b1 = rng.normal(size=HIDDEN).astype(np.float32)
    w2 = (rng.normal(size=(HIDDEN, CLASSES)) * 4 / np.sqrt(HIDDEN)).astype(np.float32)
    return Model(lambda x: jax.nn.relu(x @ w1 + b1) @ w2, lambda x: np.maximum(x @ w1 + b1, 0) @ w2)


# Shared model objects: attacks compile once per (fn, settings), so the tests reuse them.
W2, B2, LINEAR2 = _linear(2)
W3, B3, LINEAR3 = _linear(CLASSES)
NET = _mlp()
MLP = NET.fn
KEY = jax.random.PRNGKey(3)
STEPS = 10


def _mlp_random(x, key):  # the MLP as a "randomised" network that ignores its key
    return MLP(x)


def _data(low: float = 0.0, high: float = 1.0, seed: int = 2, labelled_by: Model = NET):
    """Inputs uniform in ``[low, high]`` with the labels ``labelled_by`` predicts, but
    for the first 4 examples (misclassified on purpose)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=(BATCH, DIM)).astype(np.float32)
    logits = labelled_by.np_fn(x)
    y = np.argmax(logits, axis=1).astype(np.int32)
    y[:4] = (y[:4] + 1) % logits.shape[1]
    return x, y


def _ce(model: Model, x, y) -> np.ndarray:
    z = model.np_fn(np.asarray(x, np.float64))
    z = z - z.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]


def _margin(model: Model, x, y) -> np.ndarray:
    z = model.np_fn(np.asarray(x, np.float64))
    true = z[np.arange(len(y)), y]
    z[np.arange(len(y)), y] = -np.inf
    return z.max(axis=1) - true


def _accuracy(model: Model, x, y) -> float:
    return float(np.mean(np.argmax(model.np_fn(np.asarray(x)), axis=1) == y))


def _assert_feasible(x_adv, x, eps, norm, clip=(0.0, 1.0)):
    eps = np.broadcast_to(np.asarray(eps, np.float32), (x.shape[0],))
    x_adv = np.asarray(x_adv)
    delta = x_adv - x
    if norm == "linf":
        assert np.all(np.abs(delta).max(axis=1) <= eps + 1e-6)
    else:
        assert np.all(np.linalg.norm(delta, axis=1) <= eps * (1 + 1e-5) + 1e-7)
    if clip is not None:
        assert np.all(x_adv >= clip[0]) and np.all(x_adv <= clip[1])


# --------------------------------------------------------------------------- feasibility


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attacks_stay_in_ball_and_box(norm):
    x, y = _data()  # x fills [0, 1]: the box binds for many coordinates
    eps = 0.3 if norm == "linf" else 0.6
    _assert_feasible(fgsm(MLP, x, y, eps, norm=norm), x, eps, norm)
    _assert_feasible(pgd(MLP, x, y, eps, steps=STEPS, norm=norm, key=KEY), x, eps, norm)
    # Per-example radii, a zero radius included.
    eps_b = np.linspace(0.0, eps, BATCH, dtype=np.float32)
    x_adv = pgd(MLP, x, y, eps_b, steps=STEPS, norm=norm, key=KEY)
    _assert_feasible(x_adv, x, eps_b, norm)
    np.testing.assert_array_equal(np.asarray(x_adv)[0], x[0])
    if norm == "linf":  # no box: only the ball constrains
        x_adv = pgd(MLP, x, y, eps, steps=STEPS, norm=norm, key=KEY, clip=None)
        _assert_feasible(x_adv, x, eps, norm, clip=None)
        assert np.asarray(x_adv).min() < 0.0 or np.asarray(x_adv).max() > 1.0


# --------------------------------------------------------------------------- optimality


def _pair_worst_margins(w, b, x, y, eps, dual_norm):
    """``max_delta z_j - z_y = (w_j - w_y) x + b_j - b_y + eps ||w_j - w_y||_*`` per pair
    (batch, classes), ``-inf`` at ``j = y``: for linf the maximiser is
    ``delta = -eps * sign(w_y - w_j)``, for l2 ``eps (w_j - w_y) / ||w_j - w_y||_2``."""
    w, b, x = (np.asarray(a, np.float64) for a in (w, b, x))
    diff = w.T[None, :, :] - w.T[y][:, None, :]  # (batch, j, dim): w_j - w_y
    pair = np.einsum("bjd,bd->bj", diff, x) + (b[None, :] - b[y][:, None])
    pair = pair + eps * dual_norm(diff)
    pair[np.arange(len(y)), y] = -np.inf
    return pair


def test_pgd_reaches_linear_worst_case_linf():
    eps = 0.1
    kw = dict(steps=20, restarts=3, loss="margin", key=KEY)
    l1 = lambda d: np.abs(d).sum(-1)  # noqa: E731

    # Two classes, a single pair: PGD (and FGSM) attain the analytic worst case.
    x, y = _data(0.2, 0.8, seed=4, labelled_by=LINEAR2)  # the box never binds
    analytic = _pair_worst_margins(W2, B2, x, y, eps, l1).max(axis=1)
    x_adv = pgd(LINEAR2.fn, x, y, eps, **kw)
    np.testing.assert_allclose(_margin(LINEAR2, x_adv, y), analytic, atol=1e-4)
    np.testing.assert_allclose(x_adv, x + eps * np.sign(W2.T[1 - y] - W2.T[y]), atol=1e-6)
    x_fgsm = fgsm(LINEAR2.fn, x, y, eps)
    np.testing.assert_allclose(_margin(LINEAR2, x_fgsm, y), analytic, atol=1e-4)

    # Three classes: max_j of linear functions is not concave, so PGD may settle on a
    # pair j other than the global best; for the pair it settles on it is exact (and
    # the perturbation is the pair's optimal vertex), and it is never above the optimum.
    x, y = _data(0.2, 0.8, seed=4, labelled_by=LINEAR3)
    pairs = _pair_worst_margins(W3, B3, x, y, eps, l1)
    x_adv = np.asarray(pgd(LINEAR3.fn, x, y, eps, **kw))
    got = _margin(LINEAR3, x_adv, y)
    z = LINEAR3.np_fn(x_adv)
    z[np.arange(BATCH), y] = -np.inf
    j = np.argmax(z, axis=1)
    np.testing.assert_allclose(got, pairs[np.arange(BATCH), j], atol=1e-4)
    np.testing.assert_allclose(x_adv, x + eps * np.sign(W3.T[j] - W3.T[y]), atol=1e-6)
    assert np.all(got <= pairs.max(axis=1) + 1e-4)
    assert np.mean(np.abs(got - pairs.max(axis=1)) < 1e-4) >= 0.9


def test_pgd_reaches_linear_worst_case_l2():
    eps = 0.2
    x, y = _data(0.3, 0.7, seed=6, labelled_by=LINEAR2)  # the box never binds
    l2 = lambda d: np.linalg.norm(d, axis=-1)  # noqa: E731
    analytic = _pair_worst_margins(W2, B2, x, y, eps, l2).max(axis=1)
    # From a random start, steps of size eps halve the angle to the optimum each time.
    kw = dict(steps=20, step_size=eps, norm="l2", loss="margin", key=KEY)
    x_adv = pgd(LINEAR2.fn, x, y, eps, **kw)
    np.testing.assert_allclose(_margin(LINEAR2, x_adv, y), analytic, atol=1e-4)
    x_fgm = fgsm(LINEAR2.fn, x, y, eps, norm="l2", loss="margin")
    np.testing.assert_allclose(_margin(LINEAR2, x_fgm, y), analytic, atol=1e-4)


def test_loss_ordering_pgd_fgsm_clean_on_mlp():
    x, y = _data()
    eps = 0.2
    clean = _ce(NET, x, y)
    fgsm_loss = _ce(NET, fgsm(MLP, x, y, eps), y)
    pgd_loss = _ce(NET, pgd(MLP, x, y, eps, steps=STEPS, key=KEY), y)
    assert pgd_loss.mean() >= fgsm_loss.mean() >= clean.mean()
    assert pgd_loss.mean() > fgsm_loss.mean() + 0.02 and fgsm_loss.mean() > clean.mean() + 0.5
    # PGD keeps the best point seen, the clean input included: never below clean.
    assert np.all(pgd_loss >= clean - 1e-5)


def test_restarts_never_decrease_the_loss():
    x, y = _data()
    # A weak attack (few small steps), so that the restarts matter. With the margin loss
    # "misclassified first, then highest loss" is the loss order itself.
    kw = dict(steps=3, step_size=0.02, key=KEY, loss="margin")
    one = pgd(MLP, x, y, 0.15, restarts=1, **kw)
    many = pgd(MLP, x, y, 0.15, restarts=4, **kw)
    l1, l4 = _margin(NET, one, y), _margin(NET, many, y)
    assert np.all(l4 >= l1 - 1e-5)
    assert l4.mean() > l1.mean()
    assert np.sum(l4 > 0) >= np.sum(l1 > 0)


def test_adversarial_accuracy_below_clean_accuracy():
    x, y = _data()
    clean = _accuracy(NET, x, y)
    assert clean == pytest.approx(1 - 4 / BATCH)
    kw = dict(steps=STEPS, key=KEY)
    assert float(adversarial_accuracy(MLP, x, y, 0.0, **kw)) == pytest.approx(clean)
    accs = [float(adversarial_accuracy(MLP, x, y, e, **kw)) for e in (0.05, 0.3)]
    assert clean >= accs[0] >= accs[1]
    assert accs[1] < clean
    assert float(adversarial_accuracy(MLP, x, y, 0.5, norm="l2", **kw)) <= clean


# --------------------------------------------------------------------------- EOT, jit, errors


def test_eot_pgd_on_a_randomised_network():
    x, y = _data()

    def noisy(z, k):  # Gaussian input noise, a randomised-smoothing-like defence
        return MLP(z + 0.05 * jax.random.normal(k, z.shape))

    eps = 0.1
    x_adv = eot_pgd(noisy, x, y, eps, key=KEY, samples=8, steps=STEPS)
    _assert_feasible(x_adv, x, eps, "linf")
    assert _ce(NET, x_adv, y).mean() > _ce(NET, x, y).mean() + 0.05


def test_attacks_are_jittable_and_eot_of_a_deterministic_fn_is_pgd():
    x, y = _data()

    @jax.jit
    def attacks(x, y, eps, key):  # traced inputs, per-example radii and key
        return (
            pgd(MLP, x, y, eps, steps=STEPS, key=key),
            eot_pgd(_mlp_random, x, y, eps, key=key, samples=3, steps=STEPS),
            adversarial_accuracy(MLP, x, y, eps, steps=STEPS, key=key),
            fgsm(MLP, x, y, eps),
        )

    x_pgd, x_eot, acc, x_fgsm = attacks(x, y, np.full(BATCH, 0.1, np.float32), KEY)
    eager = pgd(MLP, x, y, 0.1, steps=STEPS, key=KEY)
    np.testing.assert_allclose(x_pgd, eager, atol=1e-6)
    np.testing.assert_allclose(x_eot, eager, atol=1e-6)  # EOT over identical samples
    assert float(acc) == pytest.approx(
        float(adversarial_accuracy(MLP, x, y, 0.1, steps=STEPS, key=KEY))
    )
    np.testing.assert_allclose(x_fgsm, fgsm(MLP, x, y, 0.1), atol=1e-6)


def test_attack_output_is_a_constant_for_weight_gradients():
    """Adversarial training: d/dW CE(f_W(x_adv(W))) is taken at a fixed x_adv."""
    x, y = _data(labelled_by=LINEAR2)

    def ce_at(w, x_adv):
        logits = x_adv @ w
        return jnp.mean(jax.nn.logsumexp(logits, 1) - jnp.take_along_axis(logits, y[:, None], 1))

    @jax.jit
    def training_grads(w):
        def loss(w):
            fn = lambda z: z @ w  # noqa: E731
            x_pgd = pgd(fn, x, y, 0.1, steps=2, key=KEY, norm="l2")
            x_fgsm = fgsm(fn, x, y, 0.1, norm="l2")
            return ce_at(w, x_pgd) + ce_at(w, x_fgsm), (x_pgd, x_fgsm)

        return jax.grad(loss, has_aux=True)(w)

    def ce_grad_at(x_adv):  # numpy: d/dW mean CE(x_adv W, y) = x_adv^T (p - onehot(y)) / B
        x_adv = np.asarray(x_adv, np.float64)
        z = x_adv @ W2
        p = np.exp(z - z.max(1, keepdims=True))
        p = p / p.sum(1, keepdims=True)
        p[np.arange(BATCH), y] -= 1.0
        return x_adv.T @ p / BATCH

    grad, (x_pgd, x_fgsm) = training_grads(W2)
    want = ce_grad_at(x_pgd) + ce_grad_at(x_fgsm)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(norm="l1"), "norm"),
        (dict(loss="hinge"), "loss"),
        (dict(steps=0), "steps"),
        (dict(restarts=0), "restarts"),
        (dict(step_size=-0.1), "step_size"),
        (dict(eps=-0.1), "eps"),
        (dict(eps=np.ones(5)), "eps"),
        (dict(y=np.zeros((BATCH, 1), np.int32)), "y"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    fn = MLP
    x, y = _data()
    args = dict(x=x, y=y, eps=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        pgd(fn, args.pop("x"), args.pop("y"), args.pop("eps"), **args)
    with pytest.raises(ValueError, match="samples"):
        eot_pgd(_mlp_random, x, y, 0.1, key=KEY, samples=0, steps=1)
