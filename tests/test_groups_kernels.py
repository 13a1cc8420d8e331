"""Summation-group kernels: numba equals the NumPy twin, and the totals mean what 1376.1 F14 says.

Equality is exact everywhere: the twins add in the kernels' order (``np.add.at`` in member
order, ``cumsum`` along a day), so not even the last bit may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_rules import groups as g
from edge_rules.codes import QUALITY_A, QUALITY_E, QUALITY_N

EXAMPLES = settings(max_examples=150, deadline=None)

values_f64 = st.one_of(
    st.floats(-1e9, 1e9, allow_nan=False, width=64),
    st.just(np.nan),
    st.sampled_from([0.0, -0.0, 1e-300, 5e8]),
)


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True), (a, b)


@pytest.fixture(scope="module", autouse=True)
def warm_up() -> None:
    """Compile every kernel once, so hypothesis deadlines never see numba compiling."""
    r = np.zeros((1, 2))
    q = np.zeros((1, 2), dtype=np.uint8)
    g.interval_energy_nb(r, q)
    g.split_register_gaps_nb(r, q, np.ones((1, 1)))
    g.group_totals_nb(r, q, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1), 1)
    g.day_totals_nb(r, 1)


@st.composite
def channel_data(draw: st.DrawFn, min_reads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    channels = draw(st.integers(0, 5))
    reads = draw(st.integers(min_reads, 12))
    values = draw(arrays(np.float64, (channels, reads), elements=values_f64))
    quality = draw(arrays(np.uint8, (channels, reads), elements=st.integers(0, 4)))
    return values, quality


@EXAMPLES
@given(channel_data(min_reads=1))
def test_interval_energy_twins_agree(data: tuple[np.ndarray, np.ndarray]) -> None:
    registers, quality = data
    for a, b in zip(
        g.interval_energy_nb(registers, quality),
        g.interval_energy_np(registers, quality),
        strict=True,
    ):
        same(a, b)


@EXAMPLES
@given(channel_data(min_reads=1), st.data())
def test_split_register_gaps_twins_agree(
    data: tuple[np.ndarray, np.ndarray], more: st.DataObject
) -> None:
    registers, quality = data
    # Registers that mostly rise, so gaps with a provable total occur often.
    registers = np.where(
        np.isnan(registers), np.nan, np.cumsum(np.abs(np.nan_to_num(registers)), axis=1)
    )
    weights = more.draw(
        arrays(np.float64, (registers.shape[0], registers.shape[1] - 1), elements=values_f64)
    )
    for a, b in zip(
        g.split_register_gaps_nb(registers, quality, weights),
        g.split_register_gaps_np(registers, quality, weights),
        strict=True,
    ):
        same(a, b)


@st.composite
def group_case(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    values, quality = draw(channel_data())
    channels = values.shape[0]
    n_groups = draw(st.integers(1, 4))
    members = draw(st.integers(0, 12)) if channels else 0
    member_channel = np.asarray(
        draw(st.lists(st.integers(0, max(channels - 1, 0)), min_size=members, max_size=members)),
        dtype=np.int64,
    )
    member_group = np.asarray(
        draw(st.lists(st.integers(0, n_groups - 1), min_size=members, max_size=members)),
        dtype=np.int64,
    )
    scale = np.asarray(
        draw(
            st.lists(
                st.sampled_from([1.0, -1.0, 40.0, -0.1, 1e6]), min_size=members, max_size=members
            )
        ),
        dtype=np.float64,
    )
    return values, quality, member_channel, member_group, scale, np.int64(n_groups)


@EXAMPLES
@given(group_case())
def test_group_totals_twins_agree(case: tuple[np.ndarray, ...]) -> None:
    values, quality, channel, group, scale, n_groups = case
    for a, b in zip(
        g.group_totals_nb(values, quality, channel, group, scale, int(n_groups)),
        g.group_totals_np(values, quality, channel, group, scale, int(n_groups)),
        strict=True,
    ):
        same(a, b)


@EXAMPLES
@given(
    arrays(np.float64, st.tuples(st.integers(0, 4), st.integers(0, 6)), elements=values_f64),
    st.integers(1, 4),
)
def test_day_totals_twins_agree(totals: np.ndarray, per_day: int) -> None:
    totals = np.ascontiguousarray(np.tile(totals, (1, per_day)))
    same(g.day_totals_nb(totals, per_day), g.day_totals_np(totals, per_day))


# ---- behaviour ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    meter: str
    sign: str = "+"
    direction: str = "import"


@dataclass(frozen=True)
class Group:
    id: str
    members: tuple[Member, ...]


def test_signed_members_directions_and_ratios() -> None:
    """A net sum: a customer's import plus a PV site's import minus its export, a CT-metered
    feeder scaled by CT × PT."""
    groups = [
        Group("net", (Member("c1"), Member("pv"), Member("pv", "-", "export"))),
        Group("feeder", (Member("f1"),)),
    ]
    layout = g.build_layout(groups, {"c1": 1.0, "pv": 1.0, "f1": 40.0 * 100.0})
    assert layout.channels == (
        ("c1", "import"),
        ("pv", "import"),
        ("pv", "export"),
        ("f1", "import"),
    )
    meters = ["c1", "pv", "f1"]
    imports = np.array([[2.0, 3.0], [0.5, 0.0], [0.001, 0.002]])
    exports = np.array([[0.0, 0.0], [1.5, 2.0], [0.0, 0.0]])
    values, quality = g.gather_channels(layout, meters, imports, exports)
    totals = g.group_totals(values, quality, layout)
    np.testing.assert_array_equal(totals.total[0], [2.0 + 0.5 - 1.5, 3.0 + 0.0 - 2.0])
    np.testing.assert_allclose(totals.total[1], [4.0, 8.0], rtol=1e-12)
    assert totals.coverage().tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_coverage_counts_actual_and_names_missing_members() -> None:
    groups = [Group("subs", (Member("a"), Member("b"), Member("c"), Member("d")))]
    layout = g.build_layout(groups, dict.fromkeys("abcd", 1.0))
    imports = np.array([[1.0, 1.0], [2.0, np.nan], [3.0, 3.0], [4.0, 4.0]])
    quality = np.array(
        [
            [QUALITY_A, QUALITY_A],
            [QUALITY_A, QUALITY_N],
            [QUALITY_E, QUALITY_A],
            [QUALITY_A, QUALITY_A],
        ],
        dtype=np.uint8,
    )
    values, q = g.gather_channels(layout, ["a", "b", "c", "d"], imports, import_quality=quality)
    totals = g.group_totals(values, q, layout)
    assert totals.total[0].tolist() == [10.0, 8.0]  # a partial total is still the sum present
    assert totals.present[0].tolist() == [4, 3]
    assert totals.actual[0].tolist() == [3, 3]
    assert totals.coverage()[0].tolist() == [0.75, 0.75]
    assert totals.complete()[0].tolist() == [True, False]
    assert totals.missing(0, 1) == ("b",)
    assert totals.missing(0, 0) == ()


def test_a_meter_without_reads_is_missing_not_an_error() -> None:
    layout = g.build_layout(
        [Group("g", (Member("here"), Member("gone")))], {"here": 1.0, "gone": 1.0}
    )
    values, q = g.gather_channels(layout, ["here"], np.array([[5.0]]))
    totals = g.group_totals(values, q, layout)
    assert totals.total[0, 0] == 5.0 and totals.missing(0, 0) == ("gone",)
    empty = g.group_totals(*g.gather_channels(layout, [], np.empty((0, 1))), layout)
    assert np.isnan(empty.total[0, 0]) and empty.present[0, 0] == 0


def test_power_channels_split_by_direction() -> None:
    layout = g.build_layout([Group("g", (Member("m"), Member("m", "-", "export")))], {"m": 2.0})
    values, q = g.power_channels(layout, ["m"], np.array([[3.0, -1.5, np.nan]]))
    totals = g.group_totals(values, q, layout)
    # import 3 kW → +6; export 1.5 kW → −3; unknown stays unknown.
    assert totals.total[0, 0] == 6.0 and totals.total[0, 1] == -3.0 and np.isnan(totals.total[0, 2])


def test_interval_energy_refuses_a_register_going_backwards() -> None:
    energy, quality = g.interval_energy(
        np.array([[10.0, 10.5, 10.4, 11.0, np.nan, 12.0]]),
        np.array([[0, 0, 0, 1, 0, 0]], dtype=np.uint8),
    )
    assert energy[0, 0] == 0.5 and quality[0, 0] == QUALITY_A
    assert np.isnan(energy[0, 1]) and quality[0, 1] == QUALITY_N
    assert quality[0, 2] == QUALITY_E  # an estimated end makes the delta estimated
    assert np.isnan(energy[0, 3]) and np.isnan(energy[0, 4])


def test_split_register_gaps_keeps_the_proven_total() -> None:
    registers = np.array([[100.0, np.nan, np.nan, 130.0, 131.0]])
    quality = np.array([[0, 4, 4, 0, 0]], dtype=np.uint8)
    weights = np.array([[1.0, 2.0, 3.0, 1.0]])
    energy, q = g.split_register_gaps(registers, quality, weights)
    assert energy[0, :3].tolist() == [5.0, 10.0, 15.0]
    assert q[0, :3].tolist() == [QUALITY_E] * 3 and q[0, 3] == QUALITY_A
    # Unusable weights: an equal split; a gap at the end stays missing.
    energy, _ = g.split_register_gaps(
        np.array([[0.0, np.nan, 9.0, np.nan]]),
        np.zeros((1, 4), np.uint8),
        np.array([[np.nan, 1.0, 1.0]]),
    )
    assert energy[0, :2].tolist() == [4.5, 4.5] and np.isnan(energy[0, 2])


def test_day_totals_need_the_whole_day() -> None:
    totals = np.array([[1.0, 2.0, 3.0, 4.0, np.nan, 1.0]])
    assert np.array_equal(g.day_totals(totals, 3), np.array([[6.0, np.nan]]), equal_nan=True)
    with pytest.raises(ValueError, match="whole days"):
        g.day_totals(totals, 4)


def test_layout_from_the_example_config() -> None:
    from gateway.config import load_config

    config = load_config(Path(__file__).parents[1] / "configs" / "example.toml")
    ratios = {m.id: float(m.ct_ratio * m.pt_ratio) for m in config.meters}
    layout = g.build_layout(config.groups, ratios)
    assert layout.group_ids == ("tq-0042-subs",)
    assert ("m-003", "export") in layout.channels
    assert layout.member_scale.tolist() == [1.0, 1.0, 1.0, -1.0]
    with pytest.raises(ValueError, match="no CT/PT ratio"):
        g.build_layout(config.groups, {})


def test_twin_mode_runs_numpy_twins_without_loading_numba() -> None:
    """A small gateway's daemon runs every kernel that has a same-signature NumPy twin through
    the twin (edge_rules._jit.use_numpy_twins): equal results, and numba never imported."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
import numpy as np
from edge_rules import _jit
from edge_rules import groups as g
_jit.use_numpy_twins(True)
values = np.array([[1.0, 2.0, np.nan], [0.5, 0.25, 4.0]])
quality = np.zeros((2, 3), dtype=np.uint8)
member = lambda meter, sign: type("M", (), {"meter": meter, "sign": sign, "direction": "import"})()
layout = g.build_layout([type("G", (), {"id": "a", "members": [member("m1", "+"),
                                                               member("m2", "-")]})()],
                        {"m1": 2.0, "m2": 1.0})
got = g.group_totals(values, quality, layout)
want = g.group_totals_np(values, quality, layout.member_channel, layout.member_group,
                         layout.member_scale, 1)
np.testing.assert_array_equal(got.total, want[0])
np.testing.assert_array_equal(got.total, [[1.5, 3.75, -4.0]])
assert "numba" not in sys.modules
"""
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
