"""The one typed doorway to numba — and the reason importing a kernel module costs no numba.

numba's decorators are untyped, so ``mypy --strict`` would flag every kernel that uses them.
Wrapping them here, once, keeps ``type: ignore`` out of the kernel modules and fixes the
project's compile options in one place (docs/dev/kernels.md):

* ``cache=True`` — compiled machine code is kept in ``__pycache__`` (or ``NUMBA_CACHE_DIR``),
  so a daemon restart loads kernels instead of recompiling them;
* ``nogil=True`` — a kernel called from a worker thread does not stall the asyncio loop;
* never ``parallel=True`` — a Raspberry Pi class gateway has four slow cores and the daemon
  has other work to do on them.

**numba is imported on the first call of a compiled kernel, not on import.** Importing numba
costs about 70 MB of RSS (measured: ``import edge_rules.vee_engine`` 98 MB with an eager import,
see docs/vee.md), and a small gateway runs the VEE rules through their NumPy twins, which never
need it (issue 3's memory goal: 200 meters ≤ 114 MiB). Until then :func:`njit` hands out a
:class:`LazyKernel`; the first call of any of them compiles-on-demand *every* kernel declared so
far and rebinds the module globals to the real dispatchers, because numba resolves the kernels a
kernel calls from its module's globals when it compiles it and cannot call a Python object.

**Compiled ahead of time** (:mod:`edge_rules.aot`, ``make aot``): when the kernels were built
into an extension module from these very sources, "compiling" a kernel means picking up its
variants from that module, and numba is never imported (about 150 MB of RSS less). Arguments no
variant takes switch every kernel to the JIT below, so the two never mix.

**Without numba** (no wheels for 32-bit ARM, so the install skips it there: pyproject's
environment marker; or an import that fails for any other reason) nothing breaks: the first call
logs one warning, and every kernel runs as its NumPy twin where it has one (the tests prove them
equal) and otherwise as its own Python function, uncompiled — the same results, slower
(docs/install.md gives the figures). :func:`numba_available` tells which.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["LazyKernel", "njit", "numba_available", "numba_loaded", "use_numpy_twins"]

log = logging.getLogger(__name__)

_lock = threading.RLock()
_pending: list[LazyKernel] = []
#: Every kernel declared, in declaration order (the AOT build and its tests walk them).
_declared: list[LazyKernel] = []
_active = False
_twins = False
#: True once every kernel runs through numba's JIT (an AOT variant was missing for a call).
_jit_forced = False
#: None until the first compile; then whether numba could be imported.
_numba_ok: bool | None = None


def numba_available() -> bool:
    """Whether numba can be imported here (imports it once to find out)."""
    global _numba_ok
    if _numba_ok is None:
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            _numba_ok = False
            log.warning("numba is not available (%s): the rule kernels run as their NumPy twins "
                        "or as plain Python, with the same results, slower (docs/install.md)", exc)
        else:
            _numba_ok = True
    return _numba_ok


def _compile(function: Callable[..., Any]) -> Any:
    """``function``'s ahead-of-time variants when built (:mod:`edge_rules.aot`), else numba's
    dispatcher, or without numba its twin or the function itself."""
    if not _jit_forced:
        from edge_rules.aot import aot_kernel

        aot = aot_kernel(function, lambda: _force_jit(function))
        if aot is not None:
            return aot
    if not numba_available():
        return _uncompiled(function)
    import numba

    return numba.njit(cache=True, nogil=True)(function)


def _uncompiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """What runs a kernel when numba cannot: its NumPy twin or the function itself."""
    return _twin_of(function) or function


def _twin_of(function: Callable[..., Any]) -> Callable[..., Any] | None:
    """The kernel's NumPy twin by the project's naming rule (``x_nb`` → ``x_np`` in the same
    module, docs/dev/kernels.md) when it takes the same parameters, or None (a twin with another
    calling convention is not a drop-in)."""
    name = getattr(function, "__name__", "")
    if not name.endswith("_nb"):
        return None
    twin = function.__globals__.get(name[:-3] + "_np")
    if (callable(twin) and not isinstance(twin, LazyKernel)
            and list(inspect.signature(twin).parameters)
            == list(inspect.signature(function).parameters)):
        return cast(Callable[..., Any], twin)
    return None


class LazyKernel:
    """A kernel whose numba dispatcher is made on first use. ``py_func`` is the Python source
    function (as on a numba dispatcher); other attributes are the dispatcher's."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.py_func = function
        functools.update_wrapper(self, function, updated=())  # name, doc, module, __wrapped__
        self._dispatcher: Any = None
        self._twin: Callable[..., Any] | bool | None = None  # None: not looked up; False: none

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dispatcher = self._dispatcher
        if dispatcher is None:
            if _twins:
                twin = self.twin()
                if twin is not None:
                    return twin(*args, **kwargs)
            _activate()
            dispatcher = self._dispatcher
        return dispatcher(*args, **kwargs)

    def twin(self) -> Callable[..., Any] | None:
        """The kernel's NumPy twin (:func:`_twin_of`), or None (then the kernel is compiled even
        in twin mode)."""
        if self._twin is None:
            self._twin = _twin_of(self.py_func) or False
        return self._twin if callable(self._twin) else None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._dispatcher is None:
            _activate()
        return getattr(self._dispatcher, name)


