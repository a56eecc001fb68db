"""XLA compiler options for jaxcert's compiled programs."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxcert
from jaxcert import xla_options


def test_cpu_options_only_on_a_cpu():
    assert xla_options.compiler_options("gpu") is None
    assert xla_options.compiler_options("tpu") is None
    cpu = xla_options.compiler_options("cpu")
    # This jaxlib has the flag (the pinned range does); an older one would give None.
    assert cpu == xla_options.CPU_COMPILER_OPTIONS
    cpu["xla_cpu_experimental_ynn_fusion_type"] = "changed"  # a copy: no shared state
    assert xla_options.compiler_options("cpu") == xla_options.CPU_COMPILER_OPTIONS


def test_jit_compiles_the_same_numbers_and_passes_jit_arguments():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))

    def conv_bound(x, w, method):
        fn = lambda z: jax.lax.conv_general_dilated(  # noqa: E731
            z, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jaxcert.bound(fn, jaxcert.LinfBall(x, 0.1), method).lower

    ours = xla_options.jit(conv_bound, static_argnums=2)(x, w, "crown-ibp")
    plain = jax.jit(conv_bound, static_argnums=2)(x, w, "crown-ibp")
    np.testing.assert_allclose(ours, plain, rtol=1e-5, atol=1e-5)
    text = xla_options.jit(conv_bound, static_argnums=2).lower(x, w, "ibp").as_text()
    assert "conv" in text
    assert jnp.all(jnp.isfinite(ours))
