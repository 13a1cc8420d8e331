"""The one typed doorway to numba.

numba's decorators are untyped, so ``mypy --strict`` would flag every kernel that uses them.
Wrapping them here, once, keeps ``type: ignore`` out of the kernel modules and fixes the
project's compile options in one place (docs/dev/kernels.md):

* ``cache=True`` — compiled machine code is kept in ``__pycache__`` (or ``NUMBA_CACHE_DIR``),
  so a daemon restart loads kernels instead of recompiling them;
* ``nogil=True`` — a kernel called from a worker thread does not stall the asyncio loop;
* never ``parallel=True`` — a Raspberry Pi class gateway has four slow cores and the daemon
  has other work to do on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["njit"]


def njit(function: F) -> F:
    """Compile ``function`` lazily with the project's options, keeping its Python signature
    for type checkers (the compiled dispatcher accepts the same arguments)."""
    return cast(F, numba.njit(cache=True, nogil=True)(function))
