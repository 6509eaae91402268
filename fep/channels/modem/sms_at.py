"""The SMS commands of 3GPP TS 27.005 as text: building their arguments and reading their
answers (+CMGR, +CMGL, +CMGS, +CPMS, +CIND) and the new-message and status-report
indications (+CMTI, +CDSI, +CMT, +CDS), in PDU mode and in text mode (with AT+CSDH=1).

Sans-IO: lines in (as the AT engine hands them over), typed values out; answers that do not
parse raise FrameError naming the field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

import attrs

from fep.channels.modem.at import split_params
from fep.channels.modem.pdu import (
    Address,
    Alphabet,
    Deliver,
    Direction,
    StatusReport,
    Tpdu,
    UserData,
    data_coding,
    decode_hex_pdu,
    decode_user_data,
    gsm7_decode,
    gsm7_encode,
)
from fep.errors import FrameError

STATUS_WORDS: Final = ("REC UNREAD", "REC READ", "STO UNSENT", "STO SENT", "ALL")
_TIMESTAMP = re.compile(r"(\d\d)/(\d\d)/(\d\d),(\d\d):(\d\d):(\d\d)(?:([+-])(\d\d?))?$")


@attrs.frozen
class Stored:
    """A message read from the modem's memory: its status (0 REC UNREAD .. 3 STO SENT) and
    the TPDU."""

    status: int
    tpdu: Tpdu


def _number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes superscripts, which ``int`` refuses)."""
    return text.isascii() and text.isdecimal()


def status_number(text: str) -> int:
    """``0``..``4`` or ``"REC UNREAD"``.. -> the status number."""
    word = text.strip().strip('"').upper()
    if _number(word):
        value = int(word)
        if 0 <= value <= 4:
            return value
    elif word in STATUS_WORDS:
        return STATUS_WORDS.index(word)
    raise FrameError(f"unknown message status {text!r}", field="stat")


def _head(line: str, name: str) -> tuple[str, ...]:
    prefix, colon, value = line.partition(":")
    if not colon or prefix.strip().upper() != name:
        raise FrameError(f"expected {name}:, got {line[:60]!r}", field=name)
    return split_params(value)


def parse_text_timestamp(text: str) -> datetime:
    """``yy/MM/dd,hh:mm:ss±zz`` (zone in quarter hours; UTC when absent)."""
    m = _TIMESTAMP.match(text.strip().strip('"'))
    if m is None:
        raise FrameError(f"not a text-mode timestamp: {text!r}", field="scts")
    yy, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    zone = UTC
    if m.group(7):
        quarters = int(m.group(8)) * (-1 if m.group(7) == "-" else 1)
        zone = timezone(timedelta(minutes=15 * quarters))
    try:
        return datetime(
            (1900 if yy >= 70 else 2000) + yy, month, day, hour, minute, second, tzinfo=zone
        )
    except ValueError as error:
        raise FrameError(f"not a valid time {text!r}: {error}", field="scts")


def _address(number: str, toa: str | None) -> Address:
    number = number.strip()
    if toa and _number(toa):
        octet = int(toa)
        ton, npi = (octet >> 4) & 7, octet & 0x0F
        if ton == 1 and number.startswith("+"):
            number = number[1:]
        try:
            return Address(number, ton, npi)
        except ValueError:
            pass
    try:
        return Address.parse(number)
    except ValueError:
        raise FrameError(f"not an address: {number!r}", field="oa")


