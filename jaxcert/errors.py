"""Exceptions raised by jaxcert.

Every anticipated failure is a :class:`JaxcertError` whose message says what went wrong
and what to do; the command line prints it in one line and exits non-zero. Each keeps
the builtin base it had (``ValueError``, ``FileNotFoundError``, ...), so code that
caught those still does.
"""

from __future__ import annotations

__all__ = [
    "JaxcertError",
    "UnsupportedOperation",
    "ConfigError",
    "DataError",
    "DataNotFound",
    "CheckpointError",
    "WorkdirLocked",
    "TrainingDiverged",
    "TrainingInterrupted",
]


class JaxcertError(Exception):
    """An anticipated error, with a message that says what and where."""


class UnsupportedOperation(JaxcertError):
    """The traced function uses an operation no bound rule covers.

    The message names the primitive and the user's source line, e.g.
    ``"tan at model.py:12 (MyNet.__call__): no interval rule"``.

    Example:
      >>> try:
      ...     jaxcert.bound(jnp.tan, jaxcert.LinfBall(jnp.zeros((1, 2)), 0.1))
      ... except jaxcert.UnsupportedOperation as e:
      ...     print(e.primitive)
      tan
    """

    def __init__(self, primitive: str, source: str, reason: str):
        self.primitive = primitive
        self.source = source
        self.reason = reason
        super().__init__(f"unsupported operation '{primitive}' at {source}: {reason}")


class ConfigError(JaxcertError, ValueError):
    """An impossible configuration value; the message names the key."""


class DataError(JaxcertError, ValueError):
    """Data that cannot be used as it is (shapes, dtypes, labels, archive contents)."""


class DataNotFound(JaxcertError, FileNotFoundError):
    """The data is not where the config says; the message says how to get it."""


class CheckpointError(JaxcertError, FileNotFoundError):
    """No checkpoint to certify or resume from (none, or none readable)."""


class WorkdirLocked(JaxcertError):
    """Another live run holds the work directory; the message names it."""


class TrainingDiverged(JaxcertError, FloatingPointError):
    """A non-finite or runaway loss (or gradient) stopped training; the message names
    the step and the last good checkpoint."""


class TrainingInterrupted(JaxcertError, KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after the in-flight checkpoint finished; run
    the same command to resume."""
