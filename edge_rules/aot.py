"""The rule kernels compiled ahead of time: numba's machine code without numba in the daemon.

Why: ``import numba`` maps LLVM and numba's compiler into the process — about 150 MB of RSS in a
bare interpreter, most of it pages of ``libllvmlite.so`` touched by LLVM's static initialisers —
so a gateway that runs its kernels through numba's JIT cannot stay under 100 MB at 200 meters
(issue 18; docs/performance.md, "Compiled kernels without numba in the daemon"). ``numba.pycc``
compiles the same kernel functions, with the same compiler and options, into a plain CPython
extension module that needs only NumPy at run time (a few hundred KiB of RSS). On a Pi-class box
it also moves the minutes of first-start JIT compilation to install time.

The build (:mod:`edge_rules.aot_build`, ``make aot``, and ``make install`` on the target) writes
``edge_rules/_kernels_aot*.so`` and ``edge_rules/_kernels_aot.json`` beside this file. The JSON
names, for every kernel, the exported variants and their argument types, and carries a digest of
the ``edge_rules`` sources it was built from. :func:`aot_kernel` hands :mod:`edge_rules._jit` an
:class:`AotKernel` when the module is present and built from these very sources; otherwise the
JIT (``cache=True``) stays, as before. An :class:`AotKernel` picks the variant by its arguments'
types (dtype and number of dimensions of each array, type of each scalar); arguments no variant
takes (a type the recording never saw) switch the process to the JIT for every kernel, so a
compiled kernel never calls a stale or missing one — correct, at the JIT's memory cost, and logged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODULE", "AotKernel", "aot_kernel", "aot_status", "source_digest", "type_key"]

log = logging.getLogger(__name__)

#: The compiled module's name inside ``edge_rules``; its manifest is ``<MODULE>.json`` beside it.
MODULE = "_kernels_aot"
PACKAGE_DIR = Path(__file__).resolve().parent

_manifest: dict[str, Any] | None = None
_module: Any = None
_status: str | None = None


def source_digest(root: Path = PACKAGE_DIR) -> str:
    """SHA-256 over every ``.py`` file of ``edge_rules`` (path and bytes) but this loader and the
    build script, which compile into nothing: any edit to a kernel, a kernel it calls or a
    constant it reads makes a built module stale."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).as_posix() in ("aot.py", "aot_build.py"):
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def type_key(value: object) -> str:
    """The type of one argument as the manifest spells it, by numba's typing rules:
    ``float64[2dC]`` for an array (layout C, F or A as numba would see it), ``int64`` for a Python
    int, ``float64``, ``bool``, ``none``, or ``?`` (no variant takes it)."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return f"{value.dtype.name}[{value.ndim}d{layout}]"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, np.generic):
        return value.dtype.name
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if value is None:
        return "none"
    return "?"


def _any_layout(key: str) -> str:
    """An array's key with layout A (a variant for any layout takes a contiguous array too)."""
    return key[:-3] + "dA]" if key.endswith(("dC]", "dF]")) else key


def _load() -> None:
    """Load the manifest and module once; ``_status`` says what happened (for the start log)."""
    global _manifest, _module, _status
    if _status is not None:
        return
    path = PACKAGE_DIR / f"{MODULE}.json"
    if not path.exists():
        _status = "absent"
        return
    manifest = json.loads(path.read_text())
    if manifest.get("digest") != source_digest():
        _status = "stale"
        log.warning("the ahead-of-time compiled kernels (%s) were built from other sources than "
                    "these: the kernels run through numba's JIT; rebuild them with `make aot` "
                    "(docs/performance.md)", path)
        return
    try:
        _module = importlib.import_module(f"edge_rules.{MODULE}")
    except ImportError as exc:
        _status = "unloadable"
        log.warning("the ahead-of-time compiled kernels cannot be loaded (%s): the kernels run "
                    "through numba's JIT", exc)
        return
    _manifest = manifest
    _status = "loaded"


def aot_status() -> str:
    """``loaded``, ``absent``, ``stale`` or ``unloadable``: whether the kernels run compiled
    ahead of time."""
    _load()
    assert _status is not None
    return _status


class AotKernel:
    """One kernel's ahead-of-time variants, picked by argument types; ``py_func`` is the source."""

    def __init__(self, function: Callable[..., Any], variants: dict[tuple[str, ...], Any],
                 on_miss: Callable[[], Callable[..., Any]]) -> None:
        self.py_func = function
        functools.update_wrapper(self, function, updated=())  # name, doc, module, __wrapped__
        self.variants = variants
        self._on_miss = on_miss
        self.jit: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.jit is None and not kwargs:
            key = tuple(map(type_key, args))
            variant = self.variants.get(key) or self.variants.get(tuple(map(_any_layout, key)))
            if variant is not None:
                return variant(*args)
        if self.jit is None:
            log.warning("kernel %s.%s: no ahead-of-time variant for (%s)%s: switching every "
                        "kernel to numba's JIT", self.py_func.__module__, self.py_func.__qualname__,
                        ", ".join(map(type_key, args)), " with keywords" if kwargs else "")
            self.jit = self._on_miss()
        return self.jit(*args, **kwargs)


def aot_kernel(function: Callable[..., Any],
               on_miss: Callable[[], Callable[..., Any]]) -> AotKernel | None:
    """The :class:`AotKernel` of ``function`` when a fresh AOT module is loaded, else None.
    ``on_miss`` returns the JIT dispatcher that takes over for arguments no variant fits. A kernel
    without variants (one only other kernels call: its code is compiled into theirs) gets an
    :class:`AotKernel` too, with none: numba is imported only if Python ever calls it."""
    _load()
    if _manifest is None:
        return None
    entries = _manifest["kernels"].get(f"{function.__module__}:{function.__qualname__}", ())
    variants = {tuple(keys): getattr(_module, name) for name, keys in entries}
    return AotKernel(function, variants, on_miss)

