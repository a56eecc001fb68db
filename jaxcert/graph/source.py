"""Where the user wrote an operation: the innermost frame outside jaxcert and libraries."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["source_line", "has_user_frame"]

_LIBRARY_DIRS = tuple(
    os.sep + name + os.sep for name in ("jax", "jaxlib", "flax", "optax", "chex", "contextlib")
)
_ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_user_frame(filename: str) -> bool:
    if filename.startswith(_ENGINE_DIR) and os.sep + "models" + os.sep not in filename:
        return False
    return not any(d in filename for d in _LIBRARY_DIRS) and not filename.startswith("<frozen")


def _frames(source_info: Any) -> list[Any]:
    traceback = getattr(source_info, "traceback", None)
    return list(traceback.frames) if traceback is not None else []


def has_user_frame(source_info: Any) -> bool:
    """Whether the source names a frame of the user's code (not JAX's, not jaxcert's)."""
    return any(_is_user_frame(f.file_name) for f in _frames(source_info))


def source_line(source_info: Any) -> str:
    """``file:line (function)`` of the innermost user frame that created an equation.

    Example:
      >>> source_line(None)
      '<unknown source>'
    """
    frames = _frames(source_info)
    for frame in frames:
        if _is_user_frame(frame.file_name):
            return f"{frame.file_name}:{frame.line_num} ({frame.function_name})"
    if frames:
        frame = frames[-1]
        return f"{frame.file_name}:{frame.line_num} ({frame.function_name})"
    return "<unknown source>"
