"""Build the rule kernels ahead of time (:mod:`edge_rules.aot`), and record what to build.

    python -m edge_rules.aot_build build [--out DIR] [--only NAME ...]   # make aot / make install
    python -m edge_rules.aot_build record                                 # after changing a kernel

``build`` compiles every kernel of ``edge_rules`` with ``numba.pycc`` (numba's compiler and the
project's options, into a CPython extension that needs only NumPy) for each argument signature in
``edge_rules/aot_signatures.json``, and writes the module and its manifest (the variants and the
digest of the sources) to ``--out`` (default: beside :mod:`edge_rules.aot`, where the daemon
looks). Arrays keep the layout they were recorded with (C-contiguous for the daemon's calls: the
entry points make them so); a call with a strided view finds no variant and goes to the JIT. Run it where the daemon runs (``make install`` does, in the installed venv): the
module is machine code for this CPU family and this Python.

``record`` runs the kernel tests under numba's JIT and writes every signature the kernels were
compiled for to ``aot_signatures.json``. The kernels' validated entry points fix the dtypes
(``float64``, ``uint8``…), so the signatures are those of the daemon's calls; a call with other
types still works (the JIT takes over, edge_rules/aot.py). tests/test_aot_kernels.py fails when a
kernel has no recorded signature.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path
from typing import Any

from edge_rules import _jit
from edge_rules.aot import MODULE, PACKAGE_DIR, source_digest

SIGNATURES = PACKAGE_DIR / "aot_signatures.json"
#: The tests whose calls ``record`` captures.
KERNEL_TESTS = ("tests/test_vee_kernels.py", "tests/test_groups_kernels.py",
                "tests/test_reconcile_kernels.py", "tests/test_theft_kernels.py",
                "tests/test_load_control_kernels.py")


def import_kernel_modules() -> list[_jit.LazyKernel]:
    """Import every ``edge_rules`` module (declaring all kernels) and return the kernels."""
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], "edge_rules."):
        if info.name.rsplit(".", 1)[-1] not in ("aot_build", MODULE):
            importlib.import_module(info.name)
    return list(_jit._declared)


def kernel_id(kernel: Any) -> str:
    function = kernel.py_func
    return f"{function.__module__}:{function.__qualname__}"


# -- numba types as signature text and as the runtime's type keys ------------------------------

def _text(t: Any) -> str:
    """numba type ``t`` as ``numba.pycc`` signature text."""
    from numba.core import types

    if isinstance(t, types.Array):
        if t.layout == "A":
            dims = ", ".join([":"] * t.ndim)
        elif t.layout == "C":
            dims = ", ".join([":"] * (t.ndim - 1) + ["::1"])
        else:
            dims = ", ".join(["::1"] + [":"] * (t.ndim - 1))
        return f"{t.dtype}[{dims}]"
    if isinstance(t, types.UniTuple):
        return f"UniTuple({_text(t.dtype)}, {t.count})"
    if isinstance(t, types.Tuple):
        return f"Tuple(({', '.join(_text(m) for m in t.types)},))"
    if isinstance(t, types.Literal):
        return _text(t.literal_type)
    if isinstance(t, types.NoneType):
        return "none"
    if isinstance(t, types.Boolean | types.Integer | types.Float):
        return str(t)
    raise TypeError(f"no signature text for {t!r}")


def _key(t: Any) -> str:
    """The runtime's :func:`edge_rules.aot.type_key` of an argument of numba type ``t``."""
    from numba.core import types

    if isinstance(t, types.Array):
        return f"{t.dtype}[{t.ndim}d{t.layout}]"
    if isinstance(t, types.Literal):
        return _key(t.literal_type)
    if isinstance(t, types.NoneType):
        return "none"
    if isinstance(t, types.Boolean):
        return "bool"
    if isinstance(t, types.Integer | types.Float):
        return str(t)
    return "?"


def recorded_signatures(kernels: list[_jit.LazyKernel]) -> dict[str, list[str]]:
    """Signature texts of what each kernel's dispatcher compiled."""
    table: dict[str, list[str]] = {}
    for kernel in kernels:
        dispatcher = kernel._dispatcher
        overloads = getattr(dispatcher, "overloads", None) or {}
        texts: list[str] = []
        for args, result in overloads.items():
            if any(_key(a) == "?" for a in args):
                continue  # a tuple or record argument: left to the JIT
            text = f"{_text(result.signature.return_type)}({', '.join(map(_text, args))})"
            if text not in texts:
                texts.append(text)
        if texts:
            table[kernel_id(kernel)] = sorted(texts)
    return table


def record() -> int:
    import pytest

    kernels: list[_jit.LazyKernel] = []
    _jit._jit_forced = True  # the tests' calls go through the JIT, whose dispatchers keep them

    class Recorder:
        def pytest_sessionfinish(self) -> None:
            kernels.extend(import_kernel_modules())

    code = pytest.main(["-q", "-n", "0", "-p", "no:cacheprovider", *KERNEL_TESTS],
                       plugins=[Recorder()])
    if code != 0:
        print("the kernel tests failed: nothing recorded", file=sys.stderr)
        return int(code)
    table = recorded_signatures(kernels)
    SIGNATURES.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{sum(map(len, table.values()))} signatures of {len(table)} kernels -> {SIGNATURES}")
    return 0


def build(out: Path, only: list[str] | None = None) -> int:
    """Compile the recorded signatures into ``out``; returns the number of variants."""
    # numba's pycc and sigutils are untyped: used through Any
    sigutils: Any = importlib.import_module("numba.core.sigutils")
    pycc: Any = importlib.import_module("numba.pycc")

    started = time.monotonic()
    _jit._jit_forced = True  # compile from the sources, never from an earlier build
    kernels = import_kernel_modules()
    _jit._activate()  # module globals become numba dispatchers: pycc resolves callees through them
    table = json.loads(SIGNATURES.read_text())
    cc = pycc.CC(MODULE)
    cc.output_dir = str(out)
    cc.verbose = False
    manifest: dict[str, list[tuple[str, list[str]]]] = {}
    for index, kernel in enumerate(kernels):
        name = kernel_id(kernel)
        if only and kernel.__name__ not in only:
            continue
        for n, text in enumerate(table.get(name, ())):
            args, _ = sigutils.normalize_signature(text)
            symbol = f"k{index}_{n}_{kernel.__name__}"
            cc.export(symbol, text)(kernel.py_func)
            manifest.setdefault(name, []).append((symbol, [_key(a) for a in args]))
    out.mkdir(parents=True, exist_ok=True)
    cc.compile()
    (out / f"{MODULE}.json").write_text(json.dumps(
        {"digest": source_digest(), "kernels": manifest}, indent=1, sort_keys=True) + "\n")
    variants = sum(map(len, manifest.values()))
    print(f"{variants} variants of {len(manifest)} kernels compiled in "
          f"{time.monotonic() - started:.0f} s -> {out}")
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile the kernels into edge_rules (or --out)")
    b.add_argument("--out", type=Path, default=PACKAGE_DIR)
    b.add_argument("--only", nargs="*", help="kernel function names (tests build a few)")
    sub.add_parser("record", help="record the kernels' signatures from their tests")
    args = parser.parse_args(argv)
    if args.command == "record":
        return record()
    build(args.out, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
