"""Reading a training method's options from its config section."""

from __future__ import annotations

from typing import Any

__all__ = ["config_value", "clip_range", "pgd_step_size"]


def config_value(config: Any, key: str, default: Any) -> Any:
    """``config[key]`` when the method's config section has it, else ``default``.

    Example:
      >>> config_value({"pgd_steps": 3}, "pgd_steps", 7), config_value(None, "pgd_steps", 7)
      (3, 7)
    """
    return config.get(key, default) if hasattr(config, "get") else default


def clip_range(config: Any) -> tuple[float, float]:
    """The valid input range ``(clip_min, clip_max)`` (default ``(0, 1)``: pixels).

    Example:
      >>> clip_range({"clip_max": 255.0})
      (0.0, 255.0)
    """
    return (
        float(config_value(config, "clip_min", 0.0)),
        float(config_value(config, "clip_max", 1.0)),
    )


def pgd_step_size(config: Any) -> float | None:
    """The training attack's fixed step (``pgd_step_size``), or None for the default rule
    (0 or absent: each method's ``... eps / steps``).

    Example:
      >>> pgd_step_size({"pgd_step_size": 0.01}), pgd_step_size({"pgd_step_size": 0.0})
      (0.01, None)
    """
    step = float(config_value(config, "pgd_step_size", 0.0) or 0.0)
    return step if step > 0 else None
