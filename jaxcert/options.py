"""Option objects and their registries, shared by bound and margin methods.

A method is a small frozen dataclass holding only its own options (as optax's
transformations hold only their hyper-parameters). :class:`Registry` maps names to
default objects; :meth:`Registry.resolve` turns a name (or an object) plus keyword
options into an object with ``dataclasses.replace``, and refuses an option the object
does not have with a :class:`TypeError` that lists the ones it has: no option is ever
dropped silently.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

__all__ = ["option_names", "with_options", "Registry"]

T = TypeVar("T")


def option_names(obj: Any) -> tuple[str, ...]:
    """The options (init fields) of a method object, in declaration order.

    Example:
      >>> option_names(jaxcert.Crown())
      ('relaxation', 'slopes', 'chunk_size', 'intersect_ibp', 'screen_ibp')
    """
    return tuple(f.name for f in dataclasses.fields(obj) if f.init)


def with_options(obj: T, **options: Any) -> T:
    """``obj`` with ``options`` replaced; :class:`TypeError` for an option it lacks.

    Example:
      >>> with_options(jaxcert.Crown(), chunk_size=64).chunk_size
      64
      >>> with_options(jaxcert.IBP(), steps=5)
      Traceback (most recent call last):
      ...
      TypeError: IBP has no option 'steps'; its options: none
    """
    names = option_names(obj)
    unknown = [k for k in options if k not in names]
    if unknown:
        listed = ", ".join(names) if names else "none"
        raise TypeError(f"{type(obj).__name__} has no option {unknown[0]!r}; its options: {listed}")
    return dataclasses.replace(obj, **options) if options else obj  # type: ignore[type-var]


class Registry(Generic[T]):
    """Names -> default method objects of one base type ``kind``.

    Example:
      >>> r = Registry("demo method", jaxcert.Method)
      >>> r.register("fastlin-ibp", jaxcert.CrownIBP(relaxation="fastlin"))
      >>> r.resolve("fastlin-ibp", chunk_size=8)
      CrownIBP(relaxation='fastlin', slopes=None, chunk_size=8)
    """

    def __init__(self, what: str, kind: type):
        self.what, self.kind = what, kind
        self._defaults: dict[str, T] = {}
        self.defaults: Mapping[str, T] = types.MappingProxyType(self._defaults)

    def register(self, name: str, default: T, *, override: bool = False) -> None:
        """Makes ``name`` resolve to ``default``; a name is registered once unless
        ``override`` (e.g. a notebook cell run again)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")
        if not isinstance(default, self.kind):
            raise TypeError(
                f"a {self.what} must be a {self.kind.__name__}, got {type(default).__name__}"
            )
        if name in self._defaults and not override:
            raise ValueError(
                f"{self.what} {name!r} is already registered (override=True replaces it)"
            )
        self._defaults[name] = default

    def resolve(self, method: str | T, **options: Any) -> T:
        """The object for a name or an object, with ``options`` applied."""
        if isinstance(method, str):
            if method not in self._defaults:
                raise ValueError(
                    f"unknown {self.what} {method!r}; expected one of {tuple(self._defaults)}"
                )
            method = self._defaults[method]
        elif not isinstance(method, self.kind):
            raise TypeError(
                f"a {self.what} is a name or a {self.kind.__name__}, got {type(method).__name__}"
            )
        return with_options(method, **options)
