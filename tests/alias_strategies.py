"""Hypothesis strategies for payload v2 alias tables, shared by the tests of the v2 decoders
(the full path, the plain-poll shortcut and the rows the central consumer stores)."""

from __future__ import annotations

from hypothesis import strategies as st

from protocols.payload import AliasEntry, AliasTable

QUANTITIES = ["energy.active.import.total", "voltage.a", "current.b", "frequency",
              "power.active.total"]


def alias_tables(min_exponent: int, max_exponent: int) -> st.SearchStrategy[AliasTable]:
    """Tables of 1–6 distinct quantities, each with a unit, an optional decimal exponent in
    ``[min_exponent, max_exponent]`` and the register (exact decimal) flag drawn freely: units
    and exponents need not fit the quantity, since the decoders must not care."""
    entries = st.builds(
        AliasEntry,
        q=st.sampled_from(QUANTITIES),
        unit=st.sampled_from(["kWh", "V", "", "Hz"]),
        exponent=st.one_of(st.none(), st.integers(min_exponent, max_exponent)),
        decimal=st.booleans(),
    )
    return st.lists(entries, min_size=1, max_size=6, unique_by=lambda e: e.q).map(
        lambda es: AliasTable(tuple(es)))