def _activate() -> None:
    """Compile-on-demand every pending kernel and put the dispatchers into their modules."""
    global _active
    with _lock:
        _active = True
        for kernel in _pending:
            if kernel._dispatcher is None:
                kernel._dispatcher = _compile(kernel.py_func)
            namespace = kernel.py_func.__globals__
            if namespace.get(kernel.__name__) is kernel:
                namespace[kernel.__name__] = kernel._dispatcher
        _pending.clear()


def _force_jit(function: Callable[..., Any]) -> Any:
    """Put every kernel on numba's JIT (or its fallback) and return ``function``'s dispatcher: an
    ahead-of-time kernel met arguments none of its variants takes. All of them, because numba
    compiles a kernel against the kernels it calls, found in its module's globals, and cannot
    call an :class:`~edge_rules.aot.AotKernel`."""
    global _jit_forced
    from edge_rules.aot import AotKernel

    with _lock:
        _jit_forced = True
        for kernel in _declared:
            current = kernel._dispatcher
            if current is None or isinstance(current, AotKernel):
                kernel._dispatcher = _compile(kernel.py_func)
                if isinstance(current, AotKernel):
                    current.jit = kernel._dispatcher
            namespace = kernel.py_func.__globals__
            if namespace.get(kernel.__name__) in (kernel, current):
                namespace[kernel.__name__] = kernel._dispatcher
        return next(k._dispatcher for k in _declared if k.py_func is function)


def use_numpy_twins(enabled: bool) -> None:
    """Run every kernel that has a NumPy twin through the twin, never loading numba — for a
    process (the daemon of a small gateway) whose memory matters more than kernel speed. The
    twins are proven equal to the kernels by the tests. Takes effect for kernels not compiled
    yet: once numba is loaded (a kernel without a twin was called, or the switch was off), the
    compiled kernels stay in use."""
    global _twins
    _twins = enabled


def numba_loaded() -> bool:
    """Whether numba has been imported in this process (memory checks, tests)."""
    return "numba" in sys.modules


def njit(function: F) -> F:
    """Compile ``function`` lazily with the project's options, keeping its Python signature
    for type checkers (the compiled dispatcher accepts the same arguments)."""
    with _lock:
        kernel = LazyKernel(function)
        _declared.append(kernel)
        if _active:
            kernel._dispatcher = _compile(function)
            return cast(F, kernel._dispatcher)
        _pending.append(kernel)
        return cast(F, kernel)
