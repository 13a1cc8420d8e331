"""Building instances of frozen, slotted dataclasses without their ``__init__``, for the few
made for every meter poll.

A frozen dataclass can set its fields only through ``object.__setattr__``: one call per field,
so an 8-field poll result costs 1.48 µs to build against 0.33 µs here (timeit, quiet machine).
:func:`frozen_maker` builds a twin class with the same slots and no freezing, fills it with
plain attribute stores, and makes the object an instance of the real class
(``__class__`` assignment, which CPython allows between classes of the same slot layout). The
result is indistinguishable from the constructor's: same type, fields, equality, hash, repr,
pickling, and it is frozen.

Only for classes without ``__post_init__`` (nothing to check or derive), and every field is
passed, in declaration order, positionally: defaults are not applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def frozen_maker(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of ``cls`` in order and returning the instance (module
    docstring). Raises TypeError for a class it cannot do this for."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__ \
            or hasattr(cls, "__post_init__") or "__dict__" in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass without "
                        "__post_init__")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if sorted(names) != sorted(cls.__slots__):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: fields {names} are not its slots")
    twin = type(f"_{cls.__name__}Fill", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    args = ", ".join(names)
    body = "".join(f"    o.{name} = {name}\n" for name in names)
    source = f"def make({args}):\n    o = _twin()\n{body}    o.__class__ = _cls\n    return o\n"
    namespace: dict[str, Any] = {"_twin": twin, "_cls": cls}
    exec(source, namespace)
    make: Callable[..., T] = namespace["make"]
    make.__qualname__ = f"frozen_maker({cls.__name__})"
    return make
