"""How well the margin domains approximate a sound verifier (SingleProp §4.1).

SingleProp assumes a verifier's interval midpoints ``(z_U + z_L)/2`` are close to the
nominal activations ``z_nom``. Its two metrics measure that assumption over every
activation input of the network; a third measures the margin itself against the
verifier's half-gap.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcert.bound_methods import Crown, Method
from jaxcert.bounds import TracedNetwork
from jaxcert.domains import margins as margins_lib
from jaxcert.graph import evaluate
from jaxcert.sets import InputSet

Array = jax.Array

__all__ = ["approximation_error"]


def approximation_error(
    fn: Callable[[Array], Array],
    input_set: InputSet,
    reference: str | Method = Crown(relaxation="fastlin"),
    margin_method: str | margins_lib.MarginMethod = "singleprop-fastlin",
) -> dict[str, Array]:
    """SingleProp's approximation-error metrics for ``fn`` on ``input_set``.

    Over every activation input ``j`` of every layer, with ``[z_L, z_U]`` the sound
    bounds of ``reference`` (a :func:`jaxcert.bound` method) and ``r`` the margin of
    ``margin_method``:

    * ``metric1``: mean of ``|z_nom - (z_U + z_L)/2|`` (SingleProp's metric 1);
    * ``metric2``: mean of ``|z_nom - (z_U + z_L)/2| / (z_U - z_L)`` (metric 2;
      neurons with ``z_U = z_L`` contribute 0);
    * ``half_gap_error = sum |r - (z_U - z_L)/2| / sum (z_U - z_L)/2``: how far the
      margin is from the verifier's half-gap, relative to it.

    The paper writes metrics 1 and 2 as sums over neurons; these are means over
    neurons and examples, so that networks of different widths compare. Returns scalars.

    Example:
      >>> fn = lambda x: jax.nn.relu(x @ jnp.ones((2, 3))) @ jnp.ones((3, 2))
      >>> m = approximation_error(fn, jaxcert.LinfBall(jnp.ones((1, 2)), 0.1))
      >>> float(m["metric1"]), float(m["half_gap_error"])  # stable ReLUs: exact
      (0.0, 0.0)
    """
    net = TracedNetwork(fn, input_set)
    b = net.bound(reference, return_intermediate=True, bound_upper=True)
    approx = margins_lib.margins(fn, input_set, margin_method, return_intermediate=True)
    graph = net.graph
    values = evaluate(graph, input_set.nominal().astype(net.dtype))
    metric1 = metric2 = gap_error = gap_total = jnp.zeros(())
    count = 0
    for node in graph.activations:
        name = node.name or f"node_{node.index}"
        ref = b.intermediate[name]  # type: ignore[index]
        z = values[node.inputs[0]]
        lo, hi = approx.intermediate[name]  # type: ignore[index]
        mid, gap = (ref.upper + ref.lower) / 2, ref.upper - ref.lower
        off = jnp.abs(z - mid)
        metric1 = metric1 + jnp.sum(off)
        metric2 = metric2 + jnp.sum(jnp.where(gap > 0, off / jnp.where(gap > 0, gap, 1), 0))
        gap_error = gap_error + jnp.sum(jnp.abs((hi - lo) / 2 - gap / 2))
        gap_total = gap_total + jnp.sum(gap / 2)
        count += z.size
    return {
        "metric1": metric1 / max(count, 1),
        "metric2": metric2 / max(count, 1),
        "half_gap_error": jnp.where(gap_total > 0, gap_error / jnp.maximum(gap_total, 1e-30), 0),
    }
