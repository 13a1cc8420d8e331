"""The consumer's pure parts: seq ranges, decoding at the trust boundary, configuration."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.config import load_config
from central.decoding import Decoder, InboundError, ResultIn
from central.errors import ConfigError
from central.streams import SeqRange, add_seq, contains, covered, holes, subtract
from protocols.commands import raw_public_key, sign_result
from protocols.ed25519 import SigningKey
from protocols.payload import Envelope, build_reads
from tests.central.support import EPOCH, PREFIX, register


@given(st.lists(st.integers(1, 200), max_size=300))
def test_ranges_hold_exactly_the_seqs_added_and_report_duplicates(seqs: list[int]) -> None:
    ranges: list[SeqRange] = []
    seen: set[int] = set()
    for s in seqs:
        assert add_seq(ranges, s, 0) == (s not in seen)
        seen.add(s)
    held = {s for r in ranges for s in range(r.lo, r.hi + 1)}
    assert held == seen
    assert all(a.hi + 1 < b.lo for a, b in pairwise(ranges))  # merged
    assert all(contains(ranges, s) == (s in seen) for s in range(0, 202))
    missing = {s for lo, hi in holes(ranges, 10**9, 0) for s in range(lo, hi + 1)}
    assert missing == (set(range(min(seen), max(seen) + 1)) - seen if seen else set())


def test_a_hole_ages_from_the_arrival_of_the_message_above_it() -> None:
    ranges: list[SeqRange] = []
    for seq, at in ((1, 0), (2, 0), (6, 100), (5, 900)):
        add_seq(ranges, seq, at)
    assert holes(ranges, 1_099, grace_ms=1_000) == []
    assert holes(ranges, 1_100, grace_ms=1_000) == [(3, 4)]  # opened by seq 6 at 100
    assert covered(ranges, 5, 6) and not covered(ranges, 2, 5)
    assert subtract((1, 10), [(3, 4), (8, 12)]) == [(1, 2), (5, 7)]


def _reads_payload(gw: str = "gw-1", seq: int = 3) -> bytes:
    return build_reads(Envelope(gw, EPOCH, seq, 1), "m-1", [register(900_000, "1.5")])


@pytest.mark.parametrize(("topic", "payload", "why"), [
    (f"{PREFIX}/gw-2/reads/m-1", _reads_payload(), "gateway 'gw-1' is not the topic's 'gw-2'"),
    (f"{PREFIX}/gw-1/reads/m-9", _reads_payload(), "names gw-1/m-1, topic gw-1/m-9"),
    (f"{PREFIX}/gw-1/reads/m-1", b"\xa1\x61", "not well-formed CBOR"),
    (f"{PREFIX}/gw-1/cmd", _reads_payload(), "not one the consumer reads"),
    ("other/gw-1/reads/m-1", _reads_payload(), "outside prefix"),
])
def test_bad_messages_are_refused_with_one_line(topic: str, payload: bytes, why: str) -> None:
    with pytest.raises(InboundError) as info:
        Decoder(PREFIX, {}).decode(topic, payload)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_results_are_verified_with_the_pinned_key() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signed = sign_result(key, b"gw-1", Envelope("gw-1", EPOCH, 7, 1), b"\x01" * 16, "failed",
                         "oldest seq held is 40")
    topic = f"{PREFIX}/gw-1/cmd/result"
    result = Decoder(PREFIX, {"gw-1": raw_public_key(key)}).decode(topic, signed)
    assert isinstance(result, ResultIn) and result.verified and result.stream.seq == 7
    assert result.status == "failed" and result.reason == "oldest seq held is 40"
    assert not Decoder(PREFIX, {}).decode(topic, signed).verified  # type: ignore[union-attr]
    with pytest.raises(InboundError, match="signature invalid"):
        Decoder(PREFIX, {"gw-1": raw_public_key(other)}).decode(topic, signed)


def test_config_errors_name_file_key_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    for text, expected in [
        ("[mqtt]\nshare_grup = 'x'\n", "mqtt.share_grup: unknown key"),
        ("[mqtt]\nport = 0\n", "mqtt.port: expected an integer in 1..65535, got 0"),
        ("[gaps]\ngrace_s = 'soon'\n", "gaps.grace_s: expected a number"),
        ("[replay]\nkid = 'c'\nprivate_key = 'nope.pem'\n", "replay.private_key: cannot read"),
        ("[[gateways]]\nid = 'gw-1'\nresult_key = 'k.pub'\n", "gateways[0].result_key"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(path) in str(info.value) and expected in str(info.value), info.value
    (tmp_path / "k.pub").write_text(raw_public_key(SigningKey.generate()).hex())
    path.write_text("[database]\nurl = 'sqlite:///var/c.sqlite'\n[[gateways]]\nid = 'gw-1'\n"
                    "result_key = 'k.pub'\n")
    config = load_config(path)
    assert config.database_url == f"sqlite:///{tmp_path / 'var' / 'c.sqlite'}"
    assert len(config.result_keys["gw-1"]) == 32


def test_sample_config_loads() -> None:
    sample = Path(__file__).resolve().parents[2] / "configs" / "central.toml"
    config = load_config(sample)
    assert config.mqtt.share_group == "central" and config.replay is None


def test_replay_command_is_a_viewer_replay_signed_by_the_configured_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the consumer publishes on a gap, checked by the gateway's own parser and a COSE
    verification with the replay key's public half. (Until the gateway side of replay is
    merged, the action is added to the envelope's vocabulary here.)"""
    import protocols.commands.envelope as envelope
    from central.config import ReplaySettings
    from central.replay import build_replay
    from central.storage.gaps import GapClaim
    from protocols import cose

    if "replay" not in envelope.ACTIONS:
        monkeypatch.setattr(envelope, "ACTIONS", (*envelope.ACTIONS, "replay"))
    key = SigningKey.generate()
    settings = ReplaySettings(kid="central-1", private_key=key, ttl_s=120)
    command = build_replay(GapClaim("gw-7", EPOCH, 41, 57, ctr=1_800_000_000_000), settings,
                           PREFIX, now_s=1_800_000_000)
    assert command.topic == f"{PREFIX}/gw-7/cmd"
    message = cose.decode(command.payload)
    assert isinstance(message, cose.Sign1Message) and message.headers.kid == b"central-1"
    message.verify(raw_public_key(key))
    parsed = envelope.parse_envelope(message.payload)
    assert (parsed.action, parsed.role, parsed.aud, parsed.ctr) == (
        "replay", "VIEWER", "gw-7", 1_800_000_000_000)
    assert dict(parsed.params) == {"epoch": EPOCH, "from_seq": 41, "to_seq": 57}
    assert (parsed.iat, parsed.exp) == (1_800_000_000, 1_800_000_120)
    assert parsed.id.hex() == command.cmd