def _int_field(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FrameError(f"{field} is not a number: {text!r}", field=field)


def text_status_report(params: tuple[str, ...]) -> StatusReport:
    """``<fo>,<mr>,<ra>,<tora>,<scts>,<dt>,<st>`` (text-mode +CDS, and +CMGR/+CMGL of a
    stored report after their status)."""
    if len(params) < 7:
        raise FrameError(f"status report has {len(params)} fields, 7 needed", field="+CDS")
    first = _int_field(params[0], "fo")
    return StatusReport(
        _int_field(params[1], "mr") & 0xFF,
        _address(params[2], params[3]),
        parse_text_timestamp(params[4]),
        parse_text_timestamp(params[5]),
        _int_field(params[6], "st") & 0xFF,
        qualifier=bool(first & 0x20),
    )


def _is_report(params: tuple[str, ...]) -> bool:
    # A stored report: <stat>,<fo>,<mr>,... where <fo> is a number with message type 2.
    return len(params) >= 8 and _number(params[1]) and int(params[1]) & 0x03 == 2


def text_deliver(params: tuple[str, ...], data: str) -> Deliver:
    """A text-mode SMS-DELIVER: ``<oa>,[<alpha>],<scts>[,<tooa>,<fo>,<pid>,<dcs>,<sca>,
    <tosca>,<length>]`` and its data (GSM text, or TP-UD in hex when the coding is not GSM
    7-bit or a header is present; 27.005 3.1)."""
    if len(params) < 3:
        raise FrameError("SMS header has too few fields", field="+CMGR")
    oa, scts = params[0], params[2]
    tooa = params[3] if len(params) > 3 else None
    first = pid = dcs = 0
    smsc: Address | None = None
    length: int | None = None
    if len(params) >= 10:
        first = _int_field(params[4], "fo")
        pid = _int_field(params[5], "pid") & 0xFF
        dcs = _int_field(params[6], "dcs") & 0xFF
        if params[7]:
            smsc = _address(params[7], params[8])
        length = _int_field(params[9], "length")
    udhi = bool(first & 0x40)
    coding = data_coding(dcs)
    if coding.alphabet is Alphabet.GSM7 and not coding.compressed and not udhi:
        user_data = UserData(gsm7_decode(data.encode("latin-1", "replace")))
    else:
        try:
            octets = bytes.fromhex(data.strip())
        except ValueError:
            raise FrameError(f"SMS data is not hex: {data[:40]!r}", field="data")
        if length is None:
            length = len(octets)
        user_data = decode_user_data(octets, length, dcs, udhi)
    return Deliver(
        _address(oa, tooa),
        parse_text_timestamp(scts),
        user_data,
        dcs=dcs,
        pid=pid,
        more_messages=not first & 0x04 if len(params) >= 10 else False,
        status_report=bool(first & 0x20),
        reply_path=bool(first & 0x80),
        smsc=smsc,
    )


def read_message(lines: tuple[str, ...] | list[str], text_mode: bool) -> Stored | None:
    """The answer of ``AT+CMGR=<index>``; None for an empty slot."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return None
    params = _head(lines[0], "+CMGR")
    if not params:
        return None
    status = status_number(params[0]) if params[0] else 0
    if not text_mode:
        if len(lines) < 2:
            raise FrameError("+CMGR without its PDU line", field="+CMGR")
        direction = Direction.FROM_MODEM if status in (2, 3) else Direction.TO_MODEM
        return Stored(status, decode_hex_pdu(lines[1], direction=direction))
    if _is_report(params):
        return Stored(status, text_status_report(params[1:]))
    return Stored(status, text_deliver(params[1:], "\n".join(lines[1:])))


def listed_indexes(lines: tuple[str, ...] | list[str]) -> list[int]:
    """The memory indexes in an ``AT+CMGL`` answer (either mode)."""
    found: list[int] = []
    for line in lines:
        if line.strip().upper().startswith("+CMGL:"):
            params = _head(line.strip(), "+CMGL")
            if params and _number(params[0]):
                found.append(int(params[0]))
    return found


def sent_reference(lines: tuple[str, ...] | list[str]) -> int:
    """The TP-MR in an ``AT+CMGS`` answer (``+CMGS: <mr>[,<scts>]``)."""
    for line in lines:
        if line.strip().upper().startswith("+CMGS:"):
            params = _head(line.strip(), "+CMGS")
            if params and _number(params[0]):
                return int(params[0]) & 0xFF
    raise FrameError("no +CMGS: <mr> in the answer", field="+CMGS")


@attrs.frozen
class MemoryUsage:
    memory: str
    used: int
    total: int

    @property
    def full(self) -> bool:
        return self.total > 0 and self.used >= self.total


def memory_usage(lines: tuple[str, ...] | list[str]) -> list[MemoryUsage]:
    """``+CPMS: "SM",3,20,"SM",3,20,"SM",3,20`` (AT+CPMS?) -> usage per memory."""
    for line in lines:
        if line.strip().upper().startswith("+CPMS:"):
            params = _head(line.strip(), "+CPMS")
            out: list[MemoryUsage] = []
            for i in range(0, len(params) - 2, 3):
                if _number(params[i + 1]) and _number(params[i + 2]):
                    out.append(MemoryUsage(params[i], int(params[i + 1]), int(params[i + 2])))
            return out
    raise FrameError("no +CPMS: in the answer", field="+CPMS")


def indicator_index(lines: tuple[str, ...] | list[str], name: str) -> int | None:
    """The 1-based index of indicator ``name`` in an ``AT+CIND=?`` answer."""
    for line in lines:
        if line.strip().upper().startswith("+CIND:"):
            names = re.findall(r'\(\s*"([^"]+)"', line)
            for i, found in enumerate(names, 1):
                if found.lower() == name.lower():
                    return i
    return None


def new_message_slot(value: str) -> tuple[str, int]:
    """``"SM",3`` of a +CMTI or +CDSI -> (memory, index)."""
    params = split_params(value)
    if len(params) < 2 or not _number(params[1]):
        raise FrameError(f"bad new-message indication {value!r}", field="+CMTI")
    return params[0] or "SM", int(params[1])


def routed_message(value: str, body: str | None, text_mode: bool) -> Deliver:
    """A +CMT routed straight to us: its header value and the second line."""
    if body is None:
        raise FrameError("+CMT without its second line", field="+CMT")
    if not text_mode:
        tpdu = decode_hex_pdu(body, direction=Direction.TO_MODEM)
        if not isinstance(tpdu, Deliver):
            raise FrameError("+CMT does not carry an SMS-DELIVER", field="+CMT")
        return tpdu
    return text_deliver(split_params(value), body)


def routed_report(value: str, body: str | None, text_mode: bool) -> StatusReport:
    """A +CDS routed straight to us: PDU mode ``<length>`` and the PDU line, or text mode
    fields."""
    if body is not None:
        tpdu = decode_hex_pdu(body, direction=Direction.TO_MODEM)
        if not isinstance(tpdu, StatusReport):
            raise FrameError("+CDS does not carry an SMS-STATUS-REPORT", field="+CDS")
        return tpdu
    if not text_mode:
        raise FrameError("+CDS without its PDU line", field="+CDS")
    return text_status_report(split_params(value))


def text_body(text: str) -> bytes | None:
    """The bytes to type after ``AT+CMGS="<da>"`` in text mode with the GSM character set;
    None when the text cannot go in text mode (outside the alphabet, or extension characters
    whose escape would cancel the message)."""
    try:
        septets = gsm7_encode(text)
    except ValueError:
        return None
    # ESC and Ctrl-Z would end the body; a line end makes the modem prompt again.
    if any(b in septets for b in (0x1A, 0x1B, 0x0A, 0x0D)) or len(septets) > 160:
        return None
    return septets


def quoted_number(address: Address) -> str:
    """``"+4915...",145`` (or ``"0151...",129``): the arguments of text-mode AT+CMGS."""
    return f'"{address}",{address.type_octet}'
