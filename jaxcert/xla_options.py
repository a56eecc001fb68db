"""XLA compiler options for jaxcert's own compiled programs.

On a CPU, XLA hands convolutions to YNNPACK fusions by default; on the DM models
those run 1.5-2.2x slower than XLA's own convolutions (DM-medium natural training step
at batch 64 on 2 cores: 68 -> 31 ms; IBP step 1.3-1.5x and CROWN-IBP step 1.2x faster
with them off). jaxcert's training, validation and certification steps compile with
:func:`compiler_options`; pass it to your own ``jax.jit`` to get the same programs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["CPU_COMPILER_OPTIONS", "compiler_options", "jit"]

CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _cpu_options_supported() -> bool:
    """Whether this jaxlib knows the CPU options (older ones reject unknown flags)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(
            jnp.zeros(())
        ).compile()
    except Exception:  # noqa: BLE001 - any rejection means: compile without them
        return False
    return True


def compiler_options(platform: str | None = None) -> dict[str, str] | None:
    """The ``compiler_options`` for ``jax.jit`` on ``platform`` (default: JAX's default
    backend): :data:`CPU_COMPILER_OPTIONS` on a CPU whose jaxlib has them, else None.

    Example:
      >>> step = jax.jit(lambda x: x * 2, compiler_options=compiler_options("gpu"))
      >>> compiler_options("gpu") is None
      True
    """
    if (platform or jax.default_backend()) != "cpu" or not _cpu_options_supported():
        return None
    return dict(CPU_COMPILER_OPTIONS)


def jit(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``jax.jit(fn, **kwargs)`` with :func:`compiler_options` for the default backend.

    Example:
      >>> double = jit(lambda x: x * 2)
      >>> float(double(jnp.float32(3.0)))
      6.0
    """
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)
