"""The topic layout of DESIGN §4 (protocols/topics.py): what the gateway publishes, gwtool and the
central side subscribe to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.topics import GatewayTopics, TopicError

segment = st.text(alphabet=st.characters(blacklist_characters="/+#\0", blacklist_categories=("Cs",)),
                  min_size=1, max_size=20)


def test_every_topic_of_design_section_4() -> None:
    t = GatewayTopics("mtr/v1", "gw-0001")
    assert (t.state, t.alarms, t.health, t.commands, t.command_results) == (
        "mtr/v1/gw-0001/state", "mtr/v1/gw-0001/alarms", "mtr/v1/gw-0001/health",
        "mtr/v1/gw-0001/cmd", "mtr/v1/gw-0001/cmd/result")
    assert t.reads("m-001") == "mtr/v1/gw-0001/reads/m-001"
    assert t.groups("tq-0042-subs") == "mtr/v1/gw-0001/groups/tq-0042-subs"


@given(segment, segment)
def test_a_meter_topic_splits_back_into_its_parts(gateway: str, meter: str) -> None:
    topic = GatewayTopics("p/q", gateway).reads(meter)
    assert topic.split("/") == ["p", "q", gateway, "reads", meter]


@pytest.mark.parametrize("bad", ["", "a/b", "m+1", "m#", "x\0"])
def test_a_name_that_would_make_an_ambiguous_topic_is_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        GatewayTopics("mtr/v1", "gw").reads(bad)
    with pytest.raises(TopicError):
        GatewayTopics("mtr/v1", bad)


@pytest.mark.parametrize("prefix", ["", "/mtr", "mtr/", "mtr/+", "mtr/#"])
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(TopicError):
        GatewayTopics(prefix, "gw")
