"""Hypothesis strategies for SMS PDUs, shared by the PDU, emulator and channel tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from fep.channels.modem.pdu import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MAX_OCTETS,
    TON_ALPHANUMERIC,
    Address,
    Alphabet,
    Deliver,
    EnhancedValidity,
    InformationElement,
    StatusReport,
    Submit,
    UserData,
    data_coding,
    encode_user_data,
    gsm7_encode,
    relative_validity,
)

GSM7_CHARS = "".join(c for c in GSM7_BASIC if c != "\x1b") + "".join(GSM7_EXTENSION.values())
gsm7_text = st.text(alphabet=GSM7_CHARS, max_size=160)
ucs2_text = st.text(max_size=70)

numbers = st.builds(
    Address,
    st.text(alphabet="0123456789*#abc", max_size=20),
    st.sampled_from([0, 1, 2, 3, 4, 6, 7]),
    st.integers(0, 15),
)
alphanumerics = st.builds(
    Address,
    st.text(alphabet=GSM7_CHARS, max_size=11).filter(lambda t: len(gsm7_encode(t)) <= 11),
    st.just(TON_ALPHANUMERIC),
    st.integers(0, 15),
)
addresses = numbers | alphanumerics
smscs = st.none() | st.builds(
    Address,
    st.text(alphabet="0123456789*#abc", min_size=1, max_size=20),
    st.sampled_from([0, 1, 2]),
    st.integers(0, 15),
)

zones = st.integers(-79, 79).map(lambda q: timezone(timedelta(minutes=15 * q)))
timestamps = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone),
    st.datetimes(datetime(1970, 1, 1), datetime(2069, 12, 31, 23, 59, 59)).map(
        lambda d: d.replace(microsecond=0)
    ),
    zones,
)
validities = (
    st.none()
    | st.integers(0, 255).map(relative_validity)
    | timestamps
    | st.binary(min_size=7, max_size=7).map(EnhancedValidity)
)

elements = st.builds(
    InformationElement, st.integers(0, 255), st.binary(max_size=6)
)  # fmt: skip


@st.composite
def user_data_for(draw: st.DrawFn, dcs: int) -> UserData:
    coding = data_coding(dcs)
    header = tuple(draw(st.lists(elements, max_size=3)))
    body: str | bytes
    if coding.compressed or coding.alphabet is Alphabet.DATA8:
        body = draw(st.binary(max_size=MAX_OCTETS))
    elif coding.alphabet is Alphabet.GSM7:
        body = draw(gsm7_text)
    else:
        body = draw(ucs2_text)
    user_data = UserData(body, header)
    try:
        encode_user_data(user_data, coding.alphabet if not coding.compressed else Alphabet.DATA8)
    except ValueError:
        # Too long with this header: keep the header, cut the body to nothing.
        user_data = UserData(body[:0], header)
    return user_data


@st.composite
def delivers(draw: st.DrawFn) -> Deliver:
    dcs = draw(st.integers(0, 255))
    return Deliver(
        draw(addresses),
        draw(timestamps),
        draw(user_data_for(dcs)),
        dcs=dcs,
        pid=draw(st.integers(0, 255)),
        more_messages=draw(st.booleans()),
        loop_prevention=draw(st.booleans()),
        status_report=draw(st.booleans()),
        reply_path=draw(st.booleans()),
        smsc=draw(smscs),
    )


@st.composite
def submits(draw: st.DrawFn) -> Submit:
    dcs = draw(st.integers(0, 255))
    return Submit(
        draw(addresses),
        draw(user_data_for(dcs)),
        dcs=dcs,
        pid=draw(st.integers(0, 255)),
        reference=draw(st.integers(0, 255)),
        validity=draw(validities),
        reject_duplicates=draw(st.booleans()),
        status_report=draw(st.booleans()),
        reply_path=draw(st.booleans()),
        smsc=draw(smscs),
    )


@st.composite
def status_reports(draw: st.DrawFn) -> StatusReport:
    pid = draw(st.none() | st.integers(0, 255))
    dcs = draw(st.none() | st.integers(0, 255))
    user_data = draw(st.none() | user_data_for(dcs or 0))
    return StatusReport(
        draw(st.integers(0, 255)),
        draw(addresses),
        draw(timestamps),
        draw(timestamps),
        draw(st.integers(0, 255)),
        qualifier=draw(st.booleans()),
        more_messages=draw(st.booleans()),
        loop_prevention=draw(st.booleans()),
        pid=pid,
        dcs=dcs,
        user_data=user_data,
        smsc=draw(smscs),
    )


tpdus = delivers() | submits() | status_reports()
