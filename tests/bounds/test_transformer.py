"""A one-block transformer on token embeddings: attention (two matrix products of
bounded values and a softmax), a residual, layer normalisation and a ReLU head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert

T, D = 4, 6  # tokens, embedding width
_KEYS = jax.random.split(jax.random.PRNGKey(0), 8)
_WQ, _WK, _WV, _WO = (jax.random.normal(k, (D, D)) / jnp.sqrt(D) for k in _KEYS[:4])
_W1 = jax.random.normal(_KEYS[4], (D, 12)) / jnp.sqrt(D)
_W2 = jax.random.normal(_KEYS[5], (12, 3)) / jnp.sqrt(12)
X = jax.random.normal(_KEYS[6], (2, T, D))
EPS = 0.02


def _layer_norm(h):
    mu = h.mean(-1, keepdims=True)
    var = jnp.square(h - mu).mean(-1, keepdims=True)
    return (h - mu) * jax.lax.rsqrt(var + 1e-2)


def block(x):
    """(batch, T, D) token embeddings -> (batch, 3) logits."""
    q, k, v = x @ _WQ, x @ _WK, x @ _WV
    attention = jax.nn.softmax(jnp.einsum("btd,bsd->bts", q, k) / jnp.sqrt(D), axis=-1)
    h = _layer_norm(x + jnp.einsum("bts,bsd->btd", attention, v) @ _WO)
    return jax.nn.relu(h.mean(1) @ _W1) @ _W2


def _sampled_outputs(n=600):
    s = jaxcert.LinfBall(X, EPS)
    points = jnp.concatenate(
        [s.sample(jax.random.PRNGKey(1), n), s.vertices(jax.random.PRNGKey(2), n)]
    )
    return jax.vmap(block)(points)


def test_the_block_traces_into_bilinear_softmax_and_layer_norm_nodes():
    g = jaxcert.graph.trace(block, X.shape, jnp.float32)
    ops = [n.op for n in g.nodes]
    assert ops.count("bilinear") == 2  # scores and the weighted values
    assert "reciprocal" in ops and "rsqrt" in ops and "product" in ops


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "cap-ibp", "crown", "fastlin"])
def test_every_method_bounds_the_block_soundly(method):
    b = jaxcert.bound(jax.jit(block), jaxcert.LinfBall(X, EPS), method)
    values = _sampled_outputs()
    assert np.all(np.asarray(values) >= np.asarray(b.lower) - 1e-5), method
    assert np.all(np.asarray(values) <= np.asarray(b.upper) + 1e-5), method


def test_crown_keeps_the_block_tight_where_intervals_explode():
    # IBP loses the correlations of the attention's products (hundreds wide); CROWN's
    # planes keep them: within a few times the sampled spread.
    s = jaxcert.LinfBall(X, EPS)
    crown, ibp = (jaxcert.bound(block, s, m) for m in ("crown", "ibp"))
    spread = _sampled_outputs()
    spread = float(jnp.mean(spread.max(0) - spread.min(0)))
    width = float(jnp.mean(crown.upper - crown.lower))
    assert width < 10 * spread
    assert float(jnp.mean(ibp.upper - ibp.lower)) > 100 * width


def test_methods_without_rules_for_the_block_refuse_it_by_name():
    s = jaxcert.L2Ball(X, EPS)
    with pytest.raises(jaxcert.UnsupportedOperation, match="bilinear"):
        jaxcert.bound(block, s, "bcp")


def test_margin_methods_refuse_the_block_by_name():
    from jaxcert.domains.margins import margins

    with pytest.raises(jaxcert.UnsupportedOperation, match="bilinear"):
        margins(block, jaxcert.LinfBall(X, EPS), "singleprop-fastlin")
