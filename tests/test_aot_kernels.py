"""The kernels compiled ahead of time (edge_rules/aot.py): the same results as the NumPy twin and the
JIT on the same inputs, loaded without numba, and the JIT takes over for what no variant takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_rules import aot
from edge_rules.aot import AotKernel, type_key

REPO = Path(__file__).resolve().parent.parent
KERNELS = ("interval_energy_nb", "group_totals_nb", "day_totals_nb")


def test_every_public_kernel_has_a_recorded_signature() -> None:
    """A kernel the entry points call (``name_nb``) without a recorded signature would run through
    the JIT, numba and all: re-record with `make aot-record` after adding or changing one."""
    from edge_rules.aot_build import import_kernel_modules, kernel_id

    table = json.loads((REPO / "edge_rules" / "aot_signatures.json").read_text())
    public = [kernel_id(k) for k in import_kernel_modules()
              if k.__name__.endswith("_nb") and not k.__name__.startswith("_")]
    assert len(public) > 30
    assert [name for name in public if name not in table] == []


def test_type_keys_follow_numba_typing() -> None:
    a = np.zeros((3, 4))
    assert type_key(a) == "float64[2dC]"
    assert type_key(np.asfortranarray(a)) == "float64[2dF]"
    assert type_key(a[:, ::2]) == "float64[2dA]"
    assert type_key(np.zeros(3, dtype=np.uint8)) == "uint8[1dC]"
    assert (type_key(True), type_key(3), type_key(2.5), type_key(None)) == (
        "bool", "int64", "float64", "none")
    assert type_key(np.int32(1)) == "int32" and type_key((1, 2)) == "?"


def test_a_call_no_variant_takes_goes_to_the_jit() -> None:
    calls: list[str] = []

    def kernel(x: object) -> str:
        return "source"

    def variant(x: object) -> str:
        calls.append("aot")
        return "aot"

    def jit(x: object) -> str:
        calls.append("jit")
        return "jit"

    k = AotKernel(kernel, {("float64[1dA]",): variant}, on_miss=lambda: jit)
    assert k(np.zeros(2)) == "aot"            # a C-contiguous array takes the any-layout variant
    assert k(np.zeros((2, 2))) == "jit"       # no 2-d variant: the JIT, from now on for all
    assert k(np.zeros(2)) == "jit"
    assert calls == ["aot", "jit", "jit"] and k.py_func is kernel


_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import edge_rules
from edge_rules import aot, _jit
aot.PACKAGE_DIR = __import__("pathlib").Path(sys.argv[1])   # the module built by the test
edge_rules.__path__.append(sys.argv[1])
from edge_rules import groups as g
_jit.use_numpy_twins(False)
rng = np.random.default_rng(18)
registers = np.cumsum(rng.random((6, 40)), axis=1)
registers[1, 7] = np.nan
registers[2, 9] = registers[2, 8] - 1.0
quality = rng.integers(0, 3, size=(6, 40)).astype(np.uint8)
values = rng.random((6, 96 * 2))
values[3, 5] = np.nan
out = {
  "interval": [a.tolist() for a in g.interval_energy_nb(registers, quality)],
  "groups": [a.tolist() for a in g.group_totals_nb(values, quality[:, :1].repeat(192, 1),
             np.array([0, 1, 3, 5]), np.array([0, 0, 1, 1]), np.array([1.0, -1.0, 2.0, 0.5]), 2)],
  "days": g.day_totals_nb(values, 96).tolist(),
  "status": aot.aot_status(),
  "aot": type(g.interval_energy_nb).__name__,
  "numba": "numba" in sys.modules,
}
# a strided view: no recorded variant, so every kernel moves to numba's JIT, same results
miss = g.interval_energy_nb(registers[:, ::2], quality[:, ::2])[0]
out["after_miss"] = [type(g.interval_energy_nb).__name__, "numba" in sys.modules,
                     bool(np.array_equal(miss, g.interval_energy_np(registers[:, ::2], quality[:, ::2])[0], equal_nan=True)),
                     bool(np.array_equal(g.day_totals_nb(values, 96), np.array(out["days"]),
                                         equal_nan=True))]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three group kernels compiled ahead of time into a temporary directory (about a minute)."""
    out = tmp_path_factory.mktemp("aot")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "edge_rules.aot_build", "build", "--out", str(out),
                    "--only", *KERNELS], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=600)
    return out


def test_aot_equals_twin_and_jit_without_numba(built: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", _PROBE, str(built)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.replace("NaN", "null"))
    assert got["status"] == "loaded" and got["aot"] == "AotKernel"
    assert got["numba"] is False
    # a strided view matches no recorded (C-contiguous) variant: the JIT takes over, equal results
    assert got["after_miss"] == ["CPUDispatcher", True, True, True]

    import numba

    from edge_rules import groups as g

    rng = np.random.default_rng(18)
    registers = np.cumsum(rng.random((6, 40)), axis=1)
    registers[1, 7] = np.nan
    registers[2, 9] = registers[2, 8] - 1.0
    quality = rng.integers(0, 3, size=(6, 40)).astype(np.uint8)
    values = rng.random((6, 96 * 2))
    values[3, 5] = np.nan
    members = (np.array([0, 1, 3, 5]), np.array([0, 0, 1, 1]), np.array([1.0, -1.0, 2.0, 0.5]), 2)
    group_quality = quality[:, :1].repeat(192, 1)
    for kind, call in (("twin", lambda name: getattr(g, name.replace("_nb", "_np"))),
                       ("jit", lambda name: numba.njit(getattr(g, name).py_func))):
        want = {
            "interval": [a.tolist() for a in call("interval_energy_nb")(registers, quality)],
            "groups": [a.tolist() for a in call("group_totals_nb")(values, group_quality, *members)],
            "days": call("day_totals_nb")(values, 96).tolist(),
        }
        for name, value in want.items():
            assert got[name] == json.loads(json.dumps(value).replace("NaN", "null")), (kind, name)


def test_a_stale_build_is_not_used(built: Path, tmp_path: Path) -> None:
    manifest = json.loads((built / f"{aot.MODULE}.json").read_text())
    assert manifest["digest"] == aot.source_digest()
    (tmp_path / "edge_rules").mkdir()
    (tmp_path / "edge_rules" / "x.py").write_text("x = 1\n")
    assert aot.source_digest(tmp_path / "edge_rules") != manifest["digest"]
