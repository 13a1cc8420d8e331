"""Hypothesis strategies for DL/T 645 values and messages (shared by codec, splitter and fuzz tests)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import strategies as st

from protocols import dlt645 as d
from protocols.dlt645.formats import Ascii, Bcd, Digits, Flags, Format, Raw, Timestamp

BCD_DIGIT_ADDRESS = st.text(alphabet="0123456789", min_size=12, max_size=12)
ADDRESS = st.one_of(BCD_DIGIT_ADDRESS, st.just(d.WILDCARD_ADDRESS))
DATETIMES = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31, 23, 59, 59))
HEX8 = st.text(alphabet="0123456789ABCDEF", min_size=8, max_size=8)
HEX6 = st.text(alphabet="0123456789ABCDEF", min_size=6, max_size=6)


def values_for(fmt: Format) -> st.SearchStrategy[d.Value]:
    """Values that ``fmt`` can encode and must decode back to themselves."""
    if isinstance(fmt, Bcd):
        top = 8 * 10 ** (fmt.size * 2 - 1) - 1 if fmt.signed else 10 ** (fmt.size * 2) - 1
        low = -top if fmt.signed else 0
        return st.integers(low, top).map(lambda n: Decimal(n).scaleb(-fmt.decimals))
    if isinstance(fmt, Timestamp):
        p = fmt.pattern
        if p in ("YYMMDDWW", "YYMMDD"):
            return DATETIMES.map(lambda x: x.date())
        if p in ("hhmmss", "hhmm"):
            return st.times().map(lambda t: t.replace(microsecond=0, second=t.second if "ss" in p else 0))
        if p == "MMDDhhmm":
            return DATETIMES.map(lambda x: f"{x.month:02d}-{x.day:02d}T{x.hour:02d}:{x.minute:02d}")
        keep_seconds = "ss" in p
        return DATETIMES.map(lambda x: x.replace(microsecond=0, second=x.second if keep_seconds else 0))
    if isinstance(fmt, Ascii):
        return st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=fmt.size)
    if isinstance(fmt, Digits):
        return st.text(alphabet="0123456789ABCDEF", min_size=fmt.size * 2, max_size=fmt.size * 2)
    if isinstance(fmt, Flags):
        names = [n for n in fmt.names if n]
        return st.fixed_dictionaries({n: st.booleans() for n in names})
    if isinstance(fmt, Raw):
        return st.binary(min_size=fmt.size, max_size=fmt.size)
    raise AssertionError(f"no strategy for {fmt!r}")


def item_values(item: d.DataItem) -> st.SearchStrategy[list[d.Value]]:
    fixed = st.tuples(*(values_for(f.format) for f in item.fields)).map(list)
    if not item.repeat_names:
        return fixed
    extra = st.lists(values_for(item.fields[-1].format), max_size=len(item.repeat_names))
    return st.tuples(fixed, extra).map(lambda pair: pair[0] + pair[1])


ALL_ITEMS = [(d.Version.V2007, i) for i in d.CATALOGUE_2007] + [(d.Version.V1997, i) for i in d.CATALOGUE_1997]


@st.composite
def read_replies(draw: st.DrawFn) -> d.ReadReply:
    version, item = draw(st.sampled_from(ALL_ITEMS))
    values = draw(item_values(item))
    reply = d.build_read_reply(draw(BCD_DIGIT_ADDRESS), item.di, values, version=version)
    if draw(st.booleans()):  # a first frame with follow-ups: its data is decoded only when joined
        return d.ReadReply(reply.address, reply.di, reply.data, (), True, reply.version)
    return reply


def _password() -> st.SearchStrategy[str]:
    return HEX6


V7 = st.just(d.Version.V2007)
V97 = st.just(d.Version.V1997)
ANY_V = st.sampled_from(list(d.Version))
DI7 = st.integers(0, 0xFFFFFFFF)
DI97 = st.integers(0, 0xFFFF)
MINUTE_DT = DATETIMES.map(lambda x: x.replace(second=0, microsecond=0))
SECOND_DT = DATETIMES.map(lambda x: x.replace(microsecond=0))

MESSAGES: st.SearchStrategy[d.Message] = st.one_of(
    st.builds(d.ReadRequest, BCD_DIGIT_ADDRESS, DI7, V7),
    st.builds(d.ReadRequest, BCD_DIGIT_ADDRESS, DI97, V97),
    st.builds(d.ReadRequest, BCD_DIGIT_ADDRESS, DI7, V7, st.integers(1, 99), st.none() | MINUTE_DT),
    read_replies(),
    st.builds(d.ReadReply, BCD_DIGIT_ADDRESS, st.just(0x0EEEEEEE), st.binary(max_size=20),
              st.just(()), st.booleans(), V7).map(
        lambda m: d.ReadReply(m.address, m.di, m.data,
                              () if m.more_follows else tuple(d.CATALOGUE_2007.decode(m.di, m.data)),
                              m.more_follows, m.version)),
    st.builds(d.ReadFollowupRequest, BCD_DIGIT_ADDRESS, DI7, st.integers(0, 255), V7),
    st.builds(d.ReadFollowupRequest, BCD_DIGIT_ADDRESS, DI97, st.just(0), V97),
    read_replies().map(lambda r: d.ReadFollowupReply(r.address, r.di, r.data, (),
                                                     7 if r.version == d.Version.V2007 else None,
                                                     r.more_follows, r.version)),
    st.builds(d.RereadRequest, BCD_DIGIT_ADDRESS, V97),
    st.builds(d.ReadAddressRequest, ADDRESS, V7),
    st.builds(d.ReadAddressReply, BCD_DIGIT_ADDRESS, V7),
    st.builds(d.WriteRequest, BCD_DIGIT_ADDRESS, DI7, st.binary(max_size=30), st.integers(0, 255),
              _password(), HEX8, V7),
    st.builds(d.WriteRequest, BCD_DIGIT_ADDRESS, DI97, st.binary(max_size=30), st.integers(0, 255),
              _password(), st.just("00000000"), V97),
    st.builds(d.WriteAddressRequest, BCD_DIGIT_ADDRESS, ADDRESS, ANY_V),
    st.builds(d.TimeSyncRequest, SECOND_DT, st.just(d.BROADCAST_ADDRESS), V7),
    st.builds(d.FreezeRequest, BCD_DIGIT_ADDRESS,
              st.text(alphabet="0123456789", min_size=8, max_size=8), V7),
    st.builds(d.ChangeBaudRequest, BCD_DIGIT_ADDRESS,
              st.sampled_from([600, 1200, 2400, 4800, 9600, 19200]), ANY_V),
    st.builds(d.ChangeBaudReply, BCD_DIGIT_ADDRESS,
              st.sampled_from([600, 1200, 2400, 4800, 9600, 19200]), ANY_V),
    st.builds(d.ChangePasswordRequest, BCD_DIGIT_ADDRESS, st.integers(0, 255), _password(),
              st.integers(0, 255), _password(), st.integers(0x04000C01, 0x04000C0A), V7),
    st.builds(d.ChangePasswordRequest, BCD_DIGIT_ADDRESS, st.integers(0, 255), _password(),
              st.integers(0, 255), _password(), st.just(0), V97),
    st.builds(d.ChangePasswordReply, BCD_DIGIT_ADDRESS, st.integers(0, 255), _password(), ANY_V),
    st.builds(d.ClearDemandRequest, BCD_DIGIT_ADDRESS, st.integers(0, 255), _password(), HEX8, V7),
    st.builds(d.ClearDemandRequest, BCD_DIGIT_ADDRESS, version=V97),
    st.builds(d.ClearMeterRequest, BCD_DIGIT_ADDRESS, st.integers(0, 255), _password(), HEX8, V7),
    st.builds(d.ClearEventsRequest, BCD_DIGIT_ADDRESS, DI7, st.integers(0, 255), _password(), HEX8, V7),
    st.builds(d.ControlRequest, BCD_DIGIT_ADDRESS, st.sampled_from(list(d.ControlAction)), SECOND_DT,
              st.integers(0, 255), _password(), HEX8, V7),
    st.builds(d.MultiFunctionOutputRequest, BCD_DIGIT_ADDRESS, st.sampled_from(list(d.OutputSignal)), V7),
    st.builds(d.MultiFunctionOutputReply, BCD_DIGIT_ADDRESS, st.sampled_from(list(d.OutputSignal)), V7),
    st.builds(d.AckReply, BCD_DIGIT_ADDRESS,
              st.sampled_from(["write_data", "write_address", "freeze", "clear_demand", "clear_meter",
                               "clear_events", "control"]), V7),
    st.builds(d.AckReply, BCD_DIGIT_ADDRESS,
              st.sampled_from(["write_data", "write_address", "clear_demand"]), V97),
    st.builds(lambda a, f, w: d.ErrorReply(a, f, w, d.decode(d.encode(d.ErrorReply(a, f, w))).errors),
              BCD_DIGIT_ADDRESS, st.sampled_from(["read_data", "write_data", "control", "read_followup"]),
              st.integers(0, 255)),
)

#: Every message class the codec knows: the round-trip test checks MESSAGES covers all of them.
MESSAGE_TYPES = {
    d.ReadRequest, d.ReadReply, d.ReadFollowupRequest, d.ReadFollowupReply, d.RereadRequest,
    d.ReadAddressRequest, d.ReadAddressReply, d.WriteRequest, d.WriteAddressRequest, d.TimeSyncRequest,
    d.FreezeRequest, d.ChangeBaudRequest, d.ChangeBaudReply, d.ChangePasswordRequest,
    d.ChangePasswordReply, d.ClearDemandRequest, d.ClearMeterRequest, d.ClearEventsRequest,
    d.ControlRequest, d.MultiFunctionOutputRequest, d.MultiFunctionOutputReply, d.AckReply, d.ErrorReply,
}
